//! Shifts and rotates: SHL/SAL, SHR, SAR, ROL, ROR, RCL, RCR, SHLD, SHRD
//! (SDM vol. 2, "SAL/SAR/SHL/SHR—Shift", "RCL/RCR/ROL/ROR—Rotate",
//! "SHLD—Double Precision Shift Left", "SHRD—Double Precision Shift
//! Right").
//!
//! The count is masked to 5 bits (6 with a 64-bit operand) before
//! anything else; a masked count of 0 writes the destination back
//! unchanged (a 32-bit register is still zero-extended, as on hardware)
//! and leaves every flag alone, lazy flags included.
//!
//! Flags are computed eagerly. Where the SDM leaves a flag undefined the
//! executor reproduces what the processors it was differentially tested
//! on produce (`tests/host_flags.rs`, run on AMD Zen; see that file for
//! the vendor policy):
//! - SHL/SHR/SAR: AF is set; CF is the last bit shifted out even when the
//!   count exceeds an 8- or 16-bit operand (0 for SHL/SHR, the sign for
//!   SAR); OF is `MSB(result) ^ CF` for SHL, `MSB(original)` for a 1-bit
//!   SHR and 0 otherwise, 0 for SAR.
//! - ROL/RCL: OF is `MSB(result) ^ CF` for every non-zero count; ROR/RCR:
//!   OF is the XOR of the two top bits of the result. This is the count-1
//!   definition applied to any count, including counts that rotate an 8-
//!   or 16-bit operand back to itself.
//! - SHLD/SHRD: see [`double_shift`].
//!
//! None of these accepts LOCK: a LOCK prefix raises #UD.

use crate::fault::Fault;
use crate::flags::{parity, sign_bit, size_mask};
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic};
use x86::Rflags;

/// RFLAGS.CF.
pub(crate) const CF: u64 = Rflags::CF.bits();
/// RFLAGS.PF.
pub(crate) const PF: u64 = Rflags::PF.bits();
/// RFLAGS.AF.
pub(crate) const AF: u64 = Rflags::AF.bits();
/// RFLAGS.ZF.
pub(crate) const ZF: u64 = Rflags::ZF.bits();
/// RFLAGS.SF.
pub(crate) const SF: u64 = Rflags::SF.bits();
/// RFLAGS.OF.
pub(crate) const OF: u64 = Rflags::OF.bits();
/// The six status flags.
pub(crate) const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

/// SF, ZF and PF of a `size`-byte result, as RFLAGS bits.
#[inline(always)]
pub(crate) fn szp(size: u8, r: u64) -> u64 {
    let r = r & size_mask(size);
    let mut f = 0;
    if r == 0 {
        f |= ZF;
    }
    if r & sign_bit(size) != 0 {
        f |= SF;
    }
    if parity(r) {
        f |= PF;
    }
    f
}

/// `flag` if `cond`, else 0.
#[inline(always)]
pub(crate) fn bit_if(cond: bool, flag: u64) -> u64 {
    if cond {
        flag
    } else {
        0
    }
}

/// Replaces the status flags in `mask` with `set`, keeping the others.
#[inline(always)]
pub(crate) fn update_flags(cpu: &mut Cpu, mask: u64, set: u64) {
    if mask == STATUS {
        cpu.regs.set_status_flags(set);
    } else {
        let old = cpu.regs.rflags();
        cpu.regs.set_status_flags((old & !mask) | (set & mask));
    }
}

/// The single-operand shift and rotate operations.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShiftOp {
    /// SHL/SAL.
    Shl,
    /// SHR.
    Shr,
    /// SAR.
    Sar,
    /// ROL.
    Rol,
    /// ROR.
    Ror,
    /// RCL.
    Rcl,
    /// RCR.
    Rcr,
}

/// The count mask of a `size`-byte operand.
#[inline(always)]
fn count_mask(size: u8) -> u32 {
    if size == 8 {
        0x3f
    } else {
        0x1f
    }
}

/// Sign-extends a `size`-byte value to 64 bits.
#[inline(always)]
fn sext(size: u8, v: u64) -> u64 {
    let shift = 64 - 8 * u32::from(size);
    (((v << shift) as i64) >> shift) as u64
}

/// Computes a shift or rotate of the `size`-byte value `a` by the raw
/// `count` with carry-in `cf`. Returns the result, the status flags it
/// writes (`mask`) and their new values (`set`); `mask` is 0 when the
/// masked count is 0.
#[inline]
pub fn shift(op: ShiftOp, size: u8, a: u64, count: u32, cf: bool) -> (u64, u64, u64) {
    let bits = 8 * u32::from(size);
    let m = size_mask(size);
    let a = a & m;
    let c = count & count_mask(size);
    if c == 0 {
        return (a, 0, 0);
    }
    let msb = |v: u64| (v >> (bits - 1)) & 1 != 0;
    match op {
        ShiftOp::Shl => {
            // c <= 63, so the shifts below cannot overflow.
            let r = (a << c) & m;
            let cf = c <= bits && (a >> (bits - c)) & 1 != 0;
            let of = msb(r) ^ cf;
            (r, STATUS, szp(size, r) | AF | bit_if(cf, CF) | bit_if(of, OF))
        }
        ShiftOp::Shr => {
            let r = a >> c;
            let cf = (a >> (c - 1)) & 1 != 0;
            let of = c == 1 && msb(a);
            (r, STATUS, szp(size, r) | AF | bit_if(cf, CF) | bit_if(of, OF))
        }
        ShiftOp::Sar => {
            let s = sext(size, a) as i64;
            let r = (s >> c) as u64 & m;
            let cf = (s >> (c - 1)) & 1 != 0;
            (r, STATUS, szp(size, r) | AF | bit_if(cf, CF))
        }
        ShiftOp::Rol | ShiftOp::Ror => {
            let k = c % bits;
            let r = if k == 0 {
                a
            } else if op == ShiftOp::Rol {
                ((a << k) | (a >> (bits - k))) & m
            } else {
                ((a >> k) | (a << (bits - k))) & m
            };
            let (cf, of) = if op == ShiftOp::Rol {
                let cf = r & 1 != 0;
                (cf, msb(r) ^ cf)
            } else {
                (msb(r), msb(r) ^ ((r >> (bits - 2)) & 1 != 0))
            };
            (r, CF | OF, bit_if(cf, CF) | bit_if(of, OF))
        }
        ShiftOp::Rcl | ShiftOp::Rcr => {
            // Rotate the (bits + 1)-bit value CF:a; 8- and 16-bit counts
            // are taken modulo 9 and 17 (SDM "tempCOUNT").
            let w = bits + 1;
            let k = c % w;
            let wm = (1u128 << w) - 1;
            let v = (u128::from(cf) << bits) | u128::from(a);
            let v = if k == 0 {
                v
            } else if op == ShiftOp::Rcl {
                ((v << k) | (v >> (w - k))) & wm
            } else {
                ((v >> k) | (v << (w - k))) & wm
            };
            let r = (v as u64) & m;
            let cf = (v >> bits) & 1 != 0;
            let of = if op == ShiftOp::Rcl { msb(r) ^ cf } else { msb(r) ^ ((r >> (bits - 2)) & 1 != 0) };
            (r, CF | OF, bit_if(cf, CF) | bit_if(of, OF))
        }
    }
}

/// SHLD (`left`) or SHRD of the `size`-byte destination `a` with bits
/// from `b`. Returns the result and the new status flags, or `None` when
/// the masked count is 0.
///
/// The SDM leaves the result and flags undefined when a 16-bit operand
/// is shifted by 17 to 31, and OF undefined for counts above 1. The tested
/// hardware (see the module documentation) shifts the 48-bit pattern
/// `a:b:b` (SHLD) or `b:b:a` (SHRD), most significant first, and clears
/// CF when the count exceeds 16. OF follows the 1-bit rule applied to the
/// last bit step: SHLD gives `CF ^ MSB(result)` (with the result's MSB
/// taken as 0 once the count reaches the operand size), SHRD gives the XOR
/// of the result's two top bits. AF is set as for the plain shifts.
#[inline]
pub fn double_shift(left: bool, size: u8, a: u64, b: u64, count: u32) -> Option<(u64, u64)> {
    let bits = 8 * u32::from(size);
    let m = size_mask(size);
    let (a, b) = (a & m, b & m);
    let c = count & count_mask(size);
    if c == 0 {
        return None;
    }
    let msb = |v: u64| (v >> (bits - 1)) & 1 != 0;
    // Counts stay below 32 and 64 for those sizes, so only a 16-bit
    // operand needs the third copy of the pattern.
    let (a1, b1) = (u128::from(a), u128::from(b));
    let wide = bits == 16;
    let (r, cf, of) = if left {
        let (v, top) = if wide { ((a1 << 32) | (b1 << 16) | b1, 48) } else { ((a1 << bits) | b1, 2 * bits) };
        let r = (v >> (top - bits - c)) as u64 & m;
        let cf = c <= bits && (a >> (bits - c)) & 1 != 0;
        (r, cf, cf ^ (c < bits && msb(r)))
    } else {
        let v = if wide { (b1 << 32) | (b1 << 16) | a1 } else { (b1 << bits) | a1 };
        let r = (v >> c) as u64 & m;
        let cf = c <= bits && (a >> (c - 1)) & 1 != 0;
        (r, cf, msb(r) ^ ((r >> (bits - 2)) & 1 != 0))
    };
    Some((r, szp(size, r) | AF | bit_if(cf, CF) | bit_if(of, OF)))
}

#[inline(always)]
fn shift_insn(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, op: ShiftOp) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let count = cpu.read_op(ctx, insn, 1)? as u32;
    cpu.rmw(ctx, insn, |cpu, a| {
        let cf = cpu.regs.cf();
        let (r, mask, set) = shift(op, size, a, count, cf);
        if mask != 0 {
            update_flags(cpu, mask, set);
        }
        r
    })
}

macro_rules! shift_handlers {
    ($($name:ident => $op:expr),* $(,)?) => {
        $(
            fn $name(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
                shift_insn(cpu, ctx, insn, $op)
            }
        )*
    };
}

shift_handlers! {
    shl => ShiftOp::Shl,
    shr => ShiftOp::Shr,
    sar => ShiftOp::Sar,
    rol => ShiftOp::Rol,
    ror => ShiftOp::Ror,
    rcl => ShiftOp::Rcl,
    rcr => ShiftOp::Rcr,
}

fn shld_shrd(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction, left: bool) -> Result<(), Fault> {
    let size = Cpu::osize(insn);
    let b = cpu.reg(insn.op1_register());
    let count = cpu.read_op(ctx, insn, 2)? as u32;
    cpu.rmw(ctx, insn, |cpu, a| match double_shift(left, size, a, b, count) {
        Some((r, flags)) => {
            cpu.regs.set_status_flags(flags);
            r
        }
        None => a,
    })
}

fn shld(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    shld_shrd(cpu, ctx, insn, true)
}

fn shrd(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    shld_shrd(cpu, ctx, insn, false)
}

/// Handler for a shift or rotate mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let h: crate::exec::Handler = match m {
        Mnemonic::Shl | Mnemonic::Sal => shl,
        Mnemonic::Shr => shr,
        Mnemonic::Sar => sar,
        Mnemonic::Rol => rol,
        Mnemonic::Ror => ror,
        Mnemonic::Rcl => rcl,
        Mnemonic::Rcr => rcr,
        Mnemonic::Shld => shld,
        Mnemonic::Shrd => shrd,
        _ => return None,
    };
    // None of these accepts LOCK (SDM vol. 2, "LOCK").
    if insn.has_lock_prefix() {
        return Some(crate::exec::bits::lock_ud);
    }
    Some(h)
}

/// Helpers for the instruction tests of this and the sibling families.
#[cfg(test)]
pub(crate) mod testkit {
    use crate::testutil::{Machine, CODE};
    use crate::{DescTable, Fault};
    use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter, MemorySizeOptions};

    /// Where [`trap_all`] points every vector: a HLT.
    pub const HANDLER: u64 = CODE + 0xf00;

    /// Concatenates the instructions of a listing, checking that each
    /// one's bytes decode (at `bitness`) to the text beside them, and
    /// appends HLT.
    pub fn assemble(bitness: u32, listing: &[(&[u8], &str)]) -> Vec<u8> {
        let mut f = IntelFormatter::new();
        let o = f.options_mut();
        o.set_hex_prefix("0x");
        o.set_hex_suffix("");
        o.set_uppercase_hex(false);
        o.set_signed_immediate_operands(true);
        o.set_memory_size_options(MemorySizeOptions::Always);
        o.set_space_after_operand_separator(true);
        let mut code = Vec::new();
        for (bytes, text) in listing {
            let mut d = Decoder::new(bitness, bytes, DecoderOptions::NONE);
            let insn = d.decode();
            let mut out = String::new();
            f.format(&insn, &mut out);
            assert_eq!(&out, text, "bytes {bytes:02x?}");
            assert_eq!(insn.len(), bytes.len(), "{text}: trailing bytes");
            code.extend_from_slice(bytes);
        }
        code.push(0xf4);
        code
    }

    /// A 64-bit machine running `listing`, with registers preset.
    pub fn long64(listing: &[(&[u8], &str)], regs: &[(usize, u64)], rflags: u64) -> Machine {
        let mut m = Machine::long64(&assemble(64, listing));
        for &(i, v) in regs {
            m.cpu.regs.gpr[i] = v;
        }
        m.cpu.regs.set_rflags(rflags | 2);
        m
    }

    /// Points every vector at a HLT at [`HANDLER`]: a 64-bit IDT and GDT
    /// for `long64`/`prot32` machines (by `bits`), the IVT in real mode.
    pub fn trap_all(m: &mut Machine, bits: u32) {
        m.mem.write(HANDLER, &[0xf4]).unwrap();
        match bits {
            16 => {
                let seg = (CODE >> 4) as u32;
                for v in 0..256u64 {
                    m.mem.write_u32(v * 4, (seg << 16) | (HANDLER - CODE) as u32).unwrap();
                }
            }
            32 => {
                m.mem.write_u64(0x4008, 0x00cf_9b00_0000_ffff).unwrap();
                m.mem.write_u64(0x4010, 0x00cf_9300_0000_ffff).unwrap();
                m.cpu.regs.gdtr = DescTable { base: 0x4000, limit: 0x17 };
                let h = HANDLER;
                let gate = (h & 0xffff) | (0x8 << 16) | (0x8e00u64 << 32) | ((h & 0xffff_0000) << 32);
                for v in 0..256u64 {
                    m.mem.write_u64(0x5000 + v * 8, gate).unwrap();
                }
                m.cpu.regs.idtr = DescTable { base: 0x5000, limit: 0x7ff };
            }
            _ => {
                m.mem.write_u64(0x4008, 0x00af_9b00_0000_ffff).unwrap();
                m.mem.write_u64(0x4010, 0x00cf_9300_0000_ffff).unwrap();
                m.cpu.regs.gdtr = DescTable { base: 0x4000, limit: 0x17 };
                let h = HANDLER;
                let lo = (h & 0xffff) | (0x8 << 16) | (0x8e00u64 << 32) | ((h & 0xffff_0000) << 32);
                for v in 0..256u64 {
                    m.mem.write_u64(0x5000 + v * 16, lo).unwrap();
                    m.mem.write_u64(0x5008 + v * 16, h >> 32).unwrap();
                }
                m.cpu.regs.idtr = DescTable { base: 0x5000, limit: 0xfff };
            }
        }
    }

    /// Runs a machine prepared with [`trap_all`] and returns the one
    /// exception delivered and the RIP it reported.
    pub fn run_to_fault(m: &mut Machine) -> (Fault, u64) {
        m.run_to_hlt();
        assert_eq!(m.cpu.regs.rip & 0xfff, (HANDLER & 0xfff) + 1, "stopped outside the handler");
        let delivered: u64 = m.cpu.stats.exceptions.iter().sum();
        assert_eq!(delivered, 1, "exactly one exception");
        m.cpu.stats.last_exception.expect("an exception")
    }
}

#[cfg(test)]
mod tests {
    use super::testkit::{assemble, long64, run_to_fault, trap_all};
    use super::*;
    use crate::testutil::{Machine, CODE, DATA};
    use x86::vector;

    /// One instruction on a 64-bit machine: registers and flags in, then
    /// the expected registers and status flags.
    struct Vector {
        insn: (&'static [u8], &'static str),
        regs: &'static [(usize, u64)],
        flags: u64,
        want: &'static [(usize, u64)],
        want_flags: u64,
    }

    fn check(v: &Vector) {
        let mut m = long64(&[v.insn], v.regs, v.flags);
        m.run_to_hlt();
        for &(i, want) in v.want {
            assert_eq!(m.gpr(i), want, "{}: register {i}", v.insn.1);
        }
        assert_eq!(m.rflags() & STATUS, v.want_flags, "{}: flags", v.insn.1);
    }

    const RAX: usize = 0;
    const RCX: usize = 1;
    const RDX: usize = 2;
    const RBX: usize = 3;

    #[test]
    fn shifts_by_register_and_immediate() {
        let vectors = [
            // Upper bits of RAX survive an 8-bit shift.
            Vector {
                insn: (&[0xd2, 0xe0], "shl al, cl"),
                regs: &[(RAX, 0x1122_3344_5566_7781), (RCX, 1)],
                flags: 0,
                want: &[(RAX, 0x1122_3344_5566_7702)],
                want_flags: CF | OF | AF,
            },
            // The count is masked to 5 bits; the 32-bit result is
            // zero-extended.
            Vector {
                insn: (&[0xd3, 0xe0], "shl eax, cl"),
                regs: &[(RAX, 0xffff_ffff_8000_0001), (RCX, 0x21)],
                flags: 0,
                want: &[(RAX, 2)],
                want_flags: CF | OF | AF,
            },
            Vector {
                insn: (&[0x48, 0xd3, 0xe0], "shl rax, cl"),
                regs: &[(RAX, 1), (RCX, 63)],
                flags: 0,
                want: &[(RAX, 1 << 63)],
                want_flags: OF | SF | PF | AF,
            },
            // A 16-bit shift by 16 leaves the last bit out in CF.
            Vector {
                insn: (&[0x66, 0xd3, 0xe0], "shl ax, cl"),
                regs: &[(RAX, 0xaaaa_aaaa_aaaa_00ff), (RCX, 16)],
                flags: 0,
                want: &[(RAX, 0xaaaa_aaaa_aaaa_0000)],
                want_flags: CF | OF | ZF | PF | AF,
            },
            Vector {
                insn: (&[0xd1, 0xe8], "shr eax, 1"),
                regs: &[(RAX, 0x8000_0003)],
                flags: 0,
                want: &[(RAX, 0x4000_0001)],
                want_flags: CF | OF | AF,
            },
            Vector {
                insn: (&[0x48, 0xc1, 0xf8, 0x3f], "sar rax, 0x3f"),
                regs: &[(RAX, 1 << 63)],
                flags: OF,
                want: &[(RAX, u64::MAX)],
                want_flags: SF | PF | AF,
            },
            // SAR of a byte by more than 7 fills with the sign; CF too.
            Vector {
                insn: (&[0xd2, 0xf8], "sar al, cl"),
                regs: &[(RAX, 0x80), (RCX, 9)],
                flags: 0,
                want: &[(RAX, 0xff)],
                want_flags: CF | SF | PF | AF,
            },
            // Rotates change only CF and OF.
            Vector {
                insn: (&[0x66, 0xc1, 0xc0, 0x04], "rol ax, 4"),
                regs: &[(RAX, 0x1234)],
                flags: ZF | SF | PF | AF,
                want: &[(RAX, 0x2341)],
                want_flags: ZF | SF | PF | AF | CF | OF,
            },
            Vector {
                insn: (&[0xd3, 0xc8], "ror eax, cl"),
                regs: &[(RAX, 1), (RCX, 1)],
                flags: 0,
                want: &[(RAX, 0x8000_0000)],
                want_flags: CF | OF,
            },
            // ROL of a byte by 8: the value comes back, CF = its LSB.
            Vector {
                insn: (&[0xd2, 0xc0], "rol al, cl"),
                regs: &[(RAX, 0x81), (RCX, 8)],
                flags: OF,
                want: &[(RAX, 0x81)],
                want_flags: CF,
            },
            Vector {
                insn: (&[0xd0, 0xd3], "rcl bl, 1"),
                regs: &[(RBX, 0x80)],
                flags: ZF,
                want: &[(RBX, 0)],
                want_flags: ZF | CF | OF,
            },
            Vector {
                insn: (&[0x48, 0xd3, 0xda], "rcr rdx, cl"),
                regs: &[(RDX, 1), (RCX, 1)],
                flags: CF,
                want: &[(RDX, 1 << 63)],
                want_flags: CF | OF,
            },
            // RCL of a byte by 9 (mod 9 = 0) rotates nothing; OF is still
            // written.
            Vector {
                insn: (&[0xd2, 0xd0], "rcl al, cl"),
                regs: &[(RAX, 0x80), (RCX, 9)],
                flags: 0,
                want: &[(RAX, 0x80)],
                want_flags: OF,
            },
            Vector {
                insn: (&[0x0f, 0xa5, 0xd0], "shld eax, edx, cl"),
                regs: &[(RAX, 0x1234_5678), (RDX, 0x9abc_def0), (RCX, 8)],
                flags: CF,
                want: &[(RAX, 0x3456_789a), (RDX, 0x9abc_def0)],
                want_flags: PF | AF,
            },
            Vector {
                insn: (&[0x48, 0x0f, 0xac, 0xd0, 0x08], "shrd rax, rdx, 8"),
                regs: &[(RAX, 0x1122_3344_5566_7788), (RDX, 0x99)],
                flags: 0,
                want: &[(RAX, 0x9911_2233_4455_6677)],
                want_flags: CF | OF | SF | PF | AF,
            },
            // 16-bit SHLD by 20: the pattern a:b:b, CF cleared.
            Vector {
                insn: (&[0x66, 0x0f, 0xa5, 0xd0], "shld ax, dx, cl"),
                regs: &[(RAX, 0x1234), (RDX, 0xabcd), (RCX, 20)],
                flags: CF,
                want: &[(RAX, 0xbcda)],
                want_flags: SF | AF,
            },
        ];
        for v in &vectors {
            check(v);
        }
    }

    #[test]
    fn zero_count_keeps_flags_but_writes_the_register() {
        // shl eax, cl with CL = 32 (masked to 0): EAX written back, so the
        // upper half clears; every flag, lazy or not, stays.
        check(&Vector {
            insn: (&[0xd3, 0xe0], "shl eax, cl"),
            regs: &[(RAX, 0xffff_ffff_0000_0005), (RCX, 0x20)],
            flags: CF | ZF | OF,
            want: &[(RAX, 5)],
            want_flags: CF | ZF | OF,
        });
        check(&Vector {
            insn: (&[0x48, 0x0f, 0xa5, 0xd0], "shld rax, rdx, cl"),
            regs: &[(RAX, 7), (RDX, u64::MAX), (RCX, 0x40)],
            flags: SF | PF,
            want: &[(RAX, 7)],
            want_flags: SF | PF,
        });
        // Flags still lazy from a CMP survive a zero-count rotate.
        let code = assemble(64, &[(&[0x39, 0xd0], "cmp eax, edx"), (&[0xd3, 0xc3], "rol ebx, cl")]);
        let mut m = Machine::long64(&code);
        m.cpu.regs.gpr[0] = 1;
        m.cpu.regs.gpr[2] = 2;
        m.run_to_hlt();
        assert_eq!(m.rflags() & STATUS, CF | SF | PF | AF);
    }

    #[test]
    fn memory_destinations() {
        let code = assemble(
            64,
            &[
                (&[0xd3, 0x27], "shl dword ptr [rdi], cl"),
                (&[0xd0, 0x5f, 0x04], "rcr byte ptr [rdi+4], 1"),
                (&[0x66, 0x0f, 0xa4, 0x57, 0x08, 0x04], "shld word ptr [rdi+8], dx, 4"),
                (&[0x48, 0xc1, 0x7f, 0x10, 0x04], "sar qword ptr [rdi+0x10], 4"),
            ],
        );
        let mut m = Machine::long64(&code);
        m.mem.write_u32(DATA, 0x4000_0001).unwrap();
        m.mem.write(DATA + 4, &[0x01]).unwrap();
        m.mem.write(DATA + 8, &0xabcdu16.to_le_bytes()).unwrap();
        m.mem.write_u64(DATA + 16, 0x8000_0000_0000_0010).unwrap();
        m.cpu.regs.gpr[7] = DATA;
        m.cpu.regs.gpr[1] = 2;
        m.cpu.regs.gpr[2] = 0x1234;
        m.run_to_hlt();
        assert_eq!(m.mem.read_u32(DATA).unwrap(), 4);
        let mut b = [0u8; 1];
        m.mem.read(DATA + 4, &mut b).unwrap();
        // CF from the SHL (bit 30 of 0x40000001 = 1) rotates in.
        assert_eq!(b[0], 0x80);
        let mut w = [0u8; 2];
        m.mem.read(DATA + 8, &mut w).unwrap();
        assert_eq!(u16::from_le_bytes(w), 0xbcd1);
        assert_eq!(m.mem.read_u64(DATA + 16).unwrap(), 0xf800_0000_0000_0001);
        // From the SAR: CF = bit 3 = 0, SF, PF of 0x01 = 0.
        assert_eq!(m.rflags() & STATUS, SF | AF);
    }

    #[test]
    fn real_mode_shift() {
        let mut m = Machine::real16(&assemble(16, &[(&[0xc1, 0xe0, 0x04], "shl ax, 4")]));
        m.cpu.regs.gpr[0] = 0x0123;
        m.run_to_hlt();
        assert_eq!(m.gpr(0), 0x1230);
        assert_eq!(m.rflags() & STATUS, PF | AF);
    }

    #[test]
    fn protected_mode_32bit_rotate_through_carry() {
        // rcl eax, cl: 33-bit rotate by 31 of CF=1:0x00000001.
        let mut m = Machine::prot32(&assemble(32, &[(&[0xd3, 0xd0], "rcl eax, cl")]));
        m.cpu.regs.gpr[0] = 1;
        m.cpu.regs.gpr[1] = 31;
        m.cpu.regs.set_rflags(2 | CF);
        m.run_to_hlt();
        // CF:a = 1_00..01 rotated left 31: a = 0x80000000 | 0x40000000,
        // CF = bit 1 of a = 0.
        assert_eq!(m.gpr(0), 0xc000_0000);
        assert_eq!(m.rflags() & CF, 0);
    }

    #[test]
    fn lock_prefix_is_undefined() {
        // lock shl dword ptr [rdi], 1
        let mut m = Machine::long64(&[0xf0, 0xd1, 0x27, 0xf4]);
        m.cpu.regs.gpr[7] = DATA;
        trap_all(&mut m, 64);
        let (f, rip) = run_to_fault(&mut m);
        assert_eq!((f.vector(), rip), (vector::UD, CODE));
    }

    #[test]
    fn pure_function_edges() {
        // SHL/SHR of a byte by more than 8: result 0, CF 0.
        assert_eq!(shift(ShiftOp::Shl, 1, 0xff, 9, true), (0, STATUS, ZF | PF | AF));
        assert_eq!(shift(ShiftOp::Shr, 1, 0xff, 9, true), (0, STATUS, ZF | PF | AF));
        // RCR of a word by 17 (mod 17 = 0): unchanged, OF from the top bits.
        assert_eq!(shift(ShiftOp::Rcr, 2, 0x4000, 17, true), (0x4000, CF | OF, CF | OF));
        // A masked count of 0 touches nothing.
        assert_eq!(shift(ShiftOp::Rol, 8, 5, 64, false), (5, 0, 0));
        assert_eq!(double_shift(true, 4, 1, 2, 32), None);
        // 16-bit SHRD by 17: the pattern b:b:a.
        assert_eq!(double_shift(false, 2, 0x1234, 0xabcd, 17).map(|r| r.0), Some(0xd5e6));
    }
}
