//! Bounce and complaint events, the suppressions they cause, and the rates
//! mailbox providers judge a sender by.

use chrono::{DateTime, Utc};
use sqlx::Row;

use super::{from_millis, to_millis, Db, StoreError};
use crate::bounces::config::BounceSettings;
use crate::bounces::{Applied, Event, Kind};

/// Stores `event` unless its key was seen, and applies the policy, in one
/// write transaction.
pub async fn record(
    db: &Db,
    settings: &BounceSettings,
    event: &Event,
) -> Result<Applied, StoreError> {
    let _turn = db.write_turn().await;
    let mut tx = db.pool.begin().await?;
    let email = event.address.as_str();
    let now = to_millis(event.at);
    // The run the bounced message belonged to, from its outbox row.
    let (edition, window) = match event.outbox_id {
        Some(id) => {
            let row = sqlx::query("SELECT edition, dedupe_key FROM outbox WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some(r) => {
                    let edition: Option<String> = r.try_get(0)?;
                    let key: String = r.try_get(1)?;
                    (edition, window_of(&key))
                }
                None => (None, None),
            }
        }
        None => (None, None),
    };
    let inserted = sqlx::query(
        "INSERT INTO bounce_events (event_key, email, kind, status, diagnostic, source, outbox_id, edition, window_key, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (event_key) DO NOTHING",
    )
    .bind(&event.key)
    .bind(email)
    .bind(event.kind.as_str())
    .bind(event.status.as_deref())
    .bind(&event.diagnostic)
    .bind(event.source)
    .bind(event.outbox_id)
    .bind(edition.as_deref())
    .bind(window.as_deref())
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if inserted == 0 {
        tx.commit().await?;
        return Ok(Applied::Duplicate);
    }
    let code = event.status.as_deref().unwrap_or("no status");
    let applied = match event.kind {
        Kind::Hard => {
            let reason = format!(
                "hard bounce ({}): {code} {}",
                event.source, event.diagnostic
            );
            super::subscribers::suppress(&mut tx, email, reason.trim(), event.at).await?;
            Applied::Suppressed
        }
        Kind::Soft => {
            let since = now - settings.soft_window.as_millis() as i64;
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM bounce_events WHERE email = $1 AND kind = 'soft' AND created_at > $2",
            )
            .bind(email)
            .bind(since)
            .fetch_one(&mut *tx)
            .await?;
            if n >= i64::from(settings.soft_limit) {
                let reason = format!(
                    "{n} soft bounces in {} days, the last: {code} {}",
                    settings.soft_window.as_secs() / 86_400,
                    event.diagnostic
                );
                super::subscribers::suppress(&mut tx, email, reason.trim(), event.at).await?;
                Applied::Suppressed
            } else {
                Applied::Recorded
            }
        }
        Kind::Complaint => {
            let reason = format!(
                "complaint ({}): the reader reported a message as spam",
                event.source
            );
            super::subscribers::suppress(&mut tx, email, &reason, event.at).await?;
            if let Some(s) = super::subscribers::find_by_email(&mut tx, email).await? {
                super::subscribers::unsubscribe(&mut tx, s.id, event.at).await?;
            }
            Applied::Unsubscribed
        }
    };
    tx.commit().await?;
    Ok(applied)
}

/// The window of a digest row's dedupe key `digest:{edition}:{window}:{subscriber}`.
fn window_of(dedupe_key: &str) -> Option<String> {
    let rest = dedupe_key.strip_prefix("digest:")?;
    let (_, rest) = rest.split_once(':')?;
    let (window, _) = rest.rsplit_once(':')?;
    Some(window.to_owned())
}

/// A stored event, for `bounces list` and the console.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredEvent {
    pub email: String,
    pub kind: String,
    pub status: Option<String>,
    pub diagnostic: String,
    pub source: String,
    pub edition: Option<String>,
    pub at: DateTime<Utc>,
}

/// Events since `since` (newest first), optionally of one kind.
pub async fn list(
    db: &Db,
    since: Option<DateTime<Utc>>,
    kind: Option<Kind>,
    limit: i64,
) -> Result<Vec<StoredEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT email, kind, status, diagnostic, source, edition, created_at FROM bounce_events \
         WHERE created_at >= $1 AND ($2 = '' OR kind = $2) ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(since.map(to_millis).unwrap_or(0))
    .bind(kind.map(Kind::as_str).unwrap_or(""))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(StoredEvent {
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

/// Bounces and complaints against messages sent, over a period or a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize)]
pub struct Rates {
    pub sent: i64,
    pub bounces: i64,
    pub complaints: i64,
}

impl Rates {
    pub fn bounce_rate(&self) -> f64 {
        self.bounces as f64 / self.sent.max(1) as f64
    }
    pub fn complaint_rate(&self) -> f64 {
        self.complaints as f64 / self.sent.max(1) as f64
    }
}

/// Rates over messages sent since `since`, to the hour (from the hourly
/// counters: see [`super::tallies::sent_since`]), with bounces and
/// complaints counted by when they arrived.
pub async fn rates_since(db: &Db, since: DateTime<Utc>) -> Result<Rates, StoreError> {
    let sent = super::tallies::sent_since(db, since).await?;
    let since = to_millis(since);
    let (bounces, complaints) = event_counts(
        db,
        "SELECT kind, COUNT(*) FROM bounce_events WHERE created_at >= $1 GROUP BY kind",
        |q| q.bind(since),
    )
    .await?;
    Ok(Rates {
        sent,
        bounces,
        complaints,
    })
}

/// Rates of one edition run (its window).
pub async fn rates_of_run(db: &Db, edition: &str, window: &str) -> Result<Rates, StoreError> {
    let sent: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM outbox WHERE state = 'sent' AND dedupe_key LIKE $1",
    )
    .bind(format!("digest:{edition}:{window}:%"))
    .fetch_one(&db.pool)
    .await?;
    let (bounces, complaints) = event_counts(
        db,
        "SELECT b.kind, COUNT(*) FROM bounce_events b JOIN outbox o ON o.id = b.outbox_id WHERE o.dedupe_key LIKE $1 GROUP BY b.kind",
        |q| q.bind(format!("digest:{edition}:{window}:%")),
    )
    .await?;
    Ok(Rates {
        sent,
        bounces,
        complaints,
    })
}

async fn event_counts<'q>(
    db: &Db,
    sql: &'q str,
    bind: impl FnOnce(
        sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
) -> Result<(i64, i64), StoreError> {
    let rows = bind(sqlx::query(sql)).fetch_all(&db.pool).await?;
    let (mut bounces, mut complaints) = (0, 0);
    for r in rows {
        let kind: String = r.try_get(0)?;
        let n: i64 = r.try_get(1)?;
        match Kind::parse(&kind) {
            Some(Kind::Complaint) => complaints += n,
            Some(_) => bounces += n,
            None => {}
        }
    }
    Ok((bounces, complaints))
}

/// Suppressions, newest first, optionally those whose address contains `search`.
pub async fn suppressions(
    db: &Db,
    search: Option<&str>,
    limit: i64,
) -> Result<Vec<(String, String, DateTime<Utc>)>, StoreError> {
    let rows = sqlx::query(
        "SELECT email, reason, created_at FROM suppressions WHERE ($1 = '' OR email LIKE $2) ORDER BY created_at DESC, email LIMIT $3",
    )
    .bind(search.unwrap_or(""))
    .bind(format!("%{}%", search.unwrap_or("").to_lowercase()))
    .bind(limit)
    .fetch_all(&db.pool)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, from_millis(r.try_get(2)?))))
        .collect()
}

/// Removes `email` from the suppression list; returns whether it was there.
pub async fn unsuppress(db: &Db, email: &str) -> Result<bool, StoreError> {
    let _turn = db.write_turn().await;
    Ok(sqlx::query("DELETE FROM suppressions WHERE email = $1")
        .bind(email)
        .execute(&db.pool)
        .await?
        .rows_affected()
        > 0)
}

/// The edition and window of a digest row.
pub async fn run_of(db: &Db, outbox_id: i64) -> Result<Option<(String, String)>, StoreError> {
    let key: Option<String> = sqlx::query_scalar("SELECT dedupe_key FROM outbox WHERE id = $1")
        .bind(outbox_id)
        .fetch_optional(&db.pool)
        .await?;
    Ok(key.and_then(|k| {
        let window = window_of(&k)?;
        let edition = k.strip_prefix("digest:")?.split_once(':')?.0.to_owned();
        Some((edition, window))
    }))
}

/// The recipient of outbox row `id`, if the row exists.
pub async fn outbox_recipient(db: &Db, id: i64) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT recipient FROM outbox WHERE id = $1")
            .bind(id)
            .fetch_optional(&db.pool)
            .await?,
    )
}

/// Whether `email` is a subscriber or was sent mail: a report about any
/// other address is not about casewire's mail.
pub async fn is_known_recipient(db: &Db, email: &str) -> Result<bool, StoreError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM subscribers WHERE email = $1) + (SELECT COUNT(*) FROM outbox WHERE recipient = $1 AND state = 'sent')",
    )
    .bind(email)
    .fetch_one(&db.pool)
    .await?;
    Ok(n > 0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_window_of_a_digest_row() {
        assert_eq!(
            super::window_of("digest:weekly:cron:2026-11-23T07:00:00Z:42").as_deref(),
            Some("cron:2026-11-23T07:00:00Z")
        );
        assert_eq!(super::window_of("confirm:42:1763700000000"), None);
    }
}
