//! Multiboot v1 (Multiboot Specification 0.6.96): the OS image header
//! (3.1 "OS image format") and the boot information structure (3.3 "Boot
//! information format"), as QEMU's `hw/i386/multiboot.c` implements them.

use super::LoadError;
use crate::layout::{self, MemoryRegion};

/// The header magic.
pub const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// EAX at entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;
/// The header must lie entirely within this many bytes of the file start.
pub const SEARCH_LEN: usize = 8192;
/// Header flag 16: the address fields are valid (the "a.out kludge").
pub const FLAG_AOUT_KLUDGE: u32 = 1 << 16;

/// Information-structure `flags` bits.
pub mod info_flags {
    /// `mem_lower`/`mem_upper` are valid.
    pub const MEMORY: u32 = 1 << 0;
    /// `cmdline` is valid.
    pub const CMDLINE: u32 = 1 << 2;
    /// `mods_count`/`mods_addr` are valid.
    pub const MODS: u32 = 1 << 3;
    /// `mmap_length`/`mmap_addr` are valid.
    pub const MMAP: u32 = 1 << 6;
    /// `boot_loader_name` is valid.
    pub const LOADER_NAME: u32 = 1 << 9;
}

/// The name in `boot_loader_name`.
pub const LOADER_NAME: &str = "turtles";

/// A multiboot header found in a kernel file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// File offset of the magic.
    pub offset: usize,
    /// The header's flags.
    pub flags: u32,
    /// The address fields, when flag 16 is set.
    pub addrs: Option<AoutAddrs>,
}

/// The a.out-kludge address fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AoutAddrs {
    /// Physical address of the header itself.
    pub header_addr: u32,
    /// Where the text segment starts.
    pub load_addr: u32,
    /// End of the data to load (0: to the end of the file).
    pub load_end_addr: u32,
    /// End of the bss (0: no bss).
    pub bss_end_addr: u32,
    /// Entry point.
    pub entry_addr: u32,
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Searches the first 8 KiB for a header: 4-byte aligned, magic, and
/// `magic + flags + checksum == 0` (QEMU scans the same way).
pub fn find_header(bytes: &[u8]) -> Result<Option<Header>, LoadError> {
    let limit = bytes.len().min(SEARCH_LEN);
    let mut off = 0;
    while off + 12 <= limit {
        let (Some(magic), Some(flags), Some(sum)) =
            (u32_at(bytes, off), u32_at(bytes, off + 4), u32_at(bytes, off + 8))
        else {
            break;
        };
        if magic == HEADER_MAGIC && magic.wrapping_add(flags).wrapping_add(sum) == 0 {
            let addrs = if flags & FLAG_AOUT_KLUDGE != 0 {
                let f = |i: usize| {
                    u32_at(bytes, off + 12 + 4 * i).ok_or(LoadError::Truncated {
                        what: "multiboot header",
                        offset: off as u64,
                        file_len: bytes.len() as u64,
                    })
                };
                Some(AoutAddrs {
                    header_addr: f(0)?,
                    load_addr: f(1)?,
                    load_end_addr: f(2)?,
                    bss_end_addr: f(3)?,
                    entry_addr: f(4)?,
                })
            } else {
                None
            };
            return Ok(Some(Header { offset: off, flags, addrs }));
        }
        off += 4;
    }
    Ok(None)
}

/// Where the a.out kludge says to load: `(file offset, load address,
/// bytes from the file, bytes in memory including bss, entry)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AoutLoad {
    /// File offset of the first byte loaded.
    pub file_offset: u64,
    /// Physical address of the first byte loaded.
    pub load_addr: u64,
    /// Bytes copied from the file.
    pub load_size: u64,
    /// Bytes occupied in memory, bss included.
    pub mem_size: u64,
    /// Entry point.
    pub entry: u64,
}

/// Validates the address fields as QEMU does and computes what to load.
pub fn aout_load(h: &Header, a: &AoutAddrs, file_len: u64) -> Result<AoutLoad, LoadError> {
    if a.header_addr < a.load_addr {
        return Err(LoadError::BadMultibootAddress { field: "load_addr", value: a.load_addr });
    }
    let header_delta = u64::from(a.header_addr - a.load_addr);
    if header_delta > h.offset as u64 {
        return Err(LoadError::BadMultibootAddress { field: "header_addr", value: a.header_addr });
    }
    let file_offset = h.offset as u64 - header_delta;
    let load_size = if a.load_end_addr != 0 {
        if a.load_end_addr < a.load_addr {
            return Err(LoadError::BadMultibootAddress { field: "load_end_addr", value: a.load_end_addr });
        }
        u64::from(a.load_end_addr - a.load_addr)
    } else {
        file_len.saturating_sub(file_offset)
    };
    if file_offset + load_size > file_len {
        return Err(LoadError::Truncated { what: "multiboot image", offset: file_offset + load_size, file_len });
    }
    if load_size > u64::from(u32::MAX - a.load_addr) {
        return Err(LoadError::SegmentAddressOverflow { addr: u64::from(a.load_addr), len: load_size });
    }
    let mem_size = if a.bss_end_addr != 0 {
        let end = u64::from(a.load_addr) + load_size;
        if u64::from(a.bss_end_addr) < end {
            return Err(LoadError::BadMultibootAddress { field: "bss_end_addr", value: a.bss_end_addr });
        }
        u64::from(a.bss_end_addr - a.load_addr)
    } else {
        load_size
    };
    Ok(AoutLoad { file_offset, load_addr: u64::from(a.load_addr), load_size, mem_size, entry: u64::from(a.entry_addr) })
}

/// A module as the information structure describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleEntry {
    /// First byte.
    pub start: u32,
    /// One past the last byte.
    pub end: u32,
    /// Address of its NUL-terminated command line.
    pub cmdline: u32,
}

/// Everything the information structure points at, already placed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InfoParams<'a> {
    /// `mem_lower` in KiB.
    pub mem_lower: u32,
    /// `mem_upper` in KiB.
    pub mem_upper: u32,
    /// Address of the kernel command line.
    pub cmdline: u32,
    /// The modules.
    pub modules: &'a [ModuleEntry],
    /// The memory map.
    pub mmap: &'a [MemoryRegion],
}

/// The information structure's bytes ([`layout::MB_INFO_SIZE`] long) and
/// the memory map and module list it points at (at [`layout::MB_MMAP`]
/// and [`layout::MB_MODS`]).
pub struct InfoBlob {
    /// The structure itself.
    pub info: Vec<u8>,
    /// The module list.
    pub mods: Vec<u8>,
    /// The memory map.
    pub mmap: Vec<u8>,
}

/// Builds the information structure (3.3 "Boot information format").
pub fn build_info(p: &InfoParams<'_>) -> InfoBlob {
    let mut mmap = Vec::with_capacity(p.mmap.len() * 24);
    for r in p.mmap {
        mmap.extend_from_slice(&20u32.to_le_bytes());
        mmap.extend_from_slice(&r.base.0.to_le_bytes());
        mmap.extend_from_slice(&r.len.to_le_bytes());
        mmap.extend_from_slice(&r.kind.code().to_le_bytes());
    }
    let mut mods = Vec::with_capacity(p.modules.len() * 16);
    for m in p.modules {
        for v in [m.start, m.end, m.cmdline, 0] {
            mods.extend_from_slice(&v.to_le_bytes());
        }
    }
    let mut info = vec![0u8; layout::MB_INFO_SIZE as usize];
    let mut put = |off: usize, v: u32| info[off..off + 4].copy_from_slice(&v.to_le_bytes());
    put(0, info_flags::MEMORY | info_flags::CMDLINE | info_flags::MODS | info_flags::MMAP | info_flags::LOADER_NAME);
    put(4, p.mem_lower);
    put(8, p.mem_upper);
    put(16, p.cmdline);
    put(20, p.modules.len() as u32);
    put(24, layout::MB_MODS as u32);
    put(44, mmap.len() as u32);
    put(48, layout::MB_MMAP as u32);
    put(64, layout::LOADER_NAME as u32);
    InfoBlob { info, mods, mmap }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(flags: u32, addrs: [u32; 5]) -> Vec<u8> {
        let mut h = Vec::new();
        for v in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags))] {
            h.extend_from_slice(&v.to_le_bytes());
        }
        for v in addrs {
            h.extend_from_slice(&v.to_le_bytes());
        }
        h
    }

    #[test]
    fn finds_aligned_header_with_valid_checksum_only() {
        let mut f = vec![0u8; 0x3000];
        let h = header(2, [0; 5]);
        f[0x102..0x102 + 12].copy_from_slice(&h[..12]); // misaligned: ignored
        assert_eq!(find_header(&f).unwrap(), None);
        f[0x200..0x200 + 12].copy_from_slice(&h[..12]);
        f[0x208] ^= 1; // bad checksum
        assert_eq!(find_header(&f).unwrap(), None);
        f[0x208] ^= 1;
        assert_eq!(find_header(&f).unwrap(), Some(Header { offset: 0x200, flags: 2, addrs: None }));
        // Beyond 8 KiB: not found.
        let mut g = vec![0u8; 0x3000];
        g[0x2000..0x200c].copy_from_slice(&h[..12]);
        assert_eq!(find_header(&g).unwrap(), None);
    }

    #[test]
    fn kludge_fields_and_qemu_checks() {
        let mut f = vec![0u8; 0x1000];
        f[0x40..0x60]
            .copy_from_slice(&header(FLAG_AOUT_KLUDGE, [0x10_0040, 0x10_0000, 0x10_0800, 0x10_2000, 0x10_0060]));
        let h = find_header(&f).unwrap().unwrap();
        let a = h.addrs.unwrap();
        let l = aout_load(&h, &a, f.len() as u64).unwrap();
        assert_eq!(
            l,
            AoutLoad { file_offset: 0, load_addr: 0x10_0000, load_size: 0x800, mem_size: 0x2000, entry: 0x10_0060 }
        );
        // load_end_addr = 0: load to the end of the file.
        let z = AoutAddrs { load_end_addr: 0, bss_end_addr: 0, ..a };
        assert_eq!(aout_load(&h, &z, 0x1000).unwrap().load_size, 0x1000);
        let bad = AoutAddrs { header_addr: 0xf_0000, ..a };
        assert_eq!(
            aout_load(&h, &bad, 0x1000),
            Err(LoadError::BadMultibootAddress { field: "load_addr", value: 0x10_0000 })
        );
        let bad = AoutAddrs { header_addr: 0x10_0100, ..a };
        assert!(matches!(
            aout_load(&h, &bad, 0x1000),
            Err(LoadError::BadMultibootAddress { field: "header_addr", .. })
        ));
        let bad = AoutAddrs { load_end_addr: 0x10_2000, bss_end_addr: 0, ..a };
        assert!(matches!(aout_load(&h, &bad, 0x1000), Err(LoadError::Truncated { .. })));
        let bad = AoutAddrs { bss_end_addr: 0x10_0100, ..a };
        assert!(matches!(
            aout_load(&h, &bad, 0x1000),
            Err(LoadError::BadMultibootAddress { field: "bss_end_addr", .. })
        ));
        // Header with flag 16 cut short.
        assert!(matches!(find_header(&f[..0x50]), Err(LoadError::Truncated { .. })));
    }
}
