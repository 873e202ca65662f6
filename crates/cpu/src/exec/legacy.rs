//! Legacy decimal-arithmetic and bounds instructions, valid outside 64-bit
//! mode: DAA, DAS, AAA, AAS, AAM, AAD, BOUND (SDM vol. 2, their pages;
//! iced decodes them as invalid in 64-bit mode, which is #UD there).

use crate::fault::Fault;
use crate::flags::parity;
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, Register};
use x86::Rflags;

/// Status flags from a byte result: SF, ZF, PF, plus the given CF/AF/OF.
fn byte_flags(v: u8, cf: bool, af: bool, of: bool) -> u64 {
    let mut f = 0;
    if cf {
        f |= Rflags::CF.bits();
    }
    if af {
        f |= Rflags::AF.bits();
    }
    if of {
        f |= Rflags::OF.bits();
    }
    if v == 0 {
        f |= Rflags::ZF.bits();
    }
    if v & 0x80 != 0 {
        f |= Rflags::SF.bits();
    }
    if parity(u64::from(v)) {
        f |= Rflags::PF.bits();
    }
    f
}

fn daa_das(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let sub = insn.mnemonic() == Mnemonic::Das;
    let f = cpu.regs.rflags();
    let old_al = cpu.regs.gpr[0] as u8;
    let old_cf = f & Rflags::CF.bits() != 0;
    let mut al = old_al;
    let mut cf = false;
    let mut af = false;
    if al & 0xf > 9 || f & Rflags::AF.bits() != 0 {
        let (v, borrow) = if sub { al.overflowing_sub(6) } else { al.overflowing_add(6) };
        al = v;
        cf = old_cf || borrow;
        af = true;
    }
    if old_al > 0x99 || old_cf {
        al = if sub { al.wrapping_sub(0x60) } else { al.wrapping_add(0x60) };
        cf = true;
    }
    cpu.set_reg(Register::AL, u64::from(al));
    cpu.regs.set_status_flags(byte_flags(al, cf, af, false));
    Ok(())
}

fn aaa_aas(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let sub = insn.mnemonic() == Mnemonic::Aas;
    let f = cpu.regs.rflags();
    let ax = cpu.regs.gpr[0] as u16;
    let adjust = ax & 0xf > 9 || f & Rflags::AF.bits() != 0;
    let ax = if adjust {
        if sub {
            let al = (ax as u8).wrapping_sub(6);
            let ah = ((ax >> 8) as u8).wrapping_sub(1);
            (u16::from(ah) << 8) | u16::from(al)
        } else {
            ax.wrapping_add(0x106)
        }
    } else {
        ax
    };
    let ax = ax & 0xff0f;
    cpu.set_reg(Register::AX, u64::from(ax));
    let mut flags = f & !(Rflags::CF | Rflags::AF).bits() & Rflags::STATUS.bits();
    if adjust {
        flags |= (Rflags::CF | Rflags::AF).bits();
    }
    cpu.regs.set_status_flags(flags);
    Ok(())
}

fn aam(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let base = insn.immediate8();
    if base == 0 {
        return Err(Fault::de());
    }
    let al = cpu.regs.gpr[0] as u8;
    let (ah, al) = (al / base, al % base);
    cpu.set_reg(Register::AX, (u64::from(ah) << 8) | u64::from(al));
    cpu.regs.set_status_flags(byte_flags(al, false, false, false));
    Ok(())
}

fn aad(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let base = insn.immediate8();
    let ax = cpu.regs.gpr[0] as u16;
    let al = (ax as u8).wrapping_add(((ax >> 8) as u8).wrapping_mul(base));
    cpu.set_reg(Register::AX, u64::from(al));
    cpu.regs.set_status_flags(byte_flags(al, false, false, false));
    Ok(())
}

fn bound(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let r = insn.op0_register();
    let size = r.size() as u8;
    let seg = cpu.mem_seg(insn);
    let off = cpu.ea(insn);
    let lo = cpu.read_mem(ctx, seg, off, size)?;
    let hi = cpu.read_mem(ctx, seg, off.wrapping_add(u64::from(size)), size)?;
    let sx = |v: u64| if size == 2 { i64::from(v as u16 as i16) } else { i64::from(v as u32 as i32) };
    let idx = sx(cpu.reg(r));
    if idx < sx(lo) || idx > sx(hi) {
        return Err(Fault::new(x86::vector::BR));
    }
    Ok(())
}

/// Handler for a legacy mnemonic.
pub fn select(m: Mnemonic, _insn: &Instruction) -> Option<crate::exec::Handler> {
    Some(match m {
        Mnemonic::Daa | Mnemonic::Das => daa_das,
        Mnemonic::Aaa | Mnemonic::Aas => aaa_aas,
        Mnemonic::Aam => aam,
        Mnemonic::Aad => aad,
        Mnemonic::Bound => bound,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use crate::testutil::Machine;

    #[test]
    fn daa_adjusts_packed_bcd_sum() {
        // mov al, 0x79 ; add al, 0x35 ; daa ; hlt   -> AL = 0x14, CF = 1
        let mut m = Machine::prot32(&[0xb0, 0x79, 0x04, 0x35, 0x27, 0xf4]);
        m.run_to_hlt();
        assert_eq!(m.gpr(0) & 0xff, 0x14);
        assert_eq!(m.rflags() & 1, 1);
    }

    #[test]
    fn aam_divides_and_aam_zero_faults() {
        // mov al, 77 ; aam ; hlt -> AH = 7, AL = 7
        let mut m = Machine::prot32(&[0xb0, 77, 0xd4, 0x0a, 0xf4]);
        m.run_to_hlt();
        assert_eq!(m.gpr(0) & 0xffff, 0x0707);
        // aam 0 -> #DE (no IDT here: escalates to shutdown).
        let mut m = Machine::prot32(&[0xd4, 0x00, 0xf4]);
        assert!(matches!(m.run(), crate::RunExit::Shutdown(_)));
        assert_eq!(m.cpu.stats.exceptions[0], 1);
    }

    #[test]
    fn aad_combines_digits() {
        // mov ax, 0x0305 ; aad ; hlt -> AX = 35
        let mut m = Machine::prot32(&[0x66, 0xb8, 0x05, 0x03, 0xd5, 0x0a, 0xf4]);
        m.run_to_hlt();
        assert_eq!(m.gpr(0) & 0xffff, 35);
    }
}
