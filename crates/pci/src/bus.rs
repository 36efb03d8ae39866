//! PCI bus 0: the functions on it, the two ways the guest reaches their
//! configuration space, and the routing of their BARs.
//!
//! - [`ConfigIo`]: configuration mechanism #1 at ports 0xCF8 (address,
//!   32-bit accesses only) and 0xCFC..0xCFF (data, 1/2/4-byte accesses at
//!   the byte offset of the port); byte accesses to 0xCF9 go to the
//!   chipset's reset control register when one is given.
//! - [`Ecam`]: the memory-mapped configuration space (MMCONFIG), 4 KiB per
//!   function, bus 0 only: offset = device << 15 | function << 12 | register.
//! - [`BarWindow`]: the MMIO window the BARs live in. The window is one
//!   range on the VMM's MMIO bus; inside it, accesses go to the function
//!   whose BAR holds the address *now*, so the guest can move BARs (or turn
//!   memory decoding off) without the MMIO bus changing.
//!
//! Functions that do not exist (other buses, functions 1..7, empty slots)
//! read all ones and ignore writes.

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use devices::ratelimit::RateLimiter;
use devices::BusDevice;

use crate::config::{ConfigSpace, PciIds, EXT_CONFIG_SPACE_SIZE};
use crate::{BarRange, PciDevice};

/// Slots on bus 0.
pub const SLOTS: usize = 32;
/// Port of the CONFIG_ADDRESS register; CONFIG_DATA is at +4.
pub const CONFIG_IO_PORT: u16 = 0xcf8;
/// Ports of configuration mechanism #1.
pub const CONFIG_IO_SIZE: u64 = 8;
/// Bytes of ECAM for one bus.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

/// The host bridge's IDs: Red Hat's "QEMU PCIe host bridge" (1b36:0008),
/// the ID assigned to a virtual machine's generic host bridge; class 06/00
/// (host bridge), which is what Linux's `pci_sanity_check` looks for on bus
/// 0 before trusting configuration mechanism #1.
pub const HOST_BRIDGE_IDS: PciIds = PciIds {
    vendor: 0x1b36,
    device: 0x0008,
    revision: 0,
    class: (0x06, 0x00, 0x00),
    subsystem_vendor: 0x1b36,
    subsystem: 0x0008,
    interrupt_pin: 0,
};

/// The host bridge at 00:00.0: a header and nothing else.
pub struct HostBridge {
    config: ConfigSpace,
}

impl Default for HostBridge {
    fn default() -> Self {
        HostBridge {
            config: ConfigSpace::new(HOST_BRIDGE_IDS),
        }
    }
}

impl PciDevice for HostBridge {
    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        self.config.read(offset, data);
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        self.config.write(offset, data);
    }
    fn bar_ranges(&self) -> Vec<BarRange> {
        Vec::new()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("PCI bus 0 has no free slot")]
    BusFull,
}

#[derive(Clone)]
struct Route {
    base: u64,
    size: u64,
    slot: u8,
    bar: u8,
    device: Arc<Mutex<dyn PciDevice>>,
}

fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bus 0 and its functions (function 0 of each slot).
pub struct PciBus {
    slots: Vec<Option<Arc<Mutex<dyn PciDevice>>>>,
    /// The BAR ranges being decoded, rebuilt after configuration writes.
    routes: RwLock<Vec<Route>>,
    log_limit: RateLimiter,
}

impl Default for PciBus {
    fn default() -> Self {
        PciBus::new()
    }
}

impl PciBus {
    /// A bus with the host bridge at slot 0.
    pub fn new() -> PciBus {
        let mut slots: Vec<Option<Arc<Mutex<dyn PciDevice>>>> = vec![None; SLOTS];
        slots[0] = Some(Arc::new(Mutex::new(HostBridge::default())));
        PciBus {
            slots,
            routes: RwLock::new(Vec::new()),
            log_limit: RateLimiter::default(),
        }
    }

    /// Puts `device` in the first free slot and returns the slot.
    pub fn add(&mut self, device: Arc<Mutex<dyn PciDevice>>) -> Result<u8, PciError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::BusFull)?;
        self.slots[slot] = Some(device);
        self.refresh_routes(slot);
        Ok(slot as u8)
    }

    fn function(&self, bus: u8, slot: u8, function: u8) -> Option<&Arc<Mutex<dyn PciDevice>>> {
        if bus != 0 || function != 0 {
            return None;
        }
        self.slots.get(usize::from(slot))?.as_ref()
    }

    /// Reads configuration space; a function that does not exist reads all
    /// ones.
    pub fn config_read(&self, bus: u8, slot: u8, function: u8, offset: usize, data: &mut [u8]) {
        match self.function(bus, slot, function) {
            Some(device) => lock(device).config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// Writes configuration space, then follows the function's BARs.
    pub fn config_write(&self, bus: u8, slot: u8, function: u8, offset: usize, data: &[u8]) {
        if let Some(device) = self.function(bus, slot, function) {
            lock(device).config_write(offset, data);
            self.refresh_routes(usize::from(slot));
        }
    }

    /// Rebuilds every function's routes from its BARs (after its
    /// configuration space was restored).
    pub fn refresh_all_routes(&self) {
        for slot in 0..self.slots.len() {
            self.refresh_routes(slot);
        }
    }

    /// Rebuilds the routes of the function in `slot` from its BARs.
    fn refresh_routes(&self, slot: usize) {
        let Some(device) = self.slots.get(slot).and_then(Option::as_ref) else {
            return;
        };
        let ranges = lock(device).bar_ranges();
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.retain(|r| usize::from(r.slot) != slot);
        routes.extend(ranges.into_iter().map(|r| Route {
            base: r.base,
            size: r.size,
            slot: slot as u8,
            bar: r.bar,
            device: device.clone(),
        }));
    }

    fn route(&self, addr: u64, len: usize) -> Option<(Route, u64)> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        routes.iter().find_map(|r| {
            let offset = addr.checked_sub(r.base)?;
            (offset.checked_add(len as u64)? <= r.size).then(|| (r.clone(), offset))
        })
    }

    /// Reads guest-physical `addr` from the BAR that decodes it; false
    /// (all ones) when none does.
    pub fn mmio_read(&self, addr: u64, data: &mut [u8]) -> bool {
        match self.route(addr, data.len()) {
            Some((route, offset)) => {
                lock(&route.device).bar_read(route.bar, offset, data);
                true
            }
            None => {
                data.fill(0xff);
                self.unrouted(addr);
                false
            }
        }
    }

    /// Writes guest-physical `addr` to the BAR that decodes it; false when
    /// none does.
    pub fn mmio_write(&self, addr: u64, data: &[u8]) -> bool {
        match self.route(addr, data.len()) {
            Some((route, offset)) => {
                lock(&route.device).bar_write(route.bar, offset, data);
                true
            }
            None => {
                self.unrouted(addr);
                false
            }
        }
    }

    fn unrouted(&self, addr: u64) {
        if self.log_limit.allow() {
            tracing::debug!(addr, "PCI: access to no BAR");
        }
    }
}

/// Configuration mechanism #1 (ports 0xCF8..0xCFF).
pub struct ConfigIo {
    bus: Arc<PciBus>,
    address: u32,
    /// The chipset's reset control register: byte accesses to 0xCF9.
    reset_control: Option<Arc<Mutex<dyn BusDevice>>>,
}

/// Offset of the reset control register (port 0xCF9) in the ports.
const RESET_CONTROL_OFFSET: u64 = 1;

/// CONFIG_ADDRESS: enable bit.
const CONFIG_ENABLE: u32 = 1 << 31;
/// CONFIG_ADDRESS: the bits that read back (enable, bus, device, function,
/// register).
const CONFIG_ADDRESS_MASK: u32 = 0x80ff_fffc;

impl ConfigIo {
    pub fn new(bus: Arc<PciBus>) -> ConfigIo {
        ConfigIo {
            bus,
            address: 0,
            reset_control: None,
        }
    }

    /// Sends byte accesses to port 0xCF9 to `device` (the chipset's reset
    /// control register shares the ports, as on a PC).
    pub fn with_reset_control(mut self, device: Arc<Mutex<dyn BusDevice>>) -> ConfigIo {
        self.reset_control = Some(device);
        self
    }

    fn reset_control(&self, offset: u64, len: usize) -> Option<&Arc<Mutex<dyn BusDevice>>> {
        (offset == RESET_CONTROL_OFFSET && len == 1)
            .then_some(self.reset_control.as_ref())
            .flatten()
    }

    /// (bus, slot, function, register) CONFIG_ADDRESS selects, if enabled.
    fn target(&self, port_offset: u64) -> Option<(u8, u8, u8, usize)> {
        if self.address & CONFIG_ENABLE == 0 {
            return None;
        }
        let a = self.address;
        Some((
            (a >> 16) as u8,
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 7) as u8,
            (a & 0xfc) as usize + (port_offset - 4) as usize,
        ))
    }
}

impl BusDevice for ConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        if let Some(device) = self.reset_control(offset, data.len()) {
            return lock(device).read(0, data);
        }
        match offset {
            0 if data.len() == 4 => data.copy_from_slice(&self.address.to_le_bytes()),
            4..8 => match self.target(offset) {
                Some((bus, slot, function, reg)) => {
                    self.bus.config_read(bus, slot, function, reg, data)
                }
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some(device) = self.reset_control(offset, data.len()) {
            return lock(device).write(0, data);
        }
        match offset {
            0 if data.len() == 4 => {
                let value = u32::from_le_bytes([data[0], data[1], data[2], data[3]]);
                self.address = value & CONFIG_ADDRESS_MASK;
            }
            4..8 => {
                if let Some((bus, slot, function, reg)) = self.target(offset) {
                    self.bus.config_write(bus, slot, function, reg, data);
                }
            }
            // Byte and word writes to 0xCF8..0xCFB (Linux's probe for
            // mechanism #2 writes 0xCFB) are not CONFIG_ADDRESS.
            _ => {}
        }
    }
}

/// ECAM for bus 0 ([`ECAM_BUS_SIZE`] bytes).
pub struct Ecam {
    bus: Arc<PciBus>,
}

impl Ecam {
    pub fn new(bus: Arc<PciBus>) -> Ecam {
        Ecam { bus }
    }

    /// (bus, slot, function, register) of a naturally aligned 1/2/4-byte
    /// access at `offset`.
    fn target(offset: u64, len: usize) -> Option<(u8, u8, u8, usize)> {
        if !matches!(len, 1 | 2 | 4) || !offset.is_multiple_of(len as u64) {
            return None;
        }
        Some((
            (offset >> 20) as u8,
            ((offset >> 15) & 0x1f) as u8,
            ((offset >> 12) & 7) as u8,
            (offset % EXT_CONFIG_SPACE_SIZE as u64) as usize,
        ))
    }
}

impl BusDevice for Ecam {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match Ecam::target(offset, data.len()) {
            Some((bus, slot, function, reg)) => {
                self.bus.config_read(bus, slot, function, reg, data)
            }
            None => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((bus, slot, function, reg)) = Ecam::target(offset, data.len()) {
            self.bus.config_write(bus, slot, function, reg, data);
        }
    }
}

/// The BAR window: offsets are relative to `base`.
pub struct BarWindow {
    bus: Arc<PciBus>,
    base: u64,
}

impl BarWindow {
    pub fn new(bus: Arc<PciBus>, base: u64) -> BarWindow {
        BarWindow { bus, base }
    }
}

impl BusDevice for BarWindow {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.bus.mmio_read(self.base + offset, data);
    }
    fn write(&mut self, offset: u64, data: &[u8]) {
        self.bus.mmio_write(self.base + offset, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{command, BarKind};

    /// A function with one 4 KiB BAR that remembers what reached it.
    struct Probe {
        config: ConfigSpace,
        last: Option<(u8, u64, Vec<u8>)>,
    }

    impl PciDevice for Probe {
        fn config_read(&mut self, offset: usize, data: &mut [u8]) {
            self.config.read(offset, data);
        }
        fn config_write(&mut self, offset: usize, data: &[u8]) {
            self.config.write(offset, data);
        }
        fn bar_ranges(&self) -> Vec<BarRange> {
            self.config.bar_ranges()
        }
        fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
            data.fill(bar * 16 + offset as u8);
        }
        fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
            self.last = Some((bar, offset, data.to_vec()));
        }
    }

    fn bus() -> (Arc<PciBus>, Arc<Mutex<Probe>>) {
        let mut config = ConfigSpace::new(PciIds {
            vendor: 0x1af4,
            device: 0x1044,
            revision: 1,
            class: (0xff, 0, 0),
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
            interrupt_pin: 1,
        });
        config.add_bar(1, 0x1000, BarKind::Mem32, false, 0xc000_0000);
        let probe = Arc::new(Mutex::new(Probe { config, last: None }));
        let mut bus = PciBus::new();
        assert_eq!(bus.add(probe.clone()).unwrap(), 1);
        (Arc::new(bus), probe)
    }

    fn io_read(io: &mut ConfigIo, port: u64, len: usize) -> u32 {
        let mut b = [0u8; 4];
        io.read(port, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    fn io_write(io: &mut ConfigIo, port: u64, value: u32, len: usize) {
        io.write(port, &value.to_le_bytes()[..len]);
    }

    #[test]
    fn mechanism_1_reads_functions_at_byte_offsets() {
        let (bus, _) = bus();
        let mut io = ConfigIo::new(bus);
        // Linux's probe: a byte at 0xCFB, then the address round trip.
        io_write(&mut io, 3, 1, 1);
        io_write(&mut io, 0, 0x8000_0000, 4);
        assert_eq!(io_read(&mut io, 0, 4), 0x8000_0000);
        // The host bridge, class 0x0600.
        assert_eq!(io_read(&mut io, 4, 4), 0x0008_1b36);
        io_write(&mut io, 0, 0x8000_0008, 4);
        assert_eq!(io_read(&mut io, 6, 2), 0x0600);
        assert_eq!(io_read(&mut io, 7, 1), 0x06);
        // Slot 1, device ID through a word at 0xCFE.
        io_write(&mut io, 0, 0x8000_0800, 4);
        assert_eq!(io_read(&mut io, 6, 2), 0x1044);
        assert_eq!(io_read(&mut io, 5, 1), 0x1a);
        // Reserved low bits do not stick; function 1, slot 2, bus 1 and a
        // disabled address read all ones.
        io_write(&mut io, 0, 0x8000_0803, 4);
        assert_eq!(io_read(&mut io, 0, 4), 0x8000_0800);
        for address in [0x8000_0900, 0x8000_1000, 0x8001_0000, 0x0000_0800] {
            io_write(&mut io, 0, address, 4);
            assert_eq!(io_read(&mut io, 4, 4), 0xffff_ffff, "{address:#x}");
            io_write(&mut io, 4, 0, 4);
        }
        // Non-dword accesses to CONFIG_ADDRESS read all ones.
        assert_eq!(io_read(&mut io, 1, 1), 0xff);
        // A byte write through the data port lands at its byte offset.
        io_write(&mut io, 0, 0x8000_083c, 4);
        io_write(&mut io, 5, 0x0b, 1);
        io_write(&mut io, 4, 0x0a, 1);
        assert_eq!(io_read(&mut io, 4, 4), 0x0000_010a);
    }

    #[test]
    fn ecam_decodes_device_function_register() {
        let (bus, _) = bus();
        let mut ecam = Ecam::new(bus);
        let read = |ecam: &mut Ecam, offset: u64, len: usize| {
            let mut b = [0u8; 4];
            ecam.read(offset, &mut b[..len]);
            u32::from_le_bytes(b)
        };
        assert_eq!(read(&mut ecam, 0, 4), 0x0008_1b36);
        assert_eq!(read(&mut ecam, 1 << 15, 4), 0x1044_1af4);
        assert_eq!(read(&mut ecam, (1 << 15) + 2, 2), 0x1044);
        assert_eq!(read(&mut ecam, (1 << 15) + 0x3d, 1), 1);
        // Extended space of a conventional function reads 0.
        assert_eq!(read(&mut ecam, (1 << 15) + 0x100, 4), 0);
        // Function 1, an empty slot, a misaligned access: all ones.
        assert_eq!(read(&mut ecam, (1 << 15) | (1 << 12), 4), 0xffff_ffff);
        assert_eq!(read(&mut ecam, 5 << 15, 4), 0xffff_ffff);
        assert_eq!(read(&mut ecam, (1 << 15) + 1, 2), 0xffff);
        ecam.write((1 << 15) + 0x3c, &[9]);
        assert_eq!(read(&mut ecam, (1 << 15) + 0x3c, 1), 9);
    }

    #[test]
    fn bars_route_while_decoded_and_follow_relocation() {
        let (bus, probe) = bus();
        let mut window = BarWindow::new(bus.clone(), 0xc000_0000);
        let mut b = [0u8; 4];
        // Memory decoding is off: nothing answers.
        window.read(0x10, &mut b);
        assert_eq!(b, [0xff; 4]);
        let cmd = (1 << 15) + 4;
        let mut ecam = Ecam::new(bus.clone());
        ecam.write(cmd, &command::MEMORY.to_le_bytes());
        window.read(0x10, &mut b);
        assert_eq!(b, [0x20; 4]);
        window.write(0xffc, &[1, 2, 3, 4]);
        assert_eq!(
            probe.lock().unwrap().last,
            Some((1, 0xffc, vec![1, 2, 3, 4]))
        );
        // Straddling the BAR's end: not routed.
        assert!(!bus.mmio_write(0xc000_0ffe, &[0; 4]));
        // Sizing, then a move to 0xc010_0000.
        let bar1 = (1 << 15) + 0x14;
        ecam.write(bar1, &0xffff_ffffu32.to_le_bytes());
        let mut size = [0u8; 4];
        ecam.read(bar1, &mut size);
        assert_eq!(u32::from_le_bytes(size), 0xffff_f000);
        ecam.write(bar1, &0xc010_0000u32.to_le_bytes());
        assert!(!bus.mmio_read(0xc000_0010, &mut b));
        assert!(bus.mmio_read(0xc010_0010, &mut b));
        assert_eq!(b, [0x20; 4]);
    }
}
