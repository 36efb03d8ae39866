//! The saved state of the device manager's devices ([`DeviceStates`]) and
//! the virtio transports it keeps a hand on to save them.

use std::sync::{Arc, Mutex};

use virtio::mmio::{MmioSaved, MmioTransport};
use virtio::pause::PauseGate;
use virtio::transport::TransportStateError;

use super::lock;

/// The saved state of every device the manager owns.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeviceStates {
    /// COM1.
    pub serial: devices::serial::SerialSnapshot,
    /// The i8042 keyboard controller.
    pub i8042: devices::i8042::I8042Snapshot,
    /// The CMOS RTC.
    pub rtc: devices::rtc::RtcSnapshot,
    /// The virtio devices, in the guest's order.
    pub virtio: Vec<VirtioSaved>,
    /// The disks' sizes in bytes, in `config.disks` order (a restore
    /// refuses an image whose size changed).
    pub disk_sizes: Vec<u64>,
    /// The VM generation ID device, when the machine has ACPI tables.
    pub vmgenid: Option<super::vmgenid::VmGenIdState>,
}

/// One virtio device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtioSaved {
    /// The device's name ("virtio-blk0", ...).
    pub name: String,
    pub transport: TransportSaved,
}

/// A virtio device's transport state.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum TransportSaved {
    Mmio(MmioSaved),
    Pci(pci::virtio::VirtioPciSaved),
}

/// Why the devices' state cannot be saved or restored.
#[derive(Debug, thiserror::Error)]
pub enum DeviceStateError {
    #[error("cannot restore the serial port")]
    Serial(#[source] devices::serial::SerialStateError),
    #[error("cannot restore the i8042")]
    I8042(#[source] devices::i8042::I8042Error),
    #[error("cannot restore the RTC")]
    Rtc(#[source] devices::rtc::RtcStateError),
    #[error("cannot restore the VM generation ID")]
    VmGenId(#[source] super::vmgenid::VmGenIdError),
    #[error("the snapshot's RTC has {0} bytes of CMOS (128 expected)")]
    RtcCmos(usize),
    #[error("the snapshot has {saved} virtio devices; this VM has {here}")]
    VirtioCount { saved: usize, here: usize },
    #[error("the snapshot has {saved} where this VM has {here}")]
    VirtioName { saved: String, here: String },
    #[error("{name}: the snapshot's transport is not this VM's (virtio-mmio vs virtio-pci)")]
    TransportKind { name: String },
    #[error("{name}")]
    Virtio {
        name: String,
        #[source]
        source: TransportStateError,
    },
    #[error(
        "disk {index} ({path}) was {saved} bytes when the snapshot was taken and is {now} bytes now"
    )]
    DiskSize {
        index: usize,
        path: String,
        saved: u64,
        now: u64,
    },
}

/// A virtio device as placed on its transport.
pub(crate) struct Placed {
    pub name: String,
    pub gate: Option<Arc<PauseGate>>,
    pub transport: Transport,
}

/// The transport of a placed virtio device.
pub(crate) enum Transport {
    Mmio(Arc<Mutex<MmioTransport>>),
    Pci(Arc<Mutex<pci::virtio::VirtioPci>>),
}

impl Placed {
    /// The state of a paused device.
    pub fn save(&self) -> Result<VirtioSaved, DeviceStateError> {
        let err = |source| DeviceStateError::Virtio {
            name: self.name.clone(),
            source,
        };
        let transport = match &self.transport {
            Transport::Mmio(t) => TransportSaved::Mmio(lock(t).save().map_err(err)?),
            Transport::Pci(t) => TransportSaved::Pci(lock(t).save().map_err(err)?),
        };
        Ok(VirtioSaved {
            name: self.name.clone(),
            transport,
        })
    }

    /// Checks that `saved` fits this device (nothing changes).
    pub fn check(&self, saved: &VirtioSaved) -> Result<(), DeviceStateError> {
        if saved.name != self.name {
            return Err(DeviceStateError::VirtioName {
                saved: saved.name.clone(),
                here: self.name.clone(),
            });
        }
        let err = |source| DeviceStateError::Virtio {
            name: self.name.clone(),
            source,
        };
        match (&self.transport, &saved.transport) {
            (Transport::Mmio(t), TransportSaved::Mmio(s)) => lock(t).check_restore(s).map_err(err),
            (Transport::Pci(t), TransportSaved::Pci(s)) => lock(t).check_restore(s).map_err(err),
            _ => Err(DeviceStateError::TransportKind {
                name: self.name.clone(),
            }),
        }
    }

    /// Restores a device [`Placed::check`] accepted.
    pub fn restore(&self, saved: &VirtioSaved) -> Result<(), DeviceStateError> {
        let err = |source| DeviceStateError::Virtio {
            name: self.name.clone(),
            source,
        };
        match (&self.transport, &saved.transport) {
            (Transport::Mmio(t), TransportSaved::Mmio(s)) => lock(t).restore(s).map_err(err),
            (Transport::Pci(t), TransportSaved::Pci(s)) => lock(t).restore(s).map_err(err),
            _ => Err(DeviceStateError::TransportKind {
                name: self.name.clone(),
            }),
        }
    }
}
