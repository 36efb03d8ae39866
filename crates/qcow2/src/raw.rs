//! A file read and written at byte offsets, with or without O_DIRECT.
//!
//! O_DIRECT wants the file offset, the length and the memory address
//! aligned to the logical block size. [`ALIGN`] (4096) is a multiple of
//! every logical block size Linux has (512 or 4096), so a request aligned
//! to it goes straight to the file from an aligned buffer, and any other
//! goes through an aligned bounce buffer: the blocks it touches are read,
//! patched and written back (read-modify-write, serialised so that two
//! unaligned writes into one block do not undo each other).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Mutex;

use crate::Backend;

/// The alignment of O_DIRECT transfers (offset, length and memory); a
/// raw disk's partial last block is written in 512-byte sectors.
pub const ALIGN: usize = 4096;
/// Largest bounce buffer: longer requests are split.
const BOUNCE: usize = 1 << 20;

/// A file and whether it was opened with O_DIRECT.
pub struct RawFile {
    file: File,
    direct: bool,
    /// A raw disk's size: a read-modify-write of its last, partial block
    /// must not make the file longer.
    fixed_len: Option<u64>,
    /// Serialises read-modify-write cycles.
    rmw: Mutex<()>,
}

/// A zeroed buffer of `len` bytes whose start is aligned to [`ALIGN`].
struct Aligned {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let buf = vec![0u8; len + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        Aligned { buf, start, len }
    }
    fn get(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

fn down(x: u64) -> u64 {
    x & !(ALIGN as u64 - 1)
}

fn up(x: u64) -> u64 {
    down(x + ALIGN as u64 - 1)
}

impl RawFile {
    /// `file`, opened with O_DIRECT when `direct` (the caller opened it).
    pub fn new(file: File, direct: bool) -> RawFile {
        RawFile {
            file,
            direct,
            fixed_len: None,
            rmw: Mutex::new(()),
        }
    }

    /// A raw disk of `len` bytes on `file` (its size never changes).
    pub fn disk(file: File, direct: bool, len: u64) -> RawFile {
        RawFile {
            fixed_len: Some(len),
            ..RawFile::new(file, direct)
        }
    }

    /// This file as a raw disk of `len` bytes.
    pub fn with_len(mut self, len: u64) -> RawFile {
        self.fixed_len = Some(len);
        self
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn is_direct(&self) -> bool {
        self.direct
    }

    /// The file's current length.
    pub fn file_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn aligned(&self, offset: u64, len: usize, addr: usize) -> bool {
        !self.direct
            || (offset.is_multiple_of(ALIGN as u64)
                && len.is_multiple_of(ALIGN)
                && addr.is_multiple_of(ALIGN))
    }

    /// Reads as much of `buf` as the file holds from `offset`; returns
    /// the bytes read (fewer only at the end of the file).
    fn read_some(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }

    /// Reads `buf` from `offset`; the end of the file is an error.
    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.aligned(offset, buf.len(), buf.as_ptr() as usize) {
            return self.file.read_exact_at(buf, offset);
        }
        for (i, piece) in buf.chunks_mut(BOUNCE).enumerate() {
            let at = offset + (i * BOUNCE) as u64;
            let (start, end) = (down(at), up(at + piece.len() as u64));
            let mut bounce = Aligned::new((end - start) as usize);
            let got = self.read_some(bounce.get(), start)?;
            let skip = (at - start) as usize;
            if got < skip + piece.len() {
                return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
            }
            piece.copy_from_slice(&bounce.get()[skip..skip + piece.len()]);
        }
        Ok(())
    }

    /// Reads `buf` from `offset`, zeroes past the end of the file.
    pub fn read_or_zero_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let len = self.file_len()?;
        let have = len.saturating_sub(offset).min(buf.len() as u64) as usize;
        buf[have..].fill(0);
        if have > 0 {
            self.read_exact_at(&mut buf[..have], offset)?;
        }
        Ok(())
    }

    /// Writes `buf` at `offset`.
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if self.aligned(offset, buf.len(), buf.as_ptr() as usize) {
            return self.file.write_all_at(buf, offset);
        }
        let _serial = self.rmw.lock().unwrap_or_else(|p| p.into_inner());
        for (i, piece) in buf.chunks(BOUNCE).enumerate() {
            let at = offset + (i * BOUNCE) as u64;
            let (start, end) = (down(at), up(at + piece.len() as u64));
            let mut bounce = Aligned::new((end - start) as usize);
            let skip = (at - start) as usize;
            // Only partial blocks at either end need the old bytes.
            if skip != 0 || !piece.len().is_multiple_of(ALIGN) {
                self.read_some(bounce.get(), start)?;
            }
            bounce.get()[skip..skip + piece.len()].copy_from_slice(piece);
            // A raw disk's last block may be partial: write up to its end
            // (rounded to sectors, the smallest O_DIRECT unit), so the
            // file keeps its size (no ftruncate: the device thread's
            // seccomp filter has none).
            let n = match self.fixed_len {
                Some(len) if end > len => (len.div_ceil(512) * 512 - start) as usize,
                _ => bounce.len,
            };
            self.file.write_all_at(&bounce.get()[..n], start)?;
        }
        Ok(())
    }

    /// Writes zeroes over `len` bytes from `offset`.
    pub fn zero_at(&self, offset: u64, len: u64) -> io::Result<()> {
        let chunk = Aligned::new(BOUNCE);
        let zeroes = &chunk.buf[chunk.start..chunk.start + chunk.len];
        let mut done = 0;
        while done < len {
            let n = (len - done).min(BOUNCE as u64) as usize;
            self.write_all_at(&zeroes[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// fdatasync.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
}

impl Backend for RawFile {
    fn size(&self) -> u64 {
        self.fixed_len.unwrap_or(0)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.read_exact_at(buf, offset)
    }
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.write_all_at(buf, offset)
    }
    fn write_zeroes(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero_at(offset, len)
    }
    fn flush(&self) -> io::Result<()> {
        self.sync_data()
    }
}
