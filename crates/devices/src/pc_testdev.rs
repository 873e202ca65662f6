//! QEMU `pc-testdev` (hw/misc/pc-testdev.c), the ISA test device used by
//! kvm-unit-tests.
//!
//! Layout, as in QEMU: a 32-bit scratch register at ports 0xe0-0xe3 (any
//! access size; byte lanes selected by the port's low two bits), the same
//! register through a byte-wide window at 0xe8-0xeb, a "flush page" port
//! 0xe4 (a no-op here: guest memory has no host mapping to re-protect), IRQ
//! lines at ports 0x2000-0x2017 (writing a non-zero byte to 0x2000+n raises
//! ISA/GSI line n, zero lowers it; reads return 0) and a 64 KiB scratch
//! memory at 0xff000000.

/// Base of the scratch MMIO area.
pub const PC_TESTDEV_IOMEM_BASE: u64 = 0xff00_0000;
/// Size of the scratch MMIO area.
pub const PC_TESTDEV_IOMEM_LEN: u64 = 0x1_0000;
/// First IRQ-line port.
pub const PC_TESTDEV_IRQ_PORT: u16 = 0x2000;
/// Number of IRQ-line ports.
pub const PC_TESTDEV_IRQ_LINES: u16 = 24;

/// pc-testdev state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PcTestdev {
    /// Scratch register behind ports 0xe0 and 0xe8.
    pub ioport_data: u32,
    /// Scratch memory.
    pub iomem: Vec<u8>,
}

impl Default for PcTestdev {
    fn default() -> Self {
        Self::new()
    }
}

impl PcTestdev {
    /// Zeroed device.
    pub fn new() -> Self {
        Self { ioport_data: 0, iomem: vec![0; PC_TESTDEV_IOMEM_LEN as usize] }
    }

    fn lane_mask(port: u16, size: u8) -> (u32, u32) {
        let shift = u32::from(port & 3) * 8;
        let bits = u32::from(size.clamp(1, 4)) * 8;
        let mask = (u32::MAX >> (32 - bits)).wrapping_shl(shift);
        (mask, shift)
    }

    /// Read of the scratch register (ports 0xe0-0xe3, 0xe8-0xeb).
    pub fn scratch_read(&self, port: u16, size: u8) -> u32 {
        let (mask, shift) = Self::lane_mask(port, size);
        (self.ioport_data & mask) >> shift
    }

    /// Write of the scratch register.
    pub fn scratch_write(&mut self, port: u16, size: u8, value: u32) {
        let (mask, shift) = Self::lane_mask(port, size);
        self.ioport_data = (self.ioport_data & !mask) | (value.wrapping_shl(shift) & mask);
    }

    /// Scratch memory read at `offset` (bytes beyond the area read as 0).
    pub fn iomem_read(&self, offset: u64, size: u8) -> u64 {
        let mut v = 0u64;
        for i in 0..u64::from(size.min(8)) {
            let b =
                usize::try_from(offset.saturating_add(i)).ok().and_then(|o| self.iomem.get(o)).copied().unwrap_or(0);
            v |= u64::from(b) << (8 * i);
        }
        v
    }

    /// Scratch memory write at `offset`.
    pub fn iomem_write(&mut self, offset: u64, size: u8, value: u64) {
        for i in 0..u64::from(size.min(8)) {
            if let Some(b) = usize::try_from(offset.saturating_add(i)).ok().and_then(|o| self.iomem.get_mut(o)) {
                *b = (value >> (8 * i)) as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_lanes() {
        let mut t = PcTestdev::new();
        t.scratch_write(0xe0, 4, 0x1234_5678);
        assert_eq!(t.scratch_read(0xe0, 4), 0x1234_5678);
        assert_eq!(t.scratch_read(0xe1, 1), 0x56);
        t.scratch_write(0xea, 1, 0xab);
        assert_eq!(t.scratch_read(0xe0, 4), 0x12ab_5678);
        assert_eq!(t.scratch_read(0xe2, 2), 0x12ab);
    }

    #[test]
    fn iomem() {
        let mut t = PcTestdev::new();
        t.iomem_write(0x10, 8, 0x0102_0304_0506_0708);
        assert_eq!(t.iomem_read(0x10, 4), 0x0506_0708);
        assert_eq!(t.iomem_read(0x14, 2), 0x0304);
        t.iomem_write(0xfffe, 4, u64::MAX);
        assert_eq!(t.iomem_read(0xfffe, 4), 0xffff);
    }
}
