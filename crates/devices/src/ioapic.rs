//! Intel 82093AA I/O APIC at 0xfec00000 with 24 redirection entries.
//!
//! Follows the 82093AA datasheet, section 3 "Register Description":
//! IOREGSEL (offset 0x00) and IOWIN (offset 0x10) give indirect access to
//! IOAPICID (0x00), IOAPICVER (0x01, version 0x11 with 24 entries),
//! IOAPICARB (0x02) and the redirection table (0x10-0x3f, two 32-bit halves
//! per pin). Edge-triggered pins send a message on a rising edge;
//! level-triggered pins send while asserted, set Remote IRR, and resend after
//! the local APIC's EOI if the line is still asserted.
//!
//! The IOAPIC does not know the local APICs: it returns [`IrqMessage`]s for
//! the platform to deliver. The ID register keeps 8 bits so it can match the
//! MADT's IOAPIC ID on machines with more than 15 CPUs.

use crate::lapic::{DeliveryMode, Destination};

/// Default MMIO base.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
/// Number of input pins.
pub const IOAPIC_PINS: usize = 24;
/// IOAPICVER value: max redirection entry 23, version 0x11.
pub const IOAPIC_VERSION: u32 = 0x0017_0011;

const RTE_MASKED: u64 = 1 << 16;
const RTE_LEVEL: u64 = 1 << 15;
const RTE_REMOTE_IRR: u64 = 1 << 14;
/// Writable bits: vector, delivery mode, dest mode, polarity, trigger, mask,
/// destination. Delivery status (12) and Remote IRR (14) are read-only.
const RTE_WRITABLE: u64 = 0xff00_0000_0001_afff;

/// An interrupt message sent by the IOAPIC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqMessage {
    /// Vector.
    pub vector: u8,
    /// Delivery mode.
    pub mode: DeliveryMode,
    /// Destination (xAPIC 8-bit format).
    pub dest: Destination,
    /// Level-triggered.
    pub level_triggered: bool,
}

/// I/O APIC register state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoApic {
    /// IOREGSEL.
    pub regsel: u8,
    /// APIC ID (bits 31:24 of IOAPICID).
    pub id: u8,
    /// Redirection table.
    pub redir: [u64; IOAPIC_PINS],
    /// Current input line levels (after polarity), one bit per pin.
    pub levels: u32,
}

impl IoApic {
    /// Power-on state: all pins masked.
    pub fn new(id: u8) -> Self {
        Self { regsel: 0, id, redir: [RTE_MASKED; IOAPIC_PINS], levels: 0 }
    }

    fn message(&self, pin: usize) -> IrqMessage {
        let rte = self.redir[pin];
        IrqMessage {
            vector: rte as u8,
            mode: DeliveryMode::from_bits((rte >> 8) as u32),
            dest: Destination { dest: (rte >> 56) as u32, logical: rte & (1 << 11) != 0, x2apic_format: false },
            level_triggered: rte & RTE_LEVEL != 0,
        }
    }

    /// Sends the message of a level-triggered, asserted, unmasked pin whose
    /// Remote IRR is clear.
    fn service_level(&mut self, pin: usize, out: &mut Vec<IrqMessage>) {
        let rte = self.redir[pin];
        if rte & RTE_LEVEL != 0 && rte & (RTE_MASKED | RTE_REMOTE_IRR) == 0 && self.levels & (1 << pin) != 0 {
            if matches!(DeliveryMode::from_bits((rte >> 8) as u32), DeliveryMode::Fixed | DeliveryMode::LowestPriority)
            {
                self.redir[pin] |= RTE_REMOTE_IRR;
            }
            out.push(self.message(pin));
        }
    }

    /// Drives input `pin` to `level` (active high; the polarity bit is
    /// honoured). Messages to deliver are appended to `out`.
    pub fn set_irq(&mut self, pin: usize, level: bool, out: &mut Vec<IrqMessage>) {
        if pin >= IOAPIC_PINS {
            return;
        }
        let rte = self.redir[pin];
        let level = level != (rte & (1 << 13) != 0);
        let mask = 1u32 << pin;
        let was = self.levels & mask != 0;
        if level {
            self.levels |= mask;
        } else {
            self.levels &= !mask;
        }
        if rte & RTE_LEVEL != 0 {
            self.service_level(pin, out);
        } else if level && !was && rte & RTE_MASKED == 0 {
            out.push(self.message(pin));
        }
    }

    /// EOI for `vector` from a local APIC: clears Remote IRR of matching
    /// level-triggered pins and resends those still asserted.
    pub fn eoi(&mut self, vector: u8, out: &mut Vec<IrqMessage>) {
        for pin in 0..IOAPIC_PINS {
            let rte = self.redir[pin];
            if rte as u8 == vector && rte & RTE_REMOTE_IRR != 0 {
                self.redir[pin] &= !RTE_REMOTE_IRR;
                self.service_level(pin, out);
            }
        }
    }

    fn read_indirect(&self) -> u32 {
        match self.regsel {
            0x00 => u32::from(self.id) << 24,
            0x01 => IOAPIC_VERSION,
            0x02 => u32::from(self.id) << 24,
            r @ 0x10..=0x3f => {
                let rte = self.redir[usize::from((r - 0x10) / 2)];
                if r & 1 == 0 {
                    rte as u32
                } else {
                    (rte >> 32) as u32
                }
            }
            _ => 0xffff_ffff,
        }
    }

    /// MMIO read at `offset` within the IOAPIC page.
    pub fn mmio_read(&self, offset: u64, size: u8) -> u64 {
        let v = match offset {
            0x00 => u32::from(self.regsel),
            0x10..=0x13 => self.read_indirect() >> ((offset - 0x10) * 8),
            _ => 0,
        };
        u64::from(v) & crate::size_mask(size)
    }

    /// MMIO write at `offset`; unmasking an asserted level-triggered pin
    /// sends its message.
    pub fn mmio_write(&mut self, offset: u64, value: u64, out: &mut Vec<IrqMessage>) {
        match offset {
            0x00 => self.regsel = value as u8,
            0x10 => {
                let value = value as u32;
                match self.regsel {
                    0x00 => self.id = (value >> 24) as u8,
                    r @ 0x10..=0x3f => {
                        let pin = usize::from((r - 0x10) / 2);
                        let old = self.redir[pin];
                        let new = if r & 1 == 0 {
                            (old & !0xffff_ffff) | u64::from(value)
                        } else {
                            (old & 0xffff_ffff) | (u64::from(value) << 32)
                        };
                        let mut rte = (old & !RTE_WRITABLE) | (new & RTE_WRITABLE);
                        if rte & RTE_LEVEL == 0 {
                            rte &= !RTE_REMOTE_IRR;
                        }
                        self.redir[pin] = rte;
                        self.service_level(pin, out);
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn program(io: &mut IoApic, pin: u8, lo: u32, hi: u32) {
        let mut out = Vec::new();
        io.mmio_write(0, u64::from(0x10 + 2 * pin), &mut out);
        io.mmio_write(0x10, u64::from(lo), &mut out);
        io.mmio_write(0, u64::from(0x11 + 2 * pin), &mut out);
        io.mmio_write(0x10, u64::from(hi), &mut out);
    }

    #[test]
    fn id_version() {
        let mut io = IoApic::new(4);
        let mut out = Vec::new();
        io.mmio_write(0, 1, &mut out);
        assert_eq!(io.mmio_read(0x10, 4), 0x170011);
        io.mmio_write(0, 0, &mut out);
        assert_eq!(io.mmio_read(0x10, 4), 4 << 24);
        io.mmio_write(0, 0x10, &mut out);
        assert_eq!(io.mmio_read(0x10, 4), 0x10000);
        io.mmio_write(0, 0x99, &mut out);
        assert_eq!(io.mmio_read(0x10, 4), 0xffff_ffff);
    }

    #[test]
    fn edge_delivery() {
        let mut io = IoApic::new(0);
        program(&mut io, 2, 0x30, 1 << 24);
        let mut out = Vec::new();
        io.set_irq(2, true, &mut out);
        io.set_irq(2, true, &mut out);
        io.set_irq(2, false, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].vector, 0x30);
        assert_eq!(out[0].dest.dest, 1);
        assert!(!out[0].level_triggered);
    }

    #[test]
    fn level_remote_irr_and_eoi() {
        let mut io = IoApic::new(0);
        program(&mut io, 9, 0x1_8041, 0); // masked, level
        let mut out = Vec::new();
        io.set_irq(9, true, &mut out);
        assert!(out.is_empty());
        program(&mut io, 9, 0x8041, 0); // unmask -> delivers
        assert_eq!(io.redir[9] & RTE_REMOTE_IRR, RTE_REMOTE_IRR);
        io.set_irq(9, true, &mut out);
        assert!(out.is_empty(), "remote IRR blocks");
        io.eoi(0x41, &mut out);
        assert_eq!(out.len(), 1, "still asserted: resent");
        io.set_irq(9, false, &mut out);
        io.eoi(0x41, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(io.redir[9] & RTE_REMOTE_IRR, 0);
    }
}
