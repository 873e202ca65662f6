//! Hostile input: random instruction bytes executed from random register
//! state in every mode. The CPU must never panic or hang; whatever the
//! bytes do, the outcome is architectural (a result, an exception, a
//! shutdown). A few thousand cases run in the normal suite; the cargo-fuzz
//! target in `fuzz/` runs the same harness without a bound.

use proptest::prelude::*;
use turtles_cpu::{Bus, Cpu, CpuidModel, Memory, NullBus, RunExit, Segment};
use x86::seg::{ar, sreg};
use x86::{Cr0, Cr4, Efer};

const CODE: u64 = 0x10000;

#[derive(Debug, Clone, Copy)]
enum Mode {
    Real,
    Prot32,
    Long64,
    Compat,
}

fn machine(mode: Mode, code: &[u8], regs: &[u64; 16], flags: u64) -> (Cpu, Memory) {
    let mut mem = Memory::new(2 << 20).unwrap();
    mem.write(CODE, code).unwrap();
    // Identity map 1 GiB with 2 MiB pages; a GDT and IDT with garbage-free
    // but minimal contents, so exceptions have somewhere to go (or fault on
    // into shutdown, which is also fine).
    mem.write_u64(0x1000, 0x2000 | 7).unwrap();
    mem.write_u64(0x2000, 0x3000 | 7).unwrap();
    for i in 0..512u64 {
        mem.write_u64(0x3000 + i * 8, (i << 21) | 0x87).unwrap();
    }
    mem.write_u64(0x4008, 0x00af_9b00_0000_ffff).unwrap();
    mem.write_u64(0x4010, 0x00cf_9300_0000_ffff).unwrap();
    mem.write_u64(0x4018, 0x00cf_9b00_0000_ffff).unwrap();
    let mut cpu = Cpu::new(0, CpuidModel::turtles_max());
    let r = &mut cpu.regs;
    r.gpr = *regs;
    r.gdtr = turtles_cpu::DescTable { base: 0x4000, limit: 0x1f };
    r.idtr = turtles_cpu::DescTable { base: 0x5000, limit: 0xfff };
    let data = Segment { selector: 0x10, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::RW | ar::DB | ar::G };
    match mode {
        Mode::Real => {
            r.seg = [Segment::real(0, false); 6];
            r.seg[sreg::CS] = Segment::real((CODE >> 4) as u16, true);
            r.rip = 0;
        }
        Mode::Prot32 => {
            r.cr0 = (Cr0::PE | Cr0::ET).bits();
            r.seg = [data; 6];
            r.seg[sreg::CS] = Segment {
                selector: 0x18,
                base: 0,
                limit: 0xffff_ffff,
                ar: ar::P | ar::S | ar::CODE | ar::RW | ar::DB | ar::G,
            };
            r.rip = CODE;
        }
        Mode::Long64 | Mode::Compat => {
            r.cr0 = (Cr0::PE | Cr0::PG | Cr0::ET).bits();
            r.cr4 = (Cr4::PAE | Cr4::OSFXSR).bits();
            r.cr3 = 0x1000;
            r.efer = (Efer::LME | Efer::LMA | Efer::NXE | Efer::SCE).bits();
            r.seg = [data; 6];
            let l = if matches!(mode, Mode::Long64) { ar::L } else { ar::DB };
            r.seg[sreg::CS] = Segment {
                selector: 0x8,
                base: 0,
                limit: 0xffff_ffff,
                ar: ar::P | ar::S | ar::CODE | ar::RW | l | ar::G,
            };
            r.rip = CODE;
        }
    }
    r.set_rflags(flags);
    cpu.state_changed();
    (cpu, mem)
}

fn run_case(mode: Mode, code: &[u8], regs: &[u64; 16], flags: u64) {
    let (mut cpu, mut mem) = machine(mode, code, regs, flags);
    let mut bus = NullBus::default();
    // Bounded: a loop in random code must end at the budget.
    for _ in 0..4 {
        match cpu.run(&mut mem, &mut bus as &mut dyn Bus, 2_000) {
            RunExit::Budget => {}
            RunExit::Halted | RunExit::Shutdown(_) | RunExit::Stopped | RunExit::VmExit => break,
        }
    }
}

fn mode_strategy() -> impl Strategy<Value = Mode> {
    prop_oneof![Just(Mode::Real), Just(Mode::Prot32), Just(Mode::Long64), Just(Mode::Compat)]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_never_crash(
        mode in mode_strategy(),
        code in proptest::collection::vec(any::<u8>(), 1..64),
        regs in proptest::array::uniform16(prop_oneof![any::<u64>(), 0u64..0x20_0000, Just(0u64)]),
        flags in any::<u64>(),
    ) {
        run_case(mode, &code, &regs, flags);
    }
}
