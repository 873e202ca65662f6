//! Event delivery (filled in below).
use crate::fault::Fault;
use crate::{Cpu, Ctx};
use iced_x86::Instruction;

impl Cpu {
    pub(crate) fn raise(&mut self, _ctx: &mut Ctx, f: Fault) {
        self.shutdown(format!("{f}"));
    }
    pub(crate) fn check_interrupts(&mut self, _ctx: &mut Ctx) {}
    pub(crate) fn debug_before(&mut self, _ctx: &mut Ctx, _insn: &Instruction) -> bool {
        true
    }
    pub(crate) fn debug_after(&mut self, _ctx: &mut Ctx) {}
    pub(crate) fn check_data_breakpoint(&mut self, _la: u64, _size: u8, _write: bool) {}
}
