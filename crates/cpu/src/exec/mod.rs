//! The executor: one handler per instruction form, chosen when the
//! instruction is decoded ([`select`]) and called through a pointer from
//! the block cache ("handler chaining", as Bochs calls it).
//!
//! One file per instruction family, after cloud-hypervisor's emulator
//! layout. Every handler has the same shape: read operands, compute,
//! check everything that can fault, then commit registers and memory, so a
//! faulting instruction leaves no trace (SDM vol. 3A, 6.5 "Exception
//! Classifications": faults are restartable).

use crate::fault::Fault;
use crate::flags::size_mask;
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, OpKind, Register};
use x86::seg::sreg;

pub mod alu;
pub mod bits;
pub mod control;
pub mod far;
pub mod fast;
pub mod fpu;
pub mod legacy;
pub mod mov;
pub mod muldiv;
pub mod shift;
pub mod sse;
pub mod stack;
pub mod string;
pub mod system;

/// A family handler: gets iced's full decoding of the instruction.
pub type Handler = fn(&mut Cpu, &mut Ctx, &Instruction) -> Result<(), Fault>;

/// What the block loop calls: a pre-resolved fast handler
/// ([`fast`]) or the trampoline to the family handler.
pub type FastHandler = fn(&mut Cpu, &mut Ctx, &crate::decode::Decoded) -> Result<(), Fault>;

/// Chooses the handler of a decoded instruction. The boolean says whether
/// the block must end after it (it changes state the decoder, the TLB or
/// interrupt delivery depend on).
pub fn select(insn: &Instruction) -> (Handler, bool) {
    if insn.is_invalid() {
        return (invalid, true);
    }
    let m = insn.mnemonic();
    if let Some(h) = alu::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = mov::select(m, insn) {
        return (h, false);
    }
    // Branches end their block through iced's flow control; they need
    // no flag here and may use the fast forms.
    if let Some(h) = control::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = stack::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = shift::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = muldiv::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = bits::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = string::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = sse::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = fpu::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = legacy::select(m, insn) {
        return (h, false);
    }
    if let Some(h) = system::select(m, insn) {
        return (h, true);
    }
    (unimplemented, true)
}

/// Bytes that could not be decoded: #UD (SDM vol. 2, "UD2" and 6.15
/// "Interrupt 6—Invalid Opcode Exception").
fn invalid(_: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    Err(Fault::ud())
}

/// A valid instruction Turtles does not implement: #UD in the guest, and
/// the run report names it.
pub(crate) fn unimplemented(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    *cpu.stats.unimplemented.entry(format!("{:?}", insn.mnemonic())).or_insert(0) += 1;
    Err(Fault::ud())
}

/// Where a general-purpose register lives: index, width, high-byte form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GprRef {
    /// Index 0-15 (RAX..R15).
    pub idx: u8,
    /// Width in bytes.
    pub size: u8,
    /// AH/CH/DH/BH.
    pub high8: bool,
}

/// Maps an iced register to its GPR slot; `None` for non-GPRs.
#[inline(always)]
pub fn gpr_ref(r: Register) -> Option<GprRef> {
    let v = r as usize;
    let al = Register::AL as usize;
    let ax = Register::AX as usize;
    let eax = Register::EAX as usize;
    let rax = Register::RAX as usize;
    // iced orders byte registers AL CL DL BL AH CH DH BH SPL BPL SIL DIL
    // R8L..R15L.
    if (al..ax).contains(&v) {
        let i = v - al;
        match i {
            0..4 => Some(GprRef { idx: i as u8, size: 1, high8: false }),
            4..8 => Some(GprRef { idx: (i - 4) as u8, size: 1, high8: true }),
            _ => Some(GprRef { idx: (i - 4) as u8, size: 1, high8: false }),
        }
    } else if (ax..ax + 16).contains(&v) {
        Some(GprRef { idx: (v - ax) as u8, size: 2, high8: false })
    } else if (eax..eax + 16).contains(&v) {
        Some(GprRef { idx: (v - eax) as u8, size: 4, high8: false })
    } else if (rax..rax + 16).contains(&v) {
        Some(GprRef { idx: (v - rax) as u8, size: 8, high8: false })
    } else {
        None
    }
}

/// Segment register number of an iced segment register.
#[inline(always)]
pub fn sreg_index(r: Register) -> usize {
    match r {
        Register::ES => sreg::ES,
        Register::CS => sreg::CS,
        Register::SS => sreg::SS,
        Register::FS => sreg::FS,
        Register::GS => sreg::GS,
        _ => sreg::DS,
    }
}

impl Cpu {
    /// Reads a general-purpose register of any width.
    #[inline(always)]
    pub fn reg(&self, r: Register) -> u64 {
        match gpr_ref(r) {
            Some(g) => {
                let v = self.regs.gpr[g.idx as usize];
                if g.high8 {
                    (v >> 8) & 0xff
                } else {
                    v & size_mask(g.size)
                }
            }
            None => match r {
                Register::RIP => self.next_rip,
                Register::EIP => self.next_rip & 0xffff_ffff,
                _ => 0,
            },
        }
    }

    /// Writes a general-purpose register with x86 width semantics: 32-bit
    /// writes zero the upper half, 8- and 16-bit writes merge.
    #[inline(always)]
    pub fn set_reg(&mut self, r: Register, v: u64) {
        if let Some(g) = gpr_ref(r) {
            let slot = &mut self.regs.gpr[g.idx as usize];
            *slot = match (g.size, g.high8) {
                (1, true) => (*slot & !0xff00) | ((v & 0xff) << 8),
                (1, false) => (*slot & !0xff) | (v & 0xff),
                (2, _) => (*slot & !0xffff) | (v & 0xffff),
                (4, _) => v & 0xffff_ffff,
                _ => v,
            };
        }
    }

    /// Effective address (segment offset) of the memory operand.
    #[inline(always)]
    pub fn ea(&self, insn: &Instruction) -> u64 {
        let base = insn.memory_base();
        let index = insn.memory_index();
        let disp = insn.memory_displacement64();
        if base == Register::RIP || base == Register::EIP {
            return disp;
        }
        let mut a = disp;
        let mut asize = 0u8;
        if let Some(g) = gpr_ref(base) {
            a = a.wrapping_add(self.regs.gpr[g.idx as usize]);
            asize = g.size;
        }
        if let Some(g) = gpr_ref(index) {
            a = a.wrapping_add(self.regs.gpr[g.idx as usize].wrapping_mul(insn.memory_index_scale() as u64));
            asize = g.size;
        }
        match asize {
            0 => disp,
            2 => a & 0xffff,
            4 => a & 0xffff_ffff,
            _ => a,
        }
    }

    /// Segment of the memory operand (default or override).
    #[inline(always)]
    pub fn mem_seg(&self, insn: &Instruction) -> usize {
        sreg_index(insn.memory_segment())
    }

    /// Size in bytes of operand `n`.
    #[inline(always)]
    pub fn op_size(insn: &Instruction, n: u32) -> u8 {
        match insn.op_kind(n) {
            OpKind::Register => insn.op_register(n).size() as u8,
            OpKind::Memory => insn.memory_size().size() as u8,
            OpKind::Immediate8 | OpKind::Immediate8_2nd => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            _ => 8,
        }
    }

    /// Reads operand `n` (register, memory or immediate).
    #[inline(always)]
    pub fn read_op(&mut self, ctx: &mut Ctx, insn: &Instruction, n: u32) -> Result<u64, Fault> {
        match insn.op_kind(n) {
            OpKind::Register => Ok(self.reg(insn.op_register(n))),
            OpKind::Memory => {
                let size = insn.memory_size().size() as u8;
                let off = self.ea(insn);
                self.read_mem(ctx, self.mem_seg(insn), off, size)
            }
            _ => Ok(insn.immediate(n)),
        }
    }

    /// Writes operand `n` (register or memory).
    #[inline(always)]
    pub fn write_op(&mut self, ctx: &mut Ctx, insn: &Instruction, n: u32, v: u64) -> Result<(), Fault> {
        match insn.op_kind(n) {
            OpKind::Register => {
                self.set_reg(insn.op_register(n), v);
                Ok(())
            }
            OpKind::Memory => {
                let size = insn.memory_size().size() as u8;
                let off = self.ea(insn);
                self.write_mem(ctx, self.mem_seg(insn), off, size, v)
            }
            _ => Err(Fault::ud()),
        }
    }

    /// Read-modify-write of operand 0. Writability is checked before `f`
    /// runs, so `f` may update flags: when it runs, the write succeeds.
    #[inline]
    pub fn rmw(
        &mut self,
        ctx: &mut Ctx,
        insn: &Instruction,
        f: impl FnOnce(&mut Cpu, u64) -> u64,
    ) -> Result<(), Fault> {
        if insn.op0_kind() == OpKind::Memory {
            let size = insn.memory_size().size() as u8;
            let seg = self.mem_seg(insn);
            let off = self.ea(insn);
            let la = self.probe_write(ctx, seg, off, size)?;
            let a = self.read_lin(ctx, la, size)?;
            let r = f(self, a);
            self.write_lin(ctx, la, size, r)
        } else {
            let r = insn.op0_register();
            let a = self.reg(r);
            let v = f(self, a);
            self.set_reg(r, v);
            Ok(())
        }
    }

    /// Operand size of the instruction in bytes, from operand 0.
    #[inline(always)]
    pub fn osize(insn: &Instruction) -> u8 {
        Self::op_size(insn, 0)
    }

    /// Size of the stack pointer in use: 8 in 64-bit mode, else SS.B.
    #[inline(always)]
    pub fn stack_size(&self) -> u8 {
        if self.bitness == 64 {
            8
        } else if self.regs.seg[sreg::SS].ar & x86::seg::ar::DB != 0 {
            4
        } else {
            2
        }
    }

    /// Address-size mask of the current code segment's default.
    #[inline(always)]
    pub fn rsp_mask(&self) -> u64 {
        size_mask(self.stack_size())
    }

    /// Pushes `size` bytes.
    #[inline]
    pub fn push(&mut self, ctx: &mut Ctx, size: u8, v: u64) -> Result<(), Fault> {
        let mask = self.rsp_mask();
        let rsp = self.regs.gpr[4];
        let new = rsp.wrapping_sub(size as u64) & mask;
        self.write_mem(ctx, sreg::SS, new, size, v)?;
        self.regs.gpr[4] = (rsp & !mask) | new;
        Ok(())
    }

    /// Reads the value `size` bytes at the top of the stack plus `skip`
    /// bytes, without moving RSP.
    #[inline]
    pub fn peek(&mut self, ctx: &mut Ctx, skip: u64, size: u8) -> Result<u64, Fault> {
        let mask = self.rsp_mask();
        let off = self.regs.gpr[4].wrapping_add(skip) & mask;
        self.read_mem(ctx, sreg::SS, off, size)
    }

    /// Pops `size` bytes.
    #[inline]
    pub fn pop(&mut self, ctx: &mut Ctx, size: u8) -> Result<u64, Fault> {
        let v = self.peek(ctx, 0, size)?;
        self.adjust_rsp(size as i64);
        Ok(v)
    }

    /// Adds `delta` to the stack pointer within its width.
    #[inline]
    pub fn adjust_rsp(&mut self, delta: i64) {
        let mask = self.rsp_mask();
        let rsp = self.regs.gpr[4];
        self.regs.gpr[4] = (rsp & !mask) | (rsp.wrapping_add(delta as u64) & mask);
    }

    /// Sets the next RIP of a near branch, truncated to the operand size
    /// and checked against the CS limit or canonicality.
    #[inline]
    pub fn branch(&mut self, target: u64, osize: u8) -> Result<(), Fault> {
        let t = target & size_mask(osize);
        if self.bitness == 64 {
            if !self.canonical(t) {
                return Err(Fault::gp0());
            }
        } else if t > u64::from(self.regs.seg[sreg::CS].limit) {
            return Err(Fault::gp0());
        }
        self.next_rip = t;
        Ok(())
    }

    /// Ends the current block after this instruction.
    #[inline]
    pub fn stop_block(&mut self) {
        self.events |= crate::events::STOP;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpr_mapping_matches_iced_register_order() {
        assert_eq!(gpr_ref(Register::AH), Some(GprRef { idx: 0, size: 1, high8: true }));
        assert_eq!(gpr_ref(Register::SPL), Some(GprRef { idx: 4, size: 1, high8: false }));
        assert_eq!(gpr_ref(Register::R15L), Some(GprRef { idx: 15, size: 1, high8: false }));
        assert_eq!(gpr_ref(Register::R9W), Some(GprRef { idx: 9, size: 2, high8: false }));
        assert_eq!(gpr_ref(Register::EDI), Some(GprRef { idx: 7, size: 4, high8: false }));
        assert_eq!(gpr_ref(Register::R15), Some(GprRef { idx: 15, size: 8, high8: false }));
        assert_eq!(gpr_ref(Register::RIP), None);
        assert_eq!(gpr_ref(Register::XMM0), None);
    }
}
