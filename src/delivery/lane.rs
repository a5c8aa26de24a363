//! The worker's own database lane: where its claims, send-time checks,
//! result writes and lease renewals run, and the two tasks that batch them
//! (group checks before sending, group commits after). The SQL itself lives
//! in `store::outbox`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::worker::Progress;
use crate::domain::EmailAddress;
use crate::store::outbox::{self, Outcome};
use crate::store::{Backend, Db, WriteTurn};

/// A row's result, its edition (for metrics), and who waits for it to commit.
pub(super) type Report = (Outcome, Option<String>, oneshot::Sender<()>);

/// A send-time check: recipient, subscriber, and where the answer goes.
pub(super) type Check = (
    EmailAddress,
    Option<i64>,
    oneshot::Sender<Result<Option<String>, String>>,
);

/// Where the worker's own statements run (claims, send-time checks, results,
/// lease renewals).
///
/// SQLite: one connection, held for the worker's life, taking turns. In WAL
/// mode a commit on one connection makes every other connection drop its
/// whole page cache at its next read, so statements spread over the pool
/// re-read their pages from the file every time; on one connection the cache
/// stays warm, and claims and result writes never collide as two writers.
/// PostgreSQL: the pool, statements in parallel.
pub(super) struct Lane {
    pub(super) db: Db,
    held: Option<tokio::sync::Mutex<PoolConnection<Any>>>,
}

pub(super) enum LaneConn<'a> {
    Held(tokio::sync::MutexGuard<'a, PoolConnection<Any>>),
    Pooled(PoolConnection<Any>),
}

impl Lane {
    pub(super) async fn open(db: &Db) -> Result<Self, sqlx::Error> {
        let held = match db.backend {
            Backend::Sqlite => Some(tokio::sync::Mutex::new(db.pool.acquire().await?)),
            Backend::Postgres => None,
        };
        Ok(Self {
            db: db.clone(),
            held,
        })
    }

    /// A connection for a write, after this process's turn to write.
    pub(super) async fn write(&self) -> Result<(WriteTurn, LaneConn<'_>), sqlx::Error> {
        let turn = self.db.write_turn().await;
        Ok((turn, self.conn().await?))
    }

    pub(super) async fn conn(&self) -> Result<LaneConn<'_>, sqlx::Error> {
        Ok(match &self.held {
            Some(c) => LaneConn::Held(c.lock().await),
            None => LaneConn::Pooled(self.db.pool.acquire().await?),
        })
    }
}

impl std::ops::Deref for LaneConn<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            LaneConn::Held(c) => c,
            LaneConn::Pooled(c) => c,
        }
    }
}

impl std::ops::DerefMut for LaneConn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            LaneConn::Held(c) => c,
            LaneConn::Pooled(c) => c,
        }
    }
}

/// Renews the lease on every row `owner` is sending, every third of the lease.
pub(super) async fn renew(
    lane: Arc<Lane>,
    owner: String,
    lease: Duration,
    stop: CancellationToken,
) {
    let every = lease / 3;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.cancelled() => return,
        }
        let renewed = match lane.write().await {
            Ok((_turn, mut conn)) => {
                outbox::renew_leases(&mut conn, &owner, Utc::now() + lease).await
            }
            Err(e) => Err(e.into()),
        };
        if let Err(e) = renewed {
            tracing::warn!("renewing outbox leases failed: {e}");
        }
    }
}

/// Answers send-time checks (invariant 7) in groups: every check that
/// arrived while the previous query ran goes into the next one. A message
/// asks once it holds its send slot, right before its SMTP transaction, so
/// a group is at most `mail.concurrency` messages that are all about to
/// start; one round trip per group instead of one per message.
pub(super) async fn check_recipients(lane: Arc<Lane>, mut rx: mpsc::UnboundedReceiver<Check>) {
    let mut group: Vec<Check> = Vec::new();
    while let Some(first) = rx.recv().await {
        group.push(first);
        while group.len() < 256 {
            match rx.try_recv() {
                Ok(c) => group.push(c),
                Err(_) => break,
            }
        }
        let asked: Vec<(&EmailAddress, Option<i64>)> =
            group.iter().map(|(r, id, _)| (r, *id)).collect();
        let reasons = match lane.conn().await {
            Ok(mut conn) => outbox::blocked_reasons(&mut conn, &asked).await,
            Err(e) => Err(e.into()),
        };
        match reasons {
            Ok(reasons) => {
                for ((_, _, answer), reason) in group.drain(..).zip(reasons) {
                    let _ = answer.send(Ok(reason));
                }
            }
            Err(e) => {
                for (_, _, answer) in group.drain(..) {
                    let _ = answer.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Records results in batches: everything that arrived while the previous
/// transaction committed goes into the next one (group commit), and each
/// sender learns when its result is durable.
pub(super) async fn write_results(
    lane: Arc<Lane>,
    owner: String,
    mut rx: mpsc::UnboundedReceiver<Report>,
    progress: Arc<Progress>,
) {
    let mut batch: Vec<Report> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        while batch.len() < 1024 {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let outcomes: Vec<Outcome> = batch.iter().map(|(o, _, _)| o.clone()).collect();
        let mut backoff = Duration::from_millis(50);
        loop {
            let result = match lane.write().await {
                Ok((_turn, mut conn)) => {
                    outbox::record_outcomes(&mut conn, &owner, &outcomes, Utc::now()).await
                }
                Err(e) => Err(e.into()),
            };
            let Err(e) = result else { break };
            tracing::warn!(
                "recording {} delivery results failed, retrying: {e}",
                outcomes.len()
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        for (outcome, edition, ack) in batch.drain(..) {
            let edition = edition.unwrap_or_default();
            let (name, counter) = match outcome {
                Outcome::Sent { .. } => ("casewire_outbox_sent_total", &progress.sent),
                Outcome::Retry { .. } => ("casewire_outbox_retried_total", &progress.retried),
                Outcome::Suppressed { .. } => {
                    ("casewire_outbox_suppressed_total", &progress.suppressed)
                }
                Outcome::Dead { .. } => ("casewire_outbox_dead_total", &progress.dead),
                Outcome::Deferred { .. } => ("casewire_outbox_deferred_total", &progress.deferred),
                Outcome::Expired { .. } => ("casewire_outbox_expired_total", &progress.expired),
                Outcome::Released { .. } => {
                    let _ = ack.send(());
                    continue;
                }
            };
            counter.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(name, "edition" => edition).increment(1);
            let _ = ack.send(());
        }
    }
}
