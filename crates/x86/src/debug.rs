//! Debug facilities: DR0-DR7, instruction, data and I/O breakpoints,
//! single-stepping (RFLAGS.TF), RF, general detect, ICEBP, and the way
//! MOV SS / POP SS hold debug traps for one instruction.
//!
//! Blocks run at full speed while nothing can trap. When RFLAGS.TF is set
//! or a breakpoint is enabled in DR7, the run loop executes one
//! instruction at a time through [`Exec::step_debug`], which checks
//! instruction breakpoints before it and delivers the trap-class #DB after
//! it. Data breakpoints are seen on the slow memory path: a page holding
//! one is never cached in the data banks of the TLB, so every access to
//! it walks and is compared there. I/O breakpoints (CR4.DE) are compared
//! at each port access.

use crate::exception::{EventKind, Exc, DB, R};
use crate::exec::Exec;
use crate::state::{cr4, rflags, Mode};
use crate::Cpu;

/// DR6 bits.
pub mod dr6 {
    /// B0-B3: the breakpoint conditions that matched.
    pub const B: u64 = 0xf;
    /// Debug-register access detected (DR7.GD).
    pub const BD: u64 = 1 << 13;
    /// Single step.
    pub const BS: u64 = 1 << 14;
    /// Task switch (never set: no task switches).
    pub const BT: u64 = 1 << 15;
    /// Bits that read as 1 (RTM and bus-lock detection are not
    /// implemented, so their active-low bits are fixed too).
    pub const FIXED1: u64 = 0xffff_0ff0;
    /// Bits software can write.
    pub const WRITABLE: u64 = B | BD | BS | BT;
}

/// DR7 bits.
pub mod dr7 {
    /// L0/G0..L3/G3.
    pub const ENABLES: u64 = 0xff;
    /// General detect: MOV to or from a debug register raises #DB.
    pub const GD: u64 = 1 << 13;
    /// Bit 10 reads as 1.
    pub const FIXED1: u64 = 1 << 10;
    /// L/G enables, LE, GE, GD, and the R/W and LEN fields.
    pub const WRITABLE: u64 = 0xffff_23ff;
}

/// Debug state that is not architectural register content.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DebugState {
    /// A data breakpoint is enabled: pages it covers are not cached in
    /// the TLB's data banks.
    pub watch: bool,
    /// B0-B3 of the data and I/O breakpoints the current instruction hit.
    pub hits: u64,
    /// DR6 bits of traps held over a MOV SS / POP SS for the next
    /// instruction.
    pub held: u64,
    /// The previous instruction loaded SS (its traps are held, and
    /// instruction breakpoints do not fire on this one).
    pub shadow: bool,
    /// DR6 bits of a trap the previous instruction owes (SYSRET that set
    /// TF), delivered before the next instruction.
    pub pending: u64,
    // Set by instructions while they execute (cleared before each step):
    /// The instruction loaded SS.
    pub movss: bool,
    /// The instruction delivered a software interrupt (INT n, INT3, INTO):
    /// no single-step trap for it.
    pub sw_int: bool,
    /// The instruction was ICEBP (INT1): its #DB replaces the held traps.
    pub icebp: bool,
    /// SYSCALL/SYSRET: the single-step trap follows TF at the end of the
    /// instruction (already in `pending`), not TF at its start.
    pub tf_done: bool,
}

/// The size in bytes of a breakpoint's LEN field.
fn bp_len(dr7: u64, n: usize) -> u64 {
    match (dr7 >> (18 + 4 * n)) & 3 {
        0 => 1,
        1 => 2,
        2 => 8,
        _ => 4,
    }
}

/// A breakpoint's R/W field: 0 execute, 1 write, 2 I/O, 3 read/write.
fn bp_rw(dr7: u64, n: usize) -> u64 {
    (dr7 >> (16 + 4 * n)) & 3
}

fn bp_enabled(dr7: u64, n: usize) -> bool {
    dr7 & (3 << (2 * n)) != 0
}

/// Whether [a, a+len) and [b, b+blen) overlap (addresses wrap).
fn overlaps(a: u64, len: u64, b: u64, blen: u64) -> bool {
    b.wrapping_sub(a) < len || a.wrapping_sub(b) < blen
}

impl Cpu {
    /// Recomputes what the debug registers enable after DR0-DR3, DR7 or
    /// CR4.DE changed: the TLB must not keep pages a data breakpoint now
    /// covers.
    pub(crate) fn debug_regs_changed(&mut self) {
        let dr7 = self.state.dr[7];
        let was = self.dbg.watch;
        self.dbg.watch =
            (0..4).any(|n| bp_enabled(dr7, n) && bp_rw(dr7, n) & 1 == 1) || self.debugger.watch;
        if self.dbg.watch || was {
            self.tlb.flush_guest_all(crate::counters::TlbFlush::Rights);
        }
    }
}

impl Exec<'_> {
    /// Whether the next instruction needs [`Exec::step_debug`]: TF or RF
    /// set, or a breakpoint enabled.
    #[inline(always)]
    pub(crate) fn debug_active(&self) -> bool {
        let st = &self.c.state;
        (st.flags.raw_bits() & (rflags::TF | rflags::RF)) | (st.dr[7] & dr7::ENABLES) != 0
            || self.c.debugger.active
    }

    /// Whether the guest's own debug state needs [`Exec::step_debug`]
    /// (more than RF alone).
    pub(crate) fn guest_debug_active(&self) -> bool {
        let st = &self.c.state;
        (st.flags.raw_bits() & rflags::TF) | (st.dr[7] & dr7::ENABLES) != 0
            || self.c.dbg.shadow
            || self.c.dbg.pending != 0
    }

    /// Runs the next instruction with the debug checks around it (see the
    /// module documentation).
    pub(crate) fn step_debug(&mut self) {
        let st = &self.c.state;
        let fl = st.flags.raw_bits();
        let dr7 = st.dr[7];
        if self.c.dbg.pending != 0 {
            // The previous instruction's trap (SYSRET that set TF).
            let bits = std::mem::take(&mut self.c.dbg.pending);
            self.deliver_db_trap(bits);
            return;
        }
        let tf = fl & rflags::TF != 0;
        let shadow = std::mem::take(&mut self.c.dbg.shadow);
        let held = std::mem::take(&mut self.c.dbg.held);
        if !tf && dr7 & dr7::ENABLES == 0 && !shadow {
            // Only RF: it matters to instruction breakpoints alone, and
            // none is enabled. It is cleared as the instruction starts, so
            // nothing tells clearing it now apart.
            self.c.state.flags.set_bit(rflags::RF, false);
            return;
        }
        // Instruction breakpoints: a fault before the instruction, unless
        // RF suppresses them (or a MOV SS blocks them).
        if fl & rflags::RF == 0 && dr7 & dr7::ENABLES != 0 && !shadow {
            if let Ok(lin) = self.code_lin(self.c.state.rip) {
                let hits = self.exec_breakpoints(lin);
                if hits != 0 {
                    self.c.state.dr[6] = (self.c.state.dr[6] & !dr6::B) | hits;
                    self.deliver_event(DB, None, EventKind::Exception);
                    return;
                }
            }
        }
        self.c.state.flags.set_bit(rflags::RF, false);
        let d = &mut self.c.dbg;
        d.hits = 0;
        d.movss = false;
        d.sw_int = false;
        d.icebp = false;
        d.tf_done = false;
        let before = self.c.icount;
        self.run_block(before + 1);
        if self.c.icount == before {
            // It faulted: that exception was delivered; held traps are
            // dropped with it.
            return;
        }
        let d = &mut self.c.dbg;
        let mut bits = d.hits;
        if d.tf_done {
            bits |= std::mem::take(&mut d.pending);
        } else if tf && !d.sw_int && !d.icebp {
            bits |= dr6::BS;
        }
        if d.icebp {
            // ICEBP's own #DB was delivered; the held traps go with it.
            return;
        }
        if d.movss {
            // MOV SS / POP SS: data and I/O breakpoint traps wait for the
            // next instruction; the single-step trap is lost.
            d.held = held | (bits & !dr6::BS);
            d.shadow = true;
            return;
        }
        bits |= held;
        if bits != 0 {
            self.deliver_db_trap(bits);
        }
    }

    /// SYSCALL and SYSRET single-step by TF at their end: the trap (if
    /// any) is owed now, whatever TF was when they started.
    pub(crate) fn single_step_by_tf_at_end(&mut self) {
        self.c.dbg.tf_done = true;
        if self.c.state.flags.raw_bits() & rflags::TF != 0 {
            self.c.dbg.pending |= dr6::BS;
        }
    }

    /// Delivers a trap-class #DB with DR6 bits `bits` (B0-B3 replace the
    /// old ones; BS, BD stay set until software clears them).
    fn deliver_db_trap(&mut self, bits: u64) {
        let dr6 = &mut self.c.state.dr[6];
        *dr6 = (*dr6 & !dr6::B) | bits;
        // A trap after HLT: the CPU runs the handler instead of halting.
        self.c.state.halted = false;
        self.deliver_event(DB, None, EventKind::Exception);
    }

    /// B0-B3 of the enabled instruction breakpoints at linear `lin`.
    fn exec_breakpoints(&self, lin: u64) -> u64 {
        let st = &self.c.state;
        let dr7 = st.dr[7];
        let mut hits = 0;
        for n in 0..4 {
            if bp_enabled(dr7, n) && bp_rw(dr7, n) == 0 && self.bp_addr(n) == lin {
                hits |= 1 << n;
            }
        }
        hits
    }

    /// DRn as a linear address (32 bits outside long mode).
    fn bp_addr(&self, n: usize) -> u64 {
        let a = self.c.state.dr[n];
        if self.c.state.long_mode_active() {
            a
        } else {
            a & 0xffff_ffff
        }
    }

    /// Whether an enabled data breakpoint covers part of `lin`'s page.
    pub(crate) fn watched_page(&self, lin: u64) -> bool {
        let dr7 = self.c.state.dr[7];
        self.c.debugger.watched_page(lin)
            || (0..4).any(|n| {
                bp_enabled(dr7, n)
                    && bp_rw(dr7, n) & 1 == 1
                    && overlaps(
                        lin & !0xfff,
                        4096,
                        self.bp_addr(n) & !(bp_len(dr7, n) - 1),
                        bp_len(dr7, n),
                    )
            })
    }

    /// Records the data breakpoints an access of `len` bytes at `lin`
    /// hits (a write matches R/W 01 and 11, a read 11 only).
    pub(crate) fn watch_access(&mut self, lin: u64, len: usize, write: bool) {
        if self.c.debugger.watch {
            self.c.debugger.watch_access(lin, len, write);
        }
        let dr7 = self.c.state.dr[7];
        for n in 0..4 {
            let rw = bp_rw(dr7, n);
            if !bp_enabled(dr7, n) || !(rw == 3 || (rw == 1 && write)) {
                continue;
            }
            let blen = bp_len(dr7, n);
            let base = self.bp_addr(n) & !(blen - 1);
            if overlaps(lin, len as u64, base, blen) {
                self.c.dbg.hits |= 1 << n;
            }
        }
    }

    /// Records the I/O breakpoints (CR4.DE, R/W 10) an access of `size`
    /// bytes at `port` hits.
    #[inline]
    pub(crate) fn io_breakpoints(&mut self, port: u16, size: u32) {
        let st = &self.c.state;
        let dr7 = st.dr[7];
        if dr7 & dr7::ENABLES == 0 || st.cr4 & cr4::DE == 0 {
            return;
        }
        for n in 0..4 {
            if !bp_enabled(dr7, n) || bp_rw(dr7, n) != 2 {
                continue;
            }
            let blen = bp_len(dr7, n);
            let base = st.dr[n] & 0xffff & !(blen - 1);
            if overlaps(port as u64, size as u64, base, blen) {
                self.c.dbg.hits |= 1 << n;
            }
        }
    }

    /// The debug register number for MOV DRn: DR4/DR5 alias DR6/DR7
    /// unless CR4.DE makes them reserved (#UD). DR7.GD turns the access
    /// into a #DB fault (DR6.BD set, GD cleared for the handler).
    fn dr_index(&mut self, n: usize) -> R<usize> {
        let st = &mut self.c.state;
        let n = match n {
            4 | 5 if st.cr4 & cr4::DE != 0 => return Err(crate::exception::ud()),
            4 | 5 => n + 2,
            0..=7 => n,
            _ => return Err(crate::exception::ud()),
        };
        if st.dr[7] & dr7::GD != 0 {
            st.dr[6] = (st.dr[6] & !dr6::B) | dr6::BD;
            st.dr[7] &= !dr7::GD;
            return Err(Exc {
                vector: DB,
                code: None,
            });
        }
        Ok(n)
    }

    /// MOV DRn, reg (CPL already checked).
    pub(crate) fn write_dr(&mut self, n: usize, v: u64) -> R<()> {
        let n = self.dr_index(n)?;
        let long = self.c.state.mode == Mode::Long;
        let st = &mut self.c.state;
        match n {
            0..=3 => st.dr[n] = v,
            6 | 7 if long && v >> 32 != 0 => return Err(crate::exception::gp(0)),
            6 => st.dr[6] = (v & dr6::WRITABLE) | dr6::FIXED1,
            _ => st.dr[7] = (v & dr7::WRITABLE) | dr7::FIXED1,
        }
        if n != 6 {
            self.c.debug_regs_changed();
        }
        // The run loop looks at DR7 between blocks.
        self.c.block_exit = true;
        Ok(())
    }

    /// MOV reg, DRn (CPL already checked).
    pub(crate) fn read_dr(&mut self, n: usize) -> R<u64> {
        let n = self.dr_index(n)?;
        Ok(self.c.state.dr[n])
    }
}
