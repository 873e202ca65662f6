//! QEMU fw_cfg, I/O port interface (QEMU docs/specs/fw_cfg.rst): write a
//! 16-bit key to the selector port 0x510, then read the item byte by byte
//! from the data port 0x511 (reading past the end returns zeros).

use crate::arch::{inb, outw};

/// Selector port.
pub const SELECTOR: u16 = 0x510;
/// Data port.
pub const DATA: u16 = 0x511;

/// Well-known keys.
pub mod key {
    /// "QEMU" signature.
    pub const SIGNATURE: u16 = 0x00;
    /// Feature bitmap (bit 0: traditional interface, bit 1: DMA).
    pub const ID: u16 = 0x01;
    /// RAM size in bytes (64-bit).
    pub const RAM_SIZE: u16 = 0x03;
    /// Number of boot CPUs (16-bit).
    pub const NB_CPUS: u16 = 0x05;
    /// Maximum CPUs (16-bit).
    pub const MAX_CPUS: u16 = 0x0f;
    /// Kernel command line size (32-bit, including the NUL).
    pub const CMDLINE_SIZE: u16 = 0x14;
    /// Kernel command line bytes.
    pub const CMDLINE_DATA: u16 = 0x15;
    /// File directory.
    pub const FILE_DIR: u16 = 0x19;
}

/// Selects `key` and reads `buf.len()` bytes of it.
pub fn read(key: u16, buf: &mut [u8]) {
    // SAFETY: fw_cfg ports; selecting and reading have no other effects.
    unsafe {
        outw(SELECTOR, key);
        for b in buf.iter_mut() {
            *b = inb(DATA);
        }
    }
}

/// Continues reading the currently selected item.
pub fn read_more(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: fw_cfg data port read.
        *b = unsafe { inb(DATA) };
    }
}

/// Reads a little-endian integer item of up to 8 bytes.
pub fn read_le(key: u16, len: usize) -> u64 {
    let mut b = [0u8; 8];
    read(key, &mut b[..len.min(8)]);
    u64::from_le_bytes(b)
}

/// True if the "QEMU" signature is present.
pub fn present() -> bool {
    let mut sig = [0u8; 4];
    read(key::SIGNATURE, &mut sig);
    &sig == b"QEMU"
}

/// Number of boot CPUs, if fw_cfg is present.
pub fn cpu_count() -> Option<u32> {
    present().then(|| read_le(key::NB_CPUS, 2) as u32)
}

/// One entry of the file directory.
#[derive(Clone, Copy)]
pub struct File {
    /// Size in bytes.
    pub size: u32,
    /// Selector key.
    pub select: u16,
    /// NUL-padded name.
    pub name: [u8; 56],
}

impl File {
    /// The name up to the first NUL.
    pub fn name(&self) -> &str {
        let n = self.name.iter().position(|&b| b == 0).unwrap_or(56);
        core::str::from_utf8(&self.name[..n]).unwrap_or("?")
    }
}

/// Calls `f` for every file directory entry (big-endian count, then 64-byte
/// entries: be32 size, be16 select, u16 reserved, name[56]).
pub fn for_each_file(mut f: impl FnMut(&File)) -> u32 {
    let mut cnt = [0u8; 4];
    read(key::FILE_DIR, &mut cnt);
    let n = u32::from_be_bytes(cnt);
    for _ in 0..n {
        let mut e = [0u8; 64];
        read_more(&mut e);
        let mut file = File {
            size: u32::from_be_bytes([e[0], e[1], e[2], e[3]]),
            select: u16::from_be_bytes([e[4], e[5]]),
            name: [0; 56],
        };
        file.name.copy_from_slice(&e[8..64]);
        f(&file);
    }
    n
}

/// Finds a file by name.
pub fn find_file(name: &str) -> Option<File> {
    let mut found = None;
    for_each_file(|f| {
        if found.is_none() && f.name() == name {
            found = Some(*f);
        }
    });
    found
}
