//! What each command does. Each returns the process exit status the command
//! line promises: 0 ok, 1 the work failed, 2 bad usage or configuration.

/// `println!` for command output: a reader that went away (`casewire status
/// | head`) ends the process quietly with status 0, as ripgrep does, instead
/// of the panic `println!` gives on a broken pipe.
macro_rules! outln {
    () => { $crate::commands::write_stdout(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::commands::write_stdout(format_args!("{}\n", format_args!($($arg)*))) };
}

/// `print!` with the same broken-pipe rule as [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => { $crate::commands::write_stdout(format_args!($($arg)*)) };
}

mod admin;
mod bounces;
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

/// Writes command output to stdout; see [`outln!`].
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args) {
        exit_on_broken_pipe(&e);
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(Exit::Failed as i32);
    }
}

/// Stdout for writers (CSV) that report errors in their own types: a broken
/// pipe ends the process quietly, as [`outln!`] does.
pub struct QuietStdout<'a>(pub std::io::StdoutLock<'a>);

impl std::io::Write for QuietStdout<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write(buf).inspect_err(exit_on_broken_pipe)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush().inspect_err(exit_on_broken_pipe)
    }
}

/// Ends the process with status 0 when `e` says stdout's reader went away.
pub fn exit_on_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(Exit::Ok as i32);
    }
}

/// Whether an error that escaped a command is a broken pipe (e.g. a CSV
/// export written into `| head`).
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            || c.downcast_ref::<csv::Error>().is_some_and(|c| {
                matches!(c.kind(), csv::ErrorKind::Io(io) if io.kind() == std::io::ErrorKind::BrokenPipe)
            })
    })
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
        Command::Digest(DigestCommand::Resume { edition }) => editions::resume(&settings, &edition),
        Command::Status => editions::status(&settings),
        Command::Bounces(cmd) => bounces::bounces(&settings, cmd),
        Command::Suppressions(cmd) => bounces::suppressions(&settings, cmd),
        Command::Subscribers(cmd) => subscribers::run(&settings, cmd),
        Command::Admin(cmd) => admin::run(&settings, cmd),
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

/// A runtime on the calling thread, for `digest send` on SQLite: the
/// command's delivery pipeline is tasks that hand work to each other many
/// times a message, and on one thread none of those hand-offs wakes another
/// thread, while sqlx's SQLite thread and the relay have the other cores.
/// (The edition run that queues the rows has a thread and a runtime of its
/// own: `editions::queue_apart`.)
/// Measured 2026-12-07 at 20,000 × 9 KB, against the multi-threaded runtime
/// with the same allocator: 6% less CPU, and a peak RSS 1.6 MB lower in the
/// 1,000,000-subscriber run. On PostgreSQL (whose replies, likely, then
/// wait their turn behind the SMTP sessions) 100,000 × 9 KB ran 3–17%
/// slower in three pairs, so there the runtime stays multi-threaded.
pub fn single_thread_runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}
