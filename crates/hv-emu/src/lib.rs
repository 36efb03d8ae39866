//! The emu accelerator: what VT-x and KVM do, in software.
//!
//! A VM is a table of memory slots (guest-physical ranges backed by host
//! mappings, optionally read-only or dirty-logged) shared by its vCPUs; a
//! vCPU is an [`x86::Cpu`] driven by [`hv::Vcpu::run`] on the caller's
//! thread. The CPU reaches RAM through host pointers it caches in its soft
//! TLB (the "EPT" of this accelerator: guest-physical → host), and
//! everything else through the VMM's [`hv::IoHandler`] in the middle of the
//! instruction.
//!
//! The in-"kernel" irqchip ([`platform`]) gives every VM an IOAPIC, an
//! i8259 pair and an i8254 PIT, and every vCPU a local APIC; the vCPU
//! injects interrupts at instruction boundaries and sleeps in HLT until an
//! interrupt, a timer deadline or a kick.
//!
//! Ioeventfds are checked on the vCPU's MMIO and port-write paths; irqfds
//! are served by one thread per VM ([`irqfd`]).

mod cpuid;
mod hypercall;
mod ioevent;
mod irqfd;
mod memory;
mod platform;
mod vcpu;
mod vcpu_state;
mod vm;
mod vm_state;

pub use cpuid::supported_cpuid;
pub use x86::warm_up;

use hv::{HvError, Hypervisor, Vm, VmConfig};

/// Most vCPUs one emu VM may have (the xAPIC id space).
pub const MAX_VCPUS: u32 = 254;

/// The emu accelerator. Always available.
#[derive(Debug, Default)]
pub struct EmuHypervisor;

impl EmuHypervisor {
    pub fn new() -> EmuHypervisor {
        EmuHypervisor
    }
}

impl Hypervisor for EmuHypervisor {
    fn name(&self) -> &'static str {
        "emu"
    }

    fn create_vm(&self, config: VmConfig) -> Result<Box<dyn Vm>, HvError> {
        if config.vcpus == 0 || config.vcpus > MAX_VCPUS {
            return Err(HvError::InvalidArgument(format!(
                "{} vCPUs requested; emu supports 1 to {MAX_VCPUS}",
                config.vcpus
            )));
        }
        Ok(Box::new(vm::EmuVm::new(config)))
    }

    /// The software CPU makes no ioctls: its threads need only memory,
    /// locks and eventfds, and with the JIT (the default engine)
    /// read-execute pages.
    fn host_calls(&self) -> hv::HostCalls {
        hv::HostCalls {
            vcpu_jit: x86::Engine::from_env() == x86::Engine::Jit && x86::Engine::jit_available(),
            ..Default::default()
        }
    }
}
