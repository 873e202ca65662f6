//! VM-entry checks (Intel SDM vol. 3C, ch. 27 "VM Entries" — ch. 26 in
//! older editions): 27.2 "Checks on VMX Controls and Host-State Area",
//! 27.3 "Checking and Loading Guest State", 27.4 "Loading MSRs".
//!
//! Each check is one line through [`check!`](crate::check!), which records a
//! stable id, the SDM section, the condition's source text and the field
//! and value it is about, so that a failed entry explains itself in traces
//! and in `turtles run --explain`. Checks run one function per SDM
//! subsection, in SDM order, and the first failure wins, as on hardware.
//!
//! The checks read the VMCS through [`VmcsRead`] only: the CPU model runs
//! them on its VMCS, the nested hypervisor on vmcs12, tests on a map.
//!
//! Here: 27.2.1.1 "VM-Execution Control Fields", 27.2.1.2 "VM-Exit Control
//! Fields", 27.2.1.3 "VM-Entry Control Fields" and [`check_vm_entry`],
//! which runs every check in order. The host-state checks (27.2.2-27.2.4)
//! live in `check/host.rs`, the guest-state checks (27.3.1.1-27.3.1.6) in
//! `check/guest.rs`, the MSR-load list rules (27.4) in `check/msr.rs`;
//! each file's tests hold one negative test per check id. What the checks
//! need beyond the VMCS comes in as [`EntryEnv`] (MAXPHYADDR, linear width,
//! the processor's mode) and [`EntryMemory`] (PDPTEs, the link-pointer
//! VMCS header). Not modelled in the control checks: SMM and the dual-monitor treatment (Turtles' CPU is never in
//! SMM, so "entry to SMM" and "deactivate dual-monitor treatment" must be
//! 0), and the TPR-threshold versus VTPR comparison, which reads the
//! virtual-APIC page and belongs to the caller that has memory.

use core::fmt;

use crate::caps::{ControlWord, EptVpidCap, VmxCaps};
use crate::controls::{
    EntryCtls, EptPointer, ExitCtls, InterruptionType, MemoryType, PinCtls, ProcCtls, ProcCtls2, VmFuncCtls,
};
use crate::error::VmInstructionError;
use crate::exit::{ExitReason, ExitReasonField, GuestStateQualification};
use crate::field::VmcsField;

/// Read access to a VMCS, by field. Fields the implementation does not
/// hold read as 0.
pub trait VmcsRead {
    /// The field's current value (zero-extended).
    fn read(&self, field: VmcsField) -> u64;
}

/// A failed VM-entry check: which one, where the SDM states it, and what it
/// saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Check {
    /// Stable identifier, e.g. `ctl.io_bitmap_a`.
    pub id: &'static str,
    /// SDM section, e.g. `27.2.1.1`.
    pub sdm: &'static str,
    /// The condition that did not hold, as written in the source.
    pub condition: &'static str,
    /// The field the check is about, if one.
    pub field: Option<VmcsField>,
    /// That field's value (0 without a field).
    pub value: u64,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SDM {} check {} failed: `{}`", self.sdm, self.id, self.condition)?;
        if let Some(field) = self.field {
            write!(f, " ({} = {:#x})", field.name(), self.value)?;
        }
        Ok(())
    }
}

/// Evaluates a VM-entry check; when the condition is false, returns
/// `Err(Check)` from the enclosing function with the id, SDM section,
/// condition text, and the field and value given.
///
/// `check!(id, sdm, field => value, condition)` names the field the check
/// is about; `check!(id, sdm, condition)` names none.
#[macro_export]
macro_rules! check {
    ($id:expr, $sdm:expr, $field:expr => $value:expr, $cond:expr $(,)?) => {
        if !$cond {
            return Err($crate::check::Check {
                id: $id,
                sdm: $sdm,
                condition: stringify!($cond),
                field: Some($field),
                value: u64::from($value),
            });
        }
    };
    ($id:expr, $sdm:expr, $cond:expr $(,)?) => {
        if !$cond {
            return Err($crate::check::Check {
                id: $id,
                sdm: $sdm,
                condition: stringify!($cond),
                field: None,
                value: 0,
            });
        }
    };
}

/// How a VM entry fails. Failures of the control and host-state checks are
/// VMfailValid with an error number and never carry an exit reason;
/// failures of the guest-state checks and of MSR loading are VM exits with
/// bit 31 of the exit reason set (SDM 27.8 "VM-Entry Failures During or
/// After Loading Guest State").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryFailure {
    /// VMLAUNCH/VMRESUME fail with VMfailValid: error 7 for the controls
    /// (27.2.1), 8 for the host state (27.2.2-27.2.4), 26 for events
    /// blocked by MOV SS (27.1).
    VmFailValid(VmInstructionError),
    /// Exit reason 33 with bit 31: invalid guest state (27.3).
    GuestState {
        /// The exit qualification.
        qualification: GuestStateQualification,
    },
    /// Exit reason 34 with bit 31: loading MSR entry `index` (1-based, as
    /// the exit qualification reports it) failed (27.4).
    MsrLoad {
        /// Index of the failing entry, counting from 1.
        index: u32,
    },
}

impl EntryFailure {
    /// The failure for a control-field check (27.2.1).
    pub const CONTROLS: EntryFailure = EntryFailure::VmFailValid(VmInstructionError::EntryInvalidControls);
    /// The failure for a host-state check (27.2.2-27.2.4).
    pub const HOST_STATE: EntryFailure = EntryFailure::VmFailValid(VmInstructionError::EntryInvalidHostState);

    /// The VM-instruction error, for VMfailValid failures.
    pub const fn instruction_error(self) -> Option<VmInstructionError> {
        match self {
            EntryFailure::VmFailValid(e) => Some(e),
            _ => None,
        }
    }

    /// The exit-reason field, for failures reported as VM exits.
    pub const fn exit_reason(self) -> Option<ExitReasonField> {
        match self {
            EntryFailure::VmFailValid(_) => None,
            EntryFailure::GuestState { .. } => Some(ExitReasonField::new(ExitReason::EntryFailureGuestState)),
            EntryFailure::MsrLoad { .. } => Some(ExitReasonField::new(ExitReason::EntryFailureMsrLoading)),
        }
    }

    /// The exit qualification, for failures reported as VM exits.
    pub const fn exit_qualification(self) -> Option<u64> {
        match self {
            EntryFailure::VmFailValid(_) => None,
            EntryFailure::GuestState { qualification } => Some(qualification as u64),
            EntryFailure::MsrLoad { index } => Some(index as u64),
        }
    }
}

/// A failed VM entry: what the processor reports, and the check that
/// decided it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryError {
    /// The architectural outcome.
    pub failure: EntryFailure,
    /// The check that failed.
    pub check: Check,
}

impl fmt::Display for EntryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failure {
            EntryFailure::VmFailValid(e) => write!(f, "{e}: {}", self.check),
            _ => write!(f, "VM-entry failure exit: {}", self.check),
        }
    }
}

/// One allowed-0/allowed-1 row: a control word, its capability MSR (via
/// [`ControlWord`]) and the check id. Every reserved-bit check of 27.2.1
/// goes through this table, indexed by the word.
struct ControlRow {
    word: ControlWord,
    id: &'static str,
    sdm: &'static str,
}

const CONTROL_ROWS: [ControlRow; 6] = [
    ControlRow { word: ControlWord::Pin, id: "ctl.pin.allowed", sdm: "27.2.1.1" },
    ControlRow { word: ControlWord::Proc, id: "ctl.proc.allowed", sdm: "27.2.1.1" },
    ControlRow { word: ControlWord::Proc2, id: "ctl.proc2.allowed", sdm: "27.2.1.1" },
    ControlRow { word: ControlWord::Proc3, id: "ctl.proc3.allowed", sdm: "27.2.1.1" },
    ControlRow { word: ControlWord::Exit, id: "ctl.exit.allowed", sdm: "27.2.1.2" },
    ControlRow { word: ControlWord::Entry, id: "ctl.entry.allowed", sdm: "27.2.1.3" },
];

/// The allowed-0/allowed-1 check of one control word, from its row.
fn check_allowed(caps: &VmxCaps, word: ControlWord, value: u64) -> Result<(), Check> {
    let row = &CONTROL_ROWS[word as usize];
    check!(row.id, row.sdm, row.word.field() => value, caps.allowed(row.word).check(value).is_ok());
    Ok(())
}

/// A 4 KiB-aligned physical address within the physical-address width.
const fn page_address_valid(addr: u64, width: u8) -> bool {
    addr & 0xfff == 0 && addr >> width == 0
}

/// An MSR-load/store area: 16-byte aligned, and its last byte within the
/// physical-address width.
const fn msr_area_valid(addr: u64, count: u64, width: u8) -> bool {
    if count == 0 {
        return true;
    }
    let last = addr as u128 + count as u128 * 16 - 1;
    addr & 0xf == 0 && last >> width == 0
}

/// The EPTP's memory type is one IA32_VMX_EPT_VPID_CAP allows.
fn eptp_memory_type_valid(eptp: EptPointer, caps: EptVpidCap) -> bool {
    match eptp.memory_type() {
        Some(MemoryType::Uncacheable) => caps.contains(EptVpidCap::MEMORY_TYPE_UC),
        Some(MemoryType::WriteBack) => caps.contains(EptVpidCap::MEMORY_TYPE_WB),
        _ => false,
    }
}

/// The EPTP's page-walk length is one IA32_VMX_EPT_VPID_CAP allows.
fn eptp_walk_length_valid(eptp: EptPointer, caps: EptVpidCap) -> bool {
    match eptp.walk_length() {
        4 => caps.contains(EptVpidCap::WALK_LENGTH_4),
        5 => caps.contains(EptVpidCap::WALK_LENGTH_5),
        _ => false,
    }
}

/// SDM 27.2.1.1 "VM-Execution Control Fields".
pub fn check_execution_controls<V: VmcsRead + ?Sized>(v: &V, caps: &VmxCaps) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.2.1.1";
    let width = caps.phys_addr_width();

    let pin_raw = v.read(F::PinBasedControls);
    let proc_raw = v.read(F::PrimaryProcControls);
    check_allowed(caps, ControlWord::Pin, pin_raw)?;
    check_allowed(caps, ControlWord::Proc, proc_raw)?;
    let pin = PinCtls::from_bits_retain(pin_raw as u32);
    let proc = ProcCtls::from_bits_retain(proc_raw as u32);
    // Without "activate secondary controls" the secondary controls are
    // neither checked nor used: they act as 0. Likewise the tertiary ones.
    let proc2_raw = if proc.contains(ProcCtls::ACTIVATE_SECONDARY_CONTROLS) {
        let raw = v.read(F::SecondaryProcControls);
        check_allowed(caps, ControlWord::Proc2, raw)?;
        raw
    } else {
        0
    };
    if proc.contains(ProcCtls::ACTIVATE_TERTIARY_CONTROLS) {
        check_allowed(caps, ControlWord::Proc3, v.read(F::TertiaryProcControls))?;
    }
    let proc2 = ProcCtls2::from_bits_retain(proc2_raw as u32);
    let exit = ExitCtls::from_bits_retain(v.read(F::ExitControls) as u32);
    let entry = EntryCtls::from_bits_retain(v.read(F::EntryControls) as u32);

    let cr3_target_count = v.read(F::Cr3TargetCount);
    check!("ctl.cr3_target_count", SDM, F::Cr3TargetCount => cr3_target_count,
        cr3_target_count <= u64::from(caps.misc().cr3_targets));

    if proc.contains(ProcCtls::USE_IO_BITMAPS) {
        let io_bitmap_a = v.read(F::IoBitmapA);
        check!("ctl.io_bitmap_a", SDM, F::IoBitmapA => io_bitmap_a, page_address_valid(io_bitmap_a, width));
        let io_bitmap_b = v.read(F::IoBitmapB);
        check!("ctl.io_bitmap_b", SDM, F::IoBitmapB => io_bitmap_b, page_address_valid(io_bitmap_b, width));
    }
    if proc.contains(ProcCtls::USE_MSR_BITMAPS) {
        let msr_bitmap = v.read(F::MsrBitmap);
        check!("ctl.msr_bitmap", SDM, F::MsrBitmap => msr_bitmap, page_address_valid(msr_bitmap, width));
    }

    let tpr_shadow = proc.contains(ProcCtls::USE_TPR_SHADOW);
    if tpr_shadow {
        let virtual_apic = v.read(F::VirtualApicAddress);
        check!("ctl.virtual_apic_address", SDM, F::VirtualApicAddress => virtual_apic,
            page_address_valid(virtual_apic, width));
        if !proc2.contains(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY) {
            let tpr_threshold = v.read(F::TprThreshold);
            check!("ctl.tpr_threshold", SDM, F::TprThreshold => tpr_threshold, tpr_threshold & 0xffff_fff0 == 0);
        }
    }

    check!("ctl.virtual_nmis_need_nmi_exiting", SDM, F::PinBasedControls => pin_raw,
        pin.contains(PinCtls::NMI_EXITING) || !pin.contains(PinCtls::VIRTUAL_NMIS));
    check!("ctl.nmi_window_needs_virtual_nmis", SDM, F::PrimaryProcControls => proc_raw,
        pin.contains(PinCtls::VIRTUAL_NMIS) || !proc.contains(ProcCtls::NMI_WINDOW_EXITING));

    if proc2.contains(ProcCtls2::VIRTUALIZE_APIC_ACCESSES) {
        let apic_access = v.read(F::ApicAccessAddress);
        check!("ctl.apic_access_address", SDM, F::ApicAccessAddress => apic_access,
            page_address_valid(apic_access, width));
    }

    if !tpr_shadow {
        check!("ctl.x2apic_mode_needs_tpr_shadow", SDM, F::SecondaryProcControls => proc2_raw,
            !proc2.contains(ProcCtls2::VIRTUALIZE_X2APIC_MODE));
        check!("ctl.apic_register_virtualization_needs_tpr_shadow", SDM, F::SecondaryProcControls => proc2_raw,
            !proc2.contains(ProcCtls2::APIC_REGISTER_VIRTUALIZATION));
        check!("ctl.virtual_interrupt_delivery_needs_tpr_shadow", SDM, F::SecondaryProcControls => proc2_raw,
            !proc2.contains(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY));
    }
    check!("ctl.x2apic_mode_excludes_apic_accesses", SDM, F::SecondaryProcControls => proc2_raw,
        !proc2.contains(ProcCtls2::VIRTUALIZE_X2APIC_MODE | ProcCtls2::VIRTUALIZE_APIC_ACCESSES));
    check!("ctl.virtual_interrupt_delivery_needs_external_interrupt_exiting", SDM, F::PinBasedControls => pin_raw,
        pin.contains(PinCtls::EXTERNAL_INTERRUPT_EXITING) || !proc2.contains(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY));

    if pin.contains(PinCtls::POSTED_INTERRUPTS) {
        check!("ctl.posted_interrupts_need_virtual_interrupt_delivery", SDM, F::SecondaryProcControls => proc2_raw,
            proc2.contains(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY));
        check!("ctl.posted_interrupts_need_ack_interrupt_on_exit", SDM, F::ExitControls => exit.bits(),
            exit.contains(ExitCtls::ACK_INTERRUPT_ON_EXIT));
        let vector = v.read(F::PostedInterruptNotificationVector);
        check!("ctl.posted_interrupt_notification_vector", SDM, F::PostedInterruptNotificationVector => vector,
            vector & 0xff00 == 0);
        let descriptor = v.read(F::PostedInterruptDescriptorAddress);
        check!("ctl.posted_interrupt_descriptor_address", SDM, F::PostedInterruptDescriptorAddress => descriptor,
            descriptor & 0x3f == 0 && descriptor >> width == 0);
    }

    if proc2.contains(ProcCtls2::ENABLE_VPID) {
        let vpid = v.read(F::VirtualProcessorId);
        check!("ctl.vpid_nonzero", SDM, F::VirtualProcessorId => vpid, vpid != 0);
    }

    let ept = proc2.contains(ProcCtls2::ENABLE_EPT);
    if ept {
        let raw = v.read(F::EptPointer);
        let eptp = EptPointer(raw);
        let ept_caps = caps.ept_vpid();
        check!("ctl.eptp.memory_type", SDM, F::EptPointer => raw, eptp_memory_type_valid(eptp, ept_caps));
        check!("ctl.eptp.walk_length", SDM, F::EptPointer => raw, eptp_walk_length_valid(eptp, ept_caps));
        check!("ctl.eptp.accessed_dirty", SDM, F::EptPointer => raw,
            !eptp.ad_enabled() || ept_caps.contains(EptVpidCap::ACCESSED_DIRTY));
        check!("ctl.eptp.supervisor_shadow_stack", SDM, F::EptPointer => raw,
            !eptp.supervisor_shadow_stack() || ept_caps.contains(EptVpidCap::SUPERVISOR_SHADOW_STACK));
        check!("ctl.eptp.reserved", SDM, F::EptPointer => raw,
            raw & EptPointer::RESERVED_LOW == 0 && raw >> width == 0);
    }

    if proc2.contains(ProcCtls2::ENABLE_PML) {
        check!("ctl.pml_needs_ept", SDM, F::SecondaryProcControls => proc2_raw, ept);
        let pml = v.read(F::PmlAddress);
        check!("ctl.pml_address", SDM, F::PmlAddress => pml, page_address_valid(pml, width));
    }
    check!("ctl.unrestricted_guest_needs_ept", SDM, F::SecondaryProcControls => proc2_raw,
        ept || !proc2.contains(ProcCtls2::UNRESTRICTED_GUEST));
    check!("ctl.mode_based_ept_exec_needs_ept", SDM, F::SecondaryProcControls => proc2_raw,
        ept || !proc2.contains(ProcCtls2::MODE_BASED_EPT_EXEC));
    if proc2.contains(ProcCtls2::SUBPAGE_WRITE_PERMISSIONS) {
        check!("ctl.sub_page_write_needs_ept", SDM, F::SecondaryProcControls => proc2_raw, ept);
        let spptp = v.read(F::SppTablePointer);
        check!("ctl.sub_page_permission_table_pointer", SDM, F::SppTablePointer => spptp,
            page_address_valid(spptp, width));
    }

    if proc2.contains(ProcCtls2::ENABLE_VM_FUNCTIONS) {
        let functions_raw = v.read(F::VmFunctionControls);
        check!("ctl.vm_function_controls.allowed", SDM, F::VmFunctionControls => functions_raw,
            functions_raw & !caps.vmfunc().bits() == 0);
        if VmFuncCtls::from_bits_retain(functions_raw).contains(VmFuncCtls::EPTP_SWITCHING) {
            check!("ctl.eptp_switching_needs_ept", SDM, F::SecondaryProcControls => proc2_raw, ept);
            let list = v.read(F::EptpListAddress);
            check!("ctl.eptp_list_address", SDM, F::EptpListAddress => list, page_address_valid(list, width));
        }
    }

    if proc2.contains(ProcCtls2::VMCS_SHADOWING) {
        let vmread_bitmap = v.read(F::VmreadBitmapAddress);
        check!("ctl.vmread_bitmap_address", SDM, F::VmreadBitmapAddress => vmread_bitmap,
            page_address_valid(vmread_bitmap, width));
        let vmwrite_bitmap = v.read(F::VmwriteBitmapAddress);
        check!("ctl.vmwrite_bitmap_address", SDM, F::VmwriteBitmapAddress => vmwrite_bitmap,
            page_address_valid(vmwrite_bitmap, width));
    }

    if proc2.contains(ProcCtls2::EPT_VIOLATION_VE) {
        let ve_info = v.read(F::VeInformationAddress);
        check!("ctl.ve_information_address", SDM, F::VeInformationAddress => ve_info,
            page_address_valid(ve_info, width));
    }

    if proc2.contains(ProcCtls2::PT_USES_GUEST_PHYSICAL) {
        check!("ctl.pt_guest_physical_needs_ept", SDM, F::SecondaryProcControls => proc2_raw, ept);
        check!("ctl.pt_guest_physical_needs_load_rtit_ctl", SDM, F::EntryControls => entry.bits(),
            entry.contains(EntryCtls::LOAD_RTIT_CTL));
        check!("ctl.pt_guest_physical_needs_clear_rtit_ctl", SDM, F::ExitControls => exit.bits(),
            exit.contains(ExitCtls::CLEAR_RTIT_CTL));
    }
    Ok(())
}

/// SDM 27.2.1.2 "VM-Exit Control Fields".
pub fn check_exit_controls<V: VmcsRead + ?Sized>(v: &V, caps: &VmxCaps) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.2.1.2";
    let width = caps.phys_addr_width();

    let exit_raw = v.read(F::ExitControls);
    check_allowed(caps, ControlWord::Exit, exit_raw)?;
    let exit = ExitCtls::from_bits_retain(exit_raw as u32);
    let pin = PinCtls::from_bits_retain(v.read(F::PinBasedControls) as u32);
    check!("ctl.save_preemption_timer_needs_timer", SDM, F::ExitControls => exit_raw,
        pin.contains(PinCtls::PREEMPTION_TIMER) || !exit.contains(ExitCtls::SAVE_PREEMPTION_TIMER));

    let store_count = v.read(F::ExitMsrStoreCount);
    let store = v.read(F::ExitMsrStoreAddress);
    check!("ctl.exit_msr_store_address", SDM, F::ExitMsrStoreAddress => store,
        msr_area_valid(store, store_count, width));
    let load_count = v.read(F::ExitMsrLoadCount);
    let load = v.read(F::ExitMsrLoadAddress);
    check!("ctl.exit_msr_load_address", SDM, F::ExitMsrLoadAddress => load, msr_area_valid(load, load_count, width));
    Ok(())
}

/// SDM 27.2.1.3 "VM-Entry Control Fields".
pub fn check_entry_controls<V: VmcsRead + ?Sized>(v: &V, caps: &VmxCaps) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.2.1.3";
    let width = caps.phys_addr_width();

    let entry_raw = v.read(F::EntryControls);
    check_allowed(caps, ControlWord::Entry, entry_raw)?;
    let entry = EntryCtls::from_bits_retain(entry_raw as u32);

    let info = v.read(F::EntryInterruptionInfo) as u32;
    if info & (1 << 31) != 0 {
        let info64 = u64::from(info);
        let vector = info as u8;
        let kind = InterruptionType::from_bits(((info >> 8) & 7) as u8);
        check!("ctl.event.type", SDM, F::EntryInterruptionInfo => info64, kind.is_some());
        let mtf = caps.supports(ControlWord::Proc, u64::from(ProcCtls::MONITOR_TRAP_FLAG.bits()));
        check!("ctl.event.other_event_needs_mtf", SDM, F::EntryInterruptionInfo => info64,
            kind != Some(InterruptionType::OtherEvent) || mtf);
        check!("ctl.event.nmi_vector", SDM, F::EntryInterruptionInfo => info64,
            kind != Some(InterruptionType::Nmi) || vector == x86::vector::NMI);
        check!("ctl.event.exception_vector", SDM, F::EntryInterruptionInfo => info64,
            kind != Some(InterruptionType::HardwareException) || vector <= 31);
        check!("ctl.event.other_event_vector", SDM, F::EntryInterruptionInfo => info64,
            kind != Some(InterruptionType::OtherEvent) || vector == 0);

        // The error code is delivered exactly when the guest will be in
        // protected mode and the exception pushes one; IA32_VMX_BASIC bit
        // 56 drops the vector half of that rule for hardware exceptions.
        let proc = ProcCtls::from_bits_retain(v.read(F::PrimaryProcControls) as u32);
        let unrestricted = proc.contains(ProcCtls::ACTIVATE_SECONDARY_CONTROLS)
            && ProcCtls2::from_bits_retain(v.read(F::SecondaryProcControls) as u32)
                .contains(ProcCtls2::UNRESTRICTED_GUEST);
        let protected_mode = !unrestricted || v.read(F::GuestCr0) & x86::Cr0::PE.bits() != 0;
        let hardware_exception = kind == Some(InterruptionType::HardwareException);
        let deliver_error_code = info & (1 << 11) != 0;
        let error_code_expected = protected_mode && hardware_exception && x86::vector::has_error_code(vector);
        let relaxed = caps.basic().no_error_code_consistency && protected_mode && hardware_exception;
        check!("ctl.event.deliver_error_code", SDM, F::EntryInterruptionInfo => info64,
            relaxed || deliver_error_code == error_code_expected);
        check!("ctl.event.reserved", SDM, F::EntryInterruptionInfo => info64, info & 0x7fff_f000 == 0);
        if deliver_error_code {
            let error_code = v.read(F::EntryExceptionErrorCode);
            check!("ctl.event.error_code", SDM, F::EntryExceptionErrorCode => error_code,
                error_code & 0xffff_0000 == 0);
        }
        if kind.is_some_and(InterruptionType::uses_instruction_length) {
            let length = v.read(F::EntryInstructionLength);
            let min = if caps.misc().zero_length_injection { 0 } else { 1 };
            check!("ctl.event.instruction_length", SDM, F::EntryInstructionLength => length,
                (min..=15).contains(&length));
        }
    }

    let load_count = v.read(F::EntryMsrLoadCount);
    let load = v.read(F::EntryMsrLoadAddress);
    check!("ctl.entry_msr_load_address", SDM, F::EntryMsrLoadAddress => load, msr_area_valid(load, load_count, width));

    // Outside SMM (always, on Turtles' CPU) neither SMM control may be set.
    check!("ctl.entry_to_smm_outside_smm", SDM, F::EntryControls => entry_raw,
        !entry.contains(EntryCtls::ENTRY_TO_SMM));
    check!("ctl.deactivate_dual_monitor_outside_smm", SDM, F::EntryControls => entry_raw,
        !entry.contains(EntryCtls::DEACTIVATE_DUAL_MONITOR));
    Ok(())
}

/// SDM 27.2.1 "Checks on VMX Controls": execution, exit and entry control
/// fields in that order. A failure is VMfailValid with error 7.
pub fn check_controls<V: VmcsRead + ?Sized>(v: &V, caps: &VmxCaps) -> Result<(), EntryError> {
    let as_entry_error = |check| EntryError { failure: EntryFailure::CONTROLS, check };
    check_execution_controls(v, caps).map_err(as_entry_error)?;
    check_exit_controls(v, caps).map_err(as_entry_error)?;
    check_entry_controls(v, caps).map_err(as_entry_error)?;
    Ok(())
}

/// What VM entry needs to know about the processor beyond the VMCS and the
/// capability MSRs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryEnv {
    /// MAXPHYADDR (CPUID.80000008H:EAX bits 7:0): the width CR3, the PDPTEs
    /// and the VMCS link pointer are checked against.
    pub maxphyaddr: u8,
    /// Linear-address width (48, or 57 with 5-level paging support):
    /// "canonical" in the checks means canonical for this width.
    pub linear_width: u8,
    /// Whether the processor is in IA-32e mode at VMLAUNCH/VMRESUME
    /// (27.2.4 compares it with the address-space-size controls).
    pub ia32e_mode: bool,
}

impl EntryEnv {
    /// Turtles' CPU: 40-bit physical and 48-bit linear addresses, entered
    /// from 64-bit mode.
    pub const TURTLES: EntryEnv = EntryEnv { maxphyaddr: 40, linear_width: 48, ia32e_mode: true };

    /// Whether `addr` is canonical for the linear-address width.
    pub const fn canonical(&self, addr: u64) -> bool {
        // Widths outside 1..=64 would make the shifts overflow; a width of
        // 64 (or more) makes every address canonical.
        let width = if self.linear_width == 0 { 1 } else { self.linear_width as u32 };
        let shift = 64u32.saturating_sub(width);
        ((addr << shift) as i64 >> shift) as u64 == addr
    }

    /// Whether `addr` fits in the physical-address width.
    pub const fn physical(&self, addr: u64) -> bool {
        match addr.checked_shr(self.maxphyaddr as u32) {
            Some(high) => high == 0,
            None => true,
        }
    }
}

/// The memory reads the guest-state checks need (27.3.1.5, 27.3.1.6):
/// the CPU model reads its guest-physical memory, the nested hypervisor
/// L1's memory.
pub trait EntryMemory {
    /// The four PAE page-directory-pointer-table entries at `cr3` (bits
    /// 31:5 of guest CR3), read when PAE paging is on without EPT.
    fn pdptes(&self, cr3: x86::Gpa) -> [u64; 4];
    /// The first 4 bytes (revision identifier and shadow-VMCS indicator)
    /// of the VMCS the VMCS link pointer names.
    fn vmcs_header(&self, addr: x86::Gpa) -> u32;
}

mod guest;
mod host;
mod msr;

pub use guest::{
    check_guest_control_registers, check_guest_descriptor_tables, check_guest_non_register_state, check_guest_pdptes,
    check_guest_rflags, check_guest_rip, check_guest_rip_rflags, check_guest_segment_registers, check_guest_state,
};
pub use host::{check_host_address_space_size, check_host_control_registers, check_host_segments, check_host_state};
pub use msr::{check_msr_load_count, check_msr_load_entry, check_msr_load_list, MsrEntry};

/// Every VM-entry check that needs no MSR-list memory, in SDM order:
/// controls (27.2.1), host state (27.2.2-27.2.4), guest state (27.3.1),
/// and the MSR-load count (27.4). The first failure wins. The entries of
/// the MSR-load list are checked by the caller, which reads them, with
/// [`check_msr_load_list`] after loading guest state.
pub fn check_vm_entry<V: VmcsRead + ?Sized, M: EntryMemory + ?Sized>(
    v: &V,
    caps: &VmxCaps,
    env: &EntryEnv,
    memory: &M,
) -> Result<(), EntryError> {
    check_controls(v, caps)?;
    check_host_state(v, caps, env)?;
    check_guest_state(v, caps, env, memory)?;
    check_msr_load_count(v, caps)
}

/// [`check_vm_entry`] limited to the check groups
/// ([`crate::vmcs::check_group`]) whose fields were written since every
/// check last passed: a control re-runs everything; otherwise the
/// host-state checks for host fields, the guest-state checks for guest
/// fields, and only the RIP checks when guest RIP alone changed. Gives the
/// same answer as [`check_vm_entry`] whenever the fields outside `groups`
/// still hold what passed.
pub fn check_vm_entry_groups<V: VmcsRead + ?Sized, M: EntryMemory + ?Sized>(
    v: &V,
    caps: &VmxCaps,
    env: &EntryEnv,
    memory: &M,
    groups: u8,
) -> Result<(), EntryError> {
    use crate::vmcs::check_group as g;
    if groups & g::CONTROLS != 0 {
        return check_vm_entry(v, caps, env, memory);
    }
    if groups & g::HOST != 0 {
        check_host_state(v, caps, env)?;
    }
    if groups & g::GUEST != 0 {
        check_guest_state(v, caps, env, memory)?;
    } else if groups & (g::RIP | g::RFLAGS) != 0 {
        // RIP moved, or only arithmetic flags changed: the 27.3.1.4
        // checks of what was written (all of them, in order, for both).
        let r = match groups & (g::RIP | g::RFLAGS) {
            g::RIP => check_guest_rip(v, env),
            g::RFLAGS => check_guest_rflags(v),
            _ => check_guest_rip_rflags(v, env),
        };
        r.map_err(|check| EntryError {
            failure: EntryFailure::GuestState { qualification: GuestStateQualification::Default },
            check,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::string::String;
    use std::vec::Vec;

    use super::*;
    use crate::caps::{VmxMisc, ENTRY_DEFAULT1, EXIT_DEFAULT1, PIN_DEFAULT1, PROC_DEFAULT1};
    use crate::controls::ProcCtls3;
    use VmcsField as F;

    /// A VMCS as a map; absent fields read as 0.
    #[derive(Clone, Default)]
    pub(super) struct TestVmcs(BTreeMap<VmcsField, u64>);

    impl VmcsRead for TestVmcs {
        fn read(&self, field: VmcsField) -> u64 {
            self.0.get(&field).copied().unwrap_or(0)
        }
    }

    impl TestVmcs {
        pub(super) fn set(&mut self, field: VmcsField, value: u64) {
            self.0.insert(field, value);
        }
        pub(super) fn update(&mut self, field: VmcsField, f: impl FnOnce(u64) -> u64) {
            let v = f(self.read(field));
            self.set(field, v);
        }
        pub(super) fn clear_bits(&mut self, field: VmcsField, bits: u64) {
            self.update(field, |v| v & !bits);
        }
        pub(super) fn set_bits(&mut self, field: VmcsField, bits: u64) {
            self.update(field, |v| v | bits);
        }
    }

    /// Capabilities offering every control the checks look at, so that a
    /// single baseline VMCS can arm (almost) every check.
    pub(super) fn everything() -> VmxCaps {
        let t = VmxCaps::turtles();
        t.to_builder()
            .pin(PinCtls::all(), PinCtls::empty())
            .proc(ProcCtls::all(), ProcCtls::empty())
            .proc2(ProcCtls2::all())
            .proc3(ProcCtls3::IPI_VIRTUALIZATION)
            .exit(ExitCtls::all() - ExitCtls::LOAD_PKRS, ExitCtls::empty())
            .entry(EntryCtls::all(), EntryCtls::empty())
            .build()
    }

    fn without_ept_caps(caps: VmxCaps, remove: EptVpidCap) -> VmxCaps {
        caps.to_builder().ept_vpid(caps.ept_vpid() - remove).build()
    }

    pub(super) fn bits32(b: u32) -> u64 {
        u64::from(b)
    }

    /// A VMCS that passes every control check under [`everything`], with
    /// as many checks armed as can be at once.
    pub(super) fn baseline() -> TestVmcs {
        let mut v = TestVmcs::default();
        let pin = PinCtls::EXTERNAL_INTERRUPT_EXITING
            | PinCtls::NMI_EXITING
            | PinCtls::VIRTUAL_NMIS
            | PinCtls::PREEMPTION_TIMER
            | PinCtls::POSTED_INTERRUPTS;
        v.set(F::PinBasedControls, bits32(PIN_DEFAULT1 | pin.bits()));
        let proc = ProcCtls::HLT_EXITING
            | ProcCtls::USE_TPR_SHADOW
            | ProcCtls::NMI_WINDOW_EXITING
            | ProcCtls::USE_IO_BITMAPS
            | ProcCtls::USE_MSR_BITMAPS
            | ProcCtls::ACTIVATE_SECONDARY_CONTROLS;
        v.set(F::PrimaryProcControls, bits32(PROC_DEFAULT1 | proc.bits()));
        let proc2 = ProcCtls2::VIRTUALIZE_APIC_ACCESSES
            | ProcCtls2::ENABLE_EPT
            | ProcCtls2::ENABLE_VPID
            | ProcCtls2::UNRESTRICTED_GUEST
            | ProcCtls2::APIC_REGISTER_VIRTUALIZATION
            | ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY
            | ProcCtls2::ENABLE_VM_FUNCTIONS
            | ProcCtls2::VMCS_SHADOWING
            | ProcCtls2::ENABLE_PML
            | ProcCtls2::EPT_VIOLATION_VE
            | ProcCtls2::MODE_BASED_EPT_EXEC
            | ProcCtls2::SUBPAGE_WRITE_PERMISSIONS
            | ProcCtls2::PT_USES_GUEST_PHYSICAL;
        v.set(F::SecondaryProcControls, bits32(proc2.bits()));
        let exit = ExitCtls::HOST_ADDRESS_SPACE_SIZE
            | ExitCtls::LOAD_PAT
            | ExitCtls::LOAD_EFER
            | ExitCtls::ACK_INTERRUPT_ON_EXIT
            | ExitCtls::SAVE_PREEMPTION_TIMER
            | ExitCtls::CLEAR_RTIT_CTL;
        v.set(F::ExitControls, bits32(EXIT_DEFAULT1 | exit.bits()));
        let entry = EntryCtls::IA32E_MODE_GUEST
            | EntryCtls::LOAD_RTIT_CTL
            | EntryCtls::LOAD_DEBUG_CONTROLS
            | EntryCtls::LOAD_PAT
            | EntryCtls::LOAD_EFER;
        v.set(F::EntryControls, bits32(ENTRY_DEFAULT1 | entry.bits()));
        v.set(F::Cr3TargetCount, 4);
        v.set(F::IoBitmapA, 0x1000);
        v.set(F::IoBitmapB, 0x2000);
        v.set(F::MsrBitmap, 0x3000);
        v.set(F::VirtualApicAddress, 0x4000);
        v.set(F::ApicAccessAddress, 0x5000);
        v.set(F::PostedInterruptNotificationVector, 0xf2);
        v.set(F::PostedInterruptDescriptorAddress, 0x6040);
        v.set(F::VirtualProcessorId, 1);
        v.set(F::EptPointer, 0x8000 | 6 | 3 << 3 | 1 << 6);
        v.set(F::PmlAddress, 0x7000);
        v.set(F::SppTablePointer, 0xd000);
        v.set(F::VmFunctionControls, 1);
        v.set(F::EptpListAddress, 0xc000);
        v.set(F::VmreadBitmapAddress, 0x9000);
        v.set(F::VmwriteBitmapAddress, 0xa000);
        v.set(F::VeInformationAddress, 0xb000);
        v.set(F::ExitMsrStoreCount, 1);
        v.set(F::ExitMsrStoreAddress, 0xe000);
        v.set(F::ExitMsrLoadCount, 1);
        v.set(F::ExitMsrLoadAddress, 0xe010);
        v.set(F::EntryMsrLoadCount, 1);
        v.set(F::EntryMsrLoadAddress, 0xe020);
        set_host_64(&mut v);
        set_guest_64(&mut v);
        v
    }

    const PAT: u64 = 0x0007_0406_0007_0406;

    /// A 64-bit L1-style host.
    fn set_host_64(v: &mut TestVmcs) {
        use x86::{Cr0, Cr4, Efer};
        v.set(F::HostCr0, (Cr0::PE | Cr0::MP | Cr0::ET | Cr0::NE | Cr0::WP | Cr0::PG).bits());
        v.set(F::HostCr3, 0x1_0000);
        v.set(F::HostCr4, (Cr4::PAE | Cr4::PGE | Cr4::VMXE | Cr4::OSFXSR).bits());
        v.set(F::HostCsSelector, 0x08);
        v.set(F::HostSsSelector, 0x10);
        v.set(F::HostTrSelector, 0x40);
        v.set(F::HostGsBase, 0xffff_8880_0000_0000);
        v.set(F::HostTrBase, 0xffff_fe00_0000_3000);
        v.set(F::HostGdtrBase, 0xffff_fe00_0000_1000);
        v.set(F::HostIdtrBase, 0xffff_fe00_0000_0000);
        v.set(F::HostIa32SysenterEip, 0xffff_ffff_8100_1000);
        v.set(F::HostIa32Pat, PAT);
        v.set(F::HostIa32Efer, (Efer::SCE | Efer::LME | Efer::LMA | Efer::NXE).bits());
        v.set(F::HostRsp, 0xffff_c900_0000_8000);
        v.set(F::HostRip, 0xffff_ffff_8100_0000);
    }

    /// A 64-bit guest: flat CS (L=1), flat data segments, no LDT, a busy
    /// 64-bit TSS.
    fn set_guest_64(v: &mut TestVmcs) {
        use x86::{Cr0, Cr4, Efer};
        v.set(F::GuestCr0, (Cr0::PE | Cr0::ET | Cr0::NE | Cr0::PG).bits());
        v.set(F::GuestCr3, 0x20_0000);
        v.set(F::GuestCr4, (Cr4::PAE | Cr4::VMXE).bits());
        v.set(F::GuestDr7, 0x400);
        for (selector, limit, ar) in [
            (F::GuestEsSelector, F::GuestEsLimit, F::GuestEsAccessRights),
            (F::GuestSsSelector, F::GuestSsLimit, F::GuestSsAccessRights),
            (F::GuestDsSelector, F::GuestDsLimit, F::GuestDsAccessRights),
            (F::GuestFsSelector, F::GuestFsLimit, F::GuestFsAccessRights),
            (F::GuestGsSelector, F::GuestGsLimit, F::GuestGsAccessRights),
        ] {
            v.set(selector, 0x10);
            v.set(limit, 0xffff_ffff);
            v.set(ar, 0xc093);
        }
        v.set(F::GuestCsSelector, 0x08);
        v.set(F::GuestCsLimit, 0xffff_ffff);
        v.set(F::GuestCsAccessRights, 0xa09b);
        v.set(F::GuestLdtrAccessRights, 0x1_0000);
        v.set(F::GuestTrSelector, 0x18);
        v.set(F::GuestTrBase, 0xffff_fe00_0000_3000);
        v.set(F::GuestTrLimit, 0x67);
        v.set(F::GuestTrAccessRights, 0x8b);
        v.set(F::GuestGdtrBase, 0xffff_fe00_0000_1000);
        v.set(F::GuestGdtrLimit, 0x7f);
        v.set(F::GuestIdtrBase, 0xffff_fe00_0000_0000);
        v.set(F::GuestIdtrLimit, 0xfff);
        v.set(F::GuestRsp, 0x8000);
        v.set(F::GuestRip, 0xffff_ffff_8000_0000);
        v.set(F::GuestRflags, 0x2);
        v.set(F::GuestIa32Pat, PAT);
        v.set(F::GuestIa32Efer, (Efer::SCE | Efer::LME | Efer::LMA | Efer::NXE).bits());
        v.set(F::VmcsLinkPointer, u64::MAX);
    }

    /// Turns the baseline's guest into a 32-bit protected-mode guest with
    /// 4 KiB/4 MiB (non-PAE) paging.
    pub(super) fn make_guest_protected_32(v: &mut TestVmcs) {
        use x86::{Cr0, Cr4};
        v.clear_bits(F::EntryControls, bits32(EntryCtls::IA32E_MODE_GUEST.bits()));
        v.set(F::GuestCr0, (Cr0::PE | Cr0::ET | Cr0::NE | Cr0::PG).bits());
        v.set(F::GuestCr4, (Cr4::PSE | Cr4::VMXE).bits());
        v.set(F::GuestIa32Efer, 0);
        v.set(F::GuestCsAccessRights, 0xc09b);
        v.set(F::GuestTrBase, 0x3000);
        v.set(F::GuestGdtrBase, 0x1000);
        v.set(F::GuestIdtrBase, 0);
        v.set(F::GuestRip, 0x10_0000);
    }

    /// Guest memory for the checks that read it: fixed PDPTEs and a fixed
    /// VMCS header.
    #[derive(Clone, Copy, Default)]
    pub(super) struct TestMemory {
        pub(super) pdptes: [u64; 4],
        pub(super) vmcs_header: u32,
    }

    impl EntryMemory for TestMemory {
        fn pdptes(&self, _cr3: x86::Gpa) -> [u64; 4] {
            self.pdptes
        }
        fn vmcs_header(&self, _addr: x86::Gpa) -> u32 {
            self.vmcs_header
        }
    }

    /// Checks that `variant` of the baseline passes every entry check,
    /// then that changing exactly one field makes exactly check `id` fail;
    /// returns the failure for the caller to inspect.
    pub(super) fn expect_entry(
        caps: &VmxCaps,
        env: &EntryEnv,
        memory: &TestMemory,
        variant: impl FnOnce(&mut TestVmcs),
        field: VmcsField,
        flip: impl FnOnce(u64) -> u64,
        id: &str,
    ) -> EntryError {
        let mut v = baseline();
        variant(&mut v);
        assert_eq!(check_vm_entry(&v, caps, env, memory), Ok(()), "variant for {id} must be valid");
        let before = v.read(field);
        v.update(field, flip);
        assert_ne!(v.read(field), before, "{id}: the flip must change {field}");
        let err = check_vm_entry(&v, caps, env, memory).expect_err(id);
        assert_eq!(err.check.id, id, "{err}");
        assert!(err.check.condition.len() > 2);
        err
    }

    /// Every id starting with `prefix` in the code part of `src` (before
    /// `#[cfg(test)]`) appears in its tests; at least `min` ids exist.
    pub(super) fn assert_every_id_tested(src: &str, prefix: &str, min: usize) {
        let (code, tests) = src.split_at(src.find("#[cfg(test)]").unwrap());
        let ids = |text: &str| -> BTreeSet<String> {
            text.split('\x22')
                .skip(1)
                .step_by(2)
                .filter(|s| s.starts_with(prefix) && !s.contains(' '))
                .map(String::from)
                .collect()
        };
        let defined = ids(code);
        let tested = ids(tests);
        let untested: Vec<&String> = defined.difference(&tested).collect();
        assert!(untested.is_empty(), "checks without a negative test: {untested:?}");
        assert!(defined.len() >= min, "{}", defined.len());
    }

    fn run(v: &TestVmcs, caps: &VmxCaps) -> Result<(), Check> {
        check_controls(v, caps).map_err(|e| {
            assert_eq!(e.failure, EntryFailure::CONTROLS);
            e.check
        })
    }

    /// Checks that `variant` of the baseline is valid under `caps`, then
    /// that changing exactly one field makes exactly check `id` fail.
    fn expect_with(
        caps: &VmxCaps,
        variant: impl FnOnce(&mut TestVmcs),
        field: VmcsField,
        flip: impl FnOnce(u64) -> u64,
        id: &str,
    ) {
        let mut v = baseline();
        variant(&mut v);
        assert_eq!(run(&v, caps), Ok(()), "variant for {id} must be valid");
        let before = v.read(field);
        v.update(field, flip);
        assert_ne!(v.read(field), before, "{id}: the flip must change {field}");
        let check = run(&v, caps).expect_err(id);
        assert_eq!(check.id, id, "{check}");
        assert!(check.condition.len() > 2);
        assert!(check.sdm.starts_with("27.2.1."));
    }

    fn expect(field: VmcsField, flip: impl FnOnce(u64) -> u64, id: &str) {
        expect_with(&everything(), |_| {}, field, flip, id);
    }

    fn expect_variant(variant: impl FnOnce(&mut TestVmcs), field: VmcsField, flip: impl FnOnce(u64) -> u64, id: &str) {
        expect_with(&everything(), variant, field, flip, id);
    }

    pub(super) const NO_EPT_USERS: fn(&mut TestVmcs) = |v| {
        let users = ProcCtls2::ENABLE_PML
            | ProcCtls2::UNRESTRICTED_GUEST
            | ProcCtls2::MODE_BASED_EPT_EXEC
            | ProcCtls2::SUBPAGE_WRITE_PERMISSIONS
            | ProcCtls2::ENABLE_VM_FUNCTIONS
            | ProcCtls2::PT_USES_GUEST_PHYSICAL;
        v.clear_bits(F::SecondaryProcControls, bits32(users.bits()));
    };

    fn keep_only_ept_user(v: &mut TestVmcs, user: ProcCtls2) {
        NO_EPT_USERS(v);
        v.set_bits(F::SecondaryProcControls, bits32(user.bits()));
    }

    pub(super) fn clear(bits: u32) -> impl FnOnce(u64) -> u64 {
        move |v| v & !u64::from(bits)
    }

    pub(super) fn set(bits: u32) -> impl FnOnce(u64) -> u64 {
        move |v| v | u64::from(bits)
    }

    pub(super) fn to(value: u64) -> impl FnOnce(u64) -> u64 {
        move |_| value
    }

    #[test]
    fn control_rows_are_indexed_by_word() {
        for (i, row) in CONTROL_ROWS.iter().enumerate() {
            assert_eq!(row.word as usize, i);
            assert_eq!(ControlWord::ALL[i], row.word);
        }
    }

    #[test]
    fn baseline_is_valid() {
        assert_eq!(run(&baseline(), &everything()), Ok(()));
    }

    // 27.2.1.1 "VM-Execution Control Fields", in SDM order.

    #[test]
    fn pin_allowed() {
        expect(F::PinBasedControls, |v| v | 1 << 8, "ctl.pin.allowed");
        expect(F::PinBasedControls, clear(PIN_DEFAULT1), "ctl.pin.allowed");
    }

    #[test]
    fn proc_allowed() {
        expect(F::PrimaryProcControls, |v| v | 1 << 18, "ctl.proc.allowed");
    }

    #[test]
    fn proc2_allowed() {
        expect(F::SecondaryProcControls, |v| v | 1 << 29, "ctl.proc2.allowed");
    }

    #[test]
    fn proc3_allowed() {
        expect_variant(
            |v| v.set_bits(F::PrimaryProcControls, bits32(ProcCtls::ACTIVATE_TERTIARY_CONTROLS.bits())),
            F::TertiaryProcControls,
            to(1 << 5),
            "ctl.proc3.allowed",
        );
    }

    #[test]
    fn cr3_target_count() {
        expect(F::Cr3TargetCount, to(5), "ctl.cr3_target_count");
    }

    #[test]
    fn io_bitmaps() {
        expect(F::IoBitmapA, to(0x1001), "ctl.io_bitmap_a");
        expect(F::IoBitmapB, to(1 << 40), "ctl.io_bitmap_b");
    }

    #[test]
    fn msr_bitmap() {
        expect(F::MsrBitmap, to(0x3008), "ctl.msr_bitmap");
    }

    #[test]
    fn virtual_apic_address() {
        expect(F::VirtualApicAddress, to(0x4800), "ctl.virtual_apic_address");
    }

    #[test]
    fn tpr_threshold() {
        expect_variant(
            |v| {
                v.clear_bits(F::PinBasedControls, bits32(PinCtls::POSTED_INTERRUPTS.bits()));
                v.clear_bits(F::SecondaryProcControls, bits32(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY.bits()));
                v.set(F::TprThreshold, 0xf);
            },
            F::TprThreshold,
            to(0x10),
            "ctl.tpr_threshold",
        );
    }

    #[test]
    fn nmi_controls() {
        expect(F::PinBasedControls, clear(PinCtls::NMI_EXITING.bits()), "ctl.virtual_nmis_need_nmi_exiting");
        expect(F::PinBasedControls, clear(PinCtls::VIRTUAL_NMIS.bits()), "ctl.nmi_window_needs_virtual_nmis");
    }

    #[test]
    fn apic_access_address() {
        expect(F::ApicAccessAddress, to(0x5004), "ctl.apic_access_address");
    }

    #[test]
    fn apic_virtualization_needs_tpr_shadow() {
        let no_tpr_shadow = clear(ProcCtls::USE_TPR_SHADOW.bits());
        expect_variant(
            |v| {
                v.clear_bits(F::PinBasedControls, bits32(PinCtls::POSTED_INTERRUPTS.bits()));
                let off = ProcCtls2::APIC_REGISTER_VIRTUALIZATION
                    | ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY
                    | ProcCtls2::VIRTUALIZE_APIC_ACCESSES;
                v.clear_bits(F::SecondaryProcControls, bits32(off.bits()));
                v.set_bits(F::SecondaryProcControls, bits32(ProcCtls2::VIRTUALIZE_X2APIC_MODE.bits()));
            },
            F::PrimaryProcControls,
            no_tpr_shadow,
            "ctl.x2apic_mode_needs_tpr_shadow",
        );
        expect_variant(
            |v| {
                v.clear_bits(F::PinBasedControls, bits32(PinCtls::POSTED_INTERRUPTS.bits()));
                v.clear_bits(F::SecondaryProcControls, bits32(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY.bits()));
            },
            F::PrimaryProcControls,
            clear(ProcCtls::USE_TPR_SHADOW.bits()),
            "ctl.apic_register_virtualization_needs_tpr_shadow",
        );
        expect_variant(
            |v| v.clear_bits(F::SecondaryProcControls, bits32(ProcCtls2::APIC_REGISTER_VIRTUALIZATION.bits())),
            F::PrimaryProcControls,
            clear(ProcCtls::USE_TPR_SHADOW.bits()),
            "ctl.virtual_interrupt_delivery_needs_tpr_shadow",
        );
    }

    #[test]
    fn x2apic_mode_excludes_apic_accesses() {
        expect(
            F::SecondaryProcControls,
            set(ProcCtls2::VIRTUALIZE_X2APIC_MODE.bits()),
            "ctl.x2apic_mode_excludes_apic_accesses",
        );
    }

    #[test]
    fn virtual_interrupt_delivery_needs_external_interrupt_exiting() {
        expect(
            F::PinBasedControls,
            clear(PinCtls::EXTERNAL_INTERRUPT_EXITING.bits()),
            "ctl.virtual_interrupt_delivery_needs_external_interrupt_exiting",
        );
    }

    #[test]
    fn posted_interrupts() {
        expect(
            F::SecondaryProcControls,
            clear(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY.bits()),
            "ctl.posted_interrupts_need_virtual_interrupt_delivery",
        );
        expect(
            F::ExitControls,
            clear(ExitCtls::ACK_INTERRUPT_ON_EXIT.bits()),
            "ctl.posted_interrupts_need_ack_interrupt_on_exit",
        );
        expect(F::PostedInterruptNotificationVector, to(0x1f2), "ctl.posted_interrupt_notification_vector");
        expect(F::PostedInterruptDescriptorAddress, to(0x6041), "ctl.posted_interrupt_descriptor_address");
        expect(F::PostedInterruptDescriptorAddress, to(1 << 45), "ctl.posted_interrupt_descriptor_address");
    }

    #[test]
    fn vpid_nonzero() {
        expect(F::VirtualProcessorId, to(0), "ctl.vpid_nonzero");
    }

    #[test]
    fn ept_pointer() {
        let eptp = baseline().read(F::EptPointer);
        expect(F::EptPointer, to(eptp & !7), "ctl.eptp.memory_type");
        expect(F::EptPointer, to(eptp & !7 | 2), "ctl.eptp.memory_type");
        expect(F::EptPointer, to(eptp & !0x38 | 4 << 3), "ctl.eptp.walk_length");
        expect(F::EptPointer, to(eptp & !0x38 | 1 << 3), "ctl.eptp.walk_length");
        let no_ad = without_ept_caps(everything(), EptVpidCap::ACCESSED_DIRTY);
        expect_with(
            &no_ad,
            |v| v.clear_bits(F::EptPointer, EptPointer::AD_ENABLE),
            F::EptPointer,
            set(EptPointer::AD_ENABLE as u32),
            "ctl.eptp.accessed_dirty",
        );
        expect(F::EptPointer, set(EptPointer::SUPERVISOR_SHADOW_STACK as u32), "ctl.eptp.supervisor_shadow_stack");
        expect(F::EptPointer, |v| v | 1 << 8, "ctl.eptp.reserved");
        expect(F::EptPointer, |v| v | 1 << 40, "ctl.eptp.reserved");
    }

    #[test]
    fn pml() {
        expect(F::SecondaryProcControls, clear(ProcCtls2::ENABLE_EPT.bits()), "ctl.pml_needs_ept");
        expect(F::PmlAddress, to(0x7001), "ctl.pml_address");
    }

    #[test]
    fn ept_users_need_ept() {
        let cases = [
            (ProcCtls2::UNRESTRICTED_GUEST, "ctl.unrestricted_guest_needs_ept"),
            (ProcCtls2::MODE_BASED_EPT_EXEC, "ctl.mode_based_ept_exec_needs_ept"),
            (ProcCtls2::SUBPAGE_WRITE_PERMISSIONS, "ctl.sub_page_write_needs_ept"),
            (ProcCtls2::ENABLE_VM_FUNCTIONS, "ctl.eptp_switching_needs_ept"),
            (ProcCtls2::PT_USES_GUEST_PHYSICAL, "ctl.pt_guest_physical_needs_ept"),
        ];
        for (user, id) in cases {
            expect_variant(
                |v| keep_only_ept_user(v, user),
                F::SecondaryProcControls,
                clear(ProcCtls2::ENABLE_EPT.bits()),
                id,
            );
        }
    }

    #[test]
    fn sub_page_permission_table_pointer() {
        expect(F::SppTablePointer, to(0xd001), "ctl.sub_page_permission_table_pointer");
    }

    #[test]
    fn vm_functions() {
        expect(F::VmFunctionControls, to(3), "ctl.vm_function_controls.allowed");
        expect(F::EptpListAddress, to(0xc008), "ctl.eptp_list_address");
    }

    #[test]
    fn vmcs_shadowing_bitmaps() {
        expect(F::VmreadBitmapAddress, to(0x9100), "ctl.vmread_bitmap_address");
        expect(F::VmwriteBitmapAddress, to(1 << 41), "ctl.vmwrite_bitmap_address");
    }

    #[test]
    fn ve_information_address() {
        expect(F::VeInformationAddress, to(0xb004), "ctl.ve_information_address");
    }

    #[test]
    fn pt_guest_physical() {
        expect(F::EntryControls, clear(EntryCtls::LOAD_RTIT_CTL.bits()), "ctl.pt_guest_physical_needs_load_rtit_ctl");
        expect(F::ExitControls, clear(ExitCtls::CLEAR_RTIT_CTL.bits()), "ctl.pt_guest_physical_needs_clear_rtit_ctl");
    }

    // 27.2.1.2 "VM-Exit Control Fields".

    #[test]
    fn exit_allowed() {
        expect(F::ExitControls, set(ExitCtls::LOAD_PKRS.bits()), "ctl.exit.allowed");
        expect(F::ExitControls, clear(1 << 10), "ctl.exit.allowed");
    }

    #[test]
    fn save_preemption_timer() {
        expect(F::PinBasedControls, clear(PinCtls::PREEMPTION_TIMER.bits()), "ctl.save_preemption_timer_needs_timer");
    }

    #[test]
    fn exit_msr_areas() {
        expect(F::ExitMsrStoreAddress, to(0xe008), "ctl.exit_msr_store_address");
        expect(F::ExitMsrLoadAddress, to(1 << 40), "ctl.exit_msr_load_address");
        // The area's last byte, not its first, must fit in the width.
        expect_variant(
            |v| v.set(F::ExitMsrLoadAddress, (1 << 40) - 0x20),
            F::ExitMsrLoadCount,
            to(3),
            "ctl.exit_msr_load_address",
        );
    }

    // 27.2.1.3 "VM-Entry Control Fields".

    #[test]
    fn entry_allowed() {
        expect(F::EntryControls, clear(1 << 12), "ctl.entry.allowed");
        let caps = everything()
            .to_builder()
            .entry(
                EntryCtls::IA32E_MODE_GUEST
                    | EntryCtls::LOAD_RTIT_CTL
                    | EntryCtls::LOAD_DEBUG_CONTROLS
                    | EntryCtls::LOAD_PAT
                    | EntryCtls::LOAD_EFER,
                EntryCtls::empty(),
            )
            .build();
        expect_with(&caps, |_| {}, F::EntryControls, set(EntryCtls::LOAD_BNDCFGS.bits()), "ctl.entry.allowed");
    }

    fn event(info: u32) -> impl FnOnce(u64) -> u64 {
        to(u64::from(info))
    }

    #[test]
    fn event_injection_type_and_vector() {
        expect(F::EntryInterruptionInfo, event(0x8000_0100), "ctl.event.type");
        let no_mtf =
            everything().to_builder().proc(ProcCtls::all() - ProcCtls::MONITOR_TRAP_FLAG, ProcCtls::empty()).build();
        expect_with(&no_mtf, |_| {}, F::EntryInterruptionInfo, event(0x8000_0700), "ctl.event.other_event_needs_mtf");
        expect(F::EntryInterruptionInfo, event(0x8000_0203), "ctl.event.nmi_vector");
        expect(F::EntryInterruptionInfo, event(0x8000_0320), "ctl.event.exception_vector");
        expect(F::EntryInterruptionInfo, event(0x8000_0701), "ctl.event.other_event_vector");
    }

    #[test]
    fn event_injection_error_code() {
        // #GP without an error code in protected mode.
        expect(F::EntryInterruptionInfo, event(0x8000_030d), "ctl.event.deliver_error_code");
        // #UD with one.
        expect(F::EntryInterruptionInfo, event(0x8000_0b06), "ctl.event.deliver_error_code");
        // An unrestricted guest in real mode gets no error code.
        expect_variant(
            |v| v.set(F::GuestCr0, 0),
            F::EntryInterruptionInfo,
            event(0x8000_0b0d),
            "ctl.event.deliver_error_code",
        );
        expect(F::EntryInterruptionInfo, event(0x8000_1020), "ctl.event.reserved");
        expect_variant(
            |v| v.set(F::EntryInterruptionInfo, 0x8000_0b0d),
            F::EntryExceptionErrorCode,
            to(0x1_0000),
            "ctl.event.error_code",
        );
    }

    #[test]
    fn event_injection_instruction_length() {
        expect_variant(
            |v| {
                v.set(F::EntryInterruptionInfo, 0x8000_0480);
                v.set(F::EntryInstructionLength, 2);
            },
            F::EntryInstructionLength,
            to(16),
            "ctl.event.instruction_length",
        );
        let misc = VmxMisc { zero_length_injection: false, ..everything().misc() };
        let caps = everything().to_builder().misc(misc).build();
        expect_with(
            &caps,
            |v| {
                v.set(F::EntryInterruptionInfo, 0x8000_0603);
                v.set(F::EntryInstructionLength, 1);
            },
            F::EntryInstructionLength,
            to(0),
            "ctl.event.instruction_length",
        );
    }

    #[test]
    fn entry_msr_load_area() {
        expect(F::EntryMsrLoadAddress, to(0xe021), "ctl.entry_msr_load_address");
    }

    #[test]
    fn smm_controls_outside_smm() {
        expect(F::EntryControls, set(EntryCtls::ENTRY_TO_SMM.bits()), "ctl.entry_to_smm_outside_smm");
        expect(
            F::EntryControls,
            set(EntryCtls::DEACTIVATE_DUAL_MONITOR.bits()),
            "ctl.deactivate_dual_monitor_outside_smm",
        );
    }

    #[test]
    fn valid_injections_pass() {
        let caps = everything();
        for (info, error_code, length) in [
            (0x8000_0020u32, 0u64, 0u64),  // external interrupt 0x20
            (0x8000_0202, 0, 0),           // NMI
            (0x8000_0b0e, 0x2, 0),         // #PF with error code
            (0x8000_0306, 0, 0),           // #UD
            (0x8000_0480, 0, 2),           // INT 0x80
            (0x8000_0603, 0, 1),           // INT3
            (0x8000_0501, 0, 1),           // INT1
            (0x8000_0700, 0, 0),           // pending MTF
            (0x0000_0b0d, 0xffff_ffff, 0), // not valid: nothing checked
        ] {
            let mut v = baseline();
            v.set(F::EntryInterruptionInfo, u64::from(info));
            v.set(F::EntryExceptionErrorCode, error_code);
            v.set(F::EntryInstructionLength, length);
            assert_eq!(run(&v, &caps), Ok(()), "{info:#x}");
        }
        // Real mode under unrestricted guest: #GP without error code.
        let mut v = baseline();
        v.set(F::GuestCr0, 0);
        v.set(F::EntryInterruptionInfo, 0x8000_030d);
        assert_eq!(run(&v, &caps), Ok(()));
        // IA32_VMX_BASIC bit 56: any error-code setting for hardware
        // exceptions in protected mode.
        let relaxed = caps.to_builder().no_error_code_consistency(true).build();
        let mut v = baseline();
        v.set(F::EntryInterruptionInfo, 0x8000_0b06);
        assert_eq!(run(&v, &relaxed), Ok(()));
        v.set(F::EntryInterruptionInfo, 0x8000_030d);
        assert_eq!(run(&v, &relaxed), Ok(()));
    }

    #[test]
    fn inactive_secondary_and_tertiary_controls_are_ignored() {
        let caps = VmxCaps::minimal();
        let mut v = TestVmcs::default();
        v.set(F::PinBasedControls, bits32(PIN_DEFAULT1 | PinCtls::EXTERNAL_INTERRUPT_EXITING.bits()));
        v.set(F::PrimaryProcControls, bits32(PROC_DEFAULT1 | ProcCtls::HLT_EXITING.bits()));
        v.set(F::ExitControls, bits32(EXIT_DEFAULT1 | ExitCtls::HOST_ADDRESS_SPACE_SIZE.bits()));
        v.set(F::EntryControls, bits32(ENTRY_DEFAULT1 | EntryCtls::IA32E_MODE_GUEST.bits()));
        // Garbage in controls that are not activated, and in addresses
        // whose controls are off.
        v.set(F::SecondaryProcControls, 0xffff_ffff);
        v.set(F::TertiaryProcControls, u64::MAX);
        v.set(F::IoBitmapA, 0x123);
        v.set(F::EptPointer, 0x7);
        v.set(F::ExitMsrStoreAddress, 0x5);
        assert_eq!(run(&v, &caps), Ok(()));
        // Without TRUE controls the CR3 exiting bits are forced.
        v.clear_bits(F::PrimaryProcControls, bits32(ProcCtls::CR3_LOAD_EXITING.bits()));
        assert_eq!(run(&v, &caps).unwrap_err().id, "ctl.proc.allowed");
    }

    #[test]
    fn turtles_l0_vmcs01_passes() {
        // What L0 is expected to build for a 64-bit guest under Turtles' CPU.
        let caps = VmxCaps::turtles();
        let mut v = TestVmcs::default();
        let adjust = |word: ControlWord, bits: u64| caps.adjust(word, bits);
        v.set(
            F::PinBasedControls,
            adjust(
                ControlWord::Pin,
                bits32((PinCtls::EXTERNAL_INTERRUPT_EXITING | PinCtls::NMI_EXITING | PinCtls::VIRTUAL_NMIS).bits()),
            ),
        );
        let proc = ProcCtls::HLT_EXITING
            | ProcCtls::USE_IO_BITMAPS
            | ProcCtls::USE_MSR_BITMAPS
            | ProcCtls::ACTIVATE_SECONDARY_CONTROLS;
        v.set(F::PrimaryProcControls, adjust(ControlWord::Proc, bits32(proc.bits())));
        let proc2 =
            ProcCtls2::ENABLE_EPT | ProcCtls2::ENABLE_VPID | ProcCtls2::UNRESTRICTED_GUEST | ProcCtls2::ENABLE_RDTSCP;
        v.set(F::SecondaryProcControls, adjust(ControlWord::Proc2, bits32(proc2.bits())));
        v.set(
            F::ExitControls,
            adjust(
                ControlWord::Exit,
                bits32((ExitCtls::HOST_ADDRESS_SPACE_SIZE | ExitCtls::ACK_INTERRUPT_ON_EXIT).bits()),
            ),
        );
        v.set(F::EntryControls, adjust(ControlWord::Entry, bits32(EntryCtls::IA32E_MODE_GUEST.bits())));
        v.set(F::IoBitmapA, 0x10_0000);
        v.set(F::IoBitmapB, 0x10_1000);
        v.set(F::MsrBitmap, 0x10_2000);
        v.set(F::VirtualProcessorId, 1);
        v.set(F::EptPointer, EptPointer::new(x86::Gpa(0x20_0000), MemoryType::WriteBack, 4, true).0);
        assert_eq!(check_controls(&v, &caps), Ok(()));
        // CR3 exiting was not forced: TRUE controls allow clearing it.
        assert_eq!(v.read(F::PrimaryProcControls) & u64::from(ProcCtls::CR3_LOAD_EXITING.bits()), 0);
    }

    #[test]
    fn failures_report_vmfailvalid_7_and_explain_themselves() {
        let mut v = baseline();
        v.set(F::IoBitmapA, 0x1001);
        let err = check_controls(&v, &everything()).unwrap_err();
        assert_eq!(err.failure.instruction_error(), Some(VmInstructionError::EntryInvalidControls));
        assert_eq!(err.failure.exit_reason(), None);
        assert_eq!(err.failure.exit_qualification(), None);
        assert_eq!(
            err.check,
            Check {
                id: "ctl.io_bitmap_a",
                sdm: "27.2.1.1",
                condition: "page_address_valid(io_bitmap_a, width)",
                field: Some(F::IoBitmapA),
                value: 0x1001,
            }
        );
        let text = std::format!("{err}");
        assert!(text.contains("VM-instruction error 7"), "{text}");
        assert!(text.contains("ctl.io_bitmap_a"), "{text}");
        assert!(text.contains("io_bitmap_a = 0x1001"), "{text}");
    }

    #[test]
    fn entry_failure_exits_carry_reason_and_qualification() {
        let guest = EntryFailure::GuestState { qualification: GuestStateQualification::VmcsLinkPointer };
        assert_eq!(guest.exit_reason().map(ExitReasonField::to_raw), Some(0x8000_0021));
        assert_eq!(guest.exit_qualification(), Some(4));
        assert_eq!(guest.instruction_error(), None);
        let msr = EntryFailure::MsrLoad { index: 3 };
        assert_eq!(msr.exit_reason().map(ExitReasonField::to_raw), Some(0x8000_0022));
        assert_eq!(msr.exit_qualification(), Some(3));
        assert_eq!(EntryFailure::HOST_STATE.instruction_error().map(VmInstructionError::number), Some(8));
    }

    #[test]
    fn check_macro_without_field() {
        fn f(x: u64) -> Result<(), Check> {
            check!("test.plain", "0.0", x > 1 && x < 5);
            Ok(())
        }
        assert_eq!(f(2), Ok(()));
        let c = f(7).unwrap_err();
        assert_eq!((c.id, c.condition, c.field, c.value), ("test.plain", "x > 1 && x < 5", None, 0));
    }

    /// Every check id in this file has a negative test above.
    #[test]
    fn every_check_has_a_negative_test() {
        let src = include_str!("check.rs");
        let (code, tests) = src.split_at(src.find("#[cfg(test)]").unwrap());
        let ids = |text: &str| -> BTreeSet<String> {
            text.split('"')
                .skip(1)
                .step_by(2)
                .filter(|s| s.starts_with("ctl.") && !s.contains(' '))
                .map(String::from)
                .collect()
        };
        let defined = ids(code);
        let tested = ids(tests);
        let untested: Vec<&String> = defined.difference(&tested).collect();
        assert!(untested.is_empty(), "checks without a negative test: {untested:?}");
        assert!(defined.len() >= 50, "{}", defined.len());
    }
}
