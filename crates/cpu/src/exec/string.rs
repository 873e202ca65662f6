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
//! instruction. A handler call does a bounded amount of work,
//! [`CHUNK_UNITS`] units: one per iteration, or one per 8 bytes moved on
//! the fast path (fast-string hardware moves several bytes per cycle). If
//! the count is not exhausted it leaves RIP at the instruction and ends the
//! block, so the run loop can deliver interrupts before the next chunk.
//! The units are charged to the instruction count (beyond the one the run
//! loop counts), so the budget and virtual time advance with the work
//! done: a REP with a huge count cannot run 4096 times over its budget.
//! With RFLAGS.TF set, each iteration is one step (the SDM's single-step
//! trap after every iteration).
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

/// Work per handler call: iterations of the element-by-element path, or
/// 8-byte units of the fast path.
pub const CHUNK_UNITS: u64 = 4096;
/// Bytes per work unit of the fast path.
const FAST_UNIT: u64 = 8;

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

/// An address-size-wide register (rSI, rDI, rCX).
#[inline(always)]
fn areg(cpu: &Cpu, idx: usize, asize: u8) -> u64 {
    cpu.regs.gpr[idx] & size_mask(asize)
}

/// Writes an address-size-wide register: 16 bits merge, 32 bits
/// zero-extend.
#[inline(always)]
fn set_areg(cpu: &mut Cpu, idx: usize, asize: u8, v: u64) {
    let slot = &mut cpu.regs.gpr[idx];
    *slot = match asize {
        2 => (*slot & !0xffff) | (v & 0xffff),
        4 => v & 0xffff_ffff,
        _ => v,
    };
}

/// Moves rSI or rDI by `delta` bytes within the address size.
#[inline(always)]
fn advance(cpu: &mut Cpu, idx: usize, asize: u8, delta: u64) {
    let v = areg(cpu, idx, asize).wrapping_add(delta);
    set_areg(cpu, idx, asize, v);
}

/// Executes one element of `s` and moves rSI/rDI (not rCX).
fn step(cpu: &mut Cpu, ctx: &mut Ctx, s: &StrOp) -> Result<(), Fault> {
    let size = s.size;
    let m = size_mask(size);
    let delta = if cpu.regs.flag(Rflags::DF) { u64::from(size).wrapping_neg() } else { u64::from(size) };
    let si = areg(cpu, RSI, s.asize);
    let di = areg(cpu, RDI, s.asize);
    match s.kind {
        Kind::Movs => {
            let v = cpu.read_mem(ctx, s.src_seg, si, size)?;
            cpu.write_mem(ctx, sreg::ES, di, size, v)?;
            advance(cpu, RSI, s.asize, delta);
            advance(cpu, RDI, s.asize, delta);
        }
        Kind::Cmps => {
            let a = cpu.read_mem(ctx, s.src_seg, si, size)?;
            let b = cpu.read_mem(ctx, sreg::ES, di, size)?;
            cpu.regs.set_lazy(FlagOp::Sub, size, a, b, a.wrapping_sub(b) & m);
            advance(cpu, RSI, s.asize, delta);
            advance(cpu, RDI, s.asize, delta);
        }
        Kind::Scas => {
            let a = cpu.regs.gpr[0] & m;
            let b = cpu.read_mem(ctx, sreg::ES, di, size)?;
            cpu.regs.set_lazy(FlagOp::Sub, size, a, b, a.wrapping_sub(b) & m);
            advance(cpu, RDI, s.asize, delta);
        }
        Kind::Lods => {
            let v = cpu.read_mem(ctx, s.src_seg, si, size)?;
            set_acc(cpu, size, v);
            advance(cpu, RSI, s.asize, delta);
        }
        Kind::Stos => {
            let v = cpu.regs.gpr[0] & m;
            cpu.write_mem(ctx, sreg::ES, di, size, v)?;
            advance(cpu, RDI, s.asize, delta);
        }
        Kind::Ins => {
            // Check the port and the destination before reading the port,
            // so a faulting INS has no side effect on the device.
            let port = cpu.regs.gpr[RDX] as u16;
            cpu.io_allowed(ctx, port, size)?;
            cpu.probe_write(ctx, sreg::ES, di, size)?;
            let v = cpu.port_in(ctx, port, size)?;
            cpu.write_mem(ctx, sreg::ES, di, size, v)?;
            advance(cpu, RDI, s.asize, delta);
        }
        Kind::Outs => {
            let port = cpu.regs.gpr[RDX] as u16;
            let v = cpu.read_mem(ctx, s.src_seg, si, size)?;
            cpu.port_out(ctx, port, size, v)?;
            advance(cpu, RSI, s.asize, delta);
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
    let si = areg(cpu, RSI, s.asize);
    let di = areg(cpu, RDI, s.asize);
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
        advance(cpu, RSI, s.asize, bytes);
    }
    advance(cpu, RDI, s.asize, bytes);
    set_areg(cpu, RCX, s.asize, count - n);
    Some(n)
}

/// Elements (DF = 0) that start before rSI or rDI reaches its next page
/// boundary, at least 1.
fn elements_left_in_page(cpu: &Cpu, s: &StrOp) -> u64 {
    let sz = u64::from(s.size);
    let rest = |off: u64| (0x1000 - (off & 0xfff)).div_ceil(sz);
    let mut k = rest(areg(cpu, RDI, s.asize));
    if s.kind == Kind::Movs {
        k = k.min(rest(areg(cpu, RSI, s.asize)));
    }
    k.max(1)
}

fn string_op(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, kind: Kind) -> Result<(), Fault> {
    let s = StrOp::new(insn, kind);
    if s.rep == Rep::None {
        return step(cpu, ctx, &s);
    }
    let single = cpu.needs_single_step();
    let limit = if single { 1 } else { CHUNK_UNITS };
    let fast = !single && matches!(kind, Kind::Movs | Kind::Stos) && !cpu.regs.flag(Rflags::DF);
    let mut units = 0;
    let mut slow_left = 0;
    let result = loop {
        let count = areg(cpu, RCX, s.asize);
        if count == 0 {
            break Ok(());
        }
        if units >= limit {
            // Resume at this instruction after the run loop had a look at
            // interrupts and the budget.
            cpu.next_rip = insn.ip();
            cpu.events |= events::IRQ | events::STOP;
            break Ok(());
        }
        if fast && slow_left == 0 {
            match fast_run(cpu, ctx, &s, count, (limit - units) * FAST_UNIT) {
                Some(n) => {
                    units += (n * u64::from(s.size)).div_ceil(FAST_UNIT);
                    continue;
                }
                // Not plain RAM (MMIO, decoded code, a fault to report, an
                // element across pages): finish these pages one element at
                // a time rather than retrying every element.
                None => slow_left = elements_left_in_page(cpu, &s),
            }
        }
        if let Err(f) = step(cpu, ctx, &s) {
            break Err(f);
        }
        set_areg(cpu, RCX, s.asize, count - 1);
        units += 1;
        slow_left = slow_left.saturating_sub(1);
        let stop = match s.rep {
            Rep::WhileEqual => !cpu.regs.zf(),
            Rep::WhileNotEqual => cpu.regs.zf(),
            _ => false,
        };
        if stop {
            break Ok(());
        }
    };
    // The run loop counts one instruction unless this one faults; the
    // rest of the completed work is charged here.
    cpu.icount += if result.is_ok() { units.saturating_sub(1) } else { units };
    result
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
}

fn ins(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.non_root {
        io_string_exit(cpu, ctx, &StrOp::new(insn, Kind::Ins))?;
    }
    string_op(cpu, ctx, insn, Kind::Ins)
}

fn outs(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.non_root {
        io_string_exit(cpu, ctx, &StrOp::new(insn, Kind::Outs))?;
    }
    string_op(cpu, ctx, insn, Kind::Outs)
}

/// INS and OUTS in VMX non-root operation (SDM vol. 3C, 26.1.3, I/O
/// instructions): the I/O-permission checks come first (26.1.1), then
/// the I/O bitmaps or "unconditional I/O exiting" decide, once for the
/// whole instruction whatever the count. The exit reports the string and
/// REP bits in the qualification, the linear address of the memory
/// operand (28.2.1, "Guest-linear address"), and the address size and,
/// for OUTS, the segment in the instruction information (28.2.5, table
/// for INS and OUTS; VmxCaps::turtles() advertises it).
#[cold]
fn io_string_exit(cpu: &mut Cpu, ctx: &mut Ctx, s: &StrOp) -> Result<(), Fault> {
    use vmx::exit::{IoAccess, IoSize};
    let port = cpu.regs.gpr[RDX] as u16;
    cpu.io_allowed(ctx, port, s.size)?;
    if !cpu.io_exits(ctx.mem, port, s.size) {
        return Ok(());
    }
    let is_in = s.kind == Kind::Ins;
    let (seg, off) = if is_in { (sreg::ES, areg(cpu, RDI, s.asize)) } else { (s.src_seg, areg(cpu, RSI, s.asize)) };
    let q = IoAccess {
        size: match s.size {
            1 => IoSize::Byte,
            2 => IoSize::Word,
            _ => IoSize::Dword,
        },
        is_in,
        string: true,
        rep: s.rep != Rep::None,
        immediate: false,
        port,
    };
    let mut e = crate::virt::PendingExit::instruction(vmx::ExitReason::IoInstruction, q.to_raw());
    e.guest_linear = Some(cpu.linear_unchecked(seg, off));
    let asize: u32 = match s.asize {
        2 => 0,
        4 => 1,
        _ => 2,
    };
    e.instruction_info = (asize << 7) | if is_in { 0 } else { (seg as u32) << 15 };
    cpu.vmx.pending = Some(e);
    Err(Fault::vm_exit())
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

#[cfg(test)]
mod tests {
    use crate::exec::shift::testkit::{assemble, run_to_fault, trap_all};
    use crate::exec::shift::{CF, PF, SF, STATUS, ZF};
    use crate::testutil::{Machine, CODE, DATA};
    use x86::{vector, Rflags};

    const RAX: usize = 0;
    const RCX: usize = 1;
    const RDX: usize = 2;
    const RSI: usize = 6;
    const RDI: usize = 7;
    const SRC: u64 = DATA;
    const DST: u64 = DATA + 0x1_0000;
    const DF: u64 = Rflags::DF.bits();

    fn machine(bits: u32, listing: &[(&[u8], &str)], regs: &[(usize, u64)], rflags: u64) -> Machine {
        let code = assemble(bits, listing);
        let mut m = match bits {
            16 => Machine::real16(&code),
            32 => Machine::prot32(&code),
            _ => Machine::long64(&code),
        };
        for &(i, v) in regs {
            m.cpu.regs.gpr[i] = v;
        }
        m.cpu.regs.set_rflags(rflags | 2);
        m
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i as u8).wrapping_mul(7).wrapping_add(seed)).collect()
    }

    fn read(m: &Machine, at: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        m.mem.read(at, &mut v).unwrap();
        v
    }

    #[test]
    fn movs_forward_and_backward() {
        let data = pattern(300, 1);
        // Forward bytes (the fast path).
        let mut m = machine(
            64,
            &[(&[0xf3, 0xa4], "rep movsb byte ptr [rdi], byte ptr [rsi]")],
            &[(RSI, SRC), (RDI, DST), (RCX, 300)],
            0,
        );
        m.mem.write(SRC, &data).unwrap();
        m.run_to_hlt();
        assert_eq!(read(&m, DST, 300), data);
        assert_eq!((m.gpr(RSI), m.gpr(RDI), m.gpr(RCX)), (SRC + 300, DST + 300, 0));
        // Backward dwords: rSI/rDI start at the last element.
        let mut m = machine(
            64,
            &[(&[0xf3, 0xa5], "rep movsd dword ptr [rdi], dword ptr [rsi]")],
            &[(RSI, SRC + 36), (RDI, DST + 36), (RCX, 10)],
            DF,
        );
        m.mem.write(SRC, &data[..40]).unwrap();
        m.run_to_hlt();
        assert_eq!(read(&m, DST, 40), &data[..40]);
        assert_eq!((m.gpr(RSI), m.gpr(RDI), m.gpr(RCX)), (SRC - 4, DST - 4, 0));
        // Without REP: one element, RCX untouched.
        let mut m = machine(
            64,
            &[(&[0x48, 0xa5], "movsq qword ptr [rdi], qword ptr [rsi]")],
            &[(RSI, SRC), (RDI, DST), (RCX, 7)],
            0,
        );
        m.mem.write(SRC, &data[..16]).unwrap();
        m.run_to_hlt();
        assert_eq!(read(&m, DST, 16), [&data[..8], &[0; 8]].concat());
        assert_eq!((m.gpr(RSI), m.gpr(RDI), m.gpr(RCX)), (SRC + 8, DST + 8, 7));
    }

    #[test]
    fn overlapping_forward_copy_replicates() {
        // The classic memset through MOVSB: each byte reads the one just
        // written.
        let mut m = machine(
            64,
            &[(&[0xf3, 0xa4], "rep movsb byte ptr [rdi], byte ptr [rsi]")],
            &[(RSI, SRC), (RDI, SRC + 1), (RCX, 100)],
            0,
        );
        m.mem.write(SRC, &pattern(101, 9)).unwrap();
        m.run_to_hlt();
        assert_eq!(read(&m, SRC, 101), vec![9; 101]);
        // Same with qwords at a distance of 3 bytes.
        let mut m = machine(
            64,
            &[(&[0xf3, 0x48, 0xa5], "rep movsq qword ptr [rdi], qword ptr [rsi]")],
            &[(RSI, SRC), (RDI, SRC + 3), (RCX, 4)],
            0,
        );
        let init = pattern(40, 1);
        m.mem.write(SRC, &init).unwrap();
        m.run_to_hlt();
        let mut want = init.clone();
        for i in 0..4 {
            let chunk: Vec<u8> = want[i * 8..i * 8 + 8].to_vec();
            want[3 + i * 8..11 + i * 8].copy_from_slice(&chunk);
        }
        assert_eq!(read(&m, SRC, 40), want);
    }

    #[test]
    fn large_copy_runs_in_restartable_chunks() {
        // 1 MiB + 24 bytes of qwords: several handler calls of at most
        // CHUNK_UNITS * 8 bytes, each leaving RIP at the instruction.
        let len = (1 << 20) + 24;
        let data = pattern(len, 3);
        let src = 0x10_0000;
        let dst = 0x28_0000;
        let mut m = machine(
            64,
            &[(&[0xf3, 0x48, 0xa5], "rep movsq qword ptr [rdi], qword ptr [rsi]")],
            &[(RSI, src), (RDI, dst), (RCX, len as u64 / 8)],
            0,
        );
        m.mem.write(src, &data).unwrap();
        m.run_to_hlt();
        assert_eq!(read(&m, dst, len), data);
        assert_eq!(m.gpr(RCX), 0);
        // One unit per 8 bytes, plus the HLT.
        assert_eq!(m.cpu.icount, len as u64 / 8 + 1);
    }

    #[test]
    fn stos_fills_both_directions() {
        let mut m = machine(
            64,
            &[(&[0xf3, 0xaa], "rep stosb byte ptr [rdi]")],
            &[(RAX, 0x1234_56ab), (RDI, DST), (RCX, 5000)],
            0,
        );
        m.run_to_hlt();
        assert_eq!(read(&m, DST, 5001), [vec![0xab; 5000], vec![0]].concat());
        assert_eq!(m.gpr(RDI), DST + 5000);
        let mut m = machine(
            64,
            &[(&[0xf3, 0x66, 0xab], "rep stosw word ptr [rdi]")],
            &[(RAX, 0xbeef), (RDI, DST + 6), (RCX, 4)],
            DF,
        );
        m.run_to_hlt();
        assert_eq!(read(&m, DST, 8), [0xef, 0xbe, 0xef, 0xbe, 0xef, 0xbe, 0xef, 0xbe]);
        assert_eq!(m.gpr(RDI), DST - 2);
        let mut m = machine(
            64,
            &[(&[0xf3, 0x48, 0xab], "rep stosq qword ptr [rdi]")],
            &[(RAX, 0x0102_0304_0506_0708), (RDI, DST + 4), (RCX, 3)],
            0,
        );
        m.run_to_hlt();
        for i in 0..3 {
            assert_eq!(m.mem.read_u64(DST + 4 + 8 * i).unwrap(), 0x0102_0304_0506_0708);
        }
    }

    #[test]
    fn compare_and_scan_stop_on_the_condition() {
        // REPE CMPSB: equal for 5 bytes, different at the 6th.
        let mut m = machine(
            64,
            &[(&[0xf3, 0xa6], "repe cmpsb byte ptr [rsi], byte ptr [rdi]")],
            &[(RSI, SRC), (RDI, DST), (RCX, 10)],
            0,
        );
        m.mem.write(SRC, b"hello world").unwrap();
        m.mem.write(DST, b"hellO world").unwrap();
        m.run_to_hlt();
        assert_eq!((m.gpr(RCX), m.gpr(RSI), m.gpr(RDI)), (5, SRC + 5, DST + 5));
        // 'o' - 'O' = 0x20: not zero, no borrow.
        assert_eq!(m.rflags() & STATUS, 0);
        // REPNE SCASB finds 'w' at index 6.
        let mut m = machine(
            64,
            &[(&[0xf2, 0xae], "repne scasb byte ptr [rdi]")],
            &[(RAX, b'w' as u64), (RDI, DST), (RCX, 100)],
            0,
        );
        m.mem.write(DST, b"hellO world").unwrap();
        m.run_to_hlt();
        assert_eq!((m.gpr(RCX), m.gpr(RDI)), (93, DST + 7));
        assert_eq!(m.rflags() & ZF, ZF);
        // REPE SCASD that runs out of count: ZF from the last compare.
        let mut m =
            machine(64, &[(&[0xf3, 0xaf], "repe scasd dword ptr [rdi]")], &[(RAX, 0), (RDI, DST + 0x100), (RCX, 4)], 0);
        m.run_to_hlt();
        assert_eq!((m.gpr(RCX), m.gpr(RDI)), (0, DST + 0x110));
        assert_eq!(m.rflags() & STATUS, ZF | PF);
        // SCASB below the accumulator: borrow and sign.
        let mut m = machine(64, &[(&[0xae], "scasb byte ptr [rdi]")], &[(RAX, 1), (RDI, DST)], 0);
        m.mem.write(DST, &[2]).unwrap();
        m.run_to_hlt();
        assert_eq!(m.rflags() & (CF | SF | ZF), CF | SF);
    }

    #[test]
    fn slow_path_restarts_between_chunks() {
        // 10000 equal bytes through REPE CMPSB: 4096-iteration chunks.
        let mut m = machine(
            64,
            &[(&[0xf3, 0xa6], "repe cmpsb byte ptr [rsi], byte ptr [rdi]")],
            &[(RSI, SRC), (RDI, DST), (RCX, 10_000)],
            0,
        );
        m.run_to_hlt();
        assert_eq!((m.gpr(RCX), m.gpr(RSI), m.gpr(RDI)), (0, SRC + 10_000, DST + 10_000));
        assert_eq!(m.rflags() & ZF, ZF);
        // One unit per iteration, plus the HLT.
        assert_eq!(m.cpu.icount, 10_000 + 1);
    }

    #[test]
    fn lods_loads_the_accumulator() {
        let mut m = machine(
            64,
            &[
                (&[0x66, 0xad], "lodsw word ptr [rsi]"),
                (&[0x48, 0x89, 0xc2], "mov rdx, rax"),
                (&[0xad], "lodsd dword ptr [rsi]"),
            ],
            &[(RAX, 0xffff_ffff_ffff_ffff), (RSI, SRC)],
            0,
        );
        m.mem.write_u64(SRC, 0x1111_2222_3333_4444).unwrap();
        m.run_to_hlt();
        assert_eq!(m.gpr(RDX), 0xffff_ffff_ffff_4444);
        // A 32-bit load zero-extends.
        assert_eq!(m.gpr(RAX), 0x2222_3333);
        assert_eq!(m.gpr(RSI), SRC + 6);
    }

    #[test]
    fn address_sizes() {
        // Real mode: SI and DI wrap at 64 KiB; the upper halves of ESI/EDI
        // are untouched.
        let mut m = machine(
            16,
            &[(&[0xf3, 0xa4], "rep movsb byte ptr [di], byte ptr [si]")],
            &[(RSI, 0x0001_fffe), (RDI, 0x0002_8000), (RCX, 0xabcd_0004)],
            0,
        );
        m.mem.write(0xfffe, &[1, 2]).unwrap();
        m.mem.write(0, &[3, 4]).unwrap();
        m.run_to_hlt();
        assert_eq!(read(&m, 0x8000, 4), [1, 2, 3, 4]);
        assert_eq!((m.gpr(RSI), m.gpr(RDI), m.gpr(RCX)), (0x0001_0002, 0x0002_8004, 0xabcd_0000));
        // 64-bit mode with a 0x67 prefix: ESI/EDI/ECX, zero-extended.
        let mut m = machine(
            64,
            &[(&[0x67, 0xf3, 0xa4], "rep movsb byte ptr [edi], byte ptr [esi]")],
            &[(RSI, 0xffff_0000_0000_0000 | SRC), (RDI, 0xffff_0000_0000_0000 | DST), (RCX, 0x1_0000_0002)],
            0,
        );
        m.mem.write(SRC, &[5, 6]).unwrap();
        m.run_to_hlt();
        assert_eq!(read(&m, DST, 2), [5, 6]);
        assert_eq!((m.gpr(RSI), m.gpr(RDI), m.gpr(RCX)), (SRC + 2, DST + 2, 0));
        // 32-bit protected mode with a 0x67 prefix: DI and CX.
        let mut m = machine(
            32,
            &[(&[0x67, 0xf3, 0xab], "rep stosd dword ptr [di]")],
            &[(RAX, 0xdead_beef), (RDI, 0x0005_fff8), (RCX, 0x0001_0003)],
            0,
        );
        m.run_to_hlt();
        assert_eq!(m.mem.read_u32(0xfff8).unwrap(), 0xdead_beef);
        assert_eq!(m.mem.read_u32(0xfffc).unwrap(), 0xdead_beef);
        assert_eq!(m.mem.read_u32(0).unwrap(), 0xdead_beef);
        assert_eq!((m.gpr(RDI), m.gpr(RCX)), (0x0005_0004, 0x0001_0000));
    }

    #[test]
    fn segment_override_applies_to_the_source_only() {
        // FS base moves the source; the destination stays ES (base 0).
        let mut m = machine(
            64,
            &[(&[0x64, 0xf3, 0xa4], "rep movsb byte ptr es:[rdi], byte ptr fs:[rsi]")],
            &[(RSI, 0x10), (RDI, DST), (RCX, 3)],
            0,
        );
        m.cpu.regs.seg[x86::seg::sreg::FS].base = SRC;
        m.mem.write(SRC + 0x10, &[7, 8, 9]).unwrap();
        m.run_to_hlt();
        assert_eq!(read(&m, DST, 3), [7, 8, 9]);
        // Protected mode: DS and ES bases differ; an ES override reads
        // through ES.
        for (prefix, text, want) in [
            (&[0xf3, 0xa4][..], "rep movsb byte ptr [edi], byte ptr [esi]", 0x11u8),
            (&[0x26, 0xf3, 0xa4][..], "rep movsb byte ptr es:[edi], byte ptr es:[esi]", 0x22),
        ] {
            let mut m = machine(32, &[(prefix, text)], &[(RSI, 0x100), (RDI, 0x200), (RCX, 1)], 0);
            m.cpu.regs.seg[x86::seg::sreg::DS].base = 0x3_0000;
            m.cpu.regs.seg[x86::seg::sreg::ES].base = 0x4_0000;
            m.mem.write(0x3_0100, &[0x11]).unwrap();
            m.mem.write(0x4_0100, &[0x22]).unwrap();
            m.run_to_hlt();
            assert_eq!(read(&m, 0x4_0200, 1), [want], "{text}");
        }
    }

    #[test]
    fn port_strings() {
        let mut m =
            machine(64, &[(&[0xf3, 0x6e], "rep outsb dx, byte ptr [rsi]")], &[(RSI, SRC), (RDX, 0x3f8), (RCX, 3)], 0);
        m.mem.write(SRC, b"abc").unwrap();
        m.run_to_hlt();
        assert_eq!(m.bus.out, vec![(0x3f8, b'a' as u32), (0x3f8, b'b' as u32), (0x3f8, b'c' as u32)]);
        assert_eq!((m.gpr(RSI), m.gpr(RCX)), (SRC + 3, 0));
        let mut m = machine(
            64,
            &[(&[0xf3, 0x66, 0x6d], "rep insw word ptr [rdi], dx")],
            &[(RDI, DST), (RDX, 0x60), (RCX, 2)],
            0,
        );
        m.run_to_hlt();
        assert_eq!(read(&m, DST, 6), [0xff, 0xff, 0xff, 0xff, 0, 0]);
        assert_eq!(m.gpr(RDI), DST + 4);
    }

    #[test]
    fn zero_count_touches_nothing() {
        // RSI points at nothing mapped; with RCX = 0 nothing is accessed.
        let mut m = machine(
            64,
            &[(&[0xf3, 0xa4], "rep movsb byte ptr [rdi], byte ptr [rsi]")],
            &[(RSI, 0x8000_0000_0000), (RDI, 0x8000_0000_0000), (RCX, 0)],
            CF,
        );
        m.run_to_hlt();
        assert_eq!(m.gpr(RSI), 0x8000_0000_0000);
        assert_eq!(m.rflags() & STATUS, CF);
    }

    #[test]
    fn fault_mid_way_keeps_completed_iterations() {
        // The identity map ends at 1 GiB: the 9th byte faults. The first
        // eight went to (non-RAM) addresses below it.
        let mut m = machine(
            64,
            &[(&[0xf3, 0xa4], "rep movsb byte ptr [rdi], byte ptr [rsi]")],
            &[(RSI, SRC), (RDI, 0x4000_0000 - 8), (RCX, 16)],
            0,
        );
        trap_all(&mut m, 64);
        let (f, rip) = run_to_fault(&mut m);
        assert_eq!((f.vector(), f.cr2(), rip), (vector::PF, Some(0x4000_0000), CODE));
        assert_eq!((m.gpr(RCX), m.gpr(RSI), m.gpr(RDI)), (8, SRC + 8, 0x4000_0000));
    }

    #[test]
    fn single_step_traps_after_each_iteration() {
        let mut m = machine(
            64,
            &[(&[0xf3, 0xaa], "rep stosb byte ptr [rdi]")],
            &[(RAX, 0x5a), (RDI, DST), (RCX, 3)],
            Rflags::TF.bits(),
        );
        trap_all(&mut m, 64);
        let (f, rip) = run_to_fault(&mut m);
        assert_eq!((f.vector(), rip), (vector::DB, CODE));
        assert_eq!((m.gpr(RCX), m.gpr(RDI)), (2, DST + 1));
        assert_eq!(read(&m, DST, 2), [0x5a, 0]);
    }

    #[test]
    fn copying_over_decoded_code_is_seen() {
        // call f ; rep movsb (patch f) ; call f ; hlt
        // f (at CODE+0x40): mov eax, 1 ; ret   -- patched to mov eax, 2
        let mut code = vec![
            0xe8, 0x3b, 0x00, 0x00, 0x00, // call CODE+0x40
            0xf3, 0xa4, // rep movsb
            0xe8, 0x34, 0x00, 0x00, 0x00, // call CODE+0x40
            0xf4, // hlt
        ];
        code.resize(0x40, 0x90);
        code.extend_from_slice(&[0xb8, 0x01, 0x00, 0x00, 0x00, 0xc3]);
        let mut m = Machine::long64(&code);
        m.mem.write(SRC, &[0xb8, 0x02, 0x00, 0x00, 0x00, 0xc3]).unwrap();
        m.cpu.regs.gpr[RSI] = SRC;
        m.cpu.regs.gpr[RDI] = CODE + 0x40;
        m.cpu.regs.gpr[RCX] = 6;
        m.run_to_hlt();
        assert_eq!(m.gpr(RAX), 2);
    }

    #[test]
    fn sse_movsd_is_not_a_string_instruction() {
        let mut d = iced_x86::Decoder::new(64, &[0xf2, 0x0f, 0x10, 0xc1], iced_x86::DecoderOptions::NONE);
        let insn = d.decode();
        assert!(super::select(insn.mnemonic(), &insn).is_none());
    }
}
