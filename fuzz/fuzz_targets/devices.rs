//! Drives the PC platform's port and MMIO space with arbitrary accesses.
//! Run with `cargo +nightly fuzz run devices` from this directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turtles_devices::{Platform, PlatformConfig};

fuzz_target!(|data: &[u8]| {
    let cfg = PlatformConfig { num_cpus: 2, pc_testdev: true, pci_testdev: true, debug_exit: Some((0xf4, 4)), ..Default::default() };
    let mut p = Platform::new(cfg, Box::new(std::io::sink()));
    let mut now = 0u64;
    for op in data.chunks_exact(12) {
        let kind = op[0] % 4;
        let size = [1u8, 2, 4, 8][(op[1] % 4) as usize];
        let addr = u32::from_le_bytes([op[2], op[3], op[4], op[5]]);
        let value = u32::from_le_bytes([op[6], op[7], op[8], op[9]]);
        now += u64::from(op[10]) * 1000;
        match kind {
            0 => {
                p.io_read(now, addr as u16, size.min(4));
            }
            1 => p.io_write(now, addr as u16, size.min(4), value),
            2 => {
                p.mmio_read(now, u32::from(op[11] % 2), 0xfe00_0000 | u64::from(addr & 0x1ff_ffff), size);
            }
            _ => p.mmio_write(now, u32::from(op[11] % 2), 0xfe00_0000 | u64::from(addr & 0x1ff_ffff), size, u64::from(value)),
        }
        p.advance(now);
        let _ = p.pending_interrupt(now, 0);
        let _ = p.ack_interrupt(now, 0);
    }
});
