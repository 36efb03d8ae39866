//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2), as a
//! [`devices::BusDevice`].
//!
//! Registers 0x000..0x100 take aligned 32-bit accesses only (others are
//! ignored and counted); the device configuration space starts at 0x100.
//! The transport enforces the order of the driver's initialisation:
//! features are written between DRIVER and FEATURES_OK, queues are set up
//! between FEATURES_OK and DRIVER_OK, notifications before DRIVER_OK are
//! ignored. Bad queue sizes or ring addresses refuse QueueReady; rings
//! outside RAM and device errors set DEVICE_NEEDS_RESET (the shared logic is
//! [`crate::transport::TransportCore`]).
//!
//! The interrupt line follows InterruptStatus (level-triggered, as QEMU's
//! virtio-mmio): asserted while a bit is set, lowered by InterruptACK.
//!
//! QueueNotify writes the queue's eventfd, which wakes the device's worker
//! thread; [`MmioTransport::notifiers`] lets the machine register the same
//! eventfds with the VM as ioeventfds, so that notifications do not even
//! leave the guest.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use devices::{BusDevice, IrqLine};
use vm_memory::GuestMemoryMmap;

use crate::transport::{
    DeviceState, Half, Ring, StatusChange, TransportCore, TransportCounters, TransportSaved,
    TransportStateError,
};
use crate::{Interrupt, QueueNotifier, VirtioDevice};

/// Size of the register block plus a configuration space (0x100 + 0x100);
/// a device's window may be larger.
pub const MMIO_MIN_SIZE: u64 = 0x200;
/// "virt" in little endian.
pub const MAGIC: u32 = 0x7472_6976;
/// Vendor ID reported to the guest ("FERR").
pub const VENDOR_ID: u32 = 0x5252_4546;

pub mod reg {
    pub const MAGIC: u64 = 0x000;
    pub const VERSION: u64 = 0x004;
    pub const DEVICE_ID: u64 = 0x008;
    pub const VENDOR_ID: u64 = 0x00c;
    pub const DEVICE_FEATURES: u64 = 0x010;
    pub const DEVICE_FEATURES_SEL: u64 = 0x014;
    pub const DRIVER_FEATURES: u64 = 0x020;
    pub const DRIVER_FEATURES_SEL: u64 = 0x024;
    pub const QUEUE_SEL: u64 = 0x030;
    pub const QUEUE_NUM_MAX: u64 = 0x034;
    pub const QUEUE_NUM: u64 = 0x038;
    pub const QUEUE_READY: u64 = 0x044;
    pub const QUEUE_NOTIFY: u64 = 0x050;
    pub const INTERRUPT_STATUS: u64 = 0x060;
    pub const INTERRUPT_ACK: u64 = 0x064;
    pub const STATUS: u64 = 0x070;
    pub const QUEUE_DESC_LOW: u64 = 0x080;
    pub const QUEUE_DESC_HIGH: u64 = 0x084;
    pub const QUEUE_DRIVER_LOW: u64 = 0x090;
    pub const QUEUE_DRIVER_HIGH: u64 = 0x094;
    pub const QUEUE_DEVICE_LOW: u64 = 0x0a0;
    pub const QUEUE_DEVICE_HIGH: u64 = 0x0a4;
    pub const CONFIG_GENERATION: u64 = 0x0fc;
    pub const CONFIG: u64 = 0x100;
}

/// InterruptStatus bits.
const ISR_USED: u32 = 1;
const ISR_CONFIG: u32 = 2;

/// What the transport shares with the device's worker thread: the
/// interrupt status and the line it drives, and DEVICE_NEEDS_RESET.
struct IrqState {
    status: AtomicU32,
    line: Arc<dyn IrqLine>,
    state: Arc<DeviceState>,
}

impl IrqState {
    fn raise(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        self.line.set_level(true);
    }
    fn ack(&self, bits: u32) {
        let left = self.status.fetch_and(!bits, Ordering::SeqCst) & !bits;
        if left == 0 {
            self.line.set_level(false);
        }
    }
    fn clear(&self) {
        self.status.store(0, Ordering::SeqCst);
        self.line.set_level(false);
    }
}

impl Interrupt for IrqState {
    fn signal_used(&self, _queue: usize) {
        self.raise(ISR_USED);
    }
    fn signal_config(&self) {
        self.raise(ISR_CONFIG);
    }
    fn needs_reset(&self) {
        if self.state.set_needs_reset() {
            self.raise(ISR_CONFIG);
        }
    }
    fn guest_write_hook(&self) -> Option<crate::GuestWriteHook> {
        self.state.guest_write_hook()
    }
    fn pause_gate(&self) -> Option<Arc<crate::pause::PauseGate>> {
        self.state.pause_gate()
    }
}

/// Guest misbehaviour the transport refused, by kind.
/// A virtio-mmio device's state in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MmioSaved {
    pub core: TransportSaved,
    /// InterruptStatus (used buffer, configuration change).
    pub interrupt_status: u32,
}

pub type MmioCounters = TransportCounters;

/// A virtio device behind the virtio-mmio register interface.
pub struct MmioTransport {
    core: TransportCore,
    irq: Arc<IrqState>,
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        line: Arc<dyn IrqLine>,
    ) -> std::io::Result<Self> {
        let state = Arc::new(DeviceState::default());
        let irq = Arc::new(IrqState {
            status: AtomicU32::new(0),
            line,
            state: state.clone(),
        });
        let core = TransportCore::new("virtio-mmio", device, mem, state, irq.clone())?;
        Ok(MmioTransport { core, irq })
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        self.core.status()
    }

    /// Reports the device's writes to guest RAM to `hook` (set once, before
    /// the guest runs).
    pub fn set_guest_write_hook(&self, hook: crate::GuestWriteHook) {
        self.irq.state.set_guest_write_hook(hook);
    }

    /// The gate that parks the device's worker while the VM is paused.
    pub fn pause_gate(&self) -> Option<Arc<crate::pause::PauseGate>> {
        self.irq.state.pause_gate()
    }

    /// The queue notifications of a transport whose window starts at
    /// `base`, for the VM to turn into events without a VM exit.
    pub fn notifiers(&self, base: u64) -> std::io::Result<Vec<QueueNotifier>> {
        self.core
            .notifiers(|_| base + reg::QUEUE_NOTIFY, |i| Some(i as u32))
    }

    pub fn counters(&self) -> MmioCounters {
        self.core.counters()
    }

    /// The device model.
    pub fn device(&self) -> &dyn VirtioDevice {
        self.core.device()
    }

    /// The state of a paused device ([`TransportCore::save`]) and its
    /// interrupt status.
    pub fn save(&self) -> Result<MmioSaved, TransportStateError> {
        Ok(MmioSaved {
            core: self.core.save()?,
            interrupt_status: self.irq.status.load(Ordering::SeqCst),
        })
    }

    /// Checks that `saved` fits this device (nothing changes).
    pub fn check_restore(&self, saved: &MmioSaved) -> Result<(), TransportStateError> {
        self.core.check_restore(&saved.core)
    }

    /// Puts a device never activated in the state `saved` describes
    /// ([`TransportCore::restore`]); a pending interrupt raises the line
    /// again.
    pub fn restore(&mut self, saved: &MmioSaved) -> Result<(), TransportStateError> {
        self.core.restore(&saved.core)?;
        let pending = saved.interrupt_status & (ISR_USED | ISR_CONFIG);
        if pending != 0 {
            self.irq.raise(pending);
        }
        Ok(())
    }

    fn read_reg(&self, offset: u64) -> Option<u32> {
        let q = self.core.selected_queue();
        Some(match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => 2,
            reg::DEVICE_ID => self.core.device().device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => self.core.device_features_word(),
            reg::QUEUE_NUM_MAX => q.map_or(0, |q| q.max_size.into()),
            reg::QUEUE_READY => q.map_or(0, |q| q.ready.into()),
            reg::INTERRUPT_STATUS => self.irq.status.load(Ordering::SeqCst),
            reg::STATUS => self.core.status(),
            reg::CONFIG_GENERATION => self.core.config_generation(),
            _ => return None,
        })
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        let core = &mut self.core;
        let v = u64::from(value);
        match offset {
            reg::DEVICE_FEATURES_SEL => core.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => core.driver_features_sel = value,
            reg::DRIVER_FEATURES => core.write_driver_features(value),
            reg::QUEUE_SEL => core.queue_sel = value,
            reg::QUEUE_NUM => core.set_queue_size(value),
            reg::QUEUE_DESC_LOW => core.set_queue_ring(Ring::Desc, Half::Low, v),
            reg::QUEUE_DESC_HIGH => core.set_queue_ring(Ring::Desc, Half::High, v),
            reg::QUEUE_DRIVER_LOW => core.set_queue_ring(Ring::Driver, Half::Low, v),
            reg::QUEUE_DRIVER_HIGH => core.set_queue_ring(Ring::Driver, Half::High, v),
            reg::QUEUE_DEVICE_LOW => core.set_queue_ring(Ring::Device, Half::Low, v),
            reg::QUEUE_DEVICE_HIGH => core.set_queue_ring(Ring::Device, Half::High, v),
            reg::QUEUE_READY => core.set_queue_ready(value),
            reg::QUEUE_NOTIFY => core.notify(value & 0xffff),
            reg::INTERRUPT_ACK => self.irq.ack(value),
            reg::STATUS => {
                if core.set_status(value) == StatusChange::Reset {
                    self.irq.clear();
                }
            }
            _ => core.bad_access("write to a read-only or unknown register", offset),
        }
    }
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.core.device().read_config(offset - reg::CONFIG, data);
            return;
        }
        let value = if data.len() == 4 && offset.is_multiple_of(4) {
            self.read_reg(offset)
        } else {
            None
        };
        match value {
            Some(v) => data.copy_from_slice(&v.to_le_bytes()),
            None => {
                self.core.counters.bad_accesses += 1;
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.core
                .device_mut()
                .write_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.core
                .bad_access("register access of a bad size or alignment", offset);
            return;
        }
        let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg(offset, value);
    }
}
