//! VMX control words and the small formats that travel in VMCS fields.
//!
//! Follows the Intel SDM vol. 3C, ch. 25 "Virtual Machine Control
//! Structures" (ch. 24 in older editions):
//!
//! - 25.6.1 "Pin-Based VM-Execution Controls" ([`PinCtls`]),
//! - 25.6.2 "Processor-Based VM-Execution Controls" ([`ProcCtls`],
//!   [`ProcCtls2`], [`ProcCtls3`]),
//! - 25.6.14 "VM-Function Controls" ([`VmFuncCtls`]),
//! - 25.7.1 "VM-Exit Controls" ([`ExitCtls`]),
//! - 25.8.1 "VM-Entry Controls" ([`EntryCtls`]),
//! - 25.8.3 "VM-Entry Controls for Event Injection" and 25.9.2
//!   "Information for VM Exits Due to Vectored Events" / 25.9.3
//!   "Information for VM Exits That Occur During Event Delivery"
//!   ([`InterruptionInfo`]),
//! - 25.4.2 "Guest Non-Register State" ([`Interruptibility`],
//!   [`ActivityState`]),
//! - 25.6.11 "Extended-Page-Table Pointer (EPTP)" ([`EptPointer`]) and
//!   ch. 29 "VMX Support for Address Translation", 29.3.2 "EPT Translation
//!   Mechanism" ([`EptEntry`]).
//!
//! Control words are bitflags over the raw field value; bits the SDM leaves
//! reserved are kept by `from_bits_retain` so that a guest hypervisor's
//! reserved-bit violations stay visible to the VM-entry checks.

use bitflags::bitflags;
use x86::Gpa;

bitflags! {
    /// Pin-based VM-execution controls (SDM 25.6.1). Bits 1, 2 and 4 are
    /// "default1" reserved bits (see [`crate::caps`]).
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct PinCtls: u32 {
        /// External interrupts cause VM exits instead of guest delivery.
        const EXTERNAL_INTERRUPT_EXITING = 1 << 0;
        /// NMIs cause VM exits.
        const NMI_EXITING = 1 << 3;
        /// NMIs are never blocked and "blocking by NMI" tracks virtual NMIs.
        const VIRTUAL_NMIS = 1 << 5;
        /// Activate the VMX-preemption timer.
        const PREEMPTION_TIMER = 1 << 6;
        /// Process posted interrupts.
        const POSTED_INTERRUPTS = 1 << 7;
    }
}

bitflags! {
    /// Primary processor-based VM-execution controls (SDM 25.6.2, table
    /// "Definitions of Primary Processor-Based VM-Execution Controls").
    /// Bits 1, 4-6, 8, 13-16 and 26 are default1.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ProcCtls: u32 {
        /// Exit at the start of any instruction when RFLAGS.IF = 1 and
        /// nothing blocks interrupts.
        const INTERRUPT_WINDOW_EXITING = 1 << 2;
        /// Add the TSC offset to guest reads of the TSC.
        const USE_TSC_OFFSETTING = 1 << 3;
        /// HLT exits.
        const HLT_EXITING = 1 << 7;
        /// INVLPG exits.
        const INVLPG_EXITING = 1 << 9;
        /// MWAIT exits.
        const MWAIT_EXITING = 1 << 10;
        /// RDPMC exits.
        const RDPMC_EXITING = 1 << 11;
        /// RDTSC (and RDTSCP) exit.
        const RDTSC_EXITING = 1 << 12;
        /// MOV to CR3 exits unless the value is a CR3-target value.
        const CR3_LOAD_EXITING = 1 << 15;
        /// MOV from CR3 exits.
        const CR3_STORE_EXITING = 1 << 16;
        /// The tertiary processor-based controls are used.
        const ACTIVATE_TERTIARY_CONTROLS = 1 << 17;
        /// MOV to CR8 exits.
        const CR8_LOAD_EXITING = 1 << 19;
        /// MOV from CR8 exits.
        const CR8_STORE_EXITING = 1 << 20;
        /// TPR virtualization through the virtual-APIC page.
        const USE_TPR_SHADOW = 1 << 21;
        /// Exit at the start of any instruction when virtual NMIs are
        /// unblocked.
        const NMI_WINDOW_EXITING = 1 << 22;
        /// MOV DR exits.
        const MOV_DR_EXITING = 1 << 23;
        /// Every I/O instruction exits (ignored when the I/O bitmaps are
        /// used).
        const UNCONDITIONAL_IO_EXITING = 1 << 24;
        /// I/O instructions exit according to the I/O bitmaps.
        const USE_IO_BITMAPS = 1 << 25;
        /// Monitor trap flag: exit after each instruction.
        const MONITOR_TRAP_FLAG = 1 << 27;
        /// RDMSR/WRMSR exit according to the MSR bitmaps.
        const USE_MSR_BITMAPS = 1 << 28;
        /// MONITOR exits.
        const MONITOR_EXITING = 1 << 29;
        /// PAUSE exits.
        const PAUSE_EXITING = 1 << 30;
        /// The secondary processor-based controls are used.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

bitflags! {
    /// Secondary processor-based VM-execution controls (SDM 25.6.2, table
    /// "Definitions of Secondary Processor-Based VM-Execution Controls").
    /// Treated as all-zero when [`ProcCtls::ACTIVATE_SECONDARY_CONTROLS`] is
    /// clear.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ProcCtls2: u32 {
        /// Accesses to the APIC-access page are virtualized.
        const VIRTUALIZE_APIC_ACCESSES = 1 << 0;
        /// Extended page tables.
        const ENABLE_EPT = 1 << 1;
        /// LGDT, LIDT, LLDT, LTR, SGDT, SIDT, SLDT and STR exit.
        const DESCRIPTOR_TABLE_EXITING = 1 << 2;
        /// RDTSCP does not #UD.
        const ENABLE_RDTSCP = 1 << 3;
        /// x2APIC MSR accesses to the TPR go to the virtual-APIC page.
        const VIRTUALIZE_X2APIC_MODE = 1 << 4;
        /// Tag cached translations with the VPID.
        const ENABLE_VPID = 1 << 5;
        /// WBINVD and WBNOINVD exit.
        const WBINVD_EXITING = 1 << 6;
        /// The guest may run unpaged or in real mode.
        const UNRESTRICTED_GUEST = 1 << 7;
        /// Reads of most APIC registers are served from the virtual-APIC
        /// page.
        const APIC_REGISTER_VIRTUALIZATION = 1 << 8;
        /// Virtual-interrupt evaluation and delivery.
        const VIRTUAL_INTERRUPT_DELIVERY = 1 << 9;
        /// Exit on PAUSE loops longer than the PLE window.
        const PAUSE_LOOP_EXITING = 1 << 10;
        /// RDRAND exits.
        const RDRAND_EXITING = 1 << 11;
        /// INVPCID does not #UD.
        const ENABLE_INVPCID = 1 << 12;
        /// VMFUNC is enabled.
        const ENABLE_VM_FUNCTIONS = 1 << 13;
        /// VMREAD/VMWRITE in VMX non-root operation may use a shadow VMCS.
        const VMCS_SHADOWING = 1 << 14;
        /// ENCLS exits according to the ENCLS-exiting bitmap.
        const ENCLS_EXITING = 1 << 15;
        /// RDSEED exits.
        const RDSEED_EXITING = 1 << 16;
        /// Page-modification logging.
        const ENABLE_PML = 1 << 17;
        /// Some EPT violations become virtualization exceptions (#VE).
        const EPT_VIOLATION_VE = 1 << 18;
        /// Intel PT hides non-root operation.
        const CONCEAL_VMX_FROM_PT = 1 << 19;
        /// XSAVES and XRSTORS do not #UD.
        const ENABLE_XSAVES = 1 << 20;
        /// Separate EPT execute permissions for user and supervisor.
        const MODE_BASED_EPT_EXEC = 1 << 22;
        /// EPT write permissions at 128-byte granularity.
        const SUBPAGE_WRITE_PERMISSIONS = 1 << 23;
        /// Intel PT output addresses are guest-physical.
        const PT_USES_GUEST_PHYSICAL = 1 << 24;
        /// Multiply guest TSC reads by the TSC multiplier.
        const USE_TSC_SCALING = 1 << 25;
        /// TPAUSE, UMONITOR and UMWAIT do not #UD.
        const ENABLE_USER_WAIT_PAUSE = 1 << 26;
        /// PCONFIG does not #UD.
        const ENABLE_PCONFIG = 1 << 27;
        /// ENCLV exits according to the ENCLV-exiting bitmap.
        const ENABLE_ENCLV_EXITING = 1 << 28;
        /// Bus locks cause VM exits.
        const BUS_LOCK_DETECTION = 1 << 30;
        /// Exit when no event window opens within the instruction timeout.
        const INSTRUCTION_TIMEOUT = 1 << 31;
    }
}

bitflags! {
    /// Tertiary processor-based VM-execution controls (SDM 25.6.2, table
    /// "Definitions of Tertiary Processor-Based VM-Execution Controls"), a
    /// 64-bit field used when [`ProcCtls::ACTIVATE_TERTIARY_CONTROLS`] is
    /// set.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ProcCtls3: u64 {
        /// LOADIWKEY exits.
        const LOADIWKEY_EXITING = 1 << 0;
        /// Hypervisor-managed linear-address translation.
        const ENABLE_HLAT = 1 << 1;
        /// EPT paging-write control.
        const EPT_PAGING_WRITE_CONTROL = 1 << 2;
        /// Guest-paging verification.
        const GUEST_PAGING_VERIFICATION = 1 << 3;
        /// IPI virtualization.
        const IPI_VIRTUALIZATION = 1 << 4;
        /// Virtualize IA32_SPEC_CTRL.
        const VIRTUALIZE_IA32_SPEC_CTRL = 1 << 7;
    }
}

bitflags! {
    /// VM-function controls (SDM 25.6.14), a 64-bit field.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct VmFuncCtls: u64 {
        /// VM function 0: EPTP switching.
        const EPTP_SWITCHING = 1 << 0;
    }
}

bitflags! {
    /// Primary VM-exit controls (SDM 25.7.1). Bits 0-8, 10, 11, 13, 14, 16
    /// and 17 are default1.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct ExitCtls: u32 {
        /// Save DR7 and IA32_DEBUGCTL on exit.
        const SAVE_DEBUG_CONTROLS = 1 << 2;
        /// Return to a 64-bit host.
        const HOST_ADDRESS_SPACE_SIZE = 1 << 9;
        /// Load host IA32_PERF_GLOBAL_CTRL on exit.
        const LOAD_PERF_GLOBAL_CTRL = 1 << 12;
        /// Acknowledge the interrupt controller on an external-interrupt
        /// exit and store the vector.
        const ACK_INTERRUPT_ON_EXIT = 1 << 15;
        /// Save guest IA32_PAT on exit.
        const SAVE_PAT = 1 << 18;
        /// Load host IA32_PAT on exit.
        const LOAD_PAT = 1 << 19;
        /// Save guest IA32_EFER on exit.
        const SAVE_EFER = 1 << 20;
        /// Load host IA32_EFER on exit.
        const LOAD_EFER = 1 << 21;
        /// Save the VMX-preemption timer value on exit.
        const SAVE_PREEMPTION_TIMER = 1 << 22;
        /// Clear IA32_BNDCFGS on exit.
        const CLEAR_BNDCFGS = 1 << 23;
        /// Intel PT does not report the exit.
        const CONCEAL_VMX_FROM_PT = 1 << 24;
        /// Clear IA32_RTIT_CTL on exit.
        const CLEAR_RTIT_CTL = 1 << 25;
        /// Clear IA32_LBR_CTL on exit.
        const CLEAR_LBR_CTL = 1 << 26;
        /// Clear UINV on exit.
        const CLEAR_UINV = 1 << 27;
        /// Load host CET state on exit.
        const LOAD_CET_STATE = 1 << 28;
        /// Load host IA32_PKRS on exit.
        const LOAD_PKRS = 1 << 29;
        /// Save guest IA32_PERF_GLOBAL_CTRL on exit.
        const SAVE_PERF_GLOBAL_CTRL = 1 << 30;
        /// The secondary VM-exit controls are used.
        const ACTIVATE_SECONDARY_CONTROLS = 1 << 31;
    }
}

bitflags! {
    /// VM-entry controls (SDM 25.8.1). Bits 0-8 and 12 are default1.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EntryCtls: u32 {
        /// Load DR7 and IA32_DEBUGCTL on entry.
        const LOAD_DEBUG_CONTROLS = 1 << 2;
        /// The guest runs in IA-32e mode (IA32_EFER.LMA after entry).
        const IA32E_MODE_GUEST = 1 << 9;
        /// Enter SMM (only from the SMM monitor).
        const ENTRY_TO_SMM = 1 << 10;
        /// Leave the dual-monitor treatment of SMIs and SMM.
        const DEACTIVATE_DUAL_MONITOR = 1 << 11;
        /// Load guest IA32_PERF_GLOBAL_CTRL on entry.
        const LOAD_PERF_GLOBAL_CTRL = 1 << 13;
        /// Load guest IA32_PAT on entry.
        const LOAD_PAT = 1 << 14;
        /// Load guest IA32_EFER on entry.
        const LOAD_EFER = 1 << 15;
        /// Load guest IA32_BNDCFGS on entry.
        const LOAD_BNDCFGS = 1 << 16;
        /// Intel PT does not report the entry.
        const CONCEAL_VMX_FROM_PT = 1 << 17;
        /// Load guest IA32_RTIT_CTL on entry.
        const LOAD_RTIT_CTL = 1 << 18;
        /// Load guest UINV on entry.
        const LOAD_UINV = 1 << 19;
        /// Load guest CET state on entry.
        const LOAD_CET_STATE = 1 << 20;
        /// Load guest IA32_LBR_CTL on entry.
        const LOAD_LBR_CTL = 1 << 21;
        /// Load guest IA32_PKRS on entry.
        const LOAD_PKRS = 1 << 22;
    }
}

/// Interruption type, bits 10:8 of the interruption-information formats
/// (SDM 25.8.3, 25.9.2, 25.9.3). Value 1 is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum InterruptionType {
    /// External interrupt.
    ExternalInterrupt = 0,
    /// Non-maskable interrupt.
    Nmi = 2,
    /// Hardware exception (every exception but #BP and #OF from INT3/INTO,
    /// and #DB from INT1).
    HardwareException = 3,
    /// Software interrupt (INT n).
    SoftwareInterrupt = 4,
    /// Privileged software exception (#DB from INT1).
    PrivilegedSoftwareException = 5,
    /// Software exception (#BP from INT3, #OF from INTO).
    SoftwareException = 6,
    /// Other event: with vector 0, a pending MTF VM exit.
    OtherEvent = 7,
}

impl InterruptionType {
    /// Decodes the 3-bit type field; `None` for the reserved value 1.
    pub const fn from_bits(bits: u8) -> Option<InterruptionType> {
        Some(match bits & 7 {
            0 => InterruptionType::ExternalInterrupt,
            2 => InterruptionType::Nmi,
            3 => InterruptionType::HardwareException,
            4 => InterruptionType::SoftwareInterrupt,
            5 => InterruptionType::PrivilegedSoftwareException,
            6 => InterruptionType::SoftwareException,
            7 => InterruptionType::OtherEvent,
            _ => return None,
        })
    }

    /// Whether delivering an event of this type needs the instruction
    /// length (it pushes the address of the next instruction).
    pub const fn uses_instruction_length(self) -> bool {
        matches!(
            self,
            InterruptionType::SoftwareInterrupt
                | InterruptionType::PrivilegedSoftwareException
                | InterruptionType::SoftwareException
        )
    }
}

/// An interruption-information field: VM-entry interruption information
/// (event injection), VM-exit interruption information or IDT-vectoring
/// information (SDM 25.8.3, 25.9.2, 25.9.3).
///
/// Layout: vector in bits 7:0, type in 10:8, deliver-error-code in 11,
/// NMI unblocking due to IRET in 12 (exit interruption information only),
/// reserved 30:13, valid in 31.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct InterruptionInfo {
    /// Vector of the interrupt or exception.
    pub vector: u8,
    /// Interruption type.
    pub kind: InterruptionType,
    /// An error code is (to be) delivered.
    pub deliver_error_code: bool,
    /// The exit happened while IRET was unblocking NMIs (VM-exit
    /// interruption information only; undefined elsewhere).
    pub nmi_unblocking: bool,
    /// The field is valid.
    pub valid: bool,
}

impl InterruptionInfo {
    /// Bit 11.
    pub const DELIVER_ERROR_CODE: u32 = 1 << 11;
    /// Bit 12.
    pub const NMI_UNBLOCKING: u32 = 1 << 12;
    /// Bits 30:13.
    pub const RESERVED: u32 = 0x7fff_e000;
    /// Bit 31.
    pub const VALID: u32 = 1 << 31;

    /// A valid event of the given type and vector, without error code.
    pub const fn new(kind: InterruptionType, vector: u8) -> InterruptionInfo {
        InterruptionInfo { vector, kind, deliver_error_code: false, nmi_unblocking: false, valid: true }
    }

    /// A valid external interrupt.
    pub const fn external_interrupt(vector: u8) -> InterruptionInfo {
        InterruptionInfo::new(InterruptionType::ExternalInterrupt, vector)
    }

    /// A valid NMI (vector 2).
    pub const fn nmi() -> InterruptionInfo {
        InterruptionInfo::new(InterruptionType::Nmi, 2)
    }

    /// A valid hardware exception, with or without an error code.
    pub const fn hardware_exception(vector: u8, deliver_error_code: bool) -> InterruptionInfo {
        InterruptionInfo { deliver_error_code, ..InterruptionInfo::new(InterruptionType::HardwareException, vector) }
    }

    /// Decodes a raw field. Reserved bits 30:13 are dropped; `None` when
    /// the type is the reserved value 1.
    pub const fn from_raw(raw: u32) -> Option<InterruptionInfo> {
        let kind = match InterruptionType::from_bits(((raw >> 8) & 7) as u8) {
            Some(k) => k,
            None => return None,
        };
        Some(InterruptionInfo {
            vector: raw as u8,
            kind,
            deliver_error_code: raw & Self::DELIVER_ERROR_CODE != 0,
            nmi_unblocking: raw & Self::NMI_UNBLOCKING != 0,
            valid: raw & Self::VALID != 0,
        })
    }

    /// Encodes the field.
    pub const fn to_raw(self) -> u32 {
        self.vector as u32
            | (self.kind as u32) << 8
            | if self.deliver_error_code { Self::DELIVER_ERROR_CODE } else { 0 }
            | if self.nmi_unblocking { Self::NMI_UNBLOCKING } else { 0 }
            | if self.valid { Self::VALID } else { 0 }
    }
}

bitflags! {
    /// Guest interruptibility state (SDM 25.4.2, table "Format of
    /// Interruptibility State"). Bits 31:5 are reserved.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct Interruptibility: u32 {
        /// Blocking by STI.
        const BLOCKING_BY_STI = 1 << 0;
        /// Blocking by MOV SS or POP SS.
        const BLOCKING_BY_MOV_SS = 1 << 1;
        /// Blocking by SMI.
        const BLOCKING_BY_SMI = 1 << 2;
        /// Blocking by NMI (or, with virtual NMIs, of virtual NMIs).
        const BLOCKING_BY_NMI = 1 << 3;
        /// A VM exit was incident to enclave mode.
        const ENCLAVE_INTERRUPTION = 1 << 4;
    }
}

/// Guest activity state (SDM 25.4.2, "Activity state").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum ActivityState {
    /// Executing instructions normally.
    Active = 0,
    /// Inactive after HLT.
    Hlt = 1,
    /// Inactive after a triple fault or a fault during shutdown.
    Shutdown = 2,
    /// Inactive, waiting for a startup IPI.
    WaitForSipi = 3,
}

impl ActivityState {
    /// Decodes the field; `None` for values beyond 3.
    pub const fn from_raw(raw: u32) -> Option<ActivityState> {
        Some(match raw {
            0 => ActivityState::Active,
            1 => ActivityState::Hlt,
            2 => ActivityState::Shutdown,
            3 => ActivityState::WaitForSipi,
            _ => return None,
        })
    }
}

/// Memory types that EPT structures and the VMCS region may use (SDM
/// vol. 3A, 12.3 "Methods of Caching Available", encodings of IA32_PAT and
/// the MTRRs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum MemoryType {
    /// Uncacheable.
    Uncacheable = 0,
    /// Write combining.
    WriteCombining = 1,
    /// Write through.
    WriteThrough = 4,
    /// Write protected.
    WriteProtected = 5,
    /// Write back.
    WriteBack = 6,
}

impl MemoryType {
    /// Decodes a 3-bit memory type; `None` for the reserved values 2, 3
    /// and 7.
    pub const fn from_bits(bits: u8) -> Option<MemoryType> {
        Some(match bits {
            0 => MemoryType::Uncacheable,
            1 => MemoryType::WriteCombining,
            4 => MemoryType::WriteThrough,
            5 => MemoryType::WriteProtected,
            6 => MemoryType::WriteBack,
            _ => return None,
        })
    }
}

/// The EPT pointer (SDM 25.6.11 "Extended-Page-Table Pointer (EPTP)").
///
/// Layout: memory type of the paging structures in bits 2:0 (UC or WB),
/// page-walk length minus one in 5:3, accessed/dirty flags enable in 6,
/// supervisor shadow-stack enforcement in 7, reserved 11:8, the physical
/// address of the EPT PML4 (or PML5) table in N-1:12, reserved 63:N.
/// Decoding keeps the raw bits so that the VM-entry checks can reject
/// reserved values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EptPointer(pub u64);

impl EptPointer {
    /// Bits 2:0.
    pub const MEMORY_TYPE_MASK: u64 = 0x7;
    /// Bits 5:3.
    pub const WALK_LENGTH_MASK: u64 = 0x38;
    /// Bit 6.
    pub const AD_ENABLE: u64 = 1 << 6;
    /// Bit 7.
    pub const SUPERVISOR_SHADOW_STACK: u64 = 1 << 7;
    /// Bits 11:8.
    pub const RESERVED_LOW: u64 = 0xf00;

    /// Builds an EPTP for a table at `root` (4 KiB aligned).
    pub const fn new(root: Gpa, memory_type: MemoryType, walk_length: u8, ad_enabled: bool) -> EptPointer {
        EptPointer(
            (root.0 & !0xfff)
                | memory_type as u64
                | ((walk_length.wrapping_sub(1) as u64) & 7) << 3
                | if ad_enabled { Self::AD_ENABLE } else { 0 },
        )
    }

    /// Raw memory-type bits 2:0.
    pub const fn memory_type_bits(self) -> u8 {
        (self.0 & Self::MEMORY_TYPE_MASK) as u8
    }

    /// The memory type, if it is a defined one.
    pub const fn memory_type(self) -> Option<MemoryType> {
        MemoryType::from_bits(self.memory_type_bits())
    }

    /// Page-walk length: bits 5:3 plus one (4 or 5 when valid).
    pub const fn walk_length(self) -> u8 {
        ((self.0 & Self::WALK_LENGTH_MASK) >> 3) as u8 + 1
    }

    /// Accessed and dirty flags are enabled.
    pub const fn ad_enabled(self) -> bool {
        self.0 & Self::AD_ENABLE != 0
    }

    /// Supervisor shadow-stack access rights are enforced.
    pub const fn supervisor_shadow_stack(self) -> bool {
        self.0 & Self::SUPERVISOR_SHADOW_STACK != 0
    }

    /// Physical address of the top-level EPT table (bits 63:12; reserved
    /// high bits are the checker's business).
    pub const fn root(self) -> Gpa {
        Gpa(self.0 & !0xfff)
    }
}

bitflags! {
    /// Bits of an EPT paging-structure entry (SDM 29.3.2, tables "Format of
    /// an EPT PML4 Entry" through "Format of an EPT Page-Table Entry").
    /// The memory type (bits 5:3), "ignore PAT" and "large page" are
    /// meaningful in leaf entries only; the address is bits N-1:12.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptEntry: u64 {
        /// Reads allowed.
        const READ = 1 << 0;
        /// Writes allowed.
        const WRITE = 1 << 1;
        /// Instruction fetches allowed (supervisor-mode ones when
        /// mode-based execute control is on).
        const EXECUTE = 1 << 2;
        /// Bits 5:3, the EPT memory type of a leaf.
        const MEMORY_TYPE = 0x7 << 3;
        /// Ignore the guest PAT memory type.
        const IGNORE_PAT = 1 << 6;
        /// Maps a 2 MiB or 1 GiB page (PDE, PDPTE).
        const LARGE_PAGE = 1 << 7;
        /// Accessed flag (when enabled in the EPTP).
        const ACCESSED = 1 << 8;
        /// Dirty flag of a leaf (when enabled in the EPTP).
        const DIRTY = 1 << 9;
        /// User-mode instruction fetches allowed (mode-based execute
        /// control).
        const USER_EXECUTE = 1 << 10;
        /// Verify guest paging (guest-paging verification).
        const VERIFY_GUEST_PAGING = 1 << 57;
        /// Paging-write access (EPT paging-write control).
        const PAGING_WRITE_ACCESS = 1 << 58;
        /// Supervisor shadow-stack page.
        const SUPERVISOR_SHADOW_STACK = 1 << 60;
        /// Sub-page write permissions apply.
        const SUB_PAGE_WRITE = 1 << 61;
        /// EPT violations on this page do not become #VE.
        const SUPPRESS_VE = 1 << 63;
    }
}

impl EptEntry {
    /// Read, write and execute permissions.
    pub const RWX: EptEntry = EptEntry::READ.union(EptEntry::WRITE).union(EptEntry::EXECUTE);

    /// The entry is present: any of bits 2:0 set (bit 10 too with
    /// mode-based execute control, which the caller must check).
    pub const fn is_present(self) -> bool {
        self.intersects(EptEntry::RWX)
    }

    /// Raw memory-type bits 5:3 of a leaf.
    pub const fn memory_type_bits(self) -> u8 {
        ((self.bits() >> 3) & 7) as u8
    }

    /// Physical address of the next table or the page, for a physical
    /// address width of `maxphyaddr` bits.
    pub const fn address(self, maxphyaddr: u32) -> Gpa {
        Gpa(self.bits() & ((1u64 << maxphyaddr) - 1) & !0xfff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_bit_positions() {
        assert_eq!(PinCtls::POSTED_INTERRUPTS.bits(), 0x80);
        assert_eq!(ProcCtls::USE_TPR_SHADOW.bits(), 0x0020_0000);
        assert_eq!(ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits(), 0x8000_0000);
        assert_eq!(ProcCtls2::ENABLE_EPT.bits(), 0x2);
        assert_eq!(ProcCtls2::UNRESTRICTED_GUEST.bits(), 0x80);
        assert_eq!(ProcCtls2::USE_TSC_SCALING.bits(), 0x0200_0000);
        assert_eq!(ExitCtls::HOST_ADDRESS_SPACE_SIZE.bits(), 0x200);
        assert_eq!(ExitCtls::ACK_INTERRUPT_ON_EXIT.bits(), 0x8000);
        assert_eq!(EntryCtls::IA32E_MODE_GUEST.bits(), 0x200);
        assert_eq!(EntryCtls::LOAD_EFER.bits(), 0x8000);
    }

    #[test]
    fn interruption_info_round_trip() {
        let pf = InterruptionInfo::hardware_exception(14, true);
        assert_eq!(pf.to_raw(), 0x8000_0b0e);
        assert_eq!(InterruptionInfo::from_raw(0x8000_0b0e), Some(pf));
        assert_eq!(InterruptionInfo::nmi().to_raw(), 0x8000_0202);
        let ext = InterruptionInfo::external_interrupt(0x20);
        assert_eq!(ext.to_raw(), 0x8000_0020);
        let mut exit_info = InterruptionInfo::hardware_exception(13, true);
        exit_info.nmi_unblocking = true;
        assert_eq!(InterruptionInfo::from_raw(exit_info.to_raw()), Some(exit_info));
        // Reserved type 1, and reserved bits dropped on decode.
        assert_eq!(InterruptionInfo::from_raw(0x8000_0100), None);
        assert_eq!(InterruptionInfo::from_raw(0x8001_0020), Some(ext));
        for t in 0..8u8 {
            if let Some(k) = InterruptionType::from_bits(t) {
                assert_eq!(k as u8, t);
            }
        }
        assert!(InterruptionType::SoftwareInterrupt.uses_instruction_length());
        assert!(!InterruptionType::HardwareException.uses_instruction_length());
    }

    #[test]
    fn activity_and_interruptibility() {
        assert_eq!(ActivityState::from_raw(3), Some(ActivityState::WaitForSipi));
        assert_eq!(ActivityState::from_raw(4), None);
        assert_eq!(Interruptibility::all().bits(), 0x1f);
    }

    #[test]
    fn ept_pointer_layout() {
        let eptp = EptPointer::new(Gpa(0x12_3000), MemoryType::WriteBack, 4, true);
        assert_eq!(eptp.0, 0x12_305e);
        assert_eq!(eptp.memory_type(), Some(MemoryType::WriteBack));
        assert_eq!(eptp.walk_length(), 4);
        assert!(eptp.ad_enabled());
        assert!(!eptp.supervisor_shadow_stack());
        assert_eq!(eptp.root(), Gpa(0x12_3000));
        assert_eq!(EptPointer(0x12_3002).memory_type(), None);
    }

    #[test]
    fn ept_entry_bits() {
        let e = EptEntry::from_bits_retain(0x8000_0000_0abc_d037 | 1 << 9);
        assert!(e.is_present());
        assert!(e.contains(EptEntry::RWX));
        assert_eq!(e.memory_type_bits(), 6);
        assert!(e.contains(EptEntry::DIRTY | EptEntry::SUPPRESS_VE));
        assert_eq!(e.address(40), Gpa(0x0abc_d000));
        assert!(!EptEntry::empty().is_present());
    }
}
