//! The DSDT's AML:
//!
//! ```text
//! Name (\_S5, Package () { 5, 5, 0, 0 })       // SLP_TYPa/b of soft-off
//! Scope (\_SB) {
//!     Device (COM1) {                           // AcpiDevice::Serial, COM1..COM9
//!         Name (_HID, EisaId ("PNP0501"))
//!         Name (_UID, 1)
//!         Name (_CRS, ResourceTemplate () {
//!             IO (Decode16, 0x3F8, 0x3F8, 1, 8)
//!             Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 4 }
//!         })
//!     }
//!     Device (RTC_) {                           // AcpiDevice::Rtc
//!         Name (_HID, EisaId ("PNP0B00"))
//!         Name (_CRS, ResourceTemplate () {
//!             IO (Decode16, 0x70, 0x70, 1, 2)
//!             Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 8 }
//!         })
//!     }
//!     Device (KBD_) {                           // AcpiDevice::Keyboard
//!         Name (_HID, EisaId ("PNP0303"))
//!         Name (_CRS, ResourceTemplate () {
//!             IO (Decode16, 0x60, 0x60, 1, 1)
//!             IO (Decode16, 0x64, 0x64, 1, 1)
//!             Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { 1 }
//!         })
//!     }
//!     Device (V000) {                           // AcpiDevice::VirtioMmio, V000..VFFF
//!         Name (_HID, "LNRO0005")
//!         Name (_UID, 0)
//!         Name (_CRS, ResourceTemplate () {
//!             Memory32Fixed (ReadWrite, addr, len)
//!             Interrupt (ResourceConsumer, Level, ActiveHigh, Exclusive) { irq }
//!         })
//!     }
//! }
//! ```
//!
//! With a PCI host bridge, `PCI0` and `PRES` follow (see [`super::pci`]);
//! with a VM generation ID, `VGEN` and `GED_` (see [`super::vmgenid`]).
//!
//! Linux binds "LNRO0005" to virtio_mmio (the memory resource and the first
//! IRQ), "PNP0501" to 8250_pnp and "PNP0B00" to rtc_cmos.

use acpi_tables::aml::{
    Device, EISAName, Interrupt, Memory32Fixed, Name, Package, Path, ResourceTemplate, Scope, IO,
};
use acpi_tables::Aml;

use super::pm::SLP_TYP_S5;
use super::{AcpiConfig, AcpiDevice, IrqTrigger};

/// ISA port and IRQ of the CMOS RTC.
pub const RTC_PORT: u16 = 0x70;
/// ISA IRQ of the CMOS RTC.
pub const RTC_IRQ: u32 = 8;
/// Ports of a 16550 UART.
pub const SERIAL_PORTS: u8 = 8;

/// The DSDT's definition block body (the AML after the table header).
/// `cfg` has been validated.
pub(super) fn dsdt_body(cfg: &AcpiConfig) -> Vec<u8> {
    let mut body = Vec::new();
    Name::new(
        Path::new("\\_S5_"),
        &Package::new(vec![&SLP_TYP_S5, &SLP_TYP_S5, &0u8, &0u8]),
    )
    .to_aml_bytes(&mut body);

    let mut devices = Vec::new();
    let (mut serial, mut virtio) = (0u32, 0u32);
    for dev in &cfg.devices {
        match *dev {
            AcpiDevice::Serial { port, irq } => {
                serial += 1;
                devices.extend(isa_device(
                    &format!("COM{serial}"),
                    "PNP0501",
                    Some(serial),
                    port,
                    SERIAL_PORTS,
                    irq,
                ));
            }
            AcpiDevice::Rtc => {
                devices.extend(isa_device("RTC_", "PNP0B00", None, RTC_PORT, 2, RTC_IRQ));
            }
            AcpiDevice::Keyboard => devices.extend(keyboard_device()),
            AcpiDevice::PciHost(host) => devices.extend(super::pci::dsdt_devices(&host)),
            AcpiDevice::VmGenId { addr, gsi } => {
                devices.extend(super::vmgenid::dsdt_devices(addr, gsi));
            }
            AcpiDevice::VirtioMmio {
                addr,
                len,
                irq,
                trigger,
            } => {
                let name = format!("V{virtio:03X}");
                let hid = Name::new(Path::new("_HID"), &"LNRO0005");
                let uid = Name::new(Path::new("_UID"), &virtio);
                // Validated to lie below 4 GiB.
                let mem = Memory32Fixed::new(true, addr as u32, len as u32);
                let int = Interrupt::new(true, trigger == IrqTrigger::Edge, false, false, irq);
                let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&mem, &int]));
                Device::new(Path::new(&name), vec![&hid, &uid, &crs]).to_aml_bytes(&mut devices);
                virtio += 1;
            }
        }
    }
    body.extend_from_slice(&Scope::raw(Path::new("\\_SB_"), devices));
    body
}

/// ISA ports and IRQ of the i8042 keyboard controller.
pub const I8042_DATA_PORT: u16 = 0x60;
pub const I8042_COMMAND_PORT: u16 = 0x64;
pub const I8042_KBD_IRQ: u32 = 1;

/// `\_SB.KBD_`: the i8042's keyboard port (Linux's i8042 finds the
/// controller through it).
fn keyboard_device() -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0303"));
    let data = IO::new(I8042_DATA_PORT, I8042_DATA_PORT, 1, 1);
    let command = IO::new(I8042_COMMAND_PORT, I8042_COMMAND_PORT, 1, 1);
    let int = Interrupt::new(true, true, false, false, I8042_KBD_IRQ);
    let crs = Name::new(
        Path::new("_CRS"),
        &ResourceTemplate::new(vec![&data, &command, &int]),
    );
    let mut bytes = Vec::new();
    Device::new(Path::new("KBD_"), vec![&hid, &crs]).to_aml_bytes(&mut bytes);
    bytes
}

/// An ISA device: `_HID` EISA id, `_UID` (if any), `_CRS` with a fixed I/O
/// range and an edge-triggered, active-high IRQ.
fn isa_device(
    name: &str,
    eisa_id: &str,
    uid: Option<u32>,
    port: u16,
    len: u8,
    irq: u32,
) -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new(eisa_id));
    let uid = uid.map(|uid| Name::new(Path::new("_UID"), &uid));
    let io = IO::new(port, port, 1, len);
    let int = Interrupt::new(true, true, false, false, irq);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&io, &int]));
    let mut children: Vec<&dyn Aml> = vec![&hid];
    if let Some(uid) = &uid {
        children.push(uid);
    }
    children.push(&crs);
    let mut bytes = Vec::new();
    Device::new(Path::new(name), children).to_aml_bytes(&mut bytes);
    bytes
}
