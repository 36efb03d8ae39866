//! A rate limiter for log lines caused by the guest, so that a guest cannot
//! flood the host's log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Allows `burst` events per `period`, and counts what it suppressed.
#[derive(Debug)]
pub struct RateLimiter {
    burst: u32,
    period: Duration,
    window: Mutex<(Instant, u32)>,
    suppressed: AtomicU64,
}

impl RateLimiter {
    pub fn new(burst: u32, period: Duration) -> Self {
        RateLimiter {
            burst,
            period,
            window: Mutex::new((Instant::now(), 0)),
            suppressed: AtomicU64::new(0),
        }
    }

    /// True when the caller may log now.
    pub fn allow(&self) -> bool {
        let Ok(mut window) = self.window.lock() else {
            return false;
        };
        let now = Instant::now();
        if now.duration_since(window.0) >= self.period {
            *window = (now, 0);
        }
        if window.1 < self.burst {
            window.1 += 1;
            true
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Events that were not logged.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
}

impl Default for RateLimiter {
    /// Ten lines a second.
    fn default() -> Self {
        RateLimiter::new(10, Duration::from_secs(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_suppresses() {
        let limiter = RateLimiter::new(3, Duration::from_secs(3600));
        assert!((0..3).all(|_| limiter.allow()));
        assert!(!limiter.allow());
        assert!(!limiter.allow());
        assert_eq!(limiter.suppressed(), 2);
    }

    #[test]
    fn a_new_period_allows_again() {
        let limiter = RateLimiter::new(1, Duration::from_millis(1));
        assert!(limiter.allow());
        std::thread::sleep(Duration::from_millis(5));
        assert!(limiter.allow());
    }
}
