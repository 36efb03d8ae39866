//! VM fork: one snapshot, several clones that each continue on their own.
//!
//! - The tiny ticker guest, paused part-way and forked into 3 clones with
//!   `ferrovisor fork` (emu, and kvm where usable): each clone finishes the
//!   text in its own serial file, from where the snapshot left it.
//! - The Linux test guest (emu), snapshotted through the API while it
//!   waits for its VM generation ID to change, loaded by 3 API processes
//!   with `ferrovisor_clone` (their own serial file, MAC, TAP) and their
//!   own MMDS data: each sees a new generation ID of its own in memory and
//!   the Generic Event Device's interrupt, reads its identity from the
//!   MMDS, sets its MAC, computes, and powers off cleanly. SKIPPED without
//!   the test guest or network namespaces.

mod common;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::firecracker::{serial, temp_dir, wait_line, Instance};
use common::netns::Netns;
use common::ticker::{configure, wait_output, DONE_STATUS, PAUSE, RESUME, START, TEXT};

const CLONES: u32 = 3;

/// `ferrovisor fork ARGS` to its end: (status, stdout, stderr).
fn fork(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .arg("fork")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ferrovisor fork");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_tiny_guest_forks_into_clones_that_each_finish() {
    for accel in common::accels() {
        let files = temp_dir(&format!("fork-tiny-{accel}"));
        let out = files.join("serial.out");
        let vm = Instance::start(&format!("fork-tiny-{accel}-a"), &["--accel", accel]);
        configure(&vm, &files, accel, &out, false);
        vm.ok("PUT", "/actions", START);
        wait_output(&out, 5);
        vm.ok("PATCH", "/vm", PAUSE);
        let (state, mem) = (files.join("t.state"), files.join("t.mem"));
        vm.snapshot_full(&state, &mem);
        std::thread::sleep(Duration::from_millis(300));
        drop(vm);
        let before = serial(&out);
        assert!(
            before.len() < TEXT.len(),
            "the guest finished before the pause"
        );

        let template = files.join("clone{n}.out");
        let count = CLONES.to_string();
        let (status, _stdout, stderr) = fork(&[
            "--snapshot",
            state.to_str().unwrap(),
            "--mem",
            mem.to_str().unwrap(),
            "--count",
            &count,
            "--serial-out",
            template.to_str().unwrap(),
        ]);
        // Each clone ends with the ticker's debug-exit status.
        assert_eq!(status, Some(DONE_STATUS), "stderr:\n{stderr}");
        assert!(
            stderr.contains("no VM generation ID device"),
            "a bare ELF guest has no ACPI tables: {stderr}"
        );
        assert!(
            stderr.contains(&format!("forked {CLONES} clones in")),
            "{stderr}"
        );
        for n in 0..CLONES {
            assert!(stderr.contains(&format!("clone {n} pid ")), "{stderr}");
            let own = serial(&files.join(format!("clone{n}.out")));
            assert_eq!(
                format!("{before}{own}"),
                TEXT,
                "{accel}: clone {n} goes on from the snapshot"
            );
        }
        assert_eq!(
            serial(&out),
            before,
            "the clones do not write the parent's file"
        );
        for line in stderr
            .lines()
            .filter(|l| l.contains("running after") || l.contains("forked"))
        {
            eprintln!("{accel}: {line}");
        }
        let _ = std::fs::remove_dir_all(&files);
    }
}

#[test]
fn fork_refuses_what_it_cannot_do() {
    let files = temp_dir("fork-refusals");
    let (status, _, stderr) = fork(&[
        "--snapshot",
        files.join("none.state").to_str().unwrap(),
        "--mem",
        "/nonexistent",
        "--count",
        "2",
    ]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("cannot read the snapshot file"), "{stderr}");
    let (status, _, stderr) = fork(&["--snapshot", "s", "--mem", "m", "--count", "0"]);
    assert_ne!(status, Some(0), "{stderr}");

    // A clone that cannot restore (the memory file is too short) stops the
    // fork with a failure.
    let out = files.join("serial.out");
    let vm = Instance::start("fork-refusals-a", &["--accel", "emu"]);
    configure(&vm, &files, "emu", &out, false);
    vm.ok("PUT", "/actions", START);
    wait_output(&out, 2);
    vm.ok("PATCH", "/vm", PAUSE);
    let (state, mem) = (files.join("r.state"), files.join("r.mem"));
    vm.snapshot_full(&state, &mem);
    drop(vm);
    let short = files.join("short.mem");
    std::fs::write(&short, vec![0u8; 1 << 20]).unwrap();
    let (status, _, stderr) = fork(&[
        "--snapshot",
        state.to_str().unwrap(),
        "--mem",
        short.to_str().unwrap(),
        "--count",
        "2",
    ]);
    assert_eq!(status, Some(1), "{stderr}");
    assert!(stderr.contains("ended before it ran"), "{stderr}");
    // Asking a VM without ACPI tables for a new generation ID is refused.
    let b = Instance::start("fork-refusals-b", &["--accel", "emu"]);
    b.bad(
        "PUT",
        "/snapshot/load",
        Some(&format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "{}", "ferrovisor_clone": {{}}}}"#,
            state.display(),
            mem.display()
        )),
        "no VM generation ID device",
    );
    b.bad(
        "PUT",
        "/snapshot/load",
        Some(&format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "{}", "ferrovisor_clone": {{"keep_vmgenid": true, "guest_cid": 5}}}}"#,
            state.display(),
            mem.display()
        )),
        "no vsock device",
    );
    assert_eq!(b.get("/")["state"], "Not started");
    b.ok(
        "PUT",
        "/snapshot/load",
        &format!(
            r#"{{"snapshot_path": "{}", "mem_file_path": "{}", "resume_vm": true, "ferrovisor_clone": {{"keep_vmgenid": true, "serial_out_path": "{}"}}}}"#,
            state.display(),
            mem.display(),
            files.join("b.out").display()
        ),
    );
    let ended = b.wait(Duration::from_secs(120));
    assert_eq!(ended.status, Some(DONE_STATUS), "{}", ended.stderr);
    assert_eq!(
        format!("{}{}", serial(&out), serial(&files.join("b.out"))),
        TEXT
    );
    let _ = std::fs::remove_dir_all(&files);
}

const URL: &str = "http://169.254.169.254";
const PARENT_TAP: &str = "fvfork0";

/// The guest's script: network for the MMDS, then wait (polling the VM
/// generation ID through /dev/mem) for a fork; then report.
fn script() -> String {
    let addr = vmm::snapshot::VMGENID_ADDR;
    format!(
        "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6 2>/dev/null; \
         ip addr add 169.254.0.2/16 dev eth0 && ip link set eth0 up; \
         gen() {{ dd if=/dev/mem bs=16 skip={} count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n'; }}; \
         ged() {{ grep -i ged /proc/interrupts | awk '{{print $2}}'; }}; \
         g0=$(gen); echo gen0=$g0 ged0=$(ged); \
         echo vmgenid-driver=$(ls /sys/bus/acpi/drivers | grep -c vmgenid); \
         echo ready-for-fork; \
         while [ \"$(gen)\" = \"$g0\" ]; do sleep 0.2; done; \
         echo gen1=$(gen) ged1=$(ged); \
         echo rand=$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \\n'); \
         n=$(wget -q -O - {URL}/clone/n); mac=$(wget -q -O - {URL}/clone/mac); \
         ip link set eth0 address $mac; \
         echo clone=$n mac=$(cat /sys/class/net/eth0/address); \
         i=0; s=0; while [ $i -lt 500 ]; do s=$((s+i*i)); i=$((i+1)); done; echo work=$s",
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

fn mac(n: u32) -> String {
    format!("06:00:00:00:01:{n:02x}")
}

fn load_clone(ns: &Netns, dir: &Path, n: u32, state: &Path, mem: &Path) -> (Instance, PathBuf) {
    let tap = format!("fvfork{n}");
    ns.add_tap(&tap, None).unwrap();
    let vm = Instance::start_via(
        &format!("fork-linux-{n}"),
        &ns.wrapper(),
        &["--accel", "emu"],
    );
    let out = dir.join(format!("clone{n}.out"));
    let body = serde_json::json!({
        "snapshot_path": state,
        "mem_backend": {"backend_type": "File", "backend_path": mem},
        "network_overrides": [{"iface_id": "eth0", "host_dev_name": tap}],
        "ferrovisor_clone": {
            "serial_out_path": out,
            "guest_macs": [{"iface_id": "eth0", "guest_mac": mac(n)}]
        }
    });
    vm.ok("PUT", "/snapshot/load", &body.to_string());
    assert_eq!(vm.get("/")["state"], "Paused");
    let config = vm.get("/vm/config");
    assert_eq!(config["network-interfaces"][0]["guest_mac"], mac(n));
    assert_eq!(config["network-interfaces"][0]["host_dev_name"], tap);
    let data = serde_json::json!({"clone": {"n": n.to_string(), "mac": mac(n)}});
    vm.ok("PUT", "/mmds", &data.to_string());
    (vm, out)
}

#[test]
fn a_linux_guest_forks_into_clones_with_their_own_identity() {
    let Some(guest) = common::guest() else { return };
    let Some(ns) = Netns::new("fork", PARENT_TAP, None) else {
        return;
    };
    let dir = temp_dir("fork-linux");
    let out = dir.join("parent.out");
    let a = Instance::start_via("fork-linux-parent", &ns.wrapper(), &["--accel", "emu"]);
    a.put_linux_boot(&guest, &script());
    a.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    a.ok(
        "PUT",
        "/network-interfaces/eth0",
        &format!(r#"{{"iface_id": "eth0", "host_dev_name": "{PARENT_TAP}", "guest_mac": "06:00:00:00:00:01"}}"#),
    );
    a.ok(
        "PUT",
        "/mmds/config",
        r#"{"network_interfaces": ["eth0"], "version": "V1"}"#,
    );
    a.ok(
        "PUT",
        "/serial",
        &format!(r#"{{"serial_out_path": "{}"}}"#, out.display()),
    );
    a.ok("PUT", "/actions", START);
    wait_line(&out, common::BOOT_TIMEOUT, |l| l.contains("ready-for-fork"));
    std::thread::sleep(Duration::from_millis(500));
    a.ok("PATCH", "/vm", PAUSE);
    let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
    a.snapshot_full(&state, &mem);
    drop(a);
    let parent = serial(&out);
    let saved = vmm::snapshot::SnapshotFile::read(&state).unwrap();
    let saved_id = saved
        .body
        .devices
        .vmgenid
        .expect("a Linux VM has the device")
        .id;
    let gen0 = value(&parent, "gen0");
    assert_eq!(
        gen0,
        vmm::snapshot::id_hex(&saved_id),
        "the guest reads the ID where ADDR says"
    );
    let ged0: u64 = value(&parent, "ged0")
        .parse()
        .expect("the GED's interrupt in /proc/interrupts");
    let driver = value(&parent, "vmgenid-driver") == "1";

    let clones: Vec<_> = (1..=CLONES)
        .map(|n| load_clone(&ns, &dir, n, &state, &mem))
        .collect();
    for (vm, _) in &clones {
        vm.ok("PATCH", "/vm", RESUME);
    }
    let (mut gens, mut rands) = (HashSet::new(), HashSet::new());
    for (n, (vm, out)) in (1..=CLONES).zip(clones) {
        let ended = vm.wait(Duration::from_secs(300));
        let console = serial(&out);
        assert!(
            console.contains("FERROVISOR-CMD-EXIT=0"),
            "clone {n} ended cleanly:\n{console}\nstderr:\n{}",
            ended.stderr
        );
        let gen1 = value(&console, "gen1");
        assert_eq!(gen1.len(), 32, "{console}");
        assert_ne!(gen1, gen0, "clone {n} has a new generation ID");
        gens.insert(gen1);
        let ged1: u64 = value(&console, "ged1").parse().unwrap();
        assert_eq!(
            ged1,
            ged0 + 1,
            "clone {n}'s guest took the notification interrupt"
        );
        assert_eq!(value(&console, "clone"), n.to_string(), "its own MMDS data");
        assert_eq!(value(&console, "mac"), mac(n));
        assert_eq!(
            value(&console, "work"),
            (0..500u64).map(|i| i * i).sum::<u64>().to_string()
        );
        rands.insert(value(&console, "rand"));
    }
    assert_eq!(
        gens.len(),
        CLONES as usize,
        "every clone has its own generation ID"
    );
    if driver {
        assert_eq!(rands.len(), CLONES as usize, "the clones' RNGs diverge");
    } else {
        eprintln!(
            "NOTE: the test guest's kernel has no vmgenid driver (CONFIG_VMGENID): \
             the clones' first /dev/urandom bytes after the fork: {rands:?}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
