//! Hostile L1 (issue 6, item 9): a guest hypervisor that feeds L0's nested
//! VMX emulation random VMCS contents and random VMX instructions.
//!
//! Each case builds a plain ELF64 kernel (entered in long mode with the
//! first 4 GiB identity mapped, no IDT, so any exception in L1 is a triple
//! fault) whose code, produced by the small x86 builder below, does:
//!
//! 0. on a second start (a VM exit to a random HOST_RIP below the code
//!    slides through zeros into the entry point), go to step 6;
//! 1. CR4.VMXE, IA32_FEATURE_CONTROL (lock + VMX outside SMX unless
//!    locked), the revision identifier from IA32_VMX_BASIC into the VMXON
//!    and VMCS regions, VMXON, VMCLEAR, VMPTRLD;
//! 2. optionally a sane baseline vmcs12 (controls at their allowed-0
//!    settings, host state returning to step 5, a 64-bit L2 sharing L1's
//!    paging), so that random fields reach deep into VM entry and L2 runs;
//! 3. random VMWRITEs of (field, value) pairs;
//! 4. VMLAUNCH (L2 runs a few random instructions, then isa-debug-exit);
//! 5. random VMX instructions with random operands (VMREAD, VMWRITE,
//!    VMPTRLD, VMCLEAR, VMPTRST, VMLAUNCH, VMRESUME, INVEPT, INVVPID,
//!    VMFUNC, VMXOFF, VMXON, VMCALL), re-entered at most a few times from
//!    VM exits through a counter;
//! 6. isa-debug-exit with status 0x10 (33).
//!
//! The run must end in an exit a guest may cause (debug exit, triple
//! fault, halt, reset, power-off): never a host panic (it would fail the
//! test) and never the wall-clock timeout (an L0 hang; every path of the
//! generated code terminates quickly).
//!
//! The cases come from a seeded SplitMix64 generator rather than proptest
//! (proptest is not a dev-dependency of this crate); a failure prints the
//! seed and the case, and `HOSTILE_L1_SEED=<seed> HOSTILE_L1_CASES=1`
//! replays exactly that case; with `HOSTILE_L1_DUMP=<file>` its kernel is
//! also written out, to run with `turtles run <file> --cpu max`.

use std::borrow::Cow;
use std::time::Duration;
use turtles_vmm::{CpuPolicy, ExitKind, ImageSource, SharedWriter, Vm, VmConfig};

/// Where the kernel's one segment is loaded and entered.
const CODE: u64 = 0x20_0000;
/// The VMXON region.
const VMXON: u64 = 0x30_0000;
/// The VMCS region made current in step 1.
const VMCS: u64 = 0x30_1000;
/// A second page with a valid revision identifier (a random VMPTRLD target).
const VMCS_B: u64 = 0x30_2000;
/// The 8-byte memory operand of VMXON/VMCLEAR/VMPTRLD/VMPTRST, and the
/// 16-byte INVEPT/INVVPID descriptor.
const SLOT: u64 = 0x30_3000;
/// The VM's RAM size.
const RAM: u64 = 4 << 20;
/// Re-entry counter of step 5.
const COUNTER: u64 = 0x30_3100;
/// L2's code.
const L2_CODE: u64 = 0x30_4000;
/// Top of L1's stack after a VM exit (HOST_RSP) and of L2's stack.
const HOST_STACK: u64 = 0x30_8000;
const L2_STACK: u64 = 0x30_a000;
/// Count of starts from the entry point (a random HOST_RIP below the code
/// slides through zeros into it).
const ENTRY_COUNTER: u64 = 0x30_3108;
/// Maximum passes through step 5.
const MAX_REENTRIES: i8 = 6;

const RAX: u8 = 0;
const RCX: u8 = 1;
const RDX: u8 = 2;
const RBX: u8 = 3;

/// A tiny x86-64 assembler for the handful of instructions used here.
#[derive(Default)]
struct Asm {
    code: Vec<u8>,
}

impl Asm {
    fn here(&self) -> u64 {
        CODE + self.code.len() as u64
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.code.extend_from_slice(b);
        self
    }
    /// `mov r64, imm64` (REX.W B8+r io); returns the immediate's offset.
    fn mov_imm(&mut self, r: u8, v: u64) -> usize {
        self.bytes(&[0x48, 0xb8 + r]);
        let at = self.code.len();
        self.bytes(&v.to_le_bytes());
        at
    }
    fn patch(&mut self, at: usize, v: u64) {
        self.code[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }
    /// `rdmsr` of `msr` (mov ecx, imm32; 0F 32).
    fn rdmsr(&mut self, msr: u32) {
        self.bytes(&[0xb9]).bytes(&msr.to_le_bytes()).bytes(&[0x0f, 0x32]);
    }
    /// `vmwrite rdx, rax` (0F 79 /r, reg = field in RDX, r/m = value in
    /// RAX) with RDX = `field`.
    fn vmwrite_rax(&mut self, field: u64) {
        self.mov_imm(RDX, field);
        self.bytes(&[0x0f, 0x79, 0xd0]);
    }
    /// `vmwrite` of an immediate value.
    fn vmwrite(&mut self, field: u64, value: u64) {
        self.mov_imm(RAX, value);
        self.vmwrite_rax(field);
    }
    /// `vmwrite` of the allowed-0 settings (low half) of capability MSR
    /// `msr` ORed with `bits`: rdmsr; or eax, imm32 (0D id); vmwrite.
    fn vmwrite_ctl(&mut self, field: u64, msr: u32, bits: u32) {
        self.rdmsr(msr);
        self.bytes(&[0x0d]).bytes(&bits.to_le_bytes());
        self.vmwrite_rax(field);
    }
    /// Stores `pa` in SLOT and leaves RBX = SLOT, the memory operand.
    fn slot(&mut self, pa: u64) {
        self.mov_imm(RBX, SLOT);
        self.mov_imm(RAX, pa);
        self.bytes(&[0x48, 0x89, 0x03]); // mov [rbx], rax
    }
    /// isa-debug-exit with `v` (mov al, v; out 0xf4, al), then cli; hlt.
    fn debug_exit(&mut self, v: u8) {
        self.bytes(&[0xb0, v, 0xe6, 0xf4, 0xfa, 0xf4]);
    }
}

/// VMCS field encodings (SDM Vol. 3C, appendix B), every one the guest
/// runtime knows plus a few more; random writes pick from these most of
/// the time so that they get past VMfailValid 12.
const FIELDS: &[u64] = &[
    0x0000, 0x0002, 0x0004, 0x0800, 0x0802, 0x0804, 0x0806, 0x0808, 0x080a, 0x080c, 0x080e, 0x0810, 0x0c00, 0x0c02,
    0x0c04, 0x0c06, 0x0c08, 0x0c0a, 0x0c0c, 0x2000, 0x2002, 0x2004, 0x2006, 0x2008, 0x200a, 0x200c, 0x2010, 0x2012,
    0x2014, 0x2016, 0x2018, 0x201a, 0x201c, 0x2024, 0x2026, 0x202c, 0x202e, 0x2032, 0x2400, 0x2800, 0x2802, 0x2804,
    0x2806, 0x2808, 0x280a, 0x2c00, 0x2c02, 0x2c04, 0x4000, 0x4002, 0x4004, 0x4006, 0x4008, 0x400a, 0x400c, 0x400e,
    0x4010, 0x4012, 0x4014, 0x4016, 0x4018, 0x401a, 0x401c, 0x401e, 0x4020, 0x4022, 0x4400, 0x4402, 0x4404, 0x4406,
    0x4408, 0x440a, 0x440c, 0x440e, 0x4800, 0x4802, 0x4804, 0x4806, 0x4808, 0x480a, 0x480c, 0x480e, 0x4810, 0x4812,
    0x4814, 0x4816, 0x4818, 0x481a, 0x481c, 0x481e, 0x4820, 0x4822, 0x4824, 0x4826, 0x4828, 0x482a, 0x482e, 0x4c00,
    0x6000, 0x6002, 0x6004, 0x6006, 0x6008, 0x600a, 0x600c, 0x600e, 0x6400, 0x6402, 0x6404, 0x6406, 0x6408, 0x640a,
    0x6800, 0x6802, 0x6804, 0x6806, 0x6808, 0x680a, 0x680c, 0x680e, 0x6810, 0x6812, 0x6814, 0x6816, 0x6818, 0x681a,
    0x681c, 0x681e, 0x6820, 0x6822, 0x6824, 0x6826, 0x6c00, 0x6c02, 0x6c04, 0x6c06, 0x6c08, 0x6c0a, 0x6c0c, 0x6c0e,
    0x6c10, 0x6c12, 0x6c14, 0x6c16,
];

/// The source of choices: the bytes of a fuzz input while they last, then
/// SplitMix64 from a seed (small, seedable, good enough to pick cases).
pub struct Rng {
    state: u64,
    input: Vec<u8>,
}

impl Rng {
    /// Choices from `seed` alone.
    pub fn seeded(seed: u64) -> Rng {
        Rng { state: seed, input: Vec::new() }
    }
    /// Choices from `input` (eight bytes each), then from a fixed seed.
    pub fn from_input(input: &[u8]) -> Rng {
        let mut input = input.to_vec();
        input.reverse();
        Rng { state: 0, input }
    }
    fn next(&mut self) -> u64 {
        if !self.input.is_empty() {
            let n = self.input.len().min(8);
            let mut b = [0u8; 8];
            for (i, byte) in self.input.drain(self.input.len() - n..).rev().enumerate() {
                b[i] = byte;
            }
            return u64::from_le_bytes(b);
        }
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    /// A physical address: mostly interesting ones (our regions, RAM
    /// edges, L0-private memory, MMIO, unaligned, beyond MAXPHYADDR).
    fn pa(&mut self) -> u64 {
        const PAS: &[u64] = &[
            VMXON,
            VMCS,
            VMCS_B,
            SLOT,
            0,
            0x1000,
            0x2000,
            0x7f_f000,
            0x80_0000,
            0xfee0_0000,
            0xfec0_0000,
            0xfc_0000_0000,
            0xfc_0000_1000,
            0xff_ffff_f000,
            0x100_0000_0000,
            0x30_1001,
            u64::MAX,
            1 << 63,
        ];
        if self.chance(4) {
            (self.next() & !0xfff) >> self.below(40)
        } else {
            PAS[self.below(PAS.len() as u64) as usize]
        }
    }
    fn field(&mut self) -> u64 {
        match self.below(16) {
            0 => self.next() & 0xffff,
            1 => self.next(),
            _ => FIELDS[self.below(FIELDS.len() as u64) as usize],
        }
    }
    /// A value for `field`. HOST_RIP and GUEST_RIP never point into RAM
    /// (4 MiB): L1 or L2 running from a random place there (L1's code, the
    /// VMCS regions L0 writes vmcs12 into) can loop forever, a hang of the
    /// test kernel and not of L0. Above RAM the fetch faults at once.
    fn value_for(&mut self, field: u64) -> u64 {
        let v = self.value();
        if (field == 0x6c16 || field == 0x681e) && v < RAM {
            v + RAM
        } else {
            v
        }
    }
    fn value(&mut self) -> u64 {
        match self.below(8) {
            0 => 0,
            1 => u64::MAX,
            2 => self.pa(),
            3 => 1 << self.below(64),
            4 => !(1 << self.below(64)),
            5 => self.next() & 0xffff_ffff,
            _ => self.next(),
        }
    }
}

/// One generated case: the kernel and, for the failure message, what it
/// does.
pub struct Case {
    /// The ELF64 image.
    pub kernel: Vec<u8>,
    /// The baseline, the VMX operations and L2's code, one per line.
    pub listing: Vec<String>,
}

/// A random VMX instruction with random operands (step 5).
fn random_op(a: &mut Asm, rng: &mut Rng, listing: &mut Vec<String>) {
    match rng.below(14) {
        0 | 1 => {
            let f = rng.field();
            let v = rng.value_for(f);
            listing.push(format!("vmwrite {f:#x}, {v:#x}"));
            a.vmwrite(f, v);
        }
        2 => {
            let f = rng.field();
            listing.push(format!("vmread {f:#x}"));
            a.mov_imm(RDX, f);
            a.bytes(&[0x0f, 0x78, 0xd0]); // vmread rax, rdx
        }
        3 => {
            let pa = rng.pa();
            listing.push(format!("vmptrld {pa:#x}"));
            a.slot(pa);
            a.bytes(&[0x0f, 0xc7, 0x33]); // vmptrld [rbx]
        }
        4 => {
            let pa = rng.pa();
            listing.push(format!("vmclear {pa:#x}"));
            a.slot(pa);
            a.bytes(&[0x66, 0x0f, 0xc7, 0x33]); // vmclear [rbx]
        }
        5 => {
            // A random destination address (may fault: a triple fault is fine).
            let at = if rng.chance(4) { rng.pa() } else { SLOT };
            listing.push(format!("vmptrst [{at:#x}]"));
            a.mov_imm(RBX, at);
            a.bytes(&[0x0f, 0xc7, 0x3b]); // vmptrst [rbx]
        }
        6 => {
            listing.push("vmlaunch".into());
            a.bytes(&[0x0f, 0x01, 0xc2]);
        }
        7 => {
            listing.push("vmresume".into());
            a.bytes(&[0x0f, 0x01, 0xc3]);
        }
        8 | 9 => {
            let (typ, d0, d1) = (rng.below(5), rng.value(), rng.value());
            let insn = if rng.chance(2) { 0x80 } else { 0x81 };
            listing.push(format!("{} {typ}, [{d0:#x}, {d1:#x}]", if insn == 0x80 { "invept" } else { "invvpid" }));
            a.mov_imm(RBX, SLOT);
            a.mov_imm(RAX, d0);
            a.bytes(&[0x48, 0x89, 0x03]); // mov [rbx], rax
            a.mov_imm(RAX, d1);
            a.bytes(&[0x48, 0x89, 0x43, 0x08]); // mov [rbx+8], rax
            a.mov_imm(RDX, typ);
            a.bytes(&[0x66, 0x0f, 0x38, insn, 0x13]); // invept/invvpid rdx, [rbx]
        }
        10 => {
            let (f, i) = (rng.below(3), rng.below(600));
            listing.push(format!("vmfunc eax={f} ecx={i}"));
            a.mov_imm(RAX, f);
            a.mov_imm(RCX, i);
            a.bytes(&[0x0f, 0x01, 0xd4]); // vmfunc
        }
        11 => {
            listing.push("vmxoff".into());
            a.bytes(&[0x0f, 0x01, 0xc4]);
        }
        12 => {
            let pa = if rng.chance(2) { VMXON } else { rng.pa() };
            listing.push(format!("vmxon {pa:#x}"));
            a.slot(pa);
            a.bytes(&[0xf3, 0x0f, 0xc7, 0x33]); // vmxon [rbx]
        }
        _ => {
            listing.push("vmcall".into());
            a.bytes(&[0x0f, 0x01, 0xc1]);
        }
    }
}

/// L2's code: a few random instructions that exit or touch memory, then
/// isa-debug-exit 0x21 (which reaches L0 unless L1 traps I/O).
fn l2_code(rng: &mut Rng, listing: &mut Vec<String>) -> Vec<u8> {
    let mut c = Vec::new();
    for _ in 0..rng.below(4) {
        match rng.below(7) {
            0 => c.extend_from_slice(&[0x31, 0xc0, 0x0f, 0xa2]), // xor eax, eax; cpuid
            1 => c.extend_from_slice(&[0x0f, 0x01, 0xc1]),       // vmcall
            2 => c.extend_from_slice(&[0xf4]),                   // hlt
            3 => c.extend_from_slice(&[0xcc]),                   // int3
            4 => {
                // mov rax, imm64; mov rax, [rax]
                c.extend_from_slice(&[0x48, 0xb8]);
                c.extend_from_slice(&rng.pa().to_le_bytes());
                c.extend_from_slice(&[0x48, 0x8b, 0x00]);
            }
            5 => {
                // mov rax, imm64; mov [rax], rax
                c.extend_from_slice(&[0x48, 0xb8]);
                c.extend_from_slice(&rng.pa().to_le_bytes());
                c.extend_from_slice(&[0x48, 0x89, 0x00]);
            }
            _ => c.extend_from_slice(&[0xb9, 0x80, 0x04, 0x00, 0x00, 0x0f, 0x32]), // mov ecx, 0x480; rdmsr
        }
    }
    listing.push(format!("l2: {c:02x?}"));
    c.extend_from_slice(&[0xb0, 0x21, 0xe6, 0xf4, 0xfa, 0xf4]); // mov al, 0x21; out 0xf4, al; cli; hlt
    c
}

/// Generates one case from `rng`.
pub fn build_case(rng: &mut Rng) -> Case {
    let mut listing = Vec::new();
    let mut a = Asm::default();
    // Step 0: a second start (a VM exit to a HOST_RIP below the code)
    // goes straight to step 6.
    a.mov_imm(RBX, ENTRY_COUNTER);
    a.bytes(&[0xfe, 0x03]); // inc byte [rbx]
    a.bytes(&[0x80, 0x3b, 0x02]); // cmp byte [rbx], 2
    let entry_jump_at = a.code.len();
    a.bytes(&[0x0f, 0x8d, 0, 0, 0, 0]); // jge done (patched)

    // Step 1.
    a.bytes(&[0x0f, 0x20, 0xe0]); // mov rax, cr4
    a.bytes(&[0x48, 0x0d, 0x00, 0x20, 0x00, 0x00]); // or rax, 0x2000 (VMXE)
    a.bytes(&[0x0f, 0x22, 0xe0]); // mov cr4, rax
    a.rdmsr(0x3a); // IA32_FEATURE_CONTROL
    a.bytes(&[0xa8, 0x01]); // test al, 1 (locked?)
    a.bytes(&[0x75, 0x07]); // jnz over the next two instructions
    a.bytes(&[0x0d, 0x05, 0x00, 0x00, 0x00]); // or eax, 5 (lock | VMX outside SMX)
    a.bytes(&[0x0f, 0x30]); // wrmsr
    a.rdmsr(0x480); // IA32_VMX_BASIC: EAX = revision identifier
    for region in [VMXON, VMCS, VMCS_B] {
        a.mov_imm(RBX, region);
        a.bytes(&[0x89, 0x03]); // mov [rbx], eax
    }
    a.slot(VMXON);
    a.bytes(&[0xf3, 0x0f, 0xc7, 0x33]); // vmxon [rbx]
    a.slot(VMCS);
    a.bytes(&[0x66, 0x0f, 0xc7, 0x33]); // vmclear [rbx]
    a.bytes(&[0x0f, 0xc7, 0x33]); // vmptrld [rbx]

    // Step 2: the baseline, with HOST_RIP patched to step 5 below.
    let baseline = !rng.chance(4);
    let mut host_rip_at = None;
    if baseline {
        listing.push("baseline".into());
        a.vmwrite_ctl(0x4000, 0x481, 0); // pin-based controls
        a.vmwrite_ctl(0x4002, 0x482, 1 << 7); // primary: + HLT exiting
        a.vmwrite_ctl(0x400c, 0x483, 1 << 9); // exit: + host address-space size
        a.vmwrite_ctl(0x4012, 0x484, 1 << 9); // entry: + IA-32e mode guest
        for (field, cr) in
            [(0x6c00, 0xc0), (0x6c02, 0xd8), (0x6c04, 0xe0), (0x6800, 0xc0), (0x6802, 0xd8), (0x6804, 0xe0)]
        {
            a.bytes(&[0x0f, 0x20, cr]); // mov rax, cr0/cr3/cr4
            a.vmwrite_rax(field); // HOST_CRn / GUEST_CRn
        }
        for (f, v) in [(0x0c00, 0x10), (0x0c02, 0x18), (0x0c04, 0x10), (0x0c06, 0x10), (0x0c0c, 0x20)] {
            a.vmwrite(f, v); // host ES, CS, SS, DS, TR selectors
        }
        a.vmwrite(0x6c0c, 0x1000); // HOST_GDTR_BASE
        a.vmwrite(0x6c14, HOST_STACK); // HOST_RSP
        a.mov_imm(RAX, 0);
        host_rip_at = Some(a.code.len() - 8);
        a.vmwrite_rax(0x6c16); // HOST_RIP (patched)
                               // L2: 64-bit ring 0 on L1's GDT and paging.
        for (sel, s, ar) in
            [(0x0802, 0x18, 0xa09b), (0x0804, 0x10, 0xc093), (0x0806, 0x10, 0xc093), (0x0800, 0x10, 0xc093)]
        {
            a.vmwrite(sel, s);
            a.vmwrite(sel + 0x4000, 0xffff_ffff); // limit
            a.vmwrite(sel + 0x4014, ar); // access rights
        }
        for sel in [0x0808, 0x080a, 0x080c] {
            a.vmwrite(sel + 0x4014, 1 << 16); // FS, GS, LDTR unusable
        }
        a.vmwrite(0x080e, 0x20); // TR selector
        a.vmwrite(0x480e, 0x67); // TR limit
        a.vmwrite(0x4822, 0x8b); // TR: busy 64-bit TSS
        a.vmwrite(0x6816, 0x1000); // GDTR base
        a.vmwrite(0x4810, 0x1f); // GDTR limit
        a.vmwrite(0x681a, 0x400); // DR7
        a.vmwrite(0x681c, L2_STACK); // RSP
        a.vmwrite(0x681e, L2_CODE); // RIP
        a.vmwrite(0x6820, 0x2); // RFLAGS
        a.vmwrite(0x2800, u64::MAX); // VMCS link pointer
    }

    // Step 3.
    for _ in 0..rng.below(if baseline { 6 } else { 24 }) {
        let f = rng.field();
        let v = rng.value_for(f);
        listing.push(format!("vmwrite {f:#x}, {v:#x}"));
        a.vmwrite(f, v);
    }
    // Step 4.
    listing.push("vmlaunch".into());
    a.bytes(&[0x0f, 0x01, 0xc2]);

    // Step 5, also where VM exits land: count passes, stop after a few.
    let reentry = a.here();
    if let Some(at) = host_rip_at {
        a.patch(at, reentry);
    }
    a.mov_imm(RBX, COUNTER);
    a.bytes(&[0xfe, 0x03]); // inc byte [rbx]
    a.bytes(&[0x80, 0x3b, MAX_REENTRIES as u8]); // cmp byte [rbx], MAX
    let jump_at = a.code.len();
    a.bytes(&[0x0f, 0x8d, 0, 0, 0, 0]); // jge done (patched)
    for _ in 0..rng.below(12) {
        random_op(&mut a, rng, &mut listing);
    }
    // Step 6.
    let done = a.code.len();
    for at in [entry_jump_at, jump_at] {
        let rel = (done - (at + 6)) as i32;
        a.code[at + 2..at + 6].copy_from_slice(&rel.to_le_bytes());
    }
    a.debug_exit(0x10);

    let l2 = l2_code(rng, &mut listing);
    let mut image = a.code;
    assert!(image.len() as u64 <= VMXON - CODE, "code too long");
    image.resize((L2_CODE - CODE) as usize, 0);
    image.extend_from_slice(&l2);
    // Half the cases get a random vmcs12 image in VMCS_B (its revision
    // identifier is set at run time), a target of random VMPTRLDs.
    if rng.chance(2) {
        listing.push("random vmcs12 image at VMCS_B".into());
        for i in 0..0x1000 / 8 {
            let v = rng.value();
            let at = (VMCS_B - CODE) as usize + i * 8;
            image[at..at + 8].copy_from_slice(&v.to_le_bytes());
        }
    }
    Case { kernel: elf64(CODE, &image, L2_STACK + 0x1000 - CODE), listing }
}

/// A plain ELF64 executable (x86-64) with one PT_LOAD segment at `paddr`
/// holding `data`, `memsz` bytes in memory, entered at `paddr`.
fn elf64(paddr: u64, data: &[u8], memsz: u64) -> Vec<u8> {
    let mut f = vec![0u8; 0x1000];
    f[..4].copy_from_slice(b"\x7fELF");
    f[4] = 2; // ELFCLASS64
    f[5] = 1; // little endian
    f[6] = 1; // EV_CURRENT
    f[16] = 2; // ET_EXEC
    f[18] = 62; // EM_X86_64
    f[20] = 1;
    f[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
    f[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    f[52] = 64; // e_ehsize
    f[54] = 56; // e_phentsize
    f[56] = 1; // e_phnum
    let p = &mut f[64..120];
    p[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    p[4..8].copy_from_slice(&7u32.to_le_bytes()); // RWX
    p[8..16].copy_from_slice(&0x1000u64.to_le_bytes()); // p_offset
    p[16..24].copy_from_slice(&paddr.to_le_bytes());
    p[24..32].copy_from_slice(&paddr.to_le_bytes());
    p[32..40].copy_from_slice(&(data.len() as u64).to_le_bytes());
    p[40..48].copy_from_slice(&memsz.to_le_bytes());
    f.extend_from_slice(data);
    f
}

/// Runs `case` on a one-CPU, 4 MiB VM offering VMX; returns how the run
/// ended and the report's failure summary.
pub fn run_case(case: &Case, timeout: Duration) -> (ExitKind, String) {
    let mut cfg =
        VmConfig::new(ImageSource::Bytes { name: "hostile-l1".into(), data: Cow::Owned(case.kernel.clone()) });
    // Small, so that L1 or L2 sliding through zeroed memory (a random
    // HOST_RIP or GUEST_RIP) soon runs off the end of RAM and faults.
    cfg.ram_size = RAM;
    cfg.cpu_policy = CpuPolicy::max();
    cfg.devices.debug_exit = Some((0xf4, 4));
    cfg.devices.pit = false;
    cfg.no_reboot = true;
    cfg.timeout = Some(timeout);
    cfg.serial_out = SharedWriter::sink();
    let r = Vm::new(cfg).expect("the kernel loads").run().expect("the run completes");
    let summary = r.failure_summary();
    (r.exit, summary)
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[test]
fn hostile_l1_never_panics_or_hangs_l0() {
    let cases = env_u64("HOSTILE_L1_CASES").unwrap_or(if cfg!(debug_assertions) { 2000 } else { 5000 });
    let first = env_u64("HOSTILE_L1_SEED").unwrap_or(0x07e5_71e5);
    // Generous: a case runs a few thousand instructions; only a hang
    // comes near this.
    let timeout = Duration::from_secs(if cfg!(debug_assertions) { 20 } else { 10 });
    let start = std::time::Instant::now();
    let mut tally = std::collections::BTreeMap::<String, u32>::new();
    for seed in first..first + cases {
        let case = build_case(&mut Rng::seeded(seed));
        if let Ok(path) = std::env::var("HOSTILE_L1_DUMP") {
            std::fs::write(&path, &case.kernel).expect("write the kernel");
        }
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run_case(&case, timeout)));
        let why = |what: &str| {
            format!(
                "seed {seed} ({what}); replay: HOSTILE_L1_SEED={seed} HOSTILE_L1_CASES=1\n{}",
                case.listing.join("\n")
            )
        };
        let (exit, summary) = match result {
            Ok(r) => r,
            Err(_) => panic!("L0 panicked: {}", why("host panic")),
        };
        let kind = match &exit {
            ExitKind::DebugExit { status } => format!("debug exit {status}"),
            ExitKind::TripleFault { .. } => "triple fault".into(),
            ExitKind::HaltedForever => "halted".into(),
            ExitKind::Reset => "reset".into(),
            ExitKind::PowerOff => "power off".into(),
            ExitKind::GuestPanic => "guest panic".into(),
            ExitKind::Timeout { .. } => panic!("L0 hung: {}\n{summary}", why("timeout")),
        };
        *tally.entry(kind).or_default() += 1;
    }
    eprintln!("hostile L1: {cases} cases in {:?}: {tally:?}", start.elapsed());
    // The baseline must let some cases reach L2 (its debug exit is 0x21,
    // status 67), or the test would only exercise VMfail paths.
    if cases >= 200 {
        assert!(tally.get("debug exit 67").copied().unwrap_or(0) > 0, "no case reached L2: {tally:?}");
    }
}
