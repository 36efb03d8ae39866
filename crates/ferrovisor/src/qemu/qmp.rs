//! QMP, QEMU's machine protocol, on a Unix socket (`-qmp
//! unix:PATH,server=on,wait=off`): one client at a time, JSON objects in
//! both directions (the client's may follow each other without
//! separators). The greeting, then capabilities negotiation
//! (`qmp_capabilities`), then commands: query-status, query-version,
//! query-cpus-fast, query-commands, stop, cont, system_powerdown,
//! system_reset, quit; and the events STOP, RESUME, POWERDOWN and
//! SHUTDOWN.
//!
//! The VM's lifecycle is [`super::lifecycle`]'s: this side asks it to
//! start (-S then `cont`) and to end, and acts on a running machine
//! through its [`MachineHandle`] (Pause, Resume, Ctrl-Alt-Del, Stop).

use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use vmm::{Command, MachineHandle};

use super::help::QEMU_VERSION;

/// How long an answer or event may wait for the client to read.
const WRITE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the VM is, as query-status reports it.
#[derive(Debug, Clone)]
pub enum Phase {
    /// -S: built, not started.
    Prelaunch,
    Running(MachineHandle),
    Paused(MachineHandle),
    /// Ended, the process kept for QMP (-no-shutdown).
    Shutdown,
    /// Ending.
    Ended,
}

/// What the lifecycle is asked to do.
pub enum Request {
    /// Start the machine (after -S); answered when it runs.
    Start(Sender<Result<(), String>>),
    /// End the process.
    Quit,
}

/// Why the host ended the VM, for the SHUTDOWN event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostReason {
    Quit,
    SystemReset,
}

/// The state both sides share.
pub struct Shared {
    phase: Mutex<Phase>,
    /// The client that negotiated capabilities: events go to it.
    client: Mutex<Option<UnixStream>>,
    requests: Mutex<Sender<Request>>,
    host_reason: Mutex<Option<HostReason>>,
    vcpus: u32,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn timestamp() -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    json!({"seconds": now.as_secs(), "microseconds": now.subsec_micros()})
}

/// `message` with the command's `id`, when it had one.
fn with_id(mut message: Value, id: Option<&Value>) -> Value {
    if let Some(id) = id {
        message["id"] = id.clone();
    }
    message
}

fn error(class: &str, desc: impl Into<String>) -> Value {
    json!({"error": {"class": class, "desc": desc.into()}})
}

/// The commands, as query-commands lists them.
const COMMANDS: &[&str] = &[
    "qmp_capabilities",
    "query-status",
    "query-version",
    "query-cpus-fast",
    "query-commands",
    "stop",
    "cont",
    "system_powerdown",
    "system_reset",
    "quit",
];

impl Shared {
    pub fn new(phase: Phase, requests: Sender<Request>, vcpus: u32) -> Arc<Shared> {
        Arc::new(Shared {
            phase: Mutex::new(phase),
            client: Mutex::new(None),
            requests: Mutex::new(requests),
            host_reason: Mutex::new(None),
            vcpus,
        })
    }

    pub fn set_phase(&self, phase: Phase) {
        *lock(&self.phase) = phase;
    }

    pub fn host_reason(&self) -> Option<HostReason> {
        *lock(&self.host_reason)
    }

    /// Sends `event` to the negotiated client, if any.
    pub fn event(&self, event: &str, data: Option<Value>) {
        let mut message = json!({"event": event, "timestamp": timestamp()});
        if let Some(data) = data {
            message["data"] = data;
        }
        self.send(&message);
    }

    fn send(&self, message: &Value) {
        let mut client = lock(&self.client);
        if let Some(stream) = client.as_mut() {
            let line = format!("{message}\r\n");
            if stream.write_all(line.as_bytes()).is_err() {
                *client = None;
            }
        }
    }

    fn request(&self, r: Request) -> bool {
        lock(&self.requests).send(r).is_ok()
    }

    fn status(&self) -> Value {
        let (status, running) = match &*lock(&self.phase) {
            Phase::Prelaunch => ("prelaunch", false),
            Phase::Running(_) => ("running", true),
            Phase::Paused(_) => ("paused", false),
            Phase::Shutdown | Phase::Ended => ("shutdown", false),
        };
        json!({"status": status, "running": running})
    }

    /// The vCPU threads' ids (Ferrovisor names them vcpuN), the process's
    /// before they start.
    fn cpus(&self) -> Value {
        let mut tids = vec![std::process::id() as u64; self.vcpus as usize];
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
                let index = comm
                    .trim()
                    .strip_prefix("vcpu")
                    .and_then(|n| n.parse::<usize>().ok());
                let tid = task
                    .file_name()
                    .to_str()
                    .and_then(|t| t.parse::<u64>().ok());
                if let (Some(i), Some(tid)) = (index, tid) {
                    if i < tids.len() {
                        tids[i] = tid;
                    }
                }
            }
        }
        Value::Array(
            tids.iter()
                .enumerate()
                .map(|(i, tid)| {
                    json!({
                        "cpu-index": i,
                        "qom-path": format!("/machine/unattached/device[{i}]"),
                        "thread-id": tid,
                        "props": {"socket-id": i, "core-id": 0, "thread-id": 0},
                        "target": "x86_64",
                    })
                })
                .collect(),
        )
    }

    /// Runs one command; the answer's `return` or `error`.
    fn execute(&self, name: &str, args: &Value, id: Option<&Value>) -> Value {
        if !args.is_null() && args.as_object().is_some_and(|a| !a.is_empty()) {
            return error(
                "GenericError",
                format!(
                    "Parameter '{}' is unexpected",
                    args.as_object()
                        .and_then(|a| a.keys().next())
                        .map_or("", |k| k.as_str())
                ),
            );
        }
        let phase = lock(&self.phase).clone();
        match name {
            "query-status" => json!({"return": self.status()}),
            "query-version" => {
                let v: Vec<u64> = QEMU_VERSION
                    .split('.')
                    .filter_map(|n| n.parse().ok())
                    .collect();
                json!({"return": {
                    "qemu": {"major": v[0], "minor": v[1], "micro": v[2]},
                    "package": format!(" (Ferrovisor {})", env!("CARGO_PKG_VERSION")),
                }})
            }
            "query-cpus-fast" => json!({"return": self.cpus()}),
            "query-commands" => {
                json!({"return": COMMANDS.iter().map(|c| json!({"name": c})).collect::<Vec<_>>()})
            }
            "qmp_capabilities" => error(
                "CommandNotFound",
                "Capabilities negotiation is already complete, command ignored",
            ),
            "stop" => match phase {
                Phase::Running(h) => match h.send(Command::Pause) {
                    Ok(()) => {
                        self.set_phase(Phase::Paused(h));
                        self.event("STOP", None);
                        json!({"return": {}})
                    }
                    Err(e) => error("GenericError", crate::error_line(&e)),
                },
                // QEMU: stopping a stopped VM does nothing.
                _ => json!({"return": {}}),
            },
            "cont" => match phase {
                Phase::Paused(h) => match h.send(Command::Resume) {
                    Ok(()) => {
                        self.set_phase(Phase::Running(h));
                        self.event("RESUME", None);
                        json!({"return": {}})
                    }
                    Err(e) => error("GenericError", crate::error_line(&e)),
                },
                Phase::Prelaunch => {
                    let (tx, rx) = channel();
                    if !self.request(Request::Start(tx)) {
                        return error("GenericError", "the VM is ending");
                    }
                    match rx.recv() {
                        Ok(Ok(())) => {
                            self.event("RESUME", None);
                            json!({"return": {}})
                        }
                        Ok(Err(e)) => error("GenericError", e),
                        Err(_) => error("GenericError", "the VM is ending"),
                    }
                }
                Phase::Running(_) => json!({"return": {}}),
                Phase::Shutdown | Phase::Ended => {
                    error("GenericError", "Resetting the Virtual Machine is required")
                }
            },
            "system_powerdown" => match phase {
                Phase::Running(h) | Phase::Paused(h) => match h.send(Command::SendCtrlAltDel) {
                    Ok(()) => {
                        self.event("POWERDOWN", None);
                        json!({"return": {}})
                    }
                    Err(e) => error("GenericError", crate::error_line(&e)),
                },
                _ => error("GenericError", "the VM is not running"),
            },
            "system_reset" | "quit" => {
                let reason = if name == "quit" {
                    HostReason::Quit
                } else {
                    HostReason::SystemReset
                };
                *lock(&self.host_reason) = Some(reason);
                match phase {
                    // The answer first: the VM (and the process) end after.
                    Phase::Running(h) | Phase::Paused(h) => {
                        self.send(&with_id(json!({"return": {}}), id));
                        self.set_phase(Phase::Ended);
                        let _ = sandbox::spawn(
                            sandbox::ThreadKind::Api,
                            std::thread::Builder::new().name("qmp-stop".into()),
                            move || {
                                let _ = h.send(Command::Stop);
                            },
                        );
                        Value::Null
                    }
                    Phase::Prelaunch | Phase::Shutdown if name == "quit" => {
                        self.send(&with_id(json!({"return": {}}), id));
                        self.request(Request::Quit);
                        Value::Null
                    }
                    _ => error("GenericError", "the VM is not running"),
                }
            }
            other => error(
                "CommandNotFound",
                format!("The command {other} has not been found"),
            ),
        }
    }
}

/// The listening socket; removed when dropped.
pub struct Server {
    path: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Listens on `path` (a stale socket there is replaced, as QEMU does)
/// and serves clients on a thread of its own.
pub fn serve(path: &Path, shared: Arc<Shared>) -> std::io::Result<Server> {
    use std::os::unix::fs::FileTypeExt;
    if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket()) {
        std::fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    sandbox::spawn(
        sandbox::ThreadKind::Api,
        std::thread::Builder::new().name("qmp".into()),
        move || {
            let mut logged: Option<std::time::Instant> = None;
            for stream in listener.incoming() {
                match stream {
                    Ok(stream) => session(stream, &shared),
                    Err(e) => {
                        // At most a line a second.
                        if logged.is_none_or(|t| t.elapsed().as_secs() >= 1) {
                            tracing::warn!("QMP: accept failed: {e}");
                            logged = Some(std::time::Instant::now());
                        }
                        // A lasting failure (out of descriptors) must not
                        // spin the thread.
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            }
        },
    )?;
    Ok(Server {
        path: path.to_path_buf(),
    })
}

/// One client, until it disconnects.
fn session(stream: UnixStream, shared: &Shared) {
    // A client that stops reading must not hold up the VM's end: a stuck
    // write drops it.
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let v: Vec<u64> = QEMU_VERSION
        .split('.')
        .filter_map(|n| n.parse().ok())
        .collect();
    let greeting = json!({"QMP": {
        "version": {"qemu": {"major": v[0], "minor": v[1], "micro": v[2]},
                    "package": format!(" (Ferrovisor {})", env!("CARGO_PKG_VERSION"))},
        "capabilities": [],
    }});
    if writer
        .write_all(format!("{greeting}\r\n").as_bytes())
        .is_err()
    {
        return;
    }
    let mut negotiated = false;
    let reply = |writer: &mut UnixStream, negotiated: bool, message: Value| {
        if negotiated {
            shared.send(&message);
        } else {
            let _ = writer.write_all(format!("{message}\r\n").as_bytes());
        }
    };
    let inputs = serde_json::Deserializer::from_reader(&stream).into_iter::<Value>();
    for input in inputs {
        let input = match input {
            Ok(v) => v,
            Err(e) if e.is_eof() || e.is_io() => break,
            Err(e) => {
                reply(
                    &mut writer,
                    negotiated,
                    error("GenericError", format!("JSON parse error, {e}")),
                );
                break;
            }
        };
        let Some(object) = input.as_object() else {
            reply(
                &mut writer,
                negotiated,
                error("GenericError", "QMP input must be a JSON object"),
            );
            continue;
        };
        let id = object.get("id").cloned();
        let answer = match object.get("execute").and_then(Value::as_str) {
            None => error("GenericError", "QMP input lacks member 'execute'"),
            Some("qmp_capabilities") if !negotiated => {
                let enable = object.get("arguments").and_then(|a| a.get("enable"));
                if enable.is_some_and(|e| e.as_array().is_some_and(|a| !a.is_empty())) {
                    error("GenericError", "Capability 'oob' not available")
                } else {
                    negotiated = true;
                    if let Ok(events) = stream.try_clone() {
                        *lock(&shared.client) = Some(events);
                    }
                    json!({"return": {}})
                }
            }
            Some(_) if !negotiated => error(
                "CommandNotFound",
                "Expecting capabilities negotiation with 'qmp_capabilities'",
            ),
            Some(name) => shared.execute(
                name,
                object.get("arguments").unwrap_or(&Value::Null),
                id.as_ref(),
            ),
        };
        // Null: the command answered itself.
        if answer.is_null() {
            continue;
        }
        reply(&mut writer, negotiated, with_id(answer, id.as_ref()));
    }
    if negotiated {
        *lock(&shared.client) = None;
    }
}
