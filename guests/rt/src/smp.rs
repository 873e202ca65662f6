//! Starting application processors: copy the real-mode trampoline below
//! 1 MiB and send INIT then one STARTUP IPI to all other CPUs (SDM Vol. 3A,
//! 9.4.4 "MP Initialization Example"; the second SIPI of the typical
//! sequence is left out on purpose, an emulator must honour the first).
//!
//! Each AP runs the trampoline (real mode -> 32-bit protected mode -> long
//! mode), takes the next stack slot, loads the runtime IDT and calls the
//! function passed to [`start_aps`] with its slot index (1, 2, ...). APs do
//! not load a TSS, so they must not take exceptions that need IST stacks or
//! privilege changes, and must not use [`crate::idt::catch`].

use crate::apic::{self, icr};
use crate::boot;
use core::sync::atomic::{AtomicUsize, Ordering};

static AP_ENTRY: AtomicUsize = AtomicUsize::new(0);

/// Starts all APs (broadcast INIT + SIPI) running `entry(index)`. Returns
/// immediately; the caller waits for whatever the APs report.
pub fn start_aps(entry: fn(u32) -> !) {
    AP_ENTRY.store(entry as usize, Ordering::SeqCst);
    let code = boot::ap_trampoline();
    // SAFETY: AP_TRAMPOLINE (0x8000) is conventional memory below 1 MiB that
    // no loader structure uses (QEMU puts the multiboot data above the
    // image); the trampoline is a few dozen bytes.
    unsafe {
        core::ptr::copy_nonoverlapping(code.as_ptr(), boot::AP_TRAMPOLINE as *mut u8, code.len());
    }
    boot::ap_prepare(boot::pml4() as u32);
    apic::enable();
    // INIT (level assert) to all but self, then STARTUP with the page number.
    apic::send_ipi(0, icr::ALL_BUT_SELF | icr::INIT | icr::LEVEL | icr::ASSERT);
    crate::arch::io_delay(10_000);
    apic::send_ipi(0, icr::ALL_BUT_SELF | icr::STARTUP | (boot::AP_TRAMPOLINE >> 12) as u32);
}

#[no_mangle]
extern "C" fn rt_ap_start(index: u32) -> ! {
    crate::idt::load();
    crate::arch::enable_nx_if_supported();
    let e = AP_ENTRY.load(Ordering::SeqCst);
    if e == 0 {
        crate::arch::hlt_forever();
    }
    // SAFETY: only start_aps stores here, always a `fn(u32) -> !`.
    let f: fn(u32) -> ! = unsafe { core::mem::transmute::<usize, fn(u32) -> !>(e) };
    f(index)
}
