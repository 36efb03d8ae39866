//! Port and MMIO buses: address ranges mapped to devices, with overlap checks.
//!
//! A bus is built once, then shared read-only between vCPU threads; each
//! device sits behind its own mutex. Accesses that hit no device are counted
//! and logged (rate-limited); unmapped reads return all ones, as on real
//! hardware with nothing driving the bus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::ratelimit::RateLimiter;

/// A device on a bus. `offset` is relative to the base of the device's range;
/// the access size is the length of `data`.
pub trait BusDevice: Send {
    fn read(&mut self, offset: u64, data: &mut [u8]);
    fn write(&mut self, offset: u64, data: &[u8]);
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BusError {
    #[error("{bus} range {base:#x}+{len:#x} is empty or wraps around")]
    BadRange {
        bus: &'static str,
        base: u64,
        len: u64,
    },
    #[error(
        "{bus} range {base:#x}+{len:#x} of {name} overlaps {other} at {other_base:#x}+{other_len:#x}"
    )]
    Overlap {
        bus: &'static str,
        name: String,
        base: u64,
        len: u64,
        other: String,
        other_base: u64,
        other_len: u64,
    },
}

struct Range {
    len: u64,
    name: String,
    device: Arc<Mutex<dyn BusDevice>>,
    accesses: Arc<Accesses>,
}

/// Guest reads and writes of one device (on a cache line of their own:
/// vCPUs using different devices do not contend on them).
#[derive(Default)]
#[repr(align(64))]
struct Accesses {
    reads: AtomicU64,
    writes: AtomicU64,
}

/// One address space (ports or guest-physical MMIO).
pub struct Bus {
    kind: &'static str,
    ranges: BTreeMap<u64, Range>,
    unhandled: Arc<AtomicU64>,
    log_limit: RateLimiter,
}

/// A bus's access counters, readable without the bus: a handle kept after
/// the machine ended (the metrics' last line) does not keep its devices
/// alive, and still reads the final counts.
#[derive(Clone)]
pub struct BusCounters {
    ranges: Vec<Arc<Accesses>>,
    unhandled: Arc<AtomicU64>,
}

impl BusCounters {
    /// Guest (reads, writes) of the devices mapped when the handle was
    /// taken (see [`Bus::access_counts`]).
    pub fn access_counts(&self) -> (u64, u64) {
        self.ranges.iter().fold((0, 0), |(r, w), a| {
            (
                r + a.reads.load(Ordering::Relaxed),
                w + a.writes.load(Ordering::Relaxed),
            )
        })
    }

    /// See [`Bus::unhandled_count`].
    pub fn unhandled_count(&self) -> u64 {
        self.unhandled.load(Ordering::Relaxed)
    }
}

impl Bus {
    pub fn new(kind: &'static str) -> Self {
        Bus {
            kind,
            ranges: BTreeMap::new(),
            unhandled: Arc::new(AtomicU64::new(0)),
            log_limit: RateLimiter::default(),
        }
    }

    /// The access counters of every device mapped now.
    pub fn counters(&self) -> BusCounters {
        BusCounters {
            ranges: self.ranges.values().map(|r| r.accesses.clone()).collect(),
            unhandled: self.unhandled.clone(),
        }
    }

    /// Maps `device` at `base..base+len`. Ranges may not overlap.
    pub fn insert(
        &mut self,
        name: &str,
        base: u64,
        len: u64,
        device: Arc<Mutex<dyn BusDevice>>,
    ) -> Result<(), BusError> {
        let bad_range = BusError::BadRange {
            bus: self.kind,
            base,
            len,
        };
        let end = base.checked_add(len).ok_or(bad_range.clone())?;
        if len == 0 {
            return Err(bad_range);
        }
        let before = self.ranges.range(..end).next_back();
        if let Some((&other_base, other)) = before {
            if other_base + other.len > base {
                return Err(BusError::Overlap {
                    bus: self.kind,
                    name: name.to_string(),
                    base,
                    len,
                    other: other.name.clone(),
                    other_base,
                    other_len: other.len,
                });
            }
        }
        self.ranges.insert(
            base,
            Range {
                len,
                name: name.to_string(),
                device,
                accesses: Arc::default(),
            },
        );
        Ok(())
    }

    fn find(&self, addr: u64, size: usize) -> Option<(u64, &Range)> {
        let (&base, range) = self.ranges.range(..=addr).next_back()?;
        let offset = addr - base;
        (offset.checked_add(size as u64)? <= range.len).then_some((offset, range))
    }

    /// Reads from the device at `addr`; returns false (and fills all ones)
    /// when nothing is mapped there.
    pub fn read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, range)) => {
                range.accesses.reads.fetch_add(1, Ordering::Relaxed);
                lock(&range.device).read(offset, data);
                true
            }
            None => {
                data.fill(0xff);
                self.unhandled_access("read", addr, data.len());
                false
            }
        }
    }

    /// Writes to the device at `addr`; returns false (the write is dropped)
    /// when nothing is mapped there.
    pub fn write(&self, addr: u64, data: &[u8]) -> bool {
        match self.find(addr, data.len()) {
            Some((offset, range)) => {
                range.accesses.writes.fetch_add(1, Ordering::Relaxed);
                lock(&range.device).write(offset, data);
                true
            }
            None => {
                self.unhandled_access("write", addr, data.len());
                false
            }
        }
    }

    fn unhandled_access(&self, op: &str, addr: u64, size: usize) {
        self.unhandled.fetch_add(1, Ordering::Relaxed);
        if self.log_limit.allow() {
            tracing::debug!(bus = self.kind, op, addr, size, "unhandled guest access");
        }
    }

    /// Guest accesses that hit no device so far.
    pub fn unhandled_count(&self) -> u64 {
        self.unhandled.load(Ordering::Relaxed)
    }

    /// Guest (reads, writes) of the devices on the bus: on either
    /// accelerator, the port or MMIO accesses the VMM served
    /// (Firecracker's `exit_io_in`/`exit_io_out`, `exit_mmio_read`/
    /// `exit_mmio_write`); unmapped accesses are in
    /// [`Bus::unhandled_count`].
    pub fn access_counts(&self) -> (u64, u64) {
        self.counters().access_counts()
    }
}

/// A device mutex poisoned by a panic in another thread is still usable:
/// device state is plain data, and a VMM that stops serving I/O would hang
/// the guest.
fn lock<T: ?Sized>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The two buses of an x86 machine, as the hypervisor sees them.
pub struct IoBuses {
    pub pio: Bus,
    pub mmio: Bus,
}

impl Default for IoBuses {
    fn default() -> Self {
        IoBuses {
            pio: Bus::new("pio"),
            mmio: Bus::new("mmio"),
        }
    }
}

impl hv::IoHandler for IoBuses {
    fn pio_read(&self, port: u16, data: &mut [u8]) {
        self.pio.read(port.into(), data);
    }
    fn pio_write(&self, port: u16, data: &[u8]) {
        self.pio.write(port.into(), data);
    }
    fn mmio_read(&self, gpa: u64, data: &mut [u8]) {
        self.mmio.read(gpa, data);
    }
    fn mmio_write(&self, gpa: u64, data: &[u8]) {
        self.mmio.write(gpa, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Remembers the last access and answers reads with its offset.
    #[derive(Default)]
    struct Probe {
        last_write: Option<(u64, Vec<u8>)>,
    }

    impl BusDevice for Probe {
        fn read(&mut self, offset: u64, data: &mut [u8]) {
            data.fill(offset as u8);
        }
        fn write(&mut self, offset: u64, data: &[u8]) {
            self.last_write = Some((offset, data.to_vec()));
        }
    }

    fn probe() -> Arc<Mutex<Probe>> {
        Arc::new(Mutex::new(Probe::default()))
    }

    #[test]
    fn routes_by_range_with_offsets() {
        let mut bus = Bus::new("pio");
        let a = probe();
        let b = probe();
        bus.insert("a", 0x10, 8, a.clone()).unwrap();
        bus.insert("b", 0x18, 8, b.clone()).unwrap();
        let mut data = [0u8; 2];
        assert!(bus.read(0x13, &mut data));
        assert_eq!(data, [3, 3]);
        assert!(bus.write(0x19, &[0xaa, 0xbb, 0xcc, 0xdd]));
        assert_eq!(
            b.lock().unwrap().last_write,
            Some((1, vec![0xaa, 0xbb, 0xcc, 0xdd]))
        );
        assert!(a.lock().unwrap().last_write.is_none());
        assert_eq!(bus.access_counts(), (1, 1));
    }

    #[test]
    fn unmapped_reads_are_all_ones_and_counted() {
        let mut bus = Bus::new("pio");
        bus.insert("a", 0x10, 4, probe()).unwrap();
        let mut data = [0u8; 4];
        assert!(!bus.read(0x80, &mut data));
        assert_eq!(data, [0xff; 4]);
        // Straddling the end of a device is not a device access.
        assert!(!bus.read(0x12, &mut data));
        assert!(!bus.write(0x0f, &[1]));
        assert_eq!(bus.unhandled_count(), 3);
        assert_eq!(bus.access_counts(), (0, 0), "no device was accessed");
    }

    #[test]
    fn overlaps_and_bad_ranges_are_refused() {
        let mut bus = Bus::new("mmio");
        bus.insert("a", 0x1000, 0x100, probe()).unwrap();
        for (base, len) in [(0x1000, 1), (0xfff, 2), (0x10ff, 1), (0x0, 0x2000)] {
            let err = bus.insert("b", base, len, probe()).unwrap_err();
            assert!(
                matches!(err, BusError::Overlap { .. }),
                "{base:#x}+{len:#x}"
            );
            assert!(err.to_string().contains("overlaps a"));
        }
        assert!(bus.insert("c", 0x1100, 0x10, probe()).is_ok());
        assert!(bus.insert("d", 0xff0, 0x10, probe()).is_ok());
        assert!(matches!(
            bus.insert("e", u64::MAX, 2, probe()),
            Err(BusError::BadRange { .. })
        ));
        assert!(matches!(
            bus.insert("f", 0x5000, 0, probe()),
            Err(BusError::BadRange { .. })
        ));
    }
}
