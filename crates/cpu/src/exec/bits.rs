//! Bit operations and atomics: BT, BTS, BTR, BTC, BSF, BSR, LZCNT, TZCNT,
//! POPCNT, the rest of BMI1 (ANDN, BEXTR, BLSI, BLSMSK, BLSR, which the
//! CPUID model advertises with TZCNT), CMPXCHG, CMPXCHG8B, CMPXCHG16B,
//! XADD (SDM vol. 2, each instruction's page; "LOCK—Assert LOCK# Signal
//! Prefix").
//!
//! Bit tests with a register bit offset and a memory operand address
//! beyond the operand: the offset is signed and selects the operand-sized
//! word at `ea + size * (offset >> log2(bits))`, wrapped to the address
//! size (SDM vol. 2, "BT", and vol. 1, 3.4.1.1 "Bit Field").
//!
//! This CPU is single-threaded and deterministic, so LOCK-prefixed forms
//! are the plain forms. LOCK is accepted only by BTS/BTR/BTC, CMPXCHG,
//! CMPXCHG8B/16B and XADD with a memory destination; anywhere else it is
//! #UD ([`lock_ud`]).
//!
//! Undefined flags reproduce the processor the executor was
//! differentially tested on (AMD Zen, `tests/host_flags.rs`):
//! - BT*: only CF changes.
//! - BSF/BSR: CF, OF, SF and AF are cleared, PF is the parity of the
//!   index written; with a zero source ZF = PF = 1 and the destination is
//!   not written at all (a 32-bit destination keeps its upper half).
//! - LZCNT/TZCNT: OF is unchanged, SF, AF and PF are cleared.
//! - ANDN, BEXTR, BLSI, BLSMSK, BLSR: see [`bmi1_flags`].

use crate::exec::shift::{bit_if, szp, update_flags, AF, CF, OF, PF, SF, STATUS, ZF};
use crate::fault::Fault;
use crate::flags::{parity, size_mask, FlagOp};
use crate::state::Mode;
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// LOCK on an instruction or operand form that does not accept it.
pub(crate) fn lock_ud(_: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    Err(Fault::ud())
}

/// Address-size mask of the memory operand.
fn addr_mask(insn: &Instruction) -> u64 {
    let reg_size = |r: Register| if r == Register::None { 0 } else { r.size() };
    let size = match (reg_size(insn.memory_base()), reg_size(insn.memory_index())) {
        (0, 0) => insn.memory_displ_size() as usize,
        (0, s) | (s, _) => s,
    };
    match size {
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

/// Sign-extends a `size`-byte value to 64 bits.
#[inline(always)]
fn sext(size: u8, v: u64) -> i64 {
    let shift = 64 - 8 * u32::from(size);
    ((v << shift) as i64) >> shift
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BitOp {
    Test,
    Set,
    Reset,
    Complement,
}

/// The word holding the bit and the bit's index in it: with a memory
/// operand and a register offset the offset moves the address.
fn bit_target(cpu: &Cpu, insn: &Instruction, size: u8) -> (u64, u32) {
    let bits = 8 * u32::from(size);
    let raw = if insn.op1_kind() == OpKind::Register { cpu.reg(insn.op1_register()) } else { insn.immediate(1) };
    let bit = (raw as u32) & (bits - 1);
    if insn.op0_kind() != OpKind::Memory || insn.op1_kind() != OpKind::Register {
        // Register operand, or an immediate offset taken modulo the size.
        return (cpu.ea(insn), bit);
    }
    let words = sext(size, raw) >> bits.trailing_zeros();
    let disp = (words as u64).wrapping_mul(u64::from(size));
    (cpu.ea(insn).wrapping_add(disp) & addr_mask(insn), bit)
}

fn bt_any(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, op: BitOp) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let (off, bit) = bit_target(cpu, insn, size);
    let mask = 1u64 << bit;
    let apply = |v: u64| match op {
        BitOp::Test => v,
        BitOp::Set => v | mask,
        BitOp::Reset => v & !mask,
        BitOp::Complement => v ^ mask,
    };
    let old = if insn.op0_kind() == OpKind::Memory {
        let seg = cpu.mem_seg(insn);
        if op == BitOp::Test {
            cpu.read_mem(ctx, seg, off, size)?
        } else {
            let la = cpu.probe_write(ctx, seg, off, size)?;
            let v = cpu.read_lin(ctx, la, size)?;
            cpu.write_lin(ctx, la, size, apply(v))?;
            v
        }
    } else {
        let r = insn.op0_register();
        let v = cpu.reg(r);
        if op != BitOp::Test {
            cpu.set_reg(r, apply(v));
        }
        v
    };
    update_flags(cpu, CF, bit_if(old & mask != 0, CF));
    Ok(())
}

fn bt(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    bt_any(cpu, ctx, insn, BitOp::Test)
}

fn bts(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    bt_any(cpu, ctx, insn, BitOp::Set)
}

fn btr(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    bt_any(cpu, ctx, insn, BitOp::Reset)
}

fn btc(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    bt_any(cpu, ctx, insn, BitOp::Complement)
}

/// BSF (`forward`) or BSR.
fn bit_scan(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, forward: bool) -> Result<(), Fault> {
    let d = insn.op0_register();
    let size = d.size() as u8;
    let src = cpu.read_op(ctx, insn, 1)? & size_mask(size);
    if src == 0 {
        cpu.regs.set_status_flags(ZF | PF);
        return Ok(());
    }
    let idx = if forward { src.trailing_zeros() } else { 63 - src.leading_zeros() };
    cpu.set_reg(d, u64::from(idx));
    cpu.regs.set_status_flags(bit_if(parity(u64::from(idx)), PF));
    Ok(())
}

fn bsf(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    bit_scan(cpu, ctx, insn, true)
}

fn bsr(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    bit_scan(cpu, ctx, insn, false)
}

/// LZCNT (`leading`) or TZCNT; without the feature the encoding is BSR or
/// BSF with an ignored F3 prefix (SDM vol. 2, "LZCNT", "TZCNT").
fn count_zeros(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, leading: bool) -> Result<(), Fault> {
    let f = cpu.cpuid.features();
    if !(if leading { f.lzcnt } else { f.bmi1 }) {
        return bit_scan(cpu, ctx, insn, !leading);
    }
    let d = insn.op0_register();
    let size = d.size() as u8;
    let bits = 8 * u32::from(size);
    let src = cpu.read_op(ctx, insn, 1)? & size_mask(size);
    let n = if src == 0 {
        bits
    } else if leading {
        src.leading_zeros() - (64 - bits)
    } else {
        src.trailing_zeros()
    };
    cpu.set_reg(d, u64::from(n));
    update_flags(cpu, STATUS & !OF, bit_if(src == 0, CF) | bit_if(n == 0, ZF));
    Ok(())
}

fn lzcnt(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    count_zeros(cpu, ctx, insn, true)
}

fn tzcnt(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    count_zeros(cpu, ctx, insn, false)
}

/// POPCNT: ZF = (source == 0), the other status flags cleared.
fn popcnt(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if !cpu.cpuid.features().popcnt {
        return Err(Fault::ud());
    }
    let d = insn.op0_register();
    let src = cpu.read_op(ctx, insn, 1)? & size_mask(d.size() as u8);
    cpu.set_reg(d, u64::from(src.count_ones()));
    cpu.regs.set_status_flags(bit_if(src == 0, ZF));
    Ok(())
}

/// The accumulator of a `size`-byte operation.
fn accumulator(size: u8) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

/// CMPXCHG r/m, r: compare the accumulator with the destination; equal:
/// destination = source, else accumulator = destination. Flags as CMP.
/// A memory destination is always written (with its own value when the
/// comparison fails), so a read-only page faults either way; a register
/// destination is written only on success, so a failing 32-bit CMPXCHG
/// keeps its upper half (as the tested hardware does).
fn cmpxchg(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let m = size_mask(size);
    let acc_reg = accumulator(size);
    let src = cpu.reg(insn.op1_register());
    let compare = |cpu: &mut Cpu, dest: u64| {
        let acc = cpu.reg(acc_reg);
        cpu.regs.set_lazy(FlagOp::Sub, size, acc, dest, acc.wrapping_sub(dest) & m);
        acc == dest
    };
    if insn.op0_kind() == OpKind::Register {
        let d = insn.op0_register();
        let dest = cpu.reg(d);
        if compare(cpu, dest) {
            cpu.set_reg(d, src);
        } else {
            cpu.set_reg(acc_reg, dest);
        }
        return Ok(());
    }
    cpu.rmw(ctx, insn, |cpu, dest| {
        let dest = dest & m;
        if compare(cpu, dest) {
            src
        } else {
            cpu.set_reg(acc_reg, dest);
            dest
        }
    })
}

/// CMPXCHG8B m64 / CMPXCHG16B m128: compare rDX:rAX with the memory
/// operand; equal: ZF = 1 and memory = rCX:rBX, else ZF = 0 and rDX:rAX =
/// memory. Only ZF changes. Memory is written either way.
fn cmpxchg_wide(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let wide = insn.mnemonic() == Mnemonic::Cmpxchg16b;
    if wide && !cpu.cpuid.features().cx16 {
        return Err(Fault::ud());
    }
    let half: u8 = if wide { 8 } else { 4 };
    let m = size_mask(half);
    let seg = cpu.mem_seg(insn);
    let off = cpu.ea(insn);
    // Segment checks, then alignment, then paging.
    let la = cpu.seg_linear(seg, off, 2 * half, true)?;
    if wide && la & 15 != 0 {
        return Err(Fault::gp0());
    }
    cpu.probe_write(ctx, seg, off, 2 * half)?;
    let next = la.wrapping_add(u64::from(half));
    let (lo, hi) = if wide {
        (cpu.read_lin(ctx, la, 8)?, cpu.read_lin(ctx, next, 8)?)
    } else {
        let v = cpu.read_lin(ctx, la, 8)?;
        (v & m, v >> 32)
    };
    let g = cpu.regs.gpr;
    let equal = lo == g[0] & m && hi == g[2] & m;
    let (new_lo, new_hi) = if equal { (g[3] & m, g[1] & m) } else { (lo, hi) };
    if wide {
        cpu.write_lin(ctx, la, 8, new_lo)?;
        cpu.write_lin(ctx, next, 8, new_hi)?;
    } else {
        cpu.write_lin(ctx, la, 8, new_lo | (new_hi << 32))?;
    }
    if !equal {
        let (a, d) = if wide { (Register::RAX, Register::RDX) } else { (Register::EAX, Register::EDX) };
        cpu.set_reg(a, lo);
        cpu.set_reg(d, hi);
    }
    update_flags(cpu, ZF, bit_if(equal, ZF));
    Ok(())
}

/// XADD r/m, r: the register receives the old destination, the
/// destination the sum. Flags as ADD.
fn xadd(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let m = size_mask(size);
    let src_reg = insn.op1_register();
    let src = cpu.reg(src_reg);
    cpu.rmw(ctx, insn, |cpu, dest| {
        let dest = dest & m;
        let sum = dest.wrapping_add(src) & m;
        cpu.regs.set_lazy(FlagOp::Add, size, dest, src, sum);
        // The register gets the old value first; a register destination
        // is written last, so `xadd eax, eax` leaves the sum.
        cpu.set_reg(src_reg, dest);
        sum
    })
}

/// The status flags of a BMI1 instruction with result `r` from source
/// `src` (the r/m operand). The SDM defines ZF and SF from the result
/// (ZF clear for BLSMSK, SF undefined for BEXTR), CF per instruction
/// (clear for ANDN/BEXTR, `src == 0` for BLSMSK/BLSR, `src != 0` for BLSI)
/// and OF clear; AF and PF are undefined. The tested hardware (see the
/// module documentation) sets PF from the result, and AF is clear except
/// after BEXTR, which always sets it and clears SF.
pub fn bmi1_flags(m: Mnemonic, size: u8, src: u64, r: u64) -> u64 {
    let zs = szp(size, r);
    match m {
        Mnemonic::Blsi => zs | bit_if(src != 0, CF),
        Mnemonic::Blsmsk => (zs & !ZF) | bit_if(src == 0, CF),
        Mnemonic::Blsr => zs | bit_if(src == 0, CF),
        Mnemonic::Bextr => (zs & !SF) | AF,
        _ => zs,
    }
}

/// ANDN, BEXTR, BLSI, BLSMSK, BLSR (VEX-encoded; #UD without BMI1 and in
/// real and virtual-8086 mode, where VEX does not exist).
fn bmi1(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if !cpu.cpuid.features().bmi1 || matches!(cpu.mode, Mode::Real | Mode::Vm86) {
        return Err(Fault::ud());
    }
    let d = insn.op0_register();
    let size = d.size() as u8;
    let bits = 8 * u32::from(size);
    let m = size_mask(size);
    let mn = insn.mnemonic();
    let (src, r) = match mn {
        Mnemonic::Andn => {
            let src = cpu.read_op(ctx, insn, 2)? & m;
            (src, !cpu.reg(insn.op1_register()) & src & m)
        }
        Mnemonic::Bextr => {
            let src = cpu.read_op(ctx, insn, 1)? & m;
            let ctl = cpu.reg(insn.op2_register());
            let (start, len) = ((ctl & 0xff) as u32, ((ctl >> 8) & 0xff) as u32);
            let shifted = if start < bits { src >> start } else { 0 };
            let field = if len < 64 { (1u64 << len) - 1 } else { u64::MAX };
            (src, shifted & field)
        }
        _ => {
            let src = cpu.read_op(ctx, insn, 1)? & m;
            let r = match mn {
                Mnemonic::Blsi => src.wrapping_neg() & src,
                Mnemonic::Blsmsk => src.wrapping_sub(1) ^ src,
                _ => src.wrapping_sub(1) & src,
            };
            (src, r & m)
        }
    };
    cpu.set_reg(d, r);
    cpu.regs.set_status_flags(bmi1_flags(mn, size, src, r));
    Ok(())
}

/// Handler for a bit-operation or atomic mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let (h, lockable): (crate::exec::Handler, bool) = match m {
        Mnemonic::Bt => (bt, false),
        Mnemonic::Bts => (bts, true),
        Mnemonic::Btr => (btr, true),
        Mnemonic::Btc => (btc, true),
        Mnemonic::Bsf => (bsf, false),
        Mnemonic::Bsr => (bsr, false),
        Mnemonic::Lzcnt => (lzcnt, false),
        Mnemonic::Tzcnt => (tzcnt, false),
        Mnemonic::Popcnt => (popcnt, false),
        Mnemonic::Cmpxchg => (cmpxchg, true),
        Mnemonic::Cmpxchg8b | Mnemonic::Cmpxchg16b => (cmpxchg_wide, true),
        Mnemonic::Xadd => (xadd, true),
        Mnemonic::Andn | Mnemonic::Bextr | Mnemonic::Blsi | Mnemonic::Blsmsk | Mnemonic::Blsr => (bmi1, false),
        _ => return None,
    };
    if insn.has_lock_prefix() && !(lockable && insn.op0_kind() == OpKind::Memory) {
        return Some(lock_ud);
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use crate::cpuid::CpuidEntry;
    use crate::exec::shift::testkit::{assemble, long64, run_to_fault, trap_all};
    use crate::exec::shift::{AF, CF, OF, PF, SF, STATUS, ZF};
    use crate::testutil::{Machine, CODE, DATA};
    use x86::vector;

    const RAX: usize = 0;
    const RCX: usize = 1;
    const RDX: usize = 2;
    const RBX: usize = 3;
    const RDI: usize = 7;

    fn run(insn: (&[u8], &str), regs: &[(usize, u64)], flags: u64, mem: &[(u64, u64)]) -> Machine {
        let mut m = long64(&[insn], regs, flags);
        for &(a, v) in mem {
            m.mem.write_u64(a, v).unwrap();
        }
        m.run_to_hlt();
        m
    }

    fn check(insn: (&[u8], &str), regs: &[(usize, u64)], flags: u64, want: &[(usize, u64)], want_flags: u64) {
        let m = run(insn, regs, flags, &[]);
        for &(i, v) in want {
            assert_eq!(m.gpr(i), v, "{}: register {i}", insn.1);
        }
        assert_eq!(m.rflags() & STATUS, want_flags, "{}: flags", insn.1);
    }

    /// Runs raw bytes expecting one exception at CODE.
    fn fault(bytes: &[u8], setup: impl FnOnce(&mut Machine)) -> crate::Fault {
        let mut code = bytes.to_vec();
        code.push(0xf4);
        let mut m = Machine::long64(&code);
        m.cpu.regs.gpr[RDI] = DATA;
        setup(&mut m);
        trap_all(&mut m, 64);
        let (f, rip) = run_to_fault(&mut m);
        assert_eq!(rip, CODE);
        f
    }

    #[test]
    fn bit_tests_on_registers() {
        // Only CF changes; BT writes nothing.
        check(
            (&[0x0f, 0xa3, 0xc8], "bt eax, ecx"),
            &[(RAX, 0xffff_ffff_8000_0000), (RCX, 0x3f)],
            ZF | OF,
            &[(RAX, 0xffff_ffff_8000_0000)],
            ZF | OF | CF,
        );
        check((&[0x48, 0x0f, 0xab, 0xc8], "bts rax, rcx"), &[(RAX, 0), (RCX, 69)], CF, &[(RAX, 0x20)], 0);
        check(
            (&[0x66, 0x0f, 0xb3, 0xc8], "btr ax, cx"),
            &[(RAX, 0x1234_5678_ffff_ffff), (RCX, 0x11)],
            0,
            &[(RAX, 0x1234_5678_ffff_fffd)],
            CF,
        );
        check((&[0x0f, 0xba, 0xf8, 0x07], "btc eax, 7"), &[(RAX, 0xffff_ffff_0000_0080)], 0, &[(RAX, 0)], CF);
    }

    #[test]
    fn bit_strings_in_memory() {
        let base = DATA + 0x2000;
        // Offset -1 is bit 31 of the dword below the operand.
        let m = run(
            (&[0x0f, 0xa3, 0x0f], "bt dword ptr [rdi], ecx"),
            &[(RDI, base), (RCX, 0xffff_ffff)],
            0,
            &[(base - 8, 0x8000_0000_0000_0000)],
        );
        assert_eq!(m.rflags() & CF, CF);
        // Offset 130 is bit 2 of the qword 16 bytes up.
        let m = run((&[0x48, 0x0f, 0xab, 0x0f], "bts qword ptr [rdi], rcx"), &[(RDI, base), (RCX, 130)], CF, &[]);
        assert_eq!(m.mem.read_u64(base + 16).unwrap(), 4);
        assert_eq!(m.rflags() & CF, 0);
        // A 16-bit offset is sign-extended from CX: -32768 bits is 4 KiB
        // down; the upper bits of RCX do not count.
        let m = run(
            (&[0x66, 0x0f, 0xb3, 0x0f], "btr word ptr [rdi], cx"),
            &[(RDI, base), (RCX, 0x7fff_0000_0000_8000)],
            0,
            &[(base - 0x1000, 0xffff_0001)],
        );
        assert_eq!(m.mem.read_u64(base - 0x1000).unwrap(), 0xffff_0000);
        assert_eq!(m.rflags() & CF, CF);
        // An immediate offset is taken modulo the operand size.
        let m =
            run((&[0x0f, 0xba, 0x3f, 0x24], "btc dword ptr [rdi], 0x24"), &[(RDI, base)], 0, &[(base, 0x1_0000_0000)]);
        assert_eq!(m.mem.read_u64(base).unwrap(), 0x1_0000_0010);
        // The displaced address wraps at the address size: [edi] with
        // EDI = 4 and offset -64 is 0xfffffffc, not a 64-bit address.
        let f = fault(&[0x67, 0x0f, 0xa3, 0x0f], |m| {
            m.cpu.regs.gpr[RDI] = 4;
            m.cpu.regs.gpr[RCX] = (-64i64) as u64;
        });
        assert_eq!((f.vector(), f.cr2()), (vector::PF, Some(0xffff_fffc)));
    }

    #[test]
    fn bit_scans() {
        check((&[0x0f, 0xbc, 0xc1], "bsf eax, ecx"), &[(RCX, 0x100)], CF | OF | SF, &[(RAX, 8)], 0);
        check((&[0x48, 0x0f, 0xbd, 0xc1], "bsr rax, rcx"), &[(RCX, (1 << 63) | 1)], 0, &[(RAX, 63)], PF);
        // A zero source leaves the destination (all 64 bits) alone.
        check(
            (&[0x0f, 0xbc, 0xc1], "bsf eax, ecx"),
            &[(RAX, 0xdead_beef_dead_beef), (RCX, 0xffff_ffff_0000_0000)],
            CF | SF,
            &[(RAX, 0xdead_beef_dead_beef)],
            ZF | PF,
        );
        let m = run(
            (&[0x66, 0x0f, 0xbd, 0x07], "bsr ax, word ptr [rdi]"),
            &[(RDI, DATA), (RAX, 0xffff_ffff)],
            0,
            &[(DATA, 0x8000)],
        );
        assert_eq!(m.gpr(RAX), 0xffff_000f);
    }

    #[test]
    fn counts() {
        // OF survives LZCNT/TZCNT; SF/PF/AF clear.
        check((&[0xf3, 0x0f, 0xbd, 0xc1], "lzcnt eax, ecx"), &[(RCX, 0xffff)], OF | SF | PF | AF, &[(RAX, 16)], OF);
        check((&[0xf3, 0x0f, 0xbd, 0xc1], "lzcnt eax, ecx"), &[(RCX, 0)], 0, &[(RAX, 32)], CF);
        check((&[0xf3, 0x48, 0x0f, 0xbc, 0xc1], "tzcnt rax, rcx"), &[(RCX, 0)], 0, &[(RAX, 64)], CF);
        check((&[0xf3, 0x48, 0x0f, 0xbc, 0xc1], "tzcnt rax, rcx"), &[(RCX, 1)], 0, &[(RAX, 0)], ZF);
        check((&[0x66, 0xf3, 0x0f, 0xbd, 0xc1], "lzcnt ax, cx"), &[(RCX, 1)], 0, &[(RAX, 15)], 0);
        check((&[0xf3, 0x0f, 0xb8, 0xc1], "popcnt eax, ecx"), &[(RCX, 0xf0f0)], CF | OF, &[(RAX, 8)], 0);
        check((&[0xf3, 0x48, 0x0f, 0xb8, 0xc1], "popcnt rax, rcx"), &[(RCX, 0), (RAX, 9)], 0, &[(RAX, 0)], ZF);
    }

    #[test]
    fn counts_without_their_features() {
        // Without ABM, F3 0F BD is BSR.
        let code = assemble(64, &[(&[0xf3, 0x0f, 0xbd, 0xc1], "lzcnt eax, ecx")]);
        let mut m = Machine::long64(&code);
        let mut e = m.cpu.cpuid.raw(0x8000_0001, 0);
        e[2] &= !(1 << 5);
        m.cpu.cpuid.set(CpuidEntry { leaf: 0x8000_0001, subleaf: None, regs: e });
        m.cpu.regs.gpr[RCX] = 0xffff;
        m.run_to_hlt();
        assert_eq!(m.gpr(RAX), 15);
        // Without POPCNT: #UD.
        let f = fault(&[0xf3, 0x0f, 0xb8, 0xc1], |m| {
            let mut e = m.cpu.cpuid.raw(1, 0);
            e[2] &= !(1 << 23);
            m.cpu.cpuid.set(CpuidEntry { leaf: 1, subleaf: None, regs: e });
        });
        assert_eq!(f.vector(), vector::UD);
    }

    #[test]
    fn compare_exchange() {
        check(
            (&[0x0f, 0xb1, 0xd1], "cmpxchg ecx, edx"),
            &[(RAX, 0xffff_0000_0000_0005), (RCX, 5), (RDX, 9)],
            0,
            &[(RCX, 9), (RAX, 0xffff_0000_0000_0005)],
            ZF | PF,
        );
        // Failure: the accumulator is loaded (zero-extended), the register
        // destination is not written at all.
        check(
            (&[0x0f, 0xb1, 0xd1], "cmpxchg ecx, edx"),
            &[(RAX, 0xffff_ffff_0000_0005), (RCX, 0xaaaa_aaaa_0000_0007), (RDX, 9)],
            0,
            &[(RAX, 7), (RCX, 0xaaaa_aaaa_0000_0007)],
            CF | SF | AF,
        );
        let m = run(
            (&[0x0f, 0xb0, 0x0f], "cmpxchg byte ptr [rdi], cl"),
            &[(RDI, DATA), (RAX, 0x11), (RCX, 0x22)],
            0,
            &[(DATA, 0x3311)],
        );
        assert_eq!(m.mem.read_u64(DATA).unwrap(), 0x3322);
        assert_eq!(m.rflags() & ZF, ZF);
    }

    #[test]
    fn compare_exchange_8_and_16_bytes() {
        let insn8 = (&[0x0f, 0xc7, 0x0f][..], "cmpxchg8b qword ptr [rdi]");
        // Equal: ECX:EBX stored, only ZF changes.
        let regs = [(RDI, DATA), (RAX, 0x1111_2222), (RDX, 0x3333_4444), (RBX, 0x5555), (RCX, 0x6666)];
        let m = run(insn8, &regs, CF | OF, &[(DATA, 0x3333_4444_1111_2222)]);
        assert_eq!(m.mem.read_u64(DATA).unwrap(), 0x6666_0000_5555);
        assert_eq!(m.rflags() & STATUS, CF | OF | ZF);
        // Different: EDX:EAX loaded (zero-extending RDX/RAX).
        let regs = [(RDI, DATA), (RAX, u64::MAX), (RDX, u64::MAX)];
        let m = run(insn8, &regs, ZF, &[(DATA, 0x0102_0304_0506_0708)]);
        assert_eq!((m.gpr(RAX), m.gpr(RDX)), (0x0506_0708, 0x0102_0304));
        assert_eq!(m.rflags() & STATUS, 0);

        let insn16 = (&[0x48, 0x0f, 0xc7, 0x0f][..], "cmpxchg16b xmmword ptr [rdi]");
        let regs = [(RDI, DATA), (RAX, 1), (RDX, 2), (RBX, 3), (RCX, 4)];
        let m = run(insn16, &regs, 0, &[(DATA, 1), (DATA + 8, 2)]);
        assert_eq!((m.mem.read_u64(DATA).unwrap(), m.mem.read_u64(DATA + 8).unwrap()), (3, 4));
        assert_eq!(m.rflags() & ZF, ZF);
        let m = run(insn16, &regs, ZF, &[(DATA, 7), (DATA + 8, 8)]);
        assert_eq!((m.gpr(RAX), m.gpr(RDX)), (7, 8));
        assert_eq!(m.rflags() & ZF, 0);
        // Misaligned: #GP(0). Without CX16: #UD.
        let f = fault(&[0x48, 0x0f, 0xc7, 0x0f], |m| m.cpu.regs.gpr[RDI] = DATA + 8);
        assert_eq!((f.vector(), f.error_code()), (vector::GP, Some(0)));
        let f = fault(&[0x48, 0x0f, 0xc7, 0x0f], |m| {
            let mut e = m.cpu.cpuid.raw(1, 0);
            e[2] &= !(1 << 13);
            m.cpu.cpuid.set(CpuidEntry { leaf: 1, subleaf: None, regs: e });
        });
        assert_eq!(f.vector(), vector::UD);
    }

    #[test]
    fn exchange_and_add() {
        check((&[0x0f, 0xc1, 0xd1], "xadd ecx, edx"), &[(RCX, 1), (RDX, 2)], 0, &[(RCX, 3), (RDX, 1)], PF);
        // The destination is written last.
        check((&[0x0f, 0xc1, 0xc9], "xadd ecx, ecx"), &[(RCX, 3)], 0, &[(RCX, 6)], PF);
        let m = run(
            (&[0x48, 0x0f, 0xc1, 0x17], "xadd qword ptr [rdi], rdx"),
            &[(RDI, DATA), (RDX, u64::MAX)],
            0,
            &[(DATA, 5)],
        );
        assert_eq!((m.mem.read_u64(DATA).unwrap(), m.gpr(RDX)), (4, 5));
        assert_eq!(m.rflags() & STATUS, CF | AF);
    }

    #[test]
    fn bmi1_group() {
        check(
            (&[0xc4, 0xe2, 0x70, 0xf2, 0xc2], "andn eax, ecx, edx"),
            &[(RCX, 0xff00_ff00), (RDX, 0x0ff0_0ff0)],
            CF | OF,
            &[(RAX, 0x00f0_00f0)],
            PF,
        );
        // Start 4, length 8.
        check(
            (&[0xc4, 0xe2, 0x68, 0xf7, 0xc1], "bextr eax, ecx, edx"),
            &[(RCX, 0x1234_5678), (RDX, 0x0804)],
            0,
            &[(RAX, 0x67)],
            AF,
        );
        // A start beyond the operand extracts nothing.
        check(
            (&[0xc4, 0xe2, 0xe8, 0xf7, 0xc1], "bextr rax, rcx, rdx"),
            &[(RCX, u64::MAX), (RDX, 0xff40)],
            0,
            &[(RAX, 0)],
            ZF | PF | AF,
        );
        check((&[0xc4, 0xe2, 0x78, 0xf3, 0xd9], "blsi eax, ecx"), &[(RCX, 0x1_2340)], 0, &[(RAX, 0x40)], CF);
        check((&[0xc4, 0xe2, 0xf8, 0xf3, 0xd1], "blsmsk rax, rcx"), &[(RCX, 0)], ZF, &[(RAX, u64::MAX)], CF | SF | PF);
        let m = run(
            (&[0xc4, 0xe2, 0x78, 0xf3, 0x0f], "blsr eax, dword ptr [rdi]"),
            &[(RDI, DATA), (RAX, u64::MAX)],
            CF,
            &[(DATA, 8)],
        );
        assert_eq!(m.gpr(RAX), 0);
        assert_eq!(m.rflags() & STATUS, ZF | PF);
        // Without BMI1: #UD.
        let f = fault(&[0xc4, 0xe2, 0x70, 0xf2, 0xc2], |m| {
            let mut e = m.cpu.cpuid.raw(7, 0);
            e[1] &= !(1 << 3);
            m.cpu.cpuid.set(CpuidEntry { leaf: 7, subleaf: Some(0), regs: e });
        });
        assert_eq!(f.vector(), vector::UD);
        // No VEX in real mode.
        let mut m = Machine::real16(&[0xc4, 0xe2, 0x70, 0xf2, 0xc2, 0xf4]);
        trap_all(&mut m, 16);
        let (f, rip) = run_to_fault(&mut m);
        assert_eq!((f.vector(), rip), (vector::UD, 0));
    }

    #[test]
    fn lock_prefix_rules() {
        // Allowed with a memory destination.
        let m = run(
            (&[0xf0, 0x0f, 0xbb, 0x0f], "lock btc dword ptr [rdi], ecx"),
            &[(RDI, DATA), (RCX, 1)],
            0,
            &[(DATA, 0)],
        );
        assert_eq!(m.mem.read_u64(DATA).unwrap(), 2);
        // A register destination, or an instruction that never takes
        // LOCK: #UD.
        for bytes in [&[0xf0, 0x0f, 0xab, 0xc8][..], &[0xf0, 0x0f, 0xa3, 0x0f], &[0xf0, 0x0f, 0xbc, 0x07]] {
            assert_eq!(fault(bytes, |_| {}).vector(), vector::UD, "{bytes:02x?}");
        }
    }
}
