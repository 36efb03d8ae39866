//! Guest memory access: physical (RAM via host pointers, else MMIO),
//! linear (through the soft TLB, with a page-walk slow path) and logical
//! (segmentation checks).

use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};

use hv::ExitReason;

use crate::exception::{gp, ss, Exc, R};
use crate::exec::Exec;
use crate::mmu::{bank, AccessKind};
use crate::state::{Mode, FS, SS};

/// The size of the next MMIO piece at `a` with `left` bytes to go: the
/// largest of 8/4/2/1 that fits and is naturally aligned.
fn mmio_piece(a: u64, left: usize) -> usize {
    for n in [8usize, 4, 2] {
        if left >= n && a & (n as u64 - 1) == 0 {
            return n;
        }
    }
    1
}

#[inline]
pub fn canonical(a: u64) -> bool {
    ((a as i64) << 16 >> 16) as u64 == a
}

/// Reads `size` (1, 2, 4, 8) bytes at a host address.
///
/// # Safety
/// `p..p+size` must be valid for reads.
#[inline]
pub(crate) unsafe fn host_read(p: *const u8, size: u32) -> u64 {
    // SAFETY: the caller guarantees p..p+size is readable; unaligned reads
    // are used because guest data has no alignment guarantee.
    unsafe {
        match size {
            1 => *p as u64,
            2 => (p as *const u16).read_unaligned() as u64,
            4 => (p as *const u32).read_unaligned() as u64,
            _ => (p as *const u64).read_unaligned(),
        }
    }
}

/// Writes `size` (1, 2, 4, 8) bytes at a host address.
///
/// # Safety
/// `p..p+size` must be valid for writes.
#[inline]
pub(crate) unsafe fn host_write(p: *mut u8, size: u32, v: u64) {
    // SAFETY: the caller guarantees p..p+size is writable.
    unsafe {
        match size {
            1 => *p = v as u8,
            2 => (p as *mut u16).write_unaligned(v as u16),
            4 => (p as *mut u32).write_unaligned(v as u32),
            _ => (p as *mut u64).write_unaligned(v),
        }
    }
}

impl Exec<'_> {
    // ---------------------------------------------------------------- physical

    /// Reads guest-physical memory (RAM or MMIO).
    pub(crate) fn phys_read(&mut self, gpa: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = gpa + done as u64;
            let chunk = (buf.len() - done).min(4096 - (a & 0xfff) as usize);
            match self.bus.ram(a, false) {
                Some(r) if r.len >= chunk => {
                    // SAFETY: the Bus contract makes r.host valid for r.len >= chunk bytes.
                    unsafe {
                        std::ptr::copy_nonoverlapping(r.host, buf[done..].as_mut_ptr(), chunk)
                    };
                }
                _ => self.mmio_read_split(a, &mut buf[done..done + chunk]),
            }
            done += chunk;
        }
    }

    /// MMIO accesses reach the bus as naturally aligned 1/2/4/8-byte pieces.
    fn mmio_read_split(&mut self, gpa: u64, buf: &mut [u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = gpa + done as u64;
            let n = mmio_piece(a, buf.len() - done);
            self.vm_exit(ExitReason::Mmio, tracepoints::VmxExit::EptMisconfig, 0);
            self.bus.mmio_read(a, &mut buf[done..done + n]);
            tracepoints::kvm_mmio(false, n as u32, a, le_value(&buf[done..done + n]));
            done += n;
        }
    }

    fn mmio_write_split(&mut self, gpa: u64, buf: &[u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = gpa + done as u64;
            let n = mmio_piece(a, buf.len() - done);
            self.vm_exit(ExitReason::Mmio, tracepoints::VmxExit::EptMisconfig, 0);
            tracepoints::kvm_mmio(true, n as u32, a, le_value(&buf[done..done + n]));
            self.bus.mmio_write(a, &buf[done..done + n]);
            done += n;
        }
        // A device write may have raised an event for this CPU (an IPI to
        // itself, INIT): as on an exit, it is seen before the next
        // instruction.
        self.c.block_exit = true;
    }

    /// Writes guest-physical memory (RAM or MMIO), invalidating decoded code.
    pub(crate) fn phys_write(&mut self, gpa: u64, buf: &[u8]) {
        let mut done = 0;
        while done < buf.len() {
            let a = gpa + done as u64;
            let chunk = (buf.len() - done).min(4096 - (a & 0xfff) as usize);
            self.note_code_write(a & !0xfff);
            match self.bus.ram(a, true) {
                Some(r) if r.len >= chunk => {
                    // SAFETY: the Bus contract makes r.host writable for r.len >= chunk bytes.
                    unsafe { std::ptr::copy_nonoverlapping(buf[done..].as_ptr(), r.host, chunk) };
                }
                _ => self.mmio_write_split(a, &buf[done..done + chunk]),
            }
            done += chunk;
        }
    }

    /// Sets bits in a paging-structure entry atomically (A/D bits).
    pub(crate) fn phys_set_bits(&mut self, gpa: u64, bits: u64, wide: bool) {
        let size = if wide { 8 } else { 4 };
        if gpa & (size - 1) != 0 {
            return;
        }
        self.note_code_write(gpa & !0xfff);
        match self.bus.ram(gpa, true) {
            Some(r) if r.len >= size as usize && (r.host as usize) & (size as usize - 1) == 0 => {
                if wide {
                    // SAFETY: r.host is valid and writable for 8 bytes (Bus contract)
                    // and 8-aligned (checked above); other vCPUs access the entry
                    // atomically or by plain reads.
                    let a = unsafe { AtomicU64::from_ptr(r.host as *mut u64) };
                    a.fetch_or(bits, Ordering::AcqRel);
                } else {
                    // SAFETY: as above, 4 bytes, 4-aligned.
                    let a = unsafe { AtomicU32::from_ptr(r.host as *mut u32) };
                    a.fetch_or(bits as u32, Ordering::AcqRel);
                }
            }
            _ => {
                let mut buf = [0u8; 8];
                self.phys_read(gpa, &mut buf[..size as usize]);
                let v = u64::from_le_bytes(buf) | bits;
                self.phys_write(gpa, &v.to_le_bytes()[..size as usize]);
            }
        }
    }

    /// A write reaches guest-physical page `page`: drop decoded blocks there.
    #[inline]
    pub(crate) fn note_code_write(&mut self, page: u64) {
        if self.c.blocks.is_code_page(page) {
            self.c
                .blocks
                .invalidate_page(page, crate::counters::BlockDrop::CodeWrite);
            self.c.block_exit = true;
        }
        if self.c.code_share.note_write(page) {
            // Our own write: our blocks of the page are already gone.
            let e = self.c.code_share.epoch();
            if e == self.c.seen_code_epoch + 1 {
                self.c.seen_code_epoch = e;
            }
        }
    }

    // ------------------------------------------------------------------ linear

    #[inline]
    pub(crate) fn user(&self) -> bool {
        self.c.state.cpl == 3
    }

    /// Reads 1/2/4/8 bytes at a linear address, as an explicit access at
    /// CPL 3 (`user`) or by the supervisor.
    #[inline]
    pub(crate) fn read_lin(&mut self, lin: u64, size: u32, user: bool) -> R<u64> {
        let bank = self.data_bank(user);
        self.read_lin_bank(lin, size, bank)
    }

    /// Reads 1/2/4/8 bytes for an implicit supervisor access (descriptor
    /// tables, IDT, TSS).
    pub(crate) fn read_sys(&mut self, lin: u64, size: u32) -> R<u64> {
        self.read_lin_bank(lin, size, bank::SUP)
    }

    #[inline]
    fn read_lin_bank(&mut self, lin: u64, size: u32, bank: usize) -> R<u64> {
        if let Some(p) = self.c.tlb.host(bank, lin, size, false) {
            // SAFETY: a TLB read tag is only installed for a page the Bus
            // returned as RAM with at least 4096 bytes; the pointer stays
            // valid until the next TLB flush (Bus contract); the access
            // stays in the page (checked by Tlb::host).
            return Ok(unsafe { host_read(p, size) });
        }
        self.read_lin_slow(lin, size, bank)
    }

    #[inline(never)]
    fn read_lin_slow(&mut self, lin: u64, size: u32, bank: usize) -> R<u64> {
        let mut buf = [0u8; 8];
        self.read_bytes_bank(lin, &mut buf[..size as usize], bank)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// Reads any number of bytes at a linear address.
    pub(crate) fn read_lin_bytes(&mut self, lin: u64, buf: &mut [u8], user: bool) -> R<()> {
        let bank = self.data_bank(user);
        self.read_bytes_bank(lin, buf, bank)
    }

    /// Reads any number of bytes through bank `bank`: each page's part
    /// through the TLB when it holds the page, else by a walk (which fills
    /// it for the next access).
    fn read_bytes_bank(&mut self, lin: u64, buf: &mut [u8], bank: usize) -> R<()> {
        let mut done = 0;
        while done < buf.len() {
            let a = self.wrap_lin(lin.wrapping_add(done as u64));
            let chunk = (buf.len() - done).min(4096 - (a & 0xfff) as usize);
            let dst = &mut buf[done..done + chunk];
            if let Some(p) = self.c.tlb.host(bank, a, chunk as u32, false) {
                // SAFETY: as in read_lin_bank: a read tag names a RAM page
                // valid until the next flush, and the chunk stays in it.
                unsafe { std::ptr::copy_nonoverlapping(p, dst.as_mut_ptr(), chunk) };
            } else {
                let gpa = self.translate_fill_bank(a, AccessKind::Read, bank)?;
                self.phys_read(gpa, dst);
            }
            done += chunk;
        }
        if self.c.dbg.watch {
            self.watch_access(lin, buf.len(), false);
        }
        Ok(())
    }

    /// Linear addresses wrap at 4 GiB outside long mode.
    #[inline]
    pub(crate) fn wrap_lin(&self, a: u64) -> u64 {
        if self.c.state.long_mode_active() {
            a
        } else {
            a & 0xffff_ffff
        }
    }

    /// Writes 1/2/4/8 bytes at a linear address, as an explicit access at
    /// CPL 3 (`user`) or by the supervisor.
    #[inline]
    pub(crate) fn write_lin(&mut self, lin: u64, size: u32, v: u64, user: bool) -> R<()> {
        let bank = self.data_bank(user);
        self.write_lin_bank(lin, size, v, bank)
    }

    /// Writes 1/2/4/8 bytes for an implicit supervisor access (descriptor
    /// accessed/busy bits).
    pub(crate) fn write_sys(&mut self, lin: u64, size: u32, v: u64) -> R<()> {
        self.write_lin_bank(lin, size, v, bank::SUP)
    }

    #[inline]
    fn write_lin_bank(&mut self, lin: u64, size: u32, v: u64, bank: usize) -> R<()> {
        if let Some(p) = self.c.tlb.host(bank, lin, size, true) {
            // SAFETY: a TLB write tag is only installed for a page the Bus
            // returned as writable RAM (>= 4096 bytes) that holds no decoded
            // code; valid until the next TLB flush (Bus contract).
            unsafe { host_write(p, size, v) };
            return Ok(());
        }
        self.write_bytes_bank(lin, &v.to_le_bytes()[..size as usize], bank)
    }

    /// Writes any number of bytes at a linear address: every page is
    /// translated before anything is written, so a fault writes nothing.
    pub(crate) fn write_lin_bytes(&mut self, lin: u64, buf: &[u8], user: bool) -> R<()> {
        let bank = self.data_bank(user);
        self.write_bytes_bank(lin, buf, bank)
    }

    /// Writes any number of bytes through bank `bank`, each page's part
    /// through the TLB when it allows the write, else by a walk (which
    /// fills it for the next access).
    fn write_bytes_bank(&mut self, lin: u64, buf: &[u8], bank: usize) -> R<()> {
        if buf.len() <= 4096 {
            // Check all pages first.
            let mut done = 0;
            while done < buf.len() {
                let a = self.wrap_lin(lin.wrapping_add(done as u64));
                let chunk = (buf.len() - done).min(4096 - (a & 0xfff) as usize);
                if !self.c.tlb.hit(bank, a, true) {
                    self.translate_fill_bank(a, AccessKind::Write, bank)?;
                }
                done += chunk;
            }
        }
        let mut done = 0;
        while done < buf.len() {
            let a = self.wrap_lin(lin.wrapping_add(done as u64));
            let chunk = (buf.len() - done).min(4096 - (a & 0xfff) as usize);
            let src = &buf[done..done + chunk];
            if let Some(p) = self.c.tlb.host(bank, a, chunk as u32, true) {
                // SAFETY: as in write_lin_bank: a write tag names writable
                // RAM that holds no decoded code, valid until the next
                // flush, and the chunk stays in the page.
                unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), p, chunk) };
            } else {
                let gpa = self.translate_fill_bank(a, AccessKind::Write, bank)?;
                self.phys_write(gpa, src);
            }
            done += chunk;
        }
        if self.c.dbg.watch {
            self.watch_access(lin, buf.len(), true);
        }
        Ok(())
    }

    /// A host pointer for an aligned, page-contained, writable RAM location
    /// (for LOCKed read-modify-writes done as host atomics).
    pub(crate) fn host_ptr_for_write(&mut self, lin: u64, size: u32) -> R<Option<*mut u8>> {
        let user = self.user();
        if lin & (size as u64 - 1) != 0 {
            return Ok(None);
        }
        let bank = self.data_bank(user);
        if !self.c.tlb.hit(bank, lin, true) {
            self.translate_fill_bank(lin, AccessKind::Write, bank)?;
        }
        match self.c.tlb.host(bank, lin, size, true) {
            Some(p) if (p as usize) & (size as usize - 1) == 0 => Ok(Some(p)),
            _ => Ok(None),
        }
    }

    // ----------------------------------------------------------------- logical

    /// Segment + offset → linear address, with the mode's checks.
    #[inline]
    pub(crate) fn seg_lin(&mut self, seg: usize, off: u64, size: u32, write: bool) -> R<u64> {
        let st = &self.c.state;
        if st.mode == Mode::Long {
            let base = if seg >= FS { st.seg[seg & 7].base } else { 0 };
            let lin = base.wrapping_add(off);
            if !canonical(lin) {
                return Err(if seg == SS { ss(0) } else { gp(0) });
            }
            return Ok(lin);
        }
        let s = &st.seg[seg.min(5)];
        let fault = if seg == SS { ss(0) } else { gp(0) };
        if st.mode == Mode::Protected {
            if s.unusable() {
                return Err(fault);
            }
            let typ = s.typ();
            if write && (typ & 0xa != 0x2) {
                return Err(fault);
            }
            if !write && typ & 0xa == 0x8 {
                // execute-only code
                return Err(fault);
            }
        }
        let last = off.wrapping_add(size as u64 - 1);
        let typ = s.typ();
        if s.s() && typ & 0xc == 0x4 {
            // expand-down data
            let upper = if s.db() { 0xffff_ffff } else { 0xffff };
            if off <= s.limit as u64 || last > upper {
                return Err(fault);
            }
        } else if last > s.limit as u64 {
            return Err(fault);
        }
        Ok((s.base.wrapping_add(off)) & 0xffff_ffff)
    }

    #[inline]
    pub(crate) fn read(&mut self, seg: usize, off: u64, size: u32) -> R<u64> {
        let lin = self.seg_lin(seg, off, size, false)?;
        let user = self.user();
        self.read_lin(lin, size, user)
    }

    #[inline]
    pub(crate) fn write(&mut self, seg: usize, off: u64, size: u32, v: u64) -> R<()> {
        let lin = self.seg_lin(seg, off, size, true)?;
        let user = self.user();
        self.write_lin(lin, size, v, user)
    }

    // ------------------------------------------------------------------- stack

    /// The stack pointer masked to the stack width.
    #[inline]
    fn sp_mask(&self) -> u64 {
        match self.c.state.stack_size() {
            8 => u64::MAX,
            4 => 0xffff_ffff,
            _ => 0xffff,
        }
    }

    #[inline]
    pub(crate) fn set_sp(&mut self, v: u64) {
        let m = self.sp_mask();
        let r = &mut self.c.state.gpr[4];
        *r = (*r & !m) | (v & m);
    }

    /// Pushes `size` bytes.
    #[inline]
    pub(crate) fn push(&mut self, v: u64, size: u32) -> R<()> {
        let m = self.sp_mask();
        let sp = self.c.state.gpr[4].wrapping_sub(size as u64) & m;
        self.write(SS, sp, size, v)?;
        self.set_sp(sp);
        Ok(())
    }

    /// Pops `size` bytes.
    #[inline]
    pub(crate) fn pop(&mut self, size: u32) -> R<u64> {
        let m = self.sp_mask();
        let sp = self.c.state.gpr[4] & m;
        let v = self.read(SS, sp, size)?;
        self.set_sp(sp.wrapping_add(size as u64));
        Ok(v)
    }

    /// Reads the stack at RSP + `off` without popping.
    pub(crate) fn peek(&mut self, off: u64, size: u32) -> R<u64> {
        let m = self.sp_mask();
        let sp = self.c.state.gpr[4].wrapping_add(off) & m;
        self.read(SS, sp, size)
    }

    // ------------------------------------------------------------ descriptors

    /// Reads the 8-byte descriptor for `sel` from the GDT or LDT. `None` when
    /// the selector is beyond the table's limit (or the LDT is unusable).
    /// Returns the raw descriptor and its linear address.
    pub(crate) fn descriptor(&mut self, sel: u16) -> R<Option<(u64, u64)>> {
        let (base, limit) = if sel & 4 != 0 {
            let l = self.c.state.ldtr;
            if l.unusable() || l.selector & 0xfffc == 0 {
                return Ok(None);
            }
            (l.base, l.limit as u64)
        } else {
            (self.c.state.gdtr.base, self.c.state.gdtr.limit as u64)
        };
        let off = (sel & 0xfff8) as u64;
        if off + 7 > limit {
            return Ok(None);
        }
        let lin = self.wrap_lin(base + off);
        let raw = self.read_sys(lin, 8)?;
        Ok(Some((raw, lin)))
    }

    /// Like [`Exec::descriptor`], but a selector past the limit is an error
    /// with the given exception.
    pub(crate) fn read_descriptor_or(&mut self, sel: u16, err: Exc) -> R<(u64, u64)> {
        self.descriptor(sel)?.ok_or(err)
    }

    /// Reads a descriptor; beyond the limit is #GP(selector).
    pub(crate) fn read_descriptor(&mut self, sel: u16) -> R<(u64, u64)> {
        self.read_descriptor_or(sel, gp(sel as u32 & 0xfffc))
    }

    /// Sets the accessed bit of a descriptor in memory.
    pub(crate) fn set_descriptor_accessed(&mut self, raw: u64, lin: u64) -> R<()> {
        if raw & (1 << 40) == 0 {
            let b = ((raw >> 40) as u8) | 1;
            self.write_sys(lin + 5, 1, b as u64)?;
        }
        Ok(())
    }
}

/// Atomically loads `size` bytes.
///
/// # Safety
/// `p` must be valid for reads of `size` bytes and aligned to `size`.
pub(crate) unsafe fn atomic_load(p: *mut u8, size: u32) -> u64 {
    // SAFETY: validity and alignment are the caller's contract.
    unsafe {
        match size {
            1 => AtomicU8::from_ptr(p).load(Ordering::SeqCst) as u64,
            2 => AtomicU16::from_ptr(p as *mut u16).load(Ordering::SeqCst) as u64,
            4 => AtomicU32::from_ptr(p as *mut u32).load(Ordering::SeqCst) as u64,
            _ => AtomicU64::from_ptr(p as *mut u64).load(Ordering::SeqCst),
        }
    }
}

/// Atomically replaces `old` by `new`; false if the value was not `old`.
///
/// # Safety
/// `p` must be valid for writes of `size` bytes and aligned to `size`.
pub(crate) unsafe fn atomic_cas(p: *mut u8, size: u32, old: u64, new: u64) -> bool {
    let o = Ordering::SeqCst;
    // SAFETY: validity and alignment are the caller's contract.
    unsafe {
        match size {
            1 => AtomicU8::from_ptr(p)
                .compare_exchange(old as u8, new as u8, o, o)
                .is_ok(),
            2 => AtomicU16::from_ptr(p as *mut u16)
                .compare_exchange(old as u16, new as u16, o, o)
                .is_ok(),
            4 => AtomicU32::from_ptr(p as *mut u32)
                .compare_exchange(old as u32, new as u32, o, o)
                .is_ok(),
            _ => AtomicU64::from_ptr(p as *mut u64)
                .compare_exchange(old, new, o, o)
                .is_ok(),
        }
    }
}

impl Exec<'_> {
    /// Performs a LOCKed read-modify-write of `size` bytes at `lin` as a
    /// host compare-and-swap loop. Returns false (nothing done) when the
    /// location is not aligned writable RAM; the caller then falls back to
    /// a plain read and write.
    pub(crate) fn locked_rmw<F: FnMut(&mut Self, u64) -> u64>(
        &mut self,
        lin: u64,
        size: u32,
        f: &mut F,
    ) -> R<bool> {
        let Some(p) = self.host_ptr_for_write(lin, size)? else {
            return Ok(false);
        };
        loop {
            // SAFETY: host_ptr_for_write returned a pointer into a writable RAM
            // page from the TLB (valid until the next flush, which cannot happen
            // inside this loop), and checked there to be aligned to `size`.
            let old = unsafe { atomic_load(p, size) };
            let new = f(self, old);
            // SAFETY: as above.
            if unsafe { atomic_cas(p, size, old, new) } {
                return Ok(true);
            }
        }
    }
}

impl Exec<'_> {
    /// A host pointer to the byte at `lin`, valid to the end of its page,
    /// when the page is RAM accessible for `write` (None: use the slow path).
    pub(crate) fn host_page(&mut self, lin: u64, write: bool) -> R<Option<*mut u8>> {
        let bank = self.data_bank(self.user());
        if !self.c.tlb.hit(bank, lin, write) {
            let kind = if write {
                AccessKind::Write
            } else {
                AccessKind::Read
            };
            self.translate_fill_bank(lin, kind, bank)?;
        }
        Ok(self.c.tlb.host(bank, lin, 1, write))
    }
}

/// The little-endian value of an MMIO piece (at most 8 bytes).
fn le_value(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .rev()
        .fold(0, |v, &b| v << 8 | u64::from(b))
}
