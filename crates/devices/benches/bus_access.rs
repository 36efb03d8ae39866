//! What a guest port access costs on the bus (lookup, the device's lock,
//! the access counters), alone and while another thread (another vCPU)
//! hammers a different device on the same bus.
//!
//! Measured 2026-12-05 on the 2-core dev VM (ns per read, 1000 reads):
//! without access counters 14.3 alone / 23.5 beside another vCPU; one
//! counter pair for the whole bus 18.5 / 33-55 (the line bounces between
//! the vCPUs); a pair per device (what is kept) 18.8 / 25.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use criterion::{criterion_group, criterion_main, Criterion};
use devices::{Bus, BusDevice};

struct Port(u8);

impl BusDevice for Port {
    fn read(&mut self, _offset: u64, data: &mut [u8]) {
        data.fill(self.0);
    }
    fn write(&mut self, _offset: u64, data: &[u8]) {
        self.0 = data[0];
    }
}

fn bus() -> Arc<Bus> {
    let mut bus = Bus::new("pio");
    bus.insert("a", 0x3f8, 8, Arc::new(Mutex::new(Port(1))))
        .unwrap();
    bus.insert("b", 0x2f8, 8, Arc::new(Mutex::new(Port(2))))
        .unwrap();
    Arc::new(bus)
}

fn reads(bus: &Bus) -> u32 {
    let mut acc = 0u32;
    let mut b = [0u8];
    for _ in 0..1000 {
        bus.read(black_box(0x3f8), &mut b);
        acc = acc.wrapping_add(u32::from(b[0]));
    }
    acc
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("bus_read_x1000");
    let alone = bus();
    g.bench_function("alone", |b| b.iter(|| reads(&alone)));
    let shared = bus();
    let stop = Arc::new(AtomicBool::new(false));
    let other = {
        let (bus, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut b = [0u8];
            while !stop.load(Ordering::Relaxed) {
                bus.write(black_box(0x2f8), &[3]);
                bus.read(black_box(0x2f8), &mut b);
            }
        })
    };
    g.bench_function("beside_another_vcpu", |b| b.iter(|| reads(&shared)));
    stop.store(true, Ordering::Relaxed);
    other.join().unwrap();
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
