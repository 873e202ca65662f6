//! Architectural state of one logical processor (SDM vol. 3A, ch. 2
//! "System Architecture Overview"; vol. 1, ch. 3 "Basic Execution
//! Environment") and the operating mode derived from it.

use crate::flags::{FlagOp, LazyFlags};
use x86::seg::ar;
use x86::{Cr0, Efer, Rflags};

/// A segment register with its hidden (descriptor cache) part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Segment {
    /// Visible selector.
    pub selector: u16,
    /// Cached base address.
    pub base: u64,
    /// Cached limit in bytes (granularity applied).
    pub limit: u32,
    /// Cached access rights ([`x86::seg::ar`] layout).
    pub ar: u32,
}

impl Segment {
    /// A real-mode segment for `selector`: base = selector * 16, 64 KiB
    /// limit, present read/write data (or code when `code`).
    pub const fn real(selector: u16, code: bool) -> Segment {
        Segment {
            selector,
            base: (selector as u64) << 4,
            limit: 0xffff,
            ar: ar::P | ar::S | ar::RW | ar::ACCESSED | if code { ar::CODE } else { 0 },
        }
    }
    /// Descriptor privilege level of the cached descriptor.
    pub const fn dpl(&self) -> u8 {
        ((self.ar >> ar::DPL_SHIFT) & 3) as u8
    }
}

/// GDTR or IDTR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescTable {
    /// Linear base address.
    pub base: u64,
    /// Limit in bytes minus one.
    pub limit: u16,
}

/// The processor's operating mode (SDM vol. 3A, 2.2 "Modes of Operation").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Real-address mode.
    Real,
    /// Virtual-8086 mode.
    Vm86,
    /// Protected mode (16- or 32-bit code segment).
    Protected,
    /// IA-32e compatibility mode.
    Compat,
    /// IA-32e 64-bit mode.
    Long,
}

impl core::fmt::Display for Mode {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Mode::Real => "real mode",
            Mode::Vm86 => "virtual-8086 mode",
            Mode::Protected => "protected mode",
            Mode::Compat => "compatibility mode",
            Mode::Long => "64-bit mode",
        })
    }
}

/// MSR-held state the CPU itself implements (platform MSRs such as the
/// APIC's live on the bus).
#[derive(Clone, Debug, Default)]
pub struct MsrState {
    /// IA32_STAR.
    pub star: u64,
    /// IA32_LSTAR.
    pub lstar: u64,
    /// IA32_CSTAR.
    pub cstar: u64,
    /// IA32_FMASK.
    pub fmask: u64,
    /// IA32_KERNEL_GS_BASE.
    pub kernel_gs_base: u64,
    /// IA32_SYSENTER_CS.
    pub sysenter_cs: u64,
    /// IA32_SYSENTER_ESP.
    pub sysenter_esp: u64,
    /// IA32_SYSENTER_EIP.
    pub sysenter_eip: u64,
    /// IA32_TSC_AUX.
    pub tsc_aux: u64,
    /// IA32_PAT.
    pub pat: u64,
    /// IA32_MISC_ENABLE.
    pub misc_enable: u64,
    /// IA32_FEATURE_CONTROL.
    pub feature_control: u64,
    /// IA32_DEBUGCTL.
    pub debugctl: u64,
    /// IA32_SPEC_CTRL.
    pub spec_ctrl: u64,
    /// IA32_TSC_ADJUST.
    pub tsc_adjust: u64,
    /// IA32_MTRR_DEF_TYPE.
    pub mtrr_def_type: u64,
    /// Variable-range MTRR base/mask pairs (0x200-0x213).
    pub mtrr_var: [u64; 20],
    /// Fixed-range MTRRs (0x250, 0x258, 0x259, 0x268-0x26f).
    pub mtrr_fixed: [u64; 11],
    /// IA32_XSS.
    pub xss: u64,
    /// Added to the virtual TSC (writes to IA32_TSC set it).
    pub tsc_offset: i64,
    /// IA32_MCG_STATUS.
    pub mcg_status: u64,
}

/// x87, SSE and MXCSR state (the FXSAVE image's contents; SDM vol. 1,
/// 10.5.1 "FXSAVE Area").
#[derive(Clone, Debug)]
pub struct FpuState {
    /// x87 control word.
    pub fcw: u16,
    /// x87 status word.
    pub fsw: u16,
    /// Abridged tag word (one bit per register, as FXSAVE stores it).
    pub ftw: u8,
    /// Last x87 opcode.
    pub fop: u16,
    /// Last instruction pointer.
    pub fip: u64,
    /// Last data pointer.
    pub fdp: u64,
    /// ST0-ST7 / MM0-MM7 as 80-bit values (low 10 bytes used).
    pub st: [[u8; 16]; 8],
    /// MXCSR.
    pub mxcsr: u32,
    /// XMM0-XMM15.
    pub xmm: [u128; 16],
}

impl Default for FpuState {
    fn default() -> Self {
        FpuState { fcw: 0x37f, fsw: 0, ftw: 0, fop: 0, fip: 0, fdp: 0, st: [[0; 16]; 8], mxcsr: 0x1f80, xmm: [0; 16] }
    }
}

/// Register file and control state of one logical processor.
#[derive(Clone, Debug)]
pub struct Regs {
    /// RAX..R15 in encoding order.
    pub gpr: [u64; 16],
    /// Instruction pointer (offset in CS).
    pub rip: u64,
    /// RFLAGS without the six status flags while `lf` is lazy.
    pub(crate) rflags: u64,
    /// Lazy status flags.
    pub(crate) lf: LazyFlags,
    /// ES, CS, SS, DS, FS, GS.
    pub seg: [Segment; 6],
    /// LDTR.
    pub ldtr: Segment,
    /// Task register.
    pub tr: Segment,
    /// GDTR.
    pub gdtr: DescTable,
    /// IDTR.
    pub idtr: DescTable,
    /// CR0.
    pub cr0: u64,
    /// CR2.
    pub cr2: u64,
    /// CR3.
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// IA32_EFER.
    pub efer: u64,
    /// XCR0.
    pub xcr0: u64,
    /// PKRU.
    pub pkru: u32,
    /// DR0-DR7 (DR4/DR5 alias DR6/DR7 and are not stored separately).
    pub dr: [u64; 8],
    /// MSR-held state.
    pub msr: MsrState,
    /// x87/SSE state.
    pub fpu: FpuState,
}

impl Regs {
    /// The power-on/RESET state (SDM vol. 3A, 10.1.1 "Processor State After
    /// Reset"): real mode at F000:FFF0 with CS base 0xffff0000.
    pub fn reset() -> Regs {
        let mut seg = [Segment::real(0, false); 6];
        seg[x86::seg::sreg::CS] = Segment {
            selector: 0xf000,
            base: 0xffff_0000,
            limit: 0xffff,
            ar: ar::P | ar::S | ar::CODE | ar::RW | ar::ACCESSED,
        };
        let mut dr = [0u64; 8];
        dr[6] = 0xffff_0ff0;
        dr[7] = 0x400;
        Regs {
            gpr: [0; 16],
            rip: 0xfff0,
            rflags: Rflags::FIXED1.bits(),
            lf: LazyFlags::default(),
            seg,
            ldtr: Segment { selector: 0, base: 0, limit: 0xffff, ar: ar::P | x86::seg::sys::LDT },
            tr: Segment { selector: 0, base: 0, limit: 0xffff, ar: ar::P | x86::seg::sys::TSS_BUSY },
            gdtr: DescTable { base: 0, limit: 0xffff },
            idtr: DescTable { base: 0, limit: 0xffff },
            cr0: (Cr0::ET | Cr0::CD | Cr0::NW).bits(),
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            xcr0: 1,
            pkru: 0,
            dr,
            msr: MsrState { pat: 0x0007_0406_0007_0406, misc_enable: 1, ..Default::default() },
            fpu: FpuState::default(),
        }
    }

    /// RFLAGS with the status flags materialized.
    #[inline]
    pub fn rflags(&self) -> u64 {
        if self.lf.op == FlagOp::None {
            self.rflags
        } else {
            (self.rflags & !Rflags::STATUS.bits()) | self.lf.materialize()
        }
    }

    /// Sets RFLAGS as a whole (reserved bits forced: bit 1 set, 3/5/15
    /// and 22-63 clear).
    #[inline]
    pub fn set_rflags(&mut self, v: u64) {
        self.rflags = (v & 0x3f_7fd5) | Rflags::FIXED1.bits();
        self.lf.op = FlagOp::None;
    }

    /// Makes the status flags concrete in `rflags` (before an instruction
    /// updates only some of them).
    #[inline]
    pub fn materialize_flags(&mut self) {
        if self.lf.op != FlagOp::None {
            self.rflags = self.rflags();
            self.lf.op = FlagOp::None;
        }
    }

    /// Tests one RFLAGS bit that is never lazy (IF, DF, TF, AC...).
    #[inline(always)]
    pub fn flag(&self, f: Rflags) -> bool {
        self.rflags & f.bits() != 0
    }

    /// Carry flag.
    #[inline(always)]
    pub fn cf(&self) -> bool {
        if self.lf.op == FlagOp::None {
            self.rflags & 1 != 0
        } else {
            self.lf.cf()
        }
    }

    /// Zero flag.
    #[inline(always)]
    pub fn zf(&self) -> bool {
        if self.lf.op == FlagOp::None {
            self.rflags & Rflags::ZF.bits() != 0
        } else {
            self.lf.zf()
        }
    }

    /// Sign flag.
    #[inline(always)]
    pub fn sf(&self) -> bool {
        if self.lf.op == FlagOp::None {
            self.rflags & Rflags::SF.bits() != 0
        } else {
            self.lf.sf()
        }
    }

    /// Overflow flag.
    #[inline(always)]
    pub fn of(&self) -> bool {
        if self.lf.op == FlagOp::None {
            self.rflags & Rflags::OF.bits() != 0
        } else {
            self.lf.of()
        }
    }

    /// Parity flag.
    #[inline(always)]
    pub fn pf(&self) -> bool {
        if self.lf.op == FlagOp::None {
            self.rflags & Rflags::PF.bits() != 0
        } else {
            self.lf.pf()
        }
    }

    /// Sets the status flags to an eagerly computed value (shifts, MUL,
    /// BT...): `status` holds CF/PF/AF/ZF/SF/OF bits.
    #[inline]
    pub fn set_status_flags(&mut self, status: u64) {
        self.rflags = (self.rflags() & !Rflags::STATUS.bits()) | (status & Rflags::STATUS.bits());
        self.lf.op = FlagOp::None;
    }

    /// Records a lazily evaluated flag-producing operation.
    #[inline(always)]
    pub fn set_lazy(&mut self, op: FlagOp, size: u8, a: u64, b: u64, res: u64) {
        self.lf = LazyFlags::new(op, size, a, b, res, false);
    }

    /// Records ADC/SBB or INC/DEC, which need a carry-in.
    #[inline(always)]
    pub fn set_lazy_c(&mut self, op: FlagOp, size: u8, a: u64, b: u64, res: u64, c: bool) {
        self.lf = LazyFlags::new(op, size, a, b, res, c);
    }

    /// Evaluates condition code `cc` (the low nibble of Jcc/SETcc/CMOVcc).
    #[inline(always)]
    pub fn cond(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r ^ (cc & 1 != 0)
    }

    /// The operating mode implied by CR0, EFER, RFLAGS and CS.
    pub fn compute_mode(&self) -> Mode {
        if self.cr0 & Cr0::PE.bits() == 0 {
            Mode::Real
        } else if self.efer & Efer::LMA.bits() != 0 {
            if self.seg[x86::seg::sreg::CS].ar & ar::L != 0 {
                Mode::Long
            } else {
                Mode::Compat
            }
        } else if self.rflags & Rflags::VM.bits() != 0 {
            Mode::Vm86
        } else {
            Mode::Protected
        }
    }
}
