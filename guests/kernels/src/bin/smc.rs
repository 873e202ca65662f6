//! `smc`: self-modifying code (SDM Vol. 3A, 11.6 "Self-Modifying Code":
//! a write to a code byte is detected and the new instruction executed,
//! for writes through any linear alias, without serialising instructions,
//! on one processor).
//!
//! Checks: patching the immediate of a function that already ran (same
//! page as other code), a loop that rewrites its own immediate every
//! iteration, a store that patches the very next instruction, code copied
//! to another page then replaced, REP MOVSB writing code, an instruction
//! straddling a page boundary patched on its second page, patching through
//! a second linear mapping of the same frame, and a hot (often executed)
//! block patched afterwards.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use rt::check_eq;
use turtles_guest_kernels::paging as pg;

rt::entry!("smc", main);

global_asm!(
    r#"
    .section .text.smc, "awx"
    .globl smc_imm, smc_imm_end, smc_loop, smc_loop_imm, smc_next, smc_next_imm, smc_hot, smc_hot_imm
/* u32 smc_imm(void): returns its own immediate */
smc_imm:
    mov     eax, 0x11111111
    ret
smc_imm_end:

/* u64 smc_loop(u64 n): each iteration adds the immediate of its MOV to the
 * sum, then stores immediate + 1 into that MOV */
smc_loop:
    xor     edx, edx
2:
    .byte   0xb8                    /* mov eax, imm32 */
smc_loop_imm:
    .long   0
    add     rdx, rax
    inc     eax
    mov     dword ptr [rip + smc_loop_imm], eax
    dec     rdi
    jnz     2b
    mov     rax, rdx
    ret

/* u8 smc_next(void): patches the immediate of the next instruction */
smc_next:
    mov     byte ptr [rip + smc_next_imm], 0x42
    .byte   0xb0                    /* mov al, imm8 */
smc_next_imm:
    .byte   0x00
    ret

/* u64 smc_hot(u64 n): sum of n copies of an immediate */
smc_hot:
    xor     edx, edx
2:
    .byte   0x48, 0xc7, 0xc0        /* mov rax, imm32 (sign-extended) */
smc_hot_imm:
    .long   3
    add     rdx, rax
    dec     rdi
    jnz     2b
    mov     rax, rdx
    ret
"#
);

extern "C" {
    fn smc_imm() -> u32;
    fn smc_loop(n: u64) -> u64;
    fn smc_next() -> u8;
    fn smc_hot(n: u64) -> u64;
    static mut smc_loop_imm: u32;
    static mut smc_next_imm: u8;
    static mut smc_hot_imm: u32;
}

const SCRATCH: u64 = rt::SCRATCH_BASE;

fn poke32(addr: u64, v: u32) {
    // SAFETY: the address is a code immediate or scratch code owned here;
    // the image and scratch memory are identity mapped writable.
    unsafe { core::ptr::write_unaligned(addr as *mut u32, v) }
}

fn call(addr: u64) -> u64 {
    let r: u64;
    // SAFETY: `addr` holds a function written by this kernel.
    unsafe { asm!("call {f}", f = in(reg) addr, out("rax") r, clobber_abi("C")) };
    r
}

fn main(_mb: u32) {
    // 1. A function that ran is patched and runs again.
    // SAFETY: calls into the global_asm code above.
    let a = unsafe { smc_imm() };
    poke32(smc_imm as *const () as u64 + 1, 0x2222_2222);
    // SAFETY: as above.
    let b = unsafe { smc_imm() };
    check_eq!((a, b), (0x1111_1111u32, 0x2222_2222u32), "patched immediate of a function that already ran");

    // 2. A loop that patches its own immediate every iteration.
    for round in 0..2 {
        // SAFETY: reset the immediate, then run.
        let s = unsafe {
            core::ptr::write_volatile(&raw mut smc_loop_imm, 0);
            smc_loop(1000)
        };
        check_eq!(s, 1000 * 999 / 2u64, "loop patching its own immediate each iteration (round {})", round);
    }

    // 3. A store patching the very next instruction.
    for round in 0..2 {
        // SAFETY: reset the immediate, then run.
        let r = unsafe {
            core::ptr::write_volatile(&raw mut smc_next_imm, 0);
            smc_next()
        };
        check_eq!(r, 0x42u8, "store patches the next instruction (round {})", round);
    }

    // 4. Code copied to another page, run, replaced, run.
    let f1: [u8; 6] = [0xb8, 0x78, 0x56, 0x34, 0x12, 0xc3]; // mov eax, 0x12345678; ret
    let f2: [u8; 8] = [0x48, 0x31, 0xc0, 0xb0, 0x07, 0xc3, 0x90, 0x90]; // xor rax,rax; mov al,7; ret
    copy(SCRATCH, &f1);
    let r1 = call(SCRATCH);
    copy(SCRATCH, &f2);
    let r2 = call(SCRATCH);
    check_eq!((r1, r2), (0x1234_5678u64, 7u64), "code written to a fresh page, run, replaced, run");

    // 5. REP MOVSB writes the code.
    let f3: [u8; 6] = [0xb8, 0xef, 0xbe, 0xad, 0xde, 0xc3];
    // SAFETY: copies into scratch code memory.
    unsafe { asm!("rep movsb", inout("rsi") f3.as_ptr() => _, inout("rdi") SCRATCH => _, inout("rcx") f3.len() => _) };
    check_eq!(call(SCRATCH), 0xdead_beefu64, "code written by rep movsb");

    // 6. An instruction straddling a page boundary, patched on page two:
    // mov eax, imm32 starts 3 bytes before the boundary.
    let start = SCRATCH + 0x2000 - 3;
    copy(start, &[0xb8, 0x01, 0x02, 0x03, 0x04, 0xc3]);
    let r1 = call(start);
    poke32(start + 1, 0x0b0a_0203); // bytes 3 and 4 of the imm are on the next page
    let r2 = call(start);
    check_eq!((r1, r2), (0x0403_0201u64, 0x0b0a_0203u64), "instruction straddling a page boundary patched on page two");

    // 7. Patch through another linear alias of the same frame.
    pg::set_frame_pool(SCRATCH + 0x10_0000);
    let alias = 0x80_0000_0000u64;
    let code = SCRATCH + 0x4000;
    pg::map(rt::boot::pml4(), alias, code, pg::SIZE_4K, pg::P | pg::W, pg::P | pg::W);
    copy(code, &[0xb8, 0x05, 0x00, 0x00, 0x00, 0xc3]);
    let r1 = call(code);
    poke32(alias + 1, 6);
    let r2 = call(code);
    check_eq!((r1, r2), (5u64, 6u64), "code patched through a second linear mapping");

    // 8. A hot block (run many times, so an emulator has compiled it)
    // patched afterwards.
    // SAFETY: calls into the global_asm code; the immediate is patched in
    // between.
    let (h1, h2) = unsafe {
        let h1 = smc_hot(100_000);
        core::ptr::write_volatile(&raw mut smc_hot_imm, 5);
        (h1, smc_hot(100_000))
    };
    check_eq!((h1, h2), (300_000u64, 500_000u64), "hot loop patched after 100000 iterations");
}

fn copy(dst: u64, code: &[u8]) {
    // SAFETY: scratch memory owned by this kernel, identity mapped.
    unsafe { core::ptr::copy_nonoverlapping(code.as_ptr(), dst as *mut u8, code.len()) };
}
