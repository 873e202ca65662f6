//! SSE and SSE2 (and the MMX forms of their integer instructions), MXCSR,
//! and the 128-bit moves compilers and C libraries emit for x86-64's
//! baseline. Followed: SDM vol. 1, ch. 9 "Programming with Intel MMX
//! Technology", ch. 10 "Programming with Intel Streaming SIMD Extensions
//! (Intel SSE)" (10.2.3 "MXCSR Control and Status Register"), ch. 11
//! "Programming with Intel Streaming SIMD Extensions 2 (Intel SSE2)"
//! (11.5 "SSE, SSE2, and SSE3 Exceptions"), 4.9 "Overview of
//! Floating-Point Exceptions"; vol. 3A, 2.5 "Control Registers" (the
//! tables of actions taken for combinations of CR0.EM/MP/TS, and
//! CR4.OSFXSR/OSXMMEXCPT); vol. 2, each instruction's page.
//!
//! Availability is checked as hardware does: instructions on XMM
//! registers raise #UD when CR0.EM is set or CR4.OSFXSR is clear, then #NM
//! when CR0.TS is set; instructions on MMX registers raise #UD for CR0.EM,
//! #NM for CR0.TS and #MF for a pending x87 exception, and put the x87
//! unit into MMX state (TOP = 0, every tag valid). Legacy-SSE 16-byte
//! memory operands must be 16-byte aligned (#GP(0)) except for the
//! unaligned moves.
//!
//! Floating point is computed by [`super::fpu::soft`], so every
//! operation honours MXCSR (rounding control, DAZ, FTZ), sets its
//! exception flags exactly, and raises #XM (#UD when CR4.OSXMMEXCPT is
//! clear) for unmasked exceptions without writing its destination. RCPSS,
//! RCPPS, RSQRTSS and RSQRTPS return the correctly rounded reciprocal
//! (square root), which is within the architectural error bound of
//! 1.5 * 2^-12 but not bit-identical to any particular processor's
//! approximation tables.
//!
//! Not implemented (they raise #UD through the executor's
//! "unimplemented" path): the MMX<->SSE conversions CVTPI2PS, CVTPS2PI,
//! CVTTPS2PI, CVTPI2PD, CVTPD2PI, CVTTPD2PI, and everything past SSE2
//! (none of it is advertised in CPUID).
//!
//! Vector values are `u128`s, lane 0 in the low bits (XMM registers are
//! stored that way in [`crate::state::FpuState`]); MMX values are the low
//! 64 bits, so the lane-wise operations below serve both widths.

use super::fpu::{self, soft, Align};
use crate::exec::Handler;
use crate::fault::Fault;
use crate::{Cpu, Ctx};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use soft::{Cmp, Env, Fmt, NanRule, F32, F64};
use x86::{Cr0, Cr4};

// ---------------------------------------------------------------------
// Availability and operands.

/// SSE instructions: #UD when CR0.EM or !CR4.OSFXSR, else #NM when CR0.TS
/// (SDM vol. 3A, 2.5, the table of actions taken by SSE instructions for
/// combinations of EM, MP and TS).
pub(crate) fn check_sse(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.regs.cr0 & Cr0::EM.bits() != 0 || cpu.regs.cr4 & Cr4::OSFXSR.bits() == 0 {
        return Err(Fault::ud());
    }
    if cpu.regs.cr0 & Cr0::TS.bits() != 0 {
        return Err(Fault::nm());
    }
    Ok(())
}

#[inline(always)]
fn avail<const MMX: bool>(cpu: &Cpu) -> Result<(), Fault> {
    if MMX {
        fpu::check_mmx(cpu)
    } else {
        check_sse(cpu)
    }
}

/// XMM register number (legacy encodings reach XMM0-XMM15).
#[inline(always)]
fn xmm(r: Register) -> usize {
    r.number() & 15
}

/// Reads a vector register (an MMX one zero-extended) or a GPR.
#[inline(always)]
fn vreg(cpu: &Cpu, r: Register) -> u128 {
    if r.is_xmm() {
        cpu.regs.fpu.xmm[xmm(r)]
    } else if r.is_mm() {
        u128::from(fpu::mmx_read(&cpu.regs.fpu, r.number() & 7))
    } else {
        u128::from(cpu.reg(r))
    }
}

/// Writes a vector register (an MMX write also enters MMX state) or a
/// GPR (with the usual zero extension of 32-bit writes).
#[inline(always)]
fn set_vreg(cpu: &mut Cpu, r: Register, v: u128) {
    if r.is_xmm() {
        cpu.regs.fpu.xmm[xmm(r)] = v;
    } else if r.is_mm() {
        let f = &mut cpu.regs.fpu;
        fpu::mmx_enter(f);
        fpu::mmx_write(f, r.number() & 7, v as u64);
    } else {
        cpu.set_reg(r, v as u64);
    }
}

/// The alignment rules of an `n`-byte vector operand: `gp` is 16 for the
/// forms that require alignment (#GP(0)), 1 otherwise; alignment
/// checking (#AC) wants the operand's own size.
fn vec_align(n: usize, gp: u64) -> Align {
    Align { gp, ac: n as u64 }
}

/// Reads `n` (at most 16) bytes of the memory operand.
fn read_m(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, n: usize, gp: u64) -> Result<u128, Fault> {
    let mut b = [0u8; 16];
    let n = n.min(16);
    let off = cpu.ea(insn);
    fpu::read_area(cpu, ctx, cpu.mem_seg(insn), off, &mut b[..n], vec_align(n, gp))?;
    Ok(u128::from_le_bytes(b))
}

/// Writes the low `n` (at most 16) bytes of `v` to the memory operand.
fn write_m(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, v: u128, n: usize, gp: u64) -> Result<(), Fault> {
    let n = n.min(16);
    let off = cpu.ea(insn);
    fpu::write_area(cpu, ctx, cpu.mem_seg(insn), off, &v.to_le_bytes()[..n], vec_align(n, gp))
}

/// Operand `n` as a source: a register, an immediate, or memory of the
/// instruction's memory size; legacy SSE requires 16-byte memory
/// operands to be aligned.
#[inline(always)]
fn src(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, n: u32) -> Result<u128, Fault> {
    match insn.op_kind(n) {
        OpKind::Register => Ok(vreg(cpu, insn.op_register(n))),
        OpKind::Memory => {
            let size = insn.memory_size().size().min(16);
            read_m(cpu, ctx, insn, size, if size == 16 { 16 } else { 1 })
        }
        _ => Ok(u128::from(insn.immediate(n))),
    }
}

/// The common shape `dst = f(dst, src, width in bytes)`.
#[inline(always)]
fn binop<const MMX: bool>(
    cpu: &mut Cpu,
    ctx: &mut Ctx,
    insn: &Instruction,
    f: impl FnOnce(u128, u128, usize) -> u128,
) -> Result<(), Fault> {
    avail::<MMX>(cpu)?;
    let b = src(cpu, ctx, insn, 1)?;
    let d = insn.op0_register();
    let a = vreg(cpu, d);
    let r = f(a, b, if MMX { 8 } else { 16 });
    set_vreg(cpu, d, r);
    Ok(())
}

// ---------------------------------------------------------------------
// Lanes.

const fn lane_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1 << bits) - 1
    }
}

/// Applies `f` to each pair of `BITS`-wide lanes.
#[inline(always)]
fn lanes<const BITS: u32>(a: u128, b: u128, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mask = lane_mask(BITS);
    let mut r = 0u128;
    let mut i = 0;
    while i < 128 {
        let x = (a >> i) as u64 & mask;
        let y = (b >> i) as u64 & mask;
        r |= u128::from(f(x, y) & mask) << i;
        i += BITS;
    }
    r
}

/// Lane `i` of `bits` width.
#[inline(always)]
fn lane(v: u128, bits: u32, i: u32) -> u64 {
    (v >> (i * bits)) as u64 & lane_mask(bits)
}

/// `v` with lane `i` replaced.
#[inline(always)]
fn with_lane(v: u128, bits: u32, i: u32, x: u64) -> u128 {
    let m = u128::from(lane_mask(bits)) << (i * bits);
    (v & !m) | ((u128::from(x) << (i * bits)) & m)
}

/// Sign-extends a `bits`-wide value.
#[inline(always)]
fn sx(v: u64, bits: u32) -> i64 {
    let s = 64 - bits;
    ((v << s) as i64) >> s
}

/// Signed saturation to `bits`.
#[inline(always)]
fn sat_s(v: i64, bits: u32) -> u64 {
    let max = (1i64 << (bits - 1)) - 1;
    (v.clamp(-max - 1, max) as u64) & lane_mask(bits)
}

/// Unsigned saturation to `bits`.
#[inline(always)]
fn sat_u(v: i64, bits: u32) -> u64 {
    v.clamp(0, lane_mask(bits) as i64) as u64
}

fn all_ones(c: bool) -> u64 {
    if c {
        u64::MAX
    } else {
        0
    }
}

/// PUNPCKL*/PUNPCKH*: interleaves the low (or high) halves of `a` and `b`
/// (`w` bytes wide).
fn unpack(a: u128, b: u128, bits: u32, high: bool, w: usize) -> u128 {
    let half = (w as u32 * 8 / bits) / 2;
    let base = if high { half } else { 0 };
    (0..half).fold(0u128, |r, i| {
        let r = with_lane(r, bits, 2 * i, lane(a, bits, base + i));
        with_lane(r, bits, 2 * i + 1, lane(b, bits, base + i))
    })
}

/// PACKSS*/PACKUS*: narrows the lanes of `a` then of `b` with `sat`.
fn pack(a: u128, b: u128, bits: u32, w: usize, sat: impl Fn(u64) -> u64) -> u128 {
    let n = w as u32 * 8 / bits;
    let out = bits / 2;
    (0..n).fold(0u128, |r, i| {
        let r = with_lane(r, out, i, sat(lane(a, bits, i)));
        with_lane(r, out, n + i, sat(lane(b, bits, i)))
    })
}

/// PSLL*: logical left shift of every lane by the count (all zero when it
/// reaches the lane width).
fn shl<const BITS: u32>(a: u128, count: u128) -> u128 {
    let c = count as u64;
    if c >= u64::from(BITS) {
        return 0;
    }
    lanes::<BITS>(a, 0, |x, _| x << c)
}

/// PSRL*: logical right shift.
fn shr<const BITS: u32>(a: u128, count: u128) -> u128 {
    let c = count as u64;
    if c >= u64::from(BITS) {
        return 0;
    }
    lanes::<BITS>(a, 0, |x, _| x >> c)
}

/// PSRA*: arithmetic right shift (counts past the width fill with the
/// sign).
fn sar<const BITS: u32>(a: u128, count: u128) -> u128 {
    let c = (count as u64).min(u64::from(BITS) - 1);
    lanes::<BITS>(a, 0, |x, _| (sx(x, BITS) >> c) as u64)
}

/// Defines one handler per lane-wise integer operation, generic over
/// the register file (MMX or XMM).
macro_rules! vector_ops {
    ($($(#[doc = $doc:literal])* $name:ident($a:ident, $b:ident, $w:ident) => $body:expr;)*) => {$(
        $(#[doc = $doc])*
        fn $name<const MMX: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
            binop::<MMX>(cpu, ctx, insn, |$a, $b, $w| {
                let _ = $w;
                $body
            })
        }
    )*};
}

vector_ops! {
    /// PXOR, XORPS, XORPD.
    pxor(a, b, w) => a ^ b;
    /// POR, ORPS, ORPD.
    por(a, b, w) => a | b;
    /// PAND, ANDPS, ANDPD.
    pand(a, b, w) => a & b;
    /// PANDN, ANDNPS, ANDNPD.
    pandn(a, b, w) => !a & b;
    /// PADDB.
    paddb(a, b, w) => lanes::<8>(a, b, |x, y| x.wrapping_add(y));
    /// PADDW.
    paddw(a, b, w) => lanes::<16>(a, b, |x, y| x.wrapping_add(y));
    /// PADDD.
    paddd(a, b, w) => lanes::<32>(a, b, |x, y| x.wrapping_add(y));
    /// PADDQ.
    paddq(a, b, w) => lanes::<64>(a, b, |x, y| x.wrapping_add(y));
    /// PSUBB.
    psubb(a, b, w) => lanes::<8>(a, b, |x, y| x.wrapping_sub(y));
    /// PSUBW.
    psubw(a, b, w) => lanes::<16>(a, b, |x, y| x.wrapping_sub(y));
    /// PSUBD.
    psubd(a, b, w) => lanes::<32>(a, b, |x, y| x.wrapping_sub(y));
    /// PSUBQ.
    psubq(a, b, w) => lanes::<64>(a, b, |x, y| x.wrapping_sub(y));
    /// PADDSB.
    paddsb(a, b, w) => lanes::<8>(a, b, |x, y| sat_s(sx(x, 8) + sx(y, 8), 8));
    /// PADDSW.
    paddsw(a, b, w) => lanes::<16>(a, b, |x, y| sat_s(sx(x, 16) + sx(y, 16), 16));
    /// PSUBSB.
    psubsb(a, b, w) => lanes::<8>(a, b, |x, y| sat_s(sx(x, 8) - sx(y, 8), 8));
    /// PSUBSW.
    psubsw(a, b, w) => lanes::<16>(a, b, |x, y| sat_s(sx(x, 16) - sx(y, 16), 16));
    /// PADDUSB.
    paddusb(a, b, w) => lanes::<8>(a, b, |x, y| sat_u(x as i64 + y as i64, 8));
    /// PADDUSW.
    paddusw(a, b, w) => lanes::<16>(a, b, |x, y| sat_u(x as i64 + y as i64, 16));
    /// PSUBUSB.
    psubusb(a, b, w) => lanes::<8>(a, b, |x, y| sat_u(x as i64 - y as i64, 8));
    /// PSUBUSW.
    psubusw(a, b, w) => lanes::<16>(a, b, |x, y| sat_u(x as i64 - y as i64, 16));
    /// PCMPEQB.
    pcmpeqb(a, b, w) => lanes::<8>(a, b, |x, y| all_ones(x == y));
    /// PCMPEQW.
    pcmpeqw(a, b, w) => lanes::<16>(a, b, |x, y| all_ones(x == y));
    /// PCMPEQD.
    pcmpeqd(a, b, w) => lanes::<32>(a, b, |x, y| all_ones(x == y));
    /// PCMPGTB (signed).
    pcmpgtb(a, b, w) => lanes::<8>(a, b, |x, y| all_ones(sx(x, 8) > sx(y, 8)));
    /// PCMPGTW (signed).
    pcmpgtw(a, b, w) => lanes::<16>(a, b, |x, y| all_ones(sx(x, 16) > sx(y, 16)));
    /// PCMPGTD (signed).
    pcmpgtd(a, b, w) => lanes::<32>(a, b, |x, y| all_ones(sx(x, 32) > sx(y, 32)));
    /// PMINUB.
    pminub(a, b, w) => lanes::<8>(a, b, |x, y| x.min(y));
    /// PMAXUB.
    pmaxub(a, b, w) => lanes::<8>(a, b, |x, y| x.max(y));
    /// PMINSW.
    pminsw(a, b, w) => lanes::<16>(a, b, |x, y| if sx(x, 16) < sx(y, 16) { x } else { y });
    /// PMAXSW.
    pmaxsw(a, b, w) => lanes::<16>(a, b, |x, y| if sx(x, 16) > sx(y, 16) { x } else { y });
    /// PMULLW: low halves of the products.
    pmullw(a, b, w) => lanes::<16>(a, b, |x, y| x.wrapping_mul(y));
    /// PMULHW: high halves of the signed products.
    pmulhw(a, b, w) => lanes::<16>(a, b, |x, y| ((sx(x, 16) * sx(y, 16)) >> 16) as u64);
    /// PMULHUW: high halves of the unsigned products.
    pmulhuw(a, b, w) => lanes::<16>(a, b, |x, y| (x * y) >> 16);
    /// PMULUDQ: the even doublewords multiplied into quadwords.
    pmuludq(a, b, w) => lanes::<64>(a, b, |x, y| (x & 0xffff_ffff) * (y & 0xffff_ffff));
    /// PMADDWD: pairs of signed word products summed into doublewords
    /// (0x8000 * 0x8000 twice wraps to 0x8000_0000, as on hardware).
    pmaddwd(a, b, w) => lanes::<32>(a, b, |x, y| {
        let lo = sx(x & 0xffff, 16) * sx(y & 0xffff, 16);
        let hi = sx(x >> 16, 16) * sx(y >> 16, 16);
        lo.wrapping_add(hi) as u64
    });
    /// PAVGB: rounded unsigned averages.
    pavgb(a, b, w) => lanes::<8>(a, b, |x, y| (x + y + 1) >> 1);
    /// PAVGW.
    pavgw(a, b, w) => lanes::<16>(a, b, |x, y| (x + y + 1) >> 1);
    /// PSADBW: sums of absolute byte differences per quadword.
    psadbw(a, b, w) => lanes::<64>(a, b, |x, y| {
        (0..8).map(|i| ((x >> (8 * i)) & 0xff).abs_diff((y >> (8 * i)) & 0xff)).sum()
    });
    /// PUNPCKLBW.
    punpcklbw(a, b, w) => unpack(a, b, 8, false, w);
    /// PUNPCKLWD.
    punpcklwd(a, b, w) => unpack(a, b, 16, false, w);
    /// PUNPCKLDQ, UNPCKLPS.
    punpckldq(a, b, w) => unpack(a, b, 32, false, w);
    /// PUNPCKLQDQ, UNPCKLPD.
    punpcklqdq(a, b, w) => unpack(a, b, 64, false, w);
    /// PUNPCKHBW.
    punpckhbw(a, b, w) => unpack(a, b, 8, true, w);
    /// PUNPCKHWD.
    punpckhwd(a, b, w) => unpack(a, b, 16, true, w);
    /// PUNPCKHDQ, UNPCKHPS.
    punpckhdq(a, b, w) => unpack(a, b, 32, true, w);
    /// PUNPCKHQDQ, UNPCKHPD.
    punpckhqdq(a, b, w) => unpack(a, b, 64, true, w);
    /// PACKSSWB.
    packsswb(a, b, w) => pack(a, b, 16, w, |v| sat_s(sx(v, 16), 8));
    /// PACKSSDW.
    packssdw(a, b, w) => pack(a, b, 32, w, |v| sat_s(sx(v, 32), 16));
    /// PACKUSWB.
    packuswb(a, b, w) => pack(a, b, 16, w, |v| sat_u(sx(v, 16), 8));
    /// PSLLW (count in an immediate or the low quadword of the source).
    psllw(a, b, w) => shl::<16>(a, b);
    /// PSLLD.
    pslld(a, b, w) => shl::<32>(a, b);
    /// PSLLQ.
    psllq(a, b, w) => shl::<64>(a, b);
    /// PSRLW.
    psrlw(a, b, w) => shr::<16>(a, b);
    /// PSRLD.
    psrld(a, b, w) => shr::<32>(a, b);
    /// PSRLQ.
    psrlq(a, b, w) => shr::<64>(a, b);
    /// PSRAW.
    psraw(a, b, w) => sar::<16>(a, b);
    /// PSRAD.
    psrad(a, b, w) => sar::<32>(a, b);
    /// PSLLDQ: byte shift of the whole register.
    pslldq(a, b, w) => if b > 15 { 0 } else { a << (8 * b as u32) };
    /// PSRLDQ.
    psrldq(a, b, w) => if b > 15 { 0 } else { a >> (8 * b as u32) };
}

/// SHUFPS: two lanes from the destination, two from the source.
fn shufps(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let imm = u32::from(insn.immediate8());
    binop::<false>(cpu, ctx, insn, |a, b, _| {
        let r = with_lane(0, 32, 0, lane(a, 32, imm & 3));
        let r = with_lane(r, 32, 1, lane(a, 32, (imm >> 2) & 3));
        let r = with_lane(r, 32, 2, lane(b, 32, (imm >> 4) & 3));
        with_lane(r, 32, 3, lane(b, 32, (imm >> 6) & 3))
    })
}

/// SHUFPD.
fn shufpd(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let imm = u32::from(insn.immediate8());
    binop::<false>(cpu, ctx, insn, |a, b, _| {
        with_lane(u128::from(lane(a, 64, imm & 1)), 64, 1, lane(b, 64, (imm >> 1) & 1))
    })
}

/// PINSRW: a word from a GPR or memory into the lane the immediate names.
fn pinsrw<const MMX: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let imm = u32::from(insn.immediate8()) & if MMX { 3 } else { 7 };
    binop::<MMX>(cpu, ctx, insn, |a, b, _| with_lane(a, 16, imm, b as u64))
}

/// PSHUFD, PSHUFLW, PSHUFHW, PSHUFW: `dst = f(src, imm)`.
fn shuffle<const MMX: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    avail::<MMX>(cpu)?;
    let s = src(cpu, ctx, insn, 1)?;
    let imm = u32::from(insn.immediate8());
    let pick4 = |v: u128, bits: u32, base: u32| {
        (0..4).fold(v, |r, i| with_lane(r, bits, base + i, lane(v, bits, base + ((imm >> (2 * i)) & 3))))
    };
    let r = match insn.mnemonic() {
        Mnemonic::Pshufd => pick4(s, 32, 0),
        Mnemonic::Pshufhw => pick4(s, 16, 4),
        _ => pick4(s, 16, 0),
    };
    set_vreg(cpu, insn.op0_register(), r);
    Ok(())
}

/// PEXTRW: a word into a GPR, zero-extended.
fn pextrw<const MMX: bool>(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    avail::<MMX>(cpu)?;
    let imm = u32::from(insn.immediate8()) & if MMX { 3 } else { 7 };
    let v = lane(vreg(cpu, insn.op1_register()), 16, imm);
    if MMX {
        fpu::mmx_enter(&mut cpu.regs.fpu);
    }
    cpu.set_reg(insn.op0_register(), v);
    Ok(())
}

/// PMOVMSKB, MOVMSKPS, MOVMSKPD: the sign bits of the lanes into a GPR.
fn movmsk<const MMX: bool>(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    avail::<MMX>(cpu)?;
    let v = vreg(cpu, insn.op1_register());
    let bits = match insn.mnemonic() {
        Mnemonic::Movmskps => 32,
        Mnemonic::Movmskpd => 64,
        _ => 8,
    };
    let n = if MMX { 64 / bits } else { 128 / bits };
    let m = (0..n).fold(0u64, |m, i| m | ((lane(v, bits, i) >> (bits - 1)) << i));
    if MMX {
        fpu::mmx_enter(&mut cpu.regs.fpu);
    }
    cpu.set_reg(insn.op0_register(), m);
    Ok(())
}

/// EMMS: every x87 register empty.
fn emms(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    fpu::check_mmx(cpu)?;
    cpu.regs.fpu.ftw = 0;
    Ok(())
}

// ---------------------------------------------------------------------
// Moves.

/// MOVAPS/MOVAPD/MOVDQA/MOVNTPS/MOVNTPD/MOVNTDQ (`ALIGNED`) and
/// MOVUPS/MOVUPD/MOVDQU: whole registers.
fn mov128<const ALIGNED: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let align = if ALIGNED { 16 } else { 1 };
    if insn.op0_kind() == OpKind::Memory {
        let v = cpu.regs.fpu.xmm[xmm(insn.op1_register())];
        return write_m(cpu, ctx, insn, v, 16, align);
    }
    let v = match insn.op1_kind() {
        OpKind::Memory => read_m(cpu, ctx, insn, 16, align)?,
        _ => cpu.regs.fpu.xmm[xmm(insn.op1_register())],
    };
    cpu.regs.fpu.xmm[xmm(insn.op0_register())] = v;
    Ok(())
}

/// MOVD, MOVQ (all forms), MOVQ2DQ, MOVDQ2Q, MOVNTQ: the low 32 or 64
/// bits; writes to XMM registers zero the rest.
fn movdq(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let is = |f: fn(Register) -> bool| {
        (0..insn.op_count()).any(|n| insn.op_kind(n) == OpKind::Register && f(insn.op_register(n)))
    };
    let (has_xmm, has_mm) = (is(Register::is_xmm), is(Register::is_mm));
    if has_xmm {
        check_sse(cpu)?;
    }
    if has_mm {
        fpu::check_mmx(cpu)?;
    }
    let size = if insn.mnemonic() == Mnemonic::Movd { 4 } else { 8 };
    let mask = if size == 4 { 0xffff_ffff } else { u128::from(u64::MAX) };
    let v = src(cpu, ctx, insn, 1)? & mask;
    if insn.op0_kind() == OpKind::Memory {
        write_m(cpu, ctx, insn, v, size, 1)?;
    } else {
        set_vreg(cpu, insn.op0_register(), v);
    }
    if has_mm {
        fpu::mmx_enter(&mut cpu.regs.fpu);
    }
    Ok(())
}

/// MOVSS (`DOUBLE` = false) and MOVSD: register-to-register moves merge
/// the low lane, loads zero the rest, stores write the low lane.
fn movs<const DOUBLE: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let (bits, size) = if DOUBLE { (64, 8) } else { (32, 4) };
    if insn.op0_kind() == OpKind::Memory {
        let v = cpu.regs.fpu.xmm[xmm(insn.op1_register())];
        return write_m(cpu, ctx, insn, v, size, 1);
    }
    let d = xmm(insn.op0_register());
    if insn.op1_kind() == OpKind::Memory {
        cpu.regs.fpu.xmm[d] = read_m(cpu, ctx, insn, size, 1)?;
    } else {
        let s = cpu.regs.fpu.xmm[xmm(insn.op1_register())];
        cpu.regs.fpu.xmm[d] = with_lane(cpu.regs.fpu.xmm[d], bits, 0, lane(s, bits, 0));
    }
    Ok(())
}

/// MOVLPS/MOVLPD (`HIGH` = false) and MOVHPS/MOVHPD: one quadword between
/// memory and the low (high) half of a register.
fn movlh<const HIGH: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let i = HIGH as u32;
    if insn.op0_kind() == OpKind::Memory {
        let v = lane(cpu.regs.fpu.xmm[xmm(insn.op1_register())], 64, i);
        return write_m(cpu, ctx, insn, u128::from(v), 8, 1);
    }
    let v = read_m(cpu, ctx, insn, 8, 1)? as u64;
    let d = xmm(insn.op0_register());
    cpu.regs.fpu.xmm[d] = with_lane(cpu.regs.fpu.xmm[d], 64, i, v);
    Ok(())
}

/// MOVHLPS (low half from the source's high half) and MOVLHPS.
fn movhllh(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let s = cpu.regs.fpu.xmm[xmm(insn.op1_register())];
    let d = xmm(insn.op0_register());
    let (to, from) = if insn.mnemonic() == Mnemonic::Movhlps { (0, 1) } else { (1, 0) };
    cpu.regs.fpu.xmm[d] = with_lane(cpu.regs.fpu.xmm[d], 64, to, lane(s, 64, from));
    Ok(())
}

/// MOVNTI: a general-purpose store (no SSE state is involved, so no
/// CR0/CR4 checks).
fn movnti(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let v = cpu.reg(insn.op1_register());
    cpu.write_op(ctx, insn, 0, v)
}

/// MASKMOVQ and MASKMOVDQU: the source bytes whose mask byte has its top
/// bit set are stored at DS:rDI (segment overridable). Every page is
/// checked first, so the store is all or nothing.
fn maskmov<const MMX: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    avail::<MMX>(cpu)?;
    let data = vreg(cpu, insn.op1_register()).to_le_bytes();
    let mask = vreg(cpu, insn.op2_register()).to_le_bytes();
    let n = if MMX { 8 } else { 16 };
    let rdi = cpu.regs.gpr[7];
    let off = match insn.op0_kind() {
        OpKind::MemorySegDI => rdi & 0xffff,
        OpKind::MemorySegEDI => rdi & 0xffff_ffff,
        _ => rdi,
    };
    let seg = super::sreg_index(insn.memory_segment());
    let la = fpu::probe_area(cpu, ctx, seg, off, n, Align::natural(n as u64))?;
    for i in (0..n).filter(|&i| mask[i] & 0x80 != 0) {
        fpu::write_at(cpu, ctx, la, i, &data[i..i + 1])?;
    }
    if MMX {
        fpu::mmx_enter(&mut cpu.regs.fpu);
    }
    Ok(())
}

/// LDMXCSR: #GP(0) for reserved bits.
fn ldmxcsr(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let v = cpu.read_op(ctx, insn, 0)? as u32;
    if v & !fpu::MXCSR_MASK != 0 {
        return Err(Fault::gp0());
    }
    cpu.regs.fpu.mxcsr = v;
    Ok(())
}

/// STMXCSR.
fn stmxcsr(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let v = u64::from(cpu.regs.fpu.mxcsr);
    cpu.write_op(ctx, insn, 0, v)
}

// ---------------------------------------------------------------------
// Floating point.

/// Folds an operation's exception flags into MXCSR; an unmasked one
/// raises #XM, or #UD when CR4.OSXMMEXCPT is clear, and the destination
/// must then stay unwritten (SDM vol. 1, 11.5.1 and 11.5.2). An unmasked
/// pre-computation exception (IE, DE, ZE) keeps the post-computation
/// flags from being recorded.
fn commit(cpu: &mut Cpu, env: &Env) -> Result<(), Fault> {
    let pre = soft::IE | soft::DE | soft::ZE;
    let unmasked = env.flags & !env.masks & 0x3f;
    let flags = if unmasked & pre != 0 { env.flags & pre } else { env.flags };
    cpu.regs.fpu.mxcsr |= u32::from(flags & 0x3f);
    if unmasked != 0 {
        return Err(if cpu.regs.cr4 & Cr4::OSXMMEXCPT.bits() != 0 { Fault::xm() } else { Fault::ud() });
    }
    Ok(())
}

const fn fmt_of(double: bool) -> (Fmt, u32) {
    if double {
        (F64, 64)
    } else {
        (F32, 32)
    }
}

/// Arithmetic operation selectors for [`fp_arith`].
mod op {
    pub const ADD: u8 = 0;
    pub const SUB: u8 = 1;
    pub const MUL: u8 = 2;
    pub const DIV: u8 = 3;
    pub const MIN: u8 = 4;
    pub const MAX: u8 = 5;
    pub const SQRT: u8 = 6;
    pub const RCP: u8 = 7;
    pub const RSQRT: u8 = 8;
}

/// A denormal operand read as zero under DAZ (MINSS and MAXSS return an
/// operand rather than compute a result).
fn daz_value(f: Fmt, env: &Env, x: u128) -> u128 {
    if env.daz && f.is_denormal(x) {
        f.zero(f.sign(x))
    } else {
        x
    }
}

/// One lane of [`fp_arith`].
#[inline(always)]
fn fop(op: u8, f: Fmt, env: &mut Env, x: u128, y: u128) -> u128 {
    let p = f.precision();
    match op {
        op::ADD => soft::add(f, p, env, NanRule::Sse, x, y, false),
        op::SUB => soft::add(f, p, env, NanRule::Sse, x, y, true),
        op::MUL => soft::mul(f, p, env, NanRule::Sse, x, y),
        op::DIV => soft::div(f, p, env, NanRule::Sse, x, y),
        op::SQRT => soft::sqrt(f, p, env, y),
        op::MIN | op::MAX => {
            // Signaling compare; with a NaN or two zeros the second
            // operand is the result.
            let c = soft::compare(f, env, x, y, true);
            let pick_x = if op == op::MIN { c == Cmp::Less } else { c == Cmp::Greater };
            daz_value(f, env, if pick_x { x } else { y })
        }
        _ => approx(op, f, y),
    }
}

/// RCPSS/RCPPS and RSQRTSS/RSQRTPS: the correctly rounded value (within
/// the 1.5 * 2^-12 the SDM allows); they raise no flags, read denormals as
/// zero and flush tiny results to zero.
fn approx(op: u8, f: Fmt, y: u128) -> u128 {
    let mut env = Env::from_mxcsr(0x1f80);
    if f.is_nan(y) {
        return f.quiet(y);
    }
    let y = if f.is_denormal(y) { f.zero(f.sign(y)) } else { y };
    let r = if op == op::RCP {
        soft::div(f, f.precision(), &mut env, NanRule::Sse, f.one(), y)
    } else if f.sign(y) && soft::unpack(f, y) != soft::Val::Zero(true) {
        f.indefinite()
    } else {
        let s = soft::sqrt(f, f.precision(), &mut env, y);
        soft::div(f, f.precision(), &mut env, NanRule::Sse, f.one(), s)
    };
    if f.is_denormal(r) {
        f.zero(f.sign(r))
    } else {
        r
    }
}

/// ADD/SUB/MUL/DIV/MIN/MAX/SQRT/RCP/RSQRT in their SS, SD, PS and PD
/// forms: scalar forms keep the destination's upper lanes.
fn fp_arith<const OP: u8, const DOUBLE: bool, const PACKED: bool>(
    cpu: &mut Cpu,
    ctx: &mut Ctx,
    insn: &Instruction,
) -> Result<(), Fault> {
    check_sse(cpu)?;
    let b = src(cpu, ctx, insn, 1)?;
    let d = xmm(insn.op0_register());
    let a = cpu.regs.fpu.xmm[d];
    let (f, bits) = fmt_of(DOUBLE);
    let mut env = Env::from_mxcsr(cpu.regs.fpu.mxcsr);
    let n = if PACKED { 128 / bits } else { 1 };
    let mut r = a;
    for i in 0..n {
        let z = fop(OP, f, &mut env, u128::from(lane(a, bits, i)), u128::from(lane(b, bits, i)));
        r = with_lane(r, bits, i, z as u64);
    }
    commit(cpu, &env)?;
    cpu.regs.fpu.xmm[d] = r;
    Ok(())
}

/// CMPPS/CMPPD/CMPSS/CMPSD: lanes of all ones where the predicate of
/// imm8[2:0] holds (EQ, LT, LE, UNORD, NEQ, NLT, NLE, ORD; LT/LE and their
/// negations signal on quiet NaNs).
fn cmp<const DOUBLE: bool, const PACKED: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let b = src(cpu, ctx, insn, 1)?;
    let pred = insn.immediate8() & 7;
    let d = xmm(insn.op0_register());
    let a = cpu.regs.fpu.xmm[d];
    let (f, bits) = fmt_of(DOUBLE);
    let mut env = Env::from_mxcsr(cpu.regs.fpu.mxcsr);
    let signaling = matches!(pred, 1 | 2 | 5 | 6);
    let n = if PACKED { 128 / bits } else { 1 };
    let mut r = a;
    for i in 0..n {
        let c = soft::compare(f, &mut env, u128::from(lane(a, bits, i)), u128::from(lane(b, bits, i)), signaling);
        let t = match pred {
            0 => c == Cmp::Equal,
            1 => c == Cmp::Less,
            2 => matches!(c, Cmp::Less | Cmp::Equal),
            3 => c == Cmp::Unordered,
            4 => c != Cmp::Equal,
            5 => c != Cmp::Less,
            6 => !matches!(c, Cmp::Less | Cmp::Equal),
            _ => c != Cmp::Unordered,
        };
        r = with_lane(r, bits, i, all_ones(t));
    }
    commit(cpu, &env)?;
    cpu.regs.fpu.xmm[d] = r;
    Ok(())
}

/// COMISS/COMISD (`SIGNALING`) and UCOMISS/UCOMISD: ZF/PF/CF from the
/// comparison, OF/SF/AF cleared.
fn comis<const DOUBLE: bool, const SIGNALING: bool>(
    cpu: &mut Cpu,
    ctx: &mut Ctx,
    insn: &Instruction,
) -> Result<(), Fault> {
    check_sse(cpu)?;
    let b = src(cpu, ctx, insn, 1)?;
    let a = cpu.regs.fpu.xmm[xmm(insn.op0_register())];
    let (f, bits) = fmt_of(DOUBLE);
    let mut env = Env::from_mxcsr(cpu.regs.fpu.mxcsr);
    let c = soft::compare(f, &mut env, u128::from(lane(a, bits, 0)), u128::from(lane(b, bits, 0)), SIGNALING);
    commit(cpu, &env)?;
    cpu.regs.set_status_flags(fpu::compare_flags(c));
    Ok(())
}

/// CVTSI2SS and CVTSI2SD: a signed 32- or 64-bit integer into the low lane.
fn cvtsi2f<const DOUBLE: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let size = Cpu::op_size(insn, 1);
    let v = src(cpu, ctx, insn, 1)? as u64;
    let v = if size == 4 { i64::from(v as u32 as i32) } else { v as i64 };
    let (f, bits) = fmt_of(DOUBLE);
    let mut env = Env::from_mxcsr(cpu.regs.fpu.mxcsr);
    let r = soft::from_int(f, f.precision(), &mut env, v);
    commit(cpu, &env)?;
    let d = xmm(insn.op0_register());
    cpu.regs.fpu.xmm[d] = with_lane(cpu.regs.fpu.xmm[d], bits, 0, r as u64);
    Ok(())
}

/// CVTSS2SI/CVTSD2SI (rounding by MXCSR.RC) and CVTTSS2SI/CVTTSD2SI
/// (`TRUNC`): the low lane into a 32- or 64-bit GPR; NaNs and overflows
/// give the integer indefinite.
fn cvtf2si<const DOUBLE: bool, const TRUNC: bool>(
    cpu: &mut Cpu,
    ctx: &mut Ctx,
    insn: &Instruction,
) -> Result<(), Fault> {
    check_sse(cpu)?;
    let (f, bits) = fmt_of(DOUBLE);
    let x = u128::from(lane(src(cpu, ctx, insn, 1)?, bits, 0));
    let mut env = Env::from_mxcsr(cpu.regs.fpu.mxcsr);
    let rc = if TRUNC { soft::RC_ZERO } else { env.rc };
    let d = insn.op0_register();
    let width = if d.size() == 8 { 64 } else { 32 };
    let v = soft::to_int(f, &mut env, x, width, rc);
    commit(cpu, &env)?;
    cpu.set_reg(d, v);
    Ok(())
}

/// CVTSS2SD and CVTSD2SS (`TO_DOUBLE` = false): the low lane converted,
/// the destination's other lanes kept.
fn cvtf2f<const TO_DOUBLE: bool>(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_sse(cpu)?;
    let ((from, fb), (to, tb)) = (fmt_of(!TO_DOUBLE), fmt_of(TO_DOUBLE));
    let x = u128::from(lane(src(cpu, ctx, insn, 1)?, fb, 0));
    let mut env = Env::from_mxcsr(cpu.regs.fpu.mxcsr);
    let r = soft::convert(from, to, to.precision(), &mut env, x, true);
    commit(cpu, &env)?;
    let d = xmm(insn.op0_register());
    cpu.regs.fpu.xmm[d] = with_lane(cpu.regs.fpu.xmm[d], tb, 0, r as u64);
    Ok(())
}

/// The packed conversions CVTPS2PD, CVTPD2PS, CVTDQ2PS, CVTPS2DQ,
/// CVTTPS2DQ, CVTDQ2PD, CVTPD2DQ and CVTTPD2DQ. Narrowing ones zero the
/// upper half of the destination.
fn cvt_packed(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    check_sse(cpu)?;
    let s = src(cpu, ctx, insn, 1)?;
    let mut env = Env::from_mxcsr(cpu.regs.fpu.mxcsr);
    let rc = env.rc;
    let m = insn.mnemonic();
    let mut r = 0u128;
    match m {
        M::Cvtps2pd => {
            for i in 0..2 {
                let v = soft::convert(F32, F64, 53, &mut env, u128::from(lane(s, 32, i)), true);
                r = with_lane(r, 64, i, v as u64);
            }
        }
        M::Cvtpd2ps => {
            for i in 0..2 {
                let v = soft::convert(F64, F32, 24, &mut env, u128::from(lane(s, 64, i)), true);
                r = with_lane(r, 32, i, v as u64);
            }
        }
        M::Cvtdq2ps => {
            for i in 0..4 {
                let v = soft::from_int(F32, 24, &mut env, sx(lane(s, 32, i), 32));
                r = with_lane(r, 32, i, v as u64);
            }
        }
        M::Cvtdq2pd => {
            for i in 0..2 {
                let v = soft::from_int(F64, 53, &mut env, sx(lane(s, 32, i), 32));
                r = with_lane(r, 64, i, v as u64);
            }
        }
        M::Cvtps2dq | M::Cvttps2dq => {
            let rc = if m == M::Cvttps2dq { soft::RC_ZERO } else { rc };
            for i in 0..4 {
                let v = soft::to_int(F32, &mut env, u128::from(lane(s, 32, i)), 32, rc);
                r = with_lane(r, 32, i, v);
            }
        }
        _ => {
            let rc = if m == M::Cvttpd2dq { soft::RC_ZERO } else { rc };
            for i in 0..2 {
                let v = soft::to_int(F64, &mut env, u128::from(lane(s, 64, i)), 32, rc);
                r = with_lane(r, 32, i, v);
            }
        }
    }
    commit(cpu, &env)?;
    cpu.regs.fpu.xmm[xmm(insn.op0_register())] = r;
    Ok(())
}

// ---------------------------------------------------------------------
// Selection.

/// Handler for an SSE, SSE2 or MMX mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<Handler> {
    use Mnemonic as M;
    let mm = (0..insn.op_count()).any(|n| insn.op_kind(n) == OpKind::Register && insn.op_register(n).is_mm());
    // The MMX or the XMM flavour of a generic handler.
    macro_rules! pick {
        ($f:ident) => {
            if mm {
                $f::<true> as Handler
            } else {
                $f::<false> as Handler
            }
        };
    }
    // The string instructions share these mnemonics.
    let sse_form = insn.op0_kind() == OpKind::Register || insn.op1_kind() == OpKind::Register;
    use op::*;
    Some(match m {
        M::Movaps | M::Movapd | M::Movdqa | M::Movntps | M::Movntpd | M::Movntdq => mov128::<true>,
        M::Movups | M::Movupd | M::Movdqu => mov128::<false>,
        M::Movd | M::Movq | M::Movq2dq | M::Movdq2q | M::Movntq => movdq,
        M::Movss => movs::<false>,
        M::Movsd if sse_form => movs::<true>,
        M::Movlps | M::Movlpd => movlh::<false>,
        M::Movhps | M::Movhpd => movlh::<true>,
        M::Movhlps | M::Movlhps => movhllh,
        M::Movnti => movnti,
        M::Maskmovq | M::Maskmovdqu => pick!(maskmov),
        M::Ldmxcsr => ldmxcsr,
        M::Stmxcsr => stmxcsr,
        M::Emms => emms,
        M::Pxor | M::Xorps | M::Xorpd => pick!(pxor),
        M::Por | M::Orps | M::Orpd => pick!(por),
        M::Pand | M::Andps | M::Andpd => pick!(pand),
        M::Pandn | M::Andnps | M::Andnpd => pick!(pandn),
        M::Paddb => pick!(paddb),
        M::Paddw => pick!(paddw),
        M::Paddd => pick!(paddd),
        M::Paddq => pick!(paddq),
        M::Psubb => pick!(psubb),
        M::Psubw => pick!(psubw),
        M::Psubd => pick!(psubd),
        M::Psubq => pick!(psubq),
        M::Paddsb => pick!(paddsb),
        M::Paddsw => pick!(paddsw),
        M::Psubsb => pick!(psubsb),
        M::Psubsw => pick!(psubsw),
        M::Paddusb => pick!(paddusb),
        M::Paddusw => pick!(paddusw),
        M::Psubusb => pick!(psubusb),
        M::Psubusw => pick!(psubusw),
        M::Pcmpeqb => pick!(pcmpeqb),
        M::Pcmpeqw => pick!(pcmpeqw),
        M::Pcmpeqd => pick!(pcmpeqd),
        M::Pcmpgtb => pick!(pcmpgtb),
        M::Pcmpgtw => pick!(pcmpgtw),
        M::Pcmpgtd => pick!(pcmpgtd),
        M::Pminub => pick!(pminub),
        M::Pmaxub => pick!(pmaxub),
        M::Pminsw => pick!(pminsw),
        M::Pmaxsw => pick!(pmaxsw),
        M::Pmullw => pick!(pmullw),
        M::Pmulhw => pick!(pmulhw),
        M::Pmulhuw => pick!(pmulhuw),
        M::Pmuludq => pick!(pmuludq),
        M::Pmaddwd => pick!(pmaddwd),
        M::Pavgb => pick!(pavgb),
        M::Pavgw => pick!(pavgw),
        M::Psadbw => pick!(psadbw),
        M::Punpcklbw => pick!(punpcklbw),
        M::Punpcklwd => pick!(punpcklwd),
        M::Punpckldq | M::Unpcklps => pick!(punpckldq),
        M::Punpcklqdq | M::Unpcklpd => pick!(punpcklqdq),
        M::Punpckhbw => pick!(punpckhbw),
        M::Punpckhwd => pick!(punpckhwd),
        M::Punpckhdq | M::Unpckhps => pick!(punpckhdq),
        M::Punpckhqdq | M::Unpckhpd => pick!(punpckhqdq),
        M::Packsswb => pick!(packsswb),
        M::Packssdw => pick!(packssdw),
        M::Packuswb => pick!(packuswb),
        M::Psllw => pick!(psllw),
        M::Pslld => pick!(pslld),
        M::Psllq => pick!(psllq),
        M::Psrlw => pick!(psrlw),
        M::Psrld => pick!(psrld),
        M::Psrlq => pick!(psrlq),
        M::Psraw => pick!(psraw),
        M::Psrad => pick!(psrad),
        M::Pslldq => pslldq::<false>,
        M::Psrldq => psrldq::<false>,
        M::Pshufd | M::Pshuflw | M::Pshufhw | M::Pshufw => pick!(shuffle),
        M::Shufps => shufps,
        M::Shufpd => shufpd,
        M::Pinsrw => pick!(pinsrw),
        // The memory form of PEXTRW is SSE4.1, which is not advertised.
        M::Pextrw if insn.code() != Code::Pextrw_r32m16_xmm_imm8 => pick!(pextrw),
        M::Pmovmskb => pick!(movmsk),
        M::Movmskps | M::Movmskpd => movmsk::<false>,
        M::Addss => fp_arith::<ADD, false, false>,
        M::Addsd => fp_arith::<ADD, true, false>,
        M::Addps => fp_arith::<ADD, false, true>,
        M::Addpd => fp_arith::<ADD, true, true>,
        M::Subss => fp_arith::<SUB, false, false>,
        M::Subsd => fp_arith::<SUB, true, false>,
        M::Subps => fp_arith::<SUB, false, true>,
        M::Subpd => fp_arith::<SUB, true, true>,
        M::Mulss => fp_arith::<MUL, false, false>,
        M::Mulsd => fp_arith::<MUL, true, false>,
        M::Mulps => fp_arith::<MUL, false, true>,
        M::Mulpd => fp_arith::<MUL, true, true>,
        M::Divss => fp_arith::<DIV, false, false>,
        M::Divsd => fp_arith::<DIV, true, false>,
        M::Divps => fp_arith::<DIV, false, true>,
        M::Divpd => fp_arith::<DIV, true, true>,
        M::Minss => fp_arith::<MIN, false, false>,
        M::Minsd => fp_arith::<MIN, true, false>,
        M::Minps => fp_arith::<MIN, false, true>,
        M::Minpd => fp_arith::<MIN, true, true>,
        M::Maxss => fp_arith::<MAX, false, false>,
        M::Maxsd => fp_arith::<MAX, true, false>,
        M::Maxps => fp_arith::<MAX, false, true>,
        M::Maxpd => fp_arith::<MAX, true, true>,
        M::Sqrtss => fp_arith::<SQRT, false, false>,
        M::Sqrtsd => fp_arith::<SQRT, true, false>,
        M::Sqrtps => fp_arith::<SQRT, false, true>,
        M::Sqrtpd => fp_arith::<SQRT, true, true>,
        M::Rcpss => fp_arith::<RCP, false, false>,
        M::Rcpps => fp_arith::<RCP, false, true>,
        M::Rsqrtss => fp_arith::<RSQRT, false, false>,
        M::Rsqrtps => fp_arith::<RSQRT, false, true>,
        M::Cmpss => cmp::<false, false>,
        M::Cmpsd if sse_form => cmp::<true, false>,
        M::Cmpps => cmp::<false, true>,
        M::Cmppd => cmp::<true, true>,
        M::Comiss => comis::<false, true>,
        M::Comisd => comis::<true, true>,
        M::Ucomiss => comis::<false, false>,
        M::Ucomisd => comis::<true, false>,
        M::Cvtsi2ss => cvtsi2f::<false>,
        M::Cvtsi2sd => cvtsi2f::<true>,
        M::Cvtss2si => cvtf2si::<false, false>,
        M::Cvtsd2si => cvtf2si::<true, false>,
        M::Cvttss2si => cvtf2si::<false, true>,
        M::Cvttsd2si => cvtf2si::<true, true>,
        M::Cvtss2sd => cvtf2f::<true>,
        M::Cvtsd2ss => cvtf2f::<false>,
        M::Cvtps2pd
        | M::Cvtpd2ps
        | M::Cvtdq2ps
        | M::Cvtps2dq
        | M::Cvttps2dq
        | M::Cvtdq2pd
        | M::Cvtpd2dq
        | M::Cvttpd2dq => cvt_packed,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    //! SSE/SSE2/MMX tests: raw instruction bytes (their assembly in the
    //! comments) on a test machine. The integer tables' expected values
    //! come from an independent model of each instruction's pseudocode;
    //! `tests/host_sse.rs` compares with the host processor itself.

    use super::*;
    use crate::exec::fpu::tests::expect_fault;
    use crate::testutil::{Machine, CODE, DATA};
    use x86::vector;

    const A: u128 = 0x8000_7fff_0001_ffff_807f_01ff_0010_f00f;
    const B: u128 = 0x7fff_8000_ffff_0002_7f80_ff01_f0f0_0f0f;
    /// A shift count.
    const C: u128 = 5;

    fn with_hlt(op: &[u8]) -> Vec<u8> {
        let mut code = op.to_vec();
        code.push(0xf4);
        code
    }

    fn ps(v: [f32; 4]) -> u128 {
        v.iter().enumerate().fold(0, |r, (i, x)| r | (u128::from(x.to_bits()) << (32 * i)))
    }

    fn pd(v: [f64; 2]) -> u128 {
        u128::from(v[0].to_bits()) | (u128::from(v[1].to_bits()) << 64)
    }

    #[test]
    fn integer_and_logic_ops_match_the_reference_table() {
        let table: &[(&[u8], u128, u128)] = &[
            (&[0x66, 0x0f, 0xef, 0xc1], B, 0xfffffffffffefffdfffffefef0e0ff00), // pxor xmm0, xmm1
            (&[0x66, 0x0f, 0xeb, 0xc1], B, 0xfffffffffffffffffffffffff0f0ff0f), // por xmm0, xmm1
            (&[0x66, 0x0f, 0xdb, 0xc1], B, 0x0000000000010002000001010010000f), // pand xmm0, xmm1
            (&[0x66, 0x0f, 0xdf, 0xc1], B, 0x7fff8000fffe00007f80fe00f0e00f00), // pandn xmm0, xmm1
            (&[0x66, 0x0f, 0xfc, 0xc1], B, 0xffffffffff00ff01ffff0000f000ff1e), // paddb xmm0, xmm1
            (&[0x66, 0x0f, 0xfd, 0xc1], B, 0xffffffff00000001ffff0100f100ff1e), // paddw xmm0, xmm1
            (&[0x66, 0x0f, 0xfe, 0xc1], B, 0xffffffff0001000100000100f100ff1e), // paddd xmm0, xmm1
            (&[0x66, 0x0f, 0xd4, 0xc1], B, 0x000000000001000100000100f100ff1e), // paddq xmm0, xmm1
            (&[0x66, 0x0f, 0xf8, 0xc1], B, 0x0101ffff0102fffd01ff02fe1020e100), // psubb xmm0, xmm1
            (&[0x66, 0x0f, 0xf9, 0xc1], B, 0x0001ffff0002fffd00ff02fe0f20e100), // psubw xmm0, xmm1
            (&[0x66, 0x0f, 0xfa, 0xc1], B, 0x0000ffff0002fffd00fe02fe0f20e100), // psubd xmm0, xmm1
            (&[0x66, 0x0f, 0xfb, 0xc1], B, 0x0000fffe0002fffd00fe02fd0f20e100), // psubq xmm0, xmm1
            (&[0x66, 0x0f, 0xec, 0xc1], B, 0xffffffffff00ff01ffff0000f000ff1e), // paddsb xmm0, xmm1
            (&[0x66, 0x0f, 0xed, 0xc1], B, 0xffffffff00000001ffff0100f100ff1e), // paddsw xmm0, xmm1
            (&[0x66, 0x0f, 0xe8, 0xc1], B, 0x80017fff0102fffd807f02fe1020e100), // psubsb xmm0, xmm1
            (&[0x66, 0x0f, 0xe9, 0xc1], B, 0x80007fff0002fffd800002fe0f20e100), // psubsw xmm0, xmm1
            (&[0x66, 0x0f, 0xdc, 0xc1], B, 0xfffffffffffffffffffffffff0ffff1e), // paddusb xmm0, xmm1
            (&[0x66, 0x0f, 0xdd, 0xc1], B, 0xfffffffffffffffffffffffff100ff1e), // paddusw xmm0, xmm1
            (&[0x66, 0x0f, 0xd8, 0xc1], B, 0x010000ff0000fffd010000fe0000e100), // psubusb xmm0, xmm1
            (&[0x66, 0x0f, 0xd9, 0xc1], B, 0x000100000000fffd00ff00000000e100), // psubusw xmm0, xmm1
            (&[0x66, 0x0f, 0x74, 0xc1], B, 0x000000000000000000000000000000ff), // pcmpeqb xmm0, xmm1
            (&[0x66, 0x0f, 0x75, 0xc1], B, 0x00000000000000000000000000000000), // pcmpeqw xmm0, xmm1
            (&[0x66, 0x0f, 0x76, 0xc1], B, 0x00000000000000000000000000000000), // pcmpeqd xmm0, xmm1
            (&[0x66, 0x0f, 0x64, 0xc1], B, 0x00ffff00ffff000000ffff00ffff0000), // pcmpgtb xmm0, xmm1
            (&[0x66, 0x0f, 0x65, 0xc1], B, 0x0000ffffffff00000000ffffffff0000), // pcmpgtw xmm0, xmm1
            (&[0x66, 0x0f, 0x66, 0xc1], B, 0x00000000ffffffff00000000ffffffff), // pcmpgtd xmm0, xmm1
            (&[0x66, 0x0f, 0xda, 0xc1], B, 0x7f007f00000100027f7f010100100f0f), // pminub xmm0, xmm1
            (&[0x66, 0x0f, 0xde, 0xc1], B, 0x80ff80ffffffffff8080fffff0f0f00f), // pmaxub xmm0, xmm1
            (&[0x66, 0x0f, 0xea, 0xc1], B, 0x80008000ffffffff807fff01f0f0f00f), // pminsw xmm0, xmm1
            (&[0x66, 0x0f, 0xee, 0xc1], B, 0x7fff7fff000100027f8001ff00100f0f), // pmaxsw xmm0, xmm1
            (&[0x66, 0x0f, 0xd5, 0xc1], B, 0x80008000fffffffe408002ff0f00f1e1), // pmullw xmm0, xmm1
            (&[0x66, 0x0f, 0xe5, 0xc1], B, 0xc000c000ffffffffc07ffffeffffff0f), // pmulhw xmm0, xmm1
            (&[0x66, 0x0f, 0xe4, 0xc1], B, 0x3fff3fff000000013fff01fd000f0e1e), // pmulhuw xmm0, xmm1
            (&[0x66, 0x0f, 0xf4, 0xc1], B, 0x0001fffd0004fffe000ff0f01d1ef1e1), // pmuludq xmm0, xmm1
            (&[0x66, 0x0f, 0xf5, 0xc1], B, 0x80010000fffffffdc07d437fff0f00e1), // pmaddwd xmm0, xmm1
            (&[0x66, 0x0f, 0xe0, 0xc1], B, 0x8080808080808081808080807880800f), // pavgb xmm0, xmm1
            (&[0x66, 0x0f, 0xe3, 0xc1], B, 0x80008000800080018000808078807f8f), // pavgw xmm0, xmm1
            (&[0x66, 0x0f, 0xf6, 0xc1], B, 0x00000000000005f900000000000004af), // psadbw xmm0, xmm1
            (&[0x66, 0x0f, 0x60, 0xc1], B, 0x7f80807fff0101fff000f0100ff00f0f), // punpcklbw xmm0, xmm1
            (&[0x66, 0x0f, 0x61, 0xc1], B, 0x7f80807fff0101fff0f000100f0ff00f), // punpcklwd xmm0, xmm1
            (&[0x66, 0x0f, 0x62, 0xc1], B, 0x7f80ff01807f01fff0f00f0f0010f00f), // punpckldq xmm0, xmm1
            (&[0x66, 0x0f, 0x6c, 0xc1], B, 0x7f80ff01f0f00f0f807f01ff0010f00f), // punpcklqdq xmm0, xmm1
            (&[0x66, 0x0f, 0x68, 0xc1], B, 0x7f80ff00807f00ffff00ff0100ff02ff), // punpckhbw xmm0, xmm1
            (&[0x66, 0x0f, 0x69, 0xc1], B, 0x7fff800080007fffffff00010002ffff), // punpckhwd xmm0, xmm1
            (&[0x66, 0x0f, 0x6a, 0xc1], B, 0x7fff800080007fffffff00020001ffff), // punpckhdq xmm0, xmm1
            (&[0x66, 0x0f, 0x6d, 0xc1], B, 0x7fff8000ffff000280007fff0001ffff), // punpckhqdq xmm0, xmm1
            (&[0x0f, 0x14, 0xc1], B, 0x7f80ff01807f01fff0f00f0f0010f00f),       // unpcklps xmm0, xmm1
            (&[0x0f, 0x15, 0xc1], B, 0x7fff800080007fffffff00020001ffff),       // unpckhps xmm0, xmm1
            (&[0x66, 0x0f, 0x14, 0xc1], B, 0x7f80ff01f0f00f0f807f01ff0010f00f), // unpcklpd xmm0, xmm1
            (&[0x66, 0x0f, 0x15, 0xc1], B, 0x7fff8000ffff000280007fff0001ffff), // unpckhpd xmm0, xmm1
            (&[0x66, 0x0f, 0x63, 0xc1], B, 0x7f80ff027f80807f807f01ff807f1080), // packsswb xmm0, xmm1
            (&[0x66, 0x0f, 0x6b, 0xc1], B, 0x7fff80007fff800080007fff80007fff), // packssdw xmm0, xmm1
            (&[0x66, 0x0f, 0x67, 0xc1], B, 0xff000002ff0000ff00ff010000ff1000), // packuswb xmm0, xmm1
            (&[0x0f, 0x57, 0xc1], B, 0xfffffffffffefffdfffffefef0e0ff00),       // xorps xmm0, xmm1
            (&[0x66, 0x0f, 0x57, 0xc1], B, 0xfffffffffffefffdfffffefef0e0ff00), // xorpd xmm0, xmm1
            (&[0x0f, 0x54, 0xc1], B, 0x0000000000010002000001010010000f),       // andps xmm0, xmm1
            (&[0x66, 0x0f, 0x54, 0xc1], B, 0x0000000000010002000001010010000f), // andpd xmm0, xmm1
            (&[0x0f, 0x55, 0xc1], B, 0x7fff8000fffe00007f80fe00f0e00f00),       // andnps xmm0, xmm1
            (&[0x66, 0x0f, 0x55, 0xc1], B, 0x7fff8000fffe00007f80fe00f0e00f00), // andnpd xmm0, xmm1
            (&[0x0f, 0x56, 0xc1], B, 0xfffffffffffffffffffffffff0f0ff0f),       // orps xmm0, xmm1
            (&[0x66, 0x0f, 0x56, 0xc1], B, 0xfffffffffffffffffffffffff0f0ff0f), // orpd xmm0, xmm1
            (&[0x66, 0x0f, 0xf1, 0xc1], C, 0x0000ffe00020ffe00fe03fe0020001e0), // psllw xmm0, xmm1
            (&[0x66, 0x0f, 0xf2, 0xc1], C, 0x000fffe0003fffe00fe03fe0021e01e0), // pslld xmm0, xmm1
            (&[0x66, 0x0f, 0xf3, 0xc1], C, 0x000fffe0003fffe00fe03fe0021e01e0), // psllq xmm0, xmm1
            (&[0x66, 0x0f, 0xd1, 0xc1], C, 0x040003ff000007ff0403000f00000780), // psrlw xmm0, xmm1
            (&[0x66, 0x0f, 0xd2, 0xc1], C, 0x040003ff00000fff0403f80f00008780), // psrld xmm0, xmm1
            (&[0x66, 0x0f, 0xd3, 0xc1], C, 0x040003fff8000fff0403f80ff8008780), // psrlq xmm0, xmm1
            (&[0x66, 0x0f, 0xe1, 0xc1], C, 0xfc0003ff0000fffffc03000f0000ff80), // psraw xmm0, xmm1
            (&[0x66, 0x0f, 0xe2, 0xc1], C, 0xfc0003ff00000ffffc03f80f00008780), // psrad xmm0, xmm1
            (&[0x66, 0x0f, 0xf1, 0xc1], B, 0x00000000000000000000000000000000), // psllw xmm0, xmm1
            (&[0x66, 0x0f, 0xd2, 0xc1], B, 0x00000000000000000000000000000000), // psrld xmm0, xmm1
            (&[0x66, 0x0f, 0xe1, 0xc1], B, 0xffff00000000ffffffff00000000ffff), // psraw xmm0, xmm1
            (&[0x66, 0x0f, 0xe2, 0xc1], B, 0xffffffff00000000ffffffff00000000), // psrad xmm0, xmm1
        ];
        for &(op, b, want) in table {
            let mut m = Machine::long64(&with_hlt(op));
            m.cpu.regs.fpu.xmm[0] = A;
            m.cpu.regs.fpu.xmm[1] = b;
            m.run_to_hlt();
            assert_eq!(m.cpu.regs.fpu.xmm[0], want, "{op:02x?}: {:#034x}", m.cpu.regs.fpu.xmm[0]);
            assert_eq!(m.cpu.regs.fpu.xmm[1], b, "source unchanged");
        }
    }

    #[test]
    fn immediate_forms_match_the_reference_table() {
        let table: &[(&[u8], u128)] = &[
            (&[0x66, 0x0f, 0x70, 0xc1, 0x1b], 0xf0f00f0f7f80ff01ffff00027fff8000), // pshufd xmm0, xmm1, 0x1b
            (&[0x66, 0x0f, 0x70, 0xc1, 0xd8], 0x7fff80007f80ff01ffff0002f0f00f0f), // pshufd xmm0, xmm1, 0xd8
            (&[0xf2, 0x0f, 0x70, 0xc1, 0x1b], 0x7fff8000ffff00020f0ff0f0ff017f80), // pshuflw xmm0, xmm1, 0x1b
            (&[0xf3, 0x0f, 0x70, 0xc1, 0x4e], 0xffff00027fff80007f80ff01f0f00f0f), // pshufhw xmm0, xmm1, 0x4e
            (&[0x0f, 0xc6, 0xc1, 0x4e], 0x7f80ff01f0f00f0f80007fff0001ffff),       // shufps xmm0, xmm1, 0x4e
            (&[0x0f, 0xc6, 0xc1, 0xb1], 0xffff00027fff80000010f00f807f01ff),       // shufps xmm0, xmm1, 0xb1
            (&[0x66, 0x0f, 0xc6, 0xc1, 0x01], 0x7f80ff01f0f00f0f80007fff0001ffff), // shufpd xmm0, xmm1, 1
            (&[0x66, 0x0f, 0xc6, 0xc1, 0x02], 0x7fff8000ffff0002807f01ff0010f00f), // shufpd xmm0, xmm1, 2
            (&[0x66, 0x0f, 0x71, 0xf0, 0x03], 0x0000fff80008fff803f80ff800808078), // psllw xmm0, 3
            (&[0x66, 0x0f, 0x72, 0xf0, 0x07], 0x003fff8000ffff803f80ff8008780780), // pslld xmm0, 7
            (&[0x66, 0x0f, 0x73, 0xf0, 0x21], 0x0003fffe000000000021e01e00000000), // psllq xmm0, 33
            (&[0x66, 0x0f, 0x71, 0xd0, 0x0f], 0x00010000000000010001000000000001), // psrlw xmm0, 15
            (&[0x66, 0x0f, 0x72, 0xd0, 0x10], 0x00008000000000010000807f00000010), // psrld xmm0, 16
            (&[0x66, 0x0f, 0x73, 0xd0, 0x40], 0x00000000000000000000000000000000), // psrlq xmm0, 64
            (&[0x66, 0x0f, 0x71, 0xe0, 0xc8], 0xffff00000000ffffffff00000000ffff), // psraw xmm0, 200
            (&[0x66, 0x0f, 0x72, 0xe0, 0x1f], 0xffffffff00000000ffffffff00000000), // psrad xmm0, 31
            (&[0x66, 0x0f, 0x72, 0xe0, 0x04], 0xf80007ff00001ffff807f01f00010f00), // psrad xmm0, 4
            (&[0x66, 0x0f, 0x73, 0xf8, 0x03], 0xff0001ffff807f01ff0010f00f000000), // pslldq xmm0, 3
            (&[0x66, 0x0f, 0x73, 0xd8, 0x0f], 0x00000000000000000000000000000080), // psrldq xmm0, 15
            (&[0x66, 0x0f, 0x73, 0xd8, 0x11], 0x00000000000000000000000000000000), // psrldq xmm0, 17
            (&[0x66, 0x0f, 0x73, 0xf8, 0x10], 0x00000000000000000000000000000000), // pslldq xmm0, 16
            (&[0x66, 0x0f, 0xc4, 0xc1, 0x05], 0x80007fff1234ffff807f01ff0010f00f), // pinsrw xmm0, ecx, 5
            (&[0x66, 0x0f, 0xc4, 0xc1, 0x0d], 0x80007fff1234ffff807f01ff0010f00f), // pinsrw xmm0, ecx, 13
        ];
        for &(op, want) in table {
            let mut m = Machine::long64(&with_hlt(op));
            m.cpu.regs.fpu.xmm[0] = A;
            m.cpu.regs.fpu.xmm[1] = B;
            m.cpu.regs.gpr[1] = 0xffff_1234;
            m.run_to_hlt();
            assert_eq!(m.cpu.regs.fpu.xmm[0], want, "{op:02x?}: {:#034x}", m.cpu.regs.fpu.xmm[0]);
        }
    }

    #[test]
    fn mmx_forms_share_the_lane_operations() {
        let table: &[(&[u8], u128, u64)] = &[
            (&[0x0f, 0xef, 0xc1], B, 0xfffffefef0e0ff00), // pxor mm0, mm1
            (&[0x0f, 0xeb, 0xc1], B, 0xfffffffff0f0ff0f), // por mm0, mm1
            (&[0x0f, 0xdb, 0xc1], B, 0x000001010010000f), // pand mm0, mm1
            (&[0x0f, 0xdf, 0xc1], B, 0x7f80fe00f0e00f00), // pandn mm0, mm1
            (&[0x0f, 0xfc, 0xc1], B, 0xffff0000f000ff1e), // paddb mm0, mm1
            (&[0x0f, 0xfd, 0xc1], B, 0xffff0100f100ff1e), // paddw mm0, mm1
            (&[0x0f, 0xfe, 0xc1], B, 0x00000100f100ff1e), // paddd mm0, mm1
            (&[0x0f, 0xd4, 0xc1], B, 0x00000100f100ff1e), // paddq mm0, mm1
            (&[0x0f, 0xf8, 0xc1], B, 0x01ff02fe1020e100), // psubb mm0, mm1
            (&[0x0f, 0xf9, 0xc1], B, 0x00ff02fe0f20e100), // psubw mm0, mm1
            (&[0x0f, 0xfa, 0xc1], B, 0x00fe02fe0f20e100), // psubd mm0, mm1
            (&[0x0f, 0xfb, 0xc1], B, 0x00fe02fd0f20e100), // psubq mm0, mm1
            (&[0x0f, 0xec, 0xc1], B, 0xffff0000f000ff1e), // paddsb mm0, mm1
            (&[0x0f, 0xed, 0xc1], B, 0xffff0100f100ff1e), // paddsw mm0, mm1
            (&[0x0f, 0xe8, 0xc1], B, 0x807f02fe1020e100), // psubsb mm0, mm1
            (&[0x0f, 0xe9, 0xc1], B, 0x800002fe0f20e100), // psubsw mm0, mm1
            (&[0x0f, 0xdc, 0xc1], B, 0xfffffffff0ffff1e), // paddusb mm0, mm1
            (&[0x0f, 0xdd, 0xc1], B, 0xfffffffff100ff1e), // paddusw mm0, mm1
            (&[0x0f, 0xd8, 0xc1], B, 0x010000fe0000e100), // psubusb mm0, mm1
            (&[0x0f, 0xd9, 0xc1], B, 0x00ff00000000e100), // psubusw mm0, mm1
            (&[0x0f, 0x74, 0xc1], B, 0x00000000000000ff), // pcmpeqb mm0, mm1
            (&[0x0f, 0x75, 0xc1], B, 0x0000000000000000), // pcmpeqw mm0, mm1
            (&[0x0f, 0x76, 0xc1], B, 0x0000000000000000), // pcmpeqd mm0, mm1
            (&[0x0f, 0x64, 0xc1], B, 0x00ffff00ffff0000), // pcmpgtb mm0, mm1
            (&[0x0f, 0x65, 0xc1], B, 0x0000ffffffff0000), // pcmpgtw mm0, mm1
            (&[0x0f, 0x66, 0xc1], B, 0x00000000ffffffff), // pcmpgtd mm0, mm1
            (&[0x0f, 0xda, 0xc1], B, 0x7f7f010100100f0f), // pminub mm0, mm1
            (&[0x0f, 0xde, 0xc1], B, 0x8080fffff0f0f00f), // pmaxub mm0, mm1
            (&[0x0f, 0xea, 0xc1], B, 0x807fff01f0f0f00f), // pminsw mm0, mm1
            (&[0x0f, 0xee, 0xc1], B, 0x7f8001ff00100f0f), // pmaxsw mm0, mm1
            (&[0x0f, 0xd5, 0xc1], B, 0x408002ff0f00f1e1), // pmullw mm0, mm1
            (&[0x0f, 0xe5, 0xc1], B, 0xc07ffffeffffff0f), // pmulhw mm0, mm1
            (&[0x0f, 0xe4, 0xc1], B, 0x3fff01fd000f0e1e), // pmulhuw mm0, mm1
            (&[0x0f, 0xf4, 0xc1], B, 0x000ff0f01d1ef1e1), // pmuludq mm0, mm1
            (&[0x0f, 0xf5, 0xc1], B, 0xc07d437fff0f00e1), // pmaddwd mm0, mm1
            (&[0x0f, 0xe0, 0xc1], B, 0x808080807880800f), // pavgb mm0, mm1
            (&[0x0f, 0xe3, 0xc1], B, 0x8000808078807f8f), // pavgw mm0, mm1
            (&[0x0f, 0xf6, 0xc1], B, 0x00000000000004af), // psadbw mm0, mm1
            (&[0x0f, 0x60, 0xc1], B, 0xf000f0100ff00f0f), // punpcklbw mm0, mm1
            (&[0x0f, 0x61, 0xc1], B, 0xf0f000100f0ff00f), // punpcklwd mm0, mm1
            (&[0x0f, 0x62, 0xc1], B, 0xf0f00f0f0010f00f), // punpckldq mm0, mm1
            (&[0x0f, 0x68, 0xc1], B, 0x7f80807fff0101ff), // punpckhbw mm0, mm1
            (&[0x0f, 0x69, 0xc1], B, 0x7f80807fff0101ff), // punpckhwd mm0, mm1
            (&[0x0f, 0x6a, 0xc1], B, 0x7f80ff01807f01ff), // punpckhdq mm0, mm1
            (&[0x0f, 0x63, 0xc1], B, 0x7f80807f807f1080), // packsswb mm0, mm1
            (&[0x0f, 0x6b, 0xc1], B, 0x7fff800080007fff), // packssdw mm0, mm1
            (&[0x0f, 0x67, 0xc1], B, 0xff0000ff00ff1000), // packuswb mm0, mm1
            (&[0x0f, 0xf1, 0xc1], C, 0x0fe03fe0020001e0), // psllw mm0, mm1
            (&[0x0f, 0xf2, 0xc1], C, 0x0fe03fe0021e01e0), // pslld mm0, mm1
            (&[0x0f, 0xf3, 0xc1], C, 0x0fe03fe0021e01e0), // psllq mm0, mm1
            (&[0x0f, 0xd1, 0xc1], C, 0x0403000f00000780), // psrlw mm0, mm1
            (&[0x0f, 0xd2, 0xc1], C, 0x0403f80f00008780), // psrld mm0, mm1
            (&[0x0f, 0xd3, 0xc1], C, 0x0403f80ff8008780), // psrlq mm0, mm1
            (&[0x0f, 0xe1, 0xc1], C, 0xfc03000f0000ff80), // psraw mm0, mm1
            (&[0x0f, 0xe2, 0xc1], C, 0xfc03f80f00008780), // psrad mm0, mm1
        ];
        for &(op, b, want) in table {
            let mut m = Machine::long64(&with_hlt(op));
            fpu::mmx_write(&mut m.cpu.regs.fpu, 0, A as u64);
            fpu::mmx_write(&mut m.cpu.regs.fpu, 1, b as u64);
            // An x87 state with TOP = 3 and two registers in use.
            m.cpu.regs.fpu.fsw = 3 << 11;
            m.cpu.regs.fpu.ftw = 0x18;
            m.run_to_hlt();
            let f = &m.cpu.regs.fpu;
            assert_eq!(fpu::mmx_read(f, 0), want, "{op:02x?}: {:#018x}", fpu::mmx_read(f, 0));
            // MMX state: TOP = 0, every tag valid, exponents all ones.
            assert_eq!((f.fsw, f.ftw), (0, 0xff));
            assert_eq!(fpu::read_phys(f, 0) >> 64, 0xffff);
        }
    }

    #[test]
    fn mmx_moves_emms_and_availability() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0x0f, 0x6f, 0x13, // movq mm2, [rbx]
            0x0f, 0x7f, 0x53, 0x08, // movq [rbx+8], mm2
            0x0f, 0x7e, 0xd0, // movd eax, mm2
            0x0f, 0x6e, 0xd9, // movd mm3, ecx
            0x0f, 0x6f, 0xe3, // movq mm4, mm3
            0x0f, 0x70, 0xea, 0x1b, // pshufw mm5, mm2, 0x1b
            0x0f, 0xc5, 0xd2, 0x03, // pextrw edx, mm2, 3
            0x0f, 0xc4, 0x33, 0x02, // pinsrw mm6, [rbx], 2
            0x0f, 0xd7, 0xf2, // pmovmskb esi, mm2
            0xf3, 0x0f, 0xd6, 0xca, // movq2dq xmm1, mm2
            0xf2, 0x0f, 0xd6, 0xfa, // movdq2q mm7, xmm2
            0x0f, 0xe7, 0x7b, 0x10, // movntq [rbx+16], mm7
            0x0f, 0x77, // emms
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u64(DATA, 0x8899_aabb_ccdd_eeff).unwrap();
        m.cpu.regs.gpr[1] = 0xffff_ffff_1234_5678;
        m.cpu.regs.fpu.xmm[1] = u128::MAX;
        m.cpu.regs.fpu.xmm[2] = 0x1111_2222_3333_4444_5555_6666_7777_8888;
        m.run_to_hlt();
        let f = &m.cpu.regs.fpu;
        assert_eq!(m.mem.read_u64(DATA + 8).unwrap(), 0x8899_aabb_ccdd_eeff);
        assert_eq!(m.gpr(0), 0xccdd_eeff);
        assert_eq!(fpu::mmx_read(f, 3), 0x1234_5678);
        assert_eq!(fpu::mmx_read(f, 4), 0x1234_5678);
        assert_eq!(fpu::mmx_read(f, 5), 0xeeff_ccdd_aabb_8899);
        assert_eq!(m.gpr(2), 0x8899);
        assert_eq!(fpu::mmx_read(f, 6) >> 32 & 0xffff, 0xeeff);
        assert_eq!(m.gpr(6), 0xff, "sign bits of ff ee dd cc bb aa 99 88");
        assert_eq!(f.xmm[1], 0x8899_aabb_ccdd_eeff, "MOVQ2DQ zeroes the upper half");
        assert_eq!(m.mem.read_u64(DATA + 16).unwrap(), 0x5555_6666_7777_8888);
        assert_eq!(f.ftw, 0, "EMMS");

        // paddb mm0, mm1 ; hlt
        let op = [0x0f, 0xfc, 0xc1, 0xf4];
        let mut m = Machine::long64(&op);
        m.cpu.regs.cr0 |= x86::Cr0::EM.bits();
        assert_eq!(expect_fault(&mut m), (vector::UD, None, CODE));
        let mut m = Machine::long64(&op);
        m.cpu.regs.cr0 |= x86::Cr0::TS.bits();
        assert_eq!(expect_fault(&mut m), (vector::NM, None, CODE));
        let mut m = Machine::long64(&op);
        m.cpu.regs.fpu.fsw = 0x8081;
        assert_eq!(expect_fault(&mut m), (vector::MF, None, CODE), "pending x87 exception");
        // CR4.OSFXSR does not concern MMX.
        let mut m = Machine::long64(&op);
        m.cpu.regs.cr4 &= !x86::Cr4::OSFXSR.bits();
        m.run_to_hlt();
    }

    #[test]
    fn sse_availability() {
        // addps xmm0, xmm1 ; hlt
        let op = [0x0f, 0x58, 0xc1, 0xf4];
        let mut m = Machine::long64(&op);
        m.cpu.regs.cr0 |= x86::Cr0::EM.bits();
        assert_eq!(expect_fault(&mut m), (vector::UD, None, CODE), "CR0.EM");
        let mut m = Machine::long64(&op);
        m.cpu.regs.cr4 &= !x86::Cr4::OSFXSR.bits();
        assert_eq!(expect_fault(&mut m), (vector::UD, None, CODE), "CR4.OSFXSR");
        let mut m = Machine::long64(&op);
        m.cpu.regs.cr0 |= x86::Cr0::TS.bits();
        assert_eq!(expect_fault(&mut m), (vector::NM, None, CODE), "CR0.TS");
        // #UD wins over #NM.
        let mut m = Machine::long64(&op);
        m.cpu.regs.cr0 |= (x86::Cr0::TS | x86::Cr0::EM).bits();
        assert_eq!(expect_fault(&mut m), (vector::UD, None, CODE));
        // ldmxcsr [rax] ; hlt
        let mut m = Machine::long64(&[0x0f, 0xae, 0x10, 0xf4]);
        m.cpu.regs.cr0 |= x86::Cr0::TS.bits();
        assert_eq!(expect_fault(&mut m), (vector::NM, None, CODE));
        // movnti [rax], ecx ; hlt: a plain store, whatever CR0 and CR4 say.
        let mut m = Machine::long64(&[0x0f, 0xc3, 0x08, 0xf4]);
        m.cpu.regs.cr0 |= (x86::Cr0::TS | x86::Cr0::EM).bits();
        m.cpu.regs.gpr[0] = DATA;
        m.cpu.regs.gpr[1] = 0x1234_5678;
        m.run_to_hlt();
        assert_eq!(m.mem.read_u32(DATA).unwrap(), 0x1234_5678);
    }

    #[test]
    fn whole_register_moves_and_alignment() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0x0f, 0x28, 0x03, // movaps xmm0, [rbx]
            0x0f, 0x10, 0x4b, 0x01, // movups xmm1, [rbx+1]
            0x66, 0x0f, 0x6f, 0xd0, // movdqa xmm2, xmm0
            0x0f, 0x11, 0x53, 0x41, // movups [rbx+0x41], xmm2
            0x66, 0x0f, 0xe7, 0x4b, 0x60, // movntdq [rbx+0x60], xmm1
            0xf3, 0x0f, 0x6f, 0x5b, 0x41, // movdqu xmm3, [rbx+0x41]
            0x66, 0x0f, 0x28, 0xe1, // movapd xmm4, xmm1
            0x66, 0x0f, 0x11, 0xa3, 0x81, 0x00, 0x00, 0x00, // movupd [rbx+0x81], xmm4
            0x0f, 0x2b, 0x83, 0xa0, 0x00, 0x00, 0x00, // movntps [rbx+0xa0], xmm0
            0xf3, 0x0f, 0x58, 0x6b, 0x03, // addss xmm5, [rbx+3]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        let bytes: Vec<u8> = (0..32).collect();
        m.mem.write(DATA, &bytes).unwrap();
        m.run_to_hlt();
        let x0 = u128::from_le_bytes(bytes[..16].try_into().unwrap());
        let x1 = u128::from_le_bytes(bytes[1..17].try_into().unwrap());
        let f = &m.cpu.regs.fpu;
        assert_eq!([f.xmm[0], f.xmm[1], f.xmm[2], f.xmm[3], f.xmm[4]], [x0, x1, x0, x0, x1]);
        let read = |a: u64| {
            let mut b = [0u8; 16];
            m.mem.read(a, &mut b).unwrap();
            u128::from_le_bytes(b)
        };
        assert_eq!([read(DATA + 0x41), read(DATA + 0x60), read(DATA + 0x81), read(DATA + 0xa0)], [x0, x1, x1, x0]);

        // Misaligned MOVAPS load and store, MOVDQA, and a misaligned packed
        // operand: #GP(0), nothing written.
        for op in [
            &[0x0f, 0x28, 0x43, 0x01][..],   // movaps xmm0, [rbx+1]
            &[0x0f, 0x29, 0x43, 0x08],       // movaps [rbx+8], xmm0
            &[0x66, 0x0f, 0x6f, 0x43, 0x04], // movdqa xmm0, [rbx+4]
            &[0x66, 0x0f, 0xfc, 0x43, 0x02], // paddb xmm0, [rbx+2]
            &[0x0f, 0x2b, 0x43, 0x08],       // movntps [rbx+8], xmm0
        ] {
            let mut m = Machine::long64(&with_hlt(op));
            m.cpu.regs.gpr[3] = DATA;
            m.cpu.regs.fpu.xmm[0] = A;
            assert_eq!(expect_fault(&mut m), (vector::GP, Some(0), CODE), "{op:02x?}");
            assert_eq!(m.cpu.regs.fpu.xmm[0], A);
            assert_eq!(m.mem.read_u64(DATA + 8).unwrap(), 0);
        }
    }

    #[test]
    fn stores_that_cross_into_an_unmapped_page_write_nothing() {
        // movups [rbx], xmm0 with its last 8 bytes in an unmapped 2 MiB page.
        let mut m = Machine::long64(&[0x0f, 0x11, 0x03, 0xf4]);
        m.mem.write_u64(0x3008, 0).unwrap();
        m.cpu.regs.gpr[3] = (2 << 20) - 8;
        m.cpu.regs.fpu.xmm[0] = A;
        let (v, code, rip) = expect_fault(&mut m);
        assert_eq!((v, code, rip), (vector::PF, Some(2), CODE));
        assert_eq!(m.cpu.regs.cr2, 2 << 20);
        assert_eq!(m.mem.read_u64((2 << 20) - 8).unwrap(), 0);
    }

    #[test]
    fn movd_and_movq_forms() {
        let code = [
            0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, 0x1122334455667788
            0x66, 0x48, 0x0f, 0x6e, 0xc0, // movq xmm0, rax
            0x66, 0x0f, 0x6e, 0xc8, // movd xmm1, eax
            0x66, 0x0f, 0x7e, 0xc1, // movd ecx, xmm0
            0x66, 0x48, 0x0f, 0x7e, 0xc2, // movq rdx, xmm0
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xf3, 0x0f, 0x7e, 0x13, // movq xmm2, [rbx]
            0x66, 0x0f, 0xd6, 0x43, 0x10, // movq [rbx+16], xmm0
            0x66, 0x0f, 0x7e, 0x4b, 0x18, // movd [rbx+24], xmm1
            0xf3, 0x0f, 0x7e, 0xda, // movq xmm3, xmm2
            0x66, 0x0f, 0xd6, 0xc4, // movq xmm4, xmm0 (the 66 0F D6 /r form)
            0x66, 0x0f, 0x6e, 0x2b, // movd xmm5, [rbx]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        for i in 0..6 {
            m.cpu.regs.fpu.xmm[i] = u128::MAX;
        }
        m.cpu.regs.gpr[1] = u64::MAX;
        m.mem.write_u64(DATA, 0xdead_beef_cafe_f00d).unwrap();
        m.mem.write_u64(DATA + 24, u64::MAX).unwrap();
        m.run_to_hlt();
        let f = &m.cpu.regs.fpu;
        assert_eq!(f.xmm[0], 0x1122_3344_5566_7788);
        assert_eq!(f.xmm[1], 0x5566_7788);
        assert_eq!((m.gpr(1), m.gpr(2)), (0x5566_7788, 0x1122_3344_5566_7788));
        assert_eq!(f.xmm[2], 0xdead_beef_cafe_f00d);
        assert_eq!(m.mem.read_u64(DATA + 16).unwrap(), 0x1122_3344_5566_7788);
        assert_eq!(m.mem.read_u64(DATA + 24).unwrap(), 0xffff_ffff_5566_7788);
        assert_eq!(f.xmm[3], 0xdead_beef_cafe_f00d);
        assert_eq!(f.xmm[4], 0x1122_3344_5566_7788, "66 0F D6 register form");
        assert_eq!(f.xmm[5], 0xcafe_f00d);
    }

    #[test]
    fn scalar_and_half_moves() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xf3, 0x0f, 0x10, 0xc1, // movss xmm0, xmm1
            0xf2, 0x0f, 0x10, 0xd1, // movsd xmm2, xmm1
            0xf3, 0x0f, 0x10, 0x1b, // movss xmm3, [rbx]
            0xf2, 0x0f, 0x10, 0x23, // movsd xmm4, [rbx]
            0xf3, 0x0f, 0x11, 0x4b, 0x10, // movss [rbx+16], xmm1
            0xf2, 0x0f, 0x11, 0x4b, 0x20, // movsd [rbx+32], xmm1
            0x0f, 0x12, 0x2b, // movlps xmm5, [rbx]
            0x0f, 0x16, 0x33, // movhps xmm6, [rbx]
            0x66, 0x0f, 0x13, 0x4b, 0x30, // movlpd [rbx+48], xmm1
            0x66, 0x0f, 0x17, 0x4b, 0x38, // movhpd [rbx+56], xmm1
            0x0f, 0x12, 0xf9, // movhlps xmm7, xmm1
            0x44, 0x0f, 0x16, 0xc1, // movlhps xmm8, xmm1
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        let ones = u128::MAX;
        for i in 0..9 {
            m.cpu.regs.fpu.xmm[i] = ones;
        }
        m.cpu.regs.fpu.xmm[1] = B;
        m.mem.write(DATA, &A.to_le_bytes()).unwrap();
        m.mem.write(DATA + 16, &[0xee; 48]).unwrap();
        m.run_to_hlt();
        let f = &m.cpu.regs.fpu;
        let lo32 = 0xffff_ffffu128;
        let lo64 = u128::from(u64::MAX);
        assert_eq!(f.xmm[0], (ones & !lo32) | (B & lo32));
        assert_eq!(f.xmm[2], (ones & !lo64) | (B & lo64));
        assert_eq!(f.xmm[3], A & lo32, "loads zero the rest");
        assert_eq!(f.xmm[4], A & lo64);
        assert_eq!(m.mem.read_u64(DATA + 16).unwrap(), 0xeeee_eeee_0000_0000 | (B as u64 & 0xffff_ffff));
        assert_eq!(m.mem.read_u64(DATA + 32).unwrap(), B as u64);
        assert_eq!(m.mem.read_u64(DATA + 40).unwrap(), 0xeeee_eeee_eeee_eeee);
        assert_eq!(f.xmm[5], (ones & !lo64) | (A & lo64));
        assert_eq!(f.xmm[6], (A << 64) | lo64);
        assert_eq!(m.mem.read_u64(DATA + 48).unwrap(), B as u64);
        assert_eq!(m.mem.read_u64(DATA + 56).unwrap(), (B >> 64) as u64);
        assert_eq!(f.xmm[7], (ones & !lo64) | (B >> 64));
        assert_eq!(f.xmm[8], (B << 64) | lo64);
    }

    #[test]
    fn sign_masks_and_word_extraction() {
        let code = [
            0x66, 0x0f, 0xd7, 0xc0, // pmovmskb eax, xmm0
            0x0f, 0x50, 0xc8, // movmskps ecx, xmm0
            0x66, 0x0f, 0x50, 0xd0, // movmskpd rdx, xmm0
            0x66, 0x0f, 0xc5, 0xf0, 0x06, // pextrw esi, xmm0, 6
            0x66, 0x0f, 0xc5, 0xf8, 0x0f, // pextrw edi, xmm0, 15
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.cpu.regs.fpu.xmm[0] = A;
        m.cpu.regs.gpr[1] = u64::MAX;
        m.run_to_hlt();
        // Bytes of A from the top: 80 00 7f ff 00 01 ff ff 80 7f 01 ff 00 10 f0 0f.
        assert_eq!(m.gpr(0), 0b1001_0011_1001_0010);
        assert_eq!(m.gpr(1), 0b1010);
        assert_eq!(m.gpr(2), 0b11);
        assert_eq!(m.gpr(6), 0x7fff);
        assert_eq!(m.gpr(7), 0x8000, "the index is taken modulo 8");
    }

    #[test]
    fn mxcsr_load_and_store() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0x0f, 0xae, 0x5b, 0x04, // stmxcsr [rbx+4]
            0x0f, 0xae, 0x13, // ldmxcsr [rbx]
            0x0f, 0xae, 0x5b, 0x08, // stmxcsr [rbx+8]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u32(DATA, 0xffff).unwrap();
        m.run_to_hlt();
        assert_eq!(m.mem.read_u32(DATA + 4).unwrap(), 0x1f80);
        assert_eq!(m.mem.read_u32(DATA + 8).unwrap(), 0xffff, "DAZ is supported");
        let mut m = Machine::long64(&code);
        m.mem.write_u32(DATA, 0x1_1f80).unwrap();
        assert_eq!(expect_fault(&mut m), (vector::GP, Some(0), CODE + 7 + 4));
        assert_eq!(m.cpu.regs.fpu.mxcsr, 0x1f80);
    }

    /// Runs `op` with XMM0 = a, XMM1 = b and MXCSR; returns (XMM0, MXCSR).
    fn fp(op: &[u8], a: u128, b: u128, mxcsr: u32) -> (u128, u32) {
        let mut m = Machine::long64(&with_hlt(op));
        m.cpu.regs.fpu.xmm[0] = a;
        m.cpu.regs.fpu.xmm[1] = b;
        m.cpu.regs.fpu.mxcsr = mxcsr;
        m.run_to_hlt();
        (m.cpu.regs.fpu.xmm[0], m.cpu.regs.fpu.mxcsr)
    }

    #[test]
    fn floating_point_arithmetic() {
        let nan32 = f32::from_bits(0xffc0_0000);
        let d = 0x1f80;
        // (instruction, XMM0, XMM1, MXCSR, XMM0 after, MXCSR after)
        type Case = (&'static [u8], u128, u128, u32, u128, u32);
        let table: &[Case] = &[
            // addss xmm0, xmm1: the upper lanes stay.
            (
                &[0xf3, 0x0f, 0x58, 0xc1],
                ps([1.5, 9.0, 8.0, 7.0]),
                ps([2.25, 1.0, 1.0, 1.0]),
                d,
                ps([3.75, 9.0, 8.0, 7.0]),
                d,
            ),
            // addps xmm0, xmm1: inexact, overflow, exact cancellation, -0 + -0.
            (
                &[0x0f, 0x58, 0xc1],
                ps([1.0, f32::MAX, 1.0, -0.0]),
                ps([1e-30, f32::MAX, -1.0, -0.0]),
                d,
                ps([1.0, f32::INFINITY, 0.0, -0.0]),
                d | 0x28,
            ),
            // subsd xmm0, xmm1
            (&[0xf2, 0x0f, 0x5c, 0xc1], pd([3.0, 5.0]), pd([0.5, 1.0]), d, pd([2.5, 5.0]), d),
            // mulpd xmm0, xmm1
            (&[0x66, 0x0f, 0x59, 0xc1], pd([1e308, 3.0]), pd([10.0, 1.0 / 3.0]), d, pd([f64::INFINITY, 1.0]), d | 0x28),
            // divss xmm0, xmm1: by zero.
            (
                &[0xf3, 0x0f, 0x5e, 0xc1],
                ps([1.0, 0.0, 0.0, 0.0]),
                ps([0.0; 4]),
                d,
                ps([f32::INFINITY, 0.0, 0.0, 0.0]),
                d | 0x4,
            ),
            // divps xmm0, xmm1: 0/0 is invalid; the default NaN.
            (
                &[0x0f, 0x5e, 0xc1],
                ps([0.0, 6.0, 1.0, 1.0]),
                ps([0.0, 3.0, 4.0, 8.0]),
                d,
                ps([nan32, 2.0, 0.25, 0.125]),
                d | 0x1,
            ),
            // sqrtss xmm0, xmm1 of -1: invalid.
            (&[0xf3, 0x0f, 0x51, 0xc1], ps([5.0; 4]), ps([-1.0; 4]), d, ps([nan32, 5.0, 5.0, 5.0]), d | 0x1),
            // sqrtpd xmm0, xmm1
            (&[0x66, 0x0f, 0x51, 0xc1], 0, pd([4.0, 2.0]), d, pd([2.0, core::f64::consts::SQRT_2]), d | 0x20),
            // minps xmm0, xmm1: equal or NaN gives the source; any NaN signals.
            (
                &[0x0f, 0x5d, 0xc1],
                ps([1.0, -0.0, f32::NAN, 3.0]),
                ps([2.0, 0.0, 1.0, f32::NAN]),
                d,
                ps([1.0, 0.0, 1.0, f32::NAN]),
                d | 0x1,
            ),
            // maxsd xmm0, xmm1
            (&[0xf2, 0x0f, 0x5f, 0xc1], pd([1.0, 7.0]), pd([2.0, 9.0]), d, pd([2.0, 7.0]), d),
            // addss xmm0, xmm1 with a denormal: DE, or zero under DAZ.
            (&[0xf3, 0x0f, 0x58, 0xc1], 1, 0, d, 1, d | 0x2),
            (&[0xf3, 0x0f, 0x58, 0xc1], 1, 0, d | 0x40, 0, d | 0x40),
            // mulss xmm0, xmm1 with a tiny result: UE PE, or zero under FTZ.
            (
                &[0xf3, 0x0f, 0x59, 0xc1],
                ps([1e-20, 0.0, 0.0, 0.0]),
                ps([1e-20; 4]),
                d,
                ps([1e-20 * 1e-20, 0.0, 0.0, 0.0]),
                d | 0x30,
            ),
            (&[0xf3, 0x0f, 0x59, 0xc1], ps([1e-20, 0.0, 0.0, 0.0]), ps([1e-20; 4]), d | 0x8000, 0, d | 0x8030),
            // divss xmm0, xmm1: 1/3 by each rounding control.
            (
                &[0xf3, 0x0f, 0x5e, 0xc1],
                ps([1.0; 4]),
                ps([3.0; 4]),
                d | 0x2000,
                0x3f80_0000_3f80_0000_3f80_0000_3eaa_aaaa,
                d | 0x2020,
            ),
            (
                &[0xf3, 0x0f, 0x5e, 0xc1],
                ps([1.0; 4]),
                ps([3.0; 4]),
                d | 0x4000,
                0x3f80_0000_3f80_0000_3f80_0000_3eaa_aaab,
                d | 0x4020,
            ),
            (
                &[0xf3, 0x0f, 0x5e, 0xc1],
                ps([1.0; 4]),
                ps([3.0; 4]),
                d | 0x6000,
                0x3f80_0000_3f80_0000_3f80_0000_3eaa_aaaa,
                d | 0x6020,
            ),
            // rcpss xmm0, xmm1 and rsqrtps xmm0, xmm1: no flags.
            (&[0xf3, 0x0f, 0x53, 0xc1], ps([9.0; 4]), ps([4.0, 1.0, 1.0, 1.0]), d, ps([0.25, 9.0, 9.0, 9.0]), d),
            (&[0x0f, 0x52, 0xc1], 0, ps([4.0, 0.0, -1.0, f32::INFINITY]), d, ps([0.5, f32::INFINITY, nan32, 0.0]), d),
            // andnps xmm0, xmm1 and orpd xmm0, xmm1 (bitwise).
            (&[0x0f, 0x55, 0xc1], A, B, d, !A & B, d),
            (&[0x66, 0x0f, 0x56, 0xc1], A, B, d, A | B, d),
            // unpcklps xmm0, xmm1
            (&[0x0f, 0x14, 0xc1], ps([1.0, 2.0, 3.0, 4.0]), ps([5.0, 6.0, 7.0, 8.0]), d, ps([1.0, 5.0, 2.0, 6.0]), d),
        ];
        for &(op, a, b, mxcsr, want, want_mxcsr) in table {
            let (r, m) = fp(op, a, b, mxcsr);
            assert_eq!((r, m), (want, want_mxcsr), "{op:02x?}: {r:#034x} {m:#x}");
        }
    }

    #[test]
    fn comparisons() {
        // cmpps xmm0, xmm1, imm for every predicate.
        let a = ps([1.0, 2.0, f32::NAN, 4.0]);
        let b = ps([1.0, 3.0, 0.0, 2.0]);
        let t = true;
        let f = false;
        let want = [
            ([t, f, f, f], false),
            ([f, t, f, f], true),
            ([t, t, f, f], true),
            ([f, f, t, f], false),
            ([f, t, t, t], false),
            ([t, f, t, t], true),
            ([f, f, t, t], true),
            ([t, t, f, t], false),
        ];
        for (imm, (lanes, ie)) in want.into_iter().enumerate() {
            let (r, m) = fp(&[0x0f, 0xc2, 0xc1, imm as u8], a, b, 0x1f80);
            let mask = lanes.iter().enumerate().fold(0u128, |r, (i, &x)| r | (u128::from(x) * 0xffff_ffff) << (32 * i));
            assert_eq!((r, m), (mask, 0x1f80 | u32::from(ie)), "predicate {imm}");
        }
        // cmpsd xmm0, xmm1, 1 (LT): only the low lane changes.
        let (r, _) = fp(&[0xf2, 0x0f, 0xc2, 0xc1, 0x01], pd([1.0, 5.0]), pd([2.0, 0.0]), 0x1f80);
        assert_eq!(r, pd([f64::from_bits(u64::MAX), 5.0]));

        let code = [
            0x0f, 0x2f, 0xc1, // comiss xmm0, xmm1
            0x9c, // pushfq
            0x41, 0x58, // pop r8
            0x66, 0x0f, 0x2e, 0xd3, // ucomisd xmm2, xmm3
            0x9c, // pushfq
            0x41, 0x59, // pop r9
            0x0f, 0xae, 0x5c, 0x24, 0xf8, // stmxcsr [rsp-8]
            0x44, 0x8b, 0x54, 0x24, 0xf8, // mov r10d, [rsp-8]
            0x66, 0x0f, 0x2f, 0xd3, // comisd xmm2, xmm3
            0x9c, // pushfq
            0x41, 0x5b, // pop r11
            0x0f, 0x2e, 0xc9, // ucomiss xmm1, xmm1
            0x9c, // pushfq
            0x41, 0x5c, // pop r12
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.cpu.regs.fpu.xmm[0] = ps([1.0; 4]);
        m.cpu.regs.fpu.xmm[1] = ps([2.0; 4]);
        m.cpu.regs.fpu.xmm[2] = pd([f64::NAN, 0.0]);
        m.cpu.regs.set_rflags(0x8d5 | 2);
        m.run_to_hlt();
        let status = 0x8d5;
        assert_eq!(m.gpr(8) & status, 0x1, "less: CF; OF SF AF cleared");
        assert_eq!(m.gpr(9) & status, 0x45, "unordered");
        assert_eq!(m.gpr(10), 0x1f80, "UCOMISD does not signal on a QNaN");
        assert_eq!(m.cpu.regs.fpu.mxcsr, 0x1f81, "COMISD does");
        assert_eq!(m.gpr(12) & status, 0x40, "equal: ZF");
    }

    #[test]
    fn conversions() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0x48, 0xc7, 0xc0, 0xfd, 0xff, 0xff, 0xff, // mov rax, -3
            0xf2, 0x48, 0x0f, 0x2a, 0xc0, // cvtsi2sd xmm0, rax
            0xf3, 0x0f, 0x2a, 0x0b, // cvtsi2ss xmm1, dword ptr [rbx]
            0xf2, 0x0f, 0x2c, 0xca, // cvttsd2si ecx, xmm2
            0xf2, 0x0f, 0x2d, 0xd2, // cvtsd2si edx, xmm2
            0xf3, 0x48, 0x0f, 0x2c, 0xf3, // cvttss2si rsi, xmm3
            0xf3, 0x0f, 0x5a, 0xe5, // cvtss2sd xmm4, xmm5
            0xf2, 0x0f, 0x5a, 0xf7, // cvtsd2ss xmm6, xmm7
            0x45, 0x0f, 0x5b, 0xc1, // cvtdq2ps xmm8, xmm9
            0xf3, 0x45, 0x0f, 0x5b, 0xd3, // cvttps2dq xmm10, xmm11
            0x66, 0x45, 0x0f, 0x5b, 0xe3, // cvtps2dq xmm12, xmm11
            0x44, 0x0f, 0x5a, 0xed, // cvtps2pd xmm13, xmm5
            0x66, 0x44, 0x0f, 0x5a, 0xf7, // cvtpd2ps xmm14, xmm7
            0xf3, 0x45, 0x0f, 0xe6, 0xf9, // cvtdq2pd xmm15, xmm9
            0xf2, 0x44, 0x0f, 0xe6, 0xca, // cvtpd2dq xmm9, xmm2
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        let f = &mut m.cpu.regs.fpu;
        for x in f.xmm.iter_mut() {
            *x = u128::MAX;
        }
        f.xmm[2] = pd([-2.7, 1e10]);
        f.xmm[3] = ps([1e20, 0.0, 0.0, 0.0]);
        f.xmm[5] = ps([1.5, -0.25, 0.0, 0.0]);
        f.xmm[7] = pd([1.0 / 3.0, 1e300]);
        f.xmm[9] = 0x8000_0000_ffff_fffd_0100_0001_0000_0007;
        f.xmm[11] = ps([2.5, -2.5, 3e9, f32::NAN]);
        m.mem.write_u32(DATA, 16_777_217).unwrap();
        m.run_to_hlt();
        let f = &m.cpu.regs.fpu;
        let hi = u128::MAX << 64;
        assert_eq!(f.xmm[0], hi | u128::from((-3.0f64).to_bits()));
        assert_eq!(f.xmm[1], (u128::MAX << 32) | u128::from(16_777_216f32.to_bits()), "rounded to even");
        assert_eq!((m.gpr(1), m.gpr(2)), (0xffff_fffe, 0xffff_fffd), "-2.7: truncated, rounded");
        assert_eq!(m.gpr(6), 1 << 63, "out of range");
        assert_eq!(f.xmm[4], hi | u128::from(1.5f64.to_bits()));
        assert_eq!(f.xmm[6], (u128::MAX << 32) | u128::from((1.0f32 / 3.0).to_bits()));
        assert_eq!(f.xmm[8], ps([7.0, 16_777_216.0, -3.0, -2_147_483_648.0]));
        assert_eq!(f.xmm[10], 0x8000_0000_8000_0000_ffff_fffe_0000_0002);
        assert_eq!(f.xmm[12], 0x8000_0000_8000_0000_ffff_fffe_0000_0002, "ties to even");
        assert_eq!(f.xmm[13], pd([1.5, -0.25]));
        assert_eq!(f.xmm[14], ps([1.0 / 3.0, f32::INFINITY, 0.0, 0.0]));
        assert_eq!(f.xmm[15], pd([7.0, 16_777_217.0]));
        assert_eq!(f.xmm[9], 0x8000_0000_ffff_fffd, "upper half zeroed");
        // IE (NaN, 3e9, 1e20), PE, OE (1e300 to single).
        assert_eq!(f.mxcsr, 0x1f80 | 0x29);
    }

    #[test]
    fn unmasked_exceptions_raise_xm_or_ud_and_write_nothing() {
        // divps xmm0, xmm1: lane 0 is 1/0, lane 1 inexact.
        let op = [0x0f, 0x5e, 0xc1, 0xf4];
        let setup = |m: &mut Machine| {
            m.cpu.regs.fpu.xmm[0] = ps([1.0, 1.0, 1.0, 1.0]);
            m.cpu.regs.fpu.xmm[1] = ps([0.0, 3.0, 1.0, 1.0]);
            m.cpu.regs.fpu.mxcsr = 0x1f80 & !0x200; // ZE unmasked
        };
        let mut m = Machine::long64(&op);
        setup(&mut m);
        assert_eq!(expect_fault(&mut m), (vector::XM, None, CODE));
        assert_eq!(m.cpu.regs.fpu.xmm[0], ps([1.0; 4]));
        assert_eq!(m.cpu.regs.fpu.mxcsr, 0x1d84, "ZE recorded, not the later PE");
        let mut m = Machine::long64(&op);
        setup(&mut m);
        m.cpu.regs.cr4 &= !x86::Cr4::OSXMMEXCPT.bits();
        assert_eq!(expect_fault(&mut m), (vector::UD, None, CODE));
        // A post-computation exception (PE unmasked) also keeps the
        // destination, with its flag set.
        let mut m = Machine::long64(&[0xf3, 0x0f, 0x5e, 0xc1, 0xf4]);
        m.cpu.regs.fpu.xmm[0] = ps([1.0; 4]);
        m.cpu.regs.fpu.xmm[1] = ps([3.0; 4]);
        m.cpu.regs.fpu.mxcsr = 0x1f80 & !0x1000;
        assert_eq!(expect_fault(&mut m), (vector::XM, None, CODE));
        assert_eq!((m.cpu.regs.fpu.xmm[0], m.cpu.regs.fpu.mxcsr), (ps([1.0; 4]), 0x0fa0));
    }

    #[test]
    fn masked_byte_store() {
        // maskmovdqu xmm0, xmm1 ; maskmovq mm0, mm1 ; hlt
        let code = [
            0x66, 0x0f, 0xf7, 0xc1, // maskmovdqu xmm0, xmm1
            0x48, 0x83, 0xc7, 0x10, // add rdi, 16
            0x0f, 0xf7, 0xc1, // maskmovq mm0, mm1
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.cpu.regs.gpr[7] = DATA;
        m.cpu.regs.fpu.xmm[0] = A;
        m.cpu.regs.fpu.xmm[1] = 0x0080_0080_0080_0080_8000_8000_ff00_00ff;
        fpu::mmx_write(&mut m.cpu.regs.fpu, 0, 0x1122_3344_5566_7788);
        fpu::mmx_write(&mut m.cpu.regs.fpu, 1, 0x8000_0000_0000_0080);
        m.mem.write(DATA, &[0xaa; 32]).unwrap();
        m.run_to_hlt();
        let mut b = [0u8; 32];
        m.mem.read(DATA, &mut b).unwrap();
        let a = A.to_le_bytes();
        let want: Vec<u8> =
            (0..16).map(|i| if [0, 3, 5, 7, 8, 10, 12, 14].contains(&i) { a[i] } else { 0xaa }).collect();
        assert_eq!(&b[..16], &want[..]);
        assert_eq!(&b[16..24], &[0x88, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0x11]);
    }

    #[test]
    fn alignment_checking_uses_the_operand_size() {
        use crate::exec::fpu::tests::to_user;
        let (ac, gp) = (vector::AC, vector::GP);
        for (op, addr, want) in [
            (&[0x0f, 0x10, 0x03][..], DATA + 8, (ac, CODE)), // movups xmm0, [rbx]: 16 bytes
            (&[0x0f, 0x10, 0x03][..], DATA + 16, (gp, CODE + 3)), // aligned: the HLT after it faults
            (&[0x0f, 0x28, 0x03][..], DATA + 8, (gp, CODE)), // movaps xmm0, [rbx]: #GP, not #AC
            (&[0xf3, 0x0f, 0x58, 0x03][..], DATA + 2, (ac, CODE)), // addss xmm0, [rbx]: 4 bytes
            (&[0xf3, 0x0f, 0x58, 0x03][..], DATA + 4, (gp, CODE + 4)),
            (&[0xd9, 0x33][..], DATA + 4, (gp, CODE + 2)), // fnstenv [rbx]: dword fields
            (&[0xd9, 0x33][..], DATA + 2, (ac, CODE)),
            (&[0xdb, 0x3b][..], DATA + 4, (ac, CODE)), // fstp tbyte [rbx]: 8 bytes
        ] {
            let mut m = Machine::long64(&with_hlt(op));
            to_user(&mut m);
            m.cpu.regs.cr0 |= x86::Cr0::AM.bits();
            let f = m.cpu.regs.rflags();
            m.cpu.regs.set_rflags(f | x86::Rflags::AC.bits());
            m.cpu.regs.gpr[3] = addr;
            m.cpu.regs.fpu.ftw = 0xff;
            assert_eq!(expect_fault(&mut m), (want.0, Some(0), want.1), "{op:02x?} at {addr:#x}");
        }
    }

    #[test]
    fn string_forms_are_left_to_the_string_family() {
        for bytes in [[0xa5u8], [0xa7]] {
            let insn = iced_x86::Decoder::new(64, &bytes, iced_x86::DecoderOptions::NONE).decode();
            assert!(select(insn.mnemonic(), &insn).is_none(), "{:?}", insn.mnemonic());
        }
    }
}
