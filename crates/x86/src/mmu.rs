//! Paging: 32-bit, PAE and 4-level page walks with A/D bits, and the
//! software TLB that caches guest-linear page → host page.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use hv::ExitReason;

use crate::counters::{CpuCounters, TlbFlush};
use crate::exception::{Exc, R};
use crate::exec::Exec;
use crate::state::{cr0, cr4, efer, rflags};
use crate::zeroed::ZeroedArray;

/// Entries per bank.
pub const TLB_SIZE: usize = 4096;
/// An invalid tag. Tags are `vpn | salt`: a linear page number has at
/// most 52 bits, the salt (a TLB context generation, never 0) lives above
/// them, so no tag is 0 and an all-zero entry is empty.
const INVALID: u64 = 0;
const SALT_SHIFT: u32 = 52;
const VPN_MASK: u64 = (1 << SALT_SHIFT) - 1;
/// Salt generations (1..SALTS) before a full clear.
const SALTS: u64 = 1 << (64 - SALT_SHIFT);
/// `pg` bit: the entry maps a global page.
const GLOBAL: u64 = 1;

/// The TLB banks. A bank caches what one kind of access may do, so that a
/// hit needs no permission check: the walk decided it when it filled the
/// entry (U/S, R/W, NX, SMEP, SMAP, protection keys).
pub mod bank {
    /// Supervisor data accesses that SMAP applies to: implicit ones
    /// (descriptor tables, IDT, TSS) and explicit ones with EFLAGS.AC=0.
    pub const SUP: usize = 0;
    /// Data accesses at CPL 3.
    pub const USER: usize = 1;
    /// Explicit supervisor data accesses with CR4.SMAP=1 and EFLAGS.AC=1.
    pub const SUP_AC: usize = 2;
    /// Instruction fetches at CPL 0-2.
    pub const CODE_SUP: usize = 3;
    /// Instruction fetches at CPL 3.
    pub const CODE_USER: usize = 4;
    /// Banks in use.
    pub const COUNT: usize = 5;
    /// The data banks (those fast write access is ever cached in).
    pub const DATA: usize = 3;
}

/// Banks allocated: a power of two so that a masked index needs no bounds
/// check; the ones past `bank::COUNT` are never touched (their zeroed
/// pages are never even faulted in).
const BANKS_ALLOC: usize = 8;

/// PCID → salt slots (direct-mapped by the low PCID bits). A PCID evicted
/// from its slot loses its cached translations, which the architecture
/// allows at any time.
const PCID_SLOTS: usize = 16;

/// One TLB entry (32 bytes, so that one cache line holds two): a 4 KiB
/// linear page and its host page. A tag equals the salted linear page
/// number when that access is allowed without a walk; in the
/// instruction-fetch banks `tag_r` means "may execute".
#[derive(Debug, Clone, Copy)]
#[repr(C, align(32))]
pub struct TlbEntry {
    pub tag_r: u64,
    pub tag_w: u64,
    /// Host address of the start of the page.
    pub host: usize,
    /// Guest-physical page address, | GLOBAL.
    pub pg: u64,
}

const EMPTY: TlbEntry = TlbEntry {
    tag_r: INVALID,
    tag_w: INVALID,
    host: 0,
    pg: 0,
};

/// Where a linear page is: its host page, guest-physical page, and
/// whether the mapping is global.
#[derive(Debug, Clone, Copy)]
pub struct Mapped {
    pub host: usize,
    pub gpa: u64,
    pub global: bool,
    /// log2 of the size of the guest page it is part of (12 for 4 KiB).
    pub page_shift: u8,
}

/// Direct-mapped software TLB with one bank per kind of access (see
/// [`bank`]).
///
/// Entries are tagged with a salt: the generation of the current TLB
/// context. Each PCID has its own salt, so a CR3 write that keeps a PCID's
/// translations (bit 63 with CR4.PCIDE) just switches back to its salt,
/// and one that flushes gives the PCID a fresh salt, so its old entries
/// stop matching without being touched. Global entries match in every
/// context: a context switch re-salts them (they are found through a list
/// of the slots filled with global pages). A flush of everything the guest
/// can ask for (CR4.PGE, INVPCID type 2, a change of the paging controls
/// or of PKRU) forgets every PCID's salt and the global list. Salts are
/// reused only after a real clear of all entries.
pub struct Tlb {
    e: ZeroedArray<[TlbEntry; TLB_SIZE]>,
    /// The current salt, `<< SALT_SHIFT`.
    salt: u64,
    /// The next unused salt generation (1..SALTS).
    next_salt: u64,
    /// The current PCID (0 without CR4.PCIDE).
    pcid: u16,
    /// (PCID + 1, salt) per slot; 0 for none.
    pcid_salts: [(u32, u64); PCID_SLOTS],
    /// Slots (bank * TLB_SIZE + index) filled with global pages in the
    /// current context; may hold stale slots.
    globals: Vec<u32>,
    /// Bumped whenever translations are dropped (flushes, INVLPG): the
    /// block cache's jump entries remember it instead of a physical address.
    pub(crate) gen: u64,
    /// Linear pages (hashed, a 256-bit set) that code was looked up in
    /// under the current `gen`: only an INVLPG of one of those can change
    /// a block association keyed by it. Emptied with each bump.
    code_pages: PageSet,
    /// Large pages (hashed by size and number, a 256-bit set) that 4 KiB
    /// pieces in the entries may come from: an INVLPG inside one must drop
    /// every piece, which a direct-mapped TLB cannot find, so it drops
    /// everything. Emptied when every entry is dropped.
    large_pages: PageSet,
    /// Guest-physical page → host page of recently walked paging
    /// structures (tag u64::MAX: empty). Dropped by `flush_all`, which is
    /// what a memory-map change leads to.
    tables: [(u64, usize); TABLE_CACHE],
    /// Fills and flushes by cause are counted here.
    pub(crate) counters: Arc<CpuCounters>,
}

/// Page sizes (log2) whose pages `Tlb::code_pages` notes for code: its
/// 4 KiB page, 2 MiB and 1 GiB regions.
const CODE_SHIFTS: [u8; 3] = [12, 21, 30];
/// Large page sizes (log2): 2 MiB, 4 MiB (32-bit paging), 1 GiB.
const LARGE_SHIFTS: [u8; 3] = [21, 22, 30];

/// A 256-bit hashed set of pages of several sizes (false positives
/// only: a page found that was never inserted).
#[derive(Clone, Copy)]
struct PageSet([u64; 4]);

impl PageSet {
    const EMPTY: PageSet = PageSet([0; 4]);

    /// The word and bit of the page of size `1 << shift` holding `lin`.
    fn bit(lin: u64, shift: u8) -> (usize, u64) {
        let page = (lin >> shift) | (shift as u64) << 56;
        let h = page.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56;
        ((h >> 6) as usize & 3, 1 << (h & 63))
    }

    fn insert(&mut self, lin: u64, shift: u8) {
        let (w, b) = Self::bit(lin, shift);
        self.0[w] |= b;
    }

    fn contains(&self, lin: u64, shift: u8) -> bool {
        let (w, b) = Self::bit(lin, shift);
        self.0[w] & b != 0
    }
}

/// Entries in the paging-structure page cache.
const TABLE_CACHE: usize = 64;

/// The instruction-fetch bank for a privilege.
#[inline]
pub fn code_bank(user: bool) -> usize {
    bank::CODE_SUP + user as usize
}

impl Default for Tlb {
    fn default() -> Self {
        Self::new()
    }
}

/// Byte offsets the JIT's inline TLB lookup reads (see [`Tlb::host`]).
pub(crate) struct TlbLayout {
    pub salt: usize,
    pub entry_size: usize,
    pub tag_r: usize,
    pub tag_w: usize,
    pub host: usize,
    pub size: usize,
}

impl Tlb {
    pub(crate) const LAYOUT: TlbLayout = TlbLayout {
        salt: std::mem::offset_of!(Tlb, salt),
        entry_size: std::mem::size_of::<TlbEntry>(),
        tag_r: std::mem::offset_of!(TlbEntry, tag_r),
        tag_w: std::mem::offset_of!(TlbEntry, tag_w),
        host: std::mem::offset_of!(TlbEntry, host),
        size: TLB_SIZE,
    };

    pub fn new() -> Tlb {
        Self::with_counters(Arc::default())
    }

    /// A TLB counting into `counters`.
    pub fn with_counters(counters: Arc<CpuCounters>) -> Tlb {
        let mut t = Tlb {
            // SAFETY: TlbEntry is plain integers; all zeros is EMPTY.
            e: unsafe { ZeroedArray::new(BANKS_ALLOC) },
            salt: 1 << SALT_SHIFT,
            next_salt: 2,
            pcid: 0,
            pcid_salts: [(0, 0); PCID_SLOTS],
            globals: Vec::new(),
            // Never 0, so that no jump-cache key is 0 (an empty entry's).
            gen: 1,
            code_pages: PageSet::EMPTY,
            large_pages: PageSet::EMPTY,
            tables: [(u64::MAX, 0); TABLE_CACHE],
            counters,
        };
        t.pcid_salts[0] = (1, t.salt);
        t
    }

    /// The host address of bank `bank`'s first entry (what the JIT's
    /// inline lookup indexes from: `Cpu::dtlb`).
    pub(crate) fn bank_base(&self, bank: usize) -> u64 {
        self.e[bank & (BANKS_ALLOC - 1)].as_ptr() as u64
    }

    #[inline]
    /// (The JIT emits the same computation: jit/emit_mem.rs.)
    pub fn index(vpn: u64) -> usize {
        ((vpn ^ (vpn >> 12)) as usize) & (TLB_SIZE - 1)
    }

    /// The host address of `size` bytes at `lin` in bank `bank`, when the
    /// TLB allows the access (reading, or writing when `write`) and the
    /// bytes do not leave the page.
    #[inline(always)]
    pub fn host(&self, bank: usize, lin: u64, size: u32, write: bool) -> Option<*mut u8> {
        let vpn = lin >> 12;
        let e = &self.e[bank & (BANKS_ALLOC - 1)][Self::index(vpn)];
        let tag = if write { e.tag_w } else { e.tag_r };
        let off = lin & 0xfff;
        if tag == vpn | self.salt && off <= 4096 - size as u64 {
            Some((e.host + off as usize) as *mut u8)
        } else {
            None
        }
    }

    /// Whether bank `bank` allows the access to `lin`'s page.
    #[inline]
    pub fn hit(&self, bank: usize, lin: u64, write: bool) -> bool {
        let vpn = lin >> 12;
        let e = &self.e[bank & (BANKS_ALLOC - 1)][Self::index(vpn)];
        let tag = if write { e.tag_w } else { e.tag_r };
        tag == vpn | self.salt
    }

    /// The guest-physical address of `lin` when an instruction-fetch bank
    /// allows executing it.
    #[inline]
    pub fn code_gpa(&self, bank: usize, lin: u64) -> Option<u64> {
        let vpn = lin >> 12;
        let e = &self.e[bank & (BANKS_ALLOC - 1)][Self::index(vpn)];
        (e.tag_r == vpn | self.salt).then_some((e.pg & !0xfff) | (lin & 0xfff))
    }

    /// Installs a translation. `read` is "may execute" in the
    /// instruction-fetch banks.
    pub fn fill(&mut self, bank: usize, lin: u64, read: bool, write: bool, page: Mapped) {
        let Mapped {
            host,
            gpa,
            global,
            page_shift,
        } = page;
        if page_shift > 12 {
            self.large_pages.insert(lin, page_shift);
        }
        self.counters.tlb_fills.inc();
        let bank = bank & (BANKS_ALLOC - 1);
        debug_assert!(bank < bank::COUNT);
        let vpn = lin >> 12;
        let tag = vpn | self.salt;
        let idx = Self::index(vpn);
        self.e[bank][idx] = TlbEntry {
            tag_r: if read { tag } else { INVALID },
            tag_w: if write { tag } else { INVALID },
            host,
            pg: (gpa & !0xfff) | if global { GLOBAL } else { 0 },
        };
        if global {
            if self.globals.len() >= bank::COUNT * TLB_SIZE {
                // Mostly stale: keep the slots that still hold global pages.
                let e = &self.e;
                self.globals
                    .retain(|&s| e[s as usize / TLB_SIZE][s as usize % TLB_SIZE].pg & GLOBAL != 0);
                self.globals.sort_unstable();
                self.globals.dedup();
            }
            self.globals.push((bank * TLB_SIZE + idx) as u32);
        }
    }

    /// Drops every entry for real (the host pointers may be stale: the
    /// memory map changed) and every PCID's translations.
    pub fn flush_all(&mut self, cause: TlbFlush) {
        self.counters.flush(cause);
        self.tables = [(u64::MAX, 0); TABLE_CACHE];
        self.clear_entries();
        self.pcid_salts = [(0, 0); PCID_SLOTS];
        self.salt = self.new_salt();
        self.pcid_salts[self.pcid as usize % PCID_SLOTS] = (self.pcid as u32 + 1, self.salt);
    }

    fn clear_entries(&mut self) {
        self.bump_gen();
        self.large_pages = PageSet::EMPTY;
        // Only the entries in use are written: a page of entries never
        // filled stays the kernel's zero page (a VM restored or forked
        // into a new process owns only the TLB pages its guest uses).
        for bank in self.e[..bank::COUNT].iter_mut() {
            for e in bank.iter_mut() {
                if e.tag_r != INVALID || e.tag_w != INVALID {
                    *e = EMPTY;
                }
            }
        }
        self.globals.clear();
    }

    /// A salt no entry carries. Running out clears the TLB (and forgets
    /// every PCID's salt, the current one included).
    fn new_salt(&mut self) -> u64 {
        if self.next_salt >= SALTS {
            self.clear_entries();
            self.pcid_salts = [(0, 0); PCID_SLOTS];
            self.next_salt = 1;
        }
        let s = self.next_salt << SALT_SHIFT;
        self.next_salt += 1;
        s
    }

    /// Every translation the guest can ask to drop, global ones included,
    /// for every PCID (CR4.PGE or CR4.PCIDE 1→0, INVPCID type 2, a change
    /// of CR0.WP, EFER.NXE, SMEP, SMAP, PKRU...). The entries stay (their
    /// salts no longer match); the host pointers stay valid.
    pub fn flush_guest_all(&mut self, cause: TlbFlush) {
        self.counters.flush(cause);
        self.drop_guest_translations();
    }

    /// What `flush_guest_all` does, uncounted.
    fn drop_guest_translations(&mut self) {
        self.bump_gen();
        self.large_pages = PageSet::EMPTY;
        self.pcid_salts = [(0, 0); PCID_SLOTS];
        self.globals.clear();
        self.salt = self.new_salt();
        self.pcid_salts[self.pcid as usize % PCID_SLOTS] = (self.pcid as u32 + 1, self.salt);
    }

    /// Switches to the translations of `pcid` (a CR3 write): keeps the
    /// PCID's cached non-global translations when `keep`, else drops them
    /// (counted as `cause`). Global translations stay.
    pub fn switch_context(&mut self, pcid: u16, keep: bool, cause: TlbFlush) {
        self.bump_gen();
        let old = self.salt;
        let slot = pcid as usize % PCID_SLOTS;
        let (tag, salt) = self.pcid_salts[slot];
        let new = if keep && tag == pcid as u32 + 1 {
            salt
        } else {
            self.counters.flush(cause);
            let s = self.new_salt();
            self.pcid_salts[slot] = (pcid as u32 + 1, s);
            s
        };
        self.pcid = pcid;
        self.salt = new;
        if new == old {
            return;
        }
        let e = &mut self.e;
        self.globals.retain(|&s| {
            let x = &mut e[s as usize / TLB_SIZE][s as usize % TLB_SIZE];
            if x.pg & GLOBAL == 0 {
                return false;
            }
            for t in [&mut x.tag_r, &mut x.tag_w] {
                if *t != INVALID && *t & !VPN_MASK == old {
                    *t = (*t & VPN_MASK) | new;
                }
            }
            true
        });
        self.globals.sort_unstable();
        self.globals.dedup();
    }

    /// CR3 reload without PCIDs: drops everything but global entries.
    pub fn flush_nonglobal(&mut self, cause: TlbFlush) {
        self.switch_context(self.pcid, false, cause);
    }

    /// Drops the non-global translations of `pcid` (INVPCID type 1).
    pub fn flush_pcid(&mut self, pcid: u16) {
        if pcid == self.pcid {
            self.flush_nonglobal(TlbFlush::Invpcid);
        } else {
            self.counters.flush(TlbFlush::Invpcid);
            self.bump_gen();
            let slot = pcid as usize % PCID_SLOTS;
            if self.pcid_salts[slot].0 == pcid as u32 + 1 {
                self.pcid_salts[slot] = (0, 0);
            }
        }
    }

    /// Drops the non-global translations of every PCID (INVPCID type 3).
    pub fn flush_all_nonglobal(&mut self) {
        let cur = self.pcid_salts[self.pcid as usize % PCID_SLOTS];
        self.pcid_salts = [(0, 0); PCID_SLOTS];
        self.pcid_salts[self.pcid as usize % PCID_SLOTS] = cur;
        self.flush_nonglobal(TlbFlush::Invpcid);
    }

    /// The current PCID.
    pub fn pcid(&self) -> u16 {
        self.pcid
    }

    /// A new generation: every jump-cache entry and chain link made under
    /// the old one stops matching.
    #[inline]
    fn bump_gen(&mut self) {
        self.gen += 1;
        self.code_pages = PageSet::EMPTY;
    }

    /// Code at `lin` was looked up through this TLB (a block found or
    /// decoded for it under the current generation). Its 2 MiB and 1 GiB
    /// regions are noted too: an INVLPG anywhere in a large page drops
    /// the whole translation.
    #[inline]
    pub(crate) fn note_code_page(&mut self, lin: u64) {
        for shift in CODE_SHIFTS {
            self.code_pages.insert(lin, shift);
        }
    }

    /// INVLPG: drops `lin`'s page in every bank (and for every PCID);
    /// counted as `cause` (INVLPG, INVPCID type 0). The generation moves
    /// only when code was looked up in that page under the current one:
    /// an INVLPG of a data page (most of them: a kernel changing a
    /// mapping, kvm-unit-tests' access test) leaves block chaining alone.
    pub fn flush_page(&mut self, lin: u64, cause: TlbFlush) {
        self.counters.flush(cause);
        if LARGE_SHIFTS
            .iter()
            .any(|&s| self.large_pages.contains(lin, s))
        {
            // The whole large page, for every PCID, global or not.
            self.drop_guest_translations();
            return;
        }
        if CODE_SHIFTS
            .iter()
            .any(|&s| self.code_pages.contains(lin, s))
        {
            self.bump_gen();
        }
        let vpn = lin >> 12;
        for bank in self.e[..bank::COUNT].iter_mut() {
            let e = &mut bank[Self::index(vpn)];
            if e.tag_r & VPN_MASK == vpn || e.tag_w & VPN_MASK == vpn {
                *e = EMPTY;
            }
        }
    }

    /// Revokes all fast write access (some page became code elsewhere).
    pub fn revoke_all_writes(&mut self) {
        self.counters.flush(TlbFlush::CodePage);
        for bank in self.e[..bank::DATA].iter_mut() {
            for e in bank.iter_mut() {
                if e.tag_w != INVALID {
                    e.tag_w = INVALID;
                }
            }
        }
    }

    /// Revokes fast write access to a guest-physical page (it now holds
    /// decoded code, whose writes must go through the slow path).
    pub fn revoke_write(&mut self, gpa_page: u64) {
        self.counters.flush(TlbFlush::CodePage);
        for bank in self.e[..bank::DATA].iter_mut() {
            for e in bank.iter_mut() {
                if e.tag_w != INVALID && e.pg & !0xfff == gpa_page {
                    e.tag_w = INVALID;
                }
            }
        }
    }
}

/// What a memory access wants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessKind {
    Read,
    Write,
    Exec,
}

/// A successful translation.
#[derive(Debug, Clone, Copy)]
pub struct Translation {
    pub gpa: u64,
    /// Effective permissions for the privilege of the access.
    pub can_write: bool,
    pub can_exec: bool,
    /// The leaf's D bit is set (so writes need no A/D update).
    pub dirty: bool,
    pub global: bool,
    /// log2 of the size of the page that maps it (12, 21, 22 or 30).
    pub page_shift: u8,
}

/// Page-fault error code bits.
pub mod pf {
    pub const P: u32 = 1;
    pub const W: u32 = 2;
    pub const U: u32 = 4;
    pub const RSVD: u32 = 8;
    pub const ID: u32 = 16;
    /// The access was denied by a protection key (PKRU or IA32_PKRS).
    pub const PK: u32 = 32;
}

struct Level {
    /// guest-physical address of the entry
    addr: u64,
    value: u64,
}

impl Exec<'_> {
    fn pte_read(&mut self, addr: u64, wide: bool) -> u64 {
        let size = if wide { 8 } else { 4 };
        if addr & (size - 1) == 0 {
            if let Some(host) = self.table_page(addr & !0xfff) {
                let p = host + (addr & 0xfff) as usize;
                // SAFETY: `host` is the start of a RAM page (>= 4096 bytes,
                // page aligned as guest RAM mappings are) that stays valid
                // until the next TLB flush (Bus contract); `p` is aligned
                // to `size` and inside it. Other vCPUs update entries
                // atomically (A/D bits) or with plain stores.
                return unsafe {
                    if wide {
                        AtomicU64::from_ptr(p as *mut u64).load(Ordering::Relaxed)
                    } else {
                        AtomicU32::from_ptr(p as *mut u32).load(Ordering::Relaxed) as u64
                    }
                };
            }
        }
        let mut buf = [0u8; 8];
        self.phys_read(addr, &mut buf[..size as usize]);
        u64::from_le_bytes(buf)
    }

    /// The host address of a guest-physical RAM page holding paging
    /// structures, through a small cache (dropped with the TLB).
    #[inline]
    fn table_page(&mut self, page: u64) -> Option<usize> {
        let slot = ((page >> 12) as usize) & (TABLE_CACHE - 1);
        let (tag, host) = self.c.tlb.tables[slot];
        if tag == page {
            return Some(host);
        }
        let r = self.bus.ram(page, false)?;
        if r.len < 4096 || (r.host as usize) & 0xfff != 0 {
            return None;
        }
        self.c.tlb.tables[slot] = (page, r.host as usize);
        Some(r.host as usize)
    }

    fn page_fault(&mut self, lin: u64, code: u32) -> Exc {
        if self.c.debugger.probing {
            return Exc {
                vector: crate::exception::PF,
                code: Some(code as u16),
            };
        }
        self.c.state.cr2 = lin;
        self.c.counters.inc(ExitReason::PageFault);
        tracepoints::kvm_page_fault(self.c.state.rip, lin, code.into());
        Exc {
            vector: crate::exception::PF,
            code: Some(code as u16),
        }
    }

    /// Translates a linear address for an access of kind `kind` made as
    /// TLB bank `bank` says (its privilege, and for supervisor data
    /// whether SMAP lets it reach user pages), with every permission check:
    /// U/S, R/W with CR0.WP, NX, SMEP, SMAP and protection keys.
    pub(crate) fn translate(&mut self, lin: u64, kind: AccessKind, bank: usize) -> R<Translation> {
        let user = bank == bank::USER || bank == bank::CODE_USER;
        let st = &self.c.state;
        if st.cr0 & cr0::PG == 0 {
            return Ok(Translation {
                gpa: lin & 0xffff_ffff,
                can_write: true,
                can_exec: true,
                dirty: true,
                global: false,
                page_shift: 12,
            });
        }
        self.c.tlb.counters.tlb_walks.inc();
        let nxe = st.efer & efer::NXE != 0;
        let wp = st.cr0 & cr0::WP != 0;
        let pse = st.cr4 & cr4::PSE != 0;
        let pge = st.cr4 & cr4::PGE != 0;
        let cr3 = st.cr3;
        let long = st.efer & efer::LMA != 0;
        let pae = st.cr4 & cr4::PAE != 0;
        let phys_mask: u64 = ((1u64 << self.c.phys_bits) - 1) & !0xfff;
        let rsvd_hi: u64 = ((1u64 << 52) - 1) & !((1u64 << self.c.phys_bits) - 1);
        let nx_rsvd: u64 = if nxe { 0 } else { 1 << 63 };
        let smep = st.cr4 & cr4::SMEP != 0;
        let smap = st.cr4 & cr4::SMAP != 0 && bank != bank::SUP_AC;
        // Protection keys: 4-level paging only.
        let pke = long && st.cr4 & cr4::PKE != 0;
        let pks = long && st.cr4 & cr4::PKS != 0;
        let (pkru, pkrs) = (st.pkru, st.msr.pkrs as u32);

        let mut code = 0;
        if kind == AccessKind::Write {
            code |= pf::W;
        }
        if user {
            code |= pf::U;
        }
        // I/D is reported where fetches can fault for their own sake.
        if kind == AccessKind::Exec && (nxe || smep) {
            code |= pf::ID;
        }

        let mut levels: [Level; 4] = std::array::from_fn(|_| Level { addr: 0, value: 0 });
        let mut n = 0usize;
        let mut us = true;
        let mut rw = true;
        let mut nx = false;
        let gpa;
        let leaf_global;
        let mut page_shift = 12u8;
        let mut leaf_entry = 0u64;
        let wide = long || pae;

        if long || pae {
            let (mut table, start_level) = if long {
                (cr3 & phys_mask, 4u32)
            } else {
                // PAE: the PDPT, 4 entries at CR3[31:5].
                let pdpte_addr = (cr3 & 0xffff_ffe0) + ((lin >> 30) & 3) * 8;
                let pdpte = self.pte_read(pdpte_addr, true);
                if pdpte & 1 == 0 {
                    return Err(self.page_fault(lin, code));
                }
                if pdpte & (rsvd_hi | 0x1e6) != 0 {
                    return Err(self.page_fault(lin, code | pf::P | pf::RSVD));
                }
                (pdpte & phys_mask, 2u32)
            };
            let mut level = start_level;
            loop {
                let shift = 12 + 9 * (level - 1);
                let addr = table + ((lin >> shift) & 0x1ff) * 8;
                let e = self.pte_read(addr, true);
                if e & 1 == 0 {
                    return Err(self.page_fault(lin, code));
                }
                let ps = e & 0x80 != 0;
                let mut rsvd = rsvd_hi | nx_rsvd;
                if level == 4 {
                    rsvd |= 0x80;
                }
                if ps && level == 3 {
                    rsvd |= 0x3fff_e000;
                } else if ps && level == 2 {
                    rsvd |= 0x1f_e000;
                }
                if level == 3 && ps && !long {
                    rsvd |= 0x80;
                }
                if e & rsvd != 0 {
                    return Err(self.page_fault(lin, code | pf::P | pf::RSVD));
                }
                us &= e & 4 != 0;
                rw &= e & 2 != 0;
                nx |= e & (1 << 63) != 0;
                if n < 4 {
                    levels[n] = Level { addr, value: e };
                    n += 1;
                }
                if level == 1 || (ps && level <= 3) {
                    leaf_entry = e;
                    let page_mask = (1u64 << shift) - 1;
                    gpa = (e & phys_mask & !page_mask) | (lin & page_mask);
                    leaf_global = pge && e & 0x100 != 0;
                    page_shift = shift as u8;
                    break;
                }
                table = e & phys_mask;
                level -= 1;
            }
        } else {
            let pde_addr = (cr3 & 0xffff_f000) + ((lin >> 22) & 0x3ff) * 4;
            let pde = self.pte_read(pde_addr, false);
            if pde & 1 == 0 {
                return Err(self.page_fault(lin, code));
            }
            us &= pde & 4 != 0;
            rw &= pde & 2 != 0;
            levels[0] = Level {
                addr: pde_addr,
                value: pde,
            };
            n = 1;
            if pse && pde & 0x80 != 0 {
                gpa = (pde & 0xffc0_0000) | (lin & 0x3f_ffff);
                leaf_global = pge && pde & 0x100 != 0;
                page_shift = 22;
            } else {
                let pte_addr = (pde & 0xffff_f000) + ((lin >> 12) & 0x3ff) * 4;
                let pte = self.pte_read(pte_addr, false);
                if pte & 1 == 0 {
                    return Err(self.page_fault(lin, code));
                }
                us &= pte & 4 != 0;
                rw &= pte & 2 != 0;
                levels[1] = Level {
                    addr: pte_addr,
                    value: pte,
                };
                n = 2;
                gpa = (pte & 0xffff_f000) | (lin & 0xfff);
                leaf_global = pge && pte & 0x100 != 0;
            }
        }

        // `us`: a user-mode address (U/S set at every level).
        let (can_read, can_write, can_exec) = if user {
            (us, us && rw, us && !(nx && nxe))
        } else {
            let smap_deny = smap && us;
            (
                !smap_deny,
                !smap_deny && (rw || !wp),
                !((nx && nxe) || (smep && us)),
            )
        };
        // Protection keys gate data accesses: PKRU for user-mode addresses
        // (CR4.PKE), IA32_PKRS for supervisor-mode ones (CR4.PKS). A
        // write-disable bit binds user accesses, and supervisor ones when
        // CR0.WP is set.
        let keys = match us {
            true if pke => Some(pkru),
            false if pks => Some(pkrs),
            _ => None,
        };
        let (pk_deny_read, pk_deny_write) = match keys {
            Some(r) if kind != AccessKind::Exec => {
                let key = ((leaf_entry >> 59) & 0xf) as u32;
                let ad = r >> (2 * key) & 1 != 0;
                let wd = r >> (2 * key + 1) & 1 != 0;
                (ad, ad || (wd && (user || wp)))
            }
            _ => (false, false),
        };
        let can_read = can_read && !pk_deny_read;
        let can_write = can_write && !pk_deny_write;
        let (ok, pk_denies) = match kind {
            AccessKind::Read => (can_read, pk_deny_read),
            AccessKind::Write => (can_write, pk_deny_write),
            AccessKind::Exec => (can_exec, false),
        };
        if !ok {
            let pk = if pk_denies { pf::PK } else { 0 };
            return Err(self.page_fault(lin, code | pf::P | pk));
        }
        // Accessed bits on every level, dirty on the leaf for writes.
        let mut dirty = false;
        for (i, l) in levels.iter().take(n).enumerate() {
            let leaf = i + 1 == n;
            let mut bits = 0u64;
            if l.value & 0x20 == 0 {
                bits |= 0x20;
            }
            if leaf {
                dirty = l.value & 0x40 != 0;
                if kind == AccessKind::Write && !dirty {
                    bits |= 0x40;
                    dirty = true;
                }
            }
            // A debugger's probe leaves the guest's page tables alone.
            if bits != 0 && !self.c.debugger.probing {
                self.phys_set_bits(l.addr, bits, wide);
            }
        }
        Ok(Translation {
            gpa,
            can_write,
            can_exec,
            dirty,
            global: leaf_global,
            page_shift,
        })
    }

    /// The TLB bank of an explicit data access: CPL 3 (`user`), or the
    /// supervisor with EFLAGS.AC overriding CR4.SMAP, or without.
    #[inline(always)]
    pub(crate) fn data_bank(&self, user: bool) -> usize {
        if user {
            bank::USER
        } else {
            // SMAP is bit 21 of CR4, AC bit 18 of RFLAGS: bank 2 exactly
            // when both are set.
            let st = &self.c.state;
            ((st.flags.raw_bits() & (st.cr4 >> 3) & rflags::AC) >> 17) as usize
        }
    }

    /// Translates and, when the page is RAM, fills the TLB. `user` is an
    /// explicit access at CPL 3 (else an explicit supervisor access).
    /// Returns the guest-physical address.
    #[inline]
    pub(crate) fn translate_fill(&mut self, lin: u64, kind: AccessKind, user: bool) -> R<u64> {
        let bank = match kind {
            AccessKind::Exec => code_bank(user),
            _ => self.data_bank(user),
        };
        self.translate_fill_bank(lin, kind, bank)
    }

    /// Translates as bank `bank` and, when the page is RAM, fills it.
    pub(crate) fn translate_fill_bank(
        &mut self,
        lin: u64,
        kind: AccessKind,
        bank: usize,
    ) -> R<u64> {
        let t = self.translate(lin, kind, bank)?;
        let page = t.gpa & !0xfff;
        // Only a write maps the page writable: the accelerator marks pages
        // dirty when they are mapped for writing, and a read must not.
        // Fast write access only for an actual write (so the Bus marks a
        // page dirty only when it is written), never to code pages.
        let write_perm = kind == AccessKind::Write
            && t.can_write
            && t.dirty
            && !self.c.blocks.is_code_page(page)
            && !self.c.code_share.is_code(page);
        let (ram, writable) = match write_perm {
            true => match self.bus.ram(page, true) {
                Some(r) => (Some(r), true),
                None => (self.bus.ram(page, false), false),
            },
            false => (self.bus.ram(page, false), false),
        };
        let Some(ram) = ram else {
            return Ok(t.gpa);
        };
        if ram.len < 4096 {
            return Ok(t.gpa);
        }
        let exec = kind == AccessKind::Exec;
        if self.c.state.long_mode_active() && !crate::mem::canonical(lin) {
            // Never cached: the fast paths rely on the TLB holding
            // canonical pages only.
            return Ok(t.gpa);
        }
        if !exec && self.c.dbg.watch && self.watched_page(lin) {
            // Data breakpoints are checked on the slow path only.
            return Ok(t.gpa);
        }
        let read = if exec { t.can_exec } else { true };
        let mapped = Mapped {
            host: ram.host as usize,
            gpa: page,
            global: t.global,
            page_shift: t.page_shift,
        };
        self.c.tlb.fill(bank, lin, read, writable && !exec, mapped);
        Ok(t.gpa)
    }
}
