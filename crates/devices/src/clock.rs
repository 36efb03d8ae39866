//! Time for devices that keep it (the RTC): a [`Clock`] they read, and the
//! [`TimedDevice`] contract by which the VMM polls them when their next
//! deadline comes.
//!
//! Devices never sleep or start threads: a device with a deadline reports
//! it through [`TimedDevice::next_deadline_ns`] (and, when a guest access
//! moves it, through its [`DeadlineSink`]); the VMM's platform timer calls
//! [`TimedDevice::poll`] once the clock reaches it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// A time source: monotonic nanoseconds for deadlines, and the host's
/// wall-clock for devices that show the date.
pub trait Clock: Send + Sync {
    /// Monotonic nanoseconds since an origin of the clock's choosing
    /// (usually its creation). Never goes backwards.
    fn now_ns(&self) -> u64;
    /// The wall-clock now, as UNIX time: whole seconds (negative before
    /// 1970) and nanoseconds into the second.
    fn unix_time(&self) -> (i64, u32);
}

/// The host's clocks: [`Instant`] from creation and [`SystemTime`].
#[derive(Debug, Clone, Copy)]
pub struct HostClock {
    epoch: Instant,
}

impl HostClock {
    pub fn new() -> Self {
        HostClock {
            epoch: Instant::now(),
        }
    }
}

impl Default for HostClock {
    fn default() -> Self {
        HostClock::new()
    }
}

impl Clock for HostClock {
    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn unix_time(&self) -> (i64, u32) {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => (
                i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
                d.subsec_nanos(),
            ),
            // A host clock before 1970: count backwards.
            Err(e) => {
                let d = e.duration();
                let secs = i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                match d.subsec_nanos() {
                    0 => (-secs, 0),
                    n => (-secs - 1, 1_000_000_000 - n),
                }
            }
        }
    }
}

/// A clock that moves only when told to (tests).
#[derive(Debug)]
pub struct ManualClock {
    now_ns: AtomicU64,
    unix_secs: i64,
}

impl ManualClock {
    /// A clock at `now_ns` = 0 whose wall-clock then reads `unix_secs`.
    pub fn new(unix_secs: i64) -> Self {
        ManualClock {
            now_ns: AtomicU64::new(0),
            unix_secs,
        }
    }

    /// Moves the clock forward by `ns`.
    pub fn advance(&self, ns: u64) {
        self.now_ns.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }

    fn unix_time(&self) -> (i64, u32) {
        let now = self.now_ns();
        let secs = i64::try_from(now / 1_000_000_000).unwrap_or(i64::MAX);
        (
            self.unix_secs.saturating_add(secs),
            (now % 1_000_000_000) as u32,
        )
    }
}

/// Where a device says that it now has a deadline at this time (on its
/// [`Clock`]'s `now_ns` scale), so that a sleeping platform timer wakes up
/// earlier if it must. Called with the device's lock held: it must not lock
/// the device.
pub type DeadlineSink = Arc<dyn Fn(u64) + Send + Sync>;

/// A device with deadlines.
pub trait TimedDevice: Send {
    /// When [`TimedDevice::poll`] must next be called (clock ns), or `None`.
    fn next_deadline_ns(&self) -> Option<u64>;
    /// Brings the device's state up to the clock's now (raising its
    /// interrupt lines as needed).
    fn poll(&mut self);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_clock_is_monotonic_and_after_2020() {
        let c = HostClock::new();
        let a = c.now_ns();
        let b = c.now_ns();
        assert!(b >= a);
        let (secs, nanos) = c.unix_time();
        assert!(secs > 1_577_836_800, "{secs}");
        assert!(nanos < 1_000_000_000);
    }

    #[test]
    fn manual_clock_moves_both_times() {
        let c = ManualClock::new(1000);
        assert_eq!((c.now_ns(), c.unix_time()), (0, (1000, 0)));
        c.advance(2_500_000_000);
        assert_eq!(
            (c.now_ns(), c.unix_time()),
            (2_500_000_000, (1002, 500_000_000))
        );
    }
}
