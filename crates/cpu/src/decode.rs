//! Decoded-instruction cache: each instruction is decoded once by
//! iced-x86, its handler chosen then, and the result reused until the page
//! it came from is written.
//!
//! Blocks are runs of up to [`MAX_BLOCK`] instructions within one 4 KiB
//! physical page, ending at the first instruction that transfers control or
//! changes state the decoder depends on. They are keyed by (physical
//! address, RIP, code size): the same bytes decode the same way only at the
//! same RIP (RIP-relative operands and branch targets are absolute in the
//! decoded form) and the same bitness. The cache is direct-mapped on the
//! physical address. Coherence with writes is described in [`crate::mem`].
//! An instruction that straddles a page boundary is decoded afresh each
//! time it runs, from bytes fetched through both translations.

use crate::exec::{self, fast, FastHandler, Handler};
use crate::fault::Fault;
use crate::mmu::{self, Access, AccessCtx};
use crate::{events, Activity, Cpu, Ctx};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction};

/// Longest block.
pub const MAX_BLOCK: usize = 32;
const CACHE_SIZE: usize = 1 << 15;
const NO_BLOCK: u64 = u64::MAX;

/// One decoded instruction: the handler to run, the operands it needs in
/// pre-resolved compact form, and iced's full decoding for the generic
/// handlers.
#[derive(Clone, Copy)]
pub struct Decoded {
    /// What executes it.
    pub exec: FastHandler,
    /// The family handler (called by [`fast::call_generic`]).
    pub generic: Handler,
    /// RIP after the instruction.
    pub next_ip: u64,
    /// Immediate, branch target or memory displacement.
    pub imm: u64,
    /// Address-size mask of the compact memory operand.
    pub amask: u64,
    /// First register operand (GPR number) or condition code.
    pub r0: u8,
    /// Second register operand.
    pub r1: u8,
    /// Operand size in bytes.
    pub size: u8,
    /// Memory base register, or [`fast::NONE`].
    pub mbase: u8,
    /// Memory index register, or [`fast::NONE`].
    pub mindex: u8,
    /// log2 of the index scale.
    pub mscale: u8,
    /// Memory segment register number.
    pub mseg: u8,
    /// Branch target of a fused compare-and-branch.
    pub target: u64,
    /// RIP after the branch of a fused compare-and-branch.
    pub next2: u64,

    /// Whether `exec` is a pre-resolved fast form (compact fields valid).
    pub fast: bool,
    /// The full decoding.
    pub insn: Instruction,
}

impl Decoded {
    /// Decodes the handler and compact operands of `insn`; the boolean
    /// says whether the block ends after it.
    pub fn new(insn: &Instruction) -> (Decoded, bool) {
        let (generic, ends) = exec::select(insn);
        let mut d = Decoded {
            exec: fast::call_generic,
            generic,
            next_ip: insn.next_ip(),
            imm: 0,
            amask: u64::MAX,
            r0: 0,
            r1: 0,
            size: 0,
            mbase: fast::NONE,
            mindex: fast::NONE,
            mscale: 0,
            mseg: 0,
            target: 0,
            next2: 0,
            fast: false,
            insn: *insn,
        };
        d.fast = !ends && fast::select(insn, &mut d);
        if !d.fast {
            d.exec = fast::call_generic;
        }
        (d, ends)
    }
}

/// A run of decoded instructions.
pub(crate) struct Block {
    phys: u64,
    rip: u64,
    bitness: u32,
    gen: u32,
    insns: Vec<Decoded>,
}

/// The per-vCPU block cache.
pub struct BlockCache {
    blocks: Vec<Block>,
}

impl BlockCache {
    pub(crate) fn new() -> Self {
        BlockCache { blocks: Vec::new() }
    }

    #[inline(always)]
    fn index(phys: u64) -> usize {
        ((phys ^ (phys >> 12)) as usize) & (CACHE_SIZE - 1)
    }
}

impl Cpu {
    /// Translates RIP for fetching; returns (linear address, RAM offset),
    /// or the physical address when the code is not in RAM.
    #[inline(always)]
    fn fetch_target(&mut self, ctx: &mut Ctx) -> Result<(u64, Result<usize, u64>), Fault> {
        let la = self.code_linear(self.regs.rip)?;
        let user = self.cpl == 3;
        if let Some(off) = self.tlb.lookup(la, Access::Fetch, user) {
            return Ok((la, Ok(off)));
        }
        let ac = AccessCtx { access: Access::Fetch, user, implicit: false };
        let pa = mmu::translate_fill(&self.regs, &mut self.tlb, ctx.mem, la, ac, self.ept)
            .map_err(|f| self.ept_exit(f, la))?;
        let pa = self.check_apic_access(la, pa, Access::Fetch)?;
        Ok((la, ctx.mem.ram_offset(pa).ok_or(pa)))
    }

    /// The linear address of `rip` in CS, with the limit check of
    /// protected mode and the canonical check of 64-bit mode.
    #[inline(always)]
    fn code_linear(&self, rip: u64) -> Result<u64, Fault> {
        if self.bitness == 64 {
            if !self.canonical(rip) {
                return Err(Fault::gp0());
            }
            return Ok(rip);
        }
        let cs = &self.regs.seg[x86::seg::sreg::CS];
        if rip > u64::from(cs.limit) {
            return Err(Fault::gp0());
        }
        Ok(cs.base.wrapping_add(rip) & 0xffff_ffff)
    }

    /// Executes one block starting at RIP, stopping early at `end` or on
    /// an exception.
    pub(crate) fn execute_block(&mut self, ctx: &mut Ctx, end: u64) {
        let (la, target) = match self.fetch_target(ctx) {
            Ok(t) => t,
            Err(f) => {
                self.raise(ctx, f);
                return;
            }
        };
        let off = match target {
            Ok(off) => off,
            Err(pa) => {
                // Executing from MMIO: shut down with a clear report rather
                // than fetch from a device.
                self.shutdown(format!("instruction fetch from non-RAM address {pa:#x}"));
                return;
            }
        };
        let single = self.needs_single_step();
        // Inside an interrupt shadow, run one instruction so the run loop
        // can look at interrupts right after it.
        // Single-stepping and interrupt shadows need exactly one
        // instruction; cached blocks may hold fused pairs, so decode it
        // afresh.
        if single || self.icount == self.inhibit_at {
            self.step_uncached(ctx, la);
            return;
        }
        let idx = self.lookup_block(ctx, la, off);
        let Some(idx) = idx else {
            // Straddles a page or cannot be cached: one instruction the slow
            // way.
            self.step_uncached(ctx, la);
            return;
        };
        // Record control transfers (not fall-through into the next block).
        if self.regs.rip != self.stats.fallthrough {
            let pos = self.stats.block_trace_pos;
            self.stats.block_trace[pos % crate::BLOCK_TRACE] = self.regs.rip;
            self.stats.block_trace_pos = pos.wrapping_add(1);
        }
        // Borrow the block's instructions out of the cache while they run
        // (handlers need `&mut self`); nothing decodes in between.
        let insns = core::mem::take(&mut self.cache.blocks[idx].insns);
        let n = insns.len();
        let limit = n.min((end - self.icount).max(1) as usize);
        // `regs.rip` is brought up to date when the block is left; inside it
        // only `next_rip` moves. A fault reports its own instruction's RIP.
        let mut faulted = false;
        for d in &insns[..limit] {
            self.next_rip = d.next_ip;
            match (d.exec)(self, ctx, d) {
                Ok(()) => self.icount += 1,
                Err(f) => {
                    self.regs.rip = d.insn.ip();
                    self.raise(ctx, f);
                    faulted = true;
                    break;
                }
            }
            if self.events & events::STOP != 0 {
                break;
            }
        }
        if !faulted {
            self.regs.rip = self.next_rip;
        }
        self.stats.fallthrough = insns[n - 1].insn.next_ip();
        self.cache.blocks[idx].insns = insns;
    }

    /// Finds or decodes the block at RAM offset `off` (linear `la`).
    fn lookup_block(&mut self, ctx: &mut Ctx, la: u64, off: usize) -> Option<usize> {
        let phys = off as u64;
        let i = BlockCache::index(phys);
        if self.cache.blocks.is_empty() {
            self.cache.blocks = (0..CACHE_SIZE)
                .map(|_| Block { phys: NO_BLOCK, rip: 0, bitness: 0, gen: 0, insns: Vec::new() })
                .collect();
        }
        let gen = ctx.mem.page_gen(off);
        let b = &self.cache.blocks[i];
        if b.phys == phys
            && b.rip == self.regs.rip
            && b.bitness == self.bitness
            && b.gen == gen
            && ctx.mem.is_code_page(off)
        {
            return Some(i);
        }
        self.decode_block(ctx, i, la, off)
    }

    fn decode_block(&mut self, ctx: &mut Ctx, i: usize, _la: u64, off: usize) -> Option<usize> {
        let page_end = (off & !0xfff) + 0x1000;
        ctx.mem.mark_code_page(off);
        if self.tlb.code_epoch != ctx.mem.code_epoch() {
            self.tlb.flush_writes();
            self.tlb.code_epoch = ctx.mem.code_epoch();
        }
        let gen = ctx.mem.page_gen(off);
        let bytes = &ctx.mem.ram()[off..page_end];
        let mut dec = Decoder::with_ip(self.bitness, bytes, self.regs.rip, DecoderOptions::NONE);
        let block = &mut self.cache.blocks[i];
        block.insns.clear();
        let mut insn = Instruction::default();
        while dec.can_decode() && block.insns.len() < MAX_BLOCK {
            dec.decode_out(&mut insn);
            if insn.is_invalid() && dec.last_error() == iced_x86::DecoderError::NoMoreBytes {
                break; // straddles the page end
            }
            let (d, ends) = Decoded::new(&insn);
            // A flag-setting ALU instruction followed by a Jcc becomes one
            // entry (macro-fusion, as in hardware): one dispatch instead of
            // two. The Jcc ends the block, so it is simply not stored.
            if let Some(prev) = block.insns.last_mut() {
                if fast::fuse(prev, &insn) {
                    break;
                }
            }
            block.insns.push(d);
            if ends || insn.flow_control() != FlowControl::Next {
                break;
            }
        }
        if block.insns.is_empty() {
            block.phys = NO_BLOCK;
            return None;
        }
        block.phys = off as u64;
        block.rip = self.regs.rip;
        block.bitness = self.bitness;
        block.gen = gen;
        self.stats.blocks_decoded += 1;
        Some(i)
    }

    /// Executes one instruction whose bytes cross a page boundary.
    fn step_uncached(&mut self, ctx: &mut Ctx, la: u64) {
        let mut bytes = [0u8; 15];
        let mut n = 0;
        while n < 15 {
            match self.fetch_byte(ctx, la.wrapping_add(n as u64)) {
                Ok(b) => bytes[n] = b,
                Err(f) => {
                    if n == 0 {
                        self.raise(ctx, f);
                        return;
                    }
                    // Decode with what we have; a fault is only real if the
                    // instruction needs the missing bytes.
                    let mut dec = Decoder::with_ip(self.bitness, &bytes[..n], self.regs.rip, DecoderOptions::NONE);
                    let insn = dec.decode();
                    if insn.is_invalid() && dec.last_error() == iced_x86::DecoderError::NoMoreBytes {
                        self.raise(ctx, f);
                        return;
                    }
                    break;
                }
            }
            n += 1;
        }
        let mut dec = Decoder::with_ip(self.bitness, &bytes[..n], self.regs.rip, DecoderOptions::NONE);
        let insn = dec.decode();
        let (d, _) = Decoded::new(&insn);
        let single = self.needs_single_step();
        if single && !self.debug_before(ctx, &insn) {
            return;
        }
        self.next_rip = insn.next_ip();
        match (d.exec)(self, ctx, &d) {
            Ok(()) => {
                self.regs.rip = self.next_rip;
                self.icount += 1;
                // MOV SS / POP SS hold debug traps (like interrupts) until
                // after the next instruction (SDM vol. 3A, 6.8.3); the
                // pending single-step is reported there.
                if single && self.ss_shadow_at != self.icount {
                    self.debug_after(ctx);
                }
                // The pending MTF VM exit (SDM vol. 3C, 26.5.2).
                if self.mtf_armed() {
                    self.mtf_exit(ctx);
                }
            }
            Err(f) => {
                self.raise(ctx, f);
                // After a fault delivered through the guest's IDT, MTF
                // exits before the handler's first instruction.
                if self.mtf_armed() {
                    self.mtf_exit(ctx);
                }
            }
        }
    }

    fn fetch_byte(&mut self, ctx: &mut Ctx, la: u64) -> Result<u8, Fault> {
        let ac = AccessCtx { access: Access::Fetch, user: self.cpl == 3, implicit: false };
        let pa = mmu::walk_ept(&self.regs, ctx.mem, la, ac, self.ept).map_err(|f| self.ept_exit(f, la))?.pa;
        let pa = self.check_apic_access(la, pa, Access::Fetch)?;
        let mut b = [0u8];
        ctx.mem.read(pa, &mut b).map_err(|_| Fault::gp0())?;
        Ok(b[0])
    }

    /// Enters the shutdown state with a reason for the report.
    pub(crate) fn shutdown(&mut self, why: String) {
        self.shutdown = Some(why);
        self.activity = Activity::Shutdown;
        self.events |= events::STOP;
    }
}
