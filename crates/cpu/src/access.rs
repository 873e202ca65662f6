//! Memory accesses of the executor: segmentation (SDM vol. 3A, 3.4
//! "Logical and Linear Addresses", 5.3 "Limit Checking", 5.5 "Privilege
//! Levels"), then translation through the TLB or a page walk, then RAM or
//! MMIO.
//!
//! The fast path is a TLB hit on an access that stays inside one page:
//! an array compare, an add and a bounds-checked load from the RAM buffer.
//! Everything else (page crossings, misses, MMIO, writes to code pages,
//! armed data breakpoints) takes the slow path, which walks each page
//! before touching any of them so that a faulting access has no effect.

use crate::fault::Fault;
use crate::mmu::{self, Access, AccessCtx};
use crate::state::Mode;
use crate::{events, Cpu, Ctx};
use x86::seg::{ar, sreg};

/// Reads `N` little-endian bytes of `ram` at `off` as a u64.
#[inline(always)]
fn load(ram: &[u8], off: usize, size: u8) -> u64 {
    match size {
        1 => u64::from(ram[off]),
        2 => u64::from(u16::from_le_bytes([ram[off], ram[off + 1]])),
        4 => u64::from(u32::from_le_bytes(ram[off..off + 4].try_into().unwrap_or([0; 4]))),
        _ => u64::from_le_bytes(ram[off..off + 8].try_into().unwrap_or([0; 8])),
    }
}

#[inline(always)]
fn store(ram: &mut [u8], off: usize, size: u8, v: u64) {
    match size {
        1 => ram[off] = v as u8,
        2 => ram[off..off + 2].copy_from_slice(&(v as u16).to_le_bytes()),
        4 => ram[off..off + 4].copy_from_slice(&(v as u32).to_le_bytes()),
        _ => ram[off..off + 8].copy_from_slice(&v.to_le_bytes()),
    }
}

impl Cpu {
    /// Whether `la` is canonical for the current paging mode.
    #[inline(always)]
    pub(crate) fn canonical(&self, la: u64) -> bool {
        let shift = self.va_shift;
        (((la << shift) as i64) >> shift) as u64 == la
    }

    /// Segment-relative offset to linear address, with the checks of the
    /// current mode. `size` is the access width; `write` selects the
    /// writability check.
    #[inline(always)]
    pub(crate) fn seg_linear(&self, seg: usize, off: u64, size: u8, write: bool) -> Result<u64, Fault> {
        self.seg_linear_len(seg, off, u64::from(size), write)
    }

    /// [`Cpu::seg_linear`] for accesses of any length (FXSAVE images). A
    /// zero length is checked as one byte.
    #[inline(always)]
    pub(crate) fn seg_linear_len(&self, seg: usize, off: u64, len: u64, write: bool) -> Result<u64, Fault> {
        let len = len.max(1);
        let s = &self.regs.seg[seg];
        if self.mode == Mode::Long {
            let la = if seg >= sreg::FS { s.base.wrapping_add(off) } else { off };
            // The end can only leave the canonical range if the access
            // crosses a page.
            let crosses = (la & 0xfff) + len > 0x1000;
            if !self.canonical(la) || (crosses && !self.canonical(la.wrapping_add(len - 1))) {
                return Err(if seg == sreg::SS { Fault::ss(0) } else { Fault::gp0() });
            }
            return Ok(la);
        }
        self.seg_linear_legacy(seg, off, len, write)
    }

    #[inline(never)]
    fn seg_linear_legacy(&self, seg: usize, off: u64, len: u64, write: bool) -> Result<u64, Fault> {
        let s = &self.regs.seg[seg];
        let fault = if seg == sreg::SS { Fault::ss(0) } else { Fault::gp0() };
        if matches!(self.mode, Mode::Protected | Mode::Compat) {
            // A null selector leaves the register unusable (SDM 3.4.2);
            // CS and SS can never be null here.
            if s.ar & ar::P == 0 || (s.selector & !3 == 0 && seg != sreg::CS && seg != sreg::SS) {
                return Err(fault);
            }
            if write && (s.ar & ar::CODE != 0 || s.ar & ar::RW == 0) {
                return Err(fault);
            }
            if !write && s.ar & ar::CODE != 0 && s.ar & ar::RW == 0 {
                return Err(fault);
            }
        }
        let last = off.wrapping_add(len - 1);
        let expand_down = s.ar & (ar::CODE | ar::DC) == ar::DC && s.ar & ar::S != 0;
        if expand_down {
            let upper = if s.ar & ar::DB != 0 { 0xffff_ffff } else { 0xffff };
            if off <= u64::from(s.limit) || last > upper {
                return Err(fault);
            }
        } else if last > u64::from(s.limit) || last < off {
            return Err(fault);
        }
        Ok(s.base.wrapping_add(off) & 0xffff_ffff)
    }

    /// Reads `size` bytes (1, 2, 4, 8) at `seg:off`.
    #[inline(always)]
    pub fn read_mem(&mut self, ctx: &mut Ctx, seg: usize, off: u64, size: u8) -> Result<u64, Fault> {
        let la = self.seg_linear(seg, off, size, false)?;
        self.read_lin(ctx, la, size)
    }

    /// Writes `size` bytes (1, 2, 4, 8) at `seg:off`.
    #[inline(always)]
    pub fn write_mem(&mut self, ctx: &mut Ctx, seg: usize, off: u64, size: u8, v: u64) -> Result<(), Fault> {
        let la = self.seg_linear(seg, off, size, true)?;
        self.write_lin(ctx, la, size, v)
    }

    /// Checks that `seg:off` is writable for `size` bytes without writing
    /// (read-modify-write instructions check before they compute).
    pub fn probe_write(&mut self, ctx: &mut Ctx, seg: usize, off: u64, size: u8) -> Result<u64, Fault> {
        let la = self.seg_linear(seg, off, size, true)?;
        // A TLB hit is a walk that allowed this write, as for `write_lin`.
        let user = self.cpl == 3;
        if (la & 0xfff) + u64::from(size) <= 0x1000 && self.tlb.lookup(la, Access::Write, user).is_some() {
            return Ok(la);
        }
        self.translate(ctx, la, Access::Write, user, false)?;
        if (la & 0xfff) + size as u64 > 0x1000 {
            self.translate(ctx, (la | 0xfff) + 1, Access::Write, self.cpl == 3, false)?;
        }
        Ok(la)
    }

    /// Reads at a linear address with the current privilege.
    #[inline(always)]
    pub fn read_lin(&mut self, ctx: &mut Ctx, la: u64, size: u8) -> Result<u64, Fault> {
        let user = self.cpl == 3;
        if la & (u64::from(size).max(1) - 1) != 0 {
            self.check_alignment()?;
        }
        if (la & 0xfff) as usize + size as usize <= 0x1000 {
            if let Some(off) = self.tlb.lookup(la, Access::Read, user) {
                return Ok(load(ctx.mem.ram(), off, size));
            }
        }
        self.read_slow(ctx, la, size, user, false)
    }

    /// Writes at a linear address with the current privilege.
    #[inline(always)]
    pub fn write_lin(&mut self, ctx: &mut Ctx, la: u64, size: u8, v: u64) -> Result<(), Fault> {
        let user = self.cpl == 3;
        if la & (u64::from(size).max(1) - 1) != 0 {
            self.check_alignment()?;
        }
        if (la & 0xfff) as usize + size as usize <= 0x1000 {
            if let Some(off) = self.tlb.lookup(la, Access::Write, user) {
                store(ctx.mem.ram_mut(), off, size, v);
                return Ok(());
            }
        }
        self.write_slow(ctx, la, size, v, user, false)
    }

    /// Alignment checking of a misaligned data access (SDM vol. 3A, 6.15
    /// "Interrupt 17—Alignment Check Exception (#AC)"): #AC(0) when CR0.AM
    /// and RFLAGS.AC are set at CPL 3. Only misaligned accesses get here,
    /// so aligned code pays one test per access.
    #[cold]
    fn check_alignment(&self) -> Result<(), Fault> {
        if self.cpl == 3 && self.regs.cr0 & x86::Cr0::AM.bits() != 0 && self.regs.rflags & x86::Rflags::AC.bits() != 0 {
            return Err(Fault::ac());
        }
        Ok(())
    }

    /// Implicit supervisor read (descriptor tables, TSS, IDT).
    pub fn read_sys(&mut self, ctx: &mut Ctx, la: u64, size: u8) -> Result<u64, Fault> {
        self.read_slow(ctx, la, size, false, true)
    }

    /// Implicit supervisor write (accessed/busy bits, TSS).
    pub fn write_sys(&mut self, ctx: &mut Ctx, la: u64, size: u8, v: u64) -> Result<(), Fault> {
        self.write_slow(ctx, la, size, v, false, true)
    }

    /// Reads at a linear address as a user (`user`) or supervisor access.
    pub fn read_as(&mut self, ctx: &mut Ctx, la: u64, size: u8, user: bool) -> Result<u64, Fault> {
        self.read_slow(ctx, la, size, user, false)
    }

    /// Writes at a linear address as a user (`user`) or supervisor access.
    pub fn write_as(&mut self, ctx: &mut Ctx, la: u64, size: u8, v: u64, user: bool) -> Result<(), Fault> {
        self.write_slow(ctx, la, size, v, user, false)
    }

    /// Translates one linear address, filling the TLB.
    pub(crate) fn translate(
        &mut self,
        ctx: &mut Ctx,
        la: u64,
        access: Access,
        user: bool,
        implicit: bool,
    ) -> Result<u64, Fault> {
        let ac = AccessCtx { access, user, implicit };
        let r = if implicit {
            mmu::walk_ept(&self.regs, ctx.mem, la, ac, self.ept).map(|t| t.pa)
        } else {
            mmu::translate_fill(&self.regs, &mut self.tlb, ctx.mem, la, ac, self.ept)
        };
        let pa = r.map_err(|f| self.ept_exit(f, la))?;
        self.check_apic_access(la, pa, access)
    }

    #[cold]
    fn read_slow(&mut self, ctx: &mut Ctx, la: u64, size: u8, user: bool, implicit: bool) -> Result<u64, Fault> {
        self.check_data_breakpoint(la, size, false);
        let first = 0x1000 - (la & 0xfff) as usize;
        let pa0 = self.translate(ctx, la, Access::Read, user, implicit)?;
        if first >= size as usize {
            return Ok(self.phys_read(ctx, pa0, size));
        }
        let la1 = la.wrapping_add(first as u64);
        let la1 = if self.mode == Mode::Long { la1 } else { la1 & 0xffff_ffff };
        let pa1 = self.translate(ctx, la1, Access::Read, user, implicit)?;
        let mut v = 0u64;
        for i in 0..size as usize {
            let pa = if i < first { pa0 + i as u64 } else { pa1 + (i - first) as u64 };
            v |= self.phys_read(ctx, pa, 1) << (8 * i);
        }
        Ok(v)
    }

    #[cold]
    fn write_slow(
        &mut self,
        ctx: &mut Ctx,
        la: u64,
        size: u8,
        v: u64,
        user: bool,
        implicit: bool,
    ) -> Result<(), Fault> {
        self.check_data_breakpoint(la, size, true);
        let first = 0x1000 - (la & 0xfff) as usize;
        let pa0 = self.translate(ctx, la, Access::Write, user, implicit)?;
        if first >= size as usize {
            self.phys_write(ctx, pa0, size, v);
            return Ok(());
        }
        let la1 = la.wrapping_add(first as u64);
        let la1 = if self.mode == Mode::Long { la1 } else { la1 & 0xffff_ffff };
        let pa1 = self.translate(ctx, la1, Access::Write, user, implicit)?;
        for i in 0..size as usize {
            let pa = if i < first { pa0 + i as u64 } else { pa1 + (i - first) as u64 };
            self.phys_write(ctx, pa, 1, v >> (8 * i));
        }
        Ok(())
    }

    /// Reads guest-physical memory: RAM or MMIO.
    pub(crate) fn phys_read(&mut self, ctx: &mut Ctx, pa: u64, size: u8) -> u64 {
        match ctx.mem.ram_offset(pa) {
            Some(off) if off + size as usize <= ctx.mem.ram().len() => load(ctx.mem.ram(), off, size),
            _ => {
                let now = self.now_ns();
                self.events |= events::IRQ;
                ctx.bus.mmio_read(now, pa, size) & crate::flags::size_mask(size)
            }
        }
    }

    /// Writes guest-physical memory: RAM (keeping decoded code coherent)
    /// or MMIO.
    pub(crate) fn phys_write(&mut self, ctx: &mut Ctx, pa: u64, size: u8, v: u64) {
        match ctx.mem.ram_offset(pa) {
            Some(off) if off + size as usize <= ctx.mem.ram().len() => {
                if ctx.mem.is_code_page(off) {
                    ctx.mem.note_code_write(off);
                    self.events |= events::STOP;
                }
                store(ctx.mem.ram_mut(), off, size, v);
            }
            _ => {
                let now = self.now_ns();
                self.events |= events::IRQ | events::STOP;
                ctx.bus.mmio_write(now, pa, size, v & crate::flags::size_mask(size));
            }
        }
    }

    /// Reads `buf.len()` bytes at `seg:off` (SSE, FXSAVE images).
    pub fn read_bytes(&mut self, ctx: &mut Ctx, seg: usize, off: u64, buf: &mut [u8]) -> Result<(), Fault> {
        let la = self.seg_linear_len(seg, off, buf.len() as u64, false)?;
        let mut i = 0;
        while i < buf.len() {
            let chunk = if buf.len() - i >= 8 { 8 } else { 1 };
            let v = self.read_lin(ctx, la.wrapping_add(i as u64), chunk)?;
            buf[i..i + chunk as usize].copy_from_slice(&v.to_le_bytes()[..chunk as usize]);
            i += chunk as usize;
        }
        Ok(())
    }

    /// Writes `data` at `seg:off`, checking every page before writing any.
    pub fn write_bytes(&mut self, ctx: &mut Ctx, seg: usize, off: u64, data: &[u8]) -> Result<(), Fault> {
        let la = self.seg_linear_len(seg, off, data.len() as u64, true)?;
        let user = self.cpl == 3;
        // Every page the write touches, checked before any byte is
        // written (wrapping: a guest can put `la` near the top).
        let last = la.wrapping_add(data.len().max(1) as u64 - 1);
        let pages = ((last & !0xfff).wrapping_sub(la & !0xfff) >> 12) + 1;
        for i in 0..pages.min(0x1_0000) {
            let page = (la & !0xfff).wrapping_add(i << 12);
            self.translate(ctx, if i == 0 { la } else { page }, Access::Write, user, false)?;
        }
        let mut i = 0;
        while i < data.len() {
            let chunk = if data.len() - i >= 8 { 8 } else { 1 };
            let mut b = [0u8; 8];
            b[..chunk].copy_from_slice(&data[i..i + chunk]);
            self.write_lin(ctx, la.wrapping_add(i as u64), chunk as u8, u64::from_le_bytes(b))?;
            i += chunk;
        }
        Ok(())
    }
}
