//! End-to-end tests of the `turtles` binary: the demo, QEMU-style and
//! native invocations, one-line errors, exit statuses, failure reports,
//! serial input, and the reference benchmark kernel from `../shared`.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const TURTLES: &str = env!("CARGO_BIN_EXE_turtles");

/// Runs `turtles` with `args` and `stdin`, killing it after `limit`.
fn turtles_with_input(args: &[&str], stdin: &[u8], limit: Duration) -> Output {
    let mut child = Command::new(TURTLES)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn turtles");
    let mut input = child.stdin.take().expect("stdin");
    input.write_all(stdin).expect("write stdin");
    drop(input);
    let start = Instant::now();
    while child.try_wait().expect("wait").is_none() {
        if start.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn turtles(args: &[&str]) -> Output {
    turtles_with_input(args, b"", Duration::from_secs(300))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A multiboot a.out-kludge kernel at 1 MiB whose 32-bit code follows the
/// 32-byte header, written to a temporary file.
fn kernel_file(name: &str, code: &[u8]) -> PathBuf {
    const MAGIC: u32 = 0x1BAD_B002;
    const FLAGS: u32 = 1 << 16;
    let mut k = Vec::new();
    for v in [MAGIC, FLAGS, 0u32.wrapping_sub(MAGIC.wrapping_add(FLAGS)), 0x10_0000, 0x10_0000, 0, 0, 0x10_0020] {
        k.extend_from_slice(&v.to_le_bytes());
    }
    k.extend_from_slice(code);
    let path = std::env::temp_dir().join(format!("turtles-test-{}-{name}.elf", std::process::id()));
    std::fs::write(&path, k).expect("write test kernel");
    path
}

fn reference(name: &str) -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/bench/guests/build").join(name);
    p.exists().then_some(p)
}

#[test]
fn no_argument_runs_the_demo() {
    let o = turtles(&[]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(33), "stdout:\n{out}\nstderr:\n{}", stderr(&o));
    // The nested demo: L0 runs the guest hypervisor `hyper` (L1), which
    // runs its own guest (L2); the exits of each level follow.
    assert!(out.contains("TURTLES-TEST hyper"), "{out}");
    assert!(out.contains("L2> hello from L2"), "{out}");
    assert!(out.lines().any(|l| l.starts_with("PASS")), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("FAIL")), "{out}");
    let err = stderr(&o);
    for level in ["L0 exits from L1:", "L0 exits from L2:", "L2 exits reflected to L1:"] {
        assert!(err.contains(level), "{level} missing:\n{err}");
    }
}

#[test]
fn unknown_flags_are_one_line_errors() {
    for (args, msg) in [
        (&["-foo"][..], "turtles: unknown option '-foo'\n"),
        (&["-kernel", "k.elf", "-hda", "disk.img"][..], "turtles: unknown option '-hda'\n"),
        (&["run", "k.elf", "--bogus"][..], "turtles: unknown option '--bogus'\n"),
        (
            &["-kernel", "k.elf", "-m", "12q"][..],
            "turtles: -m 12q: invalid RAM size (a number of MiB, or with a k, M, G or T suffix)\n",
        ),
        (&["-kernel", "k.elf", "-smp", "0"][..], "turtles: -smp 0: invalid number of CPUs (1 to 255)\n"),
        (
            &["-kernel", "k.elf", "-cpu", "max,+avx512f"][..],
            "turtles: CPU feature 'avx512f' is not available on Turtles' CPU\n",
        ),
        (
            &["-kernel", "k.elf", "-device", "e1000"][..],
            "turtles: -device e1000: 'e1000' is not a valid device model name\n",
        ),
    ] {
        let o = turtles(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}");
        assert_eq!(stderr(&o), msg, "{args:?}");
        assert!(o.stdout.is_empty(), "{args:?}");
    }
}

#[test]
fn missing_kernel_says_could_not_load_kernel() {
    let o = turtles(&["-kernel", "/nonexistent/kernel.elf"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("turtles: could not load kernel '/nonexistent/kernel.elf': "), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let o = turtles(&["run", "/nonexistent/kernel.elf"]);
    assert!(stderr(&o).contains("could not load kernel"), "{}", stderr(&o));
}

#[test]
fn device_help_lists_devices_in_qemu_format() {
    let o = turtles(&["-device", "help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for line in ["name \"isa-debug-exit\", bus ISA", "name \"pc-testdev\", bus ISA", "name \"pci-testdev\", bus PCI"] {
        assert!(out.contains(line), "{out}");
    }
}

#[test]
fn help_documents_qemu_flags() {
    let o = turtles(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    for flag in ["-kernel", "-append", "-initrd", "-smp", "-no-reboot", "-device help", "pit=off", "--timeout", "bench"]
    {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
}

#[test]
fn reference_boot_kernel_exits_33_with_its_bench_line() {
    let Some(boot) = reference("boot.elf") else { return };
    let boot = boot.to_str().expect("utf-8 path");
    let o = turtles(&[
        "-kernel",
        boot,
        "-m",
        "256",
        "-serial",
        "stdio",
        "-nodefaults",
        "-display",
        "none",
        "-vnc",
        "none",
        "-no-reboot",
        "-machine",
        "accel=kvm:tcg",
        "-global",
        "kvm-pit.lost_tick_policy=discard",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=0x4",
        "--timeout",
        "120",
    ]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(33), "stdout:\n{out}\nstderr:\n{}", stderr(&o));
    let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("BENCH wl=boot ")).collect();
    assert_eq!(lines.len(), 1, "exactly one BENCH line (port 0xe9 is not echoed):\n{out}");
    assert!(lines[0].contains(" sum=0x"), "{out}");
}

#[test]
fn stats_go_to_stderr() {
    let Some(boot) = reference("boot.elf") else { return };
    let o = turtles(&["run", boot.to_str().expect("utf-8 path"), "--stats", "--timeout", "120"]);
    assert_eq!(o.status.code(), Some(33), "{}", stderr(&o));
    let err = stderr(&o);
    for what in [
        "instructions retired:",
        "MIPS",
        "exceptions:",
        "interrupts:",
        "unimplemented instructions:",
        "serial",
        "blocks decoded:",
    ] {
        assert!(err.contains(what), "{what} missing from:\n{err}");
    }
}

#[test]
fn halted_forever_prints_a_short_report() {
    let k = kernel_file("cli-hlt", &[0xfa, 0xf4]); // cli; hlt
    let o = turtles(&["run", k.to_str().expect("utf-8 path"), "--timeout", "60"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(err.starts_with("turtles: every CPU is halted"), "{err}");
    assert!(err.contains("cpu0: protected mode, Halted, CS:RIP 0008:100022"), "{err}");
    assert!(err.lines().count() <= 4, "{err}");
}

#[test]
fn triple_fault_ends_the_run_with_status_2() {
    let k = kernel_file("ud2", &[0x0f, 0x0b]); // ud2 with no IDT
    let o = turtles(&["-kernel", k.to_str().expect("utf-8 path"), "--timeout", "60"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.starts_with("turtles: CPU 0 shut down"), "{err}");
    assert!(err.contains("last exception"), "{err}");
}

#[test]
fn timeout_exits_124() {
    let k = kernel_file("spin", &[0xeb, 0xfe]); // jmp $
    let o = turtles(&["run", k.to_str().expect("utf-8 path"), "--timeout", "0.5"]);
    assert_eq!(o.status.code(), Some(124));
    let err = stderr(&o);
    assert!(err.starts_with("turtles: timeout after 0.5 s"), "{err}");
    assert!(err.contains("bytes: eb fe"), "{err}");
}

#[test]
fn stdin_reaches_the_uart() {
    // Poll LSR.DR, read the byte, write it to isa-debug-exit.
    let code = [
        0x66, 0xba, 0xfd, 0x03, // mov dx, 0x3fd
        0xec, // in al, dx
        0xa8, 0x01, // test al, 1
        0x74, 0xfb, // jz -5
        0x66, 0xba, 0xf8, 0x03, // mov dx, 0x3f8
        0xec, // in al, dx
        0xe6, 0xf4, // out 0xf4, al
        0xfa, 0xf4, // cli; hlt
    ];
    let k = kernel_file("echo", &code);
    let o = turtles_with_input(
        &["run", k.to_str().expect("utf-8 path"), "--timeout", "60"],
        b"A",
        Duration::from_secs(120),
    );
    assert_eq!(o.status.code(), Some((0x41 << 1) | 1), "{}", stderr(&o));
}

#[test]
fn power_off_and_reset_with_no_reboot_exit_0() {
    // mov al, 0xfe; out 0x64, al (reset through the keyboard controller)
    let k = kernel_file("reset", &[0xb0, 0xfe, 0xe6, 0x64, 0xeb, 0xfe]);
    let o = turtles(&["-kernel", k.to_str().expect("utf-8 path"), "-no-reboot", "--timeout", "60"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn cpu_policy_errors_and_help() {
    let o = turtles(&["run", "k.elf", "--cpu", "nosuch"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "turtles: CPU model 'nosuch' is neither a preset nor a policy file (see --cpu help)\n");
    assert!(o.stdout.is_empty());
    let o = turtles(&["run", "k.elf", "--cpu", "minimal,+avx512f"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "turtles: CPU feature 'avx512f' is not available on Turtles' CPU\n");
    for args in [&["run", "--cpu", "help"][..], &["-cpu", "help"][..]] {
        let o = turtles(args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        let out = stdout(&o);
        for preset in ["max", "host", "qemu64", "minimal", "server", "nested-min"] {
            assert!(out.lines().any(|l| l.starts_with(&format!("x86 {preset} "))), "{preset} missing from:\n{out}");
        }
    }
}

#[test]
fn cpu_policy_minimal_boots_a_kernel_and_withholds_vmx() {
    let demo = PathBuf::from(env!("TURTLES_GUEST_DIR")).join("demo");
    let o = turtles(&["run", demo.to_str().expect("utf-8 path"), "--cpu", "minimal"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(33), "stdout:\n{out}\nstderr:\n{}", stderr(&o));
    assert!(out.lines().any(|l| l.starts_with("PASS")), "{out}");
    assert!(!out.lines().any(|l| l.starts_with("FAIL")), "{out}");
    // The guest hypervisor is told what the policy offers: no VMX at all,
    // or VMX without EPT, and it refuses to start.
    let o = turtles(&["demo", "--cpu", "minimal"]);
    assert!(stdout(&o).contains("FAIL CPUID.1:ECX.VMX is set"), "{}", stdout(&o));
    assert_ne!(o.status.code(), Some(33));
    let o = turtles(&["demo", "--cpu", "nested-min"]);
    assert!(stdout(&o).contains("FAIL VMX offers HLT/I/O exiting, EPT"), "{}", stdout(&o));
    assert_ne!(o.status.code(), Some(33));
}

#[test]
fn cpu_policy_refuses_what_it_does_not_offer() {
    // rdrand eax; mov al, 0x10; out 0xf4, al; cli; hlt
    let k = kernel_file("rdrand", &[0x0f, 0xc7, 0xf0, 0xb0, 0x10, 0xe6, 0xf4, 0xfa, 0xf4]);
    let k = k.to_str().expect("utf-8 path");
    let o = turtles(&["run", k, "--cpu", "max", "--timeout", "60"]);
    assert_eq!(o.status.code(), Some(33), "{}", stderr(&o));
    // Without RDRAND in the policy it is #UD; with no IDT, a triple fault.
    let o = turtles(&["run", k, "--cpu", "minimal", "--timeout", "60"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    // A policy file on top of minimal, with RDRAND added back.
    let policy = std::env::temp_dir().join(format!("turtles-test-{}-cpu.toml", std::process::id()));
    std::fs::write(&policy, "base = \"minimal\"\nname = \"small\"\n").expect("write policy");
    let spec = format!("{},+rdrand", policy.display());
    let o = turtles(&["run", k, "--cpu", &spec, "--timeout", "60"]);
    assert_eq!(o.status.code(), Some(33), "{}", stderr(&o));
    std::fs::write(&policy, "base = \"minimal\"\n[vmx]\npreset = \"turtles\"\n").expect("write policy");
    let o = turtles(&["run", k, "--cpu", policy.to_str().expect("utf-8 path")]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        format!(
            "turtles: CPU policy '{}': the policy offers VMX capabilities ([vmx]) but CPUID.1:ECX.VMX (bit 5) is clear\n",
            policy.display()
        )
    );
    let _ = std::fs::remove_file(&policy);
}
