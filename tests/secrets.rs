//! Credentials in URLs never reach an error or a log line: configuration
//! errors, database connection failures and upstream fetch failures name the
//! URL with its password masked.

mod support;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use support::{prepare, AppOptions, TestSite};

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

/// The test site of `options`, which put [`SECRET`] into its configuration.
fn site_with_secret(options: AppOptions) -> TestSite {
    let site = prepare(options.editions(""));
    assert!(
        site.config_text.contains(SECRET),
        "the secret is in the config"
    );
    site
}

/// An smtp_url that does not parse printed its password in the error; so
/// did an unsupported database URL.
#[tokio::test]
async fn unparseable_smtp_url_printed_its_password() {
    let site = site_with_secret(
        AppOptions::sqlite()
            .smtp_url(&format!("smtp://relay:{SECRET}@mail.example.com:25x"))
            .database(format!("url = \"mysql://app:{SECRET}@db.example.com/cw\"")),
    );
    let config = &site.config_path;
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
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // closed once the listener drops
    let site = site_with_secret(AppOptions::sqlite().database(format!(
        "url = \"postgres://app:{SECRET}@127.0.0.1:{port}/cw\""
    )));
    let config = &site.config_path;
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
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let site = site_with_secret(AppOptions::sqlite().content(format!(
        "sources = [{{ feed = \"http://reader:{SECRET}@127.0.0.1:{closed}/feed.xml\", category = \"databases\" }}]"
    )));
    let config = &site.config_path;
    let log = site.root.join("daemon.log");
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
