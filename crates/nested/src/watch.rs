//! Write-watching EPT12: the L1 pages that hold EPT12 tables an EPT02 was
//! built from are read-only in EPT01, so that L1's writes to them exit to
//! L0 before they take effect.
//!
//! An EPT02 ([`crate::ept::ShadowEpt`]) caches translations L0 composed
//! from EPT12 tables in L1's RAM. On hardware, a processor may keep using
//! a cached EPT translation after software changed the EPT entry, until
//! INVEPT (SDM vol. 3C, 29.4 "Caching Translation Information"), so L1
//! must not rely on either outcome; Turtles gives the deterministic one:
//! L2 sees L1's write at its next access. L0 keeps each watched page
//! read-only (R and X kept, W cleared) in EPT01, splitting the large page
//! that maps it down to 4 KiB pages and leaving the rest of RAM mapped as
//! it was; a write by L1 is then an EPT violation (29.3.3 "EPT-Induced VM
//! Exits") on RAM, which [`WriteWatch::is_watched`] tells from a device
//! page. L0 makes that page alone writable ([`WriteWatch::release`]), lets
//! L1 execute the one instruction under its monitor trap flag and
//! compares the page with a copy: if only not-present entries changed
//! ([`changes_translations`], the common case of a hypervisor filling in
//! its guest's EPT), every EPT02 stays valid and the page is protected
//! again. Otherwise (and when stepping does not fit: event delivery, a
//! second watched page in the instruction) L0 drops every EPT02 and makes
//! every watched page writable ([`WriteWatch::release_all`]), so the rest
//! of a batch of writes runs free; the shadows refill and watch their
//! tables anew. No instruction of L1 needs emulating.
//!
//! Invariants:
//! - A page is read-only in EPT01 if and only if it is in the set: every
//!   EPT01 change goes through [`WriteWatch::protect`] and
//!   [`WriteWatch::release_all`], and the set holds RAM pages only.
//! - The set never holds more than [`MAX_WATCHED`] pages: `protect` refuses
//!   beyond that ([`Protect::Full`]), and the caller releases everything
//!   (stale pages of dropped shadows included) before it tries again.
//!
//! EPT01 here is L0's identity map of RAM with every permission and the
//! write-back type, as `vmm`'s L0 builds it; protecting and releasing
//! rewrite 4 KiB leaves of it with those attributes.

use cpu::ept::{EptBuildError, EptBuilder};
use cpu::mem::PAGE_SIZE;
use cpu::Memory;
use std::collections::BTreeSet;
use vmx::controls::{EptEntry, MemoryType};

/// Most pages watched at once, for all shadows of a VM together (each
/// holds at most [`crate::ept::MAX_EPT12_PAGES`]; the rest is slack for
/// pages of dropped shadows, released at the next write).
pub const MAX_WATCHED: usize = 4096;

/// What [`WriteWatch::protect`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protect {
    /// The page was already read-only: nothing changed.
    Already,
    /// The page is now read-only in EPT01: cached translations of EPT01
    /// must go (INVEPT) on every processor before L1 runs again.
    Added,
    /// The set is full: release everything first.
    Full,
}

/// The set of watched pages of one VM.
#[derive(Debug, Default)]
pub struct WriteWatch {
    pages: BTreeSet<u64>,
}

impl WriteWatch {
    /// Nothing watched.
    pub fn new() -> WriteWatch {
        WriteWatch::default()
    }

    /// Whether the page holding `gpa` is watched (read-only in EPT01).
    pub fn is_watched(&self, gpa: u64) -> bool {
        self.pages.contains(&(gpa & !(PAGE_SIZE - 1)))
    }

    /// Pages watched.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether nothing is watched.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Makes the L1 RAM page `page` read-only in the EPT01 rooted at
    /// `ept01_root`. Table pages a split needs come from L0's private
    /// memory; running out of it is the error.
    pub fn protect(&mut self, mem: &mut Memory, ept01_root: u64, page: u64) -> Result<Protect, EptBuildError> {
        let page = page & !(PAGE_SIZE - 1);
        if self.pages.contains(&page) {
            return Ok(Protect::Already);
        }
        if self.pages.len() >= MAX_WATCHED {
            return Ok(Protect::Full);
        }
        // Shadows list RAM pages only; anything else has no EPT01 entry.
        if mem.ram_offset(page).is_none() {
            return Ok(Protect::Already);
        }
        remap(mem, ept01_root, page, EptEntry::READ | EptEntry::EXECUTE)?;
        self.pages.insert(page);
        Ok(Protect::Added)
    }

    /// Makes one watched page writable again and forgets it; returns
    /// whether it was watched. The caller keeps the EPT02s coherent some
    /// other way (vmm's L0 single-steps L1 over its write and protects the
    /// page again).
    pub fn release(&mut self, mem: &mut Memory, ept01_root: u64, page: u64) -> bool {
        let page = page & !(PAGE_SIZE - 1);
        let watched = self.pages.remove(&page);
        if watched {
            // As in release_all: the leaf exists, nothing is allocated.
            let _ = remap(mem, ept01_root, page, EptEntry::RWX);
        }
        watched
    }

    /// Makes every watched page writable again and forgets them; returns
    /// how many there were. The caller drops every EPT02 (they relied on
    /// the watch) and flushes cached EPT01 translations.
    pub fn release_all(&mut self, mem: &mut Memory, ept01_root: u64) -> usize {
        let n = self.pages.len();
        for page in std::mem::take(&mut self.pages) {
            // The leaf exists (protect made it): no table is allocated, so
            // this cannot fail.
            let _ = remap(mem, ept01_root, page, EptEntry::RWX);
        }
        n
    }
}

/// Whether a write that turned the EPT12 table page `before` into `after`
/// can change a translation an EPT02 derived from it: whether an entry
/// that was present (any of bits 2:0, SDM 29.3.2 "EPT Translation
/// Mechanism") changed. A walk stops at a not-present entry, so no EPT02
/// mapping came through one, and filling one in (what a hypervisor does
/// on most EPT violations of its guest) leaves every EPT02 valid.
pub fn changes_translations(before: &[u8], after: &[u8]) -> bool {
    before.chunks_exact(8).zip(after.chunks_exact(8)).any(|(b, a)| b != a && b[0] & 7 != 0)
}

/// Rewrites EPT01's 4 KiB leaf for `page` with `perms`, write-back.
fn remap(mem: &mut Memory, ept01_root: u64, page: u64, perms: EptEntry) -> Result<(), EptBuildError> {
    let mut b = EptBuilder::with_root(ept01_root, |m: &mut Memory| m.alloc_private_page());
    b.map(mem, page, page, PAGE_SIZE, perms, MemoryType::WriteBack)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpu::ept::{translate, EptConfig, EptError, EptRequest, PAGE_2M};
    use cpu::mmu::Access;

    const MEM: u64 = 16 << 20;

    /// L0's EPT01: RAM one to one, RWX, large pages where they fit.
    fn ept01(m: &mut Memory) -> u64 {
        let ram = m.low_end();
        let mut b = EptBuilder::new(m, |m: &mut Memory| m.alloc_private_page()).unwrap();
        b.map(m, 0, 0, ram, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        b.eptp()
    }

    fn walk(m: &mut Memory, eptp: u64, gpa: u64, a: Access) -> Result<cpu::ept::EptTranslation, EptError> {
        translate(m, eptp, gpa, EptRequest::linear(a), EptConfig::ALL)
    }

    fn writable(m: &mut Memory, eptp: u64, gpa: u64) -> bool {
        walk(m, eptp, gpa, Access::Write).is_ok()
    }

    #[test]
    fn a_protected_page_is_read_only_and_its_neighbours_stay_as_they_were() {
        let mut m = Memory::new(MEM).unwrap();
        let eptp = ept01(&mut m);
        let root = eptp & !0xfff;
        let mut w = WriteWatch::new();
        let page = 0x40_3000;
        assert_eq!(w.protect(&mut m, root, page + 0x10), Ok(Protect::Added));
        assert!(w.is_watched(page) && w.is_watched(page + 0xfff) && !w.is_watched(page + 0x1000));
        assert_eq!(w.len(), 1);
        // Write faults, read and fetch do not.
        assert!(matches!(walk(&mut m, eptp, page + 8, Access::Write), Err(EptError::Violation { .. })));
        for a in [Access::Read, Access::Fetch] {
            let t = walk(&mut m, eptp, page + 8, a).unwrap();
            assert_eq!((t.hpa, t.page_size, t.memory_type), (page + 8, PAGE_SIZE, 6));
        }
        // The 2 MiB page was split: its other 4 KiB pages keep RWX; other
        // 2 MiB pages stay large.
        assert!(writable(&mut m, eptp, page + 0x1000));
        assert!(writable(&mut m, eptp, 0x40_0000));
        assert_eq!(walk(&mut m, eptp, 0x60_0000, Access::Write).unwrap().page_size, PAGE_2M);
        // Protecting it again changes nothing.
        assert_eq!(w.protect(&mut m, root, page), Ok(Protect::Already));
    }

    #[test]
    fn release_all_makes_every_page_writable_again() {
        let mut m = Memory::new(MEM).unwrap();
        let eptp = ept01(&mut m);
        let root = eptp & !0xfff;
        let mut w = WriteWatch::new();
        let pages = [0x1000, 0x20_5000, 0x20_6000, 0xa0_0000];
        for p in pages {
            assert_eq!(w.protect(&mut m, root, p), Ok(Protect::Added));
            assert!(!writable(&mut m, eptp, p));
        }
        // One page at a time.
        assert!(w.release(&mut m, root, 0x20_5abc));
        assert!(writable(&mut m, eptp, 0x20_5000) && !writable(&mut m, eptp, 0x20_6000));
        assert!(!w.release(&mut m, root, 0x20_5000), "released already");
        assert_eq!(w.protect(&mut m, root, 0x20_5000), Ok(Protect::Added));
        assert_eq!(w.release_all(&mut m, root), 4);
        assert!(w.is_empty());
        for p in pages {
            assert!(!w.is_watched(p));
            assert!(writable(&mut m, eptp, p));
        }
        // Protecting the same pages again reuses the split tables: no
        // private page is allocated in between.
        let before = m.alloc_private_page().unwrap();
        for p in pages {
            assert_eq!(w.protect(&mut m, root, p), Ok(Protect::Added));
        }
        assert_eq!(m.alloc_private_page(), Some(before + PAGE_SIZE));
    }

    #[test]
    fn non_ram_pages_are_never_protected() {
        let mut m = Memory::new(MEM).unwrap();
        let root = ept01(&mut m) & !0xfff;
        let mut w = WriteWatch::new();
        for p in [MEM, 0xfee0_0000, cpu::mem::PRIVATE_BASE] {
            assert_eq!(w.protect(&mut m, root, p), Ok(Protect::Already));
        }
        assert!(w.is_empty());
    }

    #[test]
    fn only_changes_to_present_entries_change_translations() {
        let mut before = [0u8; 4096];
        before[8..16].copy_from_slice(&(0x5000u64 | 7).to_le_bytes());
        // An execute-only entry is present too.
        before[16..24].copy_from_slice(&(0x6000u64 | 4).to_le_bytes());
        assert!(!changes_translations(&before, &before));
        let mut after = before;
        // Filling in a not-present entry, or changing bits of one.
        after[0..8].copy_from_slice(&(0x9000u64 | 7).to_le_bytes());
        after[4000] = 0x55;
        assert!(!changes_translations(&before, &after));
        // Any change to a present entry: address, permissions, A/D flags.
        for (slot, v) in [(1usize, 0x7000u64 | 7), (1, 0x5000 | 1), (1, 0x5000 | 7 | 1 << 8), (2, 0), (2, 0x6000 | 5)] {
            let mut a = before;
            a[slot * 8..slot * 8 + 8].copy_from_slice(&v.to_le_bytes());
            assert!(changes_translations(&before, &a), "slot {slot} = {v:#x}");
        }
    }

    #[test]
    fn the_set_is_bounded() {
        let mut m = Memory::new(2 * MEM).unwrap();
        let eptp = ept01(&mut m);
        let root = eptp & !0xfff;
        let mut w = WriteWatch::new();
        for i in 0..MAX_WATCHED as u64 {
            assert_eq!(w.protect(&mut m, root, i << 12), Ok(Protect::Added));
        }
        let next = (MAX_WATCHED as u64) << 12;
        assert_eq!(w.protect(&mut m, root, next), Ok(Protect::Full));
        assert!(writable(&mut m, eptp, next), "a refused page stays writable");
        assert_eq!(w.release_all(&mut m, root), MAX_WATCHED);
        assert_eq!(w.protect(&mut m, root, next), Ok(Protect::Added));
    }
}
