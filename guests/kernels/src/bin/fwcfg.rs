//! `fwcfg`: the QEMU firmware configuration device (QEMU
//! docs/specs/fw_cfg.rst), I/O port and DMA interfaces, cross-checked
//! against the multiboot information.
//!
//! Checks: "QEMU" signature; the ID feature bits; RAM size against
//! mem_upper; CPU count; the kernel command line (keys 0x14/0x15) against
//! the multiboot command line (QEMU's multiboot loader prefixes the latter
//! with the kernel file name, so the fw_cfg line must be its tail); the file
//! directory lists etc/e820, whose RAM entries cover what the multiboot map
//! reports; a DMA read of the signature.
#![no_std]
#![no_main]

use rt::arch::{inl, outl};
use rt::fwcfg::{self, key};
use rt::multiboot::Info;
use rt::{check, check_eq, println, skip};

rt::entry!("fwcfg", main);

fn main(mb: u32) {
    check!(fwcfg::present(), "signature is \"QEMU\"");
    let id = fwcfg::read_le(key::ID, 4);
    println!("fw_cfg id features: {:#x}", id);
    check!(id & 1 == 1, "ID: traditional interface bit");

    let info = Info::at(mb);
    check!(info.is_some(), "multiboot info present");
    let Some(info) = info else { return };
    let ram = fwcfg::read_le(key::RAM_SIZE, 8);
    let upper = (info.mem_upper as u64 + 1024) * 1024;
    println!("fw_cfg ram size {:#x}, multiboot 1 MiB + mem_upper = {:#x}", ram, upper);
    if ram < 0xb000_0000 {
        check!(upper <= ram && ram - upper < 1 << 20, "RAM size matches mem_upper (within 1 MiB)");
    } else {
        check!(upper <= ram, "RAM size covers mem_upper");
    }
    let cpus = fwcfg::read_le(key::NB_CPUS, 2);
    let max = fwcfg::read_le(key::MAX_CPUS, 2);
    println!("cpus {} (max {})", cpus, max);
    check!(cpus >= 1 && max >= cpus, "CPU count in 1..=max");

    // Command line.
    let size = fwcfg::read_le(key::CMDLINE_SIZE, 4) as usize;
    let mut buf = [0u8; 512];
    if size == 0 {
        skip!("fw_cfg has no command line (QEMU's multiboot loader does not set one)", "cmdline keys 0x14/0x15");
    } else {
        let n = size.min(buf.len());
        fwcfg::read(key::CMDLINE_DATA, &mut buf[..n]);
        let end = buf[..n].iter().position(|&b| b == 0).unwrap_or(n);
        let fw = core::str::from_utf8(&buf[..end]).unwrap_or("?");
        println!("fw_cfg cmdline: \"{}\"", fw);
        check!(info.cmdline().trim_end().ends_with(fw.trim_end()), "fw_cfg cmdline is the multiboot cmdline's tail");
    }

    // File directory.
    let mut e820 = None;
    let n = fwcfg::for_each_file(|f| {
        println!("file {:#06x} {:6} {}", f.select, f.size, f.name());
        if f.name() == "etc/e820" {
            e820 = Some(*f);
        }
    });
    check!(n > 0, "file directory not empty");
    check!(e820.is_some(), "file directory lists etc/e820");
    if let Some(f) = e820 {
        check!(f.size % 20 == 0 && f.size > 0, "etc/e820 is a whole number of 20-byte entries");
        let mut entry = [0u8; 20];
        let mut covers_1m = false;
        let mut ram_total = 0;
        for i in 0..f.size / 20 {
            if i == 0 {
                fwcfg::read(f.select, &mut entry);
            } else {
                fwcfg::read_more(&mut entry);
            }
            let base = u64::from_le_bytes(entry[0..8].try_into().unwrap());
            let len = u64::from_le_bytes(entry[8..16].try_into().unwrap());
            let typ = u32::from_le_bytes(entry[16..20].try_into().unwrap());
            println!("e820: {:#x} +{:#x} type {}", base, len, typ);
            if typ == 1 {
                ram_total += len;
                covers_1m |= base <= 0x10_0000 && base + len > 0x10_0000;
            }
        }
        check!(covers_1m, "etc/e820 has RAM at 1 MiB");
        check_eq!(ram_total, ram, "etc/e820 RAM entries add up to the RAM size");
    }

    // DMA interface (ID bit 1): FWCfgDmaAccess { be32 control, be32 length,
    // be64 address }, its address written big-endian to ports 0x514/0x518.
    if id & 2 != 0 {
        #[repr(C, align(16))]
        struct Dma {
            control: u32,
            length: u32,
            address: u64,
        }
        let mut sig = [0u8; 4];
        let mut d = Dma {
            control: ((key::SIGNATURE as u32) << 16 | 0x08 | 0x02).to_be(), // select | read
            length: 4u32.to_be(),
            address: (sig.as_mut_ptr() as u64).to_be(),
        };
        let p = &mut d as *mut Dma as u64;
        // SAFETY: the device reads the descriptor and writes `sig` by DMA
        // before the write to 0x518 returns; both are live locals.
        unsafe {
            outl(0x514, ((p >> 32) as u32).to_be());
            outl(0x518, (p as u32).to_be());
            core::ptr::read_volatile(&d.control);
        }
        // SAFETY: volatile reads of memory the device wrote.
        let control = u32::from_be(unsafe { core::ptr::read_volatile(&d.control) });
        let sig = unsafe { core::ptr::read_volatile(&sig) };
        check!(control == 0 && &sig == b"QEMU", "DMA read of the signature (control {:#x})", control);
        // SAFETY: reading the DMA port's signature: "QEMU CFG" as a big-endian
        // 64-bit value (high half at 0x514).
        let hi = unsafe { inl(0x514) };
        check_eq!(u32::from_be(hi).to_be_bytes(), *b"QEMU", "DMA port reads \"QEMU\"");
    } else {
        skip!("fw_cfg without DMA", "DMA interface");
    }
}
