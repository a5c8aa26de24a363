//! Delivery: messages are composed with lettre, queued durably in the outbox
//! (in the same transaction as the state change that caused them), and sent
//! by workers through the configured transport (SMTP pool or .eml files).

pub mod compose;

use crate::commands::Exit;
use crate::config::Settings;
use crate::store::Db;

/// Sends the queued messages of `edition` and waits until none is left due.
/// Until the delivery workers land, this reports what is queued.
pub async fn deliver_edition(db: &Db, settings: &Settings, edition: &str) -> anyhow::Result<Exit> {
    let _ = settings;
    let queued: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE edition = $1 AND state = 'queued'")
            .bind(edition)
            .fetch_one(&db.pool)
            .await?;
    eprintln!("{edition}: {queued} messages queued");
    Ok(Exit::Ok)
}
