//! The optional welcome message after confirmation (`[mail] welcome`): the
//! latest `welcome_items` case studies of the subscriber's categories, so a
//! new reader sees at once what they signed up for. At most one per
//! confirmation: the outbox dedupe key holds the confirmation time.

use chrono::{DateTime, Utc};

use super::{link, views, SubscriberError};
use crate::config::Settings;
use crate::content::{CaseStudy, Catalog};
use crate::delivery::compose::{compose, Draft, ExtraHeader};
use crate::domain::Token;
use crate::store::outbox::{enqueue, NewMessage};
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

/// Queues the welcome message for a subscriber who just confirmed; `manage`
/// is the manage token confirmation issued. Does nothing when welcome mail
/// is off, the address is suppressed, or this confirmation was welcomed.
pub async fn queue_welcome(
    settings: &Settings,
    db: &Db,
    catalog: &Catalog,
    s: &Subscriber,
    manage: &Token,
    now: DateTime<Utc>,
) -> Result<bool, SubscriberError> {
    if !settings.mail.welcome {
        return Ok(false);
    }
    let items: Vec<_> = latest(catalog, &s.categories, settings.mail.welcome_items, now)
        .into_iter()
        .map(|c| {
            minijinja::context! {
                title => c.title,
                link => views::url(c.link.as_str()),
                summary => c.summary,
                published => c.published.format("%Y-%m-%d").to_string(),
                root_cause => c.section("root_cause").map(|r| r.first_line(200)).unwrap_or_default(),
            }
        })
        .collect();
    let ctx = minijinja::context! {
        name => s.name, email => s.email, items => items,
        preferences_url => views::url(&link(settings, &format!("preferences/{manage}"))),
        unsubscribe_url => views::url(&link(settings, &format!("unsubscribe/{manage}"))),
    };
    let text = views::render(settings, "email/welcome.txt", ctx.clone())?;
    let html = views::render(settings, "email/welcome.html", ctx)?;
    let subject = format!("Welcome to {}", settings.site.title);
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
