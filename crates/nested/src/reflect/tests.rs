use super::*;
use vmx::exit::{IoSize, TaskSwitch, TaskSwitchSource};
use x86::Cr4;

const MEM: u64 = 0x10_0000;
const IO_A: u64 = 0x1000;
const IO_B: u64 = 0x2000;
const MSR_BM: u64 = 0x3000;

fn mem() -> Memory {
    Memory::new(MEM).unwrap()
}

fn or(v: &mut Vmcs, f: F, bits: u64) {
    v.set(f, v.get(f) | bits);
}

fn with_proc(p: ProcCtls) -> Vmcs {
    let mut v = Vmcs::new();
    v.set(F::PrimaryProcControls, u64::from(p.bits()));
    v
}

fn with_proc2(p2: ProcCtls2) -> Vmcs {
    let mut v = with_proc(ProcCtls::ACTIVATE_SECONDARY_CONTROLS);
    v.set(F::SecondaryProcControls, u64::from(p2.bits()));
    v
}

fn with_pin(p: PinCtls) -> Vmcs {
    let mut v = Vmcs::new();
    v.set(F::PinBasedControls, u64::from(p.bits()));
    v
}

fn wants(f: &ExitFacts, v: &Vmcs) -> bool {
    l1_wants_exit(f, v, &mem())
}

fn wants_reason(r: ExitReason, v: &Vmcs) -> bool {
    wants(&ExitFacts::new(r, 0), v)
}

/// The exit goes to L1 with the control, to L0 without it.
fn by_control(r: ExitReason, on: &Vmcs) {
    assert!(wants_reason(r, on), "{r} with the control");
    assert!(!wants_reason(r, &Vmcs::new()), "{r} without the control");
    assert_eq!(route(&ExitFacts::new(r, 0), on, &mem()), L0Action::Reflect, "{r}");
    assert_eq!(route(&ExitFacts::new(r, 0), &Vmcs::new(), &mem()), L0Action::Handle, "{r}");
}

/// Every control, mask and bitmap bit of vmcs12 set.
fn everything() -> Vmcs {
    let mut v = Vmcs::new();
    v.set(F::PinBasedControls, u64::MAX);
    v.set(F::PrimaryProcControls, u64::MAX);
    v.set(F::SecondaryProcControls, u64::MAX);
    v.set(F::ExceptionBitmap, u64::MAX);
    v
}

fn exception(vector: u8, error_code: u32) -> ExitFacts {
    let info = InterruptionInfo::hardware_exception(vector, vector == 14).to_raw();
    ExitFacts { interruption_info: info, error_code, ..ExitFacts::new(ExitReason::ExceptionOrNmi, 0) }
}

#[test]
fn exception_by_exception_bitmap() {
    let mut v = Vmcs::new();
    assert!(!wants(&exception(6, 0), &v));
    v.set(F::ExceptionBitmap, 1 << 6);
    assert!(wants(&exception(6, 0), &v));
    assert!(!wants(&exception(13, 0), &v));
    // #BP from INT3 is a software exception, filtered the same way.
    let bp = InterruptionInfo::new(InterruptionType::SoftwareException, 3).to_raw();
    let f = ExitFacts { interruption_info: bp, ..ExitFacts::new(ExitReason::ExceptionOrNmi, 0) };
    assert!(!wants(&f, &v));
    v.set(F::ExceptionBitmap, 1 << 3);
    assert!(wants(&f, &v));
}

#[test]
fn page_fault_by_bitmap_and_error_code_mask_match() {
    let mut v = Vmcs::new();
    // Bit 14 clear, mask = match = 0: error codes always "match", no exit.
    assert!(!wants(&exception(14, 2), &v));
    v.set(F::ExceptionBitmap, 1 << 14);
    assert!(wants(&exception(14, 2), &v));
    // Only write faults (bit 1 set) exit.
    v.set(F::PageFaultErrorCodeMask, 2);
    v.set(F::PageFaultErrorCodeMatch, 2);
    assert!(wants(&exception(14, 3), &v));
    assert!(!wants(&exception(14, 1), &v));
    // Bit 14 clear inverts the filter.
    v.set(F::ExceptionBitmap, 0);
    assert!(!wants(&exception(14, 3), &v));
    assert!(wants(&exception(14, 1), &v));
}

#[test]
fn nmi_by_nmi_exiting() {
    let nmi = ExitFacts {
        interruption_info: InterruptionInfo::nmi().to_raw(),
        ..ExitFacts::new(ExitReason::ExceptionOrNmi, 0)
    };
    let on = with_pin(PinCtls::NMI_EXITING);
    assert!(wants(&nmi, &on));
    assert!(!wants(&nmi, &Vmcs::new()));
    // Without L1's NMI exiting, L0 takes it (and injects it into L2), even
    // if L1's bitmap has bit 2.
    let mut off = Vmcs::new();
    off.set(F::ExceptionBitmap, 1 << 2);
    assert!(l0_wants_exit(&nmi, &off));
    assert!(!l0_wants_exit(&nmi, &on));
    assert_eq!(route(&nmi, &on, &mem()), L0Action::Reflect);
}

#[test]
fn machine_check_is_l0s() {
    assert!(l0_wants_exit(&exception(18, 0), &everything()));
    assert!(!l0_wants_exit(&exception(6, 0), &everything()));
}

#[test]
fn external_interrupt_by_pin_control() {
    let r = ExitReason::ExternalInterrupt;
    by_control(r, &with_pin(PinCtls::EXTERNAL_INTERRUPT_EXITING));
    assert!(l0_wants_exit(&ExitFacts::new(r, 0), &Vmcs::new()));
    assert!(!l0_wants_exit(&ExitFacts::new(r, 0), &with_pin(PinCtls::EXTERNAL_INTERRUPT_EXITING)));
}

#[test]
fn unconditional_exits_go_to_l1() {
    use ExitReason as R;
    let none = Vmcs::new();
    for r in [
        R::TripleFault,
        R::InitSignal,
        R::StartupIpi,
        R::TaskSwitch,
        R::Cpuid,
        R::Getsec,
        R::Invd,
        R::Rsm,
        R::Vmcall,
        R::Vmclear,
        R::Vmlaunch,
        R::Vmptrld,
        R::Vmptrst,
        R::Vmread,
        R::Vmresume,
        R::Vmwrite,
        R::Vmxoff,
        R::Vmxon,
        R::Invept,
        R::Invvpid,
        R::Xsetbv,
        R::EntryFailureGuestState,
        R::EntryFailureMsrLoading,
        R::EntryFailureMachineCheck,
        R::Vmfunc,
        R::Encls,
        R::Pconfig,
        R::Enclv,
        R::Loadiwkey,
        R::EnqcmdPasidFailure,
        R::EnqcmdsPasidFailure,
        R::Seamcall,
        R::Tdcall,
        R::Rdmsrlist,
        R::Wrmsrlist,
        R::Urdmsr,
        R::Uwrmsr,
    ] {
        assert!(wants_reason(r, &none), "{r}");
        assert!(!l0_wants_exit(&ExitFacts::new(r, 0), &none), "{r}");
        assert_eq!(route(&ExitFacts::new(r, 0), &none, &mem()), L0Action::Reflect, "{r}");
    }
    let ts = TaskSwitch { selector: 0x28, source: TaskSwitchSource::TaskGate };
    assert!(wants(&ExitFacts::new(R::TaskSwitch, ts.to_raw()), &none));
}

#[test]
fn exits_of_features_vmcs02_never_enables_stay_with_l0() {
    use ExitReason as R;
    for r in [R::IoSmi, R::OtherSmi, R::PmlFull, R::SppEvent, R::BusLock, R::InstructionTimeout] {
        assert!(!wants_reason(r, &everything()), "{r}");
        assert!(l0_wants_exit(&ExitFacts::new(r, 0), &everything()), "{r}");
    }
}

#[test]
fn interrupt_window_by_control() {
    let on = with_proc(ProcCtls::INTERRUPT_WINDOW_EXITING);
    by_control(ExitReason::InterruptWindow, &on);
    // A window L1 did not ask for is L0's.
    assert!(l0_wants_exit(&ExitFacts::new(ExitReason::InterruptWindow, 0), &Vmcs::new()));
    assert!(!l0_wants_exit(&ExitFacts::new(ExitReason::InterruptWindow, 0), &on));
}

#[test]
fn nmi_window_by_control() {
    let on = with_proc(ProcCtls::NMI_WINDOW_EXITING);
    by_control(ExitReason::NmiWindow, &on);
    assert!(l0_wants_exit(&ExitFacts::new(ExitReason::NmiWindow, 0), &Vmcs::new()));
}

#[test]
fn hlt_by_control() {
    by_control(ExitReason::Hlt, &with_proc(ProcCtls::HLT_EXITING));
}

#[test]
fn invlpg_by_control() {
    by_control(ExitReason::Invlpg, &with_proc(ProcCtls::INVLPG_EXITING));
}

#[test]
fn rdpmc_by_control() {
    by_control(ExitReason::Rdpmc, &with_proc(ProcCtls::RDPMC_EXITING));
}

#[test]
fn rdtsc_and_rdtscp_by_control() {
    by_control(ExitReason::Rdtsc, &with_proc(ProcCtls::RDTSC_EXITING));
    by_control(ExitReason::Rdtscp, &with_proc(ProcCtls::RDTSC_EXITING));
}

#[test]
fn mov_dr_by_control() {
    by_control(ExitReason::MovDr, &with_proc(ProcCtls::MOV_DR_EXITING));
}

#[test]
fn mwait_and_monitor_by_control() {
    by_control(ExitReason::Mwait, &with_proc(ProcCtls::MWAIT_EXITING));
    by_control(ExitReason::Monitor, &with_proc(ProcCtls::MONITOR_EXITING));
}

#[test]
fn monitor_trap_flag_by_control() {
    let on = with_proc(ProcCtls::MONITOR_TRAP_FLAG);
    by_control(ExitReason::MonitorTrapFlag, &on);
    assert!(l0_wants_exit(&ExitFacts::new(ExitReason::MonitorTrapFlag, 0), &Vmcs::new()));
}

#[test]
fn pause_by_pause_exiting_or_pause_loop_exiting() {
    by_control(ExitReason::Pause, &with_proc(ProcCtls::PAUSE_EXITING));
    by_control(ExitReason::Pause, &with_proc2(ProcCtls2::PAUSE_LOOP_EXITING));
}

#[test]
fn preemption_timer_by_pin_control() {
    let on = with_pin(PinCtls::PREEMPTION_TIMER);
    by_control(ExitReason::PreemptionTimer, &on);
    assert!(l0_wants_exit(&ExitFacts::new(ExitReason::PreemptionTimer, 0), &Vmcs::new()));
    assert!(!l0_wants_exit(&ExitFacts::new(ExitReason::PreemptionTimer, 0), &on));
}

#[test]
fn apic_virtualization_exits_by_control() {
    by_control(ExitReason::TprBelowThreshold, &with_proc(ProcCtls::USE_TPR_SHADOW));
    by_control(ExitReason::ApicWrite, &with_proc(ProcCtls::USE_TPR_SHADOW));
    by_control(ExitReason::ApicAccess, &with_proc2(ProcCtls2::VIRTUALIZE_APIC_ACCESSES));
    by_control(ExitReason::VirtualizedEoi, &with_proc2(ProcCtls2::VIRTUAL_INTERRUPT_DELIVERY));
}

#[test]
fn descriptor_table_exits_by_control() {
    by_control(ExitReason::GdtrIdtrAccess, &with_proc2(ProcCtls2::DESCRIPTOR_TABLE_EXITING));
    by_control(ExitReason::LdtrTrAccess, &with_proc2(ProcCtls2::DESCRIPTOR_TABLE_EXITING));
}

#[test]
fn secondary_controls_are_ignored_unless_activated() {
    let mut v = with_proc2(ProcCtls2::DESCRIPTOR_TABLE_EXITING);
    v.set(F::PrimaryProcControls, 0);
    assert!(!wants_reason(ExitReason::GdtrIdtrAccess, &v));
}

#[test]
fn wbinvd_rdrand_rdseed_by_control() {
    by_control(ExitReason::Wbinvd, &with_proc2(ProcCtls2::WBINVD_EXITING));
    by_control(ExitReason::Rdrand, &with_proc2(ProcCtls2::RDRAND_EXITING));
    by_control(ExitReason::Rdseed, &with_proc2(ProcCtls2::RDSEED_EXITING));
}

#[test]
fn invpcid_needs_invlpg_exiting_and_enable_invpcid() {
    let mut v = with_proc2(ProcCtls2::ENABLE_INVPCID);
    assert!(!wants_reason(ExitReason::Invpcid, &v));
    or(&mut v, F::PrimaryProcControls, u64::from(ProcCtls::INVLPG_EXITING.bits()));
    assert!(wants_reason(ExitReason::Invpcid, &v));
    assert!(!wants_reason(ExitReason::Invpcid, &with_proc(ProcCtls::INVLPG_EXITING)));
}

#[test]
fn umwait_and_tpause_need_rdtsc_exiting_and_user_wait() {
    for r in [ExitReason::Umwait, ExitReason::Tpause] {
        let mut v = with_proc2(ProcCtls2::ENABLE_USER_WAIT_PAUSE);
        assert!(!wants_reason(r, &v));
        or(&mut v, F::PrimaryProcControls, u64::from(ProcCtls::RDTSC_EXITING.bits()));
        assert!(wants_reason(r, &v));
    }
}

#[test]
fn xsaves_by_xss_exiting_bitmap() {
    let mut v = with_proc2(ProcCtls2::ENABLE_XSAVES);
    assert!(!wants_reason(ExitReason::Xsaves, &v));
    v.set(F::XssExitingBitmap, 1 << 8);
    assert!(wants_reason(ExitReason::Xsaves, &v));
    assert!(wants_reason(ExitReason::Xrstors, &v));
}

#[test]
fn ept_exits_are_l0s_first_and_l1s_only_with_vmcs12_ept() {
    for r in [ExitReason::EptViolation, ExitReason::EptMisconfiguration] {
        let on = with_proc2(ProcCtls2::ENABLE_EPT);
        assert!(wants_reason(r, &on));
        assert!(!wants_reason(r, &Vmcs::new()));
        // L0 walks EPT12 (or handles EPT01's fault) in either case.
        assert!(l0_wants_exit(&ExitFacts::new(r, 0), &on));
        assert_eq!(route(&ExitFacts::new(r, 0), &on, &mem()), L0Action::Handle);
    }
}

#[test]
fn vmfunc_is_emulated_by_l0_when_vmcs12_enables_vm_functions() {
    let f = ExitFacts::new(ExitReason::Vmfunc, 0);
    assert!(l0_wants_exit(&f, &with_proc2(ProcCtls2::ENABLE_VM_FUNCTIONS)));
    assert!(!l0_wants_exit(&f, &Vmcs::new()));
}

fn cr(access: CrAccessType, cr: u8, source: u64, lmsw: u16) -> ExitFacts {
    let q = CrAccess { cr, access, lmsw_memory: false, gpr: 0, lmsw_source: lmsw };
    ExitFacts { cr_source: source, ..ExitFacts::new(ExitReason::ControlRegisterAccess, q.to_raw()) }
}

#[test]
fn mov_to_cr0_and_cr4_by_mask_and_shadow() {
    let mut v = Vmcs::new();
    v.set(F::Cr0GuestHostMask, Cr0::PG.bits());
    v.set(F::Cr0ReadShadow, Cr0::PG.bits());
    // An owned bit unchanged: no exit, whatever the other bits do.
    assert!(!wants(&cr(CrAccessType::MovToCr, 0, (Cr0::PG | Cr0::TS).bits(), 0), &v));
    // An owned bit differing from the shadow: exit.
    assert!(wants(&cr(CrAccessType::MovToCr, 0, Cr0::TS.bits(), 0), &v));
    v.set(F::Cr4GuestHostMask, Cr4::PAE.bits());
    assert!(wants(&cr(CrAccessType::MovToCr, 4, Cr4::PAE.bits(), 0), &v));
    assert!(!wants(&cr(CrAccessType::MovToCr, 4, Cr4::PGE.bits(), 0), &v));
    // Nothing owned: L0 emulates (its own CR0.NE / CR4.VMXE).
    let f = cr(CrAccessType::MovToCr, 4, 0, 0);
    assert_eq!(route(&f, &Vmcs::new(), &mem()), L0Action::Handle);
}

#[test]
fn mov_cr3_by_controls_and_targets() {
    let mut v = with_proc(ProcCtls::CR3_LOAD_EXITING);
    assert!(wants(&cr(CrAccessType::MovToCr, 3, 0x5000, 0), &v));
    v.set(F::Cr3TargetCount, 2);
    v.set(F::Cr3TargetValue1, 0x5000);
    v.set(F::Cr3TargetValue2, 0x6000); // beyond the count
    assert!(!wants(&cr(CrAccessType::MovToCr, 3, 0x5000, 0), &v));
    assert!(wants(&cr(CrAccessType::MovToCr, 3, 0x6000, 0), &v));
    assert!(!wants(&cr(CrAccessType::MovToCr, 3, 0x5000, 0), &Vmcs::new()));
    assert!(!wants(&cr(CrAccessType::MovFromCr, 3, 0, 0), &v));
    assert!(wants(&cr(CrAccessType::MovFromCr, 3, 0, 0), &with_proc(ProcCtls::CR3_STORE_EXITING)));
}

#[test]
fn mov_cr8_by_controls() {
    let load = with_proc(ProcCtls::CR8_LOAD_EXITING);
    let store = with_proc(ProcCtls::CR8_STORE_EXITING);
    assert!(wants(&cr(CrAccessType::MovToCr, 8, 1, 0), &load));
    assert!(!wants(&cr(CrAccessType::MovToCr, 8, 1, 0), &store));
    assert!(wants(&cr(CrAccessType::MovFromCr, 8, 0, 0), &store));
    assert!(!wants(&cr(CrAccessType::MovFromCr, 8, 0, 0), &load));
}

#[test]
fn clts_by_ts_in_mask_and_shadow() {
    let mut v = Vmcs::new();
    v.set(F::Cr0GuestHostMask, Cr0::TS.bits());
    assert!(!wants(&cr(CrAccessType::Clts, 0, 0, 0), &v));
    v.set(F::Cr0ReadShadow, Cr0::TS.bits());
    assert!(wants(&cr(CrAccessType::Clts, 0, 0, 0), &v));
    v.set(F::Cr0GuestHostMask, 0);
    assert!(!wants(&cr(CrAccessType::Clts, 0, 0, 0), &v));
}

#[test]
fn lmsw_by_mask_and_shadow() {
    let mut v = Vmcs::new();
    v.set(F::Cr0GuestHostMask, (Cr0::PE | Cr0::MP).bits());
    v.set(F::Cr0ReadShadow, 0);
    // Setting PE L1 owns (shadow PE = 0): exit.
    assert!(wants(&cr(CrAccessType::Lmsw, 0, 0, 1), &v));
    // LMSW cannot clear PE: with shadow PE = 1, a source without PE is fine.
    v.set(F::Cr0ReadShadow, Cr0::PE.bits());
    assert!(!wants(&cr(CrAccessType::Lmsw, 0, 0, 0), &v));
    // MP owned and differing: exit; TS not owned: no exit.
    assert!(wants(&cr(CrAccessType::Lmsw, 0, 0, 2), &v));
    assert!(!wants(&cr(CrAccessType::Lmsw, 0, 0, 8), &v));
}

fn io(port: u16, size: IoSize) -> ExitFacts {
    let q = IoAccess { size, is_in: true, string: false, rep: false, immediate: false, port };
    ExitFacts::new(ExitReason::IoInstruction, q.to_raw())
}

fn io_vmcs12(mem: &mut Memory) -> Vmcs {
    mem.write(IO_A, &[0; 4096]).unwrap();
    mem.write(IO_B, &[0; 4096]).unwrap();
    let mut v = with_proc(ProcCtls::USE_IO_BITMAPS);
    v.set(F::IoBitmapA, IO_A);
    v.set(F::IoBitmapB, IO_B);
    v
}

#[test]
fn io_by_unconditional_exiting_without_bitmaps() {
    let m = mem();
    let f = io(0x3f8, IoSize::Byte);
    assert!(l1_wants_exit(&f, &with_proc(ProcCtls::UNCONDITIONAL_IO_EXITING), &m));
    assert!(!l1_wants_exit(&f, &Vmcs::new(), &m));
}

#[test]
fn io_by_bitmaps_in_l1_memory() {
    let mut m = mem();
    let mut v = io_vmcs12(&mut m);
    // Bitmaps win over unconditional I/O exiting.
    or(&mut v, F::PrimaryProcControls, u64::from(ProcCtls::UNCONDITIONAL_IO_EXITING.bits()));
    assert!(!l1_wants_exit(&io(0x3f8, IoSize::Byte), &v, &m));
    m.write(IO_A + 0x3f8 / 8, &[1]).unwrap();
    assert!(l1_wants_exit(&io(0x3f8, IoSize::Byte), &v, &m));
    assert!(!l1_wants_exit(&io(0x3f9, IoSize::Byte), &v, &m));
    // A dword at 0x3f6 spans 0x3f8.
    assert!(l1_wants_exit(&io(0x3f6, IoSize::Dword), &v, &m));
    assert!(!l1_wants_exit(&io(0x3f4, IoSize::Word), &v, &m));
    // Bitmap B: port 0x8000 is its bit 0; a word at 0x7fff spans A and B.
    m.write(IO_B, &[1]).unwrap();
    assert!(l1_wants_exit(&io(0x8000, IoSize::Byte), &v, &m));
    assert!(!l1_wants_exit(&io(0x7fff, IoSize::Byte), &v, &m));
    assert!(l1_wants_exit(&io(0x7fff, IoSize::Word), &v, &m));
    // Wrapping past 0xffff exits whatever the bitmaps say.
    assert!(!l1_wants_exit(&io(0xfffe, IoSize::Word), &v, &m));
    assert!(l1_wants_exit(&io(0xfffe, IoSize::Dword), &v, &m));
}

#[test]
fn io_bitmap_outside_l1_ram_means_exit() {
    let mut m = mem();
    let mut v = io_vmcs12(&mut m);
    v.set(F::IoBitmapA, MEM + 0x1000);
    assert!(l1_wants_exit(&io(0x80, IoSize::Byte), &v, &m));
    assert!(!l1_wants_exit(&io(0x8080, IoSize::Byte), &v, &m));
}

fn msr(reason: ExitReason, index: u32) -> ExitFacts {
    ExitFacts { rcx: 0xffff_ffff_0000_0000 | u64::from(index), ..ExitFacts::new(reason, 0) }
}

#[test]
fn rdmsr_and_wrmsr_by_msr_bitmap() {
    let mut m = mem();
    let none = Vmcs::new();
    // Without MSR bitmaps: always.
    assert!(l1_wants_exit(&msr(ExitReason::Rdmsr, 0x10), &none, &m));
    assert!(l1_wants_exit(&msr(ExitReason::Wrmsr, 0x10), &none, &m));
    let mut v = with_proc(ProcCtls::USE_MSR_BITMAPS);
    v.set(F::MsrBitmap, MSR_BM);
    m.write(MSR_BM, &[0; 4096]).unwrap();
    for (r, i) in [(ExitReason::Rdmsr, 0x10), (ExitReason::Wrmsr, 0xc000_0080)] {
        assert!(!l1_wants_exit(&msr(r, i), &v, &m), "{r} {i:#x}");
    }
    // Read low at 0, read high at 1024, write low at 2048, write high at
    // 3072; the index is ECX (RCX's high half ignored).
    m.write(MSR_BM + 2, &[1]).unwrap(); // RDMSR 0x10
    m.write(MSR_BM + 1024 + 0x10, &[1]).unwrap(); // RDMSR 0xc000_0080
    m.write(MSR_BM + 2048 + 0x3a / 8, &[1 << (0x3a % 8)]).unwrap(); // WRMSR 0x3a
    m.write(MSR_BM + 3072 + 0x20, &[1 << 1]).unwrap(); // WRMSR 0xc000_0101
    assert!(l1_wants_exit(&msr(ExitReason::Rdmsr, 0x10), &v, &m));
    assert!(!l1_wants_exit(&msr(ExitReason::Wrmsr, 0x10), &v, &m));
    assert!(l1_wants_exit(&msr(ExitReason::Rdmsr, 0xc000_0080), &v, &m));
    assert!(!l1_wants_exit(&msr(ExitReason::Wrmsr, 0xc000_0080), &v, &m));
    assert!(l1_wants_exit(&msr(ExitReason::Wrmsr, 0x3a), &v, &m));
    assert!(!l1_wants_exit(&msr(ExitReason::Rdmsr, 0x3a), &v, &m));
    assert!(l1_wants_exit(&msr(ExitReason::Wrmsr, 0xc000_0101), &v, &m));
    // Outside both ranges: always.
    assert!(l1_wants_exit(&msr(ExitReason::Rdmsr, 0x4000_0000), &v, &m));
    // A bitmap outside L1's RAM reads as all ones.
    v.set(F::MsrBitmap, MEM);
    assert!(l1_wants_exit(&msr(ExitReason::Rdmsr, 0x11), &v, &m));
    // Unclaimed by L1: L0 emulates the MSR for L2.
    v.set(F::MsrBitmap, MSR_BM);
    assert_eq!(route(&msr(ExitReason::Rdmsr, 0x11), &v, &m), L0Action::Handle);
}

#[test]
fn every_exit_reason_is_routed_without_panicking() {
    let m = mem();
    for &r in ExitReason::ALL {
        for v in [Vmcs::new(), everything()] {
            for q in [0, u64::MAX] {
                let f = ExitFacts { interruption_info: u32::MAX, rcx: u64::MAX, ..ExitFacts::new(r, q) };
                let _ = route(&f, &v, &m);
            }
        }
    }
}
