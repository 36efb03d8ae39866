//! Regions (issue 11, phase 7): a hot block compiled together with the
//! warm blocks of its page that it reaches by its last op's target or
//! fall-through, and they by theirs, so that a loop of small blocks
//! (a string scan, a token loop: two to four instructions a block in the
//! shell loop) runs as one function whose internal edges are plain
//! jumps (an inline branch's outcome jumps straight to the member it
//! starts). An edge makes the checks the chain stub makes but the chain
//! bound (the budget, the signal word; the chain key only a called-out
//! op can move) and the block epilogue the run loop would, but no
//! indirect jump and no exit-record load: the stub's shared indirect
//! jump and its record load were a fifth of the shell loop's host time.
//! The registers the members name stay in variables across the edges.
//!
//! Which blocks: those the last ops' [`crate::exec::Op::successors`] start; cached,
//! live, warm (they ran [`warm`] times whole) and
//! 64-bit, starting and ending in the virtual page of the hot block and
//! decoded from the same physical page. The region's code is entered only
//! where the hot block was found under the current chain key, which
//! proved that page's translation; the other members share it, and the
//! key is checked again on every edge. Members are copied (their ops,
//! into buffers the hot block's JIT slot owns): an eviction of a member
//! cannot free ops the region's code points to; a write to the page
//! drops the hot block, and the region with it.

use std::sync::OnceLock;

use crate::block::OpsRef;
use crate::exec::Exec;
use crate::state::Mode;

/// Blocks in one region at most (the hot block included).
pub(crate) const REGION_BLOCKS: usize = 8;
/// Ops in one region at most.
const REGION_OPS: usize = 192;

/// The region bound: `FERROVISOR_JIT_REGION=N` (blocks, at least 1; 1
/// compiles blocks alone, a block that jumps to itself still loops
/// inside its code) when set, else [`REGION_BLOCKS`]; read once per
/// process (`Cpu::jit_region`).
pub(crate) fn max() -> usize {
    static N: OnceLock<usize> = OnceLock::new();
    *N.get_or_init(|| super::knob("FERROVISOR_JIT_REGION", REGION_BLOCKS))
}

/// Whole runs that make a block warm enough to join a region, for a
/// compile threshold of `hot` runs.
fn warm(hot: u32) -> u32 {
    (hot / 16).max(1)
}

impl Exec<'_> {
    /// The other members of the region of the hot block `blk`, which is
    /// about to run at CS:RIP under the current translation; empty when
    /// it is compiled alone.
    pub(crate) fn jit_region(&self, blk: OpsRef) -> Vec<OpsRef> {
        let st = &self.c.state;
        let max = self.c.jit_region;
        if max <= 1 || self.c.jit_chain <= 1 || st.mode != Mode::Long || st.code_bits != 64 {
            return Vec::new();
        }
        // SAFETY: a live block (`jit_compile`'s contract).
        let ops = unsafe { blk.ops() };
        let (Some(first), Some(last)) = (ops.first(), ops.last()) else {
            return Vec::new();
        };
        let page = first.ip & !0xfff;
        let bank = crate::mmu::code_bank(self.user());
        // A block that ends in the page (none straddles into the next).
        let within = |next: u64| next.wrapping_sub(1) & !0xfff == page;
        if !within(last.next) {
            return Vec::new();
        }
        let Some(gpa) = self.c.tlb.code_gpa(bank, first.ip) else {
            return Vec::new();
        };
        let frame = gpa & !0xfff;
        // Each member, where it starts and where its last op goes.
        let mut members = vec![blk];
        let mut starts = vec![first.ip];
        let mut succs = vec![last.successors()];
        let mut total = ops.len();
        let mut i = 0;
        while i < members.len() && members.len() < max {
            let targets = succs[i];
            i += 1;
            for t in targets {
                if t & !0xfff != page || starts.contains(&t) || members.len() >= max {
                    continue;
                }
                let Some(m) = self.c.blocks.find(t, frame | (t & 0xfff), 64) else {
                    continue;
                };
                // SAFETY: found live in the cache.
                let (mops, rt) = unsafe { (m.ops(), m.rt()) };
                let Some(mlast) = mops.last() else { continue };
                if !within(mlast.next)
                    || rt.jit.runs() < warm(self.c.jit_hot)
                    || total + mops.len() > REGION_OPS
                {
                    continue;
                }
                total += mops.len();
                members.push(m);
                starts.push(t);
                succs.push(mlast.successors());
            }
        }
        // Only the loops through the hot block pay: a member from which
        // the hot block cannot be reached inside the region would run at
        // most once an entry, and its code is compiled anyway where it
        // is hot itself.
        let mut back = vec![false; members.len()];
        back[0] = true;
        loop {
            let mut grew = false;
            for i in 0..members.len() {
                let reaches = |t: &u64| starts.iter().zip(&back).any(|(s, &b)| b && s == t);
                if !back[i] && succs[i].iter().any(reaches) {
                    back[i] = true;
                    grew = true;
                }
            }
            if !grew {
                break;
            }
        }
        members
            .into_iter()
            .zip(back)
            .skip(1)
            .filter_map(|(m, b)| b.then_some(m))
            .collect()
    }
}
