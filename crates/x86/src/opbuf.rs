//! A block's ops and its per-block run-time state in one allocation.
//!
//! An [`Op`] is what decoding produced and never changes afterwards; what
//! changes while a block runs (its chain links, its run count and compiled
//! code) is the block's, not every op's: [`BlockRt`], stored just before
//! the first op, so that it shares the ops' cache lines and is found from
//! an ops pointer by a constant offset (`OpsRef` stays a pointer and a
//! length). Before this split every op carried two links and a JIT slot
//! (~120 of its 208 bytes) that only the first or last op of a block
//! used.
//! The decoded instruction is inline in the op (it was a separate
//! 40-byte allocation per op): an op is 112 bytes, with nothing
//! behind a pointer.

use std::alloc::{self, Layout};
use std::cell::Cell;
use std::ptr::NonNull;

use crate::exec::op::Link;
use crate::exec::Op;

/// What a cached block's execution writes: the block that ran after it
/// (chaining) and the JIT's state.
#[derive(Default)]
pub(crate) struct BlockRt {
    /// The block that ran after this one last time.
    pub link: Cell<Link>,
    /// The link it replaced (compiled code chains through either: both
    /// sides of a conditional branch).
    pub link2: Cell<Link>,
    /// Run count, compiled code and exit record.
    pub jit: crate::jit::Slot,
    /// Looked up since the cache's eviction sweep last passed the block
    /// (its second chance, [`crate::block::BlockCache`]).
    pub used: Cell<bool>,
}

/// The layout of a buffer of `n` ops, and the offset of the ops in it.
fn layout(n: usize) -> (Layout, usize) {
    let (l, off) = Layout::new::<BlockRt>()
        .extend(Layout::array::<Op>(n).expect("op count"))
        .expect("block layout");
    (l.pad_to_align(), off)
}

/// The offset of the ops from the start of the buffer: the same for
/// every length (it depends on the types' sizes and alignments only).
fn ops_offset() -> usize {
    layout(0).1
}

/// Owns a block's [`BlockRt`] and ops.
pub struct OpBuf {
    base: NonNull<u8>,
    len: usize,
}

impl OpBuf {
    /// Moves `ops` into a new buffer, with a fresh run-time state.
    pub fn new(mut ops: Vec<Op>) -> OpBuf {
        let len = ops.len();
        let (l, off) = layout(len);
        // SAFETY: `l` has a nonzero size (BlockRt is not zero-sized).
        let base = unsafe { alloc::alloc(l) };
        let Some(base) = NonNull::new(base) else {
            alloc::handle_alloc_error(l)
        };
        // SAFETY: the buffer holds a BlockRt at 0 and `len` ops at `off`
        // (the layout); the ops are moved out of the vector, which then
        // only frees its storage.
        unsafe {
            base.as_ptr().cast::<BlockRt>().write(BlockRt::default());
            let dst = base.as_ptr().add(off).cast::<Op>();
            std::ptr::copy_nonoverlapping(ops.as_ptr(), dst, len);
            ops.set_len(0);
        }
        OpBuf { base, len }
    }

    /// An empty block (no ops).
    pub fn empty() -> OpBuf {
        OpBuf::new(Vec::new())
    }

    /// The first op, as a pointer into the whole buffer (from which
    /// [`rt_of`] finds the run-time state: never derive that from a
    /// `&[Op]`, whose pointer covers the ops alone).
    pub(crate) fn ops_ptr(&self) -> *const Op {
        // SAFETY: the ops offset is inside the allocation (`new`).
        unsafe { self.base.as_ptr().add(ops_offset()).cast::<Op>() }
    }

    /// The ops.
    pub fn ops(&self) -> &[Op] {
        // SAFETY: `len` initialised ops at the ops offset (`new`).
        unsafe { std::slice::from_raw_parts(self.ops_ptr(), self.len) }
    }

    /// The run-time state.
    pub(crate) fn rt(&self) -> &BlockRt {
        // SAFETY: a BlockRt lives at the start of the buffer (`new`).
        unsafe { &*self.base.as_ptr().cast::<BlockRt>() }
    }

    /// The bytes this buffer holds.
    pub fn bytes(&self) -> usize {
        layout(self.len).0.size()
    }
}

impl Default for OpBuf {
    fn default() -> OpBuf {
        OpBuf::empty()
    }
}

impl std::ops::Deref for OpBuf {
    type Target = [Op];
    fn deref(&self) -> &[Op] {
        self.ops()
    }
}

impl Drop for OpBuf {
    fn drop(&mut self) {
        let (l, off) = layout(self.len);
        // SAFETY: the values `new` wrote, dropped once, then the buffer
        // freed with the layout it was allocated with.
        unsafe {
            let ops = self.base.as_ptr().add(off).cast::<Op>();
            std::ptr::drop_in_place(std::ptr::slice_from_raw_parts_mut(ops, self.len));
            std::ptr::drop_in_place(self.base.as_ptr().cast::<BlockRt>());
            alloc::dealloc(self.base.as_ptr(), l);
        }
    }
}

impl std::fmt::Debug for OpBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ops()).finish()
    }
}

/// The run-time state of the block whose ops start at `ops`.
///
/// # Safety
///
/// `ops` is [`OpBuf::ops_ptr`] of a live buffer (or a copy of it).
#[inline]
pub(crate) unsafe fn rt_of<'x>(ops: *const Op) -> &'x BlockRt {
    // SAFETY: the caller's contract; the BlockRt sits `ops_offset()`
    // bytes before the first op.
    unsafe { &*(ops as *const u8).sub(ops_offset()).cast::<BlockRt>() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_time_state_is_found_from_the_ops_and_ops_are_smaller() {
        let buf = OpBuf::empty();
        // SAFETY: the buffer's own ops pointer.
        let rt = unsafe { rt_of(buf.ops_ptr()) };
        assert!(std::ptr::eq(rt, buf.rt()));
        assert_eq!(buf.ops().len(), 0);
        // The links and the JIT slot are no longer in every op (its
        // decoded instruction is, inline: 40 of its bytes).
        assert!(
            std::mem::size_of::<Op>() <= 112,
            "{}",
            std::mem::size_of::<Op>()
        );
    }
}
