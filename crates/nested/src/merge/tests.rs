use super::*;
use vmx::controls::InterruptionInfo;

const MEM: u64 = 0x10_0000;
/// vmcs12's MSR bitmap, in L1's RAM.
const BM12: u64 = 0x8000;

struct Setup {
    mem: Memory,
    vmcs01: Vmcs,
    vmcs12: Vmcs,
    res: Vmcs02Resources,
}

fn or(v: &mut Vmcs, f: F, bits: u64) {
    v.set(f, v.get(f) | bits);
}

/// vmcs01 as L0 builds it (l0.rs `build_vmcs01`), vmcs12 as a simple L1
/// would (64-bit L2, EPT, HLT and CPUID exits).
fn setup() -> Setup {
    let mut mem = Memory::new(MEM).unwrap();
    let bm01 = mem.alloc_private_page().unwrap();
    mem.write_phys(bm01, &[0xff; PAGE]).unwrap();
    let res = Vmcs02Resources {
        io_bitmaps: [mem.alloc_private_page().unwrap(), mem.alloc_private_page().unwrap()],
        msr_bitmap: mem.alloc_private_page().unwrap(),
        eptp02: Some(0x5_501e),
        vpid02: 7,
    };
    let mut v01 = Vmcs::new();
    v01.set(F::PinBasedControls, u64::from((PinCtls::EXTERNAL_INTERRUPT_EXITING | PinCtls::NMI_EXITING).bits()));
    let p01 = ProcCtls::HLT_EXITING
        | ProcCtls::USE_IO_BITMAPS
        | ProcCtls::USE_MSR_BITMAPS
        | ProcCtls::CR8_LOAD_EXITING
        | ProcCtls::CR8_STORE_EXITING
        | ProcCtls::ACTIVATE_SECONDARY_CONTROLS;
    v01.set(F::PrimaryProcControls, u64::from(p01.bits()));
    let p2_01 =
        ProcCtls2::ENABLE_EPT | ProcCtls2::ENABLE_VPID | ProcCtls2::UNRESTRICTED_GUEST | ProcCtls2::ENABLE_RDTSCP;
    v01.set(F::SecondaryProcControls, u64::from(p2_01.bits()));
    let x01 = ExitCtls::HOST_ADDRESS_SPACE_SIZE
        | ExitCtls::SAVE_EFER
        | ExitCtls::LOAD_EFER
        | ExitCtls::SAVE_PAT
        | ExitCtls::LOAD_PAT
        | ExitCtls::SAVE_DEBUG_CONTROLS;
    v01.set(F::ExitControls, u64::from(x01.bits()));
    v01.set(F::EntryControls, u64::from((ENTRY02_ALWAYS | EntryCtls::IA32E_MODE_GUEST).bits()));
    v01.set(F::Cr0GuestHostMask, Cr0::NE.bits());
    v01.set(F::Cr4GuestHostMask, Cr4::VMXE.bits());
    v01.set(F::MsrBitmap, bm01);
    v01.set(F::EptPointer, 0x1_101e);
    v01.set(F::VirtualProcessorId, 1);
    v01.set(F::GuestIa32Efer, (Efer::LMA | Efer::LME).bits() | 1);
    v01.set(F::GuestIa32Pat, 0x0007_0406_0007_0406);
    v01.set(F::GuestDr7, 0x401);
    v01.set(F::GuestIa32Debugctl, 0x3);

    let mut v12 = Vmcs::new();
    v12.set(F::PinBasedControls, 0x16);
    let p12 = ProcCtls::HLT_EXITING | ProcCtls::ACTIVATE_SECONDARY_CONTROLS;
    v12.set(F::PrimaryProcControls, u64::from(p12.bits()));
    v12.set(F::SecondaryProcControls, u64::from((ProcCtls2::ENABLE_EPT | ProcCtls2::ENABLE_VPID).bits()));
    let e12 = EntryCtls::IA32E_MODE_GUEST | EntryCtls::LOAD_EFER;
    v12.set(F::EntryControls, u64::from(e12.bits()));
    v12.set(F::ExitControls, u64::from((ExitCtls::HOST_ADDRESS_SPACE_SIZE | ExitCtls::SAVE_EFER).bits()));
    v12.set(F::GuestCr0, (Cr0::PE | Cr0::PG | Cr0::ET).bits());
    v12.set(F::GuestCr4, Cr4::PAE.bits());
    v12.set(F::GuestIa32Efer, (Efer::LMA | Efer::LME).bits());
    v12.set(F::EptPointer, 0x2_001e);
    v12.set(F::VirtualProcessorId, 3);
    Setup { mem, vmcs01: v01, vmcs12: v12, res }
}

fn prepare(s: &mut Setup) -> Vmcs {
    let mut v02 = Vmcs::new();
    prepare_vmcs02(&mut v02, &s.vmcs01, &s.vmcs12, &s.res, &mut s.mem);
    v02
}

fn fields(kind: FieldKind) -> impl Iterator<Item = F> {
    F::ALL.iter().copied().filter(move |f| !f.is_high() && f.kind() == kind)
}

fn proc02(v: &Vmcs) -> ProcCtls {
    ProcCtls::from_bits_retain(v.get(F::PrimaryProcControls) as u32)
}

fn proc2_02(v: &Vmcs) -> ProcCtls2 {
    ProcCtls2::from_bits_retain(v.get(F::SecondaryProcControls) as u32)
}

#[test]
fn host_state_is_l0s_never_l1s() {
    let mut s = setup();
    for (i, f) in fields(FieldKind::HostState).enumerate() {
        s.vmcs01.set(f, 0x1000 + i as u64);
        s.vmcs12.set(f, 0x9000 + i as u64);
    }
    let v02 = prepare(&mut s);
    for f in fields(FieldKind::HostState) {
        assert_eq!(v02.get(f), s.vmcs01.get(f), "{f}");
        assert_ne!(v02.get(f), s.vmcs12.get(f), "{f}");
    }
    // And the exit controls that say how host state loads are L0's.
    assert_eq!(v02.get(F::ExitControls), s.vmcs01.get(F::ExitControls));
}

#[test]
fn guest_state_is_vmcs12s() {
    let mut s = setup();
    for (i, f) in fields(FieldKind::GuestState).enumerate() {
        s.vmcs01.set(f, 0x1000 + i as u64);
        s.vmcs12.set(f, 0x9000 + i as u64);
    }
    or(&mut s.vmcs12, F::EntryControls, u64::from(ENTRY02_ALWAYS.bits()));
    let v02 = prepare(&mut s);
    for f in fields(FieldKind::GuestState) {
        match f {
            F::GuestCr0 => assert_eq!(v02.get(f), s.vmcs12.get(f) | Cr0::NE.bits()),
            F::GuestCr4 => assert_eq!(v02.get(f), s.vmcs12.get(f) | Cr4::VMXE.bits()),
            F::VmcsLinkPointer => assert_eq!(v02.get(f), u64::MAX),
            _ => assert_eq!(v02.get(f), s.vmcs12.get(f), "{f}"),
        }
    }
}

#[test]
fn efer_pat_and_debug_controls_are_l1s_when_vmcs12_does_not_load_them() {
    let mut s = setup();
    s.vmcs12.set(F::EntryControls, u64::from(EntryCtls::IA32E_MODE_GUEST.bits()));
    s.vmcs12.set(F::GuestIa32Efer, 0xdead);
    s.vmcs12.set(F::GuestIa32Pat, 0xbeef);
    s.vmcs12.set(F::GuestDr7, 0x8400);
    s.vmcs01.set(F::GuestIa32Efer, 1); // SCE only: L1 in legacy mode
    let v02 = prepare(&mut s);
    // 27.3.2.1: LMA, and LME since CR0.PG = 1, from "IA-32e mode guest".
    assert_eq!(v02.get(F::GuestIa32Efer), 1 | (Efer::LMA | Efer::LME).bits());
    assert_eq!(v02.get(F::GuestIa32Pat), s.vmcs01.get(F::GuestIa32Pat));
    assert_eq!(v02.get(F::GuestDr7), 0x401);
    assert_eq!(v02.get(F::GuestIa32Debugctl), 3);
    let entry02 = EntryCtls::from_bits_retain(v02.get(F::EntryControls) as u32);
    assert!(entry02.contains(ENTRY02_ALWAYS | EntryCtls::IA32E_MODE_GUEST));

    // Not IA-32e, paging on: LMA and LME cleared. Paging off: LME kept.
    s.vmcs12.set(F::EntryControls, 0);
    s.vmcs01.set(F::GuestIa32Efer, 1 | (Efer::LMA | Efer::LME).bits());
    assert_eq!(prepare(&mut s).get(F::GuestIa32Efer), 1);
    s.vmcs12.set(F::GuestCr0, Cr0::PE.bits());
    assert_eq!(prepare(&mut s).get(F::GuestIa32Efer), 1 | Efer::LME.bits());

    // Loaded by vmcs12: vmcs12's values.
    s.vmcs12.set(F::EntryControls, u64::from(ENTRY02_ALWAYS.bits()));
    let v02 = prepare(&mut s);
    assert_eq!(v02.get(F::GuestIa32Efer), 0xdead);
    assert_eq!(v02.get(F::GuestIa32Pat), 0xbeef);
    assert_eq!(v02.get(F::GuestDr7), 0x8400);
}

#[test]
fn execution_controls_merged() {
    let mut s = setup();
    or(&mut s.vmcs01, F::PrimaryProcControls, u64::from((PROC01_FOR_L1_ONLY | ProcCtls::MWAIT_EXITING).bits()));
    let p12 = ProcCtls::UNCONDITIONAL_IO_EXITING | ProcCtls::RDTSC_EXITING | ProcCtls::ACTIVATE_TERTIARY_CONTROLS;
    or(&mut s.vmcs12, F::PrimaryProcControls, u64::from(p12.bits()));
    or(&mut s.vmcs12, F::PinBasedControls, u64::from(PinCtls::PREEMPTION_TIMER.bits()));
    let v02 = prepare(&mut s);
    let pin02 = PinCtls::from_bits_retain(v02.get(F::PinBasedControls) as u32);
    assert_eq!(pin02.bits(), 0x16 | (PinCtls::EXTERNAL_INTERRUPT_EXITING | PinCtls::NMI_EXITING).bits() | 0x40);
    let p = proc02(&v02);
    // L0's exits kept (HLT, MWAIT, CR8), its requests about L1 dropped.
    assert!(p.contains(ProcCtls::HLT_EXITING | ProcCtls::MWAIT_EXITING | ProcCtls::CR8_LOAD_EXITING));
    assert!(p.contains(ProcCtls::RDTSC_EXITING));
    assert!(!p.intersects(PROC01_FOR_L1_ONLY));
    // I/O through L0's all-ones bitmaps, MSRs through the merged page.
    assert!(p.contains(ProcCtls::USE_IO_BITMAPS | ProcCtls::USE_MSR_BITMAPS | ProcCtls::ACTIVATE_SECONDARY_CONTROLS));
    assert!(!p.intersects(ProcCtls::UNCONDITIONAL_IO_EXITING | ProcCtls::ACTIVATE_TERTIARY_CONTROLS));
    assert_eq!([v02.get(F::IoBitmapA), v02.get(F::IoBitmapB)], s.res.io_bitmaps);
    assert_eq!(v02.get(F::MsrBitmap), s.res.msr_bitmap);
    // Exit controls: L0's plus saving L1's timer; entry: vmcs12's plus
    // EFER/PAT/debug loads.
    let x02 = ExitCtls::from_bits_retain(v02.get(F::ExitControls) as u32);
    assert_eq!(x02.bits(), s.vmcs01.get(F::ExitControls) as u32 | ExitCtls::SAVE_PREEMPTION_TIMER.bits());
    let e02 = EntryCtls::from_bits_retain(v02.get(F::EntryControls) as u32);
    assert_eq!(e02, entry(&s.vmcs12) | ENTRY02_ALWAYS);
    assert_eq!(v02.get(F::ExitMsrStoreCount), 0);
    assert_eq!(v02.get(F::ExitMsrLoadCount), 0);
}

#[test]
fn tpr_shadow_of_l1_replaces_l0s_cr8_exiting() {
    let mut s = setup();
    or(&mut s.vmcs12, F::PrimaryProcControls, u64::from(ProcCtls::USE_TPR_SHADOW.bits()));
    s.vmcs12.set(F::VirtualApicAddress, 0x7000);
    s.vmcs12.set(F::TprThreshold, 4);
    let v02 = prepare(&mut s);
    let p = proc02(&v02);
    assert!(p.contains(ProcCtls::USE_TPR_SHADOW));
    assert!(!p.intersects(ProcCtls::CR8_LOAD_EXITING | ProcCtls::CR8_STORE_EXITING));
    assert_eq!(v02.get(F::VirtualApicAddress), 0x7000);
    assert_eq!(v02.get(F::TprThreshold), 4);
}

#[test]
fn secondary_controls_ept_and_vpid() {
    let mut s = setup();
    let v02 = prepare(&mut s);
    let p2 = proc2_02(&v02);
    assert!(p2.contains(ProcCtls2::ENABLE_EPT | ProcCtls2::ENABLE_VPID));
    // vmcs01's "enable" controls describe L1, not L2.
    assert!(!p2.intersects(ProcCtls2::UNRESTRICTED_GUEST | ProcCtls2::ENABLE_RDTSCP));
    assert_eq!(v02.get(F::EptPointer), 0x5_501e);
    assert_eq!(v02.get(F::VirtualProcessorId), 7);

    // vmcs12's: passed when virtualized, cleared when not.
    let p2_12 = ProcCtls2::UNRESTRICTED_GUEST
        | ProcCtls2::ENABLE_RDTSCP
        | ProcCtls2::VMCS_SHADOWING
        | ProcCtls2::ENABLE_PML
        | ProcCtls2::EPT_VIOLATION_VE
        | ProcCtls2::ENCLS_EXITING;
    or(&mut s.vmcs12, F::SecondaryProcControls, u64::from(p2_12.bits()));
    s.vmcs12.set(F::VmFunctionControls, 1);
    s.vmcs12.set(F::PmlAddress, 0x3000);
    or(&mut s.vmcs01, F::SecondaryProcControls, u64::from(ProcCtls2::WBINVD_EXITING.bits()));
    s.res.eptp02 = None;
    s.res.vpid02 = 0;
    let v02 = prepare(&mut s);
    let p2 = proc2_02(&v02);
    assert!(p2.contains(ProcCtls2::UNRESTRICTED_GUEST | ProcCtls2::ENABLE_RDTSCP | ProcCtls2::WBINVD_EXITING));
    let off = ProcCtls2::VMCS_SHADOWING
        | ProcCtls2::ENABLE_PML
        | ProcCtls2::EPT_VIOLATION_VE
        | ProcCtls2::ENCLS_EXITING
        | ProcCtls2::ENABLE_VPID;
    assert!(!p2.intersects(off));
    assert_eq!(v02.get(F::VmFunctionControls), 0);
    assert_eq!(v02.get(F::PmlAddress), 0);
    // No EPT02: EPT01; no VPID for L2.
    assert_eq!(v02.get(F::EptPointer), 0x1_101e);
    assert_eq!(v02.get(F::VirtualProcessorId), 0);

    // Secondary controls not activated in vmcs12: none of its bits pass.
    s.vmcs12.set(F::PrimaryProcControls, u64::from(ProcCtls::HLT_EXITING.bits()));
    let p2 = proc2_02(&prepare(&mut s));
    assert_eq!(p2, ProcCtls2::ENABLE_EPT | ProcCtls2::WBINVD_EXITING);
}

#[test]
fn exception_bitmap_and_page_fault_filter() {
    let mut s = setup();
    s.vmcs01.set(F::ExceptionBitmap, 1 << 18);
    s.vmcs12.set(F::ExceptionBitmap, (1 << 14) | (1 << 6));
    s.vmcs12.set(F::PageFaultErrorCodeMask, 1);
    s.vmcs12.set(F::PageFaultErrorCodeMatch, 1);
    let v02 = prepare(&mut s);
    assert_eq!(v02.get(F::ExceptionBitmap), (1 << 18) | (1 << 14) | (1 << 6));
    assert_eq!((v02.get(F::PageFaultErrorCodeMask), v02.get(F::PageFaultErrorCodeMatch)), (1, 1));
    // L0 intercepts #PF: every #PF exits.
    s.vmcs01.set(F::ExceptionBitmap, 1 << 14);
    let v02 = prepare(&mut s);
    assert_eq!((v02.get(F::PageFaultErrorCodeMask), v02.get(F::PageFaultErrorCodeMatch)), (0, 0));
}

#[test]
fn cr_masks_and_read_shadows() {
    let mut s = setup();
    let m12 = (Cr0::PE | Cr0::TS).bits();
    s.vmcs12.set(F::Cr0GuestHostMask, m12);
    s.vmcs12.set(F::Cr0ReadShadow, Cr0::TS.bits() | Cr0::NE.bits() | Cr0::MP.bits());
    // L1 gave L2 NE = 0 (allowed with unrestricted guest in L1's view).
    s.vmcs12.set(F::GuestCr0, (Cr0::PE | Cr0::PG).bits());
    s.vmcs12.set(F::Cr4GuestHostMask, Cr4::PAE.bits());
    s.vmcs12.set(F::Cr4ReadShadow, 0);
    s.vmcs12.set(F::GuestCr4, Cr4::PAE.bits() | Cr4::VMXE.bits());
    let v02 = prepare(&mut s);
    assert_eq!(v02.get(F::Cr0GuestHostMask), m12 | Cr0::NE.bits());
    // TS from vmcs12's shadow, PE from vmcs12's shadow (0), NE from L2's
    // CR0 as L1 set it (0), MP not host-owned (don't care, 0).
    assert_eq!(v02.get(F::Cr0ReadShadow), Cr0::TS.bits());
    assert_eq!(v02.get(F::GuestCr0), (Cr0::PE | Cr0::PG | Cr0::NE).bits());
    assert_eq!(v02.get(F::Cr4GuestHostMask), (Cr4::PAE | Cr4::VMXE).bits());
    // VMXE: only L0's; L2's CR4 as L1 set it has it.
    assert_eq!(v02.get(F::Cr4ReadShadow), Cr4::VMXE.bits());
}

#[test]
fn msr_bitmap_is_the_union() {
    let mut s = setup();
    let bm01 = s.vmcs01.get(F::MsrBitmap);
    let mut a = [0u8; PAGE];
    a[0] = 0x01; // RDMSR 0 exits for L0
    a[2048 + 0x10] = 0x80; // WRMSR 0x87 exits for L0
    s.mem.write_phys(bm01, &a).unwrap();
    let mut b = [0u8; PAGE];
    b[0] = 0x02; // RDMSR 1 exits for L1
    b[1024 + 0x10] = 0x01; // RDMSR 0xc0000080 exits for L1
    s.mem.write(BM12, &b).unwrap();
    s.vmcs12.set(F::MsrBitmap, BM12);
    or(&mut s.vmcs12, F::PrimaryProcControls, u64::from(ProcCtls::USE_MSR_BITMAPS.bits()));
    prepare(&mut s);
    let mut m = [0u8; PAGE];
    s.mem.read_phys(s.res.msr_bitmap, &mut m).unwrap();
    let want: Vec<u8> = a.iter().zip(b).map(|(x, y)| x | y).collect();
    assert_eq!(&m[..], &want[..]);

    // vmcs12's bitmap outside L1's RAM reads as all ones.
    s.vmcs12.set(F::MsrBitmap, MEM + 0x1000);
    prepare(&mut s);
    s.mem.read_phys(s.res.msr_bitmap, &mut m).unwrap();
    assert!(m.iter().all(|&x| x == 0xff));

    // No MSR bitmaps in vmcs12: every MSR access exits.
    s.mem.write_phys(s.res.msr_bitmap, &[0; PAGE]).unwrap();
    s.vmcs12.set(F::MsrBitmap, BM12);
    s.vmcs12.set(F::PrimaryProcControls, u64::from(ProcCtls::ACTIVATE_SECONDARY_CONTROLS.bits()));
    prepare(&mut s);
    s.mem.read_phys(s.res.msr_bitmap, &mut m).unwrap();
    assert!(m.iter().all(|&x| x == 0xff));
}

#[test]
fn tsc_offsets_compose() {
    let mut s = setup();
    // Neither offsets: none.
    let v02 = prepare(&mut s);
    assert!(!proc02(&v02).contains(ProcCtls::USE_TSC_OFFSETTING));
    assert_eq!(v02.get(F::TscOffset), 0);
    // L0 offsets L1 by 1000, L1 offsets L2 by -300: 700.
    or(&mut s.vmcs01, F::PrimaryProcControls, u64::from(ProcCtls::USE_TSC_OFFSETTING.bits()));
    s.vmcs01.set(F::TscOffset, 1000);
    s.vmcs12.set(F::TscOffset, (-300i64) as u64);
    let v02 = prepare(&mut s);
    assert!(proc02(&v02).contains(ProcCtls::USE_TSC_OFFSETTING));
    assert_eq!(v02.get(F::TscOffset), 1000, "vmcs12 does not use its offset");
    or(&mut s.vmcs12, F::PrimaryProcControls, u64::from(ProcCtls::USE_TSC_OFFSETTING.bits()));
    let v02 = prepare(&mut s);
    assert_eq!(v02.get(F::TscOffset), 700);
    assert!(!proc2_02(&v02).contains(ProcCtls2::USE_TSC_SCALING));
    // L1 scales L2's TSC by 2: L2 = (host + 1000) * 2 - 300.
    or(&mut s.vmcs12, F::SecondaryProcControls, u64::from(ProcCtls2::USE_TSC_SCALING.bits()));
    s.vmcs12.set(F::TscMultiplier, 2 * TSC_MULTIPLIER_ONE);
    let v02 = prepare(&mut s);
    assert!(proc2_02(&v02).contains(ProcCtls2::USE_TSC_SCALING));
    assert_eq!(v02.get(F::TscMultiplier), 2 * TSC_MULTIPLIER_ONE);
    assert_eq!(v02.get(F::TscOffset), 1700);
    // Negative offsets scale as signed numbers.
    s.vmcs01.set(F::TscOffset, (-1000i64) as u64);
    assert_eq!(prepare(&mut s).get(F::TscOffset) as i64, -2300);
}

#[test]
fn per_entry_fields_are_vmcs12s() {
    let mut s = setup();
    let pf = InterruptionInfo::hardware_exception(14, true).to_raw();
    s.vmcs12.set(F::EntryInterruptionInfo, u64::from(pf));
    s.vmcs12.set(F::EntryExceptionErrorCode, 2);
    s.vmcs12.set(F::EntryInstructionLength, 3);
    s.vmcs12.set(F::PreemptionTimerValue, 1234);
    s.vmcs12.set(F::GuestInterruptibilityState, 1);
    s.vmcs12.set(F::GuestActivityState, 1);
    s.vmcs12.set(F::GuestPendingDebugExceptions, 0x4000);
    s.vmcs12.set(F::Cr3TargetCount, 2);
    s.vmcs12.set(F::Cr3TargetValue1, 0x4000);
    s.vmcs12.set(F::EntryMsrLoadAddress, 0x6000);
    s.vmcs12.set(F::EntryMsrLoadCount, 2);
    let v02 = prepare(&mut s);
    for f in [
        F::EntryInterruptionInfo,
        F::EntryExceptionErrorCode,
        F::EntryInstructionLength,
        F::PreemptionTimerValue,
        F::GuestInterruptibilityState,
        F::GuestActivityState,
        F::GuestPendingDebugExceptions,
        F::Cr3TargetCount,
        F::Cr3TargetValue1,
        F::EntryMsrLoadAddress,
        F::EntryMsrLoadCount,
    ] {
        assert_eq!(v02.get(f), s.vmcs12.get(f), "{f}");
    }
    // L0 exiting on CR3 loads itself: no target may hide one.
    or(&mut s.vmcs01, F::PrimaryProcControls, u64::from(ProcCtls::CR3_LOAD_EXITING.bits()));
    assert_eq!(prepare(&mut s).get(F::Cr3TargetCount), 0);
}

#[test]
fn entry_msr_list_outside_l1_ram_never_reaches_the_cpu() {
    let mut s = setup();
    let private = s.res.msr_bitmap;
    s.vmcs12.set(F::EntryMsrLoadAddress, private);
    s.vmcs12.set(F::EntryMsrLoadCount, 1);
    assert_eq!(prepare(&mut s).get(F::EntryMsrLoadCount), 0);
    // Running off the end of RAM.
    s.vmcs12.set(F::EntryMsrLoadAddress, MEM - 16);
    s.vmcs12.set(F::EntryMsrLoadCount, 2);
    assert_eq!(prepare(&mut s).get(F::EntryMsrLoadCount), 0);
    s.vmcs12.set(F::EntryMsrLoadCount, 1);
    assert_eq!(prepare(&mut s).get(F::EntryMsrLoadCount), 1);
}

#[test]
fn pae_pdptes_come_from_l1_memory_without_vmcs12_ept() {
    let mut s = setup();
    // 32-bit PAE L2, L1 does its paging (no EPT in vmcs12).
    s.vmcs12.set(F::SecondaryProcControls, 0);
    s.vmcs12.set(F::EntryControls, u64::from(EntryCtls::LOAD_EFER.bits()));
    s.vmcs12.set(F::GuestIa32Efer, 0);
    s.vmcs12.set(F::GuestCr3, 0x3020);
    for i in 0..4u64 {
        s.mem.write_u64(0x3020 + 8 * i, 0x10_0001 + (i << 12)).unwrap();
    }
    s.vmcs12.set(F::GuestPdpte0, 0xbad);
    let v02 = prepare(&mut s);
    assert_eq!(v02.get(F::GuestPdpte0), 0x10_0001);
    assert_eq!(v02.get(F::GuestPdpte3), 0x10_3001);
    // With vmcs12's EPT, vmcs12's fields.
    s.vmcs12.set(F::SecondaryProcControls, u64::from(ProcCtls2::ENABLE_EPT.bits()));
    assert_eq!(prepare(&mut s).get(F::GuestPdpte0), 0xbad);
}

/// The PDPTEs and link-pointer header the entry checks would read: none.
struct NoMemory;

impl vmx::EntryMemory for NoMemory {
    fn pdptes(&self, _: x86::Gpa) -> [u64; 4] {
        [0; 4]
    }
    fn vmcs_header(&self, _: x86::Gpa) -> u32 {
        0
    }
}

/// vmcs01 with L0's host state and vmcs12 with a valid 64-bit L2, both
/// adjusted to Turtles' capabilities.
fn enterable() -> Setup {
    use vmx::{ControlWord, VmxCaps};
    let caps = VmxCaps::turtles();
    let mut s = setup();
    let words = [
        (ControlWord::Pin, F::PinBasedControls),
        (ControlWord::Proc, F::PrimaryProcControls),
        (ControlWord::Proc2, F::SecondaryProcControls),
        (ControlWord::Exit, F::ExitControls),
        (ControlWord::Entry, F::EntryControls),
    ];
    for v in [&mut s.vmcs01, &mut s.vmcs12] {
        for (word, f) in words {
            v.set(f, caps.adjust(word, v.get(f)));
        }
    }
    let v01 = &mut s.vmcs01;
    v01.set(F::HostCr0, (Cr0::PE | Cr0::PG | Cr0::NE | Cr0::ET).bits());
    v01.set(F::HostCr3, 0x1000);
    v01.set(F::HostCr4, (Cr4::PAE | Cr4::VMXE).bits());
    v01.set(F::HostIa32Efer, (Efer::LME | Efer::LMA).bits());
    v01.set(F::HostIa32Pat, 0x0007_0406_0007_0406);
    v01.set(F::HostCsSelector, 0x08);
    for f in [F::HostSsSelector, F::HostDsSelector, F::HostEsSelector, F::HostFsSelector, F::HostGsSelector] {
        v01.set(f, 0x10);
    }
    v01.set(F::HostTrSelector, 0x18);
    v01.set(F::HostRip, 0xffff_8000_0000_0000);
    v01.set(F::HostRsp, 0xffff_8000_0000_8000);
    let v12 = &mut s.vmcs12;
    v12.set(F::GuestCr0, (Cr0::PE | Cr0::PG | Cr0::ET).bits());
    v12.set(F::GuestCr3, 0x2000);
    v12.set(F::GuestCr4, Cr4::PAE.bits());
    v12.set(F::GuestDr7, 0x400);
    v12.set(F::GuestRflags, 2);
    v12.set(F::GuestRip, 0x1000);
    v12.set(F::GuestIa32Pat, 0x0007_0406_0007_0406);
    v12.set(F::GuestCsSelector, 0x08);
    v12.set(F::GuestCsLimit, 0xffff_ffff);
    v12.set(F::GuestCsAccessRights, 0xa09b);
    for [sel, lim, ar] in [
        [F::GuestSsSelector, F::GuestSsLimit, F::GuestSsAccessRights],
        [F::GuestDsSelector, F::GuestDsLimit, F::GuestDsAccessRights],
        [F::GuestEsSelector, F::GuestEsLimit, F::GuestEsAccessRights],
        [F::GuestFsSelector, F::GuestFsLimit, F::GuestFsAccessRights],
        [F::GuestGsSelector, F::GuestGsLimit, F::GuestGsAccessRights],
    ] {
        v12.set(sel, 0x10);
        v12.set(lim, 0xffff_ffff);
        v12.set(ar, 0xc093);
    }
    v12.set(F::GuestTrSelector, 0x18);
    v12.set(F::GuestTrLimit, 0x67);
    v12.set(F::GuestTrAccessRights, 0x8b);
    v12.set(F::GuestLdtrAccessRights, 0x1_0000);
    v12.set(F::GuestGdtrLimit, 0xffff);
    v12.set(F::GuestIdtrLimit, 0xffff);
    v12.set(F::VmcsLinkPointer, u64::MAX);
    s
}

#[test]
fn vmcs02_passes_the_vm_entry_checks() {
    use vmx::{check_vm_entry, EntryEnv, VmxCaps};
    let caps = VmxCaps::turtles();
    let mut s = enterable();
    let v02 = prepare(&mut s);
    assert_eq!(check_vm_entry(&v02, &caps, &EntryEnv::TURTLES, &NoMemory), Ok(()));
    // The checks do look: L1's VMXE-less host CR4 would fail them, were it
    // in vmcs02.
    let mut bad = v02.clone();
    bad.set(F::HostCr4, Cr4::PAE.bits());
    assert!(check_vm_entry(&bad, &caps, &EntryEnv::TURTLES, &NoMemory).is_err());
    // L2 in 32-bit protected mode without paging, under L1's unrestricted
    // guest; L1 does not load EFER (L1's is 64-bit) and L0 does.
    let v12 = &mut s.vmcs12;
    let p2 = ProcCtls2::ENABLE_EPT | ProcCtls2::UNRESTRICTED_GUEST;
    v12.set(F::SecondaryProcControls, u64::from(p2.bits()));
    let entry12 = EntryCtls::from_bits_retain(v12.get(F::EntryControls) as u32)
        - EntryCtls::IA32E_MODE_GUEST
        - EntryCtls::LOAD_EFER;
    v12.set(F::EntryControls, u64::from(entry12.bits()));
    v12.set(F::GuestCr0, (Cr0::PE | Cr0::ET).bits());
    v12.set(F::GuestCr4, 0);
    v12.set(F::GuestCsAccessRights, 0xc09b);
    let v02 = prepare(&mut s);
    assert_eq!(v02.get(F::GuestIa32Efer) & (Efer::LMA | Efer::LME).bits(), Efer::LME.bits());
    assert_eq!(check_vm_entry(&v02, &caps, &EntryEnv::TURTLES, &NoMemory), Ok(()));
}
