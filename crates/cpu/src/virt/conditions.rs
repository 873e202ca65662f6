//! Which instructions and events cause VM exits, under which controls
//! (SDM vol. 3C, 26.1 "Instructions That Cause VM Exits": 26.1.2
//! unconditionally, 26.1.3 conditionally; 26.2 "Other Causes of VM
//! Exits"; 26.3 "Changes to Instruction Behavior in VMX Non-Root
//! Operation" for the CR read shadows and TSC offsetting).
//!
//! These are predicates over the decoded controls and the bitmaps in
//! memory, and the helpers that stage an exit with its information
//! fields (28.2.1 "Basic VM-Exit Information" for qualifications and the
//! guest-linear address, 28.2.5 "Information for VM Exits Due to
//! Instruction Execution" for instruction information); the handlers in
//! `exec/` call them only when [`Cpu::in_non_root`] holds.
//!
//! Not modelled: PAUSE-loop exiting (PLE gap/window; plain PAUSE exiting
//! is), VMCS shadowing (every VMREAD/VMWRITE exits), the #VE side of EPTP
//! switching, virtual-interrupt delivery and the APIC virtualizations
//! beyond the CR8 TPR shadow.

use super::PendingExit;
use crate::exec::{gpr_ref, sreg_index};
use crate::fault::Fault;
use crate::mem::Memory;
use crate::state::Mode;
use crate::{Cpu, Ctx};
use iced_x86::{Instruction, Register};
use vmx::controls::ProcCtls;
use vmx::exit::{AddressSize, MemoryOperand};
use vmx::{ExitReason, VmcsField};
use x86::seg::sreg;

impl Cpu {
    /// Whether exception `f` causes a VM exit rather than being delivered
    /// (26.2 "Other Causes of VM Exits", exceptions: the exception bitmap,
    /// and for #PF the error-code mask and match).
    pub(crate) fn exception_exits(&self, f: &Fault) -> bool {
        let c = self.vmx_ctls();
        let ec = f.error_code().unwrap_or(0);
        vmx::conditions::exception_exits(c.exception_bitmap, c.pf_mask, c.pf_match, f.vector(), ec)
    }

    /// Whether an access to `size` ports from `port` exits (26.1.3, I/O
    /// instructions; 25.6.4 "I/O-Bitmap Addresses"): with I/O bitmaps,
    /// when any port's bit is set or the range wraps past 0xffff; without
    /// them, when "unconditional I/O exiting" is 1.
    pub(crate) fn io_exits(&self, mem: &Memory, port: u16, size: u8) -> bool {
        let c = self.vmx_ctls();
        if !c.proc.contains(ProcCtls::USE_IO_BITMAPS) {
            return c.proc.contains(ProcCtls::UNCONDITIONAL_IO_EXITING);
        }
        vmx::conditions::io_bitmaps_exit(port, size, |b, n| phys_bit(mem, c.io_bitmaps[b], u64::from(n)))
    }

    /// Whether RDMSR (`write` false) or WRMSR of `msr` exits (26.1.3;
    /// 25.6.9 "MSR-Bitmap Address": read bitmaps for low and high MSRs in
    /// the first 2 KiB, write bitmaps in the second; MSRs outside both
    /// ranges always exit).
    pub(crate) fn msr_exits(&self, mem: &Memory, msr: u32, write: bool) -> bool {
        let c = self.vmx_ctls();
        if !c.proc.contains(ProcCtls::USE_MSR_BITMAPS) {
            return true;
        }
        vmx::conditions::msr_bitmap_bit(msr, write).is_none_or(|bit| phys_bit(mem, c.msr_bitmap, bit))
    }

    /// Whether MOV to CR3 of `value` exits (26.1.3: CR3-load exiting,
    /// unless the value is one of the first CR3-target-count targets).
    pub(crate) fn cr3_load_exits(&self, value: u64) -> bool {
        let c = self.vmx_ctls();
        if !c.proc.contains(ProcCtls::CR3_LOAD_EXITING) {
            return false;
        }
        let n = (c.cr3_target_count as usize).min(4);
        !c.cr3_targets[..n].contains(&value)
    }

    /// Whether MOV to CR0 (`cr` 0) or CR4 of `value` exits: when a bit
    /// owned by the host (set in the guest/host mask) would differ from the
    /// read shadow (26.1.3).
    pub(crate) fn cr_write_exits(&self, cr: u8, value: u64) -> bool {
        let c = self.vmx_ctls();
        let (mask, shadow) = if cr == 0 { (c.cr0_mask, c.cr0_shadow) } else { (c.cr4_mask, c.cr4_shadow) };
        (value ^ shadow) & mask != 0
    }

    /// What a guest read of CR0 or CR4 returns: host-owned bits from the
    /// read shadow (26.3 "Changes to Instruction Behavior").
    pub(crate) fn cr_read_shadowed(&self, cr: u8, actual: u64) -> u64 {
        let c = self.vmx_ctls();
        let (mask, shadow) = if cr == 0 { (c.cr0_mask, c.cr0_shadow) } else { (c.cr4_mask, c.cr4_shadow) };
        (actual & !mask) | (shadow & mask)
    }

    /// For a MOV to CR0/CR4 that does not exit, the value actually loaded:
    /// host-owned bits keep their current value (26.3).
    pub(crate) fn cr_write_value(&self, cr: u8, value: u64, current: u64) -> u64 {
        let c = self.vmx_ctls();
        let mask = if cr == 0 { c.cr0_mask } else { c.cr4_mask };
        (value & !mask) | (current & mask)
    }

    /// Stages an exit caused by the current instruction with VM-exit
    /// instruction information (28.2.5) and returns the marker fault.
    #[cold]
    pub(crate) fn exit_insn_info(&mut self, reason: ExitReason, qualification: u64, info: u32) -> Fault {
        let mut e = PendingExit::instruction(reason, qualification);
        e.instruction_info = info;
        self.vmx.pending = Some(e);
        Fault::vm_exit()
    }

    /// Commits a trap-like exit after the current instruction completed
    /// (TPR below threshold, 30.1.2 "TPR Virtualization"): the saved RIP is
    /// the next instruction's and no instruction length is reported. The
    /// handler then returns `Ok`; the run loop moves RIP to `next_rip`,
    /// which now holds the host's RIP.
    #[cold]
    pub(crate) fn exit_after_insn(&mut self, ctx: &mut Ctx, reason: ExitReason) {
        self.regs.rip = self.next_rip;
        self.vmx.pending = Some(PendingExit::event(reason, 0));
        self.vmx.vectoring = None;
        self.commit_exit(ctx);
        self.next_rip = self.regs.rip;
        // Debug traps of the guest instruction must not reach the host.
        self.tf_before = false;
        self.db_hits = 0;
    }

    /// Whether the monitor trap flag is armed (26.5.2 "Monitor Trap
    /// Flag"): the run loop then takes the one-instruction path and exits
    /// after every instruction.
    #[inline(always)]
    pub(crate) fn mtf_armed(&self) -> bool {
        self.non_root && self.vmx.ctls.proc.contains(ProcCtls::MONITOR_TRAP_FLAG)
    }

    /// After one instruction on the single-step path (or the delivery of
    /// the event it raised): the pending MTF VM exit, reported with RIP at
    /// the next instruction to execute (26.5.2; MTF exits take priority
    /// over debug traps, which a guest would see as pending debug
    /// exceptions; those are not saved here).
    #[cold]
    pub(crate) fn mtf_exit(&mut self, ctx: &mut Ctx) {
        // No MTF exit in the shutdown (a triple fault is reported as such
        // by the run loop) or wait-for-SIPI states.
        if self.mtf_armed() && !matches!(self.activity, crate::Activity::Shutdown | crate::Activity::WaitForSipi) {
            self.exit_event(ctx, ExitReason::MonitorTrapFlag);
        }
    }

    /// The memory operand of `insn` as the instruction-information
    /// formats describe it (28.2.5), and the exit qualification VMX
    /// instructions and the descriptor-table exits report: the
    /// instruction's displacement, sign-extended (28.2.1; for RIP-relative
    /// addressing, the displacement plus the RIP of the next instruction,
    /// i.e. the offset the instruction uses).
    pub(crate) fn memory_operand_info(&self, insn: &Instruction) -> (MemoryOperand, u64) {
        let base = insn.memory_base();
        let index = insn.memory_index();
        let d = insn.memory_displacement64();
        let rip_relative = matches!(base, Register::RIP | Register::EIP);
        let asize = if rip_relative {
            if base == Register::RIP {
                8
            } else {
                4
            }
        } else if let Some(g) = gpr_ref(base).or(gpr_ref(index)) {
            g.size
        } else {
            match (self.bitness, insn.memory_displ_size()) {
                (64, _) => 8,
                (32, 2) | (16, 2) => 2,
                (16, _) | (32, _) => 4,
                _ => 8,
            }
        };
        let disp = if rip_relative {
            // iced reports RIP-relative operands by their target already.
            d
        } else {
            match asize {
                2 => d as u16 as i16 as i64 as u64,
                4 => d as u32 as i32 as i64 as u64,
                _ => d,
            }
        };
        let m = MemoryOperand {
            scaling: insn.memory_index_scale().trailing_zeros() as u8,
            address_size: match asize {
                2 => AddressSize::Bits16,
                4 => AddressSize::Bits32,
                _ => AddressSize::Bits64,
            },
            segment: sreg_index(insn.memory_segment()) as u8,
            index: gpr_ref(index).map(|g| g.idx),
            base: if rip_relative { None } else { gpr_ref(base).map(|g| g.idx) },
        };
        (m, disp)
    }

    /// The linear address of `seg:off` without the segment checks, for the
    /// guest-linear-address field (28.2.1): in 64-bit mode only FS and GS
    /// have a base; elsewhere the address is 32 bits.
    pub(crate) fn linear_unchecked(&self, seg: usize, off: u64) -> u64 {
        if self.mode == Mode::Long {
            if seg >= sreg::FS {
                self.regs.seg[seg].base.wrapping_add(off)
            } else {
                off
            }
        } else {
            self.regs.seg[seg].base.wrapping_add(off) & 0xffff_ffff
        }
    }

    /// Whether INT3, INTO or INT1 raising `vec` exits through the
    /// exception bitmap (26.2: software exceptions are intercepted like
    /// hardware ones, and reported with their own interruption type).
    pub(crate) fn soft_exception_exits(&self, vec: u8) -> bool {
        self.vmx_ctls().exception_bitmap & (1 << (vec & 31)) != 0
    }

    /// VTPR, bits 7:4 of the TPR at offset 0x80 of the virtual-APIC page
    /// (30.1.1 "Virtualized APIC Registers"); a page outside RAM reads 0.
    pub(crate) fn vtpr(&self, mem: &Memory) -> u32 {
        let page = self.vmread(VmcsField::VirtualApicAddress);
        mem.read_phys_u32(page + 0x80).unwrap_or(0)
    }

    /// MOV to CR8 with "use TPR shadow" (30.3 "Virtualizing CR8-Based TPR
    /// Accesses"): bits 3:0 of the source go to VTPR[7:4], the rest of
    /// VTPR is cleared; then TPR virtualization (30.1.2): without
    /// virtual-interrupt delivery, a VTPR[7:4] below TPR threshold[3:0]
    /// is a trap-like TPR-below-threshold exit.
    pub(crate) fn write_vtpr(&mut self, ctx: &mut Ctx, value: u64) {
        let page = self.vmread(VmcsField::VirtualApicAddress);
        let vtpr = ((value & 0xf) << 4) as u32;
        // A page outside RAM drops the write, as an unbacked bus would.
        let _ = ctx.mem.write_u32(page + 0x80, vtpr);
        let threshold = self.vmread(VmcsField::TprThreshold) as u32 & 0xf;
        if vtpr >> 4 < threshold {
            self.exit_after_insn(ctx, ExitReason::TprBelowThreshold);
        }
    }

    /// APIC-access VM exits (SDM 30.4 "Virtualizing Memory-Mapped APIC
    /// Accesses"): with "virtualize APIC accesses", a linear access whose
    /// physical address (through EPT when it is on) is on the APIC-access
    /// page exits instead of reaching memory, with the page offset and the
    /// access type (0 read, 1 write, 2 fetch) as qualification (28.2.1).
    /// The TLB never keeps such a translation. Turtles virtualizes none of
    /// these accesses (the "use TPR shadow" reads and writes of offset 080H
    /// exit too), and guest-physical accesses (paging-structure walks) to
    /// the page are not checked. Returns `pa` when the access may proceed.
    #[inline(always)]
    pub(crate) fn check_apic_access(&mut self, la: u64, pa: u64, access: crate::mmu::Access) -> Result<u64, Fault> {
        match self.vmx.ctls.apic_access {
            Some(page) if self.non_root && pa & !0xfff == page => Err(self.apic_access_exit(la, pa, access)),
            _ => Ok(pa),
        }
    }

    #[cold]
    fn apic_access_exit(&mut self, la: u64, pa: u64, access: crate::mmu::Access) -> Fault {
        use crate::mmu::Access;
        self.tlb.flush_page(la);
        let qualification = (pa & 0xfff) | (access as u64) << 12;
        // Data accesses are part of an instruction (fault-like: RIP stays
        // at it); a fetch happens before there is one.
        self.vmx.pending = Some(if access == Access::Fetch {
            PendingExit::event(ExitReason::ApicAccess, qualification)
        } else {
            PendingExit::instruction(ExitReason::ApicAccess, qualification)
        });
        Fault::vm_exit()
    }

    /// VMFUNC function 0, EPTP switching (26.5.5.3 "EPTP Switching"):
    /// entry ECX of the EPTP list becomes the EPT pointer, when ECX is
    /// below 512 and the entry passes the checks VM entry applies to an
    /// EPTP (27.2.1.1). Returns false when the function must exit instead.
    pub(crate) fn eptp_switch(&mut self, mem: &Memory) -> bool {
        use vmx::caps::EptVpidCap;
        use vmx::controls::{EptPointer, MemoryType, ProcCtls2};
        let index = self.regs.gpr[1] as u32;
        if index >= 512 {
            return false;
        }
        let list = self.vmread(VmcsField::EptpListAddress);
        let Ok(raw) = mem.read_phys_u64(list + 8 * u64::from(index)) else { return false };
        let Some(caps) = self.vmx.caps else { return false };
        let cap = caps.ept_vpid();
        let e = EptPointer(raw);
        let valid = match e.memory_type() {
            Some(MemoryType::Uncacheable) => cap.contains(EptVpidCap::MEMORY_TYPE_UC),
            Some(MemoryType::WriteBack) => cap.contains(EptVpidCap::MEMORY_TYPE_WB),
            _ => false,
        } && match e.walk_length() {
            4 => cap.contains(EptVpidCap::WALK_LENGTH_4),
            5 => cap.contains(EptVpidCap::WALK_LENGTH_5),
            _ => false,
        } && (!e.ad_enabled() || cap.contains(EptVpidCap::ACCESSED_DIRTY))
            && !e.supervisor_shadow_stack()
            && raw & EptPointer::RESERVED_LOW == 0
            && raw >> caps.phys_addr_width() == 0;
        if !valid {
            return false;
        }
        self.vmwrite(VmcsField::EptPointer, raw);
        // The EPTP index is written when the processor supports #VE at all.
        let ve = u64::from(ProcCtls2::EPT_VIOLATION_VE.bits());
        if caps.allowed(vmx::ControlWord::Proc2).may_be_one & ve != 0 {
            self.vmwrite(VmcsField::EptpIndex, u64::from(index & 0xffff));
        }
        self.vmx.ctls.eptp = Some(raw);
        self.ept = Some(raw);
        // Translations through the old EPT go; the TLB now belongs to the
        // new (VPID, EPTP) pair.
        let vpid = self.vmx.ctls.vpid;
        self.vmx.tlb_owner = (vpid != 0).then_some((vpid, raw));
        self.tlb.flush_gpa();
        self.state_changed();
        true
    }
}

/// Bit `bit` of the bitmap at physical `base`, as the processor reads it;
/// a bitmap outside memory reads as all ones (exit).
pub(crate) fn phys_bit(mem: &Memory, base: u64, bit: u64) -> bool {
    let mut b = [0u8];
    mem.read_phys(base.wrapping_add(bit / 8), &mut b).map_or(true, |()| b[0] & (1 << (bit % 8)) != 0)
}

#[cfg(test)]
mod tests;
