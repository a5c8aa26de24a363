//! `casewire schedule`, `digest preview`, `digest send` and `status`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use chrono::Utc;

use super::Exit;
use crate::cli::PreviewFormat;
use crate::config::{Edition, ScheduleSpec, Settings};
use crate::content::{CaseStudy, Catalog, DirectoryStore};
use crate::delivery::compose::{digest_vars, fill_links, Composer};
use crate::editions::render::{self, DigestInput};
use crate::store::ledger::Ledger;
use crate::store::{from_millis, outbox, Db};

pub fn schedule(settings: &Settings) -> Result<Exit> {
    let now = Utc::now();
    for e in &settings.editions {
        outln!(
            "{} ({}) — {} in {}",
            e.slug,
            e.name,
            schedule_text(e),
            e.timezone
        );
        match &e.schedule {
            ScheduleSpec::Instant => outln!("  fires on every newly published case study"),
            ScheduleSpec::Cron(s) => {
                for t in s.upcoming(now, e.timezone, 5) {
                    let local = t.with_timezone(&e.timezone);
                    outln!(
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
        ScheduleSpec::Cron(c) => format!("\"{}\"", c.as_str()),
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
            let mut conn = db.pool.acquire().await?;
            let Some(sub) =
                crate::store::subscribers::find_by_email(&mut conn, address.as_str()).await?
            else {
                bail!("no subscriber {email:?}")
            };
            drop(conn);
            let follows: Vec<crate::domain::Slug> = sub
                .categories
                .iter()
                .filter_map(|c| crate::domain::Slug::parse(c).ok())
                .collect();
            let cursor =
                crate::store::editions::subscriber_cursor(&db, sub.id, edition.slug.as_str())
                    .await?;
            // Not receiving this edition: nothing is new for them in it.
            let events = match cursor {
                Some(c) => crate::store::editions::events_between(&db, c, i64::MAX).await?,
                None => Vec::new(),
            };
            let studies: Vec<Arc<CaseStudy>> = events
                .iter()
                .filter_map(|(_, s)| catalog.get(s).cloned())
                .filter(|s| {
                    carries(s)
                        && (follows.is_empty() || s.categories.iter().any(|c| follows.contains(c)))
                })
                .collect();
            anyhow::Ok((follows, studies, sub.email, sub.name))
        })?,
        None => (
            Vec::new(),
            Vec::new(),
            "reader@example.com".to_owned(),
            String::new(),
        ),
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
            // A preview belongs to no run, so it has no archive page.
            archive_url: None,
        },
    )?;
    // What a real send derives from a reader's token, with a stand-in token.
    let from: lettre::message::Mailbox = settings
        .mail
        .from
        .parse()
        .with_context(|| format!("[mail] from {:?}", settings.mail.from))?;
    let vars = digest_vars(settings, &from, slug, "PREVIEW");
    let fill = |s: &str| fill_links(s, &vars.unsubscribe_url, &vars.preferences_url);
    match format {
        PreviewFormat::Html => outln!("{}", fill(&digest.html)),
        PreviewFormat::Text => outln!("{}", fill(&digest.text)),
        PreviewFormat::Eml => {
            // The same composer and DKIM signature a real send uses.
            let composer = Composer::new(settings)?;
            let address = crate::domain::EmailAddress::parse(&to)
                .with_context(|| format!("--subscriber {to:?}"))?
                .to_lettre();
            let mailbox = lettre::message::Mailbox::new(
                Some(name.clone()).filter(|n| !n.is_empty()),
                address,
            );
            let message = composer.compose(
                mailbox,
                &digest.subject,
                &fill(&digest.text),
                &fill(&digest.html),
                &vars.headers,
            )?;
            out!("{}", String::from_utf8_lossy(&message.bytes));
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
        if dry_run {
            let report = crate::editions::run::run_edition(
                &db, settings, &catalog, &edition, &window, now, true,
            )
            .await?;
            print_run(slug, &report, true);
            return Ok(Exit::Ok);
        }
        // Delivery starts at once and takes each batch of digests as its
        // transaction commits, instead of waiting for the whole run.
        let more_coming = Arc::new(AtomicBool::new(true));
        let expected = crate::store::editions::subscriber_count(&db, slug).await?;
        let queueing = async {
            let report = crate::editions::run::run_edition(
                &db, settings, &catalog, &edition, &window, now, false,
            )
            .await;
            more_coming.store(false, Ordering::Release);
            report
        };
        let delivering = crate::delivery::deliver_edition(
            &db,
            settings,
            slug,
            Some((more_coming.clone(), expected)),
        );
        let (report, exit) = tokio::join!(queueing, delivering);
        let report = report?;
        print_run(slug, &report, false);
        exit
    })
}

fn print_run(slug: &str, report: &crate::editions::run::RunReport, dry_run: bool) {
    eprintln!(
        "{slug}: {} subscribers, {} digests {}, {} with nothing new, {} distinct bodies",
        report.subscribers,
        report.enqueued,
        if dry_run { "would be queued" } else { "queued" },
        report.nothing_new,
        report.rendered
    );
}

/// `digest resume EDITION`: lifts the pause an edition put on itself.
pub fn resume(settings: &Settings, slug: &str) -> Result<Exit> {
    if let Err(e) = edition(settings, slug) {
        eprintln!("error: {e:#}");
        return Ok(Exit::Usage);
    }
    super::runtime()?.block_on(async {
        let db = Db::open(&settings.database.url).await?;
        match crate::store::edition_pauses::resume(&db, slug).await? {
            Some(reason) => {
                let pending = outbox::pending_count(&db, Some(slug)).await?;
                outln!(
                    "{slug} resumed; {pending} queued messages go out with the next delivery (it was paused: {reason})"
                );
            }
            None => outln!("{slug} is not paused"),
        }
        anyhow::Ok(Exit::Ok)
    })
}

pub fn status(settings: &Settings) -> Result<Exit> {
    super::runtime()?.block_on(async {
        let db = Db::open(&settings.database.url).await?;
        let now = Utc::now();
        outln!("Outbox");
        let states = outbox::depth_by_state(&db).await?;
        if states.is_empty() {
            outln!("  empty");
        }
        for (state, n) in states {
            outln!("  {state:<11} {n}");
        }
        outln!("Relay");
        match crate::store::relay::load(&db).await {
            Ok(None) => outln!("  no fault recorded"),
            Ok(Some(r)) if r.paused == 1 => outln!(
                "  PAUSED, delivery waits for the relay: {} (as of {})",
                r.message.as_deref().unwrap_or("no reason stored"),
                from_millis(r.updated_at).format("%Y-%m-%d %H:%M:%S UTC")
            ),
            Ok(Some(r)) => outln!(
                "  ok; last fault: {}; resumed {}; {} pause(s)",
                r.message.as_deref().unwrap_or("none"),
                r.resumed_at
                    .map(|t| from_millis(t).format("%Y-%m-%d %H:%M:%S UTC").to_string())
                    .unwrap_or_else(|| "-".into()),
                r.pauses
            ),
            Err(e) => outln!("  unknown ({e}); run `casewire migrate`"),
        }
        let paused = crate::store::edition_pauses::list(&db)
            .await
            .unwrap_or_default();
        outln!("Editions");
        for (slug, reason, at) in &paused {
            outln!(
                "  {slug:<12} PAUSED since {}: {reason}",
                from_millis(*at).format("%Y-%m-%d %H:%M:%S UTC")
            );
        }
        for e in &settings.editions {
            let last = crate::store::editions::last_run(&db, e.slug.as_str()).await?;
            let last = match last {
                Some((w, s, f, n)) => format!(
                    "last {} ({}, {} queued{})",
                    from_millis(s)
                        .with_timezone(&e.timezone)
                        .format("%Y-%m-%d %H:%M %Z"),
                    w,
                    n,
                    if f.is_none() { ", unfinished" } else { "" }
                ),
                None => "never run".into(),
            };
            let next = match &e.schedule {
                ScheduleSpec::Instant => "next: on publication".to_owned(),
                ScheduleSpec::Cron(c) => c
                    .next_after(now, e.timezone)
                    .map(|t| {
                        format!(
                            "next {}",
                            t.with_timezone(&e.timezone).format("%Y-%m-%d %H:%M %Z")
                        )
                    })
                    .unwrap_or_default(),
            };
            outln!("  {:<12} {last}; {next}", e.slug.as_str());
            if let Some((w, _, _, _)) =
                crate::store::editions::last_run(&db, e.slug.as_str()).await?
            {
                let r = crate::store::bounces::rates_of_run(&db, e.slug.as_str(), &w).await?;
                if r.sent > 0 {
                    outln!(
                        "  {:<12} last run: {} sent, bounce rate {:.2}%, complaint rate {:.3}%",
                        "",
                        r.sent,
                        r.bounce_rate() * 100.0,
                        r.complaint_rate() * 100.0
                    );
                }
            }
        }
        outln!("Bounces and complaints");
        for (label, days) in crate::bounces::rates::WINDOWS {
            let r =
                crate::store::bounces::rates_since(&db, now - chrono::Duration::days(days)).await?;
            outln!(
                "  {label:<4} {} sent, {} bounces ({:.2}%), {} complaints ({:.3}%)",
                r.sent,
                r.bounces,
                r.bounce_rate() * 100.0,
                r.complaints,
                r.complaint_rate() * 100.0
            );
            for w in crate::bounces::rates::warnings(settings, label, &r) {
                outln!("  WARNING: {w}");
            }
        }
        outln!("Recent failures");
        let failures = outbox::recent_failures(&db, 10).await?;
        if failures.is_empty() {
            outln!("  none");
        }
        for f in failures {
            outln!(
                "  {} {} [{}{}] after {} attempt(s): {}",
                from_millis(f.updated_at).format("%Y-%m-%d %H:%M:%S UTC"),
                f.recipient,
                f.state,
                f.edition.map(|e| format!(", {e}")).unwrap_or_default(),
                f.attempts,
                f.last_error
            );
        }
        anyhow::Ok(Exit::Ok)
    })
}
