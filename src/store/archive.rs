//! The public archive's rows (`edition_archive`): one issue per edition run
//! that carried case studies, with its stable page key. Written once when the
//! run starts, read by the archive pages; nothing here is personal.

use chrono::{DateTime, Utc};

use super::{from_millis, to_millis, Db, StoreError};

/// One stored issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    pub edition: String,
    /// The page's path segment: `2026-12-02`, or `2026-12-02-2` for the
    /// second run of that date.
    pub key: String,
    pub local_date: String,
    pub seq: i64,
    pub run_at: DateTime<Utc>,
    pub high_water: i64,
    pub subject: String,
    pub count: i64,
    /// JSON of the groups the page shows (see `archive::IssueContent`).
    pub content: String,
}

/// What a new issue holds, before it has a key.
#[derive(Debug, Clone)]
pub struct NewIssue<'a> {
    pub edition: &'a str,
    pub window: &'a str,
    pub local_date: &'a str,
    pub run_at: DateTime<Utc>,
    pub high_water: i64,
    pub subject: &'a str,
    pub count: i64,
    pub content: &'a str,
}

const COLUMNS: &str =
    "edition, issue_key, local_date, seq, run_at, high_water, subject, item_count, content";

type Row = (String, String, String, i64, i64, i64, String, i64, String);

fn issue(
    (edition, key, local_date, seq, run_at, high_water, subject, count, content): Row,
) -> Issue {
    Issue {
        edition,
        key,
        local_date,
        seq,
        run_at: from_millis(run_at),
        high_water,
        subject,
        count,
        content,
    }
}

/// The key of `seq`'s run on `date`: the date alone for the first run, then
/// `-2`, `-3`, ...; a key once given is never given to another run.
pub fn issue_key(date: &str, seq: i64) -> String {
    if seq <= 1 {
        date.to_owned()
    } else {
        format!("{date}-{seq}")
    }
}

/// The issue of `window`, stored now unless it exists (a run resumed after a
/// crash finds the issue, and the key, it started with). Two runs racing for
/// one date's next number both get an issue: the loser takes the next one.
pub async fn record(db: &Db, new: &NewIssue<'_>, now: DateTime<Utc>) -> Result<Issue, StoreError> {
    for _ in 0..8 {
        if let Some(found) = by_window(db, new.edition, new.window).await? {
            return Ok(found);
        }
        let seq: i64 = sqlx::query_scalar(
            "SELECT COALESCE(MAX(seq), 0) + 1 FROM edition_archive WHERE edition = $1 AND local_date = $2",
        )
        .bind(new.edition)
        .bind(new.local_date)
        .fetch_one(&db.pool)
        .await?;
        sqlx::query(
            "INSERT INTO edition_archive (edition, issue_key, window_key, local_date, seq, run_at, high_water, subject, item_count, content, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) ON CONFLICT DO NOTHING",
        )
        .bind(new.edition)
        .bind(issue_key(new.local_date, seq))
        .bind(new.window)
        .bind(new.local_date)
        .bind(seq)
        .bind(to_millis(new.run_at))
        .bind(new.high_water)
        .bind(new.subject)
        .bind(new.count)
        .bind(new.content)
        .bind(to_millis(now))
        .execute(&db.pool)
        .await?;
    }
    by_window(db, new.edition, new.window)
        .await?
        .ok_or_else(|| {
            StoreError::Sql(sqlx::Error::Protocol(format!(
                "cannot number the archive issue of {} {}",
                new.edition, new.window
            )))
        })
}

pub async fn by_window(db: &Db, edition: &str, window: &str) -> Result<Option<Issue>, StoreError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM edition_archive WHERE edition = $1 AND window_key = $2"
    ))
    .bind(edition)
    .bind(window)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(issue))
}

/// The issue behind `/archive/{edition}/{key}/`.
pub async fn get(db: &Db, edition: &str, key: &str) -> Result<Option<Issue>, StoreError> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM edition_archive WHERE edition = $1 AND issue_key = $2"
    ))
    .bind(edition)
    .bind(key)
    .fetch_optional(&db.pool)
    .await?;
    Ok(row.map(issue))
}

/// The keys of the issues just before and just after `issue` (in run order).
pub async fn neighbours(
    db: &Db,
    issue: &Issue,
) -> Result<(Option<String>, Option<String>), StoreError> {
    let before: Option<String> = sqlx::query_scalar(
        "SELECT issue_key FROM edition_archive WHERE edition = $1 AND (local_date < $2 OR (local_date = $2 AND seq < $3))
         ORDER BY local_date DESC, seq DESC LIMIT 1",
    )
    .bind(&issue.edition)
    .bind(&issue.local_date)
    .bind(issue.seq)
    .fetch_optional(&db.pool)
    .await?;
    let after: Option<String> = sqlx::query_scalar(
        "SELECT issue_key FROM edition_archive WHERE edition = $1 AND (local_date > $2 OR (local_date = $2 AND seq > $3))
         ORDER BY local_date, seq LIMIT 1",
    )
    .bind(&issue.edition)
    .bind(&issue.local_date)
    .bind(issue.seq)
    .fetch_optional(&db.pool)
    .await?;
    Ok((before, after))
}

/// Issues of `edition`, newest first, `limit` from `offset`.
pub async fn list(
    db: &Db,
    edition: &str,
    offset: i64,
    limit: i64,
) -> Result<Vec<Issue>, StoreError> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM edition_archive WHERE edition = $1 ORDER BY local_date DESC, seq DESC LIMIT $2 OFFSET $3"
    ))
    .bind(edition)
    .bind(limit)
    .bind(offset)
    .fetch_all(&db.pool)
    .await?;
    Ok(rows.into_iter().map(issue).collect())
}

pub async fn count(db: &Db, edition: &str) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM edition_archive WHERE edition = $1")
            .bind(edition)
            .fetch_one(&db.pool)
            .await?,
    )
}

/// The highest high-water mark of the other runs of `edition` that cover no
/// more than `high_water`: the issue of `window` holds the events above it
/// (none, when an earlier run already reached `high_water`).
pub async fn previous_high_water(
    db: &Db,
    edition: &str,
    window: &str,
    high_water: i64,
) -> Result<Option<i64>, StoreError> {
    Ok(sqlx::query_scalar(
        "SELECT MAX(high_water) FROM edition_runs WHERE edition = $1 AND window_key <> $2 AND high_water <= $3",
    )
    .bind(edition)
    .bind(window)
    .bind(high_water)
    .fetch_one(&db.pool)
    .await?)
}
