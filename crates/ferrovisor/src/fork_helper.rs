//! The fork helper of `PUT /ferrovisor/fork`: a small process that
//! `ferrovisor --enable-fork` starts before any syscall filter is on, and
//! that starts the clones when the API asks.
//!
//! Why a process: a process started by a filtered thread inherits its
//! seccomp filter, and the API thread's filter allows neither clone nor
//! execve, so the clones cannot be started from the VMM process itself.
//! The helper is `ferrovisor fork-helper` (hidden), exec'ed with pipes on
//! its standard input and output: the VMM writes one JSON request line
//! ([`HelperRequest`]: each clone's API socket, `/snapshot/load` body and
//! MMDS data), the helper answers one JSON line ([`HelperReply`]). It
//! forks every clone's process from itself (no exec: the clones share the
//! helper's relocated binary, heap and the CPU's decoder tables, built
//! first), each of which then runs as `ferrovisor --api-sock SOCK`
//! (Firecracker's interface; the snapshot's accelerator; filters unless
//! the parent has none); then, a thread per clone, it loads the snapshot
//! through that socket (paused), puts the MMDS data and resumes it; it
//! reaps the clones that ended before each request, and removes the
//! snapshot's files once they are loaded (the clones keep their private
//! mappings of the memory). The helper is single-threaded whenever it
//! forks (the loading threads end with their request).
//! A clone that fails stops the others started for the same request. The
//! helper ends when the VMM closes the pipe; the
//! clones run on. See docs/SECURITY.md for the trade-off.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use jailer::process::Forked;

use api::fork::{CloneLoad, ForkedClone};
pub use api::fork::{HelperReply, HelperRequest};

/// How long a clone may take to open its API socket.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// The VMM's end of the helper.
pub struct ForkHelper {
    child: Child,
    to: ChildStdin,
    from: BufReader<ChildStdout>,
}

impl ForkHelper {
    /// Starts the helper (before any filter is installed); with
    /// `no_seccomp` its clones run without syscall filters.
    pub fn start(no_seccomp: bool) -> Result<ForkHelper, String> {
        let exe = std::env::current_exe().map_err(|e| format!("cannot find ferrovisor: {e}"))?;
        let mut child = Command::new(exe);
        child.arg("fork-helper");
        if no_seccomp {
            child.arg("--no-seccomp");
        }
        let mut child = child
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start the fork helper: {e}"))?;
        let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err("the fork helper has no pipes".into());
        };
        Ok(ForkHelper {
            child,
            to,
            from: BufReader::new(from),
        })
    }

    /// Has the clones of `request` started; their pids and sockets.
    pub fn fork(&mut self, request: &HelperRequest) -> Result<Vec<ForkedClone>, String> {
        let gone = |e: std::io::Error| format!("the fork helper is gone: {e}");
        let line = serde_json::to_string(request).map_err(|e| e.to_string())?;
        self.to.write_all(line.as_bytes()).map_err(gone)?;
        self.to.write_all(b"\n").map_err(gone)?;
        self.to.flush().map_err(gone)?;
        let mut answer = String::new();
        if self.from.read_line(&mut answer).map_err(gone)? == 0 {
            let status = self.child.try_wait().ok().flatten();
            return Err(format!("the fork helper ended ({status:?})"));
        }
        match serde_json::from_str(&answer) {
            Ok(HelperReply::Started(clones)) => Ok(clones),
            Ok(HelperReply::Failed(message)) => Err(message),
            Err(e) => Err(format!("the fork helper's answer is garbled: {e}")),
        }
    }
}

/// `ferrovisor fork-helper`: the helper's exit status, or a clone's.
pub(crate) fn run(no_seccomp: bool) -> ExitCode {
    match serve(no_seccomp) {
        Role::Helper => ExitCode::SUCCESS,
        Role::Clone(args) => crate::signals::exit_code(crate::firecracker::main(&args)),
    }
}

/// What `ferrovisor fork-helper` ends as.
enum Role {
    /// The helper, its input ended.
    Helper,
    /// A clone forked from it: run Firecracker's interface with these
    /// arguments.
    Clone(Vec<String>),
}

/// `ferrovisor fork-helper`: serves requests until its input ends.
fn serve(no_seccomp: bool) -> Role {
    vmm::warm_up_for_clones();
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        jailer::process::reap_ended();
        let reply = match serde_json::from_str::<HelperRequest>(&line) {
            Ok(request) => {
                let reply = match start_all(&request, no_seccomp) {
                    Started::Reply(reply) => reply,
                    Started::Clone(args) => return Role::Clone(args),
                };
                for path in request.remove.iter().filter(|p| is_fork_file(p)) {
                    let _ = std::fs::remove_file(path);
                }
                reply
            }
            Err(e) => HelperReply::Failed(format!("fork helper: bad request: {e}")),
        };
        let text = serde_json::to_string(&reply).unwrap_or_default();
        if writeln!(out, "{text}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    Role::Helper
}

/// Only the fork's own files are removed: `ferrovisor-fork-*.state|.mem`.
fn is_fork_file(path: &str) -> bool {
    let name = Path::new(path)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    name.starts_with("ferrovisor-fork-") && (name.ends_with(".state") || name.ends_with(".mem"))
}

/// How [`start_all`] returns: in the helper, or in a clone just forked.
enum Started {
    Reply(HelperReply),
    Clone(Vec<String>),
}

/// Forks every clone's process, then loads them all at once (a thread
/// each); any failure stops them all.
fn start_all(request: &HelperRequest, no_seccomp: bool) -> Started {
    let mut children: Vec<libc::pid_t> = Vec::new();
    let mut failure = None;
    for load in &request.loads {
        match spawn(load, no_seccomp) {
            Ok(Spawned::Parent(pid)) => children.push(pid),
            Ok(Spawned::Clone(args)) => return Started::Clone(args),
            Err(message) => {
                failure = Some(format!("clone {}: {message}", load.n));
                break;
            }
        }
    }
    if failure.is_none() {
        failure = std::thread::scope(|scope| {
            let loading: Vec<_> = children
                .iter()
                .zip(&request.loads)
                .map(|(&pid, load)| {
                    scope.spawn(move || {
                        load_into(pid, load).map_err(|e| format!("clone {}: {e}", load.n))
                    })
                })
                .collect();
            // The first failure in the clones' order.
            loading
                .into_iter()
                .filter_map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err("a loader panicked".into()))
                        .err()
                })
                .next()
        });
    }
    if let Some(message) = failure {
        for &pid in &children {
            let _ = jailer::process::signal(pid, libc::SIGKILL);
            let _ = jailer::process::wait(pid);
        }
        return Started::Reply(HelperReply::Failed(message));
    }
    let clones = children
        .iter()
        .zip(&request.loads)
        .map(|(&pid, load)| ForkedClone {
            n: load.n,
            pid: pid as u32,
            api_sock: load.api_sock.clone(),
        })
        .collect();
    Started::Reply(HelperReply::Started(clones))
}

enum Spawned {
    Parent(libc::pid_t),
    /// This is the clone: Firecracker's arguments.
    Clone(Vec<String>),
}

/// Forks clone `load.n`'s process: Firecracker's interface on its socket.
fn spawn(load: &CloneLoad, no_seccomp: bool) -> Result<Spawned, String> {
    let sock = Path::new(&load.api_sock);
    if sock.exists() {
        return Err(format!("{} exists", sock.display()));
    }
    let mut args = vec![
        "--api-sock".to_string(),
        load.api_sock.clone(),
        "--id".into(),
        format!("fork-clone-{}", load.n),
    ];
    if no_seccomp {
        args.push("--no-seccomp".into());
    }
    match jailer::process::fork_quiet() {
        Ok(Forked::Parent { pid, .. }) => Ok(Spawned::Parent(pid)),
        Ok(Forked::Child) => Ok(Spawned::Clone(args)),
        Err(e) => Err(format!("cannot start it: {e}")),
    }
}

/// Loads the snapshot into the new process, puts its MMDS data, resumes it.
fn load_into(pid: libc::pid_t, load: &CloneLoad) -> Result<(), String> {
    let sock = Path::new(&load.api_sock);
    let started = Instant::now();
    let mut client = loop {
        if let Ok(c) = api::client::Client::connect(sock) {
            break c;
        }
        if let Ok(Some(status)) = jailer::process::try_wait(pid) {
            return Err(format!("it ended before it served its API ({status})"));
        }
        if started.elapsed() > SOCKET_TIMEOUT {
            return Err(format!("no API socket at {} after 10 s", sock.display()));
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut put = |method: &str, path: &str, body: String| -> Result<(), String> {
        let r = client
            .request(method, path, Some(&body))
            .map_err(|e| format!("{method} {path}: {e}"))?;
        if r.status / 100 == 2 {
            return Ok(());
        }
        Err(r
            .fault_message()
            .unwrap_or_else(|| format!("{method} {path}: status {}", r.status)))
    };
    let body = serde_json::to_string(&load.load).map_err(|e| e.to_string())?;
    put("PUT", "/snapshot/load", body)?;
    if let Some(data) = &load.mmds {
        put("PUT", "/mmds", data.to_string())?;
    }
    put("PATCH", "/vm", r#"{"state": "Resumed"}"#.into())
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_the_forks_files_are_removed() {
        assert!(super::is_fork_file("/dev/shm/ferrovisor-fork-12-0.mem"));
        assert!(super::is_fork_file("/dev/shm/ferrovisor-fork-12-0.state"));
        assert!(!super::is_fork_file("/etc/passwd"));
        assert!(!super::is_fork_file("/dev/shm/ferrovisor-fork-12-0.mem/x"));
        assert!(!super::is_fork_file("/dev/shm/ferrovisor-fork-1.sock"));
    }
}
