//! The gdb stub (`--gdb PORT`, QEMU's `-s`/`-gdb`), driven by Debian's gdb
//! in batch mode: against a tiny guest whose addresses are known
//! (breakpoints, registers, stepping, a watchpoint, memory and register
//! writes the guest's output shows), on emu and, where the host lets KVM
//! debug guests, on kvm; against the Linux test guest's kernel on emu; and
//! against malformed packets.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;
use guests::gdb_target::{self, COUNTER, MESSAGE};

/// Whether gdb is installed (else a SKIPPED line, or a failure with
/// FERROVISOR_REQUIRE_GDB=1).
fn gdb_present() -> bool {
    let ok = Command::new("gdb")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        conformance::skip_or_fail("gdb", "gdb is not installed (apt-get install gdb)");
    }
    ok
}

/// A TCP port nobody listens on now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until something listens on `port`.
fn wait_listening(port: u16, child: &mut Child) {
    let start = Instant::now();
    // Not by connecting: the stub would take that for gdb.
    let listening = || {
        let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
        tcp.lines().skip(1).any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&format!(":{port:04X}")) && f[3] == "0A"
        })
    };
    while !listening() {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            let _ = child.stderr.take().unwrap().read_to_string(&mut err);
            panic!("ferrovisor ended ({status}) before listening for gdb: {err}");
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no gdb port");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs gdb in batch mode against `port` with `commands`; returns its
/// standard output and error together.
fn gdb(port: u16, commands: &[String]) -> String {
    let mut c = Command::new("gdb");
    c.args([
        "-batch",
        "-nx",
        "-ex",
        "set confirm off",
        "-ex",
        "set pagination off",
        "-ex",
        "set print elements 0",
    ]);
    c.args(["-ex", &format!("target remote 127.0.0.1:{port}")]);
    for command in commands {
        c.args(["-ex", command]);
    }
    let Output { stdout, stderr, .. } = c.stdin(Stdio::null()).output().expect("run gdb");
    format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    )
}

/// ferrovisor's console and exit status once it ends (killed after 60 s).
fn finish(mut child: Child) -> (Option<i32>, String) {
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s.code();
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut out = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, format!("{out}\n--- stderr ---\n{err}"))
}

/// How ferrovisor is started: its own command line or QEMU's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Front {
    Run,
    Qemu,
}

fn spawn_tiny(kernel: &Path, accel: &str, port: u16) -> Child {
    spawn_tiny_via(Front::Run, kernel, accel, port)
}

/// The tiny guest, stopped before its first instruction, gdb served on
/// `port`.
fn spawn_tiny_via(front: Front, kernel: &Path, accel: &str, port: u16) -> Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrovisor"));
    match front {
        Front::Run => {
            c.args(["run", "--accel", accel, "--memory", "64M", "--boot", "bare"])
                .args(["--cpus", "2"])
                .arg("--kernel")
                .arg(kernel)
                .args(["--gdb", &port.to_string(), "--gdb-wait"]);
        }
        Front::Qemu => {
            let accel = if accel == "emu" { "tcg" } else { accel };
            c.args([
                "qemu",
                "-accel",
                accel,
                "-m",
                "64M",
                "-nodefaults",
                "-nographic",
            ])
            .args(["-smp", "2", "-serial", "stdio", "-kernel"])
            .arg(kernel)
            .args(["-device", "isa-debug-exit,iobase=0xf4,iosize=0x4"])
            .args(["-S", "-gdb", &format!("tcp::{port}")]);
        }
    }
    let mut child = c
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrovisor");
    wait_listening(port, &mut child);
    child
}

/// `$N = VALUE` lines of gdb's output, in order.
fn values(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix('$'))
        .filter_map(|l| l.split_once(" = ").map(|(_, v)| v.trim().to_string()))
        .collect()
}

/// What a tiny-guest session checks beyond hardware breakpoints,
/// registers, stepping and memory and register writes.
#[derive(Clone, Copy)]
struct Parts {
    /// The first breakpoint is a software one (INT3).
    sw_break: bool,
    /// A hardware watchpoint on the guest's counter.
    watch: bool,
}

/// The whole session on the tiny guest, each printed value checked.
fn tiny_session(accel: &str, parts: Parts) {
    tiny_session_via(Front::Run, accel, parts)
}

fn tiny_session_via(front: Front, accel: &str, parts: Parts) {
    let guest = gdb_target::program().unwrap();
    let dir = TempDir::new(&format!("gdb-{accel}-{}", front == Front::Qemu));
    let kernel = dir.elf("gdb-guest.elf", &guest.program);
    let port = free_port();
    let child = spawn_tiny_via(front, &kernel, accel, port);
    let x = |a: u64| format!("{a:#x}");
    // (command, the value it prints).
    let mut steps: Vec<(String, Option<String>)> = Vec::new();
    let mut add = |c: String, v: Option<String>| steps.push((c, v));
    // Stopped before the first instruction (-S).
    add("p/x $rip".into(), Some(x(guests::LOAD_ADDR)));
    // A breakpoint at the loop: registers as the guest set them.
    let kind = if parts.sw_break { "break" } else { "hbreak" };
    add(format!("{kind} *{}", x(guest.loop_top)), None);
    add("continue".into(), None);
    add("p/x $rip".into(), Some(x(guest.loop_top)));
    add("p/x $rbx".into(), Some("0x21".into()));
    add("p $rcx".into(), Some("0".into()));
    add("p/x $cr0 & 0x80000001".into(), Some("0x80000001".into()));
    add("p/x $efer & 0x500".into(), Some("0x500".into()));
    // One instruction: the NOP.
    add("stepi".into(), None);
    add("p/x $rip".into(), Some(x(guest.loop_top + 1)));
    add("delete".into(), None);
    if parts.watch {
        // A hardware watchpoint on the counter: the first write is 1.
        add(format!("watch *(long *){}", x(COUNTER)), None);
        add("continue".into(), None);
        add(format!("p *(long *){}", x(COUNTER)), Some("1".into()));
        add("delete".into(), None);
    }
    // A hardware breakpoint after the loop.
    add(format!("hbreak *{}", x(guest.after_loop)), None);
    add("continue".into(), None);
    add("p/x $rip".into(), Some(x(guest.after_loop)));
    add("p $rcx".into(), Some("3".into()));
    add(format!("p *(long *){}", x(COUNTER)), Some("3".into()));
    add("delete".into(), None);
    // Two vCPUs, two threads; the second halts in its loop (RDI = 1).
    add("info threads".into(), None);
    add("thread 2".into(), None);
    add("p $rdi".into(), Some("1".into()));
    add("thread 1".into(), None);
    // Change what the guest prints and the status it exits with.
    add(format!("set var *(char *){} = 'G'", x(guest.message)), None);
    add("set var $rbx = 0x10".into(), None);
    add("continue".into(), None);
    let commands: Vec<String> = steps.iter().map(|(c, _)| c.clone()).collect();
    let out = gdb(port, &commands);
    let (status, console) = finish(child);
    let all = format!("gdb:\n{out}\nferrovisor:\n{console}");
    let expected: Vec<&String> = steps.iter().filter_map(|(_, v)| v.as_ref()).collect();
    let got = values(&out);
    assert_eq!(got.iter().collect::<Vec<_>>(), expected, "{all}");
    if parts.watch {
        assert!(out.contains("New value = 1"), "watchpoint: {all}");
    }
    assert!(out.contains("Thread 1.2"), "second vCPU: {all}");
    let changed = format!("G{}", &MESSAGE[1..]);
    assert!(console.contains(changed.trim()), "{all}");
    assert_eq!(status, Some(0x21), "debug-exit status with RBX=0x10: {all}");
}

#[test]
fn tiny_guest_on_emu() {
    if !gdb_present() {
        return;
    }
    tiny_session(
        "emu",
        Parts {
            sw_break: true,
            watch: true,
        },
    );
}

/// QEMU's `-S -gdb tcp::PORT` in the QEMU front end.
#[test]
fn tiny_guest_through_qemu_options() {
    if !gdb_present() {
        return;
    }
    tiny_session_via(
        Front::Qemu,
        "emu",
        Parts {
            sw_break: true,
            watch: true,
        },
    );
}

/// KVM_CAP_SET_GUEST_DEBUG.
const KVM_CAP_SET_GUEST_DEBUG: u32 = 23;

#[test]
fn tiny_guest_on_kvm() {
    if !gdb_present() || !common::kvm_usable() {
        return;
    }
    let kvm = hv_kvm::KvmHypervisor::new().unwrap();
    if hv::Hypervisor::has_kvm_capability(&kvm, KVM_CAP_SET_GUEST_DEBUG) != Some(true) {
        conformance::skip_or_fail(
            "kvm_guest_debug",
            "this host's KVM lacks KVM_CAP_SET_GUEST_DEBUG",
        );
        return;
    }
    // kvm_pvm runs guest code at CPL 0 in the host kernel's instruction
    // emulator, which neither intercepts INT3 for the debugger (an
    // emulation failure ends the VM) nor checks data breakpoints.
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    if pvm {
        conformance::skip_or_fail(
            "kvm_int3_and_watchpoints",
            "the host's KVM is kvm_pvm, whose instruction emulator does not take them",
        );
    }
    tiny_session(
        "kvm",
        Parts {
            sw_break: !pvm,
            watch: !pvm,
        },
    );
}

/// Sends gdb packet `body` and returns the stub's answer (acknowledged).
fn ask(s: &mut TcpStream, body: &str) -> String {
    let sum = body.bytes().fold(0u8, |a, b| a.wrapping_add(b));
    s.write_all(format!("${body}#{sum:02x}").as_bytes())
        .unwrap();
    let mut reply = Vec::new();
    let mut b = [0u8];
    // '+', then $...#xx.
    loop {
        s.read_exact(&mut b).unwrap();
        reply.push(b[0]);
        if reply.len() >= 3 && reply[reply.len() - 3] == b'#' {
            break;
        }
    }
    s.write_all(b"+").unwrap();
    String::from_utf8_lossy(&reply).into_owned()
}

/// `reply` with gdb's run-length encoding (`X*N`: N - 29 more X) undone.
fn unrle(reply: &str) -> String {
    let mut out = String::new();
    let mut chars = reply.chars();
    while let Some(c) = chars.next() {
        if c == '*' {
            let n = chars.next().map_or(0, |n| n as usize - 29);
            let last = out.chars().last().unwrap_or('?');
            out.extend(std::iter::repeat_n(last, n));
        } else {
            out.push(c);
        }
    }
    out
}

/// Malformed packets, a huge read, addresses outside RAM: errors, and
/// the stub still answers afterwards.
#[test]
fn bad_input_gets_errors() {
    let guest = gdb_target::program().unwrap();
    let dir = TempDir::new("gdb-bad");
    let kernel = dir.elf("gdb-guest.elf", &guest.program);
    let port = free_port();
    let child = spawn_tiny(&kernel, "emu", port);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut q = |body: &str| ask(&mut s, body);
    // Outside RAM, unmapped in the guest's page tables, and huge.
    assert!(q("m4000000000,10").contains("$E"), "outside RAM");
    assert!(q("mffff800000000000,10").contains("$E"), "unmapped");
    // A huge read stops where RAM (64 MiB) ends: the last page's bytes,
    // then the error gdbstub appends for the chunk that failed.
    let huge = unrle(&q("m3fff000,ffffffffffff"));
    let body = &huge["+$".len()..huge.len() - "#xx".len()];
    assert!(
        body.len() > 8192
            && body[..8192].bytes().all(|b| b.is_ascii_hexdigit())
            && body[8192..].starts_with('E'),
        "huge read: {huge}"
    );
    assert!(q("M4000000000,2:0000").contains("$E"), "write outside RAM");
    // Breakpoint kinds and sizes the hardware does not have, a register
    // gdb's description lacks.
    for body in ["Z9,0,0", "Z2,200001,3", "Z2,200000,10", "p99", "P99=00"] {
        let r = q(body);
        assert!(r.contains('$') && !r.contains("$OK"), "{body}: {r}");
    }
    // The session still serves: the code reads back.
    let code = q(&format!("m{:x},2", guests::LOAD_ADDR));
    let first = &guest.program.code[..2];
    let hex: String = first.iter().map(|b| format!("{b:02x}")).collect();
    assert!(code.contains(&hex), "{code} vs {hex}");
    // A malformed packet ends the session (gdbstub's rule); the stub
    // resumes the VM as on a detach, and it runs to its end.
    let _ = s.write_all(b"$m#6d");
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    let (status, console) = finish(child);
    assert!(console.contains(MESSAGE.trim()), "{console}");
    assert_eq!(status, Some(0x43), "{console}");
}

/// The Linux test guest's kernel on emu: gdb attaches while it runs,
/// reads `linux_banner` through the kernel's virtual addresses (found in
/// /proc/kallsyms by the guest) and compares it with the banner the
/// kernel printed; a breakpoint on getppid's syscall entry is hit when
/// the test has the guest run a command.
#[test]
fn linux_kernel_on_emu() {
    if !gdb_present() {
        return;
    }
    let Some(guest) = common::guest() else {
        return;
    };
    let script = "grep -w -e linux_banner -e __x64_sys_getppid /proc/kallsyms | sed 's/^/SYM /'; \
                  dmesg | grep -m1 'Linux version' | sed 's/^[^L]*/BANNER /'; echo READY; \
                  while read x; do [ \"$x\" = quit ] && break; sh -c 'echo ppid=$PPID'; done";
    let cmdline = format!(
        "{} ferrovisor.cmd={}",
        common::CMDLINE,
        common::base64(script.as_bytes())
    );
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--accel", "emu", "--memory", "256M"])
        .arg("--kernel")
        .arg(&guest.kernel)
        .arg("--initrd")
        .arg(&guest.initrd)
        .args(["--cmdline", &cmdline, "--gdb", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrovisor");
    let mut stdin = child.stdin.take().unwrap();
    // The console, line by line, as it comes.
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let (mut banner, mut syms, mut console) = (None, Vec::new(), String::new());
    let start = Instant::now();
    while start.elapsed() < common::BOOT_TIMEOUT {
        let Ok(line) = lines.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        console.push_str(&line);
        console.push('\n');
        let line = line.trim_end_matches('\r').to_string();
        if let Some(b) = line.strip_prefix("BANNER ") {
            banner = Some(b.to_string());
        } else if let Some(s) = line.strip_prefix("SYM ") {
            syms.push(s.to_string());
        } else if line == "READY" {
            break;
        }
    }
    let sym = |name: &str| {
        syms.iter()
            .find(|s| s.ends_with(&format!(" {name}")))
            .and_then(|s| u64::from_str_radix(s.split_whitespace().next()?, 16).ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/kallsyms; console:\n{console}"))
    };
    let banner = banner.unwrap_or_else(|| panic!("no banner; console:\n{console}"));
    let (linux_banner, getppid) = (sym("linux_banner"), sym("__x64_sys_getppid"));
    assert!(linux_banner >= 0xffff_8000_0000_0000, "{linux_banner:#x}");
    // Commands for the guest while gdb waits at the breakpoint.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let gdb_done = done.clone();
    let typing = std::thread::spawn(move || {
        for _ in 0..120 {
            std::thread::sleep(Duration::from_millis(500));
            if gdb_done.load(std::sync::atomic::Ordering::Relaxed) {
                break;
            }
            if stdin.write_all(b"go\n").is_err() {
                return stdin;
            }
        }
        stdin
    });
    let out = gdb(
        port,
        &[
            format!("x/s {linux_banner:#x}"),
            "p/x $cr0 & 0x80000000".into(),
            format!("break *{getppid:#x}"),
            "continue".into(),
            "p/x $rip".into(),
            "delete".into(),
            "detach".into(),
        ],
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut stdin = typing.join().unwrap();
    let _ = stdin.write_all(b"quit\n");
    drop(stdin);
    // The rest of the console.
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(30)) {
        console.push_str(&line);
        console.push('\n');
    }
    let (status, err) = finish(child);
    let all = format!("gdb:\n{out}\nconsole:\n{console}{err}");
    // x/s prints ADDR: "Linux version ...\n".
    let read = out
        .lines()
        .find_map(|l| l.split_once(":\t\"").map(|(_, s)| s.to_string()))
        .unwrap_or_else(|| panic!("no string read: {all}"));
    let read = read.trim_end_matches('"').trim_end_matches("\\n");
    assert!(read.starts_with("Linux version "), "{all}");
    assert_eq!(read, banner.trim_end(), "{all}");
    assert!(out.contains("Breakpoint 1, "), "{all}");
    let v = values(&out);
    assert_eq!(v.get(1), Some(&format!("{getppid:#x}")), "{all}");
    assert!(console.contains("ppid="), "{all}");
    assert_eq!(status, Some(0), "{all}");
}

/// gdb's Ctrl-C (a 0x03 byte) stops a running guest with SIGINT; the
/// stub then serves requests, and `k` ends the VM.
#[test]
fn interrupt_stops_a_running_guest() {
    // 1 MiB of NOPs, many times over: seconds of work.
    let program = guests::nop_sled(1, 100_000, 1).unwrap();
    let dir = TempDir::new("gdb-interrupt");
    let kernel = dir.elf("sled.elf", &program);
    let port = free_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--accel", "emu", "--memory", "64M", "--boot", "bare"])
        .arg("--kernel")
        .arg(&kernel)
        .args(["--gdb", &port.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrovisor");
    wait_listening(port, &mut child);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // Attaching stopped it; let it run again.
    assert!(ask(&mut s, "?").contains("$T"), "stop reason");
    s.write_all(b"$vCont;c#a8").unwrap();
    let mut ack = [0u8];
    s.read_exact(&mut ack).unwrap();
    assert_eq!(ack[0], b'+');
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(&[0x03]).unwrap();
    let mut reply = Vec::new();
    let mut b = [0u8];
    loop {
        s.read_exact(&mut b).unwrap();
        reply.push(b[0]);
        if reply.len() >= 3 && reply[reply.len() - 3] == b'#' {
            break;
        }
    }
    s.write_all(b"+").unwrap();
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(reply.starts_with("$T02"), "SIGINT stop: {reply}");
    // Stopped inside the sled (or its loop), registers readable.
    let regs = ask(&mut s, "g");
    assert!(
        unrle(&regs).len() > 2 * 0x218 && !regs.contains("$E"),
        "{regs}"
    );
    let _ = s.write_all(b"$k#6b");
    drop(s);
    let (status, console) = finish(child);
    assert_eq!(status, Some(0), "killed by gdb: {console}");
}

/// The Firecracker front end's `--gdb PORT` (a Ferrovisor extension):
/// gdb attaches to the running microVM, reads its registers, and its
/// `kill` ends it.
#[test]
fn firecracker_front_end_takes_gdb() {
    if !gdb_present() {
        return;
    }
    let dir = TempDir::new("gdb-fc");
    let kernel = dir.elf("echo.elf", &guests::echo().unwrap());
    let config = serde_json::json!({
        "boot-source": {"kernel_image_path": kernel.to_str().unwrap()},
        "machine-config": {"vcpu_count": 1, "mem_size_mib": 64},
    });
    let file = dir.file("vm.json", config.to_string().as_bytes());
    let port = free_port();
    let (mut child, out, err) = common::firecracker::spawn(&[
        "--config-file",
        file.to_str().unwrap(),
        "--no-api",
        "--accel",
        "emu",
        "--gdb",
        &port.to_string(),
    ]);
    let stdin = child.stdin.take();
    wait_listening(port, &mut child);
    let gdb_out = gdb(port, &["p/x $cr0 & 0x80000001".into(), "kill".into()]);
    drop(stdin);
    let status = child.wait().unwrap();
    let err = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
    let out = String::from_utf8_lossy(&out.recv().unwrap()).into_owned();
    let all = format!("gdb:\n{gdb_out}\nconsole:\n{out}\n{err}");
    assert_eq!(values(&gdb_out), ["0x80000001"], "{all}");
    assert_eq!(status.code(), Some(0), "{all}");
}
