use super::*;

const SEC: u64 = 1_000_000_000;
/// 2024-02-29 12:34:56 UTC, a Thursday.
const LEAP_DAY: i64 = 1_709_210_096;

fn get(rtc: &mut Rtc, index: u8, now: u64) -> u8 {
    rtc.write(0, index, now);
    rtc.read(1, now)
}

fn set(rtc: &mut Rtc, index: u8, value: u8, now: u64) {
    rtc.write(0, index, now);
    rtc.write(1, value, now);
}

/// (sec, min, hour, weekday, day, month, year, century)
fn clock(rtc: &mut Rtc, now: u64) -> [u8; 8] {
    [0x00, 0x02, 0x04, 0x06, 0x07, 0x08, 0x09, 0x32].map(|i| get(rtc, i, now))
}

#[test]
fn bcd_24h_by_default() {
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    assert_eq!(get(&mut rtc, reg::A, 0), 0x26);
    assert_eq!(get(&mut rtc, reg::B, 0), 0x02);
    assert_eq!(get(&mut rtc, reg::D, 0), 0x80);
    assert_eq!(
        clock(&mut rtc, 0),
        [0x56, 0x34, 0x12, 0x05, 0x29, 0x02, 0x24, 0x20]
    );
    // Time moves with now_ns.
    assert_eq!(
        clock(&mut rtc, 5 * SEC),
        [0x01, 0x35, 0x12, 0x05, 0x29, 0x02, 0x24, 0x20]
    );
    // Across midnight into March 1st (Friday).
    let to_midnight = (24 * 3600 - (12 * 3600 + 34 * 60 + 56)) as u64 * SEC;
    assert_eq!(
        clock(&mut rtc, to_midnight),
        [0x00, 0x00, 0x00, 0x06, 0x01, 0x03, 0x24, 0x20]
    );
}

#[test]
fn binary_mode() {
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    set(&mut rtc, reg::B, REG_B_24H | REG_B_DM_BINARY, 0);
    assert_eq!(clock(&mut rtc, 0), [56, 34, 12, 5, 29, 2, 24, 20]);
}

#[test]
fn twelve_hour_mode() {
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    set(&mut rtc, reg::B, 0, 0);
    assert_eq!(get(&mut rtc, reg::HOURS, 0), 0x92, "12 PM");
    // 00:xx is 12 AM, 13:xx is 1 PM.
    let midnight = (24 * 3600 - (12 * 3600 + 34 * 60 + 56)) as u64 * SEC;
    assert_eq!(get(&mut rtc, reg::HOURS, midnight), 0x12);
    assert_eq!(get(&mut rtc, reg::HOURS, midnight + 3600 * SEC), 0x01);
    assert_eq!(get(&mut rtc, reg::HOURS, midnight + 13 * 3600 * SEC), 0x81);
    set(&mut rtc, reg::B, REG_B_DM_BINARY, 0);
    assert_eq!(get(&mut rtc, reg::HOURS, midnight + 23 * 3600 * SEC), 0x8b);
}

#[test]
fn setting_the_clock_with_set() {
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    set(
        &mut rtc,
        reg::B,
        REG_B_SET | REG_B_24H | REG_B_UIE,
        10 * SEC,
    );
    assert_eq!(get(&mut rtc, reg::B, 0) & REG_B_UIE, 0, "SET clears UIE");
    // Stopped: the registers hold still and take writes.
    assert_eq!(get(&mut rtc, reg::SECONDS, 100 * SEC), 0x06);
    assert_eq!(get(&mut rtc, reg::A, 10 * SEC + SEC - 1) & REG_A_UIP, 0);
    for (index, value) in [
        (0x00, 0x00),
        (0x02, 0x00),
        (0x04, 0x08),
        (0x07, 0x31),
        (0x08, 0x12),
        (0x09, 0x99),
        (0x32, 0x19),
    ] {
        set(&mut rtc, index, value, 20 * SEC);
    }
    set(&mut rtc, reg::B, REG_B_24H, 30 * SEC);
    assert_eq!(
        clock(&mut rtc, 30 * SEC),
        [0x00, 0x00, 0x08, 0x06, 0x31, 0x12, 0x99, 0x19]
    );
    assert_eq!(clock(&mut rtc, 32 * SEC)[0], 0x02);
    assert_eq!(rtc.unix_ns(30 * SEC) / 1_000_000_000, 946_627_200);
}

#[test]
fn writing_a_running_clock_sets_it() {
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    set(&mut rtc, reg::YEAR, 0x25, SEC);
    assert_eq!(get(&mut rtc, reg::YEAR, 2 * SEC), 0x25);
    assert_eq!(
        get(&mut rtc, reg::MONTH, 2 * SEC),
        0x03,
        "2025 has no Feb 29"
    );
    assert_eq!(get(&mut rtc, reg::DAY_OF_MONTH, 2 * SEC), 0x01);
    assert_eq!(get(&mut rtc, reg::SECONDS, 2 * SEC), 0x58);
}

#[test]
fn divider_reset_stops_the_clock() {
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    set(&mut rtc, reg::A, 0x70, 0);
    assert_eq!(get(&mut rtc, reg::SECONDS, 10 * SEC), 0x56);
    set(&mut rtc, reg::A, 0x26, 10 * SEC);
    // First update half a second later.
    assert_eq!(get(&mut rtc, reg::SECONDS, 10 * SEC + SEC / 2 - 1), 0x56);
    assert_eq!(get(&mut rtc, reg::SECONDS, 10 * SEC + SEC / 2), 0x57);
    assert_eq!(rtc.next_irq_ns(), None);
}

#[test]
fn uip_before_the_update() {
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    assert_eq!(get(&mut rtc, reg::A, SEC - 244_142) & REG_A_UIP, 0);
    assert_eq!(get(&mut rtc, reg::A, SEC - 244_141) & REG_A_UIP, REG_A_UIP);
    assert_eq!(get(&mut rtc, reg::A, SEC) & REG_A_UIP, 0);
}

#[test]
fn register_c_clears_on_read() {
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    // Flags are set even with interrupts disabled, without IRQF.
    assert_eq!(get(&mut rtc, reg::C, 2 * SEC), REG_C_PF | REG_C_UF);
    assert_eq!(get(&mut rtc, reg::C, 2 * SEC), 0);
    assert!(!rtc.irq_level());
    set(&mut rtc, reg::B, REG_B_24H | REG_B_UIE, 2 * SEC);
    assert!(!rtc.poll(3 * SEC - 1));
    assert!(rtc.poll(3 * SEC));
    assert_eq!(rtc.next_irq_ns(), None, "IRQF already set");
    assert_eq!(
        get(&mut rtc, reg::C, 3 * SEC),
        REG_C_IRQF | REG_C_PF | REG_C_UF
    );
    assert!(!rtc.irq_level());
    // Register C and D are read-only.
    set(&mut rtc, reg::C, 0xff, 3 * SEC);
    set(&mut rtc, reg::D, 0x00, 3 * SEC);
    assert_eq!(get(&mut rtc, reg::C, 3 * SEC), 0);
    assert_eq!(get(&mut rtc, reg::D, 3 * SEC), 0x80);
    // Enabling an interrupt whose flag is already set raises IRQF.
    set(&mut rtc, reg::B, REG_B_24H, 3 * SEC);
    rtc.poll(4 * SEC);
    assert!(!rtc.irq_level());
    set(&mut rtc, reg::B, REG_B_24H | REG_B_UIE, 4 * SEC);
    assert!(rtc.irq_level());
}

#[test]
fn periodic_interrupt_rate() {
    let mut rtc = Rtc::new(0, 0, 0);
    set(&mut rtc, reg::B, REG_B_24H | REG_B_PIE, 0);
    // Rate 6: 1024 Hz, 976.5625 us.
    assert_eq!(rtc.next_irq_ns(), Some(976_563));
    assert!(!rtc.poll(976_562));
    assert!(rtc.poll(976_563));
    get(&mut rtc, reg::C, 976_563);
    assert_eq!(rtc.next_irq_ns(), Some(1_953_125));
    // Rate 15: 2 Hz. Rates 1 and 2 mean 256 and 128 Hz.
    for (rate, period_ns) in [
        (15u8, 500_000_000u64),
        (3, 122_071),
        (1, 3_906_250),
        (2, 7_812_500),
    ] {
        let mut rtc = Rtc::new(0, 0, 0);
        set(&mut rtc, reg::A, 0x20 | rate, 0);
        set(&mut rtc, reg::B, REG_B_24H | REG_B_PIE, 0);
        assert_eq!(rtc.next_irq_ns(), Some(period_ns), "rate {rate}");
    }
    // Rate 0 or divider reset: no periodic interrupt.
    set(&mut rtc, reg::A, 0x20, SEC);
    assert_eq!(rtc.next_irq_ns(), None);
    set(&mut rtc, reg::A, 0x66, SEC);
    assert_eq!(rtc.next_irq_ns(), None);
    // Count interrupts over one second at 1024 Hz, reading C each time.
    let mut rtc = Rtc::new(0, 0, 0);
    set(&mut rtc, reg::B, REG_B_24H | REG_B_PIE, 0);
    let mut n = 0;
    while let Some(t) = rtc.next_irq_ns().filter(|&t| t <= SEC) {
        assert!(rtc.poll(t));
        get(&mut rtc, reg::C, t);
        n += 1;
    }
    assert_eq!(n, 1024);
}

#[test]
fn update_and_alarm_interrupts() {
    let mut rtc = Rtc::new(LEAP_DAY, 250_000_000, 0);
    set(&mut rtc, reg::B, REG_B_24H | REG_B_UIE, 0);
    assert_eq!(rtc.next_irq_ns(), Some(750_000_000));
    assert!(rtc.poll(750_000_000));
    get(&mut rtc, reg::C, 750_000_000);
    // Alarm at 12:35:10, interrupts on alarm only.
    set(&mut rtc, reg::HOURS_ALARM, 0x12, SEC);
    set(&mut rtc, reg::MINUTES_ALARM, 0x35, SEC);
    set(&mut rtc, reg::SECONDS_ALARM, 0x10, SEC);
    set(&mut rtc, reg::B, REG_B_24H | REG_B_AIE, SEC);
    let alarm = 750_000_000 + 13 * SEC; // 12:34:57 + 13 s
    assert_eq!(rtc.next_irq_ns(), Some(alarm));
    assert!(!rtc.poll(alarm - 1));
    assert!(rtc.poll(alarm));
    assert_eq!(
        get(&mut rtc, reg::C, alarm) & (REG_C_IRQF | REG_C_AF),
        REG_C_IRQF | REG_C_AF
    );
    // Next day, same time.
    assert_eq!(rtc.next_irq_ns(), Some(alarm + 86_400 * SEC));
    // Don't-care seconds: every second of 12:36.
    set(&mut rtc, reg::SECONDS_ALARM, 0xc0, alarm);
    set(&mut rtc, reg::MINUTES_ALARM, 0x36, alarm);
    assert_eq!(rtc.next_irq_ns(), Some(alarm + 50 * SEC));
    // Don't-care everything: every second.
    set(&mut rtc, reg::MINUTES_ALARM, 0xff, alarm);
    set(&mut rtc, reg::HOURS_ALARM, 0xff, alarm);
    assert_eq!(rtc.next_irq_ns(), Some(alarm + SEC));
    // An impossible alarm never fires.
    set(&mut rtc, reg::HOURS_ALARM, 0x25, alarm);
    assert_eq!(rtc.next_irq_ns(), None);
    // A missed alarm is still flagged when polled late.
    set(&mut rtc, reg::HOURS_ALARM, 0x13, alarm);
    set(&mut rtc, reg::MINUTES_ALARM, 0x00, alarm);
    set(&mut rtc, reg::SECONDS_ALARM, 0x00, alarm);
    assert!(rtc.poll(alarm + 7200 * SEC));
    // In 12-hour mode 1 PM is 0x81.
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    set(&mut rtc, reg::B, REG_B_AIE, 0);
    set(&mut rtc, reg::HOURS_ALARM, 0x81, 0);
    set(&mut rtc, reg::MINUTES_ALARM, 0x00, 0);
    set(&mut rtc, reg::SECONDS_ALARM, 0x00, 0);
    assert_eq!(rtc.next_irq_ns(), Some((25 * 60 + 4) * SEC));
}

#[test]
fn index_port_and_nvram() {
    let mut rtc = Rtc::new(0, 0, 0);
    rtc.write(0, 0x80 | 0x40, 0);
    assert!(rtc.nmi_disabled());
    rtc.write(1, 0xab, 0);
    assert_eq!(rtc.read(1, 0), 0xab);
    assert_eq!(rtc.read(0, 0), 0xff);
    rtc.write(0, 0x40, 0);
    assert!(!rtc.nmi_disabled());
    assert_eq!(rtc.read(1, 0), 0xab);
    assert_eq!(rtc.cmos_byte(0x40), 0xab);
    rtc.set_cmos_byte(0x0a, 0); // a clock register: refused
    assert_eq!(rtc.cmos_byte(0x0a), 0x26);
    rtc.set_cmos_byte(0x7f, 1);
    assert_eq!(get(&mut rtc, 0x7f, 0), 1);
    rtc.set_cmos_byte(0x80, 1);
    rtc.write(7, 1, 0);
    assert_eq!(rtc.read(7, 0), 0xff);
}

#[test]
fn memory_size_bytes() {
    let mut rtc = Rtc::new(0, 0, 0);
    rtc.set_memory_size(3 << 30, 5 << 30);
    assert_eq!(rtc.cmos_byte(0x15), 0x80);
    assert_eq!(rtc.cmos_byte(0x16), 0x02);
    assert_eq!((rtc.cmos_byte(0x17), rtc.cmos_byte(0x18)), (0xff, 0xff));
    assert_eq!((rtc.cmos_byte(0x30), rtc.cmos_byte(0x31)), (0xff, 0xff));
    let mid = (3u64 << 30) - (16 << 20);
    let mid = mid / 65536;
    assert_eq!(
        u64::from(rtc.cmos_byte(0x34)) | u64::from(rtc.cmos_byte(0x35)) << 8,
        mid
    );
    let high = (5u64 << 30) / 65536;
    let got = u64::from(rtc.cmos_byte(0x5b))
        | u64::from(rtc.cmos_byte(0x5c)) << 8
        | u64::from(rtc.cmos_byte(0x5d)) << 16;
    assert_eq!(got, high);
    let mut small = Rtc::new(0, 0, 0);
    small.set_memory_size(8 << 20, 0);
    assert_eq!((small.cmos_byte(0x17), small.cmos_byte(0x18)), (0x00, 0x1c));
    assert_eq!(small.cmos_byte(0x34), 0);
}

#[test]
fn garbage_does_not_panic() {
    let mut rtc = Rtc::new(i64::MAX / 1_000_000_000, 999_999_999, 0);
    let mut now = 0u64;
    for index in 0..=255u8 {
        for value in [0u8, 0x7f, 0x80, 0xc0, 0xff, 0x99, 0x3c] {
            rtc.write(0, index, now);
            rtc.write(1, value, now);
            rtc.read(1, now);
            rtc.poll(now);
            let _ = rtc.next_irq_ns();
            now += 123_457;
        }
    }
    // Invalid BCD and out-of-range dates while setting.
    set(&mut rtc, reg::B, REG_B_SET, now);
    for index in [0x00, 0x02, 0x04, 0x07, 0x08, 0x09, 0x32] {
        set(&mut rtc, index, 0xff, now);
    }
    set(&mut rtc, reg::B, REG_B_AIE | REG_B_UIE | REG_B_PIE, now);
    clock(&mut rtc, now + SEC);
    rtc.poll(u64::MAX);
    let _ = rtc.next_irq_ns();
    let state = RtcState {
        index: 0xff,
        epoch_offset_ns: i128::MAX,
        flags_ns: 0,
        ..RtcState::default()
    };
    let mut rtc = Rtc::from_state(state);
    clock(&mut rtc, u64::MAX);
    rtc.poll(u64::MAX);
    let _ = rtc.next_irq_ns();
}

#[test]
fn snapshot_round_trip() {
    let mut rtc = Rtc::new(LEAP_DAY, 0, 0);
    set(&mut rtc, reg::B, REG_B_24H | REG_B_PIE, 0);
    set(&mut rtc, 0x50, 0x77, 0);
    let state = rtc.state();
    let mut restored = Rtc::from_state(state.clone());
    assert_eq!(restored.state(), state);
    assert_eq!(restored.next_irq_ns(), rtc.next_irq_ns());
    assert_eq!(clock(&mut restored, 7 * SEC), clock(&mut rtc, 7 * SEC));
}
