//! The scheduler task: fires each edition at its cron times in its own time
//! zone, and instant editions on every publication event. A window already
//! run is never run again (the `edition_runs` primary key), and after
//! downtime only the latest missed window runs: one catch-up, not one per
//! missed period (DESIGN.md invariant 8). With PostgreSQL, one daemon at a
//! time holds an advisory lock and schedules; the others stand by.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::run::run_edition;
use super::schedule::CronSchedule;
use crate::config::{Edition, ScheduleSpec};
use crate::publisher::Snapshot;
use crate::signals::Signals;
use crate::store::editions as store;
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
                    let since = self.since(edition, now).await?;
                    let ran = match due_window(schedule, edition.timezone, since, now) {
                        Some(window) => {
                            tracing::info!(edition = %edition.slug, window = %window.to_rfc3339(), "edition due");
                            let report = run_edition(
                                &self.db,
                                &snapshot.settings,
                                &snapshot.catalog,
                                edition,
                                &window_key(window),
                                now,
                                false,
                            )
                            .await?;
                            report.enqueued > 0
                        }
                        None => false,
                    };
                    if let Some(n) = schedule.next_after(now, edition.timezone) {
                        next = Some(next.map_or(n, |m| m.min(n)));
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

    /// The last window run for `edition`, or when it was first scheduled.
    async fn since(&self, edition: &Edition, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
        let last = store::last_cron_window(&self.db, edition.slug.as_str()).await?;
        if let Some(t) = last
            .as_deref()
            .and_then(|k| k.strip_prefix("cron:"))
            .and_then(|k| DateTime::parse_from_rfc3339(k).ok())
        {
            return Ok(t.with_timezone(&Utc));
        }
        let key = format!("edition_anchor:{}", edition.slug);
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
