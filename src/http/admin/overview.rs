//! The overview (`GET /admin/`): relay health, outbox by state, each
//! edition's last and next run with what became of its digests, bounce and
//! complaint rates, subscribers by status, and the content's problems.
//!
//! The counts come from the counters the database keeps by trigger
//! ([`crate::store::tallies`]), so even the first load reads a few hundred
//! rows on a list of a million. They are kept for [`FRESH`] and refreshed in
//! the background when older (the page shows their age).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Query;
use axum::response::Response;
use chrono::{DateTime, Utc};
use minijinja::Value;

use super::{notice, when, AdminState, Console};
use crate::config::{ScheduleSpec, Settings};
use crate::store::admin::{self as store, Run, RunCounts};
use crate::store::bounces::Rates;
use crate::store::{Db, StoreError};

/// How long counts are shown without a refresh.
pub const FRESH: Duration = Duration::from_secs(10);

/// The expensive part of the overview.
#[derive(Debug, Clone)]
pub struct Counts {
    pub at: DateTime<Utc>,
    pub outbox: Vec<(String, i64)>,
    pub subscribers: Vec<(String, i64)>,
    /// The last run of each edition that has one, with its digests' states.
    pub runs: HashMap<String, (Run, RunCounts)>,
    pub rates: Vec<(&'static str, Rates)>,
}

#[derive(Default)]
pub struct Cache {
    /// A std Mutex: held only to read or replace the pointer, never across an await.
    current: std::sync::Mutex<Option<(Instant, Arc<Counts>)>>,
    refreshing: AtomicBool,
}

/// The overview's counts: fresh ones from the cache; stale ones at once
/// while a refresh runs in the background; none yet: counted now.
pub async fn counts(
    admin: &Arc<AdminState>,
    db: &Db,
    settings: &Arc<Settings>,
) -> Result<Arc<Counts>, StoreError> {
    let cached = admin
        .overview
        .current
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    match cached {
        Some((taken, counts)) if taken.elapsed() < FRESH => Ok(counts),
        Some((_, counts)) => {
            if !admin.overview.refreshing.swap(true, Ordering::AcqRel) {
                let (admin, db, settings) = (admin.clone(), db.clone(), settings.clone());
                tokio::spawn(async move {
                    if let Err(e) = refresh(&admin, &db, &settings).await {
                        tracing::warn!(error = %e, "cannot refresh the console's overview counts");
                    }
                    admin.overview.refreshing.store(false, Ordering::Release);
                });
            }
            Ok(counts)
        }
        None => refresh(admin, db, settings).await,
    }
}

/// Counts everything now and caches it.
pub async fn refresh(
    admin: &AdminState,
    db: &Db,
    settings: &Settings,
) -> Result<Arc<Counts>, StoreError> {
    let now = Utc::now();
    let started = Instant::now();
    let outbox = crate::store::outbox::depth_by_state(db)
        .await?
        .into_iter()
        .map(|(state, n)| (state.as_str().to_owned(), n))
        .collect();
    let subscribers = store::subscriber_counts(db).await?;
    let tallied = started.elapsed();
    let mut runs = HashMap::new();
    for e in &settings.editions {
        let slug = e.slug.as_str();
        let Some(run) = store::runs(db, slug, 1).await?.into_iter().next() else {
            continue;
        };
        let counts = store::run_counts(db, slug, &run.window).await?;
        runs.insert(slug.to_owned(), (run, counts));
    }
    let run_counted = started.elapsed();
    let mut rates = Vec::new();
    for (label, days) in crate::bounces::rates::WINDOWS {
        rates.push((
            label,
            crate::store::bounces::rates_since(db, now - chrono::Duration::days(days)).await?,
        ));
    }
    tracing::debug!(
        ?tallied,
        ?run_counted,
        total = ?started.elapsed(),
        "counted the console's overview"
    );
    let counts = Arc::new(Counts {
        at: now,
        outbox,
        subscribers,
        runs,
        rates,
    });
    *admin
        .overview
        .current
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), counts.clone()));
    Ok(counts)
}

/// The next fire time of an edition, in its own zone.
pub fn next_run(e: &crate::config::Edition, now: DateTime<Utc>) -> String {
    match &e.schedule {
        ScheduleSpec::Instant => "on each publication".into(),
        ScheduleSpec::Cron(c) => c
            .next_after(now, e.timezone)
            .map(|t| {
                t.with_timezone(&e.timezone)
                    .format("%a %Y-%m-%d %H:%M %Z")
                    .to_string()
            })
            .unwrap_or_else(|| "never (the schedule matches no date)".into()),
    }
}

pub fn run_view(run: &Run, counts: &RunCounts, tz: chrono_tz::Tz) -> serde_json::Value {
    serde_json::json!({
        "window": run.window,
        "started": run.started_at.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z").to_string(),
        "finished": run.finished_at.map(when),
        "enqueued": run.enqueued,
        "queued": counts.queued + counts.sending,
        "sent": counts.sent,
        "retried": counts.retried,
        "suppressed": counts.suppressed,
        "dead": counts.dead,
        "expired": counts.expired,
    })
}

pub async fn page(console: Console, Query(q): Query<HashMap<String, String>>) -> Response {
    let state = &console.state;
    let settings = &console.settings;
    let counts = match counts(&state.admin, &state.db, settings).await {
        Ok(c) => c,
        Err(e) => return console.internal(&e),
    };
    let now = Utc::now();
    let relay = match crate::store::relay::load(&state.db).await {
        Ok(r) => r,
        Err(e) => return console.internal(&e),
    };
    let pauses = crate::store::edition_pauses::list(&state.db)
        .await
        .unwrap_or_default();
    let editions: Vec<_> = settings
        .editions
        .iter()
        .map(|e| {
            let slug = e.slug.as_str();
            serde_json::json!({
                "slug": slug,
                "name": e.name,
                "next": next_run(e, now),
                "last": counts.runs.get(slug).map(|(r, c)| run_view(r, c, e.timezone)),
                "paused": pauses.iter().find(|(s, _, _)| s == slug).map(|(_, reason, at)| {
                    serde_json::json!({"reason": reason, "since": when(crate::store::from_millis(*at))})
                }),
            })
        })
        .collect();
    let rates: Vec<_> = counts
        .rates
        .iter()
        .map(|(label, r)| {
            serde_json::json!({
                "label": label,
                "sent": r.sent,
                "bounces": r.bounces,
                "complaints": r.complaints,
                "bounce_rate": format!("{:.2}%", r.bounce_rate() * 100.0),
                "complaint_rate": format!("{:.3}%", r.complaint_rate() * 100.0),
                "warnings": crate::bounces::rates::warnings(settings, label, r),
            })
        })
        .collect();
    let snapshot = state.snapshot();
    let problems: Vec<String> = snapshot
        .catalog
        .problems
        .iter()
        .map(ToString::to_string)
        .collect();
    let warnings: Vec<String> = snapshot
        .catalog
        .warnings()
        .iter()
        .map(ToString::to_string)
        .collect();
    let subscriber_total: i64 = counts.subscribers.iter().map(|(_, n)| n).sum();
    console.render(
        "overview.html",
        minijinja::context! {
            nav => "overview",
            notice => notice(q.get("notice")),
            relay => relay.map(|r| serde_json::json!({
                "target": r.target,
                "paused": r.paused == 1,
                "message": r.message,
                "since": r.since.map(crate::store::from_millis).map(when),
                "resumed": r.resumed_at.map(crate::store::from_millis).map(when),
                "pauses": r.pauses,
            })).map(Value::from_serialize),
            health => Value::from_serialize(state.health.problems()),
            outbox => Value::from_serialize(&counts.outbox),
            editions => Value::from_serialize(editions),
            rates => Value::from_serialize(rates),
            subscribers => Value::from_serialize(&counts.subscribers),
            subscriber_total,
            problems,
            warnings,
            counts_at => when(counts.at),
            published => snapshot.catalog.published(now).count(),
            scheduled => snapshot.catalog.len() - snapshot.catalog.published(now).count(),
        },
    )
}
