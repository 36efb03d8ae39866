//! Executable memory for compiled blocks, packed: blocks are appended to
//! the compiling thread's current chunk (a private mapping of
//! [`CHUNK`] bytes) at 16-byte alignment, so that hot blocks share
//! cache lines, pages and TLB entries (one page per block put every
//! block's entry at the same page offset: the same L1i set for all).
//!
//! W^X: the pages a block is written to are made read-write for the
//! copy, then read-execute again (never both). Those pages may hold
//! other blocks of the same chunk, which is why a chunk is only ever
//! written by the thread that created it, and code is only run by the
//! thread that compiled it (a CPU compiles in its own run loop, on its
//! vCPU thread, which it does not leave while it runs).
//!
//! A chunk is unmapped when the last block in it is dropped (and it is
//! no longer the current one); a block's [`Code`] is dropped with its
//! ops (block cache garbage collection), never while it runs.

use std::cell::RefCell;
use std::sync::Arc;

/// Bytes of one chunk.
const CHUNK: usize = 256 << 10;
const PAGE: usize = 4096;
const ALIGN: usize = 16;

struct Chunk {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by the chunk alone; see the module doc
// for who writes and runs it.
unsafe impl Send for Chunk {}
unsafe impl Sync for Chunk {}

impl Chunk {
    fn new(len: usize) -> Option<Chunk> {
        // SAFETY: a fresh anonymous mapping, no address hint.
        // Mapped read-write, then made read-execute: the vCPU threads'
        // seccomp filter refuses an executable mmap (mprotect may).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let chunk = Chunk {
            ptr: ptr as *mut u8,
            len,
        };
        // SAFETY: the mapping just made.
        let r = unsafe { libc::mprotect(ptr, len, libc::PROT_READ | libc::PROT_EXEC) };
        (r == 0).then_some(chunk)
    }

    /// Copies `bytes` to `off`: the pages they cover are writable for
    /// the copy only.
    fn write(&self, off: usize, bytes: &[u8]) -> bool {
        let start = off / PAGE * PAGE;
        let end = (off + bytes.len()).div_ceil(PAGE) * PAGE;
        // SAFETY: [start, end) lies in the mapping (callers keep
        // off + len <= self.len, a multiple of PAGE).
        unsafe {
            let p = self.ptr.add(start) as *mut libc::c_void;
            if libc::mprotect(p, end - start, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                return false;
            }
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len());
            libc::mprotect(p, end - start, libc::PROT_READ | libc::PROT_EXEC) == 0
        }
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        if super::perfmap::enabled() {
            // Kept: its addresses stay named in the perf map.
            return;
        }
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}

thread_local! {
    /// The chunk this thread appends to, and its first free offset.
    static CURRENT: RefCell<Option<(Arc<Chunk>, usize)>> = const { RefCell::new(None) };
}

/// A compiled block's machine code.
pub(crate) struct Code {
    chunk: Arc<Chunk>,
    off: usize,
    len: usize,
}

impl Code {
    /// Copies `bytes` into executable memory. None when the host refuses
    /// a mapping or a protection change (out of memory, W^X policy).
    pub(crate) fn new(bytes: &[u8]) -> Option<Code> {
        let len = bytes.len().div_ceil(ALIGN).max(1) * ALIGN;
        if len > CHUNK {
            // Larger than a chunk: a mapping of its own.
            let chunk = Arc::new(Chunk::new(len.div_ceil(PAGE) * PAGE)?);
            return chunk.write(0, bytes).then_some(Code { chunk, off: 0, len });
        }
        CURRENT.with(|cur| {
            let mut cur = cur.borrow_mut();
            let fits = matches!(&*cur, Some((_, used)) if used + len <= CHUNK);
            if !fits {
                *cur = Some((Arc::new(Chunk::new(CHUNK)?), 0));
            }
            let (chunk, used) = cur.as_mut()?;
            let off = *used;
            if !chunk.write(off, bytes) {
                return None;
            }
            *used += len;
            Some(Code {
                chunk: chunk.clone(),
                off,
                len,
            })
        })
    }

    /// Host bytes held (the block's share of its chunk).
    pub(crate) fn bytes(&self) -> usize {
        self.len
    }

    pub(crate) fn ptr(&self) -> *const u8 {
        // SAFETY: off < chunk.len (set in `new`).
        unsafe { self.chunk.ptr.add(self.off) }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// `mov eax, imm32; ret`
    fn ret_imm(v: u32) -> Vec<u8> {
        let mut b = vec![0xb8];
        b.extend_from_slice(&v.to_le_bytes());
        b.push(0xc3);
        b
    }

    fn call(c: &Code) -> u32 {
        // SAFETY: `ret_imm` code, executable while `c` lives.
        unsafe { std::mem::transmute::<*const u8, extern "C" fn() -> u32>(c.ptr())() }
    }

    /// Blocks are packed 16 bytes apart in one chunk and each runs its
    /// own code, also after a neighbour was written; an oversized block
    /// gets a mapping of its own.
    #[test]
    fn blocks_are_packed_and_run() {
        let a = Code::new(&ret_imm(1)).unwrap();
        let b = Code::new(&ret_imm(2)).unwrap();
        assert_eq!(b.ptr() as usize - a.ptr() as usize, 16);
        assert_eq!((a.bytes(), b.bytes()), (16, 16));
        assert_eq!((call(&a), call(&b)), (1, 2));
        drop(a);
        let c = Code::new(&ret_imm(3)).unwrap();
        assert_eq!((call(&b), call(&c)), (2, 3));
        let mut big = ret_imm(4);
        big.resize(CHUNK + 1, 0xcc);
        let d = Code::new(&big).unwrap();
        assert_eq!(call(&d), 4);
        assert_eq!(d.bytes(), (CHUNK + 1).div_ceil(16) * 16);
    }
}
