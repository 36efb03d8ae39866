//! Pause-loop exiting, as VMX's PLE and SVM's pause filter do it: a PAUSE
//! that belongs to a spin loop which has spun for a while ends `run` with
//! [`CpuExit::PauseLoop`], so the accelerator can give the host CPU to
//! the vCPU the loop waits for (KVM's `kvm_vcpu_on_spin`). Without it, a
//! vCPU spinning on a lock or a flag burns its whole host time slice while
//! the vCPU that would release it waits for a host CPU.
//!
//! Time is counted in retired instructions (the emu CPU has no cycles).

use super::Exec;
use crate::CpuExit;
use hv::ExitReason;
use tracepoints::VmxExit;

/// Two PAUSEs at most this many instructions apart belong to one spin
/// loop (PLE_Gap).
pub(crate) const PLE_GAP: u64 = 128;
/// A spin loop exits once it has run this many instructions (PLE_Window).
pub(crate) const PLE_WINDOW: u64 = 4096;

/// The spin loop being watched.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PauseLoop {
    /// Retired-instruction count at the last PAUSE.
    last: u64,
    /// Retired-instruction count at the first PAUSE of the current loop.
    start: u64,
}

impl PauseLoop {
    /// A PAUSE at `icount`: returns whether the loop it belongs to has
    /// spun for [`PLE_WINDOW`] instructions (the window then restarts).
    pub(crate) fn pause(&mut self, icount: u64) -> bool {
        if icount.saturating_sub(self.last) > PLE_GAP || icount < self.last {
            self.start = icount;
        }
        self.last = icount;
        if icount.saturating_sub(self.start) >= PLE_WINDOW {
            self.start = icount;
            return true;
        }
        false
    }
}

impl Exec<'_> {
    /// PAUSE: a hint, except that a long spin loop ends the run.
    pub(super) fn pause(&mut self) {
        if self.c.ple.pause(self.c.icount) {
            // The one place a pause-loop exit is counted and traced.
            self.vm_exit(ExitReason::Pause, VmxExit::PauseInstruction, 0);
            self.c.pending_exit.get_or_insert(CpuExit::PauseLoop);
            self.c.block_exit = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tight_loop_exits_once_per_window() {
        let mut ple = PauseLoop::default();
        // Pauses every 4 instructions spanning exactly three windows.
        let exits = (0..=3 * PLE_WINDOW / 4)
            .map(|i| ple.pause(1000 + i * 4))
            .filter(|&e| e)
            .count();
        assert_eq!(exits, 3);
    }

    #[test]
    fn pauses_far_apart_never_exit() {
        let mut ple = PauseLoop::default();
        assert!((1..10_000).all(|i| !ple.pause(i * (PLE_GAP + 1))));
    }
}
