//! Memory slots: `struct kvm_memory_slot` of the seed.

use std::sync::Arc;

use vm_memory::MmapRegion;

/// Guest pages are 4 KiB in every backend's dirty log.
pub const PAGE_SIZE: u64 = 4096;

/// A range of guest-physical memory backed by a host mapping.
#[derive(Debug, Clone)]
pub struct MemorySlot {
    /// Slot id, unique within a VM.
    pub id: u32,
    /// First guest-physical address (page aligned).
    pub guest_addr: u64,
    /// The host memory behind the slot; its size is the slot's size.
    pub region: Arc<MmapRegion>,
    /// Guest writes are not stored (they become MMIO writes, as with
    /// KVM_MEM_READONLY).
    pub read_only: bool,
    /// Record guest writes in the slot's dirty bitmap.
    pub log_dirty: bool,
}

impl MemorySlot {
    pub fn size(&self) -> u64 {
        self.region.size() as u64
    }

    /// Number of 4 KiB pages, the length of the dirty bitmap in bits.
    pub fn pages(&self) -> u64 {
        self.size().div_ceil(PAGE_SIZE)
    }
}

/// Lists the page numbers set in a dirty bitmap, lowest first.
pub fn dirty_pages(bitmap: &[u64]) -> Vec<u64> {
    let mut pages = Vec::new();
    for (word_index, &word) in bitmap.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let bit = bits.trailing_zeros() as u64;
            pages.push(word_index as u64 * 64 + bit);
            bits &= bits - 1;
        }
    }
    pages
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_pages_lists_set_bits_in_order() {
        let bitmap = [0b1010u64, 0, 1 << 63];
        assert_eq!(dirty_pages(&bitmap), vec![1, 3, 191]);
        assert!(dirty_pages(&[0, 0]).is_empty());
    }
}
