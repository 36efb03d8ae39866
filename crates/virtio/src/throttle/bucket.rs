//! One token bucket (Firecracker's `TokenBucket`): `size` tokens, refilled
//! from empty to full in `refill_time`, plus `one_time_burst` tokens
//! usable once before the bucket itself.
//!
//! Arithmetic is exact: the budget is kept in units of 1/`refill_ns`
//! token, of which `size` come back every nanosecond, so no fraction of a
//! token is ever lost between two refills.
//!
//! A request larger than `size` could never wait for enough tokens: as in
//! Firecracker it is let through as soon as the bucket is not in debt, and
//! it drains the bucket below zero; that debt is paid back at the refill
//! rate before anything else passes. The long-run rate stays
//! size / refill_time whatever the request sizes.

use std::time::{Duration, Instant};

/// A bucket's parameters, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketConfig {
    /// Tokens the bucket holds when full (bytes or operations).
    pub size: u64,
    /// Extra tokens usable once, before the bucket's own.
    pub one_time_burst: u64,
    /// Milliseconds to refill the bucket from empty to full.
    pub refill_time_ms: u64,
}

impl BucketConfig {
    /// Firecracker's rule: a bucket of size 0 or refill time 0 limits
    /// nothing (it is disabled).
    pub fn limits(&self) -> bool {
        self.size != 0 && self.refill_time_ms != 0
    }
}

/// A bucket's state.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    config: BucketConfig,
    /// Tokens left of the one-time burst.
    burst: u64,
    /// The budget in units (one token is `per_token` units); negative
    /// after an oversize request.
    budget: i128,
    /// Units per token: the refill time in ns (reduced by the gcd).
    per_token: i128,
    /// Units that come back per ns: the size (reduced by the gcd).
    per_ns: i128,
    /// The budget when full.
    capacity: i128,
    /// When the budget was last brought up to date.
    updated: Instant,
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl TokenBucket {
    /// A full bucket at `now`; None when `config` limits nothing.
    pub fn new(config: BucketConfig, now: Instant) -> Option<TokenBucket> {
        if !config.limits() {
            return None;
        }
        let refill_ns = config.refill_time_ms.saturating_mul(1_000_000);
        let g = gcd(refill_ns, config.size).max(1);
        let per_token = i128::from(refill_ns / g);
        let per_ns = i128::from(config.size / g);
        let capacity = i128::from(config.size).saturating_mul(per_token);
        Some(TokenBucket {
            config,
            burst: config.one_time_burst,
            budget: capacity,
            per_token,
            per_ns,
            capacity,
            updated: now,
        })
    }

    pub fn config(&self) -> BucketConfig {
        self.config
    }

    /// Adds what came back since the last update (never past full).
    fn refill(&mut self, now: Instant) {
        let Some(elapsed) = now.checked_duration_since(self.updated) else {
            return;
        };
        let ns = i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX);
        self.budget = self
            .budget
            .saturating_add(ns.saturating_mul(self.per_ns))
            .min(self.capacity);
        self.updated = now;
    }

    /// How long until `tokens` can be taken at `now`: zero when they can
    /// be now.
    pub fn wait(&mut self, tokens: u64, now: Instant) -> Duration {
        self.refill(now);
        let rest = tokens.saturating_sub(self.burst);
        if rest == 0 {
            return Duration::ZERO;
        }
        // An oversize request needs only a bucket out of debt.
        let needed = if rest > self.config.size {
            0
        } else {
            i128::from(rest).saturating_mul(self.per_token)
        };
        let missing = needed.saturating_sub(self.budget.min(needed));
        if missing <= 0 {
            return Duration::ZERO;
        }
        // Round up: after this long the tokens are there.
        let ns = missing.saturating_add(self.per_ns - 1) / self.per_ns;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Takes `tokens` (after [`TokenBucket::wait`] said zero): from the
    /// one-time burst first, then the bucket.
    pub fn take(&mut self, tokens: u64, now: Instant) {
        self.refill(now);
        let from_burst = tokens.min(self.burst);
        self.burst -= from_burst;
        let rest = i128::from(tokens - from_burst);
        self.budget = self
            .budget
            .saturating_sub(rest.saturating_mul(self.per_token));
    }

    /// Whole tokens in the bucket at `now` (0 in debt), burst excluded.
    pub fn tokens(&mut self, now: Instant) -> u64 {
        self.refill(now);
        u64::try_from(self.budget.max(0) / self.per_token).unwrap_or(u64::MAX)
    }

    /// Tokens left of the one-time burst.
    pub fn burst(&self) -> u64 {
        self.burst
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn bucket(size: u64, burst: u64, refill_ms: u64, now: Instant) -> TokenBucket {
        TokenBucket::new(
            BucketConfig {
                size,
                one_time_burst: burst,
                refill_time_ms: refill_ms,
            },
            now,
        )
        .unwrap()
    }

    #[test]
    fn a_zero_size_or_refill_time_limits_nothing() {
        let now = Instant::now();
        for (size, refill) in [(0, 100), (100, 0)] {
            let config = BucketConfig {
                size,
                one_time_burst: 5,
                refill_time_ms: refill,
            };
            assert!(!config.limits());
            assert!(TokenBucket::new(config, now).is_none());
        }
    }

    #[test]
    fn starts_full_and_refills_at_size_per_refill_time() {
        let t0 = Instant::now();
        // 1000 tokens per 100 ms: 10 per ms.
        let mut b = bucket(1000, 0, 100, t0);
        assert_eq!(b.wait(1000, t0), Duration::ZERO);
        b.take(1000, t0);
        assert_eq!(b.tokens(t0), 0);
        // 250 tokens take 25 ms.
        assert_eq!(b.wait(250, t0), 25 * MS);
        assert_eq!(b.wait(250, t0 + 10 * MS), 15 * MS);
        assert_eq!(b.wait(250, t0 + 25 * MS), Duration::ZERO);
        b.take(250, t0 + 25 * MS);
        assert_eq!(b.tokens(t0 + 25 * MS), 0);
        // Never more than full.
        assert_eq!(b.tokens(t0 + 10_000 * MS), 1000);
    }

    #[test]
    fn fractions_of_a_token_are_not_lost() {
        let t0 = Instant::now();
        // 3 tokens per 1000 ms: one every 333.33 ms.
        let mut b = bucket(3, 0, 1000, t0);
        b.take(3, t0);
        let mut now = t0;
        for _ in 0..30 {
            now += b.wait(1, now);
            b.take(1, now);
        }
        // 30 tokens at 3 per second: 10 s, to the nanosecond's rounding.
        let took = now - t0;
        assert!(
            took >= 10_000 * MS && took < 10_000 * MS + Duration::from_micros(1),
            "{took:?}"
        );
    }

    #[test]
    fn the_one_time_burst_goes_first_and_never_comes_back() {
        let t0 = Instant::now();
        let mut b = bucket(100, 500, 1000, t0);
        // 600 tokens at once: the burst and the full bucket.
        assert_eq!(b.wait(600, t0), Duration::ZERO);
        b.take(450, t0);
        assert_eq!((b.burst(), b.tokens(t0)), (50, 100));
        b.take(150, t0);
        assert_eq!((b.burst(), b.tokens(t0)), (0, 0));
        // A long time later only the bucket is full again.
        let later = t0 + 60_000 * MS;
        assert_eq!((b.burst(), b.tokens(later)), (0, 100));
        b.take(60, later);
        assert_eq!(b.wait(100, later), 600 * MS);
    }

    #[test]
    fn an_oversize_request_passes_and_leaves_a_debt() {
        let t0 = Instant::now();
        // 100 tokens per 100 ms.
        let mut b = bucket(100, 0, 100, t0);
        b.take(40, t0);
        // 350 > size: passes at once although only 60 are left ...
        assert_eq!(b.wait(350, t0), Duration::ZERO);
        b.take(350, t0);
        // ... and the 290 overdrawn come back before anything else passes.
        assert_eq!(b.wait(1, t0), 291 * MS);
        assert_eq!(b.wait(350, t0), 290 * MS);
        assert_eq!(b.wait(350, t0 + 290 * MS), Duration::ZERO);
        assert_eq!(b.tokens(t0 + 290 * MS), 0);
    }

    #[test]
    fn huge_parameters_do_not_overflow() {
        let t0 = Instant::now();
        let mut b = bucket(u64::MAX, u64::MAX, u64::MAX / 1_000_000, t0);
        assert_eq!(b.wait(u64::MAX, t0), Duration::ZERO);
        b.take(u64::MAX, t0);
        b.take(u64::MAX, t0);
        let wait = b.wait(u64::MAX, t0);
        assert!(wait > Duration::ZERO);
        let _ = b.tokens(t0 + wait);
    }
}
