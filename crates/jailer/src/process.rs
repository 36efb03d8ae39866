//! Child processes without exec, for `ferrovisor fork`: a clone forked
//! from the single-threaded parent shares its relocated binary, libraries
//! and heap copy-on-write, so that what each clone owns alone is what it
//! writes after the fork.

use std::io::{self, PipeReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::sys;

/// Who we are after [`fork_with_output`] or [`fork_quiet`].
pub enum Forked<O> {
    /// The caller: the child's pid (and the read end of its standard
    /// output, for [`fork_with_output`]).
    Parent { pid: libc::pid_t, output: O },
    /// The new process: its standard input is /dev/null.
    Child,
}

/// The number of threads of this process.
fn threads() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// fork(2) with the child's standard output on a new pipe. Refused unless
/// the caller has a single thread: only then is the child's copy of every
/// lock and allocator consistent.
pub fn fork_with_output() -> io::Result<Forked<PipeReader>> {
    let (output, input) = io::pipe()?;
    fork_onto(input.as_raw_fd(), output)
}

/// [`fork_with_output`] with the child's standard output on /dev/null.
pub fn fork_quiet() -> io::Result<Forked<()>> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    fork_onto(null.as_raw_fd(), ())
}

fn fork_onto<O>(stdout: std::os::fd::RawFd, output: O) -> io::Result<Forked<O>> {
    let n = threads()?;
    if n != 1 {
        return Err(io::Error::other(format!(
            "cannot fork a process of {n} threads"
        )));
    }
    let null = std::fs::File::open("/dev/null")?;
    match sys::fork()? {
        sys::Forked::Parent { child } => Ok(Forked::Parent { pid: child, output }),
        sys::Forked::Child => {
            sys::dup2(stdout, libc::STDOUT_FILENO)?;
            sys::dup2(null.as_raw_fd(), libc::STDIN_FILENO)?;
            Ok(Forked::Child)
        }
    }
}

/// Sends `signal` to process `pid`.
pub fn signal(pid: libc::pid_t, signal: libc::c_int) -> io::Result<()> {
    sys::kill(pid, signal)
}

/// Waits for child `pid` to end.
pub fn wait(pid: libc::pid_t) -> io::Result<ExitStatus> {
    sys::waitpid(pid, false).map(|(_, status)| ExitStatus::from_raw(status))
}

/// Child `pid`'s status if it ended (reaped), None while it runs.
pub fn try_wait(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let (ended, status) = sys::waitpid(pid, true)?;
    Ok((ended != 0).then(|| ExitStatus::from_raw(status)))
}

/// Reaps every child that ended (none of them is waited for).
pub fn reap_ended() {
    while let Ok((pid, _)) = sys::waitpid(-1, true) {
        if pid <= 0 {
            break;
        }
    }
}
