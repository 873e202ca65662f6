//! Pre-resolved handlers for the instruction forms that dominate compiled
//! code: ALU register/register and register/immediate, MOV between
//! registers, immediates and simple memory operands, INC/DEC, Jcc and JMP.
//!
//! At decode time their operands are resolved into [`Decoded`]'s compact
//! fields (register numbers, operand size, immediate, a simple memory
//! operand), so executing them is a few loads and stores instead of a walk
//! through iced's operand accessors. Operand size is a const generic, so
//! each size is its own straight-line function. Everything else goes
//! through [`call_generic`], which hands the full iced instruction to the
//! family handler chosen by [`super::select`].

use crate::decode::Decoded;
use crate::exec::mov::{is_cmovcc, is_setcc};
use crate::exec::FastHandler;
use crate::fault::Fault;
use crate::flags::{size_mask, FlagOp};
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// Executes an instruction through its family's generic handler.
pub fn call_generic(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    (d.generic)(cpu, ctx, &d.insn)
}

/// ALU operation codes for the const-generic handlers.
mod op {
    pub const ADD: u8 = 0;
    pub const SUB: u8 = 1;
    pub const AND: u8 = 2;
    pub const OR: u8 = 3;
    pub const XOR: u8 = 4;
    pub const CMP: u8 = 5;
    pub const TEST: u8 = 6;
}

#[inline(always)]
fn alu<const OP: u8, const S: u8>(cpu: &mut Cpu, a: u64, b: u64) -> u64 {
    let m = size_mask(S);
    let (a, b) = (a & m, b & m);
    let (r, fop) = match OP {
        op::ADD => (a.wrapping_add(b) & m, FlagOp::Add),
        op::SUB | op::CMP => (a.wrapping_sub(b) & m, FlagOp::Sub),
        op::AND | op::TEST => (a & b, FlagOp::Logic),
        op::OR => (a | b, FlagOp::Logic),
        _ => (a ^ b, FlagOp::Logic),
    };
    cpu.regs.set_lazy(fop, S, a, b, r);
    r
}

/// Writes a GPR with x86 width semantics (no high-byte registers here).
#[inline(always)]
fn put<const S: u8>(cpu: &mut Cpu, idx: u8, v: u64) {
    let slot = &mut cpu.regs.gpr[(idx & 15) as usize];
    *slot = match S {
        8 => v,
        4 => v & 0xffff_ffff,
        _ => (*slot & !size_mask(S)) | (v & size_mask(S)),
    };
}

#[inline(always)]
fn get(cpu: &Cpu, idx: u8) -> u64 {
    cpu.regs.gpr[(idx & 15) as usize]
}

fn alu_rr<const OP: u8, const S: u8>(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let r = alu::<OP, S>(cpu, get(cpu, d.r0), get(cpu, d.r1));
    if OP != op::CMP && OP != op::TEST {
        put::<S>(cpu, d.r0, r);
    }
    Ok(())
}

fn alu_ri<const OP: u8, const S: u8>(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let r = alu::<OP, S>(cpu, get(cpu, d.r0), d.imm);
    if OP != op::CMP && OP != op::TEST {
        put::<S>(cpu, d.r0, r);
    }
    Ok(())
}

fn incdec_r<const DEC: bool, const S: u8>(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let m = size_mask(S);
    let cf = cpu.regs.cf();
    let a = get(cpu, d.r0) & m;
    let r = if DEC { a.wrapping_sub(1) } else { a.wrapping_add(1) } & m;
    put::<S>(cpu, d.r0, r);
    cpu.regs.set_lazy_c(if DEC { FlagOp::Dec } else { FlagOp::Inc }, S, a, 1, r, cf);
    Ok(())
}

fn mov_rr<const S: u8>(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let v = get(cpu, d.r1);
    put::<S>(cpu, d.r0, v);
    Ok(())
}

fn mov_ri<const S: u8>(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    put::<S>(cpu, d.r0, d.imm);
    Ok(())
}

/// Effective address of the compact memory operand.
#[inline(always)]
fn ea(cpu: &Cpu, d: &Decoded) -> u64 {
    let mut a = d.imm;
    if d.mbase != NONE {
        a = a.wrapping_add(get(cpu, d.mbase));
    }
    if d.mindex != NONE {
        a = a.wrapping_add(get(cpu, d.mindex) << d.mscale);
    }
    a & d.amask
}

fn mov_rm<const S: u8>(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let off = ea(cpu, d);
    let v = cpu.read_mem(ctx, d.mseg as usize, off, S)?;
    put::<S>(cpu, d.r0, v);
    Ok(())
}

fn mov_mr<const S: u8>(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let off = ea(cpu, d);
    let v = get(cpu, d.r1);
    cpu.write_mem(ctx, d.mseg as usize, off, S, v)
}

/// Jcc whose target was found canonical at decode time (64-bit code):
/// a taken branch is a store.
fn jcc64<const CC: u8>(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    if cpu.regs.cond(CC) {
        cpu.next_rip = d.imm;
    }
    Ok(())
}

/// Jcc in 16/32-bit code: the CS limit is checked when taken.
fn jcc_limit<const CC: u8>(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    if cpu.regs.cond(CC) {
        cpu.branch(d.imm, d.size)?;
    }
    Ok(())
}

fn jmp64(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    cpu.next_rip = d.imm;
    Ok(())
}

fn jmp_limit(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    cpu.branch(d.imm, d.size)
}

/// Canonical in the 48-bit sense, hence also under LA57.
fn canonical48(a: u64) -> bool {
    (((a << 16) as i64) >> 16) as u64 == a
}

macro_rules! by_cc {
    ($f:ident, $cc:expr $(, $extra:expr)?) => {
        match $cc {
            0 => $f::<0 $(, $extra)?>,
            1 => $f::<1 $(, $extra)?>,
            2 => $f::<2 $(, $extra)?>,
            3 => $f::<3 $(, $extra)?>,
            4 => $f::<4 $(, $extra)?>,
            5 => $f::<5 $(, $extra)?>,
            6 => $f::<6 $(, $extra)?>,
            7 => $f::<7 $(, $extra)?>,
            8 => $f::<8 $(, $extra)?>,
            9 => $f::<9 $(, $extra)?>,
            10 => $f::<10 $(, $extra)?>,
            11 => $f::<11 $(, $extra)?>,
            12 => $f::<12 $(, $extra)?>,
            13 => $f::<13 $(, $extra)?>,
            14 => $f::<14 $(, $extra)?>,
            _ => $f::<15 $(, $extra)?>,
        }
    };
}

/// Writes a GPR of runtime width `size` (1, 2, 4, 8; no high-byte form).
#[inline(always)]
fn put_dyn(cpu: &mut Cpu, idx: u8, size: u8, v: u64) {
    match size {
        8 => put::<8>(cpu, idx, v),
        4 => put::<4>(cpu, idx, v),
        2 => put::<2>(cpu, idx, v),
        _ => put::<1>(cpu, idx, v),
    }
}

/// The shift operations in the compact form's `r1`.
const SHIFT_OPS: [super::shift::ShiftOp; 7] = {
    use super::shift::ShiftOp::*;
    [Shl, Shr, Sar, Rol, Ror, Rcl, Rcr]
};

/// Shift or rotate of a register by an immediate (`imm`) or by CL
/// (`mindex` = 1): the flag rules are the shift family's own.
fn shift_r(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let count = if d.mindex == 1 { cpu.regs.gpr[1] as u32 & 0xff } else { d.imm as u32 };
    let a = get(cpu, d.r0);
    let cf = cpu.regs.cf();
    let (r, mask, set) = super::shift::shift(SHIFT_OPS[(d.r1 % 7) as usize], d.size, a, count, cf);
    if mask != 0 {
        super::shift::update_flags(cpu, mask, set);
    }
    put_dyn(cpu, d.r0, d.size, r);
    Ok(())
}

/// MOVZX/MOVSX/MOVSXD register from register: `mscale` holds the source
/// size, `mseg` 1 for sign extension.
fn movx_rr(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let v = ext(get(cpu, d.r1), d.mscale, d.mseg == 1);
    put_dyn(cpu, d.r0, d.size, v);
    Ok(())
}

/// MOVZX/MOVSX/MOVSXD register from memory: the source size is `r1`,
/// `target` 1 for sign extension.
fn movx_rm(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let off = ea(cpu, d);
    let v = cpu.read_mem(ctx, d.mseg as usize, off, d.r1)?;
    put_dyn(cpu, d.r0, d.size, ext(v, d.r1, d.target == 1));
    Ok(())
}

#[inline(always)]
fn ext(v: u64, from: u8, signed: bool) -> u64 {
    let v = v & size_mask(from);
    if signed {
        let sh = 64 - 8 * u32::from(from);
        (((v << sh) as i64) >> sh) as u64
    } else {
        v
    }
}

/// LEA with a compact memory operand.
fn lea(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let v = ea(cpu, d);
    put_dyn(cpu, d.r0, d.size, v);
    Ok(())
}

/// PUSH of a 64-bit register in 64-bit mode.
fn push64(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let v = get(cpu, d.r0);
    let rsp = cpu.regs.gpr[4].wrapping_sub(8);
    cpu.write_mem(ctx, x86::seg::sreg::SS, rsp, 8, v)?;
    cpu.regs.gpr[4] = rsp;
    Ok(())
}

/// CALL rel32 in 64-bit code, its target found canonical at decode
/// time: the return address is pushed, then the branch taken.
fn call64(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let rsp = cpu.regs.gpr[4].wrapping_sub(8);
    cpu.write_mem(ctx, x86::seg::sreg::SS, rsp, 8, d.next_ip)?;
    cpu.regs.gpr[4] = rsp;
    cpu.next_rip = d.imm;
    Ok(())
}

/// RET without an immediate in 64-bit code: the popped target must be
/// canonical (#GP(0) otherwise, with RSP unchanged).
fn ret64(cpu: &mut Cpu, ctx: &mut Ctx, _: &Decoded) -> Result<(), Fault> {
    let rsp = cpu.regs.gpr[4];
    let t = cpu.read_mem(ctx, x86::seg::sreg::SS, rsp, 8)?;
    cpu.branch(t, 8)?;
    cpu.regs.gpr[4] = rsp.wrapping_add(8);
    Ok(())
}

/// POP of a 64-bit register in 64-bit mode (POP RSP loads the popped value).
fn pop64(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let rsp = cpu.regs.gpr[4];
    let v = cpu.read_mem(ctx, x86::seg::sreg::SS, rsp, 8)?;
    cpu.regs.gpr[4] = rsp.wrapping_add(8);
    put::<8>(cpu, d.r0, v);
    Ok(())
}

/// CMOVcc register from register. The source is read whether or not the
/// condition holds, and a 32-bit destination is zero-extended either way.
fn cmov_rr<const CC: u8, const S: u8>(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let v = if cpu.regs.cond(CC) { get(cpu, d.r1) } else { get(cpu, d.r0) };
    put::<S>(cpu, d.r0, v);
    Ok(())
}

/// CMOVcc register from a compact memory operand (the load happens, and
/// may fault, even when the condition is false).
fn cmov_rm<const CC: u8, const S: u8>(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let off = ea(cpu, d);
    let m = cpu.read_mem(ctx, d.mseg as usize, off, S)?;
    let v = if cpu.regs.cond(CC) { m } else { get(cpu, d.r0) };
    put::<S>(cpu, d.r0, v);
    Ok(())
}

/// SETcc of a low byte register.
fn setcc_r<const CC: u8>(cpu: &mut Cpu, _: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    let v = u64::from(cpu.regs.cond(CC));
    put::<1>(cpu, d.r0, v);
    Ok(())
}

/// "No register" in the compact form.
pub const NONE: u8 = 0xff;

fn gpr_plain(r: Register) -> Option<(u8, u8)> {
    let g = super::gpr_ref(r)?;
    if g.high8 {
        return None;
    }
    Some((g.idx, g.size))
}

/// Fills the compact fields and picks a fast handler when the form has
/// one; `None` means the generic path.
pub fn select(insn: &Instruction, d: &mut Decoded) -> bool {
    let m = insn.mnemonic();
    let k0 = insn.op0_kind();
    let k1 = if insn.op_count() > 1 { insn.op1_kind() } else { OpKind::Register };
    if insn.has_lock_prefix() || insn.has_rep_prefix() || insn.has_repne_prefix() {
        return false;
    }
    macro_rules! by_size {
        ($f:ident, $s:expr $(, $c:expr)*) => {
            match $s {
                8 => $f::<$($c,)* 8>,
                4 => $f::<$($c,)* 4>,
                2 => $f::<$($c,)* 2>,
                _ => $f::<$($c,)* 1>,
            }
        };
    }
    let imm_kind = matches!(
        k1,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    );
    let alu_op = match m {
        Mnemonic::Add => Some(op::ADD),
        Mnemonic::Sub => Some(op::SUB),
        Mnemonic::And => Some(op::AND),
        Mnemonic::Or => Some(op::OR),
        Mnemonic::Xor => Some(op::XOR),
        Mnemonic::Cmp => Some(op::CMP),
        Mnemonic::Test => Some(op::TEST),
        _ => None,
    };
    if let Some(o) = alu_op {
        if k0 != OpKind::Register {
            return false;
        }
        let Some((r0, s)) = gpr_plain(insn.op0_register()) else {
            return false;
        };
        d.r0 = r0;
        d.size = s;
        if k1 == OpKind::Register {
            let Some((r1, _)) = gpr_plain(insn.op1_register()) else {
                return false;
            };
            d.r1 = r1;
            d.exec = match o {
                op::ADD => by_size!(alu_rr, s, { op::ADD }),
                op::SUB => by_size!(alu_rr, s, { op::SUB }),
                op::AND => by_size!(alu_rr, s, { op::AND }),
                op::OR => by_size!(alu_rr, s, { op::OR }),
                op::XOR => by_size!(alu_rr, s, { op::XOR }),
                op::CMP => by_size!(alu_rr, s, { op::CMP }),
                _ => by_size!(alu_rr, s, { op::TEST }),
            };
            return true;
        }
        if imm_kind {
            d.imm = insn.immediate(1);
            d.exec = match o {
                op::ADD => by_size!(alu_ri, s, { op::ADD }),
                op::SUB => by_size!(alu_ri, s, { op::SUB }),
                op::AND => by_size!(alu_ri, s, { op::AND }),
                op::OR => by_size!(alu_ri, s, { op::OR }),
                op::XOR => by_size!(alu_ri, s, { op::XOR }),
                op::CMP => by_size!(alu_ri, s, { op::CMP }),
                _ => by_size!(alu_ri, s, { op::TEST }),
            };
            return true;
        }
        return false;
    }
    match m {
        Mnemonic::Inc | Mnemonic::Dec if k0 == OpKind::Register => {
            let Some((r0, s)) = gpr_plain(insn.op0_register()) else {
                return false;
            };
            d.r0 = r0;
            d.exec = if m == Mnemonic::Dec { by_size!(incdec_r, s, true) } else { by_size!(incdec_r, s, false) };
            true
        }
        Mnemonic::Mov => {
            let special = |r: Register| r.is_segment_register() || r.is_cr() || r.is_dr() || r.is_tr();
            match (k0, k1) {
                (OpKind::Register, OpKind::Register) => {
                    if special(insn.op0_register()) || special(insn.op1_register()) {
                        return false;
                    }
                    let (Some((r0, s)), Some((r1, _))) =
                        (gpr_plain(insn.op0_register()), gpr_plain(insn.op1_register()))
                    else {
                        return false;
                    };
                    d.r0 = r0;
                    d.r1 = r1;
                    d.exec = by_size!(mov_rr, s);
                    true
                }
                (OpKind::Register, _) if imm_kind => {
                    let Some((r0, s)) = gpr_plain(insn.op0_register()) else {
                        return false;
                    };
                    d.r0 = r0;
                    d.imm = insn.immediate(1);
                    d.exec = by_size!(mov_ri, s);
                    true
                }
                (OpKind::Register, OpKind::Memory) | (OpKind::Memory, OpKind::Register) => {
                    let reg = if k0 == OpKind::Register { insn.op0_register() } else { insn.op1_register() };
                    if special(reg) {
                        return false;
                    }
                    let Some((r, s)) = gpr_plain(reg) else {
                        return false;
                    };
                    if !compact_mem(insn, d) {
                        return false;
                    }
                    if k0 == OpKind::Register {
                        d.r0 = r;
                        d.exec = by_size!(mov_rm, s);
                    } else {
                        d.r1 = r;
                        d.exec = by_size!(mov_mr, s);
                    }
                    true
                }
                _ => false,
            }
        }
        Mnemonic::Jo
        | Mnemonic::Jno
        | Mnemonic::Jb
        | Mnemonic::Jae
        | Mnemonic::Je
        | Mnemonic::Jne
        | Mnemonic::Jbe
        | Mnemonic::Ja
        | Mnemonic::Js
        | Mnemonic::Jns
        | Mnemonic::Jp
        | Mnemonic::Jnp
        | Mnemonic::Jl
        | Mnemonic::Jge
        | Mnemonic::Jle
        | Mnemonic::Jg => {
            let cc = super::mov::cc_of(insn);
            d.imm = insn.near_branch_target();
            d.size = branch_size(k0);
            d.exec = if k0 == OpKind::NearBranch64 && canonical48(d.imm) {
                by_cc!(jcc64, cc)
            } else {
                by_cc!(jcc_limit, cc)
            };
            true
        }
        Mnemonic::Jmp if matches!(k0, OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64) => {
            d.imm = insn.near_branch_target();
            d.size = branch_size(k0);
            d.exec = if k0 == OpKind::NearBranch64 && canonical48(d.imm) { jmp64 } else { jmp_limit };
            true
        }
        Mnemonic::Call if k0 == OpKind::NearBranch64 && canonical48(insn.near_branch_target()) => {
            d.imm = insn.near_branch_target();
            d.exec = call64;
            true
        }
        Mnemonic::Ret if insn.code() == iced_x86::Code::Retnq => {
            d.exec = ret64;
            true
        }
        Mnemonic::Shl
        | Mnemonic::Sal
        | Mnemonic::Shr
        | Mnemonic::Sar
        | Mnemonic::Rol
        | Mnemonic::Ror
        | Mnemonic::Rcl
        | Mnemonic::Rcr
            if k0 == OpKind::Register =>
        {
            let Some((r0, s)) = gpr_plain(insn.op0_register()) else { return false };
            let op = match m {
                Mnemonic::Shl | Mnemonic::Sal => 0,
                Mnemonic::Shr => 1,
                Mnemonic::Sar => 2,
                Mnemonic::Rol => 3,
                Mnemonic::Ror => 4,
                Mnemonic::Rcl => 5,
                _ => 6,
            };
            d.r0 = r0;
            d.r1 = op;
            d.size = s;
            match insn.op1_kind() {
                OpKind::Immediate8 | OpKind::Immediate8_2nd => d.imm = u64::from(insn.immediate8()),
                OpKind::Register if insn.op1_register() == Register::CL => d.mindex = 1,
                _ => return false,
            }
            d.exec = shift_r;
            true
        }
        Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd if k0 == OpKind::Register => {
            let Some((r0, s)) = gpr_plain(insn.op0_register()) else { return false };
            let signed = m != Mnemonic::Movzx;
            d.r0 = r0;
            d.size = s;
            match k1 {
                OpKind::Register => {
                    let Some((r1, from)) = gpr_plain(insn.op1_register()) else { return false };
                    d.r1 = r1;
                    d.mscale = from;
                    d.mseg = u8::from(signed);
                    d.exec = movx_rr;
                    true
                }
                OpKind::Memory => {
                    let from = insn.memory_size().size() as u8;
                    if !compact_mem(insn, d) || !matches!(from, 1 | 2 | 4) {
                        return false;
                    }
                    d.r1 = from;
                    d.target = u64::from(signed);
                    d.exec = movx_rm;
                    true
                }
                _ => false,
            }
        }
        _ if is_cmovcc(m) && k0 == OpKind::Register => {
            let Some((r0, s)) = gpr_plain(insn.op0_register()) else { return false };
            let cc = super::mov::cc_of(insn);
            d.r0 = r0;
            macro_rules! pick_cc_size {
                ($f:ident) => {
                    match s {
                        8 => by_cc!($f, cc, 8),
                        4 => by_cc!($f, cc, 4),
                        _ => by_cc!($f, cc, 2),
                    }
                };
            }
            match k1 {
                OpKind::Register => {
                    let Some((r1, _)) = gpr_plain(insn.op1_register()) else { return false };
                    d.r1 = r1;
                    d.exec = pick_cc_size!(cmov_rr);
                    true
                }
                OpKind::Memory if compact_mem(insn, d) => {
                    d.exec = pick_cc_size!(cmov_rm);
                    true
                }
                _ => false,
            }
        }
        _ if is_setcc(m) && k0 == OpKind::Register => {
            let Some((r0, 1)) = gpr_plain(insn.op0_register()) else { return false };
            d.r0 = r0;
            d.exec = by_cc!(setcc_r, super::mov::cc_of(insn));
            true
        }
        Mnemonic::Lea if k0 == OpKind::Register && k1 == OpKind::Memory => {
            let Some((r0, s)) = gpr_plain(insn.op0_register()) else { return false };
            if !compact_mem(insn, d) {
                return false;
            }
            d.r0 = r0;
            d.size = s;
            d.exec = lea;
            true
        }
        Mnemonic::Push | Mnemonic::Pop
            if k0 == OpKind::Register
                && insn.code_size() == iced_x86::CodeSize::Code64
                && insn.op0_register().size() == 8 =>
        {
            let Some((r0, _)) = gpr_plain(insn.op0_register()) else { return false };
            d.r0 = r0;
            d.exec = if m == Mnemonic::Push { push64 } else { pop64 };
            true
        }
        _ => false,
    }
}

fn branch_size(k: OpKind) -> u8 {
    match k {
        OpKind::NearBranch16 => 2,
        OpKind::NearBranch32 => 4,
        _ => 8,
    }
}

/// Resolves a memory operand into the compact form: base, index, scale,
/// displacement (in `imm`), segment and address-size mask. RIP-relative
/// operands are absolute already.
fn compact_mem(insn: &Instruction, d: &mut Decoded) -> bool {
    let base = insn.memory_base();
    let index = insn.memory_index();
    d.mseg = super::sreg_index(insn.memory_segment()) as u8;
    d.imm = insn.memory_displacement64();
    d.mbase = NONE;
    d.mindex = NONE;
    d.amask = u64::MAX;
    if base == Register::RIP || base == Register::EIP {
        return true;
    }
    let mut asize = 0;
    if base != Register::None {
        let Some(g) = super::gpr_ref(base) else {
            return false;
        };
        d.mbase = g.idx;
        asize = g.size;
    }
    if index != Register::None {
        let Some(g) = super::gpr_ref(index) else {
            return false;
        };
        d.mindex = g.idx;
        d.mscale = insn.memory_index_scale().trailing_zeros() as u8;
        asize = g.size;
    }
    d.amask = match asize {
        0 => u64::MAX,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    };
    true
}

/// A register-register ALU form fused with the Jcc after it: both halves
/// are monomorphized together, so the condition is evaluated on flags the
/// compiler just computed. Counts as two retired instructions.
fn fused_rr<const OP: u8, const S: u8, const CC: u8>(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    alu_rr::<OP, S>(cpu, ctx, d)?;
    cpu.icount += 1;
    cpu.next_rip = if cpu.regs.cond(CC) { d.target } else { d.next2 };
    Ok(())
}

/// Register-immediate ALU form fused with a Jcc.
fn fused_ri<const OP: u8, const S: u8, const CC: u8>(cpu: &mut Cpu, ctx: &mut Ctx, d: &Decoded) -> Result<(), Fault> {
    alu_ri::<OP, S>(cpu, ctx, d)?;
    cpu.icount += 1;
    cpu.next_rip = if cpu.regs.cond(CC) { d.target } else { d.next2 };
    Ok(())
}

/// INC/DEC of a register fused with a Jcc.
fn fused_incdec<const DEC: bool, const S: u8, const CC: u8>(
    cpu: &mut Cpu,
    ctx: &mut Ctx,
    d: &Decoded,
) -> Result<(), Fault> {
    incdec_r::<DEC, S>(cpu, ctx, d)?;
    cpu.icount += 1;
    cpu.next_rip = if cpu.regs.cond(CC) { d.target } else { d.next2 };
    Ok(())
}

/// Fuses `prev` (already decoded) with the Jcc `jcc` that follows it when
/// `prev` is a register-only ALU form of 32 or 64 bits (it cannot fault,
/// so the pair is as restartable as the Jcc alone) and the Jcc's target
/// was validated at decode time. Returns whether it fused.
pub fn fuse(prev: &mut Decoded, jcc: &Instruction) -> bool {
    if !jcc.is_jcc_short_or_near() || jcc.op0_kind() != OpKind::NearBranch64 {
        return false;
    }
    let target = jcc.near_branch_target();
    if !canonical48(target) || !prev.fast || prev.insn.op0_kind() != OpKind::Register {
        return false;
    }
    let s = prev.insn.op0_register().size();
    if s != 4 && s != 8 {
        return false;
    }
    let rr = prev.insn.op_count() == 2 && prev.insn.op1_kind() == OpKind::Register;
    let cc = super::mov::cc_of(jcc);
    macro_rules! pick {
        ($f:ident, $first:expr) => {
            match (s, cc) {
                (8, 0) => $f::<{ $first }, 8, 0>,
                (8, 1) => $f::<{ $first }, 8, 1>,
                (8, 2) => $f::<{ $first }, 8, 2>,
                (8, 3) => $f::<{ $first }, 8, 3>,
                (8, 4) => $f::<{ $first }, 8, 4>,
                (8, 5) => $f::<{ $first }, 8, 5>,
                (8, 6) => $f::<{ $first }, 8, 6>,
                (8, 7) => $f::<{ $first }, 8, 7>,
                (8, 8) => $f::<{ $first }, 8, 8>,
                (8, 9) => $f::<{ $first }, 8, 9>,
                (8, 10) => $f::<{ $first }, 8, 10>,
                (8, 11) => $f::<{ $first }, 8, 11>,
                (8, 12) => $f::<{ $first }, 8, 12>,
                (8, 13) => $f::<{ $first }, 8, 13>,
                (8, 14) => $f::<{ $first }, 8, 14>,
                (8, _) => $f::<{ $first }, 8, 15>,
                (_, 0) => $f::<{ $first }, 4, 0>,
                (_, 1) => $f::<{ $first }, 4, 1>,
                (_, 2) => $f::<{ $first }, 4, 2>,
                (_, 3) => $f::<{ $first }, 4, 3>,
                (_, 4) => $f::<{ $first }, 4, 4>,
                (_, 5) => $f::<{ $first }, 4, 5>,
                (_, 6) => $f::<{ $first }, 4, 6>,
                (_, 7) => $f::<{ $first }, 4, 7>,
                (_, 8) => $f::<{ $first }, 4, 8>,
                (_, 9) => $f::<{ $first }, 4, 9>,
                (_, 10) => $f::<{ $first }, 4, 10>,
                (_, 11) => $f::<{ $first }, 4, 11>,
                (_, 12) => $f::<{ $first }, 4, 12>,
                (_, 13) => $f::<{ $first }, 4, 13>,
                (_, 14) => $f::<{ $first }, 4, 14>,
                (_, _) => $f::<{ $first }, 4, 15>,
            }
        };
    }
    let exec: FastHandler = match (prev.insn.mnemonic(), rr) {
        (Mnemonic::Cmp, true) => pick!(fused_rr, op::CMP),
        (Mnemonic::Cmp, false) => pick!(fused_ri, op::CMP),
        (Mnemonic::Test, true) => pick!(fused_rr, op::TEST),
        (Mnemonic::Test, false) => pick!(fused_ri, op::TEST),
        (Mnemonic::Sub, true) => pick!(fused_rr, op::SUB),
        (Mnemonic::Sub, false) => pick!(fused_ri, op::SUB),
        (Mnemonic::Add, true) => pick!(fused_rr, op::ADD),
        (Mnemonic::Add, false) => pick!(fused_ri, op::ADD),
        (Mnemonic::And, true) => pick!(fused_rr, op::AND),
        (Mnemonic::And, false) => pick!(fused_ri, op::AND),
        (Mnemonic::Dec, _) => pick!(fused_incdec, true),
        (Mnemonic::Inc, _) => pick!(fused_incdec, false),
        _ => return false,
    };
    prev.exec = exec;
    prev.target = target;
    prev.next2 = jcc.next_ip();
    true
}
