//! Host-state checks of VM entry (Intel SDM vol. 3C, 27.2.2 "Checks on
//! Host Control Registers, MSRs, and SSP", 27.2.3 "Checks on Host Segment
//! and Descriptor-Table Registers", 27.2.4 "Checks Related to
//! Address-Space Size"). A failure is VMfailValid with error 8.
//!
//! Not modelled: IA32_PERF_GLOBAL_CTRL, whose reserved bits depend on the
//! PMU (Turtles' CPU does not offer its load control).

use x86::{Cr0, Cr4, Efer};

use super::{Check, EntryEnv, EntryError, EntryFailure, VmcsRead};
use crate::caps::VmxCaps;
use crate::controls::{EntryCtls, ExitCtls};
use crate::field::VmcsField;

/// Whether every byte of an IA32_PAT value is a valid memory type (0, 1,
/// 4, 5, 6 or 7).
pub(super) const fn pat_valid(pat: u64) -> bool {
    let mut i = 0;
    while i < 8 {
        if matches!((pat >> (i * 8)) as u8, 2 | 3 | 8..=255) {
            return false;
        }
        i += 1;
    }
    true
}

/// IA32_EFER bits Turtles' CPU implements (SCE, LME, LMA, NXE); the rest
/// are reserved.
pub(super) const EFER_DEFINED: u64 = Efer::SCE.bits() | Efer::LME.bits() | Efer::LMA.bits() | Efer::NXE.bits();

/// IA32_S_CET bits 9:6 are reserved.
pub(super) const S_CET_RESERVED: u64 = 0x3c0;

fn exit_ctls<V: VmcsRead + ?Sized>(v: &V) -> (u64, ExitCtls) {
    let raw = v.read(VmcsField::ExitControls);
    (raw, ExitCtls::from_bits_retain(raw as u32))
}

/// SDM 27.2.2 "Checks on Host Control Registers, MSRs, and SSP".
pub fn check_host_control_registers<V: VmcsRead + ?Sized>(v: &V, caps: &VmxCaps, env: &EntryEnv) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.2.2";
    let (exit_raw, exit) = exit_ctls(v);
    let host_64 = exit.contains(ExitCtls::HOST_ADDRESS_SPACE_SIZE);

    let cr0 = v.read(F::HostCr0);
    check!("host.cr0.fixed", SDM, F::HostCr0 => cr0, caps.check_cr0(cr0, false).is_ok());
    let cr4 = v.read(F::HostCr4);
    check!("host.cr4.fixed", SDM, F::HostCr4 => cr4, caps.check_cr4(cr4).is_ok());
    check!("host.cr4.cet_needs_cr0_wp", SDM, F::HostCr4 => cr4,
        cr4 & Cr4::CET.bits() == 0 || cr0 & Cr0::WP.bits() != 0);
    let cr3 = v.read(F::HostCr3);
    check!("host.cr3", SDM, F::HostCr3 => cr3, env.physical(cr3));
    let sysenter_esp = v.read(F::HostIa32SysenterEsp);
    check!("host.sysenter_esp", SDM, F::HostIa32SysenterEsp => sysenter_esp, env.canonical(sysenter_esp));
    let sysenter_eip = v.read(F::HostIa32SysenterEip);
    check!("host.sysenter_eip", SDM, F::HostIa32SysenterEip => sysenter_eip, env.canonical(sysenter_eip));

    if exit.contains(ExitCtls::LOAD_PAT) {
        let pat = v.read(F::HostIa32Pat);
        check!("host.pat", SDM, F::HostIa32Pat => pat, pat_valid(pat));
    }
    if exit.contains(ExitCtls::LOAD_EFER) {
        let efer = v.read(F::HostIa32Efer);
        check!("host.efer.reserved", SDM, F::HostIa32Efer => efer, efer & !EFER_DEFINED == 0);
        check!("host.efer.lma", SDM, F::ExitControls => exit_raw, (efer & Efer::LMA.bits() != 0) == host_64);
        check!("host.efer.lme", SDM, F::ExitControls => exit_raw, (efer & Efer::LME.bits() != 0) == host_64);
    }
    if exit.contains(ExitCtls::LOAD_CET_STATE) {
        let s_cet = v.read(F::HostIa32SCet);
        check!("host.s_cet", SDM, F::HostIa32SCet => s_cet, s_cet & S_CET_RESERVED == 0 && env.canonical(s_cet));
        let ssp = v.read(F::HostSsp);
        check!("host.ssp", SDM, F::HostSsp => ssp, ssp & 3 == 0 && env.canonical(ssp));
        let table = v.read(F::HostIa32InterruptSspTableAddr);
        check!("host.interrupt_ssp_table", SDM, F::HostIa32InterruptSspTableAddr => table, env.canonical(table));
    }
    if exit.contains(ExitCtls::LOAD_PKRS) {
        let pkrs = v.read(F::HostIa32Pkrs);
        check!("host.pkrs", SDM, F::HostIa32Pkrs => pkrs, pkrs >> 32 == 0);
    }
    Ok(())
}

/// SDM 27.2.3 "Checks on Host Segment and Descriptor-Table Registers".
pub fn check_host_segments<V: VmcsRead + ?Sized>(v: &V, env: &EntryEnv) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.2.3";
    let (_, exit) = exit_ctls(v);

    for field in [
        F::HostEsSelector,
        F::HostCsSelector,
        F::HostSsSelector,
        F::HostDsSelector,
        F::HostFsSelector,
        F::HostGsSelector,
        F::HostTrSelector,
    ] {
        let selector = v.read(field);
        check!("host.selector.rpl_ti", SDM, field => selector, selector & 7 == 0);
    }
    let cs = v.read(F::HostCsSelector);
    check!("host.cs_selector.null", SDM, F::HostCsSelector => cs, cs != 0);
    let tr = v.read(F::HostTrSelector);
    check!("host.tr_selector.null", SDM, F::HostTrSelector => tr, tr != 0);
    let ss = v.read(F::HostSsSelector);
    check!("host.ss_selector.null", SDM, F::HostSsSelector => ss,
        ss != 0 || exit.contains(ExitCtls::HOST_ADDRESS_SPACE_SIZE));
    for field in [F::HostFsBase, F::HostGsBase, F::HostGdtrBase, F::HostIdtrBase, F::HostTrBase] {
        let base = v.read(field);
        check!("host.base.canonical", SDM, field => base, env.canonical(base));
    }
    Ok(())
}

/// SDM 27.2.4 "Checks Related to Address-Space Size".
pub fn check_host_address_space_size<V: VmcsRead + ?Sized>(v: &V, env: &EntryEnv) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.2.4";
    let (exit_raw, exit) = exit_ctls(v);
    let host_64 = exit.contains(ExitCtls::HOST_ADDRESS_SPACE_SIZE);
    let entry_raw = v.read(F::EntryControls);
    let ia32e_guest = EntryCtls::from_bits_retain(entry_raw as u32).contains(EntryCtls::IA32E_MODE_GUEST);

    if env.ia32e_mode {
        check!("host.asz.ia32e_needs_host_64", SDM, F::ExitControls => exit_raw, host_64);
    } else {
        check!("host.asz.legacy_forbids_ia32e_guest", SDM, F::EntryControls => entry_raw, !ia32e_guest);
        check!("host.asz.legacy_forbids_host_64", SDM, F::ExitControls => exit_raw, !host_64);
    }
    let cr4 = v.read(F::HostCr4);
    let rip = v.read(F::HostRip);
    if host_64 {
        check!("host.asz.host_64_needs_pae", SDM, F::HostCr4 => cr4, cr4 & Cr4::PAE.bits() != 0);
        check!("host.asz.rip_canonical", SDM, F::HostRip => rip, env.canonical(rip));
    } else {
        // "IA-32e mode guest" must also be 0 here; outside IA-32e mode
        // (the only way to have a 32-bit host) the check above covers it.
        check!("host.asz.host_32_forbids_pcide", SDM, F::HostCr4 => cr4, cr4 & Cr4::PCIDE.bits() == 0);
        check!("host.asz.rip_upper", SDM, F::HostRip => rip, rip >> 32 == 0);
    }
    Ok(())
}

/// SDM 27.2.2-27.2.4, in order. A failure is VMfailValid with error 8.
pub fn check_host_state<V: VmcsRead + ?Sized>(v: &V, caps: &VmxCaps, env: &EntryEnv) -> Result<(), EntryError> {
    let as_entry_error = |check| EntryError { failure: EntryFailure::HOST_STATE, check };
    check_host_control_registers(v, caps, env).map_err(as_entry_error)?;
    check_host_segments(v, env).map_err(as_entry_error)?;
    check_host_address_space_size(v, env).map_err(as_entry_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::check::EntryEnv;
    use VmcsField as F;

    fn expect(field: VmcsField, flip: impl FnOnce(u64) -> u64, id: &str) {
        expect_host(&EntryEnv::TURTLES, |_| {}, field, flip, id);
    }

    fn expect_host(
        env: &EntryEnv,
        variant: impl FnOnce(&mut TestVmcs),
        field: VmcsField,
        flip: impl FnOnce(u64) -> u64,
        id: &str,
    ) {
        let err = expect_entry(&everything(), env, &TestMemory::default(), variant, field, flip, id);
        assert_eq!(err.failure, EntryFailure::HOST_STATE, "{id}");
        assert!(err.check.sdm.starts_with("27.2."), "{id}");
    }

    /// A 32-bit host outside IA-32e mode entering a 32-bit guest.
    fn legacy(v: &mut TestVmcs) {
        make_guest_protected_32(v);
        v.clear_bits(F::ExitControls, bits32(ExitCtls::HOST_ADDRESS_SPACE_SIZE.bits()));
        v.clear_bits(F::HostIa32Efer, (Efer::LME | Efer::LMA).bits());
        v.set(F::HostRip, 0x10_0000);
        v.set(F::HostCr4, (Cr4::PAE | Cr4::VMXE).bits());
    }

    const LEGACY_ENV: EntryEnv = EntryEnv { ia32e_mode: false, ..EntryEnv::TURTLES };

    #[test]
    fn baseline_host_is_valid() {
        let v = baseline();
        assert_eq!(check_host_state(&v, &everything(), &EntryEnv::TURTLES), Ok(()));
        let mut v32 = baseline();
        legacy(&mut v32);
        assert_eq!(check_host_state(&v32, &everything(), &LEGACY_ENV), Ok(()));
    }

    // 27.2.2.

    #[test]
    fn control_registers() {
        expect(F::HostCr0, clear(Cr0::PE.bits() as u32), "host.cr0.fixed");
        expect(F::HostCr0, |v| v | 1 << 32, "host.cr0.fixed");
        expect(F::HostCr4, clear(Cr4::VMXE.bits() as u32), "host.cr4.fixed");
        expect(F::HostCr3, to(1 << 40), "host.cr3");
    }

    #[test]
    fn cet_needs_wp() {
        let caps = everything().to_builder().cr4_fixed(Cr4::VMXE.bits(), u64::from(u32::MAX)).build();
        let err = expect_entry(
            &caps,
            &EntryEnv::TURTLES,
            &TestMemory::default(),
            |v| v.set_bits(F::HostCr4, Cr4::CET.bits()),
            F::HostCr0,
            |v| v & !Cr0::WP.bits(),
            "host.cr4.cet_needs_cr0_wp",
        );
        assert_eq!(err.failure, EntryFailure::HOST_STATE);
    }

    #[test]
    fn sysenter() {
        expect(F::HostIa32SysenterEsp, to(1 << 47), "host.sysenter_esp");
        expect(F::HostIa32SysenterEip, to(0x8000_0000_0000_0000), "host.sysenter_eip");
    }

    #[test]
    fn pat() {
        expect(F::HostIa32Pat, |v| v & !0xff | 2, "host.pat");
        expect(F::HostIa32Pat, |v| v | 0x08 << 56, "host.pat");
        assert!(pat_valid(0x0007_0406_0007_0406));
    }

    #[test]
    fn efer() {
        expect(F::HostIa32Efer, |v| v | 1 << 2, "host.efer.reserved");
        expect(F::HostIa32Efer, |v| v & !Efer::LMA.bits(), "host.efer.lma");
        expect(F::HostIa32Efer, |v| v & !Efer::LME.bits(), "host.efer.lme");
    }

    #[test]
    fn cet_and_pkrs() {
        let caps = everything().to_builder().exit(ExitCtls::all(), ExitCtls::empty()).build();
        let loads = |v: &mut TestVmcs| {
            v.set_bits(F::ExitControls, bits32((ExitCtls::LOAD_CET_STATE | ExitCtls::LOAD_PKRS).bits()));
            v.set(F::HostSsp, 0xffff_c900_0001_0000);
        };
        let cases: [(VmcsField, u64, &str); 6] = [
            (F::HostIa32SCet, 1 << 6, "host.s_cet"),
            (F::HostIa32SCet, 1 << 47, "host.s_cet"),
            (F::HostSsp, 0xffff_c900_0001_0004 | 2, "host.ssp"),
            (F::HostSsp, 1 << 47, "host.ssp"),
            (F::HostIa32InterruptSspTableAddr, 1 << 47, "host.interrupt_ssp_table"),
            (F::HostIa32Pkrs, 1 << 32, "host.pkrs"),
        ];
        for (field, value, id) in cases {
            let err = expect_entry(&caps, &EntryEnv::TURTLES, &TestMemory::default(), loads, field, to(value), id);
            assert_eq!(err.failure, EntryFailure::HOST_STATE);
        }
    }

    // 27.2.3.

    #[test]
    fn selectors() {
        for field in [F::HostEsSelector, F::HostCsSelector, F::HostSsSelector, F::HostTrSelector] {
            expect(field, |v| v | 3, "host.selector.rpl_ti");
        }
        expect(F::HostFsSelector, to(4), "host.selector.rpl_ti");
        expect(F::HostCsSelector, to(0), "host.cs_selector.null");
        expect(F::HostTrSelector, to(0), "host.tr_selector.null");
        expect_host(&LEGACY_ENV, legacy, F::HostSsSelector, to(0), "host.ss_selector.null");
        // A 64-bit host may have a null SS.
        let mut v = baseline();
        v.set(F::HostSsSelector, 0);
        assert_eq!(check_host_state(&v, &everything(), &EntryEnv::TURTLES), Ok(()));
    }

    #[test]
    fn bases() {
        for field in [F::HostFsBase, F::HostGsBase, F::HostGdtrBase, F::HostIdtrBase, F::HostTrBase] {
            expect(field, to(0x0000_8000_0000_0000), "host.base.canonical");
        }
    }

    // 27.2.4.

    #[test]
    fn address_space_size() {
        expect_host(
            &EntryEnv::TURTLES,
            |v| v.clear_bits(F::ExitControls, bits32(ExitCtls::LOAD_EFER.bits())),
            F::ExitControls,
            clear(ExitCtls::HOST_ADDRESS_SPACE_SIZE.bits()),
            "host.asz.ia32e_needs_host_64",
        );
        expect_host(
            &LEGACY_ENV,
            legacy,
            F::EntryControls,
            set(EntryCtls::IA32E_MODE_GUEST.bits()),
            "host.asz.legacy_forbids_ia32e_guest",
        );
        expect_host(
            &LEGACY_ENV,
            |v| {
                legacy(v);
                v.clear_bits(F::ExitControls, bits32(ExitCtls::LOAD_EFER.bits()));
            },
            F::ExitControls,
            set(ExitCtls::HOST_ADDRESS_SPACE_SIZE.bits()),
            "host.asz.legacy_forbids_host_64",
        );
        expect(F::HostCr4, |v| v & !Cr4::PAE.bits(), "host.asz.host_64_needs_pae");
        expect(F::HostRip, to(0x0000_8000_0000_0000), "host.asz.rip_canonical");
        expect_host(&LEGACY_ENV, legacy, F::HostCr4, |v| v | Cr4::PCIDE.bits(), "host.asz.host_32_forbids_pcide");
        expect_host(&LEGACY_ENV, legacy, F::HostRip, to(1 << 32), "host.asz.rip_upper");
    }

    #[test]
    fn first_failure_wins_in_sdm_order() {
        let caps = everything();
        let memory = TestMemory::default();
        let mut v = baseline();
        v.set(F::GuestRflags, 0);
        v.set(F::HostCr3, 1 << 40);
        assert_eq!(
            crate::check::check_vm_entry(&v, &caps, &EntryEnv::TURTLES, &memory).unwrap_err().check.id,
            "host.cr3"
        );
        v.set(F::IoBitmapA, 1);
        let err = crate::check::check_vm_entry(&v, &caps, &EntryEnv::TURTLES, &memory).unwrap_err();
        assert_eq!((err.check.id, err.failure), ("ctl.io_bitmap_a", EntryFailure::CONTROLS));
        v.set(F::IoBitmapA, 0x1000);
        v.set(F::HostCr3, 0x1000);
        let err = crate::check::check_vm_entry(&v, &caps, &EntryEnv::TURTLES, &memory).unwrap_err();
        assert_eq!(err.check.id, "guest.rflags.reserved");
        assert_eq!(err.failure.exit_qualification(), Some(0));
    }

    /// Every check id in this file has a negative test above.
    #[test]
    fn every_check_has_a_negative_test() {
        assert_every_id_tested(include_str!("host.rs"), "host.", 24);
    }
}
