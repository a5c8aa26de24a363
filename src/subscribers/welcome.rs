//! The optional welcome message after confirmation (`[mail] welcome`): the
//! latest `welcome_items` case studies of the subscriber's categories, so a
//! new reader sees at once what they signed up for. At most one per
//! confirmation: the outbox dedupe key holds the confirmation time.

use chrono::{DateTime, Utc};

use super::{invalid, MailVars, SubscriberError, Template, WelcomeItem};
use crate::config::Settings;
use crate::content::{CaseStudy, Catalog};
use crate::domain::EmailAddress;
use crate::store::outbox::{enqueue, Kind, NewMessage};
use crate::store::subscribers::{self as store, Subscriber};
use crate::store::Db;

/// The newest `n` published case studies in `categories` (empty: all).
pub fn latest<'a>(
    catalog: &'a Catalog,
    categories: &[String],
    n: usize,
    now: DateTime<Utc>,
) -> Vec<&'a std::sync::Arc<CaseStudy>> {
    let mut found: Vec<_> = catalog
        .published(now)
        .filter(|s| {
            categories.is_empty()
                || s.categories
                    .iter()
                    .any(|c| categories.iter().any(|k| k == c.as_str()))
        })
        .collect();
    found.sort_by(|a, b| b.published.cmp(&a.published).then(a.slug.cmp(&b.slug)));
    found.truncate(n);
    found
}

/// Queues the welcome message for a subscriber who just confirmed. Does
/// nothing when welcome mail is off, the address is suppressed, or this
/// confirmation was welcomed. The row keeps the chosen case studies (public
/// content) and no link: the composer renders it and signs its links when
/// it is sent.
pub async fn queue_welcome(
    settings: &Settings,
    db: &Db,
    catalog: &Catalog,
    s: &Subscriber,
    now: DateTime<Utc>,
) -> Result<bool, SubscriberError> {
    if !settings.mail.welcome {
        return Ok(false);
    }
    let email = EmailAddress::parse(&s.email).map_err(|e| invalid("email", e.to_string()))?;
    let items = latest(catalog, &s.categories, settings.mail.welcome_items, now)
        .into_iter()
        .map(|c| WelcomeItem {
            title: c.title.clone(),
            link: c.link.as_str().to_owned(),
            summary: c.summary.clone(),
            published: c.published.format("%Y-%m-%d").to_string(),
            root_cause: c
                .section(settings, "root_cause")
                .map(|r| r.first_line(200))
                .unwrap_or_default(),
        })
        .collect();
    let vars = MailVars {
        template: Template::Welcome,
        name: s.name.clone(),
        version: s.link_version,
        expires: None,
        items,
    };
    let confirmed = s.confirmed_at.unwrap_or(now).timestamp_millis();
    let dedupe = format!("welcome:{}:{confirmed}", s.id);
    let mut tx = store::begin_write(db).await?;
    if store::is_suppressed(&mut tx, &s.email).await? {
        return Ok(false);
    }
    enqueue(
        &mut *tx,
        &NewMessage {
            dedupe_key: &dedupe,
            kind: Kind::Welcome,
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
