//! Boots Debian's stock cloud kernel (fetched by `scripts/linux-guest.sh`
//! with `apt-get download`, cached under `target/linux`) with a busybox
//! initramfs, on the default command line `console=ttyS0`, and checks
//! that `/init` ran, that the kernel printed no warning, oops or BUG and
//! no error line in dmesg, and that the run ended with an ACPI power-off.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Runs the fetch script once per test process (the tests run in
/// parallel and share its output directory); returns (kernel, initrd).
fn guest() -> (PathBuf, PathBuf) {
    static GUEST: std::sync::OnceLock<(PathBuf, PathBuf)> = std::sync::OnceLock::new();
    GUEST.get_or_init(fetch).clone()
}

fn fetch() -> (PathBuf, PathBuf) {
    let root = workspace();
    let out = root.join("target/linux");
    let o = Command::new("bash")
        .arg(root.join("scripts/linux-guest.sh"))
        .arg(&out)
        .output()
        .expect("run scripts/linux-guest.sh");
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "linux-guest.sh failed:\n{text}\n{}", String::from_utf8_lossy(&o.stderr));
    let get = |key: &str| -> PathBuf {
        let line = text.lines().find_map(|l| l.strip_prefix(key)).unwrap_or_else(|| panic!("no {key} in:\n{text}"));
        PathBuf::from(line.trim())
    };
    (get("KERNEL="), get("INITRD="))
}

#[test]
fn debian_kernel_boots_to_init_and_powers_off() {
    let (kernel, initrd) = guest();
    let o = Command::new(env!("CARGO_BIN_EXE_turtles"))
        .args(["run", "-m", "512M", "--timeout", "600", "-no-reboot", "--append", "console=ttyS0", "--initrd"])
        .arg(&initrd)
        .arg(&kernel)
        .output()
        .expect("run turtles");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("TURTLES-INIT: kernel 6."), "/init did not run:\n{out}\n{err}");
    assert!(out.contains("TURTLES-INIT: done"), "/init did not finish:\n{out}\n{err}");
    for bad in ["WARNING:", "Oops", "BUG:", "Kernel panic", "TURTLES-DMESG:", "invalid opcode"] {
        assert!(!out.contains(bad), "kernel output contains {bad:?}:\n{out}");
    }
    assert!(out.contains("reboot: Power down"), "no clean power-off:\n{out}\n{err}");
    assert_eq!(o.status.code(), Some(0), "exit status\n{err}");
}

#[test]
fn a_kernel_panic_ends_the_run_with_its_text_and_a_failure_status() {
    // No init to run: the kernel panics when it cannot mount a root.
    let (kernel, initrd) = guest();
    let o = Command::new(env!("CARGO_BIN_EXE_turtles"))
        .args(["run", "-m", "512M", "--timeout", "600", "--append", "console=ttyS0 rdinit=/nonexistent", "--initrd"])
        .arg(&initrd)
        .arg(&kernel)
        .output()
        .expect("run turtles");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(out.contains("Kernel panic - not syncing"), "no panic text:\n{out}\n{err}");
    assert!(err.contains("panicked"), "no report:\n{err}");
    assert_eq!(o.status.code(), Some(3), "exit status\n{err}");
}
