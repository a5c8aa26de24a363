//! Hostile and careless content: characters XML forbids, pathological front
//! matter, symlinks. Every feed written must stay well-formed (checked by
//! roxmltree, a conforming XML parser, by xmllint and by feed-rs), and
//! bad input is reported as `path:line:` and never crashes or stalls.

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use casewire::content::{CaseStudy, Catalog, DirectoryStore, Origin, Parsed};
use casewire::domain::Slug;
use casewire::feeds::{self, FeedFile, Format};
use chrono::{DateTime, Utc};
use proptest::prelude::*;
use support::{prepare, require_tool, utc, yaml_study, AppOptions, TestSite};

/// The sites of these tests: no database engine choice, no editions.
fn site() -> TestSite {
    prepare(AppOptions::sqlite().editions(""))
}

fn now() -> DateTime<Utc> {
    utc(2026, 6, 1, 0, 0)
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_casewire"))
}

/// Whether `c` is a character XML 1.0 allows (the `Char` production).
fn xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Parses every feed back: XML ones with roxmltree (which rejects every
/// character XML forbids) and feed-rs, JSON with serde_json and feed-rs.
fn assert_well_formed(files: &[FeedFile]) {
    for f in files {
        let text =
            std::str::from_utf8(&f.body).unwrap_or_else(|e| panic!("{}: not UTF-8: {e}", f.path));
        assert!(
            text.chars().all(xml_char),
            "{}: holds a character XML forbids:\n{text:?}",
            f.path
        );
        match f.format {
            Format::Rss | Format::Atom => {
                if let Err(e) = roxmltree::Document::parse(text) {
                    panic!("{}: not well-formed XML: {e}\n{text}", f.path);
                }
            }
            Format::Json => {
                let v: serde_json::Value = serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("{}: not JSON: {e}\n{text}", f.path));
                assert!(v["items"].is_array(), "{}", f.path);
            }
        }
        if let Err(e) = feed_rs::parser::parse(&f.body[..]) {
            panic!("{}: feed-rs cannot read it: {e}\n{text}", f.path);
        }
    }
}

/// The checker can fail: a forbidden character is rejected by roxmltree.
#[test]
fn the_xml_checker_rejects_forbidden_characters() {
    assert!(roxmltree::Document::parse("<a>\u{1}</a>").is_err());
    assert!(roxmltree::Document::parse("<a>&#1;</a>").is_err());
    assert!(roxmltree::Document::parse("<a>\u{ffff}</a>").is_err());
    assert!(roxmltree::Document::parse("<a>\u{85}\t\u{fffd}</a>").is_ok());
}

fn xmllint(path: &Path) {
    let out = Command::new("xmllint")
        .arg("--noout")
        .arg(path)
        .output()
        .expect("xmllint runs (apt-get install libxml2-utils)");
    assert!(
        out.status.success(),
        "{}: xmllint: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 13.1: one U+0001 in a title (or a raw 0x01/0x0B in the body, or
/// `&#1;` in the Markdown) made rss.xml, atom.xml and the category feeds
/// ill-formed, and `check` said nothing.
#[test]
fn control_character_in_a_case_study_no_longer_breaks_rss_and_atom() {
    require_tool("xmllint", &["--version"], "apt-get install libxml2-utils");
    let site = site();
    let mut raw = yaml_study(
        "title: \"Pool\\x01 exhaustion\\e\"\ndate: 2026-03-14T09:00:00Z\nslug: pool\nsummary: \"Ran \\x0b dry\"\nauthor: \"Mara\\x01\"\ncategories: [databases]",
        "Body with a raw \u{1} and \u{b} byte.\n\nA reference &#1; and &#x1b; too.",
    );
    raw = raw.replace("slug: pool", "slug: pool\ntags: [\"a\u{1}b\"]");
    let path = site.write("pool.md", &raw);
    site.write(
        "clean.md",
        &yaml_study(
            "title: Clean\ndate: 2026-03-15\ncategories: [databases]",
            "Fine.",
        ),
    );

    let catalog = DirectoryStore::new(&site.settings()).scan(None);
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
    let pool = catalog.get("pool").expect("the file is published, cleaned");
    assert_eq!(pool.title, "Pool exhaustion");
    assert_eq!(pool.summary, "Ran  dry");
    assert_eq!(pool.authors, vec!["Mara"]);
    assert_eq!(pool.tags, vec!["ab"]);
    assert!(pool.html().chars().all(xml_char), "{}", pool.html());
    assert!(
        pool.html().contains("Body with a raw  and  byte."),
        "{}",
        pool.html()
    );
    let warnings: Vec<String> = catalog.warnings().iter().map(|w| w.to_string()).collect();
    let at = |line: usize| format!("{}:{line}: warning: dropped", path.display());
    // Escapes on lines 2, 6 and 7, a raw character in the tag on line 5
    // and in the body on line 11.
    for want in [at(2), at(5), at(6), at(7), at(11)] {
        assert!(
            warnings.iter().any(|w| w.starts_with(&want)),
            "no warning {want:?} in {warnings:#?}"
        );
    }

    let files = feeds::build_all(&site.settings(), &catalog, now());
    assert_well_formed(&files);
    feeds::output::write_all(&site.out_dir, &files).unwrap();
    for f in [
        "rss.xml",
        "atom.xml",
        "databases/rss.xml",
        "databases/atom.xml",
    ] {
        xmllint(&site.out_dir.join(f));
    }

    // `check` names the file and line, and a warning is not an error.
    let out = bin()
        .args(["--config"])
        .arg(&site.config_path)
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&at(2)), "{stdout}");
    assert!(stdout.contains("U+0001"), "{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}");
}

/// Text in every shape that breaks XML: each C0 and C1 control, U+FFFE,
/// U+FFFF, markup characters, and text decoded lossily from UTF-16 with lone
/// surrogates.
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => (0u32..0x20).prop_map(|c| char::from_u32(c).unwrap()),
        2 => (0x7Fu32..0xA0).prop_map(|c| char::from_u32(c).unwrap()),
        1 => Just('\u{FFFE}'),
        1 => Just('\u{FFFF}'),
        2 => prop::sample::select(vec!['<', '>', '&', '"', '\'', ']', '\u{FFFD}', '\u{2028}', '\u{feff}']),
        4 => any::<char>(),
        4 => prop::char::range('a', 'z'),
    ]
}

fn hostile_text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::collection::vec(hostile_char(), 0..40).prop_map(|v| v.into_iter().collect()),
        1 => prop::collection::vec(
            prop_oneof![any::<u16>(), 0xD800u16..0xE000, Just(0xFFFEu16), Just(1u16)],
            0..30
        )
        .prop_map(|units| String::from_utf16_lossy(&units)),
        1 => Just("]]>&#1;&#xD800;<![CDATA[".to_owned()),
    ]
}

fn feeds_of(settings: &casewire::config::Settings, studies: Vec<Arc<CaseStudy>>) -> Vec<FeedFile> {
    let catalog = Catalog::new(studies, Vec::new(), 0);
    feeds::build_all(settings, &catalog, now())
}

/// XML normalizes line ends when it parses; compare what a reader sees.
fn as_read(s: &str) -> String {
    s.replace("\r\n", "\n").replace('\r', "\n")
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random Unicode in every text field reaches all three writers, both
    /// through the model (an upstream-like entry) and around it (the site's
    /// own settings): every feed parses back, and the title reads as the
    /// model holds it.
    #[test]
    fn random_unicode_through_every_writer_stays_well_formed(
        title in hostile_text(),
        summary in hostile_text(),
        author in hostile_text(),
        html in hostile_text(),
        site_title in hostile_text(),
        site_description in hostile_text(),
    ) {
        let site = site();
        let mut settings = site.settings().clone();
        settings.site.title = site_title;
        settings.site.description = site_description;
        settings.site.author = author.clone();
        settings
            .categories
            .iter_mut()
            .find(|c| c.slug.as_str() == "databases")
            .expect("the databases category")
            .name = format!("DB {}", summary);
        let link = url::Url::parse("https://example.com/cases/case-studies/x/").unwrap();
        let study = CaseStudy::with_html(
            Slug::parse("x").unwrap(),
            format!("T{title}"),
            utc(2026, 1, 1, 0, 0),
            None,
            summary,
            vec![Slug::parse("databases").unwrap()],
            vec![author],
            link.clone(),
            Origin::Upstream { feed: link },
            html,
        );
        prop_assert!(study.title.chars().all(xml_char));
        let want_title = study.title.clone();
        let files = feeds_of(&settings, vec![Arc::new(study)]);
        assert_well_formed(&files);
        // The item is in everything and in its category's feeds.
        for f in files.iter().filter(|f| f.path.starts_with("databases/") || !f.path.contains('/')) {
            let text = std::str::from_utf8(&f.body).unwrap();
            match f.format {
                Format::Json => {
                    let v: serde_json::Value = serde_json::from_str(text).unwrap();
                    prop_assert_eq!(v["items"][0]["title"].as_str(), Some(want_title.as_str()));
                }
                Format::Rss | Format::Atom => {
                    let doc = roxmltree::Document::parse(text).unwrap();
                    let item = doc
                        .descendants()
                        .find(|n| n.has_tag_name("item") || n.has_tag_name("entry"))
                        .expect("one item");
                    let got = item
                        .children()
                        .find(|n| n.has_tag_name("title"))
                        .and_then(|n| n.text())
                        .unwrap_or("");
                    prop_assert_eq!(as_read(got), as_read(&want_title), "{}", f.path);
                }
            }
        }
    }

    /// The fuzz acceptance of issue 13: random front matter and Markdown,
    /// through parsing and all three writers. Never a panic; a file either
    /// is a problem with a line, or gives well-formed feeds.
    #[test]
    fn random_front_matter_and_markdown_give_well_formed_feeds_or_a_problem(
        toml_syntax in any::<bool>(),
        escaped in any::<bool>(),
        title in hostile_text(),
        summary in hostile_text(),
        extra_key in "[a-z]{1,8}",
        extra in hostile_text(),
        body in prop::collection::vec(
            prop_oneof![
                hostile_text(),
                prop::sample::select(vec![
                    "# ", "\n\n", "* ", "[l](javascript:x)", "<script>", "</div>", "`", "```\n",
                    "&#1;", "&#x1b;", "&#xFFFF;", "&#0;", "<![CDATA[", "]]>", "|a|b|\n|-|-|\n", "[^1]\n\n[^1]: n",
                    "<img src=x onerror=y>", "\\", "\r\n", "> ",
                ]).prop_map(str::to_owned),
            ],
            0..20,
        ),
    ) {
        let quote = |s: &str| if escaped {
            serde_json::to_string(s).unwrap()
        } else {
            format!("\"{s}\"")
        };
        let front = if toml_syntax {
            format!("+++\ntitle = {}\ndate = 2026-01-02T03:04:05Z\nsummary = {}\n{extra_key} = {}\ncategories = [\"databases\"]\n+++\n",
                quote(&title), quote(&summary), quote(&extra))
        } else {
            format!("---\ntitle: {}\ndate: 2026-01-02T03:04:05Z\nsummary: {}\n{extra_key}: {}\ncategories: [databases]\n---\n",
                quote(&title), quote(&summary), quote(&extra))
        };
        let text = format!("{front}\n{}", body.concat());
        let site = site();
        let path = site.write("case.md", &text);
        match CaseStudy::from_file(&path, text.as_bytes(), &site.settings()) {
            Ok(Parsed::Study(study)) => {
                prop_assert!(study.title.chars().all(xml_char));
                prop_assert!(study.summary.chars().all(xml_char));
                let files = feeds_of(&site.settings(), vec![Arc::from(study)]);
                assert_well_formed(&files);
            }
            Ok(_) => {}
            Err(p) => {
                prop_assert!(p.line >= 1, "{}", p);
                prop_assert!(!p.message.contains('\n'), "{}", p);
            }
        }
    }
}

/// Issue 13.2a: with its content folder missing, `feeds build` wrote empty
/// feeds over the good ones and `run` started healthy. Both, and `check`,
/// now refuse with exit 2 and name the folder.
#[test]
fn missing_content_folder_is_a_usage_error_for_run_check_and_feeds_build() {
    let site = site();
    std::fs::remove_dir(&site.content_dir).unwrap();
    std::fs::create_dir_all(&site.out_dir).unwrap();
    let good = "<rss>the last good feed</rss>";
    std::fs::write(site.out_dir.join("rss.xml"), good).unwrap();
    // The site's config has a database and listens on a port of the system's choice.
    let config = site.config_path.clone();
    let db = site.root.join("casewire.db");
    for args in [&["check"][..], &["feeds", "build"], &["run"]] {
        let mut child = bin()
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(&site.root)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Guard against a daemon that starts anyway: it would never exit.
        let mut waited = 0;
        while child.try_wait().unwrap().is_none() {
            if waited > 300 {
                child.kill().unwrap();
                child.wait().unwrap();
                panic!("`{}` started without a content folder", args.join(" "));
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            waited += 1;
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(
            stderr.contains(&site.content_dir.display().to_string())
                && stderr.contains("does not exist"),
            "{args:?}: {stderr}"
        );
        assert_eq!(
            std::fs::read_to_string(site.out_dir.join("rss.xml")).unwrap(),
            good
        );
        assert!(!db.exists(), "{args:?} opened the database");
    }
}

/// Issue 13.6: a 200 KB file of nested `[[[…]]]` took 37 s of CPU to reject
/// (quadratic in depth), stalling the publisher at every rescan. The depth
/// is checked before parsing, with the line it goes too deep on.
#[test]
fn deeply_nested_front_matter_is_refused_before_parsing() {
    let site = site();
    let deep = "[".repeat(200 * 1024);
    let yaml = site.write(
        "deep.md",
        &format!("---\ntitle: Deep\ndate: 2026-01-01\ntags: {deep}\n---\nbody\n"),
    );
    let toml = site.write(
        "deep-toml.md",
        &format!("+++\ntitle = \"Deep\"\ndate = 2026-01-01\n\ntags = {deep}\n+++\nbody\n"),
    );
    site.write(
        "fine.md",
        &yaml_study("title: Fine\ndate: 2026-01-01", "ok"),
    );
    let catalog = DirectoryStore::new(&site.settings()).scan(None);
    let problems: Vec<String> = catalog.problems.iter().map(ToString::to_string).collect();
    assert_eq!(problems.len(), 2, "{problems:#?}");
    for (path, line) in [(&yaml, 4), (&toml, 5)] {
        let want = format!(
            "{}:{line}: front matter is nested more than 32 levels deep",
            path.display()
        );
        assert!(
            problems.iter().any(|p| p.starts_with(&want)),
            "no {want:?} in {problems:#?}"
        );
    }
    assert!(catalog.get("fine").is_some());
}

/// Issue 13.6: no file's parse may hold the publisher longer than the
/// budget: one that overruns is a problem, skipped, and keeps its last good
/// version. (A zero budget makes any watched parse overrun.)
#[test]
fn a_file_over_the_parse_budget_is_skipped_and_keeps_its_last_good_version() {
    let site = site();
    let path = site.write(
        "big.md",
        &yaml_study("title: First\ndate: 2026-01-01\nslug: big", "ok"),
    );
    let store = DirectoryStore::new(&site.settings());
    let first = store.scan(None);
    assert_eq!(first.get("big").unwrap().title, "First");

    let tags: Vec<String> = (0..20_000).map(|i| format!("tag-{i}")).collect();
    let big = yaml_study(
        &format!(
            "title: Second\ndate: 2026-01-01\nslug: big\ntags: [{}]",
            tags.join(", ")
        ),
        "ok",
    );
    assert!(big.len() > 100 * 1024);
    std::fs::write(&path, &big).unwrap();
    let strict = DirectoryStore::new(&site.settings()).with_parse_budget(std::time::Duration::ZERO);
    let second = strict.update(&first, &[path.clone()]);
    assert_eq!(
        second.get("big").unwrap().title,
        "First",
        "the last good version stays"
    );
    let problems: Vec<String> = second.problems.iter().map(ToString::to_string).collect();
    assert!(
        problems.iter().any(|p| p.starts_with(&format!(
            "{}:1: parsing the file took longer than",
            path.display()
        ))),
        "{problems:#?}"
    );
    // Within the budget it parses; a parse left running in the background
    // finishes on its own and blocks nothing.
    let mut third = store.update(&second, &[path.clone()]);
    for _ in 0..100 {
        if third.problems.is_empty() {
            break;
        }
        // The overrun parse may still be running: it is reported until done.
        std::thread::sleep(std::time::Duration::from_millis(50));
        third = store.update(&second, &[path.clone()]);
    }
    assert!(third.problems.is_empty(), "{:?}", third.problems);
    assert_eq!(third.get("big").unwrap().title, "Second");
}

/// The site's config with the weekly edition on `schedule`, for commands
/// that need an edition (the site's config already has a database).
fn full_config(site: &TestSite, schedule: &str) -> std::path::PathBuf {
    let config = site.root.join("full.toml");
    let edition = format!(
        "[[editions]]\nslug = \"weekly\"\nname = \"Weekly\"\nschedule = \"{schedule}\"\ntimezone = \"Europe/Berlin\"\n"
    );
    std::fs::write(&config, site.config_for(&site.options().editions(edition))).unwrap();
    config
}

/// Issue 13.9: `casewire status | head` panicked on the broken pipe. Every
/// command that prints to stdout now ends quietly with status 0 when its
/// reader has gone (the read end is closed before the command starts).
#[test]
fn commands_exit_quietly_when_stdout_is_a_broken_pipe() {
    let site = site();
    // A broken file gives `check` a line to print; a good one gives `digest
    // preview` a case study.
    site.write("broken.md", "no front matter\n");
    site.write(
        "fine.md",
        &yaml_study("title: Fine\ndate: 2026-01-01", "ok"),
    );
    let config = full_config(&site, "0 8 * * MON");
    for args in [
        &["migrate"][..],
        &["status"],
        &["schedule"],
        &["check"],
        &["subscribers", "list"],
        &["subscribers", "export"],
        &["digest", "preview", "weekly"],
    ] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let out = bin()
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(&site.root)
            .stdout(writer)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("Broken pipe"),
            "{args:?}: {stderr}"
        );
        // `check` would exit 1 for the broken file, but its first line
        // already meets the closed pipe: every command ends there with 0.
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    }
}

/// Issue 13.9: `0 0 30 2 *` (February 30th) was accepted and never fires.
/// `check` warns with the config line; a warning does not fail the check.
#[test]
fn a_schedule_that_never_fires_is_a_check_warning() {
    let site = site();
    site.write(
        "fine.md",
        &yaml_study("title: Fine\ndate: 2026-01-01", "ok"),
    );
    let config = full_config(&site, "0 0 30 2 *");
    let out = bin()
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = std::fs::read_to_string(&config).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("schedule"))
        .unwrap()
        + 1;
    let want = format!(
        "{}:{line}: warning: edition 'weekly': schedule \"0 0 30 2 *\" never fires in the next 5 years",
        config.display()
    );
    assert!(stdout.contains(&want), "no {want:?} in:\n{stdout}");
    assert_eq!(out.status.code(), Some(0), "{stdout}");

    let fires = full_config(&site, "0 0 29 2 *");
    let out = bin()
        .arg("--config")
        .arg(&fires)
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("never fires"), "leap days come: {stdout}");
}

/// Issue 13.9: symlinks leading out of content.dir were followed and
/// published, and a symlink to `/` made `check` walk the whole disk. They
/// are not followed now, and each one (and any loop) is reported by name.
#[test]
fn symlinks_out_of_the_content_folder_are_not_followed_and_loops_are_named() {
    use std::os::unix::fs::symlink;
    let site = site();
    site.write(
        "inside.md",
        &yaml_study("title: Inside\ndate: 2026-01-01", "ok"),
    );
    let outside = site.root.join("elsewhere");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("secret.md"),
        yaml_study(
            "title: Secret\ndate: 2026-01-01\nslug: secret",
            "private notes",
        ),
    )
    .unwrap();
    let c = &site.content_dir;
    symlink(outside.join("secret.md"), c.join("leak.md")).unwrap();
    symlink(&outside, c.join("outdir")).unwrap();
    symlink("/", c.join("root")).unwrap();
    std::fs::create_dir_all(c.join("sub")).unwrap();
    symlink("..", c.join("sub/up")).unwrap();

    let store = DirectoryStore::new(&site.settings());
    let catalog = store.scan(None);
    assert!(catalog.get("inside").is_some());
    assert!(
        catalog.get("secret").is_none(),
        "a file outside the folder was published"
    );
    assert_eq!(catalog.len(), 1);
    let problems: Vec<String> = catalog.problems.iter().map(ToString::to_string).collect();
    for name in ["leak.md", "outdir", "root"] {
        let want = format!(
            "{}:0: symlink leads out of the content folder",
            c.join(name).display()
        );
        assert!(
            problems.iter().any(|p| p.starts_with(&want)),
            "no {want:?} in {problems:#?}"
        );
    }
    let looped = format!("{}:0: symlink loop", c.join("sub/up").display());
    assert!(
        problems.iter().any(|p| p.starts_with(&looped)),
        "no {looped:?} in {problems:#?}"
    );

    // The watcher's path names it directly: still not read.
    let updated = store.update(&catalog, &[c.join("outdir/secret.md")]);
    assert!(updated.get("secret").is_none());

    let out = bin()
        .arg("--config")
        .arg(&site.config_path)
        .arg("check")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("root:0: symlink leads out of the content folder (to /)"),
        "{stdout}"
    );
    assert_eq!(out.status.code(), Some(1), "{stdout}");
}
