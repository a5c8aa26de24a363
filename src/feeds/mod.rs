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

    /// This document in `format`; `entries` holds the entries of every item
    /// (Atom and JSON Feed), which the document borrows rather than copies.
    fn render<'e>(&self, format: Format, entries: &'e EntryMap<'_>) -> Spliced<'e> {
        let pick = |part: fn(&Entries) -> &[u8]| -> Vec<&'e [u8]> {
            self.items
                .iter()
                .map(|s| part(&entries[s.slug.as_str()]))
                .collect()
        };
        match format {
            Format::Rss => Spliced::whole(rss::write(self)),
            Format::Atom => atom::write(self, &pick(|e| &e.atom)),
            Format::Json => json::write(self, &pick(|e| &e.json)),
        }
    }
}

/// A document as the pieces it is made of, in order: ranges of the bytes
/// it rendered itself, and entries it borrows from the build (written out
/// with one vectored write, never copied into one buffer).
pub struct Spliced<'e> {
    own: Vec<u8>,
    parts: Vec<Part<'e>>,
}

enum Part<'e> {
    Own(std::ops::Range<usize>),
    Borrowed(&'e [u8]),
}

impl<'e> Spliced<'e> {
    /// A document with nothing spliced in.
    pub fn whole(own: Vec<u8>) -> Self {
        let all = Part::Own(0..own.len());
        Self {
            own,
            parts: vec![all],
        }
    }

    /// `own`, its pieces to come from [`Spliced::own`] and [`Spliced::borrow`].
    fn new(own: Vec<u8>, capacity: usize) -> Self {
        Self {
            own,
            parts: Vec::with_capacity(capacity),
        }
    }

    fn own(&mut self, range: std::ops::Range<usize>) {
        self.parts.push(Part::Own(range));
    }

    fn borrow(&mut self, bytes: &'e [u8]) {
        self.parts.push(Part::Borrowed(bytes));
    }

    /// The pieces, in order.
    pub fn slices(&self) -> Vec<&[u8]> {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Own(r) => &self.own[r.clone()],
                Part::Borrowed(b) => *b,
            })
            .collect()
    }

    /// The document's bytes in one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        self.slices().concat()
    }
}

/// How feeds name the category `slug`: as the settings do, or by its slug
/// when they do not define it. The same in every scope.
pub fn category_name<'a>(settings: &'a Settings, slug: &'a Slug) -> &'a str {
    settings
        .category(slug.as_str())
        .map_or(slug.as_str(), |c| c.name.as_str())
}

/// A case study's Atom `<entry>` and JSON Feed item, rendered once per build
/// and spliced into every document that lists it: neither depends on the
/// document (its scope, page or format's other parts).
struct Entries {
    atom: Box<[u8]>,
    json: Box<[u8]>,
}

impl Entries {
    fn render(settings: &Settings, study: &CaseStudy) -> Self {
        // The entry wants the HTML, the item the sections: one read of the file.
        study.load(settings);
        Self {
            atom: atom::entry(settings, study).into_boxed_slice(),
            json: json::item(settings, study).into_boxed_slice(),
        }
    }
}

/// The entries of the case studies that the documents being rendered list, by slug.
type EntryMap<'a> = HashMap<&'a str, Entries>;

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
    /// Of an archive document's inputs (see [`history::Page::fingerprint_with`]);
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
            let items = page.items_digest();
            let wanted: Vec<(Format, [u8; 16])> = [Format::Atom, Format::Json]
                .into_iter()
                .map(|f| (f, page.fingerprint_with(&items, f)))
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
    let mut docs: Vec<(&FeedView<'_>, Format)> = views
        .iter()
        .flat_map(|v| Format::ALL.into_iter().map(move |f| (v, f)))
        .collect();
    let current = docs.len();
    docs.extend(pages.iter().map(|(v, f, _)| (v, *f)));
    let mut bodies: Vec<Option<Vec<u8>>> = vec![None; docs.len()];
    // Larger chunks than a streamed write: everything is held anyway, and
    // each chunk waits for its slowest document.
    render_streamed(settings, catalog, now, &docs, 64, false, |chunk| {
        for (i, body) in chunk {
            bodies[i] = Some(body.to_vec());
        }
        Ok::<(), std::convert::Infallible>(())
    })
    .unwrap_or_else(|never| match never {});
    let mut bodies = bodies
        .into_iter()
        .map(|b| Arc::from(b.expect("every document rendered")));
    let mut files: Vec<FeedFile> = views
        .iter()
        .flat_map(|view| Format::ALL.into_iter().map(move |format| (view, format)))
        .zip(bodies.by_ref().take(current))
        .map(|((view, format), body)| FeedFile {
            path: view.path(format),
            format,
            scope: view.scope.clone(),
            body,
            updated: view.updated,
            immutable: false,
            fingerprint: None,
        })
        .collect();
    files.extend(
        pages
            .iter()
            .zip(bodies)
            .map(|((view, format, fp), body)| FeedFile {
                path: view.path(*format),
                format: *format,
                scope: view.scope.clone(),
                body,
                updated: view.updated,
                immutable: view.history.full,
                fingerprint: Some(*fp),
            }),
    );
    Build { files, retired }
}

/// How many documents [`write_every`] renders and writes at a time.
const CHUNK: usize = 8;

/// Renders every feed of every scope and writes each below `out_dir` as it
/// goes (`casewire feeds build`); returns the paths written or found
/// unchanged. Documents are rendered a few at a time, in the order of their
/// newest entry, and a case study's HTML and entries are dropped as soon as
/// no document left needs them, so a long history is never held at once (a
/// 10,000-study store has a thousand documents, 376 MB of them). The
/// current feeds come last, after the archive documents they link to.
pub fn write_every(
    settings: &Settings,
    catalog: &Catalog,
    now: DateTime<Utc>,
    out_dir: &std::path::Path,
) -> Result<(Vec<String>, output::WriteReport), output::OutputError> {
    use rayon::prelude::*;
    let scopes = Scope::all(settings);
    let current: Vec<FeedView<'_>> = scopes
        .iter()
        .map(|s| FeedView::new(settings, catalog, s.clone(), now))
        .collect();
    let pages: Vec<FeedView<'_>> = scopes
        .iter()
        .flat_map(|scope| {
            history::pages(settings, catalog, scope, now)
                .into_iter()
                .map(|page| FeedView::archive(settings, scope.clone(), page))
        })
        .collect();
    let docs: Vec<(&FeedView<'_>, Format)> = pages
        .iter()
        .flat_map(|v| [Format::Atom, Format::Json].map(|f| (v, f)))
        .chain(
            current
                .iter()
                .flat_map(|v| Format::ALL.into_iter().map(move |f| (v, f))),
        )
        .collect();
    let mut report = output::WriteReport::default();
    let mut paths = vec![String::new(); docs.len()];
    render_streamed(settings, catalog, now, &docs, CHUNK, true, |chunk| {
        let written: Vec<(usize, String, bool)> = chunk
            .par_iter()
            .map(|(i, body)| {
                let (view, format) = docs[*i];
                let path = view.path(format);
                let written = output::write_parts_if_changed(&out_dir.join(&path), &body.slices())?;
                Ok((*i, path, written))
            })
            .collect::<Result<_, _>>()?;
        for (i, path, w) in written {
            paths[i] = path;
            if w {
                report.written += 1;
            } else {
                report.unchanged += 1;
            }
        }
        Ok(())
    })?;
    Ok((paths, report))
}

/// Renders `docs` (a view and a format each) `chunk` at a time, in the
/// order of their newest entry (the archive documents of a scope, oldest
/// first, before a current feed with the same newest entry), handing each
/// chunk's bodies to `sink` with their index in `docs`.
///
/// Each case study's [`Entries`] are rendered (in parallel) just before the
/// first document that lists it and dropped after the last, so only the
/// case studies of documents in progress hold theirs. With `forget_html`,
/// a file's HTML is dropped too once its entries exist and no RSS document
/// left shows it (it is rendered again if anything asks later).
fn render_streamed<'a, E: Send>(
    settings: &'a Settings,
    catalog: &'a Catalog,
    now: DateTime<Utc>,
    docs: &[(&FeedView<'a>, Format)],
    chunk: usize,
    forget_html: bool,
    mut sink: impl FnMut(Vec<(usize, Spliced<'_>)>) -> Result<(), E>,
) -> Result<(), E> {
    use rayon::prelude::*;
    let position: HashMap<&str, usize> = catalog
        .published(now)
        .enumerate()
        .map(|(i, s)| (s.slug.as_str(), i))
        .collect();
    // Positions count from the newest: an older document's newest entry has
    // a larger one. Empty documents last.
    let mut order: Vec<usize> = (0..docs.len()).collect();
    order.sort_by_key(|&i| {
        let (view, _) = docs[i];
        match view.items.first() {
            Some(s) => (
                false,
                std::cmp::Reverse(position.get(s.slug.as_str()).copied()),
                view.history.page.is_none(),
            ),
            None => (true, std::cmp::Reverse(None), view.history.page.is_none()),
        }
    });
    // Documents left that list each case study: [entries, RSS items].
    let mut uses: HashMap<&str, [usize; 2]> = HashMap::new();
    let kind = |format: Format| usize::from(format == Format::Rss);
    for (view, format) in docs {
        for s in &view.items {
            uses.entry(s.slug.as_str()).or_default()[kind(*format)] += 1;
        }
    }
    let mut entries: EntryMap<'a> = HashMap::new();
    for chunk in order.chunks(chunk.max(1)) {
        let mut studies: Vec<(&'a Arc<CaseStudy>, bool)> = chunk
            .iter()
            .flat_map(|&i| {
                let (view, format) = docs[i];
                let wants_entries = format != Format::Rss;
                view.items.iter().map(move |s| (*s, wants_entries))
            })
            .filter(|(s, wants_entries)| !*wants_entries || !entries.contains_key(s.slug.as_str()))
            .collect();
        // Each case study once, wanting entries if any document here does.
        studies.sort_by(|a, b| a.0.slug.cmp(&b.0.slug).then(b.1.cmp(&a.1)));
        studies.dedup_by(|a, b| a.0.slug == b.0.slug);
        let rendered: Vec<(&'a str, Entries)> = studies
            .par_iter()
            .filter_map(|&(s, wants_entries)| {
                if !wants_entries {
                    s.html();
                    return None;
                }
                let e = Entries::render(settings, s);
                if forget_html && uses[s.slug.as_str()][1] == 0 {
                    s.forget_html();
                }
                Some((s.slug.as_str(), e))
            })
            .collect();
        entries.extend(rendered);
        let bodies: Vec<(usize, Spliced<'_>)> = chunk
            .par_iter()
            .map(|&i| {
                let (view, format) = docs[i];
                (i, view.render(format, &entries))
            })
            .collect();
        sink(bodies)?;
        for &i in chunk {
            let (view, format) = docs[i];
            for s in &view.items {
                let slug = s.slug.as_str();
                let left = uses.get_mut(slug).expect("counted above");
                left[kind(format)] -= 1;
                if left[0] == 0 {
                    entries.remove(slug);
                }
                let html_wanted = left[1] > 0 || (left[0] > 0 && !entries.contains_key(slug));
                if forget_html && !html_wanted {
                    s.forget_html();
                }
            }
        }
    }
    Ok(())
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

/// Settings and a catalog whose text holds everything a writer must escape
/// or drop, for the writers' tests.
#[cfg(test)]
pub(crate) mod fixture {
    use std::path::Path;
    use std::sync::Arc;

    use chrono::{DateTime, TimeZone, Utc};

    use crate::config::Settings;
    use crate::content::sections::Section;
    use crate::content::{CaseStudy, Catalog, Origin};
    use crate::domain::Slug;

    pub fn settings() -> Settings {
        let text = r#"
[site]
title = "Ops & <Incidents> \u0001 ]]> Café"
description = "Post-mortems: \"what\" & 'why' \u001b"
base_url = "https://example.com/cases"

[feeds]
archive_page_size = 2
websub_hub = "https://hub.example.com/"

[mail]
from = "Casewire <digest@example.com>"

[[categories]]
slug = "databases"
name = "Data & <Stores> \u0007 ]]>"

[[categories]]
slug = "networks"
name = "Réseaux 日本"
"#;
        Settings::from_toml(Path::new("casewire.toml"), text, std::iter::empty())
            .expect("fixture settings")
    }

    pub fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap()
    }

    /// Seven case studies, in one or both categories (one in a category the
    /// settings do not define), with text that escaping and cleaning change.
    pub fn catalog(settings: &Settings) -> Catalog {
        let cats = ["databases", "networks", "databases networks", "unknown-cat"];
        let studies = (0..7)
            .map(|i| {
                let slug = Slug::parse(&format!("study-{i}")).unwrap();
                let categories = cats[i % cats.len()]
                    .split(' ')
                    .map(|c| Slug::parse(c).unwrap())
                    .collect();
                let mut study = CaseStudy::with_html(
                    slug.clone(),
                    format!("Title {i} & <b>bold</b> ]]>"),
                    Utc.with_ymd_and_hms(2026, 1, 1 + i as u32, 9, 30, 0)
                        .unwrap(),
                    (i % 2 == 0).then(|| Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap()),
                    format!("Summary {i}: a < b && c > d, \"quoted\" 'single'"),
                    categories,
                    vec![format!("Zoë Ünal {i}"), "A & B".into()],
                    settings.permalink(&slug),
                    Origin::Upstream {
                        feed: settings.site.base_url.clone(),
                    },
                    format!(
                        "<p>Body {i} &amp; more &lt;tags&gt; ]]> <![CDATA[x]]> é 日本 😀</p>\n\
                         <pre>line\n\tindented \\ back\\slash \"q\"</pre>"
                    ),
                );
                // Past the model's own cleaning: only the writers' is left.
                study.title.push_str(" \u{1}\u{fffe}");
                study.summary.push('\u{b}');
                study.authors.push("Ctl\u{1f}Author".into());
                study.tags = vec!["tag & <x>".into(), "esc\u{1b}ape".into()];
                study.featured = i == 3;
                study.set_sections(vec![Section {
                    key: "root_cause".into(),
                    heading: "Root <cause> \u{2}".into(),
                    text: "It was DNS & \"caching\".\n\nSecond\tparagraph.".into(),
                }]);
                Arc::new(study)
            })
            .collect();
        Catalog::new(studies, Vec::new(), 0)
    }

    /// Every document of every scope: the current feeds, then the archive pages.
    pub fn views<'a>(settings: &'a Settings, catalog: &'a Catalog) -> Vec<super::FeedView<'a>> {
        let scopes = super::Scope::all(settings);
        let mut views: Vec<super::FeedView<'a>> = scopes
            .iter()
            .map(|s| super::FeedView::new(settings, catalog, s.clone(), now()))
            .collect();
        for scope in &scopes {
            views.extend(
                super::history::pages(settings, catalog, scope, now())
                    .into_iter()
                    .map(|page| super::FeedView::archive(settings, scope.clone(), page)),
            );
        }
        views
    }
}
