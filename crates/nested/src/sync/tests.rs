use super::*;
use crate::merge::{prepare_vmcs02, Vmcs02Resources};
use cpu::Memory;
use vmx::controls::{PinCtls, ProcCtls};
use vmx::exit::ExitReasonField;
use vmx::FieldKind;

fn or(v: &mut Vmcs, f: F, bits: u64) {
    v.set(f, v.get(f) | bits);
}

fn vmcs01() -> Vmcs {
    let mut v = Vmcs::new();
    let x = ExitCtls::HOST_ADDRESS_SPACE_SIZE
        | ExitCtls::SAVE_EFER
        | ExitCtls::LOAD_EFER
        | ExitCtls::SAVE_PAT
        | ExitCtls::LOAD_PAT
        | ExitCtls::SAVE_DEBUG_CONTROLS;
    v.set(F::ExitControls, u64::from(x.bits()));
    v.set(F::EntryControls, u64::from((EntryCtls::LOAD_EFER | EntryCtls::IA32E_MODE_GUEST).bits()));
    v.set(F::Cr0GuestHostMask, Cr0::NE.bits());
    v.set(F::Cr4GuestHostMask, Cr4::VMXE.bits());
    v.set(F::PrimaryProcControls, u64::from(ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits()));
    v.set(F::SecondaryProcControls, u64::from(ProcCtls2::ENABLE_EPT.bits()));
    // L1 runs 64-bit with CD set (kept across exits) and NE.
    v.set(F::GuestCr0, (Cr0::PE | Cr0::PG | Cr0::NE | Cr0::CD | Cr0::ET).bits());
    v.set(F::Cr0ReadShadow, (Cr0::PE | Cr0::PG | Cr0::NE | Cr0::CD | Cr0::ET).bits());
    v.set(F::GuestIa32Efer, (Efer::LMA | Efer::LME).bits() | 1);
    v.set(F::GuestIa32Pat, 0x0007_0406_0007_0406);
    v.set(F::GuestRip, 0x1111);
    v.set(F::GuestInterruptibilityState, 1);
    v.set(F::GuestActivityState, 1);
    v
}

/// A vmcs12 whose every guest field differs, with 64-bit L2 and EPT.
fn vmcs12() -> Vmcs {
    let mut v = Vmcs::new();
    for (i, &f) in F::ALL.iter().filter(|f| !f.is_high() && f.kind() == FieldKind::GuestState).enumerate() {
        v.set(f, 0x7000 + i as u64);
    }
    v.set(F::PrimaryProcControls, u64::from(ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits()));
    v.set(F::SecondaryProcControls, u64::from(ProcCtls2::ENABLE_EPT.bits()));
    let e = EntryCtls::LOAD_EFER | EntryCtls::LOAD_PAT | EntryCtls::LOAD_DEBUG_CONTROLS | EntryCtls::IA32E_MODE_GUEST;
    v.set(F::EntryControls, u64::from(e.bits()));
    let x = ExitCtls::HOST_ADDRESS_SPACE_SIZE
        | ExitCtls::SAVE_EFER
        | ExitCtls::SAVE_PAT
        | ExitCtls::SAVE_DEBUG_CONTROLS
        | ExitCtls::SAVE_PREEMPTION_TIMER;
    v.set(F::ExitControls, u64::from(x.bits()));
    v.set(F::PinBasedControls, u64::from(PinCtls::PREEMPTION_TIMER.bits()));
    v.set(F::GuestCr0, (Cr0::PE | Cr0::PG).bits()); // NE = 0 as L1 set it
    v.set(F::GuestCr4, Cr4::PAE.bits());
    v.set(F::GuestIa32Efer, (Efer::LMA | Efer::LME).bits());
    v.set(F::VmcsLinkPointer, u64::MAX);
    v.set(F::EntryInterruptionInfo, u64::from(InterruptionInfo::external_interrupt(0x30).to_raw()));
    v
}

fn entered(v01: &Vmcs, v12: &Vmcs) -> Vmcs {
    let mut mem = Memory::new(0x10_0000).unwrap();
    let res = Vmcs02Resources {
        io_bitmaps: [mem.alloc_private_page().unwrap(), mem.alloc_private_page().unwrap()],
        msr_bitmap: mem.alloc_private_page().unwrap(),
        eptp02: Some(0x5_001e),
        vpid02: 2,
    };
    let mut v02 = Vmcs::new();
    prepare_vmcs02(&mut v02, v01, v12, &res, &mut mem);
    v02
}

#[test]
fn sync_round_trip_is_what_entered_plus_changes() {
    let v01 = vmcs01();
    let v12_in = vmcs12();
    let mut v02 = entered(&v01, &v12_in);
    // L2 runs: moves, changes CR3 and CR0.TS, takes a #PF exit.
    v02.set(F::GuestRip, 0xabc);
    v02.set(F::GuestRsp, 0xdef);
    v02.set(F::GuestCr3, 0x9000);
    or(&mut v02, F::GuestCr0, Cr0::TS.bits());
    v02.set(F::GuestInterruptibilityState, 2);
    v02.set(F::PreemptionTimerValue, 55);
    v02.set(F::GuestIa32Efer, 0); // L2 left long mode
    let pf = InterruptionInfo::hardware_exception(14, true).to_raw();
    v02.set(F::ExitReason, 0);
    v02.set(F::ExitQualification, 0x1234);
    v02.set(F::ExitInterruptionInfo, u64::from(pf));
    v02.set(F::ExitInterruptionErrorCode, 6);
    v02.set(F::IdtVectoringInfo, u64::from(InterruptionInfo::external_interrupt(0x30).to_raw()));
    v02.set(F::ExitInstructionLength, 3);
    let mut v12 = v12_in.clone();
    sync_vmcs12(&mut v12, &v02, &v01);
    for &f in F::ALL.iter().filter(|f| !f.is_high() && f.kind() == FieldKind::GuestState) {
        let want = match f {
            F::GuestRip => 0xabc,
            F::GuestRsp => 0xdef,
            F::GuestCr3 => 0x9000,
            // TS changed by L2; NE (only L0's) as L1 had set it.
            F::GuestCr0 => (Cr0::PE | Cr0::PG | Cr0::TS).bits(),
            F::GuestInterruptibilityState => 2,
            F::PreemptionTimerValue => 55,
            F::GuestIa32Efer => 0,
            _ => v12_in.get(f),
        };
        assert_eq!(v12.get(f), want, "{f}");
    }
    assert_eq!(v12.get(F::ExitQualification), 0x1234);
    assert_eq!(v12.get(F::ExitInterruptionInfo), u64::from(pf));
    assert_eq!(v12.get(F::ExitInterruptionErrorCode), 6);
    assert_eq!(v12.get(F::IdtVectoringInfo), v02.get(F::IdtVectoringInfo));
    assert_eq!(v12.get(F::ExitInstructionLength), 3);
    // The entry event is consumed; "IA-32e mode guest" follows LMA.
    assert_eq!(v12.get(F::EntryInterruptionInfo), 0x30);
    assert!(!EntryCtls::from_bits_retain(v12.get(F::EntryControls) as u32).contains(EntryCtls::IA32E_MODE_GUEST));
}

#[test]
fn sync_saves_msrs_and_timer_only_under_vmcs12s_save_controls() {
    let v01 = vmcs01();
    let mut v12_in = vmcs12();
    let x = ExitCtls::HOST_ADDRESS_SPACE_SIZE;
    v12_in.set(F::ExitControls, u64::from(x.bits()));
    v12_in.set(F::SecondaryProcControls, 0); // no EPT: PDPTEs not saved
    let mut v02 = entered(&v01, &v12_in);
    for f in [F::GuestIa32Efer, F::GuestIa32Pat, F::GuestDr7, F::GuestIa32Debugctl] {
        v02.set(f, 0x1);
    }
    v02.set(F::PreemptionTimerValue, 9);
    v02.set(F::GuestPdpte0, 0x77);
    let mut v12 = v12_in.clone();
    sync_vmcs12(&mut v12, &v02, &v01);
    for f in [
        F::GuestIa32Efer,
        F::GuestIa32Pat,
        F::GuestDr7,
        F::GuestIa32Debugctl,
        F::PreemptionTimerValue,
        F::GuestPdpte0,
        F::VmcsLinkPointer,
    ] {
        assert_eq!(v12.get(f), v12_in.get(f), "{f}");
    }
}

#[test]
fn load_l1_host_state_fields() {
    let mut v01 = vmcs01();
    let mut v12 = Vmcs::new();
    let x = ExitCtls::HOST_ADDRESS_SPACE_SIZE | ExitCtls::LOAD_PAT;
    v12.set(F::ExitControls, u64::from(x.bits()));
    v12.set(F::HostCr0, (Cr0::PE | Cr0::PG | Cr0::NE | Cr0::WP).bits());
    v12.set(F::HostCr3, 0x5000);
    v12.set(F::HostCr4, (Cr4::VMXE | Cr4::PGE).bits());
    v12.set(F::HostCsSelector, 0x10);
    v12.set(F::HostSsSelector, 0);
    v12.set(F::HostDsSelector, 0x18);
    v12.set(F::HostEsSelector, 0);
    v12.set(F::HostFsSelector, 0);
    v12.set(F::HostGsSelector, 0x18);
    v12.set(F::HostTrSelector, 0x28);
    v12.set(F::HostFsBase, 0xf5);
    v12.set(F::HostGsBase, 0x65);
    v12.set(F::HostTrBase, 0x7500);
    v12.set(F::HostGdtrBase, 0x6d00);
    v12.set(F::HostIdtrBase, 0x1d00);
    v12.set(F::HostIa32SysenterCs, 8);
    v12.set(F::HostIa32SysenterEsp, 0xe5);
    v12.set(F::HostIa32SysenterEip, 0xe1);
    v12.set(F::HostRip, 0x40_0000);
    v12.set(F::HostRsp, 0x50_0000);
    v12.set(F::HostIa32Pat, 0x0606);
    v12.set(F::HostIa32Efer, 0xbad);
    load_l1_host_state(&mut v01, &v12);

    // CR0: host value, CD kept from L1's old CR0; NE forced in the guest
    // field, L1's view in the shadow.
    let cr0 = (Cr0::PE | Cr0::PG | Cr0::NE | Cr0::WP | Cr0::CD | Cr0::ET).bits();
    assert_eq!(v01.get(F::Cr0ReadShadow), cr0);
    assert_eq!(v01.get(F::GuestCr0), cr0);
    let cr4 = (Cr4::VMXE | Cr4::PGE | Cr4::PAE).bits();
    assert_eq!((v01.get(F::GuestCr4), v01.get(F::Cr4ReadShadow)), (cr4, cr4));
    assert_eq!(v01.get(F::GuestCr3), 0x5000);
    assert_eq!(v01.get(F::GuestDr7), 0x400);
    assert_eq!(v01.get(F::GuestIa32Debugctl), 0);
    assert_eq!(
        [v01.get(F::GuestIa32SysenterCs), v01.get(F::GuestIa32SysenterEsp), v01.get(F::GuestIa32SysenterEip)],
        [8, 0xe5, 0xe1]
    );
    // EFER not loaded: LMA/LME from the host address-space size, SCE kept.
    assert_eq!(v01.get(F::GuestIa32Efer), (Efer::LMA | Efer::LME).bits() | 1);
    assert_eq!(v01.get(F::GuestIa32Pat), 0x0606);
    // Segments.
    assert_eq!(v01.get(F::GuestCsSelector), 0x10);
    assert_eq!(v01.get(F::GuestCsAccessRights), 0xa09b);
    assert_eq!(v01.get(F::GuestCsLimit), 0xffff_ffff);
    assert_eq!(v01.get(F::GuestCsBase), 0);
    assert_eq!(v01.get(F::GuestDsAccessRights), 0xc093);
    assert_eq!(v01.get(F::GuestGsAccessRights), 0xc093);
    assert_eq!(v01.get(F::GuestGsBase), 0x65);
    for f in [F::GuestSsAccessRights, F::GuestEsAccessRights, F::GuestFsAccessRights, F::GuestLdtrAccessRights] {
        assert_eq!(v01.get(f), 0x1_0000, "{f}");
    }
    assert_eq!(v01.get(F::GuestFsBase), 0xf5, "FS base loads even with a null selector");
    assert_eq!(v01.get(F::GuestLdtrSelector), 0);
    assert_eq!([v01.get(F::GuestTrSelector), v01.get(F::GuestTrBase), v01.get(F::GuestTrLimit)], [0x28, 0x7500, 0x67]);
    assert_eq!(v01.get(F::GuestTrAccessRights), 0x8b);
    assert_eq!([v01.get(F::GuestGdtrBase), v01.get(F::GuestGdtrLimit)], [0x6d00, 0xffff]);
    assert_eq!([v01.get(F::GuestIdtrBase), v01.get(F::GuestIdtrLimit)], [0x1d00, 0xffff]);
    assert_eq!([v01.get(F::GuestRip), v01.get(F::GuestRsp), v01.get(F::GuestRflags)], [0x40_0000, 0x50_0000, 2]);
    assert_eq!(v01.get(F::GuestInterruptibilityState), 0);
    assert_eq!(v01.get(F::GuestActivityState), 0);
    assert!(EntryCtls::from_bits_retain(v01.get(F::EntryControls) as u32).contains(EntryCtls::IA32E_MODE_GUEST));

    // 32-bit host: CS.D, no PAE forced, PCIDE cleared, EFER loaded.
    let x = ExitCtls::LOAD_EFER;
    v12.set(F::ExitControls, u64::from(x.bits()));
    v12.set(F::HostCr4, (Cr4::VMXE | Cr4::PCIDE).bits());
    v12.set(F::HostIa32Efer, 1);
    load_l1_host_state(&mut v01, &v12);
    assert_eq!(v01.get(F::GuestCsAccessRights), 0xc09b);
    assert_eq!(v01.get(F::Cr4ReadShadow), Cr4::VMXE.bits());
    assert_eq!(v01.get(F::GuestIa32Efer), 1);
    assert!(!EntryCtls::from_bits_retain(v01.get(F::EntryControls) as u32).contains(EntryCtls::IA32E_MODE_GUEST));
    assert_eq!(v01.get(F::GuestIa32Pat), 0x0606, "PAT not loaded this time: unchanged");
}

#[test]
fn an_nmi_exit_leaves_l1_with_nmis_blocked() {
    let mut v01 = vmcs01();
    let mut v12 = Vmcs::new();
    v12.set(F::ExitReason, 0);
    v12.set(F::ExitInterruptionInfo, u64::from(InterruptionInfo::nmi().to_raw()));
    load_l1_host_state(&mut v01, &v12);
    assert_eq!(v01.get(F::GuestInterruptibilityState), u64::from(Interruptibility::BLOCKING_BY_NMI.bits()));
    v12.set(F::ExitInterruptionInfo, u64::from(InterruptionInfo::hardware_exception(6, false).to_raw()));
    load_l1_host_state(&mut v01, &v12);
    assert_eq!(v01.get(F::GuestInterruptibilityState), 0);
}

#[test]
fn entry_failure_records_reason_and_loads_host_state() {
    let mut v01 = vmcs01();
    let mut v12 = vmcs12();
    v12.set(F::HostRip, 0x8888);
    v12.set(F::ExitInterruptionInfo, u64::from(InterruptionInfo::nmi().to_raw()));
    let guest_before = v12.get(F::GuestRip);
    entry_failure(&mut v01, &mut v12, u32::from(ExitReason::EntryFailureGuestState.basic()), 4);
    let reason = ExitReasonField::from_raw(v12.get(F::ExitReason) as u32);
    assert!(reason.entry_failure);
    assert_eq!(reason.reason(), Some(ExitReason::EntryFailureGuestState));
    assert_eq!(v12.get(F::ExitQualification), 4);
    assert_eq!(v12.get(F::ExitInterruptionInfo) & u64::from(InterruptionInfo::VALID), 0);
    assert_eq!(v12.get(F::GuestRip), guest_before, "no guest state saved");
    assert_eq!(v01.get(F::GuestRip), 0x8888);
    assert_eq!(v01.get(F::GuestInterruptibilityState), 0);
}
