//! Delivery of exceptions and interrupts, in every mode (SDM vol. 3A, ch. 6
//! "Interrupt and Exception Handling": 6.5 exception classes, 6.9 "Priority
//! Among Concurrent Exceptions and Interrupts", 6.12 "Exception and
//! Interrupt Handling" (protected mode), 6.14 "Exception and Interrupt
//! Handling in 64-bit Mode", 6.15 the double-fault rules; ch. 20.1.4
//! "Interrupt and Exception Handling" in real mode; ch. 18 "Debug" for
//! #DB).
//!
//! Delivery is transactional: every read and push is checked before any
//! register changes, so a fault during delivery sees the state before the
//! event, which is what the double-fault and triple-fault rules need.

use crate::fault::Fault;
use crate::seg::sel_ec;
use crate::state::{Mode, Segment};
use crate::{events, Activity, Cpu, Ctx};
use iced_x86::Instruction;
use x86::seg::{ar, sreg, sys, Gate};
use x86::vector::{self, ExceptionClass};
use x86::Rflags;

/// What kind of event is being delivered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// A fault or trap raised by the processor.
    Exception,
    /// A maskable external interrupt.
    External,
    /// A non-maskable interrupt.
    Nmi,
    /// INT n.
    Software,
    /// INT3 or INTO (software exceptions: gate DPL checked, EXT clear).
    SoftException,
    /// INT1 (ICEBP): privileged software exception, gate DPL not checked.
    PrivSoftException,
}

impl EventKind {
    fn ext(self) -> bool {
        matches!(self, EventKind::Exception | EventKind::External | EventKind::Nmi)
    }
    fn soft(self) -> bool {
        matches!(self, EventKind::Software | EventKind::SoftException)
    }
}

/// Frame values pushed by a delivery and the state that results.
struct Entry {
    cs: Segment,
    rip: u64,
    ss: Option<Segment>,
    rsp: u64,
    clear_if: bool,
    /// Delivered by a task switch, which already loaded everything.
    task: bool,
}

impl Cpu {
    /// Delivers an exception raised by an instruction (a fault: the saved
    /// RIP is the faulting instruction), applying the double-fault rules.
    pub(crate) fn raise(&mut self, ctx: &mut Ctx, f: Fault) {
        let rip = self.regs.rip;
        self.deliver_exception(ctx, f, rip);
    }

    /// Delivers exception `f` with `ret` as the saved RIP.
    pub(crate) fn deliver_exception(&mut self, ctx: &mut Ctx, f: Fault, ret: u64) {
        let mut cur = f;
        // Delivery faults can only be #GP/#NP/#SS/#TS/#PF, so the chain
        // reaches #DF and then shutdown within a few steps; the bound is a
        // guard, not a rule.
        for _ in 0..8 {
            if self.non_root {
                if cur.is_vm_exit() {
                    self.commit_exit(ctx);
                    return;
                }
                if self.exception_exits(&cur) {
                    self.exception_exit(ctx, cur);
                    return;
                }
            }
            self.note_exception(cur, ret);
            if let Some(a) = cur.cr2() {
                self.regs.cr2 = a;
            }
            match self.deliver(ctx, cur.vector(), EventKind::Exception, cur.error_code(), ret) {
                Ok(()) => return,
                Err(next) => {
                    let prev = cur.vector();
                    if prev == vector::DF {
                        self.triple_fault(format!("{next} while delivering #DF"));
                        return;
                    }
                    let df = matches!(
                        (vector::class(prev), vector::class(next.vector())),
                        (ExceptionClass::Contributory, ExceptionClass::Contributory)
                            | (ExceptionClass::PageFault, ExceptionClass::Contributory | ExceptionClass::PageFault)
                    );
                    cur = if df { Fault::with_code(vector::DF, 0) } else { next };
                }
            }
        }
        self.triple_fault(format!("{cur} in an endless delivery chain"));
    }

    fn note_exception(&mut self, f: Fault, rip: u64) {
        if let Some(c) = self.stats.exceptions.get_mut(f.vector() as usize) {
            *c += 1;
        }
        self.stats.last_exception = Some((f, rip));
        if self.stats.recent_exceptions.len() == crate::RECENT_EXCEPTIONS {
            self.stats.recent_exceptions.pop_front();
        }
        self.stats.recent_exceptions.push_back((f, rip));
    }

    /// A VM exit for an exception the exception bitmap intercepts (SDM vol.
    /// 3C, 26.2; 28.2.1 for the qualification: the #PF linear address,
    /// which then does not reach CR2, or the #DB conditions).
    #[cold]
    fn exception_exit(&mut self, ctx: &mut Ctx, f: Fault) {
        use vmx::controls::InterruptionType;
        let kind = InterruptionType::HardwareException as u32;
        let code = f.error_code();
        let info = u32::from(f.vector()) | (kind << 8) | if code.is_some() { 1 << 11 } else { 0 } | (1 << 31);
        let qualification = match f.vector() {
            vector::PF => f.cr2().unwrap_or(0),
            vector::DB => self.regs.dr[6] & 0x600f,
            _ => 0,
        };
        let mut e = crate::virt::PendingExit::event(vmx::ExitReason::ExceptionOrNmi, qualification);
        e.interruption = Some((info, code));
        self.vmx.pending = Some(e);
        self.commit_exit(ctx);
    }

    /// Enters shutdown after a triple fault (SDM 6.15, "Interrupt 8").
    pub(crate) fn triple_fault(&mut self, why: String) {
        self.shutdown(format!("triple fault: {why}"));
    }

    /// Delivers a hardware interrupt, NMI or software interrupt; faults
    /// during delivery are returned to the caller.
    pub(crate) fn deliver(
        &mut self,
        ctx: &mut Ctx,
        vec: u8,
        kind: EventKind,
        error_code: Option<u32>,
        ret: u64,
    ) -> Result<(), Fault> {
        if kind != EventKind::Exception {
            self.stats.interrupts[vec as usize] += 1;
        }
        if self.non_root {
            // Should delivery exit (a nested fault the bitmap intercepts,
            // an EPT violation), the exit reports this event as
            // IDT-vectoring information (SDM vol. 3C, 28.2.4).
            use vmx::controls::InterruptionType as T;
            let t = match kind {
                EventKind::External => T::ExternalInterrupt,
                EventKind::Nmi => T::Nmi,
                EventKind::Exception => T::HardwareException,
                EventKind::Software => T::SoftwareInterrupt,
                EventKind::SoftException => T::SoftwareException,
                EventKind::PrivSoftException => T::PrivilegedSoftwareException,
            };
            let ec = if error_code.is_some() { 1 << 11 } else { 0 };
            self.vmx.vectoring = Some((u32::from(vec) | ((t as u32) << 8) | ec | (1 << 31), error_code));
        }
        let rflags = self.regs.rflags();
        let entry = match self.mode {
            Mode::Real => self.deliver_real(ctx, vec, rflags, ret)?,
            Mode::Long | Mode::Compat => self.deliver_long(ctx, vec, kind, error_code, rflags, ret)?,
            Mode::Protected | Mode::Vm86 => self.deliver_protected(ctx, vec, kind, error_code, rflags, ret)?,
        };
        self.vmx.vectoring = None;
        if entry.task {
            self.wake_after_delivery(vec, kind);
            return Ok(());
        }
        // Commit.
        let mut f = rflags & !(Rflags::TF | Rflags::NT | Rflags::RF | Rflags::VM).bits();
        if entry.clear_if {
            f &= !Rflags::IF.bits();
        }
        if self.mode == Mode::Real {
            f &= !Rflags::AC.bits();
        }
        if let Some(ss) = entry.ss {
            self.regs.seg[sreg::SS] = ss;
        }
        self.regs.gpr[4] = entry.rsp;
        self.regs.set_rflags(f);
        self.regs.seg[sreg::CS] = entry.cs;
        self.regs.rip = entry.rip;
        self.state_changed_light();
        self.wake_after_delivery(vec, kind);
        Ok(())
    }

    fn wake_after_delivery(&mut self, vec: u8, kind: EventKind) {
        if vec == vector::NMI && kind == EventKind::Nmi {
            self.nmi_blocked = true;
        }
        if self.activity == Activity::Halted {
            self.activity = Activity::Active;
        }
    }

    fn deliver_real(&mut self, ctx: &mut Ctx, vec: u8, rflags: u64, ret: u64) -> Result<Entry, Fault> {
        let off = u64::from(vec) * 4;
        if off + 3 > u64::from(self.regs.idtr.limit) {
            return Err(Fault::gp(u32::from(vec) * 8 + 2));
        }
        let ivt = self.read_sys(ctx, self.regs.idtr.base.wrapping_add(off), 4)?;
        let ss = self.regs.seg[sreg::SS];
        let sp = self.regs.gpr[4] & 0xffff;
        let frame = [rflags & 0xffff, u64::from(self.regs.seg[sreg::CS].selector), ret & 0xffff];
        let mut p = sp;
        for v in frame {
            p = p.wrapping_sub(2) & 0xffff;
            self.write_sys(ctx, ss.base.wrapping_add(p) & 0xf_ffff, 2, v)?;
        }
        let sel = (ivt >> 16) as u16;
        Ok(Entry {
            cs: Segment { selector: sel, base: u64::from(sel) << 4, ..self.regs.seg[sreg::CS] },
            rip: ivt & 0xffff,
            ss: None,
            rsp: (self.regs.gpr[4] & !0xffff) | p,
            clear_if: true,
            task: false,
        })
    }

    /// Reads and checks the IDT gate for `vec` (common to 32- and 64-bit).
    fn idt_gate(&mut self, ctx: &mut Ctx, vec: u8, kind: EventKind, long: bool) -> Result<Gate, Fault> {
        let ext = kind.ext() as u32;
        let idt_ec = u32::from(vec) * 8 + 2 + ext;
        let size = if long { 16 } else { 8 };
        let off = u64::from(vec) * size;
        if off + size - 1 > u64::from(self.regs.idtr.limit) {
            return Err(Fault::gp(idt_ec));
        }
        let la = self.regs.idtr.base.wrapping_add(off);
        let lo = self.read_sys(ctx, la, 8)?;
        let hi = if long { self.read_sys(ctx, la + 8, 8)? } else { 0 };
        let g = Gate::from_raw(lo, hi);
        let ok_type = if long {
            matches!(g.typ, sys::INT | sys::TRAP)
        } else {
            matches!(g.typ, sys::INT | sys::TRAP | sys::INT16 | sys::TRAP16 | sys::TASK)
        };
        if !ok_type || lo & (1 << 44) != 0 {
            return Err(Fault::gp(idt_ec));
        }
        if kind.soft() && g.dpl < self.cpl {
            return Err(Fault::gp(idt_ec));
        }
        if !g.present {
            return Err(Fault::np(idt_ec));
        }
        Ok(g)
    }

    fn deliver_long(
        &mut self,
        ctx: &mut Ctx,
        vec: u8,
        kind: EventKind,
        ec: Option<u32>,
        rflags: u64,
        ret: u64,
    ) -> Result<Entry, Fault> {
        let ext = kind.ext();
        let g = self.idt_gate(ctx, vec, kind, true)?;
        let d = self.read_descriptor(ctx, g.selector, ext)?;
        let desc = d.desc;
        if g.selector & !3 == 0 {
            return Err(Fault::gp(u32::from(ext)));
        }
        if !desc.is_code() || desc.dpl() > self.cpl || desc.ar & ar::L == 0 || desc.ar & ar::DB != 0 {
            return Err(Fault::gp(sel_ec(g.selector, ext)));
        }
        if !desc.present() {
            return Err(Fault::np(sel_ec(g.selector, ext)));
        }
        let conforming = desc.ar & ar::DC != 0;
        let new_cpl = if conforming { self.cpl } else { desc.dpl() };
        let mut rsp = self.regs.gpr[4];
        let mut new_ss = None;
        if new_cpl < self.cpl {
            rsp = self.tss64_rsp(ctx, new_cpl as usize)?;
            new_ss = Some(Segment {
                selector: u16::from(new_cpl),
                base: 0,
                limit: 0,
                ar: ar::UNUSABLE | (u32::from(new_cpl) << ar::DPL_SHIFT),
            });
        }
        if g.ist != 0 {
            rsp = self.tss64_ist(ctx, g.ist as usize)?;
        }
        if !self.canonical(g.offset) {
            return Err(Fault::gp(u32::from(ext)));
        }
        rsp &= !0xf;
        let old_ss = self.regs.seg[sreg::SS].selector;
        let mut frame = [0u64; 6];
        let mut n = 0;
        for v in [u64::from(old_ss), self.regs.gpr[4], rflags, u64::from(self.regs.seg[sreg::CS].selector), ret] {
            frame[n] = v;
            n += 1;
        }
        if let Some(e) = ec {
            frame[n] = u64::from(e);
            n += 1;
        }
        let mut p = rsp;
        for &v in &frame[..n] {
            p = p.wrapping_sub(8);
            if !self.canonical(p) {
                return Err(Fault::ss(u32::from(ext)));
            }
            self.push_sys(ctx, p, 8, v, new_cpl)?;
        }
        let mut cs = Cpu::seg_from_desc((g.selector & !3) | u16::from(new_cpl), &desc);
        cs.selector = (g.selector & !3) | u16::from(new_cpl);
        self.set_accessed(ctx, &d)?;
        Ok(Entry { cs, rip: g.offset, ss: new_ss, rsp: p, clear_if: g.typ == sys::INT, task: false })
    }

    fn deliver_protected(
        &mut self,
        ctx: &mut Ctx,
        vec: u8,
        kind: EventKind,
        ec: Option<u32>,
        rflags: u64,
        ret: u64,
    ) -> Result<Entry, Fault> {
        let ext = kind.ext();
        let g = self.idt_gate(ctx, vec, kind, false)?;
        if g.typ == sys::TASK {
            return self.deliver_task_gate(ctx, g.selector, ec, ret);
        }
        if g.selector & !3 == 0 {
            return Err(Fault::gp(u32::from(ext)));
        }
        let d = self.read_descriptor(ctx, g.selector, ext)?;
        let desc = d.desc;
        if !desc.is_code() || desc.dpl() > self.cpl {
            return Err(Fault::gp(sel_ec(g.selector, ext)));
        }
        if !desc.present() {
            return Err(Fault::np(sel_ec(g.selector, ext)));
        }
        let gate32 = matches!(g.typ, sys::INT | sys::TRAP);
        let size: u8 = if gate32 { 4 } else { 2 };
        let conforming = desc.ar & ar::DC != 0;
        let vm86 = self.mode == Mode::Vm86;
        let new_cpl = if conforming { self.cpl } else { desc.dpl() };
        if vm86 && new_cpl != 0 {
            return Err(Fault::gp(sel_ec(g.selector, ext)));
        }
        let mut frame: Vec<u64> = Vec::with_capacity(10);
        let (ss_seg, mut sp, new_ss) = if new_cpl < self.cpl {
            let (ss_sel, esp) = self.tss32_stack(ctx, new_cpl, ext)?;
            let ss = self.check_tss_ss(ctx, ss_sel, new_cpl, ext)?;
            if vm86 {
                for r in [sreg::GS, sreg::FS, sreg::DS, sreg::ES] {
                    frame.push(u64::from(self.regs.seg[r].selector));
                }
            }
            frame.push(u64::from(self.regs.seg[sreg::SS].selector));
            frame.push(self.regs.gpr[4]);
            (ss, esp, Some(ss))
        } else {
            (self.regs.seg[sreg::SS], self.regs.gpr[4], None)
        };
        frame.push(rflags);
        frame.push(u64::from(self.regs.seg[sreg::CS].selector));
        frame.push(ret);
        if let Some(e) = ec {
            frame.push(u64::from(e));
        }
        let mask = if ss_seg.ar & ar::DB != 0 { 0xffff_ffff } else { 0xffff };
        // Pushes go in order; vm86 segment pushes are 32-bit words too.
        let mut p = sp & mask;
        for &v in &frame {
            p = p.wrapping_sub(u64::from(size)) & mask;
            if p > u64::from(ss_seg.limit) && ss_seg.ar & ar::DC == 0 {
                return Err(Fault::ss(u32::from(ext)));
            }
            let la = ss_seg.base.wrapping_add(p) & 0xffff_ffff;
            self.push_sys(ctx, la, size, v, new_cpl)?;
        }
        sp = (sp & !mask) | p;
        let mut cs = Cpu::seg_from_desc((g.selector & !3) | u16::from(new_cpl), &desc);
        cs.selector = (g.selector & !3) | u16::from(new_cpl);
        self.set_accessed(ctx, &d)?;
        if vm86 {
            for r in [sreg::GS, sreg::FS, sreg::DS, sreg::ES] {
                self.regs.seg[r] = Cpu::null_seg(0);
            }
        }
        let clear_if = matches!(g.typ, sys::INT | sys::INT16);
        Ok(Entry { cs, rip: g.offset & 0xffff_ffff, ss: new_ss, rsp: sp, clear_if, task: false })
    }

    /// An interrupt or exception through a task gate: a nested task
    /// switch, then the error code on the new task's stack (SDM 6.12.2
    /// "Interrupt Tasks").
    fn deliver_task_gate(&mut self, ctx: &mut Ctx, tss_sel: u16, ec: Option<u32>, ret: u64) -> Result<Entry, Fault> {
        if tss_sel & 4 != 0 {
            return Err(Fault::ts(sel_ec(tss_sel, true)));
        }
        let d = self.read_descriptor(ctx, tss_sel, true)?;
        self.task_switch(ctx, tss_sel, &d, crate::task::TaskSwitchSource::Call, ret)?;
        if let Some(e) = ec {
            let size = if self.regs.seg[sreg::SS].ar & ar::DB != 0 { 4 } else { 2 };
            self.push(ctx, size, u64::from(e))?;
        }
        Ok(Entry {
            cs: self.regs.seg[sreg::CS],
            rip: self.regs.rip,
            ss: None,
            rsp: self.regs.gpr[4],
            clear_if: false,
            task: true,
        })
    }

    /// Writes one value of an event frame as a supervisor (or same-level)
    /// access.
    fn push_sys(&mut self, ctx: &mut Ctx, la: u64, size: u8, v: u64, new_cpl: u8) -> Result<(), Fault> {
        self.write_as(ctx, la, size, v, new_cpl == 3)
    }

    /// RSPn from the 64-bit TSS (SDM vol. 3A, 8.7 "Task Management in
    /// 64-bit Mode").
    pub(crate) fn tss64_rsp(&mut self, ctx: &mut Ctx, n: usize) -> Result<u64, Fault> {
        self.tss_read(ctx, 4 + 8 * n as u64, 8)
    }

    fn tss64_ist(&mut self, ctx: &mut Ctx, n: usize) -> Result<u64, Fault> {
        self.tss_read(ctx, 36 + 8 * (n as u64 - 1), 8)
    }

    /// Reads `size` bytes at `off` in the current TSS, #TS if beyond its
    /// limit.
    pub(crate) fn tss_read(&mut self, ctx: &mut Ctx, off: u64, size: u8) -> Result<u64, Fault> {
        let tr = self.regs.tr;
        if off + u64::from(size) - 1 > u64::from(tr.limit) {
            return Err(Fault::ts(sel_ec(tr.selector, true)));
        }
        self.read_sys(ctx, tr.base.wrapping_add(off), size)
    }

    /// SSn:ESPn of a 32-bit (or 16-bit) TSS.
    pub(crate) fn tss32_stack(&mut self, ctx: &mut Ctx, cpl: u8, _ext: bool) -> Result<(u16, u64), Fault> {
        let t = self.regs.tr.ar & 0xf;
        if t == sys::TSS16_BUSY || t == sys::TSS16_AVAIL {
            let sp = self.tss_read(ctx, 2 + 4 * u64::from(cpl), 2)?;
            let ss = self.tss_read(ctx, 4 + 4 * u64::from(cpl), 2)?;
            Ok((ss as u16, sp))
        } else {
            let esp = self.tss_read(ctx, 4 + 8 * u64::from(cpl), 4)?;
            let ss = self.tss_read(ctx, 8 + 8 * u64::from(cpl), 2)?;
            Ok((ss as u16, esp))
        }
    }

    /// Checks the stack segment named by a TSS for a privilege change
    /// (#TS on every violation, #SS if not present).
    pub(crate) fn check_tss_ss(&mut self, ctx: &mut Ctx, sel: u16, cpl: u8, ext: bool) -> Result<Segment, Fault> {
        let ec = sel_ec(sel, ext);
        if sel & !3 == 0 || (sel & 3) as u8 != cpl {
            return Err(Fault::ts(ec));
        }
        let d = self.read_descriptor(ctx, sel, ext).map_err(|_| Fault::ts(ec))?;
        let desc = d.desc;
        if !desc.is_code_data() || desc.is_code() || desc.ar & ar::RW == 0 || desc.dpl() != cpl {
            return Err(Fault::ts(ec));
        }
        if !desc.present() {
            return Err(Fault::ss(ec));
        }
        self.set_accessed(ctx, &d)?;
        Ok(Cpu::seg_from_desc(sel, &desc))
    }

    /// Between blocks: takes a pending NMI or maskable interrupt if the
    /// processor can accept it (SDM 6.8 "Enabling and Disabling
    /// Interrupts", 6.8.3 interrupt shadows).
    pub(crate) fn check_interrupts(&mut self, ctx: &mut Ctx) {
        if self.activity == Activity::Shutdown || self.activity == Activity::WaitForSipi {
            return;
        }
        let shadow = self.icount == self.inhibit_at;
        if shadow {
            // Look again after the next instruction.
            self.events |= events::IRQ;
            return;
        }
        let now = self.now_ns();
        if self.non_root && self.nonroot_event_exits(ctx, now) {
            return;
        }
        if !self.nmi_blocked && ctx.bus.take_nmi() {
            let rip = self.regs.rip;
            if let Err(f) = self.deliver(ctx, vector::NMI, EventKind::Nmi, None, rip) {
                self.deliver_exception(ctx, f, rip);
            }
            return;
        }
        if self.regs.flag(Rflags::IF) && ctx.bus.interrupt_pending(now) {
            if let Some(v) = ctx.bus.ack_interrupt(now) {
                let rip = self.regs.rip;
                if let Err(f) = self.deliver(ctx, v, EventKind::External, None, rip) {
                    self.deliver_exception(ctx, f, rip);
                }
            }
        }
    }

    /// Between instructions in non-root operation: the events that exit
    /// rather than being delivered (SDM vol. 3C, 26.2: NMIs with "NMI
    /// exiting", external interrupts with "external-interrupt exiting" —
    /// whatever RFLAGS.IF says —, and the NMI and interrupt windows of
    /// 27.7.5/27.7.6 once nothing blocks them). Returns whether an exit
    /// was committed.
    fn nonroot_event_exits(&mut self, ctx: &mut Ctx, now: u64) -> bool {
        use crate::virt::PendingExit;
        use vmx::controls::{ExitCtls, InterruptionType, PinCtls, ProcCtls};
        use vmx::ExitReason;
        let c = self.vmx_ctls();
        let (pin, proc, exit_ctls) = (c.pin, c.proc, c.exit);
        let mut exit = None;
        if pin.contains(PinCtls::NMI_EXITING) && !self.nmi_blocked && ctx.bus.take_nmi() {
            let mut e = PendingExit::event(ExitReason::ExceptionOrNmi, 0);
            let info = u32::from(vector::NMI) | ((InterruptionType::Nmi as u32) << 8) | (1 << 31);
            e.interruption = Some((info, None));
            exit = Some(e);
        } else if pin.contains(PinCtls::EXTERNAL_INTERRUPT_EXITING) && ctx.bus.interrupt_pending(now) {
            let mut e = PendingExit::event(ExitReason::ExternalInterrupt, 0);
            if exit_ctls.contains(ExitCtls::ACK_INTERRUPT_ON_EXIT) {
                if let Some(v) = ctx.bus.ack_interrupt(now) {
                    e.interruption = Some((u32::from(v) | (1 << 31), None));
                }
            }
            exit = Some(e);
        } else if proc.contains(ProcCtls::NMI_WINDOW_EXITING) && !self.nmi_blocked {
            exit = Some(PendingExit::event(ExitReason::NmiWindow, 0));
        } else if proc.contains(ProcCtls::INTERRUPT_WINDOW_EXITING) && self.regs.flag(Rflags::IF) {
            exit = Some(PendingExit::event(ExitReason::InterruptWindow, 0));
        }
        match exit {
            Some(e) => {
                self.vmx.pending = Some(e);
                self.vmx.vectoring = None;
                self.commit_exit(ctx);
                true
            }
            None => false,
        }
    }

    /// Before an instruction on the single-step path: instruction
    /// breakpoints (DR0-DR3 with R/W = 00). Returns false when a #DB was
    /// delivered instead of executing (SDM 18.3.1.1 "Instruction-Breakpoint
    /// Exception Condition").
    pub(crate) fn debug_before(&mut self, ctx: &mut Ctx, _insn: &Instruction) -> bool {
        self.tf_before = self.regs.flag(Rflags::TF);
        self.db_hits = 0;
        if self.regs.flag(Rflags::RF) {
            return true;
        }
        let dr7 = self.regs.dr[7];
        let la = self.regs.seg[sreg::CS].base.wrapping_add(self.regs.rip);
        let la = if self.mode == Mode::Long { self.regs.rip } else { la & 0xffff_ffff };
        let mut hits = 0u64;
        for i in 0..4 {
            let enabled = (dr7 >> (i * 2)) & 3 != 0;
            let rw = (dr7 >> (16 + i * 4)) & 3;
            if enabled && rw == 0 && self.regs.dr[i] == la {
                hits |= 1 << i;
            }
        }
        if hits != 0 {
            self.regs.dr[6] = (self.regs.dr[6] & !0xf) | hits | 0xffff_0ff0;
            let rip = self.regs.rip;
            self.deliver_exception(ctx, Fault::db(), rip);
            // The handler's IRET sets RF so the instruction can run.
            return false;
        }
        true
    }

    /// After an instruction on the single-step path: single-step trap and
    /// data/I-O breakpoint traps (SDM 18.3.1.2-18.3.1.4).
    pub(crate) fn debug_after(&mut self, ctx: &mut Ctx) {
        // RF is cleared after any instruction completes (IRET/POPF that set
        // it keep it: they restore RF from the image).
        if !self.rf_set_by_insn {
            self.regs.rflags &= !Rflags::RF.bits();
        }
        self.rf_set_by_insn = false;
        let mut dr6 = 0u64;
        if self.tf_before {
            dr6 |= 1 << 14; // BS
        }
        dr6 |= self.db_hits;
        self.db_hits = 0;
        if dr6 != 0 {
            self.regs.dr[6] = (self.regs.dr[6] & !0xf) | dr6 | 0xffff_0ff0;
            let rip = self.regs.rip;
            self.deliver_exception(ctx, Fault::db(), rip);
        }
    }

    /// Records a data breakpoint match of an access (R/W = 01 writes, 11
    /// reads or writes), reported as a trap after the instruction.
    pub(crate) fn check_data_breakpoint(&mut self, la: u64, size: u8, write: bool) {
        let dr7 = self.regs.dr[7];
        if dr7 & 0xff == 0 {
            return;
        }
        for i in 0..4 {
            let enabled = (dr7 >> (i * 2)) & 3 != 0;
            let rw = (dr7 >> (16 + i * 4)) & 3;
            let len = match (dr7 >> (18 + i * 4)) & 3 {
                0 => 1,
                1 => 2,
                3 => 4,
                _ => 8,
            };
            let hit_kind = rw == 3 || (rw == 1 && write);
            let start = self.regs.dr[i] & !(len - 1);
            if enabled && hit_kind && la < start + len && start < la + u64::from(size) {
                self.db_hits |= 1 << i;
            }
        }
    }

    /// Records an I/O breakpoint match (R/W = 10 with CR4.DE).
    pub(crate) fn check_io_breakpoint(&mut self, port: u16, size: u8) {
        let dr7 = self.regs.dr[7];
        if dr7 & 0xff == 0 || self.regs.cr4 & x86::Cr4::DE.bits() == 0 {
            return;
        }
        for i in 0..4 {
            let enabled = (dr7 >> (i * 2)) & 3 != 0;
            let rw = (dr7 >> (16 + i * 4)) & 3;
            let start = self.regs.dr[i] & 0xffff;
            if enabled && rw == 2 && u64::from(port) < start + 4 && start < u64::from(port) + u64::from(size) {
                self.db_hits |= 1 << i;
            }
        }
    }
}
