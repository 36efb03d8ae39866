//! What a clone costs the host (issue 12: ≤ 1 MiB of private memory per
//! clone until it writes). A spinning guest that writes nothing is forked
//! into two clones with `ferrovisor fork`, on emu and on kvm where usable;
//! while they run, each clone's private memory — the anonymous pages it
//! wrote that no other process maps, outside its guest RAM mapping, plus
//! the guest RAM it copied — must stay under 1 MiB.
//! The clones are forked from the `fork` process, so they share its
//! relocated binary, heap and the CPU's decoder tables; the soft TLB and
//! the jump cache cost only the pages the guest uses.

mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::firecracker::{elf, temp_dir, Instance};

const CLONES: usize = 2;
const BOUND_KIB: u64 = 1024;

/// (private anonymous KiB outside the mapping of `mem`, anonymous KiB
/// inside it). Outside the guest RAM a mapping counts its private dirty
/// pages that are anonymous (the smaller of `Private_Dirty` and
/// `Anonymous`): a file page dirty in the page cache — the binary, just
/// linked and not yet written back — is the page cache's, not the clone's.
fn private_kib(pid: u32, mem: &Path) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let mem = mem.to_str().unwrap();
    let (mut outside, mut copied, mut in_guest) = (0, 0, false);
    let (mut dirty, mut anon) = (0, 0);
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let (Some(first), second) = (words.next(), words.next()) else {
            continue;
        };
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            outside += dirty.min(anon);
            (dirty, anon) = (0, 0);
            in_guest = line.ends_with(mem);
            continue;
        }
        let kib = second.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match first {
            "Private_Dirty:" if !in_guest => dirty = kib,
            "Anonymous:" if in_guest => copied += kib,
            "Anonymous:" => anon = kib,
            _ => {}
        }
    }
    (outside + dirty.min(anon), copied)
}

#[test]
fn a_forked_clone_owns_less_than_a_mebibyte_of_host_memory() {
    for accel in common::accels() {
        let files = temp_dir(&format!("fork-memory-{accel}-files"));
        let kernel = elf(&files, "idle.elf", &guests::hostile::idle().unwrap());
        let vm = Instance::start(&format!("fork-memory-{accel}"), &["--accel", accel]);
        vm.ok(
            "PUT",
            "/boot-source",
            &format!(r#"{{"kernel_image_path": "{}"}}"#, kernel.display()),
        );
        vm.ok(
            "PUT",
            "/machine-config",
            r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
        );
        vm.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
        std::thread::sleep(Duration::from_millis(200));
        vm.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
        let (state, mem) = (files.join("i.state"), files.join("i.mem"));
        vm.snapshot_full(&state, &mem);
        drop(vm);

        let mut fork = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
            .args(["fork", "--snapshot", state.to_str().unwrap()])
            .args(["--mem", mem.to_str().unwrap(), "--count"])
            .arg(CLONES.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run ferrovisor fork");
        let mut stderr = BufReader::new(fork.stderr.take().unwrap());
        let mut pids = Vec::new();
        let mut text = String::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while pids.len() < CLONES && Instant::now() < deadline {
            let mut line = String::new();
            if stderr.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            // "clone N pid P running after ..."
            if let Some(pid) = line
                .split_whitespace()
                .skip_while(|w| *w != "pid")
                .nth(1)
                .and_then(|p| p.parse::<u32>().ok())
            {
                pids.push(pid);
            }
            text.push_str(&line);
        }
        assert_eq!(pids.len(), CLONES, "{accel}: fork said:\n{text}");
        // Let the clones run a while (the guest halts: nothing to write).
        std::thread::sleep(Duration::from_millis(500));
        let owned: Vec<(u64, u64)> = pids.iter().map(|&p| private_kib(p, &mem)).collect();
        for &pid in &pids {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
        let _ = fork.kill();
        let _ = fork.wait();
        for (pid, (outside, copied)) in pids.iter().zip(&owned) {
            eprintln!("{accel}: clone {pid}: {outside} KiB private outside guest RAM, {copied} KiB of guest RAM copied");
            assert!(
                outside + copied <= BOUND_KIB,
                "{accel}: clone {pid} owns {outside} + {copied} KiB"
            );
        }
        let _ = std::fs::remove_dir_all(&files);
    }
}
