//! `turtles`: runs x86-64 kernels on Turtles' software CPU.
//!
//! * `turtles` — the built-in demo kernel;
//! * `turtles run KERNEL [options]` — any multiboot, bzImage, PVH or ELF64 kernel;
//! * `turtles -kernel KERNEL ...` — the same, spelled as for
//!   `qemu-system-x86_64` (see [`args`]);
//! * `turtles bench [WORKLOAD...]` — the benchmark workloads;
//! * `turtles bench linux` — a Linux boot to /init, against QEMU TCG.
//!
//! Serial output goes to stdout and stdin feeds the UART. The exit status
//! mirrors isa-debug-exit; failures print a short report to stderr.

mod args;
mod bench;
mod bench_linux;
mod embedded;
mod run;

use args::{Command, ParseOutcome};

fn dispatch(command: Option<Command>) -> anyhow::Result<i32> {
    Ok(match command {
        None => run::run_demo(&args::RunOptions::default())?,
        Some(Command::Demo(d)) => run::run_demo(&d.opts)?,
        Some(Command::Run(r)) => run::run_kernel(r.kernel, &r.opts)?,
        Some(Command::Bench(b)) => bench::bench(&b)?,
    })
}

fn main() {
    let argv: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let code = match args::parse(&argv) {
        Ok(cli) => match dispatch(cli.command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("turtles: {e:#}");
                1
            }
        },
        Err(ParseOutcome::Print(text)) => {
            print!("{text}");
            0
        }
        Err(ParseOutcome::Error(e)) => {
            eprintln!("turtles: {e}");
            1
        }
    };
    std::process::exit(code);
}
