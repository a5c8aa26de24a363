//! Publish latency: with `casewire run` (release build) serving the
//! 10,000-file store, the time from a new case study file being written to
//! the new feed being served over HTTP. Prints median, p95 and max over 50
//! publishes; asserts nothing.
//!
//! Run with `cargo bench --bench publish_latency`.

#[path = "corpus/mod.rs"]
mod corpus;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const PUBLISHES: usize = 50;

fn main() {
    let casewire = PathBuf::from(env!("CARGO_BIN_EXE_casewire"));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/feeds_build");
    let content = root.join("content");
    let (generated, bytes) = corpus::ensure_store(&root, &content);
    println!(
        "content store: {} ({} case studies, {:.1} MB{})",
        content.display(),
        corpus::STUDIES,
        bytes as f64 / 1e6,
        if generated { ", generated" } else { ", reused" }
    );
    let work = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = work.path().join("casewire.toml");
    let text = corpus::config_text(&content)
        + &format!(
            "\n[feeds]\nout_dir = {:?}\nitems = 50\n\n[database]\nurl = \"sqlite://{}\"\n\n[http]\nlisten = \"127.0.0.1:{port}\"\n",
            work.path().join("feeds").display().to_string(),
            work.path().join("casewire.db").display()
        );
    // corpus::config_text has [feeds] items = 50 already: keep one [feeds] table.
    let text = text.replacen("[feeds]\nitems = 50\n", "", 1);
    std::fs::write(&config, text).unwrap();

    let publish_dir = content.join("zz-publish");
    let _ = std::fs::remove_dir_all(&publish_dir);
    std::fs::create_dir_all(&publish_dir).unwrap();

    let daemon = Command::new(&casewire)
        .args(["--config", config.to_str().unwrap(), "run"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start casewire run");
    // Killed on drop, so a probe that panics does not leave it running.
    let daemon = Daemon(daemon);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::builder().no_gzip().build().unwrap();
    let feed = format!("http://127.0.0.1:{port}/feeds/rss.xml");
    let started = Instant::now();
    rt.block_on(async {
        loop {
            if let Ok(r) = client.get(&feed).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "daemon did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    println!(
        "daemon ready (cold start incl. 10,000 files) in {:.2?}",
        started.elapsed()
    );

    let mut latencies = Vec::with_capacity(PUBLISHES);
    rt.block_on(async {
        let mut etag = String::new();
        for i in 0..PUBLISHES {
            let marker = format!("Latency probe {i} {}", std::process::id());
            let body = format!(
                "---\ntitle: \"{marker}\"\nslug: latency-probe-{i}\ndate: {}\ncategories: [databases]\nsummary: probe\n---\n\nA probe.\n",
                chrono::Utc::now().to_rfc3339()
            );
            let tmp = publish_dir.join(format!(".probe-{i}.tmp"));
            std::fs::write(&tmp, body).unwrap();
            let t0 = Instant::now();
            std::fs::rename(&tmp, publish_dir.join(format!("probe-{i}.md"))).unwrap();
            loop {
                let r = client.get(&feed).header("If-None-Match", &etag).send().await.unwrap();
                if r.status() == 200 {
                    etag = r.headers()["etag"].to_str().unwrap().to_owned();
                    if r.text().await.unwrap().contains(&marker) {
                        break;
                    }
                }
                assert!(t0.elapsed() < Duration::from_secs(30), "probe {i} never appeared");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies.push(t0.elapsed());
            // Let the debouncer settle so publishes are independent.
            tokio::time::sleep(Duration::from_millis(150)).await;
        }
    });
    drop(daemon);
    let _ = std::fs::remove_dir_all(&publish_dir);

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!("write-to-served latency over {PUBLISHES} publishes (file written → GET /feeds/rss.xml shows it):");
    println!("  median {:>8.1} ms", pct(0.5).as_secs_f64() * 1e3);
    println!("  p95    {:>8.1} ms", pct(0.95).as_secs_f64() * 1e3);
    println!(
        "  max    {:>8.1} ms",
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!("  (includes the watcher's 20 ms debounce; target p95 ≤ 100 ms)");
}

/// The daemon under test; killed when dropped.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
