//! One test per precondition of each instruction, in the order of its
//! "Operation" section (the kvm-unit-tests `vmx.c` style), and a property
//! test throwing random exits, registers and memory at all of them.

use super::*;
use cpu::Segment;
use vmx::exit::{AddressSize, MemoryOperand};
use vmx::VmcsField as F;
use x86::seg::ar;
use x86::vector;

const MEM_SIZE: u64 = 4 << 20;
const PML4: u64 = 0x1000;
const PDPT: u64 = 0x2000;
const PD: u64 = 0x3000;
const VMXON_REGION: u64 = 0x10000;
const VMCS_A: u64 = 0x11000;
const VMCS_B: u64 = 0x12000;
/// Where pointer operands are stored.
const OPERAND: u64 = 0x20000;
/// A linear address no page maps (PDPT entry 1 is not present).
const UNMAPPED: u64 = 0x4000_0000;
/// A linear address mapped read-only (the 2 MiB page at 2 MiB).
const READ_ONLY: u64 = 0x20_0000;
/// The end of the mapped linear addresses.
const MAPPED_END: u64 = 0x40_0000;

const UD: Outcome = Outcome::Fault { vector: vector::UD, error_code: None, cr2: None };
const GP0: Outcome = Outcome::Fault { vector: vector::GP, error_code: Some(0), cr2: None };
const SS0: Outcome = Outcome::Fault { vector: vector::SS, error_code: Some(0), cr2: None };

fn valid(e: VmInstructionError) -> Outcome {
    Outcome::FailValid(e)
}

fn pf(code: u32, cr2: u64) -> Outcome {
    Outcome::Fault { vector: vector::PF, error_code: Some(code), cr2: Some(cr2) }
}

fn data_seg() -> Segment {
    Segment { selector: 0x10, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::RW | ar::ACCESSED | ar::DB | ar::G }
}

/// L1 in 64-bit mode at CPL 0 with 4-level paging mapping the first 4 MiB
/// one to one (the second 2 MiB read-only).
fn long_mode_regs() -> Regs {
    let mut r = Regs::reset();
    r.cr0 = (Cr0::PE | Cr0::PG | Cr0::NE | Cr0::ET | Cr0::WP).bits();
    r.cr3 = PML4;
    r.cr4 = (Cr4::PAE | Cr4::VMXE).bits();
    r.efer = (Efer::LME | Efer::LMA).bits();
    r.seg = [data_seg(); 6];
    r.seg[sreg::CS] =
        Segment { selector: 0x8, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::CODE | ar::RW | ar::L };
    r.set_rflags(Rflags::FIXED1.bits());
    r
}

/// L1 in 32-bit protected mode without paging, CPL 0.
fn protected_mode_regs() -> Regs {
    let mut r = long_mode_regs();
    r.cr0 = (Cr0::PE | Cr0::NE | Cr0::ET).bits();
    r.efer = 0;
    r.seg[sreg::CS].ar = ar::P | ar::S | ar::CODE | ar::RW | ar::DB | ar::G;
    r
}

struct T {
    mem: Memory,
    regs: Regs,
    feature_control: u64,
    mov_ss: bool,
    n: NestedVmx,
}

fn mem_info(segment: usize, reg2: u8) -> u32 {
    VmxInstructionInfo {
        operand: Operand::Memory(MemoryOperand {
            scaling: 0,
            address_size: AddressSize::Bits64,
            segment: segment as u8,
            index: None,
            base: None,
        }),
        reg2,
    }
    .to_raw()
}

fn reg_info(reg: u8, reg2: u8) -> u32 {
    VmxInstructionInfo { operand: Operand::Register(reg), reg2 }.to_raw()
}

/// A memory operand at DS:`addr`.
fn at(addr: u64) -> ExitInfo {
    ExitInfo { info: mem_info(sreg::DS, 0), qualification: addr }
}

/// A memory operand at DS:`addr` with reg2 = `reg2`.
fn at_with(addr: u64, reg2: u8) -> ExitInfo {
    ExitInfo { info: mem_info(sreg::DS, reg2), qualification: addr }
}

/// A register operand with reg2.
fn reg(reg: u8, reg2: u8) -> ExitInfo {
    ExitInfo { info: reg_info(reg, reg2), qualification: 0 }
}

impl T {
    fn with_caps(caps: VmxCaps) -> T {
        let mut mem = Memory::new(MEM_SIZE).unwrap();
        mem.write_u64(PML4, PDPT | 3).unwrap();
        mem.write_u64(PDPT, PD | 3).unwrap();
        mem.write_u64(PD, 0x83).unwrap(); // 0-2 MiB, writable
        mem.write_u64(PD + 8, 0x20_0000 | 0x81).unwrap(); // 2-4 MiB, read-only
        let rev = caps.revision_id();
        for region in [VMXON_REGION, VMCS_A, VMCS_B] {
            mem.write_u32(region, rev).unwrap();
        }
        T { mem, regs: long_mode_regs(), feature_control: 5, mov_ss: false, n: NestedVmx::new(caps) }
    }

    fn new() -> T {
        T::with_caps(VmxCaps::turtles())
    }

    /// In VMX operation.
    fn on() -> T {
        let mut t = T::new();
        assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
        t
    }

    /// In VMX operation with VMCS_A current.
    fn current() -> T {
        let mut t = T::on();
        assert_eq!(t.vmptrld(VMCS_A), Outcome::Succeed);
        t
    }

    fn go(&mut self, f: impl FnOnce(&mut NestedVmx, &mut L1) -> Outcome) -> Outcome {
        let mut l1 = L1 {
            regs: &self.regs,
            mem: &mut self.mem,
            feature_control: self.feature_control,
            blocking_by_mov_ss: self.mov_ss,
        };
        f(&mut self.n, &mut l1)
    }

    fn pointer(&mut self, addr: u64) -> ExitInfo {
        self.mem.write_u64(OPERAND, addr).unwrap();
        at(OPERAND)
    }

    fn vmxon(&mut self, addr: u64) -> Outcome {
        let e = self.pointer(addr);
        self.go(|n, l1| n.vmxon(l1, e))
    }

    fn vmclear(&mut self, addr: u64) -> Outcome {
        let e = self.pointer(addr);
        self.go(|n, l1| n.vmclear(l1, e))
    }

    fn vmptrld(&mut self, addr: u64) -> Outcome {
        let e = self.pointer(addr);
        self.go(|n, l1| n.vmptrld(l1, e))
    }

    fn vmptrst(&mut self) -> (Outcome, u64) {
        self.mem.write_u64(OPERAND, 0x5555).unwrap();
        let o = self.go(|n, l1| n.vmptrst(l1, at(OPERAND)));
        (o, self.mem.read_u64(OPERAND).unwrap())
    }

    /// VMREAD of `encoding` (in RDX) into RAX.
    fn vmread(&mut self, encoding: u64) -> Outcome {
        self.regs.gpr[2] = encoding;
        self.go(|n, l1| n.vmread(l1, reg(0, 2)))
    }

    /// VMWRITE of `value` (in RAX) to `encoding` (in RDX).
    fn vmwrite(&mut self, encoding: u64, value: u64) -> Outcome {
        self.regs.gpr[0] = value;
        self.regs.gpr[2] = encoding;
        self.go(|n, l1| n.vmwrite(l1, reg(0, 2)))
    }

    fn vmlaunch(&mut self) -> Outcome {
        self.go(|n, l1| n.vmlaunch(l1))
    }

    fn vmresume(&mut self) -> Outcome {
        self.go(|n, l1| n.vmresume(l1))
    }

    /// INVEPT of `kind` (in RCX) with the descriptor at OPERAND.
    fn invept(&mut self, kind: u64, eptp: u64) -> Outcome {
        self.mem.write_u64(OPERAND, eptp).unwrap();
        self.mem.write_u64(OPERAND + 8, 0).unwrap();
        self.regs.gpr[1] = kind;
        self.go(|n, l1| n.invept(l1, at_with(OPERAND, 1)))
    }

    /// INVVPID of `kind` (in RCX) with the descriptor at OPERAND.
    fn invvpid(&mut self, kind: u64, low: u64, addr: u64) -> Outcome {
        self.mem.write_u64(OPERAND, low).unwrap();
        self.mem.write_u64(OPERAND + 8, addr).unwrap();
        self.regs.gpr[1] = kind;
        self.go(|n, l1| n.invvpid(l1, at_with(OPERAND, 1)))
    }

    fn error_field(&self) -> u64 {
        self.n.current().map_or(0, |v| v.vmcs().get(F::VmInstructionError))
    }

    fn real_mode(&mut self) {
        self.regs.cr0 &= !(Cr0::PE | Cr0::PG).bits();
        self.regs.efer = 0;
    }

    fn vm86(&mut self) {
        self.regs = protected_mode_regs();
        self.regs.set_rflags(Rflags::FIXED1.bits() | Rflags::VM.bits());
    }

    fn compat_mode(&mut self) {
        self.regs.seg[sreg::CS].ar &= !ar::L;
        self.regs.seg[sreg::CS].ar |= ar::DB;
    }

    fn cpl3(&mut self) {
        self.regs.seg[sreg::SS].ar |= 3 << ar::DPL_SHIFT;
        self.regs.seg[sreg::CS].ar |= 3 << ar::DPL_SHIFT;
    }
}

/// The #UD and #GP(0) preconditions every instruction but VMXON shares:
/// outside VMX operation, in real, virtual-8086 and compatibility mode
/// (#UD), at CPL 3 (#GP(0)).
fn shared_preconditions(op: impl Fn(&mut T) -> Outcome) {
    let mut t = T::current();
    assert!(op(&mut t) != UD && op(&mut T::current()) != GP0, "baseline must pass the shared checks");
    let mut t = T::new();
    assert_eq!(op(&mut t), UD, "outside VMX operation");
    t = T::current();
    t.real_mode();
    assert_eq!(op(&mut t), UD, "real mode");
    t = T::current();
    t.vm86();
    assert_eq!(op(&mut t), UD, "virtual-8086 mode");
    t = T::current();
    t.compat_mode();
    assert_eq!(op(&mut t), UD, "compatibility mode");
    t = T::current();
    t.cpl3();
    assert_eq!(op(&mut t), GP0, "CPL 3");
    // #UD comes before #GP.
    t = T::current();
    t.cpl3();
    t.compat_mode();
    assert_eq!(op(&mut t), UD, "compatibility mode at CPL 3");
}

// ---- VMXON ----

#[test]
fn vmxon_register_operand_is_ud() {
    let mut t = T::new();
    assert_eq!(t.go(|n, l1| n.vmxon(l1, reg(0, 0))), UD);
}

#[test]
fn vmxon_real_mode_is_ud() {
    let mut t = T::new();
    t.real_mode();
    assert_eq!(t.vmxon(VMXON_REGION), UD);
}

#[test]
fn vmxon_virtual_8086_mode_is_ud() {
    let mut t = T::new();
    t.vm86();
    assert_eq!(t.vmxon(VMXON_REGION), UD);
}

#[test]
fn vmxon_compatibility_mode_is_ud() {
    let mut t = T::new();
    t.compat_mode();
    assert_eq!(t.vmxon(VMXON_REGION), UD);
}

#[test]
fn vmxon_without_cr4_vmxe_is_ud() {
    let mut t = T::new();
    t.regs.cr4 &= !Cr4::VMXE.bits();
    assert_eq!(t.vmxon(VMXON_REGION), UD);
}

#[test]
fn vmxon_cpl3_is_gp() {
    let mut t = T::new();
    t.cpl3();
    assert_eq!(t.vmxon(VMXON_REGION), GP0);
}

#[test]
fn vmxon_cr0_fixed0_is_gp() {
    let mut t = T::new();
    t.regs.cr0 &= !Cr0::NE.bits();
    assert_eq!(t.vmxon(VMXON_REGION), GP0);
}

#[test]
fn vmxon_cr4_fixed1_is_gp() {
    let mut t = T::new();
    assert_eq!(t.n.caps().cr4_fixed().may_be_one & Cr4::SMXE.bits(), 0);
    t.regs.cr4 |= Cr4::SMXE.bits();
    assert_eq!(t.vmxon(VMXON_REGION), GP0);
}

#[test]
fn vmxon_feature_control_unlocked_is_gp() {
    let mut t = T::new();
    t.feature_control = FEATURE_CONTROL_VMX_OUTSIDE_SMX;
    assert_eq!(t.vmxon(VMXON_REGION), GP0);
}

#[test]
fn vmxon_feature_control_without_vmx_outside_smx_is_gp() {
    let mut t = T::new();
    t.feature_control = FEATURE_CONTROL_LOCKED | FEATURE_CONTROL_VMX_IN_SMX;
    assert_eq!(t.vmxon(VMXON_REGION), GP0);
}

#[test]
fn vmxon_operand_faults() {
    let mut t = T::new();
    assert_eq!(t.go(|n, l1| n.vmxon(l1, at(UNMAPPED))), pf(0, UNMAPPED));
    assert_eq!(t.go(|n, l1| n.vmxon(l1, at(0x8000_0000_0000))), GP0);
    let ss = ExitInfo { info: mem_info(sreg::SS, 0), qualification: 0x8000_0000_0000 };
    assert_eq!(t.go(|n, l1| n.vmxon(l1, ss)), SS0);
    assert!(!t.n.in_vmx_operation());
}

#[test]
fn vmxon_unaligned_pointer_fails_invalid() {
    let mut t = T::new();
    assert_eq!(t.vmxon(VMXON_REGION + 8), Outcome::FailInvalid);
}

#[test]
fn vmxon_pointer_beyond_physical_width_fails_invalid() {
    let mut t = T::new();
    let width = t.n.caps().phys_addr_width();
    assert_eq!(t.vmxon(1 << width), Outcome::FailInvalid);
}

#[test]
fn vmxon_bad_revision_fails_invalid() {
    let mut t = T::new();
    let rev = t.n.caps().revision_id();
    t.mem.write_u32(VMXON_REGION, rev + 1).unwrap();
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::FailInvalid);
    t.mem.write_u32(VMXON_REGION, rev | SHADOW_VMCS_INDICATOR).unwrap();
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::FailInvalid);
    assert!(!t.n.in_vmx_operation());
}

#[test]
fn vmxon_succeeds() {
    let mut t = T::new();
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
    assert_eq!(t.n.vmxon_ptr(), Some(Gpa(VMXON_REGION)));
    assert_eq!(t.n.current_ptr(), None);
}

#[test]
fn vmxon_in_vmx_operation_cpl3_is_gp() {
    let mut t = T::on();
    t.cpl3();
    assert_eq!(t.vmxon(VMXON_REGION), GP0);
}

#[test]
fn vmxon_in_vmx_operation_fails_with_15() {
    let mut t = T::on();
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::FailInvalid);
    // The operand is not even read in VMX operation.
    assert_eq!(t.go(|n, l1| n.vmxon(l1, at(UNMAPPED))), Outcome::FailInvalid);
    let mut t = T::current();
    assert_eq!(t.vmxon(VMXON_REGION), valid(VmInstructionError::VmxonInVmxRoot));
    assert_eq!(t.error_field(), 15);
}

/// A repair of one broken precondition.
type Fix = Box<dyn Fn(&mut T)>;

#[test]
fn vmxon_checks_in_sdm_order() {
    // Break everything, then repair one condition at a time: each step
    // must report the next condition in the SDM's order.
    let mut t = T::new();
    t.regs.cr4 &= !Cr4::VMXE.bits();
    t.cpl3();
    t.regs.cr0 &= !Cr0::NE.bits();
    t.feature_control = 0;
    t.mem.write_u32(VMXON_REGION, 0).unwrap();
    let mut steps: Vec<(Outcome, Fix)> = vec![
        (UD, Box::new(|t| t.regs.cr4 |= Cr4::VMXE.bits())),
        (GP0, Box::new(|t| t.regs.seg[sreg::SS].ar &= !(3 << ar::DPL_SHIFT))),
        (GP0, Box::new(|t| t.regs.cr0 |= Cr0::NE.bits())),
        (GP0, Box::new(|t| t.feature_control = 5)),
        (pf(0, UNMAPPED), Box::new(|_| {})),
    ];
    for (i, (expect, fix)) in steps.drain(..).enumerate() {
        let o = if i == 4 { t.go(|n, l1| n.vmxon(l1, at(UNMAPPED))) } else { t.vmxon(VMXON_REGION + 1) };
        assert_eq!(o, expect, "step {i}");
        fix(&mut t);
    }
    assert_eq!(t.vmxon(VMXON_REGION + 1), Outcome::FailInvalid);
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::FailInvalid, "revision");
    let rev = t.n.caps().revision_id();
    t.mem.write_u32(VMXON_REGION, rev).unwrap();
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
}

// ---- VMXOFF ----

#[test]
fn vmxoff_shared_preconditions() {
    shared_preconditions(|t| t.go(|n, l1| n.vmxoff(l1)));
}

#[test]
fn vmxoff_leaves_vmx_operation_and_writes_vmcs12_back() {
    let mut t = T::current();
    assert_eq!(t.vmwrite(u64::from(F::GuestRip.encoding()), 0xabcd), Outcome::Succeed);
    assert_eq!(t.go(|n, l1| n.vmxoff(l1)), Outcome::Vmxoff);
    assert!(!t.n.in_vmx_operation());
    assert_eq!(t.n.current_ptr(), None);
    let back = Vmcs12::load(&t.mem, Gpa(VMCS_A));
    assert_eq!(back.vmcs().get(F::GuestRip), 0xabcd);
    assert_eq!(t.go(|n, l1| n.vmxoff(l1)), UD);
}

// ---- VMCLEAR ----

#[test]
fn vmclear_shared_preconditions() {
    shared_preconditions(|t| t.vmclear(VMCS_B));
}

#[test]
fn vmclear_register_operand_is_ud() {
    let mut t = T::on();
    assert_eq!(t.go(|n, l1| n.vmclear(l1, reg(0, 0))), UD);
}

#[test]
fn vmclear_operand_faults() {
    let mut t = T::on();
    assert_eq!(t.go(|n, l1| n.vmclear(l1, at(UNMAPPED + 0x10))), pf(0, UNMAPPED + 0x10));
}

#[test]
fn vmclear_invalid_address_fails_with_2() {
    let mut t = T::on();
    assert_eq!(t.vmclear(VMCS_B + 0x10), Outcome::FailInvalid);
    let mut t = T::current();
    assert_eq!(t.vmclear(VMCS_B + 0x10), valid(VmInstructionError::VmclearInvalidAddress));
    assert_eq!(t.error_field(), 2);
    let width = t.n.caps().phys_addr_width();
    assert_eq!(t.vmclear(1 << width), valid(VmInstructionError::VmclearInvalidAddress));
}

#[test]
fn vmclear_vmxon_pointer_fails_with_3() {
    let mut t = T::on();
    assert_eq!(t.vmclear(VMXON_REGION), Outcome::FailInvalid);
    let mut t = T::current();
    assert_eq!(t.vmclear(VMXON_REGION), valid(VmInstructionError::VmclearVmxonPointer));
    assert_eq!(t.error_field(), 3);
}

#[test]
fn vmclear_of_another_vmcs_clears_its_launch_state() {
    let mut t = T::current();
    t.mem.write_u32(VMCS_B + 8, 1).unwrap();
    assert_eq!(t.vmclear(VMCS_B), Outcome::Succeed);
    assert_eq!(t.mem.read_u32(VMCS_B + 8).unwrap(), 0);
    assert_eq!(t.n.current_ptr(), Some(Gpa(VMCS_A)));
}

#[test]
fn vmclear_of_the_current_vmcs_flushes_and_invalidates_it() {
    let mut t = T::current();
    t.n.current_mut().unwrap().vmcs_mut().launch_state = LaunchState::Launched;
    assert_eq!(t.vmwrite(u64::from(F::HostRip.encoding()), 0x4444), Outcome::Succeed);
    assert_eq!(t.vmclear(VMCS_A), Outcome::Succeed);
    assert_eq!(t.n.current_ptr(), None);
    let back = Vmcs12::load(&t.mem, Gpa(VMCS_A));
    assert_eq!(back.vmcs().get(F::HostRip), 0x4444);
    assert_eq!(back.launch_state(), LaunchState::Clear);
    assert_eq!(t.vmptrst(), (Outcome::Succeed, u64::MAX));
}

// ---- VMPTRLD ----

#[test]
fn vmptrld_shared_preconditions() {
    shared_preconditions(|t| t.vmptrld(VMCS_B));
}

#[test]
fn vmptrld_register_operand_is_ud() {
    let mut t = T::on();
    assert_eq!(t.go(|n, l1| n.vmptrld(l1, reg(0, 0))), UD);
}

#[test]
fn vmptrld_operand_faults() {
    let mut t = T::on();
    assert_eq!(t.go(|n, l1| n.vmptrld(l1, at(UNMAPPED))), pf(0, UNMAPPED));
}

#[test]
fn vmptrld_invalid_address_fails_with_9() {
    let mut t = T::on();
    assert_eq!(t.vmptrld(VMCS_B | 0x800), Outcome::FailInvalid);
    let mut t = T::current();
    assert_eq!(t.vmptrld(VMCS_B | 0x800), valid(VmInstructionError::VmptrldInvalidAddress));
    assert_eq!(t.error_field(), 9);
    assert_eq!(t.vmptrld(1 << 52), valid(VmInstructionError::VmptrldInvalidAddress));
}

#[test]
fn vmptrld_vmxon_pointer_fails_with_10() {
    let mut t = T::current();
    assert_eq!(t.vmptrld(VMXON_REGION), valid(VmInstructionError::VmptrldVmxonPointer));
    assert_eq!(t.error_field(), 10);
}

#[test]
fn vmptrld_bad_revision_fails_with_11() {
    let mut t = T::current();
    let rev = t.n.caps().revision_id();
    t.mem.write_u32(VMCS_B, rev ^ 1).unwrap();
    assert_eq!(t.vmptrld(VMCS_B), valid(VmInstructionError::VmptrldBadRevision));
    assert_eq!(t.error_field(), 11);
    // A shadow VMCS without VMCS shadowing.
    t.mem.write_u32(VMCS_B, rev | SHADOW_VMCS_INDICATOR).unwrap();
    assert_eq!(t.vmptrld(VMCS_B), valid(VmInstructionError::VmptrldBadRevision));
    // Outside RAM the region reads as all ones.
    assert_eq!(t.vmptrld(0xe000_0000), valid(VmInstructionError::VmptrldBadRevision));
    assert_eq!(t.n.current_ptr(), Some(Gpa(VMCS_A)));
    let mut t = T::on();
    t.mem.write_u32(VMCS_B, 0).unwrap();
    assert_eq!(t.vmptrld(VMCS_B), Outcome::FailInvalid);
}

#[test]
fn vmptrld_loads_and_switches() {
    let mut t = T::new();
    let mut b = Vmcs12::load(&t.mem, Gpa(VMCS_B));
    b.vmcs_mut().set(F::GuestRsp, 0x7777);
    b.vmcs_mut().launch_state = LaunchState::Launched;
    b.flush(&mut t.mem);
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
    assert_eq!(t.vmptrld(VMCS_A), Outcome::Succeed);
    assert_eq!(t.vmwrite(u64::from(F::GuestRsp.encoding()), 0x1111), Outcome::Succeed);
    // Switching writes A back and loads B.
    assert_eq!(t.vmptrld(VMCS_B), Outcome::Succeed);
    assert_eq!(Vmcs12::load(&t.mem, Gpa(VMCS_A)).vmcs().get(F::GuestRsp), 0x1111);
    assert_eq!(t.vmread(u64::from(F::GuestRsp.encoding())), Outcome::Read { reg: 0, value: 0x7777 });
    assert_eq!(t.n.current().unwrap().launch_state(), LaunchState::Launched);
    // Loading the current VMCS again keeps the cached copy.
    assert_eq!(t.vmwrite(u64::from(F::GuestRsp.encoding()), 0x2222), Outcome::Succeed);
    assert_eq!(t.vmptrld(VMCS_B), Outcome::Succeed);
    assert_eq!(t.vmread(u64::from(F::GuestRsp.encoding())), Outcome::Read { reg: 0, value: 0x2222 });
    assert_eq!(t.vmptrst(), (Outcome::Succeed, VMCS_B));
}

// ---- VMPTRST ----

#[test]
fn vmptrst_shared_preconditions() {
    shared_preconditions(|t| t.vmptrst().0);
}

#[test]
fn vmptrst_register_operand_is_ud() {
    let mut t = T::current();
    assert_eq!(t.go(|n, l1| n.vmptrst(l1, reg(0, 0))), UD);
}

#[test]
fn vmptrst_stores_all_ones_without_current_vmcs() {
    let mut t = T::on();
    assert_eq!(t.vmptrst(), (Outcome::Succeed, u64::MAX));
}

#[test]
fn vmptrst_stores_the_current_pointer() {
    let mut t = T::current();
    assert_eq!(t.vmptrst(), (Outcome::Succeed, VMCS_A));
}

#[test]
fn vmptrst_to_read_only_page_is_pf() {
    let mut t = T::current();
    assert_eq!(t.go(|n, l1| n.vmptrst(l1, at(READ_ONLY + 8))), pf(3, READ_ONLY + 8));
    assert_eq!(t.mem.read_u64(READ_ONLY + 8).unwrap(), 0);
}

#[test]
fn vmptrst_to_read_only_segment_is_gp() {
    let mut t = T::current();
    t.regs = protected_mode_regs();
    t.regs.seg[sreg::DS].ar &= !ar::RW;
    assert_eq!(t.go(|n, l1| n.vmptrst(l1, at(OPERAND))), GP0);
    t.regs.seg[sreg::DS].ar |= ar::RW;
    t.regs.seg[sreg::DS].limit = OPERAND as u32 + 6;
    assert_eq!(t.go(|n, l1| n.vmptrst(l1, at(OPERAND))), GP0);
    t.regs.seg[sreg::DS].limit = OPERAND as u32 + 7;
    assert_eq!(t.go(|n, l1| n.vmptrst(l1, at(OPERAND))), Outcome::Succeed);
    assert_eq!(t.mem.read_u64(OPERAND).unwrap(), VMCS_A);
}

#[test]
fn vmptrst_across_a_page_boundary() {
    let mut t = T::current();
    assert_eq!(t.go(|n, l1| n.vmptrst(l1, at(0x2fffc))), Outcome::Succeed);
    assert_eq!(t.mem.read_u64(0x2fffc).unwrap(), VMCS_A);
    // The second page faults: nothing is written to the first.
    let last = READ_ONLY - 4;
    assert_eq!(t.go(|n, l1| n.vmptrst(l1, at(last))), pf(3, READ_ONLY));
    assert_eq!(t.mem.read_u32(last).unwrap(), 0);
}

// ---- VMREAD ----

#[test]
fn vmread_shared_preconditions() {
    shared_preconditions(|t| t.vmread(u64::from(F::GuestRip.encoding())));
}

#[test]
fn vmread_without_current_vmcs_fails_invalid() {
    let mut t = T::on();
    assert_eq!(t.vmread(u64::from(F::GuestRip.encoding())), Outcome::FailInvalid);
}

#[test]
fn vmread_unsupported_field_fails_with_12() {
    let mut t = T::current();
    assert_eq!(t.vmread(0x6c18 + 0x100), valid(VmInstructionError::UnsupportedVmcsComponent));
    assert_eq!(t.error_field(), 12);
    // Bits 63:32 of the encoding count in 64-bit mode.
    assert_eq!(
        t.vmread(1 << 32 | u64::from(F::GuestRip.encoding())),
        valid(VmInstructionError::UnsupportedVmcsComponent)
    );
}

#[test]
fn vmread_to_register_of_every_width() {
    let mut t = T::current();
    let v = t.n.current_mut().unwrap().vmcs_mut();
    v.set(F::GuestCsSelector, 0x1234);
    v.set(F::TscOffset, 0x1111_2222_3333_4444);
    v.set(F::ExitReason, 0x30);
    v.set(F::GuestRip, 0xffff_8000_0000_1000);
    let read = |t: &mut T, f: F| t.vmread(u64::from(f.encoding()));
    assert_eq!(read(&mut t, F::GuestCsSelector), Outcome::Read { reg: 0, value: 0x1234 });
    assert_eq!(read(&mut t, F::TscOffset), Outcome::Read { reg: 0, value: 0x1111_2222_3333_4444 });
    assert_eq!(read(&mut t, F::TscOffsetHigh), Outcome::Read { reg: 0, value: 0x1111_2222 });
    assert_eq!(read(&mut t, F::ExitReason), Outcome::Read { reg: 0, value: 0x30 });
    assert_eq!(read(&mut t, F::GuestRip), Outcome::Read { reg: 0, value: 0xffff_8000_0000_1000 });
}

#[test]
fn vmread_to_memory() {
    let mut t = T::current();
    t.n.current_mut().unwrap().vmcs_mut().set(F::GuestRip, 0x1234_5678_9abc);
    t.regs.gpr[2] = u64::from(F::GuestRip.encoding());
    assert_eq!(t.go(|n, l1| n.vmread(l1, at_with(OPERAND, 2))), Outcome::Succeed);
    assert_eq!(t.mem.read_u64(OPERAND).unwrap(), 0x1234_5678_9abc);
    // The destination is written last: a bad field leaves memory alone,
    // a faulting destination reports the fault.
    t.regs.gpr[2] = 0x1;
    t.mem.write_u64(OPERAND, 0).unwrap();
    assert_eq!(t.go(|n, l1| n.vmread(l1, at_with(OPERAND, 2))), valid(VmInstructionError::UnsupportedVmcsComponent));
    assert_eq!(t.mem.read_u64(OPERAND).unwrap(), 0);
    t.regs.gpr[2] = u64::from(F::GuestRip.encoding());
    assert_eq!(t.go(|n, l1| n.vmread(l1, at_with(READ_ONLY, 2))), pf(3, READ_ONLY));
}

#[test]
fn vmread_outside_64_bit_mode_is_32_bits() {
    let mut t = T::current();
    t.n.current_mut().unwrap().vmcs_mut().set(F::GuestRip, 0x1234_5678_9abc_def0);
    t.n.current_mut().unwrap().vmcs_mut().set(F::TscOffset, 0x1111_2222_3333_4444);
    t.regs = protected_mode_regs();
    // The encoding register's high half is not part of the operand.
    assert_eq!(t.vmread(1 << 32 | u64::from(F::GuestRip.encoding())), Outcome::Read { reg: 0, value: 0x9abc_def0 });
    assert_eq!(t.vmread(u64::from(F::TscOffset.encoding())), Outcome::Read { reg: 0, value: 0x3333_4444 });
    assert_eq!(t.vmread(u64::from(F::TscOffsetHigh.encoding())), Outcome::Read { reg: 0, value: 0x1111_2222 });
    t.mem.write_u64(OPERAND, u64::MAX).unwrap();
    t.regs.gpr[2] = u64::from(F::GuestRip.encoding());
    let e = ExitInfo { info: mem_info(sreg::DS, 2), qualification: OPERAND - 0x1000 };
    t.regs.seg[sreg::DS].base = 0x1000;
    assert_eq!(t.go(|n, l1| n.vmread(l1, e)), Outcome::Succeed);
    assert_eq!(t.mem.read_u64(OPERAND).unwrap(), 0xffff_ffff_9abc_def0);
}

// ---- VMWRITE ----

#[test]
fn vmwrite_shared_preconditions() {
    shared_preconditions(|t| t.vmwrite(u64::from(F::GuestRip.encoding()), 1));
}

#[test]
fn vmwrite_without_current_vmcs_fails_invalid() {
    let mut t = T::on();
    assert_eq!(t.vmwrite(u64::from(F::GuestRip.encoding()), 1), Outcome::FailInvalid);
    // Before the memory source is read.
    t.regs.gpr[2] = u64::from(F::GuestRip.encoding());
    assert_eq!(t.go(|n, l1| n.vmwrite(l1, at_with(UNMAPPED, 2))), Outcome::FailInvalid);
}

#[test]
fn vmwrite_memory_source_is_read_before_the_field_checks() {
    let mut t = T::current();
    t.regs.gpr[2] = 0x1; // unsupported
    assert_eq!(t.go(|n, l1| n.vmwrite(l1, at_with(UNMAPPED, 2))), pf(0, UNMAPPED));
}

#[test]
fn vmwrite_unsupported_field_fails_with_12() {
    let mut t = T::current();
    assert_eq!(t.vmwrite(0x1, 1), valid(VmInstructionError::UnsupportedVmcsComponent));
    assert_eq!(t.error_field(), 12);
}

#[test]
fn vmwrite_read_only_field_fails_with_13_without_vmwrite_any_field() {
    let mut t =
        T::with_caps(VmxCaps::turtles().to_builder().misc(VmxMisc { vmwrite_any_field: false, ..misc() }).build());
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
    assert_eq!(t.vmptrld(VMCS_A), Outcome::Succeed);
    assert_eq!(
        t.vmwrite(u64::from(F::ExitQualification.encoding()), 1),
        valid(VmInstructionError::VmwriteReadOnlyComponent)
    );
    assert_eq!(t.error_field(), 13);
    // 12 comes before 13.
    assert_eq!(t.vmwrite(0x4401, 1), valid(VmInstructionError::UnsupportedVmcsComponent));
}

fn misc() -> vmx::caps::VmxMisc {
    VmxCaps::turtles().misc()
}

use vmx::caps::VmxMisc;

#[test]
fn vmwrite_read_only_field_with_vmwrite_any_field() {
    let mut t = T::current();
    assert!(t.n.caps().misc().vmwrite_any_field);
    assert_eq!(t.vmwrite(u64::from(F::ExitQualification.encoding()), 7), Outcome::Succeed);
    assert_eq!(t.vmread(u64::from(F::ExitQualification.encoding())), Outcome::Read { reg: 0, value: 7 });
}

#[test]
fn vmwrite_register_and_memory_sources_of_every_width() {
    let mut t = T::current();
    assert_eq!(t.vmwrite(u64::from(F::GuestCsSelector.encoding()), 0xdead_1234), Outcome::Succeed);
    assert_eq!(t.n.current().unwrap().vmcs().get(F::GuestCsSelector), 0x1234);
    assert_eq!(t.vmwrite(u64::from(F::PinBasedControls.encoding()), u64::MAX), Outcome::Succeed);
    assert_eq!(t.n.current().unwrap().vmcs().get(F::PinBasedControls), 0xffff_ffff);
    assert_eq!(t.vmwrite(u64::from(F::EptPointer.encoding()), 0x1111_2222_3333_4444), Outcome::Succeed);
    assert_eq!(t.vmwrite(u64::from(F::EptPointerHigh.encoding()), 0xaaaa_bbbb), Outcome::Succeed);
    assert_eq!(t.n.current().unwrap().vmcs().get(F::EptPointer), 0xaaaa_bbbb_3333_4444);
    t.mem.write_u64(OPERAND, 0xffff_8000_0000_2000).unwrap();
    t.regs.gpr[2] = u64::from(F::GuestRip.encoding());
    assert_eq!(t.go(|n, l1| n.vmwrite(l1, at_with(OPERAND, 2))), Outcome::Succeed);
    assert_eq!(t.n.current().unwrap().vmcs().get(F::GuestRip), 0xffff_8000_0000_2000);
}

#[test]
fn vmwrite_outside_64_bit_mode_clears_the_high_bits() {
    let mut t = T::current();
    t.n.current_mut().unwrap().vmcs_mut().set(F::GuestRip, u64::MAX);
    t.n.current_mut().unwrap().vmcs_mut().set(F::TscOffset, u64::MAX);
    t.regs = protected_mode_regs();
    assert_eq!(t.vmwrite(u64::from(F::GuestRip.encoding()), 0x1_2345_6789), Outcome::Succeed);
    assert_eq!(t.n.current().unwrap().vmcs().get(F::GuestRip), 0x2345_6789);
    assert_eq!(t.vmwrite(u64::from(F::TscOffset.encoding()), 0x5), Outcome::Succeed);
    assert_eq!(t.n.current().unwrap().vmcs().get(F::TscOffset), 0x5);
    assert_eq!(t.vmwrite(u64::from(F::TscOffsetHigh.encoding()), 0x7), Outcome::Succeed);
    assert_eq!(t.n.current().unwrap().vmcs().get(F::TscOffset), 0x7_0000_0005);
    // A memory source is 32 bits.
    t.mem.write_u64(OPERAND, 0x9999_9999_0000_0042).unwrap();
    t.regs.gpr[2] = u64::from(F::GuestRsp.encoding());
    assert_eq!(t.go(|n, l1| n.vmwrite(l1, at_with(OPERAND, 2))), Outcome::Succeed);
    assert_eq!(t.n.current().unwrap().vmcs().get(F::GuestRsp), 0x42);
}

// ---- VMLAUNCH / VMRESUME ----

#[test]
fn vmlaunch_shared_preconditions() {
    shared_preconditions(T::vmlaunch);
}

#[test]
fn vmresume_shared_preconditions() {
    shared_preconditions(T::vmresume);
}

#[test]
fn vmlaunch_without_current_vmcs_fails_invalid() {
    let mut t = T::on();
    t.mov_ss = true;
    assert_eq!(t.vmlaunch(), Outcome::FailInvalid);
    assert_eq!(t.vmresume(), Outcome::FailInvalid);
}

#[test]
fn vmlaunch_blocked_by_mov_ss_fails_with_26() {
    let mut t = T::current();
    t.mov_ss = true;
    // 26 comes before the launch-state checks.
    assert_eq!(t.vmresume(), valid(VmInstructionError::EntryEventsBlockedByMovSs));
    assert_eq!(t.vmlaunch(), valid(VmInstructionError::EntryEventsBlockedByMovSs));
    assert_eq!(t.error_field(), 26);
}

#[test]
fn vmlaunch_launched_vmcs_fails_with_4() {
    let mut t = T::current();
    t.n.current_mut().unwrap().vmcs_mut().launch_state = LaunchState::Launched;
    assert_eq!(t.vmlaunch(), valid(VmInstructionError::VmlaunchNonClearVmcs));
    assert_eq!(t.error_field(), 4);
    assert_eq!(t.vmresume(), Outcome::Enter { launch: false });
}

#[test]
fn vmresume_clear_vmcs_fails_with_5() {
    let mut t = T::current();
    assert_eq!(t.vmresume(), valid(VmInstructionError::VmresumeNonLaunchedVmcs));
    assert_eq!(t.error_field(), 5);
    assert_eq!(t.vmlaunch(), Outcome::Enter { launch: true });
}

// ---- INVEPT ----

/// A valid EPTP for [`VmxCaps::turtles`]: WB, 4 levels.
const EPTP: u64 = 0x30_0000 | 6 | 3 << 3;

#[test]
fn invept_shared_preconditions() {
    shared_preconditions(|t| t.invept(2, 0));
}

#[test]
fn invept_without_ept_is_ud() {
    let mut t = T::with_caps(VmxCaps::minimal());
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
    assert_eq!(t.invept(2, 0), UD);
    let no_invept =
        VmxCaps::turtles().to_builder().ept_vpid(VmxCaps::turtles().ept_vpid() - EptVpidCap::INVEPT).build();
    let mut t = T::with_caps(no_invept);
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
    assert_eq!(t.invept(2, 0), UD);
}

#[test]
fn invept_register_operand_is_ud() {
    let mut t = T::on();
    assert_eq!(t.go(|n, l1| n.invept(l1, reg(0, 1))), UD);
}

#[test]
fn invept_unsupported_type_fails_with_28() {
    let mut t = T::on();
    assert_eq!(t.invept(0, EPTP), Outcome::FailInvalid);
    let mut t = T::current();
    for kind in [0, 3, 1 << 32 | 1, u64::MAX] {
        assert_eq!(t.invept(kind, EPTP), valid(VmInstructionError::InvalidInveptInvvpidOperand), "{kind:#x}");
    }
    assert_eq!(t.error_field(), 28);
    let single_only = VmxCaps::turtles()
        .to_builder()
        .ept_vpid(VmxCaps::turtles().ept_vpid() - EptVpidCap::INVEPT_ALL_CONTEXT)
        .build();
    let mut t = T::with_caps(single_only);
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
    assert_eq!(t.vmptrld(VMCS_A), Outcome::Succeed);
    assert_eq!(t.invept(2, 0), valid(VmInstructionError::InvalidInveptInvvpidOperand));
}

#[test]
fn invept_descriptor_faults_after_the_type_check() {
    let mut t = T::current();
    t.regs.gpr[1] = 1;
    assert_eq!(t.go(|n, l1| n.invept(l1, at_with(MAPPED_END - 8, 1))), pf(0, MAPPED_END));
    t.regs.gpr[1] = 7;
    assert_eq!(
        t.go(|n, l1| n.invept(l1, at_with(MAPPED_END - 8, 1))),
        valid(VmInstructionError::InvalidInveptInvvpidOperand)
    );
}

#[test]
fn invept_single_context_invalid_eptp_fails_with_28() {
    let mut t = T::current();
    let width = t.n.caps().phys_addr_width();
    for bad in [EPTP & !7 | 1, EPTP & !0x38 | 4 << 3, EPTP | 1 << 8, EPTP | 1 << width, EPTP & !7] {
        assert_eq!(t.invept(1, bad), valid(VmInstructionError::InvalidInveptInvvpidOperand), "{bad:#x}");
    }
}

#[test]
fn invept_succeeds() {
    let mut t = T::current();
    assert_eq!(t.invept(1, EPTP), Outcome::InvalidateEpt { eptp: Some(EPTP) });
    assert_eq!(t.invept(1, EPTP | 1 << 6), Outcome::InvalidateEpt { eptp: Some(EPTP | 1 << 6) });
    // All-context INVEPT ignores the descriptor.
    assert_eq!(t.invept(2, u64::MAX), Outcome::InvalidateEpt { eptp: None });
    // No current VMCS needed to succeed.
    let mut t = T::on();
    assert_eq!(t.invept(2, 0), Outcome::InvalidateEpt { eptp: None });
}

// ---- INVVPID ----

#[test]
fn invvpid_shared_preconditions() {
    shared_preconditions(|t| t.invvpid(2, 0, 0));
}

#[test]
fn invvpid_without_vpid_is_ud() {
    let mut t = T::with_caps(VmxCaps::minimal());
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
    assert_eq!(t.invvpid(2, 0, 0), UD);
    let no_invvpid =
        VmxCaps::turtles().to_builder().ept_vpid(VmxCaps::turtles().ept_vpid() - EptVpidCap::INVVPID).build();
    let mut t = T::with_caps(no_invvpid);
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
    assert_eq!(t.invvpid(2, 0, 0), UD);
}

#[test]
fn invvpid_register_operand_is_ud() {
    let mut t = T::on();
    assert_eq!(t.go(|n, l1| n.invvpid(l1, reg(0, 1))), UD);
}

#[test]
fn invvpid_unsupported_type_fails_with_28() {
    let mut t = T::current();
    for kind in [4, 1 << 32, u64::MAX] {
        assert_eq!(t.invvpid(kind, 1, 0), valid(VmInstructionError::InvalidInveptInvvpidOperand), "{kind:#x}");
    }
    let caps = VmxCaps::turtles()
        .to_builder()
        .ept_vpid(VmxCaps::turtles().ept_vpid() - EptVpidCap::INVVPID_INDIVIDUAL_ADDRESS)
        .build();
    let mut t = T::with_caps(caps);
    assert_eq!(t.vmxon(VMXON_REGION), Outcome::Succeed);
    assert_eq!(t.invvpid(0, 1, 0), Outcome::FailInvalid);
}

#[test]
fn invvpid_descriptor_faults_after_the_type_check() {
    let mut t = T::current();
    t.regs.gpr[1] = 1;
    assert_eq!(t.go(|n, l1| n.invvpid(l1, at_with(MAPPED_END - 8, 1))), pf(0, MAPPED_END));
}

#[test]
fn invvpid_reserved_descriptor_bits_fail_with_28() {
    let mut t = T::current();
    for kind in 0..4 {
        assert_eq!(t.invvpid(kind, 1 << 16 | 1, 0), valid(VmInstructionError::InvalidInveptInvvpidOperand));
    }
}

#[test]
fn invvpid_vpid_zero_fails_with_28_except_all_context() {
    let mut t = T::current();
    for kind in [0, 1, 3] {
        assert_eq!(t.invvpid(kind, 0, 0), valid(VmInstructionError::InvalidInveptInvvpidOperand), "{kind}");
    }
    assert_eq!(t.invvpid(2, 0, 0), Outcome::InvalidateVpid { vpid: None, addr: None });
}

#[test]
fn invvpid_individual_address_must_be_canonical() {
    let mut t = T::current();
    assert_eq!(t.invvpid(0, 1, 0x0100_0000_0000_0000), valid(VmInstructionError::InvalidInveptInvvpidOperand));
    // Turtles offers LA57, so 57-bit canonical addresses are fine.
    assert_eq!(
        t.invvpid(0, 1, 0x0080_0000_0000_0000 - 1),
        Outcome::InvalidateVpid { vpid: Some(1), addr: Some(0x0080_0000_0000_0000 - 1) }
    );
}

#[test]
fn invvpid_succeeds() {
    let mut t = T::current();
    assert_eq!(t.invvpid(0, 5, 0x1000), Outcome::InvalidateVpid { vpid: Some(5), addr: Some(0x1000) });
    assert_eq!(t.invvpid(1, 5, 0xdead), Outcome::InvalidateVpid { vpid: Some(5), addr: None });
    assert_eq!(t.invvpid(2, 5, 0), Outcome::InvalidateVpid { vpid: None, addr: None });
    assert_eq!(t.invvpid(3, 0xffff, 0), Outcome::InvalidateVpid { vpid: Some(0xffff), addr: None });
}

// ---- Outcomes and dispatch ----

#[test]
fn outcome_flags() {
    let all = (Rflags::CF | Rflags::PF | Rflags::AF | Rflags::ZF | Rflags::SF | Rflags::OF).bits();
    let base = Rflags::FIXED1.bits() | Rflags::IF.bits();
    assert_eq!(Outcome::Succeed.rflags(base | all), base);
    assert_eq!(Outcome::Vmxoff.rflags(base | all), base);
    assert_eq!(Outcome::FailInvalid.rflags(base | all), base | Rflags::CF.bits());
    assert_eq!(Outcome::FailValid(VmInstructionError::VmxonInVmxRoot).rflags(base), base | Rflags::ZF.bits());
    assert_eq!(GP0.rflags(base | all), base | all);
    assert_eq!(Outcome::Enter { launch: true }.rflags(base | all), base | all);
    assert!(Outcome::Succeed.skips_instruction());
    assert!(Outcome::FailInvalid.skips_instruction());
    assert!(!GP0.skips_instruction());
    assert!(!Outcome::Enter { launch: false }.skips_instruction());
}

#[test]
fn vmfail_writes_the_error_only_with_a_current_vmcs() {
    let mut t = T::on();
    assert_eq!(t.n.vmfail(VmInstructionError::EntryInvalidControls), Outcome::FailInvalid);
    let mut t = T::current();
    assert_eq!(t.n.vmfail(VmInstructionError::EntryInvalidHostState), valid(VmInstructionError::EntryInvalidHostState));
    assert_eq!(t.error_field(), 8);
}

#[test]
fn emulate_dispatches_by_exit_reason() {
    let mut t = T::new();
    let e = t.pointer(VMXON_REGION);
    assert_eq!(t.go(|n, l1| n.emulate(ExitReason::Vmxon, l1, e).unwrap()), Outcome::Succeed);
    let e = t.pointer(VMCS_A);
    assert_eq!(t.go(|n, l1| n.emulate(ExitReason::Vmptrld, l1, e).unwrap()), Outcome::Succeed);
    assert_eq!(t.go(|n, l1| n.emulate(ExitReason::Vmlaunch, l1, e).unwrap()), Outcome::Enter { launch: true });
    let mut l1 = L1 { regs: &t.regs, mem: &mut t.mem, feature_control: 5, blocking_by_mov_ss: false };
    assert_eq!(t.n.emulate(ExitReason::Vmcall, &mut l1, e), None);
    assert_eq!(t.n.emulate(ExitReason::Vmfunc, &mut l1, e), None);
}

#[test]
fn undefined_instruction_information_is_ud() {
    let mut t = T::on();
    // Address size 3 is undefined.
    let e = ExitInfo { info: 3 << 7, qualification: 0 };
    assert_eq!(t.go(|n, l1| n.vmclear(l1, e)), UD);
}

// ---- Hostile L1 ----

mod hostile {
    use super::*;
    use proptest::prelude::*;
    use vmx::VmcsField;

    const REASONS: [ExitReason; 11] = [
        ExitReason::Vmxon,
        ExitReason::Vmxoff,
        ExitReason::Vmclear,
        ExitReason::Vmptrld,
        ExitReason::Vmptrst,
        ExitReason::Vmread,
        ExitReason::Vmwrite,
        ExitReason::Vmlaunch,
        ExitReason::Vmresume,
        ExitReason::Invept,
        ExitReason::Invvpid,
    ];

    /// Values that hit the interesting cases more often than uniform
    /// random bits would: region addresses, field encodings, small types.
    fn value() -> impl Strategy<Value = u64> {
        prop_oneof![
            any::<u64>(),
            Just(VMXON_REGION),
            Just(VMCS_A),
            Just(VMCS_B),
            Just(OPERAND),
            (0usize..VmcsField::COUNT).prop_map(|i| u64::from(VmcsField::ALL[i].encoding())),
            0u64..8,
            (0u64..MEM_SIZE),
        ]
    }

    /// Instruction information: random bits, or a well-formed memory or
    /// register operand.
    fn info() -> impl Strategy<Value = u32> {
        prop_oneof![
            any::<u32>(),
            (0usize..6, 0u8..16).prop_map(|(s, r2)| mem_info(s, r2)),
            (0u8..16, 0u8..16).prop_map(|(r, r2)| reg_info(r, r2)),
        ]
    }

    #[derive(Debug, Clone)]
    struct Case {
        steps: Vec<(usize, u32, u64)>,
        gpr: [u64; 16],
        cr0: u64,
        cr3: u64,
        cr4: u64,
        efer: u64,
        rflags: u64,
        seg_ar: [u32; 6],
        seg_base: [u64; 6],
        seg_limit: [u32; 6],
        feature_control: u64,
        mov_ss: bool,
        writes: Vec<(u64, u64)>,
        minimal: bool,
    }

    fn case() -> impl Strategy<Value = Case> {
        (
            prop::collection::vec((0usize..REASONS.len(), info(), value()), 1..12),
            prop::array::uniform16(value()),
            (any::<u64>(), prop_oneof![Just(PML4), any::<u64>()], any::<u64>(), any::<u64>(), any::<u64>()),
            (prop::array::uniform6(any::<u32>()), prop::array::uniform6(value()), prop::array::uniform6(any::<u32>())),
            (any::<u64>(), any::<bool>(), prop::collection::vec((0u64..MEM_SIZE, value()), 0..32), any::<bool>()),
        )
            .prop_map(|(steps, gpr, (cr0, cr3, cr4, efer, rflags), (seg_ar, seg_base, seg_limit), rest)| {
                Case {
                    steps,
                    gpr,
                    cr0,
                    cr3,
                    cr4,
                    efer,
                    rflags,
                    seg_ar,
                    seg_base,
                    seg_limit,
                    feature_control: rest.0,
                    mov_ss: rest.1,
                    writes: rest.2,
                    minimal: rest.3,
                }
            })
    }

    /// Random registers half the time; a sane 64-bit L1 otherwise, so
    /// the instructions get past their #UD and #GP checks.
    fn regs_of(c: &Case, sane: bool) -> Regs {
        let mut r = long_mode_regs();
        r.gpr = c.gpr;
        if !sane {
            r.cr0 = c.cr0;
            r.cr3 = c.cr3;
            r.cr4 = c.cr4;
            r.efer = c.efer;
            r.set_rflags(c.rflags);
            for i in 0..6 {
                r.seg[i].ar = c.seg_ar[i] & 0x1_f0ff;
                r.seg[i].base = c.seg_base[i];
                r.seg[i].limit = c.seg_limit[i];
            }
        }
        r
    }

    fn check(c: Case, sane: bool) {
        let caps = if c.minimal { VmxCaps::minimal() } else { VmxCaps::turtles() };
        let mut t = T::with_caps(caps);
        for &(addr, v) in &c.writes {
            let _ = t.mem.write_u64(addr & !7, v);
        }
        t.regs = regs_of(&c, sane);
        t.feature_control = if sane { 5 } else { c.feature_control };
        t.mov_ss = c.mov_ss;
        if sane {
            // Start in VMX operation with a current VMCS (if the random
            // memory writes left the regions and page tables alone).
            t.vmxon(VMXON_REGION);
            t.vmptrld(VMCS_A);
        }
        for &(i, info, qualification) in &c.steps {
            let had_current = t.n.current_ptr().is_some();
            let e = ExitInfo { info, qualification };
            let o = t.go(|n, l1| n.emulate(REASONS[i], l1, e).expect("a VMX instruction"));
            match o {
                Outcome::Fault { vector, error_code, cr2 } => {
                    assert!([vector::UD, vector::SS, vector::GP, vector::PF].contains(&vector), "{o:?}");
                    assert_eq!(error_code.is_some(), vector != vector::UD);
                    assert_eq!(cr2.is_some(), vector == vector::PF);
                }
                Outcome::FailValid(e) => {
                    assert!(had_current || t.n.current_ptr().is_some(), "{o:?}");
                    assert_eq!(t.error_field(), u64::from(e.number()));
                }
                Outcome::Enter { .. } => assert!(t.n.current().is_some()),
                Outcome::Vmxoff => assert!(!t.n.in_vmx_operation()),
                _ => {}
            }
            // Invariants of the state.
            if t.n.current_ptr().is_some() {
                assert!(t.n.in_vmx_operation());
                assert_ne!(t.n.current_ptr(), t.n.vmxon_ptr());
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn hostile_l1_never_panics(c in case()) {
            check(c, false);
        }

        #[test]
        fn hostile_operands_in_a_sane_l1_never_panic(c in case()) {
            check(c, true);
        }
    }
}
