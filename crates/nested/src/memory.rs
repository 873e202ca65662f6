//! L1's memory as the VMX instructions reach it: physical accesses to
//! VMCS and VMXON regions, and linear accesses to memory operands through
//! L1's paging.
//!
//! Under L0, L1's guest-physical addresses are physical addresses (EPT01
//! maps RAM one to one), but only RAM belongs to L1: an access elsewhere
//! (the PCI hole, L0's private pages at [`cpu::mem::PRIVATE_BASE`]) reads
//! all ones and drops writes, the way an access to nothing behaves on a
//! bus. Linear accesses translate every page they touch with
//! [`cpu::mmu::walk`] (supervisor accesses: the instructions run at CPL 0)
//! before any byte moves, so a faulting access has no effect (SDM vol. 3A,
//! 4.7 "Page-Fault Exceptions").

use cpu::mmu::{self, Access, AccessCtx};
use cpu::{Fault, Memory, Regs};
use x86::Gva;

const PAGE: u64 = 4096;

/// Whether `[pa, pa + len)` is RAM that L1 may touch (`len` within one
/// page).
fn is_l1_ram(mem: &Memory, pa: u64, len: u64) -> bool {
    let Some(last) = pa.checked_add(len.max(1) - 1) else {
        return false;
    };
    mem.ram_offset(pa).is_some() && mem.ram_offset(last).is_some()
}

/// Splits `[addr, addr + len)` into pieces that do not cross a 4 KiB page,
/// as (address, offset into the buffer, length); `mask` wraps the
/// address (32-bit linear addresses outside 64-bit mode).
fn pages(addr: u64, len: usize, mask: u64) -> impl Iterator<Item = (u64, usize, usize)> {
    let mut done = 0usize;
    let mut a = addr & mask;
    core::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let room = (PAGE - (a & (PAGE - 1))) as usize;
        let n = room.min(len - done);
        let piece = (a, done, n);
        done += n;
        a = a.wrapping_add(n as u64) & mask;
        Some(piece)
    })
}

/// Reads L1 physical memory; bytes outside L1's RAM read as 0xff.
pub(crate) fn read_phys(mem: &Memory, pa: u64, buf: &mut [u8]) {
    for (a, off, n) in pages(pa, buf.len(), u64::MAX) {
        let dst = &mut buf[off..off + n];
        // Physical addresses do not wrap around: past the top is nothing.
        if a < pa || !is_l1_ram(mem, a, n as u64) || mem.read(a, dst).is_err() {
            dst.fill(0xff);
        }
    }
}

/// Writes L1 physical memory; bytes outside L1's RAM are dropped.
pub(crate) fn write_phys(mem: &mut Memory, pa: u64, data: &[u8]) {
    for (a, off, n) in pages(pa, data.len(), u64::MAX) {
        if a >= pa && is_l1_ram(mem, a, n as u64) {
            // Cannot fail: the range was just found to be RAM.
            let _ = mem.write(a, &data[off..off + n]);
        }
    }
}

/// Mask of linear addresses in the current mode: 32 bits outside IA-32e
/// mode.
fn linear_mask(regs: &Regs) -> u64 {
    if regs.efer & x86::Efer::LMA.bits() != 0 {
        u64::MAX
    } else {
        0xffff_ffff
    }
}

/// Translates every page of a `len`-byte access at `la`; the physical
/// address of each piece, in order.
fn translate(regs: &Regs, mem: &mut Memory, la: Gva, len: usize, access: Access) -> Result<Vec<u64>, Fault> {
    let ctx = AccessCtx { access, user: false, implicit: false };
    pages(la.0, len, linear_mask(regs)).map(|(a, _, _)| mmu::walk(regs, mem, a, ctx).map(|t| t.pa)).collect()
}

/// Reads `buf.len()` bytes at linear address `la` of L1 (a supervisor
/// data read); #PF if a page is not readable.
pub fn read_linear(regs: &Regs, mem: &mut Memory, la: Gva, buf: &mut [u8]) -> Result<(), Fault> {
    let pas = translate(regs, mem, la, buf.len(), Access::Read)?;
    for ((_, off, n), pa) in pages(la.0, buf.len(), linear_mask(regs)).zip(pas) {
        read_phys(mem, pa, &mut buf[off..off + n]);
    }
    Ok(())
}

/// Writes `data` at linear address `la` of L1 (a supervisor data write);
/// #PF if a page is not writable, and then nothing is written.
pub fn write_linear(regs: &Regs, mem: &mut Memory, la: Gva, data: &[u8]) -> Result<(), Fault> {
    let pas = translate(regs, mem, la, data.len(), Access::Write)?;
    for ((_, off, n), pa) in pages(la.0, data.len(), linear_mask(regs)).zip(pas) {
        write_phys(mem, pa, &data[off..off + n]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_split_at_boundaries_and_wrap() {
        let v: Vec<_> = pages(0xffe, 8, u64::MAX).collect();
        assert_eq!(v, [(0xffe, 0, 2), (0x1000, 2, 6)]);
        let v: Vec<_> = pages(0xffff_fffc, 8, 0xffff_ffff).collect();
        assert_eq!(v, [(0xffff_fffc, 0, 4), (0, 4, 4)]);
        assert_eq!(pages(0, 0, u64::MAX).count(), 0);
    }

    #[test]
    fn physical_accesses_stay_in_ram() {
        let mut m = Memory::new(8192).unwrap();
        write_phys(&mut m, 0x1ffc, &[1; 8]);
        let mut b = [0; 8];
        read_phys(&m, 0x1ffc, &mut b);
        assert_eq!(b, [1, 1, 1, 1, 0xff, 0xff, 0xff, 0xff]);
        read_phys(&m, u64::MAX - 3, &mut b);
        assert_eq!(b, [0xff; 8]);
        write_phys(&mut m, u64::MAX - 3, &[0; 8]);
        assert_eq!(m.read_u32(0).unwrap(), 0);
    }
}
