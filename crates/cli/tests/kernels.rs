//! Boots every guest test kernel of `guests/` through the `turtles` binary
//! and checks what it reports: its `TURTLES-TEST` banner, no failed check,
//! the final `PASS n` line, the isa-debug-exit status 33 and, where the
//! kernel exercises them, the exception and interrupt statistics.
//!
//! The kernels are built by this package's build script; their directory
//! comes from `TURTLES_GUEST_DIR`.

#[allow(dead_code)]
mod common;
use common::{boot, passes};

/// The count `--stats` reports for exception `label` (e.g. "#PF") on its
/// `exceptions: #BP 1, #PF 25` line.
fn stat(err: &str, label: &str) -> u64 {
    err.lines()
        .filter_map(|l| l.trim().strip_prefix("exceptions:"))
        .flat_map(|l| l.split(','))
        .filter_map(|item| {
            let mut w = item.split_whitespace();
            (w.next()? == label).then(|| w.next()?.parse().ok())?
        })
        .next()
        .unwrap_or(0)
}

/// The count `--stats` reports for VM exit reason `name` (e.g. "cpuid")
/// in its `vm exits:` table.
fn exits(err: &str, name: &str) -> u64 {
    err.lines()
        .skip_while(|l| !l.starts_with("vm exits:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next()? == name).then(|| w.next()?.parse().ok())?
        })
        .unwrap_or(0)
}

#[test]
fn demo() {
    let (out, err) = passes("demo", &["--append", "hello"]);
    assert!(out.contains("cmdline:") && out.contains("hello"), "{out}");
    // It ran as a VM under L0: its port I/O and CPUID exited.
    assert!(exits(&err, "io_instruction") > 0, "{err}");
    assert!(exits(&err, "cpuid") > 0, "{err}");
}

#[test]
fn direct_and_under_l0_runs_print_the_same() {
    let (l0, _) = passes("interrupts", &[]);
    let (direct, err) = passes("interrupts", &["--direct"]);
    assert_eq!(l0, direct);
    assert!(err.contains("vm exits: none"), "{err}");
}

#[test]
fn modes() {
    passes("modes", &[]);
}

#[test]
fn paging() {
    let (_, err) = passes("paging", &[]);
    assert!(stat(&err, "#PF") > 0, "page faults are counted in --stats:\n{err}");
}

#[test]
fn exceptions() {
    let (_, err) = passes("exceptions", &[]);
    for v in ["#DE", "#UD", "#GP", "#DF"] {
        assert!(stat(&err, v) > 0, "{v} counted in --stats:\n{err}");
    }
}

#[test]
fn interrupts() {
    passes("interrupts", &[]);
}

#[test]
fn smp_starts_every_ap_on_one_sipi() {
    for n in ["1", "2", "4"] {
        let (out, _) = passes("smp", &["-smp", n]);
        assert!(out.contains("ok"), "{out}");
    }
}

#[test]
fn fwcfg() {
    passes("fwcfg", &["-smp", "2", "--append", "fw_cfg command line"]);
}

#[test]
fn pci() {
    let (out, _) = passes("pci", &["-device", "pci-testdev"]);
    assert!(out.contains("8086:1237") && out.contains("1b36:0005"), "{out}");
}

#[test]
fn testdev() {
    passes("testdev", &["-device", "pc-testdev"]);
}

#[test]
fn self_modifying_code() {
    passes("smc", &[]);
}

#[test]
fn syscall() {
    passes("syscall", &[]);
}

#[test]
fn sse() {
    passes("sse", &[]);
}

#[test]
fn xsave() {
    passes("xsave", &[]);
}

#[test]
fn bench_kernel_matches_reference_sums() {
    let (out, _) = passes("bench", &[]);
    assert!(out.contains("BENCH wl=alu"), "{out}");
}

#[test]
fn runs_are_deterministic() {
    let a = boot("smp", &["-smp", "4"]);
    let b = boot("smp", &["-smp", "4"]);
    assert_eq!(a.stdout, b.stdout);
    assert_eq!(a.status.code(), Some(33));
}

#[test]
fn guest_hypervisor_runs_its_own_guest() {
    // L0 -> L1 (hyper) -> L2: L1 uses VMX as on hardware, with EPT; L2's
    // exits reach L1 through L0.
    let (out, err) = passes("hyper", &["--cpu", "max"]);
    assert!(out.contains("L2> hello from L2"), "{out}");
    assert!(out.contains("L1 exits: cpuid 1, io 14, ept_violation 1, hlt 1"), "{out}");
    for reason in ["vmxon", "vmptrld", "vmlaunch", "vmresume", "ept_violation"] {
        assert!(exits(&err, reason) > 0, "{reason} exits:\n{err}");
    }
    // With a current vmcs12, L1's VMREADs and VMWRITEs of supported fields
    // reach it through vmcs01's shadow VMCS without exiting.
    for reason in ["vmwrite", "vmread"] {
        assert_eq!(exits(&err, reason), 0, "{reason} exits:\n{err}");
    }
}

#[test]
fn vmx_instructions_and_entry_checks_conform() {
    let (_, err) = passes("vmx", &["--cpu", "max"]);
    assert!(exits(&err, "vmlaunch") > 0, "{err}");
}

#[test]
fn without_vmx_in_the_policy_vmx_instructions_are_ud() {
    let o = boot("vmx", &[]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("FAIL CPUID.1:ECX.VMX is set") || out.contains("#UD"), "{out}");
    assert_ne!(o.status.code(), Some(33));
}

#[test]
fn explain_names_every_failed_vm_entry_check() {
    let o = boot("vmx", &["--cpu", "max", "--explain"]);
    let err = String::from_utf8_lossy(&o.stderr);
    for id in ["ctl.pin.allowed", "host.cs_selector.null", "guest.cr0.fixed", "guest.vmcs_link_pointer.address"] {
        assert!(err.lines().any(|l| l.starts_with("explain: ") && l.contains(id)), "{id} not explained:\n{err}");
    }
    assert!(err.contains("SDM 27.2.3") && err.contains("host_cs_selector = 0x0"), "{err}");
}

#[test]
fn trace_exits_logs_each_exit_with_reason_qualification_and_rip() {
    let o = boot("demo", &["--trace", "exits"]);
    let err = String::from_utf8_lossy(&o.stderr);
    let cpuid = err.lines().filter(|l| l.contains("vm exit") && l.contains("reason=\"cpuid\"")).count();
    assert!(cpuid > 0, "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("reason=\"io_instruction\"") && l.contains("qualification=") && l.contains("rip=")),
        "{err}"
    );
    assert_eq!(cpuid as u64, exits(&err, "cpuid"), "one line per exit:\n{err}");
}
