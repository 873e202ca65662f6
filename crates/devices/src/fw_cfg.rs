//! QEMU firmware configuration device, traditional I/O interface: selector
//! at port 0x510 (16-bit write), data at 0x511 (8-bit read).
//!
//! Follows QEMU's `docs/specs/fw_cfg.rst`: "Selector (Control) Register",
//! "Data Register" (reads past the end of an item return 0), "Firmware
//! Configuration Items" (signature 0x0000 = "QEMU", feature bitmap 0x0001 =
//! 1: traditional interface only, no DMA) and "File Directory" (key 0x0019:
//! big-endian count, then per file a big-endian size, select key, reserved
//! word and a 56-byte NUL-padded name). Writes through the data port are
//! ignored (deprecated in the spec).

use std::collections::BTreeMap;

/// Selector port.
pub const FW_CFG_PORT_SEL: u16 = 0x510;
/// Data port.
pub const FW_CFG_PORT_DATA: u16 = 0x511;

/// Well-known item keys.
pub mod keys {
    /// "QEMU".
    pub const SIGNATURE: u16 = 0x00;
    /// Feature bitmap (bit 0 traditional interface, bit 1 DMA).
    pub const ID: u16 = 0x01;
    /// VM UUID (16 bytes).
    pub const UUID: u16 = 0x02;
    /// RAM size, u64 little-endian.
    pub const RAM_SIZE: u16 = 0x03;
    /// No-graphics flag, u16.
    pub const NOGRAPHIC: u16 = 0x04;
    /// Number of boot CPUs, u16.
    pub const NB_CPUS: u16 = 0x05;
    /// Initrd size, u32.
    pub const INITRD_SIZE: u16 = 0x0b;
    /// Maximum CPUs, u16.
    pub const MAX_CPUS: u16 = 0x0f;
    /// Kernel command line size including the NUL, u32.
    pub const CMDLINE_SIZE: u16 = 0x14;
    /// Kernel command line bytes including the NUL.
    pub const CMDLINE_DATA: u16 = 0x15;
    /// File directory.
    pub const FILE_DIR: u16 = 0x19;
    /// First key assigned to files.
    pub const FILE_FIRST: u16 = 0x20;
}

/// The fw_cfg device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FwCfg {
    /// Items by key.
    pub items: BTreeMap<u16, Vec<u8>>,
    /// Files in directory order: (name, key).
    pub files: Vec<(String, u16)>,
    /// Current selector.
    pub selector: u16,
    /// Read offset in the selected item.
    pub offset: usize,
}

impl FwCfg {
    /// An empty device with only the signature and feature items.
    pub fn new() -> Self {
        let mut fw = Self::default();
        fw.add_item(keys::SIGNATURE, b"QEMU".to_vec());
        fw.add_item(keys::ID, 1u32.to_le_bytes().to_vec());
        fw.add_item(keys::UUID, vec![0; 16]);
        fw.add_item(keys::NOGRAPHIC, 1u16.to_le_bytes().to_vec());
        fw.rebuild_dir();
        fw
    }

    /// Sets item `key` to `data`.
    pub fn add_item(&mut self, key: u16, data: Vec<u8>) {
        self.items.insert(key, data);
    }

    /// Adds (or replaces) a named file and updates the directory.
    pub fn add_file(&mut self, name: &str, data: Vec<u8>) {
        let key = match self.files.iter().find(|(n, _)| n == name) {
            Some(&(_, key)) => key,
            None => {
                let key = keys::FILE_FIRST + self.files.len() as u16;
                self.files.push((name.to_string(), key));
                key
            }
        };
        self.items.insert(key, data);
        self.rebuild_dir();
    }

    fn rebuild_dir(&mut self) {
        let mut dir = (self.files.len() as u32).to_be_bytes().to_vec();
        for (name, key) in &self.files {
            let size = self.items.get(key).map_or(0, Vec::len) as u32;
            dir.extend_from_slice(&size.to_be_bytes());
            dir.extend_from_slice(&key.to_be_bytes());
            dir.extend_from_slice(&0u16.to_be_bytes());
            let mut n = [0u8; 56];
            let bytes = name.as_bytes();
            let len = bytes.len().min(55);
            n[..len].copy_from_slice(&bytes[..len]);
            dir.extend_from_slice(&n);
        }
        self.items.insert(keys::FILE_DIR, dir);
    }

    /// Selector write: selects an item and rewinds.
    pub fn select(&mut self, key: u16) {
        self.selector = key;
        self.offset = 0;
    }

    /// Data port read: next byte of the selected item, 0 past its end.
    pub fn read_byte(&mut self) -> u8 {
        let b = self.items.get(&self.selector).and_then(|d| d.get(self.offset)).copied().unwrap_or(0);
        self.offset = self.offset.saturating_add(1);
        b
    }

    /// Port read (0x510 reads as 0, 0x511 returns data bytes, packed
    /// little-endian for wider accesses).
    pub fn io_read(&mut self, port: u16, size: u8) -> u32 {
        match port {
            FW_CFG_PORT_DATA => {
                let mut v = 0u32;
                for i in 0..u32::from(size.clamp(1, 4)) {
                    v |= u32::from(self.read_byte()) << (8 * i);
                }
                v
            }
            _ => 0,
        }
    }

    /// Port write: 0x510 selects, data writes are ignored.
    pub fn io_write(&mut self, port: u16, value: u32) {
        if port == FW_CFG_PORT_SEL {
            self.select(value as u16);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_item(fw: &mut FwCfg, key: u16, len: usize) -> Vec<u8> {
        fw.io_write(FW_CFG_PORT_SEL, u32::from(key));
        (0..len).map(|_| fw.io_read(FW_CFG_PORT_DATA, 1) as u8).collect()
    }

    #[test]
    fn signature_id_and_past_end() {
        let mut fw = FwCfg::new();
        assert_eq!(read_item(&mut fw, 0, 6), b"QEMU\0\0");
        assert_eq!(read_item(&mut fw, 1, 4), [1, 0, 0, 0]);
        assert_eq!(read_item(&mut fw, 0x1234, 2), [0, 0]);
    }

    #[test]
    fn file_directory() {
        let mut fw = FwCfg::new();
        fw.add_file("etc/e820", vec![1, 2, 3]);
        fw.add_file("etc/other", vec![9; 70]);
        let dir = read_item(&mut fw, keys::FILE_DIR, 4 + 2 * 64);
        assert_eq!(&dir[..4], &[0, 0, 0, 2]);
        assert_eq!(&dir[4..8], &[0, 0, 0, 3]);
        assert_eq!(&dir[8..10], &[0, 0x20]);
        assert_eq!(&dir[12..20], b"etc/e820");
        assert_eq!(&dir[68..72], &[0, 0, 0, 70]);
        assert_eq!(read_item(&mut fw, 0x20, 4), [1, 2, 3, 0]);
    }
}
