//! `casewire check`: configuration (already loaded by the caller), templates
//! and every content file, each problem as `path:line: what is wrong`.

use anyhow::Result;
use chrono::Utc;

use super::Exit;
use crate::config::Settings;
use crate::content::DirectoryStore;

pub fn run(settings: &Settings) -> Result<Exit> {
    let mut errors = 0usize;
    let catalog = DirectoryStore::new(settings).scan(None);
    for p in &catalog.problems {
        println!("{p}");
        errors += 1;
    }
    let warnings = catalog.warnings();
    for w in &warnings {
        println!("{w}");
    }
    for p in crate::templates::check(settings) {
        println!("{p}");
        errors += 1;
    }
    let now = Utc::now();
    let published = catalog.published(now).count();
    eprintln!(
        "{}: {} case studies published, {} scheduled, {} drafts; {} problem(s), {} warning(s)",
        settings.source.display(),
        published,
        catalog.len() - published,
        catalog.drafts,
        errors,
        warnings.len()
    );
    Ok(if errors == 0 { Exit::Ok } else { Exit::Failed })
}
