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

#[cfg(test)]
mod tests {
    use crate::exec::shift::testkit::{assemble, long64, run_to_fault, trap_all};
    use crate::exec::shift::{AF, CF, OF, PF, SF, STATUS, ZF};
    use crate::testutil::{Machine, CODE, DATA};
    use x86::vector;

    const RAX: usize = 0;
    const RCX: usize = 1;
    const RDX: usize = 2;
    const RDI: usize = 7;

    /// Runs one instruction; checks registers and status flags.
    fn check(insn: (&[u8], &str), regs: &[(usize, u64)], flags: u64, want: &[(usize, u64)], want_flags: u64) {
        let mut m = long64(&[insn], regs, flags);
        m.mem.write_u64(DATA, 2).unwrap();
        m.run_to_hlt();
        for &(i, v) in want {
            assert_eq!(m.gpr(i), v, "{}: register {i}", insn.1);
        }
        assert_eq!(m.rflags() & STATUS, want_flags, "{}: flags", insn.1);
    }

    #[test]
    fn mul_all_sizes() {
        // MUL changes only CF and OF.
        check(
            (&[0xf6, 0xe1], "mul cl"),
            &[(RAX, 0xdead_0000_0000_ff80), (RCX, 2)],
            ZF | SF,
            &[(RAX, 0xdead_0000_0000_0100)],
            ZF | SF | CF | OF,
        );
        check(
            (&[0x66, 0xf7, 0xe1], "mul cx"),
            &[(RAX, 0xffff), (RCX, 0xffff), (RDX, 0x5555_0000_0000_0000)],
            0,
            &[(RAX, 1), (RDX, 0x5555_0000_0000_fffe)],
            CF | OF,
        );
        check(
            (&[0xf7, 0xe1], "mul ecx"),
            &[(RAX, 0xffff_ffff_0000_0010), (RCX, 0x10), (RDX, u64::MAX)],
            CF | OF | PF,
            &[(RAX, 0x100), (RDX, 0)],
            PF,
        );
        check(
            (&[0x48, 0xf7, 0xe1], "mul rcx"),
            &[(RAX, u64::MAX), (RCX, u64::MAX)],
            0,
            &[(RAX, 1), (RDX, u64::MAX - 1)],
            CF | OF,
        );
        check(
            (&[0xf7, 0x27], "mul dword ptr [rdi]"),
            &[(RAX, 0x8000_0000), (RDI, DATA)],
            0,
            &[(RAX, 0), (RDX, 1)],
            CF | OF,
        );
    }

    #[test]
    fn imul_forms() {
        // -1 * -128 = 128 does not fit a signed byte.
        check((&[0xf6, 0xe9], "imul cl"), &[(RAX, 0xff), (RCX, 0x80)], 0, &[(RAX, 0x80)], CF | OF);
        check(
            (&[0x48, 0xf7, 0xe9], "imul rcx"),
            &[(RAX, (-2i64) as u64), (RCX, 3)],
            CF,
            &[(RAX, (-6i64) as u64), (RDX, u64::MAX)],
            0,
        );
        check(
            (&[0x66, 0xf7, 0xe9], "imul cx"),
            &[(RAX, 0x100), (RCX, 0x100), (RDX, 0xffff_0000_0000_0000)],
            0,
            &[(RAX, 0), (RDX, 0xffff_0000_0000_0001)],
            CF | OF,
        );
        check((&[0x0f, 0xaf, 0xc1], "imul eax, ecx"), &[(RAX, 0x1_0000), (RCX, 0x1_0000)], 0, &[(RAX, 0)], CF | OF);
        check((&[0x6b, 0xc1, 0xfd], "imul eax, ecx, -3"), &[(RAX, u64::MAX), (RCX, 5)], OF, &[(RAX, 0xffff_fff1)], 0);
        check(
            (&[0x66, 0x69, 0xc1, 0x34, 0x12], "imul ax, cx, 0x1234"),
            &[(RAX, 0xaaaa_0000_0000_0000), (RCX, 2)],
            0,
            &[(RAX, 0xaaaa_0000_0000_2468)],
            0,
        );
        check(
            (&[0x48, 0x0f, 0xaf, 0x17], "imul rdx, qword ptr [rdi]"),
            &[(RDX, 1 << 62), (RDI, DATA)],
            0,
            &[(RDX, 1 << 63)],
            CF | OF,
        );
    }

    #[test]
    fn div_and_idiv_all_sizes() {
        // A divide sets AF, clears SF/ZF/PF and keeps CF/OF.
        let keep = CF | ZF | SF | PF;
        check((&[0xf6, 0xf1], "div cl"), &[(RAX, 1000), (RCX, 7)], keep, &[(RAX, 0x068e)], CF | AF);
        check((&[0x66, 0xf7, 0xf1], "div cx"), &[(RAX, 0), (RDX, 1), (RCX, 2)], 0, &[(RAX, 0x8000), (RDX, 0)], AF);
        check(
            (&[0xf7, 0xf1], "div ecx"),
            &[(RAX, 0xffff_ffff_0000_0005), (RDX, 1), (RCX, 0x10)],
            OF,
            &[(RAX, 0x1000_0000), (RDX, 5)],
            OF | AF,
        );
        check((&[0x48, 0xf7, 0xf1], "div rcx"), &[(RAX, 0), (RDX, 1), (RCX, 2)], 0, &[(RAX, 1 << 63), (RDX, 0)], AF);
        // -256 / 2 = -128 fits a signed byte.
        check((&[0xf6, 0xf9], "idiv cl"), &[(RAX, 0xff00), (RCX, 2)], 0, &[(RAX, 0x0080)], AF);
        // Truncation toward zero; the remainder has the dividend's sign.
        check(
            (&[0x66, 0xf7, 0xf9], "idiv cx"),
            &[(RAX, 0xfff9), (RDX, 0xffff), (RCX, 2)],
            0,
            &[(RAX, 0xfffd), (RDX, 0xffff)],
            AF,
        );
        check(
            (&[0xf7, 0xf9], "idiv ecx"),
            &[(RAX, 7), (RDX, 0), (RCX, 0xffff_fffe)],
            0,
            &[(RAX, 0xffff_fffd), (RDX, 1)],
            AF,
        );
        check(
            (&[0x48, 0xf7, 0xf9], "idiv rcx"),
            &[(RAX, (-9i64) as u64), (RDX, u64::MAX), (RCX, 4)],
            0,
            &[(RAX, (-2i64) as u64), (RDX, (-1i64) as u64)],
            AF,
        );
    }

    /// Runs `insn` expecting #DE at CODE with RAX/RDX untouched.
    fn expect_de(bits: u32, insn: (&[u8], &str), regs: &[(usize, u64)]) {
        let code = assemble(bits, &[insn]);
        let mut m = match bits {
            16 => Machine::real16(&code),
            32 => Machine::prot32(&code),
            _ => Machine::long64(&code),
        };
        for &(i, v) in regs {
            m.cpu.regs.gpr[i] = v;
        }
        m.cpu.regs.gpr[RDI] = DATA;
        trap_all(&mut m, bits);
        let before = m.cpu.regs.gpr;
        let (f, rip) = run_to_fault(&mut m);
        let start = if bits == 16 { 0 } else { CODE };
        assert_eq!((f.vector(), rip), (vector::DE, start), "{}", insn.1);
        assert_eq!(m.gpr(RAX), before[RAX], "{}: RAX", insn.1);
        assert_eq!(m.gpr(RDX), before[RDX], "{}: RDX", insn.1);
    }

    #[test]
    fn divide_errors() {
        expect_de(64, (&[0xf6, 0xf1], "div cl"), &[(RAX, 5), (RCX, 0)]);
        // Quotient 0x100 does not fit AL.
        expect_de(64, (&[0xf6, 0xf1], "div cl"), &[(RAX, 0x200), (RCX, 2)]);
        expect_de(64, (&[0x66, 0xf7, 0xf1], "div cx"), &[(RAX, 0), (RDX, 2), (RCX, 2)]);
        expect_de(64, (&[0xf7, 0xf1], "div ecx"), &[(RAX, 0), (RDX, 1), (RCX, 1)]);
        expect_de(64, (&[0x48, 0xf7, 0xf1], "div rcx"), &[(RAX, 0), (RDX, 5), (RCX, 5)]);
        // -32768 / -1 = 32768 does not fit a signed byte... nor does 128.
        expect_de(64, (&[0xf6, 0xf9], "idiv cl"), &[(RAX, 0x8000), (RCX, 0xff)]);
        expect_de(64, (&[0xf6, 0xf9], "idiv cl"), &[(RAX, 0x0080), (RCX, 1)]);
        // The most negative 128-bit dividend over -1.
        expect_de(64, (&[0x48, 0xf7, 0xf9], "idiv rcx"), &[(RAX, 0), (RDX, 1 << 63), (RCX, u64::MAX)]);
        expect_de(64, (&[0x48, 0xf7, 0xf9], "idiv rcx"), &[(RAX, 1 << 63), (RDX, u64::MAX), (RCX, u64::MAX)]);
        expect_de(64, (&[0xf7, 0x37], "div dword ptr [rdi]"), &[(RAX, 1)]);
        expect_de(32, (&[0xf7, 0xf9], "idiv ecx"), &[(RAX, 1), (RCX, 0)]);
        expect_de(16, (&[0xf6, 0xf3], "div bl"), &[(RAX, 1)]);
    }
}
