//! virtio-net driven through the mmio transport as a driver would (and as
//! a hostile one might), on a datagram socket pair as the backend, and on a
//! real TAP device in a network namespace of its own.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devices::{BusDevice, IrqLine};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryMmap};

use super::*;
use crate::mmio::{reg, MmioTransport};
use crate::status::*;

const RAM: u64 = 1 << 20;
const QSIZE: u16 = 8;
/// Descriptor table, avail and used ring of each queue.
const RINGS: [(u64, u64, u64); 2] = [(0x1000, 0x2000, 0x3000), (0x4000, 0x5000, 0x6000)];
const NEXT: u16 = 1;
const WRITE: u16 = 2;

#[derive(Default)]
struct Line(AtomicBool);

impl IrqLine for Line {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

/// One end of a datagram socket pair: frames keep their boundaries, as on
/// a TAP. Remembers the last offload flags set.
struct Sock(UnixDatagram, Arc<std::sync::atomic::AtomicU32>);

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Backend for Sock {
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.recv(buf)
    }
    fn send(&mut self, frame: &[u8]) -> io::Result<usize> {
        self.0.send(frame)
    }
    fn set_offload(&mut self, flags: u32) -> io::Result<()> {
        self.1.store(flags, Ordering::SeqCst);
        Ok(())
    }
}

struct Driver {
    t: MmioTransport,
    mem: GuestMemoryMmap,
    counters: Arc<Counters>,
    avail_idx: [u16; 2],
    used_seen: [u16; 2],
}

impl Driver {
    fn new(net: Net) -> Driver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let counters = net.counters.clone();
        let t = MmioTransport::new(Box::new(net), mem.clone(), Arc::new(Line::default())).unwrap();
        Driver {
            t,
            mem,
            counters,
            avail_idx: [0; 2],
            used_seen: [0; 2],
        }
    }
    fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }
    fn write(&mut self, offset: u64, value: u32) {
        self.t.write(offset, &value.to_le_bytes());
    }
    /// A running device with both queues of QSIZE, `features` accepted.
    fn start(mut self, features: u64) -> Driver {
        self.write(reg::STATUS, ACKNOWLEDGE);
        self.write(reg::STATUS, ACKNOWLEDGE | DRIVER);
        self.write(reg::DRIVER_FEATURES_SEL, 0);
        self.write(reg::DRIVER_FEATURES, features as u32);
        self.write(reg::DRIVER_FEATURES_SEL, 1);
        self.write(reg::DRIVER_FEATURES, (features >> 32) as u32);
        self.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        assert_eq!(self.read(reg::STATUS) & FEATURES_OK, FEATURES_OK);
        for (q, (desc, avail, used)) in RINGS.iter().enumerate() {
            self.write(reg::QUEUE_SEL, q as u32);
            self.write(reg::QUEUE_NUM, QSIZE.into());
            self.write(reg::QUEUE_DESC_LOW, *desc as u32);
            self.write(reg::QUEUE_DRIVER_LOW, *avail as u32);
            self.write(reg::QUEUE_DEVICE_LOW, *used as u32);
            self.write(reg::QUEUE_READY, 1);
            assert_eq!(self.read(reg::QUEUE_READY), 1);
        }
        self.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        assert_eq!(self.read(reg::STATUS) & DRIVER_OK, DRIVER_OK);
        self
    }
    fn desc(&self, q: usize, index: u16, addr: u64, len: u32, flags: u16, next: u16) {
        let at = GuestAddress(RINGS[q].0 + u64::from(index) * 16);
        self.mem.write_obj(addr, at).unwrap();
        self.mem.write_obj(len, at.checked_add(8).unwrap()).unwrap();
        self.mem
            .write_obj(flags, at.checked_add(12).unwrap())
            .unwrap();
        self.mem
            .write_obj(next, at.checked_add(14).unwrap())
            .unwrap();
    }
    /// Makes the chain at `head` available on queue `q` and notifies.
    fn offer(&mut self, q: usize, head: u16) {
        let avail = RINGS[q].1;
        let slot = u64::from(self.avail_idx[q] % QSIZE);
        self.mem
            .write_obj(head, GuestAddress(avail + 4 + slot * 2))
            .unwrap();
        self.avail_idx[q] = self.avail_idx[q].wrapping_add(1);
        self.mem
            .write_obj(self.avail_idx[q], GuestAddress(avail + 2))
            .unwrap();
        self.write(reg::QUEUE_NOTIFY, q as u32);
    }
    fn used_idx(&self, q: usize) -> u16 {
        self.mem.read_obj(GuestAddress(RINGS[q].2 + 2)).unwrap()
    }
    /// Waits (at most 10 s) for `n` more used entries on queue `q`; their
    /// (id, len).
    fn wait_used(&mut self, q: usize, n: u16) -> Vec<(u32, u32)> {
        let want = self.used_seen[q].wrapping_add(n);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.used_idx(q).wrapping_sub(self.used_seen[q]) < n {
            assert!(
                Instant::now() < deadline,
                "queue {q}: used index {} never reached {want}",
                self.used_idx(q)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        let out = (0..n)
            .map(|i| {
                let slot = u64::from(self.used_seen[q].wrapping_add(i) % QSIZE);
                let at = RINGS[q].2 + 4 + slot * 8;
                (
                    self.mem.read_obj(GuestAddress(at)).unwrap(),
                    self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
                )
            })
            .collect();
        self.used_seen[q] = want;
        out
    }
    /// Waits until `cond` holds on the counters (at most 10 s).
    fn wait_counters(&self, what: &str, cond: impl Fn(&NetCounters) -> bool) -> NetCounters {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let c = self.counters.snapshot();
            if cond(&c) {
                return c;
            }
            assert!(Instant::now() < deadline, "{what}: {c:?}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    fn needs_reset(&mut self) -> bool {
        self.read(reg::STATUS) & DEVICE_NEEDS_RESET != 0
    }
    /// Sends `frame` (after a header) from chain 0 of the transmit queue:
    /// the header and the frame in two descriptors.
    fn transmit(&mut self, header: &[u8], frame: &[u8]) -> (u32, u32) {
        self.mem.write_slice(header, GuestAddress(0x10000)).unwrap();
        self.mem.write_slice(frame, GuestAddress(0x20000)).unwrap();
        self.desc(TX, 0, 0x10000, header.len() as u32, NEXT, 1);
        self.desc(TX, 1, 0x20000, frame.len() as u32, 0, 0);
        self.offer(TX, 0);
        self.wait_used(TX, 1)[0]
    }
}

const MAC: [u8; 6] = [0x06, 0, 0, 0, 0, 1];

fn device() -> (Driver, UnixDatagram) {
    let (d, peer, _) = device_with(false);
    (d, peer)
}

/// A device (with offloads offered or not), the backend's peer, and the
/// offload flags the device set on its backend.
fn device_with(offloads: bool) -> (Driver, UnixDatagram, Arc<std::sync::atomic::AtomicU32>) {
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let flags = Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX));
    let net = Net::with_offloads(Box::new(Sock(ours, flags.clone())), MAC, offloads);
    (Driver::new(net), theirs, flags)
}

fn frame(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3) as u8).collect()
}

/// The header and frame a backend sends.
fn with_header(frame: &[u8]) -> Vec<u8> {
    let mut data = vec![0u8; VNET_HDR_LEN];
    data.extend_from_slice(frame);
    data
}

#[test]
fn net_offers_its_mac_link_status_and_two_queues() {
    let (mut d, _peer) = device();
    assert_eq!(d.read(reg::DEVICE_ID), TYPE_NET);
    let features = u64::from(d.read(reg::DEVICE_FEATURES));
    for bit in [F_MAC, F_STATUS, F_MRG_RXBUF, F_RING_INDIRECT_DESC] {
        assert_ne!(features & bit, 0, "{bit:#x}");
    }
    assert_eq!(features & 0x3fff, F_MAC, "no offloads, no control queue");
    let mut config = [0u8; 8];
    d.t.read(reg::CONFIG, &mut config);
    assert_eq!(&config[..6], &MAC);
    assert_eq!(u16::from_le_bytes([config[6], config[7]]), S_LINK_UP);
    for q in 0..2 {
        d.write(reg::QUEUE_SEL, q);
        assert_eq!(d.read(reg::QUEUE_NUM_MAX), 256);
    }
    d.write(reg::QUEUE_SEL, 2);
    assert_eq!(d.read(reg::QUEUE_NUM_MAX), 0, "no control queue");
}

#[test]
fn transmitted_frames_reach_the_backend_with_a_clean_header() {
    let (d, peer) = device();
    let mut d = d.start(F_VERSION_1);
    let sent = frame(1000);
    // A header asking for checksum work that was never offered.
    let mut header = [0u8; VNET_HDR_LEN];
    header[0] = 1;
    header[1] = 1;
    assert_eq!(d.transmit(&header, &sent), (0, 0));
    let mut got = vec![0u8; 4096];
    let n = peer.recv(&mut got).unwrap();
    assert_eq!(&got[..n], &with_header(&sent)[..]);
    let c = d.counters.snapshot();
    assert_eq!((c.tx_packets, c.tx_bytes, c.tx_dropped), (1, 1000, 0));
    assert!(!d.needs_reset());
}

#[test]
fn received_frames_fill_a_chain_and_interrupt() {
    let (d, peer) = device();
    let mut d = d.start(F_VERSION_1);
    // A header and a data descriptor, as a driver without MRG_RXBUF may.
    d.desc(RX, 0, 0x30000, 12, WRITE | NEXT, 1);
    d.desc(RX, 1, 0x30100, 2000, WRITE, 0);
    d.offer(RX, 0);
    let sent = frame(1514);
    peer.send(&with_header(&sent)).unwrap();
    assert_eq!(d.wait_used(RX, 1), vec![(0, 12 + 1514)]);
    let mut header = [0u8; 12];
    d.mem
        .read_slice(&mut header, GuestAddress(0x30000))
        .unwrap();
    assert_eq!(
        u16::from_le_bytes([header[10], header[11]]),
        1,
        "num_buffers"
    );
    let mut got = vec![0u8; 1514];
    d.mem.read_slice(&mut got, GuestAddress(0x30100)).unwrap();
    assert_eq!(got, sent);
    assert_eq!(d.read(reg::INTERRUPT_STATUS) & 1, 1);
    let c = d.counters.snapshot();
    assert_eq!((c.rx_packets, c.rx_bytes, c.rx_dropped), (1, 1514, 0));
}

#[test]
fn mergeable_buffers_carry_a_frame_larger_than_one_chain() {
    let (d, peer) = device();
    let mut d = d.start(F_VERSION_1 | F_MRG_RXBUF);
    for i in 0..3u16 {
        d.desc(RX, i, 0x30000 + u64::from(i) * 0x1000, 1024, WRITE, 0);
        d.offer(RX, i);
    }
    let sent = frame(2500);
    peer.send(&with_header(&sent)).unwrap();
    assert_eq!(
        d.wait_used(RX, 3),
        vec![(0, 1024), (1, 1024), (2, 2512 - 2048)]
    );
    let mut got = vec![0u8; 3 * 0x1000];
    d.mem.read_slice(&mut got, GuestAddress(0x30000)).unwrap();
    assert_eq!(u16::from_le_bytes([got[10], got[11]]), 3, "num_buffers");
    let mut joined = got[12..1024].to_vec();
    joined.extend_from_slice(&got[0x1000..0x1000 + 1024]);
    joined.extend_from_slice(&got[0x2000..0x2000 + 464]);
    assert_eq!(joined, sent);
}

/// CPU time (user + system, in clock ticks) of this process's virtio-net
/// threads.
fn worker_cpu_ticks() -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if comm.trim() != "virtio-net" {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command name (which ends with ')'): utime and
        // stime are the 12th and 13th.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        total += fields
            .get(11)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
        total += fields
            .get(12)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0);
    }
    total
}

#[test]
fn without_receive_buffers_the_worker_waits_for_the_driver() {
    let (d, peer) = device();
    let mut d = d.start(F_VERSION_1 | F_MRG_RXBUF);
    let sent = frame(600);
    for _ in 0..3 {
        peer.send(&with_header(&sent)).unwrap();
    }
    // The frames wait in the backend; the worker does not spin on it.
    std::thread::sleep(Duration::from_millis(100));
    let before = worker_cpu_ticks();
    std::thread::sleep(Duration::from_millis(500));
    let spent = worker_cpu_ticks() - before;
    // 500 ms of spinning would be ~50 ticks; other tests' workers run too.
    assert!(
        spent < 15,
        "virtio-net threads used {spent} ticks while idle"
    );
    assert_eq!(d.used_idx(RX), 0);
    // Buffers and a notification: the frames come in.
    for i in 0..3u16 {
        d.desc(RX, i, 0x30000 + u64::from(i) * 0x1000, 2048, WRITE, 0);
        d.offer(RX, i);
    }
    assert_eq!(
        d.wait_used(RX, 3),
        vec![(0, 612), (1, 612), (2, 612)],
        "{:?}",
        d.counters.snapshot()
    );
    assert_eq!(d.counters.snapshot().rx_dropped, 0);
}

/// A backend that is always readable and always fails.
struct Broken(vmm_sys_util::eventfd::EventFd);

impl AsRawFd for Broken {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

impl Backend for Broken {
    fn recv(&mut self, _buf: &mut [u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EBADFD))
    }
    fn send(&mut self, _frame: &[u8]) -> io::Result<usize> {
        Err(io::Error::from_raw_os_error(libc::EIO))
    }
}

#[test]
fn a_failing_backend_is_counted_and_does_not_spin_the_worker() {
    let event = vmm_sys_util::eventfd::EventFd::new(0).unwrap();
    event.write(1).unwrap();
    let d = Driver::new(Net::new(Box::new(Broken(event)), MAC));
    let mut d = d.start(F_VERSION_1);
    d.desc(RX, 0, 0x30000, 2048, WRITE, 0);
    d.offer(RX, 0);
    d.wait_counters("the read error is counted", |c| c.backend_errors >= 1);
    std::thread::sleep(Duration::from_millis(300));
    // Each receive notification tries once more; nothing else does.
    assert_eq!(d.counters.snapshot().backend_errors, 2, "start + notify");
    // Frames the backend refuses are dropped.
    d.transmit(&[0u8; 12], &frame(60));
    let c = d.counters.snapshot();
    assert_eq!((c.tx_packets, c.tx_dropped), (0, 1));
    assert!(!d.needs_reset());
}

#[test]
fn hostile_transmit_chains_are_dropped_not_fatal() {
    let (d, peer) = device();
    let mut d = d.start(F_VERSION_1);
    // A chain shorter than a header.
    d.mem.write_slice(&[0u8; 8], GuestAddress(0x10000)).unwrap();
    d.desc(TX, 0, 0x10000, 8, 0, 0);
    d.offer(TX, 0);
    assert_eq!(d.wait_used(TX, 1), vec![(0, 0)]);
    // A frame larger than the limit (in RAM, so the chain is valid).
    d.desc(TX, 0, 0x10000, 12, NEXT, 1);
    d.desc(TX, 1, 0x20000, MAX_FRAME as u32, 0, 0);
    d.offer(TX, 0);
    assert_eq!(d.wait_used(TX, 1), vec![(0, 0)]);
    // A chain with only device-writable buffers has nothing to send.
    d.desc(TX, 0, 0x10000, 64, WRITE, 0);
    d.offer(TX, 0);
    assert_eq!(d.wait_used(TX, 1), vec![(0, 0)]);
    let c = d.counters.snapshot();
    assert_eq!((c.tx_packets, c.tx_dropped, c.bad_chains), (0, 3, 2));
    peer.set_nonblocking(true).unwrap();
    assert!(peer.recv(&mut [0u8; 16]).is_err(), "nothing was sent");
    assert!(!d.needs_reset());
    // The device still works.
    let sent = frame(60);
    d.transmit(&[0u8; 12], &sent);
    peer.set_nonblocking(false).unwrap();
    let mut got = [0u8; 128];
    assert_eq!(peer.recv(&mut got).unwrap(), 72);
}

#[test]
fn hostile_receive_chains_and_frames_are_dropped_not_fatal() {
    let (d, peer) = device();
    let mut d = d.start(F_VERSION_1);
    // A device-readable receive chain: given back empty, the frame dropped.
    d.desc(RX, 0, 0x30000, 2048, 0, 0);
    d.offer(RX, 0);
    peer.send(&with_header(&frame(100))).unwrap();
    assert_eq!(d.wait_used(RX, 1), vec![(0, 0)]);
    // A frame larger than the only chain (no MRG_RXBUF): dropped, the
    // chain stays for the next frame.
    d.desc(RX, 1, 0x31000, 512, WRITE, 0);
    d.offer(RX, 1);
    peer.send(&with_header(&frame(1000))).unwrap();
    d.wait_counters("the large frame is dropped", |c| c.rx_dropped == 2);
    assert_eq!(d.used_idx(RX), 1);
    // Frames shorter than a header, and frames with offload work the
    // driver did not agree to, are dropped too.
    peer.send(&[0u8; 5]).unwrap();
    let mut gso = with_header(&frame(100));
    gso[1] = 1;
    peer.send(&gso).unwrap();
    d.wait_counters("bad frames are dropped", |c| c.rx_dropped == 4);
    let sent = frame(200);
    peer.send(&with_header(&sent)).unwrap();
    assert_eq!(d.wait_used(RX, 1), vec![(1, 212)]);
    let c = d.counters.snapshot();
    assert_eq!((c.rx_packets, c.rx_dropped, c.bad_chains), (1, 4, 1));
    assert!(!d.needs_reset());
}

#[test]
fn a_receive_chain_outside_ram_is_a_device_error() {
    let (d, peer) = device();
    let mut d = d.start(F_VERSION_1);
    d.desc(RX, 0, RAM - 16, 2048, WRITE, 0);
    d.offer(RX, 0);
    peer.send(&with_header(&frame(100))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !d.needs_reset() {
        assert!(Instant::now() < deadline, "no NEEDS_RESET");
        std::thread::sleep(Duration::from_millis(1));
    }
    // A reset and a new start recover it.
    d.write(reg::STATUS, 0);
    d.avail_idx = [0; 2];
    d.used_seen = [0; 2];
    for (_, avail, used) in RINGS {
        d.mem.write_obj(0u16, GuestAddress(avail + 2)).unwrap();
        d.mem.write_obj(0u16, GuestAddress(used + 2)).unwrap();
    }
    let mut d = d.start(F_VERSION_1);
    let sent = frame(64);
    d.transmit(&[0u8; 12], &sent);
    let mut got = [0u8; 256];
    assert_eq!(peer.recv(&mut got).unwrap(), 76);
}

// A real TAP device, in a network namespace made for the test.

/// Runs `f` on a thread in a new network namespace (None when this
/// process may not make one).
fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    std::thread::spawn(move || {
        #[allow(unsafe_code)]
        // SAFETY: unshare takes no pointers; CLONE_NEWNET moves only this
        // thread into a new network namespace.
        let ret = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        if ret != 0 {
            return None;
        }
        Some(f())
    })
    .join()
    .expect("the namespace thread panicked")
}

fn ip(args: &[&str]) -> bool {
    std::process::Command::new("ip")
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

/// An ARP request from 10.0.0.2 (MAC) for 10.0.0.1.
fn arp_request() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&MAC);
    f.extend_from_slice(&[10, 0, 0, 2]);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&[10, 0, 0, 1]);
    f
}

/// Reports a test that cannot run on this host: loudly, and as a failure
/// with `FERROVISOR_REQUIRE_NET=1` (scripts/test sets it where the host
/// has `ip` and /dev/net/tun).
fn net_unavailable(reason: &str) {
    if std::env::var("FERROVISOR_REQUIRE_NET").is_ok_and(|v| v == "1") {
        panic!("net is required (FERROVISOR_REQUIRE_NET=1) but unavailable: {reason}");
    }
    eprintln!("SKIPPED: {reason}");
}

#[test]
fn a_tap_answers_an_arp_request_through_the_device() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return net_unavailable("no /dev/net/tun");
    }
    let outcome = in_new_netns(|| -> Result<Option<(Vec<u8>, NetCounters)>, String> {
        // `ip` runs in this thread's namespace (it is forked from it).
        if !ip(&["tuntap", "add", "dev", "fvtest0", "mode", "tap"]) {
            // No `ip` (or no TUN support): nothing to test here.
            return Ok(None);
        }
        let tap = crate::tap::Tap::open("fvtest0").map_err(|e| e.to_string())?;
        // Attached already: a second user is refused.
        let busy = crate::tap::Tap::open("fvtest0").unwrap_err();
        assert!(matches!(busy, crate::tap::TapError::Busy(_)), "{busy}");
        // Up only now that the TAP is attached (carrier on): the kernel
        // then activates its transmit queues inside `ip link set up`.
        // Set up before, the link would get them when the carrier comes
        // on, later, from the linkwatch work item; until that runs (late
        // under load) the queues are the noop qdisc, which drops the
        // kernel's ARP reply without a trace: the "no ARP reply" of about
        // one run in six.
        if !ip(&["addr", "add", "10.0.0.1/24", "dev", "fvtest0"])
            || !ip(&["link", "set", "fvtest0", "up"])
        {
            return Err("cannot configure the attached TAP with ip".into());
        }
        let mut d = Driver::new(Net::new(Box::new(tap), MAC)).start(F_VERSION_1 | F_MRG_RXBUF);
        for i in 0..4u16 {
            d.desc(RX, i, 0x30000 + u64::from(i) * 0x1000, 2048, WRITE, 0);
            d.offer(RX, i);
        }
        d.transmit(&[0u8; 12], &arp_request());
        // The kernel may send other frames first (IPv6 router
        // solicitations...): look for the ARP reply.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (id, len) = d.wait_used(RX, 1)[0];
            let mut got = vec![0u8; len as usize];
            d.mem
                .read_slice(&mut got, GuestAddress(0x30000 + u64::from(id) * 0x1000))
                .unwrap();
            let frame = got.split_off(VNET_HDR_LEN);
            if frame.len() >= 42 && frame[12..14] == [0x08, 0x06] && frame[20..22] == [0, 2] {
                return Ok(Some((frame, d.counters.snapshot())));
            }
            if Instant::now() > deadline {
                return Err("no ARP reply".into());
            }
            d.offer(RX, id as u16);
        }
    });
    let Some(outcome) = outcome else {
        return net_unavailable("cannot make a network namespace (not root?)");
    };
    let Some((reply, counters)) = outcome.unwrap() else {
        return net_unavailable("cannot configure a TAP with ip");
    };
    assert_eq!(&reply[0..6], &MAC, "to us");
    assert_eq!(&reply[32..38], &MAC, "target hardware address");
    assert_eq!(&reply[28..32], &[10, 0, 0, 1], "sender IP");
    assert_eq!(counters.tx_packets, 1);
    assert!(counters.rx_packets >= 1);
}

// Offloads.

/// A header: flags, gso_type, hdr_len, gso_size, csum_start, csum_offset.
fn header(flags: u8, gso_type: u8, gso_size: u16, csum_start: u16, csum_offset: u16) -> Vec<u8> {
    let mut h = vec![flags, gso_type];
    for v in [54u16, gso_size, csum_start, csum_offset, 0x7777] {
        h.extend_from_slice(&v.to_le_bytes());
    }
    h
}

#[test]
fn offloads_are_offered_only_when_asked_and_set_on_the_backend() {
    let (mut d, _peer, _) = device_with(false);
    assert_eq!(
        u64::from(d.read(reg::DEVICE_FEATURES)) & OFFLOAD_FEATURES,
        0
    );
    let (mut d, _peer, flags) = device_with(true);
    assert_eq!(
        u64::from(d.read(reg::DEVICE_FEATURES)) & OFFLOAD_FEATURES,
        OFFLOAD_FEATURES
    );
    let _d = d.start(F_VERSION_1 | F_MRG_RXBUF | F_GUEST_CSUM | F_GUEST_TSO4);
    assert_eq!(flags.load(Ordering::SeqCst), TUN_F_CSUM | TUN_F_TSO4);
    // TSO without the checksum offload it needs gives the host nothing.
    let (d, _peer, flags) = device_with(true);
    let _d = d.start(F_VERSION_1 | F_GUEST_TSO4 | F_GUEST_TSO6);
    assert_eq!(flags.load(Ordering::SeqCst), 0);
}

#[test]
fn negotiated_transmit_offloads_pass_the_header_to_the_backend() {
    let (d, peer, _) = device_with(true);
    let mut d = d.start(F_VERSION_1 | F_CSUM | F_HOST_TSO4);
    let sent = frame(3000);
    let h = header(1, HDR_GSO_TCPV4, 1448, 34, 16);
    assert_eq!(d.transmit(&h, &sent), (0, 0));
    let mut got = vec![0u8; 4096];
    let n = peer.recv(&mut got).unwrap();
    let mut want = h.clone();
    want[10..12].fill(0);
    want.extend_from_slice(&sent);
    assert_eq!(&got[..n], &want[..]);
    // Segmentation the driver did not negotiate (TCPv6, UDP, ECN): dropped.
    for gso in [HDR_GSO_TCPV6, 3, HDR_GSO_TCPV4 | HDR_GSO_ECN] {
        d.transmit(&header(1, gso, 1448, 34, 16), &sent);
    }
    let c = d.counters.snapshot();
    assert_eq!((c.tx_packets, c.tx_dropped, c.bad_chains), (1, 3, 3));
    assert!(!d.needs_reset());
}

#[test]
fn negotiated_receive_offloads_reach_the_driver() {
    let (d, peer, _) = device_with(true);
    let mut d = d.start(F_VERSION_1 | F_MRG_RXBUF | F_GUEST_CSUM | F_GUEST_TSO4);
    for i in 0..4u16 {
        d.desc(RX, i, 0x30000 + u64::from(i) * 0x4000, 0x4000, WRITE, 0);
        d.offer(RX, i);
    }
    // A 40000-byte TCPv4 segment the guest will split itself.
    let sent = frame(40000);
    let h = header(1, HDR_GSO_TCPV4, 1448, 34, 16);
    let mut data = h.clone();
    data.extend_from_slice(&sent);
    peer.send(&data).unwrap();
    let used = d.wait_used(RX, 3);
    assert_eq!(used, vec![(0, 0x4000), (1, 0x4000), (2, 40012 - 0x8000)]);
    let mut got = vec![0u8; 12];
    d.mem.read_slice(&mut got, GuestAddress(0x30000)).unwrap();
    let mut want = h;
    want[10..12].copy_from_slice(&3u16.to_le_bytes());
    assert_eq!(got, want);
    // TCPv6 segmentation was not accepted: dropped.
    let mut v6 = header(1, HDR_GSO_TCPV6, 1448, 54, 16);
    v6.extend_from_slice(&frame(3000));
    peer.send(&v6).unwrap();
    d.wait_counters("the TCPv6 segment is dropped", |c| c.rx_dropped == 1);
    assert_eq!(d.counters.snapshot().rx_packets, 1);
}

// Rate limiters

fn limited(
    rx: crate::throttle::Limits,
    tx: crate::throttle::Limits,
) -> (Driver, UnixDatagram, [crate::throttle::ThrottleHandle; 2]) {
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let flags = Arc::new(std::sync::atomic::AtomicU32::new(u32::MAX));
    let net = Net::new(Box::new(Sock(ours, flags)), MAC).limited(rx, tx);
    let handles = [net.rx_throttle(), net.tx_throttle()];
    (Driver::new(net), theirs, handles)
}

fn bytes_limit(size: u64, refill_time_ms: u64) -> crate::throttle::Limits {
    crate::throttle::Limits {
        bandwidth: Some(crate::throttle::BucketConfig {
            size,
            one_time_burst: 0,
            refill_time_ms,
        }),
        ops: None,
    }
}

#[test]
fn transmitted_frames_leave_at_the_tx_rate() {
    // Two 1012-byte chains (header and frame) per 100 ms.
    let (d, peer, handles) = limited(Default::default(), bytes_limit(2024, 100));
    let mut d = d.start(F_VERSION_1);
    let sent = frame(1000);
    let start = Instant::now();
    for head in 0..4u16 {
        let at = 0x10000 + u64::from(head) * 0x1000;
        d.mem
            .write_slice(&[0u8; VNET_HDR_LEN], GuestAddress(at))
            .unwrap();
        d.mem.write_slice(&sent, GuestAddress(at + 0x100)).unwrap();
        d.desc(TX, 2 * head, at, VNET_HDR_LEN as u32, NEXT, 2 * head + 1);
        d.desc(TX, 2 * head + 1, at + 0x100, 1000, 0, 0);
        d.offer(TX, 2 * head);
    }
    // Two at once, the two others 100 ms later: none dropped.
    let mut got = vec![0u8; 4096];
    for _ in 0..4 {
        let n = peer.recv(&mut got).unwrap();
        assert_eq!(&got[..n], &with_header(&sent)[..]);
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(95), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert_eq!(d.wait_used(TX, 4).len(), 4);
    assert!(handles[TX].throttled() >= 1);
    assert_eq!(handles[RX].throttled(), 0);
    let c = d.counters.snapshot();
    assert_eq!((c.tx_packets, c.tx_dropped), (4, 0));
    assert!(!d.needs_reset());
}

#[test]
fn received_frames_wait_in_the_backend_for_the_rx_rate() {
    // One frame per 100 ms (the ops bucket), at most one at once.
    let rx = crate::throttle::Limits {
        bandwidth: None,
        ops: Some(crate::throttle::BucketConfig {
            size: 1,
            one_time_burst: 0,
            refill_time_ms: 100,
        }),
    };
    let (d, peer, handles) = limited(rx, Default::default());
    let mut d = d.start(F_VERSION_1 | F_MRG_RXBUF);
    for i in 0..4u16 {
        d.desc(RX, i, 0x30000 + u64::from(i) * 0x1000, 2048, WRITE, 0);
        d.offer(RX, i);
    }
    let start = Instant::now();
    for i in 0..4u8 {
        let mut f = frame(100);
        f[0] = i;
        peer.send(&with_header(&f)).unwrap();
    }
    let used = d.wait_used(RX, 4);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(290), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    // All delivered, in order.
    for (i, (id, len)) in used.into_iter().enumerate() {
        assert_eq!((id, len), (i as u32, 112));
        let first: u8 = d
            .mem
            .read_obj(GuestAddress(0x30000 + i as u64 * 0x1000 + 12))
            .unwrap();
        assert_eq!(first, i as u8);
    }
    assert_eq!(handles[RX].throttled(), 3);
    let c = d.counters.snapshot();
    assert_eq!((c.rx_packets, c.rx_dropped), (4, 0));
}

#[test]
fn mmds_frames_are_answered_by_the_device_not_the_backend() {
    let (ours, peer) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    peer.set_nonblocking(true).unwrap();
    let flags = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let mut net = Net::new(Box::new(Sock(ours, flags)), MAC);
    let store = mmds::Mmds::shared(1024);
    let config = mmds::StackConfig {
        ipv4: mmds::DEFAULT_IPV4,
        service: mmds::ServiceConfig::default(),
    };
    net.set_mmds(mmds::Stack::new(config, store));
    let mut d = Driver::new(net).start(F_VERSION_1);
    // An ARP request for 169.254.169.254 from the guest's MAC.
    let mut arp = vec![0xffu8; 6];
    arp.extend_from_slice(&MAC);
    arp.extend_from_slice(&[0x08, 0x06, 0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&MAC);
    arp.extend_from_slice(&[169, 254, 0, 2, 0, 0, 0, 0, 0, 0, 169, 254, 169, 254]);
    d.transmit(&[0u8; VNET_HDR_LEN], &arp);
    d.wait_counters("mmds frame", |c| c.mmds_frames == 1);
    // The answer waits for a receive buffer, then fills it.
    d.desc(RX, 0, 0x30000, 2048, WRITE, 0);
    d.offer(RX, 0);
    assert_eq!(d.wait_used(RX, 1), vec![(0, 12 + 42)]);
    let mut got = vec![0u8; 12 + 42];
    d.mem.read_slice(&mut got, GuestAddress(0x30000)).unwrap();
    assert_eq!(&got[..10], &[0; 10], "a plain header");
    assert_eq!(&got[12..18], &MAC, "to the guest");
    assert_eq!(&got[18..24], &mmds::stack::MMDS_MAC, "from the MMDS");
    assert_eq!(&got[12 + 12..12 + 14], &[0x08, 0x06]);
    // Nothing reached the backend; other frames still do.
    let mut buf = [0u8; 256];
    assert!(peer.recv(&mut buf).is_err());
    let other = frame(60);
    d.transmit(&[0u8; VNET_HDR_LEN], &other);
    d.wait_counters("tx", |c| c.tx_packets == 1);
    let c = d.counters.snapshot();
    assert_eq!((c.mmds_frames, c.rx_packets, c.tx_dropped), (1, 1, 0));
}
