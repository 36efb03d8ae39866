//! Compiling a block that turned hot: at once on the CPU's thread, or,
//! with a [`Compiler`](super::worker::Compiler) attached, on the
//! compiler thread while the interpreter runs the block, the code
//! installed between blocks when it comes back ([`super::worker`]).

use crate::block::OpsRef;
use crate::exec::Exec;
use crate::opbuf::OpBuf;

use super::code::Code;
use super::compile::{self, Unit};
use super::worker::Job;
use super::Entry;

/// A unit out at the compiler: the block it is for (pinned in the cache:
/// unpinned if the block is dropped meanwhile) and its region's copies,
/// whose addresses the code holds.
pub(crate) struct Pending {
    blk: OpsRef,
    region: Vec<OpBuf>,
}

// SAFETY: as the block cache's: the block's ops and the copies belong to
// the CPU and move with it; the compiler thread has copies of its own.
unsafe impl Send for Pending {}

impl Exec<'_> {
    /// Compiles `blk` (a live cached block that just turned hot) with the
    /// warm blocks of its region; its entry when compiled here and now,
    /// None when it failed or went to the compiler thread.
    #[cold]
    #[inline(never)]
    pub(crate) fn jit_compile(&mut self, blk: OpsRef) -> Option<Entry> {
        // The warm blocks compiled with it, copied: the code runs the
        // copies, which live as long as it does (`jit::region`).
        let region: Vec<OpBuf> = self
            .jit_region(blk)
            .into_iter()
            // SAFETY: live blocks (`jit_region`).
            .map(|m| OpBuf::new(unsafe { m.ops() }.to_vec()))
            .collect();
        let copies: Vec<OpsRef> = region.iter().map(OpsRef::of).collect();
        // SAFETY: a live block (the caller's); the copies live in
        // `region` until the code keeps them.
        // A chain bound of 1 turns chaining off, region edges included.
        let edges = self.c.jit_chain > 1;
        let Some(unit) = (unsafe { Unit::new(blk, &copies, edges) }) else {
            self.c.cache_counters.jit_compile_failures.inc();
            return None;
        };
        if let Some(compiler) = self.c.jit_compiler.clone() {
            let id = self.c.jit_next_job;
            self.c.jit_next_job += 1;
            let job = Job {
                id,
                unit,
                to: self.c.jit_inbox.clone(),
            };
            match compiler.send(job) {
                Ok(()) => {
                    self.c.blocks.pin(blk, id);
                    self.c.jit_pending.insert(id, Pending { blk, region });
                    return None;
                }
                // No compiler thread: here and now.
                Err(job) => return self.jit_here(blk, job.unit, region),
            }
        }
        self.jit_here(blk, unit, region)
    }

    fn jit_here(&mut self, blk: OpsRef, unit: Unit, region: Vec<OpBuf>) -> Option<Entry> {
        let started = std::time::Instant::now();
        let code = compile::machine_code(&unit);
        let us = started.elapsed().as_micros() as u64;
        let installed = code.and_then(|(bytes, called)| {
            let code = compile::install(&[(&unit, &bytes)]).pop().flatten()?;
            Some((code, called))
        });
        self.jit_finish(blk, &unit, region, installed, us)
    }

    /// Installs the units the compiler thread finished whose blocks are
    /// still cached (between blocks: no compiled code runs), all of
    /// them in one copy into executable memory (`compile::install`).
    pub(crate) fn jit_install(&mut self) {
        let mut live = Vec::new();
        for done in self.c.jit_inbox.take() {
            let Some(p) = self.c.jit_pending.remove(&done.id) else {
                continue;
            };
            if !self.c.blocks.unpin(p.blk, done.id) {
                // Dropped while it compiled: the code is for ops that are
                // gone.
                self.c.cache_counters.jit_compiles_stale.inc();
                self.c.cache_counters.jit_compile_us.add(done.us);
                continue;
            }
            live.push((p, done));
        }
        let all: Vec<(&Unit, &[u8])> = live
            .iter()
            .filter_map(|(_, d)| Some((&d.unit, d.code.as_ref()?.0.as_slice())))
            .collect();
        let mut codes = compile::install(&all).into_iter();
        for (p, done) in live {
            // The compiled ones took a code each, in order.
            let installed = match done.code {
                Some((_, called)) => codes.next().flatten().map(|c| (c, called)),
                None => None,
            };
            self.jit_finish(p.blk, &done.unit, p.region, installed, done.us);
        }
    }

    /// Sets the installed code of `blk`'s unit (None: compiling or
    /// installing it failed) and counts it; the block's entry.
    fn jit_finish(
        &mut self,
        blk: OpsRef,
        unit: &Unit,
        region: Vec<OpBuf>,
        installed: Option<(Code, usize)>,
        us: u64,
    ) -> Option<Entry> {
        let k = self.c.cache_counters.clone();
        k.jit_compile_us.add(us);
        let Some((code, called)) = installed else {
            k.jit_compile_failures.inc();
            return None;
        };
        // SAFETY: a live cached block (the callers').
        let slot = unsafe { &blk.rt().jit };
        let bytes = code.bytes() as u64;
        let more = region.len() as u64;
        let n = slot.set(code, region);
        self.c.blocks.add_code_bytes(n);
        k.jit_blocks_compiled.inc();
        k.jit_region_blocks.add(more);
        k.jit_ops_compiled.add(unit.ops() as u64);
        k.jit_ops_called.add(called as u64);
        k.jit_code_bytes.add(bytes);
        slot.entry()
    }
}
