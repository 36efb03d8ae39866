//! ACPI tables: how a guest without MP tables (the Debian cloud kernel has
//! `CONFIG_X86_MPPARSE` off) finds its CPUs, the IOAPIC, the platform
//! devices, and how it powers off and reboots.
//!
//! [`create_acpi_tables`] writes, in the BIOS area
//! ([`ACPI_AREA_START`]..[`ACPI_AREA_END`], reserved in the e820 map):
//!
//! | table | contents |
//! |---|---|
//! | RSDP | revision 2, at [`ACPI_RSDP_ADDR`] (16-byte aligned, first in the "RSD PTR " scan range 0xE0000..0xFFFFF); points at the XSDT and (for ACPI 1.0 readers) the RSDT |
//! | XSDT / RSDT | the FADT, the MADT (and the MCFG) |
//! | FADT | revision 6.5; DSDT (32- and 64-bit pointers); PM_TMR_BLK and X_PM_TMR_BLK = the 24-bit PM timer at port [`pm::PM_TMR_PORT`]; RESET_REG = port [`pm::ACPI_RESET_PORT`], value [`pm::ACPI_RESET_VALUE`], RESET_REG_SUP; PWR_BUTTON and SLP_BUTTON flags (no fixed-feature buttons); IAPC_BOOT_ARCH = "VGA not present" (+ "CMOS RTC not present" when the device list has no [`AcpiDevice::Rtc`], + "8042" when it has an [`AcpiDevice::Keyboard`]); hardware-reduced or full fixed hardware, see below |
//! | FACS | full-ACPI mode only (64-byte aligned) |
//! | MADT | LAPIC address, PCAT_COMPAT (dual 8259 present); one enabled Processor Local APIC per vCPU (UID = APIC ID = index); the IOAPIC (GSI base 0); Interrupt Source Override ISA IRQ 0 → GSI 2 (the PIT is wired to IOAPIC pin 2), and in full-ACPI mode IRQ 9 → GSI 9 level/active-high (the SCI); Local APIC NMI on LINT1 for all processors |
//! | DSDT | `\_S5` = SLP_TYP 5, and a device per [`AcpiDevice`] under `\_SB` (see [`dsdt`]) |
//! | MCFG | with an [`AcpiDevice::PciHost`]: the ECAM of PCI bus 0 (see [`pci`]) |
//!
//! # Hardware-reduced ACPI (the default) or full fixed hardware
//!
//! [`AcpiConfig::hw_reduced`] (default `true`) sets the FADT's
//! HW_REDUCED_ACPI flag, as Firecracker, Cloud Hypervisor and QEMU's
//! `microvm` do. What that changes in Linux (arch/x86/kernel/acpi/boot.c,
//! `acpi_generic_reduced_hw_init`, and ACPICA):
//!
//! - `legacy_pic = null_legacy_pic`: Linux never programs the 8259s, so
//!   `nr_legacy_irqs()` is 0 and ISA IRQs 0..15 get no identity mapping.
//!   ISA devices then get their interrupts *only* through their DSDT
//!   `_CRS`. That is why the serial ports ([`AcpiDevice::Serial`], bound by
//!   8250_pnp, which takes over the legacy 0x3F8 port with the mapped IRQ)
//!   and the RTC ([`AcpiDevice::Rtc`], bound by rtc_cmos; without it the
//!   platform RTC device's `request_irq(8)` fails) must be listed.
//! - `x86_init.timers.timer_init` is a no-op: the PIT is not used as the
//!   boot clock-event device and IRQ0 is never checked (`check_timer` is
//!   skipped). Linux still calibrates the TSC by polling PIT channel 2
//!   through port 0x61 (`quick_pit_calibrate`/`pit_calibrate_tsc` touch
//!   the ports directly, whatever ACPI says) — our CPUID template has no
//!   TSC-frequency leaf, so **the PIT's channel 2 and port 0x61 must
//!   work** — then calibrates the LAPIC timer against the TSC, and runs on
//!   the LAPIC timer (or TSC deadline). The RTC is not affected.
//! - No SCI, no PM1 event/control blocks, no GPEs, no FACS. Sleep goes
//!   through the FADT's SLEEP_CONTROL_REG/SLEEP_STATUS_REG, which Linux
//!   requires both to be present before it offers S5 (`pm_power_off =
//!   acpi_power_off`).
//!
//! So hardware-reduced mode does make Linux skip the PIC and the PIT
//! *interrupt*, but it needs neither: it needs the PIT's channel 2 for TSC
//! calibration, the LAPIC timer, and the RTC, which all keep working. It
//! also avoids the paths that are slowest and most fragile under emulation
//! (`check_timer`'s IRQ0 tests through the IOAPIC and the 8259/ExtINT
//! fallbacks, an SCI handler, PM1 status polling). QEMU `microvm` — the
//! speed baseline — boots the same Debian kernel with exactly this
//! combination (hardware-reduced ACPI with an emulated PIT, PIC and RTC,
//! ISA devices in the DSDT).
//!
//! With `hw_reduced = false` the FADT describes full fixed hardware
//! instead: PM1a_EVT_BLK / PM1a_CNT_BLK in the [`pm`] block, SCI = IRQ 9,
//! SMI_CMD = 0 (always in ACPI mode), a FACS, and the IRQ 9 override. Linux
//! then drives the 8259s, uses the PIT as its first clock-event device and
//! tests IRQ0 through IOAPIC pin 2 — the VMM must route the PIT there (the
//! MADT's override says so) and emulate the PM1 registers and the SCI. Use
//! it if a guest needs the legacy timer path.
//!
//! # The VMM's part
//!
//! Emulate the [`pm`] port block (0x600..0x610: power off on
//! [`pm::decode_write`] → `PowerOff`, reset on `Reset`), list the devices it
//! emulates in [`AcpiConfig::devices`], call [`create_acpi_tables`] after
//! [`load_kernel`](crate::boot::load_kernel) (a bare kernel may load into
//! the BIOS area; Linux and Multiboot kernels load at 1 MiB or above), and
//! pass the returned address to
//! [`set_acpi_rsdp`](crate::boot::set_acpi_rsdp) for Linux.

pub mod dsdt;
pub mod pci;
pub mod pm;
#[cfg(test)]
mod tests;
pub mod vmgenid;

use acpi_tables::fadt::{FADTBuilder, Flags};
use acpi_tables::gas::{AccessSize, AddressSpace, GAS};
use acpi_tables::rsdp::Rsdp;
use acpi_tables::sdt::Sdt;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

pub use crate::layout::{ACPI_AREA_END, ACPI_AREA_START, ACPI_RSDP_ADDR};
use crate::layout::{IOAPIC_ADDR, IOAPIC_PINS, LAPIC_ADDR};

/// OEM ID of every table.
pub const OEM_ID: [u8; 6] = *b"FERROV";
/// OEM table ID of every table.
pub const OEM_TABLE_ID: [u8; 8] = *b"FERROVSR";
/// OEM revision of every table.
pub const OEM_REVISION: u32 = 1;

/// Most vCPUs the MADT describes: xAPIC IDs are 8 bits and 0xFF is the
/// broadcast ID.
pub const MAX_VCPUS: u32 = 255;
/// Most serial ports (COM1..COM9).
pub const MAX_SERIAL_PORTS: usize = 9;
/// Most virtio-mmio devices (V000..VFFF).
pub const MAX_VIRTIO_DEVICES: usize = 0x1000;

/// IAPC_BOOT_ARCH: VGA not present.
pub const IAPC_BOOT_ARCH_VGA_NOT_PRESENT: u16 = 1 << 2;
/// IAPC_BOOT_ARCH: an 8042 keyboard controller is present.
pub const IAPC_BOOT_ARCH_8042: u16 = 1 << 1;
/// IAPC_BOOT_ARCH: CMOS RTC not present.
pub const IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT: u16 = 1 << 5;
/// MADT flags: a dual 8259 is present (PCAT_COMPAT).
pub const MADT_PCAT_COMPAT: u32 = 1;
/// MPS INTI flags of the SCI override: active high, level triggered.
pub const MPS_INTI_ACTIVE_HIGH_LEVEL: u16 = 0x000d;

/// How a device's interrupt line signals.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqTrigger {
    /// One pulse per event (Firecracker's virtio-mmio).
    Edge,
    /// Asserted while the device has an interrupt pending (QEMU's
    /// virtio-mmio: while InterruptStatus is non-zero, until InterruptACK).
    Level,
}

/// A device the DSDT describes. The IRQs are GSIs (IOAPIC inputs); they are
/// active high.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcpiDevice {
    /// A virtio-mmio transport: `_HID "LNRO0005"`, `_UID` = its index among
    /// the virtio devices, `_CRS` = Memory32Fixed(`addr`, `len`) and the
    /// interrupt. The region must lie below 4 GiB.
    VirtioMmio {
        addr: u64,
        len: u64,
        irq: u32,
        trigger: IrqTrigger,
    },
    /// A 16550 UART: `_HID PNP0501`, 8 I/O ports at `port`, edge IRQ `irq`.
    /// The n-th (from 1) is `\_SB.COMn` with `_UID` n.
    Serial { port: u16, irq: u32 },
    /// The CMOS RTC: `_HID PNP0B00`, ports 0x70..0x72, IRQ 8 (edge).
    Rtc,
    /// The i8042 keyboard controller: `_HID PNP0303`, ports 0x60 and 0x64,
    /// IRQ 1 (edge); the FADT's IAPC_BOOT_ARCH then claims an 8042.
    Keyboard,
    /// A PCI host bridge for bus 0: `\_SB.PCI0` and its ECAM reservation in
    /// the DSDT, and an MCFG table (see [`pci`]). At most one.
    PciHost(pci::PciHostBridge),
    /// A VM generation ID at guest address `addr` (16 bytes, 8-byte
    /// aligned, in RAM the guest does not use) and the Generic Event
    /// Device that notifies its changes on `gsi` (edge, active high):
    /// `\_SB.VGEN` and `\_SB.GED_` (see [`vmgenid`]). At most one. When
    /// `addr` lies in the ACPI area the tables must end below it.
    VmGenId { addr: u64, gsi: u32 },
}

impl AcpiDevice {
    /// COM1: port 0x3F8, IRQ 4.
    pub const COM1: AcpiDevice = AcpiDevice::Serial {
        port: 0x3f8,
        irq: 4,
    };

    /// A virtio-mmio transport with a level-triggered interrupt.
    pub fn virtio_mmio(addr: u64, len: u64, irq: u32) -> AcpiDevice {
        AcpiDevice::VirtioMmio {
            addr,
            len,
            irq,
            trigger: IrqTrigger::Level,
        }
    }
}

/// The machine the tables describe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcpiConfig {
    /// vCPUs with APIC IDs 0..vcpus (1..=[`MAX_VCPUS`]).
    pub vcpus: u32,
    /// The local APICs' MMIO base (below 4 GiB).
    pub lapic_addr: u64,
    /// The IOAPIC's MMIO base (below 4 GiB); its inputs are GSIs
    /// 0..[`IOAPIC_PINS`].
    pub ioapic_addr: u64,
    /// The IOAPIC's ID (its ID register resets to 0; x86-64 Linux keeps
    /// IOAPIC and LAPIC IDs apart, so 0 is fine).
    pub ioapic_id: u8,
    /// Hardware-reduced ACPI (see the module documentation).
    pub hw_reduced: bool,
    /// The devices of the DSDT, in order.
    pub devices: Vec<AcpiDevice>,
}

impl AcpiConfig {
    /// `vcpus` vCPUs, the default LAPIC and IOAPIC (ID 0), hardware-reduced,
    /// no devices.
    pub fn new(vcpus: u32) -> AcpiConfig {
        AcpiConfig {
            vcpus,
            lapic_addr: LAPIC_ADDR,
            ioapic_addr: IOAPIC_ADDR,
            ioapic_id: 0,
            hw_reduced: true,
            devices: Vec::new(),
        }
    }
}

/// Why the tables could not be made.
#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("{vcpus} vCPUs: the MADT describes 1 to {max}")]
    VcpuCount { vcpus: u32, max: u32 },
    #[error("the {what} address {addr:#x} does not fit the MADT's 32 bits")]
    AddressAbove4G { what: &'static str, addr: u64 },
    #[error(
        "device {index}: MMIO region {addr:#x} (+{len:#x}) is empty or does not end below 4 GiB"
    )]
    BadMmioRange { index: usize, addr: u64, len: u64 },
    #[error("device {index}: IRQ {irq} is not a usable IOAPIC input (1 or 3..{pins}; 0 and 2 are the timer's)")]
    BadIrq { index: usize, irq: u32, pins: u32 },
    #[error("device {index}: a second PCI host bridge")]
    DuplicatePciHost { index: usize },
    #[error("device {index}: a second RTC")]
    DuplicateRtc { index: usize },
    #[error("device {index}: a second VM generation ID")]
    DuplicateVmGenId { index: usize },
    #[error("device {index}: the VM generation ID address {addr:#x} is not 8-byte aligned")]
    VmGenIdAlignment { index: usize, addr: u64 },
    #[error("device {index}: a second keyboard controller")]
    DuplicateKeyboard { index: usize },
    #[error("device {index}: more than {max} serial ports")]
    TooManySerialPorts { index: usize, max: usize },
    #[error("device {index}: more than {max} virtio-mmio devices")]
    TooManyVirtioDevices { index: usize, max: usize },
    #[error("the ACPI tables need {size:#x} bytes; the area {start:#x}..{end:#x} is smaller")]
    TooLarge { size: u64, start: u64, end: u64 },
    #[error("cannot write the {what} at guest address {addr:#x}")]
    Write {
        what: &'static str,
        addr: u64,
        #[source]
        source: vm_memory::GuestMemoryError,
    },
}

fn validate(cfg: &AcpiConfig) -> Result<(), AcpiError> {
    if cfg.vcpus == 0 || cfg.vcpus > MAX_VCPUS {
        return Err(AcpiError::VcpuCount {
            vcpus: cfg.vcpus,
            max: MAX_VCPUS,
        });
    }
    for (what, addr) in [("LAPIC", cfg.lapic_addr), ("IOAPIC", cfg.ioapic_addr)] {
        if addr > u64::from(u32::MAX) {
            return Err(AcpiError::AddressAbove4G { what, addr });
        }
    }
    let irq_ok = |irq: u32| irq < IOAPIC_PINS && irq != 0 && irq != 2;
    let (mut serial, mut virtio, mut rtc, mut pci) = (0usize, 0usize, false, false);
    let (mut keyboard, mut vmgenid) = (false, false);
    for (index, dev) in cfg.devices.iter().enumerate() {
        match *dev {
            AcpiDevice::VmGenId { addr, gsi } => {
                if vmgenid {
                    return Err(AcpiError::DuplicateVmGenId { index });
                }
                vmgenid = true;
                if !addr.is_multiple_of(8) {
                    return Err(AcpiError::VmGenIdAlignment { index, addr });
                }
                if !irq_ok(gsi) {
                    return Err(AcpiError::BadIrq {
                        index,
                        irq: gsi,
                        pins: IOAPIC_PINS,
                    });
                }
            }
            AcpiDevice::VirtioMmio { addr, len, irq, .. } => {
                let end = addr.checked_add(len);
                if len == 0 || end.is_none_or(|end| end > 1 << 32) {
                    return Err(AcpiError::BadMmioRange { index, addr, len });
                }
                if !irq_ok(irq) {
                    return Err(AcpiError::BadIrq {
                        index,
                        irq,
                        pins: IOAPIC_PINS,
                    });
                }
                virtio += 1;
                if virtio > MAX_VIRTIO_DEVICES {
                    return Err(AcpiError::TooManyVirtioDevices {
                        index,
                        max: MAX_VIRTIO_DEVICES,
                    });
                }
            }
            AcpiDevice::Serial { irq, .. } => {
                if !irq_ok(irq) {
                    return Err(AcpiError::BadIrq {
                        index,
                        irq,
                        pins: IOAPIC_PINS,
                    });
                }
                serial += 1;
                if serial > MAX_SERIAL_PORTS {
                    return Err(AcpiError::TooManySerialPorts {
                        index,
                        max: MAX_SERIAL_PORTS,
                    });
                }
            }
            AcpiDevice::Rtc => {
                if rtc {
                    return Err(AcpiError::DuplicateRtc { index });
                }
                rtc = true;
            }
            AcpiDevice::Keyboard => {
                if keyboard {
                    return Err(AcpiError::DuplicateKeyboard { index });
                }
                keyboard = true;
            }
            AcpiDevice::PciHost(host) => {
                if pci {
                    return Err(AcpiError::DuplicatePciHost { index });
                }
                pci = true;
                for (addr, len) in [
                    (host.ecam, pci::ECAM_SIZE),
                    (host.mmio_base, host.mmio_size),
                ] {
                    let end = addr.checked_add(len);
                    if len == 0 || end.is_none_or(|end| end > 1 << 32) {
                        return Err(AcpiError::BadMmioRange { index, addr, len });
                    }
                }
                if let Some(&irq) = host.intx.iter().find(|&&g| g != 0 && !irq_ok(g.into())) {
                    return Err(AcpiError::BadIrq {
                        index,
                        irq: irq.into(),
                        pins: IOAPIC_PINS,
                    });
                }
            }
        }
    }
    Ok(())
}

/// A table and where it goes.
#[derive(Debug)]
struct Placed {
    what: &'static str,
    addr: u64,
    bytes: Vec<u8>,
}

/// Hands out addresses in the ACPI area.
struct Allocator {
    next: u64,
}

impl Allocator {
    fn take(&mut self, size: usize, align: u64) -> u64 {
        let addr = self.next.next_multiple_of(align);
        self.next = addr + size as u64;
        addr
    }
}

fn aml_bytes(table: &dyn Aml) -> Vec<u8> {
    let mut v = Vec::new();
    table.to_aml_bytes(&mut v);
    v
}

fn io_gas(bits: u8, access: AccessSize, port: u16) -> GAS {
    GAS::new(AddressSpace::SystemIo, bits, 0, access, port.into())
}

/// Builds every table with its address.
fn build(cfg: &AcpiConfig) -> Result<Vec<Placed>, AcpiError> {
    validate(cfg)?;
    let mut alloc = Allocator {
        next: ACPI_AREA_START,
    };
    let rsdp_addr = alloc.take(Rsdp::len(), 16);
    debug_assert_eq!(rsdp_addr, ACPI_RSDP_ADDR);
    let mut tables = Vec::new();

    // DSDT.
    let mut dsdt = Sdt::new(*b"DSDT", 36, 2, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    dsdt.append_slice(&dsdt::dsdt_body(cfg));
    let dsdt_addr = alloc.take(dsdt.len(), 64);
    tables.push(Placed {
        what: "DSDT",
        addr: dsdt_addr,
        bytes: dsdt.as_slice().to_vec(),
    });

    // FACS (full ACPI only).
    let facs_addr = if cfg.hw_reduced {
        None
    } else {
        let mut facs = acpi_tables::facs::FACS::new();
        facs.version = 2;
        let bytes = aml_bytes(&facs);
        let addr = alloc.take(bytes.len(), 64);
        tables.push(Placed {
            what: "FACS",
            addr,
            bytes,
        });
        Some(addr)
    };

    // FADT.
    let fadt_addr = alloc.take(acpi_tables::fadt::FADT::len(), 16);
    tables.push(Placed {
        what: "FADT",
        addr: fadt_addr,
        bytes: aml_bytes(&fadt(cfg, dsdt_addr, facs_addr)),
    });

    // MADT.
    let madt = madt(cfg);
    let madt_addr = alloc.take(madt.len(), 16);
    tables.push(Placed {
        what: "MADT",
        addr: madt_addr,
        bytes: madt,
    });

    // MCFG, with a PCI host bridge.
    let mut pointed = vec![fadt_addr, madt_addr];
    for dev in &cfg.devices {
        if let AcpiDevice::PciHost(host) = dev {
            let mcfg = pci::mcfg(host);
            let addr = alloc.take(mcfg.len(), 16);
            tables.push(Placed {
                what: "MCFG",
                addr,
                bytes: mcfg,
            });
            pointed.push(addr);
        }
    }

    // XSDT and RSDT.
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let mut rsdt = Sdt::new(*b"RSDT", 36, 1, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for addr in pointed {
        xsdt.add_entry(addr);
        // Below 1 MiB.
        rsdt.append_slice(&(addr as u32).to_le_bytes());
    }
    let xsdt = aml_bytes(&xsdt);
    let xsdt_addr = alloc.take(xsdt.len(), 16);
    tables.push(Placed {
        what: "XSDT",
        addr: xsdt_addr,
        bytes: xsdt,
    });
    let rsdt_addr = alloc.take(rsdt.len(), 16);
    tables.push(Placed {
        what: "RSDT",
        addr: rsdt_addr,
        bytes: rsdt.as_slice().to_vec(),
    });

    tables.push(Placed {
        what: "RSDP",
        addr: rsdp_addr,
        bytes: rsdp(xsdt_addr, rsdt_addr as u32),
    });

    let end = tables_end(cfg);
    if alloc.next > end {
        return Err(AcpiError::TooLarge {
            size: alloc.next - ACPI_AREA_START,
            start: ACPI_AREA_START,
            end,
        });
    }
    Ok(tables)
}

/// Where the tables must end: the ACPI area's end, or a VM generation ID
/// inside the area.
fn tables_end(cfg: &AcpiConfig) -> u64 {
    cfg.devices
        .iter()
        .filter_map(|d| match *d {
            AcpiDevice::VmGenId { addr, .. }
                if (ACPI_AREA_START..ACPI_AREA_END).contains(&addr) =>
            {
                Some(addr)
            }
            _ => None,
        })
        .fold(ACPI_AREA_END, u64::min)
}

/// The RSDP (revision 2) with both the XSDT and the RSDT address.
fn rsdp(xsdt_addr: u64, rsdt_addr: u32) -> Vec<u8> {
    let mut bytes = aml_bytes(&Rsdp::new(OEM_ID, xsdt_addr));
    // acpi_tables leaves RsdtAddress zero; ACPI 1.0 readers need it.
    bytes[16..20].copy_from_slice(&rsdt_addr.to_le_bytes());
    bytes[8] = 0;
    bytes[8] = checksum(&bytes[..20]);
    bytes[32] = 0;
    bytes[32] = checksum(&bytes);
    bytes
}

/// The byte that makes `bytes` sum to zero.
fn checksum(bytes: &[u8]) -> u8 {
    0u8.wrapping_sub(bytes.iter().fold(0u8, |a, &b| a.wrapping_add(b)))
}

fn fadt(cfg: &AcpiConfig, dsdt_addr: u64, facs_addr: Option<u64>) -> acpi_tables::fadt::FADT {
    let mut f = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        .dsdt_64(dsdt_addr)
        .flag(Flags::PwrButton)
        .flag(Flags::SlpButton)
        .flag(Flags::ResetRegSup);
    // Both pointers (the tables are below 1 MiB), for readers of either.
    f.dsdt = (dsdt_addr as u32).into();
    let mut boot_arch = IAPC_BOOT_ARCH_VGA_NOT_PRESENT;
    if !cfg.devices.contains(&AcpiDevice::Rtc) {
        boot_arch |= IAPC_BOOT_ARCH_CMOS_RTC_NOT_PRESENT;
    }
    if cfg.devices.contains(&AcpiDevice::Keyboard) {
        boot_arch |= IAPC_BOOT_ARCH_8042;
    }
    f.iapc_boot_arch = boot_arch.into();
    f.reset_reg = io_gas(8, AccessSize::ByteAccess, pm::ACPI_RESET_PORT);
    f.reset_value = pm::ACPI_RESET_VALUE;
    f.hypervisor_vendor_identity = u64::from_le_bytes(*b"FERROVSR").into();
    // The PM timer works in both modes (hardware-reduced OSPMs may ignore
    // it; Linux and kvm-unit-tests read it).
    f.pm_tmr_blk = u32::from(pm::PM_TMR_PORT).into();
    f.pm_tmr_len = pm::PM_TMR_LEN;
    f.x_pm_tmr_blk = io_gas(pm::PM_TMR_LEN * 8, AccessSize::DwordAccess, pm::PM_TMR_PORT);
    if cfg.hw_reduced {
        f = f.flag(Flags::HwReducedAcpi);
        f.sleep_control_reg = io_gas(8, AccessSize::ByteAccess, pm::ACPI_SLEEP_CONTROL_PORT);
        f.sleep_status_reg = io_gas(8, AccessSize::ByteAccess, pm::ACPI_SLEEP_STATUS_PORT);
    } else {
        f = f.flag(Flags::Wbinvd);
        if let Some(facs) = facs_addr {
            f = f.firmware_ctrl_64(facs);
            f.firmware_ctrl = (facs as u32).into();
        }
        f.sci_int = u16::from(pm::SCI_IRQ).into();
        f.pm1a_evt_blk = u32::from(pm::PM1A_EVT_PORT).into();
        f.pm1_evt_len = pm::PM1_EVT_LEN;
        f.pm1a_cnt_blk = u32::from(pm::PM1A_CNT_PORT).into();
        f.pm1_cnt_len = pm::PM1_CNT_LEN;
        f.x_pm1a_evt_blk = io_gas(
            pm::PM1_EVT_LEN * 8,
            AccessSize::Undefined,
            pm::PM1A_EVT_PORT,
        );
        f.x_pm1a_cnt_blk = io_gas(
            pm::PM1_CNT_LEN * 8,
            AccessSize::Undefined,
            pm::PM1A_CNT_PORT,
        );
    }
    f.finalize()
}

/// MADT entry types.
const MADT_LOCAL_APIC: u8 = 0;
const MADT_IO_APIC: u8 = 1;
const MADT_INTERRUPT_OVERRIDE: u8 = 2;
const MADT_LOCAL_APIC_NMI: u8 = 4;

fn madt(cfg: &AcpiConfig) -> Vec<u8> {
    // Revision 5 (ACPI 6.3+); acpi_tables' MADT cannot set the flags or
    // hold overrides, so this is a generic table.
    let mut madt = Sdt::new(*b"APIC", 36, 5, OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    let mut body = Vec::new();
    // Validated to fit.
    body.extend_from_slice(&(cfg.lapic_addr as u32).to_le_bytes());
    body.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());
    for id in 0..cfg.vcpus {
        // ACPI processor UID, APIC ID, flags = enabled.
        body.extend_from_slice(&[MADT_LOCAL_APIC, 8, id as u8, id as u8, 1, 0, 0, 0]);
    }
    body.extend_from_slice(&[MADT_IO_APIC, 12, cfg.ioapic_id, 0]);
    body.extend_from_slice(&(cfg.ioapic_addr as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes()); // GSI base
    let mut overrides = vec![(0u8, 2u32, 0u16)];
    if !cfg.hw_reduced {
        overrides.push((pm::SCI_IRQ, pm::SCI_IRQ.into(), MPS_INTI_ACTIVE_HIGH_LEVEL));
    }
    for (source, gsi, flags) in overrides {
        // Bus 0 (ISA).
        body.extend_from_slice(&[MADT_INTERRUPT_OVERRIDE, 10, 0, source]);
        body.extend_from_slice(&gsi.to_le_bytes());
        body.extend_from_slice(&flags.to_le_bytes());
    }
    // All processors (UID 0xFF), flags 0 (bus defaults), LINT1.
    body.extend_from_slice(&[MADT_LOCAL_APIC_NMI, 6, 0xff, 0, 0, 1]);
    madt.append_slice(&body);
    madt.as_slice().to_vec()
}

/// Writes the ACPI tables for `cfg` into the BIOS area of `mem` (zeroing
/// the rest of it) and returns the RSDP's address ([`ACPI_RSDP_ADDR`]).
/// Nothing is written if `cfg` is invalid.
pub fn create_acpi_tables(
    mem: &impl GuestMemoryBackend,
    cfg: &AcpiConfig,
) -> Result<u64, AcpiError> {
    let tables = build(cfg)?;
    let write = |what: &'static str, addr: u64, bytes: &[u8]| {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|source| AcpiError::Write { what, addr, source })
    };
    // An earlier boot's tables must not be found by a scan.
    write(
        "ACPI area",
        ACPI_AREA_START,
        &vec![0u8; (ACPI_AREA_END - ACPI_AREA_START) as usize],
    )?;
    for t in &tables {
        write(t.what, t.addr, &t.bytes)?;
    }
    Ok(ACPI_RSDP_ADDR)
}
