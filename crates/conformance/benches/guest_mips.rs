//! Guest instructions per second on the emu accelerator (and on kvm when it
//! is usable), for four loops (`conformance::loops`): integer arithmetic,
//! a memory copy, calls, and a byte-by-byte string compare. Criterion
//! reports throughput in elements per second, where an element is one
//! guest instruction: "Melem/s" reads as MIPS.
//!
//! `cargo bench -p conformance --bench guest_mips`

use std::time::Duration;

use conformance::loops::{call_loop, integer_loop, memcpy_loop, run, scan_loop};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hv::Hypervisor;

const ITERATIONS: u32 = 2_000_000;

fn bench_backend(c: &mut Criterion, name: &str, hv: &dyn Hypervisor) {
    let mut group = c.benchmark_group(format!("{name} guest MIPS"));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    for l in [
        integer_loop(ITERATIONS),
        memcpy_loop(ITERATIONS),
        call_loop(ITERATIONS),
        scan_loop(ITERATIONS),
    ] {
        group.throughput(Throughput::Elements(l.instructions));
        group.bench_function(l.name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| run(hv, &l)).sum())
        });
    }
    group.finish();
}

fn benches(c: &mut Criterion) {
    bench_backend(c, "emu", &hv_emu::EmuHypervisor::new());
    // kvm here may be a nested, software-backed KVM; only bench it on request.
    if std::env::var("FERROVISOR_BENCH_KVM").is_ok_and(|v| v == "1") {
        match hv_kvm::KvmHypervisor::new() {
            Ok(kvm) => bench_backend(c, "kvm", &kvm),
            Err(e) => eprintln!("kvm not benchmarked: {e}"),
        }
    }
}

criterion_group!(guest_mips, benches);
criterion_main!(guest_mips);
