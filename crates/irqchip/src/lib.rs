//! Interrupt controllers and timers of a PC, as pure register-level state
//! machines: the local APIC ([`lapic`]), the I/O APIC ([`ioapic`]), the
//! i8259A PIC pair ([`pic`]), the i8254 PIT ([`pit`]) and the MC146818 CMOS
//! RTC ([`rtc`]).
//!
//! These are the models the emu accelerator runs "in kernel" (KVM's
//! `lapic.c`, `ioapic.c`, `i8259.c`, `i8254.c`), and the VMM can run in
//! split-irqchip mode on kvm. The rules they follow:
//!
//! - **No threads, no file descriptors, no clocks.** Time is an explicit
//!   `now_ns: u64` argument: monotonic nanoseconds on the VM's clock (any
//!   origin, usually VM creation). The models never read the host clock, so
//!   they are deterministic and testable; the caller asks each timer when it
//!   next needs attention (`next_deadline_ns` / `next_irq_ns`) and calls it
//!   back then (`tick` / `poll`).
//! - **No internal locking.** The accelerator wraps each device in its own
//!   mutex.
//! - **No routing.** A device reports what it wants to happen as a value
//!   ([`lapic::LapicAction`], [`Delivery`], an IRQ count or level) and the
//!   caller routes it: IOAPIC and MSI messages to the local APICs whose
//!   [`lapic::Lapic::matches_destination`] is true, LAPIC EOIs of
//!   level-triggered vectors back to [`ioapic::IoApic::eoi`], PIT and RTC
//!   interrupts to PIC and IOAPIC pins.
//! - **Snapshots.** Every device has `state()` / `from_state()` with a plain
//!   state struct (`Clone, Debug, PartialEq, Eq`) holding everything,
//!   including armed timers.
//! - **The guest cannot panic the host.** Any offset, access size, port or
//!   value a guest can produce is either handled or ignored.
#![forbid(unsafe_code)]

pub mod ioapic;
pub mod lapic;
pub mod pic;
pub mod pit;
pub mod rtc;

pub use ioapic::{decode_msi, is_msi_address, Delivery, IoApic, IoApicState};
pub use lapic::{Ipi, Lapic, LapicAction, LapicError, LapicState};
pub use pic::{Pic, PicState};
pub use pit::{Pit, PitState};
pub use rtc::{Rtc, RtcState};

/// The delivery mode of an interrupt message: ICR bits 10:8, IOAPIC
/// redirection entry bits 10:8, MSI data bits 10:8, LVT bits 10:8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum DeliveryMode {
    /// 000: the vector, to every destination.
    #[default]
    Fixed,
    /// 001: the vector, to the lowest-priority destination.
    LowestPriority,
    /// 010: a system-management interrupt.
    Smi,
    /// 011: reserved; routers should drop the message.
    Reserved,
    /// 100: a non-maskable interrupt (the vector is ignored).
    Nmi,
    /// 101: INIT (or INIT level de-assert, see [`lapic::Ipi`]).
    Init,
    /// 110: start-up IPI; the vector is the start page (`vector << 12`).
    StartUp,
    /// 111: external interrupt: the vector comes from the i8259 PIC.
    ExtInt,
}

impl DeliveryMode {
    /// Decodes the three-bit field (higher bits are ignored).
    pub fn from_bits(bits: u32) -> DeliveryMode {
        match bits & 7 {
            0 => DeliveryMode::Fixed,
            1 => DeliveryMode::LowestPriority,
            2 => DeliveryMode::Smi,
            3 => DeliveryMode::Reserved,
            4 => DeliveryMode::Nmi,
            5 => DeliveryMode::Init,
            6 => DeliveryMode::StartUp,
            _ => DeliveryMode::ExtInt,
        }
    }

    /// The three-bit encoding.
    pub fn bits(self) -> u32 {
        match self {
            DeliveryMode::Fixed => 0,
            DeliveryMode::LowestPriority => 1,
            DeliveryMode::Smi => 2,
            DeliveryMode::Reserved => 3,
            DeliveryMode::Nmi => 4,
            DeliveryMode::Init => 5,
            DeliveryMode::StartUp => 6,
            DeliveryMode::ExtInt => 7,
        }
    }
}

/// `a * b / c` without intermediate overflow, rounded down and saturated
/// to `u64::MAX`; 0 when `c` is 0.
pub(crate) fn mul_div(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return 0;
    }
    let r = u128::from(a) * u128::from(b) / u128::from(c);
    u64::try_from(r).unwrap_or(u64::MAX)
}

/// `a * b / c` rounded up and saturated to `u64::MAX`; 0 when `c` is 0.
pub(crate) fn mul_div_ceil(a: u64, b: u64, c: u64) -> u64 {
    if c == 0 {
        return 0;
    }
    let r = (u128::from(a) * u128::from(b)).div_ceil(u128::from(c));
    u64::try_from(r).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_mode_round_trips() {
        for bits in 0..8 {
            assert_eq!(DeliveryMode::from_bits(bits).bits(), bits);
        }
        assert_eq!(DeliveryMode::from_bits(0x704), DeliveryMode::Nmi);
    }

    /// The routing the accelerator does, end to end: a level-triggered
    /// IOAPIC pin to two local APICs (logical flat destination), the EOI
    /// back to the IOAPIC and the re-delivery of a still-asserted pin.
    #[test]
    fn ioapic_to_lapic_level_round_trip() {
        let mut cpus = [
            Lapic::new(0, true, 1_000_000_000),
            Lapic::new(1, false, 1_000_000_000),
        ];
        for (i, cpu) in cpus.iter_mut().enumerate() {
            cpu.write(u64::from(lapic::reg::SVR), &0x1ffu32.to_le_bytes(), 0);
            let ldr = (1u32 << i) << 24;
            cpu.write(u64::from(lapic::reg::LDR), &ldr.to_le_bytes(), 0);
        }
        let mut io = IoApic::new(0);
        // Pin 10: vector 0x51, level, logical destination 0x02 (CPU 1).
        for (reg, value) in [(0x25u32, 0x0200_0000u32), (0x24, 0x0000_8951)] {
            io.write(0, &reg.to_le_bytes());
            io.write(0x10, &value.to_le_bytes());
        }
        let route = |cpus: &mut [Lapic; 2], deliveries: Vec<Delivery>| {
            for d in deliveries {
                for cpu in cpus.iter_mut() {
                    if cpu.matches_destination(d.dest, d.dest_mode_logical, false) {
                        cpu.accept_interrupt(d.vector, d.level_triggered);
                    }
                }
            }
        };
        let deliveries = io.set_irq(10, true);
        route(&mut cpus, deliveries);
        assert_eq!(cpus[0].pending_vector(), None);
        assert_eq!(cpus[1].pending_vector(), Some(0x51));
        assert_eq!(cpus[1].acknowledge(), 0x51);
        let action = cpus[1].write(u64::from(lapic::reg::EOI), &0u32.to_le_bytes(), 0);
        let LapicAction::Eoi(vector) = action else {
            panic!("no EOI for the IOAPIC: {action:?}");
        };
        let deliveries = io.eoi(vector);
        assert_eq!(deliveries.len(), 1, "still asserted: delivered again");
        route(&mut cpus, deliveries);
        assert_eq!(cpus[1].pending_vector(), Some(0x51));
    }

    /// PIT channel 0 in mode 2 through the PIC to a CPU in virtual-wire
    /// mode (LINT0 ExtINT), as Linux sets it up before the IOAPIC.
    #[test]
    fn pit_through_pic_in_virtual_wire_mode() {
        let mut cpu = Lapic::new(0, true, 1_000_000_000);
        cpu.write(u64::from(lapic::reg::SVR), &0x1ffu32.to_le_bytes(), 0);
        cpu.write(u64::from(lapic::reg::LVT_LINT0), &0x700u32.to_le_bytes(), 0);
        let mut pic = Pic::new();
        for (port, value) in [
            (0x20, 0x11),
            (0x21, 0x30),
            (0x21, 0x04),
            (0x21, 0x01),
            (0x21, 0xfe),
        ] {
            pic.write(port, value);
        }
        let mut pit = Pit::new();
        pit.write(3, 0x34, 0);
        pit.write(0, 0xa9, 0);
        pit.write(0, 0x04, 0); // 1193: 1 ms
        let mut now = 0;
        let mut ticks = 0;
        while let Some(t) = pit.next_irq_ns().filter(|&t| t < 100_000_000) {
            now = t;
            for _ in 0..pit.poll(now) {
                pic.set_irq(0, true);
                pic.set_irq(0, false);
            }
            assert!(cpu.accept_pic_interrupts() && pic.pending());
            assert_eq!(pic.acknowledge(), 0x30);
            pic.write(0x20, 0x20);
            ticks += 1;
        }
        // 1193 / 1.193182 MHz = 999.85 us.
        assert_eq!(ticks, 100);
        assert_eq!(now, 99_984_747);
    }

    #[test]
    fn mul_div_does_not_overflow() {
        assert_eq!(mul_div(u64::MAX, 2, 4), u64::MAX / 2);
        assert_eq!(mul_div(u64::MAX, u64::MAX, 1), u64::MAX);
        assert_eq!(mul_div(5, 1, 0), 0);
        assert_eq!(mul_div_ceil(10, 1, 3), 4);
        assert_eq!(mul_div_ceil(9, 1, 3), 3);
    }
}
