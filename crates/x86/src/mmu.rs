//! Paging: 32-bit, PAE and 4-level page walks with A/D bits, and the
//! software TLB that caches guest-linear page → host page.

use hv::ExitReason;

use crate::exception::{Exc, R};
use crate::exec::Exec;
use crate::state::{cr0, cr4, efer};

pub const TLB_SIZE: usize = 512;
const INVALID: u64 = u64::MAX;

/// One TLB entry: a 4 KiB linear page and its host page. A tag equals the
/// linear page number when that access kind is allowed without a walk.
#[derive(Debug, Clone, Copy)]
pub struct TlbEntry {
    pub tag_r: u64,
    pub tag_w: u64,
    pub tag_x: u64,
    /// Host address of the start of the page.
    pub host: usize,
    /// Guest-physical page address.
    pub gpa: u64,
    pub global: bool,
}

const EMPTY: TlbEntry = TlbEntry {
    tag_r: INVALID,
    tag_w: INVALID,
    tag_x: INVALID,
    host: 0,
    gpa: 0,
    global: false,
};

/// Direct-mapped software TLB with four banks: data accesses by the
/// supervisor (0) and by CPL 3 (1), instruction fetches by the supervisor
/// (2) and by CPL 3 (3).
pub struct Tlb {
    pub(crate) e: Box<[[TlbEntry; TLB_SIZE]; 4]>,
}

/// The instruction-fetch bank for a privilege.
#[inline]
pub fn code_bank(user: bool) -> usize {
    2 + user as usize
}

impl Default for Tlb {
    fn default() -> Self {
        Self::new()
    }
}

impl Tlb {
    pub fn new() -> Tlb {
        Tlb {
            e: Box::new([[EMPTY; TLB_SIZE]; 4]),
        }
    }

    #[inline]
    pub fn index(vpn: u64) -> usize {
        ((vpn ^ (vpn >> 9)) as usize) & (TLB_SIZE - 1)
    }

    pub fn flush_all(&mut self) {
        for bank in self.e.iter_mut() {
            bank.fill(EMPTY);
        }
    }

    /// CR3 reload: drops everything but global entries.
    pub fn flush_nonglobal(&mut self) {
        for bank in self.e.iter_mut() {
            for e in bank.iter_mut() {
                if !e.global {
                    *e = EMPTY;
                }
            }
        }
    }

    /// INVLPG.
    pub fn flush_page(&mut self, lin: u64) {
        let vpn = lin >> 12;
        for bank in self.e.iter_mut() {
            let e = &mut bank[Self::index(vpn)];
            if e.tag_r == vpn || e.tag_w == vpn || e.tag_x == vpn {
                *e = EMPTY;
            }
        }
    }

    /// Revokes all fast write access (some page became code elsewhere).
    pub fn revoke_all_writes(&mut self) {
        for bank in self.e.iter_mut() {
            for e in bank.iter_mut() {
                e.tag_w = INVALID;
            }
        }
    }

    /// Revokes fast write access to a guest-physical page (it now holds
    /// decoded code, whose writes must go through the slow path).
    pub fn revoke_write(&mut self, gpa_page: u64) {
        for bank in self.e.iter_mut() {
            for e in bank.iter_mut() {
                if e.tag_w != INVALID && e.gpa == gpa_page {
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
}

/// Page-fault error code bits.
pub mod pf {
    pub const P: u32 = 1;
    pub const W: u32 = 2;
    pub const U: u32 = 4;
    pub const RSVD: u32 = 8;
    pub const ID: u32 = 16;
}

struct Level {
    /// guest-physical address of the entry
    addr: u64,
    value: u64,
}

impl Exec<'_> {
    fn pte_read(&mut self, addr: u64, wide: bool) -> u64 {
        let size = if wide { 8 } else { 4 };
        let mut buf = [0u8; 8];
        self.phys_read(addr, &mut buf[..size]);
        u64::from_le_bytes(buf)
    }

    fn page_fault(&mut self, lin: u64, code: u32) -> Exc {
        self.c.state.cr2 = lin;
        self.c.counters.inc(ExitReason::PageFault);
        Exc {
            vector: crate::exception::PF,
            code: Some(code),
        }
    }

    /// Translates a linear address. `user` is true for CPL-3 accesses that
    /// are not implicit supervisor accesses.
    pub(crate) fn translate(&mut self, lin: u64, kind: AccessKind, user: bool) -> R<Translation> {
        let st = &self.c.state;
        if st.cr0 & cr0::PG == 0 {
            return Ok(Translation {
                gpa: lin & 0xffff_ffff,
                can_write: true,
                can_exec: true,
                dirty: true,
                global: false,
            });
        }
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

        let mut code = 0;
        if kind == AccessKind::Write {
            code |= pf::W;
        }
        if user {
            code |= pf::U;
        }
        if kind == AccessKind::Exec && nxe {
            code |= pf::ID;
        }

        let mut levels: [Level; 4] = std::array::from_fn(|_| Level { addr: 0, value: 0 });
        let mut n = 0usize;
        let mut us = true;
        let mut rw = true;
        let mut nx = false;
        let gpa;
        let leaf_global;
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
                    let page_mask = (1u64 << shift) - 1;
                    gpa = (e & phys_mask & !page_mask) | (lin & page_mask);
                    leaf_global = pge && e & 0x100 != 0;
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

        let can_read = !user || us;
        let can_write = can_read && (rw || (!user && !wp));
        let can_exec = can_read && !(nx && nxe);
        let ok = match kind {
            AccessKind::Read => can_read,
            AccessKind::Write => can_write,
            AccessKind::Exec => can_exec,
        };
        if !ok {
            return Err(self.page_fault(lin, code | pf::P));
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
            if bits != 0 {
                self.phys_set_bits(l.addr, bits, wide);
            }
        }
        Ok(Translation {
            gpa,
            can_write,
            can_exec,
            dirty,
            global: leaf_global,
        })
    }

    /// Translates and, when the page is RAM, fills the TLB. Returns the
    /// guest-physical address.
    pub(crate) fn translate_fill(&mut self, lin: u64, kind: AccessKind, user: bool) -> R<u64> {
        let t = self.translate(lin, kind, user)?;
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
        let vpn = lin >> 12;
        let exec = kind == AccessKind::Exec;
        let bank = if exec { code_bank(user) } else { user as usize };
        let e = &mut self.c.tlb.e[bank][Tlb::index(vpn)];
        *e = TlbEntry {
            tag_r: vpn,
            tag_w: if writable && !exec { vpn } else { INVALID },
            tag_x: if t.can_exec && exec { vpn } else { INVALID },
            host: ram.host as usize,
            gpa: page,
            global: t.global,
        };
        Ok(t.gpa)
    }
}
