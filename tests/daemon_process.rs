//! The real `casewire run` process: signals. SIGHUP reloads configuration and
//! content without dropping the listener, a bad new config is rejected and the
//! old one stays in force, and SIGTERM stops it promptly with exit code 0.

mod support;

use std::io::Read;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{prepare, study, AppOptions};

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn get(url: &str) -> Option<String> {
    reqwest::get(url).await.ok()?.text().await.ok()
}

async fn wait_until(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_and_sigterm_stops() {
    let mut site = prepare(AppOptions::sqlite().self_links().editions("").file(
        "a.md",
        study("First", "first", "2025-01-01T00:00:00Z", &["databases"]),
    ));
    let port = site.port;
    let config = site.config_path.clone();
    let mut child = Command::new(env!("CARGO_BIN_EXE_casewire"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let feed = format!("http://127.0.0.1:{port}/feeds/rss.xml");
    wait_until(20, "the daemon serves feeds", async || {
        get(&feed)
            .await
            .is_some_and(|b| b.contains("<title>Casewire Test</title>"))
    })
    .await;

    // A good new config: the title changes, the same listener keeps serving.
    let first = site.options();
    site.rewrite(first.clone().site("title = \"Renamed Notes\""));
    signal(&child, "HUP");
    wait_until(10, "the reloaded title", async || {
        get(&feed)
            .await
            .is_some_and(|b| b.contains("<title>Renamed Notes</title>"))
    })
    .await;

    // A bad new config: rejected, the running one stays in force.
    // (With the first title: were it applied, the title would change back.)
    site.rewrite(first.feeds("items = 0"));
    signal(&child, "HUP");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let body = get(&feed).await.expect("still serving");
    assert!(
        body.contains("<title>Renamed Notes</title>"),
        "old config stays in force"
    );

    let started = Instant::now();
    signal(&child, "TERM");
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "SIGTERM did not stop the daemon within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    assert!(
        log.contains("reload rejected") && log.contains("[feeds] items: 0 is out of range"),
        "the rejection is logged with the key:\n{log}"
    );
}
