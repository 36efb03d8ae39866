//! Memory slots: dirty logging, removal, and the errors of bad requests.

use std::sync::Arc;
use std::time::Duration;

use hv::memory::dirty_pages;
use hv::{HvError, MemorySlot};
use iced_x86::code_asm::*;

use crate::common::*;

const T: Duration = Duration::from_secs(10);

fn slot(id: u32, guest_addr: u64, size: usize, log_dirty: bool) -> MemorySlot {
    MemorySlot {
        id,
        guest_addr,
        region: region(size),
        read_only: false,
        log_dirty,
    }
}

fn invalid(r: Result<(), HvError>) -> String {
    match r {
        Err(HvError::InvalidArgument(msg)) => msg,
        other => panic!("expected InvalidArgument, got {other:?}"),
    }
}

#[test]
fn dirty_log_names_exactly_the_pages_written() {
    let Some(hv) = kvm_or_skip("dirty_log_names_exactly_the_pages_written") else {
        return;
    };
    // 16 pages at 0x20000 (DS = 0x2000); write pages 1, 3 and 10, read 5.
    let code = asm16(|a| {
        a.mov(ax, 0x2000)?;
        a.mov(ds, ax)?;
        a.mov(byte_ptr(0x1000), 1)?;
        a.mov(word_ptr(0x3ffe), 0x0202)?;
        a.mov(dword_ptr(0xa800), 0x0303_0303u32)?;
        a.mov(al, byte_ptr(0x5000))?;
        a.out(DONE_PORT as i32, al)?;
        // Second round: page 15 only.
        a.mov(byte_ptr(0xf000), 4)?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    let logged = slot(1, 0x20000, 16 * 4096, true);
    let mem = Arc::clone(&logged.region);
    g.vm.set_memory_slot(logged).unwrap();
    assert_eq!(
        dirty_pages(&g.vm.get_dirty_log(1).unwrap()),
        Vec::<u64>::new()
    );

    let rec = Recorder::default();
    g.run_to_done(&rec, T);
    let bitmap = g.vm.get_dirty_log(1).unwrap();
    assert_eq!(bitmap.len(), 1, "16 pages fit one word");
    assert_eq!(dirty_pages(&bitmap), vec![1, 3, 10]);
    assert_eq!(read_region(&mem, 0x3ffe, 2), vec![2, 2]);
    // Reading the log cleared it.
    assert_eq!(
        dirty_pages(&g.vm.get_dirty_log(1).unwrap()),
        Vec::<u64>::new()
    );

    let rec = Recorder::default();
    g.run_to_done(&rec, T);
    assert_eq!(dirty_pages(&g.vm.get_dirty_log(1).unwrap()), vec![15]);
}

#[test]
fn dirty_log_errors_for_unknown_and_non_logging_slots() {
    let Some(hv) = kvm_or_skip("dirty_log_errors_for_unknown_and_non_logging_slots") else {
        return;
    };
    let g = Guest::new(&hv, &[0xf4]);
    assert!(matches!(
        g.vm.get_dirty_log(0),
        Err(HvError::InvalidArgument(_))
    ));
    assert!(matches!(
        g.vm.get_dirty_log(7),
        Err(HvError::InvalidArgument(_))
    ));
}

#[test]
fn bad_slots_are_refused() {
    let Some(hv) = kvm_or_skip("bad_slots_are_refused") else {
        return;
    };
    let g = Guest::new(&hv, &[0xf4]);
    let msg = invalid(g.vm.set_memory_slot(slot(1, 0x20800, 4096, false)));
    assert!(msg.contains("aligned"), "{msg}");
    let msg = invalid(g.vm.set_memory_slot(slot(1, 0x20000, 100, false)));
    assert!(msg.contains("multiple of 4 KiB"), "{msg}");
    let msg = invalid(g.vm.set_memory_slot(slot(1, 0x8000, 0x10000, false)));
    assert!(msg.contains("overlaps slot 0"), "{msg}");
    let msg = invalid(g.vm.set_memory_slot(slot(u32::MAX, 0x20000, 4096, false)));
    assert!(msg.contains("out of range"), "{msg}");
    let msg = invalid(g.vm.remove_memory_slot(9));
    assert!(msg.contains("no memory slot 9"), "{msg}");
}

#[test]
fn removed_slot_becomes_mmio_and_replaced_slot_maps_new_memory() {
    let Some(hv) = kvm_or_skip("removed_slot_becomes_mmio_and_replaced_slot_maps_new_memory")
    else {
        return;
    };
    let code = asm16(|a| {
        a.mov(ax, 0x2000)?;
        a.mov(ds, ax)?;
        a.mov(al, byte_ptr(0x10))?;
        a.out(0x80, al)?;
        a.out(DONE_PORT as i32, al)?;
        a.mov(al, byte_ptr(0x10))?;
        a.out(0x80, al)?;
        a.out(DONE_PORT as i32, al)?;
        a.mov(al, byte_ptr(0x10))?;
        a.out(0x80, al)?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    let first = slot(1, 0x20000, 4096, false);
    write_region(&first.region, 0x10, &[0x11]);
    g.vm.set_memory_slot(first).unwrap();
    let rec = Recorder::with_reads(0x99);
    g.run_to_done(&rec, T);
    assert_eq!(rec.take(), vec![Access::PioWrite(0x80, vec![0x11])]);

    // Replace slot 1 with other memory of another size (delete + add).
    let second = slot(1, 0x20000, 8192, false);
    write_region(&second.region, 0x10, &[0x22]);
    g.vm.set_memory_slot(second).unwrap();
    g.run_to_done(&rec, T);
    assert_eq!(rec.take(), vec![Access::PioWrite(0x80, vec![0x22])]);

    g.vm.remove_memory_slot(1).unwrap();
    g.run_to_done(&rec, T);
    assert_eq!(
        rec.take(),
        vec![
            Access::MmioRead(0x20010, 1),
            Access::PioWrite(0x80, vec![0x99])
        ]
    );
}
