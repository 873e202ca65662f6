//! Motorola MC146818 real-time clock and CMOS RAM at ports 0x70 (index,
//! bit 7 = NMI disable) and 0x71 (data), raising ISA IRQ 8.
//!
//! Follows the MC146818A datasheet: "Address Map" (registers 0x00-0x0d and
//! 114 bytes of user RAM), "Register A" (UIP, divider DV2-0, rate RS3-0),
//! "Register B" (SET, PIE, AIE, UIE, DM binary/BCD, 24/12), "Register C"
//! (IRQF, PF, AF, UF; cleared on read) and "Register D" (VRT), and "Update
//! Cycle" (UIP rises 244 us before the once-per-second update).
//!
//! The clock is `RTC_EPOCH` (2026-01-01 00:00:00 UTC) plus virtual time plus
//! a guest-set offset, so it is fully deterministic. The CMOS memory-size
//! bytes are filled as SeaBIOS/QEMU expect: 0x15/0x16 base memory, 0x17/0x18
//! and 0x30/0x31 extended memory (KiB), 0x34/0x35 memory above 16 MiB
//! (64 KiB units), 0x5b-0x5d memory above 4 GiB (64 KiB units), 0x5f CPU
//! count minus one.

/// Unix time of the virtual clock at power-on (2026-01-01 00:00:00 UTC).
pub const RTC_EPOCH: i64 = 1_767_225_600;
/// CMOS index of the century byte (advertised in the ACPI FADT).
pub const CMOS_CENTURY: u8 = 0x32;

const NS_PER_SEC: u64 = 1_000_000_000;
const UIP_WINDOW_NS: u64 = 244_000;

const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;

const B_SET: u8 = 0x80;
const B_PIE: u8 = 0x40;
const B_AIE: u8 = 0x20;
const B_UIE: u8 = 0x10;
const B_DM_BINARY: u8 = 0x04;
const B_24H: u8 = 0x02;

const C_IRQF: u8 = 0x80;
const C_PF: u8 = 0x40;
const C_AF: u8 = 0x20;
const C_UF: u8 = 0x10;

/// Calendar date and time of day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    /// Full year, e.g. 2026.
    pub year: i64,
    /// Month 1-12.
    pub month: u8,
    /// Day of month 1-31.
    pub day: u8,
    /// Hour 0-23.
    pub hour: u8,
    /// Minute 0-59.
    pub minute: u8,
    /// Second 0-59.
    pub second: u8,
    /// Day of week 1-7, Sunday = 1.
    pub weekday: u8,
}

impl DateTime {
    /// Converts Unix seconds to a UTC calendar date (proleptic Gregorian).
    pub fn from_unix(secs: i64) -> Self {
        let days = secs.div_euclid(86_400);
        let sod = secs.rem_euclid(86_400);
        // Days-from-civil inverse (Howard Hinnant's algorithm).
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = doy - (153 * mp + 2) / 5 + 1;
        let month = if mp < 10 { mp + 3 } else { mp - 9 };
        let year = yoe + era * 400 + i64::from(month <= 2);
        Self {
            year,
            month: month as u8,
            day: day as u8,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
            // 1970-01-01 was a Thursday (5 with Sunday = 1).
            weekday: ((days + 4).rem_euclid(7) + 1) as u8,
        }
    }

    /// Converts to Unix seconds; out-of-range fields are taken as they come
    /// (garbage in, deterministic garbage out, never a panic).
    pub fn to_unix(&self) -> i64 {
        let month = i64::from(self.month.clamp(1, 12));
        let y = self.year - i64::from(month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let mp = (month + 9) % 12;
        let doy = (153 * mp + 2) / 5 + i64::from(self.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        days * 86_400 + i64::from(self.hour) * 3600 + i64::from(self.minute) * 60 + i64::from(self.second)
    }
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> u8 {
    (v >> 4).wrapping_mul(10).wrapping_add(v & 0x0f)
}

/// The RTC and its 128 bytes of CMOS.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rtc {
    /// CMOS bytes (time registers 0x00-0x09 hold the value last written while
    /// SET was set; reads compute them from the clock).
    pub cmos: [u8; 128],
    /// Selected index (port 0x70 bits 6-0).
    pub index: u8,
    /// Port 0x70 bit 7.
    pub nmi_disabled: bool,
    /// Seconds added to `RTC_EPOCH + now` by guest clock writes.
    pub offset_secs: i64,
    /// Last whole second for which the update cycle ran.
    pub last_update_sec: u64,
    /// Last periodic-interrupt period index processed.
    pub last_period: u64,
    /// IRQ 8 output level.
    pub irq_level: bool,
    /// Virtual time while the clock was frozen by the SET bit.
    pub frozen_at_ns: Option<u64>,
}

impl Rtc {
    /// Power-on state with the memory-size bytes set for `ram_below_4g` /
    /// `ram_above_4g` bytes of RAM and `num_cpus` processors.
    pub fn new(ram_below_4g: u64, ram_above_4g: u64, num_cpus: u32) -> Self {
        let mut cmos = [0u8; 128];
        cmos[REG_A] = 0x26;
        cmos[REG_B] = B_24H;
        cmos[REG_D] = 0x80;
        cmos[0x10] = 0; // no floppy
        cmos[0x14] = 0x06; // FPU, VGA/EGA-less video
        let [lo, hi] = 640u16.to_le_bytes();
        cmos[0x15] = lo;
        cmos[0x16] = hi;
        let ext_kib = (ram_below_4g.min(64 << 20).saturating_sub(1 << 20) >> 10).min(0xffff);
        let [lo, hi] = (ext_kib as u16).to_le_bytes();
        cmos[0x17] = lo;
        cmos[0x18] = hi;
        cmos[0x30] = lo;
        cmos[0x31] = hi;
        let above_16m = (ram_below_4g.saturating_sub(16 << 20) >> 16).min(0xffff);
        let [lo, hi] = (above_16m as u16).to_le_bytes();
        cmos[0x34] = lo;
        cmos[0x35] = hi;
        let above_4g = (ram_above_4g >> 16).min(0xff_ffff);
        cmos[0x5b] = above_4g as u8;
        cmos[0x5c] = (above_4g >> 8) as u8;
        cmos[0x5d] = (above_4g >> 16) as u8;
        cmos[0x5f] = num_cpus.saturating_sub(1).min(255) as u8;
        Self {
            cmos,
            index: 0,
            nmi_disabled: false,
            offset_secs: 0,
            last_update_sec: 0,
            last_period: 0,
            irq_level: false,
            frozen_at_ns: None,
        }
    }

    /// Unix time of the clock at `now_ns`.
    pub fn unix_time(&self, now_ns: u64) -> i64 {
        let now = self.frozen_at_ns.unwrap_or(now_ns);
        RTC_EPOCH + (now / NS_PER_SEC) as i64 + self.offset_secs
    }

    fn encode(&self, v: u8) -> u8 {
        if self.cmos[REG_B] & B_DM_BINARY != 0 {
            v
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u8 {
        if self.cmos[REG_B] & B_DM_BINARY != 0 {
            v
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            return self.encode(hour);
        }
        let pm = hour >= 12;
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if pm { 0x80 } else { 0 }
    }

    fn decode_hour(&self, raw: u8) -> u8 {
        if self.cmos[REG_B] & B_24H != 0 {
            return self.decode(raw);
        }
        let h = self.decode(raw & 0x7f) % 12;
        if raw & 0x80 != 0 {
            h + 12
        } else {
            h
        }
    }

    fn time_register(&self, now_ns: u64, index: usize) -> u8 {
        let t = DateTime::from_unix(self.unix_time(now_ns));
        match index {
            0x00 => self.encode(t.second),
            0x02 => self.encode(t.minute),
            0x04 => self.encode_hour(t.hour),
            0x06 => self.encode(t.weekday),
            0x07 => self.encode(t.day),
            0x08 => self.encode(t.month),
            0x09 => self.encode(t.year.rem_euclid(100) as u8),
            CMOS_CENTURY_IDX => self.encode((t.year.rem_euclid(10_000) / 100) as u8),
            _ => self.cmos[index],
        }
    }

    /// Period of the periodic interrupt for register A's rate, in ns.
    fn period_ns(&self) -> Option<u64> {
        let rate = self.cmos[REG_A] & 0x0f;
        let shift = match rate {
            0 => return None,
            1 | 2 => rate + 7,
            r => r - 1,
        };
        Some(((1u64 << shift) * NS_PER_SEC).div_ceil(32_768))
    }

    fn update_irq(&mut self) {
        let c = self.cmos[REG_C] & 0x70;
        let b = self.cmos[REG_B];
        if c & b & (B_PIE | B_AIE | B_UIE) != 0 {
            self.cmos[REG_C] |= C_IRQF;
        }
        self.irq_level = self.cmos[REG_C] & C_IRQF != 0;
    }

    /// Runs the update cycle and periodic divider up to `now_ns`. The IRQ 8
    /// level afterwards is in `irq_level`.
    pub fn advance(&mut self, now_ns: u64) {
        let sec = now_ns / NS_PER_SEC;
        if sec > self.last_update_sec {
            self.last_update_sec = sec;
            if self.cmos[REG_B] & B_SET == 0 {
                self.cmos[REG_C] |= C_UF;
                if self.alarm_matches(now_ns) {
                    self.cmos[REG_C] |= C_AF;
                }
            }
        }
        if let Some(period) = self.period_ns() {
            let idx = now_ns / period;
            if idx > self.last_period {
                self.last_period = idx;
                self.cmos[REG_C] |= C_PF;
            }
        }
        self.update_irq();
    }

    fn alarm_matches(&self, now_ns: u64) -> bool {
        let pairs = [(0x01, 0x00), (0x03, 0x02), (0x05, 0x04)];
        pairs.iter().all(|&(alarm, time)| {
            let a = self.cmos[alarm];
            a & 0xc0 == 0xc0 || a == self.time_register(now_ns, time)
        })
    }

    /// Next virtual time at which an enabled interrupt source fires.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        let b = self.cmos[REG_B];
        let mut next = None;
        if b & (B_UIE | B_AIE) != 0 && b & B_SET == 0 {
            next = Some((self.last_update_sec + 1).saturating_mul(NS_PER_SEC));
        }
        if b & B_PIE != 0 {
            if let Some(p) = self.period_ns() {
                let t = (self.last_period + 1).saturating_mul(p);
                next = Some(next.map_or(t, |n: u64| n.min(t)));
            }
        }
        next
    }

    /// Port read (0x70 reads back 0xff as on PIIX3; 0x71 is the data port).
    pub fn io_read(&mut self, now_ns: u64, port: u16) -> u8 {
        if port != 0x71 {
            return 0xff;
        }
        let index = usize::from(self.index & 0x7f);
        match index {
            0x00 | 0x02 | 0x04 | 0x06..=0x09 if self.frozen_at_ns.is_none() => self.time_register(now_ns, index),
            CMOS_CENTURY_IDX if self.frozen_at_ns.is_none() => self.time_register(now_ns, CMOS_CENTURY_IDX),
            REG_A => {
                let in_window = now_ns % NS_PER_SEC >= NS_PER_SEC - UIP_WINDOW_NS;
                let running = self.cmos[REG_B] & B_SET == 0 && self.cmos[REG_A] & 0x70 == 0x20;
                self.cmos[REG_A] & 0x7f | if in_window && running { 0x80 } else { 0 }
            }
            REG_C => {
                self.advance(now_ns);
                let v = self.cmos[REG_C];
                self.cmos[REG_C] = 0;
                self.irq_level = false;
                v
            }
            _ => self.cmos[index],
        }
    }

    /// Port write: 0x70 selects the index, 0x71 writes the selected byte.
    pub fn io_write(&mut self, now_ns: u64, port: u16, value: u8) {
        if port == 0x70 {
            self.index = value & 0x7f;
            self.nmi_disabled = value & 0x80 != 0;
            return;
        }
        if port != 0x71 {
            return;
        }
        let index = usize::from(self.index & 0x7f);
        match index {
            REG_A => {
                self.cmos[REG_A] = value & 0x7f;
                if let Some(p) = self.period_ns() {
                    self.last_period = now_ns / p;
                }
            }
            REG_B => {
                let was_set = self.cmos[REG_B] & B_SET != 0;
                let set = value & B_SET != 0;
                if set && !was_set {
                    // Freeze: snapshot the time registers in the current mode.
                    for i in TIME_REGS {
                        self.cmos[i] = self.time_register(now_ns, i);
                    }
                    self.frozen_at_ns = Some(now_ns);
                }
                // Mode bits change the encoding of frozen registers only when
                // software rewrites them, as on the real part.
                self.cmos[REG_B] = if set { value & !B_UIE } else { value };
                if !set && was_set {
                    self.unfreeze(now_ns);
                }
                self.update_irq();
            }
            REG_C | REG_D => {}
            _ => {
                if self.frozen_at_ns.is_some() || !TIME_REGS.contains(&index) {
                    self.cmos[index] = value;
                }
            }
        }
    }

    fn unfreeze(&mut self, now_ns: u64) {
        let year = i64::from(self.decode(self.cmos[CMOS_CENTURY_IDX])) * 100 + i64::from(self.decode(self.cmos[0x09]));
        let t = DateTime {
            year,
            month: self.decode(self.cmos[0x08]),
            day: self.decode(self.cmos[0x07]),
            hour: self.decode_hour(self.cmos[0x04]),
            minute: self.decode(self.cmos[0x02]),
            second: self.decode(self.cmos[0x00]),
            weekday: 1,
        };
        self.frozen_at_ns = None;
        let base = RTC_EPOCH + (now_ns / NS_PER_SEC) as i64;
        self.offset_secs = t.to_unix().saturating_sub(base);
    }
}

const CMOS_CENTURY_IDX: usize = CMOS_CENTURY as usize;
/// Registers computed from the clock while it runs.
const TIME_REGS: [usize; 8] = [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, CMOS_CENTURY_IDX];

#[cfg(test)]
mod tests {
    use super::*;

    fn read(rtc: &mut Rtc, now: u64, idx: u8) -> u8 {
        rtc.io_write(now, 0x70, idx);
        rtc.io_read(now, 0x71)
    }

    fn write(rtc: &mut Rtc, now: u64, idx: u8, v: u8) {
        rtc.io_write(now, 0x70, idx);
        rtc.io_write(now, 0x71, v);
    }

    #[test]
    fn calendar_round_trip() {
        let t = DateTime::from_unix(RTC_EPOCH);
        assert_eq!((t.year, t.month, t.day, t.hour, t.weekday), (2026, 1, 1, 0, 5));
        assert_eq!(t.to_unix(), RTC_EPOCH);
        let t = DateTime::from_unix(951_782_400); // 2000-02-29
        assert_eq!((t.year, t.month, t.day), (2000, 2, 29));
        assert_eq!(t.to_unix(), 951_782_400);
    }

    #[test]
    fn time_registers_bcd_binary_12h() {
        let mut rtc = Rtc::new(128 << 20, 0, 1);
        let now = (13 * 3600 + 4 * 60 + 59) * NS_PER_SEC;
        assert_eq!(read(&mut rtc, now, 0x00), 0x59);
        assert_eq!(read(&mut rtc, now, 0x02), 0x04);
        assert_eq!(read(&mut rtc, now, 0x04), 0x13);
        assert_eq!(read(&mut rtc, now, 0x07), 0x01);
        assert_eq!(read(&mut rtc, now, 0x08), 0x01);
        assert_eq!(read(&mut rtc, now, 0x09), 0x26);
        assert_eq!(read(&mut rtc, now, 0x32), 0x20);
        write(&mut rtc, now, 0x0b, B_DM_BINARY);
        assert_eq!(read(&mut rtc, now, 0x00), 59);
        assert_eq!(read(&mut rtc, now, 0x04), 0x80 | 1, "1 PM in 12h mode");
    }

    #[test]
    fn set_time_while_frozen() {
        let mut rtc = Rtc::new(128 << 20, 0, 1);
        write(&mut rtc, 0, 0x0b, B_SET | B_24H);
        write(&mut rtc, 0, 0x09, 0x30);
        write(&mut rtc, 0, 0x04, 0x10);
        write(&mut rtc, 0, 0x0b, B_24H);
        assert_eq!(read(&mut rtc, 5 * NS_PER_SEC, 0x09), 0x30);
        assert_eq!(read(&mut rtc, 5 * NS_PER_SEC, 0x04), 0x10);
        assert_eq!(read(&mut rtc, 5 * NS_PER_SEC, 0x00), 0x05);
    }

    #[test]
    fn uip_and_memory_bytes() {
        let mut rtc = Rtc::new(0xe000_0000, 1 << 32, 4);
        assert_eq!(read(&mut rtc, 0, 0x0a) & 0x80, 0);
        assert_eq!(read(&mut rtc, NS_PER_SEC - 1000, 0x0a) & 0x80, 0x80);
        assert_eq!(read(&mut rtc, 0, 0x0d), 0x80);
        assert_eq!(read(&mut rtc, 0, 0x34), 0x00);
        assert_eq!(read(&mut rtc, 0, 0x35), 0xdf);
        assert_eq!(read(&mut rtc, 0, 0x5c), 0x00);
        assert_eq!(read(&mut rtc, 0, 0x5d), 0x01);
        assert_eq!(read(&mut rtc, 0, 0x5f), 3);
        assert_eq!(read(&mut rtc, 0, 0x30), 0x00);
        assert_eq!(read(&mut rtc, 0, 0x31), 0xfc);
    }

    #[test]
    fn periodic_and_update_interrupts() {
        let mut rtc = Rtc::new(128 << 20, 0, 1);
        assert_eq!(rtc.next_deadline_ns(), None);
        write(&mut rtc, 0, 0x0a, 0x26); // 1024 Hz
        write(&mut rtc, 0, 0x0b, B_24H | B_PIE);
        let due = rtc.next_deadline_ns().unwrap();
        assert_eq!(due, 976_563);
        rtc.advance(due - 1);
        assert!(!rtc.irq_level);
        rtc.advance(due);
        assert!(rtc.irq_level);
        assert_eq!(read(&mut rtc, due, 0x0c), C_IRQF | C_PF);
        assert!(!rtc.irq_level);
        write(&mut rtc, due, 0x0b, B_24H | B_UIE);
        assert_eq!(rtc.next_deadline_ns(), Some(NS_PER_SEC));
        rtc.advance(NS_PER_SEC);
        assert!(rtc.irq_level);
        assert_eq!(read(&mut rtc, NS_PER_SEC, 0x0c) & (C_IRQF | C_UF), C_IRQF | C_UF);
    }

    #[test]
    fn alarm_interrupt() {
        let mut rtc = Rtc::new(128 << 20, 0, 1);
        write(&mut rtc, 0, 0x01, 0x03);
        write(&mut rtc, 0, 0x03, 0xc0);
        write(&mut rtc, 0, 0x05, 0xc0);
        write(&mut rtc, 0, 0x0b, B_24H | B_AIE);
        rtc.advance(2 * NS_PER_SEC);
        assert!(!rtc.irq_level);
        rtc.advance(3 * NS_PER_SEC);
        assert!(rtc.irq_level);
        assert_eq!(read(&mut rtc, 3 * NS_PER_SEC, 0x0c) & C_AF, C_AF);
    }
}
