//! Upstream feeds as a content source, against a real HTTP server on a random
//! loopback port: conditional requests, 500s, timeouts and malformed XML.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use casewire::content::upstream::{fetch, Fetched, UpstreamError, Validators};
use common::daemon::TestApp;
use common::Engine;

const RSS: &str = r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>Upstream</title><link>http://up.example/</link><description>d</description>
<item><title>Queue backlog incident</title><link>http://up.example/posts/queue-backlog.html</link><guid>urn:up:1</guid>
<pubDate>Tue, 03 Mar 2026 10:00:00 +0000</pubDate><category>Databases</category><description>&lt;p&gt;A backlog &lt;script&gt;x()&lt;/script&gt;grew.&lt;/p&gt;</description></item>
<item><title>Undated</title><link>http://up.example/posts/undated</link></item>
</channel></rss>"#;

const ATOM: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Up Atom</title><id>urn:up-atom</id><updated>2026-03-05T00:00:00Z</updated>
<entry><title>Cache stampede</title><id>urn:up:atom:1</id><link rel="alternate" href="/a/cache-stampede"/>
<updated>2026-03-05T00:00:00Z</updated><published>2026-03-04T00:00:00Z</published><category term="performance"/>
<summary>Warm caches matter.</summary><content type="html">&lt;p&gt;See &lt;a href="/b"&gt;this&lt;/a&gt;&lt;/p&gt;</content></entry></feed>"#;

#[derive(Clone, Default)]
struct Upstream {
    /// "rss" | "atom" | "500" | "slow" | "malformed"
    mode: Arc<Mutex<&'static str>>,
    hits: Arc<AtomicUsize>,
    conditional_hits: Arc<AtomicUsize>,
}

async fn serve(State(up): State<Upstream>, headers: HeaderMap) -> Response {
    up.hits.fetch_add(1, Ordering::SeqCst);
    let mode = *up.mode.lock().unwrap();
    let etag = format!("\"{mode}-v1\"");
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        up.conditional_hits.fetch_add(1, Ordering::SeqCst);
        return StatusCode::NOT_MODIFIED.into_response();
    }
    match mode {
        "rss" => (
            [
                (header::ETAG, etag),
                (header::CONTENT_TYPE, "application/rss+xml".into()),
            ],
            RSS,
        )
            .into_response(),
        "atom" => (
            [
                (header::ETAG, etag),
                (header::CONTENT_TYPE, "application/atom+xml".into()),
            ],
            ATOM,
        )
            .into_response(),
        "500" => (StatusCode::INTERNAL_SERVER_ERROR, "boom").into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            RSS.into_response()
        }
        _ => "<rss><channel><item><title>unclosed".into_response(),
    }
}

async fn spawn_upstream(mode: &'static str) -> (String, Upstream) {
    let up = Upstream::default();
    *up.mode.lock().unwrap() = mode;
    let app = axum::Router::new()
        .route("/feed", axum::routing::get(serve))
        .with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/feed"), up)
}

fn settings_with_source(url: &str) -> casewire::config::Settings {
    let dir = tempfile::tempdir().unwrap();
    let text = common::daemon::config_text("sqlite://unused.db", dir.path(), "");
    let text = text.replace(
        "rescan_seconds = 3600",
        &format!("rescan_seconds = 3600\nsources = [{{ feed = \"{url}\" }}]"),
    );
    common::daemon::settings(&text)
}

fn client(timeout_ms: u64) -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_millis(timeout_ms))
        .build()
        .unwrap()
}

#[tokio::test]
async fn rss_entries_map_to_case_studies_and_conditional_get_is_used() {
    let (url, up) = spawn_upstream("rss").await;
    let settings = settings_with_source(&url);
    let source = &settings.content.sources[0];
    let mut v = Validators::default();
    let Fetched::Entries(entries) = fetch(&client(2000), source, &settings, &mut v)
        .await
        .unwrap()
    else {
        panic!("expected entries")
    };
    assert_eq!(entries.len(), 1, "the undated entry is skipped");
    let e = &entries[0];
    assert_eq!(e.title, "Queue backlog incident");
    assert_eq!(
        e.link.as_str(),
        "http://up.example/posts/queue-backlog.html"
    );
    assert_eq!(
        e.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        vec!["databases"],
        "category from the entry"
    );
    assert!(e.slug.as_str().starts_with("queue-backlog-"));
    assert!(!e.html().contains("<script"), "upstream HTML is sanitized");
    assert_eq!(v.etag.as_deref(), Some("\"rss-v1\""));

    // The second poll sends If-None-Match and gets 304.
    assert!(matches!(
        fetch(&client(2000), source, &settings, &mut v)
            .await
            .unwrap(),
        Fetched::NotModified
    ));
    assert_eq!(up.conditional_hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn atom_entries_resolve_relative_links() {
    let (url, _) = spawn_upstream("atom").await;
    let settings = settings_with_source(&url);
    let mut v = Validators::default();
    let Fetched::Entries(entries) = fetch(
        &client(2000),
        &settings.content.sources[0],
        &settings,
        &mut v,
    )
    .await
    .unwrap() else {
        panic!()
    };
    let e = &entries[0];
    assert_eq!(e.title, "Cache stampede");
    assert!(e.link.as_str().ends_with("/a/cache-stampede"), "{}", e.link);
    assert!(
        e.html()
            .contains(&format!("href=\"{}", url.replace("/feed", "/b"))),
        "{}",
        e.html()
    );
    assert_eq!(e.categories[0].as_str(), "performance");
    assert_eq!(e.published.to_rfc3339(), "2026-03-04T00:00:00+00:00");
}

#[tokio::test]
async fn errors_are_clear_and_name_the_source() {
    for (mode, expect) in [
        ("500", "server answered 500"),
        ("malformed", "not a valid feed"),
        ("slow", "request failed"),
    ] {
        let (url, _) = spawn_upstream(mode).await;
        let settings = settings_with_source(&url);
        let mut v = Validators::default();
        let err = match fetch(
            &client(500),
            &settings.content.sources[0],
            &settings,
            &mut v,
        )
        .await
        {
            Err(e) => e,
            Ok(_) => panic!("{mode}: expected an error"),
        };
        let msg = err.to_string();
        assert!(
            msg.starts_with(&url) && msg.contains(expect),
            "{mode}: {msg}"
        );
        if mode == "slow" {
            assert!(matches!(err, UpstreamError::Request { .. }));
        }
        assert!(v.etag.is_none(), "a failed poll does not store validators");
    }
}

async fn daemon_keeps_last_good_upstream_entries(engine: Engine) {
    let (url, up) = spawn_upstream("rss").await;
    let mut app = TestApp::spawn(engine, &[], "").await;
    app.settings_text = app
        .settings_text
        .replace("rescan_seconds = 3600", &format!("rescan_seconds = 3600\nsources = [{{ feed = \"{url}\", category = \"security\", poll_seconds = 1 }}]"));
    app.restart().await;
    app.wait_for_feed("/feeds/security/rss.xml", 10, |b| {
        b.contains("Queue backlog incident")
    })
    .await;
    // The upstream breaks: polls fail, the entries stay.
    *up.mode.lock().unwrap() = "malformed";
    let before = up.hits.load(Ordering::SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while up.hits.load(Ordering::SeqCst) < before + 1 {
        assert!(tokio::time::Instant::now() < deadline, "no further poll");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app
        .get("/feeds/rss.xml")
        .await
        .text()
        .await
        .unwrap()
        .contains("Queue backlog incident"));
    app.stop().await;
}
on_both_engines!(
    daemon_keeps_last_good_upstream_entries,
    daemon_keeps_last_good_upstream_entries
);
