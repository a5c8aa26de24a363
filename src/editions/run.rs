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

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::render::{self, DigestInput};
use crate::config::{Edition, Settings};
use crate::content::{CaseStudy, Catalog};
use crate::delivery::compose::sender_domain;
use crate::domain::{Slug, Token};
use crate::store::{outbox, to_millis, Db};

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
    /// Distinct content sets rendered.
    pub rendered: u64,
}

struct Subscriber {
    id: i64,
    email: String,
    cursor: i64,
    follows: Vec<Slug>,
}

/// Runs `edition` for `window` (e.g. the scheduled fire time, RFC 3339).
pub async fn run_edition(
    db: &Db,
    settings: &Settings,
    catalog: &Catalog,
    edition: &Edition,
    window: &str,
    now: DateTime<Utc>,
    dry_run: bool,
) -> anyhow::Result<RunReport> {
    let mut report = RunReport::default();
    let slug = edition.slug.as_str();
    let current: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM publication_events")
        .fetch_one(&db.pool)
        .await?;
    let high_water = if dry_run {
        current
    } else {
        sqlx::query("INSERT INTO edition_runs (edition, window_key, started_at, high_water) VALUES ($1, $2, $3, $4) ON CONFLICT (edition, window_key) DO NOTHING")
            .bind(slug)
            .bind(window)
            .bind(to_millis(now))
            .bind(current)
            .execute(&db.pool)
            .await?;
        let (hw, finished): (i64, Option<i64>) = sqlx::query_as("SELECT high_water, finished_at FROM edition_runs WHERE edition = $1 AND window_key = $2")
            .bind(slug)
            .bind(window)
            .fetch_one(&db.pool)
            .await?;
        if finished.is_some() {
            report.already_done = true;
            return Ok(report);
        }
        hw
    };

    let min_cursor: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(cursor_event_id) FROM subscriber_editions WHERE edition = $1",
    )
    .bind(slug)
    .fetch_one(&db.pool)
    .await?;
    let events: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, slug FROM publication_events WHERE id > $1 AND id <= $2 ORDER BY id",
    )
    .bind(min_cursor.unwrap_or(high_water))
    .bind(high_water)
    .fetch_all(&db.pool)
    .await?;
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

    let env = crate::templates::environment(settings);
    let mut bodies: HashMap<String, i64> = HashMap::new();
    let mut after_id = 0i64;
    loop {
        let batch = load_batch(db, slug, high_water, after_id).await?;
        let Some(last) = batch.last() else { break };
        after_id = last.id;
        report.subscribers += batch.len() as u64;
        let mut tx = if dry_run {
            None
        } else {
            Some(db.pool.begin().await?)
        };
        let mut covered: Vec<i64> = Vec::with_capacity(batch.len());
        for sub in &batch {
            let matching: Vec<&(i64, Arc<CaseStudy>)> = events
                .iter()
                .filter(|(id, s)| {
                    *id > sub.cursor
                        && (sub.follows.is_empty()
                            || s.categories.iter().any(|c| sub.follows.contains(c)))
                })
                .collect();
            covered.push(sub.id);
            if matching.is_empty() {
                report.nothing_new += 1;
                continue;
            }
            report.enqueued += 1;
            let Some(tx) = tx.as_mut() else { continue };
            let mut key = String::new();
            for (id, _) in &matching {
                let _ = write!(key, "{id},");
            }
            // Grouping depends on what the reader follows, so it is part of the content set.
            for c in &sub.follows {
                let _ = write!(key, "|{c}");
            }
            let body_id = match bodies.get(&key) {
                Some(id) => *id,
                None => {
                    let digest = render::render(
                        &env,
                        DigestInput {
                            settings,
                            edition,
                            studies: matching.iter().map(|(_, s)| s.clone()).collect(),
                            follows: &sub.follows,
                            name: "",
                        },
                    )
                    .with_context(|| format!("rendering the {slug} digest"))?;
                    let id = outbox::insert_body(
                        &mut **tx,
                        &digest.subject,
                        &digest.html,
                        &digest.text,
                        now,
                    )
                    .await?;
                    report.rendered += 1;
                    bodies.insert(key, id);
                    id
                }
            };
            let token = Token::generate();
            sqlx::query("INSERT INTO tokens (hash, subscriber_id, purpose, created_at, expires_at) VALUES ($1, $2, 'manage', $3, NULL)")
                .bind(token.hash())
                .bind(sub.id)
                .bind(to_millis(now))
                .execute(&mut **tx)
                .await?;
            let vars = recipient_vars(settings, edition, token.as_str(), window);
            let dedupe = format!("digest:{slug}:{window}:{}", sub.id);
            outbox::enqueue(
                &mut **tx,
                &outbox::NewMessage {
                    dedupe_key: &dedupe,
                    kind: "digest",
                    edition: Some(slug),
                    subscriber_id: Some(sub.id),
                    recipient: &sub.email,
                    message: None,
                    body_id: Some(body_id),
                    vars: &vars,
                    now,
                },
            )
            .await?;
        }
        if let Some(mut tx) = tx {
            // Ids are integers from the database, so inlining them is safe.
            let ids = covered
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            sqlx::query(&format!("UPDATE subscriber_editions SET cursor_event_id = $1 WHERE edition = $2 AND cursor_event_id < $1 AND subscriber_id IN ({ids})"))
                .bind(high_water)
                .bind(slug)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        }
    }
    if !dry_run {
        sqlx::query("UPDATE edition_runs SET finished_at = $1, enqueued = enqueued + $2 WHERE edition = $3 AND window_key = $4")
            .bind(to_millis(Utc::now()))
            .bind(report.enqueued as i64)
            .bind(slug)
            .bind(window)
            .execute(&db.pool)
            .await?;
        metrics::counter!("casewire_edition_runs_total", "edition" => slug.to_owned()).increment(1);
    }
    tracing::info!(
        edition = slug,
        window,
        subscribers = report.subscribers,
        enqueued = report.enqueued,
        nothing_new = report.nothing_new,
        rendered = report.rendered,
        dry_run,
        "edition run finished"
    );
    Ok(report)
}

async fn load_batch(
    db: &Db,
    edition: &str,
    high_water: i64,
    after_id: i64,
) -> anyhow::Result<Vec<Subscriber>> {
    let rows: Vec<(i64, String, i64)> = sqlx::query_as(
        "SELECT s.id, s.email, se.cursor_event_id
         FROM subscriber_editions se
         JOIN subscribers s ON s.id = se.subscriber_id
         LEFT JOIN suppressions sp ON sp.email = s.email
         WHERE se.edition = $1 AND s.status = 'confirmed' AND sp.email IS NULL
           AND se.cursor_event_id < $2 AND s.id > $3
         ORDER BY s.id LIMIT $4",
    )
    .bind(edition)
    .bind(high_water)
    .bind(after_id)
    .bind(BATCH)
    .fetch_all(&db.pool)
    .await?;
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(Vec::new());
    };
    let cats: Vec<(i64, String)> = sqlx::query_as("SELECT subscriber_id, category FROM subscriber_categories WHERE subscriber_id >= $1 AND subscriber_id <= $2")
        .bind(first.0)
        .bind(last.0)
        .fetch_all(&db.pool)
        .await?;
    let mut follows: HashMap<i64, Vec<Slug>> = HashMap::new();
    for (id, c) in cats {
        if let Ok(slug) = Slug::parse(&c) {
            follows.entry(id).or_default().push(slug);
        }
    }
    Ok(rows
        .into_iter()
        .map(|(id, email, cursor)| Subscriber {
            id,
            email,
            cursor,
            follows: follows.remove(&id).unwrap_or_default(),
        })
        .collect())
}

/// Per-recipient values delivery fills into the shared body and headers.
fn recipient_vars(
    settings: &Settings,
    edition: &Edition,
    token: &str,
    window: &str,
) -> serde_json::Value {
    let base = &settings.site.base_url;
    let unsubscribe = base
        .join(&format!("unsubscribe/{token}"))
        .expect("token is URL-safe");
    let preferences = base
        .join(&format!("preferences/{token}"))
        .expect("token is URL-safe");
    let domain = sender_domain(settings);
    let from_addr = settings
        .mail
        .from
        .parse::<lettre::message::Mailbox>()
        .map(|m| m.email.to_string())
        .unwrap_or_else(|_| format!("digest@{domain}"));
    let _ = window;
    serde_json::json!({
        "unsubscribe_url": unsubscribe.as_str(),
        "preferences_url": preferences.as_str(),
        "headers": {
            "List-Unsubscribe": format!("<{unsubscribe}>, <mailto:{from_addr}?subject=unsubscribe%20{token}>"),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": format!("\"{}\" <{}.{}>", edition.name.replace(['"', '\\', '\r', '\n'], ""), edition.slug, domain),
            "Feedback-ID": format!("{}:digest:casewire:{}", edition.slug, domain),
        }
    })
}
