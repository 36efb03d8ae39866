//! Hostile guests (issue 13, point 4): programs that make the VMM work as
//! hard as a guest can, to measure what they cost the host. Each runs on
//! vCPU 0 (the others halt) until the VMM is killed:
//!
//! - [`timer_storm`]: the fastest rate of one timer (LAPIC periodic,
//!   LAPIC one-shot re-armed from its own interrupt, TSC deadline in the
//!   past, PIT, RTC) with the guest halted between interrupts;
//! - [`device_flood`]: QueueNotify of a ready virtio-mmio queue with
//!   nothing in it, COM1 without waiting for the transmitter, the i8042,
//!   the POST and Bochs debug ports, the CMOS and port 0x61, in a loop.
//!
//! The interrupt handler prints a `.` on COM1 every [`IRQS_PER_DOT`]
//! interrupts (without waiting for the transmitter): the host counts the
//! interrupts the guest took from its console output.

use super::virtio::Slot;
use super::*;
use crate::{CODE_SELECTOR, IOAPIC, LAPIC, LAPIC_EOI, LAPIC_SVR};

/// The handler prints one `.` per this many interrupts.
pub const IRQS_PER_DOT: u64 = 1024;

/// Which timer [`timer_storm`] programs, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timer {
    /// Periodic, initial count 1, divide by 1 (10 ns at the 100 MHz bus).
    LapicPeriodic,
    /// One-shot, initial count 1, written again by each interrupt.
    LapicOneShotRearmed,
    /// TSC-deadline mode, a deadline of 1 (long past), set again by each
    /// interrupt.
    TscDeadlinePast,
    /// Counter 0 in mode 2 (rate generator) with count 2 (1.7 µs),
    /// through IOAPIC pin 2 (or 0).
    Pit,
    /// Register A rate 3 (8192 Hz, the fastest), periodic interrupt
    /// enabled, through IOAPIC pin 8.
    Rtc,
}

impl Timer {
    pub const ALL: [Timer; 5] = [
        Timer::LapicPeriodic,
        Timer::LapicOneShotRearmed,
        Timer::TscDeadlinePast,
        Timer::Pit,
        Timer::Rtc,
    ];
}

const LAPIC_LVT_TIMER: u64 = LAPIC + 0x320;
const LAPIC_TIMER_INITIAL: u64 = LAPIC + 0x380;
const LAPIC_TIMER_DIVIDE: u64 = LAPIC + 0x3e0;
const IA32_TSC_DEADLINE: u32 = 0x6e0;
const VECTOR: u32 = 0x40;
const IDT: u64 = 0x30_0000;
const IDTR: u64 = IDT + 0x1000;
/// Interrupts taken (u64).
const IRQ_COUNT: u64 = IDTR + 0x10;
/// The virtqueue of [`device_flood`]: zeroed rings in RAM.
const DESC_TABLE: u64 = 0x31_0000;
const AVAIL_RING: u64 = 0x31_1000;
const USED_RING: u64 = 0x31_2000;

/// Emits: vCPU 0 goes on at the returned label's place; the others halt.
fn only_vcpu0(a: &mut CodeAssembler) -> Result<()> {
    let mut bsp = a.create_label();
    a.test(rdi, rdi)?;
    a.jz(bsp)?;
    emit_halt_forever(a)?;
    a.set_label(&mut bsp)?;
    a.nop()?;
    Ok(())
}

/// Emits the handler every vector goes to: counts, prints a dot every
/// [`IRQS_PER_DOT`], runs `rearm` (may clobber RAX, RCX, RDX),
/// acknowledges the RTC (register C) and EOIs the LAPIC.
fn emit_handler(
    a: &mut CodeAssembler,
    handler: &mut CodeLabel,
    rearm: impl FnOnce(&mut CodeAssembler) -> Result<()>,
) -> Result<()> {
    let mut no_dot = a.create_label();
    a.set_label(handler)?;
    a.push(rax)?;
    a.push(rcx)?;
    a.push(rdx)?;
    a.mov(rax, IRQ_COUNT)?;
    a.inc(qword_ptr(rax))?;
    a.mov(rcx, qword_ptr(rax))?;
    a.test(ecx, (IRQS_PER_DOT - 1) as u32)?;
    a.jnz(no_dot)?;
    a.mov(dx, COM1 as u32)?;
    a.mov(al, b'.' as u32)?;
    a.out(dx, al)?;
    a.set_label(&mut no_dot)?;
    rearm(a)?;
    a.mov(al, 0x0c)?;
    a.out(0x70, al)?;
    a.in_(al, 0x71)?;
    a.mov(rax, LAPIC_EOI)?;
    a.mov(dword_ptr(rax), 0)?;
    a.pop(rdx)?;
    a.pop(rcx)?;
    a.pop(rax)?;
    a.iretq()?;
    Ok(())
}

/// Emits: all 256 IDT gates to `handler`, LIDT, the LAPIC on, both PICs
/// masked.
fn emit_interrupts(a: &mut CodeAssembler, handler: CodeLabel) -> Result<()> {
    let mut fill = a.create_label();
    a.lea(rax, ptr(handler))?;
    a.mov(rbx, IDT)?;
    a.mov(ecx, 256)?;
    a.set_label(&mut fill)?;
    a.mov(word_ptr(rbx), ax)?;
    a.mov(word_ptr(rbx + 2), CODE_SELECTOR)?;
    a.mov(word_ptr(rbx + 4), 0x8e00)?;
    a.mov(rdx, rax)?;
    a.shr(rdx, 16)?;
    a.mov(word_ptr(rbx + 6), dx)?;
    a.shr(rdx, 16)?;
    a.mov(dword_ptr(rbx + 8), edx)?;
    a.mov(dword_ptr(rbx + 12), 0)?;
    a.add(rbx, 16)?;
    a.dec(ecx)?;
    a.jnz(fill)?;
    a.mov(rax, IDTR)?;
    a.mov(word_ptr(rax), 0xfff)?;
    a.mov(rbx, IDT)?;
    a.mov(qword_ptr(rax + 2), rbx)?;
    a.lidt(ptr(rax))?;
    a.mov(rax, LAPIC_SVR)?;
    a.mov(dword_ptr(rax), 0x1ff)?;
    a.mov(al, 0xff)?;
    a.out(0x21, al)?;
    a.out(0xa1, al)?;
    Ok(())
}

/// Emits: IOAPIC `pin` to [`VECTOR`], edge-triggered, to APIC ID 0.
fn emit_ioapic_route(a: &mut CodeAssembler, pin: u32) -> Result<()> {
    a.mov(rbx, IOAPIC)?;
    a.mov(dword_ptr(rbx), 0x10 + 2 * pin + 1)?;
    a.mov(dword_ptr(rbx + 0x10), 0)?;
    a.mov(dword_ptr(rbx), 0x10 + 2 * pin)?;
    a.mov(dword_ptr(rbx + 0x10), VECTOR)?;
    Ok(())
}

/// Emits: `[address] = value` (32 bits). Clobbers RAX.
fn emit_store(a: &mut CodeAssembler, address: u64, value: u32) -> Result<()> {
    a.mov(rax, address)?;
    a.mov(dword_ptr(rax), value)?;
    Ok(())
}

/// Emits: IA32_TSC_DEADLINE = 1. Clobbers RAX, RCX, RDX.
fn emit_deadline_past(a: &mut CodeAssembler) -> Result<()> {
    a.mov(ecx, IA32_TSC_DEADLINE)?;
    a.mov(eax, 1)?;
    a.xor(edx, edx)?;
    a.wrmsr()?;
    Ok(())
}

/// Programs `timer` at its fastest rate, then halts with interrupts on,
/// forever, taking each interrupt (see the module's text).
pub fn timer_storm(timer: Timer) -> Result<Program> {
    let mut a = assembler()?;
    let mut start = a.create_label();
    let mut handler = a.create_label();
    a.jmp(start)?;
    emit_handler(&mut a, &mut handler, |a| match timer {
        Timer::LapicOneShotRearmed => emit_store(a, LAPIC_TIMER_INITIAL, 1),
        Timer::TscDeadlinePast => emit_deadline_past(a),
        _ => Ok(()),
    })?;
    a.set_label(&mut start)?;
    only_vcpu0(&mut a)?;
    emit_interrupts(&mut a, handler)?;
    match timer {
        Timer::LapicPeriodic | Timer::LapicOneShotRearmed => {
            // Divide by 1; LVT bits 18:17 = 01 periodic, 00 one-shot.
            emit_store(&mut a, LAPIC_TIMER_DIVIDE, 0xb)?;
            let periodic = if timer == Timer::LapicPeriodic {
                1 << 17
            } else {
                0
            };
            emit_store(&mut a, LAPIC_LVT_TIMER, periodic | VECTOR)?;
            emit_store(&mut a, LAPIC_TIMER_INITIAL, 1)?;
        }
        Timer::TscDeadlinePast => {
            emit_store(&mut a, LAPIC_LVT_TIMER, 2 << 17 | VECTOR)?;
            emit_deadline_past(&mut a)?;
        }
        Timer::Pit => {
            // IRQ 0 is IOAPIC pin 2 (the ACPI override; emu and QEMU) or
            // pin 0 (KVM's default routing): both go to the handler.
            emit_ioapic_route(&mut a, 0)?;
            emit_ioapic_route(&mut a, 2)?;
            // Counter 0, LSB then MSB, mode 2, binary; count 2.
            a.mov(al, 0x34)?;
            a.out(0x43, al)?;
            a.mov(al, 2)?;
            a.out(0x40, al)?;
            a.xor(al, al)?;
            a.out(0x40, al)?;
        }
        Timer::Rtc => {
            emit_ioapic_route(&mut a, 8)?;
            // Register A: divider on (010), rate 3 (8192 Hz).
            a.mov(al, 0x0a)?;
            a.out(0x70, al)?;
            a.mov(al, 0x23)?;
            a.out(0x71, al)?;
            // Register B: periodic interrupt enable (bit 6).
            a.mov(al, 0x0b)?;
            a.out(0x70, al)?;
            a.in_(al, 0x71)?;
            a.or(al, 0x40)?;
            a.out(0x71, al)?;
            // Register C: clear what is pending.
            a.mov(al, 0x0c)?;
            a.out(0x70, al)?;
            a.in_(al, 0x71)?;
        }
    }
    let mut idle = a.create_label();
    a.set_label(&mut idle)?;
    a.sti()?;
    a.hlt()?;
    a.jmp(idle)?;
    finish(a)
}

/// Halts forever with interrupts off and no timer: what the others are
/// measured against.
pub fn idle() -> Result<Program> {
    let mut a = assembler()?;
    emit_halt_forever(&mut a)?;
    finish(a)
}

/// Readies queue 0 of the virtio-mmio device at `slot` (empty rings in
/// RAM, DRIVER_OK), then loops forever over: QueueNotify, a byte to COM1
/// without waiting, the i8042 (status, "read command byte", data), the
/// POST port 0x80 and the Bochs debug port 0xe9, CMOS register C and port
/// 0x61.
pub fn device_flood(slot: Slot) -> Result<Program> {
    use super::virtio::reg;
    const ACKNOWLEDGE: u32 = 1;
    const DRIVER: u32 = 2;
    const DRIVER_OK: u32 = 4;
    const FEATURES_OK: u32 = 8;
    let mut a = assembler()?;
    only_vcpu0(&mut a)?;
    a.mov(r15, slot.base)?;
    let write =
        |a: &mut CodeAssembler, offset: i32, value: u32| a.mov(dword_ptr(r15 + offset), value);
    write(&mut a, reg::STATUS, 0)?;
    write(&mut a, reg::STATUS, ACKNOWLEDGE)?;
    write(&mut a, reg::STATUS, ACKNOWLEDGE | DRIVER)?;
    write(&mut a, reg::DRIVER_FEATURES_SEL, 1)?;
    write(&mut a, reg::DRIVER_FEATURES, 1)?;
    write(&mut a, reg::STATUS, ACKNOWLEDGE | DRIVER | FEATURES_OK)?;
    write(&mut a, reg::QUEUE_SEL, 0)?;
    write(&mut a, reg::QUEUE_NUM, 8)?;
    for (low, high, address) in [
        (reg::QUEUE_DESC_LOW, reg::QUEUE_DESC_HIGH, DESC_TABLE),
        (reg::QUEUE_DRIVER_LOW, reg::QUEUE_DRIVER_HIGH, AVAIL_RING),
        (reg::QUEUE_DEVICE_LOW, reg::QUEUE_DEVICE_HIGH, USED_RING),
    ] {
        write(&mut a, low, address as u32)?;
        write(&mut a, high, 0)?;
    }
    write(&mut a, reg::QUEUE_READY, 1)?;
    write(
        &mut a,
        reg::STATUS,
        ACKNOWLEDGE | DRIVER | FEATURES_OK | DRIVER_OK,
    )?;
    let mut again = a.create_label();
    a.set_label(&mut again)?;
    write(&mut a, reg::QUEUE_NOTIFY, 0)?;
    a.mov(dx, COM1 as u32)?;
    a.mov(al, b'x' as u32)?;
    a.out(dx, al)?;
    a.in_(al, 0x64)?;
    a.mov(al, 0x20)?;
    a.out(0x64, al)?;
    a.in_(al, 0x60)?;
    a.out(0x80, al)?;
    a.out(0xe9, al)?;
    a.mov(al, 0x0c)?;
    a.out(0x70, al)?;
    a.in_(al, 0x71)?;
    a.in_(al, 0x61)?;
    a.jmp(again)?;
    finish(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_guests_assemble() {
        for timer in Timer::ALL {
            assert!(!timer_storm(timer).unwrap().code.is_empty(), "{timer:?}");
        }
        assert!(!idle().unwrap().code.is_empty());
        let flood = device_flood(super::super::virtio::FIRST_SLOT).unwrap();
        assert_eq!(flood.load_addr, LOAD_ADDR);
    }
}
