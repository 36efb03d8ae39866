//! Pausing a device's worker thread (the VM is paused: no device may touch
//! guest memory or interrupt the guest until it resumes).
//!
//! Every device has one [`PauseGate`] (in its transport's
//! [`crate::transport::DeviceState`]); its worker waits on the gate's
//! eventfd beside its queues. [`PauseGate::pause`] asks the worker to park
//! and returns once it has: the request it was serving is complete, and
//! queue notifications and backend events wait (their eventfds and file
//! descriptors stay readable) until [`PauseGate::resume`]. A device with no
//! worker (not activated yet) has nothing to wait for.

use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

#[derive(Debug, Default)]
struct GateState {
    paused: bool,
    /// Workers attached to the gate (0 or 1).
    workers: u32,
    /// Of those, parked.
    parked: u32,
    /// Where the parked worker left its queues (see
    /// [`PauseGate::parked_queues`]).
    queues: Option<Vec<QueuePosition>>,
}

/// Where a device's worker is in one of its queues: the next available
/// entry it will take and the next used entry it will write (virtio-queue's
/// `next_avail` / `next_used`). With every request complete these are all
/// a restored device needs besides the ring addresses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueuePosition {
    pub next_avail: u16,
    pub next_used: u16,
}

/// Parks a device's worker while the VM is paused.
#[derive(Debug)]
pub struct PauseGate {
    state: Mutex<GateState>,
    changed: Condvar,
    /// Written on pause: wakes the worker's epoll.
    wake: EventFd,
}

/// How long [`PauseGate::pause`] waits for a worker busy with a request
/// (a slow disk) before it reports failure.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

impl PauseGate {
    pub fn new() -> std::io::Result<PauseGate> {
        Ok(PauseGate {
            state: Mutex::new(GateState::default()),
            changed: Condvar::new(),
            wake: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    fn lock(&self) -> MutexGuard<'_, GateState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The eventfd a worker waits on.
    pub fn event(&self) -> &EventFd {
        &self.wake
    }

    /// Parks the worker (if any) and waits until it is parked; false when
    /// it did not park within [`PAUSE_TIMEOUT`] (it will park when it
    /// finishes what it is doing).
    pub fn pause(&self) -> bool {
        let mut s = self.lock();
        s.paused = true;
        let _ = self.wake.write(1);
        let (s, timeout) = self
            .changed
            .wait_timeout_while(s, PAUSE_TIMEOUT, |s| s.parked < s.workers)
            .unwrap_or_else(|p| p.into_inner());
        drop(s);
        !timeout.timed_out()
    }

    /// Lets the worker go on.
    pub fn resume(&self) {
        let mut s = self.lock();
        s.paused = false;
        s.queues = None;
        let _ = self.wake.read();
        self.changed.notify_all();
    }

    pub fn is_paused(&self) -> bool {
        self.lock().paused
    }

    /// While paused: where the parked worker left its queues, in queue
    /// order (None when no worker is parked, or it could not say).
    pub fn parked_queues(&self) -> Option<Vec<QueuePosition>> {
        let s = self.lock();
        match s.paused && s.parked > 0 {
            true => s.queues.clone(),
            false => None,
        }
    }

    /// A worker starts serving.
    pub(crate) fn attach(&self) {
        self.lock().workers += 1;
    }

    /// A worker ends.
    pub(crate) fn detach(&self) {
        let mut s = self.lock();
        s.workers = s.workers.saturating_sub(1);
        self.changed.notify_all();
    }

    /// Called by the worker when the gate's eventfd is readable: parks
    /// while the device is paused, after `queues` said where the worker
    /// left its queues (None: it cannot say). Returns early when `stop`
    /// says the worker must end (checked each time the gate changes).
    pub(crate) fn park(
        &self,
        queues: impl FnOnce() -> Option<Vec<QueuePosition>>,
        stop: impl Fn() -> bool,
    ) {
        let mut s = self.lock();
        if !s.paused {
            let _ = self.wake.read();
            return;
        }
        s.queues = queues();
        s.parked += 1;
        self.changed.notify_all();
        while s.paused && !stop() {
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(100))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        s.parked -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn pause_without_a_worker_returns_and_resume_clears() {
        let gate = PauseGate::new().unwrap();
        assert!(gate.pause());
        assert!(gate.is_paused());
        gate.resume();
        assert!(!gate.is_paused());
    }

    #[test]
    fn pause_waits_for_the_worker_to_park() {
        let gate = Arc::new(PauseGate::new().unwrap());
        gate.attach();
        let worker = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                // The worker notices the eventfd a little later.
                std::thread::sleep(Duration::from_millis(50));
                gate.park(|| None, || false);
            })
        };
        let start = std::time::Instant::now();
        assert!(gate.pause());
        assert!(start.elapsed() >= Duration::from_millis(40));
        assert!(!worker.is_finished());
        gate.resume();
        worker.join().unwrap();
        gate.detach();
    }
}
