//! Conformance cases for ioeventfds and irqfds: guest writes that signal an
//! eventfd instead of reaching the VMM's handler, and eventfds that raise
//! an IOAPIC pin or send an MSI. KVM does these in the kernel, emu in its
//! vCPU's I/O path and an irqfd thread; the guests see the same.

use std::time::Duration;

use hv::{EventFd, Hypervisor, IoEventAddress, MsiMessage};
use iced_x86::code_asm::*;
use vmm_sys_util::eventfd::EFD_NONBLOCK;

use crate::harness::*;
use crate::interrupts::{
    emit_gate, emit_handler, emit_lapic_enable, emit_lidt, COUNTS, IOAPIC, LAPIC,
};

const EXIT_OK: u32 = 0x600d;
/// The MMIO address with a datamatch ioeventfd (virtio-mmio's QueueNotify
/// is at offset 0x50 of a device).
const NOTIFY: u64 = MMIO_ADDR + 0x50;
const NOTIFY_VALUE: u32 = 0x1234_5678;
/// An MMIO address with an ioeventfd that takes writes of any size.
const DOORBELL: u64 = MMIO_ADDR + 0x100;
/// A port with an ioeventfd that takes writes of any size.
const PORT: u16 = 0x510;

fn eventfd() -> EventFd {
    EventFd::new(EFD_NONBLOCK).expect("eventfd")
}

/// Takes the eventfd's counter (0 when nothing signalled it).
fn take(event: &EventFd) -> u64 {
    match event.read() {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
        Err(e) => panic!("reading an eventfd: {e}"),
    }
}

/// Waits until the guest stored `value` at [`SCRATCH`].
fn wait_for_guest(t: &TestVm, value: u64) {
    let step = Duration::from_millis(2);
    let mut waited = Duration::ZERO;
    while t.read_u64(SCRATCH) != value {
        assert!(waited < TIMEOUT, "guest never reached step {value}");
        std::thread::sleep(step);
        waited += step;
    }
}

/// Emits the writes of [`ioeventfd_takes_matching_writes`]. Clobbers RAX,
/// RBX, RDX.
fn emit_writes(a: &mut CodeAssembler) -> guests::Result<()> {
    a.mov(rbx, NOTIFY)?;
    // Matches.
    a.mov(dword_ptr(rbx), NOTIFY_VALUE)?;
    // Another value; the right value in a 2-byte write.
    a.mov(dword_ptr(rbx), 0xdead)?;
    a.mov(word_ptr(rbx), 0x5678)?;
    // Matches, from a register this time.
    a.mov(eax, NOTIFY_VALUE)?;
    a.mov(dword_ptr(rbx), eax)?;
    // Reads are never taken.
    a.mov(eax, dword_ptr(rbx))?;
    // Any size at the doorbell; a write next to it is not taken.
    a.mov(rbx, DOORBELL)?;
    a.mov(byte_ptr(rbx), 1)?;
    a.mov(rax, 0x0102_0304_0506_0708u64)?;
    a.mov(qword_ptr(rbx), rax)?;
    a.mov(byte_ptr(rbx + 1), 2)?;
    // Any size at the port; another port is not taken.
    a.mov(dx, PORT as u32)?;
    a.mov(eax, 0x4433_2211)?;
    a.out(dx, al)?;
    a.out(dx, ax)?;
    a.out(dx, eax)?;
    a.out(0x80, al)?;
    Ok(())
}

/// What the handler sees of [`emit_writes`] when no ioeventfd takes them.
fn all_writes() -> Vec<Access> {
    vec![
        Access::MmioWrite {
            gpa: NOTIFY,
            data: NOTIFY_VALUE.to_le_bytes().to_vec(),
        },
        Access::MmioWrite {
            gpa: NOTIFY,
            data: vec![0xad, 0xde, 0, 0],
        },
        Access::MmioWrite {
            gpa: NOTIFY,
            data: vec![0x78, 0x56],
        },
        Access::MmioWrite {
            gpa: NOTIFY,
            data: NOTIFY_VALUE.to_le_bytes().to_vec(),
        },
        Access::MmioRead {
            gpa: NOTIFY,
            size: 4,
        },
        Access::MmioWrite {
            gpa: DOORBELL,
            data: vec![1],
        },
        Access::MmioWrite {
            gpa: DOORBELL,
            data: vec![8, 7, 6, 5, 4, 3, 2, 1],
        },
        Access::MmioWrite {
            gpa: DOORBELL + 1,
            data: vec![2],
        },
        Access::PioWrite {
            port: PORT,
            data: vec![0x11],
        },
        Access::PioWrite {
            port: PORT,
            data: vec![0x11, 0x22],
        },
        Access::PioWrite {
            port: PORT,
            data: vec![0x11, 0x22, 0x33, 0x44],
        },
        Access::PioWrite {
            port: 0x80,
            data: vec![0x11],
        },
    ]
}

/// Ioeventfds take the guest writes they match (a 4-byte write of the
/// datamatch value; any write at an address without datamatch, MMIO or
/// port) and count them; every other access reaches the handler. Once
/// removed, they take nothing.
pub fn ioeventfd_takes_matching_writes(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let mut a = guests::assembler().unwrap();
    let mut wait = a.create_label();
    emit_writes(&mut a).unwrap();
    // Tell the test, and wait for it to remove the ioeventfds.
    a.mov(eax, 1).unwrap();
    a.out(guests::DEBUG_EXIT as u32, eax).unwrap();
    a.set_label(&mut wait).unwrap();
    a.pause().unwrap();
    a.mov(rax, SCRATCH).unwrap();
    a.cmp(qword_ptr(rax), 1).unwrap();
    a.jne(wait).unwrap();
    emit_writes(&mut a).unwrap();
    a.mov(eax, EXIT_OK).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    let p = guests::finish(a).unwrap();
    t.load(&p);

    let (notify, doorbell, port, other) = (eventfd(), eventfd(), eventfd(), eventfd());
    let vm = &t.vm;
    let value = Some(u64::from(NOTIFY_VALUE));
    vm.register_ioevent(&notify, IoEventAddress::Mmio(NOTIFY), value)
        .unwrap();
    vm.register_ioevent(&doorbell, IoEventAddress::Mmio(DOORBELL), None)
        .unwrap();
    vm.register_ioevent(&port, IoEventAddress::Pio(PORT), None)
        .unwrap();
    // The same value twice, or an address that takes everything, collide.
    assert!(vm
        .register_ioevent(&other, IoEventAddress::Mmio(NOTIFY), value)
        .is_err());
    assert!(vm
        .register_ioevent(&other, IoEventAddress::Mmio(NOTIFY), None)
        .is_err());
    assert!(vm
        .register_ioevent(&other, IoEventAddress::Pio(PORT), Some(1))
        .is_err());

    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(io.exit_value(), Some(1));
    let expected: Vec<Access> = all_writes()
        .into_iter()
        .enumerate()
        .filter(|(i, _)| ![0, 3, 5, 6, 8, 9, 10].contains(i))
        .map(|(_, access)| access)
        .collect();
    assert_eq!(io.accesses(), expected, "what the ioeventfds left");
    assert_eq!(take(&notify), 2, "datamatch writes");
    assert_eq!(take(&doorbell), 2, "MMIO writes of any size");
    assert_eq!(take(&port), 3, "port writes of any size");

    // Removing needs the registration's exact datamatch.
    assert!(vm
        .unregister_ioevent(&notify, IoEventAddress::Mmio(NOTIFY), None)
        .is_err());
    assert!(vm
        .unregister_ioevent(&notify, IoEventAddress::Mmio(NOTIFY), Some(1))
        .is_err());
    vm.unregister_ioevent(&notify, IoEventAddress::Mmio(NOTIFY), value)
        .unwrap();
    vm.unregister_ioevent(&doorbell, IoEventAddress::Mmio(DOORBELL), None)
        .unwrap();
    vm.unregister_ioevent(&port, IoEventAddress::Pio(PORT), None)
        .unwrap();
    assert!(vm
        .unregister_ioevent(&port, IoEventAddress::Pio(PORT), None)
        .is_err());

    t.write_u64(SCRATCH, 1);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    assert_eq!(
        io.accesses(),
        all_writes(),
        "everything reaches the handler"
    );
    assert_eq!(
        (take(&notify), take(&doorbell), take(&port)),
        (0, 0, 0),
        "removed ioeventfds count nothing"
    );
}

/// Emits: wait with interrupts on until `vector` has been counted `n`
/// times. Clobbers RAX.
fn emit_wait_for_count(a: &mut CodeAssembler, vector: u8, n: u32) -> guests::Result<()> {
    let mut again = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut again)?;
    a.mov(rax, COUNTS + 8 * u64::from(vector))?;
    a.cmp(qword_ptr(rax), n as i32)?;
    a.jae(done)?;
    // STI's shadow covers the HLT: no interrupt slips in between.
    a.sti()?;
    a.hlt()?;
    a.cli()?;
    a.jmp(again)?;
    a.set_label(&mut done)?;
    a.nop()?;
    Ok(())
}

/// Emits: store `step` at SCRATCH, then wait for `vector`'s count to reach
/// `n`. Clobbers RAX.
fn emit_step(a: &mut CodeAssembler, step: u32, vector: u8, n: u32) -> guests::Result<()> {
    a.mov(rax, SCRATCH)?;
    a.mov(qword_ptr(rax), step as i32)?;
    emit_wait_for_count(a, vector, n)
}

/// Writes to an irqfd on GSI 5 pulse the line: each one is an edge the
/// IOAPIC's redirection entry (edge-triggered) turns into an interrupt.
pub fn irqfd_pulses_an_ioapic_pin(hv: &dyn Hypervisor) {
    const VECTOR: u8 = 0x45;
    let t = TestVm::new(hv, 1);
    let mut a = guests::assembler().unwrap();
    let mut main = a.create_label();
    let mut handler = a.create_label();
    a.jmp(main).unwrap();
    emit_handler(&mut a, &mut handler, VECTOR).unwrap();
    a.set_label(&mut main).unwrap();
    emit_gate(&mut a, VECTOR, handler).unwrap();
    emit_lidt(&mut a).unwrap();
    emit_lapic_enable(&mut a).unwrap();
    // Mask the PICs: GSI 5 also reaches PIC input 5.
    a.mov(al, 0xff).unwrap();
    a.out(0x21, al).unwrap();
    a.out(0xa1, al).unwrap();
    // Pin 5: vector 0x45, fixed, physical, edge, destination APIC 0.
    a.mov(rbx, IOAPIC).unwrap();
    a.mov(dword_ptr(rbx), 0x10 + 2 * 5 + 1).unwrap();
    a.mov(dword_ptr(rbx + 0x10), 0).unwrap();
    a.mov(dword_ptr(rbx), 0x10 + 2 * 5).unwrap();
    a.mov(dword_ptr(rbx + 0x10), u32::from(VECTOR)).unwrap();
    emit_step(&mut a, 1, VECTOR, 1).unwrap();
    emit_step(&mut a, 2, VECTOR, 2).unwrap();
    a.mov(eax, EXIT_OK).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    let p = guests::finish(a).unwrap();
    t.load(&p);
    // An MSI route makes the kvm backend replace KVM's routing table: the
    // irqchip routes it re-sends must keep GSI 5 on IOAPIC pin 5.
    t.vm.set_msi_route(
        40,
        MsiMessage {
            address: LAPIC,
            data: 0x60,
        },
    )
    .unwrap();
    let event = eventfd();
    t.vm.register_irqfd(&event, 5).unwrap();
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    std::thread::scope(|s| {
        let runner = s.spawn(|| run_guest(&mut *vcpu, &io));
        for step in 1..=2 {
            wait_for_guest(&t, step);
            // Let the guest reach HLT: the interrupt must wake it.
            std::thread::sleep(Duration::from_millis(20));
            event.write(1).unwrap();
        }
        assert_eq!(runner.join().unwrap(), None);
    });
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    assert_eq!(t.read_u64(COUNTS + 8 * u64::from(VECTOR)), 2);
    t.vm.unregister_irqfd(&event, 5).unwrap();
    assert!(t.vm.unregister_irqfd(&event, 5).is_err());
}

/// An irqfd on an MSI GSI sends the GSI's route; changing the route while
/// the irqfd stays registered (a guest rewriting an MSI-X entry) changes
/// the vector of the next interrupt.
pub fn irqfd_follows_msi_routes(hv: &dyn Hypervisor) {
    const GSI: u32 = 24;
    const FIRST: u8 = 0x51;
    const SECOND: u8 = 0x52;
    let msi = |vector: u8| MsiMessage {
        // Destination APIC 0, physical; fixed, edge.
        address: LAPIC,
        data: vector.into(),
    };
    let t = TestVm::new(hv, 1);
    let mut a = guests::assembler().unwrap();
    let mut main = a.create_label();
    let mut first = a.create_label();
    let mut second = a.create_label();
    a.jmp(main).unwrap();
    emit_handler(&mut a, &mut first, FIRST).unwrap();
    emit_handler(&mut a, &mut second, SECOND).unwrap();
    a.set_label(&mut main).unwrap();
    emit_gate(&mut a, FIRST, first).unwrap();
    emit_gate(&mut a, SECOND, second).unwrap();
    emit_lidt(&mut a).unwrap();
    emit_lapic_enable(&mut a).unwrap();
    emit_step(&mut a, 1, FIRST, 1).unwrap();
    emit_step(&mut a, 2, SECOND, 1).unwrap();
    a.mov(eax, EXIT_OK).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    let p = guests::finish(a).unwrap();
    t.load(&p);

    assert!(t.vm.set_msi_route(5, msi(FIRST)).is_err(), "an IOAPIC GSI");
    // Another irqfd first, so that the one under test is added (and this
    // one removed) while the backend already serves irqfds.
    let bystander = eventfd();
    t.vm.register_irqfd(&bystander, GSI + 1).unwrap();
    let event = eventfd();
    t.vm.set_msi_route(GSI, msi(FIRST)).unwrap();
    t.vm.register_irqfd(&event, GSI).unwrap();
    t.vm.unregister_irqfd(&bystander, GSI + 1).unwrap();
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    std::thread::scope(|s| {
        let runner = s.spawn(|| run_guest(&mut *vcpu, &io));
        wait_for_guest(&t, 1);
        std::thread::sleep(Duration::from_millis(20));
        event.write(1).unwrap();
        wait_for_guest(&t, 2);
        t.vm.set_msi_route(GSI, msi(SECOND)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        event.write(1).unwrap();
        assert_eq!(runner.join().unwrap(), None);
    });
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    assert_eq!(t.read_u64(COUNTS + 8 * u64::from(FIRST)), 1);
    assert_eq!(t.read_u64(COUNTS + 8 * u64::from(SECOND)), 1);
    t.vm.unregister_irqfd(&event, GSI).unwrap();
}
