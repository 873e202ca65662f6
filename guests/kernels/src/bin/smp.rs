//! `smp`: multiprocessor startup (SDM Vol. 3A, 9.4 "Multiple-Processor (MP)
//! Initialization"; ACPI 6.x, 5.2.12 "Multiple APIC Description Table").
//!
//! The CPU count comes from fw_cfg (key 0x05) and is cross-checked against
//! the enabled local APICs in the ACPI MADT. The BSP starts every AP with
//! one broadcast INIT and a single STARTUP IPI (vector 0x08: trampoline at
//! 0x8000, real mode -> protected mode -> long mode). Each AP checks it is
//! in long mode, reports its APIC ID, runs a LOCK XADD loop on a shared
//! counter, sends a fixed IPI to the BSP, then waits with interrupts on for
//! an IPI back from the BSP. Must pass with any `-smp` from 1 to 16.
#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use rt::apic::{self, icr};
use rt::arch::{self, msr};
use rt::idt::{self, Frame};
use rt::{check, check_eq, println};

rt::entry!("smp", main);

const MAX: usize = rt::boot::MAX_CPUS;
/// AP i sends vector V_TO_BSP + i: IPIs with one vector coalesce in the IRR
/// while the BSP is busy, so each AP gets its own (SDM Vol. 3A, 13.8.4).
const V_TO_BSP: u8 = 0x70;
const V_TO_AP: u8 = 0x60;
const ADDS: u64 = 10_000;

static ARRIVED: AtomicU32 = AtomicU32::new(0);
static BSP_ID: AtomicU32 = AtomicU32::new(0);
static APIC_IDS: [AtomicU32; MAX] = [const { AtomicU32::new(u32::MAX) }; MAX];
static CPUID_IDS: [AtomicU32; MAX] = [const { AtomicU32::new(u32::MAX) }; MAX];
static LONG_MODE: AtomicU32 = AtomicU32::new(0);
static SHARED: AtomicU64 = AtomicU64::new(0);
static DONE_ADDING: AtomicU32 = AtomicU32::new(0);
static BSP_IPIS: AtomicU32 = AtomicU32::new(0);
static BSP_IPI_BITS: AtomicU32 = AtomicU32::new(0);
static AP_IPIS: [AtomicU32; MAX] = [const { AtomicU32::new(0) }; MAX];

fn bsp_ipi(f: &mut Frame) {
    BSP_IPIS.fetch_add(1, Ordering::SeqCst);
    BSP_IPI_BITS.fetch_or(1 << (f.vector as u8 - V_TO_BSP), Ordering::SeqCst);
    apic::eoi();
}

fn ap_ipi(_f: &mut Frame) {
    let id = apic::id();
    for i in 0..MAX {
        if APIC_IDS[i].load(Ordering::SeqCst) == id {
            AP_IPIS[i].fetch_add(1, Ordering::SeqCst);
        }
    }
    apic::eoi();
}

fn ap_main(index: u32) -> ! {
    let i = index as usize;
    // SAFETY: EFER exists on every long-mode CPU.
    if unsafe { arch::rdmsr(msr::EFER) } & msr::EFER_LMA != 0 {
        LONG_MODE.fetch_add(1, Ordering::SeqCst);
    }
    apic::enable();
    APIC_IDS[i].store(apic::id(), Ordering::SeqCst);
    CPUID_IDS[i].store(arch::cpuid(1, 0).ebx >> 24, Ordering::SeqCst);
    ARRIVED.fetch_add(1, Ordering::SeqCst);
    for _ in 0..ADDS {
        SHARED.fetch_add(1, Ordering::SeqCst); // LOCK XADD
    }
    DONE_ADDING.fetch_add(1, Ordering::SeqCst);
    apic::send_ipi(BSP_ID.load(Ordering::SeqCst), icr::FIXED | (V_TO_BSP as u32 + index));
    // Wait for the BSP's IPI, halting with interrupts on.
    loop {
        // SAFETY: V_TO_AP has a handler; nothing else targets this CPU.
        unsafe { core::arch::asm!("sti", "hlt", "cli") };
    }
}

fn wait(cond: impl Fn() -> bool) -> bool {
    for _ in 0..2_000 {
        if cond() {
            return true;
        }
        arch::io_delay(1000);
    }
    cond()
}

fn main(_mb: u32) {
    let n_fwcfg = rt::fwcfg::cpu_count();
    check!(n_fwcfg.is_some(), "fw_cfg present");
    let n = n_fwcfg.unwrap_or(1) as usize;
    println!("cpus: {}", n);
    check!((1..=MAX).contains(&n), "cpu count 1..={}", MAX);
    match madt_cpus() {
        Some(m) => check_eq!(m, n, "ACPI MADT enabled local APICs match fw_cfg"),
        None => check!(false, "ACPI MADT found"),
    };

    for i in 1..MAX as u8 {
        idt::set_handler(V_TO_BSP + i, Some(bsp_ipi));
    }
    idt::set_handler(V_TO_AP, Some(ap_ipi));
    let bsp_id = apic::id();
    BSP_ID.store(bsp_id, Ordering::SeqCst);
    rt::smp::start_aps(ap_main);
    // SAFETY: only V_TO_BSP is expected on the BSP.
    unsafe { arch::sti() };
    let all = wait(|| ARRIVED.load(Ordering::SeqCst) as usize == n - 1);
    check!(all, "all {} APs arrived after one INIT + one SIPI (got {})", n - 1, ARRIVED.load(Ordering::SeqCst));
    check_eq!(LONG_MODE.load(Ordering::SeqCst) as usize, n - 1, "every AP reached long mode");

    let mut ids = [u32::MAX; MAX];
    ids[0] = bsp_id;
    for i in 1..n {
        ids[i] = APIC_IDS[i].load(Ordering::SeqCst);
        println!("ap {}: apic id {}", i, ids[i]);
        check_eq!(CPUID_IDS[i].load(Ordering::SeqCst), ids[i], "ap {}: LAPIC ID = CPUID initial APIC ID", i);
    }
    let unique = (0..n).all(|i| !ids[..i].contains(&ids[i]));
    check!(unique, "APIC IDs are unique");

    for _ in 0..ADDS {
        SHARED.fetch_add(1, Ordering::SeqCst);
    }
    let added = wait(|| DONE_ADDING.load(Ordering::SeqCst) as usize == n - 1);
    check!(
        added && SHARED.load(Ordering::SeqCst) == ADDS * n as u64,
        "LOCK XADD from {} CPUs: {} = {}",
        n,
        SHARED.load(Ordering::SeqCst),
        ADDS * n as u64
    );
    let want = ((1u32 << n) - 1) & !1;
    let ipis = wait(|| BSP_IPI_BITS.load(Ordering::SeqCst) == want);
    check!(
        ipis && BSP_IPIS.load(Ordering::SeqCst) as usize == n - 1,
        "every AP's fixed IPI reached the BSP ({} of {})",
        BSP_IPIS.load(Ordering::SeqCst),
        n - 1
    );

    for &id in &ids[1..n] {
        apic::send_ipi(id, icr::FIXED | V_TO_AP as u32);
    }
    let back = wait(|| (1..n).all(|i| AP_IPIS[i].load(Ordering::SeqCst) == 1));
    check!(back, "the BSP's fixed IPI reached every AP");
    arch::cli();
}

/// Counts enabled processor local APIC entries in the MADT, found through
/// the RSDP in the BIOS area (0xe0000-0xfffff) and the RSDT.
fn madt_cpus() -> Option<usize> {
    let rsdp = (0xe_0000u64..0x10_0000).step_by(16).find(|&a| {
        // SAFETY: BIOS ROM area, identity mapped.
        unsafe { core::slice::from_raw_parts(a as *const u8, 8) == b"RSD PTR " }
    })?;
    // SAFETY: RSDP layout: RSDT address at offset 16.
    let rsdt = unsafe { core::ptr::read_unaligned((rsdp + 16) as *const u32) } as u64;
    // SAFETY: ACPI tables are in RAM below 4 GiB; header length at +4.
    let len = unsafe { core::ptr::read_unaligned((rsdt + 4) as *const u32) } as u64;
    for k in 0..(len - 36) / 4 {
        // SAFETY: RSDT entries are 32-bit table addresses after the header.
        let t = unsafe { core::ptr::read_unaligned((rsdt + 36 + 4 * k) as *const u32) } as u64;
        // SAFETY: table header signature.
        if unsafe { core::slice::from_raw_parts(t as *const u8, 4) } != b"APIC" {
            continue;
        }
        // SAFETY: MADT length; entries start at offset 44.
        let tlen = unsafe { core::ptr::read_unaligned((t + 4) as *const u32) } as u64;
        let mut p = t + 44;
        let mut count = 0;
        while p + 2 <= t + tlen {
            // SAFETY: each entry: type, length, body.
            let (typ, elen) = unsafe { (*(p as *const u8), *((p + 1) as *const u8)) };
            // Type 0: processor local APIC; flags at +4, bit 0 = enabled.
            // SAFETY: within the entry.
            if typ == 0 && unsafe { core::ptr::read_unaligned((p + 4) as *const u32) } & 1 != 0 {
                count += 1;
            }
            if elen == 0 {
                break;
            }
            p += elen as u64;
        }
        return Some(count);
    }
    None
}
