//! Nested benchmark: a minimal guest hypervisor (L1) that runs one loop in
//! its guest (L2) and handles L2's exits, for `turtles bench l2-cpuid` and
//! `turtles bench l2-alu`.
//!
//! Command line: `wl=cpuid|alu` and `iters=N`. `cpuid`: L2 executes CPUID
//! leaf 0 N times (5 instructions per iteration) and L1 answers each exit
//! from the values it read once, as a hypervisor answers from its CPUID
//! table; the cost per iteration is one L2 exit handled by L1, everything
//! L0 does on the way included. `alu`: L2 runs the ALU loop of the `bench`
//! kernel (10 instructions per iteration) with no exit at all, to compare
//! with the same loop run by L1 (`turtles bench alu`). L2 has no EPT: its
//! guest-physical addresses are L1's. Prints the same `BENCH` line as the
//! `bench` kernel.
#![no_std]
#![no_main]

use core::arch::global_asm;
use rt::multiboot::{self, Info};
use rt::sync::Global;
use rt::vmx::{self, ctl, exit_reason, field, Caps, GuestRegs, Page};
use rt::{arch, check, check_eq, println};

rt::entry!("bench-l2", main);

static VMXON_REGION: Global<Page> = Global::new(Page::zeroed());
static VMCS: Global<Page> = Global::new(Page::zeroed());

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static L2_STACK: Global<Stack> = Global::new(Stack([0; 16384]));

// L2's loops. CPUID: R15 iterations, R13 accumulates EBX. ALU: the
// `bench` kernel's loop, RCX iterations, the checksum in RAX.
global_asm!(
    r#"
    .section .text.l2, "ax"
    .globl l2_cpuid
l2_cpuid:
    xor     r13d, r13d
2:  xor     eax, eax
    cpuid
    add     r13, rbx
    dec     r15
    jnz     2b
    hlt
    .globl l2_alu
l2_alu:
    xor     eax, eax
    mov     ebx, 1
    mov     edx, 2
    mov     esi, 3
    mov     edi, 4
    mov     r8d, 5
    mov     r9d, 6
    mov     r10d, 7
    .p2align 4
3:  add     rax, rbx
    xor     rdx, rax
    add     rbx, 7
    sub     rsi, rdx
    or      rdi, rcx
    xor     r8, rsi
    add     r9, r8
    and     r10, r9
    dec     rcx
    jnz     3b
    xor     rax, rdx
    xor     rax, rdi
    xor     rax, r9
    xor     rax, r10
    hlt
"#
);

extern "C" {
    fn l2_cpuid();
    fn l2_alu();
}

fn pa<T>(g: &Global<T>) -> u64 {
    g.as_ptr() as u64
}

fn vmread(f: u64) -> u64 {
    vmx::vmread(f).unwrap_or(0)
}

fn main(mb: u32) {
    let cmdline = Info::at(mb).map_or("", |i| i.cmdline());
    let wl = multiboot::arg(cmdline, "wl").unwrap_or("cpuid");
    let default_iters = if wl == "alu" { 100_000_000 } else { 1_000_000 };
    let n = multiboot::arg(cmdline, "iters").and_then(multiboot::parse_u64).unwrap_or(default_iters);
    let (entry, ipi) = match wl {
        "cpuid" => (l2_cpuid as *const () as u64, 5),
        "alu" => (l2_alu as *const () as u64, 10),
        _ => {
            check!(false, "unknown workload {}", wl);
            return;
        }
    };
    vmx::install_ud_reporter();
    if !check!(vmx::cpuid_has_vmx(), "CPUID.1:ECX.VMX is set") {
        return;
    }
    // SAFETY: CPUID says VMX exists, so the capability MSRs do.
    let caps: Caps = unsafe { Caps::read() };
    // SAFETY: VMX exists; the VMXON region is a page of this image.
    if !check!(matches!(unsafe { vmx::enable(&caps, pa(&VMXON_REGION)) }, Ok(Ok(()))), "VMXON") {
        return;
    }
    let vmcs = pa(&VMCS);
    let stack_top = pa(&L2_STACK) + core::mem::size_of::<Stack>() as u64;
    // SAFETY: VMX root operation; the VMCS page is this kernel's, the state
    // written is L1's own (host) and a 64-bit L2 on L1's page tables.
    let setup = unsafe {
        vmx::init_region(vmcs, caps.revision_id());
        vmx::vmclear(vmcs).and_then(|()| vmx::vmptrld(vmcs)).and_then(|()| {
            let load_efer = vmx::write_controls(&caps, 0, ctl::PROC_HLT_EXITING, 0, true)?;
            vmx::write_host_state(load_efer)?;
            vmx::write_guest_state_64(entry, stack_top, load_efer)
        })
    };
    if !check_eq!(setup, Ok(()), "L2 VMCS written") {
        return;
    }
    let leaf0 = arch::cpuid(0, 0);
    let mut regs = GuestRegs { rcx: n, r15: n, ..GuestRegs::default() };
    let start = arch::rdtsc();
    let mut launched = false;
    let mut cpuid_exits = 0u64;
    loop {
        // SAFETY: the current VMCS holds a complete host state (L1's).
        if let Err(e) = unsafe { vmx::enter(&mut regs, launched) } {
            check!(false, "VM entry: {:?}", e);
            return;
        }
        launched = true;
        match vmread(field::EXIT_REASON) as u32 & 0xffff {
            exit_reason::CPUID => {
                cpuid_exits += 1;
                (regs.rax, regs.rbx, regs.rcx, regs.rdx) =
                    (leaf0.eax.into(), leaf0.ebx.into(), leaf0.ecx.into(), leaf0.edx.into());
                let next = vmread(field::GUEST_RIP) + vmread(field::VM_EXIT_INSTRUCTION_LENGTH);
                // SAFETY: moves L2 past its CPUID.
                unsafe {
                    let _ = vmx::vmwrite(field::GUEST_RIP, next);
                }
            }
            exit_reason::HLT => break,
            r => {
                check!(false, "unexpected L2 exit {} at {:#x}", r, vmread(field::GUEST_RIP));
                return;
            }
        }
    }
    let dt = arch::rdtsc() - start;
    let sum = if wl == "cpuid" { regs.r13 } else { regs.rax };
    if wl == "cpuid" {
        check_eq!(cpuid_exits, n, "one CPUID exit per iteration");
        check_eq!(sum, n.wrapping_mul(u64::from(leaf0.ebx)), "L2 saw L1's answers");
    }
    println!("BENCH wl=l2-{} iters={} ipi={} tsc={} sum={:#018x}", wl, n, ipi, dt, sum);
    // SAFETY: leaves VMX operation.
    unsafe {
        let _ = vmx::vmclear(vmcs);
        let _ = vmx::vmxoff();
    }
}
