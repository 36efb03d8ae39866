//! The running machine and its controller thread.
//!
//! [`crate::Machine::start`] starts the vCPU threads and hands the machine
//! to one controller thread, which owns it until it ends. Everything that
//! acts on a running machine sends that thread a message on one channel:
//! the vCPUs and devices (the guest powered off, reset, triple-faulted),
//! the console (Ctrl-A x) and the [`MachineHandle`]'s [`Command`]s (the
//! API: pause, resume, Ctrl-Alt-Del, a drive's new backing file, stop),
//! each answered when done. [`RunningMachine::wait`] returns how the
//! machine ended.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::{channel, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::machine::RunReport;
use crate::vcpu::MachineEvent;

/// What a [`MachineHandle`] asks of the running machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Stop every vCPU and device worker and the guest's clock (no-op
    /// when paused).
    Pause,
    /// Undo [`Command::Pause`] (no-op when running).
    Resume,
    /// Press Ctrl-Alt-Del on the i8042 keyboard.
    SendCtrlAltDel,
    /// Serve drive `index` (in the machine config's order) from `path`.
    UpdateDrive { index: usize, path: PathBuf },
    /// Change a rate limiter: the buckets `update` names are replaced by
    /// new, full ones, the others kept.
    UpdateLimits {
        target: LimitTarget,
        update: virtio::throttle::LimitsUpdate,
    },
    /// Write a snapshot of the paused machine.
    CreateSnapshot(crate::snapshot::CreateSnapshot),
    /// Send the machine to another process over the request's connection
    /// (see [`crate::migration`]); on success the machine ends
    /// ([`crate::MachineExit::Migrated`]), on failure it runs on.
    Migrate(crate::migration::MigrateRequest),
    /// End the machine.
    Stop,
}

/// A rate limiter of a running machine, by device index in the machine
/// config's order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitTarget {
    /// Drive `n`'s limiter.
    Drive(usize),
    /// Network device `n`'s receive limiter.
    NetRx(usize),
    /// Network device `n`'s transmit limiter.
    NetTx(usize),
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the machine has ended")]
    Ended,
    #[error("the vCPUs did not stop")]
    PauseTimeout,
    #[error("cannot press Ctrl-Alt-Del")]
    Keyboard(#[source] devices::i8042::I8042Error),
    #[error("cannot update the device")]
    Update(#[source] crate::devices::UpdateError),
    #[error(transparent)]
    Snapshot(crate::snapshot::SnapshotError),
    #[error("the migration failed")]
    Migration(#[source] crate::migration::MigrationError),
}

/// The state of a started machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    Running,
    Paused,
    Ended,
}

const RUNNING: u8 = 0;
const PAUSED: u8 = 1;
const ENDED: u8 = 2;

/// The state the controller thread publishes.
#[derive(Debug, Default)]
pub(crate) struct SharedState(AtomicU8);

impl SharedState {
    pub(crate) fn set(&self, state: RunState) {
        self.0.store(
            match state {
                RunState::Running => RUNNING,
                RunState::Paused => PAUSED,
                RunState::Ended => ENDED,
            },
            Ordering::Release,
        );
    }

    fn get(&self) -> RunState {
        match self.0.load(Ordering::Acquire) {
            RUNNING => RunState::Running,
            PAUSED => RunState::Paused,
            _ => RunState::Ended,
        }
    }
}

/// Sends commands to a running machine; cheap to clone, usable from any
/// thread.
#[derive(Debug, Clone)]
pub struct MachineHandle {
    pub(crate) events: Sender<MachineEvent>,
    pub(crate) state: Arc<SharedState>,
}

impl MachineHandle {
    /// Runs `command` on the controller thread and waits for its answer.
    pub fn send(&self, command: Command) -> Result<(), CommandError> {
        let (reply, answer) = channel();
        self.events
            .send(MachineEvent::Command(command, reply))
            .map_err(|_| CommandError::Ended)?;
        answer.recv().map_err(|_| CommandError::Ended)?
    }

    pub fn state(&self) -> RunState {
        self.state.get()
    }
}

/// A started machine.
pub struct RunningMachine {
    pub(crate) handle: MachineHandle,
    pub(crate) thread: JoinHandle<RunReport>,
    pub(crate) live: crate::live::LiveStats,
    pub(crate) debug: crate::debug::MachineDebug,
}

impl RunningMachine {
    /// A handle that sends the machine commands.
    pub fn handle(&self) -> MachineHandle {
        self.handle.clone()
    }

    /// What a debugger (the gdb stub) reaches of the machine.
    pub fn debugger(&self) -> crate::debug::MachineDebug {
        self.debug.clone()
    }

    /// The machine's counters, readable from any thread while it runs.
    pub fn live_stats(&self) -> crate::live::LiveStats {
        self.live.clone()
    }

    /// Waits until the machine ends.
    pub fn wait(self) -> RunReport {
        let state = self.handle.state.clone();
        let mut report = self.thread.join().unwrap_or_else(|_| RunReport {
            exit: crate::MachineExit::ControllerPanicked,
            vcpu_stats: Vec::new(),
            accel_counters: Vec::new(),
            unhandled_pio: 0,
            unhandled_mmio: 0,
            accel: "",
        });
        // The vCPUs are gone; their counters stay readable.
        report.accel_counters = self.live.sample().accel_counters;
        state.set(RunState::Ended);
        report
    }
}
