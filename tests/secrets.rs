//! Credentials in URLs never reach an error or a log line: configuration
//! errors, database connection failures and upstream fetch failures name the
//! URL with its password masked.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Engine, TestDb};

const SECRET: &str = "s3cretpw";

fn casewire(config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CASEWIRE_CONFIG")
        .output()
        .expect("run casewire")
}

fn write_config(db: &TestDb, edit: impl Fn(String) -> String) -> std::path::PathBuf {
    let text = common::daemon::config_text(&db.url, &db.path(), "");
    let edited = edit(text.clone());
    assert_ne!(edited, text, "the test's edit applies");
    std::fs::create_dir_all(db.path().join("content")).unwrap();
    let path = db.path().join("casewire.toml");
    std::fs::write(&path, edited).unwrap();
    path
}

/// An smtp_url that does not parse printed its password in the error; so
/// did an unsupported database URL.
#[tokio::test]
async fn unparseable_smtp_url_printed_its_password() {
    let db = TestDb::new(Engine::Sqlite).await;
    let config = write_config(&db, |t| {
        t.replace(
            "transport = \"file\"",
            &format!(
                "transport = \"smtp\"\nsmtp_url = \"smtp://relay:{SECRET}@mail.example.com:25x\""
            ),
        )
        .replace(
            &format!("url = \"{}\"", db.url),
            &format!("url = \"mysql://app:{SECRET}@db.example.com/cw\""),
        )
    });
    for args in [&["check"][..], &["run"][..]] {
        let out = casewire(&config, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("[mail] smtp_url"), "{stderr}");
        assert!(stderr.contains("[database] url"), "{stderr}");
        assert!(stderr.contains("relay:***@mail.example.com"), "{stderr}");
        assert!(
            !stderr.contains(SECRET),
            "{args:?} printed the password:\n{stderr}"
        );
    }
}

/// A database that cannot be reached is named without its password.
#[tokio::test]
async fn unreachable_database_is_named_without_its_password() {
    let db = TestDb::new(Engine::Sqlite).await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed once the listener drops
    let config = write_config(&db, |t| {
        t.replace(
            &format!("url = \"{}\"", db.url),
            &format!("url = \"postgres://app:{SECRET}@127.0.0.1:{port}/cw\""),
        )
    });
    let out = casewire(&config, &["migrate"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("app:***@127.0.0.1"),
        "the URL is named: {stderr}"
    );
    assert!(!stderr.contains(SECRET), "printed the password:\n{stderr}");
}

/// A failing upstream feed was logged with its URL's password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_fetch_errors_logged_the_feed_password() {
    let db = TestDb::new(Engine::Sqlite).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = write_config(&db, |t| {
        t.replace(
            "rescan_seconds = 3600",
            &format!(
                "rescan_seconds = 3600\nsources = [{{ feed = \"http://reader:{SECRET}@127.0.0.1:{closed}/feed.xml\", category = \"databases\" }}]"
            ),
        )
    });
    let log = db.path().join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_casewire"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env_remove("CASEWIRE_CONFIG")
        .env("RUST_LOG", "casewire=debug")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("request failed") {
            break text;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the daemon exited ({status}) before fetching:\n{text}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no fetch failure logged:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        text.contains("reader:***@127.0.0.1"),
        "the feed is named:\n{text}"
    );
    assert!(!text.contains(SECRET), "logged the password:\n{text}");
}
