//! Decoded blocks: straight-line runs of instructions inside one 4 KiB
//! guest-physical page, cached by (RIP, physical address, code size) and
//! dropped when their page is written.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

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

/// The per-CPU block cache.
#[derive(Default)]
pub struct BlockCache {
    map: FastMap<Key, Arc<Block>>,
    /// Guest-physical page → keys of the blocks decoded from it.
    pages: FastMap<u64, Vec<Key>>,
    /// Blocks decoded since creation (statistics).
    pub decoded: u64,
    /// Blocks invalidated because their page was written.
    pub invalidated: u64,
}

impl BlockCache {
    #[inline]
    pub fn get(&self, rip: u64, gpa: u64, bits: u32) -> Option<&Arc<Block>> {
        self.map.get(&(rip, gpa, bits))
    }

    pub fn insert(&mut self, block: Block) -> Arc<Block> {
        if self.map.len() >= MAX_BLOCKS {
            self.clear();
        }
        self.decoded += 1;
        let key = (block.rip, block.gpa, block.bits);
        let page = block.gpa & !0xfff;
        let b = Arc::new(block);
        if self.map.insert(key, b.clone()).is_none() {
            self.pages.entry(page).or_default().push(key);
        }
        b
    }

    #[inline]
    pub fn is_code_page(&self, page: u64) -> bool {
        !self.pages.is_empty() && self.pages.contains_key(&page)
    }

    /// Drops every block decoded from guest-physical page `page`.
    pub fn invalidate_page(&mut self, page: u64) {
        if let Some(keys) = self.pages.remove(&page) {
            for k in keys {
                if self.map.remove(&k).is_some() {
                    self.invalidated += 1;
                }
            }
        }
    }

    pub fn clear(&mut self) {
        self.map.clear();
        self.pages.clear();
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}
