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
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    (status, format!("{out}\n--- stderr ---\n{err}"))
}

fn spawn_tiny(kernel: &Path, accel: &str, port: u16) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--accel", accel, "--memory", "64M", "--boot", "bare"])
        .arg("--kernel")
        .arg(kernel)
        .args(["--gdb", &port.to_string(), "--gdb-wait"])
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

/// The whole session on the tiny guest; the values gdb printed, in order.
fn tiny_session(accel: &str) {
    let guest = gdb_target::program().unwrap();
    let dir = TempDir::new(&format!("gdb-{accel}"));
    let kernel = dir.elf("gdb-guest.elf", &guest.program);
    let port = free_port();
    let child = spawn_tiny(&kernel, accel, port);
    let x = |a: u64| format!("{a:#x}");
    let commands = [
        // Stopped before the first instruction (-S).
        "p/x $rip".to_string(),
        // A software breakpoint at the loop: registers as the guest set them.
        format!("break *{}", x(guest.loop_top)),
        "continue".into(),
        "p/x $rip".into(),
        "p/x $rbx".into(),
        "p $rcx".into(),
        "p/x $cr0 & 0x80000001".into(),
        "p/x $efer & 0x500".into(),
        // One instruction: the NOP.
        "stepi".into(),
        "p/x $rip".into(),
        "delete".into(),
        // A hardware watchpoint on the counter.
        format!("watch *(long *){}", x(COUNTER)),
        "continue".into(),
        format!("p *(long *){}", x(COUNTER)),
        "p/x $rip".into(),
        "delete".into(),
        // A hardware breakpoint after the loop.
        format!("hbreak *{}", x(guest.after_loop)),
        "continue".into(),
        "p/x $rip".into(),
        "p $rcx".into(),
        "delete".into(),
        // Change what the guest prints and the status it exits with.
        format!("set var *(char *){} = 'G'", x(guest.message)),
        "set var $rbx = 0x10".into(),
        "continue".into(),
    ];
    let out = gdb(port, &commands);
    let (status, console) = finish(child);
    let v = values(&out);
    let all = format!("gdb:\n{out}\nferrovisor:\n{console}");
    assert!(v.len() >= 11, "{all}");
    assert_eq!(v[0], x(guests::LOAD_ADDR), "{all}");
    assert_eq!(v[1], x(guest.loop_top), "{all}");
    assert_eq!(v[2], "0x21", "{all}");
    assert_eq!(v[3], "0", "{all}");
    assert_eq!(v[4], "0x80000001", "{all}");
    assert_eq!(v[5], "0x500", "{all}");
    assert_eq!(v[6], x(guest.loop_top + 1), "{all}");
    assert!(out.contains("New value = 1"), "watchpoint: {all}");
    assert_eq!(v[7], "1", "{all}");
    assert_eq!(v[9], x(guest.after_loop), "{all}");
    assert_eq!(v[10], "3", "{all}");
    let changed = format!("G{}", &MESSAGE[1..]);
    assert!(console.contains(changed.trim()), "{all}");
    assert_eq!(status, Some(0x21), "debug-exit status with RBX=0x10: {all}");
}

#[test]
fn tiny_guest_on_emu() {
    if !gdb_present() {
        return;
    }
    tiny_session("emu");
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
    let huge = q("m200000,ffffffffffff");
    assert!(huge.contains('$'), "huge read: {huge}");
    assert!(q("M4000000000,2:0000").contains("$E"), "write outside RAM");
    // Malformed: no answer that breaks the session.
    for body in ["m", "mzz,1", "G00", "Z9,0,0", "Z2,200000,3", "vCont;x", "p"] {
        let r = q(body);
        assert!(r.contains('$'), "{body}: {r}");
    }
    // Garbage bytes outside packets, then a valid read of the code.
    drop(q);
    s.write_all(b"garbage").unwrap();
    let code = ask(&mut s, &format!("m{:x},2", guests::LOAD_ADDR));
    let first = &guest.program.code[..2];
    let hex: String = first.iter().map(|b| format!("{b:02x}")).collect();
    assert!(code.contains(&hex), "{code} vs {hex}");
    // Kill: the VM ends.
    let _ = s.write_all(b"$k#6b");
    drop(s);
    let (status, console) = finish(child);
    assert!(status.is_some(), "ferrovisor did not end: {console}");
}
