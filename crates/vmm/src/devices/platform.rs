//! The platform of every machine: the devices on the port bus, the timer
//! that polls the timed ones and the clock they read.
//!
//! | ports | device | IRQ |
//! |---|---|---|
//! | 0x60–0x64 | i8042 keyboard controller (keyboard, reset line) | 1 |
//! | 0x70–0x71 | CMOS RTC | 8 |
//! | 0xe0–0xe7 | pc-testdev scratch register and flush port (`--device pc-testdev`) | — |
//! | 0xf4–0xf7 | debug-exit | — |
//! | 0x3f8–0x3ff | COM1 (16550A) | 4 |
//! | 0x510–0x511 | fw_cfg (selector, data) | — |
//! | 0x600–0x60f | ACPI power management (sleep, reset, PM1, PM timer) | — |
//! | 0xcf9 | reset control register (inside the PCI host bridge's 0xCF8–0xCFF with `--transport pci`) | — |
//! | 0x2000–0x2017 | pc-testdev interrupt lines (`--device pc-testdev`) | GSI 0–23 |
//! | 0x8900 | Bochs shutdown port ("Shutdown" powers off) | — |
//!
//! and on the MMIO bus, with `--device pc-testdev`, its memory range at
//! 0xFF00_0000–0xFF00_FFFF.
//!
//! The firmware ROM below 4 GiB and the BIOS reset entry at F000:FFF0
//! ([`arch::firmware`]) reset the machine through the i8042, so a kernel
//! that reboots through the BIOS ends the VM as a reset does.

use std::sync::{Arc, Mutex};

use devices::acpi_pm::{AcpiPm, ACPI_PM_BASE, ACPI_PM_SIZE};
use devices::debug_exit::{DebugExit, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE};
use devices::fw_cfg::{FwCfg, FwCfgMachine, FW_CFG_PORT, FW_CFG_SIZE};
use devices::i8042::{I8042, I8042_BASE, I8042_KBD_IRQ, I8042_SIZE};
use devices::pc_testdev::{
    TestdevIomem, TestdevIrq, TestdevPorts, TESTDEV_IOMEM_BASE, TESTDEV_IOMEM_SIZE,
    TESTDEV_IRQ_LINES, TESTDEV_IRQ_PORT, TESTDEV_PORT, TESTDEV_SIZE,
};
use devices::reset_control::ResetControl;
use devices::rtc::{Rtc, RTC_BASE, RTC_IRQ, RTC_SIZE};
use devices::serial::{Serial, COM1_BASE, COM1_IRQ, UART_SIZE};
use devices::shutdown_port::{ShutdownPort, SHUTDOWN_PORT, SHUTDOWN_SIZE};
use devices::{IoBuses, RequestSink};
use hv::Vm;

use super::clock::PausableClock;
use super::irq::GsiLine;
use crate::config::MachineConfig;
use crate::platform_timer::PlatformTimer;
use crate::MachineError;

/// The platform devices the device manager reaches after the build.
pub(crate) struct Platform {
    pub serial: Arc<Mutex<Serial>>,
    pub i8042: Arc<Mutex<I8042>>,
    pub rtc: Arc<Mutex<Rtc>>,
    /// Polls the RTC; started when the machine starts.
    pub timer: PlatformTimer,
    /// The clock of the timed devices (stopped while the VM is paused).
    pub clock: Arc<PausableClock>,
    /// The reset control register (port 0xCF9): on the port bus, or in the
    /// PCI host bridge's configuration ports with `--transport pci`.
    pub reset_control: Arc<Mutex<ResetControl>>,
}

/// Builds the platform devices of `config` for `vm`; guest requests
/// (power off, reset, debug exit) go to `requests`.
pub(crate) fn build(
    vm: &Arc<dyn Vm>,
    config: &MachineConfig,
    requests: RequestSink,
    console: Box<dyn std::io::Write + Send>,
    buses: &mut IoBuses,
) -> Result<Platform, MachineError> {
    let clock = Arc::new(PausableClock::new());
    let mut timer = PlatformTimer::new(clock.clone());
    let serial = Arc::new(Mutex::new(Serial::new(
        GsiLine::line(vm, COM1_IRQ),
        console,
    )));
    let rtc = {
        let mut rtc = Rtc::new(GsiLine::line(vm, RTC_IRQ), clock.clone());
        let below_4g = config.memory.min(arch::layout::MMIO_HOLE_START);
        rtc.set_memory_size(below_4g, config.memory - below_4g);
        rtc.set_deadline_sink(timer.deadline_sink());
        Arc::new(Mutex::new(rtc))
    };
    timer.add(rtc.clone());

    buses
        .pio
        .insert("com1", COM1_BASE.into(), UART_SIZE, serial.clone())?;
    let i8042 = Arc::new(Mutex::new(I8042::new(
        requests.clone(),
        GsiLine::line(vm, I8042_KBD_IRQ),
    )));
    buses
        .pio
        .insert("i8042", I8042_BASE.into(), I8042_SIZE, i8042.clone())?;
    buses
        .pio
        .insert("rtc", RTC_BASE.into(), RTC_SIZE, rtc.clone())?;
    buses.pio.insert(
        "debug-exit",
        DEBUG_EXIT_PORT.into(),
        DEBUG_EXIT_SIZE,
        Arc::new(Mutex::new(DebugExit::new(requests.clone()))),
    )?;
    buses.pio.insert(
        "shutdown",
        SHUTDOWN_PORT.into(),
        SHUTDOWN_SIZE,
        Arc::new(Mutex::new(ShutdownPort::new(requests.clone()))),
    )?;
    buses.pio.insert(
        "acpi-pm",
        ACPI_PM_BASE.into(),
        ACPI_PM_SIZE,
        Arc::new(Mutex::new(AcpiPm::new(requests.clone(), clock.clone()))),
    )?;
    let fw_cfg = FwCfg::new(FwCfgMachine {
        ram_size: config.memory,
        // At most MAX_VCPUS (254).
        cpus: config.vcpus as u16,
        max_cpus: config.vcpus as u16,
    });
    buses.pio.insert(
        "fw_cfg",
        FW_CFG_PORT.into(),
        FW_CFG_SIZE,
        Arc::new(Mutex::new(fw_cfg)),
    )?;
    if let Some(clock) = config.boot_timer {
        buses.mmio.insert(
            "boot-timer",
            super::virtio::VIRTIO_MMIO_BASE,
            super::virtio::VIRTIO_MMIO_SIZE,
            Arc::new(Mutex::new(devices::boot_timer::BootTimer::new(clock))),
        )?;
    }
    if config.pc_testdev {
        buses.pio.insert(
            "pc-testdev",
            TESTDEV_PORT.into(),
            TESTDEV_SIZE,
            Arc::new(Mutex::new(TestdevPorts::new())),
        )?;
        let lines = (0..TESTDEV_IRQ_LINES as u32)
            .map(|gsi| GsiLine::line(vm, gsi))
            .collect();
        buses.pio.insert(
            "pc-testdev-irq",
            TESTDEV_IRQ_PORT.into(),
            TESTDEV_IRQ_LINES as u64,
            Arc::new(Mutex::new(TestdevIrq::new(lines))),
        )?;
        buses.mmio.insert(
            "pc-testdev-iomem",
            TESTDEV_IOMEM_BASE,
            TESTDEV_IOMEM_SIZE,
            Arc::new(Mutex::new(TestdevIomem::new())),
        )?;
    }
    Ok(Platform {
        serial,
        i8042,
        rtc,
        timer,
        clock,
        reset_control: Arc::new(Mutex::new(ResetControl::new(requests))),
    })
}
