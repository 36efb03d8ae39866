//! The emu CPU's decoded-code cache is bounded by bytes: a guest that runs
//! many MiB of distinct code on 4 vCPUs keeps the VMM's memory bounded,
//! and `--stats` reports the cache's counters.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The process's peak resident set (VmHWM) in KiB, if it still runs.
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[test]
fn eight_mib_of_distinct_code_on_four_vcpus_stays_under_the_memory_bound() {
    let dir = std::env::temp_dir().join(format!("ferrovisor-code-cache-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = guests::nop_sled(8, 2, 0x21).unwrap();
    let elf = dir.join("sled.elf");
    std::fs::write(
        &elf,
        arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--accel", "emu", "--memory", "64M", "--cpus", "4"])
        .arg("--kernel")
        .arg(&elf)
        .arg("--stats")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the guest did not finish in time (peak RSS {peak} KiB)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(status.code(), Some(0x43), "{err}");
    // 64 MiB of guest RAM, 4 × 32 MiB of code cache, the rest of the VMM:
    // well under 400 MiB. Unbounded, one vCPU alone held ~470 MB of
    // decoded NOPs (65 536 blocks of 64 operations).
    eprintln!("peak RSS {peak} KiB");
    assert!(peak > 0, "no RSS reading");
    assert!(peak < 400 << 10, "peak RSS {peak} KiB\n{err}");
    // The counters: the bootstrap vCPU built at least one block per 64
    // NOPs of each round and evicted most of them.
    let row = |name: &str| -> Vec<u64> {
        let line = err
            .lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .unwrap_or_else(|| panic!("no {name} row:\n{err}"));
        line.split_whitespace()
            .skip(1)
            .map(|c| c.parse().unwrap())
            .collect()
    };
    assert!(err.contains("emu accelerator counters"), "{err}");
    let built = row("blocks_built");
    assert_eq!(built.len(), 4, "{err}");
    assert!(built[0] >= 2 * (8 << 20) / 64, "{err}");
    assert!(row("blocks_evicted")[0] > (8 << 20) / 64, "{err}");
    for peak_bytes in row("code_cache_peak_bytes") {
        assert!(peak_bytes <= 32 << 20, "{err}");
    }
}
