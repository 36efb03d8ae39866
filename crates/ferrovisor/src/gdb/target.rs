//! The machine as gdbstub's [`Target`]: one thread per vCPU, registers and
//! memory read and written through the paused vCPUs, software breakpoints
//! as INT3 bytes in guest RAM, hardware breakpoints and watchpoints in the
//! debugger's own four slots, and resume (continue or step) through the
//! machine's pause.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use gdbstub::common::{Signal, Tid};
use gdbstub::target::ext::base::multithread::{
    MultiThreadBase, MultiThreadResume, MultiThreadResumeOps, MultiThreadSchedulerLocking,
    MultiThreadSchedulerLockingOps, MultiThreadSingleStep, MultiThreadSingleStepOps,
};
use gdbstub::target::ext::base::BaseOps;
use gdbstub::target::ext::breakpoints::{
    Breakpoints, BreakpointsOps, HwBreakpoint as GdbHwBreakpoint, HwBreakpointOps, HwWatchpoint,
    HwWatchpointOps, SwBreakpoint, SwBreakpointOps, WatchKind,
};
use gdbstub::target::{Target, TargetError, TargetResult};
use hv::{GuestDebug, HwBreakpoint, HwKind};
use vm_memory::{Bytes, GuestAddress};
use vmm::controller::Command;
use vmm::debug::MachineDebug;

use super::arch::{Regs, X86_64System};
use super::regs;

/// The largest gdb memory access served at once (gdbstub splits reads to
/// its packet buffer; this bounds a write's translation work too).
const MAX_ACCESS: usize = 1 << 20;

/// INT3.
const INT3: u8 = 0xcc;

/// A software breakpoint gdb inserted: where the INT3 went, and the byte
/// it replaced.
#[derive(Debug, Clone, Copy)]
struct SwBp {
    gpa: u64,
    orig: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Continue,
    Step,
}

/// The machine, as gdb debugs it.
pub struct GdbTarget {
    pub(super) debug: MachineDebug,
    sw: BTreeMap<u64, SwBp>,
    hw: [Option<HwBreakpoint>; hv::debug::HW_BREAKPOINTS],
    actions: Vec<Option<Action>>,
}

/// vCPU id → gdb thread id (1-based).
pub fn tid(vcpu: u32) -> Tid {
    NonZeroUsize::new(vcpu as usize + 1).unwrap_or(NonZeroUsize::MIN)
}

fn vcpu_of(tid: Tid) -> u32 {
    (tid.get() - 1) as u32
}

fn nonfatal<T>(e: impl std::fmt::Display) -> TargetResult<T, GdbTarget> {
    tracing::debug!(error = %e, "gdb request refused");
    Err(TargetError::NonFatal)
}

impl GdbTarget {
    pub fn new(debug: MachineDebug) -> GdbTarget {
        let n = debug.vcpus() as usize;
        GdbTarget {
            debug,
            sw: BTreeMap::new(),
            hw: [None; hv::debug::HW_BREAKPOINTS],
            actions: vec![None; n],
        }
    }

    /// The guest-physical address of linear `addr` on `vcpu`.
    fn translate(&self, vcpu: u32, addr: u64) -> Result<Option<u64>, String> {
        self.debug
            .with_vcpu(vcpu, move |v| v.translate_gva(addr))
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }

    /// Calls `f` with (guest-physical address, offset in the access,
    /// length) for each page-sized piece of [addr, addr+len) that is
    /// mapped, up to the first one that is not; returns the bytes done.
    fn each_page(
        &self,
        vcpu: u32,
        addr: u64,
        len: usize,
        mut f: impl FnMut(u64, usize, usize) -> bool,
    ) -> Result<usize, String> {
        let mut done = 0;
        while done < len {
            let lin = addr.wrapping_add(done as u64);
            let n = (0x1000 - (lin & 0xfff) as usize).min(len - done);
            let Some(gpa) = self.translate(vcpu, lin)? else {
                break;
            };
            if !f(gpa, done, n) {
                break;
            }
            done += n;
        }
        Ok(done)
    }

    /// The settings every vCPU gets on resume.
    fn guest_debug(&self, action: Option<Action>) -> GuestDebug {
        GuestDebug {
            single_step: action == Some(Action::Step),
            sw_breakpoints: !self.sw.is_empty(),
            hw: self.hw,
        }
    }

    /// Puts back the bytes the INT3s replaced and turns debugging off on
    /// every vCPU (gdb detached; the machine is paused).
    pub fn release(&mut self) {
        for (_, bp) in std::mem::take(&mut self.sw) {
            self.poke(bp.gpa, bp.orig);
        }
        self.hw = [None; hv::debug::HW_BREAKPOINTS];
        for id in 0..self.debug.vcpus() {
            let _ = self
                .debug
                .with_vcpu(id, |v| v.set_guest_debug(&GuestDebug::default()));
        }
    }

    fn poke(&self, gpa: u64, byte: u8) -> bool {
        let ok = self
            .debug
            .memory()
            .write_slice(&[byte], GuestAddress(gpa))
            .is_ok();
        self.debug.note_guest_write(gpa, 1);
        ok
    }

    /// The stop reason for a debugger stop of vCPU `id`.
    pub fn stop_reason(
        &self,
        id: u32,
        cause: hv::DebugCause,
    ) -> gdbstub::stub::MultiThreadStopReason<u64> {
        use gdbstub::stub::MultiThreadStopReason as R;
        let tid = tid(id);
        match cause {
            hv::DebugCause::SwBreakpoint => R::SwBreak(tid),
            hv::DebugCause::HwBreakpoint { .. } => R::HwBreak(tid),
            hv::DebugCause::Watchpoint { slot } => match self.hw.get(slot).copied().flatten() {
                Some(bp) => R::Watch {
                    tid,
                    kind: match bp.kind {
                        HwKind::Write => WatchKind::Write,
                        _ => WatchKind::ReadWrite,
                    },
                    addr: bp.addr,
                },
                None => R::SignalWithThread {
                    tid,
                    signal: Signal::SIGTRAP,
                },
            },
            hv::DebugCause::SingleStep => R::SignalWithThread {
                tid,
                signal: Signal::SIGTRAP,
            },
        }
    }
}

impl Target for GdbTarget {
    type Arch = X86_64System;
    type Error = String;

    fn base_ops(&mut self) -> BaseOps<'_, X86_64System, String> {
        BaseOps::MultiThread(self)
    }

    fn support_breakpoints(&mut self) -> Option<BreakpointsOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadBase for GdbTarget {
    fn read_registers(&mut self, out: &mut Regs, tid: Tid) -> TargetResult<(), Self> {
        match self.debug.with_vcpu(vcpu_of(tid), regs::read) {
            Ok(Ok(r)) => {
                *out = r;
                Ok(())
            }
            Ok(Err(e)) => nonfatal(e),
            Err(e) => nonfatal(e),
        }
    }

    fn write_registers(&mut self, r: &Regs, tid: Tid) -> TargetResult<(), Self> {
        let r = r.clone();
        match self
            .debug
            .with_vcpu(vcpu_of(tid), move |v| regs::write(v, &r))
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => nonfatal(e),
            Err(e) => nonfatal(e),
        }
    }

    fn read_addrs(&mut self, addr: u64, data: &mut [u8], tid: Tid) -> TargetResult<usize, Self> {
        let len = data.len().min(MAX_ACCESS);
        let mem = self.debug.memory().clone();
        let done = self.each_page(vcpu_of(tid), addr, len, |gpa, at, n| {
            mem.read_slice(&mut data[at..at + n], GuestAddress(gpa))
                .is_ok()
        });
        match done {
            Ok(0) => nonfatal(format_args!("cannot read guest memory at {addr:#x}")),
            Ok(n) => Ok(n),
            Err(e) => nonfatal(e),
        }
    }

    fn write_addrs(&mut self, addr: u64, data: &[u8], tid: Tid) -> TargetResult<(), Self> {
        if data.len() > MAX_ACCESS {
            return nonfatal("write too large");
        }
        let mem = self.debug.memory().clone();
        let debug = self.debug.clone();
        let done = self.each_page(vcpu_of(tid), addr, data.len(), |gpa, at, n| {
            let ok = mem
                .write_slice(&data[at..at + n], GuestAddress(gpa))
                .is_ok();
            debug.note_guest_write(gpa, n as u64);
            ok
        });
        match done {
            Ok(n) if n == data.len() => Ok(()),
            Ok(_) => nonfatal(format_args!("cannot write guest memory at {addr:#x}")),
            Err(e) => nonfatal(e),
        }
    }

    fn list_active_threads(&mut self, active: &mut dyn FnMut(Tid)) -> Result<(), String> {
        for id in 0..self.debug.vcpus() {
            active(tid(id));
        }
        Ok(())
    }

    fn support_resume(&mut self) -> Option<MultiThreadResumeOps<'_, Self>> {
        Some(self)
    }
}

impl MultiThreadResume for GdbTarget {
    fn resume(&mut self) -> Result<(), String> {
        // Every vCPU runs (the machine resumes as a whole); those gdb asked
        // to step stop after one instruction.
        for id in 0..self.debug.vcpus() {
            let d = self.guest_debug(self.actions[id as usize]);
            self.debug
                .with_vcpu(id, move |v| v.set_guest_debug(&d))
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("vCPU {id}: {e}"))?;
        }
        self.debug.clear_stops();
        self.debug
            .handle()
            .send(Command::Resume)
            .map_err(|e| e.to_string())
    }

    fn clear_resume_actions(&mut self) -> Result<(), String> {
        self.actions.fill(None);
        Ok(())
    }

    fn set_resume_action_continue(&mut self, tid: Tid, _: Option<Signal>) -> Result<(), String> {
        if let Some(a) = self.actions.get_mut(vcpu_of(tid) as usize) {
            *a = Some(Action::Continue);
        }
        Ok(())
    }

    fn support_single_step(&mut self) -> Option<MultiThreadSingleStepOps<'_, Self>> {
        Some(self)
    }

    fn support_scheduler_locking(&mut self) -> Option<MultiThreadSchedulerLockingOps<'_, Self>> {
        Some(self)
    }
}

/// gdb steps one thread and names no action for the others (`vCont;s:1`):
/// the machine resumes as a whole, so they run too, as with gdb's
/// `scheduler-locking off`.
impl MultiThreadSchedulerLocking for GdbTarget {
    fn set_resume_action_scheduler_lock(&mut self) -> Result<(), String> {
        Ok(())
    }
}

impl MultiThreadSingleStep for GdbTarget {
    fn set_resume_action_step(&mut self, tid: Tid, _: Option<Signal>) -> Result<(), String> {
        if let Some(a) = self.actions.get_mut(vcpu_of(tid) as usize) {
            *a = Some(Action::Step);
        }
        Ok(())
    }
}

impl Breakpoints for GdbTarget {
    fn support_sw_breakpoint(&mut self) -> Option<SwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_breakpoint(&mut self) -> Option<HwBreakpointOps<'_, Self>> {
        Some(self)
    }
    fn support_hw_watchpoint(&mut self) -> Option<HwWatchpointOps<'_, Self>> {
        Some(self)
    }
}

impl SwBreakpoint for GdbTarget {
    fn add_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        if self.sw.contains_key(&addr) {
            return Ok(true);
        }
        // Kernel and identity-mapped code: the same on every vCPU.
        let gpa = match self.translate(0, addr) {
            Ok(Some(gpa)) => gpa,
            Ok(None) => return Ok(false),
            Err(e) => return nonfatal(e),
        };
        let mut orig = [0u8];
        if self
            .debug
            .memory()
            .read_slice(&mut orig, GuestAddress(gpa))
            .is_err()
            || !self.poke(gpa, INT3)
        {
            return Ok(false);
        }
        self.sw.insert(addr, SwBp { gpa, orig: orig[0] });
        Ok(true)
    }

    fn remove_sw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        match self.sw.remove(&addr) {
            Some(bp) => Ok(self.poke(bp.gpa, bp.orig)),
            None => Ok(false),
        }
    }
}

impl GdbTarget {
    fn add_hw(&mut self, bp: HwBreakpoint) -> bool {
        if !bp.is_valid() {
            return false;
        }
        if self.hw.contains(&Some(bp)) {
            return true;
        }
        match self.hw.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(bp);
                true
            }
            None => false,
        }
    }

    fn remove_hw(&mut self, bp: HwBreakpoint) -> bool {
        match self.hw.iter_mut().find(|s| **s == Some(bp)) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        }
    }
}

fn watchpoint(addr: u64, len: u64, kind: WatchKind) -> HwBreakpoint {
    HwBreakpoint {
        addr,
        kind: match kind {
            WatchKind::Write => HwKind::Write,
            // x86 has no read-only data breakpoint: reads and writes.
            WatchKind::Read | WatchKind::ReadWrite => HwKind::Access,
        },
        len: u8::try_from(len).unwrap_or(0),
    }
}

impl GdbHwBreakpoint for GdbTarget {
    fn add_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.add_hw(HwBreakpoint {
            addr,
            kind: HwKind::Exec,
            len: 1,
        }))
    }

    fn remove_hw_breakpoint(&mut self, addr: u64, _kind: usize) -> TargetResult<bool, Self> {
        Ok(self.remove_hw(HwBreakpoint {
            addr,
            kind: HwKind::Exec,
            len: 1,
        }))
    }
}

impl HwWatchpoint for GdbTarget {
    fn add_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.add_hw(watchpoint(addr, len, kind)))
    }

    fn remove_hw_watchpoint(
        &mut self,
        addr: u64,
        len: u64,
        kind: WatchKind,
    ) -> TargetResult<bool, Self> {
        Ok(self.remove_hw(watchpoint(addr, len, kind)))
    }
}
