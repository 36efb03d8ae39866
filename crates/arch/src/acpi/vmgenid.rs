//! The VM generation ID device (Microsoft's "Virtual Machine Generation ID"
//! specification, as QEMU and Firecracker offer it) and the ACPI Generic
//! Event Device that tells the guest the ID changed:
//!
//! ```text
//! Scope (\_SB) {
//!     Device (VGEN) {
//!         Name (_HID, "FERR0001")
//!         Name (_CID, "VM_Gen_Counter")
//!         Name (_DDN, "VM_Gen_Counter")
//!         Name (ADDR, Package () { addr & 0xffffffff, addr >> 32 })
//!     }
//!     Device (GED_) {
//!         Name (_HID, "ACPI0013")
//!         Name (_UID, 0)
//!         Name (_CRS, ResourceTemplate () {
//!             Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive) { gsi }
//!         })
//!         Method (_EVT, 1) {
//!             If (LEqual (Arg0, gsi)) { Notify (\_SB.VGEN, 0x80) }
//!         }
//!     }
//! }
//! ```
//!
//! The 16-byte generation ID lives at `addr` in guest RAM, in the ACPI area
//! (reserved in the e820 map, so the guest never allocates it):
//! [`VMGENID_ADDR`]. Linux's vmgenid driver (drivers/virt/vmgenid.c,
//! `CONFIG_VMGENID`) binds to the `_CID` (ACPICA upper-cases it to
//! "VM_GEN_COUNTER"), evaluates `ADDR` (a package of two integers, low and
//! high 32 bits: a named package evaluates like a method returning it) and
//! maps the ID. When the VMM writes a new ID it pulses `gsi`; Linux's GED
//! driver (drivers/acpi/evged.c, hardware-reduced ACPI's event path) runs
//! `_EVT` with the GSI, which notifies `VGEN` with 0x80; the vmgenid
//! driver then reads the new ID and, if it changed, reseeds the kernel's
//! RNG (`add_vmfork_randomness`) and sends a `NEW_VMGENID=1` uevent.

use acpi_tables::aml::{
    Arg, Device, Equal, If, Interrupt, Method, Name, Notify, Package, Path, ResourceTemplate,
};
use acpi_tables::Aml;

use super::ACPI_AREA_END;

/// Size of the generation ID.
pub const VMGENID_SIZE: usize = 16;
/// Where the VMM keeps the generation ID: the ACPI area's second-to-last
/// page (the last one holds the BIOS reset entry at 0xFFFF0). The tables
/// must end below it.
pub const VMGENID_ADDR: u64 = ACPI_AREA_END - 0x2000;
// In the ACPI area, below the BIOS reset entry at 0xFFFF0, 8-byte aligned
// as the specification wants.
const _: () = {
    assert!(VMGENID_ADDR >= super::ACPI_AREA_START);
    assert!(VMGENID_ADDR + VMGENID_SIZE as u64 <= 0xf_fff0);
    assert!(VMGENID_ADDR.is_multiple_of(8));
};

/// The notification the vmgenid driver waits for.
pub const VMGENID_NOTIFY: u8 = 0x80;
/// `VGEN`'s hardware ID: a valid ACPI ID (vendor "FERR", device 0001), which
/// iasl checks; the OS matches the `_CID`.
pub const VMGENID_HID: &str = "FERR0001";
/// The compatible ID the specification names.
pub const VMGENID_CID: &str = "VM_Gen_Counter";
/// The Generic Event Device's hardware ID.
pub const GED_HID: &str = "ACPI0013";

/// The DSDT entries (`\_SB` children) of a generation ID at `addr`
/// whose changes are signalled on `gsi` (an edge-triggered, active-high
/// IOAPIC input).
pub(super) fn dsdt_devices(addr: u64, gsi: u32) -> Vec<u8> {
    let mut bytes = Vec::new();
    let hid = Name::new(Path::new("_HID"), &VMGENID_HID);
    let cid = Name::new(Path::new("_CID"), &VMGENID_CID);
    let ddn = Name::new(Path::new("_DDN"), &VMGENID_CID);
    let (lo, hi) = (addr as u32, (addr >> 32) as u32);
    let addr = Name::new(Path::new("ADDR"), &Package::new(vec![&lo, &hi]));
    Device::new(Path::new("VGEN"), vec![&hid, &cid, &ddn, &addr]).to_aml_bytes(&mut bytes);

    let hid = Name::new(Path::new("_HID"), &GED_HID);
    let uid = Name::new(Path::new("_UID"), &0u8);
    let int = Interrupt::new(true, true, false, false, gsi);
    let crs = Name::new(Path::new("_CRS"), &ResourceTemplate::new(vec![&int]));
    let target = Path::new("\\_SB_.VGEN");
    let notify = Notify::new(&target, &VMGENID_NOTIFY);
    let is_ours = Equal::new(&Arg(0), &gsi);
    let when = If::new(&is_ours, vec![&notify]);
    let evt = Method::new(Path::new("_EVT"), 1, false, vec![&when]);
    Device::new(Path::new("GED_"), vec![&hid, &uid, &crs, &evt]).to_aml_bytes(&mut bytes);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PkgLength of one or two bytes (it counts itself).
    fn pkg_length(body: usize) -> Vec<u8> {
        if body + 1 < 0x40 {
            vec![(body + 1) as u8]
        } else {
            let total = body + 2;
            assert!(total < 0x1000);
            vec![0x40 | (total & 0xf) as u8, (total >> 4) as u8]
        }
    }

    /// The AML, opcode by opcode (ACPI 6.5, chapter 20): what iasl
    /// compiles the ASL of the module documentation to.
    #[test]
    fn aml_is_what_the_specification_and_linux_expect() {
        let b = dsdt_devices(0xf_e000, 23);
        let mut want = Vec::new();
        // Device (VGEN): ExtOpPrefix DeviceOp PkgLength NameSeg.
        let vgen_body: Vec<u8> = [
            &b"VGEN"[..],
            b"\x08_HID\x0dFERR0001\x00",
            b"\x08_CID\x0dVM_Gen_Counter\x00",
            b"\x08_DDN\x0dVM_Gen_Counter\x00",
            // Name (ADDR, Package (2) { DWordConst 0xFE000, Zero }).
            b"\x08ADDR\x12\x08\x02\x0c\x00\xe0\x0f\x00\x00",
        ]
        .concat();
        want.extend_from_slice(&[0x5b, 0x82]);
        want.extend_from_slice(&pkg_length(vgen_body.len()));
        want.extend_from_slice(&vgen_body);
        // Method (_EVT, 1): If (LEqual (Arg0, 23)) { Notify (\_SB.VGEN, 0x80) }
        let notify: Vec<u8> = [&b"\x86\\\x2e_SB_VGEN"[..], b"\x0a\x80"].concat();
        let pred = b"\x93\x68\x0a\x17";
        let if_body = [&pred[..], &notify].concat();
        let if_op = [&[0xa0, (if_body.len() + 1) as u8][..], &if_body].concat();
        let method_body = [&b"_EVT\x01"[..], &if_op].concat();
        let method = [&[0x14, (method_body.len() + 1) as u8][..], &method_body].concat();
        // Interrupt descriptor: consumer, edge, active high, exclusive, GSI 23.
        let crs_data = [0x89, 6, 0, 0b0000_0011, 1, 23, 0, 0, 0, 0x79, 0];
        let crs = [
            &b"\x08_CRS\x11"[..],
            &[(crs_data.len() + 3) as u8, 0x0a, crs_data.len() as u8],
            &crs_data,
        ]
        .concat();
        let ged_body: Vec<u8> = [
            &b"GED_"[..],
            b"\x08_HID\x0dACPI0013\x00",
            b"\x08_UID\x00",
            &crs,
            &method,
        ]
        .concat();
        want.extend_from_slice(&[0x5b, 0x82]);
        want.extend_from_slice(&pkg_length(ged_body.len()));
        want.extend_from_slice(&ged_body);
        assert_eq!(b, want, "\n{b:02x?}\n{want:02x?}");
    }

    #[test]
    fn high_addresses_split_into_two_dwords() {
        let b = dsdt_devices(0x1_2345_6000, 5);
        let pkg = b"\x08ADDR\x12\x08\x02\x0c\x00\x60\x45\x23\x01";
        assert!(b.windows(pkg.len()).any(|w| w == pkg), "{b:02x?}");
    }

    fn config(devices: Vec<super::super::AcpiDevice>) -> super::super::AcpiConfig {
        super::super::AcpiConfig {
            devices,
            ..super::super::AcpiConfig::new(1)
        }
    }

    #[test]
    fn the_dsdt_holds_both_devices_and_bad_configs_are_refused() {
        use super::super::{build, AcpiDevice, AcpiError};
        let dev = AcpiDevice::VmGenId {
            addr: VMGENID_ADDR,
            gsi: 23,
        };
        let tables = build(&config(vec![AcpiDevice::COM1, dev])).unwrap();
        let dsdt = tables.iter().find(|t| t.what == "DSDT").unwrap();
        let ours = dsdt_devices(VMGENID_ADDR, 23);
        assert!(dsdt.bytes.windows(ours.len()).any(|w| w == ours));
        assert!(tables
            .iter()
            .all(|t| t.addr + t.bytes.len() as u64 <= VMGENID_ADDR));

        let err = build(&config(vec![dev, dev])).unwrap_err();
        assert!(
            matches!(err, AcpiError::DuplicateVmGenId { index: 1 }),
            "{err}"
        );
        let unaligned = AcpiDevice::VmGenId {
            addr: VMGENID_ADDR + 4,
            gsi: 23,
        };
        let err = build(&config(vec![unaligned])).unwrap_err();
        assert!(matches!(err, AcpiError::VmGenIdAlignment { .. }), "{err}");
        for gsi in [0, 2, 24] {
            let err = build(&config(vec![AcpiDevice::VmGenId {
                addr: VMGENID_ADDR,
                gsi,
            }]))
            .unwrap_err();
            assert!(matches!(err, AcpiError::BadIrq { .. }), "{err}");
        }
        // An ID low in the area leaves the tables no room.
        let low = AcpiDevice::VmGenId {
            addr: super::super::ACPI_AREA_START + 0x40,
            gsi: 23,
        };
        let err = build(&config(vec![low])).unwrap_err();
        assert!(matches!(err, AcpiError::TooLarge { .. }), "{err}");
    }
}
