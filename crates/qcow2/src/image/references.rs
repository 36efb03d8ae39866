//! The host clusters the L2 tables reference, checked when an image opens
//! writable.
//!
//! New clusters are allocated at the end of the file. An L2 entry that
//! names a host cluster past the end of the file (a hostile or broken
//! image: QEMU never writes one, it writes data before the entry that
//! points to it) would alias the cluster allocated there later: two guest
//! offsets sharing one host cluster, a write to one showing through the
//! other. QEMU opens such an image and its allocator (which takes any
//! cluster of refcount 0) can hand that cluster out the same way;
//! `qemu-img check` reports it as an error (a reference to a cluster of
//! refcount 0). Ferrovisor refuses to open it writable, with a message
//! that says so; read-only, nothing is allocated, and a read of such a
//! cluster fails as corrupt. A compressed cluster may end past the end of
//! the file (its last sector is partial): allocation starts after it.

use super::{entry, State, OFFSET_MASK};
use crate::Error;

impl State {
    /// Refuses an image whose L2 entries name a host cluster at or past
    /// the end of the file, and moves the allocation point past the end
    /// of every compressed cluster. Reads every allocated L2 table once.
    /// Tables that cannot be read here (unaligned, past the end of the
    /// file) fail the request that meets them, as before.
    pub(super) fn check_references(&mut self) -> Result<(), Error> {
        let tables: Vec<u64> = self
            .l1
            .iter()
            .map(|e| e & OFFSET_MASK)
            .filter(|&o| o != 0 && o.is_multiple_of(self.cs) && o < self.end)
            .collect();
        let mut data = vec![0u8; self.cs as usize];
        for table in tables {
            if let Err(source) = self.file.read_exact_at(&mut data, table) {
                if source.kind() == std::io::ErrorKind::UnexpectedEof {
                    continue;
                }
                return Err(Error::Io {
                    what: "an L2 table",
                    source,
                });
            }
            for i in 0..self.h.l2_entries() as usize {
                // An entry that does not decode fails its own requests.
                let Ok(mapping) = self.decode(entry(&data, i)) else {
                    continue;
                };
                let Some((host, len)) = mapping.owned(self.cs) else {
                    continue;
                };
                if host >= self.end {
                    return Err(Error::Invalid(format!(
                        "the L2 table at {table:#x} names a cluster at {host:#x}, past the end \
                         of the file: it would share the next cluster allocated there \
                         (qemu-img check -r all repairs the image)"
                    )));
                }
                self.end = self.end.max((host + len).div_ceil(self.cs) * self.cs);
            }
        }
        Ok(())
    }
}
