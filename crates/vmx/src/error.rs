//! VM-instruction error numbers (Intel SDM vol. 3C, 31.4 "VM Instruction
//! Error Numbers"; 30.4 in older editions).
//!
//! A VMX instruction that fails with VMfailValid (a current VMCS exists)
//! writes one of these numbers into the VM-instruction error field
//! ([`crate::VmcsField::VmInstructionError`]). Numbers 14, 21 and 27 are
//! not assigned.

use core::fmt;

macro_rules! vm_instruction_errors {
    ($( $(#[doc = $doc:literal])* $variant:ident = $num:literal, $text:literal; )*) => {
        /// A VM-instruction error number.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u32)]
        pub enum VmInstructionError {
            $( $(#[doc = $doc])* $variant = $num, )*
        }

        impl VmInstructionError {
            /// Every defined error, by number.
            pub const ALL: &'static [VmInstructionError] = &[ $( VmInstructionError::$variant, )* ];

            /// The error with this number; `None` for 0 and unassigned
            /// numbers.
            pub const fn from_number(number: u32) -> Option<VmInstructionError> {
                match number {
                    $( $num => Some(VmInstructionError::$variant), )*
                    _ => None,
                }
            }

            /// What went wrong, in a sentence.
            pub const fn description(self) -> &'static str {
                match self {
                    $( VmInstructionError::$variant => $text, )*
                }
            }
        }
    };
}

vm_instruction_errors! {
    /// 1: VMCALL executed in VMX root operation.
    VmcallInVmxRoot = 1, "VMCALL was executed in VMX root operation";
    /// 2: VMCLEAR with an invalid physical address.
    VmclearInvalidAddress = 2, "VMCLEAR operand is not a valid, aligned physical address";
    /// 3: VMCLEAR with the VMXON pointer.
    VmclearVmxonPointer = 3, "VMCLEAR operand is the VMXON region";
    /// 4: VMLAUNCH with a non-clear VMCS.
    VmlaunchNonClearVmcs = 4, "VMLAUNCH needs a clear VMCS, but the current one is launched";
    /// 5: VMRESUME with a non-launched VMCS.
    VmresumeNonLaunchedVmcs = 5, "VMRESUME needs a launched VMCS, but the current one is clear";
    /// 6: VMRESUME after VMXOFF (VMXOFF and VMXON between VMLAUNCH and
    /// VMRESUME).
    VmresumeAfterVmxoff = 6, "VMRESUME on a VMCS whose state was lost by VMXOFF";
    /// 7: VM entry with invalid control field(s).
    EntryInvalidControls = 7, "VM entry failed: a VM-execution, VM-exit or VM-entry control field is invalid";
    /// 8: VM entry with invalid host-state field(s).
    EntryInvalidHostState = 8, "VM entry failed: a host-state field is invalid";
    /// 9: VMPTRLD with an invalid physical address.
    VmptrldInvalidAddress = 9, "VMPTRLD operand is not a valid, aligned physical address";
    /// 10: VMPTRLD with the VMXON pointer.
    VmptrldVmxonPointer = 10, "VMPTRLD operand is the VMXON region";
    /// 11: VMPTRLD with an incorrect VMCS revision identifier.
    VmptrldBadRevision = 11, "VMPTRLD region does not carry this processor's VMCS revision identifier";
    /// 12: VMREAD/VMWRITE from/to an unsupported VMCS component.
    UnsupportedVmcsComponent = 12, "VMREAD or VMWRITE names a field this processor does not support";
    /// 13: VMWRITE to a read-only VMCS component.
    VmwriteReadOnlyComponent = 13, "VMWRITE to a read-only VM-exit information field";
    /// 15: VMXON executed in VMX root operation.
    VmxonInVmxRoot = 15, "VMXON executed while already in VMX root operation";
    /// 16: VM entry with an invalid executive-VMCS pointer.
    EntryInvalidExecutiveVmcsPointer = 16, "VM entry with an invalid executive-VMCS pointer";
    /// 17: VM entry with a non-launched executive VMCS.
    EntryNonLaunchedExecutiveVmcs = 17, "VM entry with an executive VMCS that was never launched";
    /// 18: VM entry with executive-VMCS pointer not VMXON pointer (when
    /// attempting to deactivate the dual-monitor treatment of SMIs and SMM).
    EntryExecutiveVmcsPointerNotVmxonPointer = 18, "VM entry deactivating dual-monitor treatment, but the executive-VMCS pointer is not the VMXON pointer";
    /// 19: VMCALL with a non-clear VMCS (when attempting to activate the
    /// dual-monitor treatment of SMIs and SMM).
    VmcallNonClearVmcs = 19, "VMCALL activating dual-monitor treatment needs a clear VMCS";
    /// 20: VMCALL with invalid VM-exit control fields.
    VmcallInvalidExitControls = 20, "VMCALL activating dual-monitor treatment found invalid VM-exit control fields";
    /// 22: VMCALL with an incorrect MSEG revision identifier (when
    /// attempting to activate the dual-monitor treatment of SMIs and SMM).
    VmcallBadMsegRevision = 22, "VMCALL activating dual-monitor treatment found a wrong MSEG revision identifier";
    /// 23: VMXOFF under the dual-monitor treatment of SMIs and SMM.
    VmxoffUnderDualMonitor = 23, "VMXOFF while the dual-monitor treatment of SMIs and SMM is active";
    /// 24: VMCALL with invalid SMM-monitor features (when attempting to
    /// activate the dual-monitor treatment of SMIs and SMM).
    VmcallInvalidSmmMonitorFeatures = 24, "VMCALL activating dual-monitor treatment found invalid SMM-monitor features";
    /// 25: VM entry with invalid VM-execution control fields in the
    /// executive VMCS (when returning from SMM).
    EntryInvalidExecutiveControls = 25, "VM entry returning from SMM found invalid VM-execution controls in the executive VMCS";
    /// 26: VM entry with events blocked by MOV SS.
    EntryEventsBlockedByMovSs = 26, "VM entry attempted right after MOV SS or POP SS, while events are blocked";
    /// 28: Invalid operand to INVEPT/INVVPID.
    InvalidInveptInvvpidOperand = 28, "INVEPT or INVVPID with an unsupported type or an invalid descriptor";
}

impl VmInstructionError {
    /// The number written to the VM-instruction error field.
    pub const fn number(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for VmInstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VM-instruction error {}: {}", self.number(), self.description())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_with_the_sdm_gaps() {
        let numbers: std::vec::Vec<u32> = VmInstructionError::ALL.iter().map(|e| e.number()).collect();
        let expected: std::vec::Vec<u32> = (1..=28).filter(|n| ![14, 21, 27].contains(n)).collect();
        assert_eq!(numbers, expected);
        for &e in VmInstructionError::ALL {
            assert_eq!(VmInstructionError::from_number(e.number()), Some(e));
            assert!(!e.description().is_empty());
        }
        for n in [0, 14, 21, 27, 29] {
            assert_eq!(VmInstructionError::from_number(n), None);
        }
    }

    #[test]
    fn well_known_numbers() {
        assert_eq!(VmInstructionError::EntryInvalidControls.number(), 7);
        assert_eq!(VmInstructionError::EntryInvalidHostState.number(), 8);
        assert_eq!(VmInstructionError::UnsupportedVmcsComponent.number(), 12);
        assert_eq!(VmInstructionError::VmwriteReadOnlyComponent.number(), 13);
        assert_eq!(VmInstructionError::EntryEventsBlockedByMovSs.number(), 26);
        assert_eq!(VmInstructionError::InvalidInveptInvvpidOperand.number(), 28);
        let s = std::format!("{}", VmInstructionError::VmlaunchNonClearVmcs);
        assert!(s.starts_with("VM-instruction error 4: "));
    }
}
