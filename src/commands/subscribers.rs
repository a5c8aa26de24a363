//! `casewire subscribers add|remove|list|import FILE.csv|export`: operator
//! tools over the same service functions the HTTP API uses.

use std::io::Write;

use anyhow::{Context, Result};

use super::{runtime, Exit};
use crate::cli::SubscribersCommand;
use crate::config::Settings;
use crate::store::subscribers::{self as store, Status};
use crate::store::Db;
use crate::subscribers::{self, import, SignUp, SubscriberError};

pub fn run(settings: &Settings, command: SubscribersCommand) -> Result<Exit> {
    runtime()?.block_on(async {
        let db = Db::open(&settings.database.url).await.with_context(|| {
            format!(
                "opening the database {}",
                crate::config::redact(&settings.database.url)
            )
        })?;
        let exit = match command {
            SubscribersCommand::Add {
                email,
                name,
                categories,
                editions,
            } => {
                let req = SignUp {
                    email,
                    name: name.unwrap_or_default(),
                    categories,
                    editions,
                };
                match subscribers::add(
                    settings,
                    &db,
                    &req,
                    Status::Confirmed,
                    "cli",
                    chrono::Utc::now(),
                )
                .await
                {
                    Ok(s) => {
                        eprintln!(
                            "added {} (confirmed; categories: {}; editions: {})",
                            s.email,
                            or_all(&s.categories),
                            s.editions.join(", ")
                        );
                        Exit::Ok
                    }
                    Err(e) => report(e)?,
                }
            }
            SubscribersCommand::Remove { email } => match subscribers::erase(&db, &email).await {
                Ok(s) => {
                    eprintln!("removed {} and erased their personal data", s.email);
                    Exit::Ok
                }
                Err(e) => report(e)?,
            },
            SubscribersCommand::RevokeLinks { email } => {
                match subscribers::revoke_links(&db, &email).await {
                    Ok(s) => {
                        eprintln!("every link sent to {} so far no longer works", s.email);
                        Exit::Ok
                    }
                    Err(e) => report(e)?,
                }
            }
            SubscribersCommand::List { search } => {
                let mut conn = db.pool.acquire().await?;
                let stdout = std::io::stdout();
                let mut out = stdout.lock();
                let mut offset = 0;
                let mut total;
                loop {
                    let (page, all) =
                        store::list(&mut conn, search.as_deref(), 1000, offset).await?;
                    total = all;
                    if page.is_empty() {
                        break;
                    }
                    offset += page.len() as i64;
                    for s in &page {
                        writeln!(
                            out,
                            "{}\t{}\t{}\t{}\t{}",
                            s.email,
                            s.status.as_str(),
                            s.name,
                            or_all(&s.categories),
                            s.editions.join(",")
                        )?;
                    }
                }
                eprintln!("{total} subscriber(s)");
                Exit::Ok
            }
            SubscribersCommand::Import { file } => {
                let f = match std::fs::File::open(&file) {
                    Ok(f) => f,
                    Err(e) => {
                        eprintln!("error: {}: cannot open: {e}", file.display());
                        return Ok(Exit::Usage);
                    }
                };
                let len = f.metadata().map(|m| m.len()).unwrap_or(0);
                let bar = indicatif::ProgressBar::with_draw_target(
                    Some(len),
                    indicatif::ProgressDrawTarget::stderr(),
                );
                bar.set_style(
                    indicatif::ProgressStyle::with_template(
                        "{spinner} importing [{bar:40}] {bytes}/{total_bytes} ({eta})",
                    )
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                    .progress_chars("=> "),
                );
                let reader = std::io::BufReader::with_capacity(1 << 16, f);
                let result =
                    import::import(settings, &db, reader, "import", chrono::Utc::now(), |pos| {
                        bar.set_position(pos)
                    })
                    .await;
                bar.finish_and_clear();
                match result {
                    Ok(r) => {
                        for e in &r.errors {
                            eprintln!("{}:{}: {}", file.display(), e.line, e.message);
                        }
                        eprintln!(
                            "{}: imported {}, unchanged {} (already present), rejected {}",
                            file.display(),
                            r.imported,
                            r.unchanged,
                            r.errors.len()
                        );
                        if r.errors.is_empty() {
                            Exit::Ok
                        } else {
                            Exit::Failed
                        }
                    }
                    Err(SubscriberError::Invalid { message, .. }) => {
                        eprintln!("error: {}:{message}", file.display());
                        Exit::Failed
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            SubscribersCommand::Export => {
                let stdout = super::QuietStdout(std::io::stdout().lock());
                let n = import::export(&db, std::io::BufWriter::new(stdout)).await?;
                eprintln!("exported {n} subscriber(s)");
                Exit::Ok
            }
        };
        db.pool.close().await;
        Ok(exit)
    })
}

fn or_all(categories: &[String]) -> String {
    if categories.is_empty() {
        "all".into()
    } else {
        categories.join(",")
    }
}

/// Input and lookup problems are the operator's to fix (exit 1 or 2); the rest propagate.
fn report(e: SubscriberError) -> Result<Exit> {
    match e {
        SubscriberError::Invalid { .. } => {
            eprintln!("error: {e}");
            Ok(Exit::Usage)
        }
        SubscriberError::NotFound(_) | SubscriberError::Exists(_) => {
            eprintln!("error: {e}");
            Ok(Exit::Failed)
        }
        other => Err(other.into()),
    }
}
