//! Disk image formats behind one interface, [`Backend`]: raw files and
//! qcow2 (versions 2 and 3).
//!
//! qcow2 (QEMU's docs/interop/qcow2.txt): read and write, with clusters
//! allocated on first write through L1/L2 tables and reference counts
//! kept consistent (`qemu-img check` clean); backing files (raw or qcow2,
//! read-only, chains up to [`MAX_CHAIN`]); zero clusters (v3) and
//! compressed clusters (deflate) read; internal snapshots read (writing
//! an image that has some is refused).
//!
//! Every number in an image is untrusted: a table past the end of the
//! file, an unaligned offset, an oversized table or a loop in the
//! backing chain is an [`Error`] at open or an I/O error
//! ([`std::io::ErrorKind::InvalidData`]) on the request that meets it,
//! never a panic; memory is bounded (tables capped as QEMU caps them,
//! bounded metadata caches).
//!
//! Crash consistency: metadata (L2 tables, refcount blocks, the L1 and
//! refcount tables) is cached and written back at [`Backend::flush`] (and
//! when a cache is full, and at close) in an order that leaves a
//! consistent image after a crash at any point: new reference counts and
//! guest data reach the disk (fdatasync) before the L2 entries that point
//! at them, L2 tables before the L1 entries, and reference counts drop
//! only after the tables no longer point at the cluster. The worst a
//! crash leaves is a leaked cluster. Lazy refcounts are never used, so
//! the dirty bit is never set by us.

mod backing;
mod cache;
mod compress;
mod header;
mod image;
pub mod raw;
mod refcount;

use std::io;
use std::path::PathBuf;

pub use backing::OpenFile;
pub use header::MAGIC;
pub use image::Qcow2;
pub use raw::RawFile;

/// Most images in a backing chain (the top one included).
pub const MAX_CHAIN: usize = 16;

/// A disk image as the block device sees it: `size` bytes addressed by
/// byte offset.
pub trait Backend: Send + Sync {
    /// The guest-visible size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset` (within `size`).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset` (within `size`).
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes `len` bytes from `offset` read as zeroes.
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes every completed write durable (metadata included).
    fn flush(&self) -> io::Result<()>;
}

/// The format of an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Raw,
    Qcow2,
}

impl Format {
    /// `raw` or `qcow2`.
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "raw" => Some(Format::Raw),
            "qcow2" => Some(Format::Qcow2),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Raw => "raw",
            Format::Qcow2 => "qcow2",
        }
    }
}

/// The format `file` says it has: qcow2 if it starts with qcow2's magic,
/// else raw. Only for images whose user asked for detection: a raw image
/// written by a guest can start with the magic.
pub fn probe(file: &RawFile) -> io::Result<Format> {
    let mut magic = [0u8; 4];
    if file.file_len()? < 4 {
        return Ok(Format::Raw);
    }
    file.read_exact_at(&mut magic, 0)?;
    Ok(if magic == MAGIC {
        Format::Qcow2
    } else {
        Format::Raw
    })
}

/// Why an image cannot be opened.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {what}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("not a valid qcow2 image: {0}")]
    Invalid(String),
    #[error("unsupported qcow2 image: {0}")]
    Unsupported(String),
    #[error("backing file {path}: {source}")]
    Backing {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
    #[error("cannot open backing file {path}: {source}")]
    BackingOpen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An I/O error for what an image says that cannot be (a corrupt or
/// hostile image met by a request).
pub(crate) fn corrupt(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

#[cfg(test)]
mod tests;
