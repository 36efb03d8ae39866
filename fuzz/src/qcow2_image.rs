//! A qcow2 image from the outside world (`--disk format=qcow2`, or
//! `auto`): open it from the input's bytes, read a few sectors, write a
//! few, flush, and read them back, also after closing and opening the
//! image again. Backing files are refused (the fuzzer does not get to
//! name host files).

use std::io;
use std::path::Path;

use qcow2::{Backend, Qcow2, RawFile};

use crate::input::Input;

const SECTOR: u64 = 512;

fn no_backing(path: &Path) -> io::Result<RawFile> {
    Err(io::Error::new(
        io::ErrorKind::NotFound,
        format!("no backing files while fuzzing ({})", path.display()),
    ))
}

/// A sector-aligned offset in an image of `size` bytes for `len` bytes.
fn offset(pick: u32, size: u64, len: u64) -> u64 {
    let sectors = size.saturating_sub(len) / SECTOR + 1;
    u64::from(pick) % sectors * SECTOR
}

pub fn run(data: &[u8]) {
    // Up to 8 operations in the first 24 bytes, then the image.
    if data.len() < 24 {
        return;
    }
    let (ops, image) = data.split_at(24);
    let mut ops = Input::new(ops);
    let writable = ops.u8() & 1 == 0;
    let file = crate::input::memfile("image", image);
    let path = crate::input::proc_path(&file);
    let reopen = file.try_clone().expect("dup the memfd");
    let Ok(img) = Qcow2::open(RawFile::new(file, false), &path, writable, &no_backing) else {
        return;
    };
    let size = img.size();
    if size < SECTOR {
        return;
    }
    let mut written: Vec<(u64, Vec<u8>)> = Vec::new();
    for n in 0..7u8 {
        let kind = ops.u8();
        let pick = ops.u16();
        let len = SECTOR * (1 + u64::from(kind >> 6));
        if len > size {
            continue;
        }
        let at = offset(u32::from(pick) * 7 + u32::from(n), size, len);
        let mut buf = vec![0u8; len as usize];
        match kind % 4 {
            0 | 1 => {
                let _ = img.read_at(&mut buf, at);
            }
            2 | 3 if writable => {
                let done = if kind % 4 == 2 {
                    buf.fill(0xa0 | n);
                    img.write_at(&buf, at)
                } else {
                    img.write_zeroes(at, len)
                };
                // A failed request may have written part of the range.
                forget(&mut written, at, len);
                if done.is_ok() {
                    written.push((at, buf));
                }
            }
            _ => {}
        }
    }
    if !writable {
        return;
    }
    if img.flush().is_err() {
        return;
    }
    // A mapping to a cluster past the end of the file would alias the
    // clusters the allocator appends there; such an image does not open
    // writable (crates/qcow2/src/image/references.rs), so every image that
    // got here reads back what was written.
    check(&img, &written, "after the writes");
    drop(img);
    // What was written and flushed is there when the image is opened again.
    let img = Qcow2::open(RawFile::new(reopen, false), &path, false, &no_backing)
        .unwrap_or_else(|e| panic!("the image we wrote no longer opens: {e}"));
    assert_eq!(img.size(), size);
    check(&img, &written, "after reopening");
}

/// Drops what earlier writes said of the bytes `at..at + len`.
fn forget(written: &mut Vec<(u64, Vec<u8>)>, at: u64, len: u64) {
    written.retain(|(o, data)| *o + data.len() as u64 <= at || at + len <= *o);
}

fn check(img: &Qcow2, written: &[(u64, Vec<u8>)], when: &str) {
    for (at, data) in written {
        let mut back = vec![0u8; data.len()];
        // A read error means the image's metadata (which the input made)
        // is corrupt elsewhere, not that our write was lost.
        if img.read_at(&mut back, *at).is_ok() {
            assert!(
                back == *data,
                "{when}: {} bytes at {at:#x} read back differently",
                data.len()
            );
        }
    }
}
