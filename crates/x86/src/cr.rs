//! Control registers, EFER, RFLAGS and XCR0 (SDM vol. 3A, 2.5 "Control
//! Registers", 2.2.1 "Extended Feature Enable Register", 2.3 "System Flags
//! and Fields in the EFLAGS Register"; vol. 1, 13.3 "Enabling the XSAVE
//! Feature Set").

use bitflags::bitflags;

bitflags! {
    /// CR0 (SDM vol. 3A, 2.5).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Cr0: u64 {
        /// Protection enable.
        const PE = 1 << 0;
        /// Monitor coprocessor.
        const MP = 1 << 1;
        /// x87 emulation.
        const EM = 1 << 2;
        /// Task switched.
        const TS = 1 << 3;
        /// Extension type (hard-wired to 1).
        const ET = 1 << 4;
        /// Numeric error reporting.
        const NE = 1 << 5;
        /// Write protect for supervisor writes.
        const WP = 1 << 16;
        /// Alignment mask.
        const AM = 1 << 18;
        /// Not write-through.
        const NW = 1 << 29;
        /// Cache disable.
        const CD = 1 << 30;
        /// Paging.
        const PG = 1 << 31;
    }
}

bitflags! {
    /// CR4 (SDM vol. 3A, 2.5).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Cr4: u64 {
        /// Virtual-8086 mode extensions.
        const VME = 1 << 0;
        /// Protected-mode virtual interrupts.
        const PVI = 1 << 1;
        /// Time stamp disable (RDTSC at CPL > 0 faults).
        const TSD = 1 << 2;
        /// Debugging extensions (DR4/DR5 fault, I/O breakpoints).
        const DE = 1 << 3;
        /// Page size extensions (4 MiB pages in 32-bit paging).
        const PSE = 1 << 4;
        /// Physical address extension.
        const PAE = 1 << 5;
        /// Machine-check enable.
        const MCE = 1 << 6;
        /// Page global enable.
        const PGE = 1 << 7;
        /// Performance-monitoring counter enable.
        const PCE = 1 << 8;
        /// OS support for FXSAVE/FXRSTOR.
        const OSFXSR = 1 << 9;
        /// OS support for unmasked SIMD exceptions.
        const OSXMMEXCPT = 1 << 10;
        /// User-mode instruction prevention.
        const UMIP = 1 << 11;
        /// 57-bit linear addresses (5-level paging).
        const LA57 = 1 << 12;
        /// VMX enable.
        const VMXE = 1 << 13;
        /// SMX enable.
        const SMXE = 1 << 14;
        /// RDFSBASE family enable.
        const FSGSBASE = 1 << 16;
        /// Process-context identifiers.
        const PCIDE = 1 << 17;
        /// XSAVE and processor extended states enable.
        const OSXSAVE = 1 << 18;
        /// Supervisor-mode execution prevention.
        const SMEP = 1 << 20;
        /// Supervisor-mode access prevention.
        const SMAP = 1 << 21;
        /// Protection keys for user-mode pages.
        const PKE = 1 << 22;
        /// Control-flow enforcement technology.
        const CET = 1 << 23;
        /// Protection keys for supervisor-mode pages.
        const PKS = 1 << 24;
    }
}

bitflags! {
    /// IA32_EFER (SDM vol. 3A, 2.2.1).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Efer: u64 {
        /// SYSCALL/SYSRET enable.
        const SCE = 1 << 0;
        /// Long mode enable.
        const LME = 1 << 8;
        /// Long mode active (read-only to software).
        const LMA = 1 << 10;
        /// Execute-disable bit enable.
        const NXE = 1 << 11;
    }
}

bitflags! {
    /// RFLAGS (SDM vol. 1, 3.4.3 "EFLAGS Register"; vol. 3A, 2.3).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Rflags: u64 {
        /// Carry.
        const CF = 1 << 0;
        /// Reserved, always 1.
        const FIXED1 = 1 << 1;
        /// Parity.
        const PF = 1 << 2;
        /// Auxiliary carry.
        const AF = 1 << 4;
        /// Zero.
        const ZF = 1 << 6;
        /// Sign.
        const SF = 1 << 7;
        /// Trap (single-step).
        const TF = 1 << 8;
        /// Interrupt enable.
        const IF = 1 << 9;
        /// Direction.
        const DF = 1 << 10;
        /// Overflow.
        const OF = 1 << 11;
        /// I/O privilege level, low bit.
        const IOPL0 = 1 << 12;
        /// I/O privilege level, high bit.
        const IOPL1 = 1 << 13;
        /// Nested task.
        const NT = 1 << 14;
        /// Resume (suppresses instruction breakpoints once).
        const RF = 1 << 16;
        /// Virtual-8086 mode.
        const VM = 1 << 17;
        /// Alignment check / access control (SMAP override).
        const AC = 1 << 18;
        /// Virtual interrupt flag.
        const VIF = 1 << 19;
        /// Virtual interrupt pending.
        const VIP = 1 << 20;
        /// CPUID available.
        const ID = 1 << 21;
    }
}

impl Rflags {
    /// The six arithmetic status flags.
    pub const STATUS: Rflags =
        Rflags::CF.union(Rflags::PF).union(Rflags::AF).union(Rflags::ZF).union(Rflags::SF).union(Rflags::OF);
    /// IOPL as a two-bit field.
    pub const IOPL: Rflags = Rflags::IOPL0.union(Rflags::IOPL1);
}

bitflags! {
    /// XCR0, the XSAVE feature-enable mask (SDM vol. 1, 13.3).
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
    pub struct Xcr0: u64 {
        /// x87 state (must be 1).
        const X87 = 1 << 0;
        /// SSE state (XMM registers and MXCSR).
        const SSE = 1 << 1;
        /// AVX state (upper halves of YMM registers).
        const AVX = 1 << 2;
    }
}
