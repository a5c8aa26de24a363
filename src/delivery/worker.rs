//! The delivery worker: claims due outbox rows under a lease, sends them with
//! bounded concurrency (globally, per recipient domain, and under the global
//! rate limit), and records each result in batched transactions. Every row
//! ends sent, suppressed or dead (DESIGN.md invariant 6), and the recipient
//! is re-checked against suppressions and the subscriber's status right
//! before each send (invariant 7).

//!
//! The parts, each in its own module: the failure policy (`policy`, pure),
//! relay health (`relay`), claims and leases (`claims`, SQL in
//! `store::outbox`), the worker's database lane and its batching (`lane`),
//! and per-message composition (`message`). This module ties them together:
//! a send slot per row, the per-domain and global rate limits, and acting on
//! each fault's class.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rand::Rng;
use tokio::sync::{mpsc, oneshot, Notify, OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::claims::{claim_rows, recover, Claimed};
use super::compose::Outgoing;
use super::lane::{
    check_recipients, renew, write_results, Answer, Check, Gate, InFlight, Lane, Passed, Report,
};
use super::message::{BuildError, MessageBuilder};
use super::pauses::EditionPauses;
use super::policy::Fault;
use super::relay::{Change, Relay};
use super::transport::{DeliveryError, Mailer, SendError};
use crate::config::Settings;
use crate::store::outbox::{self, ClaimedRow, Outcome};
use crate::store::{Backend, Db};

/// Tuning that is not part of the configuration file.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Rows claimed at once. Larger batches mean fewer claim statements;
    /// every claimed row waits under a lease until it gets a send slot.
    pub batch_size: usize,
    /// How often an idle worker looks for due rows without a wake-up.
    pub poll_interval: Duration,
    /// Lease on claimed rows, renewed every third of it while the worker
    /// lives: a dead worker's rows are claimable again this long after it
    /// stopped renewing (PostgreSQL also releases them at once, see [`recover`]).
    pub lease: Duration,
    /// Delay before the first retry; doubled per attempt, with jitter.
    pub retry_base: Duration,
    /// Longest delay between two attempts.
    pub retry_max: Duration,
    /// Only this edition's rows (`Some("")`: transactional mail only).
    pub edition: Option<String>,
    /// Return once no row is due and nothing is in flight (`digest send`, tools).
    pub stop_when_idle: bool,
    /// With `stop_when_idle`: rows are still being queued while this is true
    /// (`digest send` delivers while its edition run queues), so an empty
    /// outbox is not the end yet.
    pub more_coming: Option<Arc<AtomicBool>>,
    /// Release rows a dead process left in `sending` at startup (see
    /// [`recover`]). On SQLite this must be off in a process that may run
    /// beside the daemon (`digest send`): it cannot tell a dead owner from a
    /// live one there, and rows of a dead owner come back when their lease ends.
    pub recover: bool,
    /// The relay's circuit breaker, shared by every worker of the process.
    pub relay: Arc<Relay>,
    /// With `stop_when_idle`: return once the relay has been failing this
    /// long, leaving the rows queued (None: keep probing).
    pub relay_patience: Option<Duration>,
}

impl WorkerOptions {
    pub fn new(settings: &Settings) -> Self {
        Self {
            batch_size: (settings.mail.concurrency * 8).clamp(32, 512),
            poll_interval: settings.mail.poll_interval,
            lease: Duration::from_secs(30),
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(6 * 3600),
            edition: None,
            stop_when_idle: false,
            more_coming: None,
            recover: true,
            relay: Arc::new(Relay::new(
                relay_target(settings),
                Arc::new(crate::health::Health::default()),
            )),
            relay_patience: None,
        }
    }
}

/// `host:port` of `[mail] smtp_url`, or the .eml folder.
pub fn relay_target(settings: &Settings) -> String {
    match settings.mail.transport {
        crate::config::Transport::File => settings.mail.file_dir.display().to_string(),
        crate::config::Transport::Smtp => url::Url::parse(&settings.mail.smtp_url)
            .ok()
            .and_then(|u| {
                let port = u.port_or_known_default().unwrap_or(25);
                u.host_str().map(|h| format!("{h}:{port}"))
            })
            .unwrap_or_else(|| crate::config::redact(&settings.mail.smtp_url)),
    }
}

/// Counts of results recorded by one worker; read by progress bars.
#[derive(Debug, Default)]
pub struct Progress {
    pub sent: AtomicU64,
    pub retried: AtomicU64,
    pub suppressed: AtomicU64,
    pub dead: AtomicU64,
    /// Rows put back untouched because the relay failed.
    pub deferred: AtomicU64,
    pub expired: AtomicU64,
}

impl Progress {
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
    pub fn retried(&self) -> u64 {
        self.retried.load(Ordering::Relaxed)
    }
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Ordering::Relaxed)
    }
    pub fn dead(&self) -> u64 {
        self.dead.load(Ordering::Relaxed)
    }
    pub fn deferred(&self) -> u64 {
        self.deferred.load(Ordering::Relaxed)
    }
    pub fn expired(&self) -> u64 {
        self.expired.load(Ordering::Relaxed)
    }
}

/// The task that empties the outbox. See the module documentation.
pub struct DeliveryWorker {
    pub db: Db,
    pub settings: Arc<Settings>,
    pub mailer: Arc<Mailer>,
    /// Enqueuers call `notify_one()` after committing rows, so an idle worker
    /// starts at once instead of at its next poll.
    pub wake: Arc<Notify>,
    pub options: WorkerOptions,
    pub progress: Arc<Progress>,
}

struct Shared {
    db: Db,
    settings: Arc<Settings>,
    mailer: Arc<Mailer>,
    options: WorkerOptions,
    /// Builds and signs every message at send time.
    messages: MessageBuilder,
    domain_limit: usize,
    /// A std Mutex: held only to look up or insert, never across an await.
    domains: std::sync::Mutex<HashMap<String, Arc<Semaphore>>>,
    limiter: Option<DefaultDirectRateLimiter>,
    results: mpsc::UnboundedSender<Report>,
    /// SMTP transactions at once (`mail.concurrency`), held from the
    /// send-time check until the relay's reply to the content.
    sessions: Arc<Semaphore>,
    /// Messages past the step that delivers them and not yet recorded.
    gate: Gate,
    checks: mpsc::UnboundedSender<Check>,
    shutdown: CancellationToken,
    /// The relay's `host:port`, for messages.
    relay_target: String,
    /// The stored relay state says paused (left by an earlier process):
    /// the first transaction the relay judges clears it.
    stored_pause: AtomicBool,
    pauses: Arc<EditionPauses>,
    /// `expire_after` of each edition, in ms.
    expire_after: HashMap<String, i64>,
}

impl DeliveryWorker {
    pub async fn run(self, shutdown: CancellationToken) {
        if let Err(e) = self.try_run(shutdown).await {
            tracing::error!("delivery worker stopped: {e:#}");
        }
    }

    /// [`DeliveryWorker::run`], returning the error that stopped it (with
    /// `options.stop_when_idle`, returns once the outbox has nothing due).
    pub async fn try_run(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let key: i64 = rand::thread_rng().gen_range(1..i64::MAX);
        let owner = key.to_string();
        let settings = self.settings.clone();
        let mail = &settings.mail;
        let messages = MessageBuilder::new(self.db.clone(), settings.clone())?;
        let liveness = recover(&self.db, key, self.options.recover).await?;

        let limiter = (mail.rate_per_second > 0.0).then(|| {
            let quota = Quota::with_period(Duration::from_secs_f64(1.0 / mail.rate_per_second))
                .expect("rate_per_second is positive and finite")
                .allow_burst(NonZeroU32::MIN);
            RateLimiter::direct(quota)
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let lane = Arc::new(Lane::open(&self.db).await?);
        let in_flight = Arc::new(InFlight::default());
        let writer = tokio::spawn(write_results(
            lane.clone(),
            owner.clone(),
            rx,
            in_flight.clone(),
            mail.concurrency,
            self.progress.clone(),
        ));
        let (checks, checks_rx) = mpsc::unbounded_channel();
        let checker = tokio::spawn(check_recipients(lane.clone(), checks_rx));
        let stop_renewing = CancellationToken::new();
        let renewer = tokio::spawn(renew(
            lane.clone(),
            owner.clone(),
            self.options.lease,
            stop_renewing.clone(),
        ));
        let pauses = Arc::new(EditionPauses::default());
        let shared = Arc::new(Shared {
            db: self.db.clone(),
            settings: settings.clone(),
            mailer: self.mailer.clone(),
            options: self.options.clone(),
            messages,
            domain_limit: mail.concurrency.min(8),
            domains: Default::default(),
            limiter,
            results: tx,
            sessions: Arc::new(Semaphore::new(mail.concurrency)),
            gate: Gate::new(mail.concurrency, in_flight),
            checks,
            shutdown: shutdown.clone(),
            relay_target: self.mailer.target(),
            pauses: pauses.clone(),
            expire_after: settings
                .editions
                .iter()
                .map(|e| {
                    (
                        e.slug.as_str().to_owned(),
                        e.expire_after.as_millis() as i64,
                    )
                })
                .collect(),
            stored_pause: AtomicBool::new(
                crate::store::relay::load(&self.db)
                    .await?
                    .is_some_and(|r| r.paused == 1),
            ),
        });
        // Rows being worked on: `mail.concurrency` in SMTP transactions and
        // as many waiting for their results to commit.
        let slots = Arc::new(Semaphore::new(mail.concurrency * 2));
        let tracker = TaskTracker::new();
        let opts = &self.options;
        tracing::info!(
            owner,
            concurrency = mail.concurrency,
            "delivery worker started"
        );

        // The claimer keeps up to one batch of claimed rows ready, so send
        // slots never wait for a claim statement.
        let (rows_tx, mut rows_rx) = mpsc::channel::<Claimed>(opts.batch_size);
        let claimer = tokio::spawn(claim_rows(
            lane.clone(),
            owner.clone(),
            opts.clone(),
            pauses,
            tracker.clone(),
            rows_tx,
            self.wake.clone(),
            shutdown.clone(),
        ));
        loop {
            let row = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                r = rows_rx.recv() => match r {
                    Some(r) => r,
                    None => break,
                },
            };
            let permit = tokio::select! {
                biased;
                // The row stays `sending` under our lease; it is released below.
                _ = shutdown.cancelled() => break,
                p = slots.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            // Boxed: the task then holds a pointer, so spawning it and
            // storing its end do not copy the whole (large) future.
            tracker.spawn(Box::pin(deliver(shared.clone(), row.0, row.1, permit)));
        }
        drop(rows_rx);
        let _ = claimer.await;

        // Stop intake; let every started SMTP transaction finish and its result commit.
        tracker.close();
        tracker.wait().await;
        drop(shared);
        let _ = checker.await;
        let _ = writer.await;
        stop_renewing.cancel();
        let _ = renewer.await;
        drop(lane);
        // Rows claimed by this worker and never started (none, normally).
        let released = outbox::release_owner(&self.db, Some(&owner)).await?;
        if released > 0 {
            tracing::info!(released, "returned claimed rows to the queue");
        }
        if let Some(mut conn) = liveness {
            let _ = sqlx::query("SELECT pg_advisory_unlock_all()")
                .execute(&mut *conn)
                .await;
        }
        tracing::info!(owner, "delivery worker stopped");
        Ok(())
    }
}

/// One row: wait for a per-domain slot, the rate limiter and an SMTP
/// session, re-check the recipient, send, then hold the message's place
/// past the [`Gate`] until its result committed. That bounds
/// sent-but-unrecorded messages by `mail.concurrency`, which is what a
/// kill -9 can duplicate (invariant 6).
async fn deliver(shared: Arc<Shared>, row: ClaimedRow, probe: bool, _slot: OwnedSemaphorePermit) {
    // Asked now, while the row waits for its session: rows start together
    // when a wave's results commit, so their checks go in one query.
    let early = ask(&shared, &row);
    let domain = row.recipient.domain().to_owned();
    let domain_slots = {
        let mut map = shared.domains.lock().expect("not poisoned");
        map.entry(domain)
            .or_insert_with(|| Arc::new(Semaphore::new(shared.domain_limit)))
            .clone()
    };
    let ready = tokio::select! {
        biased;
        _ = shared.shutdown.cancelled() => None,
        p = async {
            let p = domain_slots.acquire_owned().await.expect("never closed");
            if let Some(l) = &shared.limiter {
                l.until_ready().await;
            }
            let session = shared.sessions.clone().acquire_owned().await.expect("never closed");
            (p, session)
        } => Some(p),
    };
    let relay = &shared.options.relay;
    let mut passed = None;
    let outcome = match ready {
        None => Outcome::Released { id: row.id },
        Some(_) if expired(&shared, &row) => Outcome::Expired {
            id: row.id,
            error: format!(
                "expired: not delivered within the edition's expire_after (queued {})",
                crate::store::from_millis(row.created_at).format("%Y-%m-%d %H:%M:%S UTC")
            ),
        },
        // Paused since this row was claimed: back to the queue untouched.
        Some(_) if !probe && relay.is_paused() => Outcome::Deferred { id: row.id },
        Some(_)
            if row
                .edition
                .as_deref()
                .is_some_and(|e| shared.pauses.is_paused(e)) =>
        {
            Outcome::Released { id: row.id }
        }
        Some((_domain_slot, session)) => {
            attempt(&shared, &row, probe, session, early, &mut passed).await
        }
    };
    if probe && !matches!(outcome, Outcome::Deferred { .. }) && relay.is_paused() {
        // The probe never reached the relay's judgement (suppressed, invalid).
        relay.probe_skipped();
    }
    let (ack, done) = oneshot::channel();
    if shared
        .results
        .send((outcome, row.edition.clone(), ack))
        .is_ok()
    {
        if let Some(p) = passed.as_mut() {
            p.handed();
        }
        let _ = done.await;
    }
}

/// Checks, builds and sends one row; `passed` is filled once the message
/// went past the gate (it may have been delivered from then on). The
/// session is given back once the relay answered the content.
async fn attempt(
    shared: &Shared,
    row: &ClaimedRow,
    probe: bool,
    session: OwnedSemaphorePermit,
    early: Asked,
    passed: &mut Option<Passed>,
) -> Outcome {
    let id = row.id;
    let verdict = match early.await {
        Ok(Answer { asked_at, verdict }) if asked_at.elapsed() <= CHECK_FRESH => verdict,
        // Answered too long ago (the row waited for the relay, the rate
        // limit or a domain slot), or not at all: asked again.
        _ => ask(shared, row)
            .await
            .map_or_else(|_| Err("the check stopped".into()), |a| a.verdict),
    };
    match verdict {
        Ok(Some(reason)) => {
            return Outcome::Suppressed {
                id,
                reason,
                suppress: None,
            }
        }
        Ok(None) => {}
        Err(e) => return retry_or_dead(shared, row, format!("checking suppressions: {e}")),
    }
    let Outgoing { envelope, bytes } = match shared.messages.build(row).await {
        Ok(o) => o,
        Err(BuildError::Store(e)) => return retry_or_dead(shared, row, e),
        Err(BuildError::Invalid(error)) => return Outcome::Dead { id, error },
    };
    let relay = &shared.options.relay;
    let approaching = shared.gate.approach();
    let gate = async move {
        let passed = shared.gate.pass().await;
        drop(approaching);
        passed
    };
    let sent = shared.mailer.send_raw(&envelope, &bytes, gate).await;
    drop(session);
    let error = match sent {
        Ok(p) => {
            *passed = Some(p);
            relay_changed(shared, judged(shared)).await;
            if let Some(e) = &row.edition {
                shared.pauses.judged(e);
            }
            return Outcome::Sent { id };
        }
        Err(SendError::Held) => {
            // Our side: results are not being recorded (the database),
            // so the transaction was given up before anything was delivered.
            tracing::warn!(
                id,
                "results have not been recorded for [mail] timeout_seconds; the transaction was abandoned before its end and the row goes back to the queue"
            );
            return Outcome::Released { id };
        }
        Err(SendError::Failed { error, passed: p }) => {
            *passed = p;
            error
        }
    };
    let fault = error.fault();
    metrics::counter!("casewire_delivery_faults_total", "class" => fault.as_str()).increment(1);
    if fault == Fault::Relay {
        relay_changed(shared, relay.failed(&error, probe)).await;
        return Outcome::Deferred { id };
    }
    relay_changed(shared, judged(shared)).await;
    if let Some(e) = &row.edition {
        if fault == Fault::Message {
            shared.pauses.refused(e, &error.to_string());
        } else {
            shared.pauses.judged(e);
        }
    }
    on_fault(shared, row, fault, error)
}

/// Longest time between the send-time check's query and the start of the
/// transaction it cleared. A row asks when it starts waiting for its
/// session, which in a steady run is about one wave (a millisecond or two);
/// an answer older than this is asked again, so an unsubscribe or a
/// suppression is seen by every transaction that starts more than this
/// after it committed (invariant 7).
const CHECK_FRESH: Duration = Duration::from_millis(5);

/// A send-time check on its way ([`super::lane::check_recipients`]).
type Asked = oneshot::Receiver<Answer>;

/// Asks the send-time check for `row`'s recipient.
fn ask(shared: &Shared, row: &ClaimedRow) -> Asked {
    let (answer, asked) = oneshot::channel();
    let _ = shared
        .checks
        .send((row.recipient.clone(), row.subscriber_id, answer));
    asked
}

/// What a fault of the recipient or the message does to the row: the
/// failure policy's verdict acted on, nothing else decided here.
fn on_fault(shared: &Shared, row: &ClaimedRow, fault: Fault, error: DeliveryError) -> Outcome {
    let id = row.id;
    match fault {
        Fault::Recipient => {
            tracing::warn!(recipient = %row.recipient, %error, "the recipient's address is refused for good; address suppressed");
            Outcome::Suppressed {
                id,
                reason: format!("smtp: {error}"),
                suppress: Some(row.recipient.clone()),
            }
        }
        Fault::Message => {
            tracing::warn!(id, recipient = %row.recipient, %error, "the relay refused this message; it is dead, the address is not suppressed");
            Outcome::Dead {
                id,
                error: format!("smtp: {error}"),
            }
        }
        Fault::RecipientRetry | Fault::Retry | Fault::Relay => {
            retry_or_dead(shared, row, format!("smtp: {error}"))
        }
    }
}

/// A digest queued longer ago than its edition's `expire_after`.
fn expired(shared: &Shared, row: &ClaimedRow) -> bool {
    let Some(limit) = row
        .edition
        .as_deref()
        .and_then(|e| shared.expire_after.get(e))
    else {
        return false;
    };
    row.created_at.saturating_add(*limit) <= Utc::now().timestamp_millis()
}

/// A transaction reached the relay's judgement: closes the breaker, or
/// clears a pause an earlier process stored.
fn judged(shared: &Shared) -> Option<Change> {
    let change = shared.options.relay.succeeded();
    if change.is_none()
        && shared.stored_pause.load(Ordering::Relaxed)
        && shared.stored_pause.swap(false, Ordering::Relaxed)
    {
        return Some(Change::Resumed {
            paused_for: chrono::Duration::zero(),
        });
    }
    change
}

/// Logs, counts and stores a change of the relay breaker (rare: the store
/// write is awaited, so `status` shows the change once the row's result does).
async fn relay_changed(shared: &Shared, change: Option<Change>) {
    let Some(change) = change else { return };
    match &change {
        Change::Paused(fault) => {
            tracing::error!(
                "{}; delivery paused, no message is lost or counted as an attempt",
                fault.message
            );
            metrics::counter!("casewire_relay_pauses_total").increment(1);
            metrics::gauge!("casewire_relay_paused").set(1.0);
        }
        Change::Resumed { paused_for } => {
            tracing::info!(
                "relay {} answers again after {} s; delivery resumed",
                shared.relay_target,
                paused_for.num_seconds()
            );
            metrics::gauge!("casewire_relay_paused").set(0.0);
        }
    }
    if let Err(e) =
        crate::store::relay::record(&shared.db, &shared.relay_target, &change, Utc::now()).await
    {
        tracing::warn!("storing the relay's state for `casewire status` failed: {e}");
    }
}

fn retry_or_dead(shared: &Shared, row: &ClaimedRow, error: String) -> Outcome {
    let attempts = row.attempts + 1;
    if attempts >= i64::from(shared.settings.mail.max_attempts) {
        tracing::error!(id = row.id, recipient = %row.recipient, attempts, %error, "giving up on message");
        return Outcome::Dead { id: row.id, error };
    }
    let delay = backoff(&shared.options, attempts as u32);
    tracing::info!(id = row.id, attempts, ?delay, %error, "will retry");
    Outcome::Retry {
        id: row.id,
        next_attempt_at: Utc::now() + delay,
        error,
    }
}

/// `retry_base * 2^(attempts-1)`, capped, then a random point in its upper
/// half so that a burst of failures does not come back as one burst.
pub fn backoff(options: &WorkerOptions, attempts: u32) -> Duration {
    let exp = options
        .retry_base
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(20))
        .min(options.retry_max);
    exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
}

/// What [`drain`] did.
#[derive(Debug, Clone)]
pub struct DrainReport {
    pub sent: u64,
    pub retried: u64,
    pub suppressed: u64,
    pub dead: u64,
    /// Rows put back untouched because the relay failed.
    pub deferred: u64,
    /// Set when the drain stopped because the relay kept failing.
    pub relay_fault: Option<String>,
    /// Rows still queued (waiting for a retry) when the drain ended.
    pub pending: i64,
    pub elapsed: Duration,
}

impl DrainReport {
    /// Messages sent per second.
    pub fn rate(&self) -> f64 {
        self.sent as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Runs a worker until no row (of `edition`, when given; `""` is
/// transactional mail) is due and nothing is in flight, and `more_coming`
/// (when given) is false. `progress` can be polled meanwhile, e.g. for a
/// progress bar; cancelling `shutdown` stops early, finishing in-flight
/// transactions.
pub async fn drain(
    db: Db,
    settings: Arc<Settings>,
    edition: Option<String>,
    more_coming: Option<Arc<AtomicBool>>,
    progress: Arc<Progress>,
    shutdown: CancellationToken,
) -> anyhow::Result<DrainReport> {
    let mailer = Mailer::from_settings(&settings.mail)?;
    let mut options = WorkerOptions::new(&settings);
    options.edition = edition.clone();
    options.stop_when_idle = true;
    options.more_coming = more_coming;
    // PostgreSQL proves an owner dead before releasing its rows; SQLite cannot.
    options.recover = db.backend == Backend::Postgres;
    // A command gives up on a relay that keeps failing; the rows stay queued.
    options.relay_patience = Some(Duration::from_secs(60));
    let relay = options.relay.clone();
    let started = Instant::now();
    DeliveryWorker {
        db: db.clone(),
        settings,
        mailer: mailer.clone(),
        wake: Arc::new(Notify::new()),
        options,
        progress: progress.clone(),
    }
    .try_run(shutdown)
    .await?;
    let elapsed = started.elapsed();
    mailer.shutdown().await;
    Ok(DrainReport {
        sent: progress.sent(),
        retried: progress.retried(),
        suppressed: progress.suppressed(),
        dead: progress.dead(),
        deferred: progress.deferred(),
        relay_fault: relay.fault().map(|f| f.message),
        pending: outbox::pending_count(&db, edition.as_deref()).await?,
        elapsed,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_jitter_and_is_capped() {
        let o = WorkerOptions {
            batch_size: 1,
            poll_interval: Duration::from_secs(1),
            lease: Duration::from_secs(30),
            retry_base: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            edition: None,
            stop_when_idle: false,
            more_coming: None,
            recover: true,
            relay: Arc::new(Relay::new("r", Default::default())),
            relay_patience: None,
        };
        for _ in 0..100 {
            let d1 = backoff(&o, 1);
            assert!(d1 >= Duration::from_secs(30) && d1 <= Duration::from_secs(60));
            let d3 = backoff(&o, 3);
            assert!(d3 >= Duration::from_secs(120) && d3 <= Duration::from_secs(240));
            assert!(backoff(&o, 30) <= Duration::from_secs(3600));
        }
    }
}
