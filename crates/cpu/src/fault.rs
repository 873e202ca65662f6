//! Architectural exceptions as values (SDM vol. 3A, 6.3 "Sources of
//! Interrupts", 6.13 "Error Code").
//!
//! Every memory access, segment load and instruction returns
//! `Result<T, Fault>`; the fault travels up with `?` to the executor, which
//! delivers it through the IDT. Nothing on that path unwinds.

use x86::vector;

/// An exception raised by an instruction or an access.
///
/// Sixteen bytes, with a niche in `has_error_code`, so `Result<(), Fault>`
/// — what every handler returns — comes back in two registers instead of
/// through memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fault {
    /// Exception vector (0-31).
    pub vector: u8,
    has_error_code: bool,
    code: u32,
    /// The faulting linear address of a #PF (CR2 on delivery).
    addr: u64,
}

impl Fault {
    /// The error code, for the vectors that push one.
    #[inline]
    pub const fn error_code(&self) -> Option<u32> {
        if self.has_error_code {
            Some(self.code)
        } else {
            None
        }
    }

    /// The faulting linear address, for #PF.
    #[inline]
    pub const fn cr2(&self) -> Option<u64> {
        if self.vector == vector::PF {
            Some(self.addr)
        } else {
            None
        }
    }

    /// An exception without error code.
    pub const fn new(vector: u8) -> Fault {
        Fault { vector, has_error_code: false, code: 0, addr: 0 }
    }
    /// An exception with an error code.
    pub const fn with_code(vector: u8, code: u32) -> Fault {
        Fault { vector, has_error_code: true, code, addr: 0 }
    }
    /// #UD.
    pub const fn ud() -> Fault {
        Fault::new(vector::UD)
    }
    /// #GP(0).
    pub const fn gp0() -> Fault {
        Fault::with_code(vector::GP, 0)
    }
    /// #GP(code).
    pub const fn gp(code: u32) -> Fault {
        Fault::with_code(vector::GP, code)
    }
    /// #SS(code).
    pub const fn ss(code: u32) -> Fault {
        Fault::with_code(vector::SS, code)
    }
    /// #NP(code).
    pub const fn np(code: u32) -> Fault {
        Fault::with_code(vector::NP, code)
    }
    /// #TS(code).
    pub const fn ts(code: u32) -> Fault {
        Fault::with_code(vector::TS, code)
    }
    /// #DE.
    pub const fn de() -> Fault {
        Fault::new(vector::DE)
    }
    /// #NM.
    pub const fn nm() -> Fault {
        Fault::new(vector::NM)
    }
    /// #PF with its error code and faulting address.
    pub const fn pf(code: u32, addr: u64) -> Fault {
        Fault { vector: vector::PF, has_error_code: true, code, addr }
    }
    /// #AC(0).
    pub const fn ac() -> Fault {
        Fault::with_code(vector::AC, 0)
    }
    /// #DB (trap-style debug exception; DR6 is updated by the raiser).
    pub const fn db() -> Fault {
        Fault::new(vector::DB)
    }
    /// #XM.
    pub const fn xm() -> Fault {
        Fault::new(vector::XM)
    }
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", vector::name(self.vector))?;
        if let Some(ec) = self.error_code() {
            write!(f, "({ec:#x})")?;
        }
        if let Some(a) = self.cr2() {
            write!(f, " at {a:#x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handler_results_fit_in_two_registers() {
        assert_eq!(core::mem::size_of::<Result<(), Fault>>(), 16);
    }
}
