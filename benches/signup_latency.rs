//! Sign-up latency: with `casewire run` sending through a real SMTP server
//! (aiosmtpd, `tests/support_smtp.py`), the time from `POST /subscribe`
//! answering to the confirmation message being accepted by the server, i.e.
//! in the inbox. Prints median, p90 and max; asserts nothing.
//!
//! Run with `cargo bench --bench signup_latency`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Sign-ups inside the per-IP burst (20), then a few spaced past its refill.
const BURST: usize = 20;
const SPACED: usize = 10;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn received(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let casewire = PathBuf::from(env!("CARGO_BIN_EXE_casewire"));
    let work = tempfile::tempdir().expect("temp dir");
    let inbox = work.path().join("received");

    let smtp_port = free_port();
    let mut smtp = Command::new("python3")
        .arg(root.join("tests/support_smtp.py"))
        .args(["--port", &smtp_port.to_string(), "--dir"])
        .arg(&inbox)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 with aiosmtpd (pip install aiosmtpd)");
    let mut line = String::new();
    BufReader::new(smtp.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("READY"), "SMTP server: {line:?}");

    let port = free_port();
    // The shipped configuration, pointed at the test server and a scratch database.
    let mut daemon = Command::new(&casewire)
        .args(["--config", "config/casewire.toml", "run"])
        .current_dir(&root)
        .env("RUST_LOG", "warn")
        .env("CASEWIRE_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "CASEWIRE_SITE__BASE_URL",
            format!("http://127.0.0.1:{port}/"),
        )
        .env(
            "CASEWIRE_DATABASE__URL",
            format!("sqlite://{}", work.path().join("casewire.db").display()),
        )
        .env("CASEWIRE_FEEDS__OUT_DIR", work.path().join("feeds"))
        .env("CASEWIRE_HTTP__SIGNUP_MIN_SECONDS", "0")
        .env("CASEWIRE_HTTP__FORM_KEY_FILE", work.path().join("form.key"))
        .env("CASEWIRE_MAIL__TRANSPORT", "smtp")
        .env(
            "CASEWIRE_MAIL__SMTP_URL",
            format!("smtp://127.0.0.1:{smtp_port}"),
        )
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start casewire run");

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    rt.block_on(async {
        while client.get(format!("{base}/healthz")).send().await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "daemon did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });

    let mut latencies = Vec::new();
    rt.block_on(async {
        for i in 0..BURST + SPACED {
            if i >= BURST {
                // The per-IP limit refills one sign-up every 3 s.
                tokio::time::sleep(Duration::from_millis(3100)).await;
            } else {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let before = received(&inbox);
            let email = format!("latency-{i}-{}@example.org", std::process::id());
            let r = client
                .post(format!("{base}/subscribe"))
                .form(&[("email", email.as_str()), ("name", "Probe")])
                .send()
                .await
                .expect("POST /subscribe");
            let t0 = Instant::now();
            assert!(r.status().is_success(), "sign-up {i}: {}", r.status());
            while received(&inbox) <= before {
                assert!(
                    t0.elapsed() < Duration::from_secs(30),
                    "confirmation {i} never arrived"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            latencies.push(t0.elapsed());
        }
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
    let _ = smtp.kill();
    let _ = smtp.wait();

    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "sign-up → confirmation accepted by the SMTP server, over {} sign-ups:",
        latencies.len()
    );
    println!("  median {:>8.1} ms", pct(0.5).as_secs_f64() * 1e3);
    println!("  p90    {:>8.1} ms", pct(0.9).as_secs_f64() * 1e3);
    println!(
        "  max    {:>8.1} ms",
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!("  (target p90 ≤ 300 ms)");
}
