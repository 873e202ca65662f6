//! A tiny test framework. Each check prints one line:
//!
//! ```text
//! ok <name>
//! FAIL <name>: <detail> (<file>:<line>)
//! skip <name>: <reason>
//! ```
//!
//! and [`finish`] prints `PASS <passed>` when nothing failed, or
//! `FAIL <failed>/<total>`, then exits with [`crate::EXIT_SUCCESS`] or
//! [`crate::EXIT_FAILURE`]. Harnesses key on the last line and the exit status.

use core::sync::atomic::{AtomicU32, Ordering};

static PASSED: AtomicU32 = AtomicU32::new(0);
static FAILED: AtomicU32 = AtomicU32::new(0);
static SKIPPED: AtomicU32 = AtomicU32::new(0);

/// Records a check result and prints its line. Returns `ok`.
pub fn report(ok: bool, name: core::fmt::Arguments, detail: core::fmt::Arguments, file: &str, line: u32) -> bool {
    if ok {
        PASSED.fetch_add(1, Ordering::Relaxed);
        crate::println!("ok {}", name);
    } else {
        FAILED.fetch_add(1, Ordering::Relaxed);
        crate::println!("FAIL {}: {} ({}:{})", name, detail, file, line);
    }
    ok
}

/// Records a skipped check.
pub fn skip(name: core::fmt::Arguments, reason: &str) {
    SKIPPED.fetch_add(1, Ordering::Relaxed);
    crate::println!("skip {}: {}", name, reason);
}

/// Counts a failure that has no check line of its own (panic, unexpected
/// exception), so the summary cannot read `PASS`.
pub fn record_failure() {
    FAILED.fetch_add(1, Ordering::Relaxed);
}

/// Number of failed checks so far.
pub fn failures() -> u32 {
    FAILED.load(Ordering::Relaxed)
}

/// Prints the summary line without exiting.
pub fn summary_line() {
    let p = PASSED.load(Ordering::Relaxed);
    let f = FAILED.load(Ordering::Relaxed);
    let s = SKIPPED.load(Ordering::Relaxed);
    if s != 0 {
        crate::println!("skipped {}", s);
    }
    if f == 0 && p > 0 {
        crate::println!("PASS {}", p);
    } else {
        crate::println!("FAIL {}/{}", f, p + f);
    }
}

/// Prints the summary and exits: success only if at least one check ran
/// and none failed.
pub fn finish() -> ! {
    summary_line();
    let ok = FAILED.load(Ordering::Relaxed) == 0 && PASSED.load(Ordering::Relaxed) > 0;
    crate::exit(if ok { crate::EXIT_SUCCESS } else { crate::EXIT_FAILURE })
}

/// `check!(cond, "name {}", args...)`: passes if `cond` is true.
#[macro_export]
macro_rules! check {
    ($cond:expr, $($name:tt)+) => {
        $crate::test::report($cond, format_args!($($name)+), format_args!("{}", stringify!($cond)), file!(), line!())
    };
}

/// `check_eq!(left, right, "name {}", args...)`: passes if `left == right`;
/// a failure prints both values in hex.
#[macro_export]
macro_rules! check_eq {
    ($left:expr, $right:expr, $($name:tt)+) => {{
        let (l, r) = (&$left, &$right);
        $crate::test::report(*l == *r, format_args!($($name)+),
            format_args!("{} = {:#x?}, expected {:#x?}", stringify!($left), l, r), file!(), line!())
    }};
}

/// `check_sdm!(cond, qemu_deviates, "name {}", args...)`: like `check!`, but
/// a failure on QEMU TCG where `qemu_deviates` is true (a documented QEMU
/// departure from the SDM) is reported as a skip instead.
#[macro_export]
macro_rules! check_sdm {
    ($cond:expr, $qemu_deviates:expr, $($name:tt)+) => {{
        let ok: bool = $cond;
        if !ok && $qemu_deviates && $crate::quirks::qemu_tcg() {
            $crate::test::skip(format_args!($($name)+), "QEMU TCG deviates from the SDM here");
            false
        } else {
            $crate::test::report(ok, format_args!($($name)+), format_args!("{}", stringify!($cond)), file!(), line!())
        }
    }};
}

/// `skip!(reason, "name {}", args...)`: records a skipped check.
#[macro_export]
macro_rules! skip {
    ($reason:expr, $($name:tt)+) => {
        $crate::test::skip(format_args!($($name)+), $reason)
    };
}
