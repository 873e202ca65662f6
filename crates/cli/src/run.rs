//! `turtles run` / `turtles demo` / QEMU-style runs: option values to a
//! [`VmConfig`], the run itself, and what is printed afterwards.

use std::borrow::Cow;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

use vmm::vm::{MAX_CPUS, MAX_RAM};
use vmm::{DeviceConfig, ImageSource, ModuleSpec, SharedWriter, Vm, VmConfig};

use crate::args::{CliError, RunOptions};

/// The exit port `turtles run` adds when none is given (QEMU-style runs do
/// not: QEMU has none by default).
pub const DEFAULT_DEBUG_EXIT: (u16, u8) = (0xf4, 4);

/// Parses a RAM size as QEMU's `-m` does: a number of MiB, or a number
/// with a k/M/G/T suffix (fractions allowed, `size=` prefix accepted).
/// The result is rounded up to 4 KiB.
pub fn parse_mem(s: &str) -> Result<u64, CliError> {
    let bad = || CliError(format!("-m {s}: invalid RAM size (a number of MiB, or with a k, M, G or T suffix)"));
    let v = s.strip_prefix("size=").unwrap_or(s).split(',').next().unwrap_or("");
    let (num, shift) = match v.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_lowercase() {
                'b' => 0,
                'k' => 10,
                'm' => 20,
                'g' => 30,
                't' => 40,
                _ => return Err(bad()),
            };
            (&v[..i], shift)
        }
        _ => (v, 20),
    };
    let x: f64 = num.parse().map_err(|_| bad())?;
    if !x.is_finite() || x < 0.0 {
        return Err(bad());
    }
    let bytes = x * (1u64 << shift) as f64;
    if bytes > MAX_RAM as f64 {
        return Err(CliError(format!("-m {s}: RAM size too large (at most {} GiB)", MAX_RAM >> 30)));
    }
    let bytes = (bytes.ceil() as u64).div_ceil(4096) * 4096;
    if bytes < vmm::layout::MIN_RAM {
        return Err(CliError(format!("-m {s}: RAM size too small (at least {} MiB)", vmm::layout::MIN_RAM >> 20)));
    }
    Ok(bytes)
}

/// Parses `-smp`: `N`, or QEMU's `[cpus=]N[,sockets=S,cores=C,threads=T,maxcpus=M]`
/// (without an explicit count, sockets x cores x threads).
pub fn parse_smp(s: &str) -> Result<u32, CliError> {
    let bad = || CliError(format!("-smp {s}: invalid number of CPUs (1 to {MAX_CPUS})"));
    let mut cpus = None;
    let mut product: Option<u64> = None;
    for (i, part) in s.split(',').enumerate() {
        let (key, val) = match part.split_once('=') {
            Some((k, v)) => (k, v),
            None if i == 0 => ("cpus", part),
            None => return Err(bad()),
        };
        let n: u64 = val.trim().parse().map_err(|_| bad())?;
        match key {
            "cpus" => cpus = Some(n),
            "sockets" | "cores" | "threads" | "dies" | "clusters" => {
                product = Some(product.unwrap_or(1).saturating_mul(n.max(1)))
            }
            "maxcpus" | "books" | "drawers" => {}
            _ => return Err(CliError(format!("-smp {s}: unknown property '{key}'"))),
        }
    }
    let n = cpus.or(product).unwrap_or(1);
    match u32::try_from(n) {
        Ok(n) if (1..=MAX_CPUS).contains(&n) => Ok(n),
        _ => Err(bad()),
    }
}

/// Parses `--timeout` seconds.
pub fn parse_timeout(s: &str) -> Result<Duration, CliError> {
    s.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && *v > 0.0 && *v < 1e9)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| CliError(format!("--timeout {s}: invalid number of seconds")))
}

fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// What a `-device` option asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceRequest {
    /// A device was added to the configuration.
    Added,
    /// `-device help`.
    Help,
}

/// Applies one `-device` option.
pub fn parse_device(s: &str, devices: &mut DeviceConfig) -> Result<DeviceRequest, CliError> {
    let mut parts = s.split(',');
    let driver = parts.next().unwrap_or("");
    let props: Vec<(&str, &str)> = parts.map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
    let no_props = |props: &[(&str, &str)]| match props.first() {
        Some((k, _)) => Err(CliError(format!("-device {s}: property '{k}' not found"))),
        None => Ok(()),
    };
    match driver {
        "help" | "?" => return Ok(DeviceRequest::Help),
        "isa-debug-exit" => {
            // QEMU's defaults.
            let (mut base, mut size) = (0x501u64, 2u64);
            for (k, v) in props {
                let n = parse_u64(v).ok_or_else(|| CliError(format!("-device {s}: invalid value '{v}' for '{k}'")))?;
                match k {
                    "iobase" => base = n,
                    "iosize" => size = n,
                    _ => return Err(CliError(format!("-device {s}: property '{k}' not found"))),
                }
            }
            let base = u16::try_from(base).map_err(|_| CliError(format!("-device {s}: iobase out of range")))?;
            let size = u8::try_from(size)
                .ok()
                .filter(|&n| (1..=4).contains(&n))
                .ok_or_else(|| CliError(format!("-device {s}: iosize must be 1 to 4")))?;
            devices.debug_exit = Some((base, size));
        }
        "pc-testdev" => {
            no_props(&props)?;
            devices.pc_testdev = true;
        }
        "pci-testdev" => {
            no_props(&props)?;
            devices.pci_testdev = true;
        }
        _ => return Err(CliError(format!("-device {s}: '{driver}' is not a valid device model name"))),
    }
    Ok(DeviceRequest::Added)
}

/// The `-device help` text, in QEMU's format.
pub const DEVICE_HELP: &str = "\
Misc devices:
name \"isa-debug-exit\", bus ISA
name \"pc-testdev\", bus ISA
name \"pci-testdev\", bus PCI, desc \"PCI Test Device\"
";

/// The `-cpu help` text.
pub fn cpu_help() -> String {
    let mut s = String::from(
        "Available CPUs (presets; the default is max without VMX; or FILE.toml, a CPU policy file \
         in the format of crates/vmm/src/policy.rs):\n",
    );
    for (name, desc) in vmm::policy::PRESETS {
        s.push_str(&format!("x86 {name:<10} {desc}\n"));
    }
    s.push_str("\nRecognized CPUID flags (available on Turtles' CPU):\n ");
    for f in vmm::cpu_model::available_features() {
        s.push(' ');
        s.push_str(f);
    }
    s.push('\n');
    s
}

/// Applies one `-machine` option.
pub fn parse_machine(s: &str, devices: &mut DeviceConfig) -> Result<(), CliError> {
    for (i, part) in s.split(',').enumerate() {
        let (key, val) = match part.split_once('=') {
            Some(kv) => kv,
            None if i == 0 => ("type", part),
            None => return Err(CliError(format!("-machine {s}: invalid property '{part}'"))),
        };
        match key {
            "type" => {
                if !(val == "pc" || val.starts_with("pc-i440fx") || val == "help") {
                    return Err(CliError(format!(
                        "-machine {s}: machine type '{val}' is not available (Turtles models QEMU's pc)"
                    )));
                }
            }
            "pit" => {
                devices.pit = match val {
                    "on" | "true" | "yes" => true,
                    "off" | "false" | "no" => false,
                    _ => return Err(CliError(format!("-machine {s}: invalid value '{val}' for 'pit'"))),
                }
            }
            "accel" | "kernel-irqchip" | "usb" | "vmport" | "hpet" | "smm" | "sata" | "graphics" => {}
            _ => return Err(CliError(format!("-machine {s}: property '{key}' not found"))),
        }
    }
    Ok(())
}

/// Checks one `-global`: only properties that have no meaning here.
pub fn check_global(s: &str) -> Result<(), CliError> {
    if s.starts_with("kvm-pit.") || s.starts_with("isa-pit.") {
        Ok(())
    } else {
        Err(CliError(format!("-global {s}: unsupported global property")))
    }
}

/// Splits QEMU's `-initrd` list: entries separated by `,` (`,,` is a
/// literal comma); each entry is a file name, then optionally a space and
/// arguments. The module's command line is the whole entry.
pub fn parse_initrd(s: &str) -> Vec<ModuleSpec> {
    let mut entries = vec![String::new()];
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ',' {
            if chars.peek() == Some(&',') {
                chars.next();
                if let Some(e) = entries.last_mut() {
                    e.push(',');
                }
            } else {
                entries.push(String::new());
            }
        } else if let Some(e) = entries.last_mut() {
            e.push(c);
        }
    }
    entries
        .into_iter()
        .filter(|e| !e.is_empty())
        .map(|e| {
            let file = e.split(' ').next().unwrap_or("").to_string();
            ModuleSpec { source: ImageSource::File(PathBuf::from(file)), cmdline: e }
        })
        .collect()
}

/// Standard output, flushed by the VM every few rounds.
struct Stdout;

impl Write for Stdout {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        std::io::stdout().write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stdout().flush()
    }
}

/// A character device: stdio, none/null, or file:PATH.
pub fn open_chardev(opt: &str, s: &str) -> Result<Option<SharedWriter>, CliError> {
    match s {
        "stdio" | "mon:stdio" => Ok(Some(SharedWriter::new(Box::new(Stdout)))),
        "none" | "null" => Ok(None),
        _ => match s.strip_prefix("file:") {
            Some(path) => std::fs::File::create(path)
                .map(|f| Some(SharedWriter::new(Box::new(f))))
                .map_err(|e| CliError(format!("-{opt} {s}: could not open '{path}': {e}"))),
            None => Err(CliError(format!("-{opt} {s}: unsupported character device (stdio, none or file:PATH)"))),
        },
    }
}

/// The tracing filter directives of `--trace`.
pub fn trace_directives(list: &str) -> Result<Vec<&'static str>, CliError> {
    let mut out = Vec::new();
    for cat in list.split(',').map(str::trim).filter(|c| !c.is_empty()) {
        let d: &[&'static str] = match cat {
            "exits" | "exit" => &["turtles::exit=debug", "turtles::vmexit=trace"],
            "sched" | "quantum" => &["turtles::sched=trace"],
            "irq" | "irqs" => &["turtles::irq=trace"],
            "io" => &["turtles::io=trace"],
            "insns" | "insn" => &["turtles::insn=trace"],
            "all" => &[
                "turtles::exit=debug",
                "turtles::vmexit=trace",
                "turtles::sched=trace",
                "turtles::irq=trace",
                "turtles::io=trace",
            ],
            _ => {
                return Err(CliError(format!(
                    "--trace {list}: unknown category '{cat}' (exits, sched, irq, io, insns, all)"
                )))
            }
        };
        out.extend_from_slice(d);
    }
    Ok(out)
}

fn init_tracing(trace: Option<&str>) -> Result<(), CliError> {
    let mut directives: Vec<String> = Vec::new();
    if let Ok(env) = std::env::var("RUST_LOG") {
        directives.push(env);
    }
    if let Some(t) = trace {
        directives.extend(trace_directives(t)?.iter().map(|d| d.to_string()));
    }
    if directives.is_empty() {
        return Ok(());
    }
    let filter = tracing_subscriber::EnvFilter::try_new(directives.join(","))
        .map_err(|e| CliError(format!("invalid trace filter: {e}")))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .without_time()
        .try_init();
    Ok(())
}

/// Puts the terminal in raw mode while the guest runs, so keys reach the
/// guest's UART one by one (Ctrl-C included, as with QEMU's
/// `-nographic`), and restores it when dropped.
struct RawTerminal;

impl RawTerminal {
    fn enable() -> Option<RawTerminal> {
        if !std::io::stdin().is_terminal() {
            return None;
        }
        crossterm::terminal::enable_raw_mode().ok().map(|()| RawTerminal)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// Ctrl-A, the escape key of QEMU's serial multiplexer; Ctrl-A x quits.
const ESCAPE: u8 = 0x01;

/// Standard input as a channel of chunks; closed at end of input. On a
/// terminal, Ctrl-A x restores the terminal and ends Turtles.
fn stdin_channel() -> Option<Receiver<Vec<u8>>> {
    let (tx, rx) = mpsc::channel();
    let interactive = std::io::stdin().is_terminal();
    let spawned = std::thread::Builder::new().name("stdin".into()).spawn(move || {
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 256];
        let mut escaped = false;
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    if interactive {
                        for &b in &buf[..n] {
                            if escaped && (b == b'x' || b == b'X') {
                                let _ = crossterm::terminal::disable_raw_mode();
                                eprintln!("\r\nturtles: terminated by Ctrl-A x");
                                std::process::exit(0);
                            }
                            escaped = b == ESCAPE;
                        }
                    }
                    if tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
    });
    spawned.ok().map(|_| rx)
}

/// What the options asked for.
pub enum Prepared {
    /// A VM to run, and whether to print statistics.
    Run(Box<VmConfig>, bool),
    /// Print this text and exit 0.
    Print(String),
}

/// Builds the VM configuration from the options.
pub fn prepare(kernel: ImageSource, o: &RunOptions) -> Result<Prepared, CliError> {
    // The demo always has its exit port: it is how it reports success.
    let demo = matches!(&kernel, ImageSource::Bytes { name, .. } if name == "demo");
    let mut cfg = VmConfig::new(kernel);
    if let Some(m) = &o.memory {
        cfg.ram_size = parse_mem(m)?;
    }
    if let Some(n) = &o.smp {
        cfg.cpus = parse_smp(n)?;
    }
    if let Some(a) = &o.append {
        cfg.append = a.clone();
    }
    if let Some(i) = &o.initrd {
        cfg.modules = parse_initrd(i);
    }
    if let Some(c) = &o.cpu {
        if matches!(c.as_str(), "help" | "?") {
            return Ok(Prepared::Print(cpu_help()));
        }
        cfg.cpu_policy = vmm::CpuPolicy::from_spec(c).map_err(|e| CliError(e.to_string()))?;
    }
    let mut devices = DeviceConfig::default();
    for d in &o.devices {
        if parse_device(d, &mut devices)? == DeviceRequest::Help {
            return Ok(Prepared::Print(DEVICE_HELP.to_string()));
        }
    }
    if (!o.qemu || demo) && devices.debug_exit.is_none() {
        devices.debug_exit = Some(DEFAULT_DEBUG_EXIT);
    }
    for m in &o.machines {
        parse_machine(m, &mut devices)?;
    }
    for g in &o.globals {
        check_global(g)?;
    }
    cfg.devices = devices;
    cfg.serial_out = open_chardev("serial", o.serial.as_deref().unwrap_or("stdio"))?.unwrap_or_else(SharedWriter::sink);
    cfg.debugcon = open_chardev("debugcon", o.debugcon.as_deref().unwrap_or("none"))?;
    if let Some(t) = &o.timeout {
        cfg.timeout = Some(parse_timeout(t)?);
    }
    cfg.no_reboot = o.no_reboot;
    if o.direct {
        cfg.vcpu_mode = vmm::l0::VcpuMode::Direct;
    }
    cfg.exit_timing = o.stats;
    if let Some(t) = &o.trace {
        trace_directives(t)?;
    }
    Ok(Prepared::Run(Box::new(cfg), o.stats))
}

/// What to print after a run besides the guest's output.
#[derive(Clone, Copy)]
struct Show {
    /// `--stats`.
    stats: bool,
    /// `--explain`: failed VM entries.
    explain: bool,
    /// The VM exits of each level (the nested demo).
    levels: bool,
}

/// Runs a prepared VM and returns the process exit status, printing the
/// reports `show` asks for.
fn run_vm(mut cfg: VmConfig, show: Show, trace: Option<&str>) -> Result<i32, CliError> {
    let (stats, levels) = (show.stats, show.levels);
    init_tracing(trace)?;
    cfg.serial_in = stdin_channel();
    let mut vm = Vm::new(cfg).map_err(|e| CliError(e.to_string()))?;
    let raw = RawTerminal::enable();
    let report = vm.run().map_err(|e| CliError(e.to_string()));
    drop(raw);
    let report = report?;
    let _ = std::io::stdout().flush();
    if report.exit.is_failure() {
        eprint!("{}", report.failure_summary());
    }
    if stats {
        eprint!("{}", report.stats_summary());
    } else if levels {
        eprint!("{}", report.exits.levels_summary());
    }
    if show.explain {
        eprint!("{}", report.explain());
    }
    Ok(report.exit.exit_status())
}

/// `turtles run KERNEL` and QEMU-style runs.
pub fn run_kernel(kernel: PathBuf, o: &RunOptions) -> Result<i32, CliError> {
    match prepare(ImageSource::File(kernel), o)? {
        Prepared::Print(t) => {
            print!("{t}");
            Ok(0)
        }
        Prepared::Run(cfg, stats) => {
            run_vm(*cfg, Show { stats, explain: o.explain, levels: false }, o.trace.as_deref())
        }
    }
}

/// `turtles` and `turtles demo`: the nested demo. L0 runs the embedded
/// guest hypervisor `hyper` (L1) on a CPU policy that offers VMX; it runs
/// its own guest (L2). The exits of each level are printed at the end.
pub fn run_demo(o: &RunOptions) -> Result<i32, CliError> {
    let data = crate::embedded::find("hyper").ok_or_else(|| CliError("this build has no demo kernel".into()))?;
    let src = ImageSource::Bytes { name: "demo".into(), data: Cow::Borrowed(data) };
    match prepare(src, o)? {
        Prepared::Print(t) => {
            print!("{t}");
            Ok(0)
        }
        Prepared::Run(mut cfg, stats) => {
            if o.cpu.is_none() {
                cfg.cpu_policy = vmm::CpuPolicy::max();
            }
            run_vm(*cfg, Show { stats, explain: o.explain, levels: true }, o.trace.as_deref())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_mem("256").unwrap(), 256 << 20);
        assert_eq!(parse_mem("256M").unwrap(), 256 << 20);
        assert_eq!(parse_mem("1G").unwrap(), 1 << 30);
        assert_eq!(parse_mem("1.5g").unwrap(), 3 << 29);
        assert_eq!(parse_mem("size=64M").unwrap(), 64 << 20);
        assert_eq!(parse_mem("4097k").unwrap(), 4100 << 10, "rounded up to 4 KiB");
        for bad in ["", "x", "12q", "-5", "1M2", "nan", "inf"] {
            let e = parse_mem(bad).unwrap_err().0;
            assert!(e.contains("invalid RAM size"), "{bad}: {e}");
        }
        assert!(parse_mem("1").unwrap_err().0.contains("too small"));
        assert!(parse_mem("2T").unwrap_err().0.contains("too large"));
    }

    #[test]
    fn smp_forms() {
        assert_eq!(parse_smp("4").unwrap(), 4);
        assert_eq!(parse_smp("cpus=2,sockets=1").unwrap(), 2);
        assert_eq!(parse_smp("sockets=2,cores=2").unwrap(), 4);
        assert_eq!(parse_smp("2,maxcpus=8").unwrap(), 2);
        for bad in ["0", "256", "x", "", "-1", "2,bogus=1", "2,3", "sockets=4294967296,cores=4294967296"] {
            assert!(parse_smp(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_smp("0").unwrap_err().0, "-smp 0: invalid number of CPUs (1 to 255)");
    }

    #[test]
    fn devices_and_machine() {
        let mut d = DeviceConfig::default();
        assert_eq!(parse_device("isa-debug-exit,iobase=0xf4,iosize=0x4", &mut d), Ok(DeviceRequest::Added));
        assert_eq!(d.debug_exit, Some((0xf4, 4)));
        parse_device("isa-debug-exit", &mut d).unwrap();
        assert_eq!(d.debug_exit, Some((0x501, 2)), "QEMU's defaults");
        parse_device("pc-testdev", &mut d).unwrap();
        parse_device("pci-testdev", &mut d).unwrap();
        assert!(d.pc_testdev && d.pci_testdev);
        assert_eq!(parse_device("help", &mut d), Ok(DeviceRequest::Help));
        assert_eq!(
            parse_device("e1000", &mut d).unwrap_err().0,
            "-device e1000: 'e1000' is not a valid device model name"
        );
        assert!(parse_device("pc-testdev,x=1", &mut d).unwrap_err().0.contains("property 'x' not found"));
        assert!(parse_device("isa-debug-exit,iosize=9", &mut d).is_err());
        parse_machine("accel=kvm:tcg", &mut d).unwrap();
        parse_machine("pc,pit=off", &mut d).unwrap();
        assert!(!d.pit);
        assert!(parse_machine("q35", &mut d).is_err());
        assert!(parse_machine("pit=maybe", &mut d).is_err());
        check_global("kvm-pit.lost_tick_policy=discard").unwrap();
        assert!(check_global("e1000.mac=x").is_err());
    }

    #[test]
    fn initrd_lists() {
        let m = parse_initrd("/a.img arg=1,/b,,c.img,/d");
        let names: Vec<_> = m.iter().map(|m| (m.source.clone(), m.cmdline.as_str())).collect();
        assert_eq!(
            names,
            vec![
                (ImageSource::File("/a.img".into()), "/a.img arg=1"),
                (ImageSource::File("/b,c.img".into()), "/b,c.img"),
                (ImageSource::File("/d".into()), "/d"),
            ]
        );
    }

    #[test]
    fn trace_categories() {
        assert_eq!(
            trace_directives("exits,irq").unwrap(),
            vec!["turtles::exit=debug", "turtles::vmexit=trace", "turtles::irq=trace"]
        );
        assert!(trace_directives("bogus").unwrap_err().0.contains("unknown category 'bogus'"));
    }

    #[test]
    fn cpu_errors_are_one_line() {
        let o = RunOptions { cpu: Some("max,+avx512f".into()), ..Default::default() };
        let e = prepare(ImageSource::File("k".into()), &o).err().unwrap().0;
        assert_eq!(e, "CPU feature 'avx512f' is not available on Turtles' CPU");
    }

    #[test]
    fn run_defaults_add_the_exit_port_qemu_style_does_not() {
        let o = RunOptions::default();
        let Ok(Prepared::Run(cfg, _)) = prepare(ImageSource::File("k".into()), &o) else { panic!() };
        assert_eq!(cfg.devices.debug_exit, Some(DEFAULT_DEBUG_EXIT));
        let o = RunOptions { qemu: true, serial: Some("none".into()), ..Default::default() };
        let Ok(Prepared::Run(cfg, _)) = prepare(ImageSource::File("k".into()), &o) else { panic!() };
        assert_eq!(cfg.devices.debug_exit, None);
    }
}
