//! L1's VMX instructions, emulated by L0: VMXON, VMXOFF, VMCLEAR, VMPTRLD,
//! VMPTRST, VMREAD, VMWRITE, VMLAUNCH, VMRESUME, INVEPT and INVVPID (SDM
//! vol. 3C, 31.3 "VMX Instructions", one reference page each; error
//! numbers from 31.4 "VM Instruction Error Numbers").
//!
//! When L1 executes one of them, the CPU exits to L0 with the reason, the
//! memory operand's displacement as exit qualification and the operand in
//! the VM-exit instruction information (28.2.5 "Information for VM Exits
//! Due to Instruction Execution"). The hardware has already made the
//! #UD checks it makes before exiting (real, virtual-8086 and
//! compatibility mode; CR4.VMXE for VMXON); every other precondition is
//! L0's to check, and each function here checks all of them anyway, in
//! the order of the instruction's "Operation" section, so that the first
//! failing condition decides the outcome as on hardware:
//!
//! 1. #UD: not in VMX operation (except VMXON), a register operand where
//!    only memory is allowed, CR0.PE = 0, RFLAGS.VM = 1, IA32_EFER.LMA = 1
//!    with CS.L = 0; VMXON also CR4.VMXE = 0; INVEPT/INVVPID also when the
//!    capability MSRs do not offer them.
//! 2. #GP(0) at CPL > 0 (VMXON outside VMX operation also for CR0/CR4
//!    against IA32_VMX_CR0/CR4_FIXED0/1 and IA32_FEATURE_CONTROL).
//! 3. The instruction's own checks, with VMfailInvalid or VMfailValid.
//!    Memory operands are read or written where the pseudo-code uses
//!    them, raising #GP(0), #SS(0) or #PF as the segmentation and paging
//!    of L1 dictate.
//!
//! "VMfail(n)" is VMfailValid(n) with a current VMCS and VMfailInvalid
//! without one (31.2 "Conventions"); a VMfailValid here has already
//! written n into the VM-instruction error field of the cached vmcs12.
//! The instructions never panic on anything L1 controls: the property test
//! below throws random exits, registers and memory at each of them.
//!
//! Memory operands of VMREAD and VMWRITE fault where their reference
//! pages place them: VMWRITE's source after the current-VMCS check and
//! before the field checks, VMREAD's destination only once the field is
//! known to be supported (KVM's `nested.c` follows the same order).

use crate::memory;
use crate::operand::{self, Location};
use crate::vmcs12::{self, Vmcs12, SHADOW_VMCS_INDICATOR};
use cpu::{Memory, Regs};
use vmx::controls::{EptPointer, MemoryType};
use vmx::exit::{Operand, VmxInstructionInfo};
use vmx::{caps::EptVpidCap, ControlWord, ExitReason, LaunchState, ProcCtls, ProcCtls2, VmInstructionError, VmxCaps};
use x86::seg::sreg;
use x86::{Cr0, Cr4, Efer, Gpa, Rflags};

/// IA32_FEATURE_CONTROL bit 0: lock bit.
pub const FEATURE_CONTROL_LOCKED: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL bit 1: VMXON allowed inside SMX operation.
pub const FEATURE_CONTROL_VMX_IN_SMX: u64 = 1 << 1;
/// IA32_FEATURE_CONTROL bit 2: VMXON allowed outside SMX operation.
pub const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// What L0 must do to L1 after an instruction was emulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// VMsucceed: clear CF, PF, AF, ZF, SF and OF, skip the instruction.
    Succeed,
    /// VMsucceed after a VMREAD into a register: write `value` (already
    /// truncated to the operand size, zero-extended) to general-purpose
    /// register `reg` (0 RAX ... 15 R15), then as [`Outcome::Succeed`].
    Read {
        /// Destination register.
        reg: u8,
        /// The field's value.
        value: u64,
    },
    /// VMfailInvalid: set CF, clear the other five, skip the instruction.
    FailInvalid,
    /// VMfailValid: set ZF, clear the other five, skip the instruction.
    /// The error number is already in the cached vmcs12.
    FailValid(VmInstructionError),
    /// Inject this exception into L1 and do not skip the instruction.
    Fault {
        /// Exception vector (6 #UD, 12 #SS, 13 #GP, 14 #PF).
        vector: u8,
        /// Error code, for the vectors that have one.
        error_code: Option<u32>,
        /// CR2 to load before delivering a #PF.
        cr2: Option<u64>,
    },
    /// VMLAUNCH (`launch`) or VMRESUME passed the checks before the
    /// VM-entry checks: L0 now performs the virtual VM entry with the
    /// current vmcs12 (SDM ch. 27 "VM Entries"). A failing entry check is
    /// reported with [`NestedVmx::vmfail`] (errors 7 and 8) or as a
    /// VM-entry failure exit; a successful VMLAUNCH marks the vmcs12
    /// launched.
    Enter {
        /// VMLAUNCH rather than VMRESUME.
        launch: bool,
    },
    /// VMXOFF succeeded: L1 has left VMX operation (VMsucceed flags, skip
    /// the instruction); L0 drops its nested state for this vCPU.
    Vmxoff,
    /// INVEPT succeeded (VMsucceed, skip): invalidate the EPT-derived
    /// mappings (EPT02) of this EPTP, or of every EPTP when `None`.
    InvalidateEpt {
        /// The single context's EPTP; `None` for all contexts.
        eptp: Option<u64>,
    },
    /// INVVPID succeeded (VMsucceed, skip): invalidate mappings tagged
    /// with `vpid` (every non-zero VPID when `None`), only those for linear
    /// address `addr` when it is given. Type 3 (single context retaining
    /// globals) is reported as type 1, which invalidates more.
    InvalidateVpid {
        /// L1's VPID (to be mapped to L0's VPID for L2).
        vpid: Option<u16>,
        /// The individual linear address.
        addr: Option<u64>,
    },
}

impl Outcome {
    fn fault(f: cpu::Fault) -> Outcome {
        Outcome::Fault { vector: f.vector(), error_code: f.error_code(), cr2: f.cr2() }
    }

    fn ud() -> Outcome {
        Outcome::fault(cpu::Fault::ud())
    }

    fn gp0() -> Outcome {
        Outcome::fault(cpu::Fault::gp0())
    }

    /// L1's RFLAGS after the instruction (SDM 31.2 "Conventions": VMsucceed
    /// clears CF, PF, AF, ZF, SF and OF; VMfailInvalid sets CF;
    /// VMfailValid sets ZF); unchanged for a fault or a VM entry.
    pub fn rflags(&self, rflags: u64) -> u64 {
        let arith = (Rflags::CF | Rflags::PF | Rflags::AF | Rflags::ZF | Rflags::SF | Rflags::OF).bits();
        match self {
            Outcome::Fault { .. } | Outcome::Enter { .. } => rflags,
            Outcome::FailInvalid => (rflags & !arith) | Rflags::CF.bits(),
            Outcome::FailValid(_) => (rflags & !arith) | Rflags::ZF.bits(),
            _ => rflags & !arith,
        }
    }

    /// Whether L0 moves L1's RIP past the instruction: every outcome but a
    /// fault and a VM entry (whose failure L0 reports itself).
    pub fn skips_instruction(&self) -> bool {
        !matches!(self, Outcome::Fault { .. } | Outcome::Enter { .. })
    }
}

/// What the VM exit reported about the instruction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExitInfo {
    /// VM-exit instruction information (SDM 28.2.5), raw.
    pub info: u32,
    /// Exit qualification: the memory operand's displacement,
    /// sign-extended to 64 bits.
    pub qualification: u64,
}

/// What an instruction sees of L1 when it exits.
pub struct L1<'a> {
    /// L1's registers: general-purpose registers, RIP, RFLAGS, segment
    /// registers, CR0/CR3/CR4 and IA32_EFER as L1 sees them (CR0 and CR4
    /// through their read shadows where L0 owns bits).
    pub regs: &'a Regs,
    /// Physical memory; L1's guest-physical addresses are physical.
    pub mem: &'a mut Memory,
    /// L1's IA32_FEATURE_CONTROL.
    pub feature_control: u64,
    /// L1's interruptibility state has blocking by MOV SS (bit 1 of the
    /// guest interruptibility state of vmcs01).
    pub blocking_by_mov_ss: bool,
}

/// Nested-VMX state of one L1 vCPU: whether L1 is in VMX operation and
/// which vmcs12 is current.
#[derive(Clone, Debug)]
pub struct NestedVmx {
    caps: VmxCaps,
    vmxon_ptr: Option<Gpa>,
    current: Option<Vmcs12>,
}

/// The VMfail result of a check, for `?`.
type Checked<T> = Result<T, Outcome>;

impl NestedVmx {
    /// A vCPU outside VMX operation, offered the VMX capabilities `caps`
    /// (what its IA32_VMX_* MSRs report).
    pub fn new(caps: VmxCaps) -> NestedVmx {
        NestedVmx { caps, vmxon_ptr: None, current: None }
    }

    /// The VMX capabilities L1 is offered.
    pub fn caps(&self) -> &VmxCaps {
        &self.caps
    }

    /// Whether L1 is in VMX operation (after VMXON, before VMXOFF).
    pub fn in_vmx_operation(&self) -> bool {
        self.vmxon_ptr.is_some()
    }

    /// The VMXON pointer, in VMX operation.
    pub fn vmxon_ptr(&self) -> Option<Gpa> {
        self.vmxon_ptr
    }

    /// The current-VMCS pointer; `None` when it is invalid (all ones).
    pub fn current_ptr(&self) -> Option<Gpa> {
        self.current.as_ref().map(Vmcs12::gpa)
    }

    /// The current vmcs12 (L0's cached copy), for the merge into vmcs02.
    pub fn current(&self) -> Option<&Vmcs12> {
        self.current.as_ref()
    }

    /// The current vmcs12, writable: exit information, launch state.
    pub fn current_mut(&mut self) -> Option<&mut Vmcs12> {
        self.current.as_mut()
    }

    /// VMfail(`error`) (SDM 31.2): VMfailValid with the error number
    /// written to the current vmcs12, or VMfailInvalid without one. L0
    /// calls it for the VM-entry failures of a virtual VM entry (errors 7
    /// and 8).
    pub fn vmfail(&mut self, error: VmInstructionError) -> Outcome {
        match self.current.as_mut() {
            Some(v) => {
                v.vmcs_mut().set(vmx::VmcsField::VmInstructionError, u64::from(error.number()));
                Outcome::FailValid(error)
            }
            None => Outcome::FailInvalid,
        }
    }

    /// Emulates the instruction behind `reason`; `None` for an exit reason
    /// that is not one of the instructions here (VMCALL, VMFUNC, ...).
    pub fn emulate(&mut self, reason: ExitReason, l1: &mut L1, exit: ExitInfo) -> Option<Outcome> {
        Some(match reason {
            ExitReason::Vmxon => self.vmxon(l1, exit),
            ExitReason::Vmxoff => self.vmxoff(l1),
            ExitReason::Vmclear => self.vmclear(l1, exit),
            ExitReason::Vmptrld => self.vmptrld(l1, exit),
            ExitReason::Vmptrst => self.vmptrst(l1, exit),
            ExitReason::Vmread => self.vmread(l1, exit),
            ExitReason::Vmwrite => self.vmwrite(l1, exit),
            ExitReason::Vmlaunch => self.vmlaunch(l1),
            ExitReason::Vmresume => self.vmresume(l1),
            ExitReason::Invept => self.invept(l1, exit),
            ExitReason::Invvpid => self.invvpid(l1, exit),
            _ => return None,
        })
    }

    /// VMXON (SDM 31.3 "VMXON—Enter VMX Operation"). Outside VMX
    /// operation: #UD checks, #GP(0) for CPL > 0, CR0/CR4 not allowed by
    /// the fixed-bit MSRs (24.8 "Restrictions on VMX Operation") or
    /// IA32_FEATURE_CONTROL unlocked or without "VMXON outside SMX";
    /// then the pointer is read and must be 4 KiB aligned within the
    /// physical-address width, and its region must carry the revision
    /// identifier with bit 31 clear (VMfailInvalid otherwise). In VMX
    /// operation: #GP(0) for CPL > 0, else VMfail(15).
    pub fn vmxon(&mut self, l1: &mut L1, exit: ExitInfo) -> Outcome {
        run(|| {
            let regs = l1.regs;
            let info = decode_info(exit)?;
            if matches!(info.operand, Operand::Register(_)) || mode_ud(regs) || regs.cr4 & Cr4::VMXE.bits() == 0 {
                return Err(Outcome::ud());
            }
            if self.in_vmx_operation() {
                if cpl(regs) > 0 {
                    return Err(Outcome::gp0());
                }
                return Err(self.vmfail(VmInstructionError::VmxonInVmxRoot));
            }
            if cpl(regs) > 0
                || self.caps.check_cr0(regs.cr0, false).is_err()
                || self.caps.check_cr4(regs.cr4).is_err()
                || l1.feature_control & FEATURE_CONTROL_LOCKED == 0
                || l1.feature_control & FEATURE_CONTROL_VMX_OUTSIDE_SMX == 0
            {
                return Err(Outcome::gp0());
            }
            let addr = read_pointer(l1, &info, exit)?;
            if !self.page_address_valid(addr) {
                return Err(Outcome::FailInvalid);
            }
            let rev = read_revision(l1.mem, addr);
            if rev & SHADOW_VMCS_INDICATOR != 0 || rev != self.caps.revision_id() {
                return Err(Outcome::FailInvalid);
            }
            self.vmxon_ptr = Some(Gpa(addr));
            self.current = None;
            Ok(Outcome::Succeed)
        })
    }

    /// VMXOFF (SDM 31.3 "VMXOFF—Leave VMX Operation"): #UD checks, #GP(0)
    /// for CPL > 0 (the dual-monitor treatment of SMM, error 23, does not
    /// exist here). The current vmcs12 is written back to L1's memory
    /// first, as KVM does, so L1's VMWRITEs are not lost.
    pub fn vmxoff(&mut self, l1: &mut L1) -> Outcome {
        run(|| {
            self.common_checks(l1.regs)?;
            if let Some(v) = self.current.take() {
                v.flush(l1.mem);
            }
            self.vmxon_ptr = None;
            Ok(Outcome::Vmxoff)
        })
    }

    /// VMCLEAR (SDM 31.3 "VMCLEAR—Clear Virtual-Machine Control
    /// Structure"): #UD checks (a register operand included), #GP(0) for
    /// CPL > 0, the operand read (#GP/#SS/#PF), VMfail(2) for an
    /// unaligned or too wide address, VMfail(3) for the VMXON pointer.
    /// The launch state in memory becomes clear; the current vmcs12 is
    /// written back first and stops being current.
    pub fn vmclear(&mut self, l1: &mut L1, exit: ExitInfo) -> Outcome {
        run(|| {
            let info = self.memory_operand_checks(l1.regs, exit)?;
            let addr = read_pointer(l1, &info, exit)?;
            if !self.page_address_valid(addr) {
                return Err(self.vmfail(VmInstructionError::VmclearInvalidAddress));
            }
            if Some(Gpa(addr)) == self.vmxon_ptr {
                return Err(self.vmfail(VmInstructionError::VmclearVmxonPointer));
            }
            if self.current_ptr() == Some(Gpa(addr)) {
                if let Some(mut v) = self.current.take() {
                    v.vmcs_mut().launch_state = LaunchState::Clear;
                    v.flush(l1.mem);
                }
            } else {
                Vmcs12::clear_in_memory(l1.mem, Gpa(addr));
            }
            Ok(Outcome::Succeed)
        })
    }

    /// VMPTRLD (SDM 31.3 "VMPTRLD—Load Pointer to Virtual-Machine Control
    /// Structure"): #UD checks, #GP(0) for CPL > 0, the operand read,
    /// VMfail(9) for an unaligned or too wide address, VMfail(10) for the
    /// VMXON pointer, VMfail(11) when the region's revision identifier is
    /// not IA32_VMX_BASIC's or bit 31 (shadow VMCS) is set without VMCS
    /// shadowing. The previous current vmcs12 is written back; loading the
    /// current one again changes nothing.
    pub fn vmptrld(&mut self, l1: &mut L1, exit: ExitInfo) -> Outcome {
        run(|| {
            let info = self.memory_operand_checks(l1.regs, exit)?;
            let addr = read_pointer(l1, &info, exit)?;
            if !self.page_address_valid(addr) {
                return Err(self.vmfail(VmInstructionError::VmptrldInvalidAddress));
            }
            if Some(Gpa(addr)) == self.vmxon_ptr {
                return Err(self.vmfail(VmInstructionError::VmptrldVmxonPointer));
            }
            let rev = read_revision(l1.mem, addr);
            let shadowing = self.caps.supports(ControlWord::Proc, ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits() as u64)
                && self.caps.supports(ControlWord::Proc2, ProcCtls2::VMCS_SHADOWING.bits() as u64);
            if rev & !SHADOW_VMCS_INDICATOR != self.caps.revision_id()
                || (rev & SHADOW_VMCS_INDICATOR != 0 && !shadowing)
            {
                return Err(self.vmfail(VmInstructionError::VmptrldBadRevision));
            }
            if self.current_ptr() != Some(Gpa(addr)) {
                if let Some(old) = self.current.take() {
                    old.flush(l1.mem);
                }
                self.current = Some(Vmcs12::load(l1.mem, Gpa(addr)));
            }
            Ok(Outcome::Succeed)
        })
    }

    /// VMPTRST (SDM 31.3 "VMPTRST—Store Pointer to Virtual-Machine Control
    /// Structure"): #UD checks, #GP(0) for CPL > 0, then the current-VMCS
    /// pointer (all ones without one) is stored to the 64-bit memory
    /// operand (#GP/#SS/#PF).
    pub fn vmptrst(&mut self, l1: &mut L1, exit: ExitInfo) -> Outcome {
        run(|| {
            let info = self.memory_operand_checks(l1.regs, exit)?;
            let ptr = self.current_ptr().map_or(u64::MAX, |g| g.0);
            write_operand(l1, &info, exit, &ptr.to_le_bytes(), 8)?;
            Ok(Outcome::Succeed)
        })
    }

    /// VMREAD (SDM 31.3 "VMREAD—Read Field from Virtual-Machine Control
    /// Structure"): #UD checks, #GP(0) for CPL > 0, VMfailInvalid without
    /// a current VMCS, VMfail(12) when the encoding in reg2 (64 bits in
    /// 64-bit mode, 32 otherwise) names no field; then the field's value,
    /// truncated to the operand size, goes to the register or memory
    /// destination (#GP/#SS/#PF).
    pub fn vmread(&mut self, l1: &mut L1, exit: ExitInfo) -> Outcome {
        run(|| {
            let info = decode_info(exit)?;
            self.common_checks(l1.regs)?;
            let size = operand::vmx_operand_size(l1.regs);
            let mask = operand::size_mask(size);
            let Some(v) = self.current.as_ref() else {
                return Err(Outcome::FailInvalid);
            };
            let encoding = l1.regs.gpr[usize::from(info.reg2 & 0xf)] & mask;
            let value = match v.read_field(encoding) {
                Ok(value) => value & mask,
                Err(e) => return Err(self.vmfail(e)),
            };
            match operand::decode(&info, exit.qualification, l1.regs) {
                Location::Register(reg) => Ok(Outcome::Read { reg, value }),
                Location::Memory { .. } => {
                    write_operand(l1, &info, exit, &value.to_le_bytes()[..size], size)?;
                    Ok(Outcome::Succeed)
                }
            }
        })
    }

    /// VMWRITE (SDM 31.3 "VMWRITE—Write Field to Virtual-Machine Control
    /// Structure"): #UD checks, #GP(0) for CPL > 0, VMfailInvalid without
    /// a current VMCS, the source read (register, or memory with
    /// #GP/#SS/#PF), VMfail(12) when the encoding in reg2 names no field,
    /// VMfail(13) for a VM-exit information field unless IA32_VMX_MISC
    /// bit 29 is offered. The value is the operand-size source: a narrower
    /// field ignores its high bits, a wider one gets zeros.
    pub fn vmwrite(&mut self, l1: &mut L1, exit: ExitInfo) -> Outcome {
        run(|| {
            let info = decode_info(exit)?;
            self.common_checks(l1.regs)?;
            let size = operand::vmx_operand_size(l1.regs);
            let mask = operand::size_mask(size);
            if self.current.is_none() {
                return Err(Outcome::FailInvalid);
            }
            let value = match operand::decode(&info, exit.qualification, l1.regs) {
                Location::Register(reg) => l1.regs.gpr[usize::from(reg)] & mask,
                Location::Memory { .. } => {
                    let mut b = [0u8; 8];
                    read_operand(l1, &info, exit, &mut b[..size])?;
                    u64::from_le_bytes(b)
                }
            };
            let encoding = l1.regs.gpr[usize::from(info.reg2 & 0xf)] & mask;
            let caps = self.caps;
            let result = match self.current.as_mut() {
                Some(v) => v.write_field(encoding, value, &caps),
                None => return Err(Outcome::FailInvalid),
            };
            match result {
                Ok(()) => Ok(Outcome::Succeed),
                Err(e) => Err(self.vmfail(e)),
            }
        })
    }

    /// VMLAUNCH (SDM 31.3 "VMLAUNCH/VMRESUME—Launch/Resume Virtual
    /// Machine"), up to the VM-entry checks: #UD checks, #GP(0) for CPL >
    /// 0, VMfailInvalid without a current VMCS, VMfail(26) when events are
    /// blocked by MOV SS, VMfail(4) when the vmcs12 is not clear.
    pub fn vmlaunch(&mut self, l1: &mut L1) -> Outcome {
        self.enter(l1, true)
    }

    /// VMRESUME (SDM 31.3 "VMLAUNCH/VMRESUME—Launch/Resume Virtual
    /// Machine"), up to the VM-entry checks: as VMLAUNCH, with VMfail(5)
    /// when the vmcs12 is not launched.
    pub fn vmresume(&mut self, l1: &mut L1) -> Outcome {
        self.enter(l1, false)
    }

    fn enter(&mut self, l1: &mut L1, launch: bool) -> Outcome {
        run(|| {
            self.common_checks(l1.regs)?;
            let Some(state) = self.current.as_ref().map(Vmcs12::launch_state) else {
                return Err(Outcome::FailInvalid);
            };
            if l1.blocking_by_mov_ss {
                return Err(self.vmfail(VmInstructionError::EntryEventsBlockedByMovSs));
            }
            if launch && state != LaunchState::Clear {
                return Err(self.vmfail(VmInstructionError::VmlaunchNonClearVmcs));
            }
            if !launch && state != LaunchState::Launched {
                return Err(self.vmfail(VmInstructionError::VmresumeNonLaunchedVmcs));
            }
            Ok(Outcome::Enter { launch })
        })
    }

    /// INVEPT (SDM 31.3 "INVEPT—Invalidate Translations Derived from
    /// EPT"): #UD checks (also without EPT or INVEPT in the capability
    /// MSRs, or with a register operand), #GP(0) for CPL > 0, VMfail(28)
    /// for a type IA32_VMX_EPT_VPID_CAP does not offer (1 single context,
    /// 2 all contexts), the 128-bit descriptor read (#GP/#SS/#PF), and for
    /// a single context VMfail(28) when VM entry would reject its EPTP
    /// (27.2.1.1 "VM-Execution Control Fields").
    pub fn invept(&mut self, l1: &mut L1, exit: ExitInfo) -> Outcome {
        run(|| {
            let ept = self.caps.supports(ControlWord::Proc, ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits() as u64)
                && self.caps.supports(ControlWord::Proc2, ProcCtls2::ENABLE_EPT.bits() as u64);
            if !ept || !self.caps.ept_vpid().contains(EptVpidCap::INVEPT) {
                return Err(Outcome::ud());
            }
            let info = self.memory_operand_checks(l1.regs, exit)?;
            let mask = operand::size_mask(operand::vmx_operand_size(l1.regs));
            let kind = l1.regs.gpr[usize::from(info.reg2 & 0xf)] & mask;
            let caps = self.caps.ept_vpid();
            let supported = match kind {
                1 => caps.contains(EptVpidCap::INVEPT_SINGLE_CONTEXT),
                2 => caps.contains(EptVpidCap::INVEPT_ALL_CONTEXT),
                _ => false,
            };
            if !supported {
                return Err(self.vmfail(VmInstructionError::InvalidInveptInvvpidOperand));
            }
            let mut desc = [0u8; 16];
            read_operand(l1, &info, exit, &mut desc)?;
            let eptp = u64::from_le_bytes(desc[..8].try_into().unwrap_or([0; 8]));
            if kind == 2 {
                return Ok(Outcome::InvalidateEpt { eptp: None });
            }
            if !eptp_valid(eptp, &self.caps) {
                return Err(self.vmfail(VmInstructionError::InvalidInveptInvvpidOperand));
            }
            Ok(Outcome::InvalidateEpt { eptp: Some(eptp) })
        })
    }

    /// INVVPID (SDM 31.3 "INVVPID—Invalidate Translations Based on VPID"):
    /// #UD checks (also without VPID or INVVPID in the capability MSRs, or
    /// with a register operand), #GP(0) for CPL > 0, VMfail(28) for a type
    /// IA32_VMX_EPT_VPID_CAP does not offer (0 individual address, 1
    /// single context, 2 all contexts, 3 single context retaining
    /// globals), the 128-bit descriptor read (#GP/#SS/#PF), VMfail(28) when
    /// descriptor bits 63:16 are not zero, when types 0, 1 and 3 name VPID
    /// 0, or when type 0's address is not canonical.
    pub fn invvpid(&mut self, l1: &mut L1, exit: ExitInfo) -> Outcome {
        run(|| {
            let vpid = self.caps.supports(ControlWord::Proc, ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits() as u64)
                && self.caps.supports(ControlWord::Proc2, ProcCtls2::ENABLE_VPID.bits() as u64);
            if !vpid || !self.caps.ept_vpid().contains(EptVpidCap::INVVPID) {
                return Err(Outcome::ud());
            }
            let info = self.memory_operand_checks(l1.regs, exit)?;
            let mask = operand::size_mask(operand::vmx_operand_size(l1.regs));
            let kind = l1.regs.gpr[usize::from(info.reg2 & 0xf)] & mask;
            let caps = self.caps.ept_vpid();
            let supported = match kind {
                0 => caps.contains(EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS),
                1 => caps.contains(EptVpidCap::INVVPID_SINGLE_CONTEXT),
                2 => caps.contains(EptVpidCap::INVVPID_ALL_CONTEXT),
                3 => caps.contains(EptVpidCap::INVVPID_SINGLE_CONTEXT_RETAINING_GLOBALS),
                _ => false,
            };
            if !supported {
                return Err(self.vmfail(VmInstructionError::InvalidInveptInvvpidOperand));
            }
            let mut desc = [0u8; 16];
            read_operand(l1, &info, exit, &mut desc)?;
            let low = u64::from_le_bytes(desc[..8].try_into().unwrap_or([0; 8]));
            let addr = u64::from_le_bytes(desc[8..].try_into().unwrap_or([0; 8]));
            if low >> 16 != 0 {
                return Err(self.vmfail(VmInstructionError::InvalidInveptInvvpidOperand));
            }
            let id = low as u16;
            if kind != 2 && id == 0 {
                return Err(self.vmfail(VmInstructionError::InvalidInveptInvvpidOperand));
            }
            match kind {
                0 => {
                    if !operand::canonical_in(addr, self.linear_address_width()) {
                        return Err(self.vmfail(VmInstructionError::InvalidInveptInvvpidOperand));
                    }
                    Ok(Outcome::InvalidateVpid { vpid: Some(id), addr: Some(addr) })
                }
                2 => Ok(Outcome::InvalidateVpid { vpid: None, addr: None }),
                _ => Ok(Outcome::InvalidateVpid { vpid: Some(id), addr: None }),
            }
        })
    }

    /// The #UD and #GP(0) checks shared by every instruction but VMXON:
    /// not in VMX operation, real, virtual-8086 or compatibility mode;
    /// then CPL > 0.
    fn common_checks(&self, regs: &Regs) -> Checked<()> {
        if !self.in_vmx_operation() || mode_ud(regs) {
            return Err(Outcome::ud());
        }
        if cpl(regs) > 0 {
            return Err(Outcome::gp0());
        }
        Ok(())
    }

    /// [`NestedVmx::common_checks`] for the instructions whose operand must
    /// be in memory (#UD for a register operand).
    fn memory_operand_checks(&self, regs: &Regs, exit: ExitInfo) -> Checked<VmxInstructionInfo> {
        let info = decode_info(exit)?;
        if matches!(info.operand, Operand::Register(_)) {
            return Err(Outcome::ud());
        }
        self.common_checks(regs)?;
        Ok(info)
    }

    /// A VMXON/VMCS pointer: 4 KiB aligned, no bit set beyond the
    /// physical-address width (32 with IA32_VMX_BASIC bit 48).
    fn page_address_valid(&self, addr: u64) -> bool {
        let width = u32::from(self.caps.phys_addr_width()).min(64);
        addr & 0xfff == 0 && addr.checked_shr(width).unwrap_or(0) == 0
    }

    /// Linear-address width of the processor L1 is offered: 57 bits when
    /// it may set CR4.LA57, 48 otherwise.
    fn linear_address_width(&self) -> u32 {
        if self.caps.cr4_fixed().may_be_one & Cr4::LA57.bits() != 0 {
            57
        } else {
            48
        }
    }
}

/// Runs a check sequence whose early exits are outcomes.
fn run(f: impl FnOnce() -> Checked<Outcome>) -> Outcome {
    f().unwrap_or_else(|o| o)
}

/// Decodes the instruction information. An undefined address size or
/// segment cannot come from a processor; it is treated as an undefined
/// encoding (#UD).
fn decode_info(exit: ExitInfo) -> Checked<VmxInstructionInfo> {
    VmxInstructionInfo::from_raw(exit.info).ok_or_else(Outcome::ud)
}

/// Real mode, virtual-8086 mode or compatibility mode: where every VMX
/// instruction is #UD.
fn mode_ud(regs: &Regs) -> bool {
    regs.cr0 & Cr0::PE.bits() == 0
        || regs.rflags() & Rflags::VM.bits() != 0
        || (regs.efer & Efer::LMA.bits() != 0 && !operand::is_64bit(regs))
}

/// The current privilege level: SS.DPL, as VMX records it.
fn cpl(regs: &Regs) -> u8 {
    regs.seg[sreg::SS].dpl()
}

/// The linear address of the instruction's memory operand for a `len`-byte
/// access.
fn operand_address(l1: &L1, info: &VmxInstructionInfo, exit: ExitInfo, len: usize, write: bool) -> Checked<x86::Gva> {
    match operand::decode(info, exit.qualification, l1.regs) {
        Location::Memory { segment, offset } => {
            operand::linear_address(l1.regs, segment, offset, len as u64, write).map_err(Outcome::fault)
        }
        Location::Register(_) => Err(Outcome::ud()),
    }
}

/// Reads the memory operand into `buf`.
fn read_operand(l1: &mut L1, info: &VmxInstructionInfo, exit: ExitInfo, buf: &mut [u8]) -> Checked<()> {
    let la = operand_address(l1, info, exit, buf.len(), false)?;
    memory::read_linear(l1.regs, l1.mem, la, buf).map_err(Outcome::fault)
}

/// Writes `data` (`len` bytes) to the memory operand.
fn write_operand(l1: &mut L1, info: &VmxInstructionInfo, exit: ExitInfo, data: &[u8], len: usize) -> Checked<()> {
    let la = operand_address(l1, info, exit, len, true)?;
    memory::write_linear(l1.regs, l1.mem, la, &data[..len.min(data.len())]).map_err(Outcome::fault)
}

/// Reads the 64-bit physical-address operand of VMXON, VMCLEAR and
/// VMPTRLD.
fn read_pointer(l1: &mut L1, info: &VmxInstructionInfo, exit: ExitInfo) -> Checked<u64> {
    let mut b = [0u8; 8];
    read_operand(l1, info, exit, &mut b)?;
    Ok(u64::from_le_bytes(b))
}

/// The revision word (bytes 0-3) of a VMXON or VMCS region.
fn read_revision(mem: &Memory, addr: u64) -> u32 {
    let mut b = [0u8; 4];
    memory::read_phys(mem, addr + vmcs12::REVISION_OFFSET, &mut b);
    u32::from_le_bytes(b)
}

/// Whether VM entry would accept `eptp` with "enable EPT" set (SDM
/// 27.2.1.1): a memory type and a page-walk length IA32_VMX_EPT_VPID_CAP
/// offers, accessed/dirty flags and supervisor shadow stacks only when
/// offered, bits 11:8 and those beyond the physical-address width clear.
pub fn eptp_valid(eptp: u64, caps: &VmxCaps) -> bool {
    let p = EptPointer(eptp);
    let ept = caps.ept_vpid();
    let memory_type = match p.memory_type() {
        Some(MemoryType::Uncacheable) => ept.contains(EptVpidCap::MEMORY_TYPE_UC),
        Some(MemoryType::WriteBack) => ept.contains(EptVpidCap::MEMORY_TYPE_WB),
        _ => false,
    };
    let walk = match p.walk_length() {
        4 => ept.contains(EptVpidCap::WALK_LENGTH_4),
        5 => ept.contains(EptVpidCap::WALK_LENGTH_5),
        _ => false,
    };
    let width = u32::from(caps.phys_addr_width()).min(64);
    memory_type
        && walk
        && (!p.ad_enabled() || ept.contains(EptVpidCap::ACCESSED_DIRTY))
        && (!p.supervisor_shadow_stack() || ept.contains(EptVpidCap::SUPERVISOR_SHADOW_STACK))
        && eptp & EptPointer::RESERVED_LOW == 0
        && eptp.checked_shr(width).unwrap_or(0) == 0
}

#[cfg(test)]
mod tests;
