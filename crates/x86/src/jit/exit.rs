//! A compiled block's exit record (issue 11, phase 5): the successors the
//! chain stub (`chain_emit`) chains the block to, in a small record of
//! their own rather than in the block's last op.
//!
//! Each compiled block has one ([`Exits`], its address a constant in the
//! block's code, passed to the stub): the last [`WAYS`] successors it
//! chained to, each as (RIP, the chain key it was linked under, the successor's
//! code), and the block's ops (what `Exec::jit_cur` becomes when the
//! chain leaves through this block's slow path). Phase 4's stub read the
//! two 48-byte links of the last op, which sit in the middle of ~200-byte
//! ops spread over the heap; its hottest instruction (~8 % of the loop)
//! waited on that load. A record is 64 bytes, its three words per
//! successor at the start, allocated in compile order.
//!
//! `chain::next`, the reference, fills it when it links (a live,
//! compiled successor under the current key); the stub follows an entry
//! only under the key it was made under, which every kill of a block,
//! TLB flush and privilege change moves (`Exec::chain_key`), as the op
//! links are.

use std::cell::Cell;
use std::mem::offset_of;

use cranelift_codegen::ir::{types::I64, InstBuilder, MemFlagsData};
use cranelift_frontend::FunctionBuilder;

use super::compile::Cx;
use crate::block::OpsRef;
use crate::exec::Exec;

/// One successor: its RIP, the chain key it was linked under (0 for
/// none: no key is 0) and its code (a `jit::Entry` address).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Exit {
    rip: Cell<u64>,
    key: Cell<u64>,
    entry: Cell<u64>,
}

impl Default for Exit {
    fn default() -> Exit {
        Exit {
            rip: Cell::new(u64::MAX),
            key: Cell::new(0),
            entry: Cell::new(0),
        }
    }
}

/// Successors an exit record holds: a conditional branch has two, a
/// return from a function called from several places more.
pub(super) const WAYS: usize = 4;

/// A compiled block's exit record: its last [`WAYS`] successors, the
/// most recent first, then its ops; two cache lines.
#[repr(C, align(64))]
pub(crate) struct Exits {
    exits: [Exit; WAYS],
    ops: OpsRef,
}

/// Bytes from one successor to the next.
pub(super) const STRIDE: usize = std::mem::size_of::<Exit>();

/// The offsets of a successor's RIP, key and code in the record.
pub(super) fn offsets() -> (i32, i32, i32) {
    (
        offset_of!(Exit, rip) as i32,
        offset_of!(Exit, key) as i32,
        offset_of!(Exit, entry) as i32,
    )
}

impl Exits {
    /// The empty record of the block `ops`.
    pub(crate) fn new(ops: OpsRef) -> Exits {
        Exits {
            exits: Default::default(),
            ops,
        }
    }

    /// The block's ops.
    pub(crate) fn ops(&self) -> OpsRef {
        self.ops
    }

    /// The block chains to `entry` at `rip` under `key` (a live, compiled
    /// block under the current key: `chain::next`).
    pub(crate) fn note(&self, rip: u64, key: u64, entry: u64) {
        debug_assert!(key != 0 && key != crate::block::NO_KEY && entry != 0);
        // The entry for `rip`, or the oldest, is replaced; the ones
        // before it move one place down, the new one goes first.
        let e = &self.exits;
        let at = e
            .iter()
            .position(|x| x.rip.get() == rip)
            .unwrap_or(WAYS - 1);
        for k in (1..=at).rev() {
            e[k].rip.set(e[k - 1].rip.get());
            e[k].key.set(e[k - 1].key.get());
            e[k].entry.set(e[k - 1].entry.get());
        }
        e[0].rip.set(rip);
        e[0].key.set(key);
        e[0].entry.set(entry);
    }

    #[cfg(test)]
    pub(crate) fn entries(&self) -> Vec<(u64, u64, u64)> {
        self.exits
            .iter()
            .filter(|e| e.rip.get() != u64::MAX)
            .map(|e| (e.rip.get(), e.key.get(), e.entry.get()))
            .collect()
    }
}

/// Stores the ops at `addr` (`n` of them, the compiled block's) as
/// `Exec::jit_cur`: what a block that leaves the chain early (an
/// exception, `block_exit`) does before it returns.
pub(super) fn set_cur(b: &mut FunctionBuilder<'_>, cx: &Cx, addr: u64, n: usize) {
    // `OpsRef` is `repr(C)`: the pointer, then the length.
    const _: () = assert!(std::mem::size_of::<OpsRef>() == 16);
    let cur = offset_of!(Exec<'static>, jit_cur) as i32;
    let p = b.ins().iconst(I64, addr as i64);
    let n = b.ins().iconst(I64, n as i64);
    b.ins().store(MemFlagsData::trusted(), p, cx.ex, cur);
    b.ins().store(MemFlagsData::trusted(), n, cx.ex, cur + 8);
}

/// Loads the first line of the exit record at `rec` (its successors) at
/// the head of a member, for nothing but its arrival in the cache: the
/// chain stub reads it when the member ends, and with ~3 400 blocks an
/// iteration of the shell loop (~430 KiB of records) that read missed
/// the L1 often enough to hold a third of the stub's samples. Loaded
/// here, the miss overlaps the member's own work: the shell loop's
/// 100 000 iterations took 4.05 s instead of 4.55 s. The load may trap
/// in Cranelift's eyes (default flags), so that it is kept though
/// nothing reads its value; the record lives as long as the code.
pub(super) fn touch(b: &mut FunctionBuilder<'_>, rec: u64) {
    let at = b.ins().iconst(I64, rec as i64);
    b.ins().load(I64, MemFlagsData::new(), at, 0);
}
