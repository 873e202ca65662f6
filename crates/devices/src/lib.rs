//! PC platform devices for Turtles guests.
//!
//! Every device is a register machine: a plain struct whose state lives in
//! ordinary fields, driven through `read`/`write` on register offsets. Time is
//! virtual and deterministic: callers pass `now_ns` (virtual nanoseconds since
//! power-on) to every operation that depends on time, and no device ever reads
//! the host clock. The guest TSC runs at [`TSC_KHZ`], so
//! `tsc = now_ns * TSC_KHZ / 1_000_000`.
//!
//! [`platform::Platform`] composes the devices into a PC resembling QEMU's
//! `pc` (i440FX + PIIX3) machine and is the only type the VMM needs.
//!
//! Guest-controlled values (ports, offsets, sizes, register values) are
//! hostile: nothing here panics on them. Unknown registers read as all-ones
//! or zero as the real hardware does, and writes to them are dropped.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod acpi;
mod aml;
pub mod fw_cfg;
pub mod hpet;
pub mod i8042;
pub mod ioapic;
pub mod lapic;
pub mod pc_testdev;
pub mod pci;
pub mod pic;
pub mod pit;
pub mod platform;
pub mod rtc;
pub mod serial;

pub use platform::{CpuEvent, DeviceId, DeviceStats, ExitRequest, Platform, PlatformConfig, UnhandledAccess};

/// Guest TSC frequency in kHz (2 GHz). The TSC equals
/// `now_ns * TSC_KHZ / 1_000_000`.
pub const TSC_KHZ: u64 = 2_000_000;

/// Guest TSC value at virtual time `now_ns`.
pub fn tsc_at(now_ns: u64) -> u64 {
    ((now_ns as u128 * TSC_KHZ as u128) / 1_000_000) as u64
}

/// Earliest virtual time (ns) at which the TSC reaches `tsc`.
pub fn ns_for_tsc(tsc: u64) -> u64 {
    let ns = (tsc as u128 * 1_000_000).div_ceil(TSC_KHZ as u128);
    u64::try_from(ns).unwrap_or(u64::MAX)
}

/// Mask selecting the low `size` bytes of a value (`size` 1, 2, 4 or 8; any
/// other size is treated as 8 so hostile sizes never shift out of range).
pub(crate) fn size_mask(size: u8) -> u64 {
    match size {
        1 => 0xff,
        2 => 0xffff,
        4 => 0xffff_ffff,
        _ => u64::MAX,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsc_conversions_round_trip() {
        assert_eq!(tsc_at(1_000), 2_000);
        assert_eq!(ns_for_tsc(2_001), 1_001);
        assert_eq!(tsc_at(ns_for_tsc(12_345_677)), 12_345_678);
        assert_eq!(ns_for_tsc(u64::MAX), u64::MAX / 2 + 1);
    }
}
