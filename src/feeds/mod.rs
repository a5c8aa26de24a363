//! Feeds: one view model per scope (everything, and each category), written
//! by three writers (RSS 2.0, Atom 1.0, JSON Feed 1.1), then saved atomically
//! to `feeds.out_dir` and served from memory by the daemon.
//!
//! Everything a feed says derives from the catalog alone (no "now" in the
//! output), so an unchanged catalog gives byte-identical feeds: files are not
//! rewritten, and ETags stay valid for aggregators.

pub mod atom;
pub mod cache;
pub mod json;
pub mod output;
pub mod rss;
pub mod websub;

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use crate::config::{Category, Settings};
use crate::content::{CaseStudy, Catalog};
use crate::domain::Slug;

pub const GENERATOR: &str = "casewire";

/// Which case studies a feed holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    All,
    Category(Slug),
}

impl Scope {
    /// Folder of the scope's files below the feeds root ("" for everything).
    pub fn dir(&self) -> String {
        match self {
            Scope::All => String::new(),
            Scope::Category(slug) => format!("{slug}/"),
        }
    }

    pub fn matches(&self, study: &CaseStudy) -> bool {
        match self {
            Scope::All => true,
            Scope::Category(slug) => study.categories.contains(slug),
        }
    }

    /// Every scope the settings define.
    pub fn all(settings: &Settings) -> Vec<Scope> {
        std::iter::once(Scope::All)
            .chain(
                settings
                    .categories
                    .iter()
                    .map(|c| Scope::Category(c.slug.clone())),
            )
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    Rss,
    Atom,
    Json,
}

impl Format {
    pub const ALL: [Format; 3] = [Format::Rss, Format::Atom, Format::Json];

    pub fn file_name(self) -> &'static str {
        match self {
            Format::Rss => "rss.xml",
            Format::Atom => "atom.xml",
            Format::Json => "feed.json",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Rss => "application/rss+xml; charset=utf-8",
            Format::Atom => "application/atom+xml; charset=utf-8",
            Format::Json => "application/feed+json; charset=utf-8",
        }
    }

    pub fn mime(self) -> &'static str {
        match self {
            Format::Rss => "application/rss+xml",
            Format::Atom => "application/atom+xml",
            Format::Json => "application/feed+json",
        }
    }
}

/// One scope's feed, ready for any writer.
pub struct FeedView<'a> {
    pub settings: &'a Settings,
    pub scope: Scope,
    pub category: Option<&'a Category>,
    pub title: String,
    pub description: String,
    /// Newest first, at most `feeds.items`.
    pub items: Vec<&'a Arc<CaseStudy>>,
    /// Newest `updated` of the items (of the catalog when the feed is empty).
    pub updated: DateTime<Utc>,
}

impl<'a> FeedView<'a> {
    pub fn new(
        settings: &'a Settings,
        catalog: &'a Catalog,
        scope: Scope,
        now: DateTime<Utc>,
    ) -> Self {
        let items: Vec<&Arc<CaseStudy>> = catalog
            .published(now)
            .filter(|s| scope.matches(s))
            .take(settings.feeds.items)
            .collect();
        let updated = items
            .iter()
            .map(|s| s.updated_or_published())
            .max()
            .or_else(|| {
                catalog
                    .published(now)
                    .map(|s| s.updated_or_published())
                    .max()
            })
            .unwrap_or_else(|| Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap());
        let category = match &scope {
            Scope::All => None,
            Scope::Category(slug) => settings.category(slug.as_str()),
        };
        let (title, description) = match category {
            None => (
                settings.site.title.clone(),
                non_empty(&settings.site.description, &settings.site.title),
            ),
            Some(c) => (
                format!("{}: {}", settings.site.title, c.name),
                non_empty(
                    &c.description,
                    &format!("{} case studies from {}", c.name, settings.site.title),
                ),
            ),
        };
        Self {
            settings,
            scope,
            category,
            title,
            description,
            items,
            updated,
        }
    }

    /// Relative path of this scope's file in `format`, e.g. "databases/rss.xml".
    pub fn path(&self, format: Format) -> String {
        format!("{}{}", self.scope.dir(), format.file_name())
    }

    pub fn self_url(&self, format: Format) -> url::Url {
        self.settings.feed_url(&self.path(format))
    }

    pub fn category_name(&self, slug: &Slug) -> String {
        self.settings
            .category(slug.as_str())
            .map(|c| c.name.clone())
            .unwrap_or_else(|| slug.to_string())
    }

    pub fn render(&self, format: Format) -> Vec<u8> {
        match format {
            Format::Rss => rss::write(self),
            Format::Atom => atom::write(self),
            Format::Json => json::write(self),
        }
    }
}

fn non_empty(s: &str, fallback: &str) -> String {
    if s.trim().is_empty() {
        fallback.to_owned()
    } else {
        s.to_owned()
    }
}

/// A rendered feed file.
#[derive(Debug, Clone)]
pub struct FeedFile {
    /// Relative path below the feeds root, e.g. "databases/atom.xml".
    pub path: String,
    pub format: Format,
    pub scope: Scope,
    pub body: Arc<[u8]>,
    pub updated: DateTime<Utc>,
}

/// Renders the feeds of `scopes` (every format each).
pub fn build(
    settings: &Settings,
    catalog: &Catalog,
    scopes: &[Scope],
    now: DateTime<Utc>,
) -> Vec<FeedFile> {
    use rayon::prelude::*;
    // Render HTML for every item that will appear, in parallel, before the writers need it.
    let views: Vec<FeedView<'_>> = scopes
        .iter()
        .map(|s| FeedView::new(settings, catalog, s.clone(), now))
        .collect();
    let mut needed: Vec<&Arc<CaseStudy>> =
        views.iter().flat_map(|v| v.items.iter().copied()).collect();
    needed.sort_by(|a, b| a.slug.cmp(&b.slug));
    needed.dedup_by(|a, b| a.slug == b.slug);
    needed.par_iter().for_each(|s| {
        s.html();
    });
    views
        .par_iter()
        .flat_map_iter(|view| {
            Format::ALL.into_iter().map(move |format| FeedFile {
                path: view.path(format),
                format,
                scope: view.scope.clone(),
                body: Arc::from(view.render(format)),
                updated: view.updated,
            })
        })
        .collect()
}

/// Every feed of every scope.
pub fn build_all(settings: &Settings, catalog: &Catalog, now: DateTime<Utc>) -> Vec<FeedFile> {
    build(settings, catalog, &Scope::all(settings), now)
}

/// The scopes whose feeds can differ between two catalogs: everything, plus
/// each category of a case study that was added, removed or changed (in
/// either its old or its new version), or whose publication time was crossed.
pub fn affected_scopes<'a>(
    settings: &Settings,
    old: &'a Catalog,
    new: &'a Catalog,
    old_now: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Vec<Scope> {
    use std::cmp::Ordering;
    use std::collections::{BTreeSet, HashMap};
    let before: Vec<&'a Arc<CaseStudy>> = old.published(old_now).collect();
    let after: Vec<&'a Arc<CaseStudy>> = new.published(now).collect();
    // Both are in catalog order (newest first, then slug): walk them
    // together. An update shares every unchanged case study (the same Arc),
    // so only the few left unpaired are compared by slug, and a one-file
    // change costs no allocation or hashing per case study.
    let order = |x: &CaseStudy, y: &CaseStudy| {
        y.published
            .cmp(&x.published)
            .then_with(|| x.slug.cmp(&y.slug))
    };
    let (mut only_before, mut only_after) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < before.len() && j < after.len() {
        let (b, a) = (before[i], after[j]);
        if Arc::ptr_eq(b, a) {
            (i, j) = (i + 1, j + 1);
            continue;
        }
        match order(b, a) {
            Ordering::Less => {
                only_before.push(b);
                i += 1;
            }
            Ordering::Greater => {
                only_after.push(a);
                j += 1;
            }
            Ordering::Equal => {
                only_before.push(b);
                only_after.push(a);
                (i, j) = (i + 1, j + 1);
            }
        }
    }
    only_before.extend_from_slice(&before[i..]);
    only_after.extend_from_slice(&after[j..]);
    // Few after an update; everything after a full rescan, hence maps.
    let by_slug = |v: &[&'a Arc<CaseStudy>]| -> HashMap<&'a str, &'a Arc<CaseStudy>> {
        v.iter().map(|s| (s.slug.as_str(), *s)).collect()
    };
    let (only_before_slugs, only_after_slugs) = (by_slug(&only_before), by_slug(&only_after));
    let mut changed_cats: BTreeSet<&Slug> = BTreeSet::new();
    let mut any = false;
    for study in &only_after {
        match only_before_slugs.get(study.slug.as_str()) {
            Some(old) if old.hash == study.hash => {}
            Some(old) => {
                any = true;
                changed_cats.extend(&study.categories);
                changed_cats.extend(&old.categories);
            }
            None => {
                any = true;
                changed_cats.extend(&study.categories);
            }
        }
    }
    for study in &only_before {
        if !only_after_slugs.contains_key(study.slug.as_str()) {
            any = true;
            changed_cats.extend(&study.categories);
        }
    }
    if !any {
        return Vec::new();
    }
    std::iter::once(Scope::All)
        .chain(
            changed_cats
                .into_iter()
                .filter(|c| settings.category(c.as_str()).is_some())
                .map(|c| Scope::Category(c.clone())),
        )
        .collect()
}
