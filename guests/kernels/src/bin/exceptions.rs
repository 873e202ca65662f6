//! `exceptions`: exception delivery in 64-bit mode (SDM Vol. 3A, chapter 7
//! "Interrupt and Exception Handling" and chapter 19 "Debug, Branch
//! Profile, TSC, and Intel Resource Director Technology Features").
//!
//! Each check raises one event and asserts vector, error code and the saved
//! RIP (the faulting instruction for faults, the next one for traps):
//! #DE (divide by zero, INT_MIN / -1 in 32 and 64 bits, 8-bit quotient
//! overflow), #UD (UD2, LOCK on NOP, an opcode invalid in 64-bit mode),
//! #BP (INT3 and INT 3 as traps), #GP/#NP/#SS with selector error codes from
//! MOV Sreg, non-canonical addresses, MSR/CR4 reserved bits, IRETQ with NT,
//! not-present and DPL-protected IDT gates, #DF from a contributory fault
//! during delivery, IST stacks, interrupt vs trap gates and IF, the ring-3
//! round trip (stack switch to RSP0, null SS, DS nulled by IRETQ), #AC,
//! #NM, IRETQ frames, single-step #DB (including the MOV SS shadow), and
//! DR0-DR3 instruction and data breakpoints with DR6.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::arch::{self, cr0, rflags};
use rt::gdt;
use rt::idt::{self, fault_of, vector, Fault, Frame};
use rt::{check, check_eq};
use turtles_guest_kernels::user;

rt::entry!("exceptions", main);

/// Address of the instruction expected to fault, stored by the asm just
/// before executing it.
static EXP: AtomicU64 = AtomicU64::new(0);

fn exp() -> u64 {
    EXP.load(Ordering::SeqCst)
}

/// Checks that `f` is the fault (vector, error code) at the address in EXP.
fn expect(name: &str, f: Option<Fault>, vector: u8, error_code: u64) {
    expect_sdm(name, f, vector, error_code, false)
}

/// As [`expect`]; `qemu_deviates` marks a documented QEMU TCG departure from
/// the SDM (see `rt::quirks`).
fn expect_sdm(name: &str, f: Option<Fault>, vector: u8, error_code: u64, qemu_deviates: bool) {
    let (v, e, r) = f.map_or((0xff, 0, 0), |f| (f.vector, f.error_code, f.rip));
    rt::check_sdm!(
        f.is_some() && v == vector && e == error_code && r == exp(),
        qemu_deviates,
        "{}: vector {} error {:#x} rip {:#x} (got {})",
        name,
        vector,
        error_code,
        exp(),
        Got(f)
    );
}

struct Got(Option<Fault>);

impl core::fmt::Display for Got {
    fn fmt(&self, fm: &mut core::fmt::Formatter) -> core::fmt::Result {
        match self.0 {
            Some(f) => write!(fm, "vector {} error {:#x} rip {:#x}", f.vector, f.error_code, f.rip),
            None => write!(fm, "nothing"),
        }
    }
}

fn main(_mb: u32) {
    divide_errors();
    invalid_opcodes();
    breakpoints();
    segment_faults();
    other_gp();
    idt_gates();
    double_fault();
    ist_stacks();
    gate_types();
    iretq_frames();
    ring3();
    device_not_available();
    single_step();
    debug_registers();
}

fn divide_errors() {
    let f = fault_of(|| unsafe {
        // SAFETY: raises #DE inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "xor edx, edx", "mov eax, 1",
             "xor ecx, ecx", "2: div ecx", e = sym EXP, out("rax") _, out("rdx") _, out("rcx") _)
    });
    expect("#DE div by zero", f, vector::DE, 0);

    let f = fault_of(|| unsafe {
        // SAFETY: raises #DE inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "mov eax, 0x80000000", "cdq",
             "mov ecx, -1", "2: idiv ecx", e = sym EXP, out("rax") _, out("rdx") _, out("rcx") _)
    });
    expect("#DE idiv INT_MIN/-1 (32-bit)", f, vector::DE, 0);

    let f = fault_of(|| unsafe {
        // SAFETY: raises #DE inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "mov rax, 0x8000000000000000", "cqo",
             "mov rcx, -1", "2: idiv rcx", e = sym EXP, out("rax") _, out("rdx") _, out("rcx") _)
    });
    expect("#DE idiv INT64_MIN/-1", f, vector::DE, 0);

    let f = fault_of(|| unsafe {
        // SAFETY: raises #DE inside catch: 0x1000 / 0x10 = 0x100 does not fit AL.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "mov eax, 0x1000", "mov cl, 0x10",
             "2: div cl", e = sym EXP, out("rax") _, out("rcx") _)
    });
    expect("#DE 8-bit quotient overflow", f, vector::DE, 0);

    // Boundary: INT_MIN / 1 and 0xff quotient do not fault.
    let (q, ok) = {
        let q: u64;
        let r = fault_of(|| unsafe {
            // SAFETY: plain division, no fault expected.
            asm!("mov eax, 0xff0", "mov cl, 0x10", "div cl", out("rax") _, out("rcx") _)
        });
        // SAFETY: plain division.
        unsafe {
            asm!("mov eax, 0xff0", "mov cl, 0x10", "div cl", "movzx {q}, al", q = out(reg) q, out("rax") _, out("rcx") _)
        };
        (q, r.is_none())
    };
    check!(ok && q == 0xff, "div 0xff0/0x10 = 0xff does not fault");
}

fn invalid_opcodes() {
    let f = fault_of(|| unsafe {
        // SAFETY: raises #UD inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: ud2", e = sym EXP, out("rax") _)
    });
    expect("#UD ud2", f, vector::UD, 0);

    let f = fault_of(|| unsafe {
        // SAFETY: LOCK NOP (f0 90) is #UD: NOP is not a lockable instruction.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: .byte 0xf0, 0x90", e = sym EXP, out("rax") _)
    });
    expect("#UD lock nop", f, vector::UD, 0);

    let f = fault_of(|| unsafe {
        // SAFETY: LOCK on a register-destination ADD is #UD.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: .byte 0xf0, 0x01, 0xc0", e = sym EXP, out("rax") _)
    });
    expect("#UD lock add reg,reg", f, vector::UD, 0);

    let f = fault_of(|| unsafe {
        // SAFETY: 0x06 (PUSH ES) is invalid in 64-bit mode.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: .byte 0x06", e = sym EXP, out("rax") _)
    });
    expect("#UD push es in 64-bit mode", f, vector::UD, 0);

    let f = fault_of(|| unsafe {
        // SAFETY: 0xce (INTO) is invalid in 64-bit mode.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: .byte 0xce", e = sym EXP, out("rax") _)
    });
    expect("#UD into in 64-bit mode", f, vector::UD, 0);
}

fn count_handler(_f: &mut Frame) {}

fn breakpoints() {
    idt::set_handler(vector::BP, Some(count_handler));
    let before = idt::count(vector::BP);
    // SAFETY: int3 traps into the counting handler, which returns.
    unsafe { asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "int3", "2:", e = sym EXP, out("rax") _) };
    let l = idt::last().unwrap_or_default();
    check!(
        idt::count(vector::BP) == before + 1 && l.vector == 3 && l.rip == exp(),
        "#BP int3 is a trap: saved RIP is the next instruction"
    );
    // SAFETY: as above, two-byte form.
    unsafe { asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", ".byte 0xcd, 0x03", "2:", e = sym EXP, out("rax") _) };
    let l = idt::last().unwrap_or_default();
    check!(idt::count(vector::BP) == before + 2 && l.rip == exp(), "#BP int 3 (cd 03) is a trap");
    idt::set_handler(vector::BP, None);
}

/// GDT slots used by the segment tests.
const SEL_EXEC_ONLY: u16 = 0x60;
const SEL_NOT_PRESENT: u16 = 0x68;
const SEL_RO_DATA: u16 = 0x70;

fn load_ds(sel: u16) -> Option<Fault> {
    fault_of(|| unsafe {
        // SAFETY: the load either faults inside catch or is undone below.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "mov ecx, ds", "2: mov ds, {s:x}",
             "mov ds, ecx", e = sym EXP, s = in(reg) sel, out("rax") _, out("rcx") _)
    })
}

fn load_ss(sel: u16) -> Option<Fault> {
    fault_of(|| unsafe {
        // SAFETY: the load either faults inside catch or is undone at once
        // (the MOV SS shadow keeps interrupts out in between).
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "mov ecx, ss", "2: mov ss, {s:x}",
             "mov ss, ecx", e = sym EXP, s = in(reg) sel, out("rax") _, out("rcx") _)
    })
}

fn segment_faults() {
    // SAFETY: free GDT slots, not loaded anywhere.
    unsafe {
        gdt::set_descriptor(SEL_EXEC_ONLY, gdt::seg_descriptor(0, 0xfffff, 0x98, 0xc));
        gdt::set_descriptor(SEL_NOT_PRESENT, gdt::seg_descriptor(0, 0xfffff, 0x12, 0xc));
        gdt::set_descriptor(SEL_RO_DATA, gdt::seg_descriptor(0, 0xfffff, 0x90, 0xc));
    }
    // A null LDTR: every TI = 1 selector is beyond the (zero) LDT limit.
    // SAFETY: LLDT with a null selector is valid in ring 0.
    unsafe { asm!("lldt {0:x}", in(reg) 0u16) };
    // MOV Sreg checks (SDM Vol. 2B, MOV "Protected Mode Exceptions" and
    // "64-Bit Mode Exceptions"). The error code is the selector with the
    // RPL bits replaced by EXT = IDT = 0.
    expect("#GP mov ds, selector beyond GDT limit", load_ds(0x1000), vector::GP, 0x1000);
    expect("#GP mov ds, LDT selector with null LDTR", load_ds(0x0c), vector::GP, 0x0c);
    expect("#GP mov ds, execute-only code", load_ds(SEL_EXEC_ONLY), vector::GP, SEL_EXEC_ONLY as u64);
    expect("#NP mov ds, not-present data", load_ds(SEL_NOT_PRESENT), vector::NP, SEL_NOT_PRESENT as u64);
    check!(load_ds(0).is_none(), "mov ds, null is allowed");
    check!(load_ds(gdt::UDATA).is_none(), "mov ds, DPL3 data at CPL0 is allowed");
    check!(load_ds(gdt::KCODE64).is_none(), "mov ds, readable code is allowed");
    expect("#SS mov ss, not-present data", load_ss(SEL_NOT_PRESENT), vector::SS, SEL_NOT_PRESENT as u64);
    expect("#GP mov ss, RPL != CPL", load_ss(0x10 | 3), vector::GP, 0x10);
    expect("#GP mov ss, DPL != CPL", load_ss(0x20), vector::GP, 0x20);
    expect("#GP mov ss, read-only data", load_ss(SEL_RO_DATA), vector::GP, SEL_RO_DATA as u64);
    expect("#GP mov ss, code segment", load_ss(gdt::KCODE64), vector::GP, gdt::KCODE64 as u64);
    // QEMU only checks CPL = 3, not RPL != CPL.
    expect_sdm("#GP mov ss, null with RPL 3 at CPL 0", load_ss(3), vector::GP, 0, true);
    check!(load_ss(0).is_none(), "mov ss, null at CPL 0 in 64-bit mode is allowed");
    // The accessed bit is set in the descriptor on a successful load.
    let before = gdt::descriptor(SEL_RO_DATA) >> 40 & 1;
    check!(
        load_ds(SEL_RO_DATA).is_none() && before == 0 && gdt::descriptor(SEL_RO_DATA) >> 40 & 1 == 1,
        "mov ds sets the descriptor accessed bit"
    );
    let f = fault_of(|| unsafe {
        // SAFETY: far jump through a non-present selector faults inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "push {s}", "push rax", "2: retfq",
             e = sym EXP, s = in(reg) SEL_NOT_PRESENT as u64, out("rax") _)
    });
    expect("#GP far return to a data segment", f, vector::GP, SEL_NOT_PRESENT as u64);
}

fn other_gp() {
    let f = fault_of(|| unsafe {
        // SAFETY: non-canonical access faults inside catch.
        asm!("mov rcx, 0x8000000000000000", "lea rax, [rip + 2f]", "mov [rip + {e}], rax",
             "2: mov rax, [rcx]", e = sym EXP, out("rax") _, out("rcx") _)
    });
    expect("#GP non-canonical data access", f, vector::GP, 0);

    let f = fault_of(|| unsafe {
        // SAFETY: RBP-based addressing uses SS: non-canonical gives #SS(0).
        asm!("mov rcx, 0x8000000000000000", "lea rax, [rip + 2f]", "mov [rip + {e}], rax",
             "2: mov rax, [rbp + rcx]", e = sym EXP, out("rax") _, out("rcx") _)
    });
    // QEMU raises #GP for every non-canonical access.
    expect_sdm("#SS non-canonical stack-segment access", f, vector::SS, 0, true);

    let f = fault_of(|| unsafe {
        // SAFETY: jump to a non-canonical address: #GP on the jump itself.
        asm!("mov rcx, 0x0000800000000000", "lea rax, [rip + 2f]", "mov [rip + {e}], rax",
             "2: jmp rcx", e = sym EXP, out("rax") _, out("rcx") _)
    });
    // Intel faults on the JMP (SDM Vol. 2A, JMP, 64-bit mode exceptions);
    // QEMU, like AMD, faults on the fetch at the target.
    expect_sdm("#GP jmp to non-canonical RIP (fault on the jmp)", f, vector::GP, 0, true);

    let f = fault_of(|| unsafe {
        // SAFETY: unimplemented MSR.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "mov ecx, 0x12345678",
             "2: rdmsr", e = sym EXP, out("rax") _, out("rcx") _, out("rdx") _)
    });
    // QEMU TCG reads unknown MSRs as 0.
    expect_sdm("#GP rdmsr of an unimplemented MSR", f, vector::GP, 0, true);

    let f = fault_of(|| unsafe {
        // SAFETY: EFER bit 2 is reserved; the write faults inside catch.
        asm!("mov ecx, 0xc0000080", "rdmsr", "or eax, 4", "lea rsi, [rip + 2f]",
             "mov [rip + {e}], rsi", "2: wrmsr", e = sym EXP, out("rax") _, out("rcx") _,
             out("rdx") _, out("rsi") _)
    });
    // QEMU TCG drops reserved EFER bits silently.
    expect_sdm("#GP wrmsr EFER reserved bit", f, vector::GP, 0, true);
    // SAFETY: undo in case the write was accepted.
    unsafe { arch::wrmsr(rt::arch::msr::EFER, arch::rdmsr(rt::arch::msr::EFER) & !4) };

    if rt::quirks::qemu_tcg() {
        // QEMU 7.2 accepts the value and then stops making progress.
        rt::skip!("QEMU TCG deviates from the SDM here (and would hang)", "#GP mov cr4 with a reserved bit");
    } else {
        let f = fault_of(|| unsafe {
            // SAFETY: CR4 bit 63 is reserved; the write faults inside catch.
            asm!("mov rcx, cr4", "bts rcx, 63", "lea rax, [rip + 2f]", "mov [rip + {e}], rax",
                 "2: mov cr4, rcx", e = sym EXP, out("rax") _, out("rcx") _)
        });
        expect("#GP mov cr4 with a reserved bit", f, vector::GP, 0);
    }

    if rt::quirks::qemu_tcg() {
        // QEMU leaves long mode instead of faulting, and then crashes.
        rt::skip!("QEMU TCG deviates from the SDM here (and would hang)", "#GP clearing CR0.PG in 64-bit mode");
    } else {
        let f = fault_of(|| unsafe {
            // SAFETY: clearing CR0.PG in IA-32e mode is #GP (SDM Vol. 3A, 10.8.5).
            asm!("mov rcx, cr0", "btr rcx, 31", "lea rax, [rip + 2f]", "mov [rip + {e}], rax",
                 "2: mov cr0, rcx", e = sym EXP, out("rax") _, out("rcx") _)
        });
        expect("#GP clearing CR0.PG in 64-bit mode", f, vector::GP, 0);
    }

    let f = fault_of(|| unsafe {
        // SAFETY: IRETQ with RFLAGS.NT = 1 in IA-32e mode is #GP(0) (SDM Vol.
        // 2A, IRET). catch restores RFLAGS afterwards.
        asm!("pushfq", "or qword ptr [rsp], 0x4000", "popfq", "mov rcx, rsp",
             "push 0x10", "push rcx", "pushfq", "push 0x08", "lea rax, [rip + 3f]", "push rax",
             "lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: iretq", "3:",
             e = sym EXP, out("rax") _, out("rcx") _)
    });
    expect("#GP iretq with NT set", f, vector::GP, 0);
}

fn idt_gates() {
    // Not-present gate: #NP with error code (vector << 3) | IDT (bit 1); the
    // EXT bit is 0 for INT n (SDM Vol. 3A, 7.13 "Error Code").
    let saved = idt::gate_raw(0x41);
    idt::set_gate_raw(0x41, [saved[0] & !(1 << 47), saved[1]]);
    let f = fault_of(|| unsafe {
        // SAFETY: faults inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: int 0x41", e = sym EXP, out("rax") _)
    });
    // QEMU puts vector * 16 (the byte offset of the 64-bit gate) in the
    // index field; the SDM index is the gate number (Vol. 3A, 7.13).
    expect_sdm("#NP int 0x41 through a not-present gate", f, vector::NP, 0x41 << 3 | 2, true);
    idt::set_gate_raw(0x41, saved);

    // INT3 through a not-present gate: #NP, benign + contributory = no #DF.
    let saved = idt::gate_raw(vector::BP);
    idt::set_gate_raw(vector::BP, [saved[0] & !(1 << 47), saved[1]]);
    let f = fault_of(|| unsafe {
        // SAFETY: faults inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: int3", e = sym EXP, out("rax") _)
    });
    expect_sdm("#NP int3 through a not-present gate (no #DF)", f, vector::NP, 3 << 3 | 2, true);
    check!(matches!(f, Some(f) if f.vector == vector::NP), "int3 through a not-present gate is #NP, not #DF");
    idt::set_gate_raw(vector::BP, saved);

    // A gate whose type is not interrupt/trap: #GP(vector << 3 | 2).
    let saved = idt::gate_raw(0x42);
    idt::set_gate_raw(0x42, [(saved[0] & !(0xf << 40)) | 0xc << 40, saved[1]]);
    let f = fault_of(|| unsafe {
        // SAFETY: faults inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: int 0x42", e = sym EXP, out("rax") _)
    });
    expect_sdm("#GP int through a call-gate-typed IDT entry", f, vector::GP, 0x42 << 3 | 2, true);
    idt::set_gate_raw(0x42, saved);

    // Vector beyond the IDT limit: #GP(vector << 3 | 2).
    let full = idt::idtr();
    let short = arch::DescriptorTablePointer { limit: 0x50 * 16 - 1, base: full.base };
    let f = fault_of(|| unsafe {
        // SAFETY: IDTR is restored right after the INT.
        arch::lidt(&short);
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: int 0x60", e = sym EXP, out("rax") _);
    });
    idt::load();
    expect_sdm("#GP int beyond the IDT limit", f, vector::GP, 0x60 << 3 | 2, true);
    check_eq!(arch::sidt(), full, "sidt returns the runtime IDTR");
}

static DF_FRAME: AtomicU64 = AtomicU64::new(0);
static DF_RSP: AtomicU64 = AtomicU64::new(0);

fn df_handler(f: &mut Frame) {
    DF_FRAME.store(f as *mut Frame as u64, Ordering::SeqCst);
    DF_RSP.store(f.rsp, Ordering::SeqCst);
    idt::unwind_to_catch(f);
}

fn double_fault() {
    // #DE with a not-present #DE gate: delivering #DE raises #NP (EXT = 1),
    // both contributory, so the CPU raises #DF with error code 0 (SDM Vol.
    // 3A, 7.15 interrupt 8, Table 7-5) through IST1.
    idt::set_handler(vector::DF, Some(df_handler));
    let np_before = idt::count(vector::NP);
    let saved = idt::gate_raw(vector::DE);
    idt::set_gate_raw(vector::DE, [saved[0] & !(1 << 47), saved[1]]);
    let f = fault_of(|| unsafe {
        // SAFETY: faults inside catch.
        asm!("xor edx, edx", "xor eax, eax", "xor ecx, ecx", "div ecx", out("rax") _, out("rcx") _, out("rdx") _)
    });
    idt::set_gate_raw(vector::DE, saved);
    check!(matches!(f, Some(f) if f.is(vector::DF, 0)), "#DF from #NP during #DE delivery: {:x?}", f);
    check_eq!(idt::count(vector::NP), np_before, "#DF: the #NP itself is not delivered");
    let top = gdt::stack_top(1);
    let fa = DF_FRAME.load(Ordering::SeqCst);
    check!(fa > top - gdt::STACK_SIZE as u64 && fa < top, "#DF runs on IST1");

    // #GP during delivery of #GP... is a #DF too: #GP gate with a selector
    // beyond the GDT limit, then a #NP (mov ds) whose gate is fine: the #NP
    // is delivered. Instead make the #NP gate's selector bad: delivering #NP
    // raises #GP(selector | EXT), contributory after contributory -> #DF.
    let saved = idt::gate_raw(vector::NP);
    idt::set_gate_raw(vector::NP, [(saved[0] & !(0xffff << 16)) | 0x0ff8 << 16, saved[1]]);
    let gp_before = idt::count(vector::GP);
    // SAFETY: free GDT slot.
    unsafe { gdt::set_descriptor(SEL_NOT_PRESENT, gdt::seg_descriptor(0, 0xfffff, 0x12, 0xc)) };
    let f = load_ds(SEL_NOT_PRESENT);
    idt::set_gate_raw(vector::NP, saved);
    check!(matches!(f, Some(f) if f.is(vector::DF, 0)), "#DF from #GP during #NP delivery: {:x?}", f);
    check_eq!(idt::count(vector::GP), gp_before, "#DF: the #GP itself is not delivered");
    idt::set_handler(vector::DF, None);

    // #PF then #GP during its delivery is also #DF (page fault + contributory).
    let saved = idt::gate_raw(vector::PF);
    idt::set_gate_raw(vector::PF, [saved[0] & !(1 << 47), saved[1]]);
    idt::set_handler(vector::DF, Some(df_handler));
    let f = fault_of(|| unsafe {
        // SAFETY: reads an unmapped address (the boot map ends at 4 GiB).
        asm!("mov rcx, 0x200000000", "mov rax, [rcx]", out("rax") _, out("rcx") _)
    });
    idt::set_gate_raw(vector::PF, saved);
    idt::set_handler(vector::DF, None);
    check!(matches!(f, Some(f) if f.is(vector::DF, 0)), "#DF from #NP during #PF delivery: {:x?}", f);
}

static H_FRAME: AtomicU64 = AtomicU64::new(0);
static H_SAVED_RSP: AtomicU64 = AtomicU64::new(0);
static H_RFLAGS: AtomicU64 = AtomicU64::new(0);
static H_SAVED_RFLAGS: AtomicU64 = AtomicU64::new(0);

fn record_handler(f: &mut Frame) {
    H_FRAME.store(f as *mut Frame as u64, Ordering::SeqCst);
    H_SAVED_RSP.store(f.rsp, Ordering::SeqCst);
    H_SAVED_RFLAGS.store(f.rflags, Ordering::SeqCst);
    H_RFLAGS.store(arch::read_rflags(), Ordering::SeqCst);
}

fn ist_stacks() {
    // int 0x43 through IST4: the frame is on IST4 and the saved RSP is the
    // interrupted one.
    idt::set_gate(0x43, 4, false, 0);
    idt::set_handler(0x43, Some(record_handler));
    let rsp_before: u64;
    // SAFETY: software interrupt to the recording handler.
    unsafe { asm!("mov {r}, rsp", "int 0x43", r = out(reg) rsp_before) };
    let top = gdt::stack_top(4);
    let fa = H_FRAME.load(Ordering::SeqCst);
    // Frame = 15 GPRs + vector + error + 5 CPU words = 22 words below top.
    check_eq!(fa, top - 22 * 8, "IST4 frame at the top of IST4");
    check_eq!(H_SAVED_RSP.load(Ordering::SeqCst), rsp_before, "IST: saved RSP is the interrupted RSP");
    // Without IST, the frame is pushed on the current stack, aligned to 16.
    idt::set_gate(0x43, 0, false, 0);
    let rsp_before: u64;
    // SAFETY: software interrupt to the recording handler, from an
    // 8-misaligned stack.
    unsafe { asm!("push rax", "mov rcx, rsp", "int 0x43", "pop rax", out("rcx") rsp_before, out("rax") _) };
    let fa = H_FRAME.load(Ordering::SeqCst);
    check_eq!(fa, (rsp_before & !15) - 22 * 8, "no IST: frame below RSP aligned down to 16");
    check_eq!(H_SAVED_RSP.load(Ordering::SeqCst), rsp_before, "no IST: saved RSP");
    idt::set_handler(0x43, None);
    idt::reset_gate(0x43);
}

fn gate_types() {
    idt::set_handler(0x44, Some(record_handler));
    idt::set_gate(0x44, 0, false, 0);
    // SAFETY: all 8259 lines are masked and the LAPIC LVTs are masked, so
    // no interrupt arrives while IF = 1.
    unsafe { asm!("sti", "int 0x44", "cli") };
    check!(
        H_SAVED_RFLAGS.load(Ordering::SeqCst) & rflags::IF != 0 && H_RFLAGS.load(Ordering::SeqCst) & rflags::IF == 0,
        "interrupt gate clears IF (saved RFLAGS keeps it)"
    );
    idt::set_gate(0x44, 0, true, 0);
    // SAFETY: as above.
    unsafe { asm!("sti", "int 0x44", "cli") };
    check!(H_RFLAGS.load(Ordering::SeqCst) & rflags::IF != 0, "trap gate leaves IF set");
    // Both clear TF, NT, RF (and VM) on entry.
    // SAFETY: as above; TF is set only around the INT, whose handler runs
    // with TF = 0, and the trap after INT is taken care of by clearing TF
    // on return (IRETQ restores the saved TF = 1, so one #DB follows).
    idt::set_handler(vector::DB, Some(count_handler_clear_tf));
    unsafe { asm!("pushfq", "or qword ptr [rsp], 0x100", "popfq", "int 0x44", "nop") };
    idt::set_handler(vector::DB, None);
    check!(
        H_RFLAGS.load(Ordering::SeqCst) & rflags::TF == 0 && H_SAVED_RFLAGS.load(Ordering::SeqCst) & rflags::TF != 0,
        "gate entry clears TF (saved RFLAGS keeps it)"
    );
    idt::set_handler(0x44, None);
    idt::reset_gate(0x44);
}

fn count_handler_clear_tf(f: &mut Frame) {
    f.rflags &= !rflags::TF;
}

#[repr(C, align(16))]
struct AltStack([u8; 4096]);
static ALT_STACK: rt::sync::Global<AltStack> = rt::sync::Global::new(AltStack([0; 4096]));

fn iretq_frames() {
    // A same-privilege IRETQ still pops SS:RSP in 64-bit mode (SDM Vol. 2A,
    // IRET: "IA-32e mode" return), and loads RFLAGS from the frame.
    let alt_top = ALT_STACK.as_ptr() as u64 + 4096;
    let (fl, sp): (u64, u64);
    // SAFETY: switches to ALT_STACK for two instructions, then back.
    unsafe {
        asm!("mov r8, rsp", "push 0x10", "push {alt}", "push 0x8c3", "push 0x08",
             "lea rax, [rip + 2f]", "push rax", "iretq",
             "2: pushfq", "pop {fl}", "mov {sp}, rsp", "mov rsp, r8",
             "push 0x2", "popfq",
             alt = in(reg) alt_top, fl = out(reg) fl, sp = out(reg) sp, out("rax") _, out("r8") _)
    };
    check_eq!(sp, alt_top, "iretq loads RSP from the frame");
    check_eq!(fl & 0xfff, 0x8c3, "iretq loads RFLAGS (OF|SF|ZF|CF) from the frame");
}

extern "C" fn user_nothing() {}

static USER_RSP: AtomicU64 = AtomicU64::new(0);

fn ring3() {
    user::init();
    let r = user::call(user_nothing);
    check!(r.is_ok(), "ring 3 round trip via iretq and int 0x80: {:x?}", r.err());
    if let Ok(f) = r {
        check_eq!(f.cs, gdt::UCODE64 as u64, "int from ring 3: saved CS");
        check_eq!(f.ss, gdt::UDATA as u64, "int from ring 3: saved SS");
        check!(f.rsp <= user::stack_top() && f.rsp > user::stack_top() - 64, "int from ring 3: saved user RSP");
    }
    check_eq!(user::exit_handler_ss(), 0u16, "privilege change to ring 0 loads a null SS");
    let top = gdt::stack_top(0);
    let fa = user::exit_frame_addr();
    check_eq!(fa, top - 22 * 8, "ring 3 -> 0 switches to TSS.RSP0");

    // DS was nulled by the IRETQ to ring 3 (DPL 0 < CPL 3).
    let code: u64;
    // SAFETY: only takes the address of the label.
    unsafe { asm!("lea {}, [rip + 2f]", "jmp 3f", "2: mov eax, ds", "int 0x80", "3:", out(reg) code) };
    let r = user::run(code, user::stack_top(), 0x2, 0);
    check!(
        matches!(r, Ok(ref f) if f.rax & 0xffff == 0),
        "iretq to ring 3 nulls DS with DPL 0: {:x?}",
        r.map(|f| f.rax)
    );

    // Privileged and protected things from ring 3.
    let user_fault = |name: &str, code: u64, vector: u8, err: u64, qemu_deviates: bool| {
        let r = user::run(code, user::stack_top(), 0x2, 0);
        EXP.store(code, Ordering::SeqCst);
        expect_sdm(name, r.err(), vector, err, qemu_deviates);
    };
    let (hlt, int41, int3, cli, inb): (u64, u64, u64, u64, u64);
    // SAFETY: only takes label addresses; the code runs in ring 3 later.
    unsafe {
        asm!("lea {0}, [rip + 2f]", "lea {1}, [rip + 3f]", "lea {2}, [rip + 4f]",
             "lea {3}, [rip + 5f]", "lea {4}, [rip + 6f]", "jmp 9f",
             "2: hlt", "3: int 0x41", "4: int3", "5: cli", "6: in al, 0x80", "9:",
             out(reg) hlt, out(reg) int41, out(reg) int3, out(reg) cli, out(reg) inb)
    };
    user_fault("#GP hlt in ring 3", hlt, vector::GP, 0, false);
    user_fault("#GP int 0x41 (DPL 0 gate) from ring 3", int41, vector::GP, 0x41 << 3 | 2, true);
    user_fault("#GP int3 (DPL 0 gate) from ring 3", int3, vector::GP, 3 << 3 | 2, true);
    user_fault("#GP cli in ring 3 with IOPL 0", cli, vector::GP, 0, false);
    // The TSS I/O map base (104) equals the TSS limit + 1: no bitmap.
    user_fault("#GP in in ring 3 with IOPL 0 and no I/O bitmap", inb, vector::GP, 0, false);

    // With IOPL = 3, CLI and IN are allowed in ring 3.
    let code: u64;
    // SAFETY: label address only.
    unsafe { asm!("lea {}, [rip + 2f]", "jmp 3f", "2: cli", "in al, 0x80", "int 0x80", "3:", out(reg) code) };
    let r = user::run(code, user::stack_top(), 0x3002, 0);
    check!(r.is_ok(), "IOPL 3 allows cli and in from ring 3: {:x?}", r.err());

    // #AC: CR0.AM and RFLAGS.AC with a misaligned access in ring 3.
    // SAFETY: AM only matters at CPL 3 with AC set.
    unsafe { arch::write_cr0(arch::read_cr0() | cr0::AM) };
    let code: u64;
    // SAFETY: label address only.
    unsafe { asm!("lea {}, [rip + 2f]", "jmp 3f", "2: mov eax, [rsp - 7]", "int 0x80", "3:", out(reg) code) };
    let r = user::run(code, user::stack_top(), 0x2 | rflags::AC, 0);
    EXP.store(code, Ordering::SeqCst);
    // QEMU TCG does not implement alignment checking.
    expect_sdm("#AC misaligned load in ring 3 with CR0.AM and RFLAGS.AC", r.err(), vector::AC, 0, true);
    let r = user::run(code, user::stack_top(), 0x2, 0);
    check!(r.is_ok(), "no #AC with RFLAGS.AC = 0");
    // SAFETY: restores CR0.
    unsafe { arch::write_cr0(arch::read_cr0() & !cr0::AM) };
    USER_RSP.store(0, Ordering::SeqCst);
}

fn device_not_available() {
    let saved = arch::read_cr0();
    // SAFETY: CR0.TS/EM only change x87 behaviour, restored below.
    unsafe { arch::write_cr0(saved | cr0::TS) };
    let f = fault_of(|| unsafe {
        // SAFETY: faults inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: fninit", e = sym EXP, out("rax") _)
    });
    expect("#NM x87 instruction with CR0.TS", f, vector::NM, 0);
    // SAFETY: as above.
    unsafe { asm!("clts") };
    check!(arch::read_cr0() & cr0::TS == 0, "clts clears CR0.TS");
    // SAFETY: as above.
    unsafe { arch::write_cr0((saved & !cr0::TS) | cr0::EM) };
    let f = fault_of(|| unsafe {
        // SAFETY: faults inside catch.
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "2: fld1", e = sym EXP, out("rax") _)
    });
    expect("#NM x87 instruction with CR0.EM", f, vector::NM, 0);
    // SAFETY: restores CR0.
    unsafe { arch::write_cr0(saved) };
}

static STEPS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];
static NSTEPS: AtomicU64 = AtomicU64::new(0);
static STOP_AT: AtomicU64 = AtomicU64::new(0);
static DR6_SEEN: AtomicU64 = AtomicU64::new(0);

fn step_handler(f: &mut Frame) {
    let n = NSTEPS.fetch_add(1, Ordering::SeqCst) as usize;
    if n < STEPS.len() {
        STEPS[n].store(f.rip, Ordering::SeqCst);
    }
    DR6_SEEN.fetch_or(arch::read_dr6(), Ordering::SeqCst);
    // SAFETY: DR6 is cleared by software (SDM Vol. 3A, 19.2.3).
    unsafe { arch::write_dr6(0xffff_0ff0) };
    if f.rip == STOP_AT.load(Ordering::SeqCst) || n >= 16 {
        f.rflags &= !rflags::TF;
    }
}

fn steps() -> ([u64; 8], usize) {
    let n = NSTEPS.load(Ordering::SeqCst) as usize;
    let mut v = [0; 8];
    for (i, s) in v.iter_mut().enumerate() {
        *s = STEPS[i].load(Ordering::SeqCst);
    }
    (v, n)
}

fn reset_steps() {
    NSTEPS.store(0, Ordering::SeqCst);
    DR6_SEEN.store(0, Ordering::SeqCst);
    for s in &STEPS {
        s.store(0, Ordering::SeqCst);
    }
}

fn single_step() {
    idt::set_handler(vector::DB, Some(step_handler));
    // SAFETY: DR6 is writable in ring 0.
    unsafe { arch::write_dr6(0) };
    check_eq!(arch::read_dr6() & 0xffff_ffff, 0xffff_0ff0u64, "dr6 reads back its fixed bits");

    // POPF that sets TF: no trap after the POPF itself (TF was clear when it
    // started), then one trap after each instruction, saved RIP = next
    // instruction, DR6.BS set (SDM Vol. 3A, 19.2.3 and 19.3.1.4
    // "Single-Step Exception Condition").
    reset_steps();
    // SAFETY: TF is on for four instructions; the handler clears it in the
    // saved RFLAGS when the trap at label 6 arrives.
    unsafe {
        asm!("lea rax, [rip + 6f]", "mov [rip + {stop}], rax",
             "lea rax, [rip + 3f]", "mov [rip + {e}], rax",
             "pushfq", "or qword ptr [rsp], 0x100", "popfq",
             "2: nop", "3: mov eax, 1", "4: add eax, 2", "5: nop", "6:",
             stop = sym STOP_AT, e = sym EXP, out("rax") _)
    };
    let (v, n) = steps();
    let l3 = exp();
    // nop (1 byte), mov eax,1 (5), add eax,2 (3), nop (1)
    check!(
        n == 4 && v[0] == l3 && v[1] == l3 + 5 && v[2] == l3 + 8 && v[3] == l3 + 9,
        "single step: traps after each instruction, none after the popf: n={} {:x?} (label 3 = {:#x})",
        n,
        &v[..4],
        l3
    );
    check!(DR6_SEEN.load(Ordering::SeqCst) & (1 << 14) != 0, "single step sets DR6.BS");

    // MOV SS inhibits the single-step trap until after the next instruction
    // (SDM Vol. 3A, 7.8.3 "Masking Exceptions and Interrupts When Switching
    // Stacks"): no trap with RIP = the instruction after MOV SS.
    reset_steps();
    // SAFETY: as above; SS is reloaded with its own value.
    unsafe {
        asm!("lea rax, [rip + 6f]", "mov [rip + {stop}], rax",
             "lea rax, [rip + 3f]", "mov [rip + {e}], rax",
             "mov ecx, ss",
             "pushfq", "or qword ptr [rsp], 0x100", "popfq",
             "2: nop", "3: mov ss, ecx", "4: nop", "5: nop", "6:",
             stop = sym STOP_AT, e = sym EXP, out("rax") _, out("rcx") _)
    };
    let (v, n) = steps();
    let l3 = exp();
    // mov ss, ecx is 2 bytes: label 4 = l3 + 2, 5 = l3 + 3, 6 = l3 + 4.
    check!(
        n == 3 && v[0] == l3 && v[1] == l3 + 3 && v[2] == l3 + 4,
        "single step: mov ss delays the trap past the next instruction: n={} {:x?} (label 3 = {:#x})",
        n,
        &v[..4],
        l3
    );
    idt::set_handler(vector::DB, None);
}

fn bp_handler(f: &mut Frame) {
    let n = NSTEPS.fetch_add(1, Ordering::SeqCst) as usize;
    if n < STEPS.len() {
        STEPS[n].store(f.rip, Ordering::SeqCst);
    }
    DR6_SEEN.store(arch::read_dr6(), Ordering::SeqCst);
    // SAFETY: DR6 is cleared by software.
    unsafe { arch::write_dr6(0) };
    // RF suppresses the instruction breakpoint when the faulting instruction
    // is restarted (SDM Vol. 3A, 19.3.1.1).
    f.rflags |= rflags::RF;
}

static WATCHED: AtomicU64 = AtomicU64::new(0);

fn debug_registers() {
    idt::set_handler(vector::DB, Some(bp_handler));

    // DR0 instruction breakpoint: a fault, RIP = the instruction, DR6.B0.
    reset_steps();
    // SAFETY: DR0/DR7 set and cleared around one instruction.
    unsafe {
        asm!("lea rax, [rip + 2f]", "mov [rip + {e}], rax", "mov dr0, rax",
             "mov eax, 1", "mov dr7, rax",
             "2: nop",
             "xor eax, eax", "mov dr7, rax",
             e = sym EXP, out("rax") _)
    };
    let (v, n) = steps();
    check!(
        n == 1 && v[0] == exp(),
        "DR0 execute breakpoint: fault at the instruction, RF resumes: n={} {:x?}",
        n,
        &v[..2]
    );
    check_eq!(DR6_SEEN.load(Ordering::SeqCst) & 0xffff_ffff, 0xffff_0ff1u64, "DR0 hit sets DR6.B0 only");

    // DR1 write watchpoint, 8 bytes: a trap after the writing instruction.
    let dr7_w = 1 << 2 | 0b01 << 20 | 0b10 << 22;
    let addr = &WATCHED as *const AtomicU64 as u64;
    reset_steps();
    // SAFETY: DR1/DR7 set and cleared around the accesses.
    unsafe {
        asm!("mov dr1, {a}", "mov dr7, {d}",
             "lea rax, [rip + 3f]", "mov [rip + {e}], rax",
             "mov rax, [{a}]",              // read: no hit with RW = 01
             "2: mov qword ptr [{a}], 5",   // write: hit
             "3: mov byte ptr [{a} + 3], 1", // partial overlap: hit
             "4: mov byte ptr [{a} + 8], 1", // outside: no hit
             "xor eax, eax", "mov dr7, rax",
             a = in(reg) addr, d = in(reg) dr7_w as u64, e = sym EXP, out("rax") _)
    };
    let (v, n) = steps();
    let l3 = exp();
    // mov qword [a], imm32 is 7 bytes; mov byte [a+3], imm8 is 4 bytes (no
    // SIB since the base is not rsp/r12 in practice); compare the first trap
    // exactly and the second only by count.
    check!(
        n == 2 && v[0] == l3,
        "DR1 write watchpoint: traps after the two overlapping writes only: n={} {:x?}",
        n,
        &v[..3]
    );
    check!(DR6_SEEN.load(Ordering::SeqCst) & 0xf == 0b10, "DR1 hit sets DR6.B1");
    let _ = WATCHED.load(Ordering::SeqCst);

    // DR2 read/write watchpoint, 4 bytes: reads hit too.
    let dr7_rw = 1 << 4 | 0b11 << 24 | 0b11 << 26;
    reset_steps();
    // SAFETY: DR2/DR7 set and cleared around the access.
    unsafe {
        asm!("mov dr2, {a}", "mov dr7, {d}",
             "lea rax, [rip + 3f]", "mov [rip + {e}], rax",
             "2: mov eax, [{a}]", "3: nop",
             "xor eax, eax", "mov dr7, rax",
             a = in(reg) addr, d = in(reg) dr7_rw as u64, e = sym EXP, out("rax") _)
    };
    let (v, n) = steps();
    check!(
        n == 1 && v[0] == exp() && DR6_SEEN.load(Ordering::SeqCst) & 0xf == 0b100,
        "DR2 read/write watchpoint hit by a read: n={} {:x?}",
        n,
        &v[..2]
    );

    // Disabled (L3 = G3 = 0): no hit.
    reset_steps();
    // SAFETY: DR3 set with DR7 enabling nothing.
    unsafe { asm!("mov dr3, {a}", "mov qword ptr [{a}], 7", a = in(reg) addr) };
    check_eq!(NSTEPS.load(Ordering::SeqCst), 0, "disabled breakpoint does not fire");
    check!(arch::read_dr3() == addr, "dr3 reads back");
    idt::set_handler(vector::DB, None);
}
