//! Bounces and complaints that come back after a message was accepted: DSNs
//! (RFC 3464) and feedback reports (ARF, RFC 5965) from the bounce mailbox,
//! ESP webhooks, and the policy that turns them into suppressions.
//!
//! Every source produces [`Event`]s; [`record`] stores each once (its key
//! makes the same DSN or webhook twice a no-op) and applies the policy in
//! the same transaction: a hard bounce suppresses the address, soft bounces
//! suppress after `soft_limit` within `soft_window`, a complaint
//! unsubscribes and suppresses at once.

pub mod config;
pub mod dsn;
pub mod imap;
pub mod rates;
pub mod verp;
pub mod webhooks;

use chrono::{DateTime, Utc};

use crate::domain::EmailAddress;
use crate::store::{Db, StoreError};

/// What came back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The address does not exist or refuses mail for good (5.x.x).
    Hard,
    /// A temporary failure after acceptance (4.x.x: mailbox full, ...).
    Soft,
    /// The reader reported the message as spam.
    Complaint,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hard => "hard",
            Kind::Soft => "soft",
            Kind::Complaint => "complaint",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "hard" => Some(Kind::Hard),
            "soft" => Some(Kind::Soft),
            "complaint" => Some(Kind::Complaint),
            _ => None,
        }
    }

    /// A bounce's kind from its RFC 3463 status class: 5 is hard, 4 soft.
    pub fn from_status(status: &str) -> Option<Self> {
        match status.trim().as_bytes().first() {
            Some(b'5') => Some(Kind::Hard),
            Some(b'4') => Some(Kind::Soft),
            _ => None,
        }
    }
}

/// One bounce or complaint for one address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Identifies the report: the same report seen twice has the same key.
    pub key: String,
    pub address: EmailAddress,
    pub kind: Kind,
    /// RFC 3463 status, e.g. `5.1.1`, when the report gives one.
    pub status: Option<String>,
    /// The remote server's words (Diagnostic-Code, the ESP's reason).
    pub diagnostic: String,
    /// `dsn`, `arf`, `ses`, `postmark`, `sendgrid`, `mailgun`.
    pub source: &'static str,
    /// The outbox row the report is about, when it could be told (VERP, Message-ID).
    pub outbox_id: Option<i64>,
    pub at: DateTime<Utc>,
}

/// What [`record`] did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Seen before: nothing changed.
    Duplicate,
    /// Stored; the address was not suppressed (a soft bounce under the limit).
    Recorded,
    /// Stored, and the address is now suppressed.
    Suppressed,
    /// Stored; the subscriber was unsubscribed and the address suppressed.
    Unsubscribed,
}

/// Stores `event` once and applies the bounce policy of `settings`.
pub async fn record(
    db: &Db,
    settings: &config::BounceSettings,
    event: &Event,
) -> Result<Applied, StoreError> {
    let applied = crate::store::bounces::record(db, settings, event).await?;
    let name = match applied {
        Applied::Duplicate => "duplicate",
        _ => event.kind.as_str(),
    };
    metrics::counter!("casewire_bounce_events_total", "kind" => name, "source" => event.source)
        .increment(1);
    match applied {
        Applied::Duplicate => {}
        Applied::Recorded => tracing::info!(
            address = %event.address, kind = event.kind.as_str(), source = event.source,
            status = event.status.as_deref().unwrap_or(""), "bounce recorded"
        ),
        Applied::Suppressed | Applied::Unsubscribed => tracing::warn!(
            address = %event.address, kind = event.kind.as_str(), source = event.source,
            status = event.status.as_deref().unwrap_or(""), diagnostic = %event.diagnostic,
            "address suppressed"
        ),
    }
    Ok(applied)
}

/// [`record`], then pauses the bounced message's edition when its run's
/// rates passed the edition's `pause_above` thresholds.
pub async fn record_and_check(
    db: &Db,
    settings: &crate::config::Settings,
    event: &Event,
) -> Result<Applied, StoreError> {
    let applied = record(db, &settings.bounces, event).await?;
    if applied == Applied::Duplicate {
        return Ok(applied);
    }
    let Some(outbox_id) = event.outbox_id else {
        return Ok(applied);
    };
    let Some((edition, window)) = crate::store::bounces::run_of(db, outbox_id).await? else {
        return Ok(applied);
    };
    let Some(limits) = settings
        .editions
        .iter()
        .find(|e| e.slug.as_str() == edition)
        .and_then(|e| e.pause_above.clone())
    else {
        return Ok(applied);
    };
    let rates = crate::store::bounces::rates_of_run(db, &edition, &window).await?;
    if rates.sent < limits.min_sent {
        return Ok(applied);
    }
    let over = [
        ("complaint", rates.complaint_rate(), limits.complaint_rate),
        ("bounce", rates.bounce_rate(), limits.bounce_rate),
    ]
    .into_iter()
    .find(|(_, rate, limit)| limit.is_some_and(|l| *rate > l));
    if let Some((what, rate, limit)) = over {
        let reason = format!(
            "{what} rate of the run {window} is {:.2}% ({} of {} sent), above pause_above.{what}_rate {:.2}%; look at the list and the content, then `casewire digest resume {edition}`",
            rate * 100.0,
            if what == "complaint" { rates.complaints } else { rates.bounces },
            rates.sent,
            limit.unwrap_or_default() * 100.0
        );
        let _turn = db.write_turn().await;
        let mut conn = db.pool.acquire().await?;
        crate::store::edition_pauses::pause(&mut conn, &edition, &reason, event.at).await?;
        tracing::error!(edition, "edition paused: {reason}");
        metrics::counter!("casewire_edition_pauses_total", "edition" => edition, "cause" => what)
            .increment(1);
    }
    Ok(applied)
}

/// A stable key from the parts that identify a report.
pub fn event_key(source: &str, parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("{source}:{}", hex::encode(&h.finalize()[..16]))
}
