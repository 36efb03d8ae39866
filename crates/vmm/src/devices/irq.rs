//! How devices reach the VM: interrupt lines (GSIs), queue notifications
//! registered as ioeventfds, and the hook that tells emu of device writes
//! to guest RAM. Used by the platform, virtio-mmio and PCI parts alike.

use std::sync::Arc;

use devices::ratelimit::RateLimiter;
use devices::IrqLine;
use hv::Vm;

/// Registers the queue notifications of a device as ioeventfds, so that
/// the guest's QueueNotify writes wake the device without a VM exit (kvm)
/// or a trip through the VMM's buses (emu). An accelerator without them
/// leaves the writes to the transport, which signals the same eventfds.
pub(crate) fn register_notifiers(
    vm: &Arc<dyn Vm>,
    device: &str,
    notifiers: Vec<virtio::QueueNotifier>,
) {
    for n in notifiers {
        let addr = if n.pio {
            hv::IoEventAddress::Pio(n.addr as u16)
        } else {
            hv::IoEventAddress::Mmio(n.addr)
        };
        if let Err(e) = vm.register_ioevent(&n.event, addr, n.datamatch.map(u64::from)) {
            tracing::info!(device, error = %e, "queue notifications go through the VMM");
            return;
        }
    }
}

/// Tells `vm` of device writes to guest RAM (emu drops code decoded from
/// the bytes a device overwrote).
pub(crate) fn guest_write_hook(vm: &Arc<dyn Vm>) -> virtio::GuestWriteHook {
    let vm = vm.clone();
    Arc::new(move |gpa, len| vm.note_guest_write(gpa, len))
}

/// Raises a GSI on the VM's irqchip.
pub(crate) struct GsiLine {
    vm: Arc<dyn Vm>,
    gsi: u32,
    log_limit: RateLimiter,
}

impl GsiLine {
    /// The line of `gsi` on `vm`.
    pub(crate) fn line(vm: &Arc<dyn Vm>, gsi: u32) -> Arc<dyn IrqLine> {
        Arc::new(GsiLine {
            vm: vm.clone(),
            gsi,
            log_limit: RateLimiter::default(),
        })
    }
}

impl IrqLine for GsiLine {
    fn set_level(&self, level: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, level) {
            if self.log_limit.allow() {
                tracing::warn!(gsi = self.gsi, error = %e, "cannot set irq line");
            }
        }
    }
}
