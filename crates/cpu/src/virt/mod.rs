//! The VMX unit of Turtles' CPU: one level of VMX, as hardware offers it
//! (Intel SDM vol. 3C, ch. 24 "Introduction to Virtual Machine Extensions",
//! ch. 25 "Virtual Machine Control Structures", ch. 26 "VMX Non-Root
//! Operation", ch. 27 "VM Entries", ch. 28 "VM Exits"; chapter numbers of
//! recent editions, one lower in older ones).
//!
//! L0 reaches it only through the methods below, the way KVM drives VT-x:
//! [`Cpu::vmxon`], [`Cpu::vmptrld`] to make a [`Vmcs`] current,
//! [`Cpu::vmread`]/[`Cpu::vmwrite`], [`Cpu::vm_enter`] (VMLAUNCH or
//! VMRESUME) and then [`Cpu::run`], which returns [`RunExit::VmExit`] once
//! the guest exits; the exit information is in the VMCS and the guest's
//! general-purpose registers other than RSP stay in [`Cpu::regs`], as they
//! stay in the physical registers on hardware.
//!
//! Inside the CPU, an exit condition found by an instruction handler or by
//! event delivery travels up as a [`Fault`] marker (`Fault::vm_exit`) with
//! the details staged in [`VmxUnit::pending`]; the fault path commits the
//! exit (`exit.rs`). Nothing on the ALU/memory path looks at VMX state:
//! the handlers that can exit are the system instructions, and the run
//! loop looks at interrupt windows and the preemption timer only between
//! blocks, when its event flags say something changed.
//!
//! Files: `entry.rs` (27: checks, loading guest state, MSR loading, event
//! injection), `exit.rs` (28: recording exit information, saving guest
//! state, MSR storing, loading host state), `conditions.rs` (26.1-26.2:
//! which instruction and event causes an exit under which control),
//! `shadow.rs` (25.10: VMREAD/VMWRITE on a shadow VMCS without exiting).

use crate::fault::Fault;
use crate::Cpu;
use vmx::controls::{EntryCtls, ExitCtls, PinCtls, ProcCtls, ProcCtls2};
use vmx::{ExitReason, Vmcs, VmcsField, VmxCaps};

mod cache;
mod conditions;
mod emulate;
mod entry;
mod exit;
mod shadow;

/// `field!(slots, Name)`: the slot of `VmcsField::Name` in a VMCS slot
/// array, with the slot number fixed at compile time.
macro_rules! field {
    ($a:expr, $f:ident) => {
        $a[{
            const SLOT: usize = vmx::VmcsField::$f.slot_const();
            SLOT
        }]
    };
}
pub(crate) use field;

/// Slot numbers ([`VmcsField::slot_const`]) of the fields VM entry and
/// exit move, fixed at compile time.
pub(crate) mod slots {
    use vmx::VmcsField as F;

    macro_rules! slots {
        ($($name:ident = $field:ident;)*) => { $( pub const $name: usize = F::$field.slot_const(); )* };
    }

    slots! {
        GUEST_CR0 = GuestCr0;
        GUEST_CR3 = GuestCr3;
        GUEST_CR4 = GuestCr4;
        GUEST_DR7 = GuestDr7;
        GUEST_DEBUGCTL = GuestIa32Debugctl;
        GUEST_SYSENTER_CS = GuestIa32SysenterCs;
        GUEST_SYSENTER_ESP = GuestIa32SysenterEsp;
        GUEST_SYSENTER_EIP = GuestIa32SysenterEip;
        GUEST_PAT = GuestIa32Pat;
        GUEST_EFER = GuestIa32Efer;
        GUEST_GDTR_BASE = GuestGdtrBase;
        GUEST_GDTR_LIMIT = GuestGdtrLimit;
        GUEST_IDTR_BASE = GuestIdtrBase;
        GUEST_IDTR_LIMIT = GuestIdtrLimit;
        GUEST_RIP = GuestRip;
        GUEST_RSP = GuestRsp;
        GUEST_RFLAGS = GuestRflags;
    }

    /// Selector, base, limit, access rights of ES, CS, SS, DS, FS, GS,
    /// LDTR, TR.
    pub const GUEST_SEGS: [[usize; 4]; 8] = {
        const fn seg(f: [F; 4]) -> [usize; 4] {
            [f[0].slot_const(), f[1].slot_const(), f[2].slot_const(), f[3].slot_const()]
        }
        let g = super::entry::GUEST_SEGS;
        [
            seg(g[0]),
            seg(g[1]),
            seg(g[2]),
            seg(g[3]),
            seg(g[4]),
            seg(g[5]),
            seg(super::entry::GUEST_LDTR),
            seg(super::entry::GUEST_TR),
        ]
    };
}

pub use emulate::EmulateError;
pub use entry::VmEntry;
pub use exit::write_guest_registers;

/// The controls of the current VMCS, decoded once per VM entry so that an
/// exit check is a bit test (the VMCS is not supposed to change while the
/// guest runs: VMWRITE needs root operation).
#[derive(Clone, Copy, Debug)]
pub struct Controls {
    /// Pin-based VM-execution controls.
    pub pin: PinCtls,
    /// Primary processor-based VM-execution controls.
    pub proc: ProcCtls,
    /// Secondary processor-based controls (zero unless activated).
    pub proc2: ProcCtls2,
    /// VM-exit controls.
    pub exit: ExitCtls,
    /// VM-entry controls.
    pub entry: EntryCtls,
    /// Exception bitmap.
    pub exception_bitmap: u32,
    /// Page-fault error-code mask.
    pub pf_mask: u32,
    /// Page-fault error-code match.
    pub pf_match: u32,
    /// CR0 guest/host mask.
    pub cr0_mask: u64,
    /// CR0 read shadow.
    pub cr0_shadow: u64,
    /// CR4 guest/host mask.
    pub cr4_mask: u64,
    /// CR4 read shadow.
    pub cr4_shadow: u64,
    /// CR3-target values, the first `cr3_target_count` of them valid.
    pub cr3_targets: [u64; 4],
    /// CR3-target count.
    pub cr3_target_count: u32,
    /// I/O bitmaps A and B.
    pub io_bitmaps: [u64; 2],
    /// MSR-bitmap address.
    pub msr_bitmap: u64,
    /// TSC offset (used when "use TSC offsetting" is 1).
    pub tsc_offset: u64,
    /// TSC multiplier (used when "use TSC scaling" is 1).
    pub tsc_multiplier: u64,
    /// EPT pointer, when "enable EPT" is 1.
    pub eptp: Option<u64>,
    /// VPID, when "enable VPID" is 1 (0 otherwise).
    pub vpid: u16,
    /// An exit and the next entry leave the guest's registers as they
    /// were ([`Controls::round_trip`]): exits may park them (`cache.rs`).
    pub exact_round_trip: bool,
    /// VM-entry MSR-load count.
    pub entry_msr_loads: u32,
    /// VM-exit MSR-store count.
    pub exit_msr_stores: u32,
    /// VM-exit MSR-load count.
    pub exit_msr_loads: u32,
    /// APIC-access page, when "virtualize APIC accesses" is 1.
    pub apic_access: Option<u64>,
    /// VMREAD-bitmap address (used when "VMCS shadowing" is 1).
    pub vmread_bitmap: u64,
    /// VMWRITE-bitmap address (used when "VMCS shadowing" is 1).
    pub vmwrite_bitmap: u64,
}

impl Default for Controls {
    fn default() -> Self {
        Controls::from_vmcs(&Vmcs::new())
    }
}

impl Controls {
    pub(crate) fn from_vmcs(v: &Vmcs) -> Controls {
        use VmcsField as F;
        let proc = ProcCtls::from_bits_retain(v.get(F::PrimaryProcControls) as u32);
        let exit = ExitCtls::from_bits_retain(v.get(F::ExitControls) as u32);
        let entry = EntryCtls::from_bits_retain(v.get(F::EntryControls) as u32);
        let proc2 = if proc.contains(ProcCtls::ACTIVATE_SECONDARY_CONTROLS) {
            ProcCtls2::from_bits_retain(v.get(F::SecondaryProcControls) as u32)
        } else {
            ProcCtls2::empty()
        };
        Controls {
            pin: PinCtls::from_bits_retain(v.get(F::PinBasedControls) as u32),
            proc,
            proc2,
            exit,
            entry,
            exception_bitmap: v.get(F::ExceptionBitmap) as u32,
            pf_mask: v.get(F::PageFaultErrorCodeMask) as u32,
            pf_match: v.get(F::PageFaultErrorCodeMatch) as u32,
            cr0_mask: v.get(F::Cr0GuestHostMask),
            cr0_shadow: v.get(F::Cr0ReadShadow),
            cr4_mask: v.get(F::Cr4GuestHostMask),
            cr4_shadow: v.get(F::Cr4ReadShadow),
            cr3_targets: [
                v.get(F::Cr3TargetValue0),
                v.get(F::Cr3TargetValue1),
                v.get(F::Cr3TargetValue2),
                v.get(F::Cr3TargetValue3),
            ],
            cr3_target_count: v.get(F::Cr3TargetCount) as u32,
            io_bitmaps: [v.get(F::IoBitmapA), v.get(F::IoBitmapB)],
            msr_bitmap: v.get(F::MsrBitmap),
            tsc_offset: v.get(F::TscOffset),
            tsc_multiplier: v.get(F::TscMultiplier),
            eptp: proc2.contains(ProcCtls2::ENABLE_EPT).then(|| v.get(F::EptPointer)),
            vpid: if proc2.contains(ProcCtls2::ENABLE_VPID) { v.get(F::VirtualProcessorId) as u16 } else { 0 },
            exact_round_trip: Controls::round_trip(entry, exit),
            entry_msr_loads: v.get(F::EntryMsrLoadCount) as u32,
            exit_msr_stores: v.get(F::ExitMsrStoreCount) as u32,
            exit_msr_loads: v.get(F::ExitMsrLoadCount) as u32,
            apic_access: proc2
                .contains(ProcCtls2::VIRTUALIZE_APIC_ACCESSES)
                .then(|| v.get(F::ApicAccessAddress) & !0xfff),
            vmread_bitmap: v.get(F::VmreadBitmapAddress),
            vmwrite_bitmap: v.get(F::VmwriteBitmapAddress),
        }
    }

    /// The TSC offset in force: the field when "use TSC offsetting" is 1.
    pub(crate) fn tsc_offset(&self) -> i64 {
        if self.proc.contains(ProcCtls::USE_TSC_OFFSETTING) {
            self.tsc_offset as i64
        } else {
            0
        }
    }
}

/// An exit found while the guest ran, waiting for the fault path to
/// commit it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingExit {
    /// Exit-reason field (basic reason; bit 31 for entry failures).
    pub reason: u32,
    /// Exit qualification.
    pub qualification: u64,
    /// Guest-linear address, for the exits that report one.
    pub guest_linear: Option<u64>,
    /// Guest-physical address (EPT violations and misconfigurations).
    pub guest_physical: Option<u64>,
    /// VM-exit interruption information and error code (exceptions,
    /// NMIs, external interrupts).
    pub interruption: Option<(u32, Option<u32>)>,
    /// VM-exit instruction information.
    pub instruction_info: u32,
    /// The exit was caused by executing an instruction: its length is
    /// recorded and RIP stays at it.
    pub instruction: bool,
}

impl PendingExit {
    /// An exit caused by an instruction, with its qualification.
    pub const fn instruction(reason: ExitReason, qualification: u64) -> PendingExit {
        PendingExit {
            reason: reason as u32,
            qualification,
            guest_linear: None,
            guest_physical: None,
            interruption: None,
            instruction_info: 0,
            instruction: true,
        }
    }

    /// An exit not caused by an instruction (events, windows, timers).
    pub const fn event(reason: ExitReason, qualification: u64) -> PendingExit {
        PendingExit {
            reason: reason as u32,
            qualification,
            guest_linear: None,
            guest_physical: None,
            interruption: None,
            instruction_info: 0,
            instruction: false,
        }
    }
}

/// Per-exit-reason counters (basic reasons 0-80).
pub const EXIT_REASONS: usize = 81;

/// Which VM-entry checks a write makes necessary again (kept per VMCS,
/// in [`Vmcs::written`]).
pub(crate) use vmx::vmcs::check_group as dirty;

/// VMX state of the logical processor.
#[derive(Clone, Debug)]
pub struct VmxUnit {
    /// The capabilities the processor reports; `Some` in VMX operation.
    pub(crate) caps: Option<VmxCaps>,
    /// The current VMCS.
    pub(crate) current: Option<Box<Vmcs>>,
    /// The shadow VMCS the current VMCS's link pointer names
    /// (`shadow.rs`).
    pub(crate) shadow: Option<Box<Vmcs>>,
    /// Decoded controls of the current VMCS while in non-root operation.
    pub(crate) ctls: Controls,
    /// Exit staged by a handler.
    pub(crate) pending: Option<PendingExit>,
    /// The event being delivered when an exit interrupted it (IDT-vectoring
    /// information and error code).
    pub(crate) vectoring: Option<(u32, Option<u32>)>,
    /// (VPID, EPTP) the TLB's entries belong to, when tagged.
    pub(crate) tlb_owner: Option<(u16, u64)>,
    /// The other tagged TLB context and its (VPID, EPTP).
    pub(crate) tlb_alt: Option<((u16, u64), crate::mmu::Tlb)>,
    /// Instruction count at which the VMX-preemption timer expires.
    pub(crate) preemption_deadline: u64,
    /// Exits committed, by basic reason.
    pub exits: [u64; EXIT_REASONS],
    /// The decoded controls match the current VMCS.
    pub(crate) ctls_valid: bool,
    /// Whether entries re-run only the invalidated checks (on by default).
    pub(crate) check_cache: bool,
    /// What a VM exit loads, until a host-state or control field changes.
    pub(crate) host_context: Option<exit::HostContext>,
    /// The guest's registers are parked in the processor after an exit
    /// and the VMCS's guest-register fields are stale (`cache.rs`).
    pub(crate) guest_live: bool,
    /// While parked, software wrote guest RFLAGS: the VMCS holds its exact
    /// value.
    pub(crate) live_rflags: bool,
    /// Whether exits may park the guest's registers (on by default).
    pub(crate) state_cache: bool,
}

impl Default for VmxUnit {
    fn default() -> Self {
        VmxUnit {
            caps: None,
            current: None,
            shadow: None,
            ctls: Controls::default(),
            pending: None,
            vectoring: None,
            tlb_owner: None,
            tlb_alt: None,
            preemption_deadline: u64::MAX,
            exits: [0; EXIT_REASONS],
            ctls_valid: false,
            check_cache: true,
            host_context: None,
            guest_live: false,
            live_rflags: false,
            state_cache: true,
        }
    }
}

/// Vector value of the marker fault that carries a VM exit up the fault
/// path; never an architectural vector (those are 0-31).
pub(crate) const VM_EXIT_VECTOR: u8 = 0xff;

impl Fault {
    /// The marker a handler returns when it found a VM exit (staged in
    /// [`VmxUnit::pending`]).
    pub(crate) const fn vm_exit() -> Fault {
        Fault::new(VM_EXIT_VECTOR)
    }

    /// Whether this is the VM-exit marker rather than an exception.
    #[inline]
    pub(crate) const fn is_vm_exit(&self) -> bool {
        self.vector() == VM_EXIT_VECTOR
    }
}

impl Cpu {
    /// VMXON for L0: the processor enters VMX root operation and reports
    /// `caps` in its IA32_VMX_* MSRs.
    pub fn vmxon(&mut self, caps: VmxCaps) {
        self.vmx.caps = Some(caps);
    }

    /// Whether the processor is in VMX operation.
    pub fn in_vmx_operation(&self) -> bool {
        self.vmx.caps.is_some()
    }

    /// The capabilities in force, in VMX operation.
    pub fn vmx_caps(&self) -> Option<&VmxCaps> {
        self.vmx.caps.as_ref()
    }

    /// Whether the processor is in VMX non-root operation (a guest runs).
    #[inline(always)]
    pub fn in_non_root(&self) -> bool {
        self.non_root
    }

    /// VMPTRLD: makes `vmcs` current and returns the previously current
    /// one. A VMCS is owned by whoever holds the box, so a VMCS cannot be
    /// current on two processors.
    pub fn vmptrld(&mut self, vmcs: Box<Vmcs>) -> Option<Box<Vmcs>> {
        self.load_host_context();
        // Which checks the new VMCS needs travels with it (its
        // `written` groups); what the processor decoded from the old one
        // does not.
        self.vmx.ctls_valid = false;
        self.vmx.host_context = None;
        self.vmx.current.replace(vmcs)
    }

    /// Whether VM entries re-run only the checks that VMWRITEs since the
    /// last successful entry can affect (the default), or every check
    /// every time.
    pub fn set_entry_check_cache(&mut self, on: bool) {
        self.vmx.check_cache = on;
    }

    /// Takes the current VMCS away (VMCLEAR of the current VMCS makes it
    /// clear and not current).
    pub fn vmclear_current(&mut self) -> Option<Box<Vmcs>> {
        self.load_host_context();
        self.vmx.ctls_valid = false;
        self.vmx.host_context = None;
        let mut v = self.vmx.current.take()?;
        v.launch_state = vmx::LaunchState::Clear;
        Some(v)
    }

    /// The current VMCS, with every field up to date (the processor
    /// writes back what it keeps on chip first).
    pub fn vmcs(&mut self) -> Option<&Vmcs> {
        self.load_host_context();
        self.vmx.current.as_deref()
    }

    /// The launch state of the current VMCS.
    pub fn vmcs_launch_state(&self) -> Option<vmx::LaunchState> {
        self.vmx.current.as_deref().map(|v| v.launch_state)
    }

    /// The current VMCS, writable (VMWRITE to many fields).
    pub fn vmcs_mut(&mut self) -> Option<&mut Vmcs> {
        self.load_host_context();
        self.vmx.ctls_valid = false;
        self.vmx.host_context = None;
        self.vmx.current.as_deref_mut()
    }

    /// VMREAD from the current VMCS (0 without one).
    #[inline(always)]
    pub fn vmread(&self, field: VmcsField) -> u64 {
        let Some(v) = self.vmx.current.as_deref() else { return 0 };
        if self.vmx.guest_live {
            if let Some(x) = self.live_guest_field(field) {
                return x;
            }
        }
        v.get(field)
    }

    /// VMWRITE to the current VMCS (ignored without one).
    #[inline]
    pub fn vmwrite(&mut self, field: VmcsField, value: u64) {
        if self.vmx.guest_live {
            // Moving past an instruction, the common case, stays inline.
            if field == VmcsField::GuestRip {
                self.regs.rip = value;
            } else if field == VmcsField::GuestRsp || dirty::of(field) & dirty::GUEST != 0 {
                self.write_parked(field, value);
            }
        }
        if let Some(v) = self.vmx.current.as_deref_mut() {
            let d = dirty::of(field);
            if d & (dirty::HOST | dirty::CONTROLS) != 0 {
                self.vmx.host_context = None;
            }
            if d & dirty::CONTROLS != 0 {
                self.vmx.ctls_valid = false;
            }
            v.set(field, value);
        }
    }

    /// The guest's registers as the current VMCS holds them, for reports
    /// and debuggers in root operation (in non-root operation, and without
    /// a VMCS, the live registers). General-purpose registers other than
    /// RSP are the live ones either way: VM exits leave them alone.
    pub fn guest_regs(&self) -> crate::Regs {
        let mut r = self.regs.clone();
        if self.vmx.guest_live {
            return r;
        }
        if let (false, Some(v)) = (self.non_root, self.vmx.current.as_deref()) {
            if v.launch_state == vmx::LaunchState::Launched {
                entry::load_guest_registers(&mut r, v, &Controls::from_vmcs(v));
            }
        }
        r
    }

    /// Why the processor (or, after a triple-fault exit, its guest) last
    /// shut down.
    pub fn shutdown_reason(&self) -> Option<&str> {
        self.shutdown.as_deref()
    }

    /// Makes the TLB hold the translations of `owner` (VPID, EPTP): kept
    /// when they are already there, swapped in when they wait in the
    /// other context, otherwise a flushed context (SDM 29.4.3.1: untagged
    /// translations never survive an entry).
    pub(crate) fn switch_tlb(&mut self, tagged: bool, owner: (u16, u64)) {
        if tagged && self.vmx.tlb_owner == Some(owner) {
            self.refresh_derived(false);
            return;
        }
        let previous = self.vmx.tlb_owner;
        if tagged && self.vmx.tlb_alt.as_ref().is_some_and(|(o, _)| *o == owner) {
            if let Some((_, mut t)) = self.vmx.tlb_alt.take() {
                core::mem::swap(&mut self.tlb, &mut t);
                self.vmx.tlb_alt = previous.map(|p| (p, t));
                self.vmx.tlb_owner = Some(owner);
                self.refresh_derived(false);
                return;
            }
        }
        if let Some(p) = previous {
            // Keep the outgoing tagged context; reuse the other buffer.
            let mut t = self.vmx.tlb_alt.take().map(|(_, t)| t).unwrap_or_default();
            core::mem::swap(&mut self.tlb, &mut t);
            self.vmx.tlb_alt = Some((p, t));
        }
        self.vmx.tlb_owner = tagged.then_some(owner);
        // A context for a new owner, or an untagged one (whose EPTP is not
        // recorded): no guest-physical mapping of another EPTP survives.
        self.tlb.flush_gpa();
        self.refresh_derived(true);
    }

    /// INVEPT for L0 (SDM 31.3 "INVEPT"): drops the cached translations
    /// derived from EPTP `eptp`, or from every EPTP with `None`. L0 calls
    /// it when it changes EPT paging structures a guest may have cached.
    pub fn invept(&mut self, eptp: Option<u64>) {
        let hit = |o: &(u16, u64)| eptp.is_none_or(|e| (o.1 ^ e) & !0xfff == 0);
        // An untagged TLB (no VPID) may hold guest-physical mappings of any
        // EPTP: it goes whole.
        if self.vmx.tlb_owner.as_ref().is_none_or(hit) {
            self.tlb.flush_all();
            self.tlb.flush_gpa();
        }
        if self.vmx.tlb_alt.as_ref().is_some_and(|(o, _)| hit(o)) {
            self.vmx.tlb_alt = None;
        }
    }

    /// INVVPID for L0 (SDM 31.3 "INVVPID"): drops the cached
    /// translations tagged with `vpid`, or with any VPID with `None`.
    pub fn invvpid(&mut self, vpid: Option<u16>) {
        let hit = |o: &(u16, u64)| vpid.is_none_or(|v| o.0 == v);
        if self.vmx.tlb_owner.as_ref().is_some_and(hit) {
            self.tlb.flush_all();
        }
        if self.vmx.tlb_alt.as_ref().is_some_and(|(o, _)| hit(o)) {
            self.vmx.tlb_alt = None;
        }
    }

    /// RDMSR on the processor's MSRs in root operation (what L0 software
    /// executing RDMSR would read): `None` where RDMSR would fault.
    pub fn msr_read(&mut self, mem: &mut crate::Memory, bus: &mut dyn crate::Bus, msr: u32) -> Option<u64> {
        self.load_host_context();
        let mut ctx = crate::Ctx { mem, bus };
        self.rdmsr(&mut ctx, msr).ok()
    }

    /// WRMSR on the processor's MSRs in root operation; `false` where it
    /// would fault.
    pub fn msr_write(&mut self, mem: &mut crate::Memory, bus: &mut dyn crate::Bus, msr: u32, value: u64) -> bool {
        self.load_host_context();
        let mut ctx = crate::Ctx { mem, bus };
        self.wrmsr(&mut ctx, msr, value).is_ok()
    }

    /// Exits committed since power-on, by basic exit reason.
    pub fn exit_counts(&self) -> &[u64; EXIT_REASONS] {
        &self.vmx.exits
    }

    /// The decoded controls of the running guest.
    #[inline]
    pub(crate) fn vmx_ctls(&self) -> &Controls {
        &self.vmx.ctls
    }

    /// Stages an exit caused by the current instruction and returns the
    /// marker fault for the handler to return.
    #[cold]
    pub(crate) fn exit_insn(&mut self, reason: ExitReason, qualification: u64) -> Fault {
        self.vmx.pending = Some(PendingExit::instruction(reason, qualification));
        Fault::vm_exit()
    }

    /// Turns an EPT marker from the translation of linear address `la`
    /// into a staged EPT-violation or EPT-misconfiguration exit (SDM vol.
    /// 3C, 29.3.3 "EPT-Induced VM Exits"; 28.2.1 for the guest-linear
    /// address, valid when qualification bit 7 is set). Other faults pass
    /// through.
    #[cold]
    pub(crate) fn ept_exit(&mut self, f: Fault, la: u64) -> Fault {
        let Some((misconfig, qualification, gpa)) = f.ept_info() else { return f };
        let reason = if misconfig { ExitReason::EptMisconfiguration } else { ExitReason::EptViolation };
        let mut e = PendingExit::event(reason, qualification);
        e.guest_physical = Some(gpa);
        e.guest_linear = (qualification & (1 << 7) != 0).then_some(la);
        self.vmx.pending = Some(e);
        Fault::vm_exit()
    }

    /// Commits an exit that no instruction caused (timer expiry, triple
    /// fault), from the run loop.
    #[cold]
    pub(crate) fn exit_event(&mut self, ctx: &mut crate::Ctx, reason: ExitReason) {
        self.vmx.pending = Some(PendingExit::event(reason, 0));
        self.commit_exit(ctx);
    }
}

#[cfg(test)]
pub(crate) mod tests;
