//! Runs the virtio fuzz harnesses without libFuzzer (stable Rust): random
//! inputs in a loop, or the files given as arguments (to replay what
//! `cargo fuzz` found).
//!
//! `virtio_random [--iterations N] [--seed S] [FILE...]`

use virtio::fuzzing::{run_blk, run_virtqueue, run_vsock_packets, XorShift};

fn main() {
    let (iterations, seed, files) = ferrovisor_fuzz::runner_args(200_000, 0x2545_f491_4f6c_dd1d);
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
