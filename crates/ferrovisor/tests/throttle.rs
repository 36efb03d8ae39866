//! End to end: rate limiters (`--disk ...,bw=`/`ops=`, `--net
//! ...,tx_bw=`) seen from inside the Debian test guest on emu. The guest
//! times its own transfers (/proc/uptime, 10 ms resolution); each test
//! moves enough beyond the bucket's initial fill that an unlimited device,
//! which does the same in a fraction of a second, fails the lower bound,
//! and allows a generous upper bound for a loaded two-core machine.
//!
//! Without a test guest the tests are SKIPPED (common/).

mod common;

use std::path::PathBuf;

use common::{boot, guest};

/// A sparse image of `len` bytes.
fn image(name: &str, len: u64) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrovisor-throttle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(len).unwrap();
    path
}

#[test]
fn a_disk_with_a_bandwidth_limit_reads_at_that_rate() {
    let Some(guest) = guest() else { return };
    let disk = image("bw.img", 16 << 20);
    // 2 MiB/s, the bucket full (2 MiB) at the start: reading 6 MiB takes
    // 2 s for the 4 MiB beyond it.
    let arg = format!("path={},bw=2M", disk.display());
    let b = boot(
        &guest,
        1,
        &common::timed("dd if=/dev/vda of=/dev/null bs=64k count=96 iflag=direct"),
        &["--disk", &arg],
    );
    let took = b.elapsed_secs();
    eprintln!("6 MiB at 2 MiB/s: {took:.2} s");
    assert!(
        (1.8..8.0).contains(&took),
        "took {took} s; tail:\n{}",
        b.tail()
    );
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

#[test]
fn a_disk_with_an_ops_limit_serves_that_many_requests_per_second() {
    let Some(guest) = guest() else { return };
    let disk = image("ops.img", 16 << 20);
    // 100 requests per second, 100 at the start: 300 direct 4 KiB reads
    // (one request each) take 2 s for the 200 beyond the bucket.
    let arg = format!("path={},ops=100", disk.display());
    let b = boot(
        &guest,
        1,
        &common::timed("dd if=/dev/vda of=/dev/null bs=4k count=300 iflag=direct"),
        &["--disk", &arg],
    );
    let took = b.elapsed_secs();
    eprintln!("300 requests at 100/s: {took:.2} s");
    assert!(
        (1.8..8.0).contains(&took),
        "took {took} s; tail:\n{}",
        b.tail()
    );
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

#[test]
fn an_unlimited_disk_is_faster_than_the_limits_tested() {
    // The control: the same reads without a limiter end well under the
    // lower bounds above, so those bounds measure the limiter.
    let Some(guest) = guest() else { return };
    let disk = image("free.img", 16 << 20);
    let arg = format!("path={}", disk.display());
    let b = boot(
        &guest,
        1,
        &common::timed(
            "dd if=/dev/vda of=/dev/null bs=64k count=96 iflag=direct && \
             dd if=/dev/vda of=/dev/null bs=4k count=300 iflag=direct",
        ),
        &["--disk", &arg],
    );
    let took = b.elapsed_secs();
    eprintln!("unlimited, both reads: {took:.2} s");
    assert!(took < 1.8, "took {took} s; tail:\n{}", b.tail());
    let _ = std::fs::remove_dir_all(disk.parent().unwrap());
}

#[test]
fn an_entropy_device_with_a_bandwidth_limit_gives_that_many_bytes_per_second() {
    let Some(guest) = guest() else { return };
    // 1 KiB/s, 1 KiB at the start: 3 KiB take at least 2 s (more when the
    // kernel's own hwrng thread takes some of the tokens).
    let b = boot(
        &guest,
        1,
        &common::timed("head -c 3072 /dev/hwrng | wc -c"),
        &["--rng=bw=1K"],
    );
    b.expect("3072");
    let took = b.elapsed_secs();
    eprintln!("3 KiB of entropy at 1 KiB/s: {took:.2} s");
    assert!(
        (1.8..15.0).contains(&took),
        "took {took} s; tail:\n{}",
        b.tail()
    );
}

/// PATCH /drives/{id} with a rate limiter on a running Linux guest (API,
/// emu): the guest reads 1 MiB again and again; at 256 KiB/s a read takes
/// about 3 s, after the PATCH raises the bucket to 100 MiB/s it takes a
/// fraction of one. `GET /vm/config` shows the patched limiter.
#[test]
fn a_patched_drive_limiter_takes_effect_in_the_running_guest() {
    use common::firecracker::{serial, Instance};
    use std::time::Duration;

    let Some(guest) = guest() else { return };
    let vm = Instance::start("patch-limiter", &["--accel", "emu"]);
    let out = vm.dir.join("serial.out");
    let disk = vm.dir.join("data.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(4 << 20)
        .unwrap();
    let read =
        common::timed("dd if=/dev/vda of=/dev/null bs=64k count=16 iflag=direct 2>/dev/null");
    let script = format!("i=0; while [ $i -lt 100 ]; do i=$((i+1)); {read}; done");
    vm.ok(
        "PUT",
        "/boot-source",
        &serde_json::json!({
            "kernel_image_path": guest.kernel,
            "initrd_path": guest.initrd,
            "boot_args": format!("{} ferrovisor.cmd={}", common::CMDLINE, common::base64(script.as_bytes())),
        })
        .to_string(),
    );
    vm.ok(
        "PUT",
        "/machine-config",
        r#"{"vcpu_count": 1, "mem_size_mib": 256}"#,
    );
    vm.ok(
        "PUT",
        "/drives/data",
        &serde_json::json!({
            "drive_id": "data", "path_on_host": disk, "is_root_device": false,
            "rate_limiter": {"bandwidth": {"size": 262144, "refill_time": 1000}},
        })
        .to_string(),
    );
    vm.ok(
        "PUT",
        "/serial",
        &serde_json::json!({"serial_out_path": out}).to_string(),
    );
    vm.bad(
        "PATCH",
        "/network-interfaces/eth0",
        Some(r#"{"iface_id": "eth0", "rx_rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}"#),
        "after the microVM starts",
    );
    vm.ok("PUT", "/actions", r#"{"action_type": "InstanceStart"}"#);

    // The guest's read times so far, in hundredths of a second; waits
    // until there are at least `n`.
    let reads = |n: usize, timeout: Duration| -> Vec<u64> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let times: Vec<u64> = serial(&out)
                .lines()
                .filter_map(|l| l.strip_prefix("elapsed_cs="))
                .map(|t| t.trim().parse().unwrap())
                .collect();
            if times.len() >= n {
                return times;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{} reads of {n}; serial:\n{}",
                times.len(),
                serial(&out)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The second read: the bucket's initial fill is spent.
    let before = reads(2, common::BOOT_TIMEOUT);
    assert!(
        before[1] >= 250,
        "1 MiB at 256 KiB/s took {} cs: {before:?}",
        before[1]
    );

    vm.bad(
        "PATCH",
        "/network-interfaces/eth0",
        Some(r#"{"iface_id": "eth0", "rx_rate_limiter": {"ops": {"size": 1, "refill_time": 1}}}"#),
        "no network interface",
    );
    vm.ok(
        "PATCH",
        "/drives/data",
        r#"{"drive_id": "data", "rate_limiter": {"bandwidth": {"size": 104857600, "refill_time": 1000}}}"#,
    );
    let patched_at = reads(0, Duration::ZERO).len();
    // The read in flight may still be slow; the one after it is not.
    let after = reads(patched_at + 2, Duration::from_secs(60));
    let fast = after[patched_at + 1];
    assert!(
        fast < 100,
        "1 MiB after the PATCH to 100 MiB/s took {fast} cs: {after:?}"
    );
    let config = vm.get("/vm/config");
    assert_eq!(
        config["drives"][0]["rate_limiter"]["bandwidth"]["size"], 104857600,
        "{config}"
    );
}
