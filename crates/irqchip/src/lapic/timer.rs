//! The APIC timer: one-shot and periodic modes counting the initial count
//! down at the bus frequency divided by the divide configuration, and the
//! TSC-deadline mode driven by `IA32_TSC_DEADLINE`.
//!
//! Nothing runs by itself: the current count is computed from `now_ns` when
//! it is read, [`Lapic::next_deadline_ns`] tells the caller when to come
//! back, and [`Lapic::tick`] fires expiries up to `now_ns`. Every register
//! write first runs `tick` so that an expiry is judged by the settings it
//! happened under (an expiry while masked is lost, as on hardware).

use super::{Lapic, Lvt};
use crate::{mul_div, mul_div_ceil};

/// The APIC timer's input clock ("bus" / core crystal): 100 MHz, ten
/// nanoseconds a count with divide-by-1 (KVM counts at 1 GHz; real CPUs
/// at their 19.2-100 MHz crystal). The emu CPU's CPUID leaf 0x15 reports
/// this crystal (Linux then takes it as the timer's rate). At 1 GHz a
/// guest that reads the count twice around a deadline a few milliseconds
/// away (kvm-unit-tests' apic mode-change checks) sees it expire whenever
/// the host takes the vCPU's CPU away for those milliseconds; at 100 MHz
/// the same counts span ten times as long.
pub const APIC_BUS_HZ: u64 = 100_000_000;

/// Shortest period of the periodic mode (KVM: `min_timer_period_us` = 200).
pub const MIN_PERIODIC_NS: u64 = 200_000;

const NS_PER_SEC: u64 = 1_000_000_000;

/// LVT timer bits 18:17.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerMode {
    /// 00 (and the reserved 11).
    OneShot,
    /// 01.
    Periodic,
    /// 10.
    TscDeadline,
}

fn mode_of(lvt: u32) -> TimerMode {
    match (lvt >> 17) & 3 {
        1 => TimerMode::Periodic,
        2 => TimerMode::TscDeadline,
        _ => TimerMode::OneShot,
    }
}

impl Lapic {
    /// The timer mode selected by the LVT timer entry.
    pub fn timer_mode(&self) -> TimerMode {
        mode_of(self.s.lvt[Lvt::Timer as usize])
    }

    /// The divisor of the divide configuration register (1 to 128).
    pub fn timer_divisor(&self) -> u64 {
        let dcr = self.s.timer_divide;
        let v = (dcr & 3) | ((dcr >> 1) & 4);
        if v == 7 {
            1
        } else {
            2 << v
        }
    }

    /// Nanoseconds from `initial` down to 0 at the programmed rate.
    fn programmed_period_ns(&self, initial: u32) -> u64 {
        let ticks = u64::from(initial) * self.timer_divisor();
        mul_div(ticks, NS_PER_SEC, APIC_BUS_HZ)
    }

    /// Nanoseconds from `initial` down to 0 in the current mode.
    fn timer_period_ns(&self, initial: u32) -> u64 {
        let period = self.programmed_period_ns(initial);
        if self.timer_mode() == TimerMode::Periodic {
            period.max(MIN_PERIODIC_NS)
        } else {
            period
        }
    }

    /// How many times the guest started a periodic timer faster than
    /// [`MIN_PERIODIC_NS`] allows (and got the stretched period).
    pub fn timer_periods_stretched(&self) -> u64 {
        self.periods_stretched
    }

    /// The current-count register at `now_ns`.
    pub fn timer_current_count(&self, now_ns: u64) -> u32 {
        let s = &self.s;
        if self.timer_mode() == TimerMode::TscDeadline
            || s.timer_initial == 0
            || s.timer_period_ns == 0
        {
            return 0;
        }
        let period = s.timer_period_ns;
        let Some(next) = s.timer_next_ns else {
            return 0;
        };
        let remaining = if now_ns < next {
            next - now_ns
        } else if self.timer_mode() == TimerMode::Periodic {
            // Expiries not yet ticked: the count went on reloading.
            period - (now_ns - next) % period
        } else {
            return 0;
        };
        let initial = u64::from(s.timer_initial);
        mul_div_ceil(remaining, initial, period).min(initial) as u32
    }

    /// Loads the current count from the initial count at `now_ns`.
    fn start_timer(&mut self, now_ns: u64) {
        let period = self.timer_period_ns(self.s.timer_initial);
        if self.timer_mode() == TimerMode::Periodic
            && self.s.timer_initial != 0
            && self.programmed_period_ns(self.s.timer_initial) < MIN_PERIODIC_NS
        {
            self.periods_stretched += 1;
        }
        if self.s.timer_initial == 0 || period == 0 {
            self.s.timer_period_ns = 0;
            self.s.timer_next_ns = None;
        } else {
            self.s.timer_period_ns = period;
            self.s.timer_next_ns = Some(now_ns.saturating_add(period));
        }
    }

    /// Initial-count register write: (re)starts the count; 0 stops the
    /// timer. Ignored in TSC-deadline mode.
    pub(super) fn write_timer_initial(&mut self, value: u32, now_ns: u64) {
        if self.timer_mode() == TimerMode::TscDeadline {
            return;
        }
        self.s.timer_initial = value;
        self.start_timer(now_ns);
    }

    /// Divide-configuration write. A running count continues from its
    /// current value at the new rate (KVM rescales the same way).
    pub(super) fn write_timer_divide(&mut self, value: u32, now_ns: u64) {
        let count = self.timer_current_count(now_ns);
        let old = self.timer_divisor();
        self.s.timer_divide = value & 0xb;
        if self.timer_divisor() == old || count == 0 {
            return;
        }
        let period = self.timer_period_ns(self.s.timer_initial);
        let remaining = mul_div_ceil(u64::from(count), period, u64::from(self.s.timer_initial));
        self.s.timer_period_ns = period;
        self.s.timer_next_ns = Some(now_ns.saturating_add(remaining));
    }

    /// The LVT timer entry changed from `old`. Entering or leaving the
    /// TSC-deadline mode stops the timer and clears the initial count and
    /// the deadline (as KVM); between one-shot and periodic the running
    /// count continues in the new mode.
    pub(super) fn timer_lvt_changed(&mut self, old: u32) {
        let (from, to) = (mode_of(old), self.timer_mode());
        if from == to {
            return;
        }
        let s = &mut self.s;
        if from == TimerMode::TscDeadline || to == TimerMode::TscDeadline {
            s.timer_initial = 0;
            s.timer_period_ns = 0;
            s.timer_next_ns = None;
            s.tsc_deadline = 0;
            return;
        }
        // The caller ticked first, so `timer_next_ns` is in the future or
        // None. Periodic -> one-shot: the period in progress is the last.
        // One-shot -> periodic: a count that already expired stays at 0.
        if to == TimerMode::Periodic && s.timer_next_ns.is_none() {
            s.timer_period_ns = 0;
        }
    }

    /// `IA32_TSC_DEADLINE` write: arms (or with 0 disarms) the deadline.
    /// Ignored outside TSC-deadline mode.
    pub(super) fn write_tsc_deadline(&mut self, value: u64) {
        if self.timer_mode() == TimerMode::TscDeadline {
            self.s.tsc_deadline = value;
        }
    }

    /// `IA32_TSC_DEADLINE` as the guest reads it (0 outside TSC-deadline
    /// mode and after the deadline fired).
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TimerMode::TscDeadline {
            self.s.tsc_deadline
        } else {
            0
        }
    }

    /// The guest TSC at `now_ns`: `tsc_offset + now_ns * tsc_hz / 1e9`.
    pub fn tsc_at(&self, now_ns: u64) -> u64 {
        self.s
            .tsc_offset
            .wrapping_add(mul_div(now_ns, self.s.tsc_hz, NS_PER_SEC))
    }

    /// Sets the offset of the guest TSC (see [`Lapic::tsc_at`]); the
    /// accelerator calls it when the guest writes `IA32_TSC`.
    pub fn set_tsc_offset(&mut self, offset: u64) {
        self.s.tsc_offset = offset;
    }

    pub fn tsc_hz(&self) -> u64 {
        self.s.tsc_hz
    }

    /// When the armed TSC deadline is reached, in nanoseconds.
    fn tsc_deadline_ns(&self) -> Option<u64> {
        let s = &self.s;
        if s.tsc_deadline == 0 || s.tsc_hz == 0 {
            return None;
        }
        let ticks = s.tsc_deadline.wrapping_sub(s.tsc_offset);
        if ticks as i64 <= 0 {
            return Some(0);
        }
        Some(mul_div_ceil(ticks, NS_PER_SEC, s.tsc_hz))
    }

    /// When the timer next needs [`Lapic::tick`], if it can raise an
    /// interrupt (a masked timer reports nothing; its expiries are caught
    /// up by the next `tick` or register write).
    pub fn next_deadline_ns(&self) -> Option<u64> {
        if self.s.lvt[Lvt::Timer as usize] & super::LVT_MASKED != 0 {
            return None;
        }
        match self.timer_mode() {
            TimerMode::TscDeadline => self.tsc_deadline_ns(),
            _ => self.s.timer_next_ns,
        }
    }

    /// Fires the timer if it expired by `now_ns`: sets the LVT timer
    /// vector in IRR unless masked, rearms a periodic timer (expiries
    /// missed meanwhile coalesce into one interrupt), disarms a one-shot
    /// or TSC-deadline one. Returns true when an interrupt was requested.
    pub fn tick(&mut self, now_ns: u64) -> bool {
        match self.timer_mode() {
            TimerMode::TscDeadline => match self.tsc_deadline_ns() {
                Some(t) if now_ns >= t => {
                    self.s.tsc_deadline = 0;
                    self.fire_timer()
                }
                _ => false,
            },
            TimerMode::OneShot => match self.s.timer_next_ns {
                Some(t) if now_ns >= t => {
                    self.s.timer_next_ns = None;
                    self.fire_timer()
                }
                _ => false,
            },
            TimerMode::Periodic => match self.s.timer_next_ns {
                Some(t) if now_ns >= t => {
                    let period = self.s.timer_period_ns.max(1);
                    let periods = (now_ns - t) / period + 1;
                    self.s.timer_next_ns = Some(t.saturating_add(periods.saturating_mul(period)));
                    self.fire_timer()
                }
                _ => false,
            },
        }
    }

    fn fire_timer(&mut self) -> bool {
        let lvt = self.lvt(Lvt::Timer);
        tracing::trace!(
            id = self.s.id,
            vector = lvt.vector,
            masked = lvt.masked,
            "kvm_apic_timer"
        );
        !lvt.masked && self.accept_interrupt(lvt.vector, false)
    }
}

impl Lapic {
    /// After a restore: the one-shot or periodic timer goes on from
    /// `current` counts left at `now_ns` (a stopped or expired one-shot
    /// count is 0). The TSC-deadline mode has nothing to restart here.
    pub(super) fn restore_timer(&mut self, current: u32, now_ns: u64) {
        self.s.timer_period_ns = 0;
        self.s.timer_next_ns = None;
        let initial = self.s.timer_initial;
        if self.timer_mode() == TimerMode::TscDeadline || initial == 0 {
            return;
        }
        let period = self.timer_period_ns(initial);
        self.s.timer_period_ns = period;
        if current == 0 || period == 0 {
            return;
        }
        let remaining = mul_div_ceil(u64::from(current.min(initial)), period, u64::from(initial));
        self.s.timer_next_ns = Some(now_ns.saturating_add(remaining));
    }
}
