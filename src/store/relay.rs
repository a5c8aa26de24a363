//! The relay's last known state, stored so that `casewire status` (another
//! process than the daemon) can say whether delivery is paused and why. One
//! row, written only when the breaker changes.

use chrono::{DateTime, Utc};

use super::{to_millis, Db, StoreError};
use crate::delivery::relay::Change;

/// What `status` shows about the relay.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RelayState {
    pub target: String,
    /// 1 while delivery is paused.
    pub paused: i64,
    /// The last fault's sentence (kept after it is over).
    pub message: Option<String>,
    /// When the last fault started.
    pub since: Option<i64>,
    /// When delivery last resumed.
    pub resumed_at: Option<i64>,
    /// How many times delivery paused.
    pub pauses: i64,
    pub updated_at: i64,
}

/// Stores a change of the breaker.
pub async fn record(
    db: &Db,
    target: &str,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let now = to_millis(now);
    match change {
        Change::Paused(fault) => {
            sqlx::query(
                "INSERT INTO relay_state (id, target, paused, message, since, resumed_at, pauses, updated_at)
                 VALUES (1, $1, 1, $2, $3, NULL, 1, $4)
                 ON CONFLICT (id) DO UPDATE SET target = excluded.target, paused = 1, message = excluded.message,
                     since = excluded.since, pauses = relay_state.pauses + 1, updated_at = excluded.updated_at",
            )
            .bind(target)
            .bind(&fault.message)
            .bind(to_millis(fault.since))
            .bind(now)
            .execute(&db.pool)
            .await?;
        }
        Change::Resumed { .. } => {
            sqlx::query(
                "UPDATE relay_state SET paused = 0, resumed_at = $1, updated_at = $1 WHERE id = 1",
            )
            .bind(now)
            .execute(&db.pool)
            .await?;
        }
    }
    Ok(())
}

pub async fn load(db: &Db) -> Result<Option<RelayState>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT target, paused, message, since, resumed_at, pauses, updated_at FROM relay_state WHERE id = 1",
    )
    .fetch_optional(&db.pool)
    .await?)
}
