//! SIGTERM, SIGINT and SIGHUP end the VM cleanly, through its controller.
//!
//! [`install`] blocks the three signals in the main thread before it starts
//! any other, so every thread inherits the mask, and starts the `signals`
//! thread, the only one that unblocks them. Their handler (vmm-sys-util's
//! `register_signal_handler`, as Firecracker's) only records the signal
//! and writes an eventfd; the `signals` thread does the rest. The first
//! signal sends [`vmm::Command::Stop`] to the machine [`attach`]ed (or,
//! before a machine exists, is seen by the front end through
//! [`received`]); the machine ends as on any stop: the terminal is
//! restored, the vsock socket removed; then the front end removes its API
//! socket and writes its last metrics line, and [`exit_code`] gives the
//! process's status:
//!
//! | signal  | Firecracker                              | Ferrovisor                                   |
//! |---------|------------------------------------------|----------------------------------------------|
//! | SIGHUP  | writes its metrics, exits 156            | stops the VM cleanly, exits 156              |
//! | SIGTERM | not handled: killed (a shell shows 143)  | stops the VM cleanly, exits 143 (128 + 15)   |
//! | SIGINT  | not handled: killed (a shell shows 130)  | stops the VM cleanly, exits 130 (128 + 2)    |
//!
//! A second signal while the VM is stopping ends the process at once with
//! the same status, without the clean-up.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use vmm::{Command, MachineHandle};
use vmm_sys_util::eventfd::EventFd;
use vmm_sys_util::signal::{block_signal, register_signal_handler, unblock_signal, Error};

/// Firecracker's exit code after SIGHUP (FcExitCode::SIGHUP).
pub const SIGHUP_EXIT: u8 = 156;

const HANDLED: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// The first signal taken, 0 before.
static RECEIVED: AtomicI32 = AtomicI32::new(0);
/// The running machine; the lock also orders [`attach`] against a signal.
static MACHINE: Mutex<Option<MachineHandle>> = Mutex::new(None);
/// Signals caught and not yet taken by the `signals` thread, one bit each.
static CAUGHT: AtomicU64 = AtomicU64::new(0);
/// Wakes the `signals` thread.
static WAKE: OnceLock<EventFd> = OnceLock::new();

/// Async-signal-safe: an atomic OR and a write(2) to an eventfd.
extern "C" fn caught(num: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    if (0..64).contains(&num) {
        CAUGHT.fetch_or(1 << num, Ordering::SeqCst);
    }
    if let Some(wake) = WAKE.get() {
        let _ = wake.write(1);
    }
}

/// Blocks SIGTERM, SIGINT and SIGHUP in this thread (and so in every
/// thread it starts after) and starts the thread that takes them. Call
/// before any other thread starts.
pub fn install() -> std::io::Result<()> {
    let wake = EventFd::new(libc::EFD_CLOEXEC)?;
    if WAKE.set(wake).is_err() {
        return Ok(()); // installed already
    }
    for sig in HANDLED {
        match block_signal(sig) {
            Ok(()) | Err(Error::SignalAlreadyBlocked(_)) => {}
            Err(e) => return Err(std::io::Error::other(e.to_string())),
        }
        register_signal_handler(sig, caught).map_err(std::io::Error::from)?;
    }
    let builder = std::thread::Builder::new().name("signals".into());
    sandbox::spawn(sandbox::ThreadKind::Signals, builder, || {
        for sig in HANDLED {
            if let Err(e) = unblock_signal(sig) {
                tracing::error!("cannot unblock signal {sig}: {e}");
            }
        }
        let Some(wake) = WAKE.get() else { return };
        loop {
            // EINTR when the handler ran on this thread: look anyway.
            let _ = wake.read();
            let caught = CAUGHT.swap(0, Ordering::SeqCst);
            for sig in HANDLED {
                if caught & (1 << sig) != 0 {
                    on_signal(sig);
                }
            }
        }
    })?;
    Ok(())
}

fn name(sig: libc::c_int) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        _ => "a signal",
    }
}

fn on_signal(sig: libc::c_int) {
    let machine = {
        let machine = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
        if RECEIVED
            .compare_exchange(0, sig, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            say!("ferrovisor: {} again; ending at once", name(sig));
            die(sig);
        }
        machine.clone()
    };
    tracing::info!("{} received; stopping the microVM", name(sig));
    say!("ferrovisor: {} received; stopping the VM", name(sig));
    if let Some(machine) = machine {
        stop(machine);
    }
}

/// Sends Stop from a thread of its own: the signal thread stays free for
/// a second signal if the stop never completes.
fn stop(machine: MachineHandle) {
    let builder = std::thread::Builder::new().name("signal-stop".into());
    let _ = sandbox::spawn(sandbox::ThreadKind::Signals, builder, move || {
        // Ended already is fine: the machine is stopping anyway.
        let _ = machine.send(Command::Stop);
    });
}

/// Registers the running machine: a signal (already taken, or later) stops it.
pub fn attach(machine: MachineHandle) {
    let mut slot = MACHINE.lock().unwrap_or_else(|e| e.into_inner());
    if RECEIVED.load(Ordering::Acquire) != 0 {
        stop(machine.clone());
    }
    *slot = Some(machine);
}

/// The first signal taken, if any.
pub fn received() -> Option<libc::c_int> {
    match RECEIVED.load(Ordering::Acquire) {
        0 => None,
        sig => Some(sig),
    }
}

/// The process's status: `code` when no signal was taken, else the
/// signal's (156 after SIGHUP, 128 + n after SIGTERM and SIGINT).
pub fn exit_code(code: ExitCode) -> ExitCode {
    match received() {
        None => code,
        Some(sig) => ExitCode::from(status(sig)),
    }
}

/// The exit status after `sig`.
fn status(sig: libc::c_int) -> u8 {
    match sig {
        libc::SIGHUP => SIGHUP_EXIT,
        sig => (128 + sig) as u8,
    }
}

/// Ends the process at once with `sig`'s status.
fn die(sig: libc::c_int) -> ! {
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(status(sig).into())
}
