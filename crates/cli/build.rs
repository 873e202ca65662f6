//! Builds the guest kernels in `guests/` (a separate workspace for
//! `x86_64-unknown-none`) and generates `$OUT_DIR/kernels.rs`, which embeds
//! the demo kernel and the benchmark kernels in the `turtles` binary.
//!
//! The inner build runs `cargo build --release` in `guests/` (so that
//! `guests/.cargo/config.toml` applies: target and rustflags) with its own
//! target directory under `$OUT_DIR`, and without the environment the
//! outer build gives build scripts (`RUSTFLAGS`, `CARGO_TARGET_DIR`,
//! `CARGO_BUILD_TARGET`, ...), which would break it. A failing guest build
//! fails this build with a message saying so.

use std::env;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{exit, Command};

const TARGET: &str = "x86_64-unknown-none";

/// Embedded kernels: the demo kernels (`hyper` is the nested demo's guest
/// hypervisor), and every binary whose name starts with `bench`.
fn wanted(name: &str) -> bool {
    name == "demo" || name == "hyper" || name.starts_with("bench")
}

fn fail(msg: &str) -> ! {
    eprintln!("error: turtles-cli build script: {msg}");
    exit(1);
}

fn main() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let guests = manifest.join("../../guests");
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap_or_else(|| fail("OUT_DIR is not set")));
    println!("cargo:rerun-if-changed=build.rs");
    for p in ["Cargo.toml", "Cargo.lock", ".cargo/config.toml", "rt", "kernels"] {
        println!("cargo:rerun-if-changed={}", guests.join(p).display());
    }
    println!("cargo:rerun-if-env-changed=TURTLES_GUESTS_PREBUILT");

    // Escape hatch for packagers and for machines without the bare-metal
    // target: a directory holding already built kernels.
    let bin_dir = match env::var_os("TURTLES_GUESTS_PREBUILT") {
        Some(dir) => PathBuf::from(dir),
        None => build_guests(&guests, &out),
    };

    // Integration tests boot every guest kernel from here.
    println!("cargo:rustc-env=TURTLES_GUEST_DIR={}", bin_dir.display());
    let bins = guest_binaries(&guests.join("kernels/src/bin"));
    let mut src = String::from(
        "/// Kernels built from `guests/` and embedded in the binary: (name, ELF bytes).\n\
         pub static KERNELS: &[(&str, &[u8])] = &[\n",
    );
    for name in bins.iter().filter(|n| wanted(n)) {
        let path = bin_dir.join(name);
        if !path.is_file() {
            fail(&format!("guest kernel '{name}' was not built: {} is missing", path.display()));
        }
        let _ = writeln!(src, "    ({name:?}, include_bytes!({:?})),", path.display().to_string());
    }
    src.push_str("];\n");
    if !bins.iter().any(|n| n == "demo") {
        fail("guests/kernels/src/bin/demo.rs is missing: the demo kernel is what `turtles` runs without arguments");
    }
    if let Err(e) = std::fs::write(out.join("kernels.rs"), src) {
        fail(&format!("cannot write kernels.rs: {e}"));
    }
}

/// Names of the guest kernel binaries (one per `src/bin/*.rs`).
fn guest_binaries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| fail(&format!("cannot list {}: {e}", dir.display())))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "rs"))
        .filter_map(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .collect();
    names.sort();
    names
}

/// Runs the inner cargo build and returns the directory of the kernels.
fn build_guests(guests: &Path, out: &Path) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let target_dir = out.join("guests");
    let mut cmd = Command::new(cargo);
    cmd.current_dir(guests)
        .args(["build", "--release", "--manifest-path"])
        .arg(guests.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir);
    // Drop what the outer cargo set for this script, keeping CARGO_HOME
    // and the jobserver (so both builds share the machine's cores).
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy();
        let drop = (k.contains("CARGO") && k != "CARGO_HOME" && k != "CARGO_MAKEFLAGS")
            || k.starts_with("RUSTC_")
            || matches!(
                &*k,
                "RUSTFLAGS"
                    | "RUSTDOCFLAGS"
                    | "TARGET"
                    | "HOST"
                    | "OUT_DIR"
                    | "PROFILE"
                    | "OPT_LEVEL"
                    | "DEBUG"
                    | "NUM_JOBS"
            );
        if drop {
            cmd.env_remove(&*k);
        }
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => fail(&format!(
            "building the guest kernels failed ({s}): `cargo build --release` in {} (see its errors above)",
            guests.display()
        )),
        Err(e) => fail(&format!("cannot run cargo for the guest kernels: {e}")),
    }
    target_dir.join(TARGET).join("release")
}
