//! Upstream feeds as a content source (`content.sources`): a publication whose
//! CMS already has an RSS or Atom feed points casewire at it, and each entry
//! becomes a case study. Polling uses conditional GET, a timeout, a size limit
//! and exponential backoff on errors; a failed poll keeps the last good entries.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::markdown;
use super::model::{CaseStudy, Origin};
use crate::config::{Settings, Source};
use crate::domain::Slug;
use crate::publisher::Command;

/// Largest upstream feed accepted.
pub const MAX_FEED_BYTES: usize = 5 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(20);
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("{url}: request failed: {source}")]
    Request { url: String, source: reqwest::Error },
    #[error("{url}: server answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url}: the feed is larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("{url}: not a valid feed: {message}")]
    Malformed { url: String, message: String },
}

/// Conditional-GET state of one source.
#[derive(Debug, Default, Clone)]
pub struct Validators {
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

pub enum Fetched {
    NotModified,
    Entries(Vec<CaseStudy>),
}

pub struct UpstreamPoller {
    pub source: Source,
    pub settings: Arc<Settings>,
    pub client: reqwest::Client,
    pub tx: mpsc::Sender<Command>,
}

impl UpstreamPoller {
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("casewire/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with static settings builds")
    }

    pub async fn run(self, shutdown: CancellationToken) {
        let mut validators = Validators::default();
        let mut failures = 0u32;
        loop {
            let delay = match fetch(&self.client, &self.source, &self.settings, &mut validators)
                .await
            {
                Ok(Fetched::NotModified) => {
                    failures = 0;
                    self.source.poll_interval
                }
                Ok(Fetched::Entries(entries)) => {
                    failures = 0;
                    tracing::debug!(feed = %crate::config::redact(self.source.feed.as_str()), entries = entries.len(), "upstream feed fetched");
                    let cmd = Command::Upstream {
                        feed: self.source.feed.clone(),
                        entries,
                    };
                    if self.tx.send(cmd).await.is_err() {
                        return;
                    }
                    self.source.poll_interval
                }
                Err(e) => {
                    failures += 1;
                    metrics::counter!("casewire_upstream_errors_total").increment(1);
                    let backoff = backoff(self.source.poll_interval, failures);
                    tracing::error!("upstream source {e}; keeping its last good entries, retrying in {backoff:?}");
                    backoff
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// 30 s doubled per consecutive failure, never above the poll interval's
/// multiple or an hour.
pub fn backoff(interval: Duration, failures: u32) -> Duration {
    let base = Duration::from_secs(30).min(interval);
    base.saturating_mul(1u32 << failures.min(12).saturating_sub(1))
        .min(MAX_BACKOFF)
}

/// One conditional GET of `source`; updates `validators` on success.
pub async fn fetch(
    client: &reqwest::Client,
    source: &Source,
    settings: &Settings,
    validators: &mut Validators,
) -> Result<Fetched, UpstreamError> {
    // Messages name the feed without its credentials; reqwest's errors drop the URL.
    let url = crate::config::redact(source.feed.as_str());
    let mut request = client.get(source.feed.clone()).header(
        reqwest::header::ACCEPT,
        "application/atom+xml, application/rss+xml, application/xml;q=0.9, text/xml;q=0.8, */*;q=0.1",
    );
    if let Some(etag) = &validators.etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    if let Some(lm) = &validators.last_modified {
        request = request.header(reqwest::header::IF_MODIFIED_SINCE, lm);
    }
    let mut response = request
        .send()
        .await
        .map_err(|source| UpstreamError::Request {
            url: url.clone(),
            source: source.without_url(),
        })?;
    if response.status() == reqwest::StatusCode::NOT_MODIFIED {
        return Ok(Fetched::NotModified);
    }
    if !response.status().is_success() {
        return Err(UpstreamError::Status {
            url,
            status: response.status(),
        });
    }
    if response
        .content_length()
        .is_some_and(|l| l as usize > MAX_FEED_BYTES)
    {
        return Err(UpstreamError::TooLarge {
            url,
            limit: MAX_FEED_BYTES,
        });
    }
    let header = |name| {
        response
            .headers()
            .get(name)
            .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
            .map(str::to_owned)
    };
    let etag = header(reqwest::header::ETAG);
    let last_modified = header(reqwest::header::LAST_MODIFIED);
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|source| UpstreamError::Request {
            url: url.clone(),
            source: source.without_url(),
        })?
    {
        if body.len() + chunk.len() > MAX_FEED_BYTES {
            return Err(UpstreamError::TooLarge {
                url,
                limit: MAX_FEED_BYTES,
            });
        }
        body.extend_from_slice(&chunk);
    }
    let entries = parse(&body, source, settings)
        .map_err(|message| UpstreamError::Malformed { url, message })?;
    // Only a feed that parsed may stop us from fetching it again.
    validators.etag = etag;
    validators.last_modified = last_modified;
    Ok(Fetched::Entries(entries))
}

/// Parses RSS 2.0 or Atom 1.0 into case studies.
pub fn parse(body: &[u8], source: &Source, settings: &Settings) -> Result<Vec<CaseStudy>, String> {
    let entries = match rss::Channel::read_from(body) {
        Ok(channel) => channel
            .items()
            .iter()
            .filter_map(|i| from_rss(i, source, settings))
            .collect(),
        Err(rss_err) => match atom_syndication::Feed::read_from(body) {
            Ok(feed) => feed
                .entries()
                .iter()
                .filter_map(|e| from_atom(e, source, settings))
                .collect(),
            Err(atom_err) => return Err(format!("neither RSS ({rss_err}) nor Atom ({atom_err})")),
        },
    };
    Ok(entries)
}

struct Entry<'a> {
    id: &'a str,
    link: Option<&'a str>,
    title: &'a str,
    published: Option<DateTime<Utc>>,
    updated: Option<DateTime<Utc>>,
    summary: Option<&'a str>,
    content: Option<&'a str>,
    categories: Vec<&'a str>,
    authors: Vec<String>,
}

fn from_rss(item: &rss::Item, source: &Source, settings: &Settings) -> Option<CaseStudy> {
    let id = item.guid().map(|g| g.value()).or(item.link())?;
    let dc_date = item
        .dublin_core_ext()
        .and_then(|d| d.dates().first())
        .map(String::as_str);
    let published = item
        .pub_date()
        .and_then(|d| {
            DateTime::parse_from_rfc2822(d)
                .ok()
                .map(|d| d.with_timezone(&Utc))
        })
        .or_else(|| dc_date.and_then(super::frontmatter::parse_date));
    let link = item
        .link()
        .or_else(|| item.guid().filter(|g| g.is_permalink()).map(|g| g.value()));
    build(
        Entry {
            id,
            link,
            title: item.title().unwrap_or(""),
            published,
            updated: None,
            summary: item.description(),
            content: item.content().or(item.description()),
            categories: item.categories().iter().map(|c| c.name()).collect(),
            authors: item
                .dublin_core_ext()
                .map(|d| d.creators().to_vec())
                .filter(|v| !v.is_empty())
                .or_else(|| item.author().map(|a| vec![a.to_owned()]))
                .unwrap_or_default(),
        },
        source,
        settings,
    )
}

fn from_atom(
    entry: &atom_syndication::Entry,
    source: &Source,
    settings: &Settings,
) -> Option<CaseStudy> {
    let link = entry
        .links()
        .iter()
        .find(|l| l.rel() == "alternate")
        .or(entry.links().first())
        .map(|l| l.href());
    build(
        Entry {
            id: entry.id(),
            link,
            title: entry.title().as_str(),
            published: entry.published().map(|d| d.with_timezone(&Utc)),
            updated: Some(entry.updated().with_timezone(&Utc)),
            summary: entry.summary().map(|s| s.as_str()),
            content: entry
                .content()
                .and_then(|c| c.value())
                .or(entry.summary().map(|s| s.as_str())),
            categories: entry
                .categories()
                .iter()
                .map(|c| c.label().unwrap_or(c.term()))
                .collect(),
            authors: entry
                .authors()
                .iter()
                .map(|a| a.name().to_owned())
                .collect(),
        },
        source,
        settings,
    )
}

fn build(e: Entry<'_>, source: &Source, settings: &Settings) -> Option<CaseStudy> {
    let title = e.title.trim();
    let Some(published) = e.published.or(e.updated) else {
        tracing::warn!(feed = %crate::config::redact(source.feed.as_str()), id = e.id, "upstream entry has no date; skipped");
        return None;
    };
    if title.is_empty() || e.id.is_empty() {
        tracing::warn!(feed = %crate::config::redact(source.feed.as_str()), id = e.id, "upstream entry has no title or id; skipped");
        return None;
    }
    // Only a web link goes into feeds and digests: `javascript:` or `data:`
    // would run or show whatever the upstream feed's author chose.
    let link = e
        .link
        .and_then(|l| match source.feed.join(l.trim()) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                tracing::warn!(feed = %crate::config::redact(source.feed.as_str()), id = e.id, link = l, "upstream entry's link is not an http(s) URL; dropped it");
                None
            }
        })
        .or_else(|| {
            url::Url::parse(e.id)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"))
        })
        .unwrap_or_else(|| source.feed.clone());
    let slug = upstream_slug(e.id, &link);
    let categories = match &source.category {
        Some(c) => vec![c.clone()],
        None => e
            .categories
            .iter()
            .filter_map(|name| {
                let slug = Slug::slugify(name)?;
                settings
                    .categories
                    .iter()
                    .find(|c| c.slug == slug || c.name.eq_ignore_ascii_case(name))
                    .map(|c| c.slug.clone())
            })
            .collect(),
    };
    if let Some(what) = [Some(e.title), e.summary, e.content]
        .into_iter()
        .flatten()
        .chain(e.authors.iter().map(String::as_str))
        .find_map(super::text::describe_forbidden)
    {
        tracing::warn!(feed = %crate::config::redact(source.feed.as_str()), id = e.id, "upstream entry holds characters XML forbids ({what}); dropped them");
    }
    let html = markdown::sanitize(e.content.unwrap_or(""), &link);
    let summary_source = e.summary.unwrap_or(e.content.unwrap_or(""));
    let text = ammonia::Builder::empty().clean(summary_source).to_string();
    let summary = markdown::truncate_words(&html_unescape(text.trim()), 300);
    Some(CaseStudy::with_html(
        slug,
        title.to_owned(),
        published,
        e.updated.filter(|u| *u > published),
        summary,
        categories,
        e.authors,
        link,
        Origin::Upstream {
            feed: source.feed.clone(),
        },
        html,
    ))
}

/// A slug that depends only on the entry's id: the last path segment of its
/// link when that makes a slug, plus a short hash of the id, so two entries
/// never collide and a retitled entry keeps its identity.
fn upstream_slug(id: &str, link: &url::Url) -> Slug {
    let hash = hex::encode(&Sha256::digest(id.as_bytes())[..4]);
    let stem = link
        .path_segments()
        .and_then(|mut s| s.rfind(|p| !p.is_empty()))
        .map(|s| s.trim_end_matches(".html").trim_end_matches(".htm"))
        .and_then(Slug::slugify)
        .map(|s| s.as_str().chars().take(80).collect::<String>())
        .unwrap_or_else(|| "entry".into());
    Slug::slugify(&format!("{stem}-{hash}")).expect("stem and hash make a slug")
}

/// ammonia's text output escapes markup; the summary is plain text again.
fn html_unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&amp;", "&")
}
