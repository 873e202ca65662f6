//! `demo`: boots to long mode and prints what it finds: CPUID vendor, brand
//! and feature summary, multiboot memory fields and map, command line,
//! CPU count from fw_cfg, and the paging mode. Checks only what must hold
//! for any correct loader and CPU.
#![no_std]
#![no_main]

use rt::arch::{self, feature, msr};
use rt::multiboot::{self, Info};
use rt::{check, check_eq, println};

rt::entry!("demo", main);

fn main(mb_info: u32) {
    check_eq!(rt::boot::multiboot_magic(), multiboot::BOOTLOADER_MAGIC, "multiboot magic");

    // CPUID: vendor (leaf 0: EBX, EDX, ECX) and brand string (0x80000002..4).
    let l0 = arch::cpuid(0, 0);
    let mut vendor = [0u8; 12];
    vendor[0..4].copy_from_slice(&l0.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&l0.edx.to_le_bytes());
    vendor[8..12].copy_from_slice(&l0.ecx.to_le_bytes());
    let vendor = core::str::from_utf8(&vendor).unwrap_or("?");
    println!("cpu vendor: {} (max leaf {:#x})", vendor, l0.eax);
    let mut brand = [0u8; 48];
    if arch::cpuid_has_leaf(0x8000_0004) {
        for i in 0..3 {
            let r = arch::cpuid(0x8000_0002 + i, 0);
            for (j, w) in [r.eax, r.ebx, r.ecx, r.edx].iter().enumerate() {
                let o = i as usize * 16 + j * 4;
                brand[o..o + 4].copy_from_slice(&w.to_le_bytes());
            }
        }
    }
    let n = brand.iter().position(|&b| b == 0).unwrap_or(48);
    println!("cpu brand: {}", core::str::from_utf8(&brand[..n]).unwrap_or("?").trim());
    let l1 = arch::cpuid(1, 0);
    println!(
        "cpu family/model/stepping: {:#x}/{:#x}/{:#x}",
        (l1.eax >> 8 & 0xf) + (l1.eax >> 20 & 0xff),
        (l1.eax >> 4 & 0xf) | (l1.eax >> 16 & 0xf) << 4,
        l1.eax & 0xf
    );
    print_features();
    check!(l0.eax >= 1, "cpuid max basic leaf >= 1");
    check!(arch::has(feature::LM), "cpuid long mode bit");

    // Multiboot information.
    let info = Info::at(mb_info);
    check!(info.is_some(), "multiboot info pointer");
    if let Some(info) = info {
        println!("multiboot flags: {:#x}", info.flags);
        println!("loader: {}", info.loader_name());
        if info.has(multiboot::flags::MEM) {
            println!("mem_lower: {} KiB, mem_upper: {} KiB", info.mem_lower, info.mem_upper);
        }
        check!(info.has(multiboot::flags::MEM) && info.mem_upper >= 15 * 1024, "mem_upper >= 15 MiB");
        let mut avail = 0u64;
        let mut entries = 0;
        info.for_each_mmap(|e| {
            println!("mmap: {:#014x}-{:#014x} type {}", e.base, e.base + e.len, e.typ);
            entries += 1;
            if e.typ == 1 {
                avail += e.len;
            }
        });
        println!("available RAM: {} MiB in {} map entries", avail >> 20, entries);
        check!(entries > 0 && avail > 15 << 20, "memory map lists RAM");
        println!("cmdline: \"{}\"", info.cmdline());
    }
    let (start, end) = rt::boot::image_range();
    println!("image: {:#x}-{:#x}", start, end);
    check_eq!(start, 0x100000u64, "image loaded at 1 MiB");

    // CPUs.
    match rt::fwcfg::cpu_count() {
        Some(n) => {
            println!("cpus (fw_cfg): {}", n);
            check!(n >= 1, "fw_cfg cpu count >= 1");
        }
        None => println!("cpus: fw_cfg absent"),
    }
    println!("bsp apic id: {}", arch::cpuid(1, 0).ebx >> 24);

    // Paging mode.
    let (cr0, cr3, cr4) = (arch::read_cr0(), arch::read_cr3(), arch::read_cr4());
    // SAFETY: EFER exists on every long-mode CPU.
    let efer = unsafe { arch::rdmsr(msr::EFER) };
    let mode = if efer & msr::EFER_LMA == 0 {
        "not long mode"
    } else if cr4 & arch::cr4::LA57 != 0 {
        "5-level"
    } else {
        "4-level"
    };
    println!(
        "cr0 {:#x} cr3 {:#x} cr4 {:#x} efer {:#x}: {} paging, NX {}",
        cr0,
        cr3,
        cr4,
        efer,
        mode,
        if efer & msr::EFER_NXE != 0 { "on" } else { "off" }
    );
    check!(efer & msr::EFER_LMA != 0, "long mode active");
    check!(cr0 & arch::cr0::PG != 0 && cr4 & arch::cr4::PAE != 0, "paging with PAE");
    check_eq!(rt::read_seg!(cs), rt::gdt::KCODE64, "cs is the 64-bit kernel code segment");
    check_eq!(cr3, rt::boot::pml4(), "cr3 is the boot PML4");
}

fn print_features() {
    use feature::*;
    let list = [
        ("fpu", FPU),
        ("tsc", TSC),
        ("msr", MSR),
        ("pae", PAE),
        ("apic", APIC),
        ("sep", SEP),
        ("pge", PGE),
        ("pat", PAT),
        ("pse", PSE),
        ("fxsr", FXSR),
        ("sse", SSE),
        ("sse2", SSE2),
        ("sse3", SSE3),
        ("pcid", PCID),
        ("x2apic", X2APIC),
        ("tsc-deadline", TSC_DEADLINE),
        ("xsave", XSAVE),
        ("avx", AVX),
        ("fsgsbase", FSGSBASE),
        ("smep", SMEP),
        ("smap", SMAP),
        ("umip", UMIP),
        ("pku", PKU),
        ("la57", LA57),
        ("syscall", SYSCALL),
        ("nx", NX),
        ("1g-pages", PAGE1GB),
        ("rdtscp", RDTSCP),
        ("lm", LM),
    ];
    rt::print!("cpu features:");
    for (name, f) in list {
        if arch::has(f) {
            rt::print!(" {}", name);
        }
    }
    println!();
    println!("physical address bits: {}", arch::maxphyaddr());
}
