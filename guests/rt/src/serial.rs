//! Console output: the COM1 16550 UART at 0x3f8, polled, plus a mirror of
//! every byte to port 0xe9 (the Bochs/QEMU `-debugcon` port), so output is
//! visible whichever the platform wires up.

use crate::arch::{inb, outb};
use crate::sync::SpinLock;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

/// COM1 base port.
pub const COM1: u16 = 0x3f8;
/// Debug console port.
pub const DEBUGCON: u16 = 0xe9;

const THR: u16 = 0; // transmit holding register (DLAB=0)
const IER: u16 = 1; // interrupt enable (DLAB=0)
const DLL: u16 = 0; // divisor latch low (DLAB=1)
const DLM: u16 = 1; // divisor latch high (DLAB=1)
const FCR: u16 = 2; // FIFO control
const LCR: u16 = 3; // line control
const MCR: u16 = 4; // modem control
const LSR: u16 = 5; // line status
const LSR_THRE: u8 = 1 << 5;
const LSR_TEMT: u8 = 1 << 6;

static LOCK: SpinLock<()> = SpinLock::new(());
static DEBUGCON_ON: AtomicBool = AtomicBool::new(true);

/// Turns the port 0xe9 mirror on or off. QEMU's pc-testdev decodes
/// 0xe8-0xeb, so the `testdev` kernel turns the mirror off.
pub fn set_debugcon(on: bool) {
    DEBUGCON_ON.store(on, Ordering::SeqCst);
}

/// Programs COM1 for 115200 baud, 8 data bits, no parity, 1 stop bit,
/// interrupts off, FIFOs on.
pub fn init() {
    // SAFETY: COM1 registers; the sequence is the standard 16550 setup.
    unsafe {
        outb(COM1 + IER, 0);
        outb(COM1 + LCR, 0x80); // DLAB
        outb(COM1 + DLL, 1); // 115200 / 1
        outb(COM1 + DLM, 0);
        outb(COM1 + LCR, 0x03); // 8N1, DLAB off
        outb(COM1 + FCR, 0x07); // enable + clear FIFOs
        outb(COM1 + MCR, 0x03); // DTR | RTS
    }
}

fn putb(b: u8) {
    // SAFETY: polling LSR and writing THR of COM1; 0xe9 is write-only debug.
    unsafe {
        // Bounded wait: an absent UART reads 0xff (THRE set) and a stuck one
        // must not hang the test forever.
        for _ in 0..100_000 {
            if inb(COM1 + LSR) & LSR_THRE != 0 {
                break;
            }
        }
        outb(COM1 + THR, b);
        if DEBUGCON_ON.load(Ordering::Relaxed) {
            outb(DEBUGCON, b);
        }
    }
}

/// Waits until the UART has sent everything (LSR.TEMT), so the tail of the
/// output is not lost when the machine exits right after.
pub fn flush() {
    for _ in 0..1_000_000 {
        // SAFETY: reading COM1 LSR has no side effects.
        if unsafe { inb(COM1 + LSR) } & LSR_TEMT != 0 {
            break;
        }
    }
}

struct Writer;

impl fmt::Write for Writer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // Lines end in a bare '\n', like the bench guests: harnesses match
        // whole lines without stripping '\r'.
        for b in s.bytes() {
            putb(b);
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments) {
    LOCK.with(|_| {
        let _ = fmt::Write::write_fmt(&mut Writer, args);
    });
}

/// Prints without holding the console lock (fatal paths: the holder may be
/// the code that just faulted).
#[doc(hidden)]
pub fn _print_unlocked(args: fmt::Arguments) {
    LOCK.force_unlock();
    let _ = fmt::Write::write_fmt(&mut Writer, args);
}

/// Prints to the console.
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => { $crate::serial::_print(format_args!($($arg)*)) };
}

/// Prints a line to the console.
#[macro_export]
macro_rules! println {
    () => { $crate::print!("\n") };
    ($($arg:tt)*) => { $crate::serial::_print(format_args!("{}\n", format_args!($($arg)*))) };
}
