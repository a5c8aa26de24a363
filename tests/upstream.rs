//! Upstream feeds as a content source, against a real HTTP server on a random
//! loopback port: conditional requests, 500s, timeouts and malformed XML.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use casewire::content::upstream::{fetch, Fetched, UpstreamError, Validators};
use support::{prepare, spawn_app, study, AppOptions, Engine};

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

/// Issue 13: an upstream author controls these bytes.
const HOSTILE: &str = r#"<?xml version="1.0"?>
<rss version="2.0"><channel><title>Hostile</title><link>http://up.example/</link><description>d</description>
<item><title>Control&#1; char&#x1b;s</title><link>javascript:alert(document.cookie)</link><guid isPermaLink="false">urn:up:js</guid>
<pubDate>Tue, 03 Mar 2026 10:00:00 +0000</pubDate><description>Sum&#x1b;mary &#xb;here</description></item>
<item><title>Data link</title><link> data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;</link><guid isPermaLink="false">urn:up:data</guid>
<pubDate>Tue, 03 Mar 2026 11:00:00 +0000</pubDate><description>d</description></item>
<item><title>VBScript link</title><link>vbscript:msgbox</link><guid>https://up.example/posts/by-guid</guid>
<pubDate>Tue, 03 Mar 2026 12:00:00 +0000</pubDate><description>d</description></item>
<item><title>Relative link</title><link>/posts/relative</link><guid isPermaLink="false">urn:up:rel</guid>
<pubDate>Tue, 03 Mar 2026 13:00:00 +0000</pubDate><description>d</description></item>
</channel></rss>"#;

/// `RSS` with one entry more, published after it.
fn rss_plus() -> String {
    RSS.replace(
        "<item><title>Undated</title>",
        "<item><title>Lock convoy</title><link>http://up.example/posts/lock-convoy.html</link><guid>urn:up:2</guid>\n<pubDate>Wed, 04 Mar 2026 10:00:00 +0000</pubDate><description>New.</description></item>\n<item><title>Undated</title>",
    )
}

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
        "hostile" => ([(header::ETAG, etag)], HOSTILE).into_response(),
        "rss_plus" => ([(header::ETAG, etag)], rss_plus()).into_response(),
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
    prepare(
        AppOptions::sqlite()
            .editions("")
            .content(format!("sources = [{{ feed = \"{url}\" }}]")),
    )
    .settings()
    .clone()
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
    let mut app = spawn_app(AppOptions::new(engine).editions("")).await;
    app.restart_with(app.options().content(format!(
        "sources = [{{ feed = \"{url}\", category = \"security\", poll_seconds = 1 }}]"
    )))
    .await;
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
        .fetch("/feeds/rss.xml")
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

/// Issue 13.3: `javascript:` and `data:` links of upstream items were copied
/// into feeds' <link>, JSON Feed `url` and digests' href. Issue 13.1: `&#1;`
/// in an upstream title made every RSS and Atom feed ill-formed.
#[tokio::test]
async fn upstream_javascript_and_data_links_and_control_characters_never_reach_feeds() {
    let (url, _up) = spawn_upstream("hostile").await;
    let settings = settings_with_source(&url);
    let source = &settings.content.sources[0];
    let Fetched::Entries(entries) =
        fetch(&client(2000), source, &settings, &mut Validators::default())
            .await
            .unwrap()
    else {
        panic!("expected entries")
    };
    assert_eq!(entries.len(), 4);
    let by_title = |t: &str| {
        entries.iter().find(|e| e.title == t).unwrap_or_else(|| {
            panic!(
                "no entry {t:?} in {:?}",
                entries.iter().map(|e| &e.title).collect::<Vec<_>>()
            )
        })
    };
    // Cleaned, and the link falls back as for an entry without one.
    let js = by_title("Control chars");
    assert_eq!(js.summary, "Summary here");
    assert_eq!(js.link.as_str(), url, "no usable link: the source's URL");
    assert_eq!(
        by_title("VBScript link").link.as_str(),
        "https://up.example/posts/by-guid"
    );
    assert_eq!(by_title("Data link").link.as_str(), url);
    let relative = by_title("Relative link").link.as_str().to_owned();
    assert_eq!(
        relative,
        url.replace("/feed", "/posts/relative"),
        "made absolute against the source"
    );
    for e in &entries {
        assert!(matches!(e.link.scheme(), "http" | "https"), "{}", e.link);
    }

    let catalog =
        casewire::content::Catalog::new(entries.into_iter().map(Arc::new).collect(), Vec::new(), 0);
    let now = chrono::Utc::now();
    for f in casewire::feeds::build_all(&settings, &catalog, now) {
        let text = std::str::from_utf8(&f.body).unwrap();
        for bad in [
            "javascript:",
            "data:text",
            "vbscript:",
            "\u{1}",
            "\u{1b}",
            "\u{b}",
        ] {
            assert!(!text.contains(bad), "{}: holds {bad:?}:\n{text}", f.path);
        }
        if f.path.ends_with(".xml") {
            if let Err(e) = roxmltree::Document::parse(text) {
                panic!("{}: not well-formed: {e}\n{text}", f.path);
            }
        }
    }
}

/// Issue 13.2b: the first successful fetch of an upstream source announced
/// every entry it held (55,000 events and a "54,995 more" digest). It seeds
/// silently, here for a source added to a running site; later entries still
/// announce.
async fn first_fetch_of_an_upstream_source_announces_nothing(engine: Engine) {
    let (url, up) = spawn_upstream("rss").await;
    let mut app = spawn_app(AppOptions::new(engine).editions("").file(
        "old.md",
        study("Old", "old", "2026-01-01T00:00:00Z", &["databases"]),
    ))
    .await;
    app.restart_with(app.options().content(format!(
        "sources = [{{ feed = \"{url}\", poll_seconds = 1 }}]"
    )))
    .await;
    app.wait_for_feed("/feeds/rss.xml", 10, |b| {
        b.contains("Queue backlog incident")
    })
    .await;
    let seeded: Vec<String> =
        sqlx::query_scalar("SELECT slug FROM publications WHERE slug LIKE 'queue-backlog-%'")
            .fetch_all(&app.app().db.pool)
            .await
            .unwrap();
    assert_eq!(seeded.len(), 1, "the entry is in the ledger");
    assert_eq!(
        app.event_slugs().await,
        Vec::<String>::new(),
        "nothing announced"
    );

    // A later entry of the same source is news.
    *up.mode.lock().unwrap() = "rss_plus";
    app.wait_for_feed("/feeds/rss.xml", 10, |b| b.contains("Lock convoy"))
        .await;
    let events = app.event_slugs().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert!(events[0].starts_with("lock-convoy-"), "{events:?}");

    // A restart does not seed the source again: nothing more is announced, nothing lost.
    app.restart().await;
    app.wait_for_feed("/feeds/rss.xml", 10, |b| b.contains("Lock convoy"))
        .await;
    assert_eq!(app.event_slugs().await, events);
    app.stop().await;
}
on_both_engines!(
    first_fetch_of_an_upstream_source_announces_nothing,
    first_fetch_of_an_upstream_source_announces_nothing
);
