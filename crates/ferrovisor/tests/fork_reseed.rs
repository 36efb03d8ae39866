//! The VM generation ID seen by Linux's own driver: Debian's generic kernel
//! (CONFIG_VMGENID=y; scripts/fetch-generic-kernel) with the test guest's
//! initramfs boots on emu, waits for its random number generator to be
//! initialized, and is snapshotted while it polls its generation ID. Two
//! clones loaded with a new generation ID each log the kernel's
//! "crng reseeded due to virtual machine fork", read IDs of their own and
//! different bytes from /dev/urandom; a clone loaded with `keep_vmgenid`
//! does not log it. The same guest forked in place (`PUT /ferrovisor/fork`,
//! 2 clones, the parent resumed): the clones reseed and diverge, the
//! parent keeps its ID, does not reseed and powers off cleanly. SKIPPED
//! without the test guest or the generic kernel
//! (`FERROVISOR_REQUIRE_GENERIC_GUEST=1` makes that a failure).

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::firecracker::{serial, temp_dir, wait_line, Instance};
use common::ticker::{PAUSE, START};

/// What linux/drivers/char/random.c (6.1) prints when the vmgenid driver
/// tells it that the VM was forked (`add_vmfork_randomness`).
const RESEED: &str = "crng reseeded due to virtual machine fork";

/// The generic kernel that scripts/fetch-generic-kernel caches.
fn generic_kernel() -> Option<PathBuf> {
    let path = match std::env::var_os("FERROVISOR_GUEST_GENERIC_KERNEL") {
        Some(p) => PathBuf::from(p),
        None => common::cache_dir().join("guest-generic/vmlinuz-generic"),
    };
    if path.is_file() {
        return Some(path);
    }
    conformance::skip_or_fail(
        "generic_guest",
        &format!(
            "no generic kernel at {} (run scripts/fetch-generic-kernel)",
            path.display()
        ),
    );
    None
}

/// The guest's script: wait for the RNG, report the ID and the driver,
/// then poll the ID (through /dev/mem) until it changes or about 20 s of
/// polling went by; give the driver's notification up to 5 s to reach the
/// kernel log; report.
fn script() -> String {
    let addr = vmm::snapshot::VMGENID_ADDR;
    format!(
        "head -c 1 /dev/random >/dev/null; \
         gen() {{ dd if=/dev/mem bs=16 skip={} count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'; }}; \
         seen() {{ dmesg | grep -c '{RESEED}'; }}; \
         g0=$(gen); echo gen0=$g0 reseeded0=$(seen); \
         echo driver=$(ls /sys/bus/acpi/drivers/vmgenid | grep -c :); \
         echo ready-for-fork; \
         i=0; while [ \"$(gen)\" = \"$g0\" ] && [ $i -lt 100 ]; do sleep 0.2; i=$((i+1)); done; \
         j=0; while [ \"$(seen)\" = 0 ] && [ $j -lt 25 ]; do sleep 0.2; j=$((j+1)); done; \
         echo rand=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'); \
         echo gen1=$(gen) reseeded1=$(seen); \
         dmesg | grep -i -e vmgenid -e 'crng'",
        addr / 16
    )
}

/// `key=value` of `console`'s first line holding `key=`.
fn value(console: &str, key: &str) -> String {
    console
        .lines()
        .flat_map(|l| l.split_whitespace())
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{console}"))
        .to_string()
}

/// A new API process that loads the snapshot as a clone and runs it.
fn load_clone(dir: &Path, n: u32, state: &Path, mem: &Path, keep: bool) -> (Instance, PathBuf) {
    let vm = Instance::start(&format!("reseed-{n}"), &["--accel", "emu"]);
    let out = dir.join(format!("clone{n}.out"));
    let body = serde_json::json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "resume_vm": true,
        "ferrovisor_clone": {"serial_out_path": out, "keep_vmgenid": keep}
    });
    vm.ok("PUT", "/snapshot/load", &body.to_string());
    (vm, out)
}

/// Starts an API process (`args` added), boots the generic kernel with
/// [`script`] and pauses it once it waits for a fork.
fn boot_paused(
    name: &str,
    args: &[&str],
    kernel: &Path,
    guest: &common::Guest,
    out: &Path,
) -> Instance {
    let mut all = vec!["--accel", "emu"];
    all.extend_from_slice(args);
    let a = Instance::start(name, &all);
    let boot = serde_json::json!({
        "kernel_image_path": kernel,
        "initrd_path": guest.initrd,
        "boot_args": format!("{} ferrovisor.cmd={}", common::CMDLINE, common::base64(script().as_bytes())),
    });
    a.ok("PUT", "/boot-source", &boot.to_string());
    a.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    a.ok(
        "PUT",
        "/serial",
        &format!(r#"{{"serial_out_path": "{}"}}"#, out.display()),
    );
    a.ok("PUT", "/actions", START);
    wait_line(out, common::BOOT_TIMEOUT, |l| l.contains("ready-for-fork"));
    std::thread::sleep(Duration::from_millis(300));
    a.ok("PATCH", "/vm", PAUSE);
    a
}

#[test]
fn linux_reseeds_its_rng_in_each_clone_with_a_new_generation_id() {
    let Some(guest) = common::guest() else { return };
    let Some(kernel) = generic_kernel() else {
        return;
    };
    let dir = temp_dir("fork-reseed");
    let out = dir.join("parent.out");
    let a = boot_paused("reseed-parent", &[], &kernel, &guest, &out);
    let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
    a.ok(
        "PUT",
        "/snapshot/create",
        &serde_json::json!({"snapshot_path": state, "mem_file_path": mem, "snapshot_type": "Full"})
            .to_string(),
    );
    drop(a);
    let parent = serial(&out);
    assert!(
        !parent.contains("gen1="),
        "the parent stopped polling before the snapshot:\n{parent}"
    );
    assert_eq!(
        value(&parent, "driver"),
        "1",
        "Linux's vmgenid driver bound to the device:\n{parent}"
    );
    assert_eq!(value(&parent, "reseeded0"), "0", "{parent}");
    let gen0 = value(&parent, "gen0");

    // Clones 1 and 2 get a new generation ID, clone 3 keeps the parent's.
    let clones: Vec<_> = (1..=3)
        .map(|n| (n, load_clone(&dir, n, &state, &mem, n == 3)))
        .collect();
    let mut seen = Vec::new();
    for (n, (vm, out)) in clones {
        let ended = vm.wait(Duration::from_secs(300));
        let console = serial(&out);
        assert!(
            console.contains("FERROVISOR-CMD-EXIT=0"),
            "clone {n} ended cleanly:\n{console}\nstderr:\n{}",
            ended.stderr
        );
        let (gen1, reseeded) = (value(&console, "gen1"), value(&console, "reseeded1"));
        eprintln!("clone {n}: gen {gen1} reseeded {reseeded}");
        if n == 3 {
            assert_eq!(gen1, gen0, "keep_vmgenid keeps the ID");
            assert_eq!(reseeded, "0", "no reseed without a new ID:\n{console}");
        } else {
            assert_eq!(gen1.len(), 32, "{console}");
            assert_ne!(gen1, gen0, "clone {n} has a new generation ID");
            assert_eq!(
                reseeded, "1",
                "clone {n}'s kernel reseeded its RNG:\n{console}"
            );
            seen.push((gen1, value(&console, "rand")));
        }
    }
    assert_ne!(seen[0].0, seen[1].0, "each clone has its own ID");
    assert_ne!(
        seen[0].1, seen[1].1,
        "the clones' first /dev/urandom bytes after the fork differ"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The same guest forked in place (`PUT /ferrovisor/fork`, 2 clones with a
/// new generation ID each, the parent resumed): the clones reseed and
/// diverge, the parent goes on with its own ID and does not reseed.
#[test]
fn linux_forked_in_place_reseeds_in_each_clone_and_the_parent_goes_on() {
    let Some(guest) = common::guest() else { return };
    let Some(kernel) = generic_kernel() else {
        return;
    };
    let dir = temp_dir("fork-reseed-in-place");
    let out = dir.join("parent.out");
    let a = boot_paused(
        "reseed-in-place-parent",
        &["--enable-fork"],
        &kernel,
        &guest,
        &out,
    );
    let gen0 = value(&serial(&out), "gen0");
    let body = serde_json::json!({
        "count": 2,
        "api_sock": dir.join("c{n}.sock"),
        "serial_out_path": dir.join("c{n}.out"),
        "resume_parent": true,
    });
    let r = a.req("PUT", "/ferrovisor/fork", Some(&body.to_string()));
    assert_eq!(r.status, 200, "{}", r.body);
    eprintln!("forked in place: {}", r.body);
    let ended = a.wait(Duration::from_secs(300));
    let parent = serial(&out);
    assert!(
        parent.contains("FERROVISOR-CMD-EXIT=0"),
        "the parent ended cleanly:\n{parent}\nstderr:\n{}",
        ended.stderr
    );
    assert_eq!(value(&parent, "gen1"), gen0, "the parent keeps its ID");
    assert_eq!(value(&parent, "reseeded1"), "0", "{parent}");
    let mut seen = Vec::new();
    for n in 0..2 {
        let own = dir.join(format!("c{n}.out"));
        wait_line(&own, common::BOOT_TIMEOUT, |l| {
            l.contains("FERROVISOR-CMD-EXIT=")
        });
        let console = serial(&own);
        assert!(console.contains("FERROVISOR-CMD-EXIT=0"), "{console}");
        let gen1 = value(&console, "gen1");
        assert_ne!(gen1, gen0, "clone {n} has a new generation ID");
        assert_eq!(value(&console, "reseeded1"), "1", "clone {n}:\n{console}");
        seen.push((gen1, value(&console, "rand")));
    }
    assert_ne!(seen[0].0, seen[1].0, "each clone has its own ID");
    assert_ne!(seen[0].1, seen[1].1, "the clones' RNGs diverge");
    let _ = std::fs::remove_dir_all(&dir);
}
