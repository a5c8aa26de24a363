//! Feed history (RFC 5005 section 4, "Archived Feeds"): besides its current
//! feed, each scope's case studies are split into archive documents of
//! `feeds.archive_page_size` entries, numbered from the oldest, at
//! `archive/{scope}/{n}.xml` (Atom) and `archive/{scope}/{n}.json` (JSON Feed
//! 1.1, paged with `next_url`). `{scope}` is `all` or a category slug.
//!
//! Page `n` holds the case studies `(n-1)·size+1 ..= n·size` in publication
//! order (oldest first), so a page that is full never changes when newer
//! ones arrive; only the last page grows, and there always is one (empty
//! when the count is a multiple of the size), so a full page's
//! `next-archive` link never has to be added later.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use super::{Format, Scope};
use crate::config::Settings;
use crate::content::{CaseStudy, Catalog};

/// Folder of the archive documents below the feeds root.
pub const DIR: &str = "archive";

/// A full page is cached this long (and marked immutable); the growing
/// last page like the current feeds.
pub const FULL_PAGE_CACHE_CONTROL: &str = "public, max-age=31536000, immutable";

/// How a feed document sits in its scope's history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// `Some(n)` for archive document `n`; None for the current feed.
    pub page: Option<usize>,
    /// Whether the page is full (and so will not change).
    pub full: bool,
    /// Atom `prev-archive`: the next older archive document.
    pub prev_archive: Option<url::Url>,
    /// Atom `next-archive`: the next newer archive document.
    pub next_archive: Option<url::Url>,
    /// JSON Feed `next_url`: the next older page of JSON items.
    pub next_url: Option<url::Url>,
}

/// The path segment of a scope in archive URLs.
pub fn scope_name(scope: &Scope) -> &str {
    match scope {
        Scope::All => "all",
        Scope::Category(slug) => slug.as_str(),
    }
}

/// `archive/{scope}/{n}.xml` or `.json`.
pub fn page_path(scope: &Scope, n: usize, format: Format) -> String {
    let ext = match format {
        Format::Json => "json",
        Format::Rss | Format::Atom => "xml",
    };
    format!("{DIR}/{}/{n}.{ext}", scope_name(scope))
}

/// How many archive documents a scope of `count` case studies has: every
/// full page plus the one being filled.
pub fn page_count(count: usize, size: usize) -> usize {
    count / size.max(1) + 1
}

/// The newest archive document that holds anything: what the current feed
/// links as `prev-archive`. None for an empty scope.
pub fn newest_filled_page(count: usize, size: usize) -> Option<usize> {
    let size = size.max(1);
    (count > 0).then(|| count.div_ceil(size))
}

/// The history links of a scope's current feed.
pub fn current(settings: &Settings, scope: &Scope, count: usize) -> History {
    let newest = newest_filled_page(count, settings.feeds.archive_page_size);
    History {
        page: None,
        full: false,
        prev_archive: newest.map(|n| settings.feed_url(&page_path(scope, n, Format::Atom))),
        next_archive: None,
        next_url: newest.map(|n| settings.feed_url(&page_path(scope, n, Format::Json))),
    }
}

/// One archive document, before rendering.
pub struct Page<'a> {
    pub n: usize,
    /// Newest first, as in the current feed.
    pub items: Vec<&'a Arc<CaseStudy>>,
    pub history: History,
    pub updated: DateTime<Utc>,
}

impl Page<'_> {
    /// Of the page's entries, for [`Page::fingerprint_with`]: each case study's
    /// slug, content hash and dates, hashed in one pass (a rebuild checks
    /// every page of the scopes it touches, a few hundred, each twice).
    pub fn items_digest(&self) -> [u8; 32] {
        let mut bytes = Vec::with_capacity(self.items.len() * 128);
        for s in &self.items {
            bytes.extend_from_slice(s.slug.as_str().as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(s.hash.as_bytes());
            bytes.extend_from_slice(&s.published.timestamp_millis().to_le_bytes());
            bytes.extend_from_slice(&s.updated_or_published().timestamp_millis().to_le_bytes());
        }
        Sha256::digest(&bytes).into()
    }

    /// Of the page in `format`, given its [`Page::items_digest`]: changes
    /// whenever the rendered page could (settings aside, which rebuild
    /// everything): its place, its fullness and each entry's bytes.
    pub fn fingerprint_with(&self, items: &[u8; 32], format: Format) -> [u8; 16] {
        let mut h = Sha256::new();
        h.update(format!("{format:?}/{}/{}/", self.n, self.history.full));
        h.update(items);
        let mut out = [0u8; 16];
        out.copy_from_slice(&h.finalize()[..16]);
        out
    }
}

/// Every archive document of `scope` at `now`, oldest first.
pub fn pages<'a>(
    settings: &Settings,
    catalog: &'a Catalog,
    scope: &Scope,
    now: DateTime<Utc>,
) -> Vec<Page<'a>> {
    let size = settings.feeds.archive_page_size.max(1);
    // The catalog lists newest first; pages count from the oldest.
    let mut oldest_first: Vec<&'a Arc<CaseStudy>> = catalog
        .published(now)
        .filter(|s| scope.matches(s))
        .collect();
    oldest_first.reverse();
    let count = page_count(oldest_first.len(), size);
    let url = |n: usize, f: Format| settings.feed_url(&page_path(scope, n, f));
    (1..=count)
        .map(|n| {
            let start = (n - 1) * size;
            let end = (n * size).min(oldest_first.len());
            let mut items: Vec<&'a Arc<CaseStudy>> = oldest_first[start..end].to_vec();
            items.reverse();
            let full = items.len() == size;
            let updated = items
                .iter()
                .map(|s| s.updated_or_published())
                .max()
                .unwrap_or_else(|| Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap());
            Page {
                n,
                items,
                history: History {
                    page: Some(n),
                    full,
                    prev_archive: (n > 1).then(|| url(n - 1, Format::Atom)),
                    // A full page always has a successor (the last page is never full).
                    next_archive: full.then(|| url(n + 1, Format::Atom)),
                    next_url: (n > 1).then(|| url(n - 1, Format::Json)),
                },
                updated,
            }
        })
        .collect()
}

/// Whether `path` (below the feeds root) is an archive document of any scope
/// (a category named `archive` has its current feeds at `archive/rss.xml`).
pub fn is_archive_path(path: &str) -> bool {
    path.strip_prefix(DIR)
        .and_then(|p| p.strip_prefix('/'))
        .is_some_and(|p| p.matches('/').count() == 1)
}

/// Whether `path` (below the feeds root) is an archive document of `scope`.
pub fn is_page_of(path: &str, scope: &Scope) -> bool {
    path.strip_prefix(DIR)
        .and_then(|p| p.strip_prefix('/'))
        .and_then(|p| p.strip_prefix(scope_name(scope)))
        .and_then(|p| p.strip_prefix('/'))
        .is_some_and(|p| !p.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_count_from_the_oldest_and_the_last_is_never_full() {
        assert_eq!(page_count(0, 10), 1);
        assert_eq!(page_count(9, 10), 1);
        assert_eq!(page_count(10, 10), 2);
        assert_eq!(page_count(25, 10), 3);
        assert_eq!(newest_filled_page(0, 10), None);
        assert_eq!(newest_filled_page(10, 10), Some(1));
        assert_eq!(newest_filled_page(11, 10), Some(2));
    }

    #[test]
    fn page_paths_name_the_scope() {
        let cat = Scope::Category(crate::domain::Slug::parse("databases").unwrap());
        assert_eq!(page_path(&Scope::All, 3, Format::Atom), "archive/all/3.xml");
        assert_eq!(page_path(&cat, 1, Format::Json), "archive/databases/1.json");
        assert!(is_page_of("archive/databases/1.json", &cat));
        assert!(!is_page_of("archive/all/1.json", &cat));
        assert!(!is_page_of("databases/atom.xml", &cat));
        assert!(is_archive_path("archive/all/2.xml"));
        assert!(!is_archive_path("archive/rss.xml"));
    }
}
