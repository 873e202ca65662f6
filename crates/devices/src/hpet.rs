//! High Precision Event Timer: one timer block with three comparators.
//!
//! Follows the IA-PC HPET (High Precision Event Timers) Specification,
//! revision 1.0a: 2.3 "Register Set" (general capabilities and ID, general
//! configuration, general interrupt status, main counter, and per-timer
//! configuration/capability, comparator and FSB route registers), 2.3.9
//! "Timer Interrupt Routing" (legacy replacement: timer 0 on IRQ0 / IOAPIC
//! pin 2, timer 1 on IRQ8, the PIT and RTC disconnected) and 2.3.9.2
//! "Periodic Mode" (writing the comparator with Tn_VAL_SET_CNF sets the
//! comparator, otherwise only the period; every match adds the period).
//!
//! The main counter runs at 100 MHz (10 ns = 10,000,000 fs per tick) in
//! virtual time: while enabled its value at `now_ns` is
//! `counter + (now_ns - start_ns) / 10`; while halted it is `counter`.
//! Each timer keeps the tick (counted from `start_ns`) of its next match,
//! so the device is idle between accesses and `next_deadline_ns` is exact.
//! A match happens when the counter's low 32 bits (32-bit mode) or all 64
//! bits equal the comparator, as the hardware compares; a one-shot timer in
//! 32-bit mode therefore matches again every 2^32 ticks. Late periodic
//! matches collapse into one interrupt with the comparator advanced past
//! the counter, so a tiny period can never make `advance` loop.
//!
//! FSB (MSI) delivery is not supported (Tn_FSB_INT_DEL_CAP = 0).

/// Guest-physical base of the register block.
pub const HPET_BASE: u64 = 0xfed0_0000;
/// Size of the register block.
pub const HPET_LEN: u64 = 0x400;
/// Number of timers.
pub const HPET_NUM_TIMERS: usize = 3;
/// Counter tick in femtoseconds (10 ns: 100 MHz).
pub const HPET_PERIOD_FS: u64 = 10_000_000;
const TICK_NS: u64 = HPET_PERIOD_FS / 1_000_000;
/// PCI vendor ID reported in the capabilities register.
pub const HPET_VENDOR_ID: u16 = 0x8086;
/// IOAPIC pins a timer may be routed to outside legacy mode: 20-23, plus 2
/// and 8 (the legacy pins).
pub const HPET_ROUTE_CAP: u32 = (0xf << 20) | (1 << 2) | (1 << 8);

/// Register offsets (2.3 "Register Set").
pub mod regs {
    /// General capabilities and ID (read-only).
    pub const GCAP_ID: u64 = 0x000;
    /// General configuration.
    pub const GEN_CONF: u64 = 0x010;
    /// General interrupt status (write 1 to clear).
    pub const GINTR_STA: u64 = 0x020;
    /// Main counter value.
    pub const MAIN_CNT: u64 = 0x0f0;
    /// Timer 0 configuration and capabilities; timer N at `+ 0x20 * N`.
    pub const TIMER0_CONF: u64 = 0x100;
    /// Timer 0 comparator; timer N at `+ 0x20 * N`.
    pub const TIMER0_CMP: u64 = 0x108;
    /// Timer 0 FSB interrupt route; timer N at `+ 0x20 * N`.
    pub const TIMER0_FSB: u64 = 0x110;
    /// Stride between timer register groups.
    pub const TIMER_STRIDE: u64 = 0x20;
}

/// General configuration: the main counter runs.
pub const ENABLE_CNF: u64 = 1 << 0;
/// General configuration: legacy replacement routing.
pub const LEG_RT_CNF: u64 = 1 << 1;

/// Timer configuration: level-triggered (else edge).
pub const TN_INT_TYPE_CNF: u64 = 1 << 1;
/// Timer configuration: interrupt enabled.
pub const TN_INT_ENB_CNF: u64 = 1 << 2;
/// Timer configuration: periodic (else one-shot).
pub const TN_TYPE_CNF: u64 = 1 << 3;
/// Timer capability: periodic mode supported (read-only).
pub const TN_PER_INT_CAP: u64 = 1 << 4;
/// Timer capability: 64-bit comparator (read-only).
pub const TN_SIZE_CAP: u64 = 1 << 5;
/// Timer configuration: the next comparator write sets the comparator of a
/// periodic timer (self-clearing).
pub const TN_VAL_SET_CNF: u64 = 1 << 6;
/// Timer configuration: 32-bit mode.
pub const TN_32MODE_CNF: u64 = 1 << 8;
const TN_INT_ROUTE_SHIFT: u32 = 9;
const TN_INT_ROUTE_MASK: u64 = 0x1f << TN_INT_ROUTE_SHIFT;

const TN_WRITABLE: u64 =
    TN_INT_TYPE_CNF | TN_INT_ENB_CNF | TN_TYPE_CNF | TN_VAL_SET_CNF | TN_32MODE_CNF | TN_INT_ROUTE_MASK;

/// Where a timer's interrupt goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HpetLine {
    /// An ISA IRQ (legacy replacement): 8259 input and its IOAPIC pin.
    Isa(u8),
    /// An IOAPIC pin only.
    Gsi(u8),
}

/// One comparator.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HpetTimer {
    /// Configuration bits (writable ones only; capabilities are added on
    /// read).
    pub config: u64,
    /// Comparator value.
    pub cmp: u64,
    /// Period of a periodic timer.
    pub period: u64,
    /// Tick (counted from the block's `start_ns`) of the next match, while
    /// the counter runs.
    pub next_tick: Option<u64>,
}

impl HpetTimer {
    fn width_mask(&self) -> u64 {
        if self.config & TN_32MODE_CNF != 0 {
            0xffff_ffff
        } else {
            u64::MAX
        }
    }

    fn periodic(&self) -> bool {
        self.config & TN_TYPE_CNF != 0
    }

    fn level(&self) -> bool {
        self.config & TN_INT_TYPE_CNF != 0
    }

    fn enabled(&self) -> bool {
        self.config & TN_INT_ENB_CNF != 0
    }

    fn route(&self) -> u8 {
        ((self.config & TN_INT_ROUTE_MASK) >> TN_INT_ROUTE_SHIFT) as u8
    }
}

/// The timer block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hpet {
    /// General configuration (ENABLE_CNF, LEG_RT_CNF).
    pub config: u64,
    /// General interrupt status (level-triggered timers).
    pub isr: u64,
    /// Main counter value at `start_ns` (while running) or now (halted).
    pub counter: u64,
    /// Virtual time at which the counter last started.
    pub start_ns: u64,
    /// The comparators.
    pub timers: [HpetTimer; HPET_NUM_TIMERS],
}

impl Default for Hpet {
    fn default() -> Self {
        Self::new()
    }
}

impl Hpet {
    /// A halted block with every timer disabled.
    pub fn new() -> Self {
        Self { config: 0, isr: 0, counter: 0, start_ns: 0, timers: Default::default() }
    }

    /// General capabilities and ID register.
    pub fn capabilities() -> u64 {
        1 // REV_ID
            | ((HPET_NUM_TIMERS as u64 - 1) << 8) // NUM_TIM_CAP
            | (1 << 13) // COUNT_SIZE_CAP: 64-bit
            | (1 << 15) // LEG_RT_CAP
            | (u64::from(HPET_VENDOR_ID) << 16)
            | (HPET_PERIOD_FS << 32)
    }

    /// The counter runs.
    pub fn running(&self) -> bool {
        self.config & ENABLE_CNF != 0
    }

    /// Legacy replacement routing is on: the PIT and RTC interrupts are
    /// disconnected.
    pub fn legacy(&self) -> bool {
        self.config & LEG_RT_CNF != 0
    }

    fn elapsed_ticks(&self, now_ns: u64) -> u64 {
        now_ns.saturating_sub(self.start_ns) / TICK_NS
    }

    /// Main counter value at `now_ns`.
    pub fn counter_at(&self, now_ns: u64) -> u64 {
        if self.running() {
            self.counter.wrapping_add(self.elapsed_ticks(now_ns))
        } else {
            self.counter
        }
    }

    fn tick_ns(&self, tick: u64) -> u64 {
        self.start_ns.saturating_add(tick.saturating_mul(TICK_NS))
    }

    /// Where timer `n` interrupts, if anywhere.
    pub fn line(&self, n: usize) -> Option<HpetLine> {
        let t = self.timers.get(n)?;
        match (self.legacy(), n) {
            (true, 0) => Some(HpetLine::Isa(0)),
            (true, 1) => Some(HpetLine::Isa(8)),
            _ => {
                let r = t.route();
                (HPET_ROUTE_CAP & (1 << r) != 0).then_some(HpetLine::Gsi(r))
            }
        }
    }

    /// Level of timer `n`'s interrupt output (level-triggered timers only).
    pub fn level_asserted(&self, n: usize) -> bool {
        self.timers.get(n).is_some_and(|t| t.level() && t.enabled()) && self.isr & (1 << n) != 0
    }

    /// Recomputes timer `n`'s next match from the counter at `now_ns`. A
    /// comparator equal to the counter matches now only if `match_now`
    /// (the comparator or the counter just changed); otherwise that match
    /// already happened and the next one is a full wrap away.
    fn schedule(&mut self, n: usize, now_ns: u64, match_now: bool) {
        let running = self.running();
        let k = self.elapsed_ticks(now_ns);
        let c = self.counter_at(now_ns);
        let t = &mut self.timers[n];
        let m = t.width_mask();
        t.next_tick = match (running, t.cmp.wrapping_sub(c) & m) {
            (false, _) => None,
            (true, 0) if !match_now => (m != u64::MAX).then(|| k.checked_add(m + 1)).flatten(),
            (true, diff) => k.checked_add(diff),
        };
    }

    fn schedule_all(&mut self, now_ns: u64, match_now: bool) {
        for n in 0..HPET_NUM_TIMERS {
            self.schedule(n, now_ns, match_now);
        }
    }

    /// Runs the timers up to `now_ns`. Returns a bit per timer whose
    /// edge-triggered interrupt fired; level-triggered ones set their
    /// status bit (see [`Hpet::level_asserted`]).
    pub fn advance(&mut self, now_ns: u64) -> u8 {
        if !self.running() {
            return 0;
        }
        let k_now = self.elapsed_ticks(now_ns);
        let mut edges = 0u8;
        for n in 0..HPET_NUM_TIMERS {
            let t = &mut self.timers[n];
            let Some(k) = t.next_tick.filter(|&k| k <= k_now) else {
                continue;
            };
            let m = t.width_mask();
            if t.periodic() && t.period & m != 0 {
                let p = t.period & m;
                let periods = (k_now - k) / p + 1;
                t.cmp = t.cmp.wrapping_add(periods.wrapping_mul(p)) & m;
                t.next_tick = k.checked_add(periods.saturating_mul(p));
            } else {
                // One-shot (or a zero period): the next match is a full
                // wrap of the compared width away.
                t.next_tick = if m == u64::MAX { None } else { k.checked_add(m + 1) };
            }
            if t.enabled() {
                if t.level() {
                    self.isr |= 1 << n;
                } else {
                    edges |= 1 << n;
                }
            }
        }
        edges
    }

    /// Earliest virtual time at which an interrupt-enabled timer matches.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.timers.iter().filter(|t| t.enabled()).filter_map(|t| t.next_tick).map(|k| self.tick_ns(k)).min()
    }

    fn reg_read(&self, now_ns: u64, reg: u64) -> u64 {
        match reg {
            regs::GCAP_ID => Self::capabilities(),
            regs::GEN_CONF => self.config,
            regs::GINTR_STA => self.isr,
            regs::MAIN_CNT => self.counter_at(now_ns),
            r if (regs::TIMER0_CONF..regs::TIMER0_CONF + regs::TIMER_STRIDE * HPET_NUM_TIMERS as u64).contains(&r) => {
                let n = ((r - regs::TIMER0_CONF) / regs::TIMER_STRIDE) as usize;
                let t = &self.timers[n];
                match (r - regs::TIMER0_CONF) % regs::TIMER_STRIDE {
                    0 => {
                        let per_cap = if n == 0 { TN_PER_INT_CAP } else { 0 };
                        t.config | per_cap | TN_SIZE_CAP | (u64::from(HPET_ROUTE_CAP) << 32)
                    }
                    8 => t.cmp,
                    _ => 0, // FSB route: not supported.
                }
            }
            _ => 0,
        }
    }

    /// Register read of `size` bytes at `offset`. Any offset and size is
    /// accepted: the containing 64-bit register is read and shifted. Call
    /// [`Hpet::advance`] first so matches due by `now_ns` have happened.
    pub fn read(&self, now_ns: u64, offset: u64, size: u8) -> u64 {
        let shift = (offset & 7) * 8;
        (self.reg_read(now_ns, offset & !7) >> shift) & crate::size_mask(size)
    }

    /// Register write of `size` bytes at `offset`. Bytes of the register
    /// outside the access keep their value. Call [`Hpet::advance`] first
    /// so matches due before the write still happen.
    pub fn write(&mut self, now_ns: u64, offset: u64, size: u8, value: u64) {
        let shift = (offset & 7) * 8;
        let mask = crate::size_mask(size) << shift;
        let bits = (value << shift) & mask;
        let merge = |old: u64| (old & !mask) | bits;
        match offset & !7 {
            regs::GEN_CONF => {
                let new = merge(self.config) & (ENABLE_CNF | LEG_RT_CNF);
                let started = (new ^ self.config) & ENABLE_CNF != 0;
                if started {
                    // Freeze or restart the counter at its current value.
                    self.counter = self.counter_at(now_ns);
                    self.start_ns = now_ns;
                }
                self.config = new;
                self.schedule_all(now_ns, started);
            }
            regs::GINTR_STA => self.isr &= !bits,
            regs::MAIN_CNT if !self.running() => {
                self.counter = merge(self.counter);
                self.schedule_all(now_ns, true);
            }
            r if (regs::TIMER0_CONF..regs::TIMER0_CONF + regs::TIMER_STRIDE * HPET_NUM_TIMERS as u64).contains(&r) => {
                let n = ((r - regs::TIMER0_CONF) / regs::TIMER_STRIDE) as usize;
                match (r - regs::TIMER0_CONF) % regs::TIMER_STRIDE {
                    0 => self.write_timer_config(n, now_ns, merge(self.timers[n].config)),
                    8 => self.write_comparator(n, now_ns, mask, bits),
                    _ => {}
                }
            }
            _ => {}
        }
    }

    fn write_timer_config(&mut self, n: usize, now_ns: u64, value: u64) {
        let t = &mut self.timers[n];
        let mut new = value & TN_WRITABLE;
        if n != 0 {
            new &= !(TN_TYPE_CNF | TN_VAL_SET_CNF);
        }
        if HPET_ROUTE_CAP & (1 << ((new & TN_INT_ROUTE_MASK) >> TN_INT_ROUTE_SHIFT)) == 0 {
            // An unsupported route keeps the previous one.
            new = (new & !TN_INT_ROUTE_MASK) | (t.config & TN_INT_ROUTE_MASK);
        }
        t.config = new;
        if new & TN_32MODE_CNF != 0 {
            t.cmp &= 0xffff_ffff;
            t.period &= 0xffff_ffff;
        }
        if !t.level() {
            self.isr &= !(1 << n);
        }
        self.schedule(n, now_ns, false);
    }

    fn write_comparator(&mut self, n: usize, now_ns: u64, mask: u64, bits: u64) {
        let t = &mut self.timers[n];
        let m = t.width_mask();
        if !t.periodic() || t.config & TN_VAL_SET_CNF != 0 {
            t.cmp = ((t.cmp & !mask) | bits) & m;
        }
        if t.periodic() {
            t.period = ((t.period & !mask) | bits) & m;
        }
        t.config &= !TN_VAL_SET_CNF;
        self.schedule(n, now_ns, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use regs::*;

    fn conf(n: u64) -> u64 {
        TIMER0_CONF + TIMER_STRIDE * n
    }

    fn cmp(n: u64) -> u64 {
        TIMER0_CMP + TIMER_STRIDE * n
    }

    #[test]
    fn capabilities() {
        let mut h = Hpet::new();
        let cap = h.read(0, GCAP_ID, 8);
        assert_eq!(cap & 0xff, 1, "revision");
        assert_eq!((cap >> 8) & 0x1f, 2, "three timers");
        assert_ne!(cap & (1 << 13), 0, "64-bit counter");
        assert_ne!(cap & (1 << 15), 0, "legacy route capable");
        assert_eq!((cap >> 16) & 0xffff, 0x8086);
        assert_eq!(h.read(0, GCAP_ID + 4, 4), 10_000_000);
        let t0 = h.read(0, conf(0), 8);
        assert_ne!(t0 & TN_PER_INT_CAP, 0);
        assert_ne!(t0 & TN_SIZE_CAP, 0);
        assert_eq!(t0 & (1 << 15), 0, "no FSB delivery");
        assert_eq!(t0 >> 32, 0x00f0_0104);
        assert_eq!(h.read(0, conf(1), 8) & TN_PER_INT_CAP, 0);
        // Read-only bits stay.
        h.write(0, GCAP_ID, 8, 0);
        assert_eq!(h.read(0, GCAP_ID, 8), cap);
    }

    #[test]
    fn counter_runs_only_when_enabled() {
        let mut h = Hpet::new();
        assert_eq!(h.read(1_000, MAIN_CNT, 8), 0);
        h.write(1_000, MAIN_CNT, 4, 500);
        assert_eq!(h.read(2_000, MAIN_CNT, 8), 500);
        h.write(2_000, GEN_CONF, 4, ENABLE_CNF);
        assert_eq!(h.read(2_009, MAIN_CNT, 8), 500);
        assert_eq!(h.read(3_000, MAIN_CNT, 8), 600);
        // Writes are ignored while the counter runs.
        h.write(3_000, MAIN_CNT, 8, 0);
        assert_eq!(h.read(3_000, MAIN_CNT, 4), 600);
        h.write(4_000, GEN_CONF, 4, 0);
        assert_eq!(h.read(9_000, MAIN_CNT, 8), 700);
        h.write(9_000, MAIN_CNT + 4, 4, 1);
        assert_eq!(h.read(9_000, MAIN_CNT, 8), (1 << 32) | 700);
        h.write(9_000, GEN_CONF, 4, ENABLE_CNF);
        assert_eq!(h.read(9_100, MAIN_CNT + 4, 4), 1);
        assert_eq!(h.read(9_100, MAIN_CNT, 4), 710);
    }

    #[test]
    fn one_shot_edge_interrupt_at_the_right_time() {
        let mut h = Hpet::new();
        h.write(0, conf(2), 4, TN_INT_ENB_CNF | (20 << 9));
        h.write(0, cmp(2), 8, 1_000);
        h.write(100, GEN_CONF, 4, ENABLE_CNF);
        assert_eq!(h.next_deadline_ns(), Some(100 + 10_000));
        assert_eq!(h.advance(10_099), 0);
        assert_eq!(h.advance(10_100), 1 << 2);
        assert_eq!(h.line(2), Some(HpetLine::Gsi(20)));
        assert_eq!(h.next_deadline_ns(), None, "64-bit one-shot fires once");
        assert_eq!(h.advance(1_000_000_000), 0);
        assert_eq!(h.isr, 0, "edge-triggered timers leave the status alone");
    }

    #[test]
    fn periodic_level_interrupt_accumulates() {
        let mut h = Hpet::new();
        h.write(0, conf(0), 8, TN_INT_ENB_CNF | TN_TYPE_CNF | TN_VAL_SET_CNF | TN_INT_TYPE_CNF | (21 << 9));
        h.write(0, cmp(0), 4, 100); // comparator and period
        h.write(0, cmp(0), 4, 50); // period only (VAL_SET cleared)
        assert_eq!(h.timers[0].cmp, 100);
        assert_eq!(h.timers[0].period, 50);
        h.write(0, GEN_CONF, 4, ENABLE_CNF);
        assert_eq!(h.next_deadline_ns(), Some(1_000));
        h.advance(999);
        assert!(!h.level_asserted(0));
        h.advance(1_000);
        assert!(h.level_asserted(0));
        assert_eq!(h.read(1_000, GINTR_STA, 4), 1);
        assert_eq!(h.read(1_000, cmp(0), 8), 150);
        h.write(1_000, GINTR_STA, 4, 1);
        assert!(!h.level_asserted(0));
        assert_eq!(h.next_deadline_ns(), Some(1_500));
        // Late by several periods: one interrupt, comparator past the counter.
        h.advance(10_000);
        assert!(h.level_asserted(0));
        assert_eq!(h.timers[0].cmp, 1_050);
        assert_eq!(h.next_deadline_ns(), Some(10_500));
        // Writing 0 to the status register clears nothing.
        h.write(10_000, GINTR_STA, 4, 0);
        assert!(h.level_asserted(0));
    }

    #[test]
    fn a_match_happens_once_per_counter_value() {
        let mut h = Hpet::new();
        h.write(0, conf(0), 4, TN_INT_ENB_CNF | TN_32MODE_CNF | (20 << 9));
        h.write(0, GEN_CONF, 4, ENABLE_CNF);
        h.write(0, cmp(0), 4, 10);
        assert_eq!(h.advance(100), 1);
        // Same tick: rewriting the configuration does not match again...
        h.write(105, conf(0), 4, TN_INT_ENB_CNF | TN_32MODE_CNF | (21 << 9));
        assert_eq!(h.advance(105), 0);
        assert_eq!(h.next_deadline_ns(), Some(100 + (1u64 << 32) * 10));
        // ...but writing the comparator with the counter's value does.
        h.write(105, cmp(0), 4, 10);
        assert_eq!(h.advance(105), 1);
    }

    #[test]
    fn legacy_replacement_routes() {
        let mut h = Hpet::new();
        h.write(0, conf(0), 4, TN_INT_ENB_CNF | (22 << 9));
        h.write(0, conf(1), 4, TN_INT_ENB_CNF | (23 << 9));
        assert_eq!(h.line(0), Some(HpetLine::Gsi(22)));
        assert_eq!(h.line(1), Some(HpetLine::Gsi(23)));
        h.write(0, GEN_CONF, 4, ENABLE_CNF | LEG_RT_CNF);
        assert!(h.legacy());
        assert_eq!(h.line(0), Some(HpetLine::Isa(0)));
        assert_eq!(h.line(1), Some(HpetLine::Isa(8)));
        assert_eq!(h.line(2), None, "route 0 is not in the capability mask");
        // Unsupported routes are refused.
        h.write(0, conf(2), 4, 5 << 9);
        assert_eq!(h.line(2), None);
        h.write(0, conf(2), 4, 8 << 9);
        assert_eq!(h.line(2), Some(HpetLine::Gsi(8)));
    }

    #[test]
    fn thirty_two_bit_mode_wraps() {
        let mut h = Hpet::new();
        h.write(0, MAIN_CNT, 8, 0x1_ffff_fff0);
        h.write(0, conf(1), 4, TN_INT_ENB_CNF | TN_32MODE_CNF | (20 << 9));
        h.write(0, cmp(1), 8, 0xdead_0000_0010);
        assert_eq!(h.read(0, cmp(1), 8), 0x10, "32-bit comparator");
        h.write(0, GEN_CONF, 4, ENABLE_CNF);
        // 0x20 ticks until the low half wraps to 0x10.
        assert_eq!(h.next_deadline_ns(), Some(0x20 * 10));
        assert_eq!(h.advance(0x20 * 10), 1 << 1);
        assert_eq!(h.read(0x20 * 10, MAIN_CNT, 8), 0x2_0000_0010);
        // A 32-bit one-shot matches again after 2^32 ticks.
        assert_eq!(h.next_deadline_ns(), Some((0x20 + (1u64 << 32)) * 10));
        // 64-bit mode: the same comparator is far away.
        h.write(300, conf(1), 4, TN_INT_ENB_CNF | (20 << 9));
        assert!(h.next_deadline_ns().unwrap() > 1 << 60);
    }

    #[test]
    fn hostile_accesses_never_panic() {
        let mut h = Hpet::new();
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut now = 0u64;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = (x >> 8) % 0x480;
            let size = [1u8, 2, 3, 4, 8, 0, 16][(x >> 20) as usize % 7];
            now = now.wrapping_add((x >> 40) % 100_000);
            if x & 1 == 0 {
                h.write(now, off, size, x.rotate_left(17));
            } else {
                h.read(now, off, size);
            }
            h.advance(now);
            h.next_deadline_ns();
        }
        for now in [u64::MAX - 1, u64::MAX] {
            h.write(now, conf(0), 8, TN_INT_ENB_CNF | TN_TYPE_CNF | TN_VAL_SET_CNF);
            h.write(now, cmp(0), 8, 1);
            h.write(now, GEN_CONF, 8, ENABLE_CNF);
            h.advance(now);
            h.next_deadline_ns();
        }
    }
}
