//! virtio-rng (entropy device, ID 4): fills the driver's buffers with bytes
//! from the host's /dev/urandom.

use std::fs::File;
use std::io::Read;
use std::sync::Arc;

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::chain::serve_queue;
use crate::{
    Activation, DeviceError, Interrupt, VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC,
    F_VERSION_1, TYPE_RNG,
};

const QUEUE_SIZES: &[u16] = &[256];
/// Most bytes given per request (the Linux driver asks for at most a page
/// or so at a time).
const MAX_REQUEST: u64 = 64 << 10;

struct Active {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<dyn Interrupt>,
}

/// The entropy device.
pub struct Rng {
    source: Box<dyn Read + Send>,
    active: Option<Active>,
    /// Requests the source could not fill (answered with 0 bytes).
    pub source_errors: u64,
}

impl Rng {
    /// An entropy device reading the host's /dev/urandom.
    pub fn new() -> std::io::Result<Rng> {
        Ok(Rng::with_source(Box::new(File::open("/dev/urandom")?)))
    }

    /// An entropy device reading `source` (tests).
    pub fn with_source(source: Box<dyn Read + Send>) -> Rng {
        Rng {
            source,
            active: None,
            source_errors: 0,
        }
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        TYPE_RNG
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX
    }
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }
    fn activate(&mut self, activation: Activation) -> Result<(), DeviceError> {
        let queue = activation
            .queues
            .into_iter()
            .next()
            .filter(|q| q.ready())
            .ok_or(DeviceError::NoQueue(0))?;
        self.active = Some(Active {
            mem: activation.mem,
            queue,
            interrupt: activation.interrupt,
        });
        Ok(())
    }
    fn queue_notify(&mut self, queue: usize) -> Result<(), DeviceError> {
        let active = self.active.as_mut().ok_or(DeviceError::NotActivated)?;
        if queue != 0 {
            return Err(DeviceError::NoQueue(queue));
        }
        let source = &mut self.source;
        let errors = &mut self.source_errors;
        let mem = &active.mem;
        serve_queue(mem, &mut active.queue, &*active.interrupt, |chain| {
            let out = chain.writable();
            let len = out.len().min(MAX_REQUEST) as usize;
            let mut bytes = vec![0u8; len];
            if source.read_exact(&mut bytes).is_err() {
                *errors += 1;
                return 0;
            }
            if out.write_at(mem, 0, &bytes) {
                len as u32
            } else {
                0
            }
        })
    }
    fn reset(&mut self) {
        self.active = None;
    }
}
