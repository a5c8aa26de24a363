//! Writing feed files: atomically (a temp file in the same folder, then a
//! rename), and only when the bytes differ, so readers of the folder never see
//! a half-written feed and unchanged files keep their mtime.

use std::io::{IoSlice, Write};
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
///
/// The files are written in parallel: each is a rename of its own, and a
/// one-file rebuild changes a dozen feeds of a few hundred kilobytes.
pub fn write_all(out_dir: &Path, files: &[FeedFile]) -> Result<WriteReport, OutputError> {
    use rayon::prelude::*;
    let written: Vec<bool> = files
        .par_iter()
        .map(|file| write_if_changed(&out_dir.join(&file.path), &file.body))
        .collect::<Result<_, _>>()?;
    let n = written.iter().filter(|w| **w).count();
    Ok(WriteReport {
        written: n,
        unchanged: written.len() - n,
    })
}

/// Returns whether the file was (re)written.
pub fn write_if_changed(path: &Path, body: &[u8]) -> Result<bool, OutputError> {
    write_parts_if_changed(path, &[body])
}

/// [`write_if_changed`] for a body made of `parts`, in order (written with
/// vectored writes, not joined first).
pub fn write_parts_if_changed(path: &Path, parts: &[&[u8]]) -> Result<bool, OutputError> {
    let err = |source| OutputError {
        path: path.to_owned(),
        source,
    };
    let len: usize = parts.iter().map(|p| p.len()).sum();
    // Only a file of the same length can hold the same bytes: read no other.
    if std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.len() == len as u64) {
        if let Ok(existing) = std::fs::read(path) {
            if same_bytes(&existing, parts) {
                return Ok(false);
            }
        }
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let mut builder = tempfile::Builder::new();
    builder.prefix(TEMP_PREFIX);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir).map_err(err)?;
    write_all_parts(&mut tmp, parts).map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(true)
}

fn same_bytes(existing: &[u8], parts: &[&[u8]]) -> bool {
    let mut rest = existing;
    for p in parts {
        match rest.split_at_checked(p.len()) {
            Some((head, tail)) if head == *p => rest = tail,
            _ => return false,
        }
    }
    rest.is_empty()
}

/// `Write::write_all` for several buffers (`write_all_vectored` is unstable).
fn write_all_parts(w: &mut impl Write, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = parts
        .iter()
        .filter(|p| !p.is_empty())
        .map(|p| IoSlice::new(p))
        .collect();
    let mut left = &mut slices[..];
    while !left.is_empty() {
        match w.write_vectored(left) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_written_in_order_and_compared_before_rewriting() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("archive/all/1.json");
        // More parts than one writev takes (IOV_MAX is 1024), some empty.
        let owned: Vec<Vec<u8>> = (0..3000)
            .map(|i| format!("{i}:").repeat(i % 3).into_bytes())
            .collect();
        let parts: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        let joined = parts.concat();
        assert!(write_parts_if_changed(&path, &parts).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), joined);
        assert!(!write_parts_if_changed(&path, &parts).unwrap());
        assert!(!write_if_changed(&path, &joined).unwrap());
        // The same length, other bytes: rewritten.
        let mut other = joined.clone();
        *other.last_mut().unwrap() = b'#';
        assert!(write_if_changed(&path, &other).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), other);
        // Shorter: rewritten, and no temp file left behind.
        assert!(write_parts_if_changed(&path, &[b"{}", b"\n"]).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"{}\n");
        assert_eq!(remove_stale_temp_files(dir.path()), 0);
    }
}
