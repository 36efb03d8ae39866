//! SIGTERM, SIGINT and SIGHUP stop a running VM cleanly through its
//! controller, on both front ends: the API socket and the vsock socket
//! are removed, the last metrics line is written, and the process exits
//! with the documented status (docs/API.md, "Process interface": 143,
//! 130 and 156). A triple fault exits 1, as on Firecracker; the tiny echo
//! guest on emu is enough.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::firecracker::{elf, spawn, temp_dir, Instance};

/// Waits until `path` exists.
fn wait_exists(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Configures the echo guest on emu with a vsock device and a metrics
/// file through the API, optionally starts it, sends `sig` and checks
/// the end.
fn api_instance_ends_cleanly_on(name: &str, sig: libc::c_int, started: bool, status: i32) {
    let vm = Instance::start(name, &["--accel", "emu"]);
    let kernel = elf(&vm.dir, "echo.elf", &guests::echo().unwrap());
    // Outside the instance's directory, which it removes when it ends.
    let files = temp_dir(&format!("{name}-files"));
    let vsock = files.join("v.sock");
    let metrics = files.join("metrics.json");
    let bodies = [
        (
            "/boot-source",
            format!(r#"{{"kernel_image_path": "{}"}}"#, kernel.display()),
        ),
        (
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 32}"#.to_string(),
        ),
        (
            "/vsock",
            format!(r#"{{"guest_cid": 3, "uds_path": "{}"}}"#, vsock.display()),
        ),
        (
            "/metrics",
            format!(r#"{{"metrics_path": "{}"}}"#, metrics.display()),
        ),
    ];
    for (path, body) in &bodies {
        vm.ok("PUT", path, body);
    }
    if started {
        vm.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
        assert_eq!(vm.get("/")["state"], "Running");
        wait_exists(&vsock);
    }
    assert!(vm.sock.exists());
    common::signal(&vm.child, sig);
    let sock = vm.sock.clone();
    let end = vm.wait(Duration::from_secs(60));
    assert_eq!(end.status, Some(status), "stderr: {}", end.stderr);
    assert!(!sock.exists(), "the API socket is left behind");
    assert!(!vsock.exists(), "the vsock socket is left behind");
    let text = std::fs::read_to_string(&metrics).unwrap();
    let last = text.lines().last().expect("no metrics line");
    let line: serde_json::Value = serde_json::from_str(last).unwrap();
    assert!(line["utc_timestamp_ms"].as_u64().unwrap() > 0, "{last}");
    assert!(
        end.stderr.contains("received; stopping the VM"),
        "stderr: {}",
        end.stderr
    );
    let _ = std::fs::remove_dir_all(&files);
}

#[test]
fn sigterm_stops_a_running_api_instance_with_143() {
    api_instance_ends_cleanly_on("sig-term", libc::SIGTERM, true, 143);
}

#[test]
fn sigint_stops_a_running_api_instance_with_130() {
    api_instance_ends_cleanly_on("sig-int", libc::SIGINT, true, 130);
}

#[test]
fn sighup_stops_a_running_api_instance_with_156() {
    api_instance_ends_cleanly_on("sig-hup", libc::SIGHUP, true, 156);
}

#[test]
fn sigterm_before_instance_start_removes_the_socket() {
    api_instance_ends_cleanly_on("sig-pre", libc::SIGTERM, false, 143);
}

/// `ferrovisor run` with the echo guest and a vsock socket: `sig` ends it
/// with `status` and removes the socket.
fn run_ends_cleanly_on(name: &str, sig: libc::c_int, status: i32) {
    let dir = temp_dir(name);
    let kernel = elf(&dir, "echo.elf", &guests::echo().unwrap());
    let vsock = dir.join("v.sock");
    let vsock_arg = format!("cid=3,socket={}", vsock.display());
    let (mut child, out, err) = spawn(&[
        "run",
        "--accel",
        "emu",
        "--boot",
        "bare",
        "--memory",
        "32M",
        "--kernel",
        kernel.to_str().unwrap(),
        "--vsock",
        &vsock_arg,
    ]);
    wait_exists(&vsock);
    common::signal(&child, sig);
    let deadline = Instant::now() + Duration::from_secs(60);
    let code = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
    let stdout = String::from_utf8_lossy(&out.recv().unwrap()).into_owned();
    assert_eq!(code, Some(status), "stderr: {stderr}\nstdout: {stdout}");
    assert!(!vsock.exists(), "the vsock socket is left behind");
    assert!(stderr.contains("received; stopping the VM"), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_stops_ferrovisor_run_with_143() {
    run_ends_cleanly_on("run-term", libc::SIGTERM, 143);
}

#[test]
fn sigint_stops_ferrovisor_run_with_130() {
    run_ends_cleanly_on("run-int", libc::SIGINT, 130);
}

#[test]
fn sighup_stops_ferrovisor_run_with_156() {
    run_ends_cleanly_on("run-hup", libc::SIGHUP, 156);
}

/// Job control (Ctrl-Z and `fg`, `kill -STOP` / `kill -CONT`) pauses the
/// whole process and goes on: a thread stopped inside a sleep or a timed
/// wait resumes through restart_syscall, which every thread's filter
/// must allow (it only restarts the call that was allowed). Before, the
/// timer thread was killed by its filter and the VM ended with 148.
#[test]
fn sigstop_and_sigcont_leave_the_vm_running() {
    for accel in common::accels() {
        let dir = temp_dir(&format!("stop-cont-{accel}"));
        let kernel = elf(&dir, "echo.elf", &guests::echo().unwrap());
        let vsock = dir.join("v.sock");
        let vsock_arg = format!("cid=3,socket={}", vsock.display());
        let (mut child, out, err) = spawn(&[
            "run",
            "--accel",
            accel,
            "--boot",
            "bare",
            "--memory",
            "32M",
            "--kernel",
            kernel.to_str().unwrap(),
            "--vsock",
            &vsock_arg,
        ]);
        wait_exists(&vsock);
        for _ in 0..3 {
            common::signal(&child, libc::SIGSTOP);
            std::thread::sleep(Duration::from_millis(200));
            common::signal(&child, libc::SIGCONT);
            std::thread::sleep(Duration::from_millis(300));
            if let Some(status) = child.try_wait().unwrap() {
                let stderr = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
                panic!("{accel}: the VM ended ({status}) after SIGSTOP/SIGCONT: {stderr}");
            }
        }
        common::signal(&child, libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
        drop(out.recv());
        assert_eq!(code, Some(143), "{accel}: stderr: {stderr}");
        assert!(!stderr.contains("forbidden syscall"), "{accel}: {stderr}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[test]
fn a_triple_fault_exits_4() {
    let dir = temp_dir("triple");
    let kernel = elf(
        &dir,
        "triple.elf",
        &guests::triple_fault("triple\n").unwrap(),
    );
    for accel in common::accels() {
        let (mut child, out, err) = spawn(&[
            "run",
            "--accel",
            accel,
            "--boot",
            "bare",
            "--memory",
            "32M",
            "--kernel",
            kernel.to_str().unwrap(),
        ]);
        let deadline = Instant::now() + Duration::from_secs(60);
        let code = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break s.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let stderr = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
        let stdout = String::from_utf8_lossy(&out.recv().unwrap()).into_owned();
        assert!(stdout.contains("triple"), "{accel}: stdout: {stdout}");
        assert!(stderr.contains("triple-faulted"), "{accel}: {stderr}");
        assert_eq!(code, Some(4), "{accel}: stderr: {stderr}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
