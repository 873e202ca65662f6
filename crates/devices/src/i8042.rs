//! Minimal Intel 8042 keyboard controller at ports 0x60 (data) and 0x64
//! (status/command), enough for OS probing and for the 0xfe "pulse reset
//! line" command.
//!
//! Follows the IBM PC/AT Technical Reference, "Keyboard Controller":
//! status register bits (OBF, IBF, system flag, command/data, inhibit
//! switch), controller commands 0x20 (read command byte), 0x60 (write
//! command byte), 0xa7/0xa8 (aux disable/enable), 0xa9/0xab (interface
//! tests, 0 = pass), 0xaa (self-test, 0x55 = pass), 0xad/0xae (keyboard
//! disable/enable), 0xd0/0xd1 (read/write output port; bit 0 clear resets
//! the CPU) and 0xfe (pulse reset). Keyboard commands on port 0x60 are
//! acknowledged with 0xfa (reset 0xff also reports 0xaa self-test passed).
//! No keys are ever pressed.

use std::collections::VecDeque;

/// Status: output buffer full.
const STATUS_OBF: u8 = 0x01;
/// Status: system flag (self-test passed).
const STATUS_SYS: u8 = 0x04;
/// Status: last write was a command.
const STATUS_CMD: u8 = 0x08;
/// Status: keyboard not inhibited.
const STATUS_UNLOCKED: u8 = 0x10;

/// The 8042 controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct I8042 {
    /// Controller command byte.
    pub command_byte: u8,
    /// Status register (OBF derived from `output`).
    pub status: u8,
    /// Controller command waiting for a data byte (0x60 or 0xd1).
    pub pending_cmd: Option<u8>,
    /// Output buffer queue.
    pub output: VecDeque<u8>,
    /// Set when the guest requested a CPU reset.
    pub reset_requested: bool,
}

impl Default for I8042 {
    fn default() -> Self {
        Self::new()
    }
}

impl I8042 {
    /// Power-on state.
    pub fn new() -> Self {
        Self {
            command_byte: 0x45,
            status: STATUS_SYS | STATUS_UNLOCKED,
            pending_cmd: None,
            output: VecDeque::new(),
            reset_requested: false,
        }
    }

    fn push(&mut self, b: u8) {
        if self.output.len() < 16 {
            self.output.push_back(b);
        }
    }

    /// IRQ 1 level: output pending and keyboard interrupt enabled.
    pub fn irq_level(&self) -> bool {
        !self.output.is_empty() && self.command_byte & 1 != 0
    }

    /// Port read.
    pub fn io_read(&mut self, port: u16) -> u8 {
        match port {
            0x60 => self.output.pop_front().unwrap_or(0),
            0x64 => (self.status & !STATUS_OBF) | if self.output.is_empty() { 0 } else { STATUS_OBF },
            _ => 0xff,
        }
    }

    /// Port write.
    pub fn io_write(&mut self, port: u16, value: u8) {
        match port {
            0x64 => {
                self.status |= STATUS_CMD;
                self.command(value);
            }
            0x60 => {
                self.status &= !STATUS_CMD;
                match self.pending_cmd.take() {
                    Some(0x60) => self.command_byte = value,
                    Some(0xd1) => {
                        if value & 1 == 0 {
                            self.reset_requested = true;
                        }
                    }
                    _ => {
                        // Keyboard device command.
                        self.push(0xfa);
                        if value == 0xff {
                            self.push(0xaa);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    fn command(&mut self, cmd: u8) {
        match cmd {
            0x20 => self.push(self.command_byte),
            0x60 | 0xd1 => self.pending_cmd = Some(cmd),
            0xa7 => self.command_byte |= 0x20,
            0xa8 => self.command_byte &= !0x20,
            0xa9 | 0xab => self.push(0x00),
            0xaa => {
                self.status |= STATUS_SYS;
                self.push(0x55);
            }
            0xad => self.command_byte |= 0x10,
            0xae => self.command_byte &= !0x10,
            0xd0 => self.push(0x01),
            0xfe => self.reset_requested = true,
            // Pulse output lines: bit 0 clear pulses reset.
            0xf0..=0xff if cmd & 1 == 0 => self.reset_requested = true,
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_test_and_command_byte() {
        let mut k = I8042::new();
        k.io_write(0x64, 0xaa);
        assert_eq!(k.io_read(0x64) & STATUS_OBF, STATUS_OBF);
        assert_eq!(k.io_read(0x60), 0x55);
        assert_eq!(k.io_read(0x64) & STATUS_OBF, 0);
        k.io_write(0x64, 0x60);
        k.io_write(0x60, 0x47);
        k.io_write(0x64, 0x20);
        assert_eq!(k.io_read(0x60), 0x47);
        assert!(!k.reset_requested);
        k.io_write(0x64, 0xfe);
        assert!(k.reset_requested);
    }
}
