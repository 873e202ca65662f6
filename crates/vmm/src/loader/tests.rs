//! Loader tests: every format, the information structure, the entry state,
//! and hostile files (truncated, random, misplaced).

use super::elf::build::elf;
use super::*;
use cpu::{CpuidModel, Mode};
use multiboot::{FLAG_AOUT_KLUDGE, HEADER_MAGIC};

const RAM: u64 = 16 << 20;

fn mb_header(flags: u32, addrs: Option<[u32; 5]>) -> Vec<u8> {
    let mut h = Vec::new();
    for v in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags))] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    for v in addrs.unwrap_or_default() {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

/// Code with a multiboot header (flags 2) at its start, as linked at 1 MiB.
fn mb_text() -> Vec<u8> {
    let mut t = mb_header(2, None);
    t.extend_from_slice(&[0xf4; 20]); // hlt
    t
}

fn params<'a>(kernel: &'a [u8], modules: &'a [ModuleImage<'a>]) -> BootParams<'a> {
    BootParams { kernel, kernel_name: "/k.elf", append: "console=ttyS0 x=1", modules }
}

fn load_in(ram: u64, kernel: &[u8], modules: &[ModuleImage<'_>]) -> (Memory, Result<BootState, LoadError>) {
    let mut mem = Memory::new(ram).unwrap();
    let r = load(&mut mem, &params(kernel, modules));
    (mem, r)
}

fn cstr(mem: &Memory, addr: u64) -> String {
    let mut out = Vec::new();
    let mut b = [0u8];
    for a in addr.. {
        mem.read(a, &mut b).unwrap();
        if b[0] == 0 {
            break;
        }
        out.push(b[0]);
    }
    String::from_utf8(out).unwrap()
}

fn u32_at(mem: &Memory, addr: u64) -> u32 {
    mem.read_u32(addr).unwrap()
}

#[test]
fn multiboot_elf32_by_program_headers() {
    let k = elf(false, elf::EM_386, 0x10_000c, &[(0x10_0000, &mb_text(), 0x3000), (0x20_0000, b"data", 4)]);
    let (mem, r) = load_in(RAM, &k, &[]);
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::MultibootElf32);
    assert_eq!(b.entry, Gva(0x10_000c));
    assert_eq!(b.image, Gpa(0x10_0000)..Gpa(0x20_0004));
    let mut buf = [0u8; 4];
    mem.read(0x20_0000, &mut buf).unwrap();
    assert_eq!(&buf, b"data");
    assert_eq!(u32_at(&mem, 0x10_0000), HEADER_MAGIC);
}

#[test]
fn multiboot_elf64_uses_low_32_bits_of_entry() {
    let k = elf(true, elf::EM_X86_64, 0xffff_ffff_0010_0010, &[(0x10_0000, &mb_text(), 0x1000)]);
    let (_, r) = load_in(RAM, &k, &[]);
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::MultibootElf64);
    assert_eq!(b.entry, Gva(0x10_0010));
}

#[test]
fn multiboot_elf_with_wrong_machine_is_rejected() {
    let k = elf(false, elf::EM_X86_64, 0x10_000c, &[(0x10_0000, &mb_text(), 0x1000)]);
    assert_eq!(load_in(RAM, &k, &[]).1, Err(LoadError::BadElfMachine(62)));
}

#[test]
fn aout_kludge_loads_from_header_offset_and_clears_bss() {
    // File: 0x20 bytes of junk, then the header at 0x20 describing a load
    // from file offset 0x10 (header_addr - load_addr = 0x10).
    let mut f = vec![0xeeu8; 0x20];
    f.extend_from_slice(&mb_header(FLAG_AOUT_KLUDGE, Some([0x20_0010, 0x20_0000, 0x20_0100, 0x20_4000, 0x20_0030])));
    f.resize(0x200, 0x90);
    let (mem, r) = load_in(RAM, &f, &[]);
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::MultibootAout);
    assert_eq!(b.entry, Gva(0x20_0030));
    assert_eq!(b.image, Gpa(0x20_0000)..Gpa(0x20_4000));
    assert_eq!(u32_at(&mem, 0x20_0000), 0xeeee_eeee, "file offset 0x10 lands at load_addr");
    assert_eq!(u32_at(&mem, 0x20_0010), HEADER_MAGIC);
    assert_eq!(u32_at(&mem, 0x20_00fc), 0x9090_9090);
    assert_eq!(u32_at(&mem, 0x20_0100), 0, "load_end_addr honoured");
}

#[test]
fn plain_elf64_enters_long_mode_with_identity_map() {
    let k = elf(true, elf::EM_X86_64, 0x20_0000, &[(0x20_0000, &[0xf4; 8], 0x1000)]);
    let (mem, r) = load_in(RAM, &k, &[]);
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::Elf64);
    let mut cpu = Cpu::new(0, CpuidModel::turtles_max());
    b.apply(&mut cpu);
    assert_eq!(cpu.mode(), Mode::Long);
    assert_eq!(cpu.regs.rip, 0x20_0000);
    assert_eq!(cpu.regs.gpr[4], layout::STACK_TOP);
    assert_eq!(cpu.regs.gpr[7], layout::MB_INFO);
    assert_eq!(cpu.regs.cr3, layout::PML4);
    assert_ne!(cpu.regs.efer & Efer::NXE.bits(), 0);
    assert_eq!(mem.read_u64(layout::PML4).unwrap(), layout::PDPT | 3);
    assert_eq!(mem.read_u64(layout::PDPT + 3 * 8).unwrap(), (layout::PD + 0x3000) | 3);
    // Last 2 MiB page below 4 GiB.
    assert_eq!(mem.read_u64(layout::PD + 0x3ff8).unwrap(), 0xffe0_0000 | 0x83);
    // The boot area is reserved in the memory map.
    let mmap = u32_at(&mem, layout::MB_INFO + 48) as u64;
    let entry = |i: u64| {
        (
            mem.read_u64(mmap + i * 24 + 4).unwrap(),
            mem.read_u64(mmap + i * 24 + 12).unwrap(),
            u32_at(&mem, mmap + i * 24 + 20),
        )
    };
    assert_eq!(entry(1), (layout::BOOT_AREA_START, layout::BOOT_AREA_END - layout::BOOT_AREA_START, 2));
    // The stack and the code run: HLT at the entry.
    let mut mem = mem;
    let exit = cpu.run(&mut mem, &mut cpu::NullBus::default(), 100);
    assert_eq!(exit, cpu::RunExit::Halted);
}

#[test]
fn multiboot_entry_state_and_info_structure() {
    let k = elf(false, elf::EM_386, 0x10_000c, &[(0x10_0000, &mb_text(), 0x1800)]);
    let initrd = vec![0xabu8; 5000];
    let second = b"second".to_vec();
    let mods = [
        ModuleImage { data: &initrd, cmdline: "/boot/initrd arg=1".into() },
        ModuleImage { data: &second, cmdline: "/m2".into() },
    ];
    let (mem, r) = load_in(RAM, &k, &mods);
    let b = r.unwrap();
    let mut cpu = Cpu::new(0, CpuidModel::turtles_max());
    b.apply(&mut cpu);
    assert_eq!(cpu.mode(), Mode::Protected);
    let regs = &cpu.regs;
    assert_eq!(regs.gpr[0], 0x2BAD_B002);
    assert_eq!(regs.gpr[3], layout::MB_INFO);
    assert_eq!(regs.rip, 0x10_000c);
    assert_eq!(regs.rflags() & (1 << 9), 0, "IF = 0");
    assert_eq!(regs.cr0 & Cr0::PG.bits(), 0);
    assert_eq!(regs.seg[sreg::CS].selector, layout::gdt::CODE32);
    assert_eq!(regs.seg[sreg::CS].limit, 0xffff_ffff);
    assert_eq!(regs.seg[sreg::SS].selector, layout::gdt::DATA);

    let info = layout::MB_INFO;
    assert_eq!(u32_at(&mem, info), 0x24d, "flags: mem, cmdline, mods, mmap, loader name");
    assert_eq!(u32_at(&mem, info + 4), 639);
    assert_eq!(u32_at(&mem, info + 8), (RAM as u32 - 0x10_0000) / 1024);
    assert_eq!(cstr(&mem, u32_at(&mem, info + 16).into()), "/k.elf console=ttyS0 x=1");
    assert_eq!(u32_at(&mem, info + 20), 2);
    let mods_addr = u64::from(u32_at(&mem, info + 24));
    let (start, end) = (u32_at(&mem, mods_addr), u32_at(&mem, mods_addr + 4));
    assert_eq!((start, end), (0x10_2000, 0x10_2000 + 5000), "page aligned after the image");
    assert_eq!(cstr(&mem, u32_at(&mem, mods_addr + 8).into()), "/boot/initrd arg=1");
    assert_eq!(u32_at(&mem, mods_addr + 16), 0x10_4000);
    assert_eq!(cstr(&mem, u32_at(&mem, mods_addr + 24).into()), "/m2");
    let mut buf = [0u8; 6];
    mem.read(0x10_4000, &mut buf).unwrap();
    assert_eq!(&buf, b"second");
    assert_eq!(b.modules, vec![Gpa(0x10_2000)..Gpa(0x10_2000 + 5000), Gpa(0x10_4000)..Gpa(0x10_4006)]);
    // Memory map: 4 entries of 24 bytes, size field 20.
    assert_eq!(u32_at(&mem, info + 44), 4 * 24);
    let mmap = u64::from(u32_at(&mem, info + 48));
    assert_eq!(u32_at(&mem, mmap), 20);
    assert_eq!(mem.read_u64(mmap + 4).unwrap(), 0);
    assert_eq!(mem.read_u64(mmap + 12).unwrap(), 0x9_fc00);
    assert_eq!(u32_at(&mem, mmap + 20), 1);
    assert_eq!(mem.read_u64(mmap + 3 * 24 + 4).unwrap(), 0x10_0000);
    assert_eq!(cstr(&mem, u32_at(&mem, info + 64).into()), "turtles");
    // The boot GDT is what the cached selectors claim.
    assert_eq!(mem.read_u64(layout::GDT + 8).unwrap(), layout::gdt::ENTRIES[1]);
}

#[test]
fn reference_bench_kernel_loads_as_multiboot_elf32() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/bench/guests/build/boot.elf");
    let Ok(k) = std::fs::read(path) else { return };
    let (_, r) = load_in(RAM, &k, &[]);
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::MultibootElf32);
    assert_eq!(b.entry, Gva(0x10_0020));
}

#[test]
fn misplaced_kernels_are_errors() {
    let outside = elf(false, elf::EM_386, 0x100_000c, &[(0x100_0000, &mb_text(), 0x1000)]);
    assert_eq!(
        load_in(RAM, &outside, &[]).1,
        Err(LoadError::SegmentOutsideRam { addr: 0x100_0000, len: 0x1000, ram_end: RAM })
    );
    let straddles = elf(false, elf::EM_386, RAM - 0x800, &[(RAM - 0x1000, &mb_text(), 0x2000)]);
    assert!(matches!(load_in(RAM, &straddles, &[]).1, Err(LoadError::SegmentOutsideRam { .. })));
    let low = elf(false, elf::EM_386, 0x8000, &[(0x8000, &mb_text(), 0x100)]);
    assert!(matches!(load_in(RAM, &low, &[]).1, Err(LoadError::OverlapsFirmwareArea { area_start: 0, .. })));
    let bios = elf(true, elf::EM_X86_64, 0xf_0000, &[(0xf_0000, &[0xf4], 0x100)]);
    assert!(matches!(load_in(RAM, &bios, &[]).1, Err(LoadError::OverlapsFirmwareArea { area_start: 0x9_fc00, .. })));
    let no_entry = elf(false, elf::EM_386, 0, &[(0x10_0000, &mb_text(), 0x100)]);
    assert_eq!(load_in(RAM, &no_entry, &[]).1, Err(LoadError::NoEntry));
    let wild = elf(true, elf::EM_X86_64, 0xffff_ffff_8000_0000, &[(0x10_0000, &[0xf4], 0x100)]);
    assert_eq!(load_in(RAM, &wild, &[]).1, Err(LoadError::EntryOutsideImage { entry: 0xffff_ffff_8000_0000 }));
    let elf32 = elf(false, elf::EM_386, 0x10_0000, &[(0x10_0000, &[0xf4], 0x100)]);
    assert_eq!(load_in(RAM, &elf32, &[]).1, Err(LoadError::Elf32WithoutMultiboot));
    let mut not_elf = mb_header(0, None);
    not_elf.resize(64, 0);
    assert_eq!(load_in(RAM, &not_elf, &[]).1, Err(LoadError::MultibootNotElf));
    assert_eq!(load_in(RAM, b"hello", &[]).1, Err(LoadError::NotAKernel { len: 5 }));
    assert_eq!(load_in(RAM, b"", &[]).1, Err(LoadError::NotAKernel { len: 0 }));
}

#[test]
fn resource_limits_are_errors() {
    let k = elf(false, elf::EM_386, 0x10_000c, &[(0x10_0000, &mb_text(), 0x1000)]);
    let big = vec![0u8; (RAM - 0x10_1000 + 1) as usize];
    let r = load_in(RAM, &k, &[ModuleImage { data: &big, cmdline: "big".into() }]).1;
    assert_eq!(r, Err(LoadError::ModuleTooLarge { index: 0, size: big.len() as u64, available: RAM - 0x10_1000 }));
    let fits = &big[..big.len() - 1];
    assert!(load_in(RAM, &k, &[ModuleImage { data: fits, cmdline: "fits".into() }]).1.is_ok());
    let mut mem = Memory::new(1 << 20).unwrap();
    assert_eq!(load(&mut mem, &params(&k, &[])), Err(LoadError::RamTooSmall { ram: 1 << 20, min: layout::MIN_RAM }));
    let long = "x".repeat(0x8000);
    let mut mem = Memory::new(RAM).unwrap();
    let p = BootParams { kernel: &k, kernel_name: "k", append: &long, modules: &[] };
    assert!(matches!(load(&mut mem, &p), Err(LoadError::CmdlineTooLong { .. })));
    let many: Vec<ModuleImage<'_>> =
        (0..layout::MAX_MODULES + 1).map(|_| ModuleImage { data: b"", cmdline: String::new() }).collect();
    assert_eq!(load_in(RAM, &k, &many).1, Err(LoadError::TooManyModules(layout::MAX_MODULES + 1)));
}

/// xorshift64: deterministic pseudo-random bytes.
fn rng(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

#[test]
fn truncated_kernels_never_panic() {
    let kernels = [
        elf(false, elf::EM_386, 0x10_000c, &[(0x10_0000, &mb_text(), 0x3000), (0x20_0000, b"data", 4)]),
        elf(true, elf::EM_X86_64, 0x20_0000, &[(0x20_0000, &[0xf4; 64], 0x1000)]),
        {
            let mut f = mb_header(FLAG_AOUT_KLUDGE, Some([0x20_0000, 0x20_0000, 0x20_0100, 0x20_4000, 0x20_0030]));
            f.resize(0x100, 0x90);
            f
        },
    ];
    for k in &kernels {
        assert!(load_in(RAM, k, &[]).1.is_ok());
        for len in 0..k.len() {
            let _ = load_in(RAM, &k[..len], &[]).1;
        }
    }
}

#[test]
fn random_and_mutated_kernels_never_panic() {
    let mut next = rng(0x1234_5678_9abc_def1);
    let base = [
        elf(false, elf::EM_386, 0x10_000c, &[(0x10_0000, &mb_text(), 0x3000)]),
        elf(true, elf::EM_X86_64, 0x20_0000, &[(0x20_0000, &[0xf4; 64], 0x1000)]),
    ];
    let mut mem = Memory::new(4 << 20).unwrap();
    for i in 0..3000 {
        let mut k = if i % 3 == 0 {
            (0..(next() % 9000) as usize).map(|_| next() as u8).collect::<Vec<u8>>()
        } else {
            base[i % 2].clone()
        };
        // Mutate a few header bytes (where the interesting fields are).
        for _ in 0..1 + next() % 4 {
            if k.is_empty() {
                break;
            }
            let at = (next() % 128.min(k.len() as u64)) as usize;
            k[at] = next() as u8;
        }
        let _ = load(&mut mem, &BootParams { kernel: &k, kernel_name: "r", append: "", modules: &[] });
    }
}

#[test]
fn pvh_elf64_enters_protected_mode_with_start_info() {
    let note = elf::build::note(b"Xen\0", pvh::XEN_ELFNOTE_PHYS32_ENTRY, &0x20_0010u64.to_le_bytes());
    let k = elf::build::elf64_with_notes(elf::EM_X86_64, 0x20_0000, &[(0x20_0000, &[0xf4; 32], 0x1000)], &note);
    let mods = [ModuleImage { data: b"initrd-bytes", cmdline: "initrd.img".into() }];
    let (mem, r) = load_in(RAM, &k, &mods);
    let b = r.unwrap();
    assert_eq!(b.format, KernelFormat::Pvh);
    let mut cpu = Cpu::new(0, CpuidModel::turtles_max());
    b.apply(&mut cpu);
    assert_eq!(cpu.mode(), Mode::Protected);
    assert_eq!(cpu.regs.rip, 0x20_0010, "entered at the note, not e_entry");
    assert_eq!(cpu.regs.gpr[3], layout::MB_INFO);
    assert_eq!(cpu.regs.gpr[0], 0);
    assert_eq!(cpu.regs.cr0, (Cr0::PE | Cr0::ET).bits());
    assert_eq!((cpu.regs.cr4, cpu.regs.efer), (0, 0));
    let si = layout::MB_INFO;
    assert_eq!(u32_at(&mem, si), pvh::XEN_HVM_START_MAGIC_VALUE);
    assert_eq!(u32_at(&mem, si + 4), 1);
    assert_eq!(u32_at(&mem, si + 12), 1);
    assert_eq!(cstr(&mem, mem.read_u64(si + 24).unwrap()), "console=ttyS0 x=1");
    assert_eq!(mem.read_u64(si + 32).unwrap(), layout::ACPI_RSDP);
    let modlist = mem.read_u64(si + 16).unwrap();
    let (start, size) = (mem.read_u64(modlist).unwrap(), mem.read_u64(modlist + 8).unwrap());
    assert_eq!((start, size), (0x20_1000, 12));
    assert_eq!(cstr(&mem, mem.read_u64(modlist + 16).unwrap()), "initrd.img");
    let mut data = [0u8; 12];
    mem.read(start, &mut data).unwrap();
    assert_eq!(&data, b"initrd-bytes");
    let (memmap, n) = (mem.read_u64(si + 40).unwrap(), u32_at(&mem, si + 48) as u64);
    let entries: Vec<(u64, u64, u32)> = (0..n)
        .map(|i| {
            (
                mem.read_u64(memmap + i * 24).unwrap(),
                mem.read_u64(memmap + i * 24 + 8).unwrap(),
                u32_at(&mem, memmap + i * 24 + 16),
            )
        })
        .collect();
    let want: Vec<(u64, u64, u32)> =
        layout::memory_map(RAM, true).iter().map(|r| (r.base.0, r.len, r.kind.code())).collect();
    assert_eq!(entries, want);
    assert!(entries.contains(&(layout::BOOT_AREA_START, layout::BOOT_AREA_END - layout::BOOT_AREA_START, 2)));
}

#[test]
fn pvh_entry_outside_image_is_rejected() {
    let note = elf::build::note(b"Xen\0", pvh::XEN_ELFNOTE_PHYS32_ENTRY, &0x30_0000u32.to_le_bytes());
    let k = elf::build::elf64_with_notes(elf::EM_X86_64, 0x20_0000, &[(0x20_0000, &[0xf4; 32], 0x1000)], &note);
    assert_eq!(load_in(RAM, &k, &[]).1, Err(LoadError::EntryOutsideImage { entry: 0x30_0000 }));
}
