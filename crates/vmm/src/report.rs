//! What a run tells the user: how it ended, how fast it went, what the
//! guest did (exceptions, interrupts, device accesses) and, when it
//! failed, where each CPU was.
//!
//! A failure report is deliberately short: one line for the reason, one
//! line per CPU (mode, CS:RIP, last exception, the instruction bytes at
//! RIP), then unimplemented instructions and unassigned device accesses if
//! there were any.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use cpu::{Activity, Fault, Mode};
use devices::UnhandledAccess;

use crate::loader::KernelFormat;

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// The guest wrote to isa-debug-exit; `status` is `(value << 1) | 1`.
    DebugExit {
        /// The exit status QEMU would give.
        status: u32,
    },
    /// ACPI power-off (S5).
    PowerOff,
    /// The guest reset the machine and `-no-reboot` was given.
    Reset,
    /// A CPU shut down (triple fault or an unrecoverable delivery failure).
    TripleFault {
        /// The CPU that shut down.
        cpu: u32,
        /// What the CPU says happened.
        reason: String,
    },
    /// The wall-clock timeout expired.
    Timeout {
        /// The timeout.
        after: Duration,
    },
    /// Every CPU is halted with nothing left that could wake it.
    HaltedForever,
    /// The guest kernel reported a panic on its console (Linux's
    /// `---[ end Kernel panic` line); the panic text is in the output.
    GuestPanic,
}

impl ExitKind {
    /// Whether the run failed (as opposed to the guest choosing to stop).
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            ExitKind::TripleFault { .. } | ExitKind::Timeout { .. } | ExitKind::HaltedForever | ExitKind::GuestPanic
        )
    }

    /// The process exit status `turtles` gives: isa-debug-exit's status,
    /// 0 for power-off and reset, 124 for a timeout (as `timeout(1)`), 3
    /// for a guest kernel panic, 2 for any other failure.
    pub fn exit_status(&self) -> i32 {
        match self {
            ExitKind::DebugExit { status } => *status as i32,
            ExitKind::PowerOff | ExitKind::Reset => 0,
            ExitKind::Timeout { .. } => 124,
            ExitKind::TripleFault { .. } | ExitKind::HaltedForever => 2,
            ExitKind::GuestPanic => 3,
        }
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::DebugExit { status } => write!(f, "isa-debug-exit, status {status}"),
            ExitKind::PowerOff => f.write_str("ACPI power-off"),
            ExitKind::Reset => f.write_str("guest reset (-no-reboot)"),
            ExitKind::TripleFault { cpu, reason } => write!(f, "CPU {cpu} shut down: {reason}"),
            ExitKind::Timeout { after } => write!(f, "timeout after {:.1} s", after.as_secs_f64()),
            ExitKind::HaltedForever => f.write_str("every CPU is halted and nothing can wake it"),
            ExitKind::GuestPanic => f.write_str("the guest kernel panicked (see its console output)"),
        }
    }
}

/// Where one CPU was when the run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CpuState {
    /// CPU index (= APIC ID).
    pub cpu: u32,
    /// Operating mode.
    pub mode: Mode,
    /// Activity state.
    pub activity: Activity,
    /// CS selector.
    pub cs: u16,
    /// RIP.
    pub rip: u64,
    /// RFLAGS.
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3.
    pub cr3: u64,
    /// The last exception and the RIP it was raised at.
    pub last_exception: Option<(Fault, u64)>,
    /// The exceptions before it (oldest first), for chains that end in a
    /// double or triple fault.
    pub earlier_exceptions: Vec<(Fault, u64)>,
    /// RIPs of the last blocks the CPU entered, oldest first.
    pub recent_blocks: Vec<u64>,
    /// Up to 15 instruction bytes at CS:RIP, read through the CPU's current
    /// translation (empty when RIP is not mapped).
    pub insn_bytes: Vec<u8>,
    /// Instructions this CPU retired.
    pub insns: u64,
}

impl std::fmt::Display for CpuState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cpu{}: {}, {:?}, CS:RIP {:04x}:{:x}", self.cpu, self.mode, self.activity, self.cs, self.rip)?;
        match &self.last_exception {
            Some((fault, rip)) => write!(f, ", last exception {fault} at rip {rip:#x}")?,
            None => f.write_str(", no exception")?,
        }
        if !self.earlier_exceptions.is_empty() {
            f.write_str(" (after")?;
            for (fault, rip) in &self.earlier_exceptions {
                write!(f, " {fault} at {rip:#x};")?;
            }
            f.write_str(")")?;
        }
        if !self.recent_blocks.is_empty() {
            f.write_str("\n    last blocks:")?;
            for r in &self.recent_blocks {
                write!(f, " {r:x}")?;
            }
            f.write_str("\n   ")?;
        }
        if self.insn_bytes.is_empty() {
            f.write_str(", bytes: (not mapped)")
        } else {
            f.write_str(", bytes:")?;
            for b in &self.insn_bytes {
                write!(f, " {b:02x}")?;
            }
            Ok(())
        }
    }
}

/// Port and MMIO accesses to one device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceCount {
    /// Device name.
    pub name: &'static str,
    /// Port accesses.
    pub io: u64,
    /// MMIO accesses.
    pub mmio: u64,
}

/// Everything a run reports.
#[derive(Clone, Debug)]
pub struct RunReport {
    /// How it ended.
    pub exit: ExitKind,
    /// The format the kernel was loaded as.
    pub kernel_format: KernelFormat,
    /// Instructions retired, per CPU (summed over resets).
    pub insns: Vec<u64>,
    /// Wall-clock time of the run.
    pub wall: Duration,
    /// Virtual time at the end, in nanoseconds (summed over resets).
    pub virtual_ns: u64,
    /// Exceptions delivered, by vector, summed over CPUs.
    pub exceptions: [u64; 32],
    /// Interrupts delivered, by vector, summed over CPUs (256 entries).
    pub interrupts: Vec<u64>,
    /// Instructions that raised #UD because Turtles does not implement
    /// them, by mnemonic.
    pub unimplemented: BTreeMap<String, u64>,
    /// Instruction blocks decoded.
    pub blocks_decoded: u64,
    /// Device accesses, for devices accessed at least once.
    pub devices: Vec<DeviceCount>,
    /// Local APIC MSR accesses.
    pub lapic_msr: u64,
    /// The first accesses nothing decoded.
    pub unhandled: Vec<UnhandledAccess>,
    /// Guest-requested resets performed.
    pub resets: u32,
    /// Final state of every CPU.
    pub cpus: Vec<CpuState>,
    /// VM exits L0 handled, by reason.
    pub exits: crate::l0::ExitStats,
}

/// At most this many CPU lines in a failure report.
const MAX_CPU_LINES: usize = 8;

impl RunReport {
    /// Instructions retired by all CPUs.
    pub fn total_insns(&self) -> u64 {
        self.insns.iter().sum()
    }

    /// Millions of guest instructions per wall-clock second.
    pub fn mips(&self) -> f64 {
        let s = self.wall.as_secs_f64();
        if s > 0.0 {
            self.total_insns() as f64 / s / 1e6
        } else {
            0.0
        }
    }

    /// The short failure report: the reason, one line per CPU, and what
    /// the guest tried that Turtles lacks.
    pub fn failure_summary(&self) -> String {
        let mut s = format!("turtles: {}\n", self.exit);
        for c in self.cpus.iter().take(MAX_CPU_LINES) {
            let _ = writeln!(s, "  {c}");
        }
        if self.cpus.len() > MAX_CPU_LINES {
            let _ = writeln!(s, "  ... and {} more CPUs", self.cpus.len() - MAX_CPU_LINES);
        }
        if !self.unimplemented.is_empty() {
            let list: Vec<String> = self.unimplemented.iter().map(|(m, n)| format!("{m} ({n})")).collect();
            let _ = writeln!(s, "  unimplemented instructions: {}", list.join(", "));
        }
        if !self.unhandled.is_empty() {
            let list: Vec<String> = self
                .unhandled
                .iter()
                .take(8)
                .map(|u| format!("{} {:#x}", if u.mmio { "mmio" } else { "port" }, u.addr))
                .collect();
            let more = if self.unhandled.len() > 8 { ", ..." } else { "" };
            let _ = writeln!(s, "  unassigned device accesses: {}{more}", list.join(", "));
        }
        s
    }

    /// The `--explain` text: every failed VM entry of the run (the
    /// first few), each with the check that failed, its SDM section, the
    /// condition, and the field and value it saw.
    pub fn explain(&self) -> String {
        if self.exits.entry_failures.is_empty() {
            return "explain: no VM entry failed\n".into();
        }
        let mut s = String::new();
        for f in &self.exits.entry_failures {
            let _ = writeln!(s, "explain: {f}");
        }
        s
    }

    /// The `--stats` text.
    pub fn stats_summary(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "exit: {}", self.exit);
        let _ = writeln!(s, "kernel: {}", self.kernel_format);
        let per_cpu: Vec<String> = self.insns.iter().map(u64::to_string).collect();
        let _ = writeln!(s, "instructions retired: {} (per CPU: {})", self.total_insns(), per_cpu.join(", "));
        let _ = writeln!(s, "wall time: {:.3} s, {:.1} MIPS", self.wall.as_secs_f64(), self.mips());
        let _ = writeln!(s, "virtual time: {:.6} s", self.virtual_ns as f64 / 1e9);
        let _ = writeln!(s, "blocks decoded: {}", self.blocks_decoded);
        if self.resets > 0 {
            let _ = writeln!(s, "resets: {}", self.resets);
        }
        let exc: Vec<String> = self
            .exceptions
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(v, n)| format!("{} {n}", x86::vector::name(v as u8)))
            .collect();
        let _ = writeln!(s, "exceptions: {}", if exc.is_empty() { "none".into() } else { exc.join(", ") });
        let irq: Vec<String> =
            self.interrupts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(v, n)| format!("{v:#04x} {n}")).collect();
        let _ = writeln!(s, "interrupts: {}", if irq.is_empty() { "none".into() } else { irq.join(", ") });
        let un: Vec<String> = self.unimplemented.iter().map(|(m, n)| format!("{m} {n}")).collect();
        let _ =
            writeln!(s, "unimplemented instructions: {}", if un.is_empty() { "none".into() } else { un.join(", ") });
        let _ = writeln!(s, "device accesses (port / mmio):");
        for d in &self.devices {
            let _ = writeln!(s, "  {:<16} {:>12} {:>12}", d.name, d.io, d.mmio);
        }
        if self.lapic_msr > 0 {
            let _ = writeln!(s, "  {:<16} {:>12} {:>12}", "lapic (msr)", self.lapic_msr, 0);
        }
        if self.exits.l2_entries > 0 {
            s.push_str(&self.exits.levels_summary());
        }
        let rows = self.exits.rows();
        if rows.is_empty() {
            let _ = writeln!(s, "vm exits: none");
        } else {
            let _ = writeln!(s, "vm exits: {} (reason, count, host time, host ns per exit):", self.exits.total());
            for (name, n, ns) in rows {
                let per = ns.checked_div(n).unwrap_or(0);
                let _ = writeln!(s, "  {name:<24} {n:>12} {:>10.3} ms {per:>8}", ns as f64 / 1e6);
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(exit: ExitKind) -> RunReport {
        RunReport {
            exit,
            kernel_format: KernelFormat::MultibootElf32,
            insns: vec![1_000_000, 500],
            wall: Duration::from_millis(10),
            virtual_ns: 1_000_500,
            exceptions: {
                let mut e = [0; 32];
                e[6] = 2;
                e
            },
            interrupts: {
                let mut v = vec![0; 256];
                v[0x20] = 7;
                v
            },
            unimplemented: [("vmxon".to_string(), 2)].into_iter().collect(),
            blocks_decoded: 42,
            devices: vec![DeviceCount { name: "serial", io: 12, mmio: 0 }],
            lapic_msr: 0,
            unhandled: vec![UnhandledAccess { mmio: false, addr: 0x2f8, size: 1, write: false }],
            resets: 0,
            exits: Default::default(),
            cpus: vec![CpuState {
                cpu: 0,
                mode: Mode::Long,
                activity: Activity::Shutdown,
                cs: 8,
                rip: 0x10_1234,
                rflags: 2,
                cr0: 0x8000_0011,
                cr3: 0x1000,
                last_exception: Some((Fault::gp0(), 0x10_1234)),
                earlier_exceptions: Vec::new(),
                recent_blocks: Vec::new(),
                insn_bytes: vec![0x0f, 0x0b],
                insns: 1_000_000,
            }],
        }
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(ExitKind::DebugExit { status: 33 }.exit_status(), 33);
        assert_eq!(ExitKind::PowerOff.exit_status(), 0);
        assert_eq!(ExitKind::Timeout { after: Duration::from_secs(1) }.exit_status(), 124);
        assert_eq!(ExitKind::HaltedForever.exit_status(), 2);
        assert!(ExitKind::HaltedForever.is_failure() && !ExitKind::PowerOff.is_failure());
    }

    #[test]
    fn failure_summary_is_short_and_complete() {
        let r = report(ExitKind::TripleFault { cpu: 0, reason: "triple fault".into() });
        let s = r.failure_summary();
        assert_eq!(s.lines().count(), 4, "{s}");
        assert!(s.starts_with("turtles: CPU 0 shut down: triple fault\n"), "{s}");
        assert!(s.contains("CS:RIP 0008:101234"), "{s}");
        assert!(s.contains("bytes: 0f 0b"), "{s}");
        assert!(s.contains("vmxon (2)"), "{s}");
        assert!(s.contains("port 0x2f8"), "{s}");
    }

    #[test]
    fn stats_summary_lists_counters() {
        let s = report(ExitKind::DebugExit { status: 33 }).stats_summary();
        assert!(s.contains("instructions retired: 1000500"), "{s}");
        assert!(s.contains("MIPS"), "{s}");
        assert!(s.contains("0x20 7"), "{s}");
        assert!(s.contains("vmxon 2"), "{s}");
        assert!(s.contains("serial"), "{s}");
        assert!(s.contains("blocks decoded: 42"), "{s}");
    }
}
