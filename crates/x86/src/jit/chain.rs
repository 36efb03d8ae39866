//! Block chaining inside compiled code (issue 11, phases 3 to 5).
//!
//! A compiled block that ran to its end tail-calls the chain stub
//! (`chain_emit`), which makes the block's epilogue (RIP, the retired
//! count), the checks below over the words [`Watch`] points at and a hit
//! in the block's exit record (`exit`), then tail-calls the successor
//! (`return_call_indirect`, the stack stays flat). When any of that fails
//! it calls [`next`], the reference: `next` finishes the block exactly as
//! the run loop would, makes the checks `Exec::run_chain` makes between
//! two blocks, and when the successor is known and compiled returns its
//! code (updating the block's links from the jump cache, and the exit
//! record from them). Otherwise it returns 0 and the block returns to the
//! run loop, which finds the state already final (finishing a block twice
//! is idempotent).
//!
//! The successor is the one the run loop would pick: the link in the
//! block's last op when its chain key is current (a one-entry inline
//! cache, which also serves RET and indirect jumps), else the jump cache
//! (both sides of a conditional branch, a return to another caller), which
//! then becomes the link. Links and exit records only ever name live
//! blocks under the key they were made under (see `block`), so a block
//! dropped by self-modifying code, another CPU's write, eviction or a
//! TLB/CR3 change is never chained to; no block is freed while a chain
//! runs (only `Exec::run` collects garbage).
//!
//! Latency: every step checks what the run loop checks between blocks
//! (a kick or flush request, an interrupt or NMI window wanted, another
//! CPU's code writes, the instruction budget, which the next block must
//! fit in whole), and a chain is at most [`CHAIN_MAX`] blocks.
//! Exactness: an op that ends its block early (an exception, `block_exit`)
//! returns from the chain at once with the running block's ops in
//! `Exec::jit_cur` (the block stores them), so the run loop's epilogue
//! raises it with RIP and the retired count exact.

use std::sync::atomic::{AtomicU32, AtomicU64};
use std::sync::OnceLock;

use super::exit::Exits;
use crate::block::NO_KEY;
use crate::exec::op::Link;
use crate::exec::{Exec, Op};

/// Blocks one entry into compiled code runs at most (the first one
/// included) before the run loop looks again. Every step checks what
/// the run loop would (signals, the budget, windows): the bound only
/// caps how long the loop goes unvisited; 128 cost the shell loop ~4 %
/// against 1024 (a return to the run loop every ~500 instructions).
pub(crate) const CHAIN_MAX: u32 = 1024;

/// The chain bound: `FERROVISOR_JIT_CHAIN=N` (blocks, at least 1; 1
/// turns chaining off) when set, else [`CHAIN_MAX`]; read once per
/// process.
pub(crate) fn max() -> u32 {
    static N: OnceLock<u32> = OnceLock::new();
    *N.get_or_init(|| super::knob("FERROVISOR_JIT_CHAIN", CHAIN_MAX))
}

/// What the chain step of compiled code reads besides the CPU and the
/// links: the words other threads change (a kick, a flush request, the
/// code bit, the code epochs) and the chain key. Set when a chain starts
/// (`Exec::exec_compiled`); the key is refreshed after every call-out
/// (`super::call_op`), the only ops that may change it (a CR3 write or
/// INVLPG, a write to a code page, a privilege change), and by [`next`].
#[derive(Clone, Copy)]
#[repr(C)]
pub(crate) struct Watch {
    /// The CPU's signal bits: nonzero for a kick, a flush request or a
    /// code change by another CPU (`CodeShare` sets the code bit after
    /// bumping an epoch), the one word the stub's common case tests.
    pub signals: *const AtomicU32,
    pub epoch: *const AtomicU64,
    pub revoke: *const AtomicU64,
    /// `Exec::chain_key()`.
    pub key: u64,
    /// The stub's common case (`chain_emit`) chains only while the
    /// retired count is below this: the budget less the most instructions
    /// a block holds (any successor fits whole); 0 when something the
    /// common case does not test is pending at the chain's start: an
    /// interrupt or NMI window wanted (`Cpu::request_*_window` needs the
    /// CPU, so it cannot change while a chain runs), code epochs not
    /// caught up with (a later bump sets the code bit). [`next`] and the
    /// chain stub check the exact budget.
    pub fast_end: u64,
}

impl Watch {
    pub(crate) const NONE: Watch = Watch {
        signals: std::ptr::null(),
        epoch: std::ptr::null(),
        revoke: std::ptr::null(),
        key: NO_KEY,
        fast_end: 0,
    };
}

/// The most instructions one block retires (`Op::end` is a u8).
const BLOCK_INSNS_MAX: u64 = u8::MAX as u64;

impl Exec<'_> {
    /// Points [`Watch`] at this CPU's words, before a chain starts whose
    /// budget ends at `limit`.
    #[inline]
    pub(crate) fn jit_watch_start(&mut self, limit: u64) {
        let c = &*self.c;
        let share = &c.code_share;
        let quiet = !c.want_interrupt_window
            && !c.want_nmi_window
            && share.epoch() == c.seen_code_epoch
            && share.revoke_epoch() == c.seen_revoke;
        let fast_end = if quiet {
            limit.saturating_sub(BLOCK_INSNS_MAX)
        } else {
            0
        };
        self.jit_watch = Watch {
            signals: c.signals.bits_ptr(),
            epoch: share.epoch_ptr(),
            revoke: share.revoke_ptr(),
            key: self.chain_key(),
            fast_end,
        };
    }
}

/// Called by the chain stub when its step fails: the successor's code
/// (an [`super::Entry`] address) to tail-call, or 0 to return.
///
/// # Safety
///
/// `ex` is the running `Exec`, `rec` the exit record of the calling block
/// (alive with it: only `Exec::run` frees op buffers), whose last op's
/// `next` and [`meta`] (with the block's op count from bit 16) follow
/// (constants in the code).
pub(crate) unsafe extern "C" fn next(ex: *mut u8, rec: *const u8, nrip: u64, meta: u64) -> u64 {
    // SAFETY: the caller's contract; the block holds no reference to
    // either.
    let (ex, rec) = unsafe { (&mut *(ex as *mut Exec<'static>), &*(rec as *const Exits)) };
    // The chain leaves through this block unless it goes on.
    ex.jit_cur = rec.ops();
    // SAFETY: the calling block's ops, alive (see above).
    let blk = rec.ops();
    if blk.is_empty() {
        return 0;
    }
    // SAFETY: as above; a compiled block has ops.
    let rt = unsafe { blk.rt() };
    ex.jit_chain_next(rec, rt, nrip, meta)
        .map_or(0, |f| f.addr())
}

/// The last op's instruction count (`end`) and `sets_rip` (bit 8).
pub(crate) fn meta(last: &Op) -> u64 {
    last.end as u64 | (last.sets_rip as u64) << 8
}

impl Exec<'_> {
    fn jit_chain_next(
        &mut self,
        rec: &Exits,
        rt: &crate::opbuf::BlockRt,
        nrip: u64,
        meta: u64,
    ) -> Option<super::Entry> {
        self.c.cache_counters.jit_chain_slow.inc();
        // The block's epilogue, as `exec_ops` does it for a whole block.
        if meta & 0x100 == 0 {
            self.c.state.rip = nrip;
        }
        self.c.icount = self.icount0 + (meta & 0xff);
        if self.jit_chain_left <= 1 {
            return None;
        }
        let c = &*self.c;
        if c.signals.pending()
            || c.want_interrupt_window
            || c.want_nmi_window
            || c.code_share.epoch() != c.seen_code_epoch
            || c.code_share.revoke_epoch() != c.seen_revoke
        {
            return None;
        }
        let rip = c.state.rip;
        let key = self.chain_key();
        self.jit_watch.key = key;
        if key == NO_KEY {
            return None;
        }
        let hit = |l: &Link| l.rip == rip && l.key == key && l.entry != 0;
        let mut link = rt.link.get();
        if !hit(&link) {
            let other = rt.link2.get();
            if hit(&other) {
                link = other;
            } else {
                // Not linked, or linked before the successor was compiled.
                let ops = if link.rip == rip && link.key == key {
                    link.ops
                } else if other.rip == rip && other.key == key {
                    other.ops
                } else {
                    self.c.blocks.get_fast(rip, self.jump_key())?
                };
                debug_assert!(self.c.blocks.is_live(ops), "chained to a dropped block");
                let new = Link::to(rip, key, ops);
                if link.rip != rip {
                    rt.link2.set(link);
                }
                rt.link.set(new);
                if new.entry == 0 {
                    return None;
                }
                link = new;
            }
        }
        // The stub follows this link from now on.
        rec.note(rip, key, link.entry);
        if link.insns > self.jit_limit.saturating_sub(self.c.icount) {
            return None;
        }
        let (succ, f) = (link.ops, super::Entry::at(link.entry));
        self.jit_chain_left -= 1;
        self.jit_cur = succ;
        self.icount0 = self.c.icount;
        self.c.block_exit = false;
        // The counters of chained blocks: `Exec::exec_compiled`, from
        // `jit_chain_left`.
        Some(f)
    }
}
