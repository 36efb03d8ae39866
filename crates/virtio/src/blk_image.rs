//! Opening a disk image: what it may be, and who else may use it.
//!
//! - **Kind**: a regular file or a block device. A directory, a FIFO, a
//!   socket or a character device is refused with one error naming the
//!   file. The image is opened without blocking (a FIFO without a writer
//!   would otherwise hang the start) and without becoming the controlling
//!   terminal; the kind is checked on the open descriptor (no race with a
//!   rename).
//! - **Locks**: advisory open-file-description locks (`F_OFD_SETLK`) on
//!   single bytes, QEMU's protocol (block/file-posix.c, `raw_apply_lock_bytes`
//!   and `raw_check_lock_bytes`), so that Ferrovisor and QEMU see each
//!   other's locks: byte 100 + *p* is read-locked by every user that holds
//!   permission *p*, byte 200 + *p* by every user that does not let others
//!   hold it. Permissions: 0 consistent read, 1 write, 2 write unchanged,
//!   3 resize. A writable disk holds {consistent read, write}, a read-only
//!   one {consistent read}; both refuse other writers and resizers (QEMU's
//!   default without `share-rw`). Hence: one writer alone; readers share
//!   with readers. Open file descriptions, not processes, own the locks, so
//!   two disks of one VM on one image conflict like two VMs.
//!
//! Locks are kept as long as the descriptor is open (the disk's life).
//! Backing files of qcow2 images are opened here too, read-only: they
//! hold the read-only locks, so a VM writing a base image and a VM
//! reading it through an overlay exclude each other, and overlays share
//! a base.
//!
//! - **Format** ([`ImageFormat`]): raw unless the user says qcow2, or
//!   asks for detection (`auto`). A raw image is never probed silently: a
//!   guest can write qcow2's magic into the first bytes of its raw disk,
//!   and opening that as qcow2 would let it name any host file as its
//!   backing file (QEMU's probing problem).
//! - **Cache** ([`CacheMode`], QEMU's `cache=`): `writeback` (the
//!   default: guest flushes are honoured), `writethrough` (a flush after
//!   every write), `none` (O_DIRECT), `directsync` (O_DIRECT and a flush
//!   after every write), `unsafe` (guest flushes ignored). O_DIRECT's
//!   alignment is handled by [`qcow2::RawFile`]'s bounce buffers; a
//!   filesystem without O_DIRECT (tmpfs on older kernels) is one clear
//!   error.

#![allow(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use crate::blk::BlockError;

/// QEMU's lock byte offsets.
const LOCK_BASE_PERM: i64 = 100;
const LOCK_BASE_SHARED: i64 = 200;

/// Permission bits, QEMU's numbering.
const PERM_CONSISTENT_READ: u32 = 1 << 0;
const PERM_WRITE: u32 = 1 << 1;
const PERM_RESIZE: u32 = 1 << 3;
/// The permissions QEMU's lock bytes cover.
const PERM_BITS: u32 = 4;

/// What conflicts with the locks a disk asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockConflict {
    /// Another user holds a permission this disk does not share (it
    /// writes to the image).
    Writer,
    /// Another user refuses a permission this disk needs (it must not be
    /// written while that user has it open).
    NoWritersAllowed,
}

impl std::fmt::Display for LockConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockConflict::Writer => {
                "another VM, or another disk of this one, has it open for writing"
            }
            LockConflict::NoWritersAllowed => {
                "another VM, or another disk of this one, has it open and allows no writer"
            }
        })
    }
}

/// The format of a disk image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImageFormat {
    #[default]
    Raw,
    Qcow2,
    /// qcow2 if the file starts with qcow2's magic, else raw: only when
    /// the user asked for detection.
    Auto,
}

impl ImageFormat {
    /// `raw`, `qcow2` or `auto`.
    pub fn parse(name: &str) -> Option<ImageFormat> {
        match name {
            "raw" => Some(ImageFormat::Raw),
            "qcow2" => Some(ImageFormat::Qcow2),
            "auto" => Some(ImageFormat::Auto),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Auto => "auto",
        }
    }
}

/// QEMU's `cache=` modes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheMode {
    #[default]
    Writeback,
    Writethrough,
    None,
    Directsync,
    Unsafe,
}

impl CacheMode {
    pub const NAMES: &'static str = "writeback, writethrough, none, directsync or unsafe";

    pub fn parse(name: &str) -> Option<CacheMode> {
        match name {
            "writeback" => Some(CacheMode::Writeback),
            "writethrough" => Some(CacheMode::Writethrough),
            "none" => Some(CacheMode::None),
            "directsync" => Some(CacheMode::Directsync),
            "unsafe" => Some(CacheMode::Unsafe),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            CacheMode::Writeback => "writeback",
            CacheMode::Writethrough => "writethrough",
            CacheMode::None => "none",
            CacheMode::Directsync => "directsync",
            CacheMode::Unsafe => "unsafe",
        }
    }

    /// Opened with O_DIRECT.
    pub fn direct(self) -> bool {
        matches!(self, CacheMode::None | CacheMode::Directsync)
    }

    /// Every write is flushed before it completes.
    pub fn write_through(self) -> bool {
        matches!(self, CacheMode::Writethrough | CacheMode::Directsync)
    }

    /// Guest flushes are ignored.
    pub fn ignores_flush(self) -> bool {
        self == CacheMode::Unsafe
    }
}

/// How a disk image is opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImageOptions {
    pub format: ImageFormat,
    pub cache: CacheMode,
}

/// An image opened in its format.
pub(crate) struct Opened {
    pub backend: Box<dyn qcow2::Backend>,
    pub identity: (u64, u64),
    pub locks: ImageLocks,
}

/// The locks an open image holds (on its open file description, which
/// this duplicate shares with the backend's descriptor): a live migration
/// hands them to the destination and takes them back if it fails.
pub(crate) struct ImageLocks {
    file: File,
    read_only: bool,
}

impl ImageLocks {
    /// Drops every lock byte this image holds; the file stays open.
    pub fn release(&self) -> std::io::Result<()> {
        let mut fl = flock(libc::F_UNLCK, LOCK_BASE_PERM);
        fl.l_len = LOCK_BASE_SHARED + i64::from(PERM_BITS) - LOCK_BASE_PERM;
        // SAFETY: as in `set_read_lock`.
        let r = unsafe { libc::fcntl(self.file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
        match r {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    }

    /// Takes the locks again, as the open did (another process may have
    /// taken the image meanwhile: then a conflict).
    pub fn retake(&self) -> std::io::Result<()> {
        lock(&self.file, self.read_only, false).map_err(|e| {
            // Hold none of them rather than some.
            let _ = self.release();
            match e {
                LockError::Conflict(c) => std::io::Error::other(format!("in use: {c}")),
                LockError::Io(e) => e,
            }
        })
    }
}

/// Opens the image at `path` (see [`open`]) in the format and with the
/// cache mode of `options`; a qcow2 image's backing files are opened
/// read-only and locked as shared readers.
pub(crate) fn open_image(
    path: &Path,
    read_only: bool,
    same_file: Option<(u64, u64)>,
    options: ImageOptions,
) -> Result<Opened, BlockError> {
    let direct = options.cache.direct();
    let image = open_file(path, read_only, same_file, direct)?;
    let identity = image.identity;
    let locks = ImageLocks {
        file: image.file.try_clone().map_err(|source| BlockError::Lock {
            path: path.to_path_buf(),
            source,
        })?,
        read_only,
    };
    let raw = qcow2::RawFile::new(image.file, direct);
    let format = match options.format {
        ImageFormat::Raw => qcow2::Format::Raw,
        ImageFormat::Qcow2 => qcow2::Format::Qcow2,
        ImageFormat::Auto => qcow2::probe(&raw).map_err(|source| BlockError::Size {
            path: path.to_path_buf(),
            source,
        })?,
    };
    let backend: Box<dyn qcow2::Backend> = match format {
        qcow2::Format::Raw => {
            if options.format == ImageFormat::Raw
                && qcow2::probe(&raw).ok() == Some(qcow2::Format::Qcow2)
            {
                tracing::warn!(path = %path.display(), "a raw disk image starts with qcow2's magic: served as raw (say format=qcow2 if it is one)");
            }
            Box::new(raw.with_len(image.size))
        }
        qcow2::Format::Qcow2 => {
            let open_backing = move |p: &Path| -> std::io::Result<qcow2::RawFile> {
                let b = open_file(p, true, None, direct).map_err(std::io::Error::other)?;
                Ok(qcow2::RawFile::new(b.file, direct))
            };
            Box::new(
                qcow2::Qcow2::open(raw, path, !read_only, &open_backing).map_err(|source| {
                    BlockError::Image {
                        path: path.to_path_buf(),
                        source,
                    }
                })?,
            )
        }
    };
    Ok(Opened {
        backend,
        identity,
        locks,
    })
}

/// An open, checked and locked image.
pub(crate) struct Image {
    pub file: File,
    pub size: u64,
    /// (device, inode): tells a replacement by the same file.
    pub identity: (u64, u64),
}

/// Opens the image at `path` for reading (and writing unless
/// `read_only`), checks its kind, takes its locks and reads its size.
/// `same_file` is the identity of an image the caller already holds and
/// is replacing: reopening that one does not conflict with itself.
pub(crate) fn open(
    path: &Path,
    read_only: bool,
    same_file: Option<(u64, u64)>,
) -> Result<Image, BlockError> {
    open_file(path, read_only, same_file, false)
}

/// [`open`], with O_DIRECT when `direct`.
fn open_file(
    path: &Path,
    read_only: bool,
    same_file: Option<(u64, u64)>,
    direct: bool,
) -> Result<Image, BlockError> {
    let open_err = |source| BlockError::Open {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(!read_only)
        // O_NONBLOCK changes nothing for regular files and block devices.
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY | if direct { libc::O_DIRECT } else { 0 })
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            // The filesystem has no O_DIRECT.
            Some(libc::EINVAL) if direct => BlockError::NoDirect {
                path: path.to_path_buf(),
            },
            // A directory opened for writing.
            Some(libc::EISDIR) => BlockError::NotADisk {
                path: path.to_path_buf(),
                kind: "directory",
            },
            _ => open_err(source),
        })?;
    let meta = file.metadata().map_err(|source| BlockError::Size {
        path: path.to_path_buf(),
        source,
    })?;
    let kind = meta.file_type();
    let not_a_disk = |kind| BlockError::NotADisk {
        path: path.to_path_buf(),
        kind,
    };
    if kind.is_dir() {
        return Err(not_a_disk("directory"));
    } else if kind.is_fifo() {
        return Err(not_a_disk("FIFO"));
    } else if kind.is_char_device() {
        return Err(not_a_disk("character device"));
    } else if kind.is_socket() {
        return Err(not_a_disk("socket"));
    } else if !kind.is_file() && !kind.is_block_device() {
        return Err(not_a_disk("special file"));
    }
    let identity = (meta.dev(), meta.ino());
    lock(&file, read_only, same_file == Some(identity)).map_err(|e| match e {
        LockError::Conflict(conflict) => BlockError::Locked {
            path: path.to_path_buf(),
            conflict,
        },
        LockError::Io(source) => BlockError::Lock {
            path: path.to_path_buf(),
            source,
        },
    })?;
    // A block device's metadata says 0 bytes: its end says how many.
    let size = if kind.is_block_device() {
        (&file)
            .seek(SeekFrom::End(0))
            .map_err(|source| BlockError::Size {
                path: path.to_path_buf(),
                source,
            })?
    } else {
        meta.len()
    };
    Ok(Image {
        file,
        size,
        identity,
    })
}

/// Checks that `path` would open as a disk now (kind, permissions,
/// locks), without keeping it open: an API can refuse a drive at once.
pub fn check(path: &Path, read_only: bool) -> Result<(), BlockError> {
    open(path, read_only, None).map(drop)
}

enum LockError {
    Conflict(LockConflict),
    Io(std::io::Error),
}

/// Takes the lock bytes of a disk (writable unless `read_only`) on
/// `file`, then checks that no other user conflicts; `ours` skips the
/// check (the other user is the image this one replaces).
fn lock(file: &File, read_only: bool, ours: bool) -> Result<(), LockError> {
    let held = if read_only {
        PERM_CONSISTENT_READ
    } else {
        PERM_CONSISTENT_READ | PERM_WRITE
    };
    let unshared = PERM_WRITE | PERM_RESIZE;
    for bit in 0..PERM_BITS {
        if held & 1 << bit != 0 {
            set_read_lock(file, LOCK_BASE_PERM + i64::from(bit))?;
        }
        if unshared & 1 << bit != 0 {
            set_read_lock(file, LOCK_BASE_SHARED + i64::from(bit))?;
        }
    }
    if ours {
        return Ok(());
    }
    for bit in 0..PERM_BITS {
        // Someone holds what we refuse.
        if unshared & 1 << bit != 0 && locked_by_others(file, LOCK_BASE_PERM + i64::from(bit))? {
            return Err(LockError::Conflict(LockConflict::Writer));
        }
    }
    for bit in 0..PERM_BITS {
        // Someone refuses what we hold.
        if held & 1 << bit != 0 && locked_by_others(file, LOCK_BASE_SHARED + i64::from(bit))? {
            return Err(LockError::Conflict(LockConflict::NoWritersAllowed));
        }
    }
    Ok(())
}

fn flock(kind: i32, start: i64) -> libc::flock {
    libc::flock {
        l_type: kind as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: start,
        l_len: 1,
        // Must be 0 for open file description locks.
        l_pid: 0,
    }
}

/// A shared (read) lock on byte `at`, owned by `file`'s open file
/// description.
fn set_read_lock(file: &File, at: i64) -> Result<(), LockError> {
    let fl = flock(libc::F_RDLCK, at);
    // SAFETY: `fl` is a valid, initialised `struct flock` that outlives
    // the call, as F_OFD_SETLK requires; the descriptor is open (borrowed
    // from `file`).
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // Someone holds an exclusive lock there.
        Some(libc::EAGAIN) | Some(libc::EACCES) => {
            Err(LockError::Conflict(if at < LOCK_BASE_SHARED {
                LockConflict::NoWritersAllowed
            } else {
                LockConflict::Writer
            }))
        }
        _ => Err(LockError::Io(e)),
    }
}

/// Whether another open file description holds a lock on byte `at`.
fn locked_by_others(file: &File, at: i64) -> Result<bool, LockError> {
    let mut fl = flock(libc::F_WRLCK, at);
    // SAFETY: as in `set_read_lock`; F_OFD_GETLK writes the conflicting
    // lock (or F_UNLCK) into `fl`, which is valid for writes.
    let r = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) };
    if r != 0 {
        return Err(LockError::Io(std::io::Error::last_os_error()));
    }
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(std::path::PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let d = std::env::temp_dir().join(format!(
                "ferrovisor-blk-image-{name}-{}",
                std::process::id()
            ));
            std::fs::create_dir_all(&d).unwrap();
            Dir(d)
        }
        fn image(&self) -> std::path::PathBuf {
            let p = self.0.join("disk.img");
            std::fs::write(&p, vec![0u8; 4096]).unwrap();
            p
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn conflict(r: Result<Image, BlockError>) -> LockConflict {
        match r {
            Err(BlockError::Locked { conflict, .. }) => conflict,
            Err(e) => panic!("not a lock conflict: {e}"),
            Ok(_) => panic!("opened"),
        }
    }

    #[test]
    fn one_writer_alone_readers_together() {
        let d = Dir::new("locks");
        let img = d.image();
        let writer = open(&img, false, None).unwrap();
        assert_eq!(conflict(open(&img, false, None)), LockConflict::Writer);
        assert_eq!(conflict(open(&img, true, None)), LockConflict::Writer);
        // The replacement of the writer by the same file is its own.
        let again = open(&img, false, Some(writer.identity)).unwrap();
        drop(writer);
        drop(again);
        let r1 = open(&img, true, None).unwrap();
        let r2 = open(&img, true, None).unwrap();
        assert_eq!(
            conflict(open(&img, false, None)),
            LockConflict::NoWritersAllowed
        );
        drop((r1, r2));
        open(&img, false, None).unwrap();
    }

    #[test]
    fn locks_handed_over_and_taken_back() {
        let d = Dir::new("handover");
        let img = d.image();
        let source = open_image(&img, false, None, ImageOptions::default()).unwrap();
        assert!(open(&img, false, None).is_err());
        // Handed over: another process (here another open file
        // description) takes the image.
        source.locks.release().unwrap();
        let destination = open(&img, false, None).unwrap();
        let err = source.locks.retake().unwrap_err();
        assert!(err.to_string().contains("in use"), "{err}");
        // The destination let it go: the source takes it back, and holds
        // it against others again.
        drop(destination);
        source.locks.retake().unwrap();
        assert_eq!(conflict(open(&img, false, None)), LockConflict::Writer);
    }

    #[test]
    fn only_regular_files_and_block_devices() {
        let d = Dir::new("kinds");
        for read_only in [false, true] {
            for (path, kind) in [
                (d.0.as_path(), "directory"),
                (Path::new("/dev/null"), "character device"),
            ] {
                match open(path, read_only, None) {
                    Err(BlockError::NotADisk { kind: k, .. }) => assert_eq!(k, kind),
                    Err(e) => panic!("{}: {e}", path.display()),
                    Ok(_) => panic!("{} opened", path.display()),
                }
            }
        }
        let fifo = d.0.join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        for read_only in [false, true] {
            assert!(matches!(
                open(&fifo, read_only, None),
                Err(BlockError::NotADisk { kind: "FIFO", .. })
            ));
        }
        assert_eq!(open(&d.image(), true, None).unwrap().size, 4096);
    }
}
