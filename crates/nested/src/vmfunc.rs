//! VM functions of L2: what VMFUNC does when L2 executes it under the
//! controls of vmcs12 (SDM vol. 3C, 26.5.5 "VM Functions", 26.5.5.3 "EPTP
//! Switching").
//!
//! vmcs02 keeps "enable VM functions" from vmcs12 (so VMFUNC is #UD in L2
//! exactly when it would be under vmcs12) but no VM-function controls, so
//! every VMFUNC of L2 exits to L0 with reason 59. L0 then carries out the
//! function as the processor would have under vmcs12: [`vmfunc`] decides,
//! from vmcs12, L1's memory (the EPTP list) and L1's capabilities, whether
//! the function succeeds or exits. An EPTP switch that succeeds changes
//! vmcs12's EPT pointer ([`EptpSwitch::apply`]), L0 moves EPT02 to the new
//! EPT12 and resumes L2 after the instruction, and L1 never sees an exit;
//! one that fails is reflected to L1 as the VMFUNC exit hardware would
//! have given it.
//!
//! Everything L1 controls is hostile here: the EPTP-list address and its
//! entries are read from L1's RAM only (elsewhere reads fail the switch),
//! and every entry is checked as a VM entry checks an EPTP.

use crate::instructions::eptp_valid;
use crate::merge::proc2;
use cpu::Memory;
use vmx::caps::VmxCaps;
use vmx::controls::{ProcCtls2, VmFuncCtls};
use vmx::{ControlWord, Vmcs, VmcsField as F};

/// Number of entries of an EPTP list (26.5.5.3: one 4 KiB page of 8-byte
/// EPTPs).
pub const EPTP_LIST_ENTRIES: u64 = 512;

/// Why a VMFUNC of L2 does not complete: each one is a VM exit with reason
/// 59 (VMFUNC) to L1, except [`VmfuncFailure::Disabled`], which is #UD in
/// L2 (the processor raises it itself, since vmcs02 keeps vmcs12's
/// "enable VM functions").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmfuncFailure {
    /// "Enable VM functions" is clear in vmcs12 (26.5.5: VMFUNC is #UD).
    Disabled,
    /// The VM-function control bit of the function in EAX is clear, or
    /// EAX is above 63 (26.5.5).
    FunctionNotEnabled {
        /// EAX.
        function: u32,
    },
    /// EPTP switching with ECX at or above 512 (26.5.5.3).
    IndexOutOfRange {
        /// ECX.
        index: u32,
    },
    /// The EPTP-list entry lies outside L1's RAM (26.5.5.3: the read gives
    /// nothing a VM entry would accept).
    ListUnreadable {
        /// L1-physical address of the entry.
        address: u64,
    },
    /// The EPTP-list entry fails the checks a VM entry makes on the EPT
    /// pointer (27.2.1.1 "VM-Execution Control Fields").
    InvalidEptp {
        /// The entry.
        eptp: u64,
    },
}

/// A successful EPTP switch: the new EPTP12 and the list index it came
/// from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptpSwitch {
    /// The list entry, now vmcs12's EPT pointer.
    pub eptp: u64,
    /// ECX, for the EPTP-index field.
    pub index: u16,
}

impl EptpSwitch {
    /// Writes the switch into vmcs12 as the processor writes its VMCS
    /// (26.5.5.3): the EPT pointer, and the EPTP index when L1's
    /// processor supports "EPT-violation #VE" at all.
    pub fn apply(self, vmcs12: &mut Vmcs, caps: &VmxCaps) {
        vmcs12.set(F::EptPointer, self.eptp);
        let ve = u64::from(ProcCtls2::EPT_VIOLATION_VE.bits());
        if caps.allowed(ControlWord::Proc2).may_be_one & ve != 0 {
            vmcs12.set(F::EptpIndex, u64::from(self.index));
        }
    }
}

/// VMFUNC of L2 with `eax` and `ecx` under vmcs12 (26.5.5, then 26.5.5.3
/// for function 0), checks in the SDM's order: the function must be
/// enabled, the index below 512, the list entry in L1's RAM and a valid
/// EPTP for L1's capabilities.
pub fn vmfunc(vmcs12: &Vmcs, mem: &Memory, eax: u64, ecx: u64, caps: &VmxCaps) -> Result<EptpSwitch, VmfuncFailure> {
    if !proc2(vmcs12).contains(ProcCtls2::ENABLE_VM_FUNCTIONS) {
        return Err(VmfuncFailure::Disabled);
    }
    let function = eax as u32;
    let enabled = VmFuncCtls::from_bits_retain(vmcs12.get(F::VmFunctionControls));
    // 26.5.5: EAX selects the function; above 63, or with its control bit
    // clear, VMFUNC exits. EPTP switching is the only function.
    if function != 0 || !enabled.contains(VmFuncCtls::EPTP_SWITCHING) {
        return Err(VmfuncFailure::FunctionNotEnabled { function });
    }
    let index = ecx as u32;
    if u64::from(index) >= EPTP_LIST_ENTRIES {
        return Err(VmfuncFailure::IndexOutOfRange { index });
    }
    // The list address passed the entry checks (page aligned, within the
    // physical-address width), so this cannot overflow; L1's RAM only.
    let address = vmcs12.get(F::EptpListAddress).wrapping_add(8 * u64::from(index));
    let eptp = match mem.read_u64(address) {
        Ok(e) if mem.ram_offset(address).is_some() => e,
        _ => return Err(VmfuncFailure::ListUnreadable { address }),
    };
    if !eptp_valid(eptp, caps) {
        return Err(VmfuncFailure::InvalidEptp { eptp });
    }
    Ok(EptpSwitch { eptp, index: index as u16 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpu::mem::PRIVATE_BASE;
    use vmx::controls::ProcCtls;

    const LIST: u64 = 0x3000;
    /// WB, 4-level walk, A/D off.
    const EPTP_A: u64 = 0x10_0000 | 6 | 3 << 3;
    const EPTP_B: u64 = 0x20_0000 | 6 | 3 << 3;

    fn caps() -> VmxCaps {
        VmxCaps::turtles()
    }

    /// vmcs12 with EPT, VM functions and EPTP switching on, the list at
    /// [`LIST`] holding A, B and an invalid entry (0).
    fn setup() -> (Vmcs, Memory) {
        let mut v = Vmcs::new();
        v.set(F::PrimaryProcControls, u64::from(ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits()));
        let p2 = ProcCtls2::ENABLE_EPT | ProcCtls2::ENABLE_VM_FUNCTIONS;
        v.set(F::SecondaryProcControls, u64::from(p2.bits()));
        v.set(F::VmFunctionControls, VmFuncCtls::EPTP_SWITCHING.bits());
        v.set(F::EptpListAddress, LIST);
        v.set(F::EptPointer, EPTP_A);
        let mut m = Memory::new(1 << 20).unwrap();
        m.write_u64(LIST, EPTP_A).unwrap();
        m.write_u64(LIST + 8, EPTP_B).unwrap();
        m.write_u64(LIST + 511 * 8, EPTP_B).unwrap();
        (v, m)
    }

    #[test]
    fn eptp_switching_takes_the_list_entry_ecx_names() {
        let (v, m) = setup();
        assert_eq!(vmfunc(&v, &m, 0, 1, &caps()), Ok(EptpSwitch { eptp: EPTP_B, index: 1 }));
        assert_eq!(vmfunc(&v, &m, 0, 0, &caps()), Ok(EptpSwitch { eptp: EPTP_A, index: 0 }));
        assert_eq!(vmfunc(&v, &m, 0, 511, &caps()), Ok(EptpSwitch { eptp: EPTP_B, index: 511 }));
        // Only ECX counts, not RCX's high half.
        assert_eq!(vmfunc(&v, &m, 0, 1 << 32 | 1, &caps()), Ok(EptpSwitch { eptp: EPTP_B, index: 1 }));
    }

    #[test]
    fn vmfunc_without_enable_vm_functions_is_disabled() {
        let (mut v, m) = setup();
        v.set(F::SecondaryProcControls, u64::from(ProcCtls2::ENABLE_EPT.bits()));
        assert_eq!(vmfunc(&v, &m, 0, 1, &caps()), Err(VmfuncFailure::Disabled));
        // Secondary controls not activated: none of them count.
        let (mut v, m) = setup();
        v.set(F::PrimaryProcControls, 0);
        assert_eq!(vmfunc(&v, &m, 0, 1, &caps()), Err(VmfuncFailure::Disabled));
    }

    #[test]
    fn functions_other_than_an_enabled_eptp_switch_exit() {
        let (mut v, m) = setup();
        assert_eq!(vmfunc(&v, &m, 1, 1, &caps()), Err(VmfuncFailure::FunctionNotEnabled { function: 1 }));
        assert_eq!(vmfunc(&v, &m, 64, 1, &caps()), Err(VmfuncFailure::FunctionNotEnabled { function: 64 }));
        // EAX, not RAX: 2^32 is function 0.
        assert_eq!(vmfunc(&v, &m, 1 << 32, 1, &caps()).map(|s| s.eptp), Ok(EPTP_B));
        v.set(F::VmFunctionControls, 0);
        assert_eq!(vmfunc(&v, &m, 0, 1, &caps()), Err(VmfuncFailure::FunctionNotEnabled { function: 0 }));
    }

    #[test]
    fn an_index_from_512_up_exits() {
        let (v, m) = setup();
        assert_eq!(vmfunc(&v, &m, 0, 512, &caps()), Err(VmfuncFailure::IndexOutOfRange { index: 512 }));
        assert_eq!(
            vmfunc(&v, &m, 0, u64::from(u32::MAX), &caps()),
            Err(VmfuncFailure::IndexOutOfRange { index: u32::MAX })
        );
    }

    #[test]
    fn invalid_list_entries_exit() {
        let (v, mut m) = setup();
        assert_eq!(vmfunc(&v, &m, 0, 2, &caps()), Err(VmfuncFailure::InvalidEptp { eptp: 0 }));
        // One bad property at a time: memory type UC (not offered), a
        // 5-level walk (not offered), reserved bits 11:8, an address
        // beyond the physical-address width.
        for bad in [EPTP_B & !7, EPTP_B & !0x38 | 4 << 3, EPTP_B | 1 << 8, EPTP_B | 1 << 50] {
            m.write_u64(LIST + 16, bad).unwrap();
            assert_eq!(vmfunc(&v, &m, 0, 2, &caps()), Err(VmfuncFailure::InvalidEptp { eptp: bad }), "{bad:#x}");
        }
        // A/D flags only when offered.
        let ad = EPTP_B | 1 << 6;
        m.write_u64(LIST + 16, ad).unwrap();
        assert!(vmfunc(&v, &m, 0, 2, &caps()).is_ok());
        let no_ad = caps().to_builder().ept_vpid(caps().ept_vpid() - vmx::caps::EptVpidCap::ACCESSED_DIRTY).build();
        assert_eq!(vmfunc(&v, &m, 0, 2, &no_ad), Err(VmfuncFailure::InvalidEptp { eptp: ad }));
    }

    #[test]
    fn lists_outside_l1_ram_fail() {
        let (mut v, m) = setup();
        // Past the end of RAM, and in L0's private memory.
        for list in [0x10_0000, PRIVATE_BASE] {
            v.set(F::EptpListAddress, list);
            let address = list + 8;
            assert_eq!(vmfunc(&v, &m, 0, 1, &caps()), Err(VmfuncFailure::ListUnreadable { address }), "{list:#x}");
        }
        // An address at the top of the physical space does not wrap.
        v.set(F::EptpListAddress, !0xfff);
        assert!(matches!(vmfunc(&v, &m, 0, 511, &caps()), Err(VmfuncFailure::ListUnreadable { .. })));
    }

    #[test]
    fn apply_writes_the_eptp_and_the_index_with_ve() {
        let (mut v, _) = setup();
        let s = EptpSwitch { eptp: EPTP_B, index: 7 };
        s.apply(&mut v, &caps());
        assert_eq!(v.get(F::EptPointer), EPTP_B);
        assert_eq!(v.get(F::EptpIndex), 0, "no #VE offered: the index is left alone");
        let ve = caps().to_builder().proc2(ProcCtls2::ENABLE_EPT | ProcCtls2::EPT_VIOLATION_VE).build();
        s.apply(&mut v, &ve);
        assert_eq!(v.get(F::EptpIndex), 7);
    }
}
