//! Building and running a machine.

use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use arch::boot::{BootConfig, BootInfo, BootKind};
use devices::{BusError, GuestRequest, RequestSink};
use hv::{ExitStats, HvError, Hypervisor, Kicker, MpState, Vcpu, Vm, VmConfig};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap};

use crate::accel::{open_accelerator, AccelError};
use crate::config::{MachineConfig, MAX_VCPUS};
use crate::console::{spawn_stdin_reader, InputTarget, RawTerminal};
use crate::controller::{
    Command, CommandError, MachineHandle, RunState, RunningMachine, SharedState,
};
use crate::devices::{virtio_acpi_devices, write_acpi_tables, AcpiPlacement, DeviceManager};
use crate::memory::{create_guest_memory, register_rom, register_slots, MemoryError};
use crate::vcpu::{MachineEvent, SavedVcpuState, VcpuContext, VcpuControl, VcpuStop};

#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    #[error(transparent)]
    Accel(#[from] AccelError),
    #[error("{0} vCPUs requested; between 1 and {MAX_VCPUS} are supported")]
    VcpuCount(u32),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("cannot load the kernel")]
    Boot(#[source] arch::boot::BootError),
    #[error("cannot write the ACPI tables")]
    Acpi(#[source] arch::acpi::AcpiError),
    #[error("cannot set up the VM generation ID")]
    VmGenId(#[source] crate::devices::VmGenIdError),
    #[error("cannot write the BIOS reset entry")]
    Firmware(#[source] vm_memory::GuestMemoryError),
    #[error("cannot set up the {what}")]
    Hv {
        what: &'static str,
        #[source]
        source: HvError,
    },
    #[error("cannot place a device")]
    Bus(#[from] BusError),
    #[error("cannot start a vCPU thread")]
    Thread(#[source] std::io::Error),
    #[error("cannot open a disk")]
    Disk(#[source] virtio::blk::BlockError),
    #[error("cannot open the host's entropy source")]
    Entropy(#[source] std::io::Error),
    #[error("network device {index}")]
    Net {
        index: usize,
        #[source]
        source: virtio::tap::TapError,
    },
    #[error("cannot create the vsock device")]
    Vsock(#[source] virtio::vsock::VsockError),
    #[error("{count} virtio devices requested; at most {max} are supported")]
    TooManyVirtioDevices { count: usize, max: usize },
    #[error("cannot create the virtio queue events")]
    VirtioEvents(#[source] std::io::Error),
    #[error("cannot create a virtio-pci device")]
    VirtioPci(#[source] pci::virtio::VirtioPciError),
    #[error("cannot attach a PCI device")]
    Pci(#[source] pci::PciError),
    #[error("two disks have the ID {0:?}")]
    DuplicateDiskId(String),
    #[error("cannot start the platform timer thread")]
    TimerThread(#[source] std::io::Error),
    #[error("cannot start the controller thread")]
    ControllerThread(#[source] std::io::Error),
    #[error("--cpu")]
    CpuModel(#[source] arch::cpu_model::CpuModelError),
    #[error("cpu-config: kvm_capabilities: the {accel} accelerator has no KVM capabilities to check; capability {cap} cannot be required (\"!{cap}\" removals are accepted)")]
    NoKvmCapabilities { accel: &'static str, cap: u32 },
    #[error(
        "cpu-config: kvm_capabilities: the {accel} accelerator does not have KVM capability {cap}"
    )]
    MissingKvmCapability { accel: &'static str, cap: u32 },
    #[error("cpu-config: msr_modifiers: the {accel} accelerator cannot {what} MSR {index:#x}")]
    TemplateMsr {
        accel: &'static str,
        what: &'static str,
        index: u32,
        #[source]
        source: HvError,
    },
}

fn hv_err(what: &'static str) -> impl FnOnce(HvError) -> MachineError {
    move |source| MachineError::Hv { what, source }
}

/// How a machine ended.
#[derive(Debug)]
pub enum MachineExit {
    /// The guest powered off.
    PowerOff,
    /// The guest asked for a reset (i8042, ...); a microVM stops instead.
    Reset,
    /// A vCPU triple-faulted.
    TripleFault { vcpu: u32 },
    /// The guest wrote the debug-exit port.
    DebugExit { status: i32 },
    /// The accelerator could not continue a vCPU.
    Failed { vcpu: u32, error: HvError },
    /// The user ended the VM from the console (Ctrl-A x).
    HostQuit,
    /// [`Command::Stop`] ended the VM.
    Stopped,
    /// The VM was migrated ([`Command::Migrate`]) and runs elsewhere now.
    Migrated,
    /// The controller thread panicked (a bug).
    ControllerPanicked,
}

impl MachineExit {
    /// The exit status `ferrovisor run` ends with. A triple fault is a
    /// failure (1), as on Firecracker, where KVM_EXIT_SHUTDOWN is an
    /// unhandled exit (FcExitCode::GenericError).
    pub fn exit_status(&self) -> i32 {
        match self {
            MachineExit::PowerOff
            | MachineExit::Reset
            | MachineExit::HostQuit
            | MachineExit::Stopped
            | MachineExit::Migrated => 0,
            MachineExit::DebugExit { status } => *status,
            MachineExit::TripleFault { .. }
            | MachineExit::Failed { .. }
            | MachineExit::ControllerPanicked => 1,
        }
    }
}

/// What [`Machine::run`] reports.
#[derive(Debug)]
pub struct RunReport {
    pub exit: MachineExit,
    /// Exit statistics of each vCPU, by vCPU id.
    pub vcpu_stats: Vec<ExitStats>,
    /// The accelerator's own counters of each vCPU at the end (see
    /// [`hv::ExitStatsSource::accel_counters`]).
    pub accel_counters: Vec<Vec<(&'static str, u64)>>,
    /// Guest port accesses that hit no device.
    pub unhandled_pio: u64,
    /// Guest MMIO accesses that hit no device.
    pub unhandled_mmio: u64,
    pub accel: &'static str,
}

/// A machine ready to run.
pub struct Machine {
    accel: &'static str,
    // Field order matters for drop: vCPUs and devices (whose interrupt
    // lines hold the VM) before the VM, the VM before memory.
    vcpus: Vec<Box<dyn Vcpu>>,
    devices: DeviceManager,
    vm: Arc<dyn Vm>,
    mem: GuestMemoryMmap,
    /// The firmware ROM's mapping (slot after the RAM slots).
    _rom: GuestMemoryMmap,
    events_tx: Sender<MachineEvent>,
    events: Receiver<MachineEvent>,
    console_input: bool,
    /// How the kernel was loaded (`None` for a restored machine).
    boot: Option<BootInfo>,
    acpi: Option<AcpiPlacement>,
    /// Start with every vCPU parked (a snapshot loaded without resume).
    start_paused: bool,
    /// The memory slots log dirty pages (diff snapshots).
    dirty_log: bool,
    /// The host CPU model as snapshots record it (computed at build: the
    /// controller thread's filter has no system ioctls).
    cpu_fingerprint: String,
    /// A snapshot restored through a page-fault handler (Uffd backend):
    /// the userfaultfd and the watched connection, kept while the
    /// machine lives.
    page_server: Option<crate::snapshot::PageServerLink>,
    /// The MMDS the network devices answer from (a live migration
    /// carries its store and tokens).
    mmds: Option<mmds::SharedMmds>,
}

impl Machine {
    /// Builds the machine on the accelerator `config.accel` names.
    pub fn new(config: &MachineConfig) -> Result<Machine, MachineError> {
        let hypervisor = open_accelerator(config.accel)?;
        Self::with_hypervisor(config, hypervisor)
    }

    /// Builds the machine on an accelerator the caller opened
    /// (`config.accel` is ignored).
    pub fn with_hypervisor(
        config: &MachineConfig,
        hypervisor: Box<dyn Hypervisor>,
    ) -> Result<Machine, MachineError> {
        check_config(config)?;
        let virtio_acpi = virtio_acpi_devices(config)?;
        let mem = create_guest_memory(config.memory)?;
        let boot = arch::boot::load_kernel(
            &mem,
            &BootConfig {
                kernel: &config.kernel,
                initrd: config.initrd.as_deref(),
                cmdline: &config.cmdline,
                protocol: config.boot_protocol,
            },
        )
        .map_err(MachineError::Boot)?;
        let acpi = write_acpi_tables(&mem, &boot, config.vcpus, &virtio_acpi)?;
        let occupied: Vec<_> = std::iter::once(boot.kernel.clone())
            .chain(boot.initrd.clone())
            .collect();
        if !arch::firmware::write_bios_reset_entry(&mem, &occupied)
            .map_err(MachineError::Firmware)?
        {
            tracing::info!("the kernel lies at F000:FFF0: no BIOS reset entry");
        }
        let accel = hypervisor.name();
        sandbox::set_accelerator(hypervisor.host_calls());
        check_kvm_capabilities(&*hypervisor, &config.cpu_template)?;
        let vm = create_vm(&*hypervisor, config)?;
        let mut machine = Self::assemble(config, accel, vm, mem, false)?;
        if matches!(acpi, AcpiPlacement::Written { .. }) {
            machine
                .devices
                .attach_vmgenid(&machine.vm, &machine.mem)
                .map_err(MachineError::VmGenId)?;
        }

        let supported = machine.vm.supported_cpuid().map_err(hv_err("CPUID"))?;
        machine.cpu_fingerprint = crate::snapshot::cpu_fingerprint(&supported);
        for id in 0..config.vcpus {
            let mut vcpu = machine.vm.create_vcpu(id).map_err(hv_err("vCPU"))?;
            let topology = arch::cpuid::Topology {
                vcpus: config.vcpus,
                threads_per_core: config.threads_per_core,
            };
            let mut cpuid = arch::cpuid::template_for(&supported, id, topology);
            config
                .cpu
                .apply(&mut cpuid, accel)
                .map_err(MachineError::CpuModel)?;
            config.cpu_template.apply_cpuid(&mut cpuid);
            vcpu.set_cpuid(&cpuid).map_err(hv_err("vCPU CPUID"))?;
            vcpu.set_msrs(&arch::msr::boot_msrs())
                .map_err(hv_err("vCPU MSRs"))?;
            apply_template_msrs(&mut *vcpu, &config.cpu_template, accel)?;
            vcpu.set_fpu(&hv::Fpu::default())
                .map_err(hv_err("vCPU FPU"))?;
            setup_boot_state(&mut *vcpu, &boot, config.vcpus)?;
            machine.vcpus.push(vcpu);
        }
        machine.boot = Some(boot);
        machine.acpi = Some(acpi);
        Ok(machine)
    }

    /// Builds a machine from a snapshot: `config` from the snapshot's spec,
    /// guest RAM mapped MAP_PRIVATE from the memory file, or served by a
    /// page-fault handler (`options.memory`), then
    /// the VM, every vCPU and every device put back in the saved state. The
    /// machine starts paused ([`Machine::start`]) unless `resume`. With
    /// `track_dirty_pages` the accelerator logs dirty pages for diff
    /// snapshots. With `regenerate_vmgenid` (a clone) the guest gets a new
    /// VM generation ID and is told. Nothing outside the new machine changes when this fails.
    pub fn restore(
        config: &MachineConfig,
        hypervisor: Box<dyn Hypervisor>,
        snapshot: &crate::snapshot::SnapshotFile,
        options: &crate::snapshot::RestoreOptions,
    ) -> Result<Machine, crate::snapshot::SnapshotError> {
        let (mem, page_server) =
            crate::snapshot::map_memory(&options.memory, &snapshot.header.memory)?;
        let mut machine = Self::restore_with_memory(
            config,
            hypervisor,
            snapshot,
            mem,
            options.track_dirty_pages,
            options.resume,
        )?;
        machine.page_server = page_server;
        if options.regenerate_vmgenid {
            // After the vCPUs' LAPICs were restored: the GED's interrupt
            // is pending when they first run.
            let id = machine
                .devices
                .regenerate_vmgenid()
                .ok_or(crate::snapshot::SnapshotError::NoVmGenId)?
                .map_err(crate::snapshot::SnapshotError::VmGenId)?;
            tracing::info!(id = %crate::devices::id_hex(&id), "new VM generation ID");
        }
        Ok(machine)
    }

    /// [`Machine::restore`] with guest RAM the caller filled (a migration
    /// destination's anonymous memory).
    pub fn restore_with_memory(
        config: &MachineConfig,
        hypervisor: Box<dyn Hypervisor>,
        snapshot: &crate::snapshot::SnapshotFile,
        mem: GuestMemoryMmap,
        track_dirty_pages: bool,
        resume: bool,
    ) -> Result<Machine, crate::snapshot::SnapshotError> {
        use crate::snapshot::{cpu_fingerprint, SnapshotError};
        check_config(config)?;
        let body = &snapshot.body;
        if body.vcpus.len() != config.vcpus as usize {
            return Err(SnapshotError::Inconsistent(format!(
                "{} vCPU states for {} vCPUs",
                body.vcpus.len(),
                config.vcpus
            )));
        }
        let accel = hypervisor.name();
        if snapshot.header.accelerator != accel {
            return Err(crate::snapshot::SnapshotFormatError::Accelerator {
                saved: snapshot.header.accelerator.clone(),
                here: accel.into(),
            }
            .into());
        }
        if crate::snapshot::layout(&mem) != snapshot.header.memory {
            return Err(SnapshotError::Inconsistent(
                "the guest memory does not have the snapshot's layout".into(),
            ));
        }
        let expected: Vec<_> = arch::layout::ram_regions(config.memory)
            .into_iter()
            .map(|(gpa, size)| crate::snapshot::MemoryRegion { gpa, size })
            .collect();
        if expected != snapshot.header.memory {
            return Err(SnapshotError::Inconsistent(
                "the memory layout does not match the VM's memory size".into(),
            ));
        }
        sandbox::set_accelerator(hypervisor.host_calls());
        let vm = create_vm(&*hypervisor, config)?;
        let supported = vm.supported_cpuid().map_err(hv_err("CPUID"))?;
        let fingerprint = cpu_fingerprint(&supported);
        snapshot.header.check_host(accel, &fingerprint)?;
        let mut machine = Self::assemble(config, accel, vm, mem, track_dirty_pages)?;
        machine.cpu_fingerprint = fingerprint;
        // The VM (its interrupt controllers) first: a device restored
        // with its interrupt pending raises its line again.
        machine
            .vm
            .restore_state(&body.vm)
            .map_err(SnapshotError::Vm)?;
        machine
            .devices
            .restore(&machine.vm, &machine.mem, &body.devices)
            .map_err(SnapshotError::Devices)?;
        for (id, state) in body.vcpus.iter().enumerate() {
            let mut vcpu = machine.vm.create_vcpu(id as u32).map_err(hv_err("vCPU"))?;
            vcpu.restore_state(state)
                .map_err(|source| SnapshotError::Vcpu {
                    id: id as u32,
                    message: source.to_string(),
                })?;
            machine.vcpus.push(vcpu);
        }
        machine.start_paused = !resume;
        Ok(machine)
    }

    /// The parts every machine has: memory slots, ROM, devices. vCPUs are
    /// the caller's.
    fn assemble(
        config: &MachineConfig,
        accel: &'static str,
        vm: Arc<dyn Vm>,
        mem: GuestMemoryMmap,
        log_dirty: bool,
    ) -> Result<Machine, MachineError> {
        register_slots(&*vm, &mem, log_dirty)?;
        let rom = register_rom(&*vm, mem.iter().count() as u32)?;
        let (events_tx, events) = channel();
        let requests: RequestSink = {
            let tx = Mutex::new(events_tx.clone());
            Arc::new(move |request| {
                let tx = tx.lock().unwrap_or_else(|p| p.into_inner());
                let _ = tx.send(MachineEvent::Guest(request));
            })
        };
        let devices = DeviceManager::build(&vm, &mem, config, requests, accel)?;
        Ok(Machine {
            accel,
            vcpus: Vec::with_capacity(config.vcpus as usize),
            devices,
            vm,
            mem,
            _rom: rom,
            events_tx,
            events,
            console_input: config.console_input,
            boot: None,
            acpi: None,
            start_paused: false,
            dirty_log: log_dirty,
            cpu_fingerprint: String::new(),
            page_server: None,
            mmds: config.mmds.as_ref().map(|m| m.shared.clone()),
        })
    }

    /// A handle on the machine's counters that stays readable while it
    /// runs (see [`crate::live`]).
    pub fn live_stats(&self) -> crate::live::LiveStats {
        let vcpus = self.vcpus.iter().map(|v| v.exit_stats_source()).collect();
        crate::live::LiveStats::new(
            self.accel,
            vcpus,
            self.devices.buses.clone(),
            self.devices.metrics_source(),
        )
    }

    /// Makes the accelerator log the pages the guest dirties (Firecracker's
    /// `track_dirty_pages`), for diff snapshots. Before [`Machine::start`].
    pub fn track_dirty_pages(&mut self) -> Result<(), MachineError> {
        register_slots(&*self.vm, &self.mem, true)?;
        self.dirty_log = true;
        Ok(())
    }

    /// The guest's memory (for tests and snapshots).
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// How the kernel was booted (`None` when restored from a snapshot).
    pub fn boot_info(&self) -> Option<&BootInfo> {
        self.boot.as_ref()
    }

    /// Where the ACPI RSDP is, when the machine has ACPI tables (Linux
    /// boots, and Multiboot kernels that leave the BIOS area free).
    pub fn acpi_rsdp(&self) -> Option<u64> {
        match self.acpi {
            Some(AcpiPlacement::Written { rsdp }) => Some(rsdp),
            _ => None,
        }
    }

    /// Runs the guest until it ends; see [`MachineExit`].
    pub fn run(self) -> Result<RunReport, MachineError> {
        Ok(self.start()?.wait())
    }

    /// Starts the vCPUs and hands the machine to its controller thread;
    /// see [`crate::controller`].
    pub fn start(self) -> Result<RunningMachine, MachineError> {
        self.start_with(false)
    }

    /// [`Machine::start`] with the machine paused before any vCPU ran a
    /// guest instruction (a debugger's `-S`): [`Command::Resume`] starts it.
    pub fn start_paused(self) -> Result<RunningMachine, MachineError> {
        self.start_with(true)
    }

    fn start_with(mut self, paused: bool) -> Result<RunningMachine, MachineError> {
        // Asked for (a debugger's -S), or a restored snapshot without
        // resume_vm.
        let start_paused = paused || self.start_paused;
        self.devices
            .activate(start_paused)
            .map_err(MachineError::TimerThread)?;
        let live = self.live_stats();
        let control = Arc::new(VcpuControl::default());
        if start_paused {
            // The vCPUs park before their first instruction.
            control.set_paused();
        }
        let mut threads: Vec<(Kicker, JoinHandle<ExitStats>)> = Vec::new();
        let mut saved = Vec::with_capacity(self.vcpus.len());
        for vcpu in self.vcpus.drain(..) {
            let kicker = vcpu.kicker();
            let slot = Arc::new(SavedVcpuState::default());
            saved.push(slot.clone());
            let ctx = VcpuContext {
                saved: slot,
                vcpu,
                buses: self.devices.buses.clone(),
                control: control.clone(),
                events: self.events_tx.clone(),
            };
            control.enter();
            let builder = std::thread::Builder::new().name(format!("vcpu{}", threads.len()));
            let spawned = sandbox::spawn(sandbox::ThreadKind::Vcpu, builder, move || ctx.run());
            match spawned {
                Ok(handle) => threads.push((kicker, handle)),
                Err(e) => {
                    control.stop(&thread_list(&threads));
                    for (_, handle) in threads {
                        let _ = handle.join();
                    }
                    self.devices.stop();
                    return Err(MachineError::Thread(e));
                }
            }
        }
        let terminal = self.console_input.then(RawTerminal::enable);
        if self.console_input {
            let interactive = terminal.as_ref().is_some_and(RawTerminal::is_active);
            let target = match &self.devices.virtio_console {
                Some(input) => InputTarget::Virtio(input.clone()),
                None => InputTarget::Serial(self.devices.serial.clone()),
            };
            spawn_stdin_reader(target, interactive, self.events_tx.clone());
        }
        let state = Arc::new(SharedState::default());
        let handle = MachineHandle {
            events: self.events_tx.clone(),
            state: state.clone(),
        };
        let thread_names = thread_list(&threads);
        let debug = crate::debug::MachineDebug {
            control: control.clone(),
            handle: handle.clone(),
            mem: self.mem.clone(),
            vm: self.vm.clone(),
            vcpus: threads.len() as u32,
        };
        let mut controller = Controller {
            machine: self,
            control: control.clone(),
            threads,
            saved,
            state,
            paused: false,
            backends_handed_over: false,
            _terminal: terminal,
        };
        if start_paused {
            controller.paused = true;
            if !control.wait_parked() {
                tracing::warn!("the vCPUs did not park in time");
            }
            if let Err(e) = controller.machine.vm.pause_clock() {
                tracing::info!(error = %e, "the guest's clock goes on while paused");
            }
            controller.machine.devices.pause();
            controller.state.set(RunState::Paused);
        }
        let builder = std::thread::Builder::new().name("vmm-controller".into());
        let thread = sandbox::spawn(sandbox::ThreadKind::Vmm, builder, move || controller.run());
        match thread {
            Ok(thread) => Ok(RunningMachine {
                handle,
                thread,
                live,
                debug,
            }),
            Err(e) => {
                // The controller (and the machine) went with the closure;
                // its vCPU threads end on the stop.
                control.stop(&thread_names);
                Err(MachineError::ControllerThread(e))
            }
        }
    }
}

fn check_config(config: &MachineConfig) -> Result<(), MachineError> {
    if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
        return Err(MachineError::VcpuCount(config.vcpus));
    }
    let mut ids = std::collections::HashSet::new();
    for id in config.disks.iter().filter_map(|d| d.id.as_ref()) {
        if !ids.insert(id) {
            return Err(MachineError::DuplicateDiskId(id.clone()));
        }
    }
    Ok(())
}

fn create_vm(
    hypervisor: &dyn Hypervisor,
    config: &MachineConfig,
) -> Result<Arc<dyn Vm>, MachineError> {
    Ok(Arc::from(
        hypervisor
            .create_vm(VmConfig {
                vcpus: config.vcpus,
                pit: config.pit,
                pit_discards_lost_ticks: config.pit_discards_lost_ticks,
            })
            .map_err(hv_err("VM"))?,
    ))
}

fn thread_list(threads: &[(Kicker, JoinHandle<ExitStats>)]) -> Vec<(Kicker, std::thread::Thread)> {
    threads
        .iter()
        .map(|(k, h)| (k.clone(), h.thread().clone()))
        .collect()
}

/// The controller thread: owns the started machine.
struct Controller {
    machine: Machine,
    control: Arc<VcpuControl>,
    threads: Vec<(Kicker, JoinHandle<ExitStats>)>,
    /// Each vCPU's state while paused, by vCPU id.
    saved: Vec<Arc<SavedVcpuState>>,
    state: Arc<SharedState>,
    paused: bool,
    /// A migration handed the disks and TAPs over and then lost the
    /// destination's answer ([`crate::migration::MigrationError::OutcomeUnknown`]):
    /// a resume takes them back first.
    backends_handed_over: bool,
    /// The terminal's raw mode, restored when the machine ends.
    _terminal: Option<RawTerminal>,
}

impl Controller {
    fn run(mut self) -> RunReport {
        let exit = self.wait_for_exit();
        self.control.stop(&thread_list(&self.threads));
        self.machine.devices.stop();
        self.state.set(RunState::Ended);
        let mut vcpu_stats = Vec::with_capacity(self.threads.len());
        for (_, handle) in self.threads.drain(..) {
            vcpu_stats.push(handle.join().unwrap_or_default());
        }
        let buses = &self.machine.devices.buses;
        RunReport {
            exit,
            vcpu_stats,
            // Filled by `RunningMachine::wait` from the live counters.
            accel_counters: Vec::new(),
            unhandled_pio: buses.pio.unhandled_count(),
            unhandled_mmio: buses.mmio.unhandled_count(),
            accel: self.machine.accel,
        }
    }

    fn wait_for_exit(&mut self) -> MachineExit {
        loop {
            // `events_tx` lives in the machine, so the channel never
            // disconnects.
            let Ok(event) = self.machine.events.recv() else {
                return MachineExit::PowerOff;
            };
            return match event {
                MachineEvent::Command(Command::Stop, reply) => {
                    let _ = reply.send(Ok(()));
                    MachineExit::Stopped
                }
                MachineEvent::Command(Command::Migrate(request), reply) => {
                    let migrated = self.migrate(&request);
                    let done = migrated.is_ok();
                    let _ = reply.send(migrated);
                    if done {
                        MachineExit::Migrated
                    } else {
                        continue;
                    }
                }
                MachineEvent::Command(command, reply) => {
                    let _ = reply.send(self.command(command));
                    continue;
                }
                MachineEvent::HostQuit => MachineExit::HostQuit,
                MachineEvent::Guest(GuestRequest::PowerOff) => MachineExit::PowerOff,
                MachineEvent::Guest(GuestRequest::Reset) => MachineExit::Reset,
                MachineEvent::Guest(GuestRequest::DebugExit { status }) => {
                    MachineExit::DebugExit { status }
                }
                MachineEvent::Vcpu {
                    id,
                    stop: VcpuStop::TripleFault,
                } => MachineExit::TripleFault { vcpu: id },
                MachineEvent::Vcpu {
                    id,
                    stop: VcpuStop::Failed(error),
                } => MachineExit::Failed { vcpu: id, error },
            };
        }
    }

    fn command(&mut self, command: Command) -> Result<(), CommandError> {
        match command {
            Command::Pause => self.pause(),
            Command::Resume => {
                self.resume();
                Ok(())
            }
            Command::SendCtrlAltDel => self
                .machine
                .devices
                .send_ctrl_alt_del()
                .map_err(CommandError::Keyboard),
            Command::UpdateDrive { index, path } => self
                .machine
                .devices
                .update_drive(index, &path)
                .map(|size| tracing::info!(index, size, path = %path.display(), "drive updated"))
                .map_err(CommandError::Update),
            Command::UpdateLimits { target, update } => self
                .machine
                .devices
                .update_limits(target, update)
                .map(|()| tracing::info!(?target, ?update, "rate limiter updated"))
                .map_err(CommandError::Update),
            Command::CreateSnapshot(request) => self.create_snapshot(&request),
            // Handled by the loop.
            Command::Stop | Command::Migrate(_) => Ok(()),
        }
    }

    /// vCPUs first (out of the guest, TSC kept), then the clock, then the
    /// device workers.
    fn pause(&mut self) -> Result<(), CommandError> {
        if self.paused {
            return Ok(());
        }
        if !self.control.pause(&thread_list(&self.threads)) {
            self.control.resume();
            return Err(CommandError::PauseTimeout);
        }
        if let Err(e) = self.machine.vm.pause_clock() {
            tracing::info!(error = %e, "the guest's clock goes on while paused");
        }
        let busy = self.machine.devices.pause();
        if busy > 0 {
            tracing::warn!(busy, "device workers still busy when the VM paused");
        }
        self.paused = true;
        self.state.set(RunState::Paused);
        tracing::info!("the VM is paused");
        Ok(())
    }

    /// Writes the state file and the memory file of the paused machine.
    fn create_snapshot(
        &mut self,
        request: &crate::snapshot::CreateSnapshot,
    ) -> Result<(), CommandError> {
        use crate::snapshot::{SnapshotError, SnapshotKind};
        if !self.paused {
            return Err(CommandError::Snapshot(SnapshotError::NotPaused));
        }
        if request.kind == SnapshotKind::Diff && !self.machine.dirty_log {
            return Err(CommandError::Snapshot(SnapshotError::DiffWithoutTracking));
        }
        let started = std::time::Instant::now();
        let file = self
            .collect_state(&request.spec_json)
            .map_err(CommandError::Snapshot)?;
        let written = crate::snapshot::write_files(
            &file,
            &*self.machine.vm,
            &self.machine.mem,
            request,
            (self.machine.dirty_log, self.machine.page_server.is_none()),
        )
        .map_err(CommandError::Snapshot)?;
        tracing::info!(
            kind = ?request.kind,
            memory_bytes = written,
            us = started.elapsed().as_micros() as u64,
            "snapshot created"
        );
        Ok(())
    }

    /// The paused machine's state (a snapshot state file's contents).
    fn collect_state(
        &self,
        spec_json: &str,
    ) -> Result<crate::snapshot::SnapshotFile, crate::snapshot::SnapshotError> {
        use crate::snapshot::SnapshotError;
        let vcpus = self
            .saved
            .iter()
            .enumerate()
            .map(|(id, slot)| {
                let slot = slot.lock().unwrap_or_else(|p| p.into_inner());
                match slot.as_ref() {
                    Some(Ok(state)) => Ok(state.clone()),
                    Some(Err(message)) => Err(SnapshotError::Vcpu {
                        id: id as u32,
                        message: message.clone(),
                    }),
                    None => Err(SnapshotError::Vcpu {
                        id: id as u32,
                        message: "the vCPU is not parked".into(),
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        crate::snapshot::collect(
            &*self.machine.vm,
            &self.machine.mem,
            &self.machine.devices,
            vcpus,
            spec_json,
            self.machine.accel,
            &self.machine.cpu_fingerprint,
        )
    }

    /// Sends the machine to another process ([`crate::migration::send`]);
    /// on success the caller ends the machine.
    fn migrate(&mut self, request: &crate::migration::MigrateRequest) -> Result<(), CommandError> {
        use crate::migration::MigrationError;
        let stream = request
            .stream
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .ok_or(CommandError::Migration(MigrationError::Busy))?;
        let report = crate::migration::send(self, stream, &request.spec_json, &request.options)
            .map_err(|e| {
                if matches!(e, MigrationError::OutcomeUnknown(_)) {
                    // Paused, its disks and TAPs with the destination,
                    // which may run the VM: an operator's resume decides.
                    self.backends_handed_over = true;
                }
                CommandError::Migration(e)
            })?;
        tracing::info!(?report, "the VM was migrated");
        *request.report.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
        Ok(())
    }

    fn resume(&mut self) {
        if !self.paused {
            return;
        }
        if std::mem::take(&mut self.backends_handed_over) {
            tracing::warn!(
                "resumed after a migration whose outcome is unknown: taking the disks and TAPs back"
            );
            self.machine.devices.retake_backends();
        }
        self.machine.devices.resume();
        if let Err(e) = self.machine.vm.resume_clock() {
            tracing::info!(error = %e, "the guest's clock was not stopped");
        }
        self.control.resume();
        self.paused = false;
        self.state.set(RunState::Running);
        tracing::info!("the VM is resumed");
    }
}

/// Puts a vCPU in its boot state: the boot vCPU at the kernel's entry; for
/// bare-ELF kernels the other vCPUs too (RDI = vCPU id, each with its own
/// small stack); for Linux and Multiboot, the others wait for INIT/SIPI.
/// Checks a template's required KVM capabilities (`"!N"` removals need
/// nothing: Ferrovisor's own required capabilities are checked when the
/// accelerator opens and are not negotiable).
fn check_kvm_capabilities(
    hypervisor: &dyn Hypervisor,
    template: &arch::cpu_template::CpuTemplate,
) -> Result<(), MachineError> {
    let accel = hypervisor.name();
    for &cap in &template.kvm_required {
        match hypervisor.has_kvm_capability(cap) {
            None => return Err(MachineError::NoKvmCapabilities { accel, cap }),
            Some(false) => return Err(MachineError::MissingKvmCapability { accel, cap }),
            Some(true) => {}
        }
    }
    Ok(())
}

/// Applies a template's MSR modifiers to a vCPU's boot MSRs: read each
/// MSR, change the bits, write it back, one MSR at a time so that an
/// error names the MSR.
fn apply_template_msrs(
    vcpu: &mut dyn Vcpu,
    template: &arch::cpu_template::CpuTemplate,
    accel: &'static str,
) -> Result<(), MachineError> {
    for index in template.msr_indices() {
        let mut msr = [hv::Msr { index, data: 0 }];
        let fail = |what, source| MachineError::TemplateMsr {
            accel,
            what,
            index,
            source,
        };
        vcpu.get_msrs(&mut msr).map_err(|e| fail("read", e))?;
        template.apply_msrs(&mut msr);
        vcpu.set_msrs(&msr).map_err(|e| fail("set", e))?;
    }
    Ok(())
}

fn setup_boot_state(vcpu: &mut dyn Vcpu, boot: &BootInfo, vcpus: u32) -> Result<(), MachineError> {
    let id = vcpu.id();
    let bare = match boot.kind {
        BootKind::Bare => true,
        BootKind::LinuxBzImage | BootKind::LinuxElf | BootKind::Multiboot | BootKind::Pvh => false,
    };
    if id != 0 && !bare {
        return Ok(());
    }
    let mut regs = boot.regs;
    if bare {
        regs.rdi = id.into();
        regs.rsi = vcpus.into();
        regs.rsp = boot.regs.rsp - u64::from(id) * arch::layout::BARE_STACK_PER_VCPU;
    }
    let mut sregs = boot.sregs;
    if id != 0 {
        sregs.apic_base &= !arch::mode::APIC_BASE_BSP;
    }
    vcpu.set_sregs(&sregs).map_err(hv_err("vCPU sregs"))?;
    vcpu.set_regs(&regs).map_err(hv_err("vCPU regs"))?;
    if id != 0 {
        vcpu.set_mp_state(MpState::Runnable)
            .map_err(hv_err("vCPU MP state"))?;
    }
    Ok(())
}

impl crate::migration::Source for Controller {
    fn memory(&self) -> &GuestMemoryMmap {
        &self.machine.mem
    }

    fn vm(&self) -> &dyn Vm {
        &*self.machine.vm
    }

    fn header(&self) -> crate::snapshot::SnapshotHeader {
        crate::snapshot::SnapshotHeader {
            ferrovisor_version: env!("CARGO_PKG_VERSION").into(),
            accelerator: self.machine.accel.into(),
            cpu_fingerprint: self.machine.cpu_fingerprint.clone(),
            memory: crate::snapshot::layout(&self.machine.mem),
        }
    }

    fn dirty_logging(&self) -> bool {
        self.machine.dirty_log
    }

    fn set_dirty_logging(&mut self, on: bool) -> Result<(), crate::migration::MigrationError> {
        register_slots(&*self.machine.vm, &self.machine.mem, on)
            .map_err(|e| crate::migration::MigrationError::Machine(Box::new(e.into())))?;
        self.machine.dirty_log = on;
        Ok(())
    }

    fn paused(&self) -> bool {
        self.paused
    }

    fn pause(&mut self) -> Result<(), crate::migration::MigrationError> {
        Controller::pause(self).map_err(|_| crate::migration::MigrationError::PauseTimeout)
    }

    fn resume(&mut self) {
        Controller::resume(self)
    }

    fn state(
        &mut self,
        spec_json: &str,
    ) -> Result<crate::snapshot::SnapshotFile, crate::migration::MigrationError> {
        self.collect_state(spec_json)
            .map_err(crate::migration::MigrationError::Snapshot)
    }

    fn release_backends(&mut self) -> Result<(), crate::migration::MigrationError> {
        self.machine.devices.release_backends().map_err(|e| {
            crate::migration::MigrationError::Handover(crate::migration::error_line(&e))
        })
    }

    fn retake_backends(&mut self) {
        self.machine.devices.retake_backends();
    }

    fn memory_filled_here(&self) -> bool {
        self.machine.page_server.is_none()
    }

    fn mmds(&self) -> Option<mmds::SavedMmds> {
        let shared = self.machine.mmds.as_ref()?;
        let mmds = shared.lock().unwrap_or_else(|p| p.into_inner());
        Some(mmds.save(std::time::Instant::now()))
    }
}
