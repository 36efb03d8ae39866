//! Decoded blocks: straight-line runs of instructions inside one 4 KiB
//! guest-physical page, cached by (RIP, physical address, code size) and
//! dropped when their page is written.
//!
//! The cache is bounded by bytes ([`CODE_CACHE_BYTES`] per CPU): past the
//! budget the oldest blocks are evicted until a quarter of it is free
//! again, except that a block looked up since the sweep last passed it
//! gets a second chance (CLOCK): a boot's run-once code goes, the working
//! set that the guest keeps running stays (with plain first in, first out
//! the kernel's hot paths, decoded early, were evicted and recompiled).

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use crate::counters::{BlockDrop, CpuCounters};
use crate::exec::Op;
use crate::opbuf::OpBuf;
use crate::zeroed::ZeroedArray;

/// Most instructions in one block.
pub const MAX_BLOCK_INSNS: usize = 64;
/// Blocks kept at most, whatever their size.
const MAX_BLOCKS: usize = 1 << 16;
/// The bytes one CPU's decoded blocks may hold (their ops and the
/// bookkeeping of each block). A Linux boot of the test guest decodes
/// ~55 MiB of blocks, most of it run once (init code, module loading):
/// the oldest go first and the shell's working set stays; a guest that
/// runs many MiB of distinct code cannot grow the VMM without bound.
pub const CODE_CACHE_BYTES: usize = 32 << 20;
/// Bookkeeping of one cached block besides its ops and its slab slot: the
/// map entry, the page index entry, the jump-cache-independent FIFO slot.
const BLOCK_OVERHEAD: usize = 64;

/// Marks the cached block of `ops` as looked up (links between blocks
/// are keyed by the kill count, so after an eviction every block that
/// runs again is looked up at least once) and returns `ops`.
#[inline]
fn used(ops: OpsRef) -> OpsRef {
    // SAFETY: `ops` are those of a live cached block, whose BlockRt
    // precedes them.
    unsafe { crate::opbuf::rt_of(ops.ptr) }.used.set(true);
    ops
}

/// A decoded block.
#[derive(Debug)]
pub struct Block {
    pub rip: u64,
    /// Guest-physical address of the first byte.
    pub gpa: u64,
    /// Code size (16, 32, 64).
    pub bits: u32,
    /// The instructions, pre-decoded. Never changed after the block is
    /// cached (the interpreter runs them through a pointer).
    pub ops: OpBuf,
    /// Still in the cache (false once invalidated).
    pub live: bool,
}

/// A small fast hasher for integer keys (Fx-style multiply-rotate).
#[derive(Default, Clone, Copy)]
pub struct FastHasher(u64);

impl Hasher for FastHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(b as u64);
        }
    }
    #[inline]
    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u32(&mut self, n: u32) {
        self.write_u64(n as u64);
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

type Key = (u64, u64, u32);

/// Index of a block in the cache. Valid until the next decode (an
/// invalidation may empty it, never reuse it, before then).
pub type BlockId = u32;

/// The id of the one uncached block (code outside RAM, or an instruction
/// straddling a page boundary).
pub const SCRATCH: BlockId = u32::MAX;

const JUMP_CACHE: usize = 16384;
/// A jump-cache key that never matches.
pub const NO_KEY: u64 = u64::MAX;

#[inline]
fn jump_index(rip: u64) -> usize {
    (rip.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - JUMP_CACHE.trailing_zeros())) as usize
}

/// The ops of a block, as the interpreter runs them.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct OpsRef {
    ptr: *const Op,
    len: u32,
}

impl OpsRef {
    pub(crate) const EMPTY: OpsRef = OpsRef {
        ptr: std::ptr::NonNull::dangling().as_ptr(),
        len: 0,
    };

    /// The ops of `buf`.
    pub(crate) fn of(buf: &OpBuf) -> OpsRef {
        OpsRef {
            ptr: buf.ops_ptr(),
            len: buf.len() as u32,
        }
    }

    /// The first op's address (compiled code stores it as `Exec::jit_cur`).
    pub(crate) fn addr(self) -> u64 {
        self.ptr as u64
    }

    /// No ops (EMPTY, or an empty block).
    #[inline]
    pub(crate) fn is_empty(self) -> bool {
        self.len == 0
    }

    /// The run-time state of the block (links, JIT slot).
    ///
    /// # Safety
    ///
    /// As for [`OpsRef::ops`]; not [`OpsRef::EMPTY`].
    #[inline]
    pub(crate) unsafe fn rt<'x>(self) -> &'x crate::opbuf::BlockRt {
        // SAFETY: `ptr` is the first op of a live `OpBuf` (every OpsRef
        // but EMPTY is made from one; the caller's contract).
        unsafe { crate::opbuf::rt_of(self.ptr) }
    }

    /// The ops.
    ///
    /// # Safety
    ///
    /// The cache the reference came from must not have run
    /// [`BlockCache::collect_garbage`] since (op buffers of dropped blocks
    /// are kept until then, and cached blocks never change their ops).
    #[inline]
    pub(crate) unsafe fn ops<'x>(self) -> &'x [Op] {
        // SAFETY: `ptr` and `len` come from a live `OpBuf` whose buffer
        // is freed only by collect_garbage (the caller's contract).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len as usize) }
    }
}

/// A direct-mapped jump-cache entry: a cached block and where its ops
/// are. In 64-bit mode a hit needs only RIP and `key` (the TLB generation
/// and the privilege): the translation of RIP cannot change without a new
/// TLB generation. Otherwise the block's (RIP, physical address, code
/// size) are compared. An entry always names a live block (killing a
/// block clears its entry). An empty entry is all zeros ([`NO_JUMP`]):
/// no key is 0 (the TLB generation starts at 1), and `slot` 0 names no
/// block, so the cache is allocated zeroed and a page of it costs memory
/// only once an entry in it is used.
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Jump {
    rip: u64,
    key: u64,
    ptr: *const Op,
    len: u32,
    /// The block's id + 1; 0 for none.
    slot: u32,
}

impl Jump {
    #[inline]
    fn new(rip: u64, key: u64, id: BlockId, ops: OpsRef) -> Jump {
        Jump {
            rip,
            key,
            ptr: ops.ptr,
            len: ops.len,
            // Ids are below MAX_BLOCKS.
            slot: id + 1,
        }
    }

    /// The block's id; u32::MAX (no block) for an empty entry.
    #[inline]
    fn id(&self) -> BlockId {
        self.slot.wrapping_sub(1)
    }

    #[inline]
    fn ops(&self) -> OpsRef {
        OpsRef {
            ptr: self.ptr,
            len: self.len,
        }
    }
}

const NO_JUMP: Jump = Jump {
    rip: 0,
    key: 0,
    ptr: std::ptr::null(),
    len: 0,
    slot: 0,
};

/// An empty jump cache (see [`Jump`]).
fn empty_jump_cache() -> ZeroedArray<Jump> {
    // SAFETY: a Jump is integers and a raw pointer: all zeros is a valid
    // value, NO_JUMP.
    unsafe { ZeroedArray::new(JUMP_CACHE) }
}

/// The per-CPU block cache: blocks in a slab, found through a
/// direct-mapped jump cache in front of a map, and indexed by
/// guest-physical page for invalidation. The ops of dropped blocks are
/// kept in a graveyard until [`BlockCache::collect_garbage`], so that a
/// block may invalidate itself (self-modifying code) while it runs.
pub struct BlockCache {
    slab: Vec<Block>,
    free: Vec<BlockId>,
    jump: ZeroedArray<Jump>,
    map: FastMap<Key, BlockId>,
    /// Guest-physical page → ids of the blocks decoded from it.
    pages: FastMap<u64, Vec<BlockId>>,
    scratch: Block,
    graveyard: Vec<OpBuf>,
    dead_slabs: Vec<Vec<Block>>,
    /// Blocks in the order they were cached: (id, birth); an entry whose
    /// birth no longer matches `born[id]` is stale (the block was dropped).
    order: VecDeque<(BlockId, u64)>,
    /// The birth (insertion number) of the block in each slab slot.
    born: Vec<u64>,
    /// Bytes the cached blocks hold (see [`BlockCache::block_bytes`]).
    bytes: usize,
    /// Most bytes before the oldest blocks are evicted.
    budget: usize,
    counters: Arc<CpuCounters>,
    /// Blocks decoded since creation (statistics).
    pub decoded: u64,
    /// Blocks invalidated because their page was written.
    pub invalidated: u64,
    /// Bumped when blocks are dropped (links between blocks check it).
    pub(crate) kills: u64,
    /// Blocks whose code is being compiled on the compiler thread, by
    /// their ops and job (`jit::dispatch`): dropping one unpins it.
    pinned: Vec<(usize, u64)>,
    /// Debug builds: the op buffers of cached blocks, to check that the
    /// interpreter only ever enters live blocks.
    #[cfg(debug_assertions)]
    live_ops: std::collections::HashSet<usize>,
}

// SAFETY: the raw pointers in the jump cache point into op buffers owned
// by this cache (blocks, graveyard or dead slabs); they move with it.
unsafe impl Send for BlockCache {}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            slab: Vec::new(),
            free: Vec::new(),
            jump: empty_jump_cache(),
            map: FastMap::default(),
            pages: FastMap::default(),
            scratch: Block {
                rip: 0,
                gpa: 0,
                bits: 64,
                ops: OpBuf::empty(),
                live: false,
            },
            graveyard: Vec::new(),
            dead_slabs: Vec::new(),
            order: VecDeque::new(),
            born: Vec::new(),
            bytes: 0,
            budget: CODE_CACHE_BYTES,
            counters: Arc::default(),
            decoded: 0,
            invalidated: 0,
            kills: 0,
            pinned: Vec::new(),
            #[cfg(debug_assertions)]
            live_ops: Default::default(),
        }
    }
}

impl BlockCache {
    /// An empty cache counting into `counters`.
    pub fn with_counters(counters: Arc<CpuCounters>) -> BlockCache {
        BlockCache {
            counters,
            ..BlockCache::default()
        }
    }

    /// Sets the byte budget (evicting at once when over it).
    pub fn set_budget(&mut self, bytes: usize) {
        self.budget = bytes;
        self.evict_to(bytes);
    }

    /// The bytes the cached blocks hold.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// What one cached block costs: its ops, its slab slot and its entries
    /// in the map, the page index and the eviction order.
    fn block_bytes(b: &Block) -> usize {
        std::mem::size_of::<Block>() + b.ops.bytes() + b.ops.rt().jit.code_bytes() + BLOCK_OVERHEAD
    }

    /// Counts host code compiled for a cached block (its bytes leave the
    /// count with the block, through `block_bytes`).
    pub(crate) fn add_code_bytes(&mut self, n: usize) {
        self.set_bytes(self.bytes + n);
    }

    fn set_bytes(&mut self, bytes: usize) {
        self.bytes = bytes;
        self.counters.code_cache_bytes.set(bytes as u64);
        if bytes as u64 > self.counters.code_cache_peak_bytes.get() {
            self.counters.code_cache_peak_bytes.set(bytes as u64);
        }
    }

    /// Evicts blocks until at most `target` bytes are held.
    fn evict_to(&mut self, target: usize) {
        while self.bytes > target && self.evict_one() {}
    }

    /// Evicts the oldest block not looked up since the sweep last passed
    /// it; those that were go to the back of the order, their mark
    /// cleared. False when no block is left.
    fn evict_one(&mut self) -> bool {
        while let Some((id, birth)) = self.order.pop_front() {
            let Some(b) = self.slab.get(id as usize) else {
                continue;
            };
            if self.born[id as usize] != birth || !b.live {
                continue;
            }
            let rt = b.ops.rt();
            if rt.used.get() {
                rt.used.set(false);
                self.order.push_back((id, birth));
                continue;
            }
            self.kill(id);
            self.counters.dropped(BlockDrop::Evicted, 1);
            return true;
        }
        false
    }

    #[inline]
    fn key_of(b: &Block) -> Key {
        (b.rip, b.gpa, b.bits)
    }

    /// The ops of the block at `rip` by the jump cache's `key` alone
    /// (64-bit mode).
    #[inline]
    pub fn get_fast(&self, rip: u64, key: u64) -> Option<OpsRef> {
        let j = &self.jump[jump_index(rip)];
        // NO_KEY (outside 64-bit mode) proves nothing about the
        // translation: those lookups compare the physical address.
        if j.rip == rip && j.key == key && key != NO_KEY {
            return Some(used(j.ops()));
        }
        None
    }

    /// The block at (`rip`, `gpa`, `bits`); remembers it in the jump
    /// cache under `key`.
    #[inline]
    pub fn get(&mut self, rip: u64, gpa: u64, bits: u32, key: u64) -> Option<OpsRef> {
        let slot = jump_index(rip);
        let id = self.jump[slot].id();
        if let Some(b) = self.slab.get(id as usize) {
            if b.rip == rip && b.gpa == gpa && b.bits == bits && b.live {
                self.jump[slot].key = key;
                return Some(used(self.jump[slot].ops()));
            }
        }
        let id = *self.map.get(&(rip, gpa, bits))?;
        let ops = OpsRef::of(&self.slab[id as usize].ops);
        self.jump[slot] = Jump::new(rip, key, id, ops);
        Some(used(ops))
    }

    /// The ops of the cached block at (`rip`, `gpa`, `bits`), without
    /// touching the jump cache (the JIT's region discovery).
    pub(crate) fn find(&self, rip: u64, gpa: u64, bits: u32) -> Option<OpsRef> {
        let id = *self.map.get(&(rip, gpa, bits))?;
        let b = self.slab.get(id as usize)?;
        b.live.then(|| OpsRef::of(&b.ops))
    }

    /// Whether `ops` belong to a cached block or are the scratch block's
    /// (debug builds; always true otherwise).
    pub fn is_live(&self, ops: OpsRef) -> bool {
        #[cfg(debug_assertions)]
        {
            self.is_scratch(ops) || self.live_ops.contains(&(ops.ptr as usize))
        }
        #[cfg(not(debug_assertions))]
        {
            let _ = ops;
            true
        }
    }

    /// Whether `ops` are those of the uncached (scratch) block, which
    /// nothing may link to: the next uncached block replaces them.
    #[inline]
    pub fn is_scratch(&self, ops: OpsRef) -> bool {
        std::ptr::eq(ops.ptr, self.scratch.ops.as_ptr())
    }

    /// Stores an uncached block in the scratch slot.
    pub fn set_scratch(&mut self, mut block: Block) -> OpsRef {
        block.live = false;
        let old = std::mem::replace(&mut self.scratch, block);
        self.graveyard.push(old.ops);
        OpsRef::of(&self.scratch.ops)
    }

    /// Caches a block; `key` as for [`BlockCache::get`].
    pub fn insert(&mut self, mut block: Block, key: u64) -> OpsRef {
        block.live = true;
        let size = Self::block_bytes(&block);
        if self.bytes + size > self.budget || self.map.len() >= MAX_BLOCKS {
            // Room for a quarter of the budget (and of the block count)
            // before the next eviction.
            let target = (self.budget - self.budget / 4).saturating_sub(size);
            self.evict_to(target);
            while self.map.len() >= MAX_BLOCKS - MAX_BLOCKS / 4 && self.evict_one() {}
        }
        self.decoded += 1;
        self.counters.blocks_built.inc();
        let map_key = Self::key_of(&block);
        let page = block.gpa & !0xfff;
        if let Some(&old) = self.map.get(&map_key) {
            self.kill(old);
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slab[id as usize] = block;
                id
            }
            None => {
                self.slab.push(block);
                self.born.push(0);
                (self.slab.len() - 1) as BlockId
            }
        };
        let birth = self.decoded;
        self.born[id as usize] = birth;
        self.order.push_back((id, birth));
        if self.order.len() > 2 * self.map.len() + 1024 {
            // Mostly blocks dropped by writes: keep the live ones.
            let born = &self.born;
            let slab = &self.slab;
            self.order
                .retain(|&(id, b)| born[id as usize] == b && slab[id as usize].live);
        }
        self.set_bytes(self.bytes + size);
        let ops = OpsRef::of(&self.slab[id as usize].ops);
        #[cfg(debug_assertions)]
        self.live_ops.insert(ops.ptr as usize);
        self.map.insert(map_key, id);
        self.pages.entry(page).or_default().push(id);
        self.jump[jump_index(map_key.0)] = Jump::new(map_key.0, key, id, ops);
        ops
    }

    /// Drops a cached block; returns false when it was not live.
    fn kill(&mut self, id: BlockId) -> bool {
        let Some(b) = self.slab.get_mut(id as usize) else {
            return false;
        };
        if !b.live {
            return false;
        }
        let key = (b.rip, b.gpa, b.bits);
        let size = Self::block_bytes(b);
        b.live = false;
        self.kills += 1;
        #[cfg(debug_assertions)]
        self.live_ops.remove(&(b.ops.as_ptr() as usize));
        if !self.pinned.is_empty() {
            let ptr = b.ops.as_ptr() as usize;
            self.pinned.retain(|&(p, _)| p != ptr);
        }
        self.graveyard.push(std::mem::take(&mut b.ops));
        self.map.remove(&key);
        let slot = jump_index(key.0);
        if self.jump[slot].id() == id {
            self.jump[slot] = NO_JUMP;
        }
        self.free.push(id);
        let page = key.1 & !0xfff;
        if let Some(ids) = self.pages.get_mut(&page) {
            ids.retain(|&i| i != id);
            if ids.is_empty() {
                self.pages.remove(&page);
            }
        }
        self.set_bytes(self.bytes - size);
        true
    }

    #[inline]
    pub fn is_code_page(&self, page: u64) -> bool {
        !self.pages.is_empty() && self.pages.contains_key(&page)
    }

    /// Drops every block decoded from guest-physical page `page` (counted
    /// as `cause`: a write by this CPU or by someone else).
    pub fn invalidate_page(&mut self, page: u64, cause: BlockDrop) {
        if let Some(ids) = self.pages.remove(&page) {
            let mut n = 0;
            for id in ids {
                let on_page = self
                    .slab
                    .get(id as usize)
                    .is_some_and(|b| b.live && b.gpa & !0xfff == page);
                if on_page && self.kill(id) {
                    n += 1;
                }
            }
            self.invalidated += n;
            self.counters.dropped(cause, n);
        }
    }

    /// Marks `ops` (a cached block's) as compiling for job `id`.
    pub(crate) fn pin(&mut self, ops: OpsRef, id: u64) {
        self.pinned.push((ops.ptr as usize, id));
    }

    /// Ends job `id`'s pin of `ops`: true when the block is still cached
    /// (it was not dropped since [`BlockCache::pin`]).
    pub(crate) fn unpin(&mut self, ops: OpsRef, id: u64) -> bool {
        let at = self
            .pinned
            .iter()
            .position(|&p| p == (ops.ptr as usize, id));
        at.map(|i| self.pinned.swap_remove(i)).is_some()
    }

    /// Drops every block.
    pub fn clear(&mut self) {
        self.pinned.clear();
        self.counters
            .dropped(BlockDrop::Flush, self.map.len() as u64);
        self.set_bytes(0);
        self.order.clear();
        self.born.clear();
        self.kills += 1;
        #[cfg(debug_assertions)]
        self.live_ops.clear();
        // Untouched pages of the cache stay unallocated (see [`Jump`]).
        for j in self.jump.iter_mut().filter(|j| j.slot != 0) {
            *j = NO_JUMP;
        }
        self.map.clear();
        self.pages.clear();
        if !self.slab.is_empty() {
            self.dead_slabs.push(std::mem::take(&mut self.slab));
        }
        self.free.clear();
    }

    /// Frees the ops of dropped blocks. No [`OpsRef`] may be in use.
    pub fn collect_garbage(&mut self) {
        if !self.graveyard.is_empty() {
            self.graveyard.clear();
        }
        if !self.dead_slabs.is_empty() {
            self.dead_slabs.clear();
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
