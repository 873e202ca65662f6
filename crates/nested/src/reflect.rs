//! Exit routing: every exit of L2 comes to L0 (vmcs02's host state is
//! L0's); L0 decides whether to handle it itself or to reflect it to L1.
//!
//! Hardware would have sent the exit to L1 exactly when vmcs12's controls,
//! bitmaps and masks ask for it (SDM vol. 3C, 26.1 "Instructions That
//! Cause VM Exits", 26.2 "Other Causes of VM Exits"): that is
//! [`l1_wants_exit`]. vmcs02 also exits for L0's own reasons (its controls
//! are the union of both levels', [`crate::merge`]), and some exits L0
//! must look at first even when L1 asked for them in principle (an EPT
//! violation may be a missing EPT02 entry rather than one of EPT12): that
//! is [`l0_wants_exit`]. [`route`] combines them as KVM's
//! `nested_vmx_reflect_vmexit` does: L0 first, then L1, and an exit
//! nobody claims is L0's, handled on L2's behalf the way L1 would have
//! seen it handled by the hardware (an I/O port L1 does not intercept is
//! L1's device, which L0 emulates; HLT without HLT exiting sleeps L2).
//!
//! Both functions are pure: they read vmcs12 (L0's cached copy) and, for
//! the I/O and MSR bitmaps, L1's memory, where bytes outside L1's RAM read
//! as all ones ("exit"). Each has one commented arm per basic exit reason,
//! with no catch-all, so a new [`ExitReason`] must be routed explicitly.

use crate::memory::read_phys;
use crate::merge::proc2;
use cpu::Memory;
use vmx::controls::{InterruptionInfo, InterruptionType, PinCtls, ProcCtls, ProcCtls2};
use vmx::exit::{CrAccess, CrAccessType, IoAccess};
use vmx::{ExitReason, Vmcs, VmcsField as F};
use x86::Cr0;

/// What L0 knows about an exit of L2 besides vmcs02's exit fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitFacts {
    /// Basic exit reason.
    pub reason: ExitReason,
    /// Exit qualification.
    pub qualification: u64,
    /// VM-exit interruption information (exceptions, NMIs, external
    /// interrupts).
    pub interruption_info: u32,
    /// VM-exit interruption error code (#PF's error code for the #PF
    /// mask/match filter).
    pub error_code: u32,
    /// L2's RCX: the MSR index of RDMSR and WRMSR (ECX).
    pub rcx: u64,
    /// The value of the general-purpose register a MOV to CR writes.
    pub cr_source: u64,
}

impl ExitFacts {
    /// Facts for an exit that carries no more than its reason and
    /// qualification.
    pub const fn new(reason: ExitReason, qualification: u64) -> ExitFacts {
        ExitFacts { reason, qualification, interruption_info: 0, error_code: 0, rcx: 0, cr_source: 0 }
    }
}

/// What L0 does with an exit of L2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L0Action {
    /// Reflect it to L1: sync vmcs02 into vmcs12 and load L1's host state
    /// ([`crate::sync`]).
    Reflect,
    /// L0 handles it on L2's behalf as it would for a guest: an EPT02
    /// fill, an interrupt or NMI for L2 or for L1, a device access of L2
    /// to one of L1's devices, a VMFUNC it emulates; then resumes L2 (or
    /// reflects after all, when its handling finds an exit for L1, such as
    /// an EPT12 violation).
    Handle,
}

/// The routing decision: L0's first ([`l0_wants_exit`]), then L1's
/// ([`l1_wants_exit`]); an exit neither claims is L0's.
pub fn route(f: &ExitFacts, vmcs12: &Vmcs, mem: &Memory) -> L0Action {
    if !l0_wants_exit(f, vmcs12) && l1_wants_exit(f, vmcs12, mem) {
        L0Action::Reflect
    } else {
        L0Action::Handle
    }
}

fn pin(v: &Vmcs) -> PinCtls {
    PinCtls::from_bits_retain(v.get(F::PinBasedControls) as u32)
}

fn proc(v: &Vmcs) -> ProcCtls {
    ProcCtls::from_bits_retain(v.get(F::PrimaryProcControls) as u32)
}

/// Whether L1 asked for this exit: whether the processor, running L2 with
/// vmcs12 alone, would have exited to L1 (26.1, 26.2).
pub fn l1_wants_exit(f: &ExitFacts, vmcs12: &Vmcs, mem: &Memory) -> bool {
    let pin12 = pin(vmcs12);
    let proc12 = proc(vmcs12);
    let proc2_12 = proc2(vmcs12);
    use ExitReason as R;
    match f.reason {
        // 26.2: an NMI exits with "NMI exiting"; an exception with its bit
        // in the exception bitmap, #PF filtered by the error-code
        // mask/match (bit 14 set: exit iff (PFEC & mask) == match; clear:
        // iff not).
        R::ExceptionOrNmi => match InterruptionInfo::from_raw(f.interruption_info) {
            Some(i) if i.kind == InterruptionType::Nmi => pin12.contains(PinCtls::NMI_EXITING),
            Some(i) => exception_exits(vmcs12, i.vector, f.error_code),
            // A reserved interruption type: not an event L0 can route.
            None => true,
        },
        // 26.2: external interrupts with "external-interrupt exiting".
        R::ExternalInterrupt => pin12.contains(PinCtls::EXTERNAL_INTERRUPT_EXITING),
        // 26.2: a triple fault always exits.
        R::TripleFault => true,
        // 26.2: INIT always exits in VMX non-root operation.
        R::InitSignal => true,
        // 26.2: SIPI exits in the wait-for-SIPI state, which is L2's.
        R::StartupIpi => true,
        // SMIs exit only under the dual-monitor treatment, which L1 cannot
        // activate: the platform's SMIs are L0's.
        R::IoSmi | R::OtherSmi => false,
        // 26.2: the windows L1 asked for.
        R::InterruptWindow => proc12.contains(ProcCtls::INTERRUPT_WINDOW_EXITING),
        R::NmiWindow => proc12.contains(ProcCtls::NMI_WINDOW_EXITING),
        // 26.1.2: task switches exit unconditionally.
        R::TaskSwitch => true,
        // 26.1.2: CPUID, GETSEC and INVD exit unconditionally.
        R::Cpuid | R::Getsec | R::Invd => true,
        // 26.1.3 "Instructions That Cause VM Exits Conditionally".
        R::Hlt => proc12.contains(ProcCtls::HLT_EXITING),
        R::Invlpg => proc12.contains(ProcCtls::INVLPG_EXITING),
        R::Rdpmc => proc12.contains(ProcCtls::RDPMC_EXITING),
        // RDTSC and RDTSCP by "RDTSC exiting" (RDTSCP reaches an exit
        // only with "enable RDTSCP", otherwise it is #UD).
        R::Rdtsc | R::Rdtscp => proc12.contains(ProcCtls::RDTSC_EXITING),
        // 26.1.2: RSM in SMM exits; L2 cannot be in SMM, so this is an
        // exit nobody expects: L1's as the unconditional kind.
        R::Rsm => true,
        // 26.1.2: VMCALL and the VMX instructions exit unconditionally
        // (vmcs02 never enables VMCS shadowing).
        R::Vmcall
        | R::Vmclear
        | R::Vmlaunch
        | R::Vmptrld
        | R::Vmptrst
        | R::Vmread
        | R::Vmresume
        | R::Vmwrite
        | R::Vmxoff
        | R::Vmxon
        | R::Invept
        | R::Invvpid => true,
        // 26.1.3: CR accesses by vmcs12's masks, shadows, CR3 targets and
        // CR3/CR8 controls.
        R::ControlRegisterAccess => cr_access_exits(f, vmcs12),
        // 26.1.3: MOV DR by "MOV-DR exiting".
        R::MovDr => proc12.contains(ProcCtls::MOV_DR_EXITING),
        // 26.1.3: I/O by the I/O bitmaps or "unconditional I/O exiting".
        R::IoInstruction => io_exits(f.qualification, vmcs12, mem),
        // 26.1.3: RDMSR/WRMSR by the MSR bitmaps, or always without them.
        R::Rdmsr => msr_exits(f.rcx as u32, false, vmcs12, mem),
        R::Wrmsr => msr_exits(f.rcx as u32, true, vmcs12, mem),
        // 27.8: an entry of vmcs02 failing on guest state or MSR loading
        // (or a machine check) failed on what vmcs12 gave: L1's failure.
        R::EntryFailureGuestState | R::EntryFailureMsrLoading | R::EntryFailureMachineCheck => true,
        // 26.1.3: MWAIT and MONITOR by their controls.
        R::Mwait => proc12.contains(ProcCtls::MWAIT_EXITING),
        R::Monitor => proc12.contains(ProcCtls::MONITOR_EXITING),
        // 26.2: the monitor trap flag L1 set.
        R::MonitorTrapFlag => proc12.contains(ProcCtls::MONITOR_TRAP_FLAG),
        // 26.1.3: PAUSE by "PAUSE exiting", or a PAUSE loop by vmcs12's
        // "PAUSE-loop exiting" (vmcs02 uses vmcs12's gap and window).
        R::Pause => proc12.contains(ProcCtls::PAUSE_EXITING) || proc2_12.contains(ProcCtls2::PAUSE_LOOP_EXITING),
        // Ch. 30 "APIC Virtualization and Virtual Interrupts": these exits
        // happen only with vmcs12's TPR shadow and virtual-APIC page, which vmcs02 takes from vmcs12.
        R::TprBelowThreshold => proc12.contains(ProcCtls::USE_TPR_SHADOW),
        R::ApicAccess => proc2_12.contains(ProcCtls2::VIRTUALIZE_APIC_ACCESSES),
        R::VirtualizedEoi => proc2_12.contains(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY),
        R::ApicWrite => proc12.contains(ProcCtls::USE_TPR_SHADOW),
        // 26.1.3: descriptor-table instructions by "descriptor-table
        // exiting".
        R::GdtrIdtrAccess | R::LdtrTrAccess => proc2_12.contains(ProcCtls2::DESCRIPTOR_TABLE_EXITING),
        // 26.2: EPT violations and misconfigurations are L1's when vmcs12
        // uses EPT; which ones (EPT12's rather than a missing EPT02 entry)
        // L0 finds walking EPT12 first (l0_wants_exit). Without vmcs12's
        // EPT they are EPT01's, L0's.
        R::EptViolation | R::EptMisconfiguration => proc2_12.contains(ProcCtls2::ENABLE_EPT),
        // 26.2: the preemption timer L1 armed.
        R::PreemptionTimer => pin12.contains(PinCtls::PREEMPTION_TIMER),
        // 26.1.3: WBINVD/WBNOINVD by "WBINVD exiting".
        R::Wbinvd => proc2_12.contains(ProcCtls2::WBINVD_EXITING),
        // 26.1.2: XSETBV exits unconditionally.
        R::Xsetbv => true,
        // 26.1.3: RDRAND and RDSEED by their controls.
        R::Rdrand => proc2_12.contains(ProcCtls2::RDRAND_EXITING),
        R::Rdseed => proc2_12.contains(ProcCtls2::RDSEED_EXITING),
        // 26.1.3: INVPCID exits when both "INVLPG exiting" and "enable
        // INVPCID" are set.
        R::Invpcid => proc12.contains(ProcCtls::INVLPG_EXITING) && proc2_12.contains(ProcCtls2::ENABLE_INVPCID),
        // 26.1.3 and 26.5 (VM functions): L0 emulates the VM functions
        // vmcs12 enables (l0_wants_exit); a VMFUNC exit that reaches this
        // point is a failing one, which exits to L1.
        R::Vmfunc => true,
        // 26.1.3: ENCLS by vmcs12's ENCLS-exiting bitmap; SGX is not
        // virtualized (vmcs02 clears the control), so any is L1's.
        R::Encls => true,
        // vmcs02 never enables PML: a full log is L0's business.
        R::PmlFull => false,
        // 26.1.3: XSAVES/XRSTORS exit when the XSS-exiting bitmap has a
        // bit that the instruction's mask and IA32_XSS also have. L0 does
        // not know those two here: any bit of vmcs12's bitmap counts.
        R::Xsaves | R::Xrstors => proc2_12.contains(ProcCtls2::ENABLE_XSAVES) && vmcs12.get(F::XssExitingBitmap) != 0,
        // 26.1.3: PCONFIG, ENCLV, LOADIWKEY, ENQCMD(S) PASID failures,
        // SEAMCALL, TDCALL and the MSR-list and user-MSR instructions
        // exit on controls L0 does not virtualize (or unconditionally):
        // if the processor exited, the exit is L1's.
        R::Pconfig
        | R::Enclv
        | R::Loadiwkey
        | R::EnqcmdPasidFailure
        | R::EnqcmdsPasidFailure
        | R::Seamcall
        | R::Tdcall
        | R::Rdmsrlist
        | R::Wrmsrlist
        | R::Urdmsr
        | R::Uwrmsr => true,
        // Sub-page permissions, bus-lock detection and instruction timeout
        // are never enabled in vmcs02: L0's.
        R::SppEvent | R::BusLock | R::InstructionTimeout => false,
        // 26.1.3: UMWAIT and TPAUSE exit when "RDTSC exiting" and "enable
        // user wait and pause" are both set.
        R::Umwait | R::Tpause => {
            proc12.contains(ProcCtls::RDTSC_EXITING) && proc2_12.contains(ProcCtls2::ENABLE_USER_WAIT_PAUSE)
        }
    }
}

/// Whether L0 handles this exit before L1 may see it: exits vmcs02 takes
/// for L0's own reasons, or that L0 must examine first. `false` leaves
/// the decision to [`l1_wants_exit`].
pub fn l0_wants_exit(f: &ExitFacts, vmcs12: &Vmcs) -> bool {
    let pin12 = pin(vmcs12);
    let proc12 = proc(vmcs12);
    let proc2_12 = proc2(vmcs12);
    use ExitReason as R;
    match f.reason {
        // An NMI L1 does not intercept is L2's to take (L0 injects it); a
        // machine check is always L0's. Other exceptions: L1's if it asked,
        // else L0 reinjects them into L2 (vmcs02's bitmap has L0's bits).
        R::ExceptionOrNmi => match InterruptionInfo::from_raw(f.interruption_info) {
            Some(i) if i.kind == InterruptionType::Nmi => !pin12.contains(PinCtls::NMI_EXITING),
            Some(i) => i.vector == x86::vector::MC,
            None => false,
        },
        // An interrupt L1 does not intercept is delivered to L2 by L0
        // (injected, or after an interrupt window).
        R::ExternalInterrupt => !pin12.contains(PinCtls::EXTERNAL_INTERRUPT_EXITING),
        // Always L1's (26.1.2, 26.2).
        R::TripleFault | R::InitSignal | R::StartupIpi | R::TaskSwitch => false,
        // SMIs are the platform's.
        R::IoSmi | R::OtherSmi => true,
        // A window vmcs12 did not request is L0's request (to inject into
        // L2 an event L0 holds for it).
        R::InterruptWindow => !proc12.contains(ProcCtls::INTERRUPT_WINDOW_EXITING),
        R::NmiWindow => !proc12.contains(ProcCtls::NMI_WINDOW_EXITING),
        // Unconditional instruction exits: L1's.
        R::Cpuid | R::Getsec | R::Invd | R::Rsm | R::Xsetbv => false,
        R::Vmcall
        | R::Vmclear
        | R::Vmlaunch
        | R::Vmptrld
        | R::Vmptrst
        | R::Vmread
        | R::Vmresume
        | R::Vmwrite
        | R::Vmxoff
        | R::Vmxon
        | R::Invept
        | R::Invvpid => false,
        // Conditional instruction exits: L1's when it asked, else L0
        // emulates them for L2 (the instruction touches L1's machine:
        // HLT sleeps, I/O reaches L1's devices, MSRs and CR8 L1's CPU
        // and local APIC, L0-owned CR bits are emulated).
        R::Hlt
        | R::Invlpg
        | R::Rdpmc
        | R::Rdtsc
        | R::Rdtscp
        | R::ControlRegisterAccess
        | R::MovDr
        | R::IoInstruction
        | R::Rdmsr
        | R::Wrmsr
        | R::Mwait
        | R::Monitor
        | R::Pause
        | R::GdtrIdtrAccess
        | R::LdtrTrAccess
        | R::Wbinvd
        | R::Rdrand
        | R::Rdseed
        | R::Invpcid
        | R::Xsaves
        | R::Xrstors
        | R::Umwait
        | R::Tpause => false,
        // A failed entry of vmcs02 is reported to L1 as its entry failure.
        R::EntryFailureGuestState | R::EntryFailureMsrLoading | R::EntryFailureMachineCheck => false,
        // MTF and the preemption timer: L0's unless vmcs12's.
        R::MonitorTrapFlag => !proc12.contains(ProcCtls::MONITOR_TRAP_FLAG),
        R::PreemptionTimer => !pin12.contains(PinCtls::PREEMPTION_TIMER),
        // APIC virtualization is vmcs12's when these happen.
        R::TprBelowThreshold | R::ApicAccess | R::VirtualizedEoi | R::ApicWrite => false,
        // EPT: with vmcs12's EPT, L0 walks EPT12 and either fills EPT02
        // or reflects an EPT12 violation; without it, EPT01's faults
        // (L1's MMIO, touched by L2) are L0's.
        R::EptViolation | R::EptMisconfiguration => true,
        // L0 emulates the VM functions vmcs12 enables (EPTP switching on
        // vmcs12's list; vmcs02's VM-function controls are zero).
        R::Vmfunc => proc2_12.contains(ProcCtls2::ENABLE_VM_FUNCTIONS),
        // Features vmcs02 never enables: whatever happened is L0's.
        R::PmlFull | R::SppEvent | R::BusLock | R::InstructionTimeout => true,
        // Exits of features L0 does not virtualize: L1's (l1_wants_exit).
        R::Encls
        | R::Pconfig
        | R::Enclv
        | R::Loadiwkey
        | R::EnqcmdPasidFailure
        | R::EnqcmdsPasidFailure
        | R::Seamcall
        | R::Tdcall
        | R::Rdmsrlist
        | R::Wrmsrlist
        | R::Urdmsr
        | R::Uwrmsr => false,
    }
}

/// 26.2: whether exception `vector` (with error code `error_code` for
/// #PF) exits under vmcs12's exception bitmap and #PF filter.
fn exception_exits(vmcs12: &Vmcs, vector: u8, error_code: u32) -> bool {
    vmx::conditions::exception_exits(
        vmcs12.get(F::ExceptionBitmap) as u32,
        vmcs12.get(F::PageFaultErrorCodeMask) as u32,
        vmcs12.get(F::PageFaultErrorCodeMatch) as u32,
        vector,
        error_code,
    )
}

/// 26.1.3: whether a MOV CR, CLTS or LMSW exits under vmcs12.
fn cr_access_exits(f: &ExitFacts, vmcs12: &Vmcs) -> bool {
    let proc12 = proc(vmcs12);
    let q = CrAccess::from_raw(f.qualification);
    let (mask0, shadow0) = (vmcs12.get(F::Cr0GuestHostMask), vmcs12.get(F::Cr0ReadShadow));
    match (q.access, q.cr) {
        // MOV to CR0/CR4: a bit L1 owns would differ from its shadow.
        (CrAccessType::MovToCr, 0) => (f.cr_source ^ shadow0) & mask0 != 0,
        (CrAccessType::MovToCr, 4) => {
            (f.cr_source ^ vmcs12.get(F::Cr4ReadShadow)) & vmcs12.get(F::Cr4GuestHostMask) != 0
        }
        // MOV to CR3: with "CR3-load exiting", unless the value is one of
        // the first CR3-target-count targets.
        (CrAccessType::MovToCr, 3) => {
            let count = vmcs12.get(F::Cr3TargetCount).min(4) as usize;
            let targets = [F::Cr3TargetValue0, F::Cr3TargetValue1, F::Cr3TargetValue2, F::Cr3TargetValue3];
            proc12.contains(ProcCtls::CR3_LOAD_EXITING)
                && !targets[..count].iter().any(|&t| vmcs12.get(t) == f.cr_source)
        }
        (CrAccessType::MovFromCr, 3) => proc12.contains(ProcCtls::CR3_STORE_EXITING),
        (CrAccessType::MovToCr, 8) => proc12.contains(ProcCtls::CR8_LOAD_EXITING),
        (CrAccessType::MovFromCr, 8) => proc12.contains(ProcCtls::CR8_STORE_EXITING),
        // CLTS: L1 owns TS and its shadow says TS is set.
        (CrAccessType::Clts, _) => mask0 & shadow0 & Cr0::TS.bits() != 0,
        // LMSW: L1 owns PE, the shadow's PE is 0 and the source sets it;
        // or L1 owns one of MP, EM, TS and the source differs from the
        // shadow there.
        (CrAccessType::Lmsw, _) => {
            let src = u64::from(q.lmsw_source);
            let pe = Cr0::PE.bits();
            let low = (Cr0::MP | Cr0::EM | Cr0::TS).bits();
            (mask0 & pe != 0 && shadow0 & pe == 0 && src & pe != 0) || (mask0 & low & (src ^ shadow0)) != 0
        }
        // No other CR access exits on a processor; should one be
        // reported, L1 sees it, as the unconditional kind.
        _ => true,
    }
}

/// Reads bit `bit` of the bitmap at L1 physical `base`; outside L1's RAM
/// the bit is 1.
fn bitmap_bit(mem: &Memory, base: u64, bit: u64) -> bool {
    let mut b = [0u8];
    read_phys(mem, base.wrapping_add(bit / 8), &mut b);
    b[0] & (1 << (bit % 8)) != 0
}

/// 26.1.3: whether an I/O instruction with this qualification exits under
/// vmcs12: by "unconditional I/O exiting" without I/O bitmaps, else when
/// the bit of any port accessed is set (bitmap A for 0-7FFFh, B for
/// 8000h-FFFFh) or the access wraps past FFFFh.
fn io_exits(qualification: u64, vmcs12: &Vmcs, mem: &Memory) -> bool {
    let proc12 = proc(vmcs12);
    let Some(io) = IoAccess::from_raw(qualification) else { return true };
    if !proc12.contains(ProcCtls::USE_IO_BITMAPS) {
        return proc12.contains(ProcCtls::UNCONDITIONAL_IO_EXITING);
    }
    let bitmaps = [vmcs12.get(F::IoBitmapA), vmcs12.get(F::IoBitmapB)];
    vmx::conditions::io_bitmaps_exit(io.port, io.size.bytes(), |b, n| bitmap_bit(mem, bitmaps[b], u64::from(n)))
}

/// 26.1.3 and 25.6.9 "MSR-Bitmap Address": whether RDMSR (`write` false)
/// or WRMSR of `msr` exits under vmcs12: always without MSR bitmaps or
/// outside the two ranges the bitmaps cover (0-1FFFh at offsets 0 read /
/// 2048 write, C0000000h-C0001FFFh at 1024 read / 3072 write).
fn msr_exits(msr: u32, write: bool, vmcs12: &Vmcs, mem: &Memory) -> bool {
    if !proc(vmcs12).contains(ProcCtls::USE_MSR_BITMAPS) {
        return true;
    }
    vmx::conditions::msr_bitmap_bit(msr, write).is_none_or(|bit| bitmap_bit(mem, vmcs12.get(F::MsrBitmap), bit))
}

#[cfg(test)]
mod tests;
