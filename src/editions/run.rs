//! One edition run: segment subscribers and queue one digest each.
//!
//! A run covers the publication events up to a high-water mark fixed when the
//! run starts (stored in `edition_runs`, so a run resumed after a crash covers
//! the same events). Each subscriber of the edition gets the events above
//! their own cursor that match their categories and the edition's; the outbox
//! row and the cursor move commit together, so a case study reaches a
//! subscriber at most once per edition and is never skipped (DESIGN.md
//! invariant 2). Subscribers are read in keyset-paginated batches, never all
//! at once, and each distinct content set is rendered once.
//!
//! A scheduled run of a `local_time` edition is for one time zone only
//! ([`Audience::zone`]): the scheduler fires each zone in use at its own
//! local time. A subscriber belongs to exactly one zone at a time, so each
//! gets one digest per period of their zone. Moving between zones keeps
//! that promise: the cursor already says which case studies they have had
//! (nothing twice, nothing skipped), and a zone's run holds back a
//! subscriber whose last digest came inside that run's period (from their
//! old zone, say Kolkata's 07:00 before Berlin's 07:00 the same morning);
//! their cursor stays put, so what is new reaches them at the next period
//! instead. Moving the other way (Berlin to Kolkata after Kolkata's 07:00)
//! the last digest lies in the period before, so the next Kolkata run
//! sends: no period of the new zone passes without its digest.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::Connection;

use super::render::{self, DigestInput};
use crate::config::{Edition, Settings};
use crate::content::{CaseStudy, Catalog};
use crate::store::editions::{self as store, DigestRow, ZoneFilter};
use crate::store::{outbox, Db};

/// Subscribers handled per transaction.
pub const BATCH: i64 = 500;

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// The run's window was already finished (a scheduler that fired twice).
    pub already_done: bool,
    pub subscribers: u64,
    pub enqueued: u64,
    /// Subscribers with nothing new in their categories (no empty digests).
    pub nothing_new: u64,
    /// Distinct content sets rendered (a dry run: that a real run would render).
    pub rendered: u64,
    /// Subscribers whose last digest already falls into this run's period
    /// (they moved from a zone that fired earlier); they wait for the next.
    pub held_back: u64,
}

/// Whom a run is for, and which scheduled window it is (if any).
#[derive(Debug, Clone, Copy, Default)]
pub struct Audience<'a> {
    /// Only this zone's subscribers (a `local_time` edition); None: all.
    pub zone: Option<ZoneFilter<'a>>,
    /// The fire time of the scheduled window, recorded for each subscriber
    /// who gets its digest. None for runs started by hand.
    pub fired_at: Option<DateTime<Utc>>,
    /// The start of the window's period in its zone (the fire time before):
    /// a subscriber whose last window fired after it is held back.
    pub period_start: Option<DateTime<Utc>>,
}

/// Runs `edition` for `window` (e.g. the scheduled fire time, RFC 3339)
/// for all of its subscribers.
pub async fn run_edition(
    db: &Db,
    settings: &Settings,
    catalog: &Catalog,
    edition: &Edition,
    window: &str,
    now: DateTime<Utc>,
    dry_run: bool,
) -> anyhow::Result<RunReport> {
    run_edition_for(
        db,
        settings,
        catalog,
        edition,
        window,
        Audience::default(),
        now,
        dry_run,
    )
    .await
}

/// Runs `edition` for `window` and the subscribers `audience` names.
#[allow(clippy::too_many_arguments)]
pub async fn run_edition_for(
    db: &Db,
    settings: &Settings,
    catalog: &Catalog,
    edition: &Edition,
    window: &str,
    audience: Audience<'_>,
    now: DateTime<Utc>,
    dry_run: bool,
) -> anyhow::Result<RunReport> {
    let mut report = RunReport::default();
    let slug = edition.slug.as_str();
    let current = store::current_high_water(db).await?;
    let run_zone = match audience.zone {
        Some(z) if !z.includes_unset => z.zone,
        _ => "",
    };
    let held_after = audience.period_start.map(crate::store::to_millis);
    let high_water = if dry_run {
        current
    } else {
        let state = store::start_run(db, slug, window, run_zone, now, current).await?;
        if state.finished {
            report.already_done = true;
            return Ok(report);
        }
        state.high_water
    };
    store::refresh_list_statistics(db).await?;
    let min_cursor = store::min_cursor(db, slug).await?;
    let events = store::events_between(db, min_cursor.unwrap_or(high_water), high_water).await?;
    // Only case studies the edition carries and the catalog can render.
    let events: Vec<(i64, Arc<CaseStudy>)> = events
        .into_iter()
        .filter_map(|(id, s)| match catalog.get(&s) {
            Some(study) => Some((id, study.clone())),
            None => {
                tracing::warn!(edition = slug, case_study = %s, "published case study is no longer in the catalog; left out of the digest");
                None
            }
        })
        .filter(|(_, s)| edition.categories.is_empty() || s.categories.iter().any(|c| edition.categories.contains(c)))
        .collect();

    // The run's public page, stored before any digest is rendered so that
    // each can link to it; a resumed run finds the page it started with.
    let archive_url = if dry_run {
        None
    } else {
        super::archive::record(db, settings, catalog, edition, window, high_water, now)
            .await?
            .map(|issue| super::archive::issue_url(settings, slug, &issue.key).to_string())
    };

    let env = crate::templates::environment(settings);
    // Content set key → stored body id.
    let mut bodies: HashMap<String, i64> = HashMap::new();
    // A dry run's distinct content sets.
    let mut dry_sets: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut after_id = 0i64;
    // The whole run reads and writes on one connection: on SQLite every
    // connection keeps its own page cache, and a run spread over the pool
    // warmed (and held in memory) one per connection.
    let mut conn = db.pool.acquire().await?;
    loop {
        let batch =
            store::subscriber_batch(&mut conn, slug, audience.zone, high_water, after_id, BATCH)
                .await?;
        let Some(last) = batch.last() else { break };
        after_id = last.id;
        report.subscribers += batch.len() as u64;
        // Bodies first rendered in this batch, stored with its rows.
        let mut new_bodies: Vec<(String, render::Digest)> = Vec::new();
        let mut rows: Vec<(String, DigestRow)> = Vec::with_capacity(batch.len());
        // Whose cursor moves (all but the held back), and who gets a digest.
        let mut covered: Vec<i64> = Vec::with_capacity(batch.len());
        for sub in &batch {
            if held_after.is_some_and(|p| sub.last_window_at.is_some_and(|l| l > p)) {
                report.held_back += 1;
                continue;
            }
            covered.push(sub.id);
            let matching: Vec<&(i64, Arc<CaseStudy>)> = events
                .iter()
                .filter(|(id, s)| {
                    *id > sub.cursor
                        && (sub.follows.is_empty()
                            || s.categories.iter().any(|c| sub.follows.contains(c)))
                })
                .collect();
            if matching.is_empty() {
                report.nothing_new += 1;
                continue;
            }
            report.enqueued += 1;
            let mut key = String::new();
            for (id, _) in &matching {
                let _ = write!(key, "{id},");
            }
            // Grouping depends on what the reader follows, so it is part of the content set.
            for c in &sub.follows {
                let _ = write!(key, "|{c}");
            }
            if dry_run {
                // Counted as the bodies a real run would render, none rendered.
                if dry_sets.insert(key) {
                    report.rendered += 1;
                }
                continue;
            }
            if !bodies.contains_key(&key) && !new_bodies.iter().any(|(k, _)| *k == key) {
                let digest = render::render(
                    &env,
                    DigestInput {
                        settings,
                        edition,
                        studies: matching.iter().map(|(_, s)| s.clone()).collect(),
                        follows: &sub.follows,
                        name: "",
                        archive_url: archive_url.as_deref(),
                    },
                )
                .with_context(|| format!("rendering the {slug} digest"))?;
                new_bodies.push((key.clone(), digest));
            }
            rows.push((
                key,
                DigestRow {
                    subscriber_id: sub.id,
                    recipient: sub.email.clone(),
                    dedupe_key: format!("digest:{slug}:{window}:{}", sub.id),
                    body_id: 0,
                    // Links and headers are signed and derived at send
                    // time (`delivery::compose::EditionHeaders::vars`).
                    vars: format!("{{\"v\":{}}}", sub.link_version),
                },
            ));
        }
        if dry_run {
            continue;
        }
        // Everything is prepared; the transaction holds the write turn only
        // for the statements.
        let _turn = db.write_turn().await;
        let mut tx = conn.begin().await?;
        for (key, digest) in new_bodies {
            let id =
                outbox::insert_body(&mut *tx, &digest.subject, &digest.html, &digest.text, now)
                    .await?;
            report.rendered += 1;
            bodies.insert(key, id);
        }
        let rows: Vec<DigestRow> = rows
            .into_iter()
            .map(|(key, mut row)| {
                row.body_id = bodies[&key];
                row
            })
            .collect();
        let got: Vec<i64> = rows.iter().map(|r| r.subscriber_id).collect();
        store::enqueue_digests(&mut tx, slug, &rows, now).await?;
        store::advance_cursors(&mut tx, slug, &covered, high_water).await?;
        if let Some(fired_at) = audience.fired_at {
            store::record_window(&mut tx, slug, &got, fired_at).await?;
        }
        tx.commit().await?;
    }
    if !dry_run {
        store::finish_run(db, slug, window, report.enqueued, Utc::now()).await?;
        metrics::counter!("casewire_edition_runs_total", "edition" => slug.to_owned()).increment(1);
    }
    tracing::info!(
        edition = slug,
        window,
        subscribers = report.subscribers,
        enqueued = report.enqueued,
        nothing_new = report.nothing_new,
        held_back = report.held_back,
        rendered = report.rendered,
        dry_run,
        "edition run finished"
    );
    Ok(report)
}
