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
    // Known open finding: a mapping to a cluster past the end of the file
    // aliases the clusters the allocator appends there, so what one guest
    // cluster reads back may be another's data (docs/SECURITY.md). Such
    // images must still reopen; their contents are not compared.
    if points_past_the_end(image) {
        written.clear();
    }
    check(&img, &written, "after the writes");
    drop(img);
    // What was written and flushed is there when the image is opened again.
    let img = Qcow2::open(RawFile::new(reopen, false), &path, false, &no_backing)
        .unwrap_or_else(|e| panic!("the image we wrote no longer opens: {e}"));
    assert_eq!(img.size(), size);
    check(&img, &written, "after reopening");
}

/// Whether the image's L1 table or an L2 table in the file maps anything
/// at or past the end of the file (a v2/v3 header's fields, big endian).
fn points_past_the_end(image: &[u8]) -> bool {
    let be32 = |at: usize| {
        image
            .get(at..at + 4)
            .map(|b| u32::from_be_bytes(b.try_into().unwrap()))
    };
    let be64 = |at: u64| {
        let at = usize::try_from(at).ok()?;
        image
            .get(at..at.checked_add(8)?)
            .map(|b| u64::from_be_bytes(b.try_into().unwrap()))
    };
    let (Some(bits), Some(l1_size), Some(l1_offset)) = (be32(20), be32(36), be64(40)) else {
        return true;
    };
    if !(9..=21).contains(&bits) {
        return true;
    }
    let cs = 1u64 << bits;
    let end = image.len() as u64;
    const OFFSET: u64 = 0x00ff_ffff_ffff_fe00;
    for i in 0..u64::from(l1_size).min(1 << 16) {
        let Some(l2) = l1_offset
            .checked_add(i * 8)
            .and_then(be64)
            .map(|e| e & OFFSET)
        else {
            return true;
        };
        if l2 == 0 {
            continue;
        }
        if l2 + cs > end {
            return true;
        }
        for j in 0..cs / 8 {
            let e = be64(l2 + j * 8).unwrap_or(0);
            // Compressed clusters (bit 62) are read, never written in place.
            if e & (1 << 62) == 0 && e & OFFSET != 0 && e & OFFSET >= end.saturating_sub(cs - 1) {
                return true;
            }
        }
    }
    false
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
