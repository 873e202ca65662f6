//! Executor throughput on tight guest loops (run with `cargo bench -p
//! turtles-cpu`). The ALU loop is the one of ../shared/bench (add, xor,
//! add, sub, or, xor, add, and, dec, jnz); the memory loop strides through
//! 4 KiB pages.

#![allow(missing_docs)] // criterion_group! generates undocumented items

#[path = "../examples/common/mod.rs"]
mod common;

use common::{long_mode, stride_setup, ALU_LOOP, STRIDE_LOOP};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use turtles_cpu::{Bus, NullBus};

fn alu(c: &mut Criterion) {
    let (mut cpu, mut mem) = long_mode(&ALU_LOOP);
    let mut bus = NullBus::default();
    let n = 10_000_000u64;
    let mut g = c.benchmark_group("exec");
    g.throughput(Throughput::Elements(n));
    g.bench_function("alu_loop", |b| {
        b.iter(|| {
            cpu.run(&mut mem, &mut bus as &mut dyn Bus, n);
        })
    });
    let (mut cpu, mut mem) = long_mode(&STRIDE_LOOP);
    stride_setup(&mut cpu);
    g.bench_function("mem_stride_2m_pages", |b| {
        b.iter(|| {
            cpu.run(&mut mem, &mut bus as &mut dyn Bus, n);
        })
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10);
    targets = alu
}
criterion_main!(benches);
