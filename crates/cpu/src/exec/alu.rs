//! Integer arithmetic and logic: ADD, ADC, SUB, SBB, CMP, AND, OR, XOR,
//! TEST, INC, DEC, NEG, NOT (SDM vol. 2, the instructions' pages; flags per
//! vol. 1, appendix A). Flags are recorded lazily ([`crate::flags`]).
//!
//! Register-register and register-immediate forms get their own handlers:
//! they are the bulk of compiled code and skip the operand-kind dispatch.

use crate::fault::Fault;
use crate::flags::{size_mask, FlagOp};
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, OpKind};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Bin {
    Add,
    Adc,
    Sub,
    Sbb,
    And,
    Or,
    Xor,
}

/// Computes a binary operation and records its flags.
#[inline(always)]
fn compute(cpu: &mut Cpu, op: Bin, size: u8, a: u64, b: u64) -> u64 {
    let m = size_mask(size);
    let (a, b) = (a & m, b & m);
    match op {
        Bin::Add => {
            let r = a.wrapping_add(b) & m;
            cpu.regs.set_lazy(FlagOp::Add, size, a, b, r);
            r
        }
        Bin::Sub => {
            let r = a.wrapping_sub(b) & m;
            cpu.regs.set_lazy(FlagOp::Sub, size, a, b, r);
            r
        }
        Bin::Adc => {
            let c = cpu.regs.cf();
            let r = a.wrapping_add(b).wrapping_add(c as u64) & m;
            cpu.regs.set_lazy_c(FlagOp::Adc, size, a, b, r, c);
            r
        }
        Bin::Sbb => {
            let c = cpu.regs.cf();
            let r = a.wrapping_sub(b).wrapping_sub(c as u64) & m;
            cpu.regs.set_lazy_c(FlagOp::Sbb, size, a, b, r, c);
            r
        }
        Bin::And | Bin::Or | Bin::Xor => {
            let r = match op {
                Bin::And => a & b,
                Bin::Or => a | b,
                _ => a ^ b,
            };
            cpu.regs.set_lazy(FlagOp::Logic, size, a, b, r);
            r
        }
    }
}

macro_rules! binop {
    ($generic:ident, $rr:ident, $ri:ident, $op:expr, $write:expr) => {
        fn $generic(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
            let size = Cpu::osize(insn);
            if insn.op0_kind() == OpKind::Memory && $write {
                let seg = cpu.mem_seg(insn);
                let off = cpu.ea(insn);
                let la = cpu.probe_write(ctx, seg, off, size)?;
                let a = cpu.read_lin(ctx, la, size)?;
                let b = cpu.read_op(ctx, insn, 1)?;
                let r = compute(cpu, $op, size, a, b);
                return cpu.write_lin(ctx, la, size, r);
            }
            let a = cpu.read_op(ctx, insn, 0)?;
            let b = cpu.read_op(ctx, insn, 1)?;
            let r = compute(cpu, $op, size, a, b);
            if $write {
                cpu.write_op(ctx, insn, 0, r)?;
            }
            Ok(())
        }
        fn $rr(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
            let d = insn.op0_register();
            let size = d.size() as u8;
            let r = compute(cpu, $op, size, cpu.reg(d), cpu.reg(insn.op1_register()));
            if $write {
                cpu.set_reg(d, r);
            }
            Ok(())
        }
        fn $ri(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
            let d = insn.op0_register();
            let size = d.size() as u8;
            let r = compute(cpu, $op, size, cpu.reg(d), insn.immediate(1));
            if $write {
                cpu.set_reg(d, r);
            }
            Ok(())
        }
    };
}

binop!(add, add_rr, add_ri, Bin::Add, true);
binop!(adc, adc_rr, adc_ri, Bin::Adc, true);
binop!(sub, sub_rr, sub_ri, Bin::Sub, true);
binop!(sbb, sbb_rr, sbb_ri, Bin::Sbb, true);
binop!(and, and_rr, and_ri, Bin::And, true);
binop!(or, or_rr, or_ri, Bin::Or, true);
binop!(xor, xor_rr, xor_ri, Bin::Xor, true);
binop!(cmp, cmp_rr, cmp_ri, Bin::Sub, false);
binop!(test, test_rr, test_ri, Bin::And, false);

/// INC/DEC keep CF (SDM vol. 2, "INC", "DEC").
fn incdec(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, dec: bool) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let m = size_mask(size);
    let cf = cpu.regs.cf();
    let (la, a) = if insn.op0_kind() == OpKind::Memory {
        let seg = cpu.mem_seg(insn);
        let off = cpu.ea(insn);
        let la = cpu.probe_write(ctx, seg, off, size)?;
        (Some(la), cpu.read_lin(ctx, la, size)?)
    } else {
        (None, cpu.reg(insn.op0_register()))
    };
    let r = if dec { a.wrapping_sub(1) } else { a.wrapping_add(1) } & m;
    let op = if dec { FlagOp::Dec } else { FlagOp::Inc };
    match la {
        Some(la) => cpu.write_lin(ctx, la, size, r)?,
        None => cpu.set_reg(insn.op0_register(), r),
    }
    cpu.regs.set_lazy_c(op, size, a & m, 1, r, cf);
    Ok(())
}

fn inc(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    incdec(cpu, ctx, insn, false)
}

fn dec(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    incdec(cpu, ctx, insn, true)
}

fn dec_r(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let d = insn.op0_register();
    let size = d.size() as u8;
    let m = size_mask(size);
    let cf = cpu.regs.cf();
    let a = cpu.reg(d);
    let r = a.wrapping_sub(1) & m;
    cpu.set_reg(d, r);
    cpu.regs.set_lazy_c(FlagOp::Dec, size, a, 1, r, cf);
    Ok(())
}

fn inc_r(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let d = insn.op0_register();
    let size = d.size() as u8;
    let m = size_mask(size);
    let cf = cpu.regs.cf();
    let a = cpu.reg(d);
    let r = a.wrapping_add(1) & m;
    cpu.set_reg(d, r);
    cpu.regs.set_lazy_c(FlagOp::Inc, size, a, 1, r, cf);
    Ok(())
}

/// NEG: 0 - x, CF = (x != 0).
fn neg(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    cpu.rmw(ctx, insn, |cpu, a| compute(cpu, Bin::Sub, size, 0, a))
}

/// NOT: no flags.
fn not(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let m = size_mask(Cpu::osize(insn));
    cpu.rmw(ctx, insn, |_, a| !a & m)
}

/// Handler for an ALU mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let rr = insn.op_count() == 2 && insn.op0_kind() == OpKind::Register && insn.op1_kind() == OpKind::Register;
    let ri = insn.op_count() == 2
        && insn.op0_kind() == OpKind::Register
        && matches!(
            insn.op1_kind(),
            OpKind::Immediate8
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32to64
        );
    macro_rules! pick {
        ($g:ident, $rr:ident, $ri:ident) => {
            Some(if rr {
                $rr
            } else if ri {
                $ri
            } else {
                $g
            })
        };
    }
    match m {
        Mnemonic::Add => pick!(add, add_rr, add_ri),
        Mnemonic::Adc => pick!(adc, adc_rr, adc_ri),
        Mnemonic::Sub => pick!(sub, sub_rr, sub_ri),
        Mnemonic::Sbb => pick!(sbb, sbb_rr, sbb_ri),
        Mnemonic::And => pick!(and, and_rr, and_ri),
        Mnemonic::Or => pick!(or, or_rr, or_ri),
        Mnemonic::Xor => pick!(xor, xor_rr, xor_ri),
        Mnemonic::Cmp => pick!(cmp, cmp_rr, cmp_ri),
        Mnemonic::Test => pick!(test, test_rr, test_ri),
        Mnemonic::Inc if insn.op0_kind() == OpKind::Register => Some(inc_r),
        Mnemonic::Dec if insn.op0_kind() == OpKind::Register => Some(dec_r),
        Mnemonic::Inc => Some(inc),
        Mnemonic::Dec => Some(dec),
        Mnemonic::Neg => Some(neg),
        Mnemonic::Not => Some(not),
        _ => None,
    }
}
