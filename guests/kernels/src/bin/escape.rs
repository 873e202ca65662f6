//! `escape`: a guest hypervisor (L1) whose L2 tries to reach memory its
//! EPT does not map, and which itself points vmcs12 at L0's private
//! memory (issue 6, item 9: "L2 can never touch memory outside what EPT12
//! composed with EPT01 maps").
//!
//! EPT12 (SDM Vol. 3C, 29.3 "The Extended Page Table Mechanism") maps
//! exactly the [`Window`]: L2's code, stack, one data page and L2's own
//! page tables, with 4 KiB pages; nothing else is present. L2 runs in
//! 64-bit ring 0 on those page tables (which it could rewrite: they are in
//! its window), identity-mapping the first GiB, the fourth GiB and the
//! 2 MiB at [`L0_PRIVATE`] (the guest-physical address where L0 keeps its
//! own tables in host-physical terms).
//!
//! Part 1: L2 reads and writes, one at a time, the page just past the
//! window, the page holding L1's [`SECRET`], L1's VMCS and EPT root,
//! [`L0_PRIVATE`], the local APIC page and the top of the fourth GiB.
//! Each access must be an EPT violation exit to L1 with that guest-physical
//! address; L1 skips the instruction and resumes. L2 records what every
//! read left in RAX; the secret must never appear there or in any exit's
//! registers, and the secret must be intact afterwards.
//!
//! Part 2: L1 itself tries hostile vmcs12 contents. An EPTP whose root is
//! [`L0_PRIVATE`], a VM-entry MSR-load list there, a VM-exit MSR-store list
//! there (L0 must not write its memory), VMPTRLD and VMCLEAR of it. Each
//! must fail cleanly (VMfail, a VM-entry failure exit) or end in an EPT
//! violation or misconfiguration exit: L2 never executes an instruction
//! with such an EPTP. A normal run of L2 afterwards shows L0 intact.
#![no_std]
#![no_main]

use core::arch::global_asm;
use rt::arch;
use rt::sync::Global;
use rt::vmx::{self, ctl, ept, exit_reason, field, Caps, GuestRegs, Page, VmFail};
use rt::{check, check_eq, println};

rt::entry!("escape", main);

/// Where L0 keeps its private memory (EPT01, vmcs02, shadow EPT), far
/// above any guest RAM.
const L0_PRIVATE: u64 = 0xfc_0000_0000;
/// L1's secret, in a page L2's EPT does not map.
const SECRET: u64 = 0x5345_4352_4554_2121;
/// What L2 writes on its write attempts.
const L2_PATTERN: u64 = 0x4c32_4c32_4c32_4c32;
/// The most attempts L2 makes (the data page holds the list).
const MAX_ATTEMPTS: usize = 32;

/// Everything EPT12 maps for L2, page aligned and contiguous. (A larger
/// alignment would move the multiboot header past the first 8 KiB of the
/// file; the window may straddle a 2 MiB boundary, hence two EPT page
/// tables.)
#[repr(C, align(4096))]
struct Window {
    code: Page,
    stack: Page,
    /// `Attempts`.
    data: Page,
    pml4: Page,
    pdpt0: Page,
    pdpt1: Page,
    pd0: Page,
    pd3: Page,
    pd_private: Page,
}
const WINDOW_PAGES: u64 = 9;

/// The data page: the attempts L2 makes and what its reads returned.
#[repr(C)]
struct Attempts {
    count: u64,
    /// (guest-physical = linear address, 1 for a write)
    list: [[u64; 2]; MAX_ATTEMPTS],
    /// RAX after each attempt.
    seen: [u64; MAX_ATTEMPTS],
}

static WINDOW: Global<Window> = Global::new(Window {
    code: Page::zeroed(),
    stack: Page::zeroed(),
    data: Page::zeroed(),
    pml4: Page::zeroed(),
    pdpt0: Page::zeroed(),
    pdpt1: Page::zeroed(),
    pd0: Page::zeroed(),
    pd3: Page::zeroed(),
    pd_private: Page::zeroed(),
});
/// L1's secret page, outside the window.
static SECRET_PAGE: Global<Page> = Global::new(Page::zeroed());
static VMXON_REGION: Global<Page> = Global::new(Page::zeroed());
static VMCS: Global<Page> = Global::new(Page::zeroed());
static EPT_PML4: Global<Page> = Global::new(Page::zeroed());
static EPT_PDPT: Global<Page> = Global::new(Page::zeroed());
static EPT_PD: Global<Page> = Global::new(Page::zeroed());
static EPT_PT: Global<Page> = Global::new(Page::zeroed());
static EPT_PT2: Global<Page> = Global::new(Page::zeroed());

// L2, copied into the window's code page (position independent, no
// references outside itself). RSI = the data page. For each attempt: RBX
// = address; a read is `mov rax, [rbx]` and a write `mov [rbx], rax`, both
// 3 bytes (48 8B 03 / 48 89 03), which L1 skips on the EPT violation; RAX
// is then stored in `seen`. Ends with HLT.
global_asm!(
    r#"
    .section .text.escape_l2, "ax"
    .globl escape_l2_start, escape_l2_end
escape_l2_start:
    mov     rcx, [rsi]
    lea     rdi, [rsi + 8]
    lea     r8, [rsi + 8 + 16 * {max}]
1:  test    rcx, rcx
    jz      4f
    mov     rbx, [rdi]
    mov     rdx, [rdi + 8]
    xor     eax, eax
    test    rdx, rdx
    jnz     2f
    .byte   0x48, 0x8b, 0x03
    jmp     3f
2:  mov     rax, {pattern}
    .byte   0x48, 0x89, 0x03
3:  mov     [r8], rax
    add     rdi, 16
    add     r8, 8
    dec     rcx
    jmp     1b
4:  hlt
    ud2
escape_l2_end:
"#,
    max = const MAX_ATTEMPTS,
    pattern = const L2_PATTERN,
);

extern "C" {
    static escape_l2_start: u8;
    static escape_l2_end: u8;
}

fn pa<T>(g: &Global<T>) -> u64 {
    g.as_ptr() as u64
}

fn set_entry(table: u64, i: usize, v: u64) {
    // SAFETY: `table` is a page of this kernel (identity mapped); i < 512.
    unsafe { core::ptr::write_volatile((table as *mut u64).add(i), v) };
}

fn window() -> u64 {
    pa(&WINDOW)
}

fn page(i: u64) -> u64 {
    window() + i * 4096
}

/// EPT12: the window's pages, identity mapped with 4 KiB pages; nothing
/// else.
fn build_ept() -> u64 {
    let (pml4, pdpt, pd) = (pa(&EPT_PML4), pa(&EPT_PDPT), pa(&EPT_PD));
    let w = window();
    set_entry(pml4, (w >> 39 & 511) as usize, pdpt | ept::RWX);
    set_entry(pdpt, (w >> 30 & 511) as usize, pd | ept::RWX);
    let first_2m = w >> 21;
    for i in 0..WINDOW_PAGES {
        let gpa = page(i);
        let pt = if gpa >> 21 == first_2m { pa(&EPT_PT) } else { pa(&EPT_PT2) };
        set_entry(pd, (gpa >> 21 & 511) as usize, pt | ept::RWX);
        set_entry(pt, (gpa >> 12 & 511) as usize, gpa | ept::RWX | ept::MEMTYPE_WB);
    }
    vmx::eptp(pml4)
}

/// L2's page tables (in the window): 2 MiB identity pages for GiB 0 and 3
/// and for the 2 MiB at [`L0_PRIVATE`].
fn build_l2_paging() -> u64 {
    const P_RW: u64 = 3;
    const PS: u64 = 0x80;
    let (pml4, pdpt0, pdpt1, pd0, pd3, pdp) = (page(3), page(4), page(5), page(6), page(7), page(8));
    set_entry(pml4, 0, pdpt0 | P_RW);
    set_entry(pml4, (L0_PRIVATE >> 39) as usize, pdpt1 | P_RW);
    set_entry(pdpt0, 0, pd0 | P_RW);
    set_entry(pdpt0, 3, pd3 | P_RW);
    set_entry(pdpt1, (L0_PRIVATE >> 30 & 511) as usize, pdp | P_RW);
    for i in 0..512u64 {
        set_entry(pd0, i as usize, i << 21 | PS | P_RW);
        set_entry(pd3, i as usize, ((3 << 30) + (i << 21)) | PS | P_RW);
    }
    set_entry(pdp, (L0_PRIVATE >> 21 & 511) as usize, L0_PRIVATE | PS | P_RW);
    pml4
}

fn attempts() -> *mut Attempts {
    page(2) as *mut Attempts
}

fn vmread(f: u64) -> u64 {
    vmx::vmread(f).unwrap_or(u64::MAX)
}

fn vmwrite(f: u64, v: u64) {
    // SAFETY: a VMCS is current; the fields written describe L2.
    if let Err(e) = unsafe { vmx::vmwrite(f, v) } {
        check!(false, "vmwrite {:#x} = {:#x}: {:?}", f, v, e);
    }
}

fn leaks(regs: &GuestRegs) -> bool {
    [regs.rax, regs.rbx, regs.rcx, regs.rdx, regs.rsi, regs.rdi, regs.r8, regs.r9, regs.r10, regs.r11].contains(&SECRET)
}

/// One L2 run from the start of its code until HLT or something else;
/// returns (exit reason, qualification, guest-physical address) of the
/// first exit that is not an expected EPT violation, and counts those.
struct Run {
    violations: u32,
    last: Result<(u32, u64, u64), VmFail>,
}

fn reset_l2(cr3: u64) {
    vmwrite(field::GUEST_RIP, page(0));
    vmwrite(field::GUEST_RSP, page(1) + 4096);
    vmwrite(field::GUEST_CR3, cr3);
    vmwrite(field::GUEST_RFLAGS, 2);
}

fn run_l2(launched: &mut bool, expect: &[[u64; 2]]) -> Run {
    let mut regs = GuestRegs { rsi: page(2), ..GuestRegs::default() };
    let mut violations = 0u32;
    loop {
        // SAFETY: the current VMCS holds L1's host state.
        if let Err(e) = unsafe { vmx::enter(&mut regs, *launched) } {
            return Run { violations, last: Err(e) };
        }
        let reason = vmread(field::EXIT_REASON) as u32;
        if reason & exit_reason::ENTRY_FAILURE == 0 {
            *launched = true;
        }
        let qual = vmread(field::EXIT_QUALIFICATION);
        let gpa = vmread(field::GUEST_PHYSICAL_ADDRESS);
        check!(!leaks(&regs), "no L2 register holds L1's secret after exit {:#x}", reason);
        let i = violations as usize;
        if reason == exit_reason::EPT_VIOLATION && i < expect.len() {
            let [addr, write] = expect[i];
            // Qualification (SDM Vol. 3C, Table 28-7): bit 0 read, bit 1
            // write; bits 5:3 = 0 (not present in EPT12).
            let access = if write != 0 { 2 } else { 1 };
            check!(
                gpa == addr && qual & 3 == access && qual >> 3 & 7 == 0,
                "EPT violation for the {} of {:#x} (gpa {:#x} qualification {:#x})",
                if write != 0 { "write" } else { "read" },
                addr,
                gpa,
                qual
            );
            violations += 1;
            vmwrite(field::GUEST_RIP, vmread(field::GUEST_RIP) + 3);
            continue;
        }
        return Run { violations, last: Ok((reason, qual, gpa)) };
    }
}

fn main(_mb: u32) {
    vmx::install_ud_reporter();
    if !check!(vmx::cpuid_has_vmx(), "CPUID.1:ECX.VMX is set") {
        return;
    }
    // SAFETY: CPUID says VMX exists, so the capability MSRs do.
    let caps = unsafe { Caps::read() };
    let needed = caps.proc.allows(ctl::PROC_HLT_EXITING | ctl::PROC_ACTIVATE_SECONDARY)
        && caps.proc2.allows(ctl::PROC2_ENABLE_EPT)
        && caps.ept_wb_4level()
        && caps.exit.allows(ctl::EXIT_HOST_ADDRESS_SPACE_SIZE)
        && caps.entry.allows(ctl::ENTRY_IA32E_MODE_GUEST);
    if !check!(needed, "VMX offers HLT exiting, 4-level WB EPT and 64-bit guests") {
        return;
    }
    // SAFETY: VMX exists; the VMXON region is a page of this image.
    if !check_eq!(unsafe { vmx::enable(&caps, pa(&VMXON_REGION)) }, Ok(Ok(())), "VMXON") {
        return;
    }
    let vmcs = pa(&VMCS);
    // SAFETY: the VMCS page belongs to this kernel; VMX root operation.
    let r = unsafe {
        vmx::init_region(vmcs, caps.revision_id());
        vmx::vmclear(vmcs).and_then(|()| vmx::vmptrld(vmcs))
    };
    if !check_eq!(r, Ok(()), "VMCLEAR + VMPTRLD") {
        return;
    }

    // The window: L2's code, its paging, its list of attempts.
    // SAFETY: the L2 code symbols delimit bytes of this image; the code
    // page belongs to this kernel.
    unsafe {
        let start = &raw const escape_l2_start;
        let len = (&raw const escape_l2_end).offset_from(start) as usize;
        core::ptr::copy_nonoverlapping(start, page(0) as *mut u8, len.min(4096));
        core::ptr::write_volatile(pa(&SECRET_PAGE) as *mut u64, SECRET);
    }
    let eptp = build_ept();
    let l2_cr3 = build_l2_paging();
    let secret = pa(&SECRET_PAGE);
    let past = page(WINDOW_PAGES);
    let targets = [
        past,
        page(0) - 8,
        secret,
        vmcs,
        pa(&EPT_PML4),
        L0_PRIVATE,
        L0_PRIVATE + 0x1000,
        0xfee0_0000,
        0xffff_f000,
        0x3fff_f000,
    ];
    let mut list = [[0u64; 2]; MAX_ATTEMPTS];
    let mut n = 0;
    for t in targets {
        for write in [0, 1] {
            list[n] = [t, write];
            n += 1;
        }
    }
    // SAFETY: the data page is this kernel's; L2 is not running.
    unsafe {
        let a = attempts();
        (*a).count = n as u64;
        (*a).list = list;
    }

    // SAFETY: the current VMCS is ours; the state written is L1's own
    // (host) and a 64-bit L2 (guest) on its own page tables through EPT12.
    let setup = unsafe {
        vmx::write_controls(&caps, 0, ctl::PROC_HLT_EXITING, ctl::PROC2_ENABLE_EPT, true).and_then(|load_efer| {
            vmx::write_host_state(load_efer)?;
            vmx::write_guest_state_64(page(0), page(1) + 4096, load_efer)?;
            vmx::vmwrite(field::EPT_POINTER, eptp)?;
            vmx::vmwrite(field::GUEST_CR3, l2_cr3)
        })
    };
    if !check_eq!(setup, Ok(()), "L2 VMCS written") {
        return;
    }

    // Part 1.
    let mut launched = false;
    reset_l2(l2_cr3);
    let run = run_l2(&mut launched, &list[..n]);
    println!("L2 attempts: {}, EPT violations seen by L1: {}", n, run.violations);
    check_eq!(run.violations, n as u32, "an EPT violation for every attempt outside the window");
    check!(matches!(run.last, Ok((exit_reason::HLT, _, _))), "L2 ends with HLT: {:?}", run.last);
    // SAFETY: L2 is stopped; the data and secret pages are this kernel's.
    let (seen, secret_now) = unsafe { ((*attempts()).seen, core::ptr::read_volatile(secret as *const u64)) };
    check!(!seen.contains(&SECRET), "L2 never read the secret: {:x?}", &seen[..n]);
    check!(seen[..n].iter().step_by(2).all(|&v| v == 0), "every blocked read left RAX = 0: {:x?}", &seen[..n]);
    check_eq!(secret_now, SECRET, "the secret page is unchanged");

    // Part 2: hostile vmcs12 contents. With no attempts, a good run of L2
    // is just HLT.
    // SAFETY: as above.
    unsafe { (*attempts()).count = 0 };
    let hostile = |name: &str, launched: &mut bool, f: &dyn Fn()| {
        f();
        reset_l2(l2_cr3);
        let r = run_l2(launched, &[]);
        // Clean outcomes: VMfail, a VM-entry failure exit, an EPT
        // violation or misconfiguration before L2 executes anything.
        let clean = match r.last {
            Err(_) => true,
            Ok((reason, _, _)) => {
                reason & exit_reason::ENTRY_FAILURE != 0
                    || reason == exit_reason::EPT_VIOLATION
                    || reason == exit_reason::EPT_MISCONFIG
            }
        };
        check!(clean, "{}: fails cleanly or faults in EPT ({:x?})", name, r.last);
        println!("{}: {:x?}", name, r.last);
    };
    hostile("EPTP root in L0's private memory", &mut launched, &|| vmwrite(field::EPT_POINTER, vmx::eptp(L0_PRIVATE)));
    hostile("EPTP root at the top of the physical address space", &mut launched, &|| {
        vmwrite(field::EPT_POINTER, vmx::eptp((1u64 << arch::maxphyaddr()) - 4096))
    });
    vmwrite(field::EPT_POINTER, eptp);
    // Outside L1's RAM the list reads as all ones (MSR index 0xffffffff),
    // so hardware fails the entry: exit reason 34 with bit 31 set,
    // qualification 1 (SDM Vol. 3C, 27.4 "Loading MSRs").
    hostile("VM-entry MSR-load list in L0's private memory", &mut launched, &|| {
        vmwrite(field::VM_ENTRY_MSR_LOAD_ADDR, L0_PRIVATE);
        vmwrite(field::VM_ENTRY_MSR_LOAD_COUNT, 4);
    });
    vmwrite(field::VM_ENTRY_MSR_LOAD_COUNT, 0);

    // A VM-exit MSR-store list there: the run itself is normal (L2 halts),
    // but L0 must not store into its own memory; the next runs show it.
    vmwrite(field::VM_EXIT_MSR_STORE_ADDR, L0_PRIVATE);
    vmwrite(field::VM_EXIT_MSR_STORE_COUNT, 4);
    reset_l2(l2_cr3);
    let r = run_l2(&mut launched, &[]);
    println!("VM-exit MSR-store list in L0's private memory: {:x?}", r.last);
    check!(r.last.is_ok(), "a VM-exit MSR-store list in L0's private memory: entry works ({:x?})", r.last);
    vmwrite(field::VM_EXIT_MSR_STORE_COUNT, 0);

    // VMPTRLD of L0's memory must fail (no VMCS with our revision there);
    // VMCLEAR of it may succeed but must not write there.
    // SAFETY: VMX root; neither address is ours, which is the point.
    let (ld, clr) = unsafe { (vmx::vmptrld(L0_PRIVATE), vmx::vmclear(L0_PRIVATE)) };
    println!("VMPTRLD {:#x}: {:?}, VMCLEAR: {:?}", L0_PRIVATE, ld, clr);
    check!(ld.is_err(), "VMPTRLD of L0's private memory fails ({:?})", ld);
    check_eq!(vmx::vmptrst(), vmcs, "our VMCS is still current");

    // L0 intact: L2 runs part 1 again with the same results.
    // SAFETY: the data page is this kernel's; L2 is stopped.
    unsafe {
        (*attempts()).count = n as u64;
        (*attempts()).seen = [0; MAX_ATTEMPTS];
    }
    reset_l2(l2_cr3);
    let run = run_l2(&mut launched, &list[..n]);
    check_eq!(run.violations, n as u32, "after the hostile VMCS contents: the same EPT violations");
    check!(matches!(run.last, Ok((exit_reason::HLT, _, _))), "and L2 still ends with HLT: {:?}", run.last);
    // SAFETY: as above.
    let secret_now = unsafe { core::ptr::read_volatile(secret as *const u64) };
    check_eq!(secret_now, SECRET, "the secret page is still unchanged");

    // SAFETY: leaves VMX operation; the VMCS is flushed first.
    unsafe {
        check_eq!(vmx::vmclear(vmcs), Ok(()), "VMCLEAR at the end");
        check_eq!(vmx::vmxoff(), Ok(()), "VMXOFF");
        arch::write_cr4(arch::read_cr4() & !vmx::CR4_VMXE);
    }
}
