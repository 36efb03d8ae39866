//! The Bochs BIOS shutdown port (0x8900): writing the bytes of "Shutdown"
//! one after the other powers the machine off. kvm-unit-tests' `exit()`
//! falls back to it when the debug-exit port did not end the machine.
//!
//! Any byte that does not continue the word starts it again (from its
//! first letter if the byte is an 'S'). Reads return 0xff, as an unclaimed
//! port.

use crate::{BusDevice, GuestRequest, RequestSink};

/// The port.
pub const SHUTDOWN_PORT: u16 = 0x8900;
/// Ports the device decodes.
pub const SHUTDOWN_SIZE: u64 = 1;

const WORD: &[u8] = b"Shutdown";

pub struct ShutdownPort {
    requests: RequestSink,
    /// How many letters of [`WORD`] have been written in a row.
    matched: usize,
}

impl ShutdownPort {
    pub fn new(requests: RequestSink) -> Self {
        ShutdownPort {
            requests,
            matched: 0,
        }
    }

    fn byte(&mut self, b: u8) {
        self.matched = if b == WORD[self.matched] {
            self.matched + 1
        } else {
            usize::from(b == WORD[0])
        };
        if self.matched == WORD.len() {
            self.matched = 0;
            (self.requests)(GuestRequest::PowerOff);
        }
    }
}

impl BusDevice for ShutdownPort {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        // Only byte writes carry a letter.
        if offset == 0 && data.len() == 1 {
            self.byte(data[0]);
        } else {
            self.matched = 0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn device() -> (ShutdownPort, Arc<Mutex<Vec<GuestRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let sink: RequestSink = Arc::new(move |r| sink_seen.lock().unwrap().push(r));
        (ShutdownPort::new(sink), seen)
    }

    fn send(dev: &mut ShutdownPort, text: &[u8]) {
        for &b in text {
            dev.write(0, &[b]);
        }
    }

    #[test]
    fn the_word_powers_off() {
        let (mut dev, seen) = device();
        send(&mut dev, b"Shutdow");
        assert!(seen.lock().unwrap().is_empty());
        send(&mut dev, b"n");
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::PowerOff]);
    }

    #[test]
    fn anything_else_starts_over() {
        let (mut dev, seen) = device();
        send(&mut dev, b"ShutXdown shutdown SShutdow");
        dev.write(0, &[b'n', 0]);
        send(&mut dev, b"n");
        assert!(seen.lock().unwrap().is_empty());
        // A stray 'S' restarts the word at its first letter.
        send(&mut dev, b"ShutSShutdown");
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::PowerOff]);
        let mut d = [0; 2];
        dev.read(0, &mut d);
        assert_eq!(d, [0xff, 0xff]);
        dev.write(u64::MAX, b"S");
    }
}
