//! Extended page tables: the translation of guest-physical addresses that
//! the VMX unit performs while a guest runs with the "enable EPT" control,
//! and [`EptBuilder`], with which L0 lays out such tables in RAM.
//!
//! Follows the Intel SDM vol. 3C, ch. 29 "VMX Support for Address
//! Translation" (ch. 28 in older editions):
//! - 29.3.2 "EPT Translation Mechanism": the walk from the EPTP through 4
//!   (or 5) levels, the entry formats, 1 GiB pages (PDPTE bit 7) and 2 MiB
//!   pages (PDE bit 7), permissions that are the AND of every level;
//! - 29.3.3 "EPT-Induced VM Exits": 29.3.3.1 "EPT Misconfigurations"
//!   ([`EptError::Misconfig`]) and 29.3.3.2 "EPT Violations"
//!   ([`EptError::Violation`]);
//! - 29.3.4 "Accessed and Dirty Flags for EPT";
//! - 29.3.7 "EPT and Memory Typing": only the leaf's EPT memory type and
//!   "ignore PAT" are reported; combining them with the guest PAT is the
//!   caller's business;
//!
//! and ch. 28 "VM Exits", 28.2.1 "Basic VM-Exit Information", table "Exit
//! Qualification for EPT Violations" for the qualification
//! ([`vmx::exit::EptViolation`]).
//!
//! Choices where the manual leaves room, or where this model is narrower:
//! - Mode-based execute control, sub-page write permissions, supervisor
//!   shadow-stack control, guest-paging verification and #VE are not
//!   modelled: bit 10 never makes an entry present and bit 2 is the only
//!   execute permission. Qualification bit 6 is therefore always 0.
//! - An entry that is present (bits 2:0 not 000b) is checked for every
//!   misconfiguration before the walk goes on; a not-present entry ends the
//!   walk with a violation whatever its other bits hold. Permissions are
//!   compared only once the leaf is reached, so a misconfiguration anywhere
//!   on the path wins over a permission violation, as the SDM orders them
//!   (a violation happens only to a translation that is not misconfigured).
//! - Qualification bits 5:3 are the AND of bits 2:0 of every entry read,
//!   the not-present one included, so they are 000b when the walk met a
//!   not-present entry (Bochs reports the same).
//! - An entry read from an address that is not RAM reads as all ones, as a
//!   read of unbacked memory does on a PC. All ones has bits 51:MAXPHYADDR
//!   set, so the walk reports a misconfiguration; it never touches MMIO.
//! - Where the tables may live is the caller's choice ([`Tables`]): the
//!   processor's walk ([`translate`]) reads RAM and L0's private memory,
//!   where L0 keeps EPT01 and EPT02; L0's software walk of a guest
//!   hypervisor's EPT12 ([`translate_in`] with [`Tables::Ram`]) reads RAM
//!   only, so a table address in private memory reads as all ones there.
//! - Accessed and dirty flags are written only when the translation
//!   succeeds, so a walk that ends in a violation or misconfiguration has
//!   no side effect ([`crate::mmu`] does the same for guest paging).
//! - With EPT A/D enabled (EPTP bit 6), accesses to guest paging-structure
//!   entries made while translating a linear address count as writes: they
//!   need write permission, set the dirty flag of the leaf, and a violation
//!   reports both bit 0 and bit 1. Loads of the PAE PDPTEs by MOV to CR
//!   have no linear address and stay reads ([`EptSource::Physical`]).
//! - Guest-physical bits above the walk's width (bit 48 up with 4 levels,
//!   bit 57 up with 5) take no part in the walk, as in Bochs. The guest's
//!   own paging never produces such addresses (they are reserved bits
//!   beyond MAXPHYADDR there).
//! - An EPTP page-walk length other than 5 walks 4 levels; VM entry rejects
//!   such EPTPs, so the walk never sees them after the entry checks.
//!
//! [`translate`] does not allocate: the hot path is a few reads of RAM.
//! Addresses are bare `u64` inside this crate, as in [`crate::mmu`].

use crate::mem::{MemError, Memory, PAGE_SIZE};
use crate::mmu::{Access, MAXPHYADDR};
use thiserror::Error;
use vmx::caps::EptVpidCap;
use vmx::controls::{EptEntry, EptPointer, MemoryType};
use vmx::exit::{EptViolation, ExitReason};
use x86::Gpa;

/// Size of a page mapped by an EPT PTE.
pub const PAGE_4K: u64 = 1 << 12;
/// Size of a page mapped by an EPT PDE with bit 7 set.
pub const PAGE_2M: u64 = 1 << 21;
/// Size of a page mapped by an EPT PDPTE with bit 7 set.
pub const PAGE_1G: u64 = 1 << 30;

/// Address bits N-1:12 of an entry.
const PHYS_MASK: u64 = ((1u64 << MAXPHYADDR) - 1) & !0xfff;
/// Bits 51:N, reserved in every EPT entry.
const HIGH_RSVD: u64 = ((1u64 << 52) - 1) & !((1u64 << MAXPHYADDR) - 1);
const R: u64 = EptEntry::READ.bits();
const W: u64 = EptEntry::WRITE.bits();
const X: u64 = EptEntry::EXECUTE.bits();
const RWX: u64 = EptEntry::RWX.bits();
const LARGE: u64 = EptEntry::LARGE_PAGE.bits();
const ACCESSED: u64 = EptEntry::ACCESSED.bits();
const DIRTY: u64 = EptEntry::DIRTY.bits();
const IGNORE_PAT: u64 = EptEntry::IGNORE_PAT.bits();
/// Bits 7:3: reserved in PML5Es and PML4Es.
const RSVD_TOP: u64 = 0xf8;
/// Bits 6:3: reserved in PDPTEs and PDEs that reference a table.
const RSVD_TABLE: u64 = 0x78;
/// Bits 29:12 of a PDPTE that maps a 1 GiB page.
const RSVD_1G: u64 = 0x3fff_f000;
/// Bits 20:12 of a PDE that maps a 2 MiB page.
const RSVD_2M: u64 = 0x1f_f000;

/// Which optional EPT features the modelled processor has, from
/// IA32_VMX_EPT_VPID_CAP (SDM A.10 "VPID and EPT Capabilities"). Without a
/// feature, the entry values that would use it are misconfigurations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptConfig {
    /// Entries with bits 2:0 = 100b (execute-only) are allowed (bit 0).
    pub execute_only: bool,
    /// PDE bit 7 maps a 2 MiB page (bit 16); otherwise it is reserved.
    pub pages_2m: bool,
    /// PDPTE bit 7 maps a 1 GiB page (bit 17); otherwise it is reserved.
    pub pages_1g: bool,
}

impl EptConfig {
    /// Every feature this module models.
    pub const ALL: EptConfig = EptConfig { execute_only: true, pages_2m: true, pages_1g: true };

    /// The features advertised in IA32_VMX_EPT_VPID_CAP.
    pub const fn from_caps(caps: EptVpidCap) -> EptConfig {
        EptConfig {
            execute_only: caps.contains(EptVpidCap::EXECUTE_ONLY),
            pages_2m: caps.contains(EptVpidCap::PAGES_2M),
            pages_1g: caps.contains(EptVpidCap::PAGES_1G),
        }
    }
}

/// What made the access, which decides qualification bits 7 and 8 and
/// whether EPT A/D turns a read into a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptSource {
    /// An access to the guest-physical address a linear address translated
    /// to (qualification bits 7 and 8 set). The caller writes the linear
    /// address to the guest-linear-address field.
    Linear,
    /// An access to a guest paging-structure entry while translating a
    /// linear address, including updates of its accessed and dirty flags
    /// (bit 7 set, bit 8 clear). With EPT A/D enabled it counts as a write.
    /// The guest-linear-address field receives the linear address whose
    /// translation was under way.
    GuestPagingStructure,
    /// An access with no linear address, such as the PAE PDPTE loads of
    /// MOV to CR0/CR3/CR4 (bits 7 and 8 clear; never turned into a write).
    Physical,
}

/// One access to translate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptRequest {
    /// Read, write or instruction fetch. A read-modify-write is a write.
    pub access: Access,
    /// What made the access.
    pub source: EptSource,
}

impl EptRequest {
    /// An access to the translation of a linear address.
    pub const fn linear(access: Access) -> EptRequest {
        EptRequest { access, source: EptSource::Linear }
    }

    /// An access to a guest paging-structure entry (a read of the entry,
    /// or a write of its accessed/dirty flags).
    pub const fn paging_structure(access: Access) -> EptRequest {
        EptRequest { access, source: EptSource::GuestPagingStructure }
    }

    /// An access made without a linear address.
    pub const fn physical(access: Access) -> EptRequest {
        EptRequest { access, source: EptSource::Physical }
    }
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EptTranslation {
    /// Host-physical address, page offset included.
    pub hpa: u64,
    /// Size of the page the leaf maps: [`PAGE_4K`], [`PAGE_2M`] or
    /// [`PAGE_1G`].
    pub page_size: u64,
    /// Reads allowed (AND of bit 0 over the entries walked).
    pub read: bool,
    /// Writes allowed (AND of bit 1). With EPT A/D enabled the leaf's dirty
    /// flag is set only by a translation for a write, so a cache of
    /// translations must fill write entries only from write requests.
    pub write: bool,
    /// Instruction fetches allowed (AND of bit 2).
    pub exec: bool,
    /// The leaf's EPT memory type (bits 5:3): 0, 1, 4, 5 or 6.
    pub memory_type: u8,
    /// The leaf's "ignore PAT" bit (bit 6).
    pub ignore_pat: bool,
}

/// Why a guest-physical access cannot go ahead: the two EPT-induced VM
/// exits. The caller writes [`EptError::gpa`] to the VMCS guest-physical
/// address field.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EptError {
    /// EPT violation (exit reason 48).
    Violation {
        /// The guest-physical address accessed.
        gpa: u64,
        /// Exit qualification ([`EptViolation`] bits): the access in bits
        /// 2:0, the permissions of the path in 5:3, bits 7 and 8 from the
        /// request's [`EptSource`]. The caller adds what it alone knows:
        /// NMI unblocking due to IRET (bit 12) and, when it advertises it,
        /// the advanced information in bits 11:9.
        qualification: u64,
    },
    /// EPT misconfiguration (exit reason 49).
    Misconfig {
        /// The guest-physical address accessed.
        gpa: u64,
        /// Level of the offending entry: 5 (PML5E), 4 (PML4E), 3 (PDPTE),
        /// 2 (PDE) or 1 (PTE). For diagnostics.
        level: u8,
        /// The offending entry as read (all ones when it is not in RAM).
        entry: u64,
    },
}

impl EptError {
    /// The guest-physical address that caused the exit.
    pub const fn gpa(&self) -> u64 {
        match *self {
            EptError::Violation { gpa, .. } | EptError::Misconfig { gpa, .. } => gpa,
        }
    }

    /// The basic exit reason.
    pub const fn exit_reason(&self) -> ExitReason {
        match self {
            EptError::Violation { .. } => ExitReason::EptViolation,
            EptError::Misconfig { .. } => ExitReason::EptMisconfiguration,
        }
    }

    /// The exit qualification; 0 for a misconfiguration, whose
    /// qualification the SDM leaves undefined.
    pub const fn qualification(&self) -> u64 {
        match *self {
            EptError::Violation { qualification, .. } => qualification,
            EptError::Misconfig { .. } => 0,
        }
    }
}

/// Translates `gpa` through the EPT paging structures that `eptp` names.
///
/// Walks 4 levels (5 when the EPTP's page-walk length is 5), checks every
/// present entry for misconfigurations, then the access against the AND
/// of the permissions. On success with EPT A/D enabled, sets the accessed
/// flag of every entry used and, for writes, the dirty flag of the leaf.
/// Never panics and never allocates, whatever the tables hold.
#[inline]
pub fn translate(
    mem: &mut Memory,
    eptp: u64,
    gpa: u64,
    req: EptRequest,
    cfg: EptConfig,
) -> Result<EptTranslation, EptError> {
    translate_in(mem, Tables::Any, eptp, gpa, req, cfg, None)
}

/// Where the paging structures of a walk may be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tables {
    /// RAM or L0's private memory: the processor walking tables L0 built
    /// (EPT01, EPT02).
    Any,
    /// RAM only: L0 walking tables a guest built (EPT12). An entry address
    /// outside RAM, private memory included, reads as all ones.
    Ram,
}

impl Tables {
    fn read(self, mem: &Memory, pa: u64) -> Option<u64> {
        match self {
            Tables::Any => mem.read_phys_u64(pa).ok(),
            Tables::Ram => mem.read_u64(pa).ok(),
        }
    }

    fn write(self, mem: &mut Memory, pa: u64, v: u64) {
        // A failed write is dropped, as on an unbacked bus; the entry was
        // just read from the same place, so it does not fail in practice.
        let _ = match self {
            Tables::Any => mem.write_phys_u64(pa, v),
            Tables::Ram => mem.write_u64(pa, v),
        };
    }
}

/// The table pages one walk read entries from, root first (at most five).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EptPath {
    pages: [u64; 5],
    len: usize,
}

impl EptPath {
    /// Physical addresses of the table pages, root first, the table of the
    /// entry that ended the walk included.
    pub fn pages(&self) -> &[u64] {
        &self.pages[..self.len]
    }

    fn push(&mut self, table: u64) {
        if self.len < self.pages.len() {
            self.pages[self.len] = table;
            self.len += 1;
        }
    }
}

/// [`translate`] with the tables confined to `tables`; when `path` is
/// given, it receives the table pages the walk read (for a shadow of these
/// tables that must notice writes to them).
pub fn translate_in(
    mem: &mut Memory,
    tables: Tables,
    eptp: u64,
    gpa: u64,
    req: EptRequest,
    cfg: EptConfig,
    mut path: Option<&mut EptPath>,
) -> Result<EptTranslation, EptError> {
    if let Some(p) = path.as_deref_mut() {
        *p = EptPath::default();
    }
    let eptp = EptPointer(eptp);
    let ad = eptp.ad_enabled();
    let paging_write = ad && req.source == EptSource::GuestPagingStructure;
    let write = req.access == Access::Write || paging_write;

    let mut qual = match req.access {
        Access::Read => EptViolation::READ,
        Access::Write => EptViolation::WRITE,
        Access::Fetch => EptViolation::FETCH,
    };
    if paging_write {
        // SDM 28.2.1, footnote to bit 1: both bits report such an access.
        qual |= EptViolation::READ | EptViolation::WRITE;
    }
    match req.source {
        EptSource::Linear => qual |= EptViolation::LINEAR_ADDRESS_VALID | EptViolation::TRANSLATED_ACCESS,
        EptSource::GuestPagingStructure => qual |= EptViolation::LINEAR_ADDRESS_VALID,
        EptSource::Physical => {}
    }
    let need = if write {
        W
    } else if req.access == Access::Fetch {
        X
    } else {
        R
    };

    let mut level: u8 = if eptp.walk_length() == 5 { 5 } else { 4 };
    let mut table = eptp.0 & PHYS_MASK;
    let mut perms = RWX;
    // Table entries used, to set their accessed flags once the walk
    // succeeded (at most four: the fifth entry read is a PTE).
    let mut used = [0u64; 4];
    let mut nused = 0;
    let (leaf, leaf_addr, shift) = loop {
        let shift = 12 + 9 * u32::from(level - 1);
        let entry_addr = table + ((gpa >> shift) & 0x1ff) * 8;
        if let Some(p) = path.as_deref_mut() {
            p.push(table);
        }
        let e = tables.read(mem, entry_addr).unwrap_or(u64::MAX);
        let rwx = e & RWX;
        perms &= rwx;
        if rwx == 0 {
            return Err(EptError::Violation { gpa, qualification: qual.bits() | perms << 3 });
        }
        let misconfig = EptError::Misconfig { gpa, level, entry: e };
        // Write-only (010b) and write/execute (110b).
        if rwx & (R | W) == W {
            return Err(misconfig);
        }
        if rwx == X && !cfg.execute_only {
            return Err(misconfig);
        }
        let large = e & LARGE != 0;
        let is_leaf = match level {
            1 => true,
            2 => large && cfg.pages_2m,
            3 => large && cfg.pages_1g,
            _ => false,
        };
        // Without the page-size feature, bit 7 of a PDPTE or PDE is one
        // more reserved bit of a table entry.
        let rsvd = HIGH_RSVD
            | match (level, is_leaf) {
                (1, _) => 0,
                (2, true) => RSVD_2M,
                (3, true) => RSVD_1G,
                (2 | 3, false) => RSVD_TABLE | LARGE,
                _ => RSVD_TOP,
            };
        if e & rsvd != 0 {
            return Err(misconfig);
        }
        if is_leaf {
            if MemoryType::from_bits(((e >> 3) & 7) as u8).is_none() {
                return Err(misconfig);
            }
            break (e, entry_addr, shift);
        }
        used[nused] = entry_addr;
        nused += 1;
        table = e & PHYS_MASK;
        level -= 1;
    };

    if perms & need == 0 {
        return Err(EptError::Violation { gpa, qualification: qual.bits() | perms << 3 });
    }

    if ad {
        for &addr in &used[..nused] {
            set_flags(mem, tables, addr, ACCESSED);
        }
        set_flags(mem, tables, leaf_addr, if write { ACCESSED | DIRTY } else { ACCESSED });
    }

    let page_size = 1u64 << shift;
    Ok(EptTranslation {
        hpa: (leaf & PHYS_MASK & !(page_size - 1)) | (gpa & (page_size - 1)),
        page_size,
        read: perms & R != 0,
        write: perms & W != 0,
        exec: perms & X != 0,
        memory_type: ((leaf >> 3) & 7) as u8,
        ignore_pat: leaf & IGNORE_PAT != 0,
    })
}

/// Sets `bits` in the entry at `addr`, re-reading it first: with
/// self-referencing tables one entry can be used at several levels.
fn set_flags(mem: &mut Memory, tables: Tables, addr: u64, bits: u64) {
    if let Some(v) = tables.read(mem, addr) {
        if v & bits != bits {
            tables.write(mem, addr, v | bits);
        }
    }
}

/// Errors of [`EptBuilder`].
#[derive(Debug, Error, PartialEq, Eq)]
pub enum EptBuildError {
    /// The table allocator returned `None`.
    #[error("the EPT table allocator is out of pages")]
    OutOfTables,
    /// The table allocator returned an unusable page.
    #[error("the EPT table allocator returned {0:#x}, not a 4 KiB-aligned page of RAM or private memory")]
    BadTablePage(u64),
    /// A range is not 4 KiB aligned, is empty, or does not fit the
    /// guest-physical (48-bit) or host-physical (MAXPHYADDR) space.
    #[error("bad EPT range: gpa {gpa:#x}, hpa {hpa:#x}, length {len:#x}")]
    BadRange {
        /// Guest-physical start.
        gpa: u64,
        /// Host-physical start (0 for [`EptBuilder::unmap`]).
        hpa: u64,
        /// Length in bytes.
        len: u64,
    },
    /// The permissions would make a misconfigured or empty mapping (no
    /// R/W/X bit, write without read), or hold bits other than R, W, X and
    /// "ignore PAT".
    #[error("bad EPT permissions {0:#x}")]
    BadPermissions(u64),
    /// A table the builder follows is not in RAM or private memory (the
    /// tables were changed behind its back).
    #[error("EPT table access failed: {0}")]
    Memory(#[from] MemError),
}

/// Builds 4-level EPT paging structures in [`Memory`], for L0 to give its
/// guests identity or arbitrary maps. The tables may be in RAM or in
/// private memory ([`Memory::alloc_private_page`]), where L0 keeps them.
///
/// Table pages come from a caller-supplied allocator, called with the
/// memory and returning the address of a free 4 KiB page (or `None` when
/// there is none left); the builder zeroes each page it receives. Tables
/// that a remap or unmap makes unreachable are not handed back (there is no
/// free function); the allocator's owner reclaims them with the whole map.
/// A failed call may leave part of its range done.
pub struct EptBuilder<F> {
    alloc: F,
    root: u64,
    allow_1g: bool,
    accessed_dirty: bool,
}

impl<F: FnMut(&mut Memory) -> Option<u64>> EptBuilder<F> {
    /// Allocates an empty PML4 table. 1 GiB pages are allowed and EPT A/D
    /// is off until said otherwise.
    pub fn new(mem: &mut Memory, alloc: F) -> Result<Self, EptBuildError> {
        let mut b = EptBuilder { alloc, root: 0, allow_1g: true, accessed_dirty: false };
        b.root = b.alloc_table(mem)?;
        Ok(b)
    }

    /// Goes on building the tables rooted at `root`, a PML4 table made by
    /// an earlier builder (which the caller keeps alive by keeping its
    /// table pages). Allocates nothing.
    pub fn with_root(root: u64, alloc: F) -> Self {
        EptBuilder { alloc, root: root & PHYS_MASK, allow_1g: true, accessed_dirty: false }
    }

    /// Whether [`map`](Self::map) may use 1 GiB pages (for processors
    /// without them; 2 MiB pages are always used when aligned).
    pub fn allow_1g(mut self, allow: bool) -> Self {
        self.allow_1g = allow;
        self
    }

    /// Whether [`eptp`](Self::eptp) enables EPT accessed and dirty flags.
    pub fn accessed_dirty(mut self, enable: bool) -> Self {
        self.accessed_dirty = enable;
        self
    }

    /// Physical address of the PML4 table.
    pub fn root(&self) -> u64 {
        self.root
    }

    /// The EPTP: write-back paging structures, 4-level walk, A/D as set by
    /// [`accessed_dirty`](Self::accessed_dirty).
    pub fn eptp(&self) -> u64 {
        EptPointer::new(Gpa(self.root), MemoryType::WriteBack, 4, self.accessed_dirty).0
    }

    /// Maps `[gpa, gpa + len)` to `[hpa, hpa + len)` with `perms` (R, W, X
    /// and optionally "ignore PAT") and `memory_type`, using 1 GiB, 2 MiB
    /// or 4 KiB pages as alignment and length allow. Replaces whatever was
    /// mapped there, splitting larger pages that the range covers in part.
    pub fn map(
        &mut self,
        mem: &mut Memory,
        gpa: u64,
        hpa: u64,
        len: u64,
        perms: EptEntry,
        memory_type: MemoryType,
    ) -> Result<(), EptBuildError> {
        let bad_range = EptBuildError::BadRange { gpa, hpa, len };
        if !range_ok(gpa, len, 48) || !range_ok(hpa, len, MAXPHYADDR) {
            return Err(bad_range);
        }
        let p = perms.bits();
        if p & !(RWX | IGNORE_PAT) != 0 || p & RWX == 0 || p & (R | W) == W {
            return Err(EptBuildError::BadPermissions(p));
        }
        let attrs = p | (memory_type as u64) << 3;
        let mut off = 0;
        while off < len {
            let (g, h, rest) = (gpa + off, hpa + off, len - off);
            let fits = |size: u64| (g | h) & (size - 1) == 0 && rest >= size;
            let (size, level) = if self.allow_1g && fits(PAGE_1G) {
                (PAGE_1G, 3)
            } else if fits(PAGE_2M) {
                (PAGE_2M, 2)
            } else {
                (PAGE_4K, 1)
            };
            let entry_addr = self.entry_for(mem, g, level)?;
            let large = if level > 1 { LARGE } else { 0 };
            mem.write_phys_u64(entry_addr, h | attrs | large)?;
            off += size;
        }
        Ok(())
    }

    /// Removes the mappings of `[gpa, gpa + len)`, splitting large pages
    /// that the range covers in part; the rest of them stays mapped with
    /// the same attributes.
    pub fn unmap(&mut self, mem: &mut Memory, gpa: u64, len: u64) -> Result<(), EptBuildError> {
        if !range_ok(gpa, len, 48) {
            return Err(EptBuildError::BadRange { gpa, hpa: 0, len });
        }
        let end = gpa + len;
        let mut a = gpa;
        while a < end {
            let mut table = self.root;
            let mut level = 4u8;
            loop {
                let size = level_size(level);
                let entry_addr = table + index(a, level) * 8;
                let e = mem.read_phys_u64(entry_addr)?;
                if e & RWX == 0 {
                    // Nothing mapped up to the end of this entry's span.
                    a = (a | (size - 1)) + 1;
                    break;
                }
                if a & (size - 1) == 0 && end - a >= size {
                    mem.write_phys_u64(entry_addr, 0)?;
                    a += size;
                    break;
                }
                // Only a 4 KiB-aligned range reaches level 1, and it always
                // covers the PTE, so `level > 1` here.
                table = if is_large(e, level) {
                    let t = self.split(mem, e, level)?;
                    mem.write_phys_u64(entry_addr, t | RWX)?;
                    t
                } else {
                    e & PHYS_MASK
                };
                level -= 1;
            }
        }
        Ok(())
    }

    /// Address of the entry at `target` level for `gpa`, creating tables
    /// and splitting large pages on the way down.
    fn entry_for(&mut self, mem: &mut Memory, gpa: u64, target: u8) -> Result<u64, EptBuildError> {
        let mut table = self.root;
        let mut level = 4u8;
        loop {
            let entry_addr = table + index(gpa, level) * 8;
            if level == target {
                return Ok(entry_addr);
            }
            let e = mem.read_phys_u64(entry_addr)?;
            table = if e & RWX == 0 {
                let t = self.alloc_table(mem)?;
                mem.write_phys_u64(entry_addr, t | RWX)?;
                t
            } else if is_large(e, level) {
                let t = self.split(mem, e, level)?;
                mem.write_phys_u64(entry_addr, t | RWX)?;
                t
            } else {
                e & PHYS_MASK
            };
            level -= 1;
        }
    }

    /// A new table of 512 pages of the next smaller size that together
    /// map what the large leaf `e` at `level` mapped, with its attributes.
    fn split(&mut self, mem: &mut Memory, e: u64, level: u8) -> Result<u64, EptBuildError> {
        let t = self.alloc_table(mem)?;
        let child = level_size(level - 1);
        let base = e & PHYS_MASK & !(level_size(level) - 1);
        // PTEs have no page-size bit (bit 7 is ignored there): drop it.
        let attrs = (e & !PHYS_MASK) & if level == 2 { !LARGE } else { !0 };
        let mut page = [0u8; PAGE_SIZE as usize];
        for (i, slot) in page.chunks_exact_mut(8).enumerate() {
            slot.copy_from_slice(&(attrs | (base + i as u64 * child)).to_le_bytes());
        }
        mem.write_phys(t, &page)?;
        Ok(t)
    }

    fn alloc_table(&mut self, mem: &mut Memory) -> Result<u64, EptBuildError> {
        let t = (self.alloc)(mem).ok_or(EptBuildError::OutOfTables)?;
        if t & 0xfff != 0 || t & !PHYS_MASK != 0 || mem.write_phys(t, &[0; PAGE_SIZE as usize]).is_err() {
            return Err(EptBuildError::BadTablePage(t));
        }
        Ok(t)
    }
}

/// A non-empty, 4 KiB-aligned range below `1 << bits`.
fn range_ok(start: u64, len: u64, bits: u32) -> bool {
    (start | len) & 0xfff == 0 && len != 0 && start.checked_add(len).is_some_and(|end| end <= 1u64 << bits)
}

/// Bytes one entry at `level` spans.
fn level_size(level: u8) -> u64 {
    1u64 << (12 + 9 * u32::from(level - 1))
}

/// Index of the entry for `gpa` in a table at `level`.
fn index(gpa: u64, level: u8) -> u64 {
    (gpa >> (12 + 9 * u32::from(level - 1))) & 0x1ff
}

/// Whether a present entry at `level` maps a 2 MiB or 1 GiB page.
fn is_large(e: u64, level: u8) -> bool {
    (level == 2 || level == 3) && e & LARGE != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MEM: u64 = 16 << 20;
    /// Table pages of the hand-built walks: PML5, PML4, PDPT, PD, PT.
    const PML5: u64 = 0x1000;
    const PML4: u64 = 0x2000;
    const PDPT: u64 = 0x3000;
    const PD: u64 = 0x4000;
    const PT: u64 = 0x5000;
    const WB: u64 = 6 << 3;

    fn eptp(ad: bool) -> u64 {
        EptPointer::new(Gpa(PML4), MemoryType::WriteBack, 4, ad).0
    }

    /// A 4-level walk for gpa `0x0000_0000_0000_0abc`-style addresses: every
    /// level uses index 0 and points at the next fixed table, the PTE maps
    /// 0x7000 with `pte`'s attributes.
    fn chain(pte: u64) -> Memory {
        let mut m = Memory::new(MEM).unwrap();
        m.write_u64(PML4, PDPT | RWX).unwrap();
        m.write_u64(PDPT, PD | RWX).unwrap();
        m.write_u64(PD, PT | RWX).unwrap();
        m.write_u64(PT, 0x7000 | pte).unwrap();
        m
    }

    /// Address of the entry at `level` in [`chain`].
    fn entry_at(level: u8) -> u64 {
        [PT, PD, PDPT, PML4, PML5][usize::from(level - 1)]
    }

    fn read(m: &mut Memory, gpa: u64) -> Result<EptTranslation, EptError> {
        translate(m, eptp(false), gpa, EptRequest::linear(Access::Read), EptConfig::ALL)
    }

    fn access(m: &mut Memory, gpa: u64, a: Access, cfg: EptConfig) -> Result<EptTranslation, EptError> {
        translate(m, eptp(false), gpa, EptRequest::linear(a), cfg)
    }

    /// Qualification bits 7 and 8 of a [`EptSource::Linear`] access.
    const LIN: u64 = 0x180;

    fn violation(gpa: u64, qualification: u64) -> Result<EptTranslation, EptError> {
        Err(EptError::Violation { gpa, qualification })
    }

    fn is_misconfig(r: Result<EptTranslation, EptError>, level: u8) -> bool {
        matches!(r, Err(EptError::Misconfig { level: l, .. }) if l == level)
    }

    /// A bump allocator over `[start, end)`.
    fn bump(start: u64, end: u64) -> impl FnMut(&mut Memory) -> Option<u64> {
        let mut next = start;
        move |_| {
            if next >= end {
                return None;
            }
            next += PAGE_4K;
            Some(next - PAGE_4K)
        }
    }

    fn builder(m: &mut Memory) -> EptBuilder<impl FnMut(&mut Memory) -> Option<u64>> {
        EptBuilder::new(m, bump(0x10_0000, 0x20_0000)).unwrap()
    }

    fn rw() -> EptEntry {
        EptEntry::READ | EptEntry::WRITE
    }

    #[test]
    fn identity_maps_translate_with_offset_and_page_size() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = builder(&mut m);
        b.map(&mut m, 0x5000, 0x5000, PAGE_4K, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        b.map(&mut m, 0x40_0000, 0x40_0000, PAGE_2M, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        b.map(&mut m, PAGE_1G, PAGE_1G, PAGE_1G, EptEntry::RWX, MemoryType::Uncacheable).unwrap();
        let eptp = b.eptp();
        let t = |m: &mut Memory, gpa| translate(m, eptp, gpa, EptRequest::linear(Access::Read), EptConfig::ALL);
        let r = t(&mut m, 0x5abc).unwrap();
        assert_eq!((r.hpa, r.page_size, r.memory_type), (0x5abc, PAGE_4K, 6));
        assert!(r.read && r.write && r.exec && !r.ignore_pat);
        let r = t(&mut m, 0x5a_bcde).unwrap();
        assert_eq!((r.hpa, r.page_size), (0x5a_bcde, PAGE_2M));
        let r = t(&mut m, 0x7654_3210).unwrap();
        assert_eq!((r.hpa, r.page_size, r.memory_type), (0x7654_3210, PAGE_1G, 0));
        // Neighbours are not mapped.
        assert!(matches!(t(&mut m, 0x6000), Err(EptError::Violation { gpa: 0x6000, .. })));
        assert!(matches!(t(&mut m, 0x80_0000), Err(EptError::Violation { .. })));
    }

    #[test]
    fn arbitrary_maps_relocate() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = builder(&mut m);
        let ipat = rw() | EptEntry::IGNORE_PAT;
        b.map(&mut m, 0x8000_0000, 0x20_0000, 3 * PAGE_2M + PAGE_4K, ipat, MemoryType::WriteThrough).unwrap();
        let eptp = b.eptp();
        let t = |m: &mut Memory, gpa| translate(m, eptp, gpa, EptRequest::linear(Access::Write), EptConfig::ALL);
        let r = t(&mut m, 0x8000_0123).unwrap();
        assert_eq!((r.hpa, r.page_size, r.memory_type, r.ignore_pat), (0x20_0123, PAGE_2M, 4, true));
        assert!(!r.exec);
        let r = t(&mut m, 0x8060_0fff).unwrap();
        assert_eq!((r.hpa, r.page_size), (0x80_0fff, PAGE_4K));
        assert!(t(&mut m, 0x8060_1000).is_err());
    }

    #[test]
    fn map_picks_page_sizes_by_alignment() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = builder(&mut m).allow_1g(false);
        // 4 KiB up to the first 2 MiB boundary, 2 MiB pages, then 4 KiB.
        b.map(&mut m, 0x1f_f000, 0x1f_f000, PAGE_1G + 0x2000, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        let eptp = b.eptp();
        let size = |m: &mut Memory, gpa| {
            translate(m, eptp, gpa, EptRequest::physical(Access::Fetch), EptConfig::ALL).unwrap().page_size
        };
        assert_eq!(size(&mut m, 0x1f_f000), PAGE_4K);
        assert_eq!(size(&mut m, 0x20_0000), PAGE_2M);
        assert_eq!(size(&mut m, 0x4000_0000), PAGE_2M);
        assert_eq!(size(&mut m, 0x401f_f000), PAGE_2M);
        assert_eq!(size(&mut m, 0x4020_0000), PAGE_4K);
        let mut m = Memory::new(MEM).unwrap();
        let mut b = builder(&mut m);
        b.map(&mut m, 0, 0, 2 * PAGE_1G, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        let eptp = b.eptp();
        let r = translate(&mut m, eptp, 0x4000_1234, EptRequest::physical(Access::Read), EptConfig::ALL).unwrap();
        assert_eq!((r.hpa, r.page_size), (0x4000_1234, PAGE_1G));
    }

    #[test]
    fn not_present_at_each_level_is_a_violation_with_no_permissions() {
        for level in 1..=4u8 {
            for (a, bits) in [(Access::Read, 1), (Access::Write, 2), (Access::Fetch, 4)] {
                let mut m = chain(RWX | WB);
                // Reserved bits do not matter in a not-present entry.
                m.write_u64(entry_at(level), 0xfff0_0000_0000_fff8).unwrap();
                assert_eq!(access(&mut m, 0xabc, a, EptConfig::ALL), violation(0xabc, bits | LIN), "level {level}");
            }
        }
        let mut m = chain(RWX | WB);
        assert_eq!(read(&mut m, 0xabc).unwrap().hpa, 0x7abc);
        // The rest of the PT is empty.
        assert_eq!(read(&mut m, 0x1abc), violation(0x1abc, 1 | LIN));
    }

    #[test]
    fn write_to_read_only_page() {
        let mut m = chain(R | WB);
        assert_eq!(access(&mut m, 0x10, Access::Write, EptConfig::ALL), violation(0x10, 0b001_010 | LIN));
        let r = read(&mut m, 0x10).unwrap();
        assert!(r.read && !r.write && !r.exec);
    }

    #[test]
    fn fetch_from_non_executable_page() {
        let mut m = chain(R | W | WB);
        assert_eq!(access(&mut m, 0x10, Access::Fetch, EptConfig::ALL), violation(0x10, 0b011_100 | LIN));
        m.write_u64(PT, 0x7000 | RWX | WB).unwrap();
        assert_eq!(access(&mut m, 0x10, Access::Fetch, EptConfig::ALL).unwrap().hpa, 0x7010);
    }

    #[test]
    fn permissions_are_the_and_of_every_level() {
        for level in 2..=4u8 {
            let mut m = chain(RWX | WB);
            let e = m.read_u64(entry_at(level)).unwrap();
            m.write_u64(entry_at(level), e & !(W | X)).unwrap();
            assert_eq!(access(&mut m, 0, Access::Write, EptConfig::ALL), violation(0, 0b001_010 | LIN));
            assert_eq!(access(&mut m, 0, Access::Fetch, EptConfig::ALL), violation(0, 0b001_100 | LIN));
            let r = read(&mut m, 0).unwrap();
            assert!(r.read && !r.write && !r.exec);
        }
    }

    #[test]
    fn write_without_read_is_a_misconfiguration() {
        for level in 1..=4u8 {
            for bad in [W, W | X] {
                let mut m = chain(RWX | WB);
                let e = m.read_u64(entry_at(level)).unwrap();
                m.write_u64(entry_at(level), (e & !RWX) | bad).unwrap();
                let r = read(&mut m, 0);
                assert_eq!(
                    r,
                    Err(EptError::Misconfig { gpa: 0, level, entry: (e & !RWX) | bad }),
                    "level {level} bits {bad:#b}"
                );
                assert_eq!(r.unwrap_err().exit_reason(), ExitReason::EptMisconfiguration);
            }
        }
    }

    #[test]
    fn execute_only_needs_the_capability() {
        let no_xo = EptConfig { execute_only: false, ..EptConfig::ALL };
        let mut m = chain(X | WB);
        assert_eq!(access(&mut m, 0x20, Access::Fetch, EptConfig::ALL).unwrap().hpa, 0x7020);
        assert_eq!(access(&mut m, 0x20, Access::Read, EptConfig::ALL), violation(0x20, 0b100_001 | LIN));
        assert!(is_misconfig(access(&mut m, 0x20, Access::Fetch, no_xo), 1));
        // Execute-only upper level: misconfigured without the capability.
        let mut m = chain(RWX | WB);
        m.write_u64(PDPT, PD | X).unwrap();
        assert!(is_misconfig(access(&mut m, 0, Access::Fetch, no_xo), 3));
        assert!(access(&mut m, 0, Access::Fetch, EptConfig::ALL).is_ok());
        assert_eq!(
            EptConfig::from_caps(EptVpidCap::EXECUTE_ONLY | EptVpidCap::PAGES_2M),
            EptConfig { execute_only: true, pages_2m: true, pages_1g: false }
        );
    }

    /// A chain whose PDPTE maps a 1 GiB page at 1 GiB with `attrs`.
    fn large_1g(attrs: u64) -> Memory {
        let mut m = chain(RWX | WB);
        m.write_u64(PDPT, PAGE_1G | LARGE | attrs).unwrap();
        m
    }

    /// A chain whose PDE maps a 2 MiB page at 2 MiB with `attrs`.
    fn large_2m(attrs: u64) -> Memory {
        let mut m = chain(RWX | WB);
        m.write_u64(PD, PAGE_2M | LARGE | attrs).unwrap();
        m
    }

    fn chain_1g(extra: u64) -> Memory {
        large_1g(RWX | WB | extra)
    }

    fn chain_2m(extra: u64) -> Memory {
        large_2m(RWX | WB | extra)
    }

    #[test]
    fn reserved_bits_are_misconfigurations() {
        let high = [1u64 << MAXPHYADDR, 1 << 51];
        // PML4E: bits 7:3 and 51:N.
        for bit in (3..=7).chain(high.iter().map(|b| b.trailing_zeros())) {
            let mut m = chain(RWX | WB);
            m.write_u64(PML4, PDPT | RWX | 1 << bit).unwrap();
            assert!(is_misconfig(read(&mut m, 0), 4), "PML4E bit {bit}");
        }
        // PDPTE and PDE referencing a table: bits 6:3 and 51:N.
        for level in [3u8, 2] {
            for bit in (3..=6).chain(high.iter().map(|b| b.trailing_zeros())) {
                let mut m = chain(RWX | WB);
                let e = m.read_u64(entry_at(level)).unwrap();
                m.write_u64(entry_at(level), e | 1 << bit).unwrap();
                assert!(is_misconfig(read(&mut m, 0), level), "level {level} bit {bit}");
            }
        }
        // 1 GiB leaf: bits 29:12; 2 MiB leaf: bits 20:12; PTE: 51:N.
        for bit in [12, 20, 29, 40, 51] {
            assert!(is_misconfig(read(&mut chain_1g(1 << bit), 0), 3), "1G bit {bit}");
        }
        for bit in [12, 16, 20, 40, 51] {
            assert!(is_misconfig(read(&mut chain_2m(1 << bit), 0), 2), "2M bit {bit}");
        }
        for bit in [40, 45, 51] {
            assert!(is_misconfig(read(&mut chain(RWX | WB | 1 << bit), 0), 1), "PTE bit {bit}");
        }
        // Large pages the processor does not have: bit 7 is reserved.
        let no_1g = EptConfig { pages_1g: false, ..EptConfig::ALL };
        let no_2m = EptConfig { pages_2m: false, ..EptConfig::ALL };
        assert!(is_misconfig(access(&mut chain_1g(0), 0, Access::Read, no_1g), 3));
        assert!(is_misconfig(access(&mut chain_2m(0), 0, Access::Read, no_2m), 2));
        // Ignored bits are not reserved: PTE bit 7, bits 11:8 and 62:52
        // everywhere, bit 63 (suppress #VE) in leaves.
        let ignored = 0x7ff0_0000_0000_0e00;
        let mut m = chain(RWX | WB | LARGE | ignored | 1 << 63);
        for level in 2..=4 {
            let e = m.read_u64(entry_at(level)).unwrap();
            m.write_u64(entry_at(level), e | ignored).unwrap();
        }
        assert_eq!(read(&mut m, 0x10).unwrap().hpa, 0x7010);
        assert_eq!(read(&mut chain_1g(ignored | 1 << 63), 0x10).unwrap().hpa, PAGE_1G + 0x10);
    }

    #[test]
    fn five_level_walk() {
        let mut m = chain(RWX | WB);
        let eptp5 = EptPointer::new(Gpa(PML5), MemoryType::WriteBack, 5, false).0;
        let gpa = 1u64 << 48 | 0x123;
        m.write_u64(PML5 + 8, PML4 | RWX).unwrap();
        let r = translate(&mut m, eptp5, gpa, EptRequest::linear(Access::Read), EptConfig::ALL).unwrap();
        assert_eq!(r.hpa, 0x7123);
        // The PML5 entry for index 0 is not present.
        let r = translate(&mut m, eptp5, 0x123, EptRequest::linear(Access::Read), EptConfig::ALL);
        assert_eq!(r, violation(0x123, 1 | LIN));
        // PML5E bits 7:3 are reserved.
        m.write_u64(PML5 + 8, PML4 | RWX | LARGE).unwrap();
        let r = translate(&mut m, eptp5, gpa, EptRequest::linear(Access::Read), EptConfig::ALL);
        assert!(is_misconfig(r, 5));
        // With 4 levels, bits 63:48 take no part in the walk.
        assert_eq!(read(&mut m, gpa).unwrap().hpa, 0x7123);
    }

    #[test]
    fn reserved_memory_types_are_misconfigurations() {
        for mt in 0..8u64 {
            let attrs = RWX | mt << 3 | IGNORE_PAT;
            for (level, r) in [
                (1, read(&mut chain(attrs), 0)),
                (2, read(&mut large_2m(attrs), 0)),
                (3, read(&mut large_1g(attrs), 0)),
            ] {
                if matches!(mt, 0 | 1 | 4 | 5 | 6) {
                    let t = r.unwrap();
                    assert_eq!((t.memory_type, t.ignore_pat), (mt as u8, true));
                } else {
                    assert!(is_misconfig(r, level), "type {mt} level {level}");
                }
            }
        }
    }

    #[test]
    fn misconfiguration_wins_over_permissions() {
        let mut m = chain(RWX | WB | 1 << 45);
        m.write_u64(PML4, PDPT | R).unwrap();
        assert!(is_misconfig(access(&mut m, 0, Access::Write, EptConfig::ALL), 1));
    }

    fn flags(m: &Memory, level: u8) -> u64 {
        m.read_u64(entry_at(level)).unwrap() & (ACCESSED | DIRTY)
    }

    #[test]
    fn accessed_and_dirty_flags_when_enabled() {
        let mut m = chain(RWX | WB);
        let t = |m: &mut Memory, a, ad| translate(m, eptp(ad), 0, EptRequest::linear(a), EptConfig::ALL);
        t(&mut m, Access::Write, false).unwrap();
        assert!((1..=4).all(|l| flags(&m, l) == 0));
        t(&mut m, Access::Read, true).unwrap();
        assert!((1..=4).all(|l| flags(&m, l) == ACCESSED));
        t(&mut m, Access::Fetch, true).unwrap();
        assert!((1..=4).all(|l| flags(&m, l) == ACCESSED));
        t(&mut m, Access::Write, true).unwrap();
        assert_eq!(flags(&m, 1), ACCESSED | DIRTY);
        assert!((2..=4).all(|l| flags(&m, l) == ACCESSED));
        // The dirty flag goes on the large leaf.
        let mut m = chain_2m(0);
        t(&mut m, Access::Write, true).unwrap();
        assert_eq!(flags(&m, 2), ACCESSED | DIRTY);
        assert_eq!(flags(&m, 1), 0, "the PT was not used");
        // Failed walks leave every flag alone.
        let mut m = chain(R | WB);
        assert!(t(&mut m, Access::Write, true).is_err());
        assert!((1..=4).all(|l| flags(&m, l) == 0));
    }

    #[test]
    fn guest_paging_structure_accesses_are_writes_with_ad() {
        let ps = EptRequest::paging_structure(Access::Read);
        let mut m = chain(R | X | WB);
        assert!(translate(&mut m, eptp(false), 8, ps, EptConfig::ALL).is_ok());
        // Bits 0 and 1, R and X allowed, linear address valid, not the
        // translated access.
        let r = translate(&mut m, eptp(true), 8, ps, EptConfig::ALL);
        assert_eq!(r, violation(8, 0b101_011 | 0x80));
        assert_eq!(r.unwrap_err().qualification(), 0b101_011 | 0x80);
        // PDPTE loads stay reads and report no linear address.
        let pdpte_load = EptRequest::physical(Access::Read);
        assert!(translate(&mut m, eptp(true), 8, pdpte_load, EptConfig::ALL).is_ok());
        assert_eq!(flags(&m, 1), ACCESSED);
        let r = translate(&mut m, eptp(true), 8, EptRequest::physical(Access::Write), EptConfig::ALL);
        assert_eq!(r, violation(8, 0b101_010));
        // A writable guest page table gets its dirty flag.
        let mut m = chain(RWX | WB);
        translate(&mut m, eptp(true), 8, ps, EptConfig::ALL).unwrap();
        assert_eq!(flags(&m, 1), ACCESSED | DIRTY);
    }

    #[test]
    fn tables_outside_ram_are_misconfigurations() {
        let mut m = chain(RWX | WB);
        m.write_u64(PDPT, 0xf000_0000 | RWX).unwrap();
        let r = read(&mut m, 0);
        assert_eq!(r, Err(EptError::Misconfig { gpa: 0, level: 2, entry: u64::MAX }));
        let far = EptPointer::new(Gpa(0xff_ffff_f000), MemoryType::WriteBack, 4, true).0;
        let r = translate(&mut m, far, 0, EptRequest::linear(Access::Write), EptConfig::ALL);
        assert!(is_misconfig(r, 4));
    }

    #[test]
    fn self_referencing_tables_do_not_panic() {
        let mut m = Memory::new(MEM).unwrap();
        m.write_u64(PML4, PML4 | RWX).unwrap();
        let r = translate(&mut m, eptp(true), 0x42, EptRequest::linear(Access::Write), EptConfig::ALL);
        // The PML4 serves at every level; as a PTE it maps itself.
        assert_eq!(r.unwrap().hpa, PML4 | 0x42);
        assert_eq!(m.read_u64(PML4).unwrap(), PML4 | RWX | ACCESSED | DIRTY);
        // An entry pointing at itself with bit 7 set is reserved as a PML4E.
        m.write_u64(PML4, PML4 | RWX | LARGE).unwrap();
        assert!(is_misconfig(read(&mut m, 0), 4));
    }

    #[test]
    fn unmap_splits_a_2m_page_and_keeps_the_rest() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = builder(&mut m);
        let perms = EptEntry::READ | EptEntry::EXECUTE | EptEntry::IGNORE_PAT;
        b.map(&mut m, 0x60_0000, 0xa0_0000, PAGE_2M, perms, MemoryType::WriteCombining).unwrap();
        b.unmap(&mut m, 0x60_1000, PAGE_4K).unwrap();
        let eptp = b.eptp();
        let t = |m: &mut Memory, gpa| translate(m, eptp, gpa, EptRequest::linear(Access::Read), EptConfig::ALL);
        assert_eq!(t(&mut m, 0x60_1008), violation(0x60_1008, 1 | LIN));
        for gpa in (0x60_0000..0x80_0000).step_by(PAGE_4K as usize).filter(|&g| g != 0x60_1000) {
            let r = t(&mut m, gpa + 0x18).unwrap();
            assert_eq!((r.hpa, r.page_size), (gpa - 0x60_0000 + 0xa0_0018, PAGE_4K));
            assert_eq!((r.read, r.write, r.exec, r.memory_type, r.ignore_pat), (true, false, true, 1, true));
        }
        // Unmapping what is not mapped, and whole pages, works too.
        b.unmap(&mut m, 0, 0x60_0000 + 2 * PAGE_4K).unwrap();
        assert!(t(&mut m, 0x60_0000).is_err());
        assert!(t(&mut m, 0x60_2000).is_ok());
        b.unmap(&mut m, 0x60_0000, PAGE_2M).unwrap();
        assert!(t(&mut m, 0x60_2000).is_err());
    }

    #[test]
    fn unmap_splits_a_1g_page_down_to_4k() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = builder(&mut m);
        b.map(&mut m, PAGE_1G, 0, PAGE_1G, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        b.unmap(&mut m, PAGE_1G + PAGE_2M + PAGE_4K, PAGE_4K).unwrap();
        let eptp = b.eptp();
        let t = |m: &mut Memory, gpa| translate(m, eptp, gpa, EptRequest::linear(Access::Write), EptConfig::ALL);
        assert!(t(&mut m, PAGE_1G + PAGE_2M + PAGE_4K).is_err());
        assert_eq!(t(&mut m, PAGE_1G + 5).unwrap().page_size, PAGE_2M);
        let r = t(&mut m, PAGE_1G + PAGE_2M + 2 * PAGE_4K + 5).unwrap();
        assert_eq!((r.hpa, r.page_size), (PAGE_2M + 2 * PAGE_4K + 5, PAGE_4K));
        let r = t(&mut m, PAGE_1G + 0x3fff_fff0).unwrap();
        assert_eq!((r.hpa, r.page_size), (0x3fff_fff0, PAGE_2M));
        // Remapping inside the split page replaces one 4 KiB page.
        b.map(&mut m, PAGE_1G + PAGE_2M + PAGE_4K, 0x9000, PAGE_4K, rw(), MemoryType::WriteBack).unwrap();
        assert_eq!(t(&mut m, PAGE_1G + PAGE_2M + PAGE_4K + 1).unwrap().hpa, 0x9001);
    }

    #[test]
    fn builder_errors() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = EptBuilder::new(&mut m, bump(0x10_0000, 0x10_2000)).unwrap();
        // The root and one PDPT fit; the PD does not.
        assert_eq!(b.map(&mut m, 0, 0, PAGE_4K, EptEntry::RWX, MemoryType::WriteBack), Err(EptBuildError::OutOfTables));
        let mut b = builder(&mut m);
        let wb = MemoryType::WriteBack;
        assert!(matches!(b.map(&mut m, 0x800, 0, PAGE_4K, rw(), wb), Err(EptBuildError::BadRange { .. })));
        assert!(matches!(b.map(&mut m, 0, 0, 0, rw(), wb), Err(EptBuildError::BadRange { .. })));
        assert!(matches!(b.map(&mut m, 1 << 48, 0, PAGE_4K, rw(), wb), Err(EptBuildError::BadRange { .. })));
        assert!(matches!(b.map(&mut m, 0, 1 << 40, PAGE_4K, rw(), wb), Err(EptBuildError::BadRange { .. })));
        assert!(matches!(b.map(&mut m, !0xfff, 0, PAGE_4K, rw(), wb), Err(EptBuildError::BadRange { .. })));
        assert!(matches!(b.unmap(&mut m, 0, 0x10), Err(EptBuildError::BadRange { .. })));
        assert_eq!(b.map(&mut m, 0, 0, PAGE_4K, EptEntry::WRITE, wb), Err(EptBuildError::BadPermissions(W)));
        assert!(b.map(&mut m, 0, 0, PAGE_4K, EptEntry::empty(), wb).is_err());
        assert!(b.map(&mut m, 0, 0, PAGE_4K, EptEntry::RWX | EptEntry::DIRTY, wb).is_err());
        assert!(b.map(&mut m, 0, 0, PAGE_4K, EptEntry::EXECUTE, wb).is_ok());
        let r = EptBuilder::new(&mut m, |_: &mut Memory| Some(0x123));
        assert_eq!(r.err(), Some(EptBuildError::BadTablePage(0x123)));
        let r = EptBuilder::new(&mut m, |_: &mut Memory| Some(MEM));
        assert_eq!(r.err(), Some(EptBuildError::BadTablePage(MEM)));
    }

    #[test]
    fn eptp_layout() {
        let mut m = Memory::new(MEM).unwrap();
        let b = builder(&mut m);
        assert_eq!(b.root(), 0x10_0000);
        assert_eq!(b.eptp(), 0x10_0000 | 6 | 3 << 3);
        let b = b.accessed_dirty(true);
        assert_eq!(b.eptp(), 0x10_0000 | 6 | 3 << 3 | 1 << 6);
    }

    #[test]
    fn the_processor_walks_private_tables() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = EptBuilder::new(&mut m, |m: &mut Memory| m.alloc_private_page()).unwrap();
        assert!(m.is_private(b.root()));
        b.map(&mut m, 0x5000, 0x9000, PAGE_4K, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        let eptp = b.accessed_dirty(true).eptp();
        let r = translate(&mut m, eptp, 0x5123, EptRequest::linear(Access::Write), EptConfig::ALL).unwrap();
        assert_eq!(r.hpa, 0x9123);
        // The A/D flags went to the private tables.
        let root = eptp & PHYS_MASK;
        assert_ne!(m.read_phys_u64(root).unwrap() & ACCESSED, 0);
        let mut path = EptPath::default();
        let r = translate_in(
            &mut m,
            Tables::Any,
            eptp,
            0x5000,
            EptRequest::linear(Access::Read),
            EptConfig::ALL,
            Some(&mut path),
        );
        assert_eq!(r.unwrap().hpa, 0x9000);
        assert_eq!(path.pages().len(), 4);
        assert_eq!(path.pages()[0], root);
        assert!(path.pages().iter().all(|&p| m.is_private(p)));
    }

    #[test]
    fn a_ram_only_walk_refuses_private_tables() {
        let mut m = Memory::new(MEM).unwrap();
        let mut b = EptBuilder::new(&mut m, |m: &mut Memory| m.alloc_private_page()).unwrap();
        b.map(&mut m, 0, 0, PAGE_2M, EptEntry::RWX, MemoryType::WriteBack).unwrap();
        let private_eptp = b.eptp();
        let req = EptRequest::linear(Access::Read);
        let mut path = EptPath::default();
        let r = translate_in(&mut m, Tables::Ram, private_eptp, 0x10, req, EptConfig::ALL, Some(&mut path));
        assert_eq!(r, Err(EptError::Misconfig { gpa: 0x10, level: 4, entry: u64::MAX }));
        assert_eq!(path.pages(), &[private_eptp & PHYS_MASK]);
        // A RAM root whose entry leads into private memory stops there.
        let private_pdpt = m.read_phys_u64(private_eptp & PHYS_MASK).unwrap() & PHYS_MASK;
        let mut m2 = chain(RWX | WB);
        let pdpt = m2.alloc_private_page().unwrap();
        m2.write_phys_u64(pdpt, PD | RWX).unwrap();
        m2.write_u64(PML4, pdpt | RWX).unwrap();
        let r = translate_in(&mut m2, Tables::Ram, eptp(false), 0x10, req, EptConfig::ALL, None);
        assert_eq!(r, Err(EptError::Misconfig { gpa: 0x10, level: 3, entry: u64::MAX }));
        assert!(m.is_private(private_pdpt));
        // The processor's walk of the same tables goes through.
        assert_eq!(translate(&mut m2, eptp(false), 0x10, req, EptConfig::ALL).unwrap().hpa, 0x7010);
        // Accessed flags of a RAM-only walk never land in private memory.
        let ad = EptPointer::new(Gpa(PML4), MemoryType::WriteBack, 4, true).0;
        assert!(translate_in(&mut m2, Tables::Ram, ad, 0x10, req, EptConfig::ALL, None).is_err());
        assert_eq!(m2.read_phys_u64(pdpt).unwrap(), PD | RWX);
    }

    /// Entries for the hostile-table property: any value at all, and
    /// entries that look plausible (present, often a valid memory type)
    /// but point back into the table page itself, into RAM or past it.
    fn hostile_entry() -> impl Strategy<Value = u64> {
        let target = prop_oneof![
            4 => Just(PML4),
            1 => (0u64..MEM >> 12).prop_map(|p| p << 12),
            1 => (0u64..1 << 28).prop_map(|p| p << 12),
            // Aligned for 2 MiB and 1 GiB pages (reserved bits otherwise).
            1 => (0u64..1 << 19).prop_map(|p| p << 21),
            1 => (0u64..1 << 10).prop_map(|p| p << 30),
        ];
        let rwx = prop_oneof![4 => Just(RWX), 1 => Just(R), 1 => Just(R | X), 1 => 1u64..8];
        // Leaf attributes (memory type, ignore PAT, page size) in some
        // entries only: they are reserved bits in table entries.
        let memory_type = prop_oneof![2 => Just(6u64), 1 => 0u64..8];
        let leaf = prop::option::weighted(0.3, (memory_type, any::<bool>(), prop::bool::weighted(0.7)));
        let plausible = (target, rwx, leaf, any::<bool>(), prop::option::weighted(0.05, 0u32..64)).prop_map(
            |(addr, rwx, leaf, ad, stray)| {
                let attrs = leaf.map_or(0, |(mt, ipat, large)| {
                    mt << 3 | if ipat { IGNORE_PAT } else { 0 } | if large { LARGE } else { 0 }
                });
                addr | rwx | attrs | if ad { ACCESSED | DIRTY } else { 0 } | stray.map_or(0, |b| 1 << b)
            },
        );
        prop_oneof![1 => any::<u64>(), 4 => plausible, 1 => Just(0)]
    }

    proptest! {
        // Filling a whole table per case dominates the time of a debug
        // build; 64 tables of 64 addresses each keep the test at ~2 s.
        #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]
        #[test]
        fn hostile_tables_never_panic(
            entries in proptest::collection::vec(hostile_entry(), 512),
            gpas in proptest::collection::vec(any::<u64>(), 64),
            access in 0u8..3,
            source in 0u8..3,
            ad in any::<bool>(),
            five in any::<bool>(),
            caps in 0u8..8,
        ) {
            let mut m = Memory::new(MEM).unwrap();
            for (i, e) in entries.iter().enumerate() {
                m.write_u64(PML4 + i as u64 * 8, *e).unwrap();
            }
            let access = [Access::Read, Access::Write, Access::Fetch][usize::from(access)];
            let source = [EptSource::Linear, EptSource::GuestPagingStructure, EptSource::Physical][usize::from(source)];
            let cfg = EptConfig { execute_only: caps & 1 != 0, pages_2m: caps & 2 != 0, pages_1g: caps & 4 != 0 };
            let eptp = EptPointer::new(Gpa(PML4), MemoryType::WriteBack, if five { 5 } else { 4 }, ad).0;
            for gpa in gpas {
                match translate(&mut m, eptp, gpa, EptRequest { access, source }, cfg) {
                    Ok(t) => {
                        prop_assert!([PAGE_4K, PAGE_2M, PAGE_1G].contains(&t.page_size));
                        prop_assert_eq!(t.hpa & (t.page_size - 1), gpa & (t.page_size - 1));
                        prop_assert!(t.hpa < 1 << MAXPHYADDR);
                        let paging_write = ad && source == EptSource::GuestPagingStructure;
                        let allowed = match access {
                            _ if paging_write => t.write,
                            Access::Read => t.read,
                            Access::Write => t.write,
                            Access::Fetch => t.exec,
                        };
                        prop_assert!(allowed);
                    }
                    Err(EptError::Violation { gpa: g, qualification }) => {
                        prop_assert_eq!(g, gpa);
                        prop_assert_eq!(qualification & !0x1bf, 0);
                    }
                    Err(EptError::Misconfig { gpa: g, .. }) => prop_assert_eq!(g, gpa),
                }
            }
        }
    }
}
