//! Guest-physical memory as the CPU sees it: RAM plus the bookkeeping that
//! keeps the decoded-instruction cache coherent with writes.
//!
//! RAM is one host allocation. Below 4 GiB it occupies `[0, low_end)`; what
//! does not fit below the PCI hole is placed from 4 GiB up, as on a PC.
//! Everything outside RAM is MMIO and goes to the [`Bus`](crate::Bus).
//!
//! Coherence with decoded code (self-modifying code, loaders): every 4 KiB
//! page has a write generation. A page from which instructions were decoded
//! is marked as a *code page*; the fast write path (the write TLB) never maps
//! code pages, so every write to one goes through [`Memory::note_code_write`],
//! which bumps the page's generation and unmarks it. Decoded blocks remember
//! the generation they were decoded at and are discarded when it moved.
//! `code_epoch` moves whenever a page becomes a code page so that every vCPU
//! drops write-TLB entries that might point at it.

use thiserror::Error;

/// Start of the PCI/MMIO hole below 4 GiB; RAM above it moves to 4 GiB.
pub const LOW_RAM_LIMIT: u64 = 0xe000_0000;
/// Where high RAM starts.
pub const HIGH_RAM_BASE: u64 = 0x1_0000_0000;
/// Page size used by the bookkeeping.
pub const PAGE_SIZE: u64 = 4096;
/// Where the hypervisor's private memory starts: physical memory that is
/// not guest RAM, for structures only the processor reads (L0's EPT
/// tables). L0 never maps it into a guest, so no guest can reach it.
pub const PRIVATE_BASE: u64 = 0xfc_0000_0000;
/// Most private memory a machine may use (64 MiB).
pub const PRIVATE_MAX: u64 = 64 << 20;

/// Errors of host-side memory accesses (loaders, devices).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum MemError {
    /// The range is not entirely backed by RAM.
    #[error("guest-physical range {addr:#x}+{len:#x} is not RAM")]
    NotRam {
        /// Start of the range.
        addr: u64,
        /// Length of the range.
        len: u64,
    },
    /// The requested RAM size is not usable.
    #[error("invalid RAM size {0:#x}: must be a non-zero multiple of 4 KiB")]
    BadSize(u64),
}

/// Guest RAM and its code-coherence bookkeeping.
pub struct Memory {
    ram: Vec<u8>,
    low_end: u64,
    high_end: u64,
    /// Per-page write generation, indexed by RAM page number.
    page_gen: Vec<u32>,
    /// Per-page "instructions were decoded from here" flag.
    code: Vec<bool>,
    code_epoch: u64,
    /// Hypervisor-private pages from [`PRIVATE_BASE`], allocated on
    /// demand.
    private: Vec<u8>,
}

impl Memory {
    /// Allocates `size` bytes of zeroed RAM.
    pub fn new(size: u64) -> Result<Memory, MemError> {
        if size == 0 || !size.is_multiple_of(PAGE_SIZE) || size > (1 << 40) {
            return Err(MemError::BadSize(size));
        }
        let low = size.min(LOW_RAM_LIMIT);
        let high = size - low;
        let pages = (size / PAGE_SIZE) as usize;
        Ok(Memory {
            ram: vec![0; size as usize],
            low_end: low,
            high_end: if high > 0 { HIGH_RAM_BASE + high } else { 0 },
            page_gen: vec![0; pages],
            code: vec![false; pages],
            code_epoch: 0,
            private: Vec::new(),
        })
    }

    /// Total RAM in bytes.
    pub fn size(&self) -> u64 {
        self.ram.len() as u64
    }

    /// End of RAM below 4 GiB.
    pub fn low_end(&self) -> u64 {
        self.low_end
    }

    /// End of RAM above 4 GiB (0 when there is none).
    pub fn high_end(&self) -> u64 {
        self.high_end
    }

    /// Offset into the RAM buffer of a guest-physical address, or `None`
    /// when the address is not RAM.
    #[inline(always)]
    pub fn ram_offset(&self, gpa: u64) -> Option<usize> {
        if gpa < self.low_end {
            Some(gpa as usize)
        } else if gpa >= HIGH_RAM_BASE && gpa < self.high_end {
            Some((gpa - HIGH_RAM_BASE + self.low_end) as usize)
        } else {
            None
        }
    }

    /// The RAM buffer (for the TLB fast path, which caches offsets into it).
    #[inline(always)]
    pub fn ram(&self) -> &[u8] {
        &self.ram
    }

    /// The RAM buffer, writable. Callers must not write code pages through
    /// this; the CPU's write TLB guarantees it.
    #[inline(always)]
    pub(crate) fn ram_mut(&mut self) -> &mut [u8] {
        &mut self.ram
    }

    /// Whether the page at RAM offset `off` holds decoded code.
    #[inline(always)]
    pub fn is_code_page(&self, off: usize) -> bool {
        self.code[off >> 12]
    }

    /// The write generation of the page at RAM offset `off`.
    #[inline(always)]
    pub fn page_gen(&self, off: usize) -> u32 {
        self.page_gen[off >> 12]
    }

    /// Marks the page at RAM offset `off` as holding decoded code.
    pub fn mark_code_page(&mut self, off: usize) {
        let p = off >> 12;
        if !self.code[p] {
            self.code[p] = true;
            self.code_epoch += 1;
        }
    }

    /// Moves whenever a page becomes a code page.
    #[inline(always)]
    pub fn code_epoch(&self) -> u64 {
        self.code_epoch
    }

    /// Records a write to the page at RAM offset `off`: decoded code from
    /// it is stale from now on.
    #[inline]
    pub fn note_code_write(&mut self, off: usize) {
        let p = off >> 12;
        if self.code[p] {
            self.code[p] = false;
            self.page_gen[p] = self.page_gen[p].wrapping_add(1);
        }
    }

    /// Allocates a zeroed 4 KiB page of private memory and returns its
    /// physical address; `None` once [`PRIVATE_MAX`] is used up.
    pub fn alloc_private_page(&mut self) -> Option<u64> {
        let used = self.private.len() as u64;
        if used + PAGE_SIZE > PRIVATE_MAX {
            return None;
        }
        self.private.resize((used + PAGE_SIZE) as usize, 0);
        Some(PRIVATE_BASE + used)
    }

    /// Offset into private memory of a range that lies entirely in it.
    fn private_range(&self, pa: u64, len: u64) -> Option<usize> {
        let off = pa.checked_sub(PRIVATE_BASE)?;
        (off.checked_add(len)? <= self.private.len() as u64).then_some(off as usize)
    }

    /// Host-side read of guest RAM (loaders, devices, tests, software walks
    /// of guest-owned structures). Private memory is not RAM: reading it
    /// this way fails like any other address outside RAM.
    pub fn read(&self, gpa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        let off = self.range(gpa, buf.len() as u64)?;
        buf.copy_from_slice(&self.ram[off..off + buf.len()]);
        Ok(())
    }

    /// Host-side write of guest RAM; keeps decoded code coherent. Private
    /// memory is not reachable this way.
    pub fn write(&mut self, gpa: u64, data: &[u8]) -> Result<(), MemError> {
        let off = self.range(gpa, data.len() as u64)?;
        let mut p = off & !0xfff;
        while p < off + data.len() {
            self.note_code_write(p);
            p += PAGE_SIZE as usize;
        }
        self.ram[off..off + data.len()].copy_from_slice(data);
        Ok(())
    }

    /// Reads a little-endian u64 of guest RAM.
    pub fn read_u64(&self, gpa: u64) -> Result<u64, MemError> {
        let mut b = [0; 8];
        self.read(gpa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian u32 of guest RAM.
    pub fn read_u32(&self, gpa: u64) -> Result<u32, MemError> {
        let mut b = [0; 4];
        self.read(gpa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian u64 to guest RAM.
    pub fn write_u64(&mut self, gpa: u64, v: u64) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }

    /// Writes a little-endian u32 to guest RAM.
    pub fn write_u32(&mut self, gpa: u64, v: u32) -> Result<(), MemError> {
        self.write(gpa, &v.to_le_bytes())
    }

    /// Read of physical memory, RAM or allocated private memory: for the
    /// processor's own accesses to structures L0 placed (its EPT walk,
    /// the bitmaps and lists a VMCS of L0 names) and for L0 building them.
    /// Never use it at an address a guest chose.
    pub fn read_phys(&self, pa: u64, buf: &mut [u8]) -> Result<(), MemError> {
        if let Some(off) = self.private_range(pa, buf.len() as u64) {
            buf.copy_from_slice(&self.private[off..off + buf.len()]);
            return Ok(());
        }
        self.read(pa, buf)
    }

    /// Write of physical memory, RAM or allocated private memory; see
    /// [`read_phys`](Self::read_phys).
    pub fn write_phys(&mut self, pa: u64, data: &[u8]) -> Result<(), MemError> {
        if let Some(off) = self.private_range(pa, data.len() as u64) {
            self.private[off..off + data.len()].copy_from_slice(data);
            return Ok(());
        }
        self.write(pa, data)
    }

    /// Reads a little-endian u64 of RAM or private memory.
    pub fn read_phys_u64(&self, pa: u64) -> Result<u64, MemError> {
        let mut b = [0; 8];
        self.read_phys(pa, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Reads a little-endian u32 of RAM or private memory.
    pub fn read_phys_u32(&self, pa: u64) -> Result<u32, MemError> {
        let mut b = [0; 4];
        self.read_phys(pa, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a little-endian u64 to RAM or private memory.
    pub fn write_phys_u64(&mut self, pa: u64, v: u64) -> Result<(), MemError> {
        self.write_phys(pa, &v.to_le_bytes())
    }

    /// Writes a little-endian u32 to RAM or private memory.
    pub fn write_phys_u32(&mut self, pa: u64, v: u32) -> Result<(), MemError> {
        self.write_phys(pa, &v.to_le_bytes())
    }

    /// Whether `pa` lies in allocated private memory.
    pub fn is_private(&self, pa: u64) -> bool {
        self.private_range(pa, 1).is_some()
    }

    /// Offset of a range that lies entirely in one RAM region.
    fn range(&self, gpa: u64, len: u64) -> Result<usize, MemError> {
        let bad = MemError::NotRam { addr: gpa, len };
        let end = gpa.checked_add(len).ok_or(MemError::NotRam { addr: gpa, len })?;
        let ok = (end <= self.low_end) || (gpa >= HIGH_RAM_BASE && end <= self.high_end);
        if !ok {
            return Err(bad);
        }
        self.ram_offset(gpa).ok_or(bad)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_pages_are_physical_memory_but_not_ram() {
        let mut m = Memory::new(1 << 20).unwrap();
        let a = m.alloc_private_page().unwrap();
        let b = m.alloc_private_page().unwrap();
        assert_eq!((a, b), (PRIVATE_BASE, PRIVATE_BASE + PAGE_SIZE));
        m.write_phys_u64(b + 8, 0x1234).unwrap();
        assert_eq!(m.read_phys_u64(b + 8).unwrap(), 0x1234);
        m.write_phys_u32(b + 16, 0x5678).unwrap();
        assert_eq!(m.read_phys_u32(b + 16).unwrap(), 0x5678);
        assert!(m.is_private(b + 8) && !m.is_private(0x1000) && !m.is_private(b + PAGE_SIZE));
        assert_eq!(m.ram_offset(a), None, "no guest access path reaches it");
        assert!(m.read_phys_u64(b + PAGE_SIZE).is_err(), "past the last page");
        assert!(m.read_phys_u64(b + PAGE_SIZE - 4).is_err(), "straddling the end");
        // The phys accessors reach RAM too.
        m.write_phys_u64(0x1000, 7).unwrap();
        assert_eq!(m.read_u64(0x1000).unwrap(), 7);
    }

    #[test]
    fn ram_accessors_never_reach_private_memory() {
        let mut m = Memory::new(1 << 20).unwrap();
        let a = m.alloc_private_page().unwrap();
        m.write_phys_u64(a, 0x1234).unwrap();
        assert_eq!(m.read_u64(a), Err(MemError::NotRam { addr: a, len: 8 }));
        assert!(m.read_u32(a).is_err());
        assert!(m.read(a, &mut [0]).is_err());
        assert!(m.write_u64(a, 0).is_err());
        assert!(m.write_u32(a, 0).is_err());
        assert!(m.write(a, &[0]).is_err());
        assert_eq!(m.read_phys_u64(a).unwrap(), 0x1234, "the failed writes left it alone");
    }

    #[test]
    fn layout_splits_at_the_hole() {
        let m = Memory::new(16 << 20).unwrap();
        assert_eq!(m.ram_offset(0x1000), Some(0x1000));
        assert_eq!(m.ram_offset(16 << 20), None);
        assert_eq!(m.ram_offset(HIGH_RAM_BASE), None);
    }

    #[test]
    fn writes_bump_generation_of_code_pages_only() {
        let mut m = Memory::new(1 << 20).unwrap();
        m.write(0x2000, &[1]).unwrap();
        assert_eq!(m.page_gen(0x2000), 0);
        m.mark_code_page(0x2000);
        let e = m.code_epoch();
        m.write(0x2fff, &[1]).unwrap();
        assert_eq!(m.page_gen(0x2000), 1);
        assert!(!m.is_code_page(0x2000));
        assert_eq!(m.code_epoch(), e);
    }

    #[test]
    fn out_of_range_is_an_error() {
        let mut m = Memory::new(1 << 20).unwrap();
        assert!(m.write((1 << 20) - 1, &[0, 0]).is_err());
        assert!(m.read(u64::MAX, &mut [0]).is_err());
        assert_eq!(Memory::new(123).err(), Some(MemError::BadSize(123)));
    }
}
