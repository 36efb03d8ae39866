//! The worker's side of a [`Throttle`] ([`Gate`]: a timer in the worker's
//! epoll set that fires when the tokens a refused request needs are back)
//! and its owner's side ([`ThrottleHandle`]: the limits of a running
//! device, changed at run time).

use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use devices::ratelimit::RateLimiter;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::timerfd::TimerFd;

use super::{Limits, LimitsUpdate, Throttle};
use crate::worker::WorkerCtl;

struct State {
    throttle: Throttle,
    /// Wakes the running worker's gate after an update.
    wake: Option<EventFd>,
}

struct Shared {
    state: Mutex<State>,
    /// Requests refused for want of tokens (Firecracker's
    /// `*_rate_limiter_throttled*` metrics).
    throttled: AtomicU64,
    /// Some bucket is configured: without one, [`Gate::admit`] serves
    /// every request without the lock or the clock (the usual case).
    limited: AtomicBool,
}

fn has_bucket(limits: &Limits) -> bool {
    limits.bandwidth.is_some() || limits.ops.is_some()
}

/// The limits of one device queue (a drive's, a network interface's rx or
/// tx, the entropy device's), kept by whoever built the device; clones
/// share them. Lives as long as the device, across driver resets.
#[derive(Clone)]
pub struct ThrottleHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ThrottleHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrottleHandle")
            .field("limits", &self.limits())
            .field("throttled", &self.throttled())
            .finish()
    }
}

impl ThrottleHandle {
    /// Full buckets for `limits`.
    pub fn new(limits: Limits) -> ThrottleHandle {
        let throttle = Throttle::new(limits, Instant::now());
        ThrottleHandle {
            shared: Arc::new(Shared {
                limited: AtomicBool::new(has_bucket(&throttle.config())),
                state: Mutex::new(State {
                    throttle,
                    wake: None,
                }),
                throttled: AtomicU64::new(0),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the buckets `update` names; a device waiting for tokens
    /// tries again at once under the new limits.
    pub fn update(&self, update: LimitsUpdate) {
        let mut state = self.state();
        state.throttle.update(update, Instant::now());
        self.shared
            .limited
            .store(has_bucket(&state.throttle.config()), Ordering::Release);
        if let Some(wake) = &state.wake {
            // Fails only when the counter would overflow: a wakeup is
            // pending anyway.
            let _ = wake.write(1);
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.state().throttle.config()
    }

    /// How many times a request had to wait for tokens.
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::Relaxed)
    }
}

/// A throttle in a device worker: [`Gate::admit`] before serving each
/// request; when it refuses, the worker stops serving the queue until
/// [`Gate::event`] says the gate opened (its timer fired, or the limits
/// changed). Never busy-waits.
pub struct Gate {
    handle: ThrottleHandle,
    timer: TimerFd,
    wake: EventFd,
    /// The timer is armed: requests wait.
    blocked: bool,
    /// Epoll tokens: the timer's, and the wakeup's (`token + 1`).
    token: u64,
    log_limit: RateLimiter,
}

impl Gate {
    /// A gate on `handle`'s limits, for a worker that will register it
    /// with epoll tokens `token` and `token + 1`.
    pub fn new(handle: &ThrottleHandle, token: u64) -> io::Result<Gate> {
        let wake = EventFd::new(EFD_NONBLOCK)?;
        handle.state().wake = Some(wake.try_clone()?);
        Ok(Gate {
            handle: handle.clone(),
            timer: TimerFd::new()?,
            wake,
            blocked: false,
            token,
            log_limit: RateLimiter::default(),
        })
    }

    /// Adds the timer and the wakeup to the worker's epoll set (from
    /// [`crate::worker::WorkerHandler::start`]).
    pub fn register(&self, ctl: &WorkerCtl) -> io::Result<()> {
        ctl.add(self.timer.as_raw_fd(), self.token, EventSet::IN)?;
        ctl.add(self.wake.as_raw_fd(), self.token + 1, EventSet::IN)
    }

    /// Whether requests wait for tokens.
    pub fn blocked(&self) -> bool {
        self.blocked
    }

    /// Whether a request of `bytes` and `ops` may be served now (it took
    /// its tokens); when not, the gate stays shut until its timer fires.
    pub fn admit(&mut self, bytes: u64, ops: u64) -> bool {
        if self.blocked {
            return false;
        }
        if !self.handle.shared.limited.load(Ordering::Acquire) {
            return true;
        }
        let taken = self
            .handle
            .state()
            .throttle
            .take(bytes, ops, Instant::now());
        let Err(wait) = taken else { return true };
        // Never zero: a zero duration would disarm the timer.
        if let Err(e) = self.timer.reset(wait, None) {
            // Without a timer the device could only hang: serve instead.
            if self.log_limit.allow() {
                tracing::warn!(error = %e, "virtio throttle: cannot arm the timer, not limiting");
            }
            return true;
        }
        self.blocked = true;
        self.handle.shared.throttled.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// An event of token `token` reached the worker: true when it was this
    /// gate's (the gate is open again: serve the queue).
    pub fn event(&mut self, token: u64) -> bool {
        if token != self.token && token != self.token + 1 {
            return false;
        }
        if token == self.token + 1 {
            let _ = self.wake.read();
        }
        // Disarming also resets the timer's expiry count, so the fd is no
        // longer readable (no read that could block).
        if let Err(e) = self.timer.clear() {
            if self.log_limit.allow() {
                tracing::warn!(error = %e, "virtio throttle: cannot disarm the timer");
            }
        }
        self.blocked = false;
        true
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.handle.state().wake = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttle::{BucketConfig, BucketUpdate};
    use std::time::Duration;
    use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent};

    fn limits(size: u64, refill_time_ms: u64) -> Limits {
        Limits {
            bandwidth: None,
            ops: Some(BucketConfig {
                size,
                one_time_burst: 0,
                refill_time_ms,
            }),
        }
    }

    /// Waits on the gate's fds as a worker does; the token that fired.
    fn wait(gate: &Gate, timeout_ms: i32) -> Option<u64> {
        let epoll = Epoll::new().unwrap();
        for (fd, token) in [
            (gate.timer.as_raw_fd(), gate.token),
            (gate.wake.as_raw_fd(), gate.token + 1),
        ] {
            epoll
                .ctl(
                    ControlOperation::Add,
                    fd,
                    EpollEvent::new(EventSet::IN, token),
                )
                .unwrap();
        }
        let mut events = [EpollEvent::default(); 2];
        let n = epoll.wait(timeout_ms, &mut events).unwrap();
        (n > 0).then(|| events[0].data())
    }

    #[test]
    fn a_refused_request_shuts_the_gate_until_its_timer_fires() {
        // 10 ops per 200 ms: one every 20 ms.
        let handle = ThrottleHandle::new(limits(10, 200));
        let mut gate = Gate::new(&handle, 7).unwrap();
        for _ in 0..10 {
            assert!(gate.admit(0, 1));
        }
        let start = Instant::now();
        assert!(!gate.admit(0, 1));
        assert!(gate.blocked() && !gate.admit(0, 1));
        assert_eq!(
            handle.throttled(),
            1,
            "one throttling event, not one per retry"
        );
        let token = wait(&gate, 5000).expect("the timer never fired");
        assert!(
            start.elapsed() >= Duration::from_millis(19),
            "{:?}",
            start.elapsed()
        );
        assert!(gate.event(token) && !gate.blocked());
        assert!(gate.admit(0, 1));
        // The timer fd is quiet again.
        assert_eq!(wait(&gate, 0), None);
        assert!(!gate.event(42));
    }

    #[test]
    fn an_update_wakes_a_shut_gate_at_once() {
        // One op per hour.
        let handle = ThrottleHandle::new(limits(1, 3_600_000));
        let mut gate = Gate::new(&handle, 100).unwrap();
        assert!(gate.admit(0, 1));
        assert!(!gate.admit(0, 1));
        let start = Instant::now();
        let updater = handle.clone();
        let thread = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(30));
            updater.update(LimitsUpdate {
                bandwidth: BucketUpdate::Keep,
                ops: BucketUpdate::Set(BucketConfig {
                    size: 1000,
                    one_time_burst: 0,
                    refill_time_ms: 1000,
                }),
            });
        });
        let token = wait(&gate, 5000).expect("the update did not wake the gate");
        thread.join().unwrap();
        assert_eq!(token, 101);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(gate.event(token));
        assert_eq!(handle.limits(), limits(1000, 1000));
        for _ in 0..1000 {
            assert!(gate.admit(0, 1));
        }
        assert_eq!(wait(&gate, 0), None);
    }
}
