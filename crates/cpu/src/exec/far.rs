//! Far control transfers and privilege changes: far JMP/CALL/RET (with
//! call gates), IRET/IRETD/IRETQ, SYSCALL/SYSRET and SYSENTER/SYSEXIT
//! (SDM vol. 2, "JMP", "CALL", "RET", "IRET/IRETD/IRETQ", "SYSCALL",
//! "SYSRET", "SYSENTER", "SYSEXIT"; vol. 3A, 5.8 "Privilege Level Checking
//! When Transferring Program Control Between Code Segments", 5.8.3 "Call
//! Gates", 5.8.8 "Fast System Calls in 64-Bit Mode").
//!
//! Each handler reads everything it needs and runs every check before it
//! changes a register, so a fault leaves the old state intact.

use crate::fault::Fault;
use crate::seg::sel_ec;
use crate::state::{Mode, Segment};
use crate::task::TaskSwitchSource;
use crate::{events, Cpu, Ctx};
use iced_x86::{Code, Instruction, Mnemonic, OpKind};
use x86::seg::{ar, sreg, sys, Gate};
use x86::{Efer, Rflags};

/// Reads the target of a far JMP/CALL: (selector, offset, operand size).
fn far_target(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(u16, u64, u8), Fault> {
    match insn.op0_kind() {
        OpKind::FarBranch16 => Ok((insn.far_branch_selector(), u64::from(insn.far_branch16()), 2)),
        OpKind::FarBranch32 => Ok((insn.far_branch_selector(), u64::from(insn.far_branch32()), 4)),
        OpKind::Memory => {
            let osize = (insn.memory_size().size() - 2) as u8;
            let seg = cpu.mem_seg(insn);
            let off = cpu.ea(insn);
            let o = cpu.read_mem(ctx, seg, off, osize)?;
            let sel = cpu.read_mem(ctx, seg, off.wrapping_add(u64::from(osize)), 2)?;
            Ok((sel as u16, o, osize))
        }
        _ => Err(Fault::ud()),
    }
}

impl Cpu {
    /// Checks that `rip` fits the code segment about to be loaded.
    fn check_target_rip(&self, cs: &Segment, rip: u64) -> Result<(), Fault> {
        let long = self.regs.efer & Efer::LMA.bits() != 0 && cs.ar & ar::L != 0;
        if long {
            if !self.canonical(rip) {
                return Err(Fault::gp0());
            }
        } else if rip > u64::from(cs.limit) {
            return Err(Fault::gp0());
        }
        Ok(())
    }

    /// Loads CS:RIP as the result of the current instruction.
    fn jump_far(&mut self, cs: Segment, rip: u64) {
        self.commit_cs(cs);
        self.next_rip = rip;
    }

    /// The protected-mode checks for a direct far JMP/CALL to a code
    /// segment (SDM 5.8.1, 5.8.2).
    fn direct_code_target(&mut self, ctx: &mut Ctx, sel: u16) -> Result<Segment, Fault> {
        let d = self.read_descriptor(ctx, sel, false)?;
        let desc = d.desc;
        let rpl = (sel & 3) as u8;
        let ec = sel_ec(sel, false);
        if !desc.is_code() {
            return Err(Fault::gp(ec));
        }
        let conforming = desc.ar & ar::DC != 0;
        if conforming {
            if desc.dpl() > self.cpl {
                return Err(Fault::gp(ec));
            }
        } else if rpl > self.cpl || desc.dpl() != self.cpl {
            return Err(Fault::gp(ec));
        }
        self.check_code_seg(ctx, sel, self.cpl, false)
    }
}

fn far_jmp_call(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let call = insn.mnemonic() == Mnemonic::Call;
    let (sel, off, osize) = far_target(cpu, ctx, insn)?;
    let ret_cs = u64::from(cpu.regs.seg[sreg::CS].selector);
    let ret_ip = cpu.next_rip;
    if matches!(cpu.mode, Mode::Real | Mode::Vm86) {
        let off = off & crate::flags::size_mask(osize);
        if call {
            let saved = cpu.regs.gpr[4];
            cpu.push(ctx, osize, ret_cs)?;
            if let Err(f) = cpu.push(ctx, osize, ret_ip) {
                cpu.regs.gpr[4] = saved;
                return Err(f);
            }
        }
        let mut cs = Segment::real(sel, true);
        cs.ar = cpu.regs.seg[sreg::CS].ar;
        cs.limit = cpu.regs.seg[sreg::CS].limit;
        cpu.jump_far(cs, off);
        return Ok(());
    }
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    let d = cpu.read_descriptor(ctx, sel, false)?;
    if d.desc.is_code_data() {
        let cs = cpu.direct_code_target(ctx, sel)?;
        let off = if cs.ar & ar::L != 0 && cpu.regs.efer & Efer::LMA.bits() != 0 {
            off
        } else {
            off & crate::flags::size_mask(osize)
        };
        cpu.check_target_rip(&cs, off)?;
        if call {
            let saved = cpu.regs.gpr[4];
            cpu.push(ctx, osize, ret_cs)?;
            if let Err(f) = cpu.push(ctx, osize, ret_ip) {
                cpu.regs.gpr[4] = saved;
                return Err(f);
            }
        }
        cpu.jump_far(cs, off);
        return Ok(());
    }
    match d.desc.typ() {
        sys::CALL | sys::CALL16 => through_call_gate(cpu, ctx, sel, &d, call, ret_cs, ret_ip),
        sys::TSS_AVAIL | sys::TSS16_AVAIL | sys::TSS_BUSY if cpu.mode == Mode::Protected => {
            let rpl = (sel & 3) as u8;
            if d.desc.dpl() < cpu.cpl || d.desc.dpl() < rpl {
                return Err(Fault::gp(sel_ec(sel, false)));
            }
            let src = if call { TaskSwitchSource::Call } else { TaskSwitchSource::Jmp };
            cpu.task_switch(ctx, sel, &d, src, ret_ip)
        }
        sys::TASK if cpu.mode == Mode::Protected => {
            let g = Gate::from_raw(d.raw, 0);
            let rpl = (sel & 3) as u8;
            if g.dpl < cpu.cpl || g.dpl < rpl {
                return Err(Fault::gp(sel_ec(sel, false)));
            }
            if !g.present {
                return Err(Fault::np(sel_ec(sel, false)));
            }
            let tss_sel = g.selector;
            if tss_sel & 4 != 0 {
                return Err(Fault::gp(sel_ec(tss_sel, false)));
            }
            let td = cpu.read_descriptor(ctx, tss_sel, false)?;
            let src = if call { TaskSwitchSource::Call } else { TaskSwitchSource::Jmp };
            cpu.task_switch(ctx, tss_sel, &td, src, ret_ip)
        }
        _ => Err(Fault::gp(sel_ec(sel, false))),
    }
}

/// A far JMP/CALL through a call gate (SDM 5.8.4 "Accessing a Code Segment
/// Through a Call Gate", 5.8.5 "Stack Switching", 5.8.6 in IA-32e mode).
fn through_call_gate(
    cpu: &mut Cpu,
    ctx: &mut Ctx,
    gate_sel: u16,
    d: &crate::seg::DescRef,
    call: bool,
    ret_cs: u64,
    ret_ip: u64,
) -> Result<(), Fault> {
    let lma = cpu.regs.efer & Efer::LMA.bits() != 0;
    let hi = if lma { cpu.read_descriptor_high(ctx, gate_sel, d)? } else { 0 };
    let g = Gate::from_raw(d.raw, hi);
    let gec = sel_ec(gate_sel, false);
    if lma && (g.typ != sys::CALL || (hi >> 40) & 0x1f != 0) {
        return Err(Fault::gp(gec));
    }
    let rpl = (gate_sel & 3) as u8;
    if g.dpl < cpu.cpl || g.dpl < rpl {
        return Err(Fault::gp(gec));
    }
    if !g.present {
        return Err(Fault::np(gec));
    }
    if g.selector & !3 == 0 {
        return Err(Fault::gp0());
    }
    let cd = cpu.read_descriptor(ctx, g.selector, false)?;
    let desc = cd.desc;
    let cec = sel_ec(g.selector, false);
    if !desc.is_code() || desc.dpl() > cpu.cpl {
        return Err(Fault::gp(cec));
    }
    if lma && (desc.ar & ar::L == 0 || desc.ar & ar::DB != 0) {
        return Err(Fault::gp(cec));
    }
    let conforming = desc.ar & ar::DC != 0;
    if !call && !conforming && desc.dpl() != cpu.cpl {
        return Err(Fault::gp(cec));
    }
    if !desc.present() {
        return Err(Fault::np(cec));
    }
    let gate_size: u8 = if lma {
        8
    } else if g.typ == sys::CALL {
        4
    } else {
        2
    };
    let target = if gate_size == 2 {
        g.offset & 0xffff
    } else if lma {
        g.offset
    } else {
        g.offset & 0xffff_ffff
    };
    let new_cpl = if conforming { cpu.cpl } else { desc.dpl() };
    let mut cs = Cpu::seg_from_desc((g.selector & !3) | u16::from(new_cpl), &desc);
    cs.selector = (g.selector & !3) | u16::from(new_cpl);
    cpu.check_target_rip(&cs, target)?;
    if !call {
        cpu.set_accessed(ctx, &cd)?;
        cpu.jump_far(cs, target);
        return Ok(());
    }
    if new_cpl < cpu.cpl {
        // More privileged: switch to the stack the TSS names, copy the
        // parameters (32-bit gates), push the old SS:rSP and CS:rIP.
        let old_ss = u64::from(cpu.regs.seg[sreg::SS].selector);
        let old_sp = cpu.regs.gpr[4];
        let (ss, sp) = if lma {
            let rsp = cpu.tss64_rsp(ctx, new_cpl as usize)?;
            (
                Segment {
                    selector: u16::from(new_cpl),
                    base: 0,
                    limit: 0,
                    ar: ar::UNUSABLE | (u32::from(new_cpl) << ar::DPL_SHIFT),
                },
                rsp,
            )
        } else {
            let (ss_sel, esp) = cpu.tss32_stack(ctx, new_cpl, false)?;
            (cpu.check_tss_ss(ctx, ss_sel, new_cpl, false)?, esp)
        };
        let nparams = if lma { 0 } else { g.param_count as u64 };
        let mut params = [0u64; 32];
        let old_mask = cpu.rsp_mask();
        for i in 0..nparams {
            let off = old_sp.wrapping_add(i * u64::from(gate_size)) & old_mask;
            params[i as usize] = cpu.read_mem(ctx, sreg::SS, off, gate_size)?;
        }
        let mask = if lma {
            u64::MAX
        } else if ss.ar & ar::DB != 0 {
            0xffff_ffff
        } else {
            0xffff
        };
        let mut p = sp & mask;
        let mut frame: Vec<u64> = vec![old_ss, old_sp];
        for i in (0..nparams).rev() {
            frame.push(params[i as usize]);
        }
        frame.push(ret_cs);
        frame.push(ret_ip);
        for v in frame {
            p = p.wrapping_sub(u64::from(gate_size)) & mask;
            let la = if lma { p } else { ss.base.wrapping_add(p) & 0xffff_ffff };
            cpu.write_as(ctx, la, gate_size, v, new_cpl == 3)?;
        }
        cpu.set_accessed(ctx, &cd)?;
        cpu.regs.seg[sreg::SS] = ss;
        cpu.regs.gpr[4] = (sp & !mask) | p;
        cpu.jump_far(cs, target);
        return Ok(());
    }
    let saved = cpu.regs.gpr[4];
    cpu.push(ctx, gate_size, ret_cs)?;
    if let Err(f) = cpu.push(ctx, gate_size, ret_ip) {
        cpu.regs.gpr[4] = saved;
        return Err(f);
    }
    cpu.set_accessed(ctx, &cd)?;
    cpu.jump_far(cs, target);
    Ok(())
}

fn far_ret(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let osize: u8 = match insn.code() {
        Code::Retfw | Code::Retfw_imm16 => 2,
        Code::Retfd | Code::Retfd_imm16 => 4,
        _ => 8,
    };
    let extra = if insn.op_count() > 0 { u64::from(insn.immediate16()) } else { 0 };
    let ip = cpu.peek(ctx, 0, osize)?;
    let sel = cpu.peek(ctx, u64::from(osize), osize)? as u16;
    if matches!(cpu.mode, Mode::Real | Mode::Vm86) {
        let mut cs = Segment::real(sel, true);
        cs.ar = cpu.regs.seg[sreg::CS].ar;
        cs.limit = cpu.regs.seg[sreg::CS].limit;
        cpu.adjust_rsp(2 * i64::from(osize) + extra as i64);
        cpu.jump_far(cs, ip & crate::flags::size_mask(osize));
        return Ok(());
    }
    let rpl = (sel & 3) as u8;
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    if rpl < cpu.cpl {
        return Err(Fault::gp(sel_ec(sel, false)));
    }
    let d = cpu.read_descriptor(ctx, sel, false)?;
    let desc = d.desc;
    if !desc.is_code() {
        return Err(Fault::gp(sel_ec(sel, false)));
    }
    let conforming = desc.ar & ar::DC != 0;
    if (conforming && desc.dpl() > rpl) || (!conforming && desc.dpl() != rpl) {
        return Err(Fault::gp(sel_ec(sel, false)));
    }
    let cs = cpu.check_code_seg(ctx, sel, rpl, false)?;
    let long_target = cs.ar & ar::L != 0 && cpu.regs.efer & Efer::LMA.bits() != 0;
    let ip = if long_target { ip } else { ip & crate::flags::size_mask(osize) };
    cpu.check_target_rip(&cs, ip)?;
    if rpl == cpu.cpl {
        cpu.adjust_rsp(2 * i64::from(osize) + extra as i64);
        cpu.jump_far(cs, ip);
        return Ok(());
    }
    // Return to an outer privilege level: SS:rSP follow (after the
    // parameters that `extra` skips).
    let base = 2 * u64::from(osize) + extra;
    let sp = cpu.peek(ctx, base, osize)?;
    let ss_sel = cpu.peek(ctx, base + u64::from(osize), osize)? as u16;
    let ss = return_ss(cpu, ctx, ss_sel, rpl, long_target)?;
    let mask = if long_target {
        u64::MAX
    } else if ss.ar & ar::DB != 0 {
        0xffff_ffff
    } else {
        0xffff
    };
    cpu.regs.seg[sreg::SS] = ss;
    cpu.regs.gpr[4] = sp.wrapping_add(extra) & mask;
    cpu.jump_far(cs, ip);
    cpu.null_inaccessible_segs();
    Ok(())
}

/// Checks the SS popped by a return to an outer level (SDM vol. 2, "RET",
/// "IRET"): RPL and DPL equal to the new CPL, writable data, present. A
/// null SS is allowed when returning to 64-bit code at CPL < 3.
fn return_ss(cpu: &mut Cpu, ctx: &mut Ctx, sel: u16, rpl: u8, long_target: bool) -> Result<Segment, Fault> {
    if sel & !3 == 0 {
        if long_target && rpl != 3 && (sel & 3) as u8 == rpl {
            return Ok(Segment {
                selector: sel,
                base: 0,
                limit: 0,
                ar: ar::UNUSABLE | (u32::from(rpl) << ar::DPL_SHIFT),
            });
        }
        return Err(Fault::gp0());
    }
    let ec = sel_ec(sel, false);
    if (sel & 3) as u8 != rpl {
        return Err(Fault::gp(ec));
    }
    let d = cpu.read_descriptor(ctx, sel, false)?;
    let desc = d.desc;
    if !desc.is_code_data() || desc.is_code() || desc.ar & ar::RW == 0 || desc.dpl() != rpl {
        return Err(Fault::gp(ec));
    }
    if !desc.present() {
        return Err(Fault::ss(ec));
    }
    cpu.set_accessed(ctx, &d)?;
    Ok(Cpu::seg_from_desc(sel, &desc))
}

fn iret(cpu: &mut Cpu, ctx: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    let osize: u8 = match insn.mnemonic() {
        Mnemonic::Iret => 2,
        Mnemonic::Iretd => 4,
        _ => 8,
    };
    let ip = cpu.peek(ctx, 0, osize)?;
    let sel = cpu.peek(ctx, u64::from(osize), osize)? as u16;
    let fl = cpu.peek(ctx, 2 * u64::from(osize), osize)?;
    let old = cpu.regs.rflags();
    cpu.nmi_blocked = false;
    if cpu.mode == Mode::Real {
        let mut cs = Segment::real(sel, true);
        cs.ar = cpu.regs.seg[sreg::CS].ar;
        cs.limit = cpu.regs.seg[sreg::CS].limit;
        let mask = if osize == 2 { 0xffff } else { 0x257fd5 };
        let f = (old & !mask) | (fl & mask);
        cpu.adjust_rsp(3 * i64::from(osize));
        cpu.regs.set_rflags(f);
        cpu.jump_far(cs, ip & crate::flags::size_mask(osize));
        cpu.rf_set_by_insn = f & Rflags::RF.bits() != 0;
        cpu.events |= events::IRQ;
        return Ok(());
    }
    if cpu.mode == Mode::Vm86 {
        if cpu.iopl() < 3 {
            return Err(Fault::gp0());
        }
        let mask = if osize == 2 {
            0xffff & !Rflags::IOPL.bits()
        } else {
            0x3f7fd5 & !(Rflags::IOPL | Rflags::VM | Rflags::VIF | Rflags::VIP).bits()
        };
        let f = (old & !mask) | (fl & mask);
        cpu.adjust_rsp(3 * i64::from(osize));
        cpu.regs.set_rflags(f);
        let mut cs = Segment::real(sel, true);
        cs.ar = cpu.regs.seg[sreg::CS].ar;
        cpu.jump_far(cs, ip & 0xffff);
        cpu.events |= events::IRQ;
        return Ok(());
    }
    // IRET with NT set is a task return, which IA-32e mode does not have
    // (SDM vol. 2, "IRET": #GP(0) if NT = 1 in IA-32e mode).
    if cpu.regs.flag(Rflags::NT) && cpu.regs.efer & Efer::LMA.bits() != 0 {
        return Err(Fault::gp0());
    }
    if cpu.regs.flag(Rflags::NT) && cpu.mode == Mode::Protected {
        // Task return to the task named by the back link (SDM 8.4).
        let link = cpu.read_sys(ctx, cpu.regs.tr.base, 2)? as u16;
        if link & 4 != 0 {
            return Err(Fault::ts(sel_ec(link, false)));
        }
        let d = cpu.read_descriptor(ctx, link, false).map_err(|_| Fault::ts(sel_ec(link, false)))?;
        let ret = cpu.next_rip;
        return cpu.task_switch(ctx, link, &d, TaskSwitchSource::Iret, ret);
    }
    if cpu.mode == Mode::Protected && osize == 4 && fl & Rflags::VM.bits() != 0 && cpu.cpl == 0 {
        return iret_to_vm86(cpu, ctx, ip, sel, fl);
    }
    let rpl = (sel & 3) as u8;
    if sel & !3 == 0 {
        return Err(Fault::gp0());
    }
    if rpl < cpu.cpl {
        return Err(Fault::gp(sel_ec(sel, false)));
    }
    let d = cpu.read_descriptor(ctx, sel, false)?;
    let desc = d.desc;
    if !desc.is_code() {
        return Err(Fault::gp(sel_ec(sel, false)));
    }
    let conforming = desc.ar & ar::DC != 0;
    if (conforming && desc.dpl() > rpl) || (!conforming && desc.dpl() != rpl) {
        return Err(Fault::gp(sel_ec(sel, false)));
    }
    let cs = cpu.check_code_seg(ctx, sel, rpl, false)?;
    let lma = cpu.regs.efer & Efer::LMA.bits() != 0;
    let long_target = lma && cs.ar & ar::L != 0;
    let ip = if long_target { ip } else { ip & crate::flags::size_mask(osize.min(4)) };
    cpu.check_target_rip(&cs, ip)?;
    // Flags the return may change (SDM vol. 2, "IRET": EFLAGS update
    // rules by CPL and IOPL).
    let mut mask =
        (Rflags::STATUS | Rflags::TF | Rflags::DF | Rflags::NT | Rflags::RF | Rflags::AC | Rflags::ID).bits();
    if cpu.cpl == 0 {
        mask |= (Rflags::IF | Rflags::IOPL | Rflags::VIF | Rflags::VIP).bits();
    } else if cpu.cpl <= cpu.iopl() {
        mask |= Rflags::IF.bits();
    }
    if osize == 2 {
        mask &= 0xffff;
    }
    let f = (old & !mask) | (fl & mask);
    let pops_stack = rpl > cpu.cpl || cpu.mode == Mode::Long;
    if !pops_stack {
        cpu.adjust_rsp(3 * i64::from(osize));
        cpu.regs.set_rflags(f);
        cpu.jump_far(cs, ip);
    } else {
        let sp = cpu.peek(ctx, 3 * u64::from(osize), osize)?;
        let ss_sel = cpu.peek(ctx, 4 * u64::from(osize), osize)? as u16;
        let ss = if rpl == cpu.cpl && ss_sel & !3 == 0 && long_target && rpl != 3 {
            Segment { selector: ss_sel, base: 0, limit: 0, ar: ar::UNUSABLE | (u32::from(rpl) << ar::DPL_SHIFT) }
        } else {
            return_ss(cpu, ctx, ss_sel, rpl, long_target)?
        };
        let outer = rpl > cpu.cpl;
        cpu.regs.set_rflags(f);
        cpu.regs.seg[sreg::SS] = ss;
        let mask = if long_target || cpu.mode == Mode::Long {
            u64::MAX
        } else if ss.ar & ar::DB != 0 {
            0xffff_ffff
        } else {
            0xffff
        };
        cpu.regs.gpr[4] = (cpu.regs.gpr[4] & !mask) | (sp & mask);
        cpu.jump_far(cs, ip);
        if outer {
            cpu.null_inaccessible_segs();
        }
    }
    cpu.rf_set_by_insn = f & Rflags::RF.bits() != 0;
    cpu.events |= events::IRQ;
    Ok(())
}

/// IRETD from CPL 0 with VM set in the popped image: enters virtual-8086
/// mode (SDM vol. 2, "IRET", RETURN-TO-VIRTUAL-8086-MODE).
fn iret_to_vm86(cpu: &mut Cpu, ctx: &mut Ctx, ip: u64, cs_sel: u16, fl: u64) -> Result<(), Fault> {
    let mut vals = [0u64; 6];
    for (i, v) in vals.iter_mut().enumerate() {
        *v = cpu.peek(ctx, 12 + 4 * i as u64, 4)?;
    }
    let [esp, ss, es, ds, fs, gs] = vals;
    cpu.regs.set_rflags(fl);
    for (r, v) in [(sreg::ES, es), (sreg::DS, ds), (sreg::FS, fs), (sreg::GS, gs), (sreg::SS, ss)] {
        let mut s = Segment::real(v as u16, false);
        s.ar |= 3 << ar::DPL_SHIFT;
        cpu.regs.seg[r] = s;
    }
    cpu.regs.gpr[4] = esp;
    let mut cs = Segment::real(cs_sel, true);
    cs.ar |= 3 << ar::DPL_SHIFT;
    cpu.jump_far(cs, ip & 0xffff);
    cpu.events |= events::IRQ;
    Ok(())
}

/// Flat segments that SYSCALL/SYSENTER and their returns load (SDM vol. 2:
/// the descriptors are not read; fixed values are loaded).
fn flat_code(sel: u16, dpl: u8, long: bool) -> Segment {
    let ar = ar::P | ar::S | ar::CODE | ar::RW | ar::ACCESSED | ar::G | (u32::from(dpl) << ar::DPL_SHIFT);
    let ar = if long { ar | ar::L } else { ar | ar::DB };
    Segment { selector: sel, base: 0, limit: 0xffff_ffff, ar }
}

fn flat_stack(sel: u16, dpl: u8) -> Segment {
    let ar = ar::P | ar::S | ar::RW | ar::ACCESSED | ar::G | ar::DB | (u32::from(dpl) << ar::DPL_SHIFT);
    Segment { selector: sel, base: 0, limit: 0xffff_ffff, ar }
}

fn syscall(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    if cpu.regs.efer & Efer::SCE.bits() == 0 || cpu.mode != Mode::Long {
        return Err(Fault::ud());
    }
    let star_cs = ((cpu.regs.msr.star >> 32) & 0xfffc) as u16;
    cpu.regs.gpr[1] = cpu.next_rip;
    let f = cpu.regs.rflags();
    cpu.regs.gpr[11] = f & !Rflags::RF.bits();
    cpu.regs.set_rflags(f & !cpu.regs.msr.fmask & !Rflags::RF.bits());
    cpu.regs.seg[sreg::SS] = flat_stack(star_cs.wrapping_add(8), 0);
    cpu.jump_far(flat_code(star_cs, 0, true), cpu.regs.msr.lstar);
    Ok(())
}

fn sysret(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if cpu.regs.efer & Efer::SCE.bits() == 0 || cpu.mode != Mode::Long {
        return Err(Fault::ud());
    }
    cpu.require_cpl0()?;
    let to64 = insn.code() == Code::Sysretq;
    let base = ((cpu.regs.msr.star >> 48) & 0xffff) as u16;
    let rip = cpu.regs.gpr[1];
    if to64 && !cpu.canonical(rip) {
        return Err(Fault::gp0());
    }
    let f = (cpu.regs.gpr[11] & 0x3c_7fd7) | Rflags::FIXED1.bits();
    cpu.regs.set_rflags(f);
    let (cs, rip) = if to64 {
        (flat_code(base.wrapping_add(16) | 3, 3, true), rip)
    } else {
        (flat_code(base | 3, 3, false), rip & 0xffff_ffff)
    };
    // SS keeps its RPL-3 selector; the cached DPL becomes 3.
    cpu.regs.seg[sreg::SS] = flat_stack(base.wrapping_add(8) | 3, 3);
    cpu.jump_far(cs, rip);
    cpu.events |= events::IRQ;
    Ok(())
}

fn sysenter(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    if !cpu.cpuid.features().sep {
        return Err(Fault::ud());
    }
    let cs_sel = (cpu.regs.msr.sysenter_cs & 0xfffc) as u16;
    if cpu.mode == Mode::Real || cs_sel == 0 {
        return Err(Fault::gp0());
    }
    let lma = cpu.regs.efer & Efer::LMA.bits() != 0;
    let f = cpu.regs.rflags() & !(Rflags::VM | Rflags::IF | Rflags::RF).bits();
    cpu.regs.set_rflags(f);
    cpu.regs.seg[sreg::SS] = flat_stack(cs_sel.wrapping_add(8), 0);
    let (esp, eip) = (cpu.regs.msr.sysenter_esp, cpu.regs.msr.sysenter_eip);
    cpu.regs.gpr[4] = if lma { esp } else { esp & 0xffff_ffff };
    cpu.jump_far(flat_code(cs_sel, 0, lma), if lma { eip } else { eip & 0xffff_ffff });
    Ok(())
}

fn sysexit(cpu: &mut Cpu, _: &mut Ctx, insn: &Instruction) -> Result<(), Fault> {
    if !cpu.cpuid.features().sep {
        return Err(Fault::ud());
    }
    let base = (cpu.regs.msr.sysenter_cs & 0xfffc) as u16;
    if cpu.mode == Mode::Real || cpu.mode == Mode::Vm86 || base == 0 {
        return Err(Fault::gp0());
    }
    cpu.require_cpl0()?;
    let to64 = insn.code() == Code::Sysexitq;
    let (cs, ss, rip, rsp) = if to64 {
        let (rip, rsp) = (cpu.regs.gpr[2], cpu.regs.gpr[1]);
        if !cpu.canonical(rip) || !cpu.canonical(rsp) {
            return Err(Fault::gp0());
        }
        (flat_code(base.wrapping_add(32) | 3, 3, true), flat_stack(base.wrapping_add(40) | 3, 3), rip, rsp)
    } else {
        (
            flat_code(base.wrapping_add(16) | 3, 3, false),
            flat_stack(base.wrapping_add(24) | 3, 3),
            cpu.regs.gpr[2] & 0xffff_ffff,
            cpu.regs.gpr[1] & 0xffff_ffff,
        )
    };
    cpu.regs.seg[sreg::SS] = ss;
    cpu.regs.gpr[4] = rsp;
    cpu.jump_far(cs, rip);
    cpu.events |= events::IRQ;
    Ok(())
}

/// Handler for a far-transfer mnemonic.
pub fn select(m: Mnemonic, insn: &Instruction) -> Option<crate::exec::Handler> {
    let far = matches!(insn.op0_kind(), OpKind::FarBranch16 | OpKind::FarBranch32)
        || insn.is_jmp_far_indirect()
        || insn.is_call_far_indirect();
    Some(match m {
        Mnemonic::Jmp | Mnemonic::Call if far => far_jmp_call,
        Mnemonic::Retf => far_ret,
        Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => iret,
        Mnemonic::Syscall => syscall,
        Mnemonic::Sysret | Mnemonic::Sysretq => sysret,
        Mnemonic::Sysenter => sysenter,
        Mnemonic::Sysexit | Mnemonic::Sysexitq => sysexit,
        _ => return None,
    })
}
