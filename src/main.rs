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

/// mimalloc's `purge_delay` option (milliseconds before freed memory goes
/// back to the system; 10 by default). The bindings leave it unnamed and
/// take its number, its place in mimalloc's `mi_option_e`.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() -> ExitCode {
    let cli = casewire::cli::Cli::parse();
    if matches!(
        cli.command,
        casewire::cli::Command::Digest(casewire::cli::DigestCommand::Send { .. })
    ) {
        // `digest send` on SQLite queues on a thread of its own beside the
        // delivery pipeline, each with its own allocator heap. Returning
        // freed pages after 1 ms instead of 10 kept the 1,000,000-digest
        // run's peak RSS at 35.1 MB against 37.3 MB (41.1 MB in another
        // run), at the same speed (measured 2026-12-07). It applies on
        // PostgreSQL too, whose cells of that night's matrix ran with it.
        // SAFETY: one store to an option of the allocator, made before any
        // other thread of this process exists.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 1) };
    }
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
