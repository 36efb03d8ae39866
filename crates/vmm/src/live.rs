//! The statistics of a running machine, readable from any thread while it
//! runs: each vCPU's exit counts by reason (the accelerators' lock-free
//! counters, shared) and the unhandled guest accesses. `--stats`, the
//! metrics and `ferrovisor stat` (through `GET /ferrovisor/stats`) read
//! them. The bus counts are read through [`devices::BusCounters`]: a
//! handle kept after the machine ended (the API's controller keeps one,
//! and writes the last metrics line with it) must not keep its buses, and
//! so its devices, alive — the vsock device removes its socket file only
//! when dropped — yet reads the final counts.

use std::sync::Arc;

use devices::{BusCounters, IoBuses};
use hv::{ExitStats, ExitStatsSource};

use crate::devices::{DeviceMetrics, MetricsSource};

/// A cheap handle on a machine's live counters.
#[derive(Clone)]
pub struct LiveStats {
    accel: &'static str,
    vcpus: Vec<Arc<dyn ExitStatsSource>>,
    pio: BusCounters,
    mmio: BusCounters,
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
            pio: buses.pio.counters(),
            mmio: buses.mmio.counters(),
            devices,
        }
    }

    /// Every device's counters now (see [`crate::devices::DeviceManager::metrics`]).
    pub fn devices(&self) -> DeviceMetrics {
        self.devices.read()
    }

    /// Reads every counter now.
    pub fn sample(&self) -> StatsSample {
        StatsSample {
            accel: self.accel,
            vcpus: self.vcpus.iter().map(|v| v.exit_stats()).collect(),
            accel_counters: self.vcpus.iter().map(|v| v.accel_counters()).collect(),
            unhandled_pio: self.pio.unhandled_count(),
            unhandled_mmio: self.mmio.unhandled_count(),
            pio_accesses: self.pio.access_counts(),
            mmio_accesses: self.mmio.access_counts(),
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
