//! A minimal virtio-mmio driver with several queues, for device tests
//! (the console's and the socket device's).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use devices::{BusDevice, IrqLine};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

use crate::mmio::{reg, MmioTransport};
use crate::status::*;
use crate::F_VERSION_1;

const RAM: u64 = 4 << 20;
const QUEUE_SIZE: u16 = 16;
/// Queue q's rings at QUEUES + q * QUEUE_STRIDE (desc, avail +0x1000,
/// used +0x2000).
const QUEUES: u64 = 0x1_0000;
const QUEUE_STRIDE: u64 = 0x1_0000;
/// Buffers are handed out from here.
const BUFFERS: u64 = 0x10_0000;
const NEXT: u16 = 1;
const WRITE: u16 = 2;

#[derive(Default)]
pub struct Line(pub AtomicBool);

impl IrqLine for Line {
    fn set_level(&self, level: bool) {
        self.0.store(level, Ordering::SeqCst);
    }
}

struct QueueState {
    avail_idx: u16,
    next_desc: u16,
    used_seen: u16,
}

pub struct MultiDriver {
    pub t: MmioTransport,
    pub mem: GuestMemoryMmap,
    queues: Vec<QueueState>,
    next_buffer: u64,
}

impl MultiDriver {
    /// Drives `device` up to DRIVER_OK with `queues` queues of 16.
    pub fn running(device: Box<dyn crate::VirtioDevice>, queues: usize) -> MultiDriver {
        let mem = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), RAM as usize)]).unwrap();
        let t = MmioTransport::new(device, mem.clone(), Arc::new(Line::default())).unwrap();
        let mut d = MultiDriver {
            t,
            mem,
            queues: Vec::new(),
            next_buffer: BUFFERS,
        };
        d.write(reg::STATUS, ACKNOWLEDGE);
        d.write(reg::STATUS, ACKNOWLEDGE | DRIVER);
        d.write(reg::DRIVER_FEATURES_SEL, 1);
        d.write(reg::DRIVER_FEATURES, (F_VERSION_1 >> 32) as u32);
        d.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK);
        for q in 0..queues {
            let base = QUEUES + q as u64 * QUEUE_STRIDE;
            d.write(reg::QUEUE_SEL, q as u32);
            d.write(reg::QUEUE_NUM, u32::from(QUEUE_SIZE));
            d.write(reg::QUEUE_DESC_LOW, base as u32);
            d.write(reg::QUEUE_DRIVER_LOW, (base + 0x1000) as u32);
            d.write(reg::QUEUE_DEVICE_LOW, (base + 0x2000) as u32);
            d.write(reg::QUEUE_READY, 1);
            d.queues.push(QueueState {
                avail_idx: 0,
                next_desc: 0,
                used_seen: 0,
            });
        }
        d.write(reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK);
        assert_eq!(d.read(reg::STATUS) & DRIVER_OK, DRIVER_OK);
        d
    }

    pub fn read(&mut self, offset: u64) -> u32 {
        let mut data = [0u8; 4];
        self.t.read(offset, &mut data);
        u32::from_le_bytes(data)
    }

    pub fn write(&mut self, offset: u64, value: u32) {
        self.t.write(offset, &value.to_le_bytes());
    }

    pub fn needs_reset(&mut self) -> bool {
        self.read(reg::STATUS) & DEVICE_NEEDS_RESET != 0
    }

    /// A fresh guest buffer of `len` bytes.
    pub fn buffer(&mut self, len: u32) -> GuestAddress {
        let addr = self.next_buffer;
        self.next_buffer += u64::from(len).next_multiple_of(16);
        assert!(self.next_buffer < RAM, "test buffers exhausted");
        GuestAddress(addr)
    }

    /// Offers a chain of `(addr, len, device-writable)` buffers on queue
    /// `q` and notifies it.
    pub fn offer(&mut self, q: usize, buffers: &[(GuestAddress, u32, bool)]) {
        let base = QUEUES + q as u64 * QUEUE_STRIDE;
        let state = &mut self.queues[q];
        let head = state.next_desc;
        for (i, &(addr, len, writable)) in buffers.iter().enumerate() {
            let index = (head + i as u16) % QUEUE_SIZE;
            let last = i + 1 == buffers.len();
            let flags = if writable { WRITE } else { 0 } | if last { 0 } else { NEXT };
            let next = (index + 1) % QUEUE_SIZE;
            let at = GuestAddress(base + u64::from(index) * 16);
            self.mem.write_obj(addr.0, at).unwrap();
            self.mem.write_obj(len, GuestAddress(at.0 + 8)).unwrap();
            self.mem.write_obj(flags, GuestAddress(at.0 + 12)).unwrap();
            self.mem.write_obj(next, GuestAddress(at.0 + 14)).unwrap();
        }
        state.next_desc = (head + buffers.len() as u16) % QUEUE_SIZE;
        let slot = u64::from(state.avail_idx % QUEUE_SIZE);
        self.mem
            .write_obj(head, GuestAddress(base + 0x1000 + 4 + slot * 2))
            .unwrap();
        state.avail_idx = state.avail_idx.wrapping_add(1);
        self.mem
            .write_obj(state.avail_idx, GuestAddress(base + 0x1000 + 2))
            .unwrap();
        self.write(reg::QUEUE_NOTIFY, q as u32);
    }

    /// The used elements (head, len) of queue `q` not seen yet.
    pub fn used(&mut self, q: usize) -> Vec<(u32, u32)> {
        let base = QUEUES + q as u64 * QUEUE_STRIDE + 0x2000;
        let idx: u16 = self.mem.read_obj(GuestAddress(base + 2)).unwrap();
        let state = &mut self.queues[q];
        let mut out = Vec::new();
        while state.used_seen != idx {
            let at = base + 4 + u64::from(state.used_seen % QUEUE_SIZE) * 8;
            out.push((
                self.mem.read_obj(GuestAddress(at)).unwrap(),
                self.mem.read_obj(GuestAddress(at + 4)).unwrap(),
            ));
            state.used_seen = state.used_seen.wrapping_add(1);
        }
        out
    }

    /// Waits (at most 10 s) for `n` used elements on queue `q`.
    pub fn wait_used(&mut self, q: usize, n: usize) -> Vec<(u32, u32)> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut out = Vec::new();
        while out.len() < n && Instant::now() < deadline {
            out.extend(self.used(q));
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(out.len(), n, "used elements of queue {q}");
        out
    }

    pub fn read_bytes(&self, addr: GuestAddress, len: usize) -> Vec<u8> {
        let mut buf = vec![0u8; len];
        self.mem.read_slice(&mut buf, addr).unwrap();
        buf
    }

    pub fn write_bytes(&self, addr: GuestAddress, data: &[u8]) {
        self.mem.write_slice(data, addr).unwrap();
    }
}
