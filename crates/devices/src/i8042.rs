//! The i8042 keyboard controller, as far as a microVM needs it: the CPU reset
//! line (command 0xFE on port 0x64), which Linux uses to reboot.
//!
//! Mapped at ports 0x60..0x65 (offset 4 is the command/status port).

use vm_superio::{I8042Device, Trigger};

use crate::{BusDevice, GuestRequest, RequestSink};

pub const I8042_BASE: u16 = 0x60;
pub const I8042_SIZE: u64 = 5;

struct ResetTrigger(RequestSink);

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;
    fn trigger(&self) -> Result<(), Self::E> {
        (self.0)(GuestRequest::Reset);
        Ok(())
    }
}

pub struct I8042 {
    inner: I8042Device<ResetTrigger>,
}

impl I8042 {
    pub fn new(requests: RequestSink) -> Self {
        I8042 {
            inner: I8042Device::new(ResetTrigger(requests)),
        }
    }
}

impl BusDevice for I8042 {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let value = self.inner.read(offset as u8);
        data.fill(0);
        if let Some(first) = data.first_mut() {
            *first = value;
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(&value) = data.first() {
            let Ok(()) = self.inner.write(offset as u8, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn reset_command_requests_reset_and_nothing_else_does() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let mut dev = I8042::new(Arc::new(move |r| sink_seen.lock().unwrap().push(r)));
        let mut status = [0xaa];
        dev.read(4, &mut status);
        assert_eq!(
            status,
            [0],
            "input buffer empty, so Linux may send commands"
        );
        dev.write(4, &[0x20]);
        dev.write(0, &[0xfe]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(4, &[0xfe]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::Reset]);
    }
}
