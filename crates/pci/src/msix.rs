//! MSI-X (PCI Local Bus 3.0, 6.8.2): the capability, the vector table and
//! the pending bit array.
//!
//! Each table entry is 16 bytes: message address (low, high), message data,
//! vector control (bit 0 = masked). Entries start masked. A vector that
//! fires while it is masked, or while the function mask is set, sets its
//! pending bit instead; unmasking it (or clearing the function mask) sends
//! the message and clears the bit. With MSI-X disabled nothing is sent or
//! made pending: the device uses INTx instead.
//!
//! The table takes aligned 32-bit accesses and aligned 64-bit ones
//! (two dwords); the PBA is read-only. Other accesses are counted and
//! ignored (reads return 0).

use std::sync::Arc;

/// The capability ID.
pub const CAP_ID: u8 = 0x11;
/// Bytes of a table entry.
pub const ENTRY_SIZE: u64 = 16;
/// Message control: MSI-X enable.
pub const CONTROL_ENABLE: u16 = 1 << 15;
/// Message control: function mask.
pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
/// The most vectors a table has.
pub const MAX_VECTORS: u16 = 2048;
/// Vector control: masked.
const VECTOR_MASKED: u32 = 1;

/// Where MSIs go: the VMM's interrupt controller.
pub trait MsiSink: Send + Sync {
    /// Sends the message (address, data) the guest programmed.
    fn send(&self, address: u64, data: u32);
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    control: u32,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry {
            addr_lo: 0,
            addr_hi: 0,
            data: 0,
            control: VECTOR_MASKED,
        }
    }
}

impl Entry {
    fn dword(&self, index: u64) -> u32 {
        match index {
            0 => self.addr_lo,
            1 => self.addr_hi,
            2 => self.data,
            _ => self.control,
        }
    }
    fn address(&self) -> u64 {
        u64::from(self.addr_hi) << 32 | u64::from(self.addr_lo)
    }
}

/// An MSI-X table and PBA in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MsixSaved {
    /// Address low, address high, data, vector control.
    pub entries: Vec<[u32; 4]>,
    /// The PBA's bits.
    pub pending: Vec<u64>,
    pub enabled: bool,
    pub function_mask: bool,
}

/// What happened to the MSIs, for tests and statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsixCounters {
    pub sent: u64,
    /// Vectors that fired while masked (sent later, when unmasked).
    pub pended: u64,
    /// Triggers of vectors that do not exist.
    pub bad_vectors: u64,
    /// Table or PBA accesses of a bad size or alignment, or writes to the PBA.
    pub bad_accesses: u64,
}

/// The MSI-X state of a function.
pub struct MsixTable {
    entries: Vec<Entry>,
    pending: Vec<u64>,
    enabled: bool,
    function_mask: bool,
    sink: Arc<dyn MsiSink>,
    counters: MsixCounters,
}

impl MsixTable {
    /// A table of `vectors` entries (1..=[`MAX_VECTORS`]; clamped).
    pub fn new(vectors: u16, sink: Arc<dyn MsiSink>) -> MsixTable {
        let vectors = vectors.clamp(1, MAX_VECTORS) as usize;
        MsixTable {
            entries: vec![Entry::default(); vectors],
            pending: vec![0; vectors.div_ceil(64)],
            enabled: false,
            function_mask: false,
            sink,
            counters: MsixCounters::default(),
        }
    }

    pub fn vectors(&self) -> u16 {
        self.entries.len() as u16
    }

    /// Bytes of the table.
    pub fn table_size(&self) -> u64 {
        self.entries.len() as u64 * ENTRY_SIZE
    }

    /// Bytes of the PBA.
    pub fn pba_size(&self) -> u64 {
        self.pending.len() as u64 * 8
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn counters(&self) -> MsixCounters {
        self.counters
    }

    /// The capability's body (after ID and next pointer) and its write
    /// mask: message control, table offset/BIR, PBA offset/BIR.
    pub fn capability(
        &self,
        table_bar: u8,
        table_offset: u32,
        pba_bar: u8,
        pba_offset: u32,
    ) -> (Vec<u8>, Vec<u8>) {
        let mut body = Vec::with_capacity(10);
        body.extend_from_slice(&(self.vectors() - 1).to_le_bytes());
        body.extend_from_slice(&(table_offset | u32::from(table_bar)).to_le_bytes());
        body.extend_from_slice(&(pba_offset | u32::from(pba_bar)).to_le_bytes());
        let mut wmask = vec![0u8; 10];
        wmask[..2].copy_from_slice(&(CONTROL_ENABLE | CONTROL_FUNCTION_MASK).to_le_bytes());
        (body, wmask)
    }

    /// The table's state for a snapshot.
    pub fn save(&self) -> MsixSaved {
        MsixSaved {
            entries: self
                .entries
                .iter()
                .map(|e| [e.addr_lo, e.addr_hi, e.data, e.control])
                .collect(),
            pending: self.pending.clone(),
            enabled: self.enabled,
            function_mask: self.function_mask,
        }
    }

    /// Puts the table in the state `saved` describes; false (and no
    /// change) when it has another number of vectors.
    pub fn restore(&mut self, saved: &MsixSaved) -> bool {
        if saved.entries.len() != self.entries.len() || saved.pending.len() != self.pending.len() {
            return false;
        }
        for (e, s) in self.entries.iter_mut().zip(&saved.entries) {
            *e = Entry {
                addr_lo: s[0],
                addr_hi: s[1],
                data: s[2],
                control: s[3],
            };
        }
        self.pending.clone_from(&saved.pending);
        self.enabled = saved.enabled;
        self.function_mask = saved.function_mask;
        true
    }

    /// The driver wrote the message control register.
    pub fn set_control(&mut self, control: u16) {
        self.enabled = control & CONTROL_ENABLE != 0;
        self.function_mask = control & CONTROL_FUNCTION_MASK != 0;
        for vector in 0..self.entries.len() {
            self.send_if_pending(vector);
        }
    }

    fn masked(&self, vector: usize) -> bool {
        self.function_mask || self.entries[vector].control & VECTOR_MASKED != 0
    }

    fn is_pending(&self, vector: usize) -> bool {
        self.pending[vector / 64] & 1 << (vector % 64) != 0
    }

    fn set_pending(&mut self, vector: usize, pending: bool) {
        let bit = 1u64 << (vector % 64);
        if pending {
            self.pending[vector / 64] |= bit;
        } else {
            self.pending[vector / 64] &= !bit;
        }
    }

    fn send(&mut self, vector: usize) {
        let entry = self.entries[vector];
        self.counters.sent += 1;
        self.sink.send(entry.address(), entry.data);
    }

    fn send_if_pending(&mut self, vector: usize) {
        if self.enabled && self.is_pending(vector) && !self.masked(vector) {
            self.set_pending(vector, false);
            self.send(vector);
        }
    }

    /// The device signals `vector`: sent now, made pending if masked,
    /// dropped when MSI-X is disabled. False when nothing was sent or made
    /// pending (disabled, or no such vector).
    pub fn trigger(&mut self, vector: u16) -> bool {
        let vector = usize::from(vector);
        if vector >= self.entries.len() {
            self.counters.bad_vectors += 1;
            return false;
        }
        if !self.enabled {
            return false;
        }
        if self.masked(vector) {
            self.counters.pended += 1;
            self.set_pending(vector, true);
        } else {
            self.send(vector);
        }
        true
    }

    /// Reads the table at `offset`.
    pub fn read_table(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((index, dwords)) = self.dwords_at(offset, data.len()) else {
            self.counters.bad_accesses += 1;
            return;
        };
        let entry = self.entries[index];
        for (i, chunk) in data.chunks_mut(4).enumerate() {
            chunk.copy_from_slice(&entry.dword(dwords + i as u64).to_le_bytes());
        }
    }

    /// Writes the table at `offset`; unmasking a pending vector sends it.
    pub fn write_table(&mut self, offset: u64, data: &[u8]) {
        let Some((index, first)) = self.dwords_at(offset, data.len()) else {
            self.counters.bad_accesses += 1;
            return;
        };
        for (i, chunk) in data.chunks(4).enumerate() {
            let value = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let entry = &mut self.entries[index];
            match first + i as u64 {
                0 => entry.addr_lo = value,
                1 => entry.addr_hi = value,
                2 => entry.data = value,
                _ => entry.control = value & VECTOR_MASKED,
            }
        }
        self.send_if_pending(index);
    }

    /// The entry and its first dword that an aligned 4- or 8-byte access
    /// at `offset` touches.
    fn dwords_at(&self, offset: u64, len: usize) -> Option<(usize, u64)> {
        if !matches!(len, 4 | 8)
            || !offset.is_multiple_of(len as u64)
            || offset >= self.table_size()
        {
            return None;
        }
        Some(((offset / ENTRY_SIZE) as usize, (offset % ENTRY_SIZE) / 4))
    }

    /// Reads the PBA at `offset` (aligned 4 or 8 bytes).
    pub fn read_pba(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let len = data.len() as u64;
        if !matches!(len, 4 | 8) || !offset.is_multiple_of(len) || offset >= self.pba_size() {
            self.counters.bad_accesses += 1;
            return;
        }
        let word = self.pending[(offset / 8) as usize].to_le_bytes();
        let start = (offset % 8) as usize;
        data.copy_from_slice(&word[start..start + data.len()]);
    }

    /// The PBA is read-only.
    pub fn write_pba(&mut self, _offset: u64, _data: &[u8]) {
        self.counters.bad_accesses += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Sink(Mutex<Vec<(u64, u32)>>);

    impl MsiSink for Sink {
        fn send(&self, address: u64, data: u32) {
            self.0.lock().unwrap().push((address, data));
        }
    }

    fn table() -> (Arc<Sink>, MsixTable) {
        let sink = Arc::new(Sink::default());
        let mut t = MsixTable::new(3, sink.clone());
        for v in 0..3u64 {
            t.write_table(v * 16, &(0xfee0_0000u32 + v as u32 * 0x1000).to_le_bytes());
            t.write_table(v * 16 + 4, &0u32.to_le_bytes());
            t.write_table(v * 16 + 8, &(0x40 + v as u32).to_le_bytes());
        }
        (sink, t)
    }

    fn sent(sink: &Sink) -> Vec<(u64, u32)> {
        std::mem::take(&mut *sink.0.lock().unwrap())
    }

    fn pba(t: &mut MsixTable) -> u64 {
        let mut b = [0u8; 8];
        t.read_pba(0, &mut b);
        u64::from_le_bytes(b)
    }

    #[test]
    fn disabled_sends_nothing_and_entries_start_masked() {
        let (sink, mut t) = table();
        assert!(!t.trigger(0));
        t.set_control(CONTROL_ENABLE);
        // Masked at reset: pending.
        assert!(t.trigger(1));
        assert!(sent(&sink).is_empty());
        assert_eq!(pba(&mut t), 0b10);
        let mut b = [0u8; 4];
        t.read_table(16 + 12, &mut b);
        assert_eq!(u32::from_le_bytes(b), 1);
        // Unmasking sends it and clears the bit.
        t.write_table(16 + 12, &0u32.to_le_bytes());
        assert_eq!(sent(&sink), vec![(0xfee0_1000, 0x41)]);
        assert_eq!(pba(&mut t), 0);
        assert!(t.trigger(1));
        assert_eq!(sent(&sink), vec![(0xfee0_1000, 0x41)]);
        assert_eq!(t.counters().sent, 2);
        assert_eq!(t.counters().pended, 1);
    }

    #[test]
    fn function_mask_holds_every_vector() {
        let (sink, mut t) = table();
        for v in 0..3u64 {
            t.write_table(v * 16 + 12, &0u32.to_le_bytes());
        }
        t.set_control(CONTROL_ENABLE | CONTROL_FUNCTION_MASK);
        t.trigger(0);
        t.trigger(2);
        assert!(sent(&sink).is_empty());
        assert_eq!(pba(&mut t), 0b101);
        t.set_control(CONTROL_ENABLE);
        assert_eq!(sent(&sink), vec![(0xfee0_0000, 0x40), (0xfee0_2000, 0x42)]);
        assert_eq!(pba(&mut t), 0);
    }

    #[test]
    fn bad_accesses_and_vectors_are_counted_not_fatal() {
        let (_sink, mut t) = table();
        let mut b = [0xffu8; 2];
        t.read_table(0, &mut b);
        assert_eq!(b, [0, 0]);
        t.write_table(2, &[1, 2, 3, 4]);
        t.write_table(3 * 16, &[1, 2, 3, 4]);
        t.write_table(u64::MAX - 3, &[1, 2, 3, 4]);
        let mut b = [0u8; 8];
        t.read_pba(8, &mut b);
        t.write_pba(0, &[0; 8]);
        assert_eq!(t.counters().bad_accesses, 6);
        t.set_control(CONTROL_ENABLE);
        assert!(!t.trigger(3));
        assert_eq!(t.counters().bad_vectors, 1);
        // 64-bit access to the address, then the data and control.
        t.write_table(0, &0x1_fee0_0000u64.to_le_bytes());
        t.read_table(0, &mut b);
        assert_eq!(u64::from_le_bytes(b), 0x1_fee0_0000);
        let (body, wmask) = t.capability(1, 0, 1, 0x800);
        assert_eq!(body, [2, 0, 1, 0, 0, 0, 1, 8, 0, 0]);
        assert_eq!(wmask[..2], [0, 0xc0]);
    }
}
