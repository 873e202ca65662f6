//! L0: the hypervisor that runs every guest as a VM on Turtles' CPU, the
//! way KVM runs guests on VT-x (Intel SDM vol. 3C, ch. 24-29).
//!
//! Each vCPU is one [`Cpu`] in VMX operation with a VMCS L0 built for it
//! (vmcs01). L0 talks to the CPU only through its VMX API — `vmxon`,
//! `vmptrld`, `vmread`/`vmwrite`, `vm_enter`, `run` until a VM exit, the
//! guest's general-purpose registers, and the instruction emulator (the
//! counterpart of KVM's `emulate.c`) — so this file would read the same
//! on hardware.
//!
//! What vmcs01 asks for, and why:
//! - EPT01 maps guest RAM one to one (1 GiB and 2 MiB pages) and nothing
//!   else: every device page is an EPT violation that L0 emulates against
//!   the platform. The tables live in private physical memory no guest
//!   maps. Unrestricted guest lets guests start in real mode; VPIDs keep
//!   their TLB entries across exits. The one exception: EPT12 table pages
//!   an EPT02 was built from are read-only while watched (split to 4 KiB
//!   pages), so that L1's writes to them reach L0, which single-steps
//!   them and drops the EPT02s when a present entry changed
//!   (`nested::Ept12Watch`, the `nested` crate's `watch`);
//!   `Vcpu::ept01_fault` is the one place that tells such a write from a
//!   device access.
//! - Every port exits (I/O bitmaps all ones): ports are devices.
//! - MSRs the CPU itself implements pass through the MSR bitmap; the rest
//!   exit and are answered from the VM's [`CpuPolicy`] or the platform
//!   (local APIC), or raise #GP.
//! - CPUID always exits and is answered from the policy.
//! - HLT exits: L0 puts the vCPU to sleep until an interrupt is pending.
//! - CR0.NE and CR4.VMXE are host-owned (VMX operation needs them set;
//!   the guest sees its own values through the read shadows); CR8 accesses
//!   exit to reach the local APIC's TPR.
//! - Interrupts are injected at VM entry (27.6 "Event Injection") when the
//!   guest can take them, else an interrupt window is requested. The CPU's
//!   own interrupt lines are idle: platform interrupts only change while
//!   L0 runs (between slices and in exit handlers), so L0 always sees them
//!   before the next entry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use cpu::ept::EptBuilder;
use cpu::virt::{write_guest_registers, EXIT_REASONS};
use cpu::{Activity, Bus, Cpu, CpuidModel, Memory, RunExit};
use thiserror::Error;
use tracing::trace;
use vmx::caps::ControlWord;
use vmx::controls::{EntryCtls, EptEntry, ExitCtls, Interruptibility, MemoryType, PinCtls, ProcCtls, ProcCtls2};
use vmx::exit::{CrAccess, CrAccessType, IoAccess, IoSize};
use vmx::{ExitReason, Vmcs, VmcsField as F, VmxCaps};
use x86::{vector, Cr0, Cr4, Efer, Rflags};

use crate::policy::CpuPolicy;
use crate::trace_targets::VMEXIT;

mod nested;
mod shadow_vmcs;

use nested::Ept01Fault;

/// Host-state values of vmcs01: L0's own (64-bit, flat) context. L0 runs
/// outside the CPU, so these only have to pass the host-state checks.
const HOST_CR3: u64 = 0x1000;
const HOST_RIP: u64 = 0xffff_8000_0000_0000;

/// MSRs Turtles' CPU implements itself; guests access them without an
/// exit unless the policy overrides them.
const PASSTHROUGH_MSRS: &[u32] = &[
    0x10,        // IA32_TSC
    0x17,        // IA32_PLATFORM_ID
    0x3a,        // IA32_FEATURE_CONTROL
    0x3b,        // IA32_TSC_ADJUST
    0x8b,        // IA32_BIOS_SIGN_ID
    0x198,       // IA32_PERF_STATUS
    0xda0,       // IA32_XSS
    0x48,        // IA32_SPEC_CTRL
    0x174,       // IA32_SYSENTER_CS
    0x175,       // IA32_SYSENTER_ESP
    0x176,       // IA32_SYSENTER_EIP
    0x179,       // IA32_MCG_CAP
    0x17a,       // IA32_MCG_STATUS
    0x1a0,       // IA32_MISC_ENABLE
    0x1d9,       // IA32_DEBUGCTL
    0x277,       // IA32_PAT
    0xfe,        // IA32_MTRRCAP
    0x2ff,       // IA32_MTRR_DEF_TYPE
    0xc000_0080, // IA32_EFER
    0xc000_0081, // IA32_STAR
    0xc000_0082, // IA32_LSTAR
    0xc000_0083, // IA32_CSTAR
    0xc000_0084, // IA32_FMASK
    0xc000_0100, // IA32_FS_BASE
    0xc000_0101, // IA32_GS_BASE
    0xc000_0102, // IA32_KERNEL_GS_BASE
    0xc000_0103, // IA32_TSC_AUX
];

/// MTRR ranges the CPU implements (variable and fixed).
const PASSTHROUGH_RANGES: &[(u32, u32)] = &[(0x200, 0x213), (0x250, 0x250), (0x258, 0x259), (0x268, 0x26f)];

/// MSRs a policy may define that software cannot write.
fn read_only_msr(msr: u32) -> bool {
    matches!(msr, 0xce | 0x10a | 0x480..=0x493)
}

/// Why L0 could not set a VM up.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum L0Error {
    /// Private memory for EPT01 and the bitmaps ran out.
    #[error("L0 private memory exhausted while building EPT01")]
    OutOfPrivateMemory,
}

/// The per-VM structures every vmcs01 points to: EPT01 and the bitmaps,
/// in private memory; and the EPT12 pages all vCPUs watch in EPT01.
#[derive(Clone, Debug)]
pub struct L0Shared {
    eptp: u64,
    io_bitmaps: [u64; 2],
    msr_bitmap: u64,
    watch: Arc<nested::Ept12Watch>,
}

impl L0Shared {
    /// Builds EPT01 (guest RAM, one to one) and the I/O and MSR bitmaps.
    pub fn new(mem: &mut Memory, policy: &CpuPolicy) -> Result<L0Shared, L0Error> {
        let oom = |_| L0Error::OutOfPrivateMemory;
        let mut ept = EptBuilder::new(mem, |m: &mut Memory| m.alloc_private_page()).map_err(oom)?;
        let low = mem.low_end();
        ept.map(mem, 0, 0, low, EptEntry::RWX, MemoryType::WriteBack).map_err(oom)?;
        if mem.high_end() > cpu::mem::HIGH_RAM_BASE {
            let base = cpu::mem::HIGH_RAM_BASE;
            ept.map(mem, base, base, mem.high_end() - base, EptEntry::RWX, MemoryType::WriteBack).map_err(oom)?;
        }
        let page = |mem: &mut Memory| mem.alloc_private_page().ok_or(L0Error::OutOfPrivateMemory);
        let io = [page(mem)?, page(mem)?];
        for b in io {
            mem.write_phys(b, &[0xff; 4096]).map_err(|_| L0Error::OutOfPrivateMemory)?;
        }
        // MSR bitmap: all exit, then clear the CPU's own MSRs.
        let msr_bitmap = page(mem)?;
        mem.write_phys(msr_bitmap, &[0xff; 4096]).map_err(|_| L0Error::OutOfPrivateMemory)?;
        let ranges = PASSTHROUGH_MSRS.iter().map(|&m| (m, m)).chain(PASSTHROUGH_RANGES.iter().copied());
        for (first, last) in ranges {
            for msr in first..=last {
                if policy.msrs.contains_key(&msr) {
                    continue;
                }
                let (base, bit) = if msr >= 0xc000_0000 { (1024, msr - 0xc000_0000) } else { (0, msr) };
                for half in [0u64, 2048] {
                    let byte = msr_bitmap + base + half + u64::from(bit / 8);
                    let mut b = [0u8];
                    let _ = mem.read_phys(byte, &mut b);
                    let _ = mem.write_phys(byte, &[b[0] & !(1 << (bit % 8))]);
                }
            }
        }
        Ok(L0Shared { eptp: ept.eptp(), io_bitmaps: io, msr_bitmap, watch: Arc::default() })
    }
}

/// Exits handled, per basic reason: how many and the host time spent in
/// L0's handler plus the entry (when timing is on).
#[derive(Clone, Debug)]
pub struct ExitStats {
    /// Exits by basic reason.
    pub count: [u64; EXIT_REASONS],
    /// Host nanoseconds from the exit to the next entry, by reason.
    pub host_ns: [u64; EXIT_REASONS],
    /// Of `count`, the exits of an L2 (a guest of a guest hypervisor).
    pub from_l2: [u64; EXIT_REASONS],
    /// L2 exits L0 reflected to L1 (virtual VM exits).
    pub reflected: u64,
    /// Virtual VM entries into L2 (VMLAUNCH/VMRESUME of L1 that entered).
    pub l2_entries: u64,
    /// Writes to watched EPT12 pages L0 caught (L1's, or an L2's).
    pub ept12_writes: u64,
    /// Times every EPT02 was dropped because of such a write.
    pub ept02_drops: u64,
    /// VM entries that failed a check, explained (the first
    /// [`MAX_EXPLAINED`]).
    pub entry_failures: Vec<String>,
}

/// How many failed VM entries a run explains.
pub const MAX_EXPLAINED: usize = 32;

impl Default for ExitStats {
    fn default() -> Self {
        ExitStats {
            count: [0; EXIT_REASONS],
            host_ns: [0; EXIT_REASONS],
            from_l2: [0; EXIT_REASONS],
            reflected: 0,
            l2_entries: 0,
            ept12_writes: 0,
            ept02_drops: 0,
            entry_failures: Vec::new(),
        }
    }
}

impl ExitStats {
    /// Adds another vCPU's (or machine's) counts.
    pub fn add(&mut self, o: &ExitStats) {
        for i in 0..EXIT_REASONS {
            self.count[i] += o.count[i];
            self.host_ns[i] += o.host_ns[i];
            self.from_l2[i] += o.from_l2[i];
        }
        self.reflected += o.reflected;
        self.l2_entries += o.l2_entries;
        self.ept12_writes += o.ept12_writes;
        self.ept02_drops += o.ept02_drops;
        let room = MAX_EXPLAINED.saturating_sub(self.entry_failures.len());
        self.entry_failures.extend(o.entry_failures.iter().take(room).cloned());
    }

    /// (name, count, host ns) of every reason seen, most frequent first.
    pub fn rows(&self) -> Vec<(&'static str, u64, u64)> {
        let mut v: Vec<_> = (0..EXIT_REASONS)
            .filter(|&i| self.count[i] > 0)
            .map(|i| {
                (ExitReason::from_basic(i as u16).map_or("unknown", ExitReason::name), self.count[i], self.host_ns[i])
            })
            .collect();
        v.sort_by_key(|r| std::cmp::Reverse(r.1));
        v
    }

    /// Total exits.
    pub fn total(&self) -> u64 {
        self.count.iter().sum()
    }

    /// Exits of L2s.
    pub fn total_from_l2(&self) -> u64 {
        self.from_l2.iter().sum()
    }

    /// One line per level: what L0 saw from L1 and from L2, and what it
    /// passed on to L1.
    pub fn levels_summary(&self) -> String {
        let l2 = self.total_from_l2();
        let top = |counts: &[u64; EXIT_REASONS]| {
            let mut v: Vec<(usize, u64)> = counts.iter().copied().enumerate().filter(|c| c.1 > 0).collect();
            v.sort_by_key(|c| std::cmp::Reverse(c.1));
            v.iter()
                .take(6)
                .map(|&(i, n)| format!("{} {n}", ExitReason::from_basic(i as u16).map_or("unknown", ExitReason::name)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let mut l1 = self.count;
        for (a, b) in l1.iter_mut().zip(self.from_l2.iter()) {
            *a -= b;
        }
        format!(
            "L0 exits from L1: {} ({})\nL0 exits from L2: {l2} ({})\nL2 exits reflected to L1: {}, L2 entries: {}, \
             EPT12 writes: {} (EPT02 dropped {})\n",
            self.total() - l2,
            top(&l1),
            top(&self.from_l2),
            self.reflected,
            self.l2_entries,
            self.ept12_writes,
            self.ept02_drops
        )
    }
}

/// How a vCPU runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuMode {
    /// As a VM under L0, in VMX non-root operation.
    L0,
    /// Directly on the CPU, without VMX (for comparison and debugging).
    Direct,
}

/// What an exit handler decided.
enum Next {
    /// Enter the guest again.
    Resume,
    /// Return to the scheduler with this.
    Return(RunExit),
}

/// One vCPU: the CPU, L0's view of its guest, and exit statistics.
pub struct Vcpu {
    /// The CPU.
    pub cpu: Cpu,
    /// L0 or direct.
    pub mode: VcpuMode,
    /// The answers to CPUID (the policy with this vCPU's topology).
    cpuid: CpuidModel,
    /// Policy MSRs, with the writes the guest made to writable ones.
    msrs: BTreeMap<u32, u64>,
    shared: Option<L0Shared>,
    /// The guest executed HLT: it sleeps until an interrupt (L0's HLT).
    halted: bool,
    /// Waiting for a startup IPI.
    wait_sipi: bool,
    /// An NMI the guest could not take yet.
    nmi_pending: bool,
    /// The platform's interrupt state may have changed since L0 last
    /// looked (a new slice, a device access): look before the next entry.
    poll_irq: bool,
    /// Nested VMX, when the policy offers VMX to the guest.
    nested: Option<nested::NestedState>,
    /// Measure host time per exit (costs two clock reads per exit).
    pub timing: bool,
    /// Exits handled.
    pub exits: ExitStats,
}

impl Vcpu {
    /// A vCPU that runs `cpu` (in its loader or reset state) directly.
    pub fn direct(cpu: Cpu) -> Vcpu {
        let cpuid = cpu.cpuid.clone();
        Vcpu {
            cpu,
            mode: VcpuMode::Direct,
            cpuid,
            msrs: BTreeMap::new(),
            shared: None,
            halted: false,
            wait_sipi: false,
            nmi_pending: false,
            poll_irq: true,
            nested: None,
            timing: false,
            exits: ExitStats::default(),
        }
    }

    /// A vCPU that runs `cpu`'s current state as a VM under L0.
    pub fn under_l0(cpu: Cpu, shared: L0Shared, policy: &CpuPolicy) -> Vcpu {
        let mut v = Vcpu::direct(cpu);
        v.mode = VcpuMode::L0;
        let io_bitmaps = shared.io_bitmaps;
        v.shared = Some(shared);
        v.msrs = policy.readable_msrs();
        v.nested = policy.vmx.map(|caps| nested::NestedState {
            vmx: ::nested::NestedVmx::new(caps),
            vmcs01: None,
            vmcs02: None,
            l2_active: false,
            shadow: None,
            res: ::nested::merge::Vmcs02Resources {
                io_bitmaps,
                // Each vCPU's vmcs02 gets its own merged MSR bitmap, at its
                // first virtual VM entry.
                msr_bitmap: 0,
                eptp02: None,
                vpid02: 0x8000 | (v.cpu.apic_id as u16 + 1),
            },
            last_env: None,
            merged_for: None,
            merged_vmcs01: [0; 10],
            vmcs_shadowing: shadow_vmcs::VmcsShadowing::default(),
            seen_ept01_changes: 0,
            seen_ept12_writes: 0,
            table_write_step: None,
            l1_table_write: None,
        });
        if v.cpu.activity == Activity::WaitForSipi {
            v.wait_sipi = true;
        } else {
            v.build_vmcs01();
        }
        v
    }

    /// L0's view of the guest's activity.
    pub fn activity(&self) -> Activity {
        match self.mode {
            VcpuMode::Direct => self.cpu.activity,
            VcpuMode::L0 if self.wait_sipi => Activity::WaitForSipi,
            VcpuMode::L0 if self.halted => Activity::Halted,
            VcpuMode::L0 if self.cpu.in_non_root() => self.cpu.activity,
            VcpuMode::L0 => Activity::Active,
        }
    }

    /// Whether the guest has RFLAGS.IF set.
    pub fn interrupts_enabled(&self) -> bool {
        self.cpu.guest_regs().rflags() & Rflags::IF.bits() != 0
    }

    /// INIT: the vCPU goes back to its reset state and waits for SIPI.
    pub fn init(&mut self) {
        self.cpu.init();
        if let Some(n) = self.nested.as_mut() {
            n.vmx = ::nested::NestedVmx::new(*n.vmx.caps());
            n.vmcs01 = None;
            n.l2_active = false;
            n.table_write_step = None;
            // A write of L1 to a watched page left unfinished: the page
            // stays writable, so every EPT02 goes before anything runs.
            if n.l1_table_write.take().is_some() {
                if let Some(sh) = self.shared.as_ref() {
                    sh.watch_written_elsewhere();
                }
            }
        }
        self.halted = false;
        self.nmi_pending = false;
        if self.mode == VcpuMode::L0 {
            self.wait_sipi = true;
        }
    }

    /// Startup IPI: starts a vCPU waiting for one in real mode at
    /// `vector << 12`.
    pub fn sipi(&mut self, vector: u8) {
        match self.mode {
            VcpuMode::Direct => self.cpu.sipi(vector),
            VcpuMode::L0 if self.wait_sipi => {
                self.cpu.sipi(vector);
                self.wait_sipi = false;
                self.build_vmcs01();
            }
            VcpuMode::L0 => {}
        }
    }

    /// vmcs01 for the CPU's current register state: VMXON, a fresh VMCS
    /// with L0's controls, EPT01 and host state, and the registers as the
    /// guest state (SDM 25.11.3 "Initializing a VMCS").
    fn build_vmcs01(&mut self) {
        let Some(shared) = self.shared.clone() else { return };
        let caps = VmxCaps::processor();
        self.cpu.vmxon(caps);
        let mut v = Box::new(Vmcs::new());
        let adjust = |w: ControlWord, bits: u64| caps.adjust(w, bits);
        let exit = ExitCtls::HOST_ADDRESS_SPACE_SIZE
            | ExitCtls::SAVE_EFER
            | ExitCtls::LOAD_EFER
            | ExitCtls::SAVE_PAT
            | ExitCtls::LOAD_PAT
            | ExitCtls::SAVE_DEBUG_CONTROLS;
        let exit = ExitCtls::from_bits_retain(adjust(ControlWord::Exit, u64::from(exit.bits())) as u32);
        let regs = &mut self.cpu.regs;
        // Host-owned bits: CR0.NE and CR4.VMXE are 1 in VMX operation;
        // the guest reads its own values from the shadows.
        let cr0_shadow = regs.cr0;
        let cr4_shadow = regs.cr4;
        regs.cr0 |= Cr0::NE.bits();
        regs.cr4 |= Cr4::VMXE.bits();
        let rflags = regs.rflags();
        write_guest_registers(&mut v, regs, rflags, exit);
        v.set(F::GuestIa32Efer, regs.efer);
        v.set(F::GuestIa32Pat, regs.msr.pat);
        v.set(F::GuestDr7, regs.dr[7]);
        v.set(F::GuestIa32Debugctl, regs.msr.debugctl);
        v.set(F::VmcsLinkPointer, u64::MAX);
        v.set(F::GuestActivityState, 0);
        let pin = PinCtls::EXTERNAL_INTERRUPT_EXITING | PinCtls::NMI_EXITING | PinCtls::VIRTUAL_NMIS;
        let proc = ProcCtls::HLT_EXITING
            | ProcCtls::USE_IO_BITMAPS
            | ProcCtls::USE_MSR_BITMAPS
            | ProcCtls::CR8_LOAD_EXITING
            | ProcCtls::CR8_STORE_EXITING
            | ProcCtls::ACTIVATE_SECONDARY_CONTROLS;
        let mut proc2 = ProcCtls2::ENABLE_EPT | ProcCtls2::ENABLE_VPID | ProcCtls2::UNRESTRICTED_GUEST;
        let f = self.cpuid.features();
        if f.rdtscp || f.rdpid {
            proc2 |= ProcCtls2::ENABLE_RDTSCP;
        }
        if f.invpcid {
            proc2 |= ProcCtls2::ENABLE_INVPCID;
        }
        v.set(F::PinBasedControls, adjust(ControlWord::Pin, u64::from(pin.bits())));
        v.set(F::PrimaryProcControls, adjust(ControlWord::Proc, u64::from(proc.bits())));
        v.set(F::SecondaryProcControls, adjust(ControlWord::Proc2, u64::from(proc2.bits())));
        v.set(F::ExitControls, u64::from(exit.bits()));
        let entry = EntryCtls::LOAD_EFER | EntryCtls::LOAD_PAT | EntryCtls::LOAD_DEBUG_CONTROLS;
        v.set(F::EntryControls, adjust(ControlWord::Entry, u64::from(entry.bits())));
        v.set(F::Cr0GuestHostMask, Cr0::NE.bits());
        v.set(F::Cr0ReadShadow, cr0_shadow);
        v.set(F::Cr4GuestHostMask, Cr4::VMXE.bits());
        v.set(F::Cr4ReadShadow, cr4_shadow);
        v.set(F::IoBitmapA, shared.io_bitmaps[0]);
        v.set(F::IoBitmapB, shared.io_bitmaps[1]);
        v.set(F::MsrBitmap, shared.msr_bitmap);
        v.set(F::EptPointer, shared.eptp);
        v.set(F::VirtualProcessorId, u64::from(self.cpu.apic_id) + 1);
        v.set(F::HostCr0, (Cr0::PE | Cr0::PG | Cr0::NE | Cr0::ET).bits());
        v.set(F::HostCr3, HOST_CR3);
        v.set(F::HostCr4, (Cr4::PAE | Cr4::VMXE).bits());
        v.set(F::HostIa32Efer, (Efer::LME | Efer::LMA).bits());
        v.set(F::HostIa32Pat, 0x0007_0406_0007_0406);
        v.set(F::HostCsSelector, 0x08);
        for f in [F::HostSsSelector, F::HostDsSelector, F::HostEsSelector, F::HostFsSelector, F::HostGsSelector] {
            v.set(f, 0x10);
        }
        v.set(F::HostTrSelector, 0x18);
        v.set(F::HostRip, HOST_RIP);
        v.set(F::HostRsp, HOST_RIP + 0x8000);
        self.cpu.vmptrld(v);
    }

    /// Runs the guest for up to `budget` instructions. `bus` is the
    /// platform as this vCPU sees it.
    pub fn run(&mut self, mem: &mut Memory, bus: &mut dyn Bus, budget: u64) -> RunExit {
        if self.mode == VcpuMode::Direct {
            return self.cpu.run(mem, bus, budget);
        }
        if self.wait_sipi {
            return RunExit::Halted;
        }
        // What other vCPUs did to EPT01 and EPT12 while this one waited.
        self.sync_ept12_watch(mem);
        let end = self.cpu.icount.saturating_add(budget);
        self.poll_irq = true;
        // A guest paused in non-root operation at the end of its last
        // slice cannot see interrupts that became pending since: they
        // reach the CPU as an external interrupt, which exits (pin-based
        // "external-interrupt exiting"), and L0 injects at the next entry.
        let mut lines = HostLines { external: false };
        if self.cpu.in_non_root() {
            let now = self.cpu.now_ns();
            self.nmi_pending |= bus.take_nmi();
            lines.external = self.nmi_pending || bus.interrupt_pending(now);
        }
        loop {
            if !self.cpu.in_non_root() {
                if self.halted {
                    if !self.wakes(bus) {
                        return RunExit::Halted;
                    }
                    self.halted = false;
                }
                if self.poll_irq && self.l2_interrupt_exit(mem, bus) {
                    continue;
                }
                self.inject_events(bus);
                self.sync_entry_controls();
                let launch = !self.current_launched();
                let entry = self.cpu.vm_enter(mem, bus, launch);
                if let (cpu::virt::VmEntry::Failed(e), true) =
                    (entry, self.nested.as_ref().is_some_and(|n| n.l2_active))
                {
                    // vmcs02's failure is L1's entry failing (27.8).
                    self.vmcs02_entry_failed(e);
                    self.link_vmcs12(mem);
                    continue;
                }
                if entry != cpu::virt::VmEntry::Entered {
                    if let Some(stop) = nested::entry_shutdown(entry) {
                        return stop;
                    }
                }
            }
            let left = end.saturating_sub(self.cpu.icount);
            if left == 0 && !self.l1_table_write_pending() {
                return RunExit::Budget;
            }
            // The CPU's own interrupt lines carry only that one external
            // interrupt: everything the guest receives, L0 injects.
            let exit = self.cpu.run(mem, &mut lines, left.max(1));
            lines.external = false;
            match exit {
                RunExit::VmExit => {}
                other => return other,
            }
            let start = self.timing.then(Instant::now);
            let reason = self.cpu.vmread(F::ExitReason) as u16;
            let from_l2 = self.nested.as_ref().is_some_and(|n| n.l2_active);
            if from_l2 {
                self.exits.from_l2[usize::from(reason) % EXIT_REASONS] += 1;
            }
            let next = if from_l2 { self.l2_exit(mem, bus, reason) } else { self.handle_exit(mem, bus, reason) };
            let i = usize::from(reason) % EXIT_REASONS;
            self.exits.count[i] += 1;
            if let Some(t) = start {
                self.exits.host_ns[i] += t.elapsed().as_nanos() as u64;
            }
            if let Next::Return(r) = next {
                return r;
            }
            if bus.stop_requested() {
                return RunExit::Stopped;
            }
        }
    }

    /// Whether a sleeping guest has something to wake for.
    fn wakes(&mut self, bus: &mut dyn Bus) -> bool {
        if self.nmi_pending {
            return true;
        }
        let now = self.cpu.now_ns();
        self.cpu.vmread(F::GuestRflags) & Rflags::IF.bits() != 0 && bus.interrupt_pending(now)
    }

    /// The IA-32e-mode-guest entry control follows the guest's EFER.LMA
    /// (27.3.1.1 requires them equal when EFER is loaded).
    fn sync_entry_controls(&mut self) {
        let lma = self.cpu.vmread(F::GuestIa32Efer) & Efer::LMA.bits() != 0;
        let bit = u64::from(EntryCtls::IA32E_MODE_GUEST.bits());
        let ctl = self.cpu.vmread(F::EntryControls);
        let want = if lma { ctl | bit } else { ctl & !bit };
        if want != ctl {
            self.cpu.vmwrite(F::EntryControls, want);
        }
    }

    /// Event injection before VM entry (SDM 27.6): a pending NMI or the
    /// platform's highest interrupt when the guest can take it, otherwise
    /// an NMI or interrupt window to be told when it can.
    fn inject_events(&mut self, bus: &mut dyn Bus) {
        if !self.poll_irq || self.cpu.vmread(F::EntryInterruptionInfo) & (1 << 31) != 0 {
            return; // nothing new, or an event is already on its way in
        }
        self.poll_irq = false;
        let now = self.cpu.now_ns();
        self.nmi_pending |= bus.take_nmi();
        let intr = Interruptibility::from_bits_retain(self.cpu.vmread(F::GuestInterruptibilityState) as u32);
        let shadow = intr.intersects(Interruptibility::BLOCKING_BY_STI | Interruptibility::BLOCKING_BY_MOV_SS);
        let before = self.cpu.vmread(F::PrimaryProcControls);
        let mut proc = ProcCtls::from_bits_retain(before as u32);
        let windows = ProcCtls::NMI_WINDOW_EXITING | ProcCtls::INTERRUPT_WINDOW_EXITING;
        proc.remove(windows);
        // While L2 runs, the windows vmcs12 asks for are L1's, not L0's to
        // take away.
        proc |= self.l1_windows() & windows;
        if self.nmi_pending {
            if !shadow && !intr.contains(Interruptibility::BLOCKING_BY_NMI) {
                self.nmi_pending = false;
                self.cpu.vmwrite(F::EntryInterruptionInfo, (1 << 31) | (2 << 8) | u64::from(vector::NMI));
            } else {
                proc.insert(ProcCtls::NMI_WINDOW_EXITING);
            }
        } else if bus.interrupt_pending(now) {
            let if_set = self.cpu.vmread(F::GuestRflags) & Rflags::IF.bits() != 0;
            if if_set && !shadow {
                if let Some(v) = bus.ack_interrupt(now) {
                    self.cpu.vmwrite(F::EntryInterruptionInfo, (1 << 31) | u64::from(v));
                }
            } else {
                proc.insert(ProcCtls::INTERRUPT_WINDOW_EXITING);
            }
        }
        // A VMWRITE to a control makes the next entry re-run every check:
        // write only what changed.
        if u64::from(proc.bits()) != before {
            self.cpu.vmwrite(F::PrimaryProcControls, u64::from(proc.bits()));
        }
    }

    /// The interrupt- and NMI-window controls L1 set in vmcs12, while L2
    /// runs (none otherwise).
    fn l1_windows(&self) -> ProcCtls {
        match self.nested.as_ref() {
            Some(n) if n.l2_active => n
                .vmx
                .current()
                .map_or(ProcCtls::empty(), |v| ProcCtls::from_bits_retain(v.vmcs().get(F::PrimaryProcControls) as u32)),
            _ => ProcCtls::empty(),
        }
    }

    /// Injects hardware exception `vector` (with error code `code`) at the
    /// next entry.
    fn inject_exception(&mut self, vector: u8, code: Option<u32>) {
        let ec = if code.is_some() { 1 << 11 } else { 0 };
        self.cpu.vmwrite(F::EntryInterruptionInfo, (1 << 31) | ec | (3 << 8) | u64::from(vector));
        self.cpu.vmwrite(F::EntryExceptionErrorCode, u64::from(code.unwrap_or(0)));
    }

    /// The CR0/CR4 bits L0 intercepts: always CR0.NE and CR4.VMXE (which
    /// VMX operation needs set under the guest); while L1 is itself in VMX
    /// operation, every bit IA32_VMX_CR0/CR4_FIXED0 fixes to 1, so that
    /// clearing one can be refused.
    pub(crate) fn vmx_cr_masks(&mut self, l1_in_vmx_operation: bool) {
        let (mut m0, mut m4) = (Cr0::NE.bits(), Cr4::VMXE.bits());
        if let (true, Some(n)) = (l1_in_vmx_operation, self.nested.as_ref()) {
            m0 |= n.vmx.caps().cr0_fixed().must_be_one;
            m4 |= n.vmx.caps().cr4_fixed().must_be_one;
        }
        // Bits newly intercepted read as they are now.
        for (mask_f, shadow_f, value_f, m) in [
            (F::Cr0GuestHostMask, F::Cr0ReadShadow, F::GuestCr0, m0),
            (F::Cr4GuestHostMask, F::Cr4ReadShadow, F::GuestCr4, m4),
        ] {
            let old = self.cpu.vmread(mask_f);
            if old != m {
                let shadow = self.cpu.vmread(shadow_f);
                let value = self.cpu.vmread(value_f);
                let added = m & !old;
                self.cpu.vmwrite(shadow_f, (shadow & !added) | (value & added));
                self.cpu.vmwrite(mask_f, m);
            }
        }
    }

    /// Moves past the instruction that exited, ending any interrupt shadow
    /// it was in (as KVM's skip_emulated_instruction does). L0 completed
    /// the instruction for the guest, so it counts as retired: guest
    /// instruction counts and virtual time match a run without L0.
    fn skip_instruction(&mut self) {
        self.cpu.icount += 1;
        let rip = self.cpu.vmread(F::GuestRip);
        let len = self.cpu.vmread(F::ExitInstructionLength);
        self.cpu.vmwrite(F::GuestRip, rip.wrapping_add(len));
        let intr = self.cpu.vmread(F::GuestInterruptibilityState);
        if intr & 3 != 0 {
            self.cpu.vmwrite(F::GuestInterruptibilityState, intr & !3);
        }
    }

    /// L0's exit handler: one arm per exit reason L0 enables.
    fn handle_exit(&mut self, mem: &mut Memory, bus: &mut dyn Bus, reason: u16) -> Next {
        let qualification = self.cpu.vmread(F::ExitQualification);
        trace!(
            target: VMEXIT,
            cpu = self.cpu.apic_id,
            reason = ExitReason::from_basic(reason).map_or("unknown", ExitReason::name),
            qualification = format_args!("{qualification:#x}"),
            rip = format_args!("{:#x}", self.cpu.vmread(F::GuestRip)),
            "vm exit"
        );
        // An event whose delivery the exit interrupted goes in again
        // (28.2.4 "Information for VM Exits During Event Delivery").
        let vectoring = self.cpu.vmread(F::IdtVectoringInfo);
        if vectoring & (1 << 31) != 0 {
            self.cpu.vmwrite(F::EntryInterruptionInfo, vectoring & !(1 << 12));
            self.cpu.vmwrite(F::EntryExceptionErrorCode, self.cpu.vmread(F::IdtVectoringErrorCode));
            self.cpu.vmwrite(F::EntryInstructionLength, self.cpu.vmread(F::ExitInstructionLength));
        }
        let Some(r) = ExitReason::from_basic(reason) else {
            return Next::Return(RunExit::Shutdown(format!("L0: exit with unknown reason {reason}")));
        };
        // Exits that cannot have touched a device leave the platform's
        // interrupt state as L0 last saw it (the CPUID loop's fast path).
        self.poll_irq |= !matches!(r, ExitReason::Cpuid | ExitReason::Xsetbv);
        // L1's single-stepped write to a watched EPT12 page ends at its
        // next exit (an EPT violation ends it in the arm below, which
        // needs the watch as the fault found it).
        let l1 = !self.nested.as_ref().is_some_and(|n| n.l2_active);
        if l1
            && r != ExitReason::EptViolation
            && self.l1_table_write_pending()
            && self.end_l1_table_write(mem)
            && r == ExitReason::MonitorTrapFlag
        {
            return Next::Resume;
        }
        match r {
            ExitReason::Cpuid => {
                let g = &self.cpu.regs.gpr;
                let (leaf, sub) = (g[0] as u32, g[1] as u32);
                let cr4 = self.cpu.vmread(F::GuestCr4);
                let a = self.cpuid.query(self.cpu.apic_id, cr4, leaf, sub);
                let g = &mut self.cpu.regs.gpr;
                (g[0], g[3], g[1], g[2]) = (a[0].into(), a[1].into(), a[2].into(), a[3].into());
                self.skip_instruction();
            }
            ExitReason::Hlt => {
                self.skip_instruction();
                self.halted = true;
            }
            ExitReason::IoInstruction => return self.io_exit(mem, bus, qualification),
            ExitReason::Rdmsr => self.rdmsr_exit(bus),
            ExitReason::Wrmsr => self.wrmsr_exit(bus),
            ExitReason::ControlRegisterAccess => return self.cr_exit(mem, bus, qualification),
            ExitReason::EptViolation => {
                let gpa = self.cpu.vmread(F::GuestPhysicalAddress);
                return match self.ept01_fault(mem, gpa, qualification) {
                    Ept01Fault::Device => {
                        self.end_l1_table_write(mem);
                        self.emulate(mem, bus)
                    }
                    Ept01Fault::Ept12Write => self.ept12_write_fault(mem, gpa),
                    Ept01Fault::Unexpected => {
                        Next::Return(RunExit::Shutdown(format!("L0: EPT violation on RAM at {gpa:#x}")))
                    }
                };
            }
            // Windows only ask to be told: the next entry injects.
            ExitReason::InterruptWindow | ExitReason::NmiWindow | ExitReason::ExternalInterrupt => {}
            ExitReason::TripleFault => {
                let why = self.cpu.shutdown_reason().unwrap_or("triple fault").to_string();
                return Next::Return(RunExit::Shutdown(why));
            }
            ExitReason::Xsetbv | ExitReason::TaskSwitch => return self.emulate(mem, bus),
            ExitReason::Invd | ExitReason::Wbinvd => self.skip_instruction(),
            // L1's VMX instructions, emulated when VMX is offered.
            r if r.is_vmx_instruction() && self.nested.is_some() => return self.l1_vmx_instruction(mem, bus, r),
            // VMX not offered: every VMX instruction is #UD; VMCALL and
            // VMFUNC have no L0 service behind them.
            r if r.is_vmx_instruction() => self.inject_exception(vector::UD, None),
            ExitReason::Vmcall | ExitReason::Vmfunc | ExitReason::Getsec => self.inject_exception(vector::UD, None),
            other => {
                return Next::Return(RunExit::Shutdown(format!(
                    "L0: unexpected VM exit {} (qualification {qualification:#x}) at rip {:#x}",
                    other.name(),
                    self.cpu.vmread(F::GuestRip)
                )))
            }
        }
        Next::Resume
    }

    /// Runs the exiting instruction through the emulator (device pages,
    /// string I/O, task switches, XSETBV).
    fn emulate(&mut self, mem: &mut Memory, bus: &mut dyn Bus) -> Next {
        // The instruction runs again from the start: a re-injected event
        // would be delivered twice.
        let info = self.cpu.vmread(F::EntryInterruptionInfo);
        if info & (1 << 31) != 0 {
            // (A control write makes the next entry re-run every check:
            // only when there is something to cancel.)
            self.cpu.vmwrite(F::EntryInterruptionInfo, info & !(1 << 31));
        }
        match self.cpu.emulate_guest_instruction(mem, bus) {
            Ok(()) => Next::Resume,
            Err(cpu::virt::EmulateError::Shutdown(why)) => Next::Return(RunExit::Shutdown(why)),
            Err(e) => Next::Return(RunExit::Shutdown(format!("L0: emulation failed: {e:?}"))),
        }
    }

    /// Port I/O (reason 30): IN/OUT go to the platform; string forms
    /// through the emulator.
    fn io_exit(&mut self, mem: &mut Memory, bus: &mut dyn Bus, qualification: u64) -> Next {
        let Some(io) = IoAccess::from_raw(qualification) else {
            return Next::Return(RunExit::Shutdown(format!("L0: bad I/O qualification {qualification:#x}")));
        };
        if io.string {
            return self.emulate(mem, bus);
        }
        let size = match io.size {
            IoSize::Byte => 1,
            IoSize::Word => 2,
            IoSize::Dword => 4,
        };
        let now = self.cpu.now_ns();
        let rax = &mut self.cpu.regs.gpr[0];
        if io.is_in {
            let v = u64::from(bus.io_in(now, io.port, size));
            *rax = match size {
                1 => (*rax & !0xff) | (v & 0xff),
                2 => (*rax & !0xffff) | (v & 0xffff),
                _ => v & 0xffff_ffff,
            };
        } else {
            let mask = (1u64 << (size * 8)) - 1;
            bus.io_out(now, io.port, size, (*rax & mask) as u32);
        }
        self.skip_instruction();
        Next::Resume
    }

    fn rdmsr_exit(&mut self, bus: &mut dyn Bus) {
        let msr = self.cpu.regs.gpr[1] as u32;
        let now = self.cpu.now_ns();
        // The policy's MSRs (the VMX capabilities among them when VMX is
        // offered), then the platform's (local APIC).
        let v = self.msrs.get(&msr).copied().or_else(|| bus.rdmsr(now, msr));
        match v {
            Some(v) => {
                self.cpu.regs.gpr[0] = v & 0xffff_ffff;
                self.cpu.regs.gpr[2] = v >> 32;
                self.skip_instruction();
            }
            None => self.inject_exception(vector::GP, Some(0)),
        }
    }

    fn wrmsr_exit(&mut self, bus: &mut dyn Bus) {
        let g = &self.cpu.regs.gpr;
        let msr = g[1] as u32;
        let v = (g[2] << 32) | (g[0] & 0xffff_ffff);
        let now = self.cpu.now_ns();
        let ok = if let Some(slot) = self.msrs.get_mut(&msr) {
            let locked = msr == 0x3a && *slot & 1 != 0;
            if read_only_msr(msr) || locked {
                false
            } else {
                *slot = v;
                true
            }
        } else {
            bus.wrmsr(now, msr, v)
        };
        if ok {
            self.skip_instruction();
        } else {
            self.inject_exception(vector::GP, Some(0));
        }
    }

    /// Control-register accesses (reason 28): CR8 through the local APIC's
    /// TPR; CR0/CR4 writes that change a host-owned bit through the
    /// emulator, after which the read shadow takes the guest's new value
    /// and the real register keeps the bit set.
    fn cr_exit(&mut self, mem: &mut Memory, bus: &mut dyn Bus, qualification: u64) -> Next {
        let q = CrAccess::from_raw(qualification);
        let gpr = usize::from(q.gpr & 15);
        match (q.cr, q.access) {
            (8, CrAccessType::MovToCr) => {
                let v = self.cpu.regs.gpr[gpr];
                if v >> 4 != 0 {
                    self.inject_exception(vector::GP, Some(0));
                    return Next::Resume;
                }
                bus.set_tpr(v as u8);
                self.skip_instruction();
            }
            (8, CrAccessType::MovFromCr) => {
                self.cpu.regs.gpr[gpr] = u64::from(bus.tpr());
                self.skip_instruction();
            }
            (0 | 4, access) => {
                let (field, shadow, mask_field, owned) = if q.cr == 0 {
                    (F::GuestCr0, F::Cr0ReadShadow, F::Cr0GuestHostMask, Cr0::NE.bits())
                } else {
                    (F::GuestCr4, F::Cr4ReadShadow, F::Cr4GuestHostMask, Cr4::VMXE.bits())
                };
                // In VMX operation the fixed bits of IA32_VMX_CR0/CR4_FIXED0/1
                // hold: clearing one is #GP(0) (SDM 24.8 "Restrictions on VMX
                // Operation"). L0 intercepts them while L1 is in VMX
                // operation (see `vmx_cr_masks`).
                if access == CrAccessType::MovToCr {
                    let v = if gpr == 4 { self.cpu.vmread(F::GuestRsp) } else { self.cpu.regs.gpr[gpr] };
                    if let Some(n) = self.nested.as_ref().filter(|n| n.vmx.in_vmx_operation() && !n.l2_active) {
                        let caps = n.vmx.caps();
                        let bad =
                            if q.cr == 0 { caps.check_cr0(v, false).is_err() } else { caps.check_cr4(v).is_err() };
                        if bad {
                            self.inject_exception(vector::GP, Some(0));
                            return Next::Resume;
                        }
                    }
                }
                // The guest's view goes in, the instruction runs with the
                // usual checks, then the host-owned bit is forced back.
                let mask = self.cpu.vmread(mask_field);
                let seen = self.cpu.vmread(field);
                let guest_view = (seen & !mask) | (self.cpu.vmread(shadow) & mask);
                self.cpu.vmwrite(field, guest_view);
                let next = self.emulate(mem, bus);
                let after = self.cpu.vmread(field);
                self.cpu.vmwrite(shadow, after);
                self.cpu.vmwrite(field, after | owned);
                return next;
            }
            _ => return self.emulate(mem, bus),
        }
        Next::Resume
    }
}

/// The physical CPU's view of the outside world while a guest runs: no
/// devices (every port and device page exits to L0) and one interrupt
/// line, raised when L0 needs the guest out to inject something.
struct HostLines {
    external: bool,
}

impl Bus for HostLines {
    fn io_in(&mut self, _: u64, _: u16, size: u8) -> u32 {
        if size >= 4 {
            u32::MAX
        } else {
            (1 << (size * 8)) - 1
        }
    }
    fn io_out(&mut self, _: u64, _: u16, _: u8, _: u32) {}
    fn mmio_read(&mut self, _: u64, _: u64, _: u8) -> u64 {
        u64::MAX
    }
    fn mmio_write(&mut self, _: u64, _: u64, _: u8, _: u64) {}
    fn rdmsr(&mut self, _: u64, _: u32) -> Option<u64> {
        None
    }
    fn wrmsr(&mut self, _: u64, _: u32, _: u64) -> bool {
        false
    }
    fn interrupt_pending(&mut self, _: u64) -> bool {
        self.external
    }
    fn ack_interrupt(&mut self, _: u64) -> Option<u8> {
        None
    }
    fn take_nmi(&mut self) -> bool {
        false
    }
    fn set_tpr(&mut self, _: u8) {}
    fn tpr(&mut self) -> u8 {
        0
    }
}
