//! Runtime shared by the Turtles guest test kernels.
//!
//! A kernel is a `no_std`, `no_main` binary that defines
//! `#[no_mangle] extern "C" fn kmain(mb_info: u32) -> !` (the [`entry!`]
//! macro writes it). The runtime provides everything before and around it:
//!
//! * `boot`: a multiboot v1 header with the a.out address kludge (so
//!   `qemu-system-x86_64 -kernel` accepts the ELF64 image), the 32-bit entry,
//!   identity-mapped paging of the first 4 GiB with 2 MiB pages, the switch to
//!   long mode (SDM Vol. 3A, 10.8.5 "Initializing IA-32e Mode"), and the AP
//!   startup trampoline;
//! * [`serial`]: polled COM1 (0x3f8, 115200 8N1) mirrored to port 0xe9, and the
//!   `print!`/`println!` macros;
//! * [`gdt`]: the fixed GDT layout, the 64-bit TSS and descriptor helpers;
//! * [`idt`]: an IDT whose 256 vectors all reach one Rust dispatcher that
//!   records each exception as a [`idt::Fault`], and [`idt::catch`], which runs
//!   a closure and turns an exception inside it into an `Err(Fault)`;
//! * [`test`]: `check!`-style assertions printing `ok`/`FAIL`/`skip` lines and
//!   a final `PASS n` / `FAIL f/n` line followed by the exit;
//! * [`vmx`]: VMX instructions, VMCS encodings, capability MSRs and the
//!   VM-exit trampoline for the guest-hypervisor kernels;
//! * [`arch`], [`apic`], [`fwcfg`], [`multiboot`], [`smp`]: hardware helpers.
//!
//! Exit protocol: [`exit`] writes a byte to the isa-debug-exit port 0xf4;
//! QEMU (and Turtles) terminate with status `(byte << 1) | 1`, so
//! [`EXIT_SUCCESS`] (0x10) becomes 33 and [`EXIT_FAILURE`] (0x11) becomes 35.
//!
//! Memory map seen by every kernel (identity mapped, physical = virtual):
//! the image at 1 MiB (text, data, then bss holding page tables and stacks);
//! the multiboot information follows the image (QEMU puts it right after
//! `__bss_end`); [`SCRATCH_BASE`] (16 MiB) and up is free for kernels to use.
#![no_std]
#![cfg_attr(not(target_os = "none"), allow(dead_code, unused_imports, unused_macros))]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod apic;
pub mod arch;
pub mod boot;
pub mod fwcfg;
pub mod gdt;
pub mod idt;
pub mod multiboot;
pub mod quirks;
pub mod serial;
pub mod smp;
pub mod sync;
pub mod test;
pub mod vmx;

/// isa-debug-exit value for success (QEMU exit status 33).
pub const EXIT_SUCCESS: u8 = 0x10;
/// isa-debug-exit value for failure (QEMU exit status 35).
pub const EXIT_FAILURE: u8 = 0x11;
/// isa-debug-exit I/O port.
pub const DEBUG_EXIT_PORT: u16 = 0xf4;

/// First byte of memory that no part of the runtime uses (16 MiB). Kernels
/// put large buffers, test page tables and copied code here; the run script
/// gives guests 256 MiB.
pub const SCRATCH_BASE: u64 = 0x0100_0000;

extern "C" {
    /// Defined by each kernel (see [`entry!`]).
    fn kmain(mb_info: u32) -> !;
}

/// Terminates the machine through isa-debug-exit. If no such device
/// exists, falls back to a triple fault (QEMU `-no-reboot` then exits with
/// status 0, which no test treats as success).
pub fn exit(code: u8) -> ! {
    serial::flush();
    // SAFETY: port 0xf4 is isa-debug-exit or unassigned; writing it either
    // ends the VM or does nothing.
    unsafe { arch::outb(DEBUG_EXIT_PORT, code) };
    // Still here: no debug-exit device. Load an empty IDT and raise an
    // exception, which becomes a triple fault (SDM Vol. 3A, 7.15 "Exception
    // and Interrupt Reference", interrupt 8).
    let null_idt = arch::DescriptorTablePointer { limit: 0, base: 0 };
    // SAFETY: intentionally fatal.
    unsafe {
        arch::lidt(&null_idt);
        core::arch::asm!("int3", options(nomem, nostack));
    }
    arch::hlt_forever()
}

/// Rust entry point, called from the 64-bit boot code on the boot stack with
/// interrupts disabled.
#[no_mangle]
extern "C" fn rt_start(mb_info: u32) -> ! {
    serial::init();
    gdt::init_bsp();
    idt::init();
    // The firmware leaves the 8259A delivering IRQ0 at vector 8: move it out
    // of the exception range and mask it before anyone sets IF.
    apic::pic_remap(0x20);
    arch::enable_nx_if_supported();
    // SAFETY: defined by the kernel binary with this exact signature.
    unsafe { kmain(mb_info) }
}

#[cfg(target_os = "none")]
#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    serial::_print_unlocked(format_args!("FAIL panic: {}\n", info));
    test::record_failure();
    test::summary_line();
    exit(EXIT_FAILURE)
}

/// Defines `kmain` for a kernel: prints the `TURTLES-TEST <name>` banner and
/// calls `$main(mb_info)`, then prints the summary and exits.
///
/// ```ignore
/// rt::entry!("demo", main);
/// fn main(mb_info: u32) { rt::check!(true, "it boots"); }
/// ```
#[macro_export]
macro_rules! entry {
    ($name:literal, $main:path) => {
        #[no_mangle]
        extern "C" fn kmain(mb_info: u32) -> ! {
            $crate::println!("TURTLES-TEST {}", $name);
            $main(mb_info);
            $crate::test::finish()
        }
    };
}
