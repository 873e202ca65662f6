//! Linear-to-physical translation and the software TLB (SDM vol. 3A, ch. 4
//! "Paging": 4.3 32-bit paging, 4.4 PAE paging, 4.5 4-level and 5-level
//! paging, 4.6 "Access Rights", 4.7 "Page-Fault Exceptions", 4.8 "Accessed
//! and Dirty Flags", 4.10 "Caching Translation Information").
//!
//! The TLB follows QEMU's softmmu: one small direct-mapped table per access
//! kind (read, write, fetch) and privilege (supervisor, user), mapping a
//! linear page to the offset of its frame in the RAM buffer. A hit is a
//! compare and an add. Entries are filled only after a full walk that
//! passed every access check, so a hit needs no further check. The write
//! table is filled only when the dirty bit is already set and the frame
//! holds no decoded code, so writes to code always take the slow path.
//! Flushing more than the architecture requires is always allowed; this
//! TLB does so freely (CR3 loads flush global entries too).
//!
//! Under EPT the TLB also keeps guest-physical mappings (SDM vol. 3C,
//! 29.4.1 "Information That May Be Cached"): guest-physical page to
//! host-physical page, one direct-mapped set per access kind, filled only
//! by a successful EPT walk of the same kind (so the accessed and dirty
//! flags that walk set need not be set again). They belong to the TLB's
//! (VPID, EPTP) context but have their own epoch: as on hardware, MOV to
//! CR3, INVLPG and VM transitions leave them, and only INVEPT and a change
//! of EPTP drop them ([`Tlb::flush_gpa`]). Without them, every guest
//! page-walk step and every final address walked EPT again.

use crate::ept::{EptConfig, EptRequest, EptSource};
use crate::fault::Fault;
use crate::mem::Memory;
use crate::state::Regs;
use x86::paging::{self, pf};
use x86::{Cr0, Cr4, Efer, Rflags};

/// Kind of memory access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Access {
    /// Data read.
    Read = 0,
    /// Data write.
    Write = 1,
    /// Instruction fetch.
    Fetch = 2,
}

/// Physical-address width this CPU implements (CPUID 0x80000008 EAX[7:0]).
pub const MAXPHYADDR: u32 = 40;
const PHYS_MASK: u64 = ((1u64 << MAXPHYADDR) - 1) & !0xfff;

/// 16K entries per set: enough to cover 64 MiB of 4 KiB pages, the
/// working set of the memory-stride benchmarks.
const TLB_BITS: usize = 14;
const TLB_SIZE: usize = 1 << TLB_BITS;
/// Tags carry a flush epoch in their low 12 bits, so a full flush is an
/// increment; a real wipe happens only when the epoch wraps.
const EPOCH_MASK: u64 = 0xfff;
/// Never matches: page addresses have zero low bits and epochs start at 1.
const INVALID: u64 = 0;

/// Guest-physical mappings per access kind: 4096 pages, 16 MiB.
const GPA_BITS: usize = 12;
const GPA_SIZE: usize = 1 << GPA_BITS;

/// One direct-mapped set of guest-physical mappings (one access kind):
/// 4 KiB pages, and 2 MiB chunks of 2 MiB and 1 GiB pages (what L0's
/// EPT01 mostly maps: 512 of those cover 1 GiB of guest RAM).
#[derive(Clone)]
struct GpaSet {
    /// Guest-physical 4 KiB page address with the epoch, or [`INVALID`].
    tag: Box<[u64; GPA_SIZE]>,
    /// Host-physical page address.
    hpa: Box<[u64; GPA_SIZE]>,
    /// Guest-physical 2 MiB chunk address with the epoch, or [`INVALID`].
    tag_2m: Box<[u64; GPA_SIZE]>,
    /// Host-physical chunk address.
    hpa_2m: Box<[u64; GPA_SIZE]>,
}

impl GpaSet {
    fn new() -> Self {
        GpaSet {
            tag: Box::new([INVALID; GPA_SIZE]),
            hpa: Box::new([0; GPA_SIZE]),
            tag_2m: Box::new([INVALID; GPA_SIZE]),
            hpa_2m: Box::new([0; GPA_SIZE]),
        }
    }
}

/// A 2 MiB chunk.
const CHUNK_2M: u64 = 0x20_0000;

/// One direct-mapped TLB set (one access kind, one privilege).
#[derive(Clone)]
struct TlbSet {
    /// Linear page address, or [`INVALID`].
    tag: Box<[u64; TLB_SIZE]>,
    /// Offset of the frame in the RAM buffer.
    off: Box<[u64; TLB_SIZE]>,
}

impl TlbSet {
    fn new() -> Self {
        TlbSet { tag: Box::new([INVALID; TLB_SIZE]), off: Box::new([0; TLB_SIZE]) }
    }
}

/// The software TLB: sets indexed by `access * 2 + user`.
#[derive(Clone)]
pub struct Tlb {
    sets: [TlbSet; 6],
    /// Guest-physical mappings by access kind (read, write, fetch).
    gpa: [GpaSet; 3],
    /// Epoch of the guest-physical mappings (1..=EPOCH_MASK).
    gpa_epoch: u64,
    /// Current epoch (1..=EPOCH_MASK), or'ed into every valid tag.
    epoch: u64,
    /// Some entry came from a large page: INVLPG must flush everything.
    large: bool,
    /// [`Memory::code_epoch`] when the write sets were last validated.
    pub(crate) code_epoch: u64,
    /// Fills are suppressed (data breakpoints armed): every access walks.
    pub(crate) disabled: bool,
}

impl core::fmt::Debug for Tlb {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Tlb").field("epoch", &self.epoch).field("large", &self.large).finish_non_exhaustive()
    }
}

impl Default for Tlb {
    fn default() -> Self {
        Tlb {
            sets: core::array::from_fn(|_| TlbSet::new()),
            gpa: core::array::from_fn(|_| GpaSet::new()),
            gpa_epoch: 1,
            epoch: 1,
            large: false,
            code_epoch: 0,
            disabled: false,
        }
    }
}

impl Tlb {
    /// Looks up `la`; returns the RAM offset of the byte.
    #[inline(always)]
    pub fn lookup(&self, la: u64, access: Access, user: bool) -> Option<usize> {
        let set = &self.sets[access as usize * 2 + user as usize];
        let i = ((la >> 12) as usize) & (TLB_SIZE - 1);
        if set.tag[i] == (la & !0xfff) | self.epoch {
            Some((set.off[i] + (la & 0xfff)) as usize)
        } else {
            None
        }
    }

    fn fill(&mut self, la: u64, access: Access, user: bool, frame_off: u64) {
        if self.disabled {
            return;
        }
        let set = &mut self.sets[access as usize * 2 + user as usize];
        let i = ((la >> 12) as usize) & (TLB_SIZE - 1);
        set.tag[i] = (la & !0xfff) | self.epoch;
        set.off[i] = frame_off;
    }

    /// Drops every entry.
    pub fn flush_all(&mut self) {
        self.epoch += 1;
        if self.epoch > EPOCH_MASK {
            for s in &mut self.sets {
                s.tag.fill(INVALID);
            }
            self.epoch = 1;
        }
        self.large = false;
    }

    /// The host-physical address a guest-physical mapping of kind `kind`
    /// gives `gpa`.
    #[inline(always)]
    fn gpa_lookup(&self, gpa: u64, kind: usize) -> Option<u64> {
        let set = &self.gpa[kind];
        let j = ((gpa >> 21) as usize) & (GPA_SIZE - 1);
        if set.tag_2m[j] == (gpa & !(CHUNK_2M - 1)) | self.gpa_epoch {
            return Some(set.hpa_2m[j] | (gpa & (CHUNK_2M - 1)));
        }
        let i = ((gpa >> 12) as usize) & (GPA_SIZE - 1);
        (set.tag[i] == (gpa & !0xfff) | self.gpa_epoch).then(|| set.hpa[i] | (gpa & 0xfff))
    }

    /// Drops the guest-physical mappings (INVEPT, a new EPTP).
    pub fn flush_gpa(&mut self) {
        self.gpa_epoch += 1;
        if self.gpa_epoch > EPOCH_MASK {
            for s in &mut self.gpa {
                s.tag.fill(INVALID);
                s.tag_2m.fill(INVALID);
            }
            self.gpa_epoch = 1;
        }
    }

    /// Records that `gpa` maps to `hpa` for `kind` in a page of
    /// `page_size` bytes.
    fn gpa_fill(&mut self, gpa: u64, kind: usize, hpa: u64, page_size: u64) {
        if self.disabled {
            return;
        }
        let epoch = self.gpa_epoch;
        let set = &mut self.gpa[kind];
        if page_size >= CHUNK_2M {
            let j = ((gpa >> 21) as usize) & (GPA_SIZE - 1);
            set.tag_2m[j] = (gpa & !(CHUNK_2M - 1)) | epoch;
            set.hpa_2m[j] = hpa & !(CHUNK_2M - 1);
        } else {
            let i = ((gpa >> 12) as usize) & (GPA_SIZE - 1);
            set.tag[i] = (gpa & !0xfff) | epoch;
            set.hpa[i] = hpa & !0xfff;
        }
    }

    /// Drops the write entries (a page became a code page somewhere).
    pub fn flush_writes(&mut self) {
        // Rare (once per newly decoded page): a full flush is simpler than
        // a per-set epoch and costs the same increment.
        let large = self.large;
        self.flush_all();
        self.large = large;
    }

    /// INVLPG: drops the translation of one page (all of them when large
    /// pages were cached, since a large page spans many entries).
    pub fn flush_page(&mut self, la: u64) {
        if self.large {
            self.flush_all();
            return;
        }
        let i = ((la >> 12) as usize) & (TLB_SIZE - 1);
        for s in &mut self.sets {
            if s.tag[i] == (la & !0xfff) | self.epoch {
                s.tag[i] = INVALID;
            }
        }
    }
}

/// Result of a successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// Physical address.
    pub pa: u64,
    /// Whether the mapping is a large page.
    pub large: bool,
    /// Whether every level allows user access.
    pub user_page: bool,
}

/// Everything a walk needs to know about the access.
#[derive(Clone, Copy, Debug)]
pub struct AccessCtx {
    /// Kind of access.
    pub access: Access,
    /// CPL 3 access (and not an implicit supervisor access).
    pub user: bool,
    /// Implicit supervisor access (descriptor tables, TSS): SMAP applies
    /// regardless of RFLAGS.AC.
    pub implicit: bool,
}

/// Walks the paging structures of `regs` for `la`. Sets accessed and dirty
/// bits as the SDM describes on success.
pub fn walk(regs: &Regs, mem: &mut Memory, la: u64, ac: AccessCtx) -> Result<Translation, Fault> {
    walk_ept(regs, mem, la, ac, None)
}

/// Translates a guest-physical address through EPT when `ept` is set (SDM
/// vol. 3C, 29.3.2 "EPT Translation Mechanism"); an EPT violation or
/// misconfiguration comes back as [`Fault::ept`], which the processor
/// turns into a VM exit.
/// With `tlb`, its guest-physical mappings answer first and a successful
/// walk fills them.
#[inline]
fn ept_translate(
    mem: &mut Memory,
    tlb: &mut Option<&mut Tlb>,
    ept: Option<u64>,
    gpa: u64,
    req: EptRequest,
) -> Result<u64, Fault> {
    let Some(eptp) = ept else { return Ok(gpa) };
    // The kind a walk for `req` checks and marks: with EPT A/D flags an
    // access to a guest paging structure counts as a write (29.3.5).
    let kind = match req.access {
        Access::Fetch => 2,
        Access::Write => 1,
        Access::Read
            if req.source == EptSource::GuestPagingStructure && vmx::controls::EptPointer(eptp).ad_enabled() =>
        {
            1
        }
        Access::Read => 0,
    };
    if let Some(hpa) = tlb.as_deref().and_then(|t| t.gpa_lookup(gpa, kind)) {
        return Ok(hpa);
    }
    match crate::ept::translate(mem, eptp, gpa, req, EptConfig::ALL) {
        Ok(t) => {
            if let Some(tlb) = tlb.as_deref_mut() {
                tlb.gpa_fill(gpa, kind, t.hpa, t.page_size);
            }
            Ok(t.hpa)
        }
        Err(e) => Err(Fault::ept(e)),
    }
}

/// [`walk`] in VMX non-root operation with EPT: every guest-physical
/// address the walk touches (paging-structure entries and the final
/// address) goes through the EPT paging structures named by `ept`
/// (SDM vol. 3C, 29.3.1 "Guest-Physical Addresses": "the processor uses
/// EPT to translate guest-physical addresses, including those of guest
/// paging structures"). The returned address is host-physical.
pub fn walk_ept(regs: &Regs, mem: &mut Memory, la: u64, ac: AccessCtx, ept: Option<u64>) -> Result<Translation, Fault> {
    walk_ept_in(regs, mem, &mut None, la, ac, ept)
}

/// [`walk_ept`] using and filling `tlb`'s guest-physical mappings.
fn walk_ept_in(
    regs: &Regs,
    mem: &mut Memory,
    tlb: &mut Option<&mut Tlb>,
    la: u64,
    ac: AccessCtx,
    ept: Option<u64>,
) -> Result<Translation, Fault> {
    let cr0 = regs.cr0;
    if cr0 & Cr0::PG.bits() == 0 {
        let pa = ept_translate(mem, tlb, ept, la & 0xffff_ffff, EptRequest::linear(ac.access))?;
        return Ok(Translation { pa, large: false, user_page: true });
    }
    let cr4 = regs.cr4;
    let nxe = regs.efer & Efer::NXE.bits() != 0;
    let write = ac.access == Access::Write;
    let fetch = ac.access == Access::Fetch;
    // Error-code bits common to every #PF of this access (SDM 4.7).
    let mut ec = 0u32;
    if write {
        ec |= pf::W;
    }
    if ac.user {
        ec |= pf::U;
    }
    let pae = cr4 & Cr4::PAE.bits() != 0;
    if fetch && ((pae && nxe) || cr4 & Cr4::SMEP.bits() != 0) {
        ec |= pf::ID;
    }

    // Entries visited, to set their accessed bits once the walk succeeds.
    let mut visited: [(u64, bool); 5] = [(0, false); 5];
    let mut nvisited = 0;
    let mut rw = true;
    let mut us = true;
    let mut xd = false;
    let pa;
    let large;
    let leaf_addr;
    let leaf_is_64;
    let mut pkey = 0u32;

    // Reads an entry at guest-physical `addr`; returns it with its
    // host-physical address, where its A/D bits are later set.
    let read_entry =
        |mem: &mut Memory, tlb: &mut Option<&mut Tlb>, addr: u64, wide: bool| -> Result<(u64, u64), Fault> {
            let addr = ept_translate(mem, tlb, ept, addr, EptRequest::paging_structure(Access::Read))?;
            // A paging structure outside RAM reads as all ones, which is not
            // present on real hardware only for unimplemented addresses; we
            // report it as a reserved-bit fault rather than touch MMIO. L0's
            // private memory is outside RAM: the guest chose this address, so
            // the read is RAM-only and never returns L0's tables.
            let r = if wide { mem.read_u64(addr) } else { mem.read_u32(addr).map(u64::from) };
            r.map(|e| (e, addr)).map_err(|_| Fault::pf(ec | pf::RSVD | pf::P, la))
        };

    if !pae {
        // 32-bit paging (SDM 4.3).
        let (pde, pde_addr) = read_entry(mem, tlb, (regs.cr3 & 0xffff_f000) | ((la >> 20) & 0xffc), false)?;
        if pde & paging::P == 0 {
            return Err(Fault::pf(ec, la));
        }
        rw &= pde & paging::RW != 0;
        us &= pde & paging::US != 0;
        if pde & paging::PS != 0 && cr4 & Cr4::PSE.bits() != 0 {
            // 4 MiB page; PSE-36 supplies physical bits 32..39 from 13..20.
            if pde & (1 << 21) != 0 {
                return Err(Fault::pf(ec | pf::RSVD | pf::P, la));
            }
            let hi = ((pde >> 13) & 0xff) << 32;
            pa = (pde & 0xffc0_0000) | hi | (la & 0x3f_ffff);
            large = true;
            leaf_addr = pde_addr;
            leaf_is_64 = false;
        } else {
            visited[0] = (pde_addr, false);
            nvisited = 1;
            let (pte, pte_addr) = read_entry(mem, tlb, (pde & 0xffff_f000) | ((la >> 10) & 0xffc), false)?;
            if pte & paging::P == 0 {
                return Err(Fault::pf(ec, la));
            }
            rw &= pte & paging::RW != 0;
            us &= pte & paging::US != 0;
            pa = (pte & 0xffff_f000) | (la & 0xfff);
            large = false;
            leaf_addr = pte_addr;
            leaf_is_64 = false;
        }
    } else {
        let rsvd_xd = if nxe { 0 } else { paging::XD };
        let high_rsvd = !((1u64 << MAXPHYADDR) - 1) & !paging::XD & !(0xfu64 << 59 | 0x7fu64 << 52);
        let lma = regs.efer & Efer::LMA.bits() != 0;
        let (mut table, mut level) = if lma {
            if cr4 & Cr4::LA57.bits() != 0 {
                (regs.cr3 & PHYS_MASK, 5)
            } else {
                (regs.cr3 & PHYS_MASK, 4)
            }
        } else {
            // PAE: the PDPTE selected by bits 31:30 (SDM 4.4.1).
            let pdpte_addr = (regs.cr3 & 0xffff_ffe0) + ((la >> 30) & 3) * 8;
            let (pdpte, _) = read_entry(mem, tlb, pdpte_addr, true)?;
            if pdpte & paging::P == 0 {
                return Err(Fault::pf(ec, la));
            }
            if pdpte & (high_rsvd | 0x1e6 | paging::XD) != 0 {
                return Err(Fault::pf(ec | pf::RSVD | pf::P, la));
            }
            (pdpte & PHYS_MASK, 2)
        };
        loop {
            let shift = 12 + 9 * (level - 1);
            let idx = (la >> shift) & 0x1ff;
            let (e, e_addr) = read_entry(mem, tlb, table + idx * 8, true)?;
            if e & paging::P == 0 {
                return Err(Fault::pf(ec, la));
            }
            let ps = e & paging::PS != 0;
            let mut rsvd = e & (high_rsvd | rsvd_xd);
            if ps && (level >= 4 || (level == 3 && !lma)) {
                rsvd |= paging::PS;
            }
            if ps && level == 3 {
                rsvd |= e & 0x3fff_e000; // bits 29:13 of a 1 GiB leaf
            } else if ps && level == 2 {
                rsvd |= e & 0x1f_e000; // bits 20:13 of a 2 MiB leaf
            }
            if rsvd != 0 {
                return Err(Fault::pf(ec | pf::RSVD | pf::P, la));
            }
            rw &= e & paging::RW != 0;
            us &= e & paging::US != 0;
            xd |= e & paging::XD != 0 && nxe;
            if level == 1 || ps {
                let page_mask = (1u64 << shift) - 1;
                pa = (e & PHYS_MASK & !page_mask) | (la & page_mask);
                large = level > 1;
                leaf_addr = e_addr;
                leaf_is_64 = true;
                if lma {
                    pkey = ((e >> paging::PKEY_SHIFT) & 0xf) as u32;
                }
                break;
            }
            visited[nvisited] = (e_addr, true);
            nvisited += 1;
            table = e & PHYS_MASK;
            level -= 1;
        }
    }

    // Access rights (SDM 4.6).
    let p = ec | pf::P;
    if ac.user {
        if !us || (write && !rw) || (fetch && xd) {
            return Err(Fault::pf(p, la));
        }
    } else {
        if fetch {
            if xd || (us && cr4 & Cr4::SMEP.bits() != 0) {
                return Err(Fault::pf(p, la));
            }
        } else if us && cr4 & Cr4::SMAP.bits() != 0 && (ac.implicit || regs.rflags & Rflags::AC.bits() == 0) {
            return Err(Fault::pf(p, la));
        }
        if write && !rw && cr0 & Cr0::WP.bits() != 0 {
            return Err(Fault::pf(p, la));
        }
    }
    // Protection keys apply to data accesses to user pages (SDM 4.6.2).
    if us && !fetch && cr4 & Cr4::PKE.bits() != 0 && regs.efer & Efer::LMA.bits() != 0 {
        let bits = regs.pkru >> (pkey * 2);
        let ad = bits & 1 != 0;
        let wd = bits & 2 != 0;
        if ad || (write && wd && (ac.user || cr0 & Cr0::WP.bits() != 0)) {
            return Err(Fault::pf(p | pf::PK, la));
        }
    }

    // The final guest-physical address goes through EPT before any
    // accessed or dirty flag is set, so an EPT exit leaves no trace.
    let pa = ept_translate(mem, tlb, ept, pa, EptRequest::linear(ac.access))?;
    // Accessed and dirty flags (SDM 4.8).
    for &(addr, wide) in &visited[..nvisited] {
        set_bits(mem, addr, wide, paging::A);
    }
    set_bits(mem, leaf_addr, leaf_is_64, if write { paging::A | paging::D } else { paging::A });
    Ok(Translation { pa, large, user_page: us })
}

fn set_bits(mem: &mut Memory, addr: u64, wide: bool, bits: u64) {
    if wide {
        if let Ok(v) = mem.read_u64(addr) {
            if v & bits != bits {
                let _ = mem.write_u64(addr, v | bits);
            }
        }
    } else if let Ok(v) = mem.read_u32(addr) {
        if u64::from(v) & bits != bits {
            let _ = mem.write_u32(addr, v | bits as u32);
        }
    }
}

/// Translates and, when the frame is RAM, caches the result.
pub(crate) fn translate_fill(
    regs: &Regs,
    tlb: &mut Tlb,
    mem: &mut Memory,
    la: u64,
    ac: AccessCtx,
    ept: Option<u64>,
) -> Result<u64, Fault> {
    let t = walk_ept_in(regs, mem, &mut Some(&mut *tlb), la, ac, ept)?;
    if let Some(off) = mem.ram_offset(t.pa & !0xfff) {
        // Supervisor data accesses to user pages depend on RFLAGS.AC under
        // SMAP, which the TLB does not key on: never cache them.
        let smap_sensitive = !ac.user && t.user_page && regs.cr4 & Cr4::SMAP.bits() != 0;
        let code_write = ac.access == Access::Write && mem.is_code_page(off);
        let cacheable = !(smap_sensitive || code_write);
        if cacheable {
            tlb.fill(la, ac.access, ac.user, off as u64);
            tlb.large |= t.large;
        }
    }
    Ok(t.pa)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ept::EptBuilder;
    use crate::mem::PRIVATE_BASE;
    use vmx::controls::{EptEntry, MemoryType};

    /// 4-level paging with the PML4 at 0x1000, PDPT at 0x2000, and a PD at
    /// 0x3000 whose entry 0 points at `pt`, a page table the test chooses.
    fn long_mode(mem: &mut Memory, pt: u64) -> Regs {
        mem.write_u64(0x1000, 0x2000 | 7).unwrap();
        mem.write_u64(0x2000, 0x3000 | 7).unwrap();
        mem.write_u64(0x3000, pt | 7).unwrap();
        let mut regs = Regs::reset();
        regs.cr0 = (Cr0::PE | Cr0::PG).bits();
        regs.cr4 = Cr4::PAE.bits();
        regs.efer = (Efer::LME | Efer::LMA).bits();
        regs.cr3 = 0x1000;
        regs
    }

    const READ: AccessCtx = AccessCtx { access: Access::Read, user: false, implicit: false };

    /// 1 MiB of RAM mapped one to one by an EPT in private memory, and
    /// guest paging that maps linear page 0 to guest-physical 0x5000.
    fn ept_machine() -> (Memory, EptBuilder<impl FnMut(&mut Memory) -> Option<u64>>, Regs) {
        let mut mem = Memory::new(1 << 20).unwrap();
        let mut b = EptBuilder::new(&mut mem, |m: &mut Memory| m.alloc_private_page()).unwrap();
        b.map(&mut mem, 0, 0, 1 << 20, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        mem.write_u64(0x4000, 0x5000 | 7).unwrap();
        let regs = long_mode(&mut mem, 0x4000);
        (mem, b, regs)
    }

    #[test]
    fn guest_page_tables_in_private_memory_read_as_all_ones() {
        let mut mem = Memory::new(1 << 20).unwrap();
        // A private page that looks like a page table mapping everything.
        let private = mem.alloc_private_page().unwrap();
        assert_eq!(private, PRIVATE_BASE);
        for i in 0..512 {
            mem.write_phys_u64(private + i * 8, 0x5000 | 7).unwrap();
        }
        let regs = long_mode(&mut mem, private);
        let r = walk(&regs, &mut mem, 0x123, READ);
        assert_eq!(r, Err(Fault::pf(pf::RSVD | pf::P, 0x123)), "reserved, never the private data");
        // The same table in RAM translates: only its place made the fault.
        mem.write_u64(0x4000, 0x5000 | 7).unwrap();
        let regs = long_mode(&mut mem, 0x4000);
        assert_eq!(walk(&regs, &mut mem, 0x123, READ).unwrap().pa, 0x5123);
        // A leaf pointing into private memory translates (the address is
        // the guest's business) but no RAM access path follows it.
        mem.write_u64(0x4000, private | 7).unwrap();
        let t = walk(&regs, &mut mem, 0x123, READ).unwrap();
        assert_eq!(mem.ram_offset(t.pa), None);
        assert!(mem.read_u64(t.pa).is_err());
    }

    /// Guest-physical mappings (29.4.1): they survive a linear flush (MOV
    /// CR3), go with `flush_gpa` (INVEPT), and a read's mapping never
    /// lets a write through.
    #[test]
    fn guest_physical_mappings_are_cached_until_invept() {
        let (mut mem, mut b, regs) = ept_machine();
        let eptp = b.eptp();
        let mut tlb = Tlb::default();
        assert_eq!(translate_fill(&regs, &mut tlb, &mut mem, 0x123, READ, Some(eptp)), Ok(0x5123));
        // L0 remaps guest-physical 0x5000 read-only to 0x6000, without
        // INVEPT: a walk after a linear flush still uses the cached
        // guest-physical mapping, as hardware may.
        b.map(&mut mem, 0x5000, 0x6000, 0x1000, EptEntry::READ, MemoryType::WriteBack).unwrap();
        tlb.flush_all();
        assert_eq!(translate_fill(&regs, &mut tlb, &mut mem, 0x123, READ, Some(eptp)), Ok(0x5123));
        // A write was never walked: it sees the read-only entry.
        let write = AccessCtx { access: Access::Write, ..READ };
        let f = translate_fill(&regs, &mut tlb, &mut mem, 0x123, write, Some(eptp)).unwrap_err();
        assert_eq!(f.ept_info().map(|(misconfig, _, gpa)| (misconfig, gpa)), Some((false, 0x5123)));
        // INVEPT: the new mapping.
        tlb.flush_all();
        tlb.flush_gpa();
        assert_eq!(translate_fill(&regs, &mut tlb, &mut mem, 0x123, READ, Some(eptp)), Ok(0x6123));
    }

    #[test]
    fn the_ept_walk_reads_private_tables_but_guest_tables_stay_in_ram() {
        let (mut mem, b, regs) = ept_machine();
        let eptp = b.eptp();
        assert_eq!(walk_ept(&regs, &mut mem, 0x123, READ, Some(eptp)).unwrap().pa, 0x5123);
        // A guest-physical address outside EPT's map is a violation, even
        // when it names private memory.
        mem.write_u64(0x3000, PRIVATE_BASE | 7).unwrap();
        let (misconfig, _, gpa) = walk_ept(&regs, &mut mem, 0x123, READ, Some(eptp)).unwrap_err().ept_info().unwrap();
        assert_eq!((misconfig, gpa), (false, PRIVATE_BASE));
    }
}
