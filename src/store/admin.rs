//! The operator console's tables: operator accounts, sessions (stored as
//! token hashes), the audit log, and the read-only queries the console's
//! pages make (subscriber search with keyset pagination, counts for the
//! overview, a subscriber's digests, edition run history).

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{from_millis, to_millis, Db, StoreError};
use crate::store::subscribers::{Status, Subscriber};

/// An operator account (never with its hash, except from [`user_for_login`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Operator {
    pub id: i64,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub password_set_at: DateTime<Utc>,
}

/// Adds an operator; false when the name is taken.
/// `one_time`: the password was generated and must be replaced at the
/// first login.
pub async fn add_user(
    db: &Db,
    name: &str,
    password_hash: &str,
    one_time: bool,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let _turn = db.write_turn().await;
    let done = sqlx::query(
        "INSERT INTO admin_users (name, password_hash, created_at, password_set_at, must_change) VALUES ($1, $2, $3, $3, $4) ON CONFLICT (name) DO NOTHING",
    )
    .bind(name)
    .bind(password_hash)
    .bind(to_millis(now))
    .bind(i64::from(one_time))
    .execute(&db.pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes an operator and their sessions; false when there was none.
pub async fn remove_user(db: &Db, name: &str) -> Result<bool, StoreError> {
    let _turn = db.write_turn().await;
    let mut tx = db.pool.begin().await?;
    sqlx::query(
        "DELETE FROM admin_sessions WHERE user_id IN (SELECT id FROM admin_users WHERE name = $1)",
    )
    .bind(name)
    .execute(&mut *tx)
    .await?;
    let n = sqlx::query("DELETE FROM admin_users WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    Ok(n == 1)
}

/// Replaces an operator's password hash and ends all their sessions except
/// `keep` (the session that changed it); false when there is no such
/// operator. `one_time`: see [`add_user`].
pub async fn set_password(
    db: &Db,
    name: &str,
    password_hash: &str,
    one_time: bool,
    keep: Option<&str>,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let _turn = db.write_turn().await;
    let mut tx = db.pool.begin().await?;
    let n = sqlx::query(
        "UPDATE admin_users SET password_hash = $1, password_set_at = $2, must_change = $3 WHERE name = $4",
    )
    .bind(password_hash)
    .bind(to_millis(now))
    .bind(i64::from(one_time))
    .bind(name)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query(
        "DELETE FROM admin_sessions WHERE user_id IN (SELECT id FROM admin_users WHERE name = $1) AND token_hash <> $2",
    )
    .bind(name)
    .bind(keep.unwrap_or(""))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(n == 1)
}

/// The id and password hash of `name`, for checking a login.
pub async fn user_for_login(db: &Db, name: &str) -> Result<Option<(i64, String)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT id, password_hash FROM admin_users WHERE name = $1")
            .bind(name)
            .fetch_optional(&db.pool)
            .await?,
    )
}

pub async fn list_users(db: &Db) -> Result<Vec<Operator>, StoreError> {
    let rows: Vec<(i64, String, i64, i64)> = sqlx::query_as(
        "SELECT id, name, created_at, password_set_at FROM admin_users ORDER BY name",
    )
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(id, name, c, p)| Operator {
            id,
            name,
            created_at: from_millis(c),
            password_set_at: from_millis(p),
        })
        .collect())
}

pub async fn user_count(db: &Db) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM admin_users")
        .fetch_one(&db.pool)
        .await?)
}

/// A live session as the console sees it.
#[derive(Debug, Clone)]
pub struct Session {
    pub user_id: i64,
    pub name: String,
    /// The operator still has a one-time password to replace.
    pub must_change: bool,
    pub created_at: DateTime<Utc>,
    pub last_seen_at: DateTime<Utc>,
}

pub async fn create_session(
    db: &Db,
    token_hash: &str,
    user_id: i64,
    ip: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let _turn = db.write_turn().await;
    sqlx::query("INSERT INTO admin_sessions (token_hash, user_id, created_at, last_seen_at, ip) VALUES ($1, $2, $3, $3, $4)")
        .bind(token_hash)
        .bind(user_id)
        .bind(to_millis(now))
        .bind(ip)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// The session stored under `token_hash`, whatever its age (the caller
/// decides about expiry).
pub async fn session(db: &Db, token_hash: &str) -> Result<Option<Session>, StoreError> {
    let row: Option<(i64, String, i64, i64, i64)> = sqlx::query_as(
        "SELECT s.user_id, u.name, s.created_at, s.last_seen_at, u.must_change FROM admin_sessions s JOIN admin_users u ON u.id = s.user_id WHERE s.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(|(user_id, name, c, l, m)| Session {
        user_id,
        name,
        must_change: m != 0,
        created_at: from_millis(c),
        last_seen_at: from_millis(l),
    }))
}

/// Moves a session's idle clock.
pub async fn touch_session(
    db: &Db,
    token_hash: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let _turn = db.write_turn().await;
    sqlx::query("UPDATE admin_sessions SET last_seen_at = $1 WHERE token_hash = $2")
        .bind(to_millis(now))
        .bind(token_hash)
        .execute(&db.pool)
        .await?;
    Ok(())
}

pub async fn delete_session(db: &Db, token_hash: &str) -> Result<bool, StoreError> {
    let _turn = db.write_turn().await;
    Ok(
        sqlx::query("DELETE FROM admin_sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&db.pool)
            .await?
            .rows_affected()
            == 1,
    )
}

/// Deletes sessions idle since before `idle_before` or started before
/// `started_before`.
pub async fn prune_sessions(
    db: &Db,
    idle_before: DateTime<Utc>,
    started_before: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let _turn = db.write_turn().await;
    Ok(
        sqlx::query("DELETE FROM admin_sessions WHERE last_seen_at < $1 OR created_at < $2")
            .bind(to_millis(idle_before))
            .bind(to_millis(started_before))
            .execute(&db.pool)
            .await?
            .rows_affected(),
    )
}

/// One line of the audit log.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
    pub ip: String,
}

/// What one action writes to the audit log.
#[derive(Debug, Clone, Copy)]
pub struct NewAudit<'a> {
    pub actor: &'a str,
    pub action: &'a str,
    pub target: &'a str,
    pub detail: &'a str,
    pub ip: &'a str,
}

pub async fn audit(db: &Db, entry: NewAudit<'_>, now: DateTime<Utc>) -> Result<(), StoreError> {
    let _turn = db.write_turn().await;
    sqlx::query(
        "INSERT INTO admin_audit (at, actor, action, target, detail, ip) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(to_millis(now))
    .bind(entry.actor)
    .bind(entry.action)
    .bind(entry.target)
    .bind(entry.detail)
    .bind(entry.ip)
    .execute(&db.pool)
    .await?;
    Ok(())
}

/// Audit entries older than `before_id` (None: the newest), newest first,
/// optionally of one target or whose action starts with `action`.
pub async fn audit_page(
    db: &Db,
    before_id: Option<i64>,
    target: Option<&str>,
    action: Option<&str>,
    limit: i64,
) -> Result<Vec<AuditEntry>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, actor, action, target, detail, ip FROM admin_audit
         WHERE id < $1 AND ($2 = '' OR target = $2) AND ($3 = '' OR action = $3)
         ORDER BY id DESC LIMIT $4",
    )
    .bind(before_id.unwrap_or(i64::MAX))
    .bind(target.unwrap_or(""))
    .bind(action.unwrap_or(""))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEntry {
                id: r.try_get(0)?,
                at: from_millis(r.try_get(1)?),
                actor: r.try_get(2)?,
                action: r.try_get(3)?,
                target: r.try_get(4)?,
                detail: r.try_get(5)?,
                ip: r.try_get(6)?,
            })
        })
        .collect()
}

/// The filters of the subscriber list.
#[derive(Debug, Clone, Default)]
pub struct SubscriberFilter {
    /// Text the address or the name contains (case-insensitive).
    pub search: Option<String>,
    pub status: Option<Status>,
    /// Subscribers who follow this category (or every category).
    pub category: Option<String>,
    pub edition: Option<String>,
}

/// One page of subscribers with an id above `after` (keyset pagination: no
/// OFFSET, so page 10,000 costs what page 1 does), in id order, and whether
/// more follow.
pub async fn subscriber_page(
    db: &Db,
    filter: &SubscriberFilter,
    after: i64,
    limit: i64,
) -> Result<(Vec<Subscriber>, bool), StoreError> {
    let pattern = filter
        .search
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| {
            let escaped = s
                .to_lowercase()
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("%{escaped}%")
        })
        .unwrap_or_default();
    let sql = "SELECT id FROM subscribers s
         WHERE s.id > $1
           AND ($2 = '' OR LOWER(s.email) LIKE $2 ESCAPE '\\' OR LOWER(s.name) LIKE $2 ESCAPE '\\')
           AND ($3 = '' OR s.status = $3)
           AND ($4 = '' OR EXISTS (SELECT 1 FROM subscriber_categories c WHERE c.subscriber_id = s.id AND c.category = $4)
                OR NOT EXISTS (SELECT 1 FROM subscriber_categories c WHERE c.subscriber_id = s.id))
           AND ($5 = '' OR EXISTS (SELECT 1 FROM subscriber_editions e WHERE e.subscriber_id = s.id AND e.edition = $5))
         ORDER BY s.id LIMIT $6";
    let ids: Vec<i64> = sqlx::query_scalar(sql)
        .bind(after)
        .bind(&pattern)
        .bind(filter.status.map(Status::as_str).unwrap_or(""))
        .bind(filter.category.as_deref().unwrap_or(""))
        .bind(filter.edition.as_deref().unwrap_or(""))
        .bind(limit + 1)
        .fetch_all(&db.pool)
        .await?;
    let more = ids.len() as i64 > limit;
    let mut conn = db.pool.acquire().await?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids.into_iter().take(limit as usize) {
        if let Some(s) = super::subscribers::find_by_id(&mut conn, id).await? {
            out.push(s);
        }
    }
    Ok((out, more))
}

/// Subscribers per status (kept by triggers: see [`super::tallies`]).
pub async fn subscriber_counts(db: &Db) -> Result<Vec<(String, i64)>, StoreError> {
    super::tallies::read(db, super::tallies::Tally::Subscribers).await
}

/// A message sent (or meant) for one subscriber.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SentMessage {
    pub id: i64,
    pub kind: String,
    pub edition: Option<String>,
    pub state: String,
    pub attempts: i64,
    pub created_at: DateTime<Utc>,
    pub sent_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
}

/// The newest `limit` outbox rows of a subscriber (the `(subscriber_id, id)` index).
pub async fn messages_of(
    db: &Db,
    subscriber_id: i64,
    limit: i64,
) -> Result<Vec<SentMessage>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, kind, edition, state, attempts, created_at, sent_at, last_error FROM outbox
         WHERE subscriber_id = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(subscriber_id)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(SentMessage {
                id: r.try_get(0)?,
                kind: r.try_get(1)?,
                edition: r.try_get(2)?,
                state: r.try_get(3)?,
                attempts: r.try_get(4)?,
                created_at: from_millis(r.try_get(5)?),
                sent_at: r.try_get::<Option<i64>, _>(6)?.map(from_millis),
                last_error: r.try_get(7)?,
            })
        })
        .collect()
}

/// One edition run, for the history table.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Run {
    pub window: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub enqueued: i64,
}

/// The newest `limit` runs of `edition`.
pub async fn runs(db: &Db, edition: &str, limit: i64) -> Result<Vec<Run>, StoreError> {
    let rows: Vec<(String, i64, Option<i64>, i64)> = sqlx::query_as(
        "SELECT window_key, started_at, finished_at, enqueued FROM edition_runs WHERE edition = $1 ORDER BY started_at DESC LIMIT $2",
    )
    .bind(edition)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(window, s, f, n)| Run {
            window,
            started_at: from_millis(s),
            finished_at: f.map(from_millis),
            enqueued: n,
        })
        .collect())
}

/// What happened to the digests of one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RunCounts {
    pub queued: i64,
    pub sending: i64,
    pub sent: i64,
    /// Rows that needed more than one attempt (whatever their end).
    pub retried: i64,
    pub suppressed: i64,
    pub dead: i64,
    pub expired: i64,
}

impl RunCounts {
    /// No row of the run can change any more.
    pub fn is_final(&self) -> bool {
        self.queued == 0 && self.sending == 0
    }
}

/// Counts the digests of run `window` of `edition` by state (kept by
/// triggers, see [`super::tallies::run_states`]).
pub async fn run_counts(db: &Db, edition: &str, window: &str) -> Result<RunCounts, StoreError> {
    let prefix = format!("digest:{edition}:{window}:");
    let mut c = RunCounts::default();
    for (state, n) in super::tallies::run_states(db, &prefix).await? {
        match state.as_str() {
            "+retried" => c.retried = n,
            "queued" => c.queued = n,
            "sending" => c.sending = n,
            "sent" => c.sent = n,
            "suppressed" => c.suppressed = n,
            "dead" => c.dead = n,
            "expired" => c.expired = n,
            _ => {}
        }
    }
    Ok(c)
}

/// Finished runs of every edition as (edition, high_water, enqueued),
/// oldest first, and every publication event as (id, slug): together they
/// say which editions announced which case study (a run covers the events
/// above the previous run's high-water mark).
pub async fn announcement_facts(
    db: &Db,
) -> Result<(Vec<(String, i64, i64)>, Vec<(i64, String)>), StoreError> {
    let runs = sqlx::query_as(
        "SELECT edition, high_water, enqueued FROM edition_runs WHERE finished_at IS NOT NULL ORDER BY edition, high_water, started_at",
    )
    .fetch_all(&db.pool)
    .await?;
    let events = sqlx::query_as("SELECT id, slug FROM publication_events ORDER BY id")
        .fetch_all(&db.pool)
        .await?;
    Ok((runs, events))
}

/// The suppression of one address: (reason, since).
pub async fn suppression_of(
    db: &Db,
    email: &str,
) -> Result<Option<(String, DateTime<Utc>)>, StoreError> {
    let row: Option<(String, i64)> =
        sqlx::query_as("SELECT reason, created_at FROM suppressions WHERE email = $1")
            .bind(email)
            .fetch_optional(&db.pool)
            .await?;
    Ok(row.map(|(r, t)| (r, from_millis(t))))
}

/// Suppressions page: address above `after` (keyset by address), optionally
/// containing `search` and whose reason contains `reason`.
pub async fn suppression_page(
    db: &Db,
    search: Option<&str>,
    reason: Option<&str>,
    after: &str,
    limit: i64,
) -> Result<(Vec<(String, String, DateTime<Utc>)>, bool), StoreError> {
    let esc = |s: &str| {
        s.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    };
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT email, reason, created_at FROM suppressions
         WHERE email > $1 AND ($2 = '' OR email LIKE $2 ESCAPE '\\') AND ($3 = '' OR LOWER(reason) LIKE $3 ESCAPE '\\')
         ORDER BY email LIMIT $4",
    )
    .bind(after)
    .bind(search.filter(|s| !s.is_empty()).map(|s| format!("%{}%", esc(s))).unwrap_or_default())
    .bind(reason.filter(|s| !s.is_empty()).map(|s| format!("%{}%", esc(s))).unwrap_or_default())
    .bind(limit + 1)
    .fetch_all(&db.pool)
    .await?;
    let more = rows.len() as i64 > limit;
    Ok((
        rows.into_iter()
            .take(limit as usize)
            .map(|(e, r, t)| (e, r, from_millis(t)))
            .collect(),
        more,
    ))
}

/// The newest `limit` bounce and complaint reports about `email`.
pub async fn bounces_of(
    db: &Db,
    email: &str,
    limit: i64,
) -> Result<Vec<super::bounces::StoredEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT email, kind, status, diagnostic, source, edition, created_at FROM bounce_events
         WHERE email = $1 ORDER BY created_at DESC, id DESC LIMIT $2",
    )
    .bind(email)
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(super::bounces::StoredEvent {
                email: r.try_get(0)?,
                kind: r.try_get(1)?,
                status: r.try_get(2)?,
                diagnostic: r.try_get(3)?,
                source: r.try_get(4)?,
                edition: r.try_get(5)?,
                at: from_millis(r.try_get(6)?),
            })
        })
        .collect()
}
