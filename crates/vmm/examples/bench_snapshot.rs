//! Snapshot figures (issue 12, point 5): time to create a full and a diff
//! snapshot of a running guest (256 MiB unless MIB says), and restore →
//! guest running (the state file read and checked, the memory file mapped, the machine built
//! and its vCPUs started), for the tiny ticker guest; the same restore
//! with the memory served through userfaultfd by a page server (the
//! `userfault` library `uffd-handler` runs, here on a thread of the
//! process, over a Unix socket), and for both the time until the restored
//! guest's first port access (it runs on, pages faulted in).
//!
//!   cargo run --release -p vmm --example bench_snapshot -- [emu|kvm] [RUNS] [DIR] [MIB]
//!
//! DIR (default: the temporary directory) holds the memory files.

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use vmm::snapshot::{CreateSnapshot, MemoryBackend, RestoreOptions, SnapshotFile, SnapshotKind};
use vmm::{Accel, Command, ConsoleOutput, Machine, MachineConfig};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn create(handle: &vmm::MachineHandle, dir: &Path, name: &str, kind: SnapshotKind) -> Duration {
    let request = CreateSnapshot {
        state_path: dir.join(format!("{name}.state")),
        mem_path: dir.join(format!("{name}.mem")),
        kind,
        spec_json: "{}".into(),
    };
    let started = Instant::now();
    handle
        .send(Command::CreateSnapshot(request))
        .expect("create the snapshot");
    started.elapsed()
}

fn allocated(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path)
        .map(|m| m.blocks() * 512)
        .unwrap_or(0)
}

/// Waits until the restored guest makes a port access (it prints on).
fn wait_guest_runs(running: &vmm::RunningMachine) {
    let live = running.live_stats();
    let before = live.sample().pio_accesses;
    let deadline = Instant::now() + Duration::from_secs(5);
    while live.sample().pio_accesses == before {
        assert!(Instant::now() < deadline, "the restored guest does not run");
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Restores `dir/full.*` with its memory served by a page server on a
/// thread; returns (vCPUs started, guest running, faults served).
fn restore_uffd(config: &MachineConfig, dir: &Path) -> (Duration, Duration, u64) {
    let socket = dir.join("uffd.sock");
    let _ = std::fs::remove_file(&socket);
    let listener = UnixListener::bind(&socket).unwrap();
    let mem = std::fs::File::open(dir.join("full.mem")).unwrap();
    let server = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut server = userfault::PageServer::new(&mem, stream).unwrap();
        server.serve(&userfault::ServeOptions::default()).unwrap()
    });
    let started = Instant::now();
    let file = SnapshotFile::read(&dir.join("full.state")).unwrap();
    let hypervisor = vmm::open_accelerator(config.accel).unwrap();
    let options = RestoreOptions {
        memory: MemoryBackend::Uffd(socket),
        track_dirty_pages: false,
        resume: true,
        regenerate_vmgenid: false,
    };
    let machine = Machine::restore(config, hypervisor, &file, &options).unwrap();
    let running = machine.start().unwrap();
    let up = started.elapsed();
    wait_guest_runs(&running);
    let runs = started.elapsed();
    running.handle().send(Command::Stop).unwrap();
    running.wait();
    let report = server.join().unwrap();
    (up, runs, report.faults)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let accel: Accel = args.first().map_or("emu", String::as_str).parse().unwrap();
    let runs: usize = args.get(1).map_or(5, |s| s.parse().unwrap());
    let dir = args.get(2).map_or_else(std::env::temp_dir, PathBuf::from);
    let mib: u64 = args.get(3).map_or(256, |s| s.parse().unwrap());
    let dir = dir.join(format!("fv-bench-snapshot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let text = "x".repeat(100_000);
    let program = guests::ticker(&text, 100_000, 0x30_0000, 0x2a).unwrap();
    let kernel = dir.join("ticker.elf");
    std::fs::write(
        &kernel,
        arch::elf_builder::build_elf64(&[(program.load_addr, &program.code)], program.load_addr),
    )
    .unwrap();
    let mut config = MachineConfig::new(&kernel);
    config.accel = accel;
    config.memory = mib << 20;
    config.console = ConsoleOutput::Sink;

    let (mut full, mut diff, mut restore, mut diff_bytes) = (vec![], vec![], vec![], vec![]);
    let (mut file_runs, mut uffd_up, mut uffd_runs, mut faults) = (vec![], vec![], vec![], 0);
    for _ in 0..runs {
        let mut machine = Machine::new(&config).unwrap();
        machine.track_dirty_pages().unwrap();
        let running = machine.start().unwrap();
        let handle = running.handle();
        std::thread::sleep(Duration::from_millis(100));
        handle.send(Command::Pause).unwrap();
        full.push(create(&handle, &dir, "full", SnapshotKind::Full));
        handle.send(Command::Resume).unwrap();
        std::thread::sleep(Duration::from_millis(50));
        handle.send(Command::Pause).unwrap();
        diff.push(create(&handle, &dir, "diff", SnapshotKind::Diff));
        diff_bytes.push(allocated(&dir.join("diff.mem")));
        handle.send(Command::Stop).unwrap();
        running.wait();

        let started = Instant::now();
        let file = SnapshotFile::read(&dir.join("full.state")).unwrap();
        let hypervisor = vmm::open_accelerator(accel).unwrap();
        let options = RestoreOptions {
            memory: MemoryBackend::File(dir.join("full.mem")),
            track_dirty_pages: false,
            resume: true,
            regenerate_vmgenid: false,
        };
        let opened = started.elapsed();
        let machine = Machine::restore(&config, hypervisor, &file, &options).unwrap();
        let built = started.elapsed();
        let running = machine.start().unwrap();
        restore.push(started.elapsed());
        if std::env::var_os("BENCH_SNAPSHOT_STEPS").is_some() {
            eprintln!(
                "read+open {opened:?}, built {built:?}, started {:?}",
                started.elapsed()
            );
        }
        // The guest prints on (its port accesses go on) within 5 s.
        wait_guest_runs(&running);
        file_runs.push(started.elapsed());
        running.handle().send(Command::Stop).unwrap();
        running.wait();

        let (up, runs, served) = restore_uffd(&config, &dir);
        uffd_up.push(up);
        uffd_runs.push(runs);
        faults = faults.max(served);
    }
    println!("accelerator {accel}, {mib} MiB guest, {runs} runs (medians)");
    println!("create full: {:?}", median(full));
    println!(
        "create diff: {:?} ({} KiB of data in the diff file)",
        median(diff),
        diff_bytes.iter().copied().max().unwrap_or(0) / 1024
    );
    println!("restore -> guest running: {:?}", median(restore));
    println!(
        "restore -> first guest port access: {:?} (File), {:?} (Uffd)",
        median(file_runs),
        median(uffd_runs)
    );
    println!(
        "Uffd restore -> guest running: {:?} (up to {faults} faults served)",
        median(uffd_up)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
