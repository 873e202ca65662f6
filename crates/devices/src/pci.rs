//! PCI bus 0 behind configuration mechanism #1 (ports 0xcf8 address,
//! 0xcfc-0xcff data), with an i440FX host bridge (00:00.0), a PIIX3 ISA
//! bridge (00:01.0) and optionally QEMU's pci-testdev (00:02.0).
//!
//! Follows the PCI Local Bus Specification 3.0: section 3.2.2.3.2
//! "Configuration Mechanism #1" (enable bit 31, bus/device/function/register
//! fields; only 32-bit accesses to 0xcf8 reach the address register; absent
//! functions read all-ones), section 6.1 "Configuration Space Organization"
//! (type 0 header) and section 6.2.5.1 "Address Maps" (BAR sizing: write
//! all-ones, read back the size mask with the type bits).
//!
//! pci-testdev follows QEMU's hw/misc/pci-testdev.c: BAR0 is a 4 KiB MMIO
//! BAR and BAR1 a 256-byte I/O BAR; each holds a set of tests (mmio: 0-2,
//! portio: 3-5, named `<type>-<no-eventfd|wildcard-eventfd|datamatch-eventfd>`).
//! Writing test number N to offset 0 selects test N of that BAR's type; the
//! selected test's header is then readable byte by byte
//! (`test:u8 width:u8 pad:u16 offset:u32 data:u8 pad:u24 count:u32 name`),
//! and each write at its `offset` (wildcard) or of `data` with the header's
//! width (datamatch) increments `count`.
//!
//! BARs are pre-assigned as a BIOS would ([`TESTDEV_MMIO_BASE`],
//! [`TESTDEV_IO_BASE`]) with decoding enabled, so firmware-less guests can use
//! the device directly.

/// Config address port.
pub const PCI_CONFIG_ADDRESS: u16 = 0xcf8;
/// Config data port (0xcfc-0xcff).
pub const PCI_CONFIG_DATA: u16 = 0xcfc;
/// pci-testdev default BAR0 (MMIO) address.
pub const TESTDEV_MMIO_BASE: u64 = 0xfe00_0000;
/// pci-testdev BAR0 size.
pub const TESTDEV_MMIO_SIZE: u64 = 4096;
/// pci-testdev default BAR1 (I/O) address.
pub const TESTDEV_IO_BASE: u16 = 0xc000;
/// pci-testdev BAR1 size.
pub const TESTDEV_IO_SIZE: u16 = 256;
/// pci-testdev device number on bus 0.
pub const TESTDEV_SLOT: u8 = 2;

const CMD_IO: u16 = 1;
const CMD_MEM: u16 = 2;

/// A BAR: size and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    /// Size in bytes (power of two), 0 = unimplemented.
    pub size: u32,
    /// I/O space BAR.
    pub io: bool,
}

/// One PCI function's 256-byte configuration space.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciFunction {
    /// Configuration bytes.
    pub config: Vec<u8>,
    /// Per-byte writable masks.
    pub wmask: Vec<u8>,
    /// BAR0-BAR5.
    pub bars: [Bar; 6],
}

impl PciFunction {
    /// A type 0 function with the given IDs and class code
    /// (`class << 8 | subclass`, programming interface in `prog_if`).
    pub fn new(vendor: u16, device: u16, class: u16, prog_if: u8, header_type: u8, revision: u8) -> Self {
        let mut config = vec![0u8; 256];
        config[0..2].copy_from_slice(&vendor.to_le_bytes());
        config[2..4].copy_from_slice(&device.to_le_bytes());
        config[8] = revision;
        config[9] = prog_if;
        config[10..12].copy_from_slice(&class.to_le_bytes());
        config[0x0e] = header_type;
        let mut wmask = vec![0u8; 256];
        wmask[4] = 0x07; // command: I/O, memory, bus master
        wmask[0x0c] = 0xff; // cache line size
        wmask[0x0d] = 0xff; // latency timer
        wmask[0x3c] = 0xff; // interrupt line
        for b in &mut wmask[0x40..] {
            *b = 0xff;
        }
        Self { config, wmask, bars: [Bar { size: 0, io: false }; 6] }
    }

    /// Declares BAR `n` with an initial address.
    pub fn set_bar(&mut self, n: usize, bar: Bar, addr: u32) {
        if let Some(slot) = self.bars.get_mut(n) {
            *slot = bar;
            self.write_bar(n, addr);
        }
    }

    fn write_bar(&mut self, n: usize, value: u32) {
        let bar = self.bars[n];
        let v = if bar.size == 0 {
            0
        } else if bar.io {
            (value & !(bar.size - 1)) | 1
        } else {
            value & !(bar.size - 1)
        };
        let off = 0x10 + 4 * n;
        self.config[off..off + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Command register.
    pub fn command(&self) -> u16 {
        u16::from_le_bytes([self.config[4], self.config[5]])
    }

    /// Address of BAR `n` with the type bits removed.
    pub fn bar_addr(&self, n: usize) -> u32 {
        let off = 0x10 + 4 * n;
        let v =
            u32::from_le_bytes([self.config[off], self.config[off + 1], self.config[off + 2], self.config[off + 3]]);
        if self.bars[n].io {
            v & !3
        } else {
            v & !0xf
        }
    }

    /// Config read of `size` bytes at `reg` (bytes past 0xff read 0xff).
    pub fn read(&self, reg: u8, size: u8) -> u32 {
        let mut v = 0u32;
        for i in 0..u32::from(size.clamp(1, 4)) {
            let b = self.config.get(usize::from(reg) + i as usize).copied().unwrap_or(0xff);
            v |= u32::from(b) << (8 * i);
        }
        v
    }

    /// Config write of `size` bytes at `reg`.
    pub fn write(&mut self, reg: u8, size: u8, value: u32) {
        let reg = usize::from(reg);
        if (0x10..0x28).contains(&reg) {
            // BARs are only updated as whole dwords; narrower writes merge.
            let n = (reg - 0x10) / 4;
            let off = 0x10 + 4 * n;
            let mut cur = self.config[off..off + 4].to_vec();
            for i in 0..usize::from(size.clamp(1, 4)) {
                if let Some(b) = cur.get_mut(reg - off + i) {
                    *b = (value >> (8 * i)) as u8;
                }
            }
            self.write_bar(n, u32::from_le_bytes([cur[0], cur[1], cur[2], cur[3]]));
            return;
        }
        for i in 0..usize::from(size.clamp(1, 4)) {
            let Some(&mask) = self.wmask.get(reg + i) else {
                break;
            };
            let b = (value >> (8 * i)) as u8;
            self.config[reg + i] = (self.config[reg + i] & !mask) | (b & mask);
        }
    }
}

/// One pci-testdev test (see the module docs for the header layout).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestdevTest {
    /// Header bytes followed by the NUL-terminated name.
    pub hdr: Vec<u8>,
    /// Whether the written data must match.
    pub match_data: bool,
}

impl TestdevTest {
    fn new(index: u8) -> Self {
        const TESTS: [&str; 3] = ["no-eventfd", "wildcard-eventfd", "datamatch-eventfd"];
        let is_mem = index < 3;
        let kind = if is_mem { "mmio" } else { "portio" };
        let test = TESTS[usize::from(index % 3)];
        let name = format!("{kind}-{test}");
        let match_data = test != "wildcard-eventfd";
        let offset: u32 = if is_mem { 2048 } else { 128 } + u32::from(index);
        let mut hdr = vec![0u8; 16];
        hdr[0] = index;
        hdr[1] = 1;
        hdr[4..8].copy_from_slice(&offset.to_le_bytes());
        hdr[8] = if match_data { 0xfa } else { 0xce };
        hdr.extend_from_slice(name.as_bytes());
        hdr.push(0);
        Self { hdr, match_data }
    }

    fn offset(&self) -> u64 {
        u64::from(u32::from_le_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]]))
    }

    /// Hit counter.
    pub fn count(&self) -> u32 {
        u32::from_le_bytes([self.hdr[12], self.hdr[13], self.hdr[14], self.hdr[15]])
    }
}

/// pci-testdev test state (BAR contents).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciTestdev {
    /// The six tests (0-2 MMIO, 3-5 port I/O).
    pub tests: Vec<TestdevTest>,
    /// Selected test.
    pub current: Option<usize>,
}

impl Default for PciTestdev {
    fn default() -> Self {
        Self::new()
    }
}

impl PciTestdev {
    /// All tests with zero counts, none selected.
    pub fn new() -> Self {
        Self { tests: (0..6).map(TestdevTest::new).collect(), current: None }
    }

    /// BAR read (both BARs): one byte of the selected test's header,
    /// sign-extended as QEMU's `char` buffer is; 0 when nothing is selected
    /// or past the end.
    pub fn read(&self, offset: u64, size: u8) -> u64 {
        let Some(test) = self.current.and_then(|c| self.tests.get(c)) else {
            return 0;
        };
        if offset.saturating_add(u64::from(size)) >= test.hdr.len() as u64 {
            return 0;
        }
        let b = test.hdr[offset as usize] as i8;
        (b as i64 as u64) & crate::size_mask(size)
    }

    /// BAR write; `io` selects the port-I/O test set.
    pub fn write(&mut self, io: bool, offset: u64, size: u8, value: u64) {
        if offset == 0 {
            self.current = None;
            if value < 3 {
                let t = usize::from(io) * 3 + value as usize;
                if let Some(test) = self.tests.get_mut(t) {
                    test.hdr[12..16].fill(0);
                }
                self.current = Some(t);
            }
            return;
        }
        let Some(test) = self.current.and_then(|c| self.tests.get_mut(c)) else {
            return;
        };
        if offset != test.offset() {
            return;
        }
        if test.match_data && (size != 1 || value != u64::from(test.hdr[8])) {
            return;
        }
        let count = test.count().wrapping_add(1);
        test.hdr[12..16].copy_from_slice(&count.to_le_bytes());
    }
}

/// The PCI bus: host bridge, ISA bridge and optional pci-testdev.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PciBus {
    /// Config address register.
    pub address: u32,
    /// Functions by (device, function).
    pub functions: Vec<((u8, u8), PciFunction)>,
    /// pci-testdev register state, when present.
    pub testdev: Option<PciTestdev>,
}

impl PciBus {
    /// The bus of QEMU's `pc` machine; `testdev` adds pci-testdev at 00:02.0.
    pub fn new(testdev: bool) -> Self {
        let host = PciFunction::new(0x8086, 0x1237, 0x0600, 0, 0, 0x02);
        let mut isa = PciFunction::new(0x8086, 0x7000, 0x0601, 0, 0x80, 0);
        // PIRQ route control registers: routing disabled.
        isa.config[0x60..0x64].fill(0x80);
        let mut functions = vec![((0, 0), host), ((1, 0), isa)];
        if testdev {
            let mut f = PciFunction::new(0x1b36, 0x0005, 0x00ff, 0, 0, 0);
            f.config[0x2c..0x30].copy_from_slice(&[0xf4, 0x1a, 0x00, 0x11]);
            f.set_bar(0, Bar { size: TESTDEV_MMIO_SIZE as u32, io: false }, TESTDEV_MMIO_BASE as u32);
            f.set_bar(1, Bar { size: u32::from(TESTDEV_IO_SIZE), io: true }, u32::from(TESTDEV_IO_BASE));
            f.config[4] = (CMD_IO | CMD_MEM) as u8;
            functions.push(((TESTDEV_SLOT, 0), f));
        }
        Self { address: 0, functions, testdev: testdev.then(PciTestdev::new) }
    }

    fn function(&mut self, dev: u8, func: u8) -> Option<&mut PciFunction> {
        self.functions.iter_mut().find(|(k, _)| *k == (dev, func)).map(|(_, f)| f)
    }

    fn target(&self, port: u16) -> Option<(u8, u8, u8, u8)> {
        let a = self.address;
        if a & 0x8000_0000 == 0 {
            return None;
        }
        let bus = (a >> 16) as u8;
        let dev = ((a >> 11) & 0x1f) as u8;
        let func = ((a >> 8) & 7) as u8;
        let reg = (a & 0xfc) as u8 + (port & 3) as u8;
        Some((bus, dev, func, reg))
    }

    /// Port read of 0xcf8 (32-bit only) or 0xcfc-0xcff.
    pub fn io_read(&mut self, port: u16, size: u8) -> u32 {
        let mask = crate::size_mask(size) as u32;
        match port {
            PCI_CONFIG_ADDRESS if size == 4 => self.address,
            0xcfc..=0xcff => match self.target(port) {
                Some((0, dev, func, reg)) => match self.function(dev, func) {
                    Some(f) => f.read(reg, size) & mask,
                    None => mask,
                },
                _ => mask,
            },
            _ => mask,
        }
    }

    /// Port write of 0xcf8 (32-bit only) or 0xcfc-0xcff.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32) {
        match port {
            PCI_CONFIG_ADDRESS if size == 4 => self.address = value & 0x80ff_fffc,
            0xcfc..=0xcff => {
                if let Some((0, dev, func, reg)) = self.target(port) {
                    if let Some(f) = self.function(dev, func) {
                        f.write(reg, size, value);
                    }
                }
            }
            _ => {}
        }
    }

    fn testdev_fn(&self) -> Option<&PciFunction> {
        self.testdev.as_ref()?;
        self.functions.iter().find(|(k, _)| *k == (TESTDEV_SLOT, 0)).map(|(_, f)| f)
    }

    /// Offset within pci-testdev's MMIO BAR when decoding is on.
    pub fn testdev_mmio_offset(&self, gpa: u64) -> Option<u64> {
        let f = self.testdev_fn()?;
        let base = u64::from(f.bar_addr(0));
        (f.command() & CMD_MEM != 0 && base != 0 && gpa >= base && gpa - base < TESTDEV_MMIO_SIZE).then(|| gpa - base)
    }

    /// Offset within pci-testdev's I/O BAR when decoding is on.
    pub fn testdev_io_offset(&self, port: u16) -> Option<u64> {
        let f = self.testdev_fn()?;
        let base = f.bar_addr(1);
        let port = u32::from(port);
        (f.command() & CMD_IO != 0 && base != 0 && port >= base && port - base < u32::from(TESTDEV_IO_SIZE))
            .then(|| u64::from(port - base))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg_addr(dev: u32, reg: u32) -> u32 {
        0x8000_0000 | (dev << 11) | reg
    }

    #[test]
    fn ids_and_absent_devices() {
        let mut bus = PciBus::new(false);
        bus.io_write(0xcf8, 4, cfg_addr(0, 0));
        assert_eq!(bus.io_read(0xcf8, 4), cfg_addr(0, 0));
        assert_eq!(bus.io_read(0xcfc, 4), 0x1237_8086);
        bus.io_write(0xcf8, 4, cfg_addr(0, 8));
        assert_eq!(bus.io_read(0xcfc, 4) >> 8, 0x06_0000);
        bus.io_write(0xcf8, 4, cfg_addr(1, 0));
        assert_eq!(bus.io_read(0xcfe, 2), 0x7000);
        bus.io_write(0xcf8, 4, cfg_addr(1, 0xc));
        assert_eq!(bus.io_read(0xcfe, 1), 0x80);
        bus.io_write(0xcf8, 4, cfg_addr(5, 0));
        assert_eq!(bus.io_read(0xcfc, 4), 0xffff_ffff);
        assert_eq!(bus.io_read(0xcfc, 2), 0xffff);
        bus.io_write(0xcf8, 4, 0);
        assert_eq!(bus.io_read(0xcfc, 4), 0xffff_ffff, "enable bit clear");
    }

    #[test]
    fn bar_sizing() {
        let mut bus = PciBus::new(true);
        bus.io_write(0xcf8, 4, cfg_addr(2, 0));
        assert_eq!(bus.io_read(0xcfc, 4), 0x0005_1b36);
        bus.io_write(0xcf8, 4, cfg_addr(2, 0x10));
        assert_eq!(u64::from(bus.io_read(0xcfc, 4)), TESTDEV_MMIO_BASE);
        bus.io_write(0xcfc, 4, 0xffff_ffff);
        assert_eq!(bus.io_read(0xcfc, 4), 0xffff_f000);
        bus.io_write(0xcf8, 4, cfg_addr(2, 0x14));
        bus.io_write(0xcfc, 4, 0xffff_ffff);
        assert_eq!(bus.io_read(0xcfc, 4), 0xffff_ff01);
        bus.io_write(0xcfc, 4, 0xd000);
        assert_eq!(bus.testdev_io_offset(0xd010), Some(0x10));
        bus.io_write(0xcf8, 4, cfg_addr(2, 0x18));
        bus.io_write(0xcfc, 4, 0xffff_ffff);
        assert_eq!(bus.io_read(0xcfc, 4), 0);
        // Command register gates decoding.
        bus.io_write(0xcf8, 4, cfg_addr(2, 4));
        bus.io_write(0xcfc, 2, 0);
        assert_eq!(bus.testdev_io_offset(0xd010), None);
    }

    #[test]
    fn testdev_protocol() {
        let mut t = PciTestdev::new();
        assert_eq!(t.read(0, 1), 0);
        // MMIO datamatch test.
        t.write(false, 0, 1, 2);
        assert_eq!(t.read(0, 1), 2);
        assert_eq!(t.read(1, 1), 1);
        let off = (0..4).fold(0, |a, i| a | (t.read(4 + i, 1) << (8 * i)));
        assert_eq!(off, 2048 + 2);
        assert_eq!(t.read(8, 1), 0xfa);
        for _ in 0..16 {
            t.write(false, off, 1, 0xfa);
        }
        t.write(false, off, 1, 0x11);
        t.write(false, off, 2, 0xfa);
        assert_eq!(t.read(12, 4), 16);
        let name: Vec<u8> = (16..).map(|i| t.read(i, 1) as u8).take_while(|&b| b != 0).collect();
        assert_eq!(name, b"mmio-datamatch-eventfd");
        // Port I/O wildcard test.
        t.write(true, 0, 1, 1);
        assert_eq!(t.read(0, 1), 4);
        t.write(true, 128 + 4, 4, 0x1234);
        assert_eq!(t.read(12, 4), 1);
        t.write(true, 0, 1, 9);
        assert_eq!(t.current, None);
    }
}
