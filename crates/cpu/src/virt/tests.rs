//! Tests of the VMX unit: a 64-bit guest on the test machine, one VMCS
//! built from its registers, and for each exit condition a few guest
//! instructions and the exit reason, qualification and information fields
//! they must produce (the kvm-unit-tests `vmx_tests` style).

use super::*;
use crate::testutil::{Machine, CODE};
use crate::RunExit;
use vmx::caps::ControlWord;
use vmx::controls::{EntryCtls, ExitCtls, PinCtls, ProcCtls, ProcCtls2};
use vmx::{EntryFailure, VmInstructionError, VmcsField as F};
use x86::{Cr0, Cr4};

/// Where the host (L0) would continue after an exit.
pub(crate) const HOST_RIP: u64 = 0xffff_8000_0000_1000;
/// Scratch pages for bitmaps and MSR lists.
pub(crate) const IO_BITMAP_A: u64 = 0x30_0000;
pub(crate) const IO_BITMAP_B: u64 = 0x30_1000;
pub(crate) const MSR_BITMAP: u64 = 0x30_2000;
pub(crate) const MSR_AREA: u64 = 0x30_3000;

/// A guest machine in VMX non-root-ready state: `code` in 64-bit mode,
/// a current VMCS whose guest state is the machine's registers, a 64-bit
/// host state, and the controls Turtles requires plus `pin`/`proc`/
/// `proc2` (adjusted to the capabilities).
pub(crate) struct Guest {
    /// The machine.
    pub m: Machine,
}

impl Guest {
    pub(crate) fn new(code: &[u8], pin: PinCtls, proc: ProcCtls, proc2: ProcCtls2) -> Guest {
        let mut m = Machine::long64(code);
        let caps = VmxCaps::processor();
        m.cpu.vmxon(caps);
        m.cpu.regs.cr4 |= Cr4::VMXE.bits();
        let mut v = Box::new(Vmcs::new());
        let exit = ExitCtls::from_bits_retain(
            caps.adjust(ControlWord::Exit, u64::from(ExitCtls::HOST_ADDRESS_SPACE_SIZE.bits())) as u32,
        );
        write_guest_registers(&mut v, &m.cpu.regs, m.cpu.regs.rflags(), exit);
        v.set(F::VmcsLinkPointer, u64::MAX);
        let proc = if proc2.is_empty() { proc } else { proc | ProcCtls::ACTIVATE_SECONDARY_CONTROLS };
        v.set(F::PinBasedControls, caps.adjust(ControlWord::Pin, u64::from(pin.bits())));
        v.set(F::PrimaryProcControls, caps.adjust(ControlWord::Proc, u64::from(proc.bits())));
        v.set(F::SecondaryProcControls, caps.adjust(ControlWord::Proc2, u64::from(proc2.bits())));
        v.set(F::ExitControls, u64::from(exit.bits()));
        v.set(F::EntryControls, caps.adjust(ControlWord::Entry, u64::from(EntryCtls::IA32E_MODE_GUEST.bits())));
        v.set(F::IoBitmapA, IO_BITMAP_A);
        v.set(F::IoBitmapB, IO_BITMAP_B);
        v.set(F::MsrBitmap, MSR_BITMAP);
        v.set(F::HostCr0, (Cr0::PE | Cr0::PG | Cr0::NE | Cr0::ET).bits());
        v.set(F::HostCr3, 0x1000);
        v.set(F::HostCr4, (Cr4::PAE | Cr4::VMXE).bits());
        v.set(F::HostCsSelector, 0x08);
        for f in [F::HostSsSelector, F::HostDsSelector, F::HostEsSelector, F::HostFsSelector, F::HostGsSelector] {
            v.set(f, 0x10);
        }
        v.set(F::HostTrSelector, 0x18);
        v.set(F::HostRip, HOST_RIP);
        v.set(F::HostRsp, 0xffff_8000_0000_8000);
        m.cpu.vmptrld(v);
        Guest { m }
    }

    /// A guest with no optional controls.
    pub(crate) fn plain(code: &[u8]) -> Guest {
        Guest::new(code, PinCtls::empty(), ProcCtls::empty(), ProcCtls2::empty())
    }

    pub(crate) fn set(&mut self, f: F, v: u64) -> &mut Self {
        self.m.cpu.vmwrite(f, v);
        self
    }

    pub(crate) fn get(&self, f: F) -> u64 {
        self.m.cpu.vmread(f)
    }

    /// VMLAUNCH or VMRESUME.
    pub(crate) fn enter(&mut self) -> VmEntry {
        let launch = self.m.cpu.vmcs().is_some_and(|v| v.launch_state == vmx::LaunchState::Clear);
        let Machine { cpu, mem, bus } = &mut self.m;
        cpu.vm_enter(mem, bus, launch)
    }

    /// Puts the guest at CPL 3 (CPL is SS.DPL: DPL-3 code and data
    /// segments the entry checks accept), with user-accessible paging for
    /// the first 2 MiB.
    pub(crate) fn user_mode(mut self) -> Guest {
        self.m.mem.write_u64(0x1000, 0x2000 | 7).unwrap();
        self.m.mem.write_u64(0x2000, 0x3000 | 7).unwrap();
        self.m.mem.write_u64(0x3000, 0x87).unwrap();
        self.set(F::GuestCsSelector, 0x1b);
        for f in [F::GuestSsSelector, F::GuestDsSelector, F::GuestEsSelector, F::GuestFsSelector, F::GuestGsSelector] {
            self.set(f, 0x23);
        }
        for f in [
            F::GuestCsAccessRights,
            F::GuestSsAccessRights,
            F::GuestDsAccessRights,
            F::GuestEsAccessRights,
            F::GuestFsAccessRights,
            F::GuestGsAccessRights,
        ] {
            let ar = self.get(f);
            self.set(f, ar | (3 << 5));
        }
        self
    }

    /// Enters and runs until the guest exits; returns the basic exit
    /// reason.
    pub(crate) fn run_to_exit(&mut self) -> u64 {
        assert_eq!(self.enter(), VmEntry::Entered);
        let e = self.m.run();
        assert_eq!(e, RunExit::VmExit, "guest did not exit; rip {:#x}", self.m.cpu.regs.rip);
        self.get(F::ExitReason)
    }
}

#[test]
fn cpuid_exits_unconditionally_with_its_length_and_rip() {
    // cpuid; hlt
    let mut g = Guest::plain(&[0x0f, 0xa2, 0xf4]);
    g.m.cpu.regs.gpr[0] = 0x1234;
    assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64);
    assert_eq!(g.get(F::ExitInstructionLength), 2);
    assert_eq!(g.get(F::GuestRip), CODE);
    // CPUID did not execute: RAX is the guest's.
    assert_eq!(g.m.cpu.regs.gpr[0], 0x1234);
    // The host state is loaded.
    assert!(!g.m.cpu.in_non_root());
    assert_eq!(g.m.cpu.regs.rip, HOST_RIP);
    assert_eq!(g.m.cpu.regs.cr3, 0x1000);
    assert_eq!(g.m.cpu.exit_counts()[ExitReason::Cpuid as usize], 1);
}

#[test]
fn resume_continues_after_the_emulated_instruction() {
    // cpuid; cpuid; hlt: L0 skips each CPUID.
    let mut g =
        Guest::new(&[0x0f, 0xa2, 0x0f, 0xa2, 0xf4], PinCtls::empty(), ProcCtls::HLT_EXITING, ProcCtls2::empty());
    for expected_rip in [CODE, CODE + 2] {
        assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64);
        assert_eq!(g.get(F::GuestRip), expected_rip);
        let len = g.get(F::ExitInstructionLength);
        g.set(F::GuestRip, expected_rip + len);
    }
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 4);
    assert_eq!(g.get(F::ExitInstructionLength), 1);
}

#[test]
fn hlt_without_exiting_halts_in_non_root() {
    let mut g = Guest::plain(&[0xf4]);
    assert_eq!(g.enter(), VmEntry::Entered);
    assert_eq!(g.m.run(), RunExit::Halted);
    assert!(g.m.cpu.in_non_root());
}

#[test]
fn unconditional_io_exiting_reports_port_size_and_direction() {
    // mov dx, 0x3f8; out dx, al
    let mut g = Guest::new(
        &[0x66, 0xba, 0xf8, 0x03, 0xee],
        PinCtls::empty(),
        ProcCtls::UNCONDITIONAL_IO_EXITING,
        ProcCtls2::empty(),
    );
    assert_eq!(g.run_to_exit(), ExitReason::IoInstruction as u64);
    assert_eq!(g.get(F::ExitQualification), 0x3f8 << 16);
    assert_eq!(g.get(F::ExitInstructionLength), 1);
    assert_eq!(g.get(F::GuestRip), CODE + 4);
    // in eax, 0x71: 4 bytes, IN, immediate.
    let mut g = Guest::new(&[0xe5, 0x71], PinCtls::empty(), ProcCtls::UNCONDITIONAL_IO_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::IoInstruction as u64);
    assert_eq!(g.get(F::ExitQualification), (0x71 << 16) | 0x40 | 0x8 | 3);
}

#[test]
fn io_bitmaps_select_ports() {
    // out 0x81, al; out 0x80, al
    let mut g =
        Guest::new(&[0xe6, 0x81, 0xe6, 0x80, 0xf4], PinCtls::empty(), ProcCtls::USE_IO_BITMAPS, ProcCtls2::empty());
    g.m.mem.write(IO_BITMAP_A + 0x10, &[0x01]).unwrap();
    assert_eq!(g.run_to_exit(), ExitReason::IoInstruction as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 2, "port 0x81 passed, port 0x80 exited");
    assert_eq!(g.get(F::ExitQualification) >> 16, 0x80);
}

#[test]
fn msr_bitmaps_select_msrs_and_directions() {
    // mov ecx, 0x174 (SYSENTER_CS); rdmsr; wrmsr; hlt
    let code = [0xb9, 0x74, 0x01, 0x00, 0x00, 0x0f, 0x32, 0x0f, 0x30, 0xf4];
    let mut g =
        Guest::new(&code, PinCtls::empty(), ProcCtls::USE_MSR_BITMAPS | ProcCtls::HLT_EXITING, ProcCtls2::empty());
    // Write bitmap for low MSRs starts at 2048: bit 0x174.
    g.m.mem.write(MSR_BITMAP + 2048 + 0x174 / 8, &[1 << (0x174 % 8)]).unwrap();
    assert_eq!(g.run_to_exit(), ExitReason::Wrmsr as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 7);
    // An MSR outside both ranges always exits.
    let code = [0xb9, 0x00, 0x00, 0x00, 0x40, 0x0f, 0x32];
    let mut g = Guest::new(&code, PinCtls::empty(), ProcCtls::USE_MSR_BITMAPS, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::Rdmsr as u64);
}

#[test]
fn cr0_guest_host_mask_shadows_reads_and_exits_on_changes() {
    // mov rax, cr0; btr eax, 30; mov cr0, rax; hlt
    let code = [0x0f, 0x20, 0xc0, 0x0f, 0xba, 0xf0, 0x1e, 0x0f, 0x22, 0xc0, 0xf4];
    let mut g = Guest::new(&code, PinCtls::empty(), ProcCtls::HLT_EXITING, ProcCtls2::empty());
    let cr0 = g.m.cpu.regs.cr0;
    // The host owns CD, which the guest believes set.
    let cd = Cr0::CD.bits();
    g.set(F::Cr0GuestHostMask, cd).set(F::Cr0ReadShadow, cr0 | cd);
    assert_eq!(g.run_to_exit(), ExitReason::ControlRegisterAccess as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 7, "the read did not exit, the write did");
    let q = vmx::exit::CrAccess::from_raw(g.get(F::ExitQualification));
    assert_eq!((q.cr, q.access, q.gpr), (0, vmx::exit::CrAccessType::MovToCr, 0));
    assert_eq!(g.m.cpu.regs.gpr[0], cr0, "the read came from the shadow, BTR cleared CD");
    // Writing what the shadow says does not exit; host-owned bits keep
    // their real value.
    let code = [0x0f, 0x20, 0xc0, 0x0f, 0x22, 0xc0, 0xf4];
    let mut g = Guest::new(&code, PinCtls::empty(), ProcCtls::HLT_EXITING, ProcCtls2::empty());
    g.set(F::Cr0GuestHostMask, cd).set(F::Cr0ReadShadow, cr0 | cd);
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
    assert_eq!(g.get(F::GuestCr0), cr0);
}

#[test]
fn mov_to_cr3_exits_unless_a_target_matches() {
    // mov cr3, rax; hlt
    let mut g = Guest::new(&[0x0f, 0x22, 0xd8, 0xf4], PinCtls::empty(), ProcCtls::HLT_EXITING, ProcCtls2::empty());
    let cr3 = g.m.cpu.regs.cr3;
    g.m.cpu.regs.gpr[0] = cr3;
    g.set(F::PrimaryProcControls, g.get(F::PrimaryProcControls) | u64::from(ProcCtls::CR3_LOAD_EXITING.bits()));
    assert_eq!(g.run_to_exit(), ExitReason::ControlRegisterAccess as u64);
    let q = vmx::exit::CrAccess::from_raw(g.get(F::ExitQualification));
    assert_eq!((q.cr, q.access, q.gpr), (3, vmx::exit::CrAccessType::MovToCr, 0));
    g.set(F::Cr3TargetCount, 1).set(F::Cr3TargetValue0, cr3);
    assert_eq!(g.run_to_exit(), ExitReason::Hlt as u64);
}

#[test]
fn exception_bitmap_turns_faults_into_exits() {
    // ud2
    let mut g = Guest::plain(&[0x0f, 0x0b]);
    g.set(F::ExceptionBitmap, 1 << 6);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0306);
    assert_eq!(g.get(F::GuestRip), CODE);
    assert_eq!(g.get(F::IdtVectoringInfo), 0);
}

#[test]
fn page_fault_mask_and_match_filter_by_error_code() {
    // mov rax, [0x4000_0000] (unmapped: beyond the 1 GiB identity map)
    let code = [0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x40];
    let mut g = Guest::plain(&code);
    // Bit 14 set, mask/match 0/0: every #PF exits.
    g.set(F::ExceptionBitmap, 1 << 14);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitQualification), 0x4000_0000);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0b0e);
    assert_eq!(g.get(F::ExitInterruptionErrorCode), 0);
    assert_eq!(g.m.cpu.regs.cr2, 0, "CR2 is not written on a #PF exit");
    // Bit 14 set, but match demands P=1: a not-present fault inverts the
    // bitmap and is delivered (here to an empty IDT: triple fault).
    let mut g = Guest::plain(&code);
    g.set(F::ExceptionBitmap, 1 << 14).set(F::PageFaultErrorCodeMask, 1).set(F::PageFaultErrorCodeMatch, 1);
    g.m.cpu.regs.idtr.limit = 0;
    g.set(F::GuestIdtrLimit, 0);
    assert_eq!(g.run_to_exit(), ExitReason::TripleFault as u64);
}

#[test]
fn interrupt_window_exits_before_the_first_instruction() {
    let mut g = Guest::new(&[0x90, 0xf4], PinCtls::empty(), ProcCtls::INTERRUPT_WINDOW_EXITING, ProcCtls2::empty());
    // IF clear: no window.
    assert_eq!(g.enter(), VmEntry::Entered);
    assert_eq!(g.m.run(), RunExit::Halted);
    let mut g = Guest::new(&[0x90, 0xf4], PinCtls::empty(), ProcCtls::INTERRUPT_WINDOW_EXITING, ProcCtls2::empty());
    g.set(F::GuestRflags, 0x202);
    assert_eq!(g.run_to_exit(), ExitReason::InterruptWindow as u64);
    assert_eq!(g.get(F::GuestRip), CODE);
}

#[test]
fn sti_opens_the_window_one_instruction_later() {
    // sti; nop; hlt
    let mut g =
        Guest::new(&[0xfb, 0x90, 0xf4], PinCtls::empty(), ProcCtls::INTERRUPT_WINDOW_EXITING, ProcCtls2::empty());
    assert_eq!(g.run_to_exit(), ExitReason::InterruptWindow as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 2, "STI blocks for one instruction");
}

#[test]
fn preemption_timer_expires_in_a_loop() {
    // jmp $
    let mut g = Guest::new(&[0xeb, 0xfe], PinCtls::PREEMPTION_TIMER, ProcCtls::empty(), ProcCtls2::empty());
    g.set(F::PreemptionTimerValue, 10);
    let start = g.m.cpu.icount;
    assert_eq!(g.run_to_exit(), ExitReason::PreemptionTimer as u64);
    // 10 ticks of 2^5 TSC cycles at 2 cycles per instruction.
    assert_eq!(g.m.cpu.icount - start, 160);
    assert_eq!(g.get(F::GuestRip), CODE);
}

#[test]
fn triple_fault_is_an_exit() {
    let mut g = Guest::plain(&[0x0f, 0x0b]);
    g.set(F::GuestIdtrLimit, 0);
    assert_eq!(g.run_to_exit(), ExitReason::TripleFault as u64);
}

#[test]
fn launch_state_rules() {
    let mut g = Guest::new(&[0x0f, 0xa2], PinCtls::empty(), ProcCtls::empty(), ProcCtls2::empty());
    let Machine { cpu, mem, bus } = &mut g.m;
    assert_eq!(
        cpu.vm_enter(mem, bus, false),
        VmEntry::VmFailValid { error: VmInstructionError::VmresumeNonLaunchedVmcs, check: None }
    );
    assert_eq!(cpu.vmread(F::VmInstructionError), 5);
    assert_eq!(cpu.vm_enter(mem, bus, true), VmEntry::Entered);
    assert_eq!(cpu.run(mem, bus, 100), RunExit::VmExit);
    assert_eq!(
        cpu.vm_enter(mem, bus, true),
        VmEntry::VmFailValid { error: VmInstructionError::VmlaunchNonClearVmcs, check: None }
    );
    let v = cpu.vmclear_current().unwrap();
    assert_eq!(v.launch_state, vmx::LaunchState::Clear);
    assert_eq!(cpu.vm_enter(mem, bus, true), VmEntry::VmFailInvalid);
}

#[test]
fn bad_controls_host_state_and_guest_state_fail_as_the_sdm_says() {
    let mut g = Guest::plain(&[0xf4]);
    g.set(F::IoBitmapA, 0x1001);
    g.set(F::PrimaryProcControls, g.get(F::PrimaryProcControls) | u64::from(ProcCtls::USE_IO_BITMAPS.bits()));
    match g.enter() {
        VmEntry::VmFailValid { error, check: Some(c) } => {
            assert_eq!(error, VmInstructionError::EntryInvalidControls);
            assert_eq!(c.id, "ctl.io_bitmap_a");
        }
        other => panic!("{other:?}"),
    }
    let mut g = Guest::plain(&[0xf4]);
    g.set(F::HostCsSelector, 0);
    assert!(matches!(g.enter(), VmEntry::VmFailValid { error: VmInstructionError::EntryInvalidHostState, .. }));
    assert!(!g.m.cpu.in_non_root());
    let mut g = Guest::plain(&[0xf4]);
    g.set(F::GuestCr0, g.get(F::GuestCr0) & !Cr0::PE.bits());
    match g.enter() {
        VmEntry::Failed(e) => assert!(matches!(e.failure, EntryFailure::GuestState { .. })),
        other => panic!("{other:?}"),
    }
    assert_eq!(g.get(F::ExitReason), (1 << 31) | 33);
    assert_eq!(g.m.cpu.regs.rip, HOST_RIP);
}

#[test]
fn msr_load_and_store_lists() {
    // mov ecx, 0x174; rdmsr; cpuid
    let code = [0xb9, 0x74, 0x01, 0x00, 0x00, 0x0f, 0x32, 0x0f, 0xa2];
    let mut g = Guest::new(&code, PinCtls::empty(), ProcCtls::USE_MSR_BITMAPS, ProcCtls2::empty());
    // Entry list: SYSENTER_CS = 0x42. Exit-store list: SYSENTER_CS.
    g.m.mem.write_u64(MSR_AREA, 0x174).unwrap();
    g.m.mem.write_u64(MSR_AREA + 8, 0x42).unwrap();
    g.m.mem.write_u64(MSR_AREA + 16, 0x174).unwrap();
    g.set(F::EntryMsrLoadAddress, MSR_AREA).set(F::EntryMsrLoadCount, 1);
    g.set(F::ExitMsrStoreAddress, MSR_AREA + 16).set(F::ExitMsrStoreCount, 1);
    assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64);
    assert_eq!(g.m.cpu.regs.gpr[0], 0x42, "the guest read the loaded value");
    assert_eq!(g.m.mem.read_u64(MSR_AREA + 24).unwrap(), 0x42);
    // A list entry naming a forbidden MSR fails the entry with its index.
    let mut g = Guest::plain(&[0xf4]);
    g.m.mem.write_u64(MSR_AREA + 16, 0x175).unwrap(); // SYSENTER_ESP: fine
    g.m.mem.write_u64(MSR_AREA + 32, 0xc000_0100).unwrap(); // FS_BASE: refused (27.4)
    g.set(F::EntryMsrLoadAddress, MSR_AREA + 16).set(F::EntryMsrLoadCount, 2);
    match g.enter() {
        VmEntry::Failed(e) => assert_eq!(e.failure, EntryFailure::MsrLoad { index: 2 }),
        other => panic!("{other:?}"),
    }
}

#[test]
fn injected_events_and_external_interrupt_exits() {
    // Inject #UD into a guest with an empty IDT: the delivery faults
    // into a triple fault, reported as an exit with the injected event
    // in IDT-vectoring information.
    let mut g = Guest::plain(&[0x90]);
    g.set(F::GuestIdtrLimit, 0).set(F::EntryInterruptionInfo, 0x8000_0306);
    assert_eq!(g.run_to_exit(), ExitReason::TripleFault as u64);
    assert_eq!(g.get(F::EntryInterruptionInfo) >> 31, 0, "exit clears the valid bit");
    // Without a bitmap the nested #GP is intercepted: vectoring info.
    let mut g = Guest::plain(&[0x90]);
    g.set(F::GuestIdtrLimit, 0).set(F::EntryInterruptionInfo, 0x8000_0306).set(F::ExceptionBitmap, 1 << 13);
    assert_eq!(g.run_to_exit(), ExitReason::ExceptionOrNmi as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo) & 0xff, 13);
    assert_eq!(g.get(F::IdtVectoringInfo), 0x8000_0306);
}

#[test]
fn vpid_keeps_translations_across_exits() {
    let mut g = Guest::new(&[0x0f, 0xa2], PinCtls::empty(), ProcCtls::empty(), ProcCtls2::ENABLE_VPID);
    g.set(F::VirtualProcessorId, 1);
    assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64);
    assert_eq!(g.m.cpu.vmx.tlb_owner, Some((1, 0)));
}

#[test]
fn l0_emulator_runs_one_guest_instruction_and_stores_the_state() {
    // cpuid; cpuid
    let mut g = Guest::plain(&[0x0f, 0xa2, 0x0f, 0xa2]);
    g.m.cpu.regs.gpr[0] = 0;
    assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64);
    let Machine { cpu, mem, bus } = &mut g.m;
    assert_eq!(cpu.emulate_guest_instruction(mem, bus), Ok(()));
    assert!(!cpu.in_non_root());
    assert_eq!(cpu.regs.rip, HOST_RIP, "back in the host context");
    assert_eq!(cpu.vmread(F::GuestRip), CODE + 2);
    assert_eq!(cpu.regs.gpr[3] as u32, u32::from_le_bytes(*b"Genu"), "CPUID leaf 0 ran");
    // VMRESUME continues at the next instruction, which exits again.
    assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64);
    assert_eq!(g.get(F::GuestRip), CODE + 2);
}

/// Adds an identity EPT over the first 4 MiB (the test machine's RAM)
/// minus the page at `hole`, in private memory, and enables EPT.
fn with_identity_ept(g: &mut Guest, hole: Option<u64>) {
    use crate::ept::EptBuilder;
    use vmx::controls::{EptEntry, MemoryType};
    let mem = &mut g.m.mem;
    let mut b = EptBuilder::new(mem, |m: &mut crate::Memory| m.alloc_private_page()).unwrap();
    b.map(mem, 0, 0, 4 << 20, EptEntry::RWX, MemoryType::WriteBack).unwrap();
    if let Some(h) = hole {
        b.unmap(mem, h, 0x1000).unwrap();
    }
    let eptp = b.eptp();
    let proc2 = g.get(F::SecondaryProcControls) | u64::from(ProcCtls2::ENABLE_EPT.bits());
    let proc = g.get(F::PrimaryProcControls) | u64::from(ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits());
    g.set(F::EptPointer, eptp).set(F::SecondaryProcControls, proc2).set(F::PrimaryProcControls, proc);
}

#[test]
fn ept_violation_reports_both_addresses_and_the_access() {
    use crate::testutil::DATA;
    // mov [DATA + 8], eax
    let code = [0x89, 0x04, 0x25, 0x08, 0x00, 0x02, 0x00];
    let mut g = Guest::plain(&code);
    with_identity_ept(&mut g, Some(DATA));
    assert_eq!(g.run_to_exit(), ExitReason::EptViolation as u64);
    assert_eq!(g.get(F::GuestPhysicalAddress), DATA + 8);
    assert_eq!(g.get(F::GuestLinearAddress), DATA + 8);
    let q = g.get(F::ExitQualification);
    // A write (bit 1) to a not-present page (bits 5:3 clear), from a
    // linear-address translation (bits 7 and 8).
    assert_eq!(q, (1 << 1) | (1 << 7) | (1 << 8));
    assert_eq!(g.get(F::GuestRip), CODE, "the access faults: RIP stays");
}

#[test]
fn ept_violation_on_a_guest_page_table_is_a_paging_structure_access() {
    // The test machine's PD lives at 0x3000: unmap it.
    let mut g = Guest::plain(&[0x90, 0xf4]);
    with_identity_ept(&mut g, Some(0x3000));
    assert_eq!(g.run_to_exit(), ExitReason::EptViolation as u64);
    assert_eq!(g.get(F::GuestPhysicalAddress) & !0xfff, 0x3000);
    // A read of a paging-structure entry: bit 0 and bit 7, not bit 8.
    assert_eq!(g.get(F::ExitQualification), 1 | (1 << 7));
}

#[test]
fn guest_runs_through_ept_and_unrestricted_guest_runs_real_mode() {
    // A 64-bit guest under an identity EPT runs normally.
    let mut g = Guest::new(&[0x0f, 0xa2], PinCtls::empty(), ProcCtls::empty(), ProcCtls2::ENABLE_VPID);
    g.set(F::VirtualProcessorId, 3);
    with_identity_ept(&mut g, None);
    assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64);
    // Real mode at 0x1000:0 (CODE) with unrestricted guest: mov ax, 0x1234; cpuid
    let mut g = Guest::plain(&[0xb8, 0x34, 0x12, 0x0f, 0xa2]);
    with_identity_ept(&mut g, None);
    let proc2 = g.get(F::SecondaryProcControls) | u64::from(ProcCtls2::UNRESTRICTED_GUEST.bits());
    g.set(F::SecondaryProcControls, proc2);
    let entry = g.get(F::EntryControls) & !u64::from(EntryCtls::IA32E_MODE_GUEST.bits());
    g.set(F::EntryControls, entry);
    g.set(F::GuestCr0, (Cr0::ET | Cr0::NE).bits()).set(F::GuestCr4, Cr4::VMXE.bits()).set(F::GuestIa32Efer, 0);
    let seg = |g: &mut Guest, f: [F; 4], sel: u64, code: bool| {
        let access = 0x93 | if code { 0x8 } else { 0 };
        g.set(f[0], sel).set(f[1], sel << 4).set(f[2], 0xffff).set(f[3], access);
    };
    for f in super::entry::GUEST_SEGS {
        seg(&mut g, f, 0, false);
    }
    seg(&mut g, super::entry::GUEST_SEGS[1], CODE >> 4, true);
    g.set(F::GuestTrAccessRights, 0x8b).set(F::GuestTrLimit, 0xffff).set(F::GuestLdtrAccessRights, 0x82);
    g.set(F::GuestRip, 0).set(F::GuestRsp, 0x7000).set(F::GuestRflags, 2);
    assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64, "{:?}", g.m.cpu.vmcs());
    assert_eq!(g.get(F::GuestRip), 3);
    assert_eq!(g.m.cpu.regs.gpr[0] & 0xffff, 0x1234);
}

/// A bus with one interrupt line, raised, and vector 0x30 behind it.
struct OneIrq(bool);

impl crate::Bus for OneIrq {
    fn io_in(&mut self, _: u64, _: u16, _: u8) -> u32 {
        0
    }
    fn io_out(&mut self, _: u64, _: u16, _: u8, _: u32) {}
    fn mmio_read(&mut self, _: u64, _: u64, _: u8) -> u64 {
        0
    }
    fn mmio_write(&mut self, _: u64, _: u64, _: u8, _: u64) {}
    fn rdmsr(&mut self, _: u64, _: u32) -> Option<u64> {
        None
    }
    fn wrmsr(&mut self, _: u64, _: u32, _: u64) -> bool {
        false
    }
    fn interrupt_pending(&mut self, _: u64) -> bool {
        self.0
    }
    fn ack_interrupt(&mut self, _: u64) -> Option<u8> {
        self.0 = false;
        Some(0x30)
    }
    fn take_nmi(&mut self) -> bool {
        false
    }
    fn set_tpr(&mut self, _: u8) {}
    fn tpr(&mut self) -> u8 {
        0
    }
}

#[test]
fn external_interrupt_exits_whatever_if_says_and_acknowledges_on_exit() {
    let mut g = Guest::new(&[0x90, 0xf4], PinCtls::EXTERNAL_INTERRUPT_EXITING, ProcCtls::empty(), ProcCtls2::empty());
    let ack = g.get(F::ExitControls) | u64::from(ExitCtls::ACK_INTERRUPT_ON_EXIT.bits());
    g.set(F::ExitControls, ack);
    assert_eq!(g.enter(), VmEntry::Entered);
    let before = g.m.cpu.icount;
    let mut bus = OneIrq(true);
    assert_eq!(g.m.cpu.run(&mut g.m.mem, &mut bus, 100), RunExit::VmExit);
    assert_eq!(g.get(F::ExitReason), ExitReason::ExternalInterrupt as u64);
    assert_eq!(g.get(F::ExitInterruptionInfo), 0x8000_0030);
    assert_eq!(g.get(F::GuestRip), CODE, "no guest instruction ran");
    assert_eq!(g.m.cpu.icount, before, "and no host one either");
    assert_eq!(g.m.cpu.stats.exceptions, [0; 32]);
    assert!(!bus.0, "acknowledged");
}

#[test]
fn entries_recheck_whatever_software_wrote_since_the_last_one() {
    // cpuid; cpuid; cpuid
    let mut g = Guest::plain(&[0x0f, 0xa2, 0x0f, 0xa2, 0x0f, 0xa2]);
    assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64);
    // A host field: the host-state checks run again.
    g.set(F::HostCsSelector, 0);
    assert!(matches!(g.enter(), VmEntry::VmFailValid { error: VmInstructionError::EntryInvalidHostState, .. }));
    g.set(F::HostCsSelector, 8);
    // Guest RIP alone: its own checks run again (non-canonical even with
    // 57-bit linear addresses).
    g.set(F::GuestRip, 1 << 60);
    match g.enter() {
        VmEntry::Failed(e) => assert_eq!(e.check.id, "guest.rip.canonical"),
        other => panic!("{other:?}"),
    }
    g.set(F::GuestRip, CODE + 2);
    // Any other guest field: every guest-state check.
    g.set(F::GuestTrAccessRights, 0x83);
    assert!(matches!(g.enter(), VmEntry::Failed(_)));
    g.set(F::GuestTrAccessRights, 0x8b);
    // A control: everything, controls first.
    g.set(F::IoBitmapA, 0x1001);
    g.set(F::PrimaryProcControls, g.get(F::PrimaryProcControls) | u64::from(ProcCtls::USE_IO_BITMAPS.bits()));
    assert!(matches!(g.enter(), VmEntry::VmFailValid { error: VmInstructionError::EntryInvalidControls, .. }));
    g.set(F::IoBitmapA, IO_BITMAP_A);
    assert_eq!(g.enter(), VmEntry::Entered);
    assert_eq!(g.enter(), VmEntry::VmFailInvalid, "already in non-root operation");
    assert_eq!(g.m.run(), RunExit::VmExit);
    assert_eq!(g.get(F::GuestRip), CODE + 2);
    // With the cache off every entry runs every check, with the same
    // outcome.
    g.m.cpu.set_entry_check_cache(false);
    g.set(F::GuestRip, CODE + 4);
    assert_eq!(g.run_to_exit(), ExitReason::Cpuid as u64);
}
