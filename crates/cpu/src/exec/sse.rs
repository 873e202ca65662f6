//! (being written)

use iced_x86::{Instruction, Mnemonic};

/// Handler for a mnemonic of this family.
pub fn select(_m: Mnemonic, _insn: &Instruction) -> Option<crate::exec::Handler> {
    None
}
