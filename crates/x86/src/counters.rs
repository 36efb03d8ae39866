//! Counters of the software TLB and of the decoded-block cache: how often
//! translations are walked and dropped (by cause), and how many blocks are
//! built, dropped (by cause) and held (in bytes). The CPU's thread is their
//! only writer; any thread reads them while it runs ([`Cpu::counters`],
//! shown by `ferrovisor run --stats` under the exit table).
//!
//! A counter is bumped with a plain load and store (one writer: no locked
//! instruction on the hot paths).
//!
//! [`Cpu::counters`]: crate::Cpu::counters

use std::sync::atomic::{AtomicU64, Ordering};

/// Why translations were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum TlbFlush {
    /// A CR3 write that drops the (PCID's) non-global translations.
    Cr3,
    /// INVLPG.
    Invlpg,
    /// INVPCID (any type).
    Invpcid,
    /// CR0 (PG, WP, PE) or CR4 paging and rights bits.
    PagingControl,
    /// EFER.NXE.
    Efer,
    /// Protection keys (PKRU, IA32_PKRS) or data breakpoints changed what
    /// a cached translation may do.
    Rights,
    /// Fast write access revoked because a page became code.
    CodePage,
    /// The accelerator asked: the memory map changed.
    MemoryMap,
    /// The accelerator asked: the dirty log was read and re-armed.
    DirtyLog,
    /// State set from outside (registers, reset, INIT, a snapshot).
    StateSet,
    /// Anything else (a flush with no recorded cause).
    Other,
}

impl TlbFlush {
    pub const ALL: [TlbFlush; 11] = [
        TlbFlush::Cr3,
        TlbFlush::Invlpg,
        TlbFlush::Invpcid,
        TlbFlush::PagingControl,
        TlbFlush::Efer,
        TlbFlush::Rights,
        TlbFlush::CodePage,
        TlbFlush::MemoryMap,
        TlbFlush::DirtyLog,
        TlbFlush::StateSet,
        TlbFlush::Other,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The counter's name in `--stats` and the stats API.
    pub fn name(self) -> &'static str {
        match self {
            TlbFlush::Cr3 => "tlb_flush_cr3",
            TlbFlush::Invlpg => "tlb_flush_invlpg",
            TlbFlush::Invpcid => "tlb_flush_invpcid",
            TlbFlush::PagingControl => "tlb_flush_cr0_cr4",
            TlbFlush::Efer => "tlb_flush_efer",
            TlbFlush::Rights => "tlb_flush_rights",
            TlbFlush::CodePage => "tlb_flush_code_page",
            TlbFlush::MemoryMap => "tlb_flush_memory_map",
            TlbFlush::DirtyLog => "tlb_flush_dirty_log",
            TlbFlush::StateSet => "tlb_flush_state_set",
            TlbFlush::Other => "tlb_flush_other",
        }
    }

    /// The bit of this cause in a mask (see `CpuSignals::request_flush`).
    pub(crate) fn bit(self) -> u32 {
        1 << self as u32
    }
}

/// Why decoded blocks were dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BlockDrop {
    /// This CPU wrote their page (self-modifying code, a page reused).
    CodeWrite,
    /// Another CPU or a device wrote their page.
    RemoteWrite,
    /// The cache was over its byte budget: oldest blocks evicted.
    Evicted,
    /// Everything dropped: memory map, dirty log, state set, or this CPU
    /// fell too far behind the other CPUs' code writes.
    Flush,
}

impl BlockDrop {
    pub const ALL: [BlockDrop; 4] = [
        BlockDrop::CodeWrite,
        BlockDrop::RemoteWrite,
        BlockDrop::Evicted,
        BlockDrop::Flush,
    ];
    pub const COUNT: usize = Self::ALL.len();

    pub fn name(self) -> &'static str {
        match self {
            BlockDrop::CodeWrite => "blocks_dropped_code_write",
            BlockDrop::RemoteWrite => "blocks_dropped_remote_write",
            BlockDrop::Evicted => "blocks_evicted",
            BlockDrop::Flush => "blocks_dropped_flush",
        }
    }
}

/// One counter with a single writer.
#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n` (writer thread only).
    #[inline(always)]
    pub fn add(&self, n: u64) {
        self.0.store(
            self.0.load(Ordering::Relaxed).wrapping_add(n),
            Ordering::Relaxed,
        );
    }

    #[inline(always)]
    pub fn inc(&self) {
        self.add(1);
    }

    /// Sets a level (writer thread only).
    #[inline(always)]
    pub fn set(&self, v: u64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// The counters of one CPU.
#[derive(Debug, Default)]
pub struct CpuCounters {
    /// Page walks (TLB misses that walked the paging structures).
    pub tlb_walks: Counter,
    /// Entries installed by walks (a miss on a RAM page).
    pub tlb_fills: Counter,
    /// Translation drops, by [`TlbFlush`] cause.
    pub tlb_flushes: [Counter; TlbFlush::COUNT],
    /// Blocks decoded and cached.
    pub blocks_built: Counter,
    /// Block lookups that missed the jump cache (and went to the map).
    pub block_lookups_slow: Counter,
    /// Blocks dropped, by [`BlockDrop`] cause.
    pub blocks_dropped: [Counter; BlockDrop::COUNT],
    /// Bytes the cached blocks hold now (their ops and bookkeeping).
    pub code_cache_bytes: Counter,
    /// The most `code_cache_bytes` ever was.
    pub code_cache_peak_bytes: Counter,
    /// Blocks compiled by the JIT, and blocks it could not compile.
    pub jit_blocks_compiled: Counter,
    pub jit_compile_failures: Counter,
    /// Ops of the compiled blocks, and how many of them call their
    /// interpreter handler instead of being inlined.
    pub jit_ops_compiled: Counter,
    pub jit_ops_called: Counter,
    /// Blocks run as compiled code.
    pub jit_block_runs: Counter,
    /// Of those, blocks entered straight from the previous compiled block
    /// (chaining), without the run loop.
    pub jit_chained: Counter,
    /// Chain steps that took the slow path (`jit::chain::next`, the
    /// reference) rather than the block's own exit code.
    pub jit_chain_slow: Counter,
    /// Of the chained blocks, those entered by an edge inside a region
    /// (`jit::region`), and the blocks compiled into regions besides
    /// their hot block.
    pub jit_local_jumps: Counter,
    pub jit_region_blocks: Counter,
    /// Host bytes of machine code compiled (without the exit records).
    pub jit_code_bytes: Counter,
    /// Host time spent compiling, in microseconds (failed compiles too,
    /// and on the compiler thread, `jit::worker`).
    pub jit_compile_us: Counter,
    /// Units the compiler thread finished for blocks dropped meanwhile
    /// (their code discarded).
    pub jit_compiles_stale: Counter,
    /// Guest instructions retired (added when `Cpu::run` returns).
    pub instructions: Counter,
    /// Blocks run, by either engine (instructions / blocks_run is the
    /// mean block length the engines see).
    pub blocks_run: Counter,
}

impl CpuCounters {
    #[inline]
    pub fn flush(&self, cause: TlbFlush) {
        self.tlb_flushes[cause as usize].inc();
    }

    #[inline]
    pub fn dropped(&self, cause: BlockDrop, n: u64) {
        self.blocks_dropped[cause as usize].add(n);
    }

    pub fn flushes(&self, cause: TlbFlush) -> u64 {
        self.tlb_flushes[cause as usize].get()
    }

    pub fn drops(&self, cause: BlockDrop) -> u64 {
        self.blocks_dropped[cause as usize].get()
    }

    /// Every counter as (name, value), in display order.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        let mut v = vec![
            ("tlb_walks", self.tlb_walks.get()),
            ("tlb_fills", self.tlb_fills.get()),
        ];
        v.extend(TlbFlush::ALL.iter().map(|&c| (c.name(), self.flushes(c))));
        v.push(("blocks_built", self.blocks_built.get()));
        v.push(("block_lookups_slow", self.block_lookups_slow.get()));
        v.extend(BlockDrop::ALL.iter().map(|&c| (c.name(), self.drops(c))));
        v.push(("code_cache_bytes", self.code_cache_bytes.get()));
        v.push(("code_cache_peak_bytes", self.code_cache_peak_bytes.get()));
        v.push(("jit_blocks_compiled", self.jit_blocks_compiled.get()));
        v.push(("jit_compile_failures", self.jit_compile_failures.get()));
        v.push(("jit_ops_compiled", self.jit_ops_compiled.get()));
        v.push(("jit_ops_called", self.jit_ops_called.get()));
        v.push(("jit_block_runs", self.jit_block_runs.get()));
        v.push(("jit_chained", self.jit_chained.get()));
        v.push(("jit_chain_slow", self.jit_chain_slow.get()));
        v.push(("jit_local_jumps", self.jit_local_jumps.get()));
        v.push(("jit_region_blocks", self.jit_region_blocks.get()));
        v.push(("jit_code_bytes", self.jit_code_bytes.get()));
        v.push(("jit_compile_us", self.jit_compile_us.get()));
        v.push(("jit_compiles_stale", self.jit_compiles_stale.get()));
        v.push(("instructions", self.instructions.get()));
        v.push(("blocks_run", self.blocks_run.get()));
        v
    }
}
