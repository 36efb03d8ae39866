//! A bounded cache of metadata clusters (L2 tables or refcount blocks),
//! keyed by their offset in the file, with a dirty mark each.

use std::collections::HashMap;

pub struct Entry {
    pub data: Vec<u8>,
    pub dirty: bool,
    /// When it was last used (for eviction).
    used: u64,
}

pub struct Cache {
    entries: HashMap<u64, Entry>,
    capacity: usize,
    clock: u64,
}

impl Cache {
    pub fn new(capacity: usize) -> Cache {
        Cache {
            entries: HashMap::new(),
            capacity,
            clock: 0,
        }
    }

    pub fn get(&mut self, offset: u64) -> Option<&mut Entry> {
        self.clock += 1;
        let clock = self.clock;
        let e = self.entries.get_mut(&offset)?;
        e.used = clock;
        Some(e)
    }

    pub fn contains(&self, offset: u64) -> bool {
        self.entries.contains_key(&offset)
    }

    pub fn is_full(&self) -> bool {
        self.entries.len() >= self.capacity
    }

    /// The least recently used entry's offset (to evict).
    pub fn victim(&self) -> Option<u64> {
        self.entries
            .iter()
            .min_by_key(|(_, e)| e.used)
            .map(|(&o, _)| o)
    }

    pub fn remove(&mut self, offset: u64) -> Option<Entry> {
        self.entries.remove(&offset)
    }

    pub fn insert(&mut self, offset: u64, data: Vec<u8>, dirty: bool) {
        self.clock += 1;
        self.entries.insert(
            offset,
            Entry {
                data,
                dirty,
                used: self.clock,
            },
        );
    }

    pub fn any_dirty(&self) -> bool {
        self.entries.values().any(|e| e.dirty)
    }

    /// The dirty entries' offsets, in file order.
    pub fn dirty(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .entries
            .iter()
            .filter(|(_, e)| e.dirty)
            .map(|(&o, _)| o)
            .collect();
        v.sort_unstable();
        v
    }
}
