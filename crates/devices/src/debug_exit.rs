//! A debug-exit port that behaves like QEMU's
//! `-device isa-debug-exit,iobase=0xf4,iosize=4`: a guest write of value `v`
//! ends the VM with exit status `(v << 1) | 1`.

use crate::{BusDevice, GuestRequest, RequestSink};

pub const DEBUG_EXIT_PORT: u16 = 0xf4;
pub const DEBUG_EXIT_SIZE: u64 = 4;

pub struct DebugExit {
    requests: RequestSink,
}

impl DebugExit {
    pub fn new(requests: RequestSink) -> Self {
        DebugExit { requests }
    }
}

impl BusDevice for DebugExit {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn write(&mut self, _offset: u64, data: &[u8]) {
        // The value is the little-endian number the guest wrote, of the
        // access's width (QEMU takes the same value whatever the offset).
        let mut value = 0u32;
        for (i, byte) in data.iter().take(4).enumerate() {
            value |= u32::from(*byte) << (8 * i);
        }
        let status = (value << 1) | 1;
        (self.requests)(GuestRequest::DebugExit {
            status: status as i32,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn capture() -> (RequestSink, Arc<Mutex<Vec<GuestRequest>>>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let sink: RequestSink = Arc::new(move |r| sink_seen.lock().unwrap().push(r));
        (sink, seen)
    }

    #[test]
    fn status_is_value_shifted_with_low_bit_set() {
        let (sink, seen) = capture();
        let mut dev = DebugExit::new(sink);
        dev.write(0, &[0x10]);
        dev.write(0, &[0x01, 0x02, 0x00, 0x00]);
        dev.write(0, &[0x00]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![
                GuestRequest::DebugExit { status: 0x21 },
                GuestRequest::DebugExit { status: 0x403 },
                GuestRequest::DebugExit { status: 1 },
            ]
        );
    }
}
