//! Disk images (issue 13): what may be a disk, who may share one, and
//! what a guest's flush guarantees.
//!
//! - Only regular files and block devices: a directory, a FIFO or a
//!   character device is refused (read-only too) with one error naming
//!   the file, exit status 1.
//! - Advisory locks (QEMU's OFD byte locks): a writable image belongs to
//!   one disk of one VM; read-only images are shared. The VM already
//!   running is untouched by a second one that is refused.
//! - A flush the guest saw complete is on the image when the VMM is
//!   killed (SIGKILL); SIGTERM ends the VM with its writes on the image.
//!
//! The lock and kind tests run the tiny bare-metal guests of
//! crates/guests on emu; the flush tests the Linux test guest (SKIPPED
//! without one unless `FERROVISOR_REQUIRE_GUEST=1`).

mod common;

use common::TempDir;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// `--disk` arguments: each image, read-only or not.
fn disks(images: &[(&Path, bool)]) -> Vec<String> {
    images
        .iter()
        .flat_map(|(path, read_only)| {
            let ro = if *read_only { ",readonly=on" } else { "" };
            ["--disk".to_string(), format!("path={}{ro}", path.display())]
        })
        .collect()
}

/// A child's output, read on a thread, chunk by chunk.
struct Output(mpsc::Receiver<Vec<u8>>, Vec<u8>);

impl Output {
    fn new(mut pipe: impl Read + Send + 'static) -> Output {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        Output(rx, Vec::new())
    }

    /// Waits (at most `limit`) until `text` was printed.
    fn wait_for(&mut self, text: &str, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if String::from_utf8_lossy(&self.1).contains(text) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.0.recv_timeout(left) {
                Ok(chunk) => self.1.extend_from_slice(&chunk),
                Err(_) => return false,
            }
        }
    }

    /// Everything, once the child ended.
    fn rest(mut self) -> String {
        while let Ok(chunk) = self.0.recv_timeout(Duration::from_secs(10)) {
            self.1.extend_from_slice(&chunk);
        }
        String::from_utf8_lossy(&self.1).replace('\r', "")
    }
}

/// A running ferrovisor.
struct Vm {
    child: Child,
    stdin: Option<ChildStdin>,
    out: Output,
    err: Output,
}

impl Vm {
    /// `ferrovisor run` of the bare ELF `kernel` on emu with `extra`.
    fn bare(kernel: &Path, extra: &[String]) -> Vm {
        let mut c = Command::new(env!("CARGO_BIN_EXE_ferrovisor"));
        c.args(["run", "--accel", "emu", "--boot", "bare", "--memory", "64M"])
            .arg("--kernel")
            .arg(kernel)
            .args(extra);
        Vm::spawn(c)
    }

    fn spawn(mut c: Command) -> Vm {
        let mut child = c
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ferrovisor");
        let stdin = child.stdin.take();
        let out = Output::new(child.stdout.take().unwrap());
        let err = Output::new(child.stderr.take().unwrap());
        Vm {
            child,
            stdin,
            out,
            err,
        }
    }

    /// Waits for the end (killed after `limit`): status, stdout, stderr.
    fn end(mut self, limit: Duration) -> (Option<i32>, String, String) {
        drop(self.stdin.take());
        let start = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status.code();
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let Vm { out, err, .. } = self;
        (status, out.rest(), err.rest())
    }
}

/// A VM that must be refused before it starts: exit status 1 and one
/// line naming `path` that contains `what`.
fn assert_refused(kernel: &Path, extra: &[String], path: &Path, what: &str) {
    let (status, out, err) = Vm::bare(kernel, extra).end(Duration::from_secs(30));
    assert_eq!(status, Some(1), "{extra:?}: stdout {out:?}, stderr {err:?}");
    assert_eq!(out, "", "{extra:?}: the guest ran");
    assert_eq!(err.lines().count(), 1, "{extra:?}: {err}");
    assert!(
        err.contains(&path.display().to_string()) && err.contains(what),
        "{extra:?}: {err}"
    );
}

/// The echo guest (prints "echo ready", echoes until `q`) running on
/// emu with `images`.
fn echo_vm(dir: &TempDir, images: &[(&Path, bool)]) -> Vm {
    let kernel = dir.elf("echo.elf", &guests::echo().unwrap());
    let mut vm = Vm::bare(&kernel, &disks(images));
    assert!(
        vm.out.wait_for("echo ready\n", Duration::from_secs(30)),
        "the echo guest did not start"
    );
    vm
}

/// The echo guest still answers, then ends as it should.
fn assert_still_running(mut vm: Vm) {
    let stdin = vm.stdin.as_mut().unwrap();
    stdin.write_all(b"alive").unwrap();
    stdin.flush().unwrap();
    assert!(vm.out.wait_for("alive", Duration::from_secs(30)));
    vm.stdin.as_mut().unwrap().write_all(b"q").unwrap();
    let (status, out, err) = vm.end(Duration::from_secs(30));
    // Debug exit with 0: status 0 << 1 | 1.
    assert_eq!(status, Some(1), "stdout {out:?}, stderr {err:?}");
    assert_eq!(out, "echo ready\nalive");
}

#[test]
fn a_writable_image_belongs_to_one_vm_and_the_first_runs_on() {
    let dir = TempDir::new("disk-image-two-vms");
    let img = dir.file("disk.img", &[0u8; 64 << 10]);
    let other = dir.elf("other.elf", &guests::print_and_exit("ran\n", 0).unwrap());
    let first = echo_vm(&dir, &[(&img, false)]);
    for read_only in [false, true] {
        assert_refused(&other, &disks(&[(&img, read_only)]), &img, "is in use");
    }
    assert_still_running(first);
    // A read-only user keeps writers out too.
    let reader = echo_vm(&dir, &[(&img, true)]);
    assert_refused(&other, &disks(&[(&img, false)]), &img, "allows no writer");
    assert_still_running(reader);
}

#[test]
fn one_vm_cannot_have_a_writable_image_twice() {
    let dir = TempDir::new("disk-image-twice");
    let img = dir.file("disk.img", &[0u8; 64 << 10]);
    let kernel = dir.elf("ok.elf", &guests::print_and_exit("ran\n", 0).unwrap());
    for pair in [[false, false], [false, true], [true, false]] {
        assert_refused(
            &kernel,
            &disks(&[(&img, pair[0]), (&img, pair[1])]),
            &img,
            "is in use",
        );
    }
}

#[test]
fn read_only_images_are_shared() {
    let dir = TempDir::new("disk-image-shared");
    let img = dir.file("disk.img", &[0u8; 64 << 10]);
    let kernel = dir.elf("ok.elf", &guests::print_and_exit("ran\n", 0).unwrap());
    let first = echo_vm(&dir, &[(&img, true)]);
    // Another VM, with the image twice.
    let (status, out, err) =
        Vm::bare(&kernel, &disks(&[(&img, true), (&img, true)])).end(Duration::from_secs(30));
    assert_eq!((status, out.as_str()), (Some(1), "ran\n"), "stderr {err:?}");
    assert_still_running(first);
}

#[test]
fn directories_fifos_and_character_devices_are_not_disks() {
    let dir = TempDir::new("disk-image-kinds");
    let kernel = dir.elf("ok.elf", &guests::print_and_exit("ran\n", 0).unwrap());
    let fifo = dir.0.join("fifo");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    let subdir = dir.0.join("subdir");
    std::fs::create_dir(&subdir).unwrap();
    for (path, kind) in [
        (subdir.as_path(), "is a directory"),
        (fifo.as_path(), "is a FIFO"),
        (Path::new("/dev/zero"), "is a character device"),
    ] {
        for read_only in [false, true] {
            assert_refused(&kernel, &disks(&[(path, read_only)]), path, kind);
        }
    }
}

/// What the Linux guest writes at 1 MiB into its disk: `len` bytes of
/// "ferrovisor-durability\n" repeated (as `yes | head -c` makes them).
fn durable_pattern(len: usize) -> Vec<u8> {
    b"ferrovisor-durability\n"
        .iter()
        .copied()
        .cycle()
        .take(len)
        .collect()
}

const DURABLE_LEN: usize = 1 << 20;
const DURABLE_AT: usize = 1 << 20;

/// Boots the Linux guest with a writable 4 MiB zeroed image; `write` is
/// the dd option that makes the write durable, then the guest prints
/// DURABLE-MARKER and waits. Returns the VM once the marker is seen.
fn linux_writing(guest: &common::Guest, img: &Path, how: &str) -> Vm {
    let script = format!(
        "yes ferrovisor-durability | head -c {DURABLE_LEN} >/tmp/d && \
         dd if=/tmp/d of=/dev/vda bs=64k seek={} {how} 2>/dev/null && \
         echo DURABLE-MARKER; sleep 600",
        DURABLE_AT / (64 << 10)
    );
    let cmdline = format!(
        "{} ferrovisor.cmd={}",
        common::CMDLINE,
        common::base64(script.as_bytes())
    );
    let mut c = Command::new(env!("CARGO_BIN_EXE_ferrovisor"));
    c.args(["run", "--accel", "emu", "--memory", "256M", "--cpus", "1"])
        .arg("--kernel")
        .arg(&guest.kernel)
        .arg("--initrd")
        .arg(&guest.initrd)
        .args(["--cmdline", &cmdline])
        .args(disks(&[(img, false)]));
    let mut vm = Vm::spawn(c);
    if !vm.out.wait_for("DURABLE-MARKER", common::BOOT_TIMEOUT) {
        let (_, out, err) = vm.end(Duration::from_secs(1));
        panic!(
            "no DURABLE-MARKER; console tail:\n{}\nstderr: {err}",
            &out[out.len().saturating_sub(3000)..]
        );
    }
    vm
}

fn assert_written(img: &Path) {
    let data = std::fs::read(img).unwrap();
    assert_eq!(data.len(), 4 << 20);
    let written = &data[DURABLE_AT..DURABLE_AT + DURABLE_LEN];
    let want = durable_pattern(DURABLE_LEN);
    if let Some(i) = (0..DURABLE_LEN).find(|&i| written[i] != want[i]) {
        panic!("byte {:#x} of the image was not written", DURABLE_AT + i);
    }
    assert!(data[..DURABLE_AT].iter().all(|&b| b == 0));
    assert!(data[DURABLE_AT + DURABLE_LEN..].iter().all(|&b| b == 0));
}

#[test]
fn data_the_guest_flushed_survives_sigkill() {
    let Some(guest) = common::guest() else { return };
    let dir = TempDir::new("disk-image-sigkill");
    let img = dir.file("disk.img", &vec![0u8; 4 << 20]);
    let mut vm = linux_writing(&guest, &img, "conv=fsync");
    vm.child.kill().unwrap();
    let (status, _, _) = vm.end(Duration::from_secs(30));
    assert_eq!(status, None, "killed by SIGKILL");
    assert_written(&img);
}

#[test]
fn sigterm_ends_the_vm_with_its_writes_on_the_image() {
    let Some(guest) = common::guest() else { return };
    let dir = TempDir::new("disk-image-sigterm");
    let img = dir.file("disk.img", &vec![0u8; 4 << 20]);
    // O_DIRECT: the writes reach the device, no flush asked.
    let vm = linux_writing(&guest, &img, "oflag=direct");
    common::signal(&vm.child, libc::SIGTERM);
    let (status, _, err) = vm.end(Duration::from_secs(30));
    assert_eq!(status, Some(143), "stderr: {err}");
    assert_written(&img);
}
