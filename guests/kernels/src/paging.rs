//! Page-table helpers for test kernels: a bump allocator for zeroed frames
//! in scratch memory and a 4-level mapper (SDM Vol. 3A, 5.5 "4-Level Paging
//! and 5-Level Paging").

use core::sync::atomic::{AtomicU64, Ordering};

/// Present.
pub const P: u64 = 1 << 0;
/// Writable.
pub const W: u64 = 1 << 1;
/// User-accessible.
pub const U: u64 = 1 << 2;
/// Page-level write-through.
pub const PWT: u64 = 1 << 3;
/// Page-level cache disable.
pub const PCD: u64 = 1 << 4;
/// Accessed.
pub const A: u64 = 1 << 5;
/// Dirty.
pub const D: u64 = 1 << 6;
/// Page size (2 MiB / 1 GiB leaf) in a PDE/PDPTE.
pub const PS: u64 = 1 << 7;
/// Global.
pub const G: u64 = 1 << 8;
/// Execute-disable.
pub const XD: u64 = 1 << 63;
/// Address bits of an entry (up to 52-bit physical addresses).
pub const ADDR_MASK: u64 = 0x000f_ffff_ffff_f000;

/// 4 KiB.
pub const SIZE_4K: u64 = 1 << 12;
/// 2 MiB.
pub const SIZE_2M: u64 = 1 << 21;
/// 1 GiB.
pub const SIZE_1G: u64 = 1 << 30;

static NEXT_FRAME: AtomicU64 = AtomicU64::new(0);

/// Sets where [`alloc_frame`] takes frames from (must be identity mapped RAM
/// that nothing else uses, e.g. part of `rt::SCRATCH_BASE`).
pub fn set_frame_pool(base: u64) {
    NEXT_FRAME.store(base, Ordering::SeqCst);
}

/// Returns a zeroed 4 KiB frame.
pub fn alloc_frame() -> u64 {
    let f = NEXT_FRAME.fetch_add(SIZE_4K, Ordering::SeqCst);
    assert!(f != 0, "frame pool not set");
    // SAFETY: the pool is identity-mapped RAM owned by the caller of
    // set_frame_pool; every frame is handed out once.
    unsafe { core::ptr::write_bytes(f as *mut u8, 0, SIZE_4K as usize) };
    f
}

/// A paging-structure entry: the address of 8 bytes inside an
/// identity-mapped page table (only [`entry`] makes one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pte(*mut u64);

/// The 8-byte entry `index` of the table at physical `table`.
pub fn entry(table: u64, index: u64) -> Pte {
    Pte((table + 8 * (index & 511)) as *mut u64)
}

/// Reads an entry.
pub fn read(e: Pte) -> u64 {
    // SAFETY: `e` comes from `entry` on an identity-mapped table.
    unsafe { core::ptr::read_volatile(e.0) }
}

/// Writes an entry.
pub fn write(e: Pte, v: u64) {
    // SAFETY: `e` comes from `entry` on an identity-mapped table; the caller
    // invalidates the TLB as needed.
    unsafe { core::ptr::write_volatile(e.0, v) }
}

fn index(va: u64, level: u32) -> u64 {
    va >> (12 + 9 * (level - 1)) & 511
}

/// Walks from `root` (a PML4) towards `va` down to `level` (1 = PT, 2 = PD,
/// 3 = PDPT, 4 = PML4), creating missing tables with `table_flags`, and
/// returns the entry at that level.
pub fn walk_create(root: u64, va: u64, level: u32, table_flags: u64) -> Pte {
    let mut table = root;
    let mut l = 4;
    loop {
        let e = entry(table, index(va, l));
        if l == level {
            return e;
        }
        let v = read(e);
        if v & P == 0 || v & PS != 0 {
            let t = alloc_frame();
            write(e, t | table_flags);
            table = t;
        } else {
            table = v & ADDR_MASK;
        }
        l -= 1;
    }
}

/// Maps `va` -> `pa` with a page of `size` (4 KiB, 2 MiB or 1 GiB) and leaf
/// `flags` (PS is added for large pages), and invalidates `va`. Returns the
/// leaf entry.
pub fn map(root: u64, va: u64, pa: u64, size: u64, flags: u64, table_flags: u64) -> Pte {
    let level = match size {
        SIZE_4K => 1,
        SIZE_2M => 2,
        SIZE_1G => 3,
        _ => panic!("bad page size"),
    };
    let e = walk_create(root, va, level, table_flags);
    write(e, pa | flags | if level > 1 { PS } else { 0 });
    rt::arch::invlpg(va);
    e
}

/// Finds the leaf entry that maps `va` under `root`, with its level.
pub fn leaf(root: u64, va: u64) -> Option<(Pte, u32)> {
    let mut table = root;
    for l in (1..=4).rev() {
        let e = entry(table, index(va, l));
        let v = read(e);
        if v & P == 0 {
            return None;
        }
        if l == 1 || (l <= 3 && v & PS != 0) {
            return Some((e, l));
        }
        table = v & ADDR_MASK;
    }
    None
}

/// Sets the U bit on the boot identity map (PML4[0], the PDPT and every PDE
/// of the first `gib` GiB) so ring-3 test code can run anywhere in the image.
/// SMEP/SMAP must stay off while this is in effect.
pub fn make_identity_user(gib: u64) {
    let pml4 = rt::boot::pml4();
    write(entry(pml4, 0), read(entry(pml4, 0)) | U);
    for g in 0..gib.min(4) {
        let pdpte = entry(rt::boot::pdpt(), g);
        write(pdpte, read(pdpte) | U);
        for i in 0..512 {
            let e = entry(rt::boot::pd() + g * SIZE_4K, i);
            write(e, read(e) | U);
        }
    }
    rt::arch::flush_tlb();
}
