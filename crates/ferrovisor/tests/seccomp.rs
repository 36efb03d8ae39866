//! End to end: the syscall filters (docs/SECURITY.md). Every other
//! end-to-end test runs with the filters on (they are the default); here,
//! each thread kind makes a forbidden syscall through the test hook
//! (`FERROVISOR_SECCOMP_TEST_FAULT=<kind>`, read once at start) and the
//! process must die with status 148 and the line naming the kind; and a
//! Linux guest doing heavy I/O on every device stays up under the filters.

mod common;

use std::process::Child;
use std::time::{Duration, Instant};

use common::firecracker::{spawn_via, temp_dir};
use common::netns::Netns;

const FAULT_ENV: &str = "FERROVISOR_SECCOMP_TEST_FAULT";
const GETPPID: u32 = 110;

/// Waits for `child` (killed after `limit`); its status code.
fn wait(child: &mut Child, limit: Duration) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("ferrovisor did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs ferrovisor (`wrapper` first) with the test hook aimed at `kind`
/// and checks that it dies of it.
fn expect_fault(kind: &str, wrapper: &[&str], args: &[&str]) {
    let hook = format!("{FAULT_ENV}={kind}");
    let mut all: Vec<&str> = wrapper.to_vec();
    all.extend(["env", &hook]);
    let (mut child, _out, err) = spawn_via(&all, args);
    // Standard input stays open (the stdin thread, the echo guest).
    let stdin = child.stdin.take();
    let code = wait(&mut child, Duration::from_secs(240));
    drop(stdin);
    let err = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
    let line = format!("seccomp: thread {kind} made forbidden syscall {GETPPID}");
    assert_eq!(code, Some(148), "{kind}: stderr:\n{err}");
    assert!(err.contains(&line), "{kind}: no {line:?} in:\n{err}");
}

fn echo_kernel(dir: &std::path::Path) -> String {
    let kernel = common::firecracker::elf(dir, "echo.elf", &guests::echo().unwrap());
    kernel.to_str().unwrap().to_string()
}

/// The kinds a tiny guest has: `ferrovisor run` with the echo guest
/// (waiting for input on COM1).
#[test]
fn the_threads_of_a_tiny_guest_die_on_a_forbidden_syscall() {
    let dir = temp_dir("seccomp-tiny");
    let kernel = echo_kernel(&dir);
    for kind in ["launcher", "signals", "vcpu", "stdin", "console-out", "vmm"] {
        expect_fault(
            kind,
            &[],
            &[
                "run", "--accel", "emu", "--memory", "32M", "--kernel", &kernel,
            ],
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The Firecracker front end's own threads: the API server, and the
/// periodic metrics of a VM started from a configuration file.
#[test]
fn the_api_and_metrics_threads_die_on_a_forbidden_syscall() {
    let dir = temp_dir("seccomp-fc");
    let sock = dir.join("api.sock");
    expect_fault("api", &[], &["--api-sock", sock.to_str().unwrap()]);

    let kernel = echo_kernel(&dir);
    let config = dir.join("vm.json");
    let metrics = dir.join("metrics.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "boot-source": {"kernel_image_path": kernel, "boot_args": ""},
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 32},
        })
        .to_string(),
    )
    .unwrap();
    let fc_args = [
        "--config-file",
        config.to_str().unwrap(),
        "--no-api",
        "--accel",
        "emu",
        "--metrics-path",
        metrics.to_str().unwrap(),
    ];
    expect_fault("metrics", &[], &fc_args);
    // The main thread once the VM runs, on this front end too.
    expect_fault("vmm", &[], &fc_args);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 13: a fault is counted in the metrics file (Firecracker's
/// `seccomp.num_faults`) and its line reaches the log file, before the
/// process dies, whichever thread faulted; `run --log-file` logs it too.
#[test]
fn a_fault_reaches_the_metrics_and_log_files() {
    let dir = temp_dir("seccomp-report");
    let kernel = echo_kernel(&dir);
    let config = dir.join("vm.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "boot-source": {"kernel_image_path": kernel, "boot_args": ""},
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 32},
        })
        .to_string(),
    )
    .unwrap();
    let metrics = dir.join("metrics.json");
    let log = dir.join("fc.log");
    let line_of =
        |kind: &str| format!("seccomp: thread {kind} made forbidden syscall {GETPPID} (getppid)");
    for kind in ["vcpu", "metrics", "vmm"] {
        let _ = std::fs::remove_file(&metrics);
        let _ = std::fs::remove_file(&log);
        expect_fault(
            kind,
            &[],
            &[
                "--config-file",
                config.to_str().unwrap(),
                "--no-api",
                "--accel",
                "emu",
                "--metrics-path",
                metrics.to_str().unwrap(),
                "--log-path",
                log.to_str().unwrap(),
            ],
        );
        let written = std::fs::read_to_string(&metrics).unwrap();
        let last: serde_json::Value =
            serde_json::from_str(written.lines().last().expect("a metrics line")).unwrap();
        assert_eq!(last["seccomp"]["num_faults"], 1, "{kind}: {written}");
        assert!(last["utc_timestamp_ms"].as_u64().unwrap() > 0, "{written}");
        let logged = std::fs::read_to_string(&log).unwrap();
        assert!(logged.contains(&line_of(kind)), "{kind}: log:\n{logged}");
    }
    let run_log = dir.join("run.log");
    expect_fault(
        "vcpu",
        &[],
        &[
            "--log-file",
            run_log.to_str().unwrap(),
            "run",
            "--accel",
            "emu",
            "--memory",
            "32M",
            "--kernel",
            &kernel,
        ],
    );
    let logged = std::fs::read_to_string(&run_log).unwrap();
    assert!(logged.contains(&line_of("vcpu")), "log:\n{logged}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ferrovisor run` with the Linux test guest and `extra` devices.
fn linux_args<'a>(guest: &'a common::Guest, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--accel",
        "emu",
        "--memory",
        "256M",
        "--kernel",
        guest.kernel.to_str().unwrap(),
        "--initrd",
        guest.initrd.to_str().unwrap(),
        "--cmdline",
        "console=ttyS0 quiet panic=-1",
    ];
    args.extend_from_slice(extra);
    args
}

/// The device workers start when Linux's drivers set DRIVER_OK.
#[test]
fn the_device_workers_die_on_a_forbidden_syscall() {
    let Some(guest) = common::guest() else { return };
    let dir = temp_dir("seccomp-workers");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    let disk_arg = format!("path={}", disk.display());
    let vsock_arg = format!("cid=3,socket={}", dir.join("v.sock").display());
    let cases: [(&str, Vec<&str>); 5] = [
        ("virtio-blk", vec!["--disk", &disk_arg]),
        ("virtio-rng", vec!["--rng"]),
        ("virtio-vsock", vec!["--vsock", &vsock_arg]),
        ("virtio-console", vec!["--console", "virtio"]),
        ("platform-timer", vec![]),
    ];
    for (kind, extra) in cases {
        expect_fault(kind, &[], &linux_args(&guest, &extra));
        let _ = std::fs::remove_file(dir.join("v.sock"));
    }
    if let Some(ns) = Netns::new("seccomp", "t0", None) {
        expect_fault(
            "virtio-net",
            &ns.wrapper(),
            &linux_args(&guest, &["--net", "tap=t0"]),
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// (c) Under the default filters, a Linux guest on emu does heavy I/O on
/// every device: a disk write, flush and read back, pings over a TAP,
/// 256 KiB of /dev/hwrng, 4 MiB over vsock to a host socket, all through
/// the virtio console; the VM stays up to its power-off (exit 0).
#[test]
fn a_linux_guest_doing_io_on_every_device_stays_up() {
    use std::io::Read as _;
    let Some(guest) = common::guest() else { return };
    let Some(ns) = Netns::new("seccomp-io", "fvsctap0", Some("10.0.2.1/24")) else {
        return;
    };
    let dir = temp_dir("seccomp-io");
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 16 << 20]).unwrap();
    let socket = dir.join("v.sock");
    let listener = std::os::unix::net::UnixListener::bind(dir.join("v.sock_6000")).unwrap();
    let host = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        let mut all = Vec::new();
        stream.read_to_end(&mut all).unwrap();
        all.len()
    });
    let disk_arg = format!("path={}", disk.display());
    let vsock_arg = format!("cid=3,socket={}", socket.display());
    let script = "ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0; \
        ping -c 20 -i 0.1 10.0.2.1; \
        dd if=/dev/urandom of=/tmp/a bs=64k count=64 2>/dev/null; \
        dd if=/tmp/a of=/dev/vda bs=64k conv=fsync 2>/dev/null; \
        echo 3 > /proc/sys/vm/drop_caches; \
        a=$(md5sum < /tmp/a); b=$(dd if=/dev/vda bs=64k count=64 2>/dev/null | md5sum); \
        [ \"$a\" = \"$b\" ] && echo blk-read-back-ok; \
        dd if=/dev/hwrng of=/tmp/r bs=1k count=256 2>/dev/null && echo rng-bytes=$(wc -c < /tmp/r); \
        dd if=/dev/zero bs=64k count=64 2>/dev/null | vsock connect 2 6000; echo vsock-exit=$?";
    let boot = common::spawn_via(
        &ns.wrapper(),
        &guest,
        2,
        script,
        &[
            "--disk",
            &disk_arg,
            "--net",
            "tap=fvsctap0",
            "--rng",
            "--vsock",
            &vsock_arg,
        ],
    )
    .wait();
    assert_eq!(boot.status, Some(0), "stderr:\n{}", boot.stderr);
    assert!(!boot.stderr.contains("seccomp:"), "{}", boot.stderr);
    boot.expect(" 0% packet loss");
    boot.expect("blk-read-back-ok");
    boot.expect("rng-bytes=262144");
    boot.expect("vsock-exit=0");
    assert_eq!(host.join().unwrap(), 4 << 20);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--seccomp-filter FILE` takes the filters from a seccompiler JSON
/// file (here: everything allowed but getppid, which traps), and
/// `--no-seccomp` installs none: the test hook's syscall then passes and
/// the echo guest runs to its end (status 1, its debug-exit value).
#[test]
fn the_filter_flags_choose_the_filters() {
    use std::io::Write as _;
    let dir = temp_dir("seccomp-flags");
    let kernel = echo_kernel(&dir);
    let filters: serde_json::Map<String, serde_json::Value> = [
        "vmm",
        "api",
        "vcpu",
        "virtio-blk",
        "virtio-net",
        "virtio-vsock",
        "virtio-rng",
        "virtio-console",
        "stdin",
        "console-out",
        "platform-timer",
        "irqfd",
        "jit-compiler",
        "signals",
        "metrics",
        "launcher",
    ]
    .into_iter()
    .map(|kind| {
        (
            kind.to_string(),
            serde_json::json!({
                "default_action": "allow",
                "filter_action": "trap",
                "filter": [{"syscall": "getppid"}],
            }),
        )
    })
    .collect();
    let file = dir.join("filters.json");
    std::fs::write(&file, serde_json::Value::Object(filters).to_string()).unwrap();
    let run = [
        "run", "--accel", "emu", "--memory", "32M", "--kernel", &kernel,
    ];
    let mut with_file = run.to_vec();
    with_file.extend(["--seccomp-filter", file.to_str().unwrap()]);
    expect_fault("vcpu", &[], &with_file);
    // On the Firecracker front end too.
    let sock = dir.join("api.sock");
    expect_fault(
        "api",
        &[],
        &[
            "--api-sock",
            sock.to_str().unwrap(),
            "--seccomp-filter",
            file.to_str().unwrap(),
        ],
    );

    let mut off = run.to_vec();
    off.push("--no-seccomp");
    let hook = format!("{FAULT_ENV}=vcpu");
    let (mut child, out, err) = spawn_via(&["env", &hook], &off);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ok!q").unwrap();
    drop(stdin);
    let code = wait(&mut child, Duration::from_secs(60));
    let err = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
    assert_eq!(code, Some(1), "{err}");
    assert!(!err.contains("seccomp"), "{err}");
    let out = String::from_utf8_lossy(&out.recv().unwrap()).into_owned();
    assert_eq!(out, "echo ready\nok!");

    // Both flags at once are refused (Firecracker's status for a bad
    // argument on that front end).
    let (mut child, _, err) = spawn_via(
        &[],
        &["--no-seccomp", "--seccomp-filter", file.to_str().unwrap()],
    );
    let code = wait(&mut child, Duration::from_secs(10));
    let err = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
    assert_eq!(code, Some(153), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `ferrovisor demo --tiny` (with `RUST_BACKTRACE=1`, as a developer
/// runs it) into a pipe whose reader takes `lines` lines and closes it;
/// with `stderr_too`, standard error goes into the same pipe (`2>&1 |
/// head`), else it is collected. The exit status and what was collected.
fn demo_read_then_close(accel: &str, lines: usize, stderr_too: bool) -> (Option<i32>, String) {
    use std::io::BufRead as _;
    use std::process::{Command, Stdio};
    let (reader, writer) = std::io::pipe().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ferrovisor"));
    command
        .args(["demo", "--tiny", "--accel", accel])
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(writer.try_clone().unwrap());
    if stderr_too {
        command.stderr(writer);
    } else {
        drop(writer);
        command.stderr(Stdio::piped());
    }
    let mut child = command.spawn().unwrap();
    drop(command); // our copies of the pipe's writing end
    let err = child.stderr.take().map(common::firecracker::collect);
    let mut reader = std::io::BufReader::new(reader);
    let mut line = String::new();
    for _ in 0..lines {
        line.clear();
        if reader.read_line(&mut line).unwrap() == 0 {
            break;
        }
    }
    drop(reader);
    let code = wait(&mut child, Duration::from_secs(60));
    let err = err
        .map(|e| String::from_utf8_lossy(&e.recv().unwrap()).into_owned())
        .unwrap_or_default();
    (code, err)
}

/// Issue 13: `ferrovisor demo --tiny 2>&1 | head -2` ended with status
/// 148. The console writer's write failed (EPIPE), its warning could not
/// be written either, tracing-subscriber reported that with `eprintln!`,
/// which panicked on the closed pipe, and the panic's backtrace printer
/// called getcwd, which the console writer's filter forbids; without
/// RUST_BACKTRACE, the main thread's statistics `eprint!` panicked (101).
/// A reader that stops early must not change how the VM ends.
#[test]
fn a_reader_that_stops_early_does_not_change_the_exit_status() {
    for accel in common::accels() {
        for (lines, stderr_too) in [(2, true), (1, true), (0, true), (1, false)] {
            for round in 0..5 {
                let (code, err) = demo_read_then_close(accel, lines, stderr_too);
                let case = format!("{accel}, {lines} lines, 2>&1 {stderr_too}, round {round}");
                assert_eq!(code, Some(0), "{case}: stderr:\n{err}");
                assert!(
                    !err.contains("seccomp:") && !err.contains("panicked"),
                    "{case}:\n{err}"
                );
            }
        }
    }
}

/// Issue 13: QEMU's front end with `-qmp`. The QMP server thread (an
/// `api` thread) dies on a forbidden syscall like the other kinds; and
/// once the VM runs, every thread of the process has a filter, the main
/// thread (which waits for the end and sends QMP's events) included.
#[test]
fn qemus_qmp_and_main_threads_are_filtered() {
    let dir = temp_dir("seccomp-qmp");
    let kernel = echo_kernel(&dir);
    let sock = dir.join("qmp.sock");
    let qmp = format!("unix:{},server=on,wait=off", sock.display());
    let args = [
        "qemu",
        "-accel",
        "tcg",
        "-nodefaults",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        &kernel,
        "-qmp",
        &qmp,
    ];
    expect_fault("api", &[], &args);

    let (mut child, _out, _err) = spawn_via(&[], &args);
    let pid = child.id();
    let unfiltered = || -> Vec<String> {
        let mut left = Vec::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
        {
            let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if !status.lines().any(|l| l == "Seccomp:\t2") {
                left.push(format!(
                    "{} ({})",
                    name.trim(),
                    task.file_name().to_string_lossy()
                ));
            }
        }
        left
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !sock.exists() || !unfiltered().is_empty() {
        assert!(child.try_wait().unwrap().is_none(), "ferrovisor ended");
        assert!(
            Instant::now() < deadline,
            "threads without a filter: {:?}",
            unfiltered()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
