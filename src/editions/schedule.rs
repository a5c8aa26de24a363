//! Edition schedules: 5-field crontab expressions evaluated in the edition's
//! IANA time zone, with the semantics operators know from cron(8): Sunday is 0
//! or 7, names (MON, JAN) and @daily/@weekly work, and day-of-month and
//! day-of-week are OR-ed. Daylight-saving changes fire once per period: a time
//! skipped by spring-forward runs at the end of the gap, and a time repeated by
//! fall-back runs only the first time.

use chrono::{DateTime, Duration, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// A parsed, valid cron expression.
#[derive(Debug, Clone)]
pub struct CronSchedule {
    cron: Cron,
    source: String,
}

#[derive(Debug, thiserror::Error)]
#[error("{expr:?} is not a cron schedule ({reason}); expected 5 fields like \"0 8 * * MON\", @daily, @weekly or \"instant\"")]
pub struct ScheduleError {
    expr: String,
    reason: String,
}

/// Parses a 5-field crontab expression or an @-macro; a seconds field is refused.
pub fn parse_cron(expr: &str) -> Result<CronSchedule, ScheduleError> {
    let expr = expr.trim();
    let fail = |reason: String| ScheduleError {
        expr: expr.to_owned(),
        reason,
    };
    if !expr.starts_with('@') && expr.split_whitespace().count() != 5 {
        return Err(fail(format!(
            "it has {} fields",
            expr.split_whitespace().count()
        )));
    }
    let cron = Cron::new(expr).parse().map_err(|e| fail(e.to_string()))?;
    Ok(CronSchedule {
        cron,
        source: expr.to_owned(),
    })
}

impl CronSchedule {
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The first fire time strictly after `after`, in UTC.
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let mut cursor = after.with_timezone(&tz).naive_local();
        // Bounded: a valid expression matches within a few years; the loop
        // only repeats for candidates that fall in a fall-back overlap we skip.
        for _ in 0..10_000 {
            let candidate = self.next_naive(cursor)?;
            cursor = candidate;
            match tz.from_local_datetime(&candidate) {
                LocalResult::Single(t) => {
                    let t = t.with_timezone(&Utc);
                    if t > after {
                        return Some(t);
                    }
                }
                // Fall-back: the wall time happens twice; fire only at the first.
                LocalResult::Ambiguous(first, _) => {
                    let first = first.with_timezone(&Utc);
                    if first > after {
                        return Some(first);
                    }
                }
                // Spring-forward: the wall time never happens; fire when the gap ends.
                LocalResult::None => {
                    let end = gap_end(tz, candidate)?;
                    if end > after {
                        return Some(end);
                    }
                }
            }
        }
        None
    }

    /// The last fire time strictly before `before`: where the period that
    /// ends at `before` begins. Searched backwards in growing steps, so a
    /// minutely schedule costs a few dozen steps and a Feb-29 one a few more.
    pub fn previous_before(&self, before: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let mut lookback = Duration::hours(1);
        while lookback <= Duration::days(9 * 366) {
            let mut cursor = before - lookback;
            let mut last = None;
            while let Some(next) = self.next_after(cursor, tz) {
                if next >= before {
                    break;
                }
                last = Some(next);
                cursor = next;
            }
            if last.is_some() {
                return last;
            }
            lookback = lookback * 4;
        }
        None
    }

    /// The next `n` fire times after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t, tz) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The next matching wall-clock time strictly after `naive` (no zone).
    fn next_naive(&self, naive: NaiveDateTime) -> Option<NaiveDateTime> {
        let as_utc = Utc.from_utc_datetime(&naive);
        self.cron
            .find_next_occurrence(&as_utc, false)
            .ok()
            .map(|t| t.naive_utc())
    }
}

/// The first instant at or after a non-existent local time: the end of the gap.
fn gap_end(tz: Tz, naive: NaiveDateTime) -> Option<DateTime<Utc>> {
    let mut probe = naive;
    for _ in 0..(26 * 60) {
        probe += Duration::minutes(1);
        if let Some(t) = tz.from_local_datetime(&probe).earliest() {
            return Some(t.with_timezone(&Utc));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Berlin;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn operators_syntax_is_accepted() {
        for ok in [
            "0 8 * * MON",
            "0 8 * * 0",
            "0 8 * * 7",
            "*/15 * * * *",
            "0 9 1 JAN *",
            "@daily",
            "@weekly",
            "30 6 * * 1-5",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}");
        }
        for bad in [
            "0 0 8 * * MON",
            "8 * *",
            "61 * * * *",
            "0 25 * * *",
            "banana",
            "",
        ] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sunday_is_zero_and_seven() {
        let after = utc("2026-11-21T00:00:00Z"); // a Saturday
        let zero = parse_cron("0 8 * * 0")
            .unwrap()
            .next_after(after, chrono_tz::UTC)
            .unwrap();
        let seven = parse_cron("0 8 * * 7")
            .unwrap()
            .next_after(after, chrono_tz::UTC)
            .unwrap();
        let sun = parse_cron("0 8 * * SUN")
            .unwrap()
            .next_after(after, chrono_tz::UTC)
            .unwrap();
        assert_eq!(zero, utc("2026-11-22T08:00:00Z"));
        assert_eq!((zero, zero), (seven, sun));
    }

    #[test]
    fn fires_in_the_editions_time_zone() {
        let s = parse_cron("0 8 * * MON").unwrap();
        // Winter: Berlin is UTC+1; summer: UTC+2.
        assert_eq!(
            s.next_after(utc("2026-11-21T00:00:00Z"), Berlin),
            Some(utc("2026-11-23T07:00:00Z"))
        );
        assert_eq!(
            s.next_after(utc("2026-06-01T12:00:00Z"), Berlin),
            Some(utc("2026-06-08T06:00:00Z"))
        );
    }

    #[test]
    fn spring_forward_runs_at_the_end_of_the_gap_once() {
        // 2026-03-29: Berlin clocks jump from 02:00 to 03:00.
        let s = parse_cron("30 2 * * *").unwrap();
        let fires = s.upcoming(utc("2026-03-28T12:00:00Z"), Berlin, 3);
        assert_eq!(
            fires[0],
            utc("2026-03-29T01:00:00Z"),
            "02:30 does not exist: runs at 03:00 local"
        );
        assert_eq!(
            fires[1],
            utc("2026-03-30T00:30:00Z"),
            "then 02:30 CEST as usual"
        );
        // Every quarter hour inside the gap collapses to one run.
        let q =
            parse_cron("*/15 2 * * *")
                .unwrap()
                .upcoming(utc("2026-03-28T23:00:00Z"), Berlin, 2);
        assert_eq!(q[0], utc("2026-03-29T01:00:00Z"));
        assert_eq!(q[1], utc("2026-03-30T00:00:00Z"));
    }

    #[test]
    fn the_previous_fire_time_starts_the_period() {
        let daily = parse_cron("0 7 * * *").unwrap();
        let ny = chrono_tz::America::New_York;
        // 2026-03-08: New York springs forward; 07:00 EDT is 11:00 UTC, the day before 12:00 UTC.
        assert_eq!(
            daily.previous_before(utc("2026-03-08T11:00:00Z"), ny),
            Some(utc("2026-03-07T12:00:00Z"))
        );
        assert_eq!(
            daily.previous_before(utc("2026-03-08T11:00:01Z"), ny),
            Some(utc("2026-03-08T11:00:00Z"))
        );
        let weekly = parse_cron("0 8 * * MON").unwrap();
        assert_eq!(
            weekly.previous_before(utc("2026-11-23T07:00:00Z"), Berlin),
            Some(utc("2026-11-16T07:00:00Z"))
        );
        let leap = parse_cron("0 0 29 2 *").unwrap();
        assert_eq!(
            leap.previous_before(utc("2028-02-29T00:00:00Z"), chrono_tz::UTC),
            Some(utc("2024-02-29T00:00:00Z"))
        );
        let minutely = parse_cron("* * * * *").unwrap();
        assert_eq!(
            minutely.previous_before(utc("2026-01-01T00:00:00Z"), chrono_tz::UTC),
            Some(utc("2025-12-31T23:59:00Z"))
        );
    }

    #[test]
    fn fall_back_runs_once() {
        // 2026-10-25: Berlin clocks go from 03:00 back to 02:00; 02:30 happens twice.
        let s = parse_cron("30 2 * * *").unwrap();
        let fires = s.upcoming(utc("2026-10-24T12:00:00Z"), Berlin, 2);
        assert_eq!(
            fires[0],
            utc("2026-10-25T00:30:00Z"),
            "the first 02:30 (CEST)"
        );
        assert_eq!(
            fires[1],
            utc("2026-10-26T01:30:00Z"),
            "not the second 02:30 (CET) the same day"
        );
        // Asked from between the two 02:30s, it still does not fire again that day.
        assert_eq!(
            s.next_after(utc("2026-10-25T01:10:00Z"), Berlin),
            Some(utc("2026-10-26T01:30:00Z"))
        );
    }
}
