//! MSIs from device threads (virtio-pci's MSI-X).
//!
//! On kvm every distinct message gets a GSI of [`hv::MSI_GSI_RANGE`], an
//! MSI route and an irqfd, the first time it is sent: afterwards sending
//! it is an eventfd write that KVM turns into an interrupt without a VMM
//! ioctl, as QEMU, Firecracker and Cloud Hypervisor do. On emu (whose
//! irqfds are served by a thread of their own, one more hop) and whenever
//! the routes run out or cannot be set, the message goes straight to the
//! irqchip with [`hv::Vm::signal_msi`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use devices::ratelimit::RateLimiter;
use hv::{EventFd, MsiMessage, Vm, MSI_GSI_RANGE};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

/// Sends MSIs for the devices of one VM.
pub(crate) struct MsiSender {
    vm: Arc<dyn Vm>,
    /// Route messages through irqfds (kvm).
    irqfds: Option<Mutex<Routes>>,
    log_limit: RateLimiter,
}

#[derive(Default)]
struct Routes {
    by_message: HashMap<(u64, u32), EventFd>,
    next_gsi: u32,
    /// Setting up a route failed once: do not try again.
    broken: bool,
}

impl MsiSender {
    pub fn new(vm: Arc<dyn Vm>, use_irqfds: bool) -> MsiSender {
        MsiSender {
            vm,
            irqfds: use_irqfds.then(|| {
                Mutex::new(Routes {
                    next_gsi: MSI_GSI_RANGE.start,
                    ..Routes::default()
                })
            }),
            log_limit: RateLimiter::default(),
        }
    }

    pub fn send(&self, address: u64, data: u32) {
        if let Some(routes) = &self.irqfds {
            let mut routes = routes.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(event) = routes.event(&*self.vm, address, data) {
                if event.write(1).is_ok() {
                    return;
                }
            }
        }
        if let Err(e) = self.vm.signal_msi(MsiMessage { address, data }) {
            if self.log_limit.allow() {
                tracing::warn!(address, data, error = %e, "cannot deliver an MSI");
            }
        }
    }
}

impl Routes {
    /// The irqfd of a message, set up on first use; None when routes ran
    /// out or the accelerator refused one.
    fn event(&mut self, vm: &dyn Vm, address: u64, data: u32) -> Option<&EventFd> {
        let key = (address, data);
        if !self.by_message.contains_key(&key) {
            if self.broken || self.next_gsi >= MSI_GSI_RANGE.end {
                return None;
            }
            let gsi = self.next_gsi;
            let event = EventFd::new(EFD_NONBLOCK).ok()?;
            let routed = vm
                .set_msi_route(gsi, MsiMessage { address, data })
                .and_then(|()| vm.register_irqfd(&event, gsi));
            if let Err(e) = routed {
                tracing::info!(error = %e, "MSIs go through signal_msi");
                self.broken = true;
                return None;
            }
            self.next_gsi += 1;
            self.by_message.insert(key, event);
        }
        self.by_message.get(&key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest programs MSI-X entries with a few messages; each gets its
    /// own route once.
    fn messages_get_one_route_each(hv: &dyn hv::Hypervisor) {
        let vm: Arc<dyn Vm> = Arc::from(hv.create_vm(hv::VmConfig::new(1)).unwrap());
        let sender = MsiSender::new(vm, true);
        for _ in 0..3 {
            sender.send(0xfee0_0000, 0x41);
            sender.send(0xfee0_0000, 0x42);
        }
        let routes = sender.irqfds.as_ref().unwrap().lock().unwrap();
        assert_eq!(routes.by_message.len(), 2);
        assert_eq!(routes.next_gsi, MSI_GSI_RANGE.start + 2);
        assert!(!routes.broken);
    }

    #[test]
    fn messages_get_one_route_each_on_emu() {
        messages_get_one_route_each(&hv_emu::EmuHypervisor::new());
    }

    #[test]
    fn messages_get_one_route_each_on_kvm() {
        match hv_kvm::KvmHypervisor::new() {
            Ok(kvm) => messages_get_one_route_each(&kvm),
            Err(e) => eprintln!("SKIPPED messages_get_one_route_each_on_kvm: {e}"),
        }
    }
}
