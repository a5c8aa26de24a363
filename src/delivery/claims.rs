//! Claims and leases: the task that keeps a batch of due rows claimed ahead
//! of the send slots, and startup recovery of rows a dead process left
//! claimed. The SQL lives in `store::outbox`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::lane::{Lane, Role};
use super::pauses::EditionPauses;
use super::relay::Gate;
use super::worker::WorkerOptions;
use crate::store::outbox::{self, ClaimedRow};
use crate::store::{Backend, Db};

/// How often a claim first returns rows whose lease expired to the queue.
/// A lease lasts 30 s, so a second more changes little for a dead owner's
/// rows, and the claims in between are one statement instead of two.
const RELEASE_EVERY: Duration = Duration::from_secs(1);

/// A claimed row, and whether it is the relay's probe (see [`super::relay::Relay::gate`]).
pub(super) type Claimed = (ClaimedRow, bool);

/// Makes rows left in `sending` by a process that died claimable again, so a
/// restart resumes at once instead of after the lease.
///
/// SQLite is one writer on one machine, and casewire runs one delivery worker
/// per database file, so every `sending` row at startup belongs to a process
/// that is gone: all of them return to `queued`. (Running `digest send` on the
/// same SQLite file while the daemon sends could re-send the daemon's few
/// in-flight messages; that is the duplicate invariant 6 allows.)
///
/// PostgreSQL is shared by several daemons, so a row is released only when
/// its owner is provably dead: each worker holds a session advisory lock on
/// its owner key for its whole life, on a dedicated connection, and the
/// server drops that lock when the process dies (its connection closes). If
/// the lock of an owner can be taken, that owner is gone. The renewed lease is
/// the backstop (e.g. a network partition that keeps a session half-open).
pub(super) async fn recover(
    db: &Db,
    key: i64,
    release: bool,
) -> anyhow::Result<Option<sqlx::pool::PoolConnection<sqlx::Any>>> {
    match db.backend {
        Backend::Sqlite if !release => Ok(None),
        Backend::Sqlite => {
            let n = outbox::release_owner(db, None).await?;
            if n > 0 {
                tracing::info!(rows = n, "resuming rows a previous process was sending");
            }
            Ok(None)
        }
        Backend::Postgres => {
            let mut mine = db.pool.acquire().await?;
            sqlx::query("SELECT pg_advisory_lock($1)")
                .bind(key)
                .execute(&mut *mine)
                .await?;
            if !release {
                return Ok(Some(mine));
            }
            let mut probe = db.pool.acquire().await?;
            for other in outbox::sending_owners(db).await? {
                let Ok(other_key) = other.parse::<i64>() else {
                    continue;
                };
                let free: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
                    .bind(other_key)
                    .fetch_one(&mut *probe)
                    .await?;
                if free {
                    let n = outbox::release_owner(db, Some(&other)).await?;
                    sqlx::query("SELECT pg_advisory_unlock($1)")
                        .bind(other_key)
                        .execute(&mut *probe)
                        .await?;
                    if n > 0 {
                        tracing::info!(
                            rows = n,
                            owner = other,
                            "resuming rows of a stopped worker"
                        );
                    }
                }
            }
            Ok(Some(mine))
        }
    }
}

/// Claims batches into `rows` while there is room; returns (closing
/// `rows`) on shutdown, or when `stop_when_idle` and nothing is due or in flight.
#[allow(clippy::too_many_arguments)]
pub(super) async fn claim_rows(
    lane: Arc<Lane>,
    owner: String,
    opts: WorkerOptions,
    pauses: Arc<EditionPauses>,
    in_flight: TaskTracker,
    rows: mpsc::Sender<Claimed>,
    wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let relay = opts.relay.clone();
    let mut released_at: Option<Instant> = None;
    loop {
        // Wait for room for a whole batch (or half of one, to keep the pipe full).
        let room = tokio::select! {
            _ = shutdown.cancelled() => return,
            p = rows.reserve_many(opts.batch_size.div_ceil(2)) => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        drop(room);
        if opts.stop_when_idle && relay_gave_up(&opts) {
            // The rows stay queued for a later run or the daemon.
            while !(in_flight.is_empty() && rows.capacity() == rows.max_capacity()) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            return;
        }
        // While the relay is failing, wait for the next probe and claim one row.
        let gate = tokio::select! {
            _ = shutdown.cancelled() => return,
            g = relay.gate() => g,
            _ = tokio::time::sleep(Duration::from_millis(100)), if opts.stop_when_idle && opts.relay_patience.is_some() => continue,
        };
        let probe = gate == Gate::Probe;
        store_pauses(&lane, &pauses, relay.health()).await;
        let want = if probe {
            1
        } else {
            rows.capacity().max(1) as i64
        };
        // Read before the claim: once the producer is done, this claim sees
        // everything it queued.
        let producing = opts
            .more_coming
            .as_ref()
            .is_some_and(|m| m.load(Ordering::Acquire));
        let now = Utc::now();
        let release = released_at.is_none_or(|at| at.elapsed() >= RELEASE_EVERY);
        let claimed = match lane.write(Role::Claims).await {
            Ok((_turn, mut conn)) => {
                let claimed = outbox::claim(
                    &mut conn,
                    lane.db.backend,
                    &owner,
                    want,
                    now,
                    now + opts.lease,
                    opts.edition.as_deref(),
                    release,
                )
                .await;
                if claimed.is_err() {
                    conn.failed();
                }
                claimed
            }
            Err(e) => Err(e.into()),
        };
        if release && claimed.is_ok() {
            released_at = Some(Instant::now());
        }
        let claimed = match claimed {
            Ok(c) => c,
            Err(e) => {
                if probe {
                    relay.probe_skipped();
                }
                tracing::warn!("claiming outbox rows failed, retrying: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(opts.poll_interval) => {}
                    _ = shutdown.cancelled() => return,
                }
                continue;
            }
        };
        if claimed.is_empty() {
            if probe {
                relay.probe_skipped();
            }
            if opts.stop_when_idle {
                if !producing && in_flight.is_empty() && rows.capacity() == rows.max_capacity() {
                    return;
                }
                // Results in flight may schedule retries that are due at
                // once, and a producer may commit more rows any moment.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(opts.poll_interval) => {}
                _ = wake.notified() => {}
                _ = shutdown.cancelled() => return,
            }
            continue;
        }
        for row in claimed {
            if let Some(e) = row.edition.as_deref() {
                if pauses.resumed(e) {
                    relay.health().clear(&format!("edition {e}"));
                    tracing::info!(
                        edition = e,
                        "edition resumed; delivering its queued messages"
                    );
                }
            }
            if rows.send((row, probe)).await.is_err() {
                return;
            }
        }
    }
}

/// Stores the editions that paused themselves since the last claim, so the
/// next claim skips their rows.
async fn store_pauses(lane: &Lane, pauses: &EditionPauses, health: &crate::health::Health) {
    let todo = pauses.take_unstored();
    if todo.is_empty() {
        return;
    }
    let stored = async {
        let (_turn, mut conn) = lane.write(Role::Other).await?;
        for (edition, reason) in &todo {
            crate::store::edition_pauses::pause(&mut conn, edition, reason, Utc::now()).await?;
        }
        anyhow::Ok(())
    }
    .await;
    match stored {
        Ok(()) => {
            pauses.stored(&todo);
            for (edition, reason) in &todo {
                tracing::error!(edition, "{reason}");
                health.report(&format!("edition {edition}"), reason.clone());
                metrics::counter!("casewire_edition_pauses_total", "edition" => edition.clone())
                    .increment(1);
            }
        }
        Err(e) => {
            tracing::warn!("storing an edition's pause failed, retrying: {e}");
            pauses.unstored(todo);
        }
    }
}

/// With `relay_patience`: the relay has been failing for longer than that.
fn relay_gave_up(opts: &WorkerOptions) -> bool {
    let Some(patience) = opts.relay_patience else {
        return false;
    };
    opts.relay
        .fault()
        .is_some_and(|f| (Utc::now() - f.since).to_std().unwrap_or_default() >= patience)
}
