//! Feed history (RFC 5005 archived feeds, JSON Feed `next_url` paging): a
//! reader that starts at a current feed and follows `prev-archive` (Atom) or
//! `next_url` (JSON) reaches every entry back to the first; each document
//! parses with feed-rs, feedparser and xmllint and carries the links and
//! marker the RFC asks for; full pages never change as newer case studies
//! arrive and are not even rendered again; over HTTP full pages are cached
//! as immutable. The daemon test runs on SQLite and PostgreSQL.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use casewire::content::DirectoryStore;
use casewire::feeds::{self, cache::FeedCache, output, FeedFile};
use chrono::{DateTime, Utc};
use support::{
    permalink, prepare, spawn_app, utc, yaml_study, AppOptions, Engine, TestSite, BASE_URL,
};

const PAGE: usize = 3;

/// A site whose current feeds hold 2 entries and whose archive pages hold 3,
/// with `n` case studies, one a day from 2026-01-01 (`study-01` oldest);
/// every third one is about databases.
fn site_with(n: usize) -> TestSite {
    let site = prepare(options(AppOptions::sqlite(), PAGE));
    for i in 1..=n {
        add_study(&site, i);
    }
    site
}

/// `options` with current feeds of 2 entries and archive pages of `page`.
fn options(options: AppOptions, page: usize) -> AppOptions {
    options
        .editions("")
        .feeds(format!("items = 2\narchive_page_size = {page}"))
}

fn add_study(site: &TestSite, i: usize) {
    let category = if i % 3 == 0 {
        "databases"
    } else {
        "performance"
    };
    site.write(
        &format!("study-{i:02}.md"),
        &yaml_study(
            &format!(
                "title: \"Study {i}\"\ndate: 2026-01-{i:02}T09:00:00Z\ncategories: [{category}]\nsummary: \"Summary {i}\""
            ),
            &format!("Body of study {i}, with [a link](../other/)."),
        ),
    );
}

fn now() -> DateTime<Utc> {
    utc(2026, 6, 1, 0, 0)
}

fn build(site: &TestSite) -> Vec<FeedFile> {
    let catalog = DirectoryStore::new(site.settings()).scan(None);
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
    let files = feeds::build_all(site.settings(), &catalog, now());
    output::write_all(&site.out_dir, &files).expect("write feeds");
    files
}

/// The file under out_dir that a feed URL names.
fn file_of(site: &TestSite, url: &str) -> PathBuf {
    let rel = url
        .strip_prefix(&format!("{BASE_URL}feeds/"))
        .unwrap_or_else(|| panic!("{url} is not a feed URL of the site"));
    site.out_dir.join(rel)
}

fn link<'a>(feed: &'a atom_syndication::Feed, rel: &str) -> Option<&'a str> {
    feed.links()
        .iter()
        .find(|l| l.rel() == rel)
        .map(|l| l.href())
}

/// xmllint, feedparser (no bozo, Atom 1.0) and feed-rs accept `path`.
fn assert_parses_everywhere(path: &Path) {
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg(path)
        .output()
        .expect("xmllint is required: apt-get install libxml2-utils");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "xmllint {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let script = "import feedparser,sys\nd=feedparser.parse(sys.argv[1])\nprint(int(d.bozo), d.version, len(d.entries), repr(d.get('bozo_exception','')))";
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(path)
        .output()
        .expect("python3 with feedparser is required: pip install feedparser");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.starts_with("0 atom10 "),
        "feedparser {}: {stdout}{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(path).unwrap();
    feed_rs::parser::parse(&bytes[..])
        .unwrap_or_else(|e| panic!("feed-rs cannot parse {}: {e}", path.display()));
}

/// Follows `prev-archive` from `start` to the end; returns each document's
/// URL and entry ids, in the order visited.
fn walk_atom(site: &TestSite, start: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    let mut next = Some(start.to_owned());
    while let Some(url) = next {
        assert!(
            out.iter().all(|(u, _)| *u != url),
            "prev-archive loops back to {url}"
        );
        let path = file_of(site, &url);
        assert_parses_everywhere(&path);
        let feed = atom_syndication::Feed::read_from(&std::fs::read(&path).unwrap()[..])
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(link(&feed, "self"), Some(url.as_str()), "{url}: self link");
        let ids = feed.entries().iter().map(|e| e.id().to_owned()).collect();
        next = link(&feed, "prev-archive").map(str::to_owned);
        out.push((url, ids));
    }
    out
}

/// Checks what RFC 5005 section 4 asks of archive document `url`.
fn check_archive_document(site: &TestSite, url: &str, current: &str, n: usize, pages: usize) {
    let path = file_of(site, url);
    let text = std::fs::read_to_string(&path).unwrap();
    let feed = atom_syndication::Feed::read_from(text.as_bytes()).unwrap();
    assert!(
        text.contains("xmlns:fh=\"http://purl.org/syndication/history/1.0\"")
            && text.contains("<fh:archive"),
        "{url}: no fh:archive marker:\n{text}"
    );
    assert!(
        !text.contains("fh:complete"),
        "{url}: an archive is never complete"
    );
    assert_eq!(link(&feed, "current"), Some(current), "{url}: current link");
    assert_eq!(feed.id(), current, "{url}: the logical feed's id");
    let base = url.rsplit_once('/').unwrap().0;
    let prev = (n > 1).then(|| format!("{base}/{}.xml", n - 1));
    assert_eq!(link(&feed, "prev-archive"), prev.as_deref(), "{url}");
    let next = (n < pages).then(|| format!("{base}/{}.xml", n + 1));
    assert_eq!(link(&feed, "next-archive"), next.as_deref(), "{url}");
    assert!(feed.links().iter().all(|l| l.rel() != "hub"));
    for entry in feed.entries() {
        let content = entry.content().and_then(|c| c.value()).unwrap_or_default();
        assert!(!content.is_empty(), "{url}: entries carry their content");
        assert!(
            !content.contains("href=\"../"),
            "{url}: relative link in {content}"
        );
    }
}

#[test]
fn following_prev_archive_from_the_current_feed_reaches_every_entry_back_to_the_first() {
    let site = site_with(10);
    build(&site);
    for (scope, slugs) in [
        ("", (1..=10).collect::<Vec<_>>()),
        ("databases/", vec![3, 6, 9]),
    ] {
        let current = format!("{BASE_URL}feeds/{scope}atom.xml");
        let visited = walk_atom(&site, &current);
        let name = if scope.is_empty() { "all" } else { "databases" };
        let pages = slugs.len() / PAGE + 1;
        let filled = slugs.len().div_ceil(PAGE);
        // The current feed, then the newest filled page down to page 1.
        let want: Vec<String> = std::iter::once(current.clone())
            .chain(
                (1..=filled)
                    .rev()
                    .map(|n| format!("{BASE_URL}feeds/archive/{name}/{n}.xml")),
            )
            .collect();
        let urls: Vec<&String> = visited.iter().map(|(u, _)| u).collect();
        assert_eq!(urls, want.iter().collect::<Vec<_>>(), "{scope}");
        for (n, url) in (1..=filled).rev().zip(&want[1..]) {
            check_archive_document(&site, url, &current, n, pages);
        }
        let seen: BTreeSet<String> = visited.iter().flat_map(|(_, ids)| ids.clone()).collect();
        let all: BTreeSet<String> = slugs
            .iter()
            .map(|i| permalink(&format!("study-{i:02}")))
            .collect();
        assert_eq!(seen, all, "{scope}: every entry is reachable");
        let first = &visited.last().unwrap().1;
        assert!(
            first.contains(&permalink(&format!("study-{:02}", slugs[0]))),
            "{scope}: the last page followed holds the first entry: {first:?}"
        );
        // Pages count from the oldest, PAGE entries each.
        let page1: BTreeSet<String> = visited.last().unwrap().1.iter().cloned().collect();
        let want1: BTreeSet<String> = slugs[..PAGE]
            .iter()
            .map(|i| permalink(&format!("study-{i:02}")))
            .collect();
        assert_eq!(page1, want1, "{scope}: page 1");
    }
}

#[test]
fn json_feed_next_url_pages_back_to_the_first_item() {
    let site = site_with(8);
    build(&site);
    let current = format!("{BASE_URL}feeds/feed.json");
    let mut url = Some(current.clone());
    let mut seen_urls = Vec::new();
    let mut ids = BTreeSet::new();
    let mut last_items = Vec::new();
    while let Some(u) = url {
        assert!(!seen_urls.contains(&u), "next_url repeats {u}");
        let bytes = std::fs::read(file_of(&site, &u)).unwrap();
        feed_rs::parser::parse(&bytes[..]).unwrap_or_else(|e| panic!("feed-rs: {u}: {e}"));
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(v["version"], "https://jsonfeed.org/version/1.1");
        assert_eq!(v["feed_url"], current.as_str(), "{u}: the feed's identity");
        last_items = v["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect();
        ids.extend(last_items.iter().cloned());
        seen_urls.push(u);
        url = v["next_url"].as_str().map(str::to_owned);
        if let Some(next) = &url {
            assert_ne!(next, &current, "next_url must differ from feed_url");
        }
    }
    assert_eq!(
        seen_urls,
        vec![
            current.clone(),
            format!("{BASE_URL}feeds/archive/all/3.json"),
            format!("{BASE_URL}feeds/archive/all/2.json"),
            format!("{BASE_URL}feeds/archive/all/1.json"),
        ]
    );
    let all: BTreeSet<String> = (1..=8)
        .map(|i| permalink(&format!("study-{i:02}")))
        .collect();
    assert_eq!(ids, all);
    assert!(last_items.contains(&permalink("study-01")));
}

#[test]
fn full_pages_never_change_as_newer_case_studies_arrive_and_are_not_rendered_again() {
    // Nine: pages 1-3 are full, page 4 exists and is empty.
    let site = site_with(9);
    let files = build(&site);
    let page = |n: usize| site.out_dir.join(format!("archive/all/{n}.xml"));
    let before: Vec<Vec<u8>> = (1..=3).map(|n| std::fs::read(page(n)).unwrap()).collect();
    let current = atom_syndication::Feed::read_from(
        &std::fs::read(site.out_dir.join("atom.xml")).unwrap()[..],
    )
    .unwrap();
    assert_eq!(
        link(&current, "prev-archive"),
        Some(format!("{BASE_URL}feeds/archive/all/3.xml").as_str()),
        "the newest page that holds entries"
    );
    assert_parses_everywhere(&page(4));
    // Full pages are immutable; each scope's last page is not (all: 9 case
    // studies, 4 pages; databases: 3, 2 pages; performance: 6, 3 pages;
    // the other categories: none, 1 empty page).
    for f in &files {
        let full = match f
            .path
            .strip_prefix("archive/")
            .and_then(|p| p.split_once('/'))
        {
            Some((scope, file)) => {
                let n: usize = file.split('.').next().unwrap().parse().unwrap();
                let last = match scope {
                    "all" => 4,
                    "databases" => 2,
                    "performance" => 3,
                    _ => 1,
                };
                n < last
            }
            None => false,
        };
        assert_eq!(f.immutable, full, "{}", f.path);
    }

    add_study(&site, 10);
    add_study(&site, 11);
    let catalog = DirectoryStore::new(site.settings()).scan(None);
    let (cache, _) = FeedCache::default().with(&files, now(), None);
    let rebuilt = feeds::build_since(
        site.settings(),
        &catalog,
        &feeds::Scope::all(site.settings()),
        now(),
        Some(&cache),
    );
    output::write_all(&site.out_dir, &rebuilt.files).unwrap();
    for (n, old) in (1..=3).zip(&before) {
        assert_eq!(
            &std::fs::read(page(n)).unwrap(),
            old,
            "full page {n} changed"
        );
    }
    let archive_paths: BTreeSet<&str> = rebuilt
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| p.starts_with("archive/"))
        .collect();
    assert_eq!(
        archive_paths,
        BTreeSet::from([
            "archive/all/4.json",
            "archive/all/4.xml",
            "archive/performance/3.json",
            "archive/performance/3.xml"
        ]),
        "only the pages that gained entries are rendered again"
    );
    assert!(rebuilt.retired.is_empty());
    let four = atom_syndication::Feed::read_from(&std::fs::read(page(4)).unwrap()[..]).unwrap();
    assert_eq!(four.entries().len(), 2);
    // A full rebuild renders the same bytes as the incremental one.
    let full = feeds::build_all(site.settings(), &catalog, now());
    for f in &full {
        let on_disk = std::fs::read(site.out_dir.join(&f.path)).unwrap();
        assert_eq!(&on_disk[..], &f.body[..], "{}", f.path);
    }
}

// ---------------------------------------------------------------------------
// Over HTTP, in the daemon.

/// A running daemon with `n` case studies about databases, current feeds of
/// 2 entries and archive pages of 3.
async fn history_app(engine: Engine, n: usize) -> support::TestApp {
    let options = (1..=n).fold(options(AppOptions::new(engine), PAGE), |o, i| {
        o.file(
            &format!("study-{i:02}.md"),
            support::study(
                &format!("Study {i}"),
                &format!("study-{i:02}"),
                &format!("2026-01-{i:02}T09:00:00Z"),
                &["databases"],
            ),
        )
    });
    let app = spawn_app(options).await;
    assert_eq!(app.settings.feeds.archive_page_size, PAGE);
    app
}

async fn archived_feeds_are_served_with_long_cache_lifetimes_and_lead_back_to_the_first_entry(
    engine: Engine,
) {
    let app = history_app(engine, 7).await;
    let base = app.base.clone();
    let client = app.client.clone();
    let public = format!("{BASE_URL}feeds/");
    let public = public.as_str();
    let get = |url: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            let path = url.strip_prefix(public).unwrap_or(&url).to_owned();
            client
                .get(format!("{base}/feeds/{path}"))
                .send()
                .await
                .unwrap()
        }
    };

    // Walk from the current feed over HTTP, as an aggregator would.
    let mut url = format!("{public}atom.xml");
    let mut ids = BTreeSet::new();
    let mut visited = Vec::new();
    loop {
        let r = get(url.clone()).await;
        assert_eq!(r.status(), 200, "{url}");
        let cache = r.headers()["cache-control"].to_str().unwrap().to_owned();
        assert_eq!(
            r.headers()["content-type"],
            "application/atom+xml; charset=utf-8"
        );
        let body = r.bytes().await.unwrap();
        let feed = feed_rs::parser::parse(&body[..]).unwrap();
        ids.extend(feed.entries.iter().map(|e| e.id.clone()));
        visited.push((url.clone(), cache));
        let atom = atom_syndication::Feed::read_from(&body[..]).unwrap();
        match link(&atom, "prev-archive") {
            Some(prev) => url = prev.to_owned(),
            None => break,
        }
    }
    let want: BTreeSet<String> = (1..=7)
        .map(|i| permalink(&format!("study-{i:02}")))
        .collect();
    assert_eq!(
        ids, want,
        "every entry from the current feed back to the first"
    );
    let caches: Vec<(&str, &str)> = visited
        .iter()
        .map(|(u, c)| (u.strip_prefix(public).unwrap(), c.as_str()))
        .collect();
    assert_eq!(
        caches,
        vec![
            ("atom.xml", "public, max-age=300"),
            ("archive/all/3.xml", "public, max-age=300"),
            ("archive/all/2.xml", "public, max-age=31536000, immutable"),
            ("archive/all/1.xml", "public, max-age=31536000, immutable"),
        ]
    );

    // Conditional and compressed requests work as for the current feeds.
    let r = get(format!("{public}archive/all/1.xml")).await;
    let etag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r304 = client
        .get(format!("{base}/feeds/archive/all/1.xml"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r304.status(), 304);
    let gz = client
        .get(format!("{base}/feeds/archive/databases/2.json"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.status(), 200);
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    assert_eq!(
        gz.headers()["content-type"],
        "application/feed+json; charset=utf-8"
    );
    assert_eq!(
        get(format!("{public}archive/all/9.xml")).await.status(),
        404
    );
    // Written under feeds.out_dir too.
    assert!(app.out_dir.join("archive/all/1.xml").is_file());

    // A new case study: the growing page takes it, full pages keep their bytes.
    let page2 = get(format!("{public}archive/all/2.xml"))
        .await
        .bytes()
        .await
        .unwrap();
    app.save(
        "study-08.md",
        &support::study(
            "Study 8",
            "study-08",
            "2026-01-08T09:00:00Z",
            &["databases"],
        ),
    );
    app.app()
        .publisher
        .send(casewire::publisher::Command::Rescan)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let body = get(format!("{public}archive/all/3.xml"))
            .await
            .text()
            .await
            .unwrap();
        if body.contains("study-08") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "page 3 never took study 8:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        get(format!("{public}archive/all/2.xml"))
            .await
            .bytes()
            .await
            .unwrap(),
        page2
    );
    app.stop().await;
}
on_both_engines!(
    archived_feeds_are_served_with_long_cache_lifetimes_and_lead_back_to_the_first_entry,
    archived_feeds_are_served_with_long_cache_lifetimes_and_lead_back_to_the_first_entry
);

#[test]
fn pages_that_no_longer_exist_leave_the_cache_and_the_folder() {
    let site = site_with(10);
    let files = build(&site);
    assert!(site.out_dir.join("archive/all/4.xml").is_file());
    // Two case studies go: everything fits on pages 1-3 again.
    std::fs::remove_file(site.path("study-10.md")).unwrap();
    std::fs::remove_file(site.path("study-09.md")).unwrap();
    let catalog = DirectoryStore::new(site.settings()).scan(None);
    let (cache, _) = FeedCache::default().with(&files, now(), None);
    let rebuilt = feeds::build_since(
        site.settings(),
        &catalog,
        &feeds::Scope::all(site.settings()),
        now(),
        Some(&cache),
    );
    let mut retired = rebuilt.retired.clone();
    retired.sort();
    // Everything: 8 case studies, 3 pages; databases (3, 6): 1 page.
    assert_eq!(
        retired,
        [
            "archive/all/4.json",
            "archive/all/4.xml",
            "archive/databases/2.json",
            "archive/databases/2.xml"
        ]
    );
    // Another page size renumbers the history; a full build and the
    // clean-up leave only the new pages in the folder.
    let mut site = site;
    site.rewrite(options(AppOptions::sqlite(), 5));
    assert_eq!(site.settings().feeds.archive_page_size, 5);
    let files = build(&site);
    let removed =
        output::remove_unlisted_archive_files(&site.out_dir, files.iter().map(|f| f.path.as_str()));
    // Written at size 3 with 10 case studies: everything 4 pages, databases
    // 2, performance 3. At size 5 with 8: everything and performance 2,
    // databases 1. Each page is two files (Atom and JSON).
    assert_eq!(removed, 2 * (2 + 1 + 1));
    assert!(!site.out_dir.join("archive/all/3.xml").exists());
    assert!(site.out_dir.join("archive/all/2.xml").is_file());
    assert!(
        site.out_dir.join("atom.xml").is_file(),
        "current feeds stay"
    );
}

/// `casewire feeds build` writes as it renders (a few archive documents at a
/// time, each case study's HTML dropped after its last one); what it writes
/// is byte for byte what the daemon's in-memory build holds.
#[test]
fn the_streamed_build_writes_exactly_the_documents_the_daemon_serves() {
    let site = site_with(17);
    let catalog = DirectoryStore::new(site.settings()).scan(None);
    let held = feeds::build_all(site.settings(), &catalog, now());
    let out = tempfile::tempdir().unwrap();
    let (paths, report) =
        feeds::write_every(site.settings(), &catalog, now(), out.path()).expect("write feeds");
    assert_eq!(report.written, held.len());
    let mut expected: Vec<&str> = held.iter().map(|f| f.path.as_str()).collect();
    let mut written: Vec<&str> = paths.iter().map(String::as_str).collect();
    expected.sort_unstable();
    written.sort_unstable();
    assert_eq!(written, expected);
    for f in &held {
        let on_disk = std::fs::read(out.path().join(&f.path)).unwrap();
        assert!(on_disk == f.body.as_ref(), "{} differs", f.path);
    }
    // Dropped HTML is rendered again, the same, when a later build needs it.
    let again = feeds::build_all(site.settings(), &catalog, now());
    for (a, b) in held.iter().zip(&again) {
        assert_eq!(a.body, b.body, "{}", a.path);
    }
    // Written again unchanged: nothing rewritten.
    let (_, report) = feeds::write_every(site.settings(), &catalog, now(), out.path()).unwrap();
    assert_eq!((report.written, report.unchanged), (0, held.len()));
}
