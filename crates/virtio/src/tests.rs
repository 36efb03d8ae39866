//! The virtio-mmio transport driven as a guest driver would (and as a
//! hostile one might), with the entropy and block devices behind it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use devices::{BusDevice, IrqLine};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::blk::{self, Block};
use crate::mmio::{reg, MmioTransport, MAGIC, VENDOR_ID};
use crate::rng::Rng;
use crate::status::*;
use crate::{F_RING_INDIRECT_DESC, F_VERSION_1};

const RAM: u64 = 1 << 20;
const DESC: u64 = 0x1000;
const AVAIL: u64 = 0x2000;
const USED: u64 = 0x3000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;

#[derive(Default)]
struct Line(AtomicBool);

impl IrqLine for Line {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    line: Arc<Line>,
    avail_idx: u16,
}

impl Driver {
    fn new(device: Box<dyn crate::VirtioDevice>) -> Driver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let line = Arc::new(Line::default());
        let t = MmioTransport::new(device, mem.clone(), line.clone()).unwrap();
        Driver {
            t,
            mem,
            line,
            avail_idx: 0,
        }
    }
    fn rng() -> Driver {
        Driver::new(Box::new(Rng::with_source(Box::new(std::io::repeat(0xab)))))
    }
    fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }
    fn write(&mut self, offset: u64, value: u32) {
        self.t.write(offset, &value.to_le_bytes());
    }
    fn features(&mut self, features: u64) {
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, features as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (features >> 32) as u32);
    }
    /// Up to FEATURES_OK.
    fn negotiate(&mut self) {
        self.write(reg::STATUS, ACKNOWLEDGE);
        self.write(reg::STATUS, ACKNOWLEDGE | DRIVER);
        self.features(F_VERSION_1 | F_RING_INDIRECT_DESC);
        self.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(self.read(reg::STATUS), ACKNOWLEDGE | DRIVER | FEATURES_OK);
    }
    fn queue(&mut self, size: u32, desc: u64) {
        self.write(reg::QUEUE_SEL, 0);
        self.write(reg::QUEUE_NUM, size);
        self.write(reg::QUEUE_DESC_LOW, desc as u32);
        self.write(reg::QUEUE_DESC_HIGH, (desc >> 32) as u32);
        self.write(reg::QUEUE_DRIVER_LOW, AVAIL as u32);
        self.write(reg::QUEUE_DEVICE_LOW, USED as u32);
        self.write(reg::QUEUE_READY, 1);
    }
    /// A running device with one queue of 8.
    fn running(mut self) -> Driver {
        self.negotiate();
        self.queue(8, DESC);
        assert_eq!(self.read(reg::QUEUE_READY), 1);
        self.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        assert_eq!(self.read(reg::STATUS) & DRIVER_OK, DRIVER_OK);
        self
    }
    fn desc(&self, table: u64, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(table + u64::from(index) * 16);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.unchecked_add(8)).unwrap();
        self.mem.write_obj(flags, at.unchecked_add(12)).unwrap();
        self.mem.write_obj(next, at.unchecked_add(14)).unwrap();
    }
    /// Offers the chain at `head`, notifies queue 0 and waits until the
    /// device's thread has served it or asked for a reset.
    fn offer(&mut self, head: u16) {
        let before = self.used_idx();
        self.offer_no_wait(head);
        self.settle(before);
    }
    /// Waits (at most 10 s) until the used index moved past `before` with
    /// a used-buffer interrupt, or the device asked for a reset with a
    /// configuration interrupt.
    fn settle(&mut self, before: u16) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            let isr = self.read(reg::INTERRUPT_STATUS);
            let served = self.used_idx() != before && isr & 1 != 0;
            let failed = self.needs_reset() && isr & 2 != 0;
            if served || failed {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    /// Offers the chain at `head` and notifies queue 0.
    fn offer_no_wait(&mut self, head: u16) {
        let slot = u64::from(self.avail_idx % 8);
        self.mem
            .write_obj(head, GuestAddress(AVAIL + 4 + slot * 2))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx, GuestAddress(AVAIL + 2))
            .unwrap();
        self.write(reg::QUEUE_NOTIFY, 0);
    }
    fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }
    /// (id, len) of used element `i`.
    fn used(&self, i: u64) -> (u32, u32) {
        let at = USED + 4 + i * 8;
        (
            self.mem.read_obj(GuestAddress(at)).unwrap(),
            self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
        )
    }
    fn needs_reset(&mut self) -> bool {
        self.read(reg::STATUS) & DEVICE_NEEDS_RESET != 0
    }
}

use vm_memory::Address;

#[test]
fn registers_identify_a_modern_device() {
    let mut d = Driver::rng();
    assert_eq!(d.read(reg::MAGIC), MAGIC);
    assert_eq!(d.read(reg::VERSION), 2);
    assert_eq!(d.read(reg::DEVICE_ID), crate::TYPE_RNG);
    assert_eq!(d.read(reg::VENDOR_ID), VENDOR_ID);
    d.write(reg::DEVICE_FEATURES_SEL, 1);
    assert_eq!(d.read(reg::DEVICE_FEATURES), 1, "VERSION_1");
    d.write(reg::DEVICE_FEATURES_SEL, 0);
    assert_ne!(d.read(reg::DEVICE_FEATURES) & (1 << 28), 0, "indirect");
    assert_eq!(d.read(reg::QUEUE_NUM_MAX), 256);
    d.write(reg::QUEUE_SEL, 1);
    assert_eq!(d.read(reg::QUEUE_NUM_MAX), 0, "no second queue");
    // Registers take aligned 32-bit accesses only.
    let mut byte = [0xffu8];
    d.t.read(reg::MAGIC, &mut byte);
    assert_eq!(byte, [0]);
    assert_eq!(d.t.counters().bad_accesses, 1);
}

#[test]
fn status_follows_the_initialisation_order_and_resets_on_zero() {
    let mut d = Driver::rng();
    // DRIVER before ACKNOWLEDGE, FEATURES_OK without VERSION_1: refused.
    d.write(reg::STATUS, DRIVER);
    assert_eq!(d.read(reg::STATUS), 0);
    d.write(reg::STATUS, ACKNOWLEDGE | DRIVER);
    d.features(F_RING_INDIRECT_DESC);
    d.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(d.read(reg::STATUS), ACKNOWLEDGE | DRIVER);
    // Features the device does not offer: refused too.
    d.features(F_VERSION_1 | 1 << 40);
    d.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
    assert_eq!(d.read(reg::STATUS), ACKNOWLEDGE | DRIVER);
    // Queue setup before FEATURES_OK is out of order.
    d.write(reg::QUEUE_READY, 1);
    assert_eq!(d.read(reg::QUEUE_READY), 0);
    d.write(reg::STATUS, 0);

    let mut d = d.running();
    // Features cannot change once accepted; bits cannot be cleared.
    let before = d.t.counters().out_of_order_writes;
    d.write(reg::DRIVER_FEATURES, 0);
    d.write(reg::STATUS, ACKNOWLEDGE);
    assert_eq!(d.t.counters().out_of_order_writes, before + 2);
    assert_eq!(
        d.read(reg::STATUS),
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK
    );

    d.desc(DESC, 0, 0x4000, 4, WRITE, 0);
    d.offer(0);
    assert!(d.line.0.load(Ordering::SeqCst));
    d.write(reg::STATUS, 0);
    assert_eq!(d.read(reg::STATUS), 0);
    assert_eq!(d.read(reg::QUEUE_READY), 0);
    assert_eq!(d.read(reg::INTERRUPT_STATUS), 0);
    assert!(!d.line.0.load(Ordering::SeqCst));
}

#[test]
fn rng_fills_a_chain_and_interrupts_until_acked() {
    let mut d = Driver::rng().running();
    // An indirect table of two writable buffers.
    d.desc(0x5000, 0, 0x4000, 3, WRITE | NEXT, 1);
    d.desc(0x5000, 1, 0x4100, 5, WRITE, 0);
    d.desc(DESC, 0, 0x5000, 32, INDIRECT, 0);
    d.offer(0);
    assert_eq!(d.used_idx(), 1);
    assert_eq!(d.used(0), (0, 8));
    let mut got = [0u8; 6];
    d.mem.read_slice(&mut got, GuestAddress(0x4000)).unwrap();
    assert_eq!(got, [0xab, 0xab, 0xab, 0, 0, 0]);
    d.mem.read_slice(&mut got, GuestAddress(0x4100)).unwrap();
    assert_eq!(got, [0xab, 0xab, 0xab, 0xab, 0xab, 0]);
    assert_eq!(d.read(reg::INTERRUPT_STATUS), 1);
    assert!(d.line.0.load(Ordering::SeqCst));
    d.write(reg::INTERRUPT_ACK, 1);
    assert_eq!(d.read(reg::INTERRUPT_STATUS), 0);
    assert!(!d.line.0.load(Ordering::SeqCst));
    assert!(!d.needs_reset());
}

#[test]
fn notifications_before_driver_ok_are_ignored() {
    let mut d = Driver::rng();
    d.negotiate();
    d.queue(8, DESC);
    d.desc(DESC, 0, 0x4000, 4, WRITE, 0);
    d.offer_no_wait(0);
    assert_eq!(d.used_idx(), 0);
    assert_eq!(d.t.counters().ignored_notifies, 1);
    // Notifying a queue that does not exist is ignored as well.
    let mut d = d.running_from_features_ok();
    d.write(reg::QUEUE_NOTIFY, 7);
    assert_eq!(d.t.counters().ignored_notifies, 2);
    assert!(!d.needs_reset());
}

impl Driver {
    fn running_from_features_ok(mut self) -> Driver {
        self.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        self
    }
}

#[test]
fn bad_queue_sizes_are_refused() {
    let mut d = Driver::rng();
    d.negotiate();
    for size in [0, 3, 512] {
        d.queue(size, DESC);
        assert_eq!(d.read(reg::QUEUE_READY), 0, "size {size}");
    }
    assert_eq!(d.t.counters().bad_queue_sizes, 3);
    // A misaligned descriptor table is refused too.
    d.queue(8, DESC + 8);
    assert_eq!(d.read(reg::QUEUE_READY), 0);
    d.queue(8, DESC);
    assert_eq!(d.read(reg::QUEUE_READY), 1);
    assert!(!d.needs_reset());
}

#[test]
fn rings_outside_ram_need_a_reset() {
    let mut d = Driver::rng();
    d.negotiate();
    d.queue(8, 1 << 32);
    assert_eq!(d.read(reg::QUEUE_READY), 0);
    assert!(d.needs_reset());
    d.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
    assert_eq!(d.read(reg::STATUS) & DRIVER_OK, 0);
    // A reset recovers the device.
    d.write(reg::STATUS, 0);
    let d = d.running();
    assert_eq!(d.t.status() & DEVICE_NEEDS_RESET, 0);
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
    // Only this test sets a logger; the records of the other tests of
    // the process do not come from virtio-queue's checks.
    let _ = log::set_logger(&QUEUE_LOG);
    log::set_max_level(log::LevelFilter::Trace);
    let mut d = Driver::rng();
    d.negotiate();
    let before = QUEUE_LOG.0.load(Ordering::Relaxed);
    for _ in 0..1000 {
        d.queue(8, RAM - 16);
        assert_eq!(d.read(reg::QUEUE_READY), 0);
    }
    assert!(d.needs_reset());
    assert_eq!(d.t.counters().bad_queues, 1000);
    assert_eq!(QUEUE_LOG.0.load(Ordering::Relaxed), before);
    // A good queue still passes the same check.
    d.write(reg::STATUS, 0);
    let mut d = d.running();
    assert_eq!(d.read(reg::QUEUE_READY), 1);
}

/// A hostile chain sets NEEDS_RESET, raises a configuration interrupt,
/// and later notifications are ignored.
fn assert_device_error(mut d: Driver) {
    assert!(d.needs_reset());
    assert_eq!(d.t.counters().device_errors, 1);
    assert_eq!(d.read(reg::INTERRUPT_STATUS) & 2, 2);
    assert_eq!(d.used_idx(), 0);
    d.write(reg::QUEUE_NOTIFY, 0);
    assert_eq!(d.t.counters().ignored_notifies, 1);
}

#[test]
fn buffers_outside_ram_are_a_device_error() {
    let mut d = Driver::rng().running();
    d.desc(DESC, 0, RAM - 2, 4, WRITE, 0);
    d.offer(0);
    assert_device_error(d);
    let mut d = Driver::rng().running();
    d.desc(DESC, 0, u64::MAX - 1, 4, WRITE, 0);
    d.offer(0);
    assert_device_error(d);
}

#[test]
fn looping_chains_are_a_device_error() {
    let mut d = Driver::rng().running();
    d.desc(DESC, 0, 0x4000, 4, WRITE | NEXT, 1);
    d.desc(DESC, 1, 0x4100, 4, WRITE | NEXT, 0);
    d.offer(0);
    assert_device_error(d);
    // A next index past the table, and an indirect table outside RAM.
    let mut d = Driver::rng().running();
    d.desc(DESC, 0, 0x4000, 4, WRITE | NEXT, 9);
    d.offer(0);
    assert_device_error(d);
    let mut d = Driver::rng().running();
    d.desc(DESC, 0, RAM, 32, INDIRECT, 0);
    d.offer(0);
    assert_device_error(d);
}

#[test]
fn an_avail_index_far_ahead_is_a_device_error() {
    let mut d = Driver::rng().running();
    d.mem.write_obj(100u16, GuestAddress(AVAIL + 2)).unwrap();
    d.write(reg::QUEUE_NOTIFY, 0);
    d.settle(0);
    assert_device_error(d);
}

// virtio-blk

fn disk(read_only: bool) -> (vmm_sys_util::tempfile::TempFile, Driver) {
    let file = vmm_sys_util::tempfile::TempFile::new().unwrap();
    let data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(file.as_path(), data).unwrap();
    let block = Block::open(file.as_path(), read_only, "serial-1").unwrap();
    (file, Driver::new(Box::new(block)).running())
}

impl Driver {
    /// Sends a request (header, `out` data, `inlen` bytes in + status);
    /// returns (status, data read, used len).
    fn blk(&mut self, kind: u32, sector: u64, out: &[u8], inlen: u32) -> (u8, Vec<u8>, u32) {
        let mut header = [0u8; 16];
        header[0..4].copy_from_slice(&kind.to_le_bytes());
        header[8..16].copy_from_slice(&sector.to_le_bytes());
        self.mem.write_slice(&header, GuestAddress(0x4000)).unwrap();
        self.mem.write_slice(out, GuestAddress(0x5000)).unwrap();
        self.mem.write_obj(0xffu8, GuestAddress(0x9000)).unwrap();
        let mut i = 0;
        self.desc(DESC, i, 0x4000, 16, NEXT, i + 1);
        if !out.is_empty() {
            i += 1;
            self.desc(DESC, i, 0x5000, out.len() as u32, NEXT, i + 1);
        }
        if inlen > 0 {
            i += 1;
            self.desc(DESC, i, 0x6000, inlen, WRITE | NEXT, i + 1);
        }
        i += 1;
        self.desc(DESC, i, 0x9000, 1, WRITE, 0);
        let before = self.used_idx();
        self.offer(0);
        assert_eq!(self.used_idx(), before.wrapping_add(1));
        let mut data = vec![0u8; inlen as usize];
        self.mem
            .read_slice(&mut data, GuestAddress(0x6000))
            .unwrap();
        let status = self.mem.read_obj(GuestAddress(0x9000)).unwrap();
        let (_, used_len) = self.used(u64::from(before % 8));
        (status, data, used_len)
    }
}

#[test]
fn blk_reads_writes_flushes_and_reports_its_id() {
    let (file, mut d) = disk(false);
    let mut config = [0u8; 8];
    d.t.read(reg::CONFIG, &mut config);
    assert_eq!(u64::from_le_bytes(config), 16, "capacity in sectors");

    let (status, data, used) = d.blk(blk::T_IN, 1, &[], 512);
    assert_eq!((status, used), (blk::S_OK, 513));
    assert!(data
        .iter()
        .enumerate()
        .all(|(i, &b)| b == ((512 + i) % 251) as u8));

    let (status, _, used) = d.blk(blk::T_OUT, 2, &[0x5a; 1024], 0);
    assert_eq!((status, used), (blk::S_OK, 1));
    let image = std::fs::read(file.as_path()).unwrap();
    assert!(image[1024..2048].iter().all(|&b| b == 0x5a));
    assert_eq!(image[2048], (2048 % 251) as u8);

    assert_eq!(d.blk(blk::T_FLUSH, 0, &[], 0).0, blk::S_OK);
    let (status, id, _) = d.blk(blk::T_GET_ID, 0, &[], 20);
    assert_eq!(status, blk::S_OK);
    assert_eq!(&id[..9], b"serial-1\0");

    let mut zero = [0u8; 16];
    zero[0..8].copy_from_slice(&3u64.to_le_bytes());
    zero[8..12].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(d.blk(blk::T_WRITE_ZEROES, 0, &zero, 0).0, blk::S_OK);
    let image = std::fs::read(file.as_path()).unwrap();
    assert!(image[1536..2560].iter().all(|&b| b == 0));
    assert_eq!(d.blk(99, 0, &[], 0).0, blk::S_UNSUPP);
    assert!(!d.needs_reset());
}

#[test]
fn blk_counts_requests_and_bytes_across_an_image_swap() {
    let file = vmm_sys_util::tempfile::TempFile::new().unwrap();
    std::fs::write(file.as_path(), vec![1u8; 8192]).unwrap();
    let block = Block::open(file.as_path(), false, "counted").unwrap();
    let handle = block.handle();
    let mut d = Driver::new(Box::new(block)).running();
    assert_eq!(d.blk(blk::T_IN, 0, &[], 512).0, blk::S_OK);
    assert_eq!(d.blk(blk::T_OUT, 1, &[2; 1024], 0).0, blk::S_OK);
    // A failed read moves no bytes.
    assert_eq!(d.blk(blk::T_IN, 16, &[], 512).0, blk::S_IOERR);
    let other = vmm_sys_util::tempfile::TempFile::new().unwrap();
    std::fs::write(other.as_path(), vec![3u8; 4096]).unwrap();
    handle.replace(other.as_path()).unwrap();
    let (status, data, _) = d.blk(blk::T_IN, 0, &[], 1024);
    assert_eq!((status, data[0]), (blk::S_OK, 3), "the new image");
    let c = handle.counters();
    assert_eq!((c.reads, c.writes, c.errors), (3, 1, 1));
    assert_eq!((c.read_bytes, c.write_bytes), (512 + 1024, 1024));
}

#[test]
fn blk_refuses_requests_outside_the_image() {
    let (_file, mut d) = disk(false);
    assert_eq!(d.blk(blk::T_IN, 16, &[], 512).0, blk::S_IOERR);
    assert_eq!(d.blk(blk::T_IN, 15, &[], 1024).0, blk::S_IOERR);
    assert_eq!(d.blk(blk::T_IN, u64::MAX / 256, &[], 512).0, blk::S_IOERR);
    assert_eq!(d.blk(blk::T_OUT, 16, &[1; 512], 0).0, blk::S_IOERR);
    // Partial sectors.
    assert_eq!(d.blk(blk::T_IN, 0, &[], 100).0, blk::S_IOERR);
    assert_eq!(d.blk(blk::T_IN, 15, &[], 512).0, blk::S_OK);
    assert_eq!(d.blk(blk::T_IN, 0, &[], 0).0, blk::S_OK);
}

#[test]
fn a_read_only_blk_offers_ro_and_fails_writes() {
    let (file, mut d) = disk(true);
    assert_ne!(
        d.read(reg::DEVICE_FEATURES) & (1 << 5),
        0,
        "VIRTIO_BLK_F_RO"
    );
    let before = std::fs::read(file.as_path()).unwrap();
    assert_eq!(d.blk(blk::T_OUT, 0, &[1; 512], 0).0, blk::S_IOERR);
    let mut zero = [0u8; 16];
    zero[8..12].copy_from_slice(&1u32.to_le_bytes());
    assert_eq!(d.blk(blk::T_WRITE_ZEROES, 0, &zero, 0).0, blk::S_IOERR);
    assert_eq!(d.blk(blk::T_IN, 0, &[], 512).0, blk::S_OK);
    assert_eq!(std::fs::read(file.as_path()).unwrap(), before);
}

#[test]
fn rng_counts_requests_and_bytes() {
    let rng = Rng::with_source(Box::new(std::io::repeat(0xab)));
    let stats = rng.stats();
    let mut d = Driver::new(Box::new(rng)).running();
    d.desc(DESC, 0, 0x4000, 100, WRITE, 0);
    d.offer(0);
    assert_eq!(d.used(0), (0, 100));
    let c = stats.snapshot();
    assert_eq!(
        (c.entropy_event_count, c.entropy_bytes, c.host_rng_fails),
        (1, 100, 0)
    );
}

#[test]
fn device_writes_to_guest_buffers_reach_the_write_hook() {
    let d = Driver::rng();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    d.t.set_guest_write_hook(Arc::new(move |gpa, len| {
        log.lock().unwrap().push((gpa, len))
    }));
    let mut d = d.running();
    d.desc(DESC, 0, 0x4000, 3, WRITE | NEXT, 1);
    d.desc(DESC, 1, 0x7000, 5, WRITE, 0);
    d.offer(0);
    assert_eq!(d.used(0), (0, 8));
    // The buffers, in order, and the used ring the device changed (so
    // that the dirty log carries it too).
    let seen = seen.lock().unwrap();
    // `running` makes one queue of 8.
    let ring = (USED, 4 + 8 * 8 + 2);
    let buffers: Vec<_> = seen.iter().copied().filter(|&w| w != ring).collect();
    assert_eq!(buffers, [(0x4000, 3), (0x7000, 5)], "{seen:x?}");
    assert!(seen.contains(&ring), "{seen:x?}");
}

#[test]
fn lengths_that_overflow_are_a_device_error() {
    // A buffer whose end wraps past 2^64.
    let mut d = Driver::rng().running();
    d.desc(DESC, 0, u64::MAX - 0x10, 0x100, WRITE, 0);
    d.offer(0);
    assert_device_error(d);
    // A buffer of 4 GiB - 1 in 1 MiB of RAM.
    let mut d = Driver::rng().running();
    d.desc(DESC, 0, 0x4000, u32::MAX, WRITE, 0);
    d.offer(0);
    assert_device_error(d);
    // An indirect table whose length is not whole descriptors, or that
    // claims more descriptors than a queue may have.
    let mut d = Driver::rng().running();
    d.desc(DESC, 0, 0x5000, 24, INDIRECT, 0);
    d.offer(0);
    assert_device_error(d);
    let mut d = Driver::rng().running();
    d.desc(DESC, 0, 0x5000, 16 * 0x10000, INDIRECT, 0);
    d.offer(0);
    assert_device_error(d);
}

#[test]
fn a_block_request_without_a_status_byte_is_answered_without_harm() {
    // Only a header, nothing writable: the request cannot be answered; the
    // chain is returned with 0 bytes and counted as an error.
    let (_file, mut d) = disk(false);
    d.mem.write_slice(&[0u8; 16], GuestAddress(0x4000)).unwrap();
    d.desc(DESC, 0, 0x4000, 16, 0, 0);
    d.offer(0);
    assert_eq!(d.used(0), (0, 0));
    assert!(!d.needs_reset());
    // A header cut short: IOERR in the status byte.
    d.desc(DESC, 1, 0x4000, 8, NEXT, 2);
    d.desc(DESC, 2, 0x9000, 1, WRITE, 0);
    d.offer(1);
    let status: u8 = d.mem.read_obj(GuestAddress(0x9000)).unwrap();
    assert_eq!(status, blk::S_IOERR);
}

// Rate limiters

fn ops_limit(size: u64, refill_time_ms: u64) -> crate::throttle::Limits {
    crate::throttle::Limits {
        bandwidth: None,
        ops: Some(crate::throttle::BucketConfig {
            size,
            one_time_burst: 0,
            refill_time_ms,
        }),
    }
}

fn limited_disk(
    limits: crate::throttle::Limits,
) -> (
    vmm_sys_util::tempfile::TempFile,
    Driver,
    crate::throttle::ThrottleHandle,
) {
    let file = vmm_sys_util::tempfile::TempFile::new().unwrap();
    std::fs::write(file.as_path(), vec![7u8; 64 << 10]).unwrap();
    let block = Block::open(file.as_path(), false, "limited")
        .unwrap()
        .limited(limits);
    let handle = block.throttle();
    (file, Driver::new(Box::new(block)).running(), handle)
}

#[test]
fn blk_requests_wait_for_ops_tokens() {
    // 2 ops per 200 ms: after the first two, one request per 100 ms.
    let (_file, mut d, handle) = limited_disk(ops_limit(2, 200));
    let start = std::time::Instant::now();
    for _ in 0..7 {
        assert_eq!(d.blk(blk::T_IN, 0, &[], 512).0, blk::S_OK);
    }
    let took = start.elapsed();
    assert!(took >= std::time::Duration::from_millis(490), "{took:?}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert_eq!(handle.throttled(), 5);
    assert!(!d.needs_reset());
}

#[test]
fn blk_reads_wait_for_bandwidth_tokens() {
    // 8 KiB per 100 ms; a full bucket to start with.
    let limits = crate::throttle::Limits {
        bandwidth: Some(crate::throttle::BucketConfig {
            size: 8192,
            one_time_burst: 0,
            refill_time_ms: 100,
        }),
        ops: None,
    };
    let (_file, mut d, handle) = limited_disk(limits);
    let start = std::time::Instant::now();
    // 16 reads of 4 KiB: 64 KiB, 56 of them beyond the bucket: 700 ms.
    for _ in 0..16 {
        assert_eq!(d.blk(blk::T_IN, 0, &[], 4096).0, blk::S_OK);
    }
    let took = start.elapsed();
    assert!(took >= std::time::Duration::from_millis(690), "{took:?}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert!(handle.throttled() > 0);
    // Requests without data take no bandwidth.
    let before = handle.throttled();
    assert_eq!(d.blk(blk::T_FLUSH, 0, &[], 0).0, blk::S_OK);
    assert_eq!(d.blk(blk::T_FLUSH, 0, &[], 0).0, blk::S_OK);
    assert_eq!(handle.throttled(), before);
}

#[test]
fn an_update_releases_a_throttled_blk_queue_at_once() {
    // One op per hour.
    let (_file, mut d, handle) = limited_disk(ops_limit(1, 3_600_000));
    assert_eq!(d.blk(blk::T_IN, 0, &[], 512).0, blk::S_OK);
    // The second request waits, in the ring, without an answer.
    let before = d.used_idx();
    d.offer_no_wait(0);
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(d.used_idx(), before, "served despite the limit");
    assert_eq!(handle.throttled(), 1);
    // Notifications while throttled serve nothing either.
    d.write(reg::QUEUE_NOTIFY, 0);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(d.used_idx(), before);
    assert_eq!(handle.throttled(), 1);
    // A new limit of 1000 ops per second: served at once.
    let start = std::time::Instant::now();
    handle.update(crate::throttle::LimitsUpdate {
        bandwidth: crate::throttle::BucketUpdate::Keep,
        ops: crate::throttle::BucketUpdate::Set(crate::throttle::BucketConfig {
            size: 1000,
            one_time_burst: 0,
            refill_time_ms: 1000,
        }),
    });
    d.settle(before);
    assert_eq!(d.used_idx(), before.wrapping_add(1));
    assert!(start.elapsed() < std::time::Duration::from_secs(2));
    assert_eq!(handle.limits(), ops_limit(1000, 1000));
    assert!(!d.needs_reset());
}

#[test]
fn rng_requests_wait_for_bandwidth_tokens() {
    // 64 bytes per 100 ms, and a one-time burst of 64.
    let rng = Rng::with_source(Box::new(std::io::repeat(0xab))).limited(crate::throttle::Limits {
        bandwidth: Some(crate::throttle::BucketConfig {
            size: 64,
            one_time_burst: 64,
            refill_time_ms: 100,
        }),
        ops: None,
    });
    let handle = rng.throttle();
    let mut d = Driver::new(Box::new(rng)).running();
    d.desc(DESC, 0, 0x4000, 32, WRITE, 0);
    let start = std::time::Instant::now();
    // 10 x 32 bytes: 128 from the burst and bucket, 192 at 64 per 100 ms.
    for _ in 0..10 {
        let before = d.used_idx();
        d.offer(0);
        assert_eq!(d.used_idx(), before.wrapping_add(1));
    }
    let took = start.elapsed();
    assert!(took >= std::time::Duration::from_millis(290), "{took:?}");
    assert!(took < std::time::Duration::from_secs(5), "{took:?}");
    assert!(handle.throttled() > 0);
}

#[test]
fn an_update_changes_the_rate_of_a_busy_blk_queue() {
    // 10 ops per second (bucket of 1): 5 requests take about 400 ms.
    let (_file, mut d, handle) = limited_disk(ops_limit(1, 100));
    let start = std::time::Instant::now();
    for _ in 0..5 {
        assert_eq!(d.blk(blk::T_IN, 0, &[], 512).0, blk::S_OK);
    }
    let slow = start.elapsed();
    assert!(slow >= std::time::Duration::from_millis(390), "{slow:?}");
    // 1000 ops per second from now on (bucket of 1): 20 more in ~20 ms.
    handle.update(crate::throttle::LimitsUpdate {
        bandwidth: crate::throttle::BucketUpdate::Keep,
        ops: crate::throttle::BucketUpdate::Set(crate::throttle::BucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: 1,
        }),
    });
    let start = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(d.blk(blk::T_IN, 0, &[], 512).0, blk::S_OK);
    }
    let fast = start.elapsed();
    assert!(fast >= std::time::Duration::from_millis(18), "{fast:?}");
    // At the old rate these would take 2 s.
    assert!(fast < std::time::Duration::from_millis(1500), "{fast:?}");
}
