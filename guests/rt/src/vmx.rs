//! VMX for guest hypervisors: the instructions, VMCS field encodings,
//! capability MSRs, VMCS setup helpers and the VM-exit trampoline.
//!
//! Follows SDM Vol. 3C: chapter 24 "Introduction to Virtual Machine
//! Extensions" (enabling VMX operation, 24.7-24.8), chapter 25 "Virtual
//! Machine Control Structures" (regions, launch state, field encodings),
//! chapter 26 "VMX Non-Root Operation" / 27 "VM Entries" / 28 "VM Exits"
//! for the state the helpers write, chapter 31 "VMX Instruction Reference"
//! for results (31.2 "Conventions": CF = 1 is VMfailInvalid, ZF = 1 is
//! VMfailValid with the error number in the VM-instruction error field),
//! and appendix A "VMX Capability Reporting Facility" / appendix B "Field
//! Encoding in VMCS".
//!
//! Every instruction wrapper returns what the SDM defines and nothing more;
//! the #UD and #GP cases are raised as exceptions, which kernels catch with
//! [`crate::idt::catch`] or report with [`install_ud_reporter`].
//!
//! VM exits come back through [`enter`]: it writes HOST_RSP and HOST_RIP
//! itself (the classic pattern), loads the guest's general registers from a
//! [`GuestRegs`], executes VMLAUNCH or VMRESUME, and returns either the
//! VMfail or, after a VM exit (or a VM-entry failure that loads host state,
//! SDM 27.8), `Ok(())` with the guest's registers saved back.

use crate::arch::{self, rdmsr};
use crate::idt::{self, Frame};
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicBool, Ordering};

/// Why a VMX instruction failed (SDM Vol. 3C, 31.2 "Conventions").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VmFail {
    /// CF = 1: no current VMCS (or the failure precedes any VMCS use).
    Invalid,
    /// ZF = 1: the VM-instruction error number from the current VMCS.
    Valid(u32),
}

/// Result of a VMX instruction that returns nothing on success.
pub type VmResult = Result<(), VmFail>;

/// Turns the flags a VMX instruction left (captured with SETC/SETZ) into a
/// [`VmResult`], reading the VM-instruction error on VMfailValid.
fn result(cf: u8, zf: u8) -> VmResult {
    if cf != 0 {
        Err(VmFail::Invalid)
    } else if zf != 0 {
        Err(VmFail::Valid(instruction_error()))
    } else {
        Ok(())
    }
}

/// The VM-instruction error field of the current VMCS, or `u32::MAX` if it
/// cannot be read.
pub fn instruction_error() -> u32 {
    let (v, cf, zf): (u64, u8, u8);
    // SAFETY: VMREAD of a read-only field has no side effects; called only
    // after an instruction reported VMfailValid, so a current VMCS exists.
    unsafe {
        asm!("vmread {v}, {f}", "setc {cf}", "setz {zf}",
             v = out(reg) v, f = in(reg) field::VM_INSTRUCTION_ERROR, cf = out(reg_byte) cf, zf = out(reg_byte) zf,
             options(nostack))
    };
    if cf != 0 || zf != 0 { u32::MAX } else { v as u32 }
}

macro_rules! mem_operand_insn {
    ($(#[$doc:meta])* $name:ident, $insn:literal) => {
        $(#[$doc])*
        ///
        /// # Safety
        /// Changes VMX state; the region at `pa` must be owned by the caller.
        pub unsafe fn $name(pa: u64) -> VmResult {
            let (cf, zf): (u8, u8);
            // SAFETY: caller's contract; the operand is a 64-bit memory
            // location holding the physical address.
            unsafe {
                asm!(concat!($insn, " qword ptr [{p}]"), "setc {cf}", "setz {zf}",
                     p = in(reg) &pa, cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack))
            };
            result(cf, zf)
        }
    };
}

mem_operand_insn!(
    /// VMXON: enters VMX root operation with the VMXON region at `pa`.
    vmxon, "vmxon"
);
mem_operand_insn!(
    /// VMCLEAR: flushes the VMCS at `pa` to memory and sets its launch state
    /// to clear; if it was current, no VMCS is current afterwards.
    vmclear, "vmclear"
);
mem_operand_insn!(
    /// VMPTRLD: makes the VMCS at `pa` current (and active).
    vmptrld, "vmptrld"
);

/// VMXOFF: leaves VMX operation.
///
/// # Safety
/// VMX instructions raise #UD afterwards; CR4.VMXE may then be cleared.
pub unsafe fn vmxoff() -> VmResult {
    let (cf, zf): (u8, u8);
    // SAFETY: caller's contract.
    unsafe { asm!("vmxoff", "setc {cf}", "setz {zf}", cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack)) };
    result(cf, zf)
}

/// VMPTRST: the current-VMCS pointer (all ones when there is none).
pub fn vmptrst() -> u64 {
    let mut pa: u64 = 0;
    // SAFETY: VMPTRST stores 8 bytes into `pa`; it has no other effect.
    unsafe { asm!("vmptrst qword ptr [{p}]", p = in(reg) &mut pa, options(nostack, preserves_flags)) };
    pa
}

/// VMREAD of `field` from the current VMCS (register form).
pub fn vmread(field: u64) -> Result<u64, VmFail> {
    let (v, cf, zf): (u64, u8, u8);
    // SAFETY: VMREAD only reads the current VMCS into a register.
    unsafe {
        asm!("vmread {v}, {f}", "setc {cf}", "setz {zf}",
             v = out(reg) v, f = in(reg) field, cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack))
    };
    result(cf, zf).map(|()| v)
}

/// VMWRITE of `value` to `field` of the current VMCS (register form).
///
/// # Safety
/// Changes what the next VM entry loads.
pub unsafe fn vmwrite(field: u64, value: u64) -> VmResult {
    let (cf, zf): (u8, u8);
    // SAFETY: caller's contract.
    unsafe {
        asm!("vmwrite {f}, {v}", "setc {cf}", "setz {zf}",
             f = in(reg) field, v = in(reg) value, cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack))
    };
    result(cf, zf)
}

/// VMLAUNCH without the trampoline: returns only on VMfail; on success the
/// guest runs and its VM exit goes to whatever HOST_RIP/HOST_RSP hold.
///
/// # Safety
/// HOST_RIP and HOST_RSP must already lead to code that handles the exit.
pub unsafe fn vmlaunch() -> VmFail {
    let (cf, zf): (u8, u8);
    // SAFETY: caller's contract.
    unsafe { asm!("vmlaunch", "setc {cf}", "setz {zf}", cf = out(reg_byte) cf, zf = out(reg_byte) zf) };
    result(cf, zf).err().unwrap_or(VmFail::Invalid)
}

/// VMRESUME without the trampoline; see [`vmlaunch`].
///
/// # Safety
/// As [`vmlaunch`].
pub unsafe fn vmresume() -> VmFail {
    let (cf, zf): (u8, u8);
    // SAFETY: caller's contract.
    unsafe { asm!("vmresume", "setc {cf}", "setz {zf}", cf = out(reg_byte) cf, zf = out(reg_byte) zf) };
    result(cf, zf).err().unwrap_or(VmFail::Invalid)
}

/// INVEPT/INVVPID descriptor: 128 bits (SDM Vol. 3C, 31.3, INVEPT and
/// INVVPID "Description").
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub struct InvDescriptor(pub u64, pub u64);

/// INVEPT types (1 = single-context, 2 = all-context).
pub mod invept_type {
    /// Invalidate mappings of one EPTP.
    pub const SINGLE_CONTEXT: u64 = 1;
    /// Invalidate mappings of every EPTP.
    pub const ALL_CONTEXT: u64 = 2;
}

/// INVVPID types.
pub mod invvpid_type {
    /// One linear address of one VPID.
    pub const INDIVIDUAL_ADDRESS: u64 = 0;
    /// Every mapping of one VPID.
    pub const SINGLE_CONTEXT: u64 = 1;
    /// Every VPID but 0.
    pub const ALL_CONTEXT: u64 = 2;
    /// One VPID, global translations kept.
    pub const SINGLE_CONTEXT_RETAINING_GLOBALS: u64 = 3;
}

/// INVEPT of `typ` with descriptor `(eptp, 0)`.
///
/// # Safety
/// Drops EPT-derived translations (harmless, but a VMX instruction).
pub unsafe fn invept(typ: u64, eptp: u64) -> VmResult {
    let d = InvDescriptor(eptp, 0);
    let (cf, zf): (u8, u8);
    // SAFETY: caller's contract; the descriptor is a 16-byte memory operand.
    unsafe {
        asm!("invept {t}, xmmword ptr [{d}]", "setc {cf}", "setz {zf}",
             t = in(reg) typ, d = in(reg) &d, cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack))
    };
    result(cf, zf)
}

/// INVVPID of `typ` for `vpid` (and linear address `la` for type 0).
///
/// # Safety
/// As [`invept`].
pub unsafe fn invvpid(typ: u64, vpid: u16, la: u64) -> VmResult {
    let d = InvDescriptor(vpid as u64, la);
    let (cf, zf): (u8, u8);
    // SAFETY: caller's contract; the descriptor is a 16-byte memory operand.
    unsafe {
        asm!("invvpid {t}, xmmword ptr [{d}]", "setc {cf}", "setz {zf}",
             t = in(reg) typ, d = in(reg) &d, cf = out(reg_byte) cf, zf = out(reg_byte) zf, options(nostack))
    };
    result(cf, zf)
}

/// VMCS field encodings (SDM Vol. 3C, appendix B "Field Encoding in VMCS").
#[allow(missing_docs)]
pub mod field {
    // 16-bit control, guest-state and host-state fields (B.1).
    pub const VPID: u64 = 0x0000;
    pub const EPTP_INDEX: u64 = 0x0004;
    pub const GUEST_ES_SELECTOR: u64 = 0x0800;
    pub const GUEST_CS_SELECTOR: u64 = 0x0802;
    pub const GUEST_SS_SELECTOR: u64 = 0x0804;
    pub const GUEST_DS_SELECTOR: u64 = 0x0806;
    pub const GUEST_FS_SELECTOR: u64 = 0x0808;
    pub const GUEST_GS_SELECTOR: u64 = 0x080a;
    pub const GUEST_LDTR_SELECTOR: u64 = 0x080c;
    pub const GUEST_TR_SELECTOR: u64 = 0x080e;
    pub const HOST_ES_SELECTOR: u64 = 0x0c00;
    pub const HOST_CS_SELECTOR: u64 = 0x0c02;
    pub const HOST_SS_SELECTOR: u64 = 0x0c04;
    pub const HOST_DS_SELECTOR: u64 = 0x0c06;
    pub const HOST_FS_SELECTOR: u64 = 0x0c08;
    pub const HOST_GS_SELECTOR: u64 = 0x0c0a;
    pub const HOST_TR_SELECTOR: u64 = 0x0c0c;
    // 64-bit fields (B.2).
    pub const IO_BITMAP_A: u64 = 0x2000;
    pub const IO_BITMAP_B: u64 = 0x2002;
    pub const MSR_BITMAP: u64 = 0x2004;
    pub const VM_EXIT_MSR_STORE_ADDR: u64 = 0x2006;
    pub const VM_EXIT_MSR_LOAD_ADDR: u64 = 0x2008;
    pub const VM_ENTRY_MSR_LOAD_ADDR: u64 = 0x200a;
    pub const TSC_OFFSET: u64 = 0x2010;
    pub const VM_FUNCTION_CONTROLS: u64 = 0x2018;
    pub const EPT_POINTER: u64 = 0x201a;
    pub const EPTP_LIST_ADDRESS: u64 = 0x2024;
    pub const GUEST_PHYSICAL_ADDRESS: u64 = 0x2400;
    pub const VMCS_LINK_POINTER: u64 = 0x2800;
    pub const GUEST_IA32_DEBUGCTL: u64 = 0x2802;
    pub const GUEST_IA32_PAT: u64 = 0x2804;
    pub const GUEST_IA32_EFER: u64 = 0x2806;
    pub const HOST_IA32_PAT: u64 = 0x2c00;
    pub const HOST_IA32_EFER: u64 = 0x2c02;
    // 32-bit fields (B.3).
    pub const PIN_BASED_CONTROLS: u64 = 0x4000;
    pub const PROC_BASED_CONTROLS: u64 = 0x4002;
    pub const EXCEPTION_BITMAP: u64 = 0x4004;
    pub const PAGE_FAULT_ERROR_CODE_MASK: u64 = 0x4006;
    pub const PAGE_FAULT_ERROR_CODE_MATCH: u64 = 0x4008;
    pub const CR3_TARGET_COUNT: u64 = 0x400a;
    pub const VM_EXIT_CONTROLS: u64 = 0x400c;
    pub const VM_EXIT_MSR_STORE_COUNT: u64 = 0x400e;
    pub const VM_EXIT_MSR_LOAD_COUNT: u64 = 0x4010;
    pub const VM_ENTRY_CONTROLS: u64 = 0x4012;
    pub const VM_ENTRY_MSR_LOAD_COUNT: u64 = 0x4014;
    pub const VM_ENTRY_INTERRUPTION_INFO: u64 = 0x4016;
    pub const VM_ENTRY_EXCEPTION_ERROR_CODE: u64 = 0x4018;
    pub const VM_ENTRY_INSTRUCTION_LENGTH: u64 = 0x401a;
    pub const TPR_THRESHOLD: u64 = 0x401c;
    pub const SECONDARY_PROC_BASED_CONTROLS: u64 = 0x401e;
    pub const VM_INSTRUCTION_ERROR: u64 = 0x4400;
    pub const EXIT_REASON: u64 = 0x4402;
    pub const VM_EXIT_INTERRUPTION_INFO: u64 = 0x4404;
    pub const VM_EXIT_INTERRUPTION_ERROR_CODE: u64 = 0x4406;
    pub const IDT_VECTORING_INFO: u64 = 0x4408;
    pub const IDT_VECTORING_ERROR_CODE: u64 = 0x440a;
    pub const VM_EXIT_INSTRUCTION_LENGTH: u64 = 0x440c;
    pub const VMX_INSTRUCTION_INFO: u64 = 0x440e;
    pub const GUEST_ES_LIMIT: u64 = 0x4800;
    pub const GUEST_CS_LIMIT: u64 = 0x4802;
    pub const GUEST_SS_LIMIT: u64 = 0x4804;
    pub const GUEST_DS_LIMIT: u64 = 0x4806;
    pub const GUEST_FS_LIMIT: u64 = 0x4808;
    pub const GUEST_GS_LIMIT: u64 = 0x480a;
    pub const GUEST_LDTR_LIMIT: u64 = 0x480c;
    pub const GUEST_TR_LIMIT: u64 = 0x480e;
    pub const GUEST_GDTR_LIMIT: u64 = 0x4810;
    pub const GUEST_IDTR_LIMIT: u64 = 0x4812;
    pub const GUEST_ES_AR: u64 = 0x4814;
    pub const GUEST_CS_AR: u64 = 0x4816;
    pub const GUEST_SS_AR: u64 = 0x4818;
    pub const GUEST_DS_AR: u64 = 0x481a;
    pub const GUEST_FS_AR: u64 = 0x481c;
    pub const GUEST_GS_AR: u64 = 0x481e;
    pub const GUEST_LDTR_AR: u64 = 0x4820;
    pub const GUEST_TR_AR: u64 = 0x4822;
    pub const GUEST_INTERRUPTIBILITY: u64 = 0x4824;
    pub const GUEST_ACTIVITY_STATE: u64 = 0x4826;
    pub const GUEST_SMBASE: u64 = 0x4828;
    pub const GUEST_IA32_SYSENTER_CS: u64 = 0x482a;
    pub const PREEMPTION_TIMER_VALUE: u64 = 0x482e;
    pub const HOST_IA32_SYSENTER_CS: u64 = 0x4c00;
    // Natural-width fields (B.4).
    pub const CR0_GUEST_HOST_MASK: u64 = 0x6000;
    pub const CR4_GUEST_HOST_MASK: u64 = 0x6002;
    pub const CR0_READ_SHADOW: u64 = 0x6004;
    pub const CR4_READ_SHADOW: u64 = 0x6006;
    pub const EXIT_QUALIFICATION: u64 = 0x6400;
    pub const GUEST_LINEAR_ADDRESS: u64 = 0x640a;
    pub const GUEST_CR0: u64 = 0x6800;
    pub const GUEST_CR3: u64 = 0x6802;
    pub const GUEST_CR4: u64 = 0x6804;
    pub const GUEST_ES_BASE: u64 = 0x6806;
    pub const GUEST_CS_BASE: u64 = 0x6808;
    pub const GUEST_SS_BASE: u64 = 0x680a;
    pub const GUEST_DS_BASE: u64 = 0x680c;
    pub const GUEST_FS_BASE: u64 = 0x680e;
    pub const GUEST_GS_BASE: u64 = 0x6810;
    pub const GUEST_LDTR_BASE: u64 = 0x6812;
    pub const GUEST_TR_BASE: u64 = 0x6814;
    pub const GUEST_GDTR_BASE: u64 = 0x6816;
    pub const GUEST_IDTR_BASE: u64 = 0x6818;
    pub const GUEST_DR7: u64 = 0x681a;
    pub const GUEST_RSP: u64 = 0x681c;
    pub const GUEST_RIP: u64 = 0x681e;
    pub const GUEST_RFLAGS: u64 = 0x6820;
    pub const GUEST_PENDING_DEBUG_EXCEPTIONS: u64 = 0x6822;
    pub const GUEST_IA32_SYSENTER_ESP: u64 = 0x6824;
    pub const GUEST_IA32_SYSENTER_EIP: u64 = 0x6826;
    pub const HOST_CR0: u64 = 0x6c00;
    pub const HOST_CR3: u64 = 0x6c02;
    pub const HOST_CR4: u64 = 0x6c04;
    pub const HOST_FS_BASE: u64 = 0x6c06;
    pub const HOST_GS_BASE: u64 = 0x6c08;
    pub const HOST_TR_BASE: u64 = 0x6c0a;
    pub const HOST_GDTR_BASE: u64 = 0x6c0c;
    pub const HOST_IDTR_BASE: u64 = 0x6c0e;
    pub const HOST_IA32_SYSENTER_ESP: u64 = 0x6c10;
    pub const HOST_IA32_SYSENTER_EIP: u64 = 0x6c12;
    pub const HOST_RSP: u64 = 0x6c14;
    pub const HOST_RIP: u64 = 0x6c16;
    pub const CR3_TARGET_VALUE0: u64 = 0x6008;
    pub const CR3_TARGET_VALUE1: u64 = 0x600a;
}

/// VM-execution, VM-exit and VM-entry control bits (SDM Vol. 3C, 25.6
/// "VM-Execution Control Fields", 25.7.1, 25.8.1).
#[allow(missing_docs)]
pub mod ctl {
    pub const PIN_EXTERNAL_INTERRUPT_EXITING: u32 = 1 << 0;
    pub const PIN_NMI_EXITING: u32 = 1 << 3;
    pub const PIN_VIRTUAL_NMIS: u32 = 1 << 5;
    pub const PIN_PREEMPTION_TIMER: u32 = 1 << 6;

    pub const PROC_INTERRUPT_WINDOW_EXITING: u32 = 1 << 2;
    pub const PROC_USE_TSC_OFFSETTING: u32 = 1 << 3;
    pub const PROC_HLT_EXITING: u32 = 1 << 7;
    pub const PROC_INVLPG_EXITING: u32 = 1 << 9;
    pub const PROC_RDTSC_EXITING: u32 = 1 << 12;
    pub const PROC_CR8_LOAD_EXITING: u32 = 1 << 19;
    pub const PROC_CR8_STORE_EXITING: u32 = 1 << 20;
    pub const PROC_USE_TPR_SHADOW: u32 = 1 << 21;
    pub const PROC_CR3_LOAD_EXITING: u32 = 1 << 15;
    pub const PROC_CR3_STORE_EXITING: u32 = 1 << 16;
    pub const PROC_UNCONDITIONAL_IO_EXITING: u32 = 1 << 24;
    pub const PROC_USE_IO_BITMAPS: u32 = 1 << 25;
    pub const PROC_USE_MSR_BITMAPS: u32 = 1 << 28;
    pub const PROC_ACTIVATE_SECONDARY: u32 = 1 << 31;

    pub const PROC2_ENABLE_EPT: u32 = 1 << 1;
    pub const PROC2_ENABLE_VPID: u32 = 1 << 5;
    pub const PROC2_UNRESTRICTED_GUEST: u32 = 1 << 7;
    pub const PROC2_ENABLE_VM_FUNCTIONS: u32 = 1 << 13;
    pub const PROC2_EPT_VIOLATION_VE: u32 = 1 << 18;

    pub const EXIT_SAVE_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const EXIT_HOST_ADDRESS_SPACE_SIZE: u32 = 1 << 9;
    pub const EXIT_ACK_INTERRUPT: u32 = 1 << 15;
    pub const EXIT_LOAD_EFER: u32 = 1 << 21;
    pub const EXIT_SAVE_PREEMPTION_TIMER: u32 = 1 << 22;

    pub const ENTRY_LOAD_DEBUG_CONTROLS: u32 = 1 << 2;
    pub const ENTRY_IA32E_MODE_GUEST: u32 = 1 << 9;
    pub const ENTRY_LOAD_EFER: u32 = 1 << 15;
}

/// Basic exit reasons (SDM Vol. 3C, appendix C "VMX Basic Exit Reasons").
#[allow(missing_docs)]
pub mod exit_reason {
    pub const EXCEPTION_OR_NMI: u32 = 0;
    pub const EXTERNAL_INTERRUPT: u32 = 1;
    pub const TRIPLE_FAULT: u32 = 2;
    pub const CPUID: u32 = 10;
    pub const INTERRUPT_WINDOW: u32 = 7;
    pub const HLT: u32 = 12;
    pub const INVLPG: u32 = 14;
    pub const RDTSC: u32 = 16;
    pub const VMCALL: u32 = 18;
    pub const CR_ACCESS: u32 = 28;
    pub const IO_INSTRUCTION: u32 = 30;
    pub const RDMSR: u32 = 31;
    pub const WRMSR: u32 = 32;
    pub const INVALID_GUEST_STATE: u32 = 33;
    pub const MSR_LOADING: u32 = 34;
    pub const EPT_VIOLATION: u32 = 48;
    pub const EPT_MISCONFIG: u32 = 49;
    pub const PREEMPTION_TIMER: u32 = 52;
    pub const VMFUNC: u32 = 59;
    /// Bit 31 of the exit-reason field: VM-entry failure.
    pub const ENTRY_FAILURE: u32 = 1 << 31;
}

/// VM-instruction error numbers (SDM Vol. 3C, 31.4 "VM Instruction Error
/// Numbers").
#[allow(missing_docs)]
pub mod error {
    pub const VMCALL_IN_ROOT: u32 = 1;
    pub const VMCLEAR_INVALID_ADDRESS: u32 = 2;
    pub const VMCLEAR_VMXON_POINTER: u32 = 3;
    pub const VMLAUNCH_NONCLEAR: u32 = 4;
    pub const VMRESUME_NONLAUNCHED: u32 = 5;
    pub const VMRESUME_AFTER_VMXOFF: u32 = 6;
    pub const ENTRY_INVALID_CONTROLS: u32 = 7;
    pub const ENTRY_INVALID_HOST_STATE: u32 = 8;
    pub const VMPTRLD_INVALID_ADDRESS: u32 = 9;
    pub const VMPTRLD_VMXON_POINTER: u32 = 10;
    pub const VMPTRLD_BAD_REVISION: u32 = 11;
    pub const UNSUPPORTED_COMPONENT: u32 = 12;
    pub const VMWRITE_READ_ONLY: u32 = 13;
    pub const VMXON_IN_ROOT: u32 = 15;
    pub const ENTRY_MOV_SS_BLOCKING: u32 = 26;
    pub const INVALID_INVEPT_INVVPID_OPERAND: u32 = 28;
}

/// VMX-related MSRs (SDM Vol. 4, chapter 2; Vol. 3C, appendix A).
#[allow(missing_docs)]
pub mod msr {
    pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
    pub const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
    pub const FEATURE_CONTROL_VMX_INSIDE_SMX: u64 = 1 << 1;
    pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;
    pub const IA32_VMX_BASIC: u32 = 0x480;
    pub const IA32_VMX_PINBASED_CTLS: u32 = 0x481;
    pub const IA32_VMX_PROCBASED_CTLS: u32 = 0x482;
    pub const IA32_VMX_EXIT_CTLS: u32 = 0x483;
    pub const IA32_VMX_ENTRY_CTLS: u32 = 0x484;
    pub const IA32_VMX_MISC: u32 = 0x485;
    pub const IA32_VMX_CR0_FIXED0: u32 = 0x486;
    pub const IA32_VMX_CR0_FIXED1: u32 = 0x487;
    pub const IA32_VMX_CR4_FIXED0: u32 = 0x488;
    pub const IA32_VMX_CR4_FIXED1: u32 = 0x489;
    pub const IA32_VMX_VMCS_ENUM: u32 = 0x48a;
    pub const IA32_VMX_PROCBASED_CTLS2: u32 = 0x48b;
    pub const IA32_VMX_EPT_VPID_CAP: u32 = 0x48c;
    pub const IA32_VMX_TRUE_PINBASED_CTLS: u32 = 0x48d;
    pub const IA32_VMX_TRUE_PROCBASED_CTLS: u32 = 0x48e;
    pub const IA32_VMX_TRUE_EXIT_CTLS: u32 = 0x48f;
    pub const IA32_VMX_TRUE_ENTRY_CTLS: u32 = 0x490;
    pub const IA32_VMX_VMFUNC: u32 = 0x491;
}

/// CR4.VMXE (SDM Vol. 3A, 2.5 "Control Registers").
pub const CR4_VMXE: u64 = 1 << 13;

/// True if CPUID.1:ECX.VMX[bit 5] is set (SDM Vol. 3C, 24.6 "Discovering
/// Support for VMX").
pub fn cpuid_has_vmx() -> bool {
    arch::cpuid(1, 0).ecx >> 5 & 1 == 1
}

/// Allowed settings of one 32-bit control field (SDM Vol. 3C, A.3-A.5):
/// a bit may be 0 only if clear in `allowed0`, and 1 only if set in
/// `allowed1`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Allowed {
    /// Bits that must be 1 (the MSR's bits 31:0).
    pub allowed0: u32,
    /// Bits that may be 1 (the MSR's bits 63:32).
    pub allowed1: u32,
}

impl Allowed {
    /// Splits a capability MSR value.
    pub const fn from_msr(v: u64) -> Allowed {
        Allowed { allowed0: v as u32, allowed1: (v >> 32) as u32 }
    }

    /// `want` with every must-be-1 bit set and every must-be-0 bit cleared.
    pub const fn adjust(self, want: u32) -> u32 {
        (want | self.allowed0) & self.allowed1
    }

    /// True if every bit of `bits` may be 1.
    pub const fn allows(self, bits: u32) -> bool {
        self.allowed1 & bits == bits
    }

    /// True if `value` respects both masks.
    pub const fn valid(self, value: u32) -> bool {
        value & self.allowed0 == self.allowed0 && value & !self.allowed1 == 0
    }
}

/// The VMX capability MSRs of this processor (SDM Vol. 3C, appendix A).
/// Control words come from the TRUE MSRs when IA32_VMX_BASIC[55] says they
/// exist (A.2).
#[derive(Clone, Copy, Debug, Default)]
pub struct Caps {
    /// IA32_VMX_BASIC.
    pub basic: u64,
    /// Pin-based controls.
    pub pin: Allowed,
    /// Primary processor-based controls.
    pub proc: Allowed,
    /// Secondary processor-based controls (all zero if not offered).
    pub proc2: Allowed,
    /// VM-exit controls.
    pub exit: Allowed,
    /// VM-entry controls.
    pub entry: Allowed,
    /// IA32_VMX_MISC.
    pub misc: u64,
    /// CR0 bits fixed to 1 in VMX operation.
    pub cr0_fixed0: u64,
    /// CR0 bits allowed to be 1 in VMX operation.
    pub cr0_fixed1: u64,
    /// CR4 bits fixed to 1 in VMX operation.
    pub cr4_fixed0: u64,
    /// CR4 bits allowed to be 1 in VMX operation.
    pub cr4_fixed1: u64,
    /// IA32_VMX_VMCS_ENUM.
    pub vmcs_enum: u64,
    /// IA32_VMX_EPT_VPID_CAP (zero if neither EPT nor VPID is offered).
    pub ept_vpid: u64,
}

impl Caps {
    /// Reads the capability MSRs.
    ///
    /// # Safety
    /// The processor must support VMX (CPUID.1:ECX.VMX), or RDMSR raises #GP.
    pub unsafe fn read() -> Caps {
        // SAFETY: caller's contract; every MSR read is guarded by the
        // capability bit that says it exists (A.1, A.3.3, A.10).
        unsafe {
            let basic = rdmsr(msr::IA32_VMX_BASIC);
            let true_ctls = basic >> 55 & 1 == 1;
            let ctl = |plain: u32, tru: u32| Allowed::from_msr(rdmsr(if true_ctls { tru } else { plain }));
            let proc = ctl(msr::IA32_VMX_PROCBASED_CTLS, msr::IA32_VMX_TRUE_PROCBASED_CTLS);
            let proc2 = if proc.allows(ctl::PROC_ACTIVATE_SECONDARY) {
                Allowed::from_msr(rdmsr(msr::IA32_VMX_PROCBASED_CTLS2))
            } else {
                Allowed::default()
            };
            let ept_vpid = if proc2.allowed1 & (ctl::PROC2_ENABLE_EPT | ctl::PROC2_ENABLE_VPID) != 0 {
                rdmsr(msr::IA32_VMX_EPT_VPID_CAP)
            } else {
                0
            };
            Caps {
                basic,
                pin: ctl(msr::IA32_VMX_PINBASED_CTLS, msr::IA32_VMX_TRUE_PINBASED_CTLS),
                proc,
                proc2,
                exit: ctl(msr::IA32_VMX_EXIT_CTLS, msr::IA32_VMX_TRUE_EXIT_CTLS),
                entry: ctl(msr::IA32_VMX_ENTRY_CTLS, msr::IA32_VMX_TRUE_ENTRY_CTLS),
                misc: rdmsr(msr::IA32_VMX_MISC),
                cr0_fixed0: rdmsr(msr::IA32_VMX_CR0_FIXED0),
                cr0_fixed1: rdmsr(msr::IA32_VMX_CR0_FIXED1),
                cr4_fixed0: rdmsr(msr::IA32_VMX_CR4_FIXED0),
                cr4_fixed1: rdmsr(msr::IA32_VMX_CR4_FIXED1),
                vmcs_enum: rdmsr(msr::IA32_VMX_VMCS_ENUM),
                ept_vpid,
            }
        }
    }

    /// VMCS revision identifier (IA32_VMX_BASIC[30:0]).
    pub fn revision_id(&self) -> u32 {
        self.basic as u32 & 0x7fff_ffff
    }

    /// Size of the VMXON and VMCS regions (IA32_VMX_BASIC[44:32]).
    pub fn region_size(&self) -> usize {
        (self.basic >> 32 & 0x1fff) as usize
    }

    /// True if IA32_VMX_BASIC[55]: TRUE control MSRs exist.
    pub fn true_controls(&self) -> bool {
        self.basic >> 55 & 1 == 1
    }

    /// True if IA32_VMX_MISC[29]: VMWRITE may write any field, including
    /// the VM-exit information fields.
    pub fn vmwrite_any_field(&self) -> bool {
        self.misc >> 29 & 1 == 1
    }

    /// `cr0` with the VMX-fixed bits applied (A.7).
    pub fn fix_cr0(&self, cr0: u64) -> u64 {
        (cr0 | self.cr0_fixed0) & self.cr0_fixed1
    }

    /// `cr4` with the VMX-fixed bits applied (A.8).
    pub fn fix_cr4(&self, cr4: u64) -> u64 {
        (cr4 | self.cr4_fixed0) & self.cr4_fixed1
    }

    /// True if EPT with 4-level walks and write-back paging structures is
    /// offered (A.10: bits 6 and 14).
    pub fn ept_wb_4level(&self) -> bool {
        self.proc2.allows(ctl::PROC2_ENABLE_EPT) && self.ept_vpid >> 6 & 1 == 1 && self.ept_vpid >> 14 & 1 == 1
    }
}

/// EPT-pointer for a 4-level write-back EPT rooted at `pml4` (SDM Vol. 3C,
/// 25.6.11 "Extended-Page-Table Pointer (EPTP)").
pub const fn eptp(pml4: u64) -> u64 {
    pml4 | 6 | (4 - 1) << 3
}

/// EPT entry bits (SDM Vol. 3C, 29.3.2 "EPT Translation Mechanism").
#[allow(missing_docs)]
pub mod ept {
    pub const READ: u64 = 1 << 0;
    pub const WRITE: u64 = 1 << 1;
    pub const EXECUTE: u64 = 1 << 2;
    pub const RWX: u64 = READ | WRITE | EXECUTE;
    /// Memory type write-back in bits 5:3 of a leaf entry.
    pub const MEMTYPE_WB: u64 = 6 << 3;
    /// Leaf at the PDPT or PD level.
    pub const PAGE_SIZE: u64 = 1 << 7;
}

/// VM-entry interruption-information / VM-exit interruption-information /
/// IDT-vectoring information format (SDM Vol. 3C, 25.8.3 "VM-Entry Controls
/// for Event Injection", Table 25-17; 25.9.2, Table 25-19): vector in 7:0,
/// type in 10:8, error code valid in bit 11, valid in bit 31.
#[allow(missing_docs)]
pub mod intr_info {
    pub const VALID: u32 = 1 << 31;
    pub const ERROR_CODE_VALID: u32 = 1 << 11;
    pub const TYPE_EXTERNAL_INTERRUPT: u32 = 0 << 8;
    pub const TYPE_NMI: u32 = 2 << 8;
    pub const TYPE_HARDWARE_EXCEPTION: u32 = 3 << 8;
    pub const TYPE_SOFTWARE_INTERRUPT: u32 = 4 << 8;
    pub const TYPE_PRIVILEGED_SOFTWARE_EXCEPTION: u32 = 5 << 8;
    pub const TYPE_SOFTWARE_EXCEPTION: u32 = 6 << 8;
}

/// One entry of a VM-entry MSR-load, VM-exit MSR-store or VM-exit
/// MSR-load list (SDM Vol. 3C, 25.7.2 "VM-Exit Controls for MSRs", Table
/// 25-15): MSR index, reserved, data. Lists are 16-byte aligned.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub struct MsrEntry {
    /// MSR index (ECX of RDMSR/WRMSR).
    pub index: u32,
    /// Must be zero.
    pub reserved: u32,
    /// Value loaded or stored.
    pub data: u64,
}

/// A 4-KiB-aligned page for VMXON regions, VMCSs and tables.
#[repr(C, align(4096))]
pub struct Page(pub [u8; 4096]);

impl Page {
    /// A zeroed page.
    pub const fn zeroed() -> Page {
        Page([0; 4096])
    }
}

/// Prepares a VMXON region or VMCS: zeroes it and writes the revision
/// identifier to its first 4 bytes (SDM Vol. 3C, 25.2 "Format of the VMCS
/// Region"; 25.11.5 "VMXON Region").
///
/// # Safety
/// `pa` is an identity-mapped page the caller owns.
pub unsafe fn init_region(pa: u64, revision: u32) {
    // SAFETY: caller's contract.
    unsafe {
        core::ptr::write_bytes(pa as *mut u8, 0, 4096);
        core::ptr::write_volatile(pa as *mut u32, revision);
    }
}

/// Enables VMX operation as SDM Vol. 3C, 24.7 "Enabling and Entering VMX
/// Operation" describes it: IA32_FEATURE_CONTROL (set lock + VMX outside
/// SMX if the firmware left it unlocked), CR0/CR4 per the fixed MSRs (this
/// sets CR4.VMXE), then VMXON with `vmxon_pa` prepared by [`init_region`].
/// `Err(msg)` when firmware locked VMX off.
///
/// # Safety
/// The processor supports VMX; `vmxon_pa` is an owned, identity-mapped page.
pub unsafe fn enable(caps: &Caps, vmxon_pa: u64) -> Result<VmResult, &'static str> {
    // SAFETY: caller's contract; MSR 3AH exists on every VMX processor.
    unsafe {
        let fc = rdmsr(msr::IA32_FEATURE_CONTROL);
        if fc & msr::FEATURE_CONTROL_LOCK == 0 {
            arch::wrmsr(
                msr::IA32_FEATURE_CONTROL,
                fc | msr::FEATURE_CONTROL_LOCK | msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX,
            );
        } else if fc & msr::FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0 {
            return Err("IA32_FEATURE_CONTROL is locked with VMX outside SMX disabled");
        }
        arch::write_cr0(caps.fix_cr0(arch::read_cr0()));
        arch::write_cr4(caps.fix_cr4(arch::read_cr4() | CR4_VMXE));
        init_region(vmxon_pa, caps.revision_id());
        Ok(vmxon(vmxon_pa))
    }
}

/// Base address of the descriptor at `selector` in the GDT at `gdt_base`,
/// including the high half of a 16-byte system descriptor.
fn descriptor_base(gdt_base: u64, selector: u16, system: bool) -> u64 {
    // SAFETY: the GDT is identity mapped and `selector` indexes a loaded
    // descriptor.
    unsafe {
        let p = (gdt_base + (selector as u64 & !7)) as *const u64;
        let d = core::ptr::read_volatile(p);
        let mut base = (d >> 16 & 0xff_ffff) | (d >> 56 & 0xff) << 24;
        if system {
            base |= (core::ptr::read_volatile(p.add(1)) & 0xffff_ffff) << 32;
        }
        base
    }
}

/// Writes the host-state area (SDM Vol. 3C, 25.5 "Host-State Area") from
/// the running kernel: its control registers, the runtime GDT selectors,
/// TR, GDTR/IDTR bases, FS/GS bases, SYSENTER MSRs and, when `load_efer`,
/// IA32_EFER. HOST_RSP/HOST_RIP are left to [`enter`].
///
/// # Safety
/// A VMCS is current; the runtime GDT/IDT/TSS are loaded.
pub unsafe fn write_host_state(load_efer: bool) -> VmResult {
    let gdtr = arch::sgdt();
    let idtr = arch::sidt();
    let tr: u16;
    // SAFETY: STR only reads TR.
    unsafe { asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
    let cs = crate::read_seg!(cs);
    // SAFETY: caller's contract; these MSRs exist on every x86-64 CPU that
    // has VMX.
    unsafe {
        vmwrite(field::HOST_CR0, arch::read_cr0())?;
        vmwrite(field::HOST_CR3, arch::read_cr3())?;
        vmwrite(field::HOST_CR4, arch::read_cr4())?;
        vmwrite(field::HOST_CS_SELECTOR, cs as u64 & !7)?;
        vmwrite(field::HOST_SS_SELECTOR, crate::gdt::KDATA as u64)?;
        vmwrite(field::HOST_DS_SELECTOR, crate::gdt::KDATA as u64)?;
        vmwrite(field::HOST_ES_SELECTOR, crate::gdt::KDATA as u64)?;
        vmwrite(field::HOST_FS_SELECTOR, 0)?;
        vmwrite(field::HOST_GS_SELECTOR, 0)?;
        vmwrite(field::HOST_TR_SELECTOR, tr as u64)?;
        vmwrite(field::HOST_FS_BASE, rdmsr(arch::msr::FS_BASE))?;
        vmwrite(field::HOST_GS_BASE, rdmsr(arch::msr::GS_BASE))?;
        vmwrite(field::HOST_TR_BASE, descriptor_base(gdtr.base, tr, true))?;
        vmwrite(field::HOST_GDTR_BASE, gdtr.base)?;
        vmwrite(field::HOST_IDTR_BASE, idtr.base)?;
        vmwrite(field::HOST_IA32_SYSENTER_CS, rdmsr(arch::msr::SYSENTER_CS))?;
        vmwrite(field::HOST_IA32_SYSENTER_ESP, rdmsr(arch::msr::SYSENTER_ESP))?;
        vmwrite(field::HOST_IA32_SYSENTER_EIP, rdmsr(arch::msr::SYSENTER_EIP))?;
        if load_efer {
            vmwrite(field::HOST_IA32_EFER, rdmsr(arch::msr::EFER))?;
        }
    }
    Ok(())
}

/// Access rights of a 64-bit ring-0 code segment (type 0xB, S, P, L, G),
/// in the VMCS format (SDM Vol. 3C, 25.4.1, Table 25-2).
pub const AR_CODE64: u64 = 0xa09b;
/// Access rights of a flat ring-0 data segment (type 3, S, P, D/B, G).
pub const AR_DATA: u64 = 0xc093;
/// Access rights of a busy 64-bit TSS (type 0xB, P).
pub const AR_TSS_BUSY: u64 = 0x8b;
/// Access-rights bit 16: segment unusable.
pub const AR_UNUSABLE: u64 = 1 << 16;

/// Writes a guest-state area (SDM Vol. 3C, 25.4 "Guest-State Area") for a
/// 64-bit ring-0 guest sharing the running kernel's CR0/CR3/CR4, GDT, IDT
/// and TSS, starting at `rip` with stack `rsp`, interrupts off, no
/// interruptibility blocking, active, VMCS link pointer all ones. When
/// `load_efer` the guest's IA32_EFER is the kernel's.
///
/// # Safety
/// A VMCS is current.
pub unsafe fn write_guest_state_64(rip: u64, rsp: u64, load_efer: bool) -> VmResult {
    let gdtr = arch::sgdt();
    let idtr = arch::sidt();
    let tr: u16;
    // SAFETY: STR only reads TR.
    unsafe { asm!("str {0:x}", out(reg) tr, options(nomem, nostack, preserves_flags)) };
    use field::*;
    // SAFETY: caller's contract.
    unsafe {
        vmwrite(GUEST_CR0, arch::read_cr0())?;
        vmwrite(GUEST_CR3, arch::read_cr3())?;
        vmwrite(GUEST_CR4, arch::read_cr4())?;
        vmwrite(GUEST_DR7, 0x400)?;
        vmwrite(GUEST_IA32_DEBUGCTL, 0)?;
        let segs = [
            (GUEST_CS_SELECTOR, GUEST_CS_BASE, GUEST_CS_LIMIT, GUEST_CS_AR, crate::gdt::KCODE64 as u64, AR_CODE64),
            (GUEST_SS_SELECTOR, GUEST_SS_BASE, GUEST_SS_LIMIT, GUEST_SS_AR, crate::gdt::KDATA as u64, AR_DATA),
            (GUEST_DS_SELECTOR, GUEST_DS_BASE, GUEST_DS_LIMIT, GUEST_DS_AR, crate::gdt::KDATA as u64, AR_DATA),
            (GUEST_ES_SELECTOR, GUEST_ES_BASE, GUEST_ES_LIMIT, GUEST_ES_AR, crate::gdt::KDATA as u64, AR_DATA),
            (GUEST_FS_SELECTOR, GUEST_FS_BASE, GUEST_FS_LIMIT, GUEST_FS_AR, 0, AR_UNUSABLE),
            (GUEST_GS_SELECTOR, GUEST_GS_BASE, GUEST_GS_LIMIT, GUEST_GS_AR, 0, AR_UNUSABLE),
            (GUEST_LDTR_SELECTOR, GUEST_LDTR_BASE, GUEST_LDTR_LIMIT, GUEST_LDTR_AR, 0, AR_UNUSABLE),
        ];
        for (sel, base, limit, ar, s, a) in segs {
            vmwrite(sel, s)?;
            vmwrite(base, 0)?;
            vmwrite(limit, if a & AR_UNUSABLE != 0 { 0 } else { 0xffff_ffff })?;
            vmwrite(ar, a)?;
        }
        vmwrite(GUEST_TR_SELECTOR, tr as u64)?;
        vmwrite(GUEST_TR_BASE, descriptor_base(gdtr.base, tr, true))?;
        vmwrite(GUEST_TR_LIMIT, core::mem::size_of::<crate::gdt::Tss>() as u64 - 1)?;
        vmwrite(GUEST_TR_AR, AR_TSS_BUSY)?;
        vmwrite(GUEST_GDTR_BASE, gdtr.base)?;
        vmwrite(GUEST_GDTR_LIMIT, gdtr.limit as u64)?;
        vmwrite(GUEST_IDTR_BASE, idtr.base)?;
        vmwrite(GUEST_IDTR_LIMIT, idtr.limit as u64)?;
        vmwrite(GUEST_RSP, rsp)?;
        vmwrite(GUEST_RIP, rip)?;
        vmwrite(GUEST_RFLAGS, 0x2)?;
        vmwrite(GUEST_PENDING_DEBUG_EXCEPTIONS, 0)?;
        vmwrite(GUEST_INTERRUPTIBILITY, 0)?;
        vmwrite(GUEST_ACTIVITY_STATE, 0)?;
        vmwrite(GUEST_IA32_SYSENTER_CS, 0)?;
        vmwrite(GUEST_IA32_SYSENTER_ESP, 0)?;
        vmwrite(GUEST_IA32_SYSENTER_EIP, 0)?;
        vmwrite(VMCS_LINK_POINTER, u64::MAX)?;
        if load_efer {
            vmwrite(GUEST_IA32_EFER, rdmsr(arch::msr::EFER))?;
        }
    }
    Ok(())
}

/// Writes the control fields for a 64-bit guest: the pin, primary,
/// secondary, exit and entry controls adjusted to what `caps` allows (with
/// "host address-space size" and "IA-32e mode guest" always requested),
/// no MSR lists, no CR3 targets, CR0/CR4 owned by the guest, and every
/// exception exiting when `trap_exceptions`. Returns whether IA32_EFER is
/// loaded on entry and exit (both when both are offered).
///
/// # Safety
/// A VMCS is current.
pub unsafe fn write_controls(caps: &Caps, pin: u32, proc: u32, proc2: u32, trap_exceptions: bool) -> Result<bool, VmFail> {
    let load_efer = caps.exit.allows(ctl::EXIT_LOAD_EFER) && caps.entry.allows(ctl::ENTRY_LOAD_EFER);
    let efer_exit = if load_efer { ctl::EXIT_LOAD_EFER } else { 0 };
    let efer_entry = if load_efer { ctl::ENTRY_LOAD_EFER } else { 0 };
    let proc = if proc2 != 0 { proc | ctl::PROC_ACTIVATE_SECONDARY } else { proc };
    use field::*;
    // SAFETY: caller's contract.
    unsafe {
        vmwrite(PIN_BASED_CONTROLS, caps.pin.adjust(pin) as u64)?;
        vmwrite(PROC_BASED_CONTROLS, caps.proc.adjust(proc) as u64)?;
        if caps.proc.allows(ctl::PROC_ACTIVATE_SECONDARY) {
            vmwrite(SECONDARY_PROC_BASED_CONTROLS, caps.proc2.adjust(proc2) as u64)?;
        }
        vmwrite(VM_EXIT_CONTROLS, caps.exit.adjust(ctl::EXIT_HOST_ADDRESS_SPACE_SIZE | efer_exit) as u64)?;
        vmwrite(VM_ENTRY_CONTROLS, caps.entry.adjust(ctl::ENTRY_IA32E_MODE_GUEST | efer_entry) as u64)?;
        vmwrite(EXCEPTION_BITMAP, if trap_exceptions { 0xffff_ffff } else { 0 })?;
        vmwrite(PAGE_FAULT_ERROR_CODE_MASK, 0)?;
        vmwrite(PAGE_FAULT_ERROR_CODE_MATCH, 0)?;
        vmwrite(CR3_TARGET_COUNT, 0)?;
        vmwrite(VM_EXIT_MSR_STORE_COUNT, 0)?;
        vmwrite(VM_EXIT_MSR_LOAD_COUNT, 0)?;
        vmwrite(VM_ENTRY_MSR_LOAD_COUNT, 0)?;
        vmwrite(VM_ENTRY_INTERRUPTION_INFO, 0)?;
        vmwrite(CR0_GUEST_HOST_MASK, 0)?;
        vmwrite(CR4_GUEST_HOST_MASK, 0)?;
        vmwrite(CR0_READ_SHADOW, arch::read_cr0())?;
        vmwrite(CR4_READ_SHADOW, arch::read_cr4())?;
    }
    Ok(load_efer)
}

/// The guest's general-purpose registers other than RSP (which lives in
/// the VMCS), as [`enter`] loads and saves them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs)]
pub struct GuestRegs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
}

// u64 rt_vmx_enter(GuestRegs *regs, u64 resume): 0 after a VM exit (guest
// registers saved in *regs), 1 on VMfailInvalid, 2 on VMfailValid.
//
// Before entering it saves the callee-saved registers and the regs pointer
// on its stack and writes that RSP to HOST_RSP and rt_vmx_exit to
// HOST_RIP, so a VM exit lands in rt_vmx_exit on the same stack frame. A
// VMWRITE failure there is reported like a VMLAUNCH failure. MOV does not
// change flags, so the launch/resume choice made by TEST survives the
// register loads.
global_asm!(
    r#"
    .section .text.vmx, "ax"
    .globl rt_vmx_enter
rt_vmx_enter:
    push    rbp
    push    rbx
    push    r12
    push    r13
    push    r14
    push    r15
    push    rdi
    mov     eax, 0x6c14
    vmwrite rax, rsp
    jbe     8f
    lea     rdx, [rip + rt_vmx_exit]
    mov     eax, 0x6c16
    vmwrite rax, rdx
    jbe     8f
    test    rsi, rsi
    mov     rax, [rdi + 0]
    mov     rbx, [rdi + 8]
    mov     rcx, [rdi + 16]
    mov     rdx, [rdi + 24]
    mov     rsi, [rdi + 32]
    mov     rbp, [rdi + 48]
    mov     r8, [rdi + 56]
    mov     r9, [rdi + 64]
    mov     r10, [rdi + 72]
    mov     r11, [rdi + 80]
    mov     r12, [rdi + 88]
    mov     r13, [rdi + 96]
    mov     r14, [rdi + 104]
    mov     r15, [rdi + 112]
    mov     rdi, [rdi + 40]
    jnz     2f
    vmlaunch
    jmp     8f
2:  vmresume
8:  mov     eax, 1
    mov     edx, 2
    cmovz   eax, edx
    add     rsp, 8
    pop     r15
    pop     r14
    pop     r13
    pop     r12
    pop     rbx
    pop     rbp
    ret

    .globl rt_vmx_exit
rt_vmx_exit:
    push    rdi
    mov     rdi, [rsp + 8]
    mov     [rdi + 0], rax
    mov     [rdi + 8], rbx
    mov     [rdi + 16], rcx
    mov     [rdi + 24], rdx
    mov     [rdi + 32], rsi
    mov     [rdi + 48], rbp
    mov     [rdi + 56], r8
    mov     [rdi + 64], r9
    mov     [rdi + 72], r10
    mov     [rdi + 80], r11
    mov     [rdi + 88], r12
    mov     [rdi + 96], r13
    mov     [rdi + 104], r14
    mov     [rdi + 112], r15
    pop     rax
    mov     [rdi + 40], rax
    add     rsp, 8
    pop     r15
    pop     r14
    pop     r13
    pop     r12
    pop     rbx
    pop     rbp
    xor     eax, eax
    ret
"#
);

extern "C" {
    fn rt_vmx_enter(regs: *mut GuestRegs, resume: u64) -> u64;
    static rt_vmx_exit: u8;
}

/// Address of the VM-exit entry point [`enter`] writes to HOST_RIP.
pub fn exit_stub() -> u64 {
    &raw const rt_vmx_exit as u64
}

/// Enters the guest of the current VMCS with VMLAUNCH (or VMRESUME when
/// `resume`), loading its general registers from `regs`. `Ok(())` after a
/// VM exit, with `regs` holding the guest's registers at the exit; `Err`
/// if the instruction (or the VMWRITE of HOST_RSP/HOST_RIP) failed.
///
/// The runtime's GDTR and IDTR limits are reloaded after an exit: a VM
/// exit sets both to FFFFH (SDM Vol. 3C, 28.5.2 "Loading Host Segment and
/// Descriptor-Table Registers").
///
/// # Safety
/// The current VMCS has a complete host state whose CR3, GDT, IDT and TR
/// are the running kernel's.
pub unsafe fn enter(regs: &mut GuestRegs, resume: bool) -> VmResult {
    let gdtr = arch::sgdt();
    let idtr = arch::sidt();
    // SAFETY: caller's contract; rt_vmx_enter follows the SysV ABI and
    // preserves the callee-saved registers on every path.
    let r = unsafe { rt_vmx_enter(regs, resume as u64) };
    // SAFETY: reloads the tables that were loaded before the entry.
    unsafe {
        arch::lgdt(&gdtr);
        arch::lidt(&idtr);
    }
    match r {
        0 => Ok(()),
        1 => Err(VmFail::Invalid),
        _ => Err(VmFail::Valid(instruction_error())),
    }
}

static EXPECT_UD: AtomicBool = AtomicBool::new(false);

/// The #UD handler installed by [`install_ud_reporter`].
fn ud_handler(frame: &mut Frame) {
    if EXPECT_UD.load(Ordering::SeqCst) && idt::unwind_to_catch(frame) {
        return;
    }
    // SAFETY: the faulting instruction is in the kernel image, readable.
    let b = unsafe { core::ptr::read_unaligned(frame.rip as *const [u8; 4]) };
    crate::serial::_print_unlocked(format_args!(
        "FAIL VMX instruction #UD at {:#x} (bytes {:02x} {:02x} {:02x} {:02x}): VMX not available to this guest\n",
        frame.rip, b[0], b[1], b[2], b[3]
    ));
    crate::test::record_failure();
    crate::test::summary_line();
    crate::exit(crate::EXIT_FAILURE)
}

/// Installs a #UD handler that reports `FAIL VMX instruction #UD ...` and
/// exits with failure, so a CPU (or L0) without VMX for this guest ends the
/// run at once instead of hanging. Inside [`expect_ud`] a #UD is instead
/// returned as a fault.
pub fn install_ud_reporter() {
    idt::set_handler(idt::vector::UD, Some(ud_handler));
}

/// Runs `f` expecting it may raise #UD (or any exception): returns the
/// fault it raised, or `None` if it completed. Works with
/// [`install_ud_reporter`] installed.
pub fn expect_ud<R>(f: impl FnOnce() -> R) -> Option<idt::Fault> {
    EXPECT_UD.store(true, Ordering::SeqCst);
    let r = idt::catch(f).err();
    EXPECT_UD.store(false, Ordering::SeqCst);
    r
}
