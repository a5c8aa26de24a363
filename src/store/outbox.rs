//! Outbox rows: enqueueing is idempotent through `dedupe_key`, and runs inside
//! the caller's transaction so a message exists exactly when the state change
//! that caused it committed.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, Connection};

use super::tallies::{rollback, PUT_BACK, SET_ASIDE};
use super::{to_millis, StoreError};
use crate::domain::EmailAddress;

/// What an outbox row carries (the `kind` column). Transactional kinds are
/// rendered from their `vars` at send time; digests share a stored body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// "Please confirm your subscription".
    Confirmation,
    /// "You are already subscribed" (a sign-up for a confirmed address).
    Already,
    /// The optional welcome after confirmation (`[mail] welcome`).
    Welcome,
    /// "Here is your link to manage your subscription" (lost-link form).
    ManageLink,
    /// One subscriber's digest of an edition run.
    Digest,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Confirmation,
        Kind::Already,
        Kind::Welcome,
        Kind::ManageLink,
        Kind::Digest,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Confirmation => "confirmation",
            Kind::Already => "already",
            Kind::Welcome => "welcome",
            Kind::ManageLink => "manage_link",
            Kind::Digest => "digest",
        }
    }

    pub fn parse(value: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == value)
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// Where a row is in its life (the `state` column). `Queued` and `Sending`
/// are the only states a row leaves; every row ends in one of the others
/// (DESIGN.md invariant 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    Queued,
    /// Claimed by a worker under a lease.
    Sending,
    Sent,
    /// Not sent: the address is suppressed or the subscriber left.
    Suppressed,
    /// Refused for good, or attempts exhausted.
    Dead,
    /// Not delivered within its edition's `expire_after`.
    Expired,
}

impl State {
    pub const ALL: [State; 6] = [
        State::Queued,
        State::Sending,
        State::Sent,
        State::Suppressed,
        State::Dead,
        State::Expired,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Sending => "sending",
            State::Sent => "sent",
            State::Suppressed => "suppressed",
            State::Dead => "dead",
            State::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Option<State> {
        State::ALL.into_iter().find(|s| s.as_str() == value)
    }

    /// A row in this state is done: no worker touches it again.
    pub const fn is_final(self) -> bool {
        !matches!(self, State::Queued | State::Sending)
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// A `state` or `kind` value no version of casewire writes.
#[derive(Debug, thiserror::Error)]
#[error("{column} {value:?} is not one casewire writes")]
pub struct UnknownValue {
    column: &'static str,
    value: String,
}

impl TryFrom<String> for State {
    type Error = UnknownValue;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        State::parse(&value).ok_or(UnknownValue {
            column: "state",
            value,
        })
    }
}

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Unique per logical message: a second enqueue with the same key is a no-op.
    pub dedupe_key: &'a str,
    pub kind: Kind,
    pub edition: Option<&'a str>,
    pub subscriber_id: Option<i64>,
    pub recipient: &'a EmailAddress,
    /// A finished RFC 5322 message, sent as it is. Only rows of earlier
    /// versions and tools use this: casewire's own mail queues `vars` (or a
    /// body) and is composed and signed at send time.
    pub message: Option<&'a str>,
    /// A shared body plus per-recipient `vars` (digests); without a body,
    /// `vars` holds what the transactional template needs.
    pub body_id: Option<i64>,
    pub vars: &'a serde_json::Value,
    pub now: DateTime<Utc>,
}

/// Queues `msg`; returns false when a row with its dedupe key already exists.
pub async fn enqueue<'c, E>(executor: E, msg: &NewMessage<'_>) -> Result<bool, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let now = to_millis(msg.now);
    let result = sqlx::query(
        "INSERT INTO outbox (dedupe_key, kind, edition, subscriber_id, recipient, body_id, message, vars, state, attempts, next_attempt_at, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'queued', 0, $9, $10, $11) ON CONFLICT (dedupe_key) DO NOTHING",
    )
    .bind(msg.dedupe_key)
    .bind(msg.kind.as_str())
    .bind(msg.edition)
    .bind(msg.subscriber_id)
    .bind(msg.recipient.as_str())
    .bind(msg.body_id)
    .bind(msg.message)
    .bind(msg.vars.to_string())
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(executor)
    .await?;
    if result.rows_affected() > 0 {
        metrics::counter!("casewire_outbox_enqueued_total", "kind" => msg.kind.as_str(), "edition" => msg.edition.unwrap_or("").to_owned()).increment(1);
    }
    Ok(result.rows_affected() > 0)
}

/// Stores a body shared by many digest rows; returns its id.
pub async fn insert_body<'c, E>(
    executor: E,
    subject: &str,
    html: &str,
    text: &str,
    now: DateTime<Utc>,
) -> Result<i64, StoreError>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let id: i64 = sqlx::query_scalar("INSERT INTO outbox_bodies (subject, html, text, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
        .bind(subject)
        .bind(html)
        .bind(text)
        .bind(to_millis(now))
        .fetch_one(executor)
        .await?;
    Ok(id)
}

// ---------------------------------------------------------------------------
// Delivery: claiming, leases, results, status.

use super::{as_one_json_row, json_rows, Backend, Db, List};

/// Columns a worker needs to send one row.
#[derive(Debug, Clone)]
pub struct ClaimedRow {
    pub id: i64,
    pub kind: Kind,
    pub edition: Option<String>,
    pub subscriber_id: Option<i64>,
    pub recipient: EmailAddress,
    pub body_id: Option<i64>,
    pub message: Option<String>,
    pub vars: String,
    /// Attempts made before this claim.
    pub attempts: i64,
    /// When the row was queued (ms): digests expire `expire_after` later.
    pub created_at: i64,
}

/// A claimed row as the database returns it, before its kind and recipient
/// are checked ([`triage`]). On SQLite it arrives as an array of
/// [`CLAIM_COLUMNS`] in a JSON array of rows (see [`claim`]).
#[derive(Debug, sqlx::FromRow, serde::Deserialize)]
struct StoredRow {
    id: i64,
    kind: String,
    edition: Option<String>,
    subscriber_id: Option<i64>,
    recipient: String,
    body_id: Option<i64>,
    message: Option<String>,
    vars: String,
    attempts: i64,
    created_at: i64,
}

/// The row typed, or why it can never be sent. Rows are written through
/// [`EmailAddress`] and [`Kind`], so only a row from an older version or a
/// hand edit fails here; it ends dead instead of blocking the queue.
fn triage(row: StoredRow) -> Result<ClaimedRow, (StoredRow, String)> {
    let Some(kind) = Kind::parse(&row.kind) else {
        let error = format!("unknown message kind {:?}", row.kind);
        return Err((row, error));
    };
    let recipient = match EmailAddress::parse(&row.recipient) {
        Ok(r) => r,
        Err(e) => return Err((row, format!("recipient: {e}"))),
    };
    Ok(ClaimedRow {
        id: row.id,
        kind,
        edition: row.edition,
        subscriber_id: row.subscriber_id,
        recipient,
        body_id: row.body_id,
        message: row.message,
        vars: row.vars,
        attempts: row.attempts,
        created_at: row.created_at,
    })
}

const CLAIM_COLUMNS: &str =
    "id, kind, edition, subscriber_id, recipient, body_id, message, vars, attempts, created_at";

/// Claims up to `limit` due rows for `owner` until `lease_until`: queued rows
/// whose `next_attempt_at` has come, and, with `release_expired`, `sending`
/// rows whose lease expired (their owner stopped renewing it), which first
/// go back to the queue. `edition` restricts the claim to one edition
/// (`Some("")` means transactional mail). Rows of a paused edition
/// (`edition_pauses`) are never claimed.
///
/// PostgreSQL: several daemons claim concurrently, so the candidate rows are
/// locked with `FOR UPDATE SKIP LOCKED` and no two claims return the same row.
/// SQLite has one writer, so the single `UPDATE … RETURNING` is the claim;
/// it, its counters ([`batch_counts`]) and the commit go in one call to the
/// database: the claim holds the one writer, and a wave's result commit
/// waits for it.
#[allow(clippy::too_many_arguments)]
pub async fn claim(
    conn: &mut AnyConnection,
    backend: Backend,
    owner: &str,
    limit: i64,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    edition: Option<&str>,
    release_expired: bool,
) -> Result<Vec<ClaimedRow>, StoreError> {
    let (filter, edition) = edition_filter(edition, 5);
    let lock = match backend {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    // Rows whose owner stopped renewing its lease go back to the queue first,
    // so the claim itself is one index range in (next_attempt_at, id) order.
    // (PostgreSQL: a row locked meanwhile is being recorded by its owner, so
    // it is skipped rather than waited for; see `renew_leases`.)
    let expired = |now: &str| {
        format!("UPDATE outbox SET state = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = {now} WHERE id IN (SELECT id FROM outbox WHERE state = 'sending' AND lease_until < {now}{lock})")
    };
    // The owner at $1, the lease's end at $2, the time at $3, the limit at $4.
    let due = format!(
        "SELECT id FROM outbox
         WHERE state = 'queued' AND next_attempt_at <= $3{filter}
           AND (edition IS NULL OR edition NOT IN (SELECT edition FROM edition_pauses))
         ORDER BY next_attempt_at, id LIMIT $4{lock}"
    );
    let claim = format!(
        "UPDATE outbox SET state = 'sending', lease_owner = $1, lease_until = $2, updated_at = $3
         WHERE id IN ({due}) RETURNING {CLAIM_COLUMNS}"
    );
    let bound = |sql| {
        let q = sqlx::query_as::<_, StoredRow>(sql)
            .bind(owner)
            .bind(to_millis(lease_until))
            .bind(to_millis(now))
            .bind(limit);
        match edition {
            Some(e) => q.bind(e),
            None => q,
        }
    };
    let stored = match backend {
        Backend::Postgres => {
            // Its triggers count per statement; each statement is atomic.
            if release_expired {
                sqlx::query(&expired("$1"))
                    .bind(to_millis(now))
                    .execute(&mut *conn)
                    .await?;
            }
            bound(&claim).fetch_all(&mut *conn).await?
        }
        Backend::Sqlite => {
            // The expired leases go back before the triggers are set
            // aside, so the triggers count them. The due ids are kept in
            // a table of the connection's own (`temp`), and the claim's
            // counts, the claim and the claimed rows all read them there.
            // IMMEDIATE: the transaction takes the one writer's lock first
            // (waiting for it as long as the busy timeout). Begun deferred,
            // it would read the due rows first and then ask to write, which
            // SQLite refuses at once ("database is locked") if another
            // connection wrote in between.
            // The rows come back as one JSON array in one row: sqlx hands
            // each row of a SQLite result over from its database thread
            // as a message of its own, and a claim returns dozens.
            let release = if release_expired {
                format!("{}; ", expired("$3"))
            } else {
                String::new()
            };
            const CLAIMED: &str = "id IN (SELECT id FROM temp.claimed)";
            let counts = batch_counts(CLAIMED, CLAIM_CHANGES);
            let sql = format!(
                "CREATE TEMP TABLE IF NOT EXISTS claimed (id INTEGER PRIMARY KEY);
                 BEGIN IMMEDIATE; {release}DELETE FROM temp.claimed; INSERT INTO temp.claimed (id) {due};
                 {SET_ASIDE}; {counts};
                 UPDATE outbox SET state = 'sending', lease_owner = $1, lease_until = $2, updated_at = $3 WHERE {CLAIMED};
                 {PUT_BACK};
                 {};
                 COMMIT",
                as_one_json_row(&format!("SELECT {CLAIM_COLUMNS} FROM outbox WHERE {CLAIMED}"), CLAIM_COLUMNS)
            );
            let q = sqlx::query(&sql)
                .bind(owner)
                .bind(to_millis(lease_until))
                .bind(to_millis(now))
                .bind(limit);
            let q = match edition {
                Some(e) => q.bind(e),
                None => q,
            };
            // All of the call's rows (only the last statement has one), so
            // that it runs to its COMMIT.
            let json: Result<String, StoreError> = async {
                let rows = q.fetch_all(&mut *conn).await?;
                let row = rows.first().ok_or(sqlx::Error::RowNotFound)?;
                Ok(sqlx::Row::try_get(row, 0)?)
            }
            .await;
            let stored = json.and_then(|json| json_rows::<StoredRow>(&json));
            match stored {
                Ok(stored) => stored,
                Err(e) => return Err(rollback(conn, e).await),
            }
        }
    };
    let mut rows = Vec::with_capacity(stored.len());
    let mut unsendable = Vec::new();
    for row in stored {
        match triage(row) {
            Ok(r) => rows.push(r),
            Err(dead) => unsendable.push(dead),
        }
    }
    // Rare (a row of an older version or a hand edit), so written after the
    // claim committed, and counted by the triggers. Should this fail, the
    // rows stay claimed and come back when the worker stops or the lease
    // ends, to be tried again.
    mark_unsendable(conn, &unsendable, owner, now).await?;
    rows.sort_by_key(|r| r.id);
    Ok(rows)
}

/// Ends claimed rows that can never be sent (see [`triage`]) dead.
async fn mark_unsendable(
    conn: &mut AnyConnection,
    unsendable: &[(StoredRow, String)],
    owner: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    for (row, error) in unsendable {
        tracing::error!(id = row.id, %error, "outbox row cannot be sent; it is dead");
        sqlx::query("UPDATE outbox SET state = 'dead', last_error = $1, updated_at = $2, lease_owner = NULL, lease_until = NULL WHERE id = $3 AND lease_owner = $4")
            .bind(error)
            .bind(to_millis(now))
            .bind(row.id)
            .bind(owner)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// Extends the lease of every row `owner` is still sending.
///
/// PostgreSQL: rows locked by another statement are skipped. They are being
/// recorded (or taken over), so they are leaving `sending` anyway, and
/// waiting for them could deadlock: the result writer locks its rows in id
/// order and a renewal in the order it finds them. (It did deadlock, and
/// delivery stood still for the server's 1 s `deadlock_timeout`.)
pub async fn renew_leases(
    conn: &mut AnyConnection,
    owner: &str,
    lease_until: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let lock = match Backend::of(conn) {
        Backend::Postgres => " FOR UPDATE SKIP LOCKED",
        Backend::Sqlite => "",
    };
    let sql = format!("UPDATE outbox SET lease_until = $1 WHERE id IN (SELECT id FROM outbox WHERE state = 'sending' AND lease_owner = $2{lock})");
    let r = sqlx::query(&sql)
        .bind(to_millis(lease_until))
        .bind(owner)
        .execute(conn)
        .await?;
    Ok(r.rows_affected())
}

/// Returns every `sending` row of `owner` (or of any owner when None) to
/// `queued`, without counting an attempt: those messages were never handed
/// to the server.
pub async fn release_owner(db: &Db, owner: Option<&str>) -> Result<u64, StoreError> {
    let r = match owner {
        Some(o) => sqlx::query("UPDATE outbox SET state = 'queued', lease_owner = NULL, lease_until = NULL WHERE state = 'sending' AND lease_owner = $1")
            .bind(o)
            .execute(&db.pool)
            .await?,
        None => sqlx::query("UPDATE outbox SET state = 'queued', lease_owner = NULL, lease_until = NULL WHERE state = 'sending'")
            .execute(&db.pool)
            .await?,
    };
    Ok(r.rows_affected())
}

/// Owners of rows currently in `sending`.
pub async fn sending_owners(db: &Db) -> Result<Vec<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT DISTINCT lease_owner FROM outbox WHERE state = 'sending' AND lease_owner IS NOT NULL",
    )
    .fetch_all(&db.pool)
    .await?)
}

/// Why each recipient must not be sent to now, if anything stops it: a
/// suppression of the address, or (for mail to a subscriber) the subscriber
/// unsubscribed or was deleted. Answers in the order asked, in one round trip
/// for the whole group: the delivery worker asks this right before sending
/// (DESIGN.md invariant 7), for every message that is about to start.
pub async fn blocked_reasons(
    conn: &mut AnyConnection,
    recipients: &[(&EmailAddress, Option<i64>)],
) -> Result<Vec<Option<String>>, StoreError> {
    if recipients.is_empty() {
        return Ok(Vec::new());
    }
    // Addresses are normalized (lower case) wherever they are written, so
    // one exact match per address finds its suppression.
    let backend = Backend::of(conn);
    let ids: Vec<i64> = recipients.iter().filter_map(|(_, id)| *id).collect();
    let emails: Vec<&str> = recipients.iter().map(|(e, _)| e.as_str()).collect();
    let (emails, ids) = (List::Texts(&emails), List::Ids(&ids));
    // PostgreSQL: written as index conditions (an array, and a join on
    // the key), so that the plan its session keeps for this statement (see
    // `delivery::lane`) looks each key up whatever the tables' statistics
    // said when it was made.
    // Only the blocked come back (usually none): a subscriber who
    // unsubscribed, or one who is gone (no row, so a NULL status).
    let (in_emails, asked_ids) = match backend {
        Backend::Postgres => (
            "email = ANY(CAST($1 AS TEXT[]))".to_owned(),
            "unnest(CAST($2 AS BIGINT[])) AS asked (value)",
        ),
        Backend::Sqlite => (
            emails.predicate(backend, "email", "$1"),
            "json_each($2) AS asked",
        ),
    };
    let sql = format!(
        "SELECT 's', email, reason FROM suppressions WHERE {in_emails}
         UNION ALL SELECT 'u', CAST(asked.value AS TEXT), s.status
         FROM {asked_ids} LEFT JOIN subscribers s ON s.id = asked.value
         WHERE s.id IS NULL OR s.status = 'unsubscribed'"
    );
    let q = sqlx::query_as::<_, (String, String, Option<String>)>(&sql)
        .bind(emails.value(backend))
        .bind(ids.value(backend));
    let mut suppressed: HashMap<String, String> = HashMap::new();
    let mut blocked: HashMap<i64, Option<String>> = HashMap::new();
    for (kind, key, value) in q.fetch_all(conn).await? {
        if kind == "s" {
            suppressed.insert(key, value.unwrap_or_default());
        } else if let Ok(id) = key.parse() {
            blocked.insert(id, value);
        }
    }
    Ok(recipients
        .iter()
        .map(|(recipient, id)| {
            if let Some(reason) = suppressed.get(recipient.as_str()) {
                return Some(format!("address is suppressed: {reason}"));
            }
            match id.and_then(|id| blocked.get(&id)) {
                Some(None) => Some("subscriber was deleted".into()),
                Some(Some(_)) => Some("subscriber unsubscribed".into()),
                None => None,
            }
        })
        .collect())
}

/// A shared digest body.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Body {
    pub subject: String,
    pub html: String,
    pub text: String,
}

pub async fn body(db: &Db, id: i64) -> Result<Option<Body>, StoreError> {
    Ok(
        sqlx::query_as("SELECT subject, html, text FROM outbox_bodies WHERE id = $1")
            .bind(id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// How one claimed row ended this attempt.
#[derive(Debug, Clone)]
pub enum Outcome {
    Sent {
        id: i64,
    },
    /// Back to `queued` until `next_attempt_at`, one more attempt counted.
    Retry {
        id: i64,
        next_attempt_at: DateTime<Utc>,
        error: String,
    },
    /// Never to be sent; `suppress` also records the address in `suppressions`.
    Suppressed {
        id: i64,
        reason: String,
        suppress: Option<EmailAddress>,
    },
    /// Attempts exhausted, or a message that cannot be built.
    Dead {
        id: i64,
        error: String,
    },
    /// Claimed but not started (shutdown): back to `queued`, no attempt counted.
    Released {
        id: i64,
    },
    /// The relay failed (or delivery is paused for it): back to `queued`
    /// untouched, due as before, no attempt counted (DESIGN.md invariant 9).
    Deferred {
        id: i64,
    },
    /// Not delivered within its edition's `expire_after`: final, no attempt counted.
    Expired {
        id: i64,
        error: String,
    },
}

/// Writes many outcomes in one transaction. Only rows still leased by
/// `owner` change, so a worker whose lease was taken over cannot overwrite
/// the new owner's result. The lease owner alone is the guard: it is set
/// exactly while a row is `sending`, since every change out of `sending`
/// clears it. (Adding `state = 'sending'` to the bulk statements let
/// PostgreSQL's planner start from the state instead of the ids, and read
/// every entry that rows passing through `sending` had left in an index.)
pub async fn record_outcomes(
    conn: &mut AnyConnection,
    owner: &str,
    outcomes: &[Outcome],
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let now = to_millis(now);
    // In id order, so that two statements locking the same rows lock them
    // in the same order.
    let mut sent: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Sent { id } => Some(*id),
            _ => None,
        })
        .collect();
    sent.sort_unstable();
    let released: Vec<i64> = outcomes
        .iter()
        .filter_map(|o| match o {
            Outcome::Released { id } | Outcome::Deferred { id } => Some(*id),
            _ => None,
        })
        .collect();
    // The common case, only successes. PostgreSQL: one statement is atomic
    // on its own, and skipping BEGIN/COMMIT saves two round trips per batch.
    // SQLite: the statement, its counters and the commit in one call.
    let backend = Backend::of(conn);
    if sent.len() == outcomes.len() {
        return match backend {
            Backend::Postgres => mark_sent(conn, backend, owner, &sent, now).await,
            Backend::Sqlite => mark_only_sent(conn, owner, &sent, now).await,
        };
    }
    let mut tx = conn.begin().await?;
    if !sent.is_empty() {
        mark_sent(&mut *tx, backend, owner, &sent, now).await?;
    }
    if !released.is_empty() {
        let sql = format!(
            "UPDATE outbox SET state = 'queued', lease_owner = NULL, lease_until = NULL, updated_at = $1
             WHERE lease_owner = $2 AND {}",
            List::Ids(&released).predicate(backend, "id", "$3")
        );
        sqlx::query(&sql)
            .bind(now)
            .bind(owner)
            .bind(List::Ids(&released).value(backend))
            .execute(&mut *tx)
            .await?;
    }
    for o in outcomes {
        match o {
            Outcome::Sent { .. } | Outcome::Released { .. } | Outcome::Deferred { .. } => {}
            Outcome::Retry {
                id,
                next_attempt_at,
                error,
            } => {
                sqlx::query("UPDATE outbox SET state = 'queued', attempts = attempts + 1, next_attempt_at = $1, last_error = $2, updated_at = $3, lease_owner = NULL, lease_until = NULL WHERE id = $4 AND lease_owner = $5")
                    .bind(to_millis(*next_attempt_at))
                    .bind(error)
                    .bind(now)
                    .bind(*id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
            }
            Outcome::Suppressed {
                id,
                reason,
                suppress,
            } => {
                // A suppression found at check time is not an attempt; a 5xx reply is.
                let counted = i64::from(suppress.is_some());
                sqlx::query("UPDATE outbox SET state = 'suppressed', attempts = attempts + $1, last_error = $2, updated_at = $3, lease_owner = NULL, lease_until = NULL WHERE id = $4 AND lease_owner = $5")
                    .bind(counted)
                    .bind(reason)
                    .bind(now)
                    .bind(*id)
                    .bind(owner)
                    .execute(&mut *tx)
                    .await?;
                if let Some(email) = suppress.as_ref().map(EmailAddress::as_str) {
                    sqlx::query("INSERT INTO suppressions (email, reason, created_at) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING")
                        .bind(email)
                        .bind(reason)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                    // A hard bounce during the transaction counts in the
                    // bounce rate like one reported later.
                    sqlx::query("INSERT INTO bounce_events (event_key, email, kind, status, diagnostic, source, outbox_id, edition, created_at) \
                                 SELECT $1, $2, 'hard', $3, $4, 'smtp', id, edition, $5 FROM outbox WHERE id = $6 ON CONFLICT (event_key) DO NOTHING")
                        .bind(format!("smtp:{id}"))
                        .bind(email)
                        .bind(crate::bounces::dsn::status_code(reason))
                        .bind(reason)
                        .bind(now)
                        .bind(*id)
                        .execute(&mut *tx)
                        .await?;
                }
            }
            Outcome::Expired { id, error } => {
                finish(&mut tx, State::Expired, 0, *id, error, owner, now).await?;
            }
            Outcome::Dead { id, error } => {
                finish(&mut tx, State::Dead, 1, *id, error, owner, now).await?;
            }
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Ends one row in `state` with its error; `counted` is added to its attempts.
async fn finish(
    conn: &mut AnyConnection,
    state: State,
    counted: i64,
    id: i64,
    error: &str,
    owner: &str,
    now: i64,
) -> Result<(), StoreError> {
    debug_assert!(state.is_final());
    sqlx::query("UPDATE outbox SET state = $1, attempts = attempts + $2, last_error = $3, updated_at = $4, lease_owner = NULL, lease_until = NULL WHERE id = $5 AND lease_owner = $6")
        .bind(state.as_str())
        .bind(counted)
        .bind(error)
        .bind(now)
        .bind(id)
        .bind(owner)
        .execute(conn)
        .await?;
    Ok(())
}

/// Marks `ids` sent, in the caller's transaction. On SQLite the counters
/// of the whole batch are written in the same call ([`batch_counts`]).
async fn mark_sent(
    conn: &mut AnyConnection,
    backend: Backend,
    owner: &str,
    ids: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    let sql = match backend {
        // Its triggers count per statement already.
        Backend::Postgres => mark_sent_sql(backend, ids),
        Backend::Sqlite => format!(
            "{SET_ASIDE}; {}; {}; {PUT_BACK}",
            batch_counts(SENT_ROWS, SENT_CHANGES),
            mark_sent_sql(backend, ids)
        ),
    };
    sqlx::query(&sql)
        .bind(now)
        .bind(owner)
        .bind(List::Ids(ids).value(backend))
        .execute(conn)
        .await?;
    Ok(())
}

/// [`mark_sent`] on SQLite as a transaction of its own, in one call: the
/// batch of a result writer that has nothing but successes to record. Its
/// commit is what the next wave's content waits for (the gate of invariant
/// 6), and each call is a trip to sqlx's SQLite thread and back.
async fn mark_only_sent(
    conn: &mut AnyConnection,
    owner: &str,
    ids: &[i64],
    now: i64,
) -> Result<(), StoreError> {
    let sql = format!(
        "BEGIN; {SET_ASIDE}; {}; {}; {PUT_BACK}; COMMIT",
        batch_counts(SENT_ROWS, SENT_CHANGES),
        mark_sent_sql(Backend::Sqlite, ids)
    );
    let done = sqlx::query(&sql)
        .bind(now)
        .bind(owner)
        .bind(List::Ids(ids).value(Backend::Sqlite))
        .execute(&mut *conn)
        .await;
    match done {
        Ok(_) => Ok(()),
        Err(e) => Err(rollback(conn, e.into()).await),
    }
}

/// The statement that marks a batch sent; binds the time at $1, the owner
/// at $2, the ids at $3.
fn mark_sent_sql(backend: Backend, ids: &[i64]) -> String {
    format!(
        "UPDATE outbox SET state = 'sent', sent_at = $1, updated_at = $1, attempts = attempts + 1, lease_owner = NULL, lease_until = NULL, last_error = NULL
         WHERE lease_owner = $2 AND {}",
        List::Ids(ids).predicate(backend, "id", "$3")
    )
}

/// SQLite: the counter changes of a bulk move of the outbox `rows` (a
/// condition on the table), written just before the statement that moves
/// them, with the counting triggers set aside and from the same rows (the
/// transaction already holds the one writer, so nothing changes them in
/// between). `changes` selects `(kind, key, n)` from `moved`, which has
/// each row's `attempts` and `run`: the run it counts in, its dedupe key
/// without the subscriber id, or NULL (migration 0060's rule for one row,
/// applied to the batch; `tests/tallies.rs` checks the counts against the
/// table).
fn batch_counts(rows: &str, changes: &str) -> String {
    format!(
        "WITH moved AS (
             SELECT attempts,
                    CASE WHEN kind = 'digest' AND subscriber_id IS NOT NULL
                              AND substr(dedupe_key, -length(subscriber_id) - 1) = ':' || subscriber_id
                         THEN substr(dedupe_key, 1, length(dedupe_key) - length(subscriber_id)) END AS run
             FROM outbox WHERE {rows}
         ), changes (kind, key, n) AS ({changes})
         INSERT INTO tallies (kind, key, n)
             SELECT kind, key, SUM(n) FROM changes WHERE true GROUP BY kind, key HAVING SUM(n) <> 0
         ON CONFLICT (kind, key) DO UPDATE SET n = tallies.n + excluded.n"
    )
}

/// A claim: from `queued` to `sending`, attempts unchanged.
const CLAIM_CHANGES: &str = "SELECT 'outbox', 'queued', -1 FROM moved
     UNION ALL SELECT 'outbox', 'sending', 1 FROM moved
     UNION ALL SELECT 'run', run || 'queued', -1 FROM moved WHERE run IS NOT NULL
     UNION ALL SELECT 'run', run || 'sending', 1 FROM moved WHERE run IS NOT NULL";

/// Marking sent ([`mark_sent_sql`]): from `sending` to `sent`, into the
/// hour of `sent_at` ($1), one attempt more, so a row at its second
/// attempt becomes `+retried`.
const SENT_CHANGES: &str = "SELECT 'outbox', 'sending', -1 FROM moved
     UNION ALL SELECT 'outbox', 'sent', 1 FROM moved
     UNION ALL SELECT 'sent_hour', printf('%010d', $1 / 3600000), 1 FROM moved
     UNION ALL SELECT 'run', run || 'sending', -1 FROM moved WHERE run IS NOT NULL
     UNION ALL SELECT 'run', run || 'sent', 1 FROM moved WHERE run IS NOT NULL
     UNION ALL SELECT 'run', run || '+retried', 1 FROM moved WHERE run IS NOT NULL AND attempts = 1";

/// The rows [`mark_sent_sql`] moves, for [`batch_counts`].
const SENT_ROWS: &str = "lease_owner = $2 AND id IN (SELECT value FROM json_each($3))";

/// Rows per state, for `casewire status` and the console (kept by triggers:
/// see [`super::tallies`]).
pub async fn depth_by_state(db: &Db) -> Result<Vec<(State, i64)>, StoreError> {
    let rows = super::tallies::read(db, super::tallies::Tally::Outbox).await?;
    Ok(typed_states(rows))
}

/// Counts per state column value, typed; a value no version writes is
/// logged and left out.
fn typed_states(rows: Vec<(String, i64)>) -> Vec<(State, i64)> {
    rows.into_iter()
        .filter_map(|(state, n)| match State::parse(&state) {
            Some(s) => Some((s, n)),
            None => {
                tracing::warn!(state, rows = n, "outbox rows in an unknown state");
                None
            }
        })
        .collect()
}

/// The condition that keeps rows of `edition` (`None`: every row; `Some("")`:
/// transactional mail), written with `$n` as its parameter, and the value
/// to bind there, if any.
fn edition_filter(edition: Option<&str>, n: usize) -> (String, Option<&str>) {
    match edition {
        None => (String::new(), None),
        Some("") => (" AND edition IS NULL".into(), None),
        Some(e) => (format!(" AND edition = ${n}"), Some(e)),
    }
}

/// Rows per state of one edition (`""`: transactional mail).
pub async fn edition_counts(db: &Db, edition: &str) -> Result<Vec<(State, i64)>, StoreError> {
    let (filter, edition) = edition_filter(Some(edition), 1);
    let sql = format!(
        "SELECT state, COUNT(*) FROM outbox WHERE TRUE{filter} GROUP BY state ORDER BY state"
    );
    let mut q = sqlx::query_as(&sql);
    if let Some(e) = edition {
        q = q.bind(e);
    }
    Ok(typed_states(q.fetch_all(&db.pool).await?))
}

/// Rows still to send now or later (queued or sending), optionally of one
/// edition. Counted per state, so that each count reads the partial index of
/// its state (migration 0080).
pub async fn pending_count(db: &Db, edition: Option<&str>) -> Result<i64, StoreError> {
    let (filter, edition) = edition_filter(edition, 1);
    let sql = format!(
        "SELECT (SELECT COUNT(*) FROM outbox WHERE state = 'queued'{filter})
              + (SELECT COUNT(*) FROM outbox WHERE state = 'sending'{filter})"
    );
    let mut q = sqlx::query_scalar(&sql);
    if let Some(e) = edition {
        q = q.bind(e);
    }
    Ok(q.fetch_one(&db.pool).await?)
}

/// A dead row or a row waiting for a retry, with its last error.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Failure {
    pub id: i64,
    pub recipient: String,
    pub edition: Option<String>,
    #[sqlx(try_from = "String")]
    pub state: State,
    pub attempts: i64,
    pub last_error: String,
    pub updated_at: i64,
}

/// The most recent failures, newest first (read from the partial index
/// `outbox_failures`, migration 0090, whose condition this one repeats).
pub async fn recent_failures(db: &Db, limit: i64) -> Result<Vec<Failure>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, recipient, edition, state, attempts, last_error, updated_at FROM outbox
         WHERE last_error IS NOT NULL AND state IN ('dead', 'queued', 'suppressed', 'expired')
         ORDER BY updated_at DESC, id DESC LIMIT $1",
    )
    .bind(limit)
    .fetch_all(&db.pool)
    .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_states_read_back_what_they_write() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        for s in State::ALL {
            assert_eq!(State::parse(s.as_str()), Some(s));
            assert_eq!(State::try_from(s.as_str().to_owned()).unwrap(), s);
        }
        assert_eq!(Kind::parse("Digest"), None);
        assert!(State::try_from("delivered".to_owned()).is_err());
        let finals: Vec<State> = State::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            finals,
            [State::Sent, State::Suppressed, State::Dead, State::Expired]
        );
        assert_eq!(format!("[{:<6}]", State::Dead), "[dead  ]");
    }

    fn stored(kind: &str, recipient: &str) -> StoredRow {
        StoredRow {
            id: 7,
            kind: kind.into(),
            edition: None,
            subscriber_id: Some(1),
            recipient: recipient.into(),
            body_id: None,
            message: None,
            vars: "{}".into(),
            attempts: 0,
            created_at: 0,
        }
    }

    #[test]
    fn a_row_that_can_never_be_sent_is_named_not_claimed() {
        let row = triage(stored("welcome", "Ada@Example.org")).unwrap();
        assert_eq!(row.kind, Kind::Welcome);
        assert_eq!(row.recipient.as_str(), "ada@example.org");
        let (row, why) = triage(stored("fax", "ada@example.org")).unwrap_err();
        assert_eq!(row.id, 7);
        assert!(why.contains("\"fax\""), "{why}");
        let (_, why) = triage(stored("digest", "ada@@example.org")).unwrap_err();
        assert!(why.starts_with("recipient:"), "{why}");
    }
}
