//! `casewire schedule`, `digest preview`, `digest send` and `status`.

use std::sync::Arc;

use anyhow::{bail, Context, Result};
use chrono::Utc;

use super::Exit;
use crate::cli::PreviewFormat;
use crate::config::{Edition, ScheduleSpec, Settings};
use crate::content::{CaseStudy, Catalog, DirectoryStore};
use crate::delivery::compose::{
    compose, Draft, ExtraHeader, PLACEHOLDER_PREFERENCES_URL, PLACEHOLDER_UNSUBSCRIBE_URL,
};
use crate::editions::render::{self, DigestInput};
use crate::editions::schedule::parse_cron;
use crate::store::ledger::Ledger;
use crate::store::{from_millis, Db};

pub fn schedule(settings: &Settings) -> Result<Exit> {
    let now = Utc::now();
    for e in &settings.editions {
        println!(
            "{} ({}) — {} in {}",
            e.slug,
            e.name,
            schedule_text(e),
            e.timezone
        );
        match &e.schedule {
            ScheduleSpec::Instant => println!("  fires on every newly published case study"),
            ScheduleSpec::Cron(expr) => {
                let s = parse_cron(expr)?;
                for t in s.upcoming(now, e.timezone, 5) {
                    let local = t.with_timezone(&e.timezone);
                    println!(
                        "  {}  ({} UTC)",
                        local.format("%a %Y-%m-%d %H:%M %Z"),
                        t.format("%Y-%m-%d %H:%M")
                    );
                }
            }
        }
    }
    Ok(Exit::Ok)
}

fn schedule_text(e: &Edition) -> String {
    match &e.schedule {
        ScheduleSpec::Instant => "instant".into(),
        ScheduleSpec::Cron(c) => format!("\"{c}\""),
    }
}

fn edition<'a>(settings: &'a Settings, slug: &str) -> Result<&'a Edition> {
    settings.edition(slug).with_context(|| {
        let known: Vec<&str> = settings.editions.iter().map(|e| e.slug.as_str()).collect();
        format!(
            "no edition {slug:?} in {} (configured: {})",
            settings.source.display(),
            known.join(", ")
        )
    })
}

fn load_catalog(settings: &Settings) -> Catalog {
    let catalog = DirectoryStore::new(settings).scan(None);
    for p in &catalog.problems {
        eprintln!("{p}");
    }
    catalog
}

pub fn preview(
    settings: &Settings,
    slug: &str,
    subscriber: Option<String>,
    format: PreviewFormat,
) -> Result<Exit> {
    let Ok(edition) = edition(settings, slug) else {
        eprintln!("error: {:#}", edition(settings, slug).unwrap_err());
        return Ok(Exit::Usage);
    };
    let catalog = load_catalog(settings);
    let now = Utc::now();
    let carries = |s: &CaseStudy| {
        edition.categories.is_empty() || s.categories.iter().any(|c| edition.categories.contains(c))
    };
    let rt = super::runtime()?;
    let (follows, studies, to, name) = match subscriber {
        Some(email) => rt.block_on(async {
            let address = crate::domain::EmailAddress::parse(&email)?;
            let db = Db::open(&settings.database.url).await?;
            let row: Option<(i64, String, String)> = sqlx::query_as("SELECT id, email, name FROM subscribers WHERE email = $1")
                .bind(address.as_str())
                .fetch_optional(&db.pool)
                .await?;
            let Some((id, email, name)) = row else { bail!("no subscriber {email:?}") };
            let follows: Vec<String> = sqlx::query_scalar("SELECT category FROM subscriber_categories WHERE subscriber_id = $1").bind(id).fetch_all(&db.pool).await?;
            let follows: Vec<crate::domain::Slug> = follows.iter().filter_map(|c| crate::domain::Slug::parse(c).ok()).collect();
            let cursor: Option<i64> = sqlx::query_scalar("SELECT cursor_event_id FROM subscriber_editions WHERE subscriber_id = $1 AND edition = $2")
                .bind(id)
                .bind(edition.slug.as_str())
                .fetch_optional(&db.pool)
                .await?;
            let slugs: Vec<String> = sqlx::query_scalar("SELECT slug FROM publication_events WHERE id > $1 ORDER BY id").bind(cursor.unwrap_or(i64::MAX)).fetch_all(&db.pool).await?;
            let studies: Vec<Arc<CaseStudy>> = slugs
                .iter()
                .filter_map(|s| catalog.get(s).cloned())
                .filter(|s| carries(s) && (follows.is_empty() || s.categories.iter().any(|c| follows.contains(c))))
                .collect();
            anyhow::Ok((follows, studies, email, name))
        })?,
        None => (Vec::new(), Vec::new(), "reader@example.com".to_owned(), String::new()),
    };
    let studies = if studies.is_empty() {
        eprintln!("note: nothing new for this reader; previewing the latest published case studies instead");
        catalog
            .published(now)
            .filter(|s| {
                carries(s)
                    && (follows.is_empty() || s.categories.iter().any(|c| follows.contains(c)))
            })
            .take(edition.max_items + 2)
            .cloned()
            .collect()
    } else {
        studies
    };
    if studies.is_empty() {
        eprintln!("error: the {slug} edition has no case studies to show");
        return Ok(Exit::Failed);
    }
    let env = crate::templates::environment(settings);
    let digest = render::render(
        &env,
        DigestInput {
            settings,
            edition,
            studies,
            follows: &follows,
            name: &name,
        },
    )?;
    let unsubscribe = settings.site.base_url.join("unsubscribe/PREVIEW")?;
    let preferences = settings.site.base_url.join("preferences/PREVIEW")?;
    let fill = |s: &str| {
        s.replace(PLACEHOLDER_UNSUBSCRIBE_URL, unsubscribe.as_str())
            .replace(PLACEHOLDER_PREFERENCES_URL, preferences.as_str())
    };
    match format {
        PreviewFormat::Html => println!("{}", fill(&digest.html)),
        PreviewFormat::Text => println!("{}", fill(&digest.text)),
        PreviewFormat::Eml => {
            let message = compose(
                settings,
                &Draft {
                    to: &to,
                    to_name: Some(&name),
                    subject: &digest.subject,
                    text: &fill(&digest.text),
                    html: &fill(&digest.html),
                    headers: vec![
                        ExtraHeader {
                            name: "List-Unsubscribe",
                            value: format!("<{unsubscribe}>"),
                        },
                        ExtraHeader {
                            name: "List-Unsubscribe-Post",
                            value: "List-Unsubscribe=One-Click".into(),
                        },
                    ],
                },
            )?;
            print!("{}", String::from_utf8_lossy(&message.formatted()));
        }
    }
    Ok(Exit::Ok)
}

pub fn send(settings: &Settings, slug: &str, dry_run: bool) -> Result<Exit> {
    let edition = match edition(settings, slug) {
        Ok(e) => e.clone(),
        Err(e) => {
            eprintln!("error: {e:#}");
            return Ok(Exit::Usage);
        }
    };
    let catalog = load_catalog(settings);
    super::runtime()?.block_on(async {
        let db = Db::open(&settings.database.url).await?;
        let now = Utc::now();
        // Record what the content folder publishes now, as the daemon would.
        let mut ledger = Ledger::load(db.clone()).await?;
        ledger.sync(&catalog, now).await?;
        let window = format!("manual:{}", now.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
        let report = crate::editions::run::run_edition(
            &db, settings, &catalog, &edition, &window, now, dry_run,
        )
        .await?;
        eprintln!(
            "{slug}: {} subscribers, {} digests {}, {} with nothing new, {} distinct bodies",
            report.subscribers,
            report.enqueued,
            if dry_run { "would be queued" } else { "queued" },
            report.nothing_new,
            report.rendered
        );
        if dry_run {
            return Ok(Exit::Ok);
        }
        crate::delivery::deliver_edition(&db, settings, slug).await
    })
}

pub fn status(settings: &Settings) -> Result<Exit> {
    super::runtime()?.block_on(async {
        let db = Db::open(&settings.database.url).await?;
        let now = Utc::now();
        println!("Outbox");
        let states: Vec<(String, i64)> = sqlx::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state").fetch_all(&db.pool).await?;
        if states.is_empty() {
            println!("  empty");
        }
        for (state, n) in states {
            println!("  {state:<11} {n}");
        }
        println!("Editions");
        for e in &settings.editions {
            let last: Option<(String, i64, Option<i64>, i64)> = sqlx::query_as(
                "SELECT window_key, started_at, finished_at, enqueued FROM edition_runs WHERE edition = $1 ORDER BY started_at DESC LIMIT 1",
            )
            .bind(e.slug.as_str())
            .fetch_optional(&db.pool)
            .await?;
            let last = match last {
                Some((w, s, f, n)) => format!(
                    "last {} ({}, {} queued{})",
                    from_millis(s).with_timezone(&e.timezone).format("%Y-%m-%d %H:%M %Z"),
                    w,
                    n,
                    if f.is_none() { ", unfinished" } else { "" }
                ),
                None => "never run".into(),
            };
            let next = match &e.schedule {
                ScheduleSpec::Instant => "next: on publication".to_owned(),
                ScheduleSpec::Cron(c) => parse_cron(c)?
                    .next_after(now, e.timezone)
                    .map(|t| format!("next {}", t.with_timezone(&e.timezone).format("%Y-%m-%d %H:%M %Z")))
                    .unwrap_or_default(),
            };
            println!("  {:<12} {last}; {next}", e.slug.as_str());
        }
        println!("Recent failures");
        let failures: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT recipient, state, COALESCE(last_error, ''), updated_at FROM outbox WHERE last_error IS NOT NULL ORDER BY updated_at DESC LIMIT 10",
        )
        .fetch_all(&db.pool)
        .await?;
        if failures.is_empty() {
            println!("  none");
        }
        for (to, state, err, at) in failures {
            println!("  {} {to} [{state}] {err}", from_millis(at).format("%Y-%m-%d %H:%M:%S UTC"));
        }
        anyhow::Ok(Exit::Ok)
    })
}
