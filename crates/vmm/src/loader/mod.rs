//! Kernel loading: puts a kernel, its modules and its boot information in
//! guest RAM and gives the boot CPU the state the boot protocol promises.
//!
//! Formats, tried in this order:
//!
//! 1. **Multiboot v1** (Multiboot Specification 0.6.96), as QEMU's
//!    `-kernel` loader does it: the header is searched in the first 8 KiB,
//!    4-byte aligned, with a valid checksum.
//!    * Flag 16 set (the "a.out kludge"): the file from offset
//!      `header_offset - (header_addr - load_addr)` is copied to
//!      `load_addr..load_end_addr` (`load_end_addr` = 0: to the end of the
//!      file), memory up to `bss_end_addr` is zero, entry at `entry_addr`.
//!    * Otherwise the file must be ELF: ELF32 (`EM_386`) or ELF64
//!      (`EM_X86_64`), loaded by its PT_LOAD program headers at their
//!      physical addresses `p_paddr`; the entry point is `e_entry`, of
//!      which only the low 32 bits count for ELF64 (as in QEMU).
//! 2. **Linux bzImage** (setup header "HdrS", boot protocol 2.12 or later):
//!    see [`linux`]; entered through its 64-bit entry point.
//! 3. **PVH** (ELF64 with a Xen `XEN_ELFNOTE_PHYS32_ENTRY` note, such as
//!    a Linux `vmlinux` built with `CONFIG_PVH`): PT_LOAD segments at
//!    `p_paddr`, entered at the note's address by the Xen PVH boot ABI;
//!    see [`pvh`].
//! 4. **Plain ELF64** (`EM_X86_64`, no multiboot header, no PVH note):
//!    PT_LOAD segments at `p_paddr`, entered at `e_entry` in 64-bit mode.
//!
//! Multiboot and plain ELF64 get the same boot information: a multiboot information structure
//! at [`layout::MB_INFO`] with `mem_lower`/`mem_upper` (flag bit 0), the
//! command line (bit 2: `"<kernel name> <append>"`, as QEMU writes it),
//! the modules (bit 3: each `-initrd` file, page aligned after the kernel,
//! with its own command line), the memory map (bit 6, see
//! [`layout::memory_map`]) and the boot loader name (bit 9).
//!
//! # Entry state
//!
//! Multiboot (3.2 "Machine state"): 32-bit protected mode, paging off,
//! CR0 = PE|ET, CR4 = EFER = 0; CS = 0x08 flat 32-bit code; DS, ES, SS, FS,
//! GS = 0x10 flat data (selectors from the boot GDT at [`layout::GDT`],
//! which stays valid); EFLAGS = 0x2 (IF = 0); EAX = 0x2BADB002, EBX = the
//! information structure; every other general register 0 (ESP included:
//! the kernel sets up its own stack); A20 enabled.
//!
//! PVH (the ABI in [`pvh`]): 32-bit protected mode, paging off, CR0 =
//! PE|ET, CR4 = EFER = 0; CS = 0x08 flat 32-bit code, DS, ES, SS, FS, GS =
//! 0x10 flat data (the multiboot GDT); EFLAGS = 0x2; EBX = the
//! `hvm_start_info` at [`layout::MB_INFO`], other general registers 0.
//! The module list is at [`layout::MB_MODS`], the memory map (the plain
//! ELF64 one, boot area reserved) at [`layout::MB_MMAP`], the command line
//! (`-append` alone, as for bzImage) at [`layout::CMDLINES`], and
//! `rsdp_paddr` is [`layout::ACPI_RSDP`]. Modules go page aligned after
//! the kernel as for multiboot.
//!
//! Plain ELF64: 64-bit mode, CPL 0. CR0 = PE|MP|ET|NE|WP|PG, CR4 =
//! PAE|OSFXSR|OSXMMEXCPT, EFER = LME|LMA (plus NXE when the CPU model
//! offers NX), CR3 = [`layout::PML4`]: the first 4 GiB identity mapped
//! with 2 MiB pages (present, writable, supervisor), page tables at
//! 0x2000-0x7fff. CS = 0x18 (64-bit code), DS, ES, SS, FS, GS = 0x10, all
//! bases 0. RSP = [`layout::STACK_TOP`] (0x20000, 32 KiB of stack below
//! it). RDI and RBX = the multiboot information structure, RSI and RAX =
//! 0x2BADB002, other general registers 0, RFLAGS = 0x2. The boot area
//! 0x1000-0x20000 (GDT, page tables, information, command lines, stack) is
//! reserved in the memory map.
//!
//! RAM is zero when a kernel is loaded, so bss needs no clearing. Nothing
//! may be placed below [`layout::BOOT_AREA_END`] or in the BIOS area
//! 0x9fc00-0x100000; kernels and modules must lie in RAM below 4 GiB.

pub mod elf;
pub mod linux;
pub mod multiboot;
pub mod pvh;

use std::ops::Range;

use cpu::{Cpu, DescTable, Memory, Segment};
use thiserror::Error;
use x86::seg::{ar, sreg};
use x86::{Cr0, Cr4, Efer, Gpa, Gva};

use crate::layout;
use elf::{ElfClass, EM_386, EM_X86_64};
use multiboot::{InfoParams, ModuleEntry};

/// Why a kernel could not be loaded.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum LoadError {
    /// Neither a multiboot kernel nor an ELF64 executable.
    #[error("not a kernel: no multiboot header in the first 8 KiB and not an x86-64 ELF ({len} bytes)")]
    NotAKernel {
        /// File length.
        len: u64,
    },
    /// An ELF32 file without a multiboot header: no protocol says how to
    /// enter it.
    #[error("ELF32 kernel without a multiboot header (only multiboot ELF32 kernels can be booted)")]
    Elf32WithoutMultiboot,
    /// A multiboot header without address fields in a file that is not ELF.
    #[error("multiboot header without address fields (flag 16) in a file that is not ELF")]
    MultibootNotElf,
    /// Bad ELF class byte.
    #[error("bad ELF class {0}")]
    BadElfClass(u8),
    /// Not little-endian.
    #[error("bad ELF data encoding {0} (only little-endian is x86)")]
    BadElfEncoding(u8),
    /// Not an x86 machine.
    #[error("ELF machine {0} is not x86 (EM_386 for ELF32, EM_X86_64 for ELF64)")]
    BadElfMachine(u16),
    /// Program header entries too small for the class.
    #[error("bad ELF program header entry size {0}")]
    BadPhentsize(u16),
    /// Something points past the end of the file.
    #[error("kernel file truncated: {what} at offset {offset:#x} is past its end ({file_len} bytes)")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Offset of the data that is missing.
        offset: u64,
        /// File length.
        file_len: u64,
    },
    /// A segment with more file bytes than memory bytes.
    #[error("ELF segment at {paddr:#x} has p_filesz {filesz:#x} > p_memsz {memsz:#x}")]
    SegmentFileSizeTooLarge {
        /// Load address.
        paddr: u64,
        /// File bytes.
        filesz: u64,
        /// Memory bytes.
        memsz: u64,
    },
    /// No PT_LOAD segment with a memory size.
    #[error("ELF file has no loadable segment")]
    NoLoadableSegments,
    /// A multiboot address field that QEMU would reject too.
    #[error("invalid multiboot {field} {value:#x}")]
    BadMultibootAddress {
        /// Field name.
        field: &'static str,
        /// Its value.
        value: u32,
    },
    /// A segment whose end overflows the address space.
    #[error("kernel segment at {addr:#x} of {len:#x} bytes wraps around the address space")]
    SegmentAddressOverflow {
        /// Load address.
        addr: u64,
        /// Length.
        len: u64,
    },
    /// A segment outside RAM below 4 GiB.
    #[error("kernel segment {addr:#x}-{end:#x} is outside RAM (RAM below 4 GiB ends at {ram_end:#x}; try a larger -m)", end = addr + len)]
    SegmentOutsideRam {
        /// Load address.
        addr: u64,
        /// Length.
        len: u64,
        /// End of RAM below 4 GiB.
        ram_end: u64,
    },
    /// A segment over the VMM's boot area or the BIOS area.
    #[error("kernel segment {addr:#x}-{end:#x} overlaps the firmware area {area_start:#x}-{area_end:#x}", end = addr + len)]
    OverlapsFirmwareArea {
        /// Load address.
        addr: u64,
        /// Length.
        len: u64,
        /// Start of the area hit.
        area_start: u64,
        /// End of the area hit.
        area_end: u64,
    },
    /// The entry point is 0.
    #[error("kernel has no entry point")]
    NoEntry,
    /// The entry point is not inside anything loaded.
    #[error("kernel entry point {entry:#x} is outside the loaded image")]
    EntryOutsideImage {
        /// The entry point.
        entry: u64,
    },
    /// A module does not fit in RAM after the kernel.
    #[error("initrd/module {index} ({size} bytes) does not fit in RAM: {available} bytes free after the kernel (try a larger -m)")]
    ModuleTooLarge {
        /// Index in the module list (0 = `-initrd`'s first file).
        index: usize,
        /// Its size.
        size: u64,
        /// Bytes left.
        available: u64,
    },
    /// More modules than the module list holds.
    #[error("{0} modules given, at most {max} are supported", max = layout::MAX_MODULES)]
    TooManyModules(usize),
    /// Command lines too long for their area.
    #[error("command lines take {len} bytes, at most {max} fit")]
    CmdlineTooLong {
        /// Bytes needed, NULs included.
        len: u64,
        /// Bytes available.
        max: u64,
    },
    /// A Linux setup header that cannot be booted.
    #[error("bad Linux setup header: {what}")]
    BadLinuxHeader {
        /// What is wrong.
        what: &'static str,
    },
    /// A Linux boot protocol older than the 64-bit entry point.
    #[error("Linux boot protocol {major}.{minor:02} is too old: 2.12 or later is needed for the 64-bit entry", major = version >> 8, minor = version & 0xff)]
    LinuxProtocolTooOld {
        /// The header's version.
        version: u16,
    },
    /// A Xen PHYS32_ENTRY note whose descriptor is neither 4 nor 8 bytes.
    #[error("Xen PHYS32_ENTRY (PVH) note has a {len}-byte descriptor (4 or 8 expected)")]
    BadPvhNoteSize {
        /// Descriptor length.
        len: usize,
    },
    /// A PVH entry point that is not a 32-bit physical address.
    #[error("Xen PHYS32_ENTRY (PVH) note gives entry point {entry:#x}, above 4 GiB")]
    PvhEntryAbove4G {
        /// The note's value.
        entry: u64,
    },
    /// RAM smaller than the boot layout needs.
    #[error("{ram} bytes of RAM is too small: at least {min} are needed")]
    RamTooSmall {
        /// The RAM size.
        ram: u64,
        /// The minimum.
        min: u64,
    },
}

/// The format a kernel was loaded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelFormat {
    /// Multiboot with the a.out kludge (address fields).
    MultibootAout,
    /// Multiboot ELF32.
    MultibootElf32,
    /// Multiboot ELF64 (entry truncated to 32 bits).
    MultibootElf64,
    /// ELF64 without multiboot header, entered in long mode.
    Elf64,
    /// Linux bzImage, entered through the 64-bit boot protocol.
    Linux,
    /// ELF64 with a Xen PHYS32_ENTRY note, entered by the PVH boot ABI.
    Pvh,
}

impl KernelFormat {
    /// Whether the kernel is entered through the multiboot protocol.
    pub fn is_multiboot(self) -> bool {
        !matches!(self, KernelFormat::Elf64 | KernelFormat::Linux | KernelFormat::Pvh)
    }
}

impl std::fmt::Display for KernelFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernelFormat::MultibootAout => "multiboot (a.out kludge)",
            KernelFormat::MultibootElf32 => "multiboot ELF32",
            KernelFormat::MultibootElf64 => "multiboot ELF64",
            KernelFormat::Elf64 => "ELF64 (long-mode entry)",
            KernelFormat::Linux => "Linux bzImage (64-bit boot protocol)",
            KernelFormat::Pvh => "ELF64 (Xen PVH entry)",
        })
    }
}

/// A module (`-initrd` file) to load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleImage<'a> {
    /// Its contents.
    pub data: &'a [u8],
    /// Its command line (QEMU passes the whole `-initrd` entry: the file
    /// name and its arguments).
    pub cmdline: String,
}

/// What to load.
#[derive(Clone, Debug)]
pub struct BootParams<'a> {
    /// The kernel file.
    pub kernel: &'a [u8],
    /// Its name, which starts the command line.
    pub kernel_name: &'a str,
    /// `-append`.
    pub append: &'a str,
    /// Modules in order.
    pub modules: &'a [ModuleImage<'a>],
}

/// Where a kernel was loaded and how to enter it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootState {
    /// The format it was loaded as.
    pub format: KernelFormat,
    /// Entry point (paging is off or identity-mapped at entry, so this is
    /// also its physical address).
    pub entry: Gva,
    /// The multiboot information structure.
    pub info: Gpa,
    /// Physical range of the kernel image (bss included).
    pub image: Range<Gpa>,
    /// Physical ranges of the modules.
    pub modules: Vec<Range<Gpa>>,
}

/// A piece of the image: file bytes copied to `addr`, `memsz` bytes
/// occupied.
struct Piece<'a> {
    addr: u64,
    data: &'a [u8],
    memsz: u64,
}

fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}

fn file_slice(bytes: &[u8], offset: u64, len: u64) -> Result<&[u8], LoadError> {
    let err = LoadError::Truncated { what: "segment", offset, file_len: bytes.len() as u64 };
    let start = usize::try_from(offset).map_err(|_| err.clone())?;
    let len = usize::try_from(len).map_err(|_| err.clone())?;
    bytes.get(start..start.checked_add(len).ok_or(err.clone())?).ok_or(err)
}

/// Decides the format and the pieces to place.
fn plan<'a>(kernel: &'a [u8]) -> Result<(KernelFormat, Vec<Piece<'a>>, u64), LoadError> {
    let pieces_of = |img: &elf::ElfImage| -> Result<Vec<Piece<'a>>, LoadError> {
        img.segments
            .iter()
            .map(|s| Ok(Piece { addr: s.paddr, data: file_slice(kernel, s.offset, s.filesz)?, memsz: s.memsz }))
            .collect()
    };
    match multiboot::find_header(kernel)? {
        Some(h) => match h.addrs {
            Some(a) => {
                let l = multiboot::aout_load(&h, &a, kernel.len() as u64)?;
                let data = file_slice(kernel, l.file_offset, l.load_size)?;
                Ok((KernelFormat::MultibootAout, vec![Piece { addr: l.load_addr, data, memsz: l.mem_size }], l.entry))
            }
            None => {
                if !elf::is_elf(kernel) {
                    return Err(LoadError::MultibootNotElf);
                }
                let img = elf::parse(kernel)?;
                let (format, machine) = match img.class {
                    ElfClass::Elf32 => (KernelFormat::MultibootElf32, EM_386),
                    ElfClass::Elf64 => (KernelFormat::MultibootElf64, EM_X86_64),
                };
                if img.machine != machine {
                    return Err(LoadError::BadElfMachine(img.machine));
                }
                Ok((format, pieces_of(&img)?, img.entry & 0xffff_ffff))
            }
        },
        None => match elf::class(kernel) {
            Some(ElfClass::Elf64) => {
                let img = elf::parse(kernel)?;
                if img.machine != EM_X86_64 {
                    return Err(LoadError::BadElfMachine(img.machine));
                }
                match pvh::find_entry(kernel)? {
                    Some(entry) => Ok((KernelFormat::Pvh, pieces_of(&img)?, u64::from(entry))),
                    None => Ok((KernelFormat::Elf64, pieces_of(&img)?, img.entry)),
                }
            }
            Some(ElfClass::Elf32) => Err(LoadError::Elf32WithoutMultiboot),
            None if elf::is_elf(kernel) => Err(LoadError::BadElfClass(kernel.get(4).copied().unwrap_or(0))),
            None => Err(LoadError::NotAKernel { len: kernel.len() as u64 }),
        },
    }
}

/// Checks that `[addr, addr + len)` lies in low RAM and outside the
/// firmware areas.
fn check_range(addr: u64, len: u64, low_end: u64) -> Result<(), LoadError> {
    let end = addr.checked_add(len).ok_or(LoadError::SegmentAddressOverflow { addr, len })?;
    if end > low_end {
        return Err(LoadError::SegmentOutsideRam { addr, len, ram_end: low_end });
    }
    for (area_start, area_end) in [(0, layout::BOOT_AREA_END), (layout::EBDA, layout::BIOS_AREA_END)] {
        if addr < area_end && end > area_start {
            return Err(LoadError::OverlapsFirmwareArea { addr, len, area_start, area_end });
        }
    }
    Ok(())
}

fn write(mem: &mut Memory, addr: u64, data: &[u8]) -> Result<(), LoadError> {
    mem.write(addr, data).map_err(|_| LoadError::SegmentOutsideRam {
        addr,
        len: data.len() as u64,
        ram_end: mem.low_end(),
    })
}

/// Loads a kernel, its modules and its boot information into `mem`.
pub fn load(mem: &mut Memory, p: &BootParams<'_>) -> Result<BootState, LoadError> {
    let ram = mem.size();
    if ram < layout::MIN_RAM {
        return Err(LoadError::RamTooSmall { ram, min: layout::MIN_RAM });
    }
    if p.modules.len() > layout::MAX_MODULES {
        return Err(LoadError::TooManyModules(p.modules.len()));
    }
    let low_end = mem.low_end();
    if linux::is_bzimage(p.kernel) {
        return load_linux(mem, p);
    }
    let (format, pieces, entry) = plan(p.kernel)?;
    for piece in &pieces {
        check_range(piece.addr, piece.memsz, low_end)?;
    }
    if entry == 0 {
        return Err(LoadError::NoEntry);
    }
    if !pieces.iter().any(|s| (s.addr..s.addr + s.memsz).contains(&entry)) {
        return Err(LoadError::EntryOutsideImage { entry });
    }
    let image =
        pieces.iter().map(|s| s.addr).min().unwrap_or(0)..pieces.iter().map(|s| s.addr + s.memsz).max().unwrap_or(0);

    // Command lines first: they are cheap to check and an error here
    // should not depend on module sizes.
    let pvh = format == KernelFormat::Pvh;
    if pvh && p.modules.len() > PVH_MAX_MODULES {
        return Err(LoadError::TooManyModules(p.modules.len()));
    }
    let kernel_cmdline = if pvh { p.append.to_string() } else { format!("{} {}", p.kernel_name, p.append) };
    let mut cmdlines = Vec::new();
    let mut cmdline_addrs = Vec::new();
    for s in std::iter::once(kernel_cmdline.as_str()).chain(p.modules.iter().map(|m| m.cmdline.as_str())) {
        cmdline_addrs.push(layout::CMDLINES + cmdlines.len() as u64);
        cmdlines.extend_from_slice(s.as_bytes());
        cmdlines.push(0);
    }
    let max = layout::CMDLINES_END - layout::CMDLINES;
    if cmdlines.len() as u64 > max {
        return Err(LoadError::CmdlineTooLong { len: cmdlines.len() as u64, max });
    }

    // Modules: page aligned after the kernel, as QEMU places them.
    let mut next = align_up(image.end, 4096);
    let mut modules = Vec::new();
    let mut entries = Vec::new();
    for (index, (m, &cmdline)) in p.modules.iter().zip(&cmdline_addrs[1..]).enumerate() {
        let size = m.data.len() as u64;
        let available = low_end.saturating_sub(next);
        if size > available {
            return Err(LoadError::ModuleTooLarge { index, size, available });
        }
        modules.push(next..next + size);
        entries.push(ModuleEntry { start: next as u32, end: (next + size) as u32, cmdline: cmdline as u32 });
        next = align_up(next + size, 4096);
    }

    for piece in &pieces {
        write(mem, piece.addr, piece.data)?;
    }
    for (m, r) in p.modules.iter().zip(&modules) {
        write(mem, r.start, m.data)?;
    }
    write(mem, layout::CMDLINES, &cmdlines)?;
    let mut name = multiboot::LOADER_NAME.as_bytes().to_vec();
    name.push(0);
    write(mem, layout::LOADER_NAME, &name)?;

    let mmap = layout::memory_map(ram, matches!(format, KernelFormat::Elf64 | KernelFormat::Pvh));
    if pvh {
        let modlist: Vec<u8> = modules
            .iter()
            .zip(&cmdline_addrs[1..])
            .flat_map(|(r, &c)| pvh::modlist_entry(r.start, r.end - r.start, c))
            .collect();
        let mmap = &mmap[..mmap.len().min(PVH_MAX_MMAP_ENTRIES)];
        let table: Vec<u8> = mmap.iter().flat_map(|r| pvh::memmap_entry(r.base.0, r.len, r.kind.code())).collect();
        let info = pvh::StartInfo {
            nr_modules: modules.len() as u32,
            modlist_paddr: if modules.is_empty() { 0 } else { layout::MB_MODS },
            cmdline_paddr: layout::CMDLINES,
            rsdp_paddr: layout::ACPI_RSDP,
            memmap_paddr: layout::MB_MMAP,
            memmap_entries: mmap.len() as u32,
        };
        write(mem, layout::MB_INFO, &info.to_bytes())?;
        write(mem, layout::MB_MODS, &modlist)?;
        write(mem, layout::MB_MMAP, &table)?;
    }
    let blob = multiboot::build_info(&InfoParams {
        mem_lower: layout::mem_lower_kb(ram),
        mem_upper: layout::mem_upper_kb(ram),
        cmdline: layout::CMDLINES as u32,
        modules: &entries,
        mmap: &mmap[..mmap.len().min(layout::MAX_MMAP_ENTRIES)],
    });
    if !pvh {
        write(mem, layout::MB_INFO, &blob.info)?;
        write(mem, layout::MB_MODS, &blob.mods)?;
        write(mem, layout::MB_MMAP, &blob.mmap)?;
    }

    let gdt: Vec<u8> = layout::gdt::ENTRIES.iter().flat_map(|d| d.to_le_bytes()).collect();
    write(mem, layout::GDT, &gdt)?;
    write(mem, layout::BDA_EBDA_SEGMENT, &((layout::EBDA >> 4) as u16).to_le_bytes())?;
    write(mem, layout::BDA_BASE_MEM_KB, &(layout::mem_lower_kb(ram) as u16).to_le_bytes())?;
    if format == KernelFormat::Elf64 {
        write_identity_map(mem)?;
    }
    Ok(BootState {
        format,
        entry: Gva(entry),
        info: Gpa(layout::MB_INFO),
        image: Gpa(image.start)..Gpa(image.end),
        modules: modules.into_iter().map(|r| Gpa(r.start)..Gpa(r.end)).collect(),
    })
}

/// Loads a bzImage by the Linux boot protocol (see [`linux`]): the
/// protected-mode kernel at its preferred address with `init_size`
/// reserved, the command line, the initrd as high as allowed, the zero
/// page, a GDT with the protocol's selectors, and the identity map.
fn load_linux(mem: &mut Memory, p: &BootParams<'_>) -> Result<BootState, LoadError> {
    let img = linux::parse(p.kernel)?;
    let low_end = mem.low_end();
    let ram = mem.size();
    check_range(img.load_addr, img.init_size, low_end)?;
    let payload = &p.kernel[img.kernel_offset..];

    let mut cmdline = p.append.as_bytes().to_vec();
    if cmdline.len() as u64 > img.cmdline_size {
        return Err(LoadError::CmdlineTooLong { len: cmdline.len() as u64 + 1, max: img.cmdline_size + 1 });
    }
    cmdline.push(0);
    let max = layout::CMDLINES_END - layout::CMDLINES;
    if cmdline.len() as u64 > max {
        return Err(LoadError::CmdlineTooLong { len: cmdline.len() as u64, max });
    }
    if p.modules.len() > 1 {
        return Err(LoadError::TooManyModules(p.modules.len()));
    }
    // The initrd goes as high as the kernel allows, page aligned, above
    // everything the kernel needs in place.
    let kernel_end = img.load_addr + img.init_size;
    let initrd = match p.modules.first() {
        None => None,
        Some(m) => {
            let size = m.data.len() as u64;
            let top = img.initrd_addr_max.min(low_end) & !0xfff;
            let available = top.saturating_sub(align_up(kernel_end, 4096));
            if size > available {
                return Err(LoadError::ModuleTooLarge { index: 0, size, available });
            }
            Some(((top - size) & !0xfff, size))
        }
    };

    write(mem, img.load_addr, payload)?;
    if let (Some((addr, _)), Some(m)) = (initrd, p.modules.first()) {
        write(mem, addr, m.data)?;
    }
    write(mem, layout::CMDLINES, &cmdline)?;
    let e820: Vec<(u64, u64, u32)> = layout::memory_map(ram, true)
        .iter()
        .map(|r| (r.base.0, r.len, if r.kind == layout::MemoryKind::Ram { 1 } else { 2 }))
        .collect();
    let zp = linux::zero_page(p.kernel, &img, layout::CMDLINES as u32, initrd, layout::ACPI_RSDP, &e820);
    write(mem, LINUX_ZERO_PAGE, &zp)?;
    let gdt: Vec<u8> = LINUX_GDT.iter().flat_map(|d| d.to_le_bytes()).collect();
    write(mem, layout::GDT, &gdt)?;
    write_identity_map(mem)?;
    Ok(BootState {
        format: KernelFormat::Linux,
        entry: Gva(img.load_addr + 0x200),
        info: Gpa(LINUX_ZERO_PAGE),
        image: Gpa(img.load_addr)..Gpa(kernel_end),
        modules: initrd.map(|(a, s)| Gpa(a)..Gpa(a + s)).into_iter().collect(),
    })
}

/// PVH modules that fit in the module list area.
const PVH_MAX_MODULES: usize = ((layout::MB_MMAP - layout::MB_MODS) as usize) / pvh::MODLIST_ENTRY_SIZE;
/// PVH memory map entries that fit in the memory map area.
const PVH_MAX_MMAP_ENTRIES: usize = ((layout::LOADER_NAME - layout::MB_MMAP) as usize) / pvh::MEMMAP_ENTRY_SIZE;

/// Where the Linux zero page goes (the multiboot information area, unused
/// by this protocol).
pub const LINUX_ZERO_PAGE: u64 = layout::MB_INFO;
/// `__BOOT_CS`: flat 64-bit code.
pub const LINUX_BOOT_CS: u16 = 0x10;
/// `__BOOT_DS`: flat data.
pub const LINUX_BOOT_DS: u16 = 0x18;
/// The GDT the 64-bit boot protocol asks for: null, null, code, data.
const LINUX_GDT: [u64; 4] = [0, 0, 0x00af_9b00_0000_ffff, 0x00cf_9300_0000_ffff];

/// PML4[0] -> PDPT, PDPT[0..4] -> four page directories of 2 MiB pages:
/// the first 4 GiB, identity mapped, present and writable.
fn write_identity_map(mem: &mut Memory) -> Result<(), LoadError> {
    const P_RW: u64 = 0x3;
    const PS: u64 = 0x80;
    write(mem, layout::PML4, &(layout::PDPT | P_RW).to_le_bytes())?;
    let pdpt: Vec<u8> = (0..4u64).flat_map(|i| ((layout::PD + i * 0x1000) | P_RW).to_le_bytes()).collect();
    write(mem, layout::PDPT, &pdpt)?;
    let pds: Vec<u8> = (0..4 * 512u64).flat_map(|i| ((i << 21) | PS | P_RW).to_le_bytes()).collect();
    write(mem, layout::PD, &pds)
}

fn flat(selector: u16, ar_bits: u32) -> Segment {
    Segment { selector, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::ACCESSED | ar::G | ar_bits }
}

impl BootState {
    /// Gives `cpu` the entry state of the boot protocol (see the module
    /// documentation).
    pub fn apply(&self, cpu: &mut Cpu) {
        let r = &mut cpu.regs;
        r.gpr = [0; 16];
        r.set_rflags(0x2);
        r.gdtr = DescTable { base: layout::GDT, limit: layout::gdt::LIMIT };
        let data = flat(layout::gdt::DATA, ar::RW | ar::DB);
        r.seg = [data; 6];
        const RAX: usize = 0;
        const RBX: usize = 3;
        const RSP: usize = 4;
        const RSI: usize = 6;
        const RDI: usize = 7;
        r.gpr[RAX] = u64::from(multiboot::BOOTLOADER_MAGIC);
        r.gpr[RBX] = self.info.0;
        r.rip = self.entry.0;
        if self.format == KernelFormat::Linux {
            r.gdtr = DescTable { base: layout::GDT, limit: (LINUX_GDT.len() * 8 - 1) as u16 };
            let data = flat(LINUX_BOOT_DS, ar::RW | ar::DB);
            r.seg = [data; 6];
            r.seg[sreg::CS] = flat(LINUX_BOOT_CS, ar::CODE | ar::RW | ar::L);
            r.gpr[RAX] = 0;
            r.gpr[RBX] = 0;
            r.gpr[RSI] = self.info.0;
            r.gpr[RSP] = layout::STACK_TOP;
            r.cr0 = (Cr0::PE | Cr0::MP | Cr0::ET | Cr0::NE | Cr0::WP | Cr0::PG).bits();
            r.cr3 = layout::PML4;
            r.cr4 = Cr4::PAE.bits();
            r.efer = (Efer::LME | Efer::LMA).bits();
        } else if self.format.is_multiboot() || self.format == KernelFormat::Pvh {
            r.seg[sreg::CS] = flat(layout::gdt::CODE32, ar::CODE | ar::RW | ar::DB);
            if self.format == KernelFormat::Pvh {
                r.gpr[RAX] = 0;
            }
            r.cr0 = (Cr0::PE | Cr0::ET).bits();
            r.cr3 = 0;
            r.cr4 = 0;
            r.efer = 0;
        } else {
            r.seg[sreg::CS] = flat(layout::gdt::CODE64, ar::CODE | ar::RW | ar::L);
            r.cr0 = (Cr0::PE | Cr0::MP | Cr0::ET | Cr0::NE | Cr0::WP | Cr0::PG).bits();
            r.cr3 = layout::PML4;
            r.cr4 = (Cr4::PAE | Cr4::OSFXSR | Cr4::OSXMMEXCPT).bits();
            let mut efer = Efer::LME | Efer::LMA;
            if cpu.cpuid.features().nx {
                efer |= Efer::NXE;
            }
            let r = &mut cpu.regs;
            r.efer = efer.bits();
            r.gpr[RSP] = layout::STACK_TOP;
            r.gpr[RDI] = self.info.0;
            r.gpr[RSI] = u64::from(multiboot::BOOTLOADER_MAGIC);
        }
        cpu.state_changed();
    }
}

#[cfg(test)]
mod tests;
