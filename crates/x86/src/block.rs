//! Decoded blocks: straight-line runs of instructions inside one 4 KiB
//! guest-physical page, cached by (RIP, physical address, code size) and
//! dropped when their page is written.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use iced_x86::Instruction;

/// Most instructions in one block.
pub const MAX_BLOCK_INSNS: usize = 64;
/// Blocks kept before the cache is dropped wholesale.
const MAX_BLOCKS: usize = 1 << 16;

/// A decoded block.
#[derive(Debug)]
pub struct Block {
    pub rip: u64,
    /// Guest-physical address of the first byte.
    pub gpa: u64,
    /// Code size (16, 32, 64).
    pub bits: u32,
    pub insns: Vec<Instruction>,
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

const JUMP_CACHE: usize = 4096;
const NONE: BlockId = u32::MAX;

#[inline]
fn jump_index(rip: u64) -> usize {
    ((rip ^ (rip >> 12)) as usize) & (JUMP_CACHE - 1)
}

/// The per-CPU block cache: blocks in a slab (so executing one needs no
/// reference counting), found through a direct-mapped jump cache in front
/// of a map, and indexed by guest-physical page for invalidation.
pub struct BlockCache {
    slab: Vec<Block>,
    free: Vec<BlockId>,
    jump: Vec<BlockId>,
    map: FastMap<Key, BlockId>,
    /// Guest-physical page → ids of the blocks decoded from it.
    pages: FastMap<u64, Vec<BlockId>>,
    scratch: Block,
    /// Blocks decoded since creation (statistics).
    pub decoded: u64,
    /// Blocks invalidated because their page was written.
    pub invalidated: u64,
}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            slab: Vec::new(),
            free: Vec::new(),
            jump: vec![NONE; JUMP_CACHE],
            map: FastMap::default(),
            pages: FastMap::default(),
            scratch: Block {
                rip: 0,
                gpa: 0,
                bits: 64,
                insns: Vec::new(),
                live: false,
            },
            decoded: 0,
            invalidated: 0,
        }
    }
}

impl BlockCache {
    #[inline]
    fn key_of(b: &Block) -> Key {
        (b.rip, b.gpa, b.bits)
    }

    #[inline]
    pub fn get(&mut self, rip: u64, gpa: u64, bits: u32) -> Option<BlockId> {
        let slot = jump_index(rip);
        let id = self.jump[slot];
        if let Some(b) = self.slab.get(id as usize) {
            if b.rip == rip && b.gpa == gpa && b.bits == bits && b.live {
                return Some(id);
            }
        }
        let id = *self.map.get(&(rip, gpa, bits))?;
        self.jump[slot] = id;
        Some(id)
    }

    /// The block with id `id` (an empty one if it was invalidated).
    #[inline]
    pub fn block(&self, id: BlockId) -> &Block {
        if id == SCRATCH {
            return &self.scratch;
        }
        self.slab.get(id as usize).unwrap_or(&self.scratch)
    }

    /// Moves the instructions of block `id` out for execution (no copy,
    /// no reference count); give them back with [`BlockCache::put_insns`].
    #[inline]
    pub fn take_insns(&mut self, id: BlockId) -> Vec<Instruction> {
        let b = if id == SCRATCH {
            &mut self.scratch
        } else {
            match self.slab.get_mut(id as usize) {
                Some(b) => b,
                None => return Vec::new(),
            }
        };
        std::mem::take(&mut b.insns)
    }

    /// Returns instructions taken with `take_insns`, unless the block was
    /// invalidated meanwhile (then they are dropped).
    #[inline]
    pub fn put_insns(&mut self, id: BlockId, insns: Vec<Instruction>) {
        if id == SCRATCH {
            return;
        }
        if let Some(b) = self.slab.get_mut(id as usize) {
            if b.live && b.insns.is_empty() {
                b.insns = insns;
            }
        }
    }

    /// Stores an uncached block in the scratch slot.
    pub fn set_scratch(&mut self, mut block: Block) -> BlockId {
        block.live = false;
        self.scratch = block;
        SCRATCH
    }

    pub fn insert(&mut self, mut block: Block) -> BlockId {
        block.live = true;
        if self.map.len() >= MAX_BLOCKS {
            self.clear();
        }
        self.decoded += 1;
        let key = Self::key_of(&block);
        let page = block.gpa & !0xfff;
        if let Some(&old) = self.map.get(&key) {
            self.kill(old);
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.slab[id as usize] = block;
                id
            }
            None => {
                self.slab.push(block);
                (self.slab.len() - 1) as BlockId
            }
        };
        self.map.insert(key, id);
        self.pages.entry(page).or_default().push(id);
        self.jump[jump_index(key.0)] = id;
        id
    }

    fn kill(&mut self, id: BlockId) {
        let Some(b) = self.slab.get_mut(id as usize) else {
            return;
        };
        if !b.live {
            return;
        }
        let key = (b.rip, b.gpa, b.bits);
        b.live = false;
        b.insns = Vec::new();
        self.map.remove(&key);
        let slot = jump_index(key.0);
        if self.jump[slot] == id {
            self.jump[slot] = NONE;
        }
        self.free.push(id);
    }

    #[inline]
    pub fn is_code_page(&self, page: u64) -> bool {
        !self.pages.is_empty() && self.pages.contains_key(&page)
    }

    /// Drops every block decoded from guest-physical page `page`.
    pub fn invalidate_page(&mut self, page: u64) {
        if let Some(ids) = self.pages.remove(&page) {
            for id in ids {
                let on_page = self
                    .slab
                    .get(id as usize)
                    .is_some_and(|b| b.live && b.gpa & !0xfff == page);
                if on_page {
                    self.kill(id);
                    self.invalidated += 1;
                }
            }
        }
    }

    pub fn clear(&mut self) {
        self.jump.fill(NONE);
        self.map.clear();
        self.pages.clear();
        self.slab.clear();
        self.free.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
