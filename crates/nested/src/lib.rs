//! Nested VMX for Turtles' L0: a guest hypervisor (L1) uses VMX as on
//! hardware, and L0 makes it work on the single level of VMX its CPU
//! offers.
//!
//! L1 runs in VMX non-root operation under L0's vmcs01. Every VMX
//! instruction it executes exits to L0 (SDM vol. 3C, 26.1.2 "Instructions
//! That Cause VM Exits Unconditionally"), and L0 emulates it against
//! vmcs12, the VMCS L1 builds for its own guest L2 — except VMREAD and
//! VMWRITE of the fields [`vmcs12::shadow_bitmap`] lets through, which
//! reach the cached vmcs12 directly when L0 makes it vmcs01's shadow VMCS
//! (25.10 "VMCS Types: Ordinary and Shadow"). When L1 enters L2, L0
//! merges vmcs01 and vmcs12 into vmcs02 and runs L2 with it; L2's exits
//! come to L0, which handles them or reflects them to L1 by writing them
//! into vmcs12 and resuming L1 at its host state. This is the design of the
//! Turtles paper (Ben-Yehuda et al., OSDI 2010) and of KVM's nested VMX.
//!
//! The crate is split by concern after KVM's `arch/x86/kvm/vmx/nested.c`:
//!
//! - [`vmcs12`]: Turtles' vmcs12 layout in L1's memory and L0's cached copy
//!   (SDM 25.2 "Format of the VMCS Region", 25.11 "Software Use of the
//!   VMCS and Related Structures");
//! - [`instructions`]: VMXON ... INVVPID, with the preconditions and
//!   results of SDM ch. 31 "VMX Instruction Reference" (31.3 "VMX
//!   Instructions", 31.4 "VM Instruction Error Numbers");
//! - [`operand`]: the instructions' operands from the VM-exit instruction
//!   information (SDM 28.2.5 "Information for VM Exits Due to Instruction
//!   Execution"), with segmentation;
//! - [`memory`]: L1's memory as those instructions reach it;
//! - [`ept`]: shadow EPT02, EPT12 composed with EPT01 on demand (SDM 29.3
//!   "The Extended Page Table Mechanism (EPT)");
//! - [`vmfunc`]: L2's VM functions, EPTP switching on vmcs12's list (SDM
//!   26.5.5 "VM Functions", 26.5.5.3 "EPTP Switching");
//! - [`watch`]: the EPT12 table pages L0 keeps read-only in EPT01, so that
//!   L1's writes to them drop EPT02 (SDM 29.4 "Caching Translation
//!   Information").
//!
//! Still to come, in their own files: `merge` (vmcs02 from vmcs01 and
//! vmcs12), `sync` (vmcs02 back into vmcs12 on exit), `reflect` (which
//! exits of L2 go to L1).
//!
//! Everything here is a function of its inputs: L1's registers, memory and
//! a few MSR values come in, an [`Outcome`] goes out, and L0 applies it to
//! L1 (flags, RIP, an injected exception, a virtual VM entry). Nothing L1
//! controls can make these functions panic.
#![forbid(unsafe_code)]

pub mod ept;
pub mod instructions;
pub mod memory;
pub mod merge;
pub mod operand;
pub mod reflect;
pub mod sync;
pub mod vmcs12;
pub mod vmfunc;
pub mod watch;

pub use instructions::{eptp_valid, ExitInfo, NestedVmx, Outcome, L1};
pub use operand::Location;
pub use vmcs12::Vmcs12;
