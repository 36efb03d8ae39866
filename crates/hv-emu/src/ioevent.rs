//! Ioeventfds: guest writes that signal an eventfd instead of reaching the
//! VMM's [`hv::IoHandler`] (KVM_IOEVENTFD).
//!
//! The list is read on the MMIO and port-write paths only (never on RAM
//! accesses), and only when it is not empty: an empty list costs one
//! atomic load per such write.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;

use hv::{EventFd, HvError, IoEventAddress, IOEVENT_DATAMATCH_LEN};

struct IoEvent {
    addr: IoEventAddress,
    datamatch: Option<u64>,
    /// The descriptor the VMM registered (what unregistering names).
    key: RawFd,
    /// Our own descriptor of the same eventfd, so that it stays open.
    event: EventFd,
}

impl IoEvent {
    fn matches(&self, addr: IoEventAddress, data: &[u8]) -> bool {
        if self.addr != addr {
            return false;
        }
        match self.datamatch {
            None => true,
            Some(value) => match <[u8; IOEVENT_DATAMATCH_LEN]>::try_from(data) {
                Ok(bytes) => u64::from(u32::from_le_bytes(bytes)) == value,
                Err(_) => false,
            },
        }
    }

    /// KVM's collision rule: one registration without datamatch owns its
    /// address; registrations with datamatch share it if their values
    /// differ.
    fn collides(&self, addr: IoEventAddress, datamatch: Option<u64>) -> bool {
        self.addr == addr
            && match (self.datamatch, datamatch) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

#[derive(Default)]
pub(crate) struct IoEvents {
    /// The list is not empty.
    any: AtomicBool,
    list: RwLock<Vec<IoEvent>>,
}

fn check_datamatch(datamatch: Option<u64>) -> Result<(), HvError> {
    match datamatch {
        Some(v) if u32::try_from(v).is_err() => Err(HvError::InvalidArgument(format!(
            "ioeventfd datamatch {v:#x} does not fit the 4-byte write it matches"
        ))),
        _ => Ok(()),
    }
}

impl IoEvents {
    pub fn register(
        &self,
        event: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<(), HvError> {
        check_datamatch(datamatch)?;
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        if list.iter().any(|e| e.collides(addr, datamatch)) {
            return Err(HvError::InvalidArgument(format!(
                "an ioeventfd at {addr:?} already matches datamatch {datamatch:?}"
            )));
        }
        let own = event.try_clone().map_err(|source| HvError::Os {
            op: "dup of an ioeventfd",
            source,
        })?;
        list.push(IoEvent {
            addr,
            datamatch,
            key: event.as_raw_fd(),
            event: own,
        });
        self.any.store(true, Ordering::Release);
        Ok(())
    }

    pub fn unregister(
        &self,
        event: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<(), HvError> {
        let mut list = self.list.write().unwrap_or_else(|p| p.into_inner());
        let key = event.as_raw_fd();
        let Some(i) = list
            .iter()
            .position(|e| e.key == key && e.addr == addr && e.datamatch == datamatch)
        else {
            return Err(HvError::InvalidArgument(format!(
                "no ioeventfd {key} at {addr:?} with datamatch {datamatch:?}"
            )));
        };
        list.swap_remove(i);
        self.any.store(!list.is_empty(), Ordering::Release);
        Ok(())
    }

    /// Signals the ioeventfd a guest write of `data` to `addr` matches, if
    /// any; returns whether one did (the write is then consumed).
    #[inline]
    pub fn signal(&self, addr: IoEventAddress, data: &[u8]) -> bool {
        self.any.load(Ordering::Acquire) && self.signal_slow(addr, data)
    }

    #[cold]
    fn signal_slow(&self, addr: IoEventAddress, data: &[u8]) -> bool {
        let list = self.list.read().unwrap_or_else(|p| p.into_inner());
        let Some(e) = list.iter().find(|e| e.matches(addr, data)) else {
            return false;
        };
        // Only a counter at its maximum refuses a write; the VMM has then
        // not read it for 2^64 notifications and loses nothing by one more.
        if let Err(error) = e.event.write(1) {
            tracing::warn!(?addr, %error, "cannot signal an ioeventfd");
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn efd() -> EventFd {
        EventFd::new(EFD_NONBLOCK).unwrap()
    }

    #[test]
    fn datamatch_needs_a_four_byte_write_of_the_value() {
        let events = IoEvents::default();
        let e = efd();
        let addr = IoEventAddress::Mmio(0xd000_0000);
        assert!(!events.signal(addr, &[1, 0, 0, 0]));
        events.register(&e, addr, Some(0x1234_5678)).unwrap();
        assert!(events.signal(addr, &0x1234_5678u32.to_le_bytes()));
        assert!(!events.signal(addr, &0x1234_5679u32.to_le_bytes()));
        assert!(!events.signal(addr, &0x5678u16.to_le_bytes()));
        assert!(!events.signal(addr, &0x1234_5678u64.to_le_bytes()));
        assert!(!events.signal(IoEventAddress::Mmio(0xd000_0001), &[0x56, 0x34, 0x12, 0]));
        assert!(!events.signal(IoEventAddress::Pio(0), &0x1234_5678u32.to_le_bytes()));
        assert_eq!(e.read().unwrap(), 1);
        events.unregister(&e, addr, Some(0x1234_5678)).unwrap();
        assert!(!events.signal(addr, &0x1234_5678u32.to_le_bytes()));
    }

    #[test]
    fn no_datamatch_takes_any_size() {
        let events = IoEvents::default();
        let e = efd();
        let addr = IoEventAddress::Pio(0x2f0);
        events.register(&e, addr, None).unwrap();
        assert!(events.signal(addr, &[1]));
        assert!(events.signal(addr, &[1, 2]));
        assert!(events.signal(addr, &[1, 2, 3, 4]));
        assert!(!events.signal(IoEventAddress::Pio(0x2f1), &[1]));
        assert_eq!(e.read().unwrap(), 3);
    }

    #[test]
    fn collisions_and_unknown_removals_are_refused() {
        let events = IoEvents::default();
        let (a, b) = (efd(), efd());
        let addr = IoEventAddress::Mmio(0x1000);
        events.register(&a, addr, Some(1)).unwrap();
        events.register(&b, addr, Some(2)).unwrap();
        assert!(events.register(&b, addr, Some(1)).is_err());
        assert!(events.register(&b, addr, None).is_err());
        assert!(events.register(&a, addr, Some(1 << 32)).is_err());
        assert!(events.unregister(&a, addr, Some(2)).is_err());
        assert!(events.unregister(&a, addr, None).is_err());
        events.unregister(&a, addr, Some(1)).unwrap();
        assert!(events.unregister(&a, addr, Some(1)).is_err());
        assert!(events.signal(addr, &2u32.to_le_bytes()));
        assert_eq!(b.read().unwrap(), 1);
        events.unregister(&b, addr, Some(2)).unwrap();
        events.register(&a, addr, None).unwrap();
    }
}
