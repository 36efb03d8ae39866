//! Runs the virtio fuzz harnesses without libFuzzer (stable Rust): random
//! inputs in a loop, or the files given as arguments (to replay what
//! `cargo fuzz` found).
//!
//! `virtio_random [--iterations N] [--seed S] [FILE...]`

use virtio::fuzzing::{run_blk, run_virtqueue, run_vsock_packets, XorShift};

fn main() {
    let mut iterations: u64 = 200_000;
    let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iterations" => iterations = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(seed),
            _ => files.push(a),
        }
    }
    if !files.is_empty() {
        for f in files {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
            let _ = run_virtqueue(&data);
            let _ = run_blk(&data);
            run_vsock_packets(&data);
            println!("{f}: ok");
        }
        return;
    }
    let mut rng = XorShift(seed | 1);
    let (mut ok, mut errors) = (0u64, 0u64);
    for i in 0..iterations {
        let input = rng.input();
        run_vsock_packets(&input);
        for result in [run_virtqueue(&input), run_blk(&input)] {
            match result {
                Ok(()) => ok += 1,
                Err(_) => errors += 1,
            }
        }
        if (i + 1) % 50_000 == 0 {
            println!("{} inputs", i + 1);
        }
    }
    println!("{iterations} inputs: {ok} served, {errors} device errors, no panic");
}
