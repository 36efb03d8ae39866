//! What every virtio transport shares: feature negotiation, the device
//! status state machine, queue configuration and its checks, activation
//! and queue notifications. [`crate::mmio`] and the virtio-pci transport
//! (crate `pci`) wrap a [`TransportCore`] in their own register layouts and
//! interrupt mechanisms.
//!
//! The core enforces the order of the driver's initialisation (virtio 1.2,
//! 3.1.1): features are written between DRIVER and FEATURES_OK, queues are
//! set up between FEATURES_OK and DRIVER_OK, notifications before
//! DRIVER_OK are ignored. Bad queue sizes or ring addresses refuse the
//! queue's enable; rings outside RAM and device errors set
//! DEVICE_NEEDS_RESET.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use devices::ratelimit::RateLimiter;
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryMmap};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::status::*;
use crate::{Activation, Interrupt, QueueNotifier, VirtioDevice, F_RING_EVENT_IDX, F_VERSION_1};

/// The part of a device's status its worker thread changes too: the
/// transport's [`Interrupt`] implementation shares it with the core.
#[derive(Default)]
pub struct DeviceState {
    needs_reset: AtomicBool,
    /// Times the device (or the transport) asked for a reset.
    device_errors: AtomicU64,
    /// DRIVER_OK is set (a configuration change is worth signalling).
    driver_ok: AtomicBool,
    /// Where the device's writes to guest RAM are reported.
    write_hook: std::sync::OnceLock<crate::GuestWriteHook>,
    /// Parks the device's worker while the VM is paused (made on first use).
    pause_gate: std::sync::OnceLock<Option<Arc<crate::pause::PauseGate>>>,
}

impl std::fmt::Debug for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceState")
            .field("needs_reset", &self.needs_reset)
            .field("device_errors", &self.device_errors)
            .field("driver_ok", &self.driver_ok)
            .field("write_hook", &self.write_hook.get().is_some())
            .finish()
    }
}

impl DeviceState {
    /// Reports the device's writes to guest RAM to `hook` (set once,
    /// before the guest runs; later calls are ignored).
    pub fn set_guest_write_hook(&self, hook: crate::GuestWriteHook) {
        let _ = self.write_hook.set(hook);
    }

    /// The device's pause gate (None only when its eventfd could not be
    /// made: the device then cannot be paused, and says so).
    pub fn pause_gate(&self) -> Option<Arc<crate::pause::PauseGate>> {
        self.pause_gate
            .get_or_init(|| match crate::pause::PauseGate::new() {
                Ok(gate) => Some(Arc::new(gate)),
                Err(e) => {
                    tracing::error!(error = %e, "virtio: cannot create a pause gate");
                    None
                }
            })
            .clone()
    }

    /// The hook the transport's [`Interrupt::guest_write_hook`] returns.
    pub fn guest_write_hook(&self) -> Option<crate::GuestWriteHook> {
        self.write_hook.get().cloned()
    }

    /// Records a device error and sets DEVICE_NEEDS_RESET; true when the
    /// transport should now signal a configuration change (the flag was
    /// not set yet and the driver is running).
    pub fn set_needs_reset(&self) -> bool {
        self.device_errors.fetch_add(1, Ordering::Relaxed);
        !self.needs_reset.swap(true, Ordering::SeqCst) && self.driver_ok.load(Ordering::SeqCst)
    }

    pub fn needs_reset(&self) -> bool {
        self.needs_reset.load(Ordering::SeqCst)
    }

    pub fn device_errors(&self) -> u64 {
        self.device_errors.load(Ordering::Relaxed)
    }

    fn clear(&self) {
        self.needs_reset.store(false, Ordering::SeqCst);
        self.driver_ok.store(false, Ordering::SeqCst);
    }
}

/// A queue as the driver configures it.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueueConfig {
    pub max_size: u16,
    pub size: u16,
    /// The driver wrote a size the device refuses: the queue cannot be
    /// enabled until it writes a good one.
    pub bad_size: bool,
    pub desc: u64,
    pub driver: u64,
    pub device: u64,
    pub ready: bool,
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

/// One of a queue's three ring addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ring {
    Desc,
    Driver,
    Device,
}

/// Which half of a 64-bit register a 32-bit access writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Half {
    Low,
    High,
    /// A 64-bit access.
    Both,
}

/// Guest misbehaviour the transport refused, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportCounters {
    /// Register accesses of the wrong size or alignment, or to no register.
    pub bad_accesses: u64,
    /// Writes not allowed in the current device status.
    pub out_of_order_writes: u64,
    /// Queue notifications before DRIVER_OK, after NEEDS_RESET, or of no
    /// queue.
    pub ignored_notifies: u64,
    /// Queue sizes that are zero, not a power of two, or above the maximum.
    pub bad_queue_sizes: u64,
    /// Queues refused at enable (bad size, misaligned or outside RAM).
    pub bad_queues: u64,
    /// Device errors (bad descriptor chains, ...) that set NEEDS_RESET.
    pub device_errors: u64,
    /// Interrupt vectors (MSI-X) the driver assigned that do not exist.
    pub bad_vectors: u64,
}

/// What a status write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusChange {
    /// The driver wrote 0: the device was reset; the transport clears its
    /// own interrupt state.
    Reset,
    /// Anything else.
    Other,
}

/// The transport-independent state of a virtio device.
pub struct TransportCore {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemoryMmap,
    /// The transport's name in logs ("virtio-mmio", "virtio-pci").
    name: &'static str,
    state: Arc<DeviceState>,
    interrupt: Arc<dyn Interrupt>,
    /// One per queue, written by a notification (or by the VM's ioeventfd).
    events: Vec<EventFd>,
    status: u32,
    pub device_features_sel: u32,
    pub driver_features_sel: u32,
    driver_features: u64,
    pub queue_sel: u32,
    queues: Vec<QueueConfig>,
    config_generation: u32,
    pub counters: TransportCounters,
    log_limit: RateLimiter,
}

impl TransportCore {
    /// `interrupt` is the transport's, sharing `state`: its `needs_reset`
    /// calls [`DeviceState::set_needs_reset`] and signals a configuration
    /// change when that says so.
    pub fn new(
        name: &'static str,
        device: Box<dyn VirtioDevice>,
        mem: GuestMemoryMmap,
        state: Arc<DeviceState>,
        interrupt: Arc<dyn Interrupt>,
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
        Ok(TransportCore {
            device,
            mem,
            name,
            state,
            interrupt,
            events,
            status: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            queue_sel: 0,
            queues,
            config_generation: 0,
            counters: TransportCounters::default(),
            log_limit: RateLimiter::default(),
        })
    }

    /// The device model.
    pub fn device(&self) -> &dyn VirtioDevice {
        &*self.device
    }

    pub fn device_mut(&mut self) -> &mut dyn VirtioDevice {
        &mut *self.device
    }

    pub fn state(&self) -> &Arc<DeviceState> {
        &self.state
    }

    /// The device status (DEVICE_NEEDS_RESET included).
    pub fn status(&self) -> u32 {
        if self.state.needs_reset() {
            self.status | DEVICE_NEEDS_RESET
        } else {
            self.status
        }
    }

    /// DRIVER_OK is set and the device does not need a reset.
    pub fn running(&self) -> bool {
        self.status & DRIVER_OK != 0 && !self.state.needs_reset()
    }

    pub fn config_generation(&self) -> u32 {
        self.config_generation
    }

    pub fn counters(&self) -> TransportCounters {
        TransportCounters {
            device_errors: self.state.device_errors(),
            ..self.counters
        }
    }

    /// The queues' configurations.
    pub fn queues(&self) -> &[QueueConfig] {
        &self.queues
    }

    /// The queue QueueSel names, if it exists.
    pub fn selected_queue(&self) -> Option<&QueueConfig> {
        self.queues.get(self.queue_sel as usize)
    }

    /// The queue events, for the VM to write without a VM exit: one
    /// [`QueueNotifier`] per queue, at `addr(queue)`, matching `datamatch(queue)`.
    pub fn notifiers(
        &self,
        addr: impl Fn(usize) -> u64,
        datamatch: impl Fn(usize) -> Option<u32>,
    ) -> std::io::Result<Vec<QueueNotifier>> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, event)| {
                Ok(QueueNotifier {
                    addr: addr(i),
                    pio: false,
                    datamatch: datamatch(i),
                    event: event.try_clone()?,
                })
            })
            .collect()
    }

    /// Logs a guest error (rate-limited).
    pub fn warn(&self, what: &str, detail: u64) {
        if self.log_limit.allow() {
            tracing::warn!(
                transport = self.name,
                device = self.device.device_type(),
                what,
                detail,
                "virtio: guest error"
            );
        }
    }

    /// Counts and logs an access of a bad size, alignment or offset.
    pub fn bad_access(&mut self, what: &str, offset: u64) {
        self.counters.bad_accesses += 1;
        self.warn(what, offset);
    }

    /// Counts and logs a write the device status does not allow.
    pub fn out_of_order(&mut self, what: &str, detail: u64) {
        self.counters.out_of_order_writes += 1;
        self.warn(what, detail);
    }

    /// Sets DEVICE_NEEDS_RESET and, once the driver is running, tells it.
    pub fn needs_reset(&mut self, what: &str, detail: u64) {
        self.warn(what, detail);
        self.interrupt.needs_reset();
    }

    /// 32 bits of the device's features (`device_features_sel` chooses).
    pub fn device_features_word(&self) -> u32 {
        match self.device_features_sel {
            0 => self.device.features() as u32,
            1 => (self.device.features() >> 32) as u32,
            _ => 0,
        }
    }

    /// 32 bits of the driver's features (`driver_features_sel` chooses).
    pub fn driver_features_word(&self) -> u32 {
        match self.driver_features_sel {
            0 => self.driver_features as u32,
            1 => (self.driver_features >> 32) as u32,
            _ => 0,
        }
    }

    fn features_phase(&self) -> bool {
        self.status & DRIVER != 0 && self.status & FEATURES_OK == 0
    }

    fn queue_phase(&self) -> bool {
        self.status & FEATURES_OK != 0 && self.status & DRIVER_OK == 0
    }

    /// The driver writes 32 bits of its features.
    pub fn write_driver_features(&mut self, value: u32) {
        if !self.features_phase() {
            self.out_of_order("driver features written out of order", value.into());
            return;
        }
        match self.driver_features_sel {
            0 => self.driver_features = self.driver_features & !0xffff_ffff | u64::from(value),
            1 => self.driver_features = self.driver_features & 0xffff_ffff | u64::from(value) << 32,
            _ => {}
        }
    }

    /// The selected queue, if the driver may change its configuration now
    /// (between FEATURES_OK and DRIVER_OK, the queue not enabled); counts
    /// the write as out of order otherwise.
    fn queue_for_write(&mut self, what: &str) -> Option<&mut QueueConfig> {
        let writable = self.queue_phase()
            && self
                .queues
                .get(self.queue_sel as usize)
                .is_some_and(|q| !q.ready);
        if !writable {
            self.out_of_order(what, self.queue_sel.into());
            return None;
        }
        self.queues.get_mut(self.queue_sel as usize)
    }

    /// The driver writes the selected queue's size.
    pub fn set_queue_size(&mut self, value: u32) {
        let Some(q) = self.queue_for_write("queue size written out of order") else {
            return;
        };
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

    /// The driver writes (half of) one of the selected queue's ring
    /// addresses.
    pub fn set_queue_ring(&mut self, ring: Ring, half: Half, value: u64) {
        let Some(q) = self.queue_for_write("queue address written out of order") else {
            return;
        };
        let field = match ring {
            Ring::Desc => &mut q.desc,
            Ring::Driver => &mut q.driver,
            Ring::Device => &mut q.device,
        };
        *field = match half {
            Half::Low => *field & !0xffff_ffff | value & 0xffff_ffff,
            Half::High => *field & 0xffff_ffff | value << 32,
            Half::Both => value,
        };
    }

    /// The driver enables (non-zero) or disables the selected queue. A
    /// queue whose configuration is bad stays disabled; rings outside RAM
    /// also set DEVICE_NEEDS_RESET.
    pub fn set_queue_ready(&mut self, value: u32) {
        if !self.queue_phase() || self.queue_sel as usize >= self.queues.len() {
            self.out_of_order("queue enable written out of order", value.into());
            return;
        }
        let mem = self.mem.clone();
        let q = &mut self.queues[self.queue_sel as usize];
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

    /// Resets the device and the transport-independent state.
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
        self.state.clear();
    }

    /// The driver writes the device status.
    pub fn set_status(&mut self, value: u32) -> StatusChange {
        if value == 0 {
            self.reset();
            return StatusChange::Reset;
        }
        // NEEDS_RESET is the device's to set; the driver may write it back.
        let needs_reset = self.state.needs_reset();
        let value = value & !DEVICE_NEEDS_RESET;
        let old = self.status;
        // The driver only adds bits (a reset clears them).
        if value & old != old {
            self.out_of_order("status bits cleared without a reset", value.into());
            return StatusChange::Other;
        }
        let added = value & !old;
        if added & FAILED != 0 {
            self.status = value;
            return StatusChange::Other;
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
                self.out_of_order("status bit refused", bit.into());
                break;
            }
            if bit == DRIVER_OK {
                self.state.driver_ok.store(true, Ordering::SeqCst);
                if !self.activate(None) {
                    break;
                }
            }
            new |= bit;
        }
        self.status = new;
        StatusChange::Other
    }

    fn features_acceptable(&self) -> bool {
        let offered = self.device.features();
        self.driver_features & !offered == 0 && self.driver_features & F_VERSION_1 != 0
    }

    /// Hands the device its queues (at `restored` positions after a
    /// restore, else at 0); false (and NEEDS_RESET) on failure.
    fn activate(&mut self, restored: Option<&[crate::pause::QueuePosition]>) -> bool {
        let event_idx = self.driver_features & F_RING_EVENT_IDX != 0;
        let mut queues = Vec::with_capacity(self.queues.len());
        for (i, config) in self.queues.iter().enumerate() {
            // Only the queues the driver enabled were checked (and can
            // pass); the others are handed over unready.
            let built = match config.ready {
                true => build_queue(config, &self.mem),
                false => Err(QueueRefusal::Config),
            };
            let queue = match built {
                Ok(mut q) => {
                    q.set_event_idx(event_idx);
                    if let Some(at) = restored.and_then(|r| r.get(i)) {
                        q.set_next_avail(at.next_avail);
                        q.set_next_used(at.next_used);
                    }
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
                tracing::error!(error = %e, transport = self.name, "cannot share the queue events");
                self.needs_reset("no queue events", 0);
                return false;
            }
        };
        let activation = Activation {
            mem: self.mem.clone(),
            queues,
            queue_events,
            interrupt: self.interrupt.clone(),
            acked_features: self.driver_features,
            restored: restored.is_some(),
        };
        match self.device.activate(activation) {
            Ok(()) => true,
            Err(e) => {
                self.needs_reset("device activation failed", 0);
                tracing::debug!(error = %e, transport = self.name, "virtio activation");
                false
            }
        }
    }

    /// The driver notifies queue `index`: wakes the device's worker, or
    /// counts the notification as ignored when the device is not running
    /// or the queue is not enabled.
    pub fn notify(&mut self, index: u32) {
        let ready = self.queues.get(index as usize).is_some_and(|q| q.ready);
        if !self.running() || !ready {
            self.counters.ignored_notifies += 1;
            self.warn("queue notification ignored", index.into());
            return;
        }
        // Fails only when the counter would overflow: a wakeup is pending.
        let _ = self.events[index as usize].write(1);
    }
}

mod state;
pub use state::{QueueSaved, TransportSaved, TransportStateError};

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
    if !rings_in_ram(config, mem) {
        return Err(QueueRefusal::OutsideRam);
    }
    // virtio-queue's `is_valid` would say the same, but logs an error each
    // time it refuses: a guest re-enabling a bad queue in a loop would
    // flood the host's log. The checks above are that test, done quietly.
    q.set_ready(true);
    Ok(q)
}

/// The queue's three rings (of `config.size` entries) lie in guest RAM:
/// the descriptor table and the available ring readable, the used ring
/// writable (virtio 1.2, 2.7).
fn rings_in_ram(config: &QueueConfig, mem: &GuestMemoryMmap) -> bool {
    use vm_memory::GuestMemoryBackend;
    let n = u64::from(config.size);
    // 16-byte descriptors; flags, idx, ring[n], used_event (u16 each);
    // flags, idx (u16 each), ring[n] of 8 bytes, avail_event (u16).
    let rings = [
        (config.desc, 16 * n),
        (config.driver, 6 + 2 * n),
        (config.device, 6 + 8 * n),
    ];
    rings.iter().all(|&(addr, len)| {
        usize::try_from(len)
            .is_ok_and(|len| GuestMemoryBackend::check_range(mem, GuestAddress(addr), len))
    })
}
