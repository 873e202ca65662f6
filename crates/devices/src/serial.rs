//! COM1 16550A UART at ports 0x3f8-0x3ff, IRQ 4, built on
//! `vm_superio::Serial` (rust-vmm), which models the register file per the
//! National Semiconductor PC16550D datasheet ("Register Description").
//!
//! The interrupt output is the level "an enabled interrupt is identified in
//! IIR"; vm-superio's trigger marks new interrupt events, which the
//! platform turns into a fresh rising edge so an edge-triggered PIC input
//! latches every THRE/RDA event.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vm_superio::{Serial, Trigger};

/// COM1 base port.
pub const COM1_BASE: u16 = 0x3f8;
/// COM1 ISA IRQ.
pub const COM1_IRQ: u8 = 4;

/// Interrupt trigger that records that an interrupt event happened.
#[derive(Clone, Debug, Default)]
pub struct EventFlag(Arc<AtomicBool>);

impl EventFlag {
    /// Returns and clears the flag.
    pub fn take(&self) -> bool {
        self.0.swap(false, Ordering::Relaxed)
    }
}

impl Trigger for EventFlag {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::Relaxed);
        Ok(())
    }
}

/// COM1: a vm-superio UART writing to the console sink.
pub struct Com1 {
    /// The UART.
    pub uart: Serial<EventFlag, vm_superio::serial::NoEvents, Box<dyn Write + Send>>,
    event: EventFlag,
}

impl std::fmt::Debug for Com1 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Com1").field("state", &self.uart.state()).finish()
    }
}

/// What the platform must do with IRQ 4 after an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IrqUpdate {
    /// A new interrupt event happened: generate a rising edge.
    pub new_event: bool,
    /// Level of the interrupt output afterwards.
    pub level: bool,
}

impl Com1 {
    /// A UART writing transmitted bytes to `out`.
    pub fn new(out: Box<dyn Write + Send>) -> Self {
        let event = EventFlag::default();
        Self { uart: Serial::new(event.clone(), out), event }
    }

    fn irq_update(&mut self) -> IrqUpdate {
        let new_event = self.event.take();
        let level = self.uart.state().interrupt_identification & 1 == 0;
        IrqUpdate { new_event, level }
    }

    /// Register read at `offset` 0-7.
    pub fn read(&mut self, offset: u8) -> (u8, IrqUpdate) {
        let v = self.uart.read(offset & 7);
        (v, self.irq_update())
    }

    /// Register write at `offset` 0-7 (host output errors are dropped: the
    /// guest cannot observe them on a real UART either).
    pub fn write(&mut self, offset: u8, value: u8) -> IrqUpdate {
        let _ = self.uart.write(offset & 7, value);
        self.irq_update()
    }

    /// Queues host input bytes into the receive FIFO; returns how many fit.
    pub fn enqueue(&mut self, bytes: &[u8]) -> (usize, IrqUpdate) {
        let n = self.uart.enqueue_raw_bytes(bytes).unwrap_or(0);
        (n, self.irq_update())
    }

    /// Raw bytes to the console sink (port 0xe9 debug console).
    pub fn write_console(&mut self, bytes: &[u8]) {
        let out = self.uart.writer_mut();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::ErrorKind::Other)?.extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_and_interrupts() {
        let sink = Sink::default();
        let mut com = Com1::new(Box::new(sink.clone()));
        assert!(!com.write(0, b'h').new_event);
        let u = com.write(1, 0x02); // THRE interrupt enable: THR already empty
        assert!(u.new_event && u.level);
        let (iir, u) = com.read(2);
        assert_eq!(iir & 0x0f, 0x02);
        assert!(!u.level);
        let u = com.write(0, b'i');
        assert!(u.new_event && u.level);
        let (iir, u) = com.read(2);
        assert_eq!(iir & 0x0f, 0x02);
        assert!(!u.level);
        assert_eq!(sink.0.lock().unwrap().as_slice(), b"hi");
        com.write(1, 0x01);
        let (n, u) = com.enqueue(b"ab");
        assert_eq!(n, 2);
        assert!(u.new_event && u.level);
        assert_eq!(com.read(0).0, b'a');
        assert_eq!(com.read(5).0 & 1, 1);
        assert_eq!(com.read(0).0, b'b');
        assert_eq!(com.read(5).0 & 1, 0);
    }
}
