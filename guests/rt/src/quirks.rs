//! Known deviations of reference platforms from the SDM.
//!
//! The kernels assert SDM behaviour. They are validated on QEMU TCG, which
//! departs from the SDM in a few places; such checks are reported as
//! `skip ...: QEMU TCG deviates from the SDM` when (and only when) the CPU
//! identifies as QEMU TCG, so Turtles is still held to the SDM.

use crate::arch::cpuid;

/// True if the CPU identifies as QEMU's TCG: hypervisor leaf signature
/// "TCGTCGTCGTCG", or a brand string starting with "QEMU TCG".
pub fn qemu_tcg() -> bool {
    let hv = cpuid(1, 0).ecx >> 31 & 1 == 1;
    if hv {
        let r = cpuid(0x4000_0000, 0);
        let mut sig = [0u8; 12];
        sig[0..4].copy_from_slice(&r.ebx.to_le_bytes());
        sig[4..8].copy_from_slice(&r.ecx.to_le_bytes());
        sig[8..12].copy_from_slice(&r.edx.to_le_bytes());
        if &sig == b"TCGTCGTCGTCG" {
            return true;
        }
    }
    if !crate::arch::cpuid_has_leaf(0x8000_0002) {
        return false;
    }
    let r = cpuid(0x8000_0002, 0);
    let mut b = [0u8; 8];
    b[0..4].copy_from_slice(&r.eax.to_le_bytes());
    b[4..8].copy_from_slice(&r.ebx.to_le_bytes());
    &b == b"QEMU TCG"
}
