//! Nested VMX in L0: L1's VMX instructions, the virtual VM entry that
//! runs L2 on vmcs02, and the routing of L2's exits (the Turtles design,
//! as KVM's `nested.c` does it; Intel SDM vol. 3C ch. 26-28 and 31).
//!
//! The pieces that are pure functions of VMCS contents live in the
//! `nested` crate (instructions, merge, sync, reflect, shadow EPT); this
//! file drives them with the CPU: which VMCS is current, entries, and
//! applying outcomes to L1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use cpu::mmu::Access;
use cpu::virt::VmEntry;
use cpu::{Bus, Memory, RunExit};
use nested::ept::{Fill, ShadowEpt};
use nested::merge::{load_guest_state, merge_controls, Vmcs02Resources};
use nested::reflect::{l0_wants_exit, l1_wants_exit, ExitFacts};
use nested::watch::{changes_translations, Protect, WriteWatch};
use nested::{ExitInfo, Outcome, L1};
use tracing::debug;
use vmx::check::EntryFailure;
use vmx::controls::{PinCtls, ProcCtls, ProcCtls2};
use vmx::{EntryEnv, EntryMemory, ExitReason, LaunchState, Vmcs, VmcsField as F};
use x86::{vector, Cr0, Cr4, Efer};

use super::{Next, Vcpu};
use crate::trace_targets::VMEXIT;

/// L1's memory as the guest-state checks of a virtual entry read it
/// (RAM only: L1 never reaches L0's private memory).
struct L1Memory<'a>(&'a Memory);

impl EntryMemory for L1Memory<'_> {
    fn pdptes(&self, cr3: x86::Gpa) -> [u64; 4] {
        let base = cr3.0 & 0xffff_ffe0;
        core::array::from_fn(|i| self.0.read_u64(base + 8 * i as u64).unwrap_or(u64::MAX))
    }
    fn vmcs_header(&self, addr: x86::Gpa) -> u32 {
        self.0.read_u32(addr.0).unwrap_or(u32::MAX)
    }
}

/// L0's nested-VMX state for one vCPU.
pub(super) struct NestedState {
    /// L1's VMX operation and its current vmcs12.
    pub vmx: nested::NestedVmx,
    /// vmcs01 while L2 runs (vmcs02 is current then).
    pub vmcs01: Option<Box<Vmcs>>,
    /// vmcs02 while L1 runs.
    pub vmcs02: Option<Box<Vmcs>>,
    /// L2 runs (vmcs02 is current).
    pub l2_active: bool,
    /// EPT02 when vmcs12 enables EPT.
    pub shadow: Option<ShadowEpt>,
    /// Bitmaps and identifiers of vmcs02.
    pub res: Vmcs02Resources,
    /// L1's processor state the last virtual entry was checked against.
    pub last_env: Option<EntryEnv>,
    /// The vmcs12 (address) and EPTP02 vmcs02's controls were merged for.
    pub merged_for: Option<(u64, Option<u64>)>,
    /// vmcs01's controls vmcs02's were merged from.
    pub merged_vmcs01: [u64; 10],
    /// vmcs12 as vmcs01's shadow VMCS while L1 runs (`shadow_vmcs.rs`).
    pub vmcs_shadowing: super::shadow_vmcs::VmcsShadowing,
    /// [`Ept12Watch::ept01_changes`] as this vCPU last acted on it.
    pub seen_ept01_changes: u64,
    /// [`Ept12Watch::ept12_writes`] as this vCPU last acted on it.
    pub seen_ept12_writes: u64,
    /// L2 runs one instruction with an EPT12 table on its own path mapped
    /// writable ([`Fill::TableWrite`]) under L0's monitor trap flag; holds
    /// whether vmcs02 had the flag set before (vmcs12's).
    pub table_write_step: Option<bool>,
    /// L1 runs one instruction with a watched EPT12 page writable in EPT01
    /// under L0's monitor trap flag ([`Vcpu::ept12_write_fault`]).
    pub l1_table_write: Option<L1TableWrite>,
}

/// A write of L1 to a watched EPT12 page, single-stepped: the page as it
/// was, to see afterwards what the write changed.
pub(super) struct L1TableWrite {
    page: u64,
    before: Box<[u8; 4096]>,
    /// Whether vmcs01 had the monitor trap flag set before.
    mtf_before: bool,
}

/// The EPT12 table pages L0 keeps read-only in EPT01 for the EPT02s of all
/// vCPUs ([`nested::watch`]), one per VM since all vCPUs share EPT01.
///
/// vCPUs run one at a time, in slices; what one does to EPT01 or to the
/// shadows the others see through two counters, which each vCPU compares
/// with its own copies at the start of its next slice, before it runs any
/// guest code ([`Vcpu::sync_ept12_watch`]). So no vCPU ever runs on a stale
/// translation: the guarantee is exact, not eventual.
#[derive(Debug, Default)]
pub(crate) struct Ept12Watch {
    pages: Mutex<WriteWatch>,
    /// Bumped when a page changed protection in EPT01: each vCPU flushes
    /// its cached EPT01 translations.
    ept01_changes: AtomicU64,
    /// Bumped when a watched page was written: each vCPU drops its EPT02.
    ept12_writes: AtomicU64,
}

impl super::L0Shared {
    /// Makes every vCPU drop its EPT02 before it next runs, this one
    /// included (for callers without the memory to drop it now).
    pub(super) fn watch_written_elsewhere(&self) {
        self.watch.ept12_writes.fetch_add(1, Ordering::Relaxed);
    }
}

/// What an EPT violation on EPT01 is (SDM 29.3.3.2 "EPT Violations").
/// EPT01 maps all RAM with every permission except the EPT12 pages L0
/// watches, which are read-only, and nothing else: the one place that
/// tells the cases apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ept01Fault {
    /// Not RAM: a device page, emulated.
    Device,
    /// A write to a watched EPT12 page: the EPT02s go, the write is
    /// retried.
    Ept12Write,
    /// RAM EPT01 should have allowed: an L0 bug.
    Unexpected,
}

/// The vmcs01 fields that feed vmcs02's controls.
fn vmcs01_controls(v: &Vmcs) -> [u64; 10] {
    [
        F::PinBasedControls,
        F::PrimaryProcControls,
        F::SecondaryProcControls,
        F::ExitControls,
        F::EntryControls,
        F::ExceptionBitmap,
        F::Cr0GuestHostMask,
        F::Cr4GuestHostMask,
        F::TscOffset,
        F::EptPointer,
    ]
    .map(|f| v.get(f))
}

impl Vcpu {
    /// Classifies an EPT01 violation at `gpa` with exit `qualification`
    /// (bit 1: a write; 28.2.1, Table 28-7).
    pub(super) fn ept01_fault(&self, mem: &Memory, gpa: u64, qualification: u64) -> Ept01Fault {
        if mem.ram_offset(gpa).is_none() {
            return Ept01Fault::Device;
        }
        let watched =
            |sh: &super::L0Shared| sh.watch.pages.lock().unwrap_or_else(PoisonError::into_inner).is_watched(gpa);
        if qualification & 2 != 0 && self.shared.as_ref().is_some_and(watched) {
            Ept01Fault::Ept12Write
        } else {
            Ept01Fault::Unexpected
        }
    }

    /// A write to a watched EPT12 page, by L1 (or by an L2 on EPT01):
    /// every EPT02 of the VM goes (this vCPU's now, the others' before
    /// their next slice), every watched page becomes writable again, and
    /// the guest re-executes the write ("unprotect and retry": nothing is
    /// emulated). The shadows refill on demand and watch their tables
    /// anew.
    pub(super) fn ept12_written(&mut self, mem: &mut Memory) {
        let Some(sh) = self.shared.as_ref() else { return };
        let root = sh.eptp & !0xfff;
        sh.watch.pages.lock().unwrap_or_else(PoisonError::into_inner).release_all(mem, root);
        let changes = sh.watch.ept01_changes.fetch_add(1, Ordering::Relaxed) + 1;
        let writes = sh.watch.ept12_writes.fetch_add(1, Ordering::Relaxed) + 1;
        // The CPU's cached translations of L1 still say read-only.
        self.cpu.invept(Some(sh.eptp));
        self.exits.ept02_drops += 1;
        let Some(n) = self.nested.as_mut() else { return };
        n.seen_ept01_changes = changes;
        n.seen_ept12_writes = writes;
        if let Some(s) = n.shadow.as_mut() {
            s.invalidate(mem);
            let eptp02 = s.eptp();
            self.cpu.invept(Some(eptp02));
        }
    }

    /// A write to a watched EPT12 page (an EPT01 violation,
    /// [`Ept01Fault::Ept12Write`]). L1's own write is single-stepped: the
    /// page alone becomes writable, L1 executes the one instruction under
    /// L0's monitor trap flag (SDM 26.5.2 "Monitor Trap Flag"), and
    /// [`end_l1_table_write`](Self::end_l1_table_write) sees what changed.
    /// A hypervisor in L1 mostly fills in not-present EPT entries, which
    /// leave every EPT02 valid, so the shadows survive them. Writes during
    /// event delivery, a second watched page in the same instruction, and
    /// L2's writes on EPT01 drop every EPT02 instead ([`ept12_written`]).
    pub(super) fn ept12_write_fault(&mut self, mem: &mut Memory, gpa: u64) -> Next {
        self.exits.ept12_writes += 1;
        let vectoring = self.cpu.vmread(F::IdtVectoringInfo) & (1 << 31) != 0;
        // A second watched page in the instruction being stepped: stepping
        // page by page would never end, so every page goes.
        let second = self.end_l1_table_write(mem);
        let simple = !second && self.nested.as_ref().is_some_and(|n| !n.l2_active);
        let Some(sh) = self.shared.as_ref().filter(|_| simple && !vectoring) else {
            self.ept12_written(mem);
            return Next::Resume;
        };
        let page = gpa & !0xfff;
        let mut before = Box::new([0u8; 4096]);
        if mem.read(page, &mut before[..]).is_err() {
            self.ept12_written(mem);
            return Next::Resume;
        }
        let root = sh.eptp & !0xfff;
        sh.watch.pages.lock().unwrap_or_else(PoisonError::into_inner).release(mem, root, page);
        self.cpu.invept(Some(sh.eptp));
        let mtf = u64::from(ProcCtls::MONITOR_TRAP_FLAG.bits());
        let proc = self.cpu.vmread(F::PrimaryProcControls);
        self.cpu.vmwrite(F::PrimaryProcControls, proc | mtf);
        if let Some(n) = self.nested.as_mut() {
            n.l1_table_write = Some(L1TableWrite { page, before, mtf_before: proc & mtf != 0 });
        }
        Next::Resume
    }

    /// Whether L1 is single-stepping a write to a watched page; its slice
    /// must not end before the step does, since the page is writable in
    /// the EPT01 all vCPUs share.
    pub(super) fn l1_table_write_pending(&self) -> bool {
        self.nested.as_ref().is_some_and(|n| n.l1_table_write.is_some())
    }

    /// The first exit of L1 after [`ept12_write_fault`](Self::ept12_write_fault):
    /// the monitor trap flag goes back to vmcs01's setting, and the page
    /// is compared with its copy. A changed present entry drops every
    /// EPT02 (and leaves the watched pages writable until the shadows walk
    /// them again, so the rest of a batch of writes runs free); otherwise
    /// the page is watched again and the shadows stay. Returns whether a
    /// step ended.
    pub(super) fn end_l1_table_write(&mut self, mem: &mut Memory) -> bool {
        let Some(step) = self.nested.as_mut().and_then(|n| n.l1_table_write.take()) else { return false };
        let mtf = u64::from(ProcCtls::MONITOR_TRAP_FLAG.bits());
        let proc = self.cpu.vmread(F::PrimaryProcControls);
        self.cpu.vmwrite(F::PrimaryProcControls, if step.mtf_before { proc | mtf } else { proc & !mtf });
        let mut after = [0u8; 4096];
        let changed = mem.read(step.page, &mut after).is_err() || changes_translations(&step.before[..], &after);
        let Some(sh) = self.shared.as_ref().filter(|_| !changed) else {
            self.ept12_written(mem);
            return true;
        };
        let root = sh.eptp & !0xfff;
        let again = sh.watch.pages.lock().unwrap_or_else(PoisonError::into_inner).protect(mem, root, step.page);
        match again {
            // This vCPU's translations allow the write; no other vCPU ran
            // since the page became writable.
            Ok(Protect::Added | Protect::Already) => self.cpu.invept(Some(sh.eptp)),
            Ok(Protect::Full) | Err(_) => self.ept12_written(mem),
        }
        true
    }

    /// Write-protects in EPT01 the EPT12 tables this vCPU's EPT02 walked
    /// for the first time, before L2 runs on what the fill mapped. The
    /// common fill walks no new table and costs one test.
    fn watch_new_tables(&mut self, mem: &mut Memory) -> Result<(), RunExit> {
        let Some(n) = self.nested.as_mut() else { return Ok(()) };
        let Some(s) = n.shadow.as_mut().filter(|s| s.has_new_table_pages()) else { return Ok(()) };
        let Some(sh) = self.shared.as_ref() else { return Ok(()) };
        let pages = s.take_new_table_pages();
        let root = sh.eptp & !0xfff;
        let mut watch = sh.watch.pages.lock().unwrap_or_else(PoisonError::into_inner);
        let mut added = false;
        for p in pages {
            match watch.protect(mem, root, p) {
                Ok(Protect::Already) => {}
                Ok(Protect::Added) => added = true,
                // Stale pages of dropped shadows filled the set: start
                // over as after a write (this EPT02 goes too; L2 faults
                // again and refills).
                Ok(Protect::Full) => {
                    drop(watch);
                    self.ept12_written(mem);
                    return Ok(());
                }
                Err(e) => return Err(RunExit::Shutdown(format!("L0: cannot write-protect EPT12 page {p:#x}: {e}"))),
            }
        }
        drop(watch);
        if added {
            n.seen_ept01_changes = sh.watch.ept01_changes.fetch_add(1, Ordering::Relaxed) + 1;
            // L1's cached translations may still allow the write.
            self.cpu.invept(Some(sh.eptp));
        }
        Ok(())
    }

    /// Acts on what other vCPUs changed since this one last ran: cached
    /// EPT01 translations go when EPT01 changed, this vCPU's EPT02 when a
    /// watched page was written.
    pub(super) fn sync_ept12_watch(&mut self, mem: &mut Memory) {
        let (Some(n), Some(sh)) = (self.nested.as_mut(), self.shared.as_ref()) else { return };
        let changes = sh.watch.ept01_changes.load(Ordering::Relaxed);
        if changes != n.seen_ept01_changes {
            n.seen_ept01_changes = changes;
            self.cpu.invept(Some(sh.eptp));
        }
        let writes = sh.watch.ept12_writes.load(Ordering::Relaxed);
        if writes != n.seen_ept12_writes {
            n.seen_ept12_writes = writes;
            if let Some(s) = n.shadow.as_mut() {
                s.invalidate(mem);
                let eptp02 = s.eptp();
                self.cpu.invept(Some(eptp02));
            }
        }
    }

    /// L1's registers as L1 sees them: CR0/CR4 through vmcs01's read
    /// shadows where L0 owns bits.
    fn l1_view(&self) -> cpu::Regs {
        let mut r = self.cpu.guest_regs();
        let m0 = self.cpu.vmread(F::Cr0GuestHostMask);
        let m4 = self.cpu.vmread(F::Cr4GuestHostMask);
        r.cr0 = (r.cr0 & !m0) | (self.cpu.vmread(F::Cr0ReadShadow) & m0);
        r.cr4 = (r.cr4 & !m4) | (self.cpu.vmread(F::Cr4ReadShadow) & m4);
        r
    }

    /// A VMX instruction of L1 (SDM 31.3): emulated by the nested crate,
    /// its outcome applied to L1.
    pub(super) fn vmx_instruction(&mut self, mem: &mut Memory, bus: &mut dyn Bus, reason: ExitReason) -> Next {
        let regs = self.l1_view();
        let feature_control = self.msrs.get(&0x3a).copied().unwrap_or(0);
        let blocking_by_mov_ss = self.cpu.vmread(F::GuestInterruptibilityState) & 2 != 0;
        let exit = ExitInfo {
            info: self.cpu.vmread(F::ExitInstructionInfo) as u32,
            qualification: self.cpu.vmread(F::ExitQualification),
        };
        let Some(n) = self.nested.as_mut() else {
            self.inject_exception(vector::UD, None);
            return Next::Resume;
        };
        let mut l1 = L1 { regs: &regs, mem, feature_control, blocking_by_mov_ss };
        let Some(outcome) = n.vmx.emulate(reason, &mut l1, exit) else {
            self.inject_exception(vector::UD, None);
            return Next::Resume;
        };
        debug!(target: VMEXIT, ?reason, ?outcome, "L1 VMX instruction");
        match outcome {
            Outcome::Fault { vector, error_code, cr2 } => {
                if let Some(a) = cr2 {
                    self.cpu.regs.cr2 = a;
                }
                self.inject_exception(vector, error_code);
                return Next::Resume;
            }
            Outcome::Enter { launch } => return self.virtual_entry(mem, bus, launch),
            Outcome::Read { reg, value } => {
                if reg == 4 {
                    self.cpu.vmwrite(F::GuestRsp, value);
                } else {
                    self.cpu.regs.gpr[usize::from(reg & 15)] = value;
                }
            }
            Outcome::InvalidateEpt { .. } => {
                // EPT02 goes, and so do the processor's translations
                // cached through it.
                if let Some(s) = n.shadow.as_mut() {
                    s.invalidate(mem);
                    let eptp02 = s.eptp();
                    self.cpu.invept(Some(eptp02));
                }
            }
            Outcome::InvalidateVpid { .. } => {
                let vpid02 = n.res.vpid02;
                self.cpu.invvpid(Some(vpid02));
            }
            Outcome::Vmxoff => {}
            Outcome::Succeed | Outcome::FailInvalid | Outcome::FailValid(_) => {}
        }
        match (reason, outcome) {
            (ExitReason::Vmxon, Outcome::Succeed) => self.vmx_cr_masks(true),
            (_, Outcome::Vmxoff) => self.vmx_cr_masks(false),
            _ => {}
        }
        let rflags = self.cpu.vmread(F::GuestRflags);
        self.cpu.vmwrite(F::GuestRflags, outcome.rflags(rflags));
        if outcome.skips_instruction() {
            self.skip_instruction();
        }
        Next::Resume
    }

    /// VMLAUNCH/VMRESUME of L1 that passed the instruction's own checks:
    /// the VM-entry checks on vmcs12 (SDM 27.2-27.4, in order), then vmcs02
    /// is prepared and made current (27.3 for L2).
    fn virtual_entry(&mut self, mem: &mut Memory, bus: &mut dyn Bus, launch: bool) -> Next {
        let l1_lma = self.cpu.vmread(F::GuestIa32Efer) & Efer::LMA.bits() != 0;
        let Some(n) = self.nested.as_mut() else { return Next::Resume };
        let caps = *n.vmx.caps();
        let Some(v12) = n.vmx.current() else { return Next::Resume };
        let env = EntryEnv {
            maxphyaddr: caps.phys_addr_width(),
            linear_width: if self.cpuid.features().la57 { 57 } else { 48 },
            ia32e_mode: l1_lma,
        };
        // Only what L1 wrote since the last entry that passed needs checking
        // again (the guest state L0 saved into vmcs12 at the exit is the
        // processor's, as on hardware).
        let same_env = n.last_env == Some(env);
        let groups = if same_env { v12.vmcs().written() } else { vmx::vmcs::check_group::ALL };
        n.last_env = Some(env);
        if let Err(e) = vmx::check::check_vm_entry_groups(v12.vmcs(), &caps, &env, &L1Memory(mem), groups) {
            if let Some(c) = n.vmx.current_mut() {
                c.vmcs_mut().mark_all_written();
            }
            if self.exits.entry_failures.len() < super::MAX_EXPLAINED {
                let what = if launch { "VMLAUNCH" } else { "VMRESUME" };
                let rip = self.cpu.vmread(F::GuestRip);
                self.exits.entry_failures.push(format!("L1's {what} at rip {rip:#x}: {e}"));
            }
            debug!(target: VMEXIT, "virtual VM entry failed: {e}");
            match e.failure {
                EntryFailure::VmFailValid(err) => {
                    let o = n.vmx.vmfail(err);
                    let rflags = self.cpu.vmread(F::GuestRflags);
                    self.cpu.vmwrite(F::GuestRflags, o.rflags(rflags));
                    self.skip_instruction();
                }
                _ => {
                    let reason = e.failure.exit_reason().map_or(0, |r| r.to_raw());
                    let qualification = e.failure.exit_qualification().unwrap_or(0);
                    let (Some(v12), Some(v01)) = (n.vmx.current_mut(), self.cpu.vmcs_mut()) else {
                        return Next::Resume;
                    };
                    nested::sync::entry_failure(v01, v12.vmcs_mut(), reason, qualification);
                }
            }
            return Next::Resume;
        }
        // 27.4 on vmcs12: the VM-entry MSR-load list as L1's memory holds
        // it (outside L1's RAM it reads as all ones and fails, as on a
        // machine where nothing answers there). The CPU loads a list in
        // RAM itself when it enters vmcs02.
        let (list, count) = (v12.vmcs().get(F::EntryMsrLoadAddress), v12.vmcs().get(F::EntryMsrLoadCount));
        let entries = (0..count.min(512)).map(|i| {
            let at = list.wrapping_add(i * 16);
            let lo = mem.read_u64(at).unwrap_or(u64::MAX);
            let value = mem.read_u64(at.wrapping_add(8)).unwrap_or(u64::MAX);
            vmx::MsrEntry { index: lo as u32, reserved: (lo >> 32) as u32, value }
        });
        if let Err(e) = vmx::check::check_msr_load_list(entries) {
            return self.virtual_entry_failure(e, launch);
        }
        if let Some(c) = n.vmx.current_mut() {
            c.vmcs_mut().clear_written();
        }
        let Some(v12) = n.vmx.current() else { return Next::Resume };
        let v12_gpa = v12.gpa().0;
        // EPT02 shadows EPT12 when L1 uses EPT; otherwise L2's
        // guest-physical addresses are L1's and EPT01 serves.
        let v12 = v12.vmcs();
        let proc2 = if v12.get(F::PrimaryProcControls) & (1 << 31) != 0 {
            ProcCtls2::from_bits_retain(v12.get(F::SecondaryProcControls) as u32)
        } else {
            ProcCtls2::empty()
        };
        n.res.eptp02 = None;
        if proc2.contains(ProcCtls2::ENABLE_EPT) {
            let eptp12 = v12.get(F::EptPointer);
            // One EPT02 per vCPU, retargeted when L1 switches EPTP (its
            // pages are recycled; private memory never shrinks).
            match n.shadow.as_mut() {
                Some(s) if s.eptp12() != eptp12 => {
                    s.retarget(mem, eptp12);
                    let eptp02 = s.eptp();
                    self.cpu.invept(Some(eptp02));
                }
                Some(_) => {}
                None => match ShadowEpt::new(mem, eptp12) {
                    Ok(s) => n.shadow = Some(s),
                    Err(e) => return Next::Return(RunExit::Shutdown(format!("L0: cannot build EPT02: {e}"))),
                },
            }
            n.res.eptp02 = n.shadow.as_ref().map(ShadowEpt::eptp);
        }
        if n.res.msr_bitmap == 0 {
            match mem.alloc_private_page() {
                Some(p) => n.res.msr_bitmap = p,
                None => {
                    return Next::Return(RunExit::Shutdown("L0: private memory exhausted (vmcs02 MSR bitmap)".into()))
                }
            }
        }
        let mut v02 = n.vmcs02.take().unwrap_or_else(|| Box::new(Vmcs::new()));
        let Some(v01) = self.cpu.vmcs() else { return Next::Resume };
        // Controls change rarely (KVM's prepare_vmcs02_rare): merged again
        // only when L1 wrote a control field, switched vmcs12, or L0
        // changed vmcs01's controls. vmcs12's host state does not enter
        // vmcs02 at all.
        let snapshot = vmcs01_controls(v01);
        let rare = groups & vmx::vmcs::check_group::CONTROLS != 0
            || n.merged_for != Some((v12_gpa, n.res.eptp02))
            || n.merged_vmcs01 != snapshot;
        if rare {
            merge_controls(&mut v02, v01, v12, &n.res, mem);
            n.merged_for = Some((v12_gpa, n.res.eptp02));
            n.merged_vmcs01 = snapshot;
        }
        load_guest_state(&mut v02, v01, v12, mem);
        if launch {
            if let Some(c) = n.vmx.current_mut() {
                c.vmcs_mut().launch_state = LaunchState::Launched;
            }
        }
        // The entry clears the event-injection valid bit of vmcs12 once it
        // is in vmcs02.
        if let Some(c) = n.vmx.current_mut() {
            let info = c.vmcs().get(F::EntryInterruptionInfo);
            c.vmcs_mut().set(F::EntryInterruptionInfo, info & !(1 << 31));
        }
        n.vmcs01 = self.cpu.vmptrld(v02);
        n.l2_active = true;
        self.exits.l2_entries += 1;
        let _ = bus;
        Next::Resume
    }

    /// A virtual VM entry that failed after the checks on controls and
    /// host state (SDM 27.8): an entry-failure exit to L1.
    pub(super) fn virtual_entry_failure(&mut self, e: vmx::EntryError, launch: bool) -> Next {
        if self.exits.entry_failures.len() < super::MAX_EXPLAINED {
            let what = if launch { "VMLAUNCH" } else { "VMRESUME" };
            let rip = self.cpu.vmread(F::GuestRip);
            self.exits.entry_failures.push(format!("L1's {what} at rip {rip:#x}: {e}"));
        }
        let reason = e.failure.exit_reason().map_or(0, |r| r.to_raw());
        let qualification = e.failure.exit_qualification().unwrap_or(0);
        let Some(n) = self.nested.as_mut() else { return Next::Resume };
        if let Some(c) = n.vmx.current_mut() {
            c.vmcs_mut().mark_all_written();
            if let Some(v01) = self.cpu.vmcs_mut() {
                nested::sync::entry_failure(v01, c.vmcs_mut(), reason, qualification);
            }
        }
        Next::Resume
    }

    /// vmcs02's own entry failed at the MSR-load list (a WRMSR L1's list
    /// asks for would fault): L1 sees the entry fail as hardware reports
    /// it. vmcs01 becomes current again.
    pub(super) fn vmcs02_entry_failed(&mut self, e: vmx::EntryError) -> Next {
        let Some(n) = self.nested.as_mut() else { return Next::Resume };
        let Some(v01) = n.vmcs01.take() else { return Next::Resume };
        n.vmcs02 = self.cpu.vmptrld(v01);
        n.l2_active = false;
        self.virtual_entry_failure(e, false)
    }

    /// An exit of L2: L0's own business, L1's (reflected), or L0 acting
    /// for L2 where L1 did not ask (SDM 26.1-26.2 read on vmcs12).
    pub(super) fn l2_exit(&mut self, mem: &mut Memory, bus: &mut dyn Bus, reason: u16) -> Next {
        let Some(r) = ExitReason::from_basic(reason) else {
            return Next::Return(RunExit::Shutdown(format!("L0: L2 exit with unknown reason {reason}")));
        };
        let facts = ExitFacts {
            reason: r,
            qualification: self.cpu.vmread(F::ExitQualification),
            interruption_info: self.cpu.vmread(F::ExitInterruptionInfo) as u32,
            error_code: self.cpu.vmread(F::ExitInterruptionErrorCode) as u32,
            rcx: self.cpu.regs.gpr[1],
            cr_source: {
                let gpr = (self.cpu.vmread(F::ExitQualification) >> 8) & 15;
                if gpr == 4 {
                    self.cpu.vmread(F::GuestRsp)
                } else {
                    self.cpu.regs.gpr[gpr as usize]
                }
            },
        };
        // A step ends at the first exit of L2, except the EPT02 fills the
        // same instruction needs to complete (they keep the writable
        // table page mapped; a fill reflected to L1 ends it in `reflect`).
        let fill = matches!(r, ExitReason::EptViolation | ExitReason::EptMisconfiguration);
        if !fill && self.end_table_write_step(mem) && r == ExitReason::MonitorTrapFlag {
            let proc12 =
                self.nested.as_ref().and_then(|n| n.vmx.current()).map(|v| v.vmcs().get(F::PrimaryProcControls));
            if proc12.is_some_and(|p| p & u64::from(ProcCtls::MONITOR_TRAP_FLAG.bits()) == 0) {
                return Next::Resume;
            }
        }
        let Some(n) = self.nested.as_mut() else { return Next::Resume };
        let Some(v12) = n.vmx.current() else {
            return Next::Return(RunExit::Shutdown("L0: L2 ran without a current vmcs12".into()));
        };
        if l0_wants_exit(&facts, v12.vmcs()) {
            return self.l0_handles_l2_exit(mem, bus, &facts);
        }
        if l1_wants_exit(&facts, v12.vmcs(), mem) {
            self.reflect(mem, bus);
            return Next::Resume;
        }
        // L1 did not ask: L0 carries the exit out for L2 as for any guest.
        self.handle_exit(mem, bus, reason)
    }

    /// Exits L0 takes first while L2 runs: EPT02 faults (filled from EPT12
    /// or reflected as L1's EPT violation), interrupts.
    fn l0_handles_l2_exit(&mut self, mem: &mut Memory, bus: &mut dyn Bus, f: &ExitFacts) -> Next {
        match f.reason {
            ExitReason::EptViolation | ExitReason::EptMisconfiguration => {
                let gpa2 = self.cpu.vmread(F::GuestPhysicalAddress);
                let access = if f.qualification & 4 != 0 {
                    Access::Fetch
                } else if f.qualification & 2 != 0 {
                    Access::Write
                } else {
                    Access::Read
                };
                let Some(n) = self.nested.as_mut() else { return Next::Resume };
                let caps = *n.vmx.caps();
                // Without EPT in vmcs12 (EPTP02 unset, even if an EPT02
                // remains from an earlier vmcs12), L2's physical addresses
                // are L1's; a device page is emulated like L1's own.
                let Some(shadow) = n.shadow.as_mut().filter(|_| n.res.eptp02.is_some()) else {
                    return self.handle_exit(mem, bus, f.reason as u16);
                };
                let mut fill = shadow.fill(mem, gpa2, access, &caps);
                let step = matches!(fill, Fill::TableWrite { .. });
                if step {
                    fill = shadow.map_for_one_write(mem, gpa2, &caps);
                }
                if let Err(stop) = self.watch_new_tables(mem) {
                    return Next::Return(stop);
                }
                match fill {
                    Fill::Filled if step => {
                        self.begin_table_write_step();
                        Next::Resume
                    }
                    Fill::Filled => Next::Resume,
                    Fill::Violation { qualification } => {
                        // What L1 sees: EPT12's permissions, the access, and
                        // the linear-address bits and NMI unblocking of the
                        // real exit.
                        let q = qualification | (f.qualification & 0x1180);
                        self.cpu.vmwrite(F::ExitReason, ExitReason::EptViolation as u64);
                        self.cpu.vmwrite(F::ExitQualification, q);
                        self.reflect(mem, bus);
                        Next::Resume
                    }
                    Fill::Misconfig => {
                        self.cpu.vmwrite(F::ExitReason, ExitReason::EptMisconfiguration as u64);
                        self.cpu.vmwrite(F::ExitQualification, 0);
                        self.reflect(mem, bus);
                        Next::Resume
                    }
                    Fill::Device { gpa1 } => Next::Return(RunExit::Shutdown(format!(
                        "L0: L2 accessed device memory at L1 address {:#x} through EPT12 (not supported yet)",
                        gpa1.0
                    ))),
                    Fill::Emulate { gpa1 } => Next::Return(RunExit::Shutdown(format!(
                        "L0: L2 access to L1 address {:#x} needs emulation (L2 address from 2^48 up, or L0 out of \
                         private memory; not supported yet)",
                        gpa1.0
                    ))),
                    // map_for_one_write never asks for another step.
                    Fill::TableWrite { gpa1 } => Next::Return(RunExit::Shutdown(format!(
                        "L0: L2 write to EPT12 table at L1 address {:#x} could not be mapped",
                        gpa1.0
                    ))),
                }
            }
            ExitReason::Vmfunc => self.l2_vmfunc(mem, bus),
            // Interrupts and windows: the next entry decides where the
            // event goes (L1 through a reflected exit, or L2).
            _ => Next::Resume,
        }
    }

    /// Arms the monitor trap flag in vmcs02 (SDM 26.5.2 "Monitor Trap
    /// Flag") so that L2 executes the one instruction that writes an EPT12
    /// table on its own path, which EPT02 now maps writable, and exits.
    fn begin_table_write_step(&mut self) {
        let Some(n) = self.nested.as_mut() else { return };
        let mtf = u64::from(ProcCtls::MONITOR_TRAP_FLAG.bits());
        let proc = self.cpu.vmread(F::PrimaryProcControls);
        n.table_write_step = Some(proc & mtf != 0);
        self.cpu.vmwrite(F::PrimaryProcControls, proc | mtf);
    }

    /// The first exit of L2 (or a reflection to L1) after
    /// [`begin_table_write_step`](Self::begin_table_write_step), whatever
    /// its reason: the monitor trap flag goes back to what vmcs12 asked,
    /// and since L2 may have written an EPT12 table, every EPT02 of the VM
    /// goes, as after L1's write to a watched page. Returns whether a step
    /// ended.
    pub(super) fn end_table_write_step(&mut self, mem: &mut Memory) -> bool {
        let Some(before) = self.nested.as_mut().and_then(|n| n.table_write_step.take()) else { return false };
        let mtf = u64::from(ProcCtls::MONITOR_TRAP_FLAG.bits());
        let proc = self.cpu.vmread(F::PrimaryProcControls);
        self.cpu.vmwrite(F::PrimaryProcControls, if before { proc | mtf } else { proc & !mtf });
        self.exits.ept12_writes += 1;
        self.ept12_written(mem);
        true
    }

    /// VMFUNC of L2 with vmcs12's VM functions enabled (SDM 26.5.5 "VM
    /// Functions"): an EPTP switch L0 completes for L2 (26.5.5.3 "EPTP
    /// Switching": vmcs12's EPT pointer becomes the list entry, EPT02
    /// follows, L2 resumes after the instruction without L1 seeing an
    /// exit), or a failure, which exits to L1 with reason 59 as on
    /// hardware (the exit fields of vmcs02 already say so).
    fn l2_vmfunc(&mut self, mem: &mut Memory, bus: &mut dyn Bus) -> Next {
        let (eax, ecx) = (self.cpu.regs.gpr[0], self.cpu.regs.gpr[1]);
        let Some(n) = self.nested.as_mut() else { return Next::Resume };
        let caps = *n.vmx.caps();
        let Some(v12) = n.vmx.current_mut() else { return Next::Resume };
        match nested::vmfunc::vmfunc(v12.vmcs(), mem, eax, ecx, &caps) {
            Ok(switch) => {
                switch.apply(v12.vmcs_mut(), &caps);
                // vmcs02 keeps EPTP02; what it maps now comes from the new
                // EPT12, filled on demand. Entry checks made EPT part of
                // EPTP switching, so L2 runs on EPT02 here.
                if let Some(s) = n.shadow.as_mut().filter(|s| s.eptp12() != switch.eptp) {
                    s.retarget(mem, switch.eptp);
                    let eptp02 = s.eptp();
                    self.cpu.invept(Some(eptp02));
                }
                self.skip_instruction();
            }
            Err(why) => {
                debug!(target: VMEXIT, ?why, "L2's VMFUNC exits to L1");
                self.reflect(mem, bus);
            }
        }
        Next::Resume
    }

    /// A platform interrupt while L2 runs goes to L1 as an
    /// external-interrupt exit when vmcs12 asks for those (SDM 26.2);
    /// otherwise it is injected into L2 like any guest's. Returns whether
    /// it reflected.
    pub(super) fn l2_interrupt_exit(&mut self, mem: &mut Memory, bus: &mut dyn Bus) -> bool {
        let Some(n) = self.nested.as_ref() else { return false };
        if !n.l2_active {
            return false;
        }
        let Some(v12) = n.vmx.current() else { return false };
        let v12 = v12.vmcs();
        let pin = PinCtls::from_bits_retain(v12.get(F::PinBasedControls) as u32);
        if !pin.contains(PinCtls::EXTERNAL_INTERRUPT_EXITING) {
            return false;
        }
        let ack = v12.get(F::ExitControls) & u64::from(vmx::ExitCtls::ACK_INTERRUPT_ON_EXIT.bits()) != 0;
        let now = self.cpu.now_ns();
        if !bus.interrupt_pending(now) {
            return false;
        }
        let info = if ack { bus.ack_interrupt(now).map_or(0, |v| (1 << 31) | u64::from(v)) } else { 0 };
        self.cpu.vmwrite(F::ExitReason, ExitReason::ExternalInterrupt as u64);
        self.cpu.vmwrite(F::ExitQualification, 0);
        self.cpu.vmwrite(F::ExitInterruptionInfo, info);
        self.cpu.vmwrite(F::IdtVectoringInfo, 0);
        self.cpu.vmwrite(F::ExitInstructionLength, 0);
        self.reflect(mem, bus);
        true
    }

    /// The virtual VM exit (SDM 28 for L1): vmcs02's guest state and exit
    /// information into vmcs12, vmcs12's exit MSR lists, vmcs12's host
    /// state into vmcs01, and L1 runs again.
    pub(super) fn reflect(&mut self, mem: &mut Memory, bus: &mut dyn Bus) {
        // vmcs02 must not keep L0's monitor trap flag for L1 to see.
        self.end_table_write_step(mem);
        let Some(n) = self.nested.as_mut() else { return };
        let Some(v01) = n.vmcs01.take() else { return };
        let Some(v02) = self.cpu.vmptrld(v01) else { return };
        n.l2_active = false;
        self.exits.reflected += 1;
        let Some(v12) = n.vmx.current_mut() else {
            n.vmcs02 = Some(v02);
            return;
        };
        if let Some(v01) = self.cpu.vmcs() {
            nested::sync::sync_vmcs12(v12.vmcs_mut(), &v02, v01);
        }
        // What the exit saved is the processor's own state, not L1's
        // writes: the next entry need not re-check it.
        v12.vmcs_mut().clear_written();
        n.vmcs02 = Some(v02);
        let v12 = v12.vmcs();
        // 28.4: store L2's MSRs into vmcs12's exit MSR-store list.
        let store = (v12.get(F::ExitMsrStoreAddress), v12.get(F::ExitMsrStoreCount) as u32);
        for i in 0..store.1.min(512) {
            let at = store.0 + u64::from(i) * 16;
            let Ok(index) = mem.read_u32(at) else { break };
            if let Some(value) = self.cpu.msr_read(mem, bus, index) {
                let _ = mem.write_u64(at + 8, value);
            }
        }
        if let Some(v01) = self.cpu.vmcs_mut() {
            nested::sync::load_l1_host_state(v01, v12);
        }
        // 28.6: load L1's MSRs from vmcs12's exit MSR-load list.
        let load = (v12.get(F::ExitMsrLoadAddress), v12.get(F::ExitMsrLoadCount) as u32);
        for i in 0..load.1.min(512) {
            let at = load.0 + u64::from(i) * 16;
            let (Ok(index), Ok(value)) = (mem.read_u32(at), mem.read_u64(at + 8)) else { break };
            let _ = self.cpu.msr_write(mem, bus, index, value);
        }
        // L1's view of the bits L0 owns follows its new host CR0/CR4.
        let cr0 = v12.get(F::HostCr0);
        let cr4 = v12.get(F::HostCr4);
        self.cpu.vmwrite(F::Cr0ReadShadow, cr0);
        self.cpu.vmwrite(F::Cr4ReadShadow, cr4);
        let g0 = self.cpu.vmread(F::GuestCr0);
        let g4 = self.cpu.vmread(F::GuestCr4);
        self.cpu.vmwrite(F::GuestCr0, g0 | Cr0::NE.bits());
        self.cpu.vmwrite(F::GuestCr4, g4 | Cr4::VMXE.bits());
        self.poll_irq = true;
        self.link_vmcs12(mem);
    }

    /// The VMCS a fresh entry uses is clear until its first VMLAUNCH.
    pub(super) fn current_launched(&self) -> bool {
        self.cpu.vmcs_launch_state() == Some(LaunchState::Launched)
    }
}

/// What `VmEntry` results mean for L0's own entries (not L1's).
pub(super) fn entry_shutdown(e: VmEntry) -> Option<RunExit> {
    match e {
        VmEntry::Entered => None,
        VmEntry::VmFailInvalid => Some(RunExit::Shutdown("L0: VM entry failed: no current VMCS".into())),
        VmEntry::VmFailValid { error, check } => {
            let why = check.map(|c| format!(": {c}")).unwrap_or_default();
            Some(RunExit::Shutdown(format!("L0: VM entry failed with {error}{why}")))
        }
        VmEntry::Failed(e) => Some(RunExit::Shutdown(format!("L0: {e}"))),
    }
}
