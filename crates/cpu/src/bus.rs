//! The CPU's window onto the platform: port I/O, MMIO, platform MSRs (the
//! local APIC) and the interrupt lines.
//!
//! The VMM implements [`Bus`] once per vCPU. Every call carries the current
//! virtual time in nanoseconds, so devices stay deterministic: time is a
//! function of instructions retired, never of the host clock.

/// The platform as one vCPU sees it.
pub trait Bus {
    /// IN from `port` of `size` bytes (1, 2 or 4).
    fn io_in(&mut self, now_ns: u64, port: u16, size: u8) -> u32;
    /// OUT to `port` of `size` bytes (1, 2 or 4).
    fn io_out(&mut self, now_ns: u64, port: u16, size: u8, value: u32);
    /// A read of guest-physical memory that is not RAM.
    fn mmio_read(&mut self, now_ns: u64, gpa: u64, size: u8) -> u64;
    /// A write of guest-physical memory that is not RAM.
    fn mmio_write(&mut self, now_ns: u64, gpa: u64, size: u8, value: u64);
    /// RDMSR of an MSR the platform owns (APIC base, x2APIC, TSC deadline).
    /// `None` means the platform does not implement it.
    fn rdmsr(&mut self, now_ns: u64, msr: u32) -> Option<u64>;
    /// WRMSR of an MSR the platform owns; `false` means #GP.
    fn wrmsr(&mut self, now_ns: u64, msr: u32, value: u64) -> bool;
    /// Whether a maskable interrupt is waiting (the INTR line).
    fn interrupt_pending(&mut self, now_ns: u64) -> bool;
    /// Acknowledges the pending maskable interrupt and returns its vector.
    fn ack_interrupt(&mut self, now_ns: u64) -> Option<u8>;
    /// Takes a pending NMI.
    fn take_nmi(&mut self) -> bool;
    /// CR8 write: the task-priority class.
    fn set_tpr(&mut self, tpr: u8);
    /// CR8 read.
    fn tpr(&mut self) -> u8;
    /// Whether the platform wants the run to stop now (the guest asked to
    /// exit or power off), checked after port and MMIO accesses so that
    /// no instruction runs after an isa-debug-exit write.
    fn stop_requested(&mut self) -> bool {
        false
    }
}

/// A bus with nothing on it: RAM-only machines in unit tests.
#[derive(Default)]
pub struct NullBus {
    /// Bytes written to any port, in order, for tests that check port I/O.
    pub out: Vec<(u16, u32)>,
}

impl Bus for NullBus {
    fn io_in(&mut self, _: u64, _: u16, size: u8) -> u32 {
        match size {
            1 => 0xff,
            2 => 0xffff,
            _ => 0xffff_ffff,
        }
    }
    fn io_out(&mut self, _: u64, port: u16, _: u8, value: u32) {
        self.out.push((port, value));
    }
    fn mmio_read(&mut self, _: u64, _: u64, _: u8) -> u64 {
        u64::MAX
    }
    fn mmio_write(&mut self, _: u64, _: u64, _: u8, _: u64) {}
    fn rdmsr(&mut self, _: u64, _: u32) -> Option<u64> {
        None
    }
    fn wrmsr(&mut self, _: u64, _: u32, _: u64) -> bool {
        false
    }
    fn interrupt_pending(&mut self, _: u64) -> bool {
        false
    }
    fn ack_interrupt(&mut self, _: u64) -> Option<u8> {
        None
    }
    fn take_nmi(&mut self) -> bool {
        false
    }
    fn set_tpr(&mut self, _: u8) {}
    fn tpr(&mut self) -> u8 {
        0
    }
}
