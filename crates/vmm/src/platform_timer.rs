//! The platform timer: one thread that sleeps until the earliest deadline
//! of the machine's [`TimedDevice`]s (the RTC's periodic, alarm and update
//! interrupts) and polls the devices that are due.
//!
//! Devices report a deadline a guest access set through the
//! [`DeadlineSink`] of [`PlatformTimer::deadline_sink`]; it wakes the
//! thread only when the new deadline is earlier than the one it sleeps
//! towards (or while it is scanning the devices, so that no change is
//! missed). The thread never holds its own lock and a device's at once.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use devices::{Clock, DeadlineSink, TimedDevice};

/// What the sleeping thread and the deadline sinks share.
struct State {
    stop: bool,
    /// The deadline the thread sleeps towards; `u64::MAX` while it scans
    /// the devices (any report then makes it scan again).
    armed: u64,
    /// A deadline came in since the thread last looked.
    kicked: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Polls timed devices when their deadlines come.
pub struct PlatformTimer {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    devices: Vec<Arc<Mutex<dyn TimedDevice>>>,
    thread: Option<JoinHandle<()>>,
}

impl PlatformTimer {
    /// A timer on `clock` (the devices' clock); not started.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        PlatformTimer {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    stop: false,
                    armed: u64::MAX,
                    kicked: false,
                }),
                wake: Condvar::new(),
            }),
            clock,
            devices: Vec::new(),
            thread: None,
        }
    }

    /// Adds a device to poll (before [`PlatformTimer::start`]).
    pub fn add(&mut self, device: Arc<Mutex<dyn TimedDevice>>) {
        self.devices.push(device);
    }

    /// The sink devices report new deadlines to.
    pub fn deadline_sink(&self) -> DeadlineSink {
        let shared = self.shared.clone();
        Arc::new(move |deadline| {
            let mut s = lock(&shared.state);
            if deadline < s.armed {
                s.kicked = true;
                shared.wake.notify_one();
            }
        })
    }

    /// Starts the thread (once; nothing to do without devices).
    pub fn start(&mut self) -> std::io::Result<()> {
        if self.thread.is_some() || self.devices.is_empty() {
            return Ok(());
        }
        let ctx = TimerThread {
            shared: self.shared.clone(),
            clock: self.clock.clone(),
            devices: self.devices.clone(),
        };
        self.thread = Some(sandbox::spawn(
            sandbox::ThreadKind::PlatformTimer,
            std::thread::Builder::new().name("platform-timer".into()),
            move || ctx.run(),
        )?);
        Ok(())
    }

    /// Stops the thread and waits for it.
    pub fn stop(&mut self) {
        {
            let mut s = lock(&self.shared.state);
            s.stop = true;
            self.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }

    /// Makes the thread look at its devices again (after the clock they
    /// read was stopped and went on).
    pub fn kick(&self) {
        let mut s = lock(&self.shared.state);
        s.kicked = true;
        self.shared.wake.notify_one();
    }

    /// Whether the thread runs.
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for PlatformTimer {
    fn drop(&mut self) {
        self.stop();
    }
}

struct TimerThread {
    shared: Arc<Shared>,
    clock: Arc<dyn Clock>,
    devices: Vec<Arc<Mutex<dyn TimedDevice>>>,
}

impl TimerThread {
    /// Polls the devices that are due; returns the earliest deadline left.
    fn scan(&self) -> u64 {
        let now = self.clock.now_ns();
        let mut earliest = u64::MAX;
        for device in &self.devices {
            let mut d = lock(device);
            if d.next_deadline_ns().is_some_and(|t| t <= now) {
                d.poll();
            }
            if let Some(t) = d.next_deadline_ns() {
                earliest = earliest.min(t);
            }
        }
        earliest
    }

    fn run(self) {
        loop {
            let earliest = self.scan();
            let mut s = lock(&self.shared.state);
            loop {
                if s.stop {
                    return;
                }
                if s.kicked {
                    s.kicked = false;
                    break;
                }
                let now = self.clock.now_ns();
                if earliest <= now {
                    break;
                }
                s.armed = earliest;
                // u64::MAX ns is centuries: a wait without timeout.
                let wait = Duration::from_nanos(earliest - now);
                s = self
                    .shared
                    .wake
                    .wait_timeout(s, wait)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
            s.armed = u64::MAX;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devices::HostClock;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    /// Due at a deadline set from outside; counts polls.
    struct Alarm {
        clock: Arc<dyn Clock>,
        at: Option<u64>,
        polls: Arc<AtomicU32>,
    }

    impl TimedDevice for Alarm {
        fn next_deadline_ns(&self) -> Option<u64> {
            self.at
        }
        fn poll(&mut self) {
            if self.at.is_some_and(|t| t <= self.clock.now_ns()) {
                self.at = None;
                self.polls.fetch_add(1, Ordering::SeqCst);
            }
        }
    }

    fn wait_for(polls: &AtomicU32, n: u32) {
        let start = Instant::now();
        while polls.load(Ordering::SeqCst) < n {
            assert!(start.elapsed() < Duration::from_secs(10), "no poll came");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn polls_at_deadlines_set_before_and_while_running_and_stops() {
        let clock: Arc<dyn Clock> = Arc::new(HostClock::new());
        let polls = Arc::new(AtomicU32::new(0));
        let alarm = Arc::new(Mutex::new(Alarm {
            clock: clock.clone(),
            at: Some(clock.now_ns() + 20_000_000),
            polls: polls.clone(),
        }));
        let mut timer = PlatformTimer::new(clock.clone());
        timer.add(alarm.clone());
        let sink = timer.deadline_sink();
        timer.start().unwrap();
        assert!(timer.is_running());
        wait_for(&polls, 1);

        // A deadline set while the thread sleeps forever wakes it up.
        std::thread::sleep(Duration::from_millis(20));
        let at = clock.now_ns() + 10_000_000;
        let started = Instant::now();
        lock(&alarm).at = Some(at);
        sink(at);
        wait_for(&polls, 2);
        assert!(started.elapsed() >= Duration::from_millis(9));

        timer.stop();
        assert!(!timer.is_running());
        // After the stop, nothing polls any more.
        lock(&alarm).at = Some(0);
        sink(0);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn without_devices_nothing_starts_and_drop_is_clean() {
        let mut timer = PlatformTimer::new(Arc::new(HostClock::new()));
        timer.start().unwrap();
        assert!(!timer.is_running());
        drop(timer);
    }
}
