//! The `kvm` accelerator of Ferrovisor: [`hv::Hypervisor`] on the host's
//! `/dev/kvm`, through kvm-ioctls.
//!
//! This is the only crate that sees kvm types. Its public API is
//! [`KvmHypervisor`] (plus [`probe`] and the kick signal number); the VM and
//! vCPUs it creates are handed out as `Box<dyn hv::Vm>` / `Box<dyn hv::Vcpu>`.
//!
//! What a VM gets on creation (what QEMU and Firecracker set up too):
//! - the TSS at [`TSS_ADDRESS`] and the EPT identity map page at
//!   [`IDENTITY_MAP_ADDRESS`] (needed by Intel hosts for real mode),
//! - the in-kernel irqchip (LAPIC per vCPU, IOAPIC, two PICs),
//! - the in-kernel PIT (KVM_CREATE_PIT2, speaker port as a dummy).
//!
//! Module map: `hypervisor` opens and checks `/dev/kvm`, `vm` owns
//! memory slots and irq lines, `vcpu` runs the guest, `kick` interrupts a
//! running vCPU, `stats` reads KVM's binary statistics, `convert` and
//! `xsave` map between kvm-bindings and `hv` state.

#![deny(clippy::undocumented_unsafe_blocks)]

mod convert;
mod error;
mod guest_debug;
mod host_calls;
mod hypervisor;
mod kick;
mod stats;
mod vcpu;
mod vcpu_state;
mod vm;
mod vm_state;
mod xsave;

pub use hypervisor::{probe, KvmHypervisor, IDENTITY_MAP_ADDRESS, TSS_ADDRESS};
pub use kick::{kick_signal, KICK_SIGNAL_OFFSET};
