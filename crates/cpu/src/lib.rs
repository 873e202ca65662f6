//! Turtles' software x86-64 CPU.
//!
//! One [`Cpu`] is one logical processor: its architectural state
//! ([`Regs`]), a software TLB ([`mmu`]), a cache of decoded instruction
//! blocks ([`decode`]) and the executor ([`exec`]). The VMM drives it with
//! [`Cpu::run`], handing it guest RAM ([`Memory`]) and the platform
//! ([`Bus`]); it returns when its instruction budget is spent, when it
//! halts, or when it shuts down (triple fault).
//!
//! Hot path: a block of up to 32 decoded instructions is looked up by the
//! physical address of its first byte, then each instruction's handler is
//! called through the pointer chosen when it was decoded. Interrupts and
//! other asynchronous events are checked between blocks, and only when
//! something that can change them happened (`events` flags), so the common
//! path pays one predictable branch per block.
//!
//! The points where VMX non-root operation may exit (SDM vol. 3C, ch. 25
//! "VMX Non-Root Operation") are the handlers of the instructions concerned
//! and the event-delivery path; none of them sits on the ALU/memory path.
#![forbid(unsafe_code)]

mod access;
pub mod bus;
pub mod cpuid;
pub mod decode;
pub mod ept;
pub mod exec;
pub mod fault;
pub mod flags;
pub mod interrupt;
pub mod mem;
pub mod mmu;
mod msr;
pub mod seg;
pub mod state;
pub mod task;
pub mod virt;

pub use bus::{Bus, NullBus};
pub use cpuid::CpuidModel;
pub use fault::Fault;
pub use mem::{MemError, Memory};
pub use state::{DescTable, Mode, Regs, Segment};

use decode::BlockCache;
use mmu::Tlb;

/// Why [`Cpu::run`] returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RunExit {
    /// The instruction budget is spent.
    Budget,
    /// The CPU executed HLT (or waits for SIPI) and no interrupt is pending.
    Halted,
    /// A triple fault (or an unrecoverable delivery failure) shut the CPU
    /// down.
    Shutdown(String),
    /// The platform asked to stop ([`Bus::stop_requested`]).
    Stopped,
    /// The guest left VMX non-root operation: the exit information is in
    /// the current VMCS ([`Cpu::vmread`]), the processor is in root
    /// operation.
    VmExit,
}

/// Events the run loop must look at between blocks.
pub mod events {
    /// The interrupt lines or IF may have changed: poll the bus.
    pub const IRQ: u32 = 1 << 0;
    /// Leave the current block after this instruction (mode change,
    /// self-modifying code, HLT...).
    pub const STOP: u32 = 1 << 1;
    /// A VM exit was committed: return [`RunExit::VmExit`](super::RunExit::VmExit).
    pub const VM_EXIT: u32 = 1 << 2;
}

/// How many block entries [`CpuStats::block_trace`] keeps.
pub const BLOCK_TRACE: usize = 32;

/// How many exceptions [`CpuStats::recent_exceptions`] keeps.
pub const RECENT_EXCEPTIONS: usize = 8;

/// Per-vCPU counters for `--stats`, indexed by vector.
#[derive(Clone, Debug)]
pub struct CpuStats {
    /// Exceptions delivered, by vector.
    pub exceptions: [u64; 32],
    /// Interrupts delivered (external and INT n), by vector.
    pub interrupts: [u64; 256],
    /// Instructions that raised #UD because Turtles does not implement
    /// them, by mnemonic.
    pub unimplemented: std::collections::BTreeMap<String, u64>,
    /// Blocks decoded.
    pub blocks_decoded: u64,
    /// Targets of the last control transfers into a block (a ring;
    /// `block_trace_pos` is the next slot), for failure reports: how
    /// execution got where it died.
    pub block_trace: [u64; BLOCK_TRACE],
    /// Next slot of `block_trace`.
    pub block_trace_pos: usize,
    /// Where the last block would continue without a branch; entries
    /// there are not recorded.
    pub fallthrough: u64,
    /// The most recent exception.
    pub last_exception: Option<(Fault, u64)>,
    /// The last few exceptions (oldest first) with the RIP they were
    /// raised at, for failure reports.
    pub recent_exceptions: std::collections::VecDeque<(Fault, u64)>,
}

impl CpuStats {
    /// The recorded block-entry RIPs, oldest first.
    pub fn recent_blocks(&self) -> impl Iterator<Item = u64> + '_ {
        let (a, b) = self.block_trace.split_at(self.block_trace_pos % BLOCK_TRACE);
        b.iter().chain(a.iter()).copied().filter(|&r| r != 0)
    }
}

impl Default for CpuStats {
    fn default() -> Self {
        CpuStats {
            exceptions: [0; 32],
            interrupts: [0; 256],
            unimplemented: Default::default(),
            blocks_decoded: 0,
            block_trace: [0; BLOCK_TRACE],
            block_trace_pos: 0,
            fallthrough: 0,
            last_exception: None,
            recent_exceptions: std::collections::VecDeque::with_capacity(RECENT_EXCEPTIONS),
        }
    }
}

/// Activity state (SDM vol. 3A, 10.4 "Multiple-Processor (MP)
/// Initialization"; HLT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activity {
    /// Executing instructions.
    Active,
    /// Halted by HLT until an interrupt, NMI or INIT.
    Halted,
    /// An application processor after INIT, waiting for a startup IPI.
    WaitForSipi,
    /// Shut down by a triple fault.
    Shutdown,
}

/// One logical processor.
pub struct Cpu {
    /// Architectural registers.
    pub regs: Regs,
    /// Instructions retired.
    pub icount: u64,
    /// Virtual time at `clock_icount`, in nanoseconds.
    pub clock_ns: u64,
    /// Instruction count at which `clock_ns` was taken.
    pub clock_icount: u64,
    /// Activity state.
    pub activity: Activity,
    /// CPUID answers and the features they imply.
    pub cpuid: CpuidModel,
    /// Counters.
    pub stats: CpuStats,
    /// Local APIC id.
    pub apic_id: u32,
    pub(crate) mode: Mode,
    pub(crate) cpl: u8,
    /// Decoder bitness of the current code segment (16, 32, 64).
    pub(crate) bitness: u32,
    pub(crate) tlb: Tlb,
    /// 64 minus the linear-address width (16 for 48-bit, 7 under LA57).
    pub(crate) va_shift: u32,
    pub(crate) cache: BlockCache,
    pub(crate) events: u32,
    /// Interrupts are inhibited while `icount` equals this (STI, MOV SS).
    pub(crate) inhibit_at: u64,
    /// Debug traps are held while `icount` equals this (MOV SS, POP SS).
    pub(crate) ss_shadow_at: u64,
    /// NMIs are blocked until the next IRET.
    pub(crate) nmi_blocked: bool,
    /// RIP after the instruction being executed; branches overwrite it.
    /// (While a handler runs, `regs.rip` is the start of its instruction,
    /// which is what faults report.)
    pub(crate) next_rip: u64,
    /// Shutdown reason once a triple fault happened.
    pub(crate) shutdown: Option<String>,
    /// RFLAGS.TF at the start of the instruction (single-step traps).
    pub(crate) tf_before: bool,
    /// Data and I/O breakpoints hit by the current instruction (DR6 bits).
    pub(crate) db_hits: u64,
    /// The current instruction loaded RF itself (IRET, POPF).
    pub(crate) rf_set_by_insn: bool,
    /// RDRAND/RDSEED generator state (deterministic).
    pub(crate) rng_state: u64,
    /// VMX operation: capabilities, current VMCS, staged exits.
    pub(crate) vmx: virt::VmxUnit,
    /// In VMX non-root operation (a guest of L0 runs).
    pub(crate) non_root: bool,
    /// EPT pointer in force for guest-physical accesses (non-root with
    /// "enable EPT").
    pub(crate) ept: Option<u64>,
    /// TSC offset of the running guest (VMCS TSC offset with "use TSC
    /// offsetting"; 0 in root operation).
    pub(crate) vmx_tsc_offset: i64,
}

/// What handlers receive besides the CPU: RAM and the platform.
pub struct Ctx<'a> {
    /// Guest RAM.
    pub mem: &'a mut Memory,
    /// The platform.
    pub bus: &'a mut dyn Bus,
}

/// Nanoseconds of virtual time per retired instruction.
pub const NS_PER_INSN: u64 = 1;
/// Virtual TSC frequency in kHz (2 GHz); the TSC is virtual time times 2.
pub const TSC_KHZ: u64 = 2_000_000;

impl Cpu {
    /// A processor in its power-on state (real mode at F000:FFF0).
    pub fn new(apic_id: u32, cpuid: CpuidModel) -> Cpu {
        let mut cpu = Cpu {
            regs: Regs::reset(),
            icount: 0,
            clock_ns: 0,
            clock_icount: 0,
            activity: Activity::Active,
            cpuid,
            stats: CpuStats::default(),
            apic_id,
            mode: Mode::Real,
            cpl: 0,
            bitness: 16,
            tlb: Tlb::default(),
            va_shift: 16,
            cache: BlockCache::new(),
            events: events::IRQ,
            inhibit_at: u64::MAX,
            ss_shadow_at: u64::MAX,
            nmi_blocked: false,
            next_rip: 0,
            shutdown: None,
            tf_before: false,
            db_hits: 0,
            rf_set_by_insn: false,
            rng_state: 0x9e37_79b9_7f4a_7c15 ^ u64::from(apic_id),
            vmx: virt::VmxUnit::default(),
            non_root: false,
            ept: None,
            vmx_tsc_offset: 0,
        };
        cpu.regs.gpr[2] = cpu.cpuid.signature() as u64;
        cpu.state_changed();
        cpu
    }

    /// Current operating mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Current privilege level.
    pub fn cpl(&self) -> u8 {
        self.cpl
    }

    /// Virtual time now, in nanoseconds.
    #[inline]
    pub fn now_ns(&self) -> u64 {
        self.clock_ns + (self.icount - self.clock_icount) * NS_PER_INSN
    }

    /// Sets the virtual clock (the VMM's global time at the start of a
    /// slice).
    pub fn set_clock(&mut self, now_ns: u64) {
        self.clock_ns = now_ns;
        self.clock_icount = self.icount;
    }

    /// The guest-visible TSC.
    pub fn tsc(&self) -> u64 {
        let tsc = (self.now_ns() * (TSC_KHZ / 1_000_000)).wrapping_add(self.regs.msr.tsc_offset as u64);
        // SDM vol. 3C, 26.3 (RDTSC) and 25.6.5 "Time-Stamp Counter Offset
        // and Multiplier": with offsetting on, "use TSC scaling" first
        // multiplies by the 16.48 fixed-point multiplier.
        let c = &self.vmx.ctls;
        let tsc = if self.non_root
            && c.proc.contains(vmx::controls::ProcCtls::USE_TSC_OFFSETTING)
            && c.proc2.contains(vmx::controls::ProcCtls2::USE_TSC_SCALING)
        {
            ((u128::from(tsc) * u128::from(c.tsc_multiplier)) >> 48) as u64
        } else {
            tsc
        };
        tsc.wrapping_add(self.vmx_tsc_offset as u64)
    }

    /// Recomputes everything derived from the registers (mode, CPL,
    /// decoder bitness) and flushes the TLB. Call after changing `regs`
    /// from outside.
    pub fn state_changed(&mut self) {
        self.refresh_derived(true);
    }

    /// [`Cpu::state_changed`], optionally keeping the TLB (a VM entry or
    /// exit whose translations are tagged: VPID).
    pub(crate) fn refresh_derived(&mut self, flush_tlb: bool) {
        self.mode = self.regs.compute_mode();
        let cs = self.regs.seg[x86::seg::sreg::CS];
        self.bitness = match self.mode {
            Mode::Long => 64,
            Mode::Real | Mode::Vm86 => 16,
            _ => {
                if cs.ar & x86::seg::ar::DB != 0 {
                    32
                } else {
                    16
                }
            }
        };
        self.cpl = match self.mode {
            Mode::Real => 0,
            Mode::Vm86 => 3,
            _ => (cs.selector & 3) as u8,
        };
        self.va_shift = if self.regs.cr4 & x86::Cr4::LA57.bits() != 0 { 7 } else { 16 };
        if flush_tlb {
            self.tlb.flush_all();
        }
        self.tlb.disabled = self.data_breakpoints_armed();
        self.events |= events::IRQ | events::STOP;
    }

    /// Puts an application processor into wait-for-SIPI (INIT).
    pub fn init(&mut self) {
        let id = self.apic_id;
        let cpuid = core::mem::take(&mut self.cpuid);
        let icount = self.icount;
        *self = Cpu::new(id, cpuid);
        self.icount = icount;
        self.clock_icount = icount;
        self.activity = Activity::WaitForSipi;
    }

    /// Starts a processor waiting for SIPI at `vector << 12` in real mode
    /// (SDM vol. 3A, 10.4.4 "MP Initialization Example").
    pub fn sipi(&mut self, vector: u8) {
        if self.activity != Activity::WaitForSipi {
            return;
        }
        let sel = u16::from(vector) << 8;
        self.regs.seg[x86::seg::sreg::CS] = Segment::real(sel, true);
        self.regs.rip = 0;
        self.activity = Activity::Active;
        self.state_changed();
    }

    /// Runs until `budget` more instructions have retired, the CPU halts or
    /// it shuts down.
    pub fn run(&mut self, mem: &mut Memory, bus: &mut dyn Bus, budget: u64) -> RunExit {
        // Code running in root operation needs the host context the last
        // exit deferred (virt/cache.rs).
        if self.guest_parked() {
            self.load_host_context();
        }
        let mut ctx = Ctx { mem, bus };
        if self.tlb.code_epoch != ctx.mem.code_epoch() {
            self.tlb.flush_writes();
            self.tlb.code_epoch = ctx.mem.code_epoch();
        }
        self.events |= events::IRQ;
        let end = self.icount.saturating_add(budget);
        loop {
            if self.events != 0 {
                if self.events & events::VM_EXIT != 0 {
                    self.events &= !(events::VM_EXIT | events::STOP);
                    return RunExit::VmExit;
                }
                self.events &= !events::STOP;
                if self.events & events::IRQ != 0 {
                    self.events &= !events::IRQ;
                    if ctx.bus.stop_requested() {
                        return RunExit::Stopped;
                    }
                    self.check_interrupts(&mut ctx);
                    if self.events & events::VM_EXIT != 0 {
                        // An event exited (external interrupt, window).
                        continue;
                    }
                }
            }
            match self.activity {
                Activity::Active => {}
                Activity::Halted | Activity::WaitForSipi => return RunExit::Halted,
                Activity::Shutdown if self.non_root => {
                    // A triple fault in non-root operation is a VM exit
                    // (SDM vol. 3C, 26.2).
                    self.exit_event(&mut ctx, vmx::ExitReason::TripleFault);
                    continue;
                }
                Activity::Shutdown => return RunExit::Shutdown(self.shutdown.clone().unwrap_or_default()),
            }
            if self.icount >= end {
                return RunExit::Budget;
            }
            if self.non_root && self.icount >= self.vmx.preemption_deadline {
                self.exit_event(&mut ctx, vmx::ExitReason::PreemptionTimer);
                continue;
            }
            self.execute_block(&mut ctx, end.min(self.vmx.preemption_deadline));
        }
    }

    fn data_breakpoints_armed(&self) -> bool {
        let dr7 = self.regs.dr[7];
        (0..4).any(|i| (dr7 >> (i * 2)) & 3 != 0 && (dr7 >> (16 + i * 4)) & 3 != 0)
    }

    /// Whether any debug feature needs the slow, one-instruction-at-a-time
    /// path (single-step, armed breakpoints, the VMX monitor trap flag).
    #[inline(always)]
    pub(crate) fn needs_single_step(&self) -> bool {
        self.regs.rflags & x86::Rflags::TF.bits() != 0 || self.regs.dr[7] & 0xff != 0 || self.mtf_armed()
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
pub mod testutil;
