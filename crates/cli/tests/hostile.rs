//! Hostile guests through the `turtles` binary (issue 6, item 9): the
//! `escape` guest hypervisor gives its L2 an EPT that maps only a small
//! window; L2 reads and writes outside it (L1's secret page, L1's VMCS and
//! EPT, L0's private memory at 0xfc_0000_0000, the APIC page, high
//! addresses) and L1 must see an EPT violation for each, never the data.
//! L1 then points vmcs12's EPTP, VM-entry MSR-load list and VM-exit
//! MSR-store list at L0's private memory and VMPTRLDs/VMCLEARs it: each
//! must fail cleanly or fault in EPT, and L0 must be intact afterwards.
//!
//! The kernels are built by this package's build script; their directory
//! comes from `TURTLES_GUEST_DIR`.

#[allow(dead_code)]
mod common;
use common::boot;

#[test]
fn l2_cannot_escape_its_ept_window() {
    let o = boot("escape", &["--cpu", "max"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(out.contains("TURTLES-TEST escape"), "no banner\n{out}\n{err}");
    let failed: Vec<&str> = out.lines().filter(|l| l.starts_with("FAIL")).collect();
    assert!(failed.is_empty(), "failed checks:\n{}\n{err}", failed.join("\n"));
    let last = out.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    assert!(last.starts_with("PASS "), "last line {last:?}\n{err}");
    assert!(out.contains("L2 attempts: 20, EPT violations seen by L1: 20"), "{out}");
    assert_eq!(o.status.code(), Some(33), "exit status\n{out}\n{err}");
}
