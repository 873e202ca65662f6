//! `interrupts`: external interrupt delivery (SDM Vol. 3A, 7.8 "Enabling
//! and Disabling Interrupts", chapter 13 "APIC"; Intel 8254 PIT, 8259A PIC,
//! 82093AA I/O APIC and MC146818 RTC datasheets).
//!
//! Checks: PIT channel 0 -> 8259A (remapped to 0x20) with ISR/IRR reads;
//! PIT -> I/O APIC pin 2 -> local APIC; HLT sleeping until an interrupt;
//! the STI shadow (`sti; hlt` and `sti; nop` with an interrupt already
//! pending); local APIC timer one-shot, periodic and TSC-deadline modes;
//! self-IPIs with IRR/ISR, priority order, TPR and CR8; the RTC periodic
//! interrupt through the slave PIC; port 0x61 (PIT channel 2 gate and
//! output, refresh toggle).
#![no_std]
#![no_main]

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};
use rt::apic::{self, icr, reg};
use rt::arch::{self, feature, inb, msr, outb};
use rt::idt::{self, Frame};
use rt::{check, check_eq, skip};

rt::entry!("interrupts", main);

const PIC_BASE: u8 = 0x20;
const V_IOAPIC_PIT: u8 = 0x50;
const V_TIMER: u8 = 0x40;
const V_IPI_LO: u8 = 0x61;
const V_IPI_HI: u8 = 0x71;
const V_RTC: u8 = PIC_BASE + 8;

/// Per-vector counters and the last frame RIP seen by `counting`.
static TICKS: [AtomicU64; 256] = [const { AtomicU64::new(0) }; 256];
static LAST_RIP: AtomicU64 = AtomicU64::new(0);
/// Order of delivery (vectors) for the priority test.
static ORDER: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static NORDER: AtomicU64 = AtomicU64::new(0);
static ISR_SEEN: AtomicU64 = AtomicU64::new(0);

fn ticks(v: u8) -> u64 {
    TICKS[v as usize].load(Ordering::SeqCst)
}

/// Handler for PIC interrupts: counts, records the 8259A ISR, EOIs the PIC.
fn pic_handler(f: &mut Frame) {
    TICKS[f.vector as usize].fetch_add(1, Ordering::SeqCst);
    LAST_RIP.store(f.rip, Ordering::SeqCst);
    // SAFETY: OCW3 "read ISR" then read, on the master PIC.
    let isr = unsafe {
        outb(0x20, 0x0b);
        let v = inb(0x20);
        outb(0x20, 0x0a); // back to reading IRR
        v
    };
    ISR_SEEN.store(isr as u64, Ordering::SeqCst);
    if f.vector as u8 == V_RTC {
        // SAFETY: reading CMOS register C acknowledges the RTC interrupt.
        unsafe {
            outb(0x70, 0x0c);
            inb(0x71);
        }
    }
    apic::pic_eoi(f.vector as u8 - PIC_BASE);
}

/// Handler for local-APIC-delivered interrupts: counts, records order and
/// whether the vector is in service, EOIs the local APIC.
fn apic_handler(f: &mut Frame) {
    let v = f.vector as u8;
    TICKS[v as usize].fetch_add(1, Ordering::SeqCst);
    LAST_RIP.store(f.rip, Ordering::SeqCst);
    let n = NORDER.fetch_add(1, Ordering::SeqCst) as usize;
    if n < ORDER.len() {
        ORDER[n].store(v as u64, Ordering::SeqCst);
    }
    ISR_SEEN.store(apic::bit(reg::ISR, v) as u64, Ordering::SeqCst);
    apic::eoi();
}

/// Waits (with interrupts enabled, halting between them) until `cond` or a
/// bound on the number of wake-ups/spins.
fn wait(cond: impl Fn() -> bool) -> bool {
    for _ in 0..20_000_000u64 {
        if cond() {
            return true;
        }
        core::hint::spin_loop();
    }
    cond()
}

fn pit_program(channel: u8, mode: u8, count: u16) {
    // SAFETY: PIT command/data ports; lobyte/hibyte access.
    unsafe {
        outb(0x43, channel << 6 | 0x30 | mode << 1);
        outb(0x40 + channel as u16, count as u8);
        outb(0x40 + channel as u16, (count >> 8) as u8);
    }
}

fn main(_mb: u32) {
    for v in 0x20..0x30u8 {
        idt::set_handler(v, Some(pic_handler));
    }
    for v in [V_IOAPIC_PIT, V_TIMER, V_IPI_LO, V_IPI_HI, V_IPI_LO + 4, 0x62, 0x63] {
        idt::set_handler(v, Some(apic_handler));
    }
    pit_pic();
    apic::enable();
    check_eq!(apic::read(reg::SVR) & 0x1ff, 0x1ffu32, "local APIC software-enabled, spurious vector 0xff");
    check_eq!(apic::id(), arch::cpuid(1, 0).ebx >> 24, "LAPIC ID matches CPUID initial APIC ID");
    sti_shadow();
    self_ipi();
    lapic_timer();
    pit_ioapic();
    rtc();
    port61();
}

fn pit_pic() {
    // PIT channel 0, mode 2 (rate generator), ~1 kHz.
    pit_program(0, 2, 1193);
    apic::pic_set_mask(!1); // IRQ0 only
    let before = ticks(PIC_BASE);
    // SAFETY: only IRQ0 is unmasked and has a handler.
    unsafe { arch::sti() };
    let ok = wait(|| ticks(PIC_BASE) >= before + 5);
    arch::cli();
    check!(ok, "PIT IRQ0 through the 8259A arrives at vector 0x20 (5 ticks)");
    check!(ISR_SEEN.load(Ordering::SeqCst) & 1 == 1, "8259A ISR bit 0 set while IRQ0 is serviced");

    // HLT sleeps until the next tick; the saved RIP is after the HLT.
    let before = ticks(PIC_BASE);
    let after_hlt: u64;
    // SAFETY: IRQ0 wakes the HLT; STI's shadow covers the HLT.
    unsafe { asm!("lea {0}, [rip + 2f]", "sti", "hlt", "2: cli", out(reg) after_hlt) };
    check!(ticks(PIC_BASE) == before + 1, "hlt wakes on IRQ0");
    check_eq!(LAST_RIP.load(Ordering::SeqCst), after_hlt, "interrupt during hlt saves the RIP after hlt");

    // IRR: with IF = 0 the tick stays requested in the PIC.
    let mut irr = 0;
    for _ in 0..5_000_000 {
        // SAFETY: OCW3 read IRR is the default read mode.
        irr = unsafe {
            outb(0x20, 0x0a);
            inb(0x20)
        };
        if irr & 1 != 0 {
            break;
        }
    }
    check!(irr & 1 == 1, "8259A IRR bit 0 set while IF = 0");
    // Drain it.
    // SAFETY: the pending IRQ0 is delivered to its handler.
    unsafe { asm!("sti", "nop", "cli") };
    apic::pic_set_mask(0xffff);
}

fn self_ipi_send(v: u8) {
    apic::send_ipi(0, icr::SELF | icr::FIXED | v as u32);
}

fn sti_shadow() {
    // A self-IPI made pending with IF = 0 is delivered right after the
    // instruction that follows STI, not before it (SDM Vol. 2B, STI).
    self_ipi_send(V_IPI_LO);
    check!(apic::bit(reg::IRR, V_IPI_LO), "self-IPI pending in IRR while IF = 0");
    let before = ticks(V_IPI_LO);
    let (l_nop, l_after): (u64, u64);
    // SAFETY: the pending vector has a handler.
    unsafe {
        asm!("lea {0}, [rip + 2f]", "lea {1}, [rip + 3f]", "sti", "2: nop", "3: cli", out(reg) l_nop, out(reg) l_after)
    };
    check!(ticks(V_IPI_LO) == before + 1, "pending interrupt delivered after sti");
    check!(
        LAST_RIP.load(Ordering::SeqCst) == l_after && l_after != l_nop,
        "sti shadow: delivered after the instruction following sti"
    );
    // `sti; hlt` with an interrupt pending: the HLT is entered and the
    // interrupt wakes it (saved RIP after the HLT) instead of being taken
    // before the HLT and then sleeping forever.
    self_ipi_send(V_IPI_LO);
    let l_after: u64;
    // SAFETY: as above.
    unsafe { asm!("lea {0}, [rip + 2f]", "sti", "hlt", "2: cli", out(reg) l_after) };
    check_eq!(LAST_RIP.load(Ordering::SeqCst), l_after, "sti; hlt with a pending interrupt: wakes after hlt");
}

fn self_ipi() {
    // In service while handled, cleared by EOI.
    self_ipi_send(V_IPI_LO);
    // SAFETY: vector has a handler.
    unsafe { asm!("sti", "nop", "cli") };
    check!(ISR_SEEN.load(Ordering::SeqCst) == 1, "ISR bit set for the vector being handled");
    check!(!apic::bit(reg::ISR, V_IPI_LO) && !apic::bit(reg::IRR, V_IPI_LO), "EOI clears ISR; IRR empty");

    // Priority: with two pending, the higher vector goes first.
    NORDER.store(0, Ordering::SeqCst);
    self_ipi_send(V_IPI_LO);
    self_ipi_send(V_IPI_HI);
    // SAFETY: both vectors have handlers.
    unsafe { asm!("sti", "nop", "nop", "cli") };
    let order = [ORDER[0].load(Ordering::SeqCst), ORDER[1].load(Ordering::SeqCst)];
    check_eq!(order, [V_IPI_HI as u64, V_IPI_LO as u64], "higher-priority vector delivered first");

    // TPR blocks classes <= TPR[7:4]; CR8 is TPR[7:4] (SDM Vol. 3A, 13.8.3.1
    // and 11.2.5 "CR8").
    // SAFETY: CR8 write at CPL 0.
    unsafe { arch::write_cr8(7) };
    check_eq!(apic::read(reg::TPR) & 0xf0, 0x70u32, "mov cr8, 7 sets TPR to 0x70");
    let before = ticks(V_IPI_LO + 4);
    self_ipi_send(V_IPI_LO + 4); // class 6
                                 // SAFETY: vector has a handler.
    unsafe { asm!("sti", "nop", "nop", "cli") };
    check!(ticks(V_IPI_LO + 4) == before && apic::bit(reg::IRR, V_IPI_LO + 4), "TPR 0x70 holds back vector 0x65");
    apic::write(reg::TPR, 0);
    check_eq!(arch::read_cr8(), 0u64, "writing TPR = 0 reads back as CR8 = 0");
    // SAFETY: vector has a handler.
    unsafe { asm!("sti", "nop", "nop", "cli") };
    check_eq!(ticks(V_IPI_LO + 4), before + 1, "lowering TPR delivers the held vector");
}

fn lapic_timer() {
    apic::write(reg::TIMER_DIV, 0x3); // divide by 16
                                      // One-shot.
    let before = ticks(V_TIMER);
    apic::write(reg::LVT_TIMER, V_TIMER as u32);
    apic::write(reg::TIMER_INIT, 200_000);
    let c1 = apic::read(reg::TIMER_CUR);
    let mut c2 = c1;
    for _ in 0..1000 {
        c2 = apic::read(reg::TIMER_CUR);
        if c2 != c1 {
            break;
        }
    }
    check!(c1 <= 200_000 && c2 < c1, "timer current count counts down");
    // SAFETY: the timer vector has a handler.
    unsafe { arch::sti() };
    let ok = wait(|| ticks(V_TIMER) > before);
    arch::cli();
    check!(ok, "LAPIC one-shot timer fires");
    check_eq!(apic::read(reg::TIMER_CUR), 0u32, "one-shot: current count stays 0");
    // SAFETY: as above.
    unsafe { arch::sti() };
    let again = wait(|| ticks(V_TIMER) > before + 1);
    arch::cli();
    check!(!again || ticks(V_TIMER) == before + 1, "one-shot fires once");

    // Periodic.
    let before = ticks(V_TIMER);
    apic::write(reg::LVT_TIMER, 1 << 17 | V_TIMER as u32);
    apic::write(reg::TIMER_INIT, 50_000);
    // SAFETY: as above.
    unsafe { arch::sti() };
    let ok = wait(|| ticks(V_TIMER) >= before + 4);
    arch::cli();
    check!(ok, "LAPIC periodic timer fires repeatedly");
    apic::write(reg::LVT_TIMER, 1 << 16);
    apic::write(reg::TIMER_INIT, 0);
    // Masked timer: LVT mask bit.
    check!(apic::read(reg::LVT_TIMER) & 1 << 16 != 0, "LVT timer mask reads back");

    // TSC-deadline.
    if arch::has(feature::TSC_DEADLINE) {
        let before = ticks(V_TIMER);
        apic::write(reg::LVT_TIMER, 2 << 17 | V_TIMER as u32);
        let deadline = arch::rdtsc() + 2_000_000;
        // SAFETY: IA32_TSC_DEADLINE exists when CPUID reports the mode.
        unsafe { arch::wrmsr(msr::TSC_DEADLINE, deadline) };
        // SAFETY: as above.
        unsafe { arch::sti() };
        let ok = wait(|| ticks(V_TIMER) > before);
        arch::cli();
        let now = arch::rdtsc();
        check!(ok && now >= deadline, "TSC-deadline timer fires at the deadline");
        // SAFETY: as above.
        check_eq!(unsafe { arch::rdmsr(msr::TSC_DEADLINE) }, 0u64, "IA32_TSC_DEADLINE reads 0 after firing");
        // Writing 0 disarms.
        let before = ticks(V_TIMER);
        // SAFETY: as above.
        unsafe {
            arch::wrmsr(msr::TSC_DEADLINE, arch::rdtsc() + 100_000);
            arch::wrmsr(msr::TSC_DEADLINE, 0);
        }
        for _ in 0..2_000_000 {
            core::hint::spin_loop();
        }
        // SAFETY: as above.
        unsafe { asm!("sti", "nop", "cli") };
        check_eq!(ticks(V_TIMER), before, "writing 0 to IA32_TSC_DEADLINE disarms it");
        apic::write(reg::LVT_TIMER, 1 << 16);
    } else {
        skip!("CPUID.1:ECX.TSC_DEADLINE = 0", "TSC-deadline timer");
    }
}

fn pit_ioapic() {
    let ver = apic::ioapic_read(1);
    let entries = (ver >> 16 & 0xff) + 1;
    check!(entries >= 16 && ver & 0xff >= 0x11, "I/O APIC version {:#x}: {} redirection entries", ver, entries);
    // ISA IRQ0 (PIT) is wired to I/O APIC pin 2 on PCs (the MADT interrupt
    // source override QEMU and firmware publish). Edge, active high, fixed,
    // physical destination = this CPU.
    apic::pic_set_mask(0xffff);
    pit_program(0, 2, 1193);
    apic::ioapic_route(2, V_IOAPIC_PIT as u32, apic::id());
    check_eq!(apic::ioapic_read(0x10 + 4) & 0x1ffff, V_IOAPIC_PIT as u32, "redirection entry reads back");
    let before = ticks(V_IOAPIC_PIT);
    // SAFETY: the vector has a handler; the PIC is masked.
    unsafe { arch::sti() };
    let ok = wait(|| ticks(V_IOAPIC_PIT) >= before + 5);
    arch::cli();
    apic::ioapic_mask(2);
    check!(ok, "PIT through I/O APIC pin 2 and the local APIC (5 ticks)");
    // Stop the PIT: mode 0 with a count that is never reached soon.
    pit_program(0, 0, 0xffff);
}

fn cmos_read(r: u8) -> u8 {
    // SAFETY: CMOS index/data ports; bit 7 of the index keeps NMI enabled
    // state untouched on QEMU (it is the NMI-disable bit on hardware).
    unsafe {
        outb(0x70, r);
        inb(0x71)
    }
}

fn cmos_write(r: u8, v: u8) {
    // SAFETY: as cmos_read.
    unsafe {
        outb(0x70, r);
        outb(0x71, v);
    }
}

fn rtc() {
    // 1024 Hz periodic interrupt: register A rate 6, register B PIE.
    let a = cmos_read(0x0a);
    cmos_write(0x0a, (a & 0xf0) | 6);
    let b = cmos_read(0x0b);
    cmos_write(0x0b, b | 0x40);
    cmos_read(0x0c);
    apic::pic_set_mask(!(1 << 8 | 1 << 2)); // IRQ8 and the cascade
    let before = ticks(V_RTC);
    // SAFETY: IRQ8 has a handler that acknowledges register C.
    unsafe { arch::sti() };
    let ok = wait(|| ticks(V_RTC) >= before + 3);
    arch::cli();
    apic::pic_set_mask(0xffff);
    cmos_write(0x0b, b & !0x40);
    cmos_read(0x0c);
    check!(ok, "RTC periodic interrupt through the slave 8259A (IRQ8, 3 ticks)");
}

fn port61() {
    // PIT channel 2, mode 0 (interrupt on terminal count): OUT goes low when
    // the count is written and high when it reaches 0; port 0x61 bit 0 is
    // the gate, bit 5 reads OUT (IBM PC/AT technical reference).
    // SAFETY: port 0x61 bits 0/1 are gate and speaker data.
    let saved = unsafe { inb(0x61) };
    // SAFETY: as above; speaker data off, gate on.
    unsafe { outb(0x61, (saved & !0x3) | 0x1) };
    pit_program(2, 0, 5000);
    // SAFETY: as above.
    let low = unsafe { inb(0x61) } & 0x20 == 0;
    let high = wait(|| {
        // SAFETY: as above.
        unsafe { inb(0x61) & 0x20 != 0 }
    });
    check!(low && high, "port 0x61: PIT channel 2 output low after programming, high at terminal count");
    // Bits 1:0 (speaker data, gate) read back; bit 4 (memory refresh
    // request) toggles, which old delay loops depend on.
    // SAFETY: as above; speaker data stays off.
    let gate = unsafe {
        outb(0x61, (saved & !0x3) | 0x1);
        inb(0x61) & 0x3
    };
    check_eq!(gate, 1u8, "port 0x61: gate bit reads back");
    let mut seen = [false; 2];
    for _ in 0..100_000 {
        // SAFETY: reading port 0x61 has no side effects on the PIT.
        let b = unsafe { inb(0x61) } >> 4 & 1;
        seen[b as usize] = true;
        if seen[0] && seen[1] {
            break;
        }
    }
    check!(seen[0] && seen[1], "port 0x61: refresh bit 4 toggles");
    // SAFETY: restore.
    unsafe { outb(0x61, saved & 0x0f) };
}
