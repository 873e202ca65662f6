//! System instructions: interrupt flag and halting, CPUID, time stamps,
//! MSRs, port I/O, software interrupts, control/debug/descriptor-table
//! registers, segment-register loads, TLB and cache management, and the
//! fast system calls (SDM vol. 2, each instruction's page; vol. 3A, 2.8
//! "System Instruction Summary", 5.9 on privileged instructions, 19.5.2
//! "I/O Permission Bit Map").
//!
//! These are exactly the instructions where VMX non-root operation can
//! exit (SDM vol. 3C, 25.1 "Instructions That Cause VM Exits"): their
//! handlers are the single place a later non-root check goes, off the
//! ALU/memory path. Far transfers live in [`super::far`].

use crate::fault::Fault;
use crate::interrupt::EventKind;
use crate::state::Mode;
use crate::{events, Activity, Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};
use vmx::controls::{InterruptionType, ProcCtls2};
use vmx::exit::{
    CrAccess, CrAccessType, DescriptorTableInfo, DescriptorTableInstruction, DrAccess, IoAccess, IoSize, LdtrTrInfo,
    LdtrTrInstruction, Operand, VmxInstructionInfo,
};
use vmx::{ExitReason, ProcCtls};
use x86::seg::{ar, sreg, sys};
use x86::{vector, Cr0, Cr4, Efer, Rflags};

impl Cpu {
    /// IOPL from RFLAGS.
    #[inline]
    pub fn iopl(&self) -> u8 {
        ((self.regs.rflags >> 12) & 3) as u8
    }

    /// #GP(0) unless CPL is 0.
    #[inline]
    pub fn require_cpl0(&self) -> Result<(), Fault> {
        if self.cpl != 0 {
            return Err(Fault::gp0());
        }
        Ok(())
    }

    /// The I/O permission check of IN/OUT/INS/OUTS (SDM vol. 1, 19.5
    /// "Protection Mechanisms", 19.5.2 "I/O Permission Bit Map").
    pub fn io_allowed(&mut self, ctx: &mut Ctx, port: u16, size: u8) -> Result<(), Fault> {
        let needs_bitmap = match self.mode {
            Mode::Real => false,
            Mode::Vm86 => true,
            _ => self.cpl > self.iopl(),
        };
        if !needs_bitmap {
            return Ok(());
        }
        let tr = self.regs.tr;
        let t = tr.ar & 0xf;
        if t != sys::TSS_BUSY && t != sys::TSS_AVAIL || tr.limit < 103 {
            return Err(Fault::gp0());
        }
        let base = self.read_sys(ctx, tr.base.wrapping_add(102), 2)?;
        let off = base + u64::from(port / 8);
        if off + 1 > u64::from(tr.limit) {
            return Err(Fault::gp0());
        }
        let bits = self.read_sys(ctx, tr.base.wrapping_add(off), 2)?;
        let mask = ((1u64 << size) - 1) << (port % 8);
        if bits & mask != 0 {
            return Err(Fault::gp0());
        }
        Ok(())
    }

    /// Exits an I/O instruction when the VMX controls say so (SDM vol.
    /// 3C, 26.1.3); the permission checks come first (26.1.1).
    #[inline]
    pub(crate) fn io_exit(&mut self, ctx: &Ctx, access: IoAccess) -> Result<(), Fault> {
        let size = match access.size {
            IoSize::Byte => 1,
            IoSize::Word => 2,
            IoSize::Dword => 4,
        };
        if self.non_root && self.io_exits(ctx.mem, access.port, size) {
            return Err(self.exit_insn(ExitReason::IoInstruction, access.to_raw()));
        }
        Ok(())
    }

    /// IN from the bus, with the permission check.
    pub fn port_in(&mut self, ctx: &mut Ctx, port: u16, size: u8) -> Result<u64, Fault> {
        self.io_allowed(ctx, port, size)?;
        self.check_io_breakpoint(port, size);
        let now = self.now_ns();
        self.events |= events::IRQ;
        Ok(u64::from(ctx.bus.io_in(now, port, size)))
    }

    /// OUT to the bus, with the permission check.
    pub fn port_out(&mut self, ctx: &mut Ctx, port: u16, size: u8, v: u64) -> Result<(), Fault> {
        self.io_allowed(ctx, port, size)?;
        self.check_io_breakpoint(port, size);
        let now = self.now_ns();
        self.events |= events::IRQ | events::STOP;
        ctx.bus.io_out(now, port, size, v as u32);
        Ok(())
    }

    /// CPUID with the bits that depend on processor state (see
    /// [`crate::CpuidModel::query`]).
    pub fn cpuid_query(&self, leaf: u32, subleaf: u32) -> [u32; 4] {
        self.cpuid.query(self.apic_id, self.regs.cr4, leaf, subleaf)
    }

    fn set_flags_word(&mut self, v: u64) {
        self.regs.set_rflags(v);
        self.events |= events::IRQ | events::STOP;
    }
}

fn hlt(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    cpu.require_cpl0()?;
    if cpu.non_root && cpu.vmx_ctls().proc.contains(ProcCtls::HLT_EXITING) {
        return Err(cpu.exit_insn(ExitReason::Hlt, 0));
    }
    cpu.activity = Activity::Halted;
    cpu.events |= events::STOP | events::IRQ;
    Ok(())
}

fn cli(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    if cpu.mode != Mode::Real && cpu.cpl > cpu.iopl() {
        return Err(Fault::gp0());
    }
    cpu.regs.rflags &= !Rflags::IF.bits();
    Ok(())
}

fn sti(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    if cpu.mode != Mode::Real && cpu.cpl > cpu.iopl() {
        return Err(Fault::gp0());
    }
    if !cpu.regs.flag(Rflags::IF) {
        // Interrupts stay blocked until after the next instruction.
        cpu.inhibit_at = cpu.icount + 1;
    }
    cpu.regs.rflags |= Rflags::IF.bits();
    cpu.events |= events::IRQ | events::STOP;
    Ok(())
}

fn cpuid(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    // CPUID exits unconditionally in non-root operation (26.1.2).
    if cpu.non_root {
        return Err(cpu.exit_insn(ExitReason::Cpuid, 0));
    }
    let r = cpu.cpuid_query(cpu.regs.gpr[0] as u32, cpu.regs.gpr[1] as u32);
    cpu.regs.gpr[0] = u64::from(r[0]);
    cpu.regs.gpr[3] = u64::from(r[1]);
    cpu.regs.gpr[1] = u64::from(r[2]);
    cpu.regs.gpr[2] = u64::from(r[3]);
    Ok(())
}

fn rdtsc(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    // 26.3 "Changes to Instruction Behavior in VMX Non-Root Operation":
    // with "enable RDTSCP" clear, RDTSCP is an invalid opcode, which comes
    // before any exit (26.1.1).
    if cpu.non_root && insn.mnemonic() == Mnemonic::Rdtscp && !cpu.vmx_ctls().proc2.contains(ProcCtls2::ENABLE_RDTSCP) {
        return Err(Fault::ud());
    }
    if cpu.regs.cr4 & Cr4::TSD.bits() != 0 && cpu.cpl != 0 {
        return Err(Fault::gp0());
    }
    if cpu.non_root && cpu.vmx_ctls().proc.contains(ProcCtls::RDTSC_EXITING) {
        let reason = if insn.mnemonic() == Mnemonic::Rdtscp { ExitReason::Rdtscp } else { ExitReason::Rdtsc };
        return Err(cpu.exit_insn(reason, 0));
    }
    if insn.mnemonic() == Mnemonic::Rdtscp {
        if !cpu.cpuid.features().rdtscp {
            return Err(Fault::ud());
        }
        cpu.regs.gpr[1] = cpu.regs.msr.tsc_aux & 0xffff_ffff;
    }
    let t = cpu.tsc();
    cpu.regs.gpr[0] = t & 0xffff_ffff;
    cpu.regs.gpr[2] = t >> 32;
    Ok(())
}

fn rdpid(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if !cpu.cpuid.features().rdpid {
        return Err(Fault::ud());
    }
    cpu.set_reg(insn.op0_register(), cpu.regs.msr.tsc_aux);
    Ok(())
}

fn rdmsr(cpu: &mut Cpu, ctx: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    cpu.require_cpl0()?;
    if cpu.non_root && cpu.msr_exits(ctx.mem, cpu.regs.gpr[1] as u32, false) {
        return Err(cpu.exit_insn(ExitReason::Rdmsr, 0));
    }
    let v = cpu.rdmsr(ctx, cpu.regs.gpr[1] as u32)?;
    cpu.regs.gpr[0] = v & 0xffff_ffff;
    cpu.regs.gpr[2] = v >> 32;
    Ok(())
}

fn wrmsr(cpu: &mut Cpu, ctx: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    cpu.require_cpl0()?;
    if cpu.non_root && cpu.msr_exits(ctx.mem, cpu.regs.gpr[1] as u32, true) {
        return Err(cpu.exit_insn(ExitReason::Wrmsr, 0));
    }
    let v = (cpu.regs.gpr[2] << 32) | (cpu.regs.gpr[0] & 0xffff_ffff);
    cpu.wrmsr(ctx, cpu.regs.gpr[1] as u32, v)?;
    cpu.events |= events::STOP;
    Ok(())
}

fn io_port(cpu: &Cpu, insn: &Instruction, n: u32) -> u16 {
    match insn.op_kind(n) {
        OpKind::Register => cpu.reg(insn.op_register(n)) as u16,
        _ => insn.immediate8() as u16,
    }
}

/// The exit qualification of IN/OUT (SDM 28.2.1, I/O instructions).
fn io_access(insn: &Instruction, port: u16, size: u8, is_in: bool, imm_op: u32) -> IoAccess {
    IoAccess {
        size: match size {
            1 => IoSize::Byte,
            2 => IoSize::Word,
            _ => IoSize::Dword,
        },
        is_in,
        string: false,
        rep: false,
        immediate: insn.op_kind(imm_op) != OpKind::Register,
        port,
    }
}

fn in_(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let r = insn.op0_register();
    let port = io_port(cpu, insn, 1);
    if cpu.non_root {
        cpu.io_allowed(ctx, port, r.size() as u8)?;
        cpu.io_exit(ctx, io_access(insn, port, r.size() as u8, true, 1))?;
    }
    let v = cpu.port_in(ctx, port, r.size() as u8)?;
    cpu.set_reg(r, v);
    Ok(())
}

fn out(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let r = insn.op1_register();
    let port = io_port(cpu, insn, 0);
    if cpu.non_root {
        cpu.io_allowed(ctx, port, r.size() as u8)?;
        cpu.io_exit(ctx, io_access(insn, port, r.size() as u8, false, 0))?;
    }
    let v = cpu.reg(r);
    cpu.port_out(ctx, port, r.size() as u8, v)
}

/// Delivers a software interrupt and continues at its handler.
fn soft_int(cpu: &mut Cpu, ctx: &mut Ctx, vec: u8, kind: EventKind) -> Result<(), Fault> {
    let ret = cpu.next_rip;
    cpu.deliver(ctx, vec, kind, None, ret)?;
    cpu.next_rip = cpu.regs.rip;
    Ok(())
}

fn int_n(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.mode == Mode::Vm86 && cpu.iopl() < 3 {
        return Err(Fault::gp0());
    }
    soft_int(cpu, ctx, insn.immediate8(), EventKind::Software)
}

/// INT3, INTO and INT1 in non-root operation when the exception bitmap
/// intercepts their vector (26.2 "Other Causes of VM Exits"): an exception
/// exit whose interruption information says software exception (INT3,
/// INTO) or privileged software exception (INT1), with the instruction
/// length (28.2.5) and RIP at the instruction (28.3.3).
fn soft_exception_exit(cpu: &mut Cpu, vec: u8, kind: InterruptionType) -> Result<(), Fault> {
    if cpu.non_root && cpu.soft_exception_exits(vec) {
        let mut e = crate::virt::PendingExit::instruction(ExitReason::ExceptionOrNmi, 0);
        e.interruption = Some((u32::from(vec) | ((kind as u32) << 8) | (1 << 31), None));
        cpu.vmx.pending = Some(e);
        return Err(Fault::vm_exit());
    }
    Ok(())
}

fn int3(cpu: &mut Cpu, ctx: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    soft_exception_exit(cpu, vector::BP, InterruptionType::SoftwareException)?;
    cpu.note_trap(vector::BP);
    soft_int(cpu, ctx, vector::BP, EventKind::SoftException)
}

fn into(cpu: &mut Cpu, ctx: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    if cpu.regs.of() {
        soft_exception_exit(cpu, vector::OF, InterruptionType::SoftwareException)?;
        cpu.note_trap(vector::OF);
        soft_int(cpu, ctx, vector::OF, EventKind::SoftException)?;
    }
    Ok(())
}

fn int1(cpu: &mut Cpu, ctx: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    soft_exception_exit(cpu, vector::DB, InterruptionType::PrivilegedSoftwareException)?;
    cpu.note_trap(vector::DB);
    soft_int(cpu, ctx, vector::DB, EventKind::PrivSoftException)
}

fn ud(_: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    Err(Fault::ud())
}

fn pushf(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.mode == Mode::Vm86 && cpu.iopl() < 3 {
        return Err(Fault::gp0());
    }
    let size = (-insn.stack_pointer_increment()) as u8;
    let f = cpu.regs.rflags() & !(Rflags::VM | Rflags::RF).bits();
    cpu.push(ctx, size, f)
}

fn popf(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = insn.stack_pointer_increment() as u8;
    if cpu.mode == Mode::Vm86 && cpu.iopl() < 3 {
        return Err(Fault::gp0());
    }
    let v = cpu.pop(ctx, size)?;
    let old = cpu.regs.rflags();
    // Which bits POPF may change depends on CPL and IOPL (SDM vol. 2,
    // "POPF", table "Effect of POPF/POPFD on the EFLAGS Register").
    let mut writable = (Rflags::STATUS | Rflags::TF | Rflags::DF | Rflags::NT | Rflags::AC | Rflags::ID).bits();
    if cpu.mode == Mode::Real || cpu.cpl == 0 {
        writable |= (Rflags::IF | Rflags::IOPL).bits();
    } else if cpu.cpl <= cpu.iopl() {
        writable |= Rflags::IF.bits();
    }
    if cpu.mode == Mode::Vm86 {
        writable |= Rflags::IF.bits();
        writable &= !Rflags::IOPL.bits();
    }
    if size == 2 {
        writable &= 0xffff;
    }
    let new = ((old & !writable) | (v & writable)) & !Rflags::RF.bits();
    cpu.set_flags_word(new);
    Ok(())
}

fn pushf_sreg(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = (-insn.stack_pointer_increment()) as u8;
    let sel = cpu.regs.seg[super::sreg_index(insn.op0_register())].selector;
    cpu.push(ctx, size, u64::from(sel))
}

fn pop_sreg(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let size = insn.stack_pointer_increment() as u8;
    let v = cpu.peek(ctx, 0, size)?;
    cpu.load_seg(ctx, super::sreg_index(insn.op0_register()), v as u16)?;
    cpu.adjust_rsp(size as i64);
    cpu.stop_block();
    Ok(())
}

fn mov_sreg(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if insn.op0_kind() == OpKind::Register && insn.op0_register().is_segment_register() {
        let r = super::sreg_index(insn.op0_register());
        if r == sreg::CS {
            return Err(Fault::ud());
        }
        let v = cpu.read_op(ctx, insn, 1)?;
        cpu.load_seg(ctx, r, v as u16)?;
        cpu.stop_block();
        Ok(())
    } else {
        let sel = u64::from(cpu.regs.seg[super::sreg_index(insn.op1_register())].selector);
        // To a register the selector is zero-extended; to memory 16 bits.
        cpu.write_op(ctx, insn, 0, sel)
    }
}

fn load_far_ptr(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let r = match insn.mnemonic() {
        Mnemonic::Lds => sreg::DS,
        Mnemonic::Les => sreg::ES,
        Mnemonic::Lfs => sreg::FS,
        Mnemonic::Lgs => sreg::GS,
        _ => sreg::SS,
    };
    if insn.op1_kind() != OpKind::Memory {
        return Err(Fault::ud());
    }
    let dst = insn.op0_register();
    let osize = dst.size() as u8;
    let seg = cpu.mem_seg(insn);
    let off = cpu.ea(insn);
    let v = cpu.read_mem(ctx, seg, off, osize)?;
    let sel = cpu.read_mem(ctx, seg, off.wrapping_add(u64::from(osize)), 2)?;
    cpu.load_seg(ctx, r, sel as u16)?;
    cpu.set_reg(dst, v);
    cpu.stop_block();
    Ok(())
}

fn cr_number(r: Register) -> u8 {
    (r as u32 - Register::CR0 as u32) as u8
}

/// The GPR number of an iced register operand (for CR-access
/// qualifications).
fn gpr_number(r: Register) -> u8 {
    crate::exec::gpr_ref(r).map_or(0, |g| g.idx)
}

/// Whether a MOV to or from CR`n` exits (SDM 26.1.3: CR0/CR4 by the
/// guest/host masks, CR3 by CR3-load/store exiting and the targets, CR8 by
/// CR8-load/store exiting).
fn mov_cr_exits(cpu: &Cpu, n: u8, write: bool, v: u64) -> bool {
    let p = cpu.vmx_ctls().proc;
    match (n, write) {
        (0 | 4, true) => cpu.cr_write_exits(n, v),
        (3, true) => cpu.cr3_load_exits(v),
        (3, false) => p.contains(ProcCtls::CR3_STORE_EXITING),
        (8, true) => p.contains(ProcCtls::CR8_LOAD_EXITING),
        (8, false) => p.contains(ProcCtls::CR8_STORE_EXITING),
        _ => false,
    }
}

fn mov_cr(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    cpu.require_cpl0()?;
    if insn.op0_register().is_cr() {
        let n = cr_number(insn.op0_register());
        let v = cpu.reg(insn.op1_register());
        if cpu.non_root && matches!(n, 0 | 3 | 4 | 8) {
            if mov_cr_exits(cpu, n, true, v) {
                let q = CrAccess {
                    cr: n,
                    access: CrAccessType::MovToCr,
                    lmsw_memory: false,
                    gpr: gpr_number(insn.op1_register()),
                    lmsw_source: 0,
                };
                return Err(cpu.exit_insn(ExitReason::ControlRegisterAccess, q.to_raw()));
            }
            if n == 0 || n == 4 {
                let cur = if n == 0 { cpu.regs.cr0 } else { cpu.regs.cr4 };
                let v = cpu.cr_write_value(n, v, cur);
                return cpu.write_cr(ctx, n, v);
            }
            // 30.3 "Virtualizing CR8-Based TPR Accesses": with a TPR
            // shadow, MOV to CR8 writes VTPR instead of the TPR (the
            // reserved-bit check of the instruction still applies).
            if n == 8 && cpu.vmx_ctls().proc.contains(ProcCtls::USE_TPR_SHADOW) {
                if v >> 4 != 0 {
                    return Err(Fault::gp0());
                }
                cpu.write_vtpr(ctx, v);
                return Ok(());
            }
        }
        cpu.write_cr(ctx, n, v)
    } else {
        let n = cr_number(insn.op1_register());
        if cpu.non_root && mov_cr_exits(cpu, n, false, 0) {
            let q = CrAccess {
                cr: n,
                access: CrAccessType::MovFromCr,
                lmsw_memory: false,
                gpr: gpr_number(insn.op0_register()),
                lmsw_source: 0,
            };
            return Err(cpu.exit_insn(ExitReason::ControlRegisterAccess, q.to_raw()));
        }
        let v = match n {
            0 if cpu.non_root => cpu.cr_read_shadowed(0, cpu.regs.cr0),
            4 if cpu.non_root => cpu.cr_read_shadowed(4, cpu.regs.cr4),
            // 30.3: with a TPR shadow, MOV from CR8 reads VTPR[7:4].
            8 if cpu.non_root && cpu.vmx_ctls().proc.contains(ProcCtls::USE_TPR_SHADOW) => {
                u64::from((cpu.vtpr(ctx.mem) >> 4) & 0xf)
            }
            0 => cpu.regs.cr0,
            2 => cpu.regs.cr2,
            3 => cpu.regs.cr3,
            4 => cpu.regs.cr4,
            8 => u64::from(ctx.bus.tpr()),
            _ => return Err(Fault::ud()),
        };
        // MOV from CR always moves the full register width of the mode.
        cpu.set_reg(insn.op0_register(), v);
        Ok(())
    }
}

impl Cpu {
    /// MOV to CRn with the checks of SDM vol. 2 "MOV—Move to/from Control
    /// Registers" and vol. 3A 2.5, 9.8 "Initializing IA-32e Mode".
    pub fn write_cr(&mut self, ctx: &mut Ctx, n: u8, v: u64) -> Result<(), Fault> {
        let lma = self.regs.efer & Efer::LMA.bits() != 0;
        match n {
            0 => {
                let v = if self.bitness == 64 { v } else { v & 0xffff_ffff };
                if v >> 32 != 0 {
                    return Err(Fault::gp0());
                }
                let pg = v & Cr0::PG.bits() != 0;
                let pe = v & Cr0::PE.bits() != 0;
                if (pg && !pe) || (v & Cr0::NW.bits() != 0 && v & Cr0::CD.bits() == 0) {
                    return Err(Fault::gp0());
                }
                let was_pg = self.regs.cr0 & Cr0::PG.bits() != 0;
                let mut efer = self.regs.efer;
                if pg && !was_pg && efer & Efer::LME.bits() != 0 {
                    // Activating IA-32e mode needs PAE and a non-64-bit CS.
                    if self.regs.cr4 & Cr4::PAE.bits() == 0 || self.regs.seg[sreg::CS].ar & ar::L != 0 {
                        return Err(Fault::gp0());
                    }
                    efer |= Efer::LMA.bits();
                }
                if !pg && was_pg && lma {
                    if self.mode == Mode::Long {
                        return Err(Fault::gp0());
                    }
                    efer &= !Efer::LMA.bits();
                }
                // Clearing CR0.PE in IA-32e mode is also a #GP.
                if !pe && lma {
                    return Err(Fault::gp0());
                }
                self.regs.cr0 = v | Cr0::ET.bits();
                self.regs.efer = efer;
                self.state_changed();
            }
            2 => self.regs.cr2 = v,
            3 => {
                let pcide = self.regs.cr4 & Cr4::PCIDE.bits() != 0;
                let mut v = v;
                if pcide {
                    v &= !(1 << 63);
                }
                if lma && v >> crate::mmu::MAXPHYADDR != 0 {
                    return Err(Fault::gp0());
                }
                if !lma {
                    v &= 0xffff_ffff;
                }
                self.regs.cr3 = v;
                self.tlb.flush_all();
                self.events |= events::STOP;
            }
            4 => {
                // Bits the VMX guest/host mask gives the host (CR4.VMXE
                // under L0) are the host's business, not the guest's
                // feature set's (SDM vol. 3C, 26.3).
                let owned = if self.non_root { self.vmx_ctls().cr4_mask } else { 0 };
                if v & !owned & !self.cpuid.cr4_allowed() != 0 {
                    return Err(Fault::gp0());
                }
                if lma && v & Cr4::PAE.bits() == 0 {
                    return Err(Fault::gp0());
                }
                if lma && (v ^ self.regs.cr4) & Cr4::LA57.bits() != 0 {
                    return Err(Fault::gp0());
                }
                if v & Cr4::PCIDE.bits() != 0
                    && self.regs.cr4 & Cr4::PCIDE.bits() == 0
                    && (!lma || self.regs.cr3 & 0xfff != 0)
                {
                    return Err(Fault::gp0());
                }
                self.regs.cr4 = v;
                self.state_changed();
            }
            8 => {
                if v >> 4 != 0 {
                    return Err(Fault::gp0());
                }
                ctx.bus.set_tpr(v as u8);
                self.events |= events::IRQ | events::STOP;
            }
            _ => return Err(Fault::ud()),
        }
        Ok(())
    }
}

fn mov_dr(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    // 26.1.3, MOV DR: with "MOV-DR exiting" the exit takes priority even
    // over the CPL #GP and the #UD for DR4/DR5 under CR4.DE.
    if cpu.non_root && cpu.vmx_ctls().proc.contains(ProcCtls::MOV_DR_EXITING) {
        let to_dr = insn.op0_register().is_dr();
        let (dr, gpr) =
            if to_dr { (insn.op0_register(), insn.op1_register()) } else { (insn.op1_register(), insn.op0_register()) };
        let q = DrAccess { dr: (dr as u32 - Register::DR0 as u32) as u8, from_dr: !to_dr, gpr: gpr_number(gpr) };
        return Err(cpu.exit_insn(ExitReason::MovDr, q.to_raw()));
    }
    cpu.require_cpl0()?;
    let de = cpu.regs.cr4 & Cr4::DE.bits() != 0;
    let map = |r: Register| -> Result<usize, Fault> {
        let n = (r as u32 - Register::DR0 as u32) as usize;
        match n {
            0..=3 | 6 | 7 => Ok(n),
            4 | 5 if !de => Ok(n + 2),
            _ => Err(Fault::ud()),
        }
    };
    if insn.op0_register().is_dr() {
        let n = map(insn.op0_register())?;
        let v = cpu.reg(insn.op1_register());
        match n {
            6 | 7 if v >> 32 != 0 => return Err(Fault::gp0()),
            6 => cpu.regs.dr[6] = (v & 0x0001_e00f) | 0xffff_0ff0,
            7 => {
                cpu.regs.dr[7] = (v & 0xffff_2bff) | 0x400;
                cpu.state_changed();
            }
            _ => cpu.regs.dr[n] = v,
        }
    } else {
        let n = map(insn.op1_register())?;
        cpu.set_reg(insn.op0_register(), cpu.regs.dr[n]);
    }
    Ok(())
}

fn clts(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    cpu.require_cpl0()?;
    if cpu.non_root {
        // 26.1.3, CLTS: exits when TS is host-owned and the guest believes
        // it set; host-owned and believed clear, CLTS changes nothing
        // (26.3).
        let c = cpu.vmx_ctls();
        let ts = Cr0::TS.bits();
        if c.cr0_mask & ts != 0 {
            if c.cr0_shadow & ts != 0 {
                let q = CrAccess { cr: 0, access: CrAccessType::Clts, lmsw_memory: false, gpr: 0, lmsw_source: 0 };
                return Err(cpu.exit_insn(ExitReason::ControlRegisterAccess, q.to_raw()));
            }
            return Ok(());
        }
    }
    cpu.regs.cr0 &= !Cr0::TS.bits();
    Ok(())
}

fn lmsw(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    cpu.require_cpl0()?;
    let src = cpu.read_op(ctx, insn, 0)? & 0xffff;
    let v = src & 0xf;
    if cpu.non_root {
        // 26.1.3, LMSW: exits when it would set a host-owned PE the guest
        // believes clear, or change any host-owned bit among MP, EM, TS
        // relative to the read shadow.
        let c = cpu.vmx_ctls();
        let (mask, shadow) = (c.cr0_mask & 0xf, c.cr0_shadow);
        if (mask & v & !shadow & 1 != 0) || ((v ^ shadow) & mask & 0xe != 0) {
            let memory = insn.op0_kind() == OpKind::Memory;
            let q =
                CrAccess { cr: 0, access: CrAccessType::Lmsw, lmsw_memory: memory, gpr: 0, lmsw_source: src as u16 };
            let mut e = crate::virt::PendingExit::instruction(ExitReason::ControlRegisterAccess, q.to_raw());
            // 28.2.1: LMSW with a memory operand reports its linear address.
            if memory {
                let off = cpu.ea(insn);
                e.guest_linear = Some(cpu.linear_unchecked(cpu.mem_seg(insn), off));
            }
            cpu.vmx.pending = Some(e);
            return Err(Fault::vm_exit());
        }
    }
    // LMSW can set PE but never clear it.
    let cr0 = (cpu.regs.cr0 & !0xe) | (v & 0xe) | (cpu.regs.cr0 & 1) | (v & 1);
    let cr0 = if cpu.non_root { cpu.cr_write_value(0, cr0, cpu.regs.cr0) } else { cr0 };
    cpu.write_cr(ctx, 0, cr0)
}

/// Whether "descriptor-table exiting" is on (26.1.3: LGDT, LIDT, LLDT, LTR,
/// SGDT, SIDT, SLDT, STR exit; the #UD and CPL/UMIP #GP checks come
/// first, memory-operand faults after).
fn descriptor_table_exiting(cpu: &Cpu) -> bool {
    cpu.non_root && cpu.vmx_ctls().proc2.contains(ProcCtls2::DESCRIPTOR_TABLE_EXITING)
}

/// Exit 46 for LGDT, LIDT, SGDT and SIDT: instruction information with
/// the memory operand and the operand size, the displacement as
/// qualification (28.2.1, 28.2.5).
fn gdtr_idtr_exit(cpu: &mut Cpu, insn: &Instruction) -> Fault {
    use iced_x86::Code;
    let (memory, disp) = cpu.memory_operand_info(insn);
    let instruction = match insn.mnemonic() {
        Mnemonic::Sgdt => DescriptorTableInstruction::Sgdt,
        Mnemonic::Sidt => DescriptorTableInstruction::Sidt,
        Mnemonic::Lgdt => DescriptorTableInstruction::Lgdt,
        _ => DescriptorTableInstruction::Lidt,
    };
    let o16 =
        matches!(insn.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16 | Code::Sgdt_m1632_16 | Code::Sidt_m1632_16);
    // The operand-size bit is undefined in 64-bit mode; 0 there.
    let info = DescriptorTableInfo { memory, operand_size_32: cpu.bitness != 64 && !o16, instruction };
    cpu.exit_insn_info(ExitReason::GdtrIdtrAccess, disp, info.to_raw())
}

/// Exit 47 for LLDT, LTR, SLDT and STR: register or memory operand in the
/// instruction information, the displacement as qualification.
fn ldtr_tr_exit(cpu: &mut Cpu, insn: &Instruction) -> Fault {
    let instruction = match insn.mnemonic() {
        Mnemonic::Sldt => LdtrTrInstruction::Sldt,
        Mnemonic::Str => LdtrTrInstruction::Str,
        Mnemonic::Lldt => LdtrTrInstruction::Lldt,
        _ => LdtrTrInstruction::Ltr,
    };
    let (operand, disp) = if insn.op0_kind() == OpKind::Memory {
        let (m, d) = cpu.memory_operand_info(insn);
        (Operand::Memory(m), d)
    } else {
        (Operand::Register(gpr_number(insn.op0_register())), 0)
    };
    cpu.exit_insn_info(ExitReason::LdtrTrAccess, disp, LdtrTrInfo { operand, instruction }.to_raw())
}

fn umip_check(cpu: &Cpu) -> Result<(), Fault> {
    if cpu.cpl > 0 && cpu.regs.cr4 & Cr4::UMIP.bits() != 0 {
        return Err(Fault::gp0());
    }
    Ok(())
}

fn smsw(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    umip_check(cpu)?;
    // 26.3: in non-root operation SMSW, like MOV from CR0, reads the
    // host-owned bits from the CR0 read shadow.
    let v = if cpu.non_root { cpu.cr_read_shadowed(0, cpu.regs.cr0) } else { cpu.regs.cr0 };
    if insn.op0_kind() == OpKind::Memory {
        cpu.write_op(ctx, insn, 0, v & 0xffff)
    } else {
        cpu.set_reg(insn.op0_register(), v);
        Ok(())
    }
}

fn lgdt_lidt(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    cpu.require_cpl0()?;
    if descriptor_table_exiting(cpu) {
        return Err(gdtr_idtr_exit(cpu, insn));
    }
    let seg = cpu.mem_seg(insn);
    let off = cpu.ea(insn);
    let limit = cpu.read_mem(ctx, seg, off, 2)? as u16;
    let base = if cpu.bitness == 64 {
        cpu.read_mem(ctx, seg, off.wrapping_add(2), 8)?
    } else {
        let b = cpu.read_mem(ctx, seg, off.wrapping_add(2), 4)?;
        // A 16-bit operand size loads only 24 bits of base.
        if insn.code() == iced_x86::Code::Lgdt_m1632_16 || insn.code() == iced_x86::Code::Lidt_m1632_16 {
            b & 0xff_ffff
        } else {
            b
        }
    };
    if cpu.bitness == 64 && !cpu.canonical(base) {
        return Err(Fault::gp0());
    }
    let t = crate::state::DescTable { base, limit };
    if insn.mnemonic() == Mnemonic::Lgdt {
        cpu.regs.gdtr = t;
    } else {
        cpu.regs.idtr = t;
    }
    Ok(())
}

fn sgdt_sidt(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    umip_check(cpu)?;
    if descriptor_table_exiting(cpu) {
        return Err(gdtr_idtr_exit(cpu, insn));
    }
    let t = if insn.mnemonic() == Mnemonic::Sgdt { cpu.regs.gdtr } else { cpu.regs.idtr };
    let seg = cpu.mem_seg(insn);
    let off = cpu.ea(insn);
    let bsize = if cpu.bitness == 64 { 8 } else { 4 };
    cpu.probe_write(ctx, seg, off, 2)?;
    cpu.probe_write(ctx, seg, off.wrapping_add(2), bsize)?;
    cpu.write_mem(ctx, seg, off, 2, u64::from(t.limit))?;
    cpu.write_mem(ctx, seg, off.wrapping_add(2), bsize, t.base)
}

fn lldt(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.mode == Mode::Real || cpu.mode == Mode::Vm86 {
        return Err(Fault::ud());
    }
    cpu.require_cpl0()?;
    if descriptor_table_exiting(cpu) {
        return Err(ldtr_tr_exit(cpu, insn));
    }
    let sel = cpu.read_op(ctx, insn, 0)? as u16;
    if sel & !3 == 0 {
        cpu.regs.ldtr = crate::Segment { selector: sel, base: 0, limit: 0, ar: ar::UNUSABLE };
        return Ok(());
    }
    if sel & 4 != 0 {
        return Err(Fault::gp(u32::from(sel & 0xfffc)));
    }
    let d = cpu.read_descriptor(ctx, sel, false)?;
    if d.desc.is_code_data() || d.desc.typ() != sys::LDT {
        return Err(Fault::gp(u32::from(sel & 0xfffc)));
    }
    if !d.desc.present() {
        return Err(Fault::np(u32::from(sel & 0xfffc)));
    }
    let mut base = u64::from(d.desc.base);
    if cpu.regs.efer & Efer::LMA.bits() != 0 {
        let hi = cpu.read_descriptor_high(ctx, sel, &d)?;
        base |= (hi & 0xffff_ffff) << 32;
    }
    cpu.regs.ldtr = crate::Segment { selector: sel, base, limit: d.desc.limit, ar: d.desc.ar };
    Ok(())
}

fn ltr(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.mode == Mode::Real || cpu.mode == Mode::Vm86 {
        return Err(Fault::ud());
    }
    cpu.require_cpl0()?;
    if descriptor_table_exiting(cpu) {
        return Err(ldtr_tr_exit(cpu, insn));
    }
    let sel = cpu.read_op(ctx, insn, 0)? as u16;
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let ec = u32::from(sel & 0xfffc);
    if sel & 4 != 0 {
        return Err(Fault::gp(ec));
    }
    let d = cpu.read_descriptor(ctx, sel, false)?;
    let lma = cpu.regs.efer & Efer::LMA.bits() != 0;
    let t = d.desc.typ();
    let ok = !d.desc.is_code_data() && (t == sys::TSS_AVAIL || (!lma && t == sys::TSS16_AVAIL));
    if !ok {
        return Err(Fault::gp(ec));
    }
    if !d.desc.present() {
        return Err(Fault::np(ec));
    }
    let mut base = u64::from(d.desc.base);
    if lma {
        let hi = cpu.read_descriptor_high(ctx, sel, &d)?;
        base |= (hi & 0xffff_ffff) << 32;
    }
    // Mark the descriptor busy.
    let b = (d.raw >> 40) as u8 | 2;
    cpu.write_sys(ctx, d.la + 5, 1, u64::from(b))?;
    cpu.regs.tr = crate::Segment { selector: sel, base, limit: d.desc.limit, ar: d.desc.ar | 2 };
    Ok(())
}

fn sldt_str(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.mode == Mode::Real || cpu.mode == Mode::Vm86 {
        return Err(Fault::ud());
    }
    umip_check(cpu)?;
    if descriptor_table_exiting(cpu) {
        return Err(ldtr_tr_exit(cpu, insn));
    }
    let sel = if insn.mnemonic() == Mnemonic::Sldt { cpu.regs.ldtr.selector } else { cpu.regs.tr.selector };
    cpu.write_op(ctx, insn, 0, u64::from(sel))
}

/// LAR, LSL, VERR, VERW: descriptor queries that report through ZF.
fn desc_query(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.mode == Mode::Real || cpu.mode == Mode::Vm86 {
        return Err(Fault::ud());
    }
    let m = insn.mnemonic();
    let src = if matches!(m, Mnemonic::Verr | Mnemonic::Verw) { 0 } else { 1 };
    let sel = cpu.read_op(ctx, insn, src)? as u16;
    let mut ok = false;
    let mut value = 0u64;
    if sel & !3 != 0 {
        if let Ok(d) = cpu.read_descriptor(ctx, sel, false) {
            let desc = d.desc;
            let rpl = (sel & 3) as u8;
            let conforming = desc.is_code() && desc.ar & ar::DC != 0;
            let priv_ok = conforming || (desc.dpl() >= cpu.cpl && desc.dpl() >= rpl);
            let lma = cpu.regs.efer & Efer::LMA.bits() != 0;
            let sys_ok = |t: u32, lar: bool| match t {
                sys::LDT | sys::TSS_AVAIL | sys::TSS_BUSY => true,
                sys::CALL => lar,
                sys::TSS16_AVAIL | sys::TSS16_BUSY | sys::CALL16 | sys::TASK => {
                    !lma && (lar || t != sys::CALL16 && t != sys::TASK)
                }
                _ => false,
            };
            match m {
                Mnemonic::Lar => {
                    ok = priv_ok && (desc.is_code_data() || sys_ok(desc.typ(), true));
                    value = d.raw >> 32 & 0x00ff_ff00;
                }
                Mnemonic::Lsl => {
                    ok = priv_ok && (desc.is_code_data() || sys_ok(desc.typ(), false));
                    value = u64::from(desc.limit);
                }
                Mnemonic::Verr => {
                    ok = desc.is_code_data() && priv_ok && (!desc.is_code() || desc.ar & ar::RW != 0);
                }
                _ => {
                    ok = desc.is_code_data() && priv_ok && !desc.is_code() && desc.ar & ar::RW != 0;
                }
            }
        }
    }
    cpu.regs.materialize_flags();
    if ok {
        cpu.regs.rflags |= Rflags::ZF.bits();
        if matches!(m, Mnemonic::Lar | Mnemonic::Lsl) {
            cpu.set_reg(insn.op0_register(), value);
        }
    } else {
        cpu.regs.rflags &= !Rflags::ZF.bits();
    }
    Ok(())
}

fn arpl(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.mode == Mode::Real || cpu.mode == Mode::Vm86 {
        return Err(Fault::ud());
    }
    let dst = cpu.read_op(ctx, insn, 0)?;
    let src = cpu.reg(insn.op1_register());
    cpu.regs.materialize_flags();
    if dst & 3 < src & 3 {
        cpu.write_op(ctx, insn, 0, (dst & !3) | (src & 3))?;
        cpu.regs.rflags |= Rflags::ZF.bits();
    } else {
        cpu.regs.rflags &= !Rflags::ZF.bits();
    }
    Ok(())
}

fn invlpg(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    cpu.require_cpl0()?;
    let off = cpu.ea(insn);
    let seg = &cpu.regs.seg[cpu.mem_seg(insn)];
    let la = if cpu.mode == Mode::Long {
        if cpu.mem_seg(insn) >= sreg::FS {
            seg.base.wrapping_add(off)
        } else {
            off
        }
    } else {
        seg.base.wrapping_add(off) & 0xffff_ffff
    };
    // 26.1.3, INVLPG: "INVLPG exiting" reports the linear address as
    // qualification (28.2.1).
    if cpu.non_root && cpu.vmx_ctls().proc.contains(ProcCtls::INVLPG_EXITING) {
        return Err(cpu.exit_insn(ExitReason::Invlpg, la));
    }
    cpu.tlb.flush_page(la);
    Ok(())
}

fn invpcid(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if !cpu.cpuid.features().invpcid {
        return Err(Fault::ud());
    }
    // 26.3: without "enable INVPCID", INVPCID is #UD in non-root
    // operation; with it, 26.1.3: "INVLPG exiting" makes it exit (after
    // the CPL check), with the type register and the memory operand in the
    // instruction information (28.2.5) and the displacement as
    // qualification.
    if cpu.non_root && !cpu.vmx_ctls().proc2.contains(ProcCtls2::ENABLE_INVPCID) {
        return Err(Fault::ud());
    }
    cpu.require_cpl0()?;
    if cpu.non_root && cpu.vmx_ctls().proc.contains(ProcCtls::INVLPG_EXITING) {
        let (m, disp) = cpu.memory_operand_info(insn);
        let info = VmxInstructionInfo { operand: Operand::Memory(m), reg2: gpr_number(insn.op0_register()) };
        return Err(cpu.exit_insn_info(ExitReason::Invpcid, disp, info.to_raw()));
    }
    let ty = cpu.reg(insn.op0_register());
    let seg = cpu.mem_seg(insn);
    let off = cpu.ea(insn);
    let pcid = cpu.read_mem(ctx, seg, off, 8)?;
    let la = cpu.read_mem(ctx, seg, off.wrapping_add(8), 8)?;
    if ty > 3 || pcid > 0xfff {
        return Err(Fault::gp0());
    }
    if ty == 0 && !cpu.canonical(la) {
        return Err(Fault::gp0());
    }
    // Flushing more than asked is architecturally allowed.
    cpu.tlb.flush_all();
    Ok(())
}

fn wbinvd(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    cpu.require_cpl0()?;
    if cpu.non_root {
        // 26.1.2: INVD exits unconditionally; 26.1.3: WBINVD and WBNOINVD
        // under "WBINVD exiting". The CPL check comes first (26.1.1).
        if insn.mnemonic() == Mnemonic::Invd {
            return Err(cpu.exit_insn(ExitReason::Invd, 0));
        }
        if cpu.vmx_ctls().proc2.contains(ProcCtls2::WBINVD_EXITING) {
            return Err(cpu.exit_insn(ExitReason::Wbinvd, 0));
        }
    }
    Ok(())
}

fn clflush(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    // Needs a valid translation like a byte read (SDM vol. 2, "CLFLUSH").
    let off = cpu.ea(insn);
    cpu.read_mem(ctx, cpu.mem_seg(insn), off, 1).map(|_| ())
}

fn swapgs(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    if cpu.mode != Mode::Long {
        return Err(Fault::ud());
    }
    cpu.require_cpl0()?;
    let gs = &mut cpu.regs.seg[sreg::GS].base;
    core::mem::swap(gs, &mut cpu.regs.msr.kernel_gs_base);
    Ok(())
}

fn fsgsbase(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.mode != Mode::Long || cpu.regs.cr4 & Cr4::FSGSBASE.bits() == 0 {
        return Err(Fault::ud());
    }
    let r = insn.op0_register();
    match insn.mnemonic() {
        Mnemonic::Rdfsbase => cpu.set_reg(r, cpu.regs.seg[sreg::FS].base),
        Mnemonic::Rdgsbase => cpu.set_reg(r, cpu.regs.seg[sreg::GS].base),
        m => {
            let v = cpu.reg(r);
            let v = if r.size() == 4 { v & 0xffff_ffff } else { v };
            if !cpu.canonical(v) {
                return Err(Fault::gp0());
            }
            let s = if m == Mnemonic::Wrfsbase { sreg::FS } else { sreg::GS };
            cpu.regs.seg[s].base = v;
        }
    }
    Ok(())
}

fn rdrand(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let f = cpu.cpuid.features();
    let rdrand = insn.mnemonic() == Mnemonic::Rdrand;
    let ok = if rdrand { f.rdrand } else { f.rdseed };
    if !ok {
        return Err(Fault::ud());
    }
    if cpu.non_root {
        // 26.1.3: RDRAND and RDSEED under their exiting controls, with
        // the destination register and operand size in the instruction
        // information (28.2.5: bits 6:3 and 12:11).
        let (ctl, reason) = if rdrand {
            (ProcCtls2::RDRAND_EXITING, ExitReason::Rdrand)
        } else {
            (ProcCtls2::RDSEED_EXITING, ExitReason::Rdseed)
        };
        if cpu.vmx_ctls().proc2.contains(ctl) {
            let r = insn.op0_register();
            let size = match r.size() {
                2 => 0u32,
                4 => 1,
                _ => 2,
            };
            let info = (u32::from(gpr_number(r)) << 3) | (size << 11);
            return Err(cpu.exit_insn_info(reason, 0, info));
        }
    }
    // Deterministic: the same run draws the same numbers (xorshift64*).
    let mut x = cpu.rng_state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    cpu.rng_state = x;
    cpu.set_reg(insn.op0_register(), x.wrapping_mul(0x2545_f491_4f6c_dd1d));
    cpu.regs.set_status_flags(Rflags::CF.bits());
    Ok(())
}

fn pkru(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.regs.cr4 & Cr4::PKE.bits() == 0 {
        return Err(Fault::ud());
    }
    if cpu.regs.gpr[1] as u32 != 0 {
        return Err(Fault::gp0());
    }
    if insn.mnemonic() == Mnemonic::Rdpkru {
        cpu.regs.gpr[0] = u64::from(cpu.regs.pkru);
        cpu.regs.gpr[2] = 0;
    } else {
        if cpu.regs.gpr[2] as u32 != 0 {
            return Err(Fault::gp0());
        }
        cpu.regs.pkru = cpu.regs.gpr[0] as u32;
        // Permissions are cached in the TLB.
        cpu.tlb.flush_all();
    }
    Ok(())
}

fn stac_clac(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if !cpu.cpuid.features().smap || cpu.cpl != 0 {
        return Err(Fault::ud());
    }
    if insn.mnemonic() == Mnemonic::Stac {
        cpu.regs.rflags |= Rflags::AC.bits();
    } else {
        cpu.regs.rflags &= !Rflags::AC.bits();
    }
    Ok(())
}

fn rdpmc(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    // Outside CPL 0 RDPMC needs CR4.PCE; that privilege check comes before
    // the exit of "RDPMC exiting" (26.1.1, 26.1.3).
    if cpu.cpl != 0 && cpu.regs.cr4 & Cr4::PCE.bits() == 0 {
        return Err(Fault::gp0());
    }
    if cpu.non_root && cpu.vmx_ctls().proc.contains(ProcCtls::RDPMC_EXITING) {
        return Err(cpu.exit_insn(ExitReason::Rdpmc, 0));
    }
    // No performance counters are implemented: every index is invalid.
    Err(Fault::gp0())
}

/// PAUSE: a hint, except under "PAUSE exiting" (26.1.3), at any CPL.
/// PAUSE-loop exiting (PLE gap and window) is not modelled.
fn pause(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    if cpu.non_root && cpu.vmx_ctls().proc.contains(ProcCtls::PAUSE_EXITING) {
        return Err(cpu.exit_insn(ExitReason::Pause, 0));
    }
    Ok(())
}

/// MONITOR and MWAIT: not implemented (#UD), except that in non-root
/// operation "MONITOR exiting" and "MWAIT exiting" make them exit
/// (26.1.3) once the CPL check (#UD outside CPL 0) passed. The MWAIT
/// qualification's bit 0 (monitoring hardware armed) is 0: there is no
/// monitor.
fn monitor_mwait(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.non_root && cpu.cpl == 0 {
        let (ctl, reason) = if insn.mnemonic() == Mnemonic::Monitor {
            (ProcCtls::MONITOR_EXITING, ExitReason::Monitor)
        } else {
            (ProcCtls::MWAIT_EXITING, ExitReason::Mwait)
        };
        if cpu.vmx_ctls().proc.contains(ctl) {
            return Err(cpu.exit_insn(reason, 0));
        }
    }
    crate::exec::unimplemented(cpu, ctx, insn)
}

/// GETSEC: SMX is not implemented. With CR4.SMXE set (#UD otherwise,
/// which comes first) it exits unconditionally in non-root operation
/// (26.1.2).
fn getsec(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.regs.cr4 & Cr4::SMXE.bits() == 0 {
        return Err(Fault::ud());
    }
    if cpu.non_root {
        return Err(cpu.exit_insn(ExitReason::Getsec, 0));
    }
    crate::exec::unimplemented(cpu, ctx, insn)
}

/// The VMX instructions (SDM vol. 3C, ch. 31 "VMX Instruction
/// Reference"). L0 drives the VMX unit through [`Cpu`] methods, never by
/// executing them, so in root operation (and outside VMX operation) they
/// stay #UD. In non-root operation they exit unconditionally (26.1.2),
/// except VMREAD and VMWRITE that "VMCS shadowing" lets through to the
/// shadow VMCS (26.1.3, `virt/shadow.rs`) —
/// after the #UD checks of their reference pages (real, virtual-8086 and
/// compatibility mode; CR4.VMXE for VMXON) and before the CPL check, so
/// a CPL 3 guest exits too. VMCALL exits even before the mode checks.
/// Memory-operand forms report the operand in the instruction
/// information (28.2.5) and the displacement as qualification (28.2.1).
fn vmx_insn(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let m = insn.mnemonic();
    if !cpu.non_root {
        return crate::exec::unimplemented(cpu, ctx, insn);
    }
    if m != Mnemonic::Vmcall {
        if matches!(cpu.mode, Mode::Real | Mode::Vm86 | Mode::Compat) {
            return Err(Fault::ud());
        }
        if m == Mnemonic::Vmxon && cpu.regs.cr4 & Cr4::VMXE.bits() == 0 {
            return Err(Fault::ud());
        }
    }
    // 26.1.3: with "VMCS shadowing", VMREAD and VMWRITE exit only as
    // their bitmaps say; otherwise they act on the shadow VMCS.
    if matches!(m, Mnemonic::Vmread | Mnemonic::Vmwrite) {
        if let Some(done) = cpu.shadowed_vmread_vmwrite(ctx, insn, m == Mnemonic::Vmwrite) {
            return done;
        }
    }
    let reason = match m {
        Mnemonic::Vmcall => ExitReason::Vmcall,
        Mnemonic::Vmclear => ExitReason::Vmclear,
        Mnemonic::Vmlaunch => ExitReason::Vmlaunch,
        Mnemonic::Vmptrld => ExitReason::Vmptrld,
        Mnemonic::Vmptrst => ExitReason::Vmptrst,
        Mnemonic::Vmread => ExitReason::Vmread,
        Mnemonic::Vmresume => ExitReason::Vmresume,
        Mnemonic::Vmwrite => ExitReason::Vmwrite,
        Mnemonic::Vmxoff => ExitReason::Vmxoff,
        Mnemonic::Vmxon => ExitReason::Vmxon,
        Mnemonic::Invept => ExitReason::Invept,
        _ => ExitReason::Invvpid,
    };
    // Which operand is the register-or-memory one, and which register is
    // reg2 (VMREAD/VMWRITE field encoding, INVEPT/INVVPID type).
    let (rm, reg2) = match m {
        Mnemonic::Vmclear | Mnemonic::Vmptrld | Mnemonic::Vmptrst | Mnemonic::Vmxon => (Some(0), 0),
        Mnemonic::Vmread => (Some(0), gpr_number(insn.op1_register())),
        Mnemonic::Vmwrite | Mnemonic::Invept | Mnemonic::Invvpid => (Some(1), gpr_number(insn.op0_register())),
        _ => (None, 0),
    };
    let Some(rm) = rm else {
        return Err(cpu.exit_insn(reason, 0));
    };
    let (operand, disp) = if insn.op_kind(rm) == OpKind::Memory {
        let (mem, d) = cpu.memory_operand_info(insn);
        (Operand::Memory(mem), d)
    } else {
        (Operand::Register(gpr_number(insn.op_register(rm))), 0)
    };
    let info = VmxInstructionInfo { operand, reg2 };
    Err(cpu.exit_insn_info(reason, disp, info.to_raw()))
}

/// VMFUNC (SDM ch. 31 "VMFUNC"; 26.5.5 "VM Functions"): #UD outside
/// non-root operation or without "enable VM functions"; a function not
/// enabled in the VM-function controls (or EAX above 63) exits with
/// reason 59, and so does an EPTP switch (function 0) that fails.
fn vmfunc(cpu: &mut Cpu, ctx: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    if !cpu.non_root || !cpu.vmx_ctls().proc2.contains(ProcCtls2::ENABLE_VM_FUNCTIONS) {
        return Err(Fault::ud());
    }
    let function = cpu.regs.gpr[0] as u32;
    let enabled = cpu.vmread(vmx::VmcsField::VmFunctionControls);
    if function == 0 && enabled & 1 != 0 && cpu.eptp_switch(ctx.mem) {
        return Ok(());
    }
    Err(cpu.exit_insn(ExitReason::Vmfunc, 0))
}

impl Cpu {
    /// Counts a trap-style exception raised by an instruction (INT3, INTO,
    /// INT1), which goes through software-interrupt delivery.
    fn note_trap(&mut self, v: u8) {
        self.stats.exceptions[v as usize] += 1;
    }
}

/// Handler for a system mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let k0 = insn.op0_kind();
    let sreg0 = k0 == OpKind::Register && insn.op0_register().is_segment_register();
    let special = |n: u32| {
        insn.op_kind(n) == OpKind::Register && {
            let r = insn.op_register(n);
            r.is_cr() || r.is_dr()
        }
    };
    if let Some(h) = super::far::select(m, insn) {
        return Some(h);
    }
    Some(match m {
        Mnemonic::Hlt => hlt,
        Mnemonic::Cli => cli,
        Mnemonic::Sti => sti,
        Mnemonic::Cpuid => cpuid,
        Mnemonic::Rdtsc | Mnemonic::Rdtscp => rdtsc,
        Mnemonic::Rdpid => rdpid,
        Mnemonic::Rdmsr => rdmsr,
        Mnemonic::Wrmsr => wrmsr,
        Mnemonic::In => in_,
        Mnemonic::Out => out,
        Mnemonic::Int => int_n,
        Mnemonic::Int3 => int3,
        Mnemonic::Into => into,
        Mnemonic::Int1 => int1,
        Mnemonic::Ud0 | Mnemonic::Ud1 | Mnemonic::Ud2 => ud,
        Mnemonic::Pushf | Mnemonic::Pushfd | Mnemonic::Pushfq => pushf,
        Mnemonic::Popf | Mnemonic::Popfd | Mnemonic::Popfq => popf,
        Mnemonic::Push if sreg0 => pushf_sreg,
        Mnemonic::Pop if sreg0 => pop_sreg,
        Mnemonic::Mov if special(0) || special(1) => {
            if insn.op0_register().is_cr() || insn.op1_register().is_cr() {
                mov_cr
            } else {
                mov_dr
            }
        }
        Mnemonic::Mov => mov_sreg,
        Mnemonic::Lds | Mnemonic::Les | Mnemonic::Lfs | Mnemonic::Lgs | Mnemonic::Lss => load_far_ptr,
        Mnemonic::Clts => clts,
        Mnemonic::Lmsw => lmsw,
        Mnemonic::Smsw => smsw,
        Mnemonic::Lgdt | Mnemonic::Lidt => lgdt_lidt,
        Mnemonic::Sgdt | Mnemonic::Sidt => sgdt_sidt,
        Mnemonic::Lldt => lldt,
        Mnemonic::Ltr => ltr,
        Mnemonic::Sldt | Mnemonic::Str => sldt_str,
        Mnemonic::Lar | Mnemonic::Lsl | Mnemonic::Verr | Mnemonic::Verw => desc_query,
        Mnemonic::Arpl => arpl,
        Mnemonic::Invlpg => invlpg,
        Mnemonic::Invpcid => invpcid,
        Mnemonic::Wbinvd | Mnemonic::Invd | Mnemonic::Wbnoinvd => wbinvd,
        Mnemonic::Pause => pause,
        Mnemonic::Monitor | Mnemonic::Mwait => monitor_mwait,
        Mnemonic::Getsec => getsec,
        Mnemonic::Vmcall
        | Mnemonic::Vmclear
        | Mnemonic::Vmlaunch
        | Mnemonic::Vmptrld
        | Mnemonic::Vmptrst
        | Mnemonic::Vmread
        | Mnemonic::Vmresume
        | Mnemonic::Vmwrite
        | Mnemonic::Vmxoff
        | Mnemonic::Vmxon
        | Mnemonic::Invept
        | Mnemonic::Invvpid => vmx_insn,
        Mnemonic::Vmfunc => vmfunc,
        Mnemonic::Clflush | Mnemonic::Clflushopt | Mnemonic::Clwb => clflush,
        Mnemonic::Swapgs => swapgs,
        Mnemonic::Rdfsbase | Mnemonic::Rdgsbase | Mnemonic::Wrfsbase | Mnemonic::Wrgsbase => fsgsbase,
        Mnemonic::Rdrand | Mnemonic::Rdseed => rdrand,
        Mnemonic::Rdpkru | Mnemonic::Wrpkru => pkru,
        Mnemonic::Stac | Mnemonic::Clac => stac_clac,
        Mnemonic::Rdpmc => rdpmc,
        _ => return None,
    })
}
