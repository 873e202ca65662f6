//! `testdev`: QEMU's pc-testdev (hw/misc/pc-testdev.c; run with
//! `-device pc-testdev`).
//!
//! Checks: the 32-bit scratch register at ports 0xe0-0xe3 with 8/16/32-bit
//! accesses at every offset, seen through the byte-wise alias at 0xe8; ISA
//! IRQ lines raised through ports 0x2000 + n reaching the 8259A (edge) and
//! the I/O APIC (level-triggered: re-delivery while the line stays high,
//! remote IRR); the 64 KiB MMIO scratch at 0xff000000 with 8/16/32/64-bit
//! accesses, REP MOVSB/STOSQ string operations and its last bytes.
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::apic;
use rt::arch::{self, inb, inl, inw, outb, outl, outw};
use rt::idt::{self, Frame};
use rt::{check, check_eq};

rt::entry!("testdev", main);

const IRQ: u8 = 5;
const V_PIC: u8 = 0x20 + IRQ;
const V_IOAPIC: u8 = 0x55;
const MMIO: u64 = 0xff00_0000;
const MMIO_LEN: u64 = 0x1_0000;

static COUNT: AtomicU64 = AtomicU64::new(0);
static REMOTE_IRR: AtomicU64 = AtomicU64::new(0);

fn irq_line(n: u8, level: u8) {
    // SAFETY: pc-testdev IRQ line ports.
    unsafe { outb(0x2000 + n as u16, level) };
}

fn pic_handler(_f: &mut Frame) {
    COUNT.fetch_add(1, Ordering::SeqCst);
    apic::pic_eoi(IRQ);
}

fn level_handler(_f: &mut Frame) {
    let n = COUNT.fetch_add(1, Ordering::SeqCst);
    REMOTE_IRR.fetch_or(((apic::ioapic_read(0x10 + 2 * IRQ as u32) >> 14 & 1) as u64) << n, Ordering::SeqCst);
    if n >= 1 {
        irq_line(IRQ, 0); // second delivery: drop the line before EOI
    }
    apic::eoi(); // EOI broadcast clears remote IRR; a still-high line re-fires
}

fn main(_mb: u32) {
    // Port 0xe9 (debug console mirror) is inside the testdev's 0xe8-0xeb.
    rt::serial::set_debugcon(false);
    ports();
    irqs();
    mmio();
}

fn ports() {
    // SAFETY: pc-testdev scratch ports.
    unsafe {
        outl(0xe0, 0x1234_5678);
        check_eq!(inl(0xe0), 0x1234_5678u32, "port 0xe0: 32-bit write/read");
        check_eq!(inw(0xe0), 0x5678u16, "port 0xe0: 16-bit read of the low half");
        check_eq!(inw(0xe2), 0x1234u16, "port 0xe2: 16-bit read of the high half");
        check_eq!(inb(0xe3), 0x12u8, "port 0xe3: byte read");
        outb(0xe1, 0xab);
        check_eq!(inl(0xe0), 0x1234_ab78u32, "port 0xe1: byte write merges");
        outw(0xe2, 0xcdef);
        check_eq!(inl(0xe0), 0xcdef_ab78u32, "port 0xe2: word write merges");
        // 0xe8 is the same register, implemented byte by byte.
        check_eq!(inl(0xe8), 0xcdef_ab78u32, "port 0xe8 aliases 0xe0 (split into byte accesses)");
        outl(0xe8, 0x0bad_f00d);
        check_eq!(inl(0xe0), 0x0bad_f00du32, "32-bit write at 0xe8 seen at 0xe0");
        // String I/O: OUTSB/INSB through the byte port.
        let src = [1u8, 2, 3, 4];
        let mut dst = [0u8; 4];
        asm!("rep outsb", in("dx") 0xe8u16, inout("rsi") src.as_ptr() => _, inout("rcx") 1u64 => _);
        asm!("rep insb", in("dx") 0xe8u16, inout("rdi") dst.as_mut_ptr() => _, inout("rcx") 4u64 => _);
        check_eq!(dst, [1u8, 1, 1, 1], "rep outsb/insb on port 0xe8");
        let v = [0x1111_1111u32, 0x2222_2222];
        let mut w = [0u32; 2];
        asm!("rep outsd", in("dx") 0xe0u16, inout("rsi") v.as_ptr() => _, inout("rcx") 2u64 => _);
        asm!("rep insd", in("dx") 0xe0u16, inout("rdi") w.as_mut_ptr() => _, inout("rcx") 2u64 => _);
        check_eq!(w, [0x2222_2222u32, 0x2222_2222], "rep outsd/insd on port 0xe0");
    }
}

fn irqs() {
    // Edge through the 8259A: raise then lower.
    idt::set_handler(V_PIC, Some(pic_handler));
    COUNT.store(0, Ordering::SeqCst);
    apic::pic_set_mask(!(1 << IRQ));
    // SAFETY: only IRQ5 is unmasked and it has a handler.
    unsafe { arch::sti() };
    irq_line(IRQ, 1);
    irq_line(IRQ, 0);
    for _ in 0..100_000 {
        if COUNT.load(Ordering::SeqCst) > 0 {
            break;
        }
        core::hint::spin_loop();
    }
    arch::cli();
    apic::pic_set_mask(0xffff);
    check_eq!(COUNT.load(Ordering::SeqCst), 1u64, "IRQ5 raised via port 0x2005 reaches the 8259A once");

    // Level-triggered through the I/O APIC (active high).
    apic::enable();
    idt::set_handler(V_IOAPIC, Some(level_handler));
    COUNT.store(0, Ordering::SeqCst);
    REMOTE_IRR.store(0, Ordering::SeqCst);
    apic::ioapic_route(IRQ as u32, 1 << 15 | V_IOAPIC as u32, apic::id());
    // SAFETY: the vector has a handler; the PIC is masked.
    unsafe { arch::sti() };
    irq_line(IRQ, 1);
    for _ in 0..100_000 {
        if COUNT.load(Ordering::SeqCst) >= 2 {
            break;
        }
        core::hint::spin_loop();
    }
    for _ in 0..100_000 {
        core::hint::spin_loop();
    }
    arch::cli();
    apic::ioapic_mask(IRQ as u32);
    check_eq!(COUNT.load(Ordering::SeqCst), 2u64, "level IRQ re-delivered after EOI while high, not after it drops");
    check_eq!(REMOTE_IRR.load(Ordering::SeqCst), 0b11u64, "remote IRR set while a level interrupt is in service");
    check_eq!(apic::ioapic_read(0x10 + 2 * IRQ as u32) >> 14 & 1, 0u32, "remote IRR clear after the last EOI");
}

fn mmio() {
    let p = MMIO as *mut u8;
    // SAFETY: the pc-testdev MMIO window, identity mapped uncached.
    unsafe {
        core::ptr::write_volatile(p as *mut u64, 0x0102_0304_0506_0708);
        check_eq!(core::ptr::read_volatile(p as *const u64), 0x0102_0304_0506_0708u64, "MMIO 64-bit read back");
        check_eq!(core::ptr::read_volatile(p.add(2) as *const u16), 0x0506u16, "MMIO 16-bit read inside");
        core::ptr::write_volatile(p.add(4) as *mut u32, 0xdead_beef);
        check_eq!(core::ptr::read_volatile(p as *const u64), 0xdead_beef_0506_0708u64, "MMIO 32-bit write merges");
        core::ptr::write_volatile(p.add(7), 0x55);
        check_eq!(core::ptr::read_volatile(p.add(4) as *const u32), 0x55ad_beefu32, "MMIO byte write");
        let end = p.add((MMIO_LEN - 8) as usize) as *mut u64;
        core::ptr::write_volatile(end, 0xfeed_face_cafe_f00d);
        check_eq!(core::ptr::read_volatile(end), 0xfeed_face_cafe_f00du64, "MMIO last qword");
        // Pattern over 256 bytes with REP MOVSB in and out.
        let mut src = [0u8; 256];
        for (i, b) in src.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(7).wrapping_add(3);
        }
        let dst = p.add(0x1000);
        asm!("rep movsb", inout("rsi") src.as_ptr() => _, inout("rdi") dst => _, inout("rcx") 256u64 => _);
        let mut back = [0u8; 256];
        asm!("rep movsb", inout("rsi") dst => _, inout("rdi") back.as_mut_ptr() => _, inout("rcx") 256u64 => _);
        check!(back == src, "MMIO rep movsb out and back (256 bytes)");
        // REP STOSQ fill, then a backwards (DF = 1) MOVSQ copy inside MMIO.
        asm!("rep stosq", in("rax") 0x5a5a_5a5a_a5a5_a5a5u64, inout("rdi") p.add(0x2000) => _, inout("rcx") 16u64 => _);
        asm!("std", "rep movsq", "cld", inout("rsi") p.add(0x2000 + 15 * 8) => _,
             inout("rdi") p.add(0x3000 + 15 * 8) => _, inout("rcx") 16u64 => _);
        let mut ok = true;
        for i in 0..16 {
            ok &= core::ptr::read_volatile(p.add(0x3000 + i * 8) as *const u64) == 0x5a5a_5a5a_a5a5_a5a5;
        }
        check!(ok, "MMIO rep stosq and backwards rep movsq");
    }
}
