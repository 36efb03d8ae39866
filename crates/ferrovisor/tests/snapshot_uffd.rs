//! Lazy restore through userfaultfd (Firecracker's Uffd memory backend):
//! a tiny guest snapshotted part-way, restored with its memory served by
//! the example page-fault handler (`uffd-handler`), goes on where it was,
//! through the API and `ferrovisor restore --uffd`, on emu and kvm; a
//! slow handler is waited for; a handler that dies ends the VM with a
//! clear error instead of a hang. The syscall filters are on throughout.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::firecracker::{collect, serial, take_output, temp_dir, wait_child, Instance};
use common::ticker::{configure, wait_output, DONE_STATUS, PAUSE, RESUME, START, TEXT};

/// A paused ticker part-way through its text, saved in `files/NAME.state`
/// + `files/NAME.mem`; the first process is killed.
fn snapshot_midway(files: &Path, accel: &str, name: &str, out: &Path) -> (PathBuf, PathBuf) {
    let vm = Instance::start(&format!("{name}-a"), &["--accel", accel]);
    configure(&vm, files, accel, out, false);
    vm.ok("PUT", "/actions", START);
    wait_output(out, 5);
    vm.ok("PATCH", "/vm", PAUSE);
    let state = files.join(format!("{name}.state"));
    let mem = files.join(format!("{name}.mem"));
    vm.ok(
        "PUT",
        "/snapshot/create",
        &format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "{}"}}"#,
            state.display(),
            mem.display()
        ),
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        serial(out).len() < TEXT.len(),
        "the guest finished before the pause"
    );
    drop(vm);
    (state, mem)
}

/// A running `uffd-handler`; killed when dropped.
struct Handler {
    child: Child,
    socket: PathBuf,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<Vec<u8>>,
}

struct HandlerEnd {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Handler {
    /// Starts the handler on `socket` for `mem` with `extra` options and
    /// waits until it listens.
    fn start(socket: &Path, mem: &Path, extra: &[&str]) -> Handler {
        let mut child = Command::new(env!("CARGO_BIN_EXE_uffd-handler"))
            .arg("--socket")
            .arg(socket)
            .arg("--mem")
            .arg(mem)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start uffd-handler");
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "the handler never listened");
            std::thread::sleep(Duration::from_millis(5));
        }
        Handler {
            child,
            socket: socket.to_path_buf(),
            stdout,
            stderr,
        }
    }

    /// Waits for the handler to end by itself.
    fn wait(mut self, timeout: Duration) -> HandlerEnd {
        HandlerEnd {
            status: wait_child(&mut self.child, timeout),
            stdout: take_output(&self.stdout),
            stderr: take_output(&self.stderr),
        }
    }
}

impl Drop for Handler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HandlerEnd {
    /// The faults the handler says it served.
    fn faults(&self) -> u64 {
        self.stdout
            .split("served ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count in {:?} / {:?}", self.stdout, self.stderr))
    }
}

fn uffd_load_body(state: &Path, socket: &Path, resume: bool) -> String {
    format!(
        r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "Uffd", "backend_path": "{}"}}, "resume_vm": {resume}}}"#,
        state.display(),
        socket.display()
    )
}

fn restore_cli(state: &Path, socket: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrovisor"));
    c.arg("restore")
        .arg("--snapshot")
        .arg(state)
        .arg("--uffd")
        .arg(socket)
        .stdin(Stdio::null());
    c
}

#[test]
fn a_tiny_guest_restored_through_the_handler_goes_on() {
    for accel in common::accels() {
        let files = temp_dir(&format!("uffd-api-{accel}"));
        let out = files.join("serial.out");
        let (state, mem) = snapshot_midway(&files, accel, &format!("uffd-{accel}"), &out);
        let before = serial(&out);
        let socket = files.join("uffd.sock");
        let handler = Handler::start(&socket, &mem, &[]);

        let vm = Instance::start(&format!("uffd-{accel}-b"), &["--accel", accel]);
        let started = Instant::now();
        vm.ok(
            "PUT",
            "/snapshot/load",
            &uffd_load_body(&state, &handler.socket, false),
        );
        let load_time = started.elapsed();
        assert_eq!(vm.get("/")["state"], "Paused");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(serial(&out), before, "a VM loaded paused does not run");
        // A snapshot of the loaded VM reads all its memory: the handler
        // serves every page not touched yet, and the memory is the
        // snapshot's, byte for byte.
        let again = files.join("again.mem");
        vm.ok(
            "PUT",
            "/snapshot/create",
            &format!(
                r#"{{"snapshot_path": "{}", "mem_file_path": "{}"}}"#,
                files.join("again.state").display(),
                again.display()
            ),
        );
        assert!(
            std::fs::read(&again).unwrap() == std::fs::read(&mem).unwrap(),
            "{accel}: the memory served is not the snapshot's"
        );
        vm.ok("PATCH", "/vm", RESUME);
        let ended = vm.wait(Duration::from_secs(120));
        assert_eq!(ended.status, Some(DONE_STATUS), "stderr:\n{}", ended.stderr);
        assert_eq!(
            serial(&out),
            TEXT,
            "{accel}: the two processes' output together is one uninterrupted run's"
        );
        // The VMM's end closed the connection: the handler ends by itself.
        let served = handler.wait(Duration::from_secs(10));
        assert_eq!(served.status, Some(0), "{}", served.stderr);
        let faults = served.faults();
        assert!(
            faults >= (32 << 20) / 4096,
            "{accel}: every page of the 32 MiB guest came from the handler: {faults} faults"
        );
        eprintln!("{accel}: Uffd load took {load_time:?} (API round trip), {faults} faults served");
        let _ = std::fs::remove_dir_all(&files);
    }
}

/// `ferrovisor restore --uffd` with a handler that sleeps 100 ms before
/// each fault: the VM waits, and runs to its end.
#[test]
fn a_slow_handler_is_waited_for() {
    let files = temp_dir("uffd-slow");
    let out = files.join("serial.out");
    let (state, mem) = snapshot_midway(&files, "emu", "slow", &out);
    let socket = files.join("uffd.sock");
    let handler = Handler::start(&socket, &mem, &["--delay-ms", "100"]);
    let started = Instant::now();
    let run = restore_cli(&state, &socket).output().unwrap();
    let took = started.elapsed();
    assert_eq!(
        run.status.code(),
        Some(DONE_STATUS),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(serial(&out), TEXT);
    let served = handler.wait(Duration::from_secs(10));
    assert_eq!(served.status, Some(0), "{}", served.stderr);
    let faults = served.faults();
    assert!(faults > 0);
    assert!(
        took >= Duration::from_millis(100 * faults),
        "{faults} faults at 100 ms each, and the run took {took:?}"
    );
    eprintln!("slow handler: {faults} faults, the run took {took:?}");
    let _ = std::fs::remove_dir_all(&files);
}

/// A handler that exits after two faults (as if it crashed, with faults
/// still to serve): `ferrovisor restore --uffd` ends with status 1 and a
/// line naming the handler, not a hang; on emu and kvm. And through the
/// API: a handler killed while the loaded VM waits paused ends it too.
#[test]
fn a_handler_that_dies_ends_the_vm() {
    for accel in common::accels() {
        let files = temp_dir(&format!("uffd-dies-{accel}"));
        let out = files.join("serial.out");
        let (state, mem) = snapshot_midway(&files, accel, &format!("dies-{accel}"), &out);
        let before = serial(&out);
        let socket = files.join("uffd.sock");
        let handler = Handler::start(&socket, &mem, &["--exit-after", "2"]);
        let mut child = restore_cli(&state, &socket)
            .arg("--accel")
            .arg(accel)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = collect(child.stderr.take().unwrap());
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{accel}: the VM hung after its page-fault handler died");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stderr = String::from_utf8_lossy(&stderr.recv().unwrap()).into_owned();
        assert_eq!(status, Some(1), "{accel}: {stderr}");
        assert!(
            stderr.contains("the page-fault handler on")
                && stderr.contains("closed its connection"),
            "{accel}: {stderr}"
        );
        assert!(!stderr.contains("seccomp:"), "{stderr}");
        let printed = serial(&out);
        assert!(printed.len() < TEXT.len(), "{accel}: {printed:?}");
        assert!(printed.starts_with(&before));
        let died = handler.wait(Duration::from_secs(10));
        assert_eq!(died.status, Some(3), "{}", died.stderr);

        // Through the API, paused after the load: the handler is killed.
        let handler = Handler::start(&socket, &mem, &[]);
        let vm = Instance::start(&format!("dies-{accel}-api"), &["--accel", accel]);
        vm.ok(
            "PUT",
            "/snapshot/load",
            &uffd_load_body(&state, &socket, false),
        );
        assert_eq!(vm.get("/")["state"], "Paused");
        drop(handler);
        let ended = vm.wait(Duration::from_secs(30));
        assert_eq!(ended.status, Some(1), "{accel}: {}", ended.stderr);
        assert!(
            ended.stderr.contains("closed its connection"),
            "{accel}: {}",
            ended.stderr
        );
        let _ = std::fs::remove_dir_all(&files);
    }
}

#[test]
fn restore_takes_exactly_one_memory_source() {
    let files = temp_dir("uffd-flags");
    let state = files.join("s");
    for args in [
        vec!["restore", "--snapshot", state.to_str().unwrap()],
        vec![
            "restore",
            "--snapshot",
            state.to_str().unwrap(),
            "--mem",
            "m",
            "--uffd",
            "u",
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let _ = std::fs::remove_dir_all(&files);
}
