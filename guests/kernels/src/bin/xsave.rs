//! `xsave`: the XSAVE feature set (SDM Vol. 1, chapter 13 "Managing State
//! Using the XSAVE Feature Set"; Vol. 2 XGETBV, XSETBV, XSAVE, XRSTOR).
//!
//! Checks: CPUID.(EAX=0DH) enumeration (supported XCR0 bits, sizes,
//! component offsets), CPUID.1:ECX.OSXSAVE following CR4.OSXSAVE, #UD for
//! XGETBV without CR4.OSXSAVE, XSETBV/XGETBV with #GP for invalid values
//! (x87 bit clear, AVX without SSE, unsupported bits, ECX != 0), the
//! enabled-size report following XCR0, XSAVE/XRSTOR of x87+SSE(+AVX) state
//! with XSTATE_BV, XRSTOR initialising a component whose XSTATE_BV bit is
//! clear, #GP for reserved header bits and a misaligned area, and VEX #UD
//! until XCR0 enables AVX.
#![no_std]
#![no_main]

use core::arch::asm;
use rt::arch::{self, cr0, cr4, feature};
use rt::idt::{catch, vector, Fault};
use rt::{check, check_eq, println, skip};

rt::entry!("xsave", main);

#[repr(C, align(64))]
struct Area([u8; 4096]);

static AREA: rt::sync::Global<Area> = rt::sync::Global::new(Area([0; 4096]));

fn xgetbv(ecx: u32) -> Result<u64, Fault> {
    catch(|| {
        let (lo, hi): (u32, u32);
        // SAFETY: may #UD/#GP inside catch.
        unsafe { asm!("xgetbv", in("ecx") ecx, out("eax") lo, out("edx") hi) };
        (hi as u64) << 32 | lo as u64
    })
}

fn xsetbv(ecx: u32, v: u64) -> Result<(), Fault> {
    catch(|| {
        // SAFETY: may #GP inside catch; valid values only enable state
        // components the kernel does not otherwise use.
        unsafe { asm!("xsetbv", in("ecx") ecx, in("eax") v as u32, in("edx") (v >> 32) as u32) }
    })
}

fn area() -> *mut u8 {
    AREA.as_ptr() as *mut u8
}

fn rd64(off: usize) -> u64 {
    // SAFETY: within the static area.
    unsafe { core::ptr::read_unaligned(area().add(off) as *const u64) }
}

fn wr64(off: usize, v: u64) {
    // SAFETY: within the static area.
    unsafe { core::ptr::write_unaligned(area().add(off) as *mut u64, v) }
}

fn main(_mb: u32) {
    if !arch::has(feature::XSAVE) {
        // Without XSAVE support CR4.OSXSAVE is reserved (SDM Vol. 3A, 2.5).
        if rt::quirks::qemu_tcg() {
            // QEMU 7.2 stops making progress after a reserved CR4 write.
            skip!("QEMU TCG deviates from the SDM here (and would hang)", "CR4.OSXSAVE without CPUID XSAVE is #GP(0)");
        } else {
            let r = catch(|| {
                // SAFETY: #GP inside catch.
                unsafe { arch::write_cr4(arch::read_cr4() | cr4::OSXSAVE) }
            });
            // SAFETY: clears the bit again in case it was accepted.
            unsafe { arch::write_cr4(arch::read_cr4() & !cr4::OSXSAVE) };
            check!(matches!(r, Err(f) if f.is(vector::GP, 0)), "CR4.OSXSAVE without CPUID XSAVE is #GP(0)");
        }
        check!(matches!(xgetbv(0), Err(f) if f.vector == vector::UD), "XGETBV without XSAVE support is #UD");
        skip!("CPUID.1:ECX.XSAVE = 0", "xsave");
        return;
    }
    let d0 = arch::cpuid(0xd, 0);
    let supported = (d0.edx as u64) << 32 | d0.eax as u64;
    println!("xcr0 supported {:#x}, size(enabled) {}, size(all) {}", supported, d0.ebx, d0.ecx);
    check!(supported & 3 == 3, "CPUID.0DH: x87 and SSE supported");
    check!(d0.ecx >= 576 && d0.ebx >= 576, "CPUID.0DH: sizes cover the legacy area and header");
    let d1 = arch::cpuid(0xd, 1);
    println!("xsave sub-leaf 1: eax {:#x}", d1.eax);
    let avx = supported & 4 != 0;
    if avx {
        let d2 = arch::cpuid(0xd, 2);
        check_eq!((d2.eax, d2.ebx), (256u32, 576u32), "CPUID.(0DH,2): AVX state is 256 bytes at 576");
    }

    // SAFETY: SSE on (CR4.OSFXSR) for the XMM state used below.
    unsafe {
        arch::write_cr0((arch::read_cr0() & !(cr0::EM | cr0::TS)) | cr0::MP | cr0::NE);
        arch::write_cr4(arch::read_cr4() | cr4::OSFXSR | cr4::OSXMMEXCPT);
    }
    check!(matches!(xgetbv(0), Err(f) if f.vector == vector::UD), "XGETBV with CR4.OSXSAVE = 0 is #UD");
    check!(!arch::has(feature::OSXSAVE), "CPUID.1:ECX.OSXSAVE = 0 while CR4.OSXSAVE = 0");
    // SAFETY: enables XSAVE instructions.
    unsafe { arch::write_cr4(arch::read_cr4() | cr4::OSXSAVE) };
    check!(arch::has(feature::OSXSAVE), "CPUID.1:ECX.OSXSAVE follows CR4.OSXSAVE");
    check_eq!(xgetbv(0), Ok(1u64), "XCR0 is 1 (x87 only) at reset");

    let gp = |r: Result<(), Fault>| matches!(r, Err(f) if f.is(vector::GP, 0));
    check!(gp(xsetbv(0, 2)), "XSETBV with XCR0.x87 = 0 is #GP(0)");
    if avx {
        check!(gp(xsetbv(0, 5)), "XSETBV with AVX but not SSE is #GP(0)");
    }
    let unsupported = !supported & ((1u64 << 62) - 1);
    let bit = unsupported.trailing_zeros();
    if bit < 62 {
        check!(gp(xsetbv(0, 3 | 1 << bit)), "XSETBV with unsupported bit {} is #GP(0)", bit);
    }
    check!(gp(xsetbv(1, 3)), "XSETBV with ECX = 1 is #GP(0)");

    // VEX instructions are #UD until XCR0 enables AVX.
    if avx {
        let r = catch(|| {
            // SAFETY: #UD inside catch.
            unsafe { asm!("vpxor xmm0, xmm0, xmm0") }
        });
        check!(matches!(r, Err(f) if f.vector == vector::UD), "VEX with XCR0.AVX = 0 is #UD");
    }

    let xcr0 = if avx { 7 } else { 3 };
    check!(xsetbv(0, xcr0).is_ok(), "XSETBV {:#x}", xcr0);
    check_eq!(xgetbv(0), Ok(xcr0), "XGETBV reads back XCR0");
    let size = arch::cpuid(0xd, 0).ebx;
    check_eq!(size, if avx { 832u32 } else { 576 }, "CPUID.0DH:EBX follows XCR0");
    round_trip(xcr0, avx);
}

fn round_trip(xcr0: u64, avx: bool) {
    // SAFETY: clears the area (static, owned by this kernel).
    unsafe { core::ptr::write_bytes(area(), 0, 4096) };
    let pat: [u64; 4] = [0x1111_2222_3333_4444, 0x5555_6666_7777_8888, 0x9999_aaaa_bbbb_cccc, 0xdddd_eeee_ffff_0000];
    let one = 1.0f32.to_bits();
    // SAFETY: loads x87 and XMM (and YMM) state, XSAVE with RFBM = all.
    unsafe {
        asm!("fninit", "fld dword ptr [{one}]",
             "movdqu xmm0, [{p}]", "movdqu xmm15, [{p} + 16]",
             one = in(reg) &one, p = in(reg) pat.as_ptr())
    };
    if avx {
        // SAFETY: AVX enabled in XCR0: 256-bit load into ymm1.
        unsafe { asm!("vmovdqu ymm1, [{p}]", p = in(reg) pat.as_ptr()) };
    }
    // SAFETY: XSAVE into the 64-byte aligned area.
    unsafe { asm!("xsave64 [{a}]", a = in(reg) area(), in("eax") u32::MAX, in("edx") u32::MAX) };
    let bv = rd64(512);
    println!("XSTATE_BV {:#x}, XCOMP_BV {:#x}", bv, rd64(520));
    check_eq!(bv & 3, 3u64, "XSTATE_BV: x87 and SSE in use");
    check_eq!(bv & !xcr0, 0u64, "XSTATE_BV has no bits outside XCR0");
    check_eq!(rd64(520), 0u64, "XCOMP_BV = 0 (standard format)");
    check_eq!((rd64(160), rd64(168)), (pat[0], pat[1]), "XSAVE: XMM0 in the legacy area");
    check_eq!((rd64(160 + 15 * 16), rd64(168 + 15 * 16)), (pat[2], pat[3]), "XSAVE: XMM15 in the legacy area");
    check_eq!(rd64(32) & 0xffff_ffff_ffff, 0x8000_0000_0000_0000 & 0xffff_ffff_ffff, "XSAVE: ST0 = 1.0 (significand)");
    if avx {
        check!(bv & 4 != 0 && (rd64(576 + 16), rd64(576 + 24)) == (pat[2], pat[3]), "XSAVE: upper half of YMM1 at 576");
    }

    // Clobber, restore, compare.
    let mut back = [0u64; 4];
    // SAFETY: XRSTOR from the area just written, then store XMM0/XMM15.
    unsafe {
        asm!("pxor xmm0, xmm0", "pxor xmm15, xmm15", "fninit",
             "xrstor64 [{a}]",
             "movdqu [{b}], xmm0", "movdqu [{b} + 16], xmm15",
             a = in(reg) area(), b = in(reg) back.as_mut_ptr(), in("eax") u32::MAX, in("edx") u32::MAX)
    };
    check_eq!(back, pat, "XRSTOR restores XMM0 and XMM15");
    let mut st0 = 0i32;
    // SAFETY: stores ST0 as an integer.
    unsafe { asm!("fistp dword ptr [{o}]", o = in(reg) &mut st0) };
    check_eq!(st0, 1, "XRSTOR restores the x87 stack");

    // XSTATE_BV[1] = 0: XRSTOR puts SSE state in its initial configuration
    // (XMM registers zero).
    wr64(512, rd64(512) & !2);
    let mut z = [1u64; 2];
    // SAFETY: as above.
    unsafe {
        asm!("xrstor64 [{a}]", "movdqu [{b}], xmm0",
             a = in(reg) area(), b = in(reg) z.as_mut_ptr(), in("eax") u32::MAX, in("edx") u32::MAX)
    };
    check_eq!(z, [0u64; 2], "XRSTOR with XSTATE_BV.SSE = 0 zeroes XMM0");

    // Reserved header bytes (16..63 of the header) must be zero.
    wr64(512 + 16, 1);
    let r = catch(|| {
        // SAFETY: #GP inside catch.
        unsafe { asm!("xrstor64 [{a}]", a = in(reg) area(), in("eax") u32::MAX, in("edx") u32::MAX) }
    });
    check!(matches!(r, Err(f) if f.is(vector::GP, 0)), "XRSTOR with a reserved header bit is #GP(0)");
    wr64(512 + 16, 0);
    // XSTATE_BV bit outside XCR0.
    wr64(512, rd64(512) | 1 << 9);
    let r = catch(|| {
        // SAFETY: #GP inside catch.
        unsafe { asm!("xrstor64 [{a}]", a = in(reg) area(), in("eax") u32::MAX, in("edx") u32::MAX) }
    });
    check!(matches!(r, Err(f) if f.is(vector::GP, 0)), "XRSTOR with XSTATE_BV outside XCR0 is #GP(0)");
    wr64(512, rd64(512) & !(1 << 9));
    let r = catch(|| {
        // SAFETY: misaligned area: #GP inside catch.
        unsafe { asm!("xsave64 [{a}]", a = in(reg) area().wrapping_add(16), in("eax") 3, in("edx") 0) }
    });
    check!(matches!(r, Err(f) if f.is(vector::GP, 0)), "XSAVE to a non-64-byte-aligned area is #GP(0)");
    // RFBM limits what is saved: SSE only leaves the x87 area alone.
    wr64(32, 0xdead);
    // SAFETY: XSAVE with RFBM = SSE.
    unsafe { asm!("xsave64 [{a}]", a = in(reg) area(), in("eax") 2, in("edx") 0) };
    check_eq!(rd64(32), 0xdeadu64, "XSAVE with RFBM = SSE does not write the x87 registers");
}
