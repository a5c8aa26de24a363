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
    let (paths, report) = crate::feeds::write_every(settings, &catalog, Utc::now(), &out_dir)
        .with_context(|| format!("writing feeds to {}", out_dir.display()))?;
    crate::feeds::output::remove_unlisted_archive_files(&out_dir, paths.iter().map(String::as_str));
    eprintln!(
        "{} feeds in {}: {} written, {} unchanged; {} case studies; {} problem(s); {:.0?}",
        paths.len(),
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
