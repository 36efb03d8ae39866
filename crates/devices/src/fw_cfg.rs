//! QEMU's firmware configuration device (fw_cfg), through its traditional
//! port interface: how firmware and test kernels (kvm-unit-tests' `fwcfg.c`)
//! learn the machine's CPU count and RAM size.
//!
//! | port | width | register |
//! |---|---|---|
//! | 0x510 | 16 (8 accepted) | selector: write an item's key; the read position goes back to its first byte |
//! | 0x511 | 8 | data: each read returns the next byte of the selected item, 0 past its end or for a key without an item; writes are ignored (as QEMU ignores them since 2.4) |
//!
//! The items ([`FwCfg::new`] fills them from the machine): the signature
//! "QEMU" (key 0x00), the interface ID (0x01: bit 0, the traditional
//! interface; no DMA interface), a null UUID (0x02), the RAM size in bytes
//! (0x03, u64), "no graphics" (0x04, u16 = 1), the boot CPU count (0x05,
//! u16), the boot menu off (0x0e, u16 = 0), the most CPUs (0x0f, u16), and
//! an empty file directory (0x19: a big-endian count of 0). Numbers are
//! little-endian, as QEMU stores them. Key bit 14 (write channel) and bit
//! 15 (architecture-local items) are part of the key: no such item exists,
//! so they read as an absent item.

use std::collections::BTreeMap;

use crate::BusDevice;

/// First port: the selector; the data port follows it.
pub const FW_CFG_PORT: u16 = 0x510;
/// Ports the device decodes (selector and data).
pub const FW_CFG_SIZE: u64 = 2;

/// Item keys.
pub const FW_CFG_SIGNATURE: u16 = 0x00;
pub const FW_CFG_ID: u16 = 0x01;
pub const FW_CFG_UUID: u16 = 0x02;
pub const FW_CFG_RAM_SIZE: u16 = 0x03;
pub const FW_CFG_NOGRAPHIC: u16 = 0x04;
pub const FW_CFG_NB_CPUS: u16 = 0x05;
pub const FW_CFG_BOOT_MENU: u16 = 0x0e;
pub const FW_CFG_MAX_CPUS: u16 = 0x0f;
pub const FW_CFG_FILE_DIR: u16 = 0x19;

/// The signature item.
pub const FW_CFG_SIGNATURE_VALUE: &[u8; 4] = b"QEMU";
/// ID bit 0: the traditional (port) interface is present.
pub const FW_CFG_ID_TRADITIONAL: u32 = 1 << 0;

/// The offsets of the two registers within the device's ports.
const SELECTOR: u64 = 0;
const DATA: u64 = 1;

/// What the guest can read about the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FwCfgMachine {
    /// Guest RAM in bytes (below and above 4 GiB).
    pub ram_size: u64,
    /// vCPUs at boot.
    pub cpus: u16,
    /// vCPUs the machine can ever have (no hot-plug here: `cpus`).
    pub max_cpus: u16,
}

/// The fw_cfg device.
#[derive(Debug)]
pub struct FwCfg {
    items: BTreeMap<u16, Vec<u8>>,
    selector: u16,
    /// Position of the next data byte in the selected item.
    position: usize,
}

impl FwCfg {
    /// The device with the items of `machine` (see the module table).
    pub fn new(machine: FwCfgMachine) -> FwCfg {
        let mut items = BTreeMap::new();
        items.insert(FW_CFG_SIGNATURE, FW_CFG_SIGNATURE_VALUE.to_vec());
        items.insert(FW_CFG_ID, FW_CFG_ID_TRADITIONAL.to_le_bytes().to_vec());
        items.insert(FW_CFG_UUID, vec![0; 16]);
        items.insert(FW_CFG_RAM_SIZE, machine.ram_size.to_le_bytes().to_vec());
        items.insert(FW_CFG_NOGRAPHIC, 1u16.to_le_bytes().to_vec());
        items.insert(FW_CFG_NB_CPUS, machine.cpus.to_le_bytes().to_vec());
        items.insert(FW_CFG_BOOT_MENU, 0u16.to_le_bytes().to_vec());
        items.insert(FW_CFG_MAX_CPUS, machine.max_cpus.to_le_bytes().to_vec());
        // The file directory: a count (big-endian, like every field of a
        // directory entry) and no entries.
        items.insert(FW_CFG_FILE_DIR, 0u32.to_be_bytes().to_vec());
        FwCfg {
            items,
            selector: FW_CFG_SIGNATURE,
            position: 0,
        }
    }

    /// The item a key selects, if any.
    pub fn item(&self, key: u16) -> Option<&[u8]> {
        self.items.get(&key).map(Vec::as_slice)
    }

    fn select(&mut self, key: u16) {
        self.selector = key;
        self.position = 0;
    }

    fn next_byte(&mut self) -> u8 {
        let byte = self
            .items
            .get(&self.selector)
            .and_then(|item| item.get(self.position))
            .copied();
        match byte {
            Some(b) => {
                self.position += 1;
                b
            }
            None => 0,
        }
    }
}

impl BusDevice for FwCfg {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            // Each byte of a wider read is the next byte of the item.
            DATA => data.iter_mut().for_each(|b| *b = self.next_byte()),
            // The selector is write-only; a word read spanning both
            // registers reads 0 for the selector, then data.
            SELECTOR => {
                for (i, b) in data.iter_mut().enumerate() {
                    *b = if i == 1 { self.next_byte() } else { 0 };
                }
            }
            _ => data.fill(0),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if offset != SELECTOR || data.is_empty() {
            return;
        }
        let low = u16::from(data[0]);
        let high = data.get(1).map_or(0, |&b| u16::from(b));
        self.select(low | high << 8);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device() -> FwCfg {
        FwCfg::new(FwCfgMachine {
            ram_size: 256 << 20,
            cpus: 3,
            max_cpus: 3,
        })
    }

    /// Reads `len` bytes of item `key` as a guest does: the key to the
    /// selector, then byte reads of the data port.
    fn read_item(dev: &mut FwCfg, key: u16, len: usize) -> Vec<u8> {
        dev.write(SELECTOR, &key.to_le_bytes());
        (0..len)
            .map(|_| {
                let mut b = [0xaa];
                dev.read(DATA, &mut b);
                b[0]
            })
            .collect()
    }

    fn read_u64(dev: &mut FwCfg, key: u16, bytes: usize) -> u64 {
        read_item(dev, key, bytes)
            .iter()
            .enumerate()
            .fold(0, |v, (i, &b)| v | u64::from(b) << (8 * i))
    }

    #[test]
    fn signature_cpus_and_ram_as_kvm_unit_tests_read_them() {
        let mut dev = device();
        assert_eq!(read_item(&mut dev, FW_CFG_SIGNATURE, 4), b"QEMU");
        assert_eq!(read_u64(&mut dev, FW_CFG_NB_CPUS, 2), 3);
        assert_eq!(read_u64(&mut dev, FW_CFG_MAX_CPUS, 2), 3);
        assert_eq!(read_u64(&mut dev, FW_CFG_RAM_SIZE, 8), 256 << 20);
        assert_eq!(read_u64(&mut dev, FW_CFG_ID, 4), 1);
        assert_eq!(read_u64(&mut dev, FW_CFG_NOGRAPHIC, 2), 1);
        assert_eq!(read_item(&mut dev, FW_CFG_FILE_DIR, 4), [0, 0, 0, 0]);
    }

    #[test]
    fn reads_past_the_end_and_absent_keys_are_zero() {
        let mut dev = device();
        // The signature then zeros.
        assert_eq!(read_item(&mut dev, FW_CFG_SIGNATURE, 6), b"QEMU\0\0");
        // kvm-unit-tests' "MAX_RAM" (0x11) is no item here: 0 = no limit.
        assert_eq!(read_u64(&mut dev, 0x11, 8), 0);
        // Write-channel and architecture-local keys are absent items.
        assert_eq!(read_u64(&mut dev, 0x4000 | FW_CFG_NB_CPUS, 2), 0);
        assert_eq!(read_u64(&mut dev, 0x8002, 4), 0);
        assert_eq!(read_u64(&mut dev, 0xffff, 4), 0);
    }

    #[test]
    fn selecting_restarts_the_item_and_data_writes_are_ignored() {
        let mut dev = device();
        assert_eq!(read_item(&mut dev, FW_CFG_SIGNATURE, 2), b"QE");
        dev.write(DATA, &[0x55]);
        let mut b = [0];
        dev.read(DATA, &mut b);
        assert_eq!(b, [b'M']);
        assert_eq!(read_item(&mut dev, FW_CFG_SIGNATURE, 1), b"Q");
        // A byte write to the selector selects that key.
        dev.write(SELECTOR, &[FW_CFG_NB_CPUS as u8]);
        let mut w = [0; 2];
        dev.read(DATA, &mut w);
        assert_eq!(w, [3, 0]);
        // A word read at the selector: 0, then the next data byte.
        dev.write(SELECTOR, &FW_CFG_SIGNATURE.to_le_bytes());
        dev.read(SELECTOR, &mut w);
        assert_eq!(w, [0, b'Q']);
    }

    #[test]
    fn any_access_is_harmless() {
        let mut dev = device();
        for offset in [0, 1, 2, 0xffff, u64::MAX] {
            for len in [0, 1, 2, 4, 8] {
                let mut buf = vec![0xff; len];
                dev.read(offset, &mut buf);
                dev.write(offset, &buf);
            }
        }
        // Long reads of a short item stay in bounds.
        let long = read_item(&mut dev, FW_CFG_UUID, 100);
        assert!(long.iter().all(|&b| b == 0));
    }
}
