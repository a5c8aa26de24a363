//! Writing feed files: atomically (a temp file in the same folder, then a
//! rename), and only when the bytes differ, so readers of the folder never see
//! a half-written feed and unchanged files keep their mtime.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::FeedFile;

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

/// Most threads writing at once. Each changed file waits for its own
/// `fdatasync` (4–8 ms on a VM disk); run one after another, nine changed
/// feeds cost ~50 ms, while the journal commits concurrent syncs together.
const WRITERS: usize = 16;

/// Writes every file that changed. Files are written concurrently; on failure
/// every file has been tried and the first error (in `files` order) is returned.
pub fn write_all(out_dir: &Path, files: &[FeedFile]) -> Result<WriteReport, OutputError> {
    let next = AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<bool, OutputError>)> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..files.len().min(WRITERS))
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(file) = files.get(i) else { break };
                        done.push((i, write_if_changed(&out_dir.join(&file.path), &file.body)));
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a feed writer panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let mut report = WriteReport::default();
    for (_, result) in results {
        if result? {
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
    builder.prefix(".casewire-");
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    let mut tmp = builder.tempfile_in(dir).map_err(err)?;
    tmp.write_all(body).map_err(err)?;
    tmp.as_file().sync_data().map_err(err)?;
    tmp.persist(path).map_err(|e| err(e.error))?;
    Ok(true)
}
