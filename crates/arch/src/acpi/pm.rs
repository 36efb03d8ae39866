//! The ACPI power-management registers the FADT points at, which the VMM
//! emulates as one port-I/O device of [`ACPI_PM_LEN`] ports at
//! [`ACPI_PM_BASE`] (0x600, where QEMU's PIIX4/ICH9 power management lives;
//! outside the VGA range, below the PCI I/O window).
//!
//! | port | width | used when | register |
//! |---|---|---|---|
//! | 0x600 | 16 | full ACPI | PM1a_STS: write 1 to clear; reads 0 (no events are ever raised) |
//! | 0x602 | 16 | full ACPI | PM1a_EN: read/write, no effect |
//! | 0x604 | 16 | full ACPI | PM1a_CNT: SCI_EN (bit 0) reads 1; SLP_TYP (bits 10..12) + SLP_EN (bit 13) → [`decode_pm1_control`] |
//! | 0x608 | 8 | hardware-reduced | SLEEP_CONTROL_REG: SLP_TYP (bits 2..4) + SLP_EN (bit 5) → [`decode_sleep_control`] |
//! | 0x609 | 8 | hardware-reduced | SLEEP_STATUS_REG: WAK_STS (bit 7), write 1 to clear; reads 0 |
//! | 0x60a | 8 | both | RESET_REG: writing [`ACPI_RESET_VALUE`] resets the machine |
//! | 0x60c | 32 | both | PM_TMR: the ACPI PM timer, a 24-bit counter at [`PM_TIMER_HZ`] (3.579545 MHz) that wraps around; read-only |
//!
//! The DSDT's `\_S5` package says SLP_TYP = [`SLP_TYP_S5`] (5) for soft-off,
//! so Linux powers off by writing `5 << 2 | 1 << 5` = 0x34 to the sleep
//! control register (hardware-reduced), or `5 << 10 | 1 << 13` = 0x3400 to
//! PM1a_CNT (full ACPI). No other sleep state is advertised. Linux reboots
//! (its default `reboot=acpi` first) by writing the reset value to the reset
//! register. [`decode_write`] turns a port write into the action.
//!
//! In full-ACPI mode the SCI is ISA IRQ [`SCI_IRQ`] (9, level, active
//! high); nothing raises it yet.

/// First port of the power-management block.
pub const ACPI_PM_BASE: u16 = 0x600;
/// Ports in the block (0x600..0x610).
pub const ACPI_PM_LEN: u16 = 0x10;

/// PM1a event block: PM1_STS at +0, PM1_EN at +2 (full ACPI only).
pub const PM1A_EVT_PORT: u16 = ACPI_PM_BASE;
/// Bytes in the PM1a event block.
pub const PM1_EVT_LEN: u8 = 4;
/// PM1a control register (full ACPI only).
pub const PM1A_CNT_PORT: u16 = ACPI_PM_BASE + 4;
/// Bytes in the PM1a control block.
pub const PM1_CNT_LEN: u8 = 2;
/// The FADT's SLEEP_CONTROL_REG (hardware-reduced ACPI).
pub const ACPI_SLEEP_CONTROL_PORT: u16 = ACPI_PM_BASE + 8;
/// The FADT's SLEEP_STATUS_REG (hardware-reduced ACPI).
pub const ACPI_SLEEP_STATUS_PORT: u16 = ACPI_PM_BASE + 9;
/// The FADT's RESET_REG.
pub const ACPI_RESET_PORT: u16 = ACPI_PM_BASE + 0xa;
/// The FADT's RESET_VALUE (the value that means "hard reset" in the
/// PIIX/ICH reset control register at 0xCF9, for familiarity).
pub const ACPI_RESET_VALUE: u8 = 0x06;

/// The FADT's PM_TMR_BLK: the power-management timer.
pub const PM_TMR_PORT: u16 = ACPI_PM_BASE + 0xc;
/// Bytes in the PM timer block.
pub const PM_TMR_LEN: u8 = 4;
/// The PM timer's frequency (the ACPI specification's 3.579545 MHz).
pub const PM_TIMER_HZ: u64 = 3_579_545;
/// The PM timer counts in 24 bits (the FADT's TMR_VAL_EXT flag is clear).
pub const PM_TIMER_MASK: u32 = 0x00ff_ffff;

/// The PM timer's value `ns` nanoseconds after the machine started.
pub fn pm_timer_value(ns: u64) -> u32 {
    let ticks = u128::from(ns) * u128::from(PM_TIMER_HZ) / 1_000_000_000;
    (ticks as u32) & PM_TIMER_MASK
}

/// The SCI's ISA IRQ (and GSI) in full-ACPI mode.
pub const SCI_IRQ: u8 = 9;
/// SLP_TYP of S5 (soft off), as the DSDT's `\_S5` package says.
pub const SLP_TYP_S5: u8 = 5;

/// Sleep control register: SLP_EN.
pub const SLEEP_CONTROL_SLP_EN: u8 = 1 << 5;
/// Sleep control register: SLP_TYP is bits 2..4.
pub const SLEEP_CONTROL_SLP_TYP_SHIFT: u32 = 2;
/// Sleep status register: WAK_STS.
pub const SLEEP_STATUS_WAK_STS: u8 = 1 << 7;
/// PM1 control: SCI_EN (always 1: the machine is always in ACPI mode,
/// SMI_CMD is 0).
pub const PM1_CNT_SCI_EN: u16 = 1 << 0;
/// PM1 control: SLP_TYP is bits 10..12.
pub const PM1_CNT_SLP_TYP_SHIFT: u32 = 10;
/// PM1 control: SLP_EN.
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;

/// A sleep the guest asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SleepRequest {
    /// S5: power off.
    PowerOff,
    /// A SLP_TYP the DSDT does not advertise (the guest misbehaves).
    Unsupported { slp_typ: u8 },
}

impl SleepRequest {
    fn from_slp_typ(slp_typ: u8) -> SleepRequest {
        if slp_typ == SLP_TYP_S5 {
            SleepRequest::PowerOff
        } else {
            SleepRequest::Unsupported { slp_typ }
        }
    }
}

/// What a write to the power-management block asks the VMM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PmAction {
    Sleep(SleepRequest),
    /// Reset the machine.
    Reset,
}

/// Decodes a byte written to the sleep control register: `None` unless
/// SLP_EN is set.
pub fn decode_sleep_control(value: u8) -> Option<SleepRequest> {
    (value & SLEEP_CONTROL_SLP_EN != 0)
        .then(|| SleepRequest::from_slp_typ((value >> SLEEP_CONTROL_SLP_TYP_SHIFT) & 7))
}

/// Decodes a value written to PM1a_CNT: `None` unless SLP_EN is set.
pub fn decode_pm1_control(value: u16) -> Option<SleepRequest> {
    (value & PM1_CNT_SLP_EN != 0)
        .then(|| SleepRequest::from_slp_typ(((value >> PM1_CNT_SLP_TYP_SHIFT) & 7) as u8))
}

/// Decodes a guest write of `data` to `port` in the power-management block:
/// a sleep request (a write with SLP_EN to the sleep control register or to
/// PM1a_CNT — as a word at 0x604 or as its high byte at 0x605) or a reset
/// (the reset value to the reset register). Every other write asks for
/// nothing (status clears, enables).
pub fn decode_write(port: u16, data: &[u8]) -> Option<PmAction> {
    match (port, data) {
        (ACPI_SLEEP_CONTROL_PORT, &[value]) => decode_sleep_control(value).map(PmAction::Sleep),
        (PM1A_CNT_PORT, &[lo, hi]) => {
            decode_pm1_control(u16::from_le_bytes([lo, hi])).map(PmAction::Sleep)
        }
        (PM1A_CNT_PORT, &[lo, hi, _, _]) => {
            decode_pm1_control(u16::from_le_bytes([lo, hi])).map(PmAction::Sleep)
        }
        (p, &[hi]) if p == PM1A_CNT_PORT + 1 => {
            decode_pm1_control(u16::from(hi) << 8).map(PmAction::Sleep)
        }
        (ACPI_RESET_PORT, &[ACPI_RESET_VALUE]) => Some(PmAction::Reset),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linux_poweroff_writes_decode_to_power_off() {
        // ACPICA's acpi_hw_extended_sleep: (SLP_TYP << 2) & 0x1c | 0x20.
        assert_eq!(decode_sleep_control(0x34), Some(SleepRequest::PowerOff));
        assert_eq!(
            decode_write(ACPI_SLEEP_CONTROL_PORT, &[0x34]),
            Some(PmAction::Sleep(SleepRequest::PowerOff))
        );
        // Without SLP_EN nothing happens (ACPICA writes SLP_TYP first in
        // legacy mode).
        assert_eq!(decode_sleep_control(0x14), None);
        assert_eq!(
            decode_sleep_control(0x20 | 3 << 2),
            Some(SleepRequest::Unsupported { slp_typ: 3 })
        );
        // Legacy: PM1a_CNT with SCI_EN still set.
        let v: u16 = 5 << 10 | 1 << 13 | 1;
        assert_eq!(decode_pm1_control(v), Some(SleepRequest::PowerOff));
        assert_eq!(decode_pm1_control(5 << 10 | 1), None);
        assert_eq!(
            decode_write(PM1A_CNT_PORT, &v.to_le_bytes()),
            Some(PmAction::Sleep(SleepRequest::PowerOff))
        );
        assert_eq!(
            decode_write(PM1A_CNT_PORT + 1, &[(v >> 8) as u8]),
            Some(PmAction::Sleep(SleepRequest::PowerOff))
        );
        // Clearing WAK_STS asks for nothing.
        assert_eq!(
            decode_write(ACPI_SLEEP_STATUS_PORT, &[SLEEP_STATUS_WAK_STS]),
            None
        );
    }

    #[test]
    fn reset_needs_the_reset_value() {
        assert_eq!(
            decode_write(ACPI_RESET_PORT, &[ACPI_RESET_VALUE]),
            Some(PmAction::Reset)
        );
        assert_eq!(decode_write(ACPI_RESET_PORT, &[0x04]), None);
        assert_eq!(decode_write(ACPI_RESET_PORT, &[6, 0]), None);
        assert_eq!(decode_write(0x3c0, &[0x34]), None);
    }

    #[test]
    fn ports_fit_the_block() {
        for port in [
            PM1A_EVT_PORT + u16::from(PM1_EVT_LEN) - 1,
            PM1A_CNT_PORT + u16::from(PM1_CNT_LEN) - 1,
            ACPI_SLEEP_CONTROL_PORT,
            ACPI_SLEEP_STATUS_PORT,
            ACPI_RESET_PORT,
            PM_TMR_PORT + u16::from(PM_TMR_LEN) - 1,
        ] {
            assert!((ACPI_PM_BASE..ACPI_PM_BASE + ACPI_PM_LEN).contains(&port));
        }
        assert!(PM1A_CNT_PORT >= PM1A_EVT_PORT + u16::from(PM1_EVT_LEN));
        assert!(ACPI_SLEEP_CONTROL_PORT >= PM1A_CNT_PORT + u16::from(PM1_CNT_LEN));
        const { assert!(PM_TMR_PORT > ACPI_RESET_PORT) };
    }

    #[test]
    fn pm_timer_counts_at_3_58_mhz_in_24_bits() {
        assert_eq!(pm_timer_value(0), 0);
        assert_eq!(
            pm_timer_value(1_000_000_000),
            (PM_TIMER_HZ as u32) & PM_TIMER_MASK
        );
        // One tick is about 279 ns.
        assert_eq!(pm_timer_value(279), 0);
        assert_eq!(pm_timer_value(280), 1);
        // It wraps after 2^24 ticks (about 4.69 s).
        let wrap_ns = (1u64 << 24) * 1_000_000_000 / PM_TIMER_HZ + 1;
        assert!(pm_timer_value(wrap_ns) < 4);
        assert!(pm_timer_value(u64::MAX) <= PM_TIMER_MASK);
    }
}
