//! The virtio devices on both accelerators, through the real binary, with
//! the tiny bare-metal drivers of `guests::virtio` instead of Linux (which
//! cannot boot on this host's slow nested /dev/kvm in reasonable time).
//! Each run goes through the virtio-mmio transport, the QueueNotify
//! ioeventfd, the device's worker thread and the level-triggered interrupt
//! through the accelerator's IOAPIC and LAPIC.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use guests::virtio::{Driver, EXIT_OK};

/// Far more than a run needs (a few milliseconds on either accelerator).
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

/// The exit status of a driver that saw everything it expected.
const STATUS_OK: i32 = (EXIT_OK << 1 | 1) as i32;

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "ferrovisor-virtio-tiny-{name}-{}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }

    fn elf(&self, name: &str, driver: &Driver) -> PathBuf {
        let p = &driver.program;
        self.file(
            name,
            &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
        )
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a run of the binary printed and how it ended.
struct Run {
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// The vCPU 0 cell of the `--stats` row `reason`, if a number.
    fn stat(&self, reason: &str) -> Option<u64> {
        let row = self
            .stderr
            .lines()
            .find(|l| l.split_whitespace().next() == Some(reason))?;
        row.split_whitespace().nth(1)?.parse().ok()
    }
}

/// Runs the bare ELF `kernel` on `accel` with `extra` arguments and
/// `--stats`; kills it if it does not end within [`RUN_TIMEOUT`].
fn run(accel: &str, kernel: &Path, extra: &[&str]) -> Run {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--accel", accel, "--boot", "bare", "--memory", "64M"])
        .arg("--kernel")
        .arg(kernel)
        .arg("--stats")
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ferrovisor");
    // Drain the pipes on threads so that the child never blocks on them.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{accel}: the guest did not end within {RUN_TIMEOUT:?}; stdout: {:?}",
                out.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        status: status.code(),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// Runs `driver` on every accelerator with the device arguments `device`
/// and checks its line, its status and what the MMIO exits show.
fn check_driver(dir: &TempDir, driver: &Driver, device: &[&str], expected_line: &str) {
    let kernel = dir.elf("driver.elf", driver);
    for accel in common::accels() {
        let r = run(accel, &kernel, device);
        assert_eq!(
            r.status,
            Some(STATUS_OK),
            "{accel}: stdout {:?}, stderr {}",
            r.stdout,
            r.stderr
        );
        assert_eq!(r.stdout, expected_line, "{accel}: stderr {}", r.stderr);
        let mmio = r
            .stat("mmio")
            .unwrap_or_else(|| panic!("{accel}: no mmio count in {}", r.stderr));
        match accel {
            // The in-kernel irqchip takes the LAPIC and IOAPIC accesses and
            // the QueueNotify ioeventfd takes the notification: what exits
            // to the VMM is exactly the driver's other register accesses.
            // One more would be the notification going through the VMM.
            "kvm" => assert_eq!(
                mmio, driver.register_accesses as u64,
                "kvm: MMIO exits besides the driver's register accesses (the \
                 QueueNotify ioeventfd was not used?): {}",
                r.stderr
            ),
            // emu counts every MMIO access it decodes, the notification
            // its ioeventfd takes and the irqchip's included.
            _ => assert!(
                mmio > driver.register_accesses as u64,
                "{accel}: {}",
                r.stderr
            ),
        }
        // One interrupt, where the accelerator counts injections.
        if let Some(injections) = r.stat("irq_injection") {
            assert_eq!(injections, 1, "{accel}: {}", r.stderr);
        }
    }
}

/// The entropy device fills a 64-byte buffer and interrupts once.
#[test]
fn rng_driver_reads_64_bytes_on_each_accelerator() {
    let dir = TempDir::new("rng");
    let driver = guests::virtio::rng_driver().unwrap();
    check_driver(&dir, &driver, &["--rng"], "virtio-rng: 64 bytes\n");
}

/// The block device reads sector 0 of the image through a 3-descriptor
/// chain (header, data, status); the guest's checksum matches the host's.
#[test]
fn blk_driver_reads_sector_0_on_each_accelerator() {
    let dir = TempDir::new("blk");
    let mut image = vec![0u8; 64 << 10];
    for (i, b) in image.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(131).wrapping_add(i as u32 >> 9) as u8;
    }
    let sector: &[u8; 512] = image[..512].try_into().unwrap();
    let line = format!(
        "virtio-blk: sector 0 sum {:016x}\n",
        guests::virtio::sector_sum(sector)
    );
    let img = dir.file("disk.img", &image);
    let disk = format!("path={},readonly=on", img.to_str().unwrap());
    let driver = guests::virtio::blk_driver().unwrap();
    check_driver(&dir, &driver, &["--disk", &disk], &line);
}

/// The drivers' checks are live: without a device the magic value check
/// fails; against another device type the device ID check does.
#[test]
fn drivers_report_a_missing_or_wrong_device() {
    let dir = TempDir::new("wrong");
    let rng = dir.elf("rng.elf", &guests::virtio::rng_driver().unwrap());
    let blk = dir.elf("blk.elf", &guests::virtio::blk_driver().unwrap());
    for accel in common::accels() {
        let r = run(accel, &rng, &[]);
        assert_eq!(r.stdout, "virtio: check 01 failed\n", "{accel}");
        assert_eq!(r.status, Some(1 << 1 | 1), "{accel}");
        let r = run(accel, &blk, &["--rng"]);
        assert_eq!(r.stdout, "virtio: check 03 failed\n", "{accel}");
        assert_eq!(r.status, Some(3 << 1 | 1), "{accel}");
    }
}

/// With a disk in the first slot, the entropy device is the second: the
/// next 4 KiB window and the next GSI of the machine's table
/// (vmm::board's VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE and VIRTIO_IRQS).
#[test]
fn rng_driver_finds_the_device_in_the_second_slot() {
    let dir = TempDir::new("slot1");
    let img = dir.file("disk.img", &[0u8; 4096]);
    let disk = format!("path={},readonly=on", img.to_str().unwrap());
    let slot = guests::virtio::Slot {
        base: guests::virtio::FIRST_SLOT.base + 0x1000,
        gsi: 6,
    };
    let driver = guests::virtio::rng_driver_at(slot).unwrap();
    check_driver(
        &dir,
        &driver,
        &["--disk", &disk, "--rng"],
        "virtio-rng: 64 bytes\n",
    );
}
