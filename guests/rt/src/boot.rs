//! Boot code: multiboot v1 header, 32-bit entry, paging and long-mode switch,
//! and the application-processor trampoline.
//!
//! Entry state (Multiboot Specification 0.6.96, 3.2 "Machine state"):
//! 32-bit protected mode, paging off, flat CS/DS with unknown selectors,
//! EAX = 0x2BADB002, EBX = physical address of the multiboot information,
//! interrupts disabled, no valid stack, GDTR/IDTR unspecified.
//!
//! The header sets flag bit 16 (address fields valid, the "a.out kludge"):
//! QEMU's multiboot loader refuses ELF64 files unless that bit is set, and
//! then loads `[load_addr, load_end_addr)` straight from the file, so the
//! linker script keeps the image in one file-contiguous PT_LOAD segment at
//! 1 MiB. Flag bit 1 asks for the memory fields and map.
//!
//! Long mode setup follows SDM Vol. 3A, 10.8.5 "Initializing IA-32e Mode":
//! CR4.PAE, CR3 = PML4, EFER.LME, then CR0.PG, then a far jump to a 64-bit
//! code segment. The first 4 GiB are identity mapped with 2 MiB pages
//! (PML4[0] -> PDPT, PDPT[0..4] -> 4 page directories); the top GiB (APIC,
//! IOAPIC, 0xff000000 testdev MMIO, BIOS) is mapped with PCD|PWT.

use core::arch::global_asm;

/// Physical address the AP trampoline is copied to; the STARTUP IPI vector is
/// `AP_TRAMPOLINE >> 12` (SDM Vol. 3A, 9.4.4.1 "Typical BSP Initialization
/// Sequence").
pub const AP_TRAMPOLINE: u64 = 0x8000;
/// Maximum number of CPUs the runtime gives stacks to.
pub const MAX_CPUS: usize = 16;
/// Size of each AP stack.
pub const AP_STACK_SIZE: usize = 16 * 1024;

global_asm!(
    r#"
    .set MB_MAGIC, 0x1BADB002
    .set MB_FLAGS, 0x00010002

    .section .multiboot, "a"
    .align 4
    .globl __multiboot_header
__multiboot_header:
    .long MB_MAGIC
    .long MB_FLAGS
    .long -(MB_MAGIC + MB_FLAGS)
    .long __multiboot_header        /* header_addr */
    .long __image_start             /* load_addr */
    .long __load_end                /* load_end_addr */
    .long __bss_end                 /* bss_end_addr */
    .long _start32                  /* entry_addr */

    .section .text.boot32, "ax"
    .code32
    .globl _start32
_start32:
    cli
    cld
    mov     %eax, %edx              /* multiboot magic */
    mov     %ebx, %esi              /* multiboot info */

    /* zero .bss (page tables, stacks): loaders are not trusted to */
    mov     $__bss_start, %edi
    mov     $__bss_end, %ecx
    sub     %edi, %ecx
    shr     $2, %ecx
    xor     %eax, %eax
    rep stosl

    mov     %edx, __mb_magic
    mov     %esi, __mb_info
    mov     $__boot_stack_top, %esp

    /* PML4[0] -> PDPT */
    movl    $(__pdpt + 3), __pml4
    /* PDPT[0..4] -> PD0..PD3 */
    mov     $__pdpt, %edi
    mov     $(__pd + 3), %eax
    mov     $4, %ecx
1:  mov     %eax, (%edi)
    add     $0x1000, %eax
    add     $8, %edi
    loop    1b
    /* PD entries: 2048 x 2 MiB, P|RW|PS, identity */
    mov     $__pd, %edi
    mov     $0x83, %eax
    mov     $2048, %ecx
2:  mov     %eax, (%edi)
    add     $0x200000, %eax
    add     $8, %edi
    loop    2b
    /* last GiB (MMIO): PWT|PCD */
    mov     $(__pd + 3 * 4096), %edi
    mov     $512, %ecx
3:  orl     $0x18, (%edi)
    add     $8, %edi
    loop    3b

    lgdt    __gdt_ptr
    mov     %cr4, %eax
    or      $0x20, %eax             /* CR4.PAE */
    mov     %eax, %cr4
    mov     $__pml4, %eax
    mov     %eax, %cr3
    mov     $0xC0000080, %ecx       /* IA32_EFER.LME */
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000001, %eax       /* CR0.PG | CR0.PE */
    mov     %eax, %cr0
    ljmp    $0x08, $_start64

    .code64
_start64:
    mov     $0x10, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    mov     $__boot_stack_top, %rsp
    xor     %ebp, %ebp
    mov     __mb_info(%rip), %edi
    call    rt_start
    ud2

/* ---------------------------------------------------------------------
 * AP trampoline, copied to AP_TRAMPOLINE. Runs in real mode with
 * CS = AP_TRAMPOLINE >> 4, IP = 0 (SDM Vol. 3A, 9.4.4.2 "Typical AP
 * Initialization Sequence"). It loads the runtime GDT and enters 32-bit
 * protected mode at ap_start32, inside the kernel image.
 */
    .code16
    .globl __ap_tramp_start
__ap_tramp_start:
    cli
    cld
    mov     %cs, %ax
    mov     %ax, %ds
    lgdtl   (__ap_tramp_gdt_ptr - __ap_tramp_start)
    mov     %cr0, %eax
    or      $1, %eax
    mov     %eax, %cr0
    ljmpl   $0x38, $ap_start32
    .align 4
__ap_tramp_gdt_ptr:
    .word   __gdt_end - __gdt - 1
    .long   __gdt
    .globl __ap_tramp_end
__ap_tramp_end:

    .code32
ap_start32:
    mov     $0x10, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    mov     %cr4, %eax
    or      $0x20, %eax
    mov     %eax, %cr4
    mov     __ap_cr3, %eax
    mov     %eax, %cr3
    mov     $0xC0000080, %ecx
    rdmsr
    or      $0x100, %eax
    wrmsr
    mov     %cr0, %eax
    or      $0x80000001, %eax
    mov     %eax, %cr0
    ljmp    $0x08, $ap_start64

    .code64
ap_start64:
    mov     $0x10, %eax
    mov     %eax, %ds
    mov     %eax, %es
    mov     %eax, %ss
    xor     %eax, %eax
    mov     %eax, %fs
    mov     %eax, %gs
    /* claim a stack slot: index 1..MAX_CPUS-1 */
    mov     $1, %eax
    lock xadd %eax, __ap_next_index(%rip)
    cmp     ${max_cpus}, %eax
    jae     9f
    mov     %eax, %edi
    mov     %eax, %ecx
    shl     $14, %rcx               /* * AP_STACK_SIZE */
    lea     __ap_stacks(%rip), %rsp
    add     %rcx, %rsp              /* top of slot idx-1 */
    xor     %ebp, %ebp
    call    rt_ap_start
9:  cli
    hlt
    jmp     9b

    .section .data.boot, "aw"
    .align 8
    .globl __mb_magic, __mb_info, __ap_next_index, __ap_cr3
__mb_magic:      .long 0
__mb_info:       .long 0
__ap_next_index: .long 1
__ap_cr3:        .long 0

/* GDT (selectors in gdt.rs). Non-system descriptors are left with the
 * accessed bit clear: the CPU sets it on first load (SDM Vol. 3A, 3.4.5.1
 * "Code- and Data-Segment Descriptor Types"). */
    .align 16
    .globl __gdt, __gdt_end, __gdt_ptr
__gdt:
    .quad 0                         /* 0x00 null */
    .quad 0x00af9a000000ffff        /* 0x08 kernel code, 64-bit */
    .quad 0x00cf92000000ffff        /* 0x10 kernel data */
    .quad 0x00cffa000000ffff        /* 0x18 user code, 32-bit (SYSRET/SYSEXIT legacy) */
    .quad 0x00cff2000000ffff        /* 0x20 user data */
    .quad 0x00affa000000ffff        /* 0x28 user code, 64-bit */
    .quad 0x00cff2000000ffff        /* 0x30 user data (SYSEXIT 64-bit SS) */
    .quad 0x00cf9a000000ffff        /* 0x38 kernel code, 32-bit */
    .quad 0x00009a000000ffff        /* 0x40 kernel code, 16-bit, limit 64 KiB */
    .quad 0x000092000000ffff        /* 0x48 kernel data, 16-bit, limit 64 KiB */
    .quad 0, 0                      /* 0x50 TSS (64-bit, 16 bytes), set by gdt.rs */
    .fill 20, 8, 0                  /* 0x60..0xff: free for tests */
__gdt_end:
    .align 4
    .word 0
__gdt_ptr:
    .word __gdt_end - __gdt - 1
    .quad __gdt

    .section .bss.boot, "aw", @nobits
    .align 4096
    .globl __pml4, __pdpt, __pd
__pml4: .skip 4096
__pdpt: .skip 4096
__pd:   .skip 4 * 4096
    .align 16
    .globl __boot_stack, __boot_stack_top
__boot_stack: .skip 65536
__boot_stack_top:
    .globl __ap_stacks
__ap_stacks: .skip {ap_stacks_size}
"#,
    max_cpus = const MAX_CPUS,
    ap_stacks_size = const (MAX_CPUS - 1) * AP_STACK_SIZE,
    options(att_syntax)
);

extern "C" {
    static __pml4: u8;
    static __pdpt: u8;
    static __pd: u8;
    static __mb_magic: u32;
    static __ap_tramp_start: u8;
    static __ap_tramp_end: u8;
    static mut __ap_next_index: u32;
    static mut __ap_cr3: u32;
    static __image_start: u8;
    static __bss_end: u8;
}

/// Physical address of the boot PML4 (identity map of the first 4 GiB).
pub fn pml4() -> u64 {
    &raw const __pml4 as u64
}

/// Physical address of the boot PDPT.
pub fn pdpt() -> u64 {
    &raw const __pdpt as u64
}

/// Physical address of the first of the four boot page directories
/// (`pd() + 4096 * i` maps GiB `i`).
pub fn pd() -> u64 {
    &raw const __pd as u64
}

/// EAX at entry (0x2BADB002 from a multiboot loader).
pub fn multiboot_magic() -> u32 {
    // SAFETY: written once by the 32-bit entry before any Rust code runs.
    unsafe { core::ptr::read_volatile(&raw const __mb_magic) }
}

/// `[start, end)` of the loaded image including bss.
pub fn image_range() -> (u64, u64) {
    (&raw const __image_start as u64, &raw const __bss_end as u64)
}

/// The trampoline code bytes, to copy to [`AP_TRAMPOLINE`].
pub fn ap_trampoline() -> &'static [u8] {
    // SAFETY: both symbols delimit the trampoline inside the loaded image.
    unsafe {
        let s = &raw const __ap_tramp_start;
        let e = &raw const __ap_tramp_end;
        core::slice::from_raw_parts(s, e as usize - s as usize)
    }
}

/// Prepares the AP entry path: the next AP gets stack slot 1, and APs load
/// `cr3` (must be below 4 GiB).
pub fn ap_prepare(cr3: u32) {
    // SAFETY: APs are not running yet; these words are only read by them.
    unsafe {
        core::ptr::write_volatile(&raw mut __ap_next_index, 1);
        core::ptr::write_volatile(&raw mut __ap_cr3, cr3);
    }
}
