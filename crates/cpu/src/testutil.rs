//! A tiny machine for instruction tests: RAM, a null bus, and a CPU placed
//! directly in the mode under test with flat segments.
//!
//! `Machine::long64(code)` puts `code` at [`CODE`] in 64-bit mode with
//! identity paging of the first 1 GiB (2 MiB pages) and a stack at
//! [`STACK`]; `prot32` and `real16` do the same without paging. Code runs
//! until HLT (append 0xf4) or the budget ends.

use crate::{Bus, Cpu, CpuidModel, Memory, NullBus, RunExit, Segment};
use x86::seg::{ar, sreg};
use x86::{Cr0, Cr4, Efer};

/// Where test code is placed.
pub const CODE: u64 = 0x10000;
/// Initial stack pointer.
pub const STACK: u64 = 0x80000;
/// A scratch data area tests may use.
pub const DATA: u64 = 0x20000;
const PML4: u64 = 0x1000;

/// A CPU with RAM and a null bus.
pub struct Machine {
    /// The CPU.
    pub cpu: Cpu,
    /// Its RAM (4 MiB).
    pub mem: Memory,
    /// Its bus.
    pub bus: NullBus,
}

impl Machine {
    fn new(code: &[u8]) -> Machine {
        let mut mem = Memory::new(4 << 20).expect("4 MiB of RAM");
        mem.write(CODE, code).expect("code fits");
        Machine { cpu: Cpu::new(0, CpuidModel::turtles_max()), mem, bus: NullBus::default() }
    }

    /// 64-bit mode, CPL 0, identity-mapped paging.
    pub fn long64(code: &[u8]) -> Machine {
        let mut m = Machine::new(code);
        // PML4[0] -> PDPT at 0x2000; PDPT[0] -> PD at 0x3000; 2 MiB pages.
        m.mem.write_u64(PML4, 0x2000 | 3).unwrap();
        m.mem.write_u64(0x2000, 0x3000 | 3).unwrap();
        for i in 0..512u64 {
            m.mem.write_u64(0x3000 + i * 8, (i << 21) | 0x83).unwrap();
        }
        let r = &mut m.cpu.regs;
        r.cr0 = (Cr0::PE | Cr0::PG | Cr0::ET | Cr0::NE | Cr0::WP).bits();
        r.cr4 = (Cr4::PAE | Cr4::OSFXSR | Cr4::OSXMMEXCPT).bits();
        r.cr3 = PML4;
        r.efer = (Efer::LME | Efer::LMA | Efer::NXE | Efer::SCE).bits();
        let data = Segment {
            selector: 0x10,
            base: 0,
            limit: 0xffff_ffff,
            ar: ar::P | ar::S | ar::RW | ar::ACCESSED | ar::DB | ar::G,
        };
        r.seg = [data; 6];
        r.seg[sreg::CS] = Segment {
            selector: 0x8,
            base: 0,
            limit: 0xffff_ffff,
            ar: ar::P | ar::S | ar::CODE | ar::RW | ar::ACCESSED | ar::L | ar::G,
        };
        r.rip = CODE;
        r.gpr[4] = STACK;
        m.cpu.state_changed();
        m
    }

    /// 32-bit protected mode, flat, no paging.
    pub fn prot32(code: &[u8]) -> Machine {
        let mut m = Machine::new(code);
        let r = &mut m.cpu.regs;
        r.cr0 = (Cr0::PE | Cr0::ET | Cr0::NE).bits();
        let data = Segment {
            selector: 0x10,
            base: 0,
            limit: 0xffff_ffff,
            ar: ar::P | ar::S | ar::RW | ar::ACCESSED | ar::DB | ar::G,
        };
        r.seg = [data; 6];
        r.seg[sreg::CS] = Segment {
            selector: 0x8,
            base: 0,
            limit: 0xffff_ffff,
            ar: ar::P | ar::S | ar::CODE | ar::RW | ar::ACCESSED | ar::DB | ar::G,
        };
        r.rip = CODE;
        r.gpr[4] = STACK;
        m.cpu.state_changed();
        m
    }

    /// Real mode with CS = CODE >> 4, IP = 0, other segments 0.
    pub fn real16(code: &[u8]) -> Machine {
        let mut m = Machine::new(code);
        let r = &mut m.cpu.regs;
        r.seg = [Segment::real(0, false); 6];
        r.seg[sreg::CS] = Segment::real((CODE >> 4) as u16, true);
        r.rip = 0;
        r.gpr[4] = 0xfffe;
        m.cpu.state_changed();
        m
    }

    /// Runs until HLT, shutdown, or 1e6 instructions.
    pub fn run(&mut self) -> RunExit {
        self.cpu.run(&mut self.mem, &mut self.bus as &mut dyn Bus, 1_000_000)
    }

    /// Runs and asserts the CPU halted normally.
    pub fn run_to_hlt(&mut self) -> &mut Self {
        let e = self.run();
        assert_eq!(e, RunExit::Halted, "expected HLT, got {e:?} at rip {:#x}", self.cpu.regs.rip);
        self
    }

    /// General-purpose register by index.
    pub fn gpr(&self, i: usize) -> u64 {
        self.cpu.regs.gpr[i]
    }

    /// RFLAGS with flags materialized.
    pub fn rflags(&self) -> u64 {
        self.cpu.regs.rflags()
    }
}
