//! Runs a fixed number of guest instructions of the ALU or stride loop
//! once, for deterministic profiling under callgrind:
//! `valgrind --tool=callgrind target/release/examples/loops alu 2000000`
//! gives host instructions per guest instruction, independent of load.

mod common;

use common::{long_mode, stride_setup, ALU_LOOP, STRIDE_LOOP};
use turtles_cpu::{Bus, NullBus};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "alu".into());
    let n: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10_000_000);
    let code: &[u8] = if which == "mem" { &STRIDE_LOOP } else { &ALU_LOOP };
    let (mut cpu, mut m) = long_mode(code);
    stride_setup(&mut cpu);
    let mut bus = NullBus::default();
    let t = std::time::Instant::now();
    cpu.run(&mut m, &mut bus as &mut dyn Bus, n);
    let s = t.elapsed().as_secs_f64();
    println!("{which}: {} instructions in {:.3} s = {:.1} MIPS", cpu.icount, s, cpu.icount as f64 / s / 1e6);
}
