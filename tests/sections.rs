//! Case studies with their structure: sections recognised from headings
//! reach the JSON Feed `_casewire` extension and the digest (a one-line
//! root cause under each title), Atom and RSS keep their content, and
//! `casewire check` warns, without failing, about a missing expected section.

mod support;

use std::process::Command;

use casewire::config::Settings;
use casewire::content::DirectoryStore;
use casewire::editions::render::{render, DigestInput};
use casewire::feeds;
use support::{prepare, utc, yaml_study, AppOptions, TestSite};

const STRUCTURED: &str = "## Summary\n\nThe pool ran dry during the sale.\n\n## Root cause\n\nEvery request held a connection while it waited on the payment service. The pool had ten.\n\n```text\n# a comment, not a heading\n```\n\n## Impact\n\nCheckout failed for 40 minutes.\n\n## How experienced teams handle it\n\nThey bound the wait and shed load.\n\n## Why it is missed\n\nLoad tests never hit the slow dependency.\n";

/// The sites of these tests: no database engine choice, no editions.
fn options() -> AppOptions {
    AppOptions::sqlite().editions("")
}

fn site_with_two_studies() -> TestSite {
    // Expect the five sections the seeds are written in.
    let site = prepare(options().content(
        "expected_sections = [\"summary\", \"root_cause\", \"impact\", \"how_to_handle\", \"why_teams_miss\"]",
    ));
    site.write(
        "pool.md",
        &yaml_study("title: Pool exhaustion\ndate: 2026-03-14T09:00:00Z\nslug: pool\ncategories: [databases]", STRUCTURED),
    );
    site.write(
        "loose.md",
        &yaml_study(
            "title: Loose notes\ndate: 2026-03-15T09:00:00Z\nslug: loose\ncategories: [databases]",
            "## Summary\n\nJust notes.\n\n## Impact\n\nNone.\n",
        ),
    );
    site
}

#[test]
fn json_feed_carries_sections_and_atom_rss_parse_unchanged() {
    let site = site_with_two_studies();
    let catalog = DirectoryStore::new(&site.settings()).scan(None);
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
    let files = feeds::build_all(&site.settings(), &catalog, utc(2026, 6, 1, 0, 0));
    let json = files
        .iter()
        .find(|f| f.path == "feed.json")
        .expect("feed.json");
    let v: serde_json::Value = serde_json::from_slice(&json.body).unwrap();
    let pool = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["_casewire"]["slug"] == "pool")
        .expect("pool item");
    let sections = &pool["_casewire"]["sections"];
    assert_eq!(sections["root_cause"]["heading"], "Root cause");
    assert!(
        sections["root_cause"]["text"]
            .as_str()
            .unwrap()
            .starts_with("Every request held a connection"),
        "{sections}"
    );
    for key in ["summary", "impact", "how_to_handle", "why_teams_miss"] {
        assert!(
            sections[key]["text"].is_string(),
            "{key} missing: {sections}"
        );
    }
    // An independent parser still reads it.
    feed_rs::parser::parse(&json.body[..]).expect("feed-rs reads feed.json");
    // Atom and RSS carry no extension: their content is the case study's HTML.
    for name in ["atom.xml", "rss.xml"] {
        let f = files.iter().find(|f| f.path == name).unwrap();
        let text = std::str::from_utf8(&f.body).unwrap();
        assert!(
            !text.contains("_casewire") && !text.contains("root_cause"),
            "{name}"
        );
        let parsed = feed_rs::parser::parse(&f.body[..]).expect(name);
        assert_eq!(parsed.entries.len(), 2);
    }
}

#[test]
fn digest_shows_a_one_line_root_cause_under_each_title() {
    let site = site_with_two_studies();
    let text = site.config_for(&site.options().editions(
        "[[editions]]\nslug = \"weekly\"\nname = \"Weekly\"\nschedule = \"0 8 * * MON\"\n",
    ));
    let settings = Settings::from_toml(&site.config_path, &text, std::iter::empty()).unwrap();
    let catalog = DirectoryStore::new(&settings).scan(None);
    let studies: Vec<_> = ["pool", "loose"]
        .iter()
        .map(|s| catalog.get(s).unwrap().clone())
        .collect();
    let env = casewire::templates::environment(&settings);
    let digest = render(
        &env,
        DigestInput {
            settings: &settings,
            edition: &settings.editions[0],
            studies,
            follows: &[],
            name: "",
            archive_url: None,
        },
    )
    .unwrap();
    let line =
        "Root cause: Every request held a connection while it waited on the payment service.";
    let at = digest
        .text
        .find(line)
        .unwrap_or_else(|| panic!("{}", digest.text));
    let title = digest.text.find("* Pool exhaustion").unwrap();
    assert!(
        title < at,
        "the root cause follows its title:\n{}",
        digest.text
    );
    assert!(
        !digest.text.contains("The pool had ten"),
        "one sentence only"
    );
    assert_eq!(
        digest.text.matches("Root cause:").count(),
        1,
        "none for a study without one"
    );
    assert!(
        digest.html.contains("<strong>Root cause:</strong> Every request held a connection while it waited on the payment service."),
        "{}",
        digest.html
    );
}

#[test]
fn check_warns_about_missing_expected_sections_and_still_passes() {
    let mut site = site_with_two_studies();
    let out = Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(&site.config_path)
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let loose = site.path("loose.md");
    // The body starts on line 8 (front matter lines 1-6, a blank line).
    let want = format!(
        "{}:8: warning: no root_cause, how_to_handle, why_teams_miss section",
        loose.display()
    );
    assert!(stdout.contains(&want), "{want:?} not in:\n{stdout}");
    assert!(
        !stdout.contains("pool.md"),
        "the structured study is fine:\n{stdout}"
    );

    // A configured list replaces the defaults; only `expected` ones warn.
    site.rewrite(options().content(
        "sections = [{ key = \"lesson\", headings = [\"What we learned\"] }, { key = \"impact\", headings = [\"Impact\"] }]\nexpected_sections = [\"lesson\"]",
    ));
    let out = Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(&site.config_path)
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert_eq!(
        stdout.matches("warning: no lesson section").count(),
        2,
        "{stdout}"
    );
    assert!(!stdout.contains("root_cause"), "{stdout}");
}

#[test]
fn shipped_seeds_have_every_expected_section() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    // The shipped configuration expects the sections the seeds are written in.
    let settings = Settings::load(&root.join("config/casewire.toml")).unwrap();
    assert!(
        settings
            .content
            .sections
            .iter()
            .filter(|s| s.expected)
            .count()
            >= 5
    );
    let mut settings = settings;
    settings.content.dir = root.join("content");
    let catalog = DirectoryStore::new(&settings).scan(None);
    assert!(catalog.len() >= 5);
    let missing: Vec<String> = catalog
        .warnings()
        .iter()
        .map(|w| w.to_string())
        .filter(|w| w.contains("section"))
        .collect();
    assert!(missing.is_empty(), "{missing:#?}");
    for s in catalog.all() {
        assert!(s.section(&settings, "root_cause").is_some(), "{}", s.slug);
    }
}

/// Sections are most of a file's text, so the catalog does not hold them
/// from the scan on: they are read from the file on first use and dropped
/// with the HTML after a build (`forget_html`), to be read again on next use.
#[test]
fn sections_are_read_on_use_and_not_held_after_forgetting() {
    let site = site_with_two_studies();
    let settings = site.settings();
    let catalog = DirectoryStore::new(&settings).scan(None);
    let pool = catalog
        .all()
        .iter()
        .find(|s| s.slug.as_str() == "pool")
        .expect("pool")
        .clone();
    let root_cause = |s: &casewire::content::CaseStudy| {
        s.section(&settings, "root_cause")
            .map(|r| r.text)
            .unwrap_or_default()
    };
    // Edited after the scan: what the first use reads is the file as it is then.
    let edited = STRUCTURED.replace("Every request held", "Each request kept");
    site.write(
        "pool.md",
        &yaml_study("title: Pool exhaustion\ndate: 2026-03-14T09:00:00Z\nslug: pool\ncategories: [databases]", &edited),
    );
    assert!(
        root_cause(&pool).starts_with("Each request kept"),
        "{}",
        root_cause(&pool)
    );
    // Kept once read ...
    site.write(
        "pool.md",
        &yaml_study("title: Pool exhaustion\ndate: 2026-03-14T09:00:00Z\nslug: pool\ncategories: [databases]", STRUCTURED),
    );
    assert!(root_cause(&pool).starts_with("Each request kept"));
    assert_eq!(pool.sections(&settings).len(), 5);
    // ... until forgotten.
    pool.forget_html();
    assert!(root_cause(&pool).starts_with("Every request held"));
    // A file that is gone has none (its last good metadata stays).
    pool.forget_html();
    std::fs::remove_file(settings.content.dir.join("pool.md")).unwrap();
    assert!(pool.sections(&settings).is_empty());
    assert_eq!(pool.title, "Pool exhaustion");
}
