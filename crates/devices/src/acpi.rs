//! ACPI tables and the fixed-hardware PM registers.
//!
//! Tables follow the ACPI 6.x specification, chapter 5 "ACPI Software
//! Programming Model": 5.2.5 "Root System Description Pointer (RSDP)"
//! (revision 2: both the 20-byte and extended checksums), 5.2.7 RSDT,
//! 5.2.8 XSDT, 5.2.9 "Fixed ACPI Description Table (FADT)" (revision 6,
//! with the 32-bit block addresses and the matching X_ generic address
//! structures), 5.2.10 FACS, 5.2.11.1 DSDT, and 5.2.12 "Multiple APIC
//! Description Table (MADT)" (Processor Local APIC / x2APIC, I/O APIC,
//! Interrupt Source Override and Local APIC NMI entries). The HPET table
//! (signature reserved in 5.2.6 "System Description Table Header", layout
//! in the IA-PC HPET Specification 1.0a, 3.2.4 "The ACPI 2.0 HPET
//! Description Table (HPET)") describes the timer block of
//! [`crate::hpet`].
//!
//! The DSDT is AML hand-assembled by the crate's `aml` module (chapter 20
//! "ACPI Machine Language (AML) Specification", 20.2 "AML Grammar
//! Definition"), the equivalent of the ASL below. `PCI0` has both `_HID`
//! and `_ADR`, as QEMU's does; `iasl` warns about that but ACPICA accepts
//! it. The PCI hole window is left out when low RAM reaches it.
//!
//! ```text
//! Scope (\_SB) {
//!     Device (PCI0) {                      // i440FX host bridge
//!         Name (_HID, EisaId ("PNP0A03"))
//!         Name (_ADR, Zero)
//!         Name (_UID, Zero)
//!         Name (_BBN, Zero)
//!         Name (_CRS, ResourceTemplate () {
//!             WordBusNumber (0x00-0xff)
//!             WordIO (0x0000-0x0cf7), WordIO (0x0d00-0xffff)
//!             DWordMemory (0xa0000-0xbffff)           // VGA window
//!             DWordMemory (low RAM end-0xfebfffff)    // 32-bit PCI hole
//!         })
//!     }
//!     Device (HPET) {
//!         Name (_HID, EisaId ("PNP0103"))
//!         Name (_UID, Zero)
//!         Name (_CRS, ResourceTemplate () { Memory32Fixed (0xfed00000, 0x400) })
//!     }
//! }
//! Name (_S5, Package () {5, 5, 0, 0})
//! ```
//!
//! The PM registers follow 4.8 "ACPI Hardware Features": PM1a event block
//! at 0x600 (status, write-1-to-clear, then enable), PM1a control at 0x604
//! (SCI_EN reads 1 because there is no SMI command port; SLP_TYP 5 with
//! SLP_EN requests power-off) and the 24-bit PM timer at 0x608 counting at
//! 3.579545 MHz.

/// PM1a event block port.
pub const PM1A_EVT_BLK: u16 = 0x600;
/// PM1a control block port.
pub const PM1A_CNT_BLK: u16 = 0x604;
/// PM timer port.
pub const PM_TMR_BLK: u16 = 0x608;
/// PM timer frequency in Hz.
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// SCI interrupt.
pub const SCI_IRQ: u8 = 9;
/// SLP_TYP value of S5 in the DSDT's `_S5` package.
pub const SLP_TYP_S5: u16 = 5;
/// Reset register (PIIX3 reset control) and value advertised in the FADT.
pub const RESET_PORT: u16 = 0xcf9;
/// Value written to [`RESET_PORT`] to reset.
pub const RESET_VALUE: u8 = 0x06;

use crate::hpet::{Hpet, HPET_BASE, HPET_LEN};

const OEM_ID: &[u8; 6] = b"TURTLE";
const CREATOR_ID: &[u8; 4] = b"TRTL";

/// What the tables describe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of processors (APIC IDs 0..num_cpus).
    pub num_cpus: u32,
    /// IOAPIC ID.
    pub ioapic_id: u8,
    /// IOAPIC address.
    pub ioapic_addr: u32,
    /// Local APIC address.
    pub lapic_addr: u32,
    /// End of RAM below 4 GiB: the 32-bit PCI hole the host bridge
    /// decodes runs from here to [`PCI_HOLE_END`].
    pub low_ram_end: u32,
}

/// Last address of the 32-bit PCI hole (the IOAPIC, HPET and local APIC
/// follow).
pub const PCI_HOLE_END: u32 = 0xfebf_ffff;

/// Built tables: `rsdp` goes at `rsdp_addr`, `tables` at `tables_addr`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcpiTables {
    /// RSDP bytes (36, revision 2).
    pub rsdp: Vec<u8>,
    /// All other tables, contiguous.
    pub tables: Vec<u8>,
    /// Offsets of each table in `tables`, by signature.
    pub offsets: Vec<([u8; 4], usize)>,
}

/// Sum-to-zero checksum byte for `bytes`.
pub fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

fn header(sig: &[u8; 4], revision: u8, table_id: &[u8; 8]) -> Vec<u8> {
    let mut h = Vec::with_capacity(36);
    h.extend_from_slice(sig);
    h.extend_from_slice(&[0; 4]); // length, patched in finish()
    h.push(revision);
    h.push(0); // checksum
    h.extend_from_slice(OEM_ID);
    h.extend_from_slice(table_id);
    h.extend_from_slice(&1u32.to_le_bytes());
    h.extend_from_slice(CREATOR_ID);
    h.extend_from_slice(&1u32.to_le_bytes());
    h
}

fn finish(mut t: Vec<u8>) -> Vec<u8> {
    let len = t.len() as u32;
    t[4..8].copy_from_slice(&len.to_le_bytes());
    t[9] = 0;
    t[9] = checksum(&t);
    t
}

/// Generic Address Structure for a System I/O register.
fn gas_io(port: u16, bit_width: u8, access_size: u8) -> [u8; 12] {
    let mut g = [0u8; 12];
    g[0] = 1;
    g[1] = bit_width;
    g[3] = access_size;
    g[4..12].copy_from_slice(&u64::from(port).to_le_bytes());
    g
}

fn put(t: &mut [u8], off: usize, bytes: &[u8]) {
    t[off..off + bytes.len()].copy_from_slice(bytes);
}

fn dsdt(cfg: &AcpiConfig) -> Vec<u8> {
    use crate::aml::{self, AddressSpace};
    let hole_start = cfg.low_ram_end.min(PCI_HOLE_END);
    let mut pci_crs = vec![
        aml::word_address(AddressSpace::BusNumber, 0, 0, 0xff),
        // Type-specific 3: EntireRange (ISA and non-ISA ports).
        aml::word_address(AddressSpace::Io, 3, 0, 0x0cf7),
        aml::word_address(AddressSpace::Io, 3, 0x0d00, 0xffff),
        aml::dword_memory(true, 0x000a_0000, 0x000b_ffff),
    ];
    if hole_start < PCI_HOLE_END {
        pci_crs.push(aml::dword_memory(false, hole_start, PCI_HOLE_END));
    }
    let zero = aml::integer(0);
    let pci0 = aml::device(
        "PCI0",
        &[
            aml::name("_HID", &aml::dword(aml::eisa_id("PNP0A03"))),
            aml::name("_ADR", &zero),
            aml::name("_UID", &zero),
            aml::name("_BBN", &zero),
            aml::name("_CRS", &aml::resource_template(&pci_crs)),
        ],
    );
    let hpet = aml::device(
        "HPET",
        &[
            aml::name("_HID", &aml::dword(aml::eisa_id("PNP0103"))),
            aml::name("_UID", &zero),
            aml::name("_CRS", &aml::resource_template(&[aml::memory32_fixed(HPET_BASE as u32, HPET_LEN as u32)])),
        ],
    );
    let s5 = u64::from(SLP_TYP_S5);
    let mut t = header(b"DSDT", 2, b"TRTLDSDT");
    t.extend(aml::scope("\\_SB", &[pci0, hpet]));
    t.extend(aml::name("_S5", &aml::package(&[aml::integer(s5), aml::integer(s5), zero.clone(), zero])));
    finish(t)
}

/// The HPET description table for the block at [`HPET_BASE`].
fn hpet_table() -> Vec<u8> {
    let mut t = header(b"HPET", 1, b"TRTLHPET");
    // Event Timer Block ID: the low half of the capabilities register.
    t.extend_from_slice(&(Hpet::capabilities() as u32).to_le_bytes());
    // Base address: Generic Address Structure in system memory.
    t.extend_from_slice(&[0, 64, 0, 0]);
    t.extend_from_slice(&HPET_BASE.to_le_bytes());
    t.push(0); // HPET number
    t.extend_from_slice(&0x80u16.to_le_bytes()); // minimum periodic tick
    t.push(0); // page protection: none
    finish(t)
}

fn facs() -> Vec<u8> {
    let mut t = vec![0u8; 64];
    t[0..4].copy_from_slice(b"FACS");
    t[4..8].copy_from_slice(&64u32.to_le_bytes());
    t[32] = 2; // version
    t
}

fn fadt(facs_addr: u32, dsdt_addr: u32) -> Vec<u8> {
    let mut t = header(b"FACP", 6, b"TRTLFACP");
    t.resize(276, 0);
    put(&mut t, 36, &facs_addr.to_le_bytes());
    put(&mut t, 40, &dsdt_addr.to_le_bytes());
    put(&mut t, 46, &u16::from(SCI_IRQ).to_le_bytes());
    put(&mut t, 56, &u32::from(PM1A_EVT_BLK).to_le_bytes());
    put(&mut t, 64, &u32::from(PM1A_CNT_BLK).to_le_bytes());
    put(&mut t, 76, &u32::from(PM_TMR_BLK).to_le_bytes());
    t[88] = 4; // PM1_EVT_LEN
    t[89] = 2; // PM1_CNT_LEN
    t[91] = 4; // PM_TMR_LEN
    put(&mut t, 96, &0x0fffu16.to_le_bytes()); // P_LVL2_LAT: no C2
    put(&mut t, 98, &0x0fffu16.to_le_bytes()); // P_LVL3_LAT: no C3
    t[108] = crate::rtc::CMOS_CENTURY;
    put(&mut t, 109, &0x0003u16.to_le_bytes()); // LEGACY_DEVICES | 8042
                                                // WBINVD | PROC_C1 | PWR_BUTTON | SLP_BUTTON | RESET_REG_SUP
    put(&mut t, 112, &((1u32 << 0) | (1 << 2) | (1 << 4) | (1 << 5) | (1 << 10)).to_le_bytes());
    put(&mut t, 116, &gas_io(RESET_PORT, 8, 1));
    t[128] = RESET_VALUE;
    t[131] = 0; // FADT minor version
    put(&mut t, 140, &u64::from(dsdt_addr).to_le_bytes());
    put(&mut t, 148, &gas_io(PM1A_EVT_BLK, 32, 2));
    put(&mut t, 172, &gas_io(PM1A_CNT_BLK, 16, 2));
    put(&mut t, 208, &gas_io(PM_TMR_BLK, 32, 3));
    finish(t)
}

fn madt(cfg: &AcpiConfig) -> Vec<u8> {
    let mut t = header(b"APIC", 5, b"TRTLAPIC");
    t.extend_from_slice(&cfg.lapic_addr.to_le_bytes());
    t.extend_from_slice(&1u32.to_le_bytes()); // PCAT_COMPAT
    for cpu in 0..cfg.num_cpus {
        if cpu < 255 {
            t.extend_from_slice(&[0, 8, cpu as u8, cpu as u8]);
            t.extend_from_slice(&1u32.to_le_bytes());
        } else {
            t.extend_from_slice(&[9, 16, 0, 0]);
            t.extend_from_slice(&cpu.to_le_bytes());
            t.extend_from_slice(&1u32.to_le_bytes());
            t.extend_from_slice(&cpu.to_le_bytes());
        }
    }
    t.extend_from_slice(&[1, 12, cfg.ioapic_id, 0]);
    t.extend_from_slice(&cfg.ioapic_addr.to_le_bytes());
    t.extend_from_slice(&0u32.to_le_bytes());
    // IRQ0 -> GSI 2, conforming.
    t.extend_from_slice(&[2, 10, 0, 0]);
    t.extend_from_slice(&2u32.to_le_bytes());
    t.extend_from_slice(&0u16.to_le_bytes());
    // SCI: IRQ 9 -> GSI 9, active high, level.
    t.extend_from_slice(&[2, 10, 0, SCI_IRQ]);
    t.extend_from_slice(&u32::from(SCI_IRQ).to_le_bytes());
    t.extend_from_slice(&0x000du16.to_le_bytes());
    // LINT1 of all processors is NMI.
    t.extend_from_slice(&[4, 6, 0xff, 0, 0, 1]);
    finish(t)
}

/// Pads `v` to a multiple of `a` (a power of two).
fn align(v: &mut Vec<u8>, a: usize) {
    while v.len() & (a - 1) != 0 {
        v.push(0);
    }
}

/// Builds the tables for a blob loaded at guest-physical `tables_addr`
/// (below 4 GiB). The RSDP can be placed anywhere the OS searches (a
/// 16-byte-aligned address in 0xe0000-0xfffff).
pub fn build_tables(cfg: &AcpiConfig, tables_addr: u32) -> AcpiTables {
    let mut blob = Vec::new();
    let mut offsets = Vec::new();
    let mut place = |blob: &mut Vec<u8>, sig: [u8; 4], t: Vec<u8>, al: usize| {
        align(blob, al);
        let off = blob.len();
        offsets.push((sig, off));
        blob.extend_from_slice(&t);
        tables_addr.wrapping_add(off as u32)
    };
    let facs_addr = place(&mut blob, *b"FACS", facs(), 64);
    let dsdt_addr = place(&mut blob, *b"DSDT", dsdt(cfg), 8);
    let fadt_addr = place(&mut blob, *b"FACP", fadt(facs_addr, dsdt_addr), 8);
    let madt_addr = place(&mut blob, *b"APIC", madt(cfg), 8);
    let hpet_addr = place(&mut blob, *b"HPET", hpet_table(), 8);
    let mut rsdt = header(b"RSDT", 1, b"TRTLRSDT");
    let mut xsdt = header(b"XSDT", 1, b"TRTLXSDT");
    for a in [fadt_addr, madt_addr, hpet_addr] {
        rsdt.extend_from_slice(&a.to_le_bytes());
        xsdt.extend_from_slice(&u64::from(a).to_le_bytes());
    }
    let rsdt_addr = place(&mut blob, *b"RSDT", finish(rsdt), 8);
    let xsdt_addr = place(&mut blob, *b"XSDT", finish(xsdt), 8);

    let mut rsdp = Vec::with_capacity(36);
    rsdp.extend_from_slice(b"RSD PTR ");
    rsdp.push(0);
    rsdp.extend_from_slice(OEM_ID);
    rsdp.push(2);
    rsdp.extend_from_slice(&rsdt_addr.to_le_bytes());
    rsdp.extend_from_slice(&36u32.to_le_bytes());
    rsdp.extend_from_slice(&u64::from(xsdt_addr).to_le_bytes());
    rsdp.extend_from_slice(&[0; 4]);
    rsdp[8] = checksum(&rsdp[..20]);
    rsdp[32] = checksum(&rsdp);
    AcpiTables { rsdp, tables: blob, offsets }
}

/// PM1a event/control registers and the PM timer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AcpiPm {
    /// PM1 status.
    pub pm1_sts: u16,
    /// PM1 enable.
    pub pm1_en: u16,
    /// PM1 control (SCI_EN forced on when read).
    pub pm1_cnt: u16,
    /// Set when the guest entered S5.
    pub power_off_requested: bool,
}

impl AcpiPm {
    /// PM timer value at `now_ns` (24 bits).
    pub fn timer(now_ns: u64) -> u32 {
        ((now_ns as u128 * PM_TIMER_HZ as u128 / 1_000_000_000) as u32) & 0x00ff_ffff
    }

    /// Port read at `port` in 0x600-0x60b.
    pub fn io_read(&self, now_ns: u64, port: u16, size: u8) -> u32 {
        let regs: [u8; 12] = {
            let mut r = [0u8; 12];
            r[0..2].copy_from_slice(&self.pm1_sts.to_le_bytes());
            r[2..4].copy_from_slice(&self.pm1_en.to_le_bytes());
            r[4..6].copy_from_slice(&(self.pm1_cnt | 1).to_le_bytes());
            r[8..12].copy_from_slice(&Self::timer(now_ns).to_le_bytes());
            r
        };
        let base = usize::from(port.wrapping_sub(PM1A_EVT_BLK));
        let mut v = 0u32;
        for i in 0..usize::from(size.clamp(1, 4)) {
            v |= u32::from(regs.get(base + i).copied().unwrap_or(0xff)) << (8 * i);
        }
        v
    }

    /// Port write at `port` in 0x600-0x60b.
    pub fn io_write(&mut self, port: u16, size: u8, value: u32) {
        let base = port.wrapping_sub(PM1A_EVT_BLK);
        for i in 0..u16::from(size.clamp(1, 4)) {
            let b = (value >> (8 * i)) as u8;
            match base.wrapping_add(i) {
                0 => self.pm1_sts &= !u16::from(b),
                1 => self.pm1_sts &= !(u16::from(b) << 8),
                2 => self.pm1_en = (self.pm1_en & 0xff00) | u16::from(b),
                3 => self.pm1_en = (self.pm1_en & 0x00ff) | (u16::from(b) << 8),
                4 => self.pm1_cnt = (self.pm1_cnt & 0xff00) | u16::from(b),
                5 => {
                    let cnt = (self.pm1_cnt & 0x00ff) | (u16::from(b) << 8);
                    // SLP_EN is write-only.
                    self.pm1_cnt = cnt & !(1 << 13);
                    if cnt & (1 << 13) != 0 && (cnt >> 10) & 7 == SLP_TYP_S5 {
                        self.power_off_requested = true;
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(n: u32) -> AcpiConfig {
        AcpiConfig {
            num_cpus: n,
            ioapic_id: n as u8,
            ioapic_addr: 0xfec0_0000,
            lapic_addr: 0xfee0_0000,
            low_ram_end: 0x0800_0000,
        }
    }

    #[test]
    fn checksums_and_links() {
        let base = 0x000e_1000;
        let t = build_tables(&cfg(4), base);
        assert_eq!(t.rsdp.len(), 36);
        assert_eq!(t.rsdp[..20].iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        assert_eq!(t.rsdp.iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
        for (sig, off) in &t.offsets {
            let len = u32::from_le_bytes(t.tables[off + 4..off + 8].try_into().unwrap()) as usize;
            assert_eq!(&t.tables[*off..off + 4], sig);
            if sig != b"FACS" {
                let sum = t.tables[*off..off + len].iter().fold(0u8, |a, &b| a.wrapping_add(b));
                assert_eq!(sum, 0, "{}", String::from_utf8_lossy(sig));
            } else {
                assert_eq!((base as usize + off) % 64, 0);
            }
        }
        let find = |s: &[u8; 4]| t.offsets.iter().find(|(sig, _)| sig == s).unwrap().1;
        let rsdt = u32::from_le_bytes(t.rsdp[16..20].try_into().unwrap());
        assert_eq!(rsdt, base + find(b"RSDT") as u32);
        let xsdt = u64::from_le_bytes(t.rsdp[24..32].try_into().unwrap());
        assert_eq!(xsdt, u64::from(base) + find(b"XSDT") as u64);
        let fadt = find(b"FACP");
        assert_eq!(u32::from_le_bytes(t.tables[fadt + 4..fadt + 8].try_into().unwrap()), 276);
        let dsdt_ptr = u32::from_le_bytes(t.tables[fadt + 40..fadt + 44].try_into().unwrap());
        assert_eq!(dsdt_ptr, base + find(b"DSDT") as u32);
        let madt = find(b"APIC");
        let madt_len = u32::from_le_bytes(t.tables[madt + 4..madt + 8].try_into().unwrap());
        assert_eq!(madt_len as usize, 44 + 4 * 8 + 12 + 10 + 10 + 6);
    }

    fn table<'a>(t: &'a AcpiTables, sig: &[u8; 4]) -> &'a [u8] {
        let off = t.offsets.iter().find(|(s, _)| s == sig).unwrap().1;
        let len = u32::from_le_bytes(t.tables[off + 4..off + 8].try_into().unwrap()) as usize;
        &t.tables[off..off + len]
    }

    #[test]
    fn hpet_table_describes_the_timer_block() {
        let base = 0x000e_1000;
        let t = build_tables(&cfg(1), base);
        let h = table(&t, b"HPET");
        assert_eq!(h.len(), 56);
        assert_eq!(u32::from_le_bytes(h[36..40].try_into().unwrap()), 0x8086_a201);
        assert_eq!(h[40], 0, "system memory");
        assert_eq!(u64::from_le_bytes(h[44..52].try_into().unwrap()), 0xfed0_0000);
        assert_eq!(h[52], 0);
        assert_eq!(u16::from_le_bytes(h[53..55].try_into().unwrap()), 0x80);
        assert_eq!(h[55], 0);
        let hpet_addr = base + t.offsets.iter().find(|(s, _)| s == b"HPET").unwrap().1 as u32;
        let rsdt = table(&t, b"RSDT");
        assert!(rsdt[36..].chunks(4).any(|a| a == hpet_addr.to_le_bytes()));
        let xsdt = table(&t, b"XSDT");
        assert!(xsdt[36..].chunks(8).any(|a| a == u64::from(hpet_addr).to_le_bytes()));
    }

    #[test]
    fn dsdt_declares_host_bridge_hpet_and_s5() {
        let t = build_tables(&cfg(1), 0x000e_1000);
        let d = table(&t, b"DSDT");
        let has = |needle: &[u8]| d.windows(needle.len()).any(|w| w == needle);
        assert!(has(b"\\_SB_"));
        assert!(has(&[0x5b, 0x82]), "DeviceOp");
        assert!(has(b"PCI0\x08_HID\x0c\x41\xd0\x0a\x03"));
        assert!(has(b"HPET\x08_HID\x0c\x41\xd0\x01\x03"));
        assert!(has(&[0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0xd0, 0xfe, 0x00, 0x04, 0x00, 0x00]));
        // The PCI hole runs from the end of low RAM to 0xfebfffff.
        let mut hole = 0x0800_0000u32.to_le_bytes().to_vec();
        hole.extend_from_slice(&0xfebf_ffffu32.to_le_bytes());
        assert!(has(&hole));
        assert!(d.ends_with(&[0x08, b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 0x05, 0x0a, 0x05, 0x00, 0x00]));
    }

    /// Disassembles every table with ACPICA's `iasl -d` when it is
    /// installed (Debian `acpica-tools`); skipped otherwise. Set
    /// `TURTLES_ACPI_DUMP=dir` to keep the binaries and listings.
    #[test]
    fn iasl_accepts_tables() {
        let dir = match std::env::var_os("TURTLES_ACPI_DUMP") {
            Some(d) => std::path::PathBuf::from(d),
            None => std::env::temp_dir().join(format!("turtles-acpi-{}", std::process::id())),
        };
        let t = build_tables(&cfg(2), 0x000e_1000);
        std::fs::create_dir_all(&dir).unwrap();
        for sig in [b"DSDT", b"FACP", b"APIC", b"HPET"] {
            let name = String::from_utf8_lossy(sig).to_lowercase();
            let path = dir.join(format!("{name}.dat"));
            std::fs::write(&path, table(&t, sig)).unwrap();
            let out = match std::process::Command::new("iasl").arg("-d").arg(&path).output() {
                Ok(out) => out,
                Err(_) => return, // iasl not installed
            };
            let log = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "iasl -d {name}: {log}");
            assert!(!log.contains("Error") && !log.contains("Warning"), "iasl -d {name}: {log}");
            assert!(dir.join(format!("{name}.dsl")).exists());
        }
        if std::env::var_os("TURTLES_ACPI_DUMP").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }

    #[test]
    fn many_cpus_use_x2apic_entries() {
        let t = build_tables(&cfg(300), 0x10_0000);
        let madt = t.offsets.iter().find(|(s, _)| s == b"APIC").unwrap().1;
        let len = u32::from_le_bytes(t.tables[madt + 4..madt + 8].try_into().unwrap()) as usize;
        assert_eq!(len, 44 + 255 * 8 + 45 * 16 + 12 + 10 + 10 + 6);
        assert_eq!(t.tables[madt..madt + len].iter().fold(0u8, |a, &b| a.wrapping_add(b)), 0);
    }

    #[test]
    fn pm_registers() {
        let mut pm = AcpiPm::default();
        assert_eq!(pm.io_read(0, PM1A_CNT_BLK, 2) & 1, 1);
        assert_eq!(pm.io_read(1_000_000_000, PM_TMR_BLK, 4), 3_579_545);
        assert_eq!(AcpiPm::timer(5_000_000_000), (5 * 3_579_545) & 0xff_ffff);
        pm.io_write(PM1A_CNT_BLK, 2, 5 << 10);
        assert!(!pm.power_off_requested);
        pm.io_write(PM1A_CNT_BLK, 2, (5 << 10) | (1 << 13));
        assert!(pm.power_off_requested);
    }
}
