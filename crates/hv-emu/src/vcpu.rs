//! An emu vCPU: an [`x86::Cpu`] run on the caller's thread, with its local
//! APIC, its memory view, interrupt injection at instruction boundaries,
//! its sleep in HLT, and the kicks, interrupts and TLB synchronisations
//! other threads send it.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use hv::{
    CpuidEntry, ExitCounters, ExitReason, Fpu, HvError, IoEventAddress, IoHandler, Kicker, MpState,
    Msr, Regs, SRegs, Vcpu, VcpuExit,
};
use irqchip::lapic::{Lapic, LapicAction};
use x86::{Bus, Cpu, CpuExit, CpuSignals, RamRef};

use crate::memory::SlotList;
use crate::platform::{lock, IOAPIC_BASE, IOAPIC_SIZE};
use crate::vm::VmShared;

/// How long a memory-map change waits for a running vCPU to drop its
/// cached translations before it gives up and logs (a vCPU stuck in a
/// device callback that waits on the caller would otherwise deadlock).
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

/// Instructions between two looks at the clock and the interrupt
/// controllers while the guest runs (well under a millisecond).
const SLICE: u64 = 32_768;

/// The TSC frequency of the emu CPU model (CPUID leaf 0x15 says so).
pub const TSC_HZ: u64 = 1_000_000_000;

#[derive(Debug)]
struct RunState {
    /// A thread is inside `run`.
    running_on: Option<ThreadId>,
    /// A kick is pending: `run` returns `Interrupted`.
    kicked: bool,
    /// TLB synchronisations requested and acknowledged.
    sync_requested: u64,
    sync_acked: u64,
    mp_state: MpState,
    /// INIT arrived: reset the CPU before anything else.
    init_pending: bool,
    /// The vector of the SIPI that started the processor.
    sipi_vector: u8,
}

/// The part of a vCPU other threads reach.
pub(crate) struct VcpuShared {
    pub id: u32,
    signals: Arc<CpuSignals>,
    state: Mutex<RunState>,
    wake: Condvar,
    lapic: Mutex<Lapic>,
    /// NMIs received and not delivered yet (KVM's `nmi_queued`): at most
    /// two count, one to deliver and one to latch while it is handled.
    nmi_pending: AtomicU32,
}

impl VcpuShared {
    pub fn new(id: u32) -> VcpuShared {
        VcpuShared {
            id,
            signals: Arc::new(CpuSignals::default()),
            state: Mutex::new(RunState {
                running_on: None,
                kicked: false,
                sync_requested: 0,
                sync_acked: 0,
                // As on KVM: the bootstrap processor runs, the others wait
                // for INIT/SIPI.
                mp_state: if id == 0 {
                    MpState::Runnable
                } else {
                    MpState::Uninitialized
                },
                init_pending: false,
                sipi_vector: 0,
            }),
            wake: Condvar::new(),
            lapic: Mutex::new(Lapic::new(id, id == 0, TSC_HZ)),
            nmi_pending: AtomicU32::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, RunState> {
        lock(&self.state)
    }

    pub fn lapic(&self) -> MutexGuard<'_, Lapic> {
        lock(&self.lapic)
    }

    fn kick(&self) {
        let mut state = self.lock();
        state.kicked = true;
        self.signals.kick();
        self.wake.notify_all();
    }

    /// Something for the vCPU to look at (an interrupt, an NMI, INIT or
    /// SIPI): wakes it from HLT and ends its current slice.
    pub fn notify_event(&self) {
        let _state = self.lock();
        self.signals.kick();
        self.wake.notify_all();
    }

    pub fn raise_nmi(&self) {
        let _ = self
            .nmi_pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some((n + 1).min(2))
            });
    }

    /// INIT: the processor resets and waits for a SIPI.
    pub fn receive_init(&self) {
        let mut state = self.lock();
        state.init_pending = true;
        state.mp_state = MpState::InitReceived;
    }

    /// SIPI: accepted only while waiting for one. Returns whether it was.
    pub fn receive_sipi(&self, vector: u8) -> bool {
        let mut state = self.lock();
        if state.mp_state != MpState::InitReceived {
            return false;
        }
        state.sipi_vector = vector;
        state.mp_state = MpState::SipiReceived;
        true
    }

    /// The MP state and SIPI vector (a pending INIT reads as
    /// `InitReceived`, which it already set).
    pub fn mp_snapshot(&self) -> (MpState, u8) {
        let state = self.lock();
        (state.mp_state, state.sipi_vector)
    }

    /// Sets the MP state from a snapshot. `InitReceived` resets the CPU
    /// again when it next runs (an INIT is idempotent), in case the INIT
    /// was still pending at the save.
    pub fn restore_mp(&self, mp_state: MpState, sipi_vector: u8) {
        let mut state = self.lock();
        state.mp_state = mp_state;
        state.sipi_vector = sipi_vector;
        state.init_pending = mp_state == MpState::InitReceived;
    }

    /// NMIs received and not delivered yet.
    pub fn nmis_pending(&self) -> u32 {
        self.nmi_pending.load(Ordering::Acquire)
    }

    pub fn set_nmis_pending(&self, n: u32) {
        self.nmi_pending.store(n.min(2), Ordering::Release);
    }

    /// Asks the vCPU to drop its TLB and decoded blocks (counted as `cause`).
    pub fn request_sync(&self, cause: x86::TlbFlush) {
        let mut state = self.lock();
        state.sync_requested += 1;
        self.signals.request_flush(cause);
        // Makes `Cpu::run` return at its next block boundary; `run` tells
        // this apart from a VMM kick by `kicked`.
        self.signals.kick();
        self.wake.notify_all();
    }

    /// Waits until a vCPU that is running has acknowledged the last sync
    /// request. A vCPU outside `run` syncs when it enters.
    pub fn wait_synced(&self) {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        let mut state = self.lock();
        let target = state.sync_requested;
        let me = std::thread::current().id();
        while state.running_on.is_some_and(|t| t != me) && state.sync_acked < target {
            let now = Instant::now();
            if now >= deadline {
                tracing::warn!(
                    vcpu = self.id,
                    "vCPU did not acknowledge a TLB sync in time"
                );
                return;
            }
            state = self
                .wake
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Performs a pending sync on `cpu` (called by the vCPU's own thread).
    fn sync_if_requested(&self, state: &mut RunState, cpu: &mut Cpu) {
        if state.sync_acked < state.sync_requested {
            // Unless `run` already did it at a block boundary since.
            cpu.flush_if_requested();
            state.sync_acked = state.sync_requested;
            self.wake.notify_all();
        }
    }
}

/// The CPU's view of the machine during one `run`: RAM through the memory
/// slots, the LAPIC/IOAPIC/PIC/PIT in the accelerator, everything else
/// through the VMM.
struct EmuBus<'a> {
    vm: &'a VmShared,
    me: &'a VcpuShared,
    slots: Arc<SlotList>,
    generation: u64,
    io: &'a dyn IoHandler,
}

impl EmuBus<'_> {
    fn lapic_action(&self, action: LapicAction) {
        match action {
            LapicAction::None => {}
            LapicAction::SendIpi(ipi) => self.vm.router().send_ipi(self.me.id as usize, &ipi),
            LapicAction::Eoi(vector) => self.vm.router().eoi(vector),
        }
        // A write may have made an interrupt deliverable (a TSC deadline in
        // the past, a lower vector once EOI lowered the priority, a TPR
        // write): the CPU stops at the end of this block to take it.
        if self.me.lapic().pending_vector().is_some() {
            self.me.signals.kick();
        }
    }

    /// The LAPIC page of this vCPU, when `gpa` is in it.
    fn lapic_offset(&self, gpa: u64) -> Option<u64> {
        let lapic = self.me.lapic();
        let base = lapic.mmio_base();
        (lapic.xapic_mmio_enabled() && gpa >= base && gpa < base + 0x1000).then(|| gpa - base)
    }

    fn ioapic_offset(gpa: u64) -> Option<u64> {
        (IOAPIC_BASE..IOAPIC_BASE + IOAPIC_SIZE)
            .contains(&gpa)
            .then(|| gpa - IOAPIC_BASE)
    }
}

fn is_pic_port(port: u16) -> bool {
    matches!(port, 0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1)
}

// SAFETY: `ram` returns pointers into the host mappings of memory slots.
// A slot's mapping lives as long as the VM: slots that are removed or
// replaced are kept in `VmShared::retired`, so a pointer cached in a TLB
// stays valid (it may name stale memory until the vCPU syncs, which every
// slot change requests and waits for). `len` never reaches past the slot.
unsafe impl Bus for EmuBus<'_> {
    #[inline]
    fn ram(&mut self, gpa: u64, write: bool) -> Option<RamRef> {
        let generation = self.vm.generation();
        if generation != self.generation {
            self.slots = self.vm.slots();
            self.generation = generation;
        }
        let slot = self.slots.find(gpa)?;
        if write {
            if slot.read_only {
                return None;
            }
            slot.mark_dirty(gpa);
        }
        let offset = gpa - slot.gpa;
        Some(RamRef {
            // SAFETY: `offset < slot.size`, the length of the mapping at
            // `slot.host`, so the result stays inside the mapping.
            host: unsafe { slot.host.add(offset as usize) },
            len: (slot.size - offset) as usize,
        })
    }

    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) {
        let now = self.vm.platform.now_ns();
        if let Some(offset) = self.lapic_offset(gpa) {
            self.me.lapic().read(offset, data, now);
        } else if let Some(offset) = Self::ioapic_offset(gpa) {
            lock(&self.vm.platform.ioapic).read(offset, data);
        } else {
            self.io.mmio_read(gpa, data)
        }
    }

    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        let now = self.vm.platform.now_ns();
        if let Some(offset) = self.lapic_offset(gpa) {
            let action = self.me.lapic().write(offset, data, now);
            self.lapic_action(action);
        } else if self.vm.ioevents.signal(IoEventAddress::Mmio(gpa), data) {
            // As on KVM: the LAPIC page comes first, then the ioeventfds.
        } else if let Some(offset) = Self::ioapic_offset(gpa) {
            let deliveries = lock(&self.vm.platform.ioapic).write(offset, data);
            self.vm.router().deliver_all(deliveries);
        } else {
            self.io.mmio_write(gpa, data)
        }
    }

    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        let now = self.vm.platform.now_ns();
        match port {
            p if is_pic_port(p) => {
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = lock(&self.vm.platform.pic).read(p);
                }
            }
            0x40..=0x43 | 0x61 if self.vm.platform.pit.is_some() => {
                data.fill(0);
                if let (Some(b), Some(pit)) = (data.first_mut(), &self.vm.platform.pit) {
                    let mut pit = lock(pit);
                    *b = if port == 0x61 {
                        pit.port61_read(now)
                    } else {
                        pit.read(port - 0x40, now)
                    };
                }
            }
            _ => self.io.pio_read(port, data),
        }
    }

    fn pio_write(&mut self, port: u16, data: &[u8]) {
        if self.vm.ioevents.signal(IoEventAddress::Pio(port), data) {
            return;
        }
        let now = self.vm.platform.now_ns();
        let Some(&value) = data.first() else { return };
        match port {
            p if is_pic_port(p) => {
                let pending = {
                    let mut pic = lock(&self.vm.platform.pic);
                    pic.write(p, value);
                    pic.pending()
                };
                if pending {
                    self.vm.router().wake_pic_acceptors();
                }
            }
            0x40..=0x43 | 0x61 if self.vm.platform.pit.is_some() => {
                if let Some(pit) = &self.vm.platform.pit {
                    let mut pit = lock(pit);
                    if port == 0x61 {
                        pit.port61_write(value, now);
                    } else {
                        pit.write(port - 0x40, value, now);
                    }
                }
            }
            _ => self.io.pio_write(port, data),
        }
    }

    fn read_cr8(&mut self) -> Option<u64> {
        Some(self.me.lapic().cr8())
    }

    fn write_cr8(&mut self, value: u64) -> bool {
        self.me.lapic().set_cr8(value);
        self.lapic_action(LapicAction::None);
        true
    }

    fn hypercall(&mut self, call: &x86::Hypercall) -> Option<u64> {
        Some(crate::hypercall::handle(&self.vm.router(), call))
    }

    fn rdmsr(&mut self, index: u32) -> Option<u64> {
        if !Lapic::handles_msr(index) {
            return None;
        }
        let now = self.vm.platform.now_ns();
        self.me.lapic().rdmsr(index, now).ok()
    }

    fn wrmsr(&mut self, index: u32, value: u64) -> bool {
        if !Lapic::handles_msr(index) {
            return false;
        }
        let now = self.vm.platform.now_ns();
        let result = self.me.lapic().wrmsr(index, value, now);
        match result {
            Ok(action) => {
                self.lapic_action(action);
                true
            }
            Err(_) => false,
        }
    }
}

pub(crate) struct EmuVcpu {
    pub(crate) cpu: Cpu,
    pub(crate) shared: Arc<VcpuShared>,
    pub(crate) vm: Arc<VmShared>,
    counters: Arc<ExitCounters>,
}

impl EmuVcpu {
    pub fn new(id: u32, vm: Arc<VmShared>) -> EmuVcpu {
        let counters = Arc::new(ExitCounters::default());
        let shared = vm.vcpus[id as usize].clone();
        let mut cpu = Cpu::with_signals(counters.clone(), shared.signals.clone());
        cpu.set_code_share(vm.code.clone());
        if let Some(jit) = &vm.jit {
            cpu.set_jit_compiler(jit.clone());
        }
        cpu.set_tsc_hz(TSC_HZ);
        EmuVcpu {
            cpu,
            shared,
            vm,
            counters,
        }
    }

    /// When this vCPU must next look at its timers (ns on the VM clock).
    fn next_deadline(&self) -> Option<u64> {
        let lapic = self.shared.lapic().next_deadline_ns();
        // vCPU 0 drives the PIT.
        let pit = match &self.vm.platform.pit {
            Some(pit) if self.shared.id == 0 => lock(pit).next_irq_ns(),
            _ => None,
        };
        match (lapic, pit) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Sleeps until something happens: a kick, an event, a sync, or (when
    /// `until` is given) a timer deadline.
    fn sleep(&mut self, until: Option<u64>) {
        let shared = self.shared.clone();
        let mut state = shared.lock();
        // The event that woke a previous sleep may still be latched in the
        // CPU's signals; it is harmless (one spurious slice end).
        shared.sync_if_requested(&mut state, &mut self.cpu);
        if state.kicked || self.has_work() {
            return;
        }
        let timeout = until.map(|t| t.saturating_sub(self.vm.platform.now_ns()));
        if timeout == Some(0) {
            return;
        }
        state = match timeout {
            Some(ns) => {
                shared
                    .wake
                    .wait_timeout(state, Duration::from_nanos(ns))
                    .unwrap_or_else(|p| p.into_inner())
                    .0
            }
            None => shared.wake.wait(state).unwrap_or_else(|p| p.into_inner()),
        };
        shared.sync_if_requested(&mut state, &mut self.cpu);
    }

    /// An interrupt or NMI is waiting for this vCPU.
    fn has_work(&self) -> bool {
        if self.shared.nmi_pending.load(Ordering::Acquire) > 0 {
            return true;
        }
        let lapic = self.shared.lapic();
        if lapic.pending_vector().is_some() {
            return self.cpu.state.if_set();
        }
        lapic.accept_pic_interrupts()
            && self.cpu.state.if_set()
            && lock(&self.vm.platform.pic).pending()
    }

    /// Timers, then interrupt injection: what KVM does on VM entry.
    fn service_interrupts(&mut self, bus: &mut EmuBus<'_>) {
        let now = self.vm.platform.now_ns();
        if self.shared.id == 0 {
            self.vm.router().poll_pit(now);
        }
        self.service_nmi(bus);
        let mut lapic = self.shared.lapic();
        // The LAPIC's TSC-deadline timer runs on the CPU's TSC.
        let ticks = (u128::from(now) * u128::from(lapic.tsc_hz()) / 1_000_000_000) as u64;
        lapic.set_tsc_offset(self.cpu.tsc().wrapping_sub(ticks));
        lapic.tick(now);
        let from_lapic = lapic.pending_vector().is_some();
        let pic_path = !from_lapic && lapic.accept_pic_interrupts();
        if !self.cpu.can_inject_interrupt() {
            let waiting = from_lapic || (pic_path && lock(&self.vm.platform.pic).pending());
            self.cpu.request_interrupt_window(waiting);
            return;
        }
        self.cpu.request_interrupt_window(false);
        let vector = if from_lapic {
            Some(lapic.acknowledge())
        } else if pic_path {
            drop(lapic);
            let mut pic = lock(&self.vm.platform.pic);
            pic.pending().then(|| pic.acknowledge())
        } else {
            None
        };
        if let Some(vector) = vector {
            if let Err(e) = self.cpu.inject_external_interrupt(bus, vector) {
                tracing::debug!(vcpu = self.shared.id, error = %e, "interrupt not injected");
            }
        }
    }

    /// Delivers a pending NMI when the CPU can take one, else asks for an
    /// NMI window. While an NMI is being handled one more can wait (KVM's
    /// `process_nmi`): extra ones collapse.
    fn service_nmi(&mut self, bus: &mut EmuBus<'_>) {
        let pending = &self.shared.nmi_pending;
        let cap = if self.cpu.state.nmi_blocked { 1 } else { 2 };
        let n = pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| Some(n.min(cap)))
            .unwrap_or(0)
            .min(cap);
        if n > 0 && self.cpu.inject_nmi(bus) {
            pending.fetch_sub(1, Ordering::AcqRel);
        }
        let waiting = pending.load(Ordering::Acquire) > 0;
        self.cpu.request_nmi_window(waiting);
    }

    /// Brings the CPU to the state an INIT or a SIPI asks for; returns
    /// whether it may run.
    fn handle_mp_state(&mut self) -> bool {
        let mut state = self.shared.lock();
        if state.init_pending {
            state.init_pending = false;
            self.cpu.init();
            // INIT sends the bootstrap processor to the reset vector; the
            // others wait for a SIPI (as KVM does).
            if self.shared.lapic().apic_base() & irqchip::lapic::APIC_BASE_BSP != 0 {
                state.mp_state = MpState::Runnable;
            }
        }
        match state.mp_state {
            MpState::Runnable | MpState::Halted => true,
            MpState::SipiReceived => {
                self.cpu.start_up(state.sipi_vector);
                state.mp_state = MpState::Runnable;
                true
            }
            MpState::Uninitialized | MpState::InitReceived => false,
        }
    }

    fn run_loop(&mut self, io: &dyn IoHandler) -> VcpuExit {
        let vm = self.vm.clone();
        let shared = self.shared.clone();
        let mut bus = EmuBus {
            vm: &vm,
            me: &shared,
            slots: vm.slots(),
            generation: vm.generation(),
            io,
        };
        loop {
            {
                let mut state = self.shared.lock();
                self.shared.sync_if_requested(&mut state, &mut self.cpu);
                if state.kicked {
                    state.kicked = false;
                    return VcpuExit::Interrupted;
                }
            }
            if !self.handle_mp_state() {
                self.sleep(None);
                continue;
            }
            self.service_interrupts(&mut bus);
            tracepoints::kvm_entry(self.cpu.state.rip);
            match self.cpu.run(&mut bus, SLICE) {
                CpuExit::Halt => {
                    let deadline = self.next_deadline();
                    self.sleep(deadline);
                }
                CpuExit::Shutdown => return VcpuExit::Shutdown,
                CpuExit::Debug(cause) => return VcpuExit::Debug(cause),
                // A spin loop waits for another vCPU: let it run (KVM's
                // kvm_vcpu_on_spin, without the directed part).
                CpuExit::PauseLoop if self.vm.vcpus.len() > 1 => std::thread::yield_now(),
                CpuExit::PauseLoop => {}
                CpuExit::Interrupted | CpuExit::InstructionLimit | CpuExit::InterruptWindow => {}
            }
        }
    }
}

/// The KVM exit reason KVM_RUN would return with for `exit`.
fn userspace_exit_reason(exit: VcpuExit) -> u32 {
    use tracepoints::kvm_exit;
    match exit {
        VcpuExit::Halt => kvm_exit::HLT,
        VcpuExit::Shutdown => kvm_exit::SHUTDOWN,
        VcpuExit::Reset | VcpuExit::PowerOff => kvm_exit::SYSTEM_EVENT,
        VcpuExit::Interrupted => kvm_exit::INTR,
        VcpuExit::Debug(_) => kvm_exit::DEBUG,
    }
}

pub(crate) fn invalid(e: impl std::fmt::Display) -> HvError {
    HvError::InvalidArgument(e.to_string())
}

impl Vcpu for EmuVcpu {
    fn id(&self) -> u32 {
        self.shared.id
    }

    fn run(&mut self, io: &dyn IoHandler) -> Result<VcpuExit, HvError> {
        self.shared.lock().running_on = Some(std::thread::current().id());
        tracepoints::set_vcpu(self.shared.id);
        let exit = self.run_loop(io);
        tracepoints::kvm_userspace_exit(userspace_exit_reason(exit), 0);
        {
            let mut state = self.shared.lock();
            state.running_on = None;
            self.shared.wake.notify_all();
        }
        // Only a kick from the VMM is a `signal` exit (the CPU counted the
        // triple fault, HLT, MSR and port accesses itself; wake-ups for
        // interrupts and TLB syncs stay inside `run`).
        if exit == VcpuExit::Interrupted {
            self.counters.inc(ExitReason::Signal);
        }
        Ok(exit)
    }

    fn kicker(&self) -> Kicker {
        let shared = self.shared.clone();
        Kicker::new(move || shared.kick())
    }

    fn get_regs(&self) -> Result<Regs, HvError> {
        Ok(self.cpu.get_regs())
    }

    fn set_regs(&mut self, regs: &Regs) -> Result<(), HvError> {
        self.cpu.set_regs(regs);
        Ok(())
    }

    fn get_sregs(&self) -> Result<SRegs, HvError> {
        let mut sregs = self.cpu.get_sregs();
        // The LAPIC owns IA32_APIC_BASE and the TPR (CR8), as on KVM.
        let lapic = self.shared.lapic();
        sregs.apic_base = lapic.apic_base();
        sregs.cr8 = lapic.cr8();
        Ok(sregs)
    }

    fn set_sregs(&mut self, sregs: &SRegs) -> Result<(), HvError> {
        {
            let mut lapic = self.shared.lapic();
            lapic.set_apic_base(sregs.apic_base).map_err(invalid)?;
            lapic.set_cr8(sregs.cr8 & 0xf);
        }
        self.cpu.set_sregs(sregs);
        self.cpu.state_changed();
        Ok(())
    }

    fn get_fpu(&self) -> Result<Fpu, HvError> {
        Ok(self.cpu.get_fpu())
    }

    fn set_fpu(&mut self, fpu: &Fpu) -> Result<(), HvError> {
        self.cpu.set_fpu(fpu);
        Ok(())
    }

    fn get_msrs(&self, msrs: &mut [Msr]) -> Result<(), HvError> {
        let now = self.vm.platform.now_ns();
        for msr in msrs.iter_mut() {
            if Lapic::handles_msr(msr.index) {
                msr.data = self.shared.lapic().rdmsr(msr.index, now).map_err(invalid)?;
            } else {
                self.cpu
                    .get_msrs(std::slice::from_mut(msr))
                    .map_err(invalid)?;
            }
        }
        Ok(())
    }

    fn set_msrs(&mut self, msrs: &[Msr]) -> Result<(), HvError> {
        let now = self.vm.platform.now_ns();
        for msr in msrs {
            if Lapic::handles_msr(msr.index) {
                self.shared
                    .lapic()
                    .wrmsr(msr.index, msr.data, now)
                    .map_err(invalid)?;
            } else {
                self.cpu
                    .set_msrs(std::slice::from_ref(msr))
                    .map_err(invalid)?;
            }
        }
        Ok(())
    }

    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<(), HvError> {
        // The LAPIC enters x2APIC mode only on a CPU model with x2APIC, and
        // its base must fit the physical-address width.
        let x2apic = entries
            .iter()
            .find(|e| e.function == 1)
            .is_some_and(|e| e.ecx & (1 << 21) != 0);
        let phys_bits = entries
            .iter()
            .find(|e| e.function == 0x8000_0008)
            .map_or(0, |e| e.eax as u8);
        {
            let mut lapic = self.shared.lapic();
            lapic.set_x2apic_capable(x2apic);
            lapic.set_phys_addr_bits(phys_bits);
        }
        self.cpu.set_cpuid(entries);
        Ok(())
    }

    fn get_mp_state(&self) -> Result<MpState, HvError> {
        let state = self.shared.lock().mp_state;
        if state == MpState::Runnable && self.cpu.is_halted() {
            return Ok(MpState::Halted);
        }
        Ok(state)
    }

    fn set_mp_state(&mut self, mp_state: MpState) -> Result<(), HvError> {
        let mut state = self.shared.lock();
        match mp_state {
            MpState::Runnable | MpState::Uninitialized | MpState::InitReceived => {
                state.mp_state = mp_state;
                Ok(())
            }
            MpState::Halted | MpState::SipiReceived => Err(HvError::Unsupported(
                "setting the halted or SIPI-received MP state",
            )),
        }
    }

    fn exit_stats_source(&self) -> Arc<dyn hv::ExitStatsSource> {
        Arc::new(EmuStats {
            exits: self.counters.clone(),
            cache: self.cpu.cache_counters().clone(),
            vcpu: self.shared.clone(),
            vm: self.vm.clone(),
        })
    }

    fn save_state(&self) -> Result<hv::VcpuState, HvError> {
        self.save()
    }

    fn restore_state(&mut self, state: &hv::VcpuState) -> Result<(), HvError> {
        self.restore(state)
    }

    fn set_guest_debug(&mut self, debug: &hv::GuestDebug) -> Result<(), HvError> {
        if let Some(bp) = debug.hw.iter().flatten().find(|bp| !bp.is_valid()) {
            return Err(invalid(format_args!("hardware breakpoint {bp:?}")));
        }
        self.cpu.set_guest_debug(debug);
        Ok(())
    }

    fn translate_gva(&mut self, gva: u64) -> Result<Option<u64>, HvError> {
        let vm = self.vm.clone();
        let shared = self.shared.clone();
        // Page tables live in RAM; a walk that reaches MMIO reads nothing.
        let mut bus = EmuBus {
            vm: &vm,
            me: &shared,
            slots: vm.slots(),
            generation: vm.generation(),
            io: &NoIo,
        };
        Ok(self.cpu.debug_translate(&mut bus, gva))
    }
}

/// The port and MMIO handler of a debugger's page walk: none (reads as
/// all ones, writes go nowhere).
struct NoIo;

impl IoHandler for NoIo {
    fn pio_read(&self, _port: u16, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn pio_write(&self, _port: u16, _data: &[u8]) {}
    fn mmio_read(&self, _gpa: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&self, _gpa: u64, _data: &[u8]) {}
}

/// What `--stats` reads of an emu vCPU: its exits, its soft TLB and code
/// cache counters, and the timer rate limits the guest ran into (its
/// LAPIC's; vCPU 0, which drives the PIT, also the PIT's).
struct EmuStats {
    exits: Arc<ExitCounters>,
    cache: Arc<x86::CpuCounters>,
    vcpu: Arc<VcpuShared>,
    vm: Arc<VmShared>,
}

impl hv::ExitStatsSource for EmuStats {
    fn exit_stats(&self) -> hv::ExitStats {
        self.exits.snapshot()
    }

    fn accel_counters(&self) -> Vec<(&'static str, u64)> {
        let mut counters = self.cache.snapshot();
        counters.push((
            "lapic_timer_periods_stretched",
            self.vcpu.lapic().timer_periods_stretched(),
        ));
        if let Some(pit) = self.vm.platform.pit.as_ref().filter(|_| self.vcpu.id == 0) {
            counters.push(("pit_irq_edges_coalesced", lock(pit).irq_edges_coalesced()));
        }
        counters
    }
}
