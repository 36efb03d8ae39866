//! The VMM debugger's layer (a gdb stub), beside the guest's own debug
//! facilities in `debug.rs`: single-step, INT3 intercepted as a software
//! breakpoint, and four hardware breakpoints and watchpoints of its own.
//! None of it is visible to the guest: its DR0-DR7, DR6 bits and
//! RFLAGS.TF are not touched, and a debugger stop delivers no #DB.
//!
//! While single-step or a hardware breakpoint is set, the run loop runs one
//! instruction at a time through [`Exec::step_debugger`], which checks the
//! instruction breakpoints before the instruction and the watchpoints and
//! the step after it; a stop ends [`crate::Cpu::run`] with
//! [`CpuExit::Debug`]. Watched pages stay out of the TLB's data banks, as
//! for the guest's own data breakpoints, so every access to them is seen.

use hv::{DebugCause, GuestDebug, HwKind};

use crate::exec::Exec;
use crate::mmu::{bank, AccessKind};
use crate::state::rflags;
use crate::{Bus, Cpu, CpuExit};

/// The debugger's wishes and what its checks need between instructions.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct DebuggerState {
    pub config: GuestDebug,
    /// Single-step or a hardware breakpoint: one instruction at a time.
    pub active: bool,
    /// A watchpoint is set.
    pub watch: bool,
    /// Watchpoint slots the current instruction hit.
    pub hits: u32,
    /// The instruction breakpoint at this RIP stopped the vCPU: the next
    /// instruction runs without that check, so that continuing gets past it.
    pub skip_at: Option<u64>,
    /// A debugger's translation is walking: no Accessed/Dirty bits set,
    /// no CR2 or page-fault count for a miss.
    pub probing: bool,
}

impl DebuggerState {
    /// The slot of an instruction breakpoint at linear `lin`.
    fn exec_hit(&self, lin: u64) -> Option<usize> {
        self.config
            .hw
            .iter()
            .position(|bp| bp.is_some_and(|bp| bp.kind == HwKind::Exec && bp.addr == lin))
    }

    /// Whether a watchpoint covers part of the page of `lin`.
    pub fn watched_page(&self, lin: u64) -> bool {
        self.watches()
            .any(|(_, addr, len)| overlaps(lin & !0xfff, 4096, addr, len))
    }

    /// Records the watchpoints an access of `len` bytes at `lin` hits.
    pub fn watch_access(&mut self, lin: u64, len: usize, write: bool) {
        let mut hits = 0;
        for (slot, addr, blen) in self.watches() {
            let kind = self.config.hw[slot].map(|bp| bp.kind);
            if (write || kind == Some(HwKind::Access)) && overlaps(lin, len as u64, addr, blen) {
                hits |= 1 << slot;
            }
        }
        self.hits |= hits;
    }

    /// (slot, address, length) of each watchpoint.
    fn watches(&self) -> impl Iterator<Item = (usize, u64, u64)> + '_ {
        self.config.hw.iter().enumerate().filter_map(|(n, bp)| {
            let bp = (*bp)?;
            (bp.kind != HwKind::Exec).then_some((n, bp.addr, u64::from(bp.len.max(1))))
        })
    }
}

/// Whether [a, a+len) and [b, b+blen) overlap (addresses wrap).
fn overlaps(a: u64, len: u64, b: u64, blen: u64) -> bool {
    b.wrapping_sub(a) < len || a.wrapping_sub(b) < blen
}

impl Cpu {
    /// Sets what the VMM's debugger asks for (see the module
    /// documentation). Call it between runs.
    pub fn set_guest_debug(&mut self, debug: &GuestDebug) {
        let d = &mut self.debugger;
        d.config = *debug;
        d.active = debug.single_step || debug.hw.iter().any(Option::is_some);
        d.watch = debug.hw.iter().flatten().any(|bp| bp.kind != HwKind::Exec);
        d.hits = 0;
        self.debug_regs_changed();
    }

    /// Translates linear address `lin` through the current page tables as
    /// a supervisor read, for the debugger: `None` when it is not mapped.
    /// The walk is the CPU's own; it changes nothing the guest sees (no
    /// Accessed bits, no CR2).
    pub fn debug_translate(&mut self, bus: &mut dyn Bus, lin: u64) -> Option<u64> {
        self.debugger.probing = true;
        let mut ex = Exec::new(self, bus);
        let t = ex.translate(lin, AccessKind::Read, bank::SUP_AC);
        self.debugger.probing = false;
        t.ok().map(|t| t.gpa)
    }
}

impl Exec<'_> {
    /// Runs the next instruction under the debugger's checks (the guest's
    /// own debug checks still apply inside).
    pub(crate) fn step_debugger(&mut self) {
        let rip = self.c.state.rip;
        let skip = self.c.debugger.skip_at.take() == Some(rip);
        if !skip {
            if let Some(slot) = self
                .code_lin(rip)
                .ok()
                .and_then(|lin| self.c.debugger.exec_hit(lin))
            {
                self.c.debugger.skip_at = Some(rip);
                self.stop(DebugCause::HwBreakpoint { slot });
                return;
            }
        }
        self.c.debugger.hits = 0;
        if self.guest_debug_active() {
            self.step_debug();
        } else {
            // Only RF (or nothing) of the guest's: it is cleared as the
            // instruction starts.
            self.c.state.flags.set_bit(rflags::RF, false);
            self.run_block(self.c.icount + 1);
        }
        let hits = std::mem::take(&mut self.c.debugger.hits);
        if hits != 0 {
            self.stop(DebugCause::Watchpoint {
                slot: hits.trailing_zeros() as usize,
            });
        } else if self.c.debugger.config.single_step {
            self.stop(DebugCause::SingleStep);
        }
    }

    /// INT3 with software breakpoints intercepted: stops with RIP at the
    /// INT3 instead of raising #BP. Returns false when not intercepted.
    pub(crate) fn intercept_int3(&mut self, ip: u64) -> bool {
        if !self.c.debugger.config.sw_breakpoints {
            return false;
        }
        self.c.state.rip = ip;
        self.stop(DebugCause::SwBreakpoint);
        true
    }

    /// Ends the run with a debugger stop (an earlier exit, such as a
    /// triple fault, wins).
    fn stop(&mut self, cause: DebugCause) {
        self.c.block_exit = true;
        self.c.pending_exit.get_or_insert(CpuExit::Debug(cause));
    }
}
