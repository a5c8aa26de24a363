//! Sign-up, confirmation, preferences, unsubscribe and erasure: the rules,
//! independent of HTTP. Each operation validates its input into domain types
//! first (nothing is stored on bad input), then does all of its writes in one
//! transaction, including the message it queues.

pub mod abuse;
pub mod import;
pub mod links;
pub mod recovery;
pub mod views;
pub mod welcome;

use chrono::{DateTime, Duration, Utc};
use sqlx::AnyConnection;

use crate::config::Settings;
use crate::delivery::compose::ComposeError;
use crate::domain::{EmailAddress, Slug, Token};
use crate::store::outbox::{enqueue, Kind, NewMessage};
use crate::store::subscribers::{
    self as store, NewSubscriber, Purpose, Resolved, Status, Subscriber, CONFIRM_TOKEN_TTL,
};
use crate::store::{Db, StoreError};
use links::{Claims, LinkKey};

/// At most one confirmation (or "already subscribed") mail per address per this period.
pub const CONFIRMATION_INTERVAL: Duration = Duration::hours(1);

/// Longest accepted name, in characters.
pub const MAX_NAME_CHARS: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum SubscriberError {
    /// The input cannot be accepted; the message says why and what would work.
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// The link's token is unknown, expired or for another purpose.
    #[error("this link is not valid: it may have expired or been replaced by a newer one")]
    UnknownToken,
    #[error("no subscriber {0}")]
    NotFound(String),
    #[error("{0} is already subscribed")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot compose the confirmation message: {0}")]
    Compose(#[from] ComposeError),
    #[error("cannot render template: {0:#}")]
    Template(#[from] minijinja::Error),
}

impl From<sqlx::Error> for SubscriberError {
    fn from(e: sqlx::Error) -> Self {
        SubscriberError::Store(StoreError::Sql(e))
    }
}

fn invalid(field: &'static str, message: impl Into<String>) -> SubscriberError {
    SubscriberError::Invalid {
        field,
        message: message.into(),
    }
}

/// What a sign-up form or API call asks for, as typed.
#[derive(Debug, Clone, Default)]
pub struct SignUp {
    pub email: String,
    pub name: String,
    pub categories: Vec<String>,
    pub editions: Vec<String>,
}

/// Validated categories and editions. An empty `categories` means all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choices {
    pub categories: Vec<String>,
    pub editions: Vec<String>,
}

/// A name: trimmed, at most 100 characters, no control characters and no
/// markup, template or SQL punctuation (`< > { } ; \ "` or `--`), so it is
/// safe in any header, page or log line.
pub fn parse_name(name: &str) -> Result<String, SubscriberError> {
    let name = name.trim();
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(invalid("name", "is longer than 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(invalid(
            "name",
            "contains control characters such as line breaks",
        ));
    }
    if name.contains(['<', '>', '{', '}', ';', '\\', '"', '%', '`']) || name.contains("--") {
        return Err(invalid(
            "name",
            "may not contain < > { } ; \\ \" % ` or -- (letters, spaces, apostrophes, dots and hyphens are fine)",
        ));
    }
    Ok(name.to_owned())
}

/// Checks categories and editions against the settings. Duplicates collapse;
/// no edition means the first configured edition.
pub fn parse_choices(
    settings: &Settings,
    categories: &[String],
    editions: &[String],
) -> Result<Choices, SubscriberError> {
    let known_cats = || {
        settings
            .categories
            .iter()
            .map(|c| c.slug.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cats = Vec::new();
    for c in categories.iter().filter(|c| !c.is_empty()) {
        let shown: String = c.chars().take(60).collect();
        match Slug::parse(c) {
            Ok(s) if settings.category(s.as_str()).is_some() => {
                if !cats.contains(&s.to_string()) {
                    cats.push(s.to_string());
                }
            }
            _ => {
                return Err(invalid(
                    "categories",
                    format!(
                        "{shown:?} is not a category (expected one of: {})",
                        known_cats()
                    ),
                ))
            }
        }
    }
    let mut eds = Vec::new();
    for e in editions.iter().filter(|e| !e.is_empty()) {
        let shown: String = e.chars().take(60).collect();
        match Slug::parse(e) {
            Ok(s) if settings.edition(s.as_str()).is_some() => {
                if !eds.contains(&s.to_string()) {
                    eds.push(s.to_string());
                }
            }
            _ => {
                return Err(invalid(
                    "edition",
                    format!(
                        "{shown:?} is not an edition (expected one of: {})",
                        settings
                            .editions
                            .iter()
                            .map(|e| e.slug.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ))
            }
        }
    }
    if eds.is_empty() {
        if let Some(first) = settings.editions.first() {
            eds.push(first.slug.to_string());
        }
    }
    cats.sort();
    Ok(Choices {
        categories: cats,
        editions: eds,
    })
}

/// A public URL below the site, e.g. `confirm/{token}`.
pub fn link(settings: &Settings, path: &str) -> String {
    settings
        .site
        .base_url
        .join(path)
        .map(|u| u.to_string())
        .unwrap_or_else(|_| format!("{}{path}", settings.site.base_url))
}

/// Handles a sign-up. A new or returning address becomes pending and gets a
/// confirmation link; a confirmed address is left as it is and gets a note
/// with a link to its preferences. Either way at most one mail per
/// [`CONFIRMATION_INTERVAL`], none to a suppressed address, and the caller
/// sees the same outcome, so the form cannot tell who is subscribed.
pub async fn sign_up(
    settings: &Settings,
    db: &Db,
    req: &SignUp,
    now: DateTime<Utc>,
) -> Result<(), SubscriberError> {
    let email = EmailAddress::parse(&req.email).map_err(|e| invalid("email", e.to_string()))?;
    let name = parse_name(&req.name)?;
    let choices = parse_choices(settings, &req.categories, &req.editions)?;

    let mut tx = store::begin_write(db).await?;
    let existing = match store::find_by_email(&mut tx, email.as_str()).await? {
        Some(s) => Some(s),
        None => {
            let new = NewSubscriber {
                email: email.as_str(),
                name: &name,
                status: Status::Pending,
                source: "form",
                categories: &choices.categories,
                editions: &choices.editions,
            };
            match store::insert(&mut tx, &new, now).await? {
                Some(_) => None,
                // Another request inserted it between our read and write.
                None => store::find_by_email(&mut tx, email.as_str()).await?,
            }
        }
    };
    let subscriber = match existing {
        Some(s) if s.status == Status::Confirmed => s,
        Some(s) => {
            store::reset_pending(&mut tx, s.id, &name).await?;
            store::set_choices(&mut tx, s.id, &choices.categories, &choices.editions).await?;
            store::find_by_id(&mut tx, s.id)
                .await?
                .ok_or_else(|| SubscriberError::NotFound(email.to_string()))?
        }
        None => store::find_by_email(&mut tx, email.as_str())
            .await?
            .ok_or_else(|| SubscriberError::NotFound(email.to_string()))?,
    };
    let recently = subscriber
        .last_confirmation_sent_at
        .is_some_and(|t| now - t < CONFIRMATION_INTERVAL);
    if !recently && !store::is_suppressed(&mut tx, email.as_str()).await? {
        queue_mail(&mut tx, &subscriber, now).await?;
        store::mark_confirmation_sent(&mut tx, subscriber.id, now).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// What a transactional outbox row keeps (`outbox.vars`): enough to render
/// the message at send time, and no secret. Its links are signed then.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct MailVars {
    /// Which message (templates `email/{template}.{txt,html}`).
    pub template: Template,
    pub name: String,
    /// The subscriber's link version when the mail was queued.
    pub version: u32,
    /// Confirmation links: when they stop working, in Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// Welcome mail: the case studies it shows (public content).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<WelcomeItem>,
}

/// The transactional messages, each with its own pair of templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Template {
    /// `email/confirm.*`: "please confirm", with the confirmation link.
    Confirm,
    /// `email/already.*`: a sign-up for a confirmed address.
    Already,
    /// `email/welcome.*`: after confirmation (`[mail] welcome`).
    Welcome,
    /// `email/manage_link.*`: the lost-link form's answer.
    ManageLink,
}

impl Template {
    pub const fn as_str(self) -> &'static str {
        match self {
            Template::Confirm => "confirm",
            Template::Already => "already",
            Template::Welcome => "welcome",
            Template::ManageLink => "manage_link",
        }
    }
}

impl std::fmt::Display for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.as_str())
    }
}

/// One case study in a welcome message.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct WelcomeItem {
    pub title: String,
    pub link: String,
    pub summary: String,
    pub published: String,
    #[serde(default)]
    pub root_cause: String,
}

/// A transactional message ready for the composer.
#[derive(Debug, Clone)]
pub struct RenderedMail {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// Queues the confirmation mail (pending) or the "already subscribed" note
/// (confirmed). The row holds [`MailVars`]; the message is rendered and its
/// link signed when it is sent ([`render_mail`]).
async fn queue_mail(
    conn: &mut AnyConnection,
    s: &Subscriber,
    now: DateTime<Utc>,
) -> Result<(), SubscriberError> {
    let (kind, vars) = if s.status == Status::Confirmed {
        (
            Kind::Already,
            MailVars {
                template: Template::Already,
                name: s.name.clone(),
                version: s.link_version,
                expires: None,
                items: Vec::new(),
            },
        )
    } else {
        (
            Kind::Confirmation,
            MailVars {
                template: Template::Confirm,
                name: s.name.clone(),
                version: s.link_version,
                expires: Some((now + CONFIRM_TOKEN_TTL).timestamp()),
                items: Vec::new(),
            },
        )
    };
    let email = EmailAddress::parse(&s.email).map_err(|e| invalid("email", e.to_string()))?;
    let dedupe = format!("confirm:{}:{}", s.id, now.timestamp_millis());
    enqueue(
        &mut *conn,
        &NewMessage {
            dedupe_key: &dedupe,
            kind,
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
    Ok(())
}

/// Renders a transactional row at send time: its templates, with the
/// confirmation or preferences link signed for `subscriber_id`.
pub fn render_mail(
    settings: &Settings,
    key: &LinkKey,
    subscriber_id: i64,
    email: &str,
    vars: &MailVars,
) -> Result<RenderedMail, SubscriberError> {
    let manage_links = || {
        let token = key.manage(subscriber_id, vars.version);
        (
            views::url(&link(settings, &format!("preferences/{token}"))),
            views::url(&link(settings, &format!("unsubscribe/{token}"))),
        )
    };
    let title = &settings.site.title;
    let (subject, ctx) = match vars.template {
        Template::Already => {
            let (preferences_url, _) = manage_links();
            (
                format!("You are already subscribed to {title}"),
                minijinja::context! { name => vars.name, email => email, preferences_url },
            )
        }
        Template::Confirm => {
            let token = key.sign(&Claims {
                subscriber_id,
                purpose: Purpose::Confirm,
                version: vars.version,
                expires: vars.expires,
            });
            (
                format!("Confirm your subscription to {title}"),
                minijinja::context! {
                    name => vars.name, email => email,
                    confirm_url => views::url(&link(settings, &format!("confirm/{token}"))),
                },
            )
        }
        Template::ManageLink => {
            let (preferences_url, _) = manage_links();
            (
                format!("Your link to manage {title}"),
                minijinja::context! { name => vars.name, email => email, preferences_url },
            )
        }
        Template::Welcome => {
            let (preferences_url, unsubscribe_url) = manage_links();
            let items: Vec<_> = vars
                .items
                .iter()
                .map(|i| {
                    minijinja::context! {
                        title => i.title, link => views::url(&i.link), summary => i.summary,
                        published => i.published, root_cause => i.root_cause,
                    }
                })
                .collect();
            (
                format!("Welcome to {title}"),
                minijinja::context! {
                    name => vars.name, email => email, items => items,
                    preferences_url, unsubscribe_url,
                },
            )
        }
    };
    let t = &vars.template;
    Ok(RenderedMail {
        subject,
        text: views::render(settings, &format!("email/{t}.txt"), ctx.clone())?,
        html: views::render(settings, &format!("email/{t}.html"), ctx)?,
    })
}

/// The subscriber a token belongs to (read-only: for GET pages).
pub async fn by_token(
    db: &Db,
    key: &LinkKey,
    token: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<Subscriber, SubscriberError> {
    let token = Token::parse(token).map_err(|_| SubscriberError::UnknownToken)?;
    let mut conn = db.pool.acquire().await?;
    let found = store::resolve_token(&mut conn, key, &token, purpose, now)
        .await?
        .ok_or(SubscriberError::UnknownToken)?;
    store::find_by_id(&mut conn, found.subscriber_id)
        .await?
        .ok_or(SubscriberError::UnknownToken)
}

/// Resolves a token for a change in `tx`; a legacy token is used up by it.
async fn resolve_for_change(
    tx: &mut AnyConnection,
    key: &LinkKey,
    token: &str,
    purpose: Purpose,
    now: DateTime<Utc>,
) -> Result<i64, SubscriberError> {
    let token = Token::parse(token).map_err(|_| SubscriberError::UnknownToken)?;
    let Resolved {
        subscriber_id,
        legacy,
    } = store::resolve_token(tx, key, &token, purpose, now)
        .await?
        .ok_or(SubscriberError::UnknownToken)?;
    if legacy {
        store::consume_legacy(tx, &token, now).await?;
    }
    Ok(subscriber_id)
}

/// Confirms the subscriber of a confirm token; confirming twice is fine.
/// Returns the subscriber and their manage token for the preferences link.
pub async fn confirm(
    db: &Db,
    key: &LinkKey,
    token: &str,
    now: DateTime<Utc>,
) -> Result<(Subscriber, Token), SubscriberError> {
    let mut tx = store::begin_write(db).await?;
    let id = resolve_for_change(&mut tx, key, token, Purpose::Confirm, now).await?;
    store::confirm(&mut tx, id, now).await?;
    let s = store::find_by_id(&mut tx, id)
        .await?
        .ok_or(SubscriberError::UnknownToken)?;
    if s.status != Status::Confirmed {
        // Unsubscribed since: an old confirmation link does not re-subscribe.
        return Err(SubscriberError::UnknownToken);
    }
    tx.commit().await?;
    let manage = key.manage(id, s.link_version);
    Ok((s, manage))
}

/// Saves new choices for the subscriber of a manage token.
pub async fn update_preferences(
    settings: &Settings,
    db: &Db,
    key: &LinkKey,
    token: &str,
    categories: &[String],
    editions: &[String],
    now: DateTime<Utc>,
) -> Result<Subscriber, SubscriberError> {
    Token::parse(token).map_err(|_| SubscriberError::UnknownToken)?;
    let choices = parse_choices(settings, categories, editions)?;
    let mut tx = store::begin_write(db).await?;
    let id = resolve_for_change(&mut tx, key, token, Purpose::Manage, now).await?;
    store::set_choices(&mut tx, id, &choices.categories, &choices.editions).await?;
    let s = store::find_by_id(&mut tx, id)
        .await?
        .ok_or(SubscriberError::UnknownToken)?;
    tx.commit().await?;
    Ok(s)
}

/// Unsubscribes the subscriber of a manage token. The change has committed
/// when this returns; delivery re-checks the status before every send
/// (DESIGN.md invariant 7). Unsubscribing revokes every earlier link, yet
/// repeating it with the link that did it answers as before (RFC 8058
/// clients may POST twice): a genuine signed link of an unsubscribed
/// subscriber changes nothing and reveals nothing new.
pub async fn unsubscribe(
    db: &Db,
    key: &LinkKey,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Subscriber, SubscriberError> {
    let mut tx = store::begin_write(db).await?;
    let id = match resolve_for_change(&mut tx, key, token, Purpose::Manage, now).await {
        Ok(id) => id,
        Err(SubscriberError::UnknownToken) => {
            let claims = Token::parse(token)
                .ok()
                .and_then(|t| key.check(&t, Purpose::Manage, now))
                .ok_or(SubscriberError::UnknownToken)?;
            return match store::find_by_id(&mut tx, claims.subscriber_id).await? {
                Some(s) if s.status == Status::Unsubscribed => Ok(s),
                _ => Err(SubscriberError::UnknownToken),
            };
        }
        Err(e) => return Err(e),
    };
    store::unsubscribe(&mut tx, id, now).await?;
    let s = store::find_by_id(&mut tx, id)
        .await?
        .ok_or(SubscriberError::UnknownToken)?;
    tx.commit().await?;
    metrics::counter!("casewire_unsubscribes_total").increment(1);
    Ok(s)
}

/// Adds a subscriber directly (operator: CLI or admin API), confirmed unless
/// `status` says otherwise. No mail is sent.
pub async fn add(
    settings: &Settings,
    db: &Db,
    req: &SignUp,
    status: Status,
    source: &str,
    now: DateTime<Utc>,
) -> Result<Subscriber, SubscriberError> {
    let email = EmailAddress::parse(&req.email).map_err(|e| invalid("email", e.to_string()))?;
    let name = parse_name(&req.name)?;
    let choices = parse_choices(settings, &req.categories, &req.editions)?;
    let mut tx = store::begin_write(db).await?;
    let new = NewSubscriber {
        email: email.as_str(),
        name: &name,
        status,
        source,
        categories: &choices.categories,
        editions: &choices.editions,
    };
    let id = store::insert(&mut tx, &new, now)
        .await?
        .ok_or_else(|| SubscriberError::Exists(email.to_string()))?;
    let s = store::find_by_id(&mut tx, id)
        .await?
        .ok_or_else(|| SubscriberError::NotFound(email.to_string()))?;
    tx.commit().await?;
    Ok(s)
}

/// Finds a subscriber by id (all digits) or address.
pub async fn find(db: &Db, key: &str) -> Result<Subscriber, SubscriberError> {
    let mut conn = db.pool.acquire().await?;
    let found = if !key.is_empty() && key.len() < 19 && key.bytes().all(|b| b.is_ascii_digit()) {
        store::find_by_id(&mut conn, key.parse().unwrap_or(-1)).await?
    } else {
        let email = EmailAddress::parse(key).map_err(|e| invalid("email", e.to_string()))?;
        store::find_by_email(&mut conn, email.as_str()).await?
    };
    found.ok_or_else(|| SubscriberError::NotFound(key.chars().take(80).collect()))
}

/// Erases a subscriber's personal data (see [`store::erase`]).
pub async fn erase(db: &Db, key: &str) -> Result<Subscriber, SubscriberError> {
    let s = find(db, key).await?;
    let mut tx = store::begin_write(db).await?;
    store::erase(&mut tx, s.id).await?;
    tx.commit().await?;
    Ok(s)
}

/// "Log out everywhere": every confirmation, preferences and unsubscribe
/// link sent to this subscriber so far stops working. Digests and mail
/// queued later carry fresh links (they are signed at send time).
pub async fn revoke_links(db: &Db, key: &str) -> Result<Subscriber, SubscriberError> {
    let s = find(db, key).await?;
    let mut tx = store::begin_write(db).await?;
    store::revoke_links(&mut tx, s.id).await?;
    tx.commit().await?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_control_markup_and_sql_punctuation() {
        assert_eq!(
            parse_name("  Ada O'Brien-Lovelace ").unwrap(),
            "Ada O'Brien-Lovelace"
        );
        for bad in [
            "Ada\r\nBcc: x@example.com",
            "{{ 7*7 }}",
            "{% include 'x' %}",
            "<script>alert(1)</script>",
            "'; DROP TABLE subscribers; --",
            "' OR 1=1 --",
            &"x".repeat(101),
        ] {
            assert!(parse_name(bad).is_err(), "accepted {bad:?}");
        }
    }
}
