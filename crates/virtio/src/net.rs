//! virtio-net (network device, ID 1) on a frame backend (a host TAP device,
//! [`crate::tap::Tap`]).
//!
//! Two queues, receive (0) and transmit (1); no control queue, one queue
//! pair. The configuration space has the MAC (VIRTIO_NET_F_MAC) and the
//! link status (VIRTIO_NET_F_STATUS, always up). Every frame starts with
//! the 12-byte `virtio_net_hdr_v1`, which the backend reads and writes as
//! it is (a TAP with IFF_VNET_HDR).
//!
//! Offloads, when the device offers them ([`Net::with_offloads`]): checksum
//! and TCP segmentation (v4, v6) in both directions. They cost the device
//! nothing: the TAP's vnet header is the driver's. What the driver accepted
//! of GUEST_CSUM / GUEST_TSO4 / GUEST_TSO6 becomes the TAP's offload flags
//! (TUNSETOFFLOAD: which work the host kernel may leave in frames it hands
//! us); a transmitted header asking for work the driver did not negotiate
//! (CSUM, HOST_TSO4/6) is dropped, and the host kernel checks the rest of
//! it. Without offloads the transmitted headers are zeroed, and a received
//! frame with work left that the driver did not agree to is dropped.
//!
//! Transmit: each chain is a header and a frame; chains that are too short
//! (no full header), too long (more than [`MAX_FRAME`] bytes with the
//! header) or that the backend refuses are dropped and counted.
//!
//! Receive: with VIRTIO_NET_F_MRG_RXBUF a frame may fill several chains
//! (the header's num_buffers says how many); without it one chain must hold
//! it. A frame that cannot fit even in all the queue's buffers is dropped.
//! When the driver has no buffers left the worker stops waiting on the
//! backend (the frames wait in the host's TAP queue) until the driver
//! notifies the receive queue, so the thread never spins.

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use devices::ratelimit::RateLimiter;
use virtio_queue::{Queue, QueueOwnedT, QueueT};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::epoll::EventSet;

use crate::chain::{serve_queue_gated, walk, Chain, Served};
use crate::net_mmds::MmdsHook;
use crate::tap::VNET_HDR_LEN;
use crate::throttle::{Gate, Limits, ThrottleHandle};
use crate::worker::{Worker, WorkerCtl, WorkerHandler, BACKEND_TOKEN};
use crate::{
    read_config_bytes, Activation, DeviceError, Interrupt, VirtioDevice, F_RING_EVENT_IDX,
    F_RING_INDIRECT_DESC, F_VERSION_1, TYPE_NET,
};

pub const F_CSUM: u64 = 1 << 0;
pub const F_GUEST_CSUM: u64 = 1 << 1;
pub const F_MAC: u64 = 1 << 5;
pub const F_GUEST_TSO4: u64 = 1 << 7;
pub const F_GUEST_TSO6: u64 = 1 << 8;
pub const F_HOST_TSO4: u64 = 1 << 11;
pub const F_HOST_TSO6: u64 = 1 << 12;
pub const F_MRG_RXBUF: u64 = 1 << 15;
pub const F_STATUS: u64 = 1 << 16;

/// The link status bit of the configuration space.
pub const S_LINK_UP: u16 = 1;

/// The offloads the device offers with [`Net::with_offloads`].
pub const OFFLOAD_FEATURES: u64 =
    F_CSUM | F_GUEST_CSUM | F_GUEST_TSO4 | F_GUEST_TSO6 | F_HOST_TSO4 | F_HOST_TSO6;

/// virtio_net_hdr flags and gso_type values.
const HDR_F_NEEDS_CSUM: u8 = 1;
const HDR_F_DATA_VALID: u8 = 2;
const HDR_GSO_NONE: u8 = 0;
const HDR_GSO_TCPV4: u8 = 1;
const HDR_GSO_TCPV6: u8 = 4;
const HDR_GSO_ECN: u8 = 0x80;

/// TUNSETOFFLOAD flags (linux/if_tun.h).
const TUN_F_CSUM: u32 = 0x01;
const TUN_F_TSO4: u32 = 0x02;
const TUN_F_TSO6: u32 = 0x04;

/// Whether a header (flags, gso_type) asks only for work that the
/// features `csum` (checksum) and `tso4`/`tso6` (segmentation) allow.
fn header_allowed(flags: u8, gso_type: u8, csum: bool, tso4: bool, tso6: bool) -> bool {
    if flags & HDR_F_NEEDS_CSUM != 0 && !csum {
        return false;
    }
    match gso_type & !HDR_GSO_ECN {
        // ECN without segmentation means nothing.
        HDR_GSO_NONE => gso_type & HDR_GSO_ECN == 0,
        // (ECN-marked segments were not negotiated either.)
        HDR_GSO_TCPV4 => tso4 && gso_type & HDR_GSO_ECN == 0,
        HDR_GSO_TCPV6 => tso6 && gso_type & HDR_GSO_ECN == 0,
        _ => false,
    }
}

/// The largest frame the driver may send, with its header (virtio 1.2,
/// 5.1.6.2: 65562 bytes, a 65535-byte IP packet with headers and the
/// virtio header).
pub const MAX_FRAME: usize = 65562;
/// The largest frame taken from the backend, with its header (room for a
/// VLAN tag more).
pub const MAX_RX_FRAME: usize = MAX_FRAME + 4;

pub const RX: usize = 0;
pub const TX: usize = 1;
const QUEUE_SIZES: &[u16] = &[256, 256];
/// Frames moved per call before the worker looks at its other events.
const FRAMES_PER_CALL: usize = 256;
const BACKEND: u64 = BACKEND_TOKEN;
/// The rate limiters' epoll tokens (each gate takes two).
const RX_GATE: u64 = BACKEND_TOKEN + 0x10;
const TX_GATE: u64 = BACKEND_TOKEN + 0x20;

/// A source and sink of Ethernet frames, each preceded by a 12-byte
/// `virtio_net_hdr_v1`. Nonblocking: `recv` returns WouldBlock when no
/// frame is waiting; its fd is readable when one is.
pub trait Backend: AsRawFd + Send {
    /// Reads one frame (header included) into `buf`; its length.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize>;
    /// Writes one frame (header included).
    fn send(&mut self, frame: &[u8]) -> io::Result<usize>;
    /// Which offloads (TUN_F_*) frames from `recv` may use.
    fn set_offload(&mut self, _flags: u32) -> io::Result<()> {
        Ok(())
    }
}

/// Traffic and errors, as counted by the device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetCounters {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    /// Frames from the backend that were not delivered (too large for the
    /// driver's buffers, offload work left, bad chains).
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames from the driver that were not sent (malformed, too large, or
    /// refused by the backend).
    pub tx_dropped: u64,
    /// Chains the driver made that the device cannot use (receive chains
    /// with device-readable buffers or no room for a header, transmit
    /// chains shorter than a header or asking for offloads not negotiated).
    pub bad_chains: u64,
    /// Reads from the backend that failed (not for want of frames).
    pub backend_errors: u64,
    /// Frames from the driver taken by the MMDS stack (never sent to the
    /// backend).
    pub mmds_frames: u64,
}

#[derive(Default)]
struct Counters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    rx_dropped: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    tx_dropped: AtomicU64,
    bad_chains: AtomicU64,
    backend_errors: AtomicU64,
    mmds_frames: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> NetCounters {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        NetCounters {
            rx_packets: get(&self.rx_packets),
            rx_bytes: get(&self.rx_bytes),
            rx_dropped: get(&self.rx_dropped),
            tx_packets: get(&self.tx_packets),
            tx_bytes: get(&self.tx_bytes),
            tx_dropped: get(&self.tx_dropped),
            bad_chains: get(&self.bad_chains),
            backend_errors: get(&self.backend_errors),
            mmds_frames: get(&self.mmds_frames),
        }
    }
}

/// Reads a network device's counters from another thread.
#[derive(Clone)]
pub struct NetStatsHandle(Arc<Counters>);

impl NetStatsHandle {
    pub fn snapshot(&self) -> NetCounters {
        self.0.snapshot()
    }
}

fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

/// Where a received frame went.
enum Placed {
    /// Into the guest's buffers, or dropped: either way it is done.
    Done,
    /// The driver has not made enough buffers available: wait for it.
    NoBuffers,
}

/// A frame in `rx_frame` not delivered yet.
#[derive(Clone, Copy)]
struct Pending {
    len: usize,
    /// It took its tokens from the receive rate limiter.
    paid: bool,
}

/// The network device's work on its thread.
struct Serve {
    mem: GuestMemoryMmap,
    rx: Queue,
    tx: Queue,
    interrupt: Arc<dyn Interrupt>,
    backend: Box<dyn Backend>,
    counters: Arc<Counters>,
    mrg_rxbuf: bool,
    /// The features the driver accepted.
    acked: u64,
    /// The backend's fd is in the worker's epoll set.
    rx_polling: bool,
    /// A frame read from the backend that waits for receive buffers or
    /// for the receive rate limiter.
    pending: Option<Pending>,
    /// The rate limiters: frames from the backend, frames to it.
    rx_gate: Gate,
    tx_gate: Gate,
    /// The frame being received (header included).
    rx_frame: Vec<u8>,
    /// The frame being sent.
    tx_frame: Vec<u8>,
    log_limit: RateLimiter,
    /// The MMDS stack, when the guest may reach the MMDS here.
    mmds: Option<MmdsHook>,
}

impl WorkerHandler for Serve {
    fn park(&mut self) -> Option<Vec<crate::pause::QueuePosition>> {
        use crate::worker::position;
        Some(vec![position(&self.rx), position(&self.tx)])
    }

    fn unparked(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        if self.rx_polling {
            // The descriptor may name another file than the one in the
            // epoll set (a TAP taken back): register what it names now.
            let fd = self.backend.as_raw_fd();
            let _ = ctl.remove(fd);
            ctl.add(fd, BACKEND, EventSet::IN)
                .map_err(DeviceError::Io)?;
        }
        Ok(())
    }

    fn start(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        ctl.add(self.backend.as_raw_fd(), BACKEND, EventSet::IN)
            .map_err(DeviceError::Io)?;
        self.rx_polling = true;
        self.rx_gate.register(ctl).map_err(DeviceError::Io)?;
        self.tx_gate.register(ctl).map_err(DeviceError::Io)
    }

    fn queue_event(&mut self, ctl: &WorkerCtl, queue: usize) -> Result<(), DeviceError> {
        match queue {
            // New receive buffers.
            RX => self.resume(ctl),
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
        if token == BACKEND {
            self.receive(ctl)
        } else if self.rx_gate.event(token) {
            self.resume(ctl)
        } else if self.tx_gate.event(token) {
            self.transmit(ctl)
        } else {
            Ok(())
        }
    }
}

impl Serve {
    fn warn(&self, what: &str) {
        if self.log_limit.allow() {
            tracing::warn!(what, "virtio-net: guest error");
        }
    }

    /// Sends every frame the driver queued.
    fn transmit(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        if self.tx_gate.blocked() {
            // The gate's timer sends the rest when tokens are back.
            return Ok(());
        }
        let gate = &mut self.tx_gate;
        let mem = &self.mem;
        let counters = &self.counters;
        let backend = &mut self.backend;
        let frame = &mut self.tx_frame;
        let acked = self.acked;
        let log_limit = &self.log_limit;
        let mmds = &mut self.mmds;
        let served = serve_queue_gated(mem, &mut self.tx, TX, &*self.interrupt, |chain| {
            let input = chain.readable();
            let len = input.len();
            // Firecracker's costs: one op and the frame's bytes.
            if !gate.admit(len, 1) {
                return None;
            }
            if len < VNET_HDR_LEN as u64 || len > MAX_FRAME as u64 {
                if len < VNET_HDR_LEN as u64 {
                    bump(&counters.bad_chains, 1);
                }
                bump(&counters.tx_dropped, 1);
                if log_limit.allow() {
                    tracing::warn!(len, "virtio-net: transmit chain of a bad length dropped");
                }
                return Some(0);
            }
            frame.resize(len as usize, 0);
            if !input.read_at(mem, 0, frame) {
                bump(&counters.tx_dropped, 1);
                return Some(0);
            }
            if mmds.as_mut().is_some_and(|m| m.take_tx(frame)) {
                bump(&counters.mmds_frames, 1);
                return Some(0);
            }
            if acked & F_CSUM == 0 {
                // No transmit offloads: the frame is complete as it is.
                frame[..VNET_HDR_LEN].fill(0);
            } else if !header_allowed(
                frame[0],
                frame[1],
                true,
                acked & F_HOST_TSO4 != 0,
                acked & F_HOST_TSO6 != 0,
            ) {
                bump(&counters.tx_dropped, 1);
                bump(&counters.bad_chains, 1);
                if log_limit.allow() {
                    tracing::warn!(
                        gso_type = frame[1],
                        "virtio-net: transmit header asks for an offload not negotiated"
                    );
                }
                return Some(0);
            } else {
                // num_buffers means nothing on transmit.
                frame[10..12].fill(0);
            }
            match backend.send(frame) {
                Ok(_) => {
                    bump(&counters.tx_packets, 1);
                    bump(&counters.tx_bytes, len - VNET_HDR_LEN as u64);
                }
                Err(e) => {
                    bump(&counters.tx_dropped, 1);
                    if log_limit.allow() {
                        tracing::debug!(error = %e, "virtio-net: the backend refused a frame");
                    }
                }
            }
            Some(0)
        })?;
        if served == Served::More {
            ctl.rearm(TX);
        }
        self.deliver_mmds(ctl)
    }

    /// Puts the MMDS stack's frames into receive chains while there are
    /// both.
    fn deliver_mmds(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        let Some(mut hook) = self.mmds.take() else {
            return Ok(());
        };
        let mut used = false;
        let result = loop {
            let Some(len) = hook.next_rx() else {
                break Ok(());
            };
            // place() fills chains from rx_frame, which may hold a backend
            // frame waiting for buffers: lend it the MMDS frame instead.
            std::mem::swap(&mut self.rx_frame, &mut hook.frame);
            let placed = self.place(len, &mut used);
            std::mem::swap(&mut self.rx_frame, &mut hook.frame);
            match placed {
                Ok(Placed::Done) => {}
                Ok(Placed::NoBuffers) => {
                    hook.pending = Some(len);
                    break self.starve(ctl);
                }
                Err(e) => break Err(e),
            }
        };
        self.mmds = Some(hook);
        crate::chain::notify_used(&self.mem, &mut self.rx, RX, &*self.interrupt, used)?;
        result
    }

    /// Moves frames from the backend into the driver's receive buffers
    /// while there are both.
    fn receive(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        let mut used = false;
        let mut frames = 0;
        let result = loop {
            if frames == FRAMES_PER_CALL {
                // The backend stays readable (level-triggered): the worker
                // comes back after its other events.
                break Ok(());
            }
            let pending = match self.pending.take() {
                Some(pending) => pending,
                None => match self.backend.recv(&mut self.rx_frame) {
                    Ok(0) => {
                        // End of file (a socket backend whose peer left):
                        // readable forever, nothing to read.
                        bump(&self.counters.backend_errors, 1);
                        break self.stop_polling(ctl);
                    }
                    Ok(len) => Pending { len, paid: false },
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        // The TAP went away (its interface was deleted...):
                        // nothing the guest did. Stop waiting on it, or a
                        // descriptor that stays in error would spin the
                        // thread; a receive notification tries again.
                        bump(&self.counters.backend_errors, 1);
                        if self.log_limit.allow() {
                            tracing::warn!(error = %e, "virtio-net: cannot read the backend");
                        }
                        break self.stop_polling(ctl);
                    }
                },
            };
            // Firecracker's costs: one op and the frame's bytes. While the
            // limiter says no, the frame waits here and the backend is not
            // read: the next frames wait in the host's TAP queue.
            if !pending.paid && !self.rx_gate.admit(pending.len as u64, 1) {
                self.pending = Some(pending);
                break self.stop_polling(ctl);
            }
            let len = pending.len;
            frames += 1;
            match self.place(len, &mut used) {
                Ok(Placed::Done) => {}
                Ok(Placed::NoBuffers) => {
                    self.pending = Some(Pending { len, paid: true });
                    break self.starve(ctl);
                }
                Err(e) => break Err(e),
            }
        };
        crate::chain::notify_used(&self.mem, &mut self.rx, RX, &*self.interrupt, used)?;
        result
    }

    /// No receive buffers: ask the driver to notify when it adds some and
    /// stop reading the backend until then.
    fn starve(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        if crate::used::enable_notification(&mut self.rx, &self.mem)? {
            // Buffers arrived meanwhile: go on soon.
            ctl.rearm(RX);
            return Ok(());
        }
        self.stop_polling(ctl)
    }

    fn stop_polling(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        if self.rx_polling {
            ctl.remove(self.backend.as_raw_fd())
                .map_err(DeviceError::Io)?;
            self.rx_polling = false;
        }
        Ok(())
    }

    /// Puts the frame of `len` bytes in `rx_frame` into receive chains.
    fn place(&mut self, len: usize, used: &mut bool) -> Result<Placed, DeviceError> {
        if !(VNET_HDR_LEN..=MAX_RX_FRAME).contains(&len) {
            bump(&self.counters.rx_dropped, 1);
            return Ok(Placed::Done);
        }
        let guest_csum = self.acked & F_GUEST_CSUM != 0;
        if !header_allowed(
            self.rx_frame[0],
            self.rx_frame[1],
            guest_csum,
            self.acked & F_GUEST_TSO4 != 0,
            self.acked & F_GUEST_TSO6 != 0,
        ) {
            // Work the driver did not agree to do (the TAP was told).
            bump(&self.counters.rx_dropped, 1);
            return Ok(Placed::Done);
        }
        if !guest_csum {
            self.rx_frame[0] &= !HDR_F_DATA_VALID;
        }
        // Gather chains until the frame fits.
        let start = self.rx.next_avail();
        let max_chains = if self.mrg_rxbuf {
            usize::from(self.rx.size())
        } else {
            1
        };
        let mut chains: Vec<(Chain, u64)> = Vec::new();
        let mut room = 0u64;
        let mut bad = false;
        while room < len as u64 && chains.len() < max_chains {
            let next = self.rx.iter(&self.mem).map_err(DeviceError::Queue)?.next();
            let Some(desc_chain) = next else {
                // Not enough buffers yet: give back what was taken.
                self.rx.set_next_avail(start);
                return Ok(Placed::NoBuffers);
            };
            let chain = walk(&self.mem, desc_chain).map_err(DeviceError::Chain)?;
            let writable = chain.writable().len();
            if !chain.readable().is_empty() || writable < VNET_HDR_LEN as u64 {
                bad = true;
            }
            room += writable;
            chains.push((chain, writable));
            if bad {
                break;
            }
        }
        if bad {
            // A chain the device cannot write: hand back everything taken
            // (unwritten) and drop the frame.
            bump(&self.counters.bad_chains, 1);
            bump(&self.counters.rx_dropped, 1);
            self.warn("receive chain with device-readable buffers or no room for a header");
            for (chain, _) in &chains {
                crate::used::add_used(&mut self.rx, &self.mem, chain.head, 0)?;
            }
            *used = true;
            return Ok(Placed::Done);
        }
        if room < len as u64 {
            // Even the whole queue cannot hold it: drop the frame and leave
            // the buffers for the next ones.
            self.rx.set_next_avail(start);
            bump(&self.counters.rx_dropped, 1);
            return Ok(Placed::Done);
        }
        // num_buffers (the TAP leaves those two bytes alone).
        let count = chains.len() as u16;
        self.rx_frame[10..12].copy_from_slice(&count.to_le_bytes());
        let mut offset = 0usize;
        for (chain, writable) in &chains {
            let n = (len - offset).min(*writable as usize);
            let ok = chain
                .writable()
                .write_at(&self.mem, 0, &self.rx_frame[offset..offset + n]);
            if !ok {
                // walk() checked the buffers against RAM: unreachable but
                // not worth a panic.
                bump(&self.counters.rx_dropped, 1);
            }
            crate::used::add_used(&mut self.rx, &self.mem, chain.head, n as u32)?;
            offset += n;
        }
        *used = true;
        bump(&self.counters.rx_packets, 1);
        bump(&self.counters.rx_bytes, (len - VNET_HDR_LEN) as u64);
        Ok(Placed::Done)
    }

    /// The driver notified the receive queue: read the backend again.
    fn resume(&mut self, ctl: &WorkerCtl) -> Result<(), DeviceError> {
        if !self.rx_polling {
            ctl.add(self.backend.as_raw_fd(), BACKEND, EventSet::IN)
                .map_err(DeviceError::Io)?;
            self.rx_polling = true;
        }
        // Until the buffers run out again, the driver need not notify
        // (with EVENT_IDX the stale avail_event already says so).
        crate::used::disable_notification(&mut self.rx, &self.mem)?;
        self.deliver_mmds(ctl)?;
        self.receive(ctl)
    }
}

/// The TAP offload flags for the receive features the driver accepted:
/// the host kernel may leave a checksum (and segmentation) to the guest
/// only when its driver agreed to do it.
fn tun_offload(acked: u64) -> u32 {
    if acked & F_GUEST_CSUM == 0 {
        return 0;
    }
    let mut flags = TUN_F_CSUM;
    if acked & F_GUEST_TSO4 != 0 {
        flags |= TUN_F_TSO4;
    }
    if acked & F_GUEST_TSO6 != 0 {
        flags |= TUN_F_TSO6;
    }
    flags
}

/// The network device.
pub struct Net {
    mac: [u8; 6],
    offloads: bool,
    config: Vec<u8>,
    /// The backend while the device is not running (the worker has it
    /// otherwise).
    backend: Option<Box<dyn Backend>>,
    worker: Option<Worker<Serve>>,
    counters: Arc<Counters>,
    rx_throttle: ThrottleHandle,
    tx_throttle: ThrottleHandle,
    /// The MMDS stack while the device is not running.
    mmds: Option<MmdsHook>,
}

impl Net {
    /// A network device with address `mac` on `backend`, without
    /// offloads.
    pub fn new(backend: Box<dyn Backend>, mac: [u8; 6]) -> Net {
        Net::with_offloads(backend, mac, false)
    }

    /// A network device that offers checksum and TCP segmentation
    /// offloads ([`OFFLOAD_FEATURES`]) when `offloads`.
    pub fn with_offloads(backend: Box<dyn Backend>, mac: [u8; 6], offloads: bool) -> Net {
        let mut config = vec![0u8; 8];
        config[0..6].copy_from_slice(&mac);
        config[6..8].copy_from_slice(&S_LINK_UP.to_le_bytes());
        Net {
            mac,
            offloads,
            config,
            backend: Some(backend),
            worker: None,
            counters: Arc::default(),
            rx_throttle: ThrottleHandle::new(Limits::default()),
            tx_throttle: ThrottleHandle::new(Limits::default()),
            mmds: None,
        }
    }

    /// The device with the rate limiters `rx` (frames to the guest) and
    /// `tx` (frames from it); none by default.
    pub fn limited(mut self, rx: Limits, tx: Limits) -> Net {
        self.rx_throttle = ThrottleHandle::new(rx);
        self.tx_throttle = ThrottleHandle::new(tx);
        self
    }

    /// The receive rate limiter's handle (`rx_rate_limiter_throttled`).
    pub fn rx_throttle(&self) -> ThrottleHandle {
        self.rx_throttle.clone()
    }

    /// The transmit rate limiter's handle (`tx_rate_limiter_throttled`).
    pub fn tx_throttle(&self) -> ThrottleHandle {
        self.tx_throttle.clone()
    }

    /// Makes the MMDS reachable through this device: `stack` answers the
    /// frames for its address.
    pub fn set_mmds(&mut self, stack: mmds::Stack) {
        self.mmds = Some(MmdsHook::new(stack));
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn counters(&self) -> NetCounters {
        self.counters.snapshot()
    }

    /// A handle on the device's counters, readable while it runs.
    pub fn stats(&self) -> NetStatsHandle {
        NetStatsHandle(self.counters.clone())
    }
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        TYPE_NET
    }
    fn queue_max_sizes(&self) -> &[u16] {
        QUEUE_SIZES
    }
    fn features(&self) -> u64 {
        let base =
            F_VERSION_1 | F_RING_INDIRECT_DESC | F_RING_EVENT_IDX | F_MAC | F_STATUS | F_MRG_RXBUF;
        if self.offloads {
            base | OFFLOAD_FEATURES
        } else {
            base
        }
    }
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }
    fn activate(&mut self, activation: Activation) -> Result<(), DeviceError> {
        self.reset();
        let [rx, tx] = crate::ready_queues(activation.queues)?;
        let acked = activation.acked_features;
        let rx_gate = Gate::new(&self.rx_throttle, RX_GATE).map_err(DeviceError::Io)?;
        let tx_gate = Gate::new(&self.tx_throttle, TX_GATE).map_err(DeviceError::Io)?;
        let mut backend = self.backend.take().ok_or(DeviceError::NotActivated)?;
        if let Err(e) = backend.set_offload(tun_offload(acked)) {
            self.backend = Some(backend);
            return Err(DeviceError::Io(e));
        }
        let serve = Serve {
            mem: activation.mem,
            rx,
            tx,
            interrupt: activation.interrupt.clone(),
            backend,
            counters: self.counters.clone(),
            mrg_rxbuf: acked & F_MRG_RXBUF != 0,
            acked,
            rx_polling: false,
            pending: None,
            rx_gate,
            tx_gate,
            rx_frame: vec![0; MAX_RX_FRAME + 1],
            tx_frame: Vec::with_capacity(MAX_FRAME),
            log_limit: RateLimiter::default(),
            mmds: self.mmds.take(),
        };
        self.worker = Some(Worker::spawn(
            sandbox::ThreadKind::VirtioNet,
            activation.queue_events,
            activation.interrupt,
            serve,
        )?);
        Ok(())
    }
    fn reset(&mut self) {
        if let Some(worker) = self.worker.take() {
            match worker.stop() {
                Some(serve) => {
                    self.backend = Some(serve.backend);
                    self.mmds = serve.mmds;
                }
                None => tracing::error!("virtio-net: the worker thread panicked"),
            }
        }
    }
}

#[cfg(test)]
#[path = "net_tests.rs"]
mod tests;
