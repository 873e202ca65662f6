//! The runtime GDT and the boot CPU's 64-bit TSS.
//!
//! Layout (selectors). The SYSCALL/SYSRET and SYSENTER/SYSEXIT selector
//! arithmetic fixes the order of 0x08..0x30 (SDM Vol. 2B, SYSCALL/SYSRET:
//! SYSRET loads CS = STAR[63:48] + 16 (64-bit) or + 0 (compatibility) and
//! SS = STAR[63:48] + 8; SYSEXIT loads CS = SYSENTER_CS + 32 (64-bit) or + 16
//! and SS = SYSENTER_CS + 40 or + 24).
//!
//! | sel  | descriptor                                   |
//! |------|----------------------------------------------|
//! | 0x08 | kernel code, 64-bit                           |
//! | 0x10 | kernel data                                   |
//! | 0x18 | user code, 32-bit (DPL 3)                     |
//! | 0x20 | user data (DPL 3)                             |
//! | 0x28 | user code, 64-bit (DPL 3)                     |
//! | 0x30 | user data (DPL 3), SS for 64-bit SYSEXIT      |
//! | 0x38 | kernel code, 32-bit                           |
//! | 0x40 | kernel code, 16-bit, base 0, limit 0xffff     |
//! | 0x48 | kernel data, 16-bit, base 0, limit 0xffff     |
//! | 0x50 | 64-bit TSS (two slots)                        |
//! | 0x60.. 0xf8 | free for tests ([`set_descriptor`])    |

use crate::arch;
use crate::sync::Global;
use core::arch::asm;

/// Kernel 64-bit code selector.
pub const KCODE64: u16 = 0x08;
/// Kernel data selector.
pub const KDATA: u16 = 0x10;
/// User 32-bit code selector (RPL 3).
pub const UCODE32: u16 = 0x18 | 3;
/// User data selector (RPL 3).
pub const UDATA: u16 = 0x20 | 3;
/// User 64-bit code selector (RPL 3).
pub const UCODE64: u16 = 0x28 | 3;
/// Second user data selector (RPL 3).
pub const UDATA2: u16 = 0x30 | 3;
/// Kernel 32-bit code selector.
pub const KCODE32: u16 = 0x38;
/// Kernel 16-bit code selector.
pub const KCODE16: u16 = 0x40;
/// Kernel 16-bit data selector.
pub const KDATA16: u16 = 0x48;
/// TSS selector.
pub const TSS: u16 = 0x50;
/// First GDT slot free for tests.
pub const FIRST_FREE: u16 = 0x60;
/// Number of 8-byte slots in the GDT.
pub const ENTRIES: usize = 32;

/// Size of each IST stack and of the ring-0 stack used on privilege changes.
pub const STACK_SIZE: usize = 16 * 1024;

/// 64-bit TSS (SDM Vol. 3A, 9.7 "Task Management in 64-bit Mode").
#[repr(C, packed(4))]
#[derive(Clone, Copy, Debug, Default)]
pub struct Tss {
    _reserved0: u32,
    /// RSP0..RSP2: stacks for privilege-level changes to rings 0..2.
    pub rsp: [u64; 3],
    _reserved1: u64,
    /// IST1..IST7 (index 0 is IST1).
    pub ist: [u64; 7],
    _reserved2: u64,
    _reserved3: u16,
    /// Offset of the I/O permission bitmap from the TSS base.
    pub iomap_base: u16,
}

#[repr(C, align(16))]
struct Stacks([[u8; STACK_SIZE]; 8]);

static TSS_BSP: Global<Tss> = Global::new(Tss {
    _reserved0: 0,
    rsp: [0; 3],
    _reserved1: 0,
    ist: [0; 7],
    _reserved2: 0,
    _reserved3: 0,
    iomap_base: 104,
});
/// Stack 0 is RSP0, stacks 1..=7 are IST1..IST7.
static STACKS: Global<Stacks> = Global::new(Stacks([[0; STACK_SIZE]; 8]));

extern "C" {
    static mut __gdt: [u64; ENTRIES];
}

/// The GDT as a raw pointer to its slots.
pub fn table() -> *mut u64 {
    &raw mut __gdt as *mut u64
}

/// Reads the 8-byte GDT slot for `selector`.
pub fn descriptor(selector: u16) -> u64 {
    // SAFETY: the index is masked into the table.
    unsafe { core::ptr::read_volatile(table().add((selector as usize >> 3) % ENTRIES)) }
}

/// Writes the 8-byte GDT slot for `selector`.
///
/// # Safety
/// The slot must not be in use by a loaded segment register whose
/// descriptor the caller relies on being reloadable.
pub unsafe fn set_descriptor(selector: u16, value: u64) {
    // SAFETY: the index is masked into the table; caller's contract.
    unsafe { core::ptr::write_volatile(table().add((selector as usize >> 3) % ENTRIES), value) }
}

/// Builds a code/data segment descriptor (SDM Vol. 3A, 3.4.5 "Segment
/// Descriptors"). `access` is byte 5 (P, DPL, S, type), `flags` the high
/// nibble of byte 6 (G, D/B, L, AVL).
pub const fn seg_descriptor(base: u32, limit: u32, access: u8, flags: u8) -> u64 {
    (limit as u64 & 0xffff)
        | (base as u64 & 0xff_ffff) << 16
        | (access as u64) << 40
        | ((limit as u64 >> 16) & 0xf) << 48
        | ((flags as u64) & 0xf) << 52
        | ((base as u64 >> 24) & 0xff) << 56
}

/// The two slots of a 64-bit system descriptor (TSS or LDT; `typ` 9 = TSS
/// available, 2 = LDT) for `base`/`limit`, present, DPL 0.
pub const fn system_descriptor(base: u64, limit: u32, typ: u8) -> [u64; 2] {
    [seg_descriptor(base as u32, limit, 0x80 | typ, 0), base >> 32]
}

/// Top of IST stack `n` (1..=7), or of the RSP0 stack for `n == 0`.
pub fn stack_top(n: usize) -> u64 {
    // SAFETY: only the address is computed.
    let base = unsafe { (*STACKS.as_ptr()).0.as_ptr() as u64 };
    base + ((n + 1) * STACK_SIZE) as u64
}

/// The boot CPU's TSS.
///
/// # Safety
/// See [`Global::get`].
pub unsafe fn tss() -> &'static mut Tss {
    // SAFETY: caller's contract.
    unsafe { TSS_BSP.get() }
}

/// Fills the TSS (RSP0 and IST1..7 stacks), installs its descriptor and
/// loads TR. Called once on the boot CPU.
pub(crate) fn init_bsp() {
    // SAFETY: runs once at boot on the BSP, before anything else uses the TSS.
    unsafe {
        let tss = TSS_BSP.get();
        tss.rsp[0] = stack_top(0);
        for i in 0..7 {
            tss.ist[i] = stack_top(i + 1);
        }
        let d = system_descriptor(TSS_BSP.as_ptr() as u64, core::mem::size_of::<Tss>() as u32 - 1, 9);
        set_descriptor(TSS, d[0]);
        set_descriptor(TSS + 8, d[1]);
        asm!("ltr {0:x}", in(reg) TSS, options(nostack, preserves_flags));
        // Reload GDTR with the 64-bit base form (the 32-bit entry loaded the
        // same table) and CS, as a sanity check of the table.
        let p = arch::DescriptorTablePointer { limit: (ENTRIES * 8 - 1) as u16, base: table() as u64 };
        arch::lgdt(&p);
    }
}

/// Reloads TR after the TSS descriptor was rewritten (clears the busy bit
/// first: LTR raises #GP on a busy TSS, SDM Vol. 2A, LTR).
///
/// # Safety
/// Must run on the boot CPU.
pub unsafe fn reload_tr() {
    // SAFETY: the TSS descriptor slot exists; caller's contract.
    unsafe {
        let d = descriptor(TSS) & !(1 << 41);
        set_descriptor(TSS, d);
        asm!("ltr {0:x}", in(reg) TSS, options(nostack, preserves_flags));
    }
}

/// Far-returns into `selector`:`rip`-style reload of CS in 64-bit mode.
///
/// # Safety
/// `selector` must be a valid 64-bit code segment.
pub unsafe fn reload_cs(selector: u16) {
    // SAFETY: caller's contract; the lretq pops the pushed CS:RIP.
    unsafe {
        asm!(
            "push {sel}",
            "lea {tmp}, [rip + 2f]",
            "push {tmp}",
            "retfq",
            "2:",
            sel = in(reg) selector as u64,
            tmp = out(reg) _,
        )
    };
}
