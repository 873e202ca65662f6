//! MSR loading on VM entry (Intel SDM vol. 3C, 27.4 "Loading MSRs"): the
//! rules on the VM-entry MSR-load list that need no MSR model. A failure is
//! a VM exit with basic reason 34 and bit 31 set, the exit qualification
//! naming the failing entry counting from 1.
//!
//! The list's alignment and physical-address width are control checks
//! (27.2.1.3, `ctl.entry_msr_load_address`). Whether WRMSR at CPL 0 would
//! accept an entry's value depends on the CPU's MSR model; the caller
//! checks that after [`check_msr_load_entry`], in list order.

use super::{Check, EntryError, EntryFailure, VmcsRead};
use crate::caps::VmxCaps;
use crate::field::VmcsField;

/// IA32_BIOS_UPDT_TRIG (microcode update trigger).
const IA32_BIOS_UPDT_TRIG: u32 = 0x79;
/// IA32_SMM_MONITOR_CTL, writable only in SMM.
const IA32_SMM_MONITOR_CTL: u32 = 0x9b;

/// One 16-byte entry of an MSR-load or MSR-store list (SDM 25.7.2
/// "VM-Exit Controls for MSRs").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MsrEntry {
    /// Bits 31:0: the MSR index.
    pub index: u32,
    /// Bits 63:32: reserved, must be 0.
    pub reserved: u32,
    /// Bits 127:64: the value.
    pub value: u64,
}

impl MsrEntry {
    /// Decodes an entry from its two little-endian quadwords.
    pub const fn from_raw(low: u64, high: u64) -> MsrEntry {
        MsrEntry { index: low as u32, reserved: (low >> 32) as u32, value: high }
    }
}

/// SDM 27.4: the checks on one MSR-load entry that need no MSR model.
pub fn check_msr_load_entry(entry: &MsrEntry) -> Result<(), Check> {
    const SDM: &str = "27.4";
    let index = entry.index;
    check!("msr.fs_gs_base", SDM, index != x86::msr::IA32_FS_BASE && index != x86::msr::IA32_GS_BASE);
    check!("msr.x2apic", SDM, index >> 8 != x86::msr::IA32_X2APIC_FIRST >> 8);
    check!("msr.smm_monitor_ctl", SDM, index != IA32_SMM_MONITOR_CTL);
    check!("msr.ucode_update", SDM, index != IA32_BIOS_UPDT_TRIG);
    check!("msr.reserved", SDM, entry.reserved == 0);
    Ok(())
}

/// SDM 27.4: every entry of an MSR-load list, in order; a failure names
/// the entry counting from 1.
pub fn check_msr_load_list(entries: impl IntoIterator<Item = MsrEntry>) -> Result<(), EntryError> {
    for (i, entry) in entries.into_iter().enumerate() {
        check_msr_load_entry(&entry)
            .map_err(|check| EntryError { failure: EntryFailure::MsrLoad { index: i as u32 + 1 }, check })?;
    }
    Ok(())
}

/// SDM 27.4 with appendix A.6: a VM-entry MSR-load count beyond the
/// recommended maximum of IA32_VMX_MISC fails at the first entry past the
/// maximum, as KVM does (the SDM leaves the behaviour undefined).
pub fn check_msr_load_count<V: VmcsRead + ?Sized>(v: &V, caps: &VmxCaps) -> Result<(), EntryError> {
    use VmcsField as F;
    let max = caps.misc().max_msr_list_entries();
    let check = || -> Result<(), Check> {
        let count = v.read(F::EntryMsrLoadCount);
        check!("msr.load_count", "27.4", F::EntryMsrLoadCount => count, count <= u64::from(max));
        Ok(())
    };
    check().map_err(|check| EntryError { failure: EntryFailure::MsrLoad { index: max + 1 }, check })
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::check::{check_vm_entry, EntryEnv};

    fn expect(entry: MsrEntry, id: &str) {
        let valid = MsrEntry { index: x86::msr::IA32_SYSENTER_CS, reserved: 0, value: 8 };
        assert_eq!(check_msr_load_list([valid, valid]), Ok(()));
        let err = check_msr_load_list([valid, entry, valid]).unwrap_err();
        assert_eq!(err.check.id, id);
        assert_eq!(err.failure, EntryFailure::MsrLoad { index: 2 });
        assert_eq!(err.failure.exit_reason().map(crate::exit::ExitReasonField::to_raw), Some(0x8000_0022));
        assert_eq!(err.failure.exit_qualification(), Some(2));
    }

    fn msr(index: u32) -> MsrEntry {
        MsrEntry { index, reserved: 0, value: 0 }
    }

    #[test]
    fn entries() {
        expect(msr(x86::msr::IA32_FS_BASE), "msr.fs_gs_base");
        expect(msr(x86::msr::IA32_GS_BASE), "msr.fs_gs_base");
        expect(msr(0x800), "msr.x2apic");
        expect(msr(0x8ff), "msr.x2apic");
        expect(msr(IA32_SMM_MONITOR_CTL), "msr.smm_monitor_ctl");
        expect(msr(IA32_BIOS_UPDT_TRIG), "msr.ucode_update");
        expect(MsrEntry::from_raw(0x1_0000_0174, 0), "msr.reserved");
        assert_eq!(check_msr_load_entry(&msr(0x7ff)), Ok(()));
        assert_eq!(check_msr_load_entry(&msr(0x900)), Ok(()));
        assert_eq!(check_msr_load_entry(&msr(x86::msr::IA32_KERNEL_GS_BASE)), Ok(()));
    }

    #[test]
    fn load_count() {
        let caps = everything();
        let max = caps.misc().max_msr_list_entries();
        let mut v = baseline();
        v.set(VmcsField::EntryMsrLoadCount, u64::from(max));
        assert_eq!(check_vm_entry(&v, &caps, &EntryEnv::TURTLES, &TestMemory::default()), Ok(()));
        let err = expect_entry(
            &caps,
            &EntryEnv::TURTLES,
            &TestMemory::default(),
            |v| v.set(VmcsField::EntryMsrLoadCount, u64::from(max)),
            VmcsField::EntryMsrLoadCount,
            |c| c + 1,
            "msr.load_count",
        );
        assert_eq!(err.failure, EntryFailure::MsrLoad { index: max + 1 });
    }

    /// Every check id in this file has a negative test above.
    #[test]
    fn every_check_has_a_negative_test() {
        assert_every_id_tested(include_str!("msr.rs"), "msr.", 6);
    }
}
