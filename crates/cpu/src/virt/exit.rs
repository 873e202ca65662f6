//! VM exit (SDM vol. 3C, ch. 28 "VM Exits"): 28.2 "Recording VM-Exit
//! Information and Updating VM-Entry Control Fields", 28.3 "Saving Guest
//! State", 28.4 "Saving MSRs", 28.5 "Loading Host State", 28.6 "Loading
//! MSRs".

use super::entry::{msr_entry, GUEST_LDTR, GUEST_SEGS, GUEST_TR};
use super::{PendingExit, EXIT_REASONS};
use crate::state::{DescTable, Regs, Segment};
use crate::{events, Activity, Cpu, Ctx};
use vmx::controls::{ExitCtls, Interruptibility};
use vmx::{Vmcs, VmcsField as F};
use x86::seg::{ar, sreg};
use x86::{Cr0, Cr4, Efer};

impl Cpu {
    /// Performs the staged VM exit: records the exit information, saves
    /// guest state and MSRs, loads host state and MSRs, and leaves the run
    /// loop with [`crate::RunExit::VmExit`].
    #[cold]
    pub(crate) fn commit_exit(&mut self, ctx: &mut Ctx) {
        let Some(e) = self.vmx.pending.take() else { return };
        let vectoring = self.vmx.vectoring.take();
        self.record_exit_info(&e, vectoring);
        self.save_guest_state();
        self.store_exit_msrs(ctx);
        self.load_host_state(ctx);
        self.vmx.exits[(e.reason & 0xffff) as usize % EXIT_REASONS] += 1;
    }

    /// 28.2: exit reason, qualification, addresses, interruption and
    /// IDT-vectoring information, instruction length and information; the
    /// valid bit of the VM-entry interruption information is cleared.
    fn record_exit_info(&mut self, e: &PendingExit, vectoring: Option<(u32, Option<u32>)>) {
        let len = if e.instruction { self.next_rip.wrapping_sub(self.regs.rip) & 0xf } else { 0 };
        let Some(v) = self.vmx.current.as_deref_mut() else { return };
        v.set(F::ExitReason, u64::from(e.reason));
        v.set(F::ExitQualification, e.qualification);
        v.set(F::GuestLinearAddress, e.guest_linear.unwrap_or(0));
        v.set(F::GuestPhysicalAddress, e.guest_physical.unwrap_or(0));
        let (info, code) = e.interruption.unwrap_or((0, None));
        v.set(F::ExitInterruptionInfo, u64::from(info));
        v.set(F::ExitInterruptionErrorCode, u64::from(code.unwrap_or(0)));
        let (vinfo, vcode) = vectoring.unwrap_or((0, None));
        v.set(F::IdtVectoringInfo, u64::from(vinfo));
        v.set(F::IdtVectoringErrorCode, u64::from(vcode.unwrap_or(0)));
        v.set(F::ExitInstructionLength, len);
        v.set(F::ExitInstructionInfo, u64::from(e.instruction_info));
        let entry_info = v.get(F::EntryInterruptionInfo);
        v.set(F::EntryInterruptionInfo, entry_info & !(1 << 31));
    }

    /// Saves the guest state after L0's instruction emulator ran
    /// (everything but the preemption timer, which did not run).
    pub(super) fn save_guest_state_at_emulation(&mut self) {
        self.save_guest_state_inner(false);
    }

    /// 28.3 "Saving Guest State".
    fn save_guest_state(&mut self) {
        self.save_guest_state_inner(true);
    }

    fn save_guest_state_inner(&mut self, timer: bool) {
        let ctls = self.vmx.ctls;
        let rflags = self.regs.rflags();
        let mut intr = Interruptibility::empty();
        if self.inhibit_at == self.icount {
            intr |= if self.ss_shadow_at == self.icount {
                Interruptibility::BLOCKING_BY_MOV_SS
            } else {
                Interruptibility::BLOCKING_BY_STI
            };
        }
        if self.nmi_blocked {
            intr |= Interruptibility::BLOCKING_BY_NMI;
        }
        let activity = match self.activity {
            Activity::Active => 0,
            Activity::Halted => 1,
            Activity::Shutdown => 2,
            Activity::WaitForSipi => 3,
        };
        let timer_left = if timer && ctls.exit.contains(ExitCtls::SAVE_PREEMPTION_TIMER) {
            let rate = self.vmx.caps.map_or(0, |c| c.misc().preemption_timer_rate);
            let left_ns = self.vmx.preemption_deadline.saturating_sub(self.icount);
            Some((left_ns * (crate::TSC_KHZ / 1_000_000)) >> rate)
        } else {
            None
        };
        let Some(v) = self.vmx.current.as_deref_mut() else { return };
        write_guest_registers(v, &self.regs, rflags, ctls.exit);
        v.set(F::GuestInterruptibilityState, u64::from(intr.bits()));
        v.set(F::GuestActivityState, activity);
        v.set(F::GuestPendingDebugExceptions, 0);
        if let Some(t) = timer_left {
            v.set(F::PreemptionTimerValue, t);
        }
    }

    /// 28.4 "Saving MSRs": the VM-exit MSR-store list.
    fn store_exit_msrs(&mut self, ctx: &mut Ctx) {
        let count = self.vmread(F::ExitMsrStoreCount) as u32;
        let base = self.vmread(F::ExitMsrStoreAddress);
        for i in 0..count {
            let Some(entry) = msr_entry(ctx.mem, base, i) else { break };
            // A failing read is a VMX abort on hardware; the guest's value
            // slot keeps what it had here.
            if let Ok(value) = self.rdmsr(ctx, entry.index) {
                let _ = ctx.mem.write_u64(base + u64::from(i) * 16 + 8, value);
            }
        }
    }

    /// 28.5 "Loading Host State" and 28.6 "Loading MSRs". Afterwards the
    /// processor is in root operation, running L0's host context.
    pub(crate) fn load_host_state(&mut self, ctx: &mut Ctx) {
        let ctls = self.vmx.ctls;
        self.non_root = false;
        self.vmx.preemption_deadline = u64::MAX;
        let Some(v) = self.vmx.current.as_deref() else { return };
        let host64 = ctls.exit.contains(ExitCtls::HOST_ADDRESS_SPACE_SIZE);
        let r = &mut self.regs;
        // CR0.PE, PG (set by the checks), and the bits the SDM says are
        // kept, come from the host field as a whole here.
        r.cr0 = v.get(F::HostCr0) | Cr0::ET.bits();
        r.cr3 = v.get(F::HostCr3);
        r.cr4 = v.get(F::HostCr4) | if host64 { Cr4::PAE.bits() } else { 0 };
        r.dr[7] = 0x400;
        r.msr.debugctl = 0;
        r.msr.sysenter_cs = v.get(F::HostIa32SysenterCs);
        r.msr.sysenter_esp = v.get(F::HostIa32SysenterEsp);
        r.msr.sysenter_eip = v.get(F::HostIa32SysenterEip);
        if ctls.exit.contains(ExitCtls::LOAD_PAT) {
            r.msr.pat = v.get(F::HostIa32Pat);
        }
        let lm = (Efer::LMA | Efer::LME).bits();
        if ctls.exit.contains(ExitCtls::LOAD_EFER) {
            r.efer = v.get(F::HostIa32Efer);
        } else {
            r.efer = (r.efer & !lm) | if host64 { lm } else { 0 };
        }
        let flat = ar::P | ar::S | ar::G | ar::ACCESSED;
        let data = |sel: F, base: u64| {
            let selector = v.get(sel) as u16;
            // A null selector leaves the register unusable (28.5.2).
            let access = if selector == 0 { ar::UNUSABLE } else { flat | ar::RW | ar::DB };
            Segment { selector, base, limit: 0xffff_ffff, ar: access }
        };
        r.seg[sreg::CS] = Segment {
            selector: v.get(F::HostCsSelector) as u16,
            base: 0,
            limit: 0xffff_ffff,
            ar: flat | ar::CODE | ar::RW | if host64 { ar::L } else { ar::DB },
        };
        r.seg[sreg::SS] = data(F::HostSsSelector, 0);
        r.seg[sreg::DS] = data(F::HostDsSelector, 0);
        r.seg[sreg::ES] = data(F::HostEsSelector, 0);
        r.seg[sreg::FS] = data(F::HostFsSelector, v.get(F::HostFsBase));
        r.seg[sreg::GS] = data(F::HostGsSelector, v.get(F::HostGsBase));
        r.tr = Segment {
            selector: v.get(F::HostTrSelector) as u16,
            base: v.get(F::HostTrBase),
            limit: 0x67,
            ar: ar::P | x86::seg::sys::TSS_BUSY,
        };
        r.ldtr = Segment { selector: 0, base: 0, limit: 0, ar: ar::UNUSABLE };
        r.gdtr = DescTable { base: v.get(F::HostGdtrBase), limit: 0xffff };
        r.idtr = DescTable { base: v.get(F::HostIdtrBase), limit: 0xffff };
        r.rip = v.get(F::HostRip);
        r.gpr[4] = v.get(F::HostRsp);
        r.set_rflags(0);
        self.activity = Activity::Active;
        self.inhibit_at = u64::MAX;
        self.ss_shadow_at = u64::MAX;
        self.ept = None;
        self.vmx_tsc_offset = 0;
        // Without a VPID the guest's translations are not tagged and go.
        if ctls.vpid == 0 {
            self.state_changed();
        } else {
            self.state_changed_light();
        }
        // 28.6: the VM-exit MSR-load list (a bad entry is a VMX abort on
        // hardware; here it is skipped).
        let count = self.vmread(F::ExitMsrLoadCount) as u32;
        let base = self.vmread(F::ExitMsrLoadAddress);
        for i in 0..count {
            let Some(entry) = msr_entry(ctx.mem, base, i) else { break };
            let _ = self.wrmsr(ctx, entry.index, entry.value);
        }
        self.events |= events::VM_EXIT | events::STOP;
    }
}

/// Writes the register part of the guest-state area from `r` (SDM 28.3.1
/// "Saving Control Registers, Debug Registers, and MSRs", 28.3.2 "Saving
/// Segment Registers and Descriptor-Table Registers", 28.3.3 "Saving RIP,
/// RSP, RFLAGS, and SSP"), honouring the "save debug controls", "save
/// IA32_PAT" and "save IA32_EFER" exit controls. L0 also uses it to seed
/// a new VMCS from a vCPU's reset or loader state; `rflags` is RFLAGS with
/// the status flags materialized ([`crate::Regs::rflags`]).
pub fn write_guest_registers(v: &mut Vmcs, r: &Regs, rflags: u64, exit: ExitCtls) {
    v.set(F::GuestCr0, r.cr0);
    v.set(F::GuestCr3, r.cr3);
    v.set(F::GuestCr4, r.cr4);
    if exit.contains(ExitCtls::SAVE_DEBUG_CONTROLS) {
        v.set(F::GuestDr7, r.dr[7]);
        v.set(F::GuestIa32Debugctl, r.msr.debugctl);
    }
    v.set(F::GuestIa32SysenterCs, r.msr.sysenter_cs);
    v.set(F::GuestIa32SysenterEsp, r.msr.sysenter_esp);
    v.set(F::GuestIa32SysenterEip, r.msr.sysenter_eip);
    if exit.contains(ExitCtls::SAVE_PAT) {
        v.set(F::GuestIa32Pat, r.msr.pat);
    }
    if exit.contains(ExitCtls::SAVE_EFER) {
        v.set(F::GuestIa32Efer, r.efer);
    }
    let save = |v: &mut Vmcs, f: &[F; 4], s: &Segment| {
        v.set(f[0], u64::from(s.selector));
        v.set(f[1], s.base);
        v.set(f[2], u64::from(s.limit));
        v.set(f[3], u64::from(s.ar & 0x1_f0ff));
    };
    for (i, f) in GUEST_SEGS.iter().enumerate() {
        save(v, f, &r.seg[i]);
    }
    save(v, &GUEST_LDTR, &r.ldtr);
    save(v, &GUEST_TR, &r.tr);
    v.set(F::GuestGdtrBase, r.gdtr.base);
    v.set(F::GuestGdtrLimit, u64::from(r.gdtr.limit));
    v.set(F::GuestIdtrBase, r.idtr.base);
    v.set(F::GuestIdtrLimit, u64::from(r.idtr.limit));
    // Faults and instruction exits leave RIP at the instruction;
    // traps (and events between instructions) at the next one, which
    // is where `regs.rip` already points.
    v.set(F::GuestRip, r.rip);
    v.set(F::GuestRsp, r.gpr[4]);
    v.set(F::GuestRflags, rflags);
}
