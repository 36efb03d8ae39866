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
