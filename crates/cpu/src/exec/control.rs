//! Near control transfers: JMP, Jcc, JrCXZ, LOOPcc, CALL, RET (SDM vol. 2,
//! "JMP", "Jcc", "LOOP/LOOPcc", "CALL", "RET"; vol. 1, 6.3 "Calling
//! Procedures Using CALL and RET"). Far forms and software interrupts are
//! in [`super::system`] since they load segments.

use crate::exec::mov::cc_of;
use crate::fault::Fault;
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, OpKind};

/// Operand size of a near branch in bytes.
#[inline(always)]
fn branch_size(insn: &Instruction) -> u8 {
    match insn.op0_kind() {
        OpKind::NearBranch16 => 2,
        OpKind::NearBranch32 => 4,
        OpKind::NearBranch64 => 8,
        _ => Cpu::osize(insn),
    }
}

fn jmp_rel(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    cpu.branch(insn.near_branch_target(), branch_size(insn))
}

fn jmp_ind(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let t = cpu.read_op(ctx, insn, 0)?;
    cpu.branch(t, branch_size(insn))
}

fn jcc(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.regs.cond(cc_of(insn)) {
        cpu.branch(insn.near_branch_target(), branch_size(insn))?;
    }
    Ok(())
}

/// The count register of LOOP/JrCXZ: its width is the address size.
fn count_reg(insn: &Instruction) -> u8 {
    match insn.mnemonic() {
        Mnemonic::Jcxz => 2,
        Mnemonic::Jecxz => 4,
        Mnemonic::Jrcxz => 8,
        _ => {
            // LOOP uses the address size; iced encodes it in the code.
            use iced_x86::Code;
            match insn.code() {
                Code::Loop_rel8_16_CX
                | Code::Loop_rel8_32_CX
                | Code::Loope_rel8_16_CX
                | Code::Loope_rel8_32_CX
                | Code::Loopne_rel8_16_CX
                | Code::Loopne_rel8_32_CX => 2,
                Code::Loop_rel8_16_ECX
                | Code::Loop_rel8_32_ECX
                | Code::Loop_rel8_64_ECX
                | Code::Loope_rel8_16_ECX
                | Code::Loope_rel8_32_ECX
                | Code::Loope_rel8_64_ECX
                | Code::Loopne_rel8_16_ECX
                | Code::Loopne_rel8_32_ECX
                | Code::Loopne_rel8_64_ECX => 4,
                _ => 8,
            }
        }
    }
}

fn jrcxz(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let m = crate::flags::size_mask(count_reg(insn));
    if cpu.regs.gpr[1] & m == 0 {
        cpu.branch(insn.near_branch_target(), branch_size(insn))?;
    }
    Ok(())
}

fn loop_(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let m = crate::flags::size_mask(count_reg(insn));
    let c = cpu.regs.gpr[1].wrapping_sub(1) & m;
    let take = c != 0
        && match insn.mnemonic() {
            Mnemonic::Loope => cpu.regs.zf(),
            Mnemonic::Loopne => !cpu.regs.zf(),
            _ => true,
        };
    if take {
        cpu.branch(insn.near_branch_target(), branch_size(insn))?;
    }
    cpu.regs.gpr[1] = (cpu.regs.gpr[1] & !m) | c;
    Ok(())
}

fn call_rel(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = branch_size(insn);
    let ret = cpu.next_rip;
    cpu.branch(insn.near_branch_target(), size)?;
    cpu.push(ctx, size, ret)
}

fn call_ind(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = branch_size(insn);
    let t = cpu.read_op(ctx, insn, 0)?;
    let ret = cpu.next_rip;
    cpu.branch(t, size)?;
    cpu.push(ctx, size, ret)
}

fn ret(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = match insn.code() {
        iced_x86::Code::Retnw | iced_x86::Code::Retnw_imm16 => 2,
        iced_x86::Code::Retnd | iced_x86::Code::Retnd_imm16 => 4,
        _ => 8,
    };
    let t = cpu.peek(ctx, 0, size)?;
    cpu.branch(t, size)?;
    let extra = if insn.op_count() > 0 { insn.immediate16() as i64 } else { 0 };
    cpu.adjust_rsp(size as i64 + extra);
    Ok(())
}

/// Handler for a near control-transfer mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let near = matches!(insn.op0_kind(), OpKind::NearBranch16 | OpKind::NearBranch32 | OpKind::NearBranch64);
    let indirect = matches!(insn.op0_kind(), OpKind::Register | OpKind::Memory);
    Some(match m {
        Mnemonic::Jmp if near => jmp_rel,
        Mnemonic::Jmp if indirect && !insn.is_jmp_far_indirect() => jmp_ind,
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
        | Mnemonic::Jg => jcc,
        Mnemonic::Jcxz | Mnemonic::Jecxz | Mnemonic::Jrcxz => jrcxz,
        Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne => loop_,
        Mnemonic::Call if near => call_rel,
        Mnemonic::Call if indirect && !insn.is_call_far_indirect() => call_ind,
        Mnemonic::Ret => ret,
        _ => return None,
    })
}
