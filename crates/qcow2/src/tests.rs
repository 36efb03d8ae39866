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
