//! The platform of every machine: the devices on the port bus, the timer
//! that polls the timed ones, and the ACPI tables that describe them.
//!
//! | ports | device | IRQ |
//! |---|---|---|
//! | 0x60–0x64 | i8042 (reset line only) | — |
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
//! The firmware ROM below 4 GiB and the BIOS reset entry at F000:FFF0
//! ([`arch::firmware`]) reset the machine through the i8042, so a kernel
//! that reboots through the BIOS ends the VM as a reset does.
//!
//! virtio-mmio devices (in the DSDT as `LNRO0005`, level-triggered IRQs):
//! one 4 KiB window each from [`VIRTIO_MMIO_BASE`], the disks first (in
//! `--disk` order), then the entropy device; IRQs from [`VIRTIO_IRQS`].
//! With `--transport pci` the same devices are virtio-pci functions on PCI
//! bus 0 instead (see [`crate::pci_board`]).
//! `--disk` order), then the network devices (in `--net` order), then the
//! entropy device, the socket device and the console; IRQs from
//! [`VIRTIO_IRQS`].

use std::sync::{Arc, Mutex};

use arch::acpi::{AcpiConfig, AcpiDevice, ACPI_AREA_END, ACPI_AREA_START};
use arch::boot::{BootInfo, BootKind};
use devices::acpi_pm::{AcpiPm, ACPI_PM_BASE, ACPI_PM_SIZE};
use devices::debug_exit::{DebugExit, DEBUG_EXIT_PORT, DEBUG_EXIT_SIZE};
use devices::fw_cfg::{FwCfg, FwCfgMachine, FW_CFG_PORT, FW_CFG_SIZE};
use devices::i8042::{I8042, I8042_BASE, I8042_SIZE};
use devices::pc_testdev::{
    TestdevIrq, TestdevPorts, TESTDEV_IRQ_LINES, TESTDEV_IRQ_PORT, TESTDEV_PORT, TESTDEV_SIZE,
};
use devices::ratelimit::RateLimiter;
use devices::reset_control::{ResetControl, RESET_CONTROL_PORT, RESET_CONTROL_SIZE};
use devices::rtc::{Rtc, RTC_BASE, RTC_IRQ, RTC_SIZE};
use devices::serial::{Serial, COM1_BASE, COM1_IRQ, UART_SIZE};
use devices::shutdown_port::{ShutdownPort, SHUTDOWN_PORT, SHUTDOWN_SIZE};
use devices::{Clock, HostClock, IoBuses, IrqLine, RequestSink};
use hv::Vm;
use vm_memory::GuestMemoryMmap;

use crate::config::{ConsoleDevice, MachineConfig, VirtioTransport};
use crate::platform_timer::PlatformTimer;
use crate::MachineError;

/// Guest-physical base of the virtio-mmio windows (in the MMIO hole).
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// Size of each virtio-mmio window.
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// GSIs of the virtio-mmio devices, in order: 4 (COM1) and 8 (RTC) are
/// taken, 0 and 2 are the timer's.
pub const VIRTIO_IRQS: [u32; 17] = [
    5, 6, 7, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22,
];

/// How many virtio devices `config` asks for (whatever the transport).
pub(crate) fn virtio_device_count(config: &MachineConfig) -> usize {
    config.disks.len()
        + config.nets.len()
        + usize::from(config.rng)
        + usize::from(config.vsock.is_some())
        + usize::from(config.console_device == ConsoleDevice::Virtio)
}

/// Where each virtio device of `config` goes: (window base, GSI).
pub(crate) fn virtio_slots(config: &MachineConfig) -> Result<Vec<(u64, u32)>, MachineError> {
    let count = virtio_device_count(config);
    if count > VIRTIO_IRQS.len() {
        return Err(MachineError::TooManyVirtioDevices {
            count,
            max: VIRTIO_IRQS.len(),
        });
    }
    Ok((0..count)
        .map(|i| {
            (
                VIRTIO_MMIO_BASE + i as u64 * VIRTIO_MMIO_SIZE,
                VIRTIO_IRQS[i],
            )
        })
        .collect())
}

/// The DSDT entries of the virtio devices of `config`.
pub(crate) fn virtio_acpi_devices(config: &MachineConfig) -> Result<Vec<AcpiDevice>, MachineError> {
    if config.transport == VirtioTransport::Pci {
        return crate::pci_board::acpi_devices(config);
    }
    Ok(virtio_slots(config)?
        .into_iter()
        .map(|(addr, irq)| AcpiDevice::virtio_mmio(addr, VIRTIO_MMIO_SIZE, irq))
        .collect())
}

/// Registers the queue notifications of a device as ioeventfds, so that
/// the guest's QueueNotify writes wake the device without a VM exit (kvm)
/// or a trip through the VMM's buses (emu). An accelerator without them
/// leaves the writes to the transport, which signals the same eventfds.
pub(crate) fn register_notifiers(
    vm: &Arc<dyn Vm>,
    device: &str,
    notifiers: Vec<virtio::QueueNotifier>,
) {
    for n in notifiers {
        let addr = if n.pio {
            hv::IoEventAddress::Pio(n.addr as u16)
        } else {
            hv::IoEventAddress::Mmio(n.addr)
        };
        if let Err(e) = vm.register_ioevent(&n.event, addr, n.datamatch.map(u64::from)) {
            tracing::info!(device, error = %e, "queue notifications go through the VMM");
            return;
        }
    }
}

/// Tells `vm` of device writes to guest RAM (emu drops code decoded from
/// the bytes a device overwrote).
pub(crate) fn guest_write_hook(vm: &Arc<dyn Vm>) -> virtio::GuestWriteHook {
    let vm = vm.clone();
    Arc::new(move |gpa, len| vm.note_guest_write(gpa, len))
}

/// Raises a GSI on the VM's irqchip.
pub(crate) struct GsiLine {
    vm: Arc<dyn Vm>,
    gsi: u32,
    log_limit: RateLimiter,
}

impl GsiLine {
    /// The line of `gsi` on `vm`.
    pub(crate) fn line(vm: &Arc<dyn Vm>, gsi: u32) -> Arc<dyn IrqLine> {
        Arc::new(GsiLine {
            vm: vm.clone(),
            gsi,
            log_limit: RateLimiter::default(),
        })
    }
}

impl IrqLine for GsiLine {
    fn set_level(&self, level: bool) {
        if let Err(e) = self.vm.set_irq_line(self.gsi, level) {
            if self.log_limit.allow() {
                tracing::warn!(gsi = self.gsi, error = %e, "cannot set irq line");
            }
        }
    }
}

/// The devices of a machine.
pub(crate) struct Board {
    pub buses: IoBuses,
    pub serial: Arc<Mutex<Serial>>,
    /// Polls the RTC; started by `Machine::run`.
    pub timer: PlatformTimer,
    /// The input of the virtio console, when the console is one.
    pub virtio_console: Option<virtio::console::ConsoleInput>,
}

/// Builds the platform devices of `config` for `vm`; guest requests
/// (power off, reset, debug exit) go to `requests`.
pub(crate) fn build(
    vm: &Arc<dyn Vm>,
    mem: &GuestMemoryMmap,
    config: &MachineConfig,
    requests: RequestSink,
    accel: &str,
) -> Result<Board, MachineError> {
    let clock: Arc<dyn Clock> = Arc::new(HostClock::new());
    let mut timer = PlatformTimer::new(clock.clone());
    let serial = Arc::new(Mutex::new(Serial::new(
        GsiLine::line(vm, COM1_IRQ),
        config.console.writer(),
    )));
    let rtc = {
        let mut rtc = Rtc::new(GsiLine::line(vm, RTC_IRQ), clock.clone());
        let below_4g = config.memory.min(arch::layout::MMIO_HOLE_START);
        rtc.set_memory_size(below_4g, config.memory - below_4g);
        rtc.set_deadline_sink(timer.deadline_sink());
        Arc::new(Mutex::new(rtc))
    };
    timer.add(rtc.clone());

    let mut buses = IoBuses::default();
    buses
        .pio
        .insert("com1", COM1_BASE.into(), UART_SIZE, serial.clone())?;
    buses.pio.insert(
        "i8042",
        I8042_BASE.into(),
        I8042_SIZE,
        Arc::new(Mutex::new(I8042::new(requests.clone()))),
    )?;
    buses.pio.insert("rtc", RTC_BASE.into(), RTC_SIZE, rtc)?;
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
        Arc::new(Mutex::new(AcpiPm::new(requests.clone(), clock))),
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
    }
    let reset_control = Arc::new(Mutex::new(ResetControl::new(requests)));
    // irqfds spare KVM an ioctl per MSI; emu's are one more thread hop.
    let virtio_console = add_virtio_devices(
        &mut buses,
        vm,
        mem,
        config,
        accel == "kvm",
        reset_control.clone(),
    )?;
    if config.transport != VirtioTransport::Pci {
        // Without a PCI host bridge the register has the port to itself.
        buses.pio.insert(
            "reset-control",
            RESET_CONTROL_PORT.into(),
            RESET_CONTROL_SIZE,
            reset_control,
        )?;
    }
    Ok(Board {
        buses,
        serial,
        timer,
        virtio_console,
    })
}

/// Opens the disks, the TAP devices, the entropy source, the vsock socket
/// and the virtio console of `config` and puts them on their transport;
/// returns the virtio console's input, if any.
fn add_virtio_devices(
    buses: &mut IoBuses,
    vm: &Arc<dyn Vm>,
    mem: &GuestMemoryMmap,
    config: &MachineConfig,
    use_irqfds: bool,
    reset_control: Arc<Mutex<ResetControl>>,
) -> Result<Option<virtio::console::ConsoleInput>, MachineError> {
    let mut models: Vec<(String, Box<dyn virtio::VirtioDevice>)> = Vec::new();
    for (i, disk) in config.disks.iter().enumerate() {
        let id = disk.id.as_deref().unwrap_or("");
        let block =
            virtio::blk::Block::open(&disk.path, disk.read_only, id).map_err(MachineError::Disk)?;
        models.push((format!("virtio-blk{i}"), Box::new(block)));
    }
    for (index, net) in config.nets.iter().enumerate() {
        let tap = virtio::tap::Tap::open(&net.tap)
            .map_err(|source| MachineError::Net { index, source })?;
        let mut device =
            virtio::net::Net::with_offloads(Box::new(tap), net.mac_or_default(index), net.offload);
        if let Some(m) = config.mmds.as_ref().filter(|_| net.mmds) {
            device.set_mmds(mmds::Stack::new(m.config, m.shared.clone()));
        }
        models.push((format!("virtio-net{index}"), Box::new(device)));
    }
    if config.rng {
        let rng = virtio::rng::Rng::new().map_err(MachineError::Entropy)?;
        models.push(("virtio-rng".to_string(), Box::new(rng)));
    }
    if let Some(vsock) = &config.vsock {
        let device =
            virtio::vsock::Vsock::new(vsock.cid, &vsock.socket).map_err(MachineError::Vsock)?;
        models.push(("virtio-vsock".to_string(), Box::new(device)));
    }
    let mut console_input = None;
    if config.console_device == ConsoleDevice::Virtio {
        let console = virtio::console::Console::new(config.console.writer())
            .map_err(MachineError::VirtioEvents)?;
        console_input = Some(console.input());
        models.push(("virtio-console".to_string(), Box::new(console)));
    }
    if config.transport == VirtioTransport::Pci {
        crate::pci_board::add_devices(buses, vm, mem, models, use_irqfds, reset_control)?;
        return Ok(console_input);
    }
    for ((name, model), (addr, irq)) in models.into_iter().zip(virtio_slots(config)?) {
        let transport =
            virtio::mmio::MmioTransport::new(model, mem.clone(), GsiLine::line(vm, irq))
                .map_err(MachineError::VirtioEvents)?;
        transport.set_guest_write_hook(guest_write_hook(vm));
        let notifiers = transport
            .notifiers(addr)
            .map_err(MachineError::VirtioEvents)?;
        register_notifiers(vm, &name, notifiers);
        buses.mmio.insert(
            &name,
            addr,
            VIRTIO_MMIO_SIZE,
            Arc::new(Mutex::new(transport)),
        )?;
    }
    Ok(console_input)
}

/// Why the ACPI tables were or were not written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiPlacement {
    /// Written; the RSDP is at this address.
    Written { rsdp: u64 },
    /// A bare-ELF boot: no tables (the kernel may load into the BIOS area).
    NotForBare,
    /// A Multiboot kernel (or its module) lies in the BIOS area.
    KernelInTheWay,
}

/// Writes the ACPI tables for a machine of `vcpus` vCPUs after the kernel
/// `boot` was loaded: for Linux (and tells it where the RSDP is) and for
/// Multiboot kernels that leave the BIOS area free; never for bare ELF.
pub(crate) fn write_acpi_tables(
    mem: &GuestMemoryMmap,
    boot: &BootInfo,
    vcpus: u32,
    extra_devices: &[AcpiDevice],
) -> Result<AcpiPlacement, crate::MachineError> {
    let area = ACPI_AREA_START..ACPI_AREA_END;
    let overlaps = |r: &std::ops::Range<u64>| r.start < area.end && area.start < r.end;
    match boot.kind {
        BootKind::Bare => return Ok(AcpiPlacement::NotForBare),
        BootKind::Multiboot
            if overlaps(&boot.kernel) || boot.initrd.as_ref().is_some_and(overlaps) =>
        {
            tracing::info!(
                kernel = ?boot.kernel,
                "the Multiboot kernel lies in the BIOS area: no ACPI tables"
            );
            return Ok(AcpiPlacement::KernelInTheWay);
        }
        _ => {}
    }
    let mut devices = vec![AcpiDevice::COM1, AcpiDevice::Rtc];
    devices.extend_from_slice(extra_devices);
    let cfg = AcpiConfig {
        devices,
        ..AcpiConfig::new(vcpus)
    };
    let rsdp = arch::acpi::create_acpi_tables(mem, &cfg).map_err(crate::MachineError::Acpi)?;
    arch::boot::set_acpi_rsdp(mem, boot, rsdp).map_err(crate::MachineError::Boot)?;
    Ok(AcpiPlacement::Written { rsdp })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress};

    fn boot(kind: BootKind, kernel: std::ops::Range<u64>) -> BootInfo {
        BootInfo {
            kind,
            entry: kernel.start,
            regs: hv::Regs::default(),
            sregs: hv::SRegs::default(),
            kernel,
            initrd: None,
        }
    }

    fn rsdp_signature(mem: &GuestMemoryMmap) -> [u8; 8] {
        let mut sig = [0u8; 8];
        mem.read_slice(&mut sig, GuestAddress(ACPI_AREA_START))
            .unwrap();
        sig
    }

    #[test]
    fn tables_for_multiboot_only_outside_the_bios_area() {
        let mem = crate::memory::create_guest_memory(16 << 20).unwrap();
        let placed = write_acpi_tables(&mem, &boot(BootKind::Bare, 0x20_0000..0x20_1000), 1, &[]);
        assert_eq!(placed.unwrap(), AcpiPlacement::NotForBare);
        assert_eq!(rsdp_signature(&mem), [0; 8]);

        let in_the_way = boot(BootKind::Multiboot, 0xf_0000..0x10_1000);
        let placed = write_acpi_tables(&mem, &in_the_way, 1, &[]);
        assert_eq!(placed.unwrap(), AcpiPlacement::KernelInTheWay);
        let mut module_in_the_way = boot(BootKind::Multiboot, 0x10_0000..0x10_1000);
        module_in_the_way.initrd = Some(0xe_8000..0xe_9000);
        let placed = write_acpi_tables(&mem, &module_in_the_way, 1, &[]);
        assert_eq!(placed.unwrap(), AcpiPlacement::KernelInTheWay);
        assert_eq!(rsdp_signature(&mem), [0; 8]);

        let clear = boot(BootKind::Multiboot, 0x10_0000..0x10_1000);
        let placed = write_acpi_tables(&mem, &clear, 2, &[]);
        assert_eq!(
            placed.unwrap(),
            AcpiPlacement::Written {
                rsdp: ACPI_AREA_START
            }
        );
        assert_eq!(&rsdp_signature(&mem), b"RSD PTR ");
    }

    #[test]
    fn bad_vcpu_counts_are_an_acpi_error() {
        let mem = crate::memory::create_guest_memory(16 << 20).unwrap();
        let err = write_acpi_tables(
            &mem,
            &boot(BootKind::Multiboot, 0x10_0000..0x10_1000),
            0,
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, crate::MachineError::Acpi(_)), "{err}");
    }
}
