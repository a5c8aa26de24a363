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
        outln!("{p}");
        errors += 1;
    }
    let warnings = catalog.warnings();
    for w in &warnings {
        outln!("{w}");
    }
    let schedule_warnings = schedules(settings, Utc::now());
    for w in &schedule_warnings {
        outln!("{w}");
    }
    for p in crate::templates::check(settings) {
        outln!("{p}");
        errors += 1;
    }
    errors += dkim(settings);
    link_key(settings);
    let now = Utc::now();
    let published = catalog.published(now).count();
    eprintln!(
        "{}: {} case studies published, {} scheduled, {} drafts; {} problem(s), {} warning(s)",
        settings.source.display(),
        published,
        catalog.len() - published,
        catalog.drafts,
        errors,
        warnings.len() + schedule_warnings.len()
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
            outln!("{}", key.txt_record());
            0
        }
        Err(e) => {
            outln!("{e}");
            1
        }
    }
}

/// How far ahead a schedule must fire at least once.
const SCHEDULE_HORIZON_YEARS: i32 = 5;

/// A warning for each cron schedule that never fires in the next five years
/// (`0 0 30 2 *`, February 30th, parses but never comes).
fn schedules(settings: &Settings, now: chrono::DateTime<Utc>) -> Vec<String> {
    use crate::config::ScheduleSpec;
    let text = std::fs::read_to_string(&settings.source).unwrap_or_default();
    let horizon = now
        .checked_add_months(chrono::Months::new(12 * SCHEDULE_HORIZON_YEARS as u32))
        .unwrap_or(now);
    let mut out = Vec::new();
    for e in &settings.editions {
        let ScheduleSpec::Cron(cron) = &e.schedule else {
            continue;
        };
        if cron
            .next_after(now, e.timezone)
            .is_some_and(|t| t <= horizon)
        {
            continue;
        }
        // The line of the schedule in the file (1 when it came from the environment).
        let line = text
            .lines()
            .position(|l| {
                let l = l.trim_start();
                l.starts_with("schedule") && l.contains(cron.as_str())
            })
            .map_or(1, |i| i + 1);
        out.push(format!(
            "{}:{line}: warning: edition '{}': schedule \"{}\" never fires in the next {SCHEDULE_HORIZON_YEARS} years (no such date?); fix the day or month",
            settings.source.display(),
            e.slug,
            cron.as_str()
        ));
    }
    out
}

/// Warns (not an error: the daemon still runs) when the link key can be
/// read by other users, who could then forge unsubscribe and preferences links.
fn link_key(settings: &Settings) {
    let path = &settings.database.key_file;
    match crate::subscribers::links::readable_by_others(path) {
        Ok(true) => outln!(
            "{}: warning: the link key is readable by other users; restrict it with `chmod 600 {}`",
            path.display(),
            path.display()
        ),
        Ok(false) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => eprintln!(
            "{}: no link key yet; `casewire run` creates it (mode 0600)",
            path.display()
        ),
        Err(e) => outln!(
            "{}: warning: cannot inspect the link key: {e}",
            path.display()
        ),
    }
}
