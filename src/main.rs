use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

/// mimalloc instead of glibc's malloc: a digest allocates and frees many
/// small buffers across threads, and glibc's malloc and free were about a
/// tenth of `digest send`'s CPU. Built without transparent huge pages
/// (`no_thp`), which otherwise raised the peak RSS of a 20,000-digest run
/// from 33 to 70 MB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = casewire::cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("casewire=info,warn")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match casewire::commands::dispatch(cli) {
        Ok(exit) => ExitCode::from(exit as u8),
        // The reader of stdout went away (`| head`): not a failure.
        Err(e) if casewire::commands::is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(casewire::commands::Exit::Failed as u8)
        }
    }
}
