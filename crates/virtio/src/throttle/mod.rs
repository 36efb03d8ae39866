//! I/O rate limiting of virtio devices: Firecracker's `RateLimiter`, two
//! optional token buckets, `bandwidth` (bytes) and `ops` (requests).
//!
//! (Not to be confused with `devices::ratelimit::RateLimiter`, which limits
//! log lines.)
//!
//! A request takes its tokens from every configured bucket, or from none:
//! when one bucket lacks them the device stops serving that queue (the
//! request stays in the ring, nothing is dropped) and a timer wakes its
//! worker when they are back ([`Gate`]). [`Throttle`] is the pure part,
//! driven by an explicit clock; [`ThrottleHandle`] changes the limits of a
//! running device (Firecracker's PATCH), which takes effect at once.

mod bucket;
mod gate;

use std::time::{Duration, Instant};

pub use bucket::{BucketConfig, TokenBucket};
pub use gate::{Gate, ThrottleHandle};

/// A device queue's limits (Firecracker's `RateLimiter`): None for a
/// bucket that is not configured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes.
    pub bandwidth: Option<BucketConfig>,
    /// Operations (requests, frames).
    pub ops: Option<BucketConfig>,
}

impl Limits {
    /// Whether any bucket limits anything.
    pub fn limits(&self) -> bool {
        self.bandwidth.is_some_and(|b| b.limits()) || self.ops.is_some_and(|b| b.limits())
    }
}

/// What a run-time update does to one bucket (Firecracker's
/// `BucketUpdate`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BucketUpdate {
    /// Left as it is (the update did not name it).
    #[default]
    Keep,
    /// Replaced by a new, full bucket; one that limits nothing (size or
    /// refill time 0) removes the bucket.
    Set(BucketConfig),
}

/// A run-time update of a device queue's limits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LimitsUpdate {
    pub bandwidth: BucketUpdate,
    pub ops: BucketUpdate,
}

/// The two buckets of a queue.
#[derive(Debug, Clone, Default)]
pub struct Throttle {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
}

fn apply(bucket: &mut Option<TokenBucket>, update: BucketUpdate, now: Instant) {
    if let BucketUpdate::Set(config) = update {
        *bucket = TokenBucket::new(config, now);
    }
}

impl Throttle {
    /// Full buckets for `limits` at `now`.
    pub fn new(limits: Limits, now: Instant) -> Throttle {
        Throttle {
            bandwidth: limits.bandwidth.and_then(|c| TokenBucket::new(c, now)),
            ops: limits.ops.and_then(|c| TokenBucket::new(c, now)),
        }
    }

    /// Whether any bucket is configured.
    pub fn limits(&self) -> bool {
        self.bandwidth.is_some() || self.ops.is_some()
    }

    /// The limits in force (disabled buckets are None).
    pub fn config(&self) -> Limits {
        Limits {
            bandwidth: self.bandwidth.as_ref().map(TokenBucket::config),
            ops: self.ops.as_ref().map(TokenBucket::config),
        }
    }

    /// Takes `bytes` from the bandwidth bucket and `ops` from the ops
    /// bucket, both or neither; Err(how long to wait before trying again)
    /// when a bucket lacks them.
    pub fn take(&mut self, bytes: u64, ops: u64, now: Instant) -> Result<(), Duration> {
        let mut wait = Duration::ZERO;
        if let Some(b) = &mut self.bandwidth {
            wait = wait.max(b.wait(bytes, now));
        }
        if let Some(b) = &mut self.ops {
            wait = wait.max(b.wait(ops, now));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        if let Some(b) = &mut self.bandwidth {
            b.take(bytes, now);
        }
        if let Some(b) = &mut self.ops {
            b.take(ops, now);
        }
        Ok(())
    }

    /// Replaces the buckets `update` names by new, full ones.
    pub fn update(&mut self, update: LimitsUpdate, now: Instant) {
        apply(&mut self.bandwidth, update.bandwidth, now);
        apply(&mut self.ops, update.ops, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg(size: u64, burst: u64, refill_time_ms: u64) -> BucketConfig {
        BucketConfig {
            size,
            one_time_burst: burst,
            refill_time_ms,
        }
    }

    #[test]
    fn without_buckets_everything_passes() {
        let t0 = Instant::now();
        let mut t = Throttle::new(Limits::default(), t0);
        assert!(!t.limits());
        for _ in 0..1000 {
            assert_eq!(t.take(u64::MAX, u64::MAX, t0), Ok(()));
        }
        let disabled = Limits {
            bandwidth: Some(cfg(0, 0, 100)),
            ops: Some(cfg(10, 0, 0)),
        };
        assert!(!disabled.limits());
        assert!(!Throttle::new(disabled, t0).limits());
    }

    #[test]
    fn a_request_takes_from_both_buckets_or_from_neither() {
        let t0 = Instant::now();
        // 1000 bytes and 10 ops per second.
        let limits = Limits {
            bandwidth: Some(cfg(1000, 0, 1000)),
            ops: Some(cfg(10, 0, 1000)),
        };
        let mut t = Throttle::new(limits, t0);
        assert_eq!(t.config(), limits);
        // Bytes run out first: 4 x 250.
        for _ in 0..4 {
            assert_eq!(t.take(250, 1, t0), Ok(()));
        }
        assert_eq!(t.take(250, 1, t0), Err(250 * MS));
        // The refused request took no op: 6 ops remain for small requests
        // once a byte is back.
        assert_eq!(t.take(1, 1, t0 + MS), Ok(()));
        for _ in 0..5 {
            assert_eq!(t.take(0, 1, t0 + MS), Ok(()));
        }
        // Now ops run out first: the next op is back 100 ms after t0.
        assert_eq!(t.take(0, 1, t0 + MS), Err(99 * MS));
        assert_eq!(t.take(0, 1, t0 + 100 * MS), Ok(()));
    }

    #[test]
    fn an_update_replaces_the_named_buckets_with_full_ones() {
        let t0 = Instant::now();
        let mut t = Throttle::new(
            Limits {
                bandwidth: Some(cfg(100, 0, 1000)),
                ops: Some(cfg(1, 0, 1000)),
            },
            t0,
        );
        assert_eq!(t.take(100, 1, t0), Ok(()));
        assert_eq!(t.take(100, 1, t0), Err(1000 * MS));
        // A faster bandwidth bucket, ops kept (and still empty).
        t.update(
            LimitsUpdate {
                bandwidth: BucketUpdate::Set(cfg(1000, 0, 1000)),
                ops: BucketUpdate::Keep,
            },
            t0,
        );
        assert_eq!(t.config().bandwidth, Some(cfg(1000, 0, 1000)));
        assert_eq!(t.take(100, 1, t0), Err(1000 * MS));
        assert_eq!(t.take(100, 0, t0), Ok(()));
        // Removing the ops bucket (size 0) lets requests through.
        t.update(
            LimitsUpdate {
                bandwidth: BucketUpdate::Keep,
                ops: BucketUpdate::Set(cfg(0, 0, 0)),
            },
            t0,
        );
        assert_eq!(t.config().ops, None);
        assert_eq!(t.take(900, 1, t0), Ok(()));
        assert_eq!(t.take(1, 1, t0), Err(MS));
    }
}
