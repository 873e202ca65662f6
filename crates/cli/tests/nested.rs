//! Boots the nested-VMX conformance kernels of `guests/` through the
//! `turtles` binary with VMX offered to the guest (`--cpu max`): the guest
//! is an L1 hypervisor whose L2 snippets exercise each VM-exit condition
//! (issue 6, item 7). Checks the `TURTLES-TEST` banner, that no check
//! failed, the final `PASS n` line and the isa-debug-exit status 33.
//!
//! The kernels are built by this package's build script; their directory
//! comes from `TURTLES_GUEST_DIR`.

use std::path::PathBuf;
use std::process::{Command, Output};

fn kernel(name: &str) -> PathBuf {
    PathBuf::from(env!("TURTLES_GUEST_DIR")).join(name)
}

fn boot(name: &str, extra: &[&str]) -> Output {
    let k = kernel(name);
    assert!(k.is_file(), "guest kernel {} was not built", k.display());
    Command::new(env!("CARGO_BIN_EXE_turtles"))
        .arg("run")
        .arg(&k)
        .args(["-m", "256M", "--timeout", "120"])
        .args(extra)
        .output()
        .expect("run turtles")
}

/// Boots `name` and asserts it passed; returns its stdout.
fn passes(name: &str, extra: &[&str]) -> String {
    let o = boot(name, extra);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(out.contains(&format!("TURTLES-TEST {name}")), "{name}: no banner\n{out}\n{err}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "{name}: failed checks:\n{}\n{err}", failed.join("\n"));
    let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("PASS "), "{name}: last line {last:?}\n{err}");
    let n: u32 = last[5..].trim().parse().unwrap_or(0);
    assert!(n > 0, "{name}: PASS without checks");
    assert_eq!(o.status.code(), Some(33), "{name}: exit status\n{err}");
    out
}

/// Each VM-exit condition of L2 reaches L1 with the exit-information
/// fields the SDM defines (SDM Vol. 3C, 28.2), and L1's event injection,
/// MSR lists and EPT work for L2.
#[test]
fn vmx_exits() {
    let out = passes("vmx-exits", &["--cpu", "max"]);
    assert!(out.contains("ok CPUID: exit reason 10"), "{out}");
}
