//! Ferrovisor's virtual machine monitor.
//!
//! [`Machine::new`] builds a whole x86 machine from one [`MachineConfig`]:
//! guest RAM in the x86 layout, the VM and its vCPUs on the chosen
//! accelerator, the port and MMIO buses with the platform devices, and the
//! kernel loaded for its boot protocol. [`Machine::run`] runs every vCPU on a
//! thread of its own until the guest powers off, resets, triple-faults or
//! writes the debug-exit port, and reports why together with the exit
//! statistics of each vCPU.
#![forbid(unsafe_code)]

pub mod accel;
pub mod config;
pub mod console;
pub mod machine;
pub mod memory;
mod vcpu;

pub use accel::{open_accelerator, Accel, AccelError};
pub use config::{ConsoleOutput, MachineConfig};
pub use machine::{Machine, MachineError, MachineExit, RunReport};
