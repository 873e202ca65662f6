//! Multiboot v1 information structure (Multiboot Specification 0.6.96,
//! 3.3 "Boot information format"). Read in place: the loader put it in RAM
//! the kernel does not overwrite (QEMU: right after the image).

/// Magic value in EAX at entry.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// `flags` bits saying which fields are valid.
pub mod flags {
    /// mem_lower/mem_upper.
    pub const MEM: u32 = 1 << 0;
    /// cmdline.
    pub const CMDLINE: u32 = 1 << 2;
    /// mods_count/mods_addr.
    pub const MODS: u32 = 1 << 3;
    /// mmap_length/mmap_addr.
    pub const MMAP: u32 = 1 << 6;
    /// boot_loader_name.
    pub const LOADER_NAME: u32 = 1 << 9;
}

/// The fixed part of the information structure.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
#[allow(missing_docs)]
pub struct Info {
    pub flags: u32,
    pub mem_lower: u32,
    pub mem_upper: u32,
    pub boot_device: u32,
    pub cmdline: u32,
    pub mods_count: u32,
    pub mods_addr: u32,
    pub syms: [u32; 4],
    pub mmap_length: u32,
    pub mmap_addr: u32,
    pub drives_length: u32,
    pub drives_addr: u32,
    pub config_table: u32,
    pub boot_loader_name: u32,
}

/// A memory map entry (the `size` prefix is not included).
#[derive(Clone, Copy, Debug)]
pub struct MmapEntry {
    /// Start address.
    pub base: u64,
    /// Length in bytes.
    pub len: u64,
    /// 1 = available RAM, 2 = reserved, 3 = ACPI reclaimable, 4 = NVS.
    pub typ: u32,
}

fn c_str(addr: u32) -> &'static str {
    if addr == 0 {
        return "";
    }
    let p = addr as usize as *const u8;
    let mut n = 0;
    // SAFETY: the loader provides a NUL-terminated string in identity-mapped
    // RAM below 4 GiB; the scan is bounded.
    unsafe {
        while n < 4096 && *p.add(n) != 0 {
            n += 1;
        }
        core::str::from_utf8(core::slice::from_raw_parts(p, n)).unwrap_or("")
    }
}

impl Info {
    /// Reads the structure at physical address `addr` (None if 0).
    pub fn at(addr: u32) -> Option<&'static Info> {
        if addr == 0 {
            return None;
        }
        // SAFETY: the loader put the structure at `addr`, in identity-mapped
        // RAM that the runtime never writes.
        Some(unsafe { &*(addr as usize as *const Info) })
    }

    /// True if `flag` is set.
    pub fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// The command line ("" if none).
    pub fn cmdline(&self) -> &'static str {
        if self.has(flags::CMDLINE) {
            c_str(self.cmdline)
        } else {
            ""
        }
    }

    /// The boot loader name ("" if none).
    pub fn loader_name(&self) -> &'static str {
        if self.has(flags::LOADER_NAME) {
            c_str(self.boot_loader_name)
        } else {
            ""
        }
    }

    /// Calls `f` for each memory map entry.
    pub fn for_each_mmap(&self, mut f: impl FnMut(MmapEntry)) {
        if !self.has(flags::MMAP) {
            return;
        }
        let mut p = self.mmap_addr as u64;
        let end = p + self.mmap_length as u64;
        while p < end {
            // SAFETY: entries lie in [mmap_addr, mmap_addr + mmap_length),
            // each prefixed by its size; fields are unaligned.
            unsafe {
                let size = core::ptr::read_unaligned(p as *const u32) as u64;
                let base = core::ptr::read_unaligned((p + 4) as *const u64);
                let len = core::ptr::read_unaligned((p + 12) as *const u64);
                let typ = core::ptr::read_unaligned((p + 20) as *const u32);
                f(MmapEntry { base, len, typ });
                p += size + 4;
            }
        }
    }
}

/// Value of `key=value` in a space-separated command line.
pub fn arg<'a>(cmdline: &'a str, key: &str) -> Option<&'a str> {
    cmdline.split(' ').find_map(|w| {
        let (k, v) = w.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// Parses a decimal or 0x-prefixed hexadecimal number (with optional
/// `_` separators and `k`/`m` multipliers for 10^3/10^6).
pub fn parse_u64(s: &str) -> Option<u64> {
    let (s, mul) = match s.as_bytes().last()? {
        b'k' => (&s[..s.len() - 1], 1_000),
        b'm' => (&s[..s.len() - 1], 1_000_000),
        _ => (s, 1),
    };
    let (digits, radix) = match s.strip_prefix("0x") {
        Some(h) => (h, 16),
        None => (s, 10),
    };
    let mut v: u64 = 0;
    let mut any = false;
    for c in digits.chars() {
        if c == '_' {
            continue;
        }
        v = v.checked_mul(radix)?.checked_add(c.to_digit(radix as u32)? as u64)?;
        any = true;
    }
    any.then_some(v.checked_mul(mul)?)
}
