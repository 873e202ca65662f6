//! Local APIC of one logical processor, in xAPIC (MMIO) and x2APIC (MSR)
//! modes.
//!
//! Follows Intel SDM vol. 3A, chapter "Advanced Programmable Interrupt
//! Controller (APIC)" (chapter 11 in older editions, 12 in newer ones):
//! "Local APIC Status and Location" (IA32_APIC_BASE), "Local APIC ID",
//! "Local APIC Version Register", "Local Vector Table", "APIC Timer"
//! (one-shot, periodic and TSC-deadline modes, divide configuration), "Error
//! Handling" (ESR write-before-read), "Issuing Interprocessor Interrupts"
//! (ICR delivery modes, destination modes and shorthands), "Interrupt,
//! Task, and Processor Priority" (TPR/PPR), "IRR, ISR and TMR", "Signaling
//! Interrupt Servicing Completion" (EOI), "Spurious Interrupt" (SVR) and
//! "Extended XAPIC (x2APIC)" (MSR map 0x800-0x8ff, 32-bit IDs, logical ID
//! derivation, SELF IPI).
//!
//! Timer clock: the APIC bus/core crystal clock is modelled at 1 GHz, one
//! timer tick per virtual nanosecond before the divider ([`APIC_TIMER_HZ`]).
//! The VMM should advertise the same value (e.g. CPUID leaf 0x15/0x16).
//!
//! The LAPIC does not know about other processors: ICR writes produce an
//! [`Ipi`] that the platform routes; EOIs of level-triggered vectors return
//! the vector so the platform can forward the EOI to the IOAPIC.

use crate::ns_for_tsc;

/// Frequency of the APIC timer before the divider (1 tick per ns).
pub const APIC_TIMER_HZ: u64 = 1_000_000_000;
/// Default xAPIC base address.
pub const APIC_DEFAULT_BASE: u64 = 0xfee0_0000;
/// IA32_APIC_BASE MSR index.
pub const MSR_IA32_APIC_BASE: u32 = 0x1b;
/// IA32_TSC_DEADLINE MSR index.
pub const MSR_IA32_TSC_DEADLINE: u32 = 0x6e0;
/// Version register: version 0x14, max LVT entry 5 (6 LVTs).
pub const APIC_VERSION: u32 = 0x0005_0014;

/// IA32_APIC_BASE bit 8: bootstrap processor.
pub const APIC_BASE_BSP: u64 = 1 << 8;
/// IA32_APIC_BASE bit 10: x2APIC mode.
pub const APIC_BASE_EXTD: u64 = 1 << 10;
/// IA32_APIC_BASE bit 11: APIC global enable.
pub const APIC_BASE_EN: u64 = 1 << 11;
/// Physical address bits implemented for the APIC base (MAXPHYADDR 46).
const APIC_BASE_ADDR_MASK: u64 = 0x0000_3fff_ffff_f000;

/// LVT mask bit.
pub const LVT_MASKED: u32 = 1 << 16;

/// Index of each LVT entry in [`Lapic::lvt`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lvt {
    /// Timer (0x320).
    Timer = 0,
    /// Thermal sensor (0x330).
    Thermal = 1,
    /// Performance counters (0x340).
    Perf = 2,
    /// LINT0 (0x350).
    Lint0 = 3,
    /// LINT1 (0x360).
    Lint1 = 4,
    /// Error (0x370).
    Error = 5,
}

/// Writable bits of each LVT entry (vector, delivery mode, polarity,
/// trigger mode, mask, timer mode) per SDM figure "Local Vector Table".
const LVT_WRITABLE: [u32; 6] = [0x0007_00ff, 0x0001_07ff, 0x0001_07ff, 0x0001_a7ff, 0x0001_a7ff, 0x0001_00ff];

/// Interrupt delivery modes (ICR, LVT and IOAPIC redirection entries).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// Fixed vector.
    Fixed,
    /// Lowest priority (modelled as fixed to the lowest-numbered target).
    LowestPriority,
    /// System management interrupt (ignored).
    Smi,
    /// Non-maskable interrupt.
    Nmi,
    /// INIT.
    Init,
    /// Start-up IPI.
    Startup,
    /// External interrupt: the vector comes from the 8259 PIC.
    ExtInt,
    /// Reserved encoding (ignored).
    Reserved,
}

impl DeliveryMode {
    /// Decodes the 3-bit delivery mode field.
    pub fn from_bits(bits: u32) -> Self {
        match bits & 7 {
            0 => Self::Fixed,
            1 => Self::LowestPriority,
            2 => Self::Smi,
            4 => Self::Nmi,
            5 => Self::Init,
            6 => Self::Startup,
            7 => Self::ExtInt,
            _ => Self::Reserved,
        }
    }
}

/// ICR destination shorthand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shorthand {
    /// Use the destination field.
    None,
    /// The sender only.
    SelfOnly,
    /// Every APIC including the sender.
    AllIncludingSelf,
    /// Every APIC except the sender.
    AllExcludingSelf,
}

/// Destination of an interrupt message, interpreted by each receiver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Destination {
    /// Destination field (8-bit in xAPIC format, 32-bit in x2APIC format).
    pub dest: u32,
    /// Logical (true) or physical (false) destination mode.
    pub logical: bool,
    /// Destination is in x2APIC (32-bit) format.
    pub x2apic_format: bool,
}

impl Destination {
    fn is_broadcast(&self) -> bool {
        if self.x2apic_format {
            self.dest == u32::MAX
        } else {
            self.dest == 0xff
        }
    }
}

/// An interrupt message leaving a local APIC's ICR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipi {
    /// Vector (Startup: page number).
    pub vector: u8,
    /// Delivery mode.
    pub mode: DeliveryMode,
    /// Destination field and mode.
    pub dest: Destination,
    /// Destination shorthand.
    pub shorthand: Shorthand,
    /// Level-triggered (ICR bit 15).
    pub level_triggered: bool,
    /// Level assert (ICR bit 14).
    pub assert: bool,
}

/// Result of a register write that the platform must act on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LapicAction {
    /// Nothing to do.
    None,
    /// Route this IPI.
    SendIpi(Ipi),
    /// A level-triggered vector was EOIed: forward to the IOAPIC.
    Eoi(u8),
}

/// One local APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lapic {
    /// APIC ID (the processor index).
    pub id: u32,
    /// IA32_APIC_BASE MSR value.
    pub apic_base: u64,
    /// Task priority register.
    pub tpr: u32,
    /// Logical destination register (xAPIC; derived in x2APIC mode).
    pub ldr: u32,
    /// Destination format register.
    pub dfr: u32,
    /// Spurious interrupt vector register.
    pub svr: u32,
    /// In-service register, 256 bits.
    pub isr: [u32; 8],
    /// Trigger mode register, 256 bits.
    pub tmr: [u32; 8],
    /// Interrupt request register, 256 bits.
    pub irr: [u32; 8],
    /// Error status visible to reads.
    pub esr: u32,
    /// Errors accumulated since the last ESR write.
    pub esr_pending: u32,
    /// Interrupt command register low half.
    pub icr_lo: u32,
    /// Interrupt command register high half.
    pub icr_hi: u32,
    /// LVT entries indexed by [`Lvt`].
    pub lvt: [u32; 6],
    /// Timer initial count.
    pub initial_count: u32,
    /// Timer divide configuration register.
    pub divide_conf: u32,
    /// Virtual time at which the timer was (re)started.
    pub timer_start_ns: u64,
    /// Next timer expiry (one-shot/periodic/TSC deadline), if armed.
    pub timer_due_ns: Option<u64>,
    /// IA32_TSC_DEADLINE value (0 = disarmed).
    pub tsc_deadline: u64,
}

const ESR_SEND_ILLEGAL_VECTOR: u32 = 1 << 5;
const ESR_RECV_ILLEGAL_VECTOR: u32 = 1 << 6;
const ESR_ILLEGAL_REGISTER: u32 = 1 << 7;

const TIMER_MODE_SHIFT: u32 = 17;
const TIMER_PERIODIC: u32 = 1;
const TIMER_TSC_DEADLINE: u32 = 2;

impl Lapic {
    /// Power-on state of the APIC of processor `id` (BSP when `id == 0`).
    /// As on QEMU, the BSP's LINT0 starts in ExtINT mode so the 8259 reaches
    /// the processor with or without firmware.
    pub fn new(id: u32) -> Self {
        let bsp = if id == 0 { APIC_BASE_BSP } else { 0 };
        let mut apic = Self {
            id,
            apic_base: APIC_DEFAULT_BASE | APIC_BASE_EN | bsp,
            tpr: 0,
            ldr: 0,
            dfr: u32::MAX,
            svr: 0xff,
            isr: [0; 8],
            tmr: [0; 8],
            irr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr_lo: 0,
            icr_hi: 0,
            lvt: [LVT_MASKED; 6],
            initial_count: 0,
            divide_conf: 0,
            timer_start_ns: 0,
            timer_due_ns: None,
            tsc_deadline: 0,
        };
        if id == 0 {
            apic.lvt[Lvt::Lint0 as usize] = 0x700;
        }
        apic
    }

    /// INIT (or disable): registers back to power-on values; ID and
    /// IA32_APIC_BASE are preserved.
    pub fn reset_registers(&mut self) {
        let base = self.apic_base;
        *self = Self::new(self.id);
        self.apic_base = base;
        if self.x2apic_mode() {
            self.ldr = self.x2apic_ldr();
        }
    }

    /// APIC globally enabled (IA32_APIC_BASE.EN).
    pub fn hw_enabled(&self) -> bool {
        self.apic_base & APIC_BASE_EN != 0
    }

    /// APIC software enabled (SVR bit 8) and globally enabled.
    pub fn sw_enabled(&self) -> bool {
        self.hw_enabled() && self.svr & 0x100 != 0
    }

    /// x2APIC mode (IA32_APIC_BASE.EN and EXTD).
    pub fn x2apic_mode(&self) -> bool {
        self.apic_base & (APIC_BASE_EN | APIC_BASE_EXTD) == APIC_BASE_EN | APIC_BASE_EXTD
    }

    /// xAPIC MMIO page base, when the APIC is enabled in xAPIC mode.
    pub fn mmio_base(&self) -> Option<u64> {
        (self.hw_enabled() && !self.x2apic_mode()).then_some(self.apic_base & APIC_BASE_ADDR_MASK)
    }

    fn x2apic_ldr(&self) -> u32 {
        ((self.id >> 4) << 16) | (1 << (self.id & 0xf))
    }

    /// Whether the 8259's INTR reaches this processor through LINT0
    /// (virtual-wire mode): LVT LINT0 unmasked in ExtINT mode, or the APIC
    /// globally or software disabled.
    pub fn accepts_pic_intr(&self) -> bool {
        let lint0 = self.lvt[Lvt::Lint0 as usize];
        !self.sw_enabled() || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == 7)
    }

    fn bit(reg: &[u32; 8], v: u8) -> bool {
        reg[usize::from(v >> 5)] & (1 << (v & 31)) != 0
    }

    fn set_bit(reg: &mut [u32; 8], v: u8, on: bool) {
        let word = &mut reg[usize::from(v >> 5)];
        if on {
            *word |= 1 << (v & 31);
        } else {
            *word &= !(1 << (v & 31));
        }
    }

    fn highest(reg: &[u32; 8]) -> Option<u8> {
        (0..8).rev().find(|&i| reg[i] != 0).map(|i| (i as u8) * 32 + (31 - reg[i].leading_zeros() as u8))
    }

    /// Highest vector in IRR.
    pub fn highest_irr(&self) -> Option<u8> {
        Self::highest(&self.irr)
    }

    /// Highest vector in ISR.
    pub fn highest_isr(&self) -> Option<u8> {
        Self::highest(&self.isr)
    }

    /// Processor priority register.
    pub fn ppr(&self) -> u32 {
        let isrv = u32::from(self.highest_isr().unwrap_or(0));
        if self.tpr & 0xf0 >= isrv & 0xf0 {
            self.tpr & 0xff
        } else {
            isrv & 0xf0
        }
    }

    /// Accepts a fixed/lowest-priority interrupt into IRR. Interrupts to a
    /// disabled APIC are dropped; vectors 0-15 set "receive illegal vector".
    pub fn accept_fixed(&mut self, vector: u8, level_triggered: bool) {
        if !self.sw_enabled() {
            return;
        }
        if vector < 16 {
            self.raise_error(ESR_RECV_ILLEGAL_VECTOR);
            return;
        }
        Self::set_bit(&mut self.irr, vector, true);
        Self::set_bit(&mut self.tmr, vector, level_triggered);
    }

    fn raise_error(&mut self, bits: u32) {
        let first = self.esr_pending & bits != bits;
        self.esr_pending |= bits;
        let lvt = self.lvt[Lvt::Error as usize];
        if first && lvt & LVT_MASKED == 0 {
            self.accept_fixed(lvt as u8, false);
        }
    }

    /// The vector the processor would take now (IRR priority class above
    /// PPR).
    pub fn pending_vector(&self) -> Option<u8> {
        let v = self.highest_irr()?;
        (u32::from(v) & 0xf0 > self.ppr() & 0xf0).then_some(v)
    }

    /// INTA: moves the pending vector from IRR to ISR and returns it.
    pub fn acknowledge(&mut self) -> Option<u8> {
        let v = self.pending_vector()?;
        Self::set_bit(&mut self.irr, v, false);
        Self::set_bit(&mut self.isr, v, true);
        Some(v)
    }

    fn eoi(&mut self) -> LapicAction {
        let Some(v) = self.highest_isr() else {
            return LapicAction::None;
        };
        Self::set_bit(&mut self.isr, v, false);
        if Self::bit(&self.tmr, v) {
            Self::set_bit(&mut self.tmr, v, false);
            LapicAction::Eoi(v)
        } else {
            LapicAction::None
        }
    }

    /// Whether this APIC is a target of `dest` (no shorthand).
    pub fn matches(&self, dest: &Destination) -> bool {
        if !self.hw_enabled() {
            return false;
        }
        if dest.is_broadcast() {
            return true;
        }
        if !dest.logical {
            return if self.x2apic_mode() || dest.x2apic_format {
                self.id == dest.dest
            } else {
                self.id & 0xff == dest.dest
            };
        }
        if self.x2apic_mode() {
            let ldr = self.x2apic_ldr();
            return dest.dest >> 16 == ldr >> 16 && dest.dest & ldr & 0xffff != 0;
        }
        let logical_id = self.ldr >> 24;
        let d = dest.dest & 0xff;
        if self.dfr >> 28 == 0xf {
            logical_id & d != 0
        } else {
            (d >> 4) == (logical_id >> 4) && d & logical_id & 0xf != 0
        }
    }

    // ---- timer ----

    fn timer_mode(&self) -> u32 {
        (self.lvt[Lvt::Timer as usize] >> TIMER_MODE_SHIFT) & 3
    }

    fn divisor(&self) -> u64 {
        let v = (self.divide_conf & 3) | ((self.divide_conf & 8) >> 1);
        1 << ((v + 1) & 7)
    }

    fn timer_period_ns(&self) -> u64 {
        u64::from(self.initial_count) * self.divisor()
    }

    fn start_timer(&mut self, now_ns: u64) {
        self.timer_start_ns = now_ns;
        self.timer_due_ns = (self.initial_count != 0).then(|| now_ns.saturating_add(self.timer_period_ns()));
    }

    fn current_count(&self, now_ns: u64) -> u32 {
        if self.timer_mode() == TIMER_TSC_DEADLINE || self.initial_count == 0 {
            return 0;
        }
        let period = self.timer_period_ns();
        let elapsed = now_ns.saturating_sub(self.timer_start_ns);
        let remaining = match self.timer_mode() {
            TIMER_PERIODIC => period - elapsed % period,
            _ if self.timer_due_ns.is_none() || elapsed >= period => 0,
            _ => period - elapsed,
        };
        (remaining / self.divisor()) as u32
    }

    /// Fires the timer if due at `now_ns`.
    pub fn advance(&mut self, now_ns: u64) {
        let Some(due) = self.timer_due_ns else {
            return;
        };
        if now_ns < due {
            return;
        }
        let lvt = self.lvt[Lvt::Timer as usize];
        if lvt & LVT_MASKED == 0 {
            self.accept_fixed(lvt as u8, false);
        }
        match self.timer_mode() {
            TIMER_PERIODIC if self.initial_count != 0 => {
                let period = self.timer_period_ns();
                let k = (now_ns - self.timer_start_ns) / period + 1;
                self.timer_due_ns = Some(self.timer_start_ns.saturating_add(k.saturating_mul(period)));
            }
            TIMER_TSC_DEADLINE => {
                self.tsc_deadline = 0;
                self.timer_due_ns = None;
            }
            _ => self.timer_due_ns = None,
        }
    }

    /// Next timer expiry.
    pub fn next_deadline_ns(&self) -> Option<u64> {
        self.timer_due_ns
    }

    /// IA32_TSC_DEADLINE read.
    pub fn read_tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// IA32_TSC_DEADLINE write (ignored outside TSC-deadline mode).
    pub fn write_tsc_deadline(&mut self, now_ns: u64, value: u64) {
        if self.timer_mode() != TIMER_TSC_DEADLINE {
            return;
        }
        self.tsc_deadline = value;
        self.timer_due_ns = (value != 0).then(|| ns_for_tsc(value).max(now_ns));
    }

    // ---- registers ----

    /// Reads the register at xAPIC offset `offset` (0x000-0x3f0, 16-byte
    /// aligned). `None` for reserved/write-only registers.
    fn read_reg(&self, now_ns: u64, offset: u32) -> Option<u32> {
        let x2 = self.x2apic_mode();
        Some(match offset {
            0x20 => {
                if x2 {
                    self.id
                } else {
                    self.id << 24
                }
            }
            0x30 => APIC_VERSION,
            0x80 => self.tpr,
            0x90 if !x2 => 0,
            0xa0 => self.ppr(),
            0xc0 if !x2 => 0,
            0xd0 => self.ldr,
            0xe0 if !x2 => self.dfr,
            0xf0 => self.svr,
            0x100..=0x170 => self.isr[((offset - 0x100) >> 4) as usize],
            0x180..=0x1f0 => self.tmr[((offset - 0x180) >> 4) as usize],
            0x200..=0x270 => self.irr[((offset - 0x200) >> 4) as usize],
            0x280 => self.esr,
            0x300 => self.icr_lo,
            0x310 if !x2 => self.icr_hi,
            0x320..=0x370 => self.lvt[((offset - 0x320) >> 4) as usize],
            0x380 => self.initial_count,
            0x390 => self.current_count(now_ns),
            0x3e0 => self.divide_conf,
            0xb0 if !x2 => 0,
            _ => return None,
        })
    }

    /// Writes the register at xAPIC offset `offset`. Returns `None` when the
    /// register does not exist or is read-only (x2APIC: #GP).
    fn write_reg(&mut self, now_ns: u64, offset: u32, value: u32) -> Option<LapicAction> {
        let x2 = self.x2apic_mode();
        match offset {
            0x20 if !x2 => {} // ID writes are ignored (the ID is fixed).
            0x80 => self.tpr = value & 0xff,
            0xb0 => return Some(self.eoi()),
            0xd0 if !x2 => self.ldr = value & 0xff00_0000,
            0xe0 if !x2 => self.dfr = value | 0x0fff_ffff,
            0xf0 => {
                self.svr = value & 0x11ff;
                if !self.sw_enabled() {
                    for lvt in &mut self.lvt {
                        *lvt |= LVT_MASKED;
                    }
                }
            }
            0x280 => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            0x300 => {
                self.icr_lo = value & 0x000c_cfff;
                return Some(self.send_ipi());
            }
            0x310 if !x2 => self.icr_hi = value & 0xff00_0000,
            0x320..=0x370 => {
                let idx = ((offset - 0x320) >> 4) as usize;
                let mut v = value & LVT_WRITABLE[idx];
                if !self.sw_enabled() {
                    v |= LVT_MASKED;
                }
                if idx == Lvt::Timer as usize {
                    if (v >> TIMER_MODE_SHIFT) & 3 == 3 {
                        v &= !(3 << TIMER_MODE_SHIFT);
                    }
                    let old_mode = self.timer_mode();
                    self.lvt[idx] = v;
                    if self.timer_mode() != old_mode {
                        self.timer_due_ns = None;
                        self.tsc_deadline = 0;
                        self.initial_count = 0;
                    }
                } else {
                    self.lvt[idx] = v;
                }
            }
            0x380 => {
                if self.timer_mode() != TIMER_TSC_DEADLINE {
                    self.initial_count = value;
                    self.start_timer(now_ns);
                }
            }
            0x3e0 => {
                self.divide_conf = value & 0xb;
                if self.timer_due_ns.is_some() && self.timer_mode() != TIMER_TSC_DEADLINE {
                    // Keep the remaining count, rescale by the new divisor.
                    let remaining = u64::from(self.current_count(now_ns));
                    self.timer_start_ns = now_ns;
                    self.timer_due_ns = Some(now_ns.saturating_add(remaining * self.divisor()));
                }
            }
            0x3f0 if x2 => {
                let vector = value as u8;
                return Some(LapicAction::SendIpi(Ipi {
                    vector,
                    mode: DeliveryMode::Fixed,
                    dest: Destination { dest: self.id, logical: false, x2apic_format: true },
                    shorthand: Shorthand::SelfOnly,
                    level_triggered: false,
                    assert: true,
                }));
            }
            // Read-only registers: writes ignored in xAPIC mode.
            0x30 | 0x90 | 0xa0 | 0xc0 | 0x100..=0x270 | 0x390 if !x2 => {}
            _ => return None,
        }
        Some(LapicAction::None)
    }

    fn send_ipi(&mut self) -> LapicAction {
        let lo = self.icr_lo;
        let mode = DeliveryMode::from_bits(lo >> 8);
        let vector = lo as u8;
        let x2 = self.x2apic_mode();
        let ipi = Ipi {
            vector,
            mode,
            dest: Destination {
                dest: if x2 { self.icr_hi } else { self.icr_hi >> 24 },
                logical: lo & (1 << 11) != 0,
                x2apic_format: x2,
            },
            shorthand: match (lo >> 18) & 3 {
                0 => Shorthand::None,
                1 => Shorthand::SelfOnly,
                2 => Shorthand::AllIncludingSelf,
                _ => Shorthand::AllExcludingSelf,
            },
            level_triggered: lo & (1 << 15) != 0,
            assert: lo & (1 << 14) != 0,
        };
        if matches!(mode, DeliveryMode::Fixed | DeliveryMode::LowestPriority) && vector < 16 {
            self.raise_error(ESR_SEND_ILLEGAL_VECTOR);
            return LapicAction::None;
        }
        LapicAction::SendIpi(ipi)
    }

    /// xAPIC MMIO read at page offset `offset`. Registers are 32 bits wide
    /// on 16-byte boundaries; narrower reads return the addressed bytes and
    /// unknown offsets read 0.
    pub fn mmio_read(&mut self, now_ns: u64, offset: u64, size: u8) -> u64 {
        let reg = (offset & 0xff0) as u32;
        let byte = (offset & 0xf) as u32;
        if byte >= 4 {
            return 0;
        }
        let v = self.read_reg(now_ns, reg).unwrap_or(0);
        u64::from(v >> (byte * 8)) & crate::size_mask(size)
    }

    /// xAPIC MMIO write. Only aligned 32-bit (or wider) writes take effect.
    pub fn mmio_write(&mut self, now_ns: u64, offset: u64, size: u8, value: u64) -> LapicAction {
        if offset & 0xf != 0 || size < 4 {
            return LapicAction::None;
        }
        let reg = (offset & 0xff0) as u32;
        match self.write_reg(now_ns, reg, value as u32) {
            Some(action) => action,
            None => {
                self.raise_error(ESR_ILLEGAL_REGISTER);
                LapicAction::None
            }
        }
    }

    /// x2APIC MSR read (0x800-0x8ff). `None` means #GP.
    pub fn msr_read(&mut self, now_ns: u64, msr: u32) -> Option<u64> {
        if !self.x2apic_mode() || !(0x800..=0x8ff).contains(&msr) {
            return None;
        }
        let reg = (msr - 0x800) << 4;
        match reg {
            0x300 => Some(u64::from(self.icr_lo) | (u64::from(self.icr_hi) << 32)),
            0xb0 | 0x3f0 => None,
            _ => self.read_reg(now_ns, reg).map(u64::from),
        }
    }

    /// x2APIC MSR write (0x800-0x8ff). `None` means #GP.
    pub fn msr_write(&mut self, now_ns: u64, msr: u32, value: u64) -> Option<LapicAction> {
        if !self.x2apic_mode() || !(0x800..=0x8ff).contains(&msr) {
            return None;
        }
        let reg = (msr - 0x800) << 4;
        match reg {
            0x300 => {
                self.icr_hi = (value >> 32) as u32;
                self.icr_lo = value as u32 & 0x000c_cfff;
                Some(self.send_ipi())
            }
            // Reserved bits must be zero in x2APIC mode.
            0x80 | 0xb0 | 0x3f0 if value >> 32 != 0 => None,
            0x80 if value > 0xff => None,
            0xb0 if value != 0 => None,
            0x3f0 if value > 0xff => None,
            _ if value >> 32 != 0 => None,
            _ => self.write_reg(now_ns, reg, value as u32),
        }
    }

    /// IA32_APIC_BASE write; `false` means #GP (reserved bits or an illegal
    /// mode transition per SDM "x2APIC State Transitions").
    pub fn write_apic_base(&mut self, value: u64) -> bool {
        let allowed = APIC_BASE_ADDR_MASK | APIC_BASE_EN | APIC_BASE_EXTD | APIC_BASE_BSP;
        if value & !allowed != 0 {
            return false;
        }
        let value = (value & !APIC_BASE_BSP) | (self.apic_base & APIC_BASE_BSP);
        let en = value & APIC_BASE_EN != 0;
        let extd = value & APIC_BASE_EXTD != 0;
        if extd && !en {
            return false;
        }
        if self.x2apic_mode() && en && !extd {
            return false;
        }
        let was_enabled = self.hw_enabled();
        let was_x2 = self.x2apic_mode();
        self.apic_base = value;
        if was_enabled && !en {
            self.reset_registers();
        }
        if self.x2apic_mode() && !was_x2 {
            self.ldr = self.x2apic_ldr();
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enabled(id: u32) -> Lapic {
        let mut a = Lapic::new(id);
        a.mmio_write(0, 0xf0, 4, 0x1ff);
        a
    }

    #[test]
    fn reset_values() {
        let mut a = Lapic::new(0);
        assert_eq!(a.apic_base, 0xfee0_0900);
        assert_eq!(a.mmio_read(0, 0x30, 4), 0x0005_0014);
        assert_eq!(a.mmio_read(0, 0xf0, 4), 0xff);
        assert_eq!(a.mmio_read(0, 0xe0, 4), 0xffff_ffff);
        assert_eq!(a.mmio_read(0, 0x330, 4), 0x1_0000);
        assert!(a.accepts_pic_intr());
        assert_eq!(Lapic::new(3).apic_base, 0xfee0_0800);
        assert_eq!(Lapic::new(3).mmio_read(0, 0x20, 4), 3 << 24);
    }

    #[test]
    fn priority_ack_eoi() {
        let mut a = enabled(0);
        a.accept_fixed(0x31, false);
        a.accept_fixed(0x52, true);
        assert_eq!(a.pending_vector(), Some(0x52));
        a.mmio_write(0, 0x80, 4, 0x60);
        assert_eq!(a.pending_vector(), None);
        a.mmio_write(0, 0x80, 4, 0x00);
        assert_eq!(a.acknowledge(), Some(0x52));
        assert_eq!(a.mmio_read(0, 0xa0, 4), 0x50);
        assert_eq!(a.pending_vector(), None, "0x31 is below PPR class 5");
        assert_eq!(a.mmio_write(0, 0xb0, 4, 0), LapicAction::Eoi(0x52));
        assert_eq!(a.acknowledge(), Some(0x31));
        assert_eq!(a.mmio_read(0, 0x100 + 0x10, 4), 1 << 17);
        assert_eq!(a.mmio_write(0, 0xb0, 4, 0), LapicAction::None);
        // Illegal vector.
        a.accept_fixed(3, false);
        a.mmio_write(0, 0x280, 4, 0);
        assert_eq!(a.mmio_read(0, 0x280, 4), u64::from(ESR_RECV_ILLEGAL_VECTOR));
    }

    #[test]
    fn disabled_apic_drops_fixed() {
        let mut a = Lapic::new(1);
        a.accept_fixed(0x40, false);
        assert_eq!(a.pending_vector(), None);
    }

    #[test]
    fn one_shot_and_periodic_timer() {
        let mut a = enabled(0);
        a.mmio_write(0, 0x3e0, 4, 0x3); // divide by 16
        a.mmio_write(0, 0x320, 4, 0x40);
        a.mmio_write(1000, 0x380, 4, 100);
        assert_eq!(a.next_deadline_ns(), Some(1000 + 1600));
        assert_eq!(a.mmio_read(1800, 0x390, 4), 50);
        a.advance(2599);
        assert_eq!(a.pending_vector(), None);
        a.advance(2600);
        assert_eq!(a.pending_vector(), Some(0x40));
        assert_eq!(a.next_deadline_ns(), None);
        assert_eq!(a.mmio_read(5000, 0x390, 4), 0);
        // Periodic, divide by 1.
        a.mmio_write(0, 0x3e0, 4, 0xb);
        a.mmio_write(0, 0x320, 4, 0x2_0041);
        a.mmio_write(10_000, 0x380, 4, 1000);
        a.advance(11_000);
        assert_eq!(a.next_deadline_ns(), Some(12_000));
        assert_eq!(a.mmio_read(11_250, 0x390, 4), 750);
        a.advance(15_500);
        assert_eq!(a.next_deadline_ns(), Some(16_000));
    }

    #[test]
    fn tsc_deadline_timer() {
        let mut a = enabled(0);
        a.write_tsc_deadline(0, 5000);
        assert_eq!(a.next_deadline_ns(), None, "ignored outside deadline mode");
        a.mmio_write(0, 0x320, 4, 0x4_0050);
        a.write_tsc_deadline(0, 5000);
        assert_eq!(a.read_tsc_deadline(), 5000);
        assert_eq!(a.next_deadline_ns(), Some(2500));
        a.advance(2500);
        assert_eq!(a.pending_vector(), Some(0x50));
        assert_eq!(a.read_tsc_deadline(), 0);
        // Past deadline fires at once.
        a.write_tsc_deadline(10_000, 2);
        assert_eq!(a.next_deadline_ns(), Some(10_000));
    }

    #[test]
    fn icr_ipis() {
        let mut a = enabled(0);
        a.mmio_write(0, 0x310, 4, 2 << 24);
        let act = a.mmio_write(0, 0x300, 4, 0x4500);
        let LapicAction::SendIpi(ipi) = act else { panic!("{act:?}") };
        assert_eq!(ipi.mode, DeliveryMode::Init);
        assert_eq!(ipi.dest.dest, 2);
        let act = a.mmio_write(0, 0x300, 4, 0xc4620);
        let LapicAction::SendIpi(ipi) = act else { panic!("{act:?}") };
        assert_eq!((ipi.mode, ipi.vector, ipi.shorthand), (DeliveryMode::Startup, 0x20, Shorthand::AllExcludingSelf));
        assert_eq!(a.mmio_read(0, 0x300, 4) & (1 << 12), 0, "delivery status idle");
    }

    #[test]
    fn logical_destinations() {
        let mut a = enabled(1);
        a.mmio_write(0, 0xd0, 4, 0x0200_0000);
        let flat = Destination { dest: 0x03, logical: true, x2apic_format: false };
        assert!(a.matches(&flat));
        assert!(!a.matches(&Destination { dest: 0x01, ..flat }));
        a.mmio_write(0, 0xe0, 4, 0x0fff_ffff); // cluster
        a.mmio_write(0, 0xd0, 4, 0x1200_0000);
        assert!(a.matches(&Destination { dest: 0x12, ..flat }));
        assert!(!a.matches(&Destination { dest: 0x22, ..flat }));
        assert!(a.matches(&Destination { dest: 0xff, ..flat }));
    }

    #[test]
    fn x2apic_msrs() {
        let mut a = enabled(17);
        assert_eq!(a.msr_read(0, 0x802), None, "not in x2APIC mode");
        assert!(!a.write_apic_base(APIC_DEFAULT_BASE | APIC_BASE_EXTD));
        assert!(a.write_apic_base(APIC_DEFAULT_BASE | APIC_BASE_EN | APIC_BASE_EXTD));
        assert_eq!(a.mmio_base(), None);
        assert_eq!(a.msr_read(0, 0x802), Some(17));
        assert_eq!(a.msr_read(0, 0x80d), Some((1 << 16) | (1 << 1)));
        assert_eq!(a.msr_read(0, 0x80b), None);
        assert_eq!(a.msr_write(0, 0x802, 5), None);
        assert!(a.msr_write(0, 0x808, 0x20).is_some());
        assert_eq!(a.msr_read(0, 0x808), Some(0x20));
        let act = a.msr_write(0, 0x830, (3u64 << 32) | 0x40).unwrap();
        let LapicAction::SendIpi(ipi) = act else { panic!() };
        assert_eq!(ipi.dest.dest, 3);
        assert!(ipi.dest.x2apic_format);
        let act = a.msr_write(0, 0x83f, 0x45).unwrap();
        let LapicAction::SendIpi(ipi) = act else { panic!() };
        assert_eq!(ipi.shorthand, Shorthand::SelfOnly);
        assert!(!a.write_apic_base(APIC_DEFAULT_BASE | APIC_BASE_EN), "x2APIC -> xAPIC");
        assert!(a.write_apic_base(APIC_DEFAULT_BASE));
        assert!(!a.hw_enabled());
    }
}
