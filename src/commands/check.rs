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
    errors += dkim(settings);
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

/// Loads the DKIM key (a problem counts as an error) and prints the TXT
/// record DNS must publish for it, on stdout so it can be copied or piped.
fn dkim(settings: &Settings) -> usize {
    let Some(d) = &settings.mail.dkim else {
        return 0;
    };
    match crate::delivery::dkim::DkimKey::load(d) {
        Ok(key) => {
            eprintln!("[mail] dkim: publish this record so receivers can verify the signature:");
            println!("{}", key.txt_record());
            0
        }
        Err(e) => {
            println!("{e}");
            1
        }
    }
}
