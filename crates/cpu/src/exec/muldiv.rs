//! Integer multiply and divide: MUL, IMUL (one-, two- and three-operand
//! forms), DIV, IDIV (SDM vol. 2, "MUL—Unsigned Multiply", "IMUL—Signed
//! Multiply", "DIV—Unsigned Divide", "IDIV—Signed Divide").
//!
//! The double-width forms use the accumulator pair of the operand size:
//! AX (AH:AL for the 8-bit result and AH:AL = remainder:quotient for
//! division), DX:AX, EDX:EAX (zero-extended into RDX/RAX) and RDX:RAX.
//! Division raises #DE for a zero divisor and for a quotient that does not
//! fit its register, before any register changes.
//!
//! Flags: MUL and IMUL define CF = OF = "the result does not fit the low
//! half (or the destination)". The SDM leaves SF, ZF, AF and PF undefined
//! after a multiply and all six undefined after a divide. The executor
//! reproduces the processor it was differentially tested on (AMD Zen,
//! `tests/host_flags.rs`): a multiply leaves SF/ZF/AF/PF unchanged; a
//! divide leaves CF and OF unchanged, clears SF, ZF and PF and sets AF.
//! Both are deterministic, independent of the operands.

use crate::exec::shift::{bit_if, update_flags, AF, CF, OF, PF, SF, ZF};
use crate::fault::Fault;
use crate::flags::size_mask;
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, Register};

/// Sign-extends a `size`-byte value to 64 bits.
#[inline(always)]
fn sext(size: u8, v: u64) -> i64 {
    let shift = 64 - 8 * u32::from(size);
    ((v << shift) as i64) >> shift
}

/// Sets CF and OF to `overflow`, leaving the other status flags alone.
#[inline(always)]
fn mul_flags(cpu: &mut Cpu, overflow: bool) {
    update_flags(cpu, CF | OF, bit_if(overflow, CF | OF));
}

/// Writes a double-width result: AX for bytes, else rDX:rAX.
fn write_pair(cpu: &mut Cpu, size: u8, lo: u64, hi: u64) {
    match size {
        1 => cpu.set_reg(Register::AX, (lo & 0xff) | ((hi & 0xff) << 8)),
        2 => {
            cpu.set_reg(Register::AX, lo);
            cpu.set_reg(Register::DX, hi);
        }
        4 => {
            cpu.set_reg(Register::EAX, lo);
            cpu.set_reg(Register::EDX, hi);
        }
        _ => {
            cpu.set_reg(Register::RAX, lo);
            cpu.set_reg(Register::RDX, hi);
        }
    }
}

/// Reads the double-width dividend: AX for bytes, else rDX:rAX.
fn read_pair(cpu: &Cpu, size: u8) -> u128 {
    let bits = 8 * u32::from(size);
    let m = size_mask(size);
    let (lo, hi) = match size {
        1 => (cpu.regs.gpr[0] & 0xff, (cpu.regs.gpr[0] >> 8) & 0xff),
        _ => (cpu.regs.gpr[0] & m, cpu.regs.gpr[2] & m),
    };
    (u128::from(hi) << bits) | u128::from(lo)
}

/// MUL r/m: unsigned rDX:rAX = rAX * r/m.
fn mul(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let m = size_mask(size);
    let bits = 8 * u32::from(size);
    let src = cpu.read_op(ctx, insn, 0)? & m;
    let acc = cpu.regs.gpr[0] & m;
    let p = u128::from(acc) * u128::from(src);
    let lo = p as u64 & m;
    let hi = (p >> bits) as u64 & m;
    write_pair(cpu, size, lo, hi);
    mul_flags(cpu, hi != 0);
    Ok(())
}

/// IMUL r/m: signed rDX:rAX = rAX * r/m.
fn imul1(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let m = size_mask(size);
    let bits = 8 * u32::from(size);
    let src = sext(size, cpu.read_op(ctx, insn, 0)?);
    let acc = sext(size, cpu.regs.gpr[0]);
    let p = i128::from(acc) * i128::from(src);
    let lo = p as u64 & m;
    let hi = (p >> bits) as u64 & m;
    write_pair(cpu, size, lo, hi);
    mul_flags(cpu, i128::from(sext(size, lo)) != p);
    Ok(())
}

/// IMUL r, r/m and IMUL r, r/m, imm: the product truncated to the
/// destination.
fn imul_n(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let d = insn.op0_register();
    let size = d.size() as u8;
    let (a, b) = if insn.op_count() == 3 {
        (cpu.read_op(ctx, insn, 1)?, insn.immediate(2))
    } else {
        (cpu.reg(d), cpu.read_op(ctx, insn, 1)?)
    };
    let p = i128::from(sext(size, a)) * i128::from(sext(size, b));
    let r = p as u64 & size_mask(size);
    cpu.set_reg(d, r);
    mul_flags(cpu, i128::from(sext(size, r)) != p);
    Ok(())
}

/// The flags a divide leaves (see the module documentation).
#[inline(always)]
fn div_flags(cpu: &mut Cpu) {
    update_flags(cpu, SF | ZF | PF | AF, AF);
}

/// DIV r/m: unsigned rAX = rDX:rAX / r/m, rDX = remainder.
fn div(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let m = size_mask(size);
    let divisor = u128::from(cpu.read_op(ctx, insn, 0)? & m);
    if divisor == 0 {
        return Err(Fault::de());
    }
    let dividend = read_pair(cpu, size);
    let q = dividend / divisor;
    let r = dividend % divisor;
    if q > u128::from(m) {
        return Err(Fault::de());
    }
    write_pair(cpu, size, q as u64, r as u64);
    div_flags(cpu);
    Ok(())
}

/// IDIV r/m: signed rAX = rDX:rAX / r/m (truncating toward zero), rDX =
/// remainder with the sign of the dividend.
fn idiv(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let bits = 8 * u32::from(size);
    let divisor = i128::from(sext(size, cpu.read_op(ctx, insn, 0)?));
    if divisor == 0 {
        return Err(Fault::de());
    }
    // Sign-extend the 2*bits-wide dividend to 128 bits.
    let raw = read_pair(cpu, size);
    let shift = 128 - 2 * bits;
    let dividend = ((raw << shift) as i128) >> shift;
    // Only i128::MIN / -1 overflows i128, and it is a #DE case anyway.
    let (Some(q), Some(r)) = (dividend.checked_div(divisor), dividend.checked_rem(divisor)) else {
        return Err(Fault::de());
    };
    let max = (1i128 << (bits - 1)) - 1;
    if q > max || q < -max - 1 {
        return Err(Fault::de());
    }
    write_pair(cpu, size, q as u64, r as u64);
    div_flags(cpu);
    Ok(())
}

/// Handler for a multiply or divide mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let h: crate::exec::Handler = match m {
        Mnemonic::Mul => mul,
        Mnemonic::Imul if insn.op_count() == 1 => imul1,
        Mnemonic::Imul => imul_n,
        Mnemonic::Div => div,
        Mnemonic::Idiv => idiv,
        _ => return None,
    };
    // None of these accepts LOCK (SDM vol. 2, "LOCK").
    if insn.has_lock_prefix() {
        return Some(crate::exec::bits::lock_ud);
    }
    Some(h)
}
