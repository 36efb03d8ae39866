//! `PUT /ferrovisor/fork`: a paused VM forked in place. The tiny ticker
//! guest (emu, and kvm where usable), paused part-way, is forked into 2
//! clones by its own API process (started with `--enable-fork`): each clone
//! is an API process of its own that maps the parent's memory from
//! /dev/shm and finishes the text in its own serial file from where the
//! parent stopped; the parent, resumed by the request, finishes its own.
//! Refusals (not started, not paused, an identity the VM cannot take, a
//! clone that cannot load) answer 400 and leave the parent paused and
//! intact; without `--enable-fork` the request is refused.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::firecracker::{serial, temp_dir, Instance};
use common::ticker::{configure, wait_output, DONE_STATUS, PAUSE, START, TEXT};

const FORK: &str = "/ferrovisor/fork";

fn body(files: &Path, prefix: &str, extra: serde_json::Value) -> String {
    let mut body = serde_json::json!({
        "count": 2,
        "api_sock": files.join(format!("{prefix}{{n}}.sock")),
        "serial_out_path": files.join(format!("{prefix}{{n}}.out")),
        "keep_vmgenid": true,
        "resume_parent": true,
    });
    let (Some(body), Some(extra)) = (body.as_object_mut(), extra.as_object()) else {
        unreachable!()
    };
    body.extend(extra.clone());
    serde_json::Value::Object(body.clone()).to_string()
}

/// Waits until `done` holds (or fails after 120 s).
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_paused_vm_forks_in_place_into_clones_that_go_on() {
    for accel in common::accels() {
        let files = temp_dir(&format!("fork-in-place-{accel}"));
        let out = files.join("parent.out");
        let vm = Instance::start(
            &format!("fork-in-place-{accel}-parent"),
            &["--accel", accel, "--enable-fork"],
        );
        configure(&vm, &files, accel, &out, false);
        let good = body(&files, "c", serde_json::json!({}));
        vm.bad("PUT", FORK, Some(&good), "only accepted after");
        vm.ok("PUT", "/actions", START);
        wait_output(&out, 5);
        vm.bad("PUT", FORK, Some(&good), "must be paused");
        vm.ok("PATCH", "/vm", PAUSE);

        // Refusals leave the parent paused, its text unfinished.
        let no_vsock = body(&files, "x", serde_json::json!({"guest_cid": 7}));
        vm.bad("PUT", FORK, Some(&no_vsock), "no vsock device");
        let shared = body(
            &files,
            "x",
            serde_json::json!({"api_sock": "/tmp/one.sock"}),
        );
        vm.bad("PUT", FORK, Some(&shared), "api_sock needs {n}");
        // A bare ELF guest has no VM generation ID device: each clone's
        // load is refused, and the helper stops the clones it started.
        let new_id = body(&files, "x", serde_json::json!({"keep_vmgenid": false}));
        vm.bad("PUT", FORK, Some(&new_id), "no VM generation ID device");
        assert_eq!(vm.get("/")["state"], "Paused");
        let before = serial(&out);
        assert!(before.len() < TEXT.len(), "{accel}: ended before the pause");

        let r = vm.req("PUT", FORK, Some(&good));
        assert_eq!(r.status, 200, "{}", r.body);
        let info: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        eprintln!(
            "{accel}: forked in place: snapshot {} us, clones running after {} us",
            info["snapshot_us"], info["total_us"]
        );
        assert_eq!(info["parent_resumed"], true);
        let clones = info["clones"].as_array().unwrap();
        assert_eq!(clones.len(), 2);
        for (n, c) in clones.iter().enumerate() {
            assert_eq!(c["n"], n);
            let sock = files.join(format!("c{n}.sock"));
            assert_eq!(c["api_sock"], sock.to_str().unwrap());
            // Its memory is the parent's, mapped privately from /dev/shm
            // (the file is gone, the mapping stays).
            let pid = c["pid"].as_u64().unwrap();
            let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap_or_default();
            assert!(
                maps.lines()
                    .any(|l| l.contains("/dev/shm/ferrovisor-fork-") && l.contains("(deleted)")),
                "{accel}: clone {n} maps the parent's memory:\n{maps}"
            );
        }
        // Every clone and the parent finish the text from the pause.
        for n in 0..2 {
            let own = files.join(format!("c{n}.out"));
            wait_for(&format!("{accel}: clone {n} finishes"), || {
                before.len() + serial(&own).len() >= TEXT.len()
            });
            assert_eq!(
                format!("{before}{}", serial(&own)),
                TEXT,
                "{accel}: clone {n}"
            );
        }
        let ended = vm.wait(Duration::from_secs(120));
        assert_eq!(ended.status, Some(DONE_STATUS), "{}", ended.stderr);
        assert_eq!(serial(&out), TEXT, "{accel}: the parent goes on");
        let _ = std::fs::remove_dir_all(&files);
    }
}

#[test]
fn fork_in_place_needs_the_helper() {
    let files = temp_dir("fork-in-place-off");
    let out = files.join("parent.out");
    let vm = Instance::start("fork-in-place-off-parent", &["--accel", "emu"]);
    configure(&vm, &files, "emu", &out, false);
    vm.ok("PUT", "/actions", START);
    wait_output(&out, 2);
    vm.ok("PATCH", "/vm", PAUSE);
    let good = body(&files, "c", serde_json::json!({}));
    vm.bad("PUT", FORK, Some(&good), "--enable-fork");
    assert_eq!(vm.get("/")["state"], "Paused");
    let _ = std::fs::remove_dir_all(&files);
}
