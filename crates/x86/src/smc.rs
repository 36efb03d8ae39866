//! Cross-vCPU self-modifying code: the guest-physical pages that hold
//! decoded code on any CPU of a VM, and a log of writes to them.
//!
//! A page becomes "code" when some CPU decodes a block from it; from then
//! on no CPU keeps fast (TLB) write access to it, so every write goes
//! through the slow path, which drops the page from the set, bumps the
//! write epoch and logs the page. Each CPU compares the epoch at block
//! boundaries and drops its blocks of the logged pages. A CPU that still
//! holds fast write access to a page that just became code elsewhere loses
//! it at its next block boundary (the revoke epoch); a write in that window
//! is not seen by the other CPUs' caches (x86 requires the writer and the
//! executor to synchronise for cross-modifying code anyway; Linux's
//! text_poke writes pages that were code long before).

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use crate::block::FastHasher;
use crate::CpuSignals;

/// Writes remembered for CPUs that have not caught up yet; a CPU further
/// behind drops all its blocks.
const LOG_LEN: usize = 256;

/// Bits in the code-page filter.
const FILTER_BITS: usize = 1 << 18;

/// Shared by all CPUs of one VM ([`crate::Cpu::set_code_share`]).
#[derive(Debug)]
pub struct CodeShare {
    pages: RwLock<HashSet<u64, BuildHasherDefault<FastHasher>>>,
    /// A bit per hash of every page that became code since the last
    /// `clear`: a clear bit answers `is_code` without the lock.
    filter: Box<[AtomicU64]>,
    /// Bumped on every write to a code page.
    epoch: AtomicU64,
    /// (epoch after the write, page) of recent writes.
    log: Mutex<VecDeque<(u64, u64)>>,
    /// Bumped when a page newly becomes code: CPUs drop fast write access.
    revoke: AtomicU64,
    /// The signals of the CPUs sharing this (`Cpu::set_code_share`): each
    /// bump of either epoch sets their code bit, the one word compiled
    /// code tests between blocks (`jit::chain_emit`).
    cpus: Mutex<Vec<Weak<CpuSignals>>>,
}

impl std::fmt::Debug for FastHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FastHasher")
    }
}

/// What a CPU must do to catch up with the others.
pub(crate) enum CatchUp {
    /// Drop the blocks of these pages.
    Pages(Vec<u64>),
    /// Too far behind: drop every block.
    All,
}

impl Default for CodeShare {
    fn default() -> Self {
        CodeShare {
            pages: Default::default(),
            filter: (0..FILTER_BITS / 64).map(|_| AtomicU64::new(0)).collect(),
            epoch: AtomicU64::new(0),
            log: Default::default(),
            revoke: AtomicU64::new(0),
            cpus: Default::default(),
        }
    }
}

#[inline]
fn filter_bit(page: u64) -> (usize, u64) {
    let h = (page >> 12).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - FILTER_BITS.trailing_zeros());
    ((h / 64) as usize, 1u64 << (h % 64))
}

impl CodeShare {
    pub fn new() -> CodeShare {
        CodeShare::default()
    }

    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    #[inline]
    pub(crate) fn revoke_epoch(&self) -> u64 {
        self.revoke.load(Ordering::Acquire)
    }

    /// Where [`CodeShare::epoch`] lives (compiled code reads it).
    pub(crate) fn epoch_ptr(&self) -> *const AtomicU64 {
        &self.epoch
    }

    /// Where [`CodeShare::revoke_epoch`] lives (compiled code reads it).
    pub(crate) fn revoke_ptr(&self) -> *const AtomicU64 {
        &self.revoke
    }

    /// Makes `signals` hear of every epoch bump (a CPU joining the share).
    pub(crate) fn watch(&self, signals: &Arc<CpuSignals>) {
        let mut cpus = self.cpus.lock().unwrap_or_else(|p| p.into_inner());
        cpus.retain(|w| w.strong_count() > 0);
        if !cpus.iter().any(|w| w.as_ptr() == Arc::as_ptr(signals)) {
            cpus.push(Arc::downgrade(signals));
        }
    }

    /// After an epoch bump: tells every CPU (after the bump, so that a
    /// CPU that takes the bit then reads the new epoch).
    fn bumped(&self) {
        let cpus = self.cpus.lock().unwrap_or_else(|p| p.into_inner());
        for s in cpus.iter().filter_map(Weak::upgrade) {
            s.code_changed();
        }
    }

    /// Whether `page` holds decoded code on some CPU.
    #[inline]
    pub fn is_code(&self, page: u64) -> bool {
        let (word, bit) = filter_bit(page);
        if self.filter[word].load(Ordering::Acquire) & bit == 0 {
            return false;
        }
        self.is_code_locked(page)
    }

    fn is_code_locked(&self, page: u64) -> bool {
        let pages = self.pages.read().unwrap_or_else(|p| p.into_inner());
        !pages.is_empty() && pages.contains(&page)
    }

    /// A CPU decoded a block from `page`. Returns the new revoke epoch when
    /// the page newly became code.
    pub(crate) fn mark(&self, page: u64) -> Option<u64> {
        if self.is_code(page) {
            return None;
        }
        let (word, bit) = filter_bit(page);
        self.filter[word].fetch_or(bit, Ordering::AcqRel);
        let newly = self
            .pages
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(page);
        newly.then(|| {
            let r = self.revoke.fetch_add(1, Ordering::AcqRel) + 1;
            self.bumped();
            r
        })
    }

    /// A CPU writes `page`: returns true when it held code (it no longer
    /// does; the write is logged for the other CPUs).
    pub(crate) fn note_write(&self, page: u64) -> bool {
        if !self.is_code(page) {
            return false;
        }
        let removed = self
            .pages
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&page);
        if removed {
            let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
            let e = self.epoch.fetch_add(1, Ordering::AcqRel) + 1;
            if log.len() >= LOG_LEN {
                log.pop_front();
            }
            log.push_back((e, page));
            drop(log);
            self.bumped();
        }
        removed
    }

    /// Something other than a CPU (a device's DMA) wrote `len` bytes at
    /// `gpa`: the code pages among them are dropped by every CPU at its
    /// next block boundary. Cheap for pages that hold no code (a lockless
    /// filter test per page).
    pub fn note_external_write(&self, gpa: u64, len: u64) {
        if len == 0 {
            return;
        }
        let first = gpa & !0xfff;
        let last = gpa.saturating_add(len - 1) & !0xfff;
        let mut page = first;
        loop {
            self.note_write(page);
            if page >= last {
                break;
            }
            page += 0x1000;
        }
    }

    /// The pages written since epoch `seen`.
    pub(crate) fn since(&self, seen: u64) -> CatchUp {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        match log.front() {
            Some(&(first, _)) if first <= seen + 1 => CatchUp::Pages(
                log.iter()
                    .filter(|(e, _)| *e > seen)
                    .map(|(_, p)| *p)
                    .collect(),
            ),
            _ => CatchUp::All,
        }
    }

    /// Forgets every code page (all CPUs flushed their blocks).
    pub fn clear(&self) {
        let mut pages = self.pages.write().unwrap_or_else(|p| p.into_inner());
        pages.clear();
        for w in self.filter.iter() {
            w.store(0, Ordering::Release);
        }
    }
}
