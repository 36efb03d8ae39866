//! The ACPI power-management port block the FADT describes
//! ([`arch::acpi::pm`]): 16 ports at 0x600 with the PM1a event and control
//! registers (full ACPI), the sleep control and status registers
//! (hardware-reduced ACPI) and the reset register.
//!
//! Writes are decoded with [`pm::decode_write`]: a sleep with SLP_TYP 5
//! (S5) asks the machine to power off, the reset value to the reset
//! register asks it to reset. A sleep state the DSDT does not advertise is
//! ignored, and the machine "wakes" at once — WAK_STS reads 1 (sleep
//! status bit 7, PM1_STS bit 15) until the guest clears it — so that a
//! guest waiting for the wake-up goes on.
//!
//! The PM timer (port 0x60c, [`pm::pm_timer_value`]) counts at 3.579545 MHz
//! from the machine's [`Clock`], in 24 bits; writes to it are ignored.
//!
//! Reads: PM1_STS 0 (no events are ever raised) but for WAK_STS, PM1_EN as
//! written, PM1_CNT with SCI_EN (bit 0) always set and SLP_TYP as last
//! written (SLP_EN is write-only), the sleep control and reset registers
//! 0, the sleep status register WAK_STS as above, and 0 for the reserved
//! ports.

use std::sync::Arc;

use arch::acpi::pm::{self, PmAction, SleepRequest};

use crate::ratelimit::RateLimiter;
use crate::{BusDevice, Clock, GuestRequest, RequestSink};

/// First port of the block.
pub const ACPI_PM_BASE: u16 = pm::ACPI_PM_BASE;
/// Ports in the block.
pub const ACPI_PM_SIZE: u64 = pm::ACPI_PM_LEN as u64;

/// Byte offsets of the registers in the block.
const PM1_STS: u64 = (pm::PM1A_EVT_PORT - ACPI_PM_BASE) as u64;
const PM1_EN: u64 = PM1_STS + 2;
const PM1_CNT: u64 = (pm::PM1A_CNT_PORT - ACPI_PM_BASE) as u64;
const SLEEP_STATUS: u64 = (pm::ACPI_SLEEP_STATUS_PORT - ACPI_PM_BASE) as u64;
const PM_TMR: u64 = (pm::PM_TMR_PORT - ACPI_PM_BASE) as u64;

/// PM1_STS: WAK_STS.
const PM1_STS_WAK_STS: u16 = 1 << 15;

/// The power-management block.
pub struct AcpiPm {
    requests: RequestSink,
    /// The PM timer's time base.
    clock: Arc<dyn Clock>,
    pm1_en: u16,
    /// PM1_CNT as written, without SLP_EN.
    pm1_cnt: u16,
    /// An ignored sleep request "woke up" and the guest has not cleared
    /// WAK_STS yet.
    woken: bool,
    log_limit: RateLimiter,
}

impl AcpiPm {
    pub fn new(requests: RequestSink, clock: Arc<dyn Clock>) -> Self {
        AcpiPm {
            requests,
            clock,
            pm1_en: 0,
            pm1_cnt: pm::PM1_CNT_SCI_EN,
            woken: false,
            log_limit: RateLimiter::default(),
        }
    }

    /// The register byte at `offset` in the block; `timer` is the PM
    /// timer's value for this access.
    fn read_byte(&self, offset: u64, timer: u32) -> u8 {
        let pm1_sts = if self.woken { PM1_STS_WAK_STS } else { 0 };
        let pm1_cnt = self.pm1_cnt | pm::PM1_CNT_SCI_EN;
        match offset {
            o if o == PM1_STS => pm1_sts as u8,
            o if o == PM1_STS + 1 => (pm1_sts >> 8) as u8,
            o if o == PM1_EN => self.pm1_en as u8,
            o if o == PM1_EN + 1 => (self.pm1_en >> 8) as u8,
            o if o == PM1_CNT => pm1_cnt as u8,
            o if o == PM1_CNT + 1 => (pm1_cnt >> 8) as u8,
            o if o == SLEEP_STATUS && self.woken => pm::SLEEP_STATUS_WAK_STS,
            o if (PM_TMR..PM_TMR + 4).contains(&o) => (timer >> (8 * (o - PM_TMR))) as u8,
            _ => 0,
        }
    }

    /// Stores the byte `value` the guest wrote at `offset` (status clears,
    /// enables, PM1_CNT's readable bits).
    fn write_byte(&mut self, offset: u64, value: u8) {
        let set_low = |reg: &mut u16| *reg = (*reg & 0xff00) | u16::from(value);
        let set_high = |reg: &mut u16| *reg = (*reg & 0x00ff) | (u16::from(value) << 8);
        match offset {
            o if o == PM1_STS + 1 && value & (PM1_STS_WAK_STS >> 8) as u8 != 0 => {
                self.woken = false
            }
            o if o == SLEEP_STATUS && value & pm::SLEEP_STATUS_WAK_STS != 0 => self.woken = false,
            o if o == PM1_EN => set_low(&mut self.pm1_en),
            o if o == PM1_EN + 1 => set_high(&mut self.pm1_en),
            o if o == PM1_CNT => set_low(&mut self.pm1_cnt),
            o if o == PM1_CNT + 1 => {
                set_high(&mut self.pm1_cnt);
                self.pm1_cnt &= !pm::PM1_CNT_SLP_EN;
            }
            _ => {}
        }
    }

    fn act(&mut self, action: PmAction) {
        match action {
            PmAction::Sleep(SleepRequest::PowerOff) => (self.requests)(GuestRequest::PowerOff),
            PmAction::Reset => (self.requests)(GuestRequest::Reset),
            PmAction::Sleep(SleepRequest::Unsupported { slp_typ }) => {
                if self.log_limit.allow() {
                    tracing::warn!(
                        slp_typ,
                        "acpi: guest asked for an unsupported sleep state; ignored"
                    );
                }
                self.woken = true;
            }
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        // One sample of the timer for the whole access.
        let timer = pm::pm_timer_value(self.clock.now_ns());
        for (i, byte) in data.iter_mut().enumerate() {
            *byte = offset
                .checked_add(i as u64)
                .map_or(0, |o| self.read_byte(o, timer));
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Some(port) = u16::try_from(offset)
            .ok()
            .and_then(|o| ACPI_PM_BASE.checked_add(o))
        else {
            return;
        };
        for (i, &value) in data.iter().enumerate() {
            if let Some(o) = offset.checked_add(i as u64) {
                self.write_byte(o, value);
            }
        }
        if let Some(action) = pm::decode_write(port, data) {
            self.act(action);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::Mutex;

    fn device_with_clock() -> (AcpiPm, Arc<Mutex<Vec<GuestRequest>>>, Arc<ManualClock>) {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink_seen = seen.clone();
        let sink: RequestSink = Arc::new(move |r| sink_seen.lock().unwrap().push(r));
        let clock = Arc::new(ManualClock::new(0));
        (AcpiPm::new(sink, clock.clone()), seen, clock)
    }

    fn device() -> (AcpiPm, Arc<Mutex<Vec<GuestRequest>>>) {
        let (dev, seen, _) = device_with_clock();
        (dev, seen)
    }

    fn off(port: u16) -> u64 {
        u64::from(port - ACPI_PM_BASE)
    }

    fn read(dev: &mut AcpiPm, port: u16, len: usize) -> Vec<u8> {
        let mut v = vec![0xaa; len];
        dev.read(off(port), &mut v);
        v
    }

    #[test]
    fn sleep_control_s5_powers_off() {
        let (mut dev, seen) = device();
        // SLP_TYP without SLP_EN does nothing.
        dev.write(off(pm::ACPI_SLEEP_CONTROL_PORT), &[5 << 2]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(off(pm::ACPI_SLEEP_CONTROL_PORT), &[0x34]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::PowerOff]);
    }

    #[test]
    fn pm1_control_s5_powers_off_as_word_or_high_byte() {
        let (mut dev, seen) = device();
        let v: u16 = 5 << 10 | 1 << 13 | 1;
        dev.write(off(pm::PM1A_CNT_PORT), &v.to_le_bytes());
        dev.write(off(pm::PM1A_CNT_PORT) + 1, &[(v >> 8) as u8]);
        assert_eq!(
            *seen.lock().unwrap(),
            vec![GuestRequest::PowerOff, GuestRequest::PowerOff]
        );
    }

    #[test]
    fn reset_register_resets_only_with_the_reset_value() {
        let (mut dev, seen) = device();
        dev.write(off(pm::ACPI_RESET_PORT), &[0x04]);
        assert!(seen.lock().unwrap().is_empty());
        dev.write(off(pm::ACPI_RESET_PORT), &[pm::ACPI_RESET_VALUE]);
        assert_eq!(*seen.lock().unwrap(), vec![GuestRequest::Reset]);
        assert_eq!(read(&mut dev, pm::ACPI_RESET_PORT, 1), [0]);
    }

    #[test]
    fn reads_show_sci_en_enables_and_no_events() {
        let (mut dev, _) = device();
        assert_eq!(read(&mut dev, pm::PM1A_EVT_PORT, 2), [0, 0]);
        assert_eq!(read(&mut dev, pm::PM1A_CNT_PORT, 2), [1, 0]);
        assert_eq!(read(&mut dev, pm::ACPI_SLEEP_STATUS_PORT, 1), [0]);
        assert_eq!(read(&mut dev, pm::ACPI_SLEEP_CONTROL_PORT, 1), [0]);
        // PM1_EN keeps what is written; a dword covers STS and EN.
        dev.write(off(pm::PM1A_EVT_PORT) + 2, &[0x21, 0x01]);
        assert_eq!(read(&mut dev, pm::PM1A_EVT_PORT, 4), [0, 0, 0x21, 0x01]);
        // SLP_TYP reads back, SLP_EN does not; SCI_EN stays set.
        dev.write(off(pm::PM1A_CNT_PORT), &(3u16 << 10).to_le_bytes());
        assert_eq!(read(&mut dev, pm::PM1A_CNT_PORT, 2), [1, 3 << 2]);
        // Reserved ports read 0.
        assert_eq!(read(&mut dev, ACPI_PM_BASE + 0xf, 1), [0]);
    }

    #[test]
    fn unsupported_sleep_wakes_at_once_until_cleared() {
        let (mut dev, seen) = device();
        dev.write(off(pm::ACPI_SLEEP_CONTROL_PORT), &[0x20 | 3 << 2]);
        assert!(seen.lock().unwrap().is_empty());
        assert_eq!(
            read(&mut dev, pm::ACPI_SLEEP_STATUS_PORT, 1),
            [pm::SLEEP_STATUS_WAK_STS]
        );
        assert_eq!(read(&mut dev, pm::PM1A_EVT_PORT, 2), [0, 0x80]);
        dev.write(off(pm::ACPI_SLEEP_STATUS_PORT), &[pm::SLEEP_STATUS_WAK_STS]);
        assert_eq!(read(&mut dev, pm::ACPI_SLEEP_STATUS_PORT, 1), [0]);
        // Legacy path: PM1_STS bit 15 clears it too.
        dev.write(
            off(pm::PM1A_CNT_PORT),
            &(1u16 << 13 | 1 << 10).to_le_bytes(),
        );
        assert_eq!(read(&mut dev, pm::PM1A_EVT_PORT, 2), [0, 0x80]);
        dev.write(off(pm::PM1A_EVT_PORT), &0x8000u16.to_le_bytes());
        assert_eq!(read(&mut dev, pm::PM1A_EVT_PORT, 2), [0, 0]);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn pm_timer_counts_from_the_clock() {
        let (mut dev, seen, clock) = device_with_clock();
        let timer = |dev: &mut AcpiPm| {
            u32::from_le_bytes(read(dev, pm::PM_TMR_PORT, 4)[..].try_into().unwrap())
        };
        assert_eq!(timer(&mut dev), 0);
        clock.advance(1_000_000);
        // 1 ms = 3579.545 ticks.
        assert_eq!(timer(&mut dev), 3579);
        clock.advance(999_000_000);
        assert_eq!(timer(&mut dev), 3_579_545);
        // Byte reads see the same counter; writes change nothing.
        dev.write(off(pm::PM_TMR_PORT), &[0, 0, 0, 0]);
        assert_eq!(
            read(&mut dev, pm::PM_TMR_PORT + 1, 1),
            [(3_579_545u32 >> 8) as u8]
        );
        assert_eq!(read(&mut dev, pm::PM_TMR_PORT + 3, 1), [0], "24 bits");
        // It wraps in 24 bits.
        clock.advance(4_000_000_000);
        assert!(timer(&mut dev) <= pm::PM_TIMER_MASK);
        assert!(seen.lock().unwrap().is_empty());
    }

    #[test]
    fn any_offset_and_width_is_harmless() {
        let (mut dev, seen) = device();
        for offset in [0, 7, 0xf, 0x10, 0xffff, 0x1_0000, u64::MAX - 2, u64::MAX] {
            for len in [0, 1, 2, 4, 8] {
                let mut buf = vec![0xff; len];
                dev.read(offset, &mut buf);
                dev.write(offset, &buf);
            }
        }
        // 0xff to the sleep control register has SLP_EN with SLP_TYP 7:
        // unsupported, so nothing but a wake-up.
        assert!(seen.lock().unwrap().is_empty());
    }
}
