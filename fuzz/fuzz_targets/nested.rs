//! Hostile L1 under libFuzzer (issue 6, item 9): the input chooses a guest
//! hypervisor's VMX operations — the vmcs12 contents it VMWRITEs, a raw
//! vmcs12 image it may VMPTRLD, VMLAUNCH, then VMX instructions with
//! arbitrary operands, and L2's first instructions — which then runs on
//! the whole VMM (`turtles_vmm::Vm`, CPU policy `max`).
//!
//! The case generator is the one of the `hostile_l1` property test
//! (`crates/vmm/tests/hostile_l1.rs`), fed with the input's bytes (eight per
//! choice) instead of a seed. L0 must not panic (libFuzzer reports it) and
//! must not hang: a run that reaches the wall-clock timeout aborts, so the
//! input is saved as a crash.
//!
//! Run with `cargo +nightly fuzz run nested` from `fuzz/`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Duration;

#[allow(dead_code)]
#[path = "../../crates/vmm/tests/hostile_l1.rs"]
mod hostile_l1;

fuzz_target!(|data: &[u8]| {
    let case = hostile_l1::build_case(&mut hostile_l1::Rng::from_input(data));
    let (exit, summary) = hostile_l1::run_case(&case, Duration::from_secs(10));
    if let turtles_vmm::ExitKind::Timeout { .. } = exit {
        panic!("L0 hung\n{summary}\n{}", case.listing.join("\n"));
    }
});
