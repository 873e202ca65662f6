//! The platform as one vCPU sees it: [`cpu::Bus`] forwarded to the
//! [`Platform`] with the vCPU's index, so local-APIC accesses, interrupts,
//! NMIs and the TPR reach that vCPU's own local APIC.
//!
//! One exception: port 0xe9, the Bochs/QEMU debug console. QEMU has it only
//! with `-debugcon`, so by default a guest that mirrors its console there
//! (as the bench and test kernels do) prints each line once. The VMM
//! therefore answers it itself: writes go to the debug-console sink when
//! one is configured and are dropped otherwise; reads return 0xe9 (the
//! presence signature) when it is configured and all-ones otherwise.

use cpu::Bus;
use devices::Platform;
use tracing::trace;

use crate::trace_targets::{IO, IRQ};
use crate::vm::SharedWriter;

/// The debug console port.
pub(crate) const DEBUGCON_PORT: u16 = 0xe9;

/// One vCPU's view of the platform, built for one time slice.
pub(crate) struct VcpuBus<'a> {
    /// The machine.
    pub platform: &'a mut Platform,
    /// The vCPU's index (= its APIC ID).
    pub cpu: u32,
    /// Where port 0xe9 output goes, if anywhere.
    pub debugcon: Option<&'a mut SharedWriter>,
}

impl Bus for VcpuBus<'_> {
    fn io_in(&mut self, now_ns: u64, port: u16, size: u8) -> u32 {
        if port == DEBUGCON_PORT {
            return match (&self.debugcon, size) {
                (Some(_), 1) => u32::from(DEBUGCON_PORT as u8),
                (_, 1) => 0xff,
                (_, 2) => 0xffff,
                _ => u32::MAX,
            };
        }
        let v = self.platform.io_read(now_ns, port, size);
        trace!(target: IO, cpu = self.cpu, now_ns, "in  port {port:#06x}/{size} -> {v:#x}");
        v
    }

    fn io_out(&mut self, now_ns: u64, port: u16, size: u8, value: u32) {
        trace!(target: IO, cpu = self.cpu, now_ns, "out port {port:#06x}/{size} <- {value:#x}");
        if port == DEBUGCON_PORT {
            if let Some(w) = self.debugcon.as_mut() {
                use std::io::Write;
                let _ = w.write_all(&value.to_le_bytes()[..usize::from(size.clamp(1, 4))]);
            }
            return;
        }
        self.platform.io_write(now_ns, port, size, value);
    }

    fn mmio_read(&mut self, now_ns: u64, gpa: u64, size: u8) -> u64 {
        let v = self.platform.mmio_read(now_ns, self.cpu, gpa, size);
        trace!(target: IO, cpu = self.cpu, now_ns, "mmio read  {gpa:#x}/{size} -> {v:#x}");
        v
    }

    fn mmio_write(&mut self, now_ns: u64, gpa: u64, size: u8, value: u64) {
        trace!(target: IO, cpu = self.cpu, now_ns, "mmio write {gpa:#x}/{size} <- {value:#x}");
        self.platform.mmio_write(now_ns, self.cpu, gpa, size, value);
    }

    fn rdmsr(&mut self, now_ns: u64, msr: u32) -> Option<u64> {
        let v = self.platform.lapic_msr_read(now_ns, self.cpu, msr);
        trace!(target: IO, cpu = self.cpu, now_ns, "rdmsr {msr:#x} -> {v:x?}");
        v
    }

    fn wrmsr(&mut self, now_ns: u64, msr: u32, value: u64) -> bool {
        let ok = self.platform.lapic_msr_write(now_ns, self.cpu, msr, value);
        trace!(target: IO, cpu = self.cpu, now_ns, "wrmsr {msr:#x} <- {value:#x} ({})", if ok { "ok" } else { "#GP" });
        ok
    }

    fn interrupt_pending(&mut self, now_ns: u64) -> bool {
        self.platform.pending_interrupt(now_ns, self.cpu)
    }

    fn ack_interrupt(&mut self, now_ns: u64) -> Option<u8> {
        let v = self.platform.ack_interrupt(now_ns, self.cpu);
        trace!(target: IRQ, cpu = self.cpu, now_ns, "interrupt acknowledged: vector {v:x?}");
        v
    }

    fn take_nmi(&mut self) -> bool {
        let nmi = self.platform.pending_nmi(self.cpu);
        if nmi {
            trace!(target: IRQ, cpu = self.cpu, "NMI taken");
        }
        nmi
    }

    fn set_tpr(&mut self, tpr: u8) {
        self.platform.set_tpr(self.cpu, tpr);
    }

    fn tpr(&mut self) -> u8 {
        self.platform.tpr(self.cpu)
    }

    /// An isa-debug-exit write, ACPI power-off or reset ends the run before
    /// another instruction retires, as in QEMU.
    fn stop_requested(&mut self) -> bool {
        self.platform.exit_request().is_some()
    }
}
