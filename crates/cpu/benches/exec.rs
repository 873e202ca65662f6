//! Executor throughput on tight guest loops (run with `cargo bench -p
//! turtles-cpu`). The ALU loop is the one of ../shared/bench (add, xor,
//! add, sub, or, xor, add, and, dec, jnz); the memory loop strides through
//! 4 KiB pages.

#![allow(missing_docs)] // criterion_group! generates undocumented items

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use turtles_cpu::{Bus, Cpu, CpuidModel, Memory, NullBus, Segment};
use x86::seg::{ar, sreg};
use x86::{Cr0, Cr4, Efer};

const CODE: u64 = 0x10000;

fn long_mode(code: &[u8]) -> (Cpu, Memory) {
    let mut mem = Memory::new(64 << 20).unwrap();
    mem.write(CODE, code).unwrap();
    mem.write_u64(0x1000, 0x2000 | 3).unwrap();
    mem.write_u64(0x2000, 0x3000 | 3).unwrap();
    for i in 0..512u64 {
        mem.write_u64(0x3000 + i * 8, (i << 21) | 0x83).unwrap();
    }
    let mut cpu = Cpu::new(0, CpuidModel::turtles_max());
    let r = &mut cpu.regs;
    r.cr0 = (Cr0::PE | Cr0::PG | Cr0::ET | Cr0::NE | Cr0::WP).bits();
    r.cr4 = (Cr4::PAE | Cr4::OSFXSR).bits();
    r.cr3 = 0x1000;
    r.efer = (Efer::LME | Efer::LMA | Efer::NXE).bits();
    let data = Segment { selector: 0x10, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::RW | ar::DB | ar::G };
    r.seg = [data; 6];
    r.seg[sreg::CS] =
        Segment { selector: 8, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::CODE | ar::RW | ar::L | ar::G };
    r.rip = CODE;
    r.gpr[4] = 0x80000;
    cpu.state_changed();
    (cpu, mem)
}

fn alu(c: &mut Criterion) {
    // l: add rax,rbx; xor rbx,rcx; add rcx,rdx; sub rdx,rsi; or rsi,rdi;
    //    xor rdi,rax; add rax,rdi; and rbx,rsi; dec r8; jnz l ; jmp l
    let code = [
        0x48, 0x01, 0xd8, 0x48, 0x31, 0xcb, 0x48, 0x01, 0xd1, 0x48, 0x29, 0xf2, 0x48, 0x09, 0xfe, 0x48, 0x31, 0xc7,
        0x48, 0x01, 0xf8, 0x48, 0x21, 0xf3, 0x49, 0xff, 0xc8, 0x75, 0xe3, 0xeb, 0xe1,
    ];
    let (mut cpu, mut mem) = long_mode(&code);
    let mut bus = NullBus::default();
    let n = 10_000_000u64;
    let mut g = c.benchmark_group("exec");
    g.throughput(Throughput::Elements(n));
    g.bench_function("alu_loop", |b| {
        b.iter(|| {
            cpu.run(&mut mem, &mut bus as &mut dyn Bus, n);
        })
    });
    // l: mov rax,[rsi]; add rax,1; mov [rsi],rax; add rsi,4160; and rsi,r9; or rsi, r10; dec r8; jnz l; jmp l
    let code = [
        0x48, 0x8b, 0x06, 0x48, 0x83, 0xc0, 0x01, 0x48, 0x89, 0x06, 0x48, 0x81, 0xc6, 0x40, 0x10, 0x00, 0x00, 0x4c,
        0x21, 0xce, 0x4c, 0x09, 0xd6, 0x49, 0xff, 0xc8, 0x75, 0xe4, 0xeb, 0xe2,
    ];
    let (mut cpu, mut mem) = long_mode(&code);
    cpu.regs.gpr[6] = 0x100_0000;
    cpu.regs.gpr[9] = 0x1ff_ffff;
    cpu.regs.gpr[10] = 0x100_0000;
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
