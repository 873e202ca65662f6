//! Interrupt descriptor table, exception recording and recovery.
//!
//! Every one of the 256 vectors has a 16-byte assembly stub that pushes a
//! zero error code where the CPU pushes none (SDM Vol. 3A, 7.13 "Error
//! Code"; vectors 8, 10-14, 17, 21, 29 and 30 push one), then the vector
//! number, and jumps to a common path that saves the general registers as a
//! [`Frame`] and calls [`rt_trap`]. The dispatcher:
//!
//! 1. records the event as the last [`Fault`] (vector, error code, RIP, CR2)
//!    and bumps a per-vector counter;
//! 2. calls the kernel's handler for that vector if one is installed
//!    ([`set_handler`]); the handler may edit the frame (e.g. skip the
//!    faulting instruction), and the stub returns with IRETQ;
//! 3. otherwise, for exceptions inside [`catch`], resumes after the `catch`
//!    call with `Err(fault)`;
//! 4. otherwise prints a `FAIL` line and exits with failure.
//!
//! Default gates: 64-bit interrupt gates (IF cleared on entry), selector
//! 0x08, DPL 0; #DF uses IST1, NMI IST2, #MC IST3 (SDM Vol. 3A, 7.14.5
//! "Interrupt Stack Table").

use crate::arch;
use crate::gdt;
use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Exception vectors (SDM Vol. 3A, Table 7-1).
pub mod vector {
    /// Divide error.
    pub const DE: u8 = 0;
    /// Debug.
    pub const DB: u8 = 1;
    /// Non-maskable interrupt.
    pub const NMI: u8 = 2;
    /// Breakpoint.
    pub const BP: u8 = 3;
    /// Overflow.
    pub const OF: u8 = 4;
    /// BOUND range exceeded.
    pub const BR: u8 = 5;
    /// Invalid opcode.
    pub const UD: u8 = 6;
    /// Device not available.
    pub const NM: u8 = 7;
    /// Double fault.
    pub const DF: u8 = 8;
    /// Invalid TSS.
    pub const TS: u8 = 10;
    /// Segment not present.
    pub const NP: u8 = 11;
    /// Stack-segment fault.
    pub const SS: u8 = 12;
    /// General protection.
    pub const GP: u8 = 13;
    /// Page fault.
    pub const PF: u8 = 14;
    /// x87 floating-point error.
    pub const MF: u8 = 16;
    /// Alignment check.
    pub const AC: u8 = 17;
    /// Machine check.
    pub const MC: u8 = 18;
    /// SIMD floating-point exception.
    pub const XM: u8 = 19;
    /// Control protection.
    pub const CP: u8 = 21;
}

/// Registers saved on the stack by the common stub, lowest address first,
/// followed by what the CPU pushed (SDM Vol. 3A, 7.14.2 "64-Bit Mode Stack
/// Frame").
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
#[allow(missing_docs)]
pub struct Frame {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    /// Vector number, pushed by the stub.
    pub vector: u64,
    /// Error code pushed by the CPU, or 0 pushed by the stub.
    pub error_code: u64,
    pub rip: u64,
    pub cs: u64,
    pub rflags: u64,
    pub rsp: u64,
    pub ss: u64,
}

/// An exception or interrupt as seen by the dispatcher.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Fault {
    /// Vector number.
    pub vector: u8,
    /// Error code (0 if the vector has none).
    pub error_code: u64,
    /// RIP in the frame (faulting instruction for faults, next one for traps).
    pub rip: u64,
    /// CR2 when the dispatcher ran.
    pub cr2: u64,
}

impl Fault {
    /// True if this fault has the given vector and error code.
    pub fn is(&self, vector: u8, error_code: u64) -> bool {
        self.vector == vector && self.error_code == error_code
    }
}

/// A kernel-installed handler; it may modify the frame before IRETQ.
pub type Handler = fn(&mut Frame);

#[repr(C, align(16))]
#[derive(Clone, Copy)]
struct Gate([u64; 2]);

#[repr(C, align(4096))]
struct Idt([Gate; 256]);

static IDT: crate::sync::Global<Idt> = crate::sync::Global::new(Idt([Gate([0; 2]); 256]));
static HANDLERS: [AtomicUsize; 256] = [const { AtomicUsize::new(0) }; 256];
static COUNTS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
static LAST_VECTOR: AtomicU64 = AtomicU64::new(u64::MAX);
static LAST_ERROR: AtomicU64 = AtomicU64::new(0);
static LAST_RIP: AtomicU64 = AtomicU64::new(0);
static LAST_CR2: AtomicU64 = AtomicU64::new(0);

global_asm!(
    r#"
    .section .text.idt, "ax"
    .align 16
    .globl __idt_stubs
__idt_stubs:
    .irp hi, 0,1,2,3,4,5,6,7,8,9,a,b,c,d,e,f
    .irp lo, 0,1,2,3,4,5,6,7,8,9,a,b,c,d,e,f
    .align 16
    .if (0x\hi\lo == 8) || ((0x\hi\lo >= 10) && (0x\hi\lo <= 14)) || (0x\hi\lo == 17) || (0x\hi\lo == 21) || (0x\hi\lo == 29) || (0x\hi\lo == 30)
    .else
    push    $0
    .endif
    push    $0x\hi\lo
    jmp     __idt_common
    .endr
    .endr

__idt_common:
    push    %rax
    push    %rcx
    push    %rdx
    push    %rbx
    push    %rbp
    push    %rsi
    push    %rdi
    push    %r8
    push    %r9
    push    %r10
    push    %r11
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    mov     %rsp, %rdi
    mov     %rsp, %rbx
    and     $-16, %rsp
    cld
    call    rt_trap
    mov     %rbx, %rsp
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %r11
    pop     %r10
    pop     %r9
    pop     %r8
    pop     %rdi
    pop     %rsi
    pop     %rbp
    pop     %rbx
    pop     %rdx
    pop     %rcx
    pop     %rax
    add     $16, %rsp
    iretq

/* u64 rt_catch_raw(void (*f)(void *), void *arg): 0 if f returned, 1 if an
 * exception unwound to here (see catch()). */
    .globl rt_catch_raw
rt_catch_raw:
    push    %rbp
    push    %rbx
    push    %r12
    push    %r13
    push    %r14
    push    %r15
    push    __catch_rsp(%rip)
    pushfq
    mov     %rsp, __catch_rsp(%rip)
    sub     $8, %rsp
    mov     %rdi, %rax
    mov     %rsi, %rdi
    call    *%rax
    add     $16, %rsp               /* alignment pad and saved RFLAGS */
    xor     %eax, %eax
    jmp     2f
    .globl __catch_landing
__catch_landing:                    /* IRETQ lands here with RSP = __catch_rsp */
    popfq
    mov     $1, %eax
2:  pop     __catch_rsp(%rip)
    pop     %r15
    pop     %r14
    pop     %r13
    pop     %r12
    pop     %rbx
    pop     %rbp
    ret

    .section .data.idt, "aw"
    .align 8
    .globl __catch_rsp
__catch_rsp: .quad 0
"#,
    options(att_syntax)
);

extern "C" {
    static __idt_stubs: u8;
    static __catch_landing: u8;
    static mut __catch_rsp: u64;
    fn rt_catch_raw(f: extern "C" fn(*mut u8), arg: *mut u8) -> u64;
}

/// Address of the runtime's entry stub for `vector`.
pub fn stub(vector: u8) -> u64 {
    // Stubs are 16 bytes apart.
    &raw const __idt_stubs as u64 + 16 * vector as u64
}

/// Builds a 64-bit IDT gate (SDM Vol. 3A, 7.14.1 "64-Bit Mode IDT").
/// `typ` is 0xE (interrupt gate) or 0xF (trap gate).
pub const fn gate(offset: u64, selector: u16, ist: u8, typ: u8, dpl: u8) -> [u64; 2] {
    let lo = (offset & 0xffff)
        | (selector as u64) << 16
        | ((ist & 7) as u64) << 32
        | ((0x80 | (dpl & 3) << 5 | (typ & 0xf)) as u64) << 40
        | ((offset >> 16) & 0xffff) << 48;
    [lo, offset >> 32]
}

/// Installs a raw gate for `vector`.
pub fn set_gate_raw(vector: u8, g: [u64; 2]) {
    // SAFETY: a single 16-byte slot of the IDT is written; the IDT lives for
    // the whole run. Gates are only changed by the boot CPU.
    unsafe {
        let p = (*IDT.as_ptr()).0.as_mut_ptr().add(vector as usize) as *mut u64;
        core::ptr::write_volatile(p, g[0]);
        core::ptr::write_volatile(p.add(1), g[1]);
    }
}

/// Reads the gate for `vector`.
pub fn gate_raw(vector: u8) -> [u64; 2] {
    // SAFETY: reads one slot of the static IDT.
    unsafe {
        let p = (*IDT.as_ptr()).0.as_ptr().add(vector as usize) as *const u64;
        [core::ptr::read_volatile(p), core::ptr::read_volatile(p.add(1))]
    }
}

/// Points `vector` at the runtime stub with the given IST index (0 = none),
/// gate type (trap gates leave IF alone) and DPL (3 lets `INT n` from ring 3
/// through, SDM Vol. 3A, 7.12.1.1 "Protection of Exception- and
/// Interrupt-Handler Procedures").
pub fn set_gate(vector: u8, ist: u8, trap: bool, dpl: u8) {
    set_gate_raw(vector, gate(stub(vector), gdt::KCODE64, ist, if trap { 0xf } else { 0xe }, dpl));
}

/// Restores the default gate for `vector`.
pub fn reset_gate(vector: u8) {
    let ist = match vector {
        vector::DF => 1,
        vector::NMI => 2,
        vector::MC => 3,
        _ => 0,
    };
    set_gate(vector, ist, false, 0);
}

/// IDTR value for the runtime IDT.
pub fn idtr() -> arch::DescriptorTablePointer {
    arch::DescriptorTablePointer { limit: 256 * 16 - 1, base: IDT.as_ptr() as u64 }
}

/// Loads the runtime IDT into IDTR (also used by APs).
pub fn load() {
    // SAFETY: the IDT is static and fully populated by `init`.
    unsafe { arch::lidt(&idtr()) };
}

pub(crate) fn init() {
    for v in 0..=255u8 {
        reset_gate(v);
    }
    load();
}

/// Installs (or with `None` removes) the kernel handler for `vector`.
pub fn set_handler(vector: u8, h: Option<Handler>) {
    HANDLERS[vector as usize].store(h.map_or(0, |f| f as usize), Ordering::SeqCst);
}

/// Number of times `vector` was delivered so far.
pub fn count(vector: u8) -> u64 {
    COUNTS[vector as usize].load(Ordering::SeqCst)
}

/// The most recent exception or interrupt, if any.
pub fn last() -> Option<Fault> {
    let v = LAST_VECTOR.load(Ordering::SeqCst);
    (v != u64::MAX).then(|| Fault {
        vector: v as u8,
        error_code: LAST_ERROR.load(Ordering::SeqCst),
        rip: LAST_RIP.load(Ordering::SeqCst),
        cr2: LAST_CR2.load(Ordering::SeqCst),
    })
}

/// Forgets the last fault (so a later [`last`] shows only new events).
pub fn clear_last() {
    LAST_VECTOR.store(u64::MAX, Ordering::SeqCst);
}

/// Runs `f`; if an exception without an installed handler is raised while it
/// runs (at any privilege level, on the boot CPU), abandons the rest of `f`
/// and returns `Err` with the fault. Nothing in `f` may need dropping.
///
/// Implementation: `rt_catch_raw` saves the callee-saved registers and
/// RFLAGS on the stack and records RSP; the dispatcher then rewrites the
/// IRET frame to return, in ring 0 on that stack, to the landing code that
/// restores them (a longjmp through IRETQ). Only the boot CPU may use it.
pub fn catch<F: FnOnce() -> R, R>(f: F) -> Result<R, Fault> {
    struct Ctx<F, R> {
        f: Option<F>,
        r: Option<R>,
    }
    extern "C" fn tramp<F: FnOnce() -> R, R>(p: *mut u8) {
        // SAFETY: `p` is the `Ctx` passed to rt_catch_raw below.
        let ctx = unsafe { &mut *(p as *mut Ctx<F, R>) };
        if let Some(f) = ctx.f.take() {
            ctx.r = Some(f());
        }
    }
    let mut ctx = Ctx { f: Some(f), r: None };
    clear_last();
    // SAFETY: rt_catch_raw follows the SysV ABI and calls `tramp` with `ctx`.
    let faulted = unsafe { rt_catch_raw(tramp::<F, R>, &mut ctx as *mut Ctx<F, R> as *mut u8) };
    match (faulted, ctx.r) {
        (0, Some(r)) => Ok(r),
        _ => Err(last().unwrap_or_default()),
    }
}

/// Runs `f` and returns the fault it raised, or `None` if it completed.
pub fn fault_of(f: impl FnOnce()) -> Option<Fault> {
    catch(f).err()
}

/// Rewrites `frame` so that IRETQ resumes after the innermost active
/// [`catch`] (which then returns `Err` with the last fault). Returns false,
/// leaving the frame alone, if no `catch` is active. Handlers installed with
/// [`set_handler`] call this to end a test from any privilege level.
pub fn unwind_to_catch(frame: &mut Frame) -> bool {
    // SAFETY: __catch_rsp is only written by rt_catch_raw on this CPU.
    let catch_rsp = unsafe { core::ptr::read_volatile(&raw const __catch_rsp) };
    if catch_rsp == 0 {
        return false;
    }
    frame.rip = &raw const __catch_landing as u64;
    frame.cs = gdt::KCODE64 as u64;
    frame.ss = gdt::KDATA as u64;
    frame.rsp = catch_rsp;
    frame.rflags = 0x2;
    true
}

/// The Rust dispatcher called by every stub.
#[no_mangle]
extern "C" fn rt_trap(frame: &mut Frame) {
    let v = frame.vector as u8;
    let cr2 = arch::read_cr2();
    LAST_ERROR.store(frame.error_code, Ordering::SeqCst);
    LAST_RIP.store(frame.rip, Ordering::SeqCst);
    LAST_CR2.store(cr2, Ordering::SeqCst);
    LAST_VECTOR.store(v as u64, Ordering::SeqCst);
    COUNTS[v as usize].fetch_add(1, Ordering::SeqCst);

    let h = HANDLERS[v as usize].load(Ordering::SeqCst);
    if h != 0 {
        // SAFETY: only `set_handler` stores here, always a `Handler`.
        let h: Handler = unsafe { core::mem::transmute::<usize, Handler>(h) };
        h(frame);
        return;
    }
    if v < 32 && unwind_to_catch(frame) {
        return;
    }
    if v == 0xff {
        return; // APIC spurious vector: no EOI (SDM Vol. 3A, 13.9)
    }
    crate::serial::_print_unlocked(format_args!(
        "FAIL unexpected {} {} error {:#x} at {:#x}:{:#x} rsp {:#x} rflags {:#x} cr2 {:#x}\n",
        if v < 32 { "exception" } else { "interrupt" },
        v,
        frame.error_code,
        frame.cs,
        frame.rip,
        frame.rsp,
        frame.rflags,
        cr2
    ));
    crate::test::record_failure();
    crate::test::summary_line();
    crate::exit(crate::EXIT_FAILURE);
}

/// Executes `INT n` (a software interrupt through gate `N`).
#[inline(always)]
pub fn int<const N: u8>() {
    // SAFETY: software interrupt into an installed gate.
    unsafe { asm!("int {n}", n = const N) };
}
