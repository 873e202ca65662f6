//! The Xen PVH boot ABI as Linux implements it (Xen's
//! `xen/include/public/arch-x86/hvm/start_info.h`, mirrored in Linux's
//! `include/xen/interface/hvm/start_info.h`; the entry code is Linux's
//! `arch/x86/platform/pvh/head.S`, the start-info reader
//! `arch/x86/platform/pvh/enlighten.c`).
//!
//! An uncompressed kernel (ELF64 `vmlinux`) announces PVH support with a
//! note of owner "Xen" and type `XEN_ELFNOTE_PHYS32_ENTRY` (18) whose
//! descriptor is the 32-bit physical address of the PVH entry point
//! (Linux emits it as a pointer-sized value, 8 bytes on x86-64; the high
//! half must be zero).
//!
//! The kernel is entered in 32-bit protected mode with paging off, CS a
//! flat 32-bit code segment, DS/ES/SS flat data (selector values are not
//! part of the ABI), EFLAGS.IF = 0, CR4 = EFER = 0, and EBX the physical
//! address of `struct hvm_start_info`. Version 1 of that structure adds
//! the memory map, which Linux requires when it is not running on Xen.
//!
//! Layouts (all little-endian, naturally aligned):
//!
//! ```text
//! hvm_start_info (56 bytes)     hvm_modlist_entry (32)   hvm_memmap_table_entry (24)
//!  0 magic          u32          0 paddr         u64      0 addr      u64
//!  4 version        u32          8 size          u64      8 size      u64
//!  8 flags          u32         16 cmdline_paddr u64     16 type      u32 (E820 types)
//! 12 nr_modules     u32         24 reserved      u64     20 reserved  u32
//! 16 modlist_paddr  u64
//! 24 cmdline_paddr  u64
//! 32 rsdp_paddr     u64
//! 40 memmap_paddr   u64
//! 48 memmap_entries u32
//! 52 reserved       u32
//! ```

use super::elf;
use super::LoadError;

/// Note type of the 32-bit physical PVH entry point.
pub const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
/// `hvm_start_info.magic`: "xEn3" with the top bit of the last byte set.
pub const XEN_HVM_START_MAGIC_VALUE: u32 = 0x336e_c578;
/// The start-info version written (1: has the memory map).
pub const START_INFO_VERSION: u32 = 1;
/// Size of `hvm_start_info` version 1.
pub const START_INFO_SIZE: usize = 56;
/// Size of `hvm_modlist_entry`.
pub const MODLIST_ENTRY_SIZE: usize = 32;
/// Size of `hvm_memmap_table_entry`.
pub const MEMMAP_ENTRY_SIZE: usize = 24;

/// Byte offsets in `hvm_start_info`.
pub mod si {
    /// `magic` (u32).
    pub const MAGIC: usize = 0;
    /// `version` (u32).
    pub const VERSION: usize = 4;
    /// `flags` (u32).
    pub const FLAGS: usize = 8;
    /// `nr_modules` (u32).
    pub const NR_MODULES: usize = 12;
    /// `modlist_paddr` (u64).
    pub const MODLIST_PADDR: usize = 16;
    /// `cmdline_paddr` (u64).
    pub const CMDLINE_PADDR: usize = 24;
    /// `rsdp_paddr` (u64).
    pub const RSDP_PADDR: usize = 32;
    /// `memmap_paddr` (u64).
    pub const MEMMAP_PADDR: usize = 40;
    /// `memmap_entries` (u32).
    pub const MEMMAP_ENTRIES: usize = 48;
}

/// The PVH entry point of an ELF file: `Ok(None)` without the note,
/// an error when the note is malformed.
pub fn find_entry(bytes: &[u8]) -> Result<Option<u32>, LoadError> {
    for n in elf::notes(bytes)? {
        if n.kind != XEN_ELFNOTE_PHYS32_ENTRY || n.name != b"Xen\0" {
            continue;
        }
        let entry = match n.desc.len() {
            4 => u64::from(u32::from_le_bytes(n.desc.try_into().expect("4 bytes"))),
            8 => u64::from_le_bytes(n.desc.try_into().expect("8 bytes")),
            len => return Err(LoadError::BadPvhNoteSize { len }),
        };
        return u32::try_from(entry).map(Some).map_err(|_| LoadError::PvhEntryAbove4G { entry });
    }
    Ok(None)
}

/// What goes in `hvm_start_info`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartInfo {
    /// Number of modules in the list.
    pub nr_modules: u32,
    /// Physical address of the module list (0 without modules).
    pub modlist_paddr: u64,
    /// Physical address of the NUL-terminated command line.
    pub cmdline_paddr: u64,
    /// Physical address of the ACPI RSDP (0: none).
    pub rsdp_paddr: u64,
    /// Physical address of the memory map.
    pub memmap_paddr: u64,
    /// Its number of entries.
    pub memmap_entries: u32,
}

fn put(b: &mut [u8], off: usize, v: &[u8]) {
    b[off..off + v.len()].copy_from_slice(v);
}

impl StartInfo {
    /// The structure's bytes (version 1, flags 0).
    pub fn to_bytes(&self) -> [u8; START_INFO_SIZE] {
        let mut b = [0u8; START_INFO_SIZE];
        put(&mut b, si::MAGIC, &XEN_HVM_START_MAGIC_VALUE.to_le_bytes());
        put(&mut b, si::VERSION, &START_INFO_VERSION.to_le_bytes());
        put(&mut b, si::NR_MODULES, &self.nr_modules.to_le_bytes());
        put(&mut b, si::MODLIST_PADDR, &self.modlist_paddr.to_le_bytes());
        put(&mut b, si::CMDLINE_PADDR, &self.cmdline_paddr.to_le_bytes());
        put(&mut b, si::RSDP_PADDR, &self.rsdp_paddr.to_le_bytes());
        put(&mut b, si::MEMMAP_PADDR, &self.memmap_paddr.to_le_bytes());
        put(&mut b, si::MEMMAP_ENTRIES, &self.memmap_entries.to_le_bytes());
        b
    }
}

/// One `hvm_modlist_entry`.
pub fn modlist_entry(paddr: u64, size: u64, cmdline_paddr: u64) -> [u8; MODLIST_ENTRY_SIZE] {
    let mut b = [0u8; MODLIST_ENTRY_SIZE];
    put(&mut b, 0, &paddr.to_le_bytes());
    put(&mut b, 8, &size.to_le_bytes());
    put(&mut b, 16, &cmdline_paddr.to_le_bytes());
    b
}

/// One `hvm_memmap_table_entry` (`kind` is an E820 type).
pub fn memmap_entry(addr: u64, size: u64, kind: u32) -> [u8; MEMMAP_ENTRY_SIZE] {
    let mut b = [0u8; MEMMAP_ENTRY_SIZE];
    put(&mut b, 0, &addr.to_le_bytes());
    put(&mut b, 8, &size.to_le_bytes());
    put(&mut b, 16, &kind.to_le_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::elf::{build, EM_X86_64};

    fn kernel(notes: &[u8]) -> Vec<u8> {
        build::elf64_with_notes(EM_X86_64, 0x10_0000, &[(0x10_0000, &[0x90; 64], 0x1000)], notes)
    }

    #[test]
    fn finds_the_phys32_entry_note() {
        // Linux's order: other Xen notes first, then PHYS32_ENTRY as a quad.
        let mut notes = build::note(b"Xen\0", 6, b"linux\0");
        notes.extend(build::note(b"GNU\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0xff; 20]));
        notes.extend(build::note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x10_0020u64.to_le_bytes()));
        assert_eq!(find_entry(&kernel(&notes)), Ok(Some(0x10_0020)));
        let notes = build::note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x10_0030u32.to_le_bytes());
        assert_eq!(find_entry(&kernel(&notes)), Ok(Some(0x10_0030)));
    }

    #[test]
    fn no_note_is_not_pvh() {
        assert_eq!(find_entry(&kernel(&build::note(b"Xen\0", 6, b"linux\0"))), Ok(None));
        assert_eq!(find_entry(&kernel(&[])), Ok(None));
    }

    #[test]
    fn bad_notes_carry_the_offending_value() {
        let notes = build::note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[1, 2]);
        assert_eq!(find_entry(&kernel(&notes)), Err(LoadError::BadPvhNoteSize { len: 2 }));
        let notes = build::note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &0x1_0000_0000u64.to_le_bytes());
        assert_eq!(find_entry(&kernel(&notes)), Err(LoadError::PvhEntryAbove4G { entry: 0x1_0000_0000 }));
        // A descriptor size running past the segment.
        let mut notes = build::note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0; 8]);
        notes[4] = 0x40;
        assert!(matches!(find_entry(&kernel(&notes)), Err(LoadError::Truncated { what: "note", .. })));
    }

    #[test]
    fn every_truncation_is_an_error_or_no_note() {
        let f = kernel(&build::note(b"Xen\0", XEN_ELFNOTE_PHYS32_ENTRY, &[0x20, 0, 0x10, 0]));
        for len in 0..f.len() {
            assert_ne!(find_entry(&f[..len]), Ok(Some(0x10_0020)), "len {len}");
        }
        assert_eq!(find_entry(&f), Ok(Some(0x10_0020)));
    }

    #[test]
    fn start_info_layout() {
        let b = StartInfo {
            nr_modules: 1,
            modlist_paddr: 0x9100,
            cmdline_paddr: 0x1_0000,
            rsdp_paddr: 0xf_0000,
            memmap_paddr: 0x9400,
            memmap_entries: 5,
        }
        .to_bytes();
        let mut want = [0u8; 56];
        want[0..4].copy_from_slice(&[0x78, 0xc5, 0x6e, 0x33]);
        want[4] = 1;
        want[12] = 1;
        want[16..24].copy_from_slice(&0x9100u64.to_le_bytes());
        want[24..32].copy_from_slice(&0x1_0000u64.to_le_bytes());
        want[32..40].copy_from_slice(&0xf_0000u64.to_le_bytes());
        want[40..48].copy_from_slice(&0x9400u64.to_le_bytes());
        want[48] = 5;
        assert_eq!(b, want);
        assert_eq!(&b[..4], b"x\xc5n3");
    }

    #[test]
    fn modlist_and_memmap_entry_layouts() {
        let m = modlist_entry(0x20_0000, 0x1234, 0x1_0010);
        assert_eq!(&m[0..8], &0x20_0000u64.to_le_bytes());
        assert_eq!(&m[8..16], &0x1234u64.to_le_bytes());
        assert_eq!(&m[16..24], &0x1_0010u64.to_le_bytes());
        assert_eq!(&m[24..32], &[0; 8]);
        let e = memmap_entry(0x10_0000, 0x1f0_0000, 1);
        assert_eq!(&e[0..8], &0x10_0000u64.to_le_bytes());
        assert_eq!(&e[8..16], &0x1f0_0000u64.to_le_bytes());
        assert_eq!(&e[16..20], &1u32.to_le_bytes());
        assert_eq!(&e[20..24], &[0; 4]);
    }
}
