//! The Linux x86 boot protocol for bzImage kernels (the kernel's
//! `Documentation/arch/x86/boot.rst`, "THE LINUX/x86 BOOT PROTOCOL", and
//! its 64-bit boot protocol section).
//!
//! A bzImage starts with the real-mode setup code; its setup header at
//! offset 0x1f1 says how many 512-byte sectors of setup follow the boot
//! sector, where the protected-mode kernel wants to live
//! (`pref_address`), how much memory it needs in place to decompress
//! (`init_size`), and which entry points it has. Turtles uses the 64-bit
//! entry (protocol 2.12+, `XLF_KERNEL_64`): the protected-mode part is
//! copied to `pref_address` (which must be 2 MiB aligned), the boot
//! parameters ("zero page") are filled, and the CPU starts at
//! `load address + 0x200` in 64-bit mode with paging identity-mapping the
//! first 4 GiB, a GDT whose selector 0x10 is flat 64-bit code and 0x18
//! flat data, interrupts off, and RSI pointing at the zero page.

use super::LoadError;

/// "HdrS" at offset 0x202.
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// Minimum boot protocol: 2.12 has `xloadflags` and the 64-bit entry.
pub const MIN_VERSION: u16 = 0x020c;
/// `xloadflags`: the kernel has the 64-bit entry point at +0x200.
pub const XLF_KERNEL_64: u16 = 1 << 0;
/// `loadflags`: the protected-mode code is loaded at 0x100000 or above.
pub const LOADED_HIGH: u8 = 1 << 0;
/// `loadflags`: `heap_end_ptr` is valid.
pub const CAN_USE_HEAP: u8 = 1 << 7;
/// `type_of_loader` for a boot loader without an assigned id.
pub const LOADER_UNDEFINED: u8 = 0xff;

/// Offsets in `struct boot_params` (the zero page).
pub mod zp {
    /// `acpi_rsdp_addr` (u64).
    pub const ACPI_RSDP_ADDR: usize = 0x070;
    /// `ext_ramdisk_image` (u32, high half of the initrd address).
    pub const EXT_RAMDISK_IMAGE: usize = 0x0c0;
    /// `ext_ramdisk_size` (u32).
    pub const EXT_RAMDISK_SIZE: usize = 0x0c4;
    /// `ext_cmd_line_ptr` (u32).
    pub const EXT_CMD_LINE_PTR: usize = 0x0c8;
    /// `e820_entries` (u8).
    pub const E820_ENTRIES: usize = 0x1e8;
    /// The setup header.
    pub const HDR: usize = 0x1f1;
    /// `e820_table`: up to 128 entries of 20 bytes.
    pub const E820_TABLE: usize = 0x2d0;
    /// Maximum e820 entries in the zero page.
    pub const E820_MAX: usize = 128;
}

/// Offsets in the setup header, relative to the start of the file (the
/// zero page uses the same offsets).
pub mod hdr {
    /// `setup_sects` (u8).
    pub const SETUP_SECTS: usize = 0x1f1;
    /// `syssize` (u32): size of the protected-mode code in 16-byte units.
    pub const SYSSIZE: usize = 0x1f4;
    /// `boot_flag` (u16, 0xaa55).
    pub const BOOT_FLAG: usize = 0x1fe;
    /// `jump` (the byte at 0x201 is the header's length past 0x202).
    pub const JUMP: usize = 0x200;
    /// `header` ("HdrS").
    pub const HEADER: usize = 0x202;
    /// `version` (u16).
    pub const VERSION: usize = 0x206;
    /// `type_of_loader` (u8).
    pub const TYPE_OF_LOADER: usize = 0x210;
    /// `loadflags` (u8).
    pub const LOADFLAGS: usize = 0x211;
    /// `ramdisk_image` (u32).
    pub const RAMDISK_IMAGE: usize = 0x218;
    /// `ramdisk_size` (u32).
    pub const RAMDISK_SIZE: usize = 0x21c;
    /// `heap_end_ptr` (u16).
    pub const HEAP_END_PTR: usize = 0x224;
    /// `cmd_line_ptr` (u32).
    pub const CMD_LINE_PTR: usize = 0x228;
    /// `initrd_addr_max` (u32).
    pub const INITRD_ADDR_MAX: usize = 0x22c;
    /// `kernel_alignment` (u32).
    pub const KERNEL_ALIGNMENT: usize = 0x230;
    /// `relocatable_kernel` (u8).
    pub const RELOCATABLE: usize = 0x234;
    /// `xloadflags` (u16).
    pub const XLOADFLAGS: usize = 0x236;
    /// `cmdline_size` (u32).
    pub const CMDLINE_SIZE: usize = 0x238;
    /// `pref_address` (u64).
    pub const PREF_ADDRESS: usize = 0x258;
    /// `init_size` (u32).
    pub const INIT_SIZE: usize = 0x260;
}

/// What the setup header says, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BzImage {
    /// Boot protocol version.
    pub version: u16,
    /// File offset of the protected-mode kernel.
    pub kernel_offset: usize,
    /// Where it goes.
    pub load_addr: u64,
    /// Bytes it needs in place (decompression included).
    pub init_size: u64,
    /// Highest address the initrd may end at (exclusive).
    pub initrd_addr_max: u64,
    /// Longest command line, NUL excluded.
    pub cmdline_size: u64,
    /// Length of the setup header to copy into the zero page (from 0x1f1).
    pub header_len: usize,
}

fn u8_at(b: &[u8], off: usize) -> Option<u8> {
    b.get(off).copied()
}

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

/// Whether `kernel` carries a Linux setup header.
pub fn is_bzimage(kernel: &[u8]) -> bool {
    u32_at(kernel, hdr::HEADER) == Some(HDRS_MAGIC)
}

/// Parses and validates the setup header.
pub fn parse(kernel: &[u8]) -> Result<BzImage, LoadError> {
    let trunc = |what: &'static str, offset: usize| LoadError::Truncated {
        what,
        offset: offset as u64,
        file_len: kernel.len() as u64,
    };
    let version = u16_at(kernel, hdr::VERSION).ok_or(trunc("setup header", hdr::VERSION))?;
    if u16_at(kernel, hdr::BOOT_FLAG) != Some(0xaa55) {
        return Err(LoadError::BadLinuxHeader { what: "boot_flag is not 0xaa55" });
    }
    if version < MIN_VERSION {
        return Err(LoadError::LinuxProtocolTooOld { version });
    }
    let need = hdr::INIT_SIZE + 4;
    if kernel.len() < need {
        return Err(trunc("setup header", need));
    }
    let xloadflags = u16_at(kernel, hdr::XLOADFLAGS).unwrap_or(0);
    if xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LoadError::BadLinuxHeader { what: "no 64-bit entry point (XLF_KERNEL_64)" });
    }
    let mut setup_sects = usize::from(u8_at(kernel, hdr::SETUP_SECTS).unwrap_or(0));
    if setup_sects == 0 {
        setup_sects = 4;
    }
    let kernel_offset = (setup_sects + 1) * 512;
    if kernel_offset >= kernel.len() {
        return Err(trunc("protected-mode kernel", kernel_offset));
    }
    // The header says how long the protected-mode part is: a shorter file
    // is truncated (boot loaders that copy by syssize would read garbage).
    let syssize = u64::from(u32_at(kernel, hdr::SYSSIZE).unwrap_or(0)) * 16;
    let sys_end = kernel_offset as u64 + syssize;
    if sys_end > kernel.len() as u64 {
        return Err(LoadError::Truncated {
            what: "protected-mode kernel (syssize)",
            offset: sys_end,
            file_len: kernel.len() as u64,
        });
    }
    let load_addr = u64_at(kernel, hdr::PREF_ADDRESS).unwrap_or(0x100_0000);
    let align = u64::from(u32_at(kernel, hdr::KERNEL_ALIGNMENT).unwrap_or(0x20_0000)).max(0x20_0000);
    if !load_addr.is_multiple_of(align) || load_addr < 0x10_0000 {
        return Err(LoadError::BadLinuxHeader { what: "pref_address is not aligned to kernel_alignment" });
    }
    let payload = (kernel.len() - kernel_offset) as u64;
    let init_size = u64::from(u32_at(kernel, hdr::INIT_SIZE).unwrap_or(0)).max(payload);
    let header_len = 0x202 + usize::from(u8_at(kernel, hdr::JUMP + 1).unwrap_or(0)) - hdr::SETUP_SECTS;
    let header_len = header_len.min(0x2d0 - zp::HDR).min(kernel.len() - hdr::SETUP_SECTS);
    Ok(BzImage {
        version,
        kernel_offset,
        load_addr,
        init_size,
        initrd_addr_max: u64::from(u32_at(kernel, hdr::INITRD_ADDR_MAX).unwrap_or(0x37ff_ffff)) + 1,
        cmdline_size: u64::from(u32_at(kernel, hdr::CMDLINE_SIZE).unwrap_or(255)),
        header_len,
    })
}

/// Fills the zero page: the kernel's setup header, what the loader
/// decided, and the e820 map (`(addr, size, type)` entries).
#[allow(clippy::too_many_arguments)]
pub fn zero_page(
    kernel: &[u8],
    img: &BzImage,
    cmdline_addr: u32,
    initrd: Option<(u64, u64)>,
    rsdp: u64,
    e820: &[(u64, u64, u32)],
) -> Vec<u8> {
    let mut zp = vec![0u8; 4096];
    zp[zp::HDR..zp::HDR + img.header_len].copy_from_slice(&kernel[hdr::SETUP_SECTS..hdr::SETUP_SECTS + img.header_len]);
    let put32 = |zp: &mut [u8], off: usize, v: u32| zp[off..off + 4].copy_from_slice(&v.to_le_bytes());
    zp[hdr::TYPE_OF_LOADER] = LOADER_UNDEFINED;
    zp[hdr::LOADFLAGS] |= LOADED_HIGH | CAN_USE_HEAP;
    // The heap ends where the real-mode setup would have its stack; not
    // used by the 64-bit entry, but documented as required with
    // CAN_USE_HEAP.
    zp[hdr::HEAP_END_PTR..hdr::HEAP_END_PTR + 2].copy_from_slice(&0xfe00u16.to_le_bytes());
    put32(&mut zp, hdr::CMD_LINE_PTR, cmdline_addr);
    if let Some((addr, size)) = initrd {
        put32(&mut zp, hdr::RAMDISK_IMAGE, addr as u32);
        put32(&mut zp, hdr::RAMDISK_SIZE, size as u32);
        put32(&mut zp, zp::EXT_RAMDISK_IMAGE, (addr >> 32) as u32);
        put32(&mut zp, zp::EXT_RAMDISK_SIZE, (size >> 32) as u32);
    }
    zp[zp::ACPI_RSDP_ADDR..zp::ACPI_RSDP_ADDR + 8].copy_from_slice(&rsdp.to_le_bytes());
    let n = e820.len().min(zp::E820_MAX);
    zp[zp::E820_ENTRIES] = n as u8;
    for (i, &(addr, size, kind)) in e820.iter().take(n).enumerate() {
        let o = zp::E820_TABLE + i * 20;
        zp[o..o + 8].copy_from_slice(&addr.to_le_bytes());
        zp[o + 8..o + 16].copy_from_slice(&size.to_le_bytes());
        zp[o + 16..o + 20].copy_from_slice(&kind.to_le_bytes());
    }
    zp
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal bzImage: boot sector + 4 setup sectors + payload.
    fn image(version: u16, xlf: u16, pref: u64) -> Vec<u8> {
        let mut k = vec![0u8; 5 * 512 + 4096];
        k[hdr::SETUP_SECTS] = 4;
        k[hdr::BOOT_FLAG..hdr::BOOT_FLAG + 2].copy_from_slice(&0xaa55u16.to_le_bytes());
        k[hdr::JUMP + 1] = 0x6a; // header runs to 0x26c
        k[hdr::HEADER..hdr::HEADER + 4].copy_from_slice(&HDRS_MAGIC.to_le_bytes());
        k[hdr::VERSION..hdr::VERSION + 2].copy_from_slice(&version.to_le_bytes());
        k[hdr::XLOADFLAGS..hdr::XLOADFLAGS + 2].copy_from_slice(&xlf.to_le_bytes());
        k[hdr::PREF_ADDRESS..hdr::PREF_ADDRESS + 8].copy_from_slice(&pref.to_le_bytes());
        k[hdr::KERNEL_ALIGNMENT..hdr::KERNEL_ALIGNMENT + 4].copy_from_slice(&0x20_0000u32.to_le_bytes());
        k[hdr::INIT_SIZE..hdr::INIT_SIZE + 4].copy_from_slice(&0x80_0000u32.to_le_bytes());
        k[hdr::INITRD_ADDR_MAX..hdr::INITRD_ADDR_MAX + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        k[hdr::SYSSIZE..hdr::SYSSIZE + 4].copy_from_slice(&(4096u32 / 16).to_le_bytes());
        k
    }

    #[test]
    fn parses_a_modern_header() {
        let k = image(0x020f, XLF_KERNEL_64, 0x100_0000);
        assert!(is_bzimage(&k));
        let b = parse(&k).unwrap();
        assert_eq!(b.kernel_offset, 5 * 512);
        assert_eq!(b.load_addr, 0x100_0000);
        assert_eq!(b.init_size, 0x80_0000);
        assert_eq!(b.initrd_addr_max, 0x8000_0000);
        assert_eq!(b.header_len, 0x26c - 0x1f1);
    }

    #[test]
    fn rejects_old_protocols_missing_64bit_entry_and_bad_alignment() {
        assert_eq!(
            parse(&image(0x0206, XLF_KERNEL_64, 0x100_0000)),
            Err(LoadError::LinuxProtocolTooOld { version: 0x206 })
        );
        assert!(matches!(parse(&image(0x020f, 0, 0x100_0000)), Err(LoadError::BadLinuxHeader { .. })));
        assert!(matches!(parse(&image(0x020f, XLF_KERNEL_64, 0x100_1000)), Err(LoadError::BadLinuxHeader { .. })));
    }

    #[test]
    fn truncated_images_are_errors_not_panics() {
        let k = image(0x020f, XLF_KERNEL_64, 0x100_0000);
        for len in [0, 0x1f0, 0x203, 0x207, 0x263, 5 * 512, 5 * 512 + 4095] {
            let r = parse(&k[..len]);
            assert!(r.is_err(), "length {len}: {r:?}");
        }
    }

    #[test]
    fn zero_page_has_header_loader_fields_and_e820() {
        let k = image(0x020f, XLF_KERNEL_64, 0x100_0000);
        let b = parse(&k).unwrap();
        let z = zero_page(
            &k,
            &b,
            0x1_0000,
            Some((0x1_2345_6000, 0x1000)),
            0xf_0000,
            &[(0, 0x9fc00, 1), (0x10_0000, 0x100_0000, 1)],
        );
        assert_eq!(u32_at(&z, hdr::HEADER), Some(HDRS_MAGIC));
        assert_eq!(z[hdr::TYPE_OF_LOADER], 0xff);
        assert_eq!(z[hdr::LOADFLAGS] & (LOADED_HIGH | CAN_USE_HEAP), LOADED_HIGH | CAN_USE_HEAP);
        assert_eq!(u32_at(&z, hdr::CMD_LINE_PTR), Some(0x1_0000));
        assert_eq!(u32_at(&z, hdr::RAMDISK_IMAGE), Some(0x2345_6000));
        assert_eq!(u32_at(&z, zp::EXT_RAMDISK_IMAGE), Some(1));
        assert_eq!(u64_at(&z, zp::ACPI_RSDP_ADDR), Some(0xf_0000));
        assert_eq!(z[zp::E820_ENTRIES], 2);
        assert_eq!(u64_at(&z, zp::E820_TABLE + 20 + 8), Some(0x100_0000));
    }
}
