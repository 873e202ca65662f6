//! `vmx-exits`: VM-exit conformance (issue 6, item 7), in the style of
//! kvm-unit-tests' `vmx_tests.c`: L1 runs one small L2 snippet per exit
//! condition and checks every exit-information field with its own check.
//!
//! Follows SDM Vol. 3C, chapter 26 "VMX Non-Root Operation" (26.1
//! "Instructions That Cause VM Exits", 26.2 "Other Causes of VM Exits",
//! 26.3 "Changes to Instruction Behavior in VMX Non-Root Operation"),
//! 27.6 "Event Injection", 27.4 "Loading MSRs", 28.2 "Recording VM-Exit
//! Information and Updating VM-Entry Control Fields" (Tables 28-1 to 28-7
//! for the qualifications), 28.4 "Saving MSRs", 28.6 "Loading MSRs" and
//! 29.3.3 "EPT-Induced VM Exits".
//!
//! Setup: one VMCS, host state = L1's, guest state = a 64-bit ring-0 L2 on
//! L1's page tables and GDT but with its own IDT ([`L2_IDT`]): every vector
//! goes to a stub that records the vector and RSP and executes VMCALL
//! (which exits unconditionally), so an event delivered inside L2 is seen
//! by L1 as "VMCALL with `L2_VEC` = vector". Every snippet ends in VMCALL
//! too. Each test rewrites the controls from a base (no exiting but what
//! the capability MSRs force, MSR bitmaps all clear when offered) and
//! enables what it tests; EPT (an identity map of 64 MiB with a 4-KiB-page
//! region at [`SCRATCH`]) only in the EPT tests.
//!
//! Tests, in order: CPUID; HLT exiting; unconditional I/O exiting (OUT/IN
//! with immediate and DX ports, sizes 1/2/4, REP OUTSB with its linear
//! address and instruction information); I/O bitmaps; MSR bitmaps (low
//! read and high write ranges, passing accesses); CR0/CR4 guest/host masks
//! and read shadows (MOV to CR0/CR4, CLTS, LMSW); CR3-load/store exiting
//! with a CR3-target value; CR8-store exiting; INVLPG exiting; RDTSC
//! exiting and TSC offsetting; the exception bitmap (#UD, #PF error-code
//! mask/match both ways, #BP as a software exception); interrupt-window
//! exiting (STI blocking, IF = 1 at entry); the VMX-preemption timer and
//! saving its value; event injection (external interrupt, #UD, INT n);
//! MSR load/store lists; EPT-violation qualifications (read-only,
//! not-present, non-executable pages); IDT-vectoring information (#UD
//! delivery through an unmapped IDT, INT3 pushing to an unmapped stack)
//! and re-injection of the event; VMFUNC EPTP switching (26.5.5.3 "EPTP
//! Switching": a switch L2 completes without an exit to L1, and the three
//! ways it fails with exit reason 59); an EPT12 leaf L1 rewrites without
//! INVEPT (see [`ept12_write`]); an EPT12 entry L2 writes through its own
//! EPT mapping of the table; an L2 without EPT reading L1's local APIC
//! after the EPT tests. A control the capability MSRs do not
//! offer turns its test into a `skip` line.
#![no_std]
#![no_main]

use core::arch::global_asm;
use core::sync::atomic::{AtomicBool, Ordering};
use rt::arch::{self, cr0};
use rt::sync::Global;
use rt::vmx::{self, ctl, ept, exit_reason as er, field, intr_info as ii, Caps, GuestRegs, MsrEntry, Page};
use rt::{check, println, skip};

/// `eq!(got, want, "name {}", args...)`: one check line, like
/// `rt::check_eq!` but through one non-inlined function per type, which
/// keeps this kernel small enough for a 127-sector boot loader.
macro_rules! eq {
    ($got:expr, $want:expr, $($name:tt)+) => {
        eq($got, $want, format_args!($($name)+))
    };
}

#[inline(never)]
#[track_caller]
fn eq<T: PartialEq + core::fmt::Debug>(got: T, want: T, name: core::fmt::Arguments) -> bool {
    let at = core::panic::Location::caller();
    rt::test::report(got == want, name, format_args!("got {:#x?}, expected {:#x?}", got, want), at.file(), at.line())
}

rt::entry!("vmx-exits", main);

/// Start of the 2-MiB region mapped with 4-KiB EPT pages.
const SCRATCH: u64 = 0x0200_0000;
/// Read-only in EPT.
const PAGE_RO: u64 = SCRATCH + 0x1000;
/// Readable and writable, not executable, in EPT.
const PAGE_NX: u64 = SCRATCH + 0x2000;
/// Not present in EPT.
const PAGE_NP: u64 = SCRATCH + 0x3000;
/// A copy of L2's IDT, not present in EPT until L1 maps it.
const PAGE_IDT: u64 = SCRATCH + 0x4000;
/// Size of the EPT identity map.
const EPT_MAP_BYTES: u64 = 64 << 20;
/// The page the EPTP-switching and EPT12-write tests look at through
/// EPT: identity mapped by [`build_ept`], mapped to [`PAGE_W`] by
/// [`build_ept_alt`].
const PAGE_V: u64 = SCRATCH + 0x5000;
/// The other L1 page those tests map [`PAGE_V`] to.
const PAGE_W: u64 = SCRATCH + 0x6000;
/// What [`PAGE_V`] and [`PAGE_W`] hold in those tests.
const V_CONTENT: u64 = 0x5555_aaaa_0000_0001;
const W_CONTENT: u64 = 0x6666_bbbb_0000_0002;
/// A linear address L1's page tables leave unmapped (PML4 entry 2).
const UNMAPPED: u64 = 0x100_0000_0000;
/// The MSR the list tests move around (not part of the VMCS guest state).
const MSR_KGS: u32 = arch::msr::KERNEL_GS_BASE;

static VMXON_REGION: Global<Page> = Global::new(Page::zeroed());
static VMCS: Global<Page> = Global::new(Page::zeroed());
static IO_A: Global<Page> = Global::new(Page::zeroed());
static IO_B: Global<Page> = Global::new(Page::zeroed());
static MSR_BITMAP: Global<Page> = Global::new(Page::zeroed());
static L2_IDT: Global<Page> = Global::new(Page::zeroed());
static EPT_PML4: Global<Page> = Global::new(Page::zeroed());
static EPT_PDPT: Global<Page> = Global::new(Page::zeroed());
static EPT_PD: Global<Page> = Global::new(Page::zeroed());
static EPT_PT: Global<Page> = Global::new(Page::zeroed());
/// The second EPT hierarchy of the EPTP-switching test ([`build_ept_alt`]).
static EPT1_PML4: Global<Page> = Global::new(Page::zeroed());
static EPT1_PDPT: Global<Page> = Global::new(Page::zeroed());
static EPT1_PD: Global<Page> = Global::new(Page::zeroed());
static EPT1_PT: Global<Page> = Global::new(Page::zeroed());
static EPTP_LIST: Global<Page> = Global::new(Page::zeroed());
static MSR_LISTS: Global<[MsrEntry; 3]> = Global::new([MsrEntry { index: 0, reserved: 0, data: 0 }; 3]);

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static L2_STACK: Global<Stack> = Global::new(Stack([0; 16384]));

/// Written by L2's IDT stubs: the vector delivered and RSP at the stub.
#[no_mangle]
static mut L2_VEC: u32 = 0;
#[no_mangle]
static mut L2_RSP: u64 = 0;

/// Number of IDT stubs (vectors 0..L2_VECTORS), 32 bytes apart.
const L2_VECTORS: usize = 0x41;

// L2 code. Each snippet ends in VMCALL; comments give the encodings whose
// lengths the tests check.
global_asm!(
    r#"
    .section .text.l2, "ax"
    .globl t_cpuid, t_hlt, t_io, t_io_2, t_io_3, t_io_4, t_io_5, t_cr_4, t_cr_5, t_iobm, t_iobm_2
    .globl t_msr, t_msr_2, t_msr_3, t_cr, t_cr_2, t_cr_3, t_cr3, t_cr3_2, t_cr3_3, t_cr8
    .globl t_invlpg, t_rdtsc, t_ud2, t_read, t_write, t_int3, t_nops
    .globl t_sti, t_sti_2, t_loop, t_loop_end, t_msrlist, t_jmp, t_spin, t_vmfunc, t_vmfunc_2, t_wr, l2_vectors
t_cpuid:
    cpuid                       # 0f a2
    vmcall
t_hlt:
    hlt                         # f4
    vmcall
t_io:
    out     0x80, al            # e6 80
t_io_2:
    in      ax, dx              # 66 ed
t_io_3:
    out     dx, eax             # ef
t_io_4:
    in      al, 0x71            # e4 71
t_io_5:
    rep outsb                   # f3 6e
    vmcall
t_iobm:
    out     0x84, al            # e6 84: bit set in bitmap A
t_iobm_2:
    out     0x80, al            # bit clear: no exit
    vmcall
t_msr:
    mov     ecx, 0x174
    rdmsr                       # 0f 32: read bit set
t_msr_2:
    mov     ecx, 0x175
    mov     eax, 0x1234
    xor     edx, edx
    wrmsr                       # write bit clear: no exit
    xor     eax, eax
    rdmsr                       # read bit clear: no exit
    mov     r8, rax
    mov     ecx, 0xc0000102
    wrmsr                       # 0f 30: write bit set (high MSRs)
t_msr_3:
    vmcall
t_cr:
    mov     rax, cr0            # reads the shadow for host-owned bits
    mov     rbx, rax
    mov     cr0, rbx            # equal to the shadow: no exit
    xor     rbx, 8
t_cr_2:
    mov     cr0, rbx            # 0f 22 c3: CR0.TS differs from the shadow
    mov     rcx, cr4
    xor     rcx, 0x100
t_cr_3:
    mov     cr4, rcx            # 0f 22 e1: CR4.PCE differs from the shadow
t_cr_4:
    clts                        # 0f 06: TS owned and set in the shadow
t_cr_5:
    lmsw    bx                  # 0f 01 f3: source TS 0, shadow TS 1
    vmcall
t_cr3:
    mov     rax, cr3            # 0f 20 d8: CR3-store exiting
t_cr3_2:
    mov     cr3, rax            # a CR3-target value: no exit
    mov     rdx, 0x7000
t_cr3_3:
    mov     cr3, rdx            # 0f 22 da: not a target
    vmcall
t_cr8:
    mov     rax, cr8            # 44 0f 20 c0
    vmcall
t_invlpg:
    invlpg  [rax]               # 0f 01 38
    vmcall
t_rdtsc:
    rdtsc                       # 0f 31
    vmcall
t_ud2:
    ud2
    vmcall
t_read:
    mov     rax, [rbx]
    vmcall
t_write:
    mov     [rbx], rax
    vmcall
t_int3:
    int3                        # cc
    vmcall
t_nops:
    nop
    nop
    vmcall
t_sti:
    nop
    sti
    nop                         # STI blocking covers this one
t_sti_2:
    nop
    vmcall
t_loop:
    inc     rax
    jmp     t_loop
t_loop_end:
t_msrlist:
    mov     ecx, 0xc0000102
    rdmsr
    mov     r8, rax
    mov     r9, rdx
    mov     eax, 0x5678
    mov     edx, 0x1abc
    wrmsr
    vmcall
t_jmp:
    jmp     rbx
t_spin:
    dec     rcx
    jnz     t_spin
    cpuid
    vmcall
t_vmfunc:
    mov     r8, [rbx]
t_vmfunc_2:
    vmfunc                      # 0f 01 d4: function EAX, EPTP index ECX
    mov     r9, [rbx]
    vmcall
t_wr:
    mov     [rbx], rax
    mov     rax, [rdx]
    vmcall

    .balign 32
l2_vectors:
    .set    vec, 0
    .rept   {n}
    .balign 32
    mov     dword ptr [rip + L2_VEC], vec
    mov     qword ptr [rip + L2_RSP], rsp
    vmcall
    .set    vec, vec + 1
    .endr
"#,
    n = const L2_VECTORS,
);

extern "C" {
    fn t_cpuid();
    fn t_hlt();
    fn t_io();
    fn t_io_2();
    fn t_io_3();
    fn t_io_4();
    fn t_io_5();
    fn t_iobm();
    fn t_msr();
    fn t_msr_2();
    fn t_msr_3();
    fn t_cr();
    fn t_cr_2();
    fn t_cr_3();
    fn t_cr_4();
    fn t_cr_5();
    fn t_cr3();
    fn t_cr3_3();
    fn t_cr8();
    fn t_invlpg();
    fn t_rdtsc();
    fn t_ud2();
    fn t_read();
    fn t_write();
    fn t_int3();
    fn t_nops();
    fn t_sti();
    fn t_sti_2();
    fn t_loop();
    fn t_loop_end();
    fn t_msrlist();
    fn t_jmp();
    fn t_spin();
    fn t_vmfunc();
    fn t_vmfunc_2();
    fn t_wr();
    fn l2_vectors();
}

fn addr(f: unsafe extern "C" fn()) -> u64 {
    f as *const () as u64
}

fn pa<T>(g: &Global<T>) -> u64 {
    g.as_ptr() as u64
}

fn stack_top() -> u64 {
    pa(&L2_STACK) + core::mem::size_of::<Stack>() as u64
}

fn vmread(f: u64) -> u64 {
    vmx::vmread(f).unwrap_or(u64::MAX)
}

fn vmwrite(f: u64, v: u64) {
    // SAFETY: the VMCS is current and belongs to this kernel; the fields
    // written describe L2.
    if let Err(e) = unsafe { vmx::vmwrite(f, v) } {
        check!(false, "vmwrite {:#x} = {:#x}: {:?}", f, v, e);
    }
}

fn set_u64(base: u64, i: usize, v: u64) {
    // SAFETY: `base` is one of this kernel's pages (identity mapped), i < 512.
    unsafe { core::ptr::write_volatile((base as *mut u64).add(i), v) };
}

fn set_bit(page: u64, bit: u64) {
    // SAFETY: a bitmap page of this kernel; bit < 32768.
    unsafe {
        let p = (page + bit / 8) as *mut u8;
        core::ptr::write_volatile(p, core::ptr::read_volatile(p) | 1 << (bit % 8));
    }
}

fn zero(page: u64) {
    // SAFETY: an owned page.
    unsafe { core::ptr::write_bytes(page as *mut u8, 0, 4096) };
}

/// The exit-information fields after an exit (SDM Vol. 3C, 25.9).
#[derive(Clone, Copy, Debug)]
struct Exit {
    reason: u32,
    qual: u64,
    len: u64,
    rip: u64,
    intr: u64,
    intr_err: u64,
    idt: u64,
}

fn read_exit() -> Exit {
    Exit {
        reason: vmread(field::EXIT_REASON) as u32,
        qual: vmread(field::EXIT_QUALIFICATION),
        len: vmread(field::VM_EXIT_INSTRUCTION_LENGTH),
        rip: vmread(field::GUEST_RIP),
        intr: vmread(field::VM_EXIT_INTERRUPTION_INFO),
        intr_err: vmread(field::VM_EXIT_INTERRUPTION_ERROR_CODE),
        idt: vmread(field::IDT_VECTORING_INFO),
    }
}

static LAUNCHED: AtomicBool = AtomicBool::new(false);

/// Enters L2 where the VMCS says and returns the exit. A failed entry is
/// reported and comes back as reason `u32::MAX`.
fn run(regs: &mut GuestRegs) -> Exit {
    let launched = LAUNCHED.load(Ordering::Relaxed);
    // SAFETY: the VMCS holds L1's host state.
    let r = unsafe { vmx::enter(regs, launched) };
    if let Err(e) = r {
        check!(false, "{}: {:?}", if launched { "VMRESUME" } else { "VMLAUNCH" }, e);
        return Exit { reason: u32::MAX, qual: 0, len: 0, rip: 0, intr: 0, intr_err: 0, idt: 0 };
    }
    let e = read_exit();
    if e.reason & er::ENTRY_FAILURE != 0 {
        check!(false, "VM entry failed: reason {:#x} qualification {:#x}", e.reason, e.qual);
        // A failed VMLAUNCH leaves the VMCS clear; make that certain.
        let v = pa(&VMCS);
        // SAFETY: the VMCS belongs to this kernel.
        let _ = unsafe { vmx::vmclear(v).and_then(|()| vmx::vmptrld(v)) };
        LAUNCHED.store(false, Ordering::Relaxed);
    } else {
        LAUNCHED.store(true, Ordering::Relaxed);
    }
    e
}

/// Points L2 at `rip` with a fresh stack, RFLAGS = `rflags`, no blocking.
fn start(rip: u64, rflags: u64) {
    vmwrite(field::GUEST_RIP, rip);
    vmwrite(field::GUEST_RSP, stack_top());
    vmwrite(field::GUEST_RFLAGS, rflags);
    vmwrite(field::GUEST_INTERRUPTIBILITY, 0);
    vmwrite(field::VM_ENTRY_INTERRUPTION_INFO, 0);
    clear_l2_event();
}

/// Skips the exiting instruction and runs on.
fn skip_run(e: &Exit, regs: &mut GuestRegs) -> Exit {
    vmwrite(field::GUEST_RIP, e.rip + e.len);
    run(regs)
}

/// Checks that the snippet ended in its VMCALL.
fn ended(e: &Exit, name: &str) -> bool {
    let (v, _) = l2_event(false);
    check!(
        e.reason == er::VMCALL && v == 0xffff,
        "{}: L2 reaches its final VMCALL without an exception (reason {}, L2 vector {:#x}, rip {:#x})",
        name,
        e.reason,
        v,
        e.rip
    )
}

/// L2's IDT stub vector (0 if none ran) and the return RIP in its frame.
fn l2_event(error_code: bool) -> (u32, u64) {
    // SAFETY: L2 is not running; the stack is identity mapped.
    unsafe {
        let v = core::ptr::read_volatile(&raw const L2_VEC);
        let rsp = core::ptr::read_volatile(&raw const L2_RSP);
        let rip =
            if rsp == 0 { 0 } else { core::ptr::read_volatile((rsp + if error_code { 8 } else { 0 }) as *const u64) };
        (v, rip)
    }
}

fn clear_l2_event() {
    // SAFETY: L2 is not running.
    unsafe {
        core::ptr::write_volatile(&raw mut L2_VEC, 0xffff);
        core::ptr::write_volatile(&raw mut L2_RSP, 0);
    }
}

struct Ctx {
    caps: Caps,
    eptp: u64,
}

impl Ctx {
    /// Rewrites the controls: `pin`/`proc`/`proc2` on top of the base.
    fn controls(&self, pin: u32, proc: u32, proc2: u32) -> bool {
        let c = &self.caps;
        let msr_bitmaps = if c.proc.allows(ctl::PROC_USE_MSR_BITMAPS) { ctl::PROC_USE_MSR_BITMAPS } else { 0 };
        // SAFETY: the VMCS is current.
        let r = unsafe { vmx::write_controls(c, pin, proc | msr_bitmaps, proc2, false) };
        if r.is_err() {
            check!(false, "write controls pin {:#x} proc {:#x} proc2 {:#x}: {:?}", pin, proc, proc2, r);
        }
        vmwrite(field::MSR_BITMAP, pa(&MSR_BITMAP));
        vmwrite(field::IO_BITMAP_A, pa(&IO_A));
        vmwrite(field::IO_BITMAP_B, pa(&IO_B));
        vmwrite(field::EPT_POINTER, self.eptp);
        vmwrite(field::TSC_OFFSET, 0);
        r.unwrap_or(false)
    }

    fn proc_allows(&self, bits: u32, name: &str) -> bool {
        let ok = self.caps.proc.allows(bits);
        if !ok {
            skip!("control not offered", "{}", name);
        }
        ok
    }
}

fn main(_mb: u32) {
    vmx::install_ud_reporter();
    // The 8259s stay masked: L2 runs with IF = 1 in some tests, and with
    // external-interrupt exiting off a platform interrupt would go to L2.
    // SAFETY: masking the PICs only stops legacy interrupts.
    unsafe {
        arch::outb(0x21, 0xff);
        arch::outb(0xa1, 0xff);
    }
    if !check!(vmx::cpuid_has_vmx(), "CPUID.1:ECX.VMX is set") {
        return;
    }
    // SAFETY: CPUID says VMX exists.
    let caps = unsafe { Caps::read() };
    println!(
        "VMX basic {:#x} pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x} misc {:#x} ept/vpid {:#x}",
        caps.basic,
        caps.pin.allowed1,
        caps.proc.allowed1,
        caps.proc2.allowed1,
        caps.exit.allowed1,
        caps.entry.allowed1,
        caps.misc,
        caps.ept_vpid
    );
    // SAFETY: VMX exists; the VMXON region is a page of this image.
    match unsafe { vmx::enable(&caps, pa(&VMXON_REGION)) } {
        Ok(Ok(())) => {}
        r => {
            check!(false, "enable VMX: {:?}", r);
            return;
        }
    }
    let vmcs = pa(&VMCS);
    // SAFETY: the VMCS page belongs to this kernel; VMX root operation.
    let r = unsafe {
        vmx::init_region(vmcs, caps.revision_id());
        vmx::vmclear(vmcs).and_then(|()| vmx::vmptrld(vmcs))
    };
    if !eq!(r, Ok(()), "VMCLEAR + VMPTRLD") {
        return;
    }
    build_l2_idt(pa(&L2_IDT));
    let eptp = if caps.ept_wb_4level() && caps.ept_vpid >> 16 & 1 == 1 { build_ept() } else { 0 };
    let ctx = Ctx { caps, eptp };
    let load_efer = ctx.controls(0, 0, 0);
    // SAFETY: the VMCS is current; host = L1, guest = 64-bit L2.
    let r = unsafe {
        vmx::write_host_state(load_efer).and_then(|()| vmx::write_guest_state_64(addr(t_cpuid), stack_top(), load_efer))
    };
    if !eq!(r, Ok(()), "host and guest state written") {
        return;
    }
    vmwrite(field::GUEST_IDTR_BASE, pa(&L2_IDT));
    vmwrite(field::GUEST_IDTR_LIMIT, 4095);

    cpuid(&ctx);
    hlt(&ctx);
    io(&ctx);
    io_bitmaps(&ctx);
    msr_bitmaps(&ctx);
    cr_masks(&ctx);
    cr3(&ctx);
    cr8(&ctx);
    invlpg(&ctx);
    rdtsc(&ctx);
    exceptions(&ctx);
    interrupt_window(&ctx);
    preemption_timer(&ctx);
    injection(&ctx);
    msr_lists(&ctx);
    if ctx.eptp != 0 {
        ept_violations(&ctx);
        idt_vectoring(&ctx);
        eptp_switching(&ctx);
        ept12_write(&ctx);
        ept12_written_by_l2(&ctx);
        device_without_ept(&ctx);
    } else {
        skip!("EPT (4-level, WB, 2 MiB pages) not offered", "EPT tests");
    }

    // SAFETY: leaves VMX operation; the VMCS is flushed first.
    unsafe {
        eq!(vmx::vmclear(vmcs), Ok(()), "VMCLEAR at the end");
        eq!(vmx::vmxoff(), Ok(()), "VMXOFF");
    }
}

/// 64-bit interrupt gates to the `l2_vectors` stubs (SDM Vol. 3A, 6.14.1).
fn build_l2_idt(base: u64) {
    for v in 0..256usize {
        let target = addr(l2_vectors) + 32 * (v.min(L2_VECTORS - 1) as u64);
        let lo = (target & 0xffff) | (rt::gdt::KCODE64 as u64) << 16 | 0x8e00u64 << 32 | (target >> 16 & 0xffff) << 48;
        set_u64(base, 2 * v, lo);
        set_u64(base, 2 * v + 1, target >> 32);
    }
}

/// EPT identity map of [`EPT_MAP_BYTES`] with 2-MiB pages except the
/// region at [`SCRATCH`]: 4-KiB pages, [`PAGE_RO`] read-only, [`PAGE_NX`]
/// not executable, [`PAGE_NP`] and [`PAGE_IDT`] not present.
fn build_ept() -> u64 {
    let (pml4, pdpt, pd, pt) = (pa(&EPT_PML4), pa(&EPT_PDPT), pa(&EPT_PD), pa(&EPT_PT));
    set_u64(pml4, 0, pdpt | ept::RWX);
    set_u64(pdpt, 0, pd | ept::RWX);
    let scratch = (SCRATCH >> 21) as usize;
    for i in 0..(EPT_MAP_BYTES >> 21) as usize {
        let e =
            if i == scratch { pt | ept::RWX } else { (i as u64) << 21 | ept::RWX | ept::MEMTYPE_WB | ept::PAGE_SIZE };
        set_u64(pd, i, e);
    }
    for j in 0..512usize {
        let gpa = SCRATCH + ((j as u64) << 12);
        let perm = match gpa {
            PAGE_RO => ept::READ,
            PAGE_NX => ept::READ | ept::WRITE,
            PAGE_NP | PAGE_IDT => 0,
            _ => ept::RWX,
        };
        set_u64(pt, j, if perm == 0 { 0 } else { gpa | perm | ept::MEMTYPE_WB });
    }
    vmx::eptp(pml4)
}

fn invept(c: &Ctx) {
    // SAFETY: drops cached EPT translations.
    let r = unsafe {
        if c.caps.ept_vpid >> 25 & 1 == 1 {
            vmx::invept(vmx::invept_type::SINGLE_CONTEXT, c.eptp)
        } else {
            vmx::invept(vmx::invept_type::ALL_CONTEXT, 0)
        }
    };
    check!(r.is_ok(), "INVEPT: {:?}", r);
}

/// 26.1.2: CPUID exits unconditionally.
fn cpuid(c: &Ctx) {
    c.controls(0, 0, 0);
    start(addr(t_cpuid), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::CPUID, "CPUID: exit reason 10");
    eq!(e.qual, 0, "CPUID: qualification 0");
    eq!(e.len, 2, "CPUID: instruction length 2");
    eq!(e.rip, addr(t_cpuid), "CPUID: guest RIP is the CPUID");
    eq!(e.idt & ii::VALID as u64, 0, "CPUID: IDT-vectoring info not valid");
    ended(&skip_run(&e, &mut regs), "CPUID");
}

/// 26.1.3: HLT exiting.
fn hlt(c: &Ctx) {
    if !c.proc_allows(ctl::PROC_HLT_EXITING, "HLT exiting") {
        return;
    }
    c.controls(0, ctl::PROC_HLT_EXITING, 0);
    start(addr(t_hlt), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::HLT, "HLT: exit reason 12");
    eq!(e.len, 1, "HLT: instruction length 1");
    eq!(e.rip, addr(t_hlt), "HLT: guest RIP is the HLT");
    eq!(vmread(field::GUEST_ACTIVITY_STATE), 0, "HLT: activity state still active");
    ended(&skip_run(&e, &mut regs), "HLT");
}

/// 26.1.3 unconditional I/O exiting; qualification per Table 28-5.
fn io(c: &Ctx) {
    if !c.proc_allows(ctl::PROC_UNCONDITIONAL_IO_EXITING, "unconditional I/O exiting") {
        return;
    }
    c.controls(0, ctl::PROC_UNCONDITIONAL_IO_EXITING, 0);
    start(addr(t_io), 2);
    let buf = pa(&IO_B);
    let mut regs = GuestRegs { rdx: 0x1234, rsi: buf, rcx: 3, ..Default::default() };
    let cases: [(&str, u64, u64, u64); 4] = [
        ("OUT imm8, AL", addr(t_io), 0x0080_0040, 2),
        ("IN AX, DX", addr(t_io_2), 0x1234_0009, 2),
        ("OUT DX, EAX", addr(t_io_3), 0x1234_0003, 1),
        ("IN AL, imm8", addr(t_io_4), 0x0071_0048, 2),
    ];
    let mut e = run(&mut regs);
    for (name, rip, qual, len) in cases {
        eq!(e.reason, er::IO_INSTRUCTION, "I/O {}: exit reason 30", name);
        eq!(e.qual, qual, "I/O {}: qualification (size, direction, immediate, port)", name);
        eq!(e.len, len, "I/O {}: instruction length {}", name, len);
        eq!(e.rip, rip, "I/O {}: guest RIP", name);
        e = skip_run(&e, &mut regs);
    }
    eq!(e.reason, er::IO_INSTRUCTION, "I/O REP OUTSB: exit reason 30");
    eq!(e.qual, 0x1234_0030, "I/O REP OUTSB: qualification (size 1, out, string, REP, DX, port)");
    eq!(e.len, 2, "I/O REP OUTSB: instruction length 2");
    eq!(e.rip, addr(t_io_5), "I/O REP OUTSB: guest RIP");
    eq!(vmread(field::GUEST_LINEAR_ADDRESS), buf, "I/O REP OUTSB: guest linear address is DS:RSI");
    if c.caps.basic >> 54 & 1 == 1 {
        // 28.2.5, Table 28-8: address size 64-bit (2) in 9:7, DS (3) in 17:15.
        eq!(vmread(field::VMX_INSTRUCTION_INFO), 2 << 7 | 3 << 15, "I/O REP OUTSB: instruction information");
    } else {
        skip!("IA32_VMX_BASIC[54] clear", "I/O REP OUTSB: instruction information");
    }
    ended(&skip_run(&e, &mut regs), "I/O");
}

/// 26.1.3 I/O bitmaps (25.6.4): a set bit exits, a clear one does not; the
/// unconditional control is ignored when bitmaps are used.
fn io_bitmaps(c: &Ctx) {
    if !c.proc_allows(ctl::PROC_USE_IO_BITMAPS, "I/O bitmaps") {
        return;
    }
    zero(pa(&IO_A));
    zero(pa(&IO_B));
    set_bit(pa(&IO_A), 0x84);
    c.controls(0, ctl::PROC_USE_IO_BITMAPS | ctl::PROC_UNCONDITIONAL_IO_EXITING, 0);
    start(addr(t_iobm), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::IO_INSTRUCTION, "I/O bitmap: port 0x84 (bit set) exits");
    eq!(e.qual, 0x0084_0040, "I/O bitmap: qualification of OUT 0x84, AL");
    eq!(e.rip, addr(t_iobm), "I/O bitmap: guest RIP");
    let e = skip_run(&e, &mut regs);
    check!(
        e.reason == er::VMCALL,
        "I/O bitmap: port 0x80 (bit clear) does not exit (got reason {} at {:#x})",
        e.reason,
        e.rip
    );
    zero(pa(&IO_A));
}

/// 26.1.3 MSR bitmaps (25.6.9): read-low at 0, write-high at 3072 bytes.
fn msr_bitmaps(c: &Ctx) {
    if !c.proc_allows(ctl::PROC_USE_MSR_BITMAPS, "MSR bitmaps") {
        return;
    }
    let b = pa(&MSR_BITMAP);
    zero(b);
    set_bit(b, 0x174);
    set_bit(b, 3072 * 8 + 0x102);
    c.controls(0, 0, 0);
    start(addr(t_msr), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::RDMSR, "RDMSR 0x174 (read bit set): exit reason 31");
    eq!(e.qual, 0, "RDMSR: qualification 0");
    eq!(e.len, 2, "RDMSR: instruction length 2");
    eq!(regs.rcx, 0x174, "RDMSR: MSR index in ECX");
    eq!(e.rip, addr(t_msr_2) - 2, "RDMSR: guest RIP");
    let e = skip_run(&e, &mut regs);
    eq!(e.reason, er::WRMSR, "WRMSR 0xc0000102 (write bit set, high range): exit reason 32");
    eq!(e.len, 2, "WRMSR: instruction length 2");
    eq!(regs.rcx, 0xc000_0102, "WRMSR: MSR index in ECX");
    eq!(e.rip, addr(t_msr_3) - 2, "WRMSR: guest RIP");
    eq!(regs.r8, 0x1234, "WRMSR/RDMSR 0x175 (bits clear) run in L2 without exits");
    eq!(vmread(field::GUEST_IA32_SYSENTER_ESP), 0x1234, "L2's SYSENTER_ESP saved in the guest-state area");
    ended(&skip_run(&e, &mut regs), "MSR bitmaps");
    zero(b);
}

/// 26.1.3 MOV to CR0/CR4 with guest/host masks; 26.3 reads of CR0/CR4
/// return the read shadow for host-owned bits; Table 28-3.
fn cr_masks(c: &Ctx) {
    c.controls(0, 0, 0);
    let cr0 = arch::read_cr0() & !cr0::TS;
    let cr4 = arch::read_cr4();
    vmwrite(field::GUEST_CR0, cr0);
    vmwrite(field::CR0_GUEST_HOST_MASK, cr0::TS);
    vmwrite(field::CR0_READ_SHADOW, cr0 | cr0::TS);
    vmwrite(field::CR4_GUEST_HOST_MASK, 1 << 8);
    vmwrite(field::CR4_READ_SHADOW, cr4);
    start(addr(t_cr), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(regs.rax, cr0 | cr0::TS, "MOV from CR0 returns the read shadow for host-owned CR0.TS");
    eq!(e.reason, er::CR_ACCESS, "MOV to CR0 with owned TS != shadow: exit reason 28 (and not for the equal write)");
    eq!(e.qual, 0x300, "MOV to CR0 from RBX: qualification CR 0, type 0, register 3");
    eq!(e.len, 3, "MOV to CR0: instruction length 3");
    eq!(e.rip, addr(t_cr_2), "MOV to CR0: guest RIP");
    let e = skip_run(&e, &mut regs);
    eq!(e.reason, er::CR_ACCESS, "MOV to CR4 with owned PCE != shadow: exit reason 28");
    eq!(e.qual, 0x104, "MOV to CR4 from RCX: qualification CR 4, type 0, register 1");
    eq!(e.len, 3, "MOV to CR4: instruction length 3");
    eq!(e.rip, addr(t_cr_3), "MOV to CR4: guest RIP");
    let e = skip_run(&e, &mut regs);
    eq!(e.reason, er::CR_ACCESS, "CLTS with TS owned and set in the shadow: exit reason 28");
    eq!(e.qual, 0x20, "CLTS: qualification CR 0, type 2");
    eq!(e.len, 2, "CLTS: instruction length 2");
    eq!(e.rip, addr(t_cr_4), "CLTS: guest RIP");
    let e = skip_run(&e, &mut regs);
    eq!(e.reason, er::CR_ACCESS, "LMSW with owned TS != shadow: exit reason 28");
    eq!(
        e.qual,
        0x30 | (cr0 & 0xffff) << 16,
        "LMSW BX: qualification CR 0, type 3, register operand, source data in 31:16"
    );
    eq!(e.len, 3, "LMSW: instruction length 3");
    eq!(e.rip, addr(t_cr_5), "LMSW: guest RIP");
    let e = skip_run(&e, &mut regs);
    ended(&e, "CR0/CR4 masks");
    eq!(vmread(field::GUEST_CR0), cr0, "guest CR0 unchanged (host-owned TS kept)");
    vmwrite(field::GUEST_CR0, arch::read_cr0());
}

/// 26.1.3 CR3-load/store exiting and CR3-target values.
fn cr3(c: &Ctx) {
    if !c.proc_allows(ctl::PROC_CR3_LOAD_EXITING | ctl::PROC_CR3_STORE_EXITING, "CR3 exiting") {
        return;
    }
    if c.caps.misc >> 16 & 0x1ff == 0 {
        skip!("no CR3-target values", "CR3-target values");
        return;
    }
    c.controls(0, ctl::PROC_CR3_LOAD_EXITING | ctl::PROC_CR3_STORE_EXITING, 0);
    let cr3 = arch::read_cr3();
    vmwrite(field::CR3_TARGET_COUNT, 1);
    vmwrite(field::CR3_TARGET_VALUE0, cr3);
    start(addr(t_cr3), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::CR_ACCESS, "MOV from CR3 with CR3-store exiting: exit reason 28");
    eq!(e.qual, 0x13, "MOV from CR3 to RAX: qualification CR 3, type 1, register 0");
    eq!(e.len, 3, "MOV from CR3: instruction length 3");
    eq!(e.rip, addr(t_cr3), "MOV from CR3: guest RIP");
    regs.rax = cr3;
    let e = skip_run(&e, &mut regs);
    eq!(e.reason, er::CR_ACCESS, "MOV to CR3 of a target value does not exit; of another value exits");
    eq!(e.qual, 0x203, "MOV to CR3 from RDX: qualification CR 3, type 0, register 2");
    eq!(e.len, 3, "MOV to CR3: instruction length 3");
    eq!(e.rip, addr(t_cr3_3), "MOV to CR3: guest RIP");
    ended(&skip_run(&e, &mut regs), "CR3");
    vmwrite(field::CR3_TARGET_COUNT, 0);
}

/// 26.1.3 CR8-store exiting (no TPR shadow).
fn cr8(c: &Ctx) {
    if !c.proc_allows(ctl::PROC_CR8_STORE_EXITING, "CR8-store exiting") {
        return;
    }
    c.controls(0, ctl::PROC_CR8_STORE_EXITING, 0);
    start(addr(t_cr8), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::CR_ACCESS, "MOV from CR8: exit reason 28");
    eq!(e.qual, 0x18, "MOV from CR8 to RAX: qualification CR 8, type 1, register 0");
    eq!(e.len, 4, "MOV from CR8: instruction length 4 (REX.R)");
    eq!(e.rip, addr(t_cr8), "MOV from CR8: guest RIP");
    ended(&skip_run(&e, &mut regs), "CR8");
}

/// 26.1.3 INVLPG exiting; qualification = linear address (28.2.1).
fn invlpg(c: &Ctx) {
    if !c.proc_allows(ctl::PROC_INVLPG_EXITING, "INVLPG exiting") {
        return;
    }
    c.controls(0, ctl::PROC_INVLPG_EXITING, 0);
    start(addr(t_invlpg), 2);
    let mut regs = GuestRegs { rax: 0x1234_5678, ..Default::default() };
    let e = run(&mut regs);
    eq!(e.reason, er::INVLPG, "INVLPG: exit reason 14");
    eq!(e.qual, 0x1234_5678, "INVLPG: qualification is the linear address");
    eq!(e.len, 3, "INVLPG: instruction length 3");
    eq!(e.rip, addr(t_invlpg), "INVLPG: guest RIP");
    ended(&skip_run(&e, &mut regs), "INVLPG");
}

/// 26.1.3 RDTSC exiting; 26.3 TSC offsetting.
fn rdtsc(c: &Ctx) {
    if c.proc_allows(ctl::PROC_RDTSC_EXITING, "RDTSC exiting") {
        c.controls(0, ctl::PROC_RDTSC_EXITING, 0);
        start(addr(t_rdtsc), 2);
        let mut regs = GuestRegs::default();
        let e = run(&mut regs);
        eq!(e.reason, er::RDTSC, "RDTSC: exit reason 16");
        eq!(e.len, 2, "RDTSC: instruction length 2");
        eq!(e.rip, addr(t_rdtsc), "RDTSC: guest RIP");
        ended(&skip_run(&e, &mut regs), "RDTSC");
    }
    if c.proc_allows(ctl::PROC_USE_TSC_OFFSETTING, "TSC offsetting") {
        const OFFSET: u64 = 1 << 52;
        c.controls(0, ctl::PROC_USE_TSC_OFFSETTING, 0);
        vmwrite(field::TSC_OFFSET, OFFSET);
        start(addr(t_rdtsc), 2);
        let mut regs = GuestRegs::default();
        let before = arch::rdtsc();
        let e = run(&mut regs);
        let after = arch::rdtsc();
        ended(&e, "RDTSC with offsetting");
        let l2 = (regs.rdx << 32 | (regs.rax & 0xffff_ffff)).wrapping_sub(OFFSET);
        check!(
            before <= l2 && l2 <= after,
            "RDTSC without exiting returns TSC + offset (L2 {:#x} - offset in [{:#x}, {:#x}])",
            l2 + OFFSET,
            before,
            after
        );
    }
}

/// 26.2 exceptions: the exception bitmap and #PF error-code mask/match;
/// interruption information per 25.9.2.
fn exceptions(c: &Ctx) {
    c.controls(0, 0, 0);
    vmwrite(field::EXCEPTION_BITMAP, 1 << 6);
    start(addr(t_ud2), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::EXCEPTION_OR_NMI, "UD2 with bitmap bit 6: exit reason 0");
    eq!(e.intr, 0x8000_0306, "UD2: interruption info 0x80000306 (valid, hardware exception, #UD)");
    eq!(e.rip, addr(t_ud2), "UD2: guest RIP is the UD2");
    eq!(e.qual, 0, "UD2: qualification 0");

    // #PF: bit 14 set, mask/match select write faults (error code bit 1).
    vmwrite(field::EXCEPTION_BITMAP, 1 << 14);
    vmwrite(field::PAGE_FAULT_ERROR_CODE_MASK, 2);
    vmwrite(field::PAGE_FAULT_ERROR_CODE_MATCH, 2);
    start(addr(t_write), 2);
    let mut regs = GuestRegs { rbx: UNMAPPED, ..Default::default() };
    let e = run(&mut regs);
    eq!(e.reason, er::EXCEPTION_OR_NMI, "#PF write, bit 14 = 1, PFEC & mask == match: exits");
    eq!(e.intr, 0x8000_0b0e, "#PF: interruption info 0x80000b0e (error code valid)");
    eq!(e.intr_err, 2, "#PF write to a not-present page: error code 2");
    eq!(e.qual, UNMAPPED, "#PF: qualification is the faulting linear address (CR2 not written)");
    eq!(e.rip, addr(t_write), "#PF: guest RIP is the faulting instruction");
    clear_l2_event();
    start(addr(t_read), 2);
    let e = run(&mut regs);
    eq!(e.reason, er::VMCALL, "#PF read, bit 14 = 1, PFEC & mask != match: no exit");
    let (v, rip) = l2_event(true);
    eq!((v, rip), (14, addr(t_read)), "#PF read delivered through L2's IDT (vector, return RIP)");
    // SAFETY: reading CR2 is harmless; L2's #PF wrote it and the exit kept it.
    eq!(arch::read_cr2(), UNMAPPED, "#PF delivered in L2 sets CR2");
    vmwrite(field::EXCEPTION_BITMAP, 0);
    start(addr(t_read), 2);
    let e = run(&mut regs);
    eq!(e.reason, er::EXCEPTION_OR_NMI, "#PF read, bit 14 = 0, PFEC & mask != match: exits");
    eq!(e.intr_err, 0, "#PF read of a not-present page: error code 0");
    clear_l2_event();
    start(addr(t_write), 2);
    let e = run(&mut regs);
    eq!(e.reason, er::VMCALL, "#PF write, bit 14 = 0, PFEC & mask == match: no exit");
    eq!(l2_event(true), (14, addr(t_write)), "#PF write delivered through L2's IDT");

    // #BP from INT3: software exception (type 6) with instruction length.
    vmwrite(field::PAGE_FAULT_ERROR_CODE_MASK, 0);
    vmwrite(field::PAGE_FAULT_ERROR_CODE_MATCH, 0);
    vmwrite(field::EXCEPTION_BITMAP, 1 << 3);
    start(addr(t_int3), 2);
    let e = run(&mut regs);
    eq!(e.reason, er::EXCEPTION_OR_NMI, "INT3 with bitmap bit 3: exit reason 0");
    eq!(e.intr, 0x8000_0603, "INT3: interruption info 0x80000603 (software exception)");
    eq!(e.len, 1, "INT3: instruction length 1");
    eq!(e.rip, addr(t_int3), "INT3: guest RIP is the INT3");
    vmwrite(field::EXCEPTION_BITMAP, 0);
}

/// 26.2 interrupt-window exiting and 26.7.5: blocking by STI.
fn interrupt_window(c: &Ctx) {
    if !c.proc_allows(ctl::PROC_INTERRUPT_WINDOW_EXITING, "interrupt-window exiting") {
        return;
    }
    c.controls(0, ctl::PROC_INTERRUPT_WINDOW_EXITING, 0);
    start(addr(t_sti), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::INTERRUPT_WINDOW, "STI with IF = 0: interrupt-window exit (reason 7)");
    eq!(e.rip, addr(t_sti_2), "interrupt window opens after STI and the one instruction it blocks");
    eq!(vmread(field::GUEST_INTERRUPTIBILITY), 0, "interrupt-window exit: no blocking left");
    start(addr(t_nops), 0x202);
    let e = run(&mut regs);
    eq!(e.reason, er::INTERRUPT_WINDOW, "entry with IF = 1: interrupt-window exit at once");
    eq!(e.rip, addr(t_nops), "interrupt-window exit before L2's first instruction");
}

/// 26.5.1 VMX-preemption timer; 28.3 saving its value.
fn preemption_timer(c: &Ctx) {
    if !c.caps.pin.allows(ctl::PIN_PREEMPTION_TIMER) {
        skip!("not offered", "VMX-preemption timer");
        return;
    }
    let save = c.caps.exit.allows(ctl::EXIT_SAVE_PREEMPTION_TIMER);
    c.controls(ctl::PIN_PREEMPTION_TIMER, 0, 0);
    if save {
        let v = vmread(field::VM_EXIT_CONTROLS) as u32 | ctl::EXIT_SAVE_PREEMPTION_TIMER;
        vmwrite(field::VM_EXIT_CONTROLS, v as u64);
    }
    vmwrite(field::PREEMPTION_TIMER_VALUE, 1000);
    start(addr(t_loop), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::PREEMPTION_TIMER, "VMX-preemption timer expiry: exit reason 52");
    check!(
        addr(t_loop) <= e.rip && e.rip < addr(t_loop_end),
        "preemption timer: guest RIP {:#x} inside L2's loop",
        e.rip
    );
    eq!(e.qual, 0, "preemption timer: qualification 0");
    check!(regs.rax > 0, "preemption timer: L2 ran its loop ({} iterations)", regs.rax);
    if save {
        eq!(vmread(field::PREEMPTION_TIMER_VALUE), 0, "save VMX-preemption timer: 0 saved on expiry");
        vmwrite(field::PREEMPTION_TIMER_VALUE, 0x7fff_ffff);
        start(addr(t_spin), 2);
        regs.rcx = 100_000;
        let e = run(&mut regs);
        eq!(e.reason, er::CPUID, "CPUID after a 100000-iteration loop with a long preemption timer: exit reason 10");
        let v = vmread(field::PREEMPTION_TIMER_VALUE);
        check!(v > 0 && v < 0x7fff_ffff, "save VMX-preemption timer: the remaining count is saved ({:#x})", v);
    } else {
        skip!("not offered", "save VMX-preemption timer value");
    }
}

/// 27.6 event injection through L2's IDT.
fn injection(c: &Ctx) {
    c.controls(0, 0, 0);
    let mut regs = GuestRegs::default();
    let cases: [(&str, u32, u64, u32, u64); 3] = [
        ("external interrupt 0x20", ii::VALID | ii::TYPE_EXTERNAL_INTERRUPT | 0x20, 0x202, 0x20, 0),
        ("#UD", ii::VALID | ii::TYPE_HARDWARE_EXCEPTION | 6, 2, 6, 0),
        ("software interrupt INT 0x40 (length 2)", ii::VALID | ii::TYPE_SOFTWARE_INTERRUPT | 0x40, 2, 0x40, 2),
    ];
    for (name, info, rflags, vector, len) in cases {
        clear_l2_event();
        start(addr(t_nops), rflags);
        vmwrite(field::VM_ENTRY_INTERRUPTION_INFO, info as u64);
        vmwrite(field::VM_ENTRY_INSTRUCTION_LENGTH, len);
        let e = run(&mut regs);
        eq!(e.reason, er::VMCALL, "inject {}: L2's handler runs", name);
        eq!(l2_event(false), (vector, addr(t_nops) + len), "inject {}: vector and return RIP in L2's frame", name);
        eq!(
            vmread(field::VM_ENTRY_INTERRUPTION_INFO) & ii::VALID as u64,
            0,
            "inject {}: valid bit cleared on exit",
            name
        );
        eq!(e.idt & ii::VALID as u64, 0, "inject {}: no IDT-vectoring info after delivery", name);
    }
    vmwrite(field::VM_ENTRY_INSTRUCTION_LENGTH, 0);
}

/// 27.4 VM-entry MSR loading, 28.4 VM-exit MSR storing, 28.6 VM-exit MSR
/// loading.
fn msr_lists(c: &Ctx) {
    const L1_VALUE: u64 = 0x0000_1111_2222_3000;
    const L2_INITIAL: u64 = 0x0000_7777_8888_9000;
    c.controls(0, 0, 0);
    let lists = MSR_LISTS.as_ptr() as *mut MsrEntry;
    // SAFETY: the lists are this kernel's; L2 is not running.
    unsafe {
        arch::wrmsr(MSR_KGS, L1_VALUE);
        *lists = MsrEntry { index: MSR_KGS, reserved: 0, data: L2_INITIAL };
        *lists.add(1) = MsrEntry { index: MSR_KGS, reserved: 0, data: 0 };
        *lists.add(2) = MsrEntry { index: MSR_KGS, reserved: 0, data: L1_VALUE };
    }
    let p = lists as u64;
    vmwrite(field::VM_ENTRY_MSR_LOAD_ADDR, p);
    vmwrite(field::VM_ENTRY_MSR_LOAD_COUNT, 1);
    vmwrite(field::VM_EXIT_MSR_STORE_ADDR, p + 16);
    vmwrite(field::VM_EXIT_MSR_STORE_COUNT, 1);
    vmwrite(field::VM_EXIT_MSR_LOAD_ADDR, p + 32);
    vmwrite(field::VM_EXIT_MSR_LOAD_COUNT, 1);
    start(addr(t_msrlist), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    ended(&e, "MSR lists");
    eq!(regs.r9 << 32 | (regs.r8 & 0xffff_ffff), L2_INITIAL, "VM-entry MSR-load list: L2 reads the loaded value");
    // SAFETY: L2 has exited; the store list is this kernel's.
    let stored = unsafe { core::ptr::read_volatile(&(*lists.add(1)).data) };
    eq!(stored, 0x1abc_0000_5678, "VM-exit MSR-store list: L2's value stored");
    // SAFETY: the MSR exists on x86-64.
    eq!(unsafe { arch::rdmsr(MSR_KGS) }, L1_VALUE, "VM-exit MSR-load list: L1's value restored");
    vmwrite(field::VM_ENTRY_MSR_LOAD_COUNT, 0);
    vmwrite(field::VM_EXIT_MSR_STORE_COUNT, 0);
    vmwrite(field::VM_EXIT_MSR_LOAD_COUNT, 0);
}

/// 29.3.3.2 EPT violations; qualification per Table 28-7.
fn ept_violations(c: &Ctx) {
    c.controls(0, 0, ctl::PROC2_ENABLE_EPT);
    invept(c);
    // SAFETY: scratch page, identity mapped in L1; a VMCALL for t_jmp.
    unsafe { core::ptr::write_volatile(PAGE_NX as *mut [u8; 3], [0x0f, 0x01, 0xc1]) };
    let adv = c.caps.ept_vpid >> 22 & 1 == 1;
    // (name, snippet, gpa, expected qualification bits 8:0)
    let cases: [(&str, u64, u64, u64); 4] = [
        ("write to a read-only page", addr(t_write), PAGE_RO, 0x18a),
        ("read of a not-present page", addr(t_read), PAGE_NP, 0x181),
        ("write to a not-present page", addr(t_write), PAGE_NP, 0x182),
        ("fetch from a non-executable page", addr(t_jmp), PAGE_NX, 0x19c),
    ];
    for (name, rip, gpa, qual) in cases {
        start(rip, 2);
        let mut regs = GuestRegs { rbx: gpa, ..Default::default() };
        let e = run(&mut regs);
        eq!(e.reason, er::EPT_VIOLATION, "EPT {}: exit reason 48", name);
        eq!(e.qual & 0x1ff, qual, "EPT {}: qualification bits 8:0 (access, permissions 5:3, bits 7/8)", name);
        if adv {
            // Bits 9-11 with advanced information (28.2.1): supervisor,
            // writable, executable linear address in L1's tables.
            eq!(e.qual >> 9 & 7, 2, "EPT {}: qualification bits 11:9 (U/S 0, R/W 1, XD 0)", name);
        }
        eq!(e.qual >> 12 & 1, 0, "EPT {}: no NMI unblocking", name);
        eq!(vmread(field::GUEST_PHYSICAL_ADDRESS), gpa, "EPT {}: guest-physical address", name);
        eq!(vmread(field::GUEST_LINEAR_ADDRESS), gpa, "EPT {}: guest linear address", name);
        let want_rip = if rip == addr(t_jmp) { gpa } else { rip };
        eq!(e.rip, want_rip, "EPT {}: guest RIP", name);
    }
    start(addr(t_read), 2);
    let mut regs = GuestRegs { rbx: PAGE_RO, ..Default::default() };
    let e = run(&mut regs);
    check!(e.reason == er::VMCALL, "EPT read of a read-only page: no exit (got reason {})", e.reason);
}

/// 28.2.4 IDT-vectoring information and its re-injection (27.6): #UD
/// whose delivery reads an IDT page that EPT does not map.
fn idt_vectoring(c: &Ctx) {
    c.controls(0, 0, ctl::PROC2_ENABLE_EPT);
    // SAFETY: both pages are this kernel's (identity mapped).
    unsafe { core::ptr::copy_nonoverlapping(pa(&L2_IDT) as *const u8, PAGE_IDT as *mut u8, 4096) };
    let j = ((PAGE_IDT - SCRATCH) >> 12) as usize;
    set_u64(pa(&EPT_PT), j, 0);
    invept(c);
    vmwrite(field::GUEST_IDTR_BASE, PAGE_IDT);
    clear_l2_event();
    start(addr(t_ud2), 2);
    let mut regs = GuestRegs::default();
    let e = run(&mut regs);
    eq!(e.reason, er::EPT_VIOLATION, "#UD delivery through an unmapped IDT: EPT violation");
    eq!(e.qual & 0x1ff, 0x181, "IDT read: qualification read, not present, linear address valid");
    eq!(vmread(field::GUEST_PHYSICAL_ADDRESS), PAGE_IDT + 6 * 16, "IDT read: guest-physical address of gate 6");
    eq!(e.idt, 0x8000_0306, "IDT-vectoring info: the #UD being delivered (0x80000306)");
    eq!(e.rip, addr(t_ud2), "IDT-vectoring: guest RIP is the UD2");
    set_u64(pa(&EPT_PT), j, PAGE_IDT | ept::RWX | ept::MEMTYPE_WB);
    invept(c);
    vmwrite(field::VM_ENTRY_INTERRUPTION_INFO, e.idt);
    let e = run(&mut regs);
    eq!(e.reason, er::VMCALL, "re-injected #UD reaches L2's handler");
    eq!(l2_event(false), (6, addr(t_ud2)), "re-injected #UD: vector 6, return RIP the UD2");
    set_u64(pa(&EPT_PT), j, 0);
    vmwrite(field::GUEST_IDTR_BASE, pa(&L2_IDT));

    // INT3 whose frame goes to a stack page EPT does not map: the software
    // exception is in IDT-vectoring info with its instruction length.
    let k = ((PAGE_NP - SCRATCH) >> 12) as usize;
    invept(c);
    clear_l2_event();
    start(addr(t_int3), 2);
    vmwrite(field::GUEST_RSP, PAGE_NP + 0x1000);
    let e = run(&mut regs);
    eq!(e.reason, er::EPT_VIOLATION, "INT3 pushing to an unmapped stack: EPT violation");
    eq!(e.qual & 0x1ff, 0x182, "stack push: qualification write, not present, linear address valid");
    eq!(
        vmread(field::GUEST_PHYSICAL_ADDRESS) & !0xfff,
        PAGE_NP,
        "stack push: guest-physical address in the stack page"
    );
    eq!(e.idt, 0x8000_0603, "IDT-vectoring info: the #BP software exception (0x80000603)");
    eq!(e.len, 1, "IDT-vectoring of a software exception: instruction length 1");
    eq!(e.rip, addr(t_int3), "stack push: guest RIP is the INT3");
    set_u64(pa(&EPT_PT), k, PAGE_NP | ept::READ | ept::WRITE | ept::MEMTYPE_WB);
    invept(c);
    vmwrite(field::VM_ENTRY_INTERRUPTION_INFO, e.idt);
    vmwrite(field::VM_ENTRY_INSTRUCTION_LENGTH, e.len);
    let e = run(&mut regs);
    eq!(e.reason, er::VMCALL, "re-injected #BP reaches L2's handler");
    eq!(l2_event(false), (3, addr(t_int3) + 1), "re-injected #BP: vector 3, return RIP after the INT3");
    set_u64(pa(&EPT_PT), k, 0);
    invept(c);
    vmwrite(field::VM_ENTRY_INSTRUCTION_LENGTH, 0);
}

/// A copy of [`build_ept`]'s hierarchy as it is now, except that
/// [`PAGE_V`] maps to [`PAGE_W`]: every table on that path is its own.
fn build_ept_alt() -> u64 {
    let (pml4, pdpt, pd, pt) = (pa(&EPT1_PML4), pa(&EPT1_PDPT), pa(&EPT1_PD), pa(&EPT1_PT));
    // SAFETY: pages of this kernel, identity mapped; L2 is not running.
    unsafe {
        core::ptr::copy_nonoverlapping(pa(&EPT_PD) as *const u8, pd as *mut u8, 4096);
        core::ptr::copy_nonoverlapping(pa(&EPT_PT) as *const u8, pt as *mut u8, 4096);
    }
    set_u64(pml4, 0, pdpt | ept::RWX);
    set_u64(pdpt, 0, pd | ept::RWX);
    set_u64(pd, (SCRATCH >> 21) as usize, pt | ept::RWX);
    set_u64(pt, ((PAGE_V - SCRATCH) >> 12) as usize, PAGE_W | ept::RWX | ept::MEMTYPE_WB);
    vmx::eptp(pml4)
}

/// [`PAGE_V`] and [`PAGE_W`] hold their contents again.
fn fill_v_w() {
    // SAFETY: scratch pages of this kernel, identity mapped.
    unsafe {
        core::ptr::write_volatile(PAGE_V as *mut u64, V_CONTENT);
        core::ptr::write_volatile(PAGE_W as *mut u64, W_CONTENT);
    }
}

/// 26.5.5.3 "EPTP Switching": VMFUNC 0 loads the EPT pointer from entry
/// ECX of the EPTP list without a VM exit; ECX >= 512, an entry a VM entry
/// would reject (27.2.1.1) or a function whose control bit is clear exit
/// with reason 59 and leave the EPT pointer alone.
fn eptp_switching(c: &Ctx) {
    let on = c.caps.proc2.allows(ctl::PROC2_ENABLE_VM_FUNCTIONS)
        // SAFETY: IA32_VMX_VMFUNC exists when "enable VM functions" may be
        // 1 (SDM Vol. 3C, A.11).
        && unsafe { arch::rdmsr(vmx::msr::IA32_VMX_VMFUNC) } & 1 == 1;
    if !on {
        skip!("not offered", "VMFUNC EPTP switching");
        return;
    }
    fill_v_w();
    let eptp1 = build_ept_alt();
    let list = pa(&EPTP_LIST);
    // Entry 2 stays 0: page-walk length 1, which no VM entry accepts.
    zero(list);
    set_u64(list, 0, c.eptp);
    set_u64(list, 1, eptp1);
    c.controls(0, 0, ctl::PROC2_ENABLE_EPT | ctl::PROC2_ENABLE_VM_FUNCTIONS);
    vmwrite(field::VM_FUNCTION_CONTROLS, 1);
    vmwrite(field::EPTP_LIST_ADDRESS, list);
    invept(c);
    start(addr(t_vmfunc), 2);
    let mut regs = GuestRegs { rcx: 1, rbx: PAGE_V, ..Default::default() };
    let e = run(&mut regs);
    eq!(e.reason, er::VMCALL, "VMFUNC 0 with ECX = 1: no exit until L2's VMCALL");
    eq!((regs.r8, regs.r9), (V_CONTENT, W_CONTENT), "VMFUNC 0: L2 reads its page through list entry 0, then 1");
    eq!(vmread(field::EPT_POINTER), eptp1, "VMFUNC 0: the EPT pointer is list entry 1 at the next exit");
    if c.caps.proc2.allows(ctl::PROC2_EPT_VIOLATION_VE) {
        eq!(vmread(field::EPTP_INDEX), 1, "VMFUNC 0: EPTP index 1");
    }
    let cases: [(&str, u64, u64); 3] = [("ECX = 512", 0, 512), ("an invalid list entry", 0, 2), ("EAX = 1", 1, 1)];
    for (name, rax, rcx) in cases {
        vmwrite(field::EPT_POINTER, c.eptp);
        start(addr(t_vmfunc), 2);
        let mut regs = GuestRegs { rax, rcx, rbx: PAGE_V, ..Default::default() };
        let e = run(&mut regs);
        eq!(e.reason, er::VMFUNC, "VMFUNC with {}: exit reason 59", name);
        eq!((e.rip, e.len), (addr(t_vmfunc_2), 3), "VMFUNC with {}: guest RIP and length 3", name);
        eq!(vmread(field::EPT_POINTER), c.eptp, "VMFUNC with {}: EPT pointer unchanged", name);
    }
    vmwrite(field::VM_FUNCTION_CONTROLS, 0);
}

/// L1 rewrites an EPT leaf L2 has used (X -> A becomes X -> B) without
/// INVEPT, and L2 then reads B. Hardware may go on using a cached X -> A
/// translation until INVEPT (SDM Vol. 3C, 29.4 "Caching Translation
/// Information"), so software must not rely on either outcome; Turtles'
/// L0 write-protects the EPT12 tables its EPT02 was built from and drops
/// EPT02 on L1's write, so under Turtles L2 always sees B. This checks
/// Turtles' behaviour. Then a not-present leaf made present, which L2
/// sees on hardware too, and which L0 lets through without dropping EPT02.
fn ept12_write(c: &Ctx) {
    fill_v_w();
    c.controls(0, 0, ctl::PROC2_ENABLE_EPT);
    invept(c);
    start(addr(t_read), 2);
    let mut regs = GuestRegs { rbx: PAGE_V, ..Default::default() };
    let e = run(&mut regs);
    ended(&e, "EPT12 write, before");
    eq!(regs.rax, V_CONTENT, "EPT12 X -> A: L2 reads A");
    let j = ((PAGE_V - SCRATCH) >> 12) as usize;
    set_u64(pa(&EPT_PT), j, PAGE_W | ept::RWX | ept::MEMTYPE_WB);
    start(addr(t_read), 2);
    let e = run(&mut regs);
    ended(&e, "EPT12 write, after");
    eq!(regs.rax, W_CONTENT, "EPT12 leaf rewritten to X -> B without INVEPT: L2 reads B (Turtles)");
    set_u64(pa(&EPT_PT), j, PAGE_V | ept::RWX | ept::MEMTYPE_WB);
    // A not-present leaf made present needs no INVEPT anywhere: not-present
    // entries are never cached.
    let k = ((PAGE_NP - SCRATCH) >> 12) as usize;
    set_u64(pa(&EPT_PT), k, PAGE_W | ept::READ | ept::MEMTYPE_WB);
    start(addr(t_read), 2);
    regs.rbx = PAGE_NP;
    let e = run(&mut regs);
    ended(&e, "EPT12 leaf made present");
    eq!(regs.rax, W_CONTENT, "EPT12 not-present leaf made present without INVEPT: L2 reads through it");
    set_u64(pa(&EPT_PT), k, 0);
    invept(c);
}

/// L2 writes an EPT12 entry itself, through EPT's identity mapping of the
/// page directory (a table on the write's own translation path), making a
/// not-present 2-MiB page present, and then reads through it. EPT entries
/// that were not present are never cached (SDM Vol. 3C, 29.4 "Caching
/// Translation Information"), so this holds on hardware too.
fn ept12_written_by_l2(c: &Ctx) {
    const SLOT: usize = 40;
    let gpa = (SLOT as u64) << 21;
    fill_v_w();
    c.controls(0, 0, ctl::PROC2_ENABLE_EPT);
    invept(c);
    let entry = SCRATCH | ept::RWX | ept::MEMTYPE_WB | ept::PAGE_SIZE;
    let target = pa(&EPT_PD) + 8 * SLOT as u64;
    start(addr(t_wr), 2);
    let mut regs = GuestRegs { rax: entry, rbx: target, rdx: gpa + (PAGE_V - SCRATCH), ..Default::default() };
    let e = run(&mut regs);
    ended(&e, "EPT12 write by L2");
    // SAFETY: the page directory is this kernel's; L2 is not running.
    eq!(unsafe { core::ptr::read_volatile(target as *const u64) }, entry, "L2 wrote the EPT12 entry");
    eq!(regs.rax, V_CONTENT, "L2 reads through the 2-MiB page it made present in EPT12");
    set_u64(pa(&EPT_PD), SLOT, 0);
    invept(c);
}

/// An L2 without EPT reaches L1's devices at L1's physical addresses (its
/// guest-physical addresses are L1's), also after earlier L2s ran with
/// EPT: nothing of their EPT may apply.
fn device_without_ept(c: &Ctx) {
    c.controls(0, 0, 0);
    let reg = rt::apic::LAPIC_BASE + 0x30;
    start(addr(t_read), 2);
    let mut regs = GuestRegs { rbx: reg, ..Default::default() };
    let e = run(&mut regs);
    ended(&e, "local APIC read without EPT");
    // SAFETY: the local APIC page is identity mapped; reading the version
    // register has no side effect.
    let version = unsafe { core::ptr::read_volatile(reg as *const u32) };
    eq!(regs.rax as u32, version, "L2 without EPT reads L1's local APIC version register");
}
