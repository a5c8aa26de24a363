//! What each command does. Each returns the process exit status the command
//! line promises: 0 ok, 1 the work failed, 2 bad usage or configuration.

mod check;
mod feeds;
mod subscribers;

use anyhow::Result;

use crate::cli::{Cli, Command, FeedsCommand};
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
    match cli.command {
        Command::Check => check::run(&settings),
        Command::Feeds(FeedsCommand::Build { out }) => feeds::build(&settings, out),
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
        other => {
            eprintln!(
                "error: `{}` is not available in this build",
                command_name(&other)
            );
            Ok(Exit::Usage)
        }
    }
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn command_name(c: &Command) -> &'static str {
    match c {
        Command::Run => "run",
        Command::Check => "check",
        Command::Feeds(_) => "feeds",
        Command::Schedule => "schedule",
        Command::Digest(_) => "digest",
        Command::Subscribers(_) => "subscribers",
        Command::Status => "status",
        Command::Migrate => "migrate",
    }
}
