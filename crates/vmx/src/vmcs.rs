//! VMCS storage: the contents of one virtual-machine control structure as
//! a processor or a hypervisor holds them (SDM vol. 3C, 25.2 "Format of
//! the VMCS Region", 25.11.1 "Software Use of the VMCS and Related
//! Structures", 25.11.3 "Initializing a VMCS").
//!
//! The SDM leaves the layout of a VMCS region implementation-specific:
//! software reaches fields only through VMREAD and VMWRITE, by encoding.
//! [`Vmcs`] is Turtles' layout: one `u64` per field, indexed by
//! [`VmcsField::slot`], plus the launch state. Turtles' CPU keeps the
//! current VMCS in this form; the nested hypervisor keeps its cached copy
//! of vmcs12 in it too.
//!
//! A 64-bit field and its "high" access share one slot: reading the high
//! access returns bits 63:32, writing it replaces them (25.11.2
//! "VMREAD, VMWRITE, and Encodings of VMCS Fields"). Values are stored
//! truncated to the field's width, so a read never shows bits a narrower
//! field cannot hold.

use crate::check::VmcsRead;
use crate::error::VmInstructionError;
use crate::field::VmcsField;

/// The launch state of a VMCS (SDM 25.1 "Overview", 25.11.3): VMLAUNCH
/// needs "clear", VMRESUME needs "launched", VMCLEAR makes it clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LaunchState {
    /// After VMCLEAR: VMLAUNCH may enter with it.
    #[default]
    Clear,
    /// After a successful VMLAUNCH: VMRESUME enters with it.
    Launched,
}

/// Which group of VM-entry checks a field feeds, so that a processor can
/// re-run only the checks whose fields were written since they last
/// passed (hardware keeps such implementation state in the VMCS region
/// too, SDM 25.2 "Format of the VMCS Region").
pub mod check_group {
    use crate::field::{FieldKind, VmcsField};

    /// Control fields: they feed every check.
    pub const CONTROLS: u8 = 1;
    /// Host-state fields: the host-state checks.
    pub const HOST: u8 = 2;
    /// Guest-state fields: the guest-state checks.
    pub const GUEST: u8 = 4;
    /// Guest RIP alone (a hypervisor moving past an instruction): the RIP
    /// checks.
    pub const RIP: u8 = 8;
    /// The arithmetic flags of guest RFLAGS alone (what VMX instructions
    /// and most emulation change): the RFLAGS checks.
    pub const RFLAGS: u8 = 16;
    /// Every group.
    pub const ALL: u8 = CONTROLS | HOST | GUEST | RIP | RFLAGS;

    /// The groups writing `field` invalidates.
    pub const fn of(field: VmcsField) -> u8 {
        match field {
            VmcsField::GuestRip => RIP,
            // No check reads RSP.
            VmcsField::GuestRsp => 0,
            _ => match field.kind() {
                FieldKind::Control => CONTROLS,
                FieldKind::HostState => HOST,
                FieldKind::GuestState => GUEST,
                FieldKind::ReadOnlyData => 0,
            },
        }
    }
}

/// CF, PF, AF, ZF, SF, OF.
const ARITHMETIC_FLAGS: u64 = 0x8d5;

/// The check groups a change of full field `field` from `old` to `new`
/// invalidates. Writing the value a field already holds invalidates
/// nothing: the checks that passed saw that value.
#[inline(always)]
fn changed_groups(field: VmcsField, old: u64, new: u64) -> u8 {
    match field {
        // The arithmetic flags (what VMX instructions and most emulation
        // change) feed only the RFLAGS checks.
        VmcsField::GuestRflags if (old ^ new) & !ARITHMETIC_FLAGS == 0 => check_group::RFLAGS,
        _ => check_group::of(field),
    }
}

/// The fields of one VMCS and its launch state.
#[derive(Clone, PartialEq, Eq)]
pub struct Vmcs {
    values: [u64; VmcsField::COUNT],
    /// Launch state.
    pub launch_state: LaunchState,
    /// Check groups ([`check_group`]) of the fields [`Vmcs::set`] changed
    /// since [`Vmcs::clear_written`]; all of them for a new VMCS.
    written: u8,
}

impl Default for Vmcs {
    fn default() -> Self {
        Vmcs::new()
    }
}

impl core::fmt::Debug for Vmcs {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let mut m = f.debug_map();
        for &field in VmcsField::ALL {
            let v = self.get(field);
            if !field.is_high() && v != 0 {
                m.entry(&field.name(), &format_args!("{v:#x}"));
            }
        }
        m.finish()
    }
}

impl Vmcs {
    /// A VMCS with every field zero and launch state clear.
    pub const fn new() -> Vmcs {
        Vmcs { values: [0; VmcsField::COUNT], launch_state: LaunchState::Clear, written: check_group::ALL }
    }

    /// The value of a field; a high access reads bits 63:32 of its field.
    #[inline(always)]
    pub fn get(&self, field: VmcsField) -> u64 {
        if field.is_high() {
            self.values[field.full_slot()] >> 32
        } else {
            self.values[field.slot()]
        }
    }

    /// Sets a field, truncated to its width; a high access replaces bits
    /// 63:32 of its field. No read-only check: that is VMWRITE's rule, and
    /// the processor writes exit-information fields itself.
    #[inline(always)]
    pub fn set(&mut self, field: VmcsField, value: u64) {
        let slot = field.full_slot();
        let old = self.values[slot];
        let new = if field.is_high() { (old & 0xffff_ffff) | (value << 32) } else { value & field.width().mask() };
        if new != old {
            // A high access has its field's kind and is never RFLAGS.
            self.written |= changed_groups(field, old, new);
            self.values[slot] = new;
        }
    }

    /// Copies the fields whose slots are listed from `src`, recording the
    /// check groups of the ones that change as [`Vmcs::set`] does (the
    /// bulk moves of a nested hypervisor: vmcs12 into vmcs02 and back).
    /// `slots` holds slot numbers of full fields ([`VmcsField::slot`]).
    #[inline]
    pub fn copy_slots(&mut self, src: &Vmcs, slots: &[u16]) {
        for &s in slots {
            let s = usize::from(s);
            let (Some(&new), Some(&old)) = (src.values.get(s), self.values.get(s)) else { continue };
            if new != old {
                self.written |= changed_groups(VmcsField::ALL[s], old, new);
                self.values[s] = new;
            }
        }
    }

    /// The check groups whose fields changed since
    /// [`Vmcs::clear_written`] (a write of the value a field holds is no
    /// change).
    #[inline]
    pub fn written(&self) -> u8 {
        self.written
    }

    /// Records that every check passed on the current contents.
    #[inline]
    pub fn clear_written(&mut self) {
        self.written = 0;
    }

    /// Requires every check again (a failed entry, contents changed
    /// behind [`Vmcs::slots_mut`]).
    #[inline]
    pub fn mark_all_written(&mut self) {
        self.written = check_group::ALL;
    }

    /// All fields by slot ([`VmcsField::slot`]), for code that moves many
    /// fields at once (VM entry and exit). Bypasses the width truncation
    /// of [`Vmcs::set`]: callers store values that fit their fields.
    #[inline(always)]
    pub fn slots(&self) -> &[u64; VmcsField::COUNT] {
        &self.values
    }

    /// All fields by slot, writable; see [`Vmcs::slots`]. Writes here are
    /// not recorded in [`Vmcs::written`]: for the processor's own saves.
    #[inline(always)]
    pub fn slots_mut(&mut self) -> &mut [u64; VmcsField::COUNT] {
        &mut self.values
    }

    /// Every field set to zero, launch state clear.
    pub fn reset(&mut self) {
        *self = Vmcs::new();
    }

    /// VMREAD's view of a field by encoding (the source operand, already
    /// truncated to the operand size): the value, zero-extended from the
    /// field's width, or error 12 for an encoding that names no supported
    /// field, including one with bits above 31 set (SDM 25.11.2 "VMREAD,
    /// VMWRITE, and Encodings of VMCS Fields"; 31.4 "VM Instruction Error
    /// Numbers").
    #[inline]
    pub fn read_encoding(&self, encoding: u64) -> Result<u64, VmInstructionError> {
        Ok(self.get(field_of(encoding)?))
    }

    /// VMWRITE's rules on a field by encoding: error 12 for an unsupported
    /// encoding, error 13 for a VM-exit information field unless
    /// `vmwrite_any_field` (IA32_VMX_MISC bit 29); otherwise the value is
    /// stored truncated to the field's width (a high access replaces bits
    /// 63:32), through [`Vmcs::set`], so the write counts in
    /// [`Vmcs::written`].
    #[inline]
    pub fn write_encoding(
        &mut self,
        encoding: u64,
        value: u64,
        vmwrite_any_field: bool,
    ) -> Result<(), VmInstructionError> {
        let field = field_of(encoding)?;
        if field.is_read_only() && !vmwrite_any_field {
            return Err(VmInstructionError::VmwriteReadOnlyComponent);
        }
        self.set(field, value & field.value_mask());
        Ok(())
    }
}

/// The field a VMREAD/VMWRITE encoding names, or error 12.
#[inline]
pub fn field_of(encoding: u64) -> Result<VmcsField, VmInstructionError> {
    u32::try_from(encoding).ok().and_then(VmcsField::lookup).ok_or(VmInstructionError::UnsupportedVmcsComponent)
}

impl VmcsRead for Vmcs {
    fn read(&self, field: VmcsField) -> u64 {
        self.get(field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use VmcsField as F;

    #[test]
    fn slots_are_dense_and_distinct() {
        for (i, &f) in VmcsField::ALL.iter().enumerate() {
            assert_eq!(f.slot(), i, "{f}");
            assert_eq!(f.slot_const(), i, "{f}");
        }
    }

    #[test]
    fn values_are_truncated_to_the_field_width() {
        let mut v = Vmcs::new();
        v.set(F::GuestCsSelector, 0x1_2345);
        assert_eq!(v.get(F::GuestCsSelector), 0x2345);
        v.set(F::ExceptionBitmap, u64::MAX);
        assert_eq!(v.get(F::ExceptionBitmap), 0xffff_ffff);
        v.set(F::GuestRip, u64::MAX);
        assert_eq!(v.get(F::GuestRip), u64::MAX);
    }

    #[test]
    fn high_access_shares_the_slot_of_its_field() {
        let mut v = Vmcs::new();
        v.set(F::TscOffset, 0x1111_2222_3333_4444);
        assert_eq!(v.get(F::TscOffsetHigh), 0x1111_2222);
        v.set(F::TscOffsetHigh, 0xaaaa_bbbb);
        assert_eq!(v.get(F::TscOffset), 0xaaaa_bbbb_3333_4444);
        assert_eq!(v.read(F::TscOffset), 0xaaaa_bbbb_3333_4444);
    }

    /// Each write invalidates the checks that can see it, and no others.
    #[test]
    fn writes_mark_their_check_groups() {
        use check_group as g;
        let mut v = Vmcs::new();
        v.set(F::GuestRflags, 0x202);
        let mut marks = |f: F, value: u64| {
            v.clear_written();
            v.set(f, value);
            v.written()
        };
        assert_eq!(marks(F::GuestRip, 0x1000), g::RIP);
        assert_eq!(marks(F::GuestRsp, 0x1000), 0, "no check reads RSP");
        assert_eq!(marks(F::GuestRflags, 0x203), g::RFLAGS, "CF alone");
        assert_eq!(marks(F::GuestRflags, 0x303), g::GUEST, "TF is not arithmetic");
        assert_eq!(marks(F::GuestCr0, 0x31), g::GUEST);
        assert_eq!(marks(F::HostRip, 0x1000), g::HOST);
        assert_eq!(marks(F::ExceptionBitmap, 1), g::CONTROLS);
        assert_eq!(marks(F::ExitQualification, 1), 0, "exit information is read-only data");
    }

    #[test]
    fn only_changes_mark_check_groups() {
        use check_group as g;
        let mut v = Vmcs::new();
        v.set(F::GuestCsSelector, 8);
        v.set(F::HostRip, 0x1000);
        v.set(F::GuestRflags, 2);
        v.clear_written();
        // Same values, including through the high access and a wider
        // value that truncates to the same field value.
        v.set(F::GuestCsSelector, 0x1_0008);
        v.set(F::HostRip, 0x1000);
        v.set(F::TscOffsetHigh, 0);
        assert_eq!(v.written(), 0);
        v.set(F::GuestRflags, 2 | 1);
        assert_eq!(v.written(), g::RFLAGS);
        v.set(F::GuestRflags, 2 | 1 << 9);
        assert_eq!(v.written(), g::RFLAGS | g::GUEST);
        v.set(F::TscOffsetHigh, 1);
        assert_eq!(v.written(), g::RFLAGS | g::GUEST | g::CONTROLS);
        assert_eq!(v.get(F::TscOffset), 1 << 32);
    }

    #[test]
    fn copy_slots_copies_and_marks_what_changed() {
        use check_group as g;
        let mut a = Vmcs::new();
        let mut b = Vmcs::new();
        a.set(F::GuestRip, 5);
        a.set(F::GuestCsSelector, 8);
        a.set(F::HostRip, 9);
        b.set(F::GuestCsSelector, 8);
        b.clear_written();
        let slots = [F::GuestRip, F::GuestCsSelector].map(|f| f.slot() as u16);
        b.copy_slots(&a, &slots);
        assert_eq!(b.get(F::GuestRip), 5);
        assert_eq!(b.get(F::HostRip), 0);
        assert_eq!(b.written(), g::RIP);
        // Out-of-range slots are ignored.
        b.copy_slots(&a, &[u16::MAX]);
        assert_eq!(b.written(), g::RIP);
    }

    #[test]
    fn reset_clears_fields_and_launch_state() {
        let mut v = Vmcs::new();
        v.set(F::GuestRip, 5);
        v.launch_state = LaunchState::Launched;
        v.reset();
        assert_eq!(v, Vmcs::new());
    }
}
