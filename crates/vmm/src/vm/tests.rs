//! Run-loop tests with tiny hand-assembled kernels, plus the reference
//! benchmark kernel when `../shared` is present.

use super::*;
use crate::loader::multiboot::{FLAG_AOUT_KLUDGE, HEADER_MAGIC};

/// A multiboot a.out-kludge kernel at 1 MiB whose 32-bit code follows the
/// 32-byte header.
fn kernel32(code: &[u8]) -> Vec<u8> {
    let mut k = Vec::new();
    let flags = FLAG_AOUT_KLUDGE;
    for v in [HEADER_MAGIC, flags, 0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(flags))] {
        k.extend_from_slice(&v.to_le_bytes());
    }
    for v in [0x10_0000u32, 0x10_0000, 0, 0, 0x10_0020] {
        k.extend_from_slice(&v.to_le_bytes());
    }
    k.extend_from_slice(code);
    k
}

/// `out` of each byte of `s` to COM1, then `out 0xf4, al` with `status`.
fn print_and_exit(s: &[u8], status: u8) -> Vec<u8> {
    let mut c = vec![0x66, 0xba, 0xf8, 0x03]; // mov dx, 0x3f8
    for &b in s {
        c.extend_from_slice(&[0xb0, b, 0xee]); // mov al, b; out dx, al
    }
    c.extend_from_slice(&[0xb0, status, 0xe6, 0xf4]); // mov al, status; out 0xf4, al
    c.extend_from_slice(&[0xfa, 0xf4]); // cli; hlt
    c
}

fn config(kernel: Vec<u8>) -> (VmConfig, Arc<Mutex<Vec<u8>>>) {
    let mut cfg = VmConfig::new(ImageSource::Bytes { name: "test".into(), data: Cow::Owned(kernel) });
    cfg.ram_size = 8 << 20;
    cfg.devices.debug_exit = Some((0xf4, 4));
    cfg.timeout = Some(Duration::from_secs(20));
    let (w, buf) = SharedWriter::buffer();
    cfg.serial_out = w;
    (cfg, buf)
}

fn run(cfg: VmConfig) -> RunReport {
    Vm::new(cfg).unwrap().run().unwrap()
}

#[test]
fn serial_output_and_debug_exit() {
    let (cfg, out) = config(kernel32(&print_and_exit(b"hi\n", 0x10)));
    let r = run(cfg);
    assert_eq!(r.exit, ExitKind::DebugExit { status: 33 }, "{}", r.failure_summary());
    assert_eq!(r.exit.exit_status(), 33);
    assert_eq!(out.lock().unwrap().as_slice(), b"hi\n");
    assert!(r.total_insns() >= 9);
    assert!(r.devices.iter().any(|d| d.name == "serial" && d.io == 3), "{:?}", r.devices);
}

#[test]
fn cli_hlt_is_halted_forever() {
    let (cfg, _) = config(kernel32(&[0xfa, 0xf4]));
    let r = run(cfg);
    assert_eq!(r.exit, ExitKind::HaltedForever, "{}", r.failure_summary());
    assert_eq!(r.cpus[0].activity, Activity::Halted);
    assert!(r.failure_summary().contains("bytes: "), "{}", r.failure_summary());
}

#[test]
fn sti_hlt_without_timers_or_input_is_halted_forever() {
    let (mut cfg, _) = config(kernel32(&[0xfb, 0xf4, 0xeb, 0xfd]));
    cfg.devices.pit = false;
    let r = run(cfg);
    assert_eq!(r.exit, ExitKind::HaltedForever, "{}", r.failure_summary());
}

#[test]
fn endless_loop_times_out_with_a_report() {
    let (mut cfg, _) = config(kernel32(&[0xeb, 0xfe])); // jmp $
    cfg.timeout = Some(Duration::from_millis(200));
    let r = run(cfg);
    assert_eq!(r.exit, ExitKind::Timeout { after: Duration::from_millis(200) });
    assert_eq!(r.exit.exit_status(), 124);
    let s = r.failure_summary();
    assert!(s.contains("cpu0: protected mode"), "{s}");
    assert!(s.contains("CS:RIP 0008:100020"), "{s}");
    assert!(s.contains("bytes: eb fe"), "{s}");
}

#[test]
fn ud2_without_idt_triple_faults() {
    // IDT base 0 limit 0xffff (reset value): the gates read as zero, so
    // #UD -> #NP -> #DF -> shutdown.
    let (cfg, _) = config(kernel32(&[0x0f, 0x0b]));
    let r = run(cfg);
    assert!(matches!(r.exit, ExitKind::TripleFault { cpu: 0, .. }), "{}", r.failure_summary());
    assert_eq!(r.exit.exit_status(), 2);
}

#[test]
fn reset_ends_the_run_with_no_reboot_and_reboots_without() {
    // mov al, 0xfe; out 0x64, al (keyboard-controller reset); jmp $
    let code = [0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe];
    let (mut cfg, _) = config(kernel32(&code));
    cfg.no_reboot = true;
    assert_eq!(run(cfg).exit, ExitKind::Reset);
    let (mut cfg, _) = config(kernel32(&code));
    cfg.timeout = Some(Duration::from_millis(300));
    let r = run(cfg);
    assert!(matches!(r.exit, ExitKind::Timeout { .. }));
    assert!(r.resets > 0);
}

#[test]
fn plain_elf64_runs_in_long_mode() {
    // In 64-bit mode: print "64" and exit, then check RSP and RDI survived.
    let code = print_and_exit(b"64", 0x10);
    let k = crate::loader::elf::build::elf(true, 62, 0x20_0000, &[(0x20_0000, &code, 0x1000)]);
    let (cfg, out) = config(k);
    let r = run(cfg);
    assert_eq!(r.exit, ExitKind::DebugExit { status: 33 }, "{}", r.failure_summary());
    assert_eq!(out.lock().unwrap().as_slice(), b"64");
    assert_eq!(r.kernel_format, crate::KernelFormat::Elf64);
    assert_eq!(r.cpus[0].mode, Mode::Long);
}

#[test]
fn aps_wait_for_sipi_with_their_own_apic_ids() {
    let (mut cfg, _) = config(kernel32(&[0xfa, 0xf4]));
    cfg.cpus = 3;
    let vm = Vm::new(cfg).unwrap();
    assert_eq!(vm.cpus()[0].activity(), Activity::Active);
    for (i, v) in vm.cpus().iter().enumerate() {
        let c = &v.cpu;
        assert_eq!(c.apic_id, i as u32);
        assert_eq!(c.cpuid.raw(1, 0)[1] >> 24, i as u32);
        assert_eq!((c.cpuid.raw(1, 0)[1] >> 16) & 0xff, 3);
        if i > 0 {
            assert_eq!(v.activity(), Activity::WaitForSipi);
        }
    }
}

#[test]
fn bad_configurations_are_errors() {
    let (mut cfg, _) = config(kernel32(&[0xf4]));
    cfg.cpus = 0;
    assert!(matches!(Vm::new(cfg), Err(VmError::BadCpuCount(0))));
    let (mut cfg, _) = config(kernel32(&[0xf4]));
    cfg.ram_size = (4 << 20) + 1;
    assert!(matches!(Vm::new(cfg), Err(VmError::BadRamSize(_))));
    let (mut cfg, _) = config(kernel32(&[0xf4]));
    cfg.ram_size = 1 << 20;
    assert!(matches!(Vm::new(cfg), Err(VmError::BadRamSize(_))));
    let mut cfg = VmConfig::new(ImageSource::File("/nonexistent/kernel.elf".into()));
    cfg.ram_size = 8 << 20;
    let e = Vm::new(cfg).err().unwrap();
    assert!(e.to_string().starts_with("could not load kernel '/nonexistent/kernel.elf': "), "{e}");
    let (mut cfg, _) = config(kernel32(&[0xf4]));
    cfg.modules.push(ModuleSpec { source: ImageSource::File("/nonexistent/initrd".into()), cmdline: String::new() });
    assert!(matches!(Vm::new(cfg), Err(VmError::ModuleRead { .. })));
    let (cfg, _) = config(b"not a kernel".to_vec());
    let e = Vm::new(cfg).err().unwrap();
    assert!(e.to_string().starts_with("could not load kernel 'test': not a kernel"), "{e}");
}

#[test]
fn acpi_rsdp_is_in_the_bios_area() {
    let (cfg, _) = config(kernel32(&[0xf4]));
    let vm = Vm::new(cfg).unwrap();
    let mut sig = [0u8; 8];
    vm.memory().read(layout::ACPI_RSDP, &mut sig).unwrap();
    assert_eq!(&sig, b"RSD PTR ");
    let rsdt = vm.memory().read_u32(layout::ACPI_RSDP + 16).unwrap() as u64;
    assert!((layout::ACPI_TABLES..layout::ACPI_TABLES_END).contains(&rsdt));
}

fn reference(name: &str) -> Option<Vec<u8>> {
    std::fs::read(format!("{}/../../../shared/bench/guests/build/{name}", env!("CARGO_MANIFEST_DIR"))).ok()
}

#[test]
fn reference_boot_kernel_prints_its_bench_line() {
    let Some(k) = reference("boot.elf") else { return };
    let (mut cfg, out) = config(k);
    cfg.ram_size = 128 << 20;
    let r = run(cfg);
    let out = String::from_utf8_lossy(&out.lock().unwrap()).into_owned();
    assert_eq!(r.exit, ExitKind::DebugExit { status: 33 }, "{}\n{out}", r.failure_summary());
    assert!(out.contains("BENCH wl=boot"), "{out}");
}

#[test]
fn runs_are_deterministic() {
    let Some(k) = reference("cpuid.elf") else { return };
    let once = || {
        let (mut cfg, out) = config(k.clone());
        cfg.ram_size = 128 << 20;
        cfg.cpus = 2;
        let r = run(cfg);
        let out = out.lock().unwrap().clone();
        (r.exit, r.insns, out)
    };
    let a = once();
    assert_eq!(a, once());
}

#[test]
fn debugcon_goes_to_its_own_sink_or_nowhere() {
    // mov al, 'x'; out 0xe9, al; in al, 0xe9; mov dx, 0x3f8; out dx, al; exit
    let code = [0xb0, b'x', 0xe6, 0xe9, 0xe4, 0xe9, 0x66, 0xba, 0xf8, 0x03, 0xee, 0xb0, 0x10, 0xe6, 0xf4, 0xfa, 0xf4];
    let (cfg, out) = config(kernel32(&code));
    run(cfg);
    assert_eq!(out.lock().unwrap().as_slice(), &[0xff], "no debugcon: dropped, reads all-ones");
    let (mut cfg, out) = config(kernel32(&code));
    let (w, dbg) = SharedWriter::buffer();
    cfg.debugcon = Some(w);
    run(cfg);
    assert_eq!(out.lock().unwrap().as_slice(), &[0xe9]);
    assert_eq!(dbg.lock().unwrap().as_slice(), b"x");
}

#[test]
fn panic_watch_matches_the_marker_across_writes() {
    use std::io::Write;
    let (out, buf) = SharedWriter::buffer();
    let state = std::sync::Arc::new(std::sync::atomic::AtomicU8::new(0));
    let mut w = super::PanicWatch { inner: out, matched: 0, state: state.clone() };
    w.write_all(b"ok ---[ end Ker").unwrap();
    assert_eq!(state.load(std::sync::atomic::Ordering::Relaxed), 0);
    w.write_all(b"nel panic - not syncing: x ]---").unwrap();
    assert_eq!(state.load(std::sync::atomic::Ordering::Relaxed), 1);
    w.write_all(b"\n").unwrap();
    assert_eq!(state.load(std::sync::atomic::Ordering::Relaxed), 2);
    assert!(buf.lock().unwrap().ends_with(b"]---\n"), "bytes pass through");
}
