//! Editions: segmentation (each subscriber gets exactly the new case studies
//! of their categories, none twice, none missed, no empty digests), rendering,
//! idempotent windows and scheduler catch-up with an injected clock. Each
//! database test runs on SQLite and PostgreSQL.

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use casewire::content::{Catalog, DirectoryStore};
use casewire::editions::run::run_edition;
use casewire::editions::scheduler::{due_window, Scheduler};
use casewire::store::ledger::Ledger;
use casewire::store::Db;
use chrono::{DateTime, Utc};
use support::{prepare, study, AppOptions, Engine, TestSite, BASE_URL};

/// An edition run's surroundings, on a [`prepare`]d site: the database
/// opened, and the ledger seeded on an empty catalog.
struct World {
    db: Db,
    settings: casewire::config::Settings,
    ledger: Ledger,
    site: TestSite,
}

const EDITIONS: &str = r#"
[[editions]]
slug = "weekly"
name = "Weekly"
schedule = "0 8 * * MON"
timezone = "Europe/Berlin"
max_items = 2

[[editions]]
slug = "perf"
name = "Performance only"
schedule = "@daily"
categories = ["performance"]
"#;

async fn world(engine: Engine) -> World {
    let site = prepare(options(engine));
    let s = site.settings().clone();
    let db = Db::open(&site.db.url).await.unwrap();
    let mut ledger = Ledger::load(db.clone()).await.unwrap();
    // First start: seeds nothing announced.
    ledger.sync(&Catalog::default(), Utc::now()).await.unwrap();
    World {
        db,
        settings: s,
        ledger,
        site,
    }
}

/// The site of these tests: the editions above, no others.
fn options(engine: Engine) -> AppOptions {
    AppOptions::new(engine).editions(EDITIONS)
}

impl World {
    fn content(&self) -> std::path::PathBuf {
        self.site.content_dir.clone()
    }

    /// Adds case study files and records them as published (events).
    async fn publish(&mut self, files: &[(&str, &str, &[&str], bool)]) -> Catalog {
        for (slug, date, cats, featured) in files {
            let mut body = study(&format!("Title {slug}"), slug, date, cats);
            if *featured {
                body = body.replacen("---\n", "---\nfeatured: true\n", 1);
            }
            std::fs::write(self.content().join(format!("{slug}.md")), body).unwrap();
        }
        let catalog = DirectoryStore::new(&self.settings).scan(None);
        assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
        self.ledger.sync(&catalog, Utc::now()).await.unwrap();
        catalog
    }

    /// A confirmed subscriber following `cats` (empty: all) and receiving `editions`.
    async fn subscriber(&self, email: &str, cats: &[&str], editions: &[&str]) -> i64 {
        let id: i64 = sqlx::query_scalar("INSERT INTO subscribers (email, name, status, source, created_at, confirmed_at) VALUES ($1, '', 'confirmed', 'cli', 0, 0) RETURNING id")
            .bind(email)
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        let cursor: i64 = sqlx::query_scalar("SELECT COALESCE(MAX(id), 0) FROM publication_events")
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
        for c in cats {
            sqlx::query(
                "INSERT INTO subscriber_categories (subscriber_id, category) VALUES ($1, $2)",
            )
            .bind(id)
            .bind(*c)
            .execute(&self.db.pool)
            .await
            .unwrap();
        }
        for e in editions {
            sqlx::query("INSERT INTO subscriber_editions (subscriber_id, edition, cursor_event_id) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(*e)
                .bind(cursor)
                .execute(&self.db.pool)
                .await
                .unwrap();
        }
        id
    }

    async fn run(
        &self,
        catalog: &Catalog,
        edition: &str,
        window: &str,
    ) -> casewire::editions::run::RunReport {
        let e = self.settings.edition(edition).unwrap().clone();
        run_edition(
            &self.db,
            &self.settings,
            catalog,
            &e,
            window,
            Utc::now(),
            false,
        )
        .await
        .unwrap()
    }

    /// Slugs in each recipient's queued digests, read back from the rendered text.
    async fn received(&self, edition: &str) -> Vec<(String, BTreeSet<String>, String)> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT o.recipient, b.text, b.html FROM outbox o JOIN outbox_bodies b ON b.id = o.body_id WHERE o.edition = $1 ORDER BY o.recipient, o.id",
        )
        .bind(edition)
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        rows.into_iter()
            .map(|(to, text, html)| {
                let slugs = text
                    .lines()
                    .filter_map(|l| {
                        l.split_once(&format!("{BASE_URL}case-studies/"))
                            .map(|(_, rest)| rest)
                    })
                    .map(|s| s.trim_end_matches('/').to_owned())
                    .collect();
                (to, slugs, html)
            })
            .collect()
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

async fn each_subscriber_gets_exactly_their_new_case_studies(engine: Engine) {
    let mut w = world(engine).await;
    // Published before anyone subscribed: nobody gets it.
    w.publish(&[("old-news", "2025-01-01T00:00:00Z", &["databases"], false)])
        .await;
    w.subscriber("all@example.com", &[], &["weekly"]).await;
    w.subscriber("db@example.com", &["databases"], &["weekly", "perf"])
        .await;
    w.subscriber("sec@example.com", &["security"], &["weekly"])
        .await;
    w.subscriber("perf@example.com", &["performance"], &["perf"])
        .await;
    let unsub = w.subscriber("gone@example.com", &[], &["weekly"]).await;
    sqlx::query("UPDATE subscribers SET status = 'unsubscribed' WHERE id = $1")
        .bind(unsub)
        .execute(&w.db.pool)
        .await
        .unwrap();
    w.subscriber("suppressed@example.com", &[], &["weekly"])
        .await;
    sqlx::query("INSERT INTO suppressions (email, reason, created_at) VALUES ('suppressed@example.com', 'test', 0)").execute(&w.db.pool).await.unwrap();

    let catalog = w
        .publish(&[
            ("pool", "2025-03-01T00:00:00Z", &["databases"], false),
            (
                "gc",
                "2025-03-02T00:00:00Z",
                &["performance", "databases"],
                true,
            ),
            ("latency", "2025-03-03T00:00:00Z", &["performance"], false),
        ])
        .await;
    let report = w.run(&catalog, "weekly", "cron:2026-11-23T07:00:00Z").await;
    assert_eq!((report.enqueued, report.nothing_new), (2, 1), "{report:?}");

    let got = w.received("weekly").await;
    assert_eq!(
        got.len(),
        2,
        "no digest for the unsubscribed, the suppressed, or the one with nothing new"
    );
    let (to, slugs, html) = &got[0];
    assert_eq!(to, "all@example.com");
    // max_items = 2: two are listed, the third is counted and linked.
    assert!(html.contains("1 more new case study"), "{html}");
    assert_eq!(
        slugs,
        &set(&["gc", "latency", "pool"]),
        "listed and linked: everything, once"
    );
    assert!(
        html.find("Title gc").unwrap() < html.find("Title latency").unwrap(),
        "featured first"
    );
    assert_eq!(got[1].0, "db@example.com");
    assert_eq!(got[1].1, set(&["pool", "gc"]));

    // The performance-only edition carries only its category, whatever the reader follows.
    w.run(&catalog, "perf", "cron:2026-11-22T00:00:00Z").await;
    let perf = w.received("perf").await;
    assert_eq!(
        perf.iter()
            .map(|(t, s, _)| (t.as_str(), s.clone()))
            .collect::<Vec<_>>(),
        vec![
            ("db@example.com", set(&["gc"])),
            ("perf@example.com", set(&["gc", "latency"]))
        ]
    );

    // Same window again (a scheduler that fires twice): nothing more is queued.
    let again = w.run(&catalog, "weekly", "cron:2026-11-23T07:00:00Z").await;
    assert!(again.already_done);
    // Next window with nothing new: no empty digests, nothing twice.
    let next = w.run(&catalog, "weekly", "cron:2026-11-30T07:00:00Z").await;
    assert_eq!(next.enqueued, 0);
    assert_eq!(w.received("weekly").await.len(), 2);

    // A new publication reaches exactly those who follow it, in the next window.
    let catalog = w
        .publish(&[("breach", "2025-03-04T00:00:00Z", &["security"], false)])
        .await;
    w.run(&catalog, "weekly", "cron:2026-12-07T07:00:00Z").await;
    let got = w.received("weekly").await;
    let latest: Vec<_> = got
        .iter()
        .filter(|(_, s, _)| s.contains("breach"))
        .map(|(t, s, _)| (t.as_str(), s.len()))
        .collect();
    assert_eq!(latest, vec![("all@example.com", 1), ("sec@example.com", 1)]);

    // Digest rows hold no token: only the subscriber's link version, from
    // which delivery signs the links; no token row is written per digest.
    let rows: Vec<(Option<i64>, String)> =
        sqlx::query_as("SELECT subscriber_id, vars FROM outbox WHERE edition = 'weekly'")
            .fetch_all(&w.db.pool)
            .await
            .unwrap();
    assert!(!rows.is_empty());
    for (subscriber, v) in rows {
        assert!(subscriber.is_some());
        assert_eq!(v, r#"{"v":0}"#);
    }
    let tokens: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    assert_eq!(tokens, 0);
}
on_both_engines!(
    each_subscriber_gets_exactly_their_new_case_studies,
    each_subscriber_gets_exactly_their_new_case_studies
);

async fn one_body_per_content_set(engine: Engine) {
    let mut w = world(engine).await;
    for i in 0..30 {
        w.subscriber(
            &format!("r{i}@example.com"),
            if i % 2 == 0 { &["databases"] } else { &[] },
            &["weekly"],
        )
        .await;
    }
    let catalog = w
        .publish(&[
            ("a", "2025-03-01T00:00:00Z", &["databases"], false),
            ("b", "2025-03-02T00:00:00Z", &["security"], false),
        ])
        .await;
    let report = w.run(&catalog, "weekly", "cron:2026-11-23T07:00:00Z").await;
    assert_eq!(report.enqueued, 30);
    assert_eq!(
        report.rendered, 2,
        "two distinct content sets, rendered once each"
    );
    let bodies: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox_bodies")
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    assert_eq!(bodies, 2);
}
on_both_engines!(one_body_per_content_set, one_body_per_content_set);

/// What the PostgreSQL planner believes `subscriber_editions` holds (-1:
/// never analyzed).
async fn planned_rows(db: &Db) -> f64 {
    sqlx::query_scalar("SELECT CAST(reltuples AS DOUBLE PRECISION) FROM pg_class WHERE relname = 'subscriber_editions'")
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// A list imported just before a run is planned from statistics that know
/// it: the run analyzes the list's tables when they were never analyzed
/// (PostgreSQL; autovacuum would only get to it a minute later), and leaves
/// statistics that exist alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_refreshes_statistics_that_do_not_know_the_list() {
    let mut w = world(Engine::Postgres).await;
    let catalog = w
        .publish(&[("a", "2025-03-01T00:00:00Z", &["databases"], false)])
        .await;
    for sql in [
        "INSERT INTO subscribers (email, name, status, source, created_at, confirmed_at)
             SELECT 'bulk' || i || '@example.com', '', 'confirmed', 'import', 0, 0 FROM generate_series(1, 5000) i",
        "INSERT INTO subscriber_editions (subscriber_id, edition, cursor_event_id) SELECT id, 'weekly', 0 FROM subscribers",
    ] {
        sqlx::query(sql).execute(&w.db.pool).await.unwrap();
    }
    assert!(
        planned_rows(&w.db).await < 1.0,
        "a new table starts without statistics"
    );
    let report = w.run(&catalog, "weekly", "cron:2026-11-23T07:00:00Z").await;
    assert_eq!(report.enqueued, 5000);
    let planned = planned_rows(&w.db).await;
    assert_eq!(planned, 5000.0, "the run analyzed the list first");

    // Statistics that exist are not refreshed: the planner's count stays
    // as it was while the list grows.
    sqlx::query("INSERT INTO subscribers (email, name, status, source, created_at, confirmed_at) VALUES ('one.more@example.com', '', 'confirmed', 'cli', 0, 0)")
        .execute(&w.db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO subscriber_editions (subscriber_id, edition, cursor_event_id) SELECT id, 'weekly', 0 FROM subscribers WHERE email = 'one.more@example.com'")
        .execute(&w.db.pool)
        .await
        .unwrap();
    assert!(!casewire::store::editions::refresh_list_statistics(&w.db)
        .await
        .unwrap());
    assert_eq!(planned_rows(&w.db).await, 5000.0);
    // On SQLite there is nothing to refresh.
    let sqlite = world(Engine::Sqlite).await;
    assert!(
        !casewire::store::editions::refresh_list_statistics(&sqlite.db)
            .await
            .unwrap()
    );
}

#[test]
fn digest_html_is_inlined_and_dark_mode_ready() {
    let s = prepare(options(Engine::Sqlite)).settings().clone();
    let d = casewire::editions::render::sample(&s).unwrap();
    assert!(d.html.contains("style=\""), "CSS is inlined");
    assert!(!d.html.contains("<link"), "no remote stylesheets");
    assert!(
        d.html.contains("prefers-color-scheme: dark"),
        "dark-mode rules are kept"
    );
    assert!(d
        .html
        .contains(casewire::delivery::compose::PLACEHOLDER_UNSUBSCRIBE_URL));
    assert!(d.text.contains("Unsubscribe: "));
    assert!(!d.subject.contains('\n'));
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

#[test]
fn downtime_is_caught_up_once() {
    let s = casewire::editions::schedule::parse_cron("0 7 * * *").unwrap();
    let tz = chrono_tz::UTC;
    // Down from Monday 06:00 to Thursday 12:00: three runs missed, one catch-up (Thursday's).
    assert_eq!(
        due_window(
            &s,
            tz,
            utc("2026-11-16T06:00:00Z"),
            utc("2026-11-19T12:00:00Z")
        ),
        Some(utc("2026-11-19T07:00:00Z"))
    );
    assert_eq!(
        due_window(
            &s,
            tz,
            utc("2026-11-19T07:00:00Z"),
            utc("2026-11-19T12:00:00Z")
        ),
        None
    );
    assert_eq!(
        due_window(
            &s,
            tz,
            utc("2026-11-19T07:00:00Z"),
            utc("2026-11-20T07:00:00Z")
        ),
        Some(utc("2026-11-20T07:00:00Z"))
    );
}

async fn scheduler_fires_once_per_period_with_an_injected_clock(engine: Engine) {
    let mut w = world(engine).await;
    w.subscriber("all@example.com", &[], &["weekly"]).await;
    let catalog = w
        .publish(&[("pool", "2025-03-01T00:00:00Z", &["databases"], false)])
        .await;
    let snapshot = Arc::new(casewire::publisher::Snapshot {
        settings: Arc::new(w.settings.clone()),
        catalog: Arc::new(catalog),
        feeds: Arc::default(),
        built_at: Utc::now(),
    });
    let (_tx, rx) = tokio::sync::watch::channel(snapshot);
    let scheduler = Scheduler {
        db: w.db.clone(),
        snapshot: rx,
        signals: Default::default(),
    };
    let runs = || async {
        sqlx::query_scalar::<_, String>(
            "SELECT window_key FROM edition_runs WHERE edition = 'weekly' ORDER BY window_key",
        )
        .fetch_all(&w.db.pool)
        .await
        .unwrap()
    };
    // First start on a Friday: nothing before it is due.
    let next = scheduler.tick(utc("2026-11-20T10:00:00Z")).await.unwrap();
    assert!(runs().await.is_empty());
    assert!(next.unwrap() <= utc("2026-11-23T07:00:00Z"));
    // Down for three weeks: one catch-up, for the latest Monday.
    scheduler.tick(utc("2026-12-10T10:00:00Z")).await.unwrap();
    assert_eq!(runs().await, vec!["cron:2026-12-07T07:00:00Z"]);
    scheduler.tick(utc("2026-12-10T10:05:00Z")).await.unwrap();
    assert_eq!(runs().await.len(), 1, "no second run in the same period");
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE edition = 'weekly'")
        .fetch_one(&w.db.pool)
        .await
        .unwrap();
    assert_eq!(queued, 1);
    // The next Monday (08:00 Berlin = 07:00 UTC in winter) runs on time.
    scheduler.tick(utc("2026-12-14T07:00:30Z")).await.unwrap();
    assert_eq!(
        runs().await,
        vec!["cron:2026-12-07T07:00:00Z", "cron:2026-12-14T07:00:00Z"]
    );
}
on_both_engines!(
    scheduler_fires_once_per_period_with_an_injected_clock,
    scheduler_fires_once_per_period_with_an_injected_clock
);
