//! The virtio-mmio transport, version 2 (virtio 1.2, 4.2.2), as a
//! [`devices::BusDevice`].
//!
//! Registers 0x000..0x100 take aligned 32-bit accesses only (others are
//! ignored and counted); the device configuration space starts at 0x100.
//! The transport enforces the order of the driver's initialisation:
//! features are written between DRIVER and FEATURES_OK, queues are set up
//! between FEATURES_OK and DRIVER_OK, notifications before DRIVER_OK are
//! ignored. Bad queue sizes or ring addresses refuse QueueReady; rings
//! outside RAM and device errors set DEVICE_NEEDS_RESET.
//!
//! The interrupt line follows InterruptStatus (level-triggered, as QEMU's
//! virtio-mmio): asserted while a bit is set, lowered by InterruptACK.
//!
//! QueueNotify writes the queue's eventfd, which wakes the device's worker
//! thread; [`MmioTransport::notifiers`] lets the machine register the same
//! eventfds with the VM as ioeventfds, so that notifications do not even
//! leave the guest.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use devices::ratelimit::RateLimiter;
use devices::{BusDevice, IrqLine};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};

use crate::status::*;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::{Activation, Interrupt, QueueNotifier, VirtioDevice, F_RING_EVENT_IDX, F_VERSION_1};

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
    needs_reset: AtomicBool,
    /// Times the device (or the transport) asked for a reset.
    device_errors: std::sync::atomic::AtomicU64,
    /// DRIVER_OK is set (a configuration change is worth signalling).
    driver_ok: AtomicBool,
    write_hook: std::sync::OnceLock<crate::GuestWriteHook>,
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
        self.needs_reset.store(false, Ordering::SeqCst);
        self.driver_ok.store(false, Ordering::SeqCst);
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
    fn guest_write_hook(&self) -> Option<crate::GuestWriteHook> {
        self.write_hook.get().cloned()
    }
    fn needs_reset(&self) {
        self.device_errors.fetch_add(1, Ordering::Relaxed);
        if !self.needs_reset.swap(true, Ordering::SeqCst) && self.driver_ok.load(Ordering::SeqCst) {
            self.raise(ISR_CONFIG);
        }
    }
}

/// A queue as the driver configures it.
#[derive(Debug, Clone, Copy, Default)]
struct QueueConfig {
    max_size: u16,
    size: u16,
    /// The driver wrote a size the device refuses: QueueReady stays 0.
    bad_size: bool,
    desc: u64,
    driver: u64,
    device: u64,
    ready: bool,
}

impl QueueConfig {
    fn new(max_size: u16) -> QueueConfig {
        QueueConfig {
            max_size,
            size: max_size,
            ..QueueConfig::default()
        }
    }
}

/// Guest misbehaviour the transport refused, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MmioCounters {
    /// Register accesses of the wrong size or alignment, or to no register.
    pub bad_accesses: u64,
    /// Writes not allowed in the current device status.
    pub out_of_order_writes: u64,
    /// QueueNotify before DRIVER_OK, after NEEDS_RESET, or of no queue.
    pub ignored_notifies: u64,
    /// Queue sizes that are zero, not a power of two, or above QueueNumMax.
    pub bad_queue_sizes: u64,
    /// Queues refused at QueueReady (bad size, misaligned or outside RAM).
    pub bad_queues: u64,
    /// Device errors (bad descriptor chains, ...) that set NEEDS_RESET.
    pub device_errors: u64,
}

/// A virtio device behind the virtio-mmio register interface.
pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    irq: Arc<IrqState>,
    /// One per queue, written by QueueNotify (or by the VM's ioeventfd).
    events: Vec<EventFd>,
    status: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    queue_sel: u32,
    queues: Vec<QueueConfig>,
    config_generation: u32,
    counters: MmioCounters,
    log_limit: RateLimiter,
}

impl MmioTransport {
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        line: Arc<dyn IrqLine>,
    ) -> std::io::Result<Self> {
        let queues: Vec<QueueConfig> = device
            .queue_max_sizes()
            .iter()
            .map(|&max| QueueConfig::new(max))
            .collect();
        let events = queues
            .iter()
            .map(|_| EventFd::new(EFD_NONBLOCK))
            .collect::<std::io::Result<_>>()?;
        Ok(MmioTransport {
            device,
            mem,
            irq: Arc::new(IrqState {
                status: AtomicU32::new(0),
                line,
                needs_reset: AtomicBool::new(false),
                device_errors: Default::default(),
                driver_ok: AtomicBool::new(false),
                write_hook: std::sync::OnceLock::new(),
            }),
            events,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            config_generation: 0,
            counters: MmioCounters::default(),
            log_limit: RateLimiter::default(),
        })
    }

    /// The device status register.
    pub fn status(&self) -> u32 {
        if self.irq.needs_reset.load(Ordering::SeqCst) {
            self.status | DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    /// Reports the device's writes to guest RAM to `hook` (set once, before
    /// the guest runs).
    pub fn set_guest_write_hook(&self, hook: crate::GuestWriteHook) {
        let _ = self.irq.write_hook.set(hook);
    }

    /// The queue notifications of a transport whose window starts at
    /// `base`, for the VM to turn into events without a VM exit.
    pub fn notifiers(&self, base: u64) -> std::io::Result<Vec<QueueNotifier>> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                Ok(QueueNotifier {
                    addr: base + reg::QUEUE_NOTIFY,
                    pio: false,
                    datamatch: Some(i as u32),
                    event: event.try_clone()?,
                })
            })
            .collect()
    }

    pub fn counters(&self) -> MmioCounters {
        MmioCounters {
            device_errors: self.irq.device_errors.load(Ordering::Relaxed),
            ..self.counters
        }
    }

    /// The device model.
    pub fn device(&self) -> &dyn VirtioDevice {
        &*self.device
    }

    fn warn(&self, what: &str, detail: u64) {
        if self.log_limit.allow() {
            tracing::warn!(
                device = self.device.device_type(),
                what,
                detail,
                "virtio-mmio: guest error"
            );
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        self.status = 0;
        self.device_features_sel = 0;
        self.driver_features_sel = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        for q in &mut self.queues {
            *q = QueueConfig::new(q.max_size);
        }
        for event in &self.events {
            // Drain notifications the stopped worker did not see.
            let _ = event.read();
        }
        self.irq.clear();
    }

    /// Sets DEVICE_NEEDS_RESET and, once the driver is running, tells it.
    fn needs_reset(&mut self, what: &str, detail: u64) {
        self.warn(what, detail);
        self.irq.needs_reset();
    }

    fn selected_queue(&mut self) -> Option<&mut QueueConfig> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    fn read_reg(&self, offset: u64) -> Option<u32> {
        let q = self.queues.get(self.queue_sel as usize);
        Some(match offset {
            reg::MAGIC => MAGIC,
            reg::VERSION => 2,
            reg::DEVICE_ID => self.device.device_type(),
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device.features() as u32,
                1 => (self.device.features() >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => q.map_or(0, |q| q.max_size.into()),
            reg::QUEUE_READY => q.map_or(0, |q| q.ready.into()),
            reg::INTERRUPT_STATUS => self.irq.status.load(Ordering::SeqCst),
            reg::STATUS => self.status(),
            reg::CONFIG_GENERATION => self.config_generation,
            _ => return None,
        })
    }

    fn write_reg(&mut self, offset: u64, value: u32) {
        let status = self.status;
        let features_phase = status & DRIVER != 0 && status & FEATURES_OK == 0;
        let queue_phase = status & FEATURES_OK != 0 && status & DRIVER_OK == 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = value,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = value,
            reg::DRIVER_FEATURES if features_phase => match self.driver_features_sel {
                0 => self.driver_features = self.driver_features & !0xffff_ffff | u64::from(value),
                1 => {
                    self.driver_features =
                        self.driver_features & 0xffff_ffff | u64::from(value) << 32
                }
                _ => {}
            },
            reg::QUEUE_SEL => self.queue_sel = value,
            reg::QUEUE_NUM if queue_phase => self.set_queue_size(value),
            reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH
                if queue_phase =>
            {
                let Some(q) = self.selected_queue().filter(|q| !q.ready) else {
                    self.counters.out_of_order_writes += 1;
                    return;
                };
                let (field, high) = match offset {
                    reg::QUEUE_DESC_LOW => (&mut q.desc, false),
                    reg::QUEUE_DESC_HIGH => (&mut q.desc, true),
                    reg::QUEUE_DRIVER_LOW => (&mut q.driver, false),
                    reg::QUEUE_DRIVER_HIGH => (&mut q.driver, true),
                    reg::QUEUE_DEVICE_LOW => (&mut q.device, false),
                    _ => (&mut q.device, true),
                };
                *field = if high {
                    *field & 0xffff_ffff | u64::from(value) << 32
                } else {
                    *field & !0xffff_ffff | u64::from(value)
                };
            }
            reg::QUEUE_READY if queue_phase => self.set_queue_ready(value),
            reg::QUEUE_NOTIFY => self.notify(value),
            reg::INTERRUPT_ACK => self.irq.ack(value),
            reg::STATUS => self.set_status(value),
            reg::DRIVER_FEATURES
            | reg::QUEUE_NUM
            | reg::QUEUE_DESC_LOW
            | reg::QUEUE_DESC_HIGH
            | reg::QUEUE_DRIVER_LOW
            | reg::QUEUE_DRIVER_HIGH
            | reg::QUEUE_DEVICE_LOW
            | reg::QUEUE_DEVICE_HIGH
            | reg::QUEUE_READY => {
                self.counters.out_of_order_writes += 1;
                self.warn("register write out of order", offset);
            }
            _ => {
                self.counters.bad_accesses += 1;
                self.warn("write to a read-only or unknown register", offset);
            }
        }
    }

    fn set_queue_size(&mut self, value: u32) {
        let Some(q) = self.selected_queue() else {
            self.counters.out_of_order_writes += 1;
            return;
        };
        if q.ready {
            self.counters.out_of_order_writes += 1;
            return;
        }
        let max = u32::from(q.max_size);
        if value == 0 || value > max || !value.is_power_of_two() {
            q.bad_size = true;
            self.counters.bad_queue_sizes += 1;
            self.warn("bad queue size", value.into());
        } else {
            q.size = value as u16;
            q.bad_size = false;
        }
    }

    fn set_queue_ready(&mut self, value: u32) {
        let mem = self.mem.clone();
        let Some(q) = self.queues.get_mut(self.queue_sel as usize) else {
            self.counters.out_of_order_writes += 1;
            return;
        };
        if value == 0 {
            q.ready = false;
            return;
        }
        let config = *q;
        match build_queue(&config, &mem) {
            Ok(_) => q.ready = true,
            Err(QueueRefusal::Config) => {
                self.counters.bad_queues += 1;
                self.warn("queue configuration refused", self.queue_sel.into());
            }
            Err(QueueRefusal::OutsideRam) => {
                self.counters.bad_queues += 1;
                self.needs_reset("queue rings outside guest RAM", config.desc);
            }
        }
    }

    fn set_status(&mut self, value: u32) {
        if value == 0 {
            self.reset();
            return;
        }
        // NEEDS_RESET is the device's to set; the driver may write it back.
        let needs_reset = self.irq.needs_reset.load(Ordering::SeqCst);
        let value = value & !DEVICE_NEEDS_RESET;
        let old = self.status;
        // The driver only adds bits (a reset clears them).
        if value & old != old {
            self.counters.out_of_order_writes += 1;
            self.warn("status bits cleared without a reset", value.into());
            return;
        }
        let added = value & !old;
        if added & FAILED != 0 {
            self.status = value;
            return;
        }
        let mut new = old;
        for bit in [ACKNOWLEDGE, DRIVER, FEATURES_OK, DRIVER_OK] {
            if added & bit == 0 {
                continue;
            }
            let allowed = match bit {
                ACKNOWLEDGE => true,
                DRIVER => new & ACKNOWLEDGE != 0,
                FEATURES_OK => new & DRIVER != 0 && self.features_acceptable(),
                _ => new & FEATURES_OK != 0 && !needs_reset,
            };
            if !allowed {
                self.counters.out_of_order_writes += 1;
                self.warn("status bit refused", bit.into());
                break;
            }
            if bit == DRIVER_OK {
                self.irq.driver_ok.store(true, Ordering::SeqCst);
                if !self.activate() {
                    break;
                }
            }
            new |= bit;
        }
        self.status = new;
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.features();
        self.driver_features & !offered == 0 && self.driver_features & F_VERSION_1 != 0
    }

    /// Hands the device its queues; false (and NEEDS_RESET) on failure.
    fn activate(&mut self) -> bool {
        let event_idx = self.driver_features & F_RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for config in &self.queues {
            let queue = match build_queue(config, &self.mem) {
                Ok(mut q) => {
                    q.set_event_idx(event_idx);
                    q
                }
                Err(_) => {
                    // Not enabled by the driver: an unready queue.
                    let Ok(q) = Queue::new(config.max_size) else {
                        continue;
                    };
                    q
                }
            };
            queues.push(queue);
        }
        let queue_events = match self.events.iter().map(EventFd::try_clone).collect() {
            Ok(events) => events,
            Err(e) => {
                tracing::error!(error = %e, "virtio-mmio: cannot share the queue events");
                self.needs_reset("no queue events", 0);
                return false;
            }
        };
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            queue_events,
            interrupt: self.irq.clone(),
            acked_features: self.driver_features,
        };
        match self.device.activate(activation) {
            Ok(()) => true,
            Err(e) => {
                self.needs_reset("device activation failed", 0);
                tracing::debug!(error = %e, "virtio activation");
                false
            }
        }
    }

    fn notify(&mut self, value: u32) {
        let index = value & 0xffff;
        let running = self.status & DRIVER_OK != 0 && !self.irq.needs_reset.load(Ordering::SeqCst);
        let ready = self.queues.get(index as usize).is_some_and(|q| q.ready);
        if !running || !ready {
            self.counters.ignored_notifies += 1;
            self.warn("queue notification ignored", value.into());
            return;
        }
        // Fails only when the counter would overflow: a wakeup is pending.
        let _ = self.events[index as usize].write(1);
    }
}

enum QueueRefusal {
    /// Bad size or misaligned rings.
    Config,
    /// Rings not in guest RAM.
    OutsideRam,
}

/// A `Queue` for `config`, checked against `mem`.
fn build_queue(config: &QueueConfig, mem: &GuestMemoryMmap) -> Result<Queue, QueueRefusal> {
    if config.bad_size {
        return Err(QueueRefusal::Config);
    }
    let mut q = Queue::new(config.max_size).map_err(|_| QueueRefusal::Config)?;
    q.try_set_size(config.size)
        .map_err(|_| QueueRefusal::Config)?;
    q.try_set_desc_table_address(GuestAddress(config.desc))
        .map_err(|_| QueueRefusal::Config)?;
    q.try_set_avail_ring_address(GuestAddress(config.driver))
        .map_err(|_| QueueRefusal::Config)?;
    q.try_set_used_ring_address(GuestAddress(config.device))
        .map_err(|_| QueueRefusal::Config)?;
    q.set_ready(true);
    if !q.is_valid(mem) {
        return Err(QueueRefusal::OutsideRam);
    }
    Ok(q)
}

impl BusDevice for MmioTransport {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= reg::CONFIG {
            self.device.read_config(offset - reg::CONFIG, data);
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
                self.counters.bad_accesses += 1;
                data.fill(0);
            }
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= reg::CONFIG {
            self.device.write_config(offset - reg::CONFIG, data);
            return;
        }
        if data.len() != 4 || !offset.is_multiple_of(4) {
            self.counters.bad_accesses += 1;
            self.warn("register access of a bad size or alignment", offset);
            return;
        }
        let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
        self.write_reg(offset, value);
    }
}
