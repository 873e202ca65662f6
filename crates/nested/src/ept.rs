//! Shadow EPT02: the EPT paging structures L2 runs under, the composition
//! of EPT12 (L2-physical to L1-physical, built by L1 in its RAM) and EPT01
//! (L1-physical to host-physical, built by L0), kept by L0 in its private
//! memory and filled on demand.
//!
//! Follows the Intel SDM vol. 3C, 29.3 "The Extended Page Table Mechanism
//! (EPT)": with EPT, each guest-physical address goes through a walk of up
//! to five levels of tables named by the EPTP, the access allowed by each
//! level's read, write and execute bits, all of which must allow it; a
//! missing permission is an EPT violation, an impossible entry (reserved
//! bits, write without read, a bad memory type) a misconfiguration
//! (29.3.3 "EPT-Induced VM Exits"). The CPU has a single level of EPT, so
//! L0 gives it one table that maps each L2-physical page straight to the
//! host page: EPT02. This is the "multi-dimensional paging" of the Turtles
//! paper (Ben-Yehuda et al., OSDI 2010) and KVM's shadow EPT MMU.
//!
//! Under Turtles' L0, EPT01 maps guest RAM one to one with every
//! permission, and nothing else (device addresses exit to L0). Composing
//! therefore reduces to: an L2-physical page maps to the L1-physical page
//! EPT12 gives when that page is RAM, with EPT12's permissions (the AND of
//! its path, ANDed with EPT01's RWX) and its memory type.
//!
//! Invariants:
//! - EPT02 starts empty and only [`ShadowEpt::fill`] adds to it, one 4 KiB
//!   page per call, after a walk of EPT12 that allowed the access. So L2
//!   reaches only L1 RAM that EPT12 maps, with no more than EPT12's
//!   permissions (issue 6, item 9).
//! - EPT12 is walked in RAM only ([`Tables::Ram`]): a hostile L1 that
//!   points its tables at L0's private memory, or anywhere outside its RAM,
//!   gets all ones there (a misconfiguration), never L0's data.
//! - Every EPT02 mapping was derived from EPT12 table pages listed in
//!   [`ShadowEpt::ept12_table_pages`]; L0 watches them (write-protects them
//!   in EPT01, [`crate::watch`], taking each new one once from
//!   [`ShadowEpt::take_new_table_pages`] after the fill that walked it) and
//!   calls [`ShadowEpt::invalidate`] when L1 writes one, as it does on
//!   INVEPT. Hardware may use stale EPT translations until INVEPT (SDM
//!   29.4 "Caching Translation Information"); under Turtles L2 sees L1's
//!   write at its next access, deterministically. EPT02 itself never maps a listed page writable, so L2
//!   cannot change EPT12 behind L0's back either: a write by L2 to one
//!   drops the whole shadow before the page is mapped, or, when the page
//!   is on its own translation path ([`Fill::TableWrite`]), is mapped for
//!   one instruction of L2, after which L0 drops the shadow.
//! - Private memory is never freed by [`Memory`]; a shadow keeps the pages
//!   it allocated and reuses them after an invalidation, and resets itself
//!   before it would hold more than [`MAX_TABLE_PAGES`] of them, so it never
//!   grows without bound however often L1 invalidates.
//!
//! Choices:
//! - EPT02 maps 4 KiB pages only, whatever page size EPT12 uses, and is a
//!   4-level table with A/D flags off. L2-physical addresses come from
//!   L2's paging, whose reserved-bit checks keep them below MAXPHYADDR
//!   (40 bits), so four levels cover them even when EPT12 has five.
//! - With EPT A/D enabled in EPTP12, the EPT12 walk sets the accessed
//!   flags (and the dirty flag for a write) as the processor would, and
//!   EPT02 is made writable only by a fill for a write, so the first write
//!   to a page read before still comes to L0 and sets EPT12's dirty flag.

use cpu::ept::{translate_in, EptBuildError, EptBuilder, EptConfig, EptError, EptPath, EptRequest, Tables};
use cpu::mem::PAGE_SIZE;
use cpu::mmu::Access;
use cpu::Memory;
use std::collections::BTreeSet;
use vmx::caps::VmxCaps;
use vmx::controls::{EptEntry, EptPointer, MemoryType};
use x86::Gpa;

/// Most private pages one shadow holds (root included): 4 MiB of tables.
pub const MAX_TABLE_PAGES: usize = 1024;
/// Most EPT12 table pages a shadow tracks before it resets.
pub const MAX_EPT12_PAGES: usize = 512;
/// Most 4 KiB mappings a shadow holds before it resets.
pub const MAX_MAPPINGS: usize = 64 * 1024;
/// Tables one 4 KiB fill may create below the root (PDPT, PD, PT).
const TABLES_PER_FILL: usize = 3;

/// The outcome of [`ShadowEpt::fill`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fill {
    /// EPT02 now maps the page; resume L2.
    Filled,
    /// EPT12 does not allow the access: L1 gets an EPT violation. The
    /// qualification holds the access (bits 2:0) and EPT12's permissions
    /// on the path (bits 5:3); L0 adds bits 7 and 8 and the guest-linear
    /// address from vmcs02's exit, as well as bit 12.
    Violation {
        /// Exit qualification bits from the EPT12 walk.
        qualification: u64,
    },
    /// EPT12 is misconfigured for this address (or its tables are outside
    /// L1's RAM): L1 gets an EPT misconfiguration.
    Misconfig,
    /// EPT12 maps the page onto an L1-physical address that is not RAM (an
    /// L1 device, or L0's private memory, which is not L1's): L0 emulates
    /// the access there as L1's device model would see it.
    Device {
        /// The L1-physical address accessed.
        gpa1: Gpa,
    },
    /// EPT12 allows a write to L1 RAM at `gpa1`, a page holding one of the
    /// EPT12 tables on its own translation path (the root is on every
    /// path): EPT02 cannot map it writable for good, since the write may
    /// change the very translation. L0 maps it for one instruction
    /// ([`ShadowEpt::map_for_one_write`]), single-steps L2 and drops the
    /// shadow afterwards.
    TableWrite {
        /// The L1-physical address accessed.
        gpa1: Gpa,
    },
    /// EPT12 allows the access to L1 RAM at `gpa1`, but EPT02 cannot map it
    /// for L2: an L2-physical address from 2^48 up, or no private memory
    /// left for EPT02's tables. L0 would have to emulate the one access
    /// against L1 RAM (EPT12 allowed it).
    Emulate {
        /// The L1-physical address accessed.
        gpa1: Gpa,
    },
}

/// EPT02 for one EPTP12: the tables in private memory, the pages they use,
/// and what L0 must watch to keep it coherent with EPT12.
#[derive(Debug)]
pub struct ShadowEpt {
    /// PML4 of EPT02 (private memory).
    root: u64,
    /// The EPTP12 this shadows.
    eptp12: u64,
    /// Private pages in use below the root.
    used: Vec<u64>,
    /// Private pages allocated earlier and free for reuse.
    free: Vec<u64>,
    /// EPT12 table pages (L1-physical) the mappings derive from, sorted.
    ept12_pages: Vec<u64>,
    /// Pages added to `ept12_pages` that L0 has not taken to watch yet.
    fresh: Vec<u64>,
    /// L1-physical pages EPT02 maps writable.
    writable: BTreeSet<u64>,
    /// 4 KiB mappings in EPT02.
    mappings: usize,
}

impl ShadowEpt {
    /// An empty EPT02 for `eptp12`: nothing is mapped, so every access of
    /// L2 faults into L0 first.
    pub fn new(mem: &mut Memory, eptp12: u64) -> Result<ShadowEpt, EptBuildError> {
        let root = EptBuilder::new(mem, |m: &mut Memory| m.alloc_private_page())?.root();
        Ok(ShadowEpt {
            root,
            eptp12,
            used: Vec::new(),
            free: Vec::new(),
            ept12_pages: Vec::new(),
            fresh: Vec::new(),
            writable: BTreeSet::new(),
            mappings: 0,
        })
    }

    /// EPTP02 for vmcs02: write-back tables, 4-level walk, A/D off.
    pub fn eptp(&self) -> u64 {
        EptPointer::new(Gpa(self.root), MemoryType::WriteBack, 4, false).0
    }

    /// The EPTP12 this shadows.
    pub fn eptp12(&self) -> u64 {
        self.eptp12
    }

    /// Private pages this shadow owns (root, tables in use, free ones).
    pub fn private_pages(&self) -> usize {
        1 + self.used.len() + self.free.len()
    }

    /// Fills since the last invalidation (4 KiB pages EPT02 maps; a page
    /// filled twice, read then write, counts twice).
    pub fn mappings(&self) -> usize {
        self.mappings
    }

    /// The L1-physical pages of the EPT12 tables the fills since the last
    /// invalidation walked, sorted; at most [`MAX_EPT12_PAGES`]. L0
    /// write-protects them in EPT01 and calls [`invalidate`](Self::invalidate)
    /// when L1 writes one.
    pub fn ept12_table_pages(&self) -> &[u64] {
        &self.ept12_pages
    }

    /// The pages [`ept12_table_pages`](Self::ept12_table_pages) gained since
    /// the last call, in the order the walks met them: each new table page
    /// once, however many fills walk it later (until an invalidation
    /// empties the list and a walk adds it again). L0 write-protects them
    /// in EPT01 before L2 runs on the fill ([`crate::watch`]).
    pub fn take_new_table_pages(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.fresh)
    }

    /// Whether [`take_new_table_pages`](Self::take_new_table_pages) has
    /// anything (the common fill adds nothing: no allocation then).
    pub fn has_new_table_pages(&self) -> bool {
        !self.fresh.is_empty()
    }

    /// Forgets every mapping (INVEPT by L1, a write to an EPT12 table): the
    /// root is emptied and the table pages go to the free list.
    pub fn invalidate(&mut self, mem: &mut Memory) {
        // The root is private memory this shadow allocated: the write
        // cannot fail.
        let _ = mem.write_phys(self.root, &[0; PAGE_SIZE as usize]);
        self.free.append(&mut self.used);
        self.ept12_pages.clear();
        self.writable.clear();
        self.mappings = 0;
    }

    /// Shadows another EPTP12 with the same pages (L1 switched EPTP).
    pub fn retarget(&mut self, mem: &mut Memory, eptp12: u64) {
        self.invalidate(mem);
        self.eptp12 = eptp12;
    }

    /// Handles an EPT violation of L2 at `gpa2` (from vmcs02's exit) for
    /// `access`; see [`fill_request`](Self::fill_request). For a guest
    /// paging-structure access under an EPTP12 with A/D enabled, pass
    /// [`Access::Write`]: the processor would have treated it as a write.
    pub fn fill(&mut self, mem: &mut Memory, gpa2: u64, access: Access, l1_caps: &VmxCaps) -> Fill {
        self.fill_request(mem, gpa2, EptRequest::physical(access), l1_caps)
    }

    /// Walks EPT12 for `gpa2` in L1's RAM with L1's EPT capabilities and
    /// either maps the 4 KiB page into EPT02 or says what L1 must see. With
    /// `req`'s source the qualification also carries bits 7 and 8.
    pub fn fill_request(&mut self, mem: &mut Memory, gpa2: u64, req: EptRequest, l1_caps: &VmxCaps) -> Fill {
        let cfg = EptConfig::from_caps(l1_caps.ept_vpid());
        let mut path = EptPath::default();
        let t = match translate_in(mem, Tables::Ram, self.eptp12, gpa2, req, cfg, Some(&mut path)) {
            Ok(t) => t,
            Err(EptError::Violation { qualification, .. }) => return Fill::Violation { qualification },
            Err(EptError::Misconfig { .. }) => return Fill::Misconfig,
        };
        let gpa1 = t.hpa;
        let page1 = gpa1 & !(PAGE_SIZE - 1);
        let page2 = gpa2 & !(PAGE_SIZE - 1);
        // EPT01 maps RAM, and only RAM (whole pages: RAM is page aligned).
        if mem.ram_offset(page1).is_none() {
            return Fill::Device { gpa1: Gpa(gpa1) };
        }
        let write = req.access == Access::Write;
        // A 4-level EPT02 cannot hold L2 addresses from 2^48 up (L2's paging
        // never makes them), and a table page on its own path cannot be
        // both watched and writable.
        if page2 >= 1 << 48 {
            return Fill::Emulate { gpa1: Gpa(gpa1) };
        }
        if write && path.pages().contains(&page1) {
            return Fill::TableWrite { gpa1: Gpa(gpa1) };
        }
        // Make room first, so what follows never fails for lack of pages.
        let new_tables = path.pages().iter().filter(|p| self.ept12_pages.binary_search(p).is_err()).count();
        let full = self.used.len() + 1 + TABLES_PER_FILL > MAX_TABLE_PAGES
            || self.ept12_pages.len() + new_tables > MAX_EPT12_PAGES
            || self.mappings >= MAX_MAPPINGS;
        // A table page EPT02 maps writable must not become watched while
        // it is (L2 could change EPT12 unseen), nor a watched page become
        // writable: either way the old mappings go.
        let table_now_writable = path.pages().iter().any(|p| self.writable.contains(p));
        let writes_watched = write && self.ept12_pages.binary_search(&page1).is_ok();
        if full || table_now_writable || writes_watched {
            self.invalidate(mem);
        }
        for &p in path.pages() {
            if let Err(i) = self.ept12_pages.binary_search(&p) {
                self.ept12_pages.insert(i, p);
                self.fresh.push(p);
            }
        }
        // EPT12's permissions AND EPT01's (RWX). With EPT12 A/D on, the
        // dirty flag needs a write fill before EPT02 allows writes; a
        // watched page is never writable.
        let ad = EptPointer(self.eptp12).ad_enabled();
        let may_write = t.write && (write || !ad) && self.ept12_pages.binary_search(&page1).is_err();
        let mut perms = EptEntry::empty();
        perms.set(EptEntry::READ, t.read);
        perms.set(EptEntry::WRITE, may_write);
        perms.set(EptEntry::EXECUTE, t.exec);
        perms.set(EptEntry::IGNORE_PAT, t.ignore_pat);
        // The walk allowed the access, so R or X is set; W implies R.
        let memory_type = MemoryType::from_bits(t.memory_type).unwrap_or(MemoryType::WriteBack);
        match self.map(mem, page2, page1, perms, memory_type) {
            Ok(()) => {
                if may_write {
                    self.writable.insert(page1);
                }
                self.mappings += 1;
                Fill::Filled
            }
            // Out of private memory for the whole machine (the shadow is
            // below its own cap): L0 emulates the access instead.
            Err(_) => {
                self.invalidate(mem);
                Fill::Emulate { gpa1: Gpa(gpa1) }
            }
        }
    }

    /// After [`Fill::TableWrite`]: walks EPT12 for the write again and maps
    /// the page writable, outside the shadow's rules (it is an EPT12 table
    /// on its own path). The caller lets L2 execute one instruction and
    /// then calls [`invalidate`](Self::invalidate) whatever happened, so
    /// nothing derived from the table outlives the write. Other fills in
    /// between (the same instruction reading through the table) leave this
    /// mapping alone, so the instruction completes. Returns what
    /// [`fill`](Self::fill) would for a failing walk, else
    /// [`Fill::Filled`].
    pub fn map_for_one_write(&mut self, mem: &mut Memory, gpa2: u64, l1_caps: &VmxCaps) -> Fill {
        let cfg = EptConfig::from_caps(l1_caps.ept_vpid());
        let req = EptRequest::physical(Access::Write);
        let t = match translate_in(mem, Tables::Ram, self.eptp12, gpa2, req, cfg, None) {
            Ok(t) => t,
            Err(EptError::Violation { qualification, .. }) => return Fill::Violation { qualification },
            Err(EptError::Misconfig { .. }) => return Fill::Misconfig,
        };
        let (page1, page2) = (t.hpa & !(PAGE_SIZE - 1), gpa2 & !(PAGE_SIZE - 1));
        if mem.ram_offset(page1).is_none() {
            return Fill::Device { gpa1: Gpa(t.hpa) };
        }
        if page2 >= 1 << 48 {
            return Fill::Emulate { gpa1: Gpa(t.hpa) };
        }
        if self.used.len() + 1 + TABLES_PER_FILL > MAX_TABLE_PAGES || self.mappings >= MAX_MAPPINGS {
            self.invalidate(mem);
        }
        let mut perms = EptEntry::READ | EptEntry::WRITE;
        perms.set(EptEntry::EXECUTE, t.exec);
        perms.set(EptEntry::IGNORE_PAT, t.ignore_pat);
        let memory_type = MemoryType::from_bits(t.memory_type).unwrap_or(MemoryType::WriteBack);
        match self.map(mem, page2, page1, perms, memory_type) {
            Ok(()) => {
                self.mappings += 1;
                Fill::Filled
            }
            Err(_) => {
                self.invalidate(mem);
                Fill::Emulate { gpa1: Gpa(t.hpa) }
            }
        }
    }

    /// Maps one 4 KiB page into EPT02, taking table pages from the free
    /// list before allocating new private ones.
    fn map(
        &mut self,
        mem: &mut Memory,
        gpa2: u64,
        hpa: u64,
        perms: EptEntry,
        mt: MemoryType,
    ) -> Result<(), EptBuildError> {
        let ShadowEpt { root, used, free, .. } = self;
        let alloc = |m: &mut Memory| {
            let page = free.pop().or_else(|| m.alloc_private_page())?;
            used.push(page);
            Some(page)
        };
        let mut b = EptBuilder::with_root(*root, alloc);
        b.map(mem, gpa2, hpa, PAGE_SIZE, perms, mt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpu::ept::{translate, EptTranslation, PAGE_2M};
    use cpu::mem::PRIVATE_BASE;
    use vmx::caps::EptVpidCap;

    const MEM: u64 = 16 << 20;
    /// Where the tests' L1 builds EPT12 (its RAM).
    const EPT12_POOL: u64 = 0x10_0000;
    const EPT12_POOL_END: u64 = 0x20_0000;

    fn caps() -> VmxCaps {
        VmxCaps::turtles()
    }

    /// L1's EPT12 builder, tables in L1 RAM.
    fn ept12(m: &mut Memory) -> EptBuilder<impl FnMut(&mut Memory) -> Option<u64>> {
        let mut next = EPT12_POOL;
        EptBuilder::new(m, move |_: &mut Memory| {
            (next < EPT12_POOL_END).then(|| {
                next += PAGE_SIZE;
                next - PAGE_SIZE
            })
        })
        .unwrap()
        .allow_1g(false)
    }

    /// The processor's walk of EPT02, as it runs L2.
    fn cpu_walk(m: &mut Memory, s: &ShadowEpt, gpa2: u64, a: Access) -> Result<EptTranslation, EptError> {
        translate(m, s.eptp(), gpa2, EptRequest::linear(a), EptConfig::ALL)
    }

    /// What L0 does on an EPT02 violation: fill, then retry.
    fn run(m: &mut Memory, s: &mut ShadowEpt, gpa2: u64, a: Access) -> Result<u64, Fill> {
        if let Ok(t) = cpu_walk(m, s, gpa2, a) {
            return Ok(t.hpa);
        }
        match s.fill(m, gpa2, a, &caps()) {
            Fill::Filled => Ok(cpu_walk(m, s, gpa2, a).expect("a filled page translates").hpa),
            other => Err(other),
        }
    }

    fn rw() -> EptEntry {
        EptEntry::READ | EptEntry::WRITE
    }

    /// The EPT12 table pages L0's walk of `gpa2` reads (A/D flags left
    /// alone: the walk is a read that succeeds or not).
    fn ept12_path(m: &mut Memory, eptp12: u64, gpa2: u64) -> EptPath {
        let mut path = EptPath::default();
        let eptp12 = eptp12 & !(1 << 6);
        let _ = translate_in(
            m,
            Tables::Ram,
            eptp12,
            gpa2,
            EptRequest::physical(Access::Read),
            EptConfig::ALL,
            Some(&mut path),
        );
        path
    }

    #[test]
    fn identity_ept12_fills_4k_pages_that_translate_like_ept12() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m);
        b.map(&mut m, 0, 0, 8 << 20, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        assert!(m.is_private(s.eptp() & !0xfff));
        assert_eq!(s.eptp() & 0xfff, 6 | 3 << 3, "WB, 4 levels, A/D off");
        assert_eq!(s.eptp12(), b.eptp());
        assert!(cpu_walk(&mut m, &s, 0x5123, Access::Read).is_err(), "empty at first");
        for gpa2 in [0x5123, 0x40_0008, 0x7f_fff0] {
            assert_eq!(run(&mut m, &mut s, gpa2, Access::Write), Ok(gpa2));
            let t = cpu_walk(&mut m, &s, gpa2, Access::Fetch).unwrap();
            assert_eq!((t.page_size, t.read, t.write, t.exec, t.memory_type), (PAGE_SIZE, true, true, true, 6));
        }
        assert_eq!(s.mappings(), 3);
        // Only the pages filled are mapped, not their 2 MiB neighbours.
        assert!(cpu_walk(&mut m, &s, 0x6000, Access::Read).is_err());
        assert!(s.private_pages() <= 1 + 3 + 2);
    }

    #[test]
    fn remapped_pages_go_where_ept12_says() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m);
        let perms = EptEntry::READ | EptEntry::EXECUTE | EptEntry::IGNORE_PAT;
        b.map(&mut m, 0x3000_0000, 0x9000, PAGE_SIZE, perms, MemoryType::WriteCombining).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        assert_eq!(run(&mut m, &mut s, 0x3000_0abc, Access::Fetch), Ok(0x9abc));
        let t = cpu_walk(&mut m, &s, 0x3000_0abc, Access::Read).unwrap();
        assert_eq!((t.read, t.write, t.exec, t.memory_type, t.ignore_pat), (true, false, true, 1, true));
        // A 2 MiB page of EPT12 becomes 4 KiB pages of EPT02.
        b.map(&mut m, 0x4000_0000, 0x20_0000, PAGE_2M, rw(), MemoryType::WriteBack).unwrap();
        assert_eq!(run(&mut m, &mut s, 0x4001_2345, Access::Write), Ok(0x21_2345));
        assert_eq!(cpu_walk(&mut m, &s, 0x4001_2345, Access::Read).unwrap().page_size, PAGE_SIZE);
    }

    #[test]
    fn violations_carry_ept12s_access_and_permissions() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m);
        b.map(&mut m, 0x8000, 0x8000, PAGE_SIZE, EptEntry::READ, MemoryType::WriteBack).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        // Not present: the access bit, no permissions.
        assert_eq!(s.fill(&mut m, 0x9000, Access::Read, &caps()), Fill::Violation { qualification: 0b000_001 });
        assert_eq!(s.fill(&mut m, 0x9000, Access::Fetch, &caps()), Fill::Violation { qualification: 0b000_100 });
        // Read-only page, write access: W in 2:0, R=1 W=0 X=0 in 5:3.
        assert_eq!(s.fill(&mut m, 0x8010, Access::Write, &caps()), Fill::Violation { qualification: 0b001_010 });
        assert_eq!(s.mappings(), 0, "nothing was mapped");
        // With the source, bits 7 and 8 come too.
        let req = EptRequest::linear(Access::Write);
        assert_eq!(s.fill_request(&mut m, 0x8010, req, &caps()), Fill::Violation { qualification: 0x180 | 0b001_010 });
        // The read is allowed, and EPT02 then maps the page read-only, so
        // the write still faults into L0 and from there to L1.
        assert_eq!(run(&mut m, &mut s, 0x8010, Access::Read), Ok(0x8010));
        assert!(cpu_walk(&mut m, &s, 0x8010, Access::Write).is_err());
        assert_eq!(run(&mut m, &mut s, 0x8010, Access::Write), Err(Fill::Violation { qualification: 0b001_010 }));
    }

    #[test]
    fn misconfigurations_use_l1s_capabilities() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m);
        b.map(&mut m, 0, 0, PAGE_SIZE, EptEntry::EXECUTE, MemoryType::WriteBack).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        // Execute-only is a misconfiguration for an L1 told it is absent.
        let no_xo = caps().to_builder().ept_vpid(caps().ept_vpid() - EptVpidCap::EXECUTE_ONLY).build();
        assert_eq!(s.fill(&mut m, 0, Access::Fetch, &no_xo), Fill::Misconfig);
        let xo = caps().to_builder().ept_vpid(caps().ept_vpid() | EptVpidCap::EXECUTE_ONLY).build();
        assert_eq!(s.fill(&mut m, 0, Access::Fetch, &xo), Fill::Filled);
        // Reserved bits in a PTE.
        let pte = ept12_path(&mut m, b.eptp(), 0).pages()[3];
        m.write_u64(pte, 0x1000 | 7 | 1 << 45).unwrap();
        s.invalidate(&mut m);
        assert_eq!(s.fill(&mut m, 0, Access::Read, &caps()), Fill::Misconfig);
    }

    #[test]
    fn non_ram_l1_addresses_are_devices() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m);
        b.map(&mut m, 0x1000, 0xfee0_0000, PAGE_SIZE, rw(), MemoryType::Uncacheable).unwrap();
        // L0's private memory is not L1 RAM either.
        b.map(&mut m, 0x2000, PRIVATE_BASE, PAGE_SIZE, rw(), MemoryType::WriteBack).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        assert_eq!(s.fill(&mut m, 0x1030, Access::Write, &caps()), Fill::Device { gpa1: Gpa(0xfee0_0030) });
        assert_eq!(s.fill(&mut m, 0x2008, Access::Read, &caps()), Fill::Device { gpa1: Gpa(PRIVATE_BASE + 8) });
        assert_eq!(s.mappings(), 0);
        assert!(cpu_walk(&mut m, &s, 0x2008, Access::Read).is_err());
    }

    #[test]
    fn l2_addresses_beyond_four_levels_are_emulated() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m);
        b.map(&mut m, 0x5000, 0x5000, PAGE_SIZE, rw(), MemoryType::WriteBack).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        // A 4-level EPT12 ignores bits 63:48, so this is L1 page 0x5000.
        let high = 1 << 48 | 0x5010;
        assert_eq!(s.fill(&mut m, high, Access::Read, &caps()), Fill::Emulate { gpa1: Gpa(0x5010) });
        assert_eq!(s.mappings(), 0);
    }

    #[test]
    fn ept12_tables_in_private_memory_are_never_walked() {
        let mut m = Memory::new(MEM).unwrap();
        // L0's own tables: a private EPT mapping everything.
        let mut l0 = EptBuilder::new(&mut m, |m: &mut Memory| m.alloc_private_page()).unwrap();
        l0.map(&mut m, 0, 0, MEM, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        let root = l0.root();
        let caps = caps();
        // A hostile L1 names them as EPT12.
        let mut s = ShadowEpt::new(&mut m, l0.eptp()).unwrap();
        for a in [Access::Read, Access::Write, Access::Fetch] {
            assert_eq!(s.fill(&mut m, 0x5000, a, &caps), Fill::Misconfig);
        }
        // Or points an EPT12 entry of its own at one of them.
        let mut b = ept12(&mut m);
        b.map(&mut m, 0, 0, PAGE_SIZE, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        let l1_root = b.root();
        let private_pdpt = m.read_phys_u64(root).unwrap() & !0xfff;
        m.write_u64(l1_root, private_pdpt | 7).unwrap();
        s.retarget(&mut m, b.eptp());
        assert_eq!(s.fill(&mut m, 0x5000, Access::Read, &caps), Fill::Misconfig);
        assert_eq!(s.mappings(), 0);
        assert!(s.ept12_table_pages().iter().all(|&p| !m.is_private(p)));
    }

    #[test]
    fn invalidate_empties_and_reuses_pages() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m);
        b.map(&mut m, 0, 0, 8 << 20, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        assert_eq!(s.fill(&mut m, 0x5000, Access::Read, &caps()), Fill::Filled);
        let pages = s.private_pages();
        s.invalidate(&mut m);
        assert!(cpu_walk(&mut m, &s, 0x5000, Access::Read).is_err());
        assert_eq!((s.mappings(), s.ept12_table_pages().len()), (0, 0));
        // 10,000 INVEPTs, each after a fill in a different 1 GiB region
        // (so each needs fresh tables), never run out of private memory.
        let far = 0x80_0000;
        for i in 0..10_000u64 {
            let gpa2 = (i % 64) << 30 | 0x3000;
            b.map(&mut m, gpa2, far, PAGE_SIZE, rw(), MemoryType::WriteBack).unwrap();
            assert_eq!(s.fill(&mut m, gpa2, Access::Write, &caps()), Fill::Filled, "round {i}");
            assert_eq!(cpu_walk(&mut m, &s, gpa2, Access::Write).unwrap().hpa, far);
            s.invalidate(&mut m);
        }
        assert_eq!(s.private_pages(), pages);
        // Without invalidations the shadow resets itself at its cap: 4096
        // pages 2 MiB apart need a page table each in EPT02 (EPT12 maps
        // them with 2 MiB pages, so it needs only page directories).
        let base = 64u64 << 30;
        let mut resets = 0;
        for i in 0..4096u64 {
            let gpa2 = base + (i << 21);
            b.map(&mut m, gpa2, 0x40_0000, PAGE_2M, rw(), MemoryType::WriteBack).unwrap();
            let before = s.mappings();
            assert_eq!(s.fill(&mut m, gpa2 + 0x1000, Access::Read, &caps()), Fill::Filled);
            resets += usize::from(s.mappings() <= before);
            assert!(s.private_pages() <= MAX_TABLE_PAGES);
            assert_eq!(cpu_walk(&mut m, &s, gpa2 + 0x1000, Access::Read).unwrap().hpa, 0x40_1000);
        }
        assert!(resets >= 3, "{resets} resets");
    }

    #[test]
    fn the_tables_walked_are_listed_and_never_writable_for_l2() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m);
        b.map(&mut m, 0, 0, 4 << 20, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        // L1 also maps its own EPT12 pool into L2, at 2 GiB.
        let alias = 0x8000_0000;
        b.map(&mut m, alias, EPT12_POOL, EPT12_POOL_END - EPT12_POOL, rw(), MemoryType::WriteBack).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        assert_eq!(s.fill(&mut m, 0x5000, Access::Read, &caps()), Fill::Filled);
        let low = ept12_path(&mut m, b.eptp(), 0x5000);
        assert_eq!(s.ept12_table_pages(), low.pages(), "root, PDPT, PD: sorted as allocated");
        // Another page under the same tables adds nothing; one under the
        // alias adds its PD and PT.
        assert_eq!(s.fill(&mut m, 0x20_5000, Access::Read, &caps()), Fill::Filled);
        assert_eq!(s.ept12_table_pages().len(), 3);
        assert_eq!(s.fill(&mut m, alias, Access::Read, &caps()), Fill::Filled);
        assert_eq!(s.ept12_table_pages().len(), 5);
        assert!(ept12_path(&mut m, b.eptp(), alias).pages().iter().all(|p| s.ept12_table_pages().contains(p)));
        // An L2 read of a table page maps it read-only...
        let root = b.root();
        let root2 = alias + (root - EPT12_POOL);
        assert_eq!(run(&mut m, &mut s, root2, Access::Read), Ok(root));
        assert!(cpu_walk(&mut m, &s, root2, Access::Write).is_err());
        // ...and a write to the root, on every path, is a table write L0
        // lets through for one instruction.
        assert_eq!(s.fill(&mut m, root2 + 8, Access::Write, &caps()), Fill::TableWrite { gpa1: Gpa(root + 8) });
        assert!(cpu_walk(&mut m, &s, root2, Access::Write).is_err());
        assert_eq!(s.map_for_one_write(&mut m, root2 + 8, &caps()), Fill::Filled);
        assert_eq!(cpu_walk(&mut m, &s, root2 + 8, Access::Write).unwrap().hpa, root + 8);
        // A fill through the root meanwhile leaves that mapping alone.
        assert_eq!(s.fill(&mut m, 0x7000, Access::Read, &caps()), Fill::Filled);
        assert!(cpu_walk(&mut m, &s, root2, Access::Write).is_ok());
        s.invalidate(&mut m);
        assert!(cpu_walk(&mut m, &s, root2, Access::Read).is_err());
        // The walk's verdict holds: not mapped in EPT12 is a violation.
        assert!(matches!(s.map_for_one_write(&mut m, 0x4000_0000, &caps()), Fill::Violation { .. }));
        assert_eq!(s.fill(&mut m, 0x5000, Access::Read, &caps()), Fill::Filled);
        // A write to a watched table off its own path (the low PD) drops
        // the shadow before the page is mapped writable.
        let pd = low.pages()[2];
        let pd2 = alias + (pd - EPT12_POOL);
        assert_eq!(run(&mut m, &mut s, pd2, Access::Write), Ok(pd));
        assert_eq!(s.mappings(), 1);
        assert!(cpu_walk(&mut m, &s, 0x5000, Access::Read).is_err(), "the old mappings are gone");
        // Walking through the now-writable PD drops the shadow again.
        assert_eq!(s.fill(&mut m, 0x5000, Access::Read, &caps()), Fill::Filled);
        assert!(cpu_walk(&mut m, &s, pd2, Access::Write).is_err());
        assert!(cpu_walk(&mut m, &s, pd2, Access::Read).is_err());
    }

    #[test]
    fn new_table_pages_are_handed_out_once_per_walk_that_adds_them() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m);
        b.map(&mut m, 0, 0, 4 << 20, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        b.map(&mut m, 0x4000_0000, 0x30_0000, PAGE_SIZE, rw(), MemoryType::WriteBack).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        assert!(!s.has_new_table_pages());
        assert_eq!(s.fill(&mut m, 0x5000, Access::Read, &caps()), Fill::Filled);
        let low = ept12_path(&mut m, b.eptp(), 0x5000);
        assert!(s.has_new_table_pages());
        assert_eq!(s.take_new_table_pages(), low.pages());
        assert!(!s.has_new_table_pages());
        // Same tables: nothing new. Another PDPT entry: its PD and PT only.
        assert_eq!(s.fill(&mut m, 0x6000, Access::Write, &caps()), Fill::Filled);
        assert!(s.take_new_table_pages().is_empty());
        assert_eq!(s.fill(&mut m, 0x4000_0000, Access::Read, &caps()), Fill::Filled);
        let high = ept12_path(&mut m, b.eptp(), 0x4000_0000);
        assert_eq!(s.take_new_table_pages(), &high.pages()[2..]);
        // After an invalidation the walks add (and hand out) them again.
        s.invalidate(&mut m);
        assert_eq!(s.fill(&mut m, 0x5000, Access::Read, &caps()), Fill::Filled);
        assert_eq!(s.take_new_table_pages(), low.pages());
        // A walk that fails adds nothing.
        assert!(matches!(s.fill(&mut m, 0x8000_0000, Access::Read, &caps()), Fill::Violation { .. }));
        assert!(!s.has_new_table_pages());
    }

    #[test]
    fn a_and_d_flags_of_ept12_are_kept() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = ept12(&mut m).accessed_dirty(true);
        b.map(&mut m, 0, 0, PAGE_SIZE, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        let mut s = ShadowEpt::new(&mut m, b.eptp()).unwrap();
        assert_eq!(run(&mut m, &mut s, 0x10, Access::Read), Ok(0x10));
        let pte_addr = ept12_path(&mut m, b.eptp(), 0).pages()[3];
        let accessed = EptEntry::ACCESSED.bits();
        let dirty = EptEntry::DIRTY.bits();
        assert_eq!(m.read_u64(pte_addr).unwrap() & (accessed | dirty), accessed);
        // The first write comes back to L0, which sets the dirty flag.
        assert!(cpu_walk(&mut m, &s, 0x10, Access::Write).is_err());
        assert_eq!(run(&mut m, &mut s, 0x10, Access::Write), Ok(0x10));
        assert_eq!(m.read_u64(pte_addr).unwrap() & (accessed | dirty), accessed | dirty);
    }
}
