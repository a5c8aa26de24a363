//! Counts kept by the database itself: subscribers by status, outbox rows
//! by state and sent messages per hour, maintained by triggers (migration
//! 0060) so that reading them costs a few rows, not a scan of a million.
//!
//! On SQLite the triggers update the counters in place. On PostgreSQL each
//! statement appends its net change to `tally_deltas` (shared counter rows
//! would serialize concurrent senders and could deadlock them); [`read`]
//! folds those deltas into the counters first, and counts the ones it did
//! not get to as well, so the answer is exact either way.

use chrono::{DateTime, Utc};

use super::{Backend, Db, StoreError};

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tally {
    /// Subscribers by `status`.
    Subscribers,
    /// Outbox rows by `state`.
    Outbox,
}

impl Tally {
    fn kind(self) -> &'static str {
        match self {
            Tally::Subscribers => "subscribers",
            Tally::Outbox => "outbox",
        }
    }
}

/// The current count of each value, in value order, zero counts left out
/// (as a GROUP BY over the table would give them).
pub async fn read(db: &Db, tally: Tally) -> Result<Vec<(String, i64)>, StoreError> {
    if db.backend == Backend::Postgres {
        fold(db).await?;
    }
    Ok(sqlx::query_as(
        "SELECT key, CAST(SUM(n) AS BIGINT) FROM (
             SELECT key, n FROM tallies WHERE kind = $1
             UNION ALL
             SELECT key, n FROM tally_deltas WHERE kind = $1
         ) t GROUP BY key HAVING SUM(n) <> 0 ORDER BY key",
    )
    .bind(tally.kind())
    .fetch_all(&db.pool)
    .await?)
}

/// Messages in state `sent` whose `sent_at` falls in the hour of `since` or
/// later: the window starts at the top of that hour (at most an hour early),
/// which is what hourly counters can answer without a scan.
pub async fn sent_since(db: &Db, since: DateTime<Utc>) -> Result<i64, StoreError> {
    if db.backend == Backend::Postgres {
        fold(db).await?;
    }
    let hour = format!("{:010}", since.timestamp_millis().max(0) / 3_600_000);
    Ok(sqlx::query_scalar(
        "SELECT CAST(COALESCE(SUM(n), 0) AS BIGINT) FROM (
             SELECT n FROM tallies WHERE kind = 'sent_hour' AND key >= $1
             UNION ALL
             SELECT n FROM tally_deltas WHERE kind = 'sent_hour' AND key >= $1
         ) t",
    )
    .bind(hour)
    .fetch_one(&db.pool)
    .await?)
}

/// The digests of one edition run by state, and (as `+retried`) those
/// that took more than one attempt; `prefix` is the run's dedupe-key
/// prefix, `digest:{edition}:{window}:`.
pub async fn run_states(db: &Db, prefix: &str) -> Result<Vec<(String, i64)>, StoreError> {
    if db.backend == Backend::Postgres {
        fold(db).await?;
    }
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT key, CAST(SUM(n) AS BIGINT) FROM (
             SELECT key, n FROM tallies WHERE kind = 'run' AND substr(key, 1, length($1)) = $1
             UNION ALL
             SELECT key, n FROM tally_deltas WHERE kind = 'run' AND substr(key, 1, length($1)) = $1
         ) t GROUP BY key HAVING SUM(n) <> 0",
    )
    .bind(prefix)
    .fetch_all(&db.pool)
    .await?;
    // A longer window that starts with this one's name ("w" and "w:2") shares
    // the prefix; its keys have a ':' after it.
    Ok(rows
        .into_iter()
        .filter_map(|(key, n)| {
            let rest = key.get(prefix.len()..)?;
            (!rest.contains(':')).then(|| (rest.to_owned(), n))
        })
        .collect())
}

/// Moves PostgreSQL's appended deltas into the counters, in one statement
/// (rows appended meanwhile wait for the next fold). Counters are upserted
/// in key order, so two folds at once cannot deadlock. Nothing to do on
/// SQLite, whose triggers write the counters directly.
pub async fn fold(db: &Db) -> Result<(), StoreError> {
    if db.backend != Backend::Postgres {
        return Ok(());
    }
    sqlx::query(
        "WITH moved AS (DELETE FROM tally_deltas RETURNING kind, key, n)
         INSERT INTO tallies (kind, key, n)
             SELECT kind, key, SUM(n) FROM moved GROUP BY kind, key ORDER BY kind, key
         ON CONFLICT (kind, key) DO UPDATE SET n = tallies.n + excluded.n",
    )
    .execute(&db.pool)
    .await?;
    Ok(())
}
