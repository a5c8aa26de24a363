//! `casewire feeds build [--out DIR]`: every feed, once.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::Utc;

use super::Exit;
use crate::config::Settings;
use crate::content::DirectoryStore;

pub fn build(settings: &Settings, out: Option<PathBuf>) -> Result<Exit> {
    let started = std::time::Instant::now();
    let out_dir = out.unwrap_or_else(|| settings.feeds.out_dir.clone());
    let catalog = DirectoryStore::new(settings).scan(None);
    for p in &catalog.problems {
        eprintln!("{p}");
    }
    let files = crate::feeds::build_all(settings, &catalog, Utc::now());
    let report = crate::feeds::output::write_all(&out_dir, &files)
        .with_context(|| format!("writing feeds to {}", out_dir.display()))?;
    crate::feeds::output::remove_unlisted_archive_files(&out_dir, &files);
    eprintln!(
        "{} feeds in {}: {} written, {} unchanged; {} case studies; {} problem(s); {:.0?}",
        files.len(),
        out_dir.display(),
        report.written,
        report.unchanged,
        catalog.len(),
        catalog.problems.len(),
        started.elapsed()
    );
    Ok(if catalog.problems.is_empty() {
        Exit::Ok
    } else {
        Exit::Failed
    })
}
