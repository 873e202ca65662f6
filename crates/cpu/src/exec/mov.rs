//! Data movement: MOV, MOVZX, MOVSX, MOVSXD, LEA, XCHG, CMOVcc, SETcc,
//! BSWAP, MOVBE, CBW/CWDE/CDQE, CWD/CDQ/CQO, LAHF/SAHF, the flag
//! instructions CLC/STC/CMC/CLD/STD, and NOP (SDM vol. 2, each
//! instruction's page). MOV to or from segment, control and debug
//! registers belongs to [`super::system`].

use crate::fault::Fault;
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use x86::Rflags;

fn mov(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let v = cpu.read_op(ctx, insn, 1)?;
    cpu.write_op(ctx, insn, 0, v)
}

fn mov_rr(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let v = cpu.reg(insn.op1_register());
    cpu.set_reg(insn.op0_register(), v);
    Ok(())
}

fn mov_ri(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    cpu.set_reg(insn.op0_register(), insn.immediate(1));
    Ok(())
}

fn mov_rm(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = insn.memory_size().size() as u8;
    let off = cpu.ea(insn);
    let v = cpu.read_mem(ctx, cpu.mem_seg(insn), off, size)?;
    cpu.set_reg(insn.op0_register(), v);
    Ok(())
}

fn mov_mr(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = insn.memory_size().size() as u8;
    let off = cpu.ea(insn);
    let v = cpu.reg(insn.op1_register());
    cpu.write_mem(ctx, cpu.mem_seg(insn), off, size, v)
}

fn movzx(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let v = cpu.read_op(ctx, insn, 1)?;
    cpu.set_reg(insn.op0_register(), v);
    Ok(())
}

fn movsx(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let src_size = Cpu::op_size(insn, 1);
    let v = cpu.read_op(ctx, insn, 1)?;
    let shift = 64 - 8 * src_size as u32;
    let v = (((v << shift) as i64) >> shift) as u64;
    cpu.set_reg(insn.op0_register(), v);
    Ok(())
}

fn lea(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let v = cpu.ea(insn);
    cpu.set_reg(insn.op0_register(), v);
    Ok(())
}

fn xchg(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if insn.op0_kind() == OpKind::Register && insn.op1_kind() == OpKind::Register {
        let (a, b) = (insn.op0_register(), insn.op1_register());
        let (va, vb) = (cpu.reg(a), cpu.reg(b));
        cpu.set_reg(a, vb);
        cpu.set_reg(b, va);
        return Ok(());
    }
    // One operand is memory; iced may put it first or second.
    let reg = if insn.op0_kind() == OpKind::Memory { insn.op1_register() } else { insn.op0_register() };
    let size = insn.memory_size().size() as u8;
    let seg = cpu.mem_seg(insn);
    let off = cpu.ea(insn);
    let la = cpu.probe_write(ctx, seg, off, size)?;
    let m = cpu.read_lin(ctx, la, size)?;
    cpu.write_lin(ctx, la, size, cpu.reg(reg))?;
    cpu.set_reg(reg, m);
    Ok(())
}

fn cmovcc(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    // The source is read (and may fault) whether or not the move happens.
    let v = cpu.read_op(ctx, insn, 1)?;
    let r = insn.op0_register();
    if cpu.regs.cond(cc_of(insn)) {
        cpu.set_reg(r, v);
    } else if r.size() == 4 {
        // A 32-bit CMOV zero-extends its destination even when false.
        let cur = cpu.reg(r);
        cpu.set_reg(r, cur);
    }
    Ok(())
}

fn setcc(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let v = cpu.regs.cond(cc_of(insn)) as u64;
    cpu.write_op(ctx, insn, 0, v)
}

/// Whether `m` is one of the sixteen CMOVcc mnemonics.
pub fn is_cmovcc(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Cmovo
            | Mnemonic::Cmovno
            | Mnemonic::Cmovb
            | Mnemonic::Cmovae
            | Mnemonic::Cmove
            | Mnemonic::Cmovne
            | Mnemonic::Cmovbe
            | Mnemonic::Cmova
            | Mnemonic::Cmovs
            | Mnemonic::Cmovns
            | Mnemonic::Cmovp
            | Mnemonic::Cmovnp
            | Mnemonic::Cmovl
            | Mnemonic::Cmovge
            | Mnemonic::Cmovle
            | Mnemonic::Cmovg
    )
}

/// Whether `m` is one of the sixteen SETcc mnemonics.
pub fn is_setcc(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Seto
            | Mnemonic::Setno
            | Mnemonic::Setb
            | Mnemonic::Setae
            | Mnemonic::Sete
            | Mnemonic::Setne
            | Mnemonic::Setbe
            | Mnemonic::Seta
            | Mnemonic::Sets
            | Mnemonic::Setns
            | Mnemonic::Setp
            | Mnemonic::Setnp
            | Mnemonic::Setl
            | Mnemonic::Setge
            | Mnemonic::Setle
            | Mnemonic::Setg
    )
}

/// The condition nibble of a Jcc/SETcc/CMOVcc.
pub fn cc_of(insn: &Instruction) -> u8 {
    use iced_x86::ConditionCode as C;
    match insn.condition_code() {
        C::o => 0,
        C::no => 1,
        C::b => 2,
        C::ae => 3,
        C::e => 4,
        C::ne => 5,
        C::be => 6,
        C::a => 7,
        C::s => 8,
        C::ns => 9,
        C::p => 10,
        C::np => 11,
        C::l => 12,
        C::ge => 13,
        C::le => 14,
        C::g => 15,
        C::None => 0,
    }
}

fn bswap(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let r = insn.op0_register();
    let v = cpu.reg(r);
    let out = match r.size() {
        8 => v.swap_bytes(),
        4 => u64::from((v as u32).swap_bytes()),
        // BSWAP of a 16-bit register is undefined; hardware zeroes it.
        _ => 0,
    };
    cpu.set_reg(r, out);
    Ok(())
}

fn movbe(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if !cpu.cpuid.features().movbe {
        return Err(Fault::ud());
    }
    let size = Cpu::osize(insn);
    let v = cpu.read_op(ctx, insn, 1)?;
    let s = match size {
        2 => u64::from((v as u16).swap_bytes()),
        4 => u64::from((v as u32).swap_bytes()),
        _ => v.swap_bytes(),
    };
    cpu.write_op(ctx, insn, 0, s)
}

fn sign_extend_acc(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let rax = cpu.regs.gpr[0];
    match insn.mnemonic() {
        Mnemonic::Cbw => cpu.set_reg(Register::AX, rax as u8 as i8 as i16 as u16 as u64),
        Mnemonic::Cwde => cpu.set_reg(Register::EAX, rax as u16 as i16 as i32 as u32 as u64),
        Mnemonic::Cdqe => cpu.set_reg(Register::RAX, rax as u32 as i32 as i64 as u64),
        Mnemonic::Cwd => cpu.set_reg(Register::DX, if rax & 0x8000 != 0 { 0xffff } else { 0 }),
        Mnemonic::Cdq => cpu.set_reg(Register::EDX, if rax & 0x8000_0000 != 0 { 0xffff_ffff } else { 0 }),
        _ => cpu.set_reg(Register::RDX, if rax & (1 << 63) != 0 { u64::MAX } else { 0 }),
    }
    Ok(())
}

fn flag_op(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    cpu.regs.materialize_flags();
    let f = &mut cpu.regs.rflags;
    match insn.mnemonic() {
        Mnemonic::Clc => *f &= !Rflags::CF.bits(),
        Mnemonic::Stc => *f |= Rflags::CF.bits(),
        Mnemonic::Cmc => *f ^= Rflags::CF.bits(),
        Mnemonic::Cld => *f &= !Rflags::DF.bits(),
        _ => *f |= Rflags::DF.bits(),
    }
    Ok(())
}

fn lahf(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    let f = cpu.regs.rflags() as u8;
    cpu.set_reg(Register::AH, u64::from(f));
    Ok(())
}

fn sahf(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    let ah = cpu.reg(Register::AH);
    let keep = cpu.regs.rflags() & !0xd5;
    cpu.regs.set_rflags(keep | (ah & 0xd5));
    Ok(())
}

fn nop(_: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    Ok(())
}

fn xlat(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    // The operand is [rBX + AL] at the address size (iced reports AL as
    // the index register, which the generic path would widen).
    let b = insn.memory_base();
    let off = cpu.reg(b).wrapping_add(cpu.regs.gpr[0] & 0xff) & crate::flags::size_mask(b.size() as u8);
    let v = cpu.read_mem(ctx, cpu.mem_seg(insn), off, 1)?;
    cpu.set_reg(Register::AL, v);
    Ok(())
}

fn is_special_reg(r: Register) -> bool {
    r.is_segment_register() || r.is_cr() || r.is_dr() || r.is_tr()
}

/// Handler for a data-movement mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let k0 = insn.op0_kind();
    let k1 = insn.op1_kind();
    Some(match m {
        Mnemonic::Mov => {
            if (k0 == OpKind::Register && is_special_reg(insn.op0_register()))
                || (k1 == OpKind::Register && is_special_reg(insn.op1_register()))
            {
                return None;
            }
            match (k0, k1) {
                (OpKind::Register, OpKind::Register) => mov_rr,
                (OpKind::Register, OpKind::Memory) => mov_rm,
                (OpKind::Memory, OpKind::Register) => mov_mr,
                (OpKind::Register, _) => mov_ri,
                _ => mov,
            }
        }
        Mnemonic::Movzx => movzx,
        Mnemonic::Movsx | Mnemonic::Movsxd => movsx,
        Mnemonic::Lea => lea,
        Mnemonic::Xchg => xchg,
        _ if is_cmovcc(m) => cmovcc,
        _ if is_setcc(m) => setcc,
        Mnemonic::Bswap => bswap,
        Mnemonic::Movbe => movbe,
        Mnemonic::Cbw | Mnemonic::Cwde | Mnemonic::Cdqe | Mnemonic::Cwd | Mnemonic::Cdq | Mnemonic::Cqo => {
            sign_extend_acc
        }
        Mnemonic::Clc | Mnemonic::Stc | Mnemonic::Cmc | Mnemonic::Cld | Mnemonic::Std => flag_op,
        Mnemonic::Lahf => lahf,
        Mnemonic::Sahf => sahf,
        Mnemonic::Nop
        | Mnemonic::Endbr64
        | Mnemonic::Endbr32
        | Mnemonic::Prefetch
        | Mnemonic::Prefetchnta
        | Mnemonic::Prefetcht0
        | Mnemonic::Prefetcht1
        | Mnemonic::Prefetcht2
        | Mnemonic::Prefetchw
        | Mnemonic::Lfence
        | Mnemonic::Sfence
        | Mnemonic::Mfence => nop,
        Mnemonic::Xlatb => xlat,
        _ => return None,
    })
}
