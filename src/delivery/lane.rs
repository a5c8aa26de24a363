//! The worker's own database lane: where its claims, send-time checks,
//! result writes and lease renewals run, and the two tasks that batch them
//! (group checks before sending, group commits after). The SQL itself lives
//! in `store::outbox`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::pool::PoolConnection;
use sqlx::{Any, AnyConnection, Executor as _};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::worker::Progress;
use crate::domain::EmailAddress;
use crate::store::outbox::{self, Outcome};
use crate::store::{Backend, Db, WriteTurn};

/// A row's result, its edition (for metrics), and who waits for it to commit.
pub(super) type Report = (Outcome, Option<String>, oneshot::Sender<()>);

/// A send-time check: recipient, subscriber, and where the answer goes.
pub(super) type Check = (EmailAddress, Option<i64>, oneshot::Sender<Answer>);

/// The answer to a [`Check`]: why the recipient may not be sent to (None:
/// they may), or the store's error; and when the query that answered it
/// started, which is how old the answer is.
#[derive(Debug)]
pub(super) struct Answer {
    pub(super) asked_at: std::time::Instant,
    pub(super) verdict: Result<Option<String>, String>,
}

/// Where the worker's own statements run (claims, send-time checks, results,
/// lease renewals).
///
/// SQLite: one connection, held for the worker's life, taking turns. In WAL
/// mode a commit on one connection makes every other connection drop its
/// whole page cache at its next read, so statements spread over the pool
/// re-read their pages from the file every time; on one connection the cache
/// stays warm, and claims and result writes never collide as two writers.
/// The send-time checks are the exception: they only read (a few pages of
/// suppressions and subscribers), and on a connection of their own the next
/// wave's checks need not wait for the last wave's commit.
/// PostgreSQL: statements in parallel. The three that run once per wave or
/// batch of messages (the check, the result write and the claim) each keep
/// a connection of their own: a connection taken from the pool is first
/// pinged, one more round trip every time. The others take one from the pool.
pub(super) struct Lane {
    pub(super) db: Db,
    held: Option<tokio::sync::Mutex<PoolConnection<Any>>>,
    checks: tokio::sync::Mutex<Option<PoolConnection<Any>>>,
    results: tokio::sync::Mutex<Option<PoolConnection<Any>>>,
    claims: tokio::sync::Mutex<Option<PoolConnection<Any>>>,
}

/// Who asks for a connection (see [`Lane`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Role {
    Checks,
    Results,
    Claims,
    Other,
}

pub(super) enum LaneConn<'a> {
    Held(tokio::sync::MutexGuard<'a, PoolConnection<Any>>),
    /// A role's own connection; always `Some` while handed out.
    Own(tokio::sync::MutexGuard<'a, Option<PoolConnection<Any>>>),
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
            checks: Default::default(),
            results: Default::default(),
            claims: Default::default(),
        })
    }

    /// A connection for a write, after this process's turn to write.
    pub(super) async fn write(&self, role: Role) -> Result<(WriteTurn, LaneConn<'_>), sqlx::Error> {
        let turn = self.db.write_turn().await;
        Ok((turn, self.conn(role).await?))
    }

    pub(super) async fn conn(&self, role: Role) -> Result<LaneConn<'_>, sqlx::Error> {
        if let Some(c) = self.held.as_ref().filter(|_| role != Role::Checks) {
            return Ok(LaneConn::Held(c.lock().await));
        }
        let own = match role {
            Role::Checks => &self.checks,
            Role::Results => &self.results,
            Role::Claims => &self.claims,
            Role::Other => return Ok(LaneConn::Pooled(self.db.pool.acquire().await?)),
        };
        let mut own = own.lock().await;
        if own.is_none() {
            let mut conn = self.db.pool.acquire().await?;
            if self.db.backend == Backend::Sqlite {
                *own = Some(conn);
                return Ok(LaneConn::Own(own));
            }
            // A session keeps its prepared statements, and after five runs
            // PostgreSQL may swap a statement's plan for a generic one made
            // for no particular values, kept until the statistics change.
            // The outbox grows from nothing to a run's size faster than
            // autovacuum analyzes it, so a generic plan made early reads the
            // whole table to mark a few rows sent (measured: 5 ms a batch,
            // half the run's speed).
            //
            // The checks and the results only look rows up by key (an
            // address, a subscriber id, row ids): an index is always right
            // for them and a table scan never is. Their sessions keep one
            // plan per statement, made once, with table scans ruled out;
            // planning the check anew took longer than running it (0.28 ms
            // a check against 0.17 ms, measured with pgbench). The claim
            // orders and limits by the due indexes, whose choice depends on
            // the edition asked for; it is planned for its own values.
            let setup = match role {
                Role::Claims => "SET plan_cache_mode = force_custom_plan",
                _ => "SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off",
            };
            conn.execute(setup).await?;
            *own = Some(conn);
        }
        Ok(LaneConn::Own(own))
    }
}

impl LaneConn<'_> {
    /// A statement on this connection failed: a role's own connection is
    /// given back (closed), so the next statement starts on a fresh, tested
    /// one instead of a connection that may be broken.
    pub(super) fn failed(&mut self) {
        if let LaneConn::Own(own) = self {
            if let Some(conn) = own.take() {
                drop(conn.detach());
            }
        }
    }
}

impl std::ops::Deref for LaneConn<'_> {
    type Target = AnyConnection;
    fn deref(&self) -> &AnyConnection {
        match self {
            LaneConn::Held(c) => c,
            LaneConn::Own(c) => c.as_ref().expect("filled while handed out"),
            LaneConn::Pooled(c) => c,
        }
    }
}

impl std::ops::DerefMut for LaneConn<'_> {
    fn deref_mut(&mut self) -> &mut AnyConnection {
        match self {
            LaneConn::Held(c) => c,
            LaneConn::Own(c) => c.as_mut().expect("filled while handed out"),
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
        let renewed = match lane.write(Role::Other).await {
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
/// arrived while the previous query ran goes into the next one (at most
/// 256). A message asks when its row starts, while it waits for an SMTP
/// session: rows start together when a wave's results commit, so one
/// round trip answers a wave instead of one per message. An answer older
/// than the worker's freshness limit by the time the transaction starts is
/// asked for again (`worker::CHECK_FRESH`).
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
        let asked_at = std::time::Instant::now();
        let reasons = match lane.conn(Role::Checks).await {
            Ok(mut conn) => {
                let reasons = outbox::blocked_reasons(&mut conn, &asked).await;
                if reasons.is_err() {
                    conn.failed();
                }
                reasons
            }
            Err(e) => Err(e.into()),
        };
        match reasons {
            Ok(reasons) => {
                for ((_, _, answer), reason) in group.drain(..).zip(reasons) {
                    let _ = answer.send(Answer {
                        asked_at,
                        verdict: Ok(reason),
                    });
                }
            }
            Err(e) => {
                for (_, _, answer) in group.drain(..) {
                    let _ = answer.send(Answer {
                        asked_at,
                        verdict: Err(e.to_string()),
                    });
                }
            }
        }
    }
}

/// Messages past the [`Gate`] whose result has not reached the result
/// writer yet, and messages on their way to the gate. The writer waits
/// for them briefly, so that one commit serves a whole wave of messages.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    /// Past the gate, result not handed to the writer.
    flying: AtomicUsize,
    /// In their SMTP transaction, not yet at the gate.
    approaching: AtomicUsize,
}

/// A message on its way to the [`Gate`] (in its SMTP transaction, before
/// the gate), counted in [`InFlight`] until dropped.
pub(super) struct Approaching(Arc<InFlight>);

impl Drop for Approaching {
    fn drop(&mut self) {
        self.0.approaching.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One message counted in [`InFlight`] until dropped (after its result was
/// handed to the writer).
pub(super) struct Flying(Arc<InFlight>);

impl InFlight {
    fn enter(self: &Arc<Self>) -> Flying {
        self.flying.fetch_add(1, Ordering::AcqRel);
        Flying(self.clone())
    }
}

impl Drop for Flying {
    fn drop(&mut self) {
        self.0.flying.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The step that may deliver a message (the final `.` line of its SMTP
/// content, or all of the content on an encrypted session; its `.eml`
/// file), taken by at most `mail.concurrency` messages whose results have
/// not committed. That bound is what a kill -9 can duplicate (invariant
/// 6): a message stopped before the gate ends its transaction with nothing
/// delivered. Messages up to the gate (the check, building, MAIL, RCPT,
/// DATA, the content on a plain session) need no place here, so the next
/// wave gets that far while the last one's results commit.
pub(super) struct Gate {
    places: Arc<Semaphore>,
    in_flight: Arc<InFlight>,
}

/// A place past the [`Gate`], held until the message's result committed.
pub(super) struct Passed {
    _place: OwnedSemaphorePermit,
    flying: Option<Flying>,
}

impl Gate {
    pub(super) fn new(places: usize, in_flight: Arc<InFlight>) -> Self {
        Self {
            places: Arc::new(Semaphore::new(places)),
            in_flight,
        }
    }

    /// Counts a message on its way here until the returned guard is
    /// dropped (when it passes, or gives up before).
    pub(super) fn approach(&self) -> Approaching {
        self.in_flight.approaching.fetch_add(1, Ordering::AcqRel);
        Approaching(self.in_flight.clone())
    }

    pub(super) async fn pass(&self) -> Passed {
        let place = self
            .places
            .clone()
            .acquire_owned()
            .await
            .expect("the gate is never closed");
        Passed {
            _place: place,
            flying: Some(self.in_flight.enter()),
        }
    }
}

impl Passed {
    /// The message's result is with the writer: it is no longer waited for
    /// (its place is kept until the result commits).
    pub(super) fn handed(&mut self) {
        self.flying = None;
    }
}

/// Takes what `rx` holds into `into` (up to `max`), and keeps taking what
/// arrives until no message is in flight or `wait` has passed since the
/// call. The count is read before each drain: a message hands over its
/// result first and leaves the count after, so a zero read means every
/// result counted so far is already in the channel.
///
/// Once none is in flight, a batch that holds fewer than the gate's
/// `places` waits up to [`STRAGGLER_WAIT`] more for messages still on their
/// way to the gate: places are free for them, and a straggler left out
/// costs a commit of its own in the next wave.
async fn gather<T>(
    rx: &mut mpsc::UnboundedReceiver<T>,
    into: &mut Vec<T>,
    max: usize,
    wait: Duration,
    in_flight: &InFlight,
    places: usize,
) {
    let deadline = tokio::time::Instant::now() + wait;
    let mut stragglers: Option<tokio::time::Instant> = None;
    loop {
        let coming = in_flight.flying.load(Ordering::Acquire);
        while into.len() < max {
            match rx.try_recv() {
                Ok(item) => into.push(item),
                Err(_) => break,
            }
        }
        if into.len() >= max {
            return;
        }
        let mut until = deadline;
        if coming == 0 {
            let approaching = in_flight.approaching.load(Ordering::Acquire);
            if approaching == 0 || into.len() >= places {
                return;
            }
            let end =
                *stragglers.get_or_insert_with(|| tokio::time::Instant::now() + STRAGGLER_WAIT);
            until = until.min(end);
        }
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(item)) => into.push(item),
            Ok(None) | Err(_) => return,
        }
    }
}

/// Longest a result waits for the rest of its wave before its commit starts.
const WAVE_WAIT: Duration = Duration::from_millis(5);

/// Longest a batch with free places waits for messages still on their way
/// to the gate once the rest of its wave is in (about one relay round trip
/// on a local network). Measured at 150, 300 and 600 µs: rows per
/// commit went from 13–14 to 15–16 at each, and the rate did not differ
/// beyond noise between them.
const STRAGGLER_WAIT: Duration = Duration::from_micros(200);

/// Records results in batches, each sender learning when its result is
/// durable. A batch is everything that arrived while the previous
/// transaction committed, and then whatever the messages still in flight
/// report within [`WAVE_WAIT`]: once none is left in flight the commit
/// starts at once. Messages hold their place past the [`Gate`] until
/// their result commits, so the places tend to move in waves; waiting for the
/// wave makes one commit of a dozen rows instead of a few commits of two or
/// three, and each commit's fixed cost (its statements, the WAL frames of
/// every index page it touched, the round trips) is most of what a result
/// costs.
pub(super) async fn write_results(
    lane: Arc<Lane>,
    owner: String,
    mut rx: mpsc::UnboundedReceiver<Report>,
    in_flight: Arc<InFlight>,
    places: usize,
    progress: Arc<Progress>,
) {
    let mut batch: Vec<Report> = Vec::new();
    while let Some(first) = rx.recv().await {
        batch.push(first);
        gather(&mut rx, &mut batch, 1024, WAVE_WAIT, &in_flight, places).await;
        let outcomes: Vec<Outcome> = batch.iter().map(|(o, _, _)| o.clone()).collect();
        let mut backoff = Duration::from_millis(50);
        loop {
            let result = match lane.write(Role::Results).await {
                Ok((_turn, mut conn)) => {
                    let result =
                        outbox::record_outcomes(&mut conn, &owner, &outcomes, Utc::now()).await;
                    if result.is_err() {
                        conn.failed();
                    }
                    result
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
