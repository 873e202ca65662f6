//! Running code in ring 3 (SDM Vol. 3A, 7.14.4 "Stack Switching in IA-32e
//! Mode" and IRET in Vol. 2A).
//!
//! [`run`] enters ring 3 with IRETQ (CS = 0x2b, SS = 0x23) at `rip`; the user
//! code comes back by executing `INT 0x80` through a DPL-3 interrupt gate,
//! whose handler saves the ring-3 register frame and unwinds to the
//! `catch` in `run`. Any exception in ring 3 ends the run with `Err`.

use core::arch::{asm, global_asm};
use core::sync::atomic::{AtomicU64, Ordering};
use rt::gdt;
use rt::idt::{self, Fault, Frame};
use rt::sync::Global;

/// Vector of the "return to kernel" software interrupt.
pub const EXIT_VECTOR: u8 = 0x80;

static EXIT_FRAME: Global<Frame> = Global::new(Frame {
    r15: 0,
    r14: 0,
    r13: 0,
    r12: 0,
    r11: 0,
    r10: 0,
    r9: 0,
    r8: 0,
    rdi: 0,
    rsi: 0,
    rbp: 0,
    rbx: 0,
    rdx: 0,
    rcx: 0,
    rax: 0,
    vector: 0,
    error_code: 0,
    rip: 0,
    cs: 0,
    rflags: 0,
    rsp: 0,
    ss: 0,
});

#[repr(C, align(16))]
struct Stack([u8; 16384]);
static USER_STACK: Global<Stack> = Global::new(Stack([0; 16384]));

global_asm!(
    r#"
    .section .text.user, "ax"
    .globl user_call_trampoline
/* Ring-3 entry for Rust functions: rdi = extern "C" fn(). */
user_call_trampoline:
    call    *%rdi
    int     $0x80
    ud2
"#,
    options(att_syntax)
);

extern "C" {
    fn user_call_trampoline();
}

static EXIT_SS: AtomicU64 = AtomicU64::new(0);
static EXIT_FRAME_ADDR: AtomicU64 = AtomicU64::new(0);

/// SS seen inside the exit handler: a privilege change to ring 0 in IA-32e
/// mode loads SS with a null selector (SDM Vol. 3A, 7.14.4).
pub fn exit_handler_ss() -> u16 {
    EXIT_SS.load(Ordering::SeqCst) as u16
}

/// Address of the frame the exit handler got (to check it is on RSP0).
pub fn exit_frame_addr() -> u64 {
    EXIT_FRAME_ADDR.load(Ordering::SeqCst)
}

fn exit_handler(frame: &mut Frame) {
    EXIT_SS.store(rt::read_seg!(ss) as u64, Ordering::SeqCst);
    EXIT_FRAME_ADDR.store(frame as *mut Frame as u64, Ordering::SeqCst);
    // SAFETY: runs on the boot CPU inside `run`, the only user of EXIT_FRAME.
    unsafe { *EXIT_FRAME.get() = *frame };
    idt::unwind_to_catch(frame);
}

/// Installs the DPL-3 exit gate and makes the identity map user-accessible.
pub fn init() {
    idt::set_gate(EXIT_VECTOR, 0, false, 3);
    idt::set_handler(EXIT_VECTOR, Some(exit_handler));
    crate::paging::make_identity_user(1);
}

/// Top of the default ring-3 stack.
pub fn stack_top() -> u64 {
    USER_STACK.as_ptr() as u64 + 16384
}

/// Runs ring-3 code at `rip` with `rsp`, `rflags` and `rdi`. Returns the
/// register frame saved by `INT 0x80`, or the exception that ended it.
pub fn run(rip: u64, rsp: u64, rflags: u64, rdi: u64) -> Result<Frame, Fault> {
    let r = idt::catch(|| {
        // SAFETY: builds an IRETQ frame to ring 3; control comes back only
        // through the exception path, which unwinds to this catch.
        unsafe {
            asm!(
                "push {ss}",
                "push {rsp}",
                "push {rflags}",
                "push {cs}",
                "push {rip}",
                "iretq",
                ss = in(reg) gdt::UDATA as u64,
                rsp = in(reg) rsp,
                rflags = in(reg) rflags,
                cs = in(reg) gdt::UCODE64 as u64,
                rip = in(reg) rip,
                in("rdi") rdi,
                options(noreturn)
            )
        }
    });
    // IRET to ring 3 nulls DS/ES (DPL 0 data, SDM Vol. 2A IRET); restore.
    // SAFETY: KDATA is the flat kernel data segment.
    unsafe { asm!("mov ds, {0:x}", "mov es, {0:x}", in(reg) gdt::KDATA) };
    match r {
        Ok(never) => never,
        // SAFETY: written by exit_handler just before the unwind.
        Err(f) if f.vector == EXIT_VECTOR => Ok(unsafe { *EXIT_FRAME.get() }),
        Err(f) => Err(f),
    }
}

/// Runs the Rust function `f` in ring 3 on the default user stack (IF = 0).
pub fn call(f: extern "C" fn()) -> Result<Frame, Fault> {
    run(user_call_trampoline as *const () as u64, stack_top(), 0x2, f as *const () as u64)
}
