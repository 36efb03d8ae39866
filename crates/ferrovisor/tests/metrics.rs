//! Firecracker's metrics from a running Linux guest: the Linux test guest
//! on emu, configured through the API with a drive, an entropy device and
//! vsock, reads its drive and the hardware RNG and connects to a host
//! program; with a TAP in a network namespace, pings the host;
//! FlushMetrics writes the devices'
//! counters under Firecracker's names, counters as changes since the
//! previous line; the end of the process writes one more line.

mod common;

use std::time::{Duration, Instant};

use common::firecracker::{temp_dir, wait_line, Instance};

const START: &str = r#"{"action_type": "InstanceStart"}"#;
const FLUSH: &str = r#"{"action_type": "FlushMetrics"}"#;
const DISK_BYTES: u64 = 4 << 20;

fn lines(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn count(line: &serde_json::Value, section: &str, field: &str) -> u64 {
    line[section][field]
        .as_u64()
        .unwrap_or_else(|| panic!("no {section}.{field} in {line}"))
}

#[test]
fn flush_metrics_counts_the_guests_io_under_firecrackers_names() {
    let Some(guest) = common::guest() else { return };
    let started = Instant::now();
    let vm = Instance::start("metrics", &["--accel", "emu"]);
    // Outside the instance's directory, which goes when it ends.
    let out_dir = temp_dir("metrics-files");
    let serial = out_dir.join("serial.txt");
    let metrics = out_dir.join("metrics.json");
    let disk = vm.dir.join("data.img");
    std::fs::write(&disk, vec![0x5a; DISK_BYTES as usize]).unwrap();
    // Reads the whole drive and 4 KiB of the RNG, says so, then stays up
    // long enough for the flushes below.
    // A host program the guest connects to over vsock.
    let vsock = out_dir.join("v.sock");
    let server = std::os::unix::net::UnixListener::bind(out_dir.join("v.sock_6000")).unwrap();
    let host = std::thread::spawn(move || {
        use std::io::Read as _;
        let (mut peer, _) = server.accept().expect("accept");
        let mut got = Vec::new();
        peer.read_to_end(&mut got).expect("read from the guest");
        got
    });
    let script = "dd if=/dev/vda of=/dev/null bs=65536 2>/dev/null; \
                  head -c 4096 /dev/hwrng > /dev/null; \
                  echo hello | vsock connect 2 6000 > /dev/null; \
                  echo METRICS-IO-DONE; sleep 20";
    vm.put_linux_boot(&guest, script);
    vm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    vm.bad(
        "PUT",
        "/drives/data",
        Some(r#"{"drive_id": "data", "path_on_host": "/nonexistent", "is_root_device": false}"#),
        "/nonexistent",
    );
    vm.ok(
        "PUT",
        "/drives/data",
        &format!(
            r#"{{"drive_id": "data", "path_on_host": "{}", "is_root_device": false, "is_read_only": true}}"#,
            disk.display()
        ),
    );
    vm.ok("PUT", "/entropy", "{}");
    vm.ok(
        "PUT",
        "/vsock",
        &format!(r#"{{"guest_cid": 42, "uds_path": "{}"}}"#, vsock.display()),
    );
    vm.ok(
        "PUT",
        "/serial",
        &format!(r#"{{"serial_out_path": "{}"}}"#, serial.display()),
    );
    vm.ok(
        "PUT",
        "/metrics",
        &format!(r#"{{"metrics_path": "{}"}}"#, metrics.display()),
    );
    vm.ok("PUT", "/actions", START);
    wait_line(&serial, common::BOOT_TIMEOUT, |l| l == "METRICS-IO-DONE");
    assert_eq!(host.join().unwrap(), b"hello\n");
    vm.ok("PATCH", "/vm", r#"{"state": "Paused"}"#);
    vm.ok("PATCH", "/vm", r#"{"state": "Resumed"}"#);
    assert_eq!(vm.get("/")["state"], "Running");

    vm.ok("PUT", "/actions", FLUSH);
    let first = lines(&metrics).pop().unwrap();
    eprintln!("first line: {first}");
    assert!(first["utc_timestamp_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert!(
        count(&first, "block_data", "read_bytes") >= DISK_BYTES,
        "{first}"
    );
    // Linux merges the reads into requests as large as it likes.
    assert!(count(&first, "block_data", "read_count") > 0);
    assert_eq!(count(&first, "block_data", "write_count"), 0);
    assert_eq!(
        count(&first, "block", "read_bytes"),
        count(&first, "block_data", "read_bytes"),
        "the aggregate of one drive"
    );
    assert!(count(&first, "entropy", "entropy_bytes") >= 4096, "{first}");
    assert!(count(&first, "uart", "write_count") >= "METRICS-IO-DONE".len() as u64);
    assert!(count(&first, "vcpu", "exit_io_out") > 0);
    assert_eq!(count(&first, "vsock", "conns_added"), 1, "{first}");
    // Linux's i8042 driver probes the controller through its data port.
    assert!(count(&first, "i8042", "read_count") + count(&first, "i8042", "write_count") > 0);
    assert_eq!(count(&first, "i8042", "reset_count"), 0);
    assert!(
        count(&first, "vcpu", "exit_mmio_write") > 0,
        "virtio notifies"
    );
    for (field, want) in [
        ("boot_source_count", 1),
        ("machine_cfg_count", 1),
        ("drive_count", 2),
        ("drive_fails", 1),
        ("entropy_count", 1),
        ("serial_count", 1),
        ("vsock_count", 1),
        ("metrics_count", 1),
        ("actions_count", 1),
        ("actions_fails", 0),
    ] {
        assert_eq!(
            count(&first, "put_api_requests", field),
            want,
            "{field}: {first}"
        );
    }
    assert!(count(&first, "get_api_requests", "instance_info_count") >= 1);
    assert!(first["latencies_us"]["pause_vm"].is_u64(), "{first}");
    assert!(first["latencies_us"]["resume_vm"].is_u64(), "{first}");
    assert!(first["api_server"]["process_startup_time_us"].is_u64());
    assert!(first["exits"]["vcpu0"]["io"].as_u64().unwrap() > 0);
    assert_eq!(first["ferrovisor"]["state"], "Running");
    // Fields Firecracker has that we do not count are not written.
    assert!(first["block_data"]["io_engine_throttled_events"].is_null());

    // The guest sleeps: its counters did not move since the first line.
    vm.ok("PUT", "/actions", FLUSH);
    let second = lines(&metrics).pop().unwrap();
    assert_eq!(count(&second, "block_data", "read_bytes"), 0, "{second}");
    assert_eq!(count(&second, "block_data", "read_count"), 0);
    assert_eq!(count(&second, "vsock", "conns_added"), 0);
    assert_eq!(
        count(&second, "put_api_requests", "actions_count"),
        1,
        "the first flush"
    );
    assert_eq!(count(&second, "put_api_requests", "drive_count"), 0);
    assert_eq!(count(&second, "get_api_requests", "instance_info_count"), 0);
    // Values stay.
    assert_eq!(second["latencies_us"], first["latencies_us"]);

    // The guest ends: the process writes a last line.
    let ended = vm.wait(Duration::from_secs(120));
    assert_eq!(ended.status, Some(0), "{}", ended.stderr);
    let all = lines(&metrics);
    // On a slow (loaded) host the run may outlast the periodic flush,
    // which adds its own lines after the two above.
    let periodic = (started.elapsed().as_secs() / 60) as usize;
    assert!(
        (3..=3 + periodic).contains(&all.len()),
        "two flushes, {periodic} periodic ones at most, and the last line: {} lines",
        all.len()
    );
    let last = all.last().unwrap();
    assert!(
        last["uart"]["write_count"].as_u64().unwrap() > 0,
        "the exit marker: {last}"
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}

#[test]
fn without_the_api_the_end_of_the_process_writes_the_metrics() {
    use std::io::Write as _;
    let dir = temp_dir("metrics-no-api");
    let kernel = common::firecracker::elf(&dir, "echo.elf", &guests::echo().unwrap());
    let config = dir.join("vm.json");
    let metrics = dir.join("metrics.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "boot-source": {"kernel_image_path": kernel, "boot_args": ""},
            "machine-config": {"vcpu_count": 1, "mem_size_mib": 32},
        })
        .to_string(),
    )
    .unwrap();
    let (mut child, out, err) = common::firecracker::spawn(&[
        "--config-file",
        config.to_str().unwrap(),
        "--no-api",
        "--accel",
        "emu",
        "--metrics-path",
        metrics.to_str().unwrap(),
    ]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"hi!q").unwrap();
    drop(stdin);
    let status = child.wait().unwrap();
    let err = String::from_utf8_lossy(&err.recv().unwrap()).into_owned();
    assert_eq!(status.code(), Some(1), "{err}");
    let out = String::from_utf8_lossy(&out.recv().unwrap()).into_owned();
    assert_eq!(out, "echo ready\nhi!");
    let all = lines(&metrics);
    assert_eq!(all.len(), 1, "the line written at the end");
    let last = &all[0];
    assert_eq!(
        count(last, "uart", "write_count"),
        out.len() as u64,
        "{last}"
    );
    assert!(count(last, "uart", "read_count") >= 4, "{last}");
    assert!(count(last, "vcpu", "exit_io_out") >= out.len() as u64);
    assert!(
        last["block"].is_null() && last["entropy"].is_null(),
        "no such devices"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_network_counters_match_what_the_host_tap_saw() {
    let Some(guest) = common::guest() else { return };
    let Some(ns) = common::netns::Netns::new("metrics", "fvtapm0", Some("10.0.2.1/24")) else {
        return;
    };
    let vm = Instance::start_via("metrics-net", &ns.wrapper(), &["--accel", "emu"]);
    let out_dir = temp_dir("metrics-net-files");
    let serial = out_dir.join("serial.txt");
    let metrics = out_dir.join("metrics.json");
    let script = "echo 1 > /proc/sys/net/ipv6/conf/eth0/disable_ipv6 2>/dev/null; \
                  ip addr add 10.0.2.15/24 dev eth0 && ip link set eth0 up && \
                  ping -c 3 -W 5 10.0.2.1 > /dev/null && echo METRICS-PING-DONE; sleep 20";
    vm.put_linux_boot(&guest, script);
    vm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    vm.ok(
        "PUT",
        "/network-interfaces/eth0",
        &format!(r#"{{"iface_id": "eth0", "host_dev_name": "{}"}}"#, ns.tap),
    );
    vm.ok(
        "PUT",
        "/serial",
        &format!(r#"{{"serial_out_path": "{}"}}"#, serial.display()),
    );
    vm.ok(
        "PUT",
        "/metrics",
        &format!(r#"{{"metrics_path": "{}"}}"#, metrics.display()),
    );
    vm.ok("PUT", "/actions", START);
    wait_line(&serial, common::BOOT_TIMEOUT, |l| l == "METRICS-PING-DONE");
    vm.ok("PUT", "/actions", FLUSH);
    let line = lines(&metrics).pop().unwrap();
    eprintln!("line: {line}");
    let (sent, received) = (ns.tap_stat("rx_packets"), ns.tap_stat("tx_packets"));
    // Three echo requests and an ARP each way at least.
    assert!(count(&line, "net_eth0", "tx_packets_count") >= 4, "{line}");
    assert!(count(&line, "net_eth0", "rx_packets_count") >= 4, "{line}");
    assert_eq!(count(&line, "net_eth0", "tx_packets_count"), sent, "{line}");
    assert_eq!(
        count(&line, "net_eth0", "rx_packets_count"),
        received,
        "{line}"
    );
    assert_eq!(
        count(&line, "net_eth0", "tx_bytes_count"),
        ns.tap_stat("rx_bytes"),
        "{line}"
    );
    assert_eq!(
        count(&line, "net", "tx_packets_count"),
        sent,
        "the aggregate"
    );
    assert_eq!(count(&line, "net_eth0", "rx_rate_limiter_throttled"), 0);
    assert_eq!(count(&line, "mmds", "rx_accepted"), 0, "no MMDS on eth0");
    assert_eq!(count(&line, "put_api_requests", "network_count"), 1);
    let _ = std::fs::remove_dir_all(&out_dir);
}
