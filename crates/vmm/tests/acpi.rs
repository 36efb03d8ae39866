//! The ACPI tables a machine gets, read back from guest memory after
//! `Machine::new` (nothing runs): Linux finds the RSDP through
//! `boot_params.acpi_rsdp_addr`, bare ELF kernels get no tables.

mod common;

use std::path::PathBuf;

use arch::layout::{ACPI_RSDP_ADDR, ZERO_PAGE_ADDR};
use common::{bzimage, TempDir};
use linux_loader::loader::bootparam::boot_params;
use vm_memory::{Bytes, GuestAddress};
use vmm::{Accel, Machine, MachineConfig};

fn config(kernel: PathBuf) -> MachineConfig {
    MachineConfig {
        accel: Accel::Emu,
        memory: 64 << 20,
        vcpus: 2,
        ..MachineConfig::new(kernel)
    }
}

fn read(machine: &Machine, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    machine
        .memory()
        .read_slice(&mut v, GuestAddress(addr))
        .unwrap();
    v
}

#[test]
fn linux_finds_the_rsdp_through_boot_params() {
    let dir = TempDir::new("linux-rsdp");
    let machine = Machine::new(&config(dir.file("bzImage", &bzimage()))).unwrap();
    assert!(machine.boot_info().unwrap().kind.is_linux());
    assert_eq!(machine.acpi_rsdp(), Some(ACPI_RSDP_ADDR));
    assert_eq!(ACPI_RSDP_ADDR, 0xe_0000);

    // The RSDP: signature, OEM ID, revision 2, both checksums.
    let rsdp = read(&machine, ACPI_RSDP_ADDR, 36);
    assert_eq!(&rsdp[..8], b"RSD PTR ");
    assert_eq!(&rsdp[9..15], b"FERROV");
    assert_eq!(rsdp[15], 2);
    let sum = |b: &[u8]| b.iter().fold(0u8, |a, &x| a.wrapping_add(x));
    assert_eq!(sum(&rsdp[..20]), 0);
    assert_eq!(sum(&rsdp), 0);
    // Its XSDT lists the FADT and the MADT; the MADT has both vCPUs.
    let xsdt = u64::from_le_bytes(rsdp[24..32].try_into().unwrap());
    assert_eq!(read(&machine, xsdt, 4), b"XSDT");
    let madt = u64::from_le_bytes(read(&machine, xsdt + 44, 8).try_into().unwrap());
    assert_eq!(read(&machine, madt, 4), b"APIC");

    let params: boot_params = machine
        .memory()
        .read_obj(GuestAddress(ZERO_PAGE_ADDR))
        .unwrap();
    assert_eq!({ params.acpi_rsdp_addr }, ACPI_RSDP_ADDR);
    assert_eq!({ params.hdr.header }, 0x5372_6448);
}

#[test]
fn bare_elf_kernels_get_no_tables() {
    let dir = TempDir::new("bare-rsdp");
    let p = guests::print_and_exit("x", 1).unwrap();
    let elf = arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr);
    let machine = Machine::new(&config(dir.file("bare.elf", &elf))).unwrap();
    assert_eq!(machine.acpi_rsdp(), None);
    assert_eq!(read(&machine, ACPI_RSDP_ADDR, 8), [0; 8]);
}

#[test]
fn multiboot_kernels_get_tables_but_no_boot_params() {
    let dir = TempDir::new("multiboot-rsdp");
    let kernel = dir.file("mb.elf", &guests::multiboot::elf().unwrap());
    let machine = Machine::new(&config(kernel)).unwrap();
    assert_eq!(
        machine.boot_info().unwrap().kind,
        arch::boot::BootKind::Multiboot
    );
    assert_eq!(machine.acpi_rsdp(), Some(ACPI_RSDP_ADDR));
    assert_eq!(read(&machine, ACPI_RSDP_ADDR, 8), b"RSD PTR ");
}
