//! Writing feed files: atomically (a temp file in the same folder, then a
//! rename), and only when the bytes differ, so readers of the folder never see
//! a half-written feed and unchanged files keep their mtime.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::FeedFile;

/// Name prefix of the temp files a write renames over the feed.
pub const TEMP_PREFIX: &str = ".casewire-";

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WriteReport {
    pub written: usize,
    pub unchanged: usize,
}

#[derive(Debug, thiserror::Error)]
#[error("{path}: cannot write the feed: {source}")]
pub struct OutputError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// Writes every file that changed.
///
/// No fsync: feed files are derived data, and the daemon compares and
/// rewrites every feed at start, so a file cut short by a power loss is
/// repaired on the next start. Skipping it keeps a one-file rebuild in the
/// low milliseconds instead of waiting 4–8 ms per file on a VM disk.
pub fn write_all(out_dir: &Path, files: &[FeedFile]) -> Result<WriteReport, OutputError> {
    let mut report = WriteReport::default();
    for file in files {
        if write_if_changed(&out_dir.join(&file.path), &file.body)? {
            report.written += 1;
        } else {
            report.unchanged += 1;
        }
    }
    Ok(report)
}

/// Returns whether the file was (re)written.
pub fn write_if_changed(path: &Path, body: &[u8]) -> Result<bool, OutputError> {
    let err = |source| OutputError {
        path: path.to_owned(),
        source,
    };
    if let Ok(existing) = std::fs::read(path) {
        if existing == body {
            return Ok(false);
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir).map_err(err)?;
    tmp.write_all(body).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(true)
}

/// Removes the `.casewire-*` temp files that a write killed mid-way (kill -9,
/// power loss) left in `out_dir` and its folders; returns how many. Called at
/// start, before any write of this process, so none of them is in use.
pub fn remove_stale_temp_files(out_dir: &Path) -> usize {
    walkdir::WalkDir::new(out_dir)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_file() && e.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
        })
        .filter(|e| match std::fs::remove_file(e.path()) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(file = %e.path().display(), "cannot remove a stale temp file: {err}");
                false
            }
        })
        .count()
}

/// Removes archive documents under `out_dir/archive/` that `paths` (below
/// `out_dir`) does not list (pages of a scope that shrank, of a removed
/// category, or numbered for another `feeds.archive_page_size`); returns how
/// many. Called after a full build, so every document that should exist is
/// listed.
pub fn remove_unlisted_archive_files<'a>(
    out_dir: &Path,
    paths: impl IntoIterator<Item = &'a str>,
) -> usize {
    let listed: std::collections::HashSet<PathBuf> =
        paths.into_iter().map(|p| out_dir.join(p)).collect();
    let root = out_dir.join(super::history::DIR);
    if !root.is_dir() {
        return 0;
    }
    walkdir::WalkDir::new(&root)
        .min_depth(2)
        .max_depth(2)
        .follow_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_file()
                && !listed.contains(e.path())
                && e.path().extension().is_some_and(|x| x == "xml" || x == "json")
                && e.path()
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .is_some_and(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter(|e| match std::fs::remove_file(e.path()) {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(file = %e.path().display(), "cannot remove an old archive document: {err}");
                false
            }
        })
        .count()
}
