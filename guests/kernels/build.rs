//! Build script for the guest kernels.
//!
//! * Bare-metal target: passes the runtime's linker script to the linker.
//! * Any other target: this means cargo ran from outside `guests/` (e.g.
//!   `cargo build --manifest-path guests/Cargo.toml` from the repository
//!   root), so `guests/.cargo/config.toml` with `target =
//!   "x86_64-unknown-none"` was not read and the kernel binaries were
//!   skipped (they require the `rt/guest` feature, which only the bare-metal
//!   dependency enables). Build them with a nested cargo running in
//!   `guests/`, in a separate target directory (the outer cargo holds the
//!   lock on `guests/target`), and copy them to
//!   `guests/target/x86_64-unknown-none/<profile>/`, where a direct build
//!   puts them.

use std::env;
use std::path::PathBuf;
use std::process::Command;

const TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let guests = manifest.parent().unwrap().to_path_buf();
    let script = guests.join("rt").join("link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rerun-if-changed=build.rs");

    if env::var("TARGET").unwrap() == TARGET {
        println!("cargo:rustc-link-arg-bins=-T{}", script.display());
        println!("cargo:rustc-link-arg-bins=--no-pie");
        println!("cargo:rustc-link-arg-bins=-zmax-page-size=4096");
        return;
    }
    if env::var_os("TURTLES_GUESTS_NESTED").is_some() {
        return; // never recurse
    }

    // Host-target build: rebuild the kernels when any guest source changes.
    for dir in ["rt", "kernels/src", ".cargo"] {
        println!("cargo:rerun-if-changed={}", guests.join(dir).display());
    }
    println!("cargo:rerun-if-changed={}", guests.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", guests.join("kernels/Cargo.toml").display());

    let profile = env::var("PROFILE").unwrap(); // "debug" or "release"
    let target_dir = guests.join("target");
    let nested_dir = target_dir.join("nested");
    let cargo = env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&guests)
        .arg("build")
        .arg("--target")
        .arg(TARGET)
        .arg("--target-dir")
        .arg(&nested_dir)
        .env("TURTLES_GUESTS_NESTED", "1");
    if profile == "release" {
        cmd.arg("--release");
    }
    // Drop what the outer cargo set for this build script, so the nested
    // build reads guests/.cargo/config.toml like a direct one.
    for (k, _) in env::vars_os() {
        let k = k.to_string_lossy().into_owned();
        if k.starts_with("CARGO_") && k != "CARGO_HOME" || k == "RUSTFLAGS" || k == "RUSTC_WRAPPER" {
            cmd.env_remove(&k);
        }
    }
    let status = cmd.status().expect("running nested cargo for the guest kernels");
    assert!(status.success(), "nested guest kernel build failed");

    let from = nested_dir.join(TARGET).join(&profile);
    let to = target_dir.join(TARGET).join(&profile);
    std::fs::create_dir_all(&to).unwrap();
    for entry in std::fs::read_dir(manifest.join("src/bin")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "rs") {
            let name = path.file_stem().unwrap();
            let src = from.join(name);
            if src.exists() {
                std::fs::copy(&src, to.join(name)).unwrap();
            }
        }
    }
}
