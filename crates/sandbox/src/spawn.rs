//! Starting threads: each thread installs its kind's filter first. With
//! filters on, the launcher thread starts them, so that none inherits the
//! filter of the thread that asked for it.

use std::io;
use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::{Mutex, OnceLock};
use std::thread::{Builder, JoinHandle};

use crate::{policy, SandboxError, ThreadKind};

type Job = Box<dyn FnOnce() + Send>;

static LAUNCHER: OnceLock<Mutex<Sender<Job>>> = OnceLock::new();

/// Starts the launcher thread; it installs its filter before taking jobs.
pub(crate) fn start_launcher() -> Result<(), SandboxError> {
    let (jobs_tx, jobs) = channel::<Job>();
    let (ready_tx, ready) = sync_channel(1);
    Builder::new()
        .name("launcher".into())
        .spawn(move || {
            let entered = policy::enter(ThreadKind::Launcher);
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if !ok {
                return;
            }
            while let Ok(job) = jobs.recv() {
                job();
            }
        })
        .map_err(SandboxError::Launcher)?;
    match ready.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e),
        Err(_) => {
            return Err(SandboxError::Launcher(io::Error::other(
                "the launcher ended before it started",
            )))
        }
    }
    let _ = LAUNCHER.set(Mutex::new(jobs_tx));
    Ok(())
}

/// Starts a thread of `kind` as `builder` describes (name, stack size):
/// it installs the kind's filter, then runs `f`. A thread whose filter
/// cannot be installed ends the process (status 1): it never runs
/// unfiltered while filters are on.
pub fn spawn<F, T>(kind: ThreadKind, builder: Builder, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let body = move || {
        if let Err(e) = policy::enter(kind) {
            let mut message = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                message.push_str(&format!(": {s}"));
                source = s.source();
            }
            // Not eprintln!, which panics when standard error is closed.
            let _ = std::io::Write::write_all(
                &mut std::io::stderr(),
                format!("ferrovisor: {message}\n").as_bytes(),
            );
            std::process::exit(1);
        }
        f()
    };
    let launcher = match LAUNCHER.get() {
        Some(l) if policy::filtering() => l,
        _ => return builder.spawn(body),
    };
    let (reply_tx, reply) = sync_channel(1);
    let job: Job = Box::new(move || {
        let _ = reply_tx.send(builder.spawn(body));
    });
    launcher
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| io::Error::other("the thread launcher has ended"))?;
    reply
        .recv()
        .map_err(|_| io::Error::other("the thread launcher has ended"))?
}
