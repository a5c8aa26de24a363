//! Counts kept by the database itself: subscribers by status, outbox rows
//! by state and sent messages per hour, maintained by triggers (migration
//! 0060) so that reading them costs a few rows, not a scan of a million.
//!
//! On SQLite the triggers update the counters in place, row by row, except
//! for the send path's bulk statements (queueing a run, claiming, marking
//! sent): those count their whole batch themselves (migration 0070; a
//! [`Batch`] when queueing, one statement in SQL in the claim's and the
//! result write's own call, `store::outbox`), which costs one statement
//! instead of a dozen counter writes per digest. On PostgreSQL each statement appends its net change to
//! `tally_deltas` (shared counter rows would serialize concurrent senders
//! and could deadlock them); [`read`] folds those deltas into the counters
//! first, and counts the ones it did not get to as well, so the answer is
//! exact either way.

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

/// The counter changes of one bulk statement on the outbox, written by the
/// code that ran it instead of row by row by SQLite's triggers (migration
/// 0070): [`Batch::begin`] sets the triggers aside for the rest of the
/// caller's transaction, the rows the statement changed are added with
/// [`Batch::moved`], and [`Batch::finish`] writes one change per key and
/// puts the triggers back. Both must run in the same transaction as the
/// statement, so the counts commit (or roll back) with the rows.
///
/// PostgreSQL's triggers already work per statement, so there a batch
/// counts nothing and writes nothing.
#[derive(Debug)]
pub(crate) struct Batch {
    changes: Option<std::collections::BTreeMap<(&'static str, String), i64>>,
}

/// An outbox row as a bulk statement returned it, before or after the change.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Row<'a> {
    pub kind: &'a str,
    pub dedupe_key: &'a str,
    pub subscriber_id: Option<i64>,
    pub state: &'a str,
    pub attempts: i64,
    /// Milliseconds since the epoch.
    pub sent_at: Option<i64>,
}

impl Batch {
    pub(crate) async fn begin(conn: &mut sqlx::AnyConnection) -> Result<Batch, StoreError> {
        if Backend::of(conn) == Backend::Postgres {
            return Ok(Batch { changes: None });
        }
        sqlx::query(SET_ASIDE).execute(&mut *conn).await?;
        Ok(Batch {
            changes: Some(Default::default()),
        })
    }

    /// Counts `n` rows that count alike (same kind, state, attempts, hour
    /// sent and run) out of `before`'s counters and into `after`'s; either
    /// is None for rows that were inserted (or deleted).
    pub(crate) fn moved(&mut self, before: Option<Row<'_>>, after: Option<Row<'_>>, n: i64) {
        let Some(changes) = self.changes.as_mut() else {
            return;
        };
        for (row, d) in [(before, -n), (after, n)] {
            let Some(row) = row else { continue };
            *changes.entry(("outbox", row.state.to_owned())).or_default() += d;
            if let (Some(sent_at), "sent") = (row.sent_at, row.state) {
                let hour = format!("{:010}", sent_at.div_euclid(3_600_000));
                *changes.entry(("sent_hour", hour)).or_default() += d;
            }
            if let Some(run) = run_prefix(row.kind, row.dedupe_key, row.subscriber_id) {
                *changes
                    .entry(("run", format!("{run}{}", row.state)))
                    .or_default() += d;
                if row.attempts > 1 {
                    *changes
                        .entry(("run", format!("{run}+retried")))
                        .or_default() += d;
                }
            }
        }
    }

    /// Writes the batch's changes, in key order, and hands counting back to
    /// the triggers.
    pub(crate) async fn finish(self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        let Some(changes) = self.changes.as_ref() else {
            return Ok(());
        };
        sqlx::query(PUT_BACK).execute(&mut *conn).await?;
        if changes.values().all(|n| *n == 0) {
            return Ok(());
        }
        sqlx::query(&format!("{UPSERT_CHANGES} WHERE true {ON_CONFLICT}"))
            .bind(self.json())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// The nonzero changes as one JSON array of `[kind, key, n]`, in key
    /// order: one statement writes them whatever the batch's size (it is
    /// prepared once).
    fn json(&self) -> String {
        let changes: Vec<(&str, &str, i64)> = self
            .changes
            .iter()
            .flatten()
            .filter(|(_, n)| **n != 0)
            .map(|((kind, key), n)| (*kind, key.as_str(), *n))
            .collect();
        serde_json::to_string(&changes).expect("strings and numbers serialize")
    }
}

/// Sets SQLite's counting triggers aside for the rest of the transaction
/// (migration 0070), until [`PUT_BACK`]. The send path's statements send
/// both in the call that counts them (`BEGIN; {SET_ASIDE}; counts;
/// statement; {PUT_BACK}; COMMIT`; statements the triggers should count go
/// before `SET_ASIDE`); the queueing of a run uses a [`Batch`].
pub(crate) const SET_ASIDE: &str = "INSERT INTO tally_batch (one) VALUES (1)";

/// Hands counting back to the triggers.
pub(crate) const PUT_BACK: &str = "DELETE FROM tally_batch";

const UPSERT_CHANGES: &str = "INSERT INTO tallies (kind, key, n)
     SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]')
     FROM json_each($1)";
const ON_CONFLICT: &str = "ON CONFLICT (kind, key) DO UPDATE SET n = tallies.n + excluded.n";

/// Rolls back the transaction a failed call left open (SQLite has already
/// ended it after some errors; then there is nothing to roll back, and that
/// second error says nothing new), and gives back the first error.
pub(crate) async fn rollback(conn: &mut sqlx::AnyConnection, error: StoreError) -> StoreError {
    if let Err(e) = sqlx::query("ROLLBACK").execute(&mut *conn).await {
        tracing::debug!("rollback after a failed batch: {e}");
    }
    error
}

/// The key prefix of the edition run a digest row belongs to: its dedupe key
/// `digest:{edition}:{window}:{subscriber id}` without the id. The same rule
/// as the triggers' (migration 0060).
pub(crate) fn run_prefix<'k>(
    kind: &str,
    dedupe_key: &'k str,
    subscriber_id: Option<i64>,
) -> Option<&'k str> {
    if kind != "digest" {
        return None;
    }
    let id = subscriber_id?.to_string();
    let prefix = dedupe_key.strip_suffix(id.as_str())?;
    prefix.ends_with(':').then_some(prefix)
}
