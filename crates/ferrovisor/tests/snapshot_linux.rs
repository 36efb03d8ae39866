//! A Linux guest with virtio-blk, virtio-net (a TAP in a namespace),
//! vsock and virtio-rng, on virtio-mmio and on virtio-pci, snapshotted
//! mid-run through Firecracker's API, killed, and loaded in a new process:
//! it reads back from its disk what it wrote before, writes more (checked
//! on the host), answers the namespace's ping and TCP, reads /dev/hwrng,
//! sees its old vsock connection reset and connects again, and its clock
//! did not go backwards. SKIPPED without the test guest or network
//! namespaces (see tests/net.rs).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

use common::firecracker::{serial, temp_dir, wait_line, Instance};
use common::netns::{host_busybox, Netns};

const HOST_IP: &str = "10.0.2.1";
const HOST_ADDR: &str = "10.0.2.1/24";
const GUEST_IP: &str = "10.0.2.15";
const TAP: &str = "fvtapsn0";
const BEFORE: &str = "written-before-snapshot";
const AFTER: &str = "written-after-restore";

/// The guest's script: set up, write the disk, open a vsock connection
/// (its input a FIFO this shell holds open and never writes: with `sleep
/// | vsock`, the pipeline would wait for `sleep` after the connection
/// ended), then wait (in `nc -l`) for the host, which connects only after
/// the restore; then check everything again.
fn script() -> String {
    format!(
        "ip link set eth0 up && ip addr add {GUEST_IP}/24 dev eth0; \
         printf {BEFORE} | dd of=/dev/vda bs=512 seek=1 conv=fsync 2>/dev/null; \
         mkfifo /tmp/hold; (vsock connect 2 6000 </tmp/hold >/dev/null 2>&1; echo old-vsock-ended) & \
         exec 9>/tmp/hold; \
         echo before-time=$(date +%s); \
         echo ready-for-snapshot; \
         nc -l -p 5000 >/tmp/go; echo go=$(cat /tmp/go); \
         echo after-time=$(date +%s); \
         echo 3 >/proc/sys/vm/drop_caches; \
         echo disk-back=$(dd if=/dev/vda bs=512 skip=1 count=1 2>/dev/null | head -c {}); \
         printf {AFTER} | dd of=/dev/vda bs=512 seek=2 conv=fsync 2>/dev/null; echo disk-write=$?; \
         echo hwrng=$(head -c 64 /dev/hwrng | wc -c); \
         ping -c 2 -W 5 {HOST_IP} | grep -c 'bytes from' | sed s/^/pings=/; \
         echo after-vsock | vsock connect 2 6000; echo vsock-exit=$?; \
         sleep 1",
        BEFORE.len()
    )
}

fn time_line(console: &str, key: &str) -> u64 {
    console
        .lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} line in:\n{console}"))
}

/// The host's end of the guest's vsock connections to port 6000: each
/// connection gets `pong:` and its first line back (and is kept open).
fn vsock_server(dir: &Path) -> std::thread::JoinHandle<Vec<String>> {
    let server = UnixListener::bind(dir.join("v.sock_6000")).unwrap();
    server.set_nonblocking(false).unwrap();
    std::thread::spawn(move || {
        let mut lines = Vec::new();
        let mut kept = Vec::new();
        for _ in 0..2 {
            let Ok((peer, _)) = server.accept() else {
                break;
            };
            let mut reader = BufReader::new(peer.try_clone().unwrap());
            let mut line = String::new();
            if line.is_empty() && lines.is_empty() {
                // The first connection (before the snapshot) sends nothing.
                lines.push(String::new());
                kept.push(peer);
                continue;
            }
            let _ = reader.read_line(&mut line);
            let mut peer = peer;
            let _ = write!(peer, "pong:{line}");
            lines.push(line.trim().to_string());
        }
        lines
    })
}

fn configure(vm: &Instance, guest: &common::Guest, dir: &Path) {
    vm.put_linux_boot(guest, &script());
    vm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    let disk = dir.join("disk.img");
    std::fs::write(&disk, vec![0u8; 1 << 20]).unwrap();
    vm.ok(
        "PUT",
        "/drives/disk",
        &format!(
            r#"{{"drive_id": "disk", "path_on_host": "{}", "is_root_device": false, "is_read_only": false}}"#,
            disk.display()
        ),
    );
    vm.ok(
        "PUT",
        "/network-interfaces/eth0",
        &format!(r#"{{"iface_id": "eth0", "host_dev_name": "{TAP}"}}"#),
    );
    vm.ok(
        "PUT",
        "/vsock",
        &format!(
            r#"{{"guest_cid": 3, "uds_path": "{}"}}"#,
            dir.join("v.sock").display()
        ),
    );
    vm.ok("PUT", "/entropy", "{}");
    vm.ok(
        "PUT",
        "/serial",
        &format!(
            r#"{{"serial_out_path": "{}"}}"#,
            dir.join("serial.out").display()
        ),
    );
}

fn goes_on_in_a_new_process(transport: &str) {
    let Some(guest) = common::guest() else { return };
    let Some(ns) = Netns::new(&format!("snap-{transport}"), TAP, Some(HOST_ADDR)) else {
        return;
    };
    let dir = temp_dir(&format!("snap-linux-{transport}"));
    let busybox = host_busybox(&guest, &dir).expect("busybox from the guest's initramfs");
    let out = dir.join("serial.out");
    let vsock = vsock_server(&dir);
    let mut args = vec!["--accel", "emu"];
    if transport == "pci" {
        args.push("--enable-pci");
    }
    let a = Instance::start_via(&format!("snap-linux-{transport}-a"), &ns.wrapper(), &args);
    configure(&a, &guest, &dir);
    a.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);
    wait_line(&out, common::BOOT_TIMEOUT, |l| {
        l.contains("ready-for-snapshot")
    });
    // The guest is now in `nc -l`; its vsock connection is up.
    std::thread::sleep(Duration::from_millis(500));
    a.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    let (state, mem) = (dir.join("vm.state"), dir.join("vm.mem"));
    a.snapshot_full(&state, &mem);
    drop(a);
    let printed = serial(&out);

    let b = Instance::start_via(&format!("snap-linux-{transport}-b"), &ns.wrapper(), &args);
    b.ok(
        "PUT",
        "/snapshot/load",
        &format!(
            r#"{{"snapshot_path": "{}", "mem_backend": {{"backend_type": "File", "backend_path": "{}"}}, "resume_vm": true}}"#,
            state.display(),
            mem.display()
        ),
    );
    let ping = ns.exec(&busybox, &["ping", "-c", "2", "-W", "5", GUEST_IP]);
    assert!(
        ns.send_tcp_when_accepted(GUEST_IP, 5000, "go", Duration::from_secs(60)),
        "the guest's TCP port never accepted after the restore:\n{}",
        serial(&out)
    );
    let ended = b.wait(Duration::from_secs(120));
    let console = serial(&out);
    assert!(
        console.starts_with(&printed),
        "the console went on from where it was"
    );
    let after_restore = &console[printed.len()..];
    assert!(
        String::from_utf8_lossy(&ping.stdout).contains("2 packets received"),
        "host ping after the restore: {}\n{console}",
        String::from_utf8_lossy(&ping.stdout)
    );
    for want in [
        "go=go".to_string(),
        format!("disk-back={BEFORE}"),
        "disk-write=0".into(),
        "hwrng=64".into(),
        "pings=2".into(),
        "old-vsock-ended".into(),
        "pong:after-vsock".into(),
        "vsock-exit=0".into(),
        "FERROVISOR-CMD-EXIT=0".into(),
    ] {
        assert!(
            after_restore.contains(&want),
            "{want:?} after the restore in:\n{after_restore}\nstderr:\n{}",
            ended.stderr
        );
    }
    assert!(time_line(&console, "after-time=") >= time_line(&console, "before-time="));
    let image = std::fs::read(dir.join("disk.img")).unwrap();
    assert_eq!(&image[512..512 + BEFORE.len()], BEFORE.as_bytes());
    assert_eq!(&image[1024..1024 + AFTER.len()], AFTER.as_bytes());
    let lines = vsock.join().unwrap();
    assert_eq!(lines.last().map(String::as_str), Some("after-vsock"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn linux_with_virtio_devices_goes_on_in_a_new_process_over_mmio() {
    goes_on_in_a_new_process("mmio");
}

#[test]
fn linux_with_virtio_devices_goes_on_in_a_new_process_over_pci() {
    goes_on_in_a_new_process("pci");
}
