//! Hostile drivers in a box: turns arbitrary bytes into guest memory and a
//! virtqueue configuration, then serves the queue as a device would. Used
//! by the unit tests (random inputs on every run) and by the cargo-fuzz
//! targets in `fuzz/` (`virtqueue`, `blk_request`, `vsock_packet`). Whatever the bytes,
//! serving must end (no loop), return Ok or a [`DeviceError`], and never
//! panic or touch memory outside the guest's.
//!
//! Input layout: byte 0 = queue size (a power of two is taken from its low
//! 4 bits, other values are tried as given), byte 1 = flags (bit 0: keep
//! descriptors near guest RAM, heads in the table and the avail index
//! within the ring, so that chains get past the first checks; bit 1: event
//! index; bit 2: keep indirect flags), bytes 2..4 = the avail index the
//! driver publishes, the rest fills guest RAM (descriptor table at 0,
//! avail ring at 0x1000, used ring at 0x2000, buffers anywhere).

use std::sync::OnceLock;

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::chain::{serve_queue, Served};
use crate::{DeviceError, Interrupt};

/// Guest RAM of a fuzz input.
pub const RAM: usize = 64 << 10;
const DESC: u64 = 0;
const AVAIL: u64 = 0x1000;
const USED: u64 = 0x2000;

struct NoInterrupt;

impl Interrupt for NoInterrupt {
    fn signal_used(&self, _queue: usize) {}
    fn signal_config(&self) {}
    fn needs_reset(&self) {}
}

/// Guest memory and a ready queue made from `data`; None when the bytes
/// give a queue the transport would refuse (bad size).
fn setup(data: &[u8]) -> Option<(GuestMemoryMmap, Queue)> {
    let size_byte = *data.first()?;
    let flags = *data.get(1).unwrap_or(&0);
    let avail_idx = u16::from_le_bytes([*data.get(2).unwrap_or(&0), *data.get(3).unwrap_or(&0)]);
    let size = if size_byte & 0x80 == 0 {
        1u16 << (size_byte & 0x0f).min(8)
    } else {
        u16::from(size_byte & 0x7f)
    };
    let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM)]).ok()?;
    let payload = data.get(4..).unwrap_or(&[]);
    if !payload.is_empty() {
        let mut ram = vec![0u8; RAM];
        for (i, byte) in ram.iter_mut().enumerate() {
            *byte = payload[i % payload.len()];
        }
        mem.write_slice(&ram, GuestAddress(0)).ok()?;
    }
    if flags & 1 != 0 {
        // Tame the descriptors: addresses within (or just past) RAM,
        // lengths up to 8 KiB, next indices within twice the queue.
        for i in 0..u64::from(size) {
            let at = GuestAddress(DESC + i * 16);
            let d: Descriptor = mem.read_obj(at).ok()?;
            let addr = d.addr().0 % (RAM as u64 + 0x800);
            let len = d.len() % 0x2000;
            let next = d.next() % (2 * size);
            // Indirect tables only when asked (flags bit 2).
            let desc_flags = if flags & 4 != 0 {
                d.flags()
            } else {
                d.flags() & 3
            };
            mem.write_obj(addr, at).ok()?;
            mem.write_obj(len, GuestAddress(at.0 + 8)).ok()?;
            mem.write_obj(desc_flags, GuestAddress(at.0 + 12)).ok()?;
            mem.write_obj(next, GuestAddress(at.0 + 14)).ok()?;
        }
        // Heads in the table, and no more of them than the ring holds.
        for i in 0..u64::from(size) {
            let at = GuestAddress(AVAIL + 4 + i * 2);
            let head: u16 = mem.read_obj(at).ok()?;
            mem.write_obj(head % size, at).ok()?;
        }
    }
    let avail_idx = if flags & 1 != 0 {
        avail_idx % (size + 1)
    } else {
        avail_idx
    };
    mem.write_obj(avail_idx, GuestAddress(AVAIL + 2)).ok()?;
    let mut queue = Queue::new(256).ok()?;
    queue.try_set_size(size).ok()?;
    queue.try_set_desc_table_address(GuestAddress(DESC)).ok()?;
    queue.try_set_avail_ring_address(GuestAddress(AVAIL)).ok()?;
    queue.try_set_used_ring_address(GuestAddress(USED)).ok()?;
    queue.set_event_idx(flags & 2 != 0);
    queue.set_ready(true);
    queue.is_valid(&mem).then_some((mem, queue))
}

/// Serves `queue` until it is empty or fails, with a bound on the rounds
/// (each round serves at most 4096 chains).
fn drain(
    mut serve: impl FnMut(&mut Queue) -> Result<Served, DeviceError>,
    queue: &mut Queue,
) -> Result<(), DeviceError> {
    for _ in 0..4 {
        if serve(queue)? == Served::All {
            return Ok(());
        }
    }
    Ok(())
}

/// A generic device: reads every readable byte of each chain and fills
/// every writable byte.
pub fn run_virtqueue(data: &[u8]) -> Result<(), DeviceError> {
    let Some((mem, mut queue)) = setup(data) else {
        return Ok(());
    };
    drain(
        |q| {
            serve_queue(&mem, q, 0, &NoInterrupt, |chain| {
                let input = chain.readable();
                let mut buf = vec![0u8; input.len().min(1 << 16) as usize];
                assert!(
                    input.read_at(&mem, 0, &mut buf),
                    "a checked chain is readable"
                );
                let output = chain.writable();
                let fill = vec![0x5a; output.len().min(1 << 16) as usize];
                assert!(
                    output.write_at(&mem, 0, &fill),
                    "a checked chain is writable"
                );
                fill.len() as u32
            })
        },
        &mut queue,
    )
}

/// The block device on a 64 KiB scratch image (one per process).
fn scratch_disk() -> &'static crate::blk::Block {
    static DISK: OnceLock<crate::blk::Block> = OnceLock::new();
    DISK.get_or_init(|| {
        let path = std::env::temp_dir().join(format!("ferrovisor-fuzz-{}.img", std::process::id()));
        std::fs::write(&path, vec![0u8; 64 << 10]).expect("scratch image");
        let block = crate::blk::Block::open(&path, false, "fuzz").expect("scratch image");
        // The open file keeps the image; the name is not needed.
        let _ = std::fs::remove_file(&path);
        block
    })
}

/// virtio-blk requests parsed and executed from hostile chains.
pub fn run_blk(data: &[u8]) -> Result<(), DeviceError> {
    let Some((mem, mut queue)) = setup(data) else {
        return Ok(());
    };
    let disk = scratch_disk();
    drain(|q| disk.serve(&mem, q, &NoInterrupt), &mut queue)
}

/// virtio-vsock packets from the guest: the input is a sequence of
/// (length byte, bytes) records, each parsed as the readable part of a
/// transmit chain of the guest of CID 3. The payload a packet names must
/// lie inside its bytes.
pub fn run_vsock_packets(data: &[u8]) {
    let mut rest = data;
    while let Some((&len, tail)) = rest.split_first() {
        // Lengths up to 255 bytes, or a header with the rest as payload.
        let n = if len == 0xff {
            tail.len()
        } else {
            usize::from(len).min(tail.len())
        };
        let (bytes, next) = tail.split_at(n);
        if let Ok(packet) = crate::vsock::packet::parse(bytes, 3) {
            let start = packet.payload.as_ptr() as usize;
            let base = bytes.as_ptr() as usize;
            assert!(start >= base && start + packet.payload.len() <= base + bytes.len());
        }
        rest = next;
    }
}

/// A small xorshift generator for the random-input tests.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A random input: header bytes, then descriptors and rings.
    pub fn input(&mut self) -> Vec<u8> {
        let len = 4 + (self.next_u64() % 2048) as usize;
        let mut v: Vec<u8> = (0..len).map(|_| self.next_u64() as u8).collect();
        // Mostly valid sizes and tamed descriptors, to reach the devices.
        if !self.next_u64().is_multiple_of(4) {
            v[0] &= 0x0f;
            v[1] |= 1;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_queues_never_panic() {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
        let (mut ok, mut err) = (0, 0);
        for _ in 0..3000 {
            match run_virtqueue(&rng.input()) {
                Ok(()) => ok += 1,
                Err(_) => err += 1,
            }
        }
        // Both outcomes must be reached, or the inputs test nothing.
        assert!(ok > 100 && err > 100, "ok {ok}, errors {err}");
    }

    #[test]
    fn random_vsock_packets_never_panic() {
        let mut rng = XorShift(0x1234_5678_9abc_def1);
        for _ in 0..20_000 {
            let mut input = rng.input();
            // Often a plausible header: guest CID 3 to the host (2).
            if input.len() > 45 && rng.next_u64().is_multiple_of(2) {
                input[0] = 44 + (rng.next_u64() % 8) as u8;
                input[1..9].copy_from_slice(&3u64.to_le_bytes());
                input[9..17].copy_from_slice(&2u64.to_le_bytes());
            }
            run_vsock_packets(&input);
        }
    }

    #[test]
    fn random_block_requests_never_panic() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let before = scratch_disk().counters();
        for _ in 0..3000 {
            let _ = run_blk(&rng.input());
        }
        let after = scratch_disk().counters();
        // Some requests got as far as the disk.
        let served = (after.reads + after.writes + after.errors + after.unsupported)
            - (before.reads + before.writes + before.errors + before.unsupported);
        assert!(served > 50, "only {served} requests reached the disk");
    }
}
