//! The virtio-pci modern transport (virtio 1.2, 4.1) as a [`PciDevice`].
//!
//! IDs: vendor 0x1af4, device 0x1040 + the virtio device type, revision 1
//! (a non-transitional device), subsystem 0x1af4:0x0040.
//!
//! BAR 0 (32-bit memory, [`VIRTIO_BAR_SIZE`]) holds the four structures the
//! vendor capabilities point at, one 4 KiB page each:
//!
//! | offset | structure |
//! |---|---|
//! | 0x0000 | common configuration (0x38 bytes, accesses of each field's size; 64-bit fields also as two dwords) |
//! | 0x1000 | ISR status (one byte, reading clears it and lowers INTx) |
//! | 0x2000 | device configuration (the device model's) |
//! | 0x3000 | notifications: queue n at 0x3000 + 4 n (`notify_off_multiplier` 4, `queue_notify_off` = n); 2- or 4-byte writes |
//!
//! BAR 1 (32-bit memory, [`MSIX_BAR_SIZE`]) holds the MSI-X table (at 0)
//! and PBA (at [`MSIX_PBA_OFFSET`]): one vector per queue plus one, so the
//! driver can give every queue and configuration changes their own.
//! A `VIRTIO_PCI_CAP_PCI_CFG` capability gives access to the BARs through
//! configuration space.
//!
//! The feature negotiation, status machine, queue checks and notifications
//! are [`virtio::transport::TransportCore`]'s, as for virtio-mmio.
//! Interrupts: with MSI-X enabled, a used-buffer notification of queue n
//! sends the vector the driver wrote to that queue's `queue_msix_vector`,
//! a configuration change `config_msix_vector` (nothing for
//! `VIRTIO_MSI_NO_VECTOR`); a vector number past the table reads back as
//! NO_VECTOR. With MSI-X disabled the ISR bits are set and the INTx line
//! (level-triggered, if the device has one) is raised until the driver
//! reads the ISR.
//!
//! [`VirtioPci::notifiers`] gives the notification addresses at BAR 0's
//! current address: register them after the BARs are final (the machine
//! preassigns BARs that Linux keeps); a guest that moves BAR 0 afterwards
//! still reaches the queues through the MMIO path.

use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use devices::IrqLine;
use virtio::transport::{DeviceState, Half, Ring, StatusChange, TransportCore, TransportCounters};
use virtio::{Interrupt, QueueNotifier, VirtioDevice};
use vm_memory::GuestMemoryMmap;

use crate::config::{command, reg, BarKind, ConfigSpace, PciIds};
use crate::msix::{self, MsiSink, MsixCounters, MsixTable};
use crate::{BarRange, PciDevice};

/// Virtio's PCI vendor ID.
pub const VENDOR_ID: u16 = 0x1af4;
/// Device IDs are this plus the virtio device type.
pub const DEVICE_ID_BASE: u16 = 0x1040;
/// Subsystem device ID of every virtio-pci function.
pub const SUBSYSTEM_ID: u16 = 0x0040;

/// The BAR of the virtio structures.
pub const VIRTIO_BAR: u8 = 0;
pub const VIRTIO_BAR_SIZE: u64 = 0x4000;
pub const COMMON_OFFSET: u64 = 0x0000;
pub const COMMON_SIZE: u64 = 0x38;
pub const ISR_OFFSET: u64 = 0x1000;
pub const ISR_SIZE: u64 = 1;
pub const DEVICE_CFG_OFFSET: u64 = 0x2000;
pub const DEVICE_CFG_SIZE: u64 = 0x1000;
pub const NOTIFY_OFFSET: u64 = 0x3000;
pub const NOTIFY_MULTIPLIER: u32 = 4;
/// The BAR of the MSI-X table and PBA.
pub const MSIX_BAR: u8 = 1;
pub const MSIX_BAR_SIZE: u64 = 0x1000;
pub const MSIX_PBA_OFFSET: u64 = 0x800;
/// Most MSI-X vectors: the table fills [0, MSIX_PBA_OFFSET).
pub const MAX_VECTORS: u16 = (MSIX_PBA_OFFSET / msix::ENTRY_SIZE) as u16;
/// Most queues: one notification address each in the notify page.
pub const MAX_QUEUES: usize =
    ((VIRTIO_BAR_SIZE - NOTIFY_OFFSET) / NOTIFY_MULTIPLIER as u64) as usize;
/// "No vector" in the vector registers.
pub const NO_VECTOR: u16 = 0xffff;

/// Vendor capability types (virtio 1.2, 4.1.4).
pub mod cap {
    pub const COMMON_CFG: u8 = 1;
    pub const NOTIFY_CFG: u8 = 2;
    pub const ISR_CFG: u8 = 3;
    pub const DEVICE_CFG: u8 = 4;
    pub const PCI_CFG: u8 = 5;
    /// The vendor-specific capability ID.
    pub const VENDOR: u8 = 0x09;
}

/// Common configuration fields (virtio 1.2, 4.1.4.3).
pub mod common {
    pub const DEVICE_FEATURE_SELECT: u64 = 0x00;
    pub const DEVICE_FEATURE: u64 = 0x04;
    pub const DRIVER_FEATURE_SELECT: u64 = 0x08;
    pub const DRIVER_FEATURE: u64 = 0x0c;
    pub const CONFIG_MSIX_VECTOR: u64 = 0x10;
    pub const NUM_QUEUES: u64 = 0x12;
    pub const DEVICE_STATUS: u64 = 0x14;
    pub const CONFIG_GENERATION: u64 = 0x15;
    pub const QUEUE_SELECT: u64 = 0x16;
    pub const QUEUE_SIZE: u64 = 0x18;
    pub const QUEUE_MSIX_VECTOR: u64 = 0x1a;
    pub const QUEUE_ENABLE: u64 = 0x1c;
    pub const QUEUE_NOTIFY_OFF: u64 = 0x1e;
    pub const QUEUE_DESC: u64 = 0x20;
    pub const QUEUE_DRIVER: u64 = 0x28;
    pub const QUEUE_DEVICE: u64 = 0x30;
}

/// ISR bits.
const ISR_QUEUE: u8 = 1;
const ISR_CONFIG: u8 = 2;

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What the transport shares with the device's worker thread.
struct PciInterrupt {
    state: Arc<DeviceState>,
    msix: Mutex<MsixTable>,
    config_vector: AtomicU16,
    queue_vectors: Vec<AtomicU16>,
    isr: AtomicU8,
    intx: Option<Arc<dyn IrqLine>>,
    /// The command register's INTx disable bit.
    intx_disabled: AtomicBool,
}

impl PciInterrupt {
    fn signal(&self, vector: u16, isr: u8) {
        {
            let mut msix = lock(&self.msix);
            if msix.enabled() {
                if vector != NO_VECTOR {
                    msix.trigger(vector);
                }
                return;
            }
        }
        self.isr.fetch_or(isr, Ordering::SeqCst);
        if !self.intx_disabled.load(Ordering::SeqCst) {
            if let Some(line) = &self.intx {
                line.set_level(true);
            }
        }
    }

    /// Reads and clears the ISR, lowering INTx.
    fn take_isr(&self) -> u8 {
        let isr = self.isr.swap(0, Ordering::SeqCst);
        if let Some(line) = &self.intx {
            line.set_level(false);
        }
        isr
    }

    fn reset(&self) {
        self.config_vector.store(NO_VECTOR, Ordering::SeqCst);
        for v in &self.queue_vectors {
            v.store(NO_VECTOR, Ordering::SeqCst);
        }
        self.take_isr();
    }
}

impl Interrupt for PciInterrupt {
    fn signal_used(&self, queue: usize) {
        let vector = self
            .queue_vectors
            .get(queue)
            .map_or(NO_VECTOR, |v| v.load(Ordering::SeqCst));
        self.signal(vector, ISR_QUEUE);
    }
    fn signal_config(&self) {
        self.signal(self.config_vector.load(Ordering::SeqCst), ISR_CONFIG);
    }
    fn needs_reset(&self) {
        if self.state.set_needs_reset() {
            self.signal_config();
        }
    }
    fn guest_write_hook(&self) -> Option<virtio::GuestWriteHook> {
        self.state.guest_write_hook()
    }
    fn pause_gate(&self) -> Option<Arc<virtio::pause::PauseGate>> {
        self.state.pause_gate()
    }
}

/// Why a virtio-pci function cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum VirtioPciError {
    #[error("the device has {0} queues; virtio-pci takes 1 to {MAX_QUEUES}")]
    QueueCount(usize),
    #[error("cannot create the queue events")]
    Events(#[source] std::io::Error),
}

/// A virtio device behind the virtio-pci modern interface.
pub struct VirtioPci {
    core: TransportCore,
    config: ConfigSpace,
    irq: Arc<PciInterrupt>,
    msix_cap: usize,
    pci_cfg_cap: usize,
}

/// Where a function's BARs start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VirtioPciBars {
    /// BAR 0 ([`VIRTIO_BAR_SIZE`] bytes, aligned to it).
    pub virtio: u64,
    /// BAR 1 ([`MSIX_BAR_SIZE`] bytes, aligned to it).
    pub msix: u64,
}

/// The PCI class of a virtio device type.
fn class_of(device_type: u32) -> (u8, u8, u8) {
    match device_type {
        virtio::TYPE_NET => (0x02, 0x00, 0),
        virtio::TYPE_BLOCK => (0x01, 0x80, 0),
        virtio::TYPE_CONSOLE => (0x07, 0x80, 0),
        _ => (0xff, 0x00, 0),
    }
}

/// A vendor capability's body (after ID and next pointer).
fn vendor_cap(cfg_type: u8, bar: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let mut body = vec![(2 + 14 + extra.len()) as u8, cfg_type, bar, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    body.extend_from_slice(extra);
    body
}

impl VirtioPci {
    /// Wraps `device`. MSIs go to `msi`; `intx` is the INTA# line, if the
    /// function has one (with the GSI the interrupt line register shows).
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        msi: Arc<dyn MsiSink>,
        intx: Option<(Arc<dyn IrqLine>, u8)>,
        bars: VirtioPciBars,
    ) -> Result<VirtioPci, VirtioPciError> {
        let queues = device.queue_max_sizes().len();
        if queues == 0 || queues > MAX_QUEUES {
            return Err(VirtioPciError::QueueCount(queues));
        }
        let device_type = device.device_type();
        let vectors = (queues as u16).saturating_add(1).min(MAX_VECTORS);
        let table = MsixTable::new(vectors, msi);
        let mut config = ConfigSpace::new(PciIds {
            vendor: VENDOR_ID,
            device: DEVICE_ID_BASE + device_type as u16,
            revision: 1,
            class: class_of(device_type),
            subsystem_vendor: VENDOR_ID,
            subsystem: SUBSYSTEM_ID,
            interrupt_pin: u8::from(intx.is_some()),
        });
        if let Some((_, gsi)) = &intx {
            config.write(reg::INTERRUPT_LINE, &[*gsi]);
        }
        config.add_bar(
            VIRTIO_BAR.into(),
            VIRTIO_BAR_SIZE,
            BarKind::Mem32,
            false,
            bars.virtio,
        );
        config.add_bar(
            MSIX_BAR.into(),
            MSIX_BAR_SIZE,
            BarKind::Mem32,
            false,
            bars.msix,
        );
        let ro = |body: &[u8]| vec![0u8; body.len()];
        for (cfg_type, offset, length, extra) in [
            (cap::COMMON_CFG, COMMON_OFFSET, COMMON_SIZE, &[][..]),
            (
                cap::NOTIFY_CFG,
                NOTIFY_OFFSET,
                queues as u64 * u64::from(NOTIFY_MULTIPLIER),
                &NOTIFY_MULTIPLIER.to_le_bytes()[..],
            ),
            (cap::ISR_CFG, ISR_OFFSET, ISR_SIZE, &[][..]),
            (cap::DEVICE_CFG, DEVICE_CFG_OFFSET, DEVICE_CFG_SIZE, &[][..]),
        ] {
            let body = vendor_cap(cfg_type, VIRTIO_BAR, offset, length, extra);
            config.add_capability(cap::VENDOR, &body, &ro(&body));
        }
        // VIRTIO_PCI_CAP_PCI_CFG: bar, offset, length and data are the
        // driver's to write.
        let body = vendor_cap(cap::PCI_CFG, 0, 0, 0, &[0; 4]);
        let mut wmask = ro(&body);
        wmask[2] = 0xff;
        wmask[6..18].fill(0xff);
        let pci_cfg_cap = config.add_capability(cap::VENDOR, &body, &wmask);
        let (body, wmask) = table.capability(MSIX_BAR, 0, MSIX_BAR, MSIX_PBA_OFFSET as u32);
        let msix_cap = config.add_capability(msix::CAP_ID, &body, &wmask);

        let state = Arc::new(DeviceState::default());
        let irq = Arc::new(PciInterrupt {
            state: state.clone(),
            msix: Mutex::new(table),
            config_vector: AtomicU16::new(NO_VECTOR),
            queue_vectors: (0..queues).map(|_| AtomicU16::new(NO_VECTOR)).collect(),
            isr: AtomicU8::new(0),
            intx: intx.map(|(line, _)| line),
            intx_disabled: AtomicBool::new(false),
        });
        let core = TransportCore::new("virtio-pci", device, mem, state, irq.clone())
            .map_err(VirtioPciError::Events)?;
        Ok(VirtioPci {
            core,
            config,
            irq,
            msix_cap,
            pci_cfg_cap,
        })
    }

    /// The device status.
    pub fn status(&self) -> u32 {
        self.core.status()
    }

    pub fn counters(&self) -> TransportCounters {
        self.core.counters()
    }

    pub fn msix_counters(&self) -> MsixCounters {
        lock(&self.irq.msix).counters()
    }

    /// The device model.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.core.device()
    }

    /// Reports the device's writes to guest RAM to `hook` (set once, before
    /// the guest runs).
    pub fn set_guest_write_hook(&self, hook: virtio::GuestWriteHook) {
        self.irq.state.set_guest_write_hook(hook);
    }

    /// The gate that parks the device's worker while the VM is paused.
    pub fn pause_gate(&self) -> Option<Arc<virtio::pause::PauseGate>> {
        self.irq.state.pause_gate()
    }

    /// The queue notifications at BAR 0's current address (any write of
    /// the queue's notification address).
    pub fn notifiers(&self) -> std::io::Result<Vec<QueueNotifier>> {
        let base = self.config.bar_addr(VIRTIO_BAR.into()) + NOTIFY_OFFSET;
        self.core
            .notifiers(|i| base + i as u64 * u64::from(NOTIFY_MULTIPLIER), |_| None)
    }

    /// A vector the driver writes, or NO_VECTOR if the table has no such
    /// entry.
    fn checked_vector(&mut self, value: u16) -> u16 {
        let vectors = lock(&self.irq.msix).vectors();
        if value == NO_VECTOR || value < vectors {
            value
        } else {
            self.core.counters.bad_vectors += 1;
            self.core.warn("MSI-X vector out of range", value.into());
            NO_VECTOR
        }
    }

    fn read_common(&self, offset: u64, len: usize) -> Option<u64> {
        let core = &self.core;
        let sel = core.queue_sel as usize;
        let q = core.selected_queue();
        let ring = |f: fn(&virtio::transport::QueueConfig) -> u64| q.map_or(0, f);
        use common::*;
        let v = match (offset, len) {
            (DEVICE_FEATURE_SELECT, 4) => core.device_features_sel.into(),
            (DEVICE_FEATURE, 4) => core.device_features_word().into(),
            (DRIVER_FEATURE_SELECT, 4) => core.driver_features_sel.into(),
            (DRIVER_FEATURE, 4) => core.driver_features_word().into(),
            (CONFIG_MSIX_VECTOR, 2) => self.irq.config_vector.load(Ordering::SeqCst).into(),
            (NUM_QUEUES, 2) => core.queues().len() as u64,
            (DEVICE_STATUS, 1) => u64::from(core.status() as u8),
            (CONFIG_GENERATION, 1) => u64::from(core.config_generation() as u8),
            (QUEUE_SELECT, 2) => core.queue_sel.into(),
            (QUEUE_SIZE, 2) => q.map_or(0, |q| q.size.into()),
            (QUEUE_MSIX_VECTOR, 2) => self
                .irq
                .queue_vectors
                .get(sel)
                .map_or(NO_VECTOR, |v| v.load(Ordering::SeqCst))
                .into(),
            (QUEUE_ENABLE, 2) => q.map_or(0, |q| q.ready.into()),
            (QUEUE_NOTIFY_OFF, 2) => q.map_or(0, |_| sel as u64),
            (o @ (QUEUE_DESC..=0x37), 4 | 8) if o.is_multiple_of(len as u64) => {
                let field = match (o - QUEUE_DESC) / 8 {
                    0 => ring(|q| q.desc),
                    1 => ring(|q| q.driver),
                    _ => ring(|q| q.device),
                };
                if o % 8 == 4 {
                    field >> 32
                } else if len == 4 {
                    field & 0xffff_ffff
                } else {
                    field
                }
            }
            _ => return None,
        };
        Some(v)
    }

    fn write_common(&mut self, offset: u64, len: usize, value: u64) {
        use common::*;
        let v32 = value as u32;
        match (offset, len) {
            (DEVICE_FEATURE_SELECT, 4) => self.core.device_features_sel = v32,
            (DRIVER_FEATURE_SELECT, 4) => self.core.driver_features_sel = v32,
            (DRIVER_FEATURE, 4) => self.core.write_driver_features(v32),
            (CONFIG_MSIX_VECTOR, 2) => {
                let v = self.checked_vector(value as u16);
                self.irq.config_vector.store(v, Ordering::SeqCst);
            }
            (DEVICE_STATUS, 1) => {
                if self.core.set_status(v32) == StatusChange::Reset {
                    self.irq.reset();
                }
            }
            (QUEUE_SELECT, 2) => self.core.queue_sel = v32,
            (QUEUE_SIZE, 2) => self.core.set_queue_size(v32),
            (QUEUE_MSIX_VECTOR, 2) => {
                let v = self.checked_vector(value as u16);
                match self.irq.queue_vectors.get(self.core.queue_sel as usize) {
                    Some(slot) => slot.store(v, Ordering::SeqCst),
                    None => self
                        .core
                        .out_of_order("vector of no queue", self.core.queue_sel.into()),
                }
            }
            (QUEUE_ENABLE, 2) => self.core.set_queue_ready(v32),
            (o @ (QUEUE_DESC..=0x37), 4 | 8) if o.is_multiple_of(len as u64) => {
                let ring = match (o - QUEUE_DESC) / 8 {
                    0 => Ring::Desc,
                    1 => Ring::Driver,
                    _ => Ring::Device,
                };
                let half = match (len, o % 8) {
                    (8, _) => Half::Both,
                    (_, 0) => Half::Low,
                    _ => Half::High,
                };
                self.core.set_queue_ring(ring, half, value)
            }
            _ => self.core.bad_access(
                "common configuration write to a read-only field or of a bad size",
                offset,
            ),
        }
    }

    fn read_virtio_bar(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            COMMON_OFFSET..0x1000 => match self.read_common(offset - COMMON_OFFSET, data.len()) {
                Some(v) => data.copy_from_slice(&v.to_le_bytes()[..data.len()]),
                None => self
                    .core
                    .bad_access("common configuration read of a bad size or offset", offset),
            },
            ISR_OFFSET if data.len() == 1 => data[0] = self.irq.take_isr(),
            DEVICE_CFG_OFFSET..NOTIFY_OFFSET => self
                .core
                .device()
                .read_config(offset - DEVICE_CFG_OFFSET, data),
            // Notification addresses, gaps: read 0.
            _ => {}
        }
    }

    fn write_virtio_bar(&mut self, offset: u64, data: &[u8]) {
        match offset {
            COMMON_OFFSET..0x1000 if data.len() <= 8 => {
                let mut bytes = [0u8; 8];
                bytes[..data.len()].copy_from_slice(data);
                self.write_common(
                    offset - COMMON_OFFSET,
                    data.len(),
                    u64::from_le_bytes(bytes),
                );
            }
            DEVICE_CFG_OFFSET..NOTIFY_OFFSET => self
                .core
                .device_mut()
                .write_config(offset - DEVICE_CFG_OFFSET, data),
            NOTIFY_OFFSET.. => {
                let rel = offset - NOTIFY_OFFSET;
                let step = u64::from(NOTIFY_MULTIPLIER);
                if !rel.is_multiple_of(step) || !matches!(data.len(), 2 | 4) {
                    self.core
                        .bad_access("notification of a bad size or alignment", offset);
                    return;
                }
                let queue = rel / step;
                self.core.notify(u32::try_from(queue).unwrap_or(u32::MAX));
            }
            _ => self
                .core
                .bad_access("write to a read-only or unknown register", offset),
        }
    }

    /// The BAR access a `VIRTIO_PCI_CAP_PCI_CFG` data access at config
    /// `offset` of `len` bytes stands for: (bar, offset in the BAR).
    fn pci_cfg_window(&self, offset: usize, len: usize) -> Option<(u8, u64)> {
        let data = self.pci_cfg_cap + 16;
        let cap_len = self.config.u32_at(self.pci_cfg_cap + 12) as usize;
        let bar = self.config.u16_at(self.pci_cfg_cap + 4) as u8;
        if offset != data || len != cap_len || !matches!(len, 1 | 2 | 4) {
            return None;
        }
        let bar_offset = u64::from(self.config.u32_at(self.pci_cfg_cap + 8));
        Some((bar, bar_offset))
    }

    fn bar_read_checked(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        let size = match bar {
            VIRTIO_BAR => VIRTIO_BAR_SIZE,
            MSIX_BAR => MSIX_BAR_SIZE,
            _ => 0,
        };
        if offset
            .checked_add(data.len() as u64)
            .is_none_or(|end| end > size)
        {
            data.fill(0);
            return;
        }
        self.bar_read(bar, offset, data);
    }

    fn bar_write_checked(&mut self, bar: u8, offset: u64, data: &[u8]) {
        let size = match bar {
            VIRTIO_BAR => VIRTIO_BAR_SIZE,
            MSIX_BAR => MSIX_BAR_SIZE,
            _ => 0,
        };
        if offset
            .checked_add(data.len() as u64)
            .is_some_and(|end| end <= size)
        {
            self.bar_write(bar, offset, data);
        }
    }
}

impl PciDevice for VirtioPci {
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        if let Some((bar, bar_offset)) = self.pci_cfg_window(offset, data.len()) {
            self.bar_read_checked(bar, bar_offset, data);
            return;
        }
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        if let Some((bar, bar_offset)) = self.pci_cfg_window(offset, data.len()) {
            self.bar_write_checked(bar, bar_offset, data);
            return;
        }
        self.config.write(offset, data);
        let end = offset.saturating_add(data.len());
        let control = self.msix_cap + 2;
        if offset < control + 2 && end > control {
            let value = self.config.u16_at(control);
            lock(&self.irq.msix).set_control(value);
        }
        if offset < reg::COMMAND + 2 && end > reg::COMMAND {
            let disabled = self.config.command() & command::INTX_DISABLE != 0;
            self.irq.intx_disabled.store(disabled, Ordering::SeqCst);
            if disabled {
                if let Some(line) = &self.irq.intx {
                    line.set_level(false);
                }
            }
        }
    }

    fn bar_ranges(&self) -> Vec<BarRange> {
        self.config.bar_ranges()
    }

    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        match bar {
            VIRTIO_BAR => self.read_virtio_bar(offset, data),
            MSIX_BAR if offset < MSIX_PBA_OFFSET => lock(&self.irq.msix).read_table(offset, data),
            MSIX_BAR => lock(&self.irq.msix).read_pba(offset - MSIX_PBA_OFFSET, data),
            _ => data.fill(0xff),
        }
    }

    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        match bar {
            VIRTIO_BAR => self.write_virtio_bar(offset, data),
            MSIX_BAR if offset < MSIX_PBA_OFFSET => lock(&self.irq.msix).write_table(offset, data),
            MSIX_BAR => lock(&self.irq.msix).write_pba(offset - MSIX_PBA_OFFSET, data),
            _ => {}
        }
    }
}

mod state;
pub use state::VirtioPciSaved;

#[cfg(test)]
mod tests;
