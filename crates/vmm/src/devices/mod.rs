//! The device manager: every device of a machine (the platform devices on
//! the port bus, the virtio devices on virtio-mmio or PCI) with one
//! lifecycle.
//!
//! - **build** ([`DeviceManager::build`]) from the [`MachineConfig`]: the
//!   platform ([`platform`]), the virtio models ([`virtio`]) placed in
//!   virtio-mmio windows or on a PCI bus ([`pci`]); the ACPI tables that
//!   describe them are written by [`acpi`] before (the layout is known
//!   from the config alone);
//! - **activate** ([`DeviceManager::activate`]): the platform timer
//!   starts; each virtio device starts its worker when its driver sets
//!   DRIVER_OK;
//! - **pause / resume**: every virtio worker parks between two requests
//!   and the timed devices' clock stops;
//! - **update**: a drive's backing file ([`DeviceManager::update_drive`]),
//!   the drives' and network devices' rate limiters
//!   ([`DeviceManager::update_limits`]), by their index in the config;
//! - **metrics** ([`DeviceManager::metrics_source`]): a snapshot of every
//!   device's own counters ([`metrics`]), also readable from other
//!   threads through [`crate::LiveStats`];
//! - **save / restore** ([`DeviceManager::save`]) beside pause: a paused
//!   machine's devices do not change ([`state`]): COM1, the i8042, the
//!   RTC, and every virtio device with its transport (virtio-mmio
//!   registers, or the PCI configuration space, BARs and MSI-X table) and
//!   its queues, and the VM generation ID ([`vmgenid`]). A restored
//!   machine's virtio workers start parked and go on when the machine
//!   first runs.
//!
//! Modules depend in one direction: `mod` → `platform`, `virtio`, `pci`,
//! `acpi` → `state`, `irq`, `clock`.

mod acpi;
mod clock;
mod irq;
mod metrics;
mod pci;
mod platform;
mod state;
mod virtio;
mod vmgenid;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use ::virtio::pause::PauseGate;
use ::virtio::throttle::ThrottleHandle;
use devices::i8042::{I8042Error, I8042};
use devices::serial::Serial;
use devices::{IoBuses, RequestSink};
use hv::Vm;
use vm_memory::GuestMemoryMmap;

use crate::config::{MachineConfig, VirtioTransport};
use crate::console::{ConsoleOut, DRAIN_TIMEOUT};
use crate::controller::LimitTarget;
use crate::platform_timer::PlatformTimer;
use crate::MachineError;

pub use acpi::AcpiPlacement;
pub(crate) use acpi::{virtio_acpi_devices, write_acpi_tables};
pub(crate) use metrics::MetricsSource;
pub use metrics::{DeviceMetrics, DriveMetrics, EntropyMetrics, NetMetrics, VsockMetrics};
pub use state::{DeviceStateError, DeviceStates, TransportSaved, VirtioSaved};
pub use vmgenid::{id_hex, GenerationId, VmGenIdError, VmGenIdState, VMGENID_ADDR, VMGENID_GSI};

/// Why a drive could not be updated.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("the machine has no drive {0}")]
    NoDrive(usize),
    #[error("the machine has no network device {0}")]
    NoNet(usize),
    #[error(transparent)]
    Open(#[from] ::virtio::blk::BlockError),
    #[error("cannot hand {what} over")]
    Handover {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Every device of a machine.
pub(crate) struct DeviceManager {
    pub buses: Arc<IoBuses>,
    pub serial: Arc<Mutex<Serial>>,
    i8042: Arc<Mutex<I8042>>,
    rtc: Arc<Mutex<devices::rtc::Rtc>>,
    timer: PlatformTimer,
    clock: Arc<clock::PausableClock>,
    /// One per virtio device, in the guest's order.
    gates: Vec<Arc<PauseGate>>,
    /// The virtio devices on their transports, in the guest's order.
    virtio: Vec<state::Placed>,
    /// The PCI bus of `--transport pci`.
    pci_bus: Option<Arc<::pci::PciBus>>,
    /// The workers were parked by a restore until the machine first runs.
    parked_by_restore: AtomicBool,
    /// The disks' images, in `config.disks` order (for errors).
    disk_paths: Vec<std::path::PathBuf>,
    /// The disks, in `config.disks` order.
    drives: Vec<::virtio::blk::BlockHandle>,
    /// The network devices' TAP interfaces (for a live migration's
    /// handover).
    taps: Vec<::virtio::tap::TapHandle>,
    /// The disks' rate limiters, in `config.disks` order.
    drive_limits: Vec<ThrottleHandle>,
    /// The network devices' rate limiters, in `config.nets` order.
    net_limits: Vec<virtio::NetLimits>,
    /// Handles on every device's counters.
    metrics: MetricsSource,
    /// The input of the virtio console, when the console is one.
    pub virtio_console: Option<::virtio::console::ConsoleInput>,
    /// The guest's console output on its way to the host.
    console: ConsoleOut,
    /// The VM generation ID (machines with ACPI tables).
    vmgenid: Option<vmgenid::VmGenId>,
}

impl DeviceManager {
    /// Builds the devices of `config` for `vm`; guest requests (power off,
    /// reset, debug exit) go to `requests`.
    pub fn build(
        vm: &Arc<dyn Vm>,
        mem: &GuestMemoryMmap,
        config: &MachineConfig,
        requests: RequestSink,
        accel: &str,
    ) -> Result<DeviceManager, MachineError> {
        let mut buses = IoBuses::default();
        let console = ConsoleOut::open(&config.console).map_err(MachineError::Thread)?;
        let platform = platform::build(vm, config, requests, console.writer(), &mut buses)?;
        let models = virtio::open_models(config, &console)?;
        let (placed, pci_bus) = match config.transport {
            VirtioTransport::Pci => {
                // irqfds spare KVM an ioctl per MSI; emu's are one more
                // thread hop.
                let (placed, bus) = pci::place_on_pci(
                    &mut buses,
                    vm,
                    mem,
                    models.models,
                    accel == "kvm",
                    platform.reset_control.clone(),
                )?;
                (placed, Some(bus))
            }
            VirtioTransport::Mmio => {
                let placed = virtio::place_on_mmio(&mut buses, vm, mem, config, models.models)?;
                pci::host_bridge_only(&mut buses, platform.reset_control.clone())?;
                (placed, None)
            }
        };
        let gates = placed.iter().filter_map(|p| p.gate.clone()).collect();
        let metrics = MetricsSource {
            drives: models
                .drives
                .iter()
                .cloned()
                .zip(models.drive_limits.iter().cloned())
                .collect(),
            nets: models
                .net_stats
                .iter()
                .cloned()
                .zip(&models.net_limits)
                .map(|(stats, limits)| (stats, limits.rx.clone(), limits.tx.clone()))
                .collect(),
            entropy: models.entropy.clone(),
            vsock: models.vsock.clone(),
            uart: lock(&platform.serial).stats(),
            i8042: lock(&platform.i8042).stats(),
        };
        Ok(DeviceManager {
            buses: Arc::new(buses),
            serial: platform.serial,
            i8042: platform.i8042,
            rtc: platform.rtc,
            timer: platform.timer,
            clock: platform.clock,
            gates,
            virtio: placed,
            pci_bus,
            parked_by_restore: AtomicBool::new(false),
            disk_paths: config.disks.iter().map(|d| d.path.clone()).collect(),
            drives: models.drives,
            taps: models.taps,
            drive_limits: models.drive_limits,
            net_limits: models.net_limits,
            metrics,
            virtio_console: models.console_input,
            console,
            vmgenid: None,
        })
    }

    /// The machine starts: the timed devices begin to be polled, and
    /// unless it starts `paused` the workers a restore parked go on.
    pub fn activate(&mut self, paused: bool) -> std::io::Result<()> {
        if !paused && self.parked_by_restore.swap(false, Ordering::SeqCst) {
            for gate in &self.gates {
                gate.resume();
            }
        }
        self.timer.start()
    }

    /// Parks every virtio worker (requests being served complete first)
    /// and stops the timed devices' clock. Returns how many workers did
    /// not park in time (they park when their request completes).
    pub fn pause(&self) -> usize {
        self.clock.pause();
        self.gates.iter().filter(|g| !g.pause()).count()
    }

    /// Undoes [`DeviceManager::pause`].
    pub fn resume(&self) {
        self.parked_by_restore.store(false, Ordering::SeqCst);
        self.clock.resume();
        for gate in &self.gates {
            gate.resume();
        }
        self.timer.kick();
    }

    /// The state of every device of a paused machine (its workers parked
    /// between two requests: none is in flight).
    pub fn save(&self) -> Result<DeviceStates, DeviceStateError> {
        Ok(DeviceStates {
            serial: lock(&self.serial).save(),
            i8042: lock(&self.i8042).save(),
            rtc: lock(&self.rtc).save(),
            virtio: self
                .virtio
                .iter()
                .map(state::Placed::save)
                .collect::<Result<_, _>>()?,
            disk_sizes: self.drives.iter().map(|d| d.size()).collect(),
            vmgenid: self.vmgenid.as_ref().map(vmgenid::VmGenId::save),
        })
    }

    /// Adds the VM generation ID device with a new random ID (the ACPI
    /// tables describe it at [`VMGENID_ADDR`], GSI [`VMGENID_GSI`]).
    pub fn attach_vmgenid(
        &mut self,
        vm: &Arc<dyn Vm>,
        mem: &GuestMemoryMmap,
    ) -> Result<(), VmGenIdError> {
        self.vmgenid = Some(vmgenid::VmGenId::create(
            vm,
            mem,
            VMGENID_ADDR,
            VMGENID_GSI,
        )?);
        Ok(())
    }

    /// Gives the guest a new generation ID and tells it (a clone); `None`
    /// when the machine has no such device.
    pub fn regenerate_vmgenid(&mut self) -> Option<Result<GenerationId, VmGenIdError>> {
        self.vmgenid.as_mut().map(vmgenid::VmGenId::regenerate)
    }

    /// Puts the devices of a machine built from the same config, not
    /// started yet, in the state `states` describes. Everything is checked
    /// before anything changes; the virtio workers start parked (see
    /// [`DeviceManager::activate`]).
    pub fn restore(
        &mut self,
        vm: &Arc<dyn Vm>,
        mem: &GuestMemoryMmap,
        states: &DeviceStates,
    ) -> Result<(), DeviceStateError> {
        self.check_restore(states)?;
        self.vmgenid = states
            .vmgenid
            .as_ref()
            .map(|saved| vmgenid::VmGenId::restore(vm, mem, saved))
            .transpose()
            .map_err(DeviceStateError::VmGenId)?;
        for gate in &self.gates {
            gate.pause();
        }
        self.parked_by_restore.store(true, Ordering::SeqCst);
        for (placed, saved) in self.virtio.iter().zip(&states.virtio) {
            placed.restore(saved)?;
        }
        if let Some(bus) = &self.pci_bus {
            bus.refresh_all_routes();
        }
        lock(&self.rtc)
            .restore(&states.rtc)
            .map_err(DeviceStateError::Rtc)?;
        // Checked before anything changes: only an oversized buffer fails.
        let mut i8042 = lock(&self.i8042);
        let before = i8042.save();
        i8042
            .restore(&states.i8042)
            .map_err(DeviceStateError::I8042)?;
        if let Err(e) = lock(&self.serial).restore(&states.serial) {
            let _ = i8042.restore(&before);
            return Err(DeviceStateError::Serial(e));
        }
        Ok(())
    }

    /// Refuses `states` unless it fits this machine's devices: the same
    /// virtio devices on the same transport, disks of the same size.
    fn check_restore(&self, states: &DeviceStates) -> Result<(), DeviceStateError> {
        if states.virtio.len() != self.virtio.len() {
            return Err(DeviceStateError::VirtioCount {
                saved: states.virtio.len(),
                here: self.virtio.len(),
            });
        }
        for (placed, saved) in self.virtio.iter().zip(&states.virtio) {
            placed.check(saved)?;
        }
        for (index, (drive, path)) in self.drives.iter().zip(&self.disk_paths).enumerate() {
            let (now, saved) = (drive.size(), states.disk_sizes.get(index).copied());
            if saved != Some(now) {
                return Err(DeviceStateError::DiskSize {
                    index,
                    path: path.display().to_string(),
                    saved: saved.unwrap_or(0),
                    now,
                });
            }
        }
        if states.rtc.cmos.len() != 128 {
            return Err(DeviceStateError::RtcCmos(states.rtc.cmos.len()));
        }
        Ok(())
    }

    /// Serves drive `index` (in the config's order) from the raw image at
    /// `path`; the guest sees the new capacity. Returns its size in bytes.
    pub fn update_drive(&self, index: usize, path: &Path) -> Result<u64, UpdateError> {
        let drive = self.drives.get(index).ok_or(UpdateError::NoDrive(index))?;
        Ok(drive.replace(path)?)
    }

    /// Hands the host resources only one process may hold to another
    /// process (a live migration's destination, which takes them as it
    /// restores): the disk images (writes flushed, locks dropped) and the
    /// TAP interfaces (detached). The machine must be paused. On an error
    /// what was handed over so far is taken back.
    pub fn release_backends(&self) -> Result<(), UpdateError> {
        for (index, drive) in self.drives.iter().enumerate() {
            if let Err(e) = drive.release_locks() {
                self.retake_backends();
                return Err(UpdateError::Handover {
                    what: format!("disk {index}"),
                    source: e,
                });
            }
        }
        for (index, tap) in self.taps.iter().enumerate() {
            if let Err(e) = tap.release() {
                self.retake_backends();
                return Err(UpdateError::Handover {
                    what: format!("network device {index}"),
                    source: e,
                });
            }
        }
        Ok(())
    }

    /// Takes back what [`DeviceManager::release_backends`] handed over
    /// (the migration failed; the VM goes on here). A disk another process
    /// took meanwhile is served unlocked, a TAP that cannot be attached
    /// again stays detached: both logged.
    pub fn retake_backends(&self) {
        for (index, drive) in self.drives.iter().enumerate() {
            if let Err(e) = drive.retake_locks() {
                tracing::error!(index, error = %e, "cannot lock a disk image again after a failed migration: it is served unlocked");
            }
        }
        for (index, tap) in self.taps.iter().enumerate() {
            if let Err(e) = tap.retake() {
                tracing::error!(index, error = %e, "cannot attach to a TAP device again after a failed migration: the network device is cut off");
            }
        }
    }

    /// Changes the rate limiter `target`; a queue waiting for tokens is
    /// re-examined at once.
    pub fn update_limits(
        &self,
        target: LimitTarget,
        update: ::virtio::throttle::LimitsUpdate,
    ) -> Result<(), UpdateError> {
        let handle = match target {
            LimitTarget::Drive(i) => self.drive_limits.get(i).ok_or(UpdateError::NoDrive(i))?,
            LimitTarget::NetRx(i) => &self.net_limits.get(i).ok_or(UpdateError::NoNet(i))?.rx,
            LimitTarget::NetTx(i) => &self.net_limits.get(i).ok_or(UpdateError::NoNet(i))?.tx,
        };
        handle.update(update);
        Ok(())
    }

    /// Handles that read every device's counters ([`DeviceMetrics`]) from
    /// any thread, also while the machine runs.
    pub fn metrics_source(&self) -> MetricsSource {
        self.metrics.clone()
    }

    /// Presses Ctrl-Alt-Del on the i8042's keyboard.
    pub fn send_ctrl_alt_del(&self) -> Result<(), I8042Error> {
        lock(&self.i8042).trigger_ctrl_alt_del()
    }

    /// The machine ends: the timer stops, parked workers are let go (they
    /// end with their devices), the disks' writes reach stable storage
    /// and the guest's last output the host (unless its output is
    /// blocked: then after [`DRAIN_TIMEOUT`]).
    pub fn stop(&mut self) {
        self.timer.stop();
        for gate in &self.gates {
            gate.resume();
        }
        for (index, drive) in self.drives.iter().enumerate() {
            if let Err(e) = drive.flush() {
                tracing::error!(index, error = %e, "cannot flush a disk at the end of the VM");
            }
        }
        self.console.drain(DRAIN_TIMEOUT);
    }
}
