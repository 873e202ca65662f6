//! Executes arbitrary instruction bytes from arbitrary register state in
//! each mode (the first input byte picks the mode). Run with
//! `cargo +nightly fuzz run exec` from this directory.
#![no_main]

use libfuzzer_sys::fuzz_target;
use turtles_cpu::{Bus, Cpu, CpuidModel, Memory, NullBus, Segment};
use x86::seg::{ar, sreg};
use x86::{Cr0, Cr4, Efer};

const CODE: u64 = 0x10000;

fuzz_target!(|data: &[u8]| {
    if data.len() < 1 + 16 * 8 + 8 + 1 {
        return;
    }
    let mode = data[0] % 4;
    let mut regs = [0u64; 16];
    for (i, r) in regs.iter_mut().enumerate() {
        *r = u64::from_le_bytes(data[1 + i * 8..9 + i * 8].try_into().unwrap());
    }
    let flags = u64::from_le_bytes(data[129..137].try_into().unwrap());
    let code = &data[137..];
    let mut mem = Memory::new(2 << 20).unwrap();
    let _ = mem.write(CODE, &code[..code.len().min(0x1000)]);
    mem.write_u64(0x1000, 0x2000 | 7).unwrap();
    mem.write_u64(0x2000, 0x3000 | 7).unwrap();
    for i in 0..512u64 {
        mem.write_u64(0x3000 + i * 8, (i << 21) | 0x87).unwrap();
    }
    mem.write_u64(0x4008, 0x00af_9b00_0000_ffff).unwrap();
    mem.write_u64(0x4010, 0x00cf_9300_0000_ffff).unwrap();
    let mut cpu = Cpu::new(0, CpuidModel::turtles_max());
    let r = &mut cpu.regs;
    r.gpr = regs;
    r.gdtr = turtles_cpu::DescTable { base: 0x4000, limit: 0x1f };
    r.idtr = turtles_cpu::DescTable { base: 0x5000, limit: 0xfff };
    let data_seg = Segment { selector: 0x10, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::RW | ar::DB | ar::G };
    match mode {
        0 => {
            r.seg = [Segment::real(0, false); 6];
            r.seg[sreg::CS] = Segment::real((CODE >> 4) as u16, true);
            r.rip = 0;
        }
        1 => {
            r.cr0 = (Cr0::PE | Cr0::ET).bits();
            r.seg = [data_seg; 6];
            r.seg[sreg::CS] = Segment { selector: 0x8, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::CODE | ar::RW | ar::DB | ar::G };
            r.rip = CODE;
        }
        _ => {
            r.cr0 = (Cr0::PE | Cr0::PG | Cr0::ET).bits();
            r.cr4 = (Cr4::PAE | Cr4::OSFXSR).bits();
            r.cr3 = 0x1000;
            r.efer = (Efer::LME | Efer::LMA | Efer::NXE | Efer::SCE).bits();
            r.seg = [data_seg; 6];
            let l = if mode == 2 { ar::L } else { ar::DB };
            r.seg[sreg::CS] = Segment { selector: 0x8, base: 0, limit: 0xffff_ffff, ar: ar::P | ar::S | ar::CODE | ar::RW | l | ar::G };
            r.rip = CODE;
        }
    }
    r.set_rflags(flags);
    cpu.state_changed();
    let mut bus = NullBus::default();
    let _ = cpu.run(&mut mem, &mut bus as &mut dyn Bus, 10_000);
});
