//! `hyper`: a small guest hypervisor (L1) running one 64-bit L2 guest with
//! EPT (issue 6, item 6).
//!
//! L1 checks VMX support (CPUID.1:ECX.VMX, IA32_FEATURE_CONTROL, the
//! capability MSRs), enables VMX operation (SDM Vol. 3C, 24.7 "Enabling and
//! Entering VMX Operation"), and builds one VMCS: host state = L1's own,
//! guest state = a 64-bit ring-0 L2 on L1's page tables, GDT and IDT,
//! controls from the capability MSRs with HLT exiting, unconditional I/O
//! exiting, every exception exiting, EPT and (when offered) VPID 1.
//!
//! EPT (SDM Vol. 3C, 29.3 "The Extended Page Table Mechanism"): 4 levels,
//! write-back, an identity map of the first 64 MiB with 2 MiB pages except
//! the 2 MiB region holding [`HOLE`], which is mapped with 4 KiB pages and
//! leaves [`HOLE`] itself not present.
//!
//! L2 ([`l2_entry`], code in L1's image, reached through the identity EPT):
//! CPUID leaf 0 (stores the vendor), "hello from L2\n" to port 0x3f8 one
//! OUT at a time, a read of [`HOLE`] (an EPT violation: L1 checks the
//! guest-physical address and qualification, maps the page and resumes, so
//! the read completes with the value L1 put there), then HLT, which ends
//! the run.
//!
//! L1 emulates CPUID by passing its own through, forwards each byte of
//! L2's serial output to its console as `L2> ` lines, and prints the exit
//! counts: `L1 exits: cpuid 1, io 14, ept_violation 1, hlt 1`.
#![no_std]
#![no_main]

use core::arch::global_asm;
use rt::arch;
use rt::sync::Global;
use rt::vmx::{self, ctl, ept, exit_reason, field, Caps, GuestRegs, Page, VmFail};
use rt::{check, check_eq, print, println};

rt::entry!("hyper", main);

/// The guest-physical page left out of the EPT on purpose (32 MiB + 20 KiB,
/// in the scratch area).
const HOLE: u64 = 0x0200_5000;
/// What L1 stores at [`HOLE`] for L2 to read once the page is mapped.
const HOLE_MAGIC: u64 = 0x5455_5254_4c45_5332; // "TURTLES2" read as bytes backwards
/// What L2 writes to its serial port (the `.ascii` in [`l2_entry`]).
const L2_MSG: &[u8] = b"hello from L2\n";
/// Size of the EPT identity map.
const EPT_MAP_BYTES: u64 = 64 << 20;
/// VPID of L2 when VPIDs are offered.
const L2_VPID: u16 = 1;

static VMXON_REGION: Global<Page> = Global::new(Page::zeroed());
static VMCS: Global<Page> = Global::new(Page::zeroed());
static EPT_PML4: Global<Page> = Global::new(Page::zeroed());
static EPT_PDPT: Global<Page> = Global::new(Page::zeroed());
static EPT_PD: Global<Page> = Global::new(Page::zeroed());
static EPT_PT: Global<Page> = Global::new(Page::zeroed());

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static L2_STACK: Global<Stack> = Global::new(Stack([0; 16384]));

/// Written by L2: the CPUID.0 vendor (EBX, EDX, ECX) and the value read
/// from [`HOLE`].
#[no_mangle]
static mut L2_VENDOR: [u32; 3] = [0; 3];
#[no_mangle]
static mut L2_HOLE_VALUE: u64 = 0;

// The L2 guest. Runs in 64-bit ring 0 with L1's page tables (identity map)
// through L1's EPT; interrupts are off and every exception exits to L1.
global_asm!(
    r#"
    .section .text.l2, "ax"
    .globl l2_entry
l2_entry:
    xor     eax, eax
    xor     ecx, ecx
    cpuid
    mov     [rip + L2_VENDOR], ebx
    mov     [rip + L2_VENDOR + 4], edx
    mov     [rip + L2_VENDOR + 8], ecx
    lea     rsi, [rip + l2_msg]
    mov     ecx, {msg_len}
    mov     dx, 0x3f8
1:  mov     al, [rsi]
    out     dx, al
    inc     rsi
    dec     ecx
    jnz     1b
    mov     rbx, {hole}
    mov     rax, [rbx]
    mov     [rip + L2_HOLE_VALUE], rax
    hlt
    ud2
l2_msg:
    .ascii  "hello from L2\n"
"#,
    hole = const HOLE,
    msg_len = const L2_MSG.len(),
);

extern "C" {
    fn l2_entry();
}

fn pa<T>(g: &Global<T>) -> u64 {
    g.as_ptr() as u64
}

/// Writes entry `i` of the table at `table`.
fn set_entry(table: u64, i: usize, v: u64) {
    // SAFETY: `table` is one of the EPT pages above (identity mapped, owned
    // by this kernel); `i` < 512.
    unsafe { core::ptr::write_volatile((table as *mut u64).add(i), v) };
}

/// Builds the EPT identity map of the first [`EPT_MAP_BYTES`], with the
/// 2 MiB region holding [`HOLE`] split into 4 KiB pages and [`HOLE`] absent.
fn build_ept() -> u64 {
    let (pml4, pdpt, pd, pt) = (pa(&EPT_PML4), pa(&EPT_PDPT), pa(&EPT_PD), pa(&EPT_PT));
    set_entry(pml4, 0, pdpt | ept::RWX);
    set_entry(pdpt, 0, pd | ept::RWX);
    let hole_2m = (HOLE >> 21) as usize;
    for i in 0..(EPT_MAP_BYTES >> 21) as usize {
        if i == hole_2m {
            set_entry(pd, i, pt | ept::RWX);
        } else {
            set_entry(pd, i, (i as u64) << 21 | ept::RWX | ept::MEMTYPE_WB | ept::PAGE_SIZE);
        }
    }
    for j in 0..512usize {
        let gpa = (hole_2m as u64) << 21 | (j as u64) << 12;
        set_entry(pt, j, if gpa == HOLE { 0 } else { gpa | ept::RWX | ept::MEMTYPE_WB });
    }
    vmx::eptp(pml4)
}

/// Maps [`HOLE`] (the EPT-violation handler's fix).
fn map_hole() {
    let j = ((HOLE >> 12) & 511) as usize;
    set_entry(pa(&EPT_PT), j, HOLE | ept::RWX | ept::MEMTYPE_WB);
}

/// Per-exit-reason counters.
#[derive(Default)]
struct Exits {
    cpuid: u32,
    io: u32,
    ept_violation: u32,
    hlt: u32,
    other: u32,
}

fn vmread(f: u64) -> u64 {
    match vmx::vmread(f) {
        Ok(v) => v,
        Err(e) => {
            check!(false, "vmread {:#x}: {:?}", f, e);
            0
        }
    }
}

fn vmwrite(f: u64, v: u64) {
    // SAFETY: a VMCS is current; the fields written describe L2.
    if let Err(e) = unsafe { vmx::vmwrite(f, v) } {
        check!(false, "vmwrite {:#x} = {:#x}: {:?}", f, v, e);
    }
}

fn skip_instruction() {
    let len = vmread(field::VM_EXIT_INSTRUCTION_LENGTH);
    vmwrite(field::GUEST_RIP, vmread(field::GUEST_RIP) + len);
}

fn main(_mb: u32) {
    vmx::install_ud_reporter();
    if !check!(vmx::cpuid_has_vmx(), "CPUID.1:ECX.VMX is set") {
        return;
    }
    // SAFETY: CPUID says VMX exists, so the capability MSRs do.
    let caps = unsafe { Caps::read() };
    println!(
        "VMX basic {:#x} pin {:#x} proc {:#x} proc2 {:#x} exit {:#x} entry {:#x} ept/vpid {:#x}",
        caps.basic,
        caps.pin.allowed1,
        caps.proc.allowed1,
        caps.proc2.allowed1,
        caps.exit.allowed1,
        caps.entry.allowed1,
        caps.ept_vpid
    );
    check!(caps.revision_id() != 0 && caps.region_size() <= 4096, "VMCS revision id and region size");
    let needed = caps.proc.allows(ctl::PROC_HLT_EXITING | ctl::PROC_UNCONDITIONAL_IO_EXITING)
        && caps.proc.allows(ctl::PROC_ACTIVATE_SECONDARY)
        && caps.ept_wb_4level()
        && caps.ept_vpid >> 16 & 1 == 1 // 2 MiB EPT pages
        && caps.exit.allows(ctl::EXIT_HOST_ADDRESS_SPACE_SIZE)
        && caps.entry.allows(ctl::ENTRY_IA32E_MODE_GUEST);
    if !check!(needed, "VMX offers HLT/I/O exiting, EPT (4-level, WB, 2 MiB pages) and 64-bit guests") {
        return;
    }

    // SAFETY: VMX exists; the VMXON region is a page of this image.
    match unsafe { vmx::enable(&caps, pa(&VMXON_REGION)) } {
        Err(msg) => {
            check!(false, "enable VMX: {}", msg);
            return;
        }
        Ok(r) => {
            if !check_eq!(r, Ok(()), "VMXON") {
                return;
            }
        }
    }
    check!(arch::read_cr4() & vmx::CR4_VMXE != 0, "CR4.VMXE set");

    let vmcs = pa(&VMCS);
    // SAFETY: the VMCS page belongs to this kernel.
    unsafe { vmx::init_region(vmcs, caps.revision_id()) };
    // SAFETY: as above; VMX root operation.
    let r = unsafe { vmx::vmclear(vmcs).and_then(|()| vmx::vmptrld(vmcs)) };
    if !check_eq!(r, Ok(()), "VMCLEAR + VMPTRLD of the L2 VMCS") {
        return;
    }
    check_eq!(vmx::vmptrst(), vmcs, "VMPTRST is the L2 VMCS");

    let eptp = build_ept();
    // SAFETY: HOLE is scratch memory, identity mapped in L1.
    unsafe { core::ptr::write_volatile(HOLE as *mut u64, HOLE_MAGIC) };
    let vpid = caps.proc2.allows(ctl::PROC2_ENABLE_VPID) && caps.ept_vpid >> 32 & 1 == 1;
    let proc2 = ctl::PROC2_ENABLE_EPT | if vpid { ctl::PROC2_ENABLE_VPID } else { 0 };
    let proc = ctl::PROC_HLT_EXITING | ctl::PROC_UNCONDITIONAL_IO_EXITING;
    let stack_top = pa(&L2_STACK) + core::mem::size_of::<Stack>() as u64;
    // SAFETY: the current VMCS is the L2 VMCS; the state written is L1's own
    // (host) and a 64-bit L2 on L1's tables (guest).
    let setup = unsafe {
        vmx::write_controls(&caps, 0, proc, proc2, true).and_then(|load_efer| {
            vmx::write_host_state(load_efer)?;
            vmx::write_guest_state_64(l2_entry as *const () as u64, stack_top, load_efer)?;
            vmx::vmwrite(field::EPT_POINTER, eptp)?;
            if vpid {
                vmx::vmwrite(field::VPID, L2_VPID as u64)?;
            }
            Ok(())
        })
    };
    if !check_eq!(setup, Ok(()), "L2 VMCS written") {
        return;
    }
    if vpid {
        // SAFETY: drops any stale translations of VPID 1 before first use.
        let r = unsafe { vmx::invvpid(vmx::invvpid_type::SINGLE_CONTEXT, L2_VPID, 0) };
        check_eq!(r, Ok(()), "INVVPID single-context for L2's VPID");
    }

    let mut regs = GuestRegs::default();
    let mut exits = Exits::default();
    let mut launched = false;
    let mut line_start = true;
    loop {
        // SAFETY: the current VMCS holds a complete host state (L1's).
        let r = unsafe { vmx::enter(&mut regs, launched) };
        if let Err(e) = r {
            check!(false, "{}: {:?}", if launched { "VMRESUME" } else { "VMLAUNCH" }, e);
            break;
        }
        launched = true;
        let reason = vmread(field::EXIT_REASON) as u32;
        let qual = vmread(field::EXIT_QUALIFICATION);
        if reason & exit_reason::ENTRY_FAILURE != 0 {
            check!(false, "VM entry failed: exit reason {:#x} qualification {:#x}", reason, qual);
            break;
        }
        match reason & 0xffff {
            exit_reason::CPUID => {
                exits.cpuid += 1;
                let c = arch::cpuid(regs.rax as u32, regs.rcx as u32);
                regs.rax = c.eax as u64;
                regs.rbx = c.ebx as u64;
                regs.rcx = c.ecx as u64;
                regs.rdx = c.edx as u64;
                skip_instruction();
            }
            exit_reason::IO_INSTRUCTION => {
                exits.io += 1;
                // Exit qualification (SDM Vol. 3C, Table 28-5): size - 1 in
                // bits 2:0, IN in bit 3, string 4, REP 5, immediate 6, port
                // in 31:16.
                let size = (qual & 7) + 1;
                let is_in = qual >> 3 & 1 == 1;
                let string = qual >> 4 & 1 == 1;
                let port = (qual >> 16) as u16;
                if string {
                    check!(false, "L2 string I/O to port {:#x} is not emulated", port);
                    break;
                }
                match (port, is_in) {
                    (0x3f8, false) => {
                        let b = regs.rax as u8;
                        if line_start {
                            print!("L2> ");
                        }
                        print!("{}", b as char);
                        line_start = b == b'\n';
                    }
                    // The line status register of L2's UART: always ready.
                    (0x3fd, true) => regs.rax = regs.rax & !0xff | 0x60,
                    // Nothing else is there: reads float high. A 4-byte IN
                    // zero-extends into RAX; 1 and 2 bytes merge into it.
                    (_, true) if size == 4 => regs.rax = 0xffff_ffff,
                    (_, true) => regs.rax |= (1u64 << (8 * size)) - 1,
                    (_, false) => {}
                }
                skip_instruction();
            }
            exit_reason::EPT_VIOLATION => {
                exits.ept_violation += 1;
                let gpa = vmread(field::GUEST_PHYSICAL_ADDRESS);
                let gla = vmread(field::GUEST_LINEAR_ADDRESS);
                // Qualification (SDM Vol. 3C, Table 28-7): bit 0 read,
                // bits 5:3 the entry's R/W/X (0: not present), bit 7 linear
                // address valid, bit 8 the access was to the translated
                // address (not a paging-structure entry).
                let ok = check!(
                    gpa == HOLE && gla == HOLE && qual & 0x3f == 1 && qual >> 7 & 3 == 3,
                    "EPT violation: read of the unmapped page (gpa {:#x} gla {:#x} qualification {:#x})",
                    gpa,
                    gla,
                    qual
                );
                if !ok || exits.ept_violation > 1 {
                    break;
                }
                map_hole();
                // SAFETY: drops cached translations for L2's EPTP (not
                // required for a not-present -> present change, SDM Vol.
                // 3C, 29.4.3.1, but what a hypervisor does).
                let r = unsafe {
                    if caps.ept_vpid >> 25 & 1 == 1 {
                        vmx::invept(vmx::invept_type::SINGLE_CONTEXT, eptp)
                    } else {
                        vmx::invept(vmx::invept_type::ALL_CONTEXT, 0)
                    }
                };
                check_eq!(r, Ok::<(), VmFail>(()), "INVEPT after mapping the page");
            }
            exit_reason::HLT => {
                exits.hlt += 1;
                break;
            }
            exit_reason::EXCEPTION_OR_NMI => {
                exits.other += 1;
                let info = vmread(field::VM_EXIT_INTERRUPTION_INFO);
                check!(
                    false,
                    "L2 exception: interruption info {:#x} error {:#x} at rip {:#x} qualification {:#x}",
                    info,
                    vmread(field::VM_EXIT_INTERRUPTION_ERROR_CODE),
                    vmread(field::GUEST_RIP),
                    qual
                );
                break;
            }
            r => {
                exits.other += 1;
                check!(false, "unexpected L2 exit reason {} qualification {:#x} at rip {:#x}", r, qual, vmread(field::GUEST_RIP));
                break;
            }
        }
    }

    println!(
        "L1 exits: cpuid {}, io {}, ept_violation {}, hlt {}",
        exits.cpuid, exits.io, exits.ept_violation, exits.hlt
    );
    check_eq!(exits.cpuid, 1, "one CPUID exit");
    check_eq!(exits.io, L2_MSG.len() as u32, "one I/O exit per byte of L2's message");
    check_eq!(exits.ept_violation, 1, "one EPT violation");
    check_eq!(exits.hlt, 1, "one HLT exit");
    check_eq!(exits.other, 0, "no other exits");
    let v = arch::cpuid(0, 0);
    // SAFETY: L2 is not running; it wrote these before its HLT.
    let (l2v, hole) = unsafe { (core::ptr::read_volatile(&raw const L2_VENDOR), core::ptr::read_volatile(&raw const L2_HOLE_VALUE)) };
    check_eq!(l2v, [v.ebx, v.edx, v.ecx], "L2's CPUID vendor is L1's");
    check_eq!(hole, HOLE_MAGIC, "L2 read the page L1 mapped on the EPT violation");

    // SAFETY: leaves VMX operation; the VMCS is flushed first.
    unsafe {
        check_eq!(vmx::vmclear(vmcs), Ok(()), "VMCLEAR at the end");
        check_eq!(vmx::vmxoff(), Ok(()), "VMXOFF");
        arch::write_cr4(arch::read_cr4() & !vmx::CR4_VMXE);
    }
}
