//! VM-exit information: exit reasons, exit qualifications and VM-exit
//! instruction information.
//!
//! Follows the Intel SDM vol. 3C, appendix C "VMX Basic Exit Reasons"
//! ([`ExitReason`]), 25.9.1 "Basic VM-Exit Information" (the exit-reason
//! field, [`ExitReasonField`]), 28.2.1 "Basic VM-Exit Information" (27.2.1
//! in older editions; the exit-qualification formats) and 28.2.5
//! "Information for VM Exits Due to Instruction Execution" (the
//! VM-exit instruction-information formats).
//!
//! Every decoder here is a plain value with `from_raw` and `to_raw`;
//! `from_raw(x.to_raw()) == x` for every value a decoder can produce, and
//! bits a format leaves reserved or undefined are dropped on decode.

use core::fmt;

macro_rules! exit_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident = $num:literal, $name:literal; )*) => {
        /// Basic exit reason (bits 15:0 of the exit-reason field), SDM
        /// appendix C "VMX Basic Exit Reasons". Numbers 35, 38, 42 and 71
        /// are not defined.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u16)]
        pub enum ExitReason {
            $( $(#[doc = $doc])* $variant = $num, )*
        }

        impl ExitReason {
            /// Every defined basic exit reason, in numeric order.
            pub const ALL: &'static [ExitReason] = &[ $( ExitReason::$variant, )* ];

            /// The exit reason with this number, `None` for undefined ones.
            pub const fn from_basic(basic: u16) -> Option<ExitReason> {
                match basic {
                    $( $num => Some(ExitReason::$variant), )*
                    _ => None,
                }
            }

            /// Stable snake_case name, for statistics and traces.
            pub const fn name(self) -> &'static str {
                match self {
                    $( ExitReason::$variant => $name, )*
                }
            }
        }
    };
}

exit_reasons! {
    /// An exception (with the exception bitmap) or an NMI (with NMI
    /// exiting).
    ExceptionOrNmi = 0, "exception_or_nmi";
    /// An external interrupt arrived with external-interrupt exiting.
    ExternalInterrupt = 1, "external_interrupt";
    /// The guest triple-faulted.
    TripleFault = 2, "triple_fault";
    /// An INIT signal arrived.
    InitSignal = 3, "init_signal";
    /// A start-up IPI arrived in wait-for-SIPI state.
    StartupIpi = 4, "startup_ipi";
    /// An SMI arrived right after an I/O instruction.
    IoSmi = 5, "io_smi";
    /// Any other SMI.
    OtherSmi = 6, "other_smi";
    /// Interrupt window opened with interrupt-window exiting.
    InterruptWindow = 7, "interrupt_window";
    /// NMI window opened with NMI-window exiting.
    NmiWindow = 8, "nmi_window";
    /// The guest attempted a task switch.
    TaskSwitch = 9, "task_switch";
    /// CPUID.
    Cpuid = 10, "cpuid";
    /// GETSEC.
    Getsec = 11, "getsec";
    /// HLT.
    Hlt = 12, "hlt";
    /// INVD.
    Invd = 13, "invd";
    /// INVLPG.
    Invlpg = 14, "invlpg";
    /// RDPMC.
    Rdpmc = 15, "rdpmc";
    /// RDTSC.
    Rdtsc = 16, "rdtsc";
    /// RSM in SMM.
    Rsm = 17, "rsm";
    /// VMCALL.
    Vmcall = 18, "vmcall";
    /// VMCLEAR.
    Vmclear = 19, "vmclear";
    /// VMLAUNCH.
    Vmlaunch = 20, "vmlaunch";
    /// VMPTRLD.
    Vmptrld = 21, "vmptrld";
    /// VMPTRST.
    Vmptrst = 22, "vmptrst";
    /// VMREAD.
    Vmread = 23, "vmread";
    /// VMRESUME.
    Vmresume = 24, "vmresume";
    /// VMWRITE.
    Vmwrite = 25, "vmwrite";
    /// VMXOFF.
    Vmxoff = 26, "vmxoff";
    /// VMXON.
    Vmxon = 27, "vmxon";
    /// MOV to/from a control register, CLTS or LMSW.
    ControlRegisterAccess = 28, "control_register_access";
    /// MOV to/from a debug register.
    MovDr = 29, "mov_dr";
    /// IN, INS, OUT or OUTS.
    IoInstruction = 30, "io_instruction";
    /// RDMSR.
    Rdmsr = 31, "rdmsr";
    /// WRMSR.
    Wrmsr = 32, "wrmsr";
    /// VM entry failed on the guest-state checks.
    EntryFailureGuestState = 33, "vm_entry_failure_invalid_guest_state";
    /// VM entry failed while loading MSRs.
    EntryFailureMsrLoading = 34, "vm_entry_failure_msr_loading";
    /// MWAIT.
    Mwait = 36, "mwait";
    /// Monitor trap flag.
    MonitorTrapFlag = 37, "monitor_trap_flag";
    /// MONITOR.
    Monitor = 39, "monitor";
    /// PAUSE, or a PAUSE loop.
    Pause = 40, "pause";
    /// VM entry failed on a machine-check event.
    EntryFailureMachineCheck = 41, "vm_entry_failure_machine_check";
    /// The TPR dropped below the TPR threshold.
    TprBelowThreshold = 43, "tpr_below_threshold";
    /// Access to the APIC-access page.
    ApicAccess = 44, "apic_access";
    /// EOI virtualization for a vector in the EOI-exit bitmap.
    VirtualizedEoi = 45, "virtualized_eoi";
    /// LGDT, LIDT, SGDT or SIDT.
    GdtrIdtrAccess = 46, "gdtr_idtr_access";
    /// LLDT, LTR, SLDT or STR.
    LdtrTrAccess = 47, "ldtr_tr_access";
    /// EPT violation.
    EptViolation = 48, "ept_violation";
    /// EPT misconfiguration.
    EptMisconfiguration = 49, "ept_misconfiguration";
    /// INVEPT.
    Invept = 50, "invept";
    /// RDTSCP.
    Rdtscp = 51, "rdtscp";
    /// The VMX-preemption timer counted down to zero.
    PreemptionTimer = 52, "vmx_preemption_timer_expired";
    /// INVVPID.
    Invvpid = 53, "invvpid";
    /// WBINVD or WBNOINVD.
    Wbinvd = 54, "wbinvd";
    /// XSETBV.
    Xsetbv = 55, "xsetbv";
    /// A write to a virtualized APIC register that needs the VMM.
    ApicWrite = 56, "apic_write";
    /// RDRAND.
    Rdrand = 57, "rdrand";
    /// INVPCID.
    Invpcid = 58, "invpcid";
    /// VMFUNC failed.
    Vmfunc = 59, "vmfunc";
    /// ENCLS.
    Encls = 60, "encls";
    /// RDSEED.
    Rdseed = 61, "rdseed";
    /// The page-modification log is full.
    PmlFull = 62, "page_modification_log_full";
    /// XSAVES.
    Xsaves = 63, "xsaves";
    /// XRSTORS.
    Xrstors = 64, "xrstors";
    /// PCONFIG.
    Pconfig = 65, "pconfig";
    /// SPP-related event.
    SppEvent = 66, "spp_related_event";
    /// UMWAIT.
    Umwait = 67, "umwait";
    /// TPAUSE.
    Tpause = 68, "tpause";
    /// LOADIWKEY.
    Loadiwkey = 69, "loadiwkey";
    /// ENCLV.
    Enclv = 70, "enclv";
    /// ENQCMD PASID translation failure.
    EnqcmdPasidFailure = 72, "enqcmd_pasid_translation_failure";
    /// ENQCMDS PASID translation failure.
    EnqcmdsPasidFailure = 73, "enqcmds_pasid_translation_failure";
    /// Bus lock.
    BusLock = 74, "bus_lock";
    /// Instruction timeout (notify window).
    InstructionTimeout = 75, "instruction_timeout";
    /// SEAMCALL.
    Seamcall = 76, "seamcall";
    /// TDCALL.
    Tdcall = 77, "tdcall";
    /// RDMSRLIST.
    Rdmsrlist = 78, "rdmsrlist";
    /// WRMSRLIST.
    Wrmsrlist = 79, "wrmsrlist";
    /// URDMSR.
    Urdmsr = 80, "urdmsr";
    /// UWRMSR.
    Uwrmsr = 81, "uwrmsr";
}

impl ExitReason {
    /// The basic exit-reason number.
    pub const fn basic(self) -> u16 {
        self as u16
    }

    /// The exits of the VMX instructions a hypervisor executes (VMCLEAR,
    /// VMLAUNCH, VMPTRLD, VMPTRST, VMREAD, VMRESUME, VMWRITE, VMXOFF,
    /// VMXON, INVEPT, INVVPID): unconditional in non-root operation (SDM
    /// 26.1.2), except VMREAD/VMWRITE under VMCS shadowing.
    pub const fn is_vmx_instruction(self) -> bool {
        matches!(
            self,
            ExitReason::Vmclear
                | ExitReason::Vmlaunch
                | ExitReason::Vmptrld
                | ExitReason::Vmptrst
                | ExitReason::Vmread
                | ExitReason::Vmresume
                | ExitReason::Vmwrite
                | ExitReason::Vmxoff
                | ExitReason::Vmxon
                | ExitReason::Invept
                | ExitReason::Invvpid
        )
    }

    /// Whether this reason is reported with bit 31 ("VM-entry failure") of
    /// the exit-reason field set.
    pub const fn is_entry_failure(self) -> bool {
        matches!(
            self,
            ExitReason::EntryFailureGuestState
                | ExitReason::EntryFailureMsrLoading
                | ExitReason::EntryFailureMachineCheck
        )
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The full 32-bit exit-reason field (SDM 25.9.1, table "Format of Exit
/// Reason"). Bit 16 is always 0, bits 26:17 and 30 are reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ExitReasonField {
    /// Basic exit reason, bits 15:0 (see [`ExitReason::from_basic`]).
    pub basic: u16,
    /// Bit 27: the exit was incident to enclave mode.
    pub enclave: bool,
    /// Bit 28: a pending MTF VM exit.
    pub pending_mtf: bool,
    /// Bit 29: the exit came from VMX root operation (SMM monitor).
    pub from_vmx_root: bool,
    /// Bit 31: VM-entry failure.
    pub entry_failure: bool,
}

impl ExitReasonField {
    /// Bit 27.
    pub const ENCLAVE: u32 = 1 << 27;
    /// Bit 28.
    pub const PENDING_MTF: u32 = 1 << 28;
    /// Bit 29.
    pub const FROM_VMX_ROOT: u32 = 1 << 29;
    /// Bit 31.
    pub const ENTRY_FAILURE: u32 = 1 << 31;

    /// The field for an ordinary exit, or for an entry failure when the
    /// reason is one of the entry-failure reasons.
    pub const fn new(reason: ExitReason) -> ExitReasonField {
        ExitReasonField {
            basic: reason.basic(),
            enclave: false,
            pending_mtf: false,
            from_vmx_root: false,
            entry_failure: reason.is_entry_failure(),
        }
    }

    /// The basic reason, if defined.
    pub const fn reason(self) -> Option<ExitReason> {
        ExitReason::from_basic(self.basic)
    }

    /// Decodes the field.
    pub const fn from_raw(raw: u32) -> ExitReasonField {
        ExitReasonField {
            basic: raw as u16,
            enclave: raw & Self::ENCLAVE != 0,
            pending_mtf: raw & Self::PENDING_MTF != 0,
            from_vmx_root: raw & Self::FROM_VMX_ROOT != 0,
            entry_failure: raw & Self::ENTRY_FAILURE != 0,
        }
    }

    /// Encodes the field.
    pub const fn to_raw(self) -> u32 {
        self.basic as u32
            | if self.enclave { Self::ENCLAVE } else { 0 }
            | if self.pending_mtf { Self::PENDING_MTF } else { 0 }
            | if self.from_vmx_root { Self::FROM_VMX_ROOT } else { 0 }
            | if self.entry_failure { Self::ENTRY_FAILURE } else { 0 }
    }
}

/// Exit qualification of a VM-entry failure on guest state (reason 33):
/// SDM 27.8 "VM-Entry Failures During or After Loading Guest State"
/// (26.8 in older editions).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u64)]
pub enum GuestStateQualification {
    /// No further detail (also used for invalid guest state proper).
    Default = 0,
    /// Loading the PDPTEs failed (reserved bits in a PAE PDPTE).
    PdpteLoading = 2,
    /// An NMI was injected while "blocking by NMI" was set.
    NmiInjection = 3,
    /// The VMCS link pointer is invalid.
    VmcsLinkPointer = 4,
}

/// Access type of a control-register exit (exit qualification bits 5:4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum CrAccessType {
    /// MOV to CR.
    MovToCr = 0,
    /// MOV from CR.
    MovFromCr = 1,
    /// CLTS.
    Clts = 2,
    /// LMSW.
    Lmsw = 3,
}

/// Exit qualification for control-register accesses (reason 28).
///
/// Layout: CR number in bits 3:0, access type in 5:4, LMSW operand type in
/// 6 (0 register, 1 memory), general-purpose register in 11:8 (MOV CR
/// only), LMSW source data in 31:16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CrAccess {
    /// Control register (0 for CLTS and LMSW).
    pub cr: u8,
    /// Access type.
    pub access: CrAccessType,
    /// LMSW with a memory operand.
    pub lmsw_memory: bool,
    /// Register operand of MOV CR (0 RAX ... 15 R15).
    pub gpr: u8,
    /// Source operand of LMSW.
    pub lmsw_source: u16,
}

impl CrAccess {
    /// Decodes the qualification.
    pub const fn from_raw(raw: u64) -> CrAccess {
        CrAccess {
            cr: (raw & 0xf) as u8,
            access: match (raw >> 4) & 3 {
                0 => CrAccessType::MovToCr,
                1 => CrAccessType::MovFromCr,
                2 => CrAccessType::Clts,
                _ => CrAccessType::Lmsw,
            },
            lmsw_memory: raw & (1 << 6) != 0,
            gpr: ((raw >> 8) & 0xf) as u8,
            lmsw_source: (raw >> 16) as u16,
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.cr as u64 & 0xf)
            | (self.access as u64) << 4
            | (self.lmsw_memory as u64) << 6
            | (self.gpr as u64 & 0xf) << 8
            | (self.lmsw_source as u64) << 16
    }
}

/// Exit qualification for MOV DR (reason 29).
///
/// Layout: debug register in bits 2:0, direction in 4 (0 MOV to DR, 1 MOV
/// from DR), general-purpose register in 11:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DrAccess {
    /// Debug register number.
    pub dr: u8,
    /// MOV from DR (a read) rather than MOV to DR.
    pub from_dr: bool,
    /// General-purpose register operand.
    pub gpr: u8,
}

impl DrAccess {
    /// Decodes the qualification.
    pub const fn from_raw(raw: u64) -> DrAccess {
        DrAccess { dr: (raw & 7) as u8, from_dr: raw & (1 << 4) != 0, gpr: ((raw >> 8) & 0xf) as u8 }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.dr as u64 & 7) | (self.from_dr as u64) << 4 | (self.gpr as u64 & 0xf) << 8
    }
}

/// Access size of an I/O instruction; the discriminant is the encoding in
/// exit-qualification bits 2:0.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IoSize {
    /// One byte.
    Byte = 0,
    /// Two bytes.
    Word = 1,
    /// Four bytes.
    Dword = 3,
}

impl IoSize {
    /// Size in bytes.
    pub const fn bytes(self) -> u8 {
        match self {
            IoSize::Byte => 1,
            IoSize::Word => 2,
            IoSize::Dword => 4,
        }
    }
}

/// Exit qualification for I/O instructions (reason 30).
///
/// Layout: size of access in bits 2:0 (0 one byte, 1 two, 3 four), direction
/// in 3 (1 IN), string instruction in 4, REP prefix in 5, operand encoding
/// in 6 (0 DX, 1 immediate), port in 31:16.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct IoAccess {
    /// Access size.
    pub size: IoSize,
    /// IN/INS rather than OUT/OUTS.
    pub is_in: bool,
    /// INS or OUTS.
    pub string: bool,
    /// REP prefix.
    pub rep: bool,
    /// The port came from an immediate operand, not DX.
    pub immediate: bool,
    /// Port number.
    pub port: u16,
}

impl IoAccess {
    /// Decodes the qualification; `None` for the undefined size encodings
    /// 2 and 4-7.
    pub const fn from_raw(raw: u64) -> Option<IoAccess> {
        let size = match raw & 7 {
            0 => IoSize::Byte,
            1 => IoSize::Word,
            3 => IoSize::Dword,
            _ => return None,
        };
        Some(IoAccess {
            size,
            is_in: raw & (1 << 3) != 0,
            string: raw & (1 << 4) != 0,
            rep: raw & (1 << 5) != 0,
            immediate: raw & (1 << 6) != 0,
            port: (raw >> 16) as u16,
        })
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.size as u64)
            | (self.is_in as u64) << 3
            | (self.string as u64) << 4
            | (self.rep as u64) << 5
            | (self.immediate as u64) << 6
            | (self.port as u64) << 16
    }
}

bitflags::bitflags! {
    /// Exit qualification for EPT violations (reason 48), SDM 28.2.1 table
    /// "Exit Qualification for EPT Violations".
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptViolation: u64 {
        /// The access was a data read.
        const READ = 1 << 0;
        /// The access was a data write.
        const WRITE = 1 << 1;
        /// The access was an instruction fetch.
        const FETCH = 1 << 2;
        /// The guest-physical address was readable (AND of bit 0 over the
        /// EPT entries walked).
        const READABLE = 1 << 3;
        /// The guest-physical address was writable.
        const WRITABLE = 1 << 4;
        /// The guest-physical address was executable (supervisor-mode
        /// execute with mode-based execute control).
        const EXECUTABLE = 1 << 5;
        /// The guest-physical address was user-mode executable.
        const USER_EXECUTABLE = 1 << 6;
        /// The guest-linear-address field is valid.
        const LINEAR_ADDRESS_VALID = 1 << 7;
        /// With bit 7: the access was to the translated address, not to a
        /// guest paging-structure entry.
        const TRANSLATED_ACCESS = 1 << 8;
        /// Advanced information: the linear address was user-mode.
        const USER_MODE_LINEAR = 1 << 9;
        /// Advanced information: the page was read/write.
        const READ_WRITE_PAGE = 1 << 10;
        /// Advanced information: the page was execute-disable.
        const EXECUTE_DISABLE_PAGE = 1 << 11;
        /// NMI unblocking due to IRET.
        const NMI_UNBLOCKING = 1 << 12;
        /// The access was a shadow-stack access.
        const SHADOW_STACK = 1 << 13;
        /// Supervisor shadow-stack control applied.
        const SUPERVISOR_SHADOW_STACK = 1 << 14;
        /// Caused by guest-paging verification.
        const GUEST_PAGING_VERIFICATION = 1 << 15;
        /// The access was asynchronous to instruction execution.
        const ASYNCHRONOUS = 1 << 16;
    }
}

impl EptViolation {
    /// Decodes the qualification, dropping undefined bits.
    pub const fn from_raw(raw: u64) -> EptViolation {
        EptViolation::from_bits_truncate(raw)
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        self.bits()
    }
}

/// Source of a task switch (exit qualification bits 31:30).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum TaskSwitchSource {
    /// CALL instruction.
    Call = 0,
    /// IRET instruction.
    Iret = 1,
    /// JMP instruction.
    Jmp = 2,
    /// Task gate in the IDT.
    TaskGate = 3,
}

/// Exit qualification for task switches (reason 9).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TaskSwitch {
    /// Selector of the new task's TSS (bits 15:0).
    pub selector: u16,
    /// What started the switch (bits 31:30).
    pub source: TaskSwitchSource,
}

impl TaskSwitch {
    /// Decodes the qualification.
    pub const fn from_raw(raw: u64) -> TaskSwitch {
        TaskSwitch {
            selector: raw as u16,
            source: match (raw >> 30) & 3 {
                0 => TaskSwitchSource::Call,
                1 => TaskSwitchSource::Iret,
                2 => TaskSwitchSource::Jmp,
                _ => TaskSwitchSource::TaskGate,
            },
        }
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        self.selector as u64 | (self.source as u64) << 30
    }
}

/// Access type of an APIC-access exit (exit qualification bits 15:12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ApicAccessType {
    /// Linear access for a data read during instruction execution.
    LinearRead = 0,
    /// Linear access for a data write during instruction execution.
    LinearWrite = 1,
    /// Linear access for an instruction fetch.
    LinearFetch = 2,
    /// Linear access during event delivery.
    LinearEventDelivery = 3,
    /// Guest-physical access during event delivery.
    PhysicalEventDelivery = 10,
    /// Guest-physical access for an instruction fetch or during
    /// instruction execution.
    PhysicalInstruction = 15,
}

/// Exit qualification for APIC accesses (reason 44).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ApicAccess {
    /// Offset of the access within the APIC page (bits 11:0; linear
    /// accesses only).
    pub offset: u16,
    /// Access type (bits 15:12).
    pub access: ApicAccessType,
    /// The access was asynchronous to instruction execution (bit 16).
    pub asynchronous: bool,
}

impl ApicAccess {
    /// Decodes the qualification; `None` for undefined access types.
    pub const fn from_raw(raw: u64) -> Option<ApicAccess> {
        let access = match (raw >> 12) & 0xf {
            0 => ApicAccessType::LinearRead,
            1 => ApicAccessType::LinearWrite,
            2 => ApicAccessType::LinearFetch,
            3 => ApicAccessType::LinearEventDelivery,
            10 => ApicAccessType::PhysicalEventDelivery,
            15 => ApicAccessType::PhysicalInstruction,
            _ => return None,
        };
        Some(ApicAccess { offset: (raw & 0xfff) as u16, access, asynchronous: raw & (1 << 16) != 0 })
    }

    /// Encodes the qualification.
    pub const fn to_raw(self) -> u64 {
        (self.offset as u64 & 0xfff) | (self.access as u64) << 12 | (self.asynchronous as u64) << 16
    }
}

/// Address size of a memory operand (instruction-information bits 9:7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum AddressSize {
    /// 16-bit addressing.
    Bits16 = 0,
    /// 32-bit addressing.
    Bits32 = 1,
    /// 64-bit addressing.
    Bits64 = 2,
}

/// A memory operand as the VM-exit instruction-information formats describe
/// it (SDM 28.2.5): `segment:[base + index * 2^scaling + displacement]`,
/// the displacement being in the exit qualification.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MemoryOperand {
    /// Scaling of the index: 0 none, 1 by 2, 2 by 4, 3 by 8 (bits 1:0).
    pub scaling: u8,
    /// Address size (bits 9:7).
    pub address_size: AddressSize,
    /// Segment register, 0 ES ... 5 GS (bits 17:15).
    pub segment: u8,
    /// Index register (bits 21:18), `None` when bit 22 says invalid.
    pub index: Option<u8>,
    /// Base register (bits 26:23), `None` when bit 27 says invalid.
    pub base: Option<u8>,
}

impl MemoryOperand {
    const fn decode(raw: u32) -> Option<MemoryOperand> {
        let address_size = match (raw >> 7) & 7 {
            0 => AddressSize::Bits16,
            1 => AddressSize::Bits32,
            2 => AddressSize::Bits64,
            _ => return None,
        };
        let segment = ((raw >> 15) & 7) as u8;
        if segment > 5 {
            return None;
        }
        Some(MemoryOperand {
            scaling: (raw & 3) as u8,
            address_size,
            segment,
            index: if raw & (1 << 22) != 0 { None } else { Some(((raw >> 18) & 0xf) as u8) },
            base: if raw & (1 << 27) != 0 { None } else { Some(((raw >> 23) & 0xf) as u8) },
        })
    }

    const fn encode(self) -> u32 {
        (self.scaling as u32 & 3)
            | (self.address_size as u32) << 7
            | (self.segment as u32 & 7) << 15
            | match self.index {
                Some(r) => (r as u32 & 0xf) << 18,
                None => 1 << 22,
            }
            | match self.base {
                Some(r) => (r as u32 & 0xf) << 23,
                None => 1 << 27,
            }
    }
}

/// Register or memory operand of an instruction (bit 10 of the
/// instruction information: 1 register, 0 memory).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operand {
    /// A general-purpose register (reg1, bits 6:3).
    Register(u8),
    /// A memory operand.
    Memory(MemoryOperand),
}

/// VM-exit instruction information for the VMX instructions: VMCLEAR,
/// VMPTRLD, VMPTRST, VMXON, XSAVES and XRSTORS (memory operand only),
/// INVEPT, INVVPID and INVPCID (memory operand; `reg2` is the type
/// register), VMREAD and VMWRITE (register or memory operand; `reg2` holds
/// the field encoding). SDM 28.2.5, tables "Format of the VM-Exit
/// Instruction-Information Field as Used for VMCLEAR, VMPTRLD, VMPTRST,
/// VMXON, XRSTORS, and XSAVES", "... for INVEPT, INVPCID, and INVVPID" and
/// "... for VMREAD and VMWRITE".
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmxInstructionInfo {
    /// The operand (always memory except for VMREAD/VMWRITE).
    pub operand: Operand,
    /// Reg2, bits 31:28: the VMREAD/VMWRITE field-encoding register or
    /// the INVEPT/INVVPID/INVPCID type register; undefined (0) for the
    /// others.
    pub reg2: u8,
}

impl VmxInstructionInfo {
    /// Decodes the field; `None` for an undefined address size or segment
    /// in a memory operand.
    pub const fn from_raw(raw: u32) -> Option<VmxInstructionInfo> {
        let operand = if raw & (1 << 10) != 0 {
            Operand::Register(((raw >> 3) & 0xf) as u8)
        } else {
            match MemoryOperand::decode(raw) {
                Some(m) => Operand::Memory(m),
                None => return None,
            }
        };
        Some(VmxInstructionInfo { operand, reg2: (raw >> 28) as u8 })
    }

    /// Encodes the field.
    pub const fn to_raw(self) -> u32 {
        let op = match self.operand {
            Operand::Register(r) => (r as u32 & 0xf) << 3 | 1 << 10,
            Operand::Memory(m) => m.encode(),
        };
        op | (self.reg2 as u32 & 0xf) << 28
    }
}

/// Which descriptor-table instruction exited (bits 29:28).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum DescriptorTableInstruction {
    /// SGDT.
    Sgdt = 0,
    /// SIDT.
    Sidt = 1,
    /// LGDT.
    Lgdt = 2,
    /// LIDT.
    Lidt = 3,
}

/// VM-exit instruction information for LGDT, LIDT, SGDT and SIDT (SDM
/// 28.2.5, table "Format of the VM-Exit Instruction-Information Field as
/// Used for LIDT, LGDT, SIDT, or SGDT"). The operand is always in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DescriptorTableInfo {
    /// The memory operand.
    pub memory: MemoryOperand,
    /// 32-bit operand size (bit 11; 0 means 16-bit).
    pub operand_size_32: bool,
    /// The instruction (bits 29:28).
    pub instruction: DescriptorTableInstruction,
}

impl DescriptorTableInfo {
    /// Decodes the field; `None` for an undefined address size or segment.
    pub const fn from_raw(raw: u32) -> Option<DescriptorTableInfo> {
        let memory = match MemoryOperand::decode(raw) {
            Some(m) => m,
            None => return None,
        };
        Some(DescriptorTableInfo {
            memory,
            operand_size_32: raw & (1 << 11) != 0,
            instruction: match (raw >> 28) & 3 {
                0 => DescriptorTableInstruction::Sgdt,
                1 => DescriptorTableInstruction::Sidt,
                2 => DescriptorTableInstruction::Lgdt,
                _ => DescriptorTableInstruction::Lidt,
            },
        })
    }

    /// Encodes the field.
    pub const fn to_raw(self) -> u32 {
        self.memory.encode() | (self.operand_size_32 as u32) << 11 | (self.instruction as u32) << 28
    }
}

/// Which LDTR/TR instruction exited (bits 29:28).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum LdtrTrInstruction {
    /// SLDT.
    Sldt = 0,
    /// STR.
    Str = 1,
    /// LLDT.
    Lldt = 2,
    /// LTR.
    Ltr = 3,
}

/// VM-exit instruction information for LLDT, LTR, SLDT and STR (SDM 28.2.5,
/// table "Format of the VM-Exit Instruction-Information Field as Used for
/// LLDT, LTR, SLDT, and STR").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LdtrTrInfo {
    /// Register or memory operand.
    pub operand: Operand,
    /// The instruction (bits 29:28).
    pub instruction: LdtrTrInstruction,
}

impl LdtrTrInfo {
    /// Decodes the field; `None` for an undefined address size or segment.
    pub const fn from_raw(raw: u32) -> Option<LdtrTrInfo> {
        let operand = match VmxInstructionInfo::from_raw(raw & 0x0fff_ffff) {
            Some(i) => i.operand,
            None => return None,
        };
        Some(LdtrTrInfo {
            operand,
            instruction: match (raw >> 28) & 3 {
                0 => LdtrTrInstruction::Sldt,
                1 => LdtrTrInstruction::Str,
                2 => LdtrTrInstruction::Lldt,
                _ => LdtrTrInstruction::Ltr,
            },
        })
    }

    /// Encodes the field.
    pub const fn to_raw(self) -> u32 {
        VmxInstructionInfo { operand: self.operand, reg2: 0 }.to_raw() | (self.instruction as u32) << 28
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reasons_round_trip() {
        let mut n = 0;
        for basic in 0..=u16::MAX {
            if let Some(r) = ExitReason::from_basic(basic) {
                assert_eq!(r.basic(), basic);
                n += 1;
            }
        }
        assert_eq!(n, ExitReason::ALL.len());
        assert_eq!(n, 82 - 4);
        for undefined in [35, 38, 42, 71, 82] {
            assert_eq!(ExitReason::from_basic(undefined), None);
        }
        assert_eq!(ExitReason::from_basic(10), Some(ExitReason::Cpuid));
        assert_eq!(ExitReason::from_basic(48), Some(ExitReason::EptViolation));
        assert_eq!(ExitReason::from_basic(52), Some(ExitReason::PreemptionTimer));
        assert_eq!(ExitReason::Cpuid.name(), "cpuid");
        assert_eq!(ExitReason::ControlRegisterAccess.name(), "control_register_access");
        let mut names: std::vec::Vec<&str> = ExitReason::ALL.iter().map(|r| r.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ExitReason::ALL.len());
    }

    #[test]
    fn exit_reason_field_layout() {
        let f = ExitReasonField::new(ExitReason::EntryFailureGuestState);
        assert_eq!(f.to_raw(), 0x8000_0021);
        assert_eq!(ExitReasonField::from_raw(0x8000_0021), f);
        assert_eq!(ExitReasonField::new(ExitReason::Hlt).to_raw(), 12);
        let all =
            ExitReasonField { basic: 37, enclave: true, pending_mtf: true, from_vmx_root: true, entry_failure: false };
        assert_eq!(all.to_raw(), 0x3800_0025);
        assert_eq!(ExitReasonField::from_raw(all.to_raw()), all);
        assert_eq!(all.reason(), Some(ExitReason::MonitorTrapFlag));
    }

    #[test]
    fn cr_access_qualification() {
        // mov cr4, rbx
        let q = CrAccess { cr: 4, access: CrAccessType::MovToCr, lmsw_memory: false, gpr: 3, lmsw_source: 0 };
        assert_eq!(q.to_raw(), 0x304);
        // lmsw ax with ax = 0x0001
        let l = CrAccess { cr: 0, access: CrAccessType::Lmsw, lmsw_memory: false, gpr: 0, lmsw_source: 1 };
        assert_eq!(l.to_raw(), 0x1_0030);
        for q in [q, l] {
            assert_eq!(CrAccess::from_raw(q.to_raw()), q);
        }
        assert_eq!(CrAccess::from_raw(0x18).access, CrAccessType::MovFromCr);
        assert_eq!(CrAccess::from_raw(0x18).cr, 8);
    }

    #[test]
    fn dr_and_task_switch_qualifications() {
        let d = DrAccess { dr: 7, from_dr: true, gpr: 0 };
        assert_eq!(d.to_raw(), 0x17);
        assert_eq!(DrAccess::from_raw(0x17), d);
        let t = TaskSwitch { selector: 0x28, source: TaskSwitchSource::TaskGate };
        assert_eq!(t.to_raw(), 0xc000_0028);
        assert_eq!(TaskSwitch::from_raw(t.to_raw()), t);
    }

    #[test]
    fn io_qualification() {
        // out 0x80, al
        let out = IoAccess { size: IoSize::Byte, is_in: false, string: false, rep: false, immediate: true, port: 0x80 };
        assert_eq!(out.to_raw(), 0x80_0040);
        // rep insw (dx = 0x3f8)
        let ins = IoAccess { size: IoSize::Word, is_in: true, string: true, rep: true, immediate: false, port: 0x3f8 };
        assert_eq!(ins.to_raw(), 0x3f8_0039);
        // in eax, dx
        let ind =
            IoAccess { size: IoSize::Dword, is_in: true, string: false, rep: false, immediate: false, port: 0xcfc };
        for q in [out, ins, ind] {
            assert_eq!(IoAccess::from_raw(q.to_raw()), Some(q));
        }
        assert_eq!(IoAccess::from_raw(2), None);
        assert_eq!(ind.size.bytes(), 4);
    }

    #[test]
    fn ept_violation_qualification() {
        let q = EptViolation::WRITE
            | EptViolation::READABLE
            | EptViolation::LINEAR_ADDRESS_VALID
            | EptViolation::TRANSLATED_ACCESS;
        assert_eq!(q.to_raw(), 0x18a);
        assert_eq!(EptViolation::from_raw(0x18a | 1 << 40), q);
    }

    #[test]
    fn apic_access_qualification() {
        let a = ApicAccess { offset: 0xb0, access: ApicAccessType::LinearWrite, asynchronous: false };
        assert_eq!(a.to_raw(), 0x10b0);
        assert_eq!(ApicAccess::from_raw(0x10b0), Some(a));
        assert_eq!(ApicAccess::from_raw(0x4000), None);
    }

    #[test]
    fn vmx_instruction_info() {
        // vmwrite rax, rbx: reg1 = value source (rbx = 3), reg2 = field (rax = 0).
        let reg = VmxInstructionInfo { operand: Operand::Register(3), reg2: 0 };
        assert_eq!(reg.to_raw(), 0x418);
        assert_eq!(VmxInstructionInfo::from_raw(0x418), Some(reg));
        // vmptrld [rdi + rcx*8] with 64-bit addressing, DS.
        let mem =
            MemoryOperand { scaling: 3, address_size: AddressSize::Bits64, segment: 3, index: Some(1), base: Some(7) };
        let info = VmxInstructionInfo { operand: Operand::Memory(mem), reg2: 0 };
        assert_eq!(info.to_raw(), 0x0385_8103);
        assert_eq!(VmxInstructionInfo::from_raw(info.to_raw()), Some(info));
        // invept rdx, [rip + disp]: no base, no index, type in rdx.
        let rip = MemoryOperand { scaling: 0, address_size: AddressSize::Bits64, segment: 3, index: None, base: None };
        let inv = VmxInstructionInfo { operand: Operand::Memory(rip), reg2: 2 };
        assert_eq!(inv.to_raw(), 0x2841_8100);
        assert_eq!(VmxInstructionInfo::from_raw(inv.to_raw()), Some(inv));
        // Undefined address size 3, undefined segment 6.
        assert_eq!(VmxInstructionInfo::from_raw(3 << 7), None);
        assert_eq!(VmxInstructionInfo::from_raw(6 << 15), None);
    }

    #[test]
    fn descriptor_table_and_ldtr_tr_info() {
        let mem =
            MemoryOperand { scaling: 0, address_size: AddressSize::Bits32, segment: 2, index: None, base: Some(4) };
        let lidt =
            DescriptorTableInfo { memory: mem, operand_size_32: true, instruction: DescriptorTableInstruction::Lidt };
        assert_eq!(DescriptorTableInfo::from_raw(lidt.to_raw()), Some(lidt));
        assert_eq!(lidt.to_raw() >> 28, 3);
        let ltr = LdtrTrInfo { operand: Operand::Register(0), instruction: LdtrTrInstruction::Ltr };
        assert_eq!(ltr.to_raw(), 0x3000_0400);
        assert_eq!(LdtrTrInfo::from_raw(ltr.to_raw()), Some(ltr));
        let sldt = LdtrTrInfo { operand: Operand::Memory(mem), instruction: LdtrTrInstruction::Sldt };
        assert_eq!(LdtrTrInfo::from_raw(sldt.to_raw()), Some(sldt));
    }
}
