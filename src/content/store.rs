//! The directory store and the catalog snapshot built from it.
//!
//! A scan reads every `*.md` file below the content folder in parallel, keeps
//! the case studies that parse and reports the rest as [`Problem`]s. A file
//! that stops parsing keeps its last good version (DESIGN.md invariant 5) when
//! the previous catalog is given. The [`Catalog`] is immutable: a change makes a
//! new one, which the daemon swaps in whole.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Reads case studies from a content folder.
pub struct DirectoryStore<'a> {
    settings: &'a Settings,
    root: PathBuf,
}

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
        Self { settings, root }
    }

    /// Every `.md` file below the root, sorted, so duplicate slugs resolve the same way each time.
    pub fn files(&self) -> Result<Vec<PathBuf>, Problem> {
        if !self.root.is_dir() {
            return Err(Problem {
                path: self.root.clone(),
                line: 0,
                message: "the content folder does not exist or is not a folder ([content] dir)"
                    .into(),
            });
        }
        let mut files: Vec<PathBuf> = walkdir::WalkDir::new(&self.root)
            .follow_links(true)
            .into_iter()
            .filter_map(Result::ok)
            .filter(|e| e.file_type().is_file() && is_content_file(e.path()))
            .map(|e| e.into_path())
            .collect();
        files.sort();
        Ok(files)
    }

    /// A full scan. With `previous`, a file that fails keeps its last good version.
    pub fn scan(&self, previous: Option<&Catalog>) -> Catalog {
        let files = match self.files() {
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
        self.assemble(results, previous, &[])
    }

    /// Re-reads only `changed` paths (added, modified or removed) and reuses
    /// everything else from `previous`: the daemon's fast path.
    pub fn update(&self, previous: &Catalog, changed: &[PathBuf]) -> Catalog {
        let changed: Vec<&PathBuf> = changed.iter().filter(|p| is_content_file(p)).collect();
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
                if !changed.iter().any(|c| *c == p) {
                    results.push((p.clone(), FileResult::Study(Arc::clone(s))));
                }
            }
        }
        for path in changed {
            if path.is_file() {
                results.push((path.clone(), self.read_one(path)));
            }
        }
        results.sort_by(|a, b| a.0.cmp(&b.0));
        results.dedup_by(|a, b| a.0 == b.0 && matches!(b.1, FileResult::Problem(_)));
        let upstream: Vec<Arc<CaseStudy>> = previous
            .studies
            .iter()
            .filter(|s| matches!(s.origin, Origin::Upstream { .. }))
            .cloned()
            .collect();
        self.assemble(results, Some(previous), &upstream)
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
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => return problem(format!("cannot read the file: {e}")),
        };
        match CaseStudy::from_file(path, &bytes, self.settings) {
            Ok(Parsed::Study(s)) => FileResult::Study(Arc::new(s)),
            Ok(Parsed::Draft) => FileResult::Skip { draft: true },
            Ok(Parsed::NotAnEntry) => FileResult::Skip { draft: false },
            Err(p) => FileResult::Problem(p),
        }
    }

    fn assemble(
        &self,
        results: Vec<(PathBuf, FileResult)>,
        previous: Option<&Catalog>,
        extra: &[Arc<CaseStudy>],
    ) -> Catalog {
        let last_good: HashMap<&Path, &Arc<CaseStudy>> = previous
            .map(|c| {
                c.studies
                    .iter()
                    .filter_map(|s| s.path().map(|p| (p, s)))
                    .collect()
            })
            .unwrap_or_default();
        let mut by_slug: BTreeMap<String, PathBuf> = BTreeMap::new();
        let mut studies = Vec::with_capacity(results.len());
        let mut problems = Vec::new();
        let mut drafts = 0;
        for s in extra {
            by_slug.insert(s.slug.to_string(), PathBuf::from(s.link.as_str()));
            studies.push(s.clone());
        }
        for (path, result) in results {
            let study = match result {
                FileResult::Study(s) => s,
                FileResult::Skip { draft } => {
                    drafts += usize::from(draft);
                    continue;
                }
                FileResult::Problem(p) => {
                    if let Some(good) = last_good.get(path.as_path()) {
                        tracing::warn!(file = %path.display(), "keeping the last good version: {p}");
                        if by_slug
                            .insert(good.slug.to_string(), path.clone())
                            .is_none()
                        {
                            studies.push(Arc::clone(good));
                        }
                    }
                    problems.push(p);
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
            by_slug.insert(study.slug.to_string(), path);
            studies.push(study);
        }
        Catalog::new(studies, problems, drafts)
    }
}

fn is_content_file(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    // Editors' temp and backup files: `.#x.md`, `x.md~`, `.x.md.swp`.
    !name.starts_with('.')
        && path
            .extension()
            .is_some_and(|e| e == "md" || e == "markdown")
}
