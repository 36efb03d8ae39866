//! The statistics of a running machine, readable from any thread while it
//! runs: each vCPU's exit counts by reason (the accelerators' lock-free
//! counters, shared) and the unhandled guest accesses. `--stats`, the
//! metrics and `ferrovisor stat` (through `GET /ferrovisor/stats`) read
//! them. The unhandled-access counts are read through a weak reference:
//! a handle kept after the machine ended (the API's controller keeps one)
//! must not keep its buses, and so its devices, alive — the vsock device
//! removes its socket file only when dropped. They read 0 once the machine
//! is gone.

use std::sync::{Arc, Weak};

use devices::IoBuses;
use hv::{ExitStats, ExitStatsSource};

use crate::devices::{DeviceMetrics, MetricsSource};

/// A cheap handle on a machine's live counters.
#[derive(Clone)]
pub struct LiveStats {
    accel: &'static str,
    vcpus: Vec<Arc<dyn ExitStatsSource>>,
    buses: Weak<IoBuses>,
    devices: MetricsSource,
}

/// One reading of [`LiveStats`].
#[derive(Debug, Clone)]
pub struct StatsSample {
    pub accel: &'static str,
    /// Exit counts of each vCPU, by vCPU id.
    pub vcpus: Vec<ExitStats>,
    /// The accelerator's own counters of each vCPU, by vCPU id (see
    /// [`ExitStatsSource::accel_counters`]; empty where it has none).
    pub accel_counters: Vec<Vec<(&'static str, u64)>>,
    pub unhandled_pio: u64,
    pub unhandled_mmio: u64,
    /// Guest port (reads, writes) and MMIO (reads, writes) the VMM
    /// served, mapped or not.
    pub pio_accesses: (u64, u64),
    pub mmio_accesses: (u64, u64),
}

impl LiveStats {
    pub(crate) fn new(
        accel: &'static str,
        vcpus: Vec<Arc<dyn ExitStatsSource>>,
        buses: Arc<IoBuses>,
        devices: MetricsSource,
    ) -> LiveStats {
        LiveStats {
            accel,
            vcpus,
            buses: Arc::downgrade(&buses),
            devices,
        }
    }

    /// Every device's counters now (see [`crate::devices::DeviceManager::metrics`]).
    pub fn devices(&self) -> DeviceMetrics {
        self.devices.read()
    }

    /// Reads every counter now.
    pub fn sample(&self) -> StatsSample {
        let buses = self.buses.upgrade();
        StatsSample {
            accel: self.accel,
            vcpus: self.vcpus.iter().map(|v| v.exit_stats()).collect(),
            accel_counters: self.vcpus.iter().map(|v| v.accel_counters()).collect(),
            unhandled_pio: buses.as_ref().map_or(0, |b| b.pio.unhandled_count()),
            unhandled_mmio: buses.as_ref().map_or(0, |b| b.mmio.unhandled_count()),
            pio_accesses: buses
                .as_ref()
                .map_or_else(Default::default, |b| b.pio.access_counts()),
            mmio_accesses: buses
                .as_ref()
                .map_or_else(Default::default, |b| b.mmio.access_counts()),
        }
    }
}

impl std::fmt::Debug for LiveStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStats")
            .field("accel", &self.accel)
            .field("vcpus", &self.vcpus.len())
            .finish()
    }
}
