//! Shared by integration tests: a fresh database per test on SQLite (a file
//! in a temp folder) or PostgreSQL (a new database on the local server), and
//! a macro that runs one test body on both. A missing PostgreSQL server fails
//! the test; it never skips.
#![allow(dead_code)]

pub mod daemon;

use std::path::PathBuf;

use sqlx::{Connection, Executor};

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

/// A database URL for one test; the temp folder lives as long as this value.
pub struct TestDb {
    pub url: String,
    pub engine: Engine,
    pub dir: tempfile::TempDir,
}

impl TestDb {
    pub async fn new(engine: Engine) -> TestDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = match engine {
            Engine::Sqlite => format!("sqlite://{}", dir.path().join("casewire.db").display()),
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
                let base = admin
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_owned())
                    .unwrap_or(admin);
                format!("{base}/{name}")
            }
        };
        TestDb { url, engine, dir }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().to_owned()
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
                $body($crate::common::Engine::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $body($crate::common::Engine::Postgres).await
            }
        }
    };
}
pub mod console;
pub mod dkim;
pub mod imap;
pub mod smtp;
pub mod subs;
