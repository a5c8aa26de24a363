//! Digests benchmark: edition runs of personalized digests to Postfix's
//! `smtp-sink` on 127.0.0.1, as an operator runs them (`casewire digest send`,
//! release build, measured with wait4), over a matrix of list sizes, digest
//! sizes and engines. Subscribers follow one or two of 8 categories; 48 case
//! studies are new. A large digest (~21 KB) lists up to 12 of them, a small
//! one (~9 KB) two, with two-sentence summaries. Next to each run, in the same process, Postfix's `smtp-source` sends
//! the same number of same-size messages to the same sink. Prints one table;
//! asserts nothing. Beside casewire's own CPU time, the table gives the
//! sink's during the run and, on PostgreSQL, the server's for the run's
//! sessions (when the server runs here and its data directory is readable):
//! on two cores the three share the machine.
//!
//! `cargo bench --bench digests`. Environment:
//! - DIGESTS_SUBSCRIBERS (default "20000,100000")
//! - DIGESTS_ITEMS (default "2,12": case studies per digest; 2 is the small
//!   digest with short summaries)
//! - DIGESTS_ENGINES (default "sqlite,postgres")
//! - DIGESTS_MILLION=1 adds a 1,000,000-subscriber run on SQLite (20 KB) for its peak RSS
//! - DIGESTS_CONCURRENCY (default 16)
//! - CASEWIRE_TEST_POSTGRES (default postgres://postgres@127.0.0.1:5432/test)
//! - DIGESTS_WRAPPER: a command the run goes under, e.g. a profiler

#[path = "corpus/mod.rs"]
mod corpus;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use casewire::content::{Catalog, DirectoryStore};
use casewire::store::ledger::Ledger;
use casewire::store::Db;
use chrono::Utc;
use sqlx::{Connection, Executor};

use corpus::postfix::{free_port, smtp_source, start_sink};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

/// One cell of the matrix, as measured.
struct Cell {
    engine: String,
    subscribers: usize,
    sent: i64,
    size: usize,
    wall: Duration,
    cpu: Duration,
    rss_mb: f64,
    /// CPU time smtp-sink used while casewire ran.
    sink_cpu: Option<Duration>,
    /// CPU time of the PostgreSQL server's sessions that ended with the run
    /// (casewire's; read from the postmaster's reaped children).
    server_cpu: Option<Duration>,
    /// smtp-source's rate for the same count and size, when compared.
    theirs: Option<f64>,
}

impl Cell {
    fn rate(&self) -> f64 {
        self.sent as f64 / self.wall.as_secs_f64()
    }
}

fn main() {
    let counts: Vec<usize> = env_list("DIGESTS_SUBSCRIBERS", "20000,100000")
        .iter()
        .map(|s| {
            s.replace('_', "")
                .parse()
                .expect("DIGESTS_SUBSCRIBERS: numbers")
        })
        .collect();
    let items: Vec<usize> = env_list("DIGESTS_ITEMS", "2,12")
        .iter()
        .map(|s| s.parse().expect("DIGESTS_ITEMS: case studies per digest"))
        .collect();
    let engines = env_list("DIGESTS_ENGINES", "sqlite,postgres");
    let concurrency: usize = env_or("DIGESTS_CONCURRENCY", 16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("digests benchmark: 8 categories, 48 new case studies, concurrency {concurrency}");
    let mut cells = Vec::new();
    for &n in &counts {
        for &max_items in &items {
            for engine in &engines {
                cells.push(rt.block_on(one_run(engine, n, max_items, concurrency, true)));
            }
        }
    }
    if std::env::var_os("DIGESTS_MILLION").is_some() {
        cells.push(rt.block_on(one_run("sqlite", 1_000_000, 12, concurrency, false)));
    }
    println!();
    println!("| subscribers | digest | engine | casewire | wall | CPU | peak RSS | sink CPU | server CPU | smtp-source | ratio |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for c in &cells {
        let (theirs, ratio) = match c.theirs {
            Some(t) => (format!("{t:.0}/s"), format!("{:.2}", c.rate() / t)),
            None => (String::new(), String::new()),
        };
        let secs =
            |d: Option<Duration>| d.map_or(String::new(), |d| format!("{:.1} s", d.as_secs_f64()));
        println!(
            "| {} | {:.1} KB | {} | {:.0}/s | {:.1} s | {:.1} s | {:.1} MB | {} | {} | {theirs} | {ratio} |",
            c.subscribers,
            c.size as f64 / 1024.0,
            c.engine,
            c.rate(),
            c.wall.as_secs_f64(),
            c.cpu.as_secs_f64(),
            c.rss_mb,
            secs(c.sink_cpu),
            secs(c.server_cpu),
        );
    }
}

async fn one_run(
    engine: &str,
    n: usize,
    max_items: usize,
    concurrency: usize,
    compare: bool,
) -> Cell {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!(
        "target/bench-data/digests/{engine}-{n}-{max_items}"
    ));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("content")).unwrap();
    let db_url = match engine {
        "sqlite" => format!("sqlite://{}", root.join("casewire.db").display()),
        "postgres" => fresh_postgres().await,
        other => panic!("unknown engine {other:?} (sqlite or postgres)"),
    };
    let port = free_port();
    let config = root.join("casewire.toml");
    std::fs::write(
        &config,
        config_text(&root, &db_url, port, concurrency, max_items),
    )
    .unwrap();
    let settings = casewire::config::Settings::load(&config).unwrap();

    let t = Instant::now();
    write_content(&root.join("content"), max_items <= 2);
    let db = Db::open(&db_url).await.unwrap();
    let mut ledger = Ledger::load(db.clone()).await.unwrap();
    ledger.sync(&Catalog::default(), Utc::now()).await.unwrap();
    let catalog = DirectoryStore::new(&settings).scan(None);
    ledger.sync(&catalog, Utc::now()).await.unwrap();
    insert_subscribers(&db, n).await;
    let label = format!("[{engine}, {n}, {max_items} items]");
    println!(
        "{label} setup (content, ledger, subscribers) in {:.1?}",
        t.elapsed()
    );

    let sink = start_sink(port);
    let postmaster = match engine {
        "postgres" => postmaster_pid(&db).await,
        _ => None,
    };
    let server_before = postmaster.and_then(|pid| corpus::proc_cpu(pid, true));
    let sink_before = sink.cpu();
    // DIGESTS_WRAPPER runs the command under a profiler, e.g.
    // "perf record -g -o /tmp/digests.perf" (its figures are then the profiler's).
    let wrapper: Vec<String> = std::env::var("DIGESTS_WRAPPER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut command = match wrapper.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args).arg(env!("CARGO_BIN_EXE_casewire"));
            c
        }
        None => Command::new(env!("CARGO_BIN_EXE_casewire")),
    };
    let run = corpus::run_child(
        command
            .args([
                "--config",
                config.to_str().unwrap(),
                "digest",
                "send",
                "weekly",
            ])
            .env("RUST_LOG", "warn"),
        &root.join("digest-send.log"),
    );
    let sink_cpu = sink
        .cpu()
        .zip(sink_before)
        .map(|(after, before)| after - before);
    // The run's sessions end with its process; give the server a moment to
    // reap them, so that their CPU time is counted in the postmaster's.
    let server_cpu = match (postmaster, server_before) {
        (Some(pid), Some(before)) => {
            std::thread::sleep(Duration::from_millis(500));
            corpus::proc_cpu(pid, true).map(|after| after.saturating_sub(before))
        }
        _ => None,
    };
    let log = std::fs::read_to_string(root.join("digest-send.log")).unwrap_or_default();
    let states: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let sent = states
        .iter()
        .find(|(s, _)| s == "sent")
        .map_or(0, |(_, c)| *c);
    let size: Option<f64> = sqlx::query_scalar(
        "SELECT AVG(CAST(LENGTH(b.html) + LENGTH(b.text) AS DOUBLE PRECISION)) FROM outbox o JOIN outbox_bodies b ON b.id = o.body_id",
    )
    .fetch_one(&db.pool)
    .await
    .ok()
    .flatten();
    let size = size.unwrap_or(0.0) as usize + 1200; // + headers and MIME framing
    db.pool.close().await;
    let mut cell = Cell {
        engine: engine.to_owned(),
        subscribers: n,
        sent,
        size,
        wall: run.wall,
        cpu: run.cpu,
        rss_mb: run.max_rss_kb as f64 / 1024.0,
        sink_cpu,
        server_cpu,
        theirs: None,
    };
    println!("{label} casewire digest send: {sent} digests of ~{:.1} KB in {:.2?} = {:.0} digests/s (whole run: segment, render, queue, deliver); peak RSS {:.1} MB; CPU {:.2?}", size as f64 / 1024.0, run.wall, cell.rate(), cell.rss_mb, run.cpu);
    if let Some(cpu) = sink_cpu {
        println!("    smtp-sink used {cpu:.2?} of CPU meanwhile");
    }
    if let Some(cpu) = server_cpu {
        println!("    the PostgreSQL server's sessions of the run used {cpu:.2?} of CPU");
    }
    for line in log.lines().filter(|l| l.contains("weekly:")) {
        println!("    {}", line.trim());
    }
    if sent as usize != n {
        println!("    outbox states: {states:?}");
    }
    if compare {
        let theirs = smtp_source(sent.max(1) as usize, size, concurrency, port);
        println!(
            "{label} smtp-source -s {concurrency}: {theirs:.0} messages/s; casewire / smtp-source = {:.2}",
            cell.rate() / theirs
        );
        cell.theirs = Some(theirs);
    }
    cell
}

/// The PostgreSQL server's main process, when this benchmark runs on the
/// server's machine and may read its data directory (None otherwise: the
/// server CPU column stays empty).
async fn postmaster_pid(db: &Db) -> Option<u32> {
    let dir: String =
        sqlx::query_scalar("SELECT setting FROM pg_settings WHERE name = 'data_directory'")
            .fetch_one(&db.pool)
            .await
            .ok()?;
    let pid = std::fs::read_to_string(Path::new(&dir).join("postmaster.pid")).ok()?;
    pid.lines().next()?.trim().parse().ok()
}

async fn fresh_postgres() -> String {
    let admin = std::env::var("CASEWIRE_TEST_POSTGRES")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let name = format!("cw_bench_{}", std::process::id());
    let mut conn = sqlx::PgConnection::connect(&admin)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {admin}: {e}"));
    let _ = conn
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    format!("{}/{name}", admin.rsplit_once('/').unwrap().0)
}

fn config_text(
    root: &Path,
    db_url: &str,
    port: u16,
    concurrency: usize,
    max_items: usize,
) -> String {
    let mut t = format!(
        r#"[site]
title = "Casewire Bench"
description = "Benchmark"
base_url = "https://bench.example.com/"

[content]
dir = {content:?}

[feeds]
out_dir = {feeds:?}

[database]
url = "{db_url}"

[mail]
from = "Casewire Bench <digest@bench.example.com>"
transport = "smtp"
smtp_url = "smtp://127.0.0.1:{port}"
concurrency = {concurrency}
max_attempts = 3

[templates]
dir = {templates:?}

[[editions]]
slug = "weekly"
name = "Weekly digest"
schedule = "0 8 * * MON"
timezone = "Europe/Berlin"
max_items = {max_items}
"#,
        content = root.join("content").display().to_string(),
        feeds = root.join("feeds").display().to_string(),
        templates = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("templates")
            .display()
            .to_string(),
    );
    for (slug, name) in corpus::CATEGORIES {
        t.push_str(&format!(
            "\n[[categories]]\nslug = \"{slug}\"\nname = \"{name}\"\n"
        ));
    }
    t
}

/// 48 case studies, six per category, with summaries long enough that a
/// reader following one or two categories gets a digest of about 20 KB
/// (`short`: two sentences, for the small digests of two case studies).
fn write_content(dir: &Path, short: bool) {
    let long = "A routine change met an unusual load pattern, and the safeguards everyone relied on turned out to depend on an assumption nobody had written down. This write-up follows the incident from the first alert to the fix, and explains which signals were there all along, how experienced teams watch for them, and why they are so easy to miss in review. The timeline shows where the first hour went: dashboards that averaged away the tail, a runbook written for a smaller fleet, and a rollback that could not undo a schema change. The fix was small; finding it was not, and the follow-up work changed how the team reviews capacity assumptions.";
    let summary = if short {
        &long[..long
            .match_indices(". ")
            .nth(1)
            .map_or(long.len(), |(i, _)| i + 1)]
    } else {
        long
    };
    for (i, (slug, _)) in corpus::CATEGORIES.iter().cycle().take(48).enumerate() {
        let other = corpus::CATEGORIES[(i + 3) % 8].0;
        let body = format!(
            "---\ntitle: \"Case study {i}: when the {slug} safeguard failed\"\nslug: bench-study-{i}\ndate: 2026-11-{:02}T08:00:00Z\ncategories: [{slug}{}]\nsummary: \"{summary}\"\nfeatured: {}\n---\n\n## Summary\n\n{summary}\n",
            1 + i % 20,
            if i % 4 == 0 { format!(", {other}") } else { String::new() },
            i % 11 == 0
        );
        std::fs::write(dir.join(format!("bench-study-{i}.md")), body).unwrap();
    }
}

/// Confirmed subscribers, each following one or two categories, receiving
/// the weekly edition, inserted a thousand per statement.
async fn insert_subscribers(db: &Db, n: usize) {
    let cats: Vec<&str> = corpus::CATEGORIES.iter().map(|(s, _)| *s).collect();
    let mut done = 0;
    while done < n {
        let chunk = (n - done).min(1000);
        let mut tx = db.pool.begin().await.unwrap();
        let mut subs = String::from("INSERT INTO subscribers (id, email, name, status, source, created_at, confirmed_at) VALUES ");
        let mut sc =
            String::from("INSERT INTO subscriber_categories (subscriber_id, category) VALUES ");
        let mut se = String::from(
            "INSERT INTO subscriber_editions (subscriber_id, edition, cursor_event_id) VALUES ",
        );
        for k in 0..chunk {
            let id = done + k + 1;
            let sep = if k == 0 { "" } else { ", " };
            subs.push_str(&format!(
                "{sep}({id}, 'reader{id}@example{}.org', '', 'confirmed', 'bench', 0, 0)",
                id % 50
            ));
            let a = cats[id % 8];
            sc.push_str(&format!("{sep}({id}, '{a}')"));
            if id % 3 == 0 {
                // A repeated pair is dropped by ON CONFLICT.
                sc.push_str(&format!(", ({id}, '{}')", cats[(id / 3 + 1) % 8]));
            }
            se.push_str(&format!("{sep}({id}, 'weekly', 0)"));
        }
        sqlx::query(&subs).execute(&mut *tx).await.unwrap();
        sqlx::query(&(sc + " ON CONFLICT DO NOTHING"))
            .execute(&mut *tx)
            .await
            .unwrap();
        sqlx::query(&se).execute(&mut *tx).await.unwrap();
        tx.commit().await.unwrap();
        done += chunk;
    }
}
