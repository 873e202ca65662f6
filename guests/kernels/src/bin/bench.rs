//! `bench`: the reference benchmark workloads of shared/bench/guests/bench.S,
//! with the same loops (same instructions, registers and 16-byte loop
//! alignment, written with asm!) and the same output line:
//!
//! ```text
//! BENCH wl=<name> iters=<n> ipi=<instructions per iteration> tsc=<rdtsc delta> sum=<0x + 16 hex digits>
//! ```
//!
//! Command line: `wl=boot|alu|mem|mem4k|cpuid|pio|all` (default `all`) and
//! `iters=N` (default: bench.S's count per workload; `all` uses 1/2000 of
//! each). Sums are checked against bench.S's results for the default counts
//! and against Rust models of the loops (alu, cpuid, pio) or each other
//! (mem = mem4k) otherwise. Workloads: alu 10 insns/iter, mem/mem4k 9 (a
//! load/add/store striding 4160 B over 64 MiB at 16 MiB; mem4k first remaps
//! the low 128 MiB with 4 KiB pages), cpuid 5 (leaf 0), pio 3 (`out
//! %al,$0x80`). Needs at least 81 MiB of RAM.
#![no_std]
#![no_main]

use core::arch::asm;
use rt::arch;
use rt::multiboot::{self, Info};
use rt::{check, check_eq, println, skip};

rt::entry!("bench", main);

const MEM_BASE: u64 = 0x0100_0000;
const MEM_SIZE: u64 = 0x0400_0000;
const MEM_STRIDE: u64 = 4160;
/// 4 KiB page tables for mem4k: 64 tables x 2 MiB = 128 MiB, placed right
/// after the buffer.
const PT_BASE: u64 = MEM_BASE + MEM_SIZE;

struct Workload {
    name: &'static str,
    ipi: u64,
    default_iters: u64,
    /// bench.S's sum for `default_iters` (None: computed at run time).
    reference: Option<u64>,
}

const WORKLOADS: [Workload; 6] = [
    Workload { name: "boot", ipi: 0, default_iters: 0, reference: Some(0) },
    Workload { name: "alu", ipi: 10, default_iters: 100_000_000, reference: Some(0x0482_ca3e_0e83_7fbb) },
    Workload { name: "mem", ipi: 9, default_iters: 20_000_000, reference: Some(0x0000_02f1_7e3e_d588) },
    Workload { name: "mem4k", ipi: 9, default_iters: 20_000_000, reference: Some(0x0000_02f1_7e3e_d588) },
    Workload { name: "cpuid", ipi: 5, default_iters: 1_000_000, reference: None },
    Workload { name: "pio", ipi: 3, default_iters: 1_000_000, reference: None },
];

fn main(mb: u32) {
    let cmdline = Info::at(mb).map_or("", |i| i.cmdline());
    let wl = multiboot::arg(cmdline, "wl").unwrap_or("all");
    let iters = multiboot::arg(cmdline, "iters").and_then(multiboot::parse_u64);
    let mut mem_sums = [None, None];
    let mut ran = 0;
    let mut dirty = false;
    for w in &WORKLOADS {
        if wl != "all" && wl != w.name {
            continue;
        }
        ran += 1;
        let n = iters.unwrap_or(if wl == "all" { w.default_iters / 2000 } else { w.default_iters });
        let sum = run(w, n, dirty);
        dirty |= w.name.starts_with("mem");
        // Expected sum: bench.S's figure for the default count, else a model.
        let expected = match w.name {
            "cpuid" => Some(n.wrapping_mul(arch::cpuid(0, 0).ebx as u64)),
            "pio" => Some(n),
            "boot" => Some(0),
            _ if n == w.default_iters => w.reference,
            "alu" => Some(alu_model(n)),
            // Without wrap-around each slot is hit once, by n, n-1, ..., 1.
            "mem" | "mem4k" if n * MEM_STRIDE <= MEM_SIZE => Some(n * (n + 1) / 2),
            _ => None,
        };
        match expected {
            Some(e) => {
                check_eq!(sum, e, "{}: sum for {} iterations", w.name, n);
            }
            None => skip!("no reference sum for this count", "{}: sum for {} iterations", w.name, n),
        }
        if w.name == "mem" {
            mem_sums[0] = Some(sum);
        }
        if w.name == "mem4k" {
            mem_sums[1] = Some(sum);
        }
    }
    check!(ran > 0, "workload \"{}\" exists", wl);
    if let [Some(a), Some(b)] = mem_sums {
        check_eq!(a, b, "mem and mem4k sums agree");
    }
}

fn run(w: &Workload, n: u64, dirty: bool) -> u64 {
    if w.name == "mem4k" {
        remap_low_128m_4k();
    }
    // mem/mem4k accumulate into the buffer, which is zero in a fresh VM
    // (as bench.S assumes); clear it only after an earlier mem run.
    if dirty && w.name.starts_with("mem") {
        // SAFETY: the buffer is scratch RAM owned by this kernel.
        unsafe { core::ptr::write_bytes(MEM_BASE as *mut u8, 0, MEM_SIZE as usize) };
    }
    let t0 = arch::rdtsc();
    let sum = match w.name {
        "alu" => alu(n),
        "mem" | "mem4k" => mem(n),
        "cpuid" => cpuid(n),
        "pio" => pio(n),
        _ => 0,
    };
    let dt = arch::rdtsc() - t0;
    println!("BENCH wl={} iters={} ipi={} tsc={} sum={:#018x}", w.name, n, w.ipi, dt, sum);
    sum
}

fn alu(n: u64) -> u64 {
    let sum: u64;
    // SAFETY: register-only loop; RBX is saved and restored by hand (LLVM
    // reserves it).
    unsafe {
        asm!(
            "push rbx",
            "xor eax, eax",
            "mov ebx, 1",
            "mov edx, 2",
            "mov esi, 3",
            "mov edi, 4",
            "mov r8d, 5",
            "mov r9d, 6",
            "mov r10d, 7",
            ".p2align 4",
            "2:",
            "add rax, rbx",
            "xor rdx, rax",
            "add rbx, 7",
            "sub rsi, rdx",
            "or rdi, rcx",
            "xor r8, rsi",
            "add r9, r8",
            "and r10, r9",
            "dec rcx",
            "jnz 2b",
            "xor rax, rdx",
            "xor rax, rdi",
            "xor rax, r9",
            "xor rax, r10",
            "pop rbx",
            inout("rcx") n => _, out("rax") sum, out("rdx") _, out("rsi") _, out("rdi") _,
            out("r8") _, out("r9") _, out("r10") _,
        )
    };
    sum
}

/// The alu loop in Rust (wrapping arithmetic), for non-default counts.
fn alu_model(n: u64) -> u64 {
    let (mut rax, mut rbx, mut rcx, mut rdx) = (0u64, 1u64, n, 2u64);
    let (mut rsi, mut rdi, mut r8, mut r9, mut r10) = (3u64, 4u64, 5u64, 6u64, 7u64);
    while rcx != 0 {
        rax = rax.wrapping_add(rbx);
        rdx ^= rax;
        rbx = rbx.wrapping_add(7);
        rsi = rsi.wrapping_sub(rdx);
        rdi |= rcx;
        r8 ^= rsi;
        r9 = r9.wrapping_add(r8);
        r10 &= r9;
        rcx -= 1;
    }
    rax ^ rdx ^ rdi ^ r9 ^ r10
}

fn mem(n: u64) -> u64 {
    let sum: u64;
    // SAFETY: reads and writes the 64 MiB scratch buffer at 16 MiB.
    unsafe {
        asm!(
            "mov esi, {base}",
            "mov r9d, {end}",
            "xor eax, eax",
            ".p2align 4",
            "2:",
            "mov rax, [rsi]",
            "add rax, rcx",
            "mov [rsi], rax",
            "add rsi, {stride}",
            "lea rdx, [rsi - {size}]",
            "cmp rsi, r9",
            "cmovae rsi, rdx",
            "dec rcx",
            "jnz 2b",
            "mov esi, {base}",
            "xor eax, eax",
            "3:",
            "add rax, [rsi]",
            "add rsi, {stride}",
            "cmp rsi, r9",
            "jb 3b",
            base = const MEM_BASE,
            end = const MEM_BASE + MEM_SIZE,
            stride = const MEM_STRIDE,
            size = const MEM_SIZE,
            inout("rcx") n => _, out("rax") sum, out("rdx") _, out("rsi") _, out("r9") _,
        )
    };
    sum
}

fn cpuid(n: u64) -> u64 {
    let sum: u64;
    // SAFETY: CPUID loop; RBX saved by hand.
    unsafe {
        asm!(
            "push rbx",
            "xor r13d, r13d",
            ".p2align 4",
            "2:",
            "xor eax, eax",
            "cpuid",
            "add r13, rbx",
            "dec r12",
            "jnz 2b",
            "mov rax, r13",
            "pop rbx",
            inout("r12") n => _, out("rax") sum, out("rcx") _, out("rdx") _, out("r13") _,
        )
    };
    sum
}

fn pio(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    // SAFETY: port 0x80 is the POST port; writes are harmless.
    unsafe {
        asm!(
            "xor eax, eax",
            ".p2align 4",
            "2:",
            "out 0x80, al",
            "dec rcx",
            "jnz 2b",
            inout("rcx") n => _, out("rax") _,
        )
    };
    n
}

/// Maps the first 128 MiB with 4 KiB pages (64 page tables after the
/// buffer), like bench.S built with -DPAGES4K.
fn remap_low_128m_4k() {
    for t in 0..64u64 {
        let pt = PT_BASE + t * 4096;
        for i in 0..512u64 {
            let pa = (t * 512 + i) * 4096;
            // SAFETY: page-table frames in scratch RAM owned by this kernel.
            unsafe { core::ptr::write_volatile((pt + 8 * i) as *mut u64, pa | 3) };
        }
        // SAFETY: PD entry t of the boot map now points at the table that
        // maps the same 2 MiB identically.
        unsafe { core::ptr::write_volatile((rt::boot::pd() + 8 * t) as *mut u64, pt | 3) };
    }
    arch::flush_tlb();
}
