//! virtio-console (console device, ID 3) with one port: the guest's hvc0.
//!
//! Queues: receiveq (0, host to guest) and transmitq (1, guest to host); no
//! VIRTIO_CONSOLE_F_MULTIPORT (so no control queues), no F_SIZE (cols and
//! rows read 0), no F_EMERG_WRITE. What the guest transmits goes to the
//! console writer (the host's standard output, like the UART's). What the
//! host types comes in through a [`ConsoleInput`]: a bounded buffer and an
//! eventfd the device's worker waits on; the bytes wait there until the
//! driver gives receive buffers, and beyond [`INPUT_CAP`] they are dropped
//! and counted.
//!
//! Input is held for [`INPUT_HOLD`] after the driver starts the device:
//! Linux's driver fills the receive queue before it marks the port
//! connected (the hvc console set up), and discards what arrives in
//! between; without VIRTIO_CONSOLE_F_MULTIPORT no message says when the
//! port is open. Bytes typed before the guest's driver loaded thus reach
//! the guest's hvc0 (which keeps them until a program reads it).

use std::collections::VecDeque;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use crate::chain::{pop_chain, serve_queue, Served};
use crate::worker::{Worker, WorkerCtl, WorkerHandler, BACKEND_TOKEN};
use crate::{
    read_config_bytes, Activation, DeviceError, Interrupt, VirtioDevice, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, F_VERSION_1, TYPE_CONSOLE,
};

const QUEUE_SIZES: &[u16] = &[256, 256];
const RX: usize = 0;
const TX: usize = 1;
/// Host input kept for the guest while it gives no receive buffers.
pub const INPUT_CAP: usize = 64 << 10;
/// Largest piece of guest output read at once.
const CHUNK: u64 = 16 << 10;
/// struct virtio_console_config: cols, rows, max_nr_ports, emerg_wr.
const CONFIG_LEN: usize = 12;
/// How long input waits after the driver started the device.
pub const INPUT_HOLD: Duration = Duration::from_millis(250);
const INPUT_TOKEN: u64 = BACKEND_TOKEN;
const HOLD_TOKEN: u64 = BACKEND_TOKEN + 1;

struct InputShared {
    pending: Mutex<VecDeque<u8>>,
    /// Written when bytes were added.
    event: EventFd,
    dropped: AtomicU64,
}

/// The host's side of the console's input: bytes queued here reach the
/// guest's receive buffers. Cloneable; used from any thread.
#[derive(Clone)]
pub struct ConsoleInput(Arc<InputShared>);

impl ConsoleInput {
    fn new() -> std::io::Result<ConsoleInput> {
        Ok(ConsoleInput(Arc::new(InputShared {
            pending: Mutex::new(VecDeque::new()),
            event: EventFd::new(EFD_NONBLOCK)?,
            dropped: AtomicU64::new(0),
        })))
    }

    fn pending(&self) -> MutexGuard<'_, VecDeque<u8>> {
        self.0.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes that can be queued now without dropping any.
    pub fn room(&self) -> usize {
        INPUT_CAP.saturating_sub(self.pending().len())
    }

    /// Queues `bytes` for the guest; returns how many were kept (the rest,
    /// past [`INPUT_CAP`], is dropped and counted).
    pub fn push(&self, bytes: &[u8]) -> usize {
        let kept = {
            let mut pending = self.pending();
            let kept = INPUT_CAP.saturating_sub(pending.len()).min(bytes.len());
            pending.extend(&bytes[..kept]);
            kept
        };
        let dropped = bytes.len() - kept;
        if dropped > 0 {
            self.0.dropped.fetch_add(dropped as u64, Ordering::Relaxed);
        }
        if kept > 0 {
            // Fails only when the counter would overflow: a wakeup is
            // pending anyway.
            let _ = self.0.event.write(1);
        }
        kept
    }

    /// Bytes dropped because the guest did not take them in time.
    pub fn dropped(&self) -> u64 {
        self.0.dropped.load(Ordering::Relaxed)
    }

    /// Bytes waiting for the guest.
    pub fn pending_len(&self) -> usize {
        self.pending().len()
    }
}

/// What the console moved.
#[derive(Debug, Default)]
pub struct ConsoleCounters {
    /// Bytes from the guest written to the console writer.
    pub output_bytes: AtomicU64,
    /// Bytes the console writer refused.
    pub output_errors: AtomicU64,
    /// Bytes given to the guest.
    pub input_bytes: AtomicU64,
}

/// The console device.
pub struct Console {
    /// The writer while the device is not running (the worker has it
    /// otherwise).
    output: Option<Box<dyn Write + Send>>,
    input: ConsoleInput,
    counters: Arc<ConsoleCounters>,
    worker: Option<Worker<Serve>>,
}

impl Console {
    /// A console writing the guest's output to `output`.
    pub fn new(output: Box<dyn Write + Send>) -> std::io::Result<Console> {
        Ok(Console {
            output: Some(output),
            input: ConsoleInput::new()?,
            counters: Arc::default(),
            worker: None,
        })
    }

    /// The handle that feeds the guest's input.
    pub fn input(&self) -> ConsoleInput {
        self.input.clone()
    }

    pub fn counters(&self) -> Arc<ConsoleCounters> {
        self.counters.clone()
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        TYPE_CONSOLE
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&[0u8; CONFIG_LEN], offset, data);
    }
    fn activate(&mut self, activation: Activation) -> Result<(), DeviceError> {
        self.reset();
        let [rx, tx] = crate::ready_queues(activation.queues)?;
        let output = self.output.take().ok_or(DeviceError::NotActivated)?;
        let serve = Serve {
            mem: activation.mem,
            rx,
            tx,
            interrupt: activation.interrupt.clone(),
            output,
            input: self.input.clone(),
            counters: self.counters.clone(),
            hold_until: Some(Instant::now() + INPUT_HOLD),
            hold_timer: TimerFd::new().map_err(|e| DeviceError::Io(e.into()))?,
        };
        self.worker = Some(Worker::spawn(
            sandbox::ThreadKind::VirtioConsole,
            activation.queue_events,
            activation.interrupt,
            serve,
        )?);
        Ok(())
    }
    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            match worker.stop() {
                Some(serve) => self.output = Some(serve.output),
                None => tracing::error!("virtio-console: the worker thread panicked"),
            }
        }
    }
}

/// The console's work on its thread.
struct Serve {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<dyn Interrupt>,
    output: Box<dyn Write + Send>,
    input: ConsoleInput,
    counters: Arc<ConsoleCounters>,
    /// Input waits until then (see [`INPUT_HOLD`]).
    hold_until: Option<Instant>,
    hold_timer: TimerFd,
}

impl Serve {
    /// Moves pending input into the guest's receive buffers.
    fn deliver(&mut self) -> Result<(), DeviceError> {
        if let Some(until) = self.hold_until {
            if Instant::now() < until {
                return Ok(());
            }
            self.hold_until = None;
        }
        let mut used = false;
        loop {
            if self.input.pending_len() == 0 {
                break;
            }
            let Some(chain) = pop_chain(&self.mem, &mut self.rx)? else {
                break;
            };
            let out = chain.writable();
            if out.is_empty() {
                return Err(DeviceError::Request(format!(
                    "receive chain {} has no device-writable buffer",
                    chain.head
                )));
            }
            let bytes: Vec<u8> = {
                let mut pending = self.input.pending();
                let n = (out.len().min(pending.len() as u64)) as usize;
                pending.drain(..n).collect()
            };
            if !out.write_at(&self.mem, 0, &bytes) {
                return Err(DeviceError::Request(format!(
                    "receive chain {} cannot be written",
                    chain.head
                )));
            }
            crate::used::add_used(&mut self.rx, &self.mem, chain.head, bytes.len() as u32)?;
            self.counters
                .input_bytes
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
            used = true;
        }
        crate::chain::notify_used(&self.mem, &mut self.rx, RX, &*self.interrupt, used)?;
        Ok(())
    }

    /// Writes the guest's output.
    fn transmit(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        let mem = &self.mem;
        let output = &mut self.output;
        let counters = &self.counters;
        let served = serve_queue(mem, &mut self.tx, TX, &*self.interrupt, |chain| {
            let data = chain.readable();
            let mut done = 0;
            while done < data.len() {
                let n = (data.len() - done).min(CHUNK) as usize;
                let mut buf = vec![0u8; n];
                if !data.read_at(mem, done, &mut buf) {
                    break;
                }
                if output.write_all(&buf).is_ok() {
                    counters.output_bytes.fetch_add(n as u64, Ordering::Relaxed);
                } else {
                    counters
                        .output_errors
                        .fetch_add(n as u64, Ordering::Relaxed);
                }
                done += n as u64;
            }
            0
        })?;
        let _ = self.output.flush();
        if served == Served::More {
            ctl.rearm(TX);
        }
        Ok(())
    }
}

impl WorkerHandler for Serve {
    fn park(&mut self) -> Option<Vec<crate::pause::QueuePosition>> {
        use crate::worker::position;
        Some(vec![position(&self.rx), position(&self.tx)])
    }

    fn start(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        if let Some(until) = self.hold_until {
            let left = until.saturating_duration_since(Instant::now());
            self.hold_timer
                .reset(left.max(Duration::from_millis(1)), None)
                .map_err(|e| DeviceError::Io(e.into()))?;
            ctl.add(self.hold_timer.as_raw_fd(), HOLD_TOKEN, EventSet::IN)
                .map_err(DeviceError::Io)?;
        }
        ctl.add(self.input.0.event.as_raw_fd(), INPUT_TOKEN, EventSet::IN)
            .map_err(DeviceError::Io)
    }

    fn queue_event(&mut self, ctl: &WorkerCtl, queue: usize) -> Result<(), DeviceError> {
        match queue {
            RX => self.deliver(),
            TX => self.transmit(ctl),
            _ => Err(DeviceError::NoQueue(queue)),
        }
    }

    fn backend_event(
        &mut self,
        ctl: &WorkerCtl,
        token: u64,
        _events: EventSet,
    ) -> Result<(), DeviceError> {
        if token == HOLD_TOKEN {
            // Expired (epoll said so): the read does not block.
            let _ = self.hold_timer.wait();
            let _ = ctl.remove(self.hold_timer.as_raw_fd());
            self.hold_until = None;
        } else {
            // Nonblocking: a spurious wakeup reads nothing.
            let _ = self.input.0.event.read();
        }
        self.deliver()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_driver::MultiDriver;

    /// A writer the test can read.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn console() -> (MultiDriver, ConsoleInput, Sink) {
        let sink = Sink::default();
        let dev = Console::new(Box::new(sink.clone())).unwrap();
        let input = dev.input();
        let mut d = MultiDriver::running(Box::new(dev), 2);
        assert_eq!(d.read(crate::mmio::reg::DEVICE_ID), TYPE_CONSOLE);
        (d, input, sink)
    }

    #[test]
    fn guest_output_reaches_the_writer_in_order() {
        let (mut d, _input, sink) = console();
        let a = d.buffer(6);
        let b = d.buffer(7);
        d.write_bytes(a, b"hello ");
        d.write_bytes(b, b"console");
        d.offer(TX, &[(a, 6, false), (b, 7, false)]);
        let c = d.buffer(2);
        d.write_bytes(c, b"!\n");
        d.offer(TX, &[(c, 2, false)]);
        d.wait_used(TX, 2);
        assert_eq!(&*sink.0.lock().unwrap(), b"hello console!\n");
    }

    #[test]
    fn input_waits_for_receive_buffers_and_fills_them_in_order() {
        let (mut d, input, _sink) = console();
        assert_eq!(input.push(b"typed before any buffer\n"), 24);
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert!(d.used(RX).is_empty());
        let small = d.buffer(8);
        let offered = Instant::now();
        d.offer(RX, &[(small, 8, true)]);
        let used = d.wait_used(RX, 1);
        // Not before the hold after DRIVER_OK.
        assert!(offered.elapsed() >= INPUT_HOLD - Duration::from_millis(30));
        assert_eq!(used[0].1, 8);
        assert_eq!(d.read_bytes(small, 8), b"typed be");
        let big = d.buffer(64);
        d.offer(RX, &[(big, 64, true)]);
        let used = d.wait_used(RX, 1);
        assert_eq!(used[0].1, 16);
        assert_eq!(d.read_bytes(big, 16), b"fore any buffer\n");
        // A buffer waiting, then input: delivered at once.
        let next = d.buffer(64);
        d.offer(RX, &[(next, 64, true)]);
        input.push(b"later");
        let used = d.wait_used(RX, 1);
        assert_eq!(used[0].1, 5);
        assert_eq!(d.read_bytes(next, 5), b"later");
        assert_eq!(input.dropped(), 0);
    }

    #[test]
    fn input_past_the_cap_is_dropped_and_counted() {
        let input = ConsoleInput::new().unwrap();
        assert_eq!(input.push(&vec![b'a'; INPUT_CAP - 10]), INPUT_CAP - 10);
        assert_eq!(input.room(), 10);
        assert_eq!(input.push(&[b'b'; 25]), 10);
        assert_eq!(input.dropped(), 15);
        assert_eq!(input.room(), 0);
        assert_eq!(input.push(b"c"), 0);
        assert_eq!(input.dropped(), 16);
    }

    #[test]
    fn a_read_only_receive_buffer_is_a_device_error() {
        let (mut d, input, _sink) = console();
        input.push(b"x");
        let buf = d.buffer(8);
        d.offer(RX, &[(buf, 8, false)]);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !d.needs_reset() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(d.needs_reset());
    }

    #[test]
    fn the_config_space_reads_zero() {
        let (mut d, _input, _sink) = console();
        for offset in (0..16).step_by(4) {
            assert_eq!(d.read(crate::mmio::reg::CONFIG + offset), 0);
        }
    }
}
