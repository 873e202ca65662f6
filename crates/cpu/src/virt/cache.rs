//! Guest state kept in the processor between a VM exit and the next VM
//! entry (SDM vol. 3C, 25.1 "Overview" and 25.11.1 "Software Use of
//! Virtual-Machine Control Structures": a processor may keep the data of
//! an active VMCS on chip, and only VMCLEAR guarantees that memory holds
//! it).
//!
//! A VM exit followed by a VM entry of the same VMCS writes every
//! guest-register field on the way out and reads every one back on the
//! way in; with nothing changed in between, that is about ninety copies
//! for nothing. So when the round trip is exact — the exit saves every
//! register the entry loads (`Controls::round_trip`) and neither MSR list
//! moves a register behind the VMCS's back — the exit leaves the guest's
//! registers in [`Cpu::regs`] ("parked") and the VMCS's guest-register
//! fields stale, and defers loading host state:
//!
//! - the exit still writes the few register fields that exit handlers
//!   and the RIP entry checks read (RIP, RSP, CR0, CR3, CR4, EFER, CS
//!   access rights); VMREAD of any other guest-register
//!   field answers from the parked registers ([`Cpu::live_guest_field`]),
//!   and the entry checks see the same view ([`LiveView`]);
//! - VMWRITE of RIP, RSP or RFLAGS (what an exit handler moves) writes
//!   through to both; any other guest-register write first writes the
//!   parked registers back and loads host state ([`Cpu::load_host_context`]),
//!   after which everything is as after an ordinary exit;
//! - the next entry of the same VMCS, if still exact, skips loading
//!   guest registers: they are already there.
//!
//! Everything that needs the root-mode processor state (running code in
//! root operation, L0's instruction emulator, RDMSR/WRMSR for L0, another
//! VMCS, direct access to the VMCS) loads host context first, so no one
//! can observe the difference except by timing.

use super::slots as S;
use super::Controls;
use crate::state::Regs;
use crate::Cpu;
use vmx::controls::{EntryCtls, ExitCtls};
use vmx::{check::VmcsRead, Vmcs, VmcsField};

impl Controls {
    /// Whether an exit and the next entry under these controls leave every
    /// guest register as it was: each register the exit replaces with
    /// host state is saved by the exit and loaded again by the entry.
    pub(crate) fn round_trip(entry: EntryCtls, exit: ExitCtls) -> bool {
        let debug = entry.contains(EntryCtls::LOAD_DEBUG_CONTROLS) && exit.contains(ExitCtls::SAVE_DEBUG_CONTROLS);
        let efer = entry.contains(EntryCtls::LOAD_EFER) && exit.contains(ExitCtls::SAVE_EFER);
        let pat = if exit.contains(ExitCtls::LOAD_PAT) || entry.contains(EntryCtls::LOAD_PAT) {
            entry.contains(EntryCtls::LOAD_PAT) && exit.contains(ExitCtls::SAVE_PAT)
        } else {
            true
        };
        debug && efer && pat
    }
}

/// The guest-register fields a parking exit still writes (cheap, and what
/// exit handlers and the RIP entry checks read): their VMCS copy stays
/// current. RFLAGS is not among them: its status flags are computed
/// lazily and cost more than the rest.
const WRITTEN_AT_PARK: [usize; 7] =
    [S::GUEST_RIP, S::GUEST_RSP, S::GUEST_CR0, S::GUEST_CR3, S::GUEST_CR4, S::GUEST_EFER, S::GUEST_SEGS[1][3]];

/// The guest-register fields whose VMCS copy is stale while the guest is
/// parked: every one [`saved_register`] answers, except
/// [`WRITTEN_AT_PARK`].
static PARKED_SLOT: [bool; VmcsField::COUNT] = {
    let mut t = [false; VmcsField::COUNT];
    let singles = [
        S::GUEST_RFLAGS,
        S::GUEST_DR7,
        S::GUEST_DEBUGCTL,
        S::GUEST_SYSENTER_CS,
        S::GUEST_SYSENTER_ESP,
        S::GUEST_SYSENTER_EIP,
        S::GUEST_PAT,
        S::GUEST_GDTR_BASE,
        S::GUEST_GDTR_LIMIT,
        S::GUEST_IDTR_BASE,
        S::GUEST_IDTR_LIMIT,
    ];
    let mut i = 0;
    while i < singles.len() {
        t[singles[i]] = true;
        i += 1;
    }
    let mut s = 0;
    while s < S::GUEST_SEGS.len() {
        let mut j = 0;
        while j < 4 {
            t[S::GUEST_SEGS[s][j]] = true;
            j += 1;
        }
        s += 1;
    }
    t[S::GUEST_SEGS[1][3]] = false;
    t
};

/// The value 28.3 "Saving Guest State" would write into the field in
/// `slot` from registers `r` under exit controls `exit`; `None` for
/// fields that are not guest registers or that `exit` does not save (the
/// VMCS keeps what it had). `rflags` is RFLAGS with the status flags
/// materialized. [`super::exit::write_guest_registers`] writes the same
/// values in bulk (a test holds the two together).
pub(super) fn saved_register(r: &Regs, rflags: impl Fn() -> u64, exit: ExitCtls, slot: usize) -> Option<u64> {
    let value = match slot {
        S::GUEST_RIP => r.rip,
        S::GUEST_RSP => r.gpr[4],
        S::GUEST_RFLAGS => rflags(),
        S::GUEST_CR0 => r.cr0,
        S::GUEST_CR3 => r.cr3,
        S::GUEST_CR4 => r.cr4,
        S::GUEST_DR7 if exit.contains(ExitCtls::SAVE_DEBUG_CONTROLS) => r.dr[7],
        S::GUEST_DEBUGCTL if exit.contains(ExitCtls::SAVE_DEBUG_CONTROLS) => r.msr.debugctl,
        S::GUEST_SYSENTER_CS => r.msr.sysenter_cs & 0xffff_ffff,
        S::GUEST_SYSENTER_ESP => r.msr.sysenter_esp,
        S::GUEST_SYSENTER_EIP => r.msr.sysenter_eip,
        S::GUEST_PAT if exit.contains(ExitCtls::SAVE_PAT) => r.msr.pat,
        S::GUEST_EFER if exit.contains(ExitCtls::SAVE_EFER) => r.efer,
        S::GUEST_GDTR_BASE => r.gdtr.base,
        S::GUEST_GDTR_LIMIT => u64::from(r.gdtr.limit),
        S::GUEST_IDTR_BASE => r.idtr.base,
        S::GUEST_IDTR_LIMIT => u64::from(r.idtr.limit),
        _ => {
            let segs = [&r.seg[0], &r.seg[1], &r.seg[2], &r.seg[3], &r.seg[4], &r.seg[5], &r.ldtr, &r.tr];
            let (f, s) = S::GUEST_SEGS.iter().zip(segs).find(|(f, _)| f.contains(&slot))?;
            match f.iter().position(|&x| x == slot)? {
                0 => u64::from(s.selector),
                1 => s.base,
                2 => u64::from(s.limit),
                _ => u64::from(s.ar & 0x1_f0ff),
            }
        }
    };
    Some(value)
}

/// The current VMCS as software sees it while the guest's registers are
/// parked: guest-register fields from the registers, the rest from the
/// VMCS. The VM-entry checks read it.
pub(super) struct LiveView<'a> {
    pub(super) cpu: &'a Cpu,
    pub(super) vmcs: &'a Vmcs,
}

impl VmcsRead for LiveView<'_> {
    fn read(&self, field: VmcsField) -> u64 {
        self.cpu.live_guest_field(field).unwrap_or_else(|| self.vmcs.get(field))
    }
}

impl Cpu {
    /// The end of an exact VM exit: the guest's registers stay parked and
    /// host state is not loaded (see the module documentation).
    pub(super) fn park_guest(&mut self) {
        self.write_park_copies();
        self.non_root = false;
        self.vmx.guest_live = true;
        self.vmx.live_rflags = false;
        self.vmx.preemption_deadline = u64::MAX;
        // Activity and interrupt-shadow state stay the guest's too: the
        // exit saved them, and an entry that finds their fields unwritten
        // needs them back as they are.
        self.events |= crate::events::VM_EXIT | crate::events::STOP;
    }

    /// Writes the [`WRITTEN_AT_PARK`] fields from the parked registers.
    pub(super) fn write_park_copies(&mut self) {
        if let Some(v) = self.vmx.current.as_deref_mut() {
            // WRITTEN_AT_PARK, as write_guest_registers writes them (EFER
            // is saved: the round trip is exact).
            let (a, r) = (v.slots_mut(), &self.regs);
            a[S::GUEST_RIP] = r.rip;
            a[S::GUEST_RSP] = r.gpr[4];
            a[S::GUEST_CR0] = r.cr0;
            a[S::GUEST_CR3] = r.cr3;
            a[S::GUEST_CR4] = r.cr4;
            a[S::GUEST_EFER] = r.efer;
            a[S::GUEST_SEGS[1][3]] = u64::from(r.seg[x86::seg::sreg::CS].ar & 0x1_f0ff);
        }
    }

    /// Whether the guest's registers are parked in the processor (root
    /// operation after an exact exit).
    #[inline(always)]
    pub(crate) fn guest_parked(&self) -> bool {
        self.vmx.guest_live
    }

    /// A guest-register field of the current VMCS, read from the parked
    /// registers; `None` when the registers are not parked or the field is
    /// not one of them.
    #[inline(always)]
    pub(crate) fn live_guest_field(&self, field: VmcsField) -> Option<u64> {
        if !self.vmx.guest_live {
            return None;
        }
        // With a constant field (most VMREADs) this folds away unless the
        // field is parked.
        let slot = if field.is_high() { field.full().slot() } else { field.slot() };
        if !PARKED_SLOT[slot] {
            return None;
        }
        self.parked_field(field, slot)
    }

    #[cold]
    fn parked_field(&self, field: VmcsField, slot: usize) -> Option<u64> {
        // RFLAGS written through holds software's exact value (reserved
        // bits included, for the entry checks to see).
        if slot == S::GUEST_RFLAGS && self.vmx.live_rflags {
            return None;
        }
        let x = saved_register(&self.regs, || self.regs.rflags(), self.vmx.ctls.exit, slot)?;
        // PAT and DEBUGCTL have high halves.
        Some(if field.is_high() { x >> 32 } else { x & field.width().mask() })
    }

    /// VMWRITE of a guest-register field while the registers are parked:
    /// RIP, RSP and RFLAGS go to both the registers and the VMCS; any
    /// other field ends parking first. Returns after the registers are
    /// consistent with the write the caller then makes to the VMCS.
    pub(super) fn write_parked(&mut self, field: VmcsField, value: u64) {
        match field {
            VmcsField::GuestRip => self.regs.rip = value,
            VmcsField::GuestRsp => self.regs.gpr[4] = value,
            VmcsField::GuestRflags => {
                // The VMCS keeps software's exact value (reserved bits
                // included, for the entry checks to see). Its copy is
                // stale until then: refresh it, so that the write is
                // classified against the value it replaces.
                if !self.vmx.live_rflags {
                    let now = self.regs.rflags();
                    if let Some(v) = self.vmx.current.as_deref_mut() {
                        v.slots_mut()[S::GUEST_RFLAGS] = now;
                    }
                }
                self.vmx.live_rflags = true;
                self.regs.set_rflags(value);
            }
            // Every other guest register (its VMCS copy current or not)
            // goes through the registers' ordinary path.
            f if f.is_high() || PARKED_SLOT[f.slot()] || WRITTEN_AT_PARK.contains(&f.slot()) => {
                self.load_host_context()
            }
            _ => {}
        }
    }

    /// Ends parking: writes the parked guest registers into the current
    /// VMCS and loads host state, as the deferred part of the last VM exit
    /// (28.3 and 28.5). Nothing to do when nothing is parked. Root-mode
    /// users of the processor state call this first; tests call it to
    /// look at the host context after an exit.
    pub fn load_host_context(&mut self) {
        if !self.vmx.guest_live {
            return;
        }
        self.vmx.guest_live = false;
        let exit = self.vmx.ctls.exit;
        let rflags = self.regs.rflags();
        let keep_rflags = self.vmx.live_rflags;
        if let Some(v) = self.vmx.current.as_deref_mut() {
            let software_rflags = v.slots()[S::GUEST_RFLAGS];
            super::exit::write_guest_registers(v, &self.regs, rflags, exit);
            if keep_rflags {
                v.slots_mut()[S::GUEST_RFLAGS] = software_rflags;
            }
        }
        self.load_host_registers();
    }

    /// VM entry of the VMCS whose guest is parked, in place of 27.3.2's
    /// register loading: the registers are already the guest's. The
    /// non-register state, EPT, TLB context and TSC offset are loaded as
    /// usual (they may have been written). `written` are the check groups
    /// software wrote since the exit.
    pub(super) fn resume_parked(&mut self, written: u8) {
        self.vmx.guest_live = false;
        if written & super::dirty::GUEST != 0 {
            // RFLAGS (VM, TF) may have changed what the registers imply,
            // and interruptibility or activity may have been written.
            self.refresh_derived(false);
            self.load_guest_non_register_state();
        }
        let ctls = &self.vmx.ctls;
        let (vpid, eptp) = (ctls.vpid, ctls.eptp);
        let owner = (vpid, eptp.unwrap_or(0));
        if self.ept != eptp || vpid == 0 || self.vmx.tlb_owner != Some(owner) {
            self.ept = eptp;
            self.switch_tlb(vpid != 0, owner);
        }
        self.vmx_tsc_offset = self.vmx.ctls.tsc_offset();
    }

    /// Whether VM exits may park the guest's registers (on by default);
    /// off, every exit saves and loads everything at once. Tests compare
    /// the two.
    pub fn set_state_cache(&mut self, on: bool) {
        self.load_host_context();
        self.vmx.state_cache = on;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Segment;

    /// `saved_register` and `write_guest_registers` agree on every field,
    /// under every combination of the save controls.
    #[test]
    fn saved_register_matches_bulk_save() {
        let mut r = Regs::reset();
        let mut n = 0x1234_5678_9abc_0000u64;
        let mut next = || {
            n = n.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            n
        };
        for s in r.seg.iter_mut().chain([&mut r.ldtr, &mut r.tr]) {
            *s = Segment { selector: next() as u16, base: next(), limit: next() as u32, ar: next() as u32 };
        }
        (r.cr0, r.cr3, r.cr4, r.efer, r.rip) = (next(), next(), next(), next(), next());
        r.gpr[4] = next();
        r.dr[7] = next();
        r.msr.debugctl = next();
        (r.msr.sysenter_cs, r.msr.sysenter_esp, r.msr.sysenter_eip, r.msr.pat) = (next(), next(), next(), next());
        r.gdtr.base = next();
        r.idtr.limit = next() as u16;
        let rflags = 0x202;
        for bits in 0..8u32 {
            let mut exit = ExitCtls::empty();
            for (i, c) in [ExitCtls::SAVE_DEBUG_CONTROLS, ExitCtls::SAVE_PAT, ExitCtls::SAVE_EFER].iter().enumerate() {
                if bits & (1 << i) != 0 {
                    exit |= *c;
                }
            }
            let mut bulk = Vmcs::new();
            // A marker that only unsaved fields keep.
            for s in bulk.slots_mut().iter_mut() {
                *s = 0xdead;
            }
            super::super::exit::write_guest_registers(&mut bulk, &r, rflags, exit);
            for slot in 0..VmcsField::COUNT {
                let one = saved_register(&r, || rflags, exit, slot).unwrap_or(0xdead);
                assert_eq!(one, bulk.slots()[slot], "slot {slot} under {exit:?}");
            }
        }
    }

    use super::super::VmEntry;
    use crate::virt::tests::Guest;
    use crate::RunExit;
    use vmx::FieldKind;

    /// A guest whose controls make exits exact (so they park), or not
    /// when `cache` is false.
    fn exact_guest(code: &[u8], cache: bool) -> Guest {
        let mut g = Guest::plain(code);
        let exit = g.get(VmcsField::ExitControls)
            | u64::from((ExitCtls::SAVE_DEBUG_CONTROLS | ExitCtls::SAVE_EFER | ExitCtls::SAVE_PAT).bits());
        let entry = g.get(VmcsField::EntryControls)
            | u64::from((EntryCtls::LOAD_DEBUG_CONTROLS | EntryCtls::LOAD_EFER | EntryCtls::LOAD_PAT).bits());
        let (efer, pat) = (g.m.cpu.regs.efer, g.m.cpu.regs.msr.pat);
        g.set(VmcsField::ExitControls, exit)
            .set(VmcsField::EntryControls, entry)
            .set(VmcsField::GuestIa32Efer, efer)
            .set(VmcsField::GuestIa32Pat, pat)
            .set(VmcsField::GuestDr7, 0x400);
        g.m.cpu.set_state_cache(cache);
        g
    }

    fn run_exit(g: &mut Guest) {
        assert_eq!(g.enter(), VmEntry::Entered);
        assert_eq!(g.m.run(), RunExit::VmExit);
    }

    fn guest_fields() -> impl Iterator<Item = VmcsField> {
        VmcsField::ALL.iter().copied().filter(|f| f.kind() == FieldKind::GuestState)
    }

    /// Parked exits look exactly like eager ones: every guest field reads
    /// the same at every exit, and the VMCS and host context are the same
    /// once parking ends. L0's edits in between (RIP, RAX, a cold field)
    /// reach the guest either way.
    #[test]
    fn parked_exits_match_eager_exits() {
        // cpuid; inc rbx; cpuid; hlt
        let code = [0x0f, 0xa2, 0x48, 0xff, 0xc3, 0x0f, 0xa2, 0xf4];
        let mut lazy = exact_guest(&code, true);
        let mut eager = exact_guest(&code, false);
        for step in 0..2 {
            for g in [&mut lazy, &mut eager] {
                run_exit(g);
                assert_eq!(g.get(VmcsField::ExitReason), vmx::ExitReason::Cpuid as u64);
            }
            assert!(lazy.m.cpu.guest_parked(), "step {step}: the exact exit parks");
            if step == 1 {
                // INC ran on L0's RBX after the first exit.
                assert_eq!((lazy.m.cpu.regs.gpr[3], eager.m.cpu.regs.gpr[3]), (42, 42));
            }
            assert!(!eager.m.cpu.guest_parked());
            for f in guest_fields() {
                assert_eq!(lazy.get(f), eager.get(f), "step {step}: {}", f.name());
            }
            for g in [&mut lazy, &mut eager] {
                let rip = g.get(VmcsField::GuestRip) + g.get(VmcsField::ExitInstructionLength);
                g.set(VmcsField::GuestRip, rip);
                g.m.cpu.regs.gpr[3] = 41;
                // RSP goes through like RIP (no check group reads it).
                g.set(VmcsField::GuestRsp, 0x7000 + step);
                if step == 1 {
                    // A cold field ends parking; the guest gets it anyway.
                    g.set(VmcsField::GuestIa32SysenterEip, 0x1234_5678);
                }
            }
        }
        assert!(!lazy.m.cpu.guest_parked(), "a cold VMWRITE ends parking");
        for g in [&mut lazy, &mut eager] {
            assert_eq!(g.enter(), VmEntry::Entered);
            assert_eq!(g.m.run(), RunExit::Halted);
            assert_eq!(g.m.cpu.regs.gpr[3], 41);
            assert_eq!(g.m.cpu.regs.gpr[4], 0x7001);
            assert_eq!(g.m.cpu.regs.msr.sysenter_eip, 0x1234_5678);
        }
    }

    /// L0's instruction emulator runs on parked registers as on loaded
    /// ones: same result, same VMCS view, and the guest stays parked.
    #[test]
    fn emulation_on_parked_registers_matches_eager() {
        // cpuid; add rax, 5; hlt
        let code = [0x0f, 0xa2, 0x48, 0x83, 0xc0, 0x05, 0xf4];
        let mut lazy = exact_guest(&code, true);
        let mut eager = exact_guest(&code, false);
        for g in [&mut lazy, &mut eager] {
            run_exit(g);
            let rip = g.get(VmcsField::GuestRip) + g.get(VmcsField::ExitInstructionLength);
            g.set(VmcsField::GuestRip, rip);
            g.m.cpu.regs.gpr[0] = 10;
            let crate::testutil::Machine { cpu, mem, bus } = &mut g.m;
            cpu.emulate_guest_instruction(mem, bus).unwrap();
            assert_eq!(g.m.cpu.regs.gpr[0], 15);
        }
        assert!(lazy.m.cpu.guest_parked(), "emulation keeps the guest parked");
        for f in guest_fields() {
            assert_eq!(lazy.get(f), eager.get(f), "{}", f.name());
        }
        for g in [&mut lazy, &mut eager] {
            assert_eq!(g.enter(), VmEntry::Entered);
            assert_eq!(g.m.run(), RunExit::Halted);
        }
    }

    /// After a parked exit the host context is one call away, and the
    /// VMCS then holds what an eager exit would have written.
    #[test]
    fn load_host_context_completes_the_exit() {
        let code = [0x0f, 0xa2, 0xf4];
        let mut lazy = exact_guest(&code, true);
        let mut eager = exact_guest(&code, false);
        run_exit(&mut lazy);
        run_exit(&mut eager);
        assert_ne!(lazy.m.cpu.regs.rip, super::super::tests::HOST_RIP, "still parked");
        lazy.m.cpu.load_host_context();
        assert_eq!(lazy.m.cpu.regs.rip, super::super::tests::HOST_RIP);
        assert_eq!(lazy.m.cpu.regs.cr3, eager.m.cpu.regs.cr3);
        assert_eq!(lazy.m.cpu.regs.seg, eager.m.cpu.regs.seg);
        assert!(lazy.m.cpu.vmcs().unwrap().slots() == eager.m.cpu.vmcs().unwrap().slots());
    }

    /// RFLAGS written while parked keeps software's exact value: a
    /// reserved bit fails the entry as it would without parking.
    #[test]
    fn rflags_written_while_parked_is_checked() {
        let code = [0x0f, 0xa2, 0xf4];
        for cache in [true, false] {
            let mut g = exact_guest(&code, cache);
            run_exit(&mut g);
            let bad = g.get(VmcsField::GuestRflags) | 1 << 3;
            g.set(VmcsField::GuestRflags, bad);
            assert_eq!(g.get(VmcsField::GuestRflags), bad);
            match g.enter() {
                VmEntry::Failed(e) => assert_eq!(e.check.id, "guest.rflags.reserved", "cache {cache}"),
                other => panic!("cache {cache}: {other:?}"),
            }
            assert_eq!(g.m.cpu.regs.rip, super::super::tests::HOST_RIP, "a failed entry is in the host context");
        }
    }

    #[test]
    fn round_trip_needs_symmetric_controls() {
        let entry = EntryCtls::LOAD_DEBUG_CONTROLS | EntryCtls::LOAD_EFER | EntryCtls::LOAD_PAT;
        let exit = ExitCtls::SAVE_DEBUG_CONTROLS | ExitCtls::SAVE_EFER | ExitCtls::SAVE_PAT | ExitCtls::LOAD_PAT;
        assert!(Controls::round_trip(entry, exit));
        assert!(!Controls::round_trip(entry - EntryCtls::LOAD_PAT, exit), "host PAT would stay");
        assert!(Controls::round_trip(entry - EntryCtls::LOAD_PAT, exit - ExitCtls::LOAD_PAT - ExitCtls::SAVE_PAT));
        assert!(!Controls::round_trip(entry, exit - ExitCtls::SAVE_EFER), "EFER would come back stale");
        assert!(!Controls::round_trip(entry - EntryCtls::LOAD_DEBUG_CONTROLS, exit), "DR7 would be 0x400");
    }
}
