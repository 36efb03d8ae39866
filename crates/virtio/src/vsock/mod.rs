//! virtio-vsock (socket device, ID 19): stream sockets between the guest
//! and host programs, over Unix sockets on the host ([`unix`], Firecracker's
//! conventions).
//!
//! Queues: receive (0, device to driver), transmit (1), event (2: used
//! once, by a device restored from a snapshot, to tell the driver
//! VIRTIO_VSOCK_EVENT_TRANSPORT_RESET: the host ends of its connections
//! are gone, as with Firecracker). The configuration
//! space is the guest's CID (le64). Only VIRTIO_VSOCK_TYPE_STREAM; no
//! SEQPACKET.
//!
//! - [`packet`]: the header and the checks of every packet from the guest
//!   ([`packet::parse`], a pure function for the fuzzer);
//! - [`conn`]: one connection's state machine and credit accounting;
//! - [`unix`]: the listener, the `CONNECT` handshake, the host sockets.
//!
//! The transmit queue is read only while the packets the device owes the
//! guest (RSTs for stray packets) fit a bound, so a driver that sends
//! without receiving cannot make the device buffer without end.

pub mod conn;
pub mod packet;
pub mod unix;

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use devices::ratelimit::RateLimiter;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::chain::{pop_chain as pop, Chain};
use crate::worker::{Worker, WorkerCtl, WorkerHandler, BACKEND_TOKEN};
use crate::{
    Activation, DeviceError, Interrupt, VirtioDevice, F_RING_EVENT_IDX, F_RING_INDIRECT_DESC,
    F_VERSION_1, TYPE_VSOCK,
};
use packet::{HEADER_LEN, MAX_PAYLOAD};
use unix::Muxer;
pub use unix::VsockCounters;
use vmm_sys_util::timerfd::TimerFd;

const QUEUE_SIZES: &[u16] = &[256, 256, 256];
const RX: usize = 0;
const TX: usize = 1;
const EVENT: usize = 2;
/// Most transmit chains per call (then the queue is served again later).
const TX_PER_CALL: usize = 1024;
/// The muxer's fds take tokens from BACKEND_TOKEN + 1 up.
const TIMER_TOKEN: u64 = BACKEND_TOKEN;
/// How often unanswered REQUESTs are looked at (while there are some).
const EXPIRY_TICK: std::time::Duration = std::time::Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock CID {0} is reserved or too large: use 3 to 4294967294")]
    Cid(u64),
    #[error("cannot listen on the vsock socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The socket device.
pub struct Vsock {
    cid: u64,
    path: PathBuf,
    listener: Arc<UnixListener>,
    counters: Arc<VsockCounters>,
    worker: Option<Worker<Serve>>,
}

impl Vsock {
    /// A socket device for the guest of CID `cid`, listening on the Unix
    /// socket `path` for host clients.
    pub fn new(cid: u64, path: &Path) -> Result<Vsock, VsockError> {
        if !(3..u64::from(u32::MAX)).contains(&cid) {
            return Err(VsockError::Cid(cid));
        }
        let listener = unix::bind(path).map_err(|source| VsockError::Bind {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(Vsock {
            cid,
            path: path.to_path_buf(),
            listener: Arc::new(listener),
            counters: Arc::default(),
            worker: None,
        })
    }

    pub fn counters(&self) -> Arc<VsockCounters> {
        self.counters.clone()
    }
}

impl Drop for Vsock {
    fn drop(&mut self) {
        self.reset();
        let _ = std::fs::remove_file(&self.path);
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        TYPE_VSOCK
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        crate::read_config_bytes(&self.cid.to_le_bytes(), offset, data);
    }
    fn activate(&mut self, activation: Activation) -> Result<(), DeviceError> {
        self.reset();
        let mut queues = activation.queues.into_iter();
        // The event queue is optional until a reset event is due.
        let (rx, tx, event) = match (queues.next(), queues.next(), queues.next()) {
            (Some(rx), Some(tx), event) if rx.ready() && tx.ready() => (rx, tx, event),
            (Some(rx), _, _) if rx.ready() => return Err(DeviceError::NoQueue(TX)),
            _ => return Err(DeviceError::NoQueue(RX)),
        };
        let event = event.filter(QueueT::ready);
        let muxer = Muxer::new(
            self.cid,
            self.path.clone(),
            self.listener.clone(),
            BACKEND_TOKEN + 1,
            self.counters.clone(),
        );
        let serve = Serve {
            mem: activation.mem,
            rx,
            tx,
            event,
            reset_due: activation.restored,
            counters: self.counters.clone(),
            interrupt: activation.interrupt.clone(),
            muxer,
            held_rx: None,
            tx_stalled: false,
            scratch: Vec::new(),
            log_limit: RateLimiter::default(),
            timer: TimerFd::new().map_err(|e| DeviceError::Io(e.into()))?,
            timer_armed: false,
        };
        self.worker = Some(Worker::spawn(
            sandbox::ThreadKind::VirtioVsock,
            activation.queue_events,
            activation.interrupt,
            serve,
        )?);
        Ok(())
    }
    fn reset(&mut self) {
        // Stopping the worker drops the connections: every host socket of
        // the guest's connections is closed.
        if let Some(worker) = self.worker.take() {
            worker.stop();
        }
    }
}

/// The socket device's work on its thread.
struct Serve {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    /// The event queue, if the driver made it ready.
    event: Option<Queue>,
    /// A transport reset event is owed to the driver (after a restore).
    reset_due: bool,
    counters: Arc<VsockCounters>,
    interrupt: Arc<dyn Interrupt>,
    muxer: Muxer,
    /// A receive buffer taken from the queue when a packet seemed due but
    /// none came (used first next time).
    held_rx: Option<Chain>,
    /// The transmit queue waits for the receive queue to drain.
    tx_stalled: bool,
    scratch: Vec<u8>,
    log_limit: RateLimiter,
    /// Wakes the device while host clients wait for the guest's answer.
    timer: TimerFd,
    /// The one-shot timer is set and has not been read.
    timer_armed: bool,
}

/// struct virtio_vsock_event's id: the transport was reset.
const EVENT_TRANSPORT_RESET: u32 = 0;

impl Serve {
    /// Tells the driver the transport was reset (its connections are
    /// gone), if that is owed and it gave an event buffer.
    fn send_reset(&mut self) -> Result<(), DeviceError> {
        let Some(queue) = self.event.as_mut().filter(|_| self.reset_due) else {
            return Ok(());
        };
        let Some(chain) = pop(&self.mem, queue)? else {
            // Sent when the driver adds a buffer.
            return Ok(());
        };
        let id = EVENT_TRANSPORT_RESET.to_le_bytes();
        let written = chain.writable().write_at(&self.mem, 0, &id);
        let len = if written { id.len() as u32 } else { 0 };
        crate::used::add_used(queue, &self.mem, chain.head, len)?;
        self.reset_due = false;
        if !written {
            return Err(DeviceError::Request(format!(
                "event chain {} cannot hold an event",
                chain.head
            )));
        }
        self.counters
            .transport_resets
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        crate::chain::notify_used(&self.mem, queue, EVENT, &*self.interrupt, true)
    }

    /// Hands the guest's packets to the muxer.
    fn process_tx(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        let mut served = 0;
        while !self.muxer.backlogged() {
            if served == TX_PER_CALL {
                ctl.rearm(TX);
                break;
            }
            let Some(chain) = pop(&self.mem, &mut self.tx)? else {
                break;
            };
            let readable = chain.readable();
            let n = readable.len().min((HEADER_LEN + MAX_PAYLOAD) as u64) as usize;
            self.scratch.resize(n, 0);
            if !readable.read_at(&self.mem, 0, &mut self.scratch) {
                return Err(DeviceError::Request(format!(
                    "transmit chain {} cannot be read",
                    chain.head
                )));
            }
            if let Err(e) = self.muxer.guest_packet(&self.scratch) {
                if self.log_limit.allow() {
                    tracing::warn!(error = %e, "virtio-vsock: bad packet from the guest");
                }
            }
            crate::used::add_used(&mut self.tx, &self.mem, chain.head, 0)?;
            served += 1;
        }
        self.tx_stalled = self.muxer.backlogged();
        crate::chain::notify_used(&self.mem, &mut self.tx, TX, &*self.interrupt, served > 0)?;
        Ok(())
    }

    /// Puts the packets due to the guest in its receive buffers.
    fn fill_rx(&mut self) -> Result<(), DeviceError> {
        let mut used = false;
        while self.muxer.has_output() {
            let chain = match self.held_rx.take() {
                Some(chain) => chain,
                None => match pop(&self.mem, &mut self.rx)? {
                    Some(chain) => chain,
                    None => break,
                },
            };
            let out = chain.writable();
            let Some(room) = out.len().checked_sub(HEADER_LEN as u64) else {
                return Err(DeviceError::Request(format!(
                    "receive buffer of {} bytes cannot hold a packet header",
                    out.len()
                )));
            };
            let room = room.min(MAX_PAYLOAD as u64) as usize;
            let Some((header, payload)) = self.muxer.next_for_guest(room) else {
                self.held_rx = Some(chain);
                break;
            };
            if !out.write_at(&self.mem, 0, &header)
                || !out.write_at(&self.mem, HEADER_LEN as u64, &payload)
            {
                return Err(DeviceError::Request(format!(
                    "receive chain {} cannot be written",
                    chain.head
                )));
            }
            crate::used::add_used(
                &mut self.rx,
                &self.mem,
                chain.head,
                (HEADER_LEN + payload.len()) as u32,
            )?;
            used = true;
        }
        crate::chain::notify_used(&self.mem, &mut self.rx, RX, &*self.interrupt, used)?;
        Ok(())
    }

    /// After any event: host I/O and registrations, packets to the guest,
    /// and the transmit queue once the receive side caught up.
    fn pump(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        self.muxer.sync(ctl);
        self.fill_rx()?;
        self.muxer.sync(ctl);
        if self.tx_stalled && !self.muxer.backlogged() {
            self.tx_stalled = false;
            ctl.rearm(TX);
        }
        // One shot at a time, never disarmed: when it reports, it expired.
        if !self.timer_armed && self.muxer.connecting() {
            self.timer
                .reset(EXPIRY_TICK, None)
                .map_err(|e| DeviceError::Io(e.into()))?;
            self.timer_armed = true;
        }
        Ok(())
    }
}

impl WorkerHandler for Serve {
    fn start(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        use std::os::fd::AsRawFd;
        ctl.add(
            self.timer.as_raw_fd(),
            TIMER_TOKEN,
            vmm_sys_util::epoll::EventSet::IN,
        )
        .map_err(DeviceError::Io)?;
        self.muxer.start(ctl).map_err(DeviceError::Io)
    }

    fn park(&mut self) -> Option<Vec<crate::pause::QueuePosition>> {
        use crate::worker::position;
        // The held buffer was the last taken: it goes back to the ring.
        if self.held_rx.take().is_some() {
            let at = self.rx.next_avail().wrapping_sub(1);
            self.rx.set_next_avail(at);
        }
        let event = self.event.as_ref().map(position).unwrap_or_default();
        Some(vec![position(&self.rx), position(&self.tx), event])
    }

    fn queue_event(&mut self, ctl: &WorkerCtl, queue: usize) -> Result<(), DeviceError> {
        match queue {
            RX => {}
            TX => self.process_tx(ctl)?,
            EVENT => return self.send_reset(),
            _ => return Err(DeviceError::NoQueue(queue)),
        }
        self.pump(ctl)
    }

    fn backend_event(
        &mut self,
        ctl: &WorkerCtl,
        token: u64,
        events: vmm_sys_util::epoll::EventSet,
    ) -> Result<(), DeviceError> {
        if token == TIMER_TOKEN {
            // The one-shot expired (epoll said so): the read does not block.
            self.timer_armed = false;
            let _ = self.timer.wait();
            self.muxer.expire(std::time::Instant::now());
        } else {
            self.muxer.host_event(ctl, token, events);
        }
        self.pump(ctl)
    }
}

#[cfg(test)]
mod tests;
