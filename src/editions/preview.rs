//! A digest as one reader would receive it next, rendered without queueing
//! anything: for `casewire digest preview` and the console's preview. Links
//! are filled with a stand-in token (a preview must not carry a reader's
//! real manage link).

use std::sync::Arc;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};

use super::render::{self, Digest, DigestInput};
use crate::config::{Edition, Settings};
use crate::content::{CaseStudy, Catalog};
use crate::delivery::compose::{digest_vars, fill_links, DigestVars};
use crate::domain::{EmailAddress, Slug};
use crate::store::Db;

/// A rendered preview and whom it is for.
pub struct Preview {
    /// Subject, HTML and text, links filled with the stand-in token.
    pub digest: Digest,
    pub to: String,
    pub name: String,
    /// Set when nothing is new for the reader and the latest published
    /// case studies are shown instead.
    pub note: Option<String>,
    /// The headers and links a real send derives (with the stand-in token).
    pub vars: DigestVars,
}

/// What `edition`'s next digest holds for `subscriber` (an address; None: a
/// reader following everything, shown the latest case studies).
pub async fn preview(
    settings: &Settings,
    db: Option<&Db>,
    catalog: &Catalog,
    edition: &Edition,
    subscriber: Option<&str>,
    now: DateTime<Utc>,
) -> anyhow::Result<Preview> {
    let slug = edition.slug.as_str();
    let carries = |s: &CaseStudy| {
        edition.categories.is_empty() || s.categories.iter().any(|c| edition.categories.contains(c))
    };
    let (follows, studies, to, name) = match (subscriber, db) {
        (Some(email), Some(db)) => {
            let address = EmailAddress::parse(email)?;
            let mut conn = db.pool.acquire().await?;
            let Some(sub) =
                crate::store::subscribers::find_by_email(&mut conn, address.as_str()).await?
            else {
                bail!("no subscriber {email:?}")
            };
            drop(conn);
            let follows: Vec<Slug> = sub
                .categories
                .iter()
                .filter_map(|c| Slug::parse(c).ok())
                .collect();
            let cursor = crate::store::editions::subscriber_cursor(db, sub.id, slug).await?;
            // Not receiving this edition: nothing is new for them in it.
            let events = match cursor {
                Some(c) => crate::store::editions::events_between(db, c, i64::MAX).await?,
                None => Vec::new(),
            };
            let studies: Vec<Arc<CaseStudy>> = events
                .iter()
                .filter_map(|(_, s)| catalog.get(s).cloned())
                .filter(|s| {
                    carries(s)
                        && (follows.is_empty() || s.categories.iter().any(|c| follows.contains(c)))
                })
                .collect();
            (follows, studies, sub.email, sub.name)
        }
        (Some(_), None) => bail!("a subscriber's preview needs the database"),
        (None, _) => (
            Vec::new(),
            Vec::new(),
            "reader@example.com".to_owned(),
            String::new(),
        ),
    };
    let mut note = None;
    let studies = if studies.is_empty() {
        note = Some(
            "nothing new for this reader; previewing the latest published case studies instead"
                .to_owned(),
        );
        catalog
            .published(now)
            .filter(|s| {
                carries(s)
                    && (follows.is_empty() || s.categories.iter().any(|c| follows.contains(c)))
            })
            .take(edition.max_items + 2)
            .cloned()
            .collect()
    } else {
        studies
    };
    if studies.is_empty() {
        bail!("the {slug} edition has no case studies to show");
    }
    let env = crate::templates::environment(settings);
    let digest = render::render(
        &env,
        DigestInput {
            settings,
            edition,
            studies,
            follows: &follows,
            name: &name,
            // A preview belongs to no run, so it has no archive page.
            archive_url: None,
        },
    )?;
    // What a real send derives from a reader's token, with a stand-in token.
    let from: lettre::message::Mailbox = settings
        .mail
        .from
        .parse()
        .with_context(|| format!("[mail] from {:?}", settings.mail.from))?;
    let vars = digest_vars(settings, &from, slug, "PREVIEW");
    let fill = |s: &str| fill_links(s, &vars.unsubscribe_url, &vars.preferences_url);
    Ok(Preview {
        digest: Digest {
            subject: digest.subject.clone(),
            html: fill(&digest.html),
            text: fill(&digest.text),
        },
        to,
        name,
        note,
        vars,
    })
}
