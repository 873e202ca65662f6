//! Exception and interrupt vectors (SDM vol. 3A, 6.3.1 "Exceptions and
//! Interrupts", table 6-1).

/// Divide error.
pub const DE: u8 = 0;
/// Debug exception.
pub const DB: u8 = 1;
/// Non-maskable interrupt.
pub const NMI: u8 = 2;
/// Breakpoint (INT3).
pub const BP: u8 = 3;
/// Overflow (INTO).
pub const OF: u8 = 4;
/// BOUND range exceeded.
pub const BR: u8 = 5;
/// Invalid opcode.
pub const UD: u8 = 6;
/// Device not available.
pub const NM: u8 = 7;
/// Double fault.
pub const DF: u8 = 8;
/// Invalid TSS.
pub const TS: u8 = 10;
/// Segment not present.
pub const NP: u8 = 11;
/// Stack-segment fault.
pub const SS: u8 = 12;
/// General protection.
pub const GP: u8 = 13;
/// Page fault.
pub const PF: u8 = 14;
/// x87 floating-point error.
pub const MF: u8 = 16;
/// Alignment check.
pub const AC: u8 = 17;
/// Machine check.
pub const MC: u8 = 18;
/// SIMD floating-point exception.
pub const XM: u8 = 19;
/// Virtualization exception.
pub const VE: u8 = 20;
/// Control-protection exception.
pub const CP: u8 = 21;

/// Whether the exception pushes an error code (SDM vol. 3A, 6.13 "Error
/// Code").
pub const fn has_error_code(vector: u8) -> bool {
    matches!(vector, DF | TS | NP | SS | GP | PF | AC | CP)
}

/// Exception classes for double-fault detection (SDM vol. 3A, 6.15,
/// "Interrupt 8—Double Fault Exception (#DF)", table 6-4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// #DB, NMI, #BP, #OF, #BR, #UD, #NM, #MF, #AC, #MC, #XM and
    /// external interrupts.
    Benign,
    /// #DE, #TS, #NP, #SS, #GP.
    Contributory,
    /// #PF (and #VE).
    PageFault,
    /// #DF itself.
    DoubleFault,
}

/// The class of an exception vector.
pub const fn class(vector: u8) -> ExceptionClass {
    match vector {
        DE | TS | NP | SS | GP | CP => ExceptionClass::Contributory,
        PF | VE => ExceptionClass::PageFault,
        DF => ExceptionClass::DoubleFault,
        _ => ExceptionClass::Benign,
    }
}

/// Short mnemonic of an exception vector, as the SDM names it.
pub const fn name(vector: u8) -> &'static str {
    match vector {
        DE => "#DE",
        DB => "#DB",
        NMI => "NMI",
        BP => "#BP",
        OF => "#OF",
        BR => "#BR",
        UD => "#UD",
        NM => "#NM",
        DF => "#DF",
        TS => "#TS",
        NP => "#NP",
        SS => "#SS",
        GP => "#GP",
        PF => "#PF",
        MF => "#MF",
        AC => "#AC",
        MC => "#MC",
        XM => "#XM",
        VE => "#VE",
        CP => "#CP",
        _ => "INT",
    }
}
