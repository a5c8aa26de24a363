//! Feeds: one view model per scope (everything, and each category), written
//! by three writers (RSS 2.0, Atom 1.0, JSON Feed 1.1), then saved atomically
//! to `feeds.out_dir` and served from memory by the daemon.
//!
//! Everything a feed says derives from the catalog alone (no "now" in the
//! output), so an unchanged catalog gives byte-identical feeds: files are not
//! rewritten, and ETags stay valid for aggregators. Each scope also has its
//! history as RFC 5005 archive documents ([`history`]).

pub mod atom;
pub mod cache;
pub mod history;
pub mod json;
pub mod output;
pub mod rss;
pub mod websub;

use std::collections::HashMap;
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
#[derive(Clone)]
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
    /// Where the document sits in the scope's history (RFC 5005 links).
    pub history: history::History,
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
        let in_scope = catalog.published(now).filter(|s| scope.matches(s)).count();
        let history = history::current(settings, &scope, in_scope);
        let mut view = Self::titled(settings, scope, items, updated);
        view.history = history;
        view
    }

    /// Archive document `page` of `scope`.
    pub fn archive(settings: &'a Settings, scope: Scope, page: history::Page<'a>) -> Self {
        let mut view = Self::titled(settings, scope, page.items, page.updated);
        view.history = page.history;
        view
    }

    fn titled(
        settings: &'a Settings,
        scope: Scope,
        items: Vec<&'a Arc<CaseStudy>>,
        updated: DateTime<Utc>,
    ) -> Self {
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
            history: history::History::default(),
        }
    }

    /// Relative path of this document in `format`, e.g. "databases/rss.xml"
    /// or "archive/databases/3.xml".
    pub fn path(&self, format: Format) -> String {
        match self.history.page {
            Some(n) => history::page_path(&self.scope, n, format),
            None => self.current_path(format),
        }
    }

    /// The scope's current feed in `format`, whatever page this is.
    pub fn current_path(&self, format: Format) -> String {
        format!("{}{}", self.scope.dir(), format.file_name())
    }

    pub fn self_url(&self, format: Format) -> url::Url {
        self.settings.feed_url(&self.path(format))
    }

    /// The scope's current feed: the `current` link and the feed's identity
    /// (Atom id, JSON `feed_url`) of every archive document.
    pub fn current_url(&self, format: Format) -> url::Url {
        self.settings.feed_url(&self.current_path(format))
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
    /// A full archive document: it will not change, and is cached as such.
    pub immutable: bool,
    /// Of an archive document's inputs (see [`history::Page::fingerprint`]);
    /// an unchanged page is not rendered again.
    pub fingerprint: Option<[u8; 16]>,
}

/// What a build produced.
#[derive(Debug, Default)]
pub struct Build {
    /// Files whose inputs changed (every file, without a previous cache).
    pub files: Vec<FeedFile>,
    /// Archive documents of the rebuilt scopes that no longer exist (their
    /// scope shrank), to drop from the cache and the folder.
    pub retired: Vec<String>,
}

/// Renders the feeds of `scopes` (every format each), with their archive documents.
pub fn build(
    settings: &Settings,
    catalog: &Catalog,
    scopes: &[Scope],
    now: DateTime<Utc>,
) -> Vec<FeedFile> {
    build_since(settings, catalog, scopes, now, None).files
}

/// [`build`], leaving out the archive documents whose inputs are the same
/// as those of `previous`'s copy (rendering every page of a long history
/// on each change would cost far more than the change).
pub fn build_since(
    settings: &Settings,
    catalog: &Catalog,
    scopes: &[Scope],
    now: DateTime<Utc>,
    previous: Option<&cache::FeedCache>,
) -> Build {
    use rayon::prelude::*;
    let views: Vec<FeedView<'_>> = scopes
        .iter()
        .map(|s| FeedView::new(settings, catalog, s.clone(), now))
        .collect();
    let mut retired = Vec::new();
    let mut pages: Vec<(FeedView<'_>, Format, [u8; 16])> = Vec::new();
    for scope in scopes {
        let all = history::pages(settings, catalog, scope, now);
        let count = all.len();
        if let Some(prev) = previous {
            retired.extend(
                prev.paths()
                    .filter(|p| history::is_page_of(p, scope))
                    .filter(|p| {
                        p.rsplit('/')
                            .next()
                            .and_then(|f| f.split('.').next())
                            .and_then(|n| n.parse::<usize>().ok())
                            .is_none_or(|n| n > count)
                    })
                    .map(str::to_owned),
            );
        }
        for page in all {
            let wanted: Vec<(Format, [u8; 16])> = [Format::Atom, Format::Json]
                .into_iter()
                .map(|f| (f, page.fingerprint(f)))
                .filter(|(f, fp)| {
                    let path = history::page_path(scope, page.n, *f);
                    previous
                        .and_then(|c| c.get(&path))
                        .is_none_or(|cached| cached.fingerprint != Some(*fp))
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let view = FeedView::archive(settings, scope.clone(), page);
            for (f, fp) in wanted {
                pages.push((view.clone(), f, fp));
            }
        }
    }
    // Render HTML for every item that will appear, in parallel, before the writers need it.
    let mut needed: Vec<&Arc<CaseStudy>> = views
        .iter()
        .chain(pages.iter().map(|(v, _, _)| v))
        .flat_map(|v| v.items.iter().copied())
        .collect();
    needed.sort_by(|a, b| a.slug.cmp(&b.slug));
    needed.dedup_by(|a, b| a.slug == b.slug);
    needed.par_iter().for_each(|s| {
        s.html();
    });
    let mut files: Vec<FeedFile> = views
        .par_iter()
        .flat_map_iter(|view| {
            Format::ALL.into_iter().map(move |format| FeedFile {
                path: view.path(format),
                format,
                scope: view.scope.clone(),
                body: Arc::from(view.render(format)),
                updated: view.updated,
                immutable: false,
                fingerprint: None,
            })
        })
        .collect();
    files.par_extend(pages.par_iter().map(|(view, format, fp)| FeedFile {
        path: view.path(*format),
        format: *format,
        scope: view.scope.clone(),
        body: Arc::from(view.render(*format)),
        updated: view.updated,
        immutable: view.history.full,
        fingerprint: Some(*fp),
    }));
    Build { files, retired }
}

/// How many archive documents [`write_every`] renders and writes at a time.
const WRITE_CHUNK: usize = 4;

/// Renders every feed of every scope and writes each below `out_dir` as it
/// goes (`casewire feeds build`); returns the paths written or found
/// unchanged. Archive documents are rendered a few at a time, in the order
/// of their newest entry, and a case study's HTML is dropped after the last
/// document that shows it, so a long history is never held at once (a
/// 10,000-study store has a thousand documents, 376 MB of them).
pub fn write_every(
    settings: &Settings,
    catalog: &Catalog,
    now: DateTime<Utc>,
    out_dir: &std::path::Path,
) -> Result<(Vec<String>, output::WriteReport), output::OutputError> {
    use rayon::prelude::*;
    let scopes = Scope::all(settings);
    let mut report = output::WriteReport::default();
    let mut paths = Vec::new();
    let mut write = |files: Vec<(String, Vec<u8>)>| -> Result<(), output::OutputError> {
        let written: Vec<bool> = files
            .par_iter()
            .map(|(path, body)| output::write_if_changed(&out_dir.join(path), body))
            .collect::<Result<_, _>>()?;
        for w in written {
            if w {
                report.written += 1;
            } else {
                report.unchanged += 1;
            }
        }
        paths.extend(files.into_iter().map(|(p, _)| p));
        Ok(())
    };
    let current: Vec<FeedView<'_>> = scopes
        .iter()
        .map(|s| FeedView::new(settings, catalog, s.clone(), now))
        .collect();
    write(render_views(&current, &Format::ALL))?;

    // Each archive document, oldest entries first (the empty last pages at the end).
    let position: HashMap<&str, usize> = catalog
        .published(now)
        .enumerate()
        .map(|(i, s)| (s.slug.as_str(), i))
        .collect();
    let mut pages: Vec<FeedView<'_>> = scopes
        .iter()
        .flat_map(|scope| {
            history::pages(settings, catalog, scope, now)
                .into_iter()
                .map(|page| FeedView::archive(settings, scope.clone(), page))
        })
        .collect();
    // Positions count from the newest: an older page's newest entry has a larger one.
    pages.sort_by_key(|v| match v.items.first() {
        Some(s) => (
            false,
            std::cmp::Reverse(position.get(s.slug.as_str()).copied()),
        ),
        None => (true, std::cmp::Reverse(None)),
    });
    let mut uses: HashMap<&str, usize> = HashMap::new();
    for s in pages.iter().flat_map(|v| v.items.iter()) {
        *uses.entry(s.slug.as_str()).or_default() += 1;
    }
    for chunk in pages.chunks(WRITE_CHUNK) {
        write(render_views(chunk, &[Format::Atom, Format::Json]))?;
        for s in chunk.iter().flat_map(|v| v.items.iter()) {
            let left = uses.get_mut(s.slug.as_str()).expect("counted above");
            *left -= 1;
            if *left == 0 {
                s.forget_html();
            }
        }
    }
    Ok((paths, report))
}

/// `views` in `formats`, each study's HTML rendered (in parallel) before
/// the writers need it.
fn render_views(views: &[FeedView<'_>], formats: &[Format]) -> Vec<(String, Vec<u8>)> {
    use rayon::prelude::*;
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
            formats
                .iter()
                .map(move |f| (view.path(*f), view.render(*f)))
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
