//! Lazy arithmetic flags.
//!
//! Most flags an instruction writes are never read: the next ALU
//! instruction overwrites them. So ALU instructions record the operation,
//! its operands and its result, and CF/PF/AF/ZF/SF/OF are computed only
//! when something reads them (Jcc, SETcc, PUSHF, ADC...). The recorded form
//! is exact: the same formulas as an eager implementation, evaluated later.
//! (SDM vol. 1, 3.4.3.1 "Status Flags"; appendix A "EFLAGS Cross-Reference".)

use x86::Rflags;

/// What produced the current status flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum FlagOp {
    /// The flags are materialized in `Cpu::rflags`.
    None,
    /// `res = a + b`.
    Add,
    /// `res = a + b + carry`, carry in `cf` on entry.
    Adc,
    /// `res = a - b`.
    Sub,
    /// `res = a - b - carry`, carry in `cf` on entry.
    Sbb,
    /// AND/OR/XOR/TEST: CF=OF=AF=0.
    Logic,
    /// INC: like ADD of 1, CF preserved.
    Inc,
    /// DEC: like SUB of 1, CF preserved.
    Dec,
}

/// Recorded state for lazy flags.
#[derive(Clone, Copy, Debug)]
pub struct LazyFlags {
    /// Operation.
    pub op: FlagOp,
    /// Operand size in bytes (1, 2, 4, 8).
    pub size: u8,
    /// The resulting carry flag. It is computed when the operation is
    /// recorded (one compare), because INC/DEC must preserve it and ADC/SBB
    /// consume it: both would otherwise evaluate the previous operation.
    pub cf: bool,
    /// First operand.
    pub a: u64,
    /// Second operand.
    pub b: u64,
    /// Result (truncated to `size`).
    pub res: u64,
}

impl Default for LazyFlags {
    fn default() -> Self {
        LazyFlags { op: FlagOp::None, size: 8, cf: false, a: 0, b: 0, res: 0 }
    }
}

/// Mask of the low `size` bytes.
#[inline(always)]
pub const fn size_mask(size: u8) -> u64 {
    // Branch-free: sizes are 1, 2, 4 or 8.
    u64::MAX >> ((64 - 8 * (size as u32)) & 63)
}

/// The sign bit of a `size`-byte value.
#[inline(always)]
pub const fn sign_bit(size: u8) -> u64 {
    1u64 << (size as u32 * 8 - 1)
}

/// Even parity of the low byte (PF).
#[inline(always)]
pub const fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

impl LazyFlags {
    /// Records an operation; `carry_in` is ADC/SBB's incoming carry or
    /// the CF that INC/DEC preserve. `a`, `b` and `res` are already
    /// truncated to `size`.
    #[inline(always)]
    pub fn new(op: FlagOp, size: u8, a: u64, b: u64, res: u64, carry_in: bool) -> LazyFlags {
        let cf = match op {
            FlagOp::None | FlagOp::Logic => false,
            FlagOp::Add => res < a,
            FlagOp::Adc => {
                if carry_in {
                    res <= a
                } else {
                    res < a
                }
            }
            FlagOp::Sub => a < b,
            FlagOp::Sbb => a < b || (carry_in && a == b),
            FlagOp::Inc | FlagOp::Dec => carry_in,
        };
        LazyFlags { op, size, cf, a, b, res }
    }

    /// Carry flag.
    #[inline(always)]
    pub fn cf(&self) -> bool {
        self.cf
    }

    /// Zero flag.
    #[inline]
    pub fn zf(&self) -> bool {
        self.res & size_mask(self.size) == 0
    }

    /// Sign flag.
    #[inline]
    pub fn sf(&self) -> bool {
        self.res & sign_bit(self.size) != 0
    }

    /// Parity flag.
    #[inline]
    pub fn pf(&self) -> bool {
        parity(self.res)
    }

    /// Auxiliary carry flag.
    #[inline]
    pub fn af(&self) -> bool {
        match self.op {
            FlagOp::None | FlagOp::Logic => false,
            _ => (self.a ^ self.b ^ self.res) & 0x10 != 0,
        }
    }

    /// Overflow flag.
    #[inline]
    pub fn of(&self) -> bool {
        let s = sign_bit(self.size);
        match self.op {
            FlagOp::None | FlagOp::Logic => false,
            FlagOp::Add | FlagOp::Adc | FlagOp::Inc => (self.a ^ self.res) & (self.b ^ self.res) & s != 0,
            FlagOp::Sub | FlagOp::Sbb | FlagOp::Dec => (self.a ^ self.b) & (self.a ^ self.res) & s != 0,
        }
    }

    /// All six status flags as RFLAGS bits.
    pub fn materialize(&self) -> u64 {
        let mut f = 0;
        if self.cf() {
            f |= Rflags::CF.bits();
        }
        if self.pf() {
            f |= Rflags::PF.bits();
        }
        if self.af() {
            f |= Rflags::AF.bits();
        }
        if self.zf() {
            f |= Rflags::ZF.bits();
        }
        if self.sf() {
            f |= Rflags::SF.bits();
        }
        if self.of() {
            f |= Rflags::OF.bits();
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lf(op: FlagOp, size: u8, a: u64, b: u64, cf_in: bool) -> LazyFlags {
        let m = size_mask(size);
        let c = cf_in as u64;
        let res = match op {
            FlagOp::Add | FlagOp::Inc => a.wrapping_add(b),
            FlagOp::Adc => a.wrapping_add(b).wrapping_add(c),
            FlagOp::Sub | FlagOp::Dec => a.wrapping_sub(b),
            FlagOp::Sbb => a.wrapping_sub(b).wrapping_sub(c),
            _ => a & b,
        } & m;
        LazyFlags::new(op, size, a & m, b & m, res, cf_in)
    }

    #[test]
    fn add_byte_overflow_and_carry() {
        let f = lf(FlagOp::Add, 1, 0x7f, 1, false);
        assert!(f.of() && !f.cf() && f.sf() && f.af() && !f.zf());
        let f = lf(FlagOp::Add, 1, 0xff, 1, false);
        assert!(!f.of() && f.cf() && f.zf() && f.af());
    }

    #[test]
    fn sub_borrow_and_overflow() {
        let f = lf(FlagOp::Sub, 4, 0, 1, false);
        assert!(f.cf() && f.sf() && !f.of());
        let f = lf(FlagOp::Sub, 4, 0x8000_0000, 1, false);
        assert!(f.of() && !f.cf());
    }

    #[test]
    fn adc_sbb_carry_in_edge() {
        // 0xff + 0xff + 1 = 0x1ff: CF set, res == a.
        let f = lf(FlagOp::Adc, 1, 0xff, 0xff, true);
        assert!(f.cf());
        // 5 - 5 - 1 borrows.
        let f = lf(FlagOp::Sbb, 8, 5, 5, true);
        assert!(f.cf());
    }
}
