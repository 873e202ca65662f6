//! What the integration tests that boot guest kernels share: where the
//! kernels are (`TURTLES_GUEST_DIR`, set by this package's build script),
//! booting one through the `turtles` binary, and the pass criteria of the
//! rt test runtime (banner, no FAIL line, `PASS n` last, status 33).

use std::path::PathBuf;
use std::process::{Command, Output};

/// The built guest kernel `name`.
pub fn kernel(name: &str) -> PathBuf {
    PathBuf::from(env!("TURTLES_GUEST_DIR")).join(name)
}

/// Boots `name` with `--stats` and `extra` arguments.
pub fn boot(name: &str, extra: &[&str]) -> Output {
    let k = kernel(name);
    assert!(k.is_file(), "guest kernel {} was not built", k.display());
    Command::new(env!("CARGO_BIN_EXE_turtles"))
        .arg("run")
        .arg(&k)
        .args(["-m", "256M", "--timeout", "120", "--stats"])
        .args(extra)
        .output()
        .expect("run turtles")
}

/// Boots `name` and asserts it passed; returns (stdout, stderr).
pub fn passes(name: &str, extra: &[&str]) -> (String, String) {
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
    (out, err)
}
