//! The 16550A UART on COM1 (ports 0x3f8..0x3ff, IRQ 4), on vm-superio.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_superio::serial::SerialEvents;
use vm_superio::{Serial as Uart16550, Trigger};

use crate::ratelimit::RateLimiter;
use crate::{BusDevice, IrqLine};

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
pub const UART_SIZE: u64 = 8;

struct IrqTrigger(Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        self.0.pulse();
        Ok(())
    }
}

/// What the UART counted (Firecracker's `uart` metrics), since it was
/// built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SerialCounters {
    /// Bytes the guest read from the receive buffer.
    pub read_count: u64,
    /// Bytes the guest transmitted that reached the output.
    pub write_count: u64,
    /// Bytes the guest transmitted that the output refused (lost).
    pub missed_write_count: u64,
}

/// The UART's counters, bumped by vm-superio's events; readable without
/// the device's lock.
#[derive(Debug, Default)]
pub struct SerialStats {
    read: AtomicU64,
    write: AtomicU64,
    missed_write: AtomicU64,
}

impl SerialStats {
    pub fn snapshot(&self) -> SerialCounters {
        SerialCounters {
            read_count: self.read.load(Ordering::Relaxed),
            write_count: self.write.load(Ordering::Relaxed),
            missed_write_count: self.missed_write.load(Ordering::Relaxed),
        }
    }
}

impl SerialEvents for SerialStats {
    fn buffer_read(&self) {
        self.read.fetch_add(1, Ordering::Relaxed);
    }
    fn out_byte(&self) {
        self.write.fetch_add(1, Ordering::Relaxed);
    }
    fn tx_lost_byte(&self) {
        self.missed_write.fetch_add(1, Ordering::Relaxed);
    }
    fn in_buffer_empty(&self) {}
}

/// A UART whose transmitted bytes go to `out` and whose received bytes come
/// from [`Serial::enqueue_input`].
pub struct Serial {
    uart: Uart16550<IrqTrigger, Arc<SerialStats>, Box<dyn Write + Send>>,
    stats: Arc<SerialStats>,
    log_limit: RateLimiter,
}

impl Serial {
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        let stats = Arc::new(SerialStats::default());
        Serial {
            uart: Uart16550::with_events(IrqTrigger(irq), stats.clone(), out),
            stats,
            log_limit: RateLimiter::default(),
        }
    }

    /// The device's counters (a handle: read it while the device runs).
    pub fn stats(&self) -> Arc<SerialStats> {
        self.stats.clone()
    }

    /// Queues host input for the guest; returns how many bytes fit in the
    /// receive FIFO (the rest must be offered again later).
    pub fn enqueue_input(&mut self, bytes: &[u8]) -> usize {
        let room = self.uart.fifo_capacity().min(bytes.len());
        if room == 0 {
            return 0;
        }
        self.uart.enqueue_raw_bytes(&bytes[..room]).unwrap_or(0)
    }

    /// Free space in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// The UART's registers and receive FIFO, for a snapshot.
    pub fn save(&self) -> SerialSnapshot {
        let s = self.uart.state();
        SerialSnapshot {
            baud_divisor_low: s.baud_divisor_low,
            baud_divisor_high: s.baud_divisor_high,
            interrupt_enable: s.interrupt_enable,
            interrupt_identification: s.interrupt_identification,
            line_control: s.line_control,
            line_status: s.line_status,
            modem_control: s.modem_control,
            modem_status: s.modem_status,
            scratch: s.scratch,
            in_buffer: s.in_buffer,
        }
    }

    /// Puts the UART in the state `snapshot` describes; its interrupt line,
    /// output and counters stay. A snapshot whose receive FIFO is larger
    /// than the UART's is refused and the UART is left as it was.
    pub fn restore(&mut self, snapshot: &SerialSnapshot) -> Result<(), SerialStateError> {
        let state = vm_superio::serial::SerialState {
            baud_divisor_low: snapshot.baud_divisor_low,
            baud_divisor_high: snapshot.baud_divisor_high,
            interrupt_enable: snapshot.interrupt_enable,
            interrupt_identification: snapshot.interrupt_identification,
            line_control: snapshot.line_control,
            line_status: snapshot.line_status,
            modem_control: snapshot.modem_control,
            modem_status: snapshot.modem_status,
            scratch: snapshot.scratch,
            in_buffer: snapshot.in_buffer.clone(),
        };
        let fifo = self.uart.fifo_capacity() + self.uart.state().in_buffer.len();
        if state.in_buffer.len() > fifo {
            return Err(SerialStateError::FifoTooLarge(state.in_buffer.len()));
        }
        let irq = self.uart.interrupt_evt().0.clone();
        let placeholder = Uart16550::with_events(
            IrqTrigger(irq.clone()),
            self.stats.clone(),
            Box::new(std::io::sink()) as Box<dyn Write + Send>,
        );
        let old = std::mem::replace(&mut self.uart, placeholder);
        let out = old.into_writer();
        match Uart16550::from_state(&state, IrqTrigger(irq), self.stats.clone(), out) {
            Ok(uart) => {
                self.uart = uart;
                Ok(())
            }
            // Checked above: only an oversized FIFO fails.
            Err(_) => Err(SerialStateError::FifoTooLarge(state.in_buffer.len())),
        }
    }
}

/// The saved state of the UART (vm-superio's `SerialState`, serde-able).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct SerialSnapshot {
    pub baud_divisor_low: u8,
    pub baud_divisor_high: u8,
    pub interrupt_enable: u8,
    pub interrupt_identification: u8,
    pub line_control: u8,
    pub line_status: u8,
    pub modem_control: u8,
    pub modem_status: u8,
    pub scratch: u8,
    pub in_buffer: Vec<u8>,
}

#[derive(Debug, thiserror::Error)]
pub enum SerialStateError {
    #[error("the saved UART receive FIFO holds {0} bytes, more than the UART's")]
    FifoTooLarge(usize),
}

impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = self.uart.read(offset as u8);
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        if let Err(e) = self.uart.write(offset as u8, value) {
            // A full output buffer (serial_output) refuses bytes: counted
            // (missed_write_count and the buffer's lost bytes), reported
            // once when the VM ends, not per byte.
            if let vm_superio::serial::Error::IOError(io) = &e {
                if io.kind() == std::io::ErrorKind::WouldBlock {
                    return;
                }
            }
            // The host side of the console failed (closed pipe...): the byte
            // is lost, the guest goes on.
            if self.log_limit.allow() {
                tracing::warn!(error = %e, "serial output failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Mutex;

    #[derive(Default)]
    struct CountingIrq(AtomicU32);
    impl IrqLine for CountingIrq {
        fn set_level(&self, level: bool) {
            if level {
                self.0.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn state_moves_to_another_uart() {
        let irq = Arc::new(CountingIrq::default());
        let mut a = Serial::new(irq.clone(), Box::new(std::io::sink()));
        a.write(7, &[0x5a]); // scratch
        a.write(1, &[0x01]); // IER: received data
        assert_eq!(a.enqueue_input(b"xy"), 2);
        let saved = a.save();
        assert_eq!(saved.in_buffer, b"xy");

        let out = SharedBuf::default();
        let mut b = Serial::new(irq, Box::new(out.clone()));
        b.restore(&saved).unwrap();
        let mut byte = [0];
        b.read(7, &mut byte);
        assert_eq!(byte, [0x5a]);
        b.read(1, &mut byte);
        assert_eq!(byte, [0x01]);
        b.read(0, &mut byte);
        assert_eq!(byte, [b'x']);
        b.write(0, b"z");
        assert_eq!(
            &*out.0.lock().unwrap(),
            b"z",
            "the output stays the UART's own"
        );

        let mut too_big = saved.clone();
        too_big.in_buffer = vec![0; 4096];
        assert!(b.restore(&too_big).is_err());
        b.read(7, &mut byte);
        assert_eq!(byte, [0x5a], "a refused state changes nothing");
    }

    #[test]
    fn transmits_and_receives_with_interrupts() {
        let irq = Arc::new(CountingIrq::default());
        let out = SharedBuf::default();
        let mut serial = Serial::new(irq.clone(), Box::new(out.clone()));
        for b in b"hi" {
            serial.write(0, &[*b]);
        }
        assert_eq!(&*out.0.lock().unwrap(), b"hi");
        assert_eq!(serial.stats().snapshot().write_count, 2);

        // Enable the received-data interrupt (IER bit 0), then receive.
        serial.write(1, &[0x01]);
        assert_eq!(serial.enqueue_input(b"ok"), 2);
        assert!(irq.0.load(Ordering::Relaxed) >= 1);
        let mut lsr = [0];
        serial.read(5, &mut lsr);
        assert_eq!(lsr[0] & 1, 1, "data ready");
        let mut byte = [0];
        serial.read(0, &mut byte);
        assert_eq!(byte, [b'o']);
        serial.read(0, &mut byte);
        assert_eq!(byte, [b'k']);
        let counted = serial.stats().snapshot();
        // Bytes in and out; the IER write is not a byte out.
        assert_eq!((counted.read_count, counted.write_count), (2, 2));
    }

    #[test]
    fn input_beyond_fifo_is_left_for_later() {
        let irq = Arc::new(CountingIrq::default());
        let mut serial = Serial::new(irq, Box::new(std::io::sink()));
        let big = vec![b'x'; 1000];
        let taken = serial.enqueue_input(&big);
        assert!(taken > 0 && taken < big.len());
        assert_eq!(serial.enqueue_input(&big), 0);
        assert_eq!(serial.input_capacity(), 0);
    }
}
