//! `pci`: PCI configuration mechanism #1 (PCI Local Bus Specification 3.0,
//! 3.2.2.3.2 "Software Generation of Configuration Transactions") on the
//! i440FX/PIIX3 machine.
//!
//! Checks: CONFIG_ADDRESS (0xcf8) reads back; CONFIG_DATA with the enable
//! bit clear reads all ones; bus 0 enumeration (absent functions read
//! vendor 0xffff, multi-function header bit); the 8086:1237 host bridge at
//! 00:00.0 with class 06/00; 8/16-bit data-port accesses at offsets 1-3
//! agree with 32-bit ones; and, when `-device pci-testdev` is present,
//! sizing of its memory and I/O BARs (writing all ones) with the original
//! values restored, plus a read of its MMIO BAR.
#![no_std]
#![no_main]

use rt::arch::{inb, inl, inw, outl};
use rt::{check, check_eq, println, skip};

rt::entry!("pci", main);

fn addr(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
    0x8000_0000 | (bus as u32) << 16 | (dev as u32) << 11 | (func as u32) << 8 | (reg as u32 & 0xfc)
}

fn read32(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
    // SAFETY: configuration mechanism #1 ports.
    unsafe {
        outl(0xcf8, addr(bus, dev, func, reg));
        inl(0xcfc)
    }
}

fn write32(bus: u8, dev: u8, func: u8, reg: u8, v: u32) {
    // SAFETY: configuration mechanism #1 ports; callers restore what they
    // change.
    unsafe {
        outl(0xcf8, addr(bus, dev, func, reg));
        outl(0xcfc, v);
    }
}

fn main(_mb: u32) {
    // SAFETY: CONFIG_ADDRESS is a plain 32-bit register.
    unsafe {
        outl(0xcf8, 0x8000_0800);
        check_eq!(inl(0xcf8), 0x8000_0800u32, "CONFIG_ADDRESS reads back");
        outl(0xcf8, 0x0000_0000);
        check_eq!(inl(0xcfc), 0xffff_ffffu32, "CONFIG_DATA with the enable bit clear reads all ones");
    }

    let mut found_host = false;
    let mut testdev = None;
    let mut functions = 0;
    for dev in 0..32u8 {
        let id = read32(0, dev, 0, 0);
        if id & 0xffff == 0xffff {
            continue;
        }
        let multi = read32(0, dev, 0, 0x0c) >> 16 & 0x80 != 0;
        for func in 0..if multi { 8 } else { 1 } {
            let id = read32(0, dev, func, 0);
            if id & 0xffff == 0xffff {
                continue;
            }
            functions += 1;
            let class = read32(0, dev, func, 8);
            println!("00:{:02x}.{} {:04x}:{:04x} class {:06x}", dev, func, id & 0xffff, id >> 16, class >> 8);
            if dev == 0 && func == 0 && id == 0x1237_8086 {
                found_host = true;
                check_eq!(class >> 16, 0x0600u32, "host bridge class 06/00");
            }
            if id == 0x0005_1b36 {
                testdev = Some((dev, func));
            }
        }
    }
    check!(found_host, "i440FX host bridge 8086:1237 at 00:00.0");
    check!(functions >= 2, "more than the host bridge on bus 0 ({} functions)", functions);
    check_eq!(read32(0, 31, 7, 0) & 0xffff, 0xffffu32, "absent function reads vendor 0xffff");

    // Sub-dword accesses: the data port offset selects the bytes.
    let dword = read32(0, 0, 0, 0x08);
    // SAFETY: as above.
    let (b1, w2, b3) = unsafe {
        outl(0xcf8, addr(0, 0, 0, 0x08));
        (inb(0xcfd), inw(0xcfe), inb(0xcff))
    };
    check!(
        b1 as u32 == dword >> 8 & 0xff && w2 as u32 == dword >> 16 && b3 as u32 == dword >> 24,
        "8/16-bit config reads at 0xcfd/0xcfe/0xcff match the dword"
    );

    match testdev {
        None => skip!("no pci-testdev (add -device pci-testdev)", "BAR sizing"),
        Some((dev, func)) => bars(dev, func),
    }
}

fn bars(dev: u8, func: u8) {
    let cmd = read32(0, dev, func, 4);
    for (bar, expect_io, expect_size) in [(0u8, false, 4096u32), (1, true, 256)] {
        let reg = 0x10 + 4 * bar;
        let orig = read32(0, dev, func, reg);
        // Disable decoding while sizing (PCI 3.0, 6.2.5.1).
        write32(0, dev, func, 4, cmd & !0x3);
        write32(0, dev, func, reg, 0xffff_ffff);
        let v = read32(0, dev, func, reg);
        write32(0, dev, func, reg, orig);
        write32(0, dev, func, 4, cmd);
        let io = v & 1 == 1;
        let mask = if io { !0x3u32 } else { !0xfu32 };
        let size = (!(v & mask)).wrapping_add(1) & if io { 0xffff } else { 0xffff_ffff };
        println!("BAR{}: orig {:#x} sized {:#x} -> {} size {:#x}", bar, orig, v, if io { "io" } else { "mem" }, size);
        check!(
            io == expect_io && size == expect_size,
            "pci-testdev BAR{} is {} of {:#x} bytes",
            bar,
            if expect_io { "I/O" } else { "memory" },
            expect_size
        );
        check_eq!(read32(0, dev, func, reg), orig, "BAR{} restored", bar);
    }
    // The firmware assigned BAR0 inside the 32-bit PCI hole; read it.
    let bar0 = read32(0, dev, func, 0x10) & !0xf;
    check!((0xc000_0000..0xfec0_0000).contains(&bar0), "BAR0 assigned in the PCI hole ({:#x})", bar0);
    write32(0, dev, func, 4, cmd | 0x2); // memory space enable
                                         // SAFETY: BAR0 is device MMIO, identity mapped uncached; reads have no
                                         // side effects on pci-testdev.
    let first = unsafe { core::ptr::read_volatile(bar0 as u64 as *const u32) };
    check!(first != 0xffff_ffff, "BAR0 MMIO decodes with memory space enabled ({:#x})", first);
}
