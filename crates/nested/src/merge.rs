//! vmcs02 = merge(vmcs01, vmcs12): the VMCS L0 runs L2 with.
//!
//! L1 describes L2 in vmcs12 as if it ran on hardware; L0 describes L1 in
//! vmcs01. The CPU has one level of VMX, so L2 runs under a third VMCS,
//! vmcs02, built from both (the Turtles paper, OSDI 2010, 3.2 "CPU:
//! Nested VMX Virtualization"; KVM's `prepare_vmcs02`):
//!
//! - **Guest state** is L2's, from vmcs12, so that the CPU's VM entry
//!   (SDM vol. 3C, 27.3 "Checking and Loading Guest State") loads what L1
//!   asked for. Where vmcs12 does not load IA32_EFER, IA32_PAT or the debug
//!   controls, the processor would have kept L1's values (27.3.2.1
//!   "Loading Guest Control Registers, Debug Registers, and MSRs"), which
//!   are vmcs01's guest fields (L1's state saved at its last exit); vmcs02
//!   always loads all three so that L2 never inherits L0's. CR0 and CR4
//!   get the bits L0 owns (vmcs01's guest/host masks: CR0.NE and
//!   CR4.VMXE, which VMX operation fixes to 1) set.
//! - **Host state** is L0's, from vmcs01: every exit of L2 comes to L0
//!   first (ch. 28 "VM Exits"). L1's host state never reaches the CPU; L0
//!   loads it into vmcs01 in software when it reflects an exit
//!   ([`crate::sync::load_l1_host_state`]).
//! - **Controls** are combined so that the CPU exits whenever L0 or L1
//!   wants it (25.6 "VM-Execution Control Fields"): exiting controls,
//!   exception bitmaps and CR guest/host masks are ORed, I/O always exits
//!   (L0's all-ones bitmaps: ports are L0's devices or L1's, and
//!   [`crate::reflect::l1_wants_exit`] reads L1's bitmaps), the MSR bitmaps
//!   are ORed into a page L0 owns, TSC offsets (and multipliers) compose,
//!   EPT is always on (EPT02, or EPT01 when L2's paging is L1's business)
//!   and L2 gets its own VPID.
//!
//! Which vmcs02 control fields come from where is a whitelist: every
//! control field starts at zero and only the ones listed in
//! [`merge_controls`] get a value, so a feature L0 does not virtualize
//! stays off even when L1 sets its fields.
//!
//! Features L0 does not virtualize, cleared in vmcs02 whatever vmcs12 asks
//! (Turtles' capability MSRs offer none of them to L1, so the VM-entry
//! checks on vmcs12 already reject them): VMCS shadowing, ENCLS/ENCLV
//! exiting, page-modification logging, EPT-violation #VE, Intel PT
//! controls, mode-based EPT execute control, sub-page write permissions,
//! PCONFIG, bus-lock detection, instruction timeout, the tertiary
//! controls, the secondary exit controls and VM functions themselves (the
//! "enable VM functions" control passes, but vmcs02's VM-function controls
//! are zero, so every VMFUNC of L2 exits to L0, which emulates EPTP
//! switching on vmcs12's list).
//!
//! Everything here is a pure function of vmcs01, vmcs12 and L1's memory
//! (read through [`crate::memory`]: outside L1's RAM every byte reads as
//! all ones, so an L1 bitmap there means "exit").

use crate::memory::read_phys;
use cpu::Memory;
use vmx::controls::{EntryCtls, ExitCtls, PinCtls, ProcCtls, ProcCtls2};
use vmx::{FieldKind, Vmcs, VmcsField as F};
use x86::{Cr0, Cr4, Efer};

const PAGE: usize = 4096;

/// TSC multiplier 1.0 (the field is a 16.48 fixed-point number, SDM
/// 25.6.5 "Time-Stamp Counter Offset and Multiplier").
pub const TSC_MULTIPLIER_ONE: u64 = 1 << 48;

/// What L0 allocated for one L2 (per vmcs12 it runs): pages and
/// identifiers vmcs02 points to instead of L1's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Vmcs02Resources {
    /// Physical addresses of two 4 KiB pages of all ones that L0 owns
    /// (I/O bitmaps A and B): every port access of L2 exits to L0.
    pub io_bitmaps: [u64; 2],
    /// Physical address of a 4 KiB page L0 owns that receives the merged
    /// MSR bitmap.
    pub msr_bitmap: u64,
    /// EPTP of the shadow EPT02 when vmcs12 enables EPT; `None` runs L2 on
    /// vmcs01's EPTP (EPT01), which is right when L2's paging is L1's.
    pub eptp02: Option<u64>,
    /// L0's VPID for L2 (0: no VPID, every entry and exit flushes).
    pub vpid02: u16,
}

/// Primary controls of vmcs01 that are L0's requests about L1's own
/// execution, not conditions L0 needs while L2 runs: an interrupt or NMI
/// window L0 waits for to inject into L1, and single-stepping L1.
const PROC01_FOR_L1_ONLY: ProcCtls =
    ProcCtls::INTERRUPT_WINDOW_EXITING.union(ProcCtls::NMI_WINDOW_EXITING).union(ProcCtls::MONITOR_TRAP_FLAG);

/// Secondary controls that pass from vmcs12 to vmcs02 as they are. EPT
/// and VPID are L0's (always on); [`ProcCtls2::USE_TSC_SCALING`] is
/// decided by the TSC composition; everything else is not virtualized.
const PROC2_FROM_VMCS12: ProcCtls2 = ProcCtls2::VIRTUALIZE_APIC_ACCESSES
    .union(ProcCtls2::DESCRIPTOR_TABLE_EXITING)
    .union(ProcCtls2::ENABLE_RDTSCP)
    .union(ProcCtls2::VIRTUALIZE_X2APIC_MODE)
    .union(ProcCtls2::WBINVD_EXITING)
    .union(ProcCtls2::UNRESTRICTED_GUEST)
    .union(ProcCtls2::APIC_REGISTER_VIRTUALIZATION)
    .union(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY)
    .union(ProcCtls2::PAUSE_LOOP_EXITING)
    .union(ProcCtls2::RDRAND_EXITING)
    .union(ProcCtls2::ENABLE_INVPCID)
    .union(ProcCtls2::ENABLE_VM_FUNCTIONS)
    .union(ProcCtls2::RDSEED_EXITING)
    .union(ProcCtls2::ENABLE_XSAVES)
    .union(ProcCtls2::ENABLE_USER_WAIT_PAUSE);

/// Secondary controls of vmcs01 that are exits L0 wants from any guest;
/// the "enable" controls of vmcs01 (RDTSCP, INVPCID, unrestricted guest)
/// describe L1 and do not carry over: L2 gets #UD unless L1 enabled them.
const PROC2_L0_EXITING: ProcCtls2 = ProcCtls2::DESCRIPTOR_TABLE_EXITING
    .union(ProcCtls2::WBINVD_EXITING)
    .union(ProcCtls2::RDRAND_EXITING)
    .union(ProcCtls2::RDSEED_EXITING);

/// Entry controls vmcs02 always sets: L2 never runs with L0's (or a
/// stale) EFER, PAT, DR7 or IA32_DEBUGCTL.
const ENTRY02_ALWAYS: EntryCtls = EntryCtls::LOAD_EFER.union(EntryCtls::LOAD_PAT).union(EntryCtls::LOAD_DEBUG_CONTROLS);

fn pin(v: &Vmcs) -> PinCtls {
    PinCtls::from_bits_retain(v.get(F::PinBasedControls) as u32)
}

fn proc(v: &Vmcs) -> ProcCtls {
    ProcCtls::from_bits_retain(v.get(F::PrimaryProcControls) as u32)
}

/// The secondary controls in effect: empty unless the primary controls
/// activate them (25.6.2).
pub(crate) fn proc2(v: &Vmcs) -> ProcCtls2 {
    if proc(v).contains(ProcCtls::ACTIVATE_SECONDARY_CONTROLS) {
        ProcCtls2::from_bits_retain(v.get(F::SecondaryProcControls) as u32)
    } else {
        ProcCtls2::empty()
    }
}

fn entry(v: &Vmcs) -> EntryCtls {
    EntryCtls::from_bits_retain(v.get(F::EntryControls) as u32)
}

fn exit(v: &Vmcs) -> ExitCtls {
    ExitCtls::from_bits_retain(v.get(F::ExitControls) as u32)
}

/// Builds vmcs02 for a virtual VM entry into L2: [`merge_controls`] and
/// [`load_guest_state`]. `vmcs02`'s exit-information fields and launch
/// state are left as they are; every other field is written.
pub fn prepare_vmcs02(vmcs02: &mut Vmcs, vmcs01: &Vmcs, vmcs12: &Vmcs, res: &Vmcs02Resources, mem: &mut Memory) {
    merge_controls(vmcs02, vmcs01, vmcs12, res, mem);
    load_guest_state(vmcs02, vmcs01, vmcs12, mem);
}

/// The control and host-state part of vmcs02 (what changes only when L1
/// VMWRITEs vmcs12's controls or L0 changes vmcs01's): host state from
/// vmcs01, controls merged, the merged MSR bitmap written to
/// `res.msr_bitmap`.
pub fn merge_controls(vmcs02: &mut Vmcs, vmcs01: &Vmcs, vmcs12: &Vmcs, res: &Vmcs02Resources, mem: &mut Memory) {
    for &f in F::ALL.iter().filter(|f| !f.is_high()) {
        match f.kind() {
            FieldKind::HostState => vmcs02.set(f, vmcs01.get(f)),
            // Whitelist: only the control fields set below get a value.
            FieldKind::Control => vmcs02.set(f, 0),
            FieldKind::GuestState | FieldKind::ReadOnlyData => {}
        }
    }
    let (pin01, pin12) = (pin(vmcs01), pin(vmcs12));
    let (proc01, proc12) = (proc(vmcs01), proc(vmcs12));
    let (proc2_01, proc2_12) = (proc2(vmcs01), proc2(vmcs12));

    // Pin-based: an exit either level wants. L0 keeps external interrupts
    // and NMIs (they are L1's or the platform's, never L2's to take
    // directly); L1's preemption timer and posted interrupts are L2's.
    let pin02 = pin01 | pin12;
    vmcs02.set(F::PinBasedControls, u64::from(pin02.bits()));
    vmcs02.set(F::PostedInterruptNotificationVector, vmcs12.get(F::PostedInterruptNotificationVector));
    vmcs02.set(F::PostedInterruptDescriptorAddress, vmcs12.get(F::PostedInterruptDescriptorAddress));

    // Primary: vmcs12's, plus L0's exits except the ones about L1 itself.
    // With L1's TPR shadow, L2's CR8 accesses reach vmcs12's virtual-APIC
    // page, never L1's local APIC, so L0's CR8 exiting does not apply.
    let mut from01 = proc01 - PROC01_FOR_L1_ONLY;
    if proc12.contains(ProcCtls::USE_TPR_SHADOW) {
        from01 -= ProcCtls::CR8_LOAD_EXITING | ProcCtls::CR8_STORE_EXITING;
    }
    let mut proc02 = proc12 | from01;
    // I/O: always L0's all-ones bitmaps (L1's are consulted in software).
    proc02 -= ProcCtls::UNCONDITIONAL_IO_EXITING | ProcCtls::ACTIVATE_TERTIARY_CONTROLS;
    proc02 |= ProcCtls::USE_IO_BITMAPS | ProcCtls::USE_MSR_BITMAPS | ProcCtls::ACTIVATE_SECONDARY_CONTROLS;
    vmcs02.set(F::IoBitmapA, res.io_bitmaps[0]);
    vmcs02.set(F::IoBitmapB, res.io_bitmaps[1]);

    // MSRs: an access exits when either bitmap says so; no bitmap means
    // every MSR exits (25.6.9 "MSR-Bitmap Address").
    let bm01 = proc01.contains(ProcCtls::USE_MSR_BITMAPS).then(|| vmcs01.get(F::MsrBitmap));
    let bm12 = proc12.contains(ProcCtls::USE_MSR_BITMAPS).then(|| vmcs12.get(F::MsrBitmap));
    merge_msr_bitmaps(mem, res.msr_bitmap, bm01, bm12);
    vmcs02.set(F::MsrBitmap, res.msr_bitmap);

    // Secondary controls.
    let mut proc2_02 = (proc2_12 & PROC2_FROM_VMCS12) | (proc2_01 & PROC2_L0_EXITING) | ProcCtls2::ENABLE_EPT;
    vmcs02.set(F::EptPointer, res.eptp02.unwrap_or_else(|| vmcs01.get(F::EptPointer)));
    if res.vpid02 != 0 {
        proc2_02 |= ProcCtls2::ENABLE_VPID;
        vmcs02.set(F::VirtualProcessorId, u64::from(res.vpid02));
    }

    // TSC: L2's TSC is L1's TSC seen through vmcs12's offset and
    // multiplier, L1's is the CPU's through vmcs01's (25.6.5).
    let tsc = compose_tsc(vmcs01, vmcs12);
    if tsc.offsetting {
        proc02 |= ProcCtls::USE_TSC_OFFSETTING;
    }
    vmcs02.set(F::TscOffset, tsc.offset);
    if tsc.multiplier != TSC_MULTIPLIER_ONE {
        proc2_02 |= ProcCtls2::USE_TSC_SCALING;
        vmcs02.set(F::TscMultiplier, tsc.multiplier);
    }

    vmcs02.set(F::PrimaryProcControls, u64::from(proc02.bits()));
    vmcs02.set(F::SecondaryProcControls, u64::from(proc2_02.bits()));

    // APIC virtualization of L2 is L1's: its pages are L1 physical
    // addresses, which are physical addresses under EPT01.
    vmcs02.set(F::VirtualApicAddress, vmcs12.get(F::VirtualApicAddress));
    vmcs02.set(F::TprThreshold, vmcs12.get(F::TprThreshold));
    vmcs02.set(F::ApicAccessAddress, vmcs12.get(F::ApicAccessAddress));
    for f in [F::EoiExitBitmap0, F::EoiExitBitmap1, F::EoiExitBitmap2, F::EoiExitBitmap3] {
        vmcs02.set(f, vmcs12.get(f));
    }
    vmcs02.set(F::PleGap, vmcs12.get(F::PleGap));
    vmcs02.set(F::PleWindow, vmcs12.get(F::PleWindow));
    vmcs02.set(F::XssExitingBitmap, vmcs01.get(F::XssExitingBitmap) | vmcs12.get(F::XssExitingBitmap));

    // Exceptions: either level's. With L0 intercepting #PF, every #PF
    // exits (mask = match = 0); otherwise vmcs12's filter applies
    // (26.2 "Other Causes of VM Exits", exceptions).
    let eb01 = vmcs01.get(F::ExceptionBitmap);
    vmcs02.set(F::ExceptionBitmap, eb01 | vmcs12.get(F::ExceptionBitmap));
    if eb01 & (1 << x86::vector::PF) == 0 {
        vmcs02.set(F::PageFaultErrorCodeMask, vmcs12.get(F::PageFaultErrorCodeMask));
        vmcs02.set(F::PageFaultErrorCodeMatch, vmcs12.get(F::PageFaultErrorCodeMatch));
    }

    // CR3 targets: vmcs12's, unless L0 itself exits on CR3 loads (then a
    // target of L1's must not hide the load from L0).
    if !proc01.contains(ProcCtls::CR3_LOAD_EXITING) {
        vmcs02.set(F::Cr3TargetCount, vmcs12.get(F::Cr3TargetCount));
        for f in [F::Cr3TargetValue0, F::Cr3TargetValue1, F::Cr3TargetValue2, F::Cr3TargetValue3] {
            vmcs02.set(f, vmcs12.get(f));
        }
    }

    // Exit controls: L0's, so the CPU saves everything L0 needs and loads
    // L0's host state; plus saving L2's preemption timer, so an exit L0
    // handles itself resumes L2 with the time it had left.
    let mut exit02 = exit(vmcs01);
    if pin12.contains(PinCtls::PREEMPTION_TIMER) {
        exit02 |= ExitCtls::SAVE_PREEMPTION_TIMER;
    }
    vmcs02.set(F::ExitControls, u64::from(exit02.bits()));
    // Exit MSR lists: none; L0 processes vmcs12's when it reflects.

    // Entry: vmcs12's, always loading EFER, PAT and the debug controls.
    vmcs02.set(F::EntryControls, u64::from((entry(vmcs12) | ENTRY02_ALWAYS).bits()));
    // The entry MSR-load list is L1's (L1 physical = physical), loaded by
    // the CPU. The 26.4 checks on vmcs12 read it as L1 sees it (all ones
    // outside RAM, which fails); this guard keeps the CPU from ever
    // loading L0's private memory into L2's MSRs should they not have.
    let count = vmcs12.get(F::EntryMsrLoadCount);
    let addr = vmcs12.get(F::EntryMsrLoadAddress);
    if count == 0 || in_l1_ram(mem, addr, count.saturating_mul(16)) {
        vmcs02.set(F::EntryMsrLoadAddress, addr);
        vmcs02.set(F::EntryMsrLoadCount, count);
    }

    // CR0 and CR4: a bit is host-owned in vmcs02 when either level owns
    // it. L2 reads vmcs12's shadow for L1's bits and, for bits only L0
    // owns, the value L1 gave L2 (vmcs12's guest CR0/CR4): L0's ownership
    // is invisible to L2.
    for (mask, shadow, guest) in
        [(F::Cr0GuestHostMask, F::Cr0ReadShadow, F::GuestCr0), (F::Cr4GuestHostMask, F::Cr4ReadShadow, F::GuestCr4)]
    {
        let (m01, m12) = (vmcs01.get(mask), vmcs12.get(mask));
        vmcs02.set(mask, m01 | m12);
        vmcs02.set(shadow, (vmcs12.get(shadow) & m12) | (vmcs12.get(guest) & m01 & !m12));
    }
}

/// The per-entry part of vmcs02: L2's guest state from vmcs12 (with L1's
/// current EFER, PAT, DR7 and IA32_DEBUGCTL where vmcs12 does not load
/// them), the event to inject, and the PAE PDPTEs when L2's paging is
/// L1's.
pub fn load_guest_state(vmcs02: &mut Vmcs, vmcs01: &Vmcs, vmcs12: &Vmcs, mem: &Memory) {
    // Copied as they are; the fields below are decided one by one, so
    // each is written once and only a real change counts for vmcs02's
    // entry checks.
    const LOADED: GuestSlots = GuestSlots::except(&[
        F::VmcsLinkPointer,
        F::GuestIa32Efer,
        F::GuestIa32Pat,
        F::GuestDr7,
        F::GuestIa32Debugctl,
        F::GuestCr0,
        F::GuestCr4,
    ]);
    vmcs02.copy_slots(vmcs12, LOADED.slots());
    vmcs02.set(F::VmcsLinkPointer, u64::MAX);
    let entry12 = entry(vmcs12);
    if entry12.contains(EntryCtls::LOAD_EFER) {
        vmcs02.set(F::GuestIa32Efer, vmcs12.get(F::GuestIa32Efer));
    }
    if entry12.contains(EntryCtls::LOAD_PAT) {
        vmcs02.set(F::GuestIa32Pat, vmcs12.get(F::GuestIa32Pat));
    }
    if entry12.contains(EntryCtls::LOAD_DEBUG_CONTROLS) {
        vmcs02.set(F::GuestDr7, vmcs12.get(F::GuestDr7));
        vmcs02.set(F::GuestIa32Debugctl, vmcs12.get(F::GuestIa32Debugctl));
    }
    // 27.3.2.1: without "load IA32_EFER", EFER keeps L1's value except
    // that LMA follows "IA-32e mode guest", and so does LME when the
    // entry turns paging on.
    if !entry12.contains(EntryCtls::LOAD_EFER) {
        let ia32e = entry12.contains(EntryCtls::IA32E_MODE_GUEST);
        let mut efer = vmcs01.get(F::GuestIa32Efer);
        let mut set = |bit: Efer, on: bool| efer = if on { efer | bit.bits() } else { efer & !bit.bits() };
        set(Efer::LMA, ia32e);
        if vmcs12.get(F::GuestCr0) & Cr0::PG.bits() != 0 {
            set(Efer::LME, ia32e);
        }
        vmcs02.set(F::GuestIa32Efer, efer);
    }
    if !entry12.contains(EntryCtls::LOAD_PAT) {
        vmcs02.set(F::GuestIa32Pat, vmcs01.get(F::GuestIa32Pat));
    }
    if !entry12.contains(EntryCtls::LOAD_DEBUG_CONTROLS) {
        vmcs02.set(F::GuestDr7, vmcs01.get(F::GuestDr7));
        vmcs02.set(F::GuestIa32Debugctl, vmcs01.get(F::GuestIa32Debugctl));
    }
    // The bits the processor needs set under any guest (L0 owns them in
    // vmcs01's masks, which may also hold bits L0 watches for L1 only).
    let _ = vmcs01;
    vmcs02.set(F::GuestCr0, vmcs12.get(F::GuestCr0) | Cr0::NE.bits());
    vmcs02.set(F::GuestCr4, vmcs12.get(F::GuestCr4) | Cr4::VMXE.bits());

    // With EPT on, the CPU takes PAE PDPTEs from the VMCS (27.3.2.4
    // "Loading Page-Directory-Pointer-Table Entries"). vmcs12's fields
    // are right when vmcs12 uses EPT; otherwise, as the processor would
    // without EPT, read them from L2's CR3 in L1's memory.
    let cr0 = vmcs02.get(F::GuestCr0);
    let pae = cr0 & Cr0::PG.bits() != 0
        && vmcs02.get(F::GuestCr4) & Cr4::PAE.bits() != 0
        && vmcs02.get(F::GuestIa32Efer) & Efer::LMA.bits() == 0;
    if pae && !proc2(vmcs12).contains(ProcCtls2::ENABLE_EPT) {
        let mut b = [0u8; 32];
        read_phys(mem, vmcs12.get(F::GuestCr3) & 0xffff_ffe0, &mut b);
        for (i, f) in [F::GuestPdpte0, F::GuestPdpte1, F::GuestPdpte2, F::GuestPdpte3].into_iter().enumerate() {
            let mut q = [0u8; 8];
            q.copy_from_slice(&b[8 * i..8 * i + 8]);
            vmcs02.set(f, u64::from_le_bytes(q));
        }
    }

    // Event injection (27.6 "Event Injection"): vmcs12's, as is.
    vmcs02.set(F::EntryInterruptionInfo, vmcs12.get(F::EntryInterruptionInfo));
    vmcs02.set(F::EntryExceptionErrorCode, vmcs12.get(F::EntryExceptionErrorCode));
    vmcs02.set(F::EntryInstructionLength, vmcs12.get(F::EntryInstructionLength));
}

/// Slot numbers ([`F::slot`]) of the guest-state fields (full
/// accesses) but a few, fixed at compile time, for [`Vmcs::copy_slots`].
pub(crate) struct GuestSlots {
    slots: [u16; F::COUNT],
    len: usize,
}

impl GuestSlots {
    /// Every guest-state field except those in `skip`.
    pub(crate) const fn except(skip: &[F]) -> GuestSlots {
        let mut slots = [0u16; F::COUNT];
        let mut len = 0;
        let mut i = 0;
        while i < F::ALL.len() {
            let f = F::ALL[i];
            let mut keep = !f.is_high() && matches!(f.kind(), FieldKind::GuestState);
            let mut j = 0;
            while j < skip.len() {
                keep &= skip[j].encoding() != f.encoding();
                j += 1;
            }
            if keep {
                slots[len] = f.slot_const() as u16;
                len += 1;
            }
            i += 1;
        }
        GuestSlots { slots, len }
    }

    /// The slots.
    pub(crate) fn slots(&self) -> &[u16] {
        &self.slots[..self.len]
    }
}

/// Whether `[addr, addr + len)` is all RAM (L1's memory): its first and
/// last bytes are RAM at RAM offsets `len - 1` apart, so no hole lies
/// between them (RAM is one or two contiguous regions). O(1) whatever
/// length a hostile count gives.
fn in_l1_ram(mem: &Memory, addr: u64, len: u64) -> bool {
    let Some(last) = len.checked_sub(1).and_then(|n| addr.checked_add(n)) else { return false };
    match (mem.ram_offset(addr), mem.ram_offset(last)) {
        (Some(a), Some(b)) => (b as u64).checked_sub(a as u64) == Some(len - 1),
        _ => false,
    }
}

/// Writes `bm01 | bm12` to the page at `dst` (L0's). `None` for a level
/// that does not use MSR bitmaps: all ones. vmcs01's bitmap and `dst` are
/// L0's pages (private memory, [`Memory::read_phys`]; all ones if
/// unreadable); vmcs12's is in L1's memory, read as L1 sees it.
fn merge_msr_bitmaps(mem: &mut Memory, dst: u64, bm01: Option<u64>, bm12: Option<u64>) {
    let mut merged = [0xffu8; PAGE];
    if let Some(a) = bm01 {
        if mem.read_phys(a, &mut merged).is_err() {
            merged = [0xff; PAGE];
        }
    }
    match bm12 {
        Some(a) => {
            let mut b = [0u8; PAGE];
            read_phys(mem, a, &mut b);
            for (m, b) in merged.iter_mut().zip(b) {
                *m |= b;
            }
        }
        None => merged = [0xff; PAGE],
    }
    // L0's own page: cannot fail unless L0 gave a bad address.
    let _ = mem.write_phys(dst, &merged);
}

/// L2's TSC parameters for vmcs02.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TscComposition {
    /// vmcs02's "use TSC offsetting".
    pub offsetting: bool,
    /// vmcs02's TSC offset (two's complement).
    pub offset: u64,
    /// vmcs02's TSC multiplier; [`TSC_MULTIPLIER_ONE`] means no scaling.
    pub multiplier: u64,
}

/// Composes the TSC of L2 (25.6.5, 26.3 "Changes to Instruction Behavior
/// in VMX Non-Root Operation", RDTSC): a level's TSC is
/// `(parent * multiplier >> 48) + offset`, the multiplier counting only
/// when both "use TSC offsetting" and "use TSC scaling" are set. So
/// L2 = ((host * m01 >> 48) + o01) * m12 >> 48 + o12, that is
/// m02 = m01 * m12 >> 48 and o02 = (o01 * m12 >> 48) + o12.
pub fn compose_tsc(vmcs01: &Vmcs, vmcs12: &Vmcs) -> TscComposition {
    let level = |v: &Vmcs| {
        let offsetting = proc(v).contains(ProcCtls::USE_TSC_OFFSETTING);
        let scaling = offsetting && proc2(v).contains(ProcCtls2::USE_TSC_SCALING);
        let offset = if offsetting { v.get(F::TscOffset) as i64 } else { 0 };
        let mult = if scaling { v.get(F::TscMultiplier) } else { TSC_MULTIPLIER_ONE };
        (offsetting, offset, mult)
    };
    let (on01, o01, m01) = level(vmcs01);
    let (on12, o12, m12) = level(vmcs12);
    let multiplier = ((u128::from(m01) * u128::from(m12)) >> 48) as u64;
    let scaled = ((i128::from(o01) * i128::from(m12)) >> 48) as i64;
    TscComposition {
        offsetting: on01 || on12 || multiplier != TSC_MULTIPLIER_ONE,
        offset: scaled.wrapping_add(o12) as u64,
        multiplier,
    }
}

#[cfg(test)]
mod tests;
