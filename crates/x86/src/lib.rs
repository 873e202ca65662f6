//! Architectural definitions of x86-64, shared by the software CPU, the VMX
//! model, the nested hypervisor and the guest kernels.
//!
//! Everything here is data: bit positions, register numbers, MSR indices and
//! descriptor formats as the Intel SDM vol. 3A defines them (ch. 2 "System
//! Architecture Overview", ch. 3 "Protected-Mode Memory Management", ch. 4
//! "Paging", ch. 6 "Interrupt and Exception Handling") and the MSR list of
//! vol. 4 ("Model-Specific Registers").
#![no_std]
#![forbid(unsafe_code)]

pub mod addr;
pub mod cr;
pub mod msr;
pub mod paging;
pub mod seg;
pub mod vector;

pub use addr::{Gpa, Gva};
pub use cr::{Cr0, Cr4, Efer, Rflags, Xcr0};
