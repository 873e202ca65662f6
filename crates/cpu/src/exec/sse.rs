//! SSE and SSE2 (and the MMX forms of their integer instructions), MXCSR,
//! and the 128-bit moves compilers and C libraries emit for x86-64's
//! baseline (SDM vol. 1, ch. 9 "Programming with Intel MMX Technology",
//! ch. 10 "Programming with Intel Streaming SIMD Extensions (Intel SSE)",
//! ch. 11 "Programming with Intel Streaming SIMD Extensions 2 (Intel
//! SSE2)", 11.5 "SSE, SSE2, and SSE3 Exceptions"; vol. 3A, 2.5 "Control
//! Registers" and 14 of table 2-2 for CR0.EM/TS and CR4.OSFXSR/OSXMMEXCPT;
//! vol. 2, each instruction's page).
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

use super::fpu::{self, soft};
use crate::exec::Handler;
use crate::fault::Fault;
use crate::{Cpu, Ctx};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};
use soft::{Cmp, Env, Fmt, NanRule, F32, F64};
use x86::{Cr0, Cr4};

// ---------------------------------------------------------------------
// Availability and operands.

/// SSE instructions: #UD when CR0.EM or !CR4.OSFXSR, else #NM when CR0.TS
/// (SDM vol. 3A, table 2-3 "Action Taken for Combinations of OSFXSR,
/// OSXMMEXCPT, SSE, SSE2, SSE3, EM, MP, and TS").
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

/// Reads `n` (at most 16) bytes of the memory operand.
fn read_m(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, n: usize, align: u64) -> Result<u128, Fault> {
    let mut b = [0u8; 16];
    let off = cpu.ea(insn);
    fpu::read_area(cpu, ctx, cpu.mem_seg(insn), off, &mut b[..n.min(16)], align)?;
    Ok(u128::from_le_bytes(b))
}

/// Writes the low `n` (at most 16) bytes of `v` to the memory operand.
fn write_m(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, v: u128, n: usize, align: u64) -> Result<(), Fault> {
    let off = cpu.ea(insn);
    fpu::write_area(cpu, ctx, cpu.mem_seg(insn), off, &v.to_le_bytes()[..n.min(16)], align)
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
    let la = fpu::probe_area(cpu, ctx, seg, off, n, 1)?;
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
    let v = soft::to_int(f, &mut env, x, d.size() as u32 * 8, rc);
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
    let r = soft::convert(from, to, to.precision(), &mut env, x);
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
                let v = soft::convert(F32, F64, 53, &mut env, u128::from(lane(s, 32, i)));
                r = with_lane(r, 64, i, v as u64);
            }
        }
        M::Cvtpd2ps => {
            for i in 0..2 {
                let v = soft::convert(F64, F32, 24, &mut env, u128::from(lane(s, 64, i)));
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
