//! The x87 FPU, the FXSAVE/FXRSTOR image and the XSAVE feature set, plus
//! the integer-only floating-point core ([`soft`]) that the x87 and the
//! SSE unit ([`super::sse`]) share.
//!
//! Followed: SDM vol. 1, ch. 8 "Programming with the x87 FPU" (8.1.3
//! status word, 8.1.5 control word, 8.1.7 tag word, 8.1.10 "Saving the x87
//! FPU's State with FSTENV/FNSTENV and FSAVE/FNSAVE", 8.5 exception
//! conditions, 8.6 exception synchronization), 4.9 "Overview of
//! Floating-Point Exceptions" (the priority order), 10.5 "FXSAVE and
//! FXRSTOR Instructions" (table 10-2, the 512-byte image), ch. 13
//! "Managing State Using the XSAVE Feature Set" (13.4 the XSAVE area,
//! 13.6 init tracking, 13.7 "Operation of XSAVE", 13.8 "Operation of
//! XRSTOR"), vol. 3A 2.5 "Control Registers" (CR0.EM/TS/MP/NE,
//! CR4.OSXSAVE) and 2.6 "Extended Control Registers (XCR0)", and vol. 2's
//! pages of each instruction.
//!
//! State lives in [`crate::state::FpuState`]: `st[i]` is *physical*
//! register R*i* (so MM*i* is always `st[i]`), ST(*i*) is R((TOP+*i*) mod
//! 8), and `ftw` is the abridged tag word (bit *i* set: R*i* is not empty),
//! as FXSAVE stores it; the full two-bit tags of FSTENV/FSAVE are derived
//! from the register contents.
//!
//! Arithmetic is bit-exact: [`soft`] computes add, subtract, multiply,
//! divide and square root in integers with the rounding control, the
//! precision control (24/53/64 bits) and the exception flags of the
//! hardware, on the true 80-bit double-extended format
//! (`tests/host_sse.rs` compares results, flags and condition codes with
//! the host processor, special encodings included). What is left out, and raises
//! #UD through the executor's "unimplemented" path: the transcendental
//! instructions (FSIN, FCOS, FSINCOS, FPTAN, FPATAN, F2XM1, FYL2X,
//! FYL2XP1), the BCD instructions FBLD/FBSTP, and FISTTP (SSE3, not
//! advertised). Compromises, all rare in practice:
//! - an *unmasked* overflow or underflow stores the masked (rounded)
//!   result instead of the exponent-biased one the x87 delivers to its
//!   exception handler;
//! - FOP is never recorded (it stays 0 unless a state load sets it), and
//!   FCS/FDS are stored as 0 (as on processors that deprecate them,
//!   CPUID.(EAX=07H,ECX=0):EBX[13]); FIP and FDP are offsets;
//! - with CR0.NE=0 a pending unmasked exception would be reported through
//!   FERR#/IRQ 13, which the platform does not wire: it is ignored.

use crate::fault::Fault;
use crate::mmu::Access;
use crate::state::{FpuState, Mode};
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind, Register};
use soft::{Cmp, Env, Val, F32, F64, F80};
use x86::{Cr0, Cr4, Rflags};

pub mod soft {
    //! IEEE 754 binary32 and binary64 and the x87 double-extended format,
    //! computed on integers (SDM vol. 1, 4.2.2 "Floating-Point Data
    //! Types", 4.8 "Real Numbers and Floating-Point Formats", 4.9
    //! "Overview of Floating-Point Exceptions").
    //!
    //! Every operation gets the rounding control, the masks and the
    //! DAZ/FTZ modes in an [`Env`] and records the exception flags it
    //! raises there. Results are correctly rounded: the exact result is
    //! computed with enough extra bits plus a sticky bit, then rounded
    //! once by [`round_pack`]. Tininess is detected after rounding, as on
    //! x86. Values travel as raw bit patterns in a `u128` (the low 32, 64
    //! or 80 bits), so no host floating point is involved and results are
    //! the same on every host.

    use core::cmp::Ordering;

    /// Invalid operation.
    pub const IE: u8 = 1 << 0;
    /// Denormal operand.
    pub const DE: u8 = 1 << 1;
    /// Divide by zero.
    pub const ZE: u8 = 1 << 2;
    /// Overflow.
    pub const OE: u8 = 1 << 3;
    /// Underflow.
    pub const UE: u8 = 1 << 4;
    /// Precision (inexact result).
    pub const PE: u8 = 1 << 5;

    /// Round to nearest, ties to even.
    pub const RC_NEAREST: u8 = 0;
    /// Round toward negative infinity.
    pub const RC_DOWN: u8 = 1;
    /// Round toward positive infinity.
    pub const RC_UP: u8 = 2;
    /// Round toward zero (truncate).
    pub const RC_ZERO: u8 = 3;

    /// A binary floating-point format.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Fmt {
        exp_bits: u32,
        /// Fraction bits below the binary point.
        frac_bits: u32,
        /// The integer bit is stored (x87 double extended).
        explicit: bool,
    }

    /// Single precision (binary32).
    pub const F32: Fmt = Fmt { exp_bits: 8, frac_bits: 23, explicit: false };
    /// Double precision (binary64).
    pub const F64: Fmt = Fmt { exp_bits: 11, frac_bits: 52, explicit: false };
    /// x87 double extended (80 bits, explicit integer bit).
    pub const F80: Fmt = Fmt { exp_bits: 15, frac_bits: 63, explicit: true };

    impl Fmt {
        /// Significand precision in bits, integer bit included.
        pub const fn precision(self) -> u32 {
            self.frac_bits + 1
        }
        const fn bias(self) -> i32 {
            (1 << (self.exp_bits - 1)) - 1
        }
        const fn exp_max(self) -> u128 {
            (1 << self.exp_bits) - 1
        }
        const fn exp_shift(self) -> u32 {
            self.frac_bits + self.explicit as u32
        }
        /// The sign bit.
        pub const fn sign_bit(self) -> u128 {
            1 << (self.exp_bits + self.exp_shift())
        }
        const fn frac_mask(self) -> u128 {
            (1 << self.frac_bits) - 1
        }
        const fn quiet_bit(self) -> u128 {
            1 << (self.frac_bits - 1)
        }
        const fn int_bit(self) -> u128 {
            if self.explicit {
                1 << self.frac_bits
            } else {
                0
            }
        }
        fn field(self, bits: u128) -> u128 {
            (bits >> self.exp_shift()) & self.exp_max()
        }
        /// Sign of an encoding.
        pub fn sign(self, bits: u128) -> bool {
            bits & self.sign_bit() != 0
        }
        /// Whether `bits` is a NaN (for the x87 format: with the integer
        /// bit set; pseudo-NaNs are [unsupported](Self::is_unsupported)).
        pub fn is_nan(self, bits: u128) -> bool {
            self.field(bits) == self.exp_max()
                && bits & self.frac_mask() != 0
                && (!self.explicit || bits & self.int_bit() != 0)
        }
        /// Whether `bits` is a signaling NaN.
        pub fn is_snan(self, bits: u128) -> bool {
            self.is_nan(bits) && bits & self.quiet_bit() == 0
        }
        /// Whether `bits` is a denormal (or x87 pseudo-denormal).
        pub fn is_denormal(self, bits: u128) -> bool {
            self.field(bits) == 0 && bits & (self.frac_mask() | self.int_bit()) != 0
        }
        /// x87 encodings the 387 and later reject (pseudo-NaN,
        /// pseudo-infinity, unnormal): a nonzero exponent without the
        /// integer bit.
        pub fn is_unsupported(self, bits: u128) -> bool {
            self.explicit && self.field(bits) != 0 && bits & self.int_bit() == 0
        }
        /// The NaN with the quiet bit set.
        pub fn quiet(self, bits: u128) -> u128 {
            bits | self.quiet_bit()
        }
        /// The default NaN ("real indefinite"): negative, quiet, zero
        /// payload.
        pub fn indefinite(self) -> u128 {
            self.sign_bit() | (self.exp_max() << self.exp_shift()) | self.int_bit() | self.quiet_bit()
        }
        /// Infinity of the given sign.
        pub fn inf(self, sign: bool) -> u128 {
            self.signed(sign) | (self.exp_max() << self.exp_shift()) | self.int_bit()
        }
        /// Zero of the given sign.
        pub fn zero(self, sign: bool) -> u128 {
            self.signed(sign)
        }
        fn signed(self, sign: bool) -> u128 {
            if sign {
                self.sign_bit()
            } else {
                0
            }
        }
        /// The largest finite value with a `p`-bit significand.
        fn max_finite(self, sign: bool, p: u32) -> u128 {
            let fp = self.precision();
            let sig = ((1u128 << p) - 1) << (fp - p);
            self.signed(sign) | ((self.exp_max() - 1) << self.exp_shift()) | (sig & (self.frac_mask() | self.int_bit()))
        }
        /// Encoding of 1.0.
        pub fn one(self) -> u128 {
            ((self.bias() as u128) << self.exp_shift()) | self.int_bit()
        }
    }

    /// A decoded value: `(-1)^sign * sig * 2^exp` for finite values.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Val {
        /// Signed zero.
        Zero(bool),
        /// Nonzero finite value.
        Finite {
            /// Sign.
            sign: bool,
            /// Exponent of the significand's least significant bit.
            exp: i32,
            /// Significand (integer).
            sig: u128,
        },
        /// Signed infinity.
        Inf(bool),
        /// Any NaN.
        Nan,
    }

    /// Decodes an encoding without raising anything.
    pub fn unpack(f: Fmt, bits: u128) -> Val {
        let sign = f.sign(bits);
        let field = f.field(bits);
        let frac = bits & (f.frac_mask() | f.int_bit());
        let fb = f.frac_bits as i32;
        if field == f.exp_max() {
            if bits & f.frac_mask() == 0 {
                Val::Inf(sign)
            } else {
                Val::Nan
            }
        } else if field == 0 {
            if frac == 0 {
                Val::Zero(sign)
            } else {
                Val::Finite { sign, exp: 1 - f.bias() - fb, sig: frac }
            }
        } else {
            let sig = if f.explicit { frac } else { frac | (1 << f.frac_bits) };
            Val::Finite { sign, exp: field as i32 - f.bias() - fb, sig }
        }
    }

    /// Rounding and exception environment of one operation, and the flags
    /// it raised.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub struct Env {
        /// Rounding control ([`RC_NEAREST`]...).
        pub rc: u8,
        /// Exception masks (a set bit masks the flag of the same value).
        pub masks: u8,
        /// Denormal source operands are read as zero (MXCSR.DAZ).
        pub daz: bool,
        /// Tiny results are flushed to zero when underflow is masked
        /// (MXCSR.FTZ).
        pub ftz: bool,
        /// Flags raised so far.
        pub flags: u8,
        /// The last rounding increased the magnitude (x87 C1).
        pub rounded_up: bool,
    }

    impl Env {
        /// The environment MXCSR describes.
        pub fn from_mxcsr(mxcsr: u32) -> Env {
            Env {
                rc: ((mxcsr >> 13) & 3) as u8,
                masks: ((mxcsr >> 7) & 0x3f) as u8,
                daz: mxcsr & (1 << 6) != 0,
                ftz: mxcsr & (1 << 15) != 0,
                flags: 0,
                rounded_up: false,
            }
        }
        /// The environment the x87 control word describes.
        pub fn from_fcw(fcw: u16) -> Env {
            Env {
                rc: ((fcw >> 10) & 3) as u8,
                masks: (fcw & 0x3f) as u8,
                daz: false,
                ftz: false,
                flags: 0,
                rounded_up: false,
            }
        }
    }

    /// How a NaN result is chosen from two NaN operands (SDM vol. 1,
    /// table 4-7 "Rules for Handling NaNs").
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum NanRule {
        /// SSE: the first source operand if it is a NaN, else the second.
        Sse,
        /// x87: a QNaN before an SNaN, else the larger significand.
        X87,
    }

    /// Unpacks an arithmetic source operand: a denormal reads as zero
    /// under DAZ; otherwise the second value says it is one, for
    /// [`denormal`] to report.
    fn operand(f: Fmt, bits: u128, env: &Env) -> (Val, bool) {
        if f.is_denormal(bits) {
            if env.daz {
                return (Val::Zero(f.sign(bits)), false);
            }
            return (unpack(f, bits), true);
        }
        (unpack(f, bits), false)
    }

    /// Raises DE for a denormal operand unless the operation raised an
    /// invalid-operation or divide-by-zero exception, which take
    /// precedence and hide it (SDM vol. 1, 4.9.2 "Floating-Point Exception
    /// Priority"). The operation runs with its flags cleared (taken into
    /// `before`, merged back here) so that flags of earlier lanes do not
    /// count.
    fn denormal(env: &mut Env, before: u8, de: bool) {
        if de && env.flags & (IE | ZE) == 0 {
            env.flags |= DE;
        }
        env.flags |= before;
    }

    /// The NaN result of a two-operand operation, if an operand is a NaN
    /// (or an unsupported x87 encoding).
    fn nan2(f: Fmt, a: u128, b: u128, rule: NanRule, env: &mut Env) -> Option<u128> {
        if f.is_unsupported(a) || f.is_unsupported(b) {
            env.flags |= IE;
            return Some(f.indefinite());
        }
        let (an, bn) = (f.is_nan(a), f.is_nan(b));
        if !an && !bn {
            return None;
        }
        let (asn, bsn) = (f.is_snan(a), f.is_snan(b));
        if asn || bsn {
            env.flags |= IE;
        }
        let pick = match rule {
            NanRule::Sse => {
                if an {
                    a
                } else {
                    b
                }
            }
            NanRule::X87 => {
                if an && bn {
                    if asn != bsn {
                        if asn {
                            b
                        } else {
                            a
                        }
                    } else {
                        let mag = |v: u128| v & (f.frac_mask() | f.int_bit());
                        if mag(b) > mag(a) {
                            b
                        } else {
                            a
                        }
                    }
                } else if an {
                    a
                } else {
                    b
                }
            }
        };
        Some(f.quiet(pick))
    }

    /// The NaN result of a one-operand operation.
    fn nan1(f: Fmt, a: u128, env: &mut Env) -> Option<u128> {
        if f.is_unsupported(a) {
            env.flags |= IE;
            return Some(f.indefinite());
        }
        if !f.is_nan(a) {
            return None;
        }
        if f.is_snan(a) {
            env.flags |= IE;
        }
        Some(f.quiet(a))
    }

    /// `sig >> shift` and the dropped bits: (quotient, round bit, sticky).
    fn shift_right(sig: u128, shift: u32) -> (u128, bool, bool) {
        match shift {
            0 => (sig, false, false),
            1..=127 => {
                let q = sig >> shift;
                let half = (sig >> (shift - 1)) & 1 != 0;
                let sticky = sig & ((1u128 << (shift - 1)) - 1) != 0;
                (q, half, sticky)
            }
            128 => (0, sig >> 127 != 0, sig & (u128::MAX >> 1) != 0),
            _ => (0, false, sig != 0),
        }
    }

    /// Rounds `sig * 2^exp` to a multiple of `2^qexp` by `rc`, returning
    /// (multiple, magnitude rounded up, inexact). A negative shift must
    /// not overflow (callers choose `qexp` so it does not).
    pub fn round_at(sig: u128, exp: i32, qexp: i32, sign: bool, rc: u8) -> (u128, bool, bool) {
        let shift = i64::from(qexp) - i64::from(exp);
        if shift <= 0 {
            return (sig << (-shift).min(127) as u32, false, false);
        }
        let (q, half, sticky) = shift_right(sig, shift.min(200) as u32);
        let inexact = half || sticky;
        let up = match rc {
            RC_NEAREST => half && (sticky || q & 1 == 1),
            RC_DOWN => sign && inexact,
            RC_UP => !sign && inexact,
            _ => false,
        };
        (q + up as u128, up, inexact)
    }

    fn bit_len(v: u128) -> i32 {
        128 - v.leading_zeros() as i32
    }

    /// Rounds `(-1)^sign * sig * 2^exp` to a `p`-bit significand (`p` at
    /// most the format's precision: the x87 precision control) within
    /// the exponent range of `f`, raising PE/UE/OE, and encodes it.
    pub fn round_pack(f: Fmt, p: u32, env: &mut Env, sign: bool, exp: i32, sig: u128) -> u128 {
        env.rounded_up = false;
        if sig == 0 {
            return f.zero(sign);
        }
        let fp = f.precision() as i32;
        let p = (p as i32).clamp(1, fp);
        let emin = 1 - f.bias();
        // Below 2^emin the quantum stops shrinking: at the format's own
        // precision for the stored value, and at `p` bits for rounding
        // (the x87 denormalizes, then rounds to the precision control).
        let full_q = emin - (fp - 1);
        let sub_q = emin - (p - 1);
        // The value lies in [2^e, 2^(e+1)).
        let e = exp + bit_len(sig) - 1;
        let qexp = (e - (p - 1)).max(sub_q);
        let (mut q, up, inexact) = round_at(sig, exp, qexp, sign, env.rc);
        // Tininess after rounding: the result rounded to p bits with an
        // unbounded exponent would still be below 2^emin.
        let tiny = e < emin && !(e == emin - 1 && round_at(sig, exp, e - (p - 1), sign, env.rc).0 >> p != 0);
        if tiny && env.ftz && env.masks & UE != 0 {
            env.flags |= UE | PE;
            return f.zero(sign);
        }
        if tiny && (inexact || env.masks & UE == 0) {
            env.flags |= UE;
        }
        if inexact {
            env.flags |= PE;
        }
        env.rounded_up = up;
        let mut qexp = qexp;
        if q >> p != 0 {
            q >>= 1;
            qexp += 1;
        }
        if q == 0 {
            return f.zero(sign);
        }
        let msb = bit_len(q) - 1;
        let er = qexp + msb;
        if er > f.bias() {
            env.flags |= OE | PE;
            let to_inf = match env.rc {
                RC_NEAREST => true,
                RC_DOWN => sign,
                RC_UP => !sign,
                _ => false,
            };
            env.rounded_up = to_inf;
            return if to_inf { f.inf(sign) } else { f.max_finite(sign, p as u32) };
        }
        let (field, mant) = if er < emin {
            (0u128, q << (qexp - full_q) as u32)
        } else {
            ((er + f.bias()) as u128, q << (fp - 1 - msb) as u32)
        };
        f.signed(sign) | (field << f.exp_shift()) | (mant & (f.frac_mask() | f.int_bit()))
    }

    /// `a + b`, or `a - b` when `negate_b`.
    pub fn add(f: Fmt, p: u32, env: &mut Env, rule: NanRule, a: u128, b: u128, negate_b: bool) -> u128 {
        if let Some(n) = nan2(f, a, b, rule, env) {
            return n;
        }
        let b = if negate_b { b ^ f.sign_bit() } else { b };
        let before = core::mem::take(&mut env.flags);
        let (x, dx) = operand(f, a, env);
        let (y, dy) = operand(f, b, env);
        let r = add_values(f, p, env, x, y);
        denormal(env, before, dx || dy);
        r
    }

    fn add_values(f: Fmt, p: u32, env: &mut Env, x: Val, y: Val) -> u128 {
        match (x, y) {
            (Val::Inf(s), Val::Inf(t)) => {
                if s == t {
                    f.inf(s)
                } else {
                    env.flags |= IE;
                    f.indefinite()
                }
            }
            (Val::Inf(s), _) | (_, Val::Inf(s)) => f.inf(s),
            (Val::Zero(s), Val::Zero(t)) => f.zero(if s == t { s } else { env.rc == RC_DOWN }),
            (Val::Zero(_), Val::Finite { sign, exp, sig }) | (Val::Finite { sign, exp, sig }, Val::Zero(_)) => {
                round_pack(f, p, env, sign, exp, sig)
            }
            (Val::Finite { sign: sa, exp: ea, sig: ma }, Val::Finite { sign: sb, exp: eb, sig: mb }) => {
                // 62 bits of headroom below the larger operand keep every
                // bit a cancellation can expose; what falls off the
                // smaller one only matters as a sticky bit.
                const HEAD: u32 = 62;
                let ((sh, eh, mh), (sl, el, ml)) =
                    if ea >= eb { ((sa, ea, ma), (sb, eb, mb)) } else { ((sb, eb, mb), (sa, ea, ma)) };
                let big = mh << HEAD;
                let small = sticky_shift(ml << HEAD, (i64::from(eh) - i64::from(el)).min(200) as u32);
                let exp = eh - HEAD as i32;
                if sh == sl {
                    round_pack(f, p, env, sh, exp, big + small)
                } else if big > small {
                    round_pack(f, p, env, sh, exp, big - small)
                } else if small > big {
                    round_pack(f, p, env, sl, exp, small - big)
                } else {
                    env.rounded_up = false;
                    f.zero(env.rc == RC_DOWN)
                }
            }
            _ => f.indefinite(),
        }
    }

    fn sticky_shift(v: u128, d: u32) -> u128 {
        let (q, half, sticky) = shift_right(v, d);
        q | (half || sticky) as u128
    }

    /// `a * b`.
    pub fn mul(f: Fmt, p: u32, env: &mut Env, rule: NanRule, a: u128, b: u128) -> u128 {
        if let Some(n) = nan2(f, a, b, rule, env) {
            return n;
        }
        let sign = f.sign(a) ^ f.sign(b);
        let before = core::mem::take(&mut env.flags);
        let (x, dx) = operand(f, a, env);
        let (y, dy) = operand(f, b, env);
        let r = match (x, y) {
            (Val::Inf(_), Val::Zero(_)) | (Val::Zero(_), Val::Inf(_)) => {
                env.flags |= IE;
                f.indefinite()
            }
            (Val::Inf(_), _) | (_, Val::Inf(_)) => f.inf(sign),
            (Val::Zero(_), _) | (_, Val::Zero(_)) => f.zero(sign),
            (Val::Finite { exp: ea, sig: ma, .. }, Val::Finite { exp: eb, sig: mb, .. }) => {
                // Significands have at most 64 bits: the product fits.
                round_pack(f, p, env, sign, ea + eb, ma * mb)
            }
            _ => f.indefinite(),
        };
        denormal(env, before, dx || dy);
        r
    }

    /// `a / b`.
    pub fn div(f: Fmt, p: u32, env: &mut Env, rule: NanRule, a: u128, b: u128) -> u128 {
        if let Some(n) = nan2(f, a, b, rule, env) {
            return n;
        }
        let sign = f.sign(a) ^ f.sign(b);
        let before = core::mem::take(&mut env.flags);
        let (x, dx) = operand(f, a, env);
        let (y, dy) = operand(f, b, env);
        let r = match (x, y) {
            (Val::Inf(_), Val::Inf(_)) | (Val::Zero(_), Val::Zero(_)) => {
                env.flags |= IE;
                f.indefinite()
            }
            (Val::Inf(_), _) | (Val::Zero(_), _) => {
                if matches!(x, Val::Inf(_)) {
                    f.inf(sign)
                } else {
                    f.zero(sign)
                }
            }
            (_, Val::Inf(_)) => f.zero(sign),
            (Val::Finite { .. }, Val::Zero(_)) => {
                env.flags |= ZE;
                f.inf(sign)
            }
            (Val::Finite { exp: ea, sig: ma, .. }, Val::Finite { exp: eb, sig: mb, .. }) => {
                let (ea, ma) = normalize64(ea, ma);
                let (eb, mb) = normalize64(eb, mb);
                // Two steps of long division give a 126-bit quotient; the
                // remainder becomes the sticky bit.
                let n1 = ma << 62;
                let (q1, r1) = (n1 / mb, n1 % mb);
                let n2 = r1 << 64;
                let (q2, r2) = (n2 / mb, n2 % mb);
                let q = (q1 << 64) | q2;
                let sig = (q << 1) | (r2 != 0) as u128;
                round_pack(f, p, env, sign, ea - eb - 62 - 64 - 1, sig)
            }
            _ => f.indefinite(),
        };
        denormal(env, before, dx || dy);
        r
    }

    /// Shifts a nonzero significand of at most 64 bits so that its top
    /// bit is bit 63.
    fn normalize64(exp: i32, sig: u128) -> (i32, u128) {
        let s = sig.leading_zeros().saturating_sub(64);
        (exp - s as i32, sig << s)
    }

    /// Square root.
    pub fn sqrt(f: Fmt, p: u32, env: &mut Env, a: u128) -> u128 {
        if let Some(n) = nan1(f, a, env) {
            return n;
        }
        let before = core::mem::take(&mut env.flags);
        let (x, dx) = operand(f, a, env);
        let r = match x {
            Val::Zero(s) => f.zero(s),
            Val::Inf(false) => f.inf(false),
            Val::Inf(true) | Val::Finite { sign: true, .. } => {
                env.flags |= IE;
                f.indefinite()
            }
            Val::Finite { exp, sig, .. } => {
                let (mut exp, mut sig) = normalize64(exp, sig);
                if exp & 1 != 0 {
                    sig <<= 1;
                    exp -= 1;
                }
                // sqrt(sig * 4^64) has about 96 bits: plenty for p <= 64.
                let (root, inexact) = isqrt_scaled(sig, 64);
                let s = (root << 1) | inexact as u128;
                round_pack(f, p, env, false, exp / 2 - 64 - 1, s)
            }
            Val::Nan => f.indefinite(),
        };
        denormal(env, before, dx);
        r
    }

    /// Integer square root of `sig * 4^t` (bit pairs fed from the top, as
    /// the schoolbook method), and whether it is inexact.
    fn isqrt_scaled(sig: u128, t: u32) -> (u128, bool) {
        let bits = bit_len(sig) as u32 + 2 * t;
        let pairs = bits.div_ceil(2);
        let (mut r, mut q) = (0u128, 0u128);
        for i in (0..pairs).rev() {
            let pos = 2 * i;
            let two = if pos >= 2 * t { (sig >> (pos - 2 * t)) & 3 } else { 0 };
            r = (r << 2) | two;
            let trial = (q << 2) | 1;
            if r >= trial {
                r -= trial;
                q = (q << 1) | 1;
            } else {
                q <<= 1;
            }
        }
        (q, r != 0)
    }

    /// Result of a comparison.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    pub enum Cmp {
        /// a < b.
        Less,
        /// a == b (including +0 == -0).
        Equal,
        /// a > b.
        Greater,
        /// A NaN is involved.
        Unordered,
    }

    /// Compares `a` with `b`; a `signaling` comparison raises IE for
    /// quiet NaNs too (COMISS, FCOM), a quiet one only for signaling NaNs
    /// (UCOMISS, FUCOM).
    pub fn compare(f: Fmt, env: &mut Env, a: u128, b: u128, signaling: bool) -> Cmp {
        if f.is_unsupported(a) || f.is_unsupported(b) {
            env.flags |= IE;
            return Cmp::Unordered;
        }
        if f.is_nan(a) || f.is_nan(b) {
            if signaling || f.is_snan(a) || f.is_snan(b) {
                env.flags |= IE;
            }
            return Cmp::Unordered;
        }
        let (x, dx) = operand(f, a, env);
        let (y, dy) = operand(f, b, env);
        if dx || dy {
            env.flags |= DE;
        }
        order(x, y)
    }

    /// Orders two non-NaN values.
    pub fn order(x: Val, y: Val) -> Cmp {
        let class = |v: &Val| match v {
            Val::Zero(_) | Val::Nan => 0i8,
            Val::Inf(s) | Val::Finite { sign: s, .. } => {
                if *s {
                    -1
                } else {
                    1
                }
            }
        };
        let (cx, cy) = (class(&x), class(&y));
        if cx != cy {
            return if cx < cy { Cmp::Less } else { Cmp::Greater };
        }
        if cx == 0 {
            return Cmp::Equal;
        }
        let mag = match (x, y) {
            (Val::Inf(_), Val::Inf(_)) => Ordering::Equal,
            (Val::Inf(_), _) => Ordering::Greater,
            (_, Val::Inf(_)) => Ordering::Less,
            (Val::Finite { exp: ea, sig: ma, .. }, Val::Finite { exp: eb, sig: mb, .. }) => {
                let (la, lb) = (ma.leading_zeros(), mb.leading_zeros());
                let (ta, tb) = (i64::from(ea) - i64::from(la), i64::from(eb) - i64::from(lb));
                ta.cmp(&tb).then((ma << la).cmp(&(mb << lb)))
            }
            _ => Ordering::Equal,
        };
        let mag = if cx < 0 { mag.reverse() } else { mag };
        match mag {
            Ordering::Less => Cmp::Less,
            Ordering::Equal => Cmp::Equal,
            Ordering::Greater => Cmp::Greater,
        }
    }

    /// Converts between formats, rounding to `p` bits of `to`: IE for
    /// signaling NaNs, OE/UE/PE when narrowing, and DE for denormals when
    /// `report_de` (SSE conversions and x87 loads report it, x87 stores do
    /// not).
    pub fn convert(from: Fmt, to: Fmt, p: u32, env: &mut Env, bits: u128, report_de: bool) -> u128 {
        if from.is_unsupported(bits) {
            env.flags |= IE;
            return to.indefinite();
        }
        if from.is_nan(bits) {
            if from.is_snan(bits) {
                env.flags |= IE;
            }
            let payload = bits & from.frac_mask();
            let payload = if to.frac_bits >= from.frac_bits {
                payload << (to.frac_bits - from.frac_bits)
            } else {
                payload >> (from.frac_bits - to.frac_bits)
            };
            return to.inf(from.sign(bits)) | payload | to.quiet_bit();
        }
        let (x, dx) = operand(from, bits, env);
        if dx && report_de {
            env.flags |= DE;
        }
        match x {
            Val::Zero(s) => to.zero(s),
            Val::Inf(s) => to.inf(s),
            Val::Finite { sign, exp, sig } => round_pack(to, p, env, sign, exp, sig),
            Val::Nan => to.indefinite(),
        }
    }

    /// Converts a signed integer, rounding by `env.rc`.
    pub fn from_int(to: Fmt, p: u32, env: &mut Env, v: i64) -> u128 {
        if v == 0 {
            return to.zero(false);
        }
        round_pack(to, p, env, v < 0, 0, u128::from(v.unsigned_abs()))
    }

    /// Converts to a signed `width`-bit integer (16, 32 or 64) rounding by
    /// `rc`; NaNs, infinities and out-of-range values raise IE and give the
    /// integer indefinite (only the sign bit set). Denormals read as zero
    /// under DAZ but never raise DE (no conversion to integer lists it).
    pub fn to_int(f: Fmt, env: &mut Env, bits: u128, width: u32, rc: u8) -> u64 {
        let indefinite = 1u64 << (width - 1);
        let mask = if width >= 64 { u64::MAX } else { (1u64 << width) - 1 };
        if f.is_unsupported(bits) || f.is_nan(bits) {
            env.flags |= IE;
            return indefinite;
        }
        let v = if env.daz && f.is_denormal(bits) { Val::Zero(f.sign(bits)) } else { unpack(f, bits) };
        let (sign, exp, sig) = match v {
            Val::Zero(_) => return 0,
            Val::Finite { sign, exp, sig } => (sign, exp, sig),
            _ => {
                env.flags |= IE;
                return indefinite;
            }
        };
        env.rounded_up = false;
        let (mag, inexact) = if exp >= 0 {
            if bit_len(sig) + exp > 64 {
                env.flags |= IE;
                return indefinite;
            }
            (sig << exp as u32, false)
        } else {
            let (q, up, inexact) = round_at(sig, exp, 0, sign, rc);
            env.rounded_up = up;
            (q, inexact)
        };
        let limit = 1u128 << (width - 1);
        if (!sign && mag >= limit) || (sign && mag > limit) {
            env.flags |= IE;
            env.rounded_up = false;
            return indefinite;
        }
        if inexact {
            env.flags |= PE;
        }
        let m = mag as u64;
        (if sign { m.wrapping_neg() } else { m }) & mask
    }
}

/// MXCSR bits FXRSTOR, XRSTOR and LDMXCSR accept (MXCSR_MASK: DAZ is
/// supported, bits 31:16 are reserved).
pub const MXCSR_MASK: u32 = 0xffff;

// FSW bits (SDM vol. 1, 8.1.3 "x87 FPU Status Register").
const FSW_SF: u16 = 1 << 6;
const FSW_ES: u16 = 1 << 7;
const FSW_C0: u16 = 1 << 8;
const FSW_C1: u16 = 1 << 9;
const FSW_C2: u16 = 1 << 10;
const FSW_C3: u16 = 1 << 14;
const FSW_B: u16 = 1 << 15;
const FSW_CC: u16 = FSW_C0 | FSW_C1 | FSW_C2 | FSW_C3;
const FSW_TOP_SHIFT: u16 = 11;

const MASK80: u128 = (1 << 80) - 1;

// ---------------------------------------------------------------------
// Register file.

/// Reads physical register R`r` as an 80-bit encoding.
pub(crate) fn read_phys(fpu: &FpuState, r: usize) -> u128 {
    u128::from_le_bytes(fpu.st[r & 7]) & MASK80
}

/// Writes physical register R`r` (bytes 10-15 of the slot read as zero).
pub(crate) fn write_phys(fpu: &mut FpuState, r: usize, v: u128) {
    fpu.st[r & 7] = (v & MASK80).to_le_bytes();
}

fn top(fpu: &FpuState) -> usize {
    usize::from((fpu.fsw >> FSW_TOP_SHIFT) & 7)
}

fn set_top(fpu: &mut FpuState, t: usize) {
    fpu.fsw = (fpu.fsw & !(7 << FSW_TOP_SHIFT)) | (((t & 7) as u16) << FSW_TOP_SHIFT);
}

/// Physical register of ST(i).
fn phys(fpu: &FpuState, i: usize) -> usize {
    (top(fpu) + i) & 7
}

/// ST(i), or `None` when its tag says empty.
fn st(fpu: &FpuState, i: usize) -> Option<u128> {
    let r = phys(fpu, i);
    (fpu.ftw & (1 << r) != 0).then(|| read_phys(fpu, r))
}

fn set_st(fpu: &mut FpuState, i: usize, v: u128) {
    let r = phys(fpu, i);
    write_phys(fpu, r, v);
    fpu.ftw |= 1 << r;
}

fn pop(fpu: &mut FpuState) {
    let r = phys(fpu, 0);
    fpu.ftw &= !(1 << r);
    set_top(fpu, top(fpu) + 1);
}

/// Reads MM`i` (the significand of R`i`).
pub(crate) fn mmx_read(fpu: &FpuState, i: usize) -> u64 {
    read_phys(fpu, i) as u64
}

/// Writes MM`i`: the exponent field becomes all ones, as on hardware
/// (SDM vol. 1, 9.5.1 "MMX Instructions and the x87 FPU Tag Word").
pub(crate) fn mmx_write(fpu: &mut FpuState, i: usize, v: u64) {
    write_phys(fpu, i, u128::from(v) | (0xffff << 64));
}

/// The x87 side effect of every MMX instruction but EMMS: TOP = 0, all
/// registers valid.
pub(crate) fn mmx_enter(fpu: &mut FpuState) {
    set_top(fpu, 0);
    fpu.ftw = 0xff;
}

/// Two-bit tag of a non-empty register (SDM vol. 1, 8.1.7 "x87 FPU Tag
/// Word"): 0 valid, 1 zero, 2 special.
fn full_tag_of(v: u128) -> u16 {
    let exp = (v >> 64) & 0x7fff;
    let mant = v as u64;
    if exp == 0x7fff {
        2
    } else if exp == 0 {
        if mant == 0 {
            1
        } else {
            2
        }
    } else if mant >> 63 == 0 {
        2
    } else {
        0
    }
}

/// The full tag word, derived from the abridged one and the registers.
fn full_tag_word(fpu: &FpuState) -> u16 {
    (0..8).fold(0u16, |w, r| {
        let t = if fpu.ftw & (1 << r) == 0 { 3 } else { full_tag_of(read_phys(fpu, r)) };
        w | (t << (2 * r))
    })
}

/// The abridged tag word of a full one.
fn abridged_tag_word(full: u16) -> u8 {
    (0..8).fold(0u8, |w, r| if (full >> (2 * r)) & 3 != 3 { w | (1 << r) } else { w })
}

/// ES and B follow the unmasked exception flags (after loading FCW or
/// FSW: SDM vol. 1, 8.1.3.4 and the FLDCW page).
fn sync_es(fpu: &mut FpuState) {
    if fpu.fsw & !fpu.fcw & 0x3f != 0 {
        fpu.fsw |= FSW_ES | FSW_B;
    } else {
        fpu.fsw &= !(FSW_ES | FSW_B);
    }
}

/// The control word as stored: bit 6 reads as 1, bits 7 and 13-15 as 0
/// (the infinity-control bit 12 is kept for compatibility).
fn sanitize_fcw(v: u16) -> u16 {
    (v & 0x1f3f) | 0x40
}

/// FNINIT's state.
fn reset_x87(fpu: &mut FpuState) {
    fpu.fcw = 0x37f;
    fpu.fsw = 0;
    fpu.ftw = 0;
    fpu.fop = 0;
    fpu.fip = 0;
    fpu.fdp = 0;
}

// ---------------------------------------------------------------------
// Availability (SDM vol. 3A, 2.5 and table 2-2 "Action Taken By x87 FPU
// Instructions for Different Combinations of EM, MP, and TS").

/// x87 and MMX instructions: #NM when CR0.EM or CR0.TS.
pub(crate) fn check_x87(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.regs.cr0 & (Cr0::EM | Cr0::TS).bits() != 0 {
        return Err(Fault::nm());
    }
    Ok(())
}

/// The synchronization of waiting x87 (and MMX) instructions: a pending
/// unmasked exception is reported now, as #MF when CR0.NE is set (SDM
/// vol. 1, 8.6 "x87 FPU Exception Synchronization"; 8.7 for NE=0, which
/// the platform does not model).
pub(crate) fn check_pending(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.regs.fpu.fsw & FSW_ES != 0 && cpu.regs.cr0 & Cr0::NE.bits() != 0 {
        return Err(Fault::new(x86::vector::MF));
    }
    Ok(())
}

/// MMX instructions: #UD when CR0.EM, #NM when CR0.TS, #MF when an x87
/// exception is pending (SDM vol. 3A, table 2-2; CR4.OSFXSR does not
/// matter).
pub(crate) fn check_mmx(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.regs.cr0 & Cr0::EM.bits() != 0 {
        return Err(Fault::ud());
    }
    if cpu.regs.cr0 & Cr0::TS.bits() != 0 {
        return Err(Fault::nm());
    }
    check_pending(cpu)
}

/// A waiting x87 instruction: #NM, then a pending #MF.
fn begin(cpu: &Cpu) -> Result<(), Fault> {
    check_x87(cpu)?;
    check_pending(cpu)
}

// ---------------------------------------------------------------------
// Memory areas (vectors, FXSAVE/XSAVE images, environments).

fn lin_at(cpu: &Cpu, la: u64, i: usize) -> u64 {
    let a = la.wrapping_add(i as u64);
    if cpu.mode == Mode::Long {
        a
    } else {
        a & 0xffff_ffff
    }
}

/// The alignment rules of a memory operand: `gp` bytes or #GP(0) (the
/// aligned SSE forms, FXSAVE, XSAVE), and `ac` bytes or #AC(0) when
/// alignment checking is on (SDM vol. 3A, 6.15 "Interrupt 17—Alignment
/// Check Exception (#AC)" and its table of alignment requirements by data
/// type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Align {
    /// Misalignment raises #GP(0).
    pub gp: u64,
    /// Misalignment raises #AC(0) at CPL 3 with CR0.AM and RFLAGS.AC.
    pub ac: u64,
}

impl Align {
    /// A data item of `n` bytes, checked only by alignment checking.
    pub(crate) const fn natural(n: u64) -> Align {
        Align { gp: 1, ac: n }
    }
    /// An area that must be `n`-byte aligned (#GP(0) otherwise).
    pub(crate) const fn strict(n: u64) -> Align {
        Align { gp: n, ac: 1 }
    }
}

/// Linear address of `len` bytes at `seg:off`: segment limit (or
/// canonical) checks on both ends, then the alignment checks on the
/// linear address (#GP(0) whatever the segment).
fn area_linear(cpu: &Cpu, seg: usize, off: u64, len: usize, align: Align, write: bool) -> Result<u64, Fault> {
    // One check covers up to 255 bytes; longer areas (FXSAVE, XSAVE) also
    // check their last bytes, which together cover the contiguous range.
    let la = cpu.seg_linear(seg, off, len.clamp(1, 255) as u8, write)?;
    if len > 255 {
        cpu.seg_linear(seg, off.wrapping_add(len as u64 - 8), 8, write)?;
    }
    if la & (align.gp.max(1) - 1) != 0 {
        return Err(Fault::gp0());
    }
    if la & (align.ac.max(1) - 1) != 0
        && cpu.cpl == 3
        && cpu.regs.cr0 & Cr0::AM.bits() != 0
        && cpu.regs.flag(Rflags::AC)
    {
        return Err(Fault::ac());
    }
    Ok(la)
}

/// Size of the next piece of a multi-byte access at `addr` with `rem`
/// bytes left: at most 8, a power of two, and aligned, so the pieces never
/// trip the alignment check the operand as a whole passed.
fn chunk(addr: u64, rem: usize) -> usize {
    let fit = match rem {
        8.. => 8,
        4..=7 => 4,
        2 | 3 => 2,
        _ => 1,
    };
    fit.min(1 << addr.trailing_zeros().min(3))
}

/// Reads `buf.len()` bytes at `seg:off` under the rules of `align`.
pub(crate) fn read_area(
    cpu: &mut Cpu,
    ctx: &mut Ctx,
    seg: usize,
    off: u64,
    buf: &mut [u8],
    align: Align,
) -> Result<(), Fault> {
    if buf.is_empty() {
        return Ok(());
    }
    let la = area_linear(cpu, seg, off, buf.len(), align, false)?;
    let user = cpu.cpl == 3;
    // Fast path: the whole area in one page that the TLB maps to RAM.
    if (la & 0xfff) as usize + buf.len() <= 0x1000 {
        if let Some(o) = cpu.tlb.lookup(la, Access::Read, user) {
            if let Some(src) = ctx.mem.ram().get(o..o + buf.len()) {
                buf.copy_from_slice(src);
                return Ok(());
            }
        }
    }
    let mut i = 0;
    while i < buf.len() {
        let a = lin_at(cpu, la, i);
        let n = chunk(a, buf.len() - i);
        let v = cpu.read_lin(ctx, a, n as u8)?;
        buf[i..i + n].copy_from_slice(&v.to_le_bytes()[..n]);
        i += n;
    }
    Ok(())
}

/// Checks that `len` bytes at `seg:off` can be written (segment,
/// alignment, every page) and returns their linear address, so that a
/// multi-part store either faults before writing or completes.
pub(crate) fn probe_area(
    cpu: &mut Cpu,
    ctx: &mut Ctx,
    seg: usize,
    off: u64,
    len: usize,
    align: Align,
) -> Result<u64, Fault> {
    let la = area_linear(cpu, seg, off, len, align, true)?;
    let user = cpu.cpl == 3;
    let mut i = 0u64;
    while i < len as u64 {
        let a = lin_at(cpu, la, i as usize);
        if cpu.tlb.lookup(a, Access::Write, user).is_none() {
            cpu.translate(ctx, a, Access::Write, user, false)?;
        }
        i += 0x1000 - (a & 0xfff);
    }
    Ok(la)
}

/// Writes `data` at linear `la + at` (already probed).
pub(crate) fn write_at(cpu: &mut Cpu, ctx: &mut Ctx, la: u64, at: usize, data: &[u8]) -> Result<(), Fault> {
    let start = lin_at(cpu, la, at);
    let user = cpu.cpl == 3;
    if (start & 0xfff) as usize + data.len() <= 0x1000 {
        if let Some(o) = cpu.tlb.lookup(start, Access::Write, user) {
            // A write hit in the TLB is RAM and not a decoded code page.
            if let Some(dst) = ctx.mem.ram_mut().get_mut(o..o + data.len()) {
                dst.copy_from_slice(data);
                return Ok(());
            }
        }
    }
    let mut i = 0;
    while i < data.len() {
        let a = lin_at(cpu, la, at + i);
        let n = chunk(a, data.len() - i);
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&data[i..i + n]);
        cpu.write_lin(ctx, a, n as u8, u64::from_le_bytes(b))?;
        i += n;
    }
    Ok(())
}

/// Writes `data` at `seg:off` under the rules of `align`, all or nothing.
pub(crate) fn write_area(
    cpu: &mut Cpu,
    ctx: &mut Ctx,
    seg: usize,
    off: u64,
    data: &[u8],
    align: Align,
) -> Result<(), Fault> {
    if data.is_empty() {
        return Ok(());
    }
    let la = probe_area(cpu, ctx, seg, off, data.len(), align)?;
    write_at(cpu, ctx, la, 0, data)
}

// ---------------------------------------------------------------------
// x87 instructions.

/// Records FIP (and FDP for memory operands) for a non-control
/// instruction (SDM vol. 1, 8.1.8 "x87 FPU Instruction and Data (Operand)
/// Pointers").
fn note_pointers(cpu: &mut Cpu, insn: &Instruction) {
    cpu.regs.fpu.fip = insn.ip();
    if (0..insn.op_count()).any(|n| insn.op_kind(n) == OpKind::Memory) {
        cpu.regs.fpu.fdp = cpu.ea(insn);
    }
}

/// The environment of the control word, with the significand precision
/// the precision control selects (SDM vol. 1, 8.1.5.2).
fn x87_env(fpu: &FpuState) -> (Env, u32) {
    let p = match (fpu.fcw >> 8) & 3 {
        0 => 24,
        2 => 53,
        _ => 64,
    };
    (Env::from_fcw(fpu.fcw), p)
}

/// Whether an operation's result may be written: no unmasked
/// pre-computation exception (IE, DE, ZE: SDM vol. 1, 8.5).
fn may_write(env: &Env) -> bool {
    env.flags & !env.masks & (soft::IE | soft::DE | soft::ZE) == 0
}

/// Folds an operation's flags into FSW. `stack` is `Some(c1)` after a
/// stack fault (C1 tells overflow from underflow); otherwise C1 reports
/// rounding up.
fn finish(fpu: &mut FpuState, env: &Env, stack: Option<bool>) {
    let mut fsw = (fpu.fsw | u16::from(env.flags & 0x3f)) & !FSW_C1;
    match stack {
        Some(c1) => {
            fsw |= FSW_SF | u16::from(soft::IE);
            if c1 {
                fsw |= FSW_C1;
            }
        }
        None => {
            if env.rounded_up {
                fsw |= FSW_C1;
            }
        }
    }
    if (env.flags | if stack.is_some() { soft::IE } else { 0 }) & !env.masks & 0x3f != 0 {
        fsw |= FSW_ES | FSW_B;
    }
    fpu.fsw = fsw;
}

/// Reads an x87 memory source operand as an 80-bit value (exact: single,
/// double and integer sources all fit; SNaN and denormal sources raise
/// IE and DE).
fn read_source(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, env: &mut Env) -> Result<u128, Fault> {
    let seg = cpu.mem_seg(insn);
    let off = cpu.ea(insn);
    Ok(match insn.memory_size() {
        MemorySize::Float32 => {
            let v = cpu.read_mem(ctx, seg, off, 4)?;
            soft::convert(F32, F80, 64, env, u128::from(v), true)
        }
        MemorySize::Float64 => {
            let v = cpu.read_mem(ctx, seg, off, 8)?;
            soft::convert(F64, F80, 64, env, u128::from(v), true)
        }
        MemorySize::Float80 => {
            let mut b = [0u8; 16];
            read_area(cpu, ctx, seg, off, &mut b[..10], Align::natural(8))?;
            u128::from_le_bytes(b)
        }
        MemorySize::Int16 => {
            let v = cpu.read_mem(ctx, seg, off, 2)? as u16 as i16;
            soft::from_int(F80, 64, env, i64::from(v))
        }
        MemorySize::Int32 => {
            let v = cpu.read_mem(ctx, seg, off, 4)? as u32 as i32;
            soft::from_int(F80, 64, env, i64::from(v))
        }
        MemorySize::Int64 => {
            let v = cpu.read_mem(ctx, seg, off, 8)? as i64;
            soft::from_int(F80, 64, env, v)
        }
        _ => return Err(Fault::ud()),
    })
}

fn st_index(r: Register) -> usize {
    r.number() & 7
}

/// FLD, FILD and the constant loads: push a value.
fn fld(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    let (mut env, _) = x87_env(&cpu.regs.fpu);
    let mut underflow = false;
    let v = match insn.mnemonic() {
        Mnemonic::Fld1
        | Mnemonic::Fldz
        | Mnemonic::Fldpi
        | Mnemonic::Fldl2e
        | Mnemonic::Fldl2t
        | Mnemonic::Fldlg2
        | Mnemonic::Fldln2 => constant(insn.mnemonic(), env.rc),
        _ if insn.op0_kind() == OpKind::Register => match st(&cpu.regs.fpu, st_index(insn.op0_register())) {
            Some(v) => v,
            None => {
                underflow = true;
                env.flags |= soft::IE;
                F80.indefinite()
            }
        },
        _ => read_source(cpu, ctx, insn, &mut env)?,
    };
    note_pointers(cpu, insn);
    let fpu = &mut cpu.regs.fpu;
    let overflow = fpu.ftw & (1 << phys(fpu, 7)) != 0;
    if overflow {
        env.flags |= soft::IE;
    }
    let stack = if overflow {
        Some(true)
    } else if underflow {
        Some(false)
    } else {
        None
    };
    env.rounded_up = false;
    finish(fpu, &env, stack);
    if may_write(&env) {
        let v = if overflow { F80.indefinite() } else { v };
        set_top(fpu, top(fpu) + 7);
        set_st(fpu, 0, v);
    }
    Ok(())
}

/// The constants of FLD1...FLDLN2 rounded by the rounding control (SDM
/// vol. 1, 8.3.8 "Load Constant Instructions": the 66-bit internal
/// constants round like any other result).
fn constant(m: Mnemonic, rc: u8) -> u128 {
    // (biased exponent, significand truncated to 64 bits, the nearest
    // value is the truncation plus one).
    let (exp, mant, nearest_up): (u128, u64, bool) = match m {
        Mnemonic::Fld1 => (0x3fff, 1 << 63, false),
        Mnemonic::Fldz => return 0,
        Mnemonic::Fldpi => (0x4000, 0xc90f_daa2_2168_c234, true),
        Mnemonic::Fldl2e => (0x3fff, 0xb8aa_3b29_5c17_f0bb, true),
        Mnemonic::Fldl2t => (0x4000, 0xd49a_784b_cd1b_8afe, false),
        Mnemonic::Fldlg2 => (0x3ffd, 0x9a20_9a84_fbcf_f798, true),
        _ => (0x3ffe, 0xb172_17f7_d1cf_79ab, true),
    };
    let exact = m == Mnemonic::Fld1;
    let up = !exact
        && match rc {
            soft::RC_NEAREST => nearest_up,
            soft::RC_UP => true,
            _ => false,
        };
    (exp << 64) | u128::from(mant + up as u64)
}

/// FST, FSTP, FIST, FISTP.
fn fst(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    let m = insn.mnemonic();
    let pop_after = matches!(m, Mnemonic::Fstp | Mnemonic::Fistp);
    let (mut env, _) = x87_env(&cpu.regs.fpu);
    let src = st(&cpu.regs.fpu, 0);
    if src.is_none() {
        env.flags |= soft::IE;
    }
    let v = src.unwrap_or(F80.indefinite());
    if insn.op0_kind() == OpKind::Register {
        note_pointers(cpu, insn);
        let fpu = &mut cpu.regs.fpu;
        let stack = src.is_none().then_some(false);
        finish(fpu, &env, stack);
        if may_write(&env) {
            set_st(fpu, st_index(insn.op0_register()), v);
            if pop_after {
                pop(fpu);
            }
        }
        return Ok(());
    }
    let seg = cpu.mem_seg(insn);
    let off = cpu.ea(insn);
    let rc = env.rc;
    // Stores to memory round to the destination format, not by the
    // precision control; an empty ST(0) stores the (integer) indefinite
    // when IE is masked, which the conversions of the indefinite give.
    let (val, len): (u128, usize) = match insn.memory_size() {
        MemorySize::Float32 => (soft::convert(F80, F32, 24, &mut env, v, false), 4),
        MemorySize::Float64 => (soft::convert(F80, F64, 53, &mut env, v, false), 8),
        MemorySize::Float80 => (v, 10),
        MemorySize::Int16 => (u128::from(soft::to_int(F80, &mut env, v, 16, rc)), 2),
        MemorySize::Int32 => (u128::from(soft::to_int(F80, &mut env, v, 32, rc)), 4),
        MemorySize::Int64 => (u128::from(soft::to_int(F80, &mut env, v, 64, rc)), 8),
        _ => return Err(Fault::ud()),
    };
    if may_write(&env) {
        let ac = if len == 10 { 8 } else { len as u64 };
        write_area(cpu, ctx, seg, off, &val.to_le_bytes()[..len], Align::natural(ac))?;
    }
    note_pointers(cpu, insn);
    let fpu = &mut cpu.regs.fpu;
    finish(fpu, &env, src.is_none().then_some(false));
    if may_write(&env) && pop_after {
        pop(fpu);
    }
    Ok(())
}

/// The two-operand arithmetic instructions and their popping, reversed
/// and integer forms.
fn farith(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    begin(cpu)?;
    let m = insn.mnemonic();
    let (mut env, p) = x87_env(&cpu.regs.fpu);
    // Destination index and the two operands in instruction order.
    let (dst, a, b) = if insn.op0_kind() == OpKind::Memory {
        let b = read_source(cpu, ctx, insn, &mut env)?;
        (0, st(&cpu.regs.fpu, 0), Some(b))
    } else {
        let d = st_index(insn.op0_register());
        let s = st_index(insn.op1_register());
        (d, st(&cpu.regs.fpu, d), st(&cpu.regs.fpu, s))
    };
    note_pointers(cpu, insn);
    let reverse = matches!(m, M::Fsubr | M::Fsubrp | M::Fisubr | M::Fdivr | M::Fdivrp | M::Fidivr);
    let popping = matches!(m, M::Faddp | M::Fsubp | M::Fsubrp | M::Fmulp | M::Fdivp | M::Fdivrp);
    let (stack, r) = match (a, b) {
        (Some(a), Some(b)) => {
            let (x, y) = if reverse { (b, a) } else { (a, b) };
            let rule = soft::NanRule::X87;
            let r = match m {
                M::Fadd | M::Faddp | M::Fiadd => soft::add(F80, p, &mut env, rule, x, y, false),
                M::Fsub | M::Fsubp | M::Fisub | M::Fsubr | M::Fsubrp | M::Fisubr => {
                    soft::add(F80, p, &mut env, rule, x, y, true)
                }
                M::Fmul | M::Fmulp | M::Fimul => soft::mul(F80, p, &mut env, rule, x, y),
                _ => soft::div(F80, p, &mut env, rule, x, y),
            };
            (None, r)
        }
        _ => {
            env.flags |= soft::IE;
            (Some(false), F80.indefinite())
        }
    };
    let fpu = &mut cpu.regs.fpu;
    finish(fpu, &env, stack);
    if may_write(&env) {
        set_st(fpu, dst, r);
        if popping {
            pop(fpu);
        }
    }
    Ok(())
}

/// One-operand operations on ST(0): FCHS, FABS, FSQRT, FRNDINT.
fn funary(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    note_pointers(cpu, insn);
    let (mut env, p) = x87_env(&cpu.regs.fpu);
    let fpu = &mut cpu.regs.fpu;
    let Some(v) = st(fpu, 0) else {
        env.flags |= soft::IE;
        finish(fpu, &env, Some(false));
        if may_write(&env) {
            set_st(fpu, 0, F80.indefinite());
        }
        return Ok(());
    };
    let r = match insn.mnemonic() {
        Mnemonic::Fchs => v ^ F80.sign_bit(),
        Mnemonic::Fabs => v & !F80.sign_bit(),
        Mnemonic::Fsqrt => soft::sqrt(F80, p, &mut env, v),
        _ => round_to_integer(&mut env, v),
    };
    finish(fpu, &env, None);
    if may_write(&env) {
        set_st(fpu, 0, r);
    }
    Ok(())
}

/// FRNDINT: rounds to an integral value by the rounding control.
fn round_to_integer(env: &mut Env, v: u128) -> u128 {
    if F80.is_unsupported(v) || F80.is_nan(v) {
        if F80.is_unsupported(v) || F80.is_snan(v) {
            env.flags |= soft::IE;
        }
        return if F80.is_unsupported(v) { F80.indefinite() } else { F80.quiet(v) };
    }
    if F80.is_denormal(v) {
        env.flags |= soft::DE;
    }
    match soft::unpack(F80, v) {
        Val::Finite { sign, exp, sig } if exp < 0 => {
            let (q, up, inexact) = soft::round_at(sig, exp, 0, sign, env.rc);
            if inexact {
                env.flags |= soft::PE;
            }
            let r = soft::round_pack(F80, 64, env, sign, 0, q);
            env.rounded_up = up;
            r
        }
        _ => v,
    }
}

/// FXCH.
fn fxch(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    note_pointers(cpu, insn);
    let i = if insn.op_count() >= 2 { st_index(insn.op1_register()) } else { 1 };
    let (mut env, _) = x87_env(&cpu.regs.fpu);
    let fpu = &mut cpu.regs.fpu;
    let (a, b) = (st(fpu, 0), st(fpu, i));
    let underflow = a.is_none() || b.is_none();
    if underflow {
        env.flags |= soft::IE;
    }
    finish(fpu, &env, underflow.then_some(false));
    if may_write(&env) {
        set_st(fpu, 0, b.unwrap_or(F80.indefinite()));
        set_st(fpu, i, a.unwrap_or(F80.indefinite()));
    }
    Ok(())
}

/// Sets C3/C2/C0 from a comparison (SDM vol. 1, table 8-6).
fn set_cc(fpu: &mut FpuState, c: Cmp) {
    let cc = match c {
        Cmp::Greater => 0,
        Cmp::Less => FSW_C0,
        Cmp::Equal => FSW_C3,
        Cmp::Unordered => FSW_C3 | FSW_C2 | FSW_C0,
    };
    fpu.fsw = (fpu.fsw & !FSW_CC) | cc;
}

/// FCOM, FCOMP, FCOMPP, FUCOM*, FICOM*, FTST: condition codes.
fn fcom(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    begin(cpu)?;
    let m = insn.mnemonic();
    let (mut env, _) = x87_env(&cpu.regs.fpu);
    // FCOMPP/FUCOMPP compare with ST(1), FTST with +0.0; the others name
    // their source last.
    let b = if insn.op_count() == 0 {
        if m == M::Ftst {
            Some(0)
        } else {
            st(&cpu.regs.fpu, 1)
        }
    } else if insn.op0_kind() == OpKind::Memory {
        Some(read_source(cpu, ctx, insn, &mut env)?)
    } else {
        st(&cpu.regs.fpu, st_index(insn.op_register(insn.op_count() - 1)))
    };
    note_pointers(cpu, insn);
    let signaling = !matches!(m, M::Fucom | M::Fucomp | M::Fucompp);
    let a = st(&cpu.regs.fpu, 0);
    let (c, stack) = match (a, b) {
        (Some(a), Some(b)) => (soft::compare(F80, &mut env, a, b, signaling), None),
        _ => {
            env.flags |= soft::IE;
            (Cmp::Unordered, Some(false))
        }
    };
    let pops = match m {
        M::Fcomp | M::Fucomp | M::Ficomp => 1,
        M::Fcompp | M::Fucompp => 2,
        _ => 0,
    };
    let fpu = &mut cpu.regs.fpu;
    env.rounded_up = false;
    finish(fpu, &env, stack);
    if may_write(&env) {
        set_cc(fpu, c);
        for _ in 0..pops {
            pop(fpu);
        }
    }
    Ok(())
}

/// FCOMI, FCOMIP, FUCOMI, FUCOMIP: ZF/PF/CF like COMISS.
fn fcomi(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    begin(cpu)?;
    note_pointers(cpu, insn);
    let m = insn.mnemonic();
    let (mut env, _) = x87_env(&cpu.regs.fpu);
    let signaling = matches!(m, M::Fcomi | M::Fcomip);
    let fpu = &mut cpu.regs.fpu;
    let (a, b) = (st(fpu, 0), st(fpu, st_index(insn.op1_register())));
    let (c, stack) = match (a, b) {
        (Some(a), Some(b)) => (soft::compare(F80, &mut env, a, b, signaling), None),
        _ => {
            env.flags |= soft::IE;
            (Cmp::Unordered, Some(false))
        }
    };
    env.rounded_up = false;
    finish(fpu, &env, stack);
    if may_write(&env) {
        if matches!(m, M::Fcomip | M::Fucomip) {
            pop(fpu);
        }
        cpu.regs.set_status_flags(compare_flags(c));
    }
    Ok(())
}

/// ZF/PF/CF of an unordered/greater/less/equal result (COMISS, FCOMI).
pub(crate) fn compare_flags(c: Cmp) -> u64 {
    match c {
        Cmp::Greater => 0,
        Cmp::Less => Rflags::CF.bits(),
        Cmp::Equal => Rflags::ZF.bits(),
        Cmp::Unordered => (Rflags::ZF | Rflags::PF | Rflags::CF).bits(),
    }
}

/// FXAM: classifies ST(0) into C3/C2/C0, sign into C1.
fn fxam(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    note_pointers(cpu, insn);
    let fpu = &mut cpu.regs.fpu;
    let r = phys(fpu, 0);
    let v = read_phys(fpu, r);
    let class = if fpu.ftw & (1 << r) == 0 {
        FSW_C3 | FSW_C0
    } else if F80.is_unsupported(v) {
        0
    } else if F80.is_nan(v) {
        FSW_C0
    } else {
        match soft::unpack(F80, v) {
            Val::Inf(_) => FSW_C2 | FSW_C0,
            Val::Zero(_) => FSW_C3,
            _ if F80.is_denormal(v) => FSW_C3 | FSW_C2,
            _ => FSW_C2,
        }
    };
    let sign = if F80.sign(v) { FSW_C1 } else { 0 };
    fpu.fsw = (fpu.fsw & !FSW_CC) | class | sign;
    Ok(())
}

/// FCMOVcc.
fn fcmov(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    use Mnemonic as M;
    begin(cpu)?;
    note_pointers(cpu, insn);
    let r = &cpu.regs;
    let cond = match insn.mnemonic() {
        M::Fcmovb => r.cf(),
        M::Fcmove => r.zf(),
        M::Fcmovbe => r.cf() || r.zf(),
        M::Fcmovu => r.pf(),
        M::Fcmovnb => !r.cf(),
        M::Fcmovne => !r.zf(),
        M::Fcmovnbe => !r.cf() && !r.zf(),
        _ => !r.pf(),
    };
    let (mut env, _) = x87_env(&cpu.regs.fpu);
    let fpu = &mut cpu.regs.fpu;
    let i = st_index(insn.op1_register());
    let (a, b) = (st(fpu, 0), st(fpu, i));
    if a.is_none() || b.is_none() {
        env.flags |= soft::IE;
        finish(fpu, &env, Some(false));
        if may_write(&env) && cond {
            set_st(fpu, 0, b.unwrap_or(F80.indefinite()));
        }
        return Ok(());
    }
    fpu.fsw &= !FSW_C1;
    if cond {
        set_st(fpu, 0, b.unwrap_or(F80.indefinite()));
    }
    Ok(())
}

/// FSCALE: ST(0) * 2^trunc(ST(1)).
fn fscale(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    note_pointers(cpu, insn);
    // The precision control only governs add, subtract, multiply, divide
    // and square root (SDM vol. 1, 8.1.5.2).
    let (mut env, _) = x87_env(&cpu.regs.fpu);
    let fpu = &mut cpu.regs.fpu;
    let (Some(a), Some(b)) = (st(fpu, 0), st(fpu, 1)) else {
        env.flags |= soft::IE;
        finish(fpu, &env, Some(false));
        if may_write(&env) {
            set_st(fpu, 0, F80.indefinite());
        }
        return Ok(());
    };
    let r = scale(&mut env, a, b);
    finish(fpu, &env, None);
    if may_write(&env) {
        set_st(fpu, 0, r);
    }
    Ok(())
}

fn scale(env: &mut Env, a: u128, b: u128) -> u128 {
    if F80.is_unsupported(a) || F80.is_unsupported(b) || F80.is_nan(a) || F80.is_nan(b) {
        // The NaN rules of a two-operand operation.
        return soft::add(F80, 64, env, soft::NanRule::X87, a, b, false);
    }
    if F80.is_denormal(a) || F80.is_denormal(b) {
        env.flags |= soft::DE;
    }
    let sign = F80.sign(a);
    match (soft::unpack(F80, a), soft::unpack(F80, b)) {
        (Val::Zero(_), Val::Inf(false)) | (Val::Inf(_), Val::Inf(true)) => {
            env.flags |= soft::IE;
            F80.indefinite()
        }
        (Val::Zero(_), _) | (Val::Inf(_), _) => a,
        (_, Val::Inf(false)) => F80.inf(sign),
        (_, Val::Inf(true)) => F80.zero(sign),
        (Val::Finite { exp, sig, .. }, vb) => {
            // Far beyond the exponent range either way: clamp.
            let n: i64 = match vb {
                Val::Finite { sign: sb, exp: eb, sig: mb } => {
                    let mag = if eb >= 0 {
                        if eb > 20 {
                            1 << 20
                        } else {
                            (mb.min(1 << 40) << eb as u32).min(1 << 20) as i64
                        }
                    } else {
                        soft::round_at(mb, eb, 0, sb, soft::RC_ZERO).0.min(1 << 20) as i64
                    };
                    if sb {
                        -mag
                    } else {
                        mag
                    }
                }
                _ => 0,
            };
            soft::round_pack(F80, 64, env, sign, (i64::from(exp) + n) as i32, sig)
        }
        _ => F80.indefinite(),
    }
}

/// FPREM (truncating quotient, like C's fmod) and FPREM1 (IEEE
/// remainder): the partial remainder of SDM vol. 2; when the exponents
/// differ by 64 or more, one step reduces the difference by 63 and sets
/// C2 (the loop in software finishes the job).
fn fprem(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    note_pointers(cpu, insn);
    let ieee = insn.mnemonic() == Mnemonic::Fprem1;
    let (mut env, _) = x87_env(&cpu.regs.fpu);
    let fpu = &mut cpu.regs.fpu;
    let (Some(a), Some(b)) = (st(fpu, 0), st(fpu, 1)) else {
        env.flags |= soft::IE;
        finish(fpu, &env, Some(false));
        if may_write(&env) {
            set_st(fpu, 0, F80.indefinite());
        }
        return Ok(());
    };
    let (r, cc) = remainder(&mut env, a, b, ieee);
    finish(fpu, &env, None);
    if may_write(&env) {
        set_st(fpu, 0, r);
        fpu.fsw = (fpu.fsw & !FSW_CC) | cc;
    }
    Ok(())
}

/// The partial remainder of `a` by `b` and the condition codes (C2:
/// incomplete; C0, C3, C1: quotient bits 2, 1, 0).
fn remainder(env: &mut Env, a: u128, b: u128, ieee: bool) -> (u128, u16) {
    if F80.is_unsupported(a) || F80.is_unsupported(b) || F80.is_nan(a) || F80.is_nan(b) {
        return (soft::add(F80, 64, env, soft::NanRule::X87, a, b, false), 0);
    }
    if F80.is_denormal(a) || F80.is_denormal(b) {
        env.flags |= soft::DE;
    }
    let sign = F80.sign(a);
    match (soft::unpack(F80, a), soft::unpack(F80, b)) {
        (Val::Inf(_), _) | (_, Val::Zero(_)) => {
            env.flags |= soft::IE;
            (F80.indefinite(), 0)
        }
        (Val::Zero(_), _) => (a, 0),
        // The dividend comes back re-encoded (a pseudo-denormal
        // normalized), as from any arithmetic.
        (Val::Finite { exp, sig, .. }, Val::Inf(_)) => (soft::round_pack(F80, 64, env, sign, exp, sig), 0),
        (Val::Finite { exp: ea, sig: ma, .. }, Val::Finite { exp: eb, sig: mb, .. }) => {
            let norm = |e: i32, m: u128| {
                let s = m.leading_zeros().saturating_sub(64);
                (e - s as i32, m << s)
            };
            let (ea, ma) = norm(ea, ma);
            let (eb, mb) = norm(eb, mb);
            let d = i64::from(ea) - i64::from(eb);
            if d < 0 {
                // |a| < |b|: the quotient is 0 (FPREM1 may still round it
                // to 1 when |a| > |b|/2).
                if ieee && d == -1 && ma > mb {
                    let r = (mb << 1) - ma;
                    return (soft::round_pack(F80, 64, env, !sign, ea, r), FSW_C1);
                }
                return (soft::round_pack(F80, 64, env, sign, ea, ma), 0);
            }
            if d >= 64 {
                let n = ma << 63;
                let r = n % mb;
                return (soft::round_pack(F80, 64, env, sign, ea - 63, r), FSW_C2);
            }
            let n = ma << d as u32;
            let (mut q, mut r) = (n / mb, n % mb);
            let mut rsign = sign;
            if ieee && (r << 1 > mb || (r << 1 == mb && q & 1 == 1)) {
                r = mb - r;
                q += 1;
                rsign = !sign;
            }
            let cc = if q & 4 != 0 { FSW_C0 } else { 0 }
                | if q & 2 != 0 { FSW_C3 } else { 0 }
                | if q & 1 != 0 { FSW_C1 } else { 0 };
            if r == 0 {
                return (F80.zero(sign), cc);
            }
            (soft::round_pack(F80, 64, env, rsign, eb, r), cc)
        }
        _ => (F80.indefinite(), 0),
    }
}

/// FXTRACT: ST(0) becomes its unbiased exponent, then its significand
/// (with exponent 0) is pushed.
fn fxtract(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    note_pointers(cpu, insn);
    let (mut env, _) = x87_env(&cpu.regs.fpu);
    let fpu = &mut cpu.regs.fpu;
    let overflow = fpu.ftw & (1 << phys(fpu, 7)) != 0;
    let Some(v) = st(fpu, 0).filter(|_| !overflow) else {
        env.flags |= soft::IE;
        finish(fpu, &env, Some(overflow));
        if may_write(&env) {
            set_st(fpu, 0, F80.indefinite());
            set_top(fpu, top(fpu) + 7);
            set_st(fpu, 0, F80.indefinite());
        }
        return Ok(());
    };
    let (exp_part, sig_part) = if F80.is_unsupported(v) || F80.is_nan(v) {
        let n = soft::add(F80, 64, &mut env, soft::NanRule::X87, v, v, false);
        (n, n)
    } else {
        if F80.is_denormal(v) {
            env.flags |= soft::DE;
        }
        let sign = F80.sign(v);
        match soft::unpack(F80, v) {
            Val::Zero(_) => {
                env.flags |= soft::ZE;
                (F80.inf(true), v)
            }
            Val::Inf(_) => (F80.inf(false), v),
            Val::Finite { exp, sig, .. } => {
                let top_bit = 127 - sig.leading_zeros() as i32;
                let e = exp + top_bit;
                let sig_part = soft::round_pack(F80, 64, &mut env, sign, -top_bit, sig);
                (soft::from_int(F80, 64, &mut env, i64::from(e)), sig_part)
            }
            Val::Nan => (F80.indefinite(), F80.indefinite()),
        }
    };
    env.rounded_up = false;
    finish(fpu, &env, None);
    if may_write(&env) {
        set_st(fpu, 0, exp_part);
        set_top(fpu, top(fpu) + 7);
        set_st(fpu, 0, sig_part);
    }
    Ok(())
}

/// FFREE, FFREEP, FINCSTP, FDECSTP, FNOP.
fn fstack(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    note_pointers(cpu, insn);
    let fpu = &mut cpu.regs.fpu;
    match insn.mnemonic() {
        Mnemonic::Ffree | Mnemonic::Ffreep => {
            let r = phys(fpu, st_index(insn.op0_register()));
            fpu.ftw &= !(1 << r);
            if insn.mnemonic() == Mnemonic::Ffreep {
                pop(fpu);
            }
        }
        Mnemonic::Fincstp => {
            set_top(fpu, top(fpu) + 1);
            fpu.fsw &= !FSW_C1;
        }
        Mnemonic::Fdecstp => {
            set_top(fpu, top(fpu) + 7);
            fpu.fsw &= !FSW_C1;
        }
        _ => {}
    }
    Ok(())
}

/// FNINIT (FINIT is FWAIT + FNINIT).
fn fninit(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    if insn.mnemonic() == Mnemonic::Finit {
        check_pending(cpu)?;
    }
    reset_x87(&mut cpu.regs.fpu);
    Ok(())
}

/// FNCLEX: clears the exception flags, SF, ES and B.
fn fnclex(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    if insn.mnemonic() == Mnemonic::Fclex {
        check_pending(cpu)?;
    }
    cpu.regs.fpu.fsw &= !(0xff | FSW_B);
    Ok(())
}

/// FNSTSW AX / m16, FNSTCW m16.
fn fnstsw(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    if matches!(insn.mnemonic(), Mnemonic::Fstsw | Mnemonic::Fstcw) {
        check_pending(cpu)?;
    }
    let v =
        if matches!(insn.mnemonic(), Mnemonic::Fnstcw | Mnemonic::Fstcw) { cpu.regs.fpu.fcw } else { cpu.regs.fpu.fsw };
    if insn.op0_kind() == OpKind::Register {
        cpu.set_reg(Register::AX, u64::from(v));
        return Ok(());
    }
    let off = cpu.ea(insn);
    cpu.write_mem(ctx, cpu.mem_seg(insn), off, 2, u64::from(v))
}

/// FLDCW.
fn fldcw(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    let off = cpu.ea(insn);
    let v = cpu.read_mem(ctx, cpu.mem_seg(insn), off, 2)? as u16;
    cpu.regs.fpu.fcw = sanitize_fcw(v);
    sync_es(&mut cpu.regs.fpu);
    Ok(())
}

/// FWAIT: #NM when CR0.MP and CR0.TS, then pending exceptions.
fn fwait(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    let mp_ts = (Cr0::MP | Cr0::TS).bits();
    if cpu.regs.cr0 & mp_ts == mp_ts {
        return Err(Fault::nm());
    }
    check_pending(cpu)
}

/// Whether FSTENV/FSAVE use their real-mode layouts.
fn real_layout(cpu: &Cpu) -> bool {
    matches!(cpu.mode, Mode::Real | Mode::Vm86)
}

/// The FSTENV image (SDM vol. 1, figures 8-9 to 8-12): 28 bytes for a
/// 32-bit operand size, 14 for 16-bit; the real-mode layouts store the
/// pointers split with FOP.
fn env_image(cpu: &Cpu, len: usize) -> [u8; 28] {
    let f = &cpu.regs.fpu;
    let tags = full_tag_word(f);
    let (fip, fdp, fop) = (f.fip, f.fdp, u32::from(f.fop & 0x7ff));
    let mut b = [0u8; 28];
    if len == 14 {
        let words: [u16; 7] = if real_layout(cpu) {
            [
                f.fcw,
                f.fsw,
                tags,
                fip as u16,
                (fop | (((fip >> 16) as u32 & 0xf) << 12)) as u16,
                fdp as u16,
                (((fdp >> 16) & 0xf) << 12) as u16,
            ]
        } else {
            [f.fcw, f.fsw, tags, fip as u16, 0, fdp as u16, 0]
        };
        for (i, w) in words.iter().enumerate() {
            b[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
        }
    } else {
        let hi = 0xffff_0000u32;
        let dwords: [u32; 7] = if real_layout(cpu) {
            [
                hi | u32::from(f.fcw),
                hi | u32::from(f.fsw),
                hi | u32::from(tags),
                hi | (fip as u32 & 0xffff),
                fop | (((fip >> 16) as u32 & 0xffff) << 12),
                hi | (fdp as u32 & 0xffff),
                ((fdp >> 16) as u32 & 0xffff) << 12,
            ]
        } else {
            [hi | u32::from(f.fcw), hi | u32::from(f.fsw), hi | u32::from(tags), fip as u32, fop << 16, fdp as u32, hi]
        };
        for (i, d) in dwords.iter().enumerate() {
            b[4 * i..4 * i + 4].copy_from_slice(&d.to_le_bytes());
        }
    }
    b
}

/// Loads an FSTENV image.
fn load_env(cpu: &mut Cpu, b: &[u8]) {
    let real = real_layout(cpu);
    let f = &mut cpu.regs.fpu;
    let w = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let d = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    if b.len() == 14 {
        f.fcw = sanitize_fcw(w(0));
        f.fsw = w(2);
        f.ftw = abridged_tag_word(w(4));
        if real {
            f.fip = u64::from(w(6)) | (u64::from(w(8) >> 12) << 16);
            f.fop = w(8) & 0x7ff;
            f.fdp = u64::from(w(10)) | (u64::from(w(12) >> 12) << 16);
        } else {
            f.fip = u64::from(w(6));
            f.fdp = u64::from(w(10));
        }
    } else {
        f.fcw = sanitize_fcw(w(0));
        f.fsw = w(4);
        f.ftw = abridged_tag_word(w(8));
        if real {
            f.fip = u64::from(w(12)) | (u64::from(d(16) >> 12) << 16);
            f.fop = (d(16) & 0x7ff) as u16;
            f.fdp = u64::from(w(20)) | (u64::from(d(24) >> 12) << 16);
        } else {
            f.fip = u64::from(d(12));
            f.fop = ((d(16) >> 16) & 0x7ff) as u16;
            f.fdp = u64::from(d(20));
        }
    }
    sync_es(f);
}

/// FNSTENV/FSTENV and FNSAVE/FSAVE.
fn fnstenv(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let m = insn.mnemonic();
    if matches!(m, Mnemonic::Fstenv | Mnemonic::Fsave) {
        check_pending(cpu)?;
    }
    let total = insn.memory_size().size();
    let save = matches!(m, Mnemonic::Fnsave | Mnemonic::Fsave);
    let env_len = if total == 14 || total == 94 { 14 } else { 28 };
    let mut img = [0u8; 108];
    img[..env_len].copy_from_slice(&env_image(cpu, env_len)[..env_len]);
    let len = if save {
        for i in 0..8 {
            let r = phys(&cpu.regs.fpu, i);
            let v = read_phys(&cpu.regs.fpu, r).to_le_bytes();
            img[env_len + 10 * i..env_len + 10 * i + 10].copy_from_slice(&v[..10]);
        }
        env_len + 80
    } else {
        env_len
    };
    let off = cpu.ea(insn);
    // Environments align on their field size for #AC.
    let ac = if env_len == 14 { 2 } else { 4 };
    write_area(cpu, ctx, cpu.mem_seg(insn), off, &img[..len], Align::natural(ac))?;
    if save {
        reset_x87(&mut cpu.regs.fpu);
    } else {
        // FSTENV masks every exception after storing.
        cpu.regs.fpu.fcw |= 0x3f;
        sync_es(&mut cpu.regs.fpu);
    }
    Ok(())
}

/// FLDENV and FRSTOR.
fn fldenv(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    begin(cpu)?;
    let total = insn.memory_size().size();
    let env_len = if total == 14 || total == 94 { 14 } else { 28 };
    let mut img = [0u8; 108];
    let len = total.min(108);
    let off = cpu.ea(insn);
    let ac = if env_len == 14 { 2 } else { 4 };
    read_area(cpu, ctx, cpu.mem_seg(insn), off, &mut img[..len], Align::natural(ac))?;
    load_env(cpu, &img[..env_len]);
    if insn.mnemonic() == Mnemonic::Frstor {
        for i in 0..8 {
            let mut b = [0u8; 16];
            b[..10].copy_from_slice(&img[env_len + 10 * i..env_len + 10 * i + 10]);
            let r = phys(&cpu.regs.fpu, i);
            write_phys(&mut cpu.regs.fpu, r, u128::from_le_bytes(b));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------
// FXSAVE/FXRSTOR (SDM vol. 1, 10.5.1, table 10-2) and the XSAVE feature
// set (ch. 13).

/// Number of XMM registers the image holds in the current mode.
fn xmm_count(cpu: &Cpu) -> usize {
    if cpu.mode == Mode::Long {
        16
    } else {
        8
    }
}

/// The legacy (FXSAVE) image of the current state. `wide` selects the
/// REX.W layout with 64-bit FIP and FDP. Bytes 416-511 are not part of
/// it (callers never write them).
fn fx_image(cpu: &Cpu, wide: bool) -> [u8; 512] {
    let f = &cpu.regs.fpu;
    let mut b = [0u8; 512];
    b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
    b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
    b[4] = f.ftw;
    b[6..8].copy_from_slice(&(f.fop & 0x7ff).to_le_bytes());
    if wide {
        b[8..16].copy_from_slice(&f.fip.to_le_bytes());
        b[16..24].copy_from_slice(&f.fdp.to_le_bytes());
    } else {
        // FCS and FDS (bytes 12 and 20) are stored as zero.
        b[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
        b[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
    }
    b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
    b[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
    for i in 0..8 {
        let v = read_phys(f, phys(f, i));
        b[32 + 16 * i..48 + 16 * i].copy_from_slice(&v.to_le_bytes());
    }
    for (i, x) in f.xmm.iter().enumerate() {
        b[160 + 16 * i..176 + 16 * i].copy_from_slice(&x.to_le_bytes());
    }
    b
}

/// Loads the x87 part of a legacy image.
fn fx_load_x87(fpu: &mut FpuState, b: &[u8], wide: bool) {
    let w = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    fpu.fcw = sanitize_fcw(w(0));
    fpu.fsw = w(2);
    fpu.ftw = b[4];
    fpu.fop = w(6) & 0x7ff;
    if wide {
        fpu.fip = q(8);
        fpu.fdp = q(16);
    } else {
        fpu.fip = q(8) & 0xffff_ffff;
        fpu.fdp = q(16) & 0xffff_ffff;
    }
    for i in 0..8 {
        let mut s = [0u8; 16];
        s[..10].copy_from_slice(&b[32 + 16 * i..42 + 16 * i]);
        let r = phys(fpu, i);
        write_phys(fpu, r, u128::from_le_bytes(s));
    }
    sync_es(fpu);
}

/// Loads the XMM registers of a legacy image.
fn fx_load_xmm(fpu: &mut FpuState, b: &[u8], n: usize) {
    for (i, x) in fpu.xmm.iter_mut().enumerate().take(n) {
        *x = u128::from_le_bytes(b[160 + 16 * i..176 + 16 * i].try_into().unwrap_or([0; 16]));
    }
}

fn image_mxcsr(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[24], b[25], b[26], b[27]])
}

/// FXSAVE and FXSAVE64: #NM when CR0.TS or CR0.EM, #GP(0) unless
/// 16-byte aligned. MXCSR and the XMM registers are saved whatever
/// CR4.OSFXSR says (the SDM leaves that implementation-specific).
fn fxsave(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let wide = insn.mnemonic() == Mnemonic::Fxsave64;
    let img = fx_image(cpu, wide);
    let len = 160 + 16 * xmm_count(cpu);
    let off = cpu.ea(insn);
    let seg = cpu.mem_seg(insn);
    // The 512-byte area is checked as a whole, as the instruction does.
    let la = probe_area(cpu, ctx, seg, off, 512, Align::strict(16))?;
    write_at(cpu, ctx, la, 0, &img[..len])
}

/// FXRSTOR and FXRSTOR64: #GP(0) if MXCSR sets reserved bits.
fn fxrstor(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_x87(cpu)?;
    let wide = insn.mnemonic() == Mnemonic::Fxrstor64;
    let mut b = [0u8; 512];
    let off = cpu.ea(insn);
    read_area(cpu, ctx, cpu.mem_seg(insn), off, &mut b, Align::strict(16))?;
    let mxcsr = image_mxcsr(&b);
    if mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::gp0());
    }
    let n = xmm_count(cpu);
    let fpu = &mut cpu.regs.fpu;
    fx_load_x87(fpu, &b, wide);
    fpu.mxcsr = mxcsr;
    fx_load_xmm(fpu, &b, n);
    Ok(())
}

/// The XSAVE components Turtles implements (x87 and SSE).
pub const XCR0_SUPPORTED: u64 = 0b11;
/// Size of the standard-format XSAVE area for them (legacy region and
/// header): what CPUID.(EAX=0DH,ECX=0):EBX and ECX report.
pub const XSAVE_AREA_SIZE: usize = 576;

/// XSAVE family: #UD unless CPUID advertises XSAVE and CR4.OSXSAVE is set.
fn check_xsave(cpu: &Cpu) -> Result<(), Fault> {
    if !cpu.cpuid.features().xsave || cpu.regs.cr4 & Cr4::OSXSAVE.bits() == 0 {
        return Err(Fault::ud());
    }
    Ok(())
}

/// The requested-feature bitmap: XCR0 AND EDX:EAX.
fn rfbm(cpu: &Cpu) -> u64 {
    let mask = (cpu.regs.gpr[2] << 32) | (cpu.regs.gpr[0] & 0xffff_ffff);
    cpu.regs.xcr0 & mask
}

/// XINUSE (SDM vol. 1, 13.6): a component not in its initial
/// configuration. MXCSR does not count for SSE.
fn xinuse(fpu: &FpuState) -> u64 {
    let x87_init = fpu.fcw == 0x37f
        && fpu.fsw == 0
        && fpu.ftw == 0
        && fpu.fop == 0
        && fpu.fip == 0
        && fpu.fdp == 0
        && (0..8).all(|r| read_phys(fpu, r) == 0);
    let sse_init = fpu.xmm.iter().all(|&x| x == 0);
    u64::from(!x87_init) | (u64::from(!sse_init) << 1)
}

/// XSAVE and XSAVE64 (SDM vol. 1, 13.7): saves the components in RFBM
/// and updates their XSTATE_BV bits; other bits and the rest of the
/// header are left as they are.
fn xsave(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_xsave(cpu)?;
    if cpu.regs.cr0 & Cr0::TS.bits() != 0 {
        return Err(Fault::nm());
    }
    let wide = insn.mnemonic() == Mnemonic::Xsave64;
    let rfbm = rfbm(cpu);
    let off = cpu.ea(insn);
    let seg = cpu.mem_seg(insn);
    let la = probe_area(cpu, ctx, seg, off, XSAVE_AREA_SIZE, Align::strict(64))?;
    let mut h = [0u8; 8];
    read_area(cpu, ctx, seg, off.wrapping_add(512), &mut h, Align::natural(8))?;
    let xstate_bv = (u64::from_le_bytes(h) & !rfbm) | (xinuse(&cpu.regs.fpu) & rfbm);
    let img = fx_image(cpu, wide);
    if rfbm & 1 != 0 {
        write_at(cpu, ctx, la, 0, &img[..24])?;
        write_at(cpu, ctx, la, 32, &img[32..160])?;
    }
    if rfbm & 2 != 0 {
        let end = 160 + 16 * xmm_count(cpu);
        write_at(cpu, ctx, la, 24, &img[24..32])?;
        write_at(cpu, ctx, la, 160, &img[160..end])?;
    }
    write_at(cpu, ctx, la, 512, &xstate_bv.to_le_bytes())
}

/// XRSTOR and XRSTOR64, standard form (SDM vol. 1, 13.8): components in
/// RFBM are loaded when their XSTATE_BV bit is set and initialized when
/// it is clear; MXCSR is loaded whenever RFBM includes SSE. #GP(0) for
/// the compacted form (XSAVEC is not advertised), XSTATE_BV bits outside
/// XCR0, nonzero header bytes 23:8, or reserved MXCSR bits.
fn xrstor(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    check_xsave(cpu)?;
    if cpu.regs.cr0 & Cr0::TS.bits() != 0 {
        return Err(Fault::nm());
    }
    let wide = insn.mnemonic() == Mnemonic::Xrstor64;
    let rfbm = rfbm(cpu);
    let mut b = [0u8; XSAVE_AREA_SIZE];
    let off = cpu.ea(insn);
    read_area(cpu, ctx, cpu.mem_seg(insn), off, &mut b, Align::strict(64))?;
    let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
    let (xstate_bv, xcomp_bv, reserved) = (q(512), q(520), q(528));
    if xcomp_bv != 0 || reserved != 0 || xstate_bv & !cpu.regs.xcr0 != 0 {
        return Err(Fault::gp0());
    }
    let mxcsr = image_mxcsr(&b);
    if rfbm & 2 != 0 && mxcsr & !MXCSR_MASK != 0 {
        return Err(Fault::gp0());
    }
    let n = xmm_count(cpu);
    let fpu = &mut cpu.regs.fpu;
    if rfbm & 1 != 0 {
        if xstate_bv & 1 != 0 {
            fx_load_x87(fpu, &b, wide);
        } else {
            reset_x87(fpu);
            fpu.st = [[0; 16]; 8];
        }
    }
    if rfbm & 2 != 0 {
        fpu.mxcsr = mxcsr;
        if xstate_bv & 2 != 0 {
            fx_load_xmm(fpu, &b, n);
        } else {
            fpu.xmm.iter_mut().take(n).for_each(|x| *x = 0);
        }
    }
    Ok(())
}

/// XGETBV: EDX:EAX = XCR0 for ECX = 0; #GP(0) for any other XCR
/// (XGETBV with ECX = 1 is not advertised).
fn xgetbv(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    check_xsave(cpu)?;
    if cpu.regs.gpr[1] & 0xffff_ffff != 0 {
        return Err(Fault::gp0());
    }
    let v = cpu.regs.xcr0;
    cpu.regs.gpr[0] = v & 0xffff_ffff;
    cpu.regs.gpr[2] = v >> 32;
    Ok(())
}

/// Whether `v` is a valid XCR0 for a processor supporting `supported`
/// (SDM vol. 1, 13.3 "Enabling the XSAVE Feature Set and XSAVE-Enabled
/// Features"; vol. 2, "XSETBV").
pub fn xcr0_valid(v: u64, supported: u64) -> bool {
    let bit = |i: u32| v & (1 << i) != 0;
    let avx512 = v & 0xe0;
    v & !supported == 0
        && bit(0)
        && (!bit(2) || bit(1))
        && bit(3) == bit(4)
        && (avx512 == 0 || (avx512 == 0xe0 && bit(2)))
}

/// XSETBV: CPL 0 only; ECX must be 0; the value must be a valid XCR0
/// whose bits CPUID.(EAX=0DH,ECX=0):EDX:EAX reports.
fn xsetbv(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    check_xsave(cpu)?;
    if cpu.cpl != 0 {
        return Err(Fault::gp0());
    }
    // XSETBV exits unconditionally in non-root operation (SDM vol. 3C,
    // 26.1.2), after the #UD and CPL checks but before the checks of ECX
    // and the value (26.1.1).
    if cpu.non_root {
        return Err(cpu.exit_insn(vmx::ExitReason::Xsetbv, 0));
    }
    if cpu.regs.gpr[1] & 0xffff_ffff != 0 {
        return Err(Fault::gp0());
    }
    let v = (cpu.regs.gpr[2] << 32) | (cpu.regs.gpr[0] & 0xffff_ffff);
    let leaf = cpu.cpuid.raw(0xd, 0);
    let supported = (u64::from(leaf[3]) << 32) | u64::from(leaf[0]);
    if !xcr0_valid(v, supported & XCR0_SUPPORTED) {
        return Err(Fault::gp0());
    }
    cpu.regs.xcr0 = v;
    Ok(())
}

/// Handler for an x87, FXSAVE or XSAVE-family mnemonic.
pub fn select(m: Mnemonic, _insn: &Instruction) -> Option<crate::exec::Handler> {
    use Mnemonic as M;
    Some(match m {
        M::Fld | M::Fild | M::Fld1 | M::Fldz | M::Fldpi | M::Fldl2e | M::Fldl2t | M::Fldlg2 | M::Fldln2 => fld,
        M::Fst | M::Fstp | M::Fist | M::Fistp => fst,
        M::Fadd
        | M::Faddp
        | M::Fiadd
        | M::Fsub
        | M::Fsubp
        | M::Fisub
        | M::Fsubr
        | M::Fsubrp
        | M::Fisubr
        | M::Fmul
        | M::Fmulp
        | M::Fimul
        | M::Fdiv
        | M::Fdivp
        | M::Fidiv
        | M::Fdivr
        | M::Fdivrp
        | M::Fidivr => farith,
        M::Fchs | M::Fabs | M::Fsqrt | M::Frndint => funary,
        M::Fxch => fxch,
        M::Fcom | M::Fcomp | M::Fcompp | M::Fucom | M::Fucomp | M::Fucompp | M::Ficom | M::Ficomp | M::Ftst => fcom,
        M::Fcomi | M::Fcomip | M::Fucomi | M::Fucomip => fcomi,
        M::Fxam => fxam,
        M::Fcmovb | M::Fcmove | M::Fcmovbe | M::Fcmovu | M::Fcmovnb | M::Fcmovne | M::Fcmovnbe | M::Fcmovnu => fcmov,
        M::Fscale => fscale,
        M::Fprem | M::Fprem1 => fprem,
        M::Fxtract => fxtract,
        M::Ffree | M::Ffreep | M::Fincstp | M::Fdecstp | M::Fnop => fstack,
        M::Fninit | M::Finit => fninit,
        M::Fnclex | M::Fclex => fnclex,
        M::Fnstsw | M::Fstsw | M::Fnstcw | M::Fstcw => fnstsw,
        M::Fldcw => fldcw,
        M::Wait => fwait,
        M::Fnstenv | M::Fstenv | M::Fnsave | M::Fsave => fnstenv,
        M::Fldenv | M::Frstor => fldenv,
        M::Fxsave | M::Fxsave64 => fxsave,
        M::Fxrstor | M::Fxrstor64 => fxrstor,
        M::Xsave | M::Xsave64 => xsave,
        M::Xrstor | M::Xrstor64 => xrstor,
        M::Xgetbv => xgetbv,
        M::Xsetbv => xsetbv,
        _ => return None,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    //! x87, FXSAVE/FXRSTOR and XSAVE tests: raw instruction bytes (their
    //! assembly in the comments) run on a test machine, and the soft-float
    //! core checked against the host's IEEE arithmetic.

    use super::soft::{self, Env, NanRule, F32, F64, F80};
    use super::*;
    use crate::testutil::{Machine, CODE, DATA};

    /// Where every IDT vector of [`with_idt`] points: a HLT.
    pub(crate) const HANDLER: u64 = 0x6000;

    /// Installs a GDT (64-bit code at 0x8) and an IDT whose every
    /// exception vector points at [`HANDLER`].
    pub(crate) fn with_idt(m: &mut Machine) {
        m.mem.write_u64(0x4000, 0).unwrap();
        m.mem.write_u64(0x4008, 0x00af_9b00_0000_ffff).unwrap();
        m.mem.write_u64(0x4010, 0x00cf_9300_0000_ffff).unwrap();
        m.cpu.regs.gdtr = crate::DescTable { base: 0x4000, limit: 0x17 };
        for v in 0..32u64 {
            let lo = (HANDLER & 0xffff) | (0x8 << 16) | (0x8e00u64 << 32) | ((HANDLER & 0xffff_0000) << 32);
            m.mem.write_u64(0x5000 + v * 16, lo).unwrap();
            m.mem.write_u64(0x5008 + v * 16, HANDLER >> 32).unwrap();
        }
        m.cpu.regs.idtr = crate::DescTable { base: 0x5000, limit: 0x1ff };
        m.mem.write(HANDLER, &[0xf4]).unwrap();
    }

    /// Runs until the exception handler halts; returns the vector, error
    /// code and reported RIP of the single exception raised.
    pub(crate) fn expect_fault(m: &mut Machine) -> (u8, Option<u32>, u64) {
        with_idt(m);
        m.run_to_hlt();
        assert_eq!(m.cpu.regs.rip, HANDLER + 1, "the handler ran");
        assert_eq!(m.cpu.stats.exceptions.iter().sum::<u64>(), 1, "exactly one exception");
        let (f, rip) = m.cpu.stats.last_exception.expect("an exception");
        (f.vector(), f.error_code(), rip)
    }

    /// Makes every page user-accessible and runs the code at CPL 3 (RSP0
    /// for the exception handler is 0x70000).
    pub(crate) fn to_user(m: &mut Machine) {
        m.mem.write_u64(0x1000, 0x2000 | 7).unwrap();
        m.mem.write_u64(0x2000, 0x3000 | 7).unwrap();
        for i in 0..512u64 {
            m.mem.write_u64(0x3000 + i * 8, (i << 21) | 0x87).unwrap();
        }
        m.mem.write_u64(4, 0x70000).unwrap();
        let cs = &mut m.cpu.regs.seg[x86::seg::sreg::CS];
        cs.selector = 0x2b;
        cs.ar |= 3 << x86::seg::ar::DPL_SHIFT;
        m.cpu.state_changed();
    }

    /// A deterministic generator (xorshift64*).
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }

        /// A floating-point encoding of `f` biased toward the interesting
        /// corners: zeros, infinities, NaNs, denormals, the ends of the
        /// exponent range, values near 1, and exactly representable
        /// integers.
        pub(crate) fn float(&mut self, double: bool) -> u64 {
            let (ebits, fbits) = if double { (11, 52) } else { (8, 23) };
            let r = self.next();
            let sign = (r >> 63) << (ebits + fbits);
            let frac = self.next() & ((1 << fbits) - 1);
            let emax = (1u64 << ebits) - 1;
            let exp = match r % 10 {
                0 => 0,
                1 => emax,
                2 => 1 + (r >> 8) % 3,
                3 => emax - 1 - (r >> 8) % 3,
                4..=6 => (emax >> 1) - 4 + (r >> 8) % 8,
                _ => (r >> 8) % emax,
            };
            let frac = match (r >> 20) % 6 {
                0 => 0,
                1 => frac & !((1 << (fbits - 4)) - 1),
                2 => 1 << ((r >> 30) % fbits),
                _ => frac,
            };
            sign | (exp << fbits) | frac
        }
    }

    fn nearest() -> Env {
        Env::from_mxcsr(0x1f80)
    }

    #[test]
    fn soft_float_matches_host_arithmetic() {
        // The host's +, -, *, / and sqrt are IEEE round-to-nearest; only NaN
        // payloads are unspecified in Rust, so NaN results are compared as
        // "some NaN".
        let mut rng = Rng(0x1234_5678_9abc_def1);
        for _ in 0..200_000 {
            let (a, b) = (rng.float(true), rng.float(true));
            let (x, y) = (f64::from_bits(a), f64::from_bits(b));
            let cases = [
                (soft::add(F64, 53, &mut nearest(), NanRule::Sse, a.into(), b.into(), false), x + y),
                (soft::add(F64, 53, &mut nearest(), NanRule::Sse, a.into(), b.into(), true), x - y),
                (soft::mul(F64, 53, &mut nearest(), NanRule::Sse, a.into(), b.into()), x * y),
                (soft::div(F64, 53, &mut nearest(), NanRule::Sse, a.into(), b.into()), x / y),
                (soft::sqrt(F64, 53, &mut nearest(), a.into()), x.sqrt()),
                (
                    soft::convert(F32, F64, 53, &mut nearest(), u128::from(a as u32), true),
                    f64::from(f32::from_bits(a as u32)),
                ),
            ];
            for (i, (got, want)) in cases.into_iter().enumerate() {
                if want.is_nan() {
                    assert!(F64.is_nan(got), "op {i} {a:#x} {b:#x}: want NaN, got {got:#x}");
                } else {
                    assert_eq!(got as u64, want.to_bits(), "op {i} {a:#x} {b:#x}");
                }
            }
            let narrowed = soft::convert(F64, F32, 24, &mut nearest(), a.into(), true);
            if !x.is_nan() {
                assert_eq!(narrowed as u32, (x as f32).to_bits(), "narrow {a:#x}");
            }
            if x.is_finite() && x.abs() < 9.2e18 {
                assert_eq!(
                    soft::to_int(F64, &mut nearest(), a.into(), 64, soft::RC_ZERO),
                    x as i64 as u64,
                    "trunc {a:#x}"
                );
            }
            let i = rng.next() as i64 >> (rng.next() % 64);
            assert_eq!(soft::from_int(F64, 53, &mut nearest(), i) as u64, (i as f64).to_bits(), "from {i}");
            assert_eq!(soft::from_int(F32, 24, &mut nearest(), i) as u32, (i as f32).to_bits(), "from {i}");
            let c = soft::compare(F64, &mut nearest(), a.into(), b.into(), false);
            let want = match x.partial_cmp(&y) {
                None => soft::Cmp::Unordered,
                Some(core::cmp::Ordering::Less) => soft::Cmp::Less,
                Some(core::cmp::Ordering::Equal) => soft::Cmp::Equal,
                Some(core::cmp::Ordering::Greater) => soft::Cmp::Greater,
            };
            assert_eq!(c, want, "compare {a:#x} {b:#x}");
            let (a, b) = (rng.float(false) as u32, rng.float(false) as u32);
            let (x, y) = (f32::from_bits(a), f32::from_bits(b));
            let cases = [
                (soft::add(F32, 24, &mut nearest(), NanRule::Sse, a.into(), b.into(), false), x + y),
                (soft::mul(F32, 24, &mut nearest(), NanRule::Sse, a.into(), b.into()), x * y),
                (soft::div(F32, 24, &mut nearest(), NanRule::Sse, a.into(), b.into()), x / y),
                (soft::sqrt(F32, 24, &mut nearest(), a.into()), x.sqrt()),
            ];
            for (i, (got, want)) in cases.into_iter().enumerate() {
                if want.is_nan() {
                    assert!(F32.is_nan(got), "f32 op {i} {a:#x} {b:#x}");
                } else {
                    assert_eq!(got as u32, want.to_bits(), "f32 op {i} {a:#x} {b:#x}");
                }
            }
        }
    }

    #[test]
    fn soft_float_rounding_control_flags_and_special_cases() {
        let one = u128::from(1.0f32.to_bits());
        let three = u128::from(3.0f32.to_bits());
        let env = |rc: u8| Env { rc, ..nearest() };
        // 1/3 = 0x3eaaaaab to nearest (rounded up), 0x3eaaaaaa down/toward 0.
        for (rc, want) in [(0, 0x3eaa_aaab), (1, 0x3eaa_aaaa), (2, 0x3eaa_aaab), (3, 0x3eaa_aaaa)] {
            let mut e = env(rc);
            assert_eq!(soft::div(F32, 24, &mut e, NanRule::Sse, one, three), want, "rc {rc}");
            assert_eq!(e.flags, soft::PE);
        }
        // Overflow: infinity to nearest, the largest finite value toward zero.
        let max = u128::from(f32::MAX.to_bits());
        let mut e = env(0);
        assert_eq!(soft::add(F32, 24, &mut e, NanRule::Sse, max, max, false), u128::from(f32::INFINITY.to_bits()));
        assert_eq!(e.flags, soft::OE | soft::PE);
        let mut e = env(3);
        assert_eq!(soft::add(F32, 24, &mut e, NanRule::Sse, max, max, false), max);
        // Underflow: the smallest normal halved is exact (no UE when masked),
        // a third of it is not.
        let min = u128::from(f32::MIN_POSITIVE.to_bits());
        let two = u128::from(2.0f32.to_bits());
        let mut e = env(0);
        assert_eq!(soft::div(F32, 24, &mut e, NanRule::Sse, min, two), 0x0040_0000);
        assert_eq!(e.flags, 0);
        let mut e = env(0);
        soft::div(F32, 24, &mut e, NanRule::Sse, min, three);
        assert_eq!(e.flags, soft::UE | soft::PE);
        // FTZ flushes the tiny result; DAZ reads denormal operands as zero.
        let mut e = Env { ftz: true, ..env(0) };
        assert_eq!(soft::div(F32, 24, &mut e, NanRule::Sse, min, three), 0);
        assert_eq!(e.flags, soft::UE | soft::PE);
        let mut e = Env { daz: true, ..env(0) };
        assert_eq!(soft::add(F32, 24, &mut e, NanRule::Sse, 1, 0, false), 0);
        assert_eq!(e.flags, 0);
        let mut e = env(0);
        assert_eq!(soft::add(F32, 24, &mut e, NanRule::Sse, 1, 0, false), 1);
        assert_eq!(e.flags, soft::DE);
        // Invalid operations give the default NaN; an SNaN operand is
        // quieted and signals.
        let inf = u128::from(f32::INFINITY.to_bits());
        let mut e = env(0);
        assert_eq!(soft::add(F32, 24, &mut e, NanRule::Sse, inf, inf, true), 0xffc0_0000);
        assert_eq!(e.flags, soft::IE);
        let mut e = env(0);
        assert_eq!(soft::mul(F32, 24, &mut e, NanRule::Sse, 0x7f80_0001, one), 0x7fc0_0001);
        assert_eq!(e.flags, soft::IE);
        // SSE takes the first NaN operand, the x87 rule the larger significand.
        let mut e = env(0);
        assert_eq!(soft::add(F32, 24, &mut e, NanRule::Sse, 0x7fc0_0001, 0x7fc0_0002, false), 0x7fc0_0001);
        assert_eq!(soft::add(F32, 24, &mut e, NanRule::X87, 0x7fc0_0001, 0x7fc0_0002, false), 0x7fc0_0002);
        // x - x is +0, except -0 when rounding down.
        assert_eq!(soft::add(F32, 24, &mut env(0), NanRule::Sse, one, one, true), 0);
        assert_eq!(soft::add(F32, 24, &mut env(1), NanRule::Sse, one, one, true), 0x8000_0000);
        // Division by zero.
        let mut e = env(0);
        assert_eq!(soft::div(F32, 24, &mut e, NanRule::Sse, one, 0x8000_0000), 0xff80_0000);
        assert_eq!(e.flags, soft::ZE);
        // Integer conversions: out of range gives the indefinite.
        let mut e = env(0);
        assert_eq!(soft::to_int(F32, &mut e, u128::from(3e9f32.to_bits()), 32, 0), 0x8000_0000);
        assert_eq!(e.flags, soft::IE);
        assert_eq!(
            soft::to_int(F32, &mut env(0), u128::from((-2.5f32).to_bits()), 32, 0),
            (-2i64) as u64 & 0xffff_ffff
        );
        assert_eq!(
            soft::to_int(F32, &mut env(1), u128::from((-2.5f32).to_bits()), 32, 1),
            (-3i64) as u64 & 0xffff_ffff
        );
        assert_eq!(soft::to_int(F32, &mut env(0), u128::from((-2147483648f32).to_bits()), 32, 0), 0x8000_0000);
        // Extended precision: 1/3 and the 53-bit precision control.
        let one80 = F80.one();
        let three80 = soft::from_int(F80, 64, &mut env(0), 3);
        assert_eq!(soft::div(F80, 64, &mut env(0), NanRule::X87, one80, three80), 0x3ffd_aaaa_aaaa_aaaa_aaab);
        assert_eq!(soft::div(F80, 53, &mut env(0), NanRule::X87, one80, three80), 0x3ffd_aaaa_aaaa_aaaa_a800);
        assert_eq!(soft::sqrt(F80, 64, &mut env(0), 0x4000_8000_0000_0000_0000), 0x3fff_b504_f333_f9de_6484);
    }

    fn run(code: &[u8]) -> Machine {
        let mut m = Machine::long64(code);
        m.run_to_hlt();
        m
    }

    fn read80(m: &Machine, a: u64) -> u128 {
        let mut b = [0u8; 16];
        m.mem.read(a, &mut b[..10]).unwrap();
        u128::from_le_bytes(b)
    }

    fn st_phys(m: &Machine, r: usize) -> u128 {
        read_phys(&m.cpu.regs.fpu, r)
    }

    fn top_of(m: &Machine) -> usize {
        top(&m.cpu.regs.fpu)
    }

    #[test]
    fn fld_fadd_fstp_double() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xdd, 0x03, // fld qword ptr [rbx]
            0xdc, 0x43, 0x08, // fadd qword ptr [rbx+8]
            0xdd, 0x5b, 0x10, // fstp qword ptr [rbx+16]
            0xdf, 0xe0, // fnstsw ax
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u64(DATA, 1.5f64.to_bits()).unwrap();
        m.mem.write_u64(DATA + 8, 2.25f64.to_bits()).unwrap();
        m.run_to_hlt();
        assert_eq!(f64::from_bits(m.mem.read_u64(DATA + 16).unwrap()), 3.75);
        assert_eq!(m.gpr(0) & 0xffff, 0, "no flags, TOP back to 0");
        assert_eq!(m.cpu.regs.fpu.ftw, 0);
        // FIP names the last non-control instruction, FDP its operand.
        assert_eq!(m.cpu.regs.fpu.fip, CODE + 7 + 2 + 3);
        assert_eq!(m.cpu.regs.fpu.fdp, DATA + 16);
    }

    #[test]
    fn division_is_extended_precision_and_honours_precision_control() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xd9, 0xe8, // fld1
            0xdb, 0x03, // fild dword ptr [rbx]
            0xde, 0xf9, // fdivp st(1), st
            0xdf, 0xe0, // fnstsw ax
            0xdb, 0x7b, 0x10, // fstp tbyte ptr [rbx+16]
            0xd9, 0x6b, 0x04, // fldcw word ptr [rbx+4]
            0xd9, 0xe8, // fld1
            0xdb, 0x03, // fild dword ptr [rbx]
            0xde, 0xf9, // fdivp st(1), st
            0xdb, 0x7b, 0x20, // fstp tbyte ptr [rbx+32]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u32(DATA, 3).unwrap();
        m.mem.write_u32(DATA + 4, 0x027f).unwrap();
        m.run_to_hlt();
        assert_eq!(read80(&m, DATA + 16), 0x3ffd_aaaa_aaaa_aaaa_aaab);
        assert_eq!(read80(&m, DATA + 32), 0x3ffd_aaaa_aaaa_aaaa_a800);
        // PE, C1 (rounded up), TOP = 7 after the pop.
        assert_eq!(m.gpr(0) & 0xffff, 0x20 | 0x200 | (7 << 11));
    }

    #[test]
    fn constants_and_stack_tags() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xdb, 0xe3, // fninit
            0xd9, 0xe8, // fld1
            0xd9, 0xee, // fldz
            0xd9, 0xeb, // fldpi
            0xd9, 0x33, // fnstenv [rbx]
            0xf4, // hlt
        ];
        let m = run(&code);
        assert_eq!(top_of(&m), 5);
        assert_eq!(m.cpu.regs.fpu.ftw, 0xe0);
        assert_eq!(st_phys(&m, 7), 0x3fff_8000_0000_0000_0000);
        assert_eq!(st_phys(&m, 6), 0);
        assert_eq!(st_phys(&m, 5), 0x4000_c90f_daa2_2168_c235);
        // Full tag word: R7 valid (00), R6 zero (01), R5 valid, the rest
        // empty (11); FSTENV's 28-byte protected-mode layout.
        let mut b = [0u8; 28];
        m.mem.read(DATA, &mut b).unwrap();
        let d = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        assert_eq!(d(0), 0xffff_037f);
        assert_eq!(d(4), 0xffff_0000 | (5 << 11));
        assert_eq!(d(8), 0xffff_0000 | 0x13ff);
        assert_eq!(d(12) as u64, CODE + 7 + 2 + 2 + 2, "FIP: the FLDPI");
        assert_eq!(d(16), 0, "FCS and FOP");
        assert_eq!(d(20), 0, "FDP");
        assert_eq!(d(24), 0xffff_0000);
    }

    #[test]
    fn constants_follow_the_rounding_control() {
        for (fcw, pi, l2t) in [(0x037f, 0xc235u16, 0x8afeu16), (0x077f, 0xc234, 0x8afe), (0x0b7f, 0xc235, 0x8aff)] {
            let code = [
                0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
                0xd9, 0x2b, // fldcw [rbx]
                0xd9, 0xeb, // fldpi
                0xd9, 0xe9, // fldl2t
                0xf4, // hlt
            ];
            let mut m = Machine::long64(&code);
            m.mem.write_u32(DATA, fcw).unwrap();
            m.run_to_hlt();
            assert_eq!(st_phys(&m, 7) as u16, pi, "fcw {fcw:#x}");
            assert_eq!(st_phys(&m, 6) as u16, l2t, "fcw {fcw:#x}");
        }
    }

    #[test]
    fn fist_rounds_by_the_control_word() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xdd, 0x03, // fld qword ptr [rbx]
            0xdb, 0x53, 0x10, // fist dword ptr [rbx+16]
            0xd9, 0x6b, 0x08, // fldcw word ptr [rbx+8]
            0xdb, 0x53, 0x14, // fist dword ptr [rbx+20]
            0xd9, 0x6b, 0x0a, // fldcw word ptr [rbx+10]
            0xd9, 0xe0, // fchs
            0xdf, 0x5b, 0x18, // fistp word ptr [rbx+24]
            0xdd, 0x43, 0x20, // fld qword ptr [rbx+32]
            0xdb, 0x5b, 0x1c, // fistp dword ptr [rbx+28]
            0xdf, 0xe0, // fnstsw ax
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u64(DATA, 2.5f64.to_bits()).unwrap();
        m.mem.write_u32(DATA + 8, 0x077f_0b7f).unwrap();
        m.mem.write_u64(DATA + 32, 1e10f64.to_bits()).unwrap();
        m.run_to_hlt();
        assert_eq!(m.mem.read_u32(DATA + 16).unwrap(), 2, "to nearest even");
        assert_eq!(m.mem.read_u32(DATA + 20).unwrap(), 3, "up");
        assert_eq!(m.mem.read_u32(DATA + 24).unwrap() & 0xffff, 0xfffd, "-2.5 down");
        assert_eq!(m.mem.read_u32(DATA + 28).unwrap(), 0x8000_0000, "indefinite");
        assert_eq!(m.gpr(0) & 0x3f, 0x21, "IE and PE");
        assert_eq!(m.cpu.regs.fpu.ftw, 0);
    }

    #[test]
    fn comparisons_set_condition_codes_and_eflags() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xdd, 0x03, // fld qword ptr [rbx]
            0xdd, 0x43, 0x08, // fld qword ptr [rbx+8]
            0xdb, 0xf1, // fcomi st, st(1)
            0x9c, // pushfq
            0x41, 0x58, // pop r8
            0xd8, 0xd1, // fcom st(1)
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc1, // mov r9, rax
            0xd9, 0xc9, // fxch st(1)
            0xdd, 0xe1, // fucom st(1)
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc2, // mov r10, rax
            0xdd, 0x43, 0x10, // fld qword ptr [rbx+16]
            0xdf, 0xe9, // fucomip st, st(1)
            0x9c, // pushfq
            0x41, 0x5b, // pop r11
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc4, // mov r12, rax
            0xdd, 0x43, 0x10, // fld qword ptr [rbx+16]
            0xdf, 0xf1, // fcomip st, st(1)
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc5, // mov r13, rax
            0xd9, 0xe4, // ftst
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc6, // mov r14, rax
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u64(DATA, 1.0f64.to_bits()).unwrap();
        m.mem.write_u64(DATA + 8, 2.0f64.to_bits()).unwrap();
        m.mem.write_u64(DATA + 16, f64::NAN.to_bits()).unwrap();
        m.run_to_hlt();
        let (c0, c2, c3) = (0x100, 0x400, 0x4000);
        assert_eq!(m.gpr(8) & 0x8d5, 0, "2 > 1: ZF = PF = CF = 0, OF/SF/AF clear");
        assert_eq!(m.gpr(9) & (c0 | c2 | c3), 0, "FCOM: greater");
        assert_eq!(m.gpr(10) & (c0 | c2 | c3), c0, "FUCOM: less");
        assert_eq!(m.gpr(11) & 0x8d5, 0x45, "unordered: ZF PF CF");
        assert_eq!(m.gpr(12) & 1, 0, "FUCOMIP does not signal on a QNaN");
        assert_eq!(m.gpr(13) & 1, 1, "FCOMIP does");
        assert_eq!(m.gpr(14) & (c0 | c2 | c3), 0, "FTST: 1.0 > 0");
        assert_eq!(top_of(&m), 6);
    }

    #[test]
    fn fxam_classifies() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xd9, 0xee, // fldz
            0xd9, 0xe5, // fxam
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc0, // mov r8, rax
            0xd9, 0xe8, // fld1
            0xd9, 0xe0, // fchs
            0xd9, 0xe5, // fxam
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc1, // mov r9, rax
            0xdd, 0x03, // fld qword ptr [rbx]
            0xd9, 0xe5, // fxam
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc2, // mov r10, rax
            0xdd, 0xc0, // ffree st(0)
            0xd9, 0xe5, // fxam
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc3, // mov r11, rax
            0xdd, 0x43, 0x08, // fld qword ptr [rbx+8]
            0xd9, 0xe5, // fxam
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc4, // mov r12, rax
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u64(DATA, f64::NAN.to_bits()).unwrap();
        m.mem.write_u64(DATA + 8, f64::NEG_INFINITY.to_bits()).unwrap();
        m.run_to_hlt();
        let cc = |r: usize| m.gpr(r) & 0x4700;
        assert_eq!(cc(8), 0x4000, "zero");
        assert_eq!(cc(9), 0x0600, "negative normal");
        assert_eq!(cc(10), 0x0100, "NaN");
        assert_eq!(cc(11) & 0x4500, 0x4100, "empty");
        assert_eq!(cc(12), 0x0700, "negative infinity");
    }

    #[test]
    fn unary_and_special_operations() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xdb, 0x03, // fild dword ptr [rbx]
            0xd9, 0xfa, // fsqrt
            0xdb, 0x7b, 0x10, // fstp tbyte ptr [rbx+16]
            0xdd, 0x43, 0x08, // fld qword ptr [rbx+8]
            0xd9, 0xfc, // frndint
            0xdb, 0x7b, 0x20, // fstp tbyte ptr [rbx+32]
            0xdd, 0x43, 0x08, // fld qword ptr [rbx+8]
            0xd9, 0xe1, // fabs
            0xd9, 0xe0, // fchs
            0xdb, 0x7b, 0x30, // fstp tbyte ptr [rbx+48]
            0xdb, 0x43, 0x04, // fild dword ptr [rbx+4]
            0xdb, 0x03, // fild dword ptr [rbx]
            0xd9, 0xfd, // fscale
            0xd9, 0xf4, // fxtract
            0xdb, 0x7b, 0x40, // fstp tbyte ptr [rbx+64]
            0xdb, 0x7b, 0x50, // fstp tbyte ptr [rbx+80]
            0xdd, 0xd8, // fstp st(0)
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u32(DATA, 2).unwrap();
        m.mem.write_u32(DATA + 4, 3).unwrap();
        m.mem.write_u64(DATA + 8, 2.5f64.to_bits()).unwrap();
        m.run_to_hlt();
        assert_eq!(read80(&m, DATA + 16), 0x3fff_b504_f333_f9de_6484, "sqrt 2");
        assert_eq!(read80(&m, DATA + 32), 0x4000_8000_0000_0000_0000, "rint 2.5 = 2");
        assert_eq!(read80(&m, DATA + 48), 0xc000_a000_0000_0000_0000, "-|2.5|");
        // 2 * 2^3 = 16 = 1.0 * 2^4: FXTRACT leaves the significand on top.
        assert_eq!(read80(&m, DATA + 64), 0x3fff_8000_0000_0000_0000);
        assert_eq!(read80(&m, DATA + 80), 0x4001_8000_0000_0000_0000, "exponent 4");
        assert_eq!(m.cpu.regs.fpu.ftw, 0);
    }

    #[test]
    fn partial_remainders() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xdd, 0x43, 0x08, // fld qword ptr [rbx+8]
            0xdd, 0x03, // fld qword ptr [rbx]
            0xd9, 0xf8, // fprem
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc0, // mov r8, rax
            0xdd, 0x5b, 0x10, // fstp qword ptr [rbx+16]
            0xdd, 0x03, // fld qword ptr [rbx]
            0xd9, 0xf5, // fprem1
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc1, // mov r9, rax
            0xdd, 0x5b, 0x18, // fstp qword ptr [rbx+24]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u64(DATA, 7.5f64.to_bits()).unwrap();
        m.mem.write_u64(DATA + 8, 2.0f64.to_bits()).unwrap();
        m.run_to_hlt();
        assert_eq!(f64::from_bits(m.mem.read_u64(DATA + 16).unwrap()), 1.5);
        assert_eq!(m.gpr(8) & 0x4700, 0x4200, "quotient 3: C3 C1");
        assert_eq!(f64::from_bits(m.mem.read_u64(DATA + 24).unwrap()), -0.5);
        assert_eq!(m.gpr(9) & 0x4700, 0x0100, "quotient 4: C0");
    }

    #[test]
    fn fcmov_and_fxch() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xd9, 0xe8, // fld1
            0xd9, 0xee, // fldz
            0xf9, // stc
            0xdb, 0xc1, // fcmovnb st, st(1)
            0xdd, 0x13, // fst qword ptr [rbx]
            0xda, 0xc1, // fcmovb st, st(1)
            0xdd, 0x53, 0x08, // fst qword ptr [rbx+8]
            0xd9, 0xee, // fldz
            0xd9, 0xc9, // fxch st(1)
            0xdd, 0x5b, 0x10, // fstp qword ptr [rbx+16]
            0xf4, // hlt
        ];
        let m = run(&code);
        assert_eq!(m.mem.read_u64(DATA).unwrap(), 0, "not below: ST(0) kept");
        assert_eq!(f64::from_bits(m.mem.read_u64(DATA + 8).unwrap()), 1.0, "below: ST(1) moved");
        assert_eq!(f64::from_bits(m.mem.read_u64(DATA + 16).unwrap()), 1.0, "exchanged");
        assert_eq!(st_phys(&m, 6), 0, "the zero went to ST(1), now ST(0)");
    }

    #[test]
    fn stack_overflow_and_underflow_are_masked_invalid_operations() {
        let mut code = vec![0xd9, 0xe8]; // fld1
        code.extend_from_slice(&[0xd9, 0xe8].repeat(8));
        code.extend_from_slice(&[
            0xdf, 0xe0, // fnstsw ax
            0x49, 0x89, 0xc0, // mov r8, rax
            0xdb, 0xe3, // fninit
            0xd9, 0xe8, // fld1
            0xd8, 0xc1, // fadd st, st(1)
            0xdf, 0xe0, // fnstsw ax
            0xf4, // hlt
        ]);
        let m = run(&code);
        // The ninth push: IE, SF, C1 (overflow); the pushed value is the
        // indefinite.
        assert_eq!(m.gpr(8) & 0x2ff, 0x241);
        // Adding an empty register: IE, SF, C1 clear (underflow).
        assert_eq!(m.gpr(0) & 0x2ff, 0x41);
        assert_eq!(st_phys(&m, 7), F80.indefinite());
    }

    #[test]
    fn control_word_status_word_and_init() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xd9, 0x2b, // fldcw word ptr [rbx]
            0xd9, 0x7b, 0x02, // fnstcw word ptr [rbx+2]
            0xd9, 0xe8, // fld1
            0xd9, 0xee, // fldz
            0xde, 0xf9, // fdivp st(1), st
            0xdd, 0x7b, 0x04, // fnstsw word ptr [rbx+4]
            0xdb, 0xe2, // fnclex
            0xdd, 0x7b, 0x06, // fnstsw word ptr [rbx+6]
            0xdb, 0xe3, // fninit
            0xd9, 0x7b, 0x08, // fnstcw word ptr [rbx+8]
            0xdd, 0x7b, 0x0a, // fnstsw word ptr [rbx+10]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u32(DATA, 0xffff).unwrap();
        m.run_to_hlt();
        let w = |o: u64| m.mem.read_u32(DATA + o).unwrap() as u16;
        assert_eq!(w(2), 0x1f7f, "reserved bits of FCW");
        // 1/0 with ZE masked: the flag, an infinity, TOP = 7.
        assert_eq!(w(4), (7 << 11) | 0x04);
        assert_eq!(st_phys(&m, 7), F80.inf(false), "FNINIT leaves the registers alone");
        assert_eq!(w(6), 7 << 11, "FNCLEX");
        assert_eq!(w(8), 0x037f);
        assert_eq!(w(10), 0);
        assert_eq!(m.cpu.regs.fpu.ftw, 0);
    }

    #[test]
    fn fnsave_frstor_round_trip_and_16bit_environment() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xd9, 0xe8, // fld1
            0xd9, 0xeb, // fldpi
            0xdd, 0x33, // fnsave [rbx]
            0xd9, 0xbb, 0xc8, 0x00, 0x00, 0x00, // fnstcw word ptr [rbx+200]
            0xdd, 0x23, // frstor [rbx]
            0x66, 0xd9, 0xb3, 0x80, 0x00, 0x00, 0x00, // data16 fnstenv [rbx+128]
            0xf4, // hlt
        ];
        let m = run(&code);
        let mut b = [0u8; 108];
        m.mem.read(DATA, &mut b).unwrap();
        let st0 = u128::from_le_bytes({
            let mut s = [0u8; 16];
            s[..10].copy_from_slice(&b[28..38]);
            s
        });
        assert_eq!(st0, 0x4000_c90f_daa2_2168_c235, "ST(0) first");
        assert_eq!(&b[38..48], &0x3fff_8000_0000_0000_0000u128.to_le_bytes()[..10]);
        assert_eq!(m.mem.read_u32(DATA + 200).unwrap() as u16, 0x037f, "FNSAVE reinitializes");
        assert_eq!(top_of(&m), 6);
        assert_eq!(m.cpu.regs.fpu.ftw, 0xc0);
        assert_eq!(st_phys(&m, 6), 0x4000_c90f_daa2_2168_c235);
        // 14-byte protected-mode environment: FCW FSW FTW FIP FCS FDP FDS.
        let mut e = [0u8; 14];
        m.mem.read(DATA + 128, &mut e).unwrap();
        let w = |i: usize| u16::from_le_bytes([e[i], e[i + 1]]);
        assert_eq!([w(0), w(2), w(4)], [0x037f, 6 << 11, 0x0fff]);
        assert_eq!(u64::from(w(6)), (CODE + 7 + 2) & 0xffff, "FIP: the FLDPI");
    }

    #[test]
    fn real_mode_environment_layout() {
        let code = [
            0xb8, 0x00, 0x20, // mov ax, 0x2000
            0x8e, 0xd8, // mov ds, ax
            0xdb, 0xe3, // fninit
            0xd9, 0xe8, // fld1
            0xd9, 0x36, 0x00, 0x00, // fnstenv [0]
            0x66, 0xd9, 0x36, 0x20, 0x00, // data32 fnstenv [0x20]
            0xf4, // hlt
        ];
        let mut m = Machine::real16(&code);
        m.run_to_hlt();
        let mut e = [0u8; 14];
        m.mem.read(DATA, &mut e).unwrap();
        let w = |i: usize| u16::from_le_bytes([e[i], e[i + 1]]);
        // FIP is split: bits 15:0 at 6, bits 19:16 with FOP at 8.
        assert_eq!([w(0), w(2), w(4), w(6), w(8)], [0x037f, 7 << 11, 0x3fff, 3 + 2 + 2, 0]);
        let mut e = [0u8; 28];
        m.mem.read(DATA + 0x20, &mut e).unwrap();
        let d = |i: usize| u32::from_le_bytes(e[i..i + 4].try_into().unwrap());
        assert_eq!([d(0), d(4), d(8), d(12), d(16)], [0xffff_037f, 0xffff_3800, 0xffff_3fff, 0xffff_0007, 0]);
    }

    #[test]
    fn fldenv_loads_and_reports_pending_exceptions() {
        // An environment whose FSW has ZE set and whose FCW unmasks it: the
        // next waiting instruction raises #MF.
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xd9, 0x23, // fldenv [rbx]
            0xdf, 0xe0, // fnstsw ax
            0xd9, 0xe8, // fld1
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u32(DATA, 0x037b).unwrap();
        m.mem.write_u32(DATA + 4, 0x0004).unwrap();
        m.mem.write_u32(DATA + 8, 0xffff).unwrap();
        let (v, _, rip) = expect_fault(&mut m);
        assert_eq!((v, rip), (x86::vector::MF, CODE + 7 + 2 + 2));
        assert_eq!(m.gpr(0) & 0xffff, 0x8084, "B, ES, ZE");
    }

    #[test]
    fn unmasked_exception_is_reported_by_the_next_waiting_instruction() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xd9, 0x2b, // fldcw [rbx]
            0xd9, 0xe8, // fld1
            0xd9, 0xee, // fldz
            0xde, 0xf9, // fdivp st(1), st
            0xdf, 0xe0, // fnstsw ax
            0xd9, 0xe8, // fld1
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u32(DATA, 0x037b).unwrap();
        let (v, _, rip) = expect_fault(&mut m);
        assert_eq!((v, rip), (x86::vector::MF, CODE + 7 + 2 + 2 + 2 + 2 + 2));
        // The division did not happen: nothing popped, ST(1) still 1.
        assert_eq!(m.gpr(0) & 0xffff, 0x8084 | (6 << 11));
        assert_eq!(top_of(&m), 6);
        assert_eq!(st_phys(&m, 7), 0x3fff_8000_0000_0000_0000);
    }

    #[test]
    fn fwait_and_fnclex_with_a_pending_exception() {
        let code = [
            0xdb, 0xe2, // fnclex
            0x9b, // fwait
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.cpu.regs.fpu.fsw = 0x8081;
        m.run_to_hlt();
        assert_eq!(m.cpu.regs.fpu.fsw, 0);
        let mut m = Machine::long64(&[0x9b, 0xf4]); // fwait; hlt
        m.cpu.regs.fpu.fsw = 0x8081;
        assert_eq!(expect_fault(&mut m).0, x86::vector::MF);
    }

    #[test]
    fn device_not_available_rules() {
        use x86::Cr0;
        // fld1 ; hlt
        let fld1 = [0xd9, 0xe8, 0xf4];
        let fwait = [0x9b, 0xf4];
        for (code, cr0, fault) in [
            (&fld1[..], Cr0::EM, true),
            (&fld1[..], Cr0::TS, true),
            (&fwait[..], Cr0::TS, false),
            (&fwait[..], Cr0::EM, false),
            (&fwait[..], Cr0::TS | Cr0::MP, true),
        ] {
            let mut m = Machine::long64(code);
            m.cpu.regs.cr0 |= cr0.bits();
            if fault {
                assert_eq!(expect_fault(&mut m), (x86::vector::NM, None, CODE), "{code:x?} {cr0:?}");
            } else {
                m.run_to_hlt();
            }
        }
    }

    /// A recognizable x87/SSE state.
    fn sample_state(m: &mut Machine) {
        let f = &mut m.cpu.regs.fpu;
        f.fcw = 0x027f;
        f.fsw = (6 << 11) | 0x20;
        f.ftw = 0xc0;
        f.fop = 0x123;
        f.fip = 0x1122_3344_5566_7788;
        f.fdp = 0x99aa_bbcc_ddee_ff00;
        write_phys(f, 6, 0x4000_c90f_daa2_2168_c235);
        write_phys(f, 7, 0x3fff_8000_0000_0000_0000);
        f.mxcsr = 0x1fa0;
        for (i, x) in f.xmm.iter_mut().enumerate() {
            *x = 0x0101_0101_0101_0101_0101_0101_0101_0101 * (i as u128 + 1);
        }
    }

    fn fill(m: &mut Machine, len: usize) {
        m.mem.write(DATA, &vec![0xaa; len]).unwrap();
    }

    fn image(m: &Machine, len: usize) -> Vec<u8> {
        let mut b = vec![0; len];
        m.mem.read(DATA, &mut b).unwrap();
        b
    }

    #[test]
    fn fxsave_layout() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0x0f, 0xae, 0x03, // fxsave [rbx]
            0x48, 0x0f, 0xae, 0x83, 0x00, 0x02, 0x00, 0x00, // fxsave64 [rbx+512]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        sample_state(&mut m);
        fill(&mut m, 1024);
        m.run_to_hlt();
        let b = image(&m, 1024);
        let mut want = [0u8; 32];
        want[0..2].copy_from_slice(&0x027fu16.to_le_bytes());
        want[2..4].copy_from_slice(&((6u16 << 11) | 0x20).to_le_bytes());
        want[4] = 0xc0;
        want[6..8].copy_from_slice(&0x123u16.to_le_bytes());
        want[8..12].copy_from_slice(&0x5566_7788u32.to_le_bytes());
        want[16..20].copy_from_slice(&0xddee_ff00u32.to_le_bytes());
        want[24..28].copy_from_slice(&0x1fa0u32.to_le_bytes());
        want[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        assert_eq!(&b[..32], &want);
        // ST(0) = R6 (TOP = 6), each in a 16-byte slot.
        let mut st = [0u8; 128];
        st[..16].copy_from_slice(&0x4000_c90f_daa2_2168_c235u128.to_le_bytes());
        st[16..32].copy_from_slice(&0x3fff_8000_0000_0000_0000u128.to_le_bytes());
        assert_eq!(&b[32..160], &st);
        for i in 0..16 {
            let x = 0x0101_0101_0101_0101_0101_0101_0101_0101u128 * (i as u128 + 1);
            assert_eq!(&b[160 + 16 * i..176 + 16 * i], &x.to_le_bytes(), "XMM{i}");
        }
        assert!(b[416..512].iter().all(|&x| x == 0xaa), "reserved and available bytes untouched");
        // FXSAVE64: 64-bit FIP and FDP.
        assert_eq!(&b[512 + 8..512 + 16], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&b[512 + 16..512 + 24], &0x99aa_bbcc_ddee_ff00u64.to_le_bytes());
        assert_eq!(&b[512 + 24..1024 - 96], &b[24..512 - 96]);
    }

    #[test]
    fn fxrstor_round_trip_and_faults() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0x48, 0x0f, 0xae, 0x03, // fxsave64 [rbx]
            0xdb, 0xe3, // fninit
            0x66, 0x0f, 0xef, 0xdb, // pxor xmm3, xmm3
            0x0f, 0xae, 0x93, 0x18, 0x02, 0x00, 0x00, // ldmxcsr [rbx+24+512]
            0x48, 0x0f, 0xae, 0x0b, // fxrstor64 [rbx]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        sample_state(&mut m);
        m.mem.write_u32(DATA + 536, 0x1f80).unwrap();
        let before = m.cpu.regs.fpu.clone();
        m.run_to_hlt();
        let after = &m.cpu.regs.fpu;
        assert_eq!(
            (after.fcw, after.fsw, after.ftw, after.fop, after.fip, after.fdp, after.mxcsr),
            (before.fcw, before.fsw, before.ftw, before.fop, before.fip, before.fdp, before.mxcsr)
        );
        assert_eq!(after.st, before.st);
        assert_eq!(after.xmm, before.xmm);

        // Reserved MXCSR bits in the image: #GP(0), nothing loaded.
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0x0f, 0xae, 0x0b, // fxrstor [rbx]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        m.mem.write_u32(DATA + 24, 0x1_1f80).unwrap();
        assert_eq!(expect_fault(&mut m), (x86::vector::GP, Some(0), CODE + 7));
        assert_eq!(m.cpu.regs.fpu.mxcsr, 0x1f80);
        // Misaligned area: #GP(0).
        let code = [
            0x48, 0xc7, 0xc3, 0x08, 0x00, 0x02, 0x00, // mov rbx, 0x20008
            0x0f, 0xae, 0x03, // fxsave [rbx]
            0xf4, // hlt
        ];
        let mut m = Machine::long64(&code);
        assert_eq!(expect_fault(&mut m), (x86::vector::GP, Some(0), CODE + 7));
        // CR0.TS: #NM.
        let mut m = Machine::long64(&code);
        m.cpu.regs.cr0 |= x86::Cr0::TS.bits();
        assert_eq!(expect_fault(&mut m).0, x86::vector::NM);
    }

    #[test]
    fn fxsave_outside_64bit_mode_saves_eight_xmm_registers() {
        let code = [
            0xbb, 0x00, 0x00, 0x02, 0x00, // mov ebx, 0x20000
            0x0f, 0xae, 0x03, // fxsave [ebx]
            0xf4, // hlt
        ];
        let mut m = Machine::prot32(&code);
        sample_state(&mut m);
        fill(&mut m, 512);
        m.run_to_hlt();
        let b = image(&m, 512);
        assert_eq!(&b[160..176], &0x0101_0101_0101_0101_0101_0101_0101_0101u128.to_le_bytes());
        assert!(b[288..512].iter().all(|&x| x == 0xaa));
    }

    fn xsave_machine(code: &[u8]) -> Machine {
        let mut m = Machine::long64(code);
        m.cpu.regs.cr4 |= x86::Cr4::OSXSAVE.bits();
        m.cpu.regs.xcr0 = 3;
        m
    }

    #[test]
    fn xsave_partial_masks_and_xstate_bv() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
            0x31, 0xd2, // xor edx, edx
            0x0f, 0xae, 0x23, // xsave [rbx]
            0xb8, 0x02, 0x00, 0x00, 0x00, // mov eax, 2
            0x48, 0x0f, 0xae, 0xa3, 0x00, 0x04, 0x00, 0x00, // xsave64 [rbx+0x400]
            0xf4, // hlt
        ];
        let mut m = xsave_machine(&code);
        sample_state(&mut m);
        fill(&mut m, 0x800);
        // XSTATE_BV of the first area has the SSE bit set, which an x87-only
        // XSAVE leaves alone; the rest of the header is not written.
        m.mem.write_u64(DATA + 512, 2).unwrap();
        m.mem.write_u64(DATA + 0x400 + 512, 0).unwrap();
        m.run_to_hlt();
        let b = image(&m, 0x800);
        let q = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        assert_eq!(q(512), 3);
        assert!(b[520..576].iter().all(|&x| x == 0xaa));
        assert_eq!(&b[0..2], &0x027fu16.to_le_bytes());
        assert!(b[24..32].iter().all(|&x| x == 0xaa), "MXCSR is SSE state");
        assert!(b[160..416].iter().all(|&x| x == 0xaa), "no XMM registers");
        assert_eq!(&b[32..42], &0x4000_c90f_daa2_2168_c235u128.to_le_bytes()[..10]);
        // SSE only: MXCSR, MXCSR_MASK and XMM0-15.
        let a = 0x400;
        assert_eq!(q(a + 512), 2);
        assert!(b[a..a + 24].iter().all(|&x| x == 0xaa), "no x87 state");
        assert_eq!(q(a + 24), 0xffff_0000_1fa0);
        assert_eq!(&b[a + 160..a + 176], &0x0101_0101_0101_0101_0101_0101_0101_0101u128.to_le_bytes());
        assert!(b[a + 416..a + 512].iter().all(|&x| x == 0xaa));
    }

    #[test]
    fn xsave_reports_components_in_their_initial_state() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xdb, 0xe3, // fninit
            0xb8, 0x03, 0x00, 0x00, 0x00, // mov eax, 3
            0x31, 0xd2, // xor edx, edx
            0x0f, 0xae, 0x23, // xsave [rbx]
            0xf4, // hlt
        ];
        let mut m = xsave_machine(&code);
        m.mem.write_u64(DATA + 512, u64::MAX).unwrap();
        m.run_to_hlt();
        // x87 initialized, XMM registers zero: both bits clear; the others
        // (not in RFBM) unchanged.
        assert_eq!(m.mem.read_u64(DATA + 512).unwrap(), !3);
    }

    #[test]
    fn xrstor_loads_or_initializes_by_xstate_bv() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xb8, 0x03, 0x00, 0x00, 0x00, // mov eax, 3
            0x31, 0xd2, // xor edx, edx
            0x0f, 0xae, 0x23, // xsave [rbx]
            0x48, 0xc7, 0x83, 0x00, 0x02, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, // mov qword ptr [rbx+512], 2
            0xc7, 0x43, 0x18, 0x00, 0x1f, 0x00, 0x00, // mov dword ptr [rbx+24], 0x1f00
            0x0f, 0xae, 0x2b, // xrstor [rbx]
            0xf4, // hlt
        ];
        let mut m = xsave_machine(&code);
        sample_state(&mut m);
        m.run_to_hlt();
        let f = &m.cpu.regs.fpu;
        // x87: XSTATE_BV[0] = 0, so initialized (registers zeroed too).
        assert_eq!((f.fcw, f.fsw, f.ftw, f.fip, f.fdp), (0x037f, 0, 0, 0, 0));
        assert_eq!(f.st, [[0; 16]; 8]);
        // SSE: loaded, MXCSR from the image.
        assert_eq!(f.mxcsr, 0x1f00);
        assert_eq!(f.xmm[15], 0x1010_1010_1010_1010_1010_1010_1010_1010);

        // XSTATE_BV[1] = 0 with SSE requested: XMM registers zeroed, MXCSR
        // still loaded.
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xb8, 0x02, 0x00, 0x00, 0x00, // mov eax, 2
            0x31, 0xd2, // xor edx, edx
            0x0f, 0xae, 0x2b, // xrstor [rbx]
            0xf4, // hlt
        ];
        let mut m = xsave_machine(&code);
        sample_state(&mut m);
        m.mem.write_u32(DATA + 24, 0x1f81).unwrap();
        m.run_to_hlt();
        let f = &m.cpu.regs.fpu;
        assert_eq!(f.xmm, [0; 16]);
        assert_eq!(f.mxcsr, 0x1f81);
        assert_eq!(f.fcw, 0x027f, "x87 not requested");
    }

    #[test]
    fn xrstor_header_and_alignment_faults() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xb8, 0x03, 0x00, 0x00, 0x00, // mov eax, 3
            0x31, 0xd2, // xor edx, edx
            0x0f, 0xae, 0x2b, // xrstor [rbx]
            0xf4, // hlt
        ];
        let at = CODE + 7 + 5 + 2;
        for (off, v) in [(512u64, 4u64), (520, 1 << 63), (520, 1), (528, 1), (24, 0x1_0000)] {
            let mut m = xsave_machine(&code);
            m.mem.write_u32(DATA + 24, 0x1f80).unwrap();
            m.mem.write_u64(DATA + off, v).unwrap();
            assert_eq!(expect_fault(&mut m), (x86::vector::GP, Some(0), at), "byte {off}: {v:#x}");
        }
        // Bytes 24-63 of the header are not checked.
        let mut m = xsave_machine(&code);
        m.mem.write_u32(DATA + 24, 0x1f80).unwrap();
        m.mem.write_u64(DATA + 536, 7).unwrap();
        m.run_to_hlt();
        // 16-byte but not 64-byte alignment.
        let mut m = xsave_machine(&code);
        m.cpu.regs.gpr[3] = DATA + 16;
        m.mem.write(CODE, &[0x90; 7]).unwrap();
        assert_eq!(expect_fault(&mut m), (x86::vector::GP, Some(0), at));
    }

    #[test]
    fn xsave_family_availability() {
        // xsave [rbx] ; hlt
        let xsave = [0x0f, 0xae, 0x23, 0xf4];
        let mut m = Machine::long64(&xsave);
        m.cpu.regs.gpr[3] = DATA;
        assert_eq!(expect_fault(&mut m).0, x86::vector::UD, "CR4.OSXSAVE clear");
        let mut m = xsave_machine(&xsave);
        m.cpu.regs.gpr[3] = DATA;
        m.cpu.regs.cr0 |= x86::Cr0::TS.bits();
        assert_eq!(expect_fault(&mut m).0, x86::vector::NM);
        // Without the CPUID bit.
        let mut m = xsave_machine(&xsave);
        m.cpu.regs.gpr[3] = DATA;
        let mut r = m.cpu.cpuid.raw(1, 0);
        r[2] &= !(1 << 26);
        m.cpu.cpuid.set(crate::cpuid::CpuidEntry { leaf: 1, subleaf: None, regs: r });
        assert_eq!(expect_fault(&mut m).0, x86::vector::UD);
    }

    #[test]
    fn xgetbv_and_xsetbv() {
        let code = [
            0x31, 0xc9, // xor ecx, ecx
            0x0f, 0x01, 0xd0, // xgetbv
            0x49, 0x89, 0xc0, // mov r8, rax
            0xb8, 0x01, 0x00, 0x00, 0x00, // mov eax, 1
            0x31, 0xd2, // xor edx, edx
            0x0f, 0x01, 0xd1, // xsetbv
            0x0f, 0x01, 0xd0, // xgetbv
            0x49, 0x89, 0xc1, // mov r9, rax
            0xf4, // hlt
        ];
        let mut m = xsave_machine(&code);
        m.run_to_hlt();
        assert_eq!((m.gpr(8), m.gpr(9), m.cpu.regs.xcr0), (3, 1, 1));

        // mov ecx, n ; mov eax, v ; xor edx, edx ; xsetbv (or xgetbv) ; hlt
        let attempt = |ecx: u8, eax: u8, get: bool, user: bool| {
            let op = if get { 0xd0 } else { 0xd1 };
            let code = [0xb9, ecx, 0, 0, 0, 0xb8, eax, 0, 0, 0, 0x31, 0xd2, 0x0f, 0x01, op, 0xf4];
            let mut m = xsave_machine(&code);
            if user {
                to_user(&mut m);
            }
            let f = expect_fault(&mut m);
            assert_eq!(m.cpu.regs.xcr0, 3, "XCR0 unchanged");
            f
        };
        let gp = (x86::vector::GP, Some(0), CODE + 12);
        assert_eq!(attempt(1, 3, true, false), gp, "XGETBV ECX=1 is not advertised");
        assert_eq!(attempt(0, 2, false, false), gp, "bit 0 must be set");
        assert_eq!(attempt(0, 5, false, false), gp, "AVX is not supported (nor without SSE)");
        assert_eq!(attempt(1, 3, false, false), gp, "XCR1 does not exist");
        assert_eq!(attempt(0, 3, false, true), gp, "CPL 3");
        // XGETBV works at CPL 3 (the HLT after it does not).
        let code = [0x31, 0xc9, 0x0f, 0x01, 0xd0, 0xf4]; // xor ecx, ecx ; xgetbv ; hlt
        let mut m = xsave_machine(&code);
        to_user(&mut m);
        assert_eq!(expect_fault(&mut m), (x86::vector::GP, Some(0), CODE + 5));
        assert_eq!(m.gpr(0), 3);
    }

    #[test]
    fn xcr0_validity_rules() {
        assert!(xcr0_valid(1, 3) && xcr0_valid(3, 3) && xcr0_valid(7, 7));
        assert!(!xcr0_valid(0, 3) && !xcr0_valid(2, 3) && !xcr0_valid(5, 7) && !xcr0_valid(4, 7));
        assert!(!xcr0_valid(0x27, 0xff) && xcr0_valid(0xe7, 0xff) && !xcr0_valid(0xe3, 0xff));
        assert!(!xcr0_valid(0x9, 0x1f) && xcr0_valid(0x19, 0x1f));
    }

    #[test]
    fn xsave_with_xcr0_x87_only_ignores_the_sse_request() {
        let code = [
            0x48, 0xc7, 0xc3, 0x00, 0x00, 0x02, 0x00, // mov rbx, 0x20000
            0xb8, 0x03, 0x00, 0x00, 0x00, // mov eax, 3
            0x31, 0xd2, // xor edx, edx
            0x0f, 0xae, 0x23, // xsave [rbx]
            0xf4, // hlt
        ];
        let mut m = xsave_machine(&code);
        m.cpu.regs.xcr0 = 1;
        sample_state(&mut m);
        fill(&mut m, 576);
        m.run_to_hlt();
        let b = image(&m, 576);
        assert!(b[160..416].iter().all(|&x| x == 0xaa));
        assert_eq!(u64::from_le_bytes(b[512..520].try_into().unwrap()), 0xaaaa_aaaa_aaaa_aaab);
    }
}
