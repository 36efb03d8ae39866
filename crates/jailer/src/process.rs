//! Child processes without exec, for `ferrovisor fork`: a clone forked
//! from the single-threaded parent shares its relocated binary, libraries
//! and heap copy-on-write, so that what each clone owns alone is what it
//! writes after the fork.

use std::io::{self, PipeReader};
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use crate::sys;

/// Who we are after [`fork_with_output`].
pub enum Forked {
    /// The caller: the child's pid and the read end of its standard
    /// output.
    Parent {
        pid: libc::pid_t,
        output: PipeReader,
    },
    /// The new process: its standard output is the pipe, its standard
    /// input /dev/null.
    Child,
}

/// The number of threads of this process.
fn threads() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// fork(2) with the child's standard output on a new pipe. Refused unless
/// the caller has a single thread: only then is the child's copy of every
/// lock and allocator consistent.
pub fn fork_with_output() -> io::Result<Forked> {
    let n = threads()?;
    if n != 1 {
        return Err(io::Error::other(format!(
            "cannot fork a process of {n} threads"
        )));
    }
    let (output, input) = io::pipe()?;
    let null = std::fs::File::open("/dev/null")?;
    match sys::fork()? {
        sys::Forked::Parent { child } => Ok(Forked::Parent { pid: child, output }),
        sys::Forked::Child => {
            sys::dup2(input.as_raw_fd(), libc::STDOUT_FILENO)?;
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
    sys::waitpid(pid).map(ExitStatus::from_raw)
}
