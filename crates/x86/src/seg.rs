//! Segment descriptors (SDM vol. 3A, 3.4.5 "Segment Descriptors", 3.5
//! "System Descriptor Types", 6.11 "IDT Descriptors", 7.2.2 "TSS
//! Descriptor").

/// Segment register numbers in the order x86 encodes them.
pub mod sreg {
    /// ES.
    pub const ES: usize = 0;
    /// CS.
    pub const CS: usize = 1;
    /// SS.
    pub const SS: usize = 2;
    /// DS.
    pub const DS: usize = 3;
    /// FS.
    pub const FS: usize = 4;
    /// GS.
    pub const GS: usize = 5;
}

/// Access-rights bits of a descriptor, in the layout of bits 40..56 of the
/// descriptor shifted down by 40 (the same layout VMX uses for segment
/// access rights, SDM vol. 3C, 24.4.1).
pub mod ar {
    /// Accessed (code/data) or busy (TSS) bit in the type field.
    pub const ACCESSED: u32 = 1 << 0;
    /// Writable (data) or readable (code).
    pub const RW: u32 = 1 << 1;
    /// Expand-down (data) or conforming (code).
    pub const DC: u32 = 1 << 2;
    /// Code segment.
    pub const CODE: u32 = 1 << 3;
    /// Descriptor type: 1 = code/data, 0 = system.
    pub const S: u32 = 1 << 4;
    /// Shift of the DPL field.
    pub const DPL_SHIFT: u32 = 5;
    /// Present.
    pub const P: u32 = 1 << 7;
    /// Available for software.
    pub const AVL: u32 = 1 << 12;
    /// 64-bit code segment.
    pub const L: u32 = 1 << 13;
    /// Default operation size (1 = 32-bit).
    pub const DB: u32 = 1 << 14;
    /// Granularity (limit in 4 KiB units).
    pub const G: u32 = 1 << 15;
    /// VMX "segment unusable" marker.
    pub const UNUSABLE: u32 = 1 << 16;
}

/// System descriptor types (SDM vol. 3A, table 3-2).
pub mod sys {
    /// 16-bit TSS (available).
    pub const TSS16_AVAIL: u32 = 1;
    /// LDT.
    pub const LDT: u32 = 2;
    /// 16-bit TSS (busy).
    pub const TSS16_BUSY: u32 = 3;
    /// 16-bit call gate.
    pub const CALL16: u32 = 4;
    /// Task gate.
    pub const TASK: u32 = 5;
    /// 16-bit interrupt gate.
    pub const INT16: u32 = 6;
    /// 16-bit trap gate.
    pub const TRAP16: u32 = 7;
    /// 32/64-bit TSS (available).
    pub const TSS_AVAIL: u32 = 9;
    /// 32/64-bit TSS (busy).
    pub const TSS_BUSY: u32 = 11;
    /// 32/64-bit call gate.
    pub const CALL: u32 = 12;
    /// 32/64-bit interrupt gate.
    pub const INT: u32 = 14;
    /// 32/64-bit trap gate.
    pub const TRAP: u32 = 15;
}

/// A decoded 8-byte segment descriptor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Descriptor {
    /// Base address (low 32 bits; system descriptors in long mode extend
    /// it with the next 8 bytes).
    pub base: u32,
    /// Limit scaled by the granularity bit, in bytes minus one.
    pub limit: u32,
    /// Access rights in the [`ar`] layout.
    pub ar: u32,
}

impl Descriptor {
    /// Decodes the raw 8 bytes of a descriptor.
    pub const fn from_raw(raw: u64) -> Descriptor {
        let limit_raw = ((raw & 0xffff) | ((raw >> 32) & 0xf_0000)) as u32;
        let base = (((raw >> 16) & 0xff_ffff) | ((raw >> 32) & 0xff00_0000)) as u32;
        let ar = ((raw >> 40) & 0xf0ff) as u32;
        let limit = if ar & ar::G != 0 { (limit_raw << 12) | 0xfff } else { limit_raw };
        Descriptor { base, limit, ar }
    }
    /// The type field (4 bits).
    pub const fn typ(&self) -> u32 {
        self.ar & 0xf
    }
    /// The descriptor privilege level.
    pub const fn dpl(&self) -> u8 {
        ((self.ar >> ar::DPL_SHIFT) & 3) as u8
    }
    /// Present bit.
    pub const fn present(&self) -> bool {
        self.ar & ar::P != 0
    }
    /// Code or data (not system) descriptor.
    pub const fn is_code_data(&self) -> bool {
        self.ar & ar::S != 0
    }
    /// Code segment.
    pub const fn is_code(&self) -> bool {
        self.is_code_data() && self.ar & ar::CODE != 0
    }
}

/// A decoded gate descriptor (call, interrupt, trap or task gate).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Gate {
    /// Target code-segment selector (TSS selector for task gates).
    pub selector: u16,
    /// Target offset (low 32 bits; 64-bit gates add the high half).
    pub offset: u64,
    /// Gate type ([`sys`]).
    pub typ: u32,
    /// Gate DPL.
    pub dpl: u8,
    /// Present.
    pub present: bool,
    /// Interrupt-stack-table index (64-bit IDT gates).
    pub ist: u8,
    /// Parameter count (call gates).
    pub param_count: u8,
}

impl Gate {
    /// Decodes the low 8 bytes of a gate; `high` is the second 8 bytes of a
    /// 16-byte long-mode gate (0 otherwise).
    pub const fn from_raw(raw: u64, high: u64) -> Gate {
        Gate {
            selector: (raw >> 16) as u16,
            offset: (raw & 0xffff) | ((raw >> 32) & 0xffff_0000) | ((high & 0xffff_ffff) << 32),
            typ: ((raw >> 40) & 0xf) as u32,
            dpl: ((raw >> 45) & 3) as u8,
            present: raw & (1 << 47) != 0,
            ist: ((raw >> 32) & 7) as u8,
            param_count: ((raw >> 32) & 0x1f) as u8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flat_code64_descriptor() {
        // 0x00af9b000000ffff: 64-bit code, present, DPL0, G=1, limit 0xfffff.
        let d = Descriptor::from_raw(0x00af_9b00_0000_ffff);
        assert_eq!(d.base, 0);
        assert_eq!(d.limit, 0xffff_ffff);
        assert!(d.is_code());
        assert!(d.ar & ar::L != 0);
        assert_eq!(d.dpl(), 0);
        assert_eq!(d.typ(), 0xb);
    }

    #[test]
    fn gate_decodes_offset_and_ist() {
        let raw = 0x1234_8e01_0008_5678u64;
        let g = Gate::from_raw(raw, 0xffff_ffff);
        assert_eq!(g.selector, 8);
        assert_eq!(g.offset, 0xffff_ffff_1234_5678);
        assert_eq!(g.typ, sys::INT);
        assert_eq!(g.ist, 1);
        assert!(g.present);
    }
}
