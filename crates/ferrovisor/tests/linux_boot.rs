//! End to end: the Debian test guest (scripts/build-test-guest) boots on
//! the emu accelerator, runs commands, and powers off with status 0.
//!
//! The guest is looked for in `$FERROVISOR_GUEST_DIR`, else
//! `${FERROVISOR_CACHE:-$HOME/.cache/ferrovisor}/guest`. Without it the
//! tests report SKIPPED, or fail when `FERROVISOR_REQUIRE_GUEST=1` (as the
//! test script sets after building the guest).

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A boot that takes longer than this has hung.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

struct Guest {
    kernel: PathBuf,
    initrd: PathBuf,
}

fn guest() -> Option<Guest> {
    let dir = match std::env::var_os("FERROVISOR_GUEST_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let cache = std::env::var_os("FERROVISOR_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/ferrovisor"))
                })
                .unwrap_or_else(|| PathBuf::from("/nonexistent"));
            cache.join("guest")
        }
    };
    let guest = Guest {
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initramfs.cpio"),
    };
    if guest.kernel.is_file() && guest.initrd.is_file() {
        return Some(guest);
    }
    conformance::skip_or_fail(
        "guest",
        &format!(
            "no test guest in {} (run scripts/build-test-guest)",
            dir.display()
        ),
    );
    None
}

struct Boot {
    status: Option<i32>,
    console: String,
}

impl Boot {
    fn tail(&self) -> String {
        let lines: Vec<&str> = self.console.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Panics with the console tail unless `text` was printed.
    fn expect(&self, text: &str) {
        assert!(
            self.console.contains(text),
            "the console lacks {text:?}; its tail:\n{}",
            self.tail()
        );
    }
}

/// Boots the guest with `script` as its command, on `cpus` vCPUs.
fn boot(guest: &Guest, cpus: u32, script: &str) -> Boot {
    let encoded = base64(script.as_bytes());
    let cmdline = format!("console=ttyS0 quiet panic=-1 ferrovisor.cmd={encoded}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--accel", "emu", "--memory", "256M"])
        .args(["--cpus", &cpus.to_string()])
        .arg("--kernel")
        .arg(&guest.kernel)
        .arg("--initrd")
        .arg(&guest.initrd)
        .args(["--cmdline", &cmdline])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ferrovisor");
    let mut stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut all = Vec::new();
        let _ = stdout.read_to_end(&mut all);
        let _ = tx.send(all);
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status.code();
        }
        if started.elapsed() > BOOT_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let console = rx.recv_timeout(Duration::from_secs(5)).unwrap_or_default();
            panic!(
                "the guest did not power off within {BOOT_TIMEOUT:?}; console tail:\n{}",
                String::from_utf8_lossy(&console)
                    .lines()
                    .rev()
                    .take(40)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let console = rx.recv_timeout(Duration::from_secs(10)).unwrap_or_default();
    let console = String::from_utf8_lossy(&console).replace('\r', "");
    Boot { status, console }
}

fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_standard_alphabet() {
    assert_eq!(base64(b"echo hi"), "ZWNobyBoaQ==");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b"abc"), "YWJj");
}

#[test]
fn linux_boots_runs_commands_and_powers_off_on_one_vcpu() {
    let Some(guest) = guest() else { return };
    let b = boot(
        &guest,
        1,
        "echo sum=$((40 + 2)); uname -sr; grep -c ^processor /proc/cpuinfo; \
         head -c 4096 /dev/urandom | wc -c; sleep 2; echo epoch=$(date +%s)",
    );
    // Guest time runs at wall-clock rate: the clock the guest set from the
    // RTC at boot still agrees with the host's after the whole boot.
    let host_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let guest_epoch: i64 = b
        .console
        .lines()
        .find_map(|l| l.strip_prefix("epoch="))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no epoch line; tail:\n{}", b.tail()));
    assert!(
        (host_now - guest_epoch).abs() <= 3,
        "guest clock {guest_epoch} vs host {host_now}"
    );
    b.expect("FERROVISOR-GUEST-READY");
    b.expect("sum=42");
    b.expect("Linux 6.");
    b.expect("\n1\n");
    b.expect("\n4096\n");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(
        b.status,
        Some(0),
        "exit status; console tail:\n{}",
        b.tail()
    );
}

#[test]
fn linux_brings_every_vcpu_online() {
    let Some(guest) = guest() else { return };
    let b = boot(
        &guest,
        2,
        "echo online=$(cat /sys/devices/system/cpu/online); \
         echo cpus=$(grep -c ^processor /proc/cpuinfo); exit 3",
    );
    b.expect("online=0-1");
    b.expect("cpus=2");
    // The command's status reaches the console; poweroff is still clean.
    b.expect("FERROVISOR-CMD-EXIT=3");
    assert_eq!(
        b.status,
        Some(0),
        "exit status; console tail:\n{}",
        b.tail()
    );
}

#[test]
fn demo_boots_linux_and_powers_off() {
    if guest().is_none() {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["demo", "--accel", "emu"])
        .stdin(Stdio::null())
        .output()
        .expect("run the demo");
    let console = String::from_utf8_lossy(&out.stdout).replace('\r', "");
    let tail: Vec<&str> = console.lines().rev().take(30).collect();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for text in [
        "== Hello from Linux on Ferrovisor ==",
        "CPUs online:  0-1",
        "Primes below 50: 2 3 5 7 11 13 17 19 23 29 31 37 41 43 47",
        "FERROVISOR-CMD-EXIT=0",
    ] {
        assert!(console.contains(text), "{text:?} missing; tail: {tail:?}");
    }
}

#[test]
fn linux_brings_four_vcpus_online() {
    let Some(guest) = guest() else { return };
    let b = boot(
        &guest,
        4,
        "echo online=$(cat /sys/devices/system/cpu/online); \
         echo cpus=$(grep -c ^processor /proc/cpuinfo)",
    );
    b.expect("online=0-3");
    b.expect("cpus=4");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(
        b.status,
        Some(0),
        "exit status; console tail:\n{}",
        b.tail()
    );
}
