//! VMCS shadowing: VMREAD and VMWRITE of a guest reaching the linked
//! shadow VMCS without exiting, the exits the bitmaps and encodings still
//! cause, the failures, and the VM-entry checks on the bitmap addresses
//! and the link pointer.

use super::super::tests::{Guest, HOST_RIP};
use super::*;
use crate::testutil::{CODE, DATA};
use crate::virt::VmEntry;
use vmx::exit::{Operand, VmxInstructionInfo};
use vmx::{EntryFailure, ExitReason, LaunchState, PinCtls, ProcCtls, VmxCaps};

const VMREAD_BITMAP: u64 = 0x30_4000;
const VMWRITE_BITMAP: u64 = 0x30_5000;
/// Where L0 says the shadow VMCS is: a page address, nothing in memory.
const LINK: u64 = 0x30_6000;

/// GUEST_RIP's encoding, a natural-width guest-state field.
const GUEST_RIP: u64 = 0x681e;
/// GUEST_RSP's encoding.
const GUEST_RSP: u64 = 0x681c;
/// EXIT_REASON's encoding, a read-only field.
const EXIT_REASON: u64 = 0x4402;

/// A guest running `code` then HLT (which exits) with "VMCS shadowing"
/// on, zeroed (everything shadowed) bitmaps and a linked shadow VMCS whose
/// GUEST_RIP is 0x1234_5678.
fn shadowing(code: &[u8]) -> Guest {
    let mut code = code.to_vec();
    code.push(0xf4);
    let mut g = Guest::new(&code, PinCtls::empty(), ProcCtls::HLT_EXITING, ProcCtls2::VMCS_SHADOWING);
    assert!(g.get(F::SecondaryProcControls) & u64::from(ProcCtls2::VMCS_SHADOWING.bits()) != 0);
    g.set(F::VmreadBitmapAddress, VMREAD_BITMAP).set(F::VmwriteBitmapAddress, VMWRITE_BITMAP);
    g.set(F::VmcsLinkPointer, LINK);
    let mut shadow = Box::new(Vmcs::new());
    shadow.set(F::GuestRip, 0x1234_5678);
    shadow.clear_written();
    assert!(g.m.cpu.set_shadow_vmcs(Some(shadow)).is_none());
    g
}

use VmcsField as F;

/// `mov rax, imm32` (sign-extended).
fn mov_rax(imm: u32) -> Vec<u8> {
    let mut c = vec![0x48, 0xc7, 0xc0];
    c.extend_from_slice(&imm.to_le_bytes());
    c
}

/// Sets a bit of the bitmap at `base` for `encoding`.
fn set_bit(g: &mut Guest, base: u64, encoding: u64) {
    let at = base + (encoding & 0x7fff) / 8;
    let mut byte = [0u8];
    g.m.mem.read(at, &mut byte).unwrap();
    g.m.mem.write(at, &[byte[0] | 1 << (encoding % 8)]).unwrap();
}

const CF: u64 = 1;
const ZF: u64 = 1 << 6;

#[test]
fn shadowed_vmread_and_vmwrite_do_not_exit() {
    // mov rax, GUEST_RIP; vmread rbx, rax; mov rax, GUEST_RSP;
    // vmwrite rax, rdx; hlt
    let mut code = mov_rax(GUEST_RIP as u32);
    code.extend([0x0f, 0x78, 0xc3]);
    code.extend(mov_rax(GUEST_RSP as u32));
    code.extend([0x0f, 0x79, 0xc2]);
    let mut g = shadowing(&code);
    g.m.cpu.regs.gpr[2] = 0xdead_beef_0000_1000;
    g.set(F::GuestRflags, g.get(F::GuestRflags) | CF | ZF);
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.m.cpu.regs.gpr[3], 0x1234_5678);
    let shadow = g.m.cpu.shadow_vmcs().unwrap();
    assert_eq!(shadow.get(F::GuestRsp), 0xdead_beef_0000_1000);
    // The write counts for the shadow's owner, like any VMWRITE
    // (GUEST_RSP feeds no check); a guest-state write does.
    assert_eq!(shadow.written(), 0);
    // VMsucceed.
    assert_eq!(g.get(F::GuestRflags) & (CF | ZF), 0);
    assert_eq!(g.m.cpu.exit_counts()[ExitReason::Vmread as usize], 0);
    assert_eq!(g.m.cpu.exit_counts()[ExitReason::Vmwrite as usize], 0);
    // The current VMCS is untouched.
    assert_eq!(g.get(F::GuestRsp), g.m.cpu.vmcs().unwrap().get(F::GuestRsp));
    assert_ne!(g.get(F::GuestRsp), 0xdead_beef_0000_1000);
}

#[test]
fn shadowed_writes_mark_the_check_groups_of_the_shadow() {
    // mov rax, GUEST_CS_SELECTOR (0x802); vmwrite rax, rdx; hlt
    let mut code = mov_rax(0x802);
    code.extend([0x0f, 0x79, 0xc2]);
    let mut g = shadowing(&code);
    g.m.cpu.regs.gpr[2] = 0x1_0008;
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    let shadow = g.m.cpu.shadow_vmcs().unwrap();
    // Truncated to the 16-bit field.
    assert_eq!(shadow.get(F::GuestCsSelector), 8);
    assert_eq!(shadow.written(), vmx::vmcs::check_group::GUEST);
}

#[test]
fn shadowed_memory_operands_use_the_guest_segments_and_paging() {
    // mov rax, GUEST_RIP; vmread [rdi], rax; mov rax, GUEST_RSP;
    // vmwrite rax, [rsi + 8]; hlt
    let mut code = mov_rax(GUEST_RIP as u32);
    code.extend([0x0f, 0x78, 0x07]);
    code.extend(mov_rax(GUEST_RSP as u32));
    code.extend([0x0f, 0x79, 0x46, 0x08]);
    let mut g = shadowing(&code);
    g.m.cpu.regs.gpr[7] = DATA;
    g.m.cpu.regs.gpr[6] = DATA + 0x100;
    g.m.mem.write_u64(DATA, u64::MAX).unwrap();
    g.m.mem.write_u64(DATA + 0x108, 0x5555_6666_7777_8888).unwrap();
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.m.mem.read_u64(DATA).unwrap(), 0x1234_5678);
    assert_eq!(g.m.cpu.shadow_vmcs().unwrap().get(F::GuestRsp), 0x5555_6666_7777_8888);
}

#[test]
fn a_faulting_memory_destination_leaves_no_result() {
    // mov rax, GUEST_RIP; vmread [rdi], rax with a non-canonical rdi:
    // #GP(0), which the exception bitmap turns into an exit.
    let mut code = mov_rax(GUEST_RIP as u32);
    code.extend([0x0f, 0x78, 0x07]);
    let mut g = shadowing(&code);
    g.set(F::ExceptionBitmap, 1 << 13);
    g.m.cpu.regs.gpr[7] = 0x8000_0000_0000_0000;
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo) & 0xff, 13);
    assert_eq!(g.get(F::GuestRip), CODE + 7);
}

#[test]
fn a_set_bitmap_bit_exits_with_the_usual_instruction_information() {
    // mov rax, GUEST_RIP; vmread rbx, rax; hlt
    let mut code = mov_rax(GUEST_RIP as u32);
    code.extend([0x0f, 0x78, 0xc3]);
    let mut g = shadowing(&code);
    set_bit(&mut g, VMREAD_BITMAP, GUEST_RIP);
    assert_eq!(g.run_to_exit(), ExitReason::Vmread as u64);
    let info = VmxInstructionInfo { operand: Operand::Register(3), reg2: 0 }.to_raw();
    assert_eq!(g.get(F::ExitInstructionInfo), u64::from(info));
    assert_eq!(g.get(F::ExitInstructionLength), 3);
    assert_eq!(g.get(F::GuestRip), CODE + 7);
    assert_eq!(g.m.cpu.regs.gpr[3], 0);

    // The VMWRITE bitmap is separate: vmwrite rax, rdx of the same field
    // exits only with its own bit.
    let mut code = mov_rax(GUEST_RIP as u32);
    code.extend([0x0f, 0x79, 0xc2]);
    let mut g = shadowing(&code);
    set_bit(&mut g, VMREAD_BITMAP, GUEST_RIP);
    g.m.cpu.regs.gpr[2] = 7;
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.m.cpu.shadow_vmcs().unwrap().get(F::GuestRip), 7);
    let mut g = shadowing(&code);
    set_bit(&mut g, VMWRITE_BITMAP, GUEST_RIP);
    assert_eq!(g.run_to_exit(), ExitReason::Vmwrite as u64);
    assert_eq!(
        g.get(F::ExitInstructionInfo),
        u64::from(VmxInstructionInfo { operand: Operand::Register(2), reg2: 0 }.to_raw())
    );
}

#[test]
fn encodings_above_0x7fff_always_exit() {
    // mov rax, imm; vmread rbx, rax: the bitmap bit of bits 14:0 is
    // clear, but bit 15 (and, in the second case, 63) is set.
    for imm in [0x8000 | GUEST_RIP as u32, 0x8000_681e] {
        let mut code = mov_rax(imm);
        code.extend([0x0f, 0x78, 0xc3]);
        let mut g = shadowing(&code);
        assert_eq!(g.run_to_exit(), ExitReason::Vmread as u64, "{imm:#x}");
    }
}

#[test]
fn without_the_control_the_linked_shadow_is_not_used() {
    let mut code = mov_rax(GUEST_RIP as u32);
    code.extend([0x0f, 0x78, 0xc3]);
    let mut g = shadowing(&code);
    g.set(F::SecondaryProcControls, 0);
    assert_eq!(g.run_to_exit(), ExitReason::Vmread as u64);
}

#[test]
fn link_pointer_all_ones_is_vmfail_invalid() {
    let mut code = mov_rax(GUEST_RIP as u32);
    code.extend([0x0f, 0x78, 0xc3]);
    let mut g = shadowing(&code);
    g.set(F::VmcsLinkPointer, u64::MAX);
    g.set(F::GuestRflags, g.get(F::GuestRflags) | ZF);
    g.m.cpu.regs.gpr[3] = 0x77;
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.get(F::GuestRflags) & (CF | ZF), CF);
    assert_eq!(g.m.cpu.regs.gpr[3], 0x77);
    assert_eq!(g.get(F::VmInstructionError), 0);
}

#[test]
fn unsupported_fields_fail_valid_into_the_current_vmcs() {
    // mov rax, 1 (no such field); vmread rbx, rax; vmwrite rax, rdx; hlt
    let mut code = mov_rax(1);
    code.extend([0x0f, 0x78, 0xc3]);
    code.push(0xf4);
    code.extend([0x0f, 0x79, 0xc2]);
    let mut g = shadowing(&code);
    g.set(F::GuestRflags, g.get(F::GuestRflags) | CF);
    g.m.cpu.regs.gpr[3] = 0x77;
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.get(F::GuestRflags) & (CF | ZF), ZF);
    assert_eq!(g.m.cpu.regs.gpr[3], 0x77);
    // 31.2: VMfailValid writes the current VMCS's error field.
    assert_eq!(g.get(F::VmInstructionError), VmInstructionError::UnsupportedVmcsComponent as u64);
    assert_eq!(g.m.cpu.shadow_vmcs().unwrap().get(F::VmInstructionError), 0);
    // Past the HLT: the VMWRITE fails the same way.
    g.set(F::VmInstructionError, 0);
    g.set(F::GuestRip, g.get(F::GuestRip) + 1);
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.get(F::GuestRflags) & (CF | ZF), ZF);
    assert_eq!(g.get(F::VmInstructionError), 12);
}

#[test]
fn vmwrite_to_a_read_only_field_needs_vmwrite_to_any_field() {
    // mov rax, EXIT_REASON; vmwrite rax, rdx; hlt
    let mut code = mov_rax(EXIT_REASON as u32);
    code.extend([0x0f, 0x79, 0xc2]);
    // This processor reports IA32_VMX_MISC bit 29: the write succeeds.
    let mut g = shadowing(&code);
    g.m.cpu.regs.gpr[2] = 9;
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.m.cpu.shadow_vmcs().unwrap().get(F::ExitReason), 9);
    assert_eq!(g.get(F::GuestRflags) & (CF | ZF), 0);
    // Without it, error 13.
    let mut g = shadowing(&code);
    let caps = VmxCaps::processor();
    let strict = caps.to_builder().misc(vmx::caps::VmxMisc { vmwrite_any_field: false, ..caps.misc() }).build();
    g.m.cpu.vmxon(strict);
    g.m.cpu.regs.gpr[2] = 9;
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.m.cpu.shadow_vmcs().unwrap().get(F::ExitReason), 0);
    assert_eq!(g.get(F::GuestRflags) & (CF | ZF), ZF);
    assert_eq!(g.get(F::VmInstructionError), VmInstructionError::VmwriteReadOnlyComponent as u64);
}

#[test]
fn cpl3_shadowed_access_is_gp() {
    let mut code = mov_rax(GUEST_RIP as u32);
    code.extend([0x0f, 0x78, 0xc3]);
    let mut g = shadowing(&code).user_mode();
    g.set(F::ExceptionBitmap, 1 << 13);
    g.m.cpu.regs.gpr[3] = 0x77;
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo) & 0xff, 13);
    assert_eq!(g.m.cpu.regs.gpr[3], 0x77);
}

#[test]
fn entry_checks_the_bitmap_addresses() {
    for (field, id) in
        [(F::VmreadBitmapAddress, "ctl.vmread_bitmap_address"), (F::VmwriteBitmapAddress, "ctl.vmwrite_bitmap_address")]
    {
        let mut g = shadowing(&[]);
        g.set(field, VMREAD_BITMAP | 0x800);
        match g.enter() {
            VmEntry::VmFailValid { error, check: Some(c) } => {
                assert_eq!(error, VmInstructionError::EntryInvalidControls);
                assert_eq!(c.id, id);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(g.get(F::VmInstructionError), VmInstructionError::EntryInvalidControls as u64);
        // Beyond the physical-address width.
        g.set(field, 1 << 52);
        assert!(matches!(g.enter(), VmEntry::VmFailValid { check: Some(c), .. } if c.id == id));
        // Without "VMCS shadowing" the addresses do not matter.
        g.set(F::SecondaryProcControls, 0);
        assert_eq!(g.enter(), VmEntry::Entered);
    }
}

#[test]
fn entry_checks_the_link_pointer_against_the_linked_shadow() {
    let link_failure = |g: &mut Guest, id: &str| match g.enter() {
        VmEntry::Failed(e) => {
            assert_eq!(e.check.id, id);
            assert!(matches!(e.failure, EntryFailure::GuestState { .. }));
            // 27.8: exit reason 33 with bit 31, qualification 4 (link
            // pointer), host state loaded.
            assert_eq!(g.get(F::ExitReason), (1 << 31) | 33);
            assert_eq!(g.get(F::ExitQualification), 4);
            assert_eq!(g.m.cpu.regs.rip, HOST_RIP);
        }
        other => panic!("{other:?}"),
    };
    // Misaligned.
    let mut g = shadowing(&[]);
    g.set(F::VmcsLinkPointer, LINK | 8);
    link_failure(&mut g, "guest.vmcs_link_pointer.address");
    // Nothing linked: memory holds no shadow VMCS, even with a revision
    // word and bit 31 written there.
    let mut g = shadowing(&[]);
    let caps = VmxCaps::processor();
    g.m.mem.write_u32(LINK, caps.revision_id() | 1 << 31).unwrap();
    g.m.cpu.set_shadow_vmcs(None);
    link_failure(&mut g, "guest.vmcs_link_pointer.shadow");
    // Linked again: the entry passes and the shadow is used.
    let mut g = shadowing(&[]);
    assert_eq!(g.enter(), VmEntry::Entered);
    assert_eq!(g.m.cpu.vmcs().unwrap().launch_state, LaunchState::Launched);
}
