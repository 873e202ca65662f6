//! Address newtypes, so a guest-physical address can never be confused with
//! a guest-virtual one across a crate boundary.

/// A guest-physical address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gpa(pub u64);

/// A guest-virtual (linear) address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Gva(pub u64);

impl Gpa {
    /// The 4 KiB page frame number.
    pub const fn pfn(self) -> u64 {
        self.0 >> 12
    }
    /// The offset within the 4 KiB page.
    pub const fn page_offset(self) -> u64 {
        self.0 & 0xfff
    }
}

impl core::fmt::LowerHex for Gpa {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::LowerHex::fmt(&self.0, f)
    }
}

impl core::fmt::LowerHex for Gva {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::LowerHex::fmt(&self.0, f)
    }
}
