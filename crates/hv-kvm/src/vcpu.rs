//! A KVM vCPU: state access, the KVM_RUN loop, exit accounting.

use std::sync::Arc;

use hv::{
    CpuidEntry, ExitCounters, ExitReason, ExitStats, Fpu, HvError, IoHandler, Kicker, MpState, Msr,
    Regs, SRegs, Vcpu, VcpuExit,
};
use kvm_bindings::{
    kvm_mp_state, CpuId, Msrs, KVM_INTERNAL_ERROR_DELIVERY_EV, KVM_INTERNAL_ERROR_EMULATION,
    KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES, KVM_INTERNAL_ERROR_SIMUL_EX,
    KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON, KVM_MP_STATE_HALTED, KVM_MP_STATE_INIT_RECEIVED,
    KVM_MP_STATE_RUNNABLE, KVM_MP_STATE_SIPI_RECEIVED, KVM_MP_STATE_UNINITIALIZED,
    KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN,
};
use kvm_ioctls::{VcpuExit as KvmExit, VcpuFd};

use crate::convert;
use crate::error::os;
use crate::hypervisor::HostCaps;
use crate::kick::{self, KickState, RunGuard};
use crate::stats::BinaryStats;
use crate::vm::VmShared;
use crate::xsave::XsaveArea;

/// Userspace-observed reasons reported as counted (Hlt is not among them:
/// with the in-kernel irqchip KVM handles HLT itself, so a userspace count
/// would be a false zero; it comes from the binary stats when available).
const USERSPACE_REASONS: [ExitReason; 5] = [
    ExitReason::Io,
    ExitReason::Mmio,
    ExitReason::Shutdown,
    ExitReason::Signal,
    ExitReason::Total,
];

/// A vCPU on `/dev/kvm`. Field order matters: the vCPU fd closes before the
/// VM's shared state, which holds the guest memory (the stats fd in `exits`
/// may outlive both: it holds no guest memory).
pub(crate) struct KvmVcpu {
    pub(crate) fd: VcpuFd,
    /// The exit counts: userspace's and KVM's binary stats.
    exits: Arc<KvmExitStats>,
    id: u32,
    kick: Arc<KickState>,
    /// x87/SSE state goes through KVM_GET/SET_XSAVE (see `xsave`).
    xsave: bool,
    pub(crate) vm: Arc<VmShared>,
    /// What the debugger set (KVM_SET_GUEST_DEBUG), to name a stop's cause.
    debug: hv::GuestDebug,
}

/// What one KVM_RUN came back with, after the borrow of the kvm_run
/// mapping that kvm-ioctls hands out has ended.
enum Step {
    /// Handled (nothing to do): enter the guest again.
    Continue,
    /// An MMIO access, served: enter the guest again.
    Mmio,
    /// Port I/O: `data` (size * count bytes) lives in the kvm_run mapping.
    Io {
        port: u16,
        data: *mut u8,
        len: usize,
        input: bool,
    },
    /// KVM_RUN returned EINTR/EAGAIN.
    Interrupted,
    Exit(VcpuExit),
    Fail(HvError),
}

impl KvmVcpu {
    pub fn new(id: u32, fd: VcpuFd, vm: Arc<VmShared>, caps: &HostCaps) -> KvmVcpu {
        let stats = if caps.binary_stats {
            match BinaryStats::open(&fd) {
                Ok(stats) => Some(stats),
                Err(e) => {
                    tracing::debug!(vcpu = id, error = %e, "KVM binary stats unavailable");
                    None
                }
            }
        } else {
            None
        };
        KvmVcpu {
            fd,
            exits: Arc::new(KvmExitStats {
                id,
                stats,
                counters: ExitCounters::default(),
            }),
            id,
            kick: Arc::new(KickState::default()),
            xsave: caps.xsave,
            vm,
            debug: hv::GuestDebug::default(),
        }
    }

    /// KVM_GET_MSRS: reads `msrs` up to the first one KVM refuses and
    /// returns how many it read.
    pub(crate) fn read_msrs(&self, msrs: &mut [Msr]) -> Result<usize, HvError> {
        if msrs.is_empty() {
            return Ok(0);
        }
        let entries: Vec<_> = msrs.iter().map(convert::msr_to_kvm).collect();
        let mut kmsrs = Msrs::from_entries(&entries).map_err(|_| too_many_msrs(msrs.len()))?;
        let done = self.fd.get_msrs(&mut kmsrs).map_err(os("KVM_GET_MSRS"))?;
        for (msr, entry) in msrs.iter_mut().zip(kmsrs.as_slice()).take(done) {
            msr.data = entry.data;
        }
        Ok(done)
    }

    /// Serves port I/O: `count` accesses of `size` bytes each (string I/O
    /// moves several at once).
    fn port_io(
        &mut self,
        io: &dyn IoHandler,
        port: u16,
        data: *mut u8,
        len: usize,
        input: bool,
    ) -> Result<(), HvError> {
        // SAFETY: the exit reason is KVM_EXIT_IO (kvm-ioctls returned
        // IoIn/IoOut), so `io` is the active union member.
        let kio = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.io };
        let size = usize::from(kio.size);
        if !matches!(size, 1 | 2 | 4) || size * kio.count as usize != len {
            return Err(HvError::GuestFailure(format!(
                "KVM_EXIT_IO with size {} count {} ({} bytes of data)",
                kio.size, kio.count, len
            )));
        }
        if tracepoints::enabled(tracepoints::Event::KvmExit) {
            let qual = tracepoints::VmxExit::io_qualification(
                port,
                size as u32,
                input,
                kio.count > 1,
                kio.count > 1,
            );
            self.trace_exit(tracepoints::VmxExit::IoInstruction, qual);
        }
        // `data`/`len` is the slice kvm-ioctls built for this exit: inside
        // the vCPU's kvm_run mapping at io.data_offset (past the kvm_run
        // struct the reference above covered), which lives as long as
        // `self.fd`; nothing else refers to it until the next KVM_RUN.
        if input {
            // SAFETY: see above; kvm-ioctls handed this IN buffer out as
            // `&mut [u8]` of exactly `len` bytes.
            let data = unsafe { std::slice::from_raw_parts_mut(data, len) };
            for element in data.chunks_exact_mut(size) {
                io.pio_read(port, element);
            }
            tracepoints::kvm_pio(
                false,
                port,
                size as u32,
                kio.count,
                le_value(&data[..size]) as u32,
            );
        } else {
            // SAFETY: see above; kvm-ioctls handed this OUT buffer out as
            // `&[u8]` of exactly `len` bytes, and it is only read here.
            let data = unsafe { std::slice::from_raw_parts(data.cast_const(), len) };
            tracepoints::kvm_pio(
                true,
                port,
                size as u32,
                kio.count,
                le_value(&data[..size]) as u32,
            );
            for element in data.chunks_exact(size) {
                io.pio_write(port, element);
            }
        }
        Ok(())
    }

    /// One KVM_RUN, classified.
    fn run_once(&mut self, io: &dyn IoHandler) -> Step {
        match self.fd.run() {
            Ok(KvmExit::IoIn(port, data)) => Step::Io {
                port,
                len: data.len(),
                data: data.as_mut_ptr(),
                input: true,
            },
            Ok(KvmExit::IoOut(port, data)) => Step::Io {
                port,
                len: data.len(),
                // Only read (see port_io); *mut just to share the variant.
                data: data.as_ptr().cast_mut(),
                input: false,
            },
            Ok(KvmExit::MmioRead(gpa, data)) => {
                self.exits.counters.inc(ExitReason::Mmio);
                io.mmio_read(gpa, data);
                tracepoints::kvm_mmio(false, data.len() as u32, gpa, le_value(data));
                Step::Mmio
            }
            Ok(KvmExit::MmioWrite(gpa, data)) => {
                self.exits.counters.inc(ExitReason::Mmio);
                tracepoints::kvm_mmio(true, data.len() as u32, gpa, le_value(data));
                io.mmio_write(gpa, data);
                Step::Mmio
            }
            Ok(KvmExit::Hlt) => {
                self.exits.counters.inc(ExitReason::Hlt);
                Step::Exit(VcpuExit::Halt)
            }
            Ok(KvmExit::Shutdown) => {
                self.exits.counters.inc(ExitReason::Shutdown);
                Step::Exit(VcpuExit::Shutdown)
            }
            Ok(KvmExit::SystemEvent(kind, data)) => match kind {
                KVM_SYSTEM_EVENT_RESET => Step::Exit(VcpuExit::Reset),
                KVM_SYSTEM_EVENT_SHUTDOWN => Step::Exit(VcpuExit::PowerOff),
                KVM_SYSTEM_EVENT_CRASH => Step::Fail(HvError::GuestFailure(format!(
                    "guest crashed (KVM_SYSTEM_EVENT_CRASH, data {data:x?})"
                ))),
                other => Step::Fail(HvError::GuestFailure(format!(
                    "unhandled KVM_EXIT_SYSTEM_EVENT type {other} (data {data:x?})"
                ))),
            },
            Ok(KvmExit::Debug(arch)) => match crate::guest_debug::cause(&arch, &self.debug) {
                Some(cause) => Step::Exit(VcpuExit::Debug(cause)),
                None => Step::Fail(HvError::GuestFailure(format!(
                    "KVM_EXIT_DEBUG for exception {} nobody asked for",
                    arch.exception
                ))),
            },
            // Only when requested (we never ask for an interrupt window).
            Ok(KvmExit::IrqWindowOpen) => Step::Continue,
            Ok(KvmExit::Intr) => Step::Interrupted,
            Ok(KvmExit::FailEntry(reason, cpu)) => Step::Fail(HvError::GuestFailure(format!(
                "KVM_EXIT_FAIL_ENTRY: hardware entry failure reason {reason:#x} on host cpu {cpu}"
            ))),
            Ok(KvmExit::InternalError) => Step::Fail(HvError::GuestFailure(self.internal_error())),
            Ok(KvmExit::Unknown) => {
                // SAFETY: exit reason KVM_EXIT_UNKNOWN: `hw` is the active member.
                let hw = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.hw };
                Step::Fail(HvError::GuestFailure(format!(
                    "KVM_EXIT_UNKNOWN: hardware exit reason {:#x}",
                    hw.hardware_exit_reason
                )))
            }
            Ok(KvmExit::Exception) => {
                // SAFETY: exit reason KVM_EXIT_EXCEPTION: `ex` is the active member.
                let ex = unsafe { self.fd.get_kvm_run().__bindgen_anon_1.ex };
                Step::Fail(HvError::GuestFailure(format!(
                    "KVM_EXIT_EXCEPTION: exception {} error code {:#x}",
                    ex.exception, ex.error_code
                )))
            }
            Ok(KvmExit::MemoryFault { flags, gpa, size }) => Step::Fail(HvError::GuestFailure(
                format!("KVM_EXIT_MEMORY_FAULT at {gpa:#x} size {size:#x} flags {flags:#x}"),
            )),
            Ok(KvmExit::Unsupported(reason)) => Step::Fail(HvError::GuestFailure(format!(
                "unsupported KVM exit reason {reason}"
            ))),
            Ok(other) => Step::Fail(HvError::GuestFailure(format!(
                "unexpected KVM exit {other:?}"
            ))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Step::Interrupted,
            Err(e) => Step::Fail(crate::error::os_error("KVM_RUN", e)),
        }
    }

    /// `kvm_exit` at the guest's current RIP (read only while tracing).
    fn trace_exit(&self, reason: tracepoints::VmxExit, info1: u64) {
        let rip = self.fd.get_regs().map_or(0, |r| r.rip);
        tracepoints::kvm_exit(reason, rip, info1, 0);
    }

    /// `kvm_userspace_exit` (and `kvm_exit`) for what KVM_RUN returned with.
    /// Port I/O has its own `kvm_exit` with the exit qualification.
    fn trace_step(&self, step: &Step) {
        use tracepoints::{kvm_exit, VmxExit};
        if !tracepoints::enabled(tracepoints::Event::KvmUserspaceExit)
            && !tracepoints::enabled(tracepoints::Event::KvmExit)
        {
            return;
        }
        let (reason, vmx) = match step {
            Step::Continue | Step::Fail(_) => return,
            Step::Io { .. } => (kvm_exit::IO, None),
            Step::Mmio => (kvm_exit::MMIO, Some(VmxExit::EptMisconfig)),
            Step::Interrupted => {
                tracepoints::kvm_userspace_exit(0, -libc::EINTR);
                return;
            }
            Step::Exit(VcpuExit::Halt) => (kvm_exit::HLT, Some(VmxExit::Hlt)),
            Step::Exit(VcpuExit::Shutdown) => (kvm_exit::SHUTDOWN, Some(VmxExit::TripleFault)),
            Step::Exit(VcpuExit::Reset | VcpuExit::PowerOff) => (kvm_exit::SYSTEM_EVENT, None),
            Step::Exit(VcpuExit::Debug(_)) => (kvm_exit::DEBUG, None),
            Step::Exit(VcpuExit::Interrupted) => (kvm_exit::INTR, None),
        };
        tracepoints::kvm_userspace_exit(reason, 0);
        if let Some(vmx) = vmx.filter(|_| tracepoints::enabled(tracepoints::Event::KvmExit)) {
            self.trace_exit(vmx, 0);
        }
    }

    /// The message for KVM_EXIT_INTERNAL_ERROR: suberror and its data.
    fn internal_error(&mut self) -> String {
        let run = self.fd.get_kvm_run();
        // SAFETY: exit reason KVM_EXIT_INTERNAL_ERROR: `internal` is the
        // active member (and `emulation_failure` overlays it for the
        // EMULATION suberror).
        let internal = unsafe { run.__bindgen_anon_1.internal };
        let name = match internal.suberror {
            KVM_INTERNAL_ERROR_EMULATION => "emulation failure",
            KVM_INTERNAL_ERROR_SIMUL_EX => "exception while delivering an exception",
            KVM_INTERNAL_ERROR_DELIVERY_EV => "event delivery failed",
            KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON => "unexpected exit reason",
            _ => "unknown suberror",
        };
        let ndata = (internal.ndata as usize).min(internal.data.len());
        let mut msg = format!(
            "KVM_EXIT_INTERNAL_ERROR suberror {} ({name}), data {:x?}",
            internal.suberror,
            &internal.data[..ndata]
        );
        if internal.suberror == KVM_INTERNAL_ERROR_EMULATION {
            // SAFETY: as above, for the EMULATION suberror.
            let emu = unsafe { run.__bindgen_anon_1.emulation_failure };
            if emu.ndata >= 3
                && emu.flags & u64::from(KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES) != 0
            {
                // SAFETY: the flag says the instruction bytes are valid.
                let insn = unsafe { emu.__bindgen_anon_1.__bindgen_anon_1 };
                let len = usize::from(insn.insn_size).min(insn.insn_bytes.len());
                msg.push_str(&format!(
                    ", instruction bytes {:02x?}",
                    &insn.insn_bytes[..len]
                ));
            }
        }
        msg
    }
}

impl Vcpu for KvmVcpu {
    fn id(&self) -> u32 {
        self.id
    }

    /// The KVM_RUN loop. Port and MMIO exits are served through `io` and the
    /// guest re-entered; everything else returns. See the `kick` module for
    /// how kicks interrupt it.
    fn run(&mut self, io: &dyn IoHandler) -> Result<VcpuExit, HvError> {
        kick::prepare_thread()?;
        tracepoints::set_vcpu(self.id);
        let kick = Arc::clone(&self.kick);
        let immediate_exit: *mut u8 = &mut self.fd.get_kvm_run().immediate_exit;
        // SAFETY: `immediate_exit` points into this vCPU's kvm_run mapping,
        // owned by `self.fd`, which this `&mut self` call keeps alive (and
        // unmoved: the mapping is not part of `self`) until `_guard` drops
        // at the end of this function; prepare_thread succeeded above.
        let _guard = unsafe { RunGuard::enter(&kick, immediate_exit) };
        loop {
            if kick.pending() {
                self.fd.set_kvm_immediate_exit(1);
            }
            if tracepoints::enabled(tracepoints::Event::KvmEntry) {
                tracepoints::kvm_entry(self.fd.get_regs().map_or(0, |r| r.rip));
            }
            let step = self.run_once(io);
            self.trace_step(&step);
            match step {
                Step::Continue | Step::Mmio => {}
                Step::Io {
                    port,
                    data,
                    len,
                    input,
                } => {
                    self.exits.counters.inc(ExitReason::Io);
                    self.port_io(io, port, data, len, input)?;
                }
                Step::Interrupted => {
                    self.exits.counters.inc(ExitReason::Signal);
                    self.fd.set_kvm_immediate_exit(0);
                    if kick.take() {
                        return Ok(VcpuExit::Interrupted);
                    }
                    // A signal that was not our kick (a late kick meant for
                    // another vCPU this thread ran, or another signal):
                    // re-enter the guest.
                }
                Step::Exit(exit) => return Ok(exit),
                Step::Fail(err) => return Err(err),
            }
        }
    }

    fn kicker(&self) -> Kicker {
        let kick = Arc::clone(&self.kick);
        Kicker::new(move || kick.kick())
    }

    fn get_regs(&self) -> Result<Regs, HvError> {
        let regs = self.fd.get_regs().map_err(os("KVM_GET_REGS"))?;
        Ok(convert::regs_from_kvm(&regs))
    }

    fn set_regs(&mut self, regs: &Regs) -> Result<(), HvError> {
        self.fd
            .set_regs(&convert::regs_to_kvm(regs))
            .map_err(os("KVM_SET_REGS"))
    }

    fn get_sregs(&self) -> Result<SRegs, HvError> {
        let sregs = self.fd.get_sregs().map_err(os("KVM_GET_SREGS"))?;
        Ok(convert::sregs_from_kvm(&sregs))
    }

    fn set_sregs(&mut self, sregs: &SRegs) -> Result<(), HvError> {
        self.fd
            .set_sregs(&convert::sregs_to_kvm(sregs))
            .map_err(os("KVM_SET_SREGS"))
    }

    /// Through KVM_GET_XSAVE where available (see the `xsave` module: it
    /// carries MXCSR, which KVM_GET_FPU does not).
    fn get_fpu(&self) -> Result<Fpu, HvError> {
        if self.xsave {
            return Ok(XsaveArea::get(&self.fd, &self.vm.fd)?.fpu());
        }
        let fpu = self.fd.get_fpu().map_err(os("KVM_GET_FPU"))?;
        Ok(convert::fpu_from_kvm(&fpu))
    }

    /// Through KVM_SET_XSAVE where available, marking x87 and SSE in use so
    /// the guest sees the state (see the `xsave` module).
    fn set_fpu(&mut self, fpu: &Fpu) -> Result<(), HvError> {
        if self.xsave {
            let mut area = XsaveArea::get(&self.fd, &self.vm.fd)?;
            area.set_fpu(fpu);
            return area.set(&self.fd);
        }
        self.fd
            .set_fpu(&convert::fpu_to_kvm(fpu))
            .map_err(os("KVM_SET_FPU"))
    }

    fn get_msrs(&self, msrs: &mut [Msr]) -> Result<(), HvError> {
        let done = self.read_msrs(msrs)?;
        if done < msrs.len() {
            return Err(HvError::InvalidArgument(format!(
                "KVM_GET_MSRS read {done} of {} MSRs; MSR {:#x} is not supported",
                msrs.len(),
                msrs[done].index
            )));
        }
        Ok(())
    }

    fn set_msrs(&mut self, msrs: &[Msr]) -> Result<(), HvError> {
        if msrs.is_empty() {
            return Ok(());
        }
        let entries: Vec<_> = msrs.iter().map(convert::msr_to_kvm).collect();
        let kmsrs = Msrs::from_entries(&entries).map_err(|_| too_many_msrs(msrs.len()))?;
        let done = self.fd.set_msrs(&kmsrs).map_err(os("KVM_SET_MSRS"))?;
        if done < msrs.len() {
            return Err(HvError::InvalidArgument(format!(
                "KVM_SET_MSRS wrote {done} of {} MSRs; MSR {:#x} = {:#x} was refused",
                msrs.len(),
                msrs[done].index,
                msrs[done].data
            )));
        }
        Ok(())
    }

    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<(), HvError> {
        let kentries: Vec<_> = entries.iter().map(convert::cpuid_to_kvm).collect();
        let cpuid = CpuId::from_entries(&kentries).map_err(|_| {
            HvError::InvalidArgument(format!(
                "{} CPUID entries, KVM takes at most {}",
                entries.len(),
                kvm_bindings::KVM_MAX_CPUID_ENTRIES
            ))
        })?;
        self.fd.set_cpuid2(&cpuid).map_err(os("KVM_SET_CPUID2"))
    }

    fn get_mp_state(&self) -> Result<MpState, HvError> {
        let state = self.fd.get_mp_state().map_err(os("KVM_GET_MP_STATE"))?;
        match state.mp_state {
            KVM_MP_STATE_RUNNABLE => Ok(MpState::Runnable),
            KVM_MP_STATE_UNINITIALIZED => Ok(MpState::Uninitialized),
            KVM_MP_STATE_INIT_RECEIVED => Ok(MpState::InitReceived),
            KVM_MP_STATE_HALTED => Ok(MpState::Halted),
            KVM_MP_STATE_SIPI_RECEIVED => Ok(MpState::SipiReceived),
            other => Err(HvError::GuestFailure(format!(
                "KVM_GET_MP_STATE returned unknown state {other}"
            ))),
        }
    }

    fn set_mp_state(&mut self, state: MpState) -> Result<(), HvError> {
        let mp_state = match state {
            MpState::Runnable => KVM_MP_STATE_RUNNABLE,
            MpState::Uninitialized => KVM_MP_STATE_UNINITIALIZED,
            MpState::InitReceived => KVM_MP_STATE_INIT_RECEIVED,
            MpState::Halted => KVM_MP_STATE_HALTED,
            MpState::SipiReceived => KVM_MP_STATE_SIPI_RECEIVED,
        };
        self.fd
            .set_mp_state(kvm_mp_state { mp_state })
            .map_err(os("KVM_SET_MP_STATE"))
    }

    fn exit_stats_source(&self) -> Arc<dyn hv::ExitStatsSource> {
        self.exits.clone()
    }

    fn notify_paused(&mut self) -> Result<(), HvError> {
        self.fd.kvmclock_ctrl().map_err(os("KVM_KVMCLOCK_CTRL"))
    }

    fn save_state(&self) -> Result<hv::VcpuState, HvError> {
        self.save()
    }

    fn restore_state(&mut self, state: &hv::VcpuState) -> Result<(), HvError> {
        self.restore(state)
    }

    fn set_guest_debug(&mut self, debug: &hv::GuestDebug) -> Result<(), HvError> {
        if let Some(bp) = debug.hw.iter().flatten().find(|bp| !bp.is_valid()) {
            return Err(HvError::InvalidArgument(format!(
                "hardware breakpoint {bp:?}"
            )));
        }
        self.fd
            .set_guest_debug(&crate::guest_debug::to_kvm(debug))
            .map_err(|e| crate::error::os_error("KVM_SET_GUEST_DEBUG", e))?;
        self.debug = *debug;
        Ok(())
    }

    fn translate_gva(&mut self, gva: u64) -> Result<Option<u64>, HvError> {
        let t = self
            .fd
            .translate_gva(gva)
            .map_err(|e| crate::error::os_error("KVM_TRANSLATE", e))?;
        Ok((t.valid != 0).then_some(t.physical_address))
    }
}

fn too_many_msrs(n: usize) -> HvError {
    HvError::InvalidArgument(format!(
        "{n} MSRs in one call, KVM takes at most {}",
        kvm_bindings::KVM_MAX_MSR_ENTRIES
    ))
}

/// The little-endian value of an access (at most 8 bytes).
fn le_value(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .take(8)
        .rev()
        .fold(0, |v, &b| v << 8 | u64::from(b))
}

/// A vCPU's exit counts, readable from any thread.
struct KvmExitStats {
    id: u32,
    stats: Option<BinaryStats>,
    counters: ExitCounters,
}

impl hv::ExitStatsSource for KvmExitStats {
    /// Userspace counts for Io, Mmio, Shutdown, Signal and Total. Where the
    /// host has binary stats, KVM's counters add Hlt, ExternalInterrupt,
    /// InterruptWindow, IrqInjection, InsnEmulation(Fail), Hypercall and
    /// PageFault, and for the reasons both sides see, the larger count
    /// wins: KVM's includes exits it handled in the kernel, while some
    /// hosts' KVM does not count a reason at all (nested kvm_pvm reports
    /// io_exits = 0 and does not count immediate-exit kicks in
    /// signal_exits). Everything else stays `None`.
    fn exit_stats(&self) -> ExitStats {
        let mut stats = ExitStats::default();
        for reason in USERSPACE_REASONS {
            stats.set(reason, Some(self.counters.get(reason)));
        }
        if let Some(binary) = &self.stats {
            match binary.read() {
                Ok(values) => {
                    for (reason, value) in values {
                        let merged = stats.get(reason).map_or(value, |seen| seen.max(value));
                        stats.set(reason, Some(merged));
                    }
                }
                Err(e) => {
                    tracing::debug!(vcpu = self.id, error = %e, "reading KVM binary stats failed");
                }
            }
        }
        stats
    }
}
