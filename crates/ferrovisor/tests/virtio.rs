//! End to end: the Debian test guest (scripts/build-test-guest) uses
//! virtio-mmio devices with its own drivers on the emu accelerator: a disk
//! it reads and writes, a read-only disk, and the entropy device.
//!
//! The boot helpers are in common/ (guest lookup, SKIPPED without a guest
//! unless `FERROVISOR_REQUIRE_GUEST=1`).

mod common;

use std::path::PathBuf;

use common::{boot, guest, host_sha256};

/// The byte at `offset` of the test images.
fn pattern(offset: usize) -> u8 {
    (offset.wrapping_mul(7).wrapping_add(offset >> 9)) as u8
}

fn image(name: &str, len: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrovisor-virtio-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    let data: Vec<u8> = (0..len).map(pattern).collect();
    std::fs::write(&path, data).unwrap();
    path
}

#[test]
fn linux_reads_and_writes_a_virtio_disk_and_cannot_write_a_read_only_one() {
    let Some(guest) = guest() else { return };
    let len = 4 << 20;
    let rw = image("rw.img", len);
    let ro = image("ro.img", len);
    let rw_sum = host_sha256(&rw);
    let ro_sum = host_sha256(&ro);
    let rw_arg = format!("path={},id=data0", rw.display());
    let ro_arg = format!("path={},readonly=on", ro.display());
    let b = boot(
        &guest,
        1,
        "echo size=$(cat /sys/block/vda/size) ro=$(cat /sys/block/vdb/ro); \
         echo serial=$(cat /sys/block/vda/serial); \
         sha256sum /dev/vda /dev/vdb; \
         head -c 8192 /dev/zero | tr '\\0' Z | dd of=/dev/vda bs=4096 seek=3 conv=fsync 2>/dev/null \
           && echo rw-write=ok; \
         if head -c 512 /dev/zero | dd of=/dev/vdb bs=512 conv=fsync 2>/dev/null; \
           then echo ro-write=ok; else echo ro-write=refused; fi; \
         sync",
        &["--disk", &rw_arg, "--disk", &ro_arg],
    );
    b.expect(&format!("size={} ro=1", len / 512));
    b.expect("serial=data0");
    b.expect(&format!("{rw_sum}  /dev/vda"));
    b.expect(&format!("{ro_sum}  /dev/vdb"));
    b.expect("rw-write=ok");
    b.expect("ro-write=refused");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());

    // Exactly the bytes the guest wrote changed.
    let data = std::fs::read(&rw).unwrap();
    assert_eq!(data.len(), len);
    for (i, &byte) in data.iter().enumerate() {
        let want = if (3 * 4096..5 * 4096).contains(&i) {
            b'Z'
        } else {
            pattern(i)
        };
        assert_eq!(byte, want, "byte {i:#x} of the disk image");
    }
    assert_eq!(host_sha256(&ro), ro_sum, "the read-only image changed");
    let _ = std::fs::remove_dir_all(rw.parent().unwrap());
}

#[test]
fn linux_reads_entropy_from_virtio_rng() {
    let Some(guest) = guest() else { return };
    let b = boot(
        &guest,
        1,
        "echo rng=$(cat /sys/class/misc/hw_random/rng_current); \
         echo bytes=$(head -c 64 /dev/hwrng | wc -c)",
        &["--rng"],
    );
    b.expect("rng=virtio_rng");
    b.expect("bytes=64");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());
}

#[test]
fn disk_errors_are_one_line() {
    let Some(guest) = guest() else { return };
    let run = |extra: &[&str]| common::refused(&guest, extra);
    let err = run(&["--disk", "path=/nonexistent/disk.img"]);
    assert!(err.contains("/nonexistent/disk.img"), "{err}");
    let err = run(&["--disk", "path=/a.img,colour=blue"]);
    assert!(err.contains("unknown option 'colour'"), "{err}");
    let err = run(&["--disk", "path=/a.img,cache=sometimes"]);
    assert!(
        err.contains("cache=sometimes") || err.contains("'sometimes'"),
        "{err}"
    );
    let err = run(&["--disk", "path=/a.img,id=x", "--disk", "path=/b.img,id=x"]);
    assert!(err.contains("id=x"), "{err}");
}
