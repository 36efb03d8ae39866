//! Images made and checked by QEMU's own tools (qemu-img, qemu-io).

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::raw::RawFile;
use crate::{Backend, Error, Qcow2};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let d =
            std::env::temp_dir().join(format!("ferrovisor-qcow2-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        Dir(d)
    }
    fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd} {args:?}: {text}");
    text
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn create(path: &Path, opts: &str, size: &str) {
    run(
        "qemu-img",
        &["create", "-q", "-f", "qcow2", "-o", opts, s(path), size],
    );
}

fn qemu_io(path: &Path, cmd: &str) -> String {
    run("qemu-io", &["-f", "qcow2", "-c", cmd, s(path)])
}

fn opener(p: &Path) -> std::io::Result<RawFile> {
    Ok(RawFile::new(File::open(p)?, false))
}

fn open(path: &Path, writable: bool) -> Result<Qcow2, Error> {
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .unwrap();
    Qcow2::open(RawFile::new(file, false), path, writable, &opener)
}

/// `qemu-img check` finds no error and no leak.
fn check_clean(path: &Path) {
    let out = Command::new("qemu-img")
        .args(["check", s(path)])
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "qemu-img check {}: {text}",
        path.display()
    );
    assert!(text.contains("No errors were found"), "{text}");
}

fn read(img: &Qcow2, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    img.read_at(&mut buf, offset).unwrap();
    buf
}

#[test]
fn reads_what_qemu_wrote_v2_and_v3() {
    let d = Dir::new("read");
    for (name, compat) in [("v2", "compat=0.10"), ("v3", "compat=1.1")] {
        let p = d.path(name);
        create(&p, compat, "4M");
        qemu_io(&p, "write -P 0xab 0 1M");
        qemu_io(&p, "write -P 0xcd 2M 4k");
        let img = open(&p, false).unwrap();
        assert_eq!(img.size(), 4 << 20);
        assert_eq!(img.version(), if name == "v2" { 2 } else { 3 });
        assert!(read(&img, 0, 1 << 20).iter().all(|&b| b == 0xab), "{name}");
        assert!(
            read(&img, 1 << 20, 1 << 20).iter().all(|&b| b == 0),
            "{name}"
        );
        let r = read(&img, (2 << 20) - 512, 8192);
        assert!(r[..512].iter().all(|&b| b == 0));
        assert!(r[512..512 + 4096].iter().all(|&b| b == 0xcd));
        assert!(r[512 + 4096..].iter().all(|&b| b == 0));
        // A read-only image refuses writes.
        assert!(img.write_at(&[1], 0).is_err());
    }
}

/// Writes that land across clusters, partly and wholly, in fresh and
/// allocated clusters; returns the expected contents.
fn scribble(img: &Qcow2, size: usize) -> Vec<u8> {
    let mut expect = vec![0u8; size];
    let mut put = |off: usize, data: Vec<u8>| {
        img.write_at(&data, off as u64).unwrap();
        expect[off..off + data.len()].copy_from_slice(&data);
    };
    put(0, vec![0x11; 4096]);
    put(100, vec![0x22; 10]);
    put(65536 - 512, vec![0x33; 1024]);
    put(3 << 20, (0..300_000).map(|i| (i % 251) as u8).collect());
    put(size - 512, vec![0x44; 512]);
    put(1 << 20, vec![0x55; 1 << 20]);
    expect
}

#[test]
fn writes_pass_qemu_img_check_and_read_back_in_qemu() {
    let d = Dir::new("write");
    // Small clusters: many L2 tables and refcount blocks, so the caches
    // overflow and new refcount blocks are made.
    for (name, opts) in [
        ("v2", "compat=0.10"),
        ("v3", "compat=1.1"),
        ("small", "compat=1.1,cluster_size=512"),
        ("refbits1", "compat=1.1,cluster_size=4096,refcount_bits=1"),
        ("refbits64", "compat=1.1,refcount_bits=64"),
    ] {
        let p = d.path(name);
        create(&p, opts, "8M");
        qemu_io(&p, "write -P 0xab 2M 64k");
        let expect = {
            let img = open(&p, true).unwrap();
            let mut e = scribble(&img, 8 << 20);
            e[(2 << 20)..(2 << 20) + 65536].fill(0xab);
            // The part of 0xab that the 0x55 write left is gone: redo.
            e[1 << 20..2 << 20].fill(0x55);
            img.flush().unwrap();
            assert_eq!(read(&img, 0, 8 << 20), e, "{name}: read back before close");
            e
        };
        check_clean(&p);
        let raw = d.path(&format!("{name}.raw"));
        std::fs::write(&raw, &expect).unwrap();
        run(
            "qemu-img",
            &["compare", "-f", "qcow2", "-F", "raw", s(&p), s(&raw)],
        );
        // And again after reopening, overwriting allocated clusters.
        let img = open(&p, true).unwrap();
        img.write_at(&[0x66; 700], 1000).unwrap();
        assert_eq!(read(&img, 990, 720)[10..710], [0x66; 700]);
        drop(img);
        check_clean(&p);
        qemu_io(&p, "read -P 0x66 1000 700");
    }
}

#[test]
fn backing_chains_read_through_and_write_on_top() {
    let d = Dir::new("backing");
    let base = d.path("base.raw");
    let data: Vec<u8> = (0..4 << 20).map(|i: u32| (i / 4096) as u8).collect();
    std::fs::write(&base, &data).unwrap();
    let mid = d.path("mid.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            s(&base),
            "-F",
            "raw",
            s(&mid),
        ],
    );
    qemu_io(&mid, "write -P 0xee 1M 64k");
    let top = d.path("top.qcow2");
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "qcow2",
            "-b",
            "mid.qcow2",
            "-F",
            "qcow2",
            s(&top),
        ],
    );
    let base_before = std::fs::read(&base).unwrap();
    let mid_before = std::fs::read(&mid).unwrap();
    let mut expect = data.clone();
    expect[1 << 20..(1 << 20) + 65536].fill(0xee);
    {
        let img = open(&top, true).unwrap();
        assert_eq!(read(&img, 0, 4 << 20), expect);
        // Partial writes copy the rest of the cluster up from below.
        img.write_at(&[0x77; 100], 5000).unwrap();
        img.write_at(&[0x78; 100], (1 << 20) + 300).unwrap();
        img.write_zeroes(2 << 20, 65536).unwrap();
        expect[5000..5100].fill(0x77);
        expect[(1 << 20) + 300..(1 << 20) + 400].fill(0x78);
        expect[2 << 20..(2 << 20) + 65536].fill(0);
        assert_eq!(read(&img, 0, 4 << 20), expect);
    }
    assert_eq!(std::fs::read(&base).unwrap(), base_before, "base unchanged");
    assert_eq!(std::fs::read(&mid).unwrap(), mid_before, "middle unchanged");
    check_clean(&top);
    let raw = d.path("expect.raw");
    std::fs::write(&raw, &expect).unwrap();
    run(
        "qemu-img",
        &["compare", "-f", "qcow2", "-F", "raw", s(&top), s(&raw)],
    );
}

#[test]
fn compressed_and_zero_clusters() {
    let d = Dir::new("compressed");
    let raw = d.path("src.raw");
    let data: Vec<u8> = (0..2 << 20)
        .map(|i: u32| ((i / 512) % 7) as u8 * 31)
        .collect();
    std::fs::write(&raw, &data).unwrap();
    let c = d.path("c.qcow2");
    run(
        "qemu-img",
        &["convert", "-c", "-f", "raw", "-O", "qcow2", s(&raw), s(&c)],
    );
    let mut expect = data.clone();
    {
        let img = open(&c, true).unwrap();
        assert_eq!(read(&img, 0, 2 << 20), data);
        // Writing into a compressed cluster replaces it.
        img.write_at(&[9; 10], 70_000).unwrap();
        expect[70_000..70_010].fill(9);
        assert_eq!(read(&img, 0, 2 << 20), expect);
    }
    check_clean(&c);
    std::fs::write(&raw, &expect).unwrap();
    run(
        "qemu-img",
        &["compare", "-f", "qcow2", "-F", "raw", s(&c), s(&raw)],
    );

    let z = d.path("z.qcow2");
    create(&z, "compat=1.1", "1M");
    qemu_io(&z, "write -P 0xab 0 1M");
    qemu_io(&z, "write -z 64k 128k");
    {
        let img = open(&z, true).unwrap();
        let r = read(&img, 0, 1 << 20);
        assert!(r[..65536].iter().all(|&b| b == 0xab));
        assert!(r[65536..196608].iter().all(|&b| b == 0));
        assert!(r[196608..].iter().all(|&b| b == 0xab));
        // Ours: a whole cluster becomes a zero cluster, a part is written.
        img.write_zeroes(512 << 10, 65536 + 512).unwrap();
        img.write_at(&[1; 512], 64 << 10).unwrap();
    }
    check_clean(&z);
    qemu_io(&z, "read -P 0 512k 65536");
    qemu_io(&z, "read -P 0 576k 512");
    qemu_io(&z, "read -P 0xab 577k 1k");
    qemu_io(&z, "read -P 1 64k 512");
    let map = run("qemu-img", &["map", "--output=json", s(&z)]);
    assert!(map.contains("\"start\": 524288, \"length\": 65536, \"depth\": 0, \"present\": true, \"zero\": true, \"data\": false"), "{map}");
}

/// Hostile images: each is a clear error at open, or an I/O error on the
/// request that meets the bad table; never a panic, a hang or a huge
/// allocation.
mod hostile {
    use super::*;

    /// A fresh v3 image with 64 KiB clusters and data at 0 (layout made
    /// by qemu-img: header, refcount table at 64K, its block at 128K, L1
    /// at 192K, the L2 table and the data cluster after).
    fn base(d: &Dir, name: &str) -> PathBuf {
        let p = d.path(name);
        create(&p, "compat=1.1", "1M");
        qemu_io(&p, "write -P 0xab 0 64k");
        p
    }

    fn patch(p: &Path, at: usize, bytes: &[u8]) {
        let mut data = std::fs::read(p).unwrap();
        if data.len() < at + bytes.len() {
            data.resize(at + bytes.len(), 0);
        }
        data[at..at + bytes.len()].copy_from_slice(bytes);
        std::fs::write(p, data).unwrap();
    }

    fn be64(p: &Path, at: usize) -> u64 {
        let data = std::fs::read(p).unwrap();
        u64::from_be_bytes(data[at..at + 8].try_into().unwrap())
    }

    fn open_err(p: &Path, writable: bool) -> String {
        match open(p, writable) {
            Ok(_) => panic!("{} opened", p.display()),
            Err(e) => {
                let mut text = e.to_string();
                let mut src = std::error::Error::source(&e);
                while let Some(s) = src {
                    text += &format!(": {s}");
                    src = s.source();
                }
                text
            }
        }
    }

    #[test]
    fn bad_headers_are_refused_at_open() {
        let d = Dir::new("hostile-header");
        let cases: &[(&str, usize, &[u8], &str)] = &[
            ("magic", 0, b"QFI\x00", "no qcow2 magic"),
            ("version", 4, &4u32.to_be_bytes(), "version 4"),
            ("cluster-bits", 20, &30u32.to_be_bytes(), "cluster bits 30"),
            ("encrypted", 32, &1u32.to_be_bytes(), "encrypted"),
            ("l1-huge", 36, &0x7fff_ffffu32.to_be_bytes(), "QEMU's limit"),
            ("l1-small", 24, &(1u64 << 40).to_be_bytes(), "needed"),
            (
                "l1-past-eof",
                40,
                &(1u64 << 40).to_be_bytes(),
                "past the end of the file",
            ),
            ("l1-unaligned", 40, &0x30001u64.to_be_bytes(), "unaligned"),
            ("overlap", 40, &0x10000u64.to_be_bytes(), "overlap"),
            (
                "reftable-huge",
                56,
                &0xffffu32.to_be_bytes(),
                "refcount table",
            ),
            (
                "unknown-feature",
                72,
                &(1u64 << 20).to_be_bytes(),
                "unknown incompatible",
            ),
            ("data-file", 72, &4u64.to_be_bytes(), "external data file"),
            ("extl2", 72, &16u64.to_be_bytes(), "subclusters"),
            (
                "refcount-order",
                96,
                &7u32.to_be_bytes(),
                "refcount order 7",
            ),
            (
                "header-length",
                100,
                &0x10008u32.to_be_bytes(),
                "header length",
            ),
            ("header-short", 100, &50u32.to_be_bytes(), "header length"),
            (
                "backing-name",
                16,
                &5000u32.to_be_bytes(),
                "backing file name",
            ),
        ];
        for &(name, at, bytes, expect) in cases {
            let p = base(&d, name);
            patch(&p, at, bytes);
            if name == "backing-name" {
                patch(&p, 8, &512u64.to_be_bytes());
            }
            let err = open_err(&p, false);
            assert!(err.contains(expect), "{name}: {err}");
        }
        // A header extension longer than the cluster.
        let p = base(&d, "extension");
        let hl = 112; // qemu-img's v3 header length
        patch(&p, hl, &[0x12, 0x34, 0x56, 0x78, 0x7f, 0xff, 0xff, 0xff]);
        let err = open_err(&p, false);
        assert!(err.contains("extension"), "{err}");
    }

    #[test]
    fn tables_inside_other_tables_are_refused_at_open() {
        // qemu-img's layout: refcount table at 64K, its block at 128K,
        // L1 at 192K.
        let d = Dir::new("hostile-nested");
        for (name, at, value, expect) in [
            ("l2-in-l1", 0x30000, (1u64 << 63) | 0x30000, "overlaps"),
            ("l2-in-reftable", 0x30000, (1 << 63) | 0x10000, "overlaps"),
            ("l2-is-refblock", 0x30000, (1 << 63) | 0x20000, "both"),
            ("refblock-in-l1", 0x10000, 0x30000, "overlaps"),
        ] {
            let p = base(&d, name);
            assert_eq!(be64(&p, 40), 0x30000, "L1 offset");
            assert_eq!(be64(&p, 48), 0x10000, "refcount table offset");
            patch(&p, at, &value.to_be_bytes());
            let err = open_err(&p, false);
            assert!(err.contains(expect), "{name}: {err}");
        }
    }

    #[test]
    fn a_table_past_the_end_of_the_file_is_never_allocated() {
        // 512-byte clusters: a refcount block counts 256 clusters, so
        // writing 140 KiB needs a second block, at 128 KiB, where the
        // (hostile) last L1 entry says an L2 table is.
        let d = Dir::new("hostile-ahead");
        let p = d.path("ahead.qcow2");
        create(&p, "cluster_size=512,compat=1.1", "1M");
        let l1 = be64(&p, 40) as usize;
        assert!(std::fs::metadata(&p).unwrap().len() < 0x20000);
        patch(&p, l1 + 31 * 8, &((1u64 << 63) | 0x20000).to_be_bytes());
        let data = vec![0x5a; 140 << 10];
        {
            let img = open(&p, true).unwrap();
            img.write_at(&data, 0).unwrap();
            img.flush().unwrap();
        }
        let img = open(&p, false).unwrap();
        assert!(read(&img, 0, data.len()) == data);
    }

    /// Issue 13: an L2 entry naming the cluster just past the end of the
    /// file, where the next allocation lands. Opened writable, a guest
    /// write elsewhere allocated that cluster and the two guest offsets
    /// shared it (the write showed through the hostile entry).
    #[test]
    fn a_cluster_past_the_end_of_the_file_is_refused_not_aliased() {
        let d = Dir::new("hostile-alias");
        let p = base(&d, "alias");
        let l1 = be64(&p, 40) as usize;
        let l2 = (be64(&p, l1) & OFFSET) as usize;
        let end = std::fs::metadata(&p).unwrap().len().div_ceil(1 << 16) << 16;
        // Guest cluster 1 (at 64 KiB) names the next cluster allocated.
        patch(&p, l2 + 8, &((1u64 << 63) | end).to_be_bytes());
        let e = open_err(&p, true);
        assert!(e.contains("past the end of the file"), "{e}");
        assert!(e.contains("qemu-img check"), "{e}");
        // Read-only nothing is allocated; that cluster reads as corrupt.
        let img = open(&p, false).unwrap();
        let e = img.read_at(&mut [0u8; 512], 1 << 16).unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
        assert_eq!(read(&img, 0, 512), vec![0xab; 512]);
        drop(img);
        // The same entry within the file is fine: nothing aliases it.
        patch(&p, l2 + 8, &0u64.to_be_bytes());
        let img = open(&p, true).unwrap();
        img.write_at(&[7; 512], 2 << 16).unwrap();
        assert_eq!(read(&img, 1 << 16, 512), vec![0; 512]);
    }

    /// A compressed cluster whose last sector lies past the end of the
    /// file: the next cluster allocated starts after it, so a write never
    /// lands inside the compressed bytes.
    #[test]
    fn allocation_starts_after_a_compressed_cluster_that_ends_past_the_file() {
        let d = Dir::new("hostile-ztail");
        let p = base(&d, "ztail");
        let l1 = be64(&p, 40) as usize;
        let l2 = (be64(&p, l1) & OFFSET) as usize;
        let len = std::fs::metadata(&p).unwrap().len();
        let end = len.div_ceil(1 << 16) << 16;
        // Compressed, starting 512 bytes before the end of the last
        // cluster, 8 sectors long: it reaches into the next cluster.
        let start = end - 512;
        let x = 62 - (16 - 8);
        patch(
            &p,
            l2 + 8,
            &((1u64 << 62) | (7u64 << x) | start).to_be_bytes(),
        );
        let img = open(&p, true).unwrap();
        img.write_at(&[7; 65536], 2 << 16).unwrap();
        img.flush().unwrap();
        drop(img);
        let l2_after = std::fs::read(&p).unwrap();
        let e = u64::from_be_bytes(l2_after[l2 + 16..l2 + 24].try_into().unwrap()) & OFFSET;
        assert!(
            e >= start + 8 * 512,
            "new cluster at {e:#x} inside the compressed one"
        );
    }

    #[test]
    fn corrupt_and_dirty_images_are_read_only() {
        let d = Dir::new("hostile-bits");
        for (name, bit, expect) in [("corrupt", 2u8, "corrupt"), ("dirty", 1, "dirty")] {
            let p = base(&d, name);
            patch(&p, 79, &[bit]);
            let err = open_err(&p, true);
            assert!(err.contains(expect), "{err}");
            let img = open(&p, false).unwrap();
            assert!(read(&img, 0, 65536).iter().all(|&b| b == 0xab));
        }
        // Unknown autoclear bits are cleared by a writer (QEMU's rule).
        let p = base(&d, "autoclear");
        patch(&p, 88, &(1u64 << 40).to_be_bytes());
        drop(open(&p, true).unwrap());
        assert_eq!(be64(&p, 88), 0);
        check_clean(&p);
    }

    #[test]
    fn a_backing_loop_ends_in_an_error() {
        let d = Dir::new("hostile-loop");
        let a = d.path("a.qcow2");
        let b = d.path("b.qcow2");
        create(&a, "compat=1.1", "1M");
        run(
            "qemu-img",
            &[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "a.qcow2",
                "-F",
                "qcow2",
                s(&b),
            ],
        );
        // a's backing file is b: a loop (rewritten by hand: qemu-img
        // refuses to make one).
        run(
            "qemu-img",
            &[
                "rebase",
                "-u",
                "-f",
                "qcow2",
                "-b",
                "b.qcow2",
                "-F",
                "qcow2",
                s(&a),
            ],
        );
        let err = open_err(&b, false);
        assert!(err.contains("backing chain longer than 16"), "{err}");
        // And a missing backing file is named.
        run(
            "qemu-img",
            &[
                "rebase",
                "-u",
                "-f",
                "qcow2",
                "-b",
                "gone.qcow2",
                "-F",
                "qcow2",
                s(&b),
            ],
        );
        let err = open_err(&b, false);
        assert!(err.contains("gone.qcow2"), "{err}");
    }

    #[test]
    fn bad_tables_fail_the_request_that_meets_them() {
        let d = Dir::new("hostile-tables");
        let p = base(&d, "tables");
        let l1 = be64(&p, 40) as usize;
        let l2 = (be64(&p, l1) & OFFSET) as usize;
        let expect_io = |img: &Qcow2, what: &str| {
            let mut buf = vec![0u8; 4096];
            let e = img.read_at(&mut buf, 0).unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
            let e = img.write_at(&buf, 0).unwrap_err();
            assert!(
                e.to_string().contains(what) || e.kind() == std::io::ErrorKind::InvalidData,
                "{e}"
            );
        };
        let orig = std::fs::read(&p).unwrap();
        // A data cluster past the end of the file: refused writable (see
        // a_cluster_past_the_end_of_the_file_is_refused_not_aliased).
        patch(&p, l2, &((1u64 << 63) | (1 << 50)).to_be_bytes());
        let e = open(&p, false)
            .unwrap()
            .read_at(&mut [0u8; 512], 0)
            .unwrap_err();
        assert!(e.to_string().contains("past the end"), "{e}");
        assert!(open_err(&p, true).contains("past the end"));
        let len = std::fs::metadata(&p).unwrap().len();
        assert!(len < 1 << 30, "the file did not grow to the hostile offset");
        // An unaligned data cluster.
        std::fs::write(&p, &orig).unwrap();
        patch(&p, l2, &((1u64 << 63) | 0x50200).to_be_bytes());
        expect_io(&open(&p, true).unwrap(), "unaligned");
        // A data cluster that is the L1 table: read, not written.
        std::fs::write(&p, &orig).unwrap();
        patch(&p, l2, &((1u64 << 63) | l1 as u64).to_be_bytes());
        let img = open(&p, true).unwrap();
        read(&img, 0, 512);
        let e = img.write_at(&[1; 512], 0).unwrap_err();
        assert!(e.to_string().contains("metadata"), "{e}");
        drop(img);
        // An L2 table past the end of the file.
        std::fs::write(&p, &orig).unwrap();
        patch(&p, l1, &((1u64 << 63) | (1 << 40)).to_be_bytes());
        expect_io(&open(&p, true).unwrap(), "past the end");
        // A compressed cluster of garbage.
        std::fs::write(&p, &orig).unwrap();
        let data = be64(&p, l2) & OFFSET;
        patch(&p, data as usize, &[0xff; 512]);
        patch(&p, l2, &((1u64 << 62) | data).to_be_bytes());
        let img = open(&p, false).unwrap();
        let e = img.read_at(&mut [0u8; 512], 0).unwrap_err();
        assert!(e.to_string().contains("inflate"), "{e}");
        // A request past the end of the image.
        std::fs::write(&p, &orig).unwrap();
        let img = open(&p, false).unwrap();
        assert!(img.read_at(&mut [0u8; 512], (1 << 20) - 256).is_err());
        assert!(img.read_at(&mut [0u8; 512], u64::MAX - 10).is_err());
    }

    const OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
}

#[test]
fn o_direct_takes_unaligned_requests_and_keeps_a_raw_disk_size() {
    use std::os::unix::fs::OpenOptionsExt;
    let d = Dir::new("direct");
    let p = d.path("disk.raw");
    // 5 KiB + 512: the last O_DIRECT block is partial.
    let len = 5 * 1024 + 512;
    let mut expect: Vec<u8> = (0..len).map(|i| (i % 253) as u8).collect();
    std::fs::write(&p, &expect).unwrap();
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(&p)
        .expect("O_DIRECT on the temporary directory's filesystem");
    let raw = RawFile::disk(file, true, len as u64);
    assert!(raw.is_direct());
    for (at, n, byte) in [
        (512usize, 512usize, 1u8),
        (1000, 3000, 2),
        (len - 512, 512, 3),
        (0, 4096, 4),
    ] {
        raw.write_at(&vec![byte; n], at as u64).unwrap();
        expect[at..at + n].fill(byte);
    }
    let mut back = vec![0u8; len - 7];
    raw.read_at(&mut back, 7).unwrap();
    assert_eq!(back, expect[7..]);
    assert_eq!(
        std::fs::metadata(&p).unwrap().len(),
        len as u64,
        "size kept"
    );
    assert!(
        raw.read_at(&mut [0u8; 16], len as u64 - 8).is_err(),
        "past the end"
    );
    assert_eq!(std::fs::read(&p).unwrap(), expect);
}

/// Header extensions end with the first cluster: with 512-byte clusters
/// the bytes after it are tables and guest data, which writes change, so
/// an extension that runs past it is refused at open (found by fuzzing:
/// such an image opened, was written, then no longer opened).
#[test]
fn header_extensions_end_with_the_first_cluster() {
    use std::os::unix::fs::FileExt;
    let d = Dir::new("ext-cluster");
    let p = d.path("small");
    create(&p, "compat=0.10,cluster_size=512", "1M");
    // A v2 header is 72 bytes; then an extension of an unknown kind whose
    // length ends inside the second cluster.
    let mut ext = Vec::new();
    ext.extend_from_slice(&0x1234_5678u32.to_be_bytes());
    ext.extend_from_slice(&500u32.to_be_bytes());
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&ext, 72).unwrap();
    drop(f);
    let e = open(&p, false).err().expect("refused");
    assert!(e.to_string().contains("past the first cluster"), "{e}");
    // One that fits in the first cluster is skipped as before.
    let f = OpenOptions::new().write(true).open(&p).unwrap();
    f.write_all_at(&16u32.to_be_bytes(), 76).unwrap();
    f.write_all_at(&[0u8; 8], 72 + 8 + 16).unwrap();
    drop(f);
    open(&p, false).unwrap();
}
