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

/// Decompresses an LZ4 block (the LZ4 block format: sequences of
/// literal length / match length token, literals, 16-bit offset) onto
/// the end of `out`.
fn lz4_block(mut src: &[u8], out: &mut Vec<u8>) -> Option<()> {
    fn len(src: &mut &[u8], mut n: usize) -> Option<usize> {
        if n == 15 {
            loop {
                let b = *src.first()?;
                *src = &src[1..];
                n += usize::from(b);
                if b != 255 {
                    break;
                }
            }
        }
        Some(n)
    }
    while let Some(&token) = src.first() {
        src = &src[1..];
        let lit = len(&mut src, usize::from(token >> 4))?;
        out.extend_from_slice(src.get(..lit)?);
        src = &src[lit..];
        if src.is_empty() {
            break; // the last sequence has literals only
        }
        let off = usize::from(u16::from_le_bytes([*src.first()?, *src.get(1)?]));
        src = &src[2..];
        let mlen = len(&mut src, usize::from(token & 15))? + 4;
        let start = out.len().checked_sub(off).filter(|_| off != 0)?;
        for i in 0..mlen {
            let b = out[start + i];
            out.push(b);
        }
    }
    Some(())
}

/// The uncompressed vmlinux inside Debian's bzImage: its payload is in
/// LZ4's legacy frame format (magic 0x184c2102, then blocks of a u32
/// compressed size and the block).
fn extract_vmlinux(bzimage: &[u8]) -> Vec<u8> {
    let magic = 0x184c_2102u32.to_le_bytes();
    let start = bzimage.windows(4).position(|w| w == magic).expect("LZ4 legacy frame in the bzImage");
    let mut p = start + 4;
    let mut out = Vec::new();
    while p + 4 <= bzimage.len() {
        let n = u32::from_le_bytes(bzimage[p..p + 4].try_into().unwrap()) as usize;
        p += 4;
        if n == 0 || n == 0x184c_2102 || p + n > bzimage.len() {
            break;
        }
        if lz4_block(&bzimage[p..p + n], &mut out).is_none() {
            break; // trailing data after the frame
        }
        p += n;
    }
    assert!(out.starts_with(b"\x7fELF"), "the payload is not an ELF vmlinux");
    out
}

#[test]
fn the_same_kernel_boots_as_a_vmlinux_through_the_pvh_entry() {
    let (kernel, initrd) = guest();
    let vmlinux = kernel.with_file_name("vmlinux-pvh");
    if !vmlinux.is_file() {
        let elf = extract_vmlinux(&std::fs::read(&kernel).expect("read the bzImage"));
        let tmp = vmlinux.with_extension("tmp");
        std::fs::write(&tmp, elf).expect("write vmlinux");
        std::fs::rename(&tmp, &vmlinux).expect("rename vmlinux");
    }
    let o = Command::new(env!("CARGO_BIN_EXE_turtles"))
        .args(["run", "-m", "512M", "--timeout", "600", "-no-reboot", "--stats", "--append", "console=ttyS0"])
        .arg("--initrd")
        .arg(&initrd)
        .arg(&vmlinux)
        .output()
        .expect("run turtles");
    let out = String::from_utf8_lossy(&o.stdout);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("PVH"), "not loaded through the PVH entry:\n{err}");
    assert!(out.contains("TURTLES-INIT: done"), "/init did not finish:\n{out}\n{err}");
    assert!(out.contains("reboot: Power down"), "no clean power-off:\n{out}\n{err}");
    assert_eq!(o.status.code(), Some(0), "exit status\n{err}");
}
