//! Command-line definitions (clap). Behaviour lives in `commands`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "casewire",
    version,
    about = "Feeds and scheduled digest emails for a publication of engineering case studies"
)]
pub struct Cli {
    /// Configuration file.
    #[arg(
        long,
        short,
        global = true,
        default_value = "config/casewire.toml",
        env = "CASEWIRE_CONFIG"
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: migrate, load content, write and serve feeds, run schedules, deliver.
    Run,
    /// Validate the configuration, templates and every content file; list every problem.
    Check,
    /// Feed operations.
    #[command(subcommand)]
    Feeds(FeedsCommand),
    /// Show each edition with its next five fire times in its own time zone.
    Schedule,
    /// Preview or send digests.
    #[command(subcommand)]
    Digest(DigestCommand),
    /// Operator tools for the subscriber list.
    #[command(subcommand)]
    Subscribers(SubscribersCommand),
    /// Queue depth by state, last and next runs per edition, recent failures.
    Status,
    /// Apply database migrations (`run` does it too).
    Migrate,
    /// Bounces and complaints that came back (bounce mailbox, webhooks, SMTP).
    #[command(subcommand)]
    Bounces(BouncesCommand),
    /// The addresses nothing is sent to.
    #[command(subcommand)]
    Suppressions(SuppressionsCommand),
}

#[derive(Debug, Subcommand)]
pub enum BouncesCommand {
    /// List recorded bounces and complaints, newest first.
    List {
        /// Only those since this date or time (2026-11-30 or RFC 3339), or this many days back (7d).
        #[arg(long)]
        since: Option<String>,
        /// Only this kind: hard, soft or complaint.
        #[arg(long)]
        kind: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum SuppressionsCommand {
    /// List suppressed addresses with the reason.
    List {
        /// Only addresses containing this text.
        #[arg(long)]
        search: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: i64,
    },
    /// Suppress an address (nothing more is sent to it, queued mail included).
    Add {
        email: String,
        /// Why, for the record.
        #[arg(long, default_value = "added by an operator")]
        reason: String,
    },
    /// Lift a suppression. A subscriber who left must still sign up again and confirm.
    Remove { email: String },
}

#[derive(Debug, Subcommand)]
pub enum FeedsCommand {
    /// Build all feeds once and exit.
    Build {
        /// Output folder (default: feeds.out_dir).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum PreviewFormat {
    Html,
    Text,
    Eml,
}

#[derive(Debug, Subcommand)]
pub enum DigestCommand {
    /// Render an edition's digest without sending it.
    Preview {
        /// Edition slug.
        edition: String,
        /// Render as this subscriber would receive it (default: a subscriber following everything).
        #[arg(long)]
        subscriber: Option<String>,
        #[arg(long, value_enum, default_value = "html")]
        format: PreviewFormat,
    },
    /// Run an edition now and wait until its messages are delivered.
    Send {
        /// Edition slug.
        edition: String,
        /// Show what would be sent, send nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Resume an edition that paused itself (its messages were being refused).
    Resume {
        /// Edition slug.
        edition: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum SubscribersCommand {
    /// Add a confirmed subscriber.
    Add {
        email: String,
        #[arg(long)]
        name: Option<String>,
        /// Category slugs (repeat or separate by commas); none means all.
        #[arg(long, value_delimiter = ',')]
        categories: Vec<String>,
        /// Edition slugs (repeat or separate by commas); none means the first configured edition.
        #[arg(long, value_delimiter = ',')]
        editions: Vec<String>,
    },
    /// Remove a subscriber and erase their personal data.
    Remove { email: String },
    /// Log a subscriber out everywhere: every link sent to them so far stops
    /// working (messages sent from now on carry new ones).
    RevokeLinks { email: String },
    /// List subscribers.
    List {
        /// Only addresses or names containing this text.
        #[arg(long)]
        search: Option<String>,
    },
    /// Import subscribers from CSV (header: email,name,categories,editions,status).
    Import { file: PathBuf },
    /// Export subscribers as CSV to standard output.
    Export,
}
