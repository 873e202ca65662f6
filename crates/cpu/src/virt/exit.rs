//! VM exit (SDM vol. 3C, ch. 28 "VM Exits"): 28.2 "Recording VM-Exit
//! Information and Updating VM-Entry Control Fields", 28.3 "Saving Guest
//! State", 28.4 "Saving MSRs", 28.5 "Loading Host State", 28.6 "Loading
//! MSRs".

use super::entry::msr_entry;
use super::field;
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
        // An exact round trip with no MSR-load list to run parks the
        // guest's registers instead of saving them and loading host state
        // (`cache.rs`); non-register state is saved either way.
        let park = self.vmx.state_cache && self.vmx.ctls.exact_round_trip && self.vmx.ctls.exit_msr_loads == 0;
        self.save_guest_state_inner(true, !park);
        if self.vmx.ctls.exit_msr_stores != 0 {
            self.store_exit_msrs(ctx);
        }
        if park {
            self.park_guest();
        } else {
            self.load_host_state(ctx);
        }
        self.vmx.exits[(e.reason & 0xffff) as usize % EXIT_REASONS] += 1;
    }

    /// 28.2: exit reason, qualification, addresses, interruption and
    /// IDT-vectoring information, instruction length and information; the
    /// valid bit of the VM-entry interruption information is cleared.
    fn record_exit_info(&mut self, e: &PendingExit, vectoring: Option<(u32, Option<u32>)>) {
        // The length of the instruction that exited, or (28.2.4) of the
        // INT n/INT3/INTO/INT1 whose delivery an exit interrupted.
        let soft_vectoring = vectoring.is_some_and(|(info, _)| matches!((info >> 8) & 7, 4..=6));
        let len = if e.instruction || soft_vectoring { self.next_rip.wrapping_sub(self.regs.rip) & 0xf } else { 0 };
        let Some(v) = self.vmx.current.as_deref_mut() else { return };
        // The processor's own writes: not software's, nothing to re-check.
        let a = v.slots_mut();
        field!(a, ExitReason) = u64::from(e.reason);
        field!(a, ExitQualification) = e.qualification;
        field!(a, GuestLinearAddress) = e.guest_linear.unwrap_or(0);
        field!(a, GuestPhysicalAddress) = e.guest_physical.unwrap_or(0);
        let (info, code) = e.interruption.unwrap_or((0, None));
        field!(a, ExitInterruptionInfo) = u64::from(info);
        field!(a, ExitInterruptionErrorCode) = u64::from(code.unwrap_or(0));
        let (vinfo, vcode) = vectoring.unwrap_or((0, None));
        field!(a, IdtVectoringInfo) = u64::from(vinfo);
        field!(a, IdtVectoringErrorCode) = u64::from(vcode.unwrap_or(0));
        field!(a, ExitInstructionLength) = len;
        field!(a, ExitInstructionInfo) = u64::from(e.instruction_info);
        field!(a, EntryInterruptionInfo) &= !(1 << 31);
    }

    /// Saves the guest state after L0's instruction emulator ran
    /// (everything but the preemption timer, which did not run).
    pub(super) fn save_guest_state_at_emulation(&mut self) {
        self.save_guest_state_inner(false, true);
    }

    /// 28.3 "Saving Guest State": the registers (unless they stay parked,
    /// `registers` false), then interruptibility, activity, pending debug
    /// exceptions and (with `timer`) the preemption timer.
    pub(super) fn save_guest_state_inner(&mut self, timer: bool, registers: bool) {
        let exit = self.vmx.ctls.exit;
        let rflags = if registers { self.regs.rflags() } else { 0 };
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
        let timer_left = if timer && exit.contains(ExitCtls::SAVE_PREEMPTION_TIMER) {
            let rate = self.vmx.caps.map_or(0, |c| c.misc().preemption_timer_rate);
            let left_ns = self.vmx.preemption_deadline.saturating_sub(self.icount);
            Some((left_ns * (crate::TSC_KHZ / 1_000_000)) >> rate)
        } else {
            None
        };
        let Some(v) = self.vmx.current.as_deref_mut() else { return };
        if registers {
            write_guest_registers(v, &self.regs, rflags, exit);
        }
        let a = v.slots_mut();
        field!(a, GuestInterruptibilityState) = u64::from(intr.bits());
        field!(a, GuestActivityState) = activity;
        field!(a, GuestPendingDebugExceptions) = 0;
        if let Some(t) = timer_left {
            field!(a, PreemptionTimerValue) = t;
        }
    }

    /// 28.4 "Saving MSRs": the VM-exit MSR-store list.
    fn store_exit_msrs(&mut self, ctx: &mut Ctx) {
        let count = self.vmx.ctls.exit_msr_stores;
        if count == 0 {
            return;
        }
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
        self.load_host_registers();
        // 28.6: the VM-exit MSR-load list (a bad entry is a VMX abort on
        // hardware; here it is skipped).
        let count = self.vmx.ctls.exit_msr_loads;
        let base = self.vmread(F::ExitMsrLoadAddress);
        for i in 0..count {
            let Some(entry) = msr_entry(ctx.mem, base, i) else { break };
            let _ = self.wrmsr(ctx, entry.index, entry.value);
        }
        self.events |= events::VM_EXIT | events::STOP;
    }

    /// The register part of 28.5: the host context, root operation.
    pub(super) fn load_host_registers(&mut self) {
        let vpid = self.vmx.ctls.vpid;
        self.non_root = false;
        self.vmx.preemption_deadline = u64::MAX;
        // The host context depends only on host-state and control fields:
        // it is computed once and reused until one of them is written.
        if self.vmx.host_context.is_none() {
            let Some(v) = self.vmx.current.as_deref() else { return };
            self.vmx.host_context = Some(HostContext::from_vmcs(v, self.vmx.ctls.exit));
        }
        if let Some(host) = self.vmx.host_context.as_ref() {
            host.apply(&mut self.regs);
        }
        self.activity = Activity::Active;
        self.inhibit_at = u64::MAX;
        self.ss_shadow_at = u64::MAX;
        self.ept = None;
        self.vmx_tsc_offset = 0;
        // Without a VPID the guest's translations are not tagged and go.
        if vpid == 0 {
            self.state_changed();
        } else {
            self.state_changed_light();
        }
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
    use super::slots as S;
    // Slot-indexed: this runs on every exit. Every value fits its field.
    let a = v.slots_mut();
    a[S::GUEST_CR0] = r.cr0;
    a[S::GUEST_CR3] = r.cr3;
    a[S::GUEST_CR4] = r.cr4;
    if exit.contains(ExitCtls::SAVE_DEBUG_CONTROLS) {
        a[S::GUEST_DR7] = r.dr[7];
        a[S::GUEST_DEBUGCTL] = r.msr.debugctl;
    }
    a[S::GUEST_SYSENTER_CS] = r.msr.sysenter_cs & 0xffff_ffff;
    a[S::GUEST_SYSENTER_ESP] = r.msr.sysenter_esp;
    a[S::GUEST_SYSENTER_EIP] = r.msr.sysenter_eip;
    if exit.contains(ExitCtls::SAVE_PAT) {
        a[S::GUEST_PAT] = r.msr.pat;
    }
    if exit.contains(ExitCtls::SAVE_EFER) {
        a[S::GUEST_EFER] = r.efer;
    }
    let segs = [&r.seg[0], &r.seg[1], &r.seg[2], &r.seg[3], &r.seg[4], &r.seg[5], &r.ldtr, &r.tr];
    for (f, s) in S::GUEST_SEGS.iter().zip(segs) {
        a[f[0]] = u64::from(s.selector);
        a[f[1]] = s.base;
        a[f[2]] = u64::from(s.limit);
        a[f[3]] = u64::from(s.ar & 0x1_f0ff);
    }
    a[S::GUEST_GDTR_BASE] = r.gdtr.base;
    a[S::GUEST_GDTR_LIMIT] = u64::from(r.gdtr.limit);
    a[S::GUEST_IDTR_BASE] = r.idtr.base;
    a[S::GUEST_IDTR_LIMIT] = u64::from(r.idtr.limit);
    // Faults and instruction exits leave RIP at the instruction; traps
    // (and events between instructions) at the next one, which is where
    // `regs.rip` already points.
    a[S::GUEST_RIP] = r.rip;
    a[S::GUEST_RSP] = r.gpr[4];
    a[S::GUEST_RFLAGS] = rflags;
}

/// The register state a VM exit loads (28.5 "Loading Host State"), as
/// computed from the host-state area and the exit controls.
#[derive(Clone, Copy, Debug)]
pub(crate) struct HostContext {
    cr0: u64,
    cr3: u64,
    cr4: u64,
    sysenter: [u64; 3],
    pat: Option<u64>,
    efer: Option<u64>,
    host64: bool,
    seg: [Segment; 6],
    tr: Segment,
    gdtr: DescTable,
    idtr: DescTable,
    rip: u64,
    rsp: u64,
}

impl HostContext {
    fn from_vmcs(v: &Vmcs, exit: ExitCtls) -> HostContext {
        let a = v.slots();
        let host64 = exit.contains(ExitCtls::HOST_ADDRESS_SPACE_SIZE);
        let flat = ar::P | ar::S | ar::G | ar::ACCESSED;
        let data = |selector: u64, base: u64| {
            let selector = selector as u16;
            // A null selector leaves the register unusable (28.5.2).
            let access = if selector == 0 { ar::UNUSABLE } else { flat | ar::RW | ar::DB };
            Segment { selector, base, limit: 0xffff_ffff, ar: access }
        };
        let mut seg = [Segment::default(); 6];
        seg[sreg::CS] = Segment {
            selector: field!(a, HostCsSelector) as u16,
            base: 0,
            limit: 0xffff_ffff,
            ar: flat | ar::CODE | ar::RW | if host64 { ar::L } else { ar::DB },
        };
        seg[sreg::SS] = data(field!(a, HostSsSelector), 0);
        seg[sreg::DS] = data(field!(a, HostDsSelector), 0);
        seg[sreg::ES] = data(field!(a, HostEsSelector), 0);
        seg[sreg::FS] = data(field!(a, HostFsSelector), field!(a, HostFsBase));
        seg[sreg::GS] = data(field!(a, HostGsSelector), field!(a, HostGsBase));
        HostContext {
            // CR0.PE and PG (set by the checks), and the bits the SDM says
            // are kept, come from the host field as a whole here.
            cr0: field!(a, HostCr0) | Cr0::ET.bits(),
            cr3: field!(a, HostCr3),
            cr4: field!(a, HostCr4) | if host64 { Cr4::PAE.bits() } else { 0 },
            sysenter: [field!(a, HostIa32SysenterCs), field!(a, HostIa32SysenterEsp), field!(a, HostIa32SysenterEip)],
            pat: exit.contains(ExitCtls::LOAD_PAT).then(|| field!(a, HostIa32Pat)),
            efer: exit.contains(ExitCtls::LOAD_EFER).then(|| field!(a, HostIa32Efer)),
            host64,
            seg,
            tr: Segment {
                selector: field!(a, HostTrSelector) as u16,
                base: field!(a, HostTrBase),
                limit: 0x67,
                ar: ar::P | x86::seg::sys::TSS_BUSY,
            },
            gdtr: DescTable { base: field!(a, HostGdtrBase), limit: 0xffff },
            idtr: DescTable { base: field!(a, HostIdtrBase), limit: 0xffff },
            rip: field!(a, HostRip),
            rsp: field!(a, HostRsp),
        }
    }

    fn apply(&self, r: &mut Regs) {
        r.cr0 = self.cr0;
        r.cr3 = self.cr3;
        r.cr4 = self.cr4;
        r.dr[7] = 0x400;
        r.msr.debugctl = 0;
        [r.msr.sysenter_cs, r.msr.sysenter_esp, r.msr.sysenter_eip] = self.sysenter;
        if let Some(pat) = self.pat {
            r.msr.pat = pat;
        }
        let lm = (Efer::LMA | Efer::LME).bits();
        r.efer = match self.efer {
            Some(efer) => efer,
            None => (r.efer & !lm) | if self.host64 { lm } else { 0 },
        };
        r.seg = self.seg;
        r.tr = self.tr;
        r.ldtr = Segment { selector: 0, base: 0, limit: 0, ar: ar::UNUSABLE };
        r.gdtr = self.gdtr;
        r.idtr = self.idtr;
        r.rip = self.rip;
        r.gpr[4] = self.rsp;
        r.set_rflags(0);
    }
}
