//! Stack instructions: PUSH, POP, PUSHA, POPA, ENTER, LEAVE (SDM vol. 2,
//! their pages; vol. 1, 6.2 "Stacks"). The push size comes from iced's
//! stack-pointer increment, which already folds in mode and prefixes.
//! PUSH/POP of segment registers and PUSHF/POPF are in [`super::system`].

use crate::fault::Fault;
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, OpKind};

#[inline(always)]
fn push_size(insn: &Instruction) -> u8 {
    (-insn.stack_pointer_increment()) as u8
}

fn push(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = push_size(insn);
    let v = cpu.read_op(ctx, insn, 0)?;
    cpu.push(ctx, size, v)
}

fn push_r(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let v = cpu.reg(insn.op0_register());
    cpu.push(ctx, push_size(insn), v)
}

fn pop_r(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = insn.stack_pointer_increment() as u8;
    let v = cpu.pop(ctx, size)?;
    cpu.set_reg(insn.op0_register(), v);
    Ok(())
}

fn pop_m(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    // The destination address is computed with RSP already incremented
    // (SDM vol. 2, "POP"); undo it if the store faults.
    let size = insn.stack_pointer_increment() as u8;
    let v = cpu.peek(ctx, 0, size)?;
    let saved = cpu.regs.gpr[4];
    cpu.adjust_rsp(size as i64);
    if let Err(f) = cpu.write_op(ctx, insn, 0, v) {
        cpu.regs.gpr[4] = saved;
        return Err(f);
    }
    Ok(())
}

fn pusha(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size: u8 = if insn.mnemonic() == Mnemonic::Pushad { 4 } else { 2 };
    let saved = cpu.regs.gpr[4];
    let regs = cpu.regs.gpr;
    for (i, v) in regs.iter().take(8).enumerate() {
        let v = if i == 4 { saved } else { *v };
        if let Err(f) = cpu.push(ctx, size, v) {
            cpu.regs.gpr[4] = saved;
            return Err(f);
        }
    }
    Ok(())
}

fn popa(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size: u8 = if insn.mnemonic() == Mnemonic::Popad { 4 } else { 2 };
    let mut vals = [0u64; 8];
    for (i, v) in vals.iter_mut().enumerate() {
        *v = cpu.peek(ctx, (i as u64) * size as u64, size)?;
    }
    for (i, v) in vals.iter().enumerate() {
        let r = 7 - i;
        if r == 4 {
            continue; // the saved SP is discarded
        }
        let slot = &mut cpu.regs.gpr[r];
        *slot = if size == 4 { *v } else { (*slot & !0xffff) | *v };
    }
    cpu.adjust_rsp(8 * size as i64);
    Ok(())
}

fn leave(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    // iced reports no stack-pointer increment for LEAVE (RSP is replaced,
    // not adjusted), so the pop size comes from the instruction's form.
    let size: u8 = match insn.code() {
        iced_x86::Code::Leavew => 2,
        iced_x86::Code::Leaved => 4,
        _ => 8,
    };
    let mask = cpu.rsp_mask();
    let saved = cpu.regs.gpr[4];
    cpu.regs.gpr[4] = (saved & !mask) | (cpu.regs.gpr[5] & mask);
    match cpu.pop(ctx, size) {
        Ok(v) => {
            cpu.set_reg(
                match size {
                    2 => iced_x86::Register::BP,
                    4 => iced_x86::Register::EBP,
                    _ => iced_x86::Register::RBP,
                },
                v,
            );
            Ok(())
        }
        Err(f) => {
            cpu.regs.gpr[4] = saved;
            Err(f)
        }
    }
}

fn enter(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    // SDM vol. 2, "ENTER": push rBP, copy level-1 frame pointers, push the
    // new frame pointer, then allocate.
    let size: u8 = match insn.code() {
        iced_x86::Code::Enterw_imm16_imm8 => 2,
        iced_x86::Code::Enterd_imm16_imm8 => 4,
        _ => 8,
    };
    let alloc = u64::from(insn.immediate16());
    let level = insn.immediate8_2nd() & 31;
    let saved_rsp = cpu.regs.gpr[4];
    let saved_rbp = cpu.regs.gpr[5];
    let res = (|| {
        cpu.push(ctx, size, saved_rbp)?;
        let frame = cpu.regs.gpr[4] & cpu.rsp_mask();
        let mut bp = saved_rbp;
        if level > 0 {
            for _ in 1..level {
                bp = bp.wrapping_sub(size as u64);
                let v = cpu.read_mem(ctx, x86::seg::sreg::SS, bp & cpu.rsp_mask(), size)?;
                cpu.push(ctx, size, v)?;
            }
            cpu.push(ctx, size, frame)?;
        }
        // Touch the bottom of the new frame so a fault happens now.
        let bottom = cpu.regs.gpr[4].wrapping_sub(alloc) & cpu.rsp_mask();
        if alloc > 0 {
            cpu.probe_write(ctx, x86::seg::sreg::SS, bottom, 1)?;
        }
        Ok((frame, bottom))
    })();
    match res {
        Ok((frame, _)) => {
            let m = crate::flags::size_mask(size);
            cpu.regs.gpr[5] = (saved_rbp & !m) | (frame & m);
            cpu.adjust_rsp(-(alloc as i64));
            Ok(())
        }
        Err(f) => {
            cpu.regs.gpr[4] = saved_rsp;
            cpu.regs.gpr[5] = saved_rbp;
            Err(f)
        }
    }
}

/// Handler for a stack mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let k0 = insn.op0_kind();
    let sreg = k0 == OpKind::Register && insn.op0_register().is_segment_register();
    Some(match m {
        Mnemonic::Push if sreg => return None,
        Mnemonic::Pop if sreg => return None,
        Mnemonic::Push if k0 == OpKind::Register => push_r,
        Mnemonic::Push => push,
        Mnemonic::Pop if k0 == OpKind::Register => pop_r,
        Mnemonic::Pop => pop_m,
        Mnemonic::Pusha | Mnemonic::Pushad => pusha,
        Mnemonic::Popa | Mnemonic::Popad => popa,
        Mnemonic::Leave => leave,
        Mnemonic::Enter => enter,
        _ => return None,
    })
}
