//! The in-"kernel" irqchip of the emu accelerator: the IOAPIC, the i8259
//! pair and the i8254 PIT of the VM, the local APIC of every vCPU, and the
//! routing between them — KVM's `KVM_IRQ_LINE` → IOAPIC/PIC → LAPIC IRR →
//! `KVM_REQ_EVENT` path, in software.
//!
//! GSI routing follows the PC convention (and QEMU's on KVM): GSI `n < 16`
//! drives PIC input `n` and IOAPIC pin `n`, except that ISA IRQ 0 (the PIT)
//! arrives on IOAPIC pin 2, as the MADT's interrupt source override says.
//! GSIs 16–23 exist only on the IOAPIC.
//!
//! Locking: each device has its own mutex; routing never holds two device
//! locks at once (a device returns what must be routed, the lock is
//! dropped, then the targets are locked one by one). The one nesting is a
//! vCPU's run state → its LAPIC (and → the PIC) when it decides whether to
//! sleep, so nothing may take a run state while holding a LAPIC or the PIC.
//! The irqfd thread routes while holding its irqfd table (`irqfd`), which
//! therefore comes before every lock here; nothing here takes it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use irqchip::ioapic::{Delivery, IoApic};
use irqchip::lapic::{Ipi, TriggerMode};
use irqchip::pic::Pic;
use irqchip::pit::Pit;
use irqchip::DeliveryMode;

use crate::vcpu::VcpuShared;

/// IOAPIC pins.
pub const IOAPIC_PINS: u32 = 24;
/// Guest-physical base of the IOAPIC's registers.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
pub const IOAPIC_SIZE: u64 = 0x1000;

/// The machine-wide interrupt controllers and timer.
pub(crate) struct Platform {
    epoch: Instant,
    /// Nanoseconds the clock was stopped for ([`Platform::freeze`]).
    stopped_ns: AtomicU64,
    /// The clock's value while it is stopped; `u64::MAX` while it runs.
    frozen_at: AtomicU64,
    pub ioapic: Mutex<IoApic>,
    pub pic: Mutex<Pic>,
    /// The PIT, unless the VM was created without one (its ports then
    /// reach the VMM).
    pub pit: Option<Mutex<Pit>>,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Platform {
    pub fn new(vcpus: u32, pit: bool) -> Platform {
        Platform {
            epoch: Instant::now(),
            stopped_ns: AtomicU64::new(0),
            frozen_at: AtomicU64::new(u64::MAX),
            // The IOAPIC's id follows the LAPIC ids, as in the MADT.
            ioapic: Mutex::new(IoApic::new(vcpus.min(0xfe) as u8)),
            pic: Mutex::new(Pic::new()),
            pit: pit.then(|| Mutex::new(Pit::new())),
        }
    }

    /// Nanoseconds on the VM's monotonic clock (every device's time base).
    /// It stands still while the VM is paused.
    pub fn now_ns(&self) -> u64 {
        let frozen = self.frozen_at.load(Ordering::Acquire);
        if frozen != u64::MAX {
            return frozen;
        }
        // `stopped_ns` is an offset taken modulo 2^64: a restored clock
        // may be ahead of this VM's host time (see `set_clock`).
        self.host_ns()
            .wrapping_sub(self.stopped_ns.load(Ordering::Acquire))
    }

    /// Makes the clock read `ns` now (a restored VM goes on from the
    /// time it was saved at); a stopped clock stays stopped there.
    pub fn set_clock(&self, ns: u64) {
        if self.frozen_at.load(Ordering::Acquire) != u64::MAX {
            self.frozen_at.store(ns, Ordering::Release);
            return;
        }
        let offset = self.host_ns().wrapping_sub(ns);
        self.stopped_ns.store(offset, Ordering::Release);
    }

    fn host_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Stops the clock (the VM is paused; no vCPU runs).
    pub fn freeze(&self) {
        if self.frozen_at.load(Ordering::Acquire) == u64::MAX {
            let now = self.now_ns();
            self.frozen_at.store(now, Ordering::Release);
        }
    }

    /// Lets the clock go on from where [`Platform::freeze`] stopped it.
    pub fn thaw(&self) {
        let frozen = self.frozen_at.load(Ordering::Acquire);
        if frozen == u64::MAX {
            return;
        }
        let stopped = self.host_ns().wrapping_sub(frozen);
        // The offset first: a reader that sees the clock running sees it.
        self.stopped_ns.store(stopped, Ordering::Release);
        self.frozen_at.store(u64::MAX, Ordering::Release);
    }
}

/// What a message did to a LAPIC. The vCPU-state part is applied after the
/// LAPIC's lock is dropped: a vCPU going to sleep holds its state lock
/// while it looks at its LAPIC, so taking them in the other order here
/// would deadlock.
enum Outcome {
    Accepted,
    Refused,
    Nmi,
    Init,
    Sipi(u8),
}

impl Outcome {
    fn accepted(yes: bool) -> Outcome {
        if yes {
            Outcome::Accepted
        } else {
            Outcome::Refused
        }
    }

    /// Applies the outcome to the vCPU and wakes it; returns whether the
    /// message was taken.
    fn apply(self, vcpu: &VcpuShared) -> bool {
        let taken = match self {
            Outcome::Accepted => true,
            Outcome::Refused => false,
            Outcome::Nmi => {
                vcpu.raise_nmi();
                true
            }
            Outcome::Init => {
                vcpu.receive_init();
                true
            }
            Outcome::Sipi(vector) => vcpu.receive_sipi(vector),
        };
        if taken {
            vcpu.notify_event();
        }
        taken
    }
}

/// Where interrupts go: the vCPUs of one VM.
pub(crate) struct Router<'a> {
    pub platform: &'a Platform,
    pub vcpus: &'a [std::sync::Arc<VcpuShared>],
}

impl Router<'_> {
    /// Sets the level of a GSI (KVM_IRQ_LINE).
    pub fn set_gsi(&self, gsi: u32, level: bool) {
        if gsi < 16 && gsi != 2 {
            let pending = {
                let mut pic = lock(&self.platform.pic);
                pic.set_irq(gsi as u8, level);
                if tracepoints::enabled(tracepoints::Event::KvmPicSetIrq) {
                    let chip = (gsi / 8) as usize;
                    let byte = |mask: u16| (mask >> (chip * 8)) as u8;
                    let (elcr, imr) = (byte(pic.elcr()), byte(pic.imr()));
                    tracepoints::kvm_pic_set_irq(chip as u8, (gsi % 8) as u8, elcr, imr, false);
                }
                pic.pending()
            };
            if pending {
                self.wake_pic_acceptors();
            }
        }
        let pin = if gsi == 0 { 2 } else { gsi };
        if pin < IOAPIC_PINS {
            let deliveries = {
                let mut ioapic = lock(&self.platform.ioapic);
                let deliveries = ioapic.set_irq(pin as usize, level);
                if level && tracepoints::enabled(tracepoints::Event::KvmIoapicSetIrq) {
                    if let Some(e) = ioapic.entry(pin as usize) {
                        tracepoints::kvm_ioapic_set_irq(e.raw, pin, deliveries.is_empty());
                    }
                }
                deliveries
            };
            self.deliver_all(deliveries);
        }
    }

    /// The PIC's INTR output reaches the vCPUs whose LAPIC passes it
    /// through (virtual wire mode, or a disabled LAPIC).
    pub fn wake_pic_acceptors(&self) {
        for vcpu in self.vcpus {
            if vcpu.lapic().accept_pic_interrupts() {
                vcpu.notify_event();
            }
        }
    }

    pub fn deliver_all(&self, deliveries: Vec<Delivery>) {
        for d in deliveries {
            self.deliver(&d);
        }
    }

    /// Delivers an IOAPIC or MSI message to the LAPICs it names.
    pub fn deliver(&self, d: &Delivery) {
        let lowest = d.delivery_mode == DeliveryMode::LowestPriority;
        for vcpu in self.vcpus {
            let outcome = {
                let mut lapic = vcpu.lapic();
                if !lapic.matches_destination(d.dest, d.dest_mode_logical, false) {
                    continue;
                }
                match d.delivery_mode {
                    DeliveryMode::Fixed | DeliveryMode::LowestPriority => {
                        let accepted = lapic.accept_interrupt(d.vector, d.level_triggered);
                        if accepted {
                            tracepoints::kvm_apic_accept_irq(
                                lapic.id(),
                                d.delivery_mode as u32,
                                d.level_triggered,
                                d.vector,
                            );
                        }
                        Outcome::accepted(accepted)
                    }
                    DeliveryMode::Nmi => Outcome::Nmi,
                    DeliveryMode::Init => {
                        lapic.deliver_init();
                        Outcome::Init
                    }
                    // ExtINT: the vCPU asks the PIC for the vector.
                    DeliveryMode::ExtInt => Outcome::Accepted,
                    DeliveryMode::StartUp | DeliveryMode::Smi | DeliveryMode::Reserved => {
                        Outcome::Refused
                    }
                }
            };
            if outcome.apply(vcpu) && lowest {
                // Lowest priority: one LAPIC takes it (the first that
                // matches; all vCPUs have the same priority here).
                break;
            }
        }
    }

    /// Routes an IPI written to vCPU `source`'s ICR.
    pub fn send_ipi(&self, source: usize, ipi: &Ipi) {
        if tracepoints::enabled(tracepoints::Event::KvmApicIpi) {
            tracepoints::kvm_apic_ipi(icr_low(ipi), ipi.destination);
        }
        let lowest = ipi.delivery_mode == DeliveryMode::LowestPriority;
        for (i, vcpu) in self.vcpus.iter().enumerate() {
            let outcome = {
                let mut lapic = vcpu.lapic();
                if !lapic.matches_ipi(ipi, i == source) {
                    continue;
                }
                match ipi.delivery_mode {
                    DeliveryMode::Fixed | DeliveryMode::LowestPriority => Outcome::accepted(
                        lapic.accept_interrupt(ipi.vector, ipi.trigger == TriggerMode::Level),
                    ),
                    DeliveryMode::Nmi => Outcome::Nmi,
                    DeliveryMode::Init if !ipi.is_init_deassert() => {
                        lapic.deliver_init();
                        Outcome::Init
                    }
                    DeliveryMode::StartUp => Outcome::Sipi(ipi.vector),
                    _ => Outcome::Refused,
                }
            };
            if outcome.apply(vcpu) && lowest {
                break;
            }
        }
    }

    /// Sends an edge-triggered fixed interrupt (`nmi` false) or an NMI to
    /// the vCPU whose APIC ID is `apic_id`; returns whether it took it.
    pub fn send_to(&self, apic_id: u32, vector: u8, nmi: bool) -> bool {
        let Some(vcpu) = self.vcpus.iter().find(|v| v.lapic().id() == apic_id) else {
            return false;
        };
        let outcome = if nmi {
            Outcome::Nmi
        } else {
            Outcome::accepted(vcpu.lapic().accept_interrupt(vector, false))
        };
        outcome.apply(vcpu)
    }

    /// A level-triggered vector was EOI'd on some LAPIC.
    pub fn eoi(&self, vector: u8) {
        let deliveries = lock(&self.platform.ioapic).eoi(vector);
        self.deliver_all(deliveries);
    }

    /// Raises IRQ 0 once for every PIT output edge up to `now_ns`.
    pub fn poll_pit(&self, now_ns: u64) {
        let Some(pit) = &self.platform.pit else {
            return;
        };
        let due = lock(pit).next_irq_ns().is_some_and(|t| t <= now_ns);
        if !due {
            return;
        }
        let edges = lock(pit).poll(now_ns);
        // Edges missed while nobody polled coalesce into one interrupt, as
        // a real PIC would have kept only one request pending.
        if edges > 0 {
            self.set_gsi(0, true);
            self.set_gsi(0, false);
        }
    }
}

/// The low ICR word that describes `ipi` (for `kvm_apic_ipi`).
fn icr_low(ipi: &Ipi) -> u32 {
    use irqchip::lapic::{DestMode, DestShorthand};
    let shorthand = match ipi.dest_shorthand {
        DestShorthand::None => 0,
        DestShorthand::SelfOnly => 1,
        DestShorthand::AllIncludingSelf => 2,
        DestShorthand::AllExcludingSelf => 3,
    };
    u32::from(ipi.vector)
        | (ipi.delivery_mode as u32) << 8
        | u32::from(ipi.dest_mode == DestMode::Logical) << 11
        | u32::from(ipi.level) << 14
        | u32::from(ipi.trigger == TriggerMode::Level) << 15
        | shorthand << 18
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn a_frozen_clock_stands_still_and_goes_on_from_there() {
        let p = Platform::new(1, false);
        std::thread::sleep(std::time::Duration::from_millis(5));
        p.freeze();
        let at = p.now_ns();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert_eq!(p.now_ns(), at);
        p.thaw();
        let after = p.now_ns();
        assert!(after >= at && after - at < 20_000_000, "{at} {after}");
    }

    #[test]
    fn a_set_clock_goes_on_from_the_value_running_or_stopped() {
        let p = Platform::new(1, false);
        let ahead = 3_000_000_000_000;
        p.set_clock(ahead);
        let now = p.now_ns();
        assert!((ahead..ahead + 20_000_000).contains(&now), "{now}");
        p.freeze();
        p.set_clock(5);
        assert_eq!(p.now_ns(), 5);
        p.thaw();
        assert!(p.now_ns() < 20_000_000);
    }
}
