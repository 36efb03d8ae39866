//! A type-0 configuration header (PCI Local Bus 3.0, 6.1) with memory
//! BARs and a capability list.
//!
//! Registers are bytes with a write mask: the guest changes only the bits
//! the mask allows (command, cache line size, latency timer, interrupt
//! line, writable capability fields). BARs are kept as addresses and
//! rebuilt on read: a write keeps only the address bits the BAR's size
//! allows, so writing all ones and reading back gives the size mask
//! (sizing), and writing an address moves the BAR (relocation). The
//! expansion ROM BAR reads 0 (no ROM). Offsets past the header's 256 bytes
//! (ECAM's extended space) read 0 and ignore writes.

/// Bytes of conventional configuration space.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Bytes of a function's configuration space through ECAM.
pub const EXT_CONFIG_SPACE_SIZE: usize = 4096;

pub mod reg {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const PROG_IF: usize = 0x09;
    pub const SUBCLASS: usize = 0x0a;
    pub const CLASS: usize = 0x0b;
    pub const CACHE_LINE_SIZE: usize = 0x0c;
    pub const LATENCY_TIMER: usize = 0x0d;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const BAR0: usize = 0x10;
    pub const BAR_END: usize = 0x28;
    pub const SUBSYSTEM_VENDOR_ID: usize = 0x2c;
    pub const SUBSYSTEM_ID: usize = 0x2e;
    pub const ROM: usize = 0x30;
    pub const CAPABILITIES: usize = 0x34;
    pub const INTERRUPT_LINE: usize = 0x3c;
    pub const INTERRUPT_PIN: usize = 0x3d;
}

/// Command register bits.
pub mod command {
    pub const IO: u16 = 1 << 0;
    pub const MEMORY: u16 = 1 << 1;
    pub const BUS_MASTER: u16 = 1 << 2;
    pub const PARITY: u16 = 1 << 6;
    pub const SERR: u16 = 1 << 8;
    pub const INTX_DISABLE: u16 = 1 << 10;
}

/// Status register: the capability list is valid.
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Where the first capability goes.
const FIRST_CAP: usize = 0x40;

/// What a function is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciIds {
    pub vendor: u16,
    pub device: u16,
    pub revision: u8,
    /// Base class, subclass, programming interface.
    pub class: (u8, u8, u8),
    pub subsystem_vendor: u16,
    pub subsystem: u16,
    /// 0 = no INTx pin, 1..=4 = INTA#..INTD#.
    pub interrupt_pin: u8,
}

/// A memory BAR's kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarKind {
    /// 32-bit address, one BAR slot.
    Mem32,
    /// 64-bit address, two BAR slots (this one and the next).
    Mem64,
}

#[derive(Debug, Clone, Copy)]
struct Bar {
    size: u64,
    kind: BarKind,
    prefetchable: bool,
    addr: u64,
}

#[derive(Debug, Clone, Copy)]
enum BarSlot {
    Unused,
    Bar(Bar),
    /// The upper half of the 64-bit BAR in the previous slot.
    Upper,
}

/// A memory range a function decodes: BAR `bar` at `base`, `size` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarRange {
    pub bar: u8,
    pub base: u64,
    pub size: u64,
}

/// A configuration space in a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConfigSaved {
    pub regs: Vec<u8>,
    /// Each BAR slot's address (0 for unused and upper-half slots).
    pub bars: Vec<u64>,
}

/// A type-0 configuration space.
#[derive(Clone)]
pub struct ConfigSpace {
    regs: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
    bars: [BarSlot; 6],
    last_cap: Option<usize>,
    next_cap: usize,
}

impl ConfigSpace {
    pub fn new(ids: PciIds) -> ConfigSpace {
        let mut c = ConfigSpace {
            regs: [0; CONFIG_SPACE_SIZE],
            wmask: [0; CONFIG_SPACE_SIZE],
            bars: [BarSlot::Unused; 6],
            last_cap: None,
            next_cap: FIRST_CAP,
        };
        c.set_u16(reg::VENDOR_ID, ids.vendor);
        c.set_u16(reg::DEVICE_ID, ids.device);
        c.regs[reg::REVISION] = ids.revision;
        c.regs[reg::CLASS] = ids.class.0;
        c.regs[reg::SUBCLASS] = ids.class.1;
        c.regs[reg::PROG_IF] = ids.class.2;
        c.set_u16(reg::SUBSYSTEM_VENDOR_ID, ids.subsystem_vendor);
        c.set_u16(reg::SUBSYSTEM_ID, ids.subsystem);
        c.regs[reg::INTERRUPT_PIN] = ids.interrupt_pin;
        let cmd = command::IO
            | command::MEMORY
            | command::BUS_MASTER
            | command::PARITY
            | command::SERR
            | command::INTX_DISABLE;
        c.wmask[reg::COMMAND..reg::COMMAND + 2].copy_from_slice(&cmd.to_le_bytes());
        c.wmask[reg::CACHE_LINE_SIZE] = 0xff;
        c.wmask[reg::LATENCY_TIMER] = 0xff;
        c.wmask[reg::INTERRUPT_LINE] = 0xff;
        c
    }

    /// Adds memory BAR `index` of `size` bytes (a power of two, at least
    /// 16) at `addr`. Panics on a bad size or index, or a taken slot: the
    /// VMM's layout is wrong, not the guest.
    pub fn add_bar(
        &mut self,
        index: usize,
        size: u64,
        kind: BarKind,
        prefetchable: bool,
        addr: u64,
    ) {
        assert!(size.is_power_of_two() && size >= 16, "BAR size {size:#x}");
        let slots = if kind == BarKind::Mem64 { 2 } else { 1 };
        assert!(index + slots <= 6, "BAR {index}");
        assert!(
            kind == BarKind::Mem64 || size <= 1 << 31,
            "32-bit BAR of {size:#x}"
        );
        for slot in &self.bars[index..index + slots] {
            assert!(matches!(slot, BarSlot::Unused), "BAR {index} is taken");
        }
        self.bars[index] = BarSlot::Bar(Bar {
            size,
            kind,
            prefetchable,
            addr: addr & !(size - 1),
        });
        if kind == BarKind::Mem64 {
            self.bars[index + 1] = BarSlot::Upper;
        }
    }

    /// The address BAR `index` holds now (0 if it does not exist).
    pub fn bar_addr(&self, index: usize) -> u64 {
        match self.bars.get(index) {
            Some(BarSlot::Bar(bar)) => bar.addr,
            _ => 0,
        }
    }

    /// The memory ranges the function decodes: none unless the command
    /// register enables memory space; BARs that wrap around are left out.
    pub fn bar_ranges(&self) -> Vec<BarRange> {
        if self.command() & command::MEMORY == 0 {
            return Vec::new();
        }
        self.bars
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                BarSlot::Bar(bar) if bar.addr.checked_add(bar.size).is_some() => Some(BarRange {
                    bar: i as u8,
                    base: bar.addr,
                    size: bar.size,
                }),
                _ => None,
            })
            .collect()
    }

    pub fn command(&self) -> u16 {
        self.u16_at(reg::COMMAND)
    }

    /// Adds a capability: `body` follows the ID and next-pointer bytes;
    /// `wmask` (as long as `body`) says which of its bits the guest may
    /// write. Returns the capability's offset. Panics when the capability
    /// does not fit in the 256 bytes (a VMM bug).
    pub fn add_capability(&mut self, id: u8, body: &[u8], wmask: &[u8]) -> usize {
        assert_eq!(body.len(), wmask.len());
        let offset = self.next_cap;
        let end = offset + 2 + body.len();
        assert!(end <= CONFIG_SPACE_SIZE, "capabilities overflow");
        self.regs[offset] = id;
        self.regs[offset + 1] = 0;
        self.regs[offset + 2..end].copy_from_slice(body);
        self.wmask[offset + 2..end].copy_from_slice(wmask);
        match self.last_cap {
            Some(last) => self.regs[last + 1] = offset as u8,
            None => {
                self.regs[reg::CAPABILITIES] = offset as u8;
                let status = self.u16_at(reg::STATUS) | STATUS_CAP_LIST;
                self.set_u16(reg::STATUS, status);
            }
        }
        self.last_cap = Some(offset);
        self.next_cap = end.next_multiple_of(4);
        offset
    }

    /// A register's raw bytes (for the device behind the header).
    pub fn u16_at(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.regs[offset], self.regs[offset + 1]])
    }

    pub fn u32_at(&self, offset: usize) -> u32 {
        u32::from_le_bytes([
            self.regs[offset],
            self.regs[offset + 1],
            self.regs[offset + 2],
            self.regs[offset + 3],
        ])
    }

    fn set_u16(&mut self, offset: usize, value: u16) {
        self.regs[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
    }

    /// The dword of BAR slot `index` as the guest reads it.
    fn bar_dword(&self, index: usize) -> u32 {
        match self.bars[index] {
            BarSlot::Unused => 0,
            BarSlot::Bar(bar) => {
                let mut flags = u32::from(bar.prefetchable) << 3;
                if bar.kind == BarKind::Mem64 {
                    flags |= 0b100;
                }
                (bar.addr as u32 & !(bar.size as u32).wrapping_sub(1)) | flags
            }
            BarSlot::Upper => match self.bars[index - 1] {
                BarSlot::Bar(bar) => ((bar.addr & !(bar.size - 1)) >> 32) as u32,
                _ => 0,
            },
        }
    }

    fn write_bar_dword(&mut self, index: usize, value: u32) {
        match self.bars[index] {
            BarSlot::Unused => {}
            BarSlot::Bar(ref mut bar) => {
                let low = u64::from(value & !0xf);
                bar.addr = (bar.addr & !0xffff_ffff | low) & !(bar.size - 1);
            }
            BarSlot::Upper => {
                if let BarSlot::Bar(ref mut bar) = self.bars[index - 1] {
                    bar.addr = (bar.addr & 0xffff_ffff | u64::from(value) << 32) & !(bar.size - 1);
                }
            }
        }
    }

    fn read_byte(&self, offset: usize) -> u8 {
        match offset {
            reg::BAR0..reg::BAR_END => {
                let index = (offset - reg::BAR0) / 4;
                self.bar_dword(index).to_le_bytes()[offset % 4]
            }
            o if o < CONFIG_SPACE_SIZE => self.regs[o],
            _ => 0,
        }
    }

    /// The registers and BAR addresses, for a snapshot.
    pub fn save(&self) -> ConfigSaved {
        ConfigSaved {
            regs: self.regs.to_vec(),
            bars: (0..self.bars.len()).map(|i| self.bar_addr(i)).collect(),
        }
    }

    /// Puts back the registers and BAR addresses of the same function's
    /// [`ConfigSpace::save`]; false (and no change) when the shape differs.
    pub fn restore(&mut self, saved: &ConfigSaved) -> bool {
        let Ok(regs) = <[u8; CONFIG_SPACE_SIZE]>::try_from(saved.regs.as_slice()) else {
            return false;
        };
        if saved.bars.len() != self.bars.len() {
            return false;
        }
        self.regs = regs;
        for (slot, &addr) in self.bars.iter_mut().zip(&saved.bars) {
            if let BarSlot::Bar(bar) = slot {
                bar.addr = addr & !(bar.size - 1);
            }
        }
        true
    }

    /// Reads `data.len()` bytes at `offset` (any size; bytes past the
    /// space read 0).
    pub fn read(&self, offset: usize, data: &mut [u8]) {
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset.checked_add(i).map_or(0, |o| self.read_byte(o));
        }
    }

    /// Writes `data` at `offset`: masked bytes, BARs as whole dwords
    /// (the bytes not written keep their value).
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        let mut bar_dwords: Vec<(usize, [u8; 4])> = Vec::new();
        for (i, &value) in data.iter().enumerate() {
            let Some(o) = offset.checked_add(i) else {
                return;
            };
            match o {
                reg::BAR0..reg::BAR_END => {
                    let index = (o - reg::BAR0) / 4;
                    if bar_dwords.last().is_none_or(|(last, _)| *last != index) {
                        bar_dwords.push((index, self.bar_dword(index).to_le_bytes()));
                    }
                    if let Some((_, bytes)) = bar_dwords.last_mut() {
                        bytes[o % 4] = value;
                    }
                }
                o if o < CONFIG_SPACE_SIZE => {
                    let mask = self.wmask[o];
                    self.regs[o] = self.regs[o] & !mask | value & mask;
                }
                _ => {}
            }
        }
        for (index, bytes) in bar_dwords {
            self.write_bar_dword(index, u32::from_le_bytes(bytes));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> ConfigSpace {
        let mut c = ConfigSpace::new(PciIds {
            vendor: 0x1af4,
            device: 0x1042,
            revision: 1,
            class: (0x01, 0x80, 0),
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
            interrupt_pin: 1,
        });
        c.add_bar(0, 0x4000, BarKind::Mem32, false, 0xc000_0000);
        c.add_bar(2, 0x10_0000, BarKind::Mem64, true, 0x1_2340_0000);
        c
    }

    fn read32(c: &ConfigSpace, offset: usize) -> u32 {
        let mut b = [0u8; 4];
        c.read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    fn write32(c: &mut ConfigSpace, offset: usize, v: u32) {
        c.write(offset, &v.to_le_bytes());
    }

    #[test]
    fn header_reads_ids_and_only_writable_bits_change() {
        let mut c = space();
        assert_eq!(read32(&c, 0), 0x1042_1af4);
        assert_eq!(read32(&c, 8), 0x0180_0001);
        assert_eq!(read32(&c, 0x2c), 0x0040_1af4);
        // IDs are read-only; the command register keeps its writable bits.
        write32(&mut c, 0, 0xdead_beef);
        assert_eq!(read32(&c, 0), 0x1042_1af4);
        c.write(reg::COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(c.command(), 0x0547);
        // Interrupt line is writable, the pin is not.
        c.write(reg::INTERRUPT_LINE, &[0x0b, 0x04]);
        assert_eq!(read32(&c, 0x3c) & 0xffff, 0x010b);
        // The ROM BAR reads 0, even after sizing.
        write32(&mut c, reg::ROM, 0xffff_ffff);
        assert_eq!(read32(&c, reg::ROM), 0);
        // Past the header and past the extended space.
        assert_eq!(read32(&c, 0x100), 0);
        c.write(usize::MAX, &[1, 2]);
        let mut b = [0xffu8; 2];
        c.read(usize::MAX, &mut b);
        assert_eq!(b, [0, 0]);
    }

    #[test]
    fn bars_size_and_relocate() {
        let mut c = space();
        assert_eq!(read32(&c, 0x10), 0xc000_0000);
        assert_eq!(read32(&c, 0x18), 0x2340_000c);
        assert_eq!(read32(&c, 0x1c), 1);
        // Sizing: all ones reads back the size mask and the flags.
        write32(&mut c, 0x10, 0xffff_ffff);
        assert_eq!(read32(&c, 0x10), !0x3fff);
        write32(&mut c, 0x18, 0xffff_ffff);
        write32(&mut c, 0x1c, 0xffff_ffff);
        assert_eq!(read32(&c, 0x18), 0xfff0_000c);
        assert_eq!(read32(&c, 0x1c), 0xffff_ffff);
        // Unused BARs read 0 whatever is written.
        write32(&mut c, 0x14, 0xffff_ffff);
        assert_eq!(read32(&c, 0x14), 0);
        // Relocation, with misaligned low bits dropped.
        write32(&mut c, 0x10, 0xc123_4567);
        assert_eq!(c.bar_addr(0), 0xc123_4000);
        write32(&mut c, 0x18, 0x8000_0000);
        write32(&mut c, 0x1c, 0x2);
        assert_eq!(c.bar_addr(2), 0x2_8000_0000);
        // A byte write changes only that byte of the address.
        c.write(0x13, &[0xd0]);
        assert_eq!(c.bar_addr(0), 0xd023_4000);
        // Decoding follows the command register.
        assert!(c.bar_ranges().is_empty());
        c.write(reg::COMMAND, &command::MEMORY.to_le_bytes());
        assert_eq!(
            c.bar_ranges(),
            vec![
                BarRange {
                    bar: 0,
                    base: 0xd023_4000,
                    size: 0x4000
                },
                BarRange {
                    bar: 2,
                    base: 0x2_8000_0000,
                    size: 0x10_0000
                },
            ]
        );
        // A 64-bit BAR sized to all ones wraps: not decoded.
        write32(&mut c, 0x18, 0xffff_ffff);
        write32(&mut c, 0x1c, 0xffff_ffff);
        assert_eq!(c.bar_ranges().len(), 1);
    }

    #[test]
    fn capabilities_chain() {
        let mut c = space();
        assert_eq!(c.u16_at(reg::STATUS) & STATUS_CAP_LIST, 0);
        let a = c.add_capability(0x09, &[1, 2, 3], &[0, 0xff, 0]);
        let b = c.add_capability(0x11, &[0; 10], &[0; 10]);
        assert_eq!((a, b), (0x40, 0x48));
        assert_ne!(c.u16_at(reg::STATUS) & STATUS_CAP_LIST, 0);
        assert_eq!(read32(&c, reg::CAPABILITIES) & 0xff, 0x40);
        assert_eq!(read32(&c, 0x40), 0x0201_4809);
        c.write(0x40, &[0xff; 5]);
        assert_eq!(read32(&c, 0x40), 0xff01_4809);
        assert_eq!(read32(&c, 0x48) & 0xffff, 0x0011);
    }
}
