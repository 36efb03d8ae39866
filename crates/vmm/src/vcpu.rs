//! A vCPU thread as an explicit state machine.
//!
//! ```text
//!            run() -> Interrupted (not stopping, not pausing)
//!          ┌──────────┐
//!          ▼          │
//!   ──► Running ──────┴──► Halted ──(stop)──► Exiting ──► thread ends
//!        │  ▲  Shutdown/Reset/PowerOff/error              ▲
//!  (pause)│  │(resume)                                     │
//!        ▼  │                                             │
//!        Paused ─────────────────(stop)────────────────────┘
//! ```
//!
//! A vCPU leaves `Running` when the guest does something only the machine can
//! decide on; it reports that as a [`MachineEvent`] and stops. The machine
//! stops or pauses every vCPU through the shared [`VcpuControl`], kicking
//! them out of the accelerator. A paused vCPU keeps its TSC: it reads it
//! on entering `Paused` and sets it back on leaving, so the guest sees no
//! time pass in between.

use std::collections::VecDeque;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use devices::{GuestRequest, IoBuses};
use hv::state::msr_index::IA32_TSC;
use hv::{DebugCause, ExitStats, HvError, Kicker, Msr, Vcpu, VcpuExit};

use crate::controller::Command;

/// Why a vCPU stopped on its own.
#[derive(Debug)]
pub enum VcpuStop {
    /// Triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// The accelerator reported that the guest cannot continue.
    Failed(HvError),
}

/// What the machine's controller thread waits for.
#[derive(Debug)]
pub enum MachineEvent {
    /// A device or the CPU asked the machine for something.
    Guest(GuestRequest),
    /// A vCPU stopped by itself.
    Vcpu { id: u32, stop: VcpuStop },
    /// The user asked to end the VM from the console.
    HostQuit,
    /// A command from the machine's handle, and where its answer goes.
    Command(Command, Sender<Result<(), crate::controller::CommandError>>),
}

/// Work a debugger has a paused vCPU's thread do on its vCPU.
pub(crate) type VcpuJob = Box<dyn FnOnce(&mut dyn Vcpu) + Send>;

#[derive(Default)]
struct Flags {
    stop: bool,
    pause: bool,
    /// vCPU threads that have not ended.
    live: u32,
    /// Of those, parked in `Paused`.
    parked: u32,
    /// Jobs for parked vCPUs, by vCPU id (see [`VcpuControl::run_on`]).
    jobs: VecDeque<(u32, VcpuJob)>,
    /// Debugger stops the vCPUs reported, oldest first.
    debug_stops: VecDeque<(u32, DebugCause)>,
}

impl std::fmt::Debug for Flags {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flags")
            .field("stop", &self.stop)
            .field("pause", &self.pause)
            .field("live", &self.live)
            .field("parked", &self.parked)
            .field("jobs", &self.jobs.len())
            .field("debug_stops", &self.debug_stops)
            .finish()
    }
}

/// How long [`VcpuControl::pause`] waits for the vCPUs to park.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the machine tells its vCPU threads: stop, pause, resume.
#[derive(Debug, Default)]
pub struct VcpuControl {
    flags: Mutex<Flags>,
    changed: Condvar,
}

impl VcpuControl {
    fn lock(&self) -> MutexGuard<'_, Flags> {
        self.flags.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A vCPU thread is about to start.
    pub fn enter(&self) {
        self.lock().live += 1;
    }

    fn leave(&self) {
        let mut f = self.lock();
        f.live = f.live.saturating_sub(1);
        self.changed.notify_all();
    }

    fn stopping(&self) -> bool {
        self.lock().stop
    }

    fn pausing(&self) -> bool {
        let f = self.lock();
        f.pause && !f.stop
    }

    /// Makes every vCPU leave the guest and park; returns once they all
    /// have (false if some did not within a few seconds).
    pub fn pause(&self, vcpus: &[(Kicker, std::thread::Thread)]) -> bool {
        self.lock().pause = true;
        for (kicker, thread) in vcpus {
            kicker.kick();
            thread.unpark();
        }
        let f = self.lock();
        let (_f, timeout) = self
            .changed
            .wait_timeout_while(f, PAUSE_TIMEOUT, |f| f.parked < f.live && !f.stop)
            .unwrap_or_else(|p| p.into_inner());
        !timeout.timed_out()
    }

    /// Marks the machine paused before any vCPU thread starts (a
    /// restored machine that starts paused).
    pub fn set_paused(&self) {
        self.lock().pause = true;
    }

    /// Waits until every live vCPU is parked (false after a few seconds).
    pub fn wait_parked(&self) -> bool {
        let f = self.lock();
        let (_f, timeout) = self
            .changed
            .wait_timeout_while(f, PAUSE_TIMEOUT, |f| f.parked < f.live && !f.stop)
            .unwrap_or_else(|p| p.into_inner());
        !timeout.timed_out()
    }

    /// Lets paused vCPUs run again.
    pub fn resume(&self) {
        self.lock().pause = false;
        self.changed.notify_all();
    }

    /// Makes every vCPU end.
    pub fn stop(&self, vcpus: &[(Kicker, std::thread::Thread)]) {
        self.lock().stop = true;
        self.changed.notify_all();
        for (kicker, thread) in vcpus {
            kicker.kick();
            thread.unpark();
        }
    }

    /// Parks the calling vCPU while the machine is paused, running the
    /// debugger's jobs for it; false when it must stop.
    fn park(&self, vcpu: &mut dyn Vcpu) -> bool {
        let id = vcpu.id();
        let mut f = self.lock();
        f.parked += 1;
        self.changed.notify_all();
        while f.pause && !f.stop {
            if let Some(at) = f.jobs.iter().position(|(to, _)| *to == id) {
                let job = f.jobs.remove(at).map(|(_, job)| job);
                drop(f);
                if let Some(job) = job {
                    job(vcpu);
                }
                f = self.lock();
                continue;
            }
            f = self.changed.wait(f).unwrap_or_else(|p| p.into_inner());
        }
        f.parked -= 1;
        !f.stop
    }

    /// Has vCPU `id`'s thread run `job` while the machine is paused;
    /// false (and `job` dropped) when it is not paused.
    pub(crate) fn run_on(&self, id: u32, job: VcpuJob) -> bool {
        let mut f = self.lock();
        if !f.pause || f.stop || f.parked < f.live {
            return false;
        }
        f.jobs.push_back((id, job));
        self.changed.notify_all();
        true
    }

    /// A vCPU stopped for the debugger.
    fn report_debug_stop(&self, id: u32, cause: DebugCause) {
        self.lock().debug_stops.push_back((id, cause));
        self.changed.notify_all();
    }

    /// The oldest debugger stop, waiting up to `timeout` for one.
    pub(crate) fn take_debug_stop(&self, timeout: Duration) -> Option<(u32, DebugCause)> {
        let f = self.lock();
        let (mut f, _) = self
            .changed
            .wait_timeout_while(f, timeout, |f| f.debug_stops.is_empty() && !f.stop)
            .unwrap_or_else(|p| p.into_inner());
        f.debug_stops.pop_front()
    }

    /// Forgets the debugger stops reported so far (the debugger resumes
    /// the VM: a vCPU stopped at a breakpoint meets it again).
    pub(crate) fn clear_debug_stops(&self) {
        let mut f = self.lock();
        f.debug_stops.clear();
        // Jobs of a pause that ended are dropped unanswered.
        f.jobs.clear();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// HLT returned to us (the accelerator does not wait for interrupts
    /// itself); nothing can wake this vCPU but a pause or the end of the
    /// machine.
    Halted,
    /// Stopped for the debugger, waiting for the pause it leads to.
    DebugStopped,
    /// The machine is paused; afterwards the vCPU goes back to `then`.
    Paused {
        then: Resume,
    },
    Exiting,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    Running,
    Halted,
}

/// A paused vCPU's complete state, saved as it parks (for snapshots);
/// `None` while it runs.
pub type SavedVcpuState = Mutex<Option<Result<hv::VcpuState, String>>>;

/// What a vCPU thread owns.
pub struct VcpuContext {
    pub vcpu: Box<dyn Vcpu>,
    /// Where the vCPU leaves its state while the machine is paused.
    pub saved: Arc<SavedVcpuState>,
    pub buses: Arc<IoBuses>,
    pub control: Arc<VcpuControl>,
    pub events: Sender<MachineEvent>,
}

impl VcpuContext {
    /// Runs the state machine until the machine stops; returns the vCPU's
    /// exit statistics. The caller called [`VcpuControl::enter`].
    pub fn run(mut self) -> ExitStats {
        let mut state = State::Running;
        while state != State::Exiting {
            state = match state {
                State::Running => self.step(),
                State::Halted => {
                    std::thread::park();
                    if self.control.stopping() {
                        State::Exiting
                    } else if self.control.pausing() {
                        State::Paused {
                            then: Resume::Halted,
                        }
                    } else {
                        State::Halted
                    }
                }
                State::DebugStopped => {
                    if self.control.stopping() {
                        State::Exiting
                    } else if self.control.pausing() {
                        State::Paused {
                            then: Resume::Running,
                        }
                    } else {
                        std::thread::park();
                        State::DebugStopped
                    }
                }
                State::Paused { then } => self.paused(then),
                State::Exiting => State::Exiting,
            };
        }
        self.control.leave();
        self.vcpu.exit_stats()
    }

    /// Parks until the machine resumes, keeping the guest's TSC.
    fn paused(&mut self, then: Resume) -> State {
        let mut tsc = [Msr {
            index: IA32_TSC,
            data: 0,
        }];
        let saved = self.vcpu.get_msrs(&mut tsc).is_ok();
        // Only a guest with kvmclock has anything to be told.
        let _ = self.vcpu.notify_paused();
        // Before parking: once every vCPU is parked the controller may
        // read the states.
        let state = self.vcpu.save_state().map_err(|e| e.to_string());
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = Some(state);
        let go_on = self.control.park(&mut *self.vcpu);
        *self.saved.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if !go_on {
            return State::Exiting;
        }
        if saved {
            if let Err(e) = self.vcpu.set_msrs(&tsc) {
                tracing::warn!(vcpu = self.vcpu.id(), error = %e, "cannot restore the TSC after a pause");
            }
        }
        match then {
            Resume::Running => State::Running,
            Resume::Halted => State::Halted,
        }
    }

    fn step(&mut self) -> State {
        if self.control.stopping() {
            return State::Exiting;
        }
        if self.control.pausing() {
            return State::Paused {
                then: Resume::Running,
            };
        }
        let id = self.vcpu.id();
        match self.vcpu.run(&*self.buses) {
            Ok(VcpuExit::Interrupted) => State::Running,
            Ok(VcpuExit::Debug(cause)) => {
                self.control.report_debug_stop(id, cause);
                State::DebugStopped
            }
            Ok(VcpuExit::Halt) => State::Halted,
            Ok(VcpuExit::Shutdown) => self.report(MachineEvent::Vcpu {
                id,
                stop: VcpuStop::TripleFault,
            }),
            Ok(VcpuExit::Reset) => self.report(MachineEvent::Guest(GuestRequest::Reset)),
            Ok(VcpuExit::PowerOff) => self.report(MachineEvent::Guest(GuestRequest::PowerOff)),
            Err(e) => self.report(MachineEvent::Vcpu {
                id,
                stop: VcpuStop::Failed(e),
            }),
        }
    }

    fn report(&self, event: MachineEvent) -> State {
        // The receiver only goes away once the machine is stopping anyway.
        let _ = self.events.send(event);
        State::Exiting
    }
}
