//! Subscribers, their categories and editions, link tokens and suppressions.
//! Every function that changes state takes a connection (usually a
//! transaction), so the caller decides what commits together — e.g. a
//! subscriber row and the confirmation message queued for it.

use std::collections::HashMap;

use chrono::{DateTime, Duration, Utc};
use sqlx::AnyConnection;

use super::{from_millis, to_millis, Backend, Db, StoreError};
use crate::domain::Token;
use crate::subscribers::links::LinkKey;

/// Begins a transaction that will write. On SQLite it takes the write lock
/// up front (`BEGIN IMMEDIATE`): a deferred transaction that reads and then
/// writes fails with "database is locked" when another writer got there
/// first, instead of waiting for it.
pub async fn begin_write(db: &Db) -> Result<sqlx::Transaction<'static, sqlx::Any>, StoreError> {
    Ok(match db.backend {
        Backend::Sqlite => db.pool.begin_with("BEGIN IMMEDIATE").await?,
        Backend::Postgres => db.pool.begin().await?,
    })
}

/// How long a confirmation link works.
pub const CONFIRM_TOKEN_TTL: Duration = Duration::days(7);

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pending,
    Confirmed,
    Unsubscribed,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pending => "pending",
            Status::Confirmed => "confirmed",
            Status::Unsubscribed => "unsubscribed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Status::Pending),
            "confirmed" => Some(Status::Confirmed),
            "unsubscribed" => Some(Status::Unsubscribed),
            _ => None,
        }
    }
}

/// What a link token may do: confirm a sign-up, or manage (preferences, unsubscribe).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Confirm,
    Manage,
}

impl Purpose {
    pub fn as_str(self) -> &'static str {
        match self {
            Purpose::Confirm => "confirm",
            Purpose::Manage => "manage",
        }
    }
}

/// A subscriber with their choices. An empty `categories` means "all".
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Subscriber {
    pub id: i64,
    pub email: String,
    pub name: String,
    pub status: Status,
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub confirmed_at: Option<DateTime<Utc>>,
    pub unsubscribed_at: Option<DateTime<Utc>>,
    #[serde(skip)]
    pub last_confirmation_sent_at: Option<DateTime<Utc>>,
    /// Part of every link made for them; raised to invalidate all of them.
    #[serde(skip)]
    pub link_version: u32,
    /// Their IANA time zone (checked by `domain::TimeZone` before it is
    /// stored); None: each edition's own zone. Used by `local_time` editions.
    pub timezone: Option<String>,
    pub categories: Vec<String>,
    pub editions: Vec<String>,
}

/// A subscriber to insert.
#[derive(Debug, Clone)]
pub struct NewSubscriber<'a> {
    /// Already normalized by `domain::EmailAddress`.
    pub email: &'a str,
    pub name: &'a str,
    pub status: Status,
    /// form | api | cli | import
    pub source: &'a str,
    /// A name `domain::TimeZone` accepted; None: the editions' zones.
    pub timezone: Option<&'a str>,
    pub categories: &'a [String],
    pub editions: &'a [String],
}

type Row = (
    i64,
    String,
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    i64,
    Option<String>,
);

const COLUMNS: &str = "id, email, name, status, source, created_at, confirmed_at, unsubscribed_at, last_confirmation_sent_at, link_version, timezone";

fn from_row(r: Row) -> Subscriber {
    Subscriber {
        id: r.0,
        email: r.1,
        name: r.2,
        status: Status::parse(&r.3).unwrap_or(Status::Unsubscribed),
        source: r.4,
        created_at: from_millis(r.5),
        confirmed_at: r.6.map(from_millis),
        unsubscribed_at: r.7.map(from_millis),
        last_confirmation_sent_at: r.8.map(from_millis),
        link_version: u32::try_from(r.9).unwrap_or(u32::MAX),
        timezone: r.10,
        categories: Vec::new(),
        editions: Vec::new(),
    }
}

/// Fills in categories and editions of `subs` with two queries.
async fn attach_choices(
    conn: &mut AnyConnection,
    subs: &mut [Subscriber],
) -> Result<(), StoreError> {
    if subs.is_empty() {
        return Ok(());
    }
    let placeholders = (1..=subs.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let index: HashMap<i64, usize> = subs.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    for (table, column) in [
        ("subscriber_categories", "category"),
        ("subscriber_editions", "edition"),
    ] {
        let sql = format!("SELECT subscriber_id, {column} FROM {table} WHERE subscriber_id IN ({placeholders}) ORDER BY subscriber_id, {column}");
        let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
        for s in subs.iter() {
            q = q.bind(s.id);
        }
        for (id, value) in q.fetch_all(&mut *conn).await? {
            if let Some(&i) = index.get(&id) {
                if table == "subscriber_categories" {
                    subs[i].categories.push(value);
                } else {
                    subs[i].editions.push(value);
                }
            }
        }
    }
    Ok(())
}

enum Key<'a> {
    Id(i64),
    Email(&'a str),
}

async fn fetch_one(
    conn: &mut AnyConnection,
    key: Key<'_>,
) -> Result<Option<Subscriber>, StoreError> {
    let row: Option<Row> = match key {
        Key::Id(id) => {
            sqlx::query_as(&format!("SELECT {COLUMNS} FROM subscribers WHERE id = $1"))
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?
        }
        Key::Email(email) => {
            sqlx::query_as(&format!(
                "SELECT {COLUMNS} FROM subscribers WHERE email = $1"
            ))
            .bind(email)
            .fetch_optional(&mut *conn)
            .await?
        }
    };
    let Some(row) = row else { return Ok(None) };
    let mut subs = [from_row(row)];
    attach_choices(conn, &mut subs).await?;
    let [s] = subs;
    Ok(Some(s))
}

pub async fn find_by_email(
    conn: &mut AnyConnection,
    email: &str,
) -> Result<Option<Subscriber>, StoreError> {
    fetch_one(conn, Key::Email(email)).await
}

pub async fn find_by_id(
    conn: &mut AnyConnection,
    id: i64,
) -> Result<Option<Subscriber>, StoreError> {
    fetch_one(conn, Key::Id(id)).await
}

/// The highest publication event id (0 when none): a new or newly confirmed
/// subscriber's cursor, so digests carry only what is published afterwards.
pub async fn current_event_id(conn: &mut AnyConnection) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM publication_events")
            .fetch_one(&mut *conn)
            .await?,
    )
}

/// Inserts a subscriber with their choices; None when the address exists.
pub async fn insert(
    conn: &mut AnyConnection,
    new: &NewSubscriber<'_>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, StoreError> {
    let confirmed_at = (new.status == Status::Confirmed).then(|| to_millis(now));
    let unsubscribed_at = (new.status == Status::Unsubscribed).then(|| to_millis(now));
    let id: Option<i64> = sqlx::query_scalar(
        "INSERT INTO subscribers (email, name, status, source, created_at, confirmed_at, unsubscribed_at, timezone)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (email) DO NOTHING RETURNING id",
    )
    .bind(new.email)
    .bind(new.name)
    .bind(new.status.as_str())
    .bind(new.source)
    .bind(to_millis(now))
    .bind(confirmed_at)
    .bind(unsubscribed_at)
    .bind(new.timezone)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else { return Ok(None) };
    set_choices(conn, id, new.categories, new.editions).await?;
    Ok(Some(id))
}

/// Replaces a subscriber's categories and editions. An edition kept keeps its
/// cursor; an edition added starts at the current event, so choosing a new
/// edition never replays the archive.
pub async fn set_choices(
    conn: &mut AnyConnection,
    id: i64,
    categories: &[String],
    editions: &[String],
) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM subscriber_categories WHERE subscriber_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    for c in categories {
        sqlx::query("INSERT INTO subscriber_categories (subscriber_id, category) VALUES ($1, $2) ON CONFLICT DO NOTHING")
            .bind(id)
            .bind(c)
            .execute(&mut *conn)
            .await?;
    }
    let existing: Vec<String> =
        sqlx::query_scalar("SELECT edition FROM subscriber_editions WHERE subscriber_id = $1")
            .bind(id)
            .fetch_all(&mut *conn)
            .await?;
    for e in existing.iter().filter(|e| !editions.contains(e)) {
        sqlx::query("DELETE FROM subscriber_editions WHERE subscriber_id = $1 AND edition = $2")
            .bind(id)
            .bind(e)
            .execute(&mut *conn)
            .await?;
    }
    let added: Vec<&String> = editions.iter().filter(|e| !existing.contains(e)).collect();
    if !added.is_empty() {
        let cursor = current_event_id(conn).await?;
        for e in added {
            sqlx::query("INSERT INTO subscriber_editions (subscriber_id, edition, cursor_event_id) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(id)
                .bind(e)
                .bind(cursor)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(())
}

/// Sets a known subscriber's name and status back to pending (a re-subscription
/// after leaving, or a pending one signing up again).
pub async fn reset_pending(
    conn: &mut AnyConnection,
    id: i64,
    name: &str,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE subscribers SET status = 'pending', name = $1, unsubscribed_at = NULL WHERE id = $2 AND status <> 'confirmed'")
        .bind(name)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Sets a subscriber's time zone (None: each edition's own zone).
///
/// Changing it needs nothing else to keep DESIGN.md invariants 2 and 8: the
/// next run of the new zone's group picks them up (their edition cursors
/// still say which case studies they have had, so none comes twice and none
/// is skipped), and that run skips them when their last digest already falls
/// into its period (`subscriber_editions.last_window_at`, see
/// `editions::run`), so a move never brings two digests in one period.
pub async fn set_timezone(
    conn: &mut AnyConnection,
    id: i64,
    timezone: Option<&str>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE subscribers SET timezone = $1 WHERE id = $2")
        .bind(timezone)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Confirms a pending subscriber; returns whether the status changed. Each of
/// their edition cursors moves to the newest event: digests then carry only
/// case studies published after the confirmation.
pub async fn confirm(
    conn: &mut AnyConnection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "UPDATE subscribers SET status = 'confirmed', confirmed_at = $1, unsubscribed_at = NULL WHERE id = $2 AND status = 'pending'",
    )
    .bind(to_millis(now))
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if changed {
        let cursor = current_event_id(conn).await?;
        sqlx::query("UPDATE subscriber_editions SET cursor_event_id = $1 WHERE subscriber_id = $2")
            .bind(cursor)
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(changed)
}

/// Marks a subscriber unsubscribed; returns whether the status changed.
/// Every link sent to them before stops working ([`revoke_links`]).
pub async fn unsubscribe(
    conn: &mut AnyConnection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<bool, StoreError> {
    let changed = sqlx::query(
        "UPDATE subscribers SET status = 'unsubscribed', unsubscribed_at = $1 WHERE id = $2 AND status <> 'unsubscribed'",
    )
    .bind(to_millis(now))
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        > 0;
    if changed {
        revoke_links(conn, id).await?;
    }
    Ok(changed)
}

/// Invalidates every link of a subscriber ("log out everywhere"): raises
/// their link version and deletes their rows of the earlier token scheme.
pub async fn revoke_links(conn: &mut AnyConnection, id: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE subscribers SET link_version = link_version + 1 WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM tokens WHERE subscriber_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Records that a confirmation (or "already subscribed") mail was queued.
pub async fn mark_confirmation_sent(
    conn: &mut AnyConnection,
    id: i64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE subscribers SET last_confirmation_sent_at = $1 WHERE id = $2")
        .bind(to_millis(now))
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A link token that opened a subscriber.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resolved {
    pub subscriber_id: i64,
    /// A row of the earlier scheme: it works for one state change, which
    /// deletes it ([`consume_legacy`]).
    pub legacy: bool,
}

/// The subscriber a token opens for `purpose` at `now`: a signed token
/// with a valid MAC, purpose, expiry and the subscriber's current link
/// version; or a stored hash of the earlier scheme. Read-only, so GET pages
/// can use it: opening a link twice works.
pub async fn resolve_token(
    conn: &mut AnyConnection,
    key: &LinkKey,
    token: &Token,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<Option<Resolved>, StoreError> {
    if token.signed_bytes().is_some() {
        let Some(claims) = key.check(token, purpose, now) else {
            return Ok(None);
        };
        let version: Option<i64> =
            sqlx::query_scalar("SELECT link_version FROM subscribers WHERE id = $1")
                .bind(claims.subscriber_id)
                .fetch_optional(&mut *conn)
                .await?;
        return Ok(
            (version == Some(i64::from(claims.version))).then_some(Resolved {
                subscriber_id: claims.subscriber_id,
                legacy: false,
            }),
        );
    }
    let id: Option<i64> = sqlx::query_scalar(
        "SELECT subscriber_id FROM tokens WHERE hash = $1 AND purpose = $2 AND (expires_at IS NULL OR expires_at > $3)",
    )
    .bind(token.hash())
    .bind(purpose.as_str())
    .bind(to_millis(now))
    .fetch_optional(&mut *conn)
    .await?;
    Ok(id.map(|subscriber_id| Resolved {
        subscriber_id,
        legacy: true,
    }))
}

/// Deletes the stored row of a legacy token once it has been used for a
/// change, and the expired confirmation rows of the same scheme.
pub async fn consume_legacy(
    conn: &mut AnyConnection,
    token: &Token,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "DELETE FROM tokens WHERE hash = $1 OR (expires_at IS NOT NULL AND expires_at <= $2)",
    )
    .bind(token.hash())
    .bind(to_millis(now))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn is_suppressed(conn: &mut AnyConnection, email: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM suppressions WHERE email = $1")
        .bind(email)
        .fetch_one(&mut *conn)
        .await?;
    Ok(n > 0)
}

/// Adds `email` to the suppression list (a no-op when already there).
pub async fn suppress(
    conn: &mut AnyConnection,
    email: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO suppressions (email, reason, created_at) VALUES ($1, $2, $3) ON CONFLICT (email) DO NOTHING")
        .bind(email)
        .bind(reason)
        .bind(to_millis(now))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Erases a subscriber's personal data: the row, choices, tokens and the
/// outbox rows addressed to them (except one a worker is sending right now).
/// A suppression row that already existed stays (it is what keeps the
/// address from being mailed again).
pub async fn erase(conn: &mut AnyConnection, id: i64) -> Result<bool, StoreError> {
    for sql in [
        "DELETE FROM tokens WHERE subscriber_id = $1",
        "DELETE FROM subscriber_categories WHERE subscriber_id = $1",
        "DELETE FROM subscriber_editions WHERE subscriber_id = $1",
        "DELETE FROM outbox WHERE subscriber_id = $1 AND state <> 'sending'",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *conn).await?;
    }
    Ok(sqlx::query("DELETE FROM subscribers WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected()
        > 0)
}

/// One page of subscribers, newest id last, optionally filtered by a text
/// that the address or the name contains (case-insensitive); with the total.
pub async fn list(
    conn: &mut AnyConnection,
    search: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<Subscriber>, i64), StoreError> {
    let pattern = search.filter(|s| !s.is_empty()).map(|s| {
        let escaped = s
            .to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_");
        format!("%{escaped}%")
    });
    let filter =
        "WHERE ($1 = '' OR LOWER(email) LIKE $1 ESCAPE '\\' OR LOWER(name) LIKE $1 ESCAPE '\\')";
    let p = pattern.unwrap_or_default();
    let total: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM subscribers {filter}"))
        .bind(&p)
        .fetch_one(&mut *conn)
        .await?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM subscribers {filter} ORDER BY id LIMIT $2 OFFSET $3"
    ))
    .bind(&p)
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    let mut subs: Vec<Subscriber> = rows.into_iter().map(from_row).collect();
    attach_choices(conn, &mut subs).await?;
    Ok((subs, total))
}

/// Subscribers with an id above `after`, in id order: keyset paging for exports.
pub async fn page_after(
    conn: &mut AnyConnection,
    after: i64,
    limit: i64,
) -> Result<Vec<Subscriber>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM subscribers WHERE id > $1 ORDER BY id LIMIT $2"
    ))
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    let mut subs: Vec<Subscriber> = rows.into_iter().map(from_row).collect();
    attach_choices(conn, &mut subs).await?;
    Ok(subs)
}

/// Inserts many new subscribers with few statements (bulk import). Addresses
/// already present are left exactly as they are; returns how many were inserted.
pub async fn insert_many(
    conn: &mut AnyConnection,
    rows: &[NewSubscriber<'_>],
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    // 8 parameters per row; 400 rows stay far below both engines' limits.
    let mut inserted = 0;
    let cursor = current_event_id(conn).await?;
    for chunk in rows.chunks(400) {
        let mut sql = String::from("INSERT INTO subscribers (email, name, status, source, created_at, confirmed_at, unsubscribed_at, timezone) VALUES ");
        for i in 0..chunk.len() {
            let b = i * 8;
            if i > 0 {
                sql.push_str(", ");
            }
            let params: Vec<String> = (1..=8).map(|k| format!("${}", b + k)).collect();
            sql.push_str(&format!("({})", params.join(", ")));
        }
        sql.push_str(" ON CONFLICT (email) DO NOTHING RETURNING id, email");
        let mut q = sqlx::query_as::<_, (i64, String)>(&sql);
        for r in chunk {
            q = q
                .bind(r.email)
                .bind(r.name)
                .bind(r.status.as_str())
                .bind(r.source)
                .bind(to_millis(now))
                .bind((r.status == Status::Confirmed).then(|| to_millis(now)))
                .bind((r.status == Status::Unsubscribed).then(|| to_millis(now)))
                .bind(r.timezone);
        }
        let ids: HashMap<String, i64> = q
            .fetch_all(&mut *conn)
            .await?
            .into_iter()
            .map(|(id, e)| (e, id))
            .collect();
        inserted += ids.len();
        let mut cats: Vec<(i64, &str)> = Vec::new();
        let mut eds: Vec<(i64, &str)> = Vec::new();
        for r in chunk {
            if let Some(&id) = ids.get(r.email) {
                cats.extend(r.categories.iter().map(|c| (id, c.as_str())));
                eds.extend(r.editions.iter().map(|e| (id, e.as_str())));
            }
        }
        for part in cats.chunks(500) {
            let values = (0..part.len())
                .map(|i| format!("(${}, ${})", i * 2 + 1, i * 2 + 2))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("INSERT INTO subscriber_categories (subscriber_id, category) VALUES {values} ON CONFLICT DO NOTHING");
            let mut q = sqlx::query(&sql);
            for (id, c) in part {
                q = q.bind(*id).bind(*c);
            }
            q.execute(&mut *conn).await?;
        }
        for part in eds.chunks(500) {
            let values = (0..part.len())
                .map(|i| format!("(${}, ${}, ${})", i * 3 + 1, i * 3 + 2, i * 3 + 3))
                .collect::<Vec<_>>()
                .join(", ");
            let sql = format!("INSERT INTO subscriber_editions (subscriber_id, edition, cursor_event_id) VALUES {values} ON CONFLICT DO NOTHING");
            let mut q = sqlx::query(&sql);
            for (id, e) in part {
                q = q.bind(*id).bind(*e).bind(cursor);
            }
            q.execute(&mut *conn).await?;
        }
    }
    Ok(inserted)
}

/// Records that a manage-link mail goes to `id` now, unless one went within
/// `interval`: true when the caller may send. One statement, so two requests
/// at once cannot both win.
pub async fn claim_link_mail(
    conn: &mut AnyConnection,
    id: i64,
    now: DateTime<Utc>,
    interval: chrono::Duration,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE subscribers SET last_link_sent_at = $1 WHERE id = $2 AND (last_link_sent_at IS NULL OR last_link_sent_at <= $3)",
    )
    .bind(to_millis(now))
    .bind(id)
    .bind(to_millis(now - interval))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}
