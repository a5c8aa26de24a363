//! The one harness of the integration tests. `app` starts the daemon
//! in-process ([`spawn_app`]) or only lays out its folders and configuration
//! ([`prepare`]), both from one [`AppOptions`]; this file holds what every
//! test shares: a fresh database per test on SQLite or PostgreSQL
//! ([`TestDb`], dropped again on teardown), [`on_both_engines!`], tool checks
//! that fail instead of skipping, and writers for case study files.
//! `smtp`, `imap` and `dkim` drive the real mail servers and verifier.
#![allow(dead_code)]

pub mod app;
pub mod dkim;
pub mod imap;
pub mod smtp;

#[allow(unused_imports)]
pub use app::{
    link_in, prepare, recipient_of, spawn_app, AppOptions, OutboxRow, Reply, TestApp, TestSite,
};

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::{Connection, Executor};

/// Public URL of a test site unless its options point `base_url` at the
/// test server itself ([`AppOptions::self_links`]); feed ids start with it.
pub const BASE_URL: &str = "https://example.com/cases/";

/// The admin API token a test app has unless its options say otherwise.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The categories a test site configures unless its options replace them:
/// (slug, name, description).
pub const CATEGORIES: &[(&str, &str, &str)] = &[
    ("databases", "Databases", "Storage engines"),
    ("security", "Security", ""),
    ("performance", "Performance", ""),
    ("failure-analysis", "Failure Analysis", ""),
];

/// The editions a test site configures unless its options replace them.
pub const EDITIONS: &str = r#"
[[editions]]
slug = "weekly"
name = "Weekly digest"
schedule = "0 8 * * MON"
timezone = "Europe/Berlin"

[[editions]]
slug = "daily"
name = "Daily digest"
schedule = "0 7 * * *"
timezone = "UTC"
"#;

/// Where the PostgreSQL server for tests lives (trust auth, database `test`).
pub fn postgres_admin_url() -> String {
    std::env::var("CASEWIRE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// One test's database and its temp folder (which also holds the test
/// site's files). A PostgreSQL database is created on the local server and
/// dropped again when this value is dropped or [`TestDb::cleanup`] runs.
pub struct TestDb {
    pub url: String,
    pub engine: Engine,
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database to drop on teardown; None once dropped (and on SQLite).
    pg_name: Option<String>,
}

/// How long dropping a test database may take before the teardown gives up
/// (with a warning): a teardown never hangs a test.
const DROP_TIMEOUT: Duration = Duration::from_secs(20);

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let (url, pg_name) = match engine {
            Engine::Sqlite => (
                format!("sqlite://{}", dir.path().join("casewire.db").display()),
                None,
            ),
            Engine::Postgres => {
                let admin = postgres_admin_url();
                let name = format!("cw_test_{}_{}", std::process::id(), rand_suffix());
                let mut conn = sqlx::PgConnection::connect(&admin)
                    .await
                    .unwrap_or_else(|e| {
                        panic!("PostgreSQL is required for this test ({admin}): {e}")
                    });
                conn.execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let base = admin
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_owned())
                    .unwrap_or(admin);
                (format!("{base}/{name}"), Some(name))
            }
        };
        TestDb {
            url,
            engine,
            dir,
            pg_name,
        }
    }

    /// [`TestDb::new`] for code that is not async (or must not await): the
    /// database is created on a thread with a runtime of its own.
    pub fn new_blocking(engine: Engine) -> TestDb {
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for creating the test database")
                .block_on(TestDb::new(engine))
        })
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
    }

    /// The PostgreSQL database's name, until it is dropped (None on SQLite).
    pub fn pg_name(&self) -> Option<&str> {
        self.pg_name.as_deref()
    }

    /// Drops the PostgreSQL database now (a no-op on SQLite or when done
    /// before). Call it only once nothing uses the database any more:
    /// `WITH (FORCE)` ends the connections still open.
    pub async fn cleanup(&mut self) {
        if let Some(name) = self.pg_name.take() {
            drop_database(&name).await;
        }
    }
}

impl Drop for TestDb {
    /// The backstop for tests that end without [`TestDb::cleanup`] (a
    /// panic, or no explicit stop): a thread with its own small runtime
    /// drops the database, so this works inside and outside a runtime.
    fn drop(&mut self) {
        let Some(name) = self.pg_name.take() else {
            return;
        };
        let done = std::thread::spawn(move || {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(drop_database(&name)),
                Err(e) => eprintln!("warning: test database {name} left behind: {e}"),
            }
        });
        let _ = done.join();
    }
}

/// `DROP DATABASE … WITH (FORCE)` on a fresh admin connection, within
/// [`DROP_TIMEOUT`]; a failure is a warning, never a hang or a panic.
async fn drop_database(name: &str) {
    let admin = postgres_admin_url();
    let work = async {
        let mut conn = sqlx::PgConnection::connect(&admin).await?;
        conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
            .await?;
        conn.close().await
    };
    match tokio::time::timeout(DROP_TIMEOUT, work).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("warning: test database {name} left behind: {e}"),
        Err(_) => {
            eprintln!("warning: test database {name} left behind: no answer in {DROP_TIMEOUT:?}")
        }
    }
}

fn rand_suffix() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// `on_both_engines!(name, body)` defines `name::sqlite` and `name::postgres`
/// tests that each call `body(Engine)`.
#[macro_export]
macro_rules! on_both_engines {
    ($name:ident, $body:path) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $body($crate::support::Engine::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body($crate::support::Engine::Postgres).await
            }
        }
    };
}

/// A port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind 127.0.0.1:0")
        .local_addr()
        .unwrap()
        .port()
}

/// Fails the test (never skips) when an external tool is missing.
pub fn require_tool(program: &str, args: &[&str], install_hint: &str) {
    match std::process::Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`{program} {}` failed ({}): {}{}\n{install_hint}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("`{program}` is not runnable ({e}). {install_hint}"),
    }
}

// ---------------------------------------------------------------------------
// Content files.

/// Writes `bytes` to `dir/relative`, creating parent folders.
pub fn write_file(dir: &Path, relative: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create folders");
    std::fs::write(&path, bytes).expect("write file");
    path
}

/// A YAML front matter case study: `fields` are raw YAML lines.
pub fn yaml_study(fields: &str, body: &str) -> String {
    format!("---\n{}\n---\n\n{body}\n", fields.trim_end())
}

/// A TOML front matter case study: `fields` are raw TOML lines.
pub fn toml_study(fields: &str, body: &str) -> String {
    format!("+++\n{}\n+++\n\n{body}\n", fields.trim_end())
}

/// A case study with a title, slug, date, categories and a summary.
pub fn study(title: &str, slug: &str, date: &str, categories: &[&str]) -> String {
    format!(
        "---\ntitle: \"{title}\"\nslug: {slug}\ndate: {date}\ncategories: [{}]\nsummary: \"Summary of {title}\"\n---\n\n## Summary\n\nBody of {title}.\n",
        categories.join(", ")
    )
}

/// Shorthand for a UTC instant.
pub fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

/// Public URL of a case study on a site with the default [`BASE_URL`], as
/// the default permalink builds it.
pub fn permalink(slug: &str) -> String {
    format!("{BASE_URL}case-studies/{slug}/")
}
