//! Paging-structure entry formats and #PF error code bits (SDM vol. 3A,
//! 4.3 "32-Bit Paging", 4.4 "PAE Paging", 4.5 "4-Level Paging and 5-Level
//! Paging", 4.7 "Page-Fault Exceptions").

/// Present.
pub const P: u64 = 1 << 0;
/// Read/write.
pub const RW: u64 = 1 << 1;
/// User/supervisor.
pub const US: u64 = 1 << 2;
/// Page-level write-through.
pub const PWT: u64 = 1 << 3;
/// Page-level cache disable.
pub const PCD: u64 = 1 << 4;
/// Accessed.
pub const A: u64 = 1 << 5;
/// Dirty (leaf entries only).
pub const D: u64 = 1 << 6;
/// Page size (maps a large page when set in a non-leaf level).
pub const PS: u64 = 1 << 7;
/// Global (leaf entries only).
pub const G: u64 = 1 << 8;
/// PAT bit of a 4 KiB leaf.
pub const PAT_4K: u64 = 1 << 7;
/// PAT bit of a large-page leaf.
pub const PAT_LARGE: u64 = 1 << 12;
/// Execute-disable.
pub const XD: u64 = 1 << 63;
/// Shift of the protection key in a leaf entry.
pub const PKEY_SHIFT: u32 = 59;

/// #PF error code bits (SDM vol. 3A, 4.7).
pub mod pf {
    /// The fault was a protection violation (page present).
    pub const P: u32 = 1 << 0;
    /// The access was a write.
    pub const W: u32 = 1 << 1;
    /// The access was a user-mode access.
    pub const U: u32 = 1 << 2;
    /// A reserved bit was set in a paging-structure entry.
    pub const RSVD: u32 = 1 << 3;
    /// The access was an instruction fetch.
    pub const ID: u32 = 1 << 4;
    /// A protection-key violation.
    pub const PK: u32 = 1 << 5;
    /// A shadow-stack access.
    pub const SS: u32 = 1 << 6;
    /// An SGX-specific access-control violation.
    pub const SGX: u32 = 1 << 15;
}
