//! Per-VM CPU policy: what processor a VM is told it runs on, and so what
//! it may use.
//!
//! A [`CpuPolicy`] bundles the three ways a processor describes itself:
//!
//! * the CPUID answers (SDM vol. 2A, "CPUID—CPU Identification"): vendor,
//!   signature, brand and the feature flags in leaves 01H, 06H, 07H, 0DH
//!   and 80000001H-80000008H;
//! * the values of platform and identification MSRs a guest may read
//!   (IA32_FEATURE_CONTROL, IA32_MISC_ENABLE, IA32_ARCH_CAPABILITIES,
//!   MSR_PLATFORM_INFO...; SDM vol. 4, "Model-Specific Registers");
//! * the VMX capability MSRs 480H-493H when VMX is offered (SDM vol. 3C,
//!   appendix A "VMX Capability Reporting Facility": basic information,
//!   the allowed-0/allowed-1 settings of each control word, the CR0/CR4
//!   fixed bits, EPT/VPID and VM-function capabilities).
//!
//! Invariants, checked by [`CpuPolicy::validate`] for presets, files and
//! `+feat`/`-feat` alike:
//!
//! * every feature flag set in a feature register is one Turtles' CPU
//!   implements ([`CpuidModel::turtles_max`]), or one the policy itself
//!   backs: CPUID.1:ECX.VMX (bit 5) exactly when [`CpuPolicy::vmx`] is
//!   offered, CPUID.(EAX=7,ECX=0):EDX.ARCH_CAPABILITIES (bit 29) exactly
//!   when the policy has a value for MSR 10AH. The executor checks the same
//!   CPUID bits before it lets a guest use a feature, so a flag cleared in
//!   the policy is a #UD or #GP for the guest, never a silent success;
//! * the offered VMX capabilities allow no control, EPT/VPID capability or
//!   VM function beyond [`VmxCaps::turtles`], and require at least the CR0
//!   and CR4 bits it requires;
//! * the VMX capability MSRs are answered only from the VMX capabilities,
//!   never from the plain MSR table, and not at all (#GP) when VMX is not
//!   offered.
//!
//! Policies come from presets ([`PRESETS`]) or TOML files:
//!
//! ```toml
//! base = "minimal"          # optional preset to start from
//! name = "my-cpu"           # optional
//! [[cpuid]]                 # replaces (or adds) one leaf
//! leaf = 0x1
//! subleaf = 0               # optional
//! eax = 0x000806f8
//! ebx = 0x00010800
//! ecx = 0x80202020          # CX16, x2APIC, VMX, hypervisor
//! edx = 0x078bfbfd
//! [[cpuid]]
//! leaf = 7                  # subleaf 0, as the base stores leaf 7
//! ebx = 0x80                # SMEP
//! edx = 0x20000000          # ARCH_CAPABILITIES: IA32_ARCH_CAPABILITIES exists
//! [msr]                     # keys are strings
//! "0x10a" = 0x0             # IA32_ARCH_CAPABILITIES
//! [vmx]                     # VMX offered (needs CPUID.1:ECX[5])
//! preset = "turtles"        # or "minimal"; then any of the raw MSRs below
//! # basic, pinbased_ctls, procbased_ctls, exit_ctls, entry_ctls, misc,
//! # cr0_fixed0, cr0_fixed1, cr4_fixed0, cr4_fixed1, vmcs_enum,
//! # procbased_ctls2, ept_vpid_cap, true_pinbased_ctls,
//! # true_procbased_ctls, true_exit_ctls, true_entry_ctls, vmfunc,
//! # procbased_ctls3 = 0x...
//! ```
//!
//! Numbers are TOML integers or strings (`"0x8000000000000000"`, for values
//! a TOML integer cannot hold). Without a `[vmx]` section VMX follows
//! CPUID.1:ECX.VMX: the base's capabilities when set, none when clear.
//! With the TRUE controls (IA32_VMX_BASIC bit 55) the TRUE MSRs are the
//! ones that count, as on hardware.

use std::collections::BTreeMap;
use std::path::Path;

use cpu::cpuid::CpuidEntry;
use cpu::CpuidModel;
use serde::Deserialize;
use thiserror::Error;
use vmx::caps::{msr as vmx_msr, VmxBasic, VmxCaps};
use x86::msr::{IA32_ARCH_CAPABILITIES, IA32_FEATURE_CONTROL, IA32_MISC_ENABLE};

use crate::cpu_model::{self, CpuModelError};

/// MSR_PLATFORM_INFO (model specific, Nehalem and later).
pub const MSR_PLATFORM_INFO: u32 = 0xce;

/// First MSR of the VMX capability range the policy answers.
pub const VMX_MSR_FIRST: u32 = vmx_msr::IA32_VMX_BASIC;
/// Last MSR of the VMX capability range (IA32_VMX_EXIT_CTLS2).
pub const VMX_MSR_LAST: u32 = 0x493;

/// IA32_FEATURE_CONTROL bit 0: lock.
const FEATURE_CONTROL_LOCK: u64 = 1 << 0;
/// IA32_FEATURE_CONTROL bit 2: VMXON allowed outside SMX operation.
const FEATURE_CONTROL_VMX_OUTSIDE_SMX: u64 = 1 << 2;

/// IA32_ARCH_CAPABILITIES of Turtles' CPU: a software CPU neither
/// speculates nor has an L1D, so it reports itself immune to everything
/// the MSR enumerates: RDCL_NO (0), SKIP_L1DFL_VMENTRY (3), SSB_NO (4),
/// MDS_NO (5), PSCHANGE_MC_NO (6), TAA_NO (8), SBDR_SSDP_NO (13),
/// FBSDP_NO (14), PSDP_NO (15), BHI_NO (20), PBRSB_NO (24), GDS_NO (26),
/// RFDS_NO (27).
pub const TURTLES_ARCH_CAPABILITIES: u64 = 1 << 0
    | 1 << 3
    | 1 << 4
    | 1 << 5
    | 1 << 6
    | 1 << 8
    | 1 << 13
    | 1 << 14
    | 1 << 15
    | 1 << 20
    | 1 << 24
    | 1 << 26
    | 1 << 27;

/// The presets `--cpu` accepts, with a one-line description.
pub const PRESETS: &[(&str, &str)] = &[
    ("max", "everything Turtles' CPU implements, VMX offered with Turtles' full capabilities"),
    ("host", "alias of max"),
    ("qemu64", "QEMU's qemu64 features that Turtles' CPU implements, no VMX"),
    ("minimal", "a small 64-bit Intel CPU (family 6): baseline x86-64 features only, no VMX"),
    ("server", "modelled on Sapphire Rapids (family 6 model 0x8f), VMX with Turtles' full capabilities"),
    ("nested-min", "minimal, plus VMX with the least capabilities a VMX processor reports"),
];

/// Why a CPU policy was refused. Every message is one line naming the
/// offending preset, key or value.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// A preset that does not exist (and no such file either).
    #[error("CPU model '{0}' is neither a preset nor a policy file (see --cpu help)")]
    UnknownPreset(String),
    /// A `+feat`/`-feat` modifier was refused.
    #[error(transparent)]
    Model(#[from] CpuModelError),
    /// A policy file that cannot be read.
    #[error("could not read CPU policy '{path}': {source}")]
    Read {
        /// The path given.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Something wrong inside a policy file.
    #[error("CPU policy '{path}': {source}")]
    File {
        /// The path given.
        path: String,
        /// What is wrong.
        source: Box<PolicyError>,
    },
    /// Not TOML, or not the policy's layout.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line of the error.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A number that is negative, too large or not a number.
    #[error("invalid value '{value}' for {key}")]
    BadNumber {
        /// Where it was given.
        key: String,
        /// What was given.
        value: String,
    },
    /// A subleaf for a leaf the base answers without subleaves.
    #[error("CPUID leaf {leaf:#x} has no subleaves (subleaf {subleaf} given)")]
    NoSubleaves {
        /// The leaf.
        leaf: u32,
        /// The subleaf given.
        subleaf: u32,
    },
    /// A feature flag for something Turtles' CPU does not implement.
    #[error("CPUID leaf {leaf:#x} subleaf {subleaf} {reg} bit {bit} ({feature}) is not implemented by Turtles' CPU")]
    Unimplemented {
        /// CPUID leaf.
        leaf: u32,
        /// CPUID subleaf.
        subleaf: u32,
        /// Register name.
        reg: &'static str,
        /// Bit number.
        bit: u32,
        /// QEMU's name of the feature, or "reserved".
        feature: &'static str,
    },
    /// CPUID says VMX but no capabilities are offered.
    #[error("CPUID.1:ECX.VMX (bit 5) is set but the policy offers no VMX capabilities (add a [vmx] section)")]
    VmxBitWithoutCaps,
    /// VMX capabilities offered while CPUID says no VMX.
    #[error("the policy offers VMX capabilities ([vmx]) but CPUID.1:ECX.VMX (bit 5) is clear")]
    VmxCapsWithoutBit,
    /// A key of `[vmx]` that names no VMX capability MSR.
    #[error("unknown [vmx] key '{0}'")]
    UnknownVmxKey(String),
    /// A `[vmx]` preset other than turtles and minimal.
    #[error("unknown [vmx] preset '{0}' (use turtles or minimal)")]
    UnknownVmxPreset(String),
    /// A VMX capability MSR every VMX processor has is not given.
    #[error("[vmx] {0} is missing")]
    VmxMissing(&'static str),
    /// IA32_VMX_BASIC with a memory type other than UC or WB.
    #[error("[vmx] basic = {0:#x} is malformed (the memory type, bits 53:50, must be 0 or 6)")]
    VmxBadBasic(u64),
    /// A VMX capability beyond what Turtles' CPU implements.
    #[error("[vmx] {key} = {value:#x} offers bits {bits:#x} that Turtles' CPU does not implement")]
    VmxBeyondCpu {
        /// The `[vmx]` key.
        key: &'static str,
        /// The (normalized) MSR value.
        value: u64,
        /// The offending bits.
        bits: u64,
    },
    /// A VMX capability MSR in the plain MSR table.
    #[error("[msr] {0:#x} is a VMX capability MSR: give it in the [vmx] section")]
    VmxMsrInMsrTable(u32),
    /// CPUID enumerates IA32_ARCH_CAPABILITIES but the policy has no value.
    #[error("CPUID.(7,0):EDX.ARCH_CAPABILITIES (bit 29) is set but [msr] has no value for 0x10a")]
    ArchCapsBitWithoutMsr,
    /// A value for IA32_ARCH_CAPABILITIES that CPUID does not enumerate.
    #[error("[msr] 0x10a (IA32_ARCH_CAPABILITIES) is given but CPUID.(7,0):EDX bit 29 is clear")]
    ArchCapsMsrWithoutBit,
}

/// What a VM's processor says it is and has: CPUID answers, readable MSR
/// values and, when VMX is offered, the VMX capability MSRs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuPolicy {
    /// Name shown in reports (the preset, the file's `name`, or the spec).
    pub name: String,
    /// CPUID answers shared by all vCPUs (topology is filled in per vCPU).
    pub cpuid: CpuidModel,
    /// Values of the platform and identification MSRs the guest may read,
    /// by index. The VMX capability MSRs are never here.
    pub msrs: BTreeMap<u32, u64>,
    /// The VMX capabilities offered; `None` when VMX is not offered.
    pub vmx: Option<VmxCaps>,
}

impl Default for CpuPolicy {
    /// What a VM gets without `--cpu`: the `max` preset without VMX, the
    /// CPUID Turtles has always answered. VMX is left out until L0 answers
    /// the VMX capability MSRs: Linux reads them as soon as CPUID says VMX.
    fn default() -> CpuPolicy {
        let mut p = CpuPolicy::max();
        p.set_vmx(None);
        p.name = "max,-vmx".into();
        p
    }
}

/// Register names by index in CPUID's `[u32; 4]`.
const REG_NAMES: [&str; 4] = ["eax", "ebx", "ecx", "edx"];

/// CPUID.1:ECX.VMX.
const VMX_BIT: u32 = 1 << 5;
/// CPUID.(7,0):EDX.ARCH_CAPABILITIES.
const ARCH_CAPS_BIT: u32 = 1 << 29;
/// CPUID.1:EDX.HTT: topology, filled in per vCPU; allowed in any policy.
const HTT_BIT: u32 = 1 << 28;

/// The features of `minimal` (QEMU names, whitespace-separated; one line
/// per register: CPUID.1:EDX, CPUID.1:ECX, CPUID.80000001H:EDX): the
/// x86-64 baseline.
const MINIMAL_FEATURES: &str = "
    fpu pse tsc msr pae cx8 apic sep pge cmov pat clflush mmx fxsr sse sse2
    sse3 cx16
    lm nx syscall";

/// The features of QEMU's SapphireRapids model (`target/i386/cpu.c`),
/// plus what a hypervisor adds (hypervisor, tsc-adjust, invtsc). One line
/// per register: CPUID.1:EDX, 1:ECX, 6:EAX, (7,0):EBX, (7,0):ECX,
/// (7,0):EDX, (0DH,1):EAX, 80000001H, 80000007H:EDX.
const SERVER_FEATURES: &str = "
    fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush mmx fxsr sse sse2
    sse3 pclmulqdq ssse3 fma cx16 pcid sse4.1 sse4.2 x2apic movbe popcnt tsc-deadline aes xsave avx f16c rdrand hypervisor
    arat
    fsgsbase tsc-adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm avx512f avx512dq rdseed adx smap avx512ifma clflushopt
        clwb avx512cd sha-ni avx512bw avx512vl
    avx512vbmi umip pku avx512vbmi2 gfni vaes vpclmulqdq avx512vnni avx512bitalg avx512-vpopcntdq la57 rdpid cldemote
        movdiri movdir64b
    fsrm serialize md-clear spec-ctrl stibp arch-capabilities ssbd
    xsaveopt xsavec xgetbv1 xsaves
    syscall nx pdpe1gb rdtscp lm lahf-lm abm 3dnowprefetch
    invtsc";

/// One `[vmx]` key: its MSR and how an offered value is compared with
/// what Turtles' CPU implements.
struct VmxKey {
    name: &'static str,
    msr: u32,
    check: CapCheck,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum CapCheck {
    /// Not a capability (revision, sizes, field index).
    None,
    /// Control MSR: the allowed-1 settings (high half) must be a subset.
    Allowed1,
    /// Capability bit mask: must be a subset.
    Bits,
    /// FIXED0: must require at least the bits Turtles requires.
    Fixed0,
    /// FIXED1: must allow at most the bits Turtles allows.
    Fixed1,
    /// IA32_VMX_MISC: flags a subset, counts no larger.
    Misc,
}

const fn key(name: &'static str, msr: u32, check: CapCheck) -> VmxKey {
    VmxKey { name, msr, check }
}

/// The `[vmx]` keys, in MSR order.
const VMX_KEYS: &[VmxKey] = &[
    key("basic", vmx_msr::IA32_VMX_BASIC, CapCheck::None),
    key("pinbased_ctls", vmx_msr::IA32_VMX_PINBASED_CTLS, CapCheck::Allowed1),
    key("procbased_ctls", vmx_msr::IA32_VMX_PROCBASED_CTLS, CapCheck::Allowed1),
    key("exit_ctls", vmx_msr::IA32_VMX_EXIT_CTLS, CapCheck::Allowed1),
    key("entry_ctls", vmx_msr::IA32_VMX_ENTRY_CTLS, CapCheck::Allowed1),
    key("misc", vmx_msr::IA32_VMX_MISC, CapCheck::Misc),
    key("cr0_fixed0", vmx_msr::IA32_VMX_CR0_FIXED0, CapCheck::Fixed0),
    key("cr0_fixed1", vmx_msr::IA32_VMX_CR0_FIXED1, CapCheck::Fixed1),
    key("cr4_fixed0", vmx_msr::IA32_VMX_CR4_FIXED0, CapCheck::Fixed0),
    key("cr4_fixed1", vmx_msr::IA32_VMX_CR4_FIXED1, CapCheck::Fixed1),
    key("vmcs_enum", vmx_msr::IA32_VMX_VMCS_ENUM, CapCheck::None),
    key("procbased_ctls2", vmx_msr::IA32_VMX_PROCBASED_CTLS2, CapCheck::Allowed1),
    key("ept_vpid_cap", vmx_msr::IA32_VMX_EPT_VPID_CAP, CapCheck::Bits),
    key("true_pinbased_ctls", vmx_msr::IA32_VMX_TRUE_PINBASED_CTLS, CapCheck::Allowed1),
    key("true_procbased_ctls", vmx_msr::IA32_VMX_TRUE_PROCBASED_CTLS, CapCheck::Allowed1),
    key("true_exit_ctls", vmx_msr::IA32_VMX_TRUE_EXIT_CTLS, CapCheck::Allowed1),
    key("true_entry_ctls", vmx_msr::IA32_VMX_TRUE_ENTRY_CTLS, CapCheck::Allowed1),
    key("vmfunc", vmx_msr::IA32_VMX_VMFUNC, CapCheck::Bits),
    key("procbased_ctls3", vmx_msr::IA32_VMX_PROCBASED_CTLS3, CapCheck::Bits),
];

/// IA32_VMX_MISC flags (bits 5-8, 14, 15, 28-30).
const MISC_FLAGS: u64 = 0x7000_c1e0;
/// IA32_VMX_MISC counts: CR3 targets (24:16) and MSR-list size (27:25).
const MISC_COUNTS: [(u32, u64); 2] = [(16, 0x1ff), (25, 7)];

fn vmx_key_name(msr: u32) -> &'static str {
    VMX_KEYS.iter().find(|k| k.msr == msr).map_or("?", |k| k.name)
}

/// The CPUID bits a policy may set: Turtles' CPU, plus the bits the policy
/// backs itself (VMX, ARCH_CAPABILITIES) and HTT.
fn implementable() -> CpuidModel {
    let mut m = CpuidModel::turtles_max();
    let mut l1 = m.raw(1, 0);
    l1[2] |= VMX_BIT;
    l1[3] |= HTT_BIT;
    m.set(CpuidEntry { leaf: 1, subleaf: None, regs: l1 });
    let mut l7 = m.raw(7, 0);
    l7[3] |= ARCH_CAPS_BIT;
    m.set(CpuidEntry { leaf: 7, subleaf: Some(0), regs: l7 });
    m
}

fn regs_of(s: &[u8]) -> [u32; 4] {
    let w = |j: usize| u32::from_le_bytes([s[j], s[j + 1], s[j + 2], s[j + 3]]);
    [w(0), w(4), w(8), w(12)]
}

/// Leaf 0: the maximum basic leaf and "GenuineIntel".
fn vendor_leaf(max_basic: u32) -> CpuidEntry {
    let v = b"GenuineIntel";
    let w = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
    CpuidEntry { leaf: 0, subleaf: None, regs: [max_basic, w(0), w(8), w(4)] }
}

/// Leaves 80000002H-80000004H for `brand` (at most 47 bytes).
fn brand_leaves(brand: &str) -> [CpuidEntry; 3] {
    let mut b = [0u8; 48];
    let n = brand.len().min(47);
    b[..n].copy_from_slice(&brand.as_bytes()[..n]);
    core::array::from_fn(|i| CpuidEntry {
        leaf: 0x8000_0002 + i as u32,
        subleaf: None,
        regs: regs_of(&b[i * 16..(i + 1) * 16]),
    })
}

fn set_leaf(m: &mut CpuidModel, leaf: u32, subleaf: Option<u32>, f: impl FnOnce(&mut [u32; 4])) {
    let mut regs = m.raw(leaf, subleaf.unwrap_or(0));
    f(&mut regs);
    m.set(CpuidEntry { leaf, subleaf, regs });
}

/// IA32_FEATURE_CONTROL, IA32_MISC_ENABLE (and MSR_PLATFORM_INFO where the
/// model has one), as firmware leaves them: locked, VMX enabled outside SMX
/// when VMX is offered, fast strings on, 2 GHz maximum non-turbo ratio.
fn platform_msrs(vmx: bool, platform_info: bool) -> BTreeMap<u32, u64> {
    let mut msrs = BTreeMap::new();
    let vmx_bit = if vmx { FEATURE_CONTROL_VMX_OUTSIDE_SMX } else { 0 };
    msrs.insert(IA32_FEATURE_CONTROL, FEATURE_CONTROL_LOCK | vmx_bit);
    msrs.insert(IA32_MISC_ENABLE, 1);
    if platform_info {
        // Bits 15:8: maximum non-turbo ratio, in 100 MHz units.
        msrs.insert(MSR_PLATFORM_INFO, (cpu::TSC_KHZ / 100_000) << 8);
    }
    msrs
}

impl CpuPolicy {
    /// Everything Turtles' CPU implements, VMX offered with
    /// [`VmxCaps::turtles`].
    pub fn max() -> CpuPolicy {
        let mut p = CpuPolicy {
            name: "max".into(),
            cpuid: CpuidModel::turtles_max(),
            msrs: platform_msrs(true, true),
            vmx: None,
        };
        p.set_vmx(Some(VmxCaps::turtles()));
        p
    }

    /// QEMU's qemu64 intersected with Turtles' CPU; no VMX.
    pub fn qemu64() -> CpuPolicy {
        CpuPolicy { name: "qemu64".into(), cpuid: cpu_model::qemu64(), msrs: platform_msrs(false, true), vmx: None }
    }

    /// A small 64-bit Intel CPU (family 6 model 15, a Core 2): leaves 0, 1,
    /// 7 and 80000000H-80000008H, only the x86-64 baseline features that
    /// Turtles' CPU implements, 48-bit linear and 40-bit physical
    /// addresses; no VMX.
    pub fn minimal() -> CpuPolicy {
        let mut e = vec![
            vendor_leaf(7),
            CpuidEntry { leaf: 1, subleaf: None, regs: [0x0000_06f3, 0x0001_0800, 0, 0] },
            CpuidEntry { leaf: 7, subleaf: Some(0), regs: [0; 4] },
            CpuidEntry { leaf: 0x8000_0000, subleaf: None, regs: [0x8000_0008, 0, 0, 0] },
            CpuidEntry { leaf: 0x8000_0001, subleaf: None, regs: [0; 4] },
        ];
        e.extend(brand_leaves("Turtles minimal x86-64 CPU"));
        for leaf in 0x8000_0005..=0x8000_0007 {
            e.push(CpuidEntry { leaf, subleaf: None, regs: [0; 4] });
        }
        e.push(CpuidEntry { leaf: 0x8000_0008, subleaf: None, regs: [0x3028, 0, 0, 0] });
        let mut cpuid = CpuidModel::from_entries(e);
        let max = CpuidModel::turtles_max();
        for name in MINIMAL_FEATURES.split_whitespace() {
            if cpu_model::has_feature(&max, name) {
                cpu_model::set_feature(&mut cpuid, name, true);
            }
        }
        CpuPolicy { name: "minimal".into(), cpuid, msrs: platform_msrs(false, false), vmx: None }
    }

    /// Modelled on a 4th-generation Xeon (Sapphire Rapids, family 6 model
    /// 8FH stepping 8): its features that Turtles' CPU implements, its
    /// signature, IA32_ARCH_CAPABILITIES, and VMX with
    /// [`VmxCaps::turtles`].
    pub fn server() -> CpuPolicy {
        let keep: Vec<&str> = SERVER_FEATURES.split_whitespace().collect();
        let mut cpuid = cpu_model::restrict(&CpuidModel::turtles_max(), &keep);
        set_leaf(&mut cpuid, 1, None, |r| r[0] = 0x0008_06f8);
        for e in brand_leaves("Turtles virtual CPU (Sapphire Rapids model)") {
            cpuid.set(e);
        }
        let mut p = CpuPolicy { name: "server".into(), cpuid, msrs: platform_msrs(true, true), vmx: None };
        p.set_arch_capabilities(Some(TURTLES_ARCH_CAPABILITIES));
        p.set_vmx(Some(VmxCaps::turtles()));
        p
    }

    /// [`CpuPolicy::minimal`] with VMX offered with [`VmxCaps::minimal`].
    pub fn nested_min() -> CpuPolicy {
        let mut p = CpuPolicy::minimal();
        p.name = "nested-min".into();
        p.set_vmx(Some(VmxCaps::minimal()));
        p
    }

    /// The preset called `name` (see [`PRESETS`]).
    pub fn preset(name: &str) -> Result<CpuPolicy, PolicyError> {
        let mut p = match name {
            "max" | "host" => CpuPolicy::max(),
            "qemu64" => CpuPolicy::qemu64(),
            "minimal" => CpuPolicy::minimal(),
            "server" => CpuPolicy::server(),
            "nested-min" => CpuPolicy::nested_min(),
            _ => return Err(PolicyError::UnknownPreset(name.to_string())),
        };
        p.name = name.to_string();
        Ok(p)
    }

    /// Builds the policy of a `--cpu` specification: a preset or a policy
    /// file, then comma-separated `+feat`, `-feat`, `feat=on|off` in QEMU's
    /// spelling. A spec that names an existing file as a whole (commas
    /// included) is a file; otherwise the part before the first comma is a
    /// preset name, or a file when it exists or ends in `.toml`.
    pub fn from_spec(spec: &str) -> Result<CpuPolicy, PolicyError> {
        let spec = spec.trim();
        let is_preset = |s: &str| PRESETS.iter().any(|(n, _)| *n == s);
        if !is_preset(spec) && Path::new(spec).is_file() {
            return CpuPolicy::from_file(Path::new(spec));
        }
        let mut parts = spec.split(',');
        let head = parts.next().unwrap_or("").trim();
        let mut p = if is_preset(head) {
            CpuPolicy::preset(head)?
        } else if head.ends_with(".toml") || Path::new(head).is_file() {
            CpuPolicy::from_file(Path::new(head))?
        } else {
            return Err(PolicyError::UnknownPreset(head.to_string()));
        };
        let mods: Vec<&str> = parts.collect();
        if mods.iter().any(|m| !m.trim().is_empty()) {
            p.apply_modifiers(mods)?;
            p.name = format!("{},{}", p.name, spec.split_once(',').map_or("", |(_, m)| m));
        }
        Ok(p)
    }

    /// Loads and validates a policy file.
    pub fn from_file(path: &Path) -> Result<CpuPolicy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: shown.clone(), source })?;
        let stem = path.file_stem().map_or_else(|| shown.clone(), |s| s.to_string_lossy().into_owned());
        CpuPolicy::from_toml(&text, &stem).map_err(|e| PolicyError::File { path: shown, source: Box::new(e) })
    }

    /// Parses and validates the text of a policy file; `default_name` names
    /// it when it has no `name` and no `base`.
    pub fn from_toml(text: &str, default_name: &str) -> Result<CpuPolicy, PolicyError> {
        let file: PolicyFile = toml::from_str(text).map_err(|e| {
            let start = e.span().map_or(0, |s| s.start.min(text.len()));
            let line = text.as_bytes()[..start].iter().filter(|&&b| b == b'\n').count() + 1;
            PolicyError::Syntax { line, message: e.message().lines().collect::<Vec<_>>().join("; ") }
        })?;
        file.into_policy(default_name)
    }

    /// Applies `+feat`, `-feat` and `feat=on|off` modifiers, then
    /// validates. `+vmx` offers [`VmxCaps::turtles`] (or keeps what is
    /// offered), `-vmx` withdraws VMX; `+arch-capabilities` gives MSR 10AH
    /// [`TURTLES_ARCH_CAPABILITIES`] unless it has a value, `-arch-capabilities`
    /// drops it.
    pub fn apply_modifiers<'a>(&mut self, parts: impl IntoIterator<Item = &'a str>) -> Result<(), PolicyError> {
        let available = implementable();
        for part in parts {
            let Some((name, on)) = cpu_model::parse_modifier(part)? else { continue };
            if cpu_model::is_feature(name, "vmx") {
                let caps = self.vmx.unwrap_or(VmxCaps::turtles());
                self.set_vmx(on.then_some(caps));
            } else if cpu_model::is_feature(name, "arch-capabilities") {
                let value = self.msrs.get(&IA32_ARCH_CAPABILITIES).copied().unwrap_or(TURTLES_ARCH_CAPABILITIES);
                self.set_arch_capabilities(on.then_some(value));
            } else {
                cpu_model::apply_modifiers(&mut self.cpuid, [part], &available)?;
            }
        }
        self.validate()
    }

    /// Offers `caps` (or withdraws VMX): sets CPUID.1:ECX.VMX to match, the
    /// capabilities' physical-address width to CPUID's and,
    /// when the policy has IA32_FEATURE_CONTROL, its VMX-outside-SMX bit.
    pub fn set_vmx(&mut self, caps: Option<VmxCaps>) {
        // VM entry checks addresses against the width CPUID reports.
        let width = self.maxphyaddr();
        self.vmx = caps.map(|c| c.to_builder().maxphyaddr(width).build());
        let on = caps.is_some();
        set_leaf(&mut self.cpuid, 1, None, |r| if on { r[2] |= VMX_BIT } else { r[2] &= !VMX_BIT });
        if let Some(fc) = self.msrs.get_mut(&IA32_FEATURE_CONTROL) {
            if on {
                *fc |= FEATURE_CONTROL_VMX_OUTSIDE_SMX;
            } else {
                *fc &= !FEATURE_CONTROL_VMX_OUTSIDE_SMX;
            }
        }
    }

    /// Gives IA32_ARCH_CAPABILITIES `value` (or removes it) and sets
    /// CPUID.(7,0):EDX.ARCH_CAPABILITIES to match.
    pub fn set_arch_capabilities(&mut self, value: Option<u64>) {
        let subleaf = self.leaf_subleaf(7).unwrap_or(Some(0));
        set_leaf(&mut self.cpuid, 7, subleaf, |r| {
            if value.is_some() {
                r[3] |= ARCH_CAPS_BIT
            } else {
                r[3] &= !ARCH_CAPS_BIT
            }
        });
        match value {
            Some(v) => self.msrs.insert(IA32_ARCH_CAPABILITIES, v),
            None => self.msrs.remove(&IA32_ARCH_CAPABILITIES),
        };
    }

    /// How the model stores `leaf`: `Some(None)` without subleaves,
    /// `Some(Some(_))` with, `None` when it has no entry.
    fn leaf_subleaf(&self, leaf: u32) -> Option<Option<u32>> {
        self.cpuid.entries().iter().find(|e| e.leaf == leaf).map(|e| e.subleaf.map(|_| 0))
    }

    /// The value a guest's RDMSR of `msr` reads; `None` means the MSR does
    /// not exist for this guest (the caller raises #GP). The VMX capability
    /// MSRs (480H-493H) come from [`CpuPolicy::vmx`] and do not exist when
    /// VMX is not offered; the others from [`CpuPolicy::msrs`].
    pub fn rdmsr(&self, msr: u32) -> Option<u64> {
        if (VMX_MSR_FIRST..=VMX_MSR_LAST).contains(&msr) {
            return self.vmx.as_ref().and_then(|c| c.msr_value(msr));
        }
        self.msrs.get(&msr).copied()
    }

    /// Every MSR a guest may read, with its value: [`CpuPolicy::msrs`]
    /// plus, when VMX is offered, the VMX capability MSRs that exist. The
    /// table form of [`CpuPolicy::rdmsr`], for a vCPU to keep (and update
    /// on writes to the writable ones).
    pub fn readable_msrs(&self) -> BTreeMap<u32, u64> {
        let mut msrs = self.msrs.clone();
        if let Some(caps) = &self.vmx {
            msrs.extend((VMX_MSR_FIRST..=VMX_MSR_LAST).filter_map(|m| caps.msr_value(m).map(|v| (m, v))));
        }
        msrs
    }

    /// The physical-address width, bits 7:0 of CPUID.80000008H:EAX (36
    /// when the leaf is absent, as the SDM says).
    pub fn maxphyaddr(&self) -> u8 {
        if self.cpuid.raw(0x8000_0000, 0)[0] < 0x8000_0008 {
            return 36;
        }
        match self.cpuid.raw(0x8000_0008, 0)[0] as u8 {
            0 => 36,
            n => n,
        }
    }

    /// Checks the invariants listed in the module documentation.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let available = implementable();
        for (leaf, subleaf, reg) in cpu_model::feature_registers() {
            let extra = self.cpuid.raw(leaf, subleaf)[reg] & !available.raw(leaf, subleaf)[reg];
            if extra != 0 {
                let bit = extra.trailing_zeros();
                return Err(PolicyError::Unimplemented {
                    leaf,
                    subleaf,
                    reg: REG_NAMES[reg],
                    bit,
                    feature: cpu_model::feature_name(leaf, subleaf, reg, bit).unwrap_or("reserved"),
                });
            }
        }
        match (self.cpuid.raw(1, 0)[2] & VMX_BIT != 0, self.vmx.is_some()) {
            (true, false) => return Err(PolicyError::VmxBitWithoutCaps),
            (false, true) => return Err(PolicyError::VmxCapsWithoutBit),
            _ => {}
        }
        match (self.cpuid.raw(7, 0)[3] & ARCH_CAPS_BIT != 0, self.msrs.contains_key(&IA32_ARCH_CAPABILITIES)) {
            (true, false) => return Err(PolicyError::ArchCapsBitWithoutMsr),
            (false, true) => return Err(PolicyError::ArchCapsMsrWithoutBit),
            _ => {}
        }
        if let Some(&msr) = self.msrs.keys().find(|m| (VMX_MSR_FIRST..=VMX_MSR_LAST).contains(*m)) {
            return Err(PolicyError::VmxMsrInMsrTable(msr));
        }
        if let Some(caps) = &self.vmx {
            check_vmx_within_turtles(caps)?;
        }
        Ok(())
    }
}

/// Refuses VMX capabilities beyond [`VmxCaps::turtles`].
fn check_vmx_within_turtles(caps: &VmxCaps) -> Result<(), PolicyError> {
    let turtles = VmxCaps::turtles();
    for k in VMX_KEYS {
        let Some(value) = caps.msr_value(k.msr) else { continue };
        let have = turtles.msr_value(k.msr).unwrap_or(0);
        let bits = match k.check {
            CapCheck::None => 0,
            CapCheck::Allowed1 => (value >> 32) & !(have >> 32),
            CapCheck::Bits | CapCheck::Fixed1 => value & !have,
            CapCheck::Fixed0 => have & !value,
            CapCheck::Misc => {
                let counts = MISC_COUNTS
                    .iter()
                    .filter(|&&(shift, mask)| (value >> shift) & mask > (have >> shift) & mask)
                    .fold(0, |a, &(shift, mask)| a | mask << shift);
                (value & MISC_FLAGS & !have) | counts
            }
        };
        if bits != 0 {
            return Err(PolicyError::VmxBeyondCpu { key: k.name, value, bits });
        }
    }
    Ok(())
}

/// A number in a policy file: a TOML integer or a string (`"0x..."` or
/// decimal, `_` allowed).
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
enum Num {
    Int(i64),
    Str(String),
}

impl Default for Num {
    fn default() -> Num {
        Num::Int(0)
    }
}

impl Num {
    fn text(&self) -> String {
        match self {
            Num::Int(i) => i.to_string(),
            Num::Str(s) => s.clone(),
        }
    }

    fn u64(&self, key: &str) -> Result<u64, PolicyError> {
        let bad = || PolicyError::BadNumber { key: key.to_string(), value: self.text() };
        match self {
            Num::Int(i) => u64::try_from(*i).map_err(|_| bad()),
            Num::Str(s) => parse_u64(s).ok_or_else(bad),
        }
    }

    fn u32(&self, key: &str) -> Result<u32, PolicyError> {
        u32::try_from(self.u64(key)?).map_err(|_| PolicyError::BadNumber { key: key.to_string(), value: self.text() })
    }
}

fn parse_u64(s: &str) -> Option<u64> {
    let s: String = s.trim().chars().filter(|&c| c != '_').collect();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The layout of a policy file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    base: Option<String>,
    name: Option<String>,
    #[serde(default)]
    cpuid: Vec<LeafFile>,
    #[serde(default)]
    msr: BTreeMap<String, Num>,
    vmx: Option<BTreeMap<String, Num>>,
}

/// One `[[cpuid]]` table.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LeafFile {
    leaf: Num,
    subleaf: Option<Num>,
    #[serde(default)]
    eax: Num,
    #[serde(default)]
    ebx: Num,
    #[serde(default)]
    ecx: Num,
    #[serde(default)]
    edx: Num,
}

impl PolicyFile {
    fn into_policy(self, default_name: &str) -> Result<CpuPolicy, PolicyError> {
        let mut p = match &self.base {
            Some(b) => CpuPolicy::preset(b)?,
            None => CpuPolicy {
                name: String::new(),
                cpuid: CpuidModel::from_entries(Vec::new()),
                msrs: BTreeMap::new(),
                vmx: None,
            },
        };
        p.name = self.name.or(self.base).unwrap_or_else(|| default_name.to_string());

        let mut entries = p.cpuid.entries().to_vec();
        for l in &self.cpuid {
            let leaf = l.leaf.u32("cpuid leaf")?;
            let at = |r: &str| format!("cpuid leaf {leaf:#x} {r}");
            let given = l.subleaf.as_ref().map(|s| s.u32(&at("subleaf"))).transpose()?;
            // Keep the base's convention for the leaf, so the new answer
            // replaces the old one instead of hiding behind it.
            let existing = entries.iter().find(|e| e.leaf == leaf).map(|e| e.subleaf);
            let subleaf = match (existing, given) {
                (Some(None), Some(s)) if s != 0 => return Err(PolicyError::NoSubleaves { leaf, subleaf: s }),
                (Some(None), _) => None,
                (Some(Some(_)), g) => Some(g.unwrap_or(0)),
                (None, g) => g,
            };
            let regs = [l.eax.u32(&at("eax"))?, l.ebx.u32(&at("ebx"))?, l.ecx.u32(&at("ecx"))?, l.edx.u32(&at("edx"))?];
            let entry = CpuidEntry { leaf, subleaf, regs };
            match entries.iter_mut().find(|e| e.leaf == leaf && e.subleaf == subleaf) {
                Some(e) => *e = entry,
                None => entries.push(entry),
            }
        }
        p.cpuid = CpuidModel::from_entries(entries);

        // Without their own values, VMX and IA32_ARCH_CAPABILITIES follow
        // the CPUID bits that enumerate them.
        let vmx_bit = p.cpuid.raw(1, 0)[2] & VMX_BIT != 0;
        match &self.vmx {
            Some(table) if vmx_bit => p.set_vmx(Some(vmx_from_table(table, p.maxphyaddr())?)),
            Some(table) => p.vmx = Some(vmx_from_table(table, p.maxphyaddr())?),
            None if !vmx_bit => p.set_vmx(None),
            None => {}
        }
        if p.cpuid.raw(7, 0)[3] & ARCH_CAPS_BIT == 0 {
            p.msrs.remove(&IA32_ARCH_CAPABILITIES);
        }
        for (k, v) in &self.msr {
            let msr = Num::Str(k.clone()).u32("an [msr] key")?;
            let value = v.u64(&format!("[msr] {k}"))?;
            p.msrs.insert(msr, value);
        }
        p.validate()?;
        Ok(p)
    }
}

/// Builds VMX capabilities from a `[vmx]` table: a preset, then raw MSR
/// values on top.
fn vmx_from_table(table: &BTreeMap<String, Num>, maxphyaddr: u8) -> Result<VmxCaps, PolicyError> {
    let mut base: Option<VmxCaps> = None;
    let mut raw: BTreeMap<u32, u64> = BTreeMap::new();
    for (k, v) in table {
        if k == "preset" {
            base = Some(match v {
                Num::Str(s) if s == "turtles" => VmxCaps::turtles(),
                Num::Str(s) if s == "minimal" => VmxCaps::minimal(),
                other => return Err(PolicyError::UnknownVmxPreset(other.text())),
            });
            continue;
        }
        let key = VMX_KEYS.iter().find(|x| x.name == k).ok_or_else(|| PolicyError::UnknownVmxKey(k.clone()))?;
        raw.insert(key.msr, v.u64(&format!("[vmx] {k}"))?);
    }
    let read = |msr: u32| raw.get(&msr).copied().or_else(|| base.and_then(|b| b.msr_value(msr)));
    // Name what from_msr_values would miss.
    let basic_raw = read(vmx_msr::IA32_VMX_BASIC).ok_or(PolicyError::VmxMissing("basic"))?;
    let basic = VmxBasic::from_raw(basic_raw).ok_or(PolicyError::VmxBadBasic(basic_raw))?;
    let controls = if basic.true_controls {
        vmx_msr::IA32_VMX_TRUE_PINBASED_CTLS..=vmx_msr::IA32_VMX_TRUE_ENTRY_CTLS
    } else {
        vmx_msr::IA32_VMX_PINBASED_CTLS..=vmx_msr::IA32_VMX_ENTRY_CTLS
    };
    let mut required = controls.chain(vmx_msr::IA32_VMX_MISC..=vmx_msr::IA32_VMX_VMCS_ENUM);
    if let Some(m) = required.find(|&m| read(m).is_none()) {
        return Err(PolicyError::VmxMissing(vmx_key_name(m)));
    }
    VmxCaps::from_msr_values(read, maxphyaddr).ok_or(PolicyError::VmxMissing("basic"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpu::{Bus, Cpu, Memory, NullBus, RunExit};

    fn err(r: Result<CpuPolicy, PolicyError>) -> String {
        let e = r.expect_err("policy should be refused").to_string();
        assert_eq!(e.lines().count(), 1, "{e}");
        e
    }

    #[test]
    fn policy_presets_build_and_validate() {
        for (name, desc) in PRESETS {
            let p = CpuPolicy::from_spec(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            p.validate().unwrap();
            assert_eq!(&p.name, name);
            assert!(!desc.contains('\n'));
            let f = p.cpuid.features();
            assert!(f.lm && f.nx && f.syscall, "{name} is a 64-bit CPU");
            assert_eq!(f.vmx, p.vmx.is_some(), "{name}");
            assert_eq!(p.rdmsr(vmx_msr::IA32_VMX_BASIC).is_some(), p.vmx.is_some(), "{name}");
            let fc = p.rdmsr(IA32_FEATURE_CONTROL).unwrap();
            assert_eq!(fc & FEATURE_CONTROL_LOCK, 1, "{name}");
            assert_eq!(fc & FEATURE_CONTROL_VMX_OUTSIDE_SMX != 0, p.vmx.is_some(), "{name}");
        }
        assert_eq!(CpuPolicy::preset("host").unwrap().cpuid, CpuPolicy::max().cpuid);
        let d = CpuPolicy::default();
        d.validate().unwrap();
        assert_eq!(d.vmx, None);
        let mut today = CpuidModel::turtles_max();
        set_leaf(&mut today, 1, None, |r| r[2] &= !VMX_BIT);
        assert_eq!(d.cpuid, today);
    }

    #[test]
    fn policy_readable_msrs_are_what_rdmsr_answers() {
        for (name, _) in PRESETS {
            let p = CpuPolicy::preset(name).unwrap();
            let table = p.readable_msrs();
            for msr in (0..0x1000).chain(0xc000_0000..0xc000_0200) {
                assert_eq!(table.get(&msr).copied(), p.rdmsr(msr), "{name} {msr:#x}");
            }
        }
        assert!(CpuPolicy::max().readable_msrs().contains_key(&vmx_msr::IA32_VMX_TRUE_PINBASED_CTLS));
        assert!(!CpuPolicy::minimal().readable_msrs().keys().any(|m| (VMX_MSR_FIRST..=VMX_MSR_LAST).contains(m)));
    }

    #[test]
    fn policy_max_is_turtles_cpu_plus_vmx() {
        let p = CpuPolicy::max();
        let mut expected = CpuidModel::turtles_max();
        set_leaf(&mut expected, 1, None, |r| r[2] |= VMX_BIT);
        assert_eq!(p.cpuid, expected);
        assert_eq!(p.vmx, Some(VmxCaps::turtles()));
        for msr in VMX_MSR_FIRST..=VMX_MSR_LAST {
            assert_eq!(p.rdmsr(msr), VmxCaps::turtles().msr_value(msr), "{msr:#x}");
        }
        assert_eq!(p.rdmsr(MSR_PLATFORM_INFO), Some(20 << 8));
        assert_eq!(p.rdmsr(IA32_ARCH_CAPABILITIES), None);
        // -vmx withdraws the capabilities, the CPUID bit and the
        // FEATURE_CONTROL enable.
        let p = CpuPolicy::from_spec("max,-vmx").unwrap();
        assert_eq!(p.vmx, None);
        assert!(!p.cpuid.features().vmx);
        assert_eq!(p.rdmsr(vmx_msr::IA32_VMX_BASIC), None);
        assert_eq!(p.rdmsr(IA32_FEATURE_CONTROL), Some(FEATURE_CONTROL_LOCK));
        assert_eq!(p.cpuid.raw(1, 0)[2] | VMX_BIT, CpuPolicy::max().cpuid.raw(1, 0)[2]);
    }

    #[test]
    fn policy_minimal_is_the_baseline() {
        let p = CpuPolicy::minimal();
        let m = &p.cpuid;
        assert_eq!(m.raw(0, 0)[0], 7);
        assert_eq!(m.raw(0x8000_0000, 0)[0], 0x8000_0008);
        assert_eq!(m.signature() >> 8 & 0xf, 6);
        let max = CpuidModel::turtles_max();
        for name in MINIMAL_FEATURES.split_whitespace() {
            assert_eq!(cpu_model::has_feature(m, name), cpu_model::has_feature(&max, name), "{name}");
        }
        let f = m.features();
        assert!(f.cx16 && f.sep && f.lm && f.nx && f.syscall);
        assert!(!f.rdrand && !f.x2apic && !f.pcid && !f.smep && !f.xsave && !f.vmx && !f.page1gb && !f.la57);
        assert_eq!(p.maxphyaddr(), 40);
        let n = CpuPolicy::nested_min();
        assert_eq!(n.vmx, Some(VmxCaps::minimal()));
        assert!(n.cpuid.features().vmx && !n.cpuid.features().rdrand);
        assert_eq!(n.rdmsr(vmx_msr::IA32_VMX_PROCBASED_CTLS2), None, "no secondary controls");
    }

    #[test]
    fn policy_server_is_a_sapphire_rapids_within_turtles() {
        let p = CpuPolicy::server();
        assert_eq!(p.cpuid.signature(), 0x0008_06f8);
        assert_eq!(p.rdmsr(IA32_ARCH_CAPABILITIES), Some(TURTLES_ARCH_CAPABILITIES));
        assert!(cpu_model::has_feature(&p.cpuid, "arch-capabilities"));
        assert!(cpu_model::has_feature(&p.cpuid, "la57") && !cpu_model::has_feature(&p.cpuid, "avx512f"));
        assert_eq!(p.vmx, Some(VmxCaps::turtles()));
        let p = CpuPolicy::from_spec("server,-arch-capabilities").unwrap();
        assert_eq!(p.rdmsr(IA32_ARCH_CAPABILITIES), None);
    }

    #[test]
    fn policy_modifiers_on_presets() {
        let p = CpuPolicy::from_spec("minimal,+x2apic,+rdrand").unwrap();
        assert!(p.cpuid.features().x2apic && p.cpuid.features().rdrand);
        assert_eq!(p.name, "minimal,+x2apic,+rdrand");
        assert_eq!(
            err(CpuPolicy::from_spec("minimal,+avx512f")),
            "CPU feature 'avx512f' is not available on Turtles' CPU"
        );
        assert_eq!(err(CpuPolicy::from_spec("minimal,+frob")), "unknown CPU feature 'frob'");
        let p = CpuPolicy::from_spec("minimal,+vmx").unwrap();
        assert_eq!(p.vmx, Some(VmxCaps::turtles()));
        let p = CpuPolicy::from_spec("nested-min,+vmx").unwrap();
        assert_eq!(p.vmx, Some(VmxCaps::minimal()), "+vmx keeps what is offered");
        assert!(!CpuPolicy::from_spec("max,-pku").unwrap().cpuid.features().pku);
    }

    #[test]
    fn policy_unknown_preset_is_one_line() {
        let e = err(CpuPolicy::from_spec("nosuch"));
        assert_eq!(e, "CPU model 'nosuch' is neither a preset nor a policy file (see --cpu help)");
        let e = err(CpuPolicy::from_spec("Skylake-Client,+x2apic"));
        assert!(e.contains("'Skylake-Client'"), "{e}");
        let e = err(CpuPolicy::from_spec("/nonexistent/cpu.toml"));
        assert!(e.starts_with("could not read CPU policy '/nonexistent/cpu.toml'"), "{e}");
    }

    /// A policy file with a leaf, MSRs and a VMX section; SSE3 only when
    /// Turtles' CPU implements it.
    fn file() -> String {
        let sse3 = u32::from(cpu_model::has_feature(&CpuidModel::turtles_max(), "sse3"));
        let edx1 = CpuPolicy::minimal().cpuid.raw(1, 0)[3];
        format!(
            r#"
base = "minimal"
name = "test-cpu"
[[cpuid]]
leaf = 0x1
subleaf = 0
eax = 0x000806f8
ebx = 0x00010800
ecx = {ecx1:#x}         # (SSE3), CX16, x2APIC, VMX, hypervisor
edx = {edx1:#x}
[[cpuid]]
leaf = 7
ebx = 0x80              # SMEP
edx = 0x20000000        # ARCH_CAPABILITIES
[msr]
"0x10a" = 0x0
"0xce" = "0x1400"
[vmx]
preset = "minimal"
procbased_ctls2 = "0x0000000a00000000"   # EPT, RDTSCP
"#,
            ecx1 = 0x8020_2020u32 | sse3
        )
    }

    #[test]
    fn policy_toml_round_trip() {
        let p = CpuPolicy::from_toml(&file(), "unused").unwrap();
        assert_eq!(p.name, "test-cpu");
        assert_eq!(p.cpuid.signature(), 0x0008_06f8);
        let f = p.cpuid.features();
        assert!(f.x2apic && f.smep && f.vmx && f.cx16 && f.lm, "leaf 7 kept its subleaf convention");
        assert!(!f.rdrand);
        assert_eq!(p.rdmsr(IA32_ARCH_CAPABILITIES), Some(0));
        assert_eq!(p.rdmsr(MSR_PLATFORM_INFO), Some(0x1400));
        assert_eq!(p.rdmsr(IA32_MISC_ENABLE), Some(1), "inherited from minimal");
        let vmx = p.vmx.unwrap();
        assert_eq!(p.rdmsr(vmx_msr::IA32_VMX_BASIC), VmxCaps::minimal().msr_value(vmx_msr::IA32_VMX_BASIC));
        // The raw override is on top of the preset; activation follows.
        assert_eq!(p.rdmsr(vmx_msr::IA32_VMX_PROCBASED_CTLS2), Some(0xa << 32));
        assert_ne!(vmx.msr_value(vmx_msr::IA32_VMX_PROCBASED_CTLS).unwrap() >> 32 & 1 << 31, 0);
        assert_eq!(p.rdmsr(0x493), None);
        assert_eq!(p.rdmsr(0x12345), None);

        // A whole policy in raw VMX MSRs, without a base: what a dump of a
        // real processor's MSRs looks like.
        let t = VmxCaps::turtles();
        // (Leaf 0 says 7: above the maximum basic leaf a processor answers
        // with that leaf, so leaf 1's ECX would read as leaf 7's.)
        let mut text = String::from("[[cpuid]]\nleaf = 0\neax = 7\n[[cpuid]]\nleaf = 1\necx = 0x20\n");
        text.push_str(
            "[[cpuid]]\nleaf = 0x80000000\neax = 0x80000008\n[[cpuid]]\nleaf = 0x80000008\neax = 0x3028\n[vmx]\n",
        );
        for k in VMX_KEYS {
            if let Some(v) = t.msr_value(k.msr) {
                text.push_str(&format!("{} = \"{v:#x}\"\n", k.name));
            }
        }
        let p = CpuPolicy::from_toml(&text, "dump").unwrap();
        assert_eq!(p.name, "dump");
        assert_eq!(p.vmx, Some(t));
        assert_eq!(p.msrs, BTreeMap::new());
    }

    #[test]
    fn policy_module_doc_example_loads() {
        let doc = include_str!("policy.rs");
        let example: String = doc
            .lines()
            .skip_while(|l| *l != "//! ```toml")
            .skip(1)
            .take_while(|l| *l != "//! ```")
            .map(|l| format!("{}\n", l.trim_start_matches("//!").trim_start()))
            .collect();
        let p = CpuPolicy::from_toml(&example, "doc").unwrap();
        assert_eq!(p.name, "my-cpu");
        assert_eq!(p.vmx, Some(VmxCaps::turtles()));
        assert!(p.cpuid.features().smep && p.cpuid.features().x2apic);
        assert_eq!(p.rdmsr(IA32_ARCH_CAPABILITIES), Some(0));
    }

    #[test]
    fn policy_file_via_spec() {
        let path = std::env::temp_dir().join(format!("turtles-policy-{}.toml", std::process::id()));
        std::fs::write(&path, file()).unwrap();
        let spec = format!("{},-x2apic", path.display());
        let p = CpuPolicy::from_spec(&spec).unwrap();
        assert!(!p.cpuid.features().x2apic && p.cpuid.features().smep);
        assert_eq!(CpuPolicy::from_spec(&path.display().to_string()).unwrap().name, "test-cpu");
        std::fs::write(&path, "base = \"max\"\n[[cpuid]]\nleaf = 7\nebx = 0x10000\n").unwrap();
        let e = err(CpuPolicy::from_spec(&path.display().to_string()));
        assert_eq!(
            e,
            format!(
                "CPU policy '{}': CPUID leaf 0x7 subleaf 0 ebx bit 16 (avx512f) is not implemented by Turtles' CPU",
                path.display()
            )
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn policy_file_errors_are_one_line() {
        let t = |text: &str| err(CpuPolicy::from_toml(text, "t"));
        assert!(t("base = \"nosuch\"").starts_with("CPU model 'nosuch' is neither a preset"));
        let e = t("base = \"max\"\n[[cpuid]\nleaf = 1\n");
        assert!(e.starts_with("line 2: "), "{e}");
        let e = t("bogus = 1\n");
        assert!(e.starts_with("line 1: unknown field `bogus`"), "{e}");
        assert_eq!(t("[msr]\n\"0xzz\" = 1\n"), "invalid value '0xzz' for an [msr] key");
        assert_eq!(t("[msr]\n\"0x3a\" = -1\n"), "invalid value '-1' for [msr] 0x3a");
        assert_eq!(t("[[cpuid]]\nleaf = 1\neax = 0x100000000\n"), "invalid value '4294967296' for cpuid leaf 0x1 eax");
        assert_eq!(
            t("base = \"max\"\n[[cpuid]]\nleaf = 1\nsubleaf = 2\n"),
            "CPUID leaf 0x1 has no subleaves (subleaf 2 given)"
        );
        assert_eq!(
            t("base = \"max\"\n[[cpuid]]\nleaf = 0x80000001\nedx = 0x80000000\n"),
            "CPUID leaf 0x80000001 subleaf 0 edx bit 31 (3dnow) is not implemented by Turtles' CPU"
        );
        assert_eq!(
            t("base = \"minimal\"\n[[cpuid]]\nleaf = 1\necx = 0x4000\n"),
            "CPUID leaf 0x1 subleaf 0 ecx bit 14 (xtpr) is not implemented by Turtles' CPU"
        );
        // VMX: section without the CPUID bit, the bit without a section,
        // capabilities the CPU lacks, missing or malformed MSRs.
        assert_eq!(
            t("base = \"minimal\"\n[vmx]\npreset = \"turtles\"\n"),
            "the policy offers VMX capabilities ([vmx]) but CPUID.1:ECX.VMX (bit 5) is clear"
        );
        assert!(
            t("base = \"minimal\"\n[[cpuid]]\nleaf = 1\necx = 0x20\n").starts_with("CPUID.1:ECX.VMX (bit 5) is set")
        );
        let vmx = |body: &str| t(&format!("base = \"nested-min\"\n[vmx]\n{body}"));
        assert_eq!(vmx("preset = \"fancy\"\n"), "unknown [vmx] preset 'fancy' (use turtles or minimal)");
        assert_eq!(vmx("preset = \"minimal\"\nfrob = 1\n"), "unknown [vmx] key 'frob'");
        assert_eq!(vmx("misc = 0\n"), "[vmx] basic is missing");
        assert_eq!(vmx("basic = 0x0018040000000001\n"), "[vmx] pinbased_ctls is missing");
        assert_eq!(vmx("basic = 0x0098040000000001\n"), "[vmx] true_pinbased_ctls is missing");
        assert_eq!(
            vmx("preset = \"minimal\"\nbasic = 0x0014040000000001\n"),
            "[vmx] basic = 0x14040000000001 is malformed (the memory type, bits 53:50, must be 0 or 6)"
        );
        assert_eq!(
            vmx("preset = \"turtles\"\nept_vpid_cap = 0xc0\n"),
            "[vmx] ept_vpid_cap = 0xc0 offers bits 0x80 that Turtles' CPU does not implement"
        );
        assert_eq!(
            vmx("preset = \"minimal\"\ncr0_fixed0 = 0x20\n"),
            "[vmx] cr0_fixed0 = 0x20 offers bits 0x80000001 that Turtles' CPU does not implement"
        );
        // VMX MSRs belong in [vmx]; IA32_ARCH_CAPABILITIES needs its CPUID
        // bit and the other way round.
        assert_eq!(
            t("base = \"max\"\n[msr]\n\"0x480\" = 1\n"),
            "[msr] 0x480 is a VMX capability MSR: give it in the [vmx] section"
        );
        assert_eq!(
            t("base = \"max\"\n[msr]\n\"0x10a\" = 1\n"),
            "[msr] 0x10a (IA32_ARCH_CAPABILITIES) is given but CPUID.(7,0):EDX bit 29 is clear"
        );
        assert_eq!(
            t("base = \"max\"\n[[cpuid]]\nleaf = 7\nedx = 0x20000000\n"),
            "CPUID.(7,0):EDX.ARCH_CAPABILITIES (bit 29) is set but [msr] has no value for 0x10a"
        );
    }

    #[test]
    fn policy_file_can_withdraw_what_its_base_offers() {
        // Clearing the CPUID bits in a file drops VMX and ARCH_CAPABILITIES
        // inherited from the base.
        let l1 = CpuPolicy::server().cpuid.raw(1, 0);
        let l7 = CpuPolicy::server().cpuid.raw(7, 0);
        let text = format!(
            "base = \"server\"\n[[cpuid]]\nleaf = 1\neax = {:#x}\nebx = {:#x}\necx = {:#x}\nedx = {:#x}\n\
             [[cpuid]]\nleaf = 7\nebx = {:#x}\necx = {:#x}\n",
            l1[0],
            l1[1],
            l1[2] & !VMX_BIT,
            l1[3],
            l7[1],
            l7[2]
        );
        let p = CpuPolicy::from_toml(&text, "t").unwrap();
        assert_eq!(p.vmx, None);
        assert_eq!(p.rdmsr(IA32_ARCH_CAPABILITIES), None);
        assert_eq!(p.rdmsr(IA32_FEATURE_CONTROL), Some(FEATURE_CONTROL_LOCK));
    }

    /// Runs `code` in real mode at 0x1000 with #UD (vector 6) going to a
    /// HLT at 0x2000; returns the #UD count.
    fn ud_count(cpuid: CpuidModel, code: &[u8]) -> u64 {
        let mut mem = Memory::new(2 << 20).unwrap();
        mem.write(0x1000, code).unwrap();
        mem.write(0x2000, &[0xf4]).unwrap(); // hlt
        mem.write_u32(6 * 4, 0x0000_2000).unwrap(); // IVT[6] = 0000:2000
        let mut cpu = Cpu::new(0, cpuid);
        cpu.regs.seg[x86::seg::sreg::CS] = cpu::Segment::real(0, true);
        cpu.regs.rip = 0x1000;
        cpu.state_changed();
        let mut bus = NullBus::default();
        let exit = cpu.run(&mut mem, &mut bus as &mut dyn Bus, 100);
        assert!(matches!(exit, RunExit::Halted), "{exit:?}");
        cpu.stats.exceptions[6]
    }

    #[test]
    fn policy_cleared_feature_is_ud_for_the_guest() {
        // rdrand eax; hlt
        let code = [0x0f, 0xc7, 0xf0, 0xf4];
        let minimal = CpuPolicy::minimal();
        assert!(!minimal.cpuid.features().rdrand);
        assert_eq!(ud_count(minimal.cpuid, &code), 1);
        assert_eq!(ud_count(CpuPolicy::max().cpuid, &code), 0);
        assert_eq!(ud_count(CpuPolicy::from_spec("max,-rdrand").unwrap().cpuid, &code), 1);
    }
}
