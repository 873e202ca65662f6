//! `sse`: SSE/SSE2 and x87 basics (SDM Vol. 1, chapters 8 "x87 FPU", 10
//! "SSE", 11 "SSE2"; Vol. 3A, 14.1 "Initialization of the SSE Extensions"
//! and 2.5 for CR0.EM/MP/TS and CR4.OSFXSR/OSXMMEXCPT).
//!
//! Checks: #UD for SSE without CR4.OSFXSR or with CR0.EM, #NM with CR0.TS;
//! the moves and integer operations compilers emit (MOVDQA/MOVDQU/MOVQ/MOVD/
//! MOVAPS/MOVUPS, PXOR/PADDD/PADDQ/PSUBB/PCMPEQB/PMOVMSKB/PSHUFD/PUNPCKLBW/
//! PSRLDQ/PMINUB), #GP for a misaligned MOVDQA; scalar double arithmetic,
//! conversions and UCOMISD flags; MXCSR (default, LDMXCSR reserved bits,
//! unmasked divide-by-zero raising #XM); FXSAVE/FXRSTOR of all 16 XMM
//! registers, MXCSR and the x87 control word; x87 FNINIT/FNSTSW/FNSTCW/
//! FLDCW, arithmetic, rounding control, and the masked zero-divide flag.
#![no_std]
#![no_main]

use core::arch::asm;
use rt::arch::{self, cr0, cr4, feature};
use rt::idt::{catch, vector};
use rt::{check, check_eq, skip};

rt::entry!("sse", main);

#[repr(C, align(16))]
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct X([u8; 16]);

#[repr(C, align(16))]
struct Fx([u8; 512]);

fn x(lo: u64, hi: u64) -> X {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&lo.to_le_bytes());
    b[8..].copy_from_slice(&hi.to_le_bytes());
    X(b)
}

fn lo_hi(v: &X) -> (u64, u64) {
    (u64::from_le_bytes(v.0[..8].try_into().unwrap()), u64::from_le_bytes(v.0[8..].try_into().unwrap()))
}

/// Runs `op` (an SSE instruction sequence on xmm0/xmm1) with xmm0 = a,
/// xmm1 = b; returns xmm0 and eax.
macro_rules! sse2 {
    ($a:expr, $b:expr, $($op:literal),+) => {{
        let (a, b) = ($a, $b);
        let mut out = X([0; 16]);
        let eax: u32;
        // SAFETY: SSE is enabled; the compiler uses no XMM registers
        // (soft-float target), so clobbering xmm0/xmm1 is invisible to it.
        unsafe {
            asm!("movdqa xmm0, [{a}]", "movdqa xmm1, [{b}]", $($op,)+ "movdqa [{o}], xmm0",
                 a = in(reg) &a, b = in(reg) &b, o = in(reg) &mut out, out("eax") eax)
        };
        (out, eax)
    }};
}

fn main(_mb: u32) {
    if !arch::has(feature::SSE2) || !arch::has(feature::FXSR) {
        skip!("no SSE2/FXSR", "sse");
        return;
    }
    enabling();
    // SAFETY: enable SSE for the rest of the kernel (OSFXSR, OSXMMEXCPT,
    // MP, NE; EM and TS clear).
    unsafe {
        arch::write_cr0((arch::read_cr0() & !(cr0::EM | cr0::TS)) | cr0::MP | cr0::NE);
        arch::write_cr4(arch::read_cr4() | cr4::OSFXSR | cr4::OSXMMEXCPT);
    }
    moves();
    integer();
    floating();
    mxcsr();
    fxsave();
    x87();
}

fn try_pxor() -> Result<(), rt::idt::Fault> {
    catch(|| {
        // SAFETY: may #UD/#NM inside catch; XMM state is not used by Rust.
        unsafe { asm!("pxor xmm0, xmm0") }
    })
}

fn enabling() {
    let c0 = arch::read_cr0();
    let c4 = arch::read_cr4();
    // SAFETY: toggles CR0/CR4 bits around single instructions, restored.
    unsafe {
        arch::write_cr4(c4 & !cr4::OSFXSR);
        arch::write_cr0(c0 & !(cr0::EM | cr0::TS));
    }
    check!(matches!(try_pxor(), Err(f) if f.vector == vector::UD), "SSE with CR4.OSFXSR = 0 is #UD");
    // SAFETY: as above.
    unsafe {
        arch::write_cr4(c4 | cr4::OSFXSR);
        arch::write_cr0(c0 | cr0::EM);
    }
    check!(matches!(try_pxor(), Err(f) if f.vector == vector::UD), "SSE with CR0.EM = 1 is #UD");
    // SAFETY: as above.
    unsafe { arch::write_cr0((c0 & !cr0::EM) | cr0::TS) };
    check!(matches!(try_pxor(), Err(f) if f.vector == vector::NM), "SSE with CR0.TS = 1 is #NM");
    // SAFETY: as above.
    unsafe { arch::write_cr0(c0 & !(cr0::EM | cr0::TS)) };
    check!(try_pxor().is_ok(), "SSE with OSFXSR, EM = TS = 0 runs");
    // SAFETY: restore.
    unsafe {
        arch::write_cr0(c0);
        arch::write_cr4(c4);
    }
}

fn moves() {
    let src = x(0x0706_0504_0302_0100, 0x0f0e_0d0c_0b0a_0908);
    let mut buf = [0u8; 48];
    let base = buf.as_mut_ptr() as u64;
    let un = (base + 15) & !15 | 1; // misaligned by 1
    let mut dst = X([0; 16]);
    // SAFETY: unaligned store/load inside `buf`; aligned ones on `X`s.
    unsafe {
        asm!("movdqa xmm2, [{s}]", "movdqu [{u}], xmm2", "movdqu xmm3, [{u}]", "movdqa [{d}], xmm3",
             s = in(reg) &src, u = in(reg) un, d = in(reg) &mut dst)
    };
    check_eq!(dst, src, "movdqa/movdqu round trip through an unaligned address");
    let r = catch(|| {
        // SAFETY: misaligned MOVDQA is #GP(0) inside catch.
        unsafe { asm!("movdqa xmm2, [{u}]", u = in(reg) un) }
    });
    check!(matches!(r, Err(f) if f.is(vector::GP, 0)), "movdqa from a misaligned address is #GP(0)");
    let (v, _) = sse2!(src, x(0, 0), "movq xmm0, xmm0");
    check_eq!(lo_hi(&v), (0x0706_0504_0302_0100, 0), "movq xmm, xmm zeroes the high half");
    let (q, d): (u64, u32);
    // SAFETY: register moves only.
    unsafe {
        asm!("mov rax, 0x1122334455667788", "movq xmm4, rax", "movq {q}, xmm4", "movd xmm5, eax", "movd {d:e}, xmm5",
             q = out(reg) q, d = out(reg) d, out("rax") _)
    };
    check_eq!((q, d), (0x1122_3344_5566_7788u64, 0x5566_7788u32), "movq/movd between GPRs and XMM");
    let mut o = X([0; 16]);
    // SAFETY: aligned store of a register-built value.
    unsafe {
        asm!("movaps xmm6, [{s}]", "xorps xmm7, xmm7", "movups xmm7, xmm6", "movaps [{o}], xmm7",
             s = in(reg) &src, o = in(reg) &mut o)
    };
    check_eq!(o, src, "movaps/movups/xorps");
}

fn integer() {
    let a = x(0x0000_0002_0000_0001, 0xffff_ffff_0000_0003);
    let b = x(0x0000_0010_0000_0020, 0x0000_0001_0000_0030);
    check_eq!(
        lo_hi(&sse2!(a, b, "paddd xmm0, xmm1").0),
        (0x0000_0012_0000_0021, 0x0000_0000_0000_0033),
        "paddd wraps per lane"
    );
    check_eq!(
        lo_hi(&sse2!(a, b, "paddq xmm0, xmm1").0),
        (0x0000_0012_0000_0021, 0x0000_0000_0000_0033),
        "paddq carries across dwords"
    );
    check_eq!(lo_hi(&sse2!(a, a, "pxor xmm0, xmm1").0), (0, 0), "pxor with itself is zero");
    check_eq!(lo_hi(&sse2!(x(0x0100, 0), x(0x0201, 0), "psubb xmm0, xmm1").0), (0xffff, 0), "psubb wraps per byte");
    let s = x(0x6f6c_6c65_6800_4142, 0x0000_0000_0000_0000);
    let (eq, mask) = sse2!(s, x(0, 0), "pcmpeqb xmm0, xmm1", "pmovmskb eax, xmm0");
    check_eq!(lo_hi(&eq), (0x0000_0000_00ff_0000, 0xffff_ffff_ffff_ffff), "pcmpeqb against zero");
    check_eq!(mask, 0xff04u32, "pmovmskb gathers byte sign bits");
    let v = x(0x4444_4444_3333_3333, 0x2222_2222_1111_1111);
    check_eq!(
        lo_hi(&sse2!(v, v, "pshufd xmm0, xmm1, 0x1b").0),
        (0x1111_1111_2222_2222, 0x3333_3333_4444_4444),
        "pshufd reverses dwords"
    );
    check_eq!(
        lo_hi(&sse2!(x(0x0403_0201, 0), x(0x0807_0605, 0), "punpcklbw xmm0, xmm1").0),
        (0x0804_0703_0602_0501, 0),
        "punpcklbw interleaves"
    );
    check_eq!(
        lo_hi(&sse2!(v, v, "psrldq xmm0, 4").0),
        (0x1111_1111_4444_4444, 0x0000_0000_2222_2222),
        "psrldq shifts bytes"
    );
    check_eq!(lo_hi(&sse2!(x(0x80_10, 0), x(0x7f_20, 0), "pminub xmm0, xmm1").0), (0x7f_10, 0), "pminub is unsigned");
}

fn floating() {
    let r: u64;
    let (zf, cf, pf): (u8, u8, u8);
    // SAFETY: scalar double arithmetic in XMM registers.
    unsafe {
        asm!(
            "mov eax, 7", "cvtsi2sd xmm0, eax",          // 7.0
            "mov eax, 2", "cvtsi2sd xmm1, eax",          // 2.0
            "divsd xmm0, xmm1",                          // 3.5
            "mulsd xmm0, xmm1",                          // 7.0
            "addsd xmm0, xmm1",                          // 9.0
            "sqrtsd xmm0, xmm0",                         // 3.0
            "cvttsd2si {r}, xmm0",
            "ucomisd xmm0, xmm1",                        // 3 > 2: ZF = PF = CF = 0
            "setz {zf}", "setc {cf}", "setp {pf}",
            r = out(reg) r, zf = out(reg_byte) zf, cf = out(reg_byte) cf, pf = out(reg_byte) pf, out("eax") _
        )
    };
    check_eq!(r, 3u64, "cvtsi2sd/divsd/mulsd/addsd/sqrtsd/cvttsd2si");
    check_eq!((zf, cf, pf), (0u8, 0u8, 0u8), "ucomisd greater: ZF = CF = PF = 0");
    let (zf, cf, pf): (u8, u8, u8);
    // SAFETY: as above; 0/0 is a quiet NaN (masked invalid).
    unsafe {
        asm!("xorpd xmm0, xmm0", "divsd xmm0, xmm0", "ucomisd xmm0, xmm0", "setz {zf}", "setc {cf}", "setp {pf}",
             zf = out(reg_byte) zf, cf = out(reg_byte) cf, pf = out(reg_byte) pf)
    };
    check_eq!((zf, cf, pf), (1u8, 1u8, 1u8), "ucomisd unordered (NaN): ZF = CF = PF = 1");
    let t: i64;
    // SAFETY: conversion of an out-of-range value gives the integer indefinite.
    unsafe {
        asm!("mov rax, 0x7ff0000000000000", "movq xmm0, rax", "cvttsd2si {t}, xmm0", t = out(reg) t, out("rax") _)
    };
    check_eq!(t, i64::MIN, "cvttsd2si of +inf is the integer indefinite 0x8000000000000000");
}

fn stmxcsr() -> u32 {
    let mut v = 0u32;
    // SAFETY: stores MXCSR.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut v) };
    v
}

fn ldmxcsr(v: u32) -> Result<(), rt::idt::Fault> {
    catch(|| {
        // SAFETY: may #GP inside catch.
        unsafe { asm!("ldmxcsr [{}]", in(reg) &v) }
    })
}

fn mxcsr() {
    // Flags (bits 5:0) are sticky: the NaN test above set IE.
    check_eq!(stmxcsr() & 0xffc0, 0x1f80u32, "MXCSR: all exceptions masked, round to nearest");
    check_eq!(stmxcsr() & 1, 1u32, "MXCSR.IE is sticky after 0/0");
    let _ = ldmxcsr(0x1f80);
    check_eq!(stmxcsr(), 0x1f80u32, "ldmxcsr clears the flags");
    // QEMU 7.2 ignores reserved MXCSR bits in LDMXCSR.
    rt::check_sdm!(
        matches!(ldmxcsr(0x1f80 | 1 << 31), Err(f) if f.is(vector::GP, 0)),
        true,
        "ldmxcsr with a reserved bit is #GP(0)"
    );
    let _ = ldmxcsr(0x1f80);
    // Unmasked divide-by-zero: #XM (CR4.OSXMMEXCPT = 1), ZE flag set.
    let _ = ldmxcsr(0x1f80 & !(1 << 9));
    let r = catch(|| {
        // SAFETY: raises #XM inside catch.
        unsafe { asm!("mov eax, 1", "cvtsi2sd xmm0, eax", "xorpd xmm1, xmm1", "divsd xmm0, xmm1", out("eax") _) }
    });
    let flags = stmxcsr();
    let _ = ldmxcsr(0x1f80);
    // QEMU TCG does not raise unmasked SIMD exceptions.
    rt::check_sdm!(matches!(r, Err(f) if f.vector == vector::XM), true, "unmasked SSE divide by zero raises #XM");
    check!(flags & 1 << 2 != 0, "MXCSR.ZE set");
}

fn fxsave() {
    let mut img = Fx([0; 512]);
    let mut back = Fx([0; 512]);
    let mut pattern = [X([0; 16]); 16];
    for (i, p) in pattern.iter_mut().enumerate() {
        *p = x(0x0101_0101_0101_0101 * (i as u64 + 1), !(i as u64));
    }
    // SAFETY: loads all 16 XMM registers, FXSAVEs, clobbers, FXRSTORs, stores.
    unsafe {
        asm!(
            "movdqa xmm0, [{p}]", "movdqa xmm1, [{p} + 16]", "movdqa xmm2, [{p} + 32]", "movdqa xmm3, [{p} + 48]",
            "movdqa xmm4, [{p} + 64]", "movdqa xmm5, [{p} + 80]", "movdqa xmm6, [{p} + 96]", "movdqa xmm7, [{p} + 112]",
            "movdqa xmm8, [{p} + 128]", "movdqa xmm9, [{p} + 144]", "movdqa xmm10, [{p} + 160]", "movdqa xmm11, [{p} + 176]",
            "movdqa xmm12, [{p} + 192]", "movdqa xmm13, [{p} + 208]", "movdqa xmm14, [{p} + 224]", "movdqa xmm15, [{p} + 240]",
            "fninit",
            "fxsave64 [{img}]",
            "pxor xmm0, xmm0", "pxor xmm7, xmm7", "pxor xmm15, xmm15",
            "fxrstor64 [{img}]",
            "fxsave64 [{back}]",
            p = in(reg) pattern.as_ptr(), img = in(reg) &mut img, back = in(reg) &mut back,
        )
    };
    let ok = pattern.iter().enumerate().all(|(i, p)| img.0[160 + 16 * i..176 + 16 * i] == p.0);
    check!(ok, "FXSAVE stores XMM0-15 at offset 160");
    check_eq!(u16::from_le_bytes([img.0[0], img.0[1]]), 0x037fu16, "FXSAVE: FCW after FNINIT is 0x37f");
    check_eq!(u32::from_le_bytes(img.0[24..28].try_into().unwrap()), 0x1f80u32, "FXSAVE: MXCSR at offset 24");
    check!(img.0[4] == 0, "FXSAVE: abridged tag word empty after FNINIT");
    check!(back.0[160..416] == img.0[160..416], "FXRSTOR restores all XMM registers");
    let r = catch(|| {
        let p = (&mut back as *mut Fx as u64) + 8;
        // SAFETY: misaligned FXSAVE is #GP(0) inside catch.
        unsafe { asm!("fxsave64 [{}]", in(reg) p) }
    });
    check!(matches!(r, Err(f) if f.is(vector::GP, 0)), "FXSAVE to a non-16-byte-aligned area is #GP(0)");
}

fn x87() {
    let (sw, cw): (u16, u16);
    let mut cwm = 0u16;
    // SAFETY: x87 state only.
    unsafe { asm!("fninit", "fnstsw ax", "fnstcw [{c}]", c = in(reg) &mut cwm, out("ax") sw) };
    cw = cwm;
    check_eq!((sw, cw), (0u16, 0x037fu16), "FNINIT: FSW = 0, FCW = 0x37f");
    let mut out = 0i32;
    // SAFETY: x87 arithmetic into a local.
    unsafe { asm!("fninit", "fld1", "fld1", "faddp", "fld1", "faddp", "fistp dword ptr [{o}]", o = in(reg) &mut out) };
    check_eq!(out, 3, "fld1/faddp/fistp");
    // Rounding control: 2.5 rounds to 2 (nearest even), 3 (up), 2 (truncate).
    let mut res = [0i32; 3];
    for (i, rc) in [0u16, 2, 3].iter().enumerate() {
        let cw = 0x037f | rc << 10;
        let half = 2.5f32.to_bits();
        // SAFETY: loads a control word and a float, stores an integer.
        unsafe {
            asm!("fninit", "fldcw [{c}]", "fld dword ptr [{h}]", "fistp dword ptr [{o}]",
                 c = in(reg) &cw, h = in(reg) &half, o = in(reg) &mut res[i])
        };
    }
    check_eq!(res, [2, 3, 2], "FLDCW rounding control: nearest-even, up, truncate");
    let sw: u16;
    // SAFETY: masked zero divide sets FSW.ZE.
    unsafe { asm!("fninit", "fld1", "fldz", "fdivp", "fnstsw ax", "fstp st(0)", out("ax") sw) };
    check!(sw & 1 << 2 != 0, "masked x87 divide by zero sets FSW.ZE ({:#x})", sw);
    let sw: u16;
    // SAFETY: FNCLEX clears exception flags.
    unsafe { asm!("fnclex", "fnstsw ax", out("ax") sw) };
    check_eq!(sw & 0x3f, 0u16, "FNCLEX clears the exception flags");
    // TOP moves with pushes: FSW bits 13:11.
    let sw: u16;
    // SAFETY: two pushes.
    unsafe { asm!("fninit", "fld1", "fld1", "fnstsw ax", "fninit", out("ax") sw) };
    check_eq!(sw >> 11 & 7, 6u16, "two pushes leave TOP = 6");
}
