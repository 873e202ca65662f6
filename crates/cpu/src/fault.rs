//! Architectural exceptions as values (SDM vol. 3A, 6.3 "Sources of
//! Interrupts", 6.13 "Error Code").
//!
//! Every memory access, segment load and instruction returns
//! `Result<T, Fault>`; the fault travels up with `?` to the executor, which
//! delivers it through the IDT. Nothing on that path unwinds.

use x86::vector;

/// An exception raised by an instruction or an access.
///
/// Two words, the first never zero: `Result<(), Fault>`, which every
/// handler returns, is then a scalar pair with a niche and comes back in
/// two registers rather than through memory (measured: the result check
/// after each handler call was the hottest spot of the dispatch loop).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Fault {
    /// Bits 7:0 vector, bit 8 "has an error code", bits 47:16 the error
    /// code, bit 63 always set (the niche).
    info: core::num::NonZeroU64,
    /// The faulting linear address of a #PF (CR2 on delivery).
    addr: u64,
}

const VALID: u64 = 1 << 63;
/// Vector values of the EPT markers (never architectural: 0-31 are).
const EPT_VIOLATION: u8 = 0xfe;
const EPT_MISCONFIG: u8 = 0xfd;
const HAS_CODE: u64 = 1 << 8;

impl Fault {
    const fn pack(vector: u8, code: Option<u32>, addr: u64) -> Fault {
        let mut info = VALID | vector as u64;
        if let Some(c) = code {
            info |= HAS_CODE | ((c as u64) << 16);
        }
        let info = match core::num::NonZeroU64::new(info) {
            Some(n) => n,
            None => core::num::NonZeroU64::MIN, // unreachable: VALID is set
        };
        Fault { info, addr }
    }

    /// The exception vector (0-31).
    #[inline]
    pub const fn vector(&self) -> u8 {
        self.info.get() as u8
    }

    /// The error code, for the vectors that push one.
    #[inline]
    pub const fn error_code(&self) -> Option<u32> {
        if self.info.get() & HAS_CODE != 0 {
            Some((self.info.get() >> 16) as u32)
        } else {
            None
        }
    }

    /// The faulting linear address, for #PF.
    #[inline]
    pub const fn cr2(&self) -> Option<u64> {
        if self.vector() == vector::PF {
            Some(self.addr)
        } else {
            None
        }
    }

    /// An exception without error code.
    pub const fn new(vector: u8) -> Fault {
        Fault::pack(vector, None, 0)
    }
    /// An exception with an error code.
    pub const fn with_code(vector: u8, code: u32) -> Fault {
        Fault::pack(vector, Some(code), 0)
    }
    /// An EPT violation or misconfiguration found while translating a
    /// guest-physical address: not an exception but the cause of a VM
    /// exit, which the processor stages when the fault reaches it (the
    /// vector is one no exception uses; the error code holds the exit
    /// qualification, the address the guest-physical address).
    pub const fn ept(e: crate::ept::EptError) -> Fault {
        let vector = match e {
            crate::ept::EptError::Violation { .. } => EPT_VIOLATION,
            crate::ept::EptError::Misconfig { .. } => EPT_MISCONFIG,
        };
        Fault::pack(vector, Some(e.qualification() as u32), e.gpa())
    }

    /// For an EPT marker: (misconfiguration, qualification,
    /// guest-physical address).
    pub(crate) const fn ept_info(&self) -> Option<(bool, u64, u64)> {
        match self.vector() {
            EPT_VIOLATION | EPT_MISCONFIG => {
                Some((self.vector() == EPT_MISCONFIG, (self.info.get() >> 16) & 0xffff_ffff, self.addr))
            }
            _ => None,
        }
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
        Fault::pack(vector::PF, Some(code), addr)
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

impl core::fmt::Debug for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Fault")
            .field("vector", &self.vector())
            .field("error_code", &self.error_code())
            .field("cr2", &self.cr2())
            .finish()
    }
}

impl core::fmt::Display for Fault {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}", vector::name(self.vector()))?;
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
