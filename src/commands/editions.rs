//! `casewire schedule`, `digest preview`, `digest send` and `status`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use chrono::Utc;

use super::Exit;
use crate::cli::PreviewFormat;
use crate::config::{Edition, ScheduleSpec, Settings};
use crate::content::{Catalog, DirectoryStore};
use crate::delivery::compose::Composer;
use crate::store::ledger::Ledger;
use crate::store::{from_millis, outbox, Backend, Db};

pub fn schedule(settings: &Settings) -> Result<Exit> {
    let now = Utc::now();
    // Zones in use are in the database; only `local_time` editions need it.
    let zones = if settings.editions.iter().any(|e| e.local_time) {
        super::runtime()?.block_on(zones_in_use(settings))
    } else {
        Ok(Vec::new())
    };
    for e in &settings.editions {
        if e.local_time {
            outln!(
                "{} ({}) — {} in each subscriber's time zone (without one: {})",
                e.slug,
                e.name,
                schedule_text(e),
                e.timezone
            );
        } else {
            outln!(
                "{} ({}) — {} in {}",
                e.slug,
                e.name,
                schedule_text(e),
                e.timezone
            );
        }
        let ScheduleSpec::Cron(s) = &e.schedule else {
            outln!("  fires on every newly published case study");
            continue;
        };
        if !e.local_time {
            print_fire_times(s, e.timezone, now, "  ");
            continue;
        }
        let in_use = match &zones {
            Ok(all) => all
                .iter()
                .filter(|(slug, _, _)| slug == e.slug.as_str())
                .map(|(_, zone, n)| (zone.clone(), *n))
                .collect::<Vec<_>>(),
            Err(err) => {
                outln!("  zones in use unknown ({err:#}); in {}:", e.timezone);
                print_fire_times(s, e.timezone, now, "    ");
                continue;
            }
        };
        // The edition's own zone first, also when nobody is in it yet.
        let own = e.timezone.name();
        let own_count = in_use.iter().find(|(z, _)| z == own).map_or(0, |(_, n)| *n);
        outln!("  {own}: {own_count} subscriber(s), with those who chose no zone");
        print_fire_times(s, e.timezone, now, "    ");
        for (zone, n) in in_use.iter().filter(|(z, _)| z != own) {
            match zone.parse::<chrono_tz::Tz>() {
                Ok(tz) => {
                    outln!("  {zone}: {n} subscriber(s)");
                    print_fire_times(s, tz, now, "    ");
                }
                Err(_) => outln!("  {zone}: {n} subscriber(s), NOT a known time zone: they get no digest (fix with the admin API's PATCH)"),
            }
        }
    }
    Ok(Exit::Ok)
}

/// The next five fire times of `s` in `tz`, local and UTC.
fn print_fire_times(
    s: &crate::editions::schedule::CronSchedule,
    tz: chrono_tz::Tz,
    now: chrono::DateTime<Utc>,
    indent: &str,
) {
    for t in s.upcoming(now, tz, 5) {
        let local = t.with_timezone(&tz);
        outln!(
            "{indent}{}  ({} UTC)",
            local.format("%a %Y-%m-%d %H:%M %Z"),
            t.format("%Y-%m-%d %H:%M")
        );
    }
}

/// (edition, zone, confirmed subscribers) of every `local_time` edition.
async fn zones_in_use(settings: &Settings) -> Result<Vec<(String, String, i64)>> {
    let db = Db::open(&settings.database.url).await?;
    let mut out = Vec::new();
    for e in settings.editions.iter().filter(|e| e.local_time) {
        for (zone, n) in
            crate::store::editions::zones_in_use(&db, e.slug.as_str(), e.timezone.name()).await?
        {
            out.push((e.slug.to_string(), zone, n));
        }
    }
    Ok(out)
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
    let rt = super::runtime()?;
    let result = rt.block_on(async {
        let db = match &subscriber {
            Some(_) => Some(Db::open(&settings.database.url).await?),
            None => None,
        };
        crate::editions::preview::preview(
            settings,
            db.as_ref(),
            &catalog,
            edition,
            subscriber.as_deref(),
            Utc::now(),
        )
        .await
    });
    let p = match result {
        Ok(p) => p,
        Err(e) if e.to_string().ends_with("has no case studies to show") => {
            eprintln!("error: {e}");
            return Ok(Exit::Failed);
        }
        Err(e) => return Err(e),
    };
    if let Some(note) = &p.note {
        eprintln!("note: {note}");
    }
    match format {
        PreviewFormat::Html => outln!("{}", p.digest.html),
        PreviewFormat::Text => outln!("{}", p.digest.text),
        PreviewFormat::Eml => {
            // The same composer and DKIM signature a real send uses.
            let composer = Composer::new(settings)?;
            let address = crate::domain::EmailAddress::parse(&p.to)
                .with_context(|| format!("--subscriber {:?}", p.to))?
                .to_lettre();
            let mailbox = lettre::message::Mailbox::new(
                Some(p.name.clone()).filter(|n| !n.is_empty()),
                address,
            );
            let message = composer.compose(
                mailbox,
                &p.digest.subject,
                &p.digest.text,
                &p.digest.html,
                &p.vars.headers,
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
    let backend = Backend::of_url(&settings.database.url);
    let runtime = match backend {
        Backend::Sqlite => super::single_thread_runtime()?,
        Backend::Postgres => super::runtime()?,
    };
    runtime.block_on(async {
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
        let delivering = crate::delivery::deliver_edition(
            &db,
            settings,
            slug,
            Some((more_coming.clone(), expected)),
        );
        let (report, exit) = match backend {
            Backend::Sqlite => {
                let queueing = queue_apart(
                    db.clone(),
                    settings.clone(),
                    catalog,
                    edition,
                    window,
                    now,
                    more_coming,
                );
                let (report, exit) = tokio::join!(queueing, delivering);
                (
                    report.unwrap_or_else(|e| {
                        Err(anyhow::anyhow!("the {slug} edition run stopped: {e}"))
                    }),
                    exit,
                )
            }
            Backend::Postgres => {
                let queueing = async {
                    let _done = Produced(more_coming);
                    crate::editions::run::run_edition(
                        &db, settings, &catalog, &edition, &window, now, false,
                    )
                    .await
                };
                tokio::join!(queueing, delivering)
            }
        };
        let report = report?;
        print_run(slug, &report, false);
        exit
    })
}

/// Tells the delivery worker, when dropped, that the edition run queues no
/// more rows (also when it failed or panicked).
struct Produced(Arc<AtomicBool>);

impl Drop for Produced {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// SQLite: the edition run on a thread and a runtime of its own, while the
/// delivery pipeline keeps the command's one thread. The run segments,
/// renders and builds its statements between two awaits; on the shared
/// thread every SMTP session, check and result write waited for that
/// work, and delivery ran at a fifth of its speed until the run had queued
/// its last row (measured 2026-12-07 at 20,000 × 9 KB, from the rows'
/// `sent_at`: about 2,300 digests a second while queueing against 11,000
/// after; about 4,400 with the run apart). Each connection of the pool is
/// a thread of sqlx's own, so a runtime of either thread may use it.
fn queue_apart(
    db: Db,
    settings: Settings,
    catalog: Catalog,
    edition: Edition,
    window: String,
    now: chrono::DateTime<Utc>,
    more_coming: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Result<crate::editions::run::RunReport>> {
    tokio::task::spawn_blocking(move || {
        let _done = Produced(more_coming);
        super::single_thread_runtime()?.block_on(crate::editions::run::run_edition(
            &db, &settings, &catalog, &edition, &window, now, false,
        ))
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
                ScheduleSpec::Cron(_) if e.local_time => {
                    "next: at local time in each zone in use (casewire schedule)".to_owned()
                }
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
