//! Command-line parsing: clap for `turtles run|bench|demo`, and a small
//! pre-parser for `qemu-system-x86_64`-style invocations.
//!
//! QEMU spells long options with one dash (`-kernel`, `-smp`), which clap
//! reads as bundles of short flags. The pre-parser walks the arguments with
//! a table of the options Turtles understands and rewrites them into the
//! canonical `turtles run KERNEL --option value` form, so both spellings
//! end in the same [`RunOptions`]. It is used:
//!
//! * when the first argument is an option (`turtles -kernel k.elf -smp 2`):
//!   QEMU mode, where every option must be in the table;
//! * after `run` and `demo`, so `turtles run k.elf -smp 2 -append x` works
//!   too.
//!
//! Errors are one line: `unknown option '-foo'`, `option '-smp' requires
//! an argument`.

use clap::{Args, Parser, Subcommand};

/// Options accepted in QEMU's spelling, with or without a second dash.
pub const QEMU_HELP: &str = "\
QEMU-compatible invocation (a drop-in for qemu-system-x86_64 -kernel):
  turtles -kernel FILE [-append STR] [-initrd FILE[ ARGS][,FILE2 ...]] [-smp N]
          [-m SIZE[k|M|G|T]] [-cpu PRESET|FILE.toml[,+feat,-feat,feat=on|off]]
          [-device isa-debug-exit[,iobase=0xf4,iosize=0x4]] [-device pc-testdev]
          [-device pci-testdev] [-device help] [-machine pit=off|accel=..]
          [-serial stdio|none|file:PATH] [-debugcon stdio|none|file:PATH]
          [-no-reboot] [-global kvm-pit.lost_tick_policy=discard]
  Accepted with no effect: -nodefaults, -no-user-config, -enable-kvm,
  -nographic, -display none, -vnc none, -monitor none, -accel ACCEL,
  -machine accel=..., -name NAME.
  The Turtles options --stats, --timeout SECS and --trace LIST work there too.
  Without -device isa-debug-exit there is no exit port, as in QEMU; `turtles
  run` and the demo add one at 0xf4. Without -kernel, the demo kernel runs.

Exit status: isa-debug-exit's (value << 1) | 1; 0 on ACPI power-off or reset
with -no-reboot; 124 on --timeout; 2 on a triple fault or a guest halted
forever (a short report goes to stderr); 1 for bad options or kernels.";

/// The `turtles` command line.
#[derive(Debug, Parser)]
#[command(
    name = "turtles",
    version,
    about = "Turtles: runs x86-64 kernels on a deterministic software CPU and PC.\n\
             Without arguments, runs the built-in demo kernel.",
    after_help = QEMU_HELP
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a kernel (multiboot v1 ELF32/ELF64/a.out kludge, Linux
    /// bzImage, PVH ELF64 such as a Linux vmlinux, or plain ELF64).
    Run(RunArgs),
    /// Run the built-in demo kernel.
    Demo(DemoArgs),
    /// Run the benchmark workloads and print MIPS and ns per operation;
    /// `bench linux` times a Linux boot (and QEMU TCG's, when installed).
    Bench(BenchArgs),
}

/// `turtles run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The kernel file.
    pub kernel: std::path::PathBuf,
    /// Options.
    #[command(flatten)]
    pub opts: RunOptions,
}

/// `turtles demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Options.
    #[command(flatten)]
    pub opts: RunOptions,
}

/// `turtles bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Workloads to run (default: all of alu, mem, mem4k, cpuid, pio), or
    /// `linux` alone: boot Debian's kernel to /init and power-off.
    pub workloads: Vec<String>,
    /// `bench linux`: the kernel (default: fetched by
    /// scripts/linux-guest.sh).
    #[arg(long, value_name = "FILE")]
    pub kernel: Option<std::path::PathBuf>,
    /// `bench linux`: the initramfs (default: built by
    /// scripts/linux-guest.sh).
    #[arg(long, value_name = "FILE")]
    pub initrd: Option<std::path::PathBuf>,
    /// `bench linux`: do not run QEMU even when it is installed.
    #[arg(long)]
    pub no_qemu: bool,
    /// Run the prebuilt reference ELFs `<DIR>/<workload>.elf` (e.g.
    /// ../shared/bench/guests/build) instead of the built-in kernels.
    #[arg(long, value_name = "DIR")]
    pub elf_dir: Option<std::path::PathBuf>,
    /// Guest RAM (default: 256M, 512M for `linux`).
    #[arg(short = 'm', long = "memory", value_name = "SIZE")]
    pub memory: Option<String>,
    /// Per-workload wall-clock limit in seconds.
    #[arg(long, value_name = "SECS", default_value = "600")]
    pub timeout: String,
    /// Run the workloads directly on the CPU rather than as VMs under L0
    /// (the comparison for the cost of VMX: the ALU loop should not care).
    #[arg(long)]
    pub direct: bool,
}

/// Options of `run` and `demo` (and of QEMU-style invocations).
#[derive(Debug, Default, Args)]
pub struct RunOptions {
    /// Guest RAM: a number of MiB, or with a k/M/G/T suffix.
    #[arg(short = 'm', long = "memory", value_name = "SIZE")]
    pub memory: Option<String>,
    /// Number of CPUs (`N` or QEMU's `cpus=N,sockets=..,cores=..`).
    #[arg(long, value_name = "N")]
    pub smp: Option<String>,
    /// Kernel command line (after the kernel name, as QEMU passes it).
    #[arg(long, value_name = "STR")]
    pub append: Option<String>,
    /// Modules: `FILE[ ARGS][,FILE2[ ARGS]...]` (`,,` for a literal comma).
    #[arg(long, value_name = "FILES")]
    pub initrd: Option<String>,
    /// CPU policy: a preset (max, host, qemu64, minimal, server,
    /// nested-min) or a TOML policy file, then +feat/-feat; `help` lists
    /// them.
    #[arg(long, value_name = "PRESET|FILE[,+FEAT,-FEAT]")]
    pub cpu: Option<String>,
    /// A device: isa-debug-exit[,iobase=A,iosize=N], pc-testdev,
    /// pci-testdev, or `help`.
    #[arg(long = "device", value_name = "DEV[,PROP=VAL]")]
    pub devices: Vec<String>,
    /// Machine properties: pit=on|off (accel=... is accepted).
    #[arg(long = "machine", value_name = "PROPS")]
    pub machines: Vec<String>,
    /// QEMU global properties (kvm-pit.* accepted with no effect).
    #[arg(long = "global", value_name = "DRIVER.PROP=VAL")]
    pub globals: Vec<String>,
    /// Where COM1 goes: stdio (default), none, or file:PATH.
    #[arg(long, value_name = "DEV")]
    pub serial: Option<String>,
    /// Where port 0xe9 output goes: none (default), stdio or file:PATH.
    #[arg(long, value_name = "DEV")]
    pub debugcon: Option<String>,
    /// A guest reset ends the run instead of rebooting.
    #[arg(long)]
    pub no_reboot: bool,
    /// Print statistics to stderr after the run.
    #[arg(long)]
    pub stats: bool,
    /// After the run, explain every VM entry that failed (L1's virtual
    /// entries included): the check, its SDM section, the field and value.
    #[arg(long)]
    pub explain: bool,
    /// Run the guest directly on the CPU instead of as a VM under L0
    /// (no VMX; for comparison and debugging).
    #[arg(long)]
    pub direct: bool,
    /// Trace categories to stderr: exits, sched, irq, io, insns, all.
    #[arg(long, value_name = "LIST")]
    pub trace: Option<String>,
    /// Wall-clock limit in seconds; a run that hits it exits with 124.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<String>,
    /// Set by the QEMU-style pre-parser: QEMU's defaults (no exit port
    /// unless -device isa-debug-exit).
    #[arg(long, hide = true)]
    pub qemu: bool,
}

/// A command-line error: one line, exit status 1.
#[derive(Debug, PartialEq, Eq)]
pub struct CliError(pub String);

impl std::error::Error for CliError {}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What one table entry does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Action {
    /// `-kernel FILE`: the positional kernel.
    Kernel,
    /// Becomes `--<long>[=value]`.
    To(&'static str),
    /// Accepted and dropped; the value, if any, must be one of these
    /// (empty: any value).
    Ignore(&'static [&'static str]),
}

/// (name without dashes, takes a value, action).
const OPTIONS: &[(&str, bool, Action)] = &[
    ("kernel", true, Action::Kernel),
    ("append", true, Action::To("--append")),
    ("initrd", true, Action::To("--initrd")),
    ("smp", true, Action::To("--smp")),
    ("m", true, Action::To("--memory")),
    ("memory", true, Action::To("--memory")),
    ("cpu", true, Action::To("--cpu")),
    ("device", true, Action::To("--device")),
    ("machine", true, Action::To("--machine")),
    ("M", true, Action::To("--machine")),
    ("global", true, Action::To("--global")),
    ("serial", true, Action::To("--serial")),
    ("debugcon", true, Action::To("--debugcon")),
    ("no-reboot", false, Action::To("--no-reboot")),
    ("stats", false, Action::To("--stats")),
    ("timeout", true, Action::To("--timeout")),
    ("trace", true, Action::To("--trace")),
    ("nodefaults", false, Action::Ignore(&[])),
    ("no-user-config", false, Action::Ignore(&[])),
    ("enable-kvm", false, Action::Ignore(&[])),
    ("nographic", false, Action::Ignore(&[])),
    ("display", true, Action::Ignore(&["none"])),
    ("vnc", true, Action::Ignore(&["none"])),
    ("monitor", true, Action::Ignore(&["none"])),
    ("accel", true, Action::Ignore(&[])),
    ("name", true, Action::Ignore(&[])),
];

fn lookup(name: &str) -> Option<(bool, Action)> {
    OPTIONS.iter().find(|(n, _, _)| *n == name).map(|&(_, v, a)| (v, a))
}

/// Rewrites QEMU-spelled options in `args` (the arguments after `run` or
/// `demo`, or all of them in QEMU mode) into clap's spelling. In QEMU mode
/// the kernel comes from `-kernel` and every option must be known; in
/// clap mode unknown `--options` are left for clap to judge.
pub fn canonicalize(args: &[String], qemu_mode: bool) -> Result<(Option<String>, Vec<String>), CliError> {
    let mut out = Vec::new();
    let mut kernel = None;
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(stripped) = arg.strip_prefix('-').filter(|s| !s.is_empty()) else {
            if qemu_mode {
                return Err(CliError(format!(
                    "unsupported argument '{arg}' (disk images are not supported; boot a kernel with -kernel)"
                )));
            }
            out.push(arg.clone());
            continue;
        };
        let double = stripped.starts_with('-');
        let name_eq = stripped.trim_start_matches('-');
        if name_eq.is_empty() {
            // "--": everything after it is positional.
            out.extend(args[i - 1..].iter().cloned());
            break;
        }
        let (name, inline) = match name_eq.split_once('=') {
            Some((n, v)) if double => (n, Some(v.to_string())),
            _ => (name_eq, None),
        };
        let Some((takes_value, action)) = lookup(name) else {
            if qemu_mode || !double {
                // Clap's own short flags (-m256, -h, -V) pass through.
                let attached_m = name.strip_prefix('m').is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()));
                if !qemu_mode && (name.len() == 1 || attached_m) {
                    out.push(arg.clone());
                    continue;
                }
                if matches!(name, "h" | "help") {
                    out.push("--help".into());
                    continue;
                }
                return Err(CliError(format!("unknown option '{arg}'")));
            }
            out.push(arg.clone());
            continue;
        };
        let value = if takes_value {
            match inline {
                Some(v) => Some(v),
                None => {
                    let v =
                        args.get(i).cloned().ok_or_else(|| CliError(format!("option '{arg}' requires an argument")))?;
                    i += 1;
                    Some(v)
                }
            }
        } else {
            if inline.is_some() {
                return Err(CliError(format!("option '-{name}' takes no argument")));
            }
            None
        };
        match action {
            Action::Kernel => {
                if kernel.is_some() {
                    return Err(CliError("-kernel given twice".into()));
                }
                kernel = value;
            }
            // `--name=value`, so clap never mistakes a value starting
            // with '-' for an option.
            Action::To(canon) => out.push(match value {
                Some(v) => format!("{canon}={v}"),
                None => canon.to_string(),
            }),
            Action::Ignore(allowed) => {
                if let Some(v) = value {
                    if !allowed.is_empty() && !allowed.contains(&v.as_str()) {
                        return Err(CliError(format!(
                            "unsupported value '{v}' for -{name} (Turtles takes: {})",
                            allowed.join(", ")
                        )));
                    }
                }
            }
        }
    }
    Ok((kernel, out))
}

/// Turns the process arguments (without the program name) into the
/// argument vector clap parses.
pub fn preparse(args: &[String]) -> Result<Vec<String>, CliError> {
    let mut v = vec!["turtles".to_string()];
    let Some(first) = args.first() else {
        v.push("demo".into());
        return Ok(v);
    };
    match first.as_str() {
        "run" | "demo" => {
            let (kernel, rest) = canonicalize(&args[1..], false)?;
            // `turtles run --cpu help` lists the CPUs without a kernel.
            let cpu_help = rest.iter().any(|a| a == "--cpu=help" || a == "--cpu=?");
            v.push(if kernel.is_none() && cpu_help { "demo".to_string() } else { first.clone() });
            v.extend(kernel);
            v.extend(rest);
        }
        "-h" | "--help" | "-help" => v.push("--help".into()),
        "-V" | "--version" | "-version" => v.push("--version".into()),
        f if f.starts_with('-') => {
            let (kernel, rest) = canonicalize(args, true)?;
            let help = rest.iter().any(|a| a == "--help");
            if help {
                v.push("--help".into());
                return Ok(v);
            }
            match kernel {
                Some(k) => {
                    v.extend(["run".to_string(), k]);
                }
                // Options without -kernel: the demo kernel with them.
                None => v.push("demo".into()),
            }
            v.push("--qemu".into());
            v.extend(rest);
        }
        _ => v.extend(args.iter().cloned()),
    }
    Ok(v)
}

/// Parses the process arguments. `Err` carries a one-line message, or
/// clap's help/version text to print with status 0.
pub fn parse(args: &[String]) -> Result<Cli, ParseOutcome> {
    let argv = preparse(args).map_err(ParseOutcome::Error)?;
    Cli::try_parse_from(&argv).map_err(|e| {
        use clap::error::{ContextKind, ErrorKind};
        match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ParseOutcome::Print(e.render().to_string()),
            ErrorKind::UnknownArgument => {
                let arg = e.get(ContextKind::InvalidArg).map(|a| a.to_string()).unwrap_or_default();
                ParseOutcome::Error(CliError(format!("unknown option '{arg}'")))
            }
            ErrorKind::MissingRequiredArgument => {
                let args: Vec<String> = match e.get(ContextKind::InvalidArg) {
                    Some(clap::error::ContextValue::Strings(v)) => v.clone(),
                    Some(v) => vec![v.to_string()],
                    None => Vec::new(),
                };
                ParseOutcome::Error(CliError(format!("missing required argument {}", args.join(" "))))
            }
            ErrorKind::InvalidSubcommand => {
                let arg = e.get(ContextKind::InvalidSubcommand).map(|a| a.to_string()).unwrap_or_default();
                ParseOutcome::Error(CliError(format!("unknown command '{arg}' (try 'turtles --help')")))
            }
            _ => {
                let text = e.render().to_string();
                let line = text.lines().next().unwrap_or("invalid arguments");
                ParseOutcome::Error(CliError(line.trim_start_matches("error: ").to_string()))
            }
        }
    })
}

/// Why parsing did not produce a [`Cli`].
#[derive(Debug)]
pub enum ParseOutcome {
    /// Help or version text: print it and exit 0.
    Print(String),
    /// A usage error: print `turtles: <msg>` and exit 1.
    Error(CliError),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    fn run_opts(args: &[&str]) -> (std::path::PathBuf, RunOptions) {
        match parse(&s(args)).unwrap().command {
            Some(Command::Run(r)) => (r.kernel, r.opts),
            other => panic!("{other:?}"),
        }
    }

    fn err(args: &[&str]) -> String {
        match parse(&s(args)) {
            Err(ParseOutcome::Error(e)) => e.0,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_arguments_runs_the_demo() {
        assert!(matches!(parse(&[]).unwrap().command, Some(Command::Demo(_))));
    }

    #[test]
    fn qemu_style_maps_onto_run_options() {
        let (k, o) = run_opts(&[
            "-kernel",
            "k.elf",
            "-append",
            "a b",
            "-initrd",
            "i.img",
            "-smp",
            "2",
            "-m",
            "256M",
            "-serial",
            "stdio",
            "-nodefaults",
            "-display",
            "none",
            "-vnc",
            "none",
            "--no-reboot",
            "-machine",
            "accel=kvm:tcg",
            "-machine",
            "pit=off",
            "-cpu",
            "max,+x2apic,-pku",
            "-global",
            "kvm-pit.lost_tick_policy=discard",
            "-device",
            "isa-debug-exit,iobase=0xf4,iosize=0x4",
            "-device",
            "pc-testdev",
            "-device",
            "pci-testdev",
            "-monitor",
            "none",
            "-enable-kvm",
            "--stats",
            "--timeout",
            "5",
        ]);
        assert_eq!(k, std::path::PathBuf::from("k.elf"));
        assert_eq!(o.append.as_deref(), Some("a b"));
        assert_eq!(o.initrd.as_deref(), Some("i.img"));
        assert_eq!(o.smp.as_deref(), Some("2"));
        assert_eq!(o.memory.as_deref(), Some("256M"));
        assert_eq!(o.cpu.as_deref(), Some("max,+x2apic,-pku"));
        assert_eq!(o.devices, s(&["isa-debug-exit,iobase=0xf4,iosize=0x4", "pc-testdev", "pci-testdev"]));
        assert_eq!(o.machines, s(&["accel=kvm:tcg", "pit=off"]));
        assert_eq!(o.globals, s(&["kvm-pit.lost_tick_policy=discard"]));
        assert!(o.no_reboot && o.stats && o.qemu);
        assert_eq!(o.timeout.as_deref(), Some("5"));
        assert_eq!(o.serial.as_deref(), Some("stdio"));
    }

    #[test]
    fn run_accepts_both_spellings() {
        let (k, o) = run_opts(&["run", "k.elf", "-smp", "4", "--append", "-x", "-m", "64", "-device", "pc-testdev"]);
        assert_eq!(k, std::path::PathBuf::from("k.elf"));
        assert_eq!(o.smp.as_deref(), Some("4"));
        assert_eq!(o.append.as_deref(), Some("-x"), "values are never rewritten");
        assert_eq!(o.memory.as_deref(), Some("64"));
        assert_eq!(o.devices, s(&["pc-testdev"]));
        assert!(!o.qemu);
        let (_, o) = run_opts(&["run", "--smp=3", "k.elf", "--trace", "exits,irq", "-m512M"]);
        assert_eq!(o.smp.as_deref(), Some("3"));
        assert_eq!(o.trace.as_deref(), Some("exits,irq"));
        assert_eq!(o.memory.as_deref(), Some("512M"));
    }

    #[test]
    fn errors_are_one_line() {
        assert_eq!(err(&["-foo"]), "unknown option '-foo'");
        assert_eq!(err(&["-kernel", "k", "-hda", "x.img"]), "unknown option '-hda'");
        assert_eq!(err(&["-kernel", "k", "-smp"]), "option '-smp' requires an argument");
        assert_eq!(err(&["run", "k", "--bogus"]), "unknown option '--bogus'");
        assert_eq!(err(&["run", "k", "-bogus"]), "unknown option '-bogus'");
        assert_eq!(err(&["frobnicate"]), "unknown command 'frobnicate' (try 'turtles --help')");
        assert!(err(&["-kernel", "k", "-display", "gtk"]).contains("unsupported value 'gtk'"));
        assert!(err(&["-kernel", "k", "disk.img"]).contains("unsupported argument 'disk.img'"));
        for e in [err(&["run"]), err(&["-foo"]), err(&["run", "k", "--smp"])] {
            assert_eq!(e.lines().count(), 1, "{e}");
        }
    }

    #[test]
    fn options_without_kernel_run_the_demo() {
        match parse(&s(&["-smp", "2", "--stats"])).unwrap().command {
            Some(Command::Demo(d)) => assert!(d.opts.stats && d.opts.qemu && d.opts.smp.as_deref() == Some("2")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn help_and_device_help() {
        assert!(matches!(parse(&s(&["--help"])), Err(ParseOutcome::Print(t)) if t.contains("-kernel FILE")));
        assert!(matches!(parse(&s(&["-kernel", "k", "-h"])), Err(ParseOutcome::Print(_))));
        match parse(&s(&["-device", "help"])).unwrap().command {
            Some(Command::Demo(d)) => assert_eq!(d.opts.devices, s(&["help"])),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn random_argument_vectors_never_panic() {
        let vocab = [
            "-kernel",
            "--kernel",
            "-m",
            "-smp",
            "--smp=",
            "-append",
            "--",
            "-",
            "run",
            "demo",
            "bench",
            "-device",
            "help",
            "-cpu",
            "max,+x2apic",
            "-h",
            "-V",
            "--stats",
            "-m256",
            "=",
            "-no-reboot=1",
            "k.elf",
            "é",
            "-é",
            "--timeout",
            "-display",
            "none",
            "-M",
            "pc",
        ];
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let n = (x % 7) as usize;
            let args: Vec<String> =
                (0..n).map(|i| vocab[((x >> (i * 5)) % vocab.len() as u64) as usize].to_string()).collect();
            let _ = parse(&args);
        }
    }

    #[test]
    fn bench_arguments() {
        match parse(&s(&["bench", "alu", "pio", "--elf-dir", "/x"])).unwrap().command {
            Some(Command::Bench(b)) => {
                assert_eq!(b.workloads, s(&["alu", "pio"]));
                assert_eq!(b.elf_dir, Some("/x".into()));
            }
            other => panic!("{other:?}"),
        }
        match parse(&s(&["bench", "linux", "--kernel", "/k", "--initrd", "/i", "--no-qemu"])).unwrap().command {
            Some(Command::Bench(b)) => {
                assert_eq!(b.workloads, s(&["linux"]));
                assert_eq!((b.kernel, b.initrd, b.no_qemu), (Some("/k".into()), Some("/i".into()), true));
                assert_eq!(b.memory, None);
            }
            other => panic!("{other:?}"),
        }
    }
}
