//! Editions that paused themselves because their content is being refused
//! (see `delivery::worker`): claims skip their rows until an operator runs
//! `casewire digest resume EDITION`.

use chrono::{DateTime, Utc};
use sqlx::AnyConnection;

use super::{to_millis, Db, StoreError};

/// Records the pause (a second pause of a paused edition keeps the first).
pub async fn pause(
    conn: &mut AnyConnection,
    edition: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO edition_pauses (edition, reason, paused_at) VALUES ($1, $2, $3) ON CONFLICT (edition) DO NOTHING",
    )
    .bind(edition)
    .bind(reason)
    .bind(to_millis(now))
    .execute(conn)
    .await?;
    Ok(())
}

/// Lifts the pause; returns its reason, or None when the edition was not paused.
pub async fn resume(db: &Db, edition: &str) -> Result<Option<String>, StoreError> {
    let reason: Option<String> =
        sqlx::query_scalar("DELETE FROM edition_pauses WHERE edition = $1 RETURNING reason")
            .bind(edition)
            .fetch_optional(&db.pool)
            .await?;
    Ok(reason)
}

/// Every paused edition: (edition, reason, paused_at in ms).
pub async fn list(db: &Db) -> Result<Vec<(String, String, i64)>, StoreError> {
    Ok(
        sqlx::query_as("SELECT edition, reason, paused_at FROM edition_pauses ORDER BY edition")
            .fetch_all(&db.pool)
            .await?,
    )
}
