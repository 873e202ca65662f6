//! Local APIC (xAPIC MMIO mode) and I/O APIC helpers (SDM Vol. 3A, chapter
//! 13 "Advanced Programmable Interrupt Controller (APIC)"; 82093AA I/O APIC
//! datasheet). Both MMIO windows are identity mapped, uncached, by the boot
//! page tables.

use crate::arch::{self, msr};

/// Default local APIC physical base.
pub const LAPIC_BASE: u64 = 0xfee0_0000;
/// Default I/O APIC physical base.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;

/// Local APIC register offsets (SDM Vol. 3A, Table 13-1).
pub mod reg {
    /// Local APIC ID.
    pub const ID: u32 = 0x20;
    /// Version.
    pub const VERSION: u32 = 0x30;
    /// Task priority.
    pub const TPR: u32 = 0x80;
    /// Processor priority.
    pub const PPR: u32 = 0xa0;
    /// End of interrupt.
    pub const EOI: u32 = 0xb0;
    /// Spurious interrupt vector.
    pub const SVR: u32 = 0xf0;
    /// In-service register (8 x 32 bits, 0x10 apart).
    pub const ISR: u32 = 0x100;
    /// Interrupt request register (8 x 32 bits, 0x10 apart).
    pub const IRR: u32 = 0x200;
    /// Error status.
    pub const ESR: u32 = 0x280;
    /// Interrupt command, low half.
    pub const ICR_LO: u32 = 0x300;
    /// Interrupt command, high half (destination).
    pub const ICR_HI: u32 = 0x310;
    /// LVT timer.
    pub const LVT_TIMER: u32 = 0x320;
    /// LVT LINT0.
    pub const LVT_LINT0: u32 = 0x350;
    /// LVT LINT1.
    pub const LVT_LINT1: u32 = 0x360;
    /// LVT error.
    pub const LVT_ERROR: u32 = 0x370;
    /// Timer initial count.
    pub const TIMER_INIT: u32 = 0x380;
    /// Timer current count.
    pub const TIMER_CUR: u32 = 0x390;
    /// Timer divide configuration.
    pub const TIMER_DIV: u32 = 0x3e0;
}

/// Reads a local APIC register.
pub fn read(offset: u32) -> u32 {
    // SAFETY: the LAPIC window is mapped; register reads have no side effects
    // beyond the architectural ones the caller asked for.
    unsafe { core::ptr::read_volatile((LAPIC_BASE + offset as u64) as *const u32) }
}

/// Writes a local APIC register.
pub fn write(offset: u32, v: u32) {
    // SAFETY: the LAPIC window is mapped; the caller chooses the effect.
    unsafe { core::ptr::write_volatile((LAPIC_BASE + offset as u64) as *mut u32, v) }
}

/// This CPU's local APIC ID (xAPIC: bits 31:24 of the ID register).
pub fn id() -> u32 {
    read(reg::ID) >> 24
}

/// Software-enables the local APIC (IA32_APIC_BASE global enable and
/// SVR bit 8) with spurious vector 0xff, TPR 0, LINT0/LINT1/timer masked.
pub fn enable() {
    // SAFETY: IA32_APIC_BASE exists on every CPU with an APIC; setting the
    // global-enable bit keeps the default base.
    unsafe {
        let base = arch::rdmsr(msr::APIC_BASE);
        arch::wrmsr(msr::APIC_BASE, base | 1 << 11);
    }
    write(reg::SVR, 0x100 | 0xff);
    write(reg::TPR, 0);
    write(reg::LVT_TIMER, 1 << 16);
}

/// Signals end of interrupt.
pub fn eoi() {
    write(reg::EOI, 0);
}

/// ICR delivery modes (bits 10:8).
pub mod icr {
    /// Fixed.
    pub const FIXED: u32 = 0 << 8;
    /// NMI.
    pub const NMI: u32 = 4 << 8;
    /// INIT.
    pub const INIT: u32 = 5 << 8;
    /// Start-up.
    pub const STARTUP: u32 = 6 << 8;
    /// Level assert.
    pub const ASSERT: u32 = 1 << 14;
    /// Level-triggered.
    pub const LEVEL: u32 = 1 << 15;
    /// Delivery status (send pending).
    pub const PENDING: u32 = 1 << 12;
    /// Destination shorthand: self.
    pub const SELF: u32 = 1 << 18;
    /// Destination shorthand: all excluding self.
    pub const ALL_BUT_SELF: u32 = 3 << 18;
}

/// Sends an IPI: writes ICR high (destination APIC ID) then low, and waits
/// for the delivery-status bit to clear.
pub fn send_ipi(dest: u32, low: u32) {
    write(reg::ICR_HI, dest << 24);
    write(reg::ICR_LO, low);
    for _ in 0..1_000_000 {
        if read(reg::ICR_LO) & icr::PENDING == 0 {
            break;
        }
        core::hint::spin_loop();
    }
}

/// True if `vector` is set in the 256-bit register array at `base` (ISR,
/// IRR or TMR).
pub fn bit(base: u32, vector: u8) -> bool {
    read(base + 0x10 * (vector as u32 / 32)) >> (vector % 32) & 1 == 1
}

/// Reads an I/O APIC register through IOREGSEL/IOWIN.
pub fn ioapic_read(index: u32) -> u32 {
    // SAFETY: the IOAPIC window is mapped; IOREGSEL at +0, IOWIN at +0x10.
    unsafe {
        core::ptr::write_volatile(IOAPIC_BASE as *mut u32, index);
        core::ptr::read_volatile((IOAPIC_BASE + 0x10) as *const u32)
    }
}

/// Writes an I/O APIC register through IOREGSEL/IOWIN.
pub fn ioapic_write(index: u32, v: u32) {
    // SAFETY: as for ioapic_read.
    unsafe {
        core::ptr::write_volatile(IOAPIC_BASE as *mut u32, index);
        core::ptr::write_volatile((IOAPIC_BASE + 0x10) as *mut u32, v);
    }
}

/// Programs redirection entry `pin` (registers 0x10 + 2 * pin): `low` holds
/// vector, delivery mode, polarity, trigger and mask; `dest` is the APIC ID.
pub fn ioapic_route(pin: u32, low: u32, dest: u32) {
    ioapic_write(0x10 + 2 * pin + 1, dest << 24);
    ioapic_write(0x10 + 2 * pin, low);
}

/// Masks redirection entry `pin`.
pub fn ioapic_mask(pin: u32) {
    ioapic_write(0x10 + 2 * pin, 1 << 16);
}

/// The 8259A pair: remaps the master to `base` and the slave to `base + 8`
/// (ICW1..ICW4, edge triggered, 8086 mode) and masks every line.
pub fn pic_remap(base: u8) {
    // SAFETY: standard 8259A initialisation sequence on ports 0x20/0x21 and
    // 0xa0/0xa1.
    unsafe {
        arch::outb(0x20, 0x11);
        arch::outb(0xa0, 0x11);
        arch::outb(0x21, base);
        arch::outb(0xa1, base + 8);
        arch::outb(0x21, 4); // slave on IR2
        arch::outb(0xa1, 2); // slave identity
        arch::outb(0x21, 1);
        arch::outb(0xa1, 1);
        arch::outb(0x21, 0xff);
        arch::outb(0xa1, 0xff);
    }
}

/// Sets the 8259A interrupt masks (bit set = line masked).
pub fn pic_set_mask(mask: u16) {
    // SAFETY: OCW1 writes to the mask registers.
    unsafe {
        arch::outb(0x21, mask as u8);
        arch::outb(0xa1, (mask >> 8) as u8);
    }
}

/// Sends a non-specific EOI for `irq` (to the slave too for IRQ 8-15).
pub fn pic_eoi(irq: u8) {
    // SAFETY: OCW2 non-specific EOI.
    unsafe {
        if irq >= 8 {
            arch::outb(0xa0, 0x20);
        }
        arch::outb(0x20, 0x20);
    }
}
