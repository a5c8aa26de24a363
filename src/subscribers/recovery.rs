//! "Email me my link": a subscriber who lost every message with a manage
//! link asks for one by address. The answer never says whether the address
//! is known; a known, unsuppressed address gets at most one mail per
//! [`LINK_INTERVAL`], holding a fresh preferences link.

use chrono::{DateTime, Duration, Utc};

use super::{invalid, SubscriberError, Template};
use crate::domain::EmailAddress;
use crate::store::outbox::{enqueue, Kind, NewMessage};
use crate::store::subscribers::{self as store};
use crate::store::Db;

/// At most one manage-link mail per address per this period.
pub const LINK_INTERVAL: Duration = Duration::hours(1);

/// Queues a manage-link mail to `email` when it belongs to a subscriber,
/// is not suppressed and had none within [`LINK_INTERVAL`]. Ok(true) when a
/// mail was queued; callers answer the same either way.
pub async fn send_manage_link(
    db: &Db,
    email: &str,
    now: DateTime<Utc>,
) -> Result<bool, SubscriberError> {
    let email = EmailAddress::parse(email).map_err(|e| invalid("email", e.to_string()))?;
    let mut tx = store::begin_write(db).await?;
    let Some(s) = store::find_by_email(&mut tx, email.as_str()).await? else {
        return Ok(false);
    };
    if store::is_suppressed(&mut tx, email.as_str()).await?
        || !store::claim_link_mail(&mut tx, s.id, now, LINK_INTERVAL).await?
    {
        return Ok(false);
    }
    // The row holds no link: the composer renders it and signs the link
    // from the subscriber's current link version when it is sent.
    let vars = super::MailVars {
        template: Template::ManageLink,
        name: s.name.clone(),
        version: s.link_version,
        expires: None,
        items: Vec::new(),
    };
    let dedupe = format!("manage-link:{}:{}", s.id, now.timestamp_millis());
    enqueue(
        &mut *tx,
        &NewMessage {
            dedupe_key: &dedupe,
            kind: Kind::ManageLink,
            edition: None,
            subscriber_id: Some(s.id),
            recipient: &email,
            message: None,
            body_id: None,
            vars: &serde_json::to_value(&vars).expect("plain data"),
            now,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
