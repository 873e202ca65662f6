//! Thin wrappers over privileged x86-64 instructions: port I/O, MSRs,
//! CPUID, control and debug registers, descriptor-table registers, flags.
//!
//! All are `unsafe` where the instruction can change machine state in a way
//! the caller must reason about; pure reads are safe functions.

use core::arch::asm;

/// Operand of LGDT/LIDT/SGDT/SIDT in 64-bit mode (SDM Vol. 3A, 3.5.1
/// "Segment Descriptor Tables": 16-bit limit then 64-bit base).
#[repr(C, packed)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DescriptorTablePointer {
    /// Size of the table in bytes minus one.
    pub limit: u16,
    /// Linear address of the table.
    pub base: u64,
}

/// Reads a byte from an I/O port.
///
/// # Safety
/// Port reads can have device side effects.
#[inline(always)]
pub unsafe fn inb(port: u16) -> u8 {
    let v: u8;
    // SAFETY: caller's contract.
    unsafe { asm!("in al, dx", out("al") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads a word from an I/O port.
///
/// # Safety
/// Port reads can have device side effects.
#[inline(always)]
pub unsafe fn inw(port: u16) -> u16 {
    let v: u16;
    // SAFETY: caller's contract.
    unsafe { asm!("in ax, dx", out("ax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Reads a dword from an I/O port.
///
/// # Safety
/// Port reads can have device side effects.
#[inline(always)]
pub unsafe fn inl(port: u16) -> u32 {
    let v: u32;
    // SAFETY: caller's contract.
    unsafe { asm!("in eax, dx", out("eax") v, in("dx") port, options(nomem, nostack, preserves_flags)) };
    v
}

/// Writes a byte to an I/O port.
///
/// # Safety
/// Port writes can have arbitrary device side effects.
#[inline(always)]
pub unsafe fn outb(port: u16, v: u8) {
    // SAFETY: caller's contract.
    unsafe { asm!("out dx, al", in("dx") port, in("al") v, options(nomem, nostack, preserves_flags)) };
}

/// Writes a word to an I/O port.
///
/// # Safety
/// Port writes can have arbitrary device side effects.
#[inline(always)]
pub unsafe fn outw(port: u16, v: u16) {
    // SAFETY: caller's contract.
    unsafe { asm!("out dx, ax", in("dx") port, in("ax") v, options(nomem, nostack, preserves_flags)) };
}

/// Writes a dword to an I/O port.
///
/// # Safety
/// Port writes can have arbitrary device side effects.
#[inline(always)]
pub unsafe fn outl(port: u16, v: u32) {
    // SAFETY: caller's contract.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") v, options(nomem, nostack, preserves_flags)) };
}

/// Reads a model-specific register.
///
/// # Safety
/// Reading an unimplemented MSR raises #GP.
#[inline(always)]
pub unsafe fn rdmsr(msr: u32) -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: caller's contract.
    unsafe { asm!("rdmsr", in("ecx") msr, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// Writes a model-specific register.
///
/// # Safety
/// MSR writes change processor behaviour; bad values raise #GP.
#[inline(always)]
pub unsafe fn wrmsr(msr: u32, v: u64) {
    // SAFETY: caller's contract.
    unsafe {
        asm!("wrmsr", in("ecx") msr, in("eax") v as u32, in("edx") (v >> 32) as u32,
             options(nostack, preserves_flags))
    };
}

/// Architectural MSR numbers used by the kernels (SDM Vol. 4, chapter 2).
pub mod msr {
    /// IA32_APIC_BASE.
    pub const APIC_BASE: u32 = 0x1b;
    /// IA32_TSC_DEADLINE.
    pub const TSC_DEADLINE: u32 = 0x6e0;
    /// IA32_SYSENTER_CS.
    pub const SYSENTER_CS: u32 = 0x174;
    /// IA32_SYSENTER_ESP.
    pub const SYSENTER_ESP: u32 = 0x175;
    /// IA32_SYSENTER_EIP.
    pub const SYSENTER_EIP: u32 = 0x176;
    /// IA32_PAT.
    pub const PAT: u32 = 0x277;
    /// IA32_DEBUGCTL.
    pub const DEBUGCTL: u32 = 0x1d9;
    /// IA32_EFER.
    pub const EFER: u32 = 0xc000_0080;
    /// IA32_STAR.
    pub const STAR: u32 = 0xc000_0081;
    /// IA32_LSTAR.
    pub const LSTAR: u32 = 0xc000_0082;
    /// IA32_CSTAR.
    pub const CSTAR: u32 = 0xc000_0083;
    /// IA32_FMASK.
    pub const FMASK: u32 = 0xc000_0084;
    /// IA32_FS_BASE.
    pub const FS_BASE: u32 = 0xc000_0100;
    /// IA32_GS_BASE.
    pub const GS_BASE: u32 = 0xc000_0101;
    /// IA32_KERNEL_GS_BASE.
    pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
    /// IA32_TSC_AUX.
    pub const TSC_AUX: u32 = 0xc000_0103;
    /// IA32_XSS.
    pub const XSS: u32 = 0xda0;

    /// EFER.SCE: SYSCALL enable.
    pub const EFER_SCE: u64 = 1 << 0;
    /// EFER.LME: long mode enable.
    pub const EFER_LME: u64 = 1 << 8;
    /// EFER.LMA: long mode active (read-only).
    pub const EFER_LMA: u64 = 1 << 10;
    /// EFER.NXE: execute-disable enable.
    pub const EFER_NXE: u64 = 1 << 11;
}

/// Result of CPUID.
pub use core::arch::x86_64::CpuidResult;

/// Executes CPUID with the given leaf and subleaf.
#[inline]
pub fn cpuid(leaf: u32, subleaf: u32) -> CpuidResult {
    core::arch::x86_64::__cpuid_count(leaf, subleaf)
}

/// True if CPUID reports `leaf` (basic or extended range) as supported.
pub fn cpuid_has_leaf(leaf: u32) -> bool {
    let max = cpuid(leaf & 0x8000_0000, 0).eax;
    leaf <= max && (max & 0x8000_0000) == (leaf & 0x8000_0000)
}

/// CPUID feature bits that the kernels test for, as (leaf, subleaf,
/// register, bit). Register: 0 = EAX, 1 = EBX, 2 = ECX, 3 = EDX.
pub mod feature {
    /// A CPUID feature flag location.
    #[derive(Clone, Copy, Debug)]
    pub struct Feature(pub u32, pub u32, pub u8, pub u8);
    /// SSE3.
    pub const SSE3: Feature = Feature(1, 0, 2, 0);
    /// PCID.
    pub const PCID: Feature = Feature(1, 0, 2, 17);
    /// x2APIC.
    pub const X2APIC: Feature = Feature(1, 0, 2, 21);
    /// TSC-deadline timer.
    pub const TSC_DEADLINE: Feature = Feature(1, 0, 2, 24);
    /// XSAVE.
    pub const XSAVE: Feature = Feature(1, 0, 2, 26);
    /// OSXSAVE (CR4.OSXSAVE is set).
    pub const OSXSAVE: Feature = Feature(1, 0, 2, 27);
    /// AVX.
    pub const AVX: Feature = Feature(1, 0, 2, 28);
    /// FPU on chip.
    pub const FPU: Feature = Feature(1, 0, 3, 0);
    /// Debugging extensions (CR4.DE).
    pub const DE: Feature = Feature(1, 0, 3, 2);
    /// Page size extension (4 MiB pages with 32-bit paging).
    pub const PSE: Feature = Feature(1, 0, 3, 3);
    /// TSC.
    pub const TSC: Feature = Feature(1, 0, 3, 4);
    /// MSRs.
    pub const MSR: Feature = Feature(1, 0, 3, 5);
    /// PAE.
    pub const PAE: Feature = Feature(1, 0, 3, 6);
    /// On-chip APIC.
    pub const APIC: Feature = Feature(1, 0, 3, 9);
    /// SYSENTER/SYSEXIT.
    pub const SEP: Feature = Feature(1, 0, 3, 11);
    /// Global pages.
    pub const PGE: Feature = Feature(1, 0, 3, 13);
    /// PAT.
    pub const PAT: Feature = Feature(1, 0, 3, 16);
    /// FXSAVE/FXRSTOR.
    pub const FXSR: Feature = Feature(1, 0, 3, 24);
    /// SSE.
    pub const SSE: Feature = Feature(1, 0, 3, 25);
    /// SSE2.
    pub const SSE2: Feature = Feature(1, 0, 3, 26);
    /// FSGSBASE instructions.
    pub const FSGSBASE: Feature = Feature(7, 0, 1, 0);
    /// SMEP.
    pub const SMEP: Feature = Feature(7, 0, 1, 7);
    /// INVPCID.
    pub const INVPCID: Feature = Feature(7, 0, 1, 10);
    /// SMAP.
    pub const SMAP: Feature = Feature(7, 0, 1, 20);
    /// UMIP.
    pub const UMIP: Feature = Feature(7, 0, 2, 2);
    /// Protection keys for user pages.
    pub const PKU: Feature = Feature(7, 0, 2, 3);
    /// 5-level paging.
    pub const LA57: Feature = Feature(7, 0, 2, 16);
    /// SYSCALL/SYSRET in 64-bit mode.
    pub const SYSCALL: Feature = Feature(0x8000_0001, 0, 3, 11);
    /// Execute-disable.
    pub const NX: Feature = Feature(0x8000_0001, 0, 3, 20);
    /// 1-GiB pages.
    pub const PAGE1GB: Feature = Feature(0x8000_0001, 0, 3, 26);
    /// RDTSCP and IA32_TSC_AUX.
    pub const RDTSCP: Feature = Feature(0x8000_0001, 0, 3, 27);
    /// Long mode.
    pub const LM: Feature = Feature(0x8000_0001, 0, 3, 29);
}

/// True if the CPUID feature flag is set (and its leaf exists).
pub fn has(f: feature::Feature) -> bool {
    let feature::Feature(leaf, sub, reg, bit) = f;
    if !cpuid_has_leaf(leaf) {
        return false;
    }
    let r = cpuid(leaf, sub);
    let v = match reg {
        0 => r.eax,
        1 => r.ebx,
        2 => r.ecx,
        _ => r.edx,
    };
    v >> bit & 1 == 1
}

/// Physical-address width from CPUID.80000008H:EAX[7:0] (36 if absent, SDM
/// Vol. 3A, 4.1.4 "Enumeration of Paging Features by CPUID").
pub fn maxphyaddr() -> u32 {
    if cpuid_has_leaf(0x8000_0008) {
        cpuid(0x8000_0008, 0).eax & 0xff
    } else {
        36
    }
}

macro_rules! cr_accessors {
    ($($read:ident, $write:ident, $reg:literal;)*) => {$(
        #[doc = concat!("Reads ", $reg, ".")]
        #[inline(always)]
        pub fn $read() -> u64 {
            let v: u64;
            // SAFETY: reading a control register has no side effects in ring 0.
            unsafe { asm!(concat!("mov {}, ", $reg), out(reg) v, options(nomem, nostack, preserves_flags)) };
            v
        }
        #[doc = concat!("Writes ", $reg, ".")]
        ///
        /// # Safety
        /// Changes paging, protection or mode state under the running code.
        #[inline(always)]
        pub unsafe fn $write(v: u64) {
            // SAFETY: caller's contract.
            unsafe { asm!(concat!("mov ", $reg, ", {}"), in(reg) v, options(nostack, preserves_flags)) };
        }
    )*};
}

cr_accessors! {
    read_cr0, write_cr0, "cr0";
    read_cr2, write_cr2, "cr2";
    read_cr3, write_cr3, "cr3";
    read_cr4, write_cr4, "cr4";
    read_cr8, write_cr8, "cr8";
    read_dr0, write_dr0, "dr0";
    read_dr1, write_dr1, "dr1";
    read_dr2, write_dr2, "dr2";
    read_dr3, write_dr3, "dr3";
    read_dr6, write_dr6, "dr6";
    read_dr7, write_dr7, "dr7";
}

/// CR0 bits (SDM Vol. 3A, 2.5 "Control Registers").
pub mod cr0 {
    /// Protection enable.
    pub const PE: u64 = 1 << 0;
    /// Monitor coprocessor.
    pub const MP: u64 = 1 << 1;
    /// x87 emulation.
    pub const EM: u64 = 1 << 2;
    /// Task switched.
    pub const TS: u64 = 1 << 3;
    /// Numeric error (native x87 error reporting).
    pub const NE: u64 = 1 << 5;
    /// Supervisor write protect.
    pub const WP: u64 = 1 << 16;
    /// Alignment mask.
    pub const AM: u64 = 1 << 18;
    /// Paging.
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits (SDM Vol. 3A, 2.5 "Control Registers").
pub mod cr4 {
    /// Debugging extensions.
    pub const DE: u64 = 1 << 3;
    /// Page size extensions.
    pub const PSE: u64 = 1 << 4;
    /// Physical address extension.
    pub const PAE: u64 = 1 << 5;
    /// Page global enable.
    pub const PGE: u64 = 1 << 7;
    /// FXSAVE/FXRSTOR and SSE enable.
    pub const OSFXSR: u64 = 1 << 9;
    /// Unmasked SIMD exception support.
    pub const OSXMMEXCPT: u64 = 1 << 10;
    /// User-mode instruction prevention.
    pub const UMIP: u64 = 1 << 11;
    /// 57-bit linear addresses.
    pub const LA57: u64 = 1 << 12;
    /// RDFSBASE etc. enable.
    pub const FSGSBASE: u64 = 1 << 16;
    /// PCID enable.
    pub const PCIDE: u64 = 1 << 17;
    /// XSAVE enable.
    pub const OSXSAVE: u64 = 1 << 18;
    /// Supervisor-mode execution prevention.
    pub const SMEP: u64 = 1 << 20;
    /// Supervisor-mode access prevention.
    pub const SMAP: u64 = 1 << 21;
    /// Protection keys for user pages.
    pub const PKE: u64 = 1 << 22;
}

/// RFLAGS bits.
pub mod rflags {
    /// Carry.
    pub const CF: u64 = 1 << 0;
    /// Zero.
    pub const ZF: u64 = 1 << 6;
    /// Trap (single step).
    pub const TF: u64 = 1 << 8;
    /// Interrupt enable.
    pub const IF: u64 = 1 << 9;
    /// Direction.
    pub const DF: u64 = 1 << 10;
    /// Overflow.
    pub const OF: u64 = 1 << 11;
    /// I/O privilege level (2 bits).
    pub const IOPL: u64 = 3 << 12;
    /// Nested task.
    pub const NT: u64 = 1 << 14;
    /// Resume.
    pub const RF: u64 = 1 << 16;
    /// Alignment check / access control.
    pub const AC: u64 = 1 << 18;
}

/// Reads RFLAGS.
#[inline(always)]
pub fn read_rflags() -> u64 {
    let v: u64;
    // SAFETY: pushfq/pop only touch the stack below RSP.
    unsafe { asm!("pushfq", "pop {}", out(reg) v, options(nomem, preserves_flags)) };
    v
}

/// Reads the time-stamp counter.
#[inline(always)]
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: RDTSC has no side effects (CR4.TSD is never set in ring 0 tests).
    unsafe { asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// Enables maskable interrupts.
///
/// # Safety
/// Handlers for every vector that can arrive must be ready.
#[inline(always)]
pub unsafe fn sti() {
    // SAFETY: caller's contract.
    unsafe { asm!("sti", options(nomem, nostack)) };
}

/// Disables maskable interrupts.
#[inline(always)]
pub fn cli() {
    // SAFETY: masking interrupts is always safe in ring 0.
    unsafe { asm!("cli", options(nomem, nostack)) };
}

/// Halts forever with interrupts disabled.
pub fn hlt_forever() -> ! {
    loop {
        // SAFETY: halting with IF=0 only waits for NMI/INIT/SMI.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Loads GDTR.
///
/// # Safety
/// The table must stay valid and hold the selectors in use.
pub unsafe fn lgdt(p: &DescriptorTablePointer) {
    // SAFETY: caller's contract.
    unsafe { asm!("lgdt [{}]", in(reg) p, options(readonly, nostack, preserves_flags)) };
}

/// Loads IDTR.
///
/// # Safety
/// The table must stay valid.
pub unsafe fn lidt(p: &DescriptorTablePointer) {
    // SAFETY: caller's contract.
    unsafe { asm!("lidt [{}]", in(reg) p, options(readonly, nostack, preserves_flags)) };
}

/// Stores GDTR.
pub fn sgdt() -> DescriptorTablePointer {
    let mut p = DescriptorTablePointer::default();
    // SAFETY: SGDT writes 10 bytes into `p`.
    unsafe { asm!("sgdt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}

/// Stores IDTR.
pub fn sidt() -> DescriptorTablePointer {
    let mut p = DescriptorTablePointer::default();
    // SAFETY: SIDT writes 10 bytes into `p`.
    unsafe { asm!("sidt [{}]", in(reg) &mut p, options(nostack, preserves_flags)) };
    p
}

/// Invalidates the TLB entries for one linear address.
pub fn invlpg(addr: u64) {
    // SAFETY: INVLPG only drops cached translations.
    unsafe { asm!("invlpg [{}]", in(reg) addr, options(nostack, preserves_flags)) };
}

/// Flushes non-global TLB entries by reloading CR3.
pub fn flush_tlb() {
    // SAFETY: rewriting the same CR3 value keeps the address space.
    unsafe { write_cr3(read_cr3()) };
}

/// Sets EFER.NXE when CPUID reports execute-disable, so that page-table
/// entries may use bit 63 (SDM Vol. 3A, 5.1 "Paging Modes and Control Bits").
pub fn enable_nx_if_supported() {
    if has(feature::NX) {
        // SAFETY: NXE only enables the XD bit; no existing entry sets it.
        unsafe { wrmsr(msr::EFER, rdmsr(msr::EFER) | msr::EFER_NXE) };
    }
}

/// Spins for about `us` microseconds using the PIT-independent port 0x80
/// delay (one write is ~1 us on PC hardware; faster under emulation, which
/// is fine for the INIT/SIPI protocol and polling loops).
pub fn io_delay(us: u32) {
    for _ in 0..us {
        // SAFETY: port 0x80 is the POST diagnostic port, writes are harmless.
        unsafe { outb(0x80, 0) };
    }
}

/// Reads a segment register selector, e.g. `read_seg!(cs)`.
#[macro_export]
macro_rules! read_seg {
    ($seg:ident) => {{
        let v: u16;
        // SAFETY: reading a segment selector has no side effects.
        unsafe {
            core::arch::asm!(concat!("mov {0:x}, ", stringify!($seg)), out(reg) v,
                             options(nomem, nostack, preserves_flags))
        };
        v
    }};
}
