//! The hypervisor API of Ferrovisor.
//!
//! This crate is the KVM model of `../shared/seed/kvm-architecture.md` as Rust
//! traits: a [`Hypervisor`] (the `/dev/kvm` handle) creates [`Vm`]s (`struct
//! kvm`: memory slots, irq lines, vCPUs), which create [`Vcpu`]s (`struct
//! kvm_vcpu`, `KVM_RUN`). Backends (`hv-kvm`, `hv-emu`) implement it; the VMM
//! only ever sees these types, never a backend's own.
#![forbid(unsafe_code)]

pub mod debug;
pub mod exit;
pub mod memory;
pub mod snapshot;
pub mod state;

use std::sync::Arc;

pub use debug::{DebugCause, GuestDebug, HwBreakpoint, HwKind};
pub use exit::{ExitCounters, ExitReason, ExitStats, ExitStatsSource, VcpuExit};
pub use memory::MemorySlot;
pub use snapshot::{VcpuState, VmState};
pub use state::{CpuidEntry, DescriptorTable, Fpu, Msr, Regs, SRegs, Segment};
pub use vmm_sys_util::eventfd::EventFd;

/// Errors of the hypervisor API. Backends map their own failures onto these.
#[derive(Debug, thiserror::Error)]
pub enum HvError {
    /// The accelerator cannot be used on this host (missing device, no
    /// permission, unsupported API version...).
    #[error("accelerator {accel} is not available: {reason}")]
    Unavailable { accel: &'static str, reason: String },
    /// An operating-system call made by the backend failed.
    #[error("{op} failed")]
    Os {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The caller passed something the backend refuses.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The backend does not implement this operation.
    #[error("{0} is not supported by this accelerator")]
    Unsupported(&'static str),
    /// The guest stopped in a state the backend cannot continue from
    /// (KVM_EXIT_FAIL_ENTRY, KVM_EXIT_INTERNAL_ERROR, ...).
    #[error("guest cannot continue: {0}")]
    GuestFailure(String),
    /// A saved state does not fit the VM or vCPU it is restored into
    /// (another CPU vendor, an MSR the host lacks, a size mismatch...).
    #[error("the saved state does not fit: {0}")]
    StateMismatch(String),
}

/// The VMM side of port and MMIO accesses. Implemented by the VMM's buses.
///
/// A backend calls these from inside [`Vcpu::run`] and continues the guest
/// afterwards; the size of an access is the length of `data` (1, 2, 4 or 8).
pub trait IoHandler: Sync {
    fn pio_read(&self, port: u16, data: &mut [u8]);
    fn pio_write(&self, port: u16, data: &[u8]);
    fn mmio_read(&self, gpa: u64, data: &mut [u8]);
    fn mmio_write(&self, gpa: u64, data: &[u8]);
}

/// Makes a running (or the next) [`Vcpu::run`] return [`VcpuExit::Interrupted`].
///
/// Cheap to clone and safe to use from any thread.
#[derive(Clone)]
pub struct Kicker(Arc<dyn Fn() + Send + Sync>);

impl Kicker {
    pub fn new(kick: impl Fn() + Send + Sync + 'static) -> Self {
        Kicker(Arc::new(kick))
    }

    pub fn kick(&self) {
        (self.0)()
    }
}

impl std::fmt::Debug for Kicker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kicker")
    }
}

/// What the VMM asks for when it creates a VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VmConfig {
    /// Number of vCPUs the VM will have (the irqchip is sized for them).
    pub vcpus: u32,
    /// An in-kernel i8254 PIT (ports 0x40–0x43 and 0x61, IRQ 0). Without
    /// it those ports reach the [`IoHandler`] (QEMU's `-machine pit=off`).
    pub pit: bool,
    /// The PIT drops the ticks a guest missed (QEMU's
    /// `kvm-pit.lost_tick_policy=discard`) instead of delivering them late,
    /// one after another (KVM's default, which Firecracker and QEMU keep).
    /// The emu PIT always coalesces missed ticks into one interrupt, as a
    /// PIC keeps one request. On KVM, choosing `discard` costs the
    /// KVM_REINJECT_CONTROL call, whose SRCU grace period was 8–20 ms of
    /// every VM start on this project's (nested) hosts.
    pub pit_discards_lost_ticks: bool,
}

impl VmConfig {
    /// `vcpus` vCPUs with the PIT, KVM's lost-tick policy.
    pub fn new(vcpus: u32) -> VmConfig {
        VmConfig {
            vcpus,
            pit: true,
            pit_discards_lost_ticks: false,
        }
    }
}

/// An MSI message as a device or the VMM sends it (address/data pair).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MsiMessage {
    pub address: u64,
    pub data: u32,
}

/// Where a guest write signals an ioeventfd ([`Vm::register_ioevent`]).
///
/// The address must be the exact address of the write (its first byte): a
/// wider write that merely covers the address does not match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoEventAddress {
    /// A port.
    Pio(u16),
    /// A guest-physical address outside RAM.
    Mmio(u64),
}

/// Width, in bytes, of the guest write an ioeventfd with a datamatch
/// matches. KVM_IOEVENTFD compares a datamatch only against writes of one
/// registered length; the API fixes it at 4 bytes, the 32-bit write
/// virtio-mmio's `QueueNotify` (and virtio-pci's notify capability)
/// receives. A datamatch value must therefore fit in 32 bits.
pub const IOEVENT_DATAMATCH_LEN: usize = 4;

/// The GSIs [`Vm::set_msi_route`] accepts: above the 24 IOAPIC pins
/// (GSIs 0–23, which [`Vm::set_irq_line`] and irqfds drive), below 1024.
pub const MSI_GSI_RANGE: std::ops::Range<u32> = 24..1024;

/// Multiprocessing state of a vCPU, as the local APIC sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum MpState {
    /// Running (the bootstrap processor after reset).
    Runnable,
    /// Waiting for INIT (an application processor after reset).
    Uninitialized,
    /// INIT received, waiting for SIPI.
    InitReceived,
    /// Executed HLT, waiting for an interrupt.
    Halted,
    /// SIPI received, about to start.
    SipiReceived,
}

/// An accelerator: the `/dev/kvm` of the seed.
pub trait Hypervisor: Send + Sync {
    /// Short name used on the command line (`kvm`, `emu`).
    fn name(&self) -> &'static str;
    /// Creates a VM with an in-kernel irqchip and (unless `config.pit` is
    /// false) PIT.
    fn create_vm(&self, config: VmConfig) -> Result<Box<dyn Vm>, HvError>;
    /// Whether the accelerator has KVM capability `cap`
    /// (KVM_CHECK_EXTENSION > 0); `None` for an accelerator that has no
    /// KVM capabilities (a custom CPU template's `kvm_capabilities`).
    fn has_kvm_capability(&self, _cap: u32) -> Option<bool> {
        None
    }
    /// The ioctls this accelerator's threads make, for the syscall
    /// filters (see [`HostCalls`]).
    fn host_calls(&self) -> HostCalls;
}

/// A virtual machine: `struct kvm` of the seed.
pub trait Vm: Send + Sync {
    /// Maps (or replaces) a memory slot. The VM keeps the region alive for as
    /// long as the slot is mapped.
    fn set_memory_slot(&self, slot: MemorySlot) -> Result<(), HvError>;
    /// Unmaps a slot; unknown ids are an error.
    fn remove_memory_slot(&self, id: u32) -> Result<(), HvError>;
    /// Returns and clears the dirty bitmap of a slot that logs dirty pages:
    /// bit `n` of word `n / 64` is guest page `n` of the slot (4 KiB pages),
    /// set when the guest wrote it since the previous call.
    fn get_dirty_log(&self, id: u32) -> Result<Vec<u64>, HvError>;
    /// Creates vCPU `id` (0-based, below `VmConfig::vcpus`).
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>, HvError>;
    /// Sets the level of a GSI on the in-kernel irqchip (KVM_IRQ_LINE).
    fn set_irq_line(&self, gsi: u32, level: bool) -> Result<(), HvError>;
    /// Delivers an MSI (KVM_SIGNAL_MSI).
    fn signal_msi(&self, msi: MsiMessage) -> Result<(), HvError>;
    /// A device wrote `len` bytes of guest RAM at `gpa` directly (DMA, not
    /// through a vCPU). Accelerators that cache translated guest code drop
    /// what they decoded from those bytes; hardware virtualization needs
    /// nothing (the default).
    fn note_guest_write(&self, _gpa: u64, _len: u64) {}
    /// Makes guest writes to `addr` signal `event` instead of reaching the
    /// [`IoHandler`] (KVM_IOEVENTFD): a matching write adds 1 to the
    /// eventfd's counter and the vCPU continues at once.
    ///
    /// With `datamatch` `None`, a write of any size whose first byte is at
    /// `addr` matches. With `Some(v)`, only a write of exactly
    /// [`IOEVENT_DATAMATCH_LEN`] (4) bytes at `addr` whose little-endian
    /// value is `v` matches; other writes there reach the handler (a `v`
    /// above `u32::MAX` is refused). Reads always reach the handler.
    ///
    /// As on KVM, a registration may not collide with an existing one at
    /// the same address: two registrations without datamatch, or one
    /// without and one with, or two with the same value are refused.
    fn register_ioevent(
        &self,
        event: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<(), HvError>;
    /// Removes a registration made with the same eventfd (the same file
    /// descriptor), address and datamatch; anything else is an error.
    fn unregister_ioevent(
        &self,
        event: &EventFd,
        addr: IoEventAddress,
        datamatch: Option<u64>,
    ) -> Result<(), HvError>;
    /// Makes writes to `event` pulse `gsi` (KVM_IRQFD without resample):
    /// the line is raised then lowered, which an IOAPIC pin programmed for
    /// edge triggering sees as one interrupt. Writes that arrive before the
    /// backend consumed the counter coalesce into one pulse. GSIs 0–23 go
    /// to the IOAPIC (and GSIs 0–15 to the PIC, as [`Vm::set_irq_line`]);
    /// a GSI of [`MSI_GSI_RANGE`] sends the MSI [`Vm::set_msi_route`] gave
    /// it, or nothing while it has none.
    ///
    /// The backend consumes the eventfd's counter: nobody else may read it.
    /// One eventfd can drive one GSI at a time.
    fn register_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), HvError>;
    /// Stops `event` (the same file descriptor) from driving `gsi`. Once
    /// this returns, no further interrupt comes from it.
    fn unregister_irqfd(&self, event: &EventFd, gsi: u32) -> Result<(), HvError>;
    /// Makes `gsi` (in [`MSI_GSI_RANGE`]) deliver `msi` when its irqfd
    /// fires (KVM_SET_GSI_ROUTING). Replaces an earlier route of the same
    /// GSI; an irqfd registered on it stays registered and uses the new
    /// message from then on (a guest rewriting an MSI-X table entry).
    fn set_msi_route(&self, gsi: u32, msi: MsiMessage) -> Result<(), HvError>;
    /// Stops the VM's clock while the VMM pauses the VM (every vCPU is out
    /// of [`Vcpu::run`]): the time the in-kernel timers (LAPIC, PIT) and a
    /// paravirtual clock read does not advance until [`Vm::resume_clock`],
    /// so the guest sees no jump and its timers fire after the pause as
    /// they would have without it. KVM: KVM_GET_CLOCK here and
    /// KVM_SET_CLOCK on resume. An accelerator without the capability says
    /// `Unsupported` (the default).
    fn pause_clock(&self) -> Result<(), HvError> {
        Err(HvError::Unsupported("pausing the VM clock"))
    }
    /// Lets the clock [`Vm::pause_clock`] stopped run again from where it
    /// stopped.
    fn resume_clock(&self) -> Result<(), HvError> {
        Err(HvError::Unsupported("pausing the VM clock"))
    }
    /// The VM clock and the in-"kernel" irqchip and PIT. Call it while no
    /// vCPU runs (the VMM paused the VM).
    fn save_state(&self) -> Result<VmState, HvError> {
        Err(HvError::Unsupported("saving the VM state"))
    }
    /// Restores what [`Vm::save_state`] returned, before the vCPUs'
    /// states. A state that does not fit (a PIT on a VM without one) is
    /// refused with [`HvError::StateMismatch`] and changes nothing.
    fn restore_state(&self, _state: &VmState) -> Result<(), HvError> {
        Err(HvError::Unsupported("restoring the VM state"))
    }
    /// Every CPUID leaf this accelerator can present to a guest
    /// (KVM_GET_SUPPORTED_CPUID). `arch::cpuid` reduces it to Ferrovisor's
    /// documented CPU template before it reaches a vCPU.
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>, HvError>;
}

/// A virtual CPU: `struct kvm_vcpu` of the seed.
pub trait Vcpu: Send {
    fn id(&self) -> u32;
    /// Runs the guest until something the VMM must decide on. Port and MMIO
    /// accesses are served through `io` without returning.
    fn run(&mut self, io: &dyn IoHandler) -> Result<VcpuExit, HvError>;
    /// A handle that interrupts `run` from another thread.
    fn kicker(&self) -> Kicker;

    fn get_regs(&self) -> Result<Regs, HvError>;
    fn set_regs(&mut self, regs: &Regs) -> Result<(), HvError>;
    fn get_sregs(&self) -> Result<SRegs, HvError>;
    fn set_sregs(&mut self, sregs: &SRegs) -> Result<(), HvError>;
    fn get_fpu(&self) -> Result<Fpu, HvError>;
    fn set_fpu(&mut self, fpu: &Fpu) -> Result<(), HvError>;
    /// Reads the MSRs named by `msrs[i].index` into `msrs[i].data`.
    fn get_msrs(&self, msrs: &mut [Msr]) -> Result<(), HvError>;
    fn set_msrs(&mut self, msrs: &[Msr]) -> Result<(), HvError>;
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<(), HvError>;
    /// The vCPU's multiprocessing state (KVM_GET_MP_STATE).
    fn get_mp_state(&self) -> Result<MpState, HvError> {
        Err(HvError::Unsupported("get_mp_state"))
    }
    /// Sets the multiprocessing state, e.g. makes an application processor
    /// runnable without an INIT/SIPI sequence (KVM_SET_MP_STATE).
    fn set_mp_state(&mut self, _state: MpState) -> Result<(), HvError> {
        Err(HvError::Unsupported("set_mp_state"))
    }
    /// Exit counts by reason since the vCPU was created.
    fn exit_stats(&self) -> ExitStats {
        self.exit_stats_source().exit_stats()
    }
    /// A handle that reads this vCPU's exit counts from any thread, also
    /// while it runs and after it is gone.
    fn exit_stats_source(&self) -> Arc<dyn ExitStatsSource>;
    /// Tells the guest's paravirtual clock that the VMM paused this vCPU
    /// (KVM_KVMCLOCK_CTRL: its soft-lockup watchdog does not fire on
    /// resume). Called on the vCPU's thread while it is paused;
    /// `Unsupported` where there is nothing to tell (the default).
    fn notify_paused(&mut self) -> Result<(), HvError> {
        Err(HvError::Unsupported("KVM_KVMCLOCK_CTRL"))
    }
    /// Everything about the vCPU (registers, XSAVE, MSRs, LAPIC, events,
    /// MP state, TSC). Call it while the vCPU is outside [`Vcpu::run`].
    fn save_state(&self) -> Result<VcpuState, HvError> {
        Err(HvError::Unsupported("saving the vCPU state"))
    }
    /// Restores what [`Vcpu::save_state`] returned (after
    /// [`Vm::restore_state`]). A state that does not fit this backend or
    /// host is an [`HvError::StateMismatch`]; the vCPU may then be left
    /// partly restored and should not run.
    fn restore_state(&mut self, _state: &VcpuState) -> Result<(), HvError> {
        Err(HvError::Unsupported("restoring the vCPU state"))
    }
    /// Sets what the VMM's debugger asks of this vCPU (KVM_SET_GUEST_DEBUG):
    /// stops come back from [`Vcpu::run`] as [`VcpuExit::Debug`]. Call it
    /// while the vCPU is outside `run`. An accelerator or host that cannot
    /// debug guests says `Unsupported` (the default).
    fn set_guest_debug(&mut self, _debug: &GuestDebug) -> Result<(), HvError> {
        Err(HvError::Unsupported("guest debugging"))
    }
    /// Translates guest-linear address `gva` through this vCPU's current
    /// page tables (KVM_TRANSLATE) without side effects on the guest:
    /// `None` when it is not mapped. With paging off it is the identity.
    fn translate_gva(&mut self, _gva: u64) -> Result<Option<u64>, HvError> {
        Err(HvError::Unsupported("address translation"))
    }
}

/// What an accelerator's threads ask of the host kernel beyond memory,
/// synchronization and file I/O: the ioctl request numbers a syscall
/// filter (seccomp) must allow. Neutral numbers, no backend types.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostCalls {
    /// ioctls of a thread running a vCPU (KVM_RUN, register access...).
    pub vcpu_ioctls: Vec<u64>,
    /// ioctls of any thread that raises guest interrupts or changes the
    /// VM from outside a vCPU (KVM_IRQ_LINE, KVM_SIGNAL_MSI, the clock...).
    pub vm_ioctls: Vec<u64>,
    /// A vCPU thread compiles guest code (the emu JIT): it turns its own
    /// freshly written pages read-execute (mprotect to PROT_READ |
    /// PROT_EXEC; no page is ever writable and executable at once).
    pub vcpu_jit: bool,
}

impl HostCalls {
    /// Adds what `other` needs.
    pub fn merge(&mut self, other: &HostCalls) {
        self.vcpu_jit |= other.vcpu_jit;
        for (mine, theirs) in [
            (&mut self.vcpu_ioctls, &other.vcpu_ioctls),
            (&mut self.vm_ioctls, &other.vm_ioctls),
        ] {
            mine.extend(
                theirs
                    .iter()
                    .filter(|r| !mine.contains(r))
                    .copied()
                    .collect::<Vec<_>>(),
            );
        }
    }
}
