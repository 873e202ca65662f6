//! Which instructions and events cause VM exits, under which controls
//! (SDM vol. 3C, 26.1 "Instructions That Cause VM Exits": 26.1.2
//! unconditionally, 26.1.3 conditionally; 26.2 "Other Causes of VM
//! Exits"; 26.3 "Changes to Instruction Behavior in VMX Non-Root
//! Operation" for the CR read shadows and TSC offsetting).
//!
//! These are predicates over the decoded controls and the bitmaps in
//! memory; the handlers in `exec/` call them only when
//! [`Cpu::in_non_root`] holds.

use crate::fault::Fault;
use crate::mem::Memory;
use crate::Cpu;
use vmx::controls::ProcCtls;
use x86::vector;

impl Cpu {
    /// Whether exception `f` causes a VM exit rather than being delivered
    /// (26.2 "Other Causes of VM Exits", exceptions: the exception bitmap,
    /// and for #PF the error-code mask and match).
    pub(crate) fn exception_exits(&self, f: &Fault) -> bool {
        let c = self.vmx_ctls();
        let bit = c.exception_bitmap & (1 << (f.vector() & 31)) != 0;
        if f.vector() == vector::PF {
            let ec = f.error_code().unwrap_or(0);
            // A match keeps the bitmap's meaning; a mismatch inverts it.
            bit == ((ec & c.pf_mask) == c.pf_match)
        } else {
            bit
        }
    }

    /// Whether an access to `size` ports from `port` exits (26.1.3, I/O
    /// instructions; 25.6.4 "I/O-Bitmap Addresses"): with I/O bitmaps,
    /// when any port's bit is set or the range wraps past 0xffff; without
    /// them, when "unconditional I/O exiting" is 1.
    pub(crate) fn io_exits(&self, mem: &Memory, port: u16, size: u8) -> bool {
        let c = self.vmx_ctls();
        if !c.proc.contains(ProcCtls::USE_IO_BITMAPS) {
            return c.proc.contains(ProcCtls::UNCONDITIONAL_IO_EXITING);
        }
        (0..u32::from(size)).any(|i| {
            let p = u32::from(port) + i;
            if p > 0xffff {
                return true;
            }
            let bitmap = c.io_bitmaps[(p >> 15) as usize];
            let byte = bitmap + u64::from((p & 0x7fff) / 8);
            // A bitmap outside memory reads as all ones: exit.
            mem.read_u32(byte & !3).map_or(true, |w| (w >> ((byte & 3) * 8 + u64::from(p % 8))) & 1 != 0)
        })
    }

    /// Whether RDMSR (`write` false) or WRMSR of `msr` exits (26.1.3;
    /// 25.6.9 "MSR-Bitmap Address": read bitmaps for low and high MSRs in
    /// the first 2 KiB, write bitmaps in the second; MSRs outside both
    /// ranges always exit).
    pub(crate) fn msr_exits(&self, mem: &Memory, msr: u32, write: bool) -> bool {
        let c = self.vmx_ctls();
        if !c.proc.contains(ProcCtls::USE_MSR_BITMAPS) {
            return true;
        }
        let (half, bit) = match msr {
            0..=0x1fff => (0u64, msr),
            0xc000_0000..=0xc000_1fff => (1024, msr - 0xc000_0000),
            _ => return true,
        };
        let byte = c.msr_bitmap + half + if write { 2048 } else { 0 } + u64::from(bit / 8);
        mem.read_u32(byte & !3).map_or(true, |w| (w >> ((byte & 3) * 8 + u64::from(bit % 8))) & 1 != 0)
    }

    /// Whether MOV to CR3 of `value` exits (26.1.3: CR3-load exiting,
    /// unless the value is one of the first CR3-target-count targets).
    pub(crate) fn cr3_load_exits(&self, value: u64) -> bool {
        let c = self.vmx_ctls();
        if !c.proc.contains(ProcCtls::CR3_LOAD_EXITING) {
            return false;
        }
        let n = (c.cr3_target_count as usize).min(4);
        !c.cr3_targets[..n].contains(&value)
    }

    /// Whether MOV to CR0 (`cr` 0) or CR4 of `value` exits: when a bit
    /// owned by the host (set in the guest/host mask) would differ from the
    /// read shadow (26.1.3).
    pub(crate) fn cr_write_exits(&self, cr: u8, value: u64) -> bool {
        let c = self.vmx_ctls();
        let (mask, shadow) = if cr == 0 { (c.cr0_mask, c.cr0_shadow) } else { (c.cr4_mask, c.cr4_shadow) };
        (value ^ shadow) & mask != 0
    }

    /// What a guest read of CR0 or CR4 returns: host-owned bits from the
    /// read shadow (26.3 "Changes to Instruction Behavior").
    pub(crate) fn cr_read_shadowed(&self, cr: u8, actual: u64) -> u64 {
        let c = self.vmx_ctls();
        let (mask, shadow) = if cr == 0 { (c.cr0_mask, c.cr0_shadow) } else { (c.cr4_mask, c.cr4_shadow) };
        (actual & !mask) | (shadow & mask)
    }

    /// For a MOV to CR0/CR4 that does not exit, the value actually loaded:
    /// host-owned bits keep their current value (26.3).
    pub(crate) fn cr_write_value(&self, cr: u8, value: u64, current: u64) -> u64 {
        let c = self.vmx_ctls();
        let mask = if cr == 0 { c.cr0_mask } else { c.cr4_mask };
        (value & !mask) | (current & mask)
    }
}
