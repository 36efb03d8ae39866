//! End to end: the Debian test guest (scripts/build-test-guest) uses
//! virtio-mmio devices with its own drivers on the emu accelerator: a disk
//! it reads and writes, a read-only disk, and the entropy device.
//!
//! The boot helpers are copied from linux_boot.rs (guest lookup, SKIPPED
//! without a guest unless `FERROVISOR_REQUIRE_GUEST=1`).

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

/// Boots the guest with `script` as its command, on `cpus` vCPUs, with
/// `extra` arguments for `ferrovisor run`.
fn boot(guest: &Guest, cpus: u32, script: &str, extra: &[&str]) -> Boot {
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
        .args(extra)
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

/// The byte at `offset` of the test images.
fn pattern(offset: usize) -> u8 {
    (offset.wrapping_mul(7).wrapping_add(offset >> 9)) as u8
}

fn image(name: &str, len: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrovisor-virtio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let data: Vec<u8> = (0..len).map(pattern).collect();
    std::fs::write(&path, data).unwrap();
    path
}

fn host_sha256(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn linux_reads_and_writes_a_virtio_disk_and_cannot_write_a_read_only_one() {
    let Some(guest) = guest() else { return };
    let len = 4 << 20;
    let rw = image("rw.img", len);
    let ro = image("ro.img", len);
    let rw_sum = host_sha256(&rw);
    let ro_sum = host_sha256(&ro);
    let rw_arg = format!("path={},id=data0", rw.display());
    let ro_arg = format!("path={},readonly=on", ro.display());
    let b = boot(
        &guest,
        1,
        "echo size=$(cat /sys/block/vda/size) ro=$(cat /sys/block/vdb/ro); \
         echo serial=$(cat /sys/block/vda/serial); \
         sha256sum /dev/vda /dev/vdb; \
         head -c 8192 /dev/zero | tr '\\0' Z | dd of=/dev/vda bs=4096 seek=3 conv=fsync 2>/dev/null \
           && echo rw-write=ok; \
         if head -c 512 /dev/zero | dd of=/dev/vdb bs=512 conv=fsync 2>/dev/null; \
           then echo ro-write=ok; else echo ro-write=refused; fi; \
         sync",
        &["--disk", &rw_arg, "--disk", &ro_arg],
    );
    b.expect(&format!("size={} ro=1", len / 512));
    b.expect("serial=data0");
    b.expect(&format!("{rw_sum}  /dev/vda"));
    b.expect(&format!("{ro_sum}  /dev/vdb"));
    b.expect("rw-write=ok");
    b.expect("ro-write=refused");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());

    // Exactly the bytes the guest wrote changed.
    let data = std::fs::read(&rw).unwrap();
    assert_eq!(data.len(), len);
    for (i, &byte) in data.iter().enumerate() {
        let want = if (3 * 4096..5 * 4096).contains(&i) {
            b'Z'
        } else {
            pattern(i)
        };
        assert_eq!(byte, want, "byte {i:#x} of the disk image");
    }
    assert_eq!(host_sha256(&ro), ro_sum, "the read-only image changed");
    let _ = std::fs::remove_dir_all(rw.parent().unwrap());
}

#[test]
fn linux_reads_entropy_from_virtio_rng() {
    let Some(guest) = guest() else { return };
    let b = boot(
        &guest,
        1,
        "echo rng=$(cat /sys/class/misc/hw_random/rng_current); \
         echo bytes=$(head -c 64 /dev/hwrng | wc -c)",
        &["--rng"],
    );
    b.expect("rng=virtio_rng");
    b.expect("bytes=64");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());
}

#[test]
fn disk_errors_are_one_line() {
    let Some(guest) = guest() else { return };
    let run = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
            .args(["run", "--accel", "emu", "--kernel"])
            .arg(&guest.kernel)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("run ferrovisor");
        let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
        assert_ne!(out.status.code(), Some(0), "{extra:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
        err
    };
    let err = run(&["--disk", "path=/nonexistent/disk.img"]);
    assert!(err.contains("/nonexistent/disk.img"), "{err}");
    let err = run(&["--disk", "path=/a.img,cache=none"]);
    assert!(err.contains("unknown option 'cache'"), "{err}");
    let err = run(&["--disk", "path=/a.img,id=x", "--disk", "path=/b.img,id=x"]);
    assert!(err.contains("id=x"), "{err}");
}
