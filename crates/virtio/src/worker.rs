//! A device's I/O thread.
//!
//! An activated device hands [`Worker::spawn`] a [`WorkerHandler`]: the
//! worker thread waits (epoll) on the queue eventfds, on any backend file
//! descriptors the handler registers through [`WorkerCtl`], and on a stop
//! eventfd. A notified queue calls [`WorkerHandler::queue_event`], a ready
//! backend fd [`WorkerHandler::backend_event`]. An error from the handler
//! is the guest's (a bad descriptor chain...): it is logged (rate-limited),
//! the transport is told to set DEVICE_NEEDS_RESET, and the worker serves
//! nothing more until the driver resets the device, which stops the worker.
//! While the VM is paused the worker parks on its device's
//! [`crate::pause::PauseGate`] between two events.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use devices::ratelimit::RateLimiter;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::pause::QueuePosition;
use crate::{DeviceError, Interrupt};

/// Tokens below this are queue indices; backends use tokens from here up.
pub const BACKEND_TOKEN: u64 = 1 << 32;
const STOP_TOKEN: u64 = u64::MAX;
const PAUSE_TOKEN: u64 = u64::MAX - 1;

/// What a device does on its worker thread.
pub trait WorkerHandler: Send + 'static {
    /// Called once when the thread starts, before any event: register the
    /// backend's file descriptors here.
    fn start(&mut self, _ctl: &WorkerCtl) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The driver notified queue `queue` (its eventfd was drained). Also
    /// called once per queue at start, for buffers made available before
    /// the device was activated.
    fn queue_event(&mut self, ctl: &WorkerCtl, queue: usize) -> Result<(), DeviceError>;
    /// A backend descriptor registered with `token` is ready.
    fn backend_event(
        &mut self,
        _ctl: &WorkerCtl,
        _token: u64,
        _events: EventSet,
    ) -> Result<(), DeviceError> {
        Ok(())
    }
    /// The VM pauses and the worker parks: give back to the available
    /// ring any chain taken but not used (it is taken again after the
    /// pause), and say where every queue of the device is, in queue order
    /// (a snapshot saves it). None (the default): the device cannot be
    /// saved.
    fn park(&mut self) -> Option<Vec<QueuePosition>> {
        None
    }
    /// The VM runs again after a pause: a backend whose descriptor was
    /// replaced meanwhile (a TAP taken back after a failed migration)
    /// registers it again.
    fn unparked(&mut self, _ctl: &WorkerCtl) -> Result<(), DeviceError> {
        Ok(())
    }
}

/// Where `queue` is (for [`WorkerHandler::park`]).
pub fn position(queue: &virtio_queue::Queue) -> QueuePosition {
    use virtio_queue::QueueT;
    QueuePosition {
        next_avail: queue.next_avail(),
        next_used: queue.next_used(),
    }
}

/// The worker's epoll set, for handlers to (un)register backend fds.
pub struct WorkerCtl {
    epoll: Epoll,
    queue_events: Vec<EventFd>,
}

impl WorkerCtl {
    /// Makes queue `queue` be served again soon, as if the driver had
    /// notified it (after [`crate::chain::Served::More`]).
    pub fn rearm(&self, queue: usize) {
        if let Some(event) = self.queue_events.get(queue) {
            let _ = event.write(1);
        }
    }

    /// Waits for `events` on `fd`; `token` (at least [`BACKEND_TOKEN`])
    /// comes back in [`WorkerHandler::backend_event`].
    pub fn add(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Add, fd, EpollEvent::new(events, token))
    }
    /// Changes the events waited for on `fd`.
    pub fn modify(&self, fd: RawFd, token: u64, events: EventSet) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Modify, fd, EpollEvent::new(events, token))
    }
    /// Stops waiting on `fd`.
    pub fn remove(&self, fd: RawFd) -> io::Result<()> {
        self.epoll
            .ctl(ControlOperation::Delete, fd, EpollEvent::default())
    }
}

/// A running device thread; stopped (and joined) by [`Worker::stop`] or
/// on drop.
pub struct Worker<H: WorkerHandler> {
    stop: EventFd,
    /// Set before `stop` is written: a worker parked by a pause ends too.
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<H>>,
}

impl<H: WorkerHandler> Worker<H> {
    /// Starts the thread of `kind` (named after it, under its syscall
    /// filter) serving `queue_events` with `handler`.
    pub fn spawn(
        kind: sandbox::ThreadKind,
        queue_events: Vec<EventFd>,
        interrupt: Arc<dyn Interrupt>,
        handler: H,
    ) -> Result<Worker<H>, DeviceError> {
        let stop = EventFd::new(EFD_NONBLOCK).map_err(DeviceError::Io)?;
        let ctl = WorkerCtl {
            epoll: Epoll::new().map_err(DeviceError::Io)?,
            queue_events: queue_events
                .iter()
                .map(EventFd::try_clone)
                .collect::<io::Result<_>>()
                .map_err(DeviceError::Io)?,
        };
        for (i, event) in queue_events.iter().enumerate() {
            ctl.add(event.as_raw_fd(), i as u64, EventSet::IN)
                .map_err(DeviceError::Io)?;
        }
        ctl.add(stop.as_raw_fd(), STOP_TOKEN, EventSet::IN)
            .map_err(DeviceError::Io)?;
        let gate = interrupt.pause_gate();
        if let Some(gate) = &gate {
            ctl.add(gate.event().as_raw_fd(), PAUSE_TOKEN, EventSet::IN)
                .map_err(DeviceError::Io)?;
            gate.attach();
        }
        let gate_on_error = gate.clone();
        let stopping = Arc::new(AtomicBool::new(false));
        let stopping_copy = stopping.clone();
        let stop_copy = stop.try_clone().map_err(DeviceError::Io)?;
        let thread_name = kind.name().to_string();
        let builder = std::thread::Builder::new().name(thread_name.clone());
        let thread = sandbox::spawn(kind, builder, move || {
            let mut run = Run {
                name: thread_name,
                ctl,
                queue_events,
                stop: stop_copy,
                interrupt,
                failed: false,
                log_limit: RateLimiter::default(),
                handler,
                gate,
                stopping: stopping_copy,
            };
            run.run();
            if let Some(gate) = &run.gate {
                gate.detach();
            }
            run.handler
        });
        let thread = match thread {
            Ok(thread) => thread,
            Err(e) => {
                if let Some(gate) = &gate_on_error {
                    gate.detach();
                }
                return Err(DeviceError::Io(e));
            }
        };
        Ok(Worker {
            stop,
            stopping,
            thread: Some(thread),
        })
    }

    /// Stops the thread and returns the handler (None if it panicked).
    pub fn stop(mut self) -> Option<H> {
        self.stop_thread()
    }

    fn stop_thread(&mut self) -> Option<H> {
        let thread = self.thread.take()?;
        self.stopping.store(true, Ordering::SeqCst);
        // An eventfd write fails only when the counter would overflow,
        // which means a stop is already pending.
        let _ = self.stop.write(1);
        thread.join().ok()
    }
}

impl<H: WorkerHandler> Drop for Worker<H> {
    fn drop(&mut self) {
        self.stop_thread();
    }
}

struct Run<H> {
    name: String,
    ctl: WorkerCtl,
    queue_events: Vec<EventFd>,
    stop: EventFd,
    interrupt: Arc<dyn Interrupt>,
    /// The handler failed: the device waits for the driver's reset.
    failed: bool,
    log_limit: RateLimiter,
    handler: H,
    gate: Option<Arc<crate::pause::PauseGate>>,
    stopping: Arc<AtomicBool>,
}

impl<H: WorkerHandler> Run<H> {
    fn run(&mut self) {
        crate::chain::set_thread_write_hook(self.interrupt.guest_write_hook());
        let started = self.handler.start(&self.ctl);
        self.check(started);
        // A device restored into a paused VM waits for the VM to run
        // before it serves what was made available before the snapshot.
        if let Some(gate) = self.gate.as_ref().filter(|g| g.is_paused()) {
            let (stopping, handler) = (&self.stopping, &mut self.handler);
            gate.park(|| handler.park(), || stopping.load(Ordering::SeqCst));
            let unparked = self.handler.unparked(&self.ctl);
            self.check(unparked);
        }
        for queue in 0..self.queue_events.len() {
            if self.failed {
                break;
            }
            let served = self.handler.queue_event(&self.ctl, queue);
            self.check(served);
        }
        let mut events = vec![EpollEvent::default(); 16];
        loop {
            let n = match self.ctl.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(device = %self.name, error = %e, "virtio worker: epoll failed");
                    return;
                }
            };
            for event in &events[..n] {
                let token = event.data();
                if token == STOP_TOKEN {
                    let _ = self.stop.read();
                    return;
                }
                if token == PAUSE_TOKEN {
                    if let Some(gate) = &self.gate {
                        let (stopping, handler) = (&self.stopping, &mut self.handler);
                        gate.park(|| handler.park(), || stopping.load(Ordering::SeqCst));
                        let unparked = self.handler.unparked(&self.ctl);
                        self.check(unparked);
                    }
                    // Events that came in meanwhile are in `events` only
                    // if epoll returned them before the pause: serve them
                    // now (the guest made them available before it paused).
                    continue;
                }
                self.dispatch(token, event.event_set());
            }
        }
    }

    fn dispatch(&mut self, token: u64, events: EventSet) {
        if token < BACKEND_TOKEN {
            let queue = token as usize;
            if let Some(event) = self.queue_events.get(queue) {
                // Nonblocking: a spurious wakeup reads nothing.
                let _ = event.read();
            }
            if !self.failed {
                let served = self.handler.queue_event(&self.ctl, queue);
                self.check(served);
            }
        } else if !self.failed {
            let served = self.handler.backend_event(&self.ctl, token, events);
            self.check(served);
        } else {
            // A failed device stops listening to its backend, so that a
            // level-triggered fd does not spin the thread.
            tracing::debug!(device = %self.name, token, "event of a failed device");
        }
    }

    fn check(&mut self, result: Result<(), DeviceError>) {
        let Err(error) = result else { return };
        if self.log_limit.allow() {
            tracing::warn!(
                device = %self.name,
                error = %crate::error_chain(&error),
                "virtio device error: the device needs a reset"
            );
        }
        self.failed = true;
        self.interrupt.needs_reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::mpsc;

    #[derive(Default)]
    struct Signals {
        needs_reset: AtomicU32,
    }

    impl Interrupt for Signals {
        fn signal_used(&self, _queue: usize) {}
        fn signal_config(&self) {}
        fn needs_reset(&self) {
            self.needs_reset.fetch_add(1, Ordering::SeqCst);
        }
    }

    struct Echo {
        seen: mpsc::Sender<usize>,
        fail_on: usize,
    }

    impl WorkerHandler for Echo {
        fn queue_event(&mut self, _ctl: &WorkerCtl, queue: usize) -> Result<(), DeviceError> {
            let _ = self.seen.send(queue);
            if queue == self.fail_on {
                return Err(DeviceError::NoQueue(queue));
            }
            Ok(())
        }
    }

    fn recv(rx: &mpsc::Receiver<usize>) -> usize {
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("the worker did not serve the queue")
    }

    #[test]
    fn notified_queues_are_served_and_errors_ask_for_a_reset() {
        let events: Vec<EventFd> = (0..2)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let notify: Vec<EventFd> = events.iter().map(|e| e.try_clone().unwrap()).collect();
        let signals = Arc::new(Signals::default());
        let (tx, rx) = mpsc::channel();
        let worker = Worker::spawn(
            sandbox::ThreadKind::VirtioBlk,
            events,
            signals.clone(),
            Echo {
                seen: tx,
                fail_on: 1,
            },
        )
        .unwrap();
        // Start: queue 0 is served, queue 1 fails.
        assert_eq!(recv(&rx), 0);
        assert_eq!(recv(&rx), 1);
        // After the failure nothing more is served.
        notify[0].write(1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(rx.try_recv().is_err());
        assert_eq!(signals.needs_reset.load(Ordering::SeqCst), 1);
        assert!(worker.stop().is_some());
    }

    /// An interrupt with a pause gate, as the transports give.
    struct Gated(Arc<crate::pause::PauseGate>);

    impl Interrupt for Gated {
        fn signal_used(&self, _queue: usize) {}
        fn signal_config(&self) {}
        fn needs_reset(&self) {}
        fn pause_gate(&self) -> Option<Arc<crate::pause::PauseGate>> {
            Some(self.0.clone())
        }
    }

    #[test]
    fn a_paused_worker_serves_nothing_until_resumed() {
        let events = vec![EventFd::new(EFD_NONBLOCK).unwrap()];
        let notify = events[0].try_clone().unwrap();
        let gate = Arc::new(crate::pause::PauseGate::new().unwrap());
        let (tx, rx) = mpsc::channel();
        let worker = Worker::spawn(
            sandbox::ThreadKind::VirtioBlk,
            events,
            Arc::new(Gated(gate.clone())),
            Echo {
                seen: tx,
                fail_on: usize::MAX,
            },
        )
        .unwrap();
        assert_eq!(recv(&rx), 0);
        assert!(gate.pause());
        notify.write(1).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(rx.try_recv().is_err(), "served while paused");
        gate.resume();
        assert_eq!(recv(&rx), 0);
        // Stopping a paused worker ends it too.
        assert!(gate.pause());
        assert!(worker.stop().is_some());
    }

    #[test]
    fn a_stopped_worker_has_ended_its_thread() {
        let events = vec![EventFd::new(EFD_NONBLOCK).unwrap()];
        let notify = events[0].try_clone().unwrap();
        let (tx, rx) = mpsc::channel();
        let worker = Worker::spawn(
            sandbox::ThreadKind::VirtioBlk,
            events,
            Arc::new(Signals::default()),
            Echo {
                seen: tx,
                fail_on: usize::MAX,
            },
        )
        .unwrap();
        assert_eq!(recv(&rx), 0);
        notify.write(1).unwrap();
        assert_eq!(recv(&rx), 0);
        let handler = worker.stop().unwrap();
        drop(handler);
        // The handler (and its sender) is gone: the thread has ended.
        assert!(rx.recv().is_err());
    }
}
