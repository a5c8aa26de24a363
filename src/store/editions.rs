//! Edition runs: windows, high-water marks, subscriber batches, per-edition
//! cursors, and queueing a batch of digests in a few multi-row statements.
//! An edition with `local_time` has windows per time zone in use
//! (`edition_runs.zone`), and a run of one zone reads only that zone's
//! subscribers.

use chrono::{DateTime, Utc};
use sqlx::Row as _;

use super::outbox::{Kind, State};
use super::tallies::{self, Batch, Row};
use super::{as_one_json_row, json_rows, to_millis, Backend, Db, List, Params, StoreError};
use crate::domain::{EmailAddress, Slug};

/// What `edition_runs` says about one window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunState {
    /// The last publication event the run covers, fixed when it started.
    pub high_water: i64,
    pub finished: bool,
}

/// One subscriber of an edition, as a run sees them.
#[derive(Debug, Clone)]
pub struct EditionSubscriber {
    pub id: i64,
    pub email: EmailAddress,
    /// Last publication event already covered for them in this edition.
    pub cursor: i64,
    /// Categories followed; empty means all.
    pub follows: Vec<Slug>,
    /// Signs their manage link (see `subscribers::links`).
    pub link_version: u32,
    /// Fire time of the scheduled window of their last digest in this
    /// edition (milliseconds, UTC), if any.
    pub last_window_at: Option<i64>,
}

/// The subscribers of one time zone: those whose `timezone` is `zone`, and
/// with `includes_unset` (the edition's own zone) those who chose none.
#[derive(Debug, Clone, Copy)]
pub struct ZoneFilter<'a> {
    pub zone: &'a str,
    pub includes_unset: bool,
}

/// The newest scheduled window of one zone of an edition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatestWindow {
    /// `''` for an edition that fires in its own zone only.
    pub zone: String,
    pub window_key: String,
    pub finished: bool,
}

/// One digest to queue.
#[derive(Debug, Clone)]
pub struct DigestRow {
    pub subscriber_id: i64,
    pub recipient: EmailAddress,
    pub dedupe_key: String,
    pub body_id: i64,
    /// Per-recipient values (JSON, no secret): the link version their
    /// manage link is signed with at send time.
    pub vars: String,
}

/// The newest publication event id (0 when none).
pub async fn current_high_water(db: &Db) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM publication_events")
            .fetch_one(&db.pool)
            .await?,
    )
}

/// Records the start of `window` (idempotent) and returns its state: a
/// window already started keeps the high-water mark it started with.
/// `zone` is `''` unless the window belongs to one zone of a `local_time`
/// edition.
pub async fn start_run(
    db: &Db,
    edition: &str,
    window: &str,
    zone: &str,
    now: DateTime<Utc>,
    high_water: i64,
) -> Result<RunState, StoreError> {
    sqlx::query("INSERT INTO edition_runs (edition, window_key, started_at, high_water, zone) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (edition, window_key) DO NOTHING")
        .bind(edition)
        .bind(window)
        .bind(to_millis(now))
        .bind(high_water)
        .bind(zone)
        .execute(&db.pool)
        .await?;
    let (high_water, finished): (i64, Option<i64>) = sqlx::query_as(
        "SELECT high_water, finished_at FROM edition_runs WHERE edition = $1 AND window_key = $2",
    )
    .bind(edition)
    .bind(window)
    .fetch_one(&db.pool)
    .await?;
    Ok(RunState {
        high_water,
        finished: finished.is_some(),
    })
}

pub async fn finish_run(
    db: &Db,
    edition: &str,
    window: &str,
    enqueued: u64,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE edition_runs SET finished_at = $1, enqueued = enqueued + $2 WHERE edition = $3 AND window_key = $4")
        .bind(to_millis(now))
        .bind(enqueued as i64)
        .bind(edition)
        .bind(window)
        .execute(&db.pool)
        .await?;
    Ok(())
}

/// Publication events in `(after, upto]` as (id, slug), oldest first.
pub async fn events_between(
    db: &Db,
    after: i64,
    upto: i64,
) -> Result<Vec<(i64, String)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, slug FROM publication_events WHERE id > $1 AND id <= $2 ORDER BY id",
    )
    .bind(after)
    .bind(upto)
    .fetch_all(&db.pool)
    .await?)
}

/// The lowest cursor among the edition's subscribers: events at or below it
/// are covered for everyone.
pub async fn min_cursor(db: &Db, edition: &str) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(cursor_event_id) FROM subscriber_editions WHERE edition = $1",
    )
    .bind(edition)
    .fetch_one(&db.pool)
    .await?)
}

/// How many subscribers receive `edition` (confirmed or not): an upper
/// bound on the digests one run queues.
pub async fn subscriber_count(db: &Db, edition: &str) -> Result<u64, StoreError> {
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM subscriber_editions WHERE edition = $1")
        .bind(edition)
        .fetch_one(&db.pool)
        .await?;
    Ok(n.max(0) as u64)
}

/// Makes sure PostgreSQL plans an edition run's reads of its list from
/// statistics that know the list's size; returns whether it refreshed them.
///
/// Autovacuum refreshes a table's statistics a minute or more after it
/// changed. A list imported just before a run, or never analyzed at all,
/// was planned as a table of a few rows: every batch of 500 subscribers
/// read and sorted the whole rest of the list (120 ms a batch at 100,000
/// subscribers, so the run grew with the square of the list). When
/// `subscriber_editions` was never analyzed and is not small, the list's
/// tables are analyzed first (0.2 s at 100,000 subscribers). Statistics
/// from an earlier, smaller list are left to autovacuum: the planner scales
/// their row counts by the table's size now, and the plans stay right. The
/// check reads one catalog row, so the runs that need nothing pay nothing.
/// Nothing to do on SQLite, which plans these reads well without
/// statistics.
pub async fn refresh_list_statistics(db: &Db) -> Result<bool, StoreError> {
    if db.backend != Backend::Postgres {
        return Ok(false);
    }
    // Below this many pages (about 2,000 memberships) any plan is quick.
    const SMALL: i64 = 16;
    // reltuples is -1 until the first ANALYZE or VACUUM (0 before
    // PostgreSQL 14, with relpages 0 too).
    let (known_rows, known_pages, pages): (f64, i64, i64) = sqlx::query_as(
        "SELECT CAST(reltuples AS DOUBLE PRECISION), CAST(relpages AS BIGINT),
                CAST(pg_relation_size(oid) / CAST(current_setting('block_size') AS INTEGER) AS BIGINT)
         FROM pg_class WHERE oid = CAST('subscriber_editions' AS regclass)",
    )
    .fetch_one(&db.pool)
    .await?;
    let never = known_rows < 0.0 || (known_rows == 0.0 && known_pages == 0);
    if !never || pages <= SMALL {
        return Ok(false);
    }
    let t = std::time::Instant::now();
    sqlx::query("ANALYZE subscribers, subscriber_editions, subscriber_categories, suppressions")
        .execute(&db.pool)
        .await?;
    tracing::info!(
        "the subscriber list ({pages} pages) had never been analyzed; analyzed in {:.0?}",
        t.elapsed()
    );
    Ok(true)
}

/// The next `limit` confirmed, unsuppressed subscribers of `edition` with
/// `id > after_id` whose cursor is below `high_water` (keyset pagination: the
/// list is never loaded whole); with `zone`, only that zone's subscribers
/// (read through the `subscribers (timezone, id)` index). The id bound is
/// given on both sides of the join: PostgreSQL does not carry it across the
/// join's equality, and without it read each batch's memberships from the
/// start of the edition (9 ms a batch halfway through 100,000 subscribers,
/// 0.7 ms with it).
pub async fn subscriber_batch(
    conn: &mut sqlx::AnyConnection,
    edition: &str,
    zone: Option<ZoneFilter<'_>>,
    high_water: i64,
    after_id: i64,
    limit: i64,
) -> Result<Vec<EditionSubscriber>, StoreError> {
    let zone_sql = match zone {
        None => "$4 = ''",
        Some(z) if z.includes_unset => "(s.timezone = $4 OR s.timezone IS NULL)",
        Some(_) => "s.timezone = $4",
    };
    let sql = format!(
        "SELECT s.id, s.email, se.cursor_event_id, s.link_version, se.last_window_at
         FROM subscriber_editions se
         JOIN subscribers s ON s.id = se.subscriber_id
         LEFT JOIN suppressions sp ON sp.email = s.email
         WHERE se.edition = $1 AND s.status = 'confirmed' AND sp.email IS NULL
           AND se.cursor_event_id < $2 AND s.id > $3 AND se.subscriber_id > $3 AND {zone_sql}
         ORDER BY s.id LIMIT $5"
    );
    let backend = Backend::of(conn);
    let sql = match backend {
        Backend::Sqlite => as_one_json_row(
            &sql,
            "id, email, cursor_event_id, link_version, last_window_at",
        ),
        Backend::Postgres => sql,
    };
    let batch = sqlx::query(&sql)
        .bind(edition)
        .bind(high_water)
        .bind(after_id)
        .bind(zone.map_or("", |z| z.zone))
        .bind(limit);
    let mut rows: Vec<(i64, String, i64, i64, Option<i64>)> =
        fetch_rows(&mut *conn, backend, batch).await?;
    rows.sort_unstable_by_key(|r| r.0);
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return Ok(Vec::new());
    };
    let cats = "SELECT subscriber_id, category FROM subscriber_categories WHERE subscriber_id >= $1 AND subscriber_id <= $2";
    let cats = match backend {
        Backend::Sqlite => as_one_json_row(cats, "subscriber_id, category"),
        Backend::Postgres => cats.to_owned(),
    };
    let cats = sqlx::query(&cats).bind(first.0).bind(last.0);
    let cats: Vec<(i64, String)> = fetch_rows(&mut *conn, backend, cats).await?;
    let mut follows: std::collections::HashMap<i64, Vec<Slug>> = std::collections::HashMap::new();
    for (id, c) in cats {
        if let Ok(slug) = Slug::parse(&c) {
            follows.entry(id).or_default().push(slug);
        }
    }
    Ok(rows
        .into_iter()
        .filter_map(|(id, email, cursor, version, last_window_at)| {
            // Written through EmailAddress; a row that is not (a hand edit)
            // gets no digest, and the log says which.
            let email = EmailAddress::parse(&email)
                .map_err(|e| tracing::error!(subscriber = id, "no digest for this subscriber: {e}"))
                .ok()?;
            Some(EditionSubscriber {
                id,
                email,
                cursor,
                last_window_at,
                link_version: u32::try_from(version).unwrap_or(u32::MAX),
                follows: follows.remove(&id).unwrap_or_default(),
            })
        })
        .collect())
}

/// The rows of `query`: on SQLite a statement made by [`as_one_json_row`],
/// its one row decoded (columns in order, as `T`, a tuple); on PostgreSQL,
/// whose rows arrive through the socket together, its rows as they are.
async fn fetch_rows<'q, T>(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
) -> Result<Vec<T>, StoreError>
where
    T: serde::de::DeserializeOwned + for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    match backend {
        Backend::Sqlite => {
            let row = query.fetch_one(conn).await?;
            json_rows(&row.try_get::<String, _>(0)?)
        }
        Backend::Postgres => {
            let rows = query.fetch_all(conn).await?;
            Ok(rows.iter().map(T::from_row).collect::<Result<_, _>>()?)
        }
    }
}

/// Rows per multi-row INSERT (9 parameters each, far below SQLite's limit).
const CHUNK: usize = 250;

/// Queues `rows` in the caller's transaction (SQLite: a few hundred rows
/// per statement; PostgreSQL: all in one). Rows whose dedupe key exists
/// are skipped.
pub async fn enqueue_digests(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    edition: &str,
    rows: &[DigestRow],
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let now = to_millis(now);
    let backend = Backend::of(tx);
    let inserted = match backend {
        Backend::Sqlite => insert_digests_sqlite(tx, edition, rows, now).await?,
        Backend::Postgres => insert_digests_postgres(tx, edition, rows, now).await?,
    };
    if inserted > 0 {
        metrics::counter!("casewire_outbox_enqueued_total", "kind" => Kind::Digest.as_str(), "edition" => edition.to_owned()).increment(inserted);
    }
    Ok(inserted)
}

/// PostgreSQL: one statement whatever the number of rows, one array per
/// column. A multi-row VALUES list of 250 rows had 2,250 parameters for
/// the server to read one by one (6.4 ms a statement); its triggers count
/// per statement, so nothing is counted here.
async fn insert_digests_postgres(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    edition: &str,
    rows: &[DigestRow],
    now: i64,
) -> Result<u64, StoreError> {
    if rows.is_empty() {
        return Ok(0);
    }
    let column = |f: fn(&DigestRow) -> &str| {
        let values: Vec<&str> = rows.iter().map(f).collect();
        List::Texts(&values).value(Backend::Postgres)
    };
    let ids = |f: fn(&DigestRow) -> i64| {
        let values: Vec<i64> = rows.iter().map(f).collect();
        List::Ids(&values).value(Backend::Postgres)
    };
    let sql = format!(
        "INSERT INTO outbox (dedupe_key, kind, edition, subscriber_id, recipient, body_id, vars, state, attempts, next_attempt_at, created_at, updated_at)
         SELECT k, '{}', $2, s, r, b, v, 'queued', 0, $3, $3, $3
         FROM unnest(CAST($1 AS TEXT[]), CAST($4 AS BIGINT[]), CAST($5 AS TEXT[]), CAST($6 AS BIGINT[]), CAST($7 AS TEXT[])) AS t (k, s, r, b, v)
         ON CONFLICT (dedupe_key) DO NOTHING",
        Kind::Digest.as_str()
    );
    let done = sqlx::query(&sql)
        .bind(column(|r| r.dedupe_key.as_str()))
        .bind(edition)
        .bind(now)
        .bind(ids(|r| r.subscriber_id))
        .bind(column(|r| r.recipient.as_str()))
        .bind(ids(|r| r.body_id))
        .bind(column(|r| r.vars.as_str()))
        .execute(&mut **tx)
        .await?;
    Ok(done.rows_affected())
}

/// SQLite: a few hundred rows per statement, their counters written at the
/// end, one change per key (store::tallies::Batch). The rows are counted
/// from what was asked, less the keys already queued, which are read first
/// in the same write transaction, so nothing comes between: a statement
/// that returned each inserted row would hand it over from sqlx's database
/// thread as a message of its own (see [`as_one_json_row`]).
async fn insert_digests_sqlite(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    edition: &str,
    rows: &[DigestRow],
    now: i64,
) -> Result<u64, StoreError> {
    let mut inserted = 0;
    let backend = Backend::Sqlite;
    let mut batch = Batch::begin(tx).await?;
    for chunk in rows.chunks(CHUNK) {
        let keys: Vec<&str> = chunk.iter().map(|r| r.dedupe_key.as_str()).collect();
        let queued = as_one_json_row(
            &format!(
                "SELECT dedupe_key FROM outbox WHERE {}",
                List::Texts(&keys).predicate(backend, "dedupe_key", "$1")
            ),
            "dedupe_key",
        );
        let queued = sqlx::query(&queued).bind(List::Texts(&keys).value(backend));
        let queued: Vec<(String,)> = fetch_rows(&mut **tx, backend, queued).await?;
        // A key queued already, or twice in this chunk, is skipped.
        let mut taken: std::collections::HashSet<&str> =
            queued.iter().map(|(k,)| k.as_str()).collect();
        let fresh: Vec<&DigestRow> = chunk
            .iter()
            .filter(|r| taken.insert(r.dedupe_key.as_str()))
            .collect();

        let mut sql = String::from(
            "INSERT INTO outbox (dedupe_key, kind, edition, subscriber_id, recipient, body_id, vars, state, attempts, next_attempt_at, created_at, updated_at) VALUES ",
        );
        let mut p = Params::new(backend);
        for i in 0..chunk.len() {
            sql.push_str(if i == 0 { "(" } else { ", (" });
            p.push(&mut sql);
            sql.push_str(", '");
            sql.push_str(Kind::Digest.as_str());
            sql.push_str("', ");
            p.push_list(&mut sql, 5);
            sql.push_str(", 'queued', 0, ");
            p.push_list(&mut sql, 3);
            sql.push(')');
        }
        sql.push_str(" ON CONFLICT (dedupe_key) DO NOTHING");
        let mut q = sqlx::query(&sql);
        for r in chunk {
            q = q
                .bind(&r.dedupe_key)
                .bind(edition)
                .bind(r.subscriber_id)
                .bind(r.recipient.as_str())
                .bind(r.body_id)
                .bind(&r.vars)
                .bind(now)
                .bind(now)
                .bind(now);
        }
        let done = q.execute(&mut **tx).await?.rows_affected();
        if done != fresh.len() as u64 {
            // Cannot happen while this transaction holds the one writer;
            // the counters would be wrong, so the batch is not kept.
            return Err(StoreError::Sql(sqlx::Error::Protocol(format!(
                "queueing digests of {edition}: {done} rows were inserted where {} were new",
                fresh.len()
            ))));
        }
        // Counted per run (rows in a row of the same run, one change each).
        let mut runs = fresh.iter().peekable();
        while let Some(first) = runs.next() {
            let mut n = 1;
            while runs.next_if(|r| run_of(r) == run_of(first)).is_some() {
                n += 1;
            }
            batch.moved(
                None,
                Some(Row {
                    kind: Kind::Digest.as_str(),
                    dedupe_key: &first.dedupe_key,
                    subscriber_id: Some(first.subscriber_id),
                    state: State::Queued.as_str(),
                    attempts: 0,
                    sent_at: None,
                }),
                n,
            );
        }
        inserted += done;
    }
    batch.finish(tx).await?;
    Ok(inserted)
}

/// The run a queued digest counts in (see [`tallies::run_prefix`]).
fn run_of(row: &DigestRow) -> Option<&str> {
    tallies::run_prefix(
        Kind::Digest.as_str(),
        &row.dedupe_key,
        Some(row.subscriber_id),
    )
}

/// Moves the cursors of `subscriber_ids` in `edition` up to `high_water`.
pub async fn advance_cursors(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    edition: &str,
    subscriber_ids: &[i64],
    high_water: i64,
) -> Result<(), StoreError> {
    if subscriber_ids.is_empty() {
        return Ok(());
    }
    let backend = Backend::of(&**tx);
    let list = super::List::Ids(subscriber_ids);
    let ids = list.predicate(backend, "subscriber_id", "$3");
    sqlx::query(&format!("UPDATE subscriber_editions SET cursor_event_id = $1 WHERE edition = $2 AND cursor_event_id < $1 AND {ids}"))
        .bind(high_water)
        .bind(edition)
        .bind(list.value(backend))
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Records, with the cursor move of the same batch, that `subscriber_ids`
/// got the digest of the scheduled window fired at `fired_at`.
pub async fn record_window(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    edition: &str,
    subscriber_ids: &[i64],
    fired_at: DateTime<Utc>,
) -> Result<(), StoreError> {
    if subscriber_ids.is_empty() {
        return Ok(());
    }
    let backend = Backend::of(&**tx);
    let list = super::List::Ids(subscriber_ids);
    let ids = list.predicate(backend, "subscriber_id", "$3");
    sqlx::query(&format!(
        "UPDATE subscriber_editions SET last_window_at = $1 WHERE edition = $2 AND {ids}"
    ))
    .bind(to_millis(fired_at))
    .bind(edition)
    .bind(list.value(backend))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The latest scheduled window run for `edition` in its own zone ("cron:…"
/// keys sort in time order).
pub async fn last_cron_window(db: &Db, edition: &str) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT MAX(window_key) FROM edition_runs WHERE edition = $1 AND zone = '' AND window_key LIKE 'cron:%'",
    )
    .bind(edition)
    .fetch_one(&db.pool)
    .await?)
}

/// The newest scheduled window of each zone of `edition`, in one query.
pub async fn latest_cron_windows(db: &Db, edition: &str) -> Result<Vec<LatestWindow>, StoreError> {
    let rows: Vec<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT r.zone, r.window_key, r.finished_at FROM edition_runs r
         JOIN (SELECT zone, MAX(window_key) AS k FROM edition_runs
               WHERE edition = $1 AND window_key LIKE 'cron:%' GROUP BY zone) m
           ON m.zone = r.zone AND m.k = r.window_key
         WHERE r.edition = $1",
    )
    .bind(edition)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(zone, window_key, finished)| LatestWindow {
            zone,
            window_key,
            finished: finished.is_some(),
        })
        .collect())
}

/// The time zones of `edition`'s confirmed subscribers with how many are in
/// each, by zone name; a subscriber without one counts as `edition_zone`.
/// One query over the edition's subscribers, however many zones there are.
pub async fn zones_in_use(
    db: &Db,
    edition: &str,
    edition_zone: &str,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT COALESCE(s.timezone, $2) AS zone, COUNT(*) FROM subscriber_editions se
         JOIN subscribers s ON s.id = se.subscriber_id
         WHERE se.edition = $1 AND s.status = 'confirmed'
         GROUP BY COALESCE(s.timezone, $2)
         ORDER BY 1",
    )
    .bind(edition)
    .bind(edition_zone)
    .fetch_all(&db.pool)
    .await?)
}

/// The highest high-water mark of a finished run of `edition`.
pub async fn finished_high_water(db: &Db, edition: &str) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT MAX(high_water) FROM edition_runs WHERE edition = $1 AND finished_at IS NOT NULL",
    )
    .bind(edition)
    .fetch_one(&db.pool)
    .await?)
}

/// The most recent run of `edition`: (window, started_at, finished_at, enqueued).
pub async fn last_run(
    db: &Db,
    edition: &str,
) -> Result<Option<(String, i64, Option<i64>, i64)>, StoreError> {
    Ok(sqlx::query_as("SELECT window_key, started_at, finished_at, enqueued FROM edition_runs WHERE edition = $1 ORDER BY started_at DESC LIMIT 1")
        .bind(edition)
        .fetch_optional(&db.pool)
        .await?)
}

/// Takes a session-level PostgreSQL advisory lock on a dedicated connection;
/// the lock lives as long as the returned connection. None: another holds it.
pub async fn try_leader_lock(
    db: &Db,
    key: i64,
) -> Result<Option<sqlx::pool::PoolConnection<sqlx::Any>>, StoreError> {
    let mut conn = db.pool.acquire().await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(key)
        .fetch_one(&mut *conn)
        .await?;
    Ok(got.then_some(conn))
}

/// A subscriber's cursor in `edition`; None when they do not receive it.
pub async fn subscriber_cursor(
    db: &Db,
    subscriber_id: i64,
    edition: &str,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT cursor_event_id FROM subscriber_editions WHERE subscriber_id = $1 AND edition = $2",
    )
    .bind(subscriber_id)
    .bind(edition)
    .fetch_optional(&db.pool)
    .await?)
}
