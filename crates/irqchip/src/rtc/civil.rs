//! UTC civil time from UNIX time and back, in the proleptic Gregorian
//! calendar (Howard Hinnant's `days_from_civil` / `civil_from_days`).
//! Every input is accepted: out-of-range months or days (from a guest's
//! garbage) give some date instead of a panic.

/// Seconds in a day.
pub const SECS_PER_DAY: i64 = 86_400;

/// A UTC date and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct DateTime {
    pub year: i64,
    /// 1–12.
    pub month: u8,
    /// 1–31.
    pub day: u8,
    pub hour: u8,
    pub minute: u8,
    pub second: u8,
    /// 0 = Sunday … 6 = Saturday.
    pub weekday: u8,
}

/// Days since 1970-01-01 of the date `year-month-day`.
pub fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400; // [0, 399]
    let mp = (month + 9).rem_euclid(12); // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date (year, month 1–12, day 1–31) `days` days after 1970-01-01.
pub fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day of the week (0 = Sunday) of the day `days` after 1970-01-01 (a
/// Thursday).
pub fn weekday_from_days(days: i64) -> u8 {
    (days + 4).rem_euclid(7) as u8
}

impl DateTime {
    /// The UTC date and time of UNIX time `secs`.
    pub fn from_unix(secs: i64) -> DateTime {
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        DateTime {
            year,
            month,
            day,
            hour: (sod / 3600) as u8,
            minute: (sod / 60 % 60) as u8,
            second: (sod % 60) as u8,
            weekday: weekday_from_days(days),
        }
    }

    /// UNIX time of this date and time (the weekday is ignored).
    /// Out-of-range fields carry over (a 25th hour is the next day).
    pub fn to_unix(&self) -> i64 {
        days_from_civil(self.year, i64::from(self.month), i64::from(self.day))
            .saturating_mul(SECS_PER_DAY)
            .saturating_add(i64::from(self.hour) * 3600)
            .saturating_add(i64::from(self.minute) * 60)
            .saturating_add(i64::from(self.second))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dt(
        year: i64,
        month: u8,
        day: u8,
        hour: u8,
        minute: u8,
        second: u8,
        weekday: u8,
    ) -> DateTime {
        DateTime {
            year,
            month,
            day,
            hour,
            minute,
            second,
            weekday,
        }
    }

    #[test]
    fn known_unix_times() {
        let cases = [
            (0, dt(1970, 1, 1, 0, 0, 0, 4)),
            (951_782_400, dt(2000, 2, 29, 0, 0, 0, 2)),
            (951_868_800, dt(2000, 3, 1, 0, 0, 0, 3)),
            (1_709_208_000, dt(2024, 2, 29, 12, 0, 0, 4)),
            (2_147_483_647, dt(2038, 1, 19, 3, 14, 7, 2)),
            (4_107_456_000, dt(2100, 2, 28, 0, 0, 0, 0)),
            (4_107_542_400, dt(2100, 3, 1, 0, 0, 0, 1)),
            (-86_400, dt(1969, 12, 31, 0, 0, 0, 3)),
            (1_700_000_000, dt(2023, 11, 14, 22, 13, 20, 2)),
            (4_102_444_799, dt(2099, 12, 31, 23, 59, 59, 4)),
            (253_402_300_799, dt(9999, 12, 31, 23, 59, 59, 5)),
        ];
        for (secs, expected) in cases {
            assert_eq!(DateTime::from_unix(secs), expected, "{secs}");
            assert_eq!(expected.to_unix(), secs, "{expected:?}");
        }
    }

    #[test]
    fn every_day_round_trips() {
        for days in -800_000..800_000 {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, i64::from(m), i64::from(d)), days);
        }
    }

    #[test]
    fn leap_years() {
        let feb29 = |y| civil_from_days(days_from_civil(y, 2, 29)) == (y, 2, 29);
        assert!(feb29(2000));
        assert!(feb29(2024));
        assert!(!feb29(1900));
        assert!(!feb29(2100));
        assert!(!feb29(2023));
    }

    #[test]
    fn garbage_fields_do_not_panic() {
        for m in [0u8, 13, 99, 255] {
            for d in [0u8, 32, 255] {
                let t = dt(i64::from(m) * 100, m, d, 255, 255, 255, 0).to_unix();
                let _ = DateTime::from_unix(t);
            }
        }
        let _ = DateTime::from_unix(i64::MAX);
        let _ = DateTime::from_unix(i64::MIN);
        let _ = dt(i64::MAX / 400, 1, 1, 0, 0, 0, 0).to_unix();
    }
}
