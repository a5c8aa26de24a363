//! The scheduler task: fires each edition at its cron times in its own time
//! zone, and instant editions on every publication event. A window already
//! run is never run again (the `edition_runs` primary key), and after
//! downtime only the latest missed window runs: one catch-up, not one per
//! missed period (DESIGN.md invariant 8). With PostgreSQL, one daemon at a
//! time holds an advisory lock and schedules; the others stand by.
//!
//! An edition with `local_time` is scheduled per time zone in use: one
//! query finds the zones of its confirmed subscribers, and each zone has
//! its own windows (keys ending in `@zone`), its own catch-up and its own
//! run, which reads only that zone's subscribers.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::run::{run_edition, run_edition_for, Audience};
use super::schedule::CronSchedule;
use crate::config::{Edition, ScheduleSpec};
use crate::publisher::Snapshot;
use crate::signals::Signals;
use crate::store::editions::{self as store, ZoneFilter};
use crate::store::{Backend, Db};

/// Lock id of the scheduler's PostgreSQL advisory lock.
const LEADER_LOCK: i64 = 0x6361_7365_7769_7265; // "casewire"

/// The window to run now, if any: the latest fire time in `(since, now]`.
/// `since` is the last window run, or when the edition was first scheduled,
/// so a new edition does not fire for a time before it existed.
pub fn due_window(
    schedule: &CronSchedule,
    tz: Tz,
    since: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let mut latest = None;
    let mut t = since;
    // Bounded walk; a minutely schedule over a year of downtime is ~525k steps.
    for _ in 0..1_000_000 {
        match schedule.next_after(t, tz) {
            Some(next) if next <= now => {
                latest = Some(next);
                t = next;
            }
            _ => break,
        }
    }
    latest
}

pub struct Scheduler {
    pub db: Db,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    /// `published` wakes this task (instant editions); it sends `outbox`
    /// after an edition run queued messages.
    pub signals: Signals,
}

impl Scheduler {
    pub async fn run(self, shutdown: CancellationToken) {
        // Hold the leader lock on one dedicated connection for as long as we schedule.
        let _leader = loop {
            match self.acquire_leadership().await {
                Ok(Some(conn)) => break Some(conn),
                Ok(None) if self.db.backend == Backend::Sqlite => break None,
                Ok(None) => {}
                Err(e) => tracing::warn!("scheduler leadership check failed: {e}"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(10)) => {}
            }
        };
        loop {
            let wake = match self.tick(Utc::now()).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::error!("scheduler: {e:#}");
                    Some(Utc::now() + chrono::Duration::seconds(30))
                }
            };
            let sleep = wake
                .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(Duration::from_secs(3600))
                .min(Duration::from_secs(3600));
            let mut snapshot = self.snapshot.clone();
            snapshot.mark_unchanged();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.signals.published.notified() => {}
                // New settings (a reload) may bring editions or schedules
                // that fire before the time computed above.
                _ = settings_changed(&mut snapshot) => {}
                _ = tokio::time::sleep(sleep + Duration::from_millis(5)) => {}
            }
        }
    }

    async fn acquire_leadership(
        &self,
    ) -> anyhow::Result<Option<sqlx::pool::PoolConnection<sqlx::Any>>> {
        if self.db.backend == Backend::Sqlite {
            return Ok(None);
        }
        Ok(store::try_leader_lock(&self.db, LEADER_LOCK).await?)
    }

    /// Runs whatever is due at `now`; returns the next cron fire time.
    pub async fn tick(&self, now: DateTime<Utc>) -> anyhow::Result<Option<DateTime<Utc>>> {
        let snapshot = self.snapshot.borrow().clone();
        let mut next: Option<DateTime<Utc>> = None;
        for edition in &snapshot.settings.editions {
            let ran = match &edition.schedule {
                ScheduleSpec::Instant => self.instant(&snapshot, edition, now).await?,
                ScheduleSpec::Cron(schedule) => {
                    let latest =
                        store::latest_cron_windows(&self.db, edition.slug.as_str()).await?;
                    let zones = if edition.local_time {
                        store::zones_in_use(
                            &self.db,
                            edition.slug.as_str(),
                            edition.timezone.name(),
                        )
                        .await?
                    } else {
                        Vec::new()
                    };
                    let mut ran = false;
                    // The edition's own zone always has its windows (key zone
                    // ''), so `schedule` and wake-ups work before anyone subscribes.
                    let mut groups: Vec<(&str, Tz)> = vec![("", edition.timezone)];
                    for (name, _) in &zones {
                        match name.parse::<Tz>() {
                            Ok(tz) if tz == edition.timezone => {}
                            Ok(tz) => groups.push((name.as_str(), tz)),
                            Err(_) => {
                                tracing::warn!(edition = %edition.slug, zone = %name, "subscribers have a time zone this build does not know; they get no digest until it is fixed (casewire subscribers list)")
                            }
                        }
                    }
                    let newly = self.note_zones_in_use(edition, &groups).await?;
                    for (zone, tz) in groups {
                        let last = latest.iter().find(|l| l.zone == zone);
                        let new = newly.iter().any(|z| z == zone);
                        ran |= self
                            .cron_zone(&snapshot, edition, schedule, (zone, tz, new), last, now)
                            .await?;
                        if let Some(n) = schedule.next_after(now, tz) {
                            next = Some(next.map_or(n, |m| m.min(n)));
                        }
                    }
                    ran
                }
            };
            if ran {
                self.signals.outbox_queued();
            }
        }
        Ok(next)
    }

    /// Records which zones of a `local_time` edition are in use now and
    /// returns those that were not at the last tick (stored, so downtime
    /// does not make every zone look new). A zone that comes (back) into
    /// use starts its windows now, like a new edition: its subscribers get
    /// their first digest at its next local fire time, not a late catch-up
    /// for a window fired while nobody was in it. Written before any run,
    /// so a run that fails does not make the zone new again.
    async fn note_zones_in_use(
        &self,
        edition: &Edition,
        groups: &[(&str, Tz)],
    ) -> anyhow::Result<Vec<String>> {
        let key = format!("edition_zones:{}", edition.slug);
        let before = self.db.get_meta(&key).await?.unwrap_or_default();
        let before: Vec<&str> = before.split(',').collect();
        let now: Vec<&str> = groups
            .iter()
            .map(|(z, _)| *z)
            .filter(|z| !z.is_empty())
            .collect();
        let newly: Vec<String> = now
            .iter()
            .filter(|z| !before.contains(z))
            .map(|z| z.to_string())
            .collect();
        let joined = now.join(",");
        if before.join(",") != joined {
            self.db.set_meta(&key, &joined).await?;
        }
        Ok(newly)
    }

    /// Runs the window of one zone of a cron edition that is due at `now`,
    /// or resumes its latest window when a crash left it unfinished and no
    /// newer one is due (a newer one covers everything the old one would
    /// have, as cursors only move with the digests they queue). The zone is
    /// '' for the edition's own zone, which also holds every subscriber who
    /// chose none; `new` when it was not in use at the last tick. Returns
    /// whether digests were queued.
    async fn cron_zone(
        &self,
        snapshot: &Snapshot,
        edition: &Edition,
        schedule: &CronSchedule,
        (zone, tz, new): (&str, Tz, bool),
        last: Option<&store::LatestWindow>,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let last_fired = last.and_then(|l| window_time(&l.window_key));
        // A zone back in use has a fresh anchor, later than its old windows.
        let anchor = self.anchor(edition, zone, now, new).await?;
        let since = last_fired.map_or(anchor, |t| t.max(anchor));
        let window = match due_window(schedule, tz, since, now) {
            Some(w) => w,
            None => match (last, last_fired) {
                (Some(l), Some(t)) if !l.finished && t >= anchor => {
                    tracing::info!(edition = %edition.slug, window = %l.window_key, "resuming an unfinished edition run");
                    t
                }
                _ => return Ok(false),
            },
        };
        let key = zone_window_key(window, zone);
        tracing::info!(edition = %edition.slug, window = %key, "edition due");
        let audience = Audience {
            zone: edition.local_time.then_some(ZoneFilter {
                zone: if zone.is_empty() {
                    edition.timezone.name()
                } else {
                    zone
                },
                includes_unset: zone.is_empty(),
            }),
            fired_at: Some(window),
            period_start: if edition.local_time {
                schedule.previous_before(window, tz)
            } else {
                None
            },
        };
        let report = run_edition_for(
            &self.db,
            &snapshot.settings,
            &snapshot.catalog,
            edition,
            &key,
            audience,
            now,
            false,
        )
        .await?;
        Ok(report.enqueued > 0)
    }

    /// When the windows of `edition` in `zone` start counting: stored the
    /// first time the zone is scheduled (and again, with `reset`, when it
    /// comes back into use), so a new edition or a zone newly in use does
    /// not fire for a time before it existed.
    async fn anchor(
        &self,
        edition: &Edition,
        zone: &str,
        now: DateTime<Utc>,
        reset: bool,
    ) -> anyhow::Result<DateTime<Utc>> {
        let key = if zone.is_empty() {
            format!("edition_anchor:{}", edition.slug)
        } else {
            format!("edition_anchor:{}@{zone}", edition.slug)
        };
        if reset {
            self.db.set_meta(&key, &now.to_rfc3339()).await?;
            return Ok(now);
        }
        match self.db.get_meta(&key).await? {
            Some(v) => Ok(DateTime::parse_from_rfc3339(&v)
                .map(|t| t.with_timezone(&Utc))
                .unwrap_or(now)),
            None => {
                self.db.set_meta(&key, &now.to_rfc3339()).await?;
                Ok(now)
            }
        }
    }

    /// Instant editions run once per new high-water mark of publication events.
    async fn instant(
        &self,
        snapshot: &Snapshot,
        edition: &Edition,
        now: DateTime<Utc>,
    ) -> anyhow::Result<bool> {
        let current = store::current_high_water(&self.db).await?;
        let done = store::finished_high_water(&self.db, edition.slug.as_str()).await?;
        if current == 0 || done.is_some_and(|d| d >= current) {
            return Ok(false);
        }
        let report = run_edition(
            &self.db,
            &snapshot.settings,
            &snapshot.catalog,
            edition,
            &format!("events:{current}"),
            now,
            false,
        )
        .await?;
        Ok(report.enqueued > 0)
    }
}

/// Returns when the snapshot's settings are replaced (content changes that
/// keep the settings do not count); never, once the publisher is gone.
async fn settings_changed(snapshot: &mut watch::Receiver<Arc<Snapshot>>) {
    let current = snapshot.borrow().settings.clone();
    loop {
        if snapshot.changed().await.is_err() {
            return std::future::pending().await;
        }
        if !Arc::ptr_eq(&snapshot.borrow_and_update().settings, &current) {
            return;
        }
    }
}

/// Window keys sort in time order: "cron:" + RFC 3339 UTC with a fixed width.
pub fn window_key(t: DateTime<Utc>) -> String {
    format!("cron:{}", t.format("%Y-%m-%dT%H:%M:%SZ"))
}

/// The key of a window of one zone of a `local_time` edition:
/// `cron:2026-03-08T01:30:00Z@Asia/Kolkata`. The edition's own zone ('')
/// keeps the plain [`window_key`], so turning `local_time` on or off keeps
/// that zone's windows. Keys of one zone share the suffix, so they still
/// sort in time order; the subscriber id completes each digest's dedupe key.
pub fn zone_window_key(t: DateTime<Utc>, zone: &str) -> String {
    if zone.is_empty() {
        window_key(t)
    } else {
        format!("{}@{zone}", window_key(t))
    }
}

/// The fire time a window key names.
pub fn window_time(key: &str) -> Option<DateTime<Utc>> {
    let time = key.strip_prefix("cron:")?;
    let time = time.split_once('@').map_or(time, |(t, _)| t);
    DateTime::parse_from_rfc3339(time)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zone_window_keys_name_their_fire_time_and_sort_by_it() {
        let t = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let a = zone_window_key(t("2026-03-08T01:30:00Z"), "Asia/Kolkata");
        let b = zone_window_key(t("2026-03-09T01:30:00Z"), "Asia/Kolkata");
        assert_eq!(a, "cron:2026-03-08T01:30:00Z@Asia/Kolkata");
        assert!(a < b);
        assert_eq!(window_time(&a), Some(t("2026-03-08T01:30:00Z")));
        assert_eq!(
            zone_window_key(t("2026-03-08T01:30:00Z"), ""),
            "cron:2026-03-08T01:30:00Z"
        );
        assert_eq!(
            window_time("cron:2026-03-08T01:30:00Z"),
            Some(t("2026-03-08T01:30:00Z"))
        );
        assert_eq!(window_time("events:12"), None);
    }
}
