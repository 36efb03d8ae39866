//! An 82093AA-style I/O APIC with 24 pins (KVM's `ioapic.c`), and the
//! decoding of MSI messages into the same [`Delivery`] form.
//!
//! The MMIO window is 0x100 bytes at [`IOAPIC_DEFAULT_BASE`]: IOREGSEL at
//! offset 0x00 selects a register, IOWIN at 0x10 reads or writes it.
//! Registers: ID (0x00, bits 27:24), VER (0x01, [`IOAPIC_VERSION`]), ARB
//! (0x02, reads as the ID) and the redirection table (0x10..=0x3f, two
//! 32-bit halves per pin).
//!
//! Interrupts: [`IoApic::set_irq`] takes the logical level of a pin
//! (asserted or not). An edge-triggered pin delivers on a rising edge; a
//! level-triggered pin delivers while asserted and its remote IRR is clear,
//! and sets remote IRR until the local APIC's EOI of that vector comes back
//! through [`IoApic::eoi`], which re-delivers a pin that is still asserted.
//! Deliveries are returned as values for the caller to route to local APICs
//! ([`crate::lapic::Lapic::matches_destination`]).
//!
//! Not modelled: the pin polarity bit is stored but ignored (levels are
//! logical, as in KVM); delivery status always reads idle; edges arriving
//! while a pin is masked are lost (a masked level-triggered pin delivers
//! when unmasked if still asserted); there is no EOI register (version
//! 0x20 feature) and no interrupt-storm throttling; extended destination
//! IDs (bits 55:48) are not decoded.

/// The default physical base of the I/O APIC.
pub const IOAPIC_DEFAULT_BASE: u64 = 0xFEC0_0000;
/// Size of the MMIO window.
pub const IOAPIC_MMIO_SIZE: u64 = 0x100;
/// Number of pins (GSIs 0..24).
pub const IOAPIC_NUM_PINS: usize = 24;
/// The version register: version 0x11, max redirection entry 23.
pub const IOAPIC_VERSION: u32 = 0x0017_0011;

const IOREGSEL: u64 = 0x00;
const IOWIN: u64 = 0x10;
const REG_ID: u32 = 0x00;
const REG_VER: u32 = 0x01;
const REG_ARB: u32 = 0x02;
const REG_REDIR_FIRST: u32 = 0x10;
const REG_REDIR_LAST: u32 = 0x10 + 2 * IOAPIC_NUM_PINS as u32 - 1;

const ENTRY_DELIVERY_STATUS: u64 = 1 << 12;
const ENTRY_REMOTE_IRR: u64 = 1 << 14;
const ENTRY_LEVEL: u64 = 1 << 15;
const ENTRY_MASKED: u64 = 1 << 16;
/// Writable bits of the low half: vector, delivery mode, destination mode,
/// polarity, trigger mode, mask.
const ENTRY_LOW_WRITABLE: u64 = 0x0001_afff;
/// Writable bits of the high half: the destination (63:56).
const ENTRY_HIGH_WRITABLE: u64 = 0xff00_0000_0000_0000;

use crate::DeliveryMode;

/// An interrupt message for the local APICs: from an IOAPIC pin or an MSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Delivery {
    pub vector: u8,
    /// Physical APIC ID or logical destination (8 bits).
    pub dest: u32,
    pub dest_mode_logical: bool,
    pub delivery_mode: DeliveryMode,
    /// The local APIC must remember the vector in TMR and report its EOI.
    pub level_triggered: bool,
    /// MSI address bit 3 (lowest-priority style redirection allowed);
    /// false for IOAPIC deliveries.
    pub redirection_hint: bool,
}

/// Is this a write to the interrupt range 0xFEEx_xxxx (an MSI)?
pub fn is_msi_address(address: u64) -> bool {
    address >> 20 == 0xfee
}

/// Decodes an MSI: address bits 19:12 destination ID, bit 3 redirection
/// hint, bit 2 destination mode (1 = logical); data bits 7:0 vector, 10:8
/// delivery mode, 15 trigger mode (1 = level). Data bit 14 (level
/// assert/de-assert) and the address's extended destination bits 11:5 are
/// ignored. The caller checks [`is_msi_address`] first.
pub fn decode_msi(address: u64, data: u32) -> Delivery {
    Delivery {
        vector: data as u8,
        dest: ((address >> 12) & 0xff) as u32,
        dest_mode_logical: address & (1 << 2) != 0,
        delivery_mode: DeliveryMode::from_bits(data >> 8),
        level_triggered: data & (1 << 15) != 0,
        redirection_hint: address & (1 << 3) != 0,
    }
}

/// A decoded redirection table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirEntry {
    pub raw: u64,
    pub vector: u8,
    pub delivery_mode: DeliveryMode,
    pub dest_mode_logical: bool,
    pub active_low: bool,
    pub remote_irr: bool,
    pub level_triggered: bool,
    pub masked: bool,
    pub dest: u8,
}

impl RedirEntry {
    pub fn decode(raw: u64) -> RedirEntry {
        RedirEntry {
            raw,
            vector: raw as u8,
            delivery_mode: DeliveryMode::from_bits((raw >> 8) as u32),
            dest_mode_logical: raw & (1 << 11) != 0,
            active_low: raw & (1 << 13) != 0,
            remote_irr: raw & ENTRY_REMOTE_IRR != 0,
            level_triggered: raw & ENTRY_LEVEL != 0,
            masked: raw & ENTRY_MASKED != 0,
            dest: (raw >> 56) as u8,
        }
    }
}

/// The complete state of the I/O APIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IoApicState {
    /// The ID register (bits 27:24 meaningful).
    pub id: u32,
    /// IOREGSEL.
    pub ioregsel: u32,
    /// Redirection entries, remote IRR included.
    pub redirtbl: [u64; IOAPIC_NUM_PINS],
    /// Current logical level of each pin (bit n = pin n).
    pub pin_levels: u32,
}

impl Default for IoApicState {
    /// Reset: every entry masked, all pins low.
    fn default() -> Self {
        IoApicState {
            id: 0,
            ioregsel: 0,
            redirtbl: [ENTRY_MASKED; IOAPIC_NUM_PINS],
            pin_levels: 0,
        }
    }
}

/// The I/O APIC.
#[derive(Clone, Debug, Default)]
pub struct IoApic {
    s: IoApicState,
}

impl IoApic {
    /// An IOAPIC after reset with APIC ID `id`.
    pub fn new(id: u8) -> IoApic {
        IoApic {
            s: IoApicState {
                id: u32::from(id & 0xf) << 24,
                ..IoApicState::default()
            },
        }
    }

    pub fn state(&self) -> IoApicState {
        self.s.clone()
    }

    pub fn from_state(state: IoApicState) -> IoApic {
        IoApic { s: state }
    }

    /// The redirection entry of `pin`, if it exists.
    pub fn entry(&self, pin: usize) -> Option<RedirEntry> {
        self.s.redirtbl.get(pin).map(|&raw| RedirEntry::decode(raw))
    }

    fn read_register(&self) -> u32 {
        match self.s.ioregsel {
            REG_ID | REG_ARB => self.s.id & 0x0f00_0000,
            REG_VER => IOAPIC_VERSION,
            r @ REG_REDIR_FIRST..=REG_REDIR_LAST => {
                let index = r - REG_REDIR_FIRST;
                let entry = self.s.redirtbl[(index / 2) as usize];
                if index & 1 == 0 {
                    entry as u32
                } else {
                    (entry >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    fn write_register(&mut self, value: u32) -> Vec<Delivery> {
        match self.s.ioregsel {
            REG_ID => self.s.id = value & 0x0f00_0000,
            r @ REG_REDIR_FIRST..=REG_REDIR_LAST => {
                let index = r - REG_REDIR_FIRST;
                let pin = (index / 2) as usize;
                let old = self.s.redirtbl[pin];
                let value = u64::from(value);
                let mut entry = if index & 1 == 0 {
                    (old & !ENTRY_LOW_WRITABLE) | (value & ENTRY_LOW_WRITABLE)
                } else {
                    (old & !ENTRY_HIGH_WRITABLE) | ((value << 32) & ENTRY_HIGH_WRITABLE)
                };
                entry &= !ENTRY_DELIVERY_STATUS;
                if entry & ENTRY_LEVEL == 0 {
                    entry &= !ENTRY_REMOTE_IRR;
                }
                self.s.redirtbl[pin] = entry;
                tracing::trace!(pin, entry, "kvm_ioapic_write_redir");
                // A level-triggered pin that is asserted delivers once it
                // can (unmasked, remote IRR clear).
                return self.service_level(pin).into_iter().collect();
            }
            _ => {}
        }
        Vec::new()
    }

    /// A guest read of the MMIO window at `offset` (IOREGSEL at 0x00,
    /// IOWIN at 0x10). Any size: the bytes of the 32-bit register starting
    /// at `offset % 4`; beyond it, zeros.
    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let value = match offset & !3 {
            IOREGSEL => self.s.ioregsel,
            IOWIN => self.read_register(),
            _ => return,
        };
        let bytes = value.to_le_bytes();
        let start = (offset & 3) as usize;
        for (dst, src) in data.iter_mut().zip(&bytes[start..]) {
            *dst = *src;
        }
    }

    /// A guest write to the MMIO window at `offset`. Bytes are merged into
    /// the 32-bit register at `offset % 4`; bytes past it are dropped (an
    /// 8-byte write to IOWIN writes the low 32 bits). Returns the
    /// interrupts a redirection entry change released.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Vec<Delivery> {
        let current = match offset & !3 {
            IOREGSEL => self.s.ioregsel,
            IOWIN => self.read_register(),
            _ => return Vec::new(),
        };
        let mut bytes = current.to_le_bytes();
        let start = (offset & 3) as usize;
        for (dst, src) in bytes[start..].iter_mut().zip(data) {
            *dst = *src;
        }
        let value = u32::from_le_bytes(bytes);
        if offset & !3 == IOREGSEL {
            self.s.ioregsel = value & 0xff;
            Vec::new()
        } else {
            self.write_register(value)
        }
    }

    /// Sets the logical level of `pin` (true = asserted). Returns the
    /// interrupts to deliver: an edge-triggered pin's rising edge, or a
    /// level-triggered pin that is asserted and not waiting for an EOI.
    /// Out-of-range pins are ignored.
    pub fn set_irq(&mut self, pin: usize, level: bool) -> Vec<Delivery> {
        let Some(&raw) = self.s.redirtbl.get(pin) else {
            return Vec::new();
        };
        let bit = 1u32 << pin;
        let was = self.s.pin_levels & bit != 0;
        if level {
            self.s.pin_levels |= bit;
        } else {
            self.s.pin_levels &= !bit;
        }
        tracing::trace!(pin, level, "kvm_ioapic_set_irq");
        let entry = RedirEntry::decode(raw);
        if entry.level_triggered {
            return self.service_level(pin).into_iter().collect();
        }
        if level && !was && !entry.masked {
            return vec![delivery_of(&entry)];
        }
        Vec::new()
    }

    /// The current logical level of `pin`.
    pub fn pin_level(&self, pin: usize) -> bool {
        pin < IOAPIC_NUM_PINS && self.s.pin_levels & (1 << pin) != 0
    }

    /// Delivers a level-triggered `pin` if it is asserted, unmasked and
    /// its remote IRR is clear; sets remote IRR.
    fn service_level(&mut self, pin: usize) -> Option<Delivery> {
        let raw = *self.s.redirtbl.get(pin)?;
        let entry = RedirEntry::decode(raw);
        if !entry.level_triggered || entry.masked || entry.remote_irr || !self.pin_level(pin) {
            return None;
        }
        self.s.redirtbl[pin] |= ENTRY_REMOTE_IRR;
        Some(delivery_of(&entry))
    }

    /// A local APIC EOI'd level-triggered `vector`: clears remote IRR of
    /// every level-triggered pin with that vector, and re-delivers those
    /// still asserted.
    pub fn eoi(&mut self, vector: u8) -> Vec<Delivery> {
        let mut out = Vec::new();
        for pin in 0..IOAPIC_NUM_PINS {
            let entry = RedirEntry::decode(self.s.redirtbl[pin]);
            if entry.vector != vector || !entry.level_triggered || !entry.remote_irr {
                continue;
            }
            tracing::trace!(pin, vector, "kvm_ioapic_eoi");
            self.s.redirtbl[pin] &= !ENTRY_REMOTE_IRR;
            out.extend(self.service_level(pin));
        }
        out
    }
}

fn delivery_of(entry: &RedirEntry) -> Delivery {
    Delivery {
        vector: entry.vector,
        dest: u32::from(entry.dest),
        dest_mode_logical: entry.dest_mode_logical,
        delivery_mode: entry.delivery_mode,
        level_triggered: entry.level_triggered,
        redirection_hint: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_reg(io: &mut IoApic, reg: u32, value: u32) -> Vec<Delivery> {
        io.write(IOREGSEL, &reg.to_le_bytes());
        io.write(IOWIN, &value.to_le_bytes())
    }

    fn read_reg(io: &mut IoApic, reg: u32) -> u32 {
        io.write(IOREGSEL, &reg.to_le_bytes());
        let mut b = [0u8; 4];
        io.read(IOWIN, &mut b);
        u32::from_le_bytes(b)
    }

    /// Programs `pin`: vector, level-triggered or not, destination.
    fn program(io: &mut IoApic, pin: u32, low: u32, dest: u8) -> Vec<Delivery> {
        write_reg(io, 0x11 + 2 * pin, u32::from(dest) << 24);
        write_reg(io, 0x10 + 2 * pin, low)
    }

    #[test]
    fn identification_registers() {
        let mut io = IoApic::new(2);
        assert_eq!(read_reg(&mut io, REG_ID), 2 << 24);
        assert_eq!(read_reg(&mut io, REG_VER), 0x0017_0011);
        assert_eq!(read_reg(&mut io, REG_ARB), 2 << 24);
        write_reg(&mut io, REG_ID, 0xffff_ffff);
        assert_eq!(read_reg(&mut io, REG_ID), 0x0f00_0000);
        write_reg(&mut io, REG_VER, 0);
        assert_eq!(read_reg(&mut io, REG_VER), 0x0017_0011);
        assert_eq!(read_reg(&mut io, 0x40), 0, "past the table");
        let mut sel = [0u8; 4];
        io.read(IOREGSEL, &mut sel);
        assert_eq!(u32::from_le_bytes(sel), 0x40);
    }

    #[test]
    fn redirection_entries_reset_masked_and_read_back() {
        let mut io = IoApic::new(0);
        for pin in 0..24 {
            assert_eq!(read_reg(&mut io, 0x10 + 2 * pin), ENTRY_MASKED as u32);
        }
        program(&mut io, 5, 0xffff_ffff, 0xab);
        assert_eq!(read_reg(&mut io, 0x1a), 0x0001_afff, "RO bits stay clear");
        assert_eq!(read_reg(&mut io, 0x1b), 0xab00_0000);
        let e = io.entry(5).unwrap();
        assert_eq!(e.vector, 0xff);
        assert_eq!(e.delivery_mode, DeliveryMode::ExtInt);
        assert!(e.dest_mode_logical && e.active_low && e.level_triggered && e.masked);
        assert_eq!(e.dest, 0xab);
        assert!(io.entry(24).is_none());
    }

    #[test]
    fn edge_triggered_delivers_on_rising_edge() {
        let mut io = IoApic::new(0);
        program(&mut io, 2, 0x0000_0030, 1);
        let d = io.set_irq(2, true);
        assert_eq!(
            d,
            vec![Delivery {
                vector: 0x30,
                dest: 1,
                dest_mode_logical: false,
                delivery_mode: DeliveryMode::Fixed,
                level_triggered: false,
                redirection_hint: false,
            }]
        );
        assert!(io.set_irq(2, true).is_empty(), "no edge");
        assert!(io.set_irq(2, false).is_empty());
        assert_eq!(io.set_irq(2, true).len(), 1);
        io.set_irq(2, false);
        // Masked: the edge is lost.
        program(&mut io, 2, 0x0001_0030, 1);
        assert!(io.set_irq(2, true).is_empty());
        assert!(program(&mut io, 2, 0x0000_0030, 1).is_empty());
    }

    #[test]
    fn level_triggered_with_remote_irr_and_eoi() {
        let mut io = IoApic::new(0);
        program(&mut io, 9, 0x0000_8941, 0); // level, logical, vector 0x41
        let d = io.set_irq(9, true);
        assert_eq!(d.len(), 1);
        assert!(d[0].level_triggered && d[0].dest_mode_logical);
        assert!(io.entry(9).unwrap().remote_irr);
        assert_eq!(read_reg(&mut io, 0x22) & (1 << 14), 1 << 14);
        // Still asserted, remote IRR set: nothing new.
        assert!(io.set_irq(9, true).is_empty());
        // EOI while still asserted re-delivers.
        let d = io.eoi(0x41);
        assert_eq!(d.len(), 1);
        assert!(io.entry(9).unwrap().remote_irr);
        // Deassert, then EOI: remote IRR clears, nothing delivered.
        assert!(io.set_irq(9, false).is_empty());
        assert!(io.eoi(0x41).is_empty());
        assert!(!io.entry(9).unwrap().remote_irr);
        // EOI for another vector does nothing.
        io.set_irq(9, true);
        assert!(io.eoi(0x42).is_empty());
        assert!(io.entry(9).unwrap().remote_irr);
    }

    #[test]
    fn unmasking_an_asserted_level_pin_delivers() {
        let mut io = IoApic::new(0);
        program(&mut io, 11, 0x0001_8050, 3);
        assert!(io.set_irq(11, true).is_empty(), "masked");
        let d = program(&mut io, 11, 0x0000_8050, 3);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].dest, 3);
        // Switching the pin to edge clears remote IRR.
        program(&mut io, 11, 0x0000_0050, 3);
        assert!(!io.entry(11).unwrap().remote_irr);
    }

    #[test]
    fn odd_accesses_do_not_panic() {
        let mut io = IoApic::new(0);
        for offset in 0..0x120u64 {
            for len in [0usize, 1, 2, 3, 4, 8, 16] {
                let mut buf = vec![0u8; len];
                io.read(offset, &mut buf);
                io.write(offset, &vec![0xffu8; len]);
            }
        }
        assert!(io.set_irq(24, true).is_empty());
        assert!(io.set_irq(usize::MAX, true).is_empty());
        assert!(!io.pin_level(99));
        io.eoi(0xff);
        // A byte write to IOREGSEL and an 8-byte write to IOWIN.
        let mut io = IoApic::new(0);
        io.write(IOREGSEL, &[0x10]);
        io.write(IOWIN, &0x0000_0000_0000_0077u64.to_le_bytes());
        assert_eq!(io.entry(0).unwrap().vector, 0x77);
        // A byte write into IOWIN merges.
        io.write(IOWIN + 2, &[0x01]);
        assert!(io.entry(0).unwrap().masked);
        assert_eq!(io.entry(0).unwrap().vector, 0x77);
    }

    #[test]
    fn msi_decoding() {
        assert!(is_msi_address(0xfee0_0000));
        assert!(!is_msi_address(0xfec0_0000));
        let d = decode_msi(0xfee0_300c, 0x0000_c123);
        assert_eq!(
            d,
            Delivery {
                vector: 0x23,
                dest: 3,
                dest_mode_logical: true,
                delivery_mode: DeliveryMode::LowestPriority,
                level_triggered: true,
                redirection_hint: true,
            }
        );
        let d = decode_msi(0xfeeff000, 0x0000_0430);
        assert_eq!(d.dest, 0xff);
        assert_eq!(d.delivery_mode, DeliveryMode::Nmi);
        assert!(!d.dest_mode_logical && !d.level_triggered);
    }

    #[test]
    fn snapshot_round_trip() {
        let mut io = IoApic::new(1);
        program(&mut io, 3, 0x0000_8033, 0);
        io.set_irq(3, true);
        let state = io.state();
        let mut restored = IoApic::from_state(state.clone());
        assert_eq!(restored.state(), state);
        assert_eq!(restored.eoi(0x33).len(), 1);
    }
}
