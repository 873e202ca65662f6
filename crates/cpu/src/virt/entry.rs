//! VM entry (SDM vol. 3C, ch. 27 "VM Entries"): 27.1 "Basic VM-Entry
//! Checks", 27.2-27.3.1 the checks on controls, host state and guest state
//! (run by [`vmx::check_vm_entry`] in SDM order), 27.3.2 "Loading Guest
//! State", 27.4 "Loading MSRs", 27.6 "Event Injection", 27.7.5-27.7.6 the
//! exits pending right after entry (interrupt window, preemption timer),
//! and 27.8 "VM-Entry Failures During or After Loading Guest State".

use super::Controls;
use crate::mem::Memory;
use crate::state::{Regs, Segment};
use crate::{events, Activity, Bus, Cpu, Ctx};
use vmx::check::{check_msr_load_list, EntryFailure};
use vmx::controls::{EntryCtls, Interruptibility, InterruptionType, PinCtls};
use vmx::{Check, EntryEnv, EntryError, EntryMemory, LaunchState, MsrEntry, VmInstructionError, Vmcs, VmcsField};
use x86::seg::ar;
use x86::{Cr0, Efer};

use VmcsField as F;

/// What VMLAUNCH or VMRESUME did (SDM 31.2 "Conventions" for the
/// VMsucceed/VMfail outcomes; 27.8 for failures after the checks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmEntry {
    /// The guest runs: call [`Cpu::run`].
    Entered,
    /// No current VMCS (or not in VMX operation).
    VmFailInvalid,
    /// The entry failed before loading guest state: launch state (errors
    /// 4, 5), or a control or host-state check (7, 8) — `check` says which.
    VmFailValid {
        /// The VM-instruction error, also written to the VMCS.
        error: VmInstructionError,
        /// The check that failed, for errors 7 and 8.
        check: Option<Check>,
    },
    /// A guest-state or MSR-loading check failed: the processor performed
    /// a VM exit with bit 31 of the exit reason set (in the VMCS) and is
    /// back in root operation.
    Failed(EntryError),
}

/// The memory the guest-state checks read: PDPTEs from physical memory,
/// and the header of the VMCS the link pointer names (the linked shadow
/// VMCS's, see `shadow.rs`).
struct PhysMemory<'a> {
    mem: &'a Memory,
    cpu: &'a Cpu,
}

impl EntryMemory for PhysMemory<'_> {
    fn pdptes(&self, cr3: x86::Gpa) -> [u64; 4] {
        let base = cr3.0 & 0xffff_ffe0;
        core::array::from_fn(|i| self.mem.read_u64(base + 8 * i as u64).unwrap_or(u64::MAX))
    }
    fn vmcs_header(&self, addr: x86::Gpa) -> u32 {
        self.cpu.link_header(self.mem.read_u32(addr.0).unwrap_or(u32::MAX))
    }
}

/// Guest segment fields, in [`sreg`] order: selector, base, limit, access
/// rights.
pub(super) const GUEST_SEGS: [[F; 4]; 6] = [
    [F::GuestEsSelector, F::GuestEsBase, F::GuestEsLimit, F::GuestEsAccessRights],
    [F::GuestCsSelector, F::GuestCsBase, F::GuestCsLimit, F::GuestCsAccessRights],
    [F::GuestSsSelector, F::GuestSsBase, F::GuestSsLimit, F::GuestSsAccessRights],
    [F::GuestDsSelector, F::GuestDsBase, F::GuestDsLimit, F::GuestDsAccessRights],
    [F::GuestFsSelector, F::GuestFsBase, F::GuestFsLimit, F::GuestFsAccessRights],
    [F::GuestGsSelector, F::GuestGsBase, F::GuestGsLimit, F::GuestGsAccessRights],
];
/// Guest LDTR fields.
pub(super) const GUEST_LDTR: [F; 4] =
    [F::GuestLdtrSelector, F::GuestLdtrBase, F::GuestLdtrLimit, F::GuestLdtrAccessRights];
/// Guest TR fields.
pub(super) const GUEST_TR: [F; 4] = [F::GuestTrSelector, F::GuestTrBase, F::GuestTrLimit, F::GuestTrAccessRights];

/// Reads one MSR-load/store list entry (SDM 25.7.2 "VM-Exit Controls for
/// MSRs": 16 bytes, index in bits 31:0, reserved 63:32, data 127:64).
pub(super) fn msr_entry(mem: &Memory, base: u64, i: u32) -> Option<MsrEntry> {
    let a = base.checked_add(u64::from(i) * 16)?;
    let lo = mem.read_phys_u64(a).ok()?;
    let data = mem.read_phys_u64(a.checked_add(8)?).ok()?;
    Some(MsrEntry { index: lo as u32, reserved: (lo >> 32) as u32, value: data })
}

impl Cpu {
    /// VMLAUNCH (`launch`) or VMRESUME of the current VMCS, from root
    /// operation: every check of SDM 27.1-27.3.1 in order, then guest
    /// state, the MSR-load list and event injection. On
    /// [`VmEntry::Entered`] the guest runs at the next [`Cpu::run`].
    pub fn vm_enter(&mut self, mem: &mut Memory, bus: &mut dyn Bus, launch: bool) -> VmEntry {
        // Only root operation enters (in non-root operation VMLAUNCH and
        // VMRESUME are exits, which is L0's business, not this API's).
        if self.non_root {
            return VmEntry::VmFailInvalid;
        }
        if self.vmx.caps.is_none() {
            return VmEntry::VmFailInvalid;
        }
        let Some(launch_state) = self.vmx.current.as_deref().map(|v| v.launch_state) else {
            return VmEntry::VmFailInvalid;
        };
        if !launch && self.resume_parked_fast() {
            let mut ctx = Ctx { mem, bus };
            return self.enter_non_root(&mut ctx);
        }
        // 27.1: launch state.
        let state_error = match (launch, launch_state) {
            (true, LaunchState::Launched) => Some(VmInstructionError::VmlaunchNonClearVmcs),
            (false, LaunchState::Clear) => Some(VmInstructionError::VmresumeNonLaunchedVmcs),
            _ => None,
        };
        if let Some(error) = state_error {
            self.vmwrite(F::VmInstructionError, error as u64);
            return VmEntry::VmFailValid { error, check: None };
        }
        let env = EntryEnv {
            maxphyaddr: crate::mmu::MAXPHYADDR as u8,
            linear_width: if self.cpuid.features().la57 { 57 } else { 48 },
            ia32e_mode: true,
        };
        // The decoded controls stay valid until a control is written.
        let written = self.vmx.current.as_deref().map_or(super::dirty::ALL, Vmcs::written);
        let controls_changed = !self.vmx.ctls_valid || written & super::dirty::CONTROLS != 0 || !self.vmx.check_cache;
        if self.vmx.guest_live && !self.parked_entry_exact(controls_changed) {
            self.load_host_context();
        }
        if let Err(e) = self.entry_checks(&env, mem) {
            return self.entry_failed(mem, bus, e);
        }
        if let (true, Some(v)) = (controls_changed, self.vmx.current.as_deref()) {
            self.vmx.ctls = Controls::from_vmcs(v);
        }
        self.vmx.ctls_valid = true;
        if self.vmx.guest_live {
            self.resume_parked(written);
        } else {
            self.load_guest_state();
        }
        let mut ctx = Ctx { mem, bus };
        // 27.4: the MSR-load list, after guest state.
        if let Err(e) = self.load_entry_msrs(&mut ctx) {
            return self.entry_failed(ctx.mem, ctx.bus, e);
        }
        if let Some(v) = self.vmx.current.as_deref_mut() {
            v.launch_state = LaunchState::Launched;
        }
        self.enter_non_root(&mut ctx)
    }

    /// The common VMRESUME after an exit handler moved past an
    /// instruction: the guest is parked, the decoded controls still hold,
    /// and software wrote nothing but RIP and arithmetic flags. Of the
    /// checks, only RIP's can fail (the flags were the guest's own, and
    /// changing arithmetic flags cannot break an RFLAGS check); of 27.3.2,
    /// nothing needs loading. Returns false, having changed nothing, when
    /// the entry must take the full path (which also reports any
    /// failure).
    fn resume_parked_fast(&mut self) -> bool {
        use super::dirty;
        let Some(v) = self.vmx.current.as_deref() else { return false };
        let written = v.written();
        let fast = self.vmx.guest_live
            && self.vmx.ctls_valid
            && self.vmx.check_cache
            && self.vmx.state_cache
            && v.launch_state == LaunchState::Launched
            && written & !(dirty::RIP | dirty::RFLAGS) == 0
            && self.vmx.ctls.entry_msr_loads == 0;
        if !fast {
            return false;
        }
        if written & dirty::RIP != 0 {
            let env = EntryEnv {
                maxphyaddr: crate::mmu::MAXPHYADDR as u8,
                linear_width: if self.cpuid.features().la57 { 57 } else { 48 },
                ia32e_mode: true,
            };
            if vmx::check::check_guest_rip(&super::cache::LiveView { cpu: self, vmcs: v }, &env).is_err() {
                return false;
            }
        }
        if let Some(v) = self.vmx.current.as_deref_mut() {
            v.clear_written();
        }
        self.vmx.guest_live = false;
        if self.vmx.ctls.vpid == 0 {
            // Without a VPID, entries drop the linear and combined
            // mappings (SDM 29.4.3.1).
            self.tlb.flush_all();
        }
        true
    }

    /// The end of every successful entry: non-root operation, the
    /// preemption timer armed, windows and interrupts looked at before the
    /// first guest instruction, the injected event delivered.
    fn enter_non_root(&mut self, ctx: &mut Ctx) -> VmEntry {
        self.non_root = true;
        self.vmx.vectoring = None;
        self.vmx.pending = None;
        self.vmx.preemption_deadline = u64::MAX;
        if self.vmx.ctls.pin.contains(PinCtls::PREEMPTION_TIMER) {
            let rate = self.vmx.caps.as_ref().map_or(0, |c| c.misc().preemption_timer_rate);
            let ticks = self.vmread(F::PreemptionTimerValue);
            // The timer counts down once per 2^rate TSC cycles; the TSC
            // runs at 2 per virtual ns and one instruction is 1 ns.
            let ns = (ticks << rate) / (crate::TSC_KHZ / 1_000_000);
            self.vmx.preemption_deadline = self.icount.saturating_add(ns);
        }
        // Windows, timers and pending interrupts are looked at before the
        // first guest instruction; an exit from an earlier entry is old
        // news.
        self.events = (self.events & !events::VM_EXIT) | events::IRQ | events::STOP;
        self.inject_event(ctx);
        VmEntry::Entered
    }

    /// The checks of 27.2-27.4 that the fields written since the last
    /// successful entry can affect ([`super::dirty`]); all of them after
    /// a VMPTRLD or a failed entry. The state a VM exit saved is the
    /// processor's own and is not re-checked, as a processor caching VMCS
    /// data would not: only what software wrote is.
    fn entry_checks(&mut self, env: &EntryEnv, mem: &Memory) -> Result<(), EntryError> {
        use super::dirty;
        let (Some(vmcs), Some(caps)) = (self.vmx.current.as_deref(), self.vmx.caps.as_ref()) else { return Ok(()) };
        let d = if self.vmx.check_cache { vmcs.written() } else { dirty::ALL };
        let r = if self.vmx.guest_live {
            // The guest's registers are parked: the checks see them.
            vmx::check::check_vm_entry_groups(
                &super::cache::LiveView { cpu: self, vmcs },
                caps,
                env,
                &PhysMemory { mem, cpu: self },
                d,
            )
        } else {
            vmx::check::check_vm_entry_groups(vmcs, caps, env, &PhysMemory { mem, cpu: self }, d)
        };
        if let Some(v) = self.vmx.current.as_deref_mut() {
            if r.is_ok() {
                v.clear_written();
            } else {
                v.mark_all_written();
            }
        }
        r
    }

    /// 27.8: a failure after the control and host-state checks is a VM
    /// exit with bit 31 set; a control or host-state failure is VMfailValid.
    fn entry_failed(&mut self, mem: &mut Memory, bus: &mut dyn Bus, e: EntryError) -> VmEntry {
        match e.failure {
            EntryFailure::VmFailValid(error) => {
                self.vmwrite(F::VmInstructionError, error as u64);
                VmEntry::VmFailValid { error, check: Some(e.check) }
            }
            EntryFailure::GuestState { .. } | EntryFailure::MsrLoad { .. } => {
                // The failure is an exit to the host context: the VMCS
                // gets back the parked registers (unchanged by the entry).
                self.load_host_context();
                let reason = e.failure.exit_reason().map_or(0, |r| r.to_raw());
                let qualification = e.failure.exit_qualification().unwrap_or(0);
                self.vmwrite(F::ExitReason, u64::from(reason));
                self.vmwrite(F::ExitQualification, qualification);
                let ctls = self.vmx.current.as_deref().map(Controls::from_vmcs).unwrap_or_default();
                self.vmx.ctls = ctls;
                self.vmx.ctls_valid = true;
                let mut ctx = Ctx { mem, bus };
                self.load_host_state(&mut ctx);
                // Reported here, not by the next run.
                self.events &= !events::VM_EXIT;
                self.vmx.exits[e.failure.exit_reason().map_or(0, |r| r.basic as usize) % super::EXIT_REASONS] += 1;
                VmEntry::Failed(e)
            }
        }
    }

    /// Whether the entry about to happen may keep the parked guest
    /// registers (`cache.rs`): state caching is on, the controls it will
    /// run under make the round trip exact, and the MSR-load list moves
    /// nothing (a failure there must find the guest state in the VMCS).
    fn parked_entry_exact(&self, controls_changed: bool) -> bool {
        let Some(v) = self.vmx.current.as_deref() else { return false };
        // The registers were parked under the exit controls of the last
        // entry; the entry loads under the VMCS's entry controls now.
        let exact = if controls_changed {
            Controls::round_trip(EntryCtls::from_bits_retain(v.get(F::EntryControls) as u32), self.vmx.ctls.exit)
                && v.get(F::EntryMsrLoadCount) == 0
        } else {
            self.vmx.ctls.exact_round_trip && self.vmx.ctls.entry_msr_loads == 0
        };
        self.vmx.state_cache && exact
    }

    /// 27.3.2 "Loading Guest State".
    pub(super) fn load_guest_state(&mut self) {
        let Some(v) = self.vmx.current.as_deref() else { return };
        load_guest_registers(&mut self.regs, v, &self.vmx.ctls);
        self.load_guest_non_register_state();
        let ctls = &self.vmx.ctls;
        let (vpid, eptp) = (ctls.vpid, ctls.eptp);
        // The TLB keeps its entries only when they are tagged with this
        // guest's VPID and EPTP (SDM 29.4.3.1 "Operations that Invalidate
        // Cached Mappings": entries of VPID 0 or without VPIDs go on every
        // entry and exit).
        // Two tagged contexts are kept (L1's and L2's under nested VMX
        // alternate at every L2 exit): the other one waits in `tlb_alt`.
        let owner = (vpid, eptp.unwrap_or(0));
        self.ept = eptp;
        self.switch_tlb(vpid != 0, owner);
        self.vmx_tsc_offset = self.vmx.ctls.tsc_offset();
    }

    /// The non-register part of 27.3.2: interruptibility and activity
    /// state.
    pub(super) fn load_guest_non_register_state(&mut self) {
        let Some(v) = self.vmx.current.as_deref() else { return };
        let intr = Interruptibility::from_bits_retain(v.get(F::GuestInterruptibilityState) as u32);
        let activity = v.get(F::GuestActivityState);
        // Blocking by STI or MOV SS holds interrupts for one instruction.
        self.inhibit_at = if intr.intersects(Interruptibility::BLOCKING_BY_STI | Interruptibility::BLOCKING_BY_MOV_SS) {
            self.icount
        } else {
            u64::MAX
        };
        self.ss_shadow_at = if intr.contains(Interruptibility::BLOCKING_BY_MOV_SS) { self.icount } else { u64::MAX };
        self.nmi_blocked = intr.contains(Interruptibility::BLOCKING_BY_NMI);
        self.activity = match activity {
            1 => Activity::Halted,
            2 => Activity::Shutdown,
            3 => Activity::WaitForSipi,
            _ => Activity::Active,
        };
        if self.activity == Activity::Shutdown {
            self.shutdown = Some("VM entry into the shutdown activity state".into());
        }
    }

    /// 27.4 "Loading MSRs": the VM-entry MSR-load list, entry by entry; the
    /// first bad entry fails the entry with its 1-based index.
    fn load_entry_msrs(&mut self, ctx: &mut Ctx) -> Result<(), EntryError> {
        let count = self.vmx.ctls.entry_msr_loads;
        if count == 0 {
            return Ok(());
        }
        let base = self.vmread(F::EntryMsrLoadAddress);
        for i in 0..count {
            let fail = |check: Check| EntryError { failure: EntryFailure::MsrLoad { index: i + 1 }, check };
            let Some(entry) = msr_entry(ctx.mem, base, i) else {
                return Err(fail(Check {
                    id: "msr.load.address",
                    sdm: "27.4",
                    condition: "the entry lies in physical memory",
                    field: Some(F::EntryMsrLoadAddress),
                    value: base,
                }));
            };
            check_msr_load_list([entry]).map_err(|e| fail(e.check))?;
            if self.wrmsr(ctx, entry.index, entry.value).is_err() {
                return Err(fail(Check {
                    id: "msr.load.value",
                    sdm: "27.4",
                    condition: "WRMSR of the entry would not fault",
                    field: Some(F::EntryMsrLoadAddress),
                    value: u64::from(entry.index),
                }));
            }
        }
        Ok(())
    }

    /// 27.6 "Event Injection": delivers the event in the VM-entry
    /// interruption-information field through the guest's IDT.
    fn inject_event(&mut self, ctx: &mut Ctx) {
        let info = self.vmread(F::EntryInterruptionInfo) as u32;
        if info & (1 << 31) == 0 {
            return;
        }
        let vector = info as u8;
        let kind = (info >> 8) & 7;
        let code = (info & (1 << 11) != 0).then(|| self.vmread(F::EntryExceptionErrorCode) as u32);
        let len = self.vmread(F::EntryInstructionLength);
        // An injected event wakes a halted guest (27.7.1).
        self.activity = Activity::Active;
        let rip = self.regs.rip;
        use crate::interrupt::EventKind as K;
        let (event_kind, ret) = match kind {
            k if k == InterruptionType::ExternalInterrupt as u32 => (K::External, rip),
            k if k == InterruptionType::Nmi as u32 => (K::Nmi, rip),
            k if k == InterruptionType::HardwareException as u32 => (K::Exception, rip),
            k if k == InterruptionType::SoftwareInterrupt as u32 => (K::Software, rip.wrapping_add(len)),
            k if k == InterruptionType::PrivilegedSoftwareException as u32 => {
                (K::PrivSoftException, rip.wrapping_add(len))
            }
            k if k == InterruptionType::SoftwareException as u32 => (K::SoftException, rip.wrapping_add(len)),
            // "Other event" (pending MTF): nothing to deliver here.
            _ => return,
        };
        // An injected software event "executes" an instruction of the
        // given length: an exit during its delivery reports that length.
        self.next_rip = rip.wrapping_add(len);
        // A fault or exit during delivery reports the injected event as
        // IDT-vectoring information (`deliver` records it).
        if let Err(f) = self.deliver(ctx, vector, event_kind, code, ret) {
            if f.is_vm_exit() {
                self.commit_exit(ctx);
            } else {
                self.deliver_exception(ctx, f, ret);
            }
        }
    }
}

/// The register part of 27.3.2 "Loading Guest State": control, debug and
/// segment registers, descriptor tables, MSRs, RIP, RSP, RFLAGS.
pub(super) fn load_guest_registers(r: &mut Regs, v: &Vmcs, ctls: &Controls) {
    use super::slots as S;
    // Slot-indexed: this runs on every entry.
    let a = v.slots();
    r.cr0 = a[S::GUEST_CR0] | Cr0::ET.bits();
    r.cr3 = a[S::GUEST_CR3];
    r.cr4 = a[S::GUEST_CR4];
    if ctls.entry.contains(EntryCtls::LOAD_DEBUG_CONTROLS) {
        r.dr[7] = a[S::GUEST_DR7];
        r.msr.debugctl = a[S::GUEST_DEBUGCTL];
    }
    r.msr.sysenter_cs = a[S::GUEST_SYSENTER_CS];
    r.msr.sysenter_esp = a[S::GUEST_SYSENTER_ESP];
    r.msr.sysenter_eip = a[S::GUEST_SYSENTER_EIP];
    if ctls.entry.contains(EntryCtls::LOAD_PAT) {
        r.msr.pat = a[S::GUEST_PAT];
    }
    let ia32e = ctls.entry.contains(EntryCtls::IA32E_MODE_GUEST);
    if ctls.entry.contains(EntryCtls::LOAD_EFER) {
        r.efer = a[S::GUEST_EFER];
    } else {
        let lm = (Efer::LMA | Efer::LME).bits();
        r.efer = (r.efer & !lm) | if ia32e { lm } else { 0 };
    }
    let seg = |f: &[usize; 4]| {
        let mut access = a[f[3]] as u32;
        if access & ar::UNUSABLE != 0 {
            // An unusable register faults on use: drop P, keep DPL
            // (SS.DPL is the CPL).
            access &= !ar::P;
        }
        Segment { selector: a[f[0]] as u16, base: a[f[1]], limit: a[f[2]] as u32, ar: access }
    };
    for i in 0..6 {
        r.seg[i] = seg(&S::GUEST_SEGS[i]);
    }
    r.ldtr = seg(&S::GUEST_SEGS[6]);
    r.tr = seg(&S::GUEST_SEGS[7]);
    r.gdtr = crate::state::DescTable { base: a[S::GUEST_GDTR_BASE], limit: a[S::GUEST_GDTR_LIMIT] as u16 };
    r.idtr = crate::state::DescTable { base: a[S::GUEST_IDTR_BASE], limit: a[S::GUEST_IDTR_LIMIT] as u16 };
    r.rip = a[S::GUEST_RIP];
    r.gpr[4] = a[S::GUEST_RSP];
    r.set_rflags(a[S::GUEST_RFLAGS]);
}
