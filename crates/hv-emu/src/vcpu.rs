//! An emu vCPU: an [`x86::Cpu`] run on the caller's thread, its memory
//! view, its sleep in HLT, and the kicks and TLB synchronisations other
//! threads send it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use hv::{
    CpuidEntry, ExitCounters, ExitReason, ExitStats, Fpu, HvError, IoHandler, Kicker, MpState, Msr,
    Regs, SRegs, Vcpu, VcpuExit,
};
use x86::{Bus, Cpu, CpuExit, CpuSignals, RamRef};

use crate::memory::SlotList;
use crate::vm::VmShared;

/// How long a memory-map change waits for a running vCPU to drop its
/// cached translations before it gives up and logs (a vCPU stuck in a
/// device callback that waits on the caller would otherwise deadlock).
const SYNC_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct RunState {
    /// A thread is inside `run`.
    running_on: Option<ThreadId>,
    /// A kick is pending: `run` returns `Interrupted`.
    kicked: bool,
    /// TLB synchronisations requested and acknowledged.
    sync_requested: u64,
    sync_acked: u64,
}

/// The part of a vCPU other threads reach.
pub(crate) struct VcpuShared {
    pub id: u32,
    signals: Arc<CpuSignals>,
    state: Mutex<RunState>,
    wake: Condvar,
}

impl VcpuShared {
    fn lock(&self) -> MutexGuard<'_, RunState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn kick(&self) {
        let mut state = self.lock();
        state.kicked = true;
        self.signals.kick();
        self.wake.notify_all();
    }

    /// Asks the vCPU to drop its TLB and decoded blocks.
    pub fn request_sync(&self) {
        let mut state = self.lock();
        state.sync_requested += 1;
        self.signals.request_flush();
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
            cpu.flush_tlb();
            state.sync_acked = state.sync_requested;
            self.wake.notify_all();
        }
    }
}

/// The CPU's view of the machine during one `run`.
struct EmuBus<'a> {
    vm: &'a VmShared,
    slots: Arc<SlotList>,
    generation: u64,
    io: &'a dyn IoHandler,
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
        self.io.mmio_read(gpa, data)
    }

    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        self.io.mmio_write(gpa, data)
    }

    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        self.io.pio_read(port, data)
    }

    fn pio_write(&mut self, port: u16, data: &[u8]) {
        self.io.pio_write(port, data)
    }
}

pub(crate) struct EmuVcpu {
    cpu: Cpu,
    shared: Arc<VcpuShared>,
    vm: Arc<VmShared>,
    counters: Arc<ExitCounters>,
    mp_state: MpState,
}

impl EmuVcpu {
    pub fn new(id: u32, vm: Arc<VmShared>) -> EmuVcpu {
        let counters = Arc::new(ExitCounters::default());
        let cpu = Cpu::new(counters.clone());
        let shared = Arc::new(VcpuShared {
            id,
            signals: cpu.signals(),
            state: Mutex::new(RunState::default()),
            wake: Condvar::new(),
        });
        EmuVcpu {
            cpu,
            shared,
            vm,
            counters,
            // As on KVM: the bootstrap processor runs, the others wait for
            // INIT/SIPI.
            mp_state: if id == 0 {
                MpState::Runnable
            } else {
                MpState::Uninitialized
            },
        }
    }

    pub fn shared(&self) -> &Arc<VcpuShared> {
        &self.shared
    }

    /// Sleeps until a kick (returns true) while the CPU cannot run (HLT, or
    /// waiting for INIT/SIPI). Syncs requested meanwhile are served.
    fn sleep_until_kicked(&mut self) {
        let shared = self.shared.clone();
        let mut state = shared.lock();
        loop {
            shared.sync_if_requested(&mut state, &mut self.cpu);
            if state.kicked {
                return;
            }
            state = shared.wake.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }

    fn run_loop(&mut self, io: &dyn IoHandler) -> VcpuExit {
        let vm = self.vm.clone();
        let mut bus = EmuBus {
            vm: &vm,
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
            if self.mp_state != MpState::Runnable {
                self.sleep_until_kicked();
                continue;
            }
            match self.cpu.run(&mut bus, u64::MAX) {
                CpuExit::Halt => self.sleep_until_kicked(),
                CpuExit::Shutdown => return VcpuExit::Shutdown,
                CpuExit::Interrupted | CpuExit::InstructionLimit | CpuExit::InterruptWindow => {}
            }
        }
    }
}

fn invalid(e: impl std::fmt::Display) -> HvError {
    HvError::InvalidArgument(e.to_string())
}

impl Vcpu for EmuVcpu {
    fn id(&self) -> u32 {
        self.shared.id
    }

    fn run(&mut self, io: &dyn IoHandler) -> Result<VcpuExit, HvError> {
        self.shared.lock().running_on = Some(std::thread::current().id());
        let exit = self.run_loop(io);
        {
            let mut state = self.shared.lock();
            state.running_on = None;
            self.shared.wake.notify_all();
        }
        match exit {
            VcpuExit::Interrupted => self.counters.inc(ExitReason::Signal),
            VcpuExit::Shutdown => self.counters.inc(ExitReason::Shutdown),
            _ => {}
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
        Ok(self.cpu.get_sregs())
    }

    fn set_sregs(&mut self, sregs: &SRegs) -> Result<(), HvError> {
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
        self.cpu.get_msrs(msrs).map_err(invalid)
    }

    fn set_msrs(&mut self, msrs: &[Msr]) -> Result<(), HvError> {
        self.cpu.set_msrs(msrs).map_err(invalid)
    }

    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<(), HvError> {
        self.cpu.set_cpuid(entries);
        Ok(())
    }

    fn get_mp_state(&self) -> Result<MpState, HvError> {
        if self.mp_state == MpState::Runnable && self.cpu.is_halted() {
            return Ok(MpState::Halted);
        }
        Ok(self.mp_state)
    }

    fn set_mp_state(&mut self, state: MpState) -> Result<(), HvError> {
        match state {
            MpState::Runnable | MpState::Uninitialized => {
                self.mp_state = state;
                Ok(())
            }
            MpState::Halted | MpState::InitReceived | MpState::SipiReceived => {
                Err(HvError::Unsupported("the halted and INIT/SIPI MP states"))
            }
        }
    }

    fn exit_stats(&self) -> ExitStats {
        self.counters.snapshot()
    }
}
