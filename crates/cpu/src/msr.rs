//! RDMSR/WRMSR of the MSRs the processor itself implements (SDM vol. 4,
//! ch. 2 "Model-Specific Registers"; vol. 3A, 2.2.1 on IA32_EFER, 11.11
//! "Memory Type Range Registers", 11.12 "Page Attribute Table"). MSRs
//! owned by the platform (the local APIC, TSC deadline) go to the bus.
//! Anything unknown is #GP(0), as on hardware.

use crate::fault::Fault;
use crate::{Cpu, Ctx};
use x86::msr::*;
use x86::{Cr0, Efer};

/// Bits of IA32_EFER software may write.
const EFER_WRITABLE: u64 = Efer::SCE.bits() | Efer::LME.bits() | Efer::NXE.bits();

impl Cpu {
    /// RDMSR semantics: the value or the fault.
    pub fn rdmsr(&mut self, ctx: &mut Ctx, msr: u32) -> Result<u64, Fault> {
        let m = &self.regs.msr;
        Ok(match msr {
            IA32_TSC => self.tsc(),
            IA32_EFER => self.regs.efer,
            IA32_STAR => m.star,
            IA32_LSTAR => m.lstar,
            IA32_CSTAR => m.cstar,
            IA32_FMASK => m.fmask,
            IA32_FS_BASE => self.regs.seg[x86::seg::sreg::FS].base,
            IA32_GS_BASE => self.regs.seg[x86::seg::sreg::GS].base,
            IA32_KERNEL_GS_BASE => m.kernel_gs_base,
            IA32_TSC_AUX if self.cpuid.features().rdtscp || self.cpuid.features().rdpid => m.tsc_aux,
            IA32_SYSENTER_CS => m.sysenter_cs,
            IA32_SYSENTER_ESP => m.sysenter_esp,
            IA32_SYSENTER_EIP => m.sysenter_eip,
            IA32_PAT => m.pat,
            IA32_MISC_ENABLE => m.misc_enable,
            IA32_FEATURE_CONTROL => m.feature_control,
            IA32_PLATFORM_ID => 0,
            IA32_BIOS_SIGN_ID => 0x1_0000_0000,
            IA32_SPEC_CTRL => m.spec_ctrl,
            IA32_DEBUGCTL => m.debugctl,
            IA32_TSC_ADJUST => m.tsc_adjust,
            IA32_MTRRCAP => 0x508, // 8 variable ranges, fixed ranges, WC
            IA32_MTRR_DEF_TYPE => m.mtrr_def_type,
            IA32_MTRR_PHYSBASE0..=IA32_MTRR_PHYSMASK9 => m.mtrr_var[(msr - IA32_MTRR_PHYSBASE0) as usize],
            IA32_MTRR_FIX64K_00000 => m.mtrr_fixed[0],
            IA32_MTRR_FIX16K_80000 => m.mtrr_fixed[1],
            IA32_MTRR_FIX16K_A0000 => m.mtrr_fixed[2],
            IA32_MTRR_FIX4K_C0000..=IA32_MTRR_FIX4K_F8000 => m.mtrr_fixed[3 + (msr - IA32_MTRR_FIX4K_C0000) as usize],
            IA32_MCG_CAP => 0,
            IA32_MCG_STATUS => m.mcg_status,
            IA32_PERF_STATUS => 0x1400,
            IA32_XSS if self.cpuid.features().xsave => m.xss,
            _ => {
                let now = self.now_ns();
                return ctx.bus.rdmsr(now, msr).ok_or(Fault::gp0());
            }
        })
    }

    /// WRMSR semantics: applies the write or faults.
    pub fn wrmsr(&mut self, ctx: &mut Ctx, msr: u32, v: u64) -> Result<(), Fault> {
        let canonical = |c: &Cpu, v: u64| {
            if c.canonical(v) {
                Ok(v)
            } else {
                Err(Fault::gp0())
            }
        };
        match msr {
            IA32_TSC => {
                let now = self.now_ns() * (crate::TSC_KHZ / 1_000_000);
                self.regs.msr.tsc_offset = v.wrapping_sub(now) as i64;
            }
            IA32_EFER => {
                let f = self.cpuid.features();
                let mut allowed = EFER_WRITABLE;
                if !f.nx {
                    allowed &= !Efer::NXE.bits();
                }
                if !f.lm {
                    allowed &= !Efer::LME.bits();
                }
                if !f.syscall {
                    allowed &= !Efer::SCE.bits();
                }
                if v & !(allowed | Efer::LMA.bits()) != 0 {
                    return Err(Fault::gp0());
                }
                // LME cannot change while paging is on (SDM 9.8.5).
                let paging = self.regs.cr0 & Cr0::PG.bits() != 0;
                if paging && (v ^ self.regs.efer) & Efer::LME.bits() != 0 {
                    return Err(Fault::gp0());
                }
                self.regs.efer = (v & allowed) | (self.regs.efer & Efer::LMA.bits());
                self.state_changed();
            }
            IA32_STAR => self.regs.msr.star = v,
            IA32_LSTAR => self.regs.msr.lstar = canonical(self, v)?,
            IA32_CSTAR => self.regs.msr.cstar = canonical(self, v)?,
            IA32_FMASK => self.regs.msr.fmask = v & 0xffff_ffff,
            IA32_FS_BASE => self.regs.seg[x86::seg::sreg::FS].base = canonical(self, v)?,
            IA32_GS_BASE => self.regs.seg[x86::seg::sreg::GS].base = canonical(self, v)?,
            IA32_KERNEL_GS_BASE => self.regs.msr.kernel_gs_base = canonical(self, v)?,
            IA32_TSC_AUX if self.cpuid.features().rdtscp || self.cpuid.features().rdpid => {
                if v >> 32 != 0 {
                    return Err(Fault::gp0());
                }
                self.regs.msr.tsc_aux = v;
            }
            IA32_SYSENTER_CS => self.regs.msr.sysenter_cs = v & 0xffff,
            IA32_SYSENTER_ESP => self.regs.msr.sysenter_esp = canonical(self, v)?,
            IA32_SYSENTER_EIP => self.regs.msr.sysenter_eip = canonical(self, v)?,
            IA32_PAT => {
                // Each entry must be a valid memory type (0, 1, 4, 5, 6, 7).
                for i in 0..8 {
                    let t = (v >> (i * 8)) & 0xff;
                    if !matches!(t, 0 | 1 | 4..=7) {
                        return Err(Fault::gp0());
                    }
                }
                self.regs.msr.pat = v;
            }
            IA32_MISC_ENABLE => self.regs.msr.misc_enable = v,
            IA32_FEATURE_CONTROL => {
                // Locked: further writes fault (SDM vol. 3C, 24.7).
                if self.regs.msr.feature_control & 1 != 0 {
                    return Err(Fault::gp0());
                }
                self.regs.msr.feature_control = v;
            }
            IA32_BIOS_SIGN_ID => {}
            IA32_SPEC_CTRL => self.regs.msr.spec_ctrl = v,
            IA32_PRED_CMD => {}
            IA32_DEBUGCTL => self.regs.msr.debugctl = v & 0x3,
            IA32_TSC_ADJUST => self.regs.msr.tsc_adjust = v,
            IA32_MTRR_DEF_TYPE => self.regs.msr.mtrr_def_type = v & 0xcff,
            IA32_MTRR_PHYSBASE0..=IA32_MTRR_PHYSMASK9 => {
                self.regs.msr.mtrr_var[(msr - IA32_MTRR_PHYSBASE0) as usize] = v
            }
            IA32_MTRR_FIX64K_00000 => self.regs.msr.mtrr_fixed[0] = v,
            IA32_MTRR_FIX16K_80000 => self.regs.msr.mtrr_fixed[1] = v,
            IA32_MTRR_FIX16K_A0000 => self.regs.msr.mtrr_fixed[2] = v,
            IA32_MTRR_FIX4K_C0000..=IA32_MTRR_FIX4K_F8000 => {
                self.regs.msr.mtrr_fixed[3 + (msr - IA32_MTRR_FIX4K_C0000) as usize] = v
            }
            IA32_MCG_STATUS => self.regs.msr.mcg_status = v,
            IA32_XSS if self.cpuid.features().xsave => {
                if v != 0 {
                    return Err(Fault::gp0());
                }
            }
            _ => {
                let now = self.now_ns();
                if !ctx.bus.wrmsr(now, msr, v) {
                    return Err(Fault::gp0());
                }
                self.events |= crate::events::IRQ;
            }
        }
        Ok(())
    }
}
