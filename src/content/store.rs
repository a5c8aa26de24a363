//! The directory store and the catalog snapshot built from it.
//!
//! A scan reads every `*.md` file below the content folder in parallel, keeps
//! the case studies that parse and reports the rest as [`Problem`]s. A file
//! that stops parsing keeps its last good version (DESIGN.md invariant 5) when
//! the previous catalog is given. The [`Catalog`] is immutable: a change makes a
//! new one, which the daemon swaps in whole.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rayon::prelude::*;

use super::model::{CaseStudy, Origin, Parsed, Problem};
use crate::config::Settings;

/// An immutable snapshot of every known case study, newest first.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    /// Sorted by `published` descending, then slug, so feeds take a prefix.
    studies: Vec<Arc<CaseStudy>>,
    /// Problems of the scan that built this catalog, sorted by path.
    pub problems: Vec<Problem>,
    /// Drafts seen (not an error, not published).
    pub drafts: usize,
}

impl Catalog {
    pub fn new(
        mut studies: Vec<Arc<CaseStudy>>,
        mut problems: Vec<Problem>,
        drafts: usize,
    ) -> Self {
        studies.sort_by(|a, b| {
            b.published
                .cmp(&a.published)
                .then_with(|| a.slug.cmp(&b.slug))
        });
        problems.sort_by(|a, b| a.path.cmp(&b.path).then(a.line.cmp(&b.line)));
        Self {
            studies,
            problems,
            drafts,
        }
    }

    /// Every case study, scheduled ones included.
    pub fn all(&self) -> &[Arc<CaseStudy>] {
        &self.studies
    }

    /// Case studies whose publication time has come, newest first.
    pub fn published(&self, now: DateTime<Utc>) -> impl Iterator<Item = &Arc<CaseStudy>> {
        self.studies.iter().filter(move |s| s.is_published(now))
    }

    /// The earliest publication time still in the future: when the timer should wake.
    pub fn next_scheduled(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.studies
            .iter()
            .map(|s| s.published)
            .filter(|p| *p > now)
            .min()
    }

    /// Warnings of the case studies' files (repaired, not errors), by path.
    pub fn warnings(&self) -> Vec<&Problem> {
        let mut out: Vec<&Problem> = self.studies.iter().flat_map(|s| &s.warnings).collect();
        out.sort_by(|a, b| a.path.cmp(&b.path).then(a.line.cmp(&b.line)));
        out
    }

    pub fn get(&self, slug: &str) -> Option<&Arc<CaseStudy>> {
        self.studies.iter().find(|s| s.slug.as_str() == slug)
    }

    pub fn len(&self) -> usize {
        self.studies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.studies.is_empty()
    }
}

/// Reads case studies from a content folder. Its catalogs hold files only;
/// the publisher adds upstream entries when it composes the snapshot.
pub struct DirectoryStore<'a> {
    settings: &'a Settings,
    root: PathBuf,
    parse_budget: Duration,
}

/// How long one file's parse may take before it is reported and skipped
/// (keeping its last good version), so no file stalls the publisher.
pub const PARSE_BUDGET: Duration = Duration::from_secs(2);

/// Files up to this size parse in well under a millisecond and are parsed
/// on the scanning thread; larger ones on a watched thread of their own.
const WATCHED_FILE_BYTES: usize = 64 * 1024;

/// Files whose watched parse overran its budget and is still running: a
/// rescan reports them again instead of starting another parse.
static OVERDUE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// What reading one file gave.
enum FileResult {
    Study(Arc<CaseStudy>),
    Skip { draft: bool },
    Problem(Problem),
}

impl<'a> DirectoryStore<'a> {
    pub fn new(settings: &'a Settings) -> Self {
        Self::with_root(settings, settings.content.dir.clone())
    }

    pub fn with_root(settings: &'a Settings, root: PathBuf) -> Self {
        Self {
            settings,
            root,
            parse_budget: PARSE_BUDGET,
        }
    }

    /// The same store with another per-file parse budget.
    pub fn with_parse_budget(mut self, budget: Duration) -> Self {
        self.parse_budget = budget;
        self
    }

    /// Whether the content folder is there and readable. Its absence is
    /// never read as "no case studies": that would empty every feed and, on
    /// a first start, seed an empty ledger, so that every old case study is
    /// announced as new once the folder appears (DESIGN.md invariant 3).
    pub fn check_root(&self) -> Result<(), Problem> {
        let problem = |message: String| Problem {
            path: self.root.clone(),
            line: 0,
            message,
        };
        match std::fs::metadata(&self.root) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(problem(
                    "the content folder ([content] dir) is not a folder".into(),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(problem(
                    "the content folder ([content] dir) does not exist; create it or fix the path"
                        .into(),
                ))
            }
            Err(e) => {
                return Err(problem(format!(
                    "cannot read the content folder ([content] dir): {e}"
                )))
            }
        }
        std::fs::read_dir(&self.root).map(drop).map_err(|e| {
            problem(format!(
                "cannot read the content folder ([content] dir): {e}"
            ))
        })
    }

    /// Every `.md` file below the root, sorted, so duplicate slugs resolve the same way each time.
    pub fn files(&self) -> Result<Vec<PathBuf>, Problem> {
        self.walk().map(|(files, _)| files)
    }

    /// The content files, and a problem for each symlink that was not
    /// followed: one leading out of the content folder (a link to `/` would
    /// walk the whole disk and publish whatever it found), or a loop.
    fn walk(&self) -> Result<(Vec<PathBuf>, Vec<Problem>), Problem> {
        self.check_root()?;
        let root = std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone());
        let mut problems = Vec::new();
        let mut files = Vec::new();
        let mut walk = walkdir::WalkDir::new(&self.root)
            .follow_links(true)
            .into_iter();
        while let Some(entry) = walk.next() {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => {
                    let path = e
                        .path()
                        .map(Path::to_owned)
                        .unwrap_or_else(|| self.root.clone());
                    let message = match e.loop_ancestor() {
                        Some(ancestor) => format!(
                            "symlink loop: it leads back to {}; not followed",
                            ancestor.display()
                        ),
                        None => format!("cannot read: {e}"),
                    };
                    problems.push(Problem {
                        path,
                        line: 0,
                        message,
                    });
                    continue;
                }
            };
            if entry.path_is_symlink() {
                if let Some(target) = escapes(&root, entry.path()) {
                    problems.push(Problem {
                        path: entry.path().to_owned(),
                        line: 0,
                        message: format!(
                            "symlink leads out of the content folder (to {}); not followed",
                            target.display()
                        ),
                    });
                    if entry.file_type().is_dir() {
                        walk.skip_current_dir();
                    }
                    continue;
                }
            }
            if entry.file_type().is_file() && is_content_file(entry.path()) {
                files.push(entry.into_path());
            }
        }
        files.sort_by_cached_key(|p| path_order_key(p));
        Ok((files, problems))
    }

    /// A full scan. With `previous`, a file that fails keeps its last good version.
    pub fn scan(&self, previous: Option<&Catalog>) -> Catalog {
        let (files, link_problems) = match self.walk() {
            Ok(f) => f,
            Err(p) => {
                // Keep serving what we had rather than emptying every feed.
                let kept = previous.map(|c| c.studies.clone()).unwrap_or_default();
                return Catalog::new(kept, vec![p], 0);
            }
        };
        let results: Vec<(PathBuf, FileResult)> = files
            .into_par_iter()
            .map(|path| {
                let r = self.read_one(&path);
                (path, r)
            })
            .collect();
        let mut catalog = self.assemble(results, previous);
        if !link_problems.is_empty() {
            for p in &link_problems {
                tracing::warn!("{p}");
            }
            catalog.problems.extend(link_problems);
            catalog
                .problems
                .sort_by(|a, b| a.path.cmp(&b.path).then(a.line.cmp(&b.line)));
        }
        catalog
    }

    /// Re-reads only `changed` paths (added, modified or removed) and reuses
    /// everything else from `previous`: the daemon's fast path. On 10,000
    /// case studies one changed file costs well under a millisecond of CPU
    /// here (benches/feeds_build.rs), since unchanged studies are shared.
    pub fn update(&self, previous: &Catalog, changed: &[PathBuf]) -> Catalog {
        if let Err(p) = self.check_root() {
            // The folder went away: its files were not deleted one by one.
            return Catalog::new(previous.studies.clone(), vec![p], previous.drafts);
        }
        let mut changed: Vec<&PathBuf> = changed.iter().filter(|p| is_content_file(p)).collect();
        // A path named twice (two events for one save) is read once; read
        // twice, it would collide with itself as a duplicate slug.
        changed.sort();
        changed.dedup();
        let read: Vec<(&PathBuf, Option<FileResult>)> = changed
            .iter()
            .map(|p| (*p, p.is_file().then(|| self.read_changed(p))))
            .collect();
        match self.update_in_place(previous, &read) {
            Some(catalog) => catalog,
            None => self.update_by_assembly(previous, read),
        }
    }

    /// The common case without sorting or hashing every path: no changed file
    /// takes a slug that another file holds (then `assemble`'s first-path-wins
    /// rule has nothing to decide); None otherwise. Same result as
    /// [`Self::update_by_assembly`] whenever it gives one.
    fn update_in_place(
        &self,
        previous: &Catalog,
        read: &[(&PathBuf, Option<FileResult>)],
    ) -> Option<Catalog> {
        // Bytes first: comparing two `Path`s (or taking a file name) parses
        // components, which over 10,000 studies cost more than all the rest.
        let names: Vec<(&[u8], &PathBuf)> = read
            .iter()
            .map(|(c, _)| (c.file_name().map_or(&[][..], |n| n.as_encoded_bytes()), *c))
            .collect();
        let is_changed = |p: &Path| {
            names
                .iter()
                .any(|(name, c)| ends_with_name(p, name) && c.as_path() == p)
        };
        let mut studies = Vec::with_capacity(previous.len() + read.len());
        let mut old_versions: Vec<&Arc<CaseStudy>> = Vec::new();
        for s in &previous.studies {
            match s.path() {
                Some(p) if is_changed(p) => old_versions.push(s),
                _ => studies.push(Arc::clone(s)),
            }
        }
        let mut problems: Vec<Problem> = previous
            .problems
            .iter()
            .filter(|p| !is_changed(&p.path) && p.path.is_file())
            .cloned()
            .collect();
        let kept = studies.len();
        let mut drafts = 0;
        for (path, result) in read {
            match result {
                None => {}
                Some(FileResult::Skip { draft }) => drafts += usize::from(*draft),
                Some(FileResult::Problem(p)) => {
                    // Keep the last good version, as `assemble` does.
                    if let Some(good) = old_versions.iter().find(|s| s.path() == Some(path)) {
                        tracing::warn!(file = %path.display(), "keeping the last good version: {p}");
                        studies.push(Arc::clone(good));
                    }
                    problems.push(p.clone());
                }
                Some(FileResult::Study(s)) => studies.push(Arc::clone(s)),
            }
        }
        // Any slug held twice (a changed file against any other, or a kept
        // last good version against a new study) needs the path order.
        for (i, s) in studies[kept..].iter().enumerate() {
            if studies[..kept + i].iter().any(|o| o.slug == s.slug) {
                return None;
            }
        }
        Some(Catalog::new(studies, problems, drafts))
    }

    /// The general update: every path sorted, then `assemble`.
    fn update_by_assembly(
        &self,
        previous: &Catalog,
        read: Vec<(&PathBuf, Option<FileResult>)>,
    ) -> Catalog {
        let changed: Vec<&PathBuf> = read.iter().map(|(p, _)| *p).collect();
        let mut results: Vec<(PathBuf, FileResult)> =
            Vec::with_capacity(previous.len() + changed.len());
        // Unchanged files: their current problem, or their current study. A
        // broken file has both (its last good version); its problem goes
        // first, so after the stable sort the dedup drops the study and
        // `assemble` keeps the last good version *and* reports the problem.
        for prob in &previous.problems {
            if !changed.iter().any(|c| **c == prob.path) && prob.path.is_file() {
                results.push((prob.path.clone(), FileResult::Problem(prob.clone())));
            }
        }
        for s in &previous.studies {
            if let Origin::File(p) = &s.origin {
                if !changed.contains(&p) {
                    results.push((p.clone(), FileResult::Study(Arc::clone(s))));
                }
            }
        }
        for (path, result) in read {
            if let Some(result) = result {
                results.push((path.clone(), result));
            }
        }
        results.sort_by_cached_key(|r| path_order_key(&r.0));
        results.dedup_by(|a, b| a.0 == b.0 && matches!(b.1, FileResult::Problem(_)));
        self.assemble(results, Some(previous))
    }

    /// [`Self::read_one`] for a path that did not come from the walk: one
    /// the watcher names can lie below a symlink the walk does not follow.
    fn read_changed(&self, path: &Path) -> FileResult {
        if let Ok(root) = std::fs::canonicalize(&self.root) {
            if let Some(target) = escapes(&root, path) {
                return FileResult::Problem(Problem {
                    path: path.to_owned(),
                    line: 0,
                    message: format!(
                        "symlink leads out of the content folder (to {}); not followed",
                        target.display()
                    ),
                });
            }
        }
        self.read_one(path)
    }

    fn read_one(&self, path: &Path) -> FileResult {
        let limit = self.settings.content.max_file_bytes;
        let problem = |message: String| {
            FileResult::Problem(Problem {
                path: path.to_owned(),
                line: 1,
                message,
            })
        };
        match std::fs::metadata(path) {
            Ok(m) if m.len() > limit => {
                return problem(format!(
                    "the file is {} KiB, over the limit of {} KiB ([content] max_file_kb)",
                    m.len().div_ceil(1024),
                    limit / 1024
                ))
            }
            Ok(_) => {}
            Err(e) => return problem(format!("cannot read the file: {e}")),
        }
        let bytes = match crate::descriptors::retry_when_exhausted(|| std::fs::read(path)) {
            Ok(b) => b,
            Err(e) => return problem(format!("cannot read the file: {e}")),
        };
        let parsed = if bytes.len() > WATCHED_FILE_BYTES {
            match self.parse_watched(path, bytes) {
                Some(r) => r,
                None => {
                    return problem(format!(
                        "parsing the file took longer than {:?}; skipped (its last good version stays); simplify its front matter",
                        self.parse_budget
                    ))
                }
            }
        } else {
            CaseStudy::from_file(path, &bytes, self.settings)
        };
        match parsed {
            Ok(Parsed::Study(s)) => FileResult::Study(Arc::from(s)),
            Ok(Parsed::Draft) => FileResult::Skip { draft: true },
            Ok(Parsed::NotAnEntry) => FileResult::Skip { draft: false },
            Err(p) => FileResult::Problem(p),
        }
    }

    /// Parses a large file on a thread of its own and waits at most the
    /// budget; None when it overran (the thread finishes in the background
    /// and its result is dropped).
    fn parse_watched(&self, path: &Path, bytes: Vec<u8>) -> Option<Result<Parsed, Problem>> {
        let overdue = |p: &Path| OVERDUE.lock().expect("not poisoned").iter().any(|o| o == p);
        if overdue(path) {
            return None;
        }
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let (owned, settings) = (path.to_owned(), self.settings.clone());
        let spawned = std::thread::Builder::new()
            .name("casewire-parse".into())
            .spawn(move || {
                let _ = tx.send(CaseStudy::from_file(&owned, &bytes, &settings));
                OVERDUE
                    .lock()
                    .expect("not poisoned")
                    .retain(|o| o != &owned);
            });
        if spawned.is_err() {
            // No thread to spare: parse here rather than not at all.
            let bytes = std::fs::read(path).unwrap_or_default();
            return Some(CaseStudy::from_file(path, &bytes, self.settings));
        }
        match rx.recv_timeout(self.parse_budget) {
            Ok(r) => Some(r),
            Err(_) => {
                let mut list = OVERDUE.lock().expect("not poisoned");
                // The thread may have finished between the timeout and the lock.
                if let Ok(r) = rx.try_recv() {
                    return Some(r);
                }
                list.push(path.to_owned());
                None
            }
        }
    }

    fn assemble(&self, results: Vec<(PathBuf, FileResult)>, previous: Option<&Catalog>) -> Catalog {
        // Built on the first problem only: hashing 10,000 paths costs more
        // than the rest of a one-file update.
        let mut last_good: Option<HashMap<&Path, &Arc<CaseStudy>>> = None;
        // Borrowed keys and values: no allocation per case study.
        let mut by_slug: HashMap<&str, &Path> = HashMap::with_capacity(results.len());
        let mut studies = Vec::with_capacity(results.len());
        let mut problems = Vec::new();
        let mut drafts = 0;
        for (path, result) in &results {
            let study = match result {
                FileResult::Study(s) => s,
                FileResult::Skip { draft } => {
                    drafts += usize::from(*draft);
                    continue;
                }
                FileResult::Problem(p) => {
                    let last_good = last_good.get_or_insert_with(|| {
                        previous
                            .map(|c| {
                                c.studies
                                    .iter()
                                    .filter_map(|s| s.path().map(|p| (p, s)))
                                    .collect()
                            })
                            .unwrap_or_default()
                    });
                    if let Some(good) = last_good.get(path.as_path()) {
                        tracing::warn!(file = %path.display(), "keeping the last good version: {p}");
                        if by_slug.insert(good.slug.as_str(), path).is_none() {
                            studies.push(Arc::clone(good));
                        }
                    }
                    problems.push(p.clone());
                    continue;
                }
            };
            if let Some(first) = by_slug.get(study.slug.as_str()) {
                problems.push(Problem {
                    path: path.clone(),
                    line: 1,
                    message: format!(
                        "slug {:?} is already used by {}; give one of them another 'slug'",
                        study.slug.as_str(),
                        first.display()
                    ),
                });
                continue;
            }
            by_slug.insert(study.slug.as_str(), path);
            studies.push(Arc::clone(study));
        }
        Catalog::new(studies, problems, drafts)
    }
}

/// Whether `path` can have `name` as its file name: a cheap byte test that
/// is never false when the file name matches (trailing `/` and `/.` are
/// ignored, as `Path::file_name` ignores them).
fn ends_with_name(path: &Path, name: &[u8]) -> bool {
    let mut bytes = path.as_os_str().as_encoded_bytes();
    while let Some(rest) = bytes
        .strip_suffix(b"/")
        .or_else(|| bytes.strip_suffix(b"/."))
    {
        bytes = rest;
    }
    bytes.ends_with(name)
}

/// A sort key that orders paths as `Path::cmp` does (component by
/// component) for the normalized paths a walk produces: components joined by
/// NUL, which sorts below every byte of a name. Sorting 10,000 `Path`s
/// directly re-parses components on every comparison and costs ~10 ms.
fn path_order_key(path: &Path) -> Vec<u8> {
    let mut key = Vec::with_capacity(path.as_os_str().len());
    for (i, c) in path.components().enumerate() {
        if i > 0 {
            key.push(0);
        }
        key.extend_from_slice(c.as_os_str().as_encoded_bytes());
    }
    key
}

/// Where `path` really is, when that is outside `root` (both canonical).
fn escapes(root: &Path, path: &Path) -> Option<PathBuf> {
    let real = std::fs::canonicalize(path).ok()?;
    (!real.starts_with(root)).then_some(real)
}

fn is_content_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // Editors' temp and backup files: `.#x.md`, `x.md~`, `.x.md.swp`.
    !name.starts_with('.')
        && path
            .extension()
            .is_some_and(|e| e == "md" || e == "markdown")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_with_name_never_misses_a_file_name() {
        for p in ["/c/a/x.md", "c/x.md/", "c/x.md/.", "x.md", "/c//x.md"] {
            assert!(ends_with_name(Path::new(p), b"x.md"), "{p}");
        }
        assert!(!ends_with_name(Path::new("/c/a/y.md"), b"x.md"));
    }

    #[test]
    fn path_order_key_sorts_like_path_cmp() {
        let mut paths: Vec<PathBuf> = [
            "/c/a-b/x.md",
            "/c/a/b.md",
            "/c/a.md",
            "/c/a/b/c.md",
            "/c/a b/z.md",
            "/c/A/z.md",
            "/c/2025-03-14-x.md",
            "/c/2025/x.md",
            "/c/a.markdown",
            "/c/é/x.md",
        ]
        .iter()
        .map(PathBuf::from)
        .collect();
        let mut by_key = paths.clone();
        paths.sort();
        by_key.sort_by_cached_key(|p| path_order_key(p));
        assert_eq!(by_key, paths);
    }
}
