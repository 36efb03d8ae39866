//! The ACPI tables of a machine: the platform devices (COM1, the RTC, the
//! i8042 keyboard controller), the virtio devices on their transport, and
//! the VM generation ID with its Generic Event Device.

use arch::acpi::{AcpiConfig, AcpiDevice, ACPI_AREA_END, ACPI_AREA_START};
use arch::boot::{BootInfo, BootKind};
use vm_memory::GuestMemoryMmap;

use crate::config::{MachineConfig, VirtioTransport};
use crate::MachineError;

/// The DSDT entries of the virtio devices of `config`.
pub(crate) fn virtio_acpi_devices(config: &MachineConfig) -> Result<Vec<AcpiDevice>, MachineError> {
    if config.transport == VirtioTransport::Pci {
        return super::pci::acpi_devices(config);
    }
    Ok(super::virtio::mmio_slots(config)?
        .into_iter()
        .map(|(addr, irq)| AcpiDevice::virtio_mmio(addr, super::virtio::VIRTIO_MMIO_SIZE, irq))
        .collect())
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
    let mut devices = vec![AcpiDevice::COM1, AcpiDevice::Rtc, AcpiDevice::Keyboard];
    devices.extend_from_slice(extra_devices);
    // The device manager attaches the device when the tables are written.
    devices.push(AcpiDevice::VmGenId {
        addr: super::VMGENID_ADDR,
        gsi: super::VMGENID_GSI,
    });
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
