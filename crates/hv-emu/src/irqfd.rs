//! Irqfds and MSI routes (KVM_IRQFD, KVM_SET_GSI_ROUTING).
//!
//! One thread per VM, started by the first `register_irqfd` and joined
//! when the VM is dropped, waits on the registered eventfds with epoll.
//! When one becomes readable it consumes the counter and pulses the GSI
//! through the irqchip router, or delivers the GSI's MSI route.
//!
//! Locking: the thread handles an event while holding the irqfd table's
//! lock, so a removal that got the lock knows that no interrupt of the
//! removed irqfd is in flight or will follow. The router it calls takes
//! the device and LAPIC locks (and applies LAPIC outcomes after dropping
//! them, see `platform`); none of those paths takes the table lock, so the
//! table comes first in the lock order.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use hv::{EventFd, HvError, MsiMessage, MSI_GSI_RANGE};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use crate::platform::{lock, IOAPIC_PINS};
use crate::vm::VmShared;

/// The epoll token of the stop eventfd (irqfds count up from 0).
const STOP: u64 = u64::MAX;

struct Irqfd {
    /// The descriptor the VMM registered (what unregistering names).
    key: RawFd,
    gsi: u32,
    /// Our own descriptor of the same eventfd: it stays open, and in the
    /// epoll set, until the irqfd is removed.
    event: EventFd,
}

#[derive(Default)]
struct Table {
    /// By epoll token. Tokens are never reused, so an event the thread
    /// fetched before a removal cannot reach a later registration.
    irqfds: HashMap<u64, Irqfd>,
    next_token: u64,
    routes: HashMap<u32, MsiMessage>,
}

struct Worker {
    epoll: Arc<Epoll>,
    stop: EventFd,
    thread: JoinHandle<()>,
}

/// A VM's irqfds, MSI routes and the thread that serves them.
pub(crate) struct Irqfds {
    table: Arc<Mutex<Table>>,
    worker: Mutex<Option<Worker>>,
}

fn os(op: &'static str) -> impl FnOnce(std::io::Error) -> HvError {
    move |source| HvError::Os { op, source }
}

impl Irqfds {
    pub fn new() -> Irqfds {
        Irqfds {
            table: Arc::default(),
            worker: Mutex::new(None),
        }
    }

    /// The epoll set of the thread, which is started on first use.
    fn epoll(&self, vm: &Arc<VmShared>) -> Result<Arc<Epoll>, HvError> {
        let mut worker = lock(&self.worker);
        if let Some(w) = &*worker {
            return Ok(w.epoll.clone());
        }
        let epoll = Arc::new(Epoll::new().map_err(os("epoll_create1"))?);
        let stop = EventFd::new(EFD_NONBLOCK).map_err(os("eventfd"))?;
        epoll
            .ctl(
                ControlOperation::Add,
                stop.as_raw_fd(),
                EpollEvent::new(EventSet::IN, STOP),
            )
            .map_err(os("epoll_ctl"))?;
        let thread = {
            let (vm, table, epoll) = (vm.clone(), self.table.clone(), epoll.clone());
            let builder = std::thread::Builder::new().name("emu-irqfd".to_string());
            sandbox::spawn(sandbox::ThreadKind::Irqfd, builder, move || {
                serve(&vm, &table, &epoll)
            })
            .map_err(os("spawning the irqfd thread"))?
        };
        *worker = Some(Worker {
            epoll: epoll.clone(),
            stop,
            thread,
        });
        Ok(epoll)
    }

    pub fn register(&self, vm: &Arc<VmShared>, event: &EventFd, gsi: u32) -> Result<(), HvError> {
        if gsi >= MSI_GSI_RANGE.end {
            return Err(HvError::InvalidArgument(format!(
                "GSI {gsi} does not exist (GSIs are 0 to {})",
                MSI_GSI_RANGE.end - 1
            )));
        }
        let epoll = self.epoll(vm)?;
        let key = event.as_raw_fd();
        let mut table = lock(&self.table);
        if table.irqfds.values().any(|i| i.key == key) {
            return Err(HvError::InvalidArgument(format!(
                "eventfd {key} is already an irqfd"
            )));
        }
        let own = event.try_clone().map_err(os("dup of an irqfd"))?;
        let token = table.next_token;
        // A counter that is already non-zero makes the descriptor readable
        // at once: the interrupt is sent, as KVM does for a pending event.
        epoll
            .ctl(
                ControlOperation::Add,
                own.as_raw_fd(),
                EpollEvent::new(EventSet::IN, token),
            )
            .map_err(os("epoll_ctl"))?;
        table.next_token += 1;
        table.irqfds.insert(
            token,
            Irqfd {
                key,
                gsi,
                event: own,
            },
        );
        Ok(())
    }

    pub fn unregister(&self, event: &EventFd, gsi: u32) -> Result<(), HvError> {
        let key = event.as_raw_fd();
        let mut table = lock(&self.table);
        let Some(token) = table
            .irqfds
            .iter()
            .find(|(_, i)| i.key == key && i.gsi == gsi)
            .map(|(t, _)| *t)
        else {
            return Err(HvError::InvalidArgument(format!(
                "eventfd {key} is not an irqfd of GSI {gsi}"
            )));
        };
        let irqfd = table.irqfds.remove(&token).expect("found above");
        // Our descriptor leaves the set explicitly: closing it would not,
        // the VMM's descriptor keeps the same file open.
        if let Some(w) = &*lock(&self.worker) {
            if let Err(error) = w.epoll.ctl(
                ControlOperation::Delete,
                irqfd.event.as_raw_fd(),
                EpollEvent::default(),
            ) {
                tracing::warn!(%error, "cannot remove an irqfd from the epoll set");
            }
        }
        Ok(())
    }

    pub fn set_msi_route(&self, gsi: u32, msi: MsiMessage) -> Result<(), HvError> {
        if !MSI_GSI_RANGE.contains(&gsi) {
            return Err(HvError::InvalidArgument(format!(
                "GSI {gsi} cannot carry an MSI route (MSI GSIs are {MSI_GSI_RANGE:?})"
            )));
        }
        if !irqchip::ioapic::is_msi_address(msi.address) {
            return Err(HvError::InvalidArgument(format!(
                "{:#x} is not an MSI address",
                msi.address
            )));
        }
        lock(&self.table).routes.insert(gsi, msi);
        Ok(())
    }

    /// Whether the thread runs (tests).
    #[cfg(test)]
    pub fn has_thread(&self) -> bool {
        lock(&self.worker).is_some()
    }
}

impl Drop for Irqfds {
    fn drop(&mut self) {
        let Some(worker) = self
            .worker
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        if let Err(error) = worker.stop.write(1) {
            tracing::error!(%error, "cannot stop the irqfd thread");
            return;
        }
        if worker.thread.join().is_err() {
            tracing::error!("the irqfd thread panicked");
        }
    }
}

/// The irqfd thread: waits for eventfds until the stop eventfd fires.
fn serve(vm: &VmShared, table: &Mutex<Table>, epoll: &Epoll) {
    let mut events = vec![EpollEvent::default(); 32];
    loop {
        let n = match epoll.wait(-1, &mut events) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::error!(%error, "irqfd thread: epoll_wait failed, irqfds stop");
                return;
            }
        };
        for event in &events[..n] {
            if event.data() == STOP {
                return;
            }
            let table = lock(table);
            // Removed since epoll reported it.
            let Some(irqfd) = table.irqfds.get(&event.data()) else {
                continue;
            };
            match irqfd.event.read() {
                Ok(_) => fire(vm, &table, irqfd.gsi),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => {
                    tracing::warn!(gsi = irqfd.gsi, %error, "cannot read an irqfd");
                }
            }
        }
    }
}

/// One interrupt on `gsi`: an edge on an irqchip pin, or its MSI.
fn fire(vm: &VmShared, table: &Table, gsi: u32) {
    let router = vm.router();
    if gsi < IOAPIC_PINS {
        router.set_gsi(gsi, true);
        router.set_gsi(gsi, false);
    } else if let Some(msi) = table.routes.get(&gsi) {
        router.deliver(&irqchip::ioapic::decode_msi(msi.address, msi.data));
    }
}
