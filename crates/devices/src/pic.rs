//! Dual Intel 8259A programmable interrupt controller (master at 0x20/0x21,
//! slave at 0xa0/0xa1, cascaded on master IRQ 2) with the PIIX3 edge/level
//! control registers (ELCR) at 0x4d0/0x4d1.
//!
//! Follows the Intel 8259A datasheet: "Initialization Command Words"
//! (ICW1-ICW4), "Operation Command Words" (OCW1-OCW3), "End of Interrupt",
//! "Automatic Rotation"/"Specific Rotation", "Poll Command" and "Interrupt
//! Sequence" (INTA cycles; an interrupt that vanishes before the INTA cycle
//! yields the spurious IR7 vector). Edge/level sense per line comes from the
//! ELCR as described in the Intel 82371SB (PIIX3) datasheet, section
//! "ELCR1/ELCR2 - Edge/Level Control Registers".
//!
//! Invariant: the slave's INT output is mirrored onto master IR2 after every
//! operation that can change it.

/// One 8259A chip.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pic8259 {
    /// Line levels last seen, for rising-edge detection.
    pub last_level: u8,
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// Priority rotation: IR `priority_add` has the highest priority.
    pub priority_add: u8,
    /// Vector base from ICW2 (low 3 bits zero).
    pub irq_base: u8,
    /// OCW3 RR/RIS: true reads ISR, false reads IRR.
    pub read_isr: bool,
    /// OCW3 poll command pending for the next read.
    pub poll: bool,
    /// OCW3 special mask mode.
    pub special_mask: bool,
    /// Next expected initialization word (0 = none, 1 = ICW2, 2 = ICW3, 3 = ICW4).
    pub init_state: u8,
    /// ICW1 IC4: an ICW4 follows.
    pub init4: bool,
    /// ICW1 SNGL: single mode, no ICW3.
    pub single_mode: bool,
    /// ICW4 AEOI.
    pub auto_eoi: bool,
    /// OCW2 rotate in automatic EOI mode.
    pub rotate_on_auto_eoi: bool,
    /// ICW4 SFNM.
    pub special_fully_nested: bool,
    /// ELCR: bit set = level-triggered line.
    pub elcr: u8,
    /// Writable ELCR bits.
    pub elcr_mask: u8,
    /// True for the master chip.
    pub is_master: bool,
}

impl Pic8259 {
    fn new(is_master: bool) -> Self {
        Self { is_master, elcr_mask: if is_master { 0xf8 } else { 0xde }, ..Self::default() }
    }

    /// Drives input line `irq` (0-7) to `level`.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        let mask = 1u8 << (irq & 7);
        if self.elcr & mask != 0 {
            if level {
                self.irr |= mask;
                self.last_level |= mask;
            } else {
                self.irr &= !mask;
                self.last_level &= !mask;
            }
        } else if level {
            if self.last_level & mask == 0 {
                self.irr |= mask;
            }
            self.last_level |= mask;
        } else {
            self.last_level &= !mask;
        }
    }

    /// Priority (0 = highest) of the highest-priority bit set in `bits`.
    fn priority(&self, bits: u8) -> Option<u8> {
        (0..8).find(|p| bits & (1 << ((p + self.priority_add) & 7)) != 0)
    }

    /// The IR line that would be delivered now, if any.
    pub fn pending_irq(&self) -> Option<u8> {
        let p = self.priority(self.irr & !self.imr)?;
        let mut isr = self.isr;
        if self.special_mask {
            isr &= !self.imr;
        }
        if self.special_fully_nested && self.is_master {
            isr &= !(1 << 2);
        }
        let current = self.priority(isr).unwrap_or(8);
        (p < current).then_some((p + self.priority_add) & 7)
    }

    /// Acknowledges `irq` (INTA): moves it from IRR to ISR (unless AEOI).
    fn intack(&mut self, irq: u8) {
        let mask = 1u8 << irq;
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= mask;
        }
        if self.elcr & mask == 0 {
            self.irr &= !mask;
        }
    }

    fn init_reset(&mut self) {
        *self = Self { elcr: self.elcr, elcr_mask: self.elcr_mask, is_master: self.is_master, ..Self::default() };
    }

    /// Write to the command port (offset 0) or data port (offset 1).
    pub fn write(&mut self, offset: u8, value: u8) {
        if offset & 1 == 0 {
            if value & 0x10 != 0 {
                // ICW1
                self.init_reset();
                self.init4 = value & 1 != 0;
                self.single_mode = value & 2 != 0;
                self.init_state = 1;
            } else if value & 0x08 != 0 {
                // OCW3
                if value & 0x04 != 0 {
                    self.poll = true;
                }
                if value & 0x02 != 0 {
                    self.read_isr = value & 1 != 0;
                }
                if value & 0x40 != 0 {
                    self.special_mask = value & 0x20 != 0;
                }
            } else {
                self.ocw2(value);
            }
        } else {
            match self.init_state {
                1 => {
                    self.irq_base = value & 0xf8;
                    self.init_state = match (self.single_mode, self.init4) {
                        (false, _) => 2,
                        (true, true) => 3,
                        (true, false) => 0,
                    };
                }
                2 => self.init_state = if self.init4 { 3 } else { 0 },
                3 => {
                    self.special_fully_nested = value & 0x10 != 0;
                    self.auto_eoi = value & 0x02 != 0;
                    self.init_state = 0;
                }
                _ => self.imr = value,
            }
        }
    }

    fn ocw2(&mut self, value: u8) {
        let level = value & 7;
        match value >> 5 {
            0 => self.rotate_on_auto_eoi = false,
            4 => self.rotate_on_auto_eoi = true,
            cmd @ (1 | 5) => {
                if let Some(p) = self.priority(self.isr) {
                    let irq = (p + self.priority_add) & 7;
                    self.isr &= !(1 << irq);
                    if cmd == 5 {
                        self.priority_add = (irq + 1) & 7;
                    }
                }
            }
            3 => self.isr &= !(1 << level),
            7 => {
                self.isr &= !(1 << level);
                self.priority_add = (level + 1) & 7;
            }
            6 => self.priority_add = (level + 1) & 7,
            _ => {}
        }
    }

    /// Read of the command port (offset 0) or data port (offset 1).
    pub fn read(&mut self, offset: u8) -> u8 {
        if self.poll {
            self.poll = false;
            return match self.pending_irq() {
                Some(irq) => {
                    self.intack(irq);
                    0x80 | irq
                }
                None => 0,
            };
        }
        if offset & 1 == 0 {
            if self.read_isr {
                self.isr
            } else {
                self.irr
            }
        } else {
            self.imr
        }
    }
}

/// Master and slave 8259A cascaded on master IR2, plus the ELCR.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DualPic {
    /// `chips[0]` is the master, `chips[1]` the slave.
    pub chips: [Pic8259; 2],
}

impl Default for DualPic {
    fn default() -> Self {
        Self::new()
    }
}

impl DualPic {
    /// A pair in the power-on state.
    pub fn new() -> Self {
        Self { chips: [Pic8259::new(true), Pic8259::new(false)] }
    }

    /// Drives ISA IRQ line `irq` (0-15; others ignored) to `level`.
    pub fn set_irq(&mut self, irq: u8, level: bool) {
        match irq {
            0..=7 => self.chips[0].set_irq(irq, level),
            8..=15 => {
                self.chips[1].set_irq(irq - 8, level);
                self.sync_cascade();
            }
            _ => {}
        }
    }

    fn sync_cascade(&mut self) {
        // The slave's INT is a level: a request that vanishes before the INTA
        // cycle must not stay latched in the master.
        let slave_int = self.chips[1].pending_irq().is_some();
        self.chips[0].set_irq(2, slave_int);
        if !slave_int {
            self.chips[0].irr &= !(1 << 2);
        }
    }

    /// Whether the master's INT output is asserted.
    pub fn has_intr(&self) -> bool {
        self.chips[0].pending_irq().is_some()
    }

    /// INTA cycle: returns the vector and moves the line to in-service. With
    /// nothing pending the chip answers with its spurious IR7 vector (IR15
    /// for a vanished slave request) without setting ISR.
    pub fn acknowledge(&mut self) -> u8 {
        let vector = match self.chips[0].pending_irq() {
            Some(2) => {
                self.chips[0].intack(2);
                match self.chips[1].pending_irq() {
                    Some(irq) => {
                        self.chips[1].intack(irq);
                        self.chips[1].irq_base.wrapping_add(irq)
                    }
                    None => self.chips[1].irq_base.wrapping_add(7),
                }
            }
            Some(irq) => {
                self.chips[0].intack(irq);
                self.chips[0].irq_base.wrapping_add(irq)
            }
            None => self.chips[0].irq_base.wrapping_add(7),
        };
        self.sync_cascade();
        vector
    }

    /// Port read: 0x20/0x21 master, 0xa0/0xa1 slave, 0x4d0/0x4d1 ELCR.
    pub fn io_read(&mut self, port: u16) -> u8 {
        let v = match port {
            0x20 | 0x21 => self.chips[0].read(port as u8 & 1),
            0xa0 | 0xa1 => self.chips[1].read(port as u8 & 1),
            0x4d0 => self.chips[0].elcr,
            0x4d1 => self.chips[1].elcr,
            _ => 0xff,
        };
        self.sync_cascade();
        v
    }

    /// Port write, same ports as [`DualPic::io_read`].
    pub fn io_write(&mut self, port: u16, value: u8) {
        match port {
            0x20 | 0x21 => self.chips[0].write(port as u8 & 1, value),
            0xa0 | 0xa1 => self.chips[1].write(port as u8 & 1, value),
            0x4d0 => self.chips[0].elcr = value & self.chips[0].elcr_mask,
            0x4d1 => self.chips[1].elcr = value & self.chips[1].elcr_mask,
            _ => {}
        }
        self.sync_cascade();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux-style initialization: master base 0x30, slave base 0x38.
    fn init(pic: &mut DualPic) {
        for (port, base, icw3) in [(0x20u16, 0x30u8, 4u8), (0xa0, 0x38, 2)] {
            pic.io_write(port, 0x11);
            pic.io_write(port + 1, base);
            pic.io_write(port + 1, icw3);
            pic.io_write(port + 1, 0x01);
            pic.io_write(port + 1, 0x00);
        }
    }

    #[test]
    fn edge_irq_ack_and_eoi() {
        let mut pic = DualPic::new();
        init(&mut pic);
        pic.set_irq(1, true);
        assert!(pic.has_intr());
        assert_eq!(pic.acknowledge(), 0x31);
        assert!(!pic.has_intr());
        assert_eq!(pic.chips[0].isr, 0x02);
        // Line still high: no new edge, no new request.
        pic.set_irq(1, true);
        pic.io_write(0x20, 0x20); // non-specific EOI
        assert_eq!(pic.chips[0].isr, 0);
        assert!(!pic.has_intr());
        pic.set_irq(1, false);
        pic.set_irq(1, true);
        assert!(pic.has_intr());
    }

    #[test]
    fn cascade_through_irq2() {
        let mut pic = DualPic::new();
        init(&mut pic);
        pic.set_irq(8, true);
        assert!(pic.has_intr());
        assert_eq!(pic.acknowledge(), 0x38);
        assert_eq!(pic.chips[0].isr, 0x04);
        assert_eq!(pic.chips[1].isr, 0x01);
        pic.io_write(0xa0, 0x20);
        pic.io_write(0x20, 0x20);
        assert_eq!(pic.chips[0].isr | pic.chips[1].isr, 0);
    }

    #[test]
    fn mask_priority_and_spurious() {
        let mut pic = DualPic::new();
        init(&mut pic);
        pic.io_write(0x21, 0x01);
        pic.set_irq(0, true);
        assert!(!pic.has_intr());
        assert_eq!(pic.acknowledge(), 0x37, "spurious IRQ7");
        assert_eq!(pic.chips[0].isr, 0);
        pic.set_irq(3, true);
        pic.set_irq(5, true);
        assert_eq!(pic.acknowledge(), 0x33);
        // IR5 has lower priority than in-service IR3.
        assert!(!pic.has_intr());
        pic.io_write(0x20, 0x63); // specific EOI IR3
        assert_eq!(pic.acknowledge(), 0x35);
        // OCW3 read ISR
        pic.io_write(0x20, 0x0b);
        assert_eq!(pic.io_read(0x20), 0x20);
        pic.io_write(0x20, 0x0a);
        assert_eq!(pic.io_read(0x20), 0x01, "masked IR0 still requested");
        assert_eq!(pic.io_read(0x21), 0x01);
    }

    #[test]
    fn level_triggered_via_elcr() {
        let mut pic = DualPic::new();
        init(&mut pic);
        pic.io_write(0x4d1, 0xff);
        assert_eq!(pic.io_read(0x4d1), 0xde);
        pic.set_irq(9, true);
        assert_eq!(pic.acknowledge(), 0x39);
        pic.io_write(0xa0, 0x20);
        pic.io_write(0x20, 0x20);
        assert!(pic.has_intr(), "level still asserted");
        pic.set_irq(9, false);
        assert!(!pic.has_intr());
    }

    #[test]
    fn auto_eoi_and_poll() {
        let mut pic = DualPic::new();
        pic.io_write(0x20, 0x13); // single, IC4
        pic.io_write(0x21, 0x08);
        pic.io_write(0x21, 0x03); // AEOI
        pic.set_irq(4, true);
        assert_eq!(pic.acknowledge(), 0x0c);
        assert_eq!(pic.chips[0].isr, 0);
        pic.set_irq(6, true);
        pic.io_write(0x20, 0x0c); // poll
        assert_eq!(pic.io_read(0x20), 0x86);
        assert!(!pic.has_intr());
    }
}
