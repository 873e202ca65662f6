//! The virtual machine and its run loop.
//!
//! # Scheduling
//!
//! The vCPUs run round-robin, CPU 0 first, each for a fixed quantum of
//! instructions ([`DEFAULT_QUANTUM`]). One global virtual clock, in
//! nanoseconds, moves by the quantum each round; a vCPU's clock is set to
//! it before its slice and advances by [`cpu::NS_PER_INSN`] per
//! instruction during the slice. After each slice the VMM looks at the
//! platform's exit request; after each round it advances the platform's
//! timers to the new time. INIT and SIPI messages are handed to their
//! target before its next slice. Nothing depends on the host: the same
//! kernel and options give the same instruction interleaving, the same
//! interrupts at the same virtual times, the same output.
//!
//! When a whole round retires no instruction and no CPU is active, the
//! machine is idle: the clock jumps straight to the platform's next timer
//! deadline. With no deadline, a guest halted with interrupts enabled can
//! still be woken by serial input while standard input is open; otherwise,
//! and whenever every CPU is halted with IF = 0 or waits for a SIPI, the
//! run ends as "halted forever".
//!
//! # Ending a run
//!
//! isa-debug-exit, ACPI power-off, a triple fault, the wall-clock timeout
//! (checked every few rounds) or "halted forever" end [`Vm::run`] with a
//! [`RunReport`]. A guest reset rebuilds the machine and boots the kernel
//! again (as QEMU does), unless `no_reboot` is set, in which case it ends
//! the run. The CPU that writes isa-debug-exit finishes its slice first:
//! the exit takes effect at the slice boundary.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpu::mmu::{self, Access, AccessCtx};
use cpu::{Activity, Cpu, Memory, Mode, Regs, RunExit};
use devices::{CpuEvent, ExitRequest, Platform, PlatformConfig};
use thiserror::Error;
use tracing::{debug, trace};
use x86::seg::sreg;

use crate::bus::VcpuBus;
use crate::cpu_model::with_topology;
use crate::l0::{ExitStats, L0Error, L0Shared, Vcpu, VcpuMode};
use crate::layout;
use crate::loader::{self, BootParams, BootState, LoadError, ModuleImage};
use crate::policy::CpuPolicy;
use crate::report::{CpuState, DeviceCount, ExitKind, RunReport};
use crate::trace_targets::{EXIT, INSN, IRQ, SCHED};

/// Instructions per vCPU time slice.
pub const DEFAULT_QUANTUM: u64 = 20_000;
/// The timeout is checked every this many rounds.
const TIMEOUT_CHECK_ROUNDS: u64 = 8;
/// Serial output is flushed every this many rounds.
const FLUSH_ROUNDS: u64 = 64;
/// Most CPUs a VM may have (xAPIC IDs, one byte in CPUID leaf 1).
pub const MAX_CPUS: u32 = 255;
/// Largest RAM a VM may have.
pub const MAX_RAM: u64 = 1 << 40;

/// Where a kernel or module comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ImageSource {
    /// A file, read when the VM is created.
    File(PathBuf),
    /// Bytes in memory (e.g. a kernel built into the binary).
    Bytes {
        /// The name that starts the command line.
        name: String,
        /// The contents.
        data: Cow<'static, [u8]>,
    },
}

/// A module (`-initrd` entry).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModuleSpec {
    /// Its contents.
    pub source: ImageSource,
    /// Its command line (QEMU: the whole `-initrd` entry, file name first).
    pub cmdline: String,
}

/// Optional devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// The 8254 PIT (QEMU's `-machine pit=off` removes it).
    pub pit: bool,
    /// QEMU's pc-testdev.
    pub pc_testdev: bool,
    /// QEMU's pci-testdev.
    pub pci_testdev: bool,
    /// isa-debug-exit I/O base and size.
    pub debug_exit: Option<(u16, u8)>,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        DeviceConfig { pit: true, pc_testdev: false, pci_testdev: false, debug_exit: None }
    }
}

/// A byte sink several owners can write to (the serial console survives
/// machine resets this way). Writes after a poisoned lock fail instead of
/// panicking.
#[derive(Clone)]
pub struct SharedWriter(Arc<Mutex<Box<dyn Write + Send>>>);

impl SharedWriter {
    /// Wraps a writer.
    pub fn new(w: Box<dyn Write + Send>) -> SharedWriter {
        SharedWriter(Arc::new(Mutex::new(w)))
    }

    /// A writer that drops everything.
    pub fn sink() -> SharedWriter {
        SharedWriter::new(Box::new(std::io::sink()))
    }

    /// A writer into a buffer the caller can read.
    pub fn buffer() -> (SharedWriter, Arc<Mutex<Vec<u8>>>) {
        let buf = Arc::new(Mutex::new(Vec::new()));
        (SharedWriter::new(Box::new(BufferWriter(buf.clone()))), buf)
    }
}

struct BufferWriter(Arc<Mutex<Vec<u8>>>);

impl Write for BufferWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut v = self.0.lock().map_err(|_| std::io::Error::other("poisoned serial buffer"))?;
        v.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Write for SharedWriter {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned serial output"))?.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().map_err(|_| std::io::Error::other("poisoned serial output"))?.flush()
    }
}

/// Watches the serial output for the end of a Linux panic report (the
/// `---[ end Kernel panic` line), so a panicking guest ends the run with
/// its panic text shown and a failure status instead of spinning until the
/// timeout. Matches across writes; passes every byte through unchanged.
struct PanicWatch {
    inner: SharedWriter,
    /// Bytes of the marker matched so far.
    matched: usize,
    /// 0: nothing seen, 1: marker seen, 2: the marker's line is complete.
    state: Arc<std::sync::atomic::AtomicU8>,
}

/// The line Linux prints last when it panics.
const PANIC_MARKER: &[u8] = b"---[ end Kernel panic";

impl Write for PanicWatch {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        use std::sync::atomic::Ordering;
        for &c in b {
            match self.state.load(Ordering::Relaxed) {
                0 => {
                    if c == PANIC_MARKER[self.matched] {
                        self.matched += 1;
                        if self.matched == PANIC_MARKER.len() {
                            self.state.store(1, Ordering::Relaxed);
                        }
                    } else {
                        self.matched = usize::from(c == PANIC_MARKER[0]);
                    }
                }
                1 if c == b'\n' => self.state.store(2, Ordering::Relaxed),
                _ => {}
            }
        }
        self.inner.write(b)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl std::fmt::Debug for SharedWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedWriter")
    }
}

/// Everything a VM is made of.
#[derive(Debug)]
pub struct VmConfig {
    /// The kernel.
    pub kernel: ImageSource,
    /// Guest RAM in bytes (a multiple of 4 KiB, at least
    /// [`layout::MIN_RAM`]).
    pub ram_size: u64,
    /// Number of vCPUs (1 to [`MAX_CPUS`]).
    pub cpus: u32,
    /// The kernel command line after the kernel name (`-append`).
    pub append: String,
    /// Modules; the first is `-initrd`'s first file.
    pub modules: Vec<ModuleSpec>,
    /// Optional devices.
    pub devices: DeviceConfig,
    /// The CPU policy: CPUID answers shared by all vCPUs (topology fields
    /// are filled in per vCPU), readable MSR values and the VMX
    /// capabilities offered.
    pub cpu_policy: CpuPolicy,
    /// Wall-clock limit of [`Vm::run`].
    pub timeout: Option<Duration>,
    /// A guest reset ends the run instead of rebooting (`-no-reboot`).
    pub no_reboot: bool,
    /// Instructions per time slice.
    pub quantum: u64,
    /// Where COM1 output goes.
    pub serial_out: SharedWriter,
    /// Where port 0xe9 (debug console) output goes; `None` drops it, as
    /// QEMU does without `-debugcon`.
    pub debugcon: Option<SharedWriter>,
    /// Bytes for COM1's receiver; a disconnected channel means end of
    /// input.
    pub serial_in: Option<Receiver<Vec<u8>>>,
    /// Run the guest as a VM under L0 (VMX non-root operation, the
    /// default) or directly on the CPU.
    pub vcpu_mode: VcpuMode,
    /// Measure host time per VM exit (for `--stats`).
    pub exit_timing: bool,
}

impl VmConfig {
    /// A configuration with QEMU's defaults: 128 MiB, one CPU, the PIT, no
    /// optional test device, Turtles' full CPU without VMX
    /// ([`CpuPolicy::default`]), no timeout, serial output dropped.
    pub fn new(kernel: ImageSource) -> VmConfig {
        VmConfig {
            kernel,
            ram_size: 128 << 20,
            cpus: 1,
            append: String::new(),
            modules: Vec::new(),
            devices: DeviceConfig::default(),
            cpu_policy: CpuPolicy::default(),
            timeout: None,
            no_reboot: false,
            quantum: DEFAULT_QUANTUM,
            serial_out: SharedWriter::sink(),
            debugcon: None,
            serial_in: None,
            vcpu_mode: VcpuMode::L0,
            exit_timing: false,
        }
    }
}

/// Why a VM could not be created or run.
#[derive(Debug, Error)]
pub enum VmError {
    /// The kernel file cannot be read.
    #[error("could not load kernel '{}': {source}", path.display())]
    KernelRead {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A module file cannot be read.
    #[error("could not load initrd '{}': {source}", path.display())]
    ModuleRead {
        /// The path given.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The kernel cannot be loaded.
    #[error("could not load kernel '{kernel}': {source}")]
    Load {
        /// The kernel's name.
        kernel: String,
        /// What is wrong with it.
        source: LoadError,
    },
    /// A CPU count out of range.
    #[error("invalid number of CPUs {0}: must be 1 to {MAX_CPUS}")]
    BadCpuCount(u32),
    /// A RAM size out of range or not a multiple of 4 KiB.
    #[error("invalid RAM size {0} bytes: must be a multiple of 4 KiB from {min} to {MAX_RAM}", min = layout::MIN_RAM)]
    BadRamSize(u64),
    /// The host cannot provide the RAM.
    #[error("cannot allocate {0} bytes of guest RAM")]
    RamAlloc(u64),
    /// A time slice of zero instructions.
    #[error("invalid quantum {0}: must be at least 1 instruction")]
    BadQuantum(u64),
    /// The ACPI tables outgrew their area.
    #[error("ACPI tables take {0} bytes, more than fit at 0xe0000")]
    AcpiTooLarge(usize),
    /// L0 could not build its structures for the VM.
    #[error(transparent)]
    L0(#[from] L0Error),
}

/// The immutable inputs a machine is (re)built from.
struct Spec {
    kernel_name: String,
    kernel: Cow<'static, [u8]>,
    modules: Vec<(Cow<'static, [u8]>, String)>,
    append: String,
    ram_size: u64,
    ncpus: u32,
    devices: DeviceConfig,
    cpu_policy: CpuPolicy,
    serial_out: SharedWriter,
    vcpu_mode: VcpuMode,
    exit_timing: bool,
}

/// RAM, platform and CPUs: what a reset rebuilds.
struct Machine {
    mem: Memory,
    platform: Platform,
    cpus: Vec<Vcpu>,
    boot: BootState,
    /// Set by [`PanicWatch`] on the serial output.
    panic_state: Arc<std::sync::atomic::AtomicU8>,
}

/// Counters of machines discarded by resets.
#[derive(Default)]
struct Carried {
    insns: Vec<u64>,
    exceptions: [u64; 32],
    interrupts: Vec<u64>,
    unimplemented: std::collections::BTreeMap<String, u64>,
    blocks_decoded: u64,
    devices: Vec<DeviceCount>,
    lapic_msr: u64,
    virtual_ns: u64,
    exits: ExitStats,
}

impl Carried {
    fn absorb(&mut self, m: &Machine, now_ns: u64) {
        self.insns.resize(m.cpus.len().max(self.insns.len()), 0);
        self.interrupts.resize(256, 0);
        for (i, v) in m.cpus.iter().enumerate() {
            self.exits.add(&v.exits);
            let c = &v.cpu;
            self.insns[i] += c.icount;
            for (a, b) in self.exceptions.iter_mut().zip(c.stats.exceptions.iter()) {
                *a += b;
            }
            for (a, b) in self.interrupts.iter_mut().zip(c.stats.interrupts.iter()) {
                *a += b;
            }
            for (k, v) in &c.stats.unimplemented {
                *self.unimplemented.entry(k.clone()).or_default() += v;
            }
            self.blocks_decoded += c.stats.blocks_decoded;
        }
        let stats = m.platform.stats();
        for (name, io, mmio) in stats.entries() {
            match self.devices.iter_mut().find(|d| d.name == name) {
                Some(d) => {
                    d.io += io;
                    d.mmio += mmio;
                }
                None => self.devices.push(DeviceCount { name, io, mmio }),
            }
        }
        self.lapic_msr += stats.lapic_msr;
        self.virtual_ns += now_ns;
    }
}

fn read_image(src: &ImageSource, module: bool) -> Result<(String, Cow<'static, [u8]>), VmError> {
    match src {
        ImageSource::File(path) => match std::fs::read(path) {
            Ok(data) => Ok((path.display().to_string(), Cow::Owned(data))),
            Err(source) if module => Err(VmError::ModuleRead { path: path.clone(), source }),
            Err(source) => Err(VmError::KernelRead { path: path.clone(), source }),
        },
        ImageSource::Bytes { name, data } => Ok((name.clone(), data.clone())),
    }
}

fn build(spec: &Spec) -> Result<Machine, VmError> {
    let ram = spec.ram_size;
    // Memory::new zero-fills with an infallible allocation; ask first so
    // an impossible -m is an error rather than an abort.
    let mut probe: Vec<u8> = Vec::new();
    let size = usize::try_from(ram).map_err(|_| VmError::RamAlloc(ram))?;
    probe.try_reserve_exact(size).map_err(|_| VmError::RamAlloc(ram))?;
    drop(probe);
    let mut mem = Memory::new(ram).map_err(|_| VmError::BadRamSize(ram))?;

    let platform_cfg = PlatformConfig {
        ram_size: ram,
        num_cpus: spec.ncpus,
        pit: spec.devices.pit,
        pc_testdev: spec.devices.pc_testdev,
        pci_testdev: spec.devices.pci_testdev,
        debug_exit: spec.devices.debug_exit,
        cmdline: spec.append.as_bytes().to_vec(),
        initrd_size: spec.modules.first().map_or(0, |m| m.0.len() as u64),
    };
    let panic_state = Arc::new(std::sync::atomic::AtomicU8::new(0));
    let watch = PanicWatch { inner: spec.serial_out.clone(), matched: 0, state: panic_state.clone() };
    let platform = Platform::new(platform_cfg, Box::new(watch));

    let acpi = platform.acpi_tables(layout::ACPI_TABLES as u32);
    if acpi.tables.len() as u64 > layout::ACPI_TABLES_END - layout::ACPI_TABLES {
        return Err(VmError::AcpiTooLarge(acpi.tables.len()));
    }
    mem.write(layout::ACPI_TABLES, &acpi.tables).map_err(|_| VmError::AcpiTooLarge(acpi.tables.len()))?;
    mem.write(layout::ACPI_RSDP, &acpi.rsdp).map_err(|_| VmError::AcpiTooLarge(acpi.rsdp.len()))?;

    let modules: Vec<ModuleImage<'_>> =
        spec.modules.iter().map(|(d, c)| ModuleImage { data: d, cmdline: c.clone() }).collect();
    let boot = loader::load(
        &mut mem,
        &BootParams { kernel: &spec.kernel, kernel_name: &spec.kernel_name, append: &spec.append, modules: &modules },
    )
    .map_err(|source| VmError::Load { kernel: spec.kernel_name.clone(), source })?;

    let shared = match spec.vcpu_mode {
        VcpuMode::L0 => Some(L0Shared::new(&mut mem, &spec.cpu_policy)?),
        VcpuMode::Direct => None,
    };
    let cpus = (0..spec.ncpus)
        .map(|i| {
            let mut c = Cpu::new(i, with_topology(&spec.cpu_policy.cpuid, i, spec.ncpus));
            if i == 0 {
                boot.apply(&mut c);
            } else {
                c.init();
            }
            let mut v = match &shared {
                Some(sh) => Vcpu::under_l0(c, sh.clone(), &spec.cpu_policy),
                None => Vcpu::direct(c),
            };
            v.timing = spec.exit_timing;
            v
        })
        .collect();
    debug!(
        target: EXIT,
        "{} kernel loaded at {:#x}-{:#x}, entry {:#x}",
        boot.format,
        boot.image.start.0,
        boot.image.end.0,
        boot.entry.0
    );
    Ok(Machine { mem, platform, cpus, boot, panic_state })
}

/// A virtual machine: RAM, the PC platform and its vCPUs, with a kernel
/// loaded and the boot CPU at its entry point.
pub struct Vm {
    spec: Spec,
    m: Machine,
    timeout: Option<Duration>,
    no_reboot: bool,
    quantum: u64,
    debugcon: Option<SharedWriter>,
    serial_in: Option<Receiver<Vec<u8>>>,
    input: VecDeque<u8>,
    now_ns: u64,
    carried: Carried,
    resets: u32,
    /// Instructions retired by all vCPUs so far, published once per round
    /// for observers on the vCPU thread (see [`Vm::retired_counter`]).
    retired: Arc<std::sync::atomic::AtomicU64>,
}

impl Vm {
    /// Reads the kernel and modules, builds the machine and loads the
    /// kernel.
    pub fn new(config: VmConfig) -> Result<Vm, VmError> {
        if config.cpus == 0 || config.cpus > MAX_CPUS {
            return Err(VmError::BadCpuCount(config.cpus));
        }
        let ram = config.ram_size;
        if !(layout::MIN_RAM..=MAX_RAM).contains(&ram) || !ram.is_multiple_of(4096) {
            return Err(VmError::BadRamSize(ram));
        }
        if config.quantum == 0 {
            return Err(VmError::BadQuantum(0));
        }
        let (kernel_name, kernel) = read_image(&config.kernel, false)?;
        let modules = config
            .modules
            .iter()
            .map(|m| read_image(&m.source, true).map(|(_, d)| (d, m.cmdline.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let spec = Spec {
            kernel_name,
            kernel,
            modules,
            append: config.append,
            ram_size: ram,
            ncpus: config.cpus,
            devices: config.devices,
            cpu_policy: config.cpu_policy,
            serial_out: config.serial_out,
            vcpu_mode: config.vcpu_mode,
            exit_timing: config.exit_timing,
        };
        let m = build(&spec)?;
        Ok(Vm {
            spec,
            m,
            timeout: config.timeout,
            no_reboot: config.no_reboot,
            quantum: config.quantum,
            debugcon: config.debugcon,
            serial_in: config.serial_in,
            input: VecDeque::new(),
            now_ns: 0,
            carried: Carried::default(),
            resets: 0,
            retired: Arc::default(),
        })
    }

    /// Where and how the kernel was loaded.
    pub fn boot_state(&self) -> &BootState {
        &self.m.boot
    }

    /// The CPU policy the VM was built with.
    pub fn cpu_policy(&self) -> &CpuPolicy {
        &self.spec.cpu_policy
    }

    /// The vCPUs.
    pub fn cpus(&self) -> &[Vcpu] {
        &self.m.cpus
    }

    /// Guest RAM.
    pub fn memory(&self) -> &Memory {
        &self.m.mem
    }

    /// The platform.
    pub fn platform(&self) -> &Platform {
        &self.m.platform
    }

    /// Virtual time now, in nanoseconds since the last (re)boot.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// A counter of the instructions retired by all vCPUs, resets
    /// included, updated at the end of every round (so it lags by at most
    /// one quantum per vCPU). Serial output observers read it to tell when
    /// a line was printed in guest instructions.
    pub fn retired_counter(&self) -> Arc<std::sync::atomic::AtomicU64> {
        self.retired.clone()
    }

    /// Runs until the guest exits, fails, hangs past the timeout or halts
    /// forever.
    pub fn run(&mut self) -> Result<RunReport, VmError> {
        let start = Instant::now();
        let deadline = self.timeout.map(|t| start + t);
        let trace_insns = tracing::enabled!(target: INSN, tracing::Level::TRACE);
        let mut round: u64 = 0;
        let exit = loop {
            round += 1;
            self.feed_serial_input();
            if let Some(exit) = self.round(trace_insns)? {
                break exit;
            }
            if self.m.panic_state.load(std::sync::atomic::Ordering::Relaxed) == 2 {
                break ExitKind::GuestPanic;
            }
            if round.is_multiple_of(TIMEOUT_CHECK_ROUNDS) && deadline.is_some_and(|d| Instant::now() >= d) {
                break ExitKind::Timeout { after: self.timeout.unwrap_or_default() };
            }
            if round.is_multiple_of(FLUSH_ROUNDS) {
                let _ = self.spec.serial_out.flush();
            }
        };
        let _ = self.spec.serial_out.flush();
        if let Some(d) = &mut self.debugcon {
            let _ = d.flush();
        }
        let now_ns = self.m.cpus.iter().map(|v| v.cpu.now_ns()).max().unwrap_or(self.now_ns);
        debug!(target: EXIT, now_ns, "run ended: {exit}");
        Ok(self.report(exit, start.elapsed()))
    }

    /// One round: every vCPU gets a slice, then time moves on. `Some`
    /// ends the run.
    fn round(&mut self, trace_insns: bool) -> Result<Option<ExitKind>, VmError> {
        let mut retired = 0;
        for i in 0..self.m.cpus.len() {
            self.deliver_cpu_events(i);
            let before = self.m.cpus[i].cpu.icount;
            let exit = self.slice(i, trace_insns);
            let cpu = &self.m.cpus[i].cpu;
            retired += cpu.icount - before;
            trace!(target: SCHED, cpu = i, now_ns = self.now_ns, insns = cpu.icount - before, rip = cpu.regs.rip, "{exit:?}");
            if let Some(req) = self.m.platform.exit_request() {
                debug!(target: EXIT, cpu = i, now_ns = cpu.now_ns(), "exit request {req:?}");
                return self.on_exit_request(req);
            }
            if let RunExit::Shutdown(reason) = exit {
                debug!(target: EXIT, cpu = i, now_ns = cpu.now_ns(), "shutdown: {reason}");
                return Ok(Some(ExitKind::TripleFault { cpu: i as u32, reason }));
            }
        }
        self.retired.fetch_add(retired, std::sync::atomic::Ordering::Relaxed);
        self.now_ns += self.quantum;
        self.m.platform.advance(self.now_ns);
        if retired == 0 && self.m.cpus.iter().all(|c| c.activity() != Activity::Active) {
            return Ok(self.idle());
        }
        Ok(None)
    }

    fn slice(&mut self, i: usize, trace_insns: bool) -> RunExit {
        let vcpu = &mut self.m.cpus[i];
        vcpu.cpu.set_clock(self.now_ns);
        let mut bus = VcpuBus { platform: &mut self.m.platform, cpu: i as u32, debugcon: self.debugcon.as_mut() };
        if !trace_insns {
            return vcpu.run(&mut self.m.mem, &mut bus, self.quantum);
        }
        let end = vcpu.cpu.icount + self.quantum;
        loop {
            if vcpu.activity() == Activity::Active {
                let regs = vcpu.cpu.guest_regs();
                let bytes = insn_bytes(&regs, &mut self.m.mem);
                trace!(target: INSN, cpu = i, "{:04x}:{:x} {}", regs.seg[sreg::CS].selector, regs.rip, hex(&bytes));
            }
            let exit = vcpu.run(&mut self.m.mem, &mut bus, 1);
            if exit != RunExit::Budget || vcpu.cpu.icount >= end {
                return exit;
            }
        }
    }

    fn deliver_cpu_events(&mut self, i: usize) {
        while let Some(ev) = self.m.platform.take_cpu_event(i as u32) {
            trace!(target: IRQ, cpu = i, now_ns = self.now_ns, "{ev:?}");
            match ev {
                CpuEvent::Init => self.m.cpus[i].init(),
                CpuEvent::Startup(v) => self.m.cpus[i].sipi(v),
            }
        }
    }

    fn on_exit_request(&mut self, req: ExitRequest) -> Result<Option<ExitKind>, VmError> {
        match req {
            ExitRequest::DebugExit(status) => Ok(Some(ExitKind::DebugExit { status })),
            ExitRequest::PowerOff => Ok(Some(ExitKind::PowerOff)),
            ExitRequest::Reset if self.no_reboot => Ok(Some(ExitKind::Reset)),
            ExitRequest::Reset => {
                self.carried.absorb(&self.m, self.now_ns);
                self.m = build(&self.spec)?;
                self.now_ns = 0;
                self.resets += 1;
                debug!(target: EXIT, resets = self.resets, "guest reset: machine rebuilt, kernel reloaded");
                Ok(None)
            }
        }
    }

    /// Every CPU is halted and none woke during the last round.
    fn idle(&mut self) -> Option<ExitKind> {
        let if_bit = x86::Rflags::IF.bits();
        let _ = if_bit;
        let wakeable = self.m.cpus.iter().any(|c| c.activity() == Activity::Halted && c.interrupts_enabled());
        if !wakeable {
            return Some(ExitKind::HaltedForever);
        }
        if let Some(t) = self.m.platform.next_deadline_ns().filter(|&t| t > self.now_ns) {
            debug!(target: EXIT, from = self.now_ns, to = t, "all CPUs halted: clock jumps to the next timer deadline");
            self.now_ns = t;
            self.m.platform.advance(t);
            return None;
        }
        // No timer will fire: only host input can wake the guest.
        let Some(rx) = self.serial_in.as_ref() else {
            return Some(ExitKind::HaltedForever);
        };
        let wait = match self.timeout {
            Some(_) => Duration::from_millis(10),
            None => Duration::from_millis(100),
        };
        match rx.recv_timeout(wait) {
            Ok(bytes) => self.input.extend(bytes),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                self.serial_in = None;
                return Some(ExitKind::HaltedForever);
            }
        }
        None
    }

    fn feed_serial_input(&mut self) {
        if let Some(rx) = &self.serial_in {
            loop {
                match rx.try_recv() {
                    Ok(bytes) => self.input.extend(bytes),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.serial_in = None;
                        break;
                    }
                }
            }
        }
        if !self.input.is_empty() {
            let n = self.m.platform.serial_input(self.input.as_slices().0);
            self.input.drain(..n);
        }
    }

    fn report(&mut self, exit: ExitKind, wall: Duration) -> RunReport {
        let mut c = std::mem::take(&mut self.carried);
        c.absorb(&self.m, self.now_ns);
        let cpus = self
            .m
            .cpus
            .iter()
            .enumerate()
            .map(|(i, vcpu)| (i, vcpu, vcpu.cpu.guest_regs()))
            .map(|(i, vcpu, regs)| CpuState {
                cpu: i as u32,
                mode: regs.compute_mode(),
                activity: vcpu.activity(),
                cs: regs.seg[sreg::CS].selector,
                rip: regs.rip,
                rflags: regs.rflags(),
                cr0: regs.cr0,
                cr3: regs.cr3,
                last_exception: vcpu.cpu.stats.last_exception,
                recent_blocks: vcpu.cpu.stats.recent_blocks().collect(),
                earlier_exceptions: {
                    let r = &vcpu.cpu.stats.recent_exceptions;
                    r.iter().take(r.len().saturating_sub(1)).copied().collect()
                },
                insn_bytes: insn_bytes(&regs, &mut self.m.mem),
                insns: c.insns.get(i).copied().unwrap_or(0),
            })
            .collect();
        RunReport {
            exit,
            kernel_format: self.m.boot.format,
            insns: c.insns,
            wall,
            virtual_ns: c.virtual_ns,
            exceptions: c.exceptions,
            interrupts: c.interrupts,
            unimplemented: c.unimplemented,
            blocks_decoded: c.blocks_decoded,
            devices: c.devices,
            lapic_msr: c.lapic_msr,
            unhandled: self.m.platform.unhandled().to_vec(),
            resets: self.resets,
            cpus,
            exits: c.exits,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(" ")
}

/// Up to 15 bytes at CS:RIP through the CPU's current translation (with
/// paging off that is the physical address). Stops at the first byte that
/// is not mapped or not RAM.
fn insn_bytes(regs: &Regs, mem: &mut Memory) -> Vec<u8> {
    let cs = regs.seg[sreg::CS];
    let mode = regs.compute_mode();
    let mut la = match mode {
        Mode::Long => regs.rip,
        Mode::Real | Mode::Vm86 => cs.base.wrapping_add(regs.rip & 0xffff),
        _ => cs.base.wrapping_add(regs.rip) & 0xffff_ffff,
    };
    let cpl = match mode {
        Mode::Real => 0,
        Mode::Vm86 => 3,
        _ => cs.selector & 3,
    };
    let ac = AccessCtx { access: Access::Fetch, user: cpl == 3, implicit: false };
    let mut out = Vec::with_capacity(15);
    while out.len() < 15 {
        let Ok(t) = mmu::walk(regs, mem, la, ac) else { break };
        let n = (15 - out.len()).min((0x1000 - (la & 0xfff)) as usize);
        let mut buf = vec![0u8; n];
        // Bytes up to the end of RAM, if the page straddles it.
        let mut got = n;
        while got > 0 && mem.read(t.pa, &mut buf[..got]).is_err() {
            got -= 1;
        }
        out.extend_from_slice(&buf[..got]);
        if got < n {
            break;
        }
        la = la.wrapping_add(n as u64);
    }
    out
}

#[cfg(test)]
mod tests;
