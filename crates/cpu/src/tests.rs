//! Executor tests: raw instruction bytes (with their assembly in a
//! comment), run on a [`Machine`], checked against expected registers and
//! flags.

use crate::testutil::Machine;
use x86::Rflags;

#[test]
fn alu_loop_64() {
    // mov ecx, 1000; l: add rax, 3; xor rbx, rax; dec ecx; jnz l; hlt
    let code = [
        0xb9, 0xe8, 0x03, 0x00, 0x00, // mov ecx, 1000
        0x48, 0x83, 0xc0, 0x03, // add rax, 3
        0x48, 0x31, 0xc3, // xor rbx, rax
        0xff, 0xc9, // dec ecx
        0x75, 0xf5, // jnz -11
        0xf4, // hlt
    ];
    let mut m = Machine::long64(&code);
    m.run_to_hlt();
    assert_eq!(m.gpr(0), 3000);
    assert_eq!(m.gpr(1), 0);
    let mut rbx = 0u64;
    for i in 1..=1000u64 {
        rbx ^= 3 * i;
    }
    assert_eq!(m.gpr(3), rbx);
    assert!(m.rflags() & Rflags::ZF.bits() != 0);
}

#[test]
fn push_pop_call_ret_64() {
    // mov rax, 0x1122334455667788; push rax; pop rbx; call f; hlt; f: mov ecx, 7; ret
    let code = [
        0x48, 0xb8, 0x88, 0x77, 0x66, 0x55, 0x44, 0x33, 0x22, 0x11, // mov rax, imm64
        0x50, // push rax
        0x5b, // pop rbx
        0xe8, 0x01, 0x00, 0x00, 0x00, // call +1
        0xf4, // hlt
        0xb9, 0x07, 0x00, 0x00, 0x00, // mov ecx, 7
        0xc3, // ret
    ];
    let mut m = Machine::long64(&code);
    m.run_to_hlt();
    assert_eq!(m.gpr(3), 0x1122_3344_5566_7788);
    assert_eq!(m.gpr(1), 7);
    assert_eq!(m.gpr(4), crate::testutil::STACK);
}

#[test]
fn real_mode_arith_16() {
    // mov ax, 0xffff; add ax, 1; hlt  -> ax = 0, CF = ZF = 1
    let code = [0xb8, 0xff, 0xff, 0x05, 0x01, 0x00, 0xf4];
    let mut m = Machine::real16(&code);
    m.run_to_hlt();
    assert_eq!(m.gpr(0) & 0xffff, 0);
    let f = m.rflags();
    assert!(f & Rflags::CF.bits() != 0 && f & Rflags::ZF.bits() != 0);
}

#[test]
fn self_modifying_store_is_seen() {
    // mov byte [rip+1], 0x05 ; (next insn) mov eax, 0x01 -> patched to 0x05 ... ; hlt
    // c6 05 01 00 00 00 05 : mov byte [rip+1], 5   (rip+1 = imm byte of next insn)
    // b8 01 00 00 00       : mov eax, 1
    // f4
    let code = [0xc6, 0x05, 0x01, 0x00, 0x00, 0x00, 0x05, 0xb8, 0x01, 0x00, 0x00, 0x00, 0xf4];
    let mut m = Machine::long64(&code);
    // Run once to decode everything, then reset RIP and run again with the
    // patched page still cached.
    m.run_to_hlt();
    assert_eq!(m.gpr(0), 5);
}

/// Builds a 64-bit IDT at 0x5000 whose every vector points at `handler`,
/// a GDT with a 64-bit code segment at 0x8, and a TSS with IST1.
fn long_mode_idt(m: &mut Machine, handler: u64) {
    use crate::DescTable;
    // GDT: null, code64 (0x8), data (0x10), TSS (0x18, 16 bytes).
    m.mem.write_u64(0x4000, 0).unwrap();
    m.mem.write_u64(0x4008, 0x00af_9b00_0000_ffff).unwrap();
    m.mem.write_u64(0x4010, 0x00cf_9300_0000_ffff).unwrap();
    m.cpu.regs.gdtr = DescTable { base: 0x4000, limit: 0x27 };
    for v in 0..256u64 {
        let lo = (handler & 0xffff) | (0x8 << 16) | (0x8e00u64 << 32) | ((handler & 0xffff_0000) << 32);
        m.mem.write_u64(0x5000 + v * 16, lo).unwrap();
        m.mem.write_u64(0x5008 + v * 16, handler >> 32).unwrap();
    }
    m.cpu.regs.idtr = DescTable { base: 0x5000, limit: 0xfff };
}

#[test]
fn ud2_is_delivered_through_the_64bit_idt() {
    // ud2 ; (handler at CODE+0x100:) mov rbx, [rsp] ; hlt
    let mut code = vec![0x0f, 0x0b];
    code.resize(0x100, 0x90);
    code.extend_from_slice(&[0x48, 0x8b, 0x1c, 0x24, 0xf4]);
    let mut m = Machine::long64(&code);
    long_mode_idt(&mut m, crate::testutil::CODE + 0x100);
    m.run_to_hlt();
    // The saved RIP is the faulting UD2; the frame is 5 qwords.
    assert_eq!(m.gpr(3), crate::testutil::CODE);
    assert_eq!(m.gpr(4), crate::testutil::STACK - 40);
    assert_eq!(m.cpu.stats.exceptions[6], 1);
}

#[test]
fn page_fault_reports_error_code_and_cr2() {
    // mov rax, [0x4000_0000] (unmapped: above the 1 GiB identity map)
    // handler: pop rbx (error code) ; hlt
    let mut code = vec![0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x00, 0x40];
    code.resize(0x100, 0x90);
    code.extend_from_slice(&[0x5b, 0xf4]);
    let mut m = Machine::long64(&code);
    long_mode_idt(&mut m, crate::testutil::CODE + 0x100);
    m.run_to_hlt();
    assert_eq!(m.gpr(3), 0, "not-present read by the supervisor");
    assert_eq!(m.cpu.regs.cr2, 0x4000_0000);
}

#[test]
fn missing_idt_entry_escalates_to_triple_fault() {
    // ud2 with an IDT limit of 0: #UD -> #GP -> #DF -> shutdown.
    let mut m = Machine::long64(&[0x0f, 0x0b]);
    m.cpu.regs.idtr = crate::DescTable { base: 0x5000, limit: 0 };
    match m.run() {
        crate::RunExit::Shutdown(s) => assert!(s.contains("triple fault"), "{s}"),
        e => panic!("expected shutdown, got {e:?}"),
    }
    assert_eq!(m.cpu.stats.exceptions[8], 1);
}

#[test]
fn far_jmp_to_a_tss_switches_tasks() {
    use crate::testutil::CODE;
    use crate::{DescTable, Segment};
    // Task A: jmp far 0x20:0 ; task B starts at CODE+0x40: hlt
    let mut code = vec![0xea, 0, 0, 0, 0, 0x20, 0x00];
    code.resize(0x40, 0x90);
    code.push(0xf4);
    let mut m = Machine::prot32(&code);
    // GDT at 0x4000: null, code32 0x8, data 0x10, TSS A 0x18 at 0x6000,
    // TSS B 0x20 at 0x6100 (limit 0x67, type 9 available).
    let tss_desc = |base: u64, busy: bool| -> u64 {
        let t = if busy { 0xb } else { 0x9 };
        0x67 | ((base & 0xff_ffff) << 16) | ((0x80 | t) << 40) | ((base >> 24) << 56)
    };
    m.mem.write_u64(0x4008, 0x00cf_9b00_0000_ffff).unwrap();
    m.mem.write_u64(0x4010, 0x00cf_9300_0000_ffff).unwrap();
    m.mem.write_u64(0x4018, tss_desc(0x6000, true)).unwrap();
    m.mem.write_u64(0x4020, tss_desc(0x6100, false)).unwrap();
    m.cpu.regs.gdtr = DescTable { base: 0x4000, limit: 0x27 };
    m.cpu.regs.tr = Segment { selector: 0x18, base: 0x6000, limit: 0x67, ar: 0x8b };
    // TSS B image: EIP, EFLAGS, EBX = 0x1234, ES/CS/SS/DS/FS/GS.
    m.mem.write_u32(0x6100 + 0x20, (CODE + 0x40) as u32).unwrap();
    m.mem.write_u32(0x6100 + 0x24, 0x2).unwrap();
    m.mem.write_u32(0x6100 + 0x34, 0x1234).unwrap();
    m.mem.write_u32(0x6100 + 0x38, 0x9000).unwrap();
    for (i, s) in [0x10u32, 0x8, 0x10, 0x10, 0x10, 0x10].iter().enumerate() {
        m.mem.write_u32(0x6100 + 0x48 + 4 * i as u64, *s).unwrap();
    }
    m.run_to_hlt();
    assert_eq!(m.cpu.regs.tr.selector, 0x20);
    assert_eq!(m.gpr(3), 0x1234);
    assert_eq!(m.gpr(4), 0x9000);
    // Old TSS saved EIP after the JMP and lost its busy bit; new one busy.
    assert_eq!(m.mem.read_u32(0x6000 + 0x20).unwrap() as u64, CODE + 7);
    assert_eq!((m.mem.read_u64(0x4018).unwrap() >> 40) & 0xf, 0x9);
    assert_eq!((m.mem.read_u64(0x4020).unwrap() >> 40) & 0xf, 0xb);
    assert!(m.cpu.regs.cr0 & x86::Cr0::TS.bits() != 0);
}

#[test]
fn misaligned_user_access_with_am_and_ac_raises_ac() {
    // At CPL 3 with CR0.AM and RFLAGS.AC: mov eax, [rsp+1] faults #AC(0).
    // The test machine runs at CPL 0, so drop to CPL 3 by editing CS/SS.
    use crate::Segment;
    use x86::seg::{ar, sreg};
    let mut m = Machine::long64(&[0x8b, 0x44, 0x24, 0x01, 0xf4]);
    // User-accessible pages: set U/S on the PML4/PDPT/PD entries.
    m.mem.write_u64(0x1000, 0x2000 | 7).unwrap();
    m.mem.write_u64(0x2000, 0x3000 | 7).unwrap();
    for i in 0..512u64 {
        m.mem.write_u64(0x3000 + i * 8, (i << 21) | 0x87).unwrap();
    }
    let r = &mut m.cpu.regs;
    r.seg[sreg::CS] = Segment { selector: 0x33, ar: r.seg[sreg::CS].ar | (3 << ar::DPL_SHIFT), ..r.seg[sreg::CS] };
    r.seg[sreg::SS] = Segment { selector: 0x2b, ar: r.seg[sreg::SS].ar | (3 << ar::DPL_SHIFT), ..r.seg[sreg::SS] };
    r.cr0 |= x86::Cr0::AM.bits();
    r.set_rflags(Rflags::AC.bits() | 2);
    m.cpu.state_changed();
    match m.run() {
        crate::RunExit::Shutdown(_) => {}
        e => panic!("expected the #AC to escalate without an IDT, got {e:?}"),
    }
    assert_eq!(m.cpu.stats.exceptions[x86::vector::AC as usize], 1);
    // Without AC the same access is fine.
    let mut m2 = Machine::long64(&[0x8b, 0x44, 0x24, 0x01, 0xf4]);
    m2.cpu.regs.cr0 |= x86::Cr0::AM.bits();
    m2.cpu.state_changed();
    m2.run_to_hlt();
}

#[test]
fn leave_restores_the_frame_in_64bit_mode() {
    // push rbp; mov rbp, rsp; sub rsp, 0x20; mov rbp... ; leave; hlt
    // 55 / 48 89 e5 / 48 83 ec 20 / c9 / f4
    let mut m = Machine::long64(&[0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x20, 0xc9, 0xf4]);
    m.cpu.regs.gpr[5] = 0x1234;
    m.run_to_hlt();
    assert_eq!(m.gpr(5), 0x1234);
    assert_eq!(m.gpr(4), crate::testutil::STACK);
}

#[test]
fn call_and_ret_fast_forms() {
    // call +2 (to the inc) ; hlt ; hlt ; inc rbx ; ret
    // e8 02 00 00 00 / f4 / f4 / 48 ff c3 / c3
    let code = [0xe8, 0x02, 0x00, 0x00, 0x00, 0xf4, 0xf4, 0x48, 0xff, 0xc3, 0xc3];
    let mut m = Machine::long64(&code);
    m.run_to_hlt();
    assert_eq!(m.gpr(3), 1, "the call reached its target");
    assert_eq!(m.gpr(4), crate::testutil::STACK, "RET popped what CALL pushed");
    assert_eq!(m.cpu.regs.rip, crate::testutil::CODE + 6, "RET returned past the CALL (and its HLT)");
    let pushed = m.mem.read_u64(crate::testutil::STACK - 8).unwrap();
    assert_eq!(pushed, crate::testutil::CODE + 5, "the return address is the next instruction");
    // A RET to a non-canonical address is #GP(0) with RSP unchanged: no
    // IDT here, so the machine shuts down, RSP still at the bad value.
    let mut m = Machine::long64(&[0xc3]);
    m.mem.write_u64(crate::testutil::STACK, 0x8000_0000_0000_0000).unwrap();
    assert!(matches!(m.run(), crate::RunExit::Shutdown(_)));
    assert_eq!(m.gpr(4), crate::testutil::STACK, "a faulting RET leaves RSP alone");
}

#[test]
fn cmov_and_setcc_fast_forms() {
    // mov rax, -1 ; mov rbx, 5 ; cmp eax, eax (ZF=1)
    // cmovne eax, ebx   -> false, but a 32-bit CMOV zero-extends RAX
    // cmove rcx, rbx    -> true: RCX = 5
    // cmovne rdx, [rsp] -> false: the load still happens, RDX unchanged
    // sete sil          -> 1
    // hlt
    let code = [
        0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff, // mov rax, -1
        0x48, 0xc7, 0xc3, 0x05, 0x00, 0x00, 0x00, // mov rbx, 5
        0x39, 0xc0, // cmp eax, eax
        0x0f, 0x45, 0xc3, // cmovne eax, ebx
        0x48, 0x0f, 0x44, 0xcb, // cmove rcx, rbx
        0x48, 0x0f, 0x45, 0x14, 0x24, // cmovne rdx, [rsp]
        0x40, 0x0f, 0x94, 0xc6, // sete sil
        0xf4,
    ];
    let mut m = Machine::long64(&code);
    m.cpu.regs.gpr[2] = 0x77;
    m.cpu.regs.gpr[6] = 0x1234_5600;
    m.run_to_hlt();
    assert_eq!(m.gpr(0), 0xffff_ffff, "32-bit CMOV zero-extends when false");
    assert_eq!(m.gpr(1), 5);
    assert_eq!(m.gpr(2), 0x77);
    assert_eq!(m.gpr(6), 0x1234_5601);
    // A CMOV whose condition is false still faults on its load.
    // cmp eax, eax ; cmovne rdx, [0x4000_0000] (unmapped)
    let code = [0x39, 0xc0, 0x48, 0x0f, 0x45, 0x14, 0x25, 0x00, 0x00, 0x00, 0x40, 0xf4];
    let mut m = Machine::long64(&code);
    assert!(matches!(m.run(), crate::RunExit::Shutdown(_)));
    assert_eq!(m.cpu.stats.exceptions[x86::vector::PF as usize], 1);
}
