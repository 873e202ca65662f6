//! Boots the nested-VMX conformance kernels of `guests/` through the
//! `turtles` binary with VMX offered to the guest (`--cpu max`): the guest
//! is an L1 hypervisor whose L2 snippets exercise each VM-exit condition
//! (issue 6, item 7). Checks the `TURTLES-TEST` banner, that no check
//! failed, the final `PASS n` line and the isa-debug-exit status 33.
//!
//! The kernels are built by this package's build script; their directory
//! comes from `TURTLES_GUEST_DIR`.

#[allow(dead_code)]
mod common;
use common::passes;

/// Each VM-exit condition of L2 reaches L1 with the exit-information
/// fields the SDM defines (SDM Vol. 3C, 28.2), and L1's event injection,
/// MSR lists and EPT work for L2.
#[test]
fn vmx_exits() {
    let (out, err) = passes("vmx-exits", &["--cpu", "max"]);
    assert!(out.contains("ok CPUID: exit reason 10"), "{out}");
    // 26.5.5.3: L0 carries out L2's EPTP switch without an exit to L1,
    // and reflects the failing ones.
    assert!(out.contains("ok VMFUNC 0: L2 reads its page through list entry 0, then 1"), "{out}");
    assert!(out.contains("ok VMFUNC with an invalid list entry: exit reason 59"), "{out}");
    // L1 rewrote an EPT12 leaf without INVEPT and L2 saw the new page:
    // L0 caught the write through EPT01 and dropped EPT02.
    assert!(out.contains("ok EPT12 leaf rewritten to X -> B without INVEPT: L2 reads B"), "{out}");
    // "EPT12 writes: n (EPT02 dropped m)": L1 changed present entries
    // (dropping EPT02) and filled in not-present ones (keeping it).
    let counts = err.lines().find_map(|l| l.split("EPT12 writes: ").nth(1)).map(|rest| {
        let n: Vec<u64> = rest.split(|c: char| !c.is_ascii_digit()).filter_map(|w| w.parse().ok()).collect();
        (n.first().copied().unwrap_or(0), n.get(1).copied().unwrap_or(0))
    });
    assert!(counts.is_some_and(|(writes, drops)| drops >= 2 && writes > drops), "EPT12 writes: {counts:?}\n{err}");
    // L2 wrote an EPT12 table on its own translation path: L0 let one
    // instruction through under its monitor trap flag (vmcs12 sets none).
    assert!(out.contains("ok L2 reads through the 2-MiB page it made present in EPT12"), "{out}");
    assert!(err.lines().any(|l| l.trim_start().starts_with("monitor_trap_flag ")), "{err}");
    // An L2 without EPT after L2s with EPT: L1's devices, no stale EPT02.
    assert!(out.contains("ok L2 without EPT reads L1's local APIC version register"), "{out}");
    // Every check ran: none was skipped or lost.
    assert!(out.contains("\nPASS 221\n"), "{out}");
}
