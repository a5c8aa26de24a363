//! The daemon end to end: content watching, timed publication, the ledger,
//! feeds over HTTP with conditional requests, WebSub and metrics. Each test
//! runs on SQLite and on PostgreSQL.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::post;
use reqwest::header;
use support::{permalink, prepare, spawn_app, study, AppOptions, Engine, TestApp};

fn two_studies() -> Vec<(&'static str, String)> {
    vec![
        (
            "2025/pool.md",
            study(
                "Pool exhaustion",
                "pool-exhaustion",
                "2025-03-14T09:00:00Z",
                &["databases"],
            ),
        ),
        (
            "2025/gc.md",
            study(
                "GC pauses",
                "gc-pauses",
                "2025-04-01T09:00:00Z",
                &["performance"],
            ),
        ),
    ]
}

/// The daemon of these tests, without editions, with `files` in its content folder.
async fn spawn(engine: Engine, files: &[(&str, String)]) -> TestApp {
    spawn_app(options(engine, files)).await
}

fn options(engine: Engine, files: &[(&str, String)]) -> AppOptions {
    files
        .iter()
        .fold(AppOptions::new(engine).editions(""), |o, (name, body)| {
            o.file(name, body.clone())
        })
}

async fn serves_complete_feeds_and_seeds_silently(engine: Engine) {
    let app = spawn(engine, &two_studies()).await;
    for path in [
        "/feeds/rss.xml",
        "/feeds/atom.xml",
        "/feeds/feed.json",
        "/feeds/databases/rss.xml",
        "/feeds/performance/atom.xml",
    ] {
        let r = app.fetch(path).await;
        assert_eq!(r.status(), 200, "{path}");
    }
    let rss = app.fetch("/feeds/rss.xml").await.text().await.unwrap();
    assert!(rss.contains("Pool exhaustion") && rss.contains("GC pauses"));
    let db_feed = app
        .fetch("/feeds/databases/rss.xml")
        .await
        .text()
        .await
        .unwrap();
    assert!(db_feed.contains("Pool exhaustion") && !db_feed.contains("GC pauses"));
    // Invariant 3: the first start on an existing store announces nothing.
    assert!(app.event_slugs().await.is_empty());
    let seeded: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM publications")
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap();
    assert_eq!(seeded, 2);
    assert_eq!(app.fetch("/feeds/nope.xml").await.status(), 404);
    app.stop().await;
}
on_both_engines!(
    serves_complete_feeds_and_seeds_silently,
    serves_complete_feeds_and_seeds_silently
);

async fn conditional_requests_gzip_head_and_content_types(engine: Engine) {
    let app = spawn(engine, &two_studies()).await;
    let r = app.fetch("/feeds/rss.xml").await;
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/rss+xml; charset=utf-8"
    );
    assert!(r.headers()[header::CACHE_CONTROL]
        .to_str()
        .unwrap()
        .contains("max-age"));
    let etag = r.headers()[header::ETAG].to_str().unwrap().to_owned();
    let last_modified = r.headers()[header::LAST_MODIFIED]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong etag: {etag}"
    );

    let r = app
        .client
        .get(app.url("/feeds/rss.xml"))
        .header(header::IF_NONE_MATCH, &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    assert_eq!(r.headers()[header::ETAG].to_str().unwrap(), etag);
    assert!(r.bytes().await.unwrap().is_empty());

    let r = app
        .client
        .get(app.url("/feeds/rss.xml"))
        .header(header::IF_NONE_MATCH, "\"other\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = app
        .client
        .get(app.url("/feeds/rss.xml"))
        .header(header::IF_MODIFIED_SINCE, &last_modified)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 304);
    let r = app
        .client
        .get(app.url("/feeds/rss.xml"))
        .header(header::IF_MODIFIED_SINCE, "Mon, 01 Jan 2001 00:00:00 GMT")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let r = app
        .client
        .get(app.url("/feeds/atom.xml"))
        .header(header::ACCEPT_ENCODING, "gzip, br")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()[header::CONTENT_ENCODING], "gzip");
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/atom+xml; charset=utf-8"
    );
    assert_eq!(r.headers()[header::VARY], "Accept-Encoding");
    let gz = r.bytes().await.unwrap();
    let mut xml = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut xml).unwrap();
    assert!(xml.contains("<feed"), "gzip body decodes to the feed");
    let r = app
        .client
        .get(app.url("/feeds/atom.xml"))
        .header(header::ACCEPT_ENCODING, "gzip;q=0")
        .send()
        .await
        .unwrap();
    assert!(r.headers().get(header::CONTENT_ENCODING).is_none());

    let r = app
        .client
        .head(app.url("/feeds/feed.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()[header::CONTENT_TYPE],
        "application/feed+json; charset=utf-8"
    );
    assert!(r.bytes().await.unwrap().is_empty());
    app.stop().await;
}
on_both_engines!(
    conditional_requests_gzip_head_and_content_types,
    conditional_requests_gzip_head_and_content_types
);

async fn new_file_is_published_once_and_survives_restart(engine: Engine) {
    let mut app = spawn(engine, &two_studies()).await;
    // An old front-matter date: the file is new to us, so it is newly published.
    app.save(
        "2026/new.md",
        &study(
            "Fresh failure",
            "fresh-failure",
            "2024-01-01T00:00:00Z",
            &["security"],
        ),
    );
    app.wait_for_feed("/feeds/rss.xml", 10, |b| b.contains("Fresh failure"))
        .await;
    app.wait_for_feed("/feeds/security/atom.xml", 10, |b| {
        b.contains("Fresh failure")
    })
    .await;
    assert_eq!(app.event_slugs().await, vec!["fresh-failure"]);

    app.restart().await;
    assert!(app
        .fetch("/feeds/rss.xml")
        .await
        .text()
        .await
        .unwrap()
        .contains("Fresh failure"));
    assert_eq!(
        app.event_slugs().await,
        vec!["fresh-failure"],
        "a restart announces nothing"
    );
    app.stop().await;
}
on_both_engines!(
    new_file_is_published_once_and_survives_restart,
    new_file_is_published_once_and_survives_restart
);

async fn editing_updates_the_entry_without_announcing(engine: Engine) {
    let app = spawn(engine, &two_studies()).await;
    let before = app.fetch("/feeds/atom.xml").await.text().await.unwrap();
    let body = study(
        "Pool exhaustion, revisited",
        "pool-exhaustion",
        "2025-03-14T09:00:00Z",
        &["databases"],
    )
    .replace("---\n\n", "updated: 2025-06-01T10:00:00Z\n---\n\n");
    app.save("2025/pool.md", &body);
    let after = app
        .wait_for_feed("/feeds/atom.xml", 10, |b| {
            b.contains("Pool exhaustion, revisited")
        })
        .await;
    let id = format!("<id>{}</id>", permalink("pool-exhaustion"));
    let id = id.as_str();
    assert!(
        before.contains(id) && after.contains(id),
        "the entry id comes from the slug"
    );
    assert!(
        after.contains("<updated>2025-06-01T10:00:00+00:00</updated>"),
        "{after}"
    );
    assert!(
        app.event_slugs().await.is_empty(),
        "an edit is not an announcement"
    );
    app.stop().await;
}
on_both_engines!(
    editing_updates_the_entry_without_announcing,
    editing_updates_the_entry_without_announcing
);

async fn broken_file_keeps_its_last_good_version(engine: Engine) {
    let app = spawn(engine, &two_studies()).await;
    app.save(
        "2025/pool.md",
        "---\ntitle: \"Pool exhaustion BROKEN\"\ndate: next tuesday\n---\nbody\n",
    );
    // The snapshot records the problem; the feed keeps the last good version.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let snap = app.app().snapshot.borrow().clone();
        if let Some(p) = snap
            .catalog
            .problems
            .iter()
            .find(|p| p.path.ends_with("2025/pool.md"))
        {
            assert!(
                p.to_string().contains("pool.md:3: 'date' is not a date"),
                "{p}"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the problem was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let rss = app.fetch("/feeds/rss.xml").await.text().await.unwrap();
    assert!(
        rss.contains("Pool exhaustion") && !rss.contains("BROKEN"),
        "last good version stays"
    );
    let health: serde_json::Value = app.fetch("/healthz").await.json().await.unwrap();
    assert_eq!(health["content_problems"], 1);

    app.save(
        "2025/pool.md",
        &study(
            "Pool exhaustion fixed",
            "pool-exhaustion",
            "2025-03-14T09:00:00Z",
            &["databases"],
        ),
    );
    app.wait_for_feed("/feeds/rss.xml", 10, |b| {
        b.contains("Pool exhaustion fixed")
    })
    .await;
    assert!(app.event_slugs().await.is_empty());
    app.stop().await;
}
on_both_engines!(
    broken_file_keeps_its_last_good_version,
    broken_file_keeps_its_last_good_version
);

async fn future_case_study_is_published_on_time(engine: Engine) {
    let soon = (chrono::Utc::now() + chrono::Duration::seconds(2)).to_rfc3339();
    let mut files = two_studies();
    files.push((
        "2026/soon.md",
        study("Scheduled study", "scheduled-study", &soon, &["databases"]),
    ));
    let app = spawn(engine, &files).await;
    assert!(!app
        .fetch("/feeds/rss.xml")
        .await
        .text()
        .await
        .unwrap()
        .contains("Scheduled study"));
    // rescan_seconds is an hour: only the publication timer can make this appear.
    app.wait_for_feed("/feeds/rss.xml", 8, |b| b.contains("Scheduled study"))
        .await;
    assert_eq!(
        app.event_slugs().await,
        vec!["scheduled-study"],
        "its time coming is a publication"
    );
    app.stop().await;
}
on_both_engines!(
    future_case_study_is_published_on_time,
    future_case_study_is_published_on_time
);

async fn removed_file_leaves_the_feeds(engine: Engine) {
    let app = spawn(engine, &two_studies()).await;
    std::fs::remove_file(app.content_dir.join("2025/gc.md")).unwrap();
    app.wait_for_feed("/feeds/rss.xml", 10, |b| !b.contains("GC pauses"))
        .await;
    app.wait_for_feed("/feeds/performance/rss.xml", 10, |b| {
        !b.contains("GC pauses")
    })
    .await;
    app.stop().await;
}
on_both_engines!(removed_file_leaves_the_feeds, removed_file_leaves_the_feeds);

/// A WebSub hub on loopback that fails its first request, then records.
async fn spawn_hub() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/hub",
        post(move |body: String| {
            let s = s.clone();
            let calls = calls.clone();
            async move {
                if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                s.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hub"), seen)
}

async fn websub_hub_is_advertised_and_notified(engine: Engine) {
    let (hub, seen) = spawn_hub().await;
    let mut app = spawn(engine, &two_studies()).await;
    // Reconfigure with the hub: websub_hub lives in [feeds].
    app.restart_with(app.options().feeds(format!("websub_hub = \"{hub}\"")))
        .await;
    let r = app.fetch("/feeds/rss.xml").await;
    let link = r.headers()[header::LINK].to_str().unwrap().to_owned();
    assert!(
        link.contains(&format!("<{hub}>; rel=\"hub\"")) && link.contains("rel=\"self\""),
        "{link}"
    );
    let body = r.text().await.unwrap();
    assert!(
        body.contains(&format!("href=\"{hub}\" rel=\"hub\"")),
        "hub link in the feed"
    );

    app.save(
        "2026/hubbed.md",
        &study(
            "Hub news",
            "hub-news",
            "2025-05-01T00:00:00Z",
            &["security"],
        ),
    );
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let got = seen.lock().unwrap().clone();
        let all = got.join("\n");
        if all.contains("hub.mode=publish")
            && all.contains("feeds%2Fsecurity%2Frss.xml")
            && all.contains("feeds%2Frss.xml")
        {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "hub was not notified (after a failed first attempt): {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        !seen.lock().unwrap().join("\n").contains("performance"),
        "unchanged feeds are not announced"
    );
    app.stop().await;
}
on_both_engines!(
    websub_hub_is_advertised_and_notified,
    websub_hub_is_advertised_and_notified
);

async fn health_and_metrics(engine: Engine) {
    let app = spawn(engine, &two_studies()).await;
    let h: serde_json::Value = app.fetch("/healthz").await.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["case_studies"], 2);
    app.fetch("/feeds/rss.xml").await;
    let m = app.fetch("/metrics").await;
    assert!(m.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = m.text().await.unwrap();
    for name in [
        "casewire_feed_rebuilds_total",
        "casewire_content_errors",
        "casewire_http_requests_total{route=\"/feeds/{*path}\",status=\"200\"}",
    ] {
        assert!(text.contains(name), "{name} missing from /metrics:\n{text}");
    }
    app.stop().await;
}
on_both_engines!(health_and_metrics, health_and_metrics);

/// Issue 13.2a: a first start whose content folder did not exist logged an
/// error, reported healthy, wrote empty feeds over the existing ones and
/// seeded an empty ledger; when the folder appeared, every old case study
/// was announced as new. Now the start fails, naming the folder, and touches
/// neither the feeds nor the ledger.
async fn missing_content_folder_fails_the_start_and_seeds_nothing(engine: Engine) {
    let site = prepare(options(engine, &[]).no_content_dir());
    let feeds = site.out_dir.clone();
    std::fs::create_dir_all(&feeds).unwrap();
    let good = "<rss>the last good feed</rss>";
    std::fs::write(feeds.join("rss.xml"), good).unwrap();
    let content = site.content_dir.clone();
    let err = match casewire::app::start(site.settings().clone()).await {
        Ok(app) => {
            app.stop().await;
            panic!("started without a content folder")
        }
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains(&content.display().to_string()), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert_eq!(
        std::fs::read_to_string(feeds.join("rss.xml")).unwrap(),
        good
    );
    let dbh = casewire::store::Db::open(&site.db.url).await.unwrap();
    assert_eq!(
        dbh.get_meta("ledger_seeded_at").await.unwrap(),
        None,
        "ledger seeded"
    );
    dbh.pool.close().await;

    // The folder appears: the first real start seeds it silently.
    std::fs::create_dir_all(&content).unwrap();
    for (name, body) in two_studies() {
        let path = content.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, body).unwrap();
    }
    let app = casewire::app::start(site.settings().clone()).await.unwrap();
    let events: Vec<String> = sqlx::query_scalar("SELECT slug FROM publication_events")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(
        events,
        Vec::<String>::new(),
        "old case studies announced as new"
    );
    assert!(std::fs::read_to_string(feeds.join("rss.xml"))
        .unwrap()
        .contains("Pool exhaustion"));
    app.stop().await;
}
on_both_engines!(
    missing_content_folder_fails_the_start_and_seeds_nothing,
    missing_content_folder_fails_the_start_and_seeds_nothing
);

/// Issue 13.2a: a content folder that disappears while the daemon runs
/// keeps the last good feeds and shows as degraded health until it is back.
async fn vanished_content_folder_keeps_feeds_and_reports_degraded_health(engine: Engine) {
    let app = spawn(engine, &two_studies()).await;
    let aside = app.content_dir.with_file_name("content-moved");
    std::fs::rename(&app.content_dir, &aside).unwrap();
    app.app()
        .publisher
        .send(casewire::publisher::Command::Rescan)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let health = loop {
        let h: serde_json::Value = app.fetch("/healthz").await.json().await.unwrap();
        if h["status"] == "degraded" {
            break h;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never degraded: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let problem = &health["problems"][0];
    assert_eq!(problem["component"], "content", "{health}");
    assert!(
        problem["message"]
            .as_str()
            .unwrap()
            .contains(&app.content_dir.display().to_string()),
        "{health}"
    );
    assert_eq!(health["case_studies"], 2, "{health}");
    let rss = app.fetch("/feeds/rss.xml").await.text().await.unwrap();
    assert!(
        rss.contains("Pool exhaustion") && rss.contains("GC pauses"),
        "{rss}"
    );
    let on_disk = std::fs::read_to_string(app.out_dir.join("rss.xml")).unwrap();
    assert!(on_disk.contains("Pool exhaustion"), "{on_disk}");

    // Back: healthy again.
    std::fs::rename(&aside, &app.content_dir).unwrap();
    app.app()
        .publisher
        .send(casewire::publisher::Command::Rescan)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let h: serde_json::Value = app.fetch("/healthz").await.json().await.unwrap();
        if h["status"] == "ok" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never healthy again: {h}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    app.stop().await;
}
on_both_engines!(
    vanished_content_folder_keeps_feeds_and_reports_degraded_health,
    vanished_content_folder_keeps_feeds_and_reports_degraded_health
);

/// Issue 13.9: a kill -9 during a feed write left a truncated `.casewire-*`
/// temp file in out_dir forever. The next start removes them.
async fn stale_feed_temp_files_are_removed_at_start(engine: Engine) {
    let mut app = spawn(engine, &two_studies()).await;
    let feeds = app.out_dir.clone();
    let stale = [
        feeds.join(".casewire-AbC123"),
        feeds.join("databases/.casewire-x9"),
    ];
    for s in &stale {
        std::fs::write(s, "<rss><chan").unwrap();
    }
    let keep = feeds.join("notes.txt");
    std::fs::write(&keep, "mine").unwrap();
    app.restart().await;
    for s in &stale {
        assert!(!s.exists(), "{} is still there", s.display());
    }
    assert!(keep.exists(), "an unrelated file was removed");
    app.stop().await;
}
on_both_engines!(
    stale_feed_temp_files_are_removed_at_start,
    stale_feed_temp_files_are_removed_at_start
);
