//! Executable memory for compiled blocks, packed: blocks are appended to
//! the compiling thread's current chunk (a private mapping of
//! [`CHUNK`] bytes) at 16-byte alignment, so that hot blocks share
//! cache lines, pages and TLB entries (one page per block put every
//! block's entry at the same page offset: the same L1i set for all).
//!
//! W^X: the pages a block is written to are made read-write for the
//! copy, then read-execute again (never both); the units a CPU installs
//! together ([`Code::many`]) share one such pair of changes per chunk.
//! Those pages may hold other blocks of the same chunk, which is why a
//! chunk is only ever written by the thread that created it, and code is
//! only run by the thread that wrote it (a CPU installs its code in its
//! own run loop, on its vCPU thread, which it does not leave while it
//! runs; the compiler thread only hands it bytes).
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

    /// Copies each `(off, bytes)` (in increasing, non-overlapping
    /// order) into the chunk: the pages they cover are made writable for
    /// the copies only, with one protection change each way for all of
    /// them (each change that takes a permission away costs a TLB
    /// shootdown on every core the process runs on: with the compiler
    /// thread on the other core, an IPI round trip).
    fn write(&self, parts: &[(usize, &[u8])]) -> bool {
        let (Some(first), Some(last)) = (parts.first(), parts.last()) else {
            return true;
        };
        let start = first.0 / PAGE * PAGE;
        let end = (last.0 + last.1.len()).div_ceil(PAGE) * PAGE;
        // SAFETY: [start, end) lies in the mapping (callers keep every
        // off + len <= self.len, a multiple of PAGE).
        unsafe {
            let p = self.ptr.add(start) as *mut libc::c_void;
            if libc::mprotect(p, end - start, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                return false;
            }
            for &(off, bytes) in parts {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.ptr.add(off), bytes.len());
            }
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
        Code::many(&[bytes]).pop().flatten()
    }

    /// Copies each of `all` into executable memory, packed in this
    /// thread's current chunk: one pair of protection changes per chunk
    /// for the lot (the compiled units a CPU installs at once). None for
    /// those the host refused.
    pub(crate) fn many(all: &[&[u8]]) -> Vec<Option<Code>> {
        let mut out = Vec::with_capacity(all.len());
        // Placed in the current chunk, not yet written.
        let mut parts: Vec<(usize, &[u8])> = Vec::new();
        let mut placed: Vec<Code> = Vec::new();
        let flush = |parts: &mut Vec<(usize, &[u8])>,
                     placed: &mut Vec<Code>,
                     out: &mut Vec<Option<Code>>| {
            let ok = placed.first().is_none_or(|c| c.chunk.write(parts));
            out.extend(placed.drain(..).map(|c| ok.then_some(c)));
            parts.clear();
        };
        for &bytes in all {
            let len = bytes.len().div_ceil(ALIGN).max(1) * ALIGN;
            if len > CHUNK {
                // Larger than a chunk: a mapping of its own.
                flush(&mut parts, &mut placed, &mut out);
                let code = Chunk::new(len.div_ceil(PAGE) * PAGE).and_then(|chunk| {
                    let chunk = Arc::new(chunk);
                    chunk
                        .write(&[(0, bytes)])
                        .then_some(Code { chunk, off: 0, len })
                });
                out.push(code);
                continue;
            }
            let code = CURRENT.with(|cur| {
                let mut cur = cur.borrow_mut();
                let fits = matches!(&*cur, Some((_, used)) if used + len <= CHUNK);
                if !fits {
                    *cur = Some((Arc::new(Chunk::new(CHUNK)?), 0));
                }
                let (chunk, used) = cur.as_mut()?;
                let off = *used;
                *used += len;
                Some(Code {
                    chunk: chunk.clone(),
                    off,
                    len,
                })
            });
            let Some(code) = code else {
                flush(&mut parts, &mut placed, &mut out);
                out.push(None);
                continue;
            };
            if placed
                .first()
                .is_some_and(|c| !Arc::ptr_eq(&c.chunk, &code.chunk))
            {
                // A new chunk: the last one's copies first.
                flush(&mut parts, &mut placed, &mut out);
            }
            parts.push((code.off, bytes));
            placed.push(code);
        }
        flush(&mut parts, &mut placed, &mut out);
        out
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

    /// A batch is packed like single blocks, in order, across a chunk
    /// boundary too (the current chunk's copies written before the next
    /// chunk's), and an oversized member gets a mapping of its own.
    #[test]
    fn a_batch_is_packed_in_order_across_chunks() {
        let mut filler = ret_imm(9);
        // With the first block, fills the current chunk to its end.
        let room = CURRENT.with(|c| c.borrow().as_ref().map_or(CHUNK, |(_, used)| CHUNK - used));
        filler.resize(room.saturating_sub(16 + 8).max(1), 0xcc);
        let mut big = ret_imm(7);
        big.resize(CHUNK + 1, 0xcc);
        let parts = [ret_imm(5), filler, ret_imm(6), big, ret_imm(8)];
        let all: Vec<&[u8]> = parts.iter().map(|p| p.as_slice()).collect();
        let codes: Vec<Code> = Code::many(&all).into_iter().map(|c| c.unwrap()).collect();
        let got: Vec<u32> = codes.iter().map(call).collect();
        assert_eq!(got, [5, 9, 6, 7, 8]);
        // The third did not fit after the filler: a new chunk.
        assert!(!Arc::ptr_eq(&codes[1].chunk, &codes[2].chunk));
        assert!(Arc::ptr_eq(&codes[2].chunk, &codes[4].chunk));
        assert_eq!(codes[4].ptr() as usize - codes[2].ptr() as usize, 16);
    }
}
