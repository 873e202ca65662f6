//! VMCS shadowing (Intel SDM vol. 3C, 25.10 "VMCS Types: Ordinary and
//! Shadow", 25.6.15 "VMCS Shadowing Bitmap Addresses", 26.1.3
//! "Instructions That Cause VM Exits Conditionally" for VMREAD and
//! VMWRITE, and their reference pages in 31.3 "VMX Instructions").
//!
//! With the "VMCS shadowing" control (secondary processor-based control
//! bit 14) set in the current VMCS, a VMREAD or VMWRITE in VMX non-root
//! operation exits only when its field encoding has bits 63:15 set or
//! its bit in the VMREAD or VMWRITE bitmap (bits 14:0 of the encoding
//! index the 4 KiB bitmap) is 1; otherwise it reads or writes the VMCS
//! the VMCS link pointer references, with the instruction's own rules
//! and results, as in root operation.
//!
//! The processor's VMCSs are host objects ([`Vmcs`] boxes) rather than
//! regions in guest memory, so the shadow VMCS is linked with
//! [`Cpu::set_shadow_vmcs`]: one slot per processor, which the link
//! pointer of the current VMCS names while one is linked (whatever page
//! address software chose for it; the entry checks on the address still
//! apply). A VMCS in that slot is a shadow VMCS: its shadow-VMCS indicator
//! reads as 1 and its revision identifier is the processor's. Memory at
//! the link pointer holds no VMCS of this processor, so without a linked
//! VMCS the indicator reads as 0 there and VM entry with "VMCS shadowing"
//! fails its link-pointer check (27.3.1.5 "Checks on Guest
//! Non-Register State"); the bitmap addresses are checked as 27.2.1.1
//! "VM-Execution Control Fields" asks, by [`vmx::check`].
//!
//! Failures follow the pseudo-code of VMREAD and VMWRITE: after the exit
//! decision comes #GP(0) at CPL > 0, then VMfailInvalid when the link
//! pointer is not valid (all ones, or nothing linked), then
//! VMfailValid(12) for an unsupported encoding and, for VMWRITE,
//! VMfailValid(13) for a VM-exit information field unless IA32_VMX_MISC
//! bit 29 ("VMWRITE to any field", which this processor reports) is set.
//! VMfailValid sets the VM-instruction error field of the current VMCS
//! (31.2 "Conventions": it is the current VMCS that a VMfailValid
//! writes), not of the shadow VMCS the instruction accessed. Memory
//! operands fault where the reference pages place them: VMWRITE's source
//! once the link pointer is known valid and before the field checks,
//! VMREAD's destination only after the field is known to be supported.

use super::conditions::phys_bit;
use crate::fault::Fault;
use crate::{Cpu, Ctx};
use iced_x86::Instruction;
use vmx::controls::ProcCtls2;
use vmx::{VmInstructionError, Vmcs, VmcsField};
use x86::Rflags;

/// Bit 31 of the first word of a VMCS region: the shadow-VMCS indicator
/// (25.2 "Format of the VMCS Region").
pub(crate) const SHADOW_VMCS_INDICATOR: u32 = 1 << 31;

/// CF, PF, AF, ZF, SF and OF: the flags VMsucceed and VMfail set.
const VMX_RESULT_FLAGS: u64 = 0x8d5;

impl Cpu {
    /// Links `vmcs` as the shadow VMCS (25.10) that the VMCS link pointer
    /// of the current VMCS names, or unlinks with `None`; returns the one
    /// linked before. The link pointer field itself is the current VMCS's,
    /// written with [`Cpu::vmwrite`] as any field. A linked VMCS keeps its
    /// [`Vmcs::written`] groups: shadowed VMWRITEs record there which
    /// entry checks its owner must run again.
    pub fn set_shadow_vmcs(&mut self, vmcs: Option<Box<Vmcs>>) -> Option<Box<Vmcs>> {
        core::mem::replace(&mut self.vmx.shadow, vmcs)
    }

    /// The linked shadow VMCS.
    pub fn shadow_vmcs(&self) -> Option<&Vmcs> {
        self.vmx.shadow.as_deref()
    }

    /// The first word of the VMCS region the link pointer names, as VM
    /// entry sees it: the linked shadow VMCS's (revision identifier and
    /// indicator 1), or with the indicator clear for memory, which holds
    /// no VMCS of this processor.
    pub(crate) fn link_header(&self, memory_word: u32) -> u32 {
        match (&self.vmx.shadow, self.vmx.caps) {
            (Some(_), Some(caps)) => caps.revision_id() | SHADOW_VMCS_INDICATOR,
            _ => memory_word & !SHADOW_VMCS_INDICATOR,
        }
    }

    /// VMREAD (`write` false) or VMWRITE in non-root operation, after the
    /// #UD checks: `None` when it exits (26.1.3: "VMCS shadowing" is 0,
    /// the encoding sets a bit in 63:15, or its bitmap bit is 1), else the
    /// instruction's result on the shadow VMCS.
    pub(crate) fn shadowed_vmread_vmwrite(
        &mut self,
        ctx: &mut Ctx,
        insn: &Instruction,
        write: bool,
    ) -> Option<Result<(), Fault>> {
        let ctls = &self.vmx.ctls;
        if !ctls.proc2.contains(ProcCtls2::VMCS_SHADOWING) {
            return None;
        }
        // The encoding is in the register operand: the secondary source of
        // VMWRITE, the source of VMREAD; 64 bits in 64-bit mode, 32
        // otherwise (the register's width says which).
        let encoding = self.reg(if write { insn.op0_register() } else { insn.op1_register() });
        if encoding >> 15 != 0 {
            return None;
        }
        // 25.6.15: bits 14:0 of the encoding index the bitmap.
        let bitmap = if write { ctls.vmwrite_bitmap } else { ctls.vmread_bitmap };
        if phys_bit(ctx.mem, bitmap, encoding) {
            return None;
        }
        Some(self.shadow_access(ctx, insn, encoding, write))
    }

    /// The instruction proper, from the CPL check on (31.3 "VMREAD—Read
    /// Field from Virtual-Machine Control Structure", "VMWRITE—Write Field
    /// to Virtual-Machine Control Structure").
    fn shadow_access(&mut self, ctx: &mut Ctx, insn: &Instruction, encoding: u64, write: bool) -> Result<(), Fault> {
        if self.cpl > 0 {
            return Err(Fault::gp0());
        }
        // The link pointer is not valid: all ones, or it names no VMCS of
        // this processor (VM entry rejects that, but software may unlink
        // the shadow VMCS after an entry whose checks it does not repeat).
        if self.vmread(VmcsField::VmcsLinkPointer) == u64::MAX || self.vmx.shadow.is_none() {
            self.vmx_result(Rflags::CF.bits());
            return Ok(());
        }
        let any_field = self.vmx.caps.is_some_and(|c| c.misc().vmwrite_any_field);
        let result = if write {
            let value = self.read_op(ctx, insn, 1)?;
            match self.vmx.shadow.as_deref_mut() {
                Some(s) => s.write_encoding(encoding, value, any_field),
                None => return Ok(()),
            }
        } else {
            match self.vmx.shadow.as_deref().map(|s| s.read_encoding(encoding)) {
                Some(Ok(value)) => {
                    // The destination has the operand size: a narrower
                    // field is zero-extended, a wider one truncated.
                    self.write_op(ctx, insn, 0, value)?;
                    Ok(())
                }
                Some(Err(e)) => Err(e),
                None => return Ok(()),
            }
        };
        match result {
            Ok(()) => self.vmx_result(0),
            Err(e) => self.vmfail_valid(e),
        }
        Ok(())
    }

    /// VMfailValid (31.2): ZF and the error number in the VM-instruction
    /// error field of the current VMCS.
    fn vmfail_valid(&mut self, e: VmInstructionError) {
        self.vmwrite(VmcsField::VmInstructionError, u64::from(e.number()));
        self.vmx_result(Rflags::ZF.bits());
    }

    /// Clears CF, PF, AF, ZF, SF and OF and sets `set` among them.
    fn vmx_result(&mut self, set: u64) {
        let rflags = self.regs.rflags();
        self.regs.set_rflags((rflags & !VMX_RESULT_FLAGS) | set);
    }
}

#[cfg(test)]
mod tests;
