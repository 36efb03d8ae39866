//! A vCPU thread as an explicit state machine.
//!
//! ```text
//!            run() -> Interrupted (not stopping)
//!          ┌──────────┐
//!          ▼          │
//!   ──► Running ──────┴──► Halted ──(stop)──► Exiting ──► thread ends
//!          │  Shutdown/Reset/PowerOff/error        ▲
//!          └───────────────────────────────────────┘
//! ```
//!
//! A vCPU leaves `Running` when the guest does something only the machine can
//! decide on; it reports that as a [`MachineEvent`] and stops. The machine
//! stops every other vCPU by setting the shared stop flag and kicking them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use devices::{GuestRequest, IoBuses};
use hv::{ExitStats, HvError, Vcpu, VcpuExit};

/// Why a vCPU stopped on its own.
#[derive(Debug)]
pub enum VcpuStop {
    /// Triple fault (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// The accelerator reported that the guest cannot continue.
    Failed(HvError),
}

/// What the machine's control thread waits for.
#[derive(Debug)]
pub enum MachineEvent {
    /// A device or the CPU asked the machine for something.
    Guest(GuestRequest),
    /// A vCPU stopped by itself.
    Vcpu { id: u32, stop: VcpuStop },
    /// The user asked to end the VM from the console.
    HostQuit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// HLT returned to us (the accelerator does not wait for interrupts
    /// itself); nothing can wake this vCPU but the end of the machine.
    Halted,
    Exiting,
}

/// What a vCPU thread owns.
pub struct VcpuContext {
    pub vcpu: Box<dyn Vcpu>,
    pub buses: Arc<IoBuses>,
    pub stop: Arc<AtomicBool>,
    pub events: Sender<MachineEvent>,
}

impl VcpuContext {
    /// Runs the state machine until the machine stops; returns the vCPU's
    /// exit statistics.
    pub fn run(mut self) -> ExitStats {
        let mut state = State::Running;
        while state != State::Exiting {
            state = match state {
                State::Running => self.step(),
                State::Halted => {
                    std::thread::park();
                    if self.stopping() {
                        State::Exiting
                    } else {
                        State::Halted
                    }
                }
                State::Exiting => State::Exiting,
            };
        }
        self.vcpu.exit_stats()
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn step(&mut self) -> State {
        if self.stopping() {
            return State::Exiting;
        }
        let id = self.vcpu.id();
        match self.vcpu.run(&*self.buses) {
            Ok(VcpuExit::Interrupted) | Ok(VcpuExit::Debug) => State::Running,
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
