//! Platform devices of a Ferrovisor machine and the buses that route guest
//! port and MMIO accesses to them.
//!
//! Devices are state machines: they never see threads, file descriptors or
//! the hypervisor. What they need from the outside world arrives as small
//! traits ([`IrqLine`], [`Clock`]) or callbacks ([`RequestSink`],
//! [`DeadlineSink`]).
#![forbid(unsafe_code)]

pub mod acpi_pm;
pub mod boot_timer;
pub mod bus;
pub mod clock;
pub mod debug_exit;
pub mod fw_cfg;
pub mod i8042;
pub mod pc_testdev;
pub mod ratelimit;
pub mod reset_control;
pub mod rtc;
pub mod serial;
pub mod serial_output;
pub mod shutdown_port;

use std::sync::Arc;

pub use bus::{Bus, BusCounters, BusDevice, BusError, IoBuses};
pub use clock::{Clock, DeadlineSink, HostClock, TimedDevice};

/// An interrupt line of the platform (a GSI on the irqchip).
pub trait IrqLine: Send + Sync {
    fn set_level(&self, level: bool);
    /// An edge: raise then lower the line.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// What a guest can ask of the machine through a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestRequest {
    /// System reset (i8042 pulse of the reset line, ...).
    Reset,
    /// Power off (ACPI S5, ...).
    PowerOff,
    /// The debug-exit port was written: end with this exit status.
    DebugExit { status: i32 },
}

/// Where devices send [`GuestRequest`]s; the VMM decides what they mean.
pub type RequestSink = Arc<dyn Fn(GuestRequest) + Send + Sync>;
