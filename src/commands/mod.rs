//! What each command does. Each returns the process exit status the command
//! line promises: 0 ok, 1 the work failed, 2 bad usage or configuration.

mod check;
mod editions;
mod feeds;
mod subscribers;

use anyhow::Result;

use crate::cli::{Cli, Command, DigestCommand, FeedsCommand};
use crate::config::{ConfigError, Settings};

/// Exit statuses of DESIGN.md's command-line contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Ok = 0,
    Failed = 1,
    Usage = 2,
}

pub fn load_settings(cli: &Cli) -> Result<Settings, ConfigError> {
    Settings::load(&cli.config)
}

/// Runs the command; errors that escape are reported by `main` with their cause chain.
pub fn dispatch(cli: Cli) -> Result<Exit> {
    let settings = match load_settings(&cli) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(Exit::Usage);
        }
    };
    // A missing content folder is a configuration fault, not "no content".
    if matches!(
        cli.command,
        Command::Check | Command::Run | Command::Feeds(FeedsCommand::Build { .. })
    ) {
        if let Err(p) = crate::content::DirectoryStore::new(&settings).check_root() {
            eprintln!(
                "error: {}: {} (set in {})",
                p.path.display(),
                p.message,
                settings.source.display()
            );
            return Ok(Exit::Usage);
        }
    }
    match cli.command {
        Command::Check => check::run(&settings),
        Command::Feeds(FeedsCommand::Build { out }) => feeds::build(&settings, out),
        Command::Schedule => editions::schedule(&settings),
        Command::Digest(DigestCommand::Preview {
            edition,
            subscriber,
            format,
        }) => editions::preview(&settings, &edition, subscriber, format),
        Command::Digest(DigestCommand::Send { edition, dry_run }) => {
            editions::send(&settings, &edition, dry_run)
        }
        Command::Status => editions::status(&settings),
        Command::Subscribers(cmd) => subscribers::run(&settings, cmd),
        Command::Run => {
            runtime()?.block_on(crate::app::run(cli.config.clone(), settings))?;
            Ok(Exit::Ok)
        }
        Command::Migrate => {
            runtime()?.block_on(async {
                crate::store::Db::open(&settings.database.url).await?;
                eprintln!(
                    "{}: migrations applied",
                    crate::config::redact(&settings.database.url)
                );
                anyhow::Ok(())
            })?;
            Ok(Exit::Ok)
        }
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
