//! Database access for SQLite (the embedded default) and PostgreSQL (for
//! several daemons sharing one database). All SQL lives below this module.
//!
//! One code path serves both engines through sqlx's `Any` driver: queries use
//! `$N` placeholders (which sqlx binds positionally on SQLite too), times are
//! `BIGINT` milliseconds since the Unix epoch in UTC (DESIGN.md invariant 8),
//! and the few statements that differ (row claiming) branch on [`Backend`].

pub mod admin;
pub mod archive;
pub mod bounces;
pub mod edition_pauses;
pub mod editions;
pub mod ledger;
pub mod outbox;
pub mod relay;
pub mod subscribers;
pub mod tallies;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, ConnectOptions, Executor};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The engine behind a connection.
    pub fn of(conn: &sqlx::AnyConnection) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("postgresql") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    /// The engine a database URL names: `sqlite:…`, or else PostgreSQL.
    pub fn of_url(url: &str) -> Self {
        if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        }
    }
}

/// Placeholders for statements with many parameters, each bound once, in
/// the order they appear in the text: `?` on SQLite, `$1, $2, …` on
/// PostgreSQL. sqlx looks up the name of every numbered SQLite parameter,
/// and each lookup scans all of them, so a 2,000-parameter insert written
/// with `$N` spent most of its time naming parameters.
pub struct Params {
    backend: Backend,
    n: usize,
}

impl Params {
    pub fn new(backend: Backend) -> Self {
        Self { backend, n: 0 }
    }

    /// Appends the next placeholder to `sql`.
    pub fn push(&mut self, sql: &mut String) {
        self.n += 1;
        match self.backend {
            Backend::Sqlite => sql.push('?'),
            Backend::Postgres => {
                use std::fmt::Write as _;
                let _ = write!(sql, "${}", self.n);
            }
        }
    }

    /// Appends `count` placeholders separated by commas.
    pub fn push_list(&mut self, sql: &mut String, count: usize) {
        for i in 0..count {
            if i > 0 {
                sql.push_str(", ");
            }
            self.push(sql);
        }
    }
}

/// SQLite: `select` (whose result has `columns`) as one row holding a
/// JSON array of rows, each an array of the columns in order; decoded by
/// [`json_rows`]. sqlx hands each row of a SQLite result from its database
/// thread to the async side as a message of its own, and the side that
/// waits is woken for most of them: a batch read as one row is one
/// hand-over instead of hundreds.
pub(crate) fn as_one_json_row(select: &str, columns: &str) -> String {
    format!("SELECT json_group_array(json_array({columns})) FROM ({select})")
}

/// The rows of an [`as_one_json_row`] result, each as `T` (a tuple, or a
/// struct deserialized from its fields in order).
pub(crate) fn json_rows<T: serde::de::DeserializeOwned>(json: &str) -> Result<Vec<T>, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Sql(sqlx::Error::Decode(Box::new(e))))
}

/// A list bound as one parameter: `column IN` the list. The statement's
/// text is the same whatever the list's length, so each engine prepares it
/// once and reuses the plan. (sqlx caches prepared statements by text; a
/// list written into the text made every batch a new statement, parsed and
/// planned again, and on PostgreSQL one more round trip to prepare it.)
/// SQLite reads a JSON array; PostgreSQL an array literal, unnested. (Not
/// `= ANY(CAST($n AS BIGINT[]))`: in a plan that filters rows instead of
/// looking them up, e.g. on a table filled since it was last analyzed,
/// PostgreSQL parses the text literal again for every row it looks at,
/// and advancing 500 cursors of a 20,000-subscriber edition took 54 ms
/// instead of 5. A JSON set-returning function was estimated badly and
/// scanned the table.)
#[derive(Debug, Clone, Copy)]
pub enum List<'a> {
    Ids(&'a [i64]),
    Texts(&'a [&'a str]),
}

impl List<'_> {
    /// `column` is in the list bound at `param` (e.g. `$3`).
    pub fn predicate(&self, backend: Backend, column: &str, param: &str) -> String {
        match (backend, self) {
            (Backend::Sqlite, _) => format!("{column} IN (SELECT value FROM json_each({param}))"),
            (Backend::Postgres, List::Ids(_)) => {
                format!("{column} IN (SELECT unnest(CAST({param} AS BIGINT[])))")
            }
            (Backend::Postgres, List::Texts(_)) => {
                format!("{column} IN (SELECT unnest(CAST({param} AS TEXT[])))")
            }
        }
    }

    /// The value to bind at the predicate's `param`.
    pub fn value(&self, backend: Backend) -> String {
        match (backend, self) {
            (Backend::Sqlite, List::Ids(ids)) => serde_json::to_string(ids),
            (Backend::Sqlite, List::Texts(texts)) => serde_json::to_string(texts),
            (Backend::Postgres, List::Ids(ids)) => Ok(format!(
                "{{{}}}",
                ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
            )),
            (Backend::Postgres, List::Texts(texts)) => Ok(pg_text_array(texts)),
        }
        .expect("ids and strings serialize")
    }
}

/// A PostgreSQL array literal: every element quoted, `"` and `\` escaped.
fn pg_text_array(values: &[&str]) -> String {
    let mut out = String::from("{");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push('"');
        for c in v.chars() {
            if c == '"' || c == '\\' {
                out.push('\\');
            }
            out.push(c);
        }
        out.push('"');
    }
    out.push('}');
    out
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("cannot migrate the database: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Sql(#[from] sqlx::Error),
}

/// A connection pool and the engine behind it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Db {
    pub pool: AnyPool,
    pub backend: Backend,
    /// Bulk writers of this process take turns here on SQLite (see
    /// [`Db::write_turn`]).
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,
}

/// A turn at writing; see [`Db::write_turn`].
pub type WriteTurn = Option<tokio::sync::OwnedMutexGuard<()>>;

static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

impl Db {
    /// Waits for this process's turn to write on SQLite, which has one
    /// writer: an edition run queueing digests and a delivery worker
    /// recording results would otherwise collide, and SQLite's busy handler
    /// sleeps whole milliseconds on every collision. Held for a transaction.
    /// PostgreSQL writers run side by side (`None`).
    pub async fn write_turn(&self) -> WriteTurn {
        match self.backend {
            Backend::Sqlite => Some(self.writes.clone().lock_owned().await),
            Backend::Postgres => None,
        }
    }

    /// Opens (creating an SQLite file and its folder when missing) without migrating.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = Backend::of_url(url);
        let err = |source| StoreError::Connect {
            url: crate::config::redact(url),
            source,
        };
        let url = match backend {
            Backend::Sqlite => {
                let path = url
                    .trim_start_matches("sqlite://")
                    .trim_start_matches("sqlite:");
                let path = path.split('?').next().unwrap_or(path);
                if let Some(dir) = Path::new(path)
                    .parent()
                    .filter(|d| !d.as_os_str().is_empty())
                {
                    std::fs::create_dir_all(dir).map_err(|e| err(sqlx::Error::Io(e)))?;
                }
                if url.contains('?') {
                    url.to_owned()
                } else {
                    format!("{url}?mode=rwc")
                }
            }
            Backend::Postgres => url.to_owned(),
        };
        let options = AnyConnectOptions::from_str(&url)
            .map_err(err)?
            .log_statements(tracing::log::LevelFilter::Trace)
            .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
        let pool = AnyPoolOptions::new()
            .max_connections(match backend {
                Backend::Sqlite => 8,
                Backend::Postgres => 16,
            })
            .acquire_timeout(Duration::from_secs(30))
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // WAL: readers never block the one writer; a busy timeout
                        // instead of an immediate "database is locked".
                        conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 10000;")
                            .await?;
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await
            .map_err(err)?;
        Ok(Self {
            pool,
            backend,
            writes: Default::default(),
        })
    }

    /// Opens and applies every pending migration.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let db = Self::connect(url).await?;
        db.migrate().await?;
        Ok(db)
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        match self.backend {
            Backend::Sqlite => SQLITE_MIGRATOR.run(&self.pool).await?,
            Backend::Postgres => POSTGRES_MIGRATOR.run(&self.pool).await?,
        }
        Ok(())
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    pub async fn get_meta(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?)
    }

    pub async fn set_meta(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value")
            .bind(key)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

/// Milliseconds since the Unix epoch: the stored form of every time.
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub fn from_millis(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_values_quote_what_each_engine_needs() {
        let texts = [
            "a@example.org",
            r#"odd"quote\@example.org"#,
            "x,y{}@example.org",
        ];
        assert_eq!(
            List::Texts(&texts).value(Backend::Postgres),
            r#"{"a@example.org","odd\"quote\\@example.org","x,y{}@example.org"}"#
        );
        assert_eq!(
            List::Texts(&texts).value(Backend::Sqlite),
            r#"["a@example.org","odd\"quote\\@example.org","x,y{}@example.org"]"#
        );
        assert_eq!(List::Ids(&[3, 1]).value(Backend::Postgres), "{3,1}");
        assert_eq!(List::Ids(&[3, 1]).value(Backend::Sqlite), "[3,1]");
        assert_eq!(List::Ids(&[]).value(Backend::Postgres), "{}");
    }
}
