//! CPU models: QEMU's `-cpu MODEL[,+feat,-feat,feat=on|off,prop=value]`
//! mapped onto the CPUID answers of Turtles' CPU, and the per-vCPU
//! topology leaves.
//!
//! Models: `max` and `host` are everything Turtles' CPU implements
//! ([`CpuidModel::turtles_max`]); `qemu64` is QEMU's qemu64 feature set
//! (`target/i386/cpu.c`: the PPro features plus PSE36, SSE3, CX16, LM,
//! SYSCALL, NX, LAHF_LM, SVM) intersected with that. Vendor, brand and
//! leaf layout stay Turtles'.
//!
//! `turtles --cpu` goes through [`crate::policy`], which builds its presets
//! (minimal, server, nested-min besides these) and policy files on the
//! helpers here and takes the same modifiers.
//!
//! Feature names are QEMU's (`pni`/`sse3`, `sse4.1`/`sse4_1`, `lahf-lm`/
//! `lahf_lm`...). `-feat` clears the CPUID bit (the executor then refuses
//! the feature too, since it checks the same bits). `+feat` sets it only
//! when Turtles' CPU implements it; otherwise it is an error naming the
//! feature, because telling a guest about a feature that then raises #UD
//! is worse than refusing to start.
//!
//! Topology (SDM vol. 2A, CPUID leaf 01H EBX and leaf 0BH; vol. 3A, 10.9
//! "Topology Enumeration"): every vCPU is a one-thread core of one package;
//! leaf 1 EBX bits 31:24 and leaf 0BH EDX give its APIC ID, leaf 1 EBX bits 23:16
//! the number of logical processors.

use cpu::cpuid::CpuidEntry;
use cpu::CpuidModel;
use thiserror::Error;

/// Why a `-cpu` specification was refused.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum CpuModelError {
    /// A model other than max, host and qemu64.
    #[error("CPU model '{0}' is not available on Turtles' CPU (use max, host or qemu64)")]
    UnknownModel(String),
    /// A feature name QEMU does not know either.
    #[error("unknown CPU feature '{0}'")]
    UnknownFeature(String),
    /// A real feature that Turtles' CPU does not implement.
    #[error("CPU feature '{0}' is not available on Turtles' CPU")]
    FeatureUnavailable(String),
    /// A property with a value it cannot take.
    #[error("invalid value '{value}' for CPU property '{name}'")]
    BadValue {
        /// Property or feature name.
        name: String,
        /// The value given.
        value: String,
    },
}

/// Which register of a CPUID answer.
#[derive(Clone, Copy)]
enum Reg {
    Eax = 0,
    Ebx = 1,
    Ecx = 2,
    Edx = 3,
}

/// One feature bit: (QEMU names, leaf, subleaf as stored in the model,
/// register, bit).
struct Feature {
    names: &'static [&'static str],
    leaf: u32,
    subleaf: Option<u32>,
    reg: Reg,
    bit: u32,
}

const fn f(names: &'static [&'static str], leaf: u32, subleaf: Option<u32>, reg: Reg, bit: u32) -> Feature {
    Feature { names, leaf, subleaf, reg, bit }
}

const L1: u32 = 1;
const L7: u32 = 7;
const LX1: u32 = 0x8000_0001;
const S0: Option<u32> = Some(0);

/// QEMU's feature words (`feature_word_info` in `target/i386/cpu.c`), the
/// bits a guest is likely to ask for.
const FEATURES: &[Feature] = &[
    // CPUID.1:EDX
    f(&["fpu"], L1, None, Reg::Edx, 0),
    f(&["vme"], L1, None, Reg::Edx, 1),
    f(&["de"], L1, None, Reg::Edx, 2),
    f(&["pse"], L1, None, Reg::Edx, 3),
    f(&["tsc"], L1, None, Reg::Edx, 4),
    f(&["msr"], L1, None, Reg::Edx, 5),
    f(&["pae"], L1, None, Reg::Edx, 6),
    f(&["mce"], L1, None, Reg::Edx, 7),
    f(&["cx8"], L1, None, Reg::Edx, 8),
    f(&["apic"], L1, None, Reg::Edx, 9),
    f(&["sep"], L1, None, Reg::Edx, 11),
    f(&["mtrr"], L1, None, Reg::Edx, 12),
    f(&["pge"], L1, None, Reg::Edx, 13),
    f(&["mca"], L1, None, Reg::Edx, 14),
    f(&["cmov"], L1, None, Reg::Edx, 15),
    f(&["pat"], L1, None, Reg::Edx, 16),
    f(&["pse36"], L1, None, Reg::Edx, 17),
    f(&["pn"], L1, None, Reg::Edx, 18),
    f(&["clflush"], L1, None, Reg::Edx, 19),
    f(&["ds"], L1, None, Reg::Edx, 21),
    f(&["acpi"], L1, None, Reg::Edx, 22),
    f(&["mmx"], L1, None, Reg::Edx, 23),
    f(&["fxsr"], L1, None, Reg::Edx, 24),
    f(&["sse"], L1, None, Reg::Edx, 25),
    f(&["sse2"], L1, None, Reg::Edx, 26),
    f(&["ss"], L1, None, Reg::Edx, 27),
    f(&["ht"], L1, None, Reg::Edx, 28),
    f(&["tm"], L1, None, Reg::Edx, 29),
    f(&["ia64"], L1, None, Reg::Edx, 30),
    f(&["pbe"], L1, None, Reg::Edx, 31),
    // CPUID.1:ECX
    f(&["pni", "sse3"], L1, None, Reg::Ecx, 0),
    f(&["pclmulqdq", "pclmuldq"], L1, None, Reg::Ecx, 1),
    f(&["dtes64"], L1, None, Reg::Ecx, 2),
    f(&["monitor"], L1, None, Reg::Ecx, 3),
    f(&["ds-cpl"], L1, None, Reg::Ecx, 4),
    f(&["vmx"], L1, None, Reg::Ecx, 5),
    f(&["smx"], L1, None, Reg::Ecx, 6),
    f(&["est"], L1, None, Reg::Ecx, 7),
    f(&["tm2"], L1, None, Reg::Ecx, 8),
    f(&["ssse3"], L1, None, Reg::Ecx, 9),
    f(&["cid"], L1, None, Reg::Ecx, 10),
    f(&["fma"], L1, None, Reg::Ecx, 12),
    f(&["cx16"], L1, None, Reg::Ecx, 13),
    f(&["xtpr"], L1, None, Reg::Ecx, 14),
    f(&["pdcm"], L1, None, Reg::Ecx, 15),
    f(&["pcid"], L1, None, Reg::Ecx, 17),
    f(&["dca"], L1, None, Reg::Ecx, 18),
    f(&["sse4.1", "sse4-1"], L1, None, Reg::Ecx, 19),
    f(&["sse4.2", "sse4-2"], L1, None, Reg::Ecx, 20),
    f(&["x2apic"], L1, None, Reg::Ecx, 21),
    f(&["movbe"], L1, None, Reg::Ecx, 22),
    f(&["popcnt"], L1, None, Reg::Ecx, 23),
    f(&["tsc-deadline"], L1, None, Reg::Ecx, 24),
    f(&["aes"], L1, None, Reg::Ecx, 25),
    f(&["xsave"], L1, None, Reg::Ecx, 26),
    f(&["avx"], L1, None, Reg::Ecx, 28),
    f(&["f16c"], L1, None, Reg::Ecx, 29),
    f(&["rdrand"], L1, None, Reg::Ecx, 30),
    f(&["hypervisor"], L1, None, Reg::Ecx, 31),
    // CPUID.6:EAX
    f(&["arat"], 6, None, Reg::Eax, 2),
    // CPUID.(7,0):EBX
    f(&["fsgsbase"], L7, S0, Reg::Ebx, 0),
    f(&["tsc-adjust"], L7, S0, Reg::Ebx, 1),
    f(&["sgx"], L7, S0, Reg::Ebx, 2),
    f(&["bmi1"], L7, S0, Reg::Ebx, 3),
    f(&["hle"], L7, S0, Reg::Ebx, 4),
    f(&["avx2"], L7, S0, Reg::Ebx, 5),
    f(&["smep"], L7, S0, Reg::Ebx, 7),
    f(&["bmi2"], L7, S0, Reg::Ebx, 8),
    f(&["erms"], L7, S0, Reg::Ebx, 9),
    f(&["invpcid"], L7, S0, Reg::Ebx, 10),
    f(&["rtm"], L7, S0, Reg::Ebx, 11),
    f(&["mpx"], L7, S0, Reg::Ebx, 14),
    f(&["avx512f"], L7, S0, Reg::Ebx, 16),
    f(&["avx512dq"], L7, S0, Reg::Ebx, 17),
    f(&["rdseed"], L7, S0, Reg::Ebx, 18),
    f(&["adx"], L7, S0, Reg::Ebx, 19),
    f(&["smap"], L7, S0, Reg::Ebx, 20),
    f(&["avx512ifma"], L7, S0, Reg::Ebx, 21),
    f(&["clflushopt"], L7, S0, Reg::Ebx, 23),
    f(&["clwb"], L7, S0, Reg::Ebx, 24),
    f(&["intel-pt"], L7, S0, Reg::Ebx, 25),
    f(&["avx512pf"], L7, S0, Reg::Ebx, 26),
    f(&["avx512er"], L7, S0, Reg::Ebx, 27),
    f(&["avx512cd"], L7, S0, Reg::Ebx, 28),
    f(&["sha-ni"], L7, S0, Reg::Ebx, 29),
    f(&["avx512bw"], L7, S0, Reg::Ebx, 30),
    f(&["avx512vl"], L7, S0, Reg::Ebx, 31),
    // CPUID.(7,0):ECX
    f(&["avx512vbmi"], L7, S0, Reg::Ecx, 1),
    f(&["umip"], L7, S0, Reg::Ecx, 2),
    f(&["pku"], L7, S0, Reg::Ecx, 3),
    f(&["waitpkg"], L7, S0, Reg::Ecx, 5),
    f(&["avx512vbmi2"], L7, S0, Reg::Ecx, 6),
    f(&["gfni"], L7, S0, Reg::Ecx, 8),
    f(&["vaes"], L7, S0, Reg::Ecx, 9),
    f(&["vpclmulqdq"], L7, S0, Reg::Ecx, 10),
    f(&["avx512vnni"], L7, S0, Reg::Ecx, 11),
    f(&["avx512bitalg"], L7, S0, Reg::Ecx, 12),
    f(&["avx512-vpopcntdq"], L7, S0, Reg::Ecx, 14),
    f(&["la57"], L7, S0, Reg::Ecx, 16),
    f(&["rdpid"], L7, S0, Reg::Ecx, 22),
    f(&["cldemote"], L7, S0, Reg::Ecx, 25),
    f(&["movdiri"], L7, S0, Reg::Ecx, 27),
    f(&["movdir64b"], L7, S0, Reg::Ecx, 28),
    // CPUID.(7,0):EDX
    f(&["fsrm"], L7, S0, Reg::Edx, 4),
    f(&["md-clear"], L7, S0, Reg::Edx, 10),
    f(&["serialize"], L7, S0, Reg::Edx, 14),
    f(&["spec-ctrl"], L7, S0, Reg::Edx, 26),
    f(&["stibp"], L7, S0, Reg::Edx, 27),
    f(&["arch-capabilities"], L7, S0, Reg::Edx, 29),
    f(&["ssbd"], L7, S0, Reg::Edx, 31),
    // CPUID.(0DH,1):EAX
    f(&["xsaveopt"], 0xd, Some(1), Reg::Eax, 0),
    f(&["xsavec"], 0xd, Some(1), Reg::Eax, 1),
    f(&["xgetbv1"], 0xd, Some(1), Reg::Eax, 2),
    f(&["xsaves"], 0xd, Some(1), Reg::Eax, 3),
    // CPUID.80000001H:EDX
    f(&["syscall"], LX1, None, Reg::Edx, 11),
    f(&["nx", "xd"], LX1, None, Reg::Edx, 20),
    f(&["mmxext"], LX1, None, Reg::Edx, 22),
    f(&["fxsr-opt", "ffxsr"], LX1, None, Reg::Edx, 25),
    f(&["pdpe1gb"], LX1, None, Reg::Edx, 26),
    f(&["rdtscp"], LX1, None, Reg::Edx, 27),
    f(&["lm", "i64"], LX1, None, Reg::Edx, 29),
    f(&["3dnowext"], LX1, None, Reg::Edx, 30),
    f(&["3dnow"], LX1, None, Reg::Edx, 31),
    // CPUID.80000001H:ECX
    f(&["lahf-lm"], LX1, None, Reg::Ecx, 0),
    f(&["cmp-legacy"], LX1, None, Reg::Ecx, 1),
    f(&["svm"], LX1, None, Reg::Ecx, 2),
    f(&["extapic"], LX1, None, Reg::Ecx, 3),
    f(&["cr8legacy"], LX1, None, Reg::Ecx, 4),
    f(&["abm"], LX1, None, Reg::Ecx, 5),
    f(&["sse4a"], LX1, None, Reg::Ecx, 6),
    f(&["misalignsse"], LX1, None, Reg::Ecx, 7),
    f(&["3dnowprefetch"], LX1, None, Reg::Ecx, 8),
    f(&["osvw"], LX1, None, Reg::Ecx, 9),
    f(&["xop"], LX1, None, Reg::Ecx, 11),
    f(&["skinit"], LX1, None, Reg::Ecx, 12),
    f(&["wdt"], LX1, None, Reg::Ecx, 13),
    f(&["fma4"], LX1, None, Reg::Ecx, 16),
    f(&["tbm"], LX1, None, Reg::Ecx, 21),
    f(&["topoext"], LX1, None, Reg::Ecx, 22),
    // CPUID.80000007H:EDX
    f(&["invtsc"], 0x8000_0007, None, Reg::Edx, 8),
];

/// Properties QEMU's x86 CPUs take that have no meaning for Turtles' CPU:
/// accepted and ignored. Turtles always reports 40 physical address bits.
const IGNORED_PROPERTIES: &[&str] = &[
    "host-phys-bits",
    "host-phys-bits-limit",
    "phys-bits",
    "check",
    "enforce",
    "migratable",
    "pmu",
    "kvm",
    "l3-cache",
    "host-cache-info",
    "x-force-features",
];

fn find_feature(name: &str) -> Option<&'static Feature> {
    // QEMU accepts '_' for '-' in legacy feature names.
    let canon = name.replace('_', "-");
    FEATURES.iter().find(|f| f.names.contains(&canon.as_str()))
}

fn bit_set(m: &CpuidModel, f: &Feature) -> bool {
    m.raw(f.leaf, f.subleaf.unwrap_or(0))[f.reg as usize] & (1 << f.bit) != 0
}

fn set_bit(m: &mut CpuidModel, f: &Feature, on: bool) {
    let mut regs = m.raw(f.leaf, f.subleaf.unwrap_or(0));
    if on {
        regs[f.reg as usize] |= 1 << f.bit;
    } else {
        regs[f.reg as usize] &= !(1 << f.bit);
    }
    m.set(CpuidEntry { leaf: f.leaf, subleaf: f.subleaf, regs });
}

/// The QEMU names of the features Turtles' CPU implements (the ones
/// `+feat` accepts), first spelling only, in CPUID order.
pub fn available_features() -> Vec<&'static str> {
    let max = CpuidModel::turtles_max();
    FEATURES.iter().filter(|f| bit_set(&max, f)).map(|f| f.names[0]).collect()
}

/// QEMU's qemu64 model intersected with Turtles' CPU.
pub fn qemu64() -> CpuidModel {
    const KEEP: &[&str] = &[
        // PPRO_FEATURES | PSE36
        "fpu",
        "de",
        "pse",
        "tsc",
        "msr",
        "mce",
        "cx8",
        "pge",
        "cmov",
        "pat",
        "fxsr",
        "mmx",
        "sse",
        "sse2",
        "pae",
        "sep",
        "apic",
        "pse36", // CPUID.1:EDX
        "sse3",
        "cx16",
        "hypervisor", // CPUID.1:ECX
        "lm",
        "syscall",
        "nx", // CPUID.80000001H:EDX
        "lahf-lm",
        "svm", // CPUID.80000001H:ECX
    ];
    restrict(&CpuidModel::turtles_max(), KEEP)
}

/// `base` with every known feature bit cleared except those named in
/// `keep` (first or alternative QEMU spellings).
pub(crate) fn restrict(base: &CpuidModel, keep: &[&str]) -> CpuidModel {
    let mut m = base.clone();
    for f in FEATURES {
        if !f.names.iter().any(|n| keep.contains(n)) {
            set_bit(&mut m, f, false);
        }
    }
    m
}

/// Sets or clears the feature called `name`; `false` if no feature has
/// that name.
pub(crate) fn set_feature(m: &mut CpuidModel, name: &str, on: bool) -> bool {
    match find_feature(name) {
        Some(f) => {
            set_bit(m, f, on);
            true
        }
        None => false,
    }
}

/// Whether `m` reports the feature called `name` (false for unknown names).
pub(crate) fn has_feature(m: &CpuidModel, name: &str) -> bool {
    find_feature(name).is_some_and(|f| bit_set(m, f))
}

/// The QEMU name of feature bit `bit` of register `reg` (0 = EAX ... 3 =
/// EDX) of CPUID leaf `leaf`, subleaf `subleaf`.
pub(crate) fn feature_name(leaf: u32, subleaf: u32, reg: usize, bit: u32) -> Option<&'static str> {
    FEATURES
        .iter()
        .find(|f| f.leaf == leaf && f.subleaf.unwrap_or(0) == subleaf && f.reg as usize == reg && f.bit == bit)
        .map(|f| f.names[0])
}

/// The registers that hold feature bits, as (leaf, subleaf, register).
pub(crate) fn feature_registers() -> Vec<(u32, u32, usize)> {
    let mut regs: Vec<(u32, u32, usize)> =
        FEATURES.iter().map(|f| (f.leaf, f.subleaf.unwrap_or(0), f.reg as usize)).collect();
    regs.sort_unstable();
    regs.dedup();
    regs
}

/// Builds the CPUID model of a `-cpu` specification: a model name followed
/// by comma-separated `+feat`, `-feat`, `feat=on|off` or ignored
/// properties.
pub fn parse_cpu_spec(spec: &str) -> Result<CpuidModel, CpuModelError> {
    let mut parts = spec.split(',');
    let model = parts.next().unwrap_or("").trim();
    let max = CpuidModel::turtles_max();
    let mut m = match model {
        "max" | "host" => max.clone(),
        "qemu64" => qemu64(),
        other => return Err(CpuModelError::UnknownModel(other.to_string())),
    };
    apply_modifiers(&mut m, parts, &max)?;
    Ok(m)
}

/// Applies comma-separated `+feat`, `-feat`, `feat=on|off` or ignored
/// properties to `m`; `+feat` is refused unless `available` has the bit.
pub(crate) fn apply_modifiers<'a>(
    m: &mut CpuidModel,
    parts: impl IntoIterator<Item = &'a str>,
    available: &CpuidModel,
) -> Result<(), CpuModelError> {
    for part in parts {
        let Some((name, on)) = parse_modifier(part)? else { continue };
        let feat = find_feature(name).ok_or_else(|| CpuModelError::UnknownFeature(name.to_string()))?;
        if on && !bit_set(available, feat) {
            return Err(CpuModelError::FeatureUnavailable(name.to_string()));
        }
        set_bit(m, feat, on);
    }
    Ok(())
}

/// One `-cpu` modifier as (feature name, on); `None` for empty parts and
/// ignored properties.
pub(crate) fn parse_modifier(part: &str) -> Result<Option<(&str, bool)>, CpuModelError> {
    let part = part.trim();
    if part.is_empty() {
        return Ok(None);
    }
    Ok(Some(if let Some(n) = part.strip_prefix('+') {
        (n, true)
    } else if let Some(n) = part.strip_prefix('-') {
        (n, false)
    } else if let Some((n, v)) = part.split_once('=') {
        if IGNORED_PROPERTIES.contains(&n) {
            return Ok(None);
        }
        let on = match v {
            "on" | "true" | "yes" | "1" => true,
            "off" | "false" | "no" | "0" => false,
            _ => return Err(CpuModelError::BadValue { name: n.to_string(), value: v.to_string() }),
        };
        (n, on)
    } else if IGNORED_PROPERTIES.contains(&part) {
        return Ok(None);
    } else {
        (part, true)
    }))
}

/// Whether `name` (a modifier's feature name) is the feature `canonical`.
pub(crate) fn is_feature(name: &str, canonical: &str) -> bool {
    find_feature(name).is_some_and(|f| f.names[0] == canonical)
}

/// The CPUID model of vCPU `apic_id` of `ncpus`: `base` with the topology
/// fields filled in.
pub fn with_topology(base: &CpuidModel, apic_id: u32, ncpus: u32) -> CpuidModel {
    let mut m = base.clone();
    let mut l1 = m.raw(1, 0);
    let count = ncpus.clamp(1, 255);
    l1[1] = (l1[1] & 0x0000_ffff) | (count << 16) | ((apic_id & 0xff) << 24);
    if ncpus > 1 {
        l1[3] |= 1 << 28; // HTT: EBX[23:16] is valid
    }
    m.set(CpuidEntry { leaf: 1, subleaf: None, regs: l1 });
    if m.raw(0, 0)[0] >= 0xb {
        // Level 0: SMT, one thread per core. Level 1: cores.
        let core_shift = 32 - (ncpus.max(1) - 1).leading_zeros();
        m.set(CpuidEntry { leaf: 0xb, subleaf: Some(0), regs: [0, 1, 0x100, apic_id] });
        m.set(CpuidEntry { leaf: 0xb, subleaf: Some(1), regs: [core_shift, count, 0x201, apic_id] });
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn has(m: &CpuidModel, name: &str) -> bool {
        bit_set(m, find_feature(name).unwrap())
    }

    #[test]
    fn max_and_host_are_turtles_cpu() {
        assert_eq!(parse_cpu_spec("max").unwrap(), CpuidModel::turtles_max());
        assert_eq!(parse_cpu_spec("host").unwrap(), CpuidModel::turtles_max());
    }

    #[test]
    fn minus_clears_plus_checks_availability() {
        let m = parse_cpu_spec("max,-pku,-x2apic,tsc_deadline=off").unwrap();
        assert!(!has(&m, "pku") && !has(&m, "x2apic") && !has(&m, "tsc-deadline"));
        assert!(!m.features().pku && !m.features().x2apic);
        assert!(has(&m, "smep"));
        let m = parse_cpu_spec("max,+x2apic,+tsc-deadline,host-phys-bits,phys-bits=40,check").unwrap();
        assert!(m.features().x2apic && m.features().tsc_deadline);
        assert_eq!(parse_cpu_spec("max,+avx512f"), Err(CpuModelError::FeatureUnavailable("avx512f".into())));
        assert_eq!(parse_cpu_spec("max,+frobnicate"), Err(CpuModelError::UnknownFeature("frobnicate".into())));
        assert_eq!(parse_cpu_spec("Skylake-Client"), Err(CpuModelError::UnknownModel("Skylake-Client".into())));
        assert!(matches!(parse_cpu_spec("max,pku=maybe"), Err(CpuModelError::BadValue { .. })));
    }

    #[test]
    fn vmx_follows_what_the_cpu_implements() {
        let available = CpuidModel::turtles_max().features().vmx;
        assert_eq!(parse_cpu_spec("max,+vmx").is_ok(), available);
    }

    #[test]
    fn available_features_are_accepted() {
        let names = available_features();
        assert!(names.contains(&"x2apic") && names.contains(&"lm") && !names.contains(&"avx512f"));
        for n in names {
            assert!(parse_cpu_spec(&format!("max,+{n}")).is_ok(), "{n}");
        }
    }

    #[test]
    fn qemu64_is_the_intersection() {
        let m = qemu64();
        assert!(has(&m, "lm") && has(&m, "nx") && has(&m, "syscall") && has(&m, "cx16") && has(&m, "sse2"));
        assert!(!has(&m, "pcid") && !has(&m, "smep") && !has(&m, "x2apic") && !has(&m, "rdtscp"));
        assert!(!has(&m, "pni"), "Turtles does not offer SSE3");
        // Re-enabling something Turtles has works on top of qemu64.
        assert!(parse_cpu_spec("qemu64,+x2apic").unwrap().features().x2apic);
    }

    #[test]
    fn topology_per_vcpu() {
        let m = with_topology(&CpuidModel::turtles_max(), 3, 4);
        let l1 = m.raw(1, 0);
        assert_eq!(l1[1] >> 24, 3);
        assert_eq!((l1[1] >> 16) & 0xff, 4);
        assert_ne!(l1[3] & (1 << 28), 0);
        assert_eq!(m.raw(0xb, 0)[3], 3);
        assert_eq!(m.raw(0xb, 1), [2, 4, 0x201, 3]);
        let one = with_topology(&CpuidModel::turtles_max(), 0, 1);
        assert_eq!(one.raw(0xb, 1)[0], 0);
        assert_eq!((one.raw(1, 0)[1] >> 16) & 0xff, 1);
    }
}
