//! Segment loading with the protected-mode descriptor checks (SDM vol. 3A,
//! 3.4 "Logical and Linear Addresses", 5.4 "Segment Descriptor Fields Used
//! for Protection", 5.5 "Privilege Levels", 5.6 "Privilege Level Checking
//! When Accessing Data Segments", 5.7 "Privilege Level Checking When
//! Loading the SS Register", 5.8 "Privilege Level Checking When
//! Transferring Program Control Between Code Segments"; vol. 2, "MOV",
//! "POP", "LDS/LES/LFS/LGS/LSS").

use crate::fault::Fault;
use crate::state::{Mode, Segment};
use crate::{Cpu, Ctx};
use x86::seg::{ar, sreg, Descriptor};

/// A descriptor read from the GDT or LDT, with where it lives.
#[derive(Clone, Copy, Debug)]
pub struct DescRef {
    /// The raw low 8 bytes.
    pub raw: u64,
    /// The decoded descriptor.
    pub desc: Descriptor,
    /// Linear address of the descriptor (for the accessed/busy bits).
    pub la: u64,
}

/// Error code of a selector-related fault: the selector without RPL, with
/// the EXT bit when the event is external.
#[inline]
pub const fn sel_ec(sel: u16, ext: bool) -> u32 {
    (sel & 0xfffc) as u32 | ext as u32
}

impl Cpu {
    /// Reads the descriptor of `sel` from the GDT or LDT. #GP(sel) if the
    /// selector points beyond the table limit (SDM 3.4.2).
    pub fn read_descriptor(&mut self, ctx: &mut Ctx, sel: u16, ext: bool) -> Result<DescRef, Fault> {
        let (base, limit) = if sel & 4 != 0 {
            let l = self.regs.ldtr;
            if l.ar & ar::UNUSABLE != 0 || l.selector & !3 == 0 && l.base == 0 && l.limit == 0 {
                return Err(Fault::gp(sel_ec(sel, ext)));
            }
            (l.base, u64::from(l.limit))
        } else {
            (self.regs.gdtr.base, u64::from(self.regs.gdtr.limit))
        };
        let off = u64::from(sel & !7);
        if off + 7 > limit {
            return Err(Fault::gp(sel_ec(sel, ext)));
        }
        let la = base.wrapping_add(off);
        let raw = self.read_sys(ctx, la, 8)?;
        Ok(DescRef { raw, desc: Descriptor::from_raw(raw), la })
    }

    /// Reads the high 8 bytes of a 16-byte system descriptor (long mode).
    pub fn read_descriptor_high(&mut self, ctx: &mut Ctx, sel: u16, d: &DescRef) -> Result<u64, Fault> {
        let limit = if sel & 4 != 0 { u64::from(self.regs.ldtr.limit) } else { u64::from(self.regs.gdtr.limit) };
        if u64::from(sel & !7) + 15 > limit {
            return Err(Fault::gp(sel_ec(sel, false)));
        }
        self.read_sys(ctx, d.la + 8, 8)
    }

    /// Sets the accessed bit of a code/data descriptor, as the processor
    /// does when it loads one.
    pub fn set_accessed(&mut self, ctx: &mut Ctx, d: &DescRef) -> Result<(), Fault> {
        if d.raw & (1 << 40) == 0 {
            let b = (d.raw >> 40) as u8 | 1;
            self.write_sys(ctx, d.la + 5, 1, u64::from(b))?;
        }
        Ok(())
    }

    /// The hidden part a descriptor loads into a segment register.
    pub fn seg_from_desc(sel: u16, d: &Descriptor) -> Segment {
        Segment { selector: sel, base: u64::from(d.base), limit: d.limit, ar: d.ar | ar::ACCESSED }
    }

    /// A null selector loaded into a data segment register: unusable.
    pub fn null_seg(sel: u16) -> Segment {
        Segment { selector: sel, base: 0, limit: 0, ar: ar::UNUSABLE }
    }

    /// Loads a data or stack segment register (MOV, POP, LxS) with the
    /// checks of the current mode.
    pub fn load_seg(&mut self, ctx: &mut Ctx, reg: usize, sel: u16) -> Result<(), Fault> {
        match self.mode {
            Mode::Real | Mode::Vm86 => {
                // Only the selector and base change (SDM 20.1.1).
                let s = &mut self.regs.seg[reg];
                s.selector = sel;
                s.base = u64::from(sel) << 4;
                if self.mode == Mode::Vm86 {
                    *s = Segment { ar: s.ar | (3 << ar::DPL_SHIFT), ..Segment::real(sel, reg == sreg::CS) };
                }
                Ok(())
            }
            _ => {
                let seg = self.check_data_seg(ctx, reg, sel)?;
                self.regs.seg[reg] = seg;
                if reg == sreg::SS {
                    // MOV/POP SS blocks interrupts for one instruction.
                    self.inhibit_at = self.icount + 1;
                    self.ss_shadow_at = self.icount + 1;
                    self.events |= crate::events::IRQ;
                }
                Ok(())
            }
        }
    }

    /// The protected-mode checks of a data/stack segment load, returning
    /// the segment to load (without loading it).
    pub fn check_data_seg(&mut self, ctx: &mut Ctx, reg: usize, sel: u16) -> Result<Segment, Fault> {
        let cpl = self.cpl;
        let rpl = (sel & 3) as u8;
        if sel & !3 == 0 {
            if reg == sreg::SS {
                // A null SS is allowed only in 64-bit mode at CPL < 3 with
                // RPL = CPL (SDM vol. 2, "MOV").
                if self.mode == Mode::Long && cpl < 3 && rpl == cpl {
                    return Ok(Segment {
                        selector: sel,
                        base: 0,
                        limit: 0,
                        ar: ar::UNUSABLE | (u32::from(cpl) << ar::DPL_SHIFT),
                    });
                }
                return Err(Fault::gp0());
            }
            return Ok(Cpu::null_seg(sel));
        }
        let d = self.read_descriptor(ctx, sel, false)?;
        let desc = d.desc;
        let ec = sel_ec(sel, false);
        if reg == sreg::SS {
            if rpl != cpl || !desc.is_code_data() || desc.is_code() || desc.ar & ar::RW == 0 || desc.dpl() != cpl {
                return Err(Fault::gp(ec));
            }
            if !desc.present() {
                return Err(Fault::ss(ec));
            }
        } else {
            if !desc.is_code_data() || (desc.is_code() && desc.ar & ar::RW == 0) {
                return Err(Fault::gp(ec));
            }
            let conforming_code = desc.is_code() && desc.ar & ar::DC != 0;
            if !conforming_code && (rpl > desc.dpl() || cpl > desc.dpl()) {
                return Err(Fault::gp(ec));
            }
            if !desc.present() {
                return Err(Fault::np(ec));
            }
        }
        self.set_accessed(ctx, &d)?;
        Ok(Cpu::seg_from_desc(sel, &desc))
    }

    /// Checks a code-segment target of a far JMP/CALL/RET/IRET/interrupt
    /// and returns the segment to load with RPL = `new_cpl`.
    pub fn check_code_seg(&mut self, ctx: &mut Ctx, sel: u16, new_cpl: u8, ext: bool) -> Result<Segment, Fault> {
        if sel & !3 == 0 {
            return Err(Fault::gp(u32::from(ext)));
        }
        let d = self.read_descriptor(ctx, sel, ext)?;
        if !d.desc.is_code() {
            return Err(Fault::gp(sel_ec(sel, ext)));
        }
        if !d.desc.present() {
            return Err(Fault::np(sel_ec(sel, ext)));
        }
        // In IA-32e mode a code segment may not have both L and D set.
        if self.regs.efer & x86::Efer::LMA.bits() != 0 && d.desc.ar & ar::L != 0 && d.desc.ar & ar::DB != 0 {
            return Err(Fault::gp(sel_ec(sel, ext)));
        }
        self.set_accessed(ctx, &d)?;
        let mut s = Cpu::seg_from_desc((sel & !3) | u16::from(new_cpl), &d.desc);
        s.selector = (sel & !3) | u16::from(new_cpl);
        Ok(s)
    }

    /// Loads CS (after all checks passed) and recomputes the mode.
    pub fn commit_cs(&mut self, cs: Segment) {
        self.regs.seg[sreg::CS] = cs;
        self.state_changed_light();
    }

    /// Recomputes mode, CPL and bitness without flushing the TLB (CS
    /// loads do not flush translations; the TLB is keyed by privilege).
    pub(crate) fn state_changed_light(&mut self) {
        let tlb_disabled = self.tlb.disabled;
        let mode = self.regs.compute_mode();
        let cs = self.regs.seg[sreg::CS];
        self.mode = mode;
        self.bitness = match mode {
            Mode::Long => 64,
            Mode::Real | Mode::Vm86 => 16,
            _ if cs.ar & ar::DB != 0 => 32,
            _ => 16,
        };
        self.cpl = match mode {
            Mode::Real => 0,
            Mode::Vm86 => 3,
            _ => (cs.selector & 3) as u8,
        };
        self.tlb.disabled = tlb_disabled;
        self.events |= crate::events::STOP | crate::events::IRQ;
    }

    /// After a privilege decrease (return to an outer level), data segment
    /// registers the new CPL may not use are nulled (SDM vol. 2, "RET",
    /// "IRET").
    pub fn null_inaccessible_segs(&mut self) {
        for r in [sreg::ES, sreg::DS, sreg::FS, sreg::GS] {
            let s = self.regs.seg[r];
            let conforming_code = s.ar & ar::CODE != 0 && s.ar & ar::DC != 0;
            if s.ar & ar::UNUSABLE == 0 && !conforming_code && s.dpl() < self.cpl {
                self.regs.seg[r] = Cpu::null_seg(0);
            }
        }
    }
}
