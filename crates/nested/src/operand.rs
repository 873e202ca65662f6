//! Operands of L1's VMX instructions, rebuilt from what the VM exit
//! reports (SDM vol. 3C, 28.2.1 "Basic VM-Exit Information": the exit
//! qualification holds the memory operand's displacement; 28.2.5
//! "Information for VM Exits Due to Instruction Execution": the VM-exit
//! instruction-information field names the register, or the scaling,
//! address size, segment, index and base of the memory operand).
//!
//! A memory operand becomes an effective address (base plus index scaled
//! plus displacement, wrapped to the address size: 16, 32 or 64 bits), then a
//! linear address through segmentation with the checks of the current mode
//! (SDM vol. 3A, 3.4 "Logical and Linear Addresses", 5.3 "Limit
//! Checking"; vol. 1, 3.3.7.1 "Canonical Addressing"): in 64-bit mode only
//! FS and GS add a base and the address must be canonical, otherwise the
//! segment must be usable, of the right type, and cover every byte. The
//! failure is #SS(0) when the segment is SS and #GP(0) otherwise, as the
//! "Protected Mode Exceptions" and "64-Bit Mode Exceptions" of every VMX
//! instruction's page in SDM 31.3 "VMX Instructions" list them.

use cpu::{Fault, Regs};
use vmx::exit::{AddressSize, MemoryOperand, Operand, VmxInstructionInfo};
use x86::seg::{ar, sreg};
use x86::{Cr4, Efer, Gva};

/// Where an instruction's register-or-memory operand is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location {
    /// A general-purpose register, 0 (RAX) to 15 (R15).
    Register(u8),
    /// Memory: a segment register (0 ES ... 5 GS) and an effective
    /// address (the offset in the segment).
    Memory {
        /// Segment register index.
        segment: usize,
        /// Effective address, wrapped to the address size.
        offset: u64,
    },
}

/// Whether L1 runs in 64-bit mode (IA32_EFER.LMA and CS.L).
pub fn is_64bit(regs: &Regs) -> bool {
    regs.efer & Efer::LMA.bits() != 0 && regs.seg[sreg::CS].ar & ar::L != 0
}

/// The operand size of VMREAD and VMWRITE, in bytes: 8 in 64-bit mode, 4
/// otherwise (operand-size prefixes are ignored).
pub fn vmx_operand_size(regs: &Regs) -> usize {
    if is_64bit(regs) {
        8
    } else {
        4
    }
}

/// Mask of a value of `size` bytes (4 or 8).
pub fn size_mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// The effective address of a memory operand: base + index scaled +
/// displacement, wrapped to the address size.
pub fn effective_address(m: &MemoryOperand, displacement: u64, regs: &Regs) -> u64 {
    let reg = |r: Option<u8>| r.map_or(0, |r| regs.gpr[usize::from(r & 0xf)]);
    let ea = reg(m.base).wrapping_add(reg(m.index) << (m.scaling & 3)).wrapping_add(displacement);
    match m.address_size {
        AddressSize::Bits16 => ea & 0xffff,
        AddressSize::Bits32 => ea & 0xffff_ffff,
        AddressSize::Bits64 => ea,
    }
}

/// Decodes the register-or-memory operand of a VMX instruction.
pub fn decode(info: &VmxInstructionInfo, displacement: u64, regs: &Regs) -> Location {
    match info.operand {
        Operand::Register(r) => Location::Register(r & 0xf),
        Operand::Memory(m) => {
            Location::Memory { segment: usize::from(m.segment), offset: effective_address(&m, displacement, regs) }
        }
    }
}

/// Whether `la` is canonical for L1's paging mode (57 bits with CR4.LA57,
/// 48 otherwise).
pub fn is_canonical(regs: &Regs, la: u64) -> bool {
    let bits = if regs.cr4 & Cr4::LA57.bits() != 0 { 57 } else { 48 };
    canonical_in(la, bits)
}

/// Whether `la` is canonical for a linear-address width of `bits`.
pub fn canonical_in(la: u64, bits: u32) -> bool {
    let shift = 64 - bits;
    (((la << shift) as i64) >> shift) as u64 == la
}

/// The linear address of a `len`-byte access at `segment:offset`, with the
/// segmentation checks of L1's mode; `write` selects the writability
/// checks.
pub fn linear_address(regs: &Regs, segment: usize, offset: u64, len: u64, write: bool) -> Result<Gva, Fault> {
    let segment = segment.min(sreg::GS);
    let fault = if segment == sreg::SS { Fault::ss(0) } else { Fault::gp0() };
    let len = len.max(1);
    let s = &regs.seg[segment];
    if is_64bit(regs) {
        let la = if segment >= sreg::FS { s.base.wrapping_add(offset) } else { offset };
        if !is_canonical(regs, la) || !is_canonical(regs, la.wrapping_add(len - 1)) {
            return Err(fault);
        }
        return Ok(Gva(la));
    }
    if regs.cr0 & x86::Cr0::PE.bits() != 0 && regs.rflags() & x86::Rflags::VM.bits() == 0 {
        // Protected or compatibility mode: a null selector leaves the
        // register unusable (SDM vol. 3A, 3.4.2 "Segment Selectors").
        let null = s.selector & !3 == 0 && segment != sreg::CS && segment != sreg::SS;
        if s.ar & ar::P == 0 || s.ar & ar::UNUSABLE != 0 || null {
            return Err(fault);
        }
        let code = s.ar & ar::CODE != 0;
        if write && (code || s.ar & ar::RW == 0) {
            return Err(fault);
        }
        if !write && code && s.ar & ar::RW == 0 {
            return Err(fault);
        }
    }
    let last = offset.wrapping_add(len - 1);
    let expand_down = s.ar & (ar::CODE | ar::DC) == ar::DC && s.ar & ar::S != 0;
    if expand_down {
        let upper = if s.ar & ar::DB != 0 { 0xffff_ffff } else { 0xffff };
        if offset <= u64::from(s.limit) || last > upper || last < offset {
            return Err(fault);
        }
    } else if last > u64::from(s.limit) || last < offset {
        return Err(fault);
    }
    Ok(Gva(s.base.wrapping_add(offset) & 0xffff_ffff))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpu::Segment;
    use x86::{Cr0, Efer};

    fn long_regs() -> Regs {
        let mut r = Regs::reset();
        r.cr0 = (Cr0::PE | Cr0::PG | Cr0::NE | Cr0::ET).bits();
        r.cr4 = Cr4::PAE.bits();
        r.efer = (Efer::LME | Efer::LMA).bits();
        for s in r.seg.iter_mut() {
            *s = Segment { selector: 0x10, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::RW | ar::ACCESSED };
        }
        r.seg[sreg::CS] =
            Segment { selector: 0x8, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::CODE | ar::RW | ar::L };
        r
    }

    fn prot_regs() -> Regs {
        let mut r = Regs::reset();
        r.cr0 = (Cr0::PE | Cr0::NE | Cr0::ET).bits();
        for s in r.seg.iter_mut() {
            *s = Segment {
                selector: 0x10,
                base: 0x1000,
                limit: 0xfff,
                ar: ar::P | ar::S | ar::RW | ar::ACCESSED | ar::DB,
            };
        }
        r.seg[sreg::CS] =
            Segment { selector: 0x8, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::CODE | ar::RW | ar::DB };
        r
    }

    fn mem(scaling: u8, size: AddressSize, segment: u8, index: Option<u8>, base: Option<u8>) -> VmxInstructionInfo {
        VmxInstructionInfo {
            operand: Operand::Memory(MemoryOperand { scaling, address_size: size, segment, index, base }),
            reg2: 0,
        }
    }

    #[test]
    fn register_operand() {
        let info = VmxInstructionInfo { operand: Operand::Register(13), reg2: 2 };
        let info = VmxInstructionInfo::from_raw(info.to_raw()).unwrap();
        assert_eq!(decode(&info, 0x1234, &long_regs()), Location::Register(13));
    }

    #[test]
    fn base_plus_scaled_index_plus_displacement_64() {
        let mut r = long_regs();
        r.gpr[3] = 0x1_0000_0000; // rbx
        r.gpr[6] = 0x10; // rsi
        let info = mem(3, AddressSize::Bits64, sreg::DS as u8, Some(6), Some(3));
        let info = VmxInstructionInfo::from_raw(info.to_raw()).unwrap();
        let disp = (-8i64) as u64;
        assert_eq!(decode(&info, disp, &r), Location::Memory { segment: sreg::DS, offset: 0x1_0000_0000 + 0x80 - 8 });
        // No base, no index: the displacement alone (RIP-relative targets
        // arrive this way).
        let info = mem(0, AddressSize::Bits64, sreg::DS as u8, None, None);
        assert_eq!(
            decode(&info, 0xffff_8000_0000_1000, &r),
            Location::Memory { segment: sreg::DS, offset: 0xffff_8000_0000_1000 }
        );
    }

    #[test]
    fn address_size_32_wraps() {
        let mut r = long_regs();
        r.gpr[0] = 0xffff_fff0;
        r.gpr[1] = 0x1234_5678_0000_0020; // high bits of index ignored by the wrap
        let info = mem(0, AddressSize::Bits32, sreg::ES as u8, Some(1), Some(0));
        assert_eq!(decode(&info, 0, &r), Location::Memory { segment: sreg::ES, offset: 0x10 });
    }

    #[test]
    fn address_size_16_wraps() {
        let mut r = prot_regs();
        r.gpr[3] = 0xfff0; // bx
        r.gpr[6] = 0x0020; // si
        let info = mem(0, AddressSize::Bits16, sreg::DS as u8, Some(6), Some(3));
        assert_eq!(decode(&info, 4, &r), Location::Memory { segment: sreg::DS, offset: 0x14 });
    }

    #[test]
    fn fs_gs_bases_apply_in_64_bit_mode_others_do_not() {
        let mut r = long_regs();
        r.seg[sreg::DS].base = 0x5000;
        r.seg[sreg::FS].base = 0x7000;
        assert_eq!(linear_address(&r, sreg::DS, 0x10, 8, false), Ok(Gva(0x10)));
        assert_eq!(linear_address(&r, sreg::FS, 0x10, 8, false), Ok(Gva(0x7010)));
    }

    #[test]
    fn non_canonical_is_gp_or_ss() {
        let r = long_regs();
        assert_eq!(linear_address(&r, sreg::DS, 0x0000_8000_0000_0000, 8, false), Err(Fault::gp0()));
        assert_eq!(linear_address(&r, sreg::SS, 0x0000_8000_0000_0000, 8, false), Err(Fault::ss(0)));
        // The last byte counts too.
        assert_eq!(linear_address(&r, sreg::DS, 0x0000_7fff_ffff_fffc, 8, false), Err(Fault::gp0()));
        let mut r57 = long_regs();
        r57.cr4 |= Cr4::LA57.bits();
        assert_eq!(linear_address(&r57, sreg::DS, 0x0000_8000_0000_0000, 8, false), Ok(Gva(0x0000_8000_0000_0000)));
    }

    #[test]
    fn segment_limit_gives_gp_or_ss() {
        let r = prot_regs();
        assert_eq!(linear_address(&r, sreg::DS, 0xff8, 8, false), Ok(Gva(0x1ff8)));
        assert_eq!(linear_address(&r, sreg::DS, 0xff9, 8, false), Err(Fault::gp0()));
        assert_eq!(linear_address(&r, sreg::SS, 0xff9, 8, false), Err(Fault::ss(0)));
        assert_eq!(linear_address(&r, sreg::ES, 0xffff_fffc, 8, false), Err(Fault::gp0()));
    }

    #[test]
    fn segment_type_and_usability() {
        let mut r = prot_regs();
        r.seg[sreg::DS].ar &= !ar::RW; // read-only data
        assert_eq!(linear_address(&r, sreg::DS, 0, 8, false), Ok(Gva(0x1000)));
        assert_eq!(linear_address(&r, sreg::DS, 0, 8, true), Err(Fault::gp0()));
        r.seg[sreg::ES].selector = 0; // null
        assert_eq!(linear_address(&r, sreg::ES, 0, 8, false), Err(Fault::gp0()));
        r.seg[sreg::FS].ar &= !ar::P;
        assert_eq!(linear_address(&r, sreg::FS, 0, 8, false), Err(Fault::gp0()));
        r.seg[sreg::GS].ar |= ar::CODE;
        r.seg[sreg::GS].ar &= !ar::RW; // execute-only code
        assert_eq!(linear_address(&r, sreg::GS, 0, 8, false), Err(Fault::gp0()));
        r.seg[sreg::SS].ar |= ar::DC; // expand-down: valid offsets above the limit
        assert_eq!(linear_address(&r, sreg::SS, 0x800, 8, false), Err(Fault::ss(0)));
        assert_eq!(linear_address(&r, sreg::SS, 0x1000, 8, true), Ok(Gva(0x2000)));
    }

    #[test]
    fn protected_mode_linear_addresses_wrap_at_4_gib() {
        let mut r = prot_regs();
        r.seg[sreg::DS] = Segment { selector: 0x10, base: 0xffff_f000, limit: 0xffff_ffff, ar: r.seg[sreg::DS].ar };
        assert_eq!(linear_address(&r, sreg::DS, 0x2000, 8, false), Ok(Gva(0x1000)));
    }
}
