//! Shared by `examples/loops.rs` and `benches/exec.rs`: a CPU in 64-bit
//! mode with 64 MiB of identity-mapped RAM (2 MiB pages), code at
//! [`CODE`], and the two benchmark loops as machine code.

use turtles_cpu::{Cpu, CpuidModel, Memory, Segment};
use x86::seg::{ar, sreg};
use x86::{Cr0, Cr4, Efer};

/// Where the loop is placed.
pub const CODE: u64 = 0x10000;

/// `l: add rax,rbx; xor rbx,rcx; add rcx,rdx; sub rdx,rsi; or rsi,rdi;
/// xor rdi,rax; add rax,rdi; and rbx,rsi; dec r8; jnz l; jmp l` — the ALU
/// loop of ../shared/bench.
pub const ALU_LOOP: [u8; 31] = [
    0x48, 0x01, 0xd8, 0x48, 0x31, 0xcb, 0x48, 0x01, 0xd1, 0x48, 0x29, 0xf2, 0x48, 0x09, 0xfe, 0x48, 0x31, 0xc7, 0x48,
    0x01, 0xf8, 0x48, 0x21, 0xf3, 0x49, 0xff, 0xc8, 0x75, 0xe3, 0xeb, 0xe1,
];

/// `l: mov rax,[rsi]; add rax,1; mov [rsi],rax; add rsi,4160; and rsi,r9;
/// or rsi,r10; dec r8; jnz l; jmp l` — a load/add/store stride; set RSI,
/// R9 and R10 with [`stride_setup`].
pub const STRIDE_LOOP: [u8; 30] = [
    0x48, 0x8b, 0x06, 0x48, 0x83, 0xc0, 0x01, 0x48, 0x89, 0x06, 0x48, 0x81, 0xc6, 0x40, 0x10, 0x00, 0x00, 0x4c, 0x21,
    0xce, 0x4c, 0x09, 0xd6, 0x49, 0xff, 0xc8, 0x75, 0xe4, 0xeb, 0xe2,
];

/// Points the stride loop at 16 MiB..32 MiB.
pub fn stride_setup(cpu: &mut Cpu) {
    cpu.regs.gpr[6] = 0x100_0000;
    cpu.regs.gpr[9] = 0x1ff_ffff;
    cpu.regs.gpr[10] = 0x100_0000;
}

/// A CPU in 64-bit mode running `code` from [`CODE`].
pub fn long_mode(code: &[u8]) -> (Cpu, Memory) {
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
