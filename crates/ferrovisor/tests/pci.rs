//! End to end: the Debian test guest on `--transport pci` (emu
//! accelerator, 2 vCPUs) finds the host bridge through ACPI, binds
//! virtio-pci to the disk and the entropy device, and gets their
//! interrupts as MSI-X messages; after the entropy device is rebound with
//! MSI disallowed, it works on its INTx line (IOAPIC, level) instead.
//!
//! The boot helpers are in common/ (guest lookup, SKIPPED without a guest
//! unless `FERROVISOR_REQUIRE_GUEST=1`).

mod common;

use std::path::PathBuf;

use common::{boot, guest, host_sha256};

fn image(len: usize) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrovisor-pci-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("disk.img");
    let data: Vec<u8> = (0..len).map(|i| (i * 13 + (i >> 10)) as u8).collect();
    std::fs::write(&path, data).unwrap();
    path
}

const SCRIPT: &str = r#"
for d in /sys/bus/pci/devices/*; do
  echo pci $(basename $d) $(cat $d/vendor) $(cat $d/device) $(cat $d/class) drv=$(basename "$(readlink $d/driver)");
done;
echo bar0=$(head -1 /sys/bus/pci/devices/0000:00:01.0/resource);
dmesg | grep -E 'PCI Root Bridge \[PCI0\]|Using host bridge windows from ACPI|MMCONFIG at .* reserved';
sha256sum /dev/vda;
echo bytes=$(head -c 64 /dev/hwrng | wc -c);
echo msix=$(grep -c 'PCI-MSI.*virtio' /proc/interrupts);
grep 'PCI-MSI.*virtio0-req' /proc/interrupts | awk '{ n = 0; for (i = 2; i <= NF && $i ~ /^[0-9]+$/; i++) n += $i; print "req-irqs=" (n > 0 ? "some" : "none") }';
head -c 8192 /dev/zero | tr '\0' P | dd of=/dev/vda bs=4096 seek=1 conv=fsync 2>/dev/null && echo write=ok;
d=0000:00:02.0;
echo 0 > /sys/bus/pci/devices/$d/msi_bus;
echo $d > /sys/bus/pci/drivers/virtio-pci/unbind;
echo $d > /sys/bus/pci/drivers/virtio-pci/bind;
echo intx-bytes=$(head -c 64 /dev/hwrng | wc -c);
echo intx=$(grep -c 'IO-APIC.*fasteoi.*virtio' /proc/interrupts)
"#;

#[test]
fn linux_uses_virtio_pci_devices_with_msix_and_falls_back_to_intx() {
    let Some(guest) = guest() else { return };
    let len = 4 << 20;
    let img = image(len);
    let sum = host_sha256(&img);
    let disk = format!("path={}", img.display());
    let b = boot(
        &guest,
        2,
        SCRIPT,
        &["--transport", "pci", "--disk", &disk, "--rng"],
    );
    // lspci: the host bridge and the two virtio functions, bound.
    b.expect("pci 0000:00:00.0 0x1b36 0x0008 0x060000 drv=");
    b.expect("pci 0000:00:01.0 0x1af4 0x1042 0x018000 drv=virtio-pci");
    b.expect("pci 0000:00:02.0 0x1af4 0x1044 0xff0000 drv=virtio-pci");
    // Linux kept the preassigned BAR 0 (where the queue notifiers are).
    b.expect("bar0=0x00000000c0000000 0x00000000c0003fff ");
    // The bridge came from ACPI, with its window and a usable ECAM.
    b.expect("ACPI: PCI Root Bridge [PCI0]");
    b.expect("PCI: Using host bridge windows from ACPI");
    b.expect("MMCONFIG at [mem 0xe0000000-0xe00fffff] reserved in ACPI motherboard resources");
    b.expect(&format!("{sum}  /dev/vda"));
    b.expect("bytes=64");
    // Config and queue vectors of both devices are MSI-X, and the disk's
    // request queue took interrupts through its vector.
    b.expect("msix=4");
    b.expect("req-irqs=some");
    b.expect("write=ok");
    // Rebound without MSI: the entropy device interrupts through INTx.
    b.expect("intx-bytes=64");
    b.expect("intx=1");
    b.expect("FERROVISOR-CMD-EXIT=0");
    assert_eq!(b.status, Some(0), "exit status; tail:\n{}", b.tail());

    let data = std::fs::read(&img).unwrap();
    assert!(data[4096..3 * 4096].iter().all(|&b| b == b'P'));
    assert_eq!(
        data[..4096],
        (0..4096)
            .map(|i| (i * 13 + (i >> 10)) as u8)
            .collect::<Vec<_>>()[..]
    );
    let _ = std::fs::remove_dir_all(img.parent().unwrap());
}
