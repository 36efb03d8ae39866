//! Saving and restoring virtio-mmio devices (transport registers, queue
//! positions, pending interrupts, the socket device's transport reset).

use std::sync::Arc;

use crate::mmio::{reg, MmioTransport};
use crate::rng::Rng;
use crate::test_driver::{Line, MultiDriver};
use crate::transport::TransportStateError;
use crate::vsock::Vsock;

fn rng() -> Box<Rng> {
    Box::new(Rng::with_source(Box::new(std::io::repeat(0xab))))
}

/// `d`'s transport replaced by a new one on the same memory for `device`,
/// restored from `d`'s saved state.
fn restore_into(d: &mut MultiDriver, device: Box<dyn crate::VirtioDevice>) {
    let saved = d.t.save().expect("save a paused device");
    let mut t = MmioTransport::new(device, d.mem.clone(), Arc::new(Line::default())).unwrap();
    t.restore(&saved).expect("restore");
    // Running again (its worker is not parked).
    assert!(matches!(t.save(), Err(TransportStateError::NotParked(_))));
    d.t = t;
}

#[test]
fn a_restored_rng_goes_on_from_its_queue_position_and_serves_what_was_offered_while_paused() {
    let mut d = MultiDriver::running(rng(), 1);
    for _ in 0..3 {
        let buf = d.buffer(16);
        d.offer(0, &[(buf, 16, true)]);
    }
    assert_eq!(d.wait_used(0, 3).len(), 3);
    d.write(reg::INTERRUPT_ACK, 1);
    let gate = d.t.pause_gate().unwrap();
    assert!(gate.pause());
    // Offered while the VM is paused: not served by the old device.
    let late = d.buffer(8);
    d.offer(0, &[(late, 8, true)]);
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert!(d.used(0).is_empty(), "served while paused");
    let saved = d.t.save().unwrap();
    assert_eq!(saved.core.queues[0].next_avail, 3);
    assert_eq!(saved.core.queues[0].next_used, 3);
    assert_eq!(saved.interrupt_status, 0);
    restore_into(&mut d, rng());
    // The new device takes the 4th chain (head 3) and writes used entry 3.
    let used = d.wait_used(0, 1);
    assert_eq!(used, vec![(3, 8)]);
    assert_eq!(d.read_bytes(late, 8), vec![0xab; 8]);
    assert_eq!(d.read(reg::INTERRUPT_STATUS) & 1, 1);
    assert_eq!(d.read(reg::STATUS), d.t.status());
}

#[test]
fn a_pending_interrupt_is_raised_again_after_a_restore() {
    let mut d = MultiDriver::running(rng(), 1);
    let buf = d.buffer(4);
    d.offer(0, &[(buf, 4, true)]);
    d.wait_used(0, 1);
    // The driver has not acked the interrupt yet.
    assert!(d.t.pause_gate().unwrap().pause());
    let line = Arc::new(Line::default());
    let saved = d.t.save().unwrap();
    assert_eq!(saved.interrupt_status, 1);
    let mut t = MmioTransport::new(rng(), d.mem.clone(), line.clone()).unwrap();
    t.restore(&saved).unwrap();
    assert!(line.0.load(std::sync::atomic::Ordering::SeqCst));
    d.t = t;
    assert_eq!(d.read(reg::INTERRUPT_STATUS), 1);
}

#[test]
fn a_running_device_is_saved_only_when_parked_and_restored_only_into_its_kind() {
    let d = MultiDriver::running(rng(), 1);
    assert_eq!(
        d.t.save(),
        Err(TransportStateError::NotParked(crate::TYPE_RNG))
    );
    assert!(d.t.pause_gate().unwrap().pause());
    let saved = d.t.save().unwrap();
    let dir = temp_dir("kind");
    let vsock = Vsock::new(3, &dir.join("v.sock")).unwrap();
    let mut other =
        MmioTransport::new(Box::new(vsock), d.mem.clone(), Arc::new(Line::default())).unwrap();
    assert!(matches!(
        other.restore(&saved),
        Err(TransportStateError::DeviceType { saved: 4, here: 19 })
    ));
    assert_eq!(other.status(), 0, "a refused restore changes nothing");
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ferrovisor-vdevsnap-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn a_restored_socket_device_tells_the_driver_its_transport_was_reset() {
    let dir = temp_dir("reset");
    let vsock = Vsock::new(3, &dir.join("a.sock")).unwrap();
    let mut d = MultiDriver::running(Box::new(vsock), 3);
    let event = d.buffer(8);
    d.write_bytes(event, &[0xff; 8]);
    d.offer(2, &[(event, 8, true)]);
    assert!(d.used(2).is_empty(), "no event before a restore");
    assert!(d.t.pause_gate().unwrap().pause());
    let restored = Vsock::new(3, &dir.join("b.sock")).unwrap();
    let counters = restored.counters();
    restore_into(&mut d, Box::new(restored));
    assert_eq!(d.wait_used(2, 1), vec![(0, 4)]);
    assert_eq!(
        d.read_bytes(event, 4),
        vec![0; 4],
        "VIRTIO_VSOCK_EVENT_TRANSPORT_RESET"
    );
    assert_eq!(
        counters
            .transport_resets
            .load(std::sync::atomic::Ordering::Relaxed),
        1
    );
}
