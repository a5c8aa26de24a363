//! Delivery: messages are composed with lettre, queued durably in the outbox
//! (in the same transaction as the state change that caused them), and sent
//! by workers through the configured transport (SMTP pool or .eml files).

pub mod compose;

pub mod transport;
pub mod worker;

pub use transport::{DeliveryError, Mailer};
pub use worker::{drain, DeliveryWorker, DrainReport, Progress, WorkerOptions};

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::commands::Exit;
use crate::config::Settings;
use crate::store::Db;

/// `digest send`: delivers the queued messages of `edition` with a progress
/// bar (sent, retrying, failed, rate, ETA) and returns when none is due.
/// `queueing` is work still adding rows (the edition run): delivery starts on
/// the first rows while it goes on, and ends only after it finished and its
/// last rows were sent. Exit status 1 when any message failed for good.
pub async fn deliver_edition<T>(
    db: &Db,
    settings: &Settings,
    edition: &str,
    mut queueing: Option<tokio::task::JoinHandle<anyhow::Result<T>>>,
) -> anyhow::Result<(Exit, Option<T>)> {
    let progress = Arc::new(Progress::default());
    let shutdown = CancellationToken::new();
    let settings = Arc::new(settings.clone());
    let started = std::time::Instant::now();
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {bar:40} {pos}/{len} sent · {msg} · {per_sec} · ETA {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    let mut queued_result = None;
    let mut pending;
    loop {
        let task = tokio::spawn(drain(
            db.clone(),
            settings.clone(),
            Some(edition.to_owned()),
            progress.clone(),
            shutdown.clone(),
        ));
        let mut ticker = tokio::time::interval(Duration::from_millis(200));
        let report = loop {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = tokio::signal::ctrl_c() => shutdown.cancel(),
            }
            let waiting = crate::store::outbox::pending_count(db, Some(edition))
                .await
                .unwrap_or(0)
                .max(0) as u64;
            bar.set_length(progress.sent() + progress.dead() + progress.suppressed() + waiting);
            bar.set_position(progress.sent());
            bar.set_message(format!(
                "{} retrying · {} failed",
                progress.retried(),
                progress.dead() + progress.suppressed()
            ));
            if task.is_finished() {
                break task.await??;
            }
        };
        pending = report.pending;
        match queueing.take() {
            // Delivery caught up with queueing: wait for more rows.
            Some(q) if !q.is_finished() && !shutdown.is_cancelled() => {
                queueing = Some(q);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // Queueing ended: one more drain sends its last rows.
            Some(q) => queued_result = Some(q.await??),
            None => break,
        }
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();
    let (sent, dead) = (progress.sent(), progress.dead());
    eprintln!(
        "{edition}: {sent} sent, {} retried, {} suppressed, {dead} dead, {pending} waiting for a retry; {:.0} messages/s over {elapsed:.1?}",
        progress.retried(),
        progress.suppressed(),
        sent as f64 / elapsed.as_secs_f64().max(1e-9),
    );
    Ok((
        if dead > 0 { Exit::Failed } else { Exit::Ok },
        queued_result,
    ))
}
