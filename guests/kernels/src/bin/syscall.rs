//! `syscall`: fast system calls (SDM Vol. 2B SYSCALL, SYSRET, SYSENTER,
//! SYSEXIT, SWAPGS; Vol. 2B RDFSBASE/WRFSBASE; Vol. 3A, 5.8.8 "Fast System
//! Calls in 64-Bit Mode").
//!
//! Checks: SYSCALL from ring 3 (RCX = return RIP, R11 = RFLAGS, CS/SS from
//! STAR, RFLAGS masked by FMASK, RSP untouched), SWAPGS exchanging GS base
//! with KERNEL_GS_BASE, SYSRETQ back to 64-bit ring 3 and SYSRETL to
//! compatibility mode (selectors from STAR[63:48]), #UD for SYSCALL with
//! EFER.SCE = 0, #GP for SYSRET and SWAPGS in ring 3, RDFSBASE/WRFSBASE
//! (#UD without CR4.FSGSBASE, agreement with IA32_FS_BASE), and
//! SYSENTER/SYSEXIT in 64-bit mode (Intel; #UD on AMD CPUs, which do not
//! support them in long mode).
#![no_std]
#![no_main]

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use rt::arch::{self, cr4, feature, msr, rflags};
use rt::gdt;
use rt::idt::vector;
use rt::{check, check_eq, skip};
use turtles_guest_kernels::user;

rt::entry!("syscall", main);

/// Values recorded by the SYSCALL/SYSENTER entry points.
#[no_mangle]
static SC_RCX: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static SC_R11: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static SC_RSP: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static SC_CS: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static SC_SS: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static SC_RFLAGS: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static SC_GSBASE: AtomicU64 = AtomicU64::new(0);
#[no_mangle]
static SC_COUNT: AtomicU64 = AtomicU64::new(0);
/// Stack for SYSENTER (SYSENTER_ESP).
#[no_mangle]
static SE_STACK: rt::sync::Global<[u64; 512]> = rt::sync::Global::new([0; 512]);

global_asm!(
    r#"
    .section .text.syscall, "ax"
    .globl syscall_entry, syscall_entry32, sysenter_entry
/* SYSCALL target (LSTAR): records state, reads GS base after SWAPGS, then
 * SYSRETQ to RCX with RFLAGS = R11. RAX returns 0x5ca11. */
syscall_entry:
    mov     [rip + SC_RCX], rcx
    mov     [rip + SC_R11], r11
    mov     [rip + SC_RSP], rsp
    mov     eax, cs
    mov     [rip + SC_CS], rax
    mov     eax, ss
    mov     [rip + SC_SS], rax
    pushfq
    pop     qword ptr [rip + SC_RFLAGS]
    lock inc qword ptr [rip + SC_COUNT]
    mov     r12, rcx
    swapgs
    mov     ecx, 0xc0000101         /* IA32_GS_BASE */
    rdmsr
    shl     rdx, 32
    or      rax, rdx
    mov     [rip + SC_GSBASE], rax
    swapgs
    mov     rcx, r12
    mov     eax, 0x5ca11
    sysretq

/* Same, returning to compatibility mode with SYSRETL. */
syscall_entry32:
    mov     [rip + SC_RCX], rcx
    mov     [rip + SC_R11], r11
    lock inc qword ptr [rip + SC_COUNT]
    mov     eax, 0x32
    .byte   0x0f, 0x07              /* sysret (32-bit operand size) */

/* SYSENTER target: records state, SYSEXITQ to RDX with RSP = RCX. */
sysenter_entry:
    mov     [rip + SC_RSP], rsp
    mov     eax, cs
    mov     [rip + SC_CS], rax
    mov     eax, ss
    mov     [rip + SC_SS], rax
    pushfq
    pop     qword ptr [rip + SC_RFLAGS]
    lock inc qword ptr [rip + SC_COUNT]
    mov     eax, 0x5e
    sysexitq
"#
);

extern "C" {
    fn syscall_entry();
    fn syscall_entry32();
    fn sysenter_entry();
}

fn main(_mb: u32) {
    if !arch::has(feature::SYSCALL) {
        skip!("CPUID.80000001H:EDX.SYSCALL = 0", "SYSCALL");
    } else {
        syscall();
    }
    fsgsbase();
    sysenter();
}

fn labels<const N: usize>(f: impl FnOnce() -> [u64; N]) -> [u64; N] {
    f()
}

fn syscall() {
    user::init();
    // SAFETY: STAR/LSTAR/FMASK/KERNEL_GS_BASE only affect SYSCALL/SWAPGS.
    unsafe {
        arch::wrmsr(msr::STAR, (0x18u64 << 48) | (gdt::KCODE64 as u64) << 32);
        arch::wrmsr(msr::LSTAR, syscall_entry as *const () as u64);
        arch::wrmsr(msr::FMASK, rflags::IF | rflags::TF | rflags::DF | rflags::AC);
        arch::wrmsr(msr::GS_BASE, 0x1111_0000);
        arch::wrmsr(msr::KERNEL_GS_BASE, 0x2222_0000);
    }
    // Ring-3 code: DF = 1 before SYSCALL, then record CS/SS and exit.
    let [code, after] = labels(|| {
        let (a, b): (u64, u64);
        // SAFETY: label addresses only.
        unsafe {
            asm!("lea {0}, [rip + 2f]", "lea {1}, [rip + 3f]", "jmp 9f",
                 "2: std", "syscall", "3: cld", "mov ebx, cs", "mov ecx, ss", "int 0x80", "9:",
                 out(reg) a, out(reg) b)
        };
        [a, b]
    });

    // With EFER.SCE = 0 SYSCALL is #UD.
    // SAFETY: EFER.SCE only enables SYSCALL/SYSRET.
    unsafe { arch::wrmsr(msr::EFER, arch::rdmsr(msr::EFER) & !msr::EFER_SCE) };
    let r = user::run(code, user::stack_top(), 0x2, 0);
    check!(matches!(r, Err(f) if f.vector == vector::UD && f.rip == code + 1), "SYSCALL with EFER.SCE = 0 is #UD");
    // SAFETY: as above.
    unsafe { arch::wrmsr(msr::EFER, arch::rdmsr(msr::EFER) | msr::EFER_SCE) };

    let rsp = user::stack_top() - 64;
    let r = user::run(code, rsp, 0x2 | rflags::AC, 0);
    check!(r.is_ok(), "SYSCALL/SYSRETQ round trip from ring 3: {:x?}", r.as_ref().err());
    let Ok(f) = r else { return };
    check_eq!(SC_RCX.load(Ordering::SeqCst), after, "SYSCALL: RCX = address of the next instruction");
    check_eq!(
        SC_R11.load(Ordering::SeqCst) & 0x3fffff,
        0x2 | rflags::AC | rflags::DF,
        "SYSCALL: R11 = RFLAGS (DF, AC set)"
    );
    check_eq!(
        SC_RFLAGS.load(Ordering::SeqCst) & (rflags::DF | rflags::AC | rflags::IF | rflags::RF),
        0,
        "SYSCALL: RFLAGS masked by FMASK (DF, AC clear), RF clear"
    );
    check_eq!(SC_RSP.load(Ordering::SeqCst), rsp, "SYSCALL: RSP not switched");
    check_eq!(SC_CS.load(Ordering::SeqCst), gdt::KCODE64 as u64, "SYSCALL: CS = STAR[47:32]");
    check_eq!(SC_SS.load(Ordering::SeqCst), gdt::KDATA as u64, "SYSCALL: SS = STAR[47:32] + 8");
    check_eq!(SC_GSBASE.load(Ordering::SeqCst), 0x2222_0000u64, "SWAPGS: GS base = old KERNEL_GS_BASE");
    // SAFETY: reads MSRs.
    let (gs, kgs) = unsafe { (arch::rdmsr(msr::GS_BASE), arch::rdmsr(msr::KERNEL_GS_BASE)) };
    check_eq!((gs, kgs), (0x1111_0000u64, 0x2222_0000u64), "two SWAPGS restore both bases");
    check_eq!(f.rax, 0x5ca11u64, "SYSRETQ: RAX from the kernel");
    check_eq!(f.rbx & 0xffff, gdt::UCODE64 as u64, "SYSRETQ: CS = STAR[63:48] + 16, RPL 3");
    check_eq!(f.rcx & 0xffff, gdt::UDATA as u64, "SYSRETQ: SS = STAR[63:48] + 8, RPL 3");
    check_eq!(f.rflags & rflags::AC, rflags::AC, "SYSRETQ: RFLAGS = R11 (AC back)");

    // SYSRETL: to compatibility mode at ECX. The 32-bit code: mov ebx, cs;
    // int 0x80 (identical encodings in 32-bit mode). It must sit below 4 GiB,
    // which all kernel code does.
    let [code32, after32] = labels(|| {
        let (a, b): (u64, u64);
        // SAFETY: label addresses only.
        unsafe {
            asm!("lea {0}, [rip + 2f]", "lea {1}, [rip + 3f]", "jmp 9f",
                 "2: syscall", "3: mov ebx, cs", "int 0x80", "9:",
                 out(reg) a, out(reg) b)
        };
        [a, b]
    });
    // SAFETY: LSTAR now points at the SYSRETL entry.
    unsafe { arch::wrmsr(msr::LSTAR, syscall_entry32 as *const () as u64) };
    let r = user::run(code32, rsp, 0x2, 0);
    check!(
        matches!(r, Ok(ref f) if f.cs == gdt::UCODE32 as u64 && f.rbx & 0xffff == gdt::UCODE32 as u64
        && f.rip == after32 + 2 + 2 && f.rax & 0xffff_ffff == 0x32),
        "SYSRETL returns to compatibility mode with CS = STAR[63:48] | 3: {:x?}",
        r.map(|f| (f.cs, f.rip))
    );

    // Privileged in ring 3: SYSRET and SWAPGS are #GP(0).
    let [sysret, swapgs] = labels(|| {
        let (a, b): (u64, u64);
        // SAFETY: label addresses only.
        unsafe {
            asm!("lea {0}, [rip + 2f]", "lea {1}, [rip + 3f]", "jmp 9f", "2: sysretq", "3: swapgs", "9:", out(reg) a, out(reg) b)
        };
        [a, b]
    });
    let r = user::run(sysret, rsp, 0x2, 0);
    check!(matches!(r, Err(f) if f.is(vector::GP, 0) && f.rip == sysret), "SYSRET in ring 3 is #GP(0)");
    let r = user::run(swapgs, rsp, 0x2, 0);
    check!(matches!(r, Err(f) if f.is(vector::GP, 0) && f.rip == swapgs), "SWAPGS in ring 3 is #GP(0)");
}

fn fsgsbase() {
    if !arch::has(feature::FSGSBASE) {
        skip!("CPUID.7.0:EBX.FSGSBASE = 0", "RDFSBASE/WRFSBASE");
        return;
    }
    let r = rt::idt::catch(|| {
        // SAFETY: #UD while CR4.FSGSBASE = 0.
        unsafe { asm!("rdfsbase rax", out("rax") _) }
    });
    check!(matches!(r, Err(f) if f.vector == vector::UD), "RDFSBASE with CR4.FSGSBASE = 0 is #UD");
    // SAFETY: enables the instructions.
    unsafe { arch::write_cr4(arch::read_cr4() | cr4::FSGSBASE) };
    let v: u64;
    // SAFETY: FS base is unused by the kernel.
    unsafe { asm!("wrfsbase {0}", "rdfsbase {1}", in(reg) 0x1234_5678_9abc_u64, out(reg) v) };
    check_eq!(v, 0x1234_5678_9abcu64, "WRFSBASE/RDFSBASE round trip");
    // SAFETY: reads FS_BASE.
    check_eq!(unsafe { arch::rdmsr(msr::FS_BASE) }, 0x1234_5678_9abcu64, "IA32_FS_BASE sees WRFSBASE");
    let r = rt::idt::catch(|| {
        // SAFETY: non-canonical base is #GP(0).
        unsafe { asm!("wrfsbase {0}", in(reg) 0x8000_0000_0000_0000u64) }
    });
    // QEMU 7.2 does not check the base for canonicality.
    rt::check_sdm!(matches!(r, Err(f) if f.is(vector::GP, 0)), true, "WRFSBASE with a non-canonical base is #GP(0)");
    // From ring 3 (allowed when CR4.FSGSBASE = 1): write GS base, read it.
    user::init();
    let code: u64;
    // SAFETY: label address only.
    unsafe {
        asm!("lea {0}, [rip + 2f]", "jmp 9f", "2: wrgsbase rdi", "rdgsbase rax", "int 0x80", "9:", out(reg) code)
    };
    let r = user::run(code, user::stack_top(), 0x2, 0x5555_0000);
    check!(matches!(r, Ok(f) if f.rax == 0x5555_0000), "WRGSBASE/RDGSBASE in ring 3");
    // SAFETY: restore.
    unsafe {
        arch::wrmsr(msr::FS_BASE, 0);
        arch::write_cr4(arch::read_cr4() & !cr4::FSGSBASE);
    }
}

fn sysenter() {
    if !arch::has(feature::SEP) {
        skip!("CPUID.1:EDX.SEP = 0", "SYSENTER/SYSEXIT");
        return;
    }
    user::init();
    let top = SE_STACK.as_ptr() as u64 + 512 * 8;
    // SAFETY: SYSENTER MSRs only affect SYSENTER.
    unsafe {
        arch::wrmsr(msr::SYSENTER_CS, gdt::KCODE64 as u64);
        arch::wrmsr(msr::SYSENTER_ESP, top);
        arch::wrmsr(msr::SYSENTER_EIP, sysenter_entry as *const () as u64);
    }
    // Ring 3: RDX = return RIP, RCX = return RSP (SYSEXIT's inputs).
    let code: u64;
    // SAFETY: label address only.
    unsafe {
        asm!("lea {0}, [rip + 2f]", "jmp 9f",
             "2: lea rdx, [rip + 3f]", "mov rcx, rsp", "sysenter",
             "3: mov ebx, cs", "mov esi, ss", "int 0x80", "9:", out(reg) code)
    };
    let l0 = arch::cpuid(0, 0);
    let intel = l0.ebx == u32::from_le_bytes(*b"Genu");
    let r = user::run(code, user::stack_top() - 128, 0x202 & !rflags::IF | 0x2, 0);
    if !intel {
        check!(
            matches!(r, Err(f) if f.vector == vector::UD),
            "SYSENTER in long mode on a non-Intel CPU is #UD (AMD APM)"
        );
        return;
    }
    check!(r.is_ok(), "SYSENTER/SYSEXITQ round trip: {:x?}", r.as_ref().err());
    let Ok(f) = r else { return };
    check_eq!(SC_RSP.load(Ordering::SeqCst), top, "SYSENTER: RSP = IA32_SYSENTER_ESP");
    check_eq!(SC_CS.load(Ordering::SeqCst), gdt::KCODE64 as u64, "SYSENTER: CS = IA32_SYSENTER_CS");
    check_eq!(SC_SS.load(Ordering::SeqCst), gdt::KDATA as u64, "SYSENTER: SS = IA32_SYSENTER_CS + 8");
    check_eq!(SC_RFLAGS.load(Ordering::SeqCst) & rflags::IF, 0, "SYSENTER clears IF");
    check_eq!(f.rbx & 0xffff, gdt::UCODE64 as u64, "SYSEXITQ: CS = SYSENTER_CS + 32, RPL 3");
    check_eq!(f.rsi & 0xffff, gdt::UDATA2 as u64, "SYSEXITQ: SS = SYSENTER_CS + 40, RPL 3");
    check_eq!(f.rax & 0xff, 0x5eu64, "SYSEXITQ returns to RDX with RSP = RCX");
}
