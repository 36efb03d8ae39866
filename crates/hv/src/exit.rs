//! VM exits: why [`crate::Vcpu::run`] returned, and per-vCPU exit accounting
//! by reason (the seed's "Common Exit Reasons" table and KVM's statistics).

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why `Vcpu::run` returned to the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VcpuExit {
    /// The guest executed HLT and the backend does not block on it itself.
    Halt,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    Shutdown,
    /// The guest asked for a system reset (KVM_SYSTEM_EVENT_RESET).
    Reset,
    /// The guest asked to be powered off (KVM_SYSTEM_EVENT_SHUTDOWN).
    PowerOff,
    /// A [`crate::Kicker`] interrupted the run.
    Interrupted,
    /// A debug stop (single step or breakpoint) the VMM's debugger asked
    /// for with [`crate::Vcpu::set_guest_debug`].
    Debug(crate::DebugCause),
}

/// Exit reasons that are counted per vCPU. The first six are the seed's
/// table; the rest are what KVM's statistics and the software CPU report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ExitReason {
    /// IN/OUT/INS/OUTS reaching the VMM's port bus.
    Io,
    /// A guest-physical access outside RAM (EPT violation on an MMIO range).
    Mmio,
    /// HLT.
    Hlt,
    /// CPUID.
    Cpuid,
    /// MOV to/from a control register.
    CrAccess,
    /// RDMSR/WRMSR.
    MsrAccess,
    /// Triple fault.
    Shutdown,
    /// A guest page fault handled by the hypervisor (EPT violation / #PF).
    PageFault,
    /// An external (host) interrupt ended guest execution.
    ExternalInterrupt,
    /// The guest opened an interrupt window so a pending interrupt could go in.
    InterruptWindow,
    /// A signal or kick made the run return to the VMM.
    Signal,
    /// An interrupt was injected into the guest.
    IrqInjection,
    /// An instruction the hypervisor had to emulate.
    InsnEmulation,
    /// An instruction that could not be executed (#UD raised in the guest).
    InsnEmulationFail,
    /// A hypercall (VMCALL/VMMCALL).
    Hypercall,
    /// A PAUSE that ended a long spin loop (pause-loop exiting: VMX PLE,
    /// SVM's pause filter).
    Pause,
    /// Every exit of any reason.
    Total,
}

impl ExitReason {
    pub const ALL: [ExitReason; 17] = [
        ExitReason::Io,
        ExitReason::Mmio,
        ExitReason::Hlt,
        ExitReason::Cpuid,
        ExitReason::CrAccess,
        ExitReason::MsrAccess,
        ExitReason::Shutdown,
        ExitReason::PageFault,
        ExitReason::ExternalInterrupt,
        ExitReason::InterruptWindow,
        ExitReason::Signal,
        ExitReason::IrqInjection,
        ExitReason::InsnEmulation,
        ExitReason::InsnEmulationFail,
        ExitReason::Hypercall,
        ExitReason::Pause,
        ExitReason::Total,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// The name used in `--stats` tables and metrics (kvm_stat style).
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::Io => "io",
            ExitReason::Mmio => "mmio",
            ExitReason::Hlt => "hlt",
            ExitReason::Cpuid => "cpuid",
            ExitReason::CrAccess => "cr_access",
            ExitReason::MsrAccess => "msr",
            ExitReason::Shutdown => "shutdown",
            ExitReason::PageFault => "page_fault",
            ExitReason::ExternalInterrupt => "external_interrupt",
            ExitReason::InterruptWindow => "interrupt_window",
            ExitReason::Signal => "signal",
            ExitReason::IrqInjection => "irq_injection",
            ExitReason::InsnEmulation => "insn_emulation",
            ExitReason::InsnEmulationFail => "insn_emulation_fail",
            ExitReason::Hypercall => "hypercall",
            ExitReason::Pause => "pause",
            ExitReason::Total => "total",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for ExitReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A snapshot of one vCPU's exit counts. `None` means the backend cannot
/// observe that reason (KVM handles some exits in the kernel without
/// reporting them), which the tables print as `-` rather than a false zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExitStats {
    counts: [Option<u64>; ExitReason::COUNT],
}

impl ExitStats {
    pub fn get(&self, reason: ExitReason) -> Option<u64> {
        self.counts[reason.index()]
    }

    pub fn set(&mut self, reason: ExitReason, value: Option<u64>) {
        self.counts[reason.index()] = value;
    }

    /// Adds `value` to a reason, making it observable.
    pub fn add(&mut self, reason: ExitReason, value: u64) {
        let slot = &mut self.counts[reason.index()];
        *slot = Some(slot.unwrap_or(0) + value);
    }

    /// The reasons with their counts, in table order.
    pub fn iter(&self) -> impl Iterator<Item = (ExitReason, Option<u64>)> + '_ {
        ExitReason::ALL.iter().map(|&r| (r, self.get(r)))
    }
}

/// Where a vCPU's exit statistics can be read from any thread while the
/// vCPU runs (for `--stats`, the metrics and `ferrovisor stat`).
pub trait ExitStatsSource: Send + Sync {
    fn exit_stats(&self) -> ExitStats;

    /// The accelerator's own counters besides exits, as (name, value) in
    /// display order: what this backend has (emu: its soft TLB and code
    /// cache), nothing by default. Names differ between backends.
    fn accel_counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

impl ExitStatsSource for ExitCounters {
    fn exit_stats(&self) -> ExitStats {
        self.snapshot()
    }
}

/// Lock-free exit counters a backend bumps from its vCPU thread and the VMM
/// reads from any thread.
#[derive(Debug)]
pub struct ExitCounters {
    counts: [AtomicU64; ExitReason::COUNT],
}

impl Default for ExitCounters {
    fn default() -> Self {
        ExitCounters {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

impl ExitCounters {
    /// Counts one exit of `reason` (and one in [`ExitReason::Total`]).
    ///
    /// Total is counted first and read last (release/acquire), so a
    /// reader on another thread never sees a reason's count above the
    /// total.
    pub fn inc(&self, reason: ExitReason) {
        self.counts[ExitReason::Total.index()].fetch_add(1, Ordering::Release);
        self.counts[reason.index()].fetch_add(1, Ordering::Release);
    }

    pub fn get(&self, reason: ExitReason) -> u64 {
        self.counts[reason.index()].load(Ordering::Acquire)
    }

    /// A snapshot in which every reason is observable, and no reason
    /// above the total.
    pub fn snapshot(&self) -> ExitStats {
        let mut stats = ExitStats::default();
        for reason in ExitReason::ALL
            .into_iter()
            .filter(|&r| r != ExitReason::Total)
        {
            stats.set(reason, Some(self.get(reason)));
        }
        stats.set(ExitReason::Total, Some(self.get(ExitReason::Total)));
        stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_count_by_reason_and_total() {
        let counters = ExitCounters::default();
        counters.inc(ExitReason::Io);
        counters.inc(ExitReason::Io);
        counters.inc(ExitReason::Hlt);
        let stats = counters.snapshot();
        assert_eq!(stats.get(ExitReason::Io), Some(2));
        assert_eq!(stats.get(ExitReason::Hlt), Some(1));
        assert_eq!(stats.get(ExitReason::Mmio), Some(0));
        assert_eq!(stats.get(ExitReason::Total), Some(3));
    }

    #[test]
    fn reasons_have_distinct_names_in_index_order() {
        for (i, r) in ExitReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
        let mut names: Vec<_> = ExitReason::ALL.iter().map(|r| r.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), ExitReason::COUNT);
    }

    #[test]
    fn unobservable_reasons_stay_none() {
        let mut stats = ExitStats::default();
        stats.add(ExitReason::Mmio, 4);
        assert_eq!(stats.get(ExitReason::Mmio), Some(4));
        assert_eq!(stats.get(ExitReason::Cpuid), None);
    }
}
