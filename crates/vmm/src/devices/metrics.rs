//! What the devices counted, read while they run: a [`DeviceMetrics`]
//! snapshot of each device's own counters (the block, network and entropy
//! models, their rate limiters, the socket device, the UART, the
//! i8042). The front ends turn it into
//! their metrics format; they never reach into the devices.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ::virtio::blk::{BlockCounters, BlockHandle};
use ::virtio::net::{NetCounters, NetStatsHandle};
use ::virtio::rng::{RngCounters, RngStatsHandle};
use ::virtio::throttle::ThrottleHandle;
use ::virtio::vsock::VsockCounters;
use devices::i8042::{I8042Counters, I8042Stats};
use devices::serial::{SerialCounters, SerialStats};

/// A drive's counters, since the machine was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DriveMetrics {
    pub requests: BlockCounters,
    /// Requests that waited for the rate limiter's tokens.
    pub throttled: u64,
}

/// A network device's counters, since the machine was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NetMetrics {
    pub traffic: NetCounters,
    pub rx_throttled: u64,
    pub tx_throttled: u64,
}

/// The entropy device's counters, since the machine was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntropyMetrics {
    pub requests: RngCounters,
    pub throttled: u64,
}

/// The socket device's counters, since the machine was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VsockMetrics {
    /// Connections established, either way.
    pub connections: u64,
}

/// One reading of every device's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMetrics {
    /// In `config.disks` order.
    pub drives: Vec<DriveMetrics>,
    /// In `config.nets` order.
    pub nets: Vec<NetMetrics>,
    pub entropy: Option<EntropyMetrics>,
    pub vsock: Option<VsockMetrics>,
    pub uart: SerialCounters,
    pub i8042: I8042Counters,
}

/// Handles on the devices' counters (cheap to clone, readable from any
/// thread).
#[derive(Clone)]
pub(crate) struct MetricsSource {
    pub drives: Vec<(BlockHandle, ThrottleHandle)>,
    pub nets: Vec<(NetStatsHandle, ThrottleHandle, ThrottleHandle)>,
    pub entropy: Option<(RngStatsHandle, ThrottleHandle)>,
    pub vsock: Option<Arc<VsockCounters>>,
    pub uart: Arc<SerialStats>,
    pub i8042: Arc<I8042Stats>,
}

impl MetricsSource {
    pub fn read(&self) -> DeviceMetrics {
        DeviceMetrics {
            drives: self
                .drives
                .iter()
                .map(|(disk, limit)| DriveMetrics {
                    requests: disk.counters(),
                    throttled: limit.throttled(),
                })
                .collect(),
            nets: self
                .nets
                .iter()
                .map(|(net, rx, tx)| NetMetrics {
                    traffic: net.snapshot(),
                    rx_throttled: rx.throttled(),
                    tx_throttled: tx.throttled(),
                })
                .collect(),
            entropy: self.entropy.as_ref().map(|(rng, limit)| EntropyMetrics {
                requests: rng.snapshot(),
                throttled: limit.throttled(),
            }),
            vsock: self.vsock.as_ref().map(|v| VsockMetrics {
                connections: v.connections.load(Ordering::Relaxed),
            }),
            uart: self.uart.snapshot(),
            i8042: self.i8042.snapshot(),
        }
    }
}
