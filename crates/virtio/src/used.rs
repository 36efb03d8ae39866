//! The device's writes to a split virtqueue's used ring.
//!
//! `virtio-queue` writes the used ring (its flags, index, elements and
//! `avail_event`) straight into guest memory. Those writes are the
//! device's, not a vCPU's, so the accelerator's dirty log does not see
//! them; every device therefore changes the used ring through these
//! functions, which report the ring to the worker thread's guest-write
//! hook (as [`crate::chain::Segments::write_at`] reports buffers), so
//! that a diff snapshot or a live migration carries the ring with the
//! buffers it completes.

use virtio_queue::{Queue, QueueT};
use vm_memory::GuestMemoryMmap;

use crate::DeviceError;

/// Bytes of a used ring of `size` entries: flags, idx, the elements, then
/// `avail_event`.
fn ring_bytes(size: u16) -> u64 {
    4 + 8 * u64::from(size) + 2
}

fn note_ring(queue: &Queue) {
    crate::chain::note_write(
        vm_memory::GuestAddress(queue.used_ring()),
        ring_bytes(queue.size()) as usize,
    );
}

/// Puts chain `head` on the used ring with `len` bytes written.
pub fn add_used(
    queue: &mut Queue,
    mem: &GuestMemoryMmap,
    head: u16,
    len: u32,
) -> Result<(), DeviceError> {
    queue.add_used(mem, head, len).map_err(DeviceError::Queue)?;
    note_ring(queue);
    Ok(())
}

/// Asks the driver to notify new buffers; true when some arrived
/// meanwhile (see `virtio_queue::QueueT::enable_notification`).
pub fn enable_notification(queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<bool, DeviceError> {
    let more = queue.enable_notification(mem).map_err(DeviceError::Queue)?;
    note_ring(queue);
    Ok(more)
}

/// Tells the driver that notifications are not needed for now.
pub fn disable_notification(queue: &mut Queue, mem: &GuestMemoryMmap) -> Result<(), DeviceError> {
    queue
        .disable_notification(mem)
        .map_err(DeviceError::Queue)?;
    note_ring(queue);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use virtio_queue::{Queue, QueueT};
    use vm_memory::{GuestAddress, GuestMemoryMmap};

    #[test]
    fn used_ring_writes_reach_the_thread_hook() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10000)]).unwrap();
        let mut queue = Queue::new(16).unwrap();
        queue.set_size(16);
        queue.set_desc_table_address(Some(0x1000), Some(0));
        queue.set_avail_ring_address(Some(0x2000), Some(0));
        queue.set_used_ring_address(Some(0x3000), Some(0));
        queue.set_ready(true);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        crate::chain::set_thread_write_hook(Some(Arc::new(move |gpa, len| {
            log.lock().unwrap().push((gpa, len));
        })));
        super::add_used(&mut queue, &mem, 3, 10).unwrap();
        super::enable_notification(&mut queue, &mem).unwrap();
        super::disable_notification(&mut queue, &mem).unwrap();
        crate::chain::set_thread_write_hook(None);
        let seen = seen.lock().unwrap();
        assert_eq!(seen.len(), 3);
        assert!(seen
            .iter()
            .all(|&(gpa, len)| gpa == 0x3000 && len == 4 + 8 * 16 + 2));
    }
}
