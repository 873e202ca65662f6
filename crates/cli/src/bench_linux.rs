//! `turtles bench linux`: boots Debian's stock kernel with its initramfs
//! (from `scripts/linux-guest.sh`, or `--kernel`/`--initrd`) twice, with
//! the default command line and with a lean one that skips self-tests,
//! watchdogs and most console output, and reports wall seconds and guest
//! instructions from power-on to `/init` and to power-off. When
//! `qemu-system-x86_64` is installed, QEMU TCG boots the same files with
//! the same command lines and its wall times go in the same table.
//!
//! "Reaching /init" is the first serial line holding `Run /init as init
//! process` (the kernel's, hidden by `quiet`) or `TURTLES-INIT` (the
//! initramfs's first line). Turtles' instruction count at that line comes
//! from [`vmm::Vm::retired_counter`], which lags by at most one quantum;
//! QEMU's lines are timestamped as they arrive on its stdout.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use vmm::{ExitKind, ImageSource, ModuleSpec, SharedWriter, Vm, VmConfig};

use crate::args::{BenchArgs, CliError};
use crate::run::{parse_mem, parse_timeout};

/// The command line Linux is usually booted with here.
pub const DEFAULT_APPEND: &str = "console=ttyS0";
/// A command line that skips work a benchmark boot does not need: console
/// chatter (`quiet`), the crypto self-tests, the TSC and timer
/// verification, the watchdogs, audit, the PS/2 aux port probe, entropy
/// waits and the speculation mitigations' patching. All valid in 6.1.
pub const LEAN_APPEND: &str = "console=ttyS0 quiet cryptomgr.notests=1 tsc=reliable no_timer_check \
                               nowatchdog nmi_watchdog=0 audit=0 i8042.noaux=1 random.trust_cpu=on mitigations=off";
/// Serial lines that mean user space is starting.
const INIT_MARKERS: [&str; 2] = ["Run /init as init process", "TURTLES-INIT"];
/// The QEMU binary looked for.
const QEMU: &str = "qemu-system-x86_64";
/// Longest line kept while looking for a marker.
const MAX_LINE: usize = 4096;

/// Whether a serial line marks the start of `/init`.
pub fn is_init_line(line: &[u8]) -> bool {
    let line = String::from_utf8_lossy(line);
    INIT_MARKERS.iter().any(|m| line.contains(m))
}

/// When the init marker was seen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Mark {
    /// Wall time since power-on.
    pub wall: Duration,
    /// Guest instructions retired by then, when known.
    pub insns: Option<u64>,
}

/// A serial sink that keeps the output and timestamps the first init
/// line.
struct InitWatch {
    start: Instant,
    line: Vec<u8>,
    counter: Arc<OnceLock<Arc<AtomicU64>>>,
    mark: Arc<Mutex<Option<Mark>>>,
    output: Arc<Mutex<Vec<u8>>>,
}

impl Write for InitWatch {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut o) = self.output.lock() {
            o.extend_from_slice(b);
        }
        for &c in b {
            if c != b'\n' {
                if self.line.len() < MAX_LINE {
                    self.line.push(c);
                }
                continue;
            }
            if is_init_line(&self.line) {
                let mut mark = self.mark.lock().map_err(|_| std::io::Error::other("poisoned mark"))?;
                if mark.is_none() {
                    let insns = self.counter.get().map(|c| c.load(Ordering::Relaxed));
                    *mark = Some(Mark { wall: self.start.elapsed(), insns });
                }
            }
            self.line.clear();
        }
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One boot's results.
struct Boot {
    init: Option<Mark>,
    exit_wall: Duration,
    exit_insns: Option<u64>,
    exit: String,
    ok: bool,
    output: Vec<u8>,
}

fn files(args: &BenchArgs) -> Result<(PathBuf, Option<PathBuf>), CliError> {
    if let Some(k) = &args.kernel {
        return Ok((k.clone(), args.initrd.clone()));
    }
    let script = [
        PathBuf::from("scripts/linux-guest.sh"),
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/linux-guest.sh"),
    ]
    .into_iter()
    .find(|p| p.is_file())
    .ok_or_else(|| CliError("scripts/linux-guest.sh not found: give --kernel and --initrd".into()))?;
    eprintln!("turtles: bench linux: running {}", script.display());
    let out = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| CliError(format!("cannot run {}: {e}", script.display())))?;
    if !out.status.success() {
        return Err(CliError(format!("{} failed ({})", script.display(), out.status)));
    }
    let (k, i) = parse_guest_script(&String::from_utf8_lossy(&out.stdout));
    let k = k.ok_or_else(|| CliError(format!("{} printed no KERNEL= line", script.display())))?;
    Ok((k, args.initrd.clone().or(i)))
}

/// The `KERNEL=` and `INITRD=` lines of `linux-guest.sh`'s output.
pub fn parse_guest_script(out: &str) -> (Option<PathBuf>, Option<PathBuf>) {
    let find = |key: &str| out.lines().find_map(|l| l.strip_prefix(key)).map(|v| PathBuf::from(v.trim()));
    (find("KERNEL="), find("INITRD="))
}

fn run_turtles(args: &BenchArgs, kernel: &Path, initrd: Option<&Path>, append: &str) -> Result<Boot, CliError> {
    let mut cfg = VmConfig::new(ImageSource::File(kernel.to_path_buf()));
    cfg.ram_size = parse_mem(args.memory.as_deref().unwrap_or("512M"))?;
    cfg.append = append.to_string();
    cfg.modules = initrd
        .map(|i| ModuleSpec { source: ImageSource::File(i.to_path_buf()), cmdline: i.display().to_string() })
        .into_iter()
        .collect();
    cfg.no_reboot = true;
    cfg.timeout = Some(parse_timeout(&args.timeout)?);
    if args.direct {
        cfg.vcpu_mode = vmm::l0::VcpuMode::Direct;
    }
    let counter = Arc::new(OnceLock::new());
    let mark = Arc::new(Mutex::new(None));
    let output = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();
    let watch =
        InitWatch { start, line: Vec::new(), counter: counter.clone(), mark: mark.clone(), output: output.clone() };
    cfg.serial_out = SharedWriter::new(Box::new(watch));
    let mut vm = Vm::new(cfg).map_err(|e| CliError(e.to_string()))?;
    let _ = counter.set(vm.retired_counter());
    let report = vm.run().map_err(|e| CliError(e.to_string()))?;
    let exit_wall = start.elapsed();
    let init = mark.lock().ok().and_then(|m| *m);
    let ok = init.is_some() && report.exit == ExitKind::PowerOff;
    Ok(Boot {
        init,
        exit_wall,
        exit_insns: Some(report.total_insns()),
        exit: report.exit.to_string(),
        ok,
        output: output.lock().map(|o| o.clone()).unwrap_or_default(),
    })
}

/// QEMU's arguments for the same boot.
pub fn qemu_args(kernel: &Path, initrd: Option<&Path>, append: &str, mem_mib: u64) -> Vec<String> {
    let mut a: Vec<String> = ["-accel", "tcg", "-cpu", "max", "-m"].iter().map(|s| s.to_string()).collect();
    a.push(mem_mib.to_string());
    a.extend(["-nographic", "-no-reboot", "-kernel"].iter().map(|s| s.to_string()));
    a.push(kernel.display().to_string());
    if let Some(i) = initrd {
        a.push("-initrd".into());
        a.push(i.display().to_string());
    }
    a.push("-append".into());
    a.push(append.into());
    a
}

/// `Ok(None)`: QEMU is not installed.
fn run_qemu(args: &BenchArgs, kernel: &Path, initrd: Option<&Path>, append: &str) -> Result<Option<Boot>, CliError> {
    let mem = parse_mem(args.memory.as_deref().unwrap_or("512M"))? >> 20;
    let timeout = parse_timeout(&args.timeout)?;
    let start = Instant::now();
    let child = Command::new(QEMU)
        .args(qemu_args(kernel, initrd, append, mem))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError(format!("cannot start {QEMU}: {e}"))),
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let reader = std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut all = Vec::new();
        let mut line = Vec::new();
        let mut init = None;
        while r.read_until(b'\n', &mut line).is_ok_and(|n| n > 0) {
            if init.is_none() && is_init_line(&line) {
                init = Some(Mark { wall: start.elapsed(), insns: None });
            }
            all.append(&mut line);
        }
        (init, all)
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = stderr.read_to_end(&mut s);
        s
    });
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(CliError(format!("waiting for {QEMU}: {e}"))),
        }
    };
    let exit_wall = start.elapsed();
    let (init, mut output) = reader.join().unwrap_or_default();
    output.extend(err_reader.join().unwrap_or_default());
    let exit = match status {
        Some(s) => format!("exit {}", s.code().map_or("signal".into(), |c| c.to_string())),
        None => format!("timeout after {}s", timeout.as_secs()),
    };
    let ok = init.is_some() && status.is_some_and(|s| s.success());
    Ok(Some(Boot { init, exit_wall, exit_insns: None, exit, ok, output }))
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("-".into(), |d| format!("{:.3}", d.as_secs_f64()))
}

fn count(n: Option<u64>) -> String {
    n.map_or("-".into(), |n| n.to_string())
}

fn row(config: &str, vmm: &str, b: &Boot) {
    println!(
        "{config:<8} {vmm:<9} {:>10} {:>14} {:>10} {:>14}  {}",
        secs(b.init.map(|m| m.wall)),
        count(b.init.and_then(|m| m.insns)),
        secs(Some(b.exit_wall)),
        count(b.exit_insns),
        b.exit
    );
}

fn tail(output: &[u8]) -> String {
    let s = String::from_utf8_lossy(output);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Runs the Linux boot benchmark and prints its table; exit status 0 when
/// every Turtles boot reached /init and powered off (QEMU's failures are
/// reported but do not count).
pub fn bench_linux(args: &BenchArgs) -> Result<i32, CliError> {
    let (kernel, initrd) = files(args)?;
    let initrd = initrd.as_deref();
    println!("kernel:  {}", kernel.display());
    println!("initrd:  {}", initrd.map_or("(none)".into(), |i| i.display().to_string()));
    println!("default: {DEFAULT_APPEND}");
    println!("lean:    {LEAN_APPEND}");
    println!();
    println!(
        "{:<8} {:<9} {:>10} {:>14} {:>10} {:>14}  exit",
        "cmdline", "vmm", "/init s", "/init insns", "exit s", "total insns"
    );
    let mut status = 0;
    let mut notes = Vec::new();
    for (config, append) in [("default", DEFAULT_APPEND), ("lean", LEAN_APPEND)] {
        let b = run_turtles(args, &kernel, initrd, append)?;
        row(config, "turtles", &b);
        if !b.ok {
            eprintln!("turtles: bench linux: the {config} boot failed ({}); last output:\n{}", b.exit, tail(&b.output));
            status = 1;
        }
        if args.no_qemu {
            continue;
        }
        match run_qemu(args, &kernel, initrd, append)? {
            Some(q) => {
                row(config, "qemu-tcg", &q);
                if !q.ok {
                    notes.push(format!("QEMU's {config} boot did not reach /init and exit cleanly ({})", q.exit));
                    eprintln!("turtles: bench linux: QEMU {config} boot, last output:\n{}", tail(&q.output));
                }
            }
            None => {
                println!(
                    "{config:<8} {:<9} {:>10} {:>14} {:>10} {:>14}  {QEMU} not installed",
                    "qemu-tcg", "-", "-", "-", "-"
                );
            }
        }
    }
    for n in notes {
        println!("note: {n}");
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_lines() {
        assert!(is_init_line(b"[    1.491331] Run /init as init process\r"));
        assert!(is_init_line(b"TURTLES-INIT: kernel 6.1.0"));
        assert!(!is_init_line(b"[    1.48] Freeing unused kernel image"));
    }

    #[test]
    fn watch_marks_the_first_init_line_across_writes() {
        let counter = Arc::new(OnceLock::new());
        let mark = Arc::new(Mutex::new(None));
        let output = Arc::new(Mutex::new(Vec::new()));
        let mut w = InitWatch {
            start: Instant::now(),
            line: Vec::new(),
            counter: counter.clone(),
            mark: mark.clone(),
            output: output.clone(),
        };
        w.write_all(b"boot\r\nRun /in").unwrap();
        assert_eq!(*mark.lock().unwrap(), None);
        counter.set(Arc::new(AtomicU64::new(1234))).unwrap();
        w.write_all(b"it as init process\r\nTURTLES-INIT\n").unwrap();
        counter.get().unwrap().store(9999, Ordering::Relaxed);
        w.write_all(b"TURTLES-INIT: done\n").unwrap();
        assert_eq!(mark.lock().unwrap().unwrap().insns, Some(1234));
        assert!(output.lock().unwrap().ends_with(b"init process\r\nTURTLES-INIT\nTURTLES-INIT: done\n"));
    }

    #[test]
    fn guest_script_output() {
        let (k, i) = parse_guest_script("noise\nKERNEL=/t/vmlinuz\nINITRD=/t/initrd.img\n");
        assert_eq!((k, i), (Some("/t/vmlinuz".into()), Some("/t/initrd.img".into())));
        assert_eq!(parse_guest_script(""), (None, None));
    }

    #[test]
    fn qemu_command_line() {
        let a = qemu_args(Path::new("/k"), Some(Path::new("/i")), "console=ttyS0 quiet", 512);
        assert_eq!(
            a.join(" "),
            "-accel tcg -cpu max -m 512 -nographic -no-reboot -kernel /k -initrd /i -append console=ttyS0 quiet"
        );
        assert!(!qemu_args(Path::new("/k"), None, "", 64).contains(&"-initrd".to_string()));
    }
}
