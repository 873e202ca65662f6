//! String instructions: MOVS, CMPS, SCAS, LODS, STOS, INS, OUTS in every
//! element size, with the REP, REPE/REPZ and REPNE/REPNZ prefixes (SDM
//! vol. 2, each instruction's page and "REP/REPE/REPZ/REPNE/REPNZ—Repeat
//! String Operation Prefix"; vol. 1, 7.3.9 "String Operations").
//!
//! Addressing: the source is `seg:rSI` with DS or the segment override,
//! the destination always `ES:rDI`. The address size (16, 32 or 64 bits)
//! selects SI/ESI/RSI, DI/EDI/RDI and the count register CX/ECX/RCX; iced
//! encodes it in the operand kinds (`MemorySegSI`, `MemoryESEDI`...).
//! Updating a 16-bit address register keeps its upper bits; a 32-bit one
//! is zero-extended, like any 32-bit register write. RFLAGS.DF selects the
//! direction.
//!
//! Repetition is interruptible and restartable, as on hardware: each
//! completed iteration updates rSI, rDI and rCX at once, so a fault in
//! iteration k reports the state after k - 1 iterations with RIP at the
//! instruction. A handler call runs a bounded chunk ([`CHUNK_ITERS`]
//! iterations, or [`CHUNK_BYTES`] on the fast path); if the count is not
//! exhausted it leaves RIP at the instruction and ends the block, so the
//! run loop can deliver interrupts and spend its budget before the next
//! chunk. With RFLAGS.TF set, each iteration is one step (the SDM's
//! single-step trap after every iteration).
//!
//! Fast path: REP MOVS and REP STOS with DF = 0 whose current stretch of
//! source and destination lies in RAM pages the TLB maps for that access
//! copy or fill whole page runs on the RAM buffer. The write TLB never maps
//! pages holding decoded code, MMIO or pages under armed data breakpoints,
//! so anything the fast path cannot do exactly is left to the
//! element-by-element path.

use crate::fault::Fault;
use crate::flags::{size_mask, FlagOp};
use crate::mmu::Access;
use crate::{events, Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, OpKind};
use x86::seg::sreg;
use x86::Rflags;

/// Iterations of the element-by-element path per handler call.
pub const CHUNK_ITERS: u64 = 4096;
/// Bytes the fast path moves per handler call.
pub const CHUNK_BYTES: u64 = 256 * 1024;

const RCX: usize = 1;
const RDX: usize = 2;
const RSI: usize = 6;
const RDI: usize = 7;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Movs,
    Cmps,
    Scas,
    Lods,
    Stos,
    Ins,
    Outs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Rep {
    None,
    /// REP (F3 or F2 on a non-comparing instruction).
    Always,
    /// REPE/REPZ: stop when ZF = 0.
    WhileEqual,
    /// REPNE/REPNZ: stop when ZF = 1.
    WhileNotEqual,
}

/// What one string instruction does, decoded from iced's form.
#[derive(Clone, Copy, Debug)]
struct StrOp {
    kind: Kind,
    /// Element size in bytes.
    size: u8,
    /// Address size in bytes.
    asize: u8,
    /// Segment of the source (DS or the override).
    src_seg: usize,
    rep: Rep,
}

impl StrOp {
    fn new(insn: &Instruction, kind: Kind) -> StrOp {
        let mut asize = 8;
        let mut src_seg = sreg::DS;
        for i in 0..insn.op_count() {
            match insn.op_kind(i) {
                OpKind::MemorySegSI | OpKind::MemorySegDI | OpKind::MemoryESDI => asize = 2,
                OpKind::MemorySegESI | OpKind::MemorySegEDI | OpKind::MemoryESEDI => asize = 4,
                OpKind::MemorySegRSI | OpKind::MemorySegRDI | OpKind::MemoryESRDI => asize = 8,
                _ => continue,
            }
            if matches!(insn.op_kind(i), OpKind::MemorySegSI | OpKind::MemorySegESI | OpKind::MemorySegRSI) {
                src_seg = crate::exec::sreg_index(insn.memory_segment());
            }
        }
        let comparing = matches!(kind, Kind::Cmps | Kind::Scas);
        let rep = if insn.has_repe_prefix() {
            if comparing {
                Rep::WhileEqual
            } else {
                Rep::Always
            }
        } else if insn.has_repne_prefix() {
            if comparing {
                Rep::WhileNotEqual
            } else {
                Rep::Always
            }
        } else {
            Rep::None
        };
        StrOp { kind, size: insn.memory_size().size() as u8, asize, src_seg, rep }
    }
}

impl Cpu {
    /// An address-size-wide register (rSI, rDI, rCX).
    #[inline(always)]
    fn areg(&self, idx: usize, asize: u8) -> u64 {
        self.regs.gpr[idx] & size_mask(asize)
    }

    /// Writes an address-size-wide register: 16 bits merge, 32 bits
    /// zero-extend.
    #[inline(always)]
    fn set_areg(&mut self, idx: usize, asize: u8, v: u64) {
        let slot = &mut self.regs.gpr[idx];
        *slot = match asize {
            2 => (*slot & !0xffff) | (v & 0xffff),
            4 => v & 0xffff_ffff,
            _ => v,
        };
    }

    /// Moves rSI or rDI by `delta` bytes within the address size.
    #[inline(always)]
    fn advance(&mut self, idx: usize, asize: u8, delta: u64) {
        let v = self.areg(idx, asize).wrapping_add(delta);
        self.set_areg(idx, asize, v);
    }
}

/// Executes one element of `s` and moves rSI/rDI (not rCX).
fn step(cpu: &mut Cpu, ctx: &mut Ctx, s: &StrOp) -> Result<(), Fault> {
    let size = s.size;
    let m = size_mask(size);
    let delta = if cpu.regs.flag(Rflags::DF) { u64::from(size).wrapping_neg() } else { u64::from(size) };
    let si = cpu.areg(RSI, s.asize);
    let di = cpu.areg(RDI, s.asize);
    match s.kind {
        Kind::Movs => {
            let v = cpu.read_mem(ctx, s.src_seg, si, size)?;
            cpu.write_mem(ctx, sreg::ES, di, size, v)?;
            cpu.advance(RSI, s.asize, delta);
            cpu.advance(RDI, s.asize, delta);
        }
        Kind::Cmps => {
            let a = cpu.read_mem(ctx, s.src_seg, si, size)?;
            let b = cpu.read_mem(ctx, sreg::ES, di, size)?;
            cpu.regs.set_lazy(FlagOp::Sub, size, a, b, a.wrapping_sub(b) & m);
            cpu.advance(RSI, s.asize, delta);
            cpu.advance(RDI, s.asize, delta);
        }
        Kind::Scas => {
            let a = cpu.regs.gpr[0] & m;
            let b = cpu.read_mem(ctx, sreg::ES, di, size)?;
            cpu.regs.set_lazy(FlagOp::Sub, size, a, b, a.wrapping_sub(b) & m);
            cpu.advance(RDI, s.asize, delta);
        }
        Kind::Lods => {
            let v = cpu.read_mem(ctx, s.src_seg, si, size)?;
            set_acc(cpu, size, v);
            cpu.advance(RSI, s.asize, delta);
        }
        Kind::Stos => {
            let v = cpu.regs.gpr[0] & m;
            cpu.write_mem(ctx, sreg::ES, di, size, v)?;
            cpu.advance(RDI, s.asize, delta);
        }
        Kind::Ins => {
            // Check the port and the destination before reading the port,
            // so a faulting INS has no side effect on the device.
            let port = cpu.regs.gpr[RDX] as u16;
            cpu.io_allowed(ctx, port, size)?;
            cpu.probe_write(ctx, sreg::ES, di, size)?;
            let v = cpu.port_in(ctx, port, size)?;
            cpu.write_mem(ctx, sreg::ES, di, size, v)?;
            cpu.advance(RDI, s.asize, delta);
        }
        Kind::Outs => {
            let port = cpu.regs.gpr[RDX] as u16;
            let v = cpu.read_mem(ctx, s.src_seg, si, size)?;
            cpu.port_out(ctx, port, size, v)?;
            cpu.advance(RSI, s.asize, delta);
        }
    }
    Ok(())
}

/// Writes AL/AX/EAX/RAX.
fn set_acc(cpu: &mut Cpu, size: u8, v: u64) {
    let slot = &mut cpu.regs.gpr[0];
    *slot = match size {
        1 => (*slot & !0xff) | (v & 0xff),
        2 => (*slot & !0xffff) | (v & 0xffff),
        4 => v & 0xffff_ffff,
        _ => v,
    };
}

/// The RAM offset of linear page `la` for `access`, through the TLB,
/// filling it if the translation succeeds and may be cached. `None` when
/// the page is not cacheable RAM for that access or the walk faults (the
/// slow path then reports the fault in the right order).
fn ram_page(cpu: &mut Cpu, ctx: &mut Ctx, la: u64, access: Access) -> Option<usize> {
    let user = cpu.cpl == 3;
    if let Some(off) = cpu.tlb.lookup(la, access, user) {
        return Some(off);
    }
    cpu.translate(ctx, la, access, user, false).ok()?;
    cpu.tlb.lookup(la, access, user)
}

/// The linear address of `n` consecutive `size`-byte elements at
/// `seg:off`, if they pass the segment checks and stay within one page
/// without wrapping; `n` is reduced to what fits in the page.
fn linear_run(cpu: &Cpu, seg: usize, off: u64, size: u8, asize: u8, n: &mut u64, write: bool) -> Option<u64> {
    let sz = u64::from(size);
    // Offsets must not wrap within the address size.
    let room = (u128::from(size_mask(asize) - off) + 1) / u128::from(sz);
    *n = (*n).min(room.min(u128::from(u64::MAX)) as u64);
    let la = cpu.seg_linear(seg, off, size, write).ok()?;
    *n = (*n).min((0x1000 - (la & 0xfff)) / sz);
    if *n == 0 {
        return None;
    }
    let last = cpu.seg_linear(seg, off + (*n - 1) * sz, size, write).ok()?;
    (last == la + (*n - 1) * sz).then_some(la)
}

/// One fast-path run of REP MOVS/STOS (DF = 0) of at most `count`
/// elements and `budget` bytes. Returns the elements done; `None` means
/// "use the element-by-element path for the next one".
fn fast_run(cpu: &mut Cpu, ctx: &mut Ctx, s: &StrOp, count: u64, budget: u64) -> Option<u64> {
    let sz = u64::from(s.size);
    let mut n = count.min(budget / sz);
    let movs = s.kind == Kind::Movs;
    let si = cpu.areg(RSI, s.asize);
    let di = cpu.areg(RDI, s.asize);
    // Each call may shorten the run; a prefix of a valid run is valid, so
    // the source run checked first stays valid.
    let src_la = if movs { Some(linear_run(cpu, s.src_seg, si, s.size, s.asize, &mut n, false)?) } else { None };
    let dst_la = linear_run(cpu, sreg::ES, di, s.size, s.asize, &mut n, true)?;
    // Source first: a faulting source must be reported before anything
    // happens to the destination.
    let src_off = match src_la {
        Some(la) => Some(ram_page(cpu, ctx, la, Access::Read)?),
        None => None,
    };
    let dst_off = ram_page(cpu, ctx, dst_la, Access::Write)?;
    let len = (n * sz) as usize;
    let e = s.size as usize;
    let ram = ctx.mem.ram_mut();
    let dst_end = dst_off.checked_add(len).filter(|&end| end <= ram.len())?;
    match src_off {
        Some(src) => {
            let src_end = src.checked_add(len).filter(|&end| end <= ram.len())?;
            if dst_off > src && dst_off < src_end {
                // Forward overlap: element order is visible (the classic
                // pattern-replicating copy), so copy element by element.
                for i in (0..len).step_by(e) {
                    ram.copy_within(src + i..src + i + e, dst_off + i);
                }
            } else {
                ram.copy_within(src..src_end, dst_off);
            }
        }
        None => {
            let dst = &mut ram[dst_off..dst_end];
            let v = cpu.regs.gpr[0];
            if e == 1 {
                dst.fill(v as u8);
            } else {
                let bytes = v.to_le_bytes();
                for chunk in dst.chunks_exact_mut(e) {
                    chunk.copy_from_slice(&bytes[..e]);
                }
            }
        }
    }
    let bytes = n * sz;
    if movs {
        cpu.advance(RSI, s.asize, bytes);
    }
    cpu.advance(RDI, s.asize, bytes);
    cpu.set_areg(RCX, s.asize, count - n);
    Some(n)
}

fn string_op(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, kind: Kind) -> Result<(), Fault> {
    let s = StrOp::new(insn, kind);
    if s.rep == Rep::None {
        return step(cpu, ctx, &s);
    }
    let single = cpu.needs_single_step();
    let limit = if single { 1 } else { CHUNK_ITERS };
    let fast = !single && matches!(kind, Kind::Movs | Kind::Stos) && !cpu.regs.flag(Rflags::DF);
    let mut iters = 0;
    let mut bytes = 0;
    loop {
        let count = cpu.areg(RCX, s.asize);
        if count == 0 {
            return Ok(());
        }
        if iters >= limit || bytes >= CHUNK_BYTES {
            // Resume at this instruction after the run loop had a look at
            // interrupts and the budget.
            cpu.next_rip = insn.ip();
            cpu.events |= events::IRQ | events::STOP;
            return Ok(());
        }
        if fast {
            if let Some(n) = fast_run(cpu, ctx, &s, count, CHUNK_BYTES - bytes) {
                bytes += n * u64::from(s.size);
                continue;
            }
        }
        step(cpu, ctx, &s)?;
        cpu.set_areg(RCX, s.asize, count - 1);
        iters += 1;
        let stop = match s.rep {
            Rep::WhileEqual => !cpu.regs.zf(),
            Rep::WhileNotEqual => cpu.regs.zf(),
            _ => false,
        };
        if stop {
            return Ok(());
        }
    }
}

macro_rules! string_handlers {
    ($($name:ident => $kind:expr),* $(,)?) => {
        $(
            fn $name(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
                string_op(cpu, ctx, insn, $kind)
            }
        )*
    };
}

string_handlers! {
    movs => Kind::Movs,
    cmps => Kind::Cmps,
    scas => Kind::Scas,
    lods => Kind::Lods,
    stos => Kind::Stos,
    ins => Kind::Ins,
    outs => Kind::Outs,
}

/// Handler for a string mnemonic. `MOVSD`/`CMPSD` with XMM operands are
/// SSE instructions and are left to [`super::sse`].
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let string_form = (0..insn.op_count()).any(|i| {
        matches!(
            insn.op_kind(i),
            OpKind::MemorySegSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegRSI
                | OpKind::MemoryESDI
                | OpKind::MemoryESEDI
                | OpKind::MemoryESRDI
        )
    });
    if !string_form {
        return None;
    }
    let h: crate::exec::Handler = match m {
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsd | Mnemonic::Movsq => movs,
        Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsd | Mnemonic::Cmpsq => cmps,
        Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq => scas,
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => lods,
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => stos,
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => ins,
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => outs,
        _ => return None,
    };
    // String instructions never accept LOCK (SDM vol. 2, "LOCK").
    if insn.has_lock_prefix() {
        return Some(crate::exec::bits::lock_ud);
    }
    Some(h)
}
