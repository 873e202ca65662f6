//! One test per exit condition of SDM vol. 3C 26.1 "Instructions That
//! Cause VM Exits" and per behaviour change of 26.3 beyond the first set
//! in `virt/tests.rs`: a few guest instructions (bytes with their
//! assembly), then the exit reason, qualification and information fields
//! they must produce.

use crate::testutil::{Machine, CODE};
use crate::virt::tests::Guest;
use crate::RunExit;
use vmx::controls::{PinCtls, ProcCtls, ProcCtls2};
use vmx::exit::{
    AddressSize, CrAccess, CrAccessType, DescriptorTableInfo, DescriptorTableInstruction, DrAccess, IoAccess, IoSize,
    LdtrTrInfo, LdtrTrInstruction, MemoryOperand, Operand, TaskSwitch, TaskSwitchSource, VmxInstructionInfo,
};
use vmx::{ExitReason, VmcsField as F};
use x86::Cr4;

fn with(code: &[u8], proc: ProcCtls, proc2: ProcCtls2) -> Guest {
    Guest::new(code, PinCtls::empty(), proc, proc2)
}

/// Runs `g` with #UD intercepted and asserts it raised #UD at CODE.
fn assert_ud(mut g: Guest) {
    g.set(F::ExceptionBitmap, 1 << 6);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0306);
    assert_eq!(g.get(F::GuestRip), CODE);
}

/// A 64-bit memory operand in DS (or `segment`).
fn mem(base: Option<u8>, index: Option<u8>, scaling: u8, segment: u8) -> MemoryOperand {
    MemoryOperand { scaling, address_size: AddressSize::Bits64, segment, index, base }
}

const DS: u8 = 3;
const SS: u8 = 2;

#[test]
fn invd_exits_unconditionally() {
    // invd
    let mut g = Guest::plain(&[0x0f, 0x08]);
    assert_eq!(g.run_to_exit(), ExitReason::Invd as u64);
    assert_eq!(g.get(F::ExitInstructionLength), 2);
    assert_eq!(g.get(F::GuestRip), CODE);
}

#[test]
fn xsetbv_exits_after_the_osxsave_check() {
    // xor ecx, ecx; xsetbv
    let code = [0x31, 0xc9, 0x0f, 0x01, 0xd1];
    let mut g = Guest::plain(&code);
    g.set(F::GuestCr4, g.get(F::GuestCr4) | Cr4::OSXSAVE.bits());
    assert_eq!(g.run_to_exit(), ExitReason::Xsetbv as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 2);
    assert_eq!(g.get(F::ExitInstructionLength), 3);
    // Without CR4.OSXSAVE the #UD comes first (26.1.1).
    let mut g = Guest::plain(&code);
    g.set(F::ExceptionBitmap, 1 << 6);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0306);
}

#[test]
fn getsec_is_ud_without_smxe() {
    // getsec: CR4.SMXE is 0 in the guest, and the #UD has priority over
    // the unconditional exit.
    assert_ud(Guest::plain(&[0x0f, 0x37]));
}

#[test]
fn vmx_instructions_exit_with_instruction_information() {
    let vmx_info = |operand, reg2| VmxInstructionInfo { operand, reg2 }.to_raw() as u64;
    let cases: &[(&[u8], ExitReason, u64, u64)] = &[
        // vmcall
        (&[0x0f, 0x01, 0xc1], ExitReason::Vmcall, 0, 0),
        // vmlaunch, vmresume, vmxoff
        (&[0x0f, 0x01, 0xc2], ExitReason::Vmlaunch, 0, 0),
        (&[0x0f, 0x01, 0xc3], ExitReason::Vmresume, 0, 0),
        (&[0x0f, 0x01, 0xc4], ExitReason::Vmxoff, 0, 0),
        // vmclear [rdi + rcx*8 + 0x10]
        (
            &[0x66, 0x0f, 0xc7, 0x74, 0xcf, 0x10],
            ExitReason::Vmclear,
            0x10,
            vmx_info(Operand::Memory(mem(Some(7), Some(1), 3, DS)), 0),
        ),
        // vmptrld [rax]; vmptrst [rax]; vmxon [rax]
        (&[0x0f, 0xc7, 0x30], ExitReason::Vmptrld, 0, vmx_info(Operand::Memory(mem(Some(0), None, 0, DS)), 0)),
        (&[0x0f, 0xc7, 0x38], ExitReason::Vmptrst, 0, vmx_info(Operand::Memory(mem(Some(0), None, 0, DS)), 0)),
        (&[0xf3, 0x0f, 0xc7, 0x30], ExitReason::Vmxon, 0, vmx_info(Operand::Memory(mem(Some(0), None, 0, DS)), 0)),
        // vmread [rbx - 8], rdx: a negative displacement, sign-extended.
        (
            &[0x0f, 0x78, 0x53, 0xf8],
            ExitReason::Vmread,
            (-8i64) as u64,
            vmx_info(Operand::Memory(mem(Some(3), None, 0, DS)), 2),
        ),
        // vmwrite rax, rbx: register operand rbx, field in rax.
        (&[0x0f, 0x79, 0xc3], ExitReason::Vmwrite, 0, 0x418),
        // invept rdx, [rip + 0x40]: RIP-relative, so the displacement plus
        // the next instruction's RIP (28.2.1).
        (&[0x66, 0x0f, 0x38, 0x80, 0x15, 0x40, 0x00, 0x00, 0x00], ExitReason::Invept, CODE + 9 + 0x40, 0x2841_8100),
        // invvpid rcx, [rsp + 8]: SS by default.
        (
            &[0x66, 0x0f, 0x38, 0x81, 0x4c, 0x24, 0x08],
            ExitReason::Invvpid,
            8,
            vmx_info(Operand::Memory(mem(Some(4), None, 0, SS)), 1),
        ),
    ];
    for &(code, reason, qualification, info) in cases {
        let mut g = Guest::plain(code);
        assert_eq!(g.run_to_exit(), reason as u64, "{reason:?}");
        assert_eq!(g.get(F::ExitQualification), qualification, "{reason:?}");
        assert_eq!(g.get(F::ExitInstructionInfo), info, "{reason:?}");
        assert_eq!(g.get(F::ExitInstructionLength), code.len() as u64, "{reason:?}");
        assert_eq!(g.get(F::GuestRip), CODE);
    }
}

#[test]
fn privilege_faults_come_before_exits_except_for_mov_dr() {
    // wbinvd at CPL 3 with WBINVD exiting: #GP, not an exit (26.1.1).
    let mut g = with(&[0x0f, 0x09], ProcCtls::empty(), ProcCtls2::WBINVD_EXITING).user_mode();
    g.set(F::ExceptionBitmap, 1 << 13);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0b0d);
    // mov dr7, rcx at CPL 3 with MOV-DR exiting: the exit wins (26.1.3).
    let mut g = with(&[0x0f, 0x23, 0xf9], ProcCtls::MOV_DR_EXITING, ProcCtls2::empty()).user_mode();
    g.set(F::ExceptionBitmap, 1 << 13);
    assert_eq!(g.run_to_exit(), ExitReason::MovDr as u64);
}

#[test]
fn vmx_instructions_exit_at_cpl3_and_are_ud_in_root() {
    // vmclear [rax] at CPL 3: the exit comes before the CPL check (ch. 31,
    // VMCLEAR "Operation").
    let mut g = Guest::plain(&[0x66, 0x0f, 0xc7, 0x30]).user_mode();
    assert_eq!(g.run_to_exit(), ExitReason::Vmclear as u64);
    assert_eq!(g.get(F::GuestCsSelector), 0x1b);
    // In root operation (L0 never executes them): #UD, here a triple fault
    // for want of an IDT, and the instruction is reported unimplemented.
    let mut m = Machine::long64(&[0x0f, 0x01, 0xc1]);
    m.cpu.regs.idtr.limit = 0;
    assert!(matches!(m.run(), RunExit::Shutdown(_)));
    assert_eq!(m.cpu.stats.unimplemented.get("Vmcall"), Some(&1));
}

#[test]
fn vmfunc_needs_enable_vm_functions_and_exits_for_disabled_functions() {
    // xor eax, eax; vmfunc
    let code = [0x31, 0xc0, 0x0f, 0x01, 0xd4];
    let mut g = Guest::plain(&code);
    g.set(F::ExceptionBitmap, 1 << 6);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 2);
    let mut g = with(&code, ProcCtls::empty(), ProcCtls2::ENABLE_VM_FUNCTIONS);
    assert_eq!(g.run_to_exit(), ExitReason::Vmfunc as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 2);
    assert_eq!(g.get(F::ExitInstructionLength), 3);
}

/// An identity EPT over the test machine's 4 MiB, without `hole`.
fn identity_ept(g: &mut Guest, hole: Option<u64>) -> u64 {
    use crate::ept::EptBuilder;
    use vmx::controls::{EptEntry, MemoryType};
    let mem = &mut g.m.mem;
    let mut b = EptBuilder::new(mem, |m: &mut crate::Memory| m.alloc_private_page()).unwrap();
    b.map(mem, 0, 0, 4 << 20, EptEntry::RWX, MemoryType::WriteBack).unwrap();
    if let Some(h) = hole {
        b.unmap(mem, h, 0x1000).unwrap();
    }
    b.eptp()
}

#[test]
fn vmfunc_switches_the_eptp_from_the_list() {
    use crate::testutil::DATA;
    // mov ecx, 1; xor eax, eax; vmfunc; mov [DATA + 8], eax
    let code = [0xb9, 0x01, 0x00, 0x00, 0x00, 0x31, 0xc0, 0x0f, 0x01, 0xd4, 0x89, 0x04, 0x25, 0x08, 0x00, 0x02, 0x00];
    let list = 0x30_5000;
    let guest = |code: &[u8]| {
        let mut g = with(code, ProcCtls::empty(), ProcCtls2::ENABLE_VM_FUNCTIONS | ProcCtls2::ENABLE_EPT);
        let full = identity_ept(&mut g, None);
        let holed = identity_ept(&mut g, Some(DATA));
        g.m.mem.write_u64(list, full).unwrap();
        g.m.mem.write_u64(list + 8, holed).unwrap();
        g.set(F::EptPointer, full).set(F::VmFunctionControls, 1).set(F::EptpListAddress, list);
        (g, holed)
    };
    // The switch succeeds; the store then meets the hole of EPT 1.
    let (mut g, holed) = guest(&code);
    assert_eq!(g.run_to_exit(), ExitReason::EptViolation as u64);
    assert_eq!(g.get(F::GuestPhysicalAddress), DATA + 8);
    assert_eq!(g.get(F::EptPointer), holed);
    assert_eq!(g.get(F::GuestRip), CODE + 10);
    // Entry 2 is not a valid EPTP, index 512 is beyond the list: exit 59.
    for ecx in [2u8, 0] {
        let mut code = code;
        code[1] = ecx;
        code[2] = if ecx == 0 { 2 } else { 0 }; // ecx = 0x200
        let (mut g, _) = guest(&code);
        assert_eq!(g.run_to_exit(), ExitReason::Vmfunc as u64);
        assert_eq!(g.get(F::GuestRip), CODE + 7);
    }
}

#[test]
fn invlpg_exiting_reports_the_linear_address() {
    // invlpg [rax + 0x10]
    let mut g = with(&[0x0f, 0x01, 0x78, 0x10], ProcCtls::INVLPG_EXITING, ProcCtls2::empty());
    g.m.cpu.regs.gpr[0] = 0x5000;
    assert_eq!(g.run_to_exit(), ExitReason::Invlpg as u64);
    assert_eq!(g.get(F::ExitQualification), 0x5010);
    assert_eq!(g.get(F::ExitInstructionLength), 4);
}

#[test]
fn invpcid_needs_its_enable_and_exits_under_invlpg_exiting() {
    // invpcid rcx, [rdx + 0x20]
    let code = [0x66, 0x0f, 0x38, 0x82, 0x4a, 0x20];
    assert_ud(with(&code, ProcCtls::INVLPG_EXITING, ProcCtls2::empty()));
    let mut g = with(&code, ProcCtls::INVLPG_EXITING, ProcCtls2::ENABLE_INVPCID);
    assert_eq!(g.run_to_exit(), ExitReason::Invpcid as u64);
    assert_eq!(g.get(F::ExitQualification), 0x20);
    let info = VmxInstructionInfo { operand: Operand::Memory(mem(Some(2), None, 0, DS)), reg2: 1 };
    assert_eq!(g.get(F::ExitInstructionInfo), u64::from(info.to_raw()));
}

#[test]
fn rdpmc_exiting() {
    // rdpmc
    let mut g = with(&[0x0f, 0x33], ProcCtls::RDPMC_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::Rdpmc as u64);
    assert_eq!(g.get(F::ExitInstructionLength), 2);
}

#[test]
fn rdrand_and_rdseed_exits_name_the_destination_and_size() {
    // rdrand r9d; rdseed ax; rdrand rcx
    let cases: &[(&[u8], ExitReason, u64)] = &[
        (&[0x41, 0x0f, 0xc7, 0xf1], ExitReason::Rdrand, (9 << 3) | (1 << 11)),
        (&[0x66, 0x0f, 0xc7, 0xf8], ExitReason::Rdseed, 0),
        (&[0x48, 0x0f, 0xc7, 0xf1], ExitReason::Rdrand, (1 << 3) | (2 << 11)),
    ];
    for &(code, reason, info) in cases {
        let mut g = with(code, ProcCtls::empty(), ProcCtls2::RDRAND_EXITING | ProcCtls2::RDSEED_EXITING);
        assert_eq!(g.run_to_exit(), reason as u64);
        assert_eq!(g.get(F::ExitInstructionInfo), info, "{reason:?}");
        assert_eq!(g.get(F::ExitInstructionLength), code.len() as u64);
    }
    // Without RDSEED exiting, RDSEED runs and the HLT exits.
    let mut g = with(&[0x66, 0x0f, 0xc7, 0xf8, 0xf4], ProcCtls::HLT_EXITING, ProcCtls2::RDRAND_EXITING);
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
}

#[test]
fn wbinvd_exiting() {
    // wbinvd; hlt
    let code = [0x0f, 0x09, 0xf4];
    let mut g = with(&code, ProcCtls::HLT_EXITING, ProcCtls2::WBINVD_EXITING);
    assert_eq!(g.run_to_exit(), ExitReason::Wbinvd as u64);
    assert_eq!(g.get(F::GuestRip), CODE);
    let mut g = with(&code, ProcCtls::HLT_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
}

#[test]
fn monitor_and_mwait_exiting() {
    // monitor; mwait
    let mut g = with(&[0x0f, 0x01, 0xc8], ProcCtls::MONITOR_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::Monitor as u64);
    let mut g = with(&[0x0f, 0x01, 0xc9], ProcCtls::MWAIT_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::Mwait as u64);
    assert_eq!(g.get(F::ExitQualification), 0, "no monitor armed");
    assert_eq!(g.get(F::ExitInstructionLength), 3);
}

#[test]
fn pause_exiting() {
    // pause; hlt
    let mut g = with(&[0xf3, 0x90, 0xf4], ProcCtls::PAUSE_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::Pause as u64);
    assert_eq!(g.get(F::ExitInstructionLength), 2);
    let mut g = with(&[0xf3, 0x90, 0xf4], ProcCtls::HLT_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 2);
}

#[test]
fn mov_dr_exiting_reports_register_and_direction() {
    // mov dr7, rcx
    let mut g = with(&[0x0f, 0x23, 0xf9], ProcCtls::MOV_DR_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::MovDr as u64);
    assert_eq!(DrAccess::from_raw(g.get(F::ExitQualification)), DrAccess { dr: 7, from_dr: false, gpr: 1 });
    // mov rdx, dr6
    let mut g = with(&[0x0f, 0x21, 0xf2], ProcCtls::MOV_DR_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::MovDr as u64);
    assert_eq!(g.get(F::ExitQualification), 0x216);
}

#[test]
fn clts_follows_the_cr0_mask_and_shadow() {
    // clts; hlt
    let code = [0x0f, 0x06, 0xf4];
    let ts = x86::Cr0::TS.bits();
    let mut g = with(&code, ProcCtls::HLT_EXITING, ProcCtls2::empty());
    g.set(F::Cr0GuestHostMask, ts).set(F::Cr0ReadShadow, ts);
    assert_eq!(g.run_to_exit(), ExitReason::ControlRegisterAccess as u64);
    let q = CrAccess::from_raw(g.get(F::ExitQualification));
    assert_eq!((q.cr, q.access, q.gpr), (0, CrAccessType::Clts, 0));
    // Host-owned TS believed clear: CLTS runs and leaves TS alone.
    let mut g = with(&code, ProcCtls::HLT_EXITING, ProcCtls2::empty());
    g.set(F::GuestCr0, g.get(F::GuestCr0) | ts).set(F::Cr0GuestHostMask, ts).set(F::Cr0ReadShadow, 0);
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_ne!(g.get(F::GuestCr0) & ts, 0);
}

#[test]
fn lmsw_exits_with_its_source_and_operand_kind() {
    // lmsw ax
    let mut g = with(&[0x0f, 0x01, 0xf0], ProcCtls::empty(), ProcCtls2::empty());
    let cr0 = g.get(F::GuestCr0);
    // Source 0xcd0b: PE, MP and TS; the host owns MP, EM and TS.
    g.m.cpu.regs.gpr[0] = 0xab_cd0b;
    g.set(F::Cr0GuestHostMask, 0xe).set(F::Cr0ReadShadow, cr0);
    assert_eq!(g.run_to_exit(), ExitReason::ControlRegisterAccess as u64);
    let q = CrAccess::from_raw(g.get(F::ExitQualification));
    assert_eq!(q, CrAccess { cr: 0, access: CrAccessType::Lmsw, lmsw_memory: false, gpr: 0, lmsw_source: 0xcd0b });
    // lmsw [rbx + 4]: the memory bit and the guest-linear address.
    let mut g = with(&[0x0f, 0x01, 0x73, 0x04], ProcCtls::empty(), ProcCtls2::empty());
    g.m.cpu.regs.gpr[3] = crate::testutil::DATA;
    g.m.mem.write(crate::testutil::DATA + 4, &[0x09, 0x00]).unwrap(); // PE | TS
    g.set(F::Cr0GuestHostMask, 0xe).set(F::Cr0ReadShadow, cr0);
    assert_eq!(g.run_to_exit(), ExitReason::ControlRegisterAccess as u64);
    let q = CrAccess::from_raw(g.get(F::ExitQualification));
    assert!(q.lmsw_memory);
    assert_eq!(q.lmsw_source, 9);
    assert_eq!(g.get(F::GuestLinearAddress), crate::testutil::DATA + 4);
}

#[test]
fn descriptor_table_exiting_reports_the_operand() {
    let p2 = ProcCtls2::DESCRIPTOR_TABLE_EXITING;
    // lgdt [rax + 0x20]
    let mut g = with(&[0x0f, 0x01, 0x50, 0x20], ProcCtls::empty(), p2);
    assert_eq!(g.run_to_exit(), ExitReason::GdtrIdtrAccess as u64);
    assert_eq!(g.get(F::ExitQualification), 0x20);
    let info = DescriptorTableInfo {
        memory: mem(Some(0), None, 0, DS),
        operand_size_32: false,
        instruction: DescriptorTableInstruction::Lgdt,
    };
    assert_eq!(g.get(F::ExitInstructionInfo), u64::from(info.to_raw()));
    // sidt [rsp]
    let mut g = with(&[0x0f, 0x01, 0x0c, 0x24], ProcCtls::empty(), p2);
    assert_eq!(g.run_to_exit(), ExitReason::GdtrIdtrAccess as u64);
    let info = DescriptorTableInfo::from_raw(g.get(F::ExitInstructionInfo) as u32).unwrap();
    assert_eq!(
        (info.instruction, info.memory.segment, info.memory.base),
        (DescriptorTableInstruction::Sidt, SS, Some(4))
    );
    // sldt ax
    let mut g = with(&[0x66, 0x0f, 0x00, 0xc0], ProcCtls::empty(), p2);
    assert_eq!(g.run_to_exit(), ExitReason::LdtrTrAccess as u64);
    let info = LdtrTrInfo { operand: Operand::Register(0), instruction: LdtrTrInstruction::Sldt };
    assert_eq!(g.get(F::ExitInstructionInfo), u64::from(info.to_raw()));
    assert_eq!(g.get(F::ExitQualification), 0);
    // ltr [rbx]
    let mut g = with(&[0x0f, 0x00, 0x1b], ProcCtls::empty(), p2);
    assert_eq!(g.run_to_exit(), ExitReason::LdtrTrAccess as u64);
    let info = LdtrTrInfo { operand: Operand::Memory(mem(Some(3), None, 0, DS)), instruction: LdtrTrInstruction::Ltr };
    assert_eq!(g.get(F::ExitInstructionInfo), u64::from(info.to_raw()));
    // Without the control, SLDT runs.
    let mut g = with(&[0x66, 0x0f, 0x00, 0xc0, 0xf4], ProcCtls::HLT_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
}

#[test]
fn rdtscp_is_ud_without_enable_rdtscp() {
    // rdtscp
    let code = [0x0f, 0x01, 0xf9];
    assert_ud(with(&code, ProcCtls::RDTSC_EXITING, ProcCtls2::empty()));
    let mut g = with(&code, ProcCtls::RDTSC_EXITING, ProcCtls2::ENABLE_RDTSCP);
    assert_eq!(g.run_to_exit(), ExitReason::Rdtscp as u64);
    assert_eq!(g.get(F::ExitInstructionLength), 3);
}

#[test]
fn ins_and_outs_exit_with_string_bits_address_and_information() {
    // rep outsb (dx = 0x80, rsi = DATA)
    let mut g = with(&[0xf3, 0x6e], ProcCtls::UNCONDITIONAL_IO_EXITING, ProcCtls2::empty());
    g.m.cpu.regs.gpr[2] = 0x80;
    g.m.cpu.regs.gpr[6] = crate::testutil::DATA;
    g.m.cpu.regs.gpr[1] = 5;
    assert_eq!(g.run_to_exit(), ExitReason::IoInstruction as u64);
    let q = IoAccess { size: IoSize::Byte, is_in: false, string: true, rep: true, immediate: false, port: 0x80 };
    assert_eq!(g.get(F::ExitQualification), q.to_raw());
    assert_eq!(g.get(F::GuestLinearAddress), crate::testutil::DATA);
    // Address size 64 (2 << 7), segment DS (3 << 15).
    assert_eq!(g.get(F::ExitInstructionInfo), (2 << 7) | (3 << 15));
    assert_eq!(g.m.cpu.regs.gpr[1], 5, "nothing was transferred");
    assert_eq!(g.get(F::ExitInstructionLength), 2);
    // insw (dx = 0x3f8, rdi = 0x3000), through the I/O bitmap.
    let mut g = with(&[0x66, 0x6d], ProcCtls::USE_IO_BITMAPS, ProcCtls2::empty());
    g.m.mem.write(crate::virt::tests::IO_BITMAP_A + 0x3f8 / 8, &[1]).unwrap();
    g.m.cpu.regs.gpr[2] = 0x3f8;
    g.m.cpu.regs.gpr[7] = 0x3000;
    assert_eq!(g.run_to_exit(), ExitReason::IoInstruction as u64);
    let q = IoAccess { size: IoSize::Word, is_in: true, string: true, rep: false, immediate: false, port: 0x3f8 };
    assert_eq!(g.get(F::ExitQualification), q.to_raw());
    assert_eq!(g.get(F::GuestLinearAddress), 0x3000);
    assert_eq!(g.get(F::ExitInstructionInfo) & (7 << 7), 2 << 7);
    // fs outsb in 32-bit code: 32-bit address size, FS, its base in the
    // linear address.
    let mut g = prot32_guest(&[0x64, 0x6e]);
    g.set(F::PrimaryProcControls, g.get(F::PrimaryProcControls) | u64::from(ProcCtls::UNCONDITIONAL_IO_EXITING.bits()));
    g.set(F::GuestFsBase, 0x1000);
    g.m.cpu.regs.gpr[6] = 0x234;
    assert_eq!(g.run_to_exit(), ExitReason::IoInstruction as u64);
    assert_eq!(g.get(F::GuestLinearAddress), 0x1234);
    assert_eq!(g.get(F::ExitInstructionInfo), (1 << 7) | (4 << 15));
}

#[test]
fn int3_and_int1_exit_as_software_exceptions() {
    // int3
    let mut g = Guest::plain(&[0xcc]);
    g.set(F::ExceptionBitmap, 1 << 3);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0603);
    assert_eq!(g.get(F::ExitInstructionLength), 1);
    assert_eq!(g.get(F::GuestRip), CODE);
    // int1: privileged software exception.
    let mut g = Guest::plain(&[0xf1]);
    g.set(F::ExceptionBitmap, 1 << 1);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0501);
    assert_eq!(g.get(F::ExitInstructionLength), 1);
    assert_eq!(g.get(F::GuestRip), CODE);
    // mov al, 0x7f; add al, 1; into (32-bit code: INTO is invalid in
    // 64-bit mode)
    let mut g = prot32_guest(&[0xb0, 0x7f, 0x04, 0x01, 0xce]);
    g.set(F::ExceptionBitmap, 1 << 4);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0604);
    assert_eq!(g.get(F::GuestRip), CODE + 4);
}

#[test]
fn smsw_reads_the_cr0_shadow() {
    // smsw eax; hlt
    let mut g = with(&[0x0f, 0x01, 0xe0, 0xf4], ProcCtls::HLT_EXITING, ProcCtls2::empty());
    let ts = x86::Cr0::TS.bits();
    g.set(F::Cr0GuestHostMask, ts).set(F::Cr0ReadShadow, ts);
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_ne!(g.m.cpu.regs.gpr[0] & ts, 0);
    assert_eq!(g.get(F::GuestCr0) & ts, 0);
}

#[test]
fn monitor_trap_flag_exits_after_each_instruction() {
    // nop; nop; hlt
    let mut g = with(&[0x90, 0x90, 0xf4], ProcCtls::MONITOR_TRAP_FLAG, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::MonitorTrapFlag as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 1);
    assert_eq!(g.get(F::ExitInstructionLength), 0);
    assert_eq!(g.run_to_exit(), ExitReason::MonitorTrapFlag as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 2);
}

#[test]
fn monitor_trap_flag_exits_after_a_fault_is_delivered() {
    // ud2, with a #UD handler at CODE + 0x100 (64-bit interrupt gate).
    let mut g = with(&[0x0f, 0x0b], ProcCtls::MONITOR_TRAP_FLAG, ProcCtls2::empty());
    let handler = CODE + 0x100;
    g.m.mem.write(handler, &[0x90]).unwrap();
    g.m.mem.write_u64(0x6000 + 8, 0x0020_9a00_0000_0000).unwrap(); // 64-bit code, DPL 0
    let low = (handler & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((handler >> 16 & 0xffff) << 48);
    g.m.mem.write_u64(0x6800 + 6 * 16, low).unwrap();
    g.m.mem.write_u64(0x6800 + 6 * 16 + 8, handler >> 32).unwrap();
    g.set(F::GuestGdtrBase, 0x6000).set(F::GuestGdtrLimit, 0xff);
    g.set(F::GuestIdtrBase, 0x6800).set(F::GuestIdtrLimit, 0xfff);
    assert_eq!(g.run_to_exit(), ExitReason::MonitorTrapFlag as u64);
    assert_eq!(g.get(F::GuestRip), handler);
}

#[test]
fn tsc_offsetting_and_scaling() {
    // rdtsc; shl rdx, 32; or rax, rdx; hlt
    let code = [0x0f, 0x31, 0x48, 0xc1, 0xe2, 0x20, 0x48, 0x09, 0xd0, 0xf4];
    let run = |proc2: ProcCtls2| {
        let mut g = with(&code, ProcCtls::USE_TSC_OFFSETTING | ProcCtls::HLT_EXITING, proc2);
        g.m.cpu.icount = 1 << 20;
        g.m.cpu.clock_icount = 0;
        g.m.cpu.clock_ns = 0;
        // 0.75 in 16.48 fixed point.
        g.set(F::TscOffset, 1000).set(F::TscMultiplier, 3 << 46);
        assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
        g.m.cpu.regs.gpr[0]
    };
    // The TSC runs at 2 cycles per nanosecond, one instruction per ns.
    let host = 2u64 << 20;
    assert_eq!(run(ProcCtls2::empty()), host + 1000);
    assert_eq!(run(ProcCtls2::USE_TSC_SCALING), host / 4 * 3 + 1000);
}

#[test]
fn tpr_shadow_virtualizes_cr8_and_exits_below_the_threshold() {
    // mov rax, cr8; mov ecx, 6; mov cr8, rcx; mov ecx, 2; mov cr8, rcx; hlt
    let code = [
        0x44, 0x0f, 0x20, 0xc0, 0xb9, 0x06, 0x00, 0x00, 0x00, 0x44, 0x0f, 0x22, 0xc1, 0xb9, 0x02, 0x00, 0x00, 0x00,
        0x44, 0x0f, 0x22, 0xc1, 0xf4,
    ];
    let apic = 0x30_4000;
    let mut g = with(&code, ProcCtls::USE_TPR_SHADOW, ProcCtls2::empty());
    g.m.mem.write_u32(apic + 0x80, 0x50).unwrap();
    g.set(F::VirtualApicAddress, apic).set(F::TprThreshold, 4);
    assert_eq!(g.run_to_exit(), ExitReason::TprBelowThreshold as u64);
    assert_eq!(g.m.cpu.regs.gpr[0], 5, "MOV from CR8 read VTPR[7:4]");
    assert_eq!(g.m.mem.read_u32(apic + 0x80).unwrap(), 0x20);
    // Trap-like: RIP after the MOV, no instruction length.
    assert_eq!(g.get(F::GuestRip), CODE + 22);
    assert_eq!(g.get(F::ExitInstructionLength), 0);
}

/// A guest in 32-bit protected mode with 4 MiB pages (CR0.PG is fixed to
/// 1 without unrestricted guest), a GDT at 0x6000 with an available
/// 32-bit TSS at selector 0x28, a busy one at 0x30 and a not-present one
/// at 0x38, and an IDT at
/// 0x6800 whose vector 0x20 is a task gate for 0x28.
fn prot32_guest(code: &[u8]) -> Guest {
    let mut g = Guest::plain(code);
    let m = &mut g.m.mem;
    m.write_u64(0x5000, 0x83).unwrap(); // PDE 0: 4 MiB page at 0
    let tss = |base: u64, typ: u64| 0x67 | (base << 16) | ((0x80 | typ) << 40);
    m.write_u64(0x6000 + 0x28, tss(0x7000, 9)).unwrap();
    m.write_u64(0x6000 + 0x30, tss(0x7200, 11)).unwrap();
    m.write_u64(0x6000 + 0x38, tss(0x7000, 9) & !(0x80 << 40)).unwrap(); // not present
                                                                         // Task gate, DPL 3, present.
    m.write_u64(0x6800 + 0x20 * 8, (0x28 << 16) | (0xe5 << 40)).unwrap();
    let entry = g.get(F::EntryControls) & !u64::from(vmx::controls::EntryCtls::IA32E_MODE_GUEST.bits());
    g.set(F::EntryControls, entry);
    g.set(F::GuestCr4, (Cr4::PSE | Cr4::VMXE).bits()).set(F::GuestCr3, 0x5000);
    g.set(F::GuestIa32Efer, 0);
    let cs = (g.get(F::GuestCsAccessRights) & !(1 << 13)) | (1 << 14);
    g.set(F::GuestCsAccessRights, cs);
    g.set(F::GuestGdtrBase, 0x6000).set(F::GuestGdtrLimit, 0xff);
    g.set(F::GuestIdtrBase, 0x6800).set(F::GuestIdtrLimit, 0x7ff);
    g.set(F::GuestTrBase, 0x7100);
    g
}

#[test]
fn task_switches_exit_with_selector_and_source() {
    let ts = |selector, source| TaskSwitch { selector, source }.to_raw();
    // jmp 0x28:0; call 0x28:0
    let cases: &[(&[u8], u64)] = &[
        (&[0xea, 0x00, 0x00, 0x00, 0x00, 0x28, 0x00], ts(0x28, TaskSwitchSource::Jmp)),
        (&[0x9a, 0x00, 0x00, 0x00, 0x00, 0x28, 0x00], ts(0x28, TaskSwitchSource::Call)),
    ];
    for &(code, q) in cases {
        let mut g = prot32_guest(code);
        assert_eq!(g.run_to_exit(), ExitReason::TaskSwitch as u64);
        assert_eq!(g.get(F::ExitQualification), q);
        assert_eq!(g.get(F::ExitInstructionLength), 7);
        assert_eq!(g.get(F::GuestRip), CODE);
        assert_eq!(g.get(F::IdtVectoringInfo), 0);
    }
    // iretd with NT: return to the task in the back link (0x30).
    let mut g = prot32_guest(&[0xcf]);
    g.m.mem.write_u64(0x7100, 0x30).unwrap();
    g.set(F::GuestRflags, 0x4002);
    assert_eq!(g.run_to_exit(), ExitReason::TaskSwitch as u64);
    assert_eq!(g.get(F::ExitQualification), ts(0x30, TaskSwitchSource::Iret));
    assert_eq!(g.get(F::ExitInstructionLength), 1);
    // int 0x20 through the task gate: the event is IDT-vectoring
    // information.
    let mut g = prot32_guest(&[0xcd, 0x20]);
    assert_eq!(g.run_to_exit(), ExitReason::TaskSwitch as u64);
    assert_eq!(g.get(F::ExitQualification), ts(0x28, TaskSwitchSource::TaskGate));
    assert_eq!(g.get(F::IdtVectoringInfo), 0x8000_0420);
    assert_eq!(g.get(F::ExitInstructionLength), 2);
    assert_eq!(g.get(F::GuestRip), CODE);
    // jmp 0x38:0: the new TSS descriptor's checks come first (#NP).
    let mut g = prot32_guest(&[0xea, 0x00, 0x00, 0x00, 0x00, 0x38, 0x00]);
    g.set(F::ExceptionBitmap, 1 << 11);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0b0b);
    assert_eq!(g.get(F::ExitInterruptionErrorCode), 0x38);
}

/// 30.4: with "virtualize APIC accesses", reads, writes and fetches that
/// land on the APIC-access page exit with the offset and access type; the
/// instruction does not run, and other pages are untouched.
#[test]
fn apic_access_page_accesses_exit() {
    const PAGE: u64 = 0x20_0000;
    // mov eax, [0x200080]; hlt
    let read = [0x8b, 0x04, 0x25, 0x80, 0x00, 0x20, 0x00, 0xf4];
    // mov [0x200300], eax; hlt
    let write = [0x89, 0x04, 0x25, 0x00, 0x03, 0x20, 0x00, 0xf4];
    for (code, qualification) in [(&read[..], 0x080), (&write[..], 0x1300)] {
        let mut g = with(code, ProcCtls::empty(), ProcCtls2::VIRTUALIZE_APIC_ACCESSES);
        g.set(F::ApicAccessAddress, PAGE);
        g.m.mem.write_u32(PAGE + 0x80, 0x1234).unwrap();
        g.m.cpu.regs.gpr[0] = 0x77;
        assert_eq!(g.run_to_exit(), ExitReason::ApicAccess as u64);
        assert_eq!(g.get(F::ExitQualification), qualification);
        assert_eq!(g.get(F::GuestRip), CODE, "the access is fault-like");
        assert_eq!(g.m.cpu.regs.gpr[0], 0x77, "nothing was read");
        assert_eq!(g.m.mem.read_u32(PAGE + 0x300).unwrap(), 0, "nothing was written");
    }
    // A fetch from the page: type 2.
    let mut g = with(&[0xe9, 0xfb, 0xff, 0x1e, 0x00], ProcCtls::empty(), ProcCtls2::VIRTUALIZE_APIC_ACCESSES);
    g.set(F::ApicAccessAddress, PAGE);
    assert_eq!(g.run_to_exit(), ExitReason::ApicAccess as u64);
    assert_eq!(g.get(F::ExitQualification), 0x2000);
    assert_eq!(g.get(F::GuestRip), PAGE);
    // Without the control the same read just reads.
    let mut g = with(&read, ProcCtls::empty(), ProcCtls2::empty());
    g.m.mem.write_u32(PAGE + 0x80, 0x1234).unwrap();
    assert_eq!(g.enter(), crate::virt::VmEntry::Entered);
    assert_eq!(g.m.run(), RunExit::Halted);
    assert_eq!(g.m.cpu.regs.gpr[0], 0x1234);
}
