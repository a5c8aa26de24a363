//! `casewire bounces list` and `casewire suppressions list|add|remove`.

use anyhow::Result;
use chrono::{DateTime, NaiveDate, Utc};

use super::Exit;
use crate::bounces::Kind;
use crate::cli::{BouncesCommand, SuppressionsCommand};
use crate::config::Settings;
use crate::domain::EmailAddress;
use crate::store::Db;

/// `--since`: a date, an RFC 3339 time, or `N`d days back.
fn since(text: &str) -> Option<DateTime<Utc>> {
    let t = text.trim();
    if let Some(days) = t.strip_suffix('d').and_then(|d| d.parse::<i64>().ok()) {
        return Some(Utc::now() - chrono::Duration::days(days));
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(t) {
        return Some(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(t, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
}

pub fn bounces(settings: &Settings, cmd: BouncesCommand) -> Result<Exit> {
    let BouncesCommand::List {
        since: s,
        kind,
        limit,
    } = cmd;
    let since = match s.as_deref().map(|t| (t, since(t))) {
        None => None,
        Some((_, Some(t))) => Some(t),
        Some((t, None)) => {
            eprintln!(
                "--since {t:?}: expected a date (2026-11-30), an RFC 3339 time or days back (7d)"
            );
            return Ok(Exit::Usage);
        }
    };
    let kind = match kind.as_deref().map(|k| (k, Kind::parse(k))) {
        None => None,
        Some((_, Some(k))) => Some(k),
        Some((k, None)) => {
            eprintln!("--kind {k:?}: expected hard, soft or complaint");
            return Ok(Exit::Usage);
        }
    };
    super::runtime()?.block_on(async {
        let db = Db::open(&settings.database.url).await?;
        let events = crate::store::bounces::list(&db, since, kind, limit).await?;
        if events.is_empty() {
            eprintln!(
                "no bounces or complaints recorded{}",
                if since.is_some() { " in that time" } else { "" }
            );
        }
        for e in events {
            outln!(
                "{}  {:<9} {:<8} {:<6} {}  {}{}",
                e.at.format("%Y-%m-%d %H:%M:%S"),
                e.kind,
                e.source,
                e.status.as_deref().unwrap_or("-"),
                e.email,
                e.diagnostic,
                e.edition.map(|ed| format!("  [{ed}]")).unwrap_or_default()
            );
        }
        Ok(Exit::Ok)
    })
}

pub fn suppressions(settings: &Settings, cmd: SuppressionsCommand) -> Result<Exit> {
    super::runtime()?.block_on(async {
        let db = Db::open(&settings.database.url).await?;
        match cmd {
            SuppressionsCommand::List { search, limit } => {
                for (email, reason, at) in crate::store::bounces::suppressions(&db, search.as_deref(), limit).await? {
                    outln!("{}  {email}  {reason}", at.format("%Y-%m-%d %H:%M:%S"));
                }
                Ok(Exit::Ok)
            }
            SuppressionsCommand::Add { email, reason } => {
                let email = match EmailAddress::parse(&email) {
                    Ok(e) => e,
                    Err(e) => {
                        eprintln!("{email:?}: {e}");
                        return Ok(Exit::Usage);
                    }
                };
                let _turn = db.write_turn().await;
                let mut conn = db.pool.acquire().await?;
                crate::store::subscribers::suppress(&mut conn, email.as_str(), &reason, Utc::now()).await?;
                eprintln!("{email}: suppressed");
                Ok(Exit::Ok)
            }
            SuppressionsCommand::Remove { email } => {
                let email = match EmailAddress::parse(&email) {
                    Ok(e) => e,
                    Err(e) => {
                        eprintln!("{email:?}: {e}");
                        return Ok(Exit::Usage);
                    }
                };
                if crate::store::bounces::unsuppress(&db, email.as_str()).await? {
                    eprintln!("{email}: no longer suppressed (a subscriber who left must sign up again and confirm)");
                    Ok(Exit::Ok)
                } else {
                    eprintln!("{email}: was not suppressed");
                    Ok(Exit::Failed)
                }
            }
        }
    })
}
