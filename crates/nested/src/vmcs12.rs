//! vmcs12: the VMCS that L1 builds for its guest L2, in L1's memory, and
//! L0's cached copy of it.
//!
//! The SDM leaves the format of a VMCS region to the implementation
//! (vol. 3C, 25.2 "Format of the VMCS Region"): only the first eight bytes
//! are architectural, and software must reach every field through VMREAD
//! and VMWRITE (25.11.1 "Software Use of the VMCS and Related
//! Structures"). Turtles' layout of a vmcs12 region (4 KiB, the size
//! IA32_VMX_BASIC reports) is:
//!
//! | bytes                     | contents                                               |
//! |---------------------------|--------------------------------------------------------|
//! | 0-3                       | bits 30:0 VMCS revision identifier, bit 31 shadow-VMCS indicator |
//! | 4-7                       | VMX-abort indicator                                    |
//! | 8-11                      | launch state: 0 clear, 1 launched                      |
//! | 12-15                     | reserved, written as zero                              |
//! | `16 + 8 * slot`, 8 bytes  | the field whose [`VmcsField::slot`] is `slot`, little-endian |
//!
//! The slots of the "high" accesses of 64-bit fields are unused (a high
//! access reads and writes bits 63:32 of its full field's slot) and are
//! written as zero. 16 + 8 * [`VmcsField::COUNT`] bytes fit in the 4 KiB
//! region (checked at compile time).
//!
//! Like a processor, L0 keeps the current VMCS of each L1 vCPU cached
//! ([`Vmcs12`]): VMPTRLD reads the region once, VMREAD and VMWRITE act on
//! the cached copy (emulated here, or executed by the processor on it as
//! a shadow VMCS, [`Vmcs12::swap_vmcs`] and [`shadow_bitmap`]), and VMCLEAR (or a VMPTRLD of another VMCS, or VMXOFF)
//! writes it back, which is what 25.11.3 "Initializing a VMCS" asks
//! software to rely on. L1 writing to the region of its current VMCS with
//! ordinary stores is unsupported by the SDM and has no effect here until
//! the next VMPTRLD.
//!
//! L1's guest-physical addresses are physical addresses under L0 (EPT01
//! maps RAM one to one), so a vmcs12 at L1 address `gpa` is at `gpa` in
//! [`Memory`]. Only RAM is L1's: a region elsewhere (device holes, L0's
//! private pages) reads as all ones and ignores writes.
//!
//! The field access helpers implement the rules of VMREAD and VMWRITE on
//! a field encoding (SDM 25.11.2 "VMREAD, VMWRITE, and Encodings of VMCS
//! Fields" and 31.4 "VM Instruction Error Numbers"): an encoding this
//! model does not know fails with error 12, a VMWRITE to a VM-exit
//! information field fails with error 13 unless IA32_VMX_MISC bit 29
//! allows it, values are truncated to the field's width, and a high access
//! reads or replaces bits 63:32 of its 64-bit field.

use crate::memory;
use cpu::Memory;
use vmx::{LaunchState, VmInstructionError, Vmcs, VmcsField, VmxCaps};
use x86::Gpa;

/// Size of a vmcs12 region (and of the VMXON region) in bytes.
pub const REGION_SIZE: usize = 4096;
/// Offset of the revision identifier.
pub const REVISION_OFFSET: u64 = 0;
/// Offset of the VMX-abort indicator.
pub const ABORT_OFFSET: u64 = 4;
/// Offset of the launch state.
pub const LAUNCH_STATE_OFFSET: u64 = 8;
/// Offset of the first field slot.
pub const FIELDS_OFFSET: usize = 16;
/// Bit 31 of the revision word: the region is a shadow VMCS.
pub const SHADOW_VMCS_INDICATOR: u32 = 1 << 31;

const _: () = assert!(FIELDS_OFFSET + 8 * VmcsField::COUNT <= REGION_SIZE, "vmcs12 fields overflow 4 KiB");

/// Offset of a field's slot in the region; a high access maps to its full
/// field.
pub fn field_offset(field: VmcsField) -> usize {
    FIELDS_OFFSET + 8 * field.full().slot()
}

/// Encoding of the launch state in the region.
const fn launch_state_word(state: LaunchState) -> u32 {
    match state {
        LaunchState::Clear => 0,
        LaunchState::Launched => 1,
    }
}

/// L0's cached copy of a vmcs12 and where it lives in L1's memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vmcs12 {
    gpa: Gpa,
    revision: u32,
    abort: u32,
    vmcs: Box<Vmcs>,
}

impl Vmcs12 {
    /// Reads the region at `gpa` (4 KiB aligned by the callers'
    /// checks). Field values are truncated to their widths as they are
    /// read, so hostile contents cannot produce a value VMWRITE could not;
    /// any launch-state word other than 1 reads as clear.
    pub fn load(mem: &Memory, gpa: Gpa) -> Vmcs12 {
        let mut region = [0u8; REGION_SIZE];
        memory::read_phys(mem, gpa.0, &mut region);
        let word = |off: usize| u32::from_le_bytes([region[off], region[off + 1], region[off + 2], region[off + 3]]);
        let mut vmcs = Box::new(Vmcs::new());
        for &field in VmcsField::ALL.iter().filter(|f| !f.is_high()) {
            let off = field_offset(field);
            let mut b = [0u8; 8];
            b.copy_from_slice(&region[off..off + 8]);
            vmcs.set(field, u64::from_le_bytes(b));
        }
        vmcs.launch_state =
            if word(LAUNCH_STATE_OFFSET as usize) == 1 { LaunchState::Launched } else { LaunchState::Clear };
        Vmcs12 { gpa, revision: word(REVISION_OFFSET as usize), abort: word(ABORT_OFFSET as usize), vmcs }
    }

    /// A fresh cached copy for the region at `gpa`, every field zero and
    /// launch state clear (for tests and for L0 building one itself).
    pub fn new(gpa: Gpa, revision: u32) -> Vmcs12 {
        Vmcs12 { gpa, revision, abort: 0, vmcs: Box::new(Vmcs::new()) }
    }

    /// Writes the cached copy back to its region: header, launch state and
    /// every field slot (what VMCLEAR guarantees, 25.11.3).
    pub fn flush(&self, mem: &mut Memory) {
        let mut region = [0u8; REGION_SIZE];
        region[0..4].copy_from_slice(&self.revision.to_le_bytes());
        region[4..8].copy_from_slice(&self.abort.to_le_bytes());
        region[8..12].copy_from_slice(&launch_state_word(self.vmcs.launch_state).to_le_bytes());
        for &field in VmcsField::ALL.iter().filter(|f| !f.is_high()) {
            let off = field_offset(field);
            region[off..off + 8].copy_from_slice(&self.vmcs.get(field).to_le_bytes());
        }
        memory::write_phys(mem, self.gpa.0, &region);
    }

    /// Writes launch state "clear" into the region at `gpa` without loading
    /// it: VMCLEAR of a VMCS that is not current.
    pub fn clear_in_memory(mem: &mut Memory, gpa: Gpa) {
        memory::write_phys(mem, gpa.0 + LAUNCH_STATE_OFFSET, &launch_state_word(LaunchState::Clear).to_le_bytes());
    }

    /// Where the region lives in L1's memory (the current-VMCS pointer).
    pub fn gpa(&self) -> Gpa {
        self.gpa
    }

    /// The revision word as loaded: bits 30:0 revision identifier, bit 31
    /// shadow-VMCS indicator.
    pub fn revision(&self) -> u32 {
        self.revision
    }

    /// The VMX-abort indicator (written by L0 when a VM exit to L1 fails,
    /// SDM 28.7 "VMX Aborts").
    pub fn abort(&self) -> u32 {
        self.abort
    }

    /// Sets the VMX-abort indicator.
    pub fn set_abort(&mut self, abort: u32) {
        self.abort = abort;
    }

    /// The cached fields and launch state.
    pub fn vmcs(&self) -> &Vmcs {
        &self.vmcs
    }

    /// The cached fields and launch state, writable: L0 writes exit
    /// information and the launch state through this (no read-only rule).
    pub fn vmcs_mut(&mut self) -> &mut Vmcs {
        &mut self.vmcs
    }

    /// Exchanges the cached fields and launch state with `other`, without
    /// copying. L0 lends the fields to its processor this way as the
    /// shadow VMCS L1's VMREAD and VMWRITE reach while L1 runs (SDM 25.10
    /// "VMCS Types: Ordinary and Shadow"), and takes them back the same
    /// way before it reads or writes the cache itself: meanwhile the cache
    /// holds whatever `other` held.
    pub fn swap_vmcs(&mut self, other: &mut Box<Vmcs>) {
        core::mem::swap(&mut self.vmcs, other);
    }

    /// The launch state.
    pub fn launch_state(&self) -> LaunchState {
        self.vmcs.launch_state
    }

    /// VMREAD's view of a field by encoding (the source operand, already
    /// truncated to the operand size): the value, zero-extended from the
    /// field's width, or error 12 for an encoding that names no supported
    /// field (including one with bits above 31 set).
    pub fn read_field(&self, encoding: u64) -> Result<u64, VmInstructionError> {
        self.vmcs.read_encoding(encoding)
    }

    /// VMWRITE's rules on a field by encoding: error 12 for an unsupported
    /// encoding, error 13 for a VM-exit information field unless `caps`
    /// allows VMWRITE to any field (IA32_VMX_MISC bit 29); otherwise the
    /// value is stored truncated to the field's width (a high access
    /// replaces bits 63:32).
    pub fn write_field(&mut self, encoding: u64, value: u64, caps: &VmxCaps) -> Result<(), VmInstructionError> {
        self.vmcs.write_encoding(encoding, value, caps.misc().vmwrite_any_field)
    }
}

/// The field a VMREAD/VMWRITE encoding names, or error 12.
pub use vmx::vmcs::field_of;

/// The VMREAD (`write` false) or VMWRITE bitmap (SDM 25.6.15 "VMCS
/// Shadowing Bitmap Addresses": bit n of the 4 KiB page is for the
/// encodings whose bits 14:0 are n; a set bit exits) with which L0 lets
/// L1 reach the cached vmcs12 through a shadow VMCS: every field it
/// supports for VMREAD, every field VMWRITE can change without error for
/// VMWRITE. Read-only fields and unsupported encodings keep exiting, so
/// L0 still reports their errors 12 and 13 itself, into vmcs12.
pub fn shadow_bitmap(write: bool) -> [u8; REGION_SIZE] {
    let mut bitmap = [0xff; REGION_SIZE];
    for &field in VmcsField::ALL.iter().filter(|f| !(write && f.is_read_only())) {
        let bit = (field.encoding() & 0x7fff) as usize;
        bitmap[bit / 8] &= !(1 << (bit % 8));
    }
    bitmap
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmx::Width;
    use VmcsField as F;

    const GPA: Gpa = Gpa(0x5000);

    fn mem() -> Memory {
        Memory::new(64 * 1024).unwrap()
    }

    fn any_field_caps() -> VmxCaps {
        VmxCaps::turtles()
    }

    fn strict_caps() -> VmxCaps {
        VmxCaps::minimal()
    }

    #[test]
    fn layout_fits_the_region() {
        let end = VmcsField::ALL.iter().map(|&f| field_offset(f) + 8).max().unwrap();
        assert!(end <= REGION_SIZE, "{end}");
        assert_eq!(field_offset(F::VirtualProcessorId), 16);
        assert_eq!(field_offset(F::TscOffsetHigh), field_offset(F::TscOffset));
    }

    #[test]
    fn load_flush_round_trip() {
        let mut m = mem();
        let mut v = Vmcs12::new(GPA, 7);
        for (i, &f) in VmcsField::ALL.iter().enumerate().filter(|(_, f)| !f.is_high()) {
            v.vmcs_mut().set(f, 0x0123_4567_89ab_cdef_u64.rotate_left(i as u32));
        }
        v.vmcs_mut().launch_state = LaunchState::Launched;
        v.set_abort(3);
        v.flush(&mut m);
        assert_eq!(m.read_u32(GPA.0).unwrap(), 7);
        assert_eq!(m.read_u32(GPA.0 + 4).unwrap(), 3);
        assert_eq!(m.read_u32(GPA.0 + 8).unwrap(), 1);
        assert_eq!(m.read_u64(GPA.0 + field_offset(F::GuestRip) as u64).unwrap(), v.vmcs().get(F::GuestRip));
        // High slots stay zero.
        assert_eq!(m.read_u64(GPA.0 + 16 + 8 * F::TscOffsetHigh.slot() as u64).unwrap(), 0);
        let back = Vmcs12::load(&m, GPA);
        assert_eq!(back, v);
    }

    #[test]
    fn load_truncates_hostile_contents() {
        let mut m = mem();
        m.write(GPA.0, &[0xff; REGION_SIZE]).unwrap();
        let v = Vmcs12::load(&m, GPA);
        assert_eq!(v.revision(), u32::MAX);
        assert_eq!(v.launch_state(), LaunchState::Clear);
        assert_eq!(v.vmcs().get(F::GuestCsSelector), 0xffff);
        assert_eq!(v.vmcs().get(F::ExceptionBitmap), 0xffff_ffff);
        assert_eq!(v.vmcs().get(F::GuestRip), u64::MAX);
    }

    #[test]
    fn region_outside_ram_reads_as_ones_and_ignores_writes() {
        let mut m = mem();
        let far = Gpa(0x10_0000);
        let v = Vmcs12::load(&m, far);
        assert_eq!(v.revision(), u32::MAX);
        v.flush(&mut m);
        Vmcs12::clear_in_memory(&mut m, far);
        let private = Gpa(cpu::mem::PRIVATE_BASE);
        assert_eq!(Vmcs12::load(&m, private).revision(), u32::MAX);
    }

    #[test]
    fn clear_in_memory_writes_only_the_launch_state() {
        let mut m = mem();
        let mut v = Vmcs12::new(GPA, 1);
        v.vmcs_mut().launch_state = LaunchState::Launched;
        v.vmcs_mut().set(F::GuestRip, 0x1234);
        v.flush(&mut m);
        Vmcs12::clear_in_memory(&mut m, GPA);
        let back = Vmcs12::load(&m, GPA);
        assert_eq!(back.launch_state(), LaunchState::Clear);
        assert_eq!(back.vmcs().get(F::GuestRip), 0x1234);
    }

    #[test]
    fn every_field_width_reads_and_writes_truncated() {
        let mut v = Vmcs12::new(GPA, 1);
        let caps = any_field_caps();
        for &f in VmcsField::ALL {
            let enc = u64::from(f.encoding());
            v.write_field(enc, u64::MAX, &caps).unwrap();
            let expect = match (f.is_high(), f.width()) {
                (true, _) => 0xffff_ffff,
                (false, Width::Word16) => 0xffff,
                (false, Width::Word32) => 0xffff_ffff,
                (false, Width::Word64 | Width::Natural) => u64::MAX,
            };
            assert_eq!(v.read_field(enc), Ok(expect), "{f}");
            v.write_field(enc, 0, &caps).unwrap();
            assert_eq!(v.read_field(enc), Ok(0), "{f}");
        }
    }

    #[test]
    fn high_access_reads_and_replaces_bits_63_32() {
        let mut v = Vmcs12::new(GPA, 1);
        let caps = strict_caps();
        let full = u64::from(F::EptPointer.encoding());
        let high = u64::from(F::EptPointerHigh.encoding());
        v.write_field(full, 0x1111_2222_3333_4444, &caps).unwrap();
        assert_eq!(v.read_field(high), Ok(0x1111_2222));
        v.write_field(high, 0xdead_beef_aaaa_bbbb, &caps).unwrap();
        assert_eq!(v.read_field(full), Ok(0xaaaa_bbbb_3333_4444));
        assert_eq!(v.read_field(high), Ok(0xaaaa_bbbb));
    }

    #[test]
    fn unsupported_encodings_fail_with_12() {
        let mut v = Vmcs12::new(GPA, 1);
        let caps = any_field_caps();
        let e12 = Err(VmInstructionError::UnsupportedVmcsComponent);
        for enc in [0x0001, 0x6c18 + 0x100, 0x1_0000_681e, 0xffff_ffff, u64::MAX, 0x681e | 1 << 12] {
            assert_eq!(v.read_field(enc), e12, "{enc:#x}");
            assert_eq!(v.write_field(enc, 1, &caps), e12.map(|_: u64| ()), "{enc:#x}");
        }
    }

    #[test]
    fn shadow_bitmaps_pass_supported_fields_and_writable_ones() {
        let read = shadow_bitmap(false);
        let write = shadow_bitmap(true);
        let bit = |b: &[u8; REGION_SIZE], enc: u32| b[(enc as usize & 0x7fff) / 8] & 1 << (enc % 8) != 0;
        let mut passed = 0;
        for enc in 0..0x8000u32 {
            let field = VmcsField::from_encoding(enc);
            assert_eq!(!bit(&read, enc), field.is_some(), "{enc:#x}");
            assert_eq!(!bit(&write, enc), field.is_some_and(|f| !f.is_read_only()), "{enc:#x}");
            passed += usize::from(!bit(&read, enc));
        }
        assert_eq!(passed, VmcsField::COUNT);
        assert!(bit(&write, F::ExitReason.encoding()));
        assert!(!bit(&write, F::GuestRip.encoding()));
    }

    #[test]
    fn read_only_fields_need_vmwrite_any_field() {
        let mut v = Vmcs12::new(GPA, 1);
        let strict = strict_caps();
        assert!(!strict.misc().vmwrite_any_field);
        let loose = any_field_caps();
        assert!(loose.misc().vmwrite_any_field);
        for &f in VmcsField::ALL.iter().filter(|f| f.is_read_only()) {
            let enc = u64::from(f.encoding());
            assert_eq!(v.write_field(enc, 5, &strict), Err(VmInstructionError::VmwriteReadOnlyComponent), "{f}");
            assert_eq!(v.read_field(enc), Ok(0));
            assert_eq!(v.write_field(enc, 5, &loose), Ok(()), "{f}");
            assert_eq!(v.read_field(enc), Ok(5));
        }
        // Other kinds are writable either way.
        assert_eq!(v.write_field(u64::from(F::GuestRip.encoding()), 5, &strict), Ok(()));
    }
}
