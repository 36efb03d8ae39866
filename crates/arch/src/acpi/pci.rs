//! The PCI host bridge in ACPI: the MCFG table (ECAM of bus 0) and the
//! DSDT devices
//!
//! ```text
//! Device (PCI0) {
//!     Name (_HID, EisaId ("PNP0A08"))          // PCI Express root bridge
//!     Name (_CID, EisaId ("PNP0A03"))          // PCI root bridge
//!     Name (_UID, 0)
//!     Name (_SEG, 0)
//!     Name (_BBN, 0)
//!     Name (_CRS, ResourceTemplate () {
//!         WordBusNumber (ResourceProducer, MinFixed, MaxFixed, , 0, 0, 0, 0, 1)
//!         IO (Decode16, 0xCF8, 0xCF8, 1, 8)    // configuration mechanism #1
//!         DWordMemory (ResourceProducer, , MinFixed, MaxFixed, NonCacheable, ReadWrite,
//!                      0, window, window + size - 1, 0, size)
//!     })
//!     Name (_PRT, Package () {                 // INTA# of each slot with one
//!         Package () { 0xSSSSFFFF, 0, 0, gsi }, ...
//!     })
//! }
//! Device (PRES) {                              // motherboard resources
//!     Name (_HID, EisaId ("PNP0C02"))
//!     Name (_UID, 0x50434952)
//!     Name (_CRS, ResourceTemplate () { Memory32Fixed (ReadOnly, ecam, 1 MiB) })
//! }
//! ```
//!
//! Linux checks that the MCFG region is reserved — in the e820 map or as
//! an ACPI motherboard resource (`PNP0C02`) — before it uses ECAM; PRES is
//! that reservation. `_PRT` entries name GSIs directly (no link devices):
//! Linux programs them level-triggered, active-low; the IOAPIC model
//! takes a line level as "asserted" whatever the polarity.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Memory32Fixed, Name, Package, Path,
    ResourceTemplate, IO,
};
use acpi_tables::mcfg::MCFG;
use acpi_tables::Aml;

use super::{OEM_ID, OEM_REVISION, OEM_TABLE_ID};

/// Configuration mechanism #1's ports.
pub const CONFIG_IO_PORT: u16 = 0xcf8;
/// Bytes of ECAM for bus 0.
pub const ECAM_SIZE: u64 = 1 << 20;

/// A PCI host bridge for bus 0 (all below 4 GiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciHostBridge {
    /// ECAM base of bus 0 ([`ECAM_SIZE`] bytes).
    pub ecam: u64,
    /// The 32-bit memory window the BARs live in.
    pub mmio_base: u64,
    pub mmio_size: u64,
    /// The GSI of INTA# of each slot (0: the slot has no INTx).
    pub intx: [u8; 32],
}

/// The MCFG table.
pub(super) fn mcfg(host: &PciHostBridge) -> Vec<u8> {
    let mut table = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    table.add_ecam(host.ecam, 0, 0, 0);
    let mut bytes = Vec::new();
    table.to_aml_bytes(&mut bytes);
    bytes
}

/// The DSDT devices (PCI0 and PRES), to go under `\_SB`.
pub(super) fn dsdt_devices(host: &PciHostBridge) -> Vec<u8> {
    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0A08"));
    let cid = Name::new(Path::new("_CID"), &EISAName::new("PNP0A03"));
    let uid = Name::new(Path::new("_UID"), &0u8);
    let seg = Name::new(Path::new("_SEG"), &0u8);
    let bbn = Name::new(Path::new("_BBN"), &0u8);
    let buses = AddressSpace::<u16>::new_bus_number(0, 0);
    let io = IO::new(CONFIG_IO_PORT, CONFIG_IO_PORT, 1, 8);
    // Validated to lie below 4 GiB.
    let window = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        host.mmio_base as u32,
        (host.mmio_base + host.mmio_size - 1) as u32,
        None,
    );
    let crs = Name::new(
        Path::new("_CRS"),
        &ResourceTemplate::new(vec![&buses, &io, &window]),
    );
    let entries: Vec<(u32, u32)> = host
        .intx
        .iter()
        .enumerate()
        .filter(|(_, &gsi)| gsi != 0)
        .map(|(slot, &gsi)| ((slot as u32) << 16 | 0xffff, u32::from(gsi)))
        .collect();
    let packages: Vec<Package> = entries
        .iter()
        .map(|(addr, gsi)| Package::new(vec![addr, &0u8, &0u8, gsi]))
        .collect();
    let prt_list: Vec<&dyn Aml> = packages.iter().map(|p| p as &dyn Aml).collect();
    let prt_package = Package::new(prt_list);
    let prt = Name::new(Path::new("_PRT"), &prt_package);
    let mut children: Vec<&dyn Aml> = vec![&hid, &cid, &uid, &seg, &bbn, &crs];
    if !entries.is_empty() {
        children.push(&prt);
    }
    let mut bytes = Vec::new();
    Device::new(Path::new("PCI0"), children).to_aml_bytes(&mut bytes);

    let hid = Name::new(Path::new("_HID"), &EISAName::new("PNP0C02"));
    // "PCIR": unique among PNP0C02 devices.
    let uid = Name::new(Path::new("_UID"), &0x5043_4952u32);
    let ecam = Memory32Fixed::new(false, host.ecam as u32, ECAM_SIZE as u32);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&ecam]));
    Device::new(Path::new("PRES"), vec![&hid, &uid, &crs]).to_aml_bytes(&mut bytes);
    bytes
}
