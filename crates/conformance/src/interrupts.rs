//! Conformance cases for the interrupt controllers: the LAPIC timer, an
//! IOAPIC-routed line, IPIs and the INIT/SIPI start of an application
//! processor. They run on every accelerator's irqchip (KVM's in-kernel one
//! and emu's), so they must see the same behaviour.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hv::Hypervisor;
use iced_x86::code_asm::*;

use crate::harness::*;

const EXIT_OK: u32 = 0x600d;
pub(crate) const LAPIC: u64 = 0xfee0_0000;
pub(crate) const IOAPIC: u64 = 0xfec0_0000;
/// The guest's IDT (256 gates of 16 bytes).
const IDT: u64 = SCRATCH + 0x2000;
/// Interrupt counters the handlers bump, one qword per vector.
pub(crate) const COUNTS: u64 = SCRATCH + 0x4000;

/// Emits a 64-bit interrupt gate for `vector` → `handler`, and LIDT.
/// Clobbers RAX, RBX.
pub(crate) fn emit_gate(
    a: &mut CodeAssembler,
    vector: u8,
    handler: CodeLabel,
) -> guests::Result<()> {
    let gate = IDT + 16 * u64::from(vector);
    a.lea(rax, ptr(handler))?;
    a.mov(rbx, gate)?;
    // Offset 15:0, selector 0x10.
    a.mov(word_ptr(rbx), ax)?;
    a.mov(word_ptr(rbx + 2), 0x10)?;
    // IST 0, type 0xE (interrupt gate), present.
    a.mov(word_ptr(rbx + 4), 0x8e00)?;
    a.shr(rax, 16)?;
    a.mov(word_ptr(rbx + 6), ax)?;
    a.shr(rax, 16)?;
    a.mov(dword_ptr(rbx + 8), eax)?;
    a.mov(dword_ptr(rbx + 12), 0)?;
    Ok(())
}

/// Emits LIDT of the IDT (limit covering all 256 gates), using a scratch
/// descriptor in memory. Clobbers RAX.
pub(crate) fn emit_lidt(a: &mut CodeAssembler) -> guests::Result<()> {
    let desc = SCRATCH + 0x1ff0;
    a.mov(rax, desc)?;
    a.mov(word_ptr(rax), 0xfff)?;
    a.mov(rbx, IDT)?;
    a.mov(qword_ptr(rax + 2), rbx)?;
    a.lidt(ptr(rax))?;
    Ok(())
}

/// Emits a handler that counts its vector and EOIs the LAPIC.
pub(crate) fn emit_handler(
    a: &mut CodeAssembler,
    label: &mut CodeLabel,
    vector: u8,
) -> guests::Result<()> {
    a.set_label(label)?;
    a.push(rax)?;
    a.mov(rax, COUNTS + 8 * u64::from(vector))?;
    a.lock().inc(qword_ptr(rax))?;
    a.mov(rax, LAPIC + 0xb0)?;
    a.mov(dword_ptr(rax), 0)?;
    a.pop(rax)?;
    a.iretq()?;
    Ok(())
}

/// Emits: enable the LAPIC (SVR = 0x1ff). Clobbers RAX.
pub(crate) fn emit_lapic_enable(a: &mut CodeAssembler) -> guests::Result<()> {
    a.mov(rax, LAPIC + 0xf0)?;
    a.mov(dword_ptr(rax), 0x1ff)?;
    Ok(())
}

/// Emits: wait with interrupts on until the counter of `vector` is nonzero.
fn emit_wait_for(a: &mut CodeAssembler, vector: u8) -> guests::Result<()> {
    let mut again = a.create_label();
    let mut done = a.create_label();
    a.set_label(&mut again)?;
    a.mov(rax, COUNTS + 8 * u64::from(vector))?;
    a.cmp(qword_ptr(rax), 0)?;
    a.jne(done)?;
    // STI's shadow covers the HLT: no interrupt slips in between.
    a.sti()?;
    a.hlt()?;
    a.cli()?;
    a.jmp(again)?;
    a.set_label(&mut done)?;
    a.cli()?;
    Ok(())
}

/// The LAPIC timer in one-shot mode wakes a halted vCPU with its vector.
pub fn lapic_timer_wakes_hlt(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let mut a = guests::assembler().unwrap();
    let mut main = a.create_label();
    let mut handler = a.create_label();
    a.jmp(main).unwrap();
    emit_handler(&mut a, &mut handler, 0x40).unwrap();
    a.set_label(&mut main).unwrap();
    emit_gate(&mut a, 0x40, handler).unwrap();
    emit_lidt(&mut a).unwrap();
    emit_lapic_enable(&mut a).unwrap();
    a.mov(rbx, LAPIC).unwrap();
    // Divide by 1, one-shot LVT with vector 0x40, 2 ms at the 1 GHz bus.
    a.mov(dword_ptr(rbx + 0x3e0), 0xb).unwrap();
    a.mov(dword_ptr(rbx + 0x320), 0x40).unwrap();
    a.mov(dword_ptr(rbx + 0x380), 2_000_000).unwrap();
    emit_wait_for(&mut a, 0x40).unwrap();
    a.mov(eax, EXIT_OK).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    let p = guests::finish(a).unwrap();
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    assert_eq!(t.read_u64(COUNTS + 8 * 0x40), 1, "one timer interrupt");
}

/// A GSI raised by the VMM reaches the guest through the IOAPIC's
/// redirection table.
pub fn ioapic_routes_a_line(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let mut a = guests::assembler().unwrap();
    let mut main = a.create_label();
    let mut handler = a.create_label();
    a.jmp(main).unwrap();
    emit_handler(&mut a, &mut handler, 0x45).unwrap();
    a.set_label(&mut main).unwrap();
    emit_gate(&mut a, 0x45, handler).unwrap();
    emit_lidt(&mut a).unwrap();
    emit_lapic_enable(&mut a).unwrap();
    // Mask the PICs, as an OS that uses the IOAPIC does: the line also
    // reaches PIC input 5, which the BSP's LINT0 (virtual wire) passes on.
    a.mov(al, 0xff).unwrap();
    a.out(0x21, al).unwrap();
    a.out(0xa1, al).unwrap();
    // Redirection entry of pin 5: vector 0x45, fixed, physical, edge,
    // destination APIC 0 (high dword first, then low to unmask).
    a.mov(rbx, IOAPIC).unwrap();
    a.mov(dword_ptr(rbx), 0x10 + 2 * 5 + 1).unwrap();
    a.mov(dword_ptr(rbx + 0x10), 0).unwrap();
    a.mov(dword_ptr(rbx), 0x10 + 2 * 5).unwrap();
    a.mov(dword_ptr(rbx + 0x10), 0x45).unwrap();
    // Tell the test the line may be raised.
    a.mov(rax, SCRATCH).unwrap();
    a.mov(qword_ptr(rax), 1).unwrap();
    emit_wait_for(&mut a, 0x45).unwrap();
    a.mov(eax, EXIT_OK).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    let p = guests::finish(a).unwrap();
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    std::thread::scope(|s| {
        let runner = s.spawn(|| run_guest(&mut *vcpu, &io));
        let mut waited = Duration::ZERO;
        while t.read_u64(SCRATCH) != 1 && waited < TIMEOUT {
            std::thread::sleep(Duration::from_millis(5));
            waited += Duration::from_millis(5);
        }
        std::thread::sleep(Duration::from_millis(50));
        t.vm.set_irq_line(5, true).unwrap();
        t.vm.set_irq_line(5, false).unwrap();
        assert_eq!(runner.join().unwrap(), None);
    });
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    assert_eq!(t.read_u64(COUNTS + 8 * 0x45), 1, "one interrupt on pin 5");
}

/// vCPU 0 sends a fixed IPI to vCPU 1, which waits for it in HLT.
pub fn ipi_reaches_another_vcpu(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 2);
    let mut a = guests::assembler().unwrap();
    let mut main = a.create_label();
    let mut handler = a.create_label();
    let mut sender = a.create_label();
    let mut spin = a.create_label();
    a.jmp(main).unwrap();
    emit_handler(&mut a, &mut handler, 0x50).unwrap();
    a.set_label(&mut main).unwrap();
    a.test(rdi, rdi).unwrap();
    a.jz(sender).unwrap();
    // vCPU 1: gate, LAPIC on, "ready", wait for the IPI.
    emit_gate(&mut a, 0x50, handler).unwrap();
    emit_lidt(&mut a).unwrap();
    emit_lapic_enable(&mut a).unwrap();
    a.mov(rax, SCRATCH).unwrap();
    a.mov(qword_ptr(rax), 1).unwrap();
    emit_wait_for(&mut a, 0x50).unwrap();
    a.mov(eax, EXIT_OK).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    // vCPU 0: wait for "ready", then ICR: destination APIC 1, vector 0x50.
    a.set_label(&mut sender).unwrap();
    emit_lapic_enable(&mut a).unwrap();
    a.set_label(&mut spin).unwrap();
    a.pause().unwrap();
    a.mov(rax, SCRATCH).unwrap();
    a.cmp(qword_ptr(rax), 1).unwrap();
    a.jne(spin).unwrap();
    a.mov(rbx, LAPIC).unwrap();
    a.mov(dword_ptr(rbx + 0x310), 1 << 24).unwrap();
    a.mov(dword_ptr(rbx + 0x300), 0x4050).unwrap();
    a.mov(eax, EXIT_OK + 1).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    let p = guests::finish(a).unwrap();
    t.load(&p);
    let exits = std::thread::scope(|s| {
        let runners: Vec<_> = (0..2)
            .map(|id| {
                let mut vcpu = t.vcpu(id, p.load_addr);
                s.spawn(move || {
                    let io = TestIo::new(vcpu.kicker());
                    let exit = run_guest(&mut *vcpu, &io);
                    (exit, io.exit_value())
                })
            })
            .collect();
        runners
            .into_iter()
            .map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert_eq!(
        exits,
        vec![(None, Some(EXIT_OK + 1)), (None, Some(EXIT_OK))]
    );
    assert_eq!(t.read_u64(COUNTS + 8 * 0x50), 1);
}

/// INIT then SIPI start an application processor in real mode at the
/// SIPI vector's page, as Linux starts its secondary CPUs.
pub fn init_sipi_starts_an_ap(hv: &dyn Hypervisor) {
    const TRAMPOLINE: u64 = 0x8000;
    const MARK: u64 = 0x7f00;
    let t = TestVm::new(hv, 2);
    // The AP's real-mode code: write a mark, then tell the test.
    let mut r = CodeAssembler::new(16).unwrap();
    r.xor(ax, ax).unwrap();
    r.mov(ds, ax).unwrap();
    r.mov(word_ptr(MARK as u32), 0x5a5a).unwrap();
    r.mov(ax, cs).unwrap();
    r.mov(word_ptr(MARK as u32 + 2), ax).unwrap();
    r.mov(eax, EXIT_OK + 2).unwrap();
    r.out(guests::DEBUG_EXIT as u32, eax).unwrap();
    let mut again = r.create_label();
    r.cli().unwrap();
    r.set_label(&mut again).unwrap();
    r.hlt().unwrap();
    r.jmp(again).unwrap();
    let trampoline = r.assemble(TRAMPOLINE).unwrap();
    use vm_memory::Bytes;
    t.mem
        .write_slice(&trampoline, vm_memory::GuestAddress(TRAMPOLINE))
        .unwrap();
    // The BSP: INIT (assert), then SIPI with vector 0x08, twice as the
    // MP specification says.
    let bsp = {
        let mut a = guests::assembler().unwrap();
        emit_lapic_enable(&mut a).unwrap();
        a.mov(rbx, LAPIC).unwrap();
        a.mov(dword_ptr(rbx + 0x310), 1 << 24).unwrap();
        a.mov(dword_ptr(rbx + 0x300), 0x4500).unwrap();
        for _ in 0..2 {
            a.mov(dword_ptr(rbx + 0x310), 1 << 24).unwrap();
            a.mov(dword_ptr(rbx + 0x300), 0x4600 | (TRAMPOLINE >> 12) as u32)
                .unwrap();
        }
        a.mov(eax, EXIT_OK).unwrap();
        guests::emit_debug_exit_eax(&mut a).unwrap();
        guests::finish(a).unwrap()
    };
    t.load(&bsp);
    t.write_u64(MARK, 0);
    let mut bsp_vcpu = t.vcpu(0, bsp.load_addr);
    // The AP keeps its reset state: waiting for INIT/SIPI.
    let mut ap = t.vm.create_vcpu(1).unwrap();
    ap.set_cpuid(&arch::cpuid::template(
        &t.vm.supported_cpuid().unwrap(),
        1,
        2,
    ))
    .unwrap();
    let ap_done = Arc::new(AtomicBool::new(false));
    std::thread::scope(|s| {
        let done = ap_done.clone();
        let ap_runner = s.spawn(move || {
            let io = TestIo::new(ap.kicker());
            let exit = run_guest(&mut *ap, &io);
            done.store(true, Ordering::SeqCst);
            (exit, io.exit_value())
        });
        let io = TestIo::new(bsp_vcpu.kicker());
        assert_eq!(run_guest(&mut *bsp_vcpu, &io), None);
        assert_eq!(io.exit_value(), Some(EXIT_OK));
        assert_eq!(ap_runner.join().unwrap(), (None, Some(EXIT_OK + 2)));
    });
    assert!(ap_done.load(Ordering::SeqCst));
    let mark = t.read_u64(MARK);
    assert_eq!(mark & 0xffff, 0x5a5a, "the AP ran its trampoline");
    assert_eq!((mark >> 16) & 0xffff, TRAMPOLINE >> 4, "CS = vector << 8");
}
