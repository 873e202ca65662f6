//! Guest-state checks of VM entry (Intel SDM vol. 3C, 27.3.1 "Checks on
//! the Guest State Area": 27.3.1.1 "Checks on Guest Control Registers,
//! Debug Registers, and MSRs", 27.3.1.2 "Checks on Guest Segment
//! Registers", 27.3.1.3 "Checks on Guest Descriptor-Table Registers",
//! 27.3.1.4 "Checks on Guest RIP, RFLAGS, and SSP", 27.3.1.5 "Checks on
//! Guest Non-Register State", 27.3.1.6 "Checks on Guest Page-Directory-
//! Pointer-Table Entries").
//!
//! A failure is a VM exit with basic reason 33 and bit 31 set; the exit
//! qualification (SDM table "Exit Qualification for VM-Entry Failures") is
//! 2 for the PDPTEs, 3 for an NMI injected while blocked, 4 for the VMCS
//! link pointer and 0 otherwise.
//!
//! Not modelled, because their reserved bits depend on a model Turtles'
//! CPU does not have (and it does not offer their load controls):
//! IA32_PERF_GLOBAL_CTRL, IA32_RTIT_CTL, IA32_LBR_CTL. Reserved on Turtles'
//! CPU, so checked as reserved: SMM state (blocking by SMI; entry is never
//! in SMM), enclave interruption (no SGX) and RTM in the pending debug
//! exceptions.

use x86::{Cr0, Cr4, Efer, Gpa, Rflags};

use super::host::{pat_valid, EFER_DEFINED, S_CET_RESERVED};
use super::{Check, EntryEnv, EntryError, EntryFailure, EntryMemory, VmcsRead};
use crate::caps::VmxCaps;
use crate::controls::{ActivityState, EntryCtls, Interruptibility, InterruptionType, PinCtls, ProcCtls, ProcCtls2};
use crate::exit::GuestStateQualification;
use crate::field::VmcsField;

/// Access-rights bits (SDM 25.4.1 "Guest Register State").
mod ar {
    pub const TYPE: u64 = 0xf;
    pub const S: u64 = 1 << 4;
    pub const P: u64 = 1 << 7;
    pub const L: u64 = 1 << 13;
    pub const DB: u64 = 1 << 14;
    pub const G: u64 = 1 << 15;
    pub const UNUSABLE: u64 = 1 << 16;
    pub const RESERVED: u64 = 0xfffe_0f00;
    /// A present, accessed, writable data segment with DPL 3: what
    /// virtual-8086 mode requires.
    pub const V86: u64 = 0xf3;
}

/// The VMCS fields of one segment register.
#[derive(Clone, Copy)]
struct SegFields {
    selector: VmcsField,
    base: VmcsField,
    limit: VmcsField,
    access_rights: VmcsField,
}

const fn seg(selector: VmcsField, base: VmcsField, limit: VmcsField, access_rights: VmcsField) -> SegFields {
    SegFields { selector, base, limit, access_rights }
}

/// ES, CS, SS, DS, FS, GS, LDTR, TR: the VMCS order.
const SEGS: [SegFields; 8] = {
    use VmcsField as F;
    [
        seg(F::GuestEsSelector, F::GuestEsBase, F::GuestEsLimit, F::GuestEsAccessRights),
        seg(F::GuestCsSelector, F::GuestCsBase, F::GuestCsLimit, F::GuestCsAccessRights),
        seg(F::GuestSsSelector, F::GuestSsBase, F::GuestSsLimit, F::GuestSsAccessRights),
        seg(F::GuestDsSelector, F::GuestDsBase, F::GuestDsLimit, F::GuestDsAccessRights),
        seg(F::GuestFsSelector, F::GuestFsBase, F::GuestFsLimit, F::GuestFsAccessRights),
        seg(F::GuestGsSelector, F::GuestGsBase, F::GuestGsLimit, F::GuestGsAccessRights),
        seg(F::GuestLdtrSelector, F::GuestLdtrBase, F::GuestLdtrLimit, F::GuestLdtrAccessRights),
        seg(F::GuestTrSelector, F::GuestTrBase, F::GuestTrLimit, F::GuestTrAccessRights),
    ]
};

/// One guest segment register as the VMCS holds it.
#[derive(Clone, Copy)]
struct Seg {
    f: SegFields,
    selector: u64,
    base: u64,
    limit: u64,
    ar: u64,
}

impl Seg {
    fn read<V: VmcsRead + ?Sized>(v: &V, f: SegFields) -> Seg {
        Seg {
            f,
            selector: v.read(f.selector),
            base: v.read(f.base),
            limit: v.read(f.limit),
            ar: v.read(f.access_rights),
        }
    }
    fn usable(&self) -> bool {
        self.ar & ar::UNUSABLE == 0
    }
    fn kind(&self) -> u64 {
        self.ar & ar::TYPE
    }
    fn dpl(&self) -> u64 {
        (self.ar >> 5) & 3
    }
    fn rpl(&self) -> u64 {
        self.selector & 3
    }
    /// G must be 0 if any of limit bits 11:0 is 0, and 1 if any of bits
    /// 31:20 is 1.
    fn granularity_valid(&self) -> bool {
        let g = self.ar & ar::G != 0;
        (self.limit & 0xfff == 0xfff || !g) && (self.limit & 0xfff0_0000 == 0 || g)
    }
}

/// The guest's mode and the controls that select which checks apply.
struct Mode {
    entry: EntryCtls,
    unrestricted: bool,
    ept: bool,
    ia32e: bool,
    cr0: u64,
    cr4: u64,
    rflags: u64,
    v86: bool,
    /// The event being injected, if the interruption information is valid.
    injection: Option<(Option<InterruptionType>, u8)>,
}

impl Mode {
    fn read<V: VmcsRead + ?Sized>(v: &V) -> Mode {
        use VmcsField as F;
        let proc = ProcCtls::from_bits_retain(v.read(F::PrimaryProcControls) as u32);
        let proc2 = if proc.contains(ProcCtls::ACTIVATE_SECONDARY_CONTROLS) {
            ProcCtls2::from_bits_retain(v.read(F::SecondaryProcControls) as u32)
        } else {
            ProcCtls2::empty()
        };
        let entry_raw = v.read(F::EntryControls);
        let entry = EntryCtls::from_bits_retain(entry_raw as u32);
        let rflags = v.read(F::GuestRflags);
        let info = v.read(F::EntryInterruptionInfo) as u32;
        let injection =
            (info & (1 << 31) != 0).then(|| (InterruptionType::from_bits(((info >> 8) & 7) as u8), info as u8));
        Mode {
            entry,
            unrestricted: proc2.contains(ProcCtls2::UNRESTRICTED_GUEST),
            ept: proc2.contains(ProcCtls2::ENABLE_EPT),
            ia32e: entry.contains(EntryCtls::IA32E_MODE_GUEST),
            cr0: v.read(F::GuestCr0),
            cr4: v.read(F::GuestCr4),
            rflags,
            v86: rflags & Rflags::VM.bits() != 0,
            injection,
        }
    }

    fn injects(&self, kind: InterruptionType) -> bool {
        matches!(self.injection, Some((Some(k), _)) if k == kind)
    }
}

/// SDM 27.3.1.1 "Checks on Guest Control Registers, Debug Registers, and
/// MSRs".
pub fn check_guest_control_registers<V: VmcsRead + ?Sized>(v: &V, caps: &VmxCaps, env: &EntryEnv) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.3.1.1";
    let m = Mode::read(v);
    let (cr0, cr4) = (m.cr0, m.cr4);

    check!("guest.cr0.fixed", SDM, F::GuestCr0 => cr0, caps.check_cr0(cr0, m.unrestricted).is_ok());
    check!("guest.cr0.pg_needs_pe", SDM, F::GuestCr0 => cr0,
        cr0 & Cr0::PG.bits() == 0 || cr0 & Cr0::PE.bits() != 0);
    check!("guest.cr4.fixed", SDM, F::GuestCr4 => cr4, caps.check_cr4(cr4).is_ok());
    check!("guest.cr4.cet_needs_cr0_wp", SDM, F::GuestCr4 => cr4,
        cr4 & Cr4::CET.bits() == 0 || cr0 & Cr0::WP.bits() != 0);
    let load_debug = m.entry.contains(EntryCtls::LOAD_DEBUG_CONTROLS);
    if load_debug {
        // IA32_DEBUGCTL: LBR, BTF and bits 15:6 are defined; 5:2 and 63:16
        // are reserved.
        let debugctl = v.read(F::GuestIa32Debugctl);
        check!("guest.debugctl", SDM, F::GuestIa32Debugctl => debugctl, debugctl & !0xffc3 == 0);
    }
    if m.ia32e {
        check!("guest.ia32e_needs_pg", SDM, F::GuestCr0 => cr0, cr0 & Cr0::PG.bits() != 0);
        check!("guest.ia32e_needs_pae", SDM, F::GuestCr4 => cr4, cr4 & Cr4::PAE.bits() != 0);
    } else {
        check!("guest.pcide_needs_ia32e", SDM, F::GuestCr4 => cr4, cr4 & Cr4::PCIDE.bits() == 0);
    }
    let cr3 = v.read(F::GuestCr3);
    check!("guest.cr3", SDM, F::GuestCr3 => cr3, env.physical(cr3));
    if load_debug {
        let dr7 = v.read(F::GuestDr7);
        check!("guest.dr7", SDM, F::GuestDr7 => dr7, dr7 >> 32 == 0);
    }
    let sysenter_esp = v.read(F::GuestIa32SysenterEsp);
    check!("guest.sysenter_esp", SDM, F::GuestIa32SysenterEsp => sysenter_esp, env.canonical(sysenter_esp));
    let sysenter_eip = v.read(F::GuestIa32SysenterEip);
    check!("guest.sysenter_eip", SDM, F::GuestIa32SysenterEip => sysenter_eip, env.canonical(sysenter_eip));
    if m.entry.contains(EntryCtls::LOAD_PAT) {
        let pat = v.read(F::GuestIa32Pat);
        check!("guest.pat", SDM, F::GuestIa32Pat => pat, pat_valid(pat));
    }
    if m.entry.contains(EntryCtls::LOAD_EFER) {
        let efer = v.read(F::GuestIa32Efer);
        check!("guest.efer.reserved", SDM, F::GuestIa32Efer => efer, efer & !EFER_DEFINED == 0);
        check!("guest.efer.lma", SDM, F::GuestIa32Efer => efer, (efer & Efer::LMA.bits() != 0) == m.ia32e);
        check!("guest.efer.lme", SDM, F::GuestIa32Efer => efer,
            cr0 & Cr0::PG.bits() == 0 || (efer & Efer::LME.bits() != 0) == m.ia32e);
    }
    if m.entry.contains(EntryCtls::LOAD_BNDCFGS) {
        let bndcfgs = v.read(F::GuestIa32Bndcfgs);
        check!("guest.bndcfgs", SDM, F::GuestIa32Bndcfgs => bndcfgs,
            bndcfgs & 0xffc == 0 && env.canonical(bndcfgs & !0xfff));
    }
    if m.entry.contains(EntryCtls::LOAD_CET_STATE) {
        let s_cet = v.read(F::GuestIa32SCet);
        check!("guest.s_cet", SDM, F::GuestIa32SCet => s_cet, s_cet & S_CET_RESERVED == 0 && env.canonical(s_cet));
        let table = v.read(F::GuestIa32InterruptSspTableAddr);
        check!("guest.interrupt_ssp_table", SDM, F::GuestIa32InterruptSspTableAddr => table, env.canonical(table));
    }
    if m.entry.contains(EntryCtls::LOAD_PKRS) {
        let pkrs = v.read(F::GuestIa32Pkrs);
        check!("guest.pkrs", SDM, F::GuestIa32Pkrs => pkrs, pkrs >> 32 == 0);
    }
    if m.entry.contains(EntryCtls::LOAD_UINV) {
        let uinv = v.read(F::GuestUinv);
        check!("guest.uinv", SDM, F::GuestUinv => uinv, uinv >> 8 == 0);
    }
    Ok(())
}

/// SDM 27.3.1.2 "Checks on Guest Segment Registers".
pub fn check_guest_segment_registers<V: VmcsRead + ?Sized>(v: &V, env: &EntryEnv) -> Result<(), Check> {
    const SDM: &str = "27.3.1.2";
    let m = Mode::read(v);
    let [es, cs, ss, ds, fs, gs, ldtr, tr] = SEGS.map(|f| Seg::read(v, f));

    // Selectors.
    check!("guest.tr.ti", SDM, tr.f.selector => tr.selector, tr.selector & 4 == 0);
    if ldtr.usable() {
        check!("guest.ldtr.ti", SDM, ldtr.f.selector => ldtr.selector, ldtr.selector & 4 == 0);
    }
    if !m.v86 && !m.unrestricted {
        check!("guest.ss.rpl", SDM, ss.f.selector => ss.selector, ss.rpl() == cs.rpl());
    }

    // Bases.
    if m.v86 {
        for s in [cs, ss, ds, es, fs, gs] {
            check!("guest.v86.base", SDM, s.f.base => s.base, s.base == s.selector << 4);
        }
    }
    for s in [tr, fs, gs] {
        check!("guest.base.canonical", SDM, s.f.base => s.base, env.canonical(s.base));
    }
    if ldtr.usable() {
        check!("guest.base.canonical", SDM, ldtr.f.base => ldtr.base, env.canonical(ldtr.base));
    }
    check!("guest.cs.base", SDM, cs.f.base => cs.base, cs.base >> 32 == 0);
    for s in [ss, ds, es] {
        if s.usable() {
            check!("guest.base.upper", SDM, s.f.base => s.base, s.base >> 32 == 0);
        }
    }

    if m.v86 {
        for s in [cs, ss, ds, es, fs, gs] {
            check!("guest.v86.limit", SDM, s.f.limit => s.limit, s.limit == 0xffff);
        }
        for s in [cs, ss, ds, es, fs, gs] {
            check!("guest.v86.access_rights", SDM, s.f.access_rights => s.ar, s.ar == ar::V86);
        }
    } else {
        let cs_type = cs.kind();
        check!("guest.cs.type", SDM, cs.f.access_rights => cs.ar,
            matches!(cs_type, 9 | 11 | 13 | 15) || (m.unrestricted && cs_type == 3));
        if ss.usable() {
            check!("guest.ss.type", SDM, ss.f.access_rights => ss.ar, matches!(ss.kind(), 3 | 7));
        }
        for s in [ds, es, fs, gs] {
            if s.usable() {
                let t = s.kind();
                check!("guest.data.type", SDM, s.f.access_rights => s.ar, t & 1 != 0 && (t & 8 == 0 || t & 2 != 0));
            }
        }
        for s in [cs, ss, ds, es, fs, gs] {
            if s.f.selector == cs.f.selector || s.usable() {
                check!("guest.seg.s", SDM, s.f.access_rights => s.ar, s.ar & ar::S != 0);
            }
        }
        check!("guest.cs.dpl", SDM, cs.f.access_rights => cs.ar, match cs_type {
            3 => cs.dpl() == 0,
            9 | 11 => cs.dpl() == ss.dpl(),
            _ => cs.dpl() <= ss.dpl(),
        });
        if !m.unrestricted {
            check!("guest.ss.dpl_rpl", SDM, ss.f.access_rights => ss.ar, ss.dpl() == ss.rpl());
        }
        if cs_type == 3 || m.cr0 & Cr0::PE.bits() == 0 {
            check!("guest.ss.dpl_real", SDM, ss.f.access_rights => ss.ar, ss.dpl() == 0);
        }
        if !m.unrestricted {
            for s in [ds, es, fs, gs] {
                if s.usable() && s.kind() <= 11 {
                    check!("guest.data.dpl", SDM, s.f.access_rights => s.ar, s.dpl() >= s.rpl());
                }
            }
        }
        for s in [cs, ss, ds, es, fs, gs] {
            if s.f.selector == cs.f.selector || s.usable() {
                check!("guest.seg.present", SDM, s.f.access_rights => s.ar, s.ar & ar::P != 0);
                check!("guest.seg.reserved", SDM, s.f.access_rights => s.ar, s.ar & ar::RESERVED == 0);
            }
        }
        check!("guest.cs.l_and_db", SDM, cs.f.access_rights => cs.ar,
            !m.ia32e || cs.ar & ar::L == 0 || cs.ar & ar::DB == 0);
        for s in [cs, ss, ds, es, fs, gs] {
            if s.f.selector == cs.f.selector || s.usable() {
                check!("guest.seg.granularity", SDM, s.f.access_rights => s.ar, s.granularity_valid());
            }
        }
    }

    // TR: a busy TSS, 32-bit (or, outside IA-32e mode, 16-bit).
    let tr_type = tr.kind();
    check!("guest.tr.type", SDM, tr.f.access_rights => tr.ar, tr_type == 11 || (!m.ia32e && tr_type == 3));
    check!("guest.system.s", SDM, tr.f.access_rights => tr.ar, tr.ar & ar::S == 0);
    check!("guest.system.present", SDM, tr.f.access_rights => tr.ar, tr.ar & ar::P != 0);
    check!("guest.system.reserved", SDM, tr.f.access_rights => tr.ar, tr.ar & ar::RESERVED == 0);
    check!("guest.system.granularity", SDM, tr.f.access_rights => tr.ar, tr.granularity_valid());
    check!("guest.tr.unusable", SDM, tr.f.access_rights => tr.ar, tr.usable());
    if ldtr.usable() {
        check!("guest.ldtr.type", SDM, ldtr.f.access_rights => ldtr.ar, ldtr.kind() == 2);
        check!("guest.system.s", SDM, ldtr.f.access_rights => ldtr.ar, ldtr.ar & ar::S == 0);
        check!("guest.system.present", SDM, ldtr.f.access_rights => ldtr.ar, ldtr.ar & ar::P != 0);
        check!("guest.system.reserved", SDM, ldtr.f.access_rights => ldtr.ar, ldtr.ar & ar::RESERVED == 0);
        check!("guest.system.granularity", SDM, ldtr.f.access_rights => ldtr.ar, ldtr.granularity_valid());
    }
    Ok(())
}

/// SDM 27.3.1.3 "Checks on Guest Descriptor-Table Registers".
pub fn check_guest_descriptor_tables<V: VmcsRead + ?Sized>(v: &V, env: &EntryEnv) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.3.1.3";
    for (base, limit) in [(F::GuestGdtrBase, F::GuestGdtrLimit), (F::GuestIdtrBase, F::GuestIdtrLimit)] {
        let value = v.read(base);
        check!("guest.dtr.base", SDM, base => value, env.canonical(value));
        let value = v.read(limit);
        check!("guest.dtr.limit", SDM, limit => value, value >> 16 == 0);
    }
    Ok(())
}

/// SDM 27.3.1.4 "Checks on Guest RIP, RFLAGS, and SSP", in its order:
/// [`check_guest_rip`], [`check_guest_rflags`], then SSP.
pub fn check_guest_rip_rflags<V: VmcsRead + ?Sized>(v: &V, env: &EntryEnv) -> Result<(), Check> {
    check_guest_rip(v, env)?;
    check_guest_rflags(v)?;
    check_guest_ssp(v, env)
}

/// Whether guest code runs in 64-bit mode: IA-32e mode guest and CS.L.
fn long_mode<V: VmcsRead + ?Sized>(v: &V) -> bool {
    use VmcsField as F;
    let entry = EntryCtls::from_bits_retain(v.read(F::EntryControls) as u32);
    entry.contains(EntryCtls::IA32E_MODE_GUEST) && v.read(F::GuestCsAccessRights) & ar::L != 0
}

/// The RIP part of 27.3.1.4 (what a hypervisor moving past an
/// instruction can break): canonical in 64-bit mode, 32 bits otherwise.
pub fn check_guest_rip<V: VmcsRead + ?Sized>(v: &V, env: &EntryEnv) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.3.1.4";
    let rip = v.read(F::GuestRip);
    if long_mode(v) {
        check!("guest.rip.canonical", SDM, F::GuestRip => rip, env.canonical(rip));
    } else {
        check!("guest.rip.upper", SDM, F::GuestRip => rip, rip >> 32 == 0);
    }
    Ok(())
}

/// The RFLAGS part of 27.3.1.4: reserved bits, VM outside
/// virtual-8086-capable modes, IF for an injected external interrupt.
pub fn check_guest_rflags<V: VmcsRead + ?Sized>(v: &V) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.3.1.4";
    let m = Mode::read(v);
    let rflags = m.rflags;
    const RESERVED: u64 = !0x3f_ffff | 1 << 15 | 1 << 5 | 1 << 3;
    check!("guest.rflags.reserved", SDM, F::GuestRflags => rflags,
        rflags & RESERVED == 0 && rflags & Rflags::FIXED1.bits() != 0);
    if m.ia32e || m.cr0 & Cr0::PE.bits() == 0 {
        check!("guest.rflags.vm", SDM, F::GuestRflags => rflags, !m.v86);
    }
    if m.injects(InterruptionType::ExternalInterrupt) {
        check!("guest.rflags.if_for_interrupt", SDM, F::GuestRflags => rflags, rflags & Rflags::IF.bits() != 0);
    }
    Ok(())
}

/// The SSP part of 27.3.1.4, with "load CET state".
fn check_guest_ssp<V: VmcsRead + ?Sized>(v: &V, env: &EntryEnv) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.3.1.4";
    let entry = EntryCtls::from_bits_retain(v.read(F::EntryControls) as u32);
    if entry.contains(EntryCtls::LOAD_CET_STATE) {
        let ssp = v.read(F::GuestSsp);
        check!("guest.ssp", SDM, F::GuestSsp => ssp,
            ssp & 3 == 0 && if long_mode(v) { env.canonical(ssp) } else { ssp >> 32 == 0 });
    }
    Ok(())
}

/// Whether an event may be injected into an inactive guest: HLT lets
/// through interrupts, NMIs, #DB, #MC and pending MTF; shutdown only NMIs
/// and #MC; wait-for-SIPI nothing.
fn injectable(activity: Option<ActivityState>, kind: Option<InterruptionType>, vector: u8) -> bool {
    use InterruptionType as T;
    match activity {
        Some(ActivityState::Active) => true,
        Some(ActivityState::Hlt) => match kind {
            Some(T::ExternalInterrupt | T::Nmi) => true,
            Some(T::HardwareException) => matches!(vector, x86::vector::DB | x86::vector::MC),
            Some(T::PrivilegedSoftwareException) => vector == x86::vector::DB,
            Some(T::OtherEvent) => vector == 0,
            _ => false,
        },
        Some(ActivityState::Shutdown) => {
            kind == Some(T::Nmi) || (kind == Some(T::HardwareException) && vector == x86::vector::MC)
        }
        _ => false,
    }
}

/// SDM 27.3.1.5 "Checks on Guest Non-Register State".
pub fn check_guest_non_register_state<V: VmcsRead + ?Sized, M: EntryMemory + ?Sized>(
    v: &V,
    caps: &VmxCaps,
    env: &EntryEnv,
    memory: &M,
) -> Result<(), Check> {
    use Interruptibility as I;
    use VmcsField as F;
    const SDM: &str = "27.3.1.5";
    let m = Mode::read(v);
    let misc = caps.misc();

    let activity_raw = v.read(F::GuestActivityState);
    let activity = ActivityState::from_raw(activity_raw as u32).filter(|_| activity_raw >> 32 == 0);
    check!("guest.activity.supported", SDM, F::GuestActivityState => activity_raw, match activity {
        Some(ActivityState::Active) => true,
        Some(ActivityState::Hlt) => misc.activity_hlt,
        Some(ActivityState::Shutdown) => misc.activity_shutdown,
        Some(ActivityState::WaitForSipi) => misc.activity_wait_for_sipi,
        None => false,
    });
    if activity == Some(ActivityState::Hlt) {
        let ss_ar = v.read(F::GuestSsAccessRights);
        check!("guest.activity.hlt_needs_dpl0", SDM, F::GuestSsAccessRights => ss_ar, (ss_ar >> 5) & 3 == 0);
    }
    let intr_raw = v.read(F::GuestInterruptibilityState);
    let intr = I::from_bits_retain(intr_raw as u32);
    let sti_or_mov_ss = intr.intersects(I::BLOCKING_BY_STI | I::BLOCKING_BY_MOV_SS);
    if sti_or_mov_ss {
        check!("guest.activity.blocking_needs_active", SDM, F::GuestActivityState => activity_raw,
            activity == Some(ActivityState::Active));
    }
    if let Some((kind, vector)) = m.injection {
        check!("guest.activity.injection", SDM, F::GuestActivityState => activity_raw,
            injectable(activity, kind, vector));
    }

    // Enclave interruption (bit 4) is reserved: Turtles' CPU has no SGX.
    check!("guest.interruptibility.reserved", SDM, F::GuestInterruptibilityState => intr_raw, intr_raw & !0xf == 0);
    check!("guest.interruptibility.sti_and_mov_ss", SDM, F::GuestInterruptibilityState => intr_raw,
        !intr.contains(I::BLOCKING_BY_STI | I::BLOCKING_BY_MOV_SS));
    check!("guest.interruptibility.sti_needs_if", SDM, F::GuestInterruptibilityState => intr_raw,
        !intr.contains(I::BLOCKING_BY_STI) || m.rflags & Rflags::IF.bits() != 0);
    if m.injects(InterruptionType::ExternalInterrupt) {
        check!("guest.interruptibility.external_interrupt", SDM, F::GuestInterruptibilityState => intr_raw,
            !sti_or_mov_ss);
    }
    if m.injects(InterruptionType::Nmi) {
        check!("guest.interruptibility.nmi_mov_ss", SDM, F::GuestInterruptibilityState => intr_raw,
            !intr.contains(I::BLOCKING_BY_MOV_SS));
    }
    // Outside SMM, always on Turtles' CPU.
    check!("guest.interruptibility.smi", SDM, F::GuestInterruptibilityState => intr_raw,
        !intr.contains(I::BLOCKING_BY_SMI));
    let pin = PinCtls::from_bits_retain(v.read(F::PinBasedControls) as u32);
    if pin.contains(PinCtls::VIRTUAL_NMIS) && m.injects(InterruptionType::Nmi) {
        check!("guest.interruptibility.nmi_blocked", SDM, F::GuestInterruptibilityState => intr_raw,
            !intr.contains(I::BLOCKING_BY_NMI));
    }

    // B3:0, enabled breakpoint (12) and BS (14); RTM (16) is reserved.
    let pending = v.read(F::GuestPendingDebugExceptions);
    check!("guest.pending_dbg.reserved", SDM, F::GuestPendingDebugExceptions => pending,
        pending & !(0xf | 1 << 12 | 1 << 14) == 0);
    if sti_or_mov_ss || activity == Some(ActivityState::Hlt) {
        // A single step over the blocking instruction must be pending
        // exactly when TF is set and BTF is not.
        let btf = v.read(F::GuestIa32Debugctl) & 2 != 0;
        let stepping = m.rflags & Rflags::TF.bits() != 0 && !btf;
        let bs = pending & 1 << 14 != 0;
        check!("guest.pending_dbg.bs_set", SDM, F::GuestPendingDebugExceptions => pending, !stepping || bs);
        check!("guest.pending_dbg.bs_clear", SDM, F::GuestPendingDebugExceptions => pending, stepping || !bs);
    }

    let link = v.read(F::VmcsLinkPointer);
    if link != u64::MAX {
        check!("guest.vmcs_link_pointer.address", SDM, F::VmcsLinkPointer => link,
            link & 0xfff == 0 && env.physical(link));
        let header = memory.vmcs_header(Gpa(link));
        check!("guest.vmcs_link_pointer.revision", SDM, F::VmcsLinkPointer => link,
            header & 0x7fff_ffff == caps.revision_id());
        let proc = ProcCtls::from_bits_retain(v.read(F::PrimaryProcControls) as u32);
        let shadowing = proc.contains(ProcCtls::ACTIVATE_SECONDARY_CONTROLS)
            && ProcCtls2::from_bits_retain(v.read(F::SecondaryProcControls) as u32).contains(ProcCtls2::VMCS_SHADOWING);
        check!("guest.vmcs_link_pointer.shadow", SDM, F::VmcsLinkPointer => link,
            !shadowing || header & (1 << 31) != 0);
    }
    Ok(())
}

/// Whether a PAE PDPTE is not present or has no reserved bit set (bits
/// 2:1, 8:5 and 63:MAXPHYADDR).
const fn pdpte_valid(pdpte: u64, maxphyaddr: u8) -> bool {
    let beyond_width = match u64::MAX.checked_shl(maxphyaddr as u32) {
        Some(mask) => mask,
        None => 0,
    };
    pdpte & 1 == 0 || pdpte & (0x1e6 | beyond_width) == 0
}

/// SDM 27.3.1.6 "Checks on Guest Page-Directory-Pointer-Table Entries":
/// with PAE paging, the PDPTEs come from the VMCS under EPT and from the
/// page CR3 points to otherwise.
pub fn check_guest_pdptes<V: VmcsRead + ?Sized, M: EntryMemory + ?Sized>(
    v: &V,
    env: &EntryEnv,
    memory: &M,
) -> Result<(), Check> {
    use VmcsField as F;
    const SDM: &str = "27.3.1.6";
    let m = Mode::read(v);
    let pae_paging = m.cr0 & Cr0::PG.bits() != 0 && m.cr4 & Cr4::PAE.bits() != 0 && !m.ia32e;
    if !pae_paging {
        return Ok(());
    }
    if m.ept {
        for field in [F::GuestPdpte0, F::GuestPdpte1, F::GuestPdpte2, F::GuestPdpte3] {
            let pdpte = v.read(field);
            check!("guest.pdpte.field", SDM, field => pdpte, pdpte_valid(pdpte, env.maxphyaddr));
        }
    } else {
        let cr3 = v.read(F::GuestCr3);
        let pdptes = memory.pdptes(Gpa(cr3 & 0xffff_ffe0));
        check!("guest.pdpte.memory", SDM, F::GuestCr3 => cr3,
            pdptes.iter().all(|&p| pdpte_valid(p, env.maxphyaddr)));
    }
    Ok(())
}

/// The exit qualification for a failed guest-state check.
fn qualification(check: &Check) -> GuestStateQualification {
    match check.id {
        "guest.pdpte.field" | "guest.pdpte.memory" => GuestStateQualification::PdpteLoading,
        "guest.interruptibility.nmi_blocked" => GuestStateQualification::NmiInjection,
        "guest.vmcs_link_pointer.address" | "guest.vmcs_link_pointer.revision" | "guest.vmcs_link_pointer.shadow" => {
            GuestStateQualification::VmcsLinkPointer
        }
        _ => GuestStateQualification::Default,
    }
}

/// SDM 27.3.1.1-27.3.1.6, in order. A failure is a VM-entry-failure exit
/// with reason 33 and the qualification of the SDM table.
pub fn check_guest_state<V: VmcsRead + ?Sized, M: EntryMemory + ?Sized>(
    v: &V,
    caps: &VmxCaps,
    env: &EntryEnv,
    memory: &M,
) -> Result<(), EntryError> {
    let run = || -> Result<(), Check> {
        check_guest_control_registers(v, caps, env)?;
        check_guest_segment_registers(v, env)?;
        check_guest_descriptor_tables(v, env)?;
        check_guest_rip_rflags(v, env)?;
        check_guest_non_register_state(v, caps, env, memory)?;
        check_guest_pdptes(v, env, memory)
    };
    run().map_err(|check| EntryError {
        failure: EntryFailure::GuestState { qualification: qualification(&check) },
        check,
    })
}

#[cfg(test)]
mod tests {
    use x86::{Cr0, Cr4, Efer, Rflags};

    use super::super::tests::*;
    use super::*;
    use crate::check::check_vm_entry;
    use crate::exit::ExitReasonField;
    use GuestStateQualification as Q;
    use VmcsField as F;

    /// Runs the one-field negative test and returns the exit qualification.
    fn expect_with(
        caps: &VmxCaps,
        memory: &TestMemory,
        variant: impl FnOnce(&mut TestVmcs),
        field: VmcsField,
        flip: impl FnOnce(u64) -> u64,
        id: &str,
    ) -> Q {
        let err = expect_entry(caps, &EntryEnv::TURTLES, memory, variant, field, flip, id);
        assert!(err.check.sdm.starts_with("27.3.1."), "{id}");
        assert_eq!(err.failure.exit_reason().map(ExitReasonField::to_raw), Some(0x8000_0021), "{id}");
        match err.failure {
            EntryFailure::GuestState { qualification } => qualification,
            other => panic!("{id}: {other:?}"),
        }
    }

    fn expect_variant(variant: impl FnOnce(&mut TestVmcs), field: VmcsField, flip: impl FnOnce(u64) -> u64, id: &str) {
        let q = expect_with(&everything(), &TestMemory::default(), variant, field, flip, id);
        assert_eq!(q, Q::Default, "{id}");
    }

    fn expect(field: VmcsField, flip: impl FnOnce(u64) -> u64, id: &str) {
        expect_variant(|_| {}, field, flip, id);
    }

    fn or(bits: u64) -> impl FnOnce(u64) -> u64 {
        move |v| v | bits
    }

    fn and_not(bits: u64) -> impl FnOnce(u64) -> u64 {
        move |v| v & !bits
    }

    fn restricted(v: &mut TestVmcs) {
        v.clear_bits(F::SecondaryProcControls, bits32(ProcCtls2::UNRESTRICTED_GUEST.bits()));
    }

    fn usable_ldtr(v: &mut TestVmcs) {
        v.set(F::GuestLdtrSelector, 0x28);
        v.set(F::GuestLdtrLimit, 0xffff);
        v.set(F::GuestLdtrAccessRights, 0x82);
    }

    /// A virtual-8086 guest under 32-bit PAE paging, without "load
    /// IA32_EFER".
    fn v86(v: &mut TestVmcs) {
        make_guest_protected_32(v);
        v.set_bits(F::GuestCr4, Cr4::PAE.bits());
        v.clear_bits(F::EntryControls, bits32(EntryCtls::LOAD_EFER.bits()));
        v.set(F::GuestRflags, (Rflags::FIXED1 | Rflags::VM).bits());
        for (i, f) in SEGS[..6].iter().enumerate() {
            let selector = 0x1000 + i as u64 * 0x10;
            v.set(f.selector, selector);
            v.set(f.base, selector << 4);
            v.set(f.limit, 0xffff);
            v.set(f.access_rights, 0xf3);
        }
        v.set(F::GuestRip, 0x100);
    }

    /// A real-mode guest under "unrestricted guest", as after reset.
    fn real_mode(v: &mut TestVmcs) {
        v.clear_bits(F::EntryControls, bits32(EntryCtls::IA32E_MODE_GUEST.bits()));
        v.set(F::GuestCr0, (Cr0::ET | Cr0::NE).bits());
        v.set(F::GuestCr4, Cr4::VMXE.bits());
        v.set(F::GuestCr3, 0);
        v.set(F::GuestIa32Efer, 0);
        for f in &SEGS[..6] {
            v.set(f.selector, 0);
            v.set(f.base, 0);
            v.set(f.limit, 0xffff);
            v.set(f.access_rights, 0x93);
        }
        v.set(F::GuestCsSelector, 0xf000);
        v.set(F::GuestCsBase, 0xffff_0000);
        v.set(F::GuestCsAccessRights, 0x9b);
        v.set(F::GuestTrBase, 0);
        v.set(F::GuestTrAccessRights, 0x8b);
        v.set(F::GuestGdtrBase, 0);
        v.set(F::GuestGdtrLimit, 0xffff);
        v.set(F::GuestIdtrBase, 0);
        v.set(F::GuestIdtrLimit, 0xffff);
        v.set(F::GuestRip, 0xfff0);
        v.set(F::GuestRflags, Rflags::FIXED1.bits());
    }

    fn pae_32(v: &mut TestVmcs) {
        make_guest_protected_32(v);
        v.set(F::GuestCr4, (Cr4::PAE | Cr4::VMXE).bits());
    }

    fn no_ept(v: &mut TestVmcs) {
        NO_EPT_USERS(v);
        v.clear_bits(F::SecondaryProcControls, bits32(ProcCtls2::ENABLE_EPT.bits()));
    }

    fn inject(info: u64) -> impl FnOnce(&mut TestVmcs) {
        move |v| {
            v.set(F::EntryInterruptionInfo, info);
            v.set_bits(F::GuestRflags, Rflags::IF.bits());
        }
    }

    fn check_all(v: &TestVmcs, memory: &TestMemory) -> Result<(), EntryError> {
        check_vm_entry(v, &everything(), &EntryEnv::TURTLES, memory)
    }

    // Positive tests.

    #[test]
    fn baseline_64_bit_guest_is_valid() {
        assert_eq!(check_all(&baseline(), &TestMemory::default()), Ok(()));
    }

    #[test]
    fn real_mode_unrestricted_guest_is_valid() {
        let mut v = baseline();
        real_mode(&mut v);
        assert_eq!(check_all(&v, &TestMemory::default()), Ok(()));
        // Not without "unrestricted guest".
        restricted(&mut v);
        assert_eq!(check_all(&v, &TestMemory::default()).unwrap_err().check.id, "guest.cr0.fixed");
    }

    #[test]
    fn protected_mode_32_bit_guests_are_valid() {
        let mut v = baseline();
        make_guest_protected_32(&mut v);
        assert_eq!(check_all(&v, &TestMemory::default()), Ok(()));
        restricted(&mut v);
        assert_eq!(check_all(&v, &TestMemory::default()), Ok(()));
        // PAE paging without EPT reads valid PDPTEs from memory.
        let mut v = baseline();
        no_ept(&mut v);
        pae_32(&mut v);
        let memory = TestMemory { pdptes: [0x1001, 0x2001, 0, 0x3001], ..TestMemory::default() };
        assert_eq!(check_all(&v, &memory), Ok(()));
        // Virtual-8086 mode.
        let mut v = baseline();
        v86(&mut v);
        assert_eq!(check_all(&v, &TestMemory::default()), Ok(()));
    }

    #[test]
    fn valid_vmcs_link_pointer_passes() {
        let mut v = baseline();
        v.set(F::VmcsLinkPointer, 0x5000);
        let memory = TestMemory { vmcs_header: everything().revision_id() | 1 << 31, ..TestMemory::default() };
        assert_eq!(check_all(&v, &memory), Ok(()));
    }

    // 27.3.1.1.

    #[test]
    fn control_registers() {
        expect(F::GuestCr0, and_not(Cr0::NE.bits()), "guest.cr0.fixed");
        expect(F::GuestCr0, and_not(Cr0::PE.bits()), "guest.cr0.pg_needs_pe");
        expect(F::GuestCr4, and_not(Cr4::VMXE.bits()), "guest.cr4.fixed");
        let cet = everything().to_builder().cr4_fixed(Cr4::VMXE.bits(), u64::from(u32::MAX)).build();
        let q = expect_with(
            &cet,
            &TestMemory::default(),
            |v| {
                v.set_bits(F::GuestCr0, Cr0::WP.bits());
                v.set_bits(F::GuestCr4, Cr4::CET.bits());
            },
            F::GuestCr0,
            and_not(Cr0::WP.bits()),
            "guest.cr4.cet_needs_cr0_wp",
        );
        assert_eq!(q, Q::Default);
        expect(F::GuestIa32Debugctl, or(1 << 2), "guest.debugctl");
        expect(F::GuestCr0, and_not(Cr0::PG.bits()), "guest.ia32e_needs_pg");
        expect(F::GuestCr4, and_not(Cr4::PAE.bits()), "guest.ia32e_needs_pae");
        expect_variant(make_guest_protected_32, F::GuestCr4, or(Cr4::PCIDE.bits()), "guest.pcide_needs_ia32e");
        expect(F::GuestCr3, to(1 << 40), "guest.cr3");
        expect(F::GuestDr7, or(1 << 32), "guest.dr7");
    }

    #[test]
    fn msrs() {
        expect(F::GuestIa32SysenterEsp, to(1 << 47), "guest.sysenter_esp");
        expect(F::GuestIa32SysenterEip, to(0xfff0_0000_0000_0000), "guest.sysenter_eip");
        expect(F::GuestIa32Pat, |v| v & !0xff | 2, "guest.pat");
        expect(F::GuestIa32Efer, or(1 << 2), "guest.efer.reserved");
        expect(F::GuestIa32Efer, and_not(Efer::LMA.bits()), "guest.efer.lma");
        expect(F::GuestIa32Efer, and_not(Efer::LME.bits()), "guest.efer.lme");
        expect_variant(
            |v| v.set_bits(F::EntryControls, bits32(EntryCtls::LOAD_BNDCFGS.bits())),
            F::GuestIa32Bndcfgs,
            to(4),
            "guest.bndcfgs",
        );
        expect_variant(
            |v| v.set_bits(F::EntryControls, bits32(EntryCtls::LOAD_BNDCFGS.bits())),
            F::GuestIa32Bndcfgs,
            to(0x0000_8000_0000_0001),
            "guest.bndcfgs",
        );
    }

    #[test]
    fn cet_pkrs_uinv() {
        let loads = |v: &mut TestVmcs| {
            let bits = EntryCtls::LOAD_CET_STATE | EntryCtls::LOAD_PKRS | EntryCtls::LOAD_UINV;
            v.set_bits(F::EntryControls, bits32(bits.bits()));
            v.set(F::GuestSsp, 0xffff_c900_0001_0000);
        };
        let cases: [(VmcsField, u64, &str); 7] = [
            (F::GuestIa32SCet, 1 << 9, "guest.s_cet"),
            (F::GuestIa32SCet, 1 << 47, "guest.s_cet"),
            (F::GuestIa32InterruptSspTableAddr, 1 << 47, "guest.interrupt_ssp_table"),
            (F::GuestIa32Pkrs, 1 << 32, "guest.pkrs"),
            (F::GuestUinv, 0x100, "guest.uinv"),
            (F::GuestSsp, 0xffff_c900_0001_0001, "guest.ssp"),
            (F::GuestSsp, 1 << 47, "guest.ssp"),
        ];
        for (field, value, id) in cases {
            expect_variant(loads, field, to(value), id);
        }
        // Outside 64-bit mode the SSP is 32 bits.
        expect_variant(
            |v| {
                loads(v);
                make_guest_protected_32(v);
                v.set(F::GuestSsp, 0x8000);
            },
            F::GuestSsp,
            to(1 << 32),
            "guest.ssp",
        );
    }

    // 27.3.1.2.

    #[test]
    fn selectors() {
        expect(F::GuestTrSelector, or(4), "guest.tr.ti");
        expect_variant(usable_ldtr, F::GuestLdtrSelector, or(4), "guest.ldtr.ti");
        expect_variant(restricted, F::GuestSsSelector, or(3), "guest.ss.rpl");
    }

    #[test]
    fn bases() {
        expect_variant(v86, F::GuestCsBase, |b| b + 0x10, "guest.v86.base");
        for field in [F::GuestTrBase, F::GuestFsBase, F::GuestGsBase] {
            expect(field, to(1 << 47), "guest.base.canonical");
        }
        expect_variant(usable_ldtr, F::GuestLdtrBase, to(1 << 47), "guest.base.canonical");
        expect(F::GuestCsBase, to(1 << 32), "guest.cs.base");
        for field in [F::GuestSsBase, F::GuestDsBase, F::GuestEsBase] {
            expect(field, to(1 << 32), "guest.base.upper");
        }
        // FS and GS bases may be 64-bit, an unusable SS's base anything.
        let mut v = baseline();
        v.set(F::GuestFsBase, 0xffff_8880_0000_0000);
        v.set(F::GuestSsAccessRights, 0x1_0000);
        v.set(F::GuestSsBase, 0xffff_8880_0000_0000);
        assert_eq!(check_all(&v, &TestMemory::default()), Ok(()));
    }

    #[test]
    fn virtual_8086() {
        expect_variant(v86, F::GuestDsLimit, to(0xf_ffff), "guest.v86.limit");
        expect_variant(v86, F::GuestEsAccessRights, to(0x93), "guest.v86.access_rights");
    }

    #[test]
    fn types() {
        expect(F::GuestCsAccessRights, to(0xa091), "guest.cs.type");
        expect_variant(restricted, F::GuestCsAccessRights, to(0xa093), "guest.cs.type");
        expect(F::GuestSsAccessRights, to(0xc09b), "guest.ss.type");
        expect(F::GuestDsAccessRights, to(0xc092), "guest.data.type");
        expect(F::GuestFsAccessRights, to(0xc099), "guest.data.type");
        expect(F::GuestEsAccessRights, to(0xc083), "guest.seg.s");
        expect(F::GuestCsAccessRights, to(0xa08b), "guest.seg.s");
    }

    #[test]
    fn privilege_levels() {
        expect(F::GuestCsAccessRights, to(0xa0fb), "guest.cs.dpl");
        expect_variant(
            |v| {
                restricted(v);
                v.set(F::GuestCsAccessRights, 0xa09f);
            },
            F::GuestSsAccessRights,
            to(0xc0f3),
            "guest.ss.dpl_rpl",
        );
        expect_variant(
            |v| v.set(F::GuestCsAccessRights, 0xa093),
            F::GuestSsAccessRights,
            to(0xc0f3),
            "guest.ss.dpl_real",
        );
        expect_variant(restricted, F::GuestDsSelector, to(0x13), "guest.data.dpl");
        // With "unrestricted guest" the RPL/DPL rules do not apply.
        let mut v = baseline();
        v.set(F::GuestDsSelector, 0x13);
        v.set(F::GuestSsSelector, 0x13);
        assert_eq!(check_all(&v, &TestMemory::default()), Ok(()));
    }

    #[test]
    fn present_reserved_granularity() {
        expect(F::GuestGsAccessRights, to(0xc013), "guest.seg.present");
        expect(F::GuestCsAccessRights, to(0xa01b), "guest.seg.present");
        expect(F::GuestFsAccessRights, or(0x100), "guest.seg.reserved");
        expect(F::GuestSsAccessRights, or(1 << 17), "guest.seg.reserved");
        expect(F::GuestCsAccessRights, or(1 << 14), "guest.cs.l_and_db");
        expect(F::GuestDsLimit, to(0xffff_fff0), "guest.seg.granularity");
        expect(F::GuestDsAccessRights, to(0x4093), "guest.seg.granularity");
        // An unusable data segment is not checked.
        let mut v = baseline();
        v.set(F::GuestFsAccessRights, 0x1_0000);
        assert_eq!(check_all(&v, &TestMemory::default()), Ok(()));
    }

    #[test]
    fn task_register() {
        expect(F::GuestTrAccessRights, to(0x83), "guest.tr.type");
        expect_variant(make_guest_protected_32, F::GuestTrAccessRights, to(0x89), "guest.tr.type");
        expect(F::GuestTrAccessRights, to(0x9b), "guest.system.s");
        expect(F::GuestTrAccessRights, to(0x0b), "guest.system.present");
        expect(F::GuestTrAccessRights, to(0x18b), "guest.system.reserved");
        expect(F::GuestTrLimit, to(0x10_0000), "guest.system.granularity");
        expect(F::GuestTrAccessRights, to(0x1_008b), "guest.tr.unusable");
        // A 16-bit busy TSS outside IA-32e mode.
        let mut v = baseline();
        make_guest_protected_32(&mut v);
        v.set(F::GuestTrAccessRights, 0x83);
        assert_eq!(check_all(&v, &TestMemory::default()), Ok(()));
    }

    #[test]
    fn ldtr() {
        expect_variant(usable_ldtr, F::GuestLdtrAccessRights, to(0x83), "guest.ldtr.type");
        expect_variant(usable_ldtr, F::GuestLdtrAccessRights, to(0x92), "guest.system.s");
        expect_variant(usable_ldtr, F::GuestLdtrAccessRights, to(0x02), "guest.system.present");
    }

    // 27.3.1.3.

    #[test]
    fn descriptor_tables() {
        expect(F::GuestGdtrBase, to(1 << 47), "guest.dtr.base");
        expect(F::GuestIdtrBase, to(1 << 48), "guest.dtr.base");
        expect(F::GuestIdtrLimit, to(0x1_0000), "guest.dtr.limit");
        expect(F::GuestGdtrLimit, to(0x1_0000), "guest.dtr.limit");
    }

    // 27.3.1.4.

    #[test]
    fn rip() {
        expect(F::GuestRip, to(1 << 47), "guest.rip.canonical");
        expect_variant(make_guest_protected_32, F::GuestRip, to(1 << 32), "guest.rip.upper");
        // Compatibility mode: CS.L = 0 in an IA-32e guest.
        expect_variant(
            |v| {
                v.set(F::GuestCsAccessRights, 0xc09b);
                v.set(F::GuestRip, 0x1000);
            },
            F::GuestRip,
            to(1 << 32),
            "guest.rip.upper",
        );
    }

    #[test]
    fn rflags() {
        expect(F::GuestRflags, to(0), "guest.rflags.reserved");
        expect(F::GuestRflags, or(1 << 15), "guest.rflags.reserved");
        expect(F::GuestRflags, or(1 << 22), "guest.rflags.reserved");
        expect_variant(
            |v| {
                v86(v);
                v.set_bits(F::GuestCr4, Cr4::PAE.bits());
            },
            F::EntryControls,
            or(u64::from(EntryCtls::IA32E_MODE_GUEST.bits())),
            "guest.rflags.vm",
        );
        expect_variant(
            inject(0x8000_0020),
            F::GuestRflags,
            and_not(Rflags::IF.bits()),
            "guest.rflags.if_for_interrupt",
        );
    }

    // 27.3.1.5.

    fn hlt(v: &mut TestVmcs) {
        v.set(F::GuestActivityState, ActivityState::Hlt as u64);
    }

    #[test]
    fn activity_state() {
        expect(F::GuestActivityState, to(4), "guest.activity.supported");
        let no_hlt = {
            let caps = everything();
            let misc = crate::caps::VmxMisc { activity_hlt: false, ..caps.misc() };
            caps.to_builder().misc(misc).build()
        };
        expect_with(&no_hlt, &TestMemory::default(), |_| {}, F::GuestActivityState, to(1), "guest.activity.supported");
        expect_variant(
            |v| {
                hlt(v);
                v.set(F::GuestCsAccessRights, 0xa09f);
            },
            F::GuestSsAccessRights,
            to(0xc0f3),
            "guest.activity.hlt_needs_dpl0",
        );
        expect_variant(hlt, F::GuestInterruptibilityState, to(2), "guest.activity.blocking_needs_active");
        expect_variant(hlt, F::EntryInterruptionInfo, to(0x8000_0306), "guest.activity.injection");
        let shutdown = |v: &mut TestVmcs| {
            v.set(F::GuestActivityState, ActivityState::Shutdown as u64);
            v.set_bits(F::GuestRflags, Rflags::IF.bits());
        };
        expect_variant(shutdown, F::EntryInterruptionInfo, to(0x8000_0020), "guest.activity.injection");
        let sipi = |v: &mut TestVmcs| v.set(F::GuestActivityState, ActivityState::WaitForSipi as u64);
        expect_variant(sipi, F::EntryInterruptionInfo, to(0x8000_0202), "guest.activity.injection");
        // What HLT and shutdown let through.
        for (activity, info) in
            [(1u64, 0x8000_0020u64), (1, 0x8000_0202), (1, 0x8000_0301), (1, 0x8000_0312), (2, 0x8000_0312)]
        {
            let mut v = baseline();
            v.set(F::GuestActivityState, activity);
            inject(info)(&mut v);
            assert_eq!(check_all(&v, &TestMemory::default()), Ok(()), "{activity} {info:#x}");
        }
    }

    #[test]
    fn interruptibility_state() {
        let with_if = |v: &mut TestVmcs| v.set_bits(F::GuestRflags, Rflags::IF.bits());
        expect(F::GuestInterruptibilityState, to(0x10), "guest.interruptibility.reserved");
        expect_variant(with_if, F::GuestInterruptibilityState, to(3), "guest.interruptibility.sti_and_mov_ss");
        expect(F::GuestInterruptibilityState, to(1), "guest.interruptibility.sti_needs_if");
        expect_variant(
            inject(0x8000_0020),
            F::GuestInterruptibilityState,
            to(2),
            "guest.interruptibility.external_interrupt",
        );
        expect_variant(
            inject(0x8000_0020),
            F::GuestInterruptibilityState,
            to(1),
            "guest.interruptibility.external_interrupt",
        );
        expect_variant(inject(0x8000_0202), F::GuestInterruptibilityState, to(2), "guest.interruptibility.nmi_mov_ss");
        expect(F::GuestInterruptibilityState, to(4), "guest.interruptibility.smi");
        let q = expect_with(
            &everything(),
            &TestMemory::default(),
            inject(0x8000_0202),
            F::GuestInterruptibilityState,
            to(8),
            "guest.interruptibility.nmi_blocked",
        );
        assert_eq!(q, Q::NmiInjection);
        // Without virtual NMIs, blocking by NMI does not stop the injection.
        let mut v = baseline();
        v.clear_bits(F::PrimaryProcControls, bits32(ProcCtls::NMI_WINDOW_EXITING.bits()));
        v.clear_bits(F::PinBasedControls, bits32(PinCtls::VIRTUAL_NMIS.bits()));
        inject(0x8000_0202)(&mut v);
        v.set(F::GuestInterruptibilityState, 8);
        assert_eq!(check_all(&v, &TestMemory::default()), Ok(()));
    }

    #[test]
    fn pending_debug_exceptions() {
        expect(F::GuestPendingDebugExceptions, to(0x10), "guest.pending_dbg.reserved");
        expect(F::GuestPendingDebugExceptions, to(1 << 16), "guest.pending_dbg.reserved");
        expect_variant(
            |v| {
                v.set(F::GuestRflags, (Rflags::FIXED1 | Rflags::IF | Rflags::TF).bits());
                v.set(F::GuestInterruptibilityState, 1);
                v.set(F::GuestPendingDebugExceptions, 1 << 14);
            },
            F::GuestPendingDebugExceptions,
            to(0),
            "guest.pending_dbg.bs_set",
        );
        expect_variant(hlt, F::GuestPendingDebugExceptions, to(1 << 14), "guest.pending_dbg.bs_clear");
        // With BTF, a single step is not pending after the blocking
        // instruction.
        expect_variant(
            |v| {
                v.set(F::GuestRflags, (Rflags::FIXED1 | Rflags::TF).bits());
                v.set(F::GuestIa32Debugctl, 2);
                hlt(v);
            },
            F::GuestPendingDebugExceptions,
            to(1 << 14),
            "guest.pending_dbg.bs_clear",
        );
    }

    #[test]
    fn vmcs_link_pointer() {
        let revision = everything().revision_id();
        let good = TestMemory { vmcs_header: revision | 1 << 31, ..TestMemory::default() };
        let q = expect_with(
            &everything(),
            &good,
            |_| {},
            F::VmcsLinkPointer,
            to(0x5001),
            "guest.vmcs_link_pointer.address",
        );
        assert_eq!(q, Q::VmcsLinkPointer);
        let q = expect_with(
            &everything(),
            &good,
            |_| {},
            F::VmcsLinkPointer,
            to(1 << 40),
            "guest.vmcs_link_pointer.address",
        );
        assert_eq!(q, Q::VmcsLinkPointer);
        let wrong = TestMemory { vmcs_header: (revision ^ 1) | 1 << 31, ..TestMemory::default() };
        let q = expect_with(
            &everything(),
            &wrong,
            |_| {},
            F::VmcsLinkPointer,
            to(0x5000),
            "guest.vmcs_link_pointer.revision",
        );
        assert_eq!(q, Q::VmcsLinkPointer);
        let not_shadow = TestMemory { vmcs_header: revision, ..TestMemory::default() };
        let q = expect_with(
            &everything(),
            &not_shadow,
            |_| {},
            F::VmcsLinkPointer,
            to(0x5000),
            "guest.vmcs_link_pointer.shadow",
        );
        assert_eq!(q, Q::VmcsLinkPointer);
    }

    // 27.3.1.6.

    #[test]
    fn pdptes() {
        let q =
            expect_with(&everything(), &TestMemory::default(), pae_32, F::GuestPdpte2, to(0x1021), "guest.pdpte.field");
        assert_eq!(q, Q::PdpteLoading);
        let q = expect_with(
            &everything(),
            &TestMemory::default(),
            pae_32,
            F::GuestPdpte0,
            to(1 << 40 | 1),
            "guest.pdpte.field",
        );
        assert_eq!(q, Q::PdpteLoading);
        let bad = TestMemory { pdptes: [0x1001, 0x2001 | 1 << 63, 0, 0], ..TestMemory::default() };
        let q = expect_with(
            &everything(),
            &bad,
            |v| {
                no_ept(v);
                make_guest_protected_32(v);
            },
            F::GuestCr4,
            or(Cr4::PAE.bits()),
            "guest.pdpte.memory",
        );
        assert_eq!(q, Q::PdpteLoading);
    }

    /// A hostile VMCS (every guest-state, host-state and control field
    /// random) never makes the checks panic, under any environment.
    #[test]
    fn random_vmcs_never_panics() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let envs = [
            EntryEnv::TURTLES,
            EntryEnv { maxphyaddr: 64, linear_width: 64, ia32e_mode: false },
            EntryEnv { maxphyaddr: 0, linear_width: 0, ia32e_mode: true },
        ];
        let mut failures = 0;
        for round in 0..2000 {
            let mut v = baseline();
            for _ in 0..(1 + round % 8) {
                let field = VmcsField::ALL[next() as usize % VmcsField::ALL.len()];
                let value = next() & field.value_mask();
                v.set(field, value);
            }
            let memory = TestMemory { pdptes: [next(), next(), next(), next()], vmcs_header: next() as u32 };
            for env in &envs {
                failures += usize::from(check_vm_entry(&v, &everything(), env, &memory).is_err());
            }
        }
        assert!(failures > 0);
    }

    /// Every check id in this file has a negative test above.
    #[test]
    fn every_check_has_a_negative_test() {
        assert_every_id_tested(include_str!("guest.rs"), "guest.", 60);
    }
}
