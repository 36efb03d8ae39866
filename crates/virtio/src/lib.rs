//! Virtio 1.x (modern) devices for Ferrovisor.
//!
//! A device model implements [`VirtioDevice`]: its type, the features it
//! offers, its configuration space, and what it does with its virtqueues
//! once the driver has set them up. A transport ([`mmio::MmioTransport`],
//! virtio-pci in crate `pci`, both on [`transport::TransportCore`]) owns
//! the register interface the guest sees: feature negotiation, the device
//! status state machine, queue configuration and notifications, and
//! interrupts; it hands the device its queues on DRIVER_OK ([`Activation`]).
//!
//! I/O runs off the vCPU threads. Every queue has an eventfd that a
//! notification from the driver writes: the transport writes it when the
//! guest's QueueNotify access reaches it, or the accelerator does without
//! leaving the guest (KVM's ioeventfd, the same in emu) when the transport's
//! [`QueueNotifier`]s were registered with the VM. An activated device runs
//! its own thread ([`worker`]) that waits on those eventfds and on its
//! backend (TAP, sockets...), serves the queues and interrupts the driver
//! through [`Interrupt`], which the transport turns into a line level on the
//! irqchip or an MSI.
//!
//! Split virtqueues come from the `virtio-queue` crate; descriptor chains
//! are walked and checked against guest RAM here ([`chain`]) so that a
//! hostile driver (loops, addresses outside RAM, overflowing lengths) gets a
//! device error (DEVICE_NEEDS_RESET), never a VMM panic.
#![deny(unsafe_code)]

pub mod blk;
pub mod blk_image;
pub mod chain;
pub mod console;
pub mod fuzzing;
pub mod mmio;
pub mod net;
mod net_mmds;
pub mod pause;
pub mod rng;
pub mod tap;
pub mod throttle;
pub mod transport;
pub mod used;
pub mod vsock;
pub mod worker;

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

/// Device IDs (virtio 1.2, 5).
pub const TYPE_NET: u32 = 1;
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_CONSOLE: u32 = 3;
pub const TYPE_RNG: u32 = 4;
pub const TYPE_VSOCK: u32 = 19;

/// Device-independent feature bits (virtio 1.2, 6).
pub const F_RING_INDIRECT_DESC: u64 = 1 << 28;
pub const F_RING_EVENT_IDX: u64 = 1 << 29;
pub const F_VERSION_1: u64 = 1 << 32;

/// Device status bits (virtio 1.2, 2.1).
pub mod status {
    pub const ACKNOWLEDGE: u32 = 1;
    pub const DRIVER: u32 = 2;
    pub const DRIVER_OK: u32 = 4;
    pub const FEATURES_OK: u32 = 8;
    pub const DEVICE_NEEDS_RESET: u32 = 0x40;
    pub const FAILED: u32 = 0x80;
}

/// How a device notifies its driver; implemented by the transport. Called
/// from the device's worker thread.
pub trait Interrupt: Send + Sync {
    /// A used-buffer notification for queue `queue` (virtio-mmio: the
    /// InterruptStatus bit 0 and the line; virtio-pci: the queue's MSI-X
    /// vector).
    fn signal_used(&self, queue: usize);
    /// A configuration-change notification.
    fn signal_config(&self);
    /// The device met an error it cannot continue from (a bad descriptor
    /// chain, ...): the transport sets DEVICE_NEEDS_RESET and, once the
    /// driver is running, signals a configuration change.
    fn needs_reset(&self);
    /// Where the device's writes to guest buffers are reported (the
    /// worker installs it for [`chain::Segments::write_at`]).
    fn guest_write_hook(&self) -> Option<GuestWriteHook> {
        None
    }
    /// The gate that parks the device's worker while the VM is paused
    /// ([`pause`]); the worker waits on it beside its queues.
    fn pause_gate(&self) -> Option<Arc<pause::PauseGate>> {
        None
    }
}

/// Told of every device write to guest RAM (guest address, length), so
/// that an accelerator caching decoded guest code (emu) drops what the
/// device overwrote: `hv::Vm::note_guest_write`.
pub type GuestWriteHook = Arc<dyn Fn(u64, u64) + Send + Sync>;

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemoryMmap,
    /// One per queue of [`VirtioDevice::queue_max_sizes`], configured by the
    /// driver (a queue the driver did not enable is not ready).
    pub queues: Vec<Queue>,
    /// One per queue: readable (nonblocking) when the driver notified it.
    pub queue_events: Vec<EventFd>,
    pub interrupt: Arc<dyn Interrupt>,
    /// The features the driver accepted.
    pub acked_features: u64,
    /// The device is restored from a snapshot: the queues go on from
    /// where they were, and the device's backend is new (a device whose
    /// host connections could not be saved tells its driver, vsock).
    pub restored: bool,
}

/// The first `N` queues of an activation, each of which the driver must
/// have made ready (`NoQueue(i)` names the first that is not).
pub fn ready_queues<const N: usize>(queues: Vec<Queue>) -> Result<[Queue; N], DeviceError> {
    let mut queues = queues.into_iter();
    let mut taken = Vec::with_capacity(N);
    for i in 0..N {
        let queue = queues
            .next()
            .filter(virtio_queue::QueueT::ready)
            .ok_or(DeviceError::NoQueue(i))?;
        taken.push(queue);
    }
    taken.try_into().map_err(|_| DeviceError::NoQueue(N))
}

/// A guest write that notifies a queue: a write of `datamatch` (4 bytes)
/// to `addr` (or any write there when `datamatch` is None) writes `event`.
/// The machine registers these with the VM as ioeventfds.
pub struct QueueNotifier {
    /// The guest-physical MMIO address (or port, with `pio`).
    pub addr: u64,
    pub pio: bool,
    pub datamatch: Option<u32>,
    pub event: EventFd,
}

/// A device error: the transport sets DEVICE_NEEDS_RESET and signals a
/// configuration change.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error("queue {0} does not exist or is not ready")]
    NoQueue(usize),
    #[error("the device was not activated")]
    NotActivated,
    #[error("virtqueue error")]
    Queue(#[source] virtio_queue::Error),
    #[error("bad descriptor chain")]
    Chain(#[source] chain::ChainError),
    #[error("host I/O error")]
    Io(#[source] std::io::Error),
    #[error("malformed request: {0}")]
    Request(String),
}

/// A virtio device model, independent of the transport.
pub trait VirtioDevice: Send {
    /// The device ID (2 = block, 4 = entropy, ...).
    fn device_type(&self) -> u32;
    /// The maximum size of each queue (powers of two, at most 32768).
    fn queue_max_sizes(&self) -> &[u16];
    /// The features the device offers (VIRTIO_F_VERSION_1 included).
    fn features(&self) -> u64;
    /// Reads the device configuration space; bytes past its end read 0.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes the device configuration space (ignored by default).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver set DRIVER_OK: start serving the queues (on the device's
    /// own thread, see [`worker`]). An error sets DEVICE_NEEDS_RESET.
    fn activate(&mut self, activation: Activation) -> Result<(), DeviceError>;
    /// The driver reset the device: stop serving (the worker thread has
    /// ended when this returns) and drop the queues and memory.
    fn reset(&mut self);
}

/// Copies `src` (a configuration space) at `offset` into `data`; bytes
/// outside it read as 0.
pub fn read_config_bytes(src: &[u8], offset: u64, data: &mut [u8]) {
    for (i, byte) in data.iter_mut().enumerate() {
        *byte = usize::try_from(offset)
            .ok()
            .and_then(|o| o.checked_add(i))
            .and_then(|o| src.get(o))
            .copied()
            .unwrap_or(0);
    }
}

/// An error and its causes on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod test_driver;
#[cfg(test)]
mod tests;
