//! End to end: QEMU's command lines boot the Debian test guest,
//! unmodified, through `ferrovisor qemu` (emu accelerator: QEMU's
//! `-accel tcg`), and kvm-unit-tests' own runner takes the binary as its
//! QEMU.
//!
//! - QEMU's documented microvm command line (docs/system/i386/microvm.rst,
//!   the first example: ISA serial console, a virtio-mmio disk and NIC),
//!   with `-enable-kvm` as `-accel tcg` and the TAP named (Ferrovisor
//!   attaches to an existing one);
//! - a q35 command line with virtio-pci devices and a virtconsole;
//! - a few fast kvm-unit-tests entries through the suite's run_tests.sh
//!   (scripts/kvm-unit-tests-qemu-cli), PASS and SKIP as our own runner.
//!
//! The boot helpers are in common/ (guest lookup, SKIPPED without a guest
//! unless `FERROVISOR_REQUIRE_GUEST=1`; the TAP in a network namespace).

mod common;

use common::TempDir;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::netns::Netns;
use common::{base64, guest, spawn_command};

const DISK_MARK: &str = "ferrovisor-qemu-cli-disk";

/// A 1 MiB raw image that starts with [`DISK_MARK`].
fn image(dir: &Path) -> PathBuf {
    let path = dir.join("test.img");
    let mut data = DISK_MARK.as_bytes().to_vec();
    data.resize(1 << 20, 0);
    std::fs::write(&path, data).unwrap();
    path
}

/// `ferrovisor qemu ARGS` under `wrapper` (a network namespace's).
fn qemu(wrapper: &[&str], args: &[String]) -> Command {
    let binary = env!("CARGO_BIN_EXE_ferrovisor");
    let mut c = match wrapper.split_first() {
        Some((program, rest)) => {
            let mut c = Command::new(program);
            c.args(rest).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    c.arg("qemu").args(args);
    c
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

const SCRIPT: &str = "echo disk=$(head -c 24 /dev/vda); \
     echo cpus=$(grep -c ^processor /proc/cpuinfo); \
     echo net=$(ls /sys/class/net | grep -c eth0)";

#[test]
fn qemus_documented_microvm_command_line_boots_the_test_guest() {
    let Some(guest) = guest() else { return };
    let Some(ns) = Netns::new("qemu-mv", "fvqtap0", None) else {
        return;
    };
    let dir = TempDir::new("qemu-microvm");
    let img = image(&dir.0);
    let append = format!(
        "earlyprintk=ttyS0 console=ttyS0 root=/dev/vda ferrovisor.cmd={}",
        base64(SCRIPT.as_bytes())
    );
    let mut args = strings(&[
        "-M", "microvm", "-accel", "tcg", "-cpu", "host", "-m", "512m",
    ]);
    args.extend(strings(&["-smp", "2", "-kernel"]));
    args.push(guest.kernel.display().to_string());
    args.extend(["-initrd".to_string(), guest.initrd.display().to_string()]);
    args.extend(["-append".to_string(), append]);
    args.extend(strings(&[
        "-nodefaults",
        "-no-user-config",
        "-nographic",
        "-serial",
        "stdio",
        "-drive",
    ]));
    args.push(format!("id=test,file={},format=raw,if=none", img.display()));
    args.extend(strings(&[
        "-device",
        "virtio-blk-device,drive=test",
        "-netdev",
        "tap,id=tap0,ifname=fvqtap0,script=no,downscript=no",
        "-device",
        "virtio-net-device,netdev=tap0",
    ]));
    let b = spawn_command(qemu(&ns.wrapper(), &args), false).wait();
    assert_eq!(b.status, Some(0), "stderr: {}\n{}", b.stderr, b.tail());
    b.expect(&format!("disk={DISK_MARK}"));
    b.expect("cpus=2");
    b.expect("net=1");
    // earlyprintk=ttyS0: the kernel's first lines on the UART.
    b.expect("Linux version");
}

#[test]
fn a_q35_virtio_pci_command_line_boots_the_test_guest() {
    let Some(guest) = guest() else { return };
    let dir = TempDir::new("qemu-q35");
    let img = image(&dir.0);
    let script = format!("{SCRIPT}; echo rng=$(head -c 32 /dev/hwrng | wc -c)");
    let append = format!(
        "console=hvc0 quiet panic=-1 ferrovisor.cmd={}",
        base64(script.as_bytes())
    );
    let mut args = strings(&["-machine", "q35,accel=tcg", "-m", "256", "-kernel"]);
    args.push(guest.kernel.display().to_string());
    args.extend(["-initrd".to_string(), guest.initrd.display().to_string()]);
    args.extend(["-append".to_string(), append]);
    args.extend(strings(&[
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-chardev",
        "stdio,id=con0",
        "-device",
        "virtio-serial-pci",
        "-device",
        "virtconsole,chardev=con0",
        "-object",
        "rng-random,id=rng0,filename=/dev/urandom",
        "-device",
        "virtio-rng-pci,rng=rng0",
        "-drive",
    ]));
    args.push(format!(
        "file={},if=virtio,format=raw,readonly=on,cache=writeback",
        img.display()
    ));
    let b = spawn_command(qemu(&[], &args), false).wait();
    assert_eq!(b.status, Some(0), "stderr: {}\n{}", b.stderr, b.tail());
    b.expect(&format!("disk={DISK_MARK}"));
    b.expect("cpus=1");
    b.expect("net=0");
    b.expect("rng=32");
}

#[test]
fn unsupported_options_are_one_error_that_names_them() {
    for (args, names) in [
        (
            &["-kernel", "/k", "-overcommit", "cpu-pm=on"][..],
            "-overcommit",
        ),
        (&["-kernel", "/k", "-device", "e1000"][..], "-device e1000"),
        (
            &[
                "-kernel",
                "/k",
                "-drive",
                "file=/x.img,if=virtio,format=vmdk",
            ][..],
            "-drive format=vmdk",
        ),
        (
            &["-kernel", "/k", "-M", "microvm,pic=off"][..],
            "-machine pic=off",
        ),
        (
            &[
                "-kernel",
                "/k",
                "-M",
                "microvm",
                "-device",
                "virtio-blk-pci,drive=d",
            ][..],
            "virtio-blk-pci",
        ),
    ] {
        let out = qemu(&[], &strings(args)).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("ferrovisor qemu: "), "{stderr}");
        assert!(stderr.contains(names), "{args:?}: {stderr}");
    }
}

#[test]
fn the_binary_named_qemu_answers_qemus_probes() {
    let dir = TempDir::new("qemu-probe");
    let link = dir.0.join("qemu-system-x86_64");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_ferrovisor"), &link).unwrap();
    let run = |args: &[&str]| {
        let out = Command::new(&link).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(run(&["--help"]).starts_with("QEMU emulator version "));
    assert!(run(&["-device", "?"]).contains("name \"pc-testdev\", bus ISA"));
    assert!(run(&["-machine", "help"]).contains("microvm"));
    assert!(run(&["-accel", "help"]).contains("tcg"));
    // A missing kernel: QEMU's message, which kvm-unit-tests' runner looks for.
    let out = Command::new(&link)
        .args(["-kernel", "_NO_FILE_4Uhere_", "-machine", "accel=tcg"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("qemu-system-x86_64: could not open kernel file '_NO_FILE_4Uhere_'"),
        "{stderr}"
    );
}

/// Runs kvm-unit-tests' run_tests.sh through scripts/kvm-unit-tests-qemu-cli
/// with `ACCEL=accel` on `tests`, and checks that its results agree with
/// tests/kvm-unit-tests/`expected`.expected; its output, or None when the
/// suite is unavailable (reported SKIPPED, or a failure where required).
fn run_tests_sh(accel: &str, expected: &str, tests: &[&str]) -> Option<String> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = Command::new("python3")
        .arg(repo.join("scripts/kvm-unit-tests-qemu-cli"))
        .args([
            "--accel",
            accel,
            "--ferrovisor",
            env!("CARGO_BIN_EXE_ferrovisor"),
        ])
        .arg("-j2")
        .args(tests)
        .output()
        .expect("run scripts/kvm-unit-tests-qemu-cli");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(3) {
        conformance::skip_or_fail("kut", stderr.trim());
        return None;
    }
    assert!(
        out.status.success(),
        "run_tests.sh's results differ from tests/kvm-unit-tests/{expected}.expected:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains(&format!("0 differ from {expected}.expected")),
        "{stdout}"
    );
    Some(stdout)
}

/// kvm-unit-tests' run_tests.sh with this binary as QEMU, on a few fast
/// entries: passes, a CPU feature emu lacks (SKIP, as our runner), an
/// accelerator conflict (SKIP) and pit=off.
#[test]
fn kvm_unit_tests_run_tests_sh_takes_it_as_qemu() {
    let tests = [
        "vmexit_cpuid",
        "smptest",
        "realmode",
        "pku",
        "svm",
        "cet",
        "hypercall",
    ];
    let Some(stdout) = run_tests_sh("tcg", "emu", &tests) else {
        return;
    };
    assert!(
        stdout.contains("SKIP\u{1b}[0m svm") || stdout.contains("SKIP svm"),
        "{stdout}"
    );
}

/// The same with `ACCEL=kvm`: x86/run's `-global
/// kvm-pit.lost_tick_policy=discard` is honoured there too (KVM's PIT stops
/// re-injecting), so the entries run on the host's /dev/kvm with the
/// results of tests/kvm-unit-tests/kvm.expected. Small, fast entries: the
/// host's nested KVM emulates guest code slowly.
#[test]
fn kvm_unit_tests_run_tests_sh_runs_on_kvm() {
    if !common::kvm_usable() {
        return;
    }
    let tests = ["smptest", "vmexit_cpuid", "realmode", "msr"];
    let Some(stdout) = run_tests_sh("kvm", "kvm", &tests) else {
        return;
    };
    assert!(
        stdout.contains("PASS\u{1b}[0m smptest") || stdout.contains("PASS smptest"),
        "{stdout}"
    );
}

/// A QMP client: the greeting read, then commands and their answers,
/// with the events that came before each answer kept.
struct Qmp {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
    events: Vec<serde_json::Value>,
}

impl Qmp {
    fn connect(path: &Path) -> Qmp {
        let started = std::time::Instant::now();
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if started.elapsed() > std::time::Duration::from_secs(30) => {
                    panic!("no QMP socket at {}: {e}", path.display())
                }
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
            }
        };
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(60)))
            .unwrap();
        let mut q = Qmp {
            reader: std::io::BufReader::new(stream.try_clone().unwrap()),
            writer: stream,
            events: Vec::new(),
        };
        let greeting = q.line();
        assert_eq!(greeting["QMP"]["version"]["qemu"]["major"], 9, "{greeting}");
        q
    }

    fn line(&mut self) -> serde_json::Value {
        use std::io::BufRead;
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a QMP line");
        assert!(!line.is_empty(), "QMP closed");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Sends `text` (one or more JSON objects) and returns the next answer.
    fn send(&mut self, text: &str) -> serde_json::Value {
        use std::io::Write;
        self.writer.write_all(text.as_bytes()).unwrap();
        self.answer()
    }

    fn answer(&mut self) -> serde_json::Value {
        loop {
            let v = self.line();
            if v.get("event").is_some() {
                self.events.push(v);
            } else {
                return v;
            }
        }
    }

    fn execute(&mut self, command: &str) -> serde_json::Value {
        let answer = self.send(&format!(r#"{{"execute": "{command}"}}"#));
        assert!(answer.get("return").is_some(), "{command}: {answer}");
        answer["return"].clone()
    }

    /// Waits for the event `name` (kept ones first).
    fn event(&mut self, name: &str) -> serde_json::Value {
        if let Some(at) = self.events.iter().position(|e| e["event"] == name) {
            return self.events.remove(at);
        }
        loop {
            let v = self.line();
            if v["event"] == name {
                return v;
            }
            self.events.push(v);
        }
    }
}

/// ferrovisor's standard output, read as it comes.
fn output_of(child: &mut std::process::Child) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::Read;
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut pipe = child.stdout.take().unwrap();
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    out
}

fn wait_for(out: &std::sync::Mutex<String>, text: &str) {
    let started = std::time::Instant::now();
    while !out.lock().unwrap().contains(text) {
        assert!(
            started.elapsed() < common::BOOT_TIMEOUT,
            "no {text:?} in {:?}",
            out.lock().unwrap()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn echo_guest(dir: &Path) -> PathBuf {
    let p = guests::echo().unwrap();
    let path = dir.join("echo.elf");
    std::fs::write(
        &path,
        arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    )
    .unwrap();
    path
}

/// The echo guest with `-qmp unix:SOCKET,...` and `extra`.
fn spawn_qmp(kernel: &Path, socket: &Path, extra: &[&str]) -> std::process::Child {
    let qmp = format!("unix:{},server=on,wait=off", socket.display());
    spawn_echo(kernel, &["-qmp", &qmp], extra)
}

fn spawn_echo(kernel: &Path, monitor: &[&str], extra: &[&str]) -> std::process::Child {
    let mut args = vec![
        "-accel".to_string(),
        "tcg".into(),
        "-nodefaults".into(),
        "-display".into(),
        "none".into(),
        "-serial".into(),
        "stdio".into(),
        "-kernel".into(),
        kernel.display().to_string(),
    ];
    args.extend(strings(monitor));
    args.extend(strings(extra));
    qemu(&[], &args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap()
}

/// -S and QMP: the guest runs only after `cont`; `stop` pauses it (input
/// sent while paused is echoed only after `cont`); events STOP and RESUME;
/// `quit` ends the process with a SHUTDOWN event.
#[test]
fn qmp_starts_stops_continues_and_quits_the_vm() {
    use std::io::Write;
    let dir = TempDir::new("qemu-qmp");
    let socket = dir.0.join("qmp.sock");
    let mut child = spawn_qmp(&echo_guest(&dir.0), &socket, &["-S"]);
    let out = output_of(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    let mut q = Qmp::connect(&socket);

    let refused = q.send(r#"{"execute": "query-status"}"#);
    assert_eq!(refused["error"]["class"], "CommandNotFound", "{refused}");
    // Two objects without a separator, as kvm-unit-tests' qmp() sends them.
    let first =
        q.send(r#"{ "execute": "qmp_capabilities" }{ "execute": "query-status", "id": 7 }"#);
    assert_eq!(first, serde_json::json!({"return": {}}));
    let status = q.answer();
    assert_eq!(status["id"], 7, "{status}");
    assert_eq!(status["return"]["status"], "prelaunch", "{status}");
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(*out.lock().unwrap(), "", "the guest ran before cont");
    assert_eq!(q.execute("query-version")["qemu"]["major"], 9);

    q.execute("cont");
    q.event("RESUME");
    wait_for(&out, "echo ready\n");
    assert_eq!(q.execute("query-status")["status"], "running");
    let cpus = q.execute("query-cpus-fast");
    assert_eq!(cpus.as_array().unwrap().len(), 1, "{cpus}");
    assert_ne!(cpus[0]["thread-id"], child.id(), "{cpus}");

    q.execute("stop");
    q.event("STOP");
    assert_eq!(q.execute("query-status")["status"], "paused");
    stdin.write_all(b"x").unwrap();
    stdin.flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert_eq!(
        *out.lock().unwrap(),
        "echo ready\n",
        "a paused guest echoed"
    );
    q.execute("cont");
    q.event("RESUME");
    wait_for(&out, "echo ready\nx");

    let unknown = q.send(r#"{"execute": "migrate"}"#);
    assert_eq!(unknown["error"]["class"], "CommandNotFound", "{unknown}");
    q.execute("quit");
    let shutdown = q.event("SHUTDOWN");
    assert_eq!(shutdown["data"]["reason"], "host-qmp-quit", "{shutdown}");
    assert_eq!(shutdown["data"]["guest"], false, "{shutdown}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(!socket.exists(), "the QMP socket stays behind");
}

/// system_reset ends the VM (Ferrovisor's machines do not reset in place:
/// QEMU's -no-reboot behaviour) with QEMU's SHUTDOWN reason. QMP here is
/// libvirt's and kvm-unit-tests' form, a socket chardev and -mon; the
/// pid file holds the process id while it runs.
#[test]
fn qmp_system_reset_ends_the_vm_with_its_reason() {
    let dir = TempDir::new("qemu-qmp-reset");
    let socket = dir.0.join("qmp.sock");
    let pidfile = dir.0.join("qemu.pid");
    let chardev = format!(
        "socket,id=mon0,path={},server=on,wait=off",
        socket.display()
    );
    let mut child = spawn_echo(
        &echo_guest(&dir.0),
        &["-chardev", &chardev, "-mon", "chardev=mon0,mode=control"],
        &["-no-reboot", "-pidfile", pidfile.to_str().unwrap()],
    );
    let out = output_of(&mut child);
    let mut q = Qmp::connect(&socket);
    assert_eq!(
        std::fs::read_to_string(&pidfile).unwrap().trim(),
        child.id().to_string()
    );
    q.execute("qmp_capabilities");
    wait_for(&out, "echo ready\n");
    assert_eq!(q.execute("query-status")["status"], "running");
    q.execute("system_reset");
    let shutdown = q.event("SHUTDOWN");
    assert_eq!(
        shutdown["data"]["reason"], "host-qmp-system-reset",
        "{shutdown}"
    );
    assert_eq!(child.wait().unwrap().code(), Some(0));
    assert!(!pidfile.exists(), "the pid file stays behind");
}

/// system_powerdown asks the Linux guest to power off (Ctrl-Alt-Del: the
/// test guest's init powers off on it); with -no-shutdown the VM then
/// stays, stopped, until quit.
#[test]
fn qmp_system_powerdown_with_no_shutdown_keeps_the_stopped_vm() {
    let Some(guest) = guest() else { return };
    let dir = TempDir::new("qemu-qmp-powerdown");
    let socket = dir.0.join("qmp.sock");
    let script = "echo qmp-guest-ready; sleep 120";
    let append = format!(
        "{} ferrovisor.cmd={}",
        common::CMDLINE,
        base64(script.as_bytes())
    );
    let mut args = strings(&[
        "-accel",
        "tcg",
        "-m",
        "256",
        "-nodefaults",
        "-nographic",
        "-no-shutdown",
        "-kernel",
    ]);
    args.push(guest.kernel.display().to_string());
    args.extend(["-initrd".to_string(), guest.initrd.display().to_string()]);
    args.extend(["-append".to_string(), append]);
    args.extend([
        "-qmp".to_string(),
        format!("unix:{},server,nowait", socket.display()),
    ]);
    let mut child = qemu(&[], &args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let out = output_of(&mut child);
    let mut q = Qmp::connect(&socket);
    q.execute("qmp_capabilities");
    wait_for(&out, "qmp-guest-ready");
    q.execute("system_powerdown");
    q.event("POWERDOWN");
    let shutdown = q.event("SHUTDOWN");
    assert_eq!(shutdown["data"]["guest"], true, "{shutdown}");
    q.event("STOP");
    assert_eq!(q.execute("query-status")["status"], "shutdown");
    assert!(
        child.try_wait().unwrap().is_none(),
        "-no-shutdown: the process ended"
    );
    q.execute("quit");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
