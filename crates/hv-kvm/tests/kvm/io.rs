//! Port and MMIO accesses reach the IoHandler with the right address, size
//! and value, and reads return what the handler gives.

use std::time::Duration;

use hv::MemorySlot;
use iced_x86::code_asm::*;

use crate::common::*;

const T: Duration = Duration::from_secs(10);

#[test]
fn out_of_each_size_reaches_pio_write() {
    let Some(hv) = kvm_or_skip("out_of_each_size_reaches_pio_write") else {
        return;
    };
    let code = asm16(|a| {
        a.mov(al, 0x12)?;
        a.out(0x80, al)?;
        a.mov(dx, 0x3f8)?;
        a.mov(ax, 0x3456)?;
        a.out(dx, ax)?;
        a.mov(eax, 0x89ab_cdefu32)?;
        a.out(dx, eax)?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    let rec = Recorder::default();
    g.run_to_done(&rec, T);
    assert_eq!(
        rec.take(),
        vec![
            Access::PioWrite(0x80, vec![0x12]),
            Access::PioWrite(0x3f8, vec![0x56, 0x34]),
            Access::PioWrite(0x3f8, vec![0xef, 0xcd, 0xab, 0x89]),
        ]
    );
}

#[test]
fn in_returns_what_the_handler_gives() {
    let Some(hv) = kvm_or_skip("in_returns_what_the_handler_gives") else {
        return;
    };
    let code = asm16(|a| {
        a.mov(dx, 0x3f8)?;
        a.in_(al, dx)?;
        a.mov(bl, al)?;
        a.in_(ax, dx)?;
        a.mov(cx, ax)?;
        a.in_(eax, 0x71)?;
        a.mov(esi, eax)?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    let rec = Recorder::with_reads(0x1122_3340);
    g.run_to_done(&rec, T);
    assert_eq!(
        rec.take(),
        vec![
            Access::PioRead(0x3f8, 1),
            Access::PioRead(0x3f8, 2),
            Access::PioRead(0x71, 4),
        ]
    );
    let regs = g.vcpu.get_regs().unwrap();
    assert_eq!(regs.rbx & 0xff, 0x40);
    assert_eq!(regs.rcx & 0xffff, 0x3341);
    assert_eq!(regs.rsi & 0xffff_ffff, 0x1122_3342);
}

#[test]
fn string_io_is_served_element_by_element() {
    let Some(hv) = kvm_or_skip("string_io_is_served_element_by_element") else {
        return;
    };
    // rep outsw of 3 words from 0x3000, then rep insb of 4 bytes to 0x3100.
    let code = asm16(|a| {
        a.cld()?;
        a.mov(si, 0x3000)?;
        a.mov(cx, 3)?;
        a.mov(dx, 0x510)?;
        a.rep().outsw()?;
        a.mov(di, 0x3100)?;
        a.mov(cx, 4)?;
        a.mov(dx, 0x511)?;
        a.rep().insb()?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    write_region(&g.ram, 0x3000, &[1, 2, 3, 4, 5, 6]);
    let rec = Recorder::with_reads(0xa0);
    g.run_to_done(&rec, T);
    let accesses = rec.take();
    assert_eq!(
        accesses,
        vec![
            Access::PioWrite(0x510, vec![1, 2]),
            Access::PioWrite(0x510, vec![3, 4]),
            Access::PioWrite(0x510, vec![5, 6]),
            Access::PioRead(0x511, 1),
            Access::PioRead(0x511, 1),
            Access::PioRead(0x511, 1),
            Access::PioRead(0x511, 1),
        ]
    );
    // Each element got its own handler call (values a0 + index).
    assert_eq!(read_region(&g.ram, 0x3100, 4), vec![0xa3, 0xa4, 0xa5, 0xa6]);
}

#[test]
fn mmio_outside_memory_reaches_the_handler() {
    let Some(hv) = kvm_or_skip("mmio_outside_memory_reaches_the_handler") else {
        return;
    };
    // DS = 0xd000: base 0xd0000, no slot there.
    let code = asm16(|a| {
        a.mov(ax, 0xd000)?;
        a.mov(ds, ax)?;
        a.mov(byte_ptr(0x10), 0xab)?;
        a.mov(word_ptr(0x20), 0x1234)?;
        a.mov(dword_ptr(0x30), 0xdead_beefu32)?;
        a.mov(al, byte_ptr(0x40))?;
        a.mov(bx, word_ptr(0x50))?;
        a.mov(ecx, dword_ptr(0x60))?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    let rec = Recorder::with_reads(0x1122_3344_5566_7788);
    g.run_to_done(&rec, T);
    assert_eq!(
        rec.take(),
        vec![
            Access::MmioWrite(0xd0010, vec![0xab]),
            Access::MmioWrite(0xd0020, vec![0x34, 0x12]),
            Access::MmioWrite(0xd0030, vec![0xef, 0xbe, 0xad, 0xde]),
            Access::MmioRead(0xd0040, 1),
            Access::MmioRead(0xd0050, 2),
            Access::MmioRead(0xd0060, 4),
        ]
    );
    let regs = g.vcpu.get_regs().unwrap();
    assert_eq!(regs.rax & 0xff, 0x88);
    assert_eq!(regs.rbx & 0xffff, 0x7788);
    assert_eq!(regs.rcx & 0xffff_ffff, 0x5566_7788);
}

#[test]
fn read_only_slot_reads_memory_and_turns_writes_into_mmio() {
    let Some(hv) = kvm_or_skip("read_only_slot_reads_memory_and_turns_writes_into_mmio") else {
        return;
    };
    if !hv.has_readonly_memory() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "read_only_slot_reads_memory_and_turns_writes_into_mmio: \
             SKIPPED (host KVM lacks KVM_CAP_READONLY_MEM)"
        );
        return;
    }
    let code = asm16(|a| {
        a.mov(ax, 0x3000)?;
        a.mov(ds, ax)?;
        a.mov(al, byte_ptr(0x10))?;
        a.out(0x80, al)?;
        a.mov(byte_ptr(0x20), 0x77)?;
        a.mov(word_ptr(0x30), 0xbeef)?;
        a.mov(al, byte_ptr(0x20))?;
        a.out(0x80, al)?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    let rom = region(0x1000);
    write_region(&rom, 0, &[0x5a; 0x1000]);
    g.vm.set_memory_slot(MemorySlot {
        id: 1,
        guest_addr: 0x30000,
        region: rom.clone(),
        read_only: true,
        log_dirty: false,
    })
    .unwrap();
    let rec = Recorder::default();
    g.run_to_done(&rec, T);
    assert_eq!(
        rec.take(),
        vec![
            Access::PioWrite(0x80, vec![0x5a]),
            Access::MmioWrite(0x30020, vec![0x77]),
            Access::MmioWrite(0x30030, vec![0xef, 0xbe]),
            Access::PioWrite(0x80, vec![0x5a]),
        ]
    );
    assert_eq!(read_region(&rom, 0x20, 0x12), vec![0x5a; 0x12]);
}
