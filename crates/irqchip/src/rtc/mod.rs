//! The MC146818 CMOS real-time clock of a PC at ports 0x70 (index, with
//! the NMI-disable bit 7) and 0x71 (data), on IRQ 8 (QEMU's
//! `hw/rtc/mc146818rtc.c`).
//!
//! The clock is the guest's UTC wall-clock: the UNIX time given at
//! creation plus the monotonic `now_ns` elapsed since, shifted whenever the
//! guest sets the clock. Time and date registers (0x00–0x09, century 0x32)
//! are computed from it when read, in BCD or binary (register B bit 2) and
//! 24- or 12-hour format (bit 1, PM in bit 7). While register B's SET bit
//! is set, or the divider (register A bits 6:4) is held in reset, the clock
//! stands still: the registers hold what the guest writes, and clearing SET
//! restarts the clock from them (leaving divider reset: half a second
//! before the first update, as the datasheet says). A time register written
//! while the clock runs sets the clock at once.
//!
//! Interrupts: register C's flags are evaluated lazily over the time since
//! the last evaluation: PF at the periodic rate of register A (whenever the
//! rate is not 0), UF at each second boundary and AF when the new time
//! matches the alarm registers (a value with bits 7:6 set matches
//! anything); IRQF = PF·PIE + AF·AIE + UF·UIE. Reading register C returns
//! and clears the flags. The IRQ 8 line is IRQF: after [`Rtc::poll`] and
//! after any port access the caller sets IRQ 8 to [`Rtc::irq_level`]
//! (rising edges are the interrupts), and wakes up at [`Rtc::next_irq_ns`].
//! Register A's UIP bit reads 1 during the last 244 µs before each update.
//!
//! Not modelled: daylight-saving (register B bit 0) is stored but ignored;
//! the square-wave output; divider selections other than reset all run the
//! clock at the normal rate; the weekday register is computed from the
//! date (a written weekday shows only while the clock is stopped); the
//! second 128-byte bank at 0x72/0x73.

pub mod civil;
#[cfg(test)]
mod tests;

use civil::DateTime;

use crate::{mul_div, mul_div_ceil};

/// The index port.
pub const RTC_PORT_INDEX: u16 = 0x70;
/// The data port.
pub const RTC_PORT_DATA: u16 = 0x71;
/// The RTC's ISA interrupt.
pub const RTC_IRQ: u8 = 8;

/// Register indices.
pub mod reg {
    pub const SECONDS: u8 = 0x00;
    pub const SECONDS_ALARM: u8 = 0x01;
    pub const MINUTES: u8 = 0x02;
    pub const MINUTES_ALARM: u8 = 0x03;
    pub const HOURS: u8 = 0x04;
    pub const HOURS_ALARM: u8 = 0x05;
    pub const DAY_OF_WEEK: u8 = 0x06;
    pub const DAY_OF_MONTH: u8 = 0x07;
    pub const MONTH: u8 = 0x08;
    pub const YEAR: u8 = 0x09;
    pub const A: u8 = 0x0a;
    pub const B: u8 = 0x0b;
    pub const C: u8 = 0x0c;
    pub const D: u8 = 0x0d;
    pub const CENTURY: u8 = 0x32;
}

pub const REG_A_UIP: u8 = 0x80;
pub const REG_B_SET: u8 = 0x80;
pub const REG_B_PIE: u8 = 0x40;
pub const REG_B_AIE: u8 = 0x20;
pub const REG_B_UIE: u8 = 0x10;
pub const REG_B_SQWE: u8 = 0x08;
pub const REG_B_DM_BINARY: u8 = 0x04;
pub const REG_B_24H: u8 = 0x02;
pub const REG_B_DSE: u8 = 0x01;
pub const REG_C_IRQF: u8 = 0x80;
pub const REG_C_PF: u8 = 0x40;
pub const REG_C_AF: u8 = 0x20;
pub const REG_C_UF: u8 = 0x10;
pub const REG_D_VRT: u8 = 0x80;

const NS_PER_SEC: i128 = 1_000_000_000;
/// The time base of the divider chain.
const RTC_BASE_HZ: u64 = 32_768;
/// How long before an update UIP reads 1 (8 cycles of 32.768 kHz).
const UIP_HOLD_NS: i128 = 244_141;

/// Is `index` one of the clock's time and date registers?
fn is_time_register(index: u8) -> bool {
    matches!(index, 0x00 | 0x02 | 0x04 | 0x06..=0x09 | reg::CENTURY)
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10 % 10) << 4) | (v % 10)
}

fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0xf)
}

/// The complete state of the RTC and its CMOS memory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RtcState {
    /// Selected register (0–0x7f).
    pub index: u8,
    /// Port 0x70 bit 7.
    pub nmi_disabled: bool,
    /// Registers and NVRAM. The time registers are meaningful only while
    /// the clock is stopped; register A's UIP bit is computed.
    pub cmos: [u8; 128],
    /// Guest UNIX time in ns = `epoch_offset_ns + now_ns`.
    pub epoch_offset_ns: i128,
    /// `now_ns` up to which register C's flags were evaluated.
    pub flags_ns: u64,
}

impl Default for RtcState {
    fn default() -> Self {
        let mut cmos = [0u8; 128];
        cmos[usize::from(reg::A)] = 0x26;
        cmos[usize::from(reg::B)] = REG_B_24H;
        cmos[usize::from(reg::D)] = REG_D_VRT;
        RtcState {
            index: 0,
            nmi_disabled: false,
            cmos,
            epoch_offset_ns: 0,
            flags_ns: 0,
        }
    }
}

/// The MC146818 RTC with 128 bytes of CMOS.
#[derive(Clone, Debug)]
pub struct Rtc {
    s: RtcState,
}

impl Rtc {
    /// An RTC whose clock reads UNIX time `unix_secs` + `subsec_nanos` at
    /// `now_ns`. Register A = 0x26 (32.768 kHz, 1024 Hz periodic rate),
    /// B = 0x02 (24-hour, BCD), D = 0x80 (valid RAM and time).
    pub fn new(unix_secs: i64, subsec_nanos: u32, now_ns: u64) -> Rtc {
        let wall = i128::from(unix_secs) * NS_PER_SEC + i128::from(subsec_nanos);
        Rtc {
            s: RtcState {
                epoch_offset_ns: wall - i128::from(now_ns),
                flags_ns: now_ns,
                ..RtcState::default()
            },
        }
    }

    pub fn state(&self) -> RtcState {
        self.s.clone()
    }

    pub fn from_state(state: RtcState) -> Rtc {
        let mut s = state;
        s.index &= 0x7f;
        Rtc { s }
    }

    fn cmos(&self, index: u8) -> u8 {
        self.s.cmos[usize::from(index & 0x7f)]
    }

    fn cmos_mut(&mut self, index: u8) -> &mut u8 {
        &mut self.s.cmos[usize::from(index & 0x7f)]
    }

    /// A CMOS byte as stored (for the VMM and tests; no side effects).
    pub fn cmos_byte(&self, index: u8) -> u8 {
        self.cmos(index)
    }

    /// Presets a CMOS byte, e.g. NVRAM the firmware reads (indices below
    /// 0x0e are the clock's registers and are left alone).
    pub fn set_cmos_byte(&mut self, index: u8, value: u8) {
        if (0x0e..0x80).contains(&index) {
            *self.cmos_mut(index) = value;
        }
    }

    /// Records the memory size where SeaBIOS and other firmware look, as
    /// QEMU does: base memory 640 KiB (0x15/0x16), KiB above 1 MiB up to
    /// 64 MiB (0x17/0x18 and 0x30/0x31), 64 KiB units between 16 MiB and
    /// 4 GiB (0x34/0x35) and above 4 GiB (0x5b–0x5d).
    pub fn set_memory_size(&mut self, below_4g: u64, above_4g: u64) {
        const KIB: u64 = 1024;
        const MIB: u64 = 1024 * KIB;
        let base = 640u64;
        self.set_cmos_byte(0x15, base as u8);
        self.set_cmos_byte(0x16, (base >> 8) as u8);
        let ext = (below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        for (lo, hi) in [(0x17, 0x18), (0x30, 0x31)] {
            self.set_cmos_byte(lo, ext as u8);
            self.set_cmos_byte(hi, (ext >> 8) as u8);
        }
        let mid = (below_4g.saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
        self.set_cmos_byte(0x34, mid as u8);
        self.set_cmos_byte(0x35, (mid >> 8) as u8);
        let high = (above_4g / (64 * KIB)).min(0xff_ffff);
        self.set_cmos_byte(0x5b, high as u8);
        self.set_cmos_byte(0x5c, (high >> 8) as u8);
        self.set_cmos_byte(0x5d, (high >> 16) as u8);
    }

    /// Port 0x70 bit 7 as last written.
    pub fn nmi_disabled(&self) -> bool {
        self.s.nmi_disabled
    }

    /// The guest wall-clock (UNIX ns) at `now_ns`, as the running clock
    /// counts it (while SET or divider reset stops the clock, the time
    /// registers hold still but this keeps going).
    pub fn unix_ns(&self, now_ns: u64) -> i128 {
        self.s.epoch_offset_ns.saturating_add(i128::from(now_ns))
    }

    fn binary(&self) -> bool {
        self.cmos(reg::B) & REG_B_DM_BINARY != 0
    }

    fn hours_24(&self) -> bool {
        self.cmos(reg::B) & REG_B_24H != 0
    }

    /// The divider is not held in reset (register A bits 6:4 below 0b110).
    fn divider_running(&self) -> bool {
        self.cmos(reg::A) & 0x70 <= 0x20
    }

    /// The clock is counting: divider running and SET clear.
    fn running(&self) -> bool {
        self.divider_running() && self.cmos(reg::B) & REG_B_SET == 0
    }

    fn encode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u8 {
        if self.binary() {
            v
        } else {
            from_bcd(v)
        }
    }

    fn encode_hour(&self, hour: u8) -> u8 {
        if self.hours_24() {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
    }

    fn decode_hour(&self, v: u8) -> u8 {
        if self.hours_24() {
            return self.decode(v);
        }
        let h = self.decode(v & 0x7f) % 12;
        if v & 0x80 != 0 {
            h + 12
        } else {
            h
        }
    }

    /// The running clock's value of time register `index`.
    fn time_register(&self, index: u8, now_ns: u64) -> u8 {
        let secs = self.unix_ns(now_ns).div_euclid(NS_PER_SEC);
        let t = DateTime::from_unix(i64::try_from(secs).unwrap_or(0));
        let year = t.year.rem_euclid(10_000);
        match index {
            reg::SECONDS => self.encode(t.second),
            reg::MINUTES => self.encode(t.minute),
            reg::HOURS => self.encode_hour(t.hour),
            reg::DAY_OF_WEEK => self.encode(t.weekday + 1),
            reg::DAY_OF_MONTH => self.encode(t.day),
            reg::MONTH => self.encode(t.month),
            reg::YEAR => self.encode((year % 100) as u8),
            reg::CENTURY => self.encode((year / 100) as u8),
            _ => 0,
        }
    }

    /// Copies the running clock into the time registers (it stops).
    fn latch_time_registers(&mut self, now_ns: u64) {
        for index in [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, reg::CENTURY] {
            let v = self.time_register(index, now_ns);
            *self.cmos_mut(index) = v;
        }
    }

    /// Restarts the clock from the time registers; `subsec_ns` into the
    /// second they hold.
    fn clock_from_registers(&mut self, now_ns: u64, subsec_ns: i128) {
        let t = DateTime {
            year: i64::from(self.decode(self.cmos(reg::CENTURY))) * 100
                + i64::from(self.decode(self.cmos(reg::YEAR))),
            month: self.decode(self.cmos(reg::MONTH)),
            day: self.decode(self.cmos(reg::DAY_OF_MONTH)),
            hour: self.decode_hour(self.cmos(reg::HOURS)),
            minute: self.decode(self.cmos(reg::MINUTES)),
            second: self.decode(self.cmos(reg::SECONDS)),
            weekday: 0,
        };
        let wall = i128::from(t.to_unix()) * NS_PER_SEC + subsec_ns;
        self.s.epoch_offset_ns = wall - i128::from(now_ns);
        tracing::debug!(?t, "rtc: clock set");
    }

    /// Applies a change of register A or B, starting or stopping the
    /// clock. `update` writes the new value.
    fn change_control(&mut self, now_ns: u64, update: impl FnOnce(&mut Self)) {
        let was_running = self.running();
        let divider_was_running = self.divider_running();
        let phase = self.unix_ns(now_ns).rem_euclid(NS_PER_SEC);
        update(self);
        match (was_running, self.running()) {
            (true, false) => self.latch_time_registers(now_ns),
            (false, true) => {
                // Out of divider reset the first update comes 500 ms
                // later; after SET the divider phase went on.
                let subsec = if divider_was_running {
                    phase
                } else {
                    NS_PER_SEC / 2
                };
                self.clock_from_registers(now_ns, subsec);
            }
            _ => {}
        }
    }

    /// Periodic interrupt period in 32.768 kHz cycles (None: off).
    fn periodic_cycles(&self) -> Option<u64> {
        let rate = self.cmos(reg::A) & 0x0f;
        if rate == 0 || !self.divider_running() {
            return None;
        }
        let rate = if rate <= 2 { rate + 7 } else { rate };
        Some(1 << (rate - 1))
    }

    /// The alarm second matching soonest after UNIX second `after`.
    fn next_alarm_after(&self, after: i64) -> Option<i64> {
        let field = |index: u8, max: u8, hour: bool| -> Result<Option<u8>, ()> {
            let raw = self.cmos(index);
            if raw & 0xc0 == 0xc0 {
                return Ok(None);
            }
            let v = if hour {
                self.decode_hour(raw)
            } else {
                self.decode(raw)
            };
            if v > max {
                Err(())
            } else {
                Ok(Some(v))
            }
        };
        let h = field(reg::HOURS_ALARM, 23, true).ok()?;
        let m = field(reg::MINUTES_ALARM, 59, false).ok()?;
        let s = field(reg::SECONDS_ALARM, 59, false).ok()?;
        let sod = after.rem_euclid(civil::SECS_PER_DAY);
        let day = after - sod;
        if let Some(t) = next_match(h, m, s, sod) {
            return day.checked_add(t);
        }
        next_match(h, m, s, -1).and_then(|t| day.checked_add(civil::SECS_PER_DAY + t))
    }

    /// Sets register C's flags for what happened in `(flags_ns, now_ns]`.
    fn update_flags(&mut self, now_ns: u64) {
        let from = self.s.flags_ns;
        if now_ns <= from {
            return;
        }
        self.s.flags_ns = now_ns;
        let mut flags = 0;
        if let Some(p) = self.periodic_cycles() {
            let cycles = |ns| mul_div(ns, RTC_BASE_HZ, NS_PER_SEC as u64) / p;
            if cycles(now_ns) > cycles(from) {
                flags |= REG_C_PF;
            }
        }
        if self.running() {
            let s0 = secs_of(self.unix_ns(from));
            let s1 = secs_of(self.unix_ns(now_ns));
            if s1 > s0 {
                flags |= REG_C_UF;
                if self.next_alarm_after(s0).is_some_and(|a| a <= s1) {
                    flags |= REG_C_AF;
                }
            }
        }
        *self.cmos_mut(reg::C) |= flags;
        self.update_irqf();
    }

    fn update_irqf(&mut self) {
        let c = self.cmos(reg::C);
        let enabled = self.cmos(reg::B) & (REG_B_PIE | REG_B_AIE | REG_B_UIE);
        // PF/AF/UF and PIE/AIE/UIE are the same bit positions.
        if c & enabled & (REG_C_PF | REG_C_AF | REG_C_UF) != 0 {
            *self.cmos_mut(reg::C) |= REG_C_IRQF;
        } else {
            *self.cmos_mut(reg::C) &= !REG_C_IRQF;
        }
    }

    /// The IRQ 8 line: register C's IRQF.
    pub fn irq_level(&self) -> bool {
        self.cmos(reg::C) & REG_C_IRQF != 0
    }

    /// Evaluates the interrupt flags up to `now_ns`; returns the IRQ 8
    /// line level.
    pub fn poll(&mut self, now_ns: u64) -> bool {
        self.update_flags(now_ns);
        self.irq_level()
    }

    /// When an enabled interrupt would next raise IRQF; None when none is
    /// enabled or IRQF is already set (the line cannot rise again until
    /// register C is read).
    pub fn next_irq_ns(&self) -> Option<u64> {
        if self.irq_level() {
            return None;
        }
        let b = self.cmos(reg::B);
        let from = self.s.flags_ns;
        let mut next: Option<u64> = None;
        let mut consider = |t: Option<u64>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if b & REG_B_PIE != 0 {
            consider(self.periodic_cycles().map(|p| {
                let k = mul_div(from, RTC_BASE_HZ, NS_PER_SEC as u64) / p + 1;
                mul_div_ceil(k.saturating_mul(p), NS_PER_SEC as u64, RTC_BASE_HZ)
            }));
        }
        if self.running() && b & (REG_B_UIE | REG_B_AIE) != 0 {
            let wall = self.unix_ns(from);
            let s0 = secs_of(wall);
            let at_second = |s: i64| {
                let ahead = i128::from(s) * NS_PER_SEC - wall;
                u64::try_from(ahead).ok().map(|a| from.saturating_add(a))
            };
            if b & REG_B_UIE != 0 {
                consider(at_second(s0.saturating_add(1)));
            }
            if b & REG_B_AIE != 0 {
                consider(self.next_alarm_after(s0).and_then(at_second));
            }
        }
        next
    }

    /// A guest read of port `0x70 + offset` (0: index port, reads 0xff;
    /// 1: the selected register).
    pub fn read(&mut self, offset: u16, now_ns: u64) -> u8 {
        if offset != 1 {
            return 0xff;
        }
        let index = self.s.index;
        match index {
            _ if is_time_register(index) && self.running() => self.time_register(index, now_ns),
            reg::A => {
                let subsec = self.unix_ns(now_ns).rem_euclid(NS_PER_SEC);
                let uip = self.running() && subsec >= NS_PER_SEC - UIP_HOLD_NS;
                self.cmos(reg::A) | if uip { REG_A_UIP } else { 0 }
            }
            reg::C => {
                self.update_flags(now_ns);
                let c = self.cmos(reg::C);
                *self.cmos_mut(reg::C) = 0;
                c
            }
            reg::D => REG_D_VRT,
            _ => self.cmos(index),
        }
    }

    /// A guest write to port `0x70 + offset` (0: index and NMI disable;
    /// 1: the selected register).
    pub fn write(&mut self, offset: u16, value: u8, now_ns: u64) {
        match offset {
            0 => {
                self.s.index = value & 0x7f;
                self.s.nmi_disabled = value & 0x80 != 0;
                return;
            }
            1 => {}
            _ => return,
        }
        self.update_flags(now_ns);
        let index = self.s.index;
        match index {
            _ if is_time_register(index) => {
                if self.running() {
                    let phase = self.unix_ns(now_ns).rem_euclid(NS_PER_SEC);
                    self.latch_time_registers(now_ns);
                    *self.cmos_mut(index) = value;
                    self.clock_from_registers(now_ns, phase);
                } else {
                    *self.cmos_mut(index) = value;
                }
            }
            reg::A => self.change_control(now_ns, |rtc| *rtc.cmos_mut(reg::A) = value & 0x7f),
            reg::B => {
                let value = if value & REG_B_SET != 0 {
                    value & !REG_B_UIE
                } else {
                    value
                };
                self.change_control(now_ns, |rtc| *rtc.cmos_mut(reg::B) = value);
            }
            reg::C | reg::D => {}
            _ => *self.cmos_mut(index) = value,
        }
        self.update_irqf();
    }
}

fn secs_of(unix_ns: i128) -> i64 {
    i64::try_from(unix_ns.div_euclid(NS_PER_SEC)).unwrap_or(if unix_ns < 0 {
        i64::MIN
    } else {
        i64::MAX
    })
}

/// The first second of the day after `after` (-1: from midnight) whose
/// hour, minute and second match (None = any).
fn next_match(h: Option<u8>, m: Option<u8>, s: Option<u8>, after: i64) -> Option<i64> {
    let ok = |want: Option<u8>, v: i64| want.is_none_or(|w| i64::from(w) == v);
    for hour in (0..24).filter(|&v| ok(h, v)) {
        if hour * 3600 + 3599 <= after {
            continue;
        }
        for minute in (0..60).filter(|&v| ok(m, v)) {
            let base = hour * 3600 + minute * 60;
            if base + 59 <= after {
                continue;
            }
            if let Some(second) = (0..60).filter(|&v| ok(s, v)).find(|&v| base + v > after) {
                return Some(base + second);
            }
        }
    }
    None
}
