//! Memory slots of an emu VM: the second stage of address translation
//! (guest-physical → host) and the dirty log.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use hv::memory::PAGE_SIZE;
use hv::{HvError, MemorySlot};
use vm_memory::MmapRegion;

/// One mapped slot.
pub(crate) struct Slot {
    pub id: u32,
    pub gpa: u64,
    pub size: u64,
    pub host: *mut u8,
    pub read_only: bool,
    /// One bit per 4 KiB page, set on the first write after it was cleared.
    pub dirty: Option<Box<[AtomicU64]>>,
    /// Keeps the mapping alive while the slot exists.
    _region: Arc<MmapRegion>,
}

// SAFETY: `host` points into `_region`, which the slot owns (through the
// Arc) and which is valid for the whole life of the slot; the pointer is
// only a base address used to compute access pointers, never dereferenced
// here. Concurrent access to guest memory is what guest RAM is: the vCPUs
// and the VMM share it like a multi-processor's memory.
unsafe impl Send for Slot {}
// SAFETY: as above; the dirty bitmap is atomic.
unsafe impl Sync for Slot {}

impl Slot {
    pub fn new(slot: &MemorySlot) -> Result<Slot, HvError> {
        let size = slot.size();
        if !slot.guest_addr.is_multiple_of(PAGE_SIZE)
            || size == 0
            || !size.is_multiple_of(PAGE_SIZE)
        {
            return Err(HvError::InvalidArgument(format!(
                "slot {} at {:#x}+{:#x} is not page aligned or empty",
                slot.id, slot.guest_addr, size
            )));
        }
        if slot.guest_addr.checked_add(size).is_none() {
            return Err(HvError::InvalidArgument(format!(
                "slot {} at {:#x}+{:#x} wraps around",
                slot.id, slot.guest_addr, size
            )));
        }
        let dirty = slot.log_dirty.then(|| {
            (0..slot.pages().div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect()
        });
        Ok(Slot {
            id: slot.id,
            gpa: slot.guest_addr,
            size,
            host: slot.region.as_ptr(),
            read_only: slot.read_only,
            dirty,
            _region: slot.region.clone(),
        })
    }

    fn end(&self) -> u64 {
        self.gpa + self.size
    }

    pub fn contains(&self, gpa: u64) -> bool {
        gpa >= self.gpa && gpa < self.end()
    }

    /// Marks the page holding `gpa` (inside the slot) dirty.
    #[inline]
    pub fn mark_dirty(&self, gpa: u64) {
        if let Some(bitmap) = &self.dirty {
            let page = (gpa - self.gpa) / PAGE_SIZE;
            if let Some(word) = bitmap.get((page / 64) as usize) {
                let bit = 1u64 << (page % 64);
                if word.load(Ordering::Relaxed) & bit == 0 {
                    word.fetch_or(bit, Ordering::Relaxed);
                }
            }
        }
    }

    /// Takes the dirty bitmap, leaving it clear.
    pub fn take_dirty(&self) -> Option<Vec<u64>> {
        self.dirty
            .as_ref()
            .map(|bitmap| bitmap.iter().map(|w| w.swap(0, Ordering::AcqRel)).collect())
    }
}

/// An immutable set of slots, sorted by address. The VM replaces the whole
/// list when a slot changes; vCPUs hold the list they last looked at.
#[derive(Default)]
pub(crate) struct SlotList {
    slots: Vec<Arc<Slot>>,
}

impl SlotList {
    /// A new list with `slot` added or replacing the slot of the same id.
    pub fn with(&self, slot: Slot) -> Result<SlotList, HvError> {
        let mut slots: Vec<Arc<Slot>> = self
            .slots
            .iter()
            .filter(|s| s.id != slot.id)
            .cloned()
            .collect();
        if let Some(other) = slots
            .iter()
            .find(|s| s.gpa < slot.end() && slot.gpa < s.end())
        {
            return Err(HvError::InvalidArgument(format!(
                "slot {} at {:#x}+{:#x} overlaps slot {} at {:#x}+{:#x}",
                slot.id, slot.gpa, slot.size, other.id, other.gpa, other.size
            )));
        }
        slots.push(Arc::new(slot));
        slots.sort_by_key(|s| s.gpa);
        Ok(SlotList { slots })
    }

    /// A new list without slot `id`.
    pub fn without(&self, id: u32) -> Result<(SlotList, Arc<Slot>), HvError> {
        let removed = self
            .slots
            .iter()
            .find(|s| s.id == id)
            .cloned()
            .ok_or_else(|| HvError::InvalidArgument(format!("no memory slot {id}")))?;
        let slots = self.slots.iter().filter(|s| s.id != id).cloned().collect();
        Ok((SlotList { slots }, removed))
    }

    pub fn by_id(&self, id: u32) -> Option<&Arc<Slot>> {
        self.slots.iter().find(|s| s.id == id)
    }

    /// The slot containing `gpa`.
    #[inline]
    pub fn find(&self, gpa: u64) -> Option<&Slot> {
        let i = self.slots.partition_point(|s| s.gpa <= gpa);
        let slot = self.slots.get(i.checked_sub(1)?)?;
        slot.contains(gpa).then_some(&**slot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(id: u32, gpa: u64, pages: usize, log_dirty: bool) -> Slot {
        Slot::new(&MemorySlot {
            id,
            guest_addr: gpa,
            region: Arc::new(MmapRegion::new(pages * 4096).unwrap()),
            read_only: false,
            log_dirty,
        })
        .unwrap()
    }

    #[test]
    fn finds_slots_by_address() {
        let list = SlotList::default()
            .with(slot(0, 0, 16, false))
            .unwrap()
            .with(slot(1, 0x10_0000, 4, false))
            .unwrap();
        assert_eq!(list.find(0).map(|s| s.id), Some(0));
        assert_eq!(list.find(0xffff).map(|s| s.id), Some(0));
        assert!(list.find(0x10000).is_none());
        assert_eq!(list.find(0x10_3fff).map(|s| s.id), Some(1));
        assert!(list.find(0x10_4000).is_none());
        assert!(list.find(u64::MAX).is_none());
    }

    #[test]
    fn overlaps_and_bad_slots_are_refused() {
        let list = SlotList::default().with(slot(0, 0, 16, false)).unwrap();
        assert!(list.with(slot(1, 0xf000, 2, false)).is_err());
        // Replacing a slot by id is allowed.
        assert!(list.with(slot(0, 0, 8, false)).is_ok());
        assert!(list.without(5).is_err());
        let region = Arc::new(MmapRegion::new(4096).unwrap());
        for gpa in [0x123, u64::MAX - 0xfff] {
            let bad = MemorySlot {
                id: 9,
                guest_addr: gpa,
                region: region.clone(),
                read_only: false,
                log_dirty: false,
            };
            assert!(Slot::new(&bad).is_err(), "{gpa:#x}");
        }
    }

    #[test]
    fn dirty_bits_are_taken_once() {
        let s = slot(0, 0x1000_0000, 130, true);
        s.mark_dirty(0x1000_0000);
        s.mark_dirty(0x1000_0000 + 129 * 4096 + 17);
        let log = s.take_dirty().unwrap();
        assert_eq!(hv::memory::dirty_pages(&log), vec![0, 129]);
        assert!(hv::memory::dirty_pages(&s.take_dirty().unwrap()).is_empty());
        assert!(slot(1, 0, 1, false).take_dirty().is_none());
    }
}
