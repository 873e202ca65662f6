//! The VMX capability MSRs (Intel SDM vol. 3C, appendix A "VMX Capability
//! Reporting Facility").
//!
//! [`VmxCaps`] is what a VMX implementation tells software it supports:
//! the IA32_VMX_* MSRs 480H-492H, plus the physical-address width that
//! several VM-entry checks depend on. The CPU model reports it through
//! RDMSR and enforces it at VM entry; L0 offers a (possibly smaller) one to
//! a guest hypervisor through its CPU policy.
//!
//! # Control capabilities (A.3-A.5)
//!
//! Each control word has an MSR whose low 32 bits are the *allowed-0
//! settings* (a set bit means the control must be 1) and whose high 32 bits
//! are the *allowed-1 settings* (a clear bit means the control must be 0).
//! Here they are [`AllowedBits::must_be_one`] and
//! [`AllowedBits::may_be_one`].
//!
//! Some bits are "default1" (A.2): the first VMX processors required them
//! to be 1 and the original MSRs (481H-484H) keep reporting them so. When
//! IA32_VMX_BASIC bit 55 is set, the TRUE MSRs (48DH-490H) report the real
//! requirement, which may let software clear default1 bits that have a
//! defined meaning (CR3-load/store exiting, save/load debug controls).
//! Default1 bits without a meaning stay must-be-one in the TRUE MSRs too.
//!
//! The builder keeps one invariant: `must_be_one` ⊆ `may_be_one`, and every
//! default1 bit is allowed to be 1. [`VmxCaps::allowed`] gives the settings
//! VM entry enforces: the TRUE ones when bit 55 is set, the original ones
//! otherwise.

use bitflags::bitflags;
use x86::{Cr0, Cr4};

use crate::controls::{EntryCtls, ExitCtls, MemoryType, PinCtls, ProcCtls, ProcCtls2, ProcCtls3, VmFuncCtls};
use crate::field::VmcsField;

/// Indices of the VMX capability MSRs (SDM appendix A; vol. 4 "Model-Specific
/// Registers").
pub mod msr {
    /// IA32_VMX_BASIC.
    pub const IA32_VMX_BASIC: u32 = 0x480;
    /// IA32_VMX_PINBASED_CTLS.
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    /// IA32_VMX_PROCBASED_CTLS.
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    /// IA32_VMX_EXIT_CTLS.
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    /// IA32_VMX_ENTRY_CTLS.
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    /// IA32_VMX_MISC.
    pub const IA32_VMX_MISC: u32 = 0x485;
    /// IA32_VMX_CR0_FIXED0.
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    /// IA32_VMX_CR0_FIXED1.
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    /// IA32_VMX_CR4_FIXED0.
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    /// IA32_VMX_CR4_FIXED1.
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    /// IA32_VMX_VMCS_ENUM.
    pub const IA32_VMX_VMCS_ENUM: u32 = 0x48a;
    /// IA32_VMX_PROCBASED_CTLS2.
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
    /// IA32_VMX_EPT_VPID_CAP.
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
    /// IA32_VMX_TRUE_PINBASED_CTLS.
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    /// IA32_VMX_TRUE_PROCBASED_CTLS.
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    /// IA32_VMX_TRUE_EXIT_CTLS.
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    /// IA32_VMX_TRUE_ENTRY_CTLS.
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    /// IA32_VMX_VMFUNC.
    pub const IA32_VMX_VMFUNC: u32 = 0x491;
    /// IA32_VMX_PROCBASED_CTLS3.
    pub const IA32_VMX_PROCBASED_CTLS3: u32 = 0x492;
    /// First VMX capability MSR.
    pub const FIRST: u32 = IA32_VMX_BASIC;
    /// Last VMX capability MSR this model knows.
    pub const LAST: u32 = IA32_VMX_PROCBASED_CTLS3;
}

/// Default1 pin-based controls: bits 1, 2 and 4 (SDM A.3.1).
pub const PIN_DEFAULT1: u32 = 0x0000_0016;
/// Default1 primary processor-based controls: bits 1, 4-6, 8, 13-16 and 26
/// (SDM A.3.2).
pub const PROC_DEFAULT1: u32 = 0x0401_e172;
/// Default1 VM-exit controls: bits 0-8, 10, 11, 13, 14, 16 and 17 (SDM A.4).
pub const EXIT_DEFAULT1: u32 = 0x0003_6dff;
/// Default1 VM-entry controls: bits 0-8 and 12 (SDM A.5).
pub const ENTRY_DEFAULT1: u32 = 0x0000_11ff;

/// A control word with a capability MSR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControlWord {
    /// Pin-based VM-execution controls.
    Pin,
    /// Primary processor-based VM-execution controls.
    Proc,
    /// Secondary processor-based VM-execution controls.
    Proc2,
    /// Tertiary processor-based VM-execution controls (64-bit, allowed-1
    /// only).
    Proc3,
    /// Primary VM-exit controls.
    Exit,
    /// VM-entry controls.
    Entry,
}

impl ControlWord {
    /// Every control word, in the order of the VM-entry checks.
    pub const ALL: [ControlWord; 6] = [
        ControlWord::Pin,
        ControlWord::Proc,
        ControlWord::Proc2,
        ControlWord::Proc3,
        ControlWord::Exit,
        ControlWord::Entry,
    ];

    /// The VMCS field holding the word.
    pub const fn field(self) -> VmcsField {
        match self {
            ControlWord::Pin => VmcsField::PinBasedControls,
            ControlWord::Proc => VmcsField::PrimaryProcControls,
            ControlWord::Proc2 => VmcsField::SecondaryProcControls,
            ControlWord::Proc3 => VmcsField::TertiaryProcControls,
            ControlWord::Exit => VmcsField::ExitControls,
            ControlWord::Entry => VmcsField::EntryControls,
        }
    }

    /// The control word stored in a field, if any.
    pub const fn from_field(field: VmcsField) -> Option<ControlWord> {
        Some(match field {
            VmcsField::PinBasedControls => ControlWord::Pin,
            VmcsField::PrimaryProcControls => ControlWord::Proc,
            VmcsField::SecondaryProcControls => ControlWord::Proc2,
            VmcsField::TertiaryProcControls => ControlWord::Proc3,
            VmcsField::ExitControls => ControlWord::Exit,
            VmcsField::EntryControls => ControlWord::Entry,
            _ => return None,
        })
    }

    /// The original capability MSR.
    pub const fn msr(self) -> u32 {
        match self {
            ControlWord::Pin => msr::IA32_VMX_PINBASED_CTLS,
            ControlWord::Proc => msr::IA32_VMX_PROCBASED_CTLS,
            ControlWord::Proc2 => msr::IA32_VMX_PROCBASED_CTLS2,
            ControlWord::Proc3 => msr::IA32_VMX_PROCBASED_CTLS3,
            ControlWord::Exit => msr::IA32_VMX_EXIT_CTLS,
            ControlWord::Entry => msr::IA32_VMX_ENTRY_CTLS,
        }
    }

    /// The TRUE capability MSR, for the words that have one.
    pub const fn true_msr(self) -> Option<u32> {
        match self {
            ControlWord::Pin => Some(msr::IA32_VMX_TRUE_PINBASED_CTLS),
            ControlWord::Proc => Some(msr::IA32_VMX_TRUE_PROCBASED_CTLS),
            ControlWord::Exit => Some(msr::IA32_VMX_TRUE_EXIT_CTLS),
            ControlWord::Entry => Some(msr::IA32_VMX_TRUE_ENTRY_CTLS),
            ControlWord::Proc2 | ControlWord::Proc3 => None,
        }
    }

    /// The default1 class of the word (SDM A.2).
    pub const fn default1(self) -> u64 {
        (match self {
            ControlWord::Pin => PIN_DEFAULT1,
            ControlWord::Proc => PROC_DEFAULT1,
            ControlWord::Exit => EXIT_DEFAULT1,
            ControlWord::Entry => ENTRY_DEFAULT1,
            ControlWord::Proc2 | ControlWord::Proc3 => 0,
        }) as u64
    }

    /// Bits with a meaning defined by the SDM.
    pub const fn defined(self) -> u64 {
        match self {
            ControlWord::Pin => PinCtls::all().bits() as u64,
            ControlWord::Proc => ProcCtls::all().bits() as u64,
            ControlWord::Proc2 => ProcCtls2::all().bits() as u64,
            ControlWord::Proc3 => ProcCtls3::all().bits(),
            ControlWord::Exit => ExitCtls::all().bits() as u64,
            ControlWord::Entry => EntryCtls::all().bits() as u64,
        }
    }

    /// Mask of the word's width.
    pub const fn width_mask(self) -> u64 {
        match self {
            ControlWord::Proc3 => u64::MAX,
            _ => 0xffff_ffff,
        }
    }
}

/// Bits of a control word that violate its allowed settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BadBits {
    /// Bits that must be 1 but are 0 (allowed-0 settings violated).
    pub missing: u64,
    /// Bits that must be 0 but are 1 (allowed-1 settings violated).
    pub forbidden: u64,
}

impl BadBits {
    /// All offending bits.
    pub const fn all(self) -> u64 {
        self.missing | self.forbidden
    }
}

/// Allowed settings of one control word (or of CR0/CR4 through the fixed
/// MSRs).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct AllowedBits {
    /// Bits that must be 1 (the allowed-0 settings; FIXEDx0 for CRs).
    pub must_be_one: u64,
    /// Bits that may be 1 (the allowed-1 settings; FIXEDx1 for CRs).
    pub may_be_one: u64,
}

impl AllowedBits {
    /// Whether `value` respects the settings; the offending bits if not.
    pub const fn check(self, value: u64) -> Result<(), BadBits> {
        let bad = BadBits { missing: self.must_be_one & !value, forbidden: value & !self.may_be_one };
        if bad.all() == 0 {
            Ok(())
        } else {
            Err(bad)
        }
    }

    /// `value` with every must-be-1 bit set and every must-be-0 bit
    /// cleared: what a VMM does to its desired controls before VMWRITE.
    pub const fn adjust(self, value: u64) -> u64 {
        (value | self.must_be_one) & self.may_be_one
    }

    /// The MSR layout of a 32-bit control word: allowed-0 settings low,
    /// allowed-1 settings high.
    pub const fn to_msr(self) -> u64 {
        (self.may_be_one << 32) | (self.must_be_one & 0xffff_ffff)
    }

    /// Decodes the MSR layout of a 32-bit control word.
    pub const fn from_msr(value: u64) -> AllowedBits {
        AllowedBits { must_be_one: value & 0xffff_ffff, may_be_one: value >> 32 }
    }
}

/// IA32_VMX_BASIC (SDM A.1 "Basic VMX Information").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmxBasic {
    /// VMCS revision identifier, bits 30:0.
    pub revision_id: u32,
    /// Bytes to allocate for the VMXON region and any VMCS region, bits
    /// 44:32 (at most 4096).
    pub vmcs_size: u16,
    /// Bit 48: VMX structures' addresses are limited to 32 bits.
    pub addresses_32bit: bool,
    /// Bit 49: dual-monitor treatment of SMIs and SMM.
    pub dual_monitor: bool,
    /// Memory type for VMCS and structures it references, bits 53:50.
    pub memory_type: MemoryType,
    /// Bit 54: instruction information is reported for INS/OUTS exits.
    pub ins_outs_info: bool,
    /// Bit 55: the TRUE control MSRs exist and default1 controls may be 0.
    pub true_controls: bool,
    /// Bit 56: VM entry does not check the deliver-error-code bit against
    /// the vector for injected hardware exceptions.
    pub no_error_code_consistency: bool,
}

impl VmxBasic {
    /// Encodes the MSR.
    pub const fn to_raw(self) -> u64 {
        (self.revision_id & 0x7fff_ffff) as u64
            | ((self.vmcs_size as u64) & 0x1fff) << 32
            | (self.addresses_32bit as u64) << 48
            | (self.dual_monitor as u64) << 49
            | (self.memory_type as u64) << 50
            | (self.ins_outs_info as u64) << 54
            | (self.true_controls as u64) << 55
            | (self.no_error_code_consistency as u64) << 56
    }

    /// Decodes the MSR; `None` if the memory type is not UC or WB.
    pub const fn from_raw(raw: u64) -> Option<VmxBasic> {
        let memory_type = match MemoryType::from_bits(((raw >> 50) & 0xf) as u8) {
            Some(t @ (MemoryType::Uncacheable | MemoryType::WriteBack)) => t,
            _ => return None,
        };
        Some(VmxBasic {
            revision_id: (raw & 0x7fff_ffff) as u32,
            vmcs_size: ((raw >> 32) & 0x1fff) as u16,
            addresses_32bit: raw & (1 << 48) != 0,
            dual_monitor: raw & (1 << 49) != 0,
            memory_type,
            ins_outs_info: raw & (1 << 54) != 0,
            true_controls: raw & (1 << 55) != 0,
            no_error_code_consistency: raw & (1 << 56) != 0,
        })
    }
}

/// IA32_VMX_MISC (SDM A.6 "Miscellaneous Data").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmxMisc {
    /// Bits 4:0: the preemption timer counts down by one each time bit X
    /// of the TSC changes, X being this value.
    pub preemption_timer_rate: u8,
    /// Bit 5: VM exits store IA32_EFER.LMA into "IA-32e mode guest".
    pub store_lma: bool,
    /// Bit 6: the HLT activity state is supported.
    pub activity_hlt: bool,
    /// Bit 7: the shutdown activity state is supported.
    pub activity_shutdown: bool,
    /// Bit 8: the wait-for-SIPI activity state is supported.
    pub activity_wait_for_sipi: bool,
    /// Bit 14: Intel PT may be used in VMX operation.
    pub pt_in_vmx: bool,
    /// Bit 15: RDMSR can read IA32_SMBASE in SMM.
    pub rdmsr_smbase: bool,
    /// Bits 24:16: number of CR3-target values.
    pub cr3_targets: u16,
    /// Bits 27:25: N, the MSR lists hold at most 512 * (N + 1) entries.
    pub max_msr_list: u8,
    /// Bit 28: bit 2 of IA32_SMM_MONITOR_CTL can be set.
    pub smm_monitor_ctl_bit2: bool,
    /// Bit 29: VMWRITE may write any field, VM-exit information included.
    pub vmwrite_any_field: bool,
    /// Bit 30: software interrupts and exceptions may be injected with
    /// instruction length 0.
    pub zero_length_injection: bool,
    /// Bits 63:32: MSEG revision identifier.
    pub mseg_revision: u32,
}

impl VmxMisc {
    /// Encodes the MSR.
    pub const fn to_raw(self) -> u64 {
        (self.preemption_timer_rate as u64 & 0x1f)
            | (self.store_lma as u64) << 5
            | (self.activity_hlt as u64) << 6
            | (self.activity_shutdown as u64) << 7
            | (self.activity_wait_for_sipi as u64) << 8
            | (self.pt_in_vmx as u64) << 14
            | (self.rdmsr_smbase as u64) << 15
            | (self.cr3_targets as u64 & 0x1ff) << 16
            | (self.max_msr_list as u64 & 7) << 25
            | (self.smm_monitor_ctl_bit2 as u64) << 28
            | (self.vmwrite_any_field as u64) << 29
            | (self.zero_length_injection as u64) << 30
            | (self.mseg_revision as u64) << 32
    }

    /// Decodes the MSR.
    pub const fn from_raw(raw: u64) -> VmxMisc {
        VmxMisc {
            preemption_timer_rate: (raw & 0x1f) as u8,
            store_lma: raw & (1 << 5) != 0,
            activity_hlt: raw & (1 << 6) != 0,
            activity_shutdown: raw & (1 << 7) != 0,
            activity_wait_for_sipi: raw & (1 << 8) != 0,
            pt_in_vmx: raw & (1 << 14) != 0,
            rdmsr_smbase: raw & (1 << 15) != 0,
            cr3_targets: ((raw >> 16) & 0x1ff) as u16,
            max_msr_list: ((raw >> 25) & 7) as u8,
            smm_monitor_ctl_bit2: raw & (1 << 28) != 0,
            vmwrite_any_field: raw & (1 << 29) != 0,
            zero_length_injection: raw & (1 << 30) != 0,
            mseg_revision: (raw >> 32) as u32,
        }
    }

    /// Maximum number of entries in each MSR list.
    pub const fn max_msr_list_entries(self) -> u32 {
        512 * (self.max_msr_list as u32 + 1)
    }
}

bitflags! {
    /// IA32_VMX_EPT_VPID_CAP (SDM A.10 "VPID and EPT Capabilities").
    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
    pub struct EptVpidCap: u64 {
        /// EPT entries may be execute-only (bits 2:0 = 100b).
        const EXECUTE_ONLY = 1 << 0;
        /// 4-level EPT walks.
        const WALK_LENGTH_4 = 1 << 6;
        /// 5-level EPT walks.
        const WALK_LENGTH_5 = 1 << 7;
        /// The EPTP may name UC for the paging structures.
        const MEMORY_TYPE_UC = 1 << 8;
        /// The EPTP may name WB for the paging structures.
        const MEMORY_TYPE_WB = 1 << 14;
        /// 2 MiB EPT pages.
        const PAGES_2M = 1 << 16;
        /// 1 GiB EPT pages.
        const PAGES_1G = 1 << 17;
        /// INVEPT is supported.
        const INVEPT = 1 << 20;
        /// EPT accessed and dirty flags.
        const ACCESSED_DIRTY = 1 << 21;
        /// Advanced VM-exit information for EPT violations.
        const ADVANCED_EXIT_INFO = 1 << 22;
        /// Supervisor shadow-stack control.
        const SUPERVISOR_SHADOW_STACK = 1 << 23;
        /// Single-context INVEPT.
        const INVEPT_SINGLE_CONTEXT = 1 << 25;
        /// All-context INVEPT.
        const INVEPT_ALL_CONTEXT = 1 << 26;
        /// INVVPID is supported.
        const INVVPID = 1 << 32;
        /// Individual-address INVVPID.
        const INVVPID_INDIVIDUAL_ADDRESS = 1 << 40;
        /// Single-context INVVPID.
        const INVVPID_SINGLE_CONTEXT = 1 << 41;
        /// All-context INVVPID.
        const INVVPID_ALL_CONTEXT = 1 << 42;
        /// Single-context-retaining-globals INVVPID.
        const INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS = 1 << 43;
    }
}

/// Highest field index (encoding bits 9:1) among the fields this model
/// supports, as IA32_VMX_VMCS_ENUM reports it.
pub const fn max_field_index() -> u32 {
    let mut max = 0;
    let mut i = 0;
    while i < VmcsField::ALL.len() {
        let index = VmcsField::ALL[i].index();
        if index > max {
            max = index;
        }
        i += 1;
    }
    max
}

/// The VMX capabilities of one (virtual) processor. Build one with
/// [`VmxCaps::builder`], or start from [`VmxCaps::minimal`] or
/// [`VmxCaps::turtles`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct VmxCaps {
    basic: VmxBasic,
    pin: AllowedBits,
    proc: AllowedBits,
    proc2: AllowedBits,
    proc3: u64,
    exit: AllowedBits,
    entry: AllowedBits,
    misc: VmxMisc,
    cr0: AllowedBits,
    cr4: AllowedBits,
    vmcs_enum: u64,
    ept_vpid: EptVpidCap,
    vmfunc: VmFuncCtls,
    maxphyaddr: u8,
}

impl VmxCaps {
    /// A builder starting from nothing supported: revision 1, 4 KiB VMCS,
    /// write-back, no TRUE controls, only the default1 bits allowed, CR0
    /// and CR4 fixed as VMXON requires, a 40-bit physical address width.
    pub const fn builder() -> VmxCapsBuilder {
        VmxCapsBuilder {
            caps: VmxCaps {
                basic: VmxBasic {
                    revision_id: 1,
                    vmcs_size: 4096,
                    addresses_32bit: false,
                    dual_monitor: false,
                    memory_type: MemoryType::WriteBack,
                    ins_outs_info: false,
                    true_controls: false,
                    no_error_code_consistency: false,
                },
                pin: AllowedBits { must_be_one: 0, may_be_one: 0 },
                proc: AllowedBits { must_be_one: 0, may_be_one: 0 },
                proc2: AllowedBits { must_be_one: 0, may_be_one: 0 },
                proc3: 0,
                exit: AllowedBits { must_be_one: 0, may_be_one: 0 },
                entry: AllowedBits { must_be_one: 0, may_be_one: 0 },
                misc: VmxMisc::from_raw(4 << 16),
                cr0: AllowedBits {
                    must_be_one: Cr0::PE.bits() | Cr0::NE.bits() | Cr0::PG.bits(),
                    may_be_one: 0xffff_ffff,
                },
                cr4: AllowedBits { must_be_one: Cr4::VMXE.bits(), may_be_one: TURTLES_CR4 },
                vmcs_enum: 0,
                ept_vpid: EptVpidCap::empty(),
                vmfunc: VmFuncCtls::empty(),
                maxphyaddr: 40,
            },
        }
    }

    /// A builder starting from these capabilities, to tweak a preset.
    pub const fn to_builder(self) -> VmxCapsBuilder {
        VmxCapsBuilder { caps: self }
    }

    /// The least a VMX implementation offers: no TRUE controls (every
    /// default1 bit is forced), no secondary controls, no EPT, no VPID, no
    /// preemption timer; enough to run a 64-bit guest with I/O and MSR
    /// bitmaps.
    pub const fn minimal() -> VmxCaps {
        VmxCaps::builder()
            .pin(PinCtls::EXTERNAL_INTERRUPT_EXITING.union(PinCtls::NMI_EXITING), PinCtls::empty())
            .proc(
                ProcCtls::HLT_EXITING
                    .union(ProcCtls::USE_TSC_OFFSETTING)
                    .union(ProcCtls::UNCONDITIONAL_IO_EXITING)
                    .union(ProcCtls::USE_IO_BITMAPS)
                    .union(ProcCtls::USE_MSR_BITMAPS),
                ProcCtls::empty(),
            )
            .exit(ExitCtls::HOST_ADDRESS_SPACE_SIZE.union(ExitCtls::ACK_INTERRUPT_ON_EXIT), ExitCtls::empty())
            .entry(EntryCtls::IA32E_MODE_GUEST, EntryCtls::empty())
            .misc(VmxMisc {
                preemption_timer_rate: 0,
                store_lma: true,
                activity_hlt: true,
                activity_shutdown: false,
                activity_wait_for_sipi: false,
                pt_in_vmx: false,
                rdmsr_smbase: false,
                cr3_targets: 4,
                max_msr_list: 0,
                smm_monitor_ctl_bit2: false,
                vmwrite_any_field: false,
                zero_length_injection: false,
                mseg_revision: 0,
            })
            .build()
    }

    /// What Turtles' CPU implements: a modern set with TRUE controls, EPT
    /// (4-level, WB, 2 MiB and 1 GiB pages, A/D flags, execute-only), VPID,
    /// unrestricted guest, the preemption timer, TPR shadow and APIC-access
    /// virtualization, TSC offsetting and scaling, and EPTP switching.
    pub const fn turtles() -> VmxCaps {
        VmxCaps::builder()
            .true_controls(true)
            .ins_outs_info(true)
            .pin(
                PinCtls::EXTERNAL_INTERRUPT_EXITING
                    .union(PinCtls::NMI_EXITING)
                    .union(PinCtls::VIRTUAL_NMIS)
                    .union(PinCtls::PREEMPTION_TIMER),
                PinCtls::empty(),
            )
            .proc(
                ProcCtls::INTERRUPT_WINDOW_EXITING
                    .union(ProcCtls::USE_TSC_OFFSETTING)
                    .union(ProcCtls::HLT_EXITING)
                    .union(ProcCtls::INVLPG_EXITING)
                    .union(ProcCtls::MWAIT_EXITING)
                    .union(ProcCtls::RDPMC_EXITING)
                    .union(ProcCtls::RDTSC_EXITING)
                    .union(ProcCtls::CR3_LOAD_EXITING)
                    .union(ProcCtls::CR3_STORE_EXITING)
                    .union(ProcCtls::CR8_LOAD_EXITING)
                    .union(ProcCtls::CR8_STORE_EXITING)
                    .union(ProcCtls::USE_TPR_SHADOW)
                    .union(ProcCtls::NMI_WINDOW_EXITING)
                    .union(ProcCtls::MOV_DR_EXITING)
                    .union(ProcCtls::UNCONDITIONAL_IO_EXITING)
                    .union(ProcCtls::USE_IO_BITMAPS)
                    .union(ProcCtls::MONITOR_TRAP_FLAG)
                    .union(ProcCtls::USE_MSR_BITMAPS)
                    .union(ProcCtls::MONITOR_EXITING)
                    .union(ProcCtls::PAUSE_EXITING)
                    .union(ProcCtls::ACTIVATE_SECONDARY_CONTROLS),
                ProcCtls::empty(),
            )
            .proc2(
                ProcCtls2::VIRTUALIZE_APIC_ACCESSES
                    .union(ProcCtls2::ENABLE_EPT)
                    .union(ProcCtls2::DESCRIPTOR_TABLE_EXITING)
                    .union(ProcCtls2::ENABLE_RDTSCP)
                    .union(ProcCtls2::ENABLE_VPID)
                    .union(ProcCtls2::WBINVD_EXITING)
                    .union(ProcCtls2::UNRESTRICTED_GUEST)
                    .union(ProcCtls2::RDRAND_EXITING)
                    .union(ProcCtls2::ENABLE_INVPCID)
                    .union(ProcCtls2::ENABLE_VM_FUNCTIONS)
                    .union(ProcCtls2::RDSEED_EXITING)
                    .union(ProcCtls2::USE_TSC_SCALING),
            )
            .exit(
                ExitCtls::SAVE_DEBUG_CONTROLS
                    .union(ExitCtls::HOST_ADDRESS_SPACE_SIZE)
                    .union(ExitCtls::ACK_INTERRUPT_ON_EXIT)
                    .union(ExitCtls::SAVE_PAT)
                    .union(ExitCtls::LOAD_PAT)
                    .union(ExitCtls::SAVE_EFER)
                    .union(ExitCtls::LOAD_EFER)
                    .union(ExitCtls::SAVE_PREEMPTION_TIMER),
                ExitCtls::empty(),
            )
            .entry(
                EntryCtls::LOAD_DEBUG_CONTROLS
                    .union(EntryCtls::IA32E_MODE_GUEST)
                    .union(EntryCtls::LOAD_PAT)
                    .union(EntryCtls::LOAD_EFER),
                EntryCtls::empty(),
            )
            .misc(VmxMisc {
                preemption_timer_rate: 5,
                store_lma: true,
                activity_hlt: true,
                activity_shutdown: true,
                activity_wait_for_sipi: true,
                pt_in_vmx: false,
                rdmsr_smbase: false,
                cr3_targets: 4,
                max_msr_list: 0,
                smm_monitor_ctl_bit2: false,
                vmwrite_any_field: true,
                zero_length_injection: true,
                mseg_revision: 0,
            })
            .ept_vpid(
                EptVpidCap::EXECUTE_ONLY
                    .union(EptVpidCap::WALK_LENGTH_4)
                    .union(EptVpidCap::MEMORY_TYPE_WB)
                    .union(EptVpidCap::PAGES_2M)
                    .union(EptVpidCap::PAGES_1G)
                    .union(EptVpidCap::INVEPT)
                    .union(EptVpidCap::ACCESSED_DIRTY)
                    .union(EptVpidCap::INVEPT_SINGLE_CONTEXT)
                    .union(EptVpidCap::INVEPT_ALL_CONTEXT)
                    .union(EptVpidCap::INVVPID)
                    .union(EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS)
                    .union(EptVpidCap::INVVPID_SINGLE_CONTEXT)
                    .union(EptVpidCap::INVVPID_ALL_CONTEXT)
                    .union(EptVpidCap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS),
            )
            .vmfunc(VmFuncCtls::EPTP_SWITCHING)
            .build()
    }

    /// What Turtles' CPU reports to L0 in its IA32_VMX_* MSRs:
    /// [`VmxCaps::turtles`] plus VMCS shadowing (secondary control bit 14,
    /// SDM vol. 3C, 25.10 "VMCS Types: Ordinary and Shadow"), which L0
    /// uses to let L1 reach vmcs12 without exits and does not offer to L1
    /// (nested VMCS shadowing is not virtualized, so `turtles` stays what
    /// L1 is offered). IA32_VMX_MISC bit 29 ("VMWRITE to any field") is
    /// set, and a shadowed VMWRITE honours it.
    pub const fn processor() -> VmxCaps {
        let t = VmxCaps::turtles();
        let proc2 = ProcCtls2::from_bits_retain(t.allowed(ControlWord::Proc2).may_be_one as u32);
        t.to_builder().proc2(proc2.union(ProcCtls2::VMCS_SHADOWING)).build()
    }

    /// Rebuilds capabilities from MSR values, as a CPU policy file or a
    /// real processor reports them; `read` returns `None` for an MSR that
    /// does not exist. `None` when IA32_VMX_BASIC or one of the MSRs every
    /// VMX processor has (481H-48AH) is missing or malformed.
    pub fn from_msr_values(read: impl Fn(u32) -> Option<u64>, maxphyaddr: u8) -> Option<VmxCaps> {
        let basic = VmxBasic::from_raw(read(msr::IA32_VMX_BASIC)?)?;
        let ctl = |word: ControlWord| -> Option<AllowedBits> {
            let msr = match word.true_msr() {
                Some(t) if basic.true_controls => t,
                _ => word.msr(),
            };
            Some(AllowedBits::from_msr(read(msr)?))
        };
        let mut b = VmxCaps::builder();
        b.caps.basic = basic;
        b.caps.pin = ctl(ControlWord::Pin)?;
        b.caps.proc = ctl(ControlWord::Proc)?;
        b.caps.exit = ctl(ControlWord::Exit)?;
        b.caps.entry = ctl(ControlWord::Entry)?;
        b.caps.misc = VmxMisc::from_raw(read(msr::IA32_VMX_MISC)?);
        b.caps.cr0 =
            AllowedBits { must_be_one: read(msr::IA32_VMX_CR0_FIXED0)?, may_be_one: read(msr::IA32_VMX_CR0_FIXED1)? };
        b.caps.cr4 =
            AllowedBits { must_be_one: read(msr::IA32_VMX_CR4_FIXED0)?, may_be_one: read(msr::IA32_VMX_CR4_FIXED1)? };
        read(msr::IA32_VMX_VMCS_ENUM)?;
        b.caps.proc2 = read(msr::IA32_VMX_PROCBASED_CTLS2).map_or(AllowedBits::default(), AllowedBits::from_msr);
        b.caps.proc3 = read(msr::IA32_VMX_PROCBASED_CTLS3).unwrap_or(0);
        b.caps.ept_vpid = EptVpidCap::from_bits_retain(read(msr::IA32_VMX_EPT_VPID_CAP).unwrap_or(0));
        b.caps.vmfunc = VmFuncCtls::from_bits_retain(read(msr::IA32_VMX_VMFUNC).unwrap_or(0));
        b.caps.maxphyaddr = maxphyaddr;
        Some(b.build())
    }

    /// IA32_VMX_BASIC, decoded.
    pub const fn basic(&self) -> VmxBasic {
        self.basic
    }

    /// IA32_VMX_MISC, decoded.
    pub const fn misc(&self) -> VmxMisc {
        self.misc
    }

    /// IA32_VMX_EPT_VPID_CAP.
    pub const fn ept_vpid(&self) -> EptVpidCap {
        self.ept_vpid
    }

    /// IA32_VMX_VMFUNC: the VM functions that may be enabled.
    pub const fn vmfunc(&self) -> VmFuncCtls {
        self.vmfunc
    }

    /// Physical-address width (MAXPHYADDR) that VMX address checks use:
    /// 32 when IA32_VMX_BASIC bit 48 is set.
    pub const fn phys_addr_width(&self) -> u8 {
        if self.basic.addresses_32bit {
            32
        } else {
            self.maxphyaddr
        }
    }

    /// The VMCS revision identifier.
    pub const fn revision_id(&self) -> u32 {
        self.basic.revision_id
    }

    /// The settings VM entry enforces for a control word: from the TRUE
    /// MSR when IA32_VMX_BASIC bit 55 is set, from the original MSR
    /// otherwise.
    pub const fn allowed(&self, word: ControlWord) -> AllowedBits {
        match word {
            ControlWord::Pin => self.pin,
            ControlWord::Proc => self.proc,
            ControlWord::Proc2 => self.proc2,
            ControlWord::Proc3 => AllowedBits { must_be_one: 0, may_be_one: self.proc3 },
            ControlWord::Exit => self.exit,
            ControlWord::Entry => self.entry,
        }
    }

    /// Whether a control may be set to 1 (the allowed-1 setting).
    pub const fn supports(&self, word: ControlWord, bits: u64) -> bool {
        self.allowed(word).may_be_one & bits == bits
    }

    /// Whether `value` respects the allowed-0 and allowed-1 settings of the
    /// control word stored in `field`. A field that holds no control word
    /// has no settings to violate.
    pub const fn check_ctls(&self, field: VmcsField, value: u64) -> Result<(), BadBits> {
        match ControlWord::from_field(field) {
            Some(word) => self.allowed(word).check(value & word.width_mask()),
            None => Ok(()),
        }
    }

    /// `value` adjusted to the settings of `word` (must-be-1 bits set,
    /// must-be-0 bits cleared).
    pub const fn adjust(&self, word: ControlWord, value: u64) -> u64 {
        self.allowed(word).adjust(value)
    }

    /// CR0 fixed bits (IA32_VMX_CR0_FIXED0/1).
    pub const fn cr0_fixed(&self) -> AllowedBits {
        self.cr0
    }

    /// CR4 fixed bits (IA32_VMX_CR4_FIXED0/1).
    pub const fn cr4_fixed(&self) -> AllowedBits {
        self.cr4
    }

    /// Whether `cr0` respects the CR0 fixed bits. With `unrestricted_guest`
    /// (a guest CR0 under "unrestricted guest"), PE and PG may be 0.
    pub const fn check_cr0(&self, cr0: u64, unrestricted_guest: bool) -> Result<(), BadBits> {
        let mut fixed = self.cr0;
        if unrestricted_guest {
            fixed.must_be_one &= !(Cr0::PE.bits() | Cr0::PG.bits());
        }
        fixed.check(cr0)
    }

    /// Whether `cr4` respects the CR4 fixed bits.
    pub const fn check_cr4(&self, cr4: u64) -> Result<(), BadBits> {
        self.cr4.check(cr4)
    }

    /// The value RDMSR of a VMX capability MSR returns; `None` when the
    /// MSR does not exist on this implementation (RDMSR then raises #GP):
    /// PROCBASED_CTLS2 needs the secondary controls, EPT_VPID_CAP needs EPT
    /// or VPID, the TRUE MSRs need IA32_VMX_BASIC bit 55, VMFUNC needs VM
    /// functions, PROCBASED_CTLS3 needs the tertiary controls.
    pub const fn msr_value(&self, index: u32) -> Option<u64> {
        let secondary = self.supports(ControlWord::Proc, ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits() as u64);
        let true_ctls = self.basic.true_controls;
        Some(match index {
            msr::IA32_VMX_BASIC => self.basic.to_raw(),
            msr::IA32_VMX_PINBASED_CTLS => original(ControlWord::Pin, self.pin),
            msr::IA32_VMX_PROCBASED_CTLS => original(ControlWord::Proc, self.proc),
            msr::IA32_VMX_EXIT_CTLS => original(ControlWord::Exit, self.exit),
            msr::IA32_VMX_ENTRY_CTLS => original(ControlWord::Entry, self.entry),
            msr::IA32_VMX_MISC => self.misc.to_raw(),
            msr::IA32_VMX_CR0_FIXED0 => self.cr0.must_be_one,
            msr::IA32_VMX_CR0_FIXED1 => self.cr0.may_be_one,
            msr::IA32_VMX_CR4_FIXED0 => self.cr4.must_be_one,
            msr::IA32_VMX_CR4_FIXED1 => self.cr4.may_be_one,
            msr::IA32_VMX_VMCS_ENUM => self.vmcs_enum,
            msr::IA32_VMX_PROCBASED_CTLS2 if secondary => self.proc2.to_msr(),
            msr::IA32_VMX_EPT_VPID_CAP
                if secondary
                    && self.proc2.may_be_one
                        & (ProcCtls2::ENABLE_EPT.bits() | ProcCtls2::ENABLE_VPID.bits()) as u64
                        != 0 =>
            {
                self.ept_vpid.bits()
            }
            msr::IA32_VMX_TRUE_PINBASED_CTLS if true_ctls => self.pin.to_msr(),
            msr::IA32_VMX_TRUE_PROCBASED_CTLS if true_ctls => self.proc.to_msr(),
            msr::IA32_VMX_TRUE_EXIT_CTLS if true_ctls => self.exit.to_msr(),
            msr::IA32_VMX_TRUE_ENTRY_CTLS if true_ctls => self.entry.to_msr(),
            msr::IA32_VMX_VMFUNC
                if secondary && self.proc2.may_be_one & ProcCtls2::ENABLE_VM_FUNCTIONS.bits() as u64 != 0 =>
            {
                self.vmfunc.bits()
            }
            msr::IA32_VMX_PROCBASED_CTLS3
                if self.supports(ControlWord::Proc, ProcCtls::ACTIVATE_TERTIARY_CONTROLS.bits() as u64) =>
            {
                self.proc3
            }
            _ => return None,
        })
    }
}

/// CR4 bits Turtles' CPU can set (CR4_FIXED1 of [`VmxCaps::turtles`]); a
/// CPU policy narrows it to what its CPUID leaves advertise.
const TURTLES_CR4: u64 = Cr4::VME
    .union(Cr4::PVI)
    .union(Cr4::TSD)
    .union(Cr4::DE)
    .union(Cr4::PSE)
    .union(Cr4::PAE)
    .union(Cr4::MCE)
    .union(Cr4::PGE)
    .union(Cr4::PCE)
    .union(Cr4::OSFXSR)
    .union(Cr4::OSXMMEXCPT)
    .union(Cr4::UMIP)
    .union(Cr4::VMXE)
    .union(Cr4::FSGSBASE)
    .union(Cr4::PCIDE)
    .union(Cr4::OSXSAVE)
    .union(Cr4::SMEP)
    .union(Cr4::SMAP)
    .union(Cr4::LA57)
    .union(Cr4::PKE)
    .bits();

/// Builds a [`VmxCaps`]; see [`VmxCaps::builder`]. Control words are given
/// as `supported` (may be 1) and `required` (must be 1 even with TRUE
/// controls); [`VmxCapsBuilder::build`] adds the default1 classes.
#[derive(Clone, Copy, Debug)]
pub struct VmxCapsBuilder {
    caps: VmxCaps,
}

impl VmxCapsBuilder {
    /// VMCS revision identifier (bits 30:0 of IA32_VMX_BASIC).
    pub const fn revision_id(mut self, id: u32) -> Self {
        self.caps.basic.revision_id = id & 0x7fff_ffff;
        self
    }

    /// VMCS region size in bytes (at most 4096).
    pub const fn vmcs_size(mut self, bytes: u16) -> Self {
        self.caps.basic.vmcs_size = bytes;
        self
    }

    /// Memory type of VMX structures (UC or WB).
    pub const fn vmcs_memory_type(mut self, memory_type: MemoryType) -> Self {
        self.caps.basic.memory_type = memory_type;
        self
    }

    /// Report instruction information on INS/OUTS exits (BASIC bit 54).
    pub const fn ins_outs_info(mut self, on: bool) -> Self {
        self.caps.basic.ins_outs_info = on;
        self
    }

    /// Offer the TRUE control MSRs (BASIC bit 55).
    pub const fn true_controls(mut self, on: bool) -> Self {
        self.caps.basic.true_controls = on;
        self
    }

    /// Skip the deliver-error-code consistency check on injected hardware
    /// exceptions (BASIC bit 56).
    pub const fn no_error_code_consistency(mut self, on: bool) -> Self {
        self.caps.basic.no_error_code_consistency = on;
        self
    }

    /// Limit VMX structure addresses to 32 bits (BASIC bit 48).
    pub const fn addresses_32bit(mut self, on: bool) -> Self {
        self.caps.basic.addresses_32bit = on;
        self
    }

    /// Pin-based controls.
    pub const fn pin(mut self, supported: PinCtls, required: PinCtls) -> Self {
        self.caps.pin = AllowedBits { must_be_one: required.bits() as u64, may_be_one: supported.bits() as u64 };
        self
    }

    /// Primary processor-based controls.
    pub const fn proc(mut self, supported: ProcCtls, required: ProcCtls) -> Self {
        self.caps.proc = AllowedBits { must_be_one: required.bits() as u64, may_be_one: supported.bits() as u64 };
        self
    }

    /// Secondary processor-based controls (none must be 1). Offering any
    /// also offers "activate secondary controls".
    pub const fn proc2(mut self, supported: ProcCtls2) -> Self {
        self.caps.proc2 = AllowedBits { must_be_one: 0, may_be_one: supported.bits() as u64 };
        self
    }

    /// Tertiary processor-based controls. Offering any also offers
    /// "activate tertiary controls".
    pub const fn proc3(mut self, supported: ProcCtls3) -> Self {
        self.caps.proc3 = supported.bits();
        self
    }

    /// VM-exit controls.
    pub const fn exit(mut self, supported: ExitCtls, required: ExitCtls) -> Self {
        self.caps.exit = AllowedBits { must_be_one: required.bits() as u64, may_be_one: supported.bits() as u64 };
        self
    }

    /// VM-entry controls.
    pub const fn entry(mut self, supported: EntryCtls, required: EntryCtls) -> Self {
        self.caps.entry = AllowedBits { must_be_one: required.bits() as u64, may_be_one: supported.bits() as u64 };
        self
    }

    /// IA32_VMX_MISC.
    pub const fn misc(mut self, misc: VmxMisc) -> Self {
        self.caps.misc = misc;
        self
    }

    /// IA32_VMX_CR0_FIXED0 and FIXED1.
    pub const fn cr0_fixed(mut self, fixed0: u64, fixed1: u64) -> Self {
        self.caps.cr0 = AllowedBits { must_be_one: fixed0, may_be_one: fixed1 };
        self
    }

    /// IA32_VMX_CR4_FIXED0 and FIXED1.
    pub const fn cr4_fixed(mut self, fixed0: u64, fixed1: u64) -> Self {
        self.caps.cr4 = AllowedBits { must_be_one: fixed0, may_be_one: fixed1 };
        self
    }

    /// IA32_VMX_EPT_VPID_CAP.
    pub const fn ept_vpid(mut self, caps: EptVpidCap) -> Self {
        self.caps.ept_vpid = caps;
        self
    }

    /// IA32_VMX_VMFUNC. Offering any also offers "enable VM functions".
    pub const fn vmfunc(mut self, functions: VmFuncCtls) -> Self {
        self.caps.vmfunc = functions;
        self
    }

    /// Physical-address width (CPUID.80000008H:EAX bits 7:0).
    pub const fn maxphyaddr(mut self, bits: u8) -> Self {
        self.caps.maxphyaddr = bits;
        self
    }

    /// Normalizes and returns the capabilities: must-be-1 bits are allowed
    /// to be 1, default1 bits are allowed to be 1, default1 bits are
    /// must-be-1 without TRUE controls and, with them, when they have no
    /// defined meaning; activate-secondary/tertiary and enable-VM-functions
    /// follow from what the next level offers.
    pub const fn build(self) -> VmxCaps {
        let mut c = self.caps;
        if c.vmfunc.bits() != 0 {
            c.proc2.may_be_one |= ProcCtls2::ENABLE_VM_FUNCTIONS.bits() as u64;
        }
        if c.proc2.may_be_one != 0 {
            c.proc.may_be_one |= ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits() as u64;
        }
        if c.proc3 != 0 {
            c.proc.may_be_one |= ProcCtls::ACTIVATE_TERTIARY_CONTROLS.bits() as u64;
        }
        c.pin = normalize(c.pin, ControlWord::Pin, c.basic.true_controls);
        c.proc = normalize(c.proc, ControlWord::Proc, c.basic.true_controls);
        c.proc2 = normalize(c.proc2, ControlWord::Proc2, c.basic.true_controls);
        c.exit = normalize(c.exit, ControlWord::Exit, c.basic.true_controls);
        c.entry = normalize(c.entry, ControlWord::Entry, c.basic.true_controls);
        c.cr0.may_be_one |= c.cr0.must_be_one;
        c.cr4.may_be_one |= c.cr4.must_be_one;
        c.vmcs_enum = (max_field_index() as u64) << 1;
        c
    }
}

/// The original (non-TRUE) MSR of a control word: default1 bits always
/// read as must-be-one there.
const fn original(word: ControlWord, bits: AllowedBits) -> u64 {
    AllowedBits { must_be_one: bits.must_be_one | word.default1(), may_be_one: bits.may_be_one }.to_msr()
}

const fn normalize(bits: AllowedBits, word: ControlWord, true_controls: bool) -> AllowedBits {
    let default1 = word.default1();
    let forced = if true_controls { default1 & !word.defined() } else { default1 };
    let must_be_one = (bits.must_be_one | forced) & word.width_mask();
    AllowedBits { must_be_one, may_be_one: (bits.may_be_one | must_be_one | default1) & word.width_mask() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default1_classes() {
        let bits = |list: &[u32]| list.iter().fold(0u32, |a, b| a | 1 << b);
        assert_eq!(PIN_DEFAULT1, bits(&[1, 2, 4]));
        assert_eq!(PROC_DEFAULT1, bits(&[1, 4, 5, 6, 8, 13, 14, 15, 16, 26]));
        assert_eq!(EXIT_DEFAULT1, bits(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 14, 16, 17]));
        assert_eq!(ENTRY_DEFAULT1, bits(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 12]));
        // The only default1 bits with a defined meaning.
        assert_eq!(PIN_DEFAULT1 & PinCtls::all().bits(), 0);
        assert_eq!(
            PROC_DEFAULT1 & ProcCtls::all().bits(),
            (ProcCtls::CR3_LOAD_EXITING | ProcCtls::CR3_STORE_EXITING).bits()
        );
        assert_eq!(EXIT_DEFAULT1 & ExitCtls::all().bits(), ExitCtls::SAVE_DEBUG_CONTROLS.bits());
        assert_eq!(ENTRY_DEFAULT1 & EntryCtls::all().bits(), EntryCtls::LOAD_DEBUG_CONTROLS.bits());
    }

    #[test]
    fn the_processor_adds_vmcs_shadowing_to_what_l1_is_offered() {
        let cpu = VmxCaps::processor();
        let l1 = VmxCaps::turtles();
        let shadowing = u64::from(ProcCtls2::VMCS_SHADOWING.bits());
        // IA32_VMX_PROCBASED_CTLS2 allowed-1 (bits 63:32) bit 14.
        let ctls2 = cpu.msr_value(msr::IA32_VMX_PROCBASED_CTLS2).unwrap();
        assert_ne!(ctls2 >> 32 & shadowing, 0);
        assert!(cpu.supports(ControlWord::Proc2, shadowing));
        assert!(!l1.supports(ControlWord::Proc2, shadowing));
        // IA32_VMX_MISC bit 29, "VMWRITE to any field".
        assert_ne!(cpu.msr_value(msr::IA32_VMX_MISC).unwrap() & 1 << 29, 0);
        // Nothing else differs.
        let proc2 = ProcCtls2::from_bits_retain(l1.allowed(ControlWord::Proc2).may_be_one as u32);
        assert_eq!(l1.to_builder().proc2(proc2 | ProcCtls2::VMCS_SHADOWING).build(), cpu);
    }

    #[test]
    fn turtles_msr_values() {
        let c = VmxCaps::turtles();
        let basic = c.msr_value(msr::IA32_VMX_BASIC).unwrap();
        assert_eq!(basic & 0x7fff_ffff, 1);
        assert_eq!((basic >> 32) & 0x1fff, 4096);
        assert_eq!((basic >> 50) & 0xf, 6);
        assert_ne!(basic & 1 << 54, 0);
        assert_ne!(basic & 1 << 55, 0);
        // Original pin MSR forces default1; the TRUE one does too, as none
        // of them has a meaning.
        let pin = c.msr_value(msr::IA32_VMX_PINBASED_CTLS).unwrap();
        assert_eq!(pin as u32, PIN_DEFAULT1);
        assert_eq!((pin >> 32) as u32, PIN_DEFAULT1 | 0x69);
        assert_eq!(c.msr_value(msr::IA32_VMX_TRUE_PINBASED_CTLS), Some(pin));
        // TRUE proc lets CR3 exiting be cleared; the original does not.
        let proc = c.msr_value(msr::IA32_VMX_PROCBASED_CTLS).unwrap();
        let true_proc = c.msr_value(msr::IA32_VMX_TRUE_PROCBASED_CTLS).unwrap();
        assert_eq!(proc as u32, PROC_DEFAULT1);
        assert_eq!(
            true_proc as u32,
            PROC_DEFAULT1 & !(ProcCtls::CR3_LOAD_EXITING | ProcCtls::CR3_STORE_EXITING).bits()
        );
        assert_eq!(proc >> 32, true_proc >> 32);
        let true_exit = c.msr_value(msr::IA32_VMX_TRUE_EXIT_CTLS).unwrap();
        assert_eq!(true_exit as u32, EXIT_DEFAULT1 & !ExitCtls::SAVE_DEBUG_CONTROLS.bits());
        let true_entry = c.msr_value(msr::IA32_VMX_TRUE_ENTRY_CTLS).unwrap();
        assert_eq!(true_entry as u32, ENTRY_DEFAULT1 & !EntryCtls::LOAD_DEBUG_CONTROLS.bits());
        // MISC: timer rate 5, HLT/shutdown/SIPI, 4 CR3 targets, 512 MSRs,
        // VMWRITE to exit information.
        let misc = c.msr_value(msr::IA32_VMX_MISC).unwrap();
        assert_eq!(misc & 0x1f, 5);
        assert_eq!(misc >> 6 & 7, 7);
        assert_eq!(misc >> 16 & 0x1ff, 4);
        assert_eq!(misc >> 25 & 7, 0);
        assert_eq!(c.misc().max_msr_list_entries(), 512);
        assert_ne!(misc & 1 << 29, 0);
        let ept = EptVpidCap::from_bits_retain(c.msr_value(msr::IA32_VMX_EPT_VPID_CAP).unwrap());
        assert!(ept.contains(EptVpidCap::WALK_LENGTH_4 | EptVpidCap::MEMORY_TYPE_WB | EptVpidCap::PAGES_1G));
        assert!(ept.contains(EptVpidCap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS));
        assert_eq!(c.msr_value(msr::IA32_VMX_VMFUNC), Some(1));
        assert_eq!(c.msr_value(msr::IA32_VMX_PROCBASED_CTLS3), None);
        assert_eq!(c.msr_value(msr::IA32_VMX_CR0_FIXED0), Some(0x8000_0021));
        assert_eq!(c.msr_value(msr::IA32_VMX_CR4_FIXED0), Some(0x2000));
        assert_eq!(c.msr_value(msr::IA32_VMX_VMCS_ENUM), Some((max_field_index() as u64) << 1));
        assert_eq!(c.msr_value(0x47f), None);
        assert_eq!(c.msr_value(0x493), None);
    }

    #[test]
    fn minimal_has_no_optional_msrs() {
        let c = VmxCaps::minimal();
        for index in [
            msr::IA32_VMX_PROCBASED_CTLS2,
            msr::IA32_VMX_EPT_VPID_CAP,
            msr::IA32_VMX_TRUE_PINBASED_CTLS,
            msr::IA32_VMX_TRUE_PROCBASED_CTLS,
            msr::IA32_VMX_TRUE_EXIT_CTLS,
            msr::IA32_VMX_TRUE_ENTRY_CTLS,
            msr::IA32_VMX_VMFUNC,
            msr::IA32_VMX_PROCBASED_CTLS3,
        ] {
            assert_eq!(c.msr_value(index), None, "{index:#x}");
        }
        for index in msr::IA32_VMX_BASIC..=msr::IA32_VMX_VMCS_ENUM {
            assert!(c.msr_value(index).is_some(), "{index:#x}");
        }
    }

    #[test]
    fn allowed0_bits_are_forced() {
        // Without TRUE controls every default1 bit must be 1 at VM entry.
        let c = VmxCaps::minimal();
        let f = VmcsField::PrimaryProcControls;
        let cr3_exiting = (ProcCtls::CR3_LOAD_EXITING | ProcCtls::CR3_STORE_EXITING).bits() as u64;
        let hlt = ProcCtls::HLT_EXITING.bits() as u64;
        let ok = PROC_DEFAULT1 as u64 | hlt;
        assert_eq!(c.check_ctls(f, ok), Ok(()));
        assert_eq!(c.check_ctls(f, ok & !cr3_exiting), Err(BadBits { missing: cr3_exiting, forbidden: 0 }));
        assert_eq!(c.check_ctls(f, hlt), Err(BadBits { missing: PROC_DEFAULT1 as u64, forbidden: 0 }));
        // A builder-required bit is forced too, even with TRUE controls.
        let c = VmxCaps::turtles().to_builder().pin(PinCtls::all(), PinCtls::EXTERNAL_INTERRUPT_EXITING).build();
        let pin = VmcsField::PinBasedControls;
        assert_eq!(
            c.check_ctls(pin, PIN_DEFAULT1 as u64),
            Err(BadBits { missing: PinCtls::EXTERNAL_INTERRUPT_EXITING.bits() as u64, forbidden: 0 })
        );
        assert_eq!(c.msr_value(msr::IA32_VMX_TRUE_PINBASED_CTLS).unwrap() as u32, PIN_DEFAULT1 | 1);
    }

    #[test]
    fn allowed1_bits_are_respected() {
        let c = VmxCaps::minimal();
        let f = VmcsField::PrimaryProcControls;
        let mtf = ProcCtls::MONITOR_TRAP_FLAG.bits() as u64;
        assert_eq!(c.check_ctls(f, PROC_DEFAULT1 as u64 | mtf), Err(BadBits { missing: 0, forbidden: mtf }));
        // A reserved bit that is not default1 may never be 1.
        assert_eq!(
            c.check_ctls(VmcsField::PinBasedControls, PIN_DEFAULT1 as u64 | 1 << 8),
            Err(BadBits { missing: 0, forbidden: 1 << 8 })
        );
        // Adjusting forces both ways.
        assert_eq!(c.adjust(ControlWord::Proc, mtf), PROC_DEFAULT1 as u64);
        // Secondary controls are not offered at all.
        assert!(!c.supports(ControlWord::Proc2, ProcCtls2::ENABLE_EPT.bits() as u64));
        assert!(c.check_ctls(VmcsField::SecondaryProcControls, ProcCtls2::ENABLE_EPT.bits() as u64).is_err());
        // Non-control fields have nothing to check.
        assert_eq!(c.check_ctls(VmcsField::GuestRip, u64::MAX), Ok(()));
    }

    #[test]
    fn true_controls_let_meaningful_default1_bits_be_cleared() {
        let with = VmxCaps::turtles();
        let without = with.to_builder().true_controls(false).build();
        let f = VmcsField::PrimaryProcControls;
        let value = PROC_DEFAULT1 as u64 & !(ProcCtls::CR3_LOAD_EXITING | ProcCtls::CR3_STORE_EXITING).bits() as u64;
        assert_eq!(with.check_ctls(f, value), Ok(()));
        assert!(without.check_ctls(f, value).is_err());
        // Reserved default1 bits stay forced with TRUE controls.
        let bit1 = 1 << 1;
        assert_eq!(with.check_ctls(f, value & !bit1), Err(BadBits { missing: bit1, forbidden: 0 }));
        // Entry: load debug controls may be cleared only with TRUE controls.
        let e = VmcsField::EntryControls;
        let entry = ENTRY_DEFAULT1 as u64 & !(EntryCtls::LOAD_DEBUG_CONTROLS.bits() as u64);
        assert_eq!(with.check_ctls(e, entry), Ok(()));
        assert!(without.check_ctls(e, entry).is_err());
        assert_eq!(without.msr_value(msr::IA32_VMX_TRUE_ENTRY_CTLS), None);
    }

    #[test]
    fn builder_links_activation_bits() {
        let c = VmxCaps::builder().vmfunc(VmFuncCtls::EPTP_SWITCHING).proc3(ProcCtls3::IPI_VIRTUALIZATION).build();
        assert!(c.supports(ControlWord::Proc2, ProcCtls2::ENABLE_VM_FUNCTIONS.bits() as u64));
        assert!(c.supports(ControlWord::Proc, ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits() as u64));
        assert!(c.supports(ControlWord::Proc, ProcCtls::ACTIVATE_TERTIARY_CONTROLS.bits() as u64));
        assert_eq!(c.msr_value(msr::IA32_VMX_PROCBASED_CTLS3), Some(ProcCtls3::IPI_VIRTUALIZATION.bits()));
        // No EPT and no VPID: no EPT_VPID_CAP.
        assert_eq!(c.msr_value(msr::IA32_VMX_EPT_VPID_CAP), None);
        // Must-be-one implies may-be-one.
        let c = VmxCaps::builder().exit(ExitCtls::empty(), ExitCtls::HOST_ADDRESS_SPACE_SIZE).build();
        assert!(c.supports(ControlWord::Exit, ExitCtls::HOST_ADDRESS_SPACE_SIZE.bits() as u64));
    }

    #[test]
    fn cr_fixed_checks() {
        let c = VmxCaps::turtles();
        let cr0 = (Cr0::PE | Cr0::NE | Cr0::PG | Cr0::ET).bits();
        assert_eq!(c.check_cr0(cr0, false), Ok(()));
        assert_eq!(c.check_cr0(Cr0::NE.bits(), false), Err(BadBits { missing: 0x8000_0001, forbidden: 0 }));
        assert_eq!(c.check_cr0(Cr0::NE.bits(), true), Ok(()));
        assert_eq!(c.check_cr0(cr0 | 1 << 32, false), Err(BadBits { missing: 0, forbidden: 1 << 32 }));
        let cr4 = (Cr4::PAE | Cr4::VMXE).bits();
        assert_eq!(c.check_cr4(cr4), Ok(()));
        assert_eq!(c.check_cr4(Cr4::PAE.bits()), Err(BadBits { missing: Cr4::VMXE.bits(), forbidden: 0 }));
        assert_eq!(c.check_cr4(cr4 | Cr4::CET.bits()), Err(BadBits { missing: 0, forbidden: Cr4::CET.bits() }));
    }

    #[test]
    fn msr_values_round_trip() {
        for caps in
            [VmxCaps::minimal(), VmxCaps::turtles(), VmxCaps::turtles().to_builder().true_controls(false).build()]
        {
            let back = VmxCaps::from_msr_values(|i| caps.msr_value(i), 40).unwrap();
            assert_eq!(back, caps);
        }
        assert_eq!(VmxCaps::from_msr_values(|_| None, 40), None);
    }

    #[test]
    fn basic_and_misc_round_trip() {
        let b = VmxCaps::turtles().basic();
        assert_eq!(VmxBasic::from_raw(b.to_raw()), Some(b));
        assert_eq!(VmxBasic::from_raw(b.to_raw() & !(0xf << 50) | 5 << 50), None);
        let m = VmxCaps::turtles().misc();
        assert_eq!(VmxMisc::from_raw(m.to_raw()), m);
    }

    #[test]
    fn vmcs_enum_covers_every_field() {
        let max = max_field_index();
        assert!(VmcsField::ALL.iter().all(|f| f.index() <= max));
        assert!(VmcsField::ALL.iter().any(|f| f.index() == max));
    }
}
