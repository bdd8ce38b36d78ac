//! Standard cron schedules (`minute hour day-of-month month day-of-week`, with lists,
//! ranges, steps, month and weekday names, and the `@hourly`/`@daily`/… macros),
//! evaluated on whole minutes of a [`Zone`]'s wall clock (UTC unless a cron job names a
//! `timeZone`).

/// Minutes since the Unix epoch.
pub type Minute = i64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u32,
    days: u32,
    months: u16,
    weekdays: u8,
    days_star: bool,
    weekdays_star: bool,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const WEEKDAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn field(text: &str, lo: u32, hi: u32, names: &[&str], what: &str) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        let l = s.to_ascii_lowercase();
        if let Some(i) = names.iter().position(|n| *n == l) {
            return Ok(i as u32 + if names.len() == 12 { 1 } else { 0 });
        }
        s.parse::<u32>()
            .map_err(|_| format!("{what}: {s:?} is not a number"))
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (
                r,
                s.parse::<u32>()
                    .map_err(|_| format!("{what}: bad step {s:?}"))?,
            ),
            None => (part, 1),
        };
        if step == 0 {
            return Err(format!("{what}: step must be positive"));
        }
        let (a, b) = if range == "*" || range == "?" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            (v, if part.contains('/') { hi } else { v })
        };
        // Day of week 7 is Sunday too.
        let (a, b) = if names.len() == 7 {
            (a.min(7), b.min(7))
        } else {
            (a, b)
        };
        if a < lo || b > hi.max(if names.len() == 7 { 7 } else { hi }) || a > b {
            return Err(format!("{what}: {part:?} is out of range {lo}-{hi}"));
        }
        let mut v = a;
        while v <= b {
            let bit = if names.len() == 7 && v == 7 { 0 } else { v };
            bits |= 1 << bit;
            v += step;
        }
    }
    Ok((bits, text == "*" || text == "?"))
}

impl Schedule {
    pub fn parse(s: &str) -> Result<Schedule, String> {
        let expanded = match s.trim() {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            other => other,
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(format!(
                "expected exactly 5 fields, found {}: {s:?}",
                f.len()
            ));
        }
        let (minutes, _) = field(f[0], 0, 59, &[], "minute")?;
        let (hours, _) = field(f[1], 0, 23, &[], "hour")?;
        let (days, days_star) = field(f[2], 1, 31, &[], "day of month")?;
        let (months, _) = field(f[3], 1, 12, &MONTHS, "month")?;
        let (weekdays, weekdays_star) = field(f[4], 0, 6, &WEEKDAYS, "day of week")?;
        Ok(Schedule {
            minutes,
            hours: hours as u32,
            days: days as u32,
            months: months as u16,
            weekdays: weekdays as u8,
            days_star,
            weekdays_star,
        })
    }

    pub fn matches(&self, t: Minute) -> bool {
        let (_, mo, d) = civil(t.div_euclid(1440));
        let minute = t.rem_euclid(60) as u32;
        let hour = (t.rem_euclid(1440) / 60) as u32;
        let weekday = (t.div_euclid(1440) + 4).rem_euclid(7) as u32; // 1970-01-01 was a Thursday
        let day_ok = self.days & (1 << d) != 0;
        let wd_ok = self.weekdays & (1 << weekday) != 0;
        let day = if self.days_star || self.weekdays_star {
            day_ok && wd_ok
        } else {
            day_ok || wd_ok
        };
        self.minutes & (1 << minute) != 0
            && self.hours & (1 << hour) != 0
            && self.months & (1 << mo) != 0
            && day
    }

    /// The latest scheduled minute (UTC) in (after, now], if any (looking back at most a
    /// year), with the schedule read on `zone`'s clock.
    pub fn latest(&self, after: Minute, now: Minute, zone: &Zone) -> Option<Minute> {
        let floor = after.max(now - 366 * 1440);
        (floor + 1..=now)
            .rev()
            .find(|t| self.matches(zone.wall(*t)))
    }

    /// The first scheduled minute (UTC) after `now` (within a year).
    pub fn next(&self, now: Minute, zone: &Zone) -> Option<Minute> {
        (now + 1..=now + 366 * 1440).find(|t| self.matches(zone.wall(*t)))
    }
}

/// The clock a schedule is read on: UTC, or a zone of the system's time zone database
/// (`/usr/share/zoneinfo`, as Kubernetes reads Go's), daylight saving included: a wall
/// time skipped by a spring-forward does not run, one repeated by a fall-back runs twice.
#[derive(Debug, Clone, Default)]
pub struct Zone(Option<jiff::tz::TimeZone>);

impl Zone {
    /// The zone `spec.timeZone` names (None or empty: UTC).
    pub fn named(name: Option<&str>) -> Result<Zone, String> {
        match name.filter(|n| !n.is_empty()) {
            None => Ok(Zone(None)),
            Some(n) => jiff::tz::TimeZone::get(n)
                .map(|tz| Zone(Some(tz)))
                .map_err(|_| format!("unknown time zone {n}")),
        }
    }

    /// The wall-clock minute (counted like minutes since the epoch) at UTC minute `t`.
    fn wall(&self, t: Minute) -> Minute {
        let Some(tz) = &self.0 else { return t };
        match jiff::Timestamp::from_second(t * 60) {
            Ok(at) => t + i64::from(tz.to_offset(at).seconds()).div_euclid(60),
            Err(_) => t,
        }
    }
}

/// (year, month 1-12, day 1-31) of a day number since 1970-01-01.
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-25 10:42 UTC (a Wednesday) in minutes since the epoch.
    const T: Minute = 29_926_722;

    #[test]
    fn civil_dates() {
        assert_eq!(civil(0), (1970, 1, 1));
        assert_eq!(civil(20_417), (2025, 11, 25));
        assert_eq!(civil(T.div_euclid(1440)), (2026, 11, 25));
    }

    #[test]
    fn schedules() {
        let every = Schedule::parse("* * * * *").unwrap();
        let utc = Zone::default();
        assert_eq!(every.latest(T - 5, T, &utc), Some(T));
        assert_eq!(every.next(T, &utc), Some(T + 1));
        let quarter = Schedule::parse("*/15 * * * *").unwrap();
        assert!(quarter.matches(T - T % 60));
        assert_eq!(quarter.next(T - T % 60, &utc), Some(T - T % 60 + 15));
        let weekdays = Schedule::parse("0 9 * * mon-fri").unwrap();
        let days = (0..7 * 1440).filter(|m| weekdays.matches(T + m)).count();
        assert_eq!(days, 5);
        assert_eq!(
            Schedule::parse("@daily").unwrap(),
            Schedule::parse("0 0 * * *").unwrap()
        );
        assert!(Schedule::parse("0 0 * *").unwrap_err().contains("5 fields"));
        assert!(Schedule::parse("61 * * * *")
            .unwrap_err()
            .contains("minute"));
        let sunday = Schedule::parse("0 0 * * 7").unwrap();
        assert_eq!(sunday, Schedule::parse("0 0 * * sun").unwrap());
    }

    #[test]
    fn time_zones_follow_daylight_saving() {
        let nine = Schedule::parse("0 9 * * *").unwrap();
        let york = Zone::named(Some("America/New_York")).unwrap();
        // T is in November (EST, UTC-5): 09:00 there is 14:00 UTC.
        let day = T - T.rem_euclid(1440);
        assert_eq!(nine.next(day, &york), Some(day + 14 * 60));
        // 2026-07-01 (EDT, UTC-4): 13:00 UTC.
        let july = 20_635 * 1440;
        assert_eq!(civil(20_635), (2026, 7, 1));
        assert_eq!(nine.next(july, &york), Some(july + 13 * 60));
        assert_eq!(Zone::named(Some("")).unwrap().wall(T), T);
        assert_eq!(
            Zone::named(Some("Mars/Olympus")).unwrap_err(),
            "unknown time zone Mars/Olympus"
        );
    }
}
