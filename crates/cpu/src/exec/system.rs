//! System instructions (filled in below).
use crate::fault::Fault;
use crate::{Activity, Cpu, Ctx};
use iced_x86::{Instruction, Mnemonic};

fn hlt(cpu: &mut Cpu, _: &mut Ctx, _: &Instruction) -> Result<(), Fault> {
    if cpu.cpl != 0 {
        return Err(Fault::gp0());
    }
    cpu.activity = Activity::Halted;
    cpu.stop_block();
    Ok(())
}

/// Handler for a system mnemonic.
pub fn select(m: Mnemonic, _insn: &Instruction) -> Option<crate::exec::Handler> {
    Some(match m {
        Mnemonic::Hlt => hlt,
        _ => return None,
    })
}
