//! The virtio-pci transport driven as Linux's virtio_pci_modern does (and
//! as a hostile driver might), with the entropy device behind it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use devices::IrqLine;
use virtio::rng::Rng;
use virtio::status::*;
use virtio::F_VERSION_1;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use super::*;

const BAR0: u64 = 0xc000_0000;
const BAR1: u64 = 0xc000_4000;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const WRITE: u16 = 2;

#[derive(Default)]
struct Sink(Mutex<Vec<(u64, u32)>>);

impl MsiSink for Sink {
    fn send(&self, address: u64, data: u32) {
        self.0.lock().unwrap().push((address, data));
    }
}

#[derive(Default)]
struct Line(AtomicBool);

impl IrqLine for Line {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

struct Driver {
    t: VirtioPci,
    mem: GuestMemoryMmap,
    sink: Arc<Sink>,
    line: Arc<Line>,
}

impl Driver {
    fn rng() -> Driver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
        let sink = Arc::new(Sink::default());
        let line = Arc::new(Line::default());
        let t = VirtioPci::new(
            Box::new(Rng::with_source(Box::new(std::io::repeat(0xab)))),
            mem.clone(),
            sink.clone(),
            Some((line.clone(), 5)),
            VirtioPciBars {
                virtio: BAR0,
                msix: BAR1,
            },
        )
        .unwrap();
        Driver { t, mem, sink, line }
    }
    fn cfg(&mut self, offset: usize, len: usize) -> u32 {
        let mut b = [0u8; 4];
        self.t.config_read(offset, &mut b[..len]);
        u32::from_le_bytes(b)
    }
    fn set_cfg(&mut self, offset: usize, value: u32, len: usize) {
        self.t.config_write(offset, &value.to_le_bytes()[..len]);
    }
    fn common(&mut self, offset: u64, len: usize) -> u64 {
        let mut b = [0u8; 8];
        self.t.bar_read(VIRTIO_BAR, offset, &mut b[..len]);
        u64::from_le_bytes(b)
    }
    fn set_common(&mut self, offset: u64, value: u64, len: usize) {
        self.t
            .bar_write(VIRTIO_BAR, offset, &value.to_le_bytes()[..len]);
    }
    /// The vendor capabilities: (cfg_type, bar, offset, length, extra).
    fn caps(&mut self) -> Vec<(u8, u8, u32, u32, u32, usize)> {
        let mut caps = Vec::new();
        let mut at = self.cfg(0x34, 1) as usize;
        while at != 0 {
            if self.cfg(at, 1) == 9 {
                caps.push((
                    self.cfg(at + 3, 1) as u8,
                    self.cfg(at + 4, 1) as u8,
                    self.cfg(at + 8, 4),
                    self.cfg(at + 12, 4),
                    self.cfg(at + 16, 4),
                    at,
                ));
            }
            at = self.cfg(at + 1, 1) as usize;
        }
        caps
    }
    fn msix_cap(&mut self) -> usize {
        let mut at = self.cfg(0x34, 1) as usize;
        while self.cfg(at, 1) != 0x11 {
            at = self.cfg(at + 1, 1) as usize;
        }
        at
    }
    fn enable_msix(&mut self, vectors: u16) {
        for v in 0..u64::from(vectors) {
            let entry = v * 16;
            self.t.bar_write(
                MSIX_BAR,
                entry,
                &(0xfee0_0000u32 | (v as u32) << 12).to_le_bytes(),
            );
            self.t
                .bar_write(MSIX_BAR, entry + 8, &(0x30 + v as u32).to_le_bytes());
            self.t.bar_write(MSIX_BAR, entry + 12, &0u32.to_le_bytes());
        }
        let cap = self.msix_cap();
        self.set_cfg(cap + 2, 0x8000, 2);
    }
    fn set_status(&mut self, status: u32) {
        self.set_common(common::DEVICE_STATUS, status.into(), 1);
    }
    /// Up to DRIVER_OK with queue 0 (8 entries) on `vector`.
    fn running(&mut self, vector: u16) {
        self.set_status(ACKNOWLEDGE);
        self.set_status(ACKNOWLEDGE | DRIVER);
        self.set_common(common::DEVICE_FEATURE_SELECT, 1, 4);
        assert_eq!(self.common(common::DEVICE_FEATURE, 4), 1);
        self.set_common(common::DRIVER_FEATURE_SELECT, 1, 4);
        self.set_common(common::DRIVER_FEATURE, F_VERSION_1 >> 32, 4);
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(self.common(common::DEVICE_STATUS, 1), 0xb);
        self.set_common(common::QUEUE_SELECT, 0, 2);
        self.set_common(common::QUEUE_SIZE, 8, 2);
        // Two dwords, as vp_iowrite64_twopart.
        self.set_common(common::QUEUE_DESC, DESC, 4);
        self.set_common(common::QUEUE_DESC + 4, 0, 4);
        self.set_common(common::QUEUE_DRIVER, AVAIL, 8);
        self.set_common(common::QUEUE_DEVICE, USED, 8);
        self.set_common(common::QUEUE_MSIX_VECTOR, vector.into(), 2);
        self.set_common(common::QUEUE_ENABLE, 1, 2);
        assert_eq!(self.common(common::QUEUE_ENABLE, 2), 1);
        self.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        assert_eq!(self.common(common::DEVICE_STATUS, 1), 0xf);
    }
    /// Offers a 16-byte buffer and notifies queue 0; waits for the device.
    fn offer(&mut self) {
        let at = GuestAddress(DESC);
        self.mem.write_obj(0x8000u64, at).unwrap();
        self.mem.write_obj(16u32, GuestAddress(DESC + 8)).unwrap();
        self.mem.write_obj(WRITE, GuestAddress(DESC + 12)).unwrap();
        let idx: u16 = self.mem.read_obj(GuestAddress(AVAIL + 2)).unwrap();
        self.mem
            .write_obj(0u16, GuestAddress(AVAIL + 4 + u64::from(idx % 8) * 2))
            .unwrap();
        self.mem
            .write_obj(idx.wrapping_add(1), GuestAddress(AVAIL + 2))
            .unwrap();
        let before = self.used_idx();
        self.t
            .bar_write(VIRTIO_BAR, NOTIFY_OFFSET, &0u16.to_le_bytes());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.used_idx() == before && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // The interrupt follows the used index.
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }
    fn sent(&self) -> Vec<(u64, u32)> {
        std::mem::take(&mut *self.sink.0.lock().unwrap())
    }
}

#[test]
fn ids_bars_and_capabilities_describe_a_modern_device() {
    let mut d = Driver::rng();
    assert_eq!(d.cfg(0, 4), 0x1044_1af4);
    assert_eq!(d.cfg(8, 1), 1);
    assert_eq!(d.cfg(0x2c, 4), 0x0040_1af4);
    assert_eq!(d.cfg(0x3c, 2), 0x0105);
    assert_eq!(d.cfg(0x10, 4) as u64, BAR0);
    assert_eq!(d.cfg(0x14, 4) as u64, BAR1);
    let caps: Vec<_> = d.caps().into_iter().map(|c| (c.0, c.1, c.2, c.3)).collect();
    assert_eq!(
        caps[..4],
        [
            (cap::COMMON_CFG, 0, 0, 0x38),
            (cap::NOTIFY_CFG, 0, 0x3000, 4),
            (cap::ISR_CFG, 0, 0x1000, 1),
            (cap::DEVICE_CFG, 0, 0x2000, 0x1000),
        ]
    );
    assert_eq!(d.caps()[1].4, NOTIFY_MULTIPLIER);
    assert_eq!(caps[4].0, cap::PCI_CFG);
    // MSI-X: 2 vectors (one queue + config), table and PBA in BAR 1.
    let m = d.msix_cap();
    assert_eq!(d.cfg(m + 2, 2), 1);
    assert_eq!(d.cfg(m + 4, 4), 1);
    assert_eq!(d.cfg(m + 8, 4), 0x801);
    assert_eq!(d.common(common::NUM_QUEUES, 2), 1);
    // Decoding is the bus's business: the BARs are reported once enabled.
    assert!(d.t.bar_ranges().is_empty());
    d.set_cfg(4, 2, 2);
    assert_eq!(d.t.bar_ranges().len(), 2);
    assert_eq!(
        d.t.notifiers()
            .unwrap()
            .iter()
            .map(|n| (n.addr, n.datamatch))
            .collect::<Vec<_>>(),
        [(BAR0 + NOTIFY_OFFSET, None)]
    );
}

#[test]
fn msix_vectors_carry_used_buffers_and_masking_defers_them() {
    let mut d = Driver::rng();
    d.enable_msix(2);
    d.set_common(common::CONFIG_MSIX_VECTOR, 0, 2);
    assert_eq!(d.common(common::CONFIG_MSIX_VECTOR, 2), 0);
    // A vector past the table reads back as NO_VECTOR.
    d.set_common(common::CONFIG_MSIX_VECTOR, 7, 2);
    assert_eq!(
        d.common(common::CONFIG_MSIX_VECTOR, 2),
        u64::from(NO_VECTOR)
    );
    assert_eq!(d.t.counters().bad_vectors, 1);
    d.running(1);
    d.offer();
    assert_eq!(d.sent(), [(0xfee0_1000, 0x31)]);
    assert_eq!(d.t.msix_counters().sent, 1);
    // The ISR and INTx are not used with MSI-X.
    assert!(!d.line.0.load(Ordering::SeqCst));
    // Masked: pending until unmasked.
    d.t.bar_write(MSIX_BAR, 16 + 12, &1u32.to_le_bytes());
    d.offer();
    assert!(d.sent().is_empty());
    let mut pba = [0u8; 8];
    d.t.bar_read(MSIX_BAR, MSIX_PBA_OFFSET, &mut pba);
    assert_eq!(u64::from_le_bytes(pba), 0b10);
    d.t.bar_write(MSIX_BAR, 16 + 12, &0u32.to_le_bytes());
    assert_eq!(d.sent(), [(0xfee0_1000, 0x31)]);
    // A reset forgets the queue's vector.
    d.set_status(0);
    assert_eq!(d.common(common::QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    assert_eq!(d.common(common::DEVICE_STATUS, 1), 0);
}

#[test]
fn without_msix_intx_follows_the_isr() {
    let mut d = Driver::rng();
    d.running(NO_VECTOR);
    d.offer();
    assert!(d.line.0.load(Ordering::SeqCst));
    let mut isr = [0u8];
    d.t.bar_read(VIRTIO_BAR, ISR_OFFSET, &mut isr);
    assert_eq!(isr, [1]);
    assert!(!d.line.0.load(Ordering::SeqCst));
    d.t.bar_read(VIRTIO_BAR, ISR_OFFSET, &mut isr);
    assert_eq!(isr, [0]);
    // INTx disable keeps the line low.
    d.set_cfg(4, 0x0402, 2);
    d.offer();
    assert!(!d.line.0.load(Ordering::SeqCst));
    assert!(d.sent().is_empty());
}

#[test]
fn hostile_accesses_are_counted_not_fatal() {
    let mut d = Driver::rng();
    // Wrong sizes and read-only fields.
    d.set_common(common::DEVICE_STATUS, 1, 4);
    d.set_common(common::NUM_QUEUES, 9, 2);
    d.set_common(common::QUEUE_DESC + 2, 9, 4);
    let mut big = [0u8; 16];
    d.t.bar_write(VIRTIO_BAR, 0, &big);
    d.t.bar_read(VIRTIO_BAR, 0, &mut big);
    assert_eq!(big, [0; 16]);
    assert_eq!(d.common(common::QUEUE_SELECT, 1), 0);
    assert_eq!(d.t.counters().bad_accesses, 6);
    assert_eq!(d.common(common::DEVICE_STATUS, 1), 0);
    // Queue setup before FEATURES_OK, a queue that does not exist.
    d.set_common(common::QUEUE_SIZE, 4, 2);
    d.set_common(common::QUEUE_SELECT, 3, 2);
    assert_eq!(d.common(common::QUEUE_SIZE, 2), 0);
    d.set_common(common::QUEUE_MSIX_VECTOR, 0, 2);
    assert_eq!(d.t.counters().out_of_order_writes, 2);
    // Notifications before DRIVER_OK, misaligned, of no queue.
    d.t.bar_write(VIRTIO_BAR, NOTIFY_OFFSET, &[0, 0]);
    d.t.bar_write(VIRTIO_BAR, NOTIFY_OFFSET + 2, &[0, 0]);
    d.t.bar_write(VIRTIO_BAR, NOTIFY_OFFSET + 0x40, &[0, 0, 0, 0]);
    assert_eq!(d.t.counters().ignored_notifies, 2);
    // Features without VERSION_1 are refused at FEATURES_OK.
    d.set_status(ACKNOWLEDGE | DRIVER);
    d.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(d.common(common::DEVICE_STATUS, 1), 3);
    // Rings outside RAM: NEEDS_RESET.
    d.set_status(0);
    d.set_status(ACKNOWLEDGE | DRIVER);
    d.set_common(common::DRIVER_FEATURE_SELECT, 1, 4);
    d.set_common(common::DRIVER_FEATURE, 1, 4);
    d.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK);
    d.set_common(common::QUEUE_SELECT, 0, 2);
    d.set_common(common::QUEUE_DESC, 1 << 40, 8);
    d.set_common(common::QUEUE_ENABLE, 1, 2);
    assert_eq!(d.common(common::QUEUE_ENABLE, 2), 0);
    assert_eq!(d.t.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
    // MSI-X table accesses of odd shapes, config space past the end.
    d.t.bar_write(MSIX_BAR, 3, &[1]);
    d.t.bar_write(MSIX_BAR, 0x7f0, &[0; 4]);
    d.t.bar_write(MSIX_BAR, u64::MAX, &[0; 4]);
    d.t.bar_write(7, 0, &[0; 4]);
    d.set_cfg(0xfff, 0xff, 1);
    assert_eq!(d.cfg(0xffc, 4), 0);
}

#[test]
fn the_pci_cfg_capability_reaches_the_bars() {
    let mut d = Driver::rng();
    let at = d.caps()[4].5;
    // Read num_queues (2 bytes at BAR 0 + 0x12).
    d.set_cfg(at + 4, 0, 1);
    d.set_cfg(at + 8, 0x12, 4);
    d.set_cfg(at + 12, 2, 4);
    assert_eq!(d.cfg(at + 16, 2), 1);
    // Write the queue select through it.
    d.set_cfg(at + 8, 0x16, 4);
    d.set_cfg(at + 16, 5, 2);
    assert_eq!(d.common(common::QUEUE_SELECT, 2), 5);
    // Outside the BAR: reads 0.
    d.set_cfg(at + 8, 0x3fff, 4);
    assert_eq!(d.cfg(at + 16, 2), 0);
}

/// Random configuration, BAR and port accesses of every shape, through the
/// whole bus, with the device's memory decoding on: nothing panics, and
/// the host bridge still identifies itself.
#[test]
fn random_accesses_never_panic() {
    use crate::bus::{BarWindow, ConfigIo, Ecam, PciBus};
    use devices::BusDevice;

    let d = Driver::rng();
    let mut bus = PciBus::new();
    let device = Arc::new(Mutex::new(d.t));
    bus.add(device.clone()).unwrap();
    let bus = Arc::new(bus);
    let mut io = ConfigIo::new(bus.clone());
    let mut ecam = Ecam::new(bus.clone());
    let mut window = BarWindow::new(bus.clone(), BAR0);
    ecam.write((1 << 15) + 4, &2u16.to_le_bytes());
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut buf = [0u8; 8];
    for i in 0..200_000 {
        if i % 32 == 0 {
            // Undo the moves and decoding changes now and then.
            ecam.write((1 << 15) + 0x10, &(BAR0 as u32).to_le_bytes());
            ecam.write((1 << 15) + 0x14, &(BAR1 as u32).to_le_bytes());
            ecam.write((1 << 15) + 4, &2u16.to_le_bytes());
        }
        let r = next();
        let len = [1, 2, 4, 8, 3][(r % 5) as usize];
        let value = next().to_le_bytes();
        let target = next();
        let write = r & 0x100 != 0;
        match (r >> 9) % 4 {
            0 => {
                // Keep most accesses on slot 1 and its header.
                let offset = (1 << 15) | (target & 0xfff) >> ((r >> 12) % 4 * 2);
                if write {
                    ecam.write(offset, &value[..len]);
                } else {
                    ecam.read(offset, &mut buf[..len]);
                }
            }
            1 => {
                let port = target % 8;
                if target & 0x100 != 0 {
                    io.write(
                        0,
                        &(0x8000_0800u32 | (target >> 16) as u32 & 0xfc).to_le_bytes(),
                    );
                }
                if write {
                    io.write(port, &value[..len.min(4)]);
                } else {
                    io.read(port, &mut buf[..len.min(4)]);
                }
            }
            _ => {
                let offset = target % (VIRTIO_BAR_SIZE + MSIX_BAR_SIZE + 0x100);
                if write {
                    window.write(offset, &value[..len]);
                } else {
                    window.read(offset, &mut buf[..len]);
                }
            }
        }
    }
    // The accesses did reach the device.
    let counters = device.lock().unwrap().counters();
    assert!(counters.bad_accesses > 1000, "{counters:?}");
    assert!(device.lock().unwrap().msix_counters().bad_accesses > 100);
    let mut id = [0u8; 4];
    ecam.read(0, &mut id);
    assert_eq!(u32::from_le_bytes(id), 0x0008_1b36);
    // Whatever state the device was left in, a reset brings it back.
    bus.config_write(0, 1, 0, 4, &2u16.to_le_bytes());
    device
        .lock()
        .unwrap()
        .bar_write(VIRTIO_BAR, common::DEVICE_STATUS, &[0]);
    assert_eq!(device.lock().unwrap().status(), 0);
}

/// Counts the `log` records of virtio-queue (which logs an error each
/// time its own queue check fails).
struct QueueLogCounter(std::sync::atomic::AtomicU64);

impl log::Log for QueueLogCounter {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        if record.target().starts_with("virtio_queue") {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn flush(&self) {}
}

static QUEUE_LOG: QueueLogCounter = QueueLogCounter(std::sync::atomic::AtomicU64::new(0));

#[test]
fn re_enabling_a_queue_outside_ram_in_a_loop_logs_nothing() {
    let _ = log::set_logger(&QUEUE_LOG);
    log::set_max_level(log::LevelFilter::Trace);
    let mut d = Driver::rng();
    d.set_status(ACKNOWLEDGE);
    d.set_status(ACKNOWLEDGE | DRIVER);
    d.set_common(common::DRIVER_FEATURE_SELECT, 1, 4);
    d.set_common(common::DRIVER_FEATURE, F_VERSION_1 >> 32, 4);
    d.set_status(ACKNOWLEDGE | DRIVER | FEATURES_OK);
    let before = QUEUE_LOG.0.load(Ordering::Relaxed);
    for _ in 0..1000 {
        d.set_common(common::QUEUE_SELECT, 0, 2);
        d.set_common(common::QUEUE_DESC, 1 << 40, 8);
        d.set_common(common::QUEUE_ENABLE, 1, 2);
        assert_eq!(d.common(common::QUEUE_ENABLE, 2), 0);
    }
    assert_eq!(d.t.status() & DEVICE_NEEDS_RESET, DEVICE_NEEDS_RESET);
    assert_eq!(d.t.counters().bad_queues, 1000);
    assert_eq!(QUEUE_LOG.0.load(Ordering::Relaxed), before);
}
