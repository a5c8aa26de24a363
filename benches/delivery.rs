//! Delivery throughput: N raw ~20 KB messages queued in SQLite, drained by
//! the delivery worker into Postfix's `smtp-sink`, next to Postfix's own
//! `smtp-source` sending as many messages of the same size to the same sink.
//! Prints figures; asserts nothing.
//!
//! Where the time goes (2 shared cores, 20 KB messages, SQLite): the send
//! path itself is cheap (one SMTP transaction is ~2 ms at 16 connections);
//! the limit is SQLite's one writer. Claiming and marking sent each rewrite
//! the whole row, 20 KB of overflow pages included, and a send slot is held
//! until its result commits (that bounds kill -9 duplicates by
//! `mail.concurrency`), so commits of ~2 rows each set the pace. With 1 KB
//! messages the same worker reaches about 5,000 messages/s.
//!
//! `cargo bench --bench delivery`; `CASEWIRE_BENCH_MESSAGES` (default 20000),
//! `CASEWIRE_BENCH_CONCURRENCY` (default "8,16"), `CASEWIRE_BENCH_SIZE` (bytes, default 20000).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

#[path = "corpus/mod.rs"]
mod corpus;

use casewire::config::Settings;
use casewire::delivery::{drain, Progress};
use casewire::domain::EmailAddress;
use casewire::store::outbox::{self, Kind, NewMessage};
use casewire::store::Db;
use chrono::Utc;
use corpus::postfix::{free_port, smtp_source, start_sink};
use tokio_util::sync::CancellationToken;

fn message(i: usize, size: usize) -> String {
    let mut m = format!(
        "From: Casewire <digest@example.com>\r\nTo: <user{i}@example.org>\r\nSubject: Benchmark {i}\r\nDate: Sat, 21 Nov 2026 20:00:00 +0000\r\nMessage-ID: <bench{i}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    );
    let line = "The connection pool ran dry at 09:14; requests queued behind a slow query.\r\n";
    while m.len() + line.len() <= size {
        m.push_str(line);
    }
    m
}

/// Peak resident set size of this process, from /proc (the kernel's VmHWM,
/// the figure getrusage's ru_maxrss reports).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

async fn ours(n: usize, size: usize, concurrency: usize) -> (f64, f64) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _sink = start_sink(port);
    let toml = format!(
        "[site]\ntitle = \"Bench\"\nbase_url = \"https://example.com/\"\n[database]\nurl = \"sqlite://{}\"\n[mail]\nfrom = \"Casewire <digest@example.com>\"\ntransport = \"smtp\"\nsmtp_url = \"smtp://127.0.0.1:{port}\"\nconcurrency = {concurrency}\n",
        dir.path().join("bench.db").display()
    );
    let settings =
        Arc::new(Settings::from_toml(Path::new("bench.toml"), &toml, std::iter::empty()).unwrap());
    let db = Db::open(&settings.database.url).await.unwrap();
    let t = Instant::now();
    let vars = serde_json::json!({});
    let mut tx = db.pool.begin().await.unwrap();
    for i in 0..n {
        let to = EmailAddress::parse(&format!("user{i}@example.org")).unwrap();
        let key = format!("bench:{i}");
        let m = message(i, size);
        outbox::enqueue(
            &mut *tx,
            &NewMessage {
                dedupe_key: &key,
                kind: Kind::Confirmation,
                edition: None,
                subscriber_id: None,
                recipient: &to,
                message: Some(&m),
                body_id: None,
                vars: &vars,
                now: Utc::now(),
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();
    let enqueue = t.elapsed();
    println!(
        "  enqueue {n} rows: {:.2} s ({:.0} rows/s)",
        enqueue.as_secs_f64(),
        n as f64 / enqueue.as_secs_f64()
    );
    let progress = Arc::new(Progress::default());
    let report = drain(
        db.clone(),
        settings,
        None,
        None,
        progress,
        CancellationToken::new(),
    )
    .await
    .unwrap();
    let left = outbox::pending_count(&db, None).await.unwrap();
    println!(
        "  casewire worker: sent {} in {:.2} s = {:.0} msg/s (retried {}, dead {}, left {left})",
        report.sent,
        report.elapsed.as_secs_f64(),
        report.rate(),
        report.retried,
        report.dead
    );
    db.pool.close().await;
    (report.rate(), report.elapsed.as_secs_f64())
}

fn theirs(n: usize, size: usize, concurrency: usize) -> f64 {
    let port = free_port();
    let _sink = start_sink(port);
    let rate = smtp_source(n, size, concurrency, port);
    println!("  smtp-source -d -s {concurrency}: {n} messages = {rate:.0} msg/s");
    rate
}

fn main() {
    let n: usize = std::env::var("CASEWIRE_BENCH_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let levels: Vec<usize> = std::env::var("CASEWIRE_BENCH_CONCURRENCY")
        .unwrap_or_else(|_| "8,16".into())
        .split(',')
        .filter_map(|v| v.trim().parse().ok())
        .collect();
    let size: usize = std::env::var("CASEWIRE_BENCH_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    println!("delivery benchmark: {n} messages of {size} bytes, SQLite outbox, Postfix smtp-sink");
    for c in levels {
        println!("concurrency {c}:");
        let (rate, _) = rt.block_on(ours(n, size, c));
        let reference = theirs(n, size, c);
        println!(
            "  ratio casewire / smtp-source: {:.2}; peak RSS so far {:.0} MiB",
            rate / reference,
            peak_rss_mib()
        );
    }
}
