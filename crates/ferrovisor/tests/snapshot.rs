//! Snapshots through Firecracker's API: a tiny guest paused, saved, killed
//! and loaded in a new process goes on where it was; diff snapshots merge
//! onto their base; every refused load or create leaves the VM as it was.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::firecracker::{serial, temp_dir, Instance};
use common::ticker::{configure, wait_output, DONE_STATUS, PAUSE, RESUME, START, TEXT};

fn create(vm: &Instance, state: &Path, mem: &Path, kind: &str) {
    vm.ok(
        "PUT",
        "/snapshot/create",
        &format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "{}", "snapshot_type": "{kind}"}}"#,
            state.display(),
            mem.display()
        ),
    );
}

fn load_body(state: &Path, mem: &Path, resume: bool) -> String {
    format!(
        r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "File", "backend_path": "{}"}}, "resume_vm": {resume}}}"#,
        state.display(),
        mem.display()
    )
}

/// A paused ticker, part-way through its text, in a snapshot at
/// `files/NAME.state` + `files/NAME.mem`; the first process is killed.
fn snapshot_midway(files: &Path, accel: &str, name: &str, out: &Path) -> (PathBuf, PathBuf) {
    let vm = Instance::start(&format!("{name}-a"), &["--accel", accel]);
    configure(&vm, files, accel, out, false);
    vm.ok("PUT", "/actions", START);
    wait_output(out, 5);
    vm.ok("PATCH", "/vm", PAUSE);
    let state = files.join(format!("{name}.state"));
    let mem = files.join(format!("{name}.mem"));
    create(&vm, &state, &mem, "Full");
    assert_eq!(vm.get("/")["state"], "Paused");
    // What the guest printed is on its way to the file.
    std::thread::sleep(Duration::from_millis(300));
    let printed = serial(out);
    assert!(
        printed.len() < TEXT.len(),
        "the guest finished before the pause"
    );
    drop(vm);
    (state, mem)
}

#[test]
fn a_tiny_guest_goes_on_in_a_new_process() {
    for accel in common::accels() {
        let files = temp_dir(&format!("snap-files-{accel}"));
        let out = files.join("serial.out");
        let (state, mem) = snapshot_midway(&files, accel, &format!("tiny-{accel}"), &out);
        let before = serial(&out);
        assert_eq!(
            std::fs::metadata(&mem).unwrap().len(),
            32 << 20,
            "the memory file holds the guest's RAM"
        );

        // A new process: load paused, nothing runs until resumed.
        let vm = Instance::start(&format!("tiny-{accel}-b"), &["--accel", accel]);
        let started = Instant::now();
        vm.ok("PUT", "/snapshot/load", &load_body(&state, &mem, false));
        let load_time = started.elapsed();
        assert_eq!(vm.get("/")["state"], "Paused");
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(serial(&out), before, "a VM loaded paused does not run");
        vm.ok("PATCH", "/vm", RESUME);
        let ended = vm.wait(Duration::from_secs(120));
        assert_eq!(ended.status, Some(DONE_STATUS), "stderr:\n{}", ended.stderr);
        assert_eq!(
            serial(&out),
            TEXT,
            "the output of the two processes together is one uninterrupted run's"
        );
        eprintln!("{accel}: snapshot load took {load_time:?} (API round trip)");
        let _ = std::fs::remove_dir_all(&files);
    }
}

#[test]
fn refused_loads_leave_the_instance_loadable() {
    let accel = "emu";
    let files = temp_dir("snap-refusals");
    let out = files.join("serial.out");
    let (state, mem) = snapshot_midway(&files, accel, "refusals", &out);
    let good = std::fs::read(&state).unwrap();

    let vm = Instance::start("refusals-b", &["--accel", accel]);
    let bad_state = files.join("bad.state");
    let load_bad = |bytes: &[u8], mem: &Path, needle: &str| {
        std::fs::write(&bad_state, bytes).unwrap();
        vm.bad(
            "PUT",
            "/snapshot/load",
            Some(&load_body(&bad_state, mem, true)),
            needle,
        );
        assert_eq!(vm.get("/")["state"], "Not started");
    };
    let mut magic = good.clone();
    magic[0] ^= 1;
    load_bad(&magic, &mem, "bad magic");
    let mut version = good.clone();
    version[8] = version[8].wrapping_add(1);
    load_bad(&version, &mem, "snapshot format version");
    load_bad(&good[..good.len() - 10], &mem, "truncated");
    let mut flipped = good.clone();
    let mid = good.len() / 2;
    flipped[mid] ^= 0x10;
    load_bad(&flipped, &mem, "checksum mismatch");
    let short_mem = files.join("short.mem");
    std::fs::write(&short_mem, vec![0u8; 1 << 20]).unwrap();
    load_bad(&good, &short_mem, "the snapshot's guest has");
    vm.bad(
        "PUT",
        "/snapshot/load",
        Some(&format!(
            r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "Uffd", "backend_path": "{}"}}}}"#,
            state.display(),
            files.join("nobody-listens.sock").display()
        )),
        "cannot connect to the page-fault handler's socket",
    );
    assert_eq!(vm.get("/")["state"], "Not started");
    vm.bad(
        "PUT",
        "/snapshot/load",
        Some(&format!(r#"{{"snapshot_path": "{}"}}"#, state.display())),
        "exactly one of mem_file_path and mem_backend",
    );
    if common::accels().contains(&"kvm") {
        let kvm = Instance::start("refusals-kvm", &["--accel", "kvm"]);
        kvm.bad(
            "PUT",
            "/snapshot/load",
            Some(&load_body(&state, &mem, true)),
            "taken on the emu accelerator",
        );
    }

    // After all that, the real one loads and runs to the end.
    vm.ok("PUT", "/snapshot/load", &load_body(&state, &mem, true));
    let ended = vm.wait(Duration::from_secs(120));
    assert_eq!(ended.status, Some(DONE_STATUS), "stderr:\n{}", ended.stderr);
    assert_eq!(serial(&out), TEXT);
    let _ = std::fs::remove_dir_all(&files);
}

#[test]
fn refused_creates_leave_the_vm_running() {
    let files = temp_dir("snap-create-refusals");
    let out = files.join("serial.out");
    let vm = Instance::start("create-refusals", &["--accel", "emu"]);
    configure(&vm, &files, "emu", &out, false);
    let state = files.join("s");
    let mem = files.join("m");
    let body = |kind: &str| {
        format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "{}", "snapshot_type": "{kind}"}}"#,
            state.display(),
            mem.display()
        )
    };
    vm.bad(
        "PUT",
        "/snapshot/create",
        Some(&body("Full")),
        "only accepted after the microVM starts",
    );
    vm.ok("PUT", "/actions", START);
    wait_output(&out, 2);
    vm.bad(
        "PUT",
        "/snapshot/create",
        Some(&body("Full")),
        "must be paused",
    );
    // A load into a running instance is refused too.
    vm.bad(
        "PUT",
        "/snapshot/load",
        Some(&load_body(&state, &mem, true)),
        "only accepted before the microVM starts",
    );
    assert_eq!(vm.get("/")["state"], "Running");
    let seen = serial(&out).len();
    wait_output(&out, seen + 2);
    vm.ok("PATCH", "/vm", PAUSE);
    vm.bad(
        "PUT",
        "/snapshot/create",
        Some(&body("Diff")),
        "needs dirty page tracking",
    );
    assert!(!state.exists(), "a refused create writes no state file");
    vm.ok("PATCH", "/vm", RESUME);
    let ended = vm.wait(Duration::from_secs(120));
    assert_eq!(ended.status, Some(DONE_STATUS), "stderr:\n{}", ended.stderr);
    assert_eq!(serial(&out), TEXT);
    let _ = std::fs::remove_dir_all(&files);
}

#[test]
fn diff_merged_onto_its_base_is_the_full_snapshot() {
    for accel in common::accels() {
        diff_merged_on(accel);
    }
}

fn diff_merged_on(accel: &str) {
    let files = temp_dir(&format!("snap-diff-{accel}"));
    let out = files.join("serial.out");
    let vm = Instance::start(&format!("diff-{accel}"), &["--accel", accel]);
    configure(&vm, &files, accel, &out, true);
    vm.ok("PUT", "/actions", START);
    wait_output(&out, 3);
    vm.ok("PATCH", "/vm", PAUSE);
    let base = files.join("base.mem");
    create(&vm, &files.join("base.state"), &base, "Full");
    vm.ok("PATCH", "/vm", RESUME);
    let seen = serial(&out).len();
    wait_output(&out, seen + 3);
    vm.ok("PATCH", "/vm", PAUSE);
    let diff = files.join("diff.mem");
    create(&vm, &files.join("diff.state"), &diff, "Diff");
    let full = files.join("full.mem");
    create(&vm, &files.join("full.state"), &full, "Full");
    drop(vm);

    let diff_size = std::fs::metadata(&diff).unwrap().len();
    assert_eq!(diff_size, 32 << 20, "a diff file has the guest's size");
    let diff_bytes = std::fs::read(&diff).unwrap();
    let base_bytes = std::fs::read(&base).unwrap();
    let full_bytes = std::fs::read(&full).unwrap();
    assert_ne!(
        base_bytes, full_bytes,
        "the guest changed its memory in between"
    );

    let merged = std::process::Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["snapshot", "merge", "--base"])
        .arg(&base)
        .arg("--diff")
        .arg(&diff)
        .output()
        .unwrap();
    assert!(
        merged.status.success(),
        "{}",
        String::from_utf8_lossy(&merged.stderr)
    );
    assert!(
        std::fs::read(&base).unwrap() == full_bytes,
        "{accel}: base + diff is not the full snapshot"
    );
    // Only dirty pages are in the diff: most of it is zero (a hole).
    let data_pages = diff_bytes
        .chunks(4096)
        .filter(|p| p.iter().any(|&b| b != 0))
        .count();
    assert!(data_pages < 64, "{data_pages} pages in the diff");
    let _ = std::fs::remove_dir_all(&files);
}

#[test]
fn ferrovisor_restore_runs_a_snapshot_without_the_api() {
    let files = temp_dir("snap-cli");
    let out = files.join("serial.out");
    let (state, mem) = snapshot_midway(&files, "emu", "cli", &out);
    let before = serial(&out);
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .arg("restore")
        .arg("--snapshot")
        .arg(&mem)
        .arg("--mem")
        .arg(&mem)
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(stderr.contains("bad magic"), "{stderr}");
    assert_eq!(serial(&out), before, "a refused restore runs nothing");

    let run = std::process::Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .arg("restore")
        .arg("--snapshot")
        .arg(&state)
        .arg("--mem")
        .arg(&mem)
        .output()
        .unwrap();
    assert_eq!(
        run.status.code(),
        Some(DONE_STATUS),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(serial(&out), TEXT);
    let _ = std::fs::remove_dir_all(&files);
}

/// A machine with virtio devices (a disk and the entropy device; the
/// ticker does not drive them) is saved with their state, on emu and kvm;
/// a load whose disk image changed size is refused with the sizes, and
/// the instance stays loadable.
#[test]
fn a_disk_whose_size_changed_is_refused_and_the_same_disk_loads() {
    for accel in common::accels() {
        let files = temp_dir(&format!("snap-disk-{accel}"));
        let out = files.join("serial.out");
        let disk = files.join("disk.img");
        std::fs::write(&disk, vec![0u8; 64 << 10]).unwrap();
        let vm = Instance::start(&format!("disk-{accel}-a"), &["--accel", accel]);
        configure(&vm, &files, accel, &out, false);
        vm.ok(
            "PUT",
            "/drives/disk",
            &format!(
                r#"{{"drive_id": "disk", "path_on_host": "{}", "is_root_device": false, "is_read_only": false}}"#,
                disk.display()
            ),
        );
        vm.ok("PUT", "/entropy", "{}");
        vm.ok("PUT", "/actions", START);
        wait_output(&out, 3);
        vm.ok("PATCH", "/vm", PAUSE);
        let (state, mem) = (files.join("d.state"), files.join("d.mem"));
        create(&vm, &state, &mem, "Full");
        drop(vm);
        std::fs::write(&disk, vec![0u8; 128 << 10]).unwrap();
        let vm = Instance::start(&format!("disk-{accel}-b"), &["--accel", accel]);
        vm.bad(
            "PUT",
            "/snapshot/load",
            Some(&load_body(&state, &mem, true)),
            "was 65536 bytes when the snapshot was taken and is 131072 bytes now",
        );
        std::fs::write(&disk, vec![0u8; 64 << 10]).unwrap();
        vm.ok("PUT", "/snapshot/load", &load_body(&state, &mem, true));
        let ended = vm.wait(Duration::from_secs(120));
        assert_eq!(ended.status, Some(DONE_STATUS), "{accel}: {}", ended.stderr);
        assert_eq!(serial(&out), TEXT, "{accel}");
        let _ = std::fs::remove_dir_all(&files);
    }
}
