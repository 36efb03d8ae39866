//! A transport's state in a snapshot ([`TransportSaved`]): the registers
//! the driver wrote (status, feature selections and acked features, queue
//! selection, configuration generation), every queue's configuration and
//! where the device's worker is in it.
//!
//! [`TransportCore::save`] needs a paused device: its worker parked
//! between two requests (so none is in flight) and said where it left its
//! queues ([`crate::pause::PauseGate::parked_queues`]).
//! [`TransportCore::restore`] puts a device built from the same
//! configuration, never activated, in that state; a running device is
//! activated again on the saved queue positions, so that its worker serves
//! what the driver made available before the snapshot.

use serde::{Deserialize, Serialize};

use super::{QueueConfig, TransportCore};
use crate::pause::QueuePosition;
use crate::status::{DRIVER_OK, FAILED};

/// One queue of a saved transport.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSaved {
    pub max_size: u16,
    pub size: u16,
    pub bad_size: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    pub ready: bool,
    pub next_avail: u16,
    pub next_used: u16,
}

/// The transport-independent state of a virtio device.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportSaved {
    /// The device type (checked on restore).
    pub device_type: u32,
    pub status: u32,
    pub needs_reset: bool,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    pub driver_features: u64,
    pub queue_sel: u32,
    pub config_generation: u32,
    pub queues: Vec<QueueSaved>,
}

impl TransportSaved {
    /// The device runs: its worker is to be started again.
    pub fn running(&self) -> bool {
        self.status & DRIVER_OK != 0 && self.status & FAILED == 0 && !self.needs_reset
    }
}

/// Why a transport cannot be saved or restored.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TransportStateError {
    #[error("the device (type {0}) is running but its worker is not parked: pause the VM first")]
    NotParked(u32),
    #[error("the device (type {device}) gave {found} queue positions for {expected} queues")]
    Positions {
        device: u32,
        found: usize,
        expected: usize,
    },
    #[error("the snapshot has a device of type {saved} where this VM has type {here}")]
    DeviceType { saved: u32, here: u32 },
    #[error("the saved device (type {device}) has queues {saved:?}; this VM's has {here:?}")]
    Queues {
        device: u32,
        saved: Vec<u16>,
        here: Vec<u16>,
    },
    #[error("the saved device (type {0}) has features the device does not offer")]
    Features(u32),
    #[error("the saved device (type {0}) does not have this transport's layout")]
    Shape(u32),
}

impl TransportCore {
    /// The state of a paused device (see the module's documentation).
    pub fn save(&self) -> Result<TransportSaved, TransportStateError> {
        let device = self.device.device_type();
        let needs_reset = self.state.needs_reset();
        let mut saved = TransportSaved {
            device_type: device,
            status: self.status,
            needs_reset,
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            config_generation: self.config_generation,
            queues: self.queues.iter().map(|q| QueueSaved::from(*q)).collect(),
        };
        if saved.running() {
            let gate = self.state.pause_gate();
            let positions = gate
                .and_then(|g| g.parked_queues())
                .ok_or(TransportStateError::NotParked(device))?;
            if positions.len() != saved.queues.len() {
                return Err(TransportStateError::Positions {
                    device,
                    found: positions.len(),
                    expected: saved.queues.len(),
                });
            }
            for (q, at) in saved.queues.iter_mut().zip(positions) {
                q.next_avail = at.next_avail;
                q.next_used = at.next_used;
            }
        }
        Ok(saved)
    }

    /// Checks that `saved` fits this device, before anything changes.
    pub fn check_restore(&self, saved: &TransportSaved) -> Result<(), TransportStateError> {
        let here = self.device.device_type();
        if saved.device_type != here {
            return Err(TransportStateError::DeviceType {
                saved: saved.device_type,
                here,
            });
        }
        let sizes = |q: &[u16]| q.to_vec();
        let saved_sizes: Vec<u16> = saved.queues.iter().map(|q| q.max_size).collect();
        if saved_sizes != self.device.queue_max_sizes() {
            return Err(TransportStateError::Queues {
                device: here,
                saved: saved_sizes,
                here: sizes(self.device.queue_max_sizes()),
            });
        }
        if saved.driver_features & !self.device.features() != 0 {
            return Err(TransportStateError::Features(here));
        }
        Ok(())
    }

    /// Puts a device never activated in the state `saved` describes and,
    /// when it was running, activates it on the saved queue positions
    /// (an activation failure is the guest's: DEVICE_NEEDS_RESET).
    pub fn restore(&mut self, saved: &TransportSaved) -> Result<(), TransportStateError> {
        self.check_restore(saved)?;
        self.status = saved.status;
        self.device_features_sel = saved.device_features_sel;
        self.driver_features_sel = saved.driver_features_sel;
        self.driver_features = saved.driver_features;
        self.queue_sel = saved.queue_sel;
        self.config_generation = saved.config_generation;
        for (q, s) in self.queues.iter_mut().zip(&saved.queues) {
            *q = QueueConfig {
                max_size: s.max_size,
                size: s.size,
                bad_size: s.bad_size,
                desc: s.desc,
                driver: s.driver,
                device: s.device,
                ready: s.ready,
            };
        }
        if saved.needs_reset {
            self.state.set_needs_reset();
        }
        if self.status & DRIVER_OK != 0 {
            self.state
                .driver_ok
                .store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if saved.running() {
            let positions: Vec<QueuePosition> = saved
                .queues
                .iter()
                .map(|q| QueuePosition {
                    next_avail: q.next_avail,
                    next_used: q.next_used,
                })
                .collect();
            if !self.activate(Some(&positions)) {
                // The guest sees DEVICE_NEEDS_RESET, as after a failed
                // DRIVER_OK; the status keeps DRIVER_OK.
                tracing::warn!(
                    device = saved.device_type,
                    "virtio: a restored device could not be activated"
                );
            }
        }
        Ok(())
    }
}

impl From<QueueConfig> for QueueSaved {
    fn from(q: QueueConfig) -> QueueSaved {
        QueueSaved {
            max_size: q.max_size,
            size: q.size,
            bad_size: q.bad_size,
            desc: q.desc,
            driver: q.driver,
            device: q.device,
            ready: q.ready,
            next_avail: 0,
            next_used: 0,
        }
    }
}
