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

#[cfg(test)]
mod tests {
    use super::super::{build, AcpiConfig, AcpiDevice, AcpiError};
    use super::*;

    fn host() -> PciHostBridge {
        let mut intx = [0u8; 32];
        intx[1] = 5;
        intx[2] = 6;
        PciHostBridge {
            ecam: 0xe000_0000,
            mmio_base: 0xc000_0000,
            mmio_size: 0x1000_0000,
            intx,
        }
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn mcfg_xsdt_and_dsdt_describe_the_host_bridge() {
        let cfg = AcpiConfig {
            devices: vec![AcpiDevice::COM1, AcpiDevice::PciHost(host())],
            ..AcpiConfig::new(2)
        };
        let tables = build(&cfg).unwrap();
        let get = |what: &str| tables.iter().find(|t| t.what == what).unwrap();
        let mcfg = get("MCFG");
        let b = &mcfg.bytes;
        assert_eq!(&b[..4], b"MCFG");
        assert_eq!(u32::from_le_bytes(b[4..8].try_into().unwrap()), 60);
        assert_eq!(b.iter().fold(0u8, |a, &x| a.wrapping_add(x)), 0);
        // Base, segment 0, buses 0..=0.
        assert_eq!(
            u64::from_le_bytes(b[44..52].try_into().unwrap()),
            0xe000_0000
        );
        assert_eq!(&b[52..56], &[0, 0, 0, 0]);
        // The XSDT and the RSDT point at it.
        assert!(contains(&get("XSDT").bytes[36..], &mcfg.addr.to_le_bytes()));
        assert!(contains(
            &get("RSDT").bytes[36..],
            &(mcfg.addr as u32).to_le_bytes()
        ));

        let dsdt = &get("DSDT").bytes;
        assert!(contains(dsdt, b"PCI0") && contains(dsdt, b"PRES"));
        // EisaId PNP0A08 / PNP0A03 / PNP0C02.
        for id in [0x080a_d041u32, 0x030a_d041, 0x020c_d041] {
            assert!(contains(dsdt, &id.to_le_bytes()), "{id:#x}");
        }
        // WordBusNumber 0..0, producer.
        assert!(contains(
            dsdt,
            &[0x88, 0x0d, 0, 2, 0x0c, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0]
        ));
        // IO 0xCF8, 8 ports.
        assert!(contains(dsdt, &[0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8]));
        // DWordMemory 0xC0000000..0xCFFFFFFF, producer, read-write.
        let mut window = vec![0x87, 0x17, 0, 0, 0x0c, 1, 0, 0, 0, 0];
        for v in [0xc000_0000u32, 0xcfff_ffff, 0, 0x1000_0000] {
            window.extend_from_slice(&v.to_le_bytes());
        }
        assert!(contains(dsdt, &window));
        // _PRT: slot 1 INTA -> GSI 5, slot 2 -> GSI 6, no others.
        assert!(contains(dsdt, b"_PRT"));
        assert!(contains(dsdt, &[0x0c, 0xff, 0xff, 1, 0, 0, 0, 0x0a, 5]));
        assert!(contains(dsdt, &[0x0c, 0xff, 0xff, 2, 0, 0, 0, 0x0a, 6]));
        assert!(!contains(dsdt, &[0x0c, 0xff, 0xff, 3, 0]));
        // The ECAM reservation: Memory32Fixed(ReadOnly, 0xE0000000, 1 MiB).
        assert!(contains(
            dsdt,
            &[0x86, 9, 0, 0, 0, 0, 0, 0xe0, 0, 0, 0x10, 0]
        ));
    }

    #[test]
    fn bad_host_bridges_are_refused() {
        let with = |devices: Vec<AcpiDevice>| {
            build(&AcpiConfig {
                devices,
                ..AcpiConfig::new(1)
            })
            .err()
        };
        let h = host();
        assert!(matches!(
            with(vec![AcpiDevice::PciHost(h), AcpiDevice::PciHost(h)]),
            Some(AcpiError::DuplicatePciHost { index: 1 })
        ));
        let high = PciHostBridge {
            ecam: 0xffff_ff00,
            ..h
        };
        assert!(matches!(
            with(vec![AcpiDevice::PciHost(high)]),
            Some(AcpiError::BadMmioRange { .. })
        ));
        let empty = PciHostBridge { mmio_size: 0, ..h };
        assert!(matches!(
            with(vec![AcpiDevice::PciHost(empty)]),
            Some(AcpiError::BadMmioRange { .. })
        ));
        let mut timer = h;
        timer.intx[4] = 2;
        assert!(matches!(
            with(vec![AcpiDevice::PciHost(timer)]),
            Some(AcpiError::BadIrq { irq: 2, .. })
        ));
    }
}
