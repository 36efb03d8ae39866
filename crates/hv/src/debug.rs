//! Guest debugging by the VMM (a gdb stub): single-step, software
//! breakpoints (INT3 stops the vCPU instead of reaching the guest), and up
//! to four hardware breakpoints and watchpoints. These belong to the
//! debugger: the guest's own DR0-DR7 and RFLAGS.TF are left alone
//! (KVM_SET_GUEST_DEBUG).

/// How many hardware breakpoints and watchpoints a vCPU has.
pub const HW_BREAKPOINTS: usize = 4;

/// What a hardware breakpoint watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HwKind {
    /// An instruction fetch at the address.
    Exec,
    /// A write to the range.
    Write,
    /// A read or write of the range.
    Access,
}

/// One hardware breakpoint or watchpoint, at a guest-linear address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HwBreakpoint {
    pub addr: u64,
    pub kind: HwKind,
    /// 1, 2, 4 or 8 bytes (1 for `Exec`); the address is aligned to it.
    pub len: u8,
}

impl HwBreakpoint {
    /// Whether the length is one x86 debug registers can watch, and the
    /// address is aligned to it.
    pub fn is_valid(&self) -> bool {
        match self.kind {
            HwKind::Exec => self.len == 1,
            HwKind::Write | HwKind::Access => {
                matches!(self.len, 1 | 2 | 4 | 8) && self.addr.is_multiple_of(u64::from(self.len))
            }
        }
    }
}

/// The debugger's wishes for one vCPU ([`crate::Vcpu::set_guest_debug`]).
/// The default is no debugging at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GuestDebug {
    /// Stop after each instruction.
    pub single_step: bool,
    /// INT3 stops the vCPU (RIP at the INT3) instead of raising #BP.
    pub sw_breakpoints: bool,
    /// The hardware breakpoints, by slot.
    pub hw: [Option<HwBreakpoint>; HW_BREAKPOINTS],
}

impl GuestDebug {
    /// Whether anything is asked for.
    pub fn is_enabled(&self) -> bool {
        self.single_step || self.sw_breakpoints || self.hw.iter().any(Option::is_some)
    }
}

/// Why a vCPU stopped for the debugger ([`crate::VcpuExit::Debug`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DebugCause {
    /// One instruction ran with [`GuestDebug::single_step`].
    SingleStep,
    /// An INT3 at RIP.
    SwBreakpoint,
    /// Hardware breakpoint `slot` (an instruction breakpoint, at RIP).
    HwBreakpoint { slot: usize },
    /// Watchpoint `slot` was hit by the instruction that just ran.
    Watchpoint { slot: usize },
}
