//! Where the VMM puts things in guest-physical memory before the first
//! instruction, and the memory map the guest is told about.
//!
//! Low memory (all of it ordinary RAM; nothing here is MMIO):
//!
//! | range | contents |
//! |---|---|
//! | 0x0400-0x04ff | BIOS data area: EBDA segment (0x40e), base memory size in KiB (0x413) |
//! | 0x1000-0x1fff | boot GDT: null, 0x08 flat 32-bit code, 0x10 flat data, 0x18 64-bit code |
//! | 0x2000-0x7fff | page tables of the plain-ELF64 entry: PML4, PDPT, 4 page directories |
//! | 0x8000-0x8fff | left free: SMP kernels conventionally copy their AP trampoline here |
//! | 0x9000-0x90ff | multiboot information structure (QEMU uses 0x9000 too) |
//! | 0x9100-0x93ff | multiboot module list (16 bytes per module) |
//! | 0x9400-0x97ff | multiboot memory map (24 bytes per entry) |
//! | 0x9800-0x98ff | boot loader name |
//! | 0x10000-0x17fff | command lines: the kernel's, then one per module |
//! | 0x18000-0x1ffff | initial stack of the plain-ELF64 entry (RSP = 0x20000) |
//! | 0x9fc00-0x9ffff | EBDA (reserved) |
//! | 0xe0000-0xeffff | ACPI tables (RSDT, XSDT, FADT, FACS, DSDT, MADT) |
//! | 0xf0000-0xf003f | ACPI RSDP, found by the usual 0xe0000-0xfffff scan |
//!
//! Kernels and modules go from 1 MiB up. The multiboot memory map follows
//! the platform's E820 map (the same one fw_cfg's `etc/e820` gives), so
//! every way a guest can ask sees one layout: RAM 0-0x9fc00, reserved
//! 0x9fc00-0xa0000 and 0xe0000-0x100000, RAM from 1 MiB to the end of low
//! RAM, and RAM above 4 GiB when `-m` exceeds the PCI hole (3.5 GiB). The
//! plain-ELF64 entry additionally reserves [`BOOT_AREA_START`]..
//! [`BOOT_AREA_END`], since its page tables and stack are in use when the
//! kernel starts.

use x86::Gpa;

/// The BIOS data area word holding the EBDA segment.
pub const BDA_EBDA_SEGMENT: u64 = 0x40e;
/// The BIOS data area word holding the base memory size in KiB.
pub const BDA_BASE_MEM_KB: u64 = 0x413;
/// Start of the area the VMM's boot structures occupy.
pub const BOOT_AREA_START: u64 = 0x1000;
/// End (exclusive) of the area the VMM's boot structures occupy.
pub const BOOT_AREA_END: u64 = 0x2_0000;
/// The boot GDT.
pub const GDT: u64 = 0x1000;
/// PML4 of the plain-ELF64 identity map.
pub const PML4: u64 = 0x2000;
/// The PDPT of the plain-ELF64 identity map.
pub const PDPT: u64 = 0x3000;
/// The first of the four page directories (2 MiB pages, 0-4 GiB).
pub const PD: u64 = 0x4000;
/// The multiboot information structure.
pub const MB_INFO: u64 = 0x9000;
/// Bytes reserved for the multiboot information structure.
pub const MB_INFO_SIZE: u64 = 0x100;
/// The multiboot module list.
pub const MB_MODS: u64 = 0x9100;
/// At most this many modules fit in the module list.
pub const MAX_MODULES: usize = 48;
/// The multiboot memory map.
pub const MB_MMAP: u64 = 0x9400;
/// At most this many memory map entries fit.
pub const MAX_MMAP_ENTRIES: usize = 42;
/// The boot loader name string.
pub const LOADER_NAME: u64 = 0x9800;
/// Command lines (kernel first, then modules), NUL-terminated.
pub const CMDLINES: u64 = 0x1_0000;
/// End (exclusive) of the command-line area.
pub const CMDLINES_END: u64 = 0x1_8000;
/// Initial RSP of the plain-ELF64 entry.
pub const STACK_TOP: u64 = 0x2_0000;
/// Start of the extended BIOS data area (reserved).
pub const EBDA: u64 = 0x9_fc00;
/// End of the legacy BIOS area (1 MiB): kernels and modules go above.
pub const BIOS_AREA_END: u64 = 0x10_0000;
/// ACPI tables other than the RSDP.
pub const ACPI_TABLES: u64 = 0xe_0000;
/// End (exclusive) of the ACPI table area.
pub const ACPI_TABLES_END: u64 = 0xf_0000;
/// The ACPI RSDP (16-byte aligned, inside the BIOS scan area).
pub const ACPI_RSDP: u64 = 0xf_0000;
/// The smallest RAM a VM may have: the low-memory layout plus 1 MiB for a
/// kernel.
pub const MIN_RAM: u64 = 2 << 20;

/// The boot GDT's selectors and descriptors.
pub mod gdt {
    /// Flat 32-bit code (base 0, limit 4 GiB, DPL 0).
    pub const CODE32: u16 = 0x08;
    /// Flat read/write data (base 0, limit 4 GiB, DPL 0).
    pub const DATA: u16 = 0x10;
    /// 64-bit code (L = 1, DPL 0).
    pub const CODE64: u16 = 0x18;
    /// The descriptors, with their accessed bits already set so the CPU
    /// never needs to write the table.
    pub const ENTRIES: [u64; 4] = [0, 0x00cf_9b00_0000_ffff, 0x00cf_9300_0000_ffff, 0x00af_9b00_0000_ffff];
    /// GDTR limit.
    pub const LIMIT: u16 = (ENTRIES.len() * 8 - 1) as u16;
}

/// Kinds of memory map entries (the multiboot and E820 type numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MemoryKind {
    /// Available RAM (type 1).
    Ram,
    /// Reserved (type 2).
    Reserved,
}

impl MemoryKind {
    /// The type number multiboot and E820 use.
    pub fn code(self) -> u32 {
        match self {
            MemoryKind::Ram => 1,
            MemoryKind::Reserved => 2,
        }
    }
}

/// One memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemoryRegion {
    /// First byte.
    pub base: Gpa,
    /// Length in bytes.
    pub len: u64,
    /// What it is.
    pub kind: MemoryKind,
}

impl MemoryRegion {
    fn end(&self) -> u64 {
        self.base.0.saturating_add(self.len)
    }
}

/// The memory map of a VM with `ram_size` bytes of RAM: the platform's
/// E820 map, plus the VMM's boot area reserved when `reserve_boot_area`
/// (the plain-ELF64 entry, whose page tables and stack live there).
pub fn memory_map(ram_size: u64, reserve_boot_area: bool) -> Vec<MemoryRegion> {
    let mut map: Vec<MemoryRegion> = devices::platform::e820_map(ram_size)
        .into_iter()
        .filter(|e| e.size != 0)
        .map(|e| MemoryRegion {
            base: Gpa(e.addr),
            len: e.size,
            kind: if e.kind == 1 { MemoryKind::Ram } else { MemoryKind::Reserved },
        })
        .collect();
    if reserve_boot_area {
        reserve(&mut map, BOOT_AREA_START, BOOT_AREA_END);
    }
    map.sort_by_key(|r| r.base);
    map
}

/// Carves `[start, end)` out of the RAM entries of `map` and adds it as a
/// reserved entry.
fn reserve(map: &mut Vec<MemoryRegion>, start: u64, end: u64) {
    let mut out = Vec::with_capacity(map.len() + 2);
    for r in map.drain(..) {
        if r.kind != MemoryKind::Ram || r.end() <= start || r.base.0 >= end {
            out.push(r);
            continue;
        }
        if r.base.0 < start {
            out.push(MemoryRegion { base: r.base, len: start - r.base.0, kind: MemoryKind::Ram });
        }
        if r.end() > end {
            out.push(MemoryRegion { base: Gpa(end), len: r.end() - end, kind: MemoryKind::Ram });
        }
    }
    out.push(MemoryRegion { base: Gpa(start), len: end - start, kind: MemoryKind::Reserved });
    *map = out;
}

/// RAM below 4 GiB, as the platform splits it.
pub fn low_ram_end(ram_size: u64) -> u64 {
    devices::platform::ram_split(ram_size).0
}

/// Multiboot `mem_lower`: KiB of conventional memory (up to the EBDA).
pub fn mem_lower_kb(ram_size: u64) -> u32 {
    (EBDA.min(low_ram_end(ram_size)) / 1024) as u32
}

/// Multiboot `mem_upper`: KiB of contiguous RAM from 1 MiB.
pub fn mem_upper_kb(ram_size: u64) -> u32 {
    let kb = low_ram_end(ram_size).saturating_sub(BIOS_AREA_END) / 1024;
    u32::try_from(kb).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(map: &[MemoryRegion]) -> Vec<(u64, u64, u32)> {
        map.iter().map(|r| (r.base.0, r.len, r.kind.code())).collect()
    }

    #[test]
    fn map_of_256_mib() {
        let m = memory_map(256 << 20, false);
        assert_eq!(
            entries(&m),
            vec![
                (0, 0x9_fc00, 1),
                (0x9_fc00, 0x400, 2),
                (0xe_0000, 0x2_0000, 2),
                (0x10_0000, (256 << 20) - 0x10_0000, 1),
            ]
        );
        assert_eq!(mem_lower_kb(256 << 20), 639);
        assert_eq!(mem_upper_kb(256 << 20), 255 * 1024);
    }

    #[test]
    fn map_above_the_pci_hole() {
        let m = memory_map(5 << 30, false);
        let last = m.last().unwrap();
        assert_eq!((last.base.0, last.len, last.kind), (1 << 32, (5 << 30) - 0xe000_0000, MemoryKind::Ram));
        let below = m.iter().find(|r| r.base.0 == 0x10_0000).unwrap();
        assert_eq!(below.end(), 0xe000_0000);
        assert_eq!(mem_upper_kb(5 << 30), ((0xe000_0000u64 - 0x10_0000) / 1024) as u32);
    }

    #[test]
    fn boot_area_is_carved_out_of_low_ram() {
        let m = memory_map(64 << 20, true);
        assert_eq!(
            entries(&m)[..4],
            [(0, 0x1000, 1), (0x1000, 0x1_f000, 2), (0x2_0000, 0x9_fc00 - 0x2_0000, 1), (0x9_fc00, 0x400, 2)]
        );
        // Sorted and non-overlapping.
        for w in m.windows(2) {
            assert!(w[0].end() <= w[1].base.0, "{w:?}");
        }
    }

    #[test]
    fn layout_constants_do_not_overlap() {
        let areas = [
            (GDT, GDT + 0x1000),
            (PML4, PD + 4 * 0x1000),
            (MB_INFO, MB_INFO + MB_INFO_SIZE),
            (MB_MODS, MB_MODS + MAX_MODULES as u64 * 16),
            (MB_MMAP, MB_MMAP + MAX_MMAP_ENTRIES as u64 * 24),
            (LOADER_NAME, LOADER_NAME + 0x100),
            (CMDLINES, CMDLINES_END),
            (CMDLINES_END, STACK_TOP),
        ];
        for (i, a) in areas.iter().enumerate() {
            assert!(a.0 >= BOOT_AREA_START && a.1 <= BOOT_AREA_END, "{a:x?}");
            for b in &areas[i + 1..] {
                assert!(a.1 <= b.0 || b.1 <= a.0, "{a:x?} overlaps {b:x?}");
            }
        }
        const { assert!(ACPI_TABLES_END <= ACPI_RSDP) };
    }
}
