//! What a guest writes to a PCI function: configuration space accesses
//! (any offset, any size, BARs sized and moved, capabilities) and MSI-X
//! table and PBA accesses, in any order, with interrupts triggered between
//! them. A virtio-pci function's header, BARs and MSI-X capability as the
//! VMM builds them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use pci::config::{reg, BarKind};
use pci::{ConfigSpace, MsiSink, MsixTable, PciIds};

use crate::input::Input;

const VECTORS: u16 = 5;

#[derive(Default)]
struct CountingSink(AtomicU64);

impl MsiSink for CountingSink {
    fn send(&self, _address: u64, _data: u32) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

const IDS: PciIds = PciIds {
    vendor: 0x1af4,
    device: 0x1042,
    revision: 1,
    class: (0x01, 0x00, 0x00),
    subsystem_vendor: 0x1af4,
    subsystem: 0x40,
    interrupt_pin: 1,
};

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let sink = Arc::new(CountingSink::default());
    let mut msix = MsixTable::new(VECTORS, sink.clone());
    let mut config = ConfigSpace::new(IDS);
    config.add_bar(0, 0x4000, BarKind::Mem64, false, 0xe000_0000);
    config.add_bar(2, 0x1000, BarKind::Mem32, false, 0xc100_0000);
    let (body, wmask) = msix.capability(0, 0x2000, 0, 0x3000);
    let cap = config.add_capability(0x11, &body, &wmask);
    for _ in 0..64 {
        if input.is_empty() {
            break;
        }
        let enabled_before = msix.enabled();
        let sent_before = sink.0.load(Ordering::Relaxed);
        match input.u8() % 8 {
            0 | 1 => {
                let offset = usize::from(input.u16() % 0x120);
                let len = usize::from(input.u8() % 9);
                let bytes = input.bytes(len);
                config.write(offset, bytes);
                // The driver's writes to the message control word reach
                // the table, as the device's config handler forwards them.
                if offset <= cap + 3 && offset + bytes.len() > cap + 2 {
                    msix.set_control(config.u16_at(cap + 2));
                }
            }
            2 => {
                let offset = usize::from(input.u16()) % 0x120;
                let mut buf = vec![0u8; usize::from(input.u8() % 9)];
                config.read(offset, &mut buf);
                for (i, &b) in buf.iter().enumerate() {
                    if offset + i >= 256 {
                        assert_eq!(b, 0, "byte {:#x} past the space", offset + i);
                    }
                }
            }
            3 => {
                let offset = u64::from(input.u16() % 0x60);
                let len = [4usize, 8, 1, 2][usize::from(input.u8() % 4)];
                msix.write_table(offset, &padded(input.bytes(len), len));
            }
            4 => {
                let offset = u64::from(input.u16() % 0x60);
                let mut buf = vec![0u8; [4usize, 8, 1, 2][usize::from(input.u8() % 4)]];
                msix.read_table(offset, &mut buf);
            }
            5 => {
                let offset = u64::from(input.u8() % 0x10);
                let mut buf = vec![0u8; [4usize, 8, 1, 2][usize::from(input.u8() % 4)]];
                msix.read_pba(offset, &mut buf);
                msix.write_pba(offset, &buf);
            }
            6 => {
                let vector = u16::from(input.u8() % 8);
                let accepted = msix.trigger(vector);
                if vector >= VECTORS {
                    assert!(!accepted, "vector {vector} of {VECTORS}");
                }
                if !msix.enabled() {
                    assert!(!accepted);
                }
            }
            _ => {
                // The BAR ranges the bus would map: aligned, no wrap.
                for r in config.bar_ranges() {
                    assert!(r.size.is_power_of_two(), "{r:?}");
                    assert_eq!(r.base % r.size, 0, "{r:?}");
                    assert!(r.base.checked_add(r.size).is_some(), "{r:?}");
                }
            }
        }
        // Read-only registers stay what the VMM set.
        assert_eq!(config.u16_at(reg::VENDOR_ID), IDS.vendor);
        assert_eq!(config.u16_at(reg::DEVICE_ID), IDS.device);
        assert_eq!(config.u16_at(reg::SUBSYSTEM_ID), IDS.subsystem);
        assert_eq!(config.u32_at(cap + 4), 0x2000, "MSI-X table offset/BIR");
        assert_eq!(config.u32_at(cap + 8), 0x3000, "PBA offset/BIR");
        assert_eq!(config.u16_at(cap + 2) & 0x7ff, VECTORS - 1, "table size");
        // No message goes out while MSI-X stays disabled.
        if !enabled_before && !msix.enabled() {
            assert_eq!(sink.0.load(Ordering::Relaxed), sent_before);
        }
    }
    let _ = msix.counters();
}

/// The access is `len` bytes even when the input ran out.
fn padded(bytes: &[u8], len: usize) -> Vec<u8> {
    let mut v = bytes.to_vec();
    v.resize(len, 0);
    v
}
