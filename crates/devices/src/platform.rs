//! The PC platform: every device of a QEMU-`pc`-like machine (i440FX +
//! PIIX3) with N processors, behind one port/MMIO/MSR/interrupt interface.
//!
//! Interrupt topology (Intel MultiProcessor Specification 1.4, chapter 3
//! "Interrupt Mode Configurations", virtual-wire and symmetric I/O modes):
//! each ISA IRQ line drives both the 8259 pair and the IOAPIC, IRQ 0 going
//! to IOAPIC pin 2 as QEMU wires it (advertised by a MADT interrupt source
//! override). The 8259's INTR reaches CPU 0 through LINT0 (ExtINT, or the
//! APIC disabled) or any CPU through an IOAPIC ExtINT entry. Local APICs talk
//! to each other through IPIs routed here, and level-triggered EOIs are
//! forwarded to the IOAPIC.
//!
//! Port and MMIO map:
//!
//! | range | device |
//! |---|---|
//! | 0x20-0x21, 0xa0-0xa1, 0x4d0-0x4d1 | 8259 PIC pair, ELCR |
//! | 0x40-0x43, 0x61 | 8254 PIT, port B (when enabled) |
//! | 0x60, 0x64 | i8042 |
//! | 0x70-0x71 | MC146818 RTC/CMOS |
//! | 0x80 | POST code sink |
//! | 0x92 | fast A20 / reset |
//! | 0xe0-0xeb, 0x2000-0x2017 | pc-testdev (when enabled) |
//! | 0xe9 | debug console |
//! | 0xf4 (configurable) | isa-debug-exit (when enabled) |
//! | 0x3f8-0x3ff | COM1 |
//! | 0x510-0x511 | fw_cfg |
//! | 0x600-0x60b | ACPI PM1a event/control, PM timer |
//! | 0xcf8, 0xcfc-0xcff | PCI configuration mechanism #1 |
//! | 0xcf9 (byte) | reset control |
//! | 0xfec00000 | IOAPIC |
//! | 0xfed00000 +1 KiB | HPET |
//! | 0xfee00000 (IA32_APIC_BASE) | local APIC (xAPIC) |
//! | 0xff000000 +64 KiB | pc-testdev scratch (when enabled) |
//! | pci-testdev BARs | pci-testdev (when enabled) |
//!
//! Unassigned ports read all-ones and unassigned MMIO reads all-ones; both
//! are counted under "unassigned" and the first accesses recorded.

use std::collections::VecDeque;
use std::io::Write;

use crate::acpi::{self, AcpiConfig, AcpiPm, AcpiTables};
use crate::fw_cfg::{keys, FwCfg};
use crate::hpet::{Hpet, HpetLine, HPET_BASE, HPET_LEN, HPET_NUM_TIMERS};
use crate::i8042::I8042;
use crate::ioapic::{IoApic, IrqMessage, IOAPIC_BASE};
use crate::lapic::{
    DeliveryMode, Ipi, Lapic, LapicAction, Shorthand, APIC_DEFAULT_BASE, MSR_IA32_APIC_BASE, MSR_IA32_TSC_DEADLINE,
};
use crate::pc_testdev::{
    PcTestdev, PC_TESTDEV_IOMEM_BASE, PC_TESTDEV_IOMEM_LEN, PC_TESTDEV_IRQ_LINES, PC_TESTDEV_IRQ_PORT,
};
use crate::pci::PciBus;
use crate::pic::DualPic;
use crate::pit::Pit;
use crate::rtc::Rtc;
use crate::serial::{Com1, IrqUpdate, COM1_BASE, COM1_IRQ};
use crate::size_mask;

/// RAM below 4 GiB ends here at most (QEMU `pc`: the rest goes above 4 GiB).
pub const LOWMEM_LIMIT: u64 = 0xe000_0000;
const MMIO_PAGE: u64 = 0x1000;
const MAX_UNHANDLED: usize = 64;

/// Machine configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlatformConfig {
    /// Guest RAM in bytes.
    pub ram_size: u64,
    /// Number of processors (at least 1 is modelled).
    pub num_cpus: u32,
    /// Whether the 8254 PIT (ports 0x40-0x43, 0x61) exists.
    pub pit: bool,
    /// Whether QEMU's pc-testdev exists.
    pub pc_testdev: bool,
    /// Whether QEMU's pci-testdev exists (00:02.0).
    pub pci_testdev: bool,
    /// isa-debug-exit I/O base and size.
    pub debug_exit: Option<(u16, u8)>,
    /// Kernel command line (fw_cfg), without the NUL.
    pub cmdline: Vec<u8>,
    /// Initrd size (fw_cfg).
    pub initrd_size: u64,
}

impl Default for PlatformConfig {
    fn default() -> Self {
        Self {
            ram_size: 128 << 20,
            num_cpus: 1,
            pit: true,
            pc_testdev: false,
            pci_testdev: false,
            debug_exit: None,
            cmdline: Vec::new(),
            initrd_size: 0,
        }
    }
}

/// Processor start-up events produced by IPIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuEvent {
    /// INIT: the processor enters wait-for-SIPI (its APIC is already reset).
    Init,
    /// Start-up IPI: begin real-mode execution at `vector << 12`.
    Startup(u8),
}

/// A request to end or restart the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitRequest {
    /// isa-debug-exit write of `v`: exit status `(v << 1) | 1`.
    DebugExit(u32),
    /// ACPI S5.
    PowerOff,
    /// Reset through 0xcf9, port 0x92 or the keyboard controller.
    Reset,
}

/// Devices, for statistics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeviceId {
    /// COM1.
    Serial,
    /// isa-debug-exit.
    DebugExit,
    /// Port 0xe9 console.
    DebugCon,
    /// Port 0x80.
    PostCode,
    /// 8259 pair and ELCR.
    Pic,
    /// 8254 and port 0x61.
    Pit,
    /// RTC/CMOS.
    Rtc,
    /// Local APICs.
    Lapic,
    /// IOAPIC.
    IoApic,
    /// fw_cfg.
    FwCfg,
    /// PCI configuration ports.
    Pci,
    /// pc-testdev.
    PcTestdev,
    /// pci-testdev BARs.
    PciTestdev,
    /// ACPI PM registers.
    AcpiPm,
    /// HPET.
    Hpet,
    /// i8042.
    I8042,
    /// Reset control 0xcf9.
    ResetControl,
    /// Port 0x92.
    Port92,
    /// Nothing decodes the address.
    Unassigned,
}

const NUM_DEVICES: usize = DeviceId::Unassigned as usize + 1;

impl DeviceId {
    /// All devices in statistics order.
    pub const ALL: [DeviceId; NUM_DEVICES] = [
        Self::Serial,
        Self::DebugExit,
        Self::DebugCon,
        Self::PostCode,
        Self::Pic,
        Self::Pit,
        Self::Rtc,
        Self::Lapic,
        Self::IoApic,
        Self::FwCfg,
        Self::Pci,
        Self::PcTestdev,
        Self::PciTestdev,
        Self::AcpiPm,
        Self::Hpet,
        Self::I8042,
        Self::ResetControl,
        Self::Port92,
        Self::Unassigned,
    ];

    /// Short display name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Serial => "serial",
            Self::DebugExit => "isa-debug-exit",
            Self::DebugCon => "debugcon",
            Self::PostCode => "post-code",
            Self::Pic => "pic",
            Self::Pit => "pit",
            Self::Rtc => "rtc",
            Self::Lapic => "lapic",
            Self::IoApic => "ioapic",
            Self::FwCfg => "fw_cfg",
            Self::Pci => "pci",
            Self::PcTestdev => "pc-testdev",
            Self::PciTestdev => "pci-testdev",
            Self::AcpiPm => "acpi-pm",
            Self::Hpet => "hpet",
            Self::I8042 => "i8042",
            Self::ResetControl => "reset-control",
            Self::Port92 => "port92",
            Self::Unassigned => "unassigned",
        }
    }

    /// Registers are bytes: wider port accesses split into byte accesses to
    /// consecutive ports, as the ISA bus does.
    fn byte_wide(self) -> bool {
        matches!(self, Self::Serial | Self::Pic | Self::Pit | Self::Rtc | Self::I8042)
    }
}

/// Access counts per device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceStats {
    /// Port accesses, indexed by `DeviceId as usize`.
    pub io: [u64; NUM_DEVICES],
    /// MMIO accesses, indexed by `DeviceId as usize`.
    pub mmio: [u64; NUM_DEVICES],
    /// MSR accesses handled by the local APICs.
    pub lapic_msr: u64,
}

impl DeviceStats {
    /// (name, port accesses, MMIO accesses) of every device accessed at
    /// least once.
    pub fn entries(&self) -> Vec<(&'static str, u64, u64)> {
        DeviceId::ALL
            .iter()
            .map(|&d| (d.name(), self.io[d as usize], self.mmio[d as usize]))
            .filter(|&(_, io, mmio)| io + mmio != 0)
            .collect()
    }
}

/// An access nothing decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnhandledAccess {
    /// MMIO (true) or port I/O (false).
    pub mmio: bool,
    /// Port or guest-physical address.
    pub addr: u64,
    /// Access size.
    pub size: u8,
    /// Write (true) or read (false).
    pub write: bool,
}

/// One E820 memory map entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// Start address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// 1 = RAM, 2 = reserved.
    pub kind: u32,
}

/// Splits `ram_size` into RAM below 4 GiB and RAM above 4 GiB.
pub fn ram_split(ram_size: u64) -> (u64, u64) {
    let below = ram_size.min(LOWMEM_LIMIT);
    (below, ram_size - below)
}

/// The memory map: conventional memory up to the EBDA, the reserved BIOS
/// area 0x9fc00-0x100000 (holding the ACPI RSDP), RAM from 1 MiB, and RAM
/// above 4 GiB.
pub fn e820_map(ram_size: u64) -> Vec<E820Entry> {
    let (below, above) = ram_split(ram_size);
    let mut map = vec![
        E820Entry { addr: 0, size: 0x9fc00.min(below), kind: 1 },
        E820Entry { addr: 0x9fc00, size: 0x400, kind: 2 },
        E820Entry { addr: 0xe0000, size: 0x20000, kind: 2 },
    ];
    if below > 0x10_0000 {
        map.push(E820Entry { addr: 0x10_0000, size: below - 0x10_0000, kind: 1 });
    }
    if above > 0 {
        map.push(E820Entry { addr: 1 << 32, size: above, kind: 1 });
    }
    map
}

/// The RAM ranges QEMU publishes in fw_cfg `etc/e820`: all RAM below the
/// PCI hole as one entry and the rest above 4 GiB. Firmware (or a boot
/// loader) carves out the BIOS areas itself, so these entries add up to
/// the RAM size, which guests rely on.
pub fn fw_cfg_e820_map(ram_size: u64) -> Vec<E820Entry> {
    let (below, above) = ram_split(ram_size);
    let mut map = vec![E820Entry { addr: 0, size: below, kind: 1 }];
    if above > 0 {
        map.push(E820Entry { addr: 1 << 32, size: above, kind: 1 });
    }
    map
}

/// The fw_cfg `etc/e820` file (packed u64 addr, u64 size, u32 type,
/// little-endian) for [`fw_cfg_e820_map`].
pub fn e820_bytes(ram_size: u64) -> Vec<u8> {
    fw_cfg_e820_map(ram_size)
        .iter()
        .flat_map(|e| {
            let mut b = e.addr.to_le_bytes().to_vec();
            b.extend_from_slice(&e.size.to_le_bytes());
            b.extend_from_slice(&e.kind.to_le_bytes());
            b
        })
        .collect()
}

/// The whole PC.
#[derive(Debug)]
pub struct Platform {
    cfg: PlatformConfig,
    serial: Com1,
    serial_level: bool,
    pic: DualPic,
    pit: Option<Pit>,
    rtc: Rtc,
    rtc_level: bool,
    lapics: Vec<Lapic>,
    ioapic: IoApic,
    fw_cfg: FwCfg,
    pci: PciBus,
    pc_testdev: Option<PcTestdev>,
    pm: AcpiPm,
    hpet: Hpet,
    /// Line each level-triggered HPET timer holds asserted.
    hpet_levels: [Option<HpetLine>; HPET_NUM_TIMERS],
    i8042: I8042,
    kbd_level: bool,
    nmi_pending: Vec<bool>,
    extint_pending: Vec<bool>,
    events: Vec<VecDeque<CpuEvent>>,
    exit: Option<ExitRequest>,
    reset_control: u8,
    port92: u8,
    stats: DeviceStats,
    unhandled: Vec<UnhandledAccess>,
}

impl Platform {
    /// Builds the machine; COM1 and port 0xe9 output goes to `serial_out`.
    pub fn new(cfg: PlatformConfig, serial_out: Box<dyn Write + Send>) -> Self {
        let num_cpus = cfg.num_cpus.max(1);
        let (below, above) = ram_split(cfg.ram_size);
        let mut fw_cfg = FwCfg::new();
        fw_cfg.add_item(keys::RAM_SIZE, cfg.ram_size.to_le_bytes().to_vec());
        let n = u16::try_from(num_cpus).unwrap_or(u16::MAX).to_le_bytes().to_vec();
        fw_cfg.add_item(keys::NB_CPUS, n.clone());
        fw_cfg.add_item(keys::MAX_CPUS, n);
        let mut cmdline = cfg.cmdline.clone();
        let cmdline_size = if cmdline.is_empty() { 0 } else { cmdline.len() as u32 + 1 };
        if !cmdline.is_empty() {
            cmdline.push(0);
        }
        fw_cfg.add_item(keys::CMDLINE_SIZE, cmdline_size.to_le_bytes().to_vec());
        fw_cfg.add_item(keys::CMDLINE_DATA, cmdline);
        let initrd = u32::try_from(cfg.initrd_size).unwrap_or(u32::MAX);
        fw_cfg.add_item(keys::INITRD_SIZE, initrd.to_le_bytes().to_vec());
        fw_cfg.add_file("etc/e820", e820_bytes(cfg.ram_size));
        let cpus = num_cpus as usize;
        Self {
            serial: Com1::new(serial_out),
            serial_level: false,
            pic: DualPic::new(),
            pit: cfg.pit.then(Pit::new),
            rtc: Rtc::new(below, above, num_cpus),
            rtc_level: false,
            lapics: (0..num_cpus).map(Lapic::new).collect(),
            ioapic: IoApic::new(Self::ioapic_id_for(num_cpus)),
            fw_cfg,
            pci: PciBus::new(cfg.pci_testdev),
            pc_testdev: cfg.pc_testdev.then(PcTestdev::new),
            pm: AcpiPm::default(),
            hpet: Hpet::new(),
            hpet_levels: [None; HPET_NUM_TIMERS],
            i8042: I8042::new(),
            kbd_level: false,
            nmi_pending: vec![false; cpus],
            extint_pending: vec![false; cpus],
            events: vec![VecDeque::new(); cpus],
            exit: None,
            reset_control: 0,
            port92: 0x02,
            stats: DeviceStats::default(),
            unhandled: Vec::new(),
            cfg,
        }
    }

    fn ioapic_id_for(num_cpus: u32) -> u8 {
        u8::try_from(num_cpus).unwrap_or(0xff)
    }

    /// The configuration the machine was built with.
    pub fn config(&self) -> &PlatformConfig {
        &self.cfg
    }

    /// Number of processors.
    pub fn num_cpus(&self) -> u32 {
        self.lapics.len() as u32
    }

    /// ACPI tables describing this machine, for a blob loaded at
    /// `tables_addr`.
    pub fn acpi_tables(&self, tables_addr: u32) -> AcpiTables {
        acpi::build_tables(
            &AcpiConfig {
                num_cpus: self.num_cpus(),
                ioapic_id: self.ioapic.id,
                ioapic_addr: IOAPIC_BASE as u32,
                lapic_addr: APIC_DEFAULT_BASE as u32,
                low_ram_end: ram_split(self.cfg.ram_size).0 as u32,
            },
            tables_addr,
        )
    }

    /// The fw_cfg device, e.g. to add files.
    pub fn fw_cfg_mut(&mut self) -> &mut FwCfg {
        &mut self.fw_cfg
    }

    /// Local APIC of `cpu`, for inspection.
    pub fn lapic(&self, cpu: u32) -> Option<&Lapic> {
        self.lapics.get(cpu as usize)
    }

    // ---- interrupt routing ----

    /// Drives ISA IRQ / GSI `line` (0-23): lines 0-15 reach the 8259s, all
    /// reach the IOAPIC (ISA IRQ 0 on pin 2).
    pub fn set_irq_line(&mut self, line: u8, level: bool) {
        if line < 16 {
            self.pic.set_irq(line, level);
        }
        let pin = if line == 0 { 2 } else { usize::from(line) };
        let mut msgs = Vec::new();
        self.ioapic.set_irq(pin, level, &mut msgs);
        self.deliver_messages(msgs);
    }

    fn pulse_irq(&mut self, line: u8) {
        self.set_irq_line(line, true);
        self.set_irq_line(line, false);
    }

    fn deliver_messages(&mut self, msgs: Vec<IrqMessage>) {
        for m in msgs {
            let targets: Vec<usize> = (0..self.lapics.len()).filter(|&i| self.lapics[i].matches(&m.dest)).collect();
            self.deliver(m.mode, m.vector, m.level_triggered, &targets);
        }
    }

    fn deliver(&mut self, mode: DeliveryMode, vector: u8, level: bool, targets: &[usize]) {
        match mode {
            DeliveryMode::Fixed => {
                for &t in targets {
                    self.lapics[t].accept_fixed(vector, level);
                }
            }
            DeliveryMode::LowestPriority => {
                let t =
                    targets.iter().copied().find(|&t| self.lapics[t].sw_enabled()).or_else(|| targets.first().copied());
                if let Some(t) = t {
                    self.lapics[t].accept_fixed(vector, level);
                }
            }
            DeliveryMode::Nmi => {
                for &t in targets {
                    self.nmi_pending[t] = true;
                }
            }
            DeliveryMode::Init => {
                for &t in targets {
                    self.lapics[t].reset_registers();
                    self.push_event(t, CpuEvent::Init);
                }
            }
            DeliveryMode::Startup => {
                for &t in targets {
                    self.push_event(t, CpuEvent::Startup(vector));
                }
            }
            DeliveryMode::ExtInt => {
                for &t in targets {
                    self.extint_pending[t] = true;
                }
            }
            DeliveryMode::Smi | DeliveryMode::Reserved => {}
        }
    }

    fn push_event(&mut self, cpu: usize, ev: CpuEvent) {
        let q = &mut self.events[cpu];
        if q.len() < 16 {
            q.push_back(ev);
        }
    }

    fn send_ipi(&mut self, from: usize, ipi: Ipi) {
        if ipi.mode == DeliveryMode::Init && ipi.level_triggered && !ipi.assert {
            return; // INIT level de-assert
        }
        let n = self.lapics.len();
        let targets: Vec<usize> = match ipi.shorthand {
            Shorthand::SelfOnly => vec![from],
            Shorthand::AllIncludingSelf => (0..n).collect(),
            Shorthand::AllExcludingSelf => (0..n).filter(|&i| i != from).collect(),
            Shorthand::None => (0..n).filter(|&i| self.lapics[i].matches(&ipi.dest)).collect(),
        };
        self.deliver(ipi.mode, ipi.vector, ipi.level_triggered, &targets);
    }

    fn lapic_action(&mut self, cpu: usize, action: LapicAction) {
        match action {
            LapicAction::None => {}
            LapicAction::SendIpi(ipi) => self.send_ipi(cpu, ipi),
            LapicAction::Eoi(vector) => {
                let mut msgs = Vec::new();
                self.ioapic.eoi(vector, &mut msgs);
                self.deliver_messages(msgs);
            }
        }
    }

    fn pic_routed(&self, cpu: usize) -> bool {
        (cpu == 0 && self.lapics[0].accepts_pic_intr()) || self.extint_pending[cpu]
    }

    /// Whether `cpu` has an interrupt it would take with RFLAGS.IF = 1.
    pub fn pending_interrupt(&mut self, now_ns: u64, cpu: u32) -> bool {
        self.advance(now_ns);
        let c = cpu as usize;
        if c >= self.lapics.len() {
            return false;
        }
        self.lapics[c].pending_vector().is_some() || (self.pic_routed(c) && self.pic.has_intr())
    }

    /// INTA: the vector `cpu` takes now, moved to in-service.
    pub fn ack_interrupt(&mut self, now_ns: u64, cpu: u32) -> Option<u8> {
        self.advance(now_ns);
        let c = cpu as usize;
        if c >= self.lapics.len() {
            return None;
        }
        if self.pic_routed(c) && self.pic.has_intr() {
            self.extint_pending[c] = false;
            return Some(self.pic.acknowledge());
        }
        self.lapics[c].acknowledge()
    }

    /// Takes a pending NMI for `cpu`.
    pub fn pending_nmi(&mut self, cpu: u32) -> bool {
        self.nmi_pending.get_mut(cpu as usize).map(std::mem::take).unwrap_or(false)
    }

    /// Takes the next INIT/SIPI event for `cpu`.
    pub fn take_cpu_event(&mut self, cpu: u32) -> Option<CpuEvent> {
        self.events.get_mut(cpu as usize)?.pop_front()
    }

    /// CR8 write: TPR bits 7:4 = CR8 bits 3:0.
    pub fn set_tpr(&mut self, cpu: u32, cr8: u8) {
        if let Some(l) = self.lapics.get_mut(cpu as usize) {
            l.tpr = u32::from(cr8 & 0xf) << 4;
        }
    }

    /// CR8 read: TPR bits 7:4.
    pub fn tpr(&self, cpu: u32) -> u8 {
        self.lapics.get(cpu as usize).map_or(0, |l| (l.tpr >> 4) as u8 & 0xf)
    }

    // ---- time ----

    /// Runs every timer up to `now_ns` and raises the resulting interrupts.
    pub fn advance(&mut self, now_ns: u64) {
        if let Some(pit) = &mut self.pit {
            // Legacy replacement disconnects the PIT from IRQ 0.
            if pit.advance(now_ns) && !self.hpet.legacy() {
                self.pulse_irq(0);
            }
        }
        self.rtc.advance(now_ns);
        self.sync_rtc_irq();
        let edges = self.hpet.advance(now_ns);
        self.sync_hpet_irqs(edges);
        for l in &mut self.lapics {
            l.advance(now_ns);
        }
    }

    /// Drives an HPET output: ISA lines reach the 8259s and the IOAPIC,
    /// GSIs only the IOAPIC pin.
    fn set_hpet_line(&mut self, line: HpetLine, level: bool) {
        match line {
            HpetLine::Isa(irq) => self.set_irq_line(irq, level),
            HpetLine::Gsi(pin) => {
                let mut msgs = Vec::new();
                self.ioapic.set_irq(usize::from(pin), level, &mut msgs);
                self.deliver_messages(msgs);
            }
        }
    }

    /// Pulses the timers in `edges` and brings level-triggered outputs in
    /// line with the HPET's status and routing.
    fn sync_hpet_irqs(&mut self, edges: u8) {
        for n in 0..HPET_NUM_TIMERS {
            let want = if self.hpet.level_asserted(n) { self.hpet.line(n) } else { None };
            if want != self.hpet_levels[n] {
                if let Some(old) = self.hpet_levels[n] {
                    self.set_hpet_line(old, false);
                }
                if let Some(new) = want {
                    self.set_hpet_line(new, true);
                }
                self.hpet_levels[n] = want;
            }
            if edges & (1 << n) != 0 {
                if let Some(line) = self.hpet.line(n) {
                    self.set_hpet_line(line, true);
                    self.set_hpet_line(line, false);
                }
            }
        }
    }

    /// Earliest pending timer event (PIT IRQ 0, enabled RTC interrupts,
    /// interrupt-enabled HPET timers, unmasked local APIC timers).
    pub fn next_deadline_ns(&self) -> Option<u64> {
        let pit = self.pit.as_ref().and_then(Pit::next_deadline_ns);
        let rtc = self.rtc.next_deadline_ns();
        let hpet = self.hpet.next_deadline_ns();
        let lapic = self
            .lapics
            .iter()
            .filter(|l| l.lvt[crate::lapic::Lvt::Timer as usize] & crate::lapic::LVT_MASKED == 0)
            .filter_map(Lapic::next_deadline_ns)
            .min();
        [pit, rtc, hpet, lapic].into_iter().flatten().min()
    }

    fn sync_rtc_irq(&mut self) {
        // Legacy replacement disconnects the RTC from IRQ 8.
        let level = self.rtc.irq_level && !self.hpet.legacy();
        if level != self.rtc_level {
            self.rtc_level = level;
            self.set_irq_line(8, self.rtc_level);
        }
    }

    fn sync_kbd_irq(&mut self) {
        let level = self.i8042.irq_level();
        if level != self.kbd_level {
            self.kbd_level = level;
            self.set_irq_line(1, level);
        }
        if self.i8042.reset_requested {
            self.i8042.reset_requested = false;
            self.request_exit(ExitRequest::Reset);
        }
    }

    fn apply_serial_irq(&mut self, u: IrqUpdate) {
        if u.new_event {
            if self.serial_level {
                self.set_irq_line(COM1_IRQ, false);
            }
            self.set_irq_line(COM1_IRQ, true);
            self.serial_level = true;
        }
        if !u.level && self.serial_level {
            self.set_irq_line(COM1_IRQ, false);
            self.serial_level = false;
        }
    }

    // ---- exits, input, stats ----

    fn request_exit(&mut self, req: ExitRequest) {
        if self.exit.is_none() {
            self.exit = Some(req);
        }
    }

    /// The first exit the guest requested, if any.
    pub fn exit_request(&self) -> Option<ExitRequest> {
        self.exit
    }

    /// Forgets the exit request (e.g. after the VMM performed a reset).
    pub fn clear_exit_request(&mut self) {
        self.exit = None;
    }

    /// Host input for COM1's receive FIFO; returns how many bytes fit.
    pub fn serial_input(&mut self, bytes: &[u8]) -> usize {
        let (n, u) = self.serial.enqueue(bytes);
        self.apply_serial_irq(u);
        n
    }

    /// Access statistics.
    pub fn stats(&self) -> &DeviceStats {
        &self.stats
    }

    /// The first accesses (up to 64 distinct addresses) nothing decoded.
    pub fn unhandled(&self) -> &[UnhandledAccess] {
        &self.unhandled
    }

    fn record_unhandled(&mut self, a: UnhandledAccess) {
        if self.unhandled.len() < MAX_UNHANDLED && !self.unhandled.iter().any(|u| u.mmio == a.mmio && u.addr == a.addr)
        {
            self.unhandled.push(a);
        }
    }

    // ---- port I/O ----

    fn route_io(&self, port: u16, size: u8) -> DeviceId {
        if let Some((base, len)) = self.cfg.debug_exit {
            if port >= base && u32::from(port) < u32::from(base) + u32::from(len) {
                return DeviceId::DebugExit;
            }
        }
        match port {
            0x3f8..=0x3ff => DeviceId::Serial,
            0xe9 => DeviceId::DebugCon,
            0x80 => DeviceId::PostCode,
            0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1 => DeviceId::Pic,
            0x40..=0x43 | 0x61 if self.pit.is_some() => DeviceId::Pit,
            0x60 | 0x64 => DeviceId::I8042,
            0x70 | 0x71 => DeviceId::Rtc,
            0x92 => DeviceId::Port92,
            0x510 | 0x511 => DeviceId::FwCfg,
            0x600..=0x60b => DeviceId::AcpiPm,
            0xcf9 if size == 1 => DeviceId::ResetControl,
            0xcf8 if size == 4 => DeviceId::Pci,
            0xcfc..=0xcff => DeviceId::Pci,
            0xe0..=0xeb if self.pc_testdev.is_some() => DeviceId::PcTestdev,
            p if self.pc_testdev.is_some()
                && (PC_TESTDEV_IRQ_PORT..PC_TESTDEV_IRQ_PORT + PC_TESTDEV_IRQ_LINES).contains(&p) =>
            {
                DeviceId::PcTestdev
            }
            p if self.pci.testdev_io_offset(p).is_some() => DeviceId::PciTestdev,
            _ => DeviceId::Unassigned,
        }
    }

    /// Port read of `size` (1, 2 or 4) bytes. Other sizes read all-ones.
    pub fn io_read(&mut self, now_ns: u64, port: u16, size: u8) -> u32 {
        if !matches!(size, 1 | 2 | 4) {
            return u32::MAX;
        }
        let dev = self.route_io(port, size);
        self.stats.io[dev as usize] += 1;
        if dev == DeviceId::Unassigned {
            self.record_unhandled(UnhandledAccess { mmio: false, addr: u64::from(port), size, write: false });
        }
        if dev.byte_wide() && size > 1 {
            let mut v = 0u32;
            for i in 0..u16::from(size) {
                let p = port.wrapping_add(i);
                let d = self.route_io(p, 1);
                v |= u32::from(self.io_read_dev(now_ns, d, p, 1) as u8) << (8 * i);
            }
            return v;
        }
        self.io_read_dev(now_ns, dev, port, size) & size_mask(size) as u32
    }

    fn io_read_dev(&mut self, now_ns: u64, dev: DeviceId, port: u16, size: u8) -> u32 {
        let mask = size_mask(size) as u32;
        match dev {
            DeviceId::Serial => {
                let (v, u) = self.serial.read((port - COM1_BASE) as u8);
                self.apply_serial_irq(u);
                u32::from(v)
            }
            DeviceId::Pic => u32::from(self.pic.io_read(port)),
            DeviceId::Pit => self.pit.as_mut().map_or(0xff, |p| u32::from(p.io_read(now_ns, port))),
            DeviceId::Rtc => {
                let v = self.rtc.io_read(now_ns, port);
                self.sync_rtc_irq();
                u32::from(v)
            }
            DeviceId::I8042 => {
                let v = self.i8042.io_read(port);
                self.sync_kbd_irq();
                u32::from(v)
            }
            DeviceId::FwCfg => self.fw_cfg.io_read(port, size),
            DeviceId::AcpiPm => self.pm.io_read(now_ns, port, size),
            DeviceId::Pci => self.pci.io_read(port, size),
            DeviceId::ResetControl => u32::from(self.reset_control),
            DeviceId::Port92 => u32::from(self.port92),
            DeviceId::PcTestdev => match (port, &self.pc_testdev) {
                (0xe0..=0xe3 | 0xe8..=0xeb, Some(t)) => t.scratch_read(port, size),
                _ => 0,
            },
            DeviceId::PciTestdev => match (self.pci.testdev_io_offset(port), &self.pci.testdev) {
                (Some(off), Some(t)) => t.read(off, size) as u32,
                _ => mask,
            },
            DeviceId::DebugExit | DeviceId::DebugCon | DeviceId::PostCode => {
                if dev == DeviceId::DebugCon {
                    0xe9 // Bochs/QEMU debugcon readback identifies the port.
                } else {
                    mask
                }
            }
            DeviceId::Lapic | DeviceId::IoApic | DeviceId::Hpet | DeviceId::Unassigned => mask,
        }
    }

    /// Port write of `size` (1, 2 or 4) bytes; other sizes are dropped.
    pub fn io_write(&mut self, now_ns: u64, port: u16, size: u8, value: u32) {
        if !matches!(size, 1 | 2 | 4) {
            return;
        }
        let value = value & size_mask(size) as u32;
        let dev = self.route_io(port, size);
        self.stats.io[dev as usize] += 1;
        if dev == DeviceId::Unassigned {
            self.record_unhandled(UnhandledAccess { mmio: false, addr: u64::from(port), size, write: true });
        }
        if dev.byte_wide() && size > 1 {
            for i in 0..u16::from(size) {
                let p = port.wrapping_add(i);
                let d = self.route_io(p, 1);
                self.io_write_dev(now_ns, d, p, 1, (value >> (8 * i)) & 0xff);
            }
            return;
        }
        self.io_write_dev(now_ns, dev, port, size, value);
    }

    fn io_write_dev(&mut self, now_ns: u64, dev: DeviceId, port: u16, size: u8, value: u32) {
        let byte = value as u8;
        match dev {
            DeviceId::Serial => {
                let u = self.serial.write((port - COM1_BASE) as u8, byte);
                self.apply_serial_irq(u);
            }
            DeviceId::DebugCon => self.serial.write_console(&[byte]),
            DeviceId::DebugExit => {
                self.request_exit(ExitRequest::DebugExit((value << 1) | 1));
            }
            DeviceId::Pic => self.pic.io_write(port, byte),
            DeviceId::Pit => {
                if let Some(p) = &mut self.pit {
                    p.io_write(now_ns, port, byte);
                }
            }
            DeviceId::Rtc => {
                self.rtc.io_write(now_ns, port, byte);
                self.sync_rtc_irq();
            }
            DeviceId::I8042 => {
                self.i8042.io_write(port, byte);
                self.sync_kbd_irq();
            }
            DeviceId::FwCfg => self.fw_cfg.io_write(port, value),
            DeviceId::AcpiPm => {
                self.pm.io_write(port, size, value);
                if self.pm.power_off_requested {
                    self.request_exit(ExitRequest::PowerOff);
                }
            }
            DeviceId::Pci => self.pci.io_write(port, size, value),
            DeviceId::ResetControl => {
                self.reset_control = byte & 0x0a;
                if byte & 0x04 != 0 {
                    self.request_exit(ExitRequest::Reset);
                }
            }
            DeviceId::Port92 => {
                self.port92 = byte & 0x02;
                if byte & 0x01 != 0 {
                    self.request_exit(ExitRequest::Reset);
                }
            }
            DeviceId::PcTestdev => match port {
                0xe0..=0xe3 | 0xe8..=0xeb => {
                    if let Some(t) = &mut self.pc_testdev {
                        t.scratch_write(port, size, value);
                    }
                }
                p if p >= PC_TESTDEV_IRQ_PORT => {
                    self.set_irq_line((p - PC_TESTDEV_IRQ_PORT) as u8, value & 0xff != 0);
                }
                _ => {} // 0xe4 flush page: nothing is cached.
            },
            DeviceId::PciTestdev => {
                if let (Some(off), Some(t)) = (self.pci.testdev_io_offset(port), &mut self.pci.testdev) {
                    t.write(true, off, size, u64::from(value));
                }
            }
            DeviceId::PostCode | DeviceId::Lapic | DeviceId::IoApic | DeviceId::Hpet | DeviceId::Unassigned => {}
        }
    }

    // ---- MMIO ----

    fn route_mmio(&self, cpu: usize, gpa: u64) -> (DeviceId, u64) {
        let page = gpa & !(MMIO_PAGE - 1);
        if let Some(base) = self.lapics.get(cpu).and_then(Lapic::mmio_base) {
            if page == base {
                return (DeviceId::Lapic, gpa - base);
            }
        }
        if page == IOAPIC_BASE {
            return (DeviceId::IoApic, gpa - IOAPIC_BASE);
        }
        if gpa >= HPET_BASE && gpa - HPET_BASE < HPET_LEN {
            return (DeviceId::Hpet, gpa - HPET_BASE);
        }
        if self.pc_testdev.is_some()
            && gpa >= PC_TESTDEV_IOMEM_BASE
            && gpa - PC_TESTDEV_IOMEM_BASE < PC_TESTDEV_IOMEM_LEN
        {
            return (DeviceId::PcTestdev, gpa - PC_TESTDEV_IOMEM_BASE);
        }
        if let Some(off) = self.pci.testdev_mmio_offset(gpa) {
            return (DeviceId::PciTestdev, off);
        }
        (DeviceId::Unassigned, gpa)
    }

    /// Whether `gpa` belongs to a device rather than RAM: the local APIC
    /// page (default or relocated), the IOAPIC page, the HPET block,
    /// pc-testdev's scratch
    /// area and pci-testdev's MMIO BAR.
    pub fn is_mmio(&self, gpa: u64) -> bool {
        let page = gpa & !(MMIO_PAGE - 1);
        page == APIC_DEFAULT_BASE
            || self.lapics.iter().any(|l| l.mmio_base() == Some(page))
            || (0..self.lapics.len()).any(|c| self.route_mmio(c, gpa).0 != DeviceId::Unassigned)
    }

    /// MMIO read by `cpu` of `size` (1, 2, 4 or 8) bytes.
    pub fn mmio_read(&mut self, now_ns: u64, cpu: u32, gpa: u64, size: u8) -> u64 {
        let mask = size_mask(size);
        let (dev, off) = self.route_mmio(cpu as usize, gpa);
        self.stats.mmio[dev as usize] += 1;
        let v = match dev {
            DeviceId::Lapic => {
                let c = cpu as usize;
                self.lapics[c].advance(now_ns);
                self.lapics[c].mmio_read(now_ns, off, size)
            }
            DeviceId::IoApic => self.ioapic.mmio_read(off, size),
            DeviceId::Hpet => {
                // Timers due by now fire (and their edges are delivered)
                // before the guest sees the status and comparators.
                self.advance(now_ns);
                self.hpet.read(now_ns, off, size)
            }
            DeviceId::PcTestdev => self.pc_testdev.as_ref().map_or(0, |t| t.iomem_read(off, size)),
            DeviceId::PciTestdev => self.pci.testdev.as_ref().map_or(0, |t| t.read(off, size)),
            _ => {
                self.record_unhandled(UnhandledAccess { mmio: true, addr: gpa, size, write: false });
                mask
            }
        };
        v & mask
    }

    /// MMIO write by `cpu` of `size` bytes.
    pub fn mmio_write(&mut self, now_ns: u64, cpu: u32, gpa: u64, size: u8, value: u64) {
        let value = value & size_mask(size);
        let (dev, off) = self.route_mmio(cpu as usize, gpa);
        self.stats.mmio[dev as usize] += 1;
        match dev {
            DeviceId::Lapic => {
                let c = cpu as usize;
                let action = self.lapics[c].mmio_write(now_ns, off, size, value);
                self.lapic_action(c, action);
            }
            DeviceId::IoApic => {
                let mut msgs = Vec::new();
                self.ioapic.mmio_write(off, value, &mut msgs);
                self.deliver_messages(msgs);
            }
            DeviceId::Hpet => {
                // Timers due before the write still fire.
                self.advance(now_ns);
                self.hpet.write(now_ns, off, size, value);
                self.sync_rtc_irq();
                self.sync_hpet_irqs(0);
            }
            DeviceId::PcTestdev => {
                if let Some(t) = &mut self.pc_testdev {
                    t.iomem_write(off, size, value);
                }
            }
            DeviceId::PciTestdev => {
                if let Some(t) = &mut self.pci.testdev {
                    t.write(false, off, size, value);
                }
            }
            _ => self.record_unhandled(UnhandledAccess { mmio: true, addr: gpa, size, write: true }),
        }
    }

    // ---- MSRs ----

    /// RDMSR of IA32_APIC_BASE, IA32_TSC_DEADLINE or an x2APIC register.
    /// `None`: not an APIC MSR or not accessible now (the caller raises #GP).
    pub fn lapic_msr_read(&mut self, now_ns: u64, cpu: u32, msr: u32) -> Option<u64> {
        let l = self.lapics.get_mut(cpu as usize)?;
        self.stats.lapic_msr += 1;
        match msr {
            MSR_IA32_APIC_BASE => Some(l.apic_base),
            MSR_IA32_TSC_DEADLINE => Some(l.read_tsc_deadline()),
            0x800..=0x8ff => {
                l.advance(now_ns);
                l.msr_read(now_ns, msr)
            }
            _ => None,
        }
    }

    /// WRMSR of an APIC MSR; `false` means #GP.
    pub fn lapic_msr_write(&mut self, now_ns: u64, cpu: u32, msr: u32, value: u64) -> bool {
        let c = cpu as usize;
        let Some(l) = self.lapics.get_mut(c) else {
            return false;
        };
        self.stats.lapic_msr += 1;
        match msr {
            MSR_IA32_APIC_BASE => l.write_apic_base(value),
            MSR_IA32_TSC_DEADLINE => {
                l.write_tsc_deadline(now_ns, value);
                true
            }
            0x800..=0x8ff => match l.msr_write(now_ns, msr, value) {
                Some(action) => {
                    self.lapic_action(c, action);
                    true
                }
                None => false,
            },
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::ErrorKind::Other)?.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn platform(cfg: PlatformConfig) -> (Platform, Sink) {
        let sink = Sink::default();
        (Platform::new(cfg, Box::new(sink.clone())), sink)
    }

    fn enable_apic(p: &mut Platform, cpu: u32) {
        p.mmio_write(0, cpu, 0xfee0_00f0, 4, 0x1ff);
    }

    /// Linux-style PIC init with bases 0x30/0x38.
    fn init_pic(p: &mut Platform) {
        for (port, base, icw3) in [(0x20u16, 0x30u32, 4u32), (0xa0, 0x38, 2)] {
            p.io_write(0, port, 1, 0x11);
            p.io_write(0, port + 1, 1, base);
            p.io_write(0, port + 1, 1, icw3);
            p.io_write(0, port + 1, 1, 1);
            p.io_write(0, port + 1, 1, 0);
        }
    }

    #[test]
    fn serial_debugcon_and_exit() {
        let (mut p, sink) = platform(PlatformConfig { debug_exit: Some((0xf4, 4)), ..Default::default() });
        for b in b"ok" {
            p.io_write(0, 0x3f8, 1, u32::from(*b));
        }
        p.io_write(0, 0xe9, 1, u32::from(b'!'));
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"ok!");
        assert_eq!(p.io_read(0, 0x2f8, 1), 0xff, "COM2 absent");
        assert_eq!(p.exit_request(), None);
        p.io_write(0, 0xf4, 4, 3);
        assert_eq!(p.exit_request(), Some(ExitRequest::DebugExit(7)));
        let stats = p.stats().entries();
        assert!(stats.contains(&("serial", 2, 0)));
        assert!(stats.contains(&("unassigned", 1, 0)));
        assert_eq!(p.unhandled().len(), 1);
    }

    #[test]
    fn pit_irq0_through_pic_to_cpu0() {
        let (mut p, _) = platform(PlatformConfig::default());
        init_pic(&mut p);
        p.io_write(0, 0x43, 1, 0x34);
        p.io_write(0, 0x40, 1, 0xa9);
        p.io_write(0, 0x40, 1, 0x04);
        let due = p.next_deadline_ns().unwrap();
        assert!(!p.pending_interrupt(due - 1, 0));
        assert!(p.pending_interrupt(due, 0));
        assert_eq!(p.ack_interrupt(due, 0), Some(0x30));
        p.io_write(due, 0x20, 1, 0x20);
        assert!(!p.pending_interrupt(due, 0));
        assert!(p.next_deadline_ns().unwrap() > due);
    }

    #[test]
    fn pit_absent_when_disabled() {
        let (mut p, _) = platform(PlatformConfig { pit: false, ..Default::default() });
        assert_eq!(p.io_read(0, 0x40, 1), 0xff);
        assert_eq!(p.io_read(0, 0x61, 1), 0xff);
        assert_eq!(p.next_deadline_ns(), None);
    }

    #[test]
    fn ioapic_routes_serial_to_lapic_vector() {
        let (mut p, _) = platform(PlatformConfig { num_cpus: 2, ..Default::default() });
        enable_apic(&mut p, 1);
        // Pin 4 -> vector 0x24, physical destination APIC 1.
        p.mmio_write(0, 0, 0xfec0_0000, 4, 0x18);
        p.mmio_write(0, 0, 0xfec0_0010, 4, 0x24);
        p.mmio_write(0, 0, 0xfec0_0000, 4, 0x19);
        p.mmio_write(0, 0, 0xfec0_0010, 4, 1 << 24);
        p.serial_input(b"x");
        assert!(!p.pending_interrupt(0, 1), "RX interrupt not enabled");
        p.io_write(0, 0x3f9, 1, 0x01);
        assert!(p.pending_interrupt(0, 1));
        assert_eq!(p.ack_interrupt(0, 1), Some(0x24));
        assert_eq!(p.io_read(0, 0x3f8, 1), u32::from(b'x'));
    }

    #[test]
    fn level_triggered_eoi_reaches_ioapic() {
        let (mut p, _) = platform(PlatformConfig { pc_testdev: true, ..Default::default() });
        enable_apic(&mut p, 0);
        p.mmio_write(0, 0, 0xfee0_0350, 4, 0x1_0000); // mask LINT0
        p.mmio_write(0, 0, 0xfec0_0000, 4, 0x10 + 2 * 14);
        p.mmio_write(0, 0, 0xfec0_0010, 4, 0x8000 | 0x60);
        p.io_write(0, 0x2000 + 14, 1, 1);
        assert_eq!(p.ack_interrupt(0, 0), Some(0x60));
        assert!(!p.pending_interrupt(0, 0));
        p.mmio_write(0, 0, 0xfee0_00b0, 4, 0);
        assert_eq!(p.ack_interrupt(0, 0), Some(0x60), "line still high: redelivered");
        p.io_write(0, 0x2000 + 14, 1, 0);
        p.mmio_write(0, 0, 0xfee0_00b0, 4, 0);
        assert!(!p.pending_interrupt(0, 0));
    }

    #[test]
    fn init_sipi_and_fixed_ipi() {
        let (mut p, _) = platform(PlatformConfig { num_cpus: 3, ..Default::default() });
        enable_apic(&mut p, 0);
        p.mmio_write(0, 0, 0xfee0_0300, 4, 0x000c_4500); // INIT all-excluding-self
        p.mmio_write(0, 0, 0xfee0_0300, 4, 0x000c_8500); // INIT de-assert: ignored
        p.mmio_write(0, 0, 0xfee0_0300, 4, 0x000c_4608); // SIPI 0x08
        for cpu in 1..3 {
            assert_eq!(p.take_cpu_event(cpu), Some(CpuEvent::Init));
            assert_eq!(p.take_cpu_event(cpu), Some(CpuEvent::Startup(8)));
            assert_eq!(p.take_cpu_event(cpu), None);
        }
        assert_eq!(p.take_cpu_event(0), None);
        enable_apic(&mut p, 2);
        p.mmio_write(0, 0, 0xfee0_0310, 4, 2 << 24);
        p.mmio_write(0, 0, 0xfee0_0300, 4, 0x41);
        assert_eq!(p.ack_interrupt(0, 2), Some(0x41));
        p.mmio_write(0, 0, 0xfee0_0300, 4, 0x400 | (1 << 18)); // NMI self
        assert!(p.pending_nmi(0));
        assert!(!p.pending_nmi(0));
    }

    #[test]
    fn x2apic_and_tsc_deadline_via_msrs() {
        let (mut p, _) = platform(PlatformConfig { num_cpus: 2, ..Default::default() });
        assert_eq!(p.lapic_msr_read(0, 1, 0x1b), Some(0xfee0_0800));
        assert!(p.lapic_msr_write(0, 1, 0x1b, 0xfee0_0c00));
        assert!(p.lapic_msr_write(0, 1, 0x80f, 0x1ff));
        assert!(p.lapic_msr_write(0, 1, 0x832, 0x4_0070));
        assert!(p.lapic_msr_write(0, 1, 0x6e0, 4000));
        assert_eq!(p.next_deadline_ns(), Some(2000));
        assert!(!p.pending_interrupt(1999, 1));
        assert!(p.pending_interrupt(2000, 1));
        p.set_tpr(1, 7);
        assert_eq!(p.tpr(1), 7);
        assert!(!p.pending_interrupt(2000, 1));
        p.set_tpr(1, 0);
        assert_eq!(p.ack_interrupt(2000, 1), Some(0x70));
        assert!(!p.lapic_msr_write(0, 1, 0x80b, 1), "EOI must be 0");
        assert!(p.lapic_msr_write(0, 1, 0x80b, 0));
        assert_eq!(p.lapic_msr_read(0, 0, 0x802), None, "CPU 0 still xAPIC");
        assert_eq!(p.lapic_msr_read(0, 1, 0x10), None);
    }

    #[test]
    fn fw_cfg_e820_and_cmdline() {
        let (mut p, _) = platform(PlatformConfig {
            ram_size: 5 << 30,
            num_cpus: 4,
            cmdline: b"console=ttyS0".to_vec(),
            ..Default::default()
        });
        let mut read = |key: u16, n: usize| -> Vec<u8> {
            p.io_write(0, 0x510, 2, u32::from(key));
            (0..n).map(|_| p.io_read(0, 0x511, 1) as u8).collect()
        };
        assert_eq!(read(0, 4), b"QEMU");
        assert_eq!(read(5, 2), [4, 0]);
        assert_eq!(read(0x14, 4), [14, 0, 0, 0]);
        assert_eq!(read(0x15, 14), b"console=ttyS0\0");
        let dir = read(0x19, 4 + 64);
        assert_eq!(&dir[12..20], b"etc/e820");
        let size = u32::from_be_bytes(dir[4..8].try_into().unwrap()) as usize;
        assert_eq!(size, 2 * 20);
        let e820 = read(u16::from_be_bytes([dir[8], dir[9]]), size);
        let first = &e820[0..20];
        assert_eq!(u64::from_le_bytes(first[8..16].try_into().unwrap()), LOWMEM_LIMIT);
        let last = &e820[20..40];
        assert_eq!(u64::from_le_bytes(last[0..8].try_into().unwrap()), 1 << 32);
        assert_eq!(u64::from_le_bytes(last[8..16].try_into().unwrap()), (5 << 30) - LOWMEM_LIMIT);
    }

    #[test]
    fn pci_testdev_through_platform() {
        let (mut p, _) = platform(PlatformConfig { pci_testdev: true, ..Default::default() });
        let bar0 = crate::pci::TESTDEV_MMIO_BASE;
        assert!(p.is_mmio(bar0 + 0x10));
        p.mmio_write(0, 0, bar0, 1, 1); // mmio-wildcard-eventfd
        assert_eq!(p.mmio_read(0, 0, bar0, 1), 1);
        p.mmio_write(0, 0, bar0 + 2048 + 1, 4, 0x12);
        assert_eq!(p.mmio_read(0, 0, bar0 + 12, 4), 1);
        let io = crate::pci::TESTDEV_IO_BASE;
        p.io_write(0, io, 1, 2);
        p.io_write(0, io + 128 + 5, 1, 0xfa);
        assert_eq!(p.io_read(0, io + 12, 4), 1);
    }

    #[test]
    fn pc_testdev_and_resets() {
        let (mut p, _) = platform(PlatformConfig { pc_testdev: true, ..Default::default() });
        p.io_write(0, 0xe0, 4, 0xdead_beef);
        assert_eq!(p.io_read(0, 0xe8, 1), 0xef);
        p.mmio_write(0, 0, 0xff00_0100, 4, 0x1234_5678);
        assert_eq!(p.mmio_read(0, 0, 0xff00_0102, 2), 0x1234);
        p.io_write(0, 0x64, 1, 0xfe);
        assert_eq!(p.exit_request(), Some(ExitRequest::Reset));
        p.clear_exit_request();
        p.io_write(0, 0xcf9, 1, 0x06);
        assert_eq!(p.exit_request(), Some(ExitRequest::Reset));
        p.clear_exit_request();
        p.io_write(0, 0x604, 2, (5 << 10) | (1 << 13));
        assert_eq!(p.exit_request(), Some(ExitRequest::PowerOff));
    }

    #[test]
    fn rtc_periodic_irq8_via_slave_pic() {
        let (mut p, _) = platform(PlatformConfig::default());
        init_pic(&mut p);
        p.io_write(0, 0x70, 1, 0x0b);
        p.io_write(0, 0x71, 1, 0x42);
        let due = p.next_deadline_ns().unwrap();
        assert!(p.pending_interrupt(due, 0));
        assert_eq!(p.ack_interrupt(due, 0), Some(0x38));
        p.io_write(due, 0x70, 1, 0x0c);
        assert_eq!(p.io_read(due, 0x71, 1) & 0xc0, 0xc0);
    }

    #[test]
    fn hpet_legacy_timer0_replaces_pit_on_irq0() {
        let (mut p, _) = platform(PlatformConfig::default());
        init_pic(&mut p);
        assert!(p.is_mmio(0xfed0_0000) && p.is_mmio(0xfed0_03ff) && !p.is_mmio(0xfed0_0400));
        assert_eq!(p.mmio_read(0, 0, 0xfed0_0004, 4), 10_000_000);
        // PIT mode 2 running: its IRQ 0 must be disconnected in legacy mode.
        p.io_write(0, 0x43, 1, 0x34);
        p.io_write(0, 0x40, 1, 0xa9);
        p.io_write(0, 0x40, 1, 0x04);
        // Timer 0: periodic, 1 ms, edge, as Linux programs it.
        let base = 0xfed0_0000u64;
        p.mmio_write(0, 0, base + 0x100, 4, 0x4c | 0x100);
        p.mmio_write(0, 0, base + 0x108, 4, 100_000);
        p.mmio_write(0, 0, base + 0x108, 4, 100_000);
        p.mmio_write(0, 0, base + 0x10, 4, 3);
        assert_eq!(p.hpet.next_deadline_ns(), Some(1_000_000));
        assert!(!p.pending_interrupt(999_999, 0), "PIT disconnected");
        assert!(p.pending_interrupt(1_000_000, 0));
        assert_eq!(p.ack_interrupt(1_000_000, 0), Some(0x30));
        p.io_write(1_000_000, 0x20, 1, 0x20);
        assert!(!p.pending_interrupt(1_999_999, 0));
        assert!(p.pending_interrupt(2_000_000, 0));
        assert_eq!(p.mmio_read(2_000_000, 0, base + 0xf0, 4), 200_000);
        assert!(p.stats().entries().iter().any(|&(name, _, mmio)| name == "hpet" && mmio > 0));
    }

    #[test]
    fn hpet_level_timer_through_ioapic() {
        let (mut p, _) = platform(PlatformConfig::default());
        enable_apic(&mut p, 0);
        // IOAPIC pin 20 -> vector 0x70, level, APIC 0.
        p.mmio_write(0, 0, 0xfec0_0000, 4, 0x10 + 2 * 20);
        p.mmio_write(0, 0, 0xfec0_0010, 4, 0x8000 | 0x70);
        p.mmio_write(0, 0, 0xfec0_0000, 4, 0x11 + 2 * 20);
        p.mmio_write(0, 0, 0xfec0_0010, 4, 0);
        let base = 0xfed0_0000u64;
        p.mmio_write(0, 0, base + 0x140, 4, 0x6 | (20 << 9)); // timer 2
        p.mmio_write(0, 0, base + 0x148, 8, 50);
        p.mmio_write(0, 0, base + 0x10, 4, 1);
        assert_eq!(p.next_deadline_ns(), Some(500));
        assert!(!p.pending_interrupt(499, 0));
        assert_eq!(p.ack_interrupt(500, 0), Some(0x70));
        p.mmio_write(500, 0, 0xfee0_00b0, 4, 0);
        assert_eq!(p.ack_interrupt(500, 0), Some(0x70), "status still set: redelivered");
        p.mmio_write(500, 0, base + 0x20, 4, 1 << 2);
        p.mmio_write(500, 0, 0xfee0_00b0, 4, 0);
        assert!(!p.pending_interrupt(10_000, 0));
    }

    #[test]
    fn acpi_tables_match_machine() {
        let (p, _) = platform(PlatformConfig { num_cpus: 2, ..Default::default() });
        let t = p.acpi_tables(0xe1000);
        assert_eq!(&t.rsdp[..8], b"RSD PTR ");
    }

    #[test]
    fn hostile_inputs_do_not_panic() {
        let (mut p, _) = platform(PlatformConfig {
            num_cpus: 3,
            pc_testdev: true,
            pci_testdev: true,
            debug_exit: Some((0xf4, 4)),
            ..Default::default()
        });
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let hot_ports: [u16; 16] =
            [0x20, 0x21, 0xa0, 0x40, 0x43, 0x61, 0x70, 0x71, 0x3f8, 0x510, 0x511, 0xcf8, 0xcfc, 0x600, 0x64, 0xc000];
        let hot_mmio: [u64; 6] = [0xfee0_0000, 0xfec0_0000, 0xff00_0000, 0xfe00_0000, 0xffff_f000, 0xfed0_0000];
        let mut now = 0u64;
        for _ in 0..300_000 {
            let r = next();
            now = now.wrapping_add(r % 5000);
            let size = [1u8, 2, 4, 8, 3, 0][(r >> 8) as usize % 6];
            let cpu = (r >> 16) as u32 % 4;
            let value = next();
            match r % 8 {
                0 | 1 => {
                    let port = if r & 0x100 != 0 {
                        hot_ports[(r >> 20) as usize % 16].wrapping_add((r >> 40) as u16 % 8)
                    } else {
                        (r >> 20) as u16
                    };
                    if r & 0x200 != 0 {
                        p.io_write(now, port, size, value as u32);
                    } else {
                        p.io_read(now, port, size);
                    }
                }
                2 | 3 => {
                    let gpa = hot_mmio[(r >> 20) as usize % 6].wrapping_add((r >> 32) % 0x1_2000);
                    if r & 0x200 != 0 {
                        p.mmio_write(now, cpu, gpa, size, value);
                    } else {
                        p.mmio_read(now, cpu, gpa, size);
                    }
                    p.is_mmio(gpa);
                }
                4 => {
                    let msr =
                        [0x1bu32, 0x6e0, 0x800 + (r >> 24) as u32 % 0x100, (r >> 24) as u32][(r >> 8) as usize % 4];
                    if r & 0x200 != 0 {
                        p.lapic_msr_write(now, cpu, msr, value);
                    } else {
                        p.lapic_msr_read(now, cpu, msr);
                    }
                }
                5 => {
                    if p.pending_interrupt(now, cpu) {
                        p.ack_interrupt(now, cpu);
                    }
                    p.pending_nmi(cpu);
                    p.take_cpu_event(cpu);
                    p.set_tpr(cpu, value as u8);
                }
                6 => {
                    p.serial_input(&value.to_le_bytes()[..(r >> 8) as usize % 9]);
                    p.advance(now);
                    p.next_deadline_ns();
                }
                _ => {
                    now = now.wrapping_add(value % 10_000_000_000);
                    p.advance(now);
                }
            }
            p.clear_exit_request();
        }
        // Extreme virtual times must not overflow either.
        for now in [u64::MAX - 1, u64::MAX] {
            p.io_write(now, 0x70, 1, 0x0b);
            p.io_write(now, 0x71, 1, 0x72);
            p.io_write(now, 0x43, 1, 0x34);
            p.io_write(now, 0x40, 1, 1);
            p.io_write(now, 0x40, 1, 0);
            p.lapic_msr_write(now, 0, 0x6e0, u64::MAX);
            p.mmio_write(now, 0, 0xfee0_0380, 4, u64::MAX);
            p.advance(now);
            p.pending_interrupt(now, 0);
            p.next_deadline_ns();
            p.io_read(now, 0x608, 4);
            p.io_read(now, 0x71, 1);
        }
    }
}
