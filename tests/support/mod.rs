//! Shared helpers for integration tests: a throw-away site (config file,
//! content folder, output folder in one temp dir) and content-file writers.
//! Small functions on purpose, so other test files pick what they need.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use casewire::config::Settings;
use chrono::{DateTime, TimeZone, Utc};

/// Public URL every test site uses; feed ids and links start with it.
pub const BASE_URL: &str = "https://example.com/cases/";

/// The categories every test site configures: (slug, name).
pub const CATEGORIES: &[(&str, &str)] = &[
    ("failure-analysis", "Failure Analysis"),
    ("databases", "Databases"),
    ("performance", "Performance"),
    ("security", "Security"),
];

/// A site in its own temp dir: `casewire.toml`, `content/` and `public/feeds/`.
pub struct TestSite {
    /// Kept so the folder lives as long as the site.
    pub root: tempfile::TempDir,
    pub config_path: PathBuf,
    pub content_dir: PathBuf,
    pub out_dir: PathBuf,
    pub settings: Settings,
}

impl TestSite {
    /// A site with the default config; `extra` is appended to its TOML
    /// (e.g. "[feeds]\nitems = 2\n" is not allowed twice: use [`TestSite::with`]).
    pub fn new() -> Self {
        Self::with(&Options::default())
    }

    pub fn with(options: &Options) -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        let content_dir = root.path().join("content");
        let out_dir = root.path().join("public/feeds");
        std::fs::create_dir_all(&content_dir).expect("content dir");
        let config_path = root.path().join("casewire.toml");
        let text = config_text(&content_dir, &out_dir, options);
        std::fs::write(&config_path, &text).expect("write config");
        let settings = settings_from(&config_path, &text);
        Self {
            root,
            config_path,
            content_dir,
            out_dir,
            settings,
        }
    }

    /// Writes `text` to `content/<relative>`, creating folders.
    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        write_file(&self.content_dir, relative, text.as_bytes())
    }

    /// Writes raw bytes (e.g. invalid UTF-8) to `content/<relative>`.
    pub fn write_bytes(&self, relative: &str, bytes: &[u8]) -> PathBuf {
        write_file(&self.content_dir, relative, bytes)
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.content_dir.join(relative)
    }
}

impl Default for TestSite {
    fn default() -> Self {
        Self::new()
    }
}

/// Config values tests vary.
#[derive(Debug, Clone)]
pub struct Options {
    pub items: usize,
    pub max_file_kb: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            items: 50,
            max_file_kb: 1024,
        }
    }
}

/// The TOML text of a test site's configuration.
pub fn config_text(content_dir: &Path, out_dir: &Path, options: &Options) -> String {
    let mut text = format!(
        r#"[site]
title = "Casewire Test"
description = "Case studies for tests"
base_url = "{BASE_URL}"
author = "Test Editors"

[content]
dir = {content:?}
max_file_kb = {max_kb}

[feeds]
out_dir = {out:?}
items = {items}

[mail]
from = "Casewire Test <digest@example.com>"
"#,
        content = content_dir.display().to_string(),
        out = out_dir.display().to_string(),
        max_kb = options.max_file_kb,
        items = options.items,
    );
    for (slug, name) in CATEGORIES {
        text.push_str(&format!(
            "\n[[categories]]\nslug = \"{slug}\"\nname = \"{name}\"\n"
        ));
    }
    text
}

/// Validated settings from TOML text, without environment overrides.
pub fn settings_from(path: &Path, text: &str) -> Settings {
    Settings::from_toml(path, text, std::iter::empty())
        .unwrap_or_else(|e| panic!("test config does not load: {e}\n{text}"))
}

/// Writes `bytes` to `dir/relative`, creating parent folders.
pub fn write_file(dir: &Path, relative: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(relative);
    std::fs::create_dir_all(path.parent().expect("has a parent")).expect("create folders");
    std::fs::write(&path, bytes).expect("write file");
    path
}

/// A YAML front matter case study: `fields` are raw YAML lines.
pub fn yaml_study(fields: &str, body: &str) -> String {
    format!("---\n{}\n---\n\n{body}\n", fields.trim_end())
}

/// A TOML front matter case study: `fields` are raw TOML lines.
pub fn toml_study(fields: &str, body: &str) -> String {
    format!("+++\n{}\n+++\n\n{body}\n", fields.trim_end())
}

/// Shorthand for a UTC instant.
pub fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).unwrap()
}

/// Public URL of a case study, as the default permalink builds it.
pub fn permalink(slug: &str) -> String {
    format!("{BASE_URL}case-studies/{slug}/")
}

/// Fails the test (never skips) when an external tool is missing.
pub fn require_tool(program: &str, args: &[&str], install_hint: &str) {
    match std::process::Command::new(program).args(args).output() {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "`{program} {}` failed ({}): {}{}\n{install_hint}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("`{program}` is not runnable ({e}). {install_hint}"),
    }
}
