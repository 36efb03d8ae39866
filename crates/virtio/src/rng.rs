//! virtio-rng (entropy device, ID 4): fills the driver's buffers with bytes
//! from the host's /dev/urandom.

use std::fs::File;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use crate::chain::{serve_queue_gated, Served};
use crate::throttle::{Gate, Limits, ThrottleHandle};
use crate::worker::{Worker, WorkerCtl, WorkerHandler, BACKEND_TOKEN};
use crate::{
    Activation, DeviceError, Interrupt, VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC,
    F_VERSION_1, TYPE_RNG,
};

const QUEUE_SIZES: &[u16] = &[256];
/// Most bytes given per request (the Linux driver asks for at most a page
/// or so at a time).
const MAX_REQUEST: u64 = 64 << 10;

/// The entropy device's work on its thread.
struct Serve {
    mem: GuestMemoryMmap,
    queue: Queue,
    interrupt: Arc<dyn Interrupt>,
    source: Box<dyn Read + Send>,
    source_errors: Arc<AtomicU64>,
    counters: Arc<RngStats>,
    /// The device's rate limiter.
    gate: Gate,
}

/// What the entropy device counted (Firecracker's `entropy` metrics),
/// since it was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RngCounters {
    /// Requests the driver made that were served.
    pub entropy_event_count: u64,
    /// Random bytes given to the guest.
    pub entropy_bytes: u64,
    /// Requests the source could not fill (answered with 0 bytes).
    pub host_rng_fails: u64,
}

#[derive(Debug, Default)]
struct RngStats {
    requests: AtomicU64,
    bytes: AtomicU64,
}

impl WorkerHandler for Serve {
    fn start(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        self.gate.register(ctl).map_err(DeviceError::Io)
    }

    fn park(&mut self) -> Option<Vec<crate::pause::QueuePosition>> {
        Some(vec![crate::worker::position(&self.queue)])
    }

    fn queue_event(&mut self, ctl: &WorkerCtl, queue: usize) -> Result<(), DeviceError> {
        if queue != 0 {
            return Err(DeviceError::NoQueue(queue));
        }
        if self.gate.blocked() {
            // The gate's timer serves the queue when tokens are back.
            return Ok(());
        }
        let source = &mut self.source;
        let errors = &self.source_errors;
        let counters = &self.counters;
        let mem = &self.mem;
        let gate = &mut self.gate;
        let served = serve_queue_gated(mem, &mut self.queue, 0, &*self.interrupt, |chain| {
            let out = chain.writable();
            let len = out.len().min(MAX_REQUEST) as usize;
            // Firecracker's costs: one op and the bytes given.
            if !gate.admit(len as u64, 1) {
                return None;
            }
            let mut bytes = vec![0u8; len];
            if source.read_exact(&mut bytes).is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
                return Some(0);
            }
            counters.requests.fetch_add(1, Ordering::Relaxed);
            Some(if out.write_at(mem, 0, &bytes) {
                counters.bytes.fetch_add(len as u64, Ordering::Relaxed);
                len as u32
            } else {
                0
            })
        })?;
        if served == Served::More {
            ctl.rearm(0);
        }
        Ok(())
    }

    fn backend_event(
        &mut self,
        ctl: &WorkerCtl,
        token: u64,
        _events: EventSet,
    ) -> Result<(), DeviceError> {
        if self.gate.event(token) {
            self.queue_event(ctl, 0)?;
        }
        Ok(())
    }
}

/// The entropy device.
pub struct Rng {
    /// The source while the device is not running (the worker has it
    /// otherwise).
    source: Option<Box<dyn Read + Send>>,
    worker: Option<Worker<Serve>>,
    source_errors: Arc<AtomicU64>,
    counters: Arc<RngStats>,
    throttle: ThrottleHandle,
}

impl Rng {
    /// An entropy device reading the host's /dev/urandom.
    pub fn new() -> std::io::Result<Rng> {
        Ok(Rng::with_source(Box::new(File::open("/dev/urandom")?)))
    }

    /// An entropy device reading `source` (tests).
    pub fn with_source(source: Box<dyn Read + Send>) -> Rng {
        Rng {
            source: Some(source),
            worker: None,
            source_errors: Arc::default(),
            counters: Arc::default(),
            throttle: ThrottleHandle::new(Limits::default()),
        }
    }

    /// The device with the rate limiter `limits` (none by default).
    pub fn limited(mut self, limits: Limits) -> Rng {
        self.throttle = ThrottleHandle::new(limits);
        self
    }

    /// The rate limiter's handle: its limits, changed at run time, and
    /// how often requests waited (`entropy_rate_limiter_throttled`).
    pub fn throttle(&self) -> ThrottleHandle {
        self.throttle.clone()
    }

    /// Requests the source could not fill (answered with 0 bytes).
    pub fn source_errors(&self) -> u64 {
        self.source_errors.load(Ordering::Relaxed)
    }

    /// A handle on the device's counters, readable while it runs.
    pub fn stats(&self) -> RngStatsHandle {
        RngStatsHandle {
            counters: self.counters.clone(),
            source_errors: self.source_errors.clone(),
        }
    }
}

/// Reads an entropy device's counters from another thread.
#[derive(Debug, Clone)]
pub struct RngStatsHandle {
    counters: Arc<RngStats>,
    source_errors: Arc<AtomicU64>,
}

impl RngStatsHandle {
    pub fn snapshot(&self) -> RngCounters {
        RngCounters {
            entropy_event_count: self.counters.requests.load(Ordering::Relaxed),
            entropy_bytes: self.counters.bytes.load(Ordering::Relaxed),
            host_rng_fails: self.source_errors.load(Ordering::Relaxed),
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
        self.reset();
        let [queue] = crate::ready_queues(activation.queues)?;
        let gate = Gate::new(&self.throttle, BACKEND_TOKEN).map_err(DeviceError::Io)?;
        let source = self.source.take().ok_or(DeviceError::NotActivated)?;
        let serve = Serve {
            gate,
            mem: activation.mem,
            queue,
            interrupt: activation.interrupt.clone(),
            source,
            source_errors: self.source_errors.clone(),
            counters: self.counters.clone(),
        };
        self.worker = Some(Worker::spawn(
            sandbox::ThreadKind::VirtioRng,
            activation.queue_events,
            activation.interrupt,
            serve,
        )?);
        Ok(())
    }
    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            match worker.stop() {
                Some(serve) => self.source = Some(serve.source),
                None => tracing::error!("virtio-rng: the worker thread panicked"),
            }
        }
    }
}
