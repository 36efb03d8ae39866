//! InstanceStart → the guest's first serial byte (issue 10, point 8):
//! a ferrovisor started with Firecracker's options is given the tiny echo
//! guest (prints "echo ready" on COM1 first thing) through the API, then
//! `InstanceStart` is sent and the time is taken when the answer arrives
//! and when the first byte of the guest's output reaches standard output.
//!
//!   cargo run --release -p ferrovisor --example bench_instance_start -- \
//!       BINARY [--runs N] [--accel kvm|emu]...
//!
//! `scripts/bench-instance-start` runs it on the release and shipped builds.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use api::client::Client;

struct Sample {
    answered: Duration,
    first_byte: Duration,
}

fn one_run(binary: &Path, accel: &str, dir: &Path, kernel: &Path) -> Result<Sample, String> {
    let sock = dir.join("api.sock");
    let _ = std::fs::remove_file(&sock);
    let mut child = Command::new(binary)
        .arg("--api-sock")
        .arg(&sock)
        .args(["--accel", accel])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
    let result = (|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut client = loop {
            if let Ok(c) = Client::connect(&sock) {
                break c;
            }
            if Instant::now() > deadline {
                return Err("the API socket never accepted".to_string());
            }
            std::thread::sleep(Duration::from_micros(200));
        };
        let mut put = |path: &str, body: &str| -> Result<(), String> {
            let r = client
                .request("PUT", path, Some(body))
                .map_err(|e| format!("PUT {path}: {e}"))?;
            if r.status >= 300 {
                return Err(format!("PUT {path}: {} {}", r.status, r.body));
            }
            Ok(())
        };
        put(
            "/boot-source",
            &format!(r#"{{"kernel_image_path": "{}"}}"#, kernel.display()),
        )?;
        put(
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 32}"#,
        )?;
        let mut stdout = child.stdout.take().ok_or("no standard output")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut byte = [0u8; 1];
            if matches!(stdout.read(&mut byte), Ok(1)) {
                let _ = tx.send(Instant::now());
            }
            // Keep draining so the guest never blocks on a full pipe.
            let mut sink = [0u8; 4096];
            while matches!(stdout.read(&mut sink), Ok(n) if n > 0) {}
        });
        let t0 = Instant::now();
        put("/actions", r#"{"action_type": "InstanceStart"}"#)?;
        let answered = t0.elapsed();
        let first = rx
            .recv_timeout(Duration::from_secs(10))
            .map_err(|_| "no guest output within 10 s".to_string())?;
        Ok(Sample {
            answered,
            first_byte: first.duration_since(t0),
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

fn median(mut v: Vec<Duration>) -> (Duration, Duration, Duration) {
    v.sort();
    (v[0], v[v.len() / 2], v[v.len() - 1])
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(binary) = args.next().map(PathBuf::from) else {
        eprintln!("usage: bench_instance_start BINARY [--runs N] [--accel kvm|emu]...");
        std::process::exit(2);
    };
    let mut runs = 20;
    let mut accels = Vec::new();
    while let Some(a) = args.next() {
        match (a.as_str(), args.next()) {
            ("--runs", Some(n)) => runs = n.parse().expect("--runs N"),
            ("--accel", Some(x)) => accels.push(x),
            _ => {
                eprintln!("unknown argument {a}");
                std::process::exit(2);
            }
        }
    }
    if accels.is_empty() {
        accels = vec!["kvm".into(), "emu".into()];
    }
    let dir = std::env::temp_dir().join(format!("fv-bench-start-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temporary directory");
    let program = guests::echo().expect("the echo guest");
    let kernel = dir.join("echo.elf");
    let image =
        arch::elf_builder::build_elf64(&[(program.load_addr, &program.code)], program.load_addr);
    std::fs::write(&kernel, image).expect("write the echo guest");
    for accel in &accels {
        let mut answered = Vec::new();
        let mut first = Vec::new();
        for _ in 0..runs {
            match one_run(&binary, accel, &dir, &kernel) {
                Ok(s) => {
                    answered.push(s.answered);
                    first.push(s.first_byte);
                }
                Err(e) => {
                    eprintln!("{accel}: {e}");
                    break;
                }
            }
        }
        if first.is_empty() {
            continue;
        }
        let n = first.len();
        let (a0, a1, a2) = median(answered);
        let (f0, f1, f2) = median(first);
        println!(
            "{accel}: InstanceStart answered  median {a1:>8.2?} (min {a0:.2?}, max {a2:.2?}); \
             first serial byte median {f1:>8.2?} (min {f0:.2?}, max {f2:.2?}), n={n}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
