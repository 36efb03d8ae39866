//! The lifecycle of a VM through Firecracker's API: the Linux test guest
//! on emu, paused and resumed (no output while paused, its clock without
//! a jump, its disk still answering after), its drive swapped by PATCH
//! /drives (the guest sees the new size and contents), and ended by
//! SendCtrlAltDel through the i8042 with exit status 0; and the error
//! cases of PATCH /vm and PATCH /drives.

mod common;

use std::time::Duration;

use common::firecracker::{complete_lines, serial, wait_line, Instance};

const START: &str = r#"{"action_type": "InstanceStart"}"#;

/// The `key=value` field of a tick line.
fn field<'a>(line: &'a str, key: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key} in {line:?}"))
}

fn tick(line: &str) -> u64 {
    field(line, "tick").parse().unwrap()
}

fn image(path: &std::path::Path, head: &[u8], size: usize) {
    let mut bytes = head.to_vec();
    bytes.resize(size, 0);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn linux_paused_resumed_drive_swapped_and_ctrl_alt_del() {
    lifecycle("lifecycle", &[]);
}

/// The same with the virtio devices on PCI (MSI-X; the configuration
/// change of the swapped drive on its own vector).
#[test]
fn linux_lifecycle_on_virtio_pci() {
    lifecycle("lifecycle-pci", &["--enable-pci"]);
}

fn lifecycle(name: &str, extra: &[&str]) {
    let Some(guest) = common::guest() else { return };
    let mut args = vec!["--accel", "emu"];
    args.extend_from_slice(extra);
    let vm = Instance::start(name, &args);
    let out = vm.dir.join("serial.out");
    let old = vm.dir.join("old.img");
    let new = vm.dir.join("new.img");
    image(&old, b"OLD-DISK", 1 << 20);
    image(&new, b"NEW-DISK", 2 << 20);

    // Before the start: lifecycle requests are refused.
    vm.bad(
        "PATCH",
        "/vm",
        Some(r#"{"state": "Paused"}"#),
        "after the microVM starts",
    );
    vm.bad(
        "PATCH",
        "/drives/data",
        Some(r#"{"drive_id": "data", "path_on_host": "/x"}"#),
        "after the microVM starts",
    );
    vm.bad(
        "PUT",
        "/actions",
        Some(r#"{"action_type": "SendCtrlAltDel"}"#),
        "after the microVM starts",
    );

    let script = "i=0; while [ $i -lt 3000 ]; do i=$((i+1)); \
                  echo 3 >/proc/sys/vm/drop_caches; \
                  echo tick=$i up=$(cut -d' ' -f1 /proc/uptime) size=$(cat /sys/block/vda/size) head=$(head -c 8 /dev/vda); \
                  sleep 0.2; done";
    vm.put_linux_boot(&guest, script);
    vm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    vm.ok(
        "PUT",
        "/drives/data",
        &format!(
            r#"{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false}}"#,
            old.display()
        ),
    );
    vm.ok(
        "PUT",
        "/serial",
        &format!(r#"{{"serial_out_path": "{}"}}"#, out.display()),
    );
    vm.ok("PUT", "/actions", START);
    let first = wait_line(&out, common::BOOT_TIMEOUT, |l| {
        l.starts_with("tick=") && tick(l) >= 3
    });
    assert_eq!(field(&first, "size"), "2048", "{first}");
    assert_eq!(field(&first, "head"), "OLD-DISK", "{first}");

    // Pause: nothing more comes out; GET / says so.
    vm.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    assert_eq!(vm.get("/")["state"], "Paused");
    vm.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    // A line being written when the vCPU stopped may still be in flight.
    std::thread::sleep(Duration::from_millis(200));
    let before = serial(&out);
    let last_before = complete_lines(&before)
        .rfind(|l| l.starts_with("tick="))
        .unwrap()
        .to_string();
    let pause = Duration::from_secs(3);
    std::thread::sleep(pause);
    assert_eq!(serial(&out), before, "output while paused");

    // Resume: the loop goes on, its uptime without the pause in it.
    vm.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    assert_eq!(vm.get("/")["state"], "Running");
    let n = tick(&last_before);
    let next = wait_line(&out, Duration::from_secs(60), |l| {
        l.starts_with("tick=") && tick(l) == n + 1
    });
    let up = |l: &str| field(l, "up").parse::<f64>().unwrap();
    let step = up(&next) - up(&last_before);
    assert!(
        step < pause.as_secs_f64() - 1.0,
        "the guest's uptime jumped {step:.2} s across a {pause:?} pause:\n{last_before}\n{next}"
    );
    assert_eq!(field(&next, "head"), "OLD-DISK", "the disk answers: {next}");

    // Errors after the start.
    vm.bad(
        "PATCH",
        "/vm",
        Some(r#"{"state": "Frozen"}"#),
        "unknown variant",
    );
    vm.bad(
        "PATCH",
        "/drives/nope",
        Some(r#"{"drive_id": "nope", "path_on_host": "/x"}"#),
        "no drive",
    );
    vm.bad(
        "PATCH",
        "/drives/data",
        Some(r#"{"drive_id": "other", "path_on_host": "/x"}"#),
        "not the one in the path",
    );
    vm.bad(
        "PATCH",
        "/drives/data",
        Some(&format!(
            r#"{{"drive_id": "data", "path_on_host": "{}/missing.img"}}"#,
            vm.dir.display()
        )),
        "cannot open the drive",
    );
    vm.bad(
        "PATCH",
        "/drives/data",
        Some(
            r#"{"drive_id": "data", "path_on_host": "/x", "rate_limiter": {"bandwidth": {"size": 1, "refill_time": 18446744073709551615}}}"#,
        ),
        "too long",
    );
    // A bad limiter next to a good path changes neither.
    assert_eq!(
        vm.get("/vm/config")["drives"][0]["path_on_host"],
        old.display().to_string()
    );

    // A new backing file: the guest sees its size and contents.
    vm.ok(
        "PATCH",
        "/drives/data",
        &format!(
            r#"{{"drive_id": "data", "path_on_host": "{}"}}"#,
            new.display()
        ),
    );
    let swapped = wait_line(&out, Duration::from_secs(60), |l| {
        l.starts_with("tick=") && l.contains("size=4096") && l.contains("head=NEW-DISK")
    });
    let config = vm.get("/vm/config");
    assert_eq!(
        config["drives"][0]["path_on_host"],
        new.display().to_string(),
        "{swapped}"
    );

    // Ctrl-Alt-Del: the guest's init powers off; Firecracker's status 0.
    // (The instance's directory, serial output included, goes with it.)
    vm.ok("PUT", "/actions", r#"{"action_type": "SendCtrlAltDel"}"#);
    wait_line(&out, Duration::from_secs(60), |l| {
        l.contains("FERROVISOR-CTRL-ALT-DEL")
    });
    let ended = vm.wait(Duration::from_secs(120));
    assert_eq!(ended.status, Some(0), "{}", ended.stderr);
}
