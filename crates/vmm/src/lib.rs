//! Turtles' L0 virtual machine monitor.
//!
//! A [`Vm`] is guest RAM ([`cpu::Memory`]), the PC platform
//! ([`devices::Platform`]) and N software CPUs ([`cpu::Cpu`]), driven by a
//! deterministic round-robin scheduler on one virtual clock:
//!
//! * [`loader`] places a kernel in RAM (multiboot v1 as QEMU does it, or a
//!   plain ELF64 entered in long mode) and sets the boot CPU's entry state;
//! * [`layout`] fixes where the boot structures live in low memory and
//!   builds the memory map the guest is told about;
//! * [`cpu_model`] turns QEMU's `-cpu MODEL[,+feat,-feat]` into the CPUID
//!   answers each vCPU gives;
//! * [`policy`] is the per-VM CPU policy behind `--cpu`: a preset or a TOML
//!   file naming the CPUID answers, readable MSR values and VMX
//!   capabilities a VM is offered;
//! * [`vm`] is the machine and its run loop; [`report`] what a run tells the
//!   user afterwards.
//!
//! Everything the guest or the user controls is checked: a bad kernel, a
//! bad option or a misbehaving guest ends in an error value or a report,
//! never a panic.
#![forbid(unsafe_code)]

mod bus;
pub mod cpu_model;
pub mod l0;
pub mod layout;
pub mod loader;
pub mod policy;
pub mod report;
pub mod vm;

pub use cpu_model::{parse_cpu_spec, CpuModelError};
pub use loader::{BootState, KernelFormat, LoadError, ModuleImage};
pub use policy::{CpuPolicy, PolicyError};
pub use report::{CpuState, ExitKind, RunReport};
pub use vm::{DeviceConfig, ImageSource, ModuleSpec, SharedWriter, Vm, VmConfig, VmError};

/// Targets of the `tracing` events this crate emits, for filters such as
/// `RUST_LOG=turtles::exit=debug`.
pub mod trace_targets {
    /// Run exits, exit requests, resets and idle clock jumps (debug).
    pub const EXIT: &str = "turtles::exit";
    /// One event per vCPU time slice (trace).
    pub const SCHED: &str = "turtles::sched";
    /// Interrupt acknowledgements, NMIs, INIT and SIPI (trace).
    pub const IRQ: &str = "turtles::irq";
    /// Port, MMIO and platform MSR accesses (trace).
    pub const IO: &str = "turtles::io";
    /// Every instruction executed, with its bytes (trace; slow).
    pub const INSN: &str = "turtles::insn";
    /// Every VM exit L0 handles: reason, qualification, guest RIP (trace).
    pub const VMEXIT: &str = "turtles::vmexit";
}
