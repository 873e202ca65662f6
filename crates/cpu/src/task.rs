//! Hardware task switching in 32-bit protected mode (SDM vol. 3A, ch. 8
//! "Task Management" (ch. 7 in older editions): 8.2 "Task Management Data
//! Structures", 8.3 "Task Switching", 8.4 "Task Linking").
//!
//! A switch is triggered by a far JMP or CALL to a TSS descriptor or task
//! gate, by an interrupt or exception through a task gate, or by IRET with
//! NT set. The outgoing state is saved into the current TSS, busy bits and
//! the back link are maintained as the SDM's table "Effect of a Task
//! Switch on Busy Flag, NT Flag, Previous Task Link Field, and TS Flag"
//! describes, then the incoming state is loaded with the segment checks of
//! a task switch (faults there are #TS against the new task). 16-bit TSSs
//! are not supported: switching to one raises #TS.

use crate::fault::Fault;
use crate::seg::{sel_ec, DescRef};
use crate::state::{Mode, Segment};
use crate::{Cpu, Ctx};
use x86::seg::{ar, sreg, sys};
use x86::{Cr0, Rflags};

/// What caused a task switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskSwitchSource {
    /// Far CALL, or an interrupt/exception through a task gate: the new
    /// task is nested (NT set, back link written).
    Call,
    /// Far JMP.
    Jmp,
    /// IRET with NT set: return to the linked task.
    Iret,
}

/// Offsets in a 32-bit TSS.
mod tss {
    pub const LINK: u64 = 0x00;
    pub const CR3: u64 = 0x1c;
    pub const EIP: u64 = 0x20;
    pub const EFLAGS: u64 = 0x24;
    pub const EAX: u64 = 0x28;
    pub const ES: u64 = 0x48;
    pub const LDT: u64 = 0x60;
    pub const MIN_LIMIT: u32 = 0x67;
    /// Of a 16-bit TSS.
    pub const MIN_LIMIT16: u32 = 0x2b;
}

impl Cpu {
    /// Switches to the task whose TSS descriptor is `d` (selector `sel`).
    /// `ret` is the EIP saved for the outgoing task.
    pub(crate) fn task_switch(
        &mut self,
        ctx: &mut Ctx,
        sel: u16,
        d: &DescRef,
        src: TaskSwitchSource,
        ret: u64,
    ) -> Result<(), Fault> {
        let desc = d.desc;
        let ec = sel_ec(sel, false);
        let tss16 = matches!(desc.typ(), sys::TSS16_AVAIL | sys::TSS16_BUSY);
        let busy = matches!(desc.typ(), sys::TSS_BUSY | sys::TSS16_BUSY);
        match desc.typ() {
            sys::TSS_AVAIL | sys::TSS_BUSY => {}
            // A guest's 16-bit task switch exits below like any other; L1
            // emulates it.
            sys::TSS16_AVAIL | sys::TSS16_BUSY if self.non_root => {}
            sys::TSS16_AVAIL | sys::TSS16_BUSY => return Err(Fault::ts(ec)),
            _ => return Err(Fault::gp(ec)),
        }
        if src == TaskSwitchSource::Iret {
            if !busy {
                return Err(Fault::ts(ec));
            }
        } else if busy {
            return Err(Fault::gp(ec));
        }
        if !desc.present() {
            return Err(Fault::np(ec));
        }
        if desc.limit < if tss16 { tss::MIN_LIMIT16 } else { tss::MIN_LIMIT } {
            return Err(Fault::ts(ec));
        }
        // The checks above are the ones that precede a task-switch exit.
        if self.non_root {
            return Err(self.task_switch_exit(sel, src));
        }
        let new_base = u64::from(desc.base);
        let old = self.regs.tr;
        if old.limit < tss::MIN_LIMIT {
            return Err(Fault::ts(sel_ec(old.selector, false)));
        }

        // Read the whole incoming image first: a fault here leaves the old
        // task untouched.
        let mut img = [0u32; 26];
        for (i, v) in img.iter_mut().enumerate() {
            *v = self.read_sys(ctx, new_base + 4 * i as u64, 4)? as u32;
        }

        // Save the outgoing task.
        let mut flags = self.regs.rflags();
        if src == TaskSwitchSource::Iret {
            flags &= !Rflags::NT.bits();
        }
        self.write_sys(ctx, old.base + tss::EIP, 4, ret & 0xffff_ffff)?;
        self.write_sys(ctx, old.base + tss::EFLAGS, 4, flags & 0xffff_ffff)?;
        for i in 0..8u64 {
            self.write_sys(ctx, old.base + tss::EAX + 4 * i, 4, self.regs.gpr[i as usize] & 0xffff_ffff)?;
        }
        for i in 0..6u64 {
            let s = self.regs.seg[i as usize].selector;
            self.write_sys(ctx, old.base + tss::ES + 4 * i, 2, u64::from(s))?;
        }
        // Busy bits and the back link.
        if src != TaskSwitchSource::Call {
            self.set_tss_busy(ctx, old.selector, false)?;
        }
        if src != TaskSwitchSource::Iret {
            let b = (d.raw >> 40) as u8 | 2;
            self.write_sys(ctx, d.la + 5, 1, u64::from(b))?;
        }
        let mut new_flags = u64::from(img[(tss::EFLAGS / 4) as usize]);
        if src == TaskSwitchSource::Call {
            self.write_sys(ctx, new_base + tss::LINK, 2, u64::from(old.selector))?;
            new_flags |= Rflags::NT.bits();
        }

        // Load the incoming task.
        self.regs.tr =
            Segment { selector: sel, base: new_base, limit: desc.limit, ar: (desc.ar & !0xf) | sys::TSS_BUSY };
        self.regs.cr0 |= Cr0::TS.bits();
        if self.regs.cr0 & Cr0::PG.bits() != 0 {
            self.regs.cr3 = u64::from(img[(tss::CR3 / 4) as usize]);
        }
        self.regs.set_rflags(new_flags);
        for i in 0..8 {
            self.regs.gpr[i] = u64::from(img[(tss::EAX / 4) as usize + i]);
        }
        let sels: [u16; 6] = core::array::from_fn(|i| img[(tss::ES / 4) as usize + i] as u16);
        for (i, s) in sels.iter().enumerate() {
            // Selectors first, descriptors after the checks below.
            self.regs.seg[i].selector = *s;
        }
        self.next_rip = u64::from(img[(tss::EIP / 4) as usize]);
        self.regs.rip = self.next_rip;
        self.state_changed();
        self.load_task_segments(ctx, img[(tss::LDT / 4) as usize] as u16, sels)
    }

    /// A task switch in VMX non-root operation is a VM exit, whatever the
    /// controls (SDM vol. 3C, 26.1.2; 26.4.2 "Treatment of Task Switches":
    /// the checks on a task gate, the privilege checks of CALL/JMP, and the
    /// new TSS descriptor's selector, type, P bit and limit come first;
    /// nothing of either TSS is accessed here). The qualification
    /// names the new TSS and the source (28.2.1); a switch through an IDT
    /// task gate is recognized by the event being delivered, which the
    /// exit reports as IDT-vectoring information (28.2.4). The
    /// instruction length is recorded for CALL, JMP, IRET and software
    /// interrupts (28.2.5).
    #[cold]
    fn task_switch_exit(&mut self, sel: u16, src: TaskSwitchSource) -> Fault {
        use vmx::exit::{TaskSwitch, TaskSwitchSource as S};
        let vectoring = self.vmx.vectoring;
        let source = match src {
            TaskSwitchSource::Call if vectoring.is_some() => S::TaskGate,
            TaskSwitchSource::Call => S::Call,
            TaskSwitchSource::Jmp => S::Jmp,
            TaskSwitchSource::Iret => S::Iret,
        };
        let mut e = crate::virt::PendingExit::instruction(
            vmx::ExitReason::TaskSwitch,
            TaskSwitch { selector: sel, source }.to_raw(),
        );
        // Types 4-6: software interrupt and (privileged) software exception.
        e.instruction = vectoring.is_none_or(|(info, _)| matches!((info >> 8) & 7, 4..=6));
        self.vmx.pending = Some(e);
        Fault::vm_exit()
    }

    fn set_tss_busy(&mut self, ctx: &mut Ctx, sel: u16, busy: bool) -> Result<(), Fault> {
        let d = self.read_descriptor(ctx, sel, false)?;
        let b = (d.raw >> 40) as u8;
        let b = if busy { b | 2 } else { b & !2 };
        self.write_sys(ctx, d.la + 5, 1, u64::from(b))
    }

    /// Loads LDTR and the segment registers of the new task, with #TS on
    /// every invalid selector (SDM 8.3, step 13 of the task-switch
    /// sequence).
    fn load_task_segments(&mut self, ctx: &mut Ctx, ldt: u16, sels: [u16; 6]) -> Result<(), Fault> {
        if ldt & !3 == 0 {
            self.regs.ldtr = Segment { selector: ldt, base: 0, limit: 0, ar: ar::UNUSABLE };
        } else {
            let ec = sel_ec(ldt, false);
            if ldt & 4 != 0 {
                return Err(Fault::ts(ec));
            }
            let d = self.read_descriptor(ctx, ldt, false).map_err(|_| Fault::ts(ec))?;
            if d.desc.is_code_data() || d.desc.typ() != sys::LDT {
                return Err(Fault::ts(ec));
            }
            if !d.desc.present() {
                return Err(Fault::ts(ec));
            }
            self.regs.ldtr =
                Segment { selector: ldt, base: u64::from(d.desc.base), limit: d.desc.limit, ar: d.desc.ar };
        }
        if self.regs.flag(Rflags::VM) {
            for (i, s) in sels.iter().enumerate() {
                let mut seg = Segment::real(*s, i == sreg::CS);
                seg.ar |= 3 << ar::DPL_SHIFT;
                self.regs.seg[i] = seg;
            }
            self.state_changed();
            return Ok(());
        }
        // CS decides the new CPL.
        let cs_sel = sels[sreg::CS];
        let cpl = (cs_sel & 3) as u8;
        let cs = self.check_code_seg(ctx, cs_sel, cpl, false).map_err(|f| Fault::ts(f.error_code().unwrap_or(0)))?;
        self.regs.seg[sreg::CS] = cs;
        self.state_changed();
        if self.mode != Mode::Protected {
            return Ok(());
        }
        let ss = self.check_tss_ss(ctx, sels[sreg::SS], cpl, false)?;
        self.regs.seg[sreg::SS] = ss;
        for r in [sreg::ES, sreg::DS, sreg::FS, sreg::GS] {
            let seg = self.check_data_seg(ctx, r, sels[r]).map_err(|f| match f.vector() {
                x86::vector::NP => f,
                _ => Fault::ts(f.error_code().unwrap_or(0)),
            })?;
            self.regs.seg[r] = seg;
        }
        Ok(())
    }
}
