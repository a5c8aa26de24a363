//! Outbox rows: enqueueing is idempotent through `dedupe_key`, and runs inside
//! the caller's transaction so a message exists exactly when the state change
//! that caused it committed.

use chrono::{DateTime, Utc};

use super::{to_millis, StoreError};

/// A message to queue.
#[derive(Debug, Clone)]
pub struct NewMessage<'a> {
    /// Unique per logical message: a second enqueue with the same key is a no-op.
    pub dedupe_key: &'a str,
    /// "confirmation" | "digest"
    pub kind: &'a str,
    pub edition: Option<&'a str>,
    pub subscriber_id: Option<i64>,
    pub recipient: &'a str,
    /// A whole RFC 5322 message (transactional mail)...
    pub message: Option<&'a str>,
    /// ...or a shared body plus per-recipient `vars` (digests).
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
    .bind(msg.kind)
    .bind(msg.edition)
    .bind(msg.subscriber_id)
    .bind(msg.recipient)
    .bind(msg.body_id)
    .bind(msg.message)
    .bind(msg.vars.to_string())
    .bind(now)
    .bind(now)
    .bind(now)
    .execute(executor)
    .await?;
    if result.rows_affected() > 0 {
        metrics::counter!("casewire_outbox_enqueued_total", "kind" => msg.kind.to_owned(), "edition" => msg.edition.unwrap_or("").to_owned()).increment(1);
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
