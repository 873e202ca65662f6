//! `turtles bench`: the benchmark workloads of `../shared/bench/guests`
//! (ALU loop, memory stride with 2 MiB and 4 KiB pages, CPUID loop,
//! port-I/O loop), each booted in-process on one vCPU, timed from VM
//! creation to exit, minus the `boot` workload's time (the cost of booting
//! to long mode and exiting), as the reference numbers are measured.
//!
//! Each guest prints `BENCH wl=<name> iters=<n> ipi=<insns/iter> tsc=<delta>
//! sum=<hex>` on COM1 and exits through isa-debug-exit with status 33.
//! Kernels come from `--elf-dir DIR` (`DIR/<workload>.elf`, e.g. the
//! prebuilt reference ELFs) or from the binary: an embedded kernel named
//! `bench-<workload>`, or one named `bench` given `wl=<workload>` on its
//! command line.

use std::borrow::Cow;
use std::time::{Duration, Instant};

use vmm::{ExitKind, ImageSource, SharedWriter, Vm, VmConfig};

use crate::args::{BenchArgs, CliError};
use crate::run::{parse_mem, parse_timeout, DEFAULT_DEBUG_EXIT};

/// Workloads, and what one iteration is.
const WORKLOADS: &[(&str, &str)] = &[
    ("alu", "iteration (10 insns)"),
    ("mem", "access (2 MiB pages)"),
    ("mem4k", "access (4 KiB pages)"),
    ("cpuid", "CPUID iteration"),
    ("pio", "OUT iteration"),
    ("l2-cpuid", "L2 CPUID handled by L1"),
    ("l2-alu", "iteration (10 insns), L2"),
];

/// The fields of a `BENCH` line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct BenchLine {
    /// Workload name.
    pub wl: String,
    /// Iterations.
    pub iters: u64,
    /// Instructions per iteration.
    pub ipi: u64,
    /// TSC delta.
    pub tsc: u64,
    /// Checksum, as printed.
    pub sum: String,
}

/// Finds and parses the `BENCH ...` line in guest output.
pub fn parse_bench_line(out: &str) -> Option<BenchLine> {
    let line = out.lines().find_map(|l| l.trim_end_matches('\r').strip_prefix("BENCH "))?;
    let mut b = BenchLine::default();
    for field in line.split_whitespace() {
        let (k, v) = field.split_once('=')?;
        match k {
            "wl" => b.wl = v.to_string(),
            "iters" => b.iters = v.parse().ok()?,
            "ipi" => b.ipi = v.parse().ok()?,
            "tsc" => b.tsc = v.parse().ok()?,
            "sum" => b.sum = v.to_string(),
            _ => {}
        }
    }
    Some(b)
}

struct Outcome {
    /// VM exits L0 took per L2 exit it reflected to L1 (nested workloads).
    exits_per_reflected: Option<f64>,
    insns: u64,
    wall: Duration,
    line: Option<BenchLine>,
    exit: ExitKind,
    output: String,
}

fn kernel_for(args: &BenchArgs, wl: &str) -> Result<(ImageSource, String), CliError> {
    let embedded = |name: &str| {
        crate::embedded::find(name).map(|d| ImageSource::Bytes { name: name.into(), data: Cow::Borrowed(d) })
    };
    // Nested workloads: the guest hypervisor bench-l2 runs the loop in its
    // own guest.
    if let Some(inner) = wl.strip_prefix("l2-") {
        return embedded("bench-l2")
            .map(|k| (k, format!("wl={inner}")))
            .ok_or_else(|| CliError("this build embeds no nested benchmark kernel (bench-l2)".into()));
    }
    if let Some(dir) = &args.elf_dir {
        return Ok((ImageSource::File(dir.join(format!("{wl}.elf"))), String::new()));
    }
    if let Some(k) = embedded(&format!("bench-{wl}")) {
        return Ok((k, String::new()));
    }
    if let Some(k) = embedded("bench") {
        return Ok((k, format!("wl={wl}")));
    }
    Err(CliError(
        "this build embeds no benchmark kernel (guests/ has no `bench` kernel yet): \
         use --elf-dir ../shared/bench/guests/build"
            .into(),
    ))
}

fn run_one(args: &BenchArgs, wl: &str) -> Result<Outcome, CliError> {
    let (kernel, append) = kernel_for(args, wl)?;
    let mut cfg = VmConfig::new(kernel);
    cfg.ram_size = parse_mem(args.memory.as_deref().unwrap_or("256M"))?;
    cfg.append = append;
    cfg.devices.debug_exit = Some(DEFAULT_DEBUG_EXIT);
    cfg.timeout = Some(parse_timeout(&args.timeout)?);
    if args.direct {
        cfg.vcpu_mode = vmm::l0::VcpuMode::Direct;
    }
    if wl.starts_with("l2-") {
        // The guest hypervisor needs VMX in its CPU policy.
        cfg.cpu_policy = vmm::CpuPolicy::max();
    }
    let (out, buf) = SharedWriter::buffer();
    cfg.serial_out = out;
    let start = Instant::now();
    let mut vm = Vm::new(cfg).map_err(|e| CliError(e.to_string()))?;
    let report = vm.run().map_err(|e| CliError(e.to_string()))?;
    let wall = start.elapsed();
    let output = buf.lock().map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_default();
    if report.exit.is_failure() {
        eprint!("{}", report.failure_summary());
    }
    let exits_per_reflected =
        (report.exits.reflected > 0).then(|| report.exits.total() as f64 / report.exits.reflected as f64);
    Ok(Outcome {
        exits_per_reflected,
        insns: report.total_insns(),
        wall,
        line: parse_bench_line(&output),
        exit: report.exit,
        output,
    })
}

/// Runs the workloads and prints the table; exit status 0 when every
/// workload printed its line and exited with status 33.
pub fn bench(args: &BenchArgs) -> Result<i32, CliError> {
    if args.workloads.iter().any(|w| w == "linux") {
        if args.workloads.len() > 1 {
            return Err(CliError("`linux` is run on its own: `turtles bench linux`".into()));
        }
        return crate::bench_linux::bench_linux(args);
    }
    let selected: Vec<&str> = if args.workloads.is_empty() {
        WORKLOADS.iter().map(|w| w.0).collect()
    } else {
        for w in &args.workloads {
            if !WORKLOADS.iter().any(|(n, _)| n == w) {
                let all: Vec<&str> = WORKLOADS.iter().map(|w| w.0).collect();
                return Err(CliError(format!("unknown workload '{w}' (choose from {})", all.join(", "))));
            }
        }
        args.workloads.iter().map(String::as_str).collect()
    };
    let boot = run_one(args, "boot")?;
    let mut status = 0;
    if boot.exit != (ExitKind::DebugExit { status: 33 }) {
        eprintln!("turtles: bench: the boot workload failed ({}):\n{}", boot.exit, boot.output);
        status = 1;
    }
    let mode = if args.direct { "directly on the CPU (--direct)" } else { "as VMs under L0 (VMX non-root)" };
    println!("workloads run {mode}");
    println!("{:<8} {:>14} {:>9} {:>9} {:>9}  {:<22} sum", "workload", "guest insns", "wall s", "MIPS", "ns/op", "op");
    let dash = "-";
    println!(
        "{:<8} {:>14} {:>9.3} {dash:>9} {dash:>9}  {dash:<22} {dash}",
        "boot",
        boot.insns,
        boot.wall.as_secs_f64()
    );
    for wl in selected {
        if args.direct && wl.starts_with("l2-") {
            // A guest hypervisor needs L0 to emulate VMX for it.
            println!("{wl:<8} (needs L0: not run with --direct)");
            continue;
        }
        let o = run_one(args, wl)?;
        let ok = o.exit == ExitKind::DebugExit { status: 33 } && o.line.as_ref().is_some_and(|l| l.wl.starts_with(wl));
        let secs = o.wall.saturating_sub(boot.wall).as_secs_f64();
        let insns = o.insns.saturating_sub(boot.insns);
        let mips = if secs > 0.0 { insns as f64 / secs / 1e6 } else { 0.0 };
        let op = WORKLOADS.iter().find(|w| w.0 == wl).map_or("", |w| w.1);
        let (ns, sum) = match &o.line {
            Some(l) if l.iters > 0 => (format!("{:.1}", secs * 1e9 / l.iters as f64), l.sum.clone()),
            Some(l) => ("-".into(), l.sum.clone()),
            None => ("-".into(), "(no BENCH line)".into()),
        };
        println!("{wl:<8} {:>14} {:>9.3} {mips:>9.1} {ns:>9}  {op:<22} {sum}", o.insns, o.wall.as_secs_f64());
        if let (Some(x), "l2-cpuid") = (o.exits_per_reflected, wl) {
            println!("{:<8} {x:.1} L0 exits per L2 exit reflected to L1", "");
        }
        if !ok {
            eprintln!("turtles: bench: {wl} failed ({}); guest output:\n{}", o.exit, o.output);
            status = 1;
        }
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_bench_line() {
        let out = "booting\r\nBENCH wl=alu iters=100000000 ipi=10 tsc=123 sum=0x00000000deadbeef\r\n";
        assert_eq!(
            parse_bench_line(out),
            Some(BenchLine {
                wl: "alu".into(),
                iters: 100_000_000,
                ipi: 10,
                tsc: 123,
                sum: "0x00000000deadbeef".into()
            })
        );
        assert_eq!(parse_bench_line("nothing"), None);
        assert_eq!(parse_bench_line("BENCH wl=x iters=z"), None);
    }
}
