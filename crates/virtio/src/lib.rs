//! Virtio 1.x (modern) devices for Ferrovisor.
//!
//! A device model implements [`VirtioDevice`]: its type, the features it
//! offers, its configuration space, and what it does with its virtqueues
//! once the driver has set them up. A transport ([`mmio::MmioTransport`])
//! owns the register interface the guest sees: feature negotiation, the
//! device status state machine, queue configuration and notifications, and
//! the interrupt status; it hands the device its queues on DRIVER_OK.
//!
//! Split virtqueues come from the `virtio-queue` crate; descriptor chains
//! are walked and checked against guest RAM here ([`chain`]) so that a
//! hostile driver (loops, addresses outside RAM, overflowing lengths) gets a
//! device error (DEVICE_NEEDS_RESET), never a VMM panic.
//!
//! Known limit of this first step: queues are processed on the vCPU thread,
//! inside the guest's QueueNotify write; an event loop comes later.
#![forbid(unsafe_code)]

pub mod blk;
pub mod chain;
pub mod mmio;
pub mod rng;

use std::sync::Arc;

use virtio_queue::Queue;
use vm_memory::GuestMemoryMmap;

/// Device IDs (virtio 1.2, 5).
pub const TYPE_BLOCK: u32 = 2;
pub const TYPE_RNG: u32 = 4;

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

/// Why an interrupt is raised: the InterruptStatus bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptKind {
    /// A used buffer notification (bit 0).
    UsedRing = 1,
    /// A configuration change notification (bit 1).
    ConfigChange = 2,
}

/// How a device notifies the driver; implemented by the transport.
pub trait Interrupt: Send + Sync {
    fn signal(&self, kind: InterruptKind);
}

/// What a device gets when the driver sets DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemoryMmap,
    /// One per queue of [`VirtioDevice::queue_max_sizes`], configured by the
    /// driver (a queue the driver did not enable is not ready).
    pub queues: Vec<Queue>,
    pub interrupt: Arc<dyn Interrupt>,
    /// The features the driver accepted.
    pub acked_features: u64,
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
    /// The driver set DRIVER_OK: start serving the queues.
    fn activate(&mut self, activation: Activation) -> Result<(), DeviceError>;
    /// The driver notified queue `queue` (processing happens here for now).
    fn queue_notify(&mut self, queue: usize) -> Result<(), DeviceError>;
    /// The driver reset the device: drop the queues and memory.
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
mod tests;
