//! Runs one loop of `conformance::loops` once on the emu accelerator and
//! prints the guest instructions it retired and how long it took:
//!
//!     cargo run --release -p conformance --example guest_loop -- scan 4000000
//!
//! `scripts/host-insns-per-guest-insn` runs it under callgrind, where the
//! host instructions per guest instruction are counted exactly.

fn main() {
    let mut args = std::env::args().skip(1);
    let name = args.next().unwrap_or_else(|| "scan".into());
    let iterations = match args.next().map(|s| s.parse::<u32>()) {
        None => 2_000_000,
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            eprintln!("guest_loop: iterations: {e}");
            std::process::exit(2);
        }
    };
    let Some(l) = conformance::loops::by_name(&name, iterations) else {
        eprintln!("guest_loop: no loop {name:?} (integer, memcpy, call, scan)");
        std::process::exit(2);
    };
    let took = conformance::loops::run(&hv_emu::EmuHypervisor::new(), &l);
    println!(
        "{}: {} guest instructions in {:?} ({:.0} MIPS)",
        l.name,
        l.instructions,
        took,
        l.instructions as f64 / took.as_secs_f64() / 1e6
    );
}
