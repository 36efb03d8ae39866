//! What a tracepoint site costs while its event is off: a loop of port
//! writes with a `kvm_pio` site against the same loop without it.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};

fn work(port: u16, v: u32) -> u32 {
    v.wrapping_mul(0x9e37_79b9).rotate_left(u32::from(port & 7))
}

fn bench(c: &mut Criterion) {
    tracepoints::enable("").unwrap();
    let mut g = c.benchmark_group("pio_site_x1000");
    g.bench_function("without_site", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for i in 0..1000u32 {
                acc = work(black_box(0x3f8), acc ^ i);
            }
            acc
        })
    });
    g.bench_function("site_off", |b| {
        b.iter(|| {
            let mut acc = 0u32;
            for i in 0..1000u32 {
                acc = work(black_box(0x3f8), acc ^ i);
                tracepoints::kvm_pio(true, 0x3f8, 1, 1, acc);
            }
            acc
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
