//! The clock of the VMM's timed devices (the RTC's interrupts, the ACPI
//! PM timer): the host's monotonic clock, stopped while the VM is paused
//! so that those devices neither fire nor jump across a pause. The
//! wall-clock (the RTC's date) stays the host's.

use std::sync::atomic::{AtomicU64, Ordering};

use devices::{Clock, HostClock};

/// A [`HostClock`] that [`PausableClock::pause`] stops.
#[derive(Debug)]
pub struct PausableClock {
    host: HostClock,
    /// Nanoseconds the clock was stopped for.
    stopped_ns: AtomicU64,
    /// The clock's value while stopped; `u64::MAX` while it runs.
    frozen_at: AtomicU64,
}

impl PausableClock {
    pub fn new() -> PausableClock {
        PausableClock {
            host: HostClock::new(),
            stopped_ns: AtomicU64::new(0),
            frozen_at: AtomicU64::new(u64::MAX),
        }
    }

    /// Stops the clock.
    pub fn pause(&self) {
        if self.frozen_at.load(Ordering::Acquire) == u64::MAX {
            let now = self.now_ns();
            self.frozen_at.store(now, Ordering::Release);
        }
    }

    /// Lets the clock go on from where it stopped.
    pub fn resume(&self) {
        let frozen = self.frozen_at.load(Ordering::Acquire);
        if frozen == u64::MAX {
            return;
        }
        let stopped = self.host.now_ns().saturating_sub(frozen);
        self.stopped_ns.store(stopped, Ordering::Release);
        self.frozen_at.store(u64::MAX, Ordering::Release);
    }
}

impl Default for PausableClock {
    fn default() -> Self {
        PausableClock::new()
    }
}

impl Clock for PausableClock {
    fn now_ns(&self) -> u64 {
        let frozen = self.frozen_at.load(Ordering::Acquire);
        if frozen != u64::MAX {
            return frozen;
        }
        self.host
            .now_ns()
            .saturating_sub(self.stopped_ns.load(Ordering::Acquire))
    }

    fn unix_time(&self) -> (i64, u32) {
        self.host.unix_time()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn stands_still_while_paused_and_goes_on_from_there() {
        let c = PausableClock::new();
        std::thread::sleep(Duration::from_millis(2));
        c.pause();
        let at = c.now_ns();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(c.now_ns(), at);
        c.resume();
        let after = c.now_ns();
        assert!(after >= at && after - at < 20_000_000, "{at} {after}");
        // A second pause counts both.
        c.pause();
        std::thread::sleep(Duration::from_millis(30));
        c.resume();
        assert!(c.now_ns() - after < 25_000_000);
    }
}
