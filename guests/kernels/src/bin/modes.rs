//! `modes`: operating modes and segmentation (SDM Vol. 3A, chapter 3
//! "Protected-Mode Memory Management", 5.3 "32-Bit Paging", 5.4 "PAE
//! Paging", 5.5 (5-level), 7.14 "Exception and Interrupt Handling in 64-bit
//! Mode", 10.8/10.9 "Mode Switching", 10.8.5 "Initializing IA-32e Mode").
//!
//! In 64-bit mode: LGDT/SGDT, LIDT/SIDT, LLDT/SLDT (LDT segments, #GP for a
//! non-LDT descriptor), LTR/STR (busy bit, #GP on a busy TSS), far CALL/RET
//! through a memory operand, POP FS/GS descriptor checks and #UD for the
//! POP DS/SS forms that 64-bit mode removed.
//!
//! Then one trip, written in assembly: IRETQ into compatibility mode (INC
//! as 0x40, INT through the 64-bit IDT, far CALL into 64-bit code and a
//! 32-bit far RET back, POP DS of a not-present segment = #NP, null SS =
//! #GP), paging off to leave IA-32e mode (32-bit protected mode: EFER.LMA
//! clear, segment base, limit and expand-down checks, null SS, #NP with a
//! 32-bit IDT), 32-bit paging with 4 KiB and 4 MiB pages and #PF/CR2, PAE
//! paging with a read-only 4 KiB page, 16-bit protected mode, real mode
//! (segment arithmetic, IVT interrupt, far call, 32-bit operands), back to
//! protected mode, 5-level paging (LA57, if CPUID reports it) with a linear
//! address above 2^48, and back to 4-level long mode.
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use rt::arch::{self, feature, DescriptorTablePointer};
use rt::gdt;
use rt::idt::{self, catch, vector, Frame};
use rt::{check, check_eq, skip};
use turtles_guest_kernels::paging as pg;

rt::entry!("modes", main);

/// Where the 16-bit/real-mode part of the trip runs (below 64 KiB).
const LOW: u64 = 0x7000;
/// Real-mode results (16-bit code cannot reach the image above 1 MiB).
const RES_LOW: u64 = 0x6f00;
/// Data read through a segment with base 0x10000 in protected mode.
const SEG_BASE: u64 = 0x1_0000;
/// Scratch for the trip's page tables and frames.
const PT: u64 = rt::SCRATCH_BASE;
const LDT_SEL: u16 = 0x80;
const TSS2_SEL: u16 = 0x90;
const SEL_NP: u16 = 0x68;
const SEL_LIMITED: u16 = 0xa0;
const SEL_EXPDOWN: u16 = 0xa8;

const M_SEG: u32 = 0xa5a5_0001;
const M_RM: u32 = 0xa5a5_0002;
const M_PG32: u32 = 0xa5a5_0003;
const M_PAE: u32 = 0xa5a5_0004;
const M_LA57: u32 = 0xa5a5_0005;

/// Results written by the trip (indices documented at each check).
#[no_mangle]
static MODES_RES: [AtomicU64; 48] = [const { AtomicU64::new(0xdead) }; 48];
/// Inputs to the trip.
#[no_mangle]
static MODES_IN: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
/// 32-bit IDT used while IA-32e mode is off.
#[no_mangle]
static IDT32: [AtomicU64; 32] = [const { AtomicU64::new(0) }; 32];

// MODES_IN slots.
const IN_PD32: usize = 0;
const IN_PDPT: usize = 1;
const IN_PML5: usize = 2;
const IN_BOOT_CR3: usize = 3;

global_asm!(
    r#"
    .set LOW, 0x7000
    .set RES_LOW, 0x6f00
    .set R, MODES_RES
    .set IN, MODES_IN

    .section .data.modes, "aw"
    .align 16
modes_saved_rsp:   .quad 0
modes_saved_gdtr:  .word 0
                   .quad 0
    .align 8
modes_saved_idtr:  .word 0
                   .quad 0
    .align 8
    .globl modes_resume
modes_resume:      .quad 0
pm_recover:        .long 0
pm_vec:            .long 0
pm_err:            .long 0
pm_cr2:            .long 0
    .align 8
idt32_ptr:         .word 32 * 8 - 1
                   .long IDT32

    .section .text.modes, "ax"
    .code64
    .globl modes_trip
modes_trip:
    push    %rbp
    push    %rbx
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, modes_saved_rsp(%rip)
    sgdt    modes_saved_gdtr(%rip)
    sidt    modes_saved_idtr(%rip)
    /* IRETQ to compatibility mode: CS = 0x38 (L = 0, D = 1) */
    mov     %rsp, %rax
    push    $0x10
    push    %rax
    push    $0x2
    push    $0x38
    lea     compat_entry(%rip), %rax
    push    %rax
    iretq

/* ---------------- compatibility mode ---------------- */
    .code32
compat_entry:
    mov     $41, %eax
    .byte   0x40                    /* inc eax (a REX prefix in 64-bit mode) */
    mov     %eax, R + 8 * 0
    mov     %cs, %eax
    mov     %eax, R + 8 * 1
    mov     $0xC0000080, %ecx
    rdmsr
    mov     %eax, R + 8 * 2
    /* INT through the 64-bit IDT (handler records the frame) */
    int     $0x81
    /* far call into 64-bit code, which returns with a 32-bit far RET */
    lcall   $0x08, $far64
    mov     %eax, R + 8 * 3
    /* POP DS of a not-present segment: #NP(0x68), resumed by the handler */
    movl    $1f, modes_resume
    push    $0x68
    pop     %ds
1:  /* null SS outside 64-bit mode: #GP(0) */
    movl    $1f, modes_resume
    xor     %eax, %eax
    mov     %eax, %ss
1:  mov     $0x10, %eax
    mov     %eax, %ss
    mov     %eax, %ds

    /* leave IA-32e mode: paging off (SDM 10.8.5.4), then LME off */
    mov     %cr0, %eax
    and     $0x7fffffff, %eax
    mov     %eax, %cr0
    mov     $0xC0000080, %ecx
    rdmsr
    and     $~0x100, %eax
    wrmsr
    rdmsr
    mov     %eax, R + 8 * 4         /* EFER: LMA and LME clear */
    lidt    idt32_ptr

/* ---------------- 32-bit protected mode, no paging ---------------- */
.macro PM_TRY
    movl    $1f, pm_recover
    movl    $0xff, pm_vec
.endm
.macro PM_DONE slot
1:  mov     pm_vec, %eax
    mov     %eax, R + 8 * \slot
    mov     pm_err, %eax
    mov     %eax, R + 8 * (\slot + 1)
.endm
    mov     $0xa0, %eax             /* base 0x10000, limit 0xfff */
    mov     %eax, %es
    mov     %es:0x10, %eax
    mov     %eax, R + 8 * 5
    PM_TRY
    mov     %es:0xffe, %eax         /* bytes 0xffe..0x1001 cross the limit */
    PM_DONE 6
    mov     $0xa8, %eax             /* expand-down, limit 0xfff */
    mov     %eax, %es
    PM_TRY
    mov     %es:0x800, %eax         /* below the limit: outside */
    PM_DONE 8
    mov     %es:0x2000, %eax        /* above: inside, no fault */
    mov     $0x10, %eax
    mov     %eax, %es
    PM_TRY
    xor     %eax, %eax
    mov     %eax, %ss
    PM_DONE 10
    PM_TRY
    mov     $0x68, %eax
    mov     %eax, %ds
    PM_DONE 12
    mov     $0x10, %eax
    mov     %eax, %ds
    mov     %eax, %ss

    /* 32-bit paging: CR4.PSE, PAE off, CR3 = PD32 */
    mov     %cr4, %eax
    and     $~0x20, %eax
    or      $0x10, %eax
    mov     %eax, %cr4
    mov     IN + 8 * 0, %eax
    mov     %eax, %cr3
    mov     %cr0, %eax
    or      $0x80010000, %eax       /* PG | WP */
    mov     %eax, %cr0
    mov     0x40000000, %eax        /* 4 KiB page -> frame with M_PG32 */
    mov     %eax, R + 8 * 14
    mov     0x40500000, %eax        /* 4 MiB page aliasing 0: image at 1 MiB */
    mov     %eax, R + 8 * 15
    PM_TRY
    mov     0x80000123, %eax        /* PDE not present */
    PM_DONE 16
    mov     pm_cr2, %eax
    mov     %eax, R + 8 * 18
    mov     %cr0, %eax
    and     $0x7fffffff, %eax
    mov     %eax, %cr0

    /* PAE paging (EFER.LME = 0, so this is not IA-32e) */
    mov     %cr4, %eax
    or      $0x20, %eax
    mov     %eax, %cr4
    mov     IN + 8 * 1, %eax
    mov     %eax, %cr3
    mov     %cr0, %eax
    or      $0x80000000, %eax
    mov     %eax, %cr0
    mov     0x40000000, %eax
    mov     %eax, R + 8 * 19
    PM_TRY
    movl    $1, 0x40001010          /* read-only 4 KiB page, CR0.WP = 1 */
    PM_DONE 20
    mov     pm_cr2, %eax
    mov     %eax, R + 8 * 22
    mov     %cr0, %eax
    and     $0x7fffffff, %eax
    mov     %eax, %cr0

    /* to 16-bit protected mode (code copied below 64 KiB) */
    ljmp    $0x40, $(LOW + (pm16 - modes_low_start))

/* ---------------- 16-bit protected mode and real mode ---------------- */
    .code16
    .globl modes_low_start, modes_low_end
modes_low_start:
pm16:
    mov     $0x48, %ax
    mov     %ax, %ds
    mov     %ax, %es
    mov     %ax, %ss
    mov     %ax, %fs
    mov     %ax, %gs
    mov     $0x7000, %sp
    mov     $0x12340000, %eax
    mov     $0xffff, %ax
    inc     %ax                     /* 16-bit operand: EAX[31:16] kept */
    mov     %eax, RES_LOW + 0
    /* real mode: IVT at 0, PE off, far jump to load CS */
    lidtl   (LOW + (ivt_ptr - modes_low_start))
    mov     %cr0, %eax
    and     $~1, %eax
    mov     %eax, %cr0
    ljmp    $(LOW >> 4), $(rm - modes_low_start)
rm:
    xor     %ax, %ax
    mov     %ax, %ds
    mov     %ax, %ss
    mov     $0x7000, %sp
    mov     $0x0600, %ax            /* ES = 0x600: linear 0x6000 */
    mov     %ax, %es
    mov     %es:0x10, %eax
    mov     %eax, RES_LOW + 4
    movw    $(rm_int - modes_low_start), 0x50 * 4
    movw    $(LOW >> 4), 0x50 * 4 + 2
    int     $0x50
    lcall   $(LOW >> 4), $(rm_far - modes_low_start)
    mov     $0xdeadbeef, %eax
    mov     %eax, RES_LOW + 12
    /* back to protected mode */
    mov     %cr0, %eax
    or      $1, %eax
    mov     %eax, %cr0
    ljmpl   $0x38, $pm32_back
rm_int:
    movw    $0x5050, RES_LOW + 8
    mov     %sp, %bp
    mov     4(%bp), %ax             /* pushed FLAGS */
    mov     %ax, RES_LOW + 16
    iret
rm_far:
    movw    $0x00fa, RES_LOW + 10
    lret
    .align 4
ivt_ptr:
    .word   0x3ff
    .long   0
modes_low_end:

/* ---------------- back in 32-bit protected mode ---------------- */
    .code32
pm32_back:
    mov     $0x10, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    mov     %eax, %fs
    mov     %eax, %gs
    mov     modes_saved_rsp, %esp
    lidt    idt32_ptr
    mov     IN + 8 * 2, %eax        /* PML5, or 0 without LA57 */
    test    %eax, %eax
    jz      enter_lm4
    /* 5-level paging: CR4.LA57 may only change with paging off */
    mov     %cr4, %ecx
    or      $0x1020, %ecx           /* LA57 | PAE */
    mov     %ecx, %cr4
    mov     %eax, %cr3
    mov     $0xC0000080, %ecx
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000000, %eax
    mov     %eax, %cr0
    ljmp    $0x08, $la57_64
    .code64
la57_64:
    mov     %esp, %esp              /* RSP[63:32] undefined after 32-bit code */
    movabs  $0x0001000000000000, %rax
    mov     (%rax), %eax
    mov     %eax, R + 8 * 27
    mov     %cr4, %rax
    mov     %eax, R + 8 * 28
    push    $0x38
    lea     la57_back32(%rip), %rax
    push    %rax
    lretq
    .code32
la57_back32:
    mov     %cr0, %eax
    and     $0x7fffffff, %eax
    mov     %eax, %cr0
    mov     %cr4, %eax
    and     $~0x1000, %eax
    mov     %eax, %cr4
enter_lm4:
    /* 4-level IA-32e mode again (SDM 10.8.5) */
    mov     %cr4, %eax
    or      $0x20, %eax
    and     $~0x1000, %eax
    mov     %eax, %cr4
    mov     IN + 8 * 3, %eax
    mov     %eax, %cr3
    mov     $0xC0000080, %ecx
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000000, %eax
    mov     %eax, %cr0
    ljmp    $0x08, $back64
    .code64
back64:
    mov     $0x10, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    lgdt    modes_saved_gdtr(%rip)
    lidt    modes_saved_idtr(%rip)
    mov     modes_saved_rsp(%rip), %rsp
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbx
    pop     %rbp
    ret

/* 64-bit target of the far call from compatibility mode */
far64:
    mov     %cs, %eax
    shl     $16, %eax
    or      $0x64, %eax
    lretl                           /* 32-bit far return: pops EIP, CS */

/* 32-bit protected-mode exception stubs: record, resume at pm_recover */
    .code32
    .globl pm_exc_ud, pm_exc_np, pm_exc_gp, pm_exc_pf, pm_exc_ss
pm_exc_ud:
    push    $0
    push    $6
    jmp     pm_exc
pm_exc_np:
    push    $11
    jmp     pm_exc
pm_exc_ss:
    push    $12
    jmp     pm_exc
pm_exc_gp:
    push    $13
    jmp     pm_exc
pm_exc_pf:
    push    $14
pm_exc:
    pop     pm_vec
    pop     pm_err
    push    %eax
    mov     %cr2, %eax
    mov     %eax, pm_cr2
    mov     pm_recover, %eax
    mov     %eax, 4(%esp)           /* replace the saved EIP */
    pop     %eax
    iret
    .code64
"#,
    options(att_syntax)
);

extern "C" {
    fn modes_trip();
    fn pm_exc_ud();
    fn pm_exc_np();
    fn pm_exc_ss();
    fn pm_exc_gp();
    fn pm_exc_pf();
    static modes_low_start: u8;
    static modes_low_end: u8;
    static mut modes_resume: u64;
}

fn res(i: usize) -> u64 {
    MODES_RES[i].load(Ordering::SeqCst) & 0xffff_ffff
}

fn phys32(a: u64) -> u32 {
    // SAFETY: identity-mapped low RAM or scratch.
    unsafe { core::ptr::read_volatile(a as *const u32) }
}

fn put32(a: u64, v: u32) {
    // SAFETY: identity-mapped low RAM or scratch owned by this kernel.
    unsafe { core::ptr::write_volatile(a as *mut u32, v) }
}

fn put64(a: u64, v: u64) {
    // SAFETY: as put32.
    unsafe { core::ptr::write_volatile(a as *mut u64, v) }
}

fn main(_mb: u32) {
    descriptor_tables();
    far_calls_64();
    pop_sreg_64();
    trip();
}

fn descriptor_tables() {
    // LGDT/SGDT with a copy of the GDT at another address.
    #[repr(C, align(16))]
    struct Copy([u64; gdt::ENTRIES]);
    static COPY: rt::sync::Global<Copy> = rt::sync::Global::new(Copy([0; gdt::ENTRIES]));
    let orig = arch::sgdt();
    // SAFETY: COPY is only used here; the copy holds the same descriptors.
    unsafe {
        core::ptr::copy_nonoverlapping(gdt::table(), COPY.as_ptr() as *mut u64, gdt::ENTRIES);
        let p = DescriptorTablePointer { limit: orig.limit, base: COPY.as_ptr() as u64 };
        arch::lgdt(&p);
        let s = arch::sgdt();
        asm!("mov ds, {0:x}", in(reg) gdt::KDATA);
        arch::lgdt(&orig);
        check!(s == p, "LGDT then SGDT returns the new base and limit");
    }
    check_eq!(arch::sgdt(), orig, "GDTR restored");
    let idtr = arch::sidt();
    let small = DescriptorTablePointer { limit: 0x7ff, base: idtr.base };
    // SAFETY: only vectors < 0x80 can arrive before the IDTR is restored.
    unsafe { arch::lidt(&small) };
    let s = arch::sidt();
    idt::load();
    check!(s == small, "LIDT then SIDT returns the new limit");

    // LLDT: an LDT with a flat data segment at index 1 (selector 0x0c).
    #[repr(C, align(8))]
    struct Ldt([u64; 2]);
    static LDT: Ldt = Ldt([0, gdt::seg_descriptor(0, 0xfffff, 0x92, 0xc)]);
    let d = gdt::system_descriptor(&LDT as *const Ldt as u64, 15, 2);
    // SAFETY: free GDT slots.
    unsafe {
        gdt::set_descriptor(LDT_SEL, d[0]);
        gdt::set_descriptor(LDT_SEL + 8, d[1]);
    }
    let r = catch(|| {
        let s: u16;
        // SAFETY: loads the LDT, a data segment from it, then restores DS.
        unsafe {
            asm!("lldt {l:x}", "mov ds, {s:x}", "mov ax, 0x10", "mov ds, ax", "sldt {o:x}",
                      l = in(reg) LDT_SEL, s = in(reg) 0x0cu16, o = out(reg) s, out("ax") _)
        };
        s
    });
    check_eq!(r, Ok(LDT_SEL), "LLDT, load DS from the LDT, SLDT");
    let f = catch(|| {
        // SAFETY: LDT index 0 is a zero (system, type 0) descriptor: #GP.
        unsafe { asm!("mov ds, {s:x}", s = in(reg) 0x04u16) }
    });
    check!(
        matches!(f, Err(f) if f.is(vector::GP, 0x04)),
        "LDT selector 0x04 (not null: TI = 1) with an empty descriptor is #GP(4)"
    );
    let f = catch(|| {
        // SAFETY: LLDT with a data-segment selector is #GP(selector).
        unsafe { asm!("lldt {s:x}", s = in(reg) gdt::KDATA) }
    });
    check!(matches!(f, Err(f) if f.is(vector::GP, gdt::KDATA as u64)), "LLDT of a non-LDT descriptor is #GP(selector)");
    // SAFETY: null LDTR.
    unsafe { asm!("lldt {0:x}", in(reg) 0u16) };

    // LTR: a second TSS descriptor; LTR marks it busy; LTR of a busy TSS
    // is #GP(selector).
    let base = {
        let lo = gdt::descriptor(gdt::TSS);
        let hi = gdt::descriptor(gdt::TSS + 8);
        (lo >> 16 & 0xff_ffff) | (lo >> 56 & 0xff) << 24 | hi << 32
    };
    let d = gdt::system_descriptor(base, 0x67, 9);
    // SAFETY: free GDT slots.
    unsafe {
        gdt::set_descriptor(TSS2_SEL, d[0]);
        gdt::set_descriptor(TSS2_SEL + 8, d[1]);
    }
    let r = catch(|| {
        let s: u16;
        // SAFETY: loads TR with an equivalent TSS.
        unsafe { asm!("ltr {l:x}", "str {o:x}", l = in(reg) TSS2_SEL, o = out(reg) s) };
        s
    });
    check_eq!(r, Ok(TSS2_SEL), "LTR then STR");
    check_eq!(gdt::descriptor(TSS2_SEL) >> 40 & 0xf, 0xbu64, "LTR sets the busy bit (type 9 -> 0xb)");
    let f = catch(|| {
        // SAFETY: LTR of a busy TSS is #GP(selector).
        unsafe { asm!("ltr {l:x}", l = in(reg) TSS2_SEL) }
    });
    check!(matches!(f, Err(f) if f.is(vector::GP, TSS2_SEL as u64)), "LTR of a busy TSS is #GP(selector)");
    // SAFETY: back to the runtime TSS.
    unsafe { gdt::reload_tr() };
    let s: u16;
    // SAFETY: STR.
    unsafe { asm!("str {0:x}", out(reg) s) };
    check_eq!(s, gdt::TSS, "TR restored");
}

fn far_calls_64() {
    // Far call through an m16:64 operand (REX.W FF /3) and far return.
    #[repr(C, packed)]
    struct Far {
        off: u64,
        sel: u16,
    }
    let target: u64;
    // SAFETY: label address only.
    unsafe { asm!("lea {}, [rip + 2f]", "jmp 3f", "2: mov eax, 0x77", "retfq", "3:", out(reg) target) };
    let f = Far { off: target, sel: gdt::KCODE64 };
    let v: u32;
    // SAFETY: as above, with REX.W for a 64-bit offset.
    unsafe { asm!(".byte 0x48, 0xff, 0x18", in("rax") &f, lateout("eax") v) };
    check_eq!(v, 0x77u32, "far call m16:64 and far return in 64-bit mode");
}

fn pop_sreg_64() {
    // SAFETY: free GDT slot for a not-present data segment.
    unsafe { gdt::set_descriptor(SEL_NP, gdt::seg_descriptor(0, 0xfffff, 0x12, 0xc)) };
    let f = catch(|| {
        // SAFETY: 0x1f (POP DS) is invalid in 64-bit mode: #UD.
        unsafe { asm!("push 0x10", ".byte 0x1f", "pop rax", out("rax") _) }
    });
    check!(matches!(f, Err(f) if f.vector == vector::UD), "POP DS is #UD in 64-bit mode");
    let f = catch(|| {
        // SAFETY: 0x17 (POP SS) is invalid in 64-bit mode: #UD.
        unsafe { asm!("push 0x10", ".byte 0x17", "pop rax", out("rax") _) }
    });
    check!(matches!(f, Err(f) if f.vector == vector::UD), "POP SS is #UD in 64-bit mode");
    let f = catch(|| {
        // SAFETY: POP FS of a not-present segment: #NP(selector).
        // (0f a1 = POP FS with the default 64-bit operand size)
        unsafe { asm!("push {s}", ".byte 0x0f, 0xa1", "pop {s}", s = inout(reg) SEL_NP as u64 => _) }
    });
    check!(matches!(f, Err(f) if f.is(vector::NP, SEL_NP as u64)), "POP FS of a not-present segment is #NP(selector)");
    let f = catch(|| {
        // SAFETY: POP GS (0f a9, 64-bit operand) of the readable 64-bit
        // code segment is allowed; GS is reset to null after.
        unsafe { asm!("push 0x08", ".byte 0x0f, 0xa9", "xor eax, eax", "mov gs, eax", out("eax") _) }
    });
    check!(f.is_ok(), "POP GS of a readable code segment is allowed: {:x?}", f);
}

static COMPAT_INT_CS: AtomicU64 = AtomicU64::new(0);
static RESUMED: [AtomicU64; 4] = [const { AtomicU64::new(0xff) }; 4];
static NRESUMED: AtomicU64 = AtomicU64::new(0);

fn int81(f: &mut Frame) {
    COMPAT_INT_CS.store(f.cs | (f.rip & 0xffff_ffff) << 16, Ordering::SeqCst);
}

fn resume(f: &mut Frame) {
    let n = NRESUMED.fetch_add(1, Ordering::SeqCst) as usize;
    if n < 2 {
        RESUMED[2 * n].store(f.vector, Ordering::SeqCst);
        RESUMED[2 * n + 1].store(f.error_code, Ordering::SeqCst);
    }
    // SAFETY: written by the trip just before the faulting instruction.
    f.rip = unsafe { core::ptr::read_volatile(&raw const modes_resume) };
}

fn gate32(handler: unsafe extern "C" fn()) -> u64 {
    let o = handler as *const () as u64;
    (o & 0xffff) | (gdt::KCODE32 as u64) << 16 | 0x8e00u64 << 32 | (o >> 16 & 0xffff) << 48
}

fn trip() {
    // Low-memory code and data.
    let (s, e) = (&raw const modes_low_start as u64, &raw const modes_low_end as u64);
    check!(e - s < RES_LOW.wrapping_sub(LOW) || e - s < 0x1000, "low stub fits ({} bytes)", e - s);
    // SAFETY: copies the 16-bit part of the trip to LOW (free conventional
    // memory below 64 KiB; so are RES_LOW and 0x6000).
    unsafe { core::ptr::copy_nonoverlapping(s as *const u8, LOW as *mut u8, (e - s) as usize) };
    for i in 0..8 {
        put32(RES_LOW + 4 * i, 0xdead);
    }
    put32(0x6010, M_RM);
    put32(SEG_BASE + 0x10, M_SEG);
    // SAFETY: free GDT slots: base 0x10000 limit 0xfff; expand-down limit
    // 0xfff (valid offsets 0x1000..=0xffffffff); a not-present segment.
    unsafe {
        gdt::set_descriptor(SEL_LIMITED, gdt::seg_descriptor(SEG_BASE as u32, 0xfff, 0x92, 0x4));
        gdt::set_descriptor(SEL_EXPDOWN, gdt::seg_descriptor(0, 0xfff, 0x96, 0x4));
        gdt::set_descriptor(SEL_NP, gdt::seg_descriptor(0, 0xfffff, 0x12, 0xc));
    }
    // 32-bit IDT.
    IDT32[6].store(gate32(pm_exc_ud), Ordering::SeqCst);
    IDT32[11].store(gate32(pm_exc_np), Ordering::SeqCst);
    IDT32[12].store(gate32(pm_exc_ss), Ordering::SeqCst);
    IDT32[13].store(gate32(pm_exc_gp), Ordering::SeqCst);
    IDT32[14].store(gate32(pm_exc_pf), Ordering::SeqCst);

    // 32-bit paging: PD at PT, PT at PT+0x1000, frame at PT+0x2000.
    // SAFETY: zeroes scratch.
    unsafe { core::ptr::write_bytes(PT as *mut u8, 0, 0x10000) };
    for i in 0..32u64 {
        put32(PT + 4 * i, (i << 22) as u32 | 0x83); // 128 MiB identity, 4 MiB pages
    }
    put32(PT + 4 * 256, (PT + 0x1000) as u32 | 3); // 0x40000000 -> PT
    put32(PT + 0x1000, (PT + 0x2000) as u32 | 3); //   -> frame
    put32(PT + 0x2000, M_PG32);
    put32(PT + 4 * 257, 0x83); // 0x40400000: 4 MiB page at 0
    MODES_IN[IN_PD32].store(PT, Ordering::SeqCst);
    // PAE: PDPT at +0x3000, PD A (1 GiB of 2 MiB pages) at +0x4000, PD B at
    // +0x5000, PT B at +0x6000, frame at +0x7000 (+0x8000 read-only).
    let b = PT + 0x3000;
    put64(b, (PT + 0x4000) | 1);
    put64(b + 8, (PT + 0x5000) | 1);
    for i in 0..512u64 {
        put64(PT + 0x4000 + 8 * i, i << 21 | 0x83);
    }
    put64(PT + 0x5000, (PT + 0x6000) | 3);
    put64(PT + 0x6000, (PT + 0x7000) | 3);
    put64(PT + 0x6008, (PT + 0x8000) | 1);
    put32(PT + 0x7000, M_PAE);
    MODES_IN[IN_PDPT].store(b, Ordering::SeqCst);
    // LA57: PML5[0] = boot PML4; PML5[1] -> a PML4 mapping linear 2^48.
    let la57 = arch::has(feature::LA57);
    if la57 {
        pg::set_frame_pool(PT + 0x10000);
        let pml5 = pg::alloc_frame();
        let pml4b = pg::alloc_frame();
        put64(pml5, rt::boot::pml4() | 3);
        put64(pml5 + 8, pml4b | 3);
        let frame = pg::alloc_frame();
        put32(frame, M_LA57);
        // Linear 2^48 has PML4 index 0 .. PT index 0 below PML5 index 1.
        pg::map(pml4b, 0, frame, pg::SIZE_4K, pg::P | pg::W, pg::P | pg::W);
        MODES_IN[IN_PML5].store(pml5, Ordering::SeqCst);
    }
    MODES_IN[IN_BOOT_CR3].store(arch::read_cr3(), Ordering::SeqCst);

    idt::set_handler(0x81, Some(int81));
    idt::set_handler(vector::NP, Some(resume));
    idt::set_handler(vector::GP, Some(resume));
    let cr0 = arch::read_cr0();
    let cr4 = arch::read_cr4();
    // SAFETY: the trip saves and restores everything it changes: RSP and
    // callee-saved registers, GDTR, IDTR, CR0/CR3/CR4 and EFER.LME; IF = 0.
    unsafe { modes_trip() };
    // SAFETY: restores control registers the trip changed (WP, PSE).
    unsafe {
        arch::write_cr4(cr4);
        arch::write_cr0(cr0);
    }
    idt::set_handler(vector::NP, None);
    idt::set_handler(vector::GP, None);
    check!(true, "survived the trip through all modes back to 64-bit mode");

    check_eq!(res(0), 42u64, "compat: 0x40 is INC EAX");
    check_eq!(res(1), gdt::KCODE32 as u64, "compat: IRETQ loaded CS = 0x38");
    check!(res(2) & 0x500 == 0x500, "compat: EFER.LMA = LME = 1");
    check_eq!(
        COMPAT_INT_CS.load(Ordering::SeqCst) & 0xffff,
        gdt::KCODE32 as u64,
        "compat: INT through the 64-bit IDT saves CS = 0x38"
    );
    check_eq!(res(3), (gdt::KCODE64 as u64) << 16 | 0x64, "compat: far CALL to 64-bit code, 32-bit far RET back");
    let rs = [
        RESUMED[0].load(Ordering::SeqCst),
        RESUMED[1].load(Ordering::SeqCst),
        RESUMED[2].load(Ordering::SeqCst),
        RESUMED[3].load(Ordering::SeqCst),
    ];
    check_eq!(
        (rs[0], rs[1]),
        (vector::NP as u64, SEL_NP as u64),
        "compat: POP DS of a not-present segment is #NP(selector)"
    );
    check_eq!((rs[2], rs[3]), (vector::GP as u64, 0u64), "compat: MOV SS, null is #GP(0) outside 64-bit mode");
    check_eq!(res(4) & 0x500, 0u64, "paging off leaves IA-32e mode: EFER.LMA = 0 (and LME cleared)");
    check_eq!(res(5), M_SEG as u64, "protected mode: segment base 0x10000");
    // QEMU TCG does not check data segment limits.
    rt::check_sdm!((res(6), res(7)) == (13, 0), true, "protected mode: access crossing the segment limit is #GP(0)");
    rt::check_sdm!(
        (res(8), res(9)) == (13, 0),
        true,
        "protected mode: expand-down segment, offset below the limit is #GP(0)"
    );
    check_eq!((res(10), res(11)), (13u64, 0u64), "protected mode: MOV SS, null is #GP(0)");
    check_eq!((res(12), res(13)), (11u64, SEL_NP as u64), "protected mode: MOV DS, not present is #NP(selector)");
    check_eq!(res(14), M_PG32 as u64, "32-bit paging: 4 KiB page");
    check_eq!(res(15), phys32(0x10_0000) as u64, "32-bit paging: 4 MiB page (PSE)");
    check_eq!((res(16), res(17), res(18)), (14u64, 0u64, 0x8000_0123u64), "32-bit paging: #PF not present, CR2");
    check_eq!(res(19), M_PAE as u64, "PAE paging: 4 KiB page under the second PDPTE");
    check_eq!(
        (res(20), res(21), res(22)),
        (14u64, 3u64, 0x4000_1010u64),
        "PAE paging: write to a read-only page is #PF(P|W), CR2"
    );
    check_eq!(phys32(RES_LOW), 0x1234_0000u32, "16-bit protected mode: 16-bit INC keeps EAX[31:16]");
    check_eq!(phys32(RES_LOW + 4), M_RM, "real mode: ES = 0x600 addresses linear 0x6000");
    check_eq!(phys32(RES_LOW + 8) & 0xffff, 0x5050u32, "real mode: INT 0x50 through the IVT");
    check_eq!(phys32(RES_LOW + 8) >> 16, 0xfau32, "real mode: far CALL and RETF");
    check_eq!(phys32(RES_LOW + 12), 0xdead_beefu32, "real mode: 32-bit operand with the 0x66 prefix");
    check_eq!(phys32(RES_LOW + 16) & 0x0002, 0x0002u32, "real mode: INT pushed FLAGS");
    if la57 {
        check_eq!(res(27), M_LA57 as u64, "5-level paging: linear address 2^48");
        check!(res(28) & 1 << 12 != 0, "5-level paging: CR4.LA57 set");
    } else {
        skip!("CPUID.7.0:ECX.LA57 = 0", "5-level paging");
    }
    check!(arch::read_cr4() & 1 << 12 == 0 && arch::read_cr3() == rt::boot::pml4(), "back in 4-level paging");
    // SAFETY: EFER exists.
    check!(unsafe { arch::rdmsr(arch::msr::EFER) } & 0x500 == 0x500, "back in IA-32e mode");
}
