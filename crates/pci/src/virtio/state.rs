//! A virtio-pci function's state in a snapshot: the transport core
//! ([`virtio::transport::TransportSaved`]), the PCI configuration space
//! with its BARs, the MSI-X table and PBA, the interrupt vectors the
//! driver assigned, the ISR and the INTx level.

use std::sync::atomic::Ordering;

use serde::{Deserialize, Serialize};
use virtio::transport::{TransportSaved, TransportStateError};

use super::{lock, VirtioPci};
use crate::config::{command, ConfigSaved};
use crate::msix::MsixSaved;

/// A virtio-pci function in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtioPciSaved {
    pub core: TransportSaved,
    pub config: ConfigSaved,
    pub msix: MsixSaved,
    pub config_vector: u16,
    pub queue_vectors: Vec<u16>,
    pub isr: u8,
}

impl VirtioPci {
    /// The state of a paused function.
    pub fn save(&self) -> Result<VirtioPciSaved, TransportStateError> {
        Ok(VirtioPciSaved {
            core: self.core.save()?,
            config: self.config.save(),
            msix: lock(&self.irq.msix).save(),
            config_vector: self.irq.config_vector.load(Ordering::SeqCst),
            queue_vectors: self
                .irq
                .queue_vectors
                .iter()
                .map(|v| v.load(Ordering::SeqCst))
                .collect(),
            isr: self.irq.isr.load(Ordering::SeqCst),
        })
    }

    /// Checks that `saved` fits this function (nothing changes).
    pub fn check_restore(&self, saved: &VirtioPciSaved) -> Result<(), TransportStateError> {
        self.core.check_restore(&saved.core)?;
        let mut config = self.config.clone();
        let msix = lock(&self.irq.msix).save();
        let shape_ok = config.restore(&saved.config)
            && saved.msix.entries.len() == msix.entries.len()
            && saved.msix.pending.len() == msix.pending.len()
            && saved.queue_vectors.len() == self.irq.queue_vectors.len();
        match shape_ok {
            true => Ok(()),
            false => Err(TransportStateError::Shape(saved.core.device_type)),
        }
    }

    /// Puts a function never activated in the state `saved` describes;
    /// the device runs again on its saved queues. The caller refreshes
    /// the bus's BAR routes.
    pub fn restore(&mut self, saved: &VirtioPciSaved) -> Result<(), TransportStateError> {
        self.check_restore(saved)?;
        self.config.restore(&saved.config);
        lock(&self.irq.msix).restore(&saved.msix);
        self.irq
            .config_vector
            .store(saved.config_vector, Ordering::SeqCst);
        for (v, s) in self.irq.queue_vectors.iter().zip(&saved.queue_vectors) {
            v.store(*s, Ordering::SeqCst);
        }
        let intx_disabled = self.config.command() & command::INTX_DISABLE != 0;
        self.irq
            .intx_disabled
            .store(intx_disabled, Ordering::SeqCst);
        self.irq.isr.store(saved.isr, Ordering::SeqCst);
        if saved.isr != 0 && !intx_disabled {
            if let Some(line) = &self.irq.intx {
                line.set_level(true);
            }
        }
        // The interrupt state is in place before the worker starts.
        self.core.restore(&saved.core)
    }
}
