//! Reference counts and cluster allocation.
//!
//! A refcount block holds `cluster_size * 8 / 2^refcount_order` counts;
//! the refcount table (kept whole in memory) holds the blocks' offsets.
//! Clusters are allocated at the end of the file, never reused while the
//! image is open (a freed cluster stays unused, which is no leak: its
//! count is 0). A block that does not exist yet is made in the first
//! cluster it covers, so it counts itself.

use std::io;

use crate::corrupt;
use crate::image::{Meta, State};

/// The offset bits of a refcount table entry.
const REFTABLE_OFFSET_MASK: u64 = 0xffff_ffff_ffff_fe00;
/// Clusters skipped because their count is not 0 before allocation gives
/// up (a hostile image could claim every cluster past its end).
const MAX_SKIPPED: u32 = 1 << 16;

fn get(data: &[u8], index: u64, order: u32) -> u64 {
    let bits = 1u64 << order;
    if bits < 8 {
        let bit = index * bits;
        (u64::from(data[(bit / 8) as usize]) >> (bit % 8)) & ((1 << bits) - 1)
    } else {
        let n = (bits / 8) as usize;
        let at = index as usize * n;
        data[at..at + n]
            .iter()
            .fold(0u64, |v, &b| (v << 8) | u64::from(b))
    }
}

fn put(data: &mut [u8], index: u64, order: u32, value: u64) {
    let bits = 1u64 << order;
    if bits < 8 {
        let bit = index * bits;
        let mask = ((1u8 << bits) - 1) << (bit % 8);
        let byte = &mut data[(bit / 8) as usize];
        *byte = (*byte & !mask) | (((value as u8) << (bit % 8)) & mask);
    } else {
        let n = (bits / 8) as usize;
        let at = index as usize * n;
        for (i, b) in data[at..at + n].iter_mut().enumerate() {
            *b = (value >> (8 * (n - 1 - i))) as u8;
        }
    }
}

impl State {
    /// Counts in one refcount block.
    fn per_block(&self) -> u64 {
        (self.cs * 8) >> self.h.refcount_order
    }

    /// The offset of the refcount block for cluster `index`, loaded;
    /// `None` if there is none.
    fn refblock(&mut self, index: u64) -> io::Result<Option<u64>> {
        let block = index / self.per_block();
        let Some(&entry) = self.reftable.get(block as usize) else {
            return Ok(None);
        };
        let offset = entry & REFTABLE_OFFSET_MASK;
        if offset == 0 {
            return Ok(None);
        }
        if !offset.is_multiple_of(self.cs) {
            return Err(corrupt(format!(
                "refcount block at unaligned offset {offset:#x}"
            )));
        }
        self.load(Meta::Refblock, offset)?;
        Ok(Some(offset))
    }

    /// The reference count of cluster `index`.
    pub(crate) fn refcount(&mut self, index: u64) -> io::Result<u64> {
        let Some(block) = self.refblock(index)? else {
            return Ok(0);
        };
        let (order, i) = (self.h.refcount_order, index % self.per_block());
        let e = self.cache(Meta::Refblock).get(block).ok_or_else(lost)?;
        Ok(get(&e.data, i, order))
    }

    /// Sets the count of cluster `index` (whose block exists).
    fn set_refcount(&mut self, index: u64, value: u64) -> io::Result<()> {
        let block = self
            .refblock(index)?
            .ok_or_else(|| corrupt("refcount block missing for a referenced cluster"))?;
        let (order, i) = (self.h.refcount_order, index % self.per_block());
        let e = self.cache(Meta::Refblock).get(block).ok_or_else(lost)?;
        put(&mut e.data, i, order, value);
        e.dirty = true;
        Ok(())
    }

    /// Allocates one cluster (count 1) and returns its offset. Its
    /// contents are undefined until written.
    pub(crate) fn alloc_cluster(&mut self) -> io::Result<u64> {
        let mut skipped = 0;
        loop {
            let offset = self.end;
            let index = offset >> self.h.cluster_bits;
            let block = index / self.per_block();
            if block >= self.reftable.len() as u64 {
                return Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "qcow2 refcount table full (growing it is not supported)",
                ));
            }
            if self.metadata.contains(&offset) {
                // A table the image names lies here, past the end of the
                // file: neither a refcount block nor data may take it
                // (found by fuzzing: a new refcount block became the L2
                // table an L1 entry pointed past the end).
                self.end += self.cs;
                skipped += 1;
                if skipped > MAX_SKIPPED {
                    return Err(corrupt("no free cluster past the end of the image file"));
                }
                continue;
            }
            if self.reftable[block as usize] & REFTABLE_OFFSET_MASK == 0 {
                // A new refcount block here, counting itself.
                let mut data = vec![0u8; self.cs as usize];
                put(
                    &mut data,
                    index % self.per_block(),
                    self.h.refcount_order,
                    1,
                );
                self.insert(Meta::Refblock, offset, data)?;
                self.reftable[block as usize] = offset;
                self.reftable_dirty = true;
                self.metadata.insert(offset);
                self.end += self.cs;
                continue;
            }
            self.end += self.cs;
            if self.refcount(index)? != 0 {
                skipped += 1;
                if skipped > MAX_SKIPPED {
                    return Err(corrupt("no free cluster past the end of the image file"));
                }
                continue;
            }
            self.set_refcount(index, 1)?;
            return Ok(offset);
        }
    }

    /// Drops one reference to every cluster that `len` bytes from
    /// `offset` touch.
    pub(crate) fn free_range(&mut self, offset: u64, len: u64) -> io::Result<()> {
        let first = offset >> self.h.cluster_bits;
        let last = (offset + len.max(1) - 1) >> self.h.cluster_bits;
        for index in first..=last {
            let count = self.refcount(index)?;
            if count == 0 {
                return Err(corrupt(format!(
                    "freeing cluster {index:#x} whose reference count is {count}"
                )));
            }
            self.set_refcount(index, count - 1)?;
        }
        Ok(())
    }
}

fn lost() -> io::Error {
    io::Error::other("qcow2 metadata cache lost a loaded table")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_of_every_width_round_trip() {
        for order in 0..=6u32 {
            let mut block = vec![0u8; 512];
            let per = (512 * 8) >> order;
            let max = if order == 6 {
                u64::MAX
            } else {
                (1u64 << (1u64 << order)) - 1
            };
            for i in 0..per {
                put(&mut block, i, order, i % (max.min(1000) + 1));
            }
            for i in 0..per {
                assert_eq!(
                    get(&block, i, order),
                    i % (max.min(1000) + 1),
                    "order {order}"
                );
            }
        }
        // 16 bits, big-endian, as QEMU writes them.
        let mut block = vec![0u8; 8];
        put(&mut block, 1, 4, 0x0102);
        assert_eq!(block[2..4], [1, 2]);
        // 1 bit: least significant first.
        let mut block = vec![0u8; 1];
        put(&mut block, 3, 0, 1);
        assert_eq!(block[0], 8);
    }
}
