//! Intel 8254 programmable interval timer (ports 0x40-0x43) and the PC/AT
//! "port B" (0x61: channel 2 gate, speaker, channel 2 output, refresh toggle).
//!
//! Follows the Intel 8254 datasheet: "Control Word Format", "Counter Latch
//! Command", "Read-Back Command", "Read/Write Operations" (LSB, MSB,
//! LSB-then-MSB) and "Mode Definitions" (modes 0-5). The input clock is
//! 1.193182 MHz; counts are derived from the virtual time elapsed since the
//! count was loaded, so the model never needs a periodic tick.
//!
//! Approximations: BCD counting is accepted but counts run in binary; a low
//! gate does not pause modes 0/4 (only channel 2 has a software-controlled
//! gate, and PC software only toggles it to restart counting).

/// PIT input clock in Hz.
pub const PIT_HZ: u64 = 1_193_182;

const RW_LSB: u8 = 1;
const RW_MSB: u8 = 2;
const RW_WORD: u8 = 3;
/// Internal state: second byte of an LSB-then-MSB sequence.
const RW_WORD_HI: u8 = 4;

fn ticks_between(from_ns: u64, to_ns: u64) -> u64 {
    (to_ns.saturating_sub(from_ns) as u128 * PIT_HZ as u128 / 1_000_000_000) as u64
}

fn ns_after_ticks(from_ns: u64, ticks: u64) -> u64 {
    let ns = (ticks as u128 * 1_000_000_000).div_ceil(PIT_HZ as u128);
    from_ns.saturating_add(u64::try_from(ns).unwrap_or(u64::MAX))
}

/// One counter of the 8254.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PitChannel {
    /// Reload value (1..=0x10000; a programmed 0 means 0x10000).
    pub count: u32,
    /// Virtual time at which `count` was loaded (or the gate retriggered).
    pub load_ns: u64,
    /// Whether a count has been written since the last control word.
    pub armed: bool,
    /// Operating mode 0-5.
    pub mode: u8,
    /// BCD flag from the control word (stored, not used for counting).
    pub bcd: bool,
    /// Read/write access mode (1 LSB, 2 MSB, 3 LSB then MSB).
    pub rw_mode: u8,
    /// Current read sequence state.
    pub read_state: u8,
    /// Current write sequence state.
    pub write_state: u8,
    /// LSB written in an LSB-then-MSB sequence.
    pub write_latch: u8,
    /// Latched count (counter latch command), if any.
    pub latched_count: Option<u16>,
    /// Latch read sequence state.
    pub latch_read_state: u8,
    /// Latched status byte (read-back command), if any.
    pub latched_status: Option<u8>,
    /// Gate input.
    pub gate: bool,
    /// Tick (relative to `load_ns`) of the next rising output edge that
    /// raises the IRQ (channel 0 only).
    pub next_irq_tick: Option<u64>,
}

impl PitChannel {
    fn new(gate: bool) -> Self {
        Self {
            count: 0x10000,
            load_ns: 0,
            armed: false,
            mode: 0,
            bcd: false,
            rw_mode: RW_WORD,
            read_state: RW_WORD,
            write_state: RW_WORD,
            write_latch: 0,
            latched_count: None,
            latch_read_state: RW_WORD,
            latched_status: None,
            gate,
            next_irq_tick: None,
        }
    }

    fn ticks(&self, now_ns: u64) -> u64 {
        ticks_between(self.load_ns, now_ns)
    }

    /// Current counter value.
    pub fn current_count(&self, now_ns: u64) -> u16 {
        if !self.armed {
            return self.count as u16;
        }
        let d = self.ticks(now_ns);
        let c = u64::from(self.count);
        let v = match self.mode {
            2 => c - d % c,
            3 => c - (2 * d) % c,
            _ => c.wrapping_sub(d),
        };
        v as u16
    }

    /// Output pin level.
    pub fn output(&self, now_ns: u64) -> bool {
        if !self.armed {
            // Mode 0 drives the output low after the control word; the other
            // modes drive it high.
            return self.mode != 0;
        }
        let d = self.ticks(now_ns);
        let c = u64::from(self.count);
        match self.mode {
            0 => d >= c,
            1 => d >= c || !self.gate,
            2 => d % c != c - 1 || c == 1,
            3 => d % c < c.div_ceil(2),
            _ => d != c,
        }
    }

    fn status(&self, now_ns: u64) -> u8 {
        (u8::from(self.output(now_ns)) << 7)
            | (u8::from(!self.armed) << 6)
            | (self.rw_mode << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn load(&mut self, now_ns: u64, value: u16) {
        self.count = if value == 0 { 0x10000 } else { u32::from(value) };
        self.load_ns = now_ns;
        self.armed = true;
        self.next_irq_tick = match self.mode {
            0 | 2 | 3 | 4 => Some(u64::from(self.count)),
            _ => None,
        };
    }

    fn set_gate(&mut self, now_ns: u64, gate: bool) {
        if gate && !self.gate && matches!(self.mode, 1 | 2 | 3 | 5) && self.armed {
            self.load_ns = now_ns;
        }
        self.gate = gate;
    }

    fn read(&mut self, now_ns: u64) -> u8 {
        if let Some(status) = self.latched_status.take() {
            return status;
        }
        if let Some(latched) = self.latched_count {
            let (v, done) = match self.latch_read_state {
                RW_LSB => (latched as u8, true),
                RW_MSB => ((latched >> 8) as u8, true),
                RW_WORD => {
                    self.latch_read_state = RW_WORD_HI;
                    (latched as u8, false)
                }
                _ => ((latched >> 8) as u8, true),
            };
            if done {
                self.latched_count = None;
                self.latch_read_state = self.rw_mode;
            }
            return v;
        }
        let count = self.current_count(now_ns);
        match self.read_state {
            RW_LSB => count as u8,
            RW_MSB => (count >> 8) as u8,
            RW_WORD => {
                self.read_state = RW_WORD_HI;
                count as u8
            }
            _ => {
                self.read_state = RW_WORD;
                (count >> 8) as u8
            }
        }
    }

    fn write(&mut self, now_ns: u64, value: u8) {
        match self.write_state {
            RW_LSB => self.load(now_ns, u16::from(value)),
            RW_MSB => self.load(now_ns, u16::from(value) << 8),
            RW_WORD => {
                self.write_latch = value;
                self.write_state = RW_WORD_HI;
            }
            _ => {
                self.write_state = RW_WORD;
                self.load(now_ns, u16::from(self.write_latch) | (u16::from(value) << 8));
            }
        }
    }

    fn latch_count(&mut self, now_ns: u64) {
        if self.latched_count.is_none() {
            self.latched_count = Some(self.current_count(now_ns));
            self.latch_read_state = self.rw_mode;
        }
    }

    /// Virtual time of the next IRQ edge, if one is scheduled.
    fn next_irq_ns(&self) -> Option<u64> {
        self.next_irq_tick.map(|t| ns_after_ticks(self.load_ns, t)).filter(|_| self.armed)
    }
}

/// The 8254 with its three channels and port 0x61.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pit {
    /// Channels 0 (IRQ 0), 1 (refresh) and 2 (speaker, gate from port 0x61).
    pub channels: [PitChannel; 3],
    /// Port 0x61 bit 1: speaker data enable.
    pub speaker_data: bool,
    /// Port 0x61 bit 4: refresh request toggle, flipped on every read.
    pub refresh_toggle: bool,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    /// Power-on state: all channels unprogrammed, gates 0 and 1 high.
    pub fn new() -> Self {
        Self {
            channels: [PitChannel::new(true), PitChannel::new(true), PitChannel::new(false)],
            speaker_data: false,
            refresh_toggle: false,
        }
    }

    /// Read of port 0x40-0x43 (0x43 reads as 0xff: the control port is
    /// write-only) or 0x61.
    pub fn io_read(&mut self, now_ns: u64, port: u16) -> u8 {
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].read(now_ns),
            0x61 => {
                self.refresh_toggle = !self.refresh_toggle;
                let ch2 = &self.channels[2];
                u8::from(ch2.gate)
                    | (u8::from(self.speaker_data) << 1)
                    | (u8::from(self.refresh_toggle) << 4)
                    | (u8::from(ch2.output(now_ns)) << 5)
            }
            _ => 0xff,
        }
    }

    /// Write of port 0x40-0x43 or 0x61.
    pub fn io_write(&mut self, now_ns: u64, port: u16, value: u8) {
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].write(now_ns, value),
            0x43 => self.control(now_ns, value),
            0x61 => {
                self.speaker_data = value & 2 != 0;
                self.channels[2].set_gate(now_ns, value & 1 != 0);
            }
            _ => {}
        }
    }

    fn control(&mut self, now_ns: u64, value: u8) {
        let sel = value >> 6;
        if sel == 3 {
            // Read-back: bit 5 clear = latch count, bit 4 clear = latch status.
            for (i, ch) in self.channels.iter_mut().enumerate() {
                if value & (2 << i) == 0 {
                    continue;
                }
                if value & 0x20 == 0 {
                    ch.latch_count(now_ns);
                }
                if value & 0x10 == 0 && ch.latched_status.is_none() {
                    ch.latched_status = Some(ch.status(now_ns));
                }
            }
            return;
        }
        let ch = &mut self.channels[usize::from(sel)];
        let access = (value >> 4) & 3;
        if access == 0 {
            ch.latch_count(now_ns);
            return;
        }
        let mode = (value >> 1) & 7;
        ch.mode = if mode >= 6 { mode - 4 } else { mode };
        ch.bcd = value & 1 != 0;
        ch.rw_mode = access;
        ch.read_state = access;
        ch.write_state = access;
        ch.latched_count = None;
        ch.armed = false;
        ch.next_irq_tick = None;
    }

    /// Runs channel 0 up to `now_ns`; returns true when IRQ 0 must be pulsed
    /// (missed periods coalesce into one edge, as the PIC would see them).
    pub fn advance(&mut self, now_ns: u64) -> bool {
        let ch = &mut self.channels[0];
        let Some(due) = ch.next_irq_ns() else {
            return false;
        };
        if now_ns < due {
            return false;
        }
        ch.next_irq_tick = match ch.mode {
            2 | 3 => {
                let c = u64::from(ch.count);
                Some((ch.ticks(now_ns) / c + 1) * c)
            }
            _ => None,
        };
        true
    }

    /// Virtual time of the next IRQ 0 edge.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.channels[0].next_irq_ns()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn mode2_periodic_irq() {
        let mut pit = Pit::new();
        pit.io_write(0, 0x43, 0x34); // ch0, lobyte/hibyte, mode 2
        pit.io_write(0, 0x40, 0xa9); // 1193 ticks ~ 1 ms
        pit.io_write(0, 0x40, 0x04);
        let due = pit.next_deadline_ns().unwrap();
        assert!((999_000..1_001_000).contains(&due), "{due}");
        assert!(!pit.advance(due - 1));
        assert!(pit.advance(due));
        assert!(!pit.advance(due));
        let next = pit.next_deadline_ns().unwrap();
        assert!(next > due && next - due < 1_001_000);
        // A long skip coalesces into one edge.
        assert!(pit.advance(50 * MS));
        assert!(pit.next_deadline_ns().unwrap() > 50 * MS);
    }

    #[test]
    fn mode0_one_shot_and_counting() {
        let mut pit = Pit::new();
        pit.io_write(0, 0x43, 0x30);
        pit.io_write(0, 0x40, 0xff);
        pit.io_write(0, 0x40, 0xff);
        // After 1 ms, about 1193 ticks have elapsed.
        pit.io_write(MS, 0x43, 0x00); // latch
        let lo = pit.io_read(2 * MS, 0x40);
        let hi = pit.io_read(2 * MS, 0x40);
        let v = u16::from_le_bytes([lo, hi]);
        assert_eq!(v, 0xffff - 1193);
        assert!(!pit.advance(MS));
        assert!(pit.advance(60 * MS));
        assert_eq!(pit.next_deadline_ns(), None);
    }

    #[test]
    fn channel2_gate_and_port61() {
        let mut pit = Pit::new();
        // Linux PIT calibration: gate on, ch2 mode 0, count 0xffff.
        pit.io_write(0, 0x61, 0x01);
        pit.io_write(0, 0x43, 0xb0);
        pit.io_write(0, 0x42, 0xff);
        pit.io_write(0, 0x42, 0xff);
        assert_eq!(pit.io_read(0, 0x61) & 0x21, 0x01);
        assert_eq!(pit.io_read(60 * MS, 0x61) & 0x20, 0x20);
        let a = pit.io_read(0, 0x61) & 0x10;
        let b = pit.io_read(0, 0x61) & 0x10;
        assert_ne!(a, b, "refresh bit toggles");
        // MSB-only reads as in quick_pit_calibrate.
        pit.io_write(0, 0x43, 0xa0);
        pit.io_write(0, 0x42, 0xff);
        assert_eq!(pit.io_read(MS, 0x42), 0xfa);
    }

    #[test]
    fn read_back_status_and_mode3_output() {
        let mut pit = Pit::new();
        pit.io_write(0, 0x43, 0x36); // ch0 mode 3
        pit.io_write(0, 0x40, 100);
        pit.io_write(0, 0x40, 0);
        pit.io_write(0, 0x43, 0xe2); // read-back status ch0
        assert_eq!(pit.io_read(0, 0x40), 0x80 | 0x30 | 0x06);
        let half = ns_after_ticks(0, 50);
        assert!(!pit.channels[0].output(half));
        assert!(pit.channels[0].output(ns_after_ticks(0, 100)));
        assert_eq!(pit.io_read(0, 0x43), 0xff);
    }
}
