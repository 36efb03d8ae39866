//! Ferrovisor's virtual machine monitor.
//!
//! [`Machine::new`] builds a whole x86 machine from one [`MachineConfig`]:
//! guest RAM in the x86 layout, the VM and its vCPUs on the chosen
//! accelerator, the port and MMIO buses with the platform devices (COM1,
//! i8042, CMOS RTC, debug-exit, ACPI power management), the kernel loaded
//! for its boot protocol, and the ACPI tables for Linux and Multiboot
//! kernels. [`Machine::start`] runs every vCPU on a thread of its own and
//! hands the machine to a controller thread ([`controller`]) that pauses,
//! resumes and updates it on command, until the guest powers off, resets,
//! triple-faults or writes the debug-exit port; [`RunningMachine::wait`]
//! reports why together with the exit statistics of each vCPU. A
//! platform timer thread polls the RTC for its periodic, alarm and update
//! interrupts meanwhile. One device manager (`devices`) owns every device.
#![forbid(unsafe_code)]

pub mod accel;
pub mod config;
pub mod console;
pub mod controller;
pub mod debug;
mod devices;
pub mod live;
pub mod machine;
pub mod memory;
pub mod migration;
mod msi;
pub mod platform_timer;
pub mod probe;
pub mod snapshot;
pub mod spec;
mod vcpu;

/// Builds what every VM of this process would build on first use (emu's
/// decoder tables): `ferrovisor fork` calls it before it forks its
/// clones, so that they share those pages.
pub fn warm_up_for_clones() {
    hv_emu::warm_up();
}

pub use accel::{open_accelerator, Accel, AccelError};
pub use config::{
    ConsoleDevice, ConsoleOutput, DiskConfig, MachineConfig, MmdsAttach, NetConfig,
    VirtioTransport, VsockConfig,
};
pub use controller::{Command, CommandError, LimitTarget, MachineHandle, RunState, RunningMachine};
pub use devices::{
    AcpiPlacement, DeviceMetrics, DeviceStateError, DeviceStates, DriveMetrics, EntropyMetrics,
    NetMetrics, UpdateError, VsockMetrics,
};
pub use live::{LiveStats, StatsSample};
pub use machine::{Machine, MachineError, MachineExit, RunReport};
pub use spec::{machine_config, SpecConfigError};
