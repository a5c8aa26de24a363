//! Configuration: one TOML file read into raw serde structs (unknown keys are
//! rejected), overridden by `CASEWIRE_SECTION__KEY` environment variables, then
//! validated into typed [`Settings`]. Every default lives in this file, and
//! every error names the file, the key and what would be valid.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::Slug;

/// Prefix of environment variables that override file values.
pub const ENV_PREFIX: &str = "CASEWIRE_";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the configuration file: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

// ---------------------------------------------------------------------------
// Raw settings: the file's shape, nothing checked beyond types.

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    site: RawSite,
    #[serde(default)]
    content: RawContent,
    #[serde(default)]
    feeds: RawFeeds,
    #[serde(default)]
    database: RawDatabase,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    mail: RawMail,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    templates: RawTemplates,
    #[serde(default)]
    bounces: crate::bounces::config::RawBounces,
    #[serde(default)]
    categories: Vec<RawCategory>,
    #[serde(default)]
    editions: Vec<RawEdition>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawSite {
    title: String,
    #[serde(default)]
    description: String,
    base_url: String,
    language: Option<String>,
    permalink: Option<String>,
    author: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawContent {
    dir: Option<PathBuf>,
    #[serde(default)]
    sources: Vec<RawSource>,
    max_file_kb: Option<u64>,
    rescan_seconds: Option<u64>,
    sections: Option<Vec<RawSection>>,
    #[serde(default)]
    expected_sections: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawSection {
    key: String,
    headings: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawSource {
    feed: String,
    category: Option<String>,
    poll_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawFeeds {
    out_dir: Option<PathBuf>,
    items: Option<i64>,
    archive_page_size: Option<i64>,
    websub_hub: Option<String>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    url: Option<String>,
    key_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: Option<String>,
    admin_token: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    signup_min_seconds: Option<u64>,
    form_key_file: Option<PathBuf>,
    header_timeout_seconds: Option<u64>,
    idle_timeout_seconds: Option<u64>,
    max_connections: Option<u64>,
    max_connections_per_ip: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    session_idle_minutes: Option<u64>,
    session_max_hours: Option<u64>,
    login_attempts_per_account: Option<u64>,
    login_attempts_per_ip: Option<u64>,
    login_refill_seconds: Option<u64>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawMail {
    from: Option<String>,
    reply_to: Option<String>,
    transport: Option<String>,
    file_dir: Option<PathBuf>,
    smtp_url: Option<String>,
    concurrency: Option<i64>,
    rate_per_second: Option<f64>,
    poll_seconds: Option<u64>,
    bounce_domain: Option<String>,
    max_attempts: Option<i64>,
    timeout_seconds: Option<u64>,
    allow_plaintext_auth: Option<bool>,
    dkim: Option<RawDkim>,
    welcome: Option<bool>,
    welcome_items: Option<i64>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawDkim {
    selector: String,
    domain: String,
    key_file: PathBuf,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawTemplates {
    dir: Option<PathBuf>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawCategory {
    slug: String,
    name: String,
    #[serde(default)]
    description: String,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct RawEdition {
    slug: String,
    name: String,
    schedule: String,
    timezone: Option<String>,
    max_items: Option<i64>,
    #[serde(default)]
    categories: Vec<String>,
    subject: Option<String>,
    pause_above: Option<crate::bounces::config::PauseAbove>,
    expire_after: Option<String>,
    #[serde(default)]
    local_time: bool,
}

// ---------------------------------------------------------------------------
// Validated settings.

/// The whole, validated configuration. Built only by [`Settings::load`] or
/// [`Settings::from_toml`], so every field has been checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the settings came from, for messages.
    pub source: PathBuf,
    pub site: Site,
    pub content: ContentSettings,
    pub feeds: FeedSettings,
    pub database: DatabaseSettings,
    pub http: HttpSettings,
    pub mail: MailSettings,
    pub admin: AdminSettings,
    pub templates: TemplateSettings,
    /// `[bounces]`: bounce mailbox, webhooks, and the bounce policy.
    pub bounces: crate::bounces::config::BounceSettings,
    pub categories: Vec<Category>,
    pub editions: Vec<Edition>,
}

#[derive(Debug, Clone)]
pub struct Site {
    /// The publication's name; feed titles start with it.
    pub title: String,
    pub description: String,
    /// Public URL of the site, always ending in `/`. Links and feed ids are built from it.
    pub base_url: url::Url,
    /// BCP 47 language tag (default "en").
    pub language: String,
    /// Path of a case study's page below base_url; `{slug}` is replaced
    /// (default "case-studies/{slug}/"). Feed ids derive from it, so changing
    /// it changes every id.
    pub permalink: String,
    /// Feed-level author (default: the site title).
    pub author: String,
}

#[derive(Debug, Clone)]
pub struct ContentSettings {
    /// Folder of Markdown case studies (default "content").
    pub dir: PathBuf,
    /// Upstream RSS/Atom feeds whose entries become case studies.
    pub sources: Vec<Source>,
    /// Files larger than this are rejected (default 1024 KiB).
    pub max_file_bytes: u64,
    /// Full rescan interval, the safety net under file-system events (default 300 s).
    pub rescan_interval: Duration,
    /// The sections case studies are written in, recognised by their
    /// headings (default [`crate::content::sections::defaults`]); those named
    /// in `expected_sections` make `check` warn when a case study lacks them.
    pub sections: Vec<crate::content::sections::SectionSpec>,
}

#[derive(Debug, Clone)]
pub struct Source {
    pub feed: url::Url,
    /// Category given to every entry; None takes the entry's own categories.
    pub category: Option<Slug>,
    /// Poll interval (default 900 s).
    pub poll_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct FeedSettings {
    /// Where `feeds build` and the daemon write feeds (default "public/feeds").
    pub out_dir: PathBuf,
    /// Newest entries per feed (default 50, 1–1000).
    pub items: usize,
    /// Entries per RFC 5005 archive document (default 50, 1–1000). Pages are
    /// numbered from the oldest case study, so changing it renumbers every
    /// archive document (aggregators then re-read the history).
    pub archive_page_size: usize,
    /// WebSub hub to notify and advertise; None disables WebSub.
    pub websub_hub: Option<url::Url>,
}

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `sqlite://path` (default "sqlite://data/casewire.db") or `postgres://…`.
    pub url: String,
    /// The server key that signs confirmation and manage links, created
    /// (mode 0600) on first use; never in the database. Default: beside an
    /// SQLite file with the extension `.key` (`data/casewire.key`), and
    /// `data/casewire.key` for PostgreSQL.
    pub key_file: PathBuf,
}

/// The link key's default path: beside an SQLite file, else under `data/`.
fn default_key_file(db_url: &str) -> PathBuf {
    let fallback = || PathBuf::from("data/casewire.key");
    let Some(rest) = db_url.strip_prefix("sqlite:") else {
        return fallback();
    };
    let path = rest.trim_start_matches("//");
    let path = path.split('?').next().unwrap_or(path);
    if path.is_empty() || path.starts_with(":memory:") {
        return fallback();
    }
    PathBuf::from(path).with_extension("key")
}

#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Address the daemon listens on (default 127.0.0.1:8080).
    pub listen: SocketAddr,
    /// Bearer token for /api/v1; None disables the admin API.
    pub admin_token: Option<String>,
    /// Reverse proxies (CIDRs) whose `Forwarded` / `X-Forwarded-For` headers
    /// name the client for the per-IP sign-up limit; empty trusts none.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Least time between rendering the sign-up form and submitting it
    /// (default 3 s); faster submissions are treated as bots. 0 turns the
    /// check off (then no signed form stamp is required either).
    pub signup_min_delay: Duration,
    /// File holding the server key that signs form stamps (default
    /// "data/form.key"; created with a random key when missing). Daemons that
    /// share a database must share this file.
    pub form_key_file: PathBuf,
    /// A request's head (request line and headers) must arrive within this
    /// long of its first byte (default 10 s), or the connection is closed.
    pub header_timeout: Duration,
    /// A connection with no request in progress is closed after this long
    /// without a byte (default 30 s); a fresh connection counts as idle.
    pub idle_timeout: Duration,
    /// Open connections at most; None derives it from the descriptor limit
    /// (RLIMIT_NOFILE) at start. Either way it stays below that limit with
    /// headroom for content files, the database and SMTP.
    pub max_connections: Option<usize>,
    /// Open connections from one IP address at most (default 128; 0 = no cap).
    /// Behind a reverse proxy every connection comes from the proxy's address.
    pub max_connections_per_ip: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    File,
    Smtp,
}

#[derive(Debug, Clone)]
pub struct MailSettings {
    /// `From:` of every message, e.g. "Casewire <digest@example.com>".
    pub from: String,
    pub reply_to: Option<String>,
    pub transport: Transport,
    /// Folder of .eml files for the file transport (default "data/outbox").
    pub file_dir: PathBuf,
    /// `smtp://host:port` (STARTTLS when offered), `smtps://user:pass@host:465` (implicit TLS).
    pub smtp_url: String,
    /// SMTP connections used at once (default 4, 1–256).
    pub concurrency: usize,
    /// Global send rate limit, messages per second; 0 means unlimited (default 0).
    pub rate_per_second: f64,
    /// How often an idle delivery worker looks for due rows without being
    /// woken (default 1 s). New mail wakes it at once; the poll finds retries
    /// that came due and rows queued by another process (`digest send`, the CLI).
    pub poll_interval: Duration,
    /// VERP: envelope senders become `bounces+<signed id>@bounce_domain`
    /// (see `[bounces] return_path`); none: the envelope sender is `from`.
    pub bounce_domain: Option<String>,
    /// Attempts before a message is dead (default 8, 1–100).
    pub max_attempts: u32,
    /// Timeout of one SMTP transaction (default 30 s).
    pub timeout: Duration,
    /// Send the `smtp_url` credentials over a connection without TLS (the
    /// relay offers no STARTTLS). Default false: such a relay is a relay
    /// fault; true is for a relay on loopback or an otherwise private path.
    pub allow_plaintext_auth: bool,
    pub dkim: Option<DkimSettings>,
    /// Send a welcome message after confirmation (default false).
    pub welcome: bool,
    /// Latest case studies of the subscriber's categories in the welcome
    /// message (default 5, 0–50).
    pub welcome_items: usize,
}

/// The operator console (`/admin/`): session lifetimes and login throttling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSettings {
    /// A session unused this long ends (default 30 minutes; 1–1440).
    pub session_idle: Duration,
    /// A session ends this long after its login, used or not (default 12
    /// hours; 1–720).
    pub session_max: Duration,
    /// Login attempts one operator name may have in a burst (default 5;
    /// 1–1000); then one more per `login_refill_seconds`.
    pub login_attempts_per_account: u32,
    /// Login attempts one client address may have in a burst (default 20;
    /// 1–10000); then one more per `login_refill_seconds`.
    pub login_attempts_per_ip: u32,
    /// How long until one more login attempt is allowed after a burst is
    /// used up (default 60 s; 1–86400).
    pub login_refill: Duration,
}

#[derive(Debug, Clone)]
pub struct DkimSettings {
    pub selector: String,
    pub domain: String,
    pub key_file: PathBuf,
}

#[derive(Debug, Clone)]
pub struct TemplateSettings {
    /// Folder holding `email/` and `pages/` templates (default "templates").
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Category {
    pub slug: Slug,
    pub name: String,
    pub description: String,
}

#[derive(Debug, Clone)]
pub enum ScheduleSpec {
    /// Fires on every publication event.
    Instant,
    /// A 5-field crontab expression (or @daily, @weekly, …), parsed at load.
    Cron(crate::editions::schedule::CronSchedule),
}

#[derive(Debug, Clone)]
pub struct Edition {
    pub slug: Slug,
    pub name: String,
    pub schedule: ScheduleSpec,
    /// The zone the schedule is evaluated in; with `local_time`, the zone of
    /// subscribers who chose none.
    pub timezone: chrono_tz::Tz,
    /// `local_time = true`: the cron schedule is evaluated in each
    /// subscriber's own time zone (`subscribers.timezone`), so a daily 07:00
    /// digest arrives at 07:00 wherever each reader lives. Only for cron
    /// schedules.
    pub local_time: bool,
    /// Case studies listed in one digest (default 10); the rest are counted and linked.
    pub max_items: usize,
    /// Categories this edition carries; empty means all.
    pub categories: Vec<Slug>,
    /// Subject line, a minijinja template string.
    pub subject: String,
    /// The edition pauses itself when a run's complaint or bounce rate
    /// passes these (`pause_above = { complaint_rate, bounce_rate, min_sent }`).
    pub pause_above: Option<crate::bounces::config::PauseAbove>,
    /// A digest not delivered this long after it was queued ends `expired`
    /// instead of arriving late (default: one period of the schedule;
    /// instant editions 24 h).
    pub expire_after: std::time::Duration,
}

impl Settings {
    /// Reads `path`, applies `CASEWIRE_*` environment overrides and validates.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(path, &text, std::env::vars())
    }

    /// Parses `text` (as if read from `path`) with the given environment.
    pub fn from_toml(
        path: &Path,
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let file = path.display().to_string();
        // First pass on the text itself, so syntax and type errors carry line numbers.
        let raw: RawConfig = toml::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
        let overrides: Vec<(String, String)> = env
            .into_iter()
            .filter(|(k, _)| k.starts_with(ENV_PREFIX) && k.contains("__"))
            .collect();
        let raw = if overrides.is_empty() {
            raw
        } else {
            let mut table: toml::Table =
                toml::from_str(text).map_err(|e| syntax_error(path, text, &e))?;
            let mut names = Vec::new();
            for (key, value) in &overrides {
                apply_override(&mut table, key, value)?;
                names.push(key.as_str());
            }
            RawConfig::deserialize(toml::Value::Table(table)).map_err(|e| ConfigError::Invalid {
                origin: format!("{file} with {}", names.join(", ")),
                message: redact_in(e.message()),
            })?
        };
        validate(path, raw)
    }

    pub fn category(&self, slug: &str) -> Option<&Category> {
        self.categories.iter().find(|c| c.slug.as_str() == slug)
    }

    pub fn edition(&self, slug: &str) -> Option<&Edition> {
        self.editions.iter().find(|e| e.slug.as_str() == slug)
    }

    /// The public URL of a case study's page.
    pub fn permalink(&self, slug: &Slug) -> url::Url {
        let path = self.site.permalink.replace("{slug}", slug.as_str());
        self.site
            .base_url
            .join(&path)
            .expect("permalink was checked to join with base_url")
    }

    /// The public URL of a feed file, e.g. `feeds/databases/atom.xml`.
    pub fn feed_url(&self, relative: &str) -> url::Url {
        self.site
            .base_url
            .join(&format!("feeds/{relative}"))
            .expect("feed paths are plain relative paths")
    }
}

fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let line = e
        .span()
        .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
        .unwrap_or(1);
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        message: redact_in(e.message()),
    }
}

/// `CASEWIRE_MAIL__SMTP_URL=…` sets `[mail] smtp_url`. The value is read as a
/// TOML value when it parses as one (numbers, booleans, arrays), else as a string.
fn apply_override(table: &mut toml::Table, key: &str, value: &str) -> Result<(), ConfigError> {
    let path: Vec<String> = key[ENV_PREFIX.len()..]
        .split("__")
        .map(|p| p.to_ascii_lowercase())
        .collect();
    if path.iter().any(String::is_empty) {
        return Err(ConfigError::Invalid {
            origin: key.to_owned(),
            message: "expected CASEWIRE_SECTION__KEY, e.g. CASEWIRE_MAIL__SMTP_URL".into(),
        });
    }
    let parsed = toml::from_str::<toml::Table>(&format!("v = {value}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_owned()));
    let (last, parents) = path.split_last().expect("split yields at least one part");
    let mut node = table;
    for part in parents {
        let entry = node
            .entry(part.clone())
            .or_insert_with(|| toml::Value::Table(Default::default()));
        node = entry.as_table_mut().ok_or_else(|| ConfigError::Invalid {
            origin: key.to_owned(),
            message: format!("'{part}' is not a section, so it cannot hold '{last}'"),
        })?;
    }
    node.insert(last.clone(), parsed);
    Ok(())
}

/// Collects every problem, so an operator fixes the file in one pass.
struct Problems {
    file: String,
    list: Vec<String>,
}

impl Problems {
    fn push(&mut self, key: &str, message: impl std::fmt::Display) {
        self.list.push(format!("{}: {key}: {message}", self.file));
    }
}

fn validate(path: &Path, raw: RawConfig) -> Result<Settings, ConfigError> {
    let mut p = Problems {
        file: path.display().to_string(),
        list: Vec::new(),
    };

    // [site]
    if raw.site.title.trim().is_empty() {
        p.push("[site] title", "must not be empty");
    }
    let base_url = match url::Url::parse(&raw.site.base_url) {
        Ok(mut u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            if !u.path().ends_with('/') {
                let path = format!("{}/", u.path());
                u.set_path(&path);
            }
            Some(u)
        }
        Ok(_) => {
            p.push(
                "[site] base_url",
                format!(
                    "{:?} must be an http:// or https:// URL with a host",
                    raw.site.base_url
                ),
            );
            None
        }
        Err(e) => {
            p.push(
                "[site] base_url",
                format!(
                    "{:?} is not a URL ({e}); expected e.g. \"https://example.com/\"",
                    raw.site.base_url
                ),
            );
            None
        }
    };
    let language = raw.site.language.unwrap_or_else(|| "en".into());
    if language.is_empty()
        || !language
            .split('-')
            .all(|s| !s.is_empty() && s.len() <= 8 && s.chars().all(|c| c.is_ascii_alphanumeric()))
    {
        p.push(
            "[site] language",
            format!("{language:?} is not a language tag (expected e.g. \"en\" or \"en-GB\")"),
        );
    }
    let permalink = raw
        .site
        .permalink
        .unwrap_or_else(|| "case-studies/{slug}/".into());
    if !permalink.contains("{slug}") || permalink.starts_with('/') || permalink.contains("://") {
        p.push("[site] permalink", format!("{permalink:?} must be a relative path containing {{slug}}, e.g. \"case-studies/{{slug}}/\""));
    }

    // [content]
    let mut sources = Vec::new();
    for (i, s) in raw.content.sources.iter().enumerate() {
        let key = format!("[content] sources[{i}]");
        let feed = match url::Url::parse(&s.feed) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                p.push(
                    &format!("{key}.feed"),
                    format!("{:?} is not an http(s) URL", redact(&s.feed)),
                );
                None
            }
        };
        let category = match &s.category {
            None => None,
            Some(c) => match Slug::parse(c) {
                Ok(slug) if raw.categories.iter().any(|k| k.slug == c.as_str()) => Some(slug),
                _ => {
                    p.push(
                        &format!("{key}.category"),
                        format!(
                            "{c:?} is not one of the [[categories]] slugs ({})",
                            category_list(&raw.categories)
                        ),
                    );
                    None
                }
            },
        };
        let poll = s.poll_seconds.unwrap_or(900);
        if poll == 0 {
            p.push(&format!("{key}.poll_seconds"), "must be at least 1");
        }
        if let Some(feed) = feed {
            sources.push(Source {
                feed,
                category,
                poll_interval: Duration::from_secs(poll),
            });
        }
    }
    let max_file_kb = raw.content.max_file_kb.unwrap_or(1024);
    if max_file_kb == 0 {
        p.push("[content] max_file_kb", "must be at least 1");
    }
    let rescan = raw.content.rescan_seconds.unwrap_or(300);
    if rescan == 0 {
        p.push("[content] rescan_seconds", "must be at least 1");
    }

    let sections = match &raw.content.sections {
        None => crate::content::sections::defaults(),
        Some(list) => {
            let mut out: Vec<crate::content::sections::SectionSpec> = Vec::new();
            for (i, sec) in list.iter().enumerate() {
                let key = format!("[content] sections[{i}]");
                if sec.key.is_empty()
                    || !sec
                        .key
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                {
                    p.push(
                        &format!("{key}.key"),
                        format!(
                            "{:?} must be lower-case letters, digits and _ (e.g. \"root_cause\")",
                            sec.key
                        ),
                    );
                } else if out.iter().any(|o| o.key == sec.key) {
                    p.push(
                        &format!("{key}.key"),
                        format!("{:?} appears twice", sec.key),
                    );
                }
                let headings: Vec<String> = sec
                    .headings
                    .iter()
                    .map(|h| crate::content::sections::normalize(h))
                    .filter(|h| !h.is_empty())
                    .collect();
                if headings.is_empty() {
                    p.push(
                        &format!("{key}.headings"),
                        "needs at least one heading text, e.g. [\"Root cause\", \"Cause\"]",
                    );
                }
                out.push(crate::content::sections::SectionSpec {
                    key: sec.key.clone(),
                    headings,
                    expected: false,
                });
            }
            out
        }
    };
    let mut sections = sections;
    for key in &raw.content.expected_sections {
        match sections.iter_mut().find(|s| s.key == *key) {
            Some(s) => s.expected = true,
            None => p.push(
                "[content] expected_sections",
                format!(
                    "{key:?} is not a section (expected one of: {})",
                    sections
                        .iter()
                        .map(|s| s.key.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ),
        }
    }

    // [feeds]
    let items = raw.feeds.items.unwrap_or(50);
    if !(1..=1000).contains(&items) {
        p.push(
            "[feeds] items",
            format!("{items} is out of range (expected 1 to 1000)"),
        );
    }
    let archive_page_size = raw.feeds.archive_page_size.unwrap_or(50);
    if !(1..=1000).contains(&archive_page_size) {
        p.push(
            "[feeds] archive_page_size",
            format!("{archive_page_size} is out of range (expected 1 to 1000)"),
        );
    }
    let websub_hub = match raw.feeds.websub_hub.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(h) => match url::Url::parse(h) {
            Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
            _ => {
                p.push(
                    "[feeds] websub_hub",
                    format!("{:?} is not an http(s) URL (or \"\" to disable)", redact(h)),
                );
                None
            }
        },
    };

    // [database]
    let db_url = raw
        .database
        .url
        .unwrap_or_else(|| "sqlite://data/casewire.db".into());
    if !(db_url.starts_with("sqlite:")
        || db_url.starts_with("postgres://")
        || db_url.starts_with("postgresql://"))
    {
        p.push(
            "[database] url",
            format!(
                "{:?} is not supported (expected \"sqlite://path\" or \"postgres://…\")",
                redact(&db_url)
            ),
        );
    }

    // [http]
    let listen_text = raw.http.listen.unwrap_or_else(|| "127.0.0.1:8080".into());
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => Some(a),
        Err(_) => {
            p.push(
                "[http] listen",
                format!("{listen_text:?} is not an address (expected e.g. \"127.0.0.1:8080\")"),
            );
            None
        }
    };
    let admin_token = raw.http.admin_token.filter(|t| !t.is_empty());
    if let Some(t) = &admin_token {
        if t.len() < 16 {
            p.push(
                "[http] admin_token",
                "is too short: use at least 16 characters (set it with CASEWIRE_HTTP__ADMIN_TOKEN)",
            );
        }
    }

    let mut trusted_proxies = Vec::new();
    for cidr in &raw.http.trusted_proxies {
        match parse_cidr(cidr) {
            Some(net) => trusted_proxies.push(net),
            None => p.push(
                "[http] trusted_proxies",
                format!("{cidr:?} is not an IP network (expected e.g. \"10.0.0.0/8\", \"::1/128\" or \"192.0.2.7\")"),
            ),
        }
    }
    let signup_min_seconds = raw.http.signup_min_seconds.unwrap_or(3);
    if signup_min_seconds > 3600 {
        p.push(
            "[http] signup_min_seconds",
            format!("{signup_min_seconds} is out of range (expected 0 to 3600)"),
        );
    }
    let header_timeout = raw.http.header_timeout_seconds.unwrap_or(10);
    if !(1..=3600).contains(&header_timeout) {
        p.push(
            "[http] header_timeout_seconds",
            format!("{header_timeout} is out of range (1–3600)"),
        );
    }
    let idle_timeout = raw.http.idle_timeout_seconds.unwrap_or(30);
    if !(1..=3600).contains(&idle_timeout) {
        p.push(
            "[http] idle_timeout_seconds",
            format!("{idle_timeout} is out of range (1–3600)"),
        );
    }
    let max_connections = raw.http.max_connections.filter(|&n| n != 0);
    if max_connections.is_some_and(|n| n > 1_000_000) {
        p.push(
            "[http] max_connections",
            "is out of range (1–1000000, or 0 for the descriptor limit)",
        );
    }
    let max_connections_per_ip = raw.http.max_connections_per_ip.unwrap_or(128);

    // [admin]
    let mut in_range = |key: &str, value: Option<u64>, default: u64, max: u64| {
        let v = value.unwrap_or(default);
        if !(1..=max).contains(&v) {
            p.push(
                &format!("[admin] {key}"),
                format!("{v} is out of range (1–{max})"),
            );
        }
        v.clamp(1, max)
    };
    let admin = AdminSettings {
        session_idle: Duration::from_secs(
            60 * in_range(
                "session_idle_minutes",
                raw.admin.session_idle_minutes,
                30,
                1440,
            ),
        ),
        session_max: Duration::from_secs(
            3600 * in_range("session_max_hours", raw.admin.session_max_hours, 12, 720),
        ),
        login_attempts_per_account: in_range(
            "login_attempts_per_account",
            raw.admin.login_attempts_per_account,
            5,
            1000,
        ) as u32,
        login_attempts_per_ip: in_range(
            "login_attempts_per_ip",
            raw.admin.login_attempts_per_ip,
            20,
            10_000,
        ) as u32,
        login_refill: Duration::from_secs(in_range(
            "login_refill_seconds",
            raw.admin.login_refill_seconds,
            60,
            86_400,
        )),
    };

    // [mail]
    let from = raw.mail.from.unwrap_or_default();
    if from.is_empty() {
        p.push(
            "[mail] from",
            "is required (e.g. \"Casewire <digest@example.com>\")",
        );
    } else if from.parse::<lettre::message::Mailbox>().is_err() {
        p.push(
            "[mail] from",
            format!("{from:?} is not a mailbox (expected e.g. \"Casewire <digest@example.com>\")"),
        );
    }
    if let Some(r) = &raw.mail.reply_to {
        if r.parse::<lettre::message::Mailbox>().is_err() {
            p.push("[mail] reply_to", format!("{r:?} is not a mailbox"));
        }
    }
    let transport = match raw.mail.transport.as_deref().unwrap_or("file") {
        "file" => Transport::File,
        "smtp" => Transport::Smtp,
        other => {
            p.push(
                "[mail] transport",
                format!("{other:?} is not valid (expected \"file\" or \"smtp\")"),
            );
            Transport::File
        }
    };
    let smtp_url = raw
        .mail
        .smtp_url
        .unwrap_or_else(|| "smtp://127.0.0.1:25".into());
    match url::Url::parse(&smtp_url) {
        Ok(u) if matches!(u.scheme(), "smtp" | "smtps") && u.host().is_some() => {}
        _ => p.push("[mail] smtp_url", format!("{:?} is not valid (expected \"smtp://host:port\" or \"smtps://user:pass@host:465\")", redact(&smtp_url))),
    }
    let concurrency = raw.mail.concurrency.unwrap_or(4);
    if !(1..=256).contains(&concurrency) {
        p.push(
            "[mail] concurrency",
            format!("{concurrency} is out of range (expected 1 to 256)"),
        );
    }
    let rate = raw.mail.rate_per_second.unwrap_or(0.0);
    if !rate.is_finite() || rate < 0.0 {
        p.push(
            "[mail] rate_per_second",
            format!("{rate} must be 0 (unlimited) or a positive number"),
        );
    }
    let max_attempts = raw.mail.max_attempts.unwrap_or(8);
    if !(1..=100).contains(&max_attempts) {
        p.push(
            "[mail] max_attempts",
            format!("{max_attempts} is out of range (expected 1 to 100)"),
        );
    }
    let poll_seconds = raw.mail.poll_seconds.unwrap_or(1);
    if !(1..=3600).contains(&poll_seconds) {
        p.push(
            "[mail] poll_seconds",
            format!("{poll_seconds} is out of range (expected 1 to 3600)"),
        );
    }
    let timeout = raw.mail.timeout_seconds.unwrap_or(30);
    if timeout == 0 {
        p.push("[mail] timeout_seconds", "must be at least 1");
    }
    let dkim = raw.mail.dkim.map(|d| {
        if d.selector.is_empty() || d.domain.is_empty() {
            p.push("[mail] dkim", "selector and domain must not be empty");
        }
        DkimSettings {
            selector: d.selector,
            domain: d.domain,
            key_file: d.key_file,
        }
    });

    let welcome_items = raw.mail.welcome_items.unwrap_or(5);
    if !(0..=50).contains(&welcome_items) {
        p.push(
            "[mail] welcome_items",
            format!("{welcome_items} is out of range (expected 0 to 50)"),
        );
    }

    // [[categories]]
    let mut categories = Vec::new();
    let mut seen = HashSet::new();
    for (i, c) in raw.categories.iter().enumerate() {
        let key = format!("[[categories]] #{} slug", i + 1);
        match Slug::parse(&c.slug) {
            Ok(slug) => {
                if !seen.insert(slug.clone()) {
                    p.push(&key, format!("{:?} appears twice", c.slug));
                }
                if slug.as_str() == "all" {
                    p.push(
                        &key,
                        "\"all\" is reserved: /feeds/archive/all/ is the feed history of everything; pick another slug",
                    );
                }
                if c.name.trim().is_empty() {
                    p.push(&format!("[[categories]] {slug} name"), "must not be empty");
                }
                categories.push(Category {
                    slug,
                    name: c.name.clone(),
                    description: c.description.clone(),
                });
            }
            Err(e) => p.push(&key, e),
        }
    }

    // [[editions]]
    let mut editions = Vec::new();
    let mut seen = HashSet::new();
    for (i, e) in raw.editions.iter().enumerate() {
        let key = format!("[[editions]] #{}", i + 1);
        let Ok(slug) = Slug::parse(&e.slug).map_err(|err| p.push(&format!("{key} slug"), err))
        else {
            continue;
        };
        let key = format!("[[editions]] {slug}");
        if !seen.insert(slug.clone()) {
            p.push(&format!("{key} slug"), "appears twice");
        }
        let schedule = if e.schedule.trim() == "instant" {
            ScheduleSpec::Instant
        } else {
            match crate::editions::schedule::parse_cron(&e.schedule) {
                Ok(cron) => ScheduleSpec::Cron(cron),
                Err(err) => {
                    p.push(&format!("{key} schedule"), err);
                    ScheduleSpec::Instant
                }
            }
        };
        let tz_name = e.timezone.clone().unwrap_or_else(|| "UTC".into());
        let timezone = tz_name.parse::<chrono_tz::Tz>().unwrap_or_else(|_| {
            p.push(&format!("{key} timezone"), format!("{tz_name:?} is not an IANA time zone (expected e.g. \"Europe/Berlin\" or \"UTC\")"));
            chrono_tz::UTC
        });
        if e.local_time && e.schedule.trim() == "instant" {
            p.push(
                &format!("{key} local_time"),
                "an instant edition has no send time to localise; use a cron schedule (e.g. \"0 7 * * *\") or remove local_time",
            );
        }
        let max_items = e.max_items.unwrap_or(10);
        if !(1..=200).contains(&max_items) {
            p.push(
                &format!("{key} max_items"),
                format!("{max_items} is out of range (expected 1 to 200)"),
            );
        }
        let mut cats = Vec::new();
        for c in &e.categories {
            match Slug::parse(c) {
                Ok(s) if raw.categories.iter().any(|k| k.slug == *c) => cats.push(s),
                _ => p.push(
                    &format!("{key} categories"),
                    format!(
                        "{c:?} is not one of the [[categories]] slugs ({})",
                        category_list(&raw.categories)
                    ),
                ),
            }
        }
        let subject = e
            .subject
            .clone()
            .unwrap_or_else(|| "{{ site.title }}: {{ edition.name }}".into());
        if let Err(err) = minijinja::Environment::new().template_from_str(&subject) {
            p.push(
                &format!("{key} subject"),
                format!("is not a valid template: {err}"),
            );
        }
        let expire_after = match (&e.expire_after, &schedule) {
            (Some(text), _) => parse_duration(text).unwrap_or_else(|| {
                p.push(
                    &format!("{key} expire_after"),
                    format!("{text:?} is not a duration (expected e.g. \"90m\", \"36h\", \"7d\")"),
                );
                std::time::Duration::from_secs(86_400)
            }),
            (None, ScheduleSpec::Instant) => std::time::Duration::from_secs(86_400),
            (None, ScheduleSpec::Cron(c)) => {
                // One period: the gap between the next two fire times.
                let now = chrono::Utc::now();
                c.next_after(now, timezone)
                    .and_then(|a| c.next_after(a, timezone).map(|b| b - a))
                    .and_then(|d| d.to_std().ok())
                    .unwrap_or(std::time::Duration::from_secs(7 * 86_400))
            }
        };
        editions.push(Edition {
            slug,
            name: e.name.clone(),
            schedule,
            timezone,
            local_time: e.local_time,
            max_items: max_items.clamp(1, 200) as usize,
            categories: cats,
            subject,
            pause_above: e.pause_above.clone(),
            expire_after,
        });
        if let Some(pa) = &e.pause_above {
            for (k, v) in [
                ("complaint_rate", pa.complaint_rate),
                ("bounce_rate", pa.bounce_rate),
            ] {
                if v.is_some_and(|v| !(0.0..=1.0).contains(&v)) {
                    p.push(
                        &format!("{key} pause_above.{k}"),
                        "must be a fraction between 0 and 1 (0.003 is 0.3%)",
                    );
                }
            }
        }
    }

    // [bounces]
    let mut bounce_problems = Vec::new();
    let bounces = raw.bounces.validate(&mut bounce_problems);
    for (key, message) in bounce_problems {
        p.push(&key, message);
    }

    if !p.list.is_empty() {
        return Err(ConfigError::Invalid {
            origin: format!("{} problem(s)", p.list.len()),
            message: format!("\n  {}", p.list.join("\n  ")),
        });
    }
    let base_url = base_url.expect("checked above");
    let author = raw.site.author.unwrap_or_else(|| raw.site.title.clone());
    Ok(Settings {
        source: path.to_owned(),
        site: Site {
            title: raw.site.title,
            description: raw.site.description,
            base_url,
            language,
            permalink,
            author,
        },
        content: ContentSettings {
            dir: raw.content.dir.unwrap_or_else(|| "content".into()),
            sources,
            max_file_bytes: max_file_kb * 1024,
            rescan_interval: Duration::from_secs(rescan),
            sections,
        },
        feeds: FeedSettings {
            out_dir: raw.feeds.out_dir.unwrap_or_else(|| "public/feeds".into()),
            items: items as usize,
            archive_page_size: archive_page_size.clamp(1, 1000) as usize,
            websub_hub,
        },
        database: DatabaseSettings {
            key_file: raw
                .database
                .key_file
                .unwrap_or_else(|| default_key_file(&db_url)),
            url: db_url,
        },
        http: HttpSettings {
            listen: listen.expect("checked above"),
            admin_token,
            trusted_proxies,
            signup_min_delay: Duration::from_secs(signup_min_seconds),
            form_key_file: raw
                .http
                .form_key_file
                .unwrap_or_else(|| "data/form.key".into()),
            header_timeout: Duration::from_secs(header_timeout),
            idle_timeout: Duration::from_secs(idle_timeout),
            max_connections: max_connections.map(|n| n as usize),
            max_connections_per_ip: max_connections_per_ip.min(1_000_000) as usize,
        },
        mail: MailSettings {
            from,
            reply_to: raw.mail.reply_to,
            transport,
            file_dir: raw.mail.file_dir.unwrap_or_else(|| "data/outbox".into()),
            smtp_url,
            concurrency: concurrency as usize,
            rate_per_second: rate,
            poll_interval: Duration::from_secs(poll_seconds),
            bounce_domain: raw.mail.bounce_domain.filter(|d| !d.is_empty()),
            max_attempts: max_attempts as u32,
            timeout: Duration::from_secs(timeout),
            allow_plaintext_auth: raw.mail.allow_plaintext_auth.unwrap_or(false),
            dkim,
            welcome: raw.mail.welcome.unwrap_or(false),
            welcome_items: welcome_items.clamp(0, 50) as usize,
        },
        admin,
        templates: TemplateSettings {
            dir: raw.templates.dir.unwrap_or_else(|| "templates".into()),
        },
        bounces,
        categories,
        editions,
    })
}

fn category_list(cats: &[RawCategory]) -> String {
    if cats.is_empty() {
        return "none are configured".into();
    }
    cats.iter()
        .map(|c| c.slug.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A CIDR such as "10.0.0.0/8", or a single address meaning just that host.
fn parse_cidr(text: &str) -> Option<ipnet::IpNet> {
    let text = text.trim();
    text.parse::<ipnet::IpNet>().ok().or_else(|| {
        text.parse::<std::net::IpAddr>()
            .ok()
            .map(ipnet::IpNet::from)
    })
}

/// Hides the password of a URL before it reaches a message or a log. A
/// value that does not parse as a URL is masked by text (everything between
/// `scheme://user` and the last `@`), so a typo never prints a password.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.has_host() => {
            if u.password().is_none() {
                return url.to_owned();
            }
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => match url.find("://") {
            Some(i) => format!("{}{}", &url[..i + 3], mask_userinfo(&url[i + 3..])),
            None => mask_userinfo(url),
        },
    }
}

/// `user:password@rest` as `user:***@rest` (`***@rest` without a colon).
fn mask_userinfo(run: &str) -> String {
    let Some(at) = run.rfind('@') else {
        return run.to_owned();
    };
    match run[..at].find(':') {
        Some(colon) => format!("{}:***{}", &run[..colon], &run[at..]),
        None => format!("***{}", &run[at..]),
    }
}

/// Masks the credentials of every `scheme://user:password@` in a free text
/// (a library's error message, say), up to the last `@` before a space or quote.
pub fn redact_in(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>'))
            .unwrap_or(tail.len());
        out.push_str(&mask_userinfo(&tail[..end]));
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[site]
title = "Casewire"
base_url = "https://example.com/cases"

[mail]
from = "Casewire <digest@example.com>"

[[categories]]
slug = "databases"
name = "Databases"

[[editions]]
slug = "weekly"
name = "Weekly"
schedule = "0 8 * * MON"
timezone = "Europe/Berlin"
"#;

    fn parse(text: &str, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        Settings::from_toml(
            Path::new("casewire.toml"),
            text,
            env.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let s = parse(MINIMAL, &[]).unwrap();
        assert_eq!(s.site.base_url.as_str(), "https://example.com/cases/");
        assert_eq!(s.feeds.items, 50);
        assert_eq!(s.mail.transport, Transport::File);
        assert_eq!(s.editions[0].timezone, chrono_tz::Europe::Berlin);
        assert_eq!(
            s.permalink(&Slug::parse("x").unwrap()).as_str(),
            "https://example.com/cases/case-studies/x/"
        );
    }

    #[test]
    fn local_time_is_off_by_default_and_refused_for_instant_editions() {
        let s = parse(MINIMAL, &[]).unwrap();
        assert!(!s.editions[0].local_time);
        let on = parse(
            &MINIMAL.replace("timezone =", "local_time = true\ntimezone ="),
            &[],
        )
        .unwrap();
        assert!(on.editions[0].local_time);
        let text = MINIMAL
            .replace("0 8 * * MON", "instant")
            .replace("timezone =", "local_time = true\ntimezone =");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("[[editions]] weekly local_time: an instant edition has no send time"),
            "{err}"
        );
    }

    #[test]
    fn feed_archive_page_size_defaults_to_50_and_is_checked() {
        assert_eq!(parse(MINIMAL, &[]).unwrap().feeds.archive_page_size, 50);
        let text = MINIMAL.to_owned() + "\n[feeds]\narchive_page_size = 0\n";
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("[feeds] archive_page_size: 0 is out of range (expected 1 to 1000)"),
            "{err}"
        );
        let text = MINIMAL.to_owned() + "\n[feeds]\narchive_page_size = 7\n";
        assert_eq!(parse(&text, &[]).unwrap().feeds.archive_page_size, 7);
    }

    #[test]
    fn a_category_cannot_take_the_name_of_the_feed_archive_of_everything() {
        let text = MINIMAL.to_owned() + "\n[[categories]]\nslug = \"all\"\nname = \"All\"\n";
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("[[categories]] #2 slug") && err.contains("\"all\" is reserved"),
            "{err}"
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line() {
        let text = MINIMAL.replace("[mail]", "[mail]\nfrmo = 1");
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.starts_with("casewire.toml:7:"), "{err}");
        assert!(err.contains("frmo"), "{err}");
    }

    #[test]
    fn bad_values_are_all_reported_with_key_and_expectation() {
        let text = MINIMAL
            .replace("Europe/Berlin", "Mars/Olympus")
            .replace("0 8 * * MON", "99 * * * *")
            + "\n[feeds]\nitems = 0\n";
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("[[editions]] weekly timezone: \"Mars/Olympus\" is not an IANA time zone"),
            "{err}"
        );
        assert!(err.contains("[[editions]] weekly schedule"), "{err}");
        assert!(
            err.contains("[feeds] items: 0 is out of range (expected 1 to 1000)"),
            "{err}"
        );
    }

    #[test]
    fn admin_section_has_defaults_and_names_bad_values() {
        let s = parse(MINIMAL, &[]).unwrap();
        assert_eq!(s.admin.session_idle, Duration::from_secs(30 * 60));
        assert_eq!(s.admin.session_max, Duration::from_secs(12 * 3600));
        assert_eq!(
            (
                s.admin.login_attempts_per_account,
                s.admin.login_attempts_per_ip
            ),
            (5, 20)
        );
        assert_eq!(s.admin.login_refill, Duration::from_secs(60));
        let text = format!(
            "{MINIMAL}\n[admin]\nsession_idle_minutes = 0\nsession_max_hours = 1000\nlogin_refill_seconds = 5\n"
        );
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("[admin] session_idle_minutes: 0 is out of range (1–1440)"),
            "{err}"
        );
        assert!(
            err.contains("[admin] session_max_hours: 1000 is out of range (1–720)"),
            "{err}"
        );
        let err = parse(&format!("{MINIMAL}\n[admin]\nsession_minutes = 5\n"), &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("session_minutes"), "{err}");
        let s = parse(MINIMAL, &[("CASEWIRE_ADMIN__LOGIN_ATTEMPTS_PER_IP", "7")]).unwrap();
        assert_eq!(s.admin.login_attempts_per_ip, 7);
    }

    #[test]
    fn trusted_proxies_accept_cidrs_and_hosts_and_name_bad_ones() {
        let text = MINIMAL.replace(
            "[mail]",
            "[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\", \"192.0.2.7\"]\nsignup_min_seconds = 5\n\n[mail]",
        );
        let s = parse(&text, &[]).unwrap();
        assert_eq!(s.http.trusted_proxies.len(), 3);
        assert!(s.http.trusted_proxies[1].contains(&"::1".parse::<std::net::IpAddr>().unwrap()));
        assert_eq!(s.http.signup_min_delay, Duration::from_secs(5));
        let bad = MINIMAL.replace(
            "[mail]",
            "[http]\ntrusted_proxies = [\"10.0.0.0/33\"]\n\n[mail]",
        );
        let err = parse(&bad, &[]).unwrap_err().to_string();
        assert!(
            err.contains("[http] trusted_proxies: \"10.0.0.0/33\" is not an IP network"),
            "{err}"
        );
    }

    #[test]
    fn expected_sections_must_name_a_section() {
        let text = MINIMAL.replace(
            "[mail]",
            "[content]\nexpected_sections = [\"root_cause\", \"rootcause\"]\n\n[mail]",
        );
        let err = parse(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("[content] expected_sections: \"rootcause\" is not a section (expected one of: summary, root_cause"), "{err}");
        let ok = parse(&text.replace(", \"rootcause\"", ""), &[]).unwrap();
        let expected: Vec<&str> = ok
            .content
            .sections
            .iter()
            .filter(|s| s.expected)
            .map(|s| s.key.as_str())
            .collect();
        assert_eq!(expected, ["root_cause"]);
    }

    #[test]
    fn missing_required_key_is_named() {
        let err = parse("[site]\ntitle = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("base_url"), "{err}");
    }

    #[test]
    fn environment_overrides_file_values() {
        let s = parse(
            MINIMAL,
            &[
                ("CASEWIRE_MAIL__TRANSPORT", "smtp"),
                ("CASEWIRE_FEEDS__ITEMS", "7"),
                ("CASEWIRE_HTTP__ADMIN_TOKEN", "0123456789abcdef0123"),
                ("OTHER_VAR", "ignored"),
            ],
        )
        .unwrap();
        assert_eq!(s.mail.transport, Transport::Smtp);
        assert_eq!(s.feeds.items, 7);
        assert_eq!(s.http.admin_token.as_deref(), Some("0123456789abcdef0123"));
    }

    #[test]
    fn bad_environment_override_names_the_variable() {
        let err = parse(MINIMAL, &[("CASEWIRE_FEEDS__BOGUS", "1")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("CASEWIRE_FEEDS__BOGUS"), "{err}");
        assert!(err.contains("bogus"), "{err}");
    }

    #[test]
    fn redact_hides_passwords() {
        assert_eq!(redact("smtps://u:secret@h:465"), "smtps://u:***@h:465");
        assert_eq!(redact("postgres://app@db/cw"), "postgres://app@db/cw");
        assert_eq!(
            redact("https://example.com/feed.xml"),
            "https://example.com/feed.xml"
        );
    }

    /// An smtp_url that does not parse printed its password in the error.
    #[test]
    fn unparseable_urls_never_show_their_password() {
        for (url, shown) in [
            (
                "smtp://user:s3cret@mail.example.com:25x",
                "smtp://user:***@mail.example.com:25x",
            ),
            ("smtp://user:s3c ret@host:25", "smtp://user:***@host:25"),
            (
                "smtps://user:s3/cr#et@host:465",
                "smtps://user:***@host:465",
            ),
            ("user:s3cret@host:25", "user:***@host:25"),
            (
                "imaps://tok3n@host:99999/INBOX",
                "imaps://***@host:99999/INBOX",
            ),
        ] {
            let r = redact(url);
            assert!(!r.contains("s3") && !r.contains("tok3n"), "{url} -> {r}");
            assert_eq!(r, shown, "{url}");
        }
        assert_eq!(
            redact_in("error with configuration: smtp://u:s3cret@h:x and \"postgres://a:b@c/d\""),
            "error with configuration: smtp://u:***@h:x and \"postgres://a:***@c/d\""
        );
        for (key, value) in [
            (
                "[mail]\nsmtp_url",
                "smtp://user:s3cret@mail.example.com:25x",
            ),
            ("[database]\nurl", "mysql://user:s3cret@db.example.com/cw"),
            ("[feeds]\nwebsub_hub", "ftp://user:s3cret@hub.example.com/"),
        ] {
            let text = MINIMAL.replace("[mail]\n", "[mail]\ntransport = \"smtp\"\n");
            let (section, key) = key.split_once('\n').unwrap();
            let text = if text.contains(&format!("{section}\n")) {
                text.replace(
                    &format!("{section}\n"),
                    &format!("{section}\n{key} = \"{value}\"\n"),
                )
            } else {
                format!("{text}\n{section}\n{key} = \"{value}\"\n")
            };
            let err = Settings::from_toml(Path::new("c.toml"), &text, std::iter::empty())
                .expect_err("invalid")
                .to_string();
            assert!(err.contains(section), "{err}");
            assert!(!err.contains("s3cret"), "{section} {key}: {err}");
        }
    }
}

/// `"90m"`, `"36h"`, `"7d"`, `"2w"`, `"3600s"`: a whole number and a unit.
fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let unit_at = text.find(|c: char| !c.is_ascii_digit())?;
    let (n, unit) = text.split_at(unit_at);
    let n: u64 = n.parse().ok()?;
    let secs = match unit.trim() {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return None,
    };
    (n > 0).then(|| std::time::Duration::from_secs(n * secs))
}

#[cfg(test)]
mod expire_after_tests {
    use super::*;

    #[test]
    fn expire_after_parses_whole_units_and_defaults_to_one_period() {
        assert_eq!(
            parse_duration("36h"),
            Some(std::time::Duration::from_secs(36 * 3600))
        );
        assert_eq!(
            parse_duration("7d"),
            Some(std::time::Duration::from_secs(7 * 86_400))
        );
        assert_eq!(
            parse_duration("90m"),
            Some(std::time::Duration::from_secs(5400))
        );
        for bad in ["", "h", "7", "7 days", "0h", "-1h", "1.5h"] {
            assert_eq!(parse_duration(bad), None, "{bad:?}");
        }
        let text = r#"
[site]
title = "T"
base_url = "https://example.com/"
[mail]
from = "T <t@example.com>"
[[editions]]
slug = "weekly"
name = "Weekly"
schedule = "0 8 * * MON"
[[editions]]
slug = "now"
name = "Now"
schedule = "instant"
[[editions]]
slug = "daily"
name = "Daily"
schedule = "@daily"
expire_after = "6h"
"#;
        let s = Settings::from_toml(Path::new("t.toml"), text, std::iter::empty()).unwrap();
        let days = |d: u64| std::time::Duration::from_secs(d * 86_400);
        assert_eq!(s.editions[0].expire_after, days(7));
        assert_eq!(s.editions[1].expire_after, days(1));
        assert_eq!(
            s.editions[2].expire_after,
            std::time::Duration::from_secs(6 * 3600)
        );
        let bad = text.replace("\"6h\"", "\"soon\"");
        let err = Settings::from_toml(Path::new("t.toml"), &bad, std::iter::empty())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[[editions]] daily expire_after: \"soon\" is not a duration"),
            "{err}"
        );
    }
}
