//! The CMOS real-time clock at ports 0x70–0x71 on IRQ 8: the
//! [`irqchip::rtc::Rtc`] register model on the port bus.
//!
//! Its time base is a [`Clock`]: the wall-clock at creation (UNIX time)
//! for the date the guest reads, the monotonic `now_ns` for everything
//! after. The IRQ 8 line follows the model's IRQF: it is set after every
//! port access and every [`TimedDevice::poll`] (reading register C lowers
//! it). Periodic, alarm and update interrupts happen when someone polls:
//! the device reports [`Rtc::next_irq_ns`] as its deadline, and tells its
//! [`DeadlineSink`] whenever a guest access sets a new one.

use std::sync::Arc;

use irqchip::rtc::Rtc as RtcModel;

use crate::clock::{Clock, DeadlineSink, TimedDevice};
use crate::{BusDevice, IrqLine};

/// The index port (bit 7 of a write disables NMIs).
pub const RTC_BASE: u16 = irqchip::rtc::RTC_PORT_INDEX;
/// Ports: index and data.
pub const RTC_SIZE: u64 = 2;
/// The RTC's ISA IRQ (and GSI).
pub const RTC_IRQ: u32 = irqchip::rtc::RTC_IRQ as u32;

/// The RTC's state in a snapshot: the CMOS (registers, alarm, NVRAM),
/// the index port, and the guest's time, which goes on from where it was
/// (not from the host's wall-clock) after a restore, as the VM's clock
/// does.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RtcSnapshot {
    pub index: u8,
    pub nmi_disabled: bool,
    /// 128 bytes.
    pub cmos: Vec<u8>,
    /// The guest's UNIX time (ns) when saved.
    pub unix_ns: i128,
    /// How long before the save register C's flags were last evaluated.
    pub flags_age_ns: u64,
}

/// Why an RTC state cannot be restored.
#[derive(Debug, thiserror::Error)]
#[error("an RTC state with {0} bytes of CMOS (128 expected)")]
pub struct RtcStateError(usize);

/// The MC146818 RTC and its 128 bytes of CMOS.
pub struct Rtc {
    model: RtcModel,
    clock: Arc<dyn Clock>,
    irq: Arc<dyn IrqLine>,
    /// The level last given to `irq` (the line starts low).
    level: bool,
    deadlines: Option<DeadlineSink>,
}

impl Rtc {
    /// An RTC that reads the wall-clock of `clock` now, on IRQ line `irq`.
    pub fn new(irq: Arc<dyn IrqLine>, clock: Arc<dyn Clock>) -> Self {
        let (secs, nanos) = clock.unix_time();
        let model = RtcModel::new(secs, nanos, clock.now_ns());
        Rtc {
            model,
            clock,
            irq,
            level: false,
            deadlines: None,
        }
    }

    /// Where to report deadlines that guest accesses set.
    pub fn set_deadline_sink(&mut self, sink: DeadlineSink) {
        self.deadlines = Some(sink);
    }

    /// Records the guest's memory size in the CMOS bytes firmware reads.
    pub fn set_memory_size(&mut self, below_4g: u64, above_4g: u64) {
        self.model.set_memory_size(below_4g, above_4g);
    }

    /// A CMOS byte as stored (no side effects).
    pub fn cmos_byte(&self, index: u8) -> u8 {
        self.model.cmos_byte(index)
    }

    /// When an enabled interrupt would next raise IRQ 8 (clock ns).
    pub fn next_irq_ns(&self) -> Option<u64> {
        self.model.next_irq_ns()
    }

    /// The RTC's state, at the clock's present time.
    pub fn save(&self) -> RtcSnapshot {
        let now = self.clock.now_ns();
        let s = self.model.state();
        RtcSnapshot {
            index: s.index,
            nmi_disabled: s.nmi_disabled,
            cmos: s.cmos.to_vec(),
            unix_ns: self.model.unix_ns(now),
            flags_age_ns: now.saturating_sub(s.flags_ns),
        }
    }

    /// Puts the RTC in the state `snapshot` describes, its time going on
    /// from the saved one at the clock's present time; the IRQ line and
    /// the next deadline follow.
    pub fn restore(&mut self, snapshot: &RtcSnapshot) -> Result<(), RtcStateError> {
        let cmos: [u8; 128] = snapshot
            .cmos
            .as_slice()
            .try_into()
            .map_err(|_| RtcStateError(snapshot.cmos.len()))?;
        let now = self.clock.now_ns();
        self.model = RtcModel::from_state(irqchip::rtc::RtcState {
            index: snapshot.index,
            nmi_disabled: snapshot.nmi_disabled,
            cmos,
            epoch_offset_ns: snapshot.unix_ns.saturating_sub(i128::from(now)),
            flags_ns: now.saturating_sub(snapshot.flags_age_ns),
        });
        self.after_access();
        Ok(())
    }

    /// Drives IRQ 8 to the model's level, if it changed.
    fn sync_irq(&mut self) {
        let level = self.model.irq_level();
        if level != self.level {
            self.level = level;
            self.irq.set_level(level);
        }
    }

    /// After a guest access: the line, then the new deadline.
    fn after_access(&mut self) {
        self.sync_irq();
        if let (Some(sink), Some(at)) = (&self.deadlines, self.model.next_irq_ns()) {
            sink(at);
        }
    }
}

impl BusDevice for Rtc {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // A wider access is a sequence of byte accesses, as the ISA bus
        // splits it.
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = match offset.checked_add(i as u64) {
                Some(port @ 0..=1) => self.model.read(port as u16, self.clock.now_ns()),
                _ => 0xff,
            };
        }
        self.after_access();
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            if let Some(port @ 0..=1) = offset.checked_add(i as u64) {
                self.model.write(port as u16, value, self.clock.now_ns());
            }
        }
        self.after_access();
    }
}

impl TimedDevice for Rtc {
    fn next_deadline_ns(&self) -> Option<u64> {
        self.model.next_irq_ns()
    }

    fn poll(&mut self) {
        self.model.poll(self.clock.now_ns());
        self.sync_irq();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use irqchip::rtc::{reg, REG_B_24H, REG_B_PIE, REG_B_UIE, REG_C_IRQF, REG_C_PF, REG_C_UF};
    use std::sync::Mutex;

    /// 2024-02-29 12:34:56 UTC, a Thursday.
    const LEAP_DAY: i64 = 1_709_210_096;
    const SEC: u64 = 1_000_000_000;

    #[derive(Default)]
    struct Line(Mutex<Vec<bool>>);
    impl IrqLine for Line {
        fn set_level(&self, level: bool) {
            self.0.lock().unwrap().push(level);
        }
    }

    fn rtc() -> (Rtc, Arc<ManualClock>, Arc<Line>) {
        let clock = Arc::new(ManualClock::new(LEAP_DAY));
        let line = Arc::new(Line::default());
        (Rtc::new(line.clone(), clock.clone()), clock, line)
    }

    fn get(rtc: &mut Rtc, index: u8) -> u8 {
        rtc.write(0, &[index]);
        let mut v = [0];
        rtc.read(1, &mut v);
        v[0]
    }

    fn set(rtc: &mut Rtc, index: u8, value: u8) {
        rtc.write(0, &[index]);
        rtc.write(1, &[value]);
    }

    #[test]
    fn a_restored_rtc_keeps_its_cmos_and_alarm_and_its_time_goes_on_from_the_saved_one() {
        let (mut a, clock_a, _) = rtc();
        set(&mut a, 0x40, 0x5a); // NVRAM
        set(&mut a, reg::B, REG_B_24H | REG_B_PIE);
        clock_a.advance(90 * SEC);
        let saved = a.save();
        // A host whose wall-clock is a day later and whose monotonic
        // clock started elsewhere.
        let clock_b = Arc::new(ManualClock::new(LEAP_DAY + 86_400));
        clock_b.advance(1234 * SEC);
        let line = Arc::new(Line::default());
        let mut b = Rtc::new(line.clone(), clock_b.clone());
        b.restore(&saved).unwrap();
        assert_eq!(b.save(), saved);
        assert_eq!(get(&mut b, 0x40), 0x5a);
        assert_eq!(get(&mut b, reg::B), REG_B_24H | REG_B_PIE);
        // 12:34:56 + 90 s, not a day later.
        assert_eq!(get(&mut b, 0x02), 0x36);
        assert_eq!(get(&mut b, 0x04), 0x12);
        assert!(b.next_irq_ns().is_some(), "the periodic interrupt goes on");
        let bad = RtcSnapshot {
            cmos: vec![0; 12],
            ..saved
        };
        assert!(b.restore(&bad).is_err());
    }

    #[test]
    fn reads_the_clock_time_in_bcd() {
        let (mut rtc, clock, _) = rtc();
        let clock_regs = |rtc: &mut Rtc| {
            [
                reg::SECONDS,
                reg::MINUTES,
                reg::HOURS,
                reg::DAY_OF_MONTH,
                reg::MONTH,
                reg::YEAR,
                reg::CENTURY,
            ]
            .map(|i| get(rtc, i))
        };
        assert_eq!(
            clock_regs(&mut rtc),
            [0x56, 0x34, 0x12, 0x29, 0x02, 0x24, 0x20]
        );
        clock.advance(5 * SEC);
        assert_eq!(get(&mut rtc, reg::SECONDS), 0x01);
        assert_eq!(get(&mut rtc, reg::MINUTES), 0x35);
        // The index port reads all ones; a word read is two byte reads.
        let mut v = [0u8; 2];
        rtc.write(0, &[reg::B]);
        rtc.read(0, &mut v);
        assert_eq!(v, [0xff, REG_B_24H]);
    }

    #[test]
    fn update_interrupt_raises_irq8_until_register_c_is_read() {
        let (mut rtc, clock, line) = rtc();
        let reported = Arc::new(Mutex::new(Vec::new()));
        let r = reported.clone();
        rtc.set_deadline_sink(Arc::new(move |at| r.lock().unwrap().push(at)));
        assert_eq!(rtc.next_deadline_ns(), None);

        set(&mut rtc, reg::B, REG_B_24H | REG_B_UIE);
        // The next second boundary of the wall-clock.
        assert_eq!(rtc.next_deadline_ns(), Some(SEC));
        assert_eq!(reported.lock().unwrap().last(), Some(&SEC));
        clock.advance(SEC / 2);
        rtc.poll();
        assert!(line.0.lock().unwrap().is_empty(), "not yet");
        clock.advance(SEC / 2);
        rtc.poll();
        assert_eq!(*line.0.lock().unwrap(), vec![true]);
        assert_eq!(rtc.next_deadline_ns(), None, "IRQF is set");

        // PF is set too (the periodic rate runs), but PIE is off.
        let c = get(&mut rtc, reg::C);
        assert_eq!(c, REG_C_IRQF | REG_C_UF | REG_C_PF);
        assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
        assert_eq!(get(&mut rtc, reg::C), 0);
        assert_eq!(rtc.next_deadline_ns(), Some(2 * SEC));
    }

    #[test]
    fn periodic_interrupt_at_1024_hz() {
        let (mut rtc, clock, line) = rtc();
        set(&mut rtc, reg::B, REG_B_24H | REG_B_PIE);
        let next = rtc.next_deadline_ns().unwrap();
        assert!((976_000..=977_000).contains(&next), "{next}");
        clock.advance(next);
        rtc.poll();
        assert_eq!(*line.0.lock().unwrap(), vec![true]);
        assert_eq!(get(&mut rtc, reg::C) & REG_C_PF, REG_C_PF);
        assert_eq!(*line.0.lock().unwrap(), vec![true, false]);
    }

    #[test]
    fn memory_size_and_odd_accesses() {
        let (mut rtc, _, line) = rtc();
        rtc.set_memory_size(64 << 20, 0);
        // KiB above 1 MiB: 63 MiB = 0xfc00.
        assert_eq!((rtc.cmos_byte(0x17), rtc.cmos_byte(0x18)), (0x00, 0xfc));
        assert_eq!(get(&mut rtc, 0x30), 0x00);
        assert_eq!(get(&mut rtc, 0x31), 0xfc);
        // Out-of-range offsets and empty accesses are ignored.
        rtc.write(5, &[0xff]);
        rtc.write(u64::MAX, &[1, 2]);
        rtc.write(1, &[]);
        let mut v = [0u8; 4];
        rtc.read(u64::MAX - 1, &mut v);
        assert_eq!(v, [0xff; 4]);
        rtc.read(0, &mut []);
        // NVRAM keeps what the guest writes, index bit 7 is NMI-disable.
        set(&mut rtc, 0x80 | 0x40, 0x5a);
        assert_eq!(get(&mut rtc, 0x40), 0x5a);
        assert!(line.0.lock().unwrap().is_empty());
    }
}
