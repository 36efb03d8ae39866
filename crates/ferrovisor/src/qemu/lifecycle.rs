//! A machine under QMP: started at once or after `cont` (-S), ended by
//! the guest, a signal or QMP (quit, system_reset), and with
//! -no-shutdown kept as a stopped VM after the guest ends it, until QMP's
//! `quit`. The SHUTDOWN event says why it ended, with QEMU's reasons.

use std::path::Path;
use std::process::ExitCode;
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Duration;

use serde_json::json;
use vmm::{Machine, MachineExit};

use super::qmp::{self, HostReason, Phase, Request, Shared};

/// How often the waits look at signals.
const SIGNAL_POLL: Duration = Duration::from_millis(100);

/// What the main thread waits for when no machine runs.
enum Wake {
    Request(Request),
    /// A signal came, or QMP's side is gone.
    End,
}

fn wait(requests: &Receiver<Request>) -> Wake {
    loop {
        match requests.recv_timeout(SIGNAL_POLL) {
            Ok(r) => return Wake::Request(r),
            Err(RecvTimeoutError::Timeout) if crate::signals::received().is_none() => {}
            Err(_) => return Wake::End,
        }
    }
}

/// The SHUTDOWN event's data for how the machine ended; None when QEMU
/// sends none (the debug-exit port ends QEMU at once).
fn shutdown_data(exit: &MachineExit, host: Option<HostReason>) -> Option<serde_json::Value> {
    let (guest, reason) = match exit {
        MachineExit::PowerOff => (true, "guest-shutdown"),
        MachineExit::Reset | MachineExit::TripleFault { .. } => (true, "guest-reset"),
        MachineExit::HostQuit => (false, "host-ui"),
        MachineExit::Stopped => match host {
            Some(HostReason::Quit) => (false, "host-qmp-quit"),
            Some(HostReason::SystemReset) => (false, "host-qmp-system-reset"),
            None => (false, "host-signal"),
        },
        MachineExit::DebugExit { .. }
        | MachineExit::Failed { .. }
        | MachineExit::ControllerPanicked
        | MachineExit::Migrated => return None,
    };
    Some(json!({"guest": guest, "reason": reason}))
}

/// Runs `machine` with a QMP server on `path`.
/// How the machine starts under QMP.
pub struct Start {
    /// -S: prelaunch until QMP's `cont`.
    pub paused: bool,
    /// -no-shutdown.
    pub no_shutdown: bool,
    /// A gdb stub, serving once the machine starts.
    pub gdb: Option<crate::gdb::GdbServer>,
}

pub fn run(
    machine: Machine,
    path: &Path,
    vcpus: u32,
    how: Start,
    fail: &dyn Fn(&str) -> ExitCode,
) -> ExitCode {
    let Start {
        paused,
        no_shutdown,
        gdb,
    } = how;
    let gdb = std::cell::Cell::new(gdb);
    let (tx, requests) = channel();
    let shared = Shared::new(Phase::Prelaunch, tx, vcpus);
    let start = |machine: Machine| match machine.start() {
        Ok(running) => {
            shared.set_phase(Phase::Running(running.handle()));
            crate::signals::attach(running.handle());
            if let Some(server) = gdb.take() {
                server.spawn(running.debugger())?;
            }
            Ok(running)
        }
        Err(e) => Err(crate::error_line(&e)),
    };
    // Without -S the machine runs before QMP answers: it never sees a
    // VM that is neither prelaunch nor running.
    let first = if paused {
        Err(machine)
    } else {
        match start(machine) {
            Ok(r) => Ok(r),
            Err(message) => return fail(&message),
        }
    };
    let _server = match qmp::serve(path, shared.clone()) {
        Ok(server) => server,
        Err(e) => return fail(&format!("-qmp unix:{}: {e}", path.display())),
    };
    let running = match first {
        Ok(r) => r,
        Err(machine) => match wait(&requests) {
            Wake::Request(Request::Start(reply)) => match start(machine) {
                Ok(r) => {
                    let _ = reply.send(Ok(()));
                    r
                }
                Err(message) => {
                    let _ = reply.send(Err(message.clone()));
                    return fail(&message);
                }
            },
            Wake::Request(Request::Quit) => {
                shared.event(
                    "SHUTDOWN",
                    Some(json!({"guest": false, "reason": "host-qmp-quit"})),
                );
                return ExitCode::SUCCESS;
            }
            Wake::End => return crate::signals::exit_code(ExitCode::SUCCESS),
        },
    };
    // The main thread takes the vmm filter once the VM runs, as with
    // `run`: from here it only waits, sends QMP events on the client's
    // socket (write), removes the socket and reports the end.
    if let Err(message) = crate::seccomp::enter_main() {
        return fail(&message);
    }
    let report = running.wait();
    let data = shutdown_data(&report.exit, shared.host_reason());
    let by_guest = data.as_ref().is_some_and(|d| d["guest"] == true);
    shared.set_phase(if no_shutdown && by_guest {
        Phase::Shutdown
    } else {
        Phase::Ended
    });
    if let Some(data) = data {
        shared.event("SHUTDOWN", Some(data));
    }
    if no_shutdown && by_guest {
        // QEMU stops the VM instead of exiting; QMP's quit ends it.
        shared.event("STOP", None);
        loop {
            match wait(&requests) {
                Wake::Request(Request::Quit) | Wake::End => break,
                Wake::Request(Request::Start(reply)) => {
                    let _ = reply.send(Err("Resetting the Virtual Machine is required".into()));
                }
            }
        }
    }
    crate::finish(report, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_reasons_are_qemus() {
        let reason = |exit, host| shutdown_data(&exit, host).map(|d| d["reason"].clone());
        assert_eq!(
            reason(MachineExit::PowerOff, None),
            Some(json!("guest-shutdown"))
        );
        assert_eq!(reason(MachineExit::Reset, None), Some(json!("guest-reset")));
        assert_eq!(
            reason(MachineExit::Stopped, Some(HostReason::Quit)),
            Some(json!("host-qmp-quit"))
        );
        assert_eq!(
            reason(MachineExit::Stopped, Some(HostReason::SystemReset)),
            Some(json!("host-qmp-system-reset"))
        );
        assert_eq!(
            reason(MachineExit::Stopped, None),
            Some(json!("host-signal"))
        );
        assert_eq!(reason(MachineExit::DebugExit { status: 3 }, None), None);
    }
}
