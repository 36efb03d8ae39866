//! Measures a Firecracker-compatible API server: process start → API
//! socket accepting, idle RSS, and request latency on a kept-alive
//! connection (GET / and PUT /machine-config).
//!
//! ```sh
//! cargo run --release -p api --example bench_api -- target/release/ferrovisor [ARGS...]
//! ```
//! The binary gets `--api-sock PATH` first, then ARGS; any program that
//! takes Firecracker's `--api-sock` works (Firecracker itself too).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use api::client::Client;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<34} median {:>9.1?}  p10 {:>9.1?}  p90 {:>9.1?}  p99 {:>9.1?}  (n={})",
        percentile(&samples, 0.5),
        percentile(&samples, 0.1),
        percentile(&samples, 0.9),
        percentile(&samples, 0.99),
        samples.len()
    );
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((binary, extra)) = args.split_first() else {
        eprintln!("usage: bench_api BINARY [ARGS...]");
        std::process::exit(2);
    };
    let sock = std::env::temp_dir().join(format!("bench-api-{}.sock", std::process::id()));
    let runs = 40;
    let mut starts = Vec::new();
    let mut rss = Vec::new();
    for _ in 0..runs {
        let _ = std::fs::remove_file(&sock);
        let t0 = Instant::now();
        let mut child = Command::new(binary)
            .arg("--api-sock")
            .arg(&sock)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server");
        loop {
            if UnixStream::connect(&sock).is_ok() {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                panic!("the socket never accepted");
            }
            std::thread::sleep(Duration::from_micros(20));
        }
        starts.push(t0.elapsed());
        std::thread::sleep(Duration::from_millis(100));
        if let Some(kib) = rss_kib(child.id()) {
            rss.push(kib);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    summary("start → socket accepting", starts);
    rss.sort();
    println!(
        "{:<34} median {} KiB ({:.2} MiB), max {} KiB",
        "idle RSS",
        rss[rss.len() / 2],
        rss[rss.len() / 2] as f64 / 1024.0,
        rss[rss.len() - 1]
    );

    let _ = std::fs::remove_file(&sock);
    let mut child = Command::new(binary)
        .arg("--api-sock")
        .arg(&sock)
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut client = loop {
        if let Ok(c) = Client::connect(Path::new(&sock)) {
            break c;
        }
        assert!(Instant::now() < deadline, "the socket never accepted");
        std::thread::sleep(Duration::from_micros(50));
    };
    for (name, method, path, body) in [
        ("GET / (kept alive)", "GET", "/", None),
        (
            "PUT /machine-config (kept alive)",
            "PUT",
            "/machine-config",
            Some(r#"{"vcpu_count": 2, "mem_size_mib": 256}"#),
        ),
    ] {
        for _ in 0..500 {
            client.request(method, path, body).unwrap();
        }
        let mut samples = Vec::with_capacity(20_000);
        for _ in 0..20_000 {
            let t = Instant::now();
            let r = client.request(method, path, body).unwrap();
            samples.push(t.elapsed());
            assert!(r.status < 300, "{name}: {} {}", r.status, r.body);
        }
        summary(name, samples);
    }
    if let Some(kib) = rss_kib(child.id()) {
        println!("{:<34} {} KiB after 41,000 requests", "RSS", kib);
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&sock);
}
