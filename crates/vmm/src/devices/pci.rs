//! The virtio devices on PCI (`--transport pci`): bus 0 behind a host
//! bridge, configuration mechanism #1 at ports 0xCF8..0xCFF, ECAM at
//! [`PCI_ECAM_START`], and the BARs in the window at [`PCI_MMIO_START`].
//!
//! Device n (0-based, the disks first, then the network devices, then the
//! entropy device — the same order as virtio-mmio) is function 0 of slot
//! n + 1, with its BARs preassigned at `PCI_MMIO_START + n * 64 KiB`
//! (BAR 0, the virtio structures, 16 KiB) and `+ 16 KiB` (BAR 1, MSI-X,
//! 4 KiB). Linux keeps
//! BARs that lie inside the host bridge's window, so the addresses are
//! known before the guest runs (the queue notifiers can be registered at
//! build time). Its INTA# is wired to the GSI virtio-mmio would give it
//! ([`VIRTIO_IRQS`]), described by the host bridge's `_PRT`; Linux uses
//! MSI-X, INTx is the fallback.

use std::sync::{Arc, Mutex};

use arch::acpi::pci::PciHostBridge;
use arch::acpi::AcpiDevice;
use arch::layout::{PCI_ECAM_START, PCI_MMIO_SIZE, PCI_MMIO_START};
use devices::IoBuses;
use hv::Vm;
use pci::bus::{CONFIG_IO_PORT, CONFIG_IO_SIZE, ECAM_BUS_SIZE, SLOTS};
use pci::virtio::{VirtioPci, VirtioPciBars};
use pci::{BarWindow, ConfigIo, Ecam, MsiSink, PciBus};
use vm_memory::GuestMemoryMmap;

use super::irq::{guest_write_hook, register_notifiers, GsiLine};
use super::state::{Placed, Transport};
use super::virtio::{NamedModel, VIRTIO_IRQS};
use crate::config::MachineConfig;
use crate::MachineError;

/// Address space of each device in the BAR window.
pub const PCI_DEVICE_STRIDE: u64 = 0x1_0000;

/// The BARs of device `index`.
fn bars(index: usize) -> VirtioPciBars {
    let base = PCI_MMIO_START + index as u64 * PCI_DEVICE_STRIDE;
    VirtioPciBars {
        virtio: base,
        msix: base + pci::virtio::VIRTIO_BAR_SIZE,
    }
}

/// How many virtio devices `config` has, checked against the slots and
/// GSIs there are.
fn device_count(config: &MachineConfig) -> Result<usize, MachineError> {
    let count = super::virtio::device_count(config);
    let max = VIRTIO_IRQS.len().min(SLOTS - 1);
    if count > max {
        return Err(MachineError::TooManyVirtioDevices { count, max });
    }
    Ok(count)
}

/// The host bridge's ACPI description for `config`.
pub(crate) fn acpi_devices(config: &MachineConfig) -> Result<Vec<AcpiDevice>, MachineError> {
    let mut intx = [0u8; 32];
    for (i, gsi) in VIRTIO_IRQS.iter().take(device_count(config)?).enumerate() {
        intx[i + 1] = *gsi as u8;
    }
    Ok(vec![AcpiDevice::PciHost(PciHostBridge {
        ecam: PCI_ECAM_START,
        mmio_base: PCI_MMIO_START,
        mmio_size: PCI_MMIO_SIZE,
        intx,
    })])
}

/// MSIs to the VM's interrupt controller.
struct VmMsi(crate::msi::MsiSender);

impl MsiSink for VmMsi {
    fn send(&self, address: u64, data: u32) {
        self.0.send(address, data);
    }
}

/// Puts `models` on a new PCI bus and maps the bus's configuration ports
/// (with the reset control register), ECAM and BAR window; returns the
/// placed devices and the bus.
/// A machine whose virtio devices are on virtio-mmio still answers PCI
/// configuration mechanism #1 (ports 0xCF8..0xCFF, the reset control
/// register at 0xCF9 among them) with bus 0 holding the host bridge
/// alone, as a PC without PCI devices does: Linux then finds a working
/// configuration access method and an empty bus, instead of logging
/// "PCI: Fatal: No config space access function found" (pci=off does not
/// silence it).
pub(crate) fn host_bridge_only(
    buses: &mut IoBuses,
    reset_control: Arc<Mutex<dyn devices::BusDevice>>,
) -> Result<(), MachineError> {
    let bus = Arc::new(PciBus::new());
    buses.pio.insert(
        "pci-config",
        CONFIG_IO_PORT.into(),
        CONFIG_IO_SIZE,
        Arc::new(Mutex::new(
            ConfigIo::new(bus).with_reset_control(reset_control),
        )),
    )?;
    Ok(())
}

pub(crate) fn place_on_pci(
    buses: &mut IoBuses,
    vm: &Arc<dyn Vm>,
    mem: &GuestMemoryMmap,
    models: Vec<NamedModel>,
    use_irqfds: bool,
    reset_control: Arc<Mutex<dyn devices::BusDevice>>,
) -> Result<(Vec<Placed>, Arc<PciBus>), MachineError> {
    let mut placed = Vec::new();
    let msi: Arc<dyn MsiSink> = Arc::new(VmMsi(crate::msi::MsiSender::new(vm.clone(), use_irqfds)));
    let mut bus = PciBus::new();
    for (i, (name, model)) in models.into_iter().enumerate() {
        let gsi = *VIRTIO_IRQS
            .get(i)
            .ok_or(MachineError::TooManyVirtioDevices {
                count: i + 1,
                max: VIRTIO_IRQS.len(),
            })?;
        let device = VirtioPci::new(
            model,
            mem.clone(),
            msi.clone(),
            Some((GsiLine::line(vm, gsi), gsi as u8)),
            bars(i),
        )
        .map_err(MachineError::VirtioPci)?;
        device.set_guest_write_hook(guest_write_hook(vm));
        let gate = device.pause_gate();
        // The BARs stay where they were preassigned (Linux keeps them), so
        // the notify addresses are known now. Should a guest move BAR 0,
        // its notifications still arrive through the MMIO path.
        let notifiers = device.notifiers().map_err(MachineError::VirtioEvents)?;
        register_notifiers(vm, &name, notifiers);
        let device = Arc::new(Mutex::new(device));
        let slot = bus.add(device.clone()).map_err(MachineError::Pci)?;
        tracing::debug!(name, slot, "virtio-pci device");
        placed.push(Placed {
            name,
            gate,
            transport: Transport::Pci(device),
        });
    }
    let bus = Arc::new(bus);
    buses.pio.insert(
        "pci-config",
        CONFIG_IO_PORT.into(),
        CONFIG_IO_SIZE,
        Arc::new(Mutex::new(
            ConfigIo::new(bus.clone()).with_reset_control(reset_control),
        )),
    )?;
    buses.mmio.insert(
        "pci-ecam",
        PCI_ECAM_START,
        ECAM_BUS_SIZE,
        Arc::new(Mutex::new(Ecam::new(bus.clone()))),
    )?;
    buses.mmio.insert(
        "pci-bars",
        PCI_MMIO_START,
        PCI_MMIO_SIZE,
        Arc::new(Mutex::new(BarWindow::new(bus.clone(), PCI_MMIO_START))),
    )?;
    Ok((placed, bus))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_fit_the_window_and_slots_match_the_prt() {
        let mut config = MachineConfig::new("k");
        config.rng = true;
        config.transport = crate::config::VirtioTransport::Pci;
        let devices = acpi_devices(&config).unwrap();
        let AcpiDevice::PciHost(host) = devices[0] else {
            panic!("not a host bridge");
        };
        assert_eq!(host.intx[1], VIRTIO_IRQS[0] as u8);
        assert_eq!(host.intx[2], 0);
        let last = bars(VIRTIO_IRQS.len() - 1);
        assert!(last.msix + pci::virtio::MSIX_BAR_SIZE <= PCI_MMIO_START + PCI_MMIO_SIZE);
        assert_eq!(last.virtio % pci::virtio::VIRTIO_BAR_SIZE, 0);
        assert_eq!(last.msix % pci::virtio::MSIX_BAR_SIZE, 0);
        config.disks = vec![
            crate::config::DiskConfig {
                path: "x".into(),
                read_only: false,
                id: None,
                rate_limiter: Default::default(),
                image: Default::default(),
            };
            VIRTIO_IRQS.len()
        ];
        assert!(matches!(
            acpi_devices(&config),
            Err(MachineError::TooManyVirtioDevices { .. })
        ));
    }
}
