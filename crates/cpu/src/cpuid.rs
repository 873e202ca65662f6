//! The CPUID answers of one vCPU and the feature bits the executor
//! consults (SDM vol. 2A, "CPUID—CPU Identification").
//!
//! A [`CpuidModel`] is data: a list of (leaf, subleaf) -> registers, filled
//! by the VMM from the VM's CPU policy. What the guest is told is what it
//! gets: the executor checks the same bits ([`Features`]) before it lets a
//! guest use a feature (CR4 bits, instructions such as RDTSCP or XSAVE).

/// One CPUID answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CpuidEntry {
    /// EAX input.
    pub leaf: u32,
    /// ECX input, for leaves that have subleaves.
    pub subleaf: Option<u32>,
    /// EAX, EBX, ECX, EDX outputs.
    pub regs: [u32; 4],
}

/// Features the executor checks, derived from the CPUID answers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// CPUID.1:EDX.SEP — SYSENTER/SYSEXIT.
    pub sep: bool,
    /// CPUID.1:ECX.PCID.
    pub pcid: bool,
    /// CPUID.1:ECX.x2APIC.
    pub x2apic: bool,
    /// CPUID.1:ECX.MOVBE.
    pub movbe: bool,
    /// CPUID.1:ECX.POPCNT.
    pub popcnt: bool,
    /// CPUID.1:ECX.XSAVE.
    pub xsave: bool,
    /// CPUID.1:ECX.CX16.
    pub cx16: bool,
    /// CPUID.1:ECX.RDRAND.
    pub rdrand: bool,
    /// CPUID.1:ECX.VMX.
    pub vmx: bool,
    /// CPUID.1:ECX.TSC_DEADLINE.
    pub tsc_deadline: bool,
    /// CPUID.7.0:EBX.FSGSBASE.
    pub fsgsbase: bool,
    /// CPUID.7.0:EBX.SMEP.
    pub smep: bool,
    /// CPUID.7.0:EBX.SMAP.
    pub smap: bool,
    /// CPUID.7.0:EBX.INVPCID.
    pub invpcid: bool,
    /// CPUID.7.0:EBX.BMI1.
    pub bmi1: bool,
    /// CPUID.7.0:EBX.RDSEED.
    pub rdseed: bool,
    /// CPUID.7.0:ECX.UMIP.
    pub umip: bool,
    /// CPUID.7.0:ECX.PKU.
    pub pku: bool,
    /// CPUID.7.0:ECX.LA57.
    pub la57: bool,
    /// CPUID.7.0:ECX.RDPID.
    pub rdpid: bool,
    /// CPUID.80000001:ECX.LZCNT (ABM).
    pub lzcnt: bool,
    /// CPUID.80000001:EDX.SYSCALL.
    pub syscall: bool,
    /// CPUID.80000001:EDX.NX.
    pub nx: bool,
    /// CPUID.80000001:EDX.Page1GB.
    pub page1gb: bool,
    /// CPUID.80000001:EDX.RDTSCP.
    pub rdtscp: bool,
    /// CPUID.80000001:EDX.LM.
    pub lm: bool,
}

/// The CPUID answers of one vCPU.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CpuidModel {
    entries: Vec<CpuidEntry>,
    features: Features,
    /// Highest basic and extended leaves (EAX of leaves 0 and 80000000H),
    /// kept so that an answer is one search, not three.
    max_leaves: (u32, u32),
}

/// Brand string of Turtles' default CPU (48 bytes, NUL padded).
pub const BRAND: &[u8; 48] = b"Turtles x86-64 virtual CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";

impl CpuidModel {
    /// A model from explicit entries.
    pub fn from_entries(entries: Vec<CpuidEntry>) -> CpuidModel {
        let mut m = CpuidModel { entries, features: Features::default(), max_leaves: (0, 0) };
        m.refresh();
        m
    }

    /// Turtles' full CPU: every feature the executor implements.
    pub fn turtles_max() -> CpuidModel {
        let mut e = Vec::new();
        let mut add = |leaf: u32, subleaf: Option<u32>, regs: [u32; 4]| e.push(CpuidEntry { leaf, subleaf, regs });
        let vendor = b"GenuineIntel";
        let w = |i: usize| u32::from_le_bytes([vendor[i], vendor[i + 1], vendor[i + 2], vendor[i + 3]]);
        add(0, None, [0x16, w(0), w(8), w(4)]);
        // Family 6, model 0x6a, stepping 6.
        let ecx1 = (1 << 13) // CX16
            | (1 << 17) // PCID
            | (1 << 21) // x2APIC
            | (1 << 22) // MOVBE
            | (1 << 23) // POPCNT
            | (1 << 24) // TSC-deadline
            | (1 << 26) // XSAVE
            | (1 << 30) // RDRAND
            | (1 << 31); // hypervisor present
        let edx1 = (1 << 0)
            | (1 << 2)
            | (1 << 3)
            | (1 << 4)
            | (1 << 5)
            | (1 << 6)
            | (1 << 7)
            | (1 << 8)
            | (1 << 9)
            | (1 << 11)
            | (1 << 12)
            | (1 << 13)
            | (1 << 14)
            | (1 << 15)
            | (1 << 16)
            | (1 << 17)
            | (1 << 19)
            | (1 << 23)
            | (1 << 24)
            | (1 << 25)
            | (1 << 26);
        add(1, None, [0x0006_06a6, 0x0001_0800, ecx1, edx1]);
        add(6, None, [1 << 2, 0, 0, 0]); // ARAT
        let ebx7 = (1 << 0) // FSGSBASE
            | (1 << 1) // TSC_ADJUST
            | (1 << 3) // BMI1
            | (1 << 7) // SMEP
            | (1 << 9) // ERMS
            | (1 << 10) // INVPCID
            | (1 << 18) // RDSEED
            | (1 << 20); // SMAP
        let ecx7 = (1 << 2) // UMIP
            | (1 << 3) // PKU
            | (1 << 16) // LA57
            | (1 << 22); // RDPID
        add(7, Some(0), [0, ebx7, ecx7, 0]);
        add(0xb, Some(0), [0, 1, 0x100, 0]);
        add(0xb, Some(1), [0, 1, 0x201, 0]);
        add(0xd, Some(0), [3, 576, 576, 0]);
        add(0xd, Some(1), [0, 0, 0, 0]);
        // TSC = 25 MHz crystal * 80 = 2 GHz (virtual, see crate::TSC_KHZ).
        add(0x15, None, [1, 80, 25_000_000, 0]);
        add(0x16, None, [2000, 2000, 100, 0]);
        add(0x8000_0000, None, [0x8000_0008, 0, 0, 0]);
        let ecx81 = 1 | (1 << 5) | (1 << 8); // LAHF, ABM/LZCNT, PREFETCHW
        let edx81 = (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29);
        add(0x8000_0001, None, [0, 0, ecx81, edx81]);
        for i in 0..3u32 {
            let b = &BRAND[(i as usize) * 16..(i as usize + 1) * 16];
            let r = |j: usize| u32::from_le_bytes([b[j], b[j + 1], b[j + 2], b[j + 3]]);
            add(0x8000_0002 + i, None, [r(0), r(4), r(8), r(12)]);
        }
        add(0x8000_0007, None, [0, 0, 0, 1 << 8]); // invariant TSC
                                                   // 57-bit linear (LA57 is offered), 40-bit physical.
        add(0x8000_0008, None, [0x3928, 0, 0, 0]);
        CpuidModel::from_entries(e)
    }

    /// All entries.
    pub fn entries(&self) -> &[CpuidEntry] {
        &self.entries
    }

    /// Replaces or adds an entry.
    pub fn set(&mut self, entry: CpuidEntry) {
        match self.entries.iter_mut().find(|e| e.leaf == entry.leaf && e.subleaf == entry.subleaf) {
            Some(e) => *e = entry,
            None => self.entries.push(entry),
        }
        self.refresh();
    }

    /// The features the executor checks.
    #[inline]
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Processor signature (family/model/stepping), also EDX at reset.
    pub fn signature(&self) -> u32 {
        self.raw(1, 0)[0]
    }

    /// The answer without dynamic bits. Leaves above the maximum basic
    /// leaf answer like the maximum basic leaf, as Intel processors do; a
    /// leaf inside the range with no entry answers zeros.
    pub fn raw(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        let find = |leaf: u32| {
            self.entries.iter().find(|e| e.leaf == leaf && e.subleaf.is_none_or(|s| s == subleaf)).map(|e| e.regs)
        };
        let (max_basic, max_ext) = self.max_leaves;
        let in_range = if leaf >= 0x8000_0000 { leaf <= max_ext } else { leaf <= max_basic };
        if in_range {
            find(leaf).unwrap_or([0; 4])
        } else {
            find(max_basic).unwrap_or([0; 4])
        }
    }

    /// Recomputes what is derived from the entries.
    fn refresh(&mut self) {
        let eax = |leaf: u32| self.entries.iter().find(|e| e.leaf == leaf).map_or(0, |e| e.regs[0]);
        self.max_leaves = (eax(0), eax(0x8000_0000));
        self.features = self.derive_features();
    }

    fn bit(&self, leaf: u32, subleaf: u32, reg: usize, bit: u32) -> bool {
        self.raw(leaf, subleaf)[reg] & (1 << bit) != 0
    }

    fn derive_features(&self) -> Features {
        let b = |l, s, r, i| self.bit(l, s, r, i);
        Features {
            sep: b(1, 0, 3, 11),
            pcid: b(1, 0, 2, 17),
            x2apic: b(1, 0, 2, 21),
            movbe: b(1, 0, 2, 22),
            popcnt: b(1, 0, 2, 23),
            xsave: b(1, 0, 2, 26),
            cx16: b(1, 0, 2, 13),
            rdrand: b(1, 0, 2, 30),
            vmx: b(1, 0, 2, 5),
            tsc_deadline: b(1, 0, 2, 24),
            fsgsbase: b(7, 0, 1, 0),
            smep: b(7, 0, 1, 7),
            smap: b(7, 0, 1, 20),
            invpcid: b(7, 0, 1, 10),
            bmi1: b(7, 0, 1, 3),
            rdseed: b(7, 0, 1, 18),
            umip: b(7, 0, 2, 2),
            pku: b(7, 0, 2, 3),
            la57: b(7, 0, 2, 16),
            rdpid: b(7, 0, 2, 22),
            lzcnt: b(0x8000_0001, 0, 2, 5),
            syscall: b(0x8000_0001, 0, 3, 11),
            nx: b(0x8000_0001, 0, 3, 20),
            page1gb: b(0x8000_0001, 0, 3, 26),
            rdtscp: b(0x8000_0001, 0, 3, 27),
            lm: b(0x8000_0001, 0, 3, 29),
        }
    }

    /// The answer a processor with APIC id `apic_id` and CR4 `cr4` gives:
    /// the model's entries plus the bits that depend on processor state
    /// (SDM vol. 2, "CPUID": OSXSAVE, OSPKE, APIC ids, XSAVE area size).
    /// The executor and L0's CPUID exit handler both answer through it.
    pub fn query(&self, apic_id: u32, cr4: u64, leaf: u32, subleaf: u32) -> [u32; 4] {
        let mut r = self.raw(leaf, subleaf);
        match leaf {
            1 => {
                r[1] = (r[1] & 0x00ff_ffff) | ((apic_id & 0xff) << 24);
                if cr4 & x86::Cr4::OSXSAVE.bits() != 0 {
                    r[2] |= 1 << 27;
                } else {
                    r[2] &= !(1 << 27);
                }
            }
            7 if subleaf == 0 => {
                if cr4 & x86::Cr4::PKE.bits() != 0 {
                    r[2] |= 1 << 4;
                } else {
                    r[2] &= !(1 << 4);
                }
            }
            0xb => {
                r[2] = (r[2] & !0xff) | (subleaf & 0xff);
                r[3] = apic_id;
            }
            0x8000_0008
                // The linear-address width follows LA57: a policy that
                // removes 5-level paging also removes the 57-bit width
                // (Linux checks kernel pointers against it).
                if !self.features().la57 && (r[0] >> 8) & 0xff > 48 => {
                    r[0] = (r[0] & !0xff00) | (48 << 8);
                }
            0xd if subleaf == 0 => {
                // EBX: size of the XSAVE area for the features enabled in
                // XCR0 (x87 + SSE: legacy region plus header).
                r[1] = 576;
            }
            _ => {}
        }
        r
    }

    /// Bits of CR4 the guest may set: those whose feature it is told about.
    pub fn cr4_allowed(&self) -> u64 {
        use x86::Cr4;
        let f = &self.features;
        let mut a = Cr4::VME
            | Cr4::PVI
            | Cr4::TSD
            | Cr4::DE
            | Cr4::PSE
            | Cr4::PAE
            | Cr4::MCE
            | Cr4::PGE
            | Cr4::PCE
            | Cr4::OSFXSR
            | Cr4::OSXMMEXCPT;
        let opt = [
            (f.umip, Cr4::UMIP),
            (f.la57, Cr4::LA57),
            (f.vmx, Cr4::VMXE),
            (f.fsgsbase, Cr4::FSGSBASE),
            (f.pcid, Cr4::PCIDE),
            (f.xsave, Cr4::OSXSAVE),
            (f.smep, Cr4::SMEP),
            (f.smap, Cr4::SMAP),
            (f.pku, Cr4::PKE),
        ];
        for (on, bit) in opt {
            if on {
                a |= bit;
            }
        }
        a.bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_model_reports_vendor_and_features() {
        let m = CpuidModel::turtles_max();
        let r = m.raw(0, 0);
        let mut v = [0u8; 12];
        v[..4].copy_from_slice(&r[1].to_le_bytes());
        v[4..8].copy_from_slice(&r[3].to_le_bytes());
        v[8..].copy_from_slice(&r[2].to_le_bytes());
        assert_eq!(&v, b"GenuineIntel");
        assert!(m.features().lm && m.features().nx && m.features().smep);
        assert!(!m.features().vmx);
    }

    #[test]
    fn out_of_range_leaf_answers_like_max_basic_leaf() {
        let m = CpuidModel::turtles_max();
        assert_eq!(m.raw(0x40, 0), m.raw(0x16, 0));
        assert_eq!(m.raw(0x8000_0009, 0), m.raw(0x16, 0));
        assert_eq!(m.raw(0x10, 0), [0; 4]);
    }

    #[test]
    fn clearing_a_bit_removes_the_feature() {
        let mut m = CpuidModel::turtles_max();
        let mut r = m.raw(7, 0);
        r[1] &= !(1 << 7);
        m.set(CpuidEntry { leaf: 7, subleaf: Some(0), regs: r });
        assert!(!m.features().smep);
        assert_eq!(m.cr4_allowed() & x86::Cr4::SMEP.bits(), 0);
    }
}
