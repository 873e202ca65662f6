//! The virtual VM exit: what the processor would do to vmcs12 and to L1
//! when L2 exits to L1, done by L0 in software.
//!
//! A reflected exit of L2 ran L0's real exit on vmcs02; L0 then
//! (KVM's `nested_vmx_vmexit`):
//!
//! 1. copies L2's state and the exit information from vmcs02 into vmcs12
//!    ([`sync_vmcs12`]: SDM vol. 3C, 28.2 "Recording VM-Exit Information
//!    and Updating VM-Entry Control Fields", 28.3 "Saving Guest State"),
//!    honouring vmcs12's "save" exit controls;
//! 2. processes vmcs12's VM-exit MSR-store list (28.4 "Saving MSRs");
//! 3. loads vmcs12's host state as L1's state, which is vmcs01's guest
//!    state ([`load_l1_host_state`]: 28.5 "Loading Host State");
//! 4. processes vmcs12's VM-exit MSR-load list (28.6 "Loading MSRs") and
//!    resumes L1 with vmcs01.
//!
//! Steps 2 and 4 need L0's MSR model and are the caller's. A virtual VM
//! entry that fails after the guest-state checks on vmcs12 is reported
//! the same way without step 1 ([`entry_failure`]: 27.8 "VM-Entry
//! Failures During or After Loading Guest State").
//!
//! vmcs01's CR0 and CR4 follow L0's convention ([`crate::merge`]): bits
//! in vmcs01's guest/host masks (CR0.NE, CR4.VMXE) are set in the guest
//! field and L1 reads its own values from the read shadows.

use crate::merge::{proc2, GuestSlots};
use vmx::controls::{EntryCtls, ExitCtls, Interruptibility, InterruptionInfo, InterruptionType, ProcCtls2};
use vmx::exit::ExitReasonField;
use vmx::{ExitReason, Vmcs, VmcsField as F};
use x86::seg::ar;
use x86::{Cr0, Cr4, Efer};

/// VM-exit information fields the processor writes on every exit
/// (28.2.1 "Basic VM-Exit Information" through 28.2.5 "Information for VM
/// Exits Due to Instruction Execution").
const EXIT_INFO: [F; 10] = [
    F::ExitReason,
    F::ExitQualification,
    F::GuestLinearAddress,
    F::GuestPhysicalAddress,
    F::ExitInterruptionInfo,
    F::ExitInterruptionErrorCode,
    F::IdtVectoringInfo,
    F::IdtVectoringErrorCode,
    F::ExitInstructionLength,
    F::ExitInstructionInfo,
];

/// Guest-state fields an exit saves only under conditions (or never, for
/// the link pointer and the PML index), decided one by one.
const SOMETIMES_SAVED: [F; 12] = [
    F::VmcsLinkPointer,
    F::PmlIndex,
    F::GuestDr7,
    F::GuestIa32Debugctl,
    F::GuestIa32Pat,
    F::GuestIa32Efer,
    F::GuestIa32PerfGlobalCtrl,
    F::PreemptionTimerValue,
    F::GuestPdpte0,
    F::GuestPdpte1,
    F::GuestPdpte2,
    F::GuestPdpte3,
];

/// The other guest-state fields: every exit saves them.
const ALWAYS_SAVED: GuestSlots = GuestSlots::except(&SOMETIMES_SAVED);

fn exit_ctls(v: &Vmcs) -> ExitCtls {
    ExitCtls::from_bits_retain(v.get(F::ExitControls) as u32)
}

fn set_bits(v: &mut Vmcs, f: F, bits: u64, on: bool) {
    let old = v.get(f);
    v.set(f, if on { old | bits } else { old & !bits });
}

/// 28.2 and 28.3 for L1: vmcs02's guest state and exit information into
/// vmcs12; clears the valid bit of vmcs12's VM-entry interruption
/// information (the event was delivered, or comes back in the
/// IDT-vectoring information). CR0/CR4: vmcs02's values, with the bits
/// only L0 owns (in vmcs01's masks but not vmcs12's) taken from vmcs12's
/// old guest value, since L2 cannot have changed them without an exit L0
/// emulated. An exit L0 synthesizes (an interrupt for L1, an EPT
/// violation found in EPT12) overwrites the exit information afterwards.
pub fn sync_vmcs12(vmcs12: &mut Vmcs, vmcs02: &Vmcs, vmcs01: &Vmcs) {
    let exit12 = exit_ctls(vmcs12);
    let exit02 = exit_ctls(vmcs02);
    let ept12 = proc2(vmcs12).contains(ProcCtls2::ENABLE_EPT);
    let old_cr = [vmcs12.get(F::GuestCr0), vmcs12.get(F::GuestCr4)];
    vmcs12.copy_slots(vmcs02, ALWAYS_SAVED.slots());
    for f in SOMETIMES_SAVED {
        let save = match f {
            // Not state: the link pointer is L1's control, PML is not
            // virtualized for L2.
            F::VmcsLinkPointer | F::PmlIndex => false,
            // 28.3.1: saved only under the matching exit controls (and
            // vmcs02 must have saved them itself, which vmcs01's exit
            // controls make it do for EFER, PAT and debug controls).
            F::GuestDr7 | F::GuestIa32Debugctl => {
                exit12.contains(ExitCtls::SAVE_DEBUG_CONTROLS) && exit02.contains(ExitCtls::SAVE_DEBUG_CONTROLS)
            }
            F::GuestIa32Pat => exit12.contains(ExitCtls::SAVE_PAT) && exit02.contains(ExitCtls::SAVE_PAT),
            F::GuestIa32Efer => exit12.contains(ExitCtls::SAVE_EFER) && exit02.contains(ExitCtls::SAVE_EFER),
            F::GuestIa32PerfGlobalCtrl => {
                exit12.contains(ExitCtls::SAVE_PERF_GLOBAL_CTRL) && exit02.contains(ExitCtls::SAVE_PERF_GLOBAL_CTRL)
            }
            // 28.3.4 "Saving Non-Register State": the timer value only
            // with "save VMX-preemption timer value".
            F::PreemptionTimerValue => {
                exit12.contains(ExitCtls::SAVE_PREEMPTION_TIMER) && exit02.contains(ExitCtls::SAVE_PREEMPTION_TIMER)
            }
            // 28.3.4: the PDPTEs are saved only with EPT (vmcs12's).
            F::GuestPdpte0 | F::GuestPdpte1 | F::GuestPdpte2 | F::GuestPdpte3 => ept12,
            _ => false,
        };
        if save {
            vmcs12.set(f, vmcs02.get(f));
        }
    }
    for ((guest, mask), old) in
        [(F::GuestCr0, F::Cr0GuestHostMask), (F::GuestCr4, F::Cr4GuestHostMask)].into_iter().zip(old_cr)
    {
        let l0_only = vmcs01.get(mask) & !vmcs12.get(mask);
        vmcs12.set(guest, (vmcs02.get(guest) & !l0_only) | (old & l0_only));
    }
    // IA32_VMX_MISC bit 5 (appendix A.6 "Miscellaneous Data"): exits store
    // EFER.LMA into the "IA-32e mode guest" entry control.
    if exit02.contains(ExitCtls::SAVE_EFER) {
        let lma = vmcs02.get(F::GuestIa32Efer) & Efer::LMA.bits() != 0;
        set_bits(vmcs12, F::EntryControls, u64::from(EntryCtls::IA32E_MODE_GUEST.bits()), lma);
    }
    for f in EXIT_INFO {
        vmcs12.set(f, vmcs02.get(f));
    }
    // 28.2: every exit clears the valid bit of the entry event.
    set_bits(vmcs12, F::EntryInterruptionInfo, u64::from(InterruptionInfo::VALID), false);
}

/// Bits of CR0 a VM exit does not change (28.5.1 "Loading Host Control
/// Registers, Debug Registers, MSRs"): ET, CD, NW, 63:32, 28:19, 17 and
/// 15:6. The bits VMX operation fixes (PE, NE, PG) are 1 in a host CR0
/// that passed the 26.2.2 checks.
const CR0_KEPT_ON_EXIT: u64 =
    0xffff_ffff_0000_0000 | 0x1ff8_0000 | (1 << 17) | 0xffc0 | Cr0::ET.bits() | Cr0::CD.bits() | Cr0::NW.bits();

/// 28.5 for L1: vmcs12's host state becomes L1's state, that is vmcs01's
/// guest state: CR0, CR3, CR4 (CR4.PAE set, CR4.PCIDE cleared by the host
/// address-space size), DR7 = 0x400, IA32_DEBUGCTL = 0, SYSENTER MSRs,
/// EFER (loaded, or LMA/LME from the host address-space size), PAT and
/// IA32_PERF_GLOBAL_CTRL when loaded, flat 4 GiB segments with null data
/// selectors unusable, TR busy 32-bit TSS, LDTR unusable, GDTR/IDTR limit
/// 0xffff, RIP/RSP from the host fields, RFLAGS = 2, no blocking but
/// blocking by NMI after an NMI exit, activity active. vmcs01's read
/// shadows get L1's view of CR0/CR4 and its "IA-32e mode guest" entry
/// control follows EFER.LMA.
pub fn load_l1_host_state(vmcs01: &mut Vmcs, vmcs12: &Vmcs) {
    let exit12 = exit_ctls(vmcs12);
    let host64 = exit12.contains(ExitCtls::HOST_ADDRESS_SPACE_SIZE);

    // 28.5.1: control registers, as L1 sees them; the guest fields
    // carry L0's owned bits set.
    let old_cr0 = (vmcs01.get(F::GuestCr0) & !vmcs01.get(F::Cr0GuestHostMask))
        | (vmcs01.get(F::Cr0ReadShadow) & vmcs01.get(F::Cr0GuestHostMask));
    let cr0 = (old_cr0 & CR0_KEPT_ON_EXIT) | (vmcs12.get(F::HostCr0) & !CR0_KEPT_ON_EXIT);
    let mut cr4 = vmcs12.get(F::HostCr4);
    if host64 {
        cr4 |= Cr4::PAE.bits();
    } else {
        cr4 &= !Cr4::PCIDE.bits();
    }
    vmcs01.set(F::Cr0ReadShadow, cr0);
    vmcs01.set(F::GuestCr0, cr0 | vmcs01.get(F::Cr0GuestHostMask));
    vmcs01.set(F::Cr4ReadShadow, cr4);
    vmcs01.set(F::GuestCr4, cr4 | vmcs01.get(F::Cr4GuestHostMask));
    vmcs01.set(F::GuestCr3, vmcs12.get(F::HostCr3));
    vmcs01.set(F::GuestDr7, 0x400);
    vmcs01.set(F::GuestIa32Debugctl, 0);
    vmcs01.set(F::GuestIa32SysenterCs, vmcs12.get(F::HostIa32SysenterCs));
    vmcs01.set(F::GuestIa32SysenterEsp, vmcs12.get(F::HostIa32SysenterEsp));
    vmcs01.set(F::GuestIa32SysenterEip, vmcs12.get(F::HostIa32SysenterEip));
    let lm = (Efer::LMA | Efer::LME).bits();
    let efer = if exit12.contains(ExitCtls::LOAD_EFER) {
        vmcs12.get(F::HostIa32Efer)
    } else {
        (vmcs01.get(F::GuestIa32Efer) & !lm) | if host64 { lm } else { 0 }
    };
    vmcs01.set(F::GuestIa32Efer, efer);
    set_bits(vmcs01, F::EntryControls, u64::from(EntryCtls::IA32E_MODE_GUEST.bits()), efer & Efer::LMA.bits() != 0);
    if exit12.contains(ExitCtls::LOAD_PAT) {
        vmcs01.set(F::GuestIa32Pat, vmcs12.get(F::HostIa32Pat));
    }
    if exit12.contains(ExitCtls::LOAD_PERF_GLOBAL_CTRL) {
        vmcs01.set(F::GuestIa32PerfGlobalCtrl, vmcs12.get(F::HostIa32PerfGlobalCtrl));
    }
    if exit12.contains(ExitCtls::LOAD_PKRS) {
        vmcs01.set(F::GuestIa32Pkrs, vmcs12.get(F::HostIa32Pkrs));
    }
    if exit12.contains(ExitCtls::LOAD_CET_STATE) {
        vmcs01.set(F::GuestIa32SCet, vmcs12.get(F::HostIa32SCet));
        vmcs01.set(F::GuestSsp, vmcs12.get(F::HostSsp));
        vmcs01.set(F::GuestIa32InterruptSspTableAddr, vmcs12.get(F::HostIa32InterruptSspTableAddr));
    }
    for (on, f) in [
        (ExitCtls::CLEAR_BNDCFGS, F::GuestIa32Bndcfgs),
        (ExitCtls::CLEAR_RTIT_CTL, F::GuestIa32RtitCtl),
        (ExitCtls::CLEAR_LBR_CTL, F::GuestIa32LbrCtl),
    ] {
        if exit12.contains(on) {
            vmcs01.set(f, 0);
        }
    }

    // 28.5.2 "Loading Host Segment and Descriptor-Table Registers".
    let flat = ar::P | ar::S | ar::G | ar::ACCESSED;
    let cs_ar = flat | ar::CODE | ar::RW | if host64 { ar::L } else { ar::DB };
    set_segment(vmcs01, Seg::Cs, vmcs12.get(F::HostCsSelector), 0, 0xffff_ffff, cs_ar);
    for (seg, sel, base) in [
        (Seg::Ss, F::HostSsSelector, None),
        (Seg::Ds, F::HostDsSelector, None),
        (Seg::Es, F::HostEsSelector, None),
        (Seg::Fs, F::HostFsSelector, Some(F::HostFsBase)),
        (Seg::Gs, F::HostGsSelector, Some(F::HostGsBase)),
    ] {
        let selector = vmcs12.get(sel);
        let access = if selector == 0 { ar::UNUSABLE } else { flat | ar::RW | ar::DB };
        set_segment(vmcs01, seg, selector, base.map_or(0, |b| vmcs12.get(b)), 0xffff_ffff, access);
    }
    let tss_busy = ar::P | x86::seg::sys::TSS_BUSY;
    set_segment(vmcs01, Seg::Tr, vmcs12.get(F::HostTrSelector), vmcs12.get(F::HostTrBase), 0x67, tss_busy);
    set_segment(vmcs01, Seg::Ldtr, 0, 0, 0, ar::UNUSABLE);
    vmcs01.set(F::GuestGdtrBase, vmcs12.get(F::HostGdtrBase));
    vmcs01.set(F::GuestGdtrLimit, 0xffff);
    vmcs01.set(F::GuestIdtrBase, vmcs12.get(F::HostIdtrBase));
    vmcs01.set(F::GuestIdtrLimit, 0xffff);

    // 28.5.3 "Loading Host RIP, RSP, SSP, and RFLAGS".
    vmcs01.set(F::GuestRip, vmcs12.get(F::HostRip));
    vmcs01.set(F::GuestRsp, vmcs12.get(F::HostRsp));
    vmcs01.set(F::GuestRflags, 2);

    // Ch. 28: no blocking by STI or MOV SS after an exit; an exit caused
    // directly by an NMI leaves NMIs blocked; the processor is active.
    let reason = ExitReasonField::from_raw(vmcs12.get(F::ExitReason) as u32);
    let info = InterruptionInfo::from_raw(vmcs12.get(F::ExitInterruptionInfo) as u32);
    let nmi_exit = reason.basic == ExitReason::ExceptionOrNmi.basic()
        && !reason.entry_failure
        && info.is_some_and(|i| i.valid && i.kind == InterruptionType::Nmi);
    let intr = if nmi_exit { Interruptibility::BLOCKING_BY_NMI } else { Interruptibility::empty() };
    vmcs01.set(F::GuestInterruptibilityState, u64::from(intr.bits()));
    vmcs01.set(F::GuestActivityState, 0);
    vmcs01.set(F::GuestPendingDebugExceptions, 0);
}

/// 27.8 for L1: a virtual VM entry failed during or after the
/// guest-state checks on vmcs12 (basic `reason` 33, 34 or 41). The exit
/// reason gets bit 31, the qualification is recorded, the VM-exit
/// interruption information is invalid (28.2.2: only vectored-event exits
/// make it valid); no guest state is saved; then L1 gets its host state
/// ([`load_l1_host_state`]). L0 then processes vmcs12's VM-exit MSR-load
/// list as after any exit.
pub fn entry_failure(vmcs01: &mut Vmcs, vmcs12: &mut Vmcs, reason: u32, qualification: u64) {
    vmcs12.set(F::ExitReason, u64::from(reason | ExitReasonField::ENTRY_FAILURE));
    vmcs12.set(F::ExitQualification, qualification);
    set_bits(vmcs12, F::ExitInterruptionInfo, u64::from(InterruptionInfo::VALID), false);
    load_l1_host_state(vmcs01, vmcs12);
}

/// Guest segment registers of a VMCS.
#[derive(Clone, Copy)]
enum Seg {
    Cs,
    Ss,
    Ds,
    Es,
    Fs,
    Gs,
    Tr,
    Ldtr,
}

/// (selector, base, limit, access rights) fields of a guest segment.
fn seg_fields(seg: Seg) -> [F; 4] {
    match seg {
        Seg::Cs => [F::GuestCsSelector, F::GuestCsBase, F::GuestCsLimit, F::GuestCsAccessRights],
        Seg::Ss => [F::GuestSsSelector, F::GuestSsBase, F::GuestSsLimit, F::GuestSsAccessRights],
        Seg::Ds => [F::GuestDsSelector, F::GuestDsBase, F::GuestDsLimit, F::GuestDsAccessRights],
        Seg::Es => [F::GuestEsSelector, F::GuestEsBase, F::GuestEsLimit, F::GuestEsAccessRights],
        Seg::Fs => [F::GuestFsSelector, F::GuestFsBase, F::GuestFsLimit, F::GuestFsAccessRights],
        Seg::Gs => [F::GuestGsSelector, F::GuestGsBase, F::GuestGsLimit, F::GuestGsAccessRights],
        Seg::Tr => [F::GuestTrSelector, F::GuestTrBase, F::GuestTrLimit, F::GuestTrAccessRights],
        Seg::Ldtr => [F::GuestLdtrSelector, F::GuestLdtrBase, F::GuestLdtrLimit, F::GuestLdtrAccessRights],
    }
}

fn set_segment(v: &mut Vmcs, seg: Seg, selector: u64, base: u64, limit: u64, access: u32) {
    let [s, b, l, a] = seg_fields(seg);
    v.set(s, selector);
    v.set(b, base);
    v.set(l, limit);
    v.set(a, u64::from(access));
}

#[cfg(test)]
mod tests;
