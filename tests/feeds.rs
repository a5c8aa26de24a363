//! Feeds end to end: content files in Hugo, Zola and Jekyll spellings are
//! scanned, built into every feed, written to disk, and read back by
//! independent parsers (feed-rs, Python's feedparser, xmllint) and by the
//! checks the W3C Feed Validation Service applies.

mod support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use casewire::content::{Catalog, DirectoryStore};
use casewire::feeds::{self, output, FeedFile, Format};
use chrono::{DateTime, Utc};
use feed_rs::model::Feed;
use support::{permalink, prepare, toml_study, utc, yaml_study, AppOptions, TestSite, CATEGORIES};

/// What a fixture file must turn into.
struct Expected {
    slug: &'static str,
    title: &'static str,
    published: DateTime<Utc>,
    updated: Option<DateTime<Utc>>,
    /// Category slugs, in front matter order.
    categories: &'static [&'static str],
    tags: &'static [&'static str],
}

impl Expected {
    fn updated_or_published(&self) -> DateTime<Utc> {
        self.updated.unwrap_or(self.published).max(self.published)
    }

    fn category_names(&self) -> Vec<&'static str> {
        self.categories.iter().map(|c| category_name(c)).collect()
    }
}

/// The sites of these tests: no database engine choice, no editions.
fn options() -> AppOptions {
    AppOptions::sqlite().editions("")
}

fn site() -> TestSite {
    prepare(options())
}

fn category_name(slug: &str) -> &'static str {
    CATEGORIES
        .iter()
        .find(|(s, _, _)| *s == slug)
        .map(|(_, n, _)| *n)
        .unwrap_or_else(|| panic!("unknown category {slug}"))
}

/// "Now" for most tests: after every fixture except the scheduled one.
fn now() -> DateTime<Utc> {
    utc(2026, 6, 1, 0, 0)
}

/// The scheduled fixture's publication time.
fn future_date() -> DateTime<Utc> {
    utc(2099, 9, 1, 12, 0)
}

const POOL_BODY: &str = "A failover turned into an outage.\n\n\
See [the vacuum story](../vacuum/) and ![queue depth](images/queue.svg).\n\n\
<a href=\"notes.html\">notes</a> <script>alert('x')</script> \
<img src=\"x.png\" onerror=\"alert(1)\">\n\n\
- one\n- two\n\n```toml\nmax_connections = 40\n```\n";

/// Writes the fixture files; returns what each published one must become.
fn write_fixtures(site: &TestSite) -> Vec<Expected> {
    // Hugo-style YAML with an explicit slug, lastmod and a single author.
    site.write(
        "2026/pool.md",
        &yaml_study(
            r#"title: "Connection Pool Exhaustion"
date: 2026-03-14T09:00:00Z
lastmod: 2026-03-20T16:45:00Z
slug: connection-pool-exhaustion
summary: "A failover turned into a forty-minute outage."
categories: [failure-analysis, databases]
tags: [postgres, retries]
author: "Mara Lindqvist""#,
            POOL_BODY,
        ),
    );
    // Zola: TOML, `updated` as a bare date, `[taxonomies]`, `description`, `authors`.
    site.write(
        "zola/vacuum.md",
        &toml_study(
            r#"title = "Autovacuum and XID Wraparound"
date = 2025-11-02T08:00:00Z
updated = 2025-12-01
description = "The database stopped accepting writes."
authors = ["Ana Ruiz", "Ben Okafor"]

[taxonomies]
categories = ["Databases"]
tags = ["postgres"]"#,
            "Vacuum fell behind.\n",
        ),
    );
    // Jekyll: the date lives in the file name; categories as one string.
    site.write(
        "_posts/2025-03-14-cache-stampede.md",
        &yaml_study(
            r#"title: "CDN Cache Stampede After a Deploy"
categories: performance
description: "Every edge missed at once.""#,
            "The origin melted.\n",
        ),
    );
    // Hugo page bundle: the slug is the folder name; a date with an offset.
    site.write(
        "gc-tail/index.md",
        &yaml_study(
            r#"title: "GC Pauses and Fan-out Tail Latency"
date: "2026-01-10 10:00:00 +0100"
lastmod: 2026-02-01T12:00:00Z
categories: ["Performance", "Failure Analysis"]
tags: [jvm]
authors: ["Chen Wei"]"#,
            "One slow shard made every request slow. ![p99](images/p99.svg)\n",
        ),
    );
    site.write(
        "ci-token.md",
        &yaml_study(
            r#"title: "A Leaked CI Token"
date: 2025-06-01
categories: [security]"#,
            "The token was in a log.\n",
        ),
    );
    // Left out: a draft, a Hugo section page, and one scheduled for later.
    site.write(
        "draft.md",
        &yaml_study(
            "title: \"Unfinished\"\ndate: 2026-01-01\ndraft: true\ncategories: [security]",
            "Not yet.\n",
        ),
    );
    site.write(
        "_index.md",
        &yaml_study("title: \"Case studies\"", "Section page.\n"),
    );
    site.write(
        "future.md",
        &yaml_study(
            "title: \"Scheduled Study\"\ndate: 2099-09-01T12:00:00Z\ncategories: [databases]",
            "Coming soon.\n",
        ),
    );
    vec![
        Expected {
            slug: "connection-pool-exhaustion",
            title: "Connection Pool Exhaustion",
            published: utc(2026, 3, 14, 9, 0),
            updated: Some(utc(2026, 3, 20, 16, 45)),
            categories: &["failure-analysis", "databases"],
            tags: &["postgres", "retries"],
        },
        Expected {
            slug: "gc-tail",
            title: "GC Pauses and Fan-out Tail Latency",
            published: utc(2026, 1, 10, 9, 0),
            updated: Some(utc(2026, 2, 1, 12, 0)),
            categories: &["performance", "failure-analysis"],
            tags: &["jvm"],
        },
        Expected {
            slug: "vacuum",
            title: "Autovacuum and XID Wraparound",
            published: utc(2025, 11, 2, 8, 0),
            updated: Some(utc(2025, 12, 1, 0, 0)),
            categories: &["databases"],
            tags: &["postgres"],
        },
        Expected {
            slug: "ci-token",
            title: "A Leaked CI Token",
            published: utc(2025, 6, 1, 0, 0),
            updated: None,
            categories: &["security"],
            tags: &[],
        },
        Expected {
            slug: "cache-stampede",
            title: "CDN Cache Stampede After a Deploy",
            published: utc(2025, 3, 14, 0, 0),
            updated: None,
            categories: &["performance"],
            tags: &[],
        },
        Expected {
            slug: "future",
            title: "Scheduled Study",
            published: future_date(),
            updated: None,
            categories: &["databases"],
            tags: &[],
        },
    ]
}

/// Scans the site's content and builds every feed.
fn build(site: &TestSite, at: DateTime<Utc>) -> (Catalog, Vec<FeedFile>) {
    let catalog = DirectoryStore::new(&site.settings()).scan(None);
    let files = feeds::build_all(&site.settings(), &catalog, at);
    (catalog, files)
}

/// Builds and writes every feed to the site's out_dir.
fn build_and_write(site: &TestSite, at: DateTime<Utc>) -> Vec<FeedFile> {
    let (catalog, files) = build(site, at);
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
    output::write_all(&site.out_dir, &files).expect("write feeds");
    files
}

/// Scope folders: "" for everything, then "slug/" per category.
fn scope_dirs() -> Vec<(Option<&'static str>, String)> {
    std::iter::once((None, String::new()))
        .chain(
            CATEGORIES
                .iter()
                .map(|(s, _, _)| (Some(*s), format!("{s}/"))),
        )
        .collect()
}

/// The fixtures a scope's feed must list at `at`, newest first, at most `items`.
fn expected_in<'a>(
    all: &'a [Expected],
    category: Option<&str>,
    at: DateTime<Utc>,
    items: usize,
) -> Vec<&'a Expected> {
    let mut v: Vec<&Expected> = all
        .iter()
        .filter(|e| e.published <= at)
        .filter(|e| category.is_none_or(|c| e.categories.contains(&c)))
        .collect();
    v.sort_by(|a, b| b.published.cmp(&a.published).then(a.slug.cmp(b.slug)));
    v.truncate(items);
    v
}

fn parse_file(path: &Path) -> Feed {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    feed_rs::parser::parse(&bytes[..])
        .unwrap_or_else(|e| panic!("feed-rs cannot parse {}: {e}", path.display()))
}

fn entry_ids(feed: &Feed) -> Vec<String> {
    feed.entries.iter().map(|e| e.id.clone()).collect()
}

/// Relative paths of every XML feed.
fn xml_files() -> Vec<String> {
    let mut v = Vec::new();
    for (_, dir) in scope_dirs() {
        for name in ["rss.xml", "atom.xml"] {
            v.push(format!("{dir}{name}"));
        }
    }
    v
}

// ---------------------------------------------------------------------------

#[test]
fn every_feed_parses_back_with_feed_rs_and_matches_the_sources() {
    let site = site();
    let fixtures = write_fixtures(&site);
    build_and_write(&site, now());

    for (category, dir) in scope_dirs() {
        let want = expected_in(&fixtures, category, now(), 50);
        for format in Format::ALL {
            let path = site.out_dir.join(&dir).join(format.file_name());
            let feed = parse_file(&path);
            let what = path.display();
            let title = feed.title.as_ref().map(|t| t.content.as_str());
            match category {
                None => assert_eq!(title, Some("Casewire Test"), "{what}"),
                Some(c) => assert_eq!(
                    title,
                    Some(format!("Casewire Test: {}", category_name(c)).as_str()),
                    "{what}"
                ),
            }
            assert_eq!(
                feed.entries.len(),
                want.len(),
                "{what}: {:?}",
                entry_ids(&feed)
            );
            for (entry, want) in feed.entries.iter().zip(&want) {
                let link = permalink(want.slug);
                assert_eq!(entry.id, link, "{what}");
                assert_eq!(
                    entry.title.as_ref().map(|t| t.content.as_str()),
                    Some(want.title),
                    "{what}"
                );
                assert_eq!(
                    entry.links.first().map(|l| l.href.as_str()),
                    Some(link.as_str()),
                    "{what}"
                );
                assert_eq!(entry.published, Some(want.published), "{what} {link}");
                let terms: Vec<&str> = entry.categories.iter().map(|c| c.term.as_str()).collect();
                match format {
                    Format::Rss => {
                        // RSS items have no updated date; feed-rs copies pubDate.
                        assert_eq!(terms, want.category_names(), "{what} {link}");
                    }
                    Format::Atom => {
                        assert_eq!(entry.updated, Some(want.updated_or_published()), "{what}");
                        assert_eq!(terms, want.categories, "{what} {link}");
                        let labels: Vec<&str> = entry
                            .categories
                            .iter()
                            .filter_map(|c| c.label.as_deref())
                            .collect();
                        assert_eq!(labels, want.category_names(), "{what} {link}");
                    }
                    Format::Json => {
                        assert_eq!(entry.updated, Some(want.updated_or_published()), "{what}");
                        let mut tags = want.category_names();
                        tags.extend(want.tags);
                        assert_eq!(terms, tags, "{what} {link}");
                    }
                }
                let body = entry
                    .content
                    .as_ref()
                    .and_then(|c| c.body.as_deref())
                    .unwrap_or_default();
                assert!(!body.trim().is_empty(), "{what} {link}: no content");
            }
        }
    }
}

#[test]
fn authors_and_summaries_come_from_each_generators_keys() {
    let site = site();
    write_fixtures(&site);
    build_and_write(&site, now());
    let feed = parse_file(&site.out_dir.join("atom.xml"));
    let by_id = |slug: &str| {
        feed.entries
            .iter()
            .find(|e| e.id == permalink(slug))
            .unwrap_or_else(|| panic!("{slug} missing"))
    };
    let names = |slug: &str| -> Vec<String> {
        by_id(slug).authors.iter().map(|a| a.name.clone()).collect()
    };
    assert_eq!(names("connection-pool-exhaustion"), ["Mara Lindqvist"]);
    assert_eq!(names("vacuum"), ["Ana Ruiz", "Ben Okafor"]);
    assert_eq!(names("gc-tail"), ["Chen Wei"]);
    let summary = |slug: &str| by_id(slug).summary.as_ref().map(|s| s.content.clone());
    assert_eq!(
        summary("vacuum").as_deref(),
        Some("The database stopped accepting writes.")
    );
    assert_eq!(
        summary("cache-stampede").as_deref(),
        Some("Every edge missed at once.")
    );
    // No summary key: the first paragraph.
    assert_eq!(
        summary("ci-token").as_deref(),
        Some("The token was in a log.")
    );
}

#[test]
fn drafts_and_future_case_studies_are_left_out_until_their_time() {
    let site = site();
    let fixtures = write_fixtures(&site);
    let (catalog, files) = build(&site, now());
    assert_eq!(catalog.drafts, 1);
    let all: Vec<String> = files
        .iter()
        .filter(|f| f.format == Format::Atom)
        .flat_map(|f| entry_ids(&feed_rs::parser::parse(&f.body[..]).unwrap()))
        .collect();
    assert!(!all.iter().any(|id| id.ends_with("/draft/")), "{all:?}");
    assert!(!all.iter().any(|id| id.ends_with("/future/")), "{all:?}");
    assert!(!all.iter().any(|id| id.ends_with("/_index/")), "{all:?}");

    let later = future_date() + chrono::Duration::minutes(1);
    let files = feeds::build_all(&site.settings(), &catalog, later);
    for f in &files {
        let feed = feed_rs::parser::parse(&f.body[..]).unwrap();
        // Archive page 1 of a scope (`archive/{all|category}/1.*`) holds the
        // same as its current feed here: fewer case studies than a page.
        let category = match f.path.strip_prefix("archive/") {
            Some(rest) => rest.split('/').next().filter(|s| *s != "all"),
            None => f.path.split_once('/').map(|(c, _)| c),
        };
        let want: Vec<String> = expected_in(&fixtures, category, later, 50)
            .iter()
            .map(|e| permalink(e.slug))
            .collect();
        assert_eq!(entry_ids(&feed), want, "{}", f.path);
    }
    let everything = files.iter().find(|f| f.path == "atom.xml").unwrap();
    let ids = entry_ids(&feed_rs::parser::parse(&everything.body[..]).unwrap());
    assert_eq!(ids.first(), Some(&permalink("future")), "newest first");
    assert!(!ids.iter().any(|id| id.ends_with("/draft/")));
}

#[test]
fn entry_ids_stay_the_same_when_a_title_changes() {
    let site = site();
    write_fixtures(&site);
    let before: Vec<(String, Vec<String>)> = build(&site, now())
        .1
        .iter()
        .map(|f| {
            let feed = feed_rs::parser::parse(&f.body[..]).unwrap();
            (f.path.clone(), entry_ids(&feed))
        })
        .collect();

    let path = site.path("2026/pool.md");
    let text = std::fs::read_to_string(&path).unwrap();
    let renamed = text.replace(
        "title: \"Connection Pool Exhaustion\"",
        "title: \"How a Retry Storm Exhausted Every Pool\"",
    );
    assert_ne!(text, renamed);
    std::fs::write(&path, renamed).unwrap();

    let (_, files) = build(&site, now());
    for ((path, ids), f) in before.iter().zip(&files) {
        assert_eq!(*path, f.path);
        let feed = feed_rs::parser::parse(&f.body[..]).unwrap();
        assert_eq!(&entry_ids(&feed), ids, "{path}");
        if ids.contains(&permalink("connection-pool-exhaustion")) {
            let entry = feed
                .entries
                .iter()
                .find(|e| e.id == permalink("connection-pool-exhaustion"))
                .unwrap();
            assert_eq!(
                entry.title.as_ref().unwrap().content,
                "How a Retry Storm Exhausted Every Pool",
                "{path}"
            );
        }
    }
}

#[test]
fn category_feeds_hold_exactly_their_category_and_respect_the_item_limit() {
    let site = prepare(options().feeds("items = 2"));
    let fixtures = write_fixtures(&site);
    build_and_write(&site, now());
    for (category, dir) in scope_dirs() {
        let want: Vec<String> = expected_in(&fixtures, category, now(), 2)
            .iter()
            .map(|e| permalink(e.slug))
            .collect();
        for format in Format::ALL {
            let path = site.out_dir.join(&dir).join(format.file_name());
            let feed = parse_file(&path);
            assert!(feed.entries.len() <= 2, "{}", path.display());
            assert_eq!(entry_ids(&feed), want, "{}", path.display());
            let dates: Vec<_> = feed.entries.iter().map(|e| e.published).collect();
            let mut sorted = dates.clone();
            sorted.sort_by(|a, b| b.cmp(a));
            assert_eq!(dates, sorted, "{}: newest first", path.display());
        }
    }
    // The limit cuts: these categories have more studies than 2 overall.
    let everything = parse_file(&site.out_dir.join("rss.xml"));
    assert_eq!(
        entry_ids(&everything),
        [
            permalink("connection-pool-exhaustion"),
            permalink("gc-tail")
        ]
    );
}

#[test]
fn json_feed_is_version_1_1_with_ids_and_html_content() {
    let site = site();
    write_fixtures(&site);
    build_and_write(&site, now());
    for (_, dir) in scope_dirs() {
        let path = site.out_dir.join(&dir).join("feed.json");
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(v["version"], "https://jsonfeed.org/version/1.1");
        assert!(
            v["title"].as_str().is_some_and(|t| !t.is_empty()),
            "{}",
            path.display()
        );
        assert_eq!(
            v["feed_url"],
            format!("{}feeds/{dir}feed.json", support::BASE_URL)
        );
        let items = v["items"].as_array().expect("items is an array");
        assert!(!items.is_empty(), "{}", path.display());
        for item in items {
            assert!(item["id"].as_str().is_some_and(|s| !s.is_empty()), "{item}");
            assert!(
                item["content_html"].as_str().is_some_and(|s| !s.is_empty()),
                "{item}"
            );
            for key in ["date_published", "date_modified"] {
                let d = item[key].as_str().unwrap_or_default();
                assert!(DateTime::parse_from_rfc3339(d).is_ok(), "{key}: {d:?}");
            }
        }
    }
}

#[test]
fn feedparser_reads_every_xml_feed_without_errors() {
    support::require_tool(
        "python3",
        &["-c", "import feedparser"],
        "python3 with the feedparser module is required: pip install feedparser",
    );
    let site = site();
    let fixtures = write_fixtures(&site);
    build_and_write(&site, now());
    const SCRIPT: &str = "import feedparser,sys
d=feedparser.parse(sys.argv[1])
print(int(d.bozo), len(d.entries), d.version, repr(d.get('bozo_exception', '')))";
    for (category, dir) in scope_dirs() {
        let want = expected_in(&fixtures, category, now(), 50).len();
        for name in ["rss.xml", "atom.xml"] {
            let path = site.out_dir.join(&dir).join(name);
            let out = Command::new("python3")
                .args(["-c", SCRIPT])
                .arg(&path)
                .output()
                .expect("run python3");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}: {stdout}{}",
                path.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            let mut parts = stdout.split_whitespace();
            let bozo = parts.next().unwrap_or_default();
            let count: usize = parts
                .next()
                .unwrap_or_default()
                .parse()
                .unwrap_or(usize::MAX);
            let version = parts.next().unwrap_or_default();
            assert_eq!(bozo, "0", "{}: {stdout}", path.display());
            assert_eq!(count, want, "{}: {stdout}", path.display());
            let want_version = if name == "rss.xml" { "rss20" } else { "atom10" };
            assert_eq!(version, want_version, "{}: {stdout}", path.display());
        }
    }
}

// ---------------------------------------------------------------------------
// What the W3C Feed Validation Service checks (it is not reachable from CI).

/// Every href/src in `html` is an absolute http(s) URL (or mailto:).
fn assert_absolute_urls(html: &str, what: &str) {
    for attr in ["href=\"", "src=\"", "href='", "src='"] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            assert!(
                rest.starts_with("http://")
                    || rest.starts_with("https://")
                    || rest.starts_with("mailto:"),
                "{what}: relative URL in content: {}",
                &rest[..rest.len().min(60)]
            );
        }
    }
}

/// No script element and no `on*=` event-handler attribute inside any tag.
fn assert_no_script(html: &str, what: &str) {
    let lower = html.to_ascii_lowercase();
    assert!(!lower.contains("<script"), "{what}: <script> in content");
    for tag in lower.split('<').skip(1) {
        let tag = tag.split('>').next().unwrap_or_default();
        for word in tag.split_whitespace().skip(1) {
            let name = word.split('=').next().unwrap_or_default();
            assert!(
                !(name.starts_with("on") && word.contains('=')),
                "{what}: event handler attribute {word:?}"
            );
        }
    }
}

fn assert_rfc822(date: &str, what: &str) {
    // RFC 822 as the validator wants it: "Sat, 14 Mar 2026 09:00:00 +0000".
    assert!(
        DateTime::parse_from_str(date, "%a, %d %b %Y %H:%M:%S %z").is_ok(),
        "{what}: {date:?} is not an RFC 822 date"
    );
}

fn check_rss(out_dir: &Path, rel: &str) {
    let path = &out_dir.join(rel);
    let what = path.display().to_string();
    let bytes = std::fs::read(path).unwrap();
    let text = String::from_utf8(bytes.clone()).expect("UTF-8");
    assert!(text.starts_with("<?xml"), "{what}: no XML declaration");
    assert!(
        text.contains("xmlns:atom=\"http://www.w3.org/2005/Atom\""),
        "{what}"
    );
    let channel = rss::Channel::read_from(&bytes[..]).unwrap();
    assert!(!channel.title().is_empty(), "{what}: channel title");
    assert!(
        channel.link().starts_with("https://"),
        "{what}: channel link"
    );
    assert!(!channel.description().is_empty(), "{what}: description");
    let self_link = channel
        .atom_ext()
        .and_then(|a| a.links().iter().find(|l| l.rel() == "self"))
        .unwrap_or_else(|| panic!("{what}: no atom:link rel=\"self\""));
    assert_eq!(
        self_link.href(),
        format!("{}feeds/{rel}", support::BASE_URL),
        "{what}: self link must be the feed's own URL"
    );
    assert_eq!(
        self_link.mime_type(),
        Some("application/rss+xml"),
        "{what}: self link type"
    );
    if let Some(d) = channel.last_build_date() {
        assert_rfc822(d, &what);
    }
    if let Some(d) = channel.pub_date() {
        assert_rfc822(d, &what);
    }
    assert!(!channel.items().is_empty(), "{what}");
    for item in channel.items() {
        let link = item.link().expect("item link");
        let guid = item
            .guid()
            .unwrap_or_else(|| panic!("{what}: item {link} has no guid"));
        assert!(
            guid.value().starts_with("https://") && guid.is_permalink(),
            "{what}: guid {:?}",
            guid.value()
        );
        assert_rfc822(item.pub_date().expect("pubDate"), &what);
        let html = item.content().expect("content:encoded");
        assert_absolute_urls(html, &what);
        assert_no_script(html, &what);
        // RSS <author> must be an e-mail address; names go to dc:creator.
        assert!(item.author().is_none(), "{what}: <author> is not an e-mail");
    }
}

fn check_atom(out_dir: &Path, rel: &str) {
    let path = &out_dir.join(rel);
    let what = path.display().to_string();
    let bytes = std::fs::read(path).unwrap();
    let feed = atom_syndication::Feed::read_from(&bytes[..]).unwrap();
    assert!(feed.id().starts_with("https://"), "{what}: feed id");
    assert!(!feed.title().as_str().is_empty(), "{what}: feed title");
    let text = String::from_utf8(bytes).unwrap();
    assert!(text.contains("<updated>"), "{what}: feed has no <updated>");
    let self_link = feed
        .links()
        .iter()
        .find(|l| l.rel() == "self")
        .unwrap_or_else(|| panic!("{what}: no self link"));
    assert_eq!(
        self_link.href(),
        format!("{}feeds/{rel}", support::BASE_URL),
        "{what}: self link must be the feed's own URL"
    );
    assert_eq!(self_link.mime_type(), Some("application/atom+xml"));
    assert!(
        feed.authors().iter().any(|a| !a.name().is_empty()),
        "{what}: feed-level author (else every entry needs one)"
    );
    assert!(!feed.entries().is_empty(), "{what}");
    for entry in feed.entries() {
        assert!(entry.id().starts_with("https://"), "{what}: entry id");
        assert!(
            entry
                .links()
                .iter()
                .any(|l| l.rel() == "alternate" && l.href().starts_with("https://")),
            "{what}: entry {} has no alternate link",
            entry.id()
        );
        assert!(*entry.updated() >= entry.published().copied().unwrap_or(*entry.updated()));
        let content = entry.content().expect("content");
        assert_eq!(content.content_type(), Some("html"), "{what}");
        let html = content.value().expect("content value");
        assert_absolute_urls(html, &what);
        assert_no_script(html, &what);
    }
    // Every entry's <updated> appears once per entry plus the feed's own.
    assert_eq!(
        text.matches("<updated>").count(),
        feed.entries().len() + 1,
        "{what}"
    );
}

#[test]
fn xml_feeds_pass_the_checks_the_w3c_validator_makes() {
    support::require_tool(
        "xmllint",
        &["--version"],
        "xmllint is required: apt-get install libxml2-utils",
    );
    let site = site();
    write_fixtures(&site);
    build_and_write(&site, now());
    for rel in xml_files() {
        let path = site.out_dir.join(&rel);
        let out = Command::new("xmllint")
            .arg("--noout")
            .arg(&path)
            .output()
            .expect("run xmllint");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "xmllint {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        if rel.ends_with("rss.xml") {
            check_rss(&site.out_dir, &rel);
        } else {
            check_atom(&site.out_dir, &rel);
        }
    }
}

#[test]
fn markdown_links_become_absolute_and_scripts_are_removed() {
    let site = site();
    write_fixtures(&site);
    build_and_write(&site, now());
    let feed = parse_file(&site.out_dir.join("atom.xml"));
    let html_of = |slug: &str| {
        feed.entries
            .iter()
            .find(|e| e.id == permalink(slug))
            .and_then(|e| e.content.as_ref())
            .and_then(|c| c.body.clone())
            .unwrap_or_else(|| panic!("{slug}: no content"))
    };
    let html = html_of("connection-pool-exhaustion");
    let page = permalink("connection-pool-exhaustion");
    assert!(
        html.contains(&format!("href=\"{}\"", permalink("vacuum"))),
        "{html}"
    );
    assert!(
        html.contains(&format!("src=\"{page}images/queue.svg\"")),
        "{html}"
    );
    assert!(
        html.contains(&format!("href=\"{page}notes.html\"")),
        "{html}"
    );
    assert!(html.contains(&format!("src=\"{page}x.png\"")), "{html}");
    assert!(
        !html.contains("<script") && !html.contains("alert('x')"),
        "{html}"
    );
    assert!(!html.contains("onerror"), "{html}");
    assert!(html.contains("<li>one</li>"), "{html}");
    assert!(html.contains("<code"), "{html}");
    // A Hugo bundle's images resolve inside the bundle's page.
    let html = html_of("gc-tail");
    assert!(
        html.contains(&format!("src=\"{}images/p99.svg\"", permalink("gc-tail"))),
        "{html}"
    );
    for (_, dir) in scope_dirs() {
        for format in Format::ALL {
            let text =
                std::fs::read_to_string(site.out_dir.join(&dir).join(format.file_name())).unwrap();
            assert!(
                !text.to_ascii_lowercase().contains("<script"),
                "{dir}{format:?}"
            );
            assert!(!text.contains("&lt;script"), "{dir}{format:?}");
        }
    }
}

#[cfg(unix)]
#[test]
fn files_are_replaced_atomically_and_unchanged_files_are_not_rewritten() {
    use std::os::unix::fs::MetadataExt;
    let site = site();
    write_fixtures(&site);
    let (catalog, files) = build(&site, now());
    let first = output::write_all(&site.out_dir, &files).unwrap();
    assert_eq!(first.written, files.len());
    assert_eq!(first.unchanged, 0);
    let stat = |rel: &str| std::fs::metadata(site.out_dir.join(rel)).unwrap();
    let before: Vec<(String, std::time::SystemTime, u64)> = files
        .iter()
        .map(|f| {
            let m = stat(&f.path);
            (f.path.clone(), m.modified().unwrap(), m.ino())
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));

    // Same catalog, built again: byte-identical, nothing written.
    let again = feeds::build_all(&site.settings(), &catalog, now());
    let second = output::write_all(&site.out_dir, &again).unwrap();
    assert_eq!(second.written, 0);
    assert_eq!(second.unchanged, files.len());
    for (path, mtime, ino) in &before {
        let m = stat(path);
        assert_eq!(m.modified().unwrap(), *mtime, "{path} was rewritten");
        assert_eq!(m.ino(), *ino, "{path} was replaced");
    }

    // One security study changes: its feeds are replaced by a rename (a new
    // inode, never a truncate-and-write), the others are left alone.
    let p = site.path("ci-token.md");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, text.replace("in a log", "in a build log")).unwrap();
    let (_, third_files) = build(&site, now());
    let third = output::write_all(&site.out_dir, &third_files).unwrap();
    assert_eq!(
        third.written, 10,
        "everything + security, 3 formats each, and the archive page of each that holds it (Atom and JSON)"
    );
    for (path, mtime, ino) in &before {
        let m = stat(path);
        let touched = path.starts_with("security/")
            || !path.contains('/')
            || path.starts_with("archive/all/")
            || path.starts_with("archive/security/");
        if touched {
            assert_ne!(m.ino(), *ino, "{path} was not replaced by a rename");
        } else {
            assert_eq!(m.modified().unwrap(), *mtime, "{path} was rewritten");
        }
    }
    // No temp files are left behind.
    for entry in walk(&site.out_dir) {
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!name.starts_with('.'), "leftover {}", entry.display());
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Broken content.

/// (file, expected line, words the message must contain).
fn write_broken_folder(site: &TestSite) -> Vec<(PathBuf, usize, &'static str)> {
    site.write(
        "good-one.md",
        &yaml_study(
            "title: \"Good One\"\ndate: 2025-01-01\ncategories: [databases]",
            "Fine.\n",
        ),
    );
    site.write(
        "good-two.md",
        &toml_study(
            "title = \"Good Two\"\ndate = 2025-02-01T10:00:00Z\ncategories = [\"security\"]",
            "Also fine.\n",
        ),
    );
    let mut broken = vec![
        (
            site.write(
                "zz-duplicate.md",
                &yaml_study("title: \"Copy\"\ndate: 2025-01-05\nslug: good-one", "x\n"),
            ),
            1,
            "slug \"good-one\" is already used by",
        ),
        (
            site.write("missing-title.md", &yaml_study("date: 2025-01-01", "x\n")),
            2,
            "'title' is missing",
        ),
        (
            site.write("missing-date.md", &yaml_study("title: \"No date\"", "x\n")),
            2,
            "'date' is missing",
        ),
        (
            site.write(
                "bad-date.md",
                &yaml_study("title: \"Bad date\"\ndate: next tuesday", "x\n"),
            ),
            3,
            "'date' is not a date: \"next tuesday\"",
        ),
        (
            site.write(
                "broken-yaml.md",
                &yaml_study("title: \"ok\"\ndate: 2025-01-01\ntags: [unclosed", "x\n"),
            ),
            0, // somewhere at or after the opening bracket's line
            "not valid YAML",
        ),
        (
            site.write(
                "broken-toml.md",
                &toml_study("title = \"ok\"\ndate = 2025-01-01\ntags = [\"a\",", "x\n"),
            ),
            0,
            "not valid TOML",
        ),
        (
            site.write(
                "unclosed.md",
                "---\ntitle: \"x\"\ndate: 2025-01-01\n\nbody\n",
            ),
            1,
            "never closed",
        ),
        (
            site.write_bytes(
                "bad-utf8.md",
                b"---\ntitle: \"x\"\ndate: 2025-01-01 \xff\xfe\n---\nbody\n",
            ),
            3,
            "not valid UTF-8",
        ),
        (site.write("empty.md", ""), 1, "the file is empty"),
        (
            site.write(
                "too-big.md",
                &yaml_study("title: \"Big\"\ndate: 2025-01-01", &"word ".repeat(400)),
            ),
            1,
            "over the limit of 1 KiB",
        ),
        (
            site.write(
                "unknown-category.md",
                &yaml_study(
                    "title: \"Cooking\"\ndate: 2025-01-01\ncategories: [databases, cooking]",
                    "x\n",
                ),
            ),
            4,
            "unknown category \"cooking\"",
        ),
    ];
    broken.sort_by(|a, b| a.0.cmp(&b.0));
    broken
}

fn broken_site() -> TestSite {
    prepare(options().content("max_file_kb = 1"))
}

#[test]
fn every_broken_file_is_named_with_its_line_and_the_valid_ones_still_publish() {
    let site = broken_site();
    let broken = write_broken_folder(&site);
    let catalog = DirectoryStore::new(&site.settings()).scan(None);

    let named: BTreeSet<&Path> = catalog.problems.iter().map(|p| p.path.as_path()).collect();
    let want: BTreeSet<&Path> = broken.iter().map(|(p, _, _)| p.as_path()).collect();
    assert_eq!(named, want, "problems: {:#?}", catalog.problems);
    assert_eq!(
        catalog.problems.len(),
        broken.len(),
        "{:#?}",
        catalog.problems
    );

    for (path, line, words) in &broken {
        let p = catalog.problems.iter().find(|p| &p.path == path).unwrap();
        let shown = p.to_string();
        let prefix = format!("{}:{}: ", path.display(), p.line);
        assert!(shown.starts_with(&prefix), "{shown:?} lacks {prefix:?}");
        assert!(p.line >= 1, "{shown}");
        if *line > 0 {
            assert_eq!(p.line, *line, "{shown}");
        } else {
            assert!(p.line >= 2 && p.line <= 5, "{shown}");
        }
        assert!(shown.contains(words), "{shown:?} should mention {words:?}");
    }

    let slugs: Vec<&str> = catalog.all().iter().map(|s| s.slug.as_str()).collect();
    assert_eq!(slugs, ["good-two", "good-one"]);
    let files = feeds::build_all(&site.settings(), &catalog, now());
    let everything = files.iter().find(|f| f.path == "atom.xml").unwrap();
    let feed = feed_rs::parser::parse(&everything.body[..]).unwrap();
    assert_eq!(
        entry_ids(&feed),
        [permalink("good-two"), permalink("good-one")]
    );
    let good_one = files
        .iter()
        .find(|f| f.path == "databases/rss.xml")
        .unwrap();
    let feed = feed_rs::parser::parse(&good_one.body[..]).unwrap();
    assert_eq!(entry_ids(&feed), [permalink("good-one")]);
    assert_eq!(
        feed.entries[0].title.as_ref().unwrap().content,
        "Good One",
        "the duplicate's title must not replace the first file's"
    );
}

// ---------------------------------------------------------------------------
// The command line.

fn casewire(site: &TestSite, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(&site.config_path)
        .args(args)
        .env_remove("CASEWIRE_CONFIG")
        .env("RUST_LOG", "error")
        .output()
        .expect("run casewire")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn cli_check_lists_every_broken_file_and_exits_1() {
    let site = broken_site();
    let broken = write_broken_folder(&site);
    let out = casewire(&site, &["check"]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), broken.len(), "{stdout}");
    for (path, _, words) in &broken {
        let prefix = format!("{}:", path.display());
        let line = lines
            .iter()
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("{} is not listed:\n{stdout}", path.display()));
        let rest = &line[prefix.len()..];
        let (num, message) = rest.split_once(": ").expect("path:line: message");
        assert!(num.parse::<usize>().is_ok_and(|n| n >= 1), "{line}");
        assert!(message.contains(words), "{line}");
    }
}

#[test]
fn cli_check_on_clean_content_exits_0() {
    let site = site();
    write_fixtures(&site);
    let out = casewire(&site, &["check"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(
        text(&out.stderr).contains("5 case studies published"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn cli_feeds_build_writes_every_scope() {
    let site = site();
    write_fixtures(&site);
    let out_dir = site.root.join("elsewhere");
    let out = casewire(
        &site,
        &["feeds", "build", "--out", out_dir.to_str().unwrap()],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    for (_, dir) in scope_dirs() {
        for format in Format::ALL {
            let path = out_dir.join(&dir).join(format.file_name());
            let feed = parse_file(&path);
            assert!(!feed.entries.is_empty(), "{}", path.display());
        }
    }
    assert!(!site.out_dir.exists(), "--out must replace feeds.out_dir");
}

#[test]
fn cli_bad_config_value_exits_2_and_names_the_key() {
    let site = prepare(options().feeds("items = 0"));
    for args in [&["check"][..], &["feeds", "build"][..]] {
        let out = casewire(&site, args);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains("[feeds] items"), "{stderr}");
        assert!(
            stderr.contains(&site.config_path.display().to_string()),
            "{stderr}"
        );
    }
    // An unknown key is named with its line.
    let text_ = std::fs::read_to_string(&site.config_path)
        .unwrap()
        .replace("items = 0", "itmes = 5");
    std::fs::write(&site.config_path, text_).unwrap();
    let out = casewire(&site, &["check"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("itmes"), "{}", text(&out.stderr));
}

#[test]
fn cli_help_works_for_every_subcommand() {
    let commands: &[&[&str]] = &[
        &[],
        &["run"],
        &["check"],
        &["feeds"],
        &["feeds", "build"],
        &["schedule"],
        &["digest"],
        &["digest", "preview"],
        &["digest", "send"],
        &["subscribers"],
        &["subscribers", "add"],
        &["subscribers", "remove"],
        &["subscribers", "list"],
        &["subscribers", "import"],
        &["subscribers", "export"],
        &["status"],
        &["migrate"],
    ];
    for args in commands {
        let out = Command::new(env!("CARGO_BIN_EXE_casewire"))
            .args(*args)
            .arg("--help")
            .output()
            .expect("run casewire");
        let stdout = text(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(stdout.contains("Usage: casewire"), "{args:?}: {stdout}");
    }
}

#[test]
fn problem_of_a_broken_file_survives_an_update_of_another_file() {
    let site = site();
    write_fixtures(&site);
    let store = DirectoryStore::new(&site.settings());
    let catalog = store.scan(None);
    assert!(catalog.problems.is_empty());

    // ci-token.md breaks: its last good version stays, and the problem names it.
    let broken = site.write(
        "ci-token.md",
        &yaml_study("title: \"A Leaked CI Token\"\ndate: [oops", "x\n"),
    );
    let catalog = store.update(&catalog, std::slice::from_ref(&broken));
    assert!(catalog.get("ci-token").is_some(), "last good version kept");
    assert_eq!(catalog.problems.len(), 1, "{:?}", catalog.problems);
    assert_eq!(catalog.problems[0].path, broken);

    // Another file changes: the broken one is still broken and still reported.
    let other = site.path("zola/vacuum.md");
    let text = std::fs::read_to_string(&other).unwrap();
    std::fs::write(&other, text.replace("fell behind", "fell far behind")).unwrap();
    let catalog = store.update(&catalog, std::slice::from_ref(&other));
    assert!(catalog.get("ci-token").is_some(), "last good version kept");
    assert_eq!(
        catalog.problems.iter().map(|p| &p.path).collect::<Vec<_>>(),
        [&broken],
        "the broken file's problem must not vanish when another file changes"
    );
    let files = feeds::build_all(&site.settings(), &catalog, now());
    let security = files
        .iter()
        .find(|f| f.path == "security/atom.xml")
        .unwrap();
    let feed = feed_rs::parser::parse(&security.body[..]).unwrap();
    assert_eq!(entry_ids(&feed), [permalink("ci-token")]);
}

#[test]
fn update_after_one_edit_equals_a_full_scan() {
    let site = site();
    write_fixtures(&site);
    let store = DirectoryStore::new(&site.settings());
    let mut catalog = store.scan(None);
    let edits: [(&str, &str, &str); 5] = [
        // A title change, a category change, a slug change, a new file.
        (
            "2026/pool.md",
            "Connection Pool Exhaustion",
            "Pools Ran Dry",
        ),
        (
            "zola/vacuum.md",
            "categories = [\"Databases\"]",
            "categories = [\"Performance\"]",
        ),
        (
            "gc-tail/index.md",
            "tags: [jvm]",
            "tags: [jvm]\nslug: gc-pauses",
        ),
        (
            "new/added.md",
            "",
            "title: \"Added\"\ndate: 2026-04-01\ncategories: [security]",
        ),
        // A new file taking an existing slug, and winning it by path order.
        (
            "aaa/dup.md",
            "",
            "title: \"Dup\"\ndate: 2026-04-02\nslug: vacuum",
        ),
    ];
    for (rel, from, to) in edits {
        let path = if from.is_empty() {
            site.write(rel, &yaml_study(to, "New.\n"))
        } else {
            let p = site.path(rel);
            let text = std::fs::read_to_string(&p).unwrap();
            assert!(text.contains(from), "{rel}");
            std::fs::write(&p, text.replace(from, to)).unwrap();
            p
        };
        let updated = store.update(&catalog, std::slice::from_ref(&path));
        let full = store.scan(None);
        let view = |c: &Catalog| -> Vec<(String, String, Vec<String>, String)> {
            c.all()
                .iter()
                .map(|s| {
                    (
                        s.slug.to_string(),
                        s.title.clone(),
                        s.categories.iter().map(|c| c.to_string()).collect(),
                        s.hash.clone(),
                    )
                })
                .collect()
        };
        assert_eq!(view(&updated), view(&full), "after editing {rel}");
        let problems =
            |c: &Catalog| -> Vec<String> { c.problems.iter().map(|p| p.to_string()).collect() };
        assert_eq!(problems(&updated), problems(&full), "{rel}");
        let scopes = feeds::affected_scopes(&site.settings(), &catalog, &updated, now(), now());
        assert!(scopes.contains(&feeds::Scope::All), "{rel}: {scopes:?}");
        // Every feed outside the affected scopes is byte-identical; every
        // affected category feed really changed.
        let old_files = feeds::build_all(&site.settings(), &catalog, now());
        let new_files = feeds::build_all(&site.settings(), &updated, now());
        for (o, n) in old_files.iter().zip(&new_files) {
            assert_eq!(o.path, n.path);
            if !scopes.contains(&n.scope) {
                assert_eq!(
                    o.body, n.body,
                    "{rel}: {} changed but is not affected",
                    n.path
                );
            } else if n.scope != feeds::Scope::All {
                assert_ne!(
                    o.body, n.body,
                    "{rel}: {} is affected but unchanged",
                    n.path
                );
            }
        }
        catalog = updated;
    }
}

#[test]
fn update_with_a_path_named_twice_reads_it_once() {
    let site = site();
    write_fixtures(&site);
    let store = DirectoryStore::new(&site.settings());
    let catalog = store.scan(None);
    let path = site.path("ci-token.md");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, text.replace("in a log", "in a build log")).unwrap();
    let updated = store.update(&catalog, &[path.clone(), path]);
    assert!(updated.problems.is_empty(), "{:?}", updated.problems);
    assert_eq!(updated.len(), catalog.len());
}
