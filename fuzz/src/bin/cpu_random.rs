//! Runs the CPU fuzz harness without libFuzzer (stable Rust): on random
//! inputs in a loop, or on the files given as arguments (to replay crashes
//! that `cargo fuzz` found).
//!
//! `cpu_random [--iterations N] [--seed S] [FILE...]`; with
//! `FERROVISOR_FUZZ_ENGINE=jit`, the `jit` target's runs instead.

fn main() {
    let (iterations, seed, files) = ferrovisor_fuzz::runner_args(100_000, 0x9e37_79b9_7f4a_7c15);
    let run: fn(&[u8]) = match std::env::var("FERROVISOR_FUZZ_ENGINE").as_deref() {
        Ok("jit") => ferrovisor_fuzz::run_jit,
        _ => ferrovisor_fuzz::run_cpu,
    };
    if !files.is_empty() {
        for f in files {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
            run(&data);
            println!("{f}: ok");
        }
        return;
    }
    let mut rng = seed | 1;
    let mut next = || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut input = Vec::new();
    for i in 0..iterations {
        input.clear();
        let len = 17 + (next() % 300) as usize;
        for _ in 0..len {
            let r = next();
            // Common opcode and prefix bytes now and then, to get past
            // the first instruction more often.
            input.push(if r & 3 == 0 {
                ferrovisor_fuzz::COMMON_BYTES
                    [(r >> 8) as usize % ferrovisor_fuzz::COMMON_BYTES.len()]
            } else {
                (r >> 16) as u8
            });
        }
        run(&input);
        if (i + 1) % 10_000 == 0 {
            println!("{} inputs", i + 1);
        }
    }
    println!("{iterations} inputs, no panic");
}
