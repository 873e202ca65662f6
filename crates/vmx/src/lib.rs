//! Intel VMX as data.
//!
//! Everything a VMX implementation and a hypervisor on top of it need to
//! agree on, as types: the VMCS field encodings ([`field`]), the control
//! words and event formats ([`controls`]), exit reasons and exit
//! qualifications ([`exit`]), VM-instruction error numbers ([`error`]), the
//! IA32_VMX_* capability MSRs ([`caps`]) and the VM-entry checks
//! ([`mod@check`]). Nothing here executes guest code; the CPU model in
//! `turtles-cpu` and the nested hypervisor in `turtles-nested` both build on
//! these definitions, which follow the Intel SDM vol. 3C, ch. 25 "Virtual
//! Machine Control Structures" through ch. 31 "VMX Instruction Reference"
//! (ch. 24-30 in older editions) and appendices A-C.
#![cfg_attr(not(test), no_std)]
#![forbid(unsafe_code)]

pub mod caps;
pub mod check;
pub mod conditions;
pub mod controls;
pub mod error;
pub mod exit;
pub mod field;
pub mod vmcs;

pub use caps::{ControlWord, VmxCaps};
pub use check::{check_vm_entry, Check, EntryEnv, EntryError, EntryFailure, EntryMemory, MsrEntry, VmcsRead};
pub use controls::{EntryCtls, ExitCtls, PinCtls, ProcCtls, ProcCtls2, ProcCtls3};
pub use error::VmInstructionError;
pub use exit::{ExitReason, ExitReasonField};
pub use field::{FieldKind, VmcsField, Width};
pub use vmcs::{LaunchState, Vmcs};
