//! Differential tests: every case runs one instruction on the host CPU
//! (through `asm!`) and on Turtles' CPU in 64-bit mode, from the same
//! random registers, flags and memory, and compares all touched registers
//! in full (so zero- and non-extension of the upper halves is checked),
//! the memory buffer and the six status flags.
//!
//! Each case lists the flags the SDM leaves undefined. Turtles reproduces
//! what AMD Zen processors produce for those (the machine these tests were
//! developed on), so they are compared only when the host is an AMD
//! processor; on any other host only the defined flags are compared.
//!
//! Every case's machine code is decoded and formatted with iced and
//! checked against the assembly given to the host, so the two sides
//! cannot drift apart.
#![cfg(target_arch = "x86_64")]
#![allow(unsafe_code)]

use core::arch::asm;
use iced_x86::{Decoder, DecoderOptions, Formatter, IntelFormatter, MemorySizeOptions};
use turtles_cpu::{Activity, Bus, Cpu, CpuidModel, Memory, NullBus, Segment};
use x86::seg::{ar, sreg};
use x86::{Cr0, Cr4, Efer};

const CODE: u64 = 0x10000;
const DATA: u64 = 0x20000;
const STACK: u64 = 0x80000;
const PML4: u64 = 0x1000;
/// Size of the memory buffer of memory-operand cases; RDI points at its
/// middle.
const BUF: usize = 16;
const MID: u64 = (BUF as u64 / 2) * 8;

const CF: u64 = 1;
const PF: u64 = 1 << 2;
const AF: u64 = 1 << 4;
const ZF: u64 = 1 << 6;
const SF: u64 = 1 << 7;
const OF: u64 = 1 << 11;
const STATUS: u64 = CF | PF | AF | ZF | SF | OF;

/// Registers, flags and memory an instruction sees and leaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(C, align(16))]
struct St {
    mem: [u64; BUF],
    rax: u64,
    rcx: u64,
    rdx: u64,
    rbx: u64,
    rsi: u64,
    rdi: u64,
    r8: u64,
    flags: u64,
}

/// Runs the template between POPFQ and PUSHFQ with the registers of `St`
/// pinned. The `rbx` arm swaps RBX in and out around the template, since
/// RBX cannot be an `asm!` operand.
macro_rules! host_fn {
    ($t:literal) => {{
        fn run(s: &mut St) {
            // SAFETY: the template is one general-purpose instruction that
            // reads and writes only the registers bound here, RFLAGS, and
            // (memory forms) the buffer RDI points into, which `host`
            // points at `s.mem`. PUSH/POPFQ and PUSHFQ/POP are balanced,
            // and the flags loaded hold only status bits, IF and bit 1.
            unsafe {
                asm!(
                    "push {f}", "popfq", $t, "pushfq", "pop {f}",
                    f = inout(reg) s.flags,
                    inout("rax") s.rax, inout("rcx") s.rcx, inout("rdx") s.rdx,
                    inout("rsi") s.rsi, inout("rdi") s.rdi, inout("r8") s.r8,
                );
            }
        }
        run as fn(&mut St)
    }};
    (rbx $t:literal) => {{
        fn run(s: &mut St) {
            // SAFETY: as above; RBX is exchanged with a scratch register
            // before and after, so the compiler's RBX is preserved.
            unsafe {
                asm!(
                    "xchg {b}, rbx", "push {f}", "popfq", $t, "pushfq", "pop {f}", "xchg {b}, rbx",
                    f = inout(reg) s.flags, b = inout(reg) s.rbx,
                    inout("rax") s.rax, inout("rcx") s.rcx, inout("rdx") s.rdx,
                    inout("rsi") s.rsi, inout("rdi") s.rdi, inout("r8") s.r8,
                );
            }
        }
        run as fn(&mut St)
    }};
}

/// How a case's operands are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Gen {
    /// Everything random (edge-biased).
    Any,
    /// RCX is a shift count: mostly small, sometimes anything.
    Count,
    /// RCX is a bit offset within +-256 (memory bit strings).
    BitOffset,
    /// A division that does not fault: operand size and signedness.
    Div(u8, bool),
    /// CMPXCHG: the accumulator (of this size) often equals the
    /// destination (RSI, DL or the memory operand).
    Cmpxchg(u8),
    /// CMPXCHG8B/16B: rDX:rAX often equals the memory operand.
    CmpxchgWide(bool),
    /// BEXTR: RDX is a start/length control word, mostly in range.
    Bextr,
}

struct Case {
    asm: &'static str,
    bytes: &'static [u8],
    host: fn(&mut St),
    /// Flags the SDM leaves undefined.
    undefined: u64,
    gen: Gen,
    /// RDI points at the memory buffer.
    mem: bool,
}

macro_rules! case {
    ($asm:literal, [$($b:expr),*] $(, undef = $u:expr)? $(, gen = $g:expr)? $(, mem = $m:expr)?) => {
        Case {
            asm: $asm,
            bytes: &[$($b),*],
            host: host_fn!($asm),
            undefined: 0 $(| $u)?,
            gen: { #[allow(unused_variables)] let g = Gen::Any; $(let g = $g;)? g },
            mem: { #[allow(unused_variables)] let m = false; $(let m = $m;)? m },
        }
    };
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A value biased towards the edges of every operand size.
    fn val(&mut self) -> u64 {
        let small = self.below(4);
        let bits = [8u32, 16, 32, 64][self.below(4) as usize];
        let sign = 1u64 << (bits - 1);
        let upper = self.next() & !(u64::MAX >> (64 - bits));
        match self.below(10) {
            0 => small,
            1 => u64::MAX - small,
            2 => 1 << self.below(64),
            3 => upper | sign.wrapping_sub(small),
            4 => upper | sign.wrapping_add(small) & (u64::MAX >> (64 - bits)),
            5 => self.next() & 0xff,
            _ => self.next(),
        }
    }
}

fn host_is_amd() -> bool {
    let r = core::arch::x86_64::__cpuid(0);
    let mut v = [0u8; 12];
    v[..4].copy_from_slice(&r.ebx.to_le_bytes());
    v[4..8].copy_from_slice(&r.edx.to_le_bytes());
    v[8..].copy_from_slice(&r.ecx.to_le_bytes());
    &v == b"AuthenticAMD"
}

/// Draws the inputs of one case.
fn draw(rng: &mut Rng, gen: Gen) -> St {
    let mut s = St {
        mem: [0; BUF],
        rax: rng.val(),
        rcx: rng.val(),
        rdx: rng.val(),
        rbx: rng.val(),
        rsi: rng.val(),
        rdi: rng.val(),
        r8: rng.val(),
        flags: rng.next() & STATUS,
    };
    for w in &mut s.mem {
        *w = rng.val();
    }
    match gen {
        Gen::Any => {}
        Gen::Count => {
            s.rcx = match rng.below(4) {
                0 => rng.below(4),
                1 => rng.next(),
                _ => (rng.next() & !0xff) | rng.below(72),
            }
        }
        Gen::BitOffset => s.rcx = (rng.below(512) as i64 - 256) as u64,
        Gen::Div(size, signed) => loop {
            if fits_div(&s, size, signed) {
                break;
            }
            // Shrink the high half towards a representable quotient.
            let bits = 8 * u32::from(size);
            let m = u64::MAX >> (64 - bits);
            match rng.below(3) {
                0 => s.rdx = if signed && rng.below(2) == 0 { u64::MAX } else { 0 },
                1 => s.rdx = rng.val(),
                _ => s.rcx = rng.val(),
            }
            if size == 1 && rng.below(2) == 0 {
                // 8-bit: the dividend is AX.
                let ah = if signed && s.rax & 0x80 != 0 { 0xff } else { 0 };
                s.rax = (s.rax & !0xff00) | (ah << 8);
            }
            if rng.below(4) == 0 {
                s.rdx &= !m;
            }
        },
        Gen::Cmpxchg(size) => {
            if rng.below(2) == 0 {
                let m = u64::MAX >> (64 - 8 * u32::from(size));
                // 8-bit forms compare AL with DL, the others the
                // accumulator with RSI or the memory operand.
                let dest = match size {
                    1 => s.rdx,
                    _ => s.rsi,
                };
                let dest = if rng.below(2) == 0 { dest } else { s.mem[BUF / 2] };
                s.rax = (s.rax & !m) | (dest & m);
            }
        }
        Gen::Bextr => {
            if rng.below(4) != 0 {
                s.rdx = (s.rdx & !0xffff) | (rng.below(80) << 8) | rng.below(80);
            }
        }
        Gen::CmpxchgWide(wide) => {
            if rng.below(2) == 0 {
                if wide {
                    s.rax = s.mem[BUF / 2];
                    s.rdx = s.mem[BUF / 2 + 1];
                } else {
                    let v = s.mem[BUF / 2];
                    s.rax = (s.rax & !0xffff_ffff) | (v & 0xffff_ffff);
                    s.rdx = (s.rdx & !0xffff_ffff) | (v >> 32);
                }
            }
        }
    }
    s
}

/// Whether DIV/IDIV of this size by RCX (CL...) would not raise #DE.
fn fits_div(s: &St, size: u8, signed: bool) -> bool {
    let bits = 8 * u32::from(size);
    let m = u64::MAX >> (64 - bits);
    let divisor = s.rcx & m;
    if divisor == 0 {
        return false;
    }
    let (lo, hi) = if size == 1 { (s.rax & 0xff, (s.rax >> 8) & 0xff) } else { (s.rax & m, s.rdx & m) };
    let raw = (u128::from(hi) << bits) | u128::from(lo);
    if signed {
        let sh = 128 - 2 * bits;
        let dividend = ((raw << sh) as i128) >> sh;
        let d = ((u128::from(divisor) << (128 - bits)) as i128) >> (128 - bits);
        match dividend.checked_div(d) {
            Some(q) => q >= -(1i128 << (bits - 1)) && q < (1i128 << (bits - 1)),
            None => false,
        }
    } else {
        raw / u128::from(divisor) <= u128::from(m)
    }
}

/// A 64-bit machine with identity paging, as `testutil::Machine::long64`.
struct Turtle {
    cpu: Cpu,
    mem: Memory,
    bus: NullBus,
    loaded: Vec<u8>,
}

impl Turtle {
    fn new() -> Turtle {
        let mut mem = Memory::new(4 << 20).expect("4 MiB of RAM");
        mem.write_u64(PML4, 0x2000 | 3).unwrap();
        mem.write_u64(0x2000, 0x3000 | 3).unwrap();
        for i in 0..512u64 {
            mem.write_u64(0x3000 + i * 8, (i << 21) | 0x83).unwrap();
        }
        let mut cpu = Cpu::new(0, CpuidModel::turtles_max());
        let r = &mut cpu.regs;
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
        r.gpr[4] = STACK;
        cpu.state_changed();
        Turtle { cpu, mem, bus: NullBus::default(), loaded: Vec::new() }
    }

    /// Runs exactly one instruction of `case` from state `s`.
    fn exec(&mut self, case: &Case, s: &St) -> St {
        if self.loaded != case.bytes {
            self.mem.write(CODE, case.bytes).unwrap();
            self.loaded = case.bytes.to_vec();
        }
        let g = &mut self.cpu.regs.gpr;
        g[0] = s.rax;
        g[1] = s.rcx;
        g[2] = s.rdx;
        g[3] = s.rbx;
        g[6] = s.rsi;
        g[7] = if case.mem { DATA + MID } else { s.rdi };
        g[8] = s.r8;
        if case.mem {
            for (i, w) in s.mem.iter().enumerate() {
                self.mem.write_u64(DATA + 8 * i as u64, *w).unwrap();
            }
        }
        self.cpu.regs.rip = CODE;
        self.cpu.regs.set_rflags(s.flags | 2);
        self.cpu.activity = Activity::Active;
        let exit = self.cpu.run(&mut self.mem, &mut self.bus as &mut dyn Bus, 1);
        assert_eq!(
            self.cpu.regs.rip,
            CODE + case.bytes.len() as u64,
            "{}: did not retire ({exit:?}) from {s:x?}",
            case.asm
        );
        let g = &self.cpu.regs.gpr;
        let mut out = St {
            mem: [0; BUF],
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsi: g[6],
            rdi: if case.mem { g[7].wrapping_sub(DATA + MID) } else { g[7] },
            r8: g[8],
            flags: self.cpu.regs.rflags() & STATUS,
        };
        if case.mem {
            for (i, w) in out.mem.iter_mut().enumerate() {
                *w = self.mem.read_u64(DATA + 8 * i as u64).unwrap();
            }
        }
        out
    }
}

/// Runs `case` on the host from state `s`.
fn host(case: &Case, s: &St) -> St {
    let mut h = *s;
    h.flags = (s.flags & STATUS) | 0x202;
    if case.mem {
        h.rdi = h.mem.as_ptr() as u64 + MID;
    }
    (case.host)(&mut h);
    if case.mem {
        h.rdi = h.rdi.wrapping_sub(h.mem.as_ptr() as u64 + MID);
    }
    h.flags &= STATUS;
    h
}

/// Checks that `case.bytes` is the instruction `case.asm` names.
fn check_encoding(case: &Case) {
    let mut dec = Decoder::with_ip(64, case.bytes, CODE, DecoderOptions::NONE);
    let insn = dec.decode();
    assert!(!insn.is_invalid(), "{}: bytes do not decode", case.asm);
    assert_eq!(insn.len(), case.bytes.len(), "{}: trailing bytes", case.asm);
    let mut f = IntelFormatter::new();
    f.options_mut().set_hex_prefix("0x");
    f.options_mut().set_hex_suffix("");
    f.options_mut().set_uppercase_hex(false);
    f.options_mut().set_signed_immediate_operands(true);
    f.options_mut().set_memory_size_options(MemorySizeOptions::Always);
    let mut text = String::new();
    f.format(&insn, &mut text);
    let norm = |s: &str| s.split_whitespace().collect::<String>().to_lowercase();
    assert_eq!(norm(&text), norm(case.asm), "encoding of {} decodes as {text}", case.asm);
}

/// Runs every case `n` times (or `TURTLES_HOST_CASES` times) from random
/// states and compares.
fn run_cases(seed: u64, cases: &[Case], n: usize) {
    let n = std::env::var("TURTLES_HOST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(n);
    let amd = host_is_amd();
    let mut t = Turtle::new();
    let mut rng = Rng(seed);
    for case in cases {
        check_encoding(case);
        let compared = if amd { STATUS } else { STATUS & !case.undefined };
        for _ in 0..n {
            let s = draw(&mut rng, case.gen);
            let want = host(case, &s);
            let got = t.exec(case, &s);
            let (mut w, mut g) = (want, got);
            w.flags &= compared;
            g.flags &= compared;
            if !case.mem {
                w.mem = [0; BUF];
                g.mem = [0; BUF];
            }
            assert_eq!(
                g,
                w,
                "{}\n  input  {:x?}\n  host flags {:#x}, turtles flags {:#x} (diff {:#x})",
                case.asm,
                s,
                want.flags,
                got.flags,
                (want.flags ^ got.flags) & compared
            );
        }
    }
}

const N: usize = 3000;

#[test]
fn alu() {
    let cases = [
        case!("add al, cl", [0x00, 0xc8]),
        case!("add ah, cl", [0x00, 0xcc]),
        case!("add ax, cx", [0x66, 0x01, 0xc8]),
        case!("add eax, ecx", [0x01, 0xc8]),
        case!("add rax, rcx", [0x48, 0x01, 0xc8]),
        case!("adc al, cl", [0x10, 0xc8]),
        case!("adc ax, cx", [0x66, 0x11, 0xc8]),
        case!("adc eax, ecx", [0x11, 0xc8]),
        case!("adc rax, rcx", [0x48, 0x11, 0xc8]),
        case!("sub al, cl", [0x28, 0xc8]),
        case!("sub ax, cx", [0x66, 0x29, 0xc8]),
        case!("sub eax, ecx", [0x29, 0xc8]),
        case!("sub rax, rcx", [0x48, 0x29, 0xc8]),
        case!("sbb al, cl", [0x18, 0xc8]),
        case!("sbb ax, cx", [0x66, 0x19, 0xc8]),
        case!("sbb eax, ecx", [0x19, 0xc8]),
        case!("sbb rax, rcx", [0x48, 0x19, 0xc8]),
        case!("cmp al, cl", [0x38, 0xc8]),
        case!("cmp ax, cx", [0x66, 0x39, 0xc8]),
        case!("cmp eax, ecx", [0x39, 0xc8]),
        case!("cmp rax, rcx", [0x48, 0x39, 0xc8]),
        case!("and al, cl", [0x20, 0xc8], undef = AF),
        case!("and ax, cx", [0x66, 0x21, 0xc8], undef = AF),
        case!("and eax, ecx", [0x21, 0xc8], undef = AF),
        case!("and rax, rcx", [0x48, 0x21, 0xc8], undef = AF),
        case!("or al, cl", [0x08, 0xc8], undef = AF),
        case!("or ax, cx", [0x66, 0x09, 0xc8], undef = AF),
        case!("or eax, ecx", [0x09, 0xc8], undef = AF),
        case!("or rax, rcx", [0x48, 0x09, 0xc8], undef = AF),
        case!("xor al, cl", [0x30, 0xc8], undef = AF),
        case!("xor ax, cx", [0x66, 0x31, 0xc8], undef = AF),
        case!("xor eax, ecx", [0x31, 0xc8], undef = AF),
        case!("xor rax, rcx", [0x48, 0x31, 0xc8], undef = AF),
        case!("test eax, ecx", [0x85, 0xc8], undef = AF),
        case!("inc al", [0xfe, 0xc0]),
        case!("inc ax", [0x66, 0xff, 0xc0]),
        case!("inc eax", [0xff, 0xc0]),
        case!("inc rax", [0x48, 0xff, 0xc0]),
        case!("dec al", [0xfe, 0xc8]),
        case!("dec ax", [0x66, 0xff, 0xc8]),
        case!("dec eax", [0xff, 0xc8]),
        case!("dec rax", [0x48, 0xff, 0xc8]),
        case!("neg al", [0xf6, 0xd8]),
        case!("neg ax", [0x66, 0xf7, 0xd8]),
        case!("neg eax", [0xf7, 0xd8]),
        case!("neg rax", [0x48, 0xf7, 0xd8]),
        case!("add dword ptr [rdi], ecx", [0x01, 0x0f], mem = true),
        case!("sbb qword ptr [rdi], rcx", [0x48, 0x19, 0x0f], mem = true),
        case!("add al, 0x7f", [0x04, 0x7f]),
        case!("sub eax, -2", [0x83, 0xe8, 0xfe]),
    ];
    run_cases(1, &cases, N);
}

/// Shift-family cases for one register operand size: undefined flags per
/// the SDM's SAL/SAR/SHL/SHR and RCL/RCR/ROL/ROR pages.
#[test]
fn shifts() {
    let sh = AF | OF;
    let cases = [
        case!("shl al, cl", [0xd2, 0xe0], undef = sh | CF, gen = Gen::Count),
        case!("shl ah, cl", [0xd2, 0xe4], undef = sh | CF, gen = Gen::Count),
        case!("shl ax, cl", [0x66, 0xd3, 0xe0], undef = sh | CF, gen = Gen::Count),
        case!("shl eax, cl", [0xd3, 0xe0], undef = sh, gen = Gen::Count),
        case!("shl rax, cl", [0x48, 0xd3, 0xe0], undef = sh, gen = Gen::Count),
        // D3 /6, the undocumented alias of SHL (iced names it SHL too; the
        // host runs D3 /4).
        case!("shl eax, cl", [0xd3, 0xf0], undef = sh, gen = Gen::Count),
        case!("shr al, cl", [0xd2, 0xe8], undef = sh | CF, gen = Gen::Count),
        case!("shr ax, cl", [0x66, 0xd3, 0xe8], undef = sh | CF, gen = Gen::Count),
        case!("shr eax, cl", [0xd3, 0xe8], undef = sh, gen = Gen::Count),
        case!("shr rax, cl", [0x48, 0xd3, 0xe8], undef = sh, gen = Gen::Count),
        case!("sar al, cl", [0xd2, 0xf8], undef = sh, gen = Gen::Count),
        case!("sar ax, cl", [0x66, 0xd3, 0xf8], undef = sh, gen = Gen::Count),
        case!("sar eax, cl", [0xd3, 0xf8], undef = sh, gen = Gen::Count),
        case!("sar rax, cl", [0x48, 0xd3, 0xf8], undef = sh, gen = Gen::Count),
        case!("rol al, cl", [0xd2, 0xc0], undef = OF, gen = Gen::Count),
        case!("rol ax, cl", [0x66, 0xd3, 0xc0], undef = OF, gen = Gen::Count),
        case!("rol eax, cl", [0xd3, 0xc0], undef = OF, gen = Gen::Count),
        case!("rol rax, cl", [0x48, 0xd3, 0xc0], undef = OF, gen = Gen::Count),
        case!("ror al, cl", [0xd2, 0xc8], undef = OF, gen = Gen::Count),
        case!("ror ax, cl", [0x66, 0xd3, 0xc8], undef = OF, gen = Gen::Count),
        case!("ror eax, cl", [0xd3, 0xc8], undef = OF, gen = Gen::Count),
        case!("ror rax, cl", [0x48, 0xd3, 0xc8], undef = OF, gen = Gen::Count),
        case!("rcl al, cl", [0xd2, 0xd0], undef = OF, gen = Gen::Count),
        case!("rcl ax, cl", [0x66, 0xd3, 0xd0], undef = OF, gen = Gen::Count),
        case!("rcl eax, cl", [0xd3, 0xd0], undef = OF, gen = Gen::Count),
        case!("rcl rax, cl", [0x48, 0xd3, 0xd0], undef = OF, gen = Gen::Count),
        case!("rcr al, cl", [0xd2, 0xd8], undef = OF, gen = Gen::Count),
        case!("rcr ax, cl", [0x66, 0xd3, 0xd8], undef = OF, gen = Gen::Count),
        case!("rcr eax, cl", [0xd3, 0xd8], undef = OF, gen = Gen::Count),
        case!("rcr rax, cl", [0x48, 0xd3, 0xd8], undef = OF, gen = Gen::Count),
        case!("shl eax, 1", [0xd1, 0xe0], undef = AF),
        case!("shr rax, 1", [0x48, 0xd1, 0xe8], undef = AF),
        case!("sar ax, 1", [0x66, 0xd1, 0xf8], undef = AF),
        case!("rcr al, 1", [0xd0, 0xd8]),
        case!("rol eax, 7", [0xc1, 0xc0, 0x07], undef = OF),
        case!("shl rax, 0x3f", [0x48, 0xc1, 0xe0, 0x3f], undef = sh),
        case!("sar al, 0x1f", [0xc0, 0xf8, 0x1f], undef = sh),
        case!("shl dword ptr [rdi], cl", [0xd3, 0x27], undef = sh, gen = Gen::Count, mem = true),
        case!("rcl word ptr [rdi], cl", [0x66, 0xd3, 0x17], undef = OF, gen = Gen::Count, mem = true),
        case!("shld ax, si, cl", [0x66, 0x0f, 0xa5, 0xf0], undef = sh | CF | SF | ZF | PF, gen = Gen::Count),
        case!("shld eax, esi, cl", [0x0f, 0xa5, 0xf0], undef = sh, gen = Gen::Count),
        case!("shld rax, rsi, cl", [0x48, 0x0f, 0xa5, 0xf0], undef = sh, gen = Gen::Count),
        case!("shrd ax, si, cl", [0x66, 0x0f, 0xad, 0xf0], undef = sh | CF | SF | ZF | PF, gen = Gen::Count),
        case!("shrd eax, esi, cl", [0x0f, 0xad, 0xf0], undef = sh, gen = Gen::Count),
        case!("shrd rax, rsi, cl", [0x48, 0x0f, 0xad, 0xf0], undef = sh, gen = Gen::Count),
        case!("shld eax, esi, 1", [0x0f, 0xa4, 0xf0, 0x01], undef = AF),
        case!("shrd rax, rsi, 0x21", [0x48, 0x0f, 0xac, 0xf0, 0x21], undef = sh),
        case!("shrd dword ptr [rdi], esi, cl", [0x0f, 0xad, 0x37], undef = sh, gen = Gen::Count, mem = true),
        case!("rcl al, 9", [0xc0, 0xd0, 0x09], undef = OF),
        case!("rol ax, 0x11", [0x66, 0xc1, 0xc0, 0x11], undef = OF),
        case!("shr eax, 0x21", [0xc1, 0xe8, 0x21], undef = AF),
        case!("shrd ax, si, 0x14", [0x66, 0x0f, 0xac, 0xf0, 0x14], undef = STATUS),
        case!("shr ah, cl", [0xd2, 0xec], undef = sh | CF, gen = Gen::Count),
        case!("rcl dh, cl", [0xd2, 0xd6], undef = OF, gen = Gen::Count),
    ];
    run_cases(2, &cases, N);
}

#[test]
fn muldiv() {
    let m = SF | ZF | AF | PF;
    let cases = [
        case!("mul cl", [0xf6, 0xe1], undef = m),
        case!("mul cx", [0x66, 0xf7, 0xe1], undef = m),
        case!("mul ecx", [0xf7, 0xe1], undef = m),
        case!("mul rcx", [0x48, 0xf7, 0xe1], undef = m),
        case!("imul cl", [0xf6, 0xe9], undef = m),
        case!("imul cx", [0x66, 0xf7, 0xe9], undef = m),
        case!("imul ecx", [0xf7, 0xe9], undef = m),
        case!("imul rcx", [0x48, 0xf7, 0xe9], undef = m),
        case!("imul ax, cx", [0x66, 0x0f, 0xaf, 0xc1], undef = m),
        case!("imul eax, ecx", [0x0f, 0xaf, 0xc1], undef = m),
        case!("imul rax, rcx", [0x48, 0x0f, 0xaf, 0xc1], undef = m),
        case!("imul eax, ecx, -3", [0x6b, 0xc1, 0xfd], undef = m),
        case!("imul ax, cx, 0x1234", [0x66, 0x69, 0xc1, 0x34, 0x12], undef = m),
        case!("imul rax, rcx, 0x12345678", [0x48, 0x69, 0xc1, 0x78, 0x56, 0x34, 0x12], undef = m),
        case!("imul rax, qword ptr [rdi]", [0x48, 0x0f, 0xaf, 0x07], undef = m, mem = true),
        case!("mul dword ptr [rdi]", [0xf7, 0x27], undef = m, mem = true),
        case!("mul dh", [0xf6, 0xe6], undef = m),
        case!("imul ecx, dword ptr [rdi], 0x7fff", [0x69, 0x0f, 0xff, 0x7f, 0x00, 0x00], undef = m, mem = true),
        case!("div cl", [0xf6, 0xf1], undef = STATUS, gen = Gen::Div(1, false)),
        case!("div cx", [0x66, 0xf7, 0xf1], undef = STATUS, gen = Gen::Div(2, false)),
        case!("div ecx", [0xf7, 0xf1], undef = STATUS, gen = Gen::Div(4, false)),
        case!("div rcx", [0x48, 0xf7, 0xf1], undef = STATUS, gen = Gen::Div(8, false)),
        case!("idiv cl", [0xf6, 0xf9], undef = STATUS, gen = Gen::Div(1, true)),
        case!("idiv cx", [0x66, 0xf7, 0xf9], undef = STATUS, gen = Gen::Div(2, true)),
        case!("idiv ecx", [0xf7, 0xf9], undef = STATUS, gen = Gen::Div(4, true)),
        case!("idiv rcx", [0x48, 0xf7, 0xf9], undef = STATUS, gen = Gen::Div(8, true)),
    ];
    run_cases(3, &cases, N);
}

#[test]
fn bit_ops() {
    let bt = OF | SF | AF | PF;
    let scan = CF | OF | SF | AF | PF;
    let mut cases = vec![
        case!("bt ax, cx", [0x66, 0x0f, 0xa3, 0xc8], undef = bt),
        case!("bt eax, ecx", [0x0f, 0xa3, 0xc8], undef = bt),
        case!("bt rax, rcx", [0x48, 0x0f, 0xa3, 0xc8], undef = bt),
        case!("bts ax, cx", [0x66, 0x0f, 0xab, 0xc8], undef = bt),
        case!("bts eax, ecx", [0x0f, 0xab, 0xc8], undef = bt),
        case!("bts rax, rcx", [0x48, 0x0f, 0xab, 0xc8], undef = bt),
        case!("btr ax, cx", [0x66, 0x0f, 0xb3, 0xc8], undef = bt),
        case!("btr eax, ecx", [0x0f, 0xb3, 0xc8], undef = bt),
        case!("btr rax, rcx", [0x48, 0x0f, 0xb3, 0xc8], undef = bt),
        case!("btc ax, cx", [0x66, 0x0f, 0xbb, 0xc8], undef = bt),
        case!("btc eax, ecx", [0x0f, 0xbb, 0xc8], undef = bt),
        case!("btc rax, rcx", [0x48, 0x0f, 0xbb, 0xc8], undef = bt),
        case!("bt eax, 0x25", [0x0f, 0xba, 0xe0, 0x25], undef = bt),
        case!("bts rax, 0x3f", [0x48, 0x0f, 0xba, 0xe8, 0x3f], undef = bt),
        case!("btr ax, 0x13", [0x66, 0x0f, 0xba, 0xf0, 0x13], undef = bt),
        case!("btc eax, 7", [0x0f, 0xba, 0xf8, 0x07], undef = bt),
        case!("bt word ptr [rdi], cx", [0x66, 0x0f, 0xa3, 0x0f], undef = bt, gen = Gen::BitOffset, mem = true),
        case!("bt dword ptr [rdi], ecx", [0x0f, 0xa3, 0x0f], undef = bt, gen = Gen::BitOffset, mem = true),
        case!("bts qword ptr [rdi], rcx", [0x48, 0x0f, 0xab, 0x0f], undef = bt, gen = Gen::BitOffset, mem = true),
        case!("btr dword ptr [rdi], ecx", [0x0f, 0xb3, 0x0f], undef = bt, gen = Gen::BitOffset, mem = true),
        case!("btc word ptr [rdi], cx", [0x66, 0x0f, 0xbb, 0x0f], undef = bt, gen = Gen::BitOffset, mem = true),
        case!("lock bts dword ptr [rdi], ecx", [0xf0, 0x0f, 0xab, 0x0f], undef = bt, gen = Gen::BitOffset, mem = true),
        case!("btc qword ptr [rdi], 0x2a", [0x48, 0x0f, 0xba, 0x3f, 0x2a], undef = bt, mem = true),
        case!("bsf ax, cx", [0x66, 0x0f, 0xbc, 0xc1], undef = scan),
        case!("bsf eax, ecx", [0x0f, 0xbc, 0xc1], undef = scan),
        case!("bsf rax, rcx", [0x48, 0x0f, 0xbc, 0xc1], undef = scan),
        case!("bsr ax, cx", [0x66, 0x0f, 0xbd, 0xc1], undef = scan),
        case!("bsr eax, ecx", [0x0f, 0xbd, 0xc1], undef = scan),
        case!("bsr rax, rcx", [0x48, 0x0f, 0xbd, 0xc1], undef = scan),
        case!("bsf eax, dword ptr [rdi]", [0x0f, 0xbc, 0x07], undef = scan, mem = true),
        case!("bsr ax, word ptr [rdi]", [0x66, 0x0f, 0xbd, 0x07], undef = scan, mem = true),
    ];
    if std::arch::is_x86_feature_detected!("popcnt") {
        cases.extend([
            case!("popcnt ax, cx", [0x66, 0xf3, 0x0f, 0xb8, 0xc1]),
            case!("popcnt eax, ecx", [0xf3, 0x0f, 0xb8, 0xc1]),
            case!("popcnt rax, rcx", [0xf3, 0x48, 0x0f, 0xb8, 0xc1]),
            case!("popcnt rax, qword ptr [rdi]", [0xf3, 0x48, 0x0f, 0xb8, 0x07], mem = true),
        ]);
    }
    if std::arch::is_x86_feature_detected!("lzcnt") {
        let u = OF | SF | PF | AF;
        cases.extend([
            case!("lzcnt ax, cx", [0x66, 0xf3, 0x0f, 0xbd, 0xc1], undef = u),
            case!("lzcnt eax, ecx", [0xf3, 0x0f, 0xbd, 0xc1], undef = u),
            case!("lzcnt rax, rcx", [0xf3, 0x48, 0x0f, 0xbd, 0xc1], undef = u),
            case!("lzcnt eax, dword ptr [rdi]", [0xf3, 0x0f, 0xbd, 0x07], undef = u, mem = true),
        ]);
    }
    if std::arch::is_x86_feature_detected!("bmi1") {
        let u = OF | SF | PF | AF;
        cases.extend([
            case!("tzcnt ax, cx", [0x66, 0xf3, 0x0f, 0xbc, 0xc1], undef = u),
            case!("tzcnt eax, ecx", [0xf3, 0x0f, 0xbc, 0xc1], undef = u),
            case!("tzcnt rax, rcx", [0xf3, 0x48, 0x0f, 0xbc, 0xc1], undef = u),
            case!("tzcnt ax, word ptr [rdi]", [0x66, 0xf3, 0x0f, 0xbc, 0x07], undef = u, mem = true),
            case!("andn eax, ecx, edx", [0xc4, 0xe2, 0x70, 0xf2, 0xc2], undef = AF | PF),
            case!("andn rax, rcx, qword ptr [rdi]", [0xc4, 0xe2, 0xf0, 0xf2, 0x07], undef = AF | PF, mem = true),
            case!("bextr eax, ecx, edx", [0xc4, 0xe2, 0x68, 0xf7, 0xc1], undef = AF | SF | PF, gen = Gen::Bextr),
            case!("bextr rax, rcx, rdx", [0xc4, 0xe2, 0xe8, 0xf7, 0xc1], undef = AF | SF | PF, gen = Gen::Bextr),
            case!("blsi eax, ecx", [0xc4, 0xe2, 0x78, 0xf3, 0xd9], undef = AF | PF),
            case!("blsmsk rax, rcx", [0xc4, 0xe2, 0xf8, 0xf3, 0xd1], undef = AF | PF),
            case!("blsr eax, dword ptr [rdi]", [0xc4, 0xe2, 0x78, 0xf3, 0x0f], undef = AF | PF, mem = true),
        ]);
    }
    run_cases(4, &cases, N);
}

#[test]
fn atomics() {
    let mut cases = vec![
        case!("xadd dl, cl", [0x0f, 0xc0, 0xca]),
        case!("xadd si, cx", [0x66, 0x0f, 0xc1, 0xce]),
        case!("xadd esi, ecx", [0x0f, 0xc1, 0xce]),
        case!("xadd rsi, rcx", [0x48, 0x0f, 0xc1, 0xce]),
        case!("xadd ecx, ecx", [0x0f, 0xc1, 0xc9]),
        case!("xadd dword ptr [rdi], ecx", [0x0f, 0xc1, 0x0f], mem = true),
        case!("lock xadd qword ptr [rdi], rcx", [0xf0, 0x48, 0x0f, 0xc1, 0x0f], mem = true),
        case!("xadd byte ptr [rdi], cl", [0x0f, 0xc0, 0x0f], mem = true),
        case!("cmpxchg dl, cl", [0x0f, 0xb0, 0xca], gen = Gen::Cmpxchg(1)),
        case!("cmpxchg si, cx", [0x66, 0x0f, 0xb1, 0xce], gen = Gen::Cmpxchg(2)),
        case!("cmpxchg esi, ecx", [0x0f, 0xb1, 0xce], gen = Gen::Cmpxchg(4)),
        case!("cmpxchg rsi, rcx", [0x48, 0x0f, 0xb1, 0xce], gen = Gen::Cmpxchg(8)),
        case!("cmpxchg eax, ecx", [0x0f, 0xb1, 0xc8], gen = Gen::Cmpxchg(4)),
        case!("cmpxchg ecx, eax", [0x0f, 0xb1, 0xc1], gen = Gen::Cmpxchg(4)),
        case!("cmpxchg dword ptr [rdi], ecx", [0x0f, 0xb1, 0x0f], gen = Gen::Cmpxchg(4), mem = true),
        case!("lock cmpxchg qword ptr [rdi], rcx", [0xf0, 0x48, 0x0f, 0xb1, 0x0f], gen = Gen::Cmpxchg(8), mem = true),
        case!("cmpxchg byte ptr [rdi], cl", [0x0f, 0xb0, 0x0f], gen = Gen::Cmpxchg(1), mem = true),
        case!("cmpxchg word ptr [rdi], cx", [0x66, 0x0f, 0xb1, 0x0f], gen = Gen::Cmpxchg(2), mem = true),
    ];
    cases.push(Case {
        asm: "lock cmpxchg8b qword ptr [rdi]",
        bytes: &[0xf0, 0x0f, 0xc7, 0x0f],
        host: host_fn!(rbx "lock cmpxchg8b qword ptr [rdi]"),
        undefined: 0,
        gen: Gen::CmpxchgWide(false),
        mem: true,
    });
    if std::arch::is_x86_feature_detected!("cmpxchg16b") {
        cases.push(Case {
            asm: "cmpxchg16b xmmword ptr [rdi]",
            bytes: &[0x48, 0x0f, 0xc7, 0x0f],
            host: host_fn!(rbx "cmpxchg16b xmmword ptr [rdi]"),
            undefined: 0,
            gen: Gen::CmpxchgWide(true),
            mem: true,
        });
    }
    run_cases(5, &cases, N);
}
