//! Guests that flood the VMM (issue 13): their cost to the host stays
//! bounded and the VMM stays in control.
//!
//! - A driver that re-enables a virtio queue whose descriptor table lies
//!   outside RAM, in a loop: each attempt is refused (and counted), the
//!   host's log gets at most a few rate-limited lines.
//! - A guest that floods COM1 while nobody reads ferrovisor's standard
//!   output: the vCPU never blocks on the host's pipe, so Ctrl-A x (on a
//!   terminal) still ends the VM at once.
//!
//! Both are tiny bare-metal guests (crates/guests) on emu.

mod common;

use common::TempDir;
use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `ferrovisor run` of the bare ELF `kernel` on emu, with `extra`
/// arguments.
fn ferrovisor(kernel: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrovisor"));
    c.args(["run", "--accel", "emu", "--boot", "bare", "--memory", "64M"])
        .arg("--kernel")
        .arg(kernel)
        .args(extra);
    c
}

/// Waits for `child` at most `limit`; kills it and returns None after.
fn wait_for(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads `pipe` to its end on a thread.
fn collect(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = pipe.read_to_string(&mut s);
        s
    })
}

#[test]
fn re_enabling_a_queue_outside_ram_in_a_loop_cannot_flood_the_log() {
    let dir = TempDir::new("hostile-queue");
    // 256 MiB: outside the 64 MiB of RAM, below the MMIO hole.
    const BAD_DESC: u32 = 0x1000_0000;
    const ITERATIONS: u32 = 1_000_000;
    let flood = guests::virtio::queue_rearm_flood(guests::virtio::FIRST_SLOT, BAD_DESC, ITERATIONS)
        .unwrap();
    let kernel = dir.elf("flood.elf", &flood);
    let mut child = ferrovisor(&kernel, &["--rng"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = collect(child.stdout.take().unwrap());
    let err = collect(child.stderr.take().unwrap());
    let started = Instant::now();
    let status = wait_for(&mut child, Duration::from_secs(120));
    let elapsed = started.elapsed();
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    let expected = (guests::virtio::FLOOD_DONE << 1 | 1) as i32;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(expected),
        "stdout {out:?}; stderr tail: {}",
        &err[err.len().saturating_sub(2000)..]
    );
    assert_eq!(out, "queue flood done\n");
    // The transport's rate limiter allows 10 lines a second.
    let lines = err.lines().count();
    let bound = 10 * (elapsed.as_secs() as usize + 2);
    eprintln!("{ITERATIONS} refused enables in {elapsed:?}: {lines} log lines (at most {bound})");
    assert!(
        lines <= bound,
        "{lines} lines of log for {ITERATIONS} refused enables in {elapsed:?}; first: {}",
        err.lines().take(5).collect::<Vec<_>>().join("\n")
    );
}

/// A pseudo-terminal: the master (what the test types on) and the path
/// of its slave (ferrovisor's standard input).
fn open_pty() -> (File, PathBuf) {
    // SAFETY: plain libc calls on a descriptor this function owns;
    // `ptsname_r` writes at most `name.len()` bytes into `name`.
    unsafe {
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(
            master >= 0,
            "posix_openpt: {}",
            std::io::Error::last_os_error()
        );
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(master, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr())
            .to_str()
            .unwrap()
            .to_string();
        use std::os::fd::FromRawFd;
        (File::from_raw_fd(master), PathBuf::from(path))
    }
}

#[test]
fn ctrl_a_x_ends_a_guest_flooding_a_stdout_nobody_reads() {
    let dir = TempDir::new("hostile-serial");
    let kernel = dir.elf("flood.elf", &guests::serial_flood().unwrap());
    let (mut master, slave) = open_pty();
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&slave)
        .unwrap();
    // Standard output is a pipe the test never reads: once its 64 KiB
    // are full, every write to it blocks.
    let mut child = ferrovisor(&kernel, &[])
        .stdin(Stdio::from(tty))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _unread = child.stdout.take().unwrap();
    let err = collect(child.stderr.take().unwrap());
    // Long enough to fill the pipe many times over.
    std::thread::sleep(Duration::from_secs(2));
    assert!(child.try_wait().unwrap().is_none(), "the flood ended early");
    master.write_all(b"\x01x").unwrap();
    let asked = Instant::now();
    let status = wait_for(&mut child, Duration::from_secs(10));
    let took = asked.elapsed();
    let err = err.join().unwrap();
    let status = status.unwrap_or_else(|| panic!("Ctrl-A x did not end the VM; stderr: {err}"));
    eprintln!("Ctrl-A x ended the VM in {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // The user's quit has a status of its own (docs/CLI.md).
    assert_eq!(status.code(), Some(5), "stderr: {err}");
    assert!(
        err.contains("the VM was ended from the console"),
        "stderr: {err}"
    );
    // The refused bytes are counted, not logged one by one.
    assert!(err.lines().count() <= 5, "stderr: {err}");
}
