//! Delivery: messages are composed with lettre, queued durably in the outbox
//! (in the same transaction as the state change that caused them), and sent
//! by workers through the configured transport (SMTP pool or .eml files).

mod claims;
pub mod compose;
pub mod dkim;
mod lane;
mod message;
pub mod pauses;
pub mod policy;
pub mod prepared;
pub mod relay;

pub mod transport;
pub mod worker;

pub use transport::{DeliveryError, Mailer};
pub use worker::{drain, DeliveryWorker, DrainReport, Progress, WorkerOptions};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::commands::Exit;
use crate::config::Settings;
use crate::store::Db;

/// `digest send`: delivers the queued messages of `edition` with a progress
/// bar (sent, retrying, failed, rate, ETA) and returns when none is due.
/// While `queueing` is given and true an edition run is still queueing rows:
/// an empty outbox is not the end yet, and the bar shows `expected` (the
/// edition's subscribers) until the run is done and the real count is known.
/// Exit status 1 when any message failed for good.
pub async fn deliver_edition(
    db: &Db,
    settings: &Settings,
    edition: &str,
    queueing: Option<(Arc<AtomicBool>, u64)>,
) -> anyhow::Result<Exit> {
    let progress = Arc::new(Progress::default());
    let shutdown = CancellationToken::new();
    let more_coming = queueing.as_ref().map(|(m, _)| m.clone());
    let total = match &queueing {
        Some((_, expected)) => *expected,
        None => crate::store::outbox::pending_count(db, Some(edition))
            .await?
            .max(0) as u64,
    };
    let mut task = tokio::spawn(drain(
        db.clone(),
        Arc::new(settings.clone()),
        Some(edition.to_owned()),
        more_coming.clone(),
        progress.clone(),
        shutdown.clone(),
    ));
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} sent · {msg} · {per_sec} · ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let mut ticker = tokio::time::interval(Duration::from_millis(200));
    let mut queueing = more_coming;
    // The bar is redrawn every tick; the command ends as soon as the
    // delivery does, not at the next tick.
    let result = loop {
        tokio::select! {
            done = &mut task => break done?,
            _ = ticker.tick() => {}
            _ = tokio::signal::ctrl_c() => shutdown.cancel(),
        }
        if queueing
            .as_ref()
            .is_some_and(|m| !m.load(Ordering::Acquire))
        {
            // The run is done: the bar's length becomes exact, counted once.
            queueing = None;
            if let Ok(pending) = crate::store::outbox::pending_count(db, Some(edition)).await {
                let done = progress.sent() + progress.dead() + progress.suppressed();
                bar.set_length(done + pending.max(0) as u64);
            }
        }
        bar.set_position(progress.sent());
        bar.set_message(format!(
            "{} retrying · {} failed",
            progress.retried(),
            progress.dead() + progress.suppressed()
        ));
    };
    let report = result?;
    bar.set_position(report.sent);
    bar.finish_and_clear();
    eprintln!(
        "{edition}: {} sent, {} retried, {} suppressed, {} dead, {} waiting for a retry; {:.0} messages/s over {:.1?}",
        report.sent,
        report.retried,
        report.suppressed,
        report.dead,
        report.pending,
        report.rate(),
        report.elapsed
    );
    let paused = crate::store::edition_pauses::list(db).await?;
    if let Some((_, reason, _)) = paused.iter().find(|(e, _, _)| e == edition) {
        eprintln!("{reason}");
        return Ok(Exit::Failed);
    }
    if let Some(fault) = &report.relay_fault {
        eprintln!(
            "{edition}: stopped: {fault}. {} messages stay queued, no attempt counted; the daemon (or another `digest send`) delivers them once the relay answers",
            report.pending
        );
        return Ok(Exit::Failed);
    }
    // Nothing went out although there was mail to send: the run failed,
    // whatever the reason for each message (refused, suppressed, waiting).
    let failed = report.dead + report.suppressed + report.pending.max(0) as u64;
    if report.sent == 0 && failed > 0 {
        eprintln!("{edition}: nothing was sent: all {failed} message(s) failed");
        return Ok(Exit::Failed);
    }
    Ok(if report.dead > 0 {
        Exit::Failed
    } else {
        Exit::Ok
    })
}
