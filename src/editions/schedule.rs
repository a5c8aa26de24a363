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
