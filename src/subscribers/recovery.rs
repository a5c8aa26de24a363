//! "Email me my link": a subscriber who lost every message with a manage
//! link asks for one by address. The answer never says whether the address
//! is known; a known, unsuppressed address gets at most one mail per
//! [`LINK_INTERVAL`], holding a fresh preferences link.

use chrono::{DateTime, Duration, Utc};

use super::{invalid, link, views, SubscriberError};
use crate::config::Settings;
use crate::delivery::compose::{compose, Draft, ExtraHeader};
use crate::domain::EmailAddress;
use crate::store::outbox::{enqueue, NewMessage};
use crate::store::subscribers::{self as store};
use crate::store::Db;

/// At most one manage-link mail per address per this period.
pub const LINK_INTERVAL: Duration = Duration::hours(1);

/// Queues a manage-link mail to `email` when it belongs to a subscriber,
/// is not suppressed and had none within [`LINK_INTERVAL`]. Ok(true) when a
/// mail was queued; callers answer the same either way.
pub async fn send_manage_link(
    settings: &Settings,
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
    // Still composed when queued (not yet through the send-time composer):
    // this message row holds the signed link until it is sent.
    let token = super::links::LinkKey::load_or_create(&settings.database.key_file)
        .map_err(|e| {
            SubscriberError::Store(crate::store::StoreError::Sql(sqlx::Error::Io(
                std::io::Error::other(e.to_string()),
            )))
        })?
        .manage(s.id, s.link_version);
    let ctx = minijinja::context! {
        name => s.name, email => s.email,
        preferences_url => views::url(&link(settings, &format!("preferences/{token}"))),
    };
    let text = views::render(settings, "email/manage_link.txt", ctx.clone())?;
    let html = views::render(settings, "email/manage_link.html", ctx)?;
    let subject = format!("Your link to manage {}", settings.site.title);
    let message = compose(
        settings,
        &Draft {
            to: &s.email,
            to_name: Some(&s.name),
            subject: &subject,
            text: &text,
            html: &html,
            headers: vec![ExtraHeader {
                name: "Auto-Submitted",
                value: "auto-generated".into(),
            }],
        },
    )?;
    let formatted = String::from_utf8_lossy(&message.formatted()).into_owned();
    let dedupe = format!("manage-link:{}:{}", s.id, now.timestamp_millis());
    enqueue(
        &mut *tx,
        &NewMessage {
            dedupe_key: &dedupe,
            kind: "confirmation",
            edition: None,
            subscriber_id: Some(s.id),
            recipient: &s.email,
            message: Some(&formatted),
            body_id: None,
            vars: &serde_json::json!({}),
            now,
        },
    )
    .await?;
    tx.commit().await?;
    Ok(true)
}
