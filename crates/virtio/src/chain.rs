//! Descriptor chains, checked before use.
//!
//! `virtio-queue`'s chain iterator stops quietly on a descriptor it cannot
//! read, an index past the table, a bad indirect table or a chain longer
//! than the queue (a loop). [`walk`] turns every such stop into an error,
//! and checks that each buffer lies in guest RAM, so that devices work on a
//! plain list of guest buffers.

use virtio_queue::desc::split::Descriptor;
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use crate::{DeviceError, Interrupt};

/// Why a descriptor chain was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("descriptor chain {head} has no buffers (or a bad indirect table)")]
    Empty { head: u16 },
    #[error("descriptor chain {head} is cut short: a loop, a next index past the table, or an unreadable descriptor")]
    Truncated { head: u16 },
    #[error("descriptor chain {head}: buffer {addr:#x}+{len:#x} is not in guest RAM")]
    OutsideRam { head: u16, addr: u64, len: u32 },
}

/// One guest buffer of a chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buffer {
    pub addr: GuestAddress,
    pub len: u32,
    /// Device-writable (VIRTQ_DESC_F_WRITE).
    pub writable: bool,
}

/// A checked descriptor chain.
#[derive(Debug, Clone)]
pub struct Chain {
    pub head: u16,
    pub buffers: Vec<Buffer>,
}

impl Chain {
    /// The device-readable buffers, in order.
    pub fn readable(&self) -> Segments {
        Segments::new(self.buffers.iter().filter(|b| !b.writable))
    }
    /// The device-writable buffers, in order.
    pub fn writable(&self) -> Segments {
        Segments::new(self.buffers.iter().filter(|b| b.writable))
    }
}

thread_local! {
    /// The guest-write hook of the device whose worker runs on this thread.
    static WRITE_HOOK: std::cell::RefCell<Option<crate::GuestWriteHook>> =
        const { std::cell::RefCell::new(None) };
}

/// Makes [`Segments::write_at`] on this thread report its writes to `hook`
/// (the worker calls it once at start).
pub fn set_thread_write_hook(hook: Option<crate::GuestWriteHook>) {
    WRITE_HOOK.with(|h| *h.borrow_mut() = hook);
}

pub(crate) fn note_write(addr: GuestAddress, len: usize) {
    WRITE_HOOK.with(|h| {
        if let Some(hook) = h.borrow().as_ref() {
            hook(addr.0, len as u64);
        }
    });
}

/// Walks `chain` and checks every buffer against `mem`.
pub fn walk(
    mem: &GuestMemoryMmap,
    mut chain: DescriptorChain<&GuestMemoryMmap>,
) -> Result<Chain, ChainError> {
    let head = chain.head_index();
    let mut buffers = Vec::new();
    let mut last: Option<Descriptor> = None;
    for desc in &mut chain {
        let len = desc.len();
        if len != 0 && !GuestMemoryBackend::check_range(mem, desc.addr(), len as usize) {
            return Err(ChainError::OutsideRam {
                head,
                addr: desc.addr().0,
                len,
            });
        }
        buffers.push(Buffer {
            addr: desc.addr(),
            len,
            writable: desc.is_write_only(),
        });
        last = Some(desc);
    }
    match last {
        None => Err(ChainError::Empty { head }),
        Some(desc) if desc.has_next() => Err(ChainError::Truncated { head }),
        Some(_) => Ok(Chain { head, buffers }),
    }
}

/// A list of guest buffers seen as one byte range.
#[derive(Debug, Clone, Default)]
pub struct Segments {
    list: Vec<(GuestAddress, u64)>,
    total: u64,
}

impl Segments {
    fn new<'a>(buffers: impl Iterator<Item = &'a Buffer>) -> Segments {
        let list: Vec<(GuestAddress, u64)> = buffers
            .filter(|b| b.len != 0)
            .map(|b| (b.addr, u64::from(b.len)))
            .collect();
        // A chain is at most 2^32 bytes (the iterator checks), so no overflow.
        let total = list.iter().map(|(_, len)| len).sum();
        Segments { list, total }
    }

    /// Total length in bytes.
    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The pieces of `offset..offset+len` as guest ranges; None when the
    /// range does not fit.
    fn pieces(&self, offset: u64, len: u64) -> Option<Vec<(GuestAddress, usize, usize)>> {
        let end = offset.checked_add(len)?;
        if end > self.total {
            return None;
        }
        let mut out = Vec::new();
        let (mut start, mut pos, mut done) = (0u64, offset, 0usize);
        for &(addr, seg_len) in &self.list {
            let seg_end = start + seg_len;
            if pos < seg_end && pos < end {
                let n = (seg_end.min(end) - pos) as usize;
                out.push((addr.unchecked_add(pos - start), n, done));
                done += n;
                pos += n as u64;
            }
            start = seg_end;
        }
        Some(out)
    }

    /// Reads `buf.len()` bytes at `offset`; false when out of range or RAM.
    pub fn read_at(&self, mem: &GuestMemoryMmap, offset: u64, buf: &mut [u8]) -> bool {
        let Some(pieces) = self.pieces(offset, buf.len() as u64) else {
            return false;
        };
        pieces
            .into_iter()
            .all(|(addr, n, at)| mem.read_slice(&mut buf[at..at + n], addr).is_ok())
    }

    /// Writes `buf` at `offset`; false when out of range or RAM. The
    /// writes are reported to the thread's guest-write hook.
    pub fn write_at(&self, mem: &GuestMemoryMmap, offset: u64, buf: &[u8]) -> bool {
        let Some(pieces) = self.pieces(offset, buf.len() as u64) else {
            return false;
        };
        pieces.into_iter().all(|(addr, n, at)| {
            let written = mem.write_slice(&buf[at..at + n], addr).is_ok();
            note_write(addr, n);
            written
        })
    }
}

/// Most chains served per call: a driver that keeps adding buffers cannot
/// hold the device's thread (and its stop request) forever.
const CHAINS_PER_CALL: usize = 4096;

/// What [`serve_queue`] left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Served {
    /// The queue is empty (and notifications are enabled again).
    All,
    /// The per-call limit was reached with chains left: call again (the
    /// worker re-arms the queue's event, [`crate::worker::WorkerCtl::rearm`]).
    More,
    /// [`serve_queue_gated`]'s handler refused a chain: it is back in the
    /// available ring, and the queue waits (notifications stay off) until
    /// the device serves it again.
    Held,
}

/// Serves every available chain of queue `index` with `handle` (which
/// returns the number of bytes it wrote into the chain), puts them in the
/// used ring and interrupts the driver if it wants to be.
pub fn serve_queue(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    index: usize,
    interrupt: &dyn Interrupt,
    mut handle: impl FnMut(&Chain) -> u32,
) -> Result<Served, DeviceError> {
    serve_queue_gated(mem, queue, index, interrupt, |chain| Some(handle(chain)))
}

/// [`serve_queue`] for a device that may have to stop (a rate limiter):
/// `handle` returns None for a chain it will not serve now, which goes
/// back to the available ring untouched, and serving stops
/// ([`Served::Held`]).
pub fn serve_queue_gated(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    index: usize,
    interrupt: &dyn Interrupt,
    mut handle: impl FnMut(&Chain) -> Option<u32>,
) -> Result<Served, DeviceError> {
    let mut served = 0usize;
    let mut result = Served::All;
    'outer: loop {
        crate::used::disable_notification(queue, mem)?;
        loop {
            if served >= CHAINS_PER_CALL {
                result = Served::More;
                break 'outer;
            }
            let next = queue.iter(mem).map_err(DeviceError::Queue)?.next();
            let Some(desc_chain) = next else { break };
            let chain = walk(mem, desc_chain).map_err(DeviceError::Chain)?;
            let Some(used) = handle(&chain) else {
                queue.go_to_previous_position();
                result = Served::Held;
                break 'outer;
            };
            crate::used::add_used(queue, mem, chain.head, used)?;
            served += 1;
        }
        if !crate::used::enable_notification(queue, mem)? {
            break;
        }
    }
    notify_used(mem, queue, index, interrupt, served > 0)?;
    Ok(result)
}

/// After a device put buffers in the used ring of queue `index` (`used`):
/// interrupts the driver if it wants to be (EVENT_IDX, NO_INTERRUPT).
pub fn notify_used(
    mem: &GuestMemoryMmap,
    queue: &mut Queue,
    index: usize,
    interrupt: &dyn Interrupt,
    used: bool,
) -> Result<(), DeviceError> {
    if used && queue.needs_notification(mem).map_err(DeviceError::Queue)? {
        interrupt.signal_used(index);
    }
    Ok(())
}

/// The next available chain of `queue`, checked, for devices that take
/// buffers only when they have something for them (receive queues); None
/// when the queue is empty (and the driver's notifications are enabled
/// again, so that it notifies the next buffer).
pub fn pop_chain(mem: &GuestMemoryMmap, queue: &mut Queue) -> Result<Option<Chain>, DeviceError> {
    for _ in 0..2 {
        if let Some(chain) = queue.iter(mem).map_err(DeviceError::Queue)?.next() {
            return walk(mem, chain).map(Some).map_err(DeviceError::Chain);
        }
        if !crate::used::enable_notification(queue, mem)? {
            break;
        }
    }
    Ok(None)
}
