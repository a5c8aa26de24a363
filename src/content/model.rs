//! The case study model and how one content file becomes one case study.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use super::frontmatter::{self, LineError, Split};
use super::markdown;
use super::sections::Section;
use super::text;
use crate::config::Settings;
use crate::domain::Slug;

/// One published (or scheduled) case study. Immutable once built: a changed
/// file produces a new value, so a catalog snapshot never changes under a reader.
#[derive(Debug)]
pub struct CaseStudy {
    /// Stable identity: feed ids and the publication ledger key derive from it.
    pub slug: Slug,
    pub title: String,
    /// When it is (or will be) published, UTC.
    pub published: DateTime<Utc>,
    /// Last edit according to the source; None when never updated.
    pub updated: Option<DateTime<Utc>>,
    pub summary: String,
    pub categories: Vec<Slug>,
    pub tags: Vec<String>,
    pub authors: Vec<String>,
    pub featured: bool,
    /// Number of words in the body, for reading time.
    pub words: usize,
    /// SHA-256 of the source (the file's bytes or the upstream entry), hex.
    pub hash: String,
    pub origin: Origin,
    /// Public URL of the case study.
    pub link: url::Url,
    /// What was wrong with the source but repaired (characters XML forbids,
    /// dropped); `path:line: warning: ...`, reported and not an error.
    pub warnings: Vec<Problem>,
    /// The sections recognised from the body's headings (`[content]
    /// sections`), in document order; empty for upstream entries. Like the
    /// HTML, read from the file on first use and kept until
    /// [`CaseStudy::forget_html`]: they are most of a file's text, and a
    /// catalog holding them all from the scan on was most of a cold
    /// build's peak memory.
    sections: Mutex<Option<Arc<[Section]>>>,
    /// Sanitized, absolute-linked HTML; rendered on first use and then kept
    /// (until [`CaseStudy::forget_html`], for a file). A std Mutex: held only
    /// to read or replace the pointer, never while rendering.
    html: Mutex<Option<Arc<str>>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A Markdown file in the content folder.
    File(PathBuf),
    /// An entry of an upstream feed (`content.sources`).
    Upstream { feed: url::Url },
}

/// `path:line: message`, the shape editors and CI logs link to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.path.display(), self.line, self.message)
    }
}

impl std::error::Error for Problem {}

/// What a content file turned out to be.
#[derive(Debug)]
pub enum Parsed {
    Study(Box<CaseStudy>),
    /// `draft: true` (or Jekyll's `published: false`): left out, not an error.
    Draft,
    /// Not a case study at all (Hugo's `_index.md` section pages).
    NotAnEntry,
}

impl CaseStudy {
    pub fn updated_or_published(&self) -> DateTime<Utc> {
        self.updated.unwrap_or(self.published).max(self.published)
    }

    pub fn is_published(&self, now: DateTime<Utc>) -> bool {
        self.published <= now
    }

    /// Minutes to read at 230 words a minute, at least 1.
    pub fn reading_minutes(&self) -> usize {
        self.words.div_ceil(230).max(1)
    }

    /// The section with this key, if the case study has it.
    pub fn section(&self, settings: &Settings, key: &str) -> Option<Section> {
        self.sections(settings)
            .iter()
            .find(|s| s.key == key)
            .cloned()
    }

    /// The recognised sections, in document order (see the field). A file
    /// that no longer reads or parses has none.
    pub fn sections(&self, settings: &Settings) -> Arc<[Section]> {
        if let Some(kept) = self
            .sections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return kept;
        }
        let found = self
            .with_body(|body| super::sections::extract(body, &settings.content.sections))
            .unwrap_or_default();
        self.keep_sections(found)
    }

    /// Reads the file once for both the HTML and the sections, where
    /// neither is kept (a feeds build wants both of every case study).
    pub fn load(&self, settings: &Settings) {
        let html_kept = self
            .html
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        let sections_kept = self
            .sections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some();
        if !html_kept && !sections_kept {
            if let Some((html, sections)) = self.with_body(|body| {
                (
                    markdown::render(body, &self.link),
                    super::sections::extract(body, &settings.content.sections),
                )
            }) {
                self.keep_html(html);
                self.keep_sections(sections);
            }
        }
        self.html();
        self.sections(settings);
    }

    /// `f` of the body of this case study's file as it is now (characters
    /// XML forbids dropped, front matter split off); None for an entry that
    /// is not a file, or a file that no longer reads or parses.
    fn with_body<T>(&self, f: impl FnOnce(&str) -> T) -> Option<T> {
        let Origin::File(path) = &self.origin else {
            return None;
        };
        let src = std::fs::read_to_string(path).ok()?;
        let clean = text::xml_clean(&src);
        frontmatter::split(&clean).ok().map(|s| f(s.body))
    }

    /// Keeps `html` unless another thread kept its copy first; returns the kept one.
    fn keep_html(&self, html: String) -> Arc<str> {
        self.html
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| Arc::from(html))
            .clone()
    }

    /// As [`CaseStudy::keep_html`], for the sections.
    fn keep_sections(&self, sections: Vec<Section>) -> Arc<[Section]> {
        self.sections
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(|| Arc::from(sections))
            .clone()
    }

    /// Sets the sections of an entry built in code (tests, tools).
    pub fn set_sections(&mut self, sections: Vec<Section>) {
        *self.sections.get_mut().unwrap_or_else(|e| e.into_inner()) = Some(sections.into());
    }

    pub fn path(&self) -> Option<&Path> {
        match &self.origin {
            Origin::File(p) => Some(p),
            Origin::Upstream { .. } => None,
        }
    }

    /// The full content as sanitized HTML with absolute links. For a file it is
    /// rendered from the file on first use; a file that no longer parses falls
    /// back to the summary (its last good metadata stays in the catalog).
    pub fn html(&self) -> Arc<str> {
        if let Some(html) = self.html.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            return html;
        }
        let rendered = self
            .with_body(|body| markdown::render(body, &self.link))
            .unwrap_or_else(|| format!("<p>{}</p>", minijinja::HtmlEscape(&self.summary)));
        // Two threads may render at once; the first copy kept is the one shared.
        self.keep_html(rendered)
    }

    /// Drops the kept HTML and sections of a file (they are read again from
    /// the file on next use): a cold build of a long history would otherwise
    /// hold every case study's HTML at once. Entries that are not files keep
    /// theirs.
    pub fn forget_html(&self) {
        if matches!(self.origin, Origin::File(_)) {
            *self.html.lock().unwrap_or_else(|e| e.into_inner()) = None;
            *self.sections.lock().unwrap_or_else(|e| e.into_inner()) = None;
        }
    }

    /// Builds an entry whose HTML is already known (upstream feeds, tests).
    #[allow(clippy::too_many_arguments)]
    pub fn with_html(
        slug: Slug,
        title: String,
        published: DateTime<Utc>,
        updated: Option<DateTime<Utc>>,
        summary: String,
        categories: Vec<Slug>,
        authors: Vec<String>,
        link: url::Url,
        origin: Origin,
        html: String,
    ) -> Self {
        // The one way in for entries that are not files: whatever the
        // source held, the model holds only what XML can carry.
        let (mut title, mut summary, mut authors, mut html) = (title, summary, authors, html);
        for s in std::iter::once(&mut title)
            .chain([&mut summary, &mut html])
            .chain(authors.iter_mut())
        {
            text::xml_clean_in_place(s);
        }
        authors.retain(|a| !a.trim().is_empty());
        let hash = hex::encode(Sha256::digest(
            format!("{title}\0{summary}\0{html}").as_bytes(),
        ));
        let words = text::word_count(&html);
        let cell = Mutex::new(Some(Arc::from(html)));
        Self {
            slug,
            title,
            published,
            updated,
            summary,
            categories,
            tags: Vec::new(),
            authors,
            featured: false,
            words,
            hash,
            origin,
            link,
            warnings: Vec::new(),
            sections: Mutex::new(Some(Arc::from(Vec::new()))),
            html: cell,
        }
    }

    /// Parses one content file. `display` is the path used in messages.
    pub fn from_file(path: &Path, bytes: &[u8], settings: &Settings) -> Result<Parsed, Problem> {
        let problem = |line: usize, message: String| Problem {
            path: path.to_owned(),
            line,
            message,
        };
        if bytes.is_empty() || bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(problem(
                1,
                "the file is empty (expected front matter with at least title and date)".into(),
            ));
        }
        let src = std::str::from_utf8(bytes).map_err(|e| {
            let valid = &bytes[..e.valid_up_to()];
            let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
            problem(
                line,
                format!(
                    "the file is not valid UTF-8 (bad byte at offset {}); save it as UTF-8",
                    e.valid_up_to()
                ),
            )
        })?;
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("");
        if stem == "_index" {
            return Ok(Parsed::NotAnEntry);
        }
        // Characters XML forbids are dropped (and reported) before anything
        // reads the file, and again from parsed values, which escapes such
        // as YAML's "\x01" or TOML's "\u0001" can produce.
        let mut warnings: Vec<Problem> = text::forbidden_lines(src)
            .into_iter()
            .map(|(line, what)| problem(line, dropped_message(&what)))
            .collect();
        let cleaned = text::xml_clean(src);
        let src: &str = &cleaned;
        let split = frontmatter::split(src).map_err(|e| problem(e.line, e.message))?;
        let mut map = frontmatter::parse(&split).map_err(|e| problem(e.line, e.message))?;
        for (key, value) in map.iter_mut() {
            if let Some(what) = clean_value(value) {
                warnings.push(problem(
                    frontmatter::key_line(&split, key),
                    format!("{} (in '{key}')", dropped_message(&what)),
                ));
            }
        }
        let map = map;
        let fm = Fields {
            map: &map,
            split: &split,
        };
        let at = |key: &str| frontmatter::key_line(&split, key);

        if fm
            .bool_any(&["draft"])
            .map_err(|e| problem(e.line, e.message))?
            == Some(true)
            || matches!(map.get("published"), Some(Value::Bool(false)))
        {
            return Ok(Parsed::Draft);
        }

        let title = match fm
            .string_any(&["title"])
            .map_err(|e| problem(e.line, e.message))?
        {
            Some(t) if !t.trim().is_empty() => t.trim().to_owned(),
            Some(_) => return Err(problem(at("title"), "'title' is empty".into())),
            None => {
                return Err(problem(
                    split.front_line,
                    "'title' is missing (every case study needs a title)".into(),
                ))
            }
        };

        let date_key = ["date", "published", "pubDate"]
            .into_iter()
            .find(|k| matches!(map.get(*k), Some(Value::String(_))));
        let published = match date_key {
            Some(key) => {
                let text = map[key].as_str().unwrap_or_default();
                frontmatter::parse_date(text).ok_or_else(|| {
                    problem(at(key), format!("'{key}' is not a date: {text:?} (expected e.g. 2025-03-14 or 2025-03-14T09:00:00Z)"))
                })?
            }
            None => match map.get("date") {
                Some(other) => return Err(problem(at("date"), format!("'date' is not a date: {other} (expected e.g. 2025-03-14 or 2025-03-14T09:00:00Z)"))),
                // Jekyll posts carry their date in the file name.
                None => match date_prefix(stem) {
                    Some(d) => d,
                    None => return Err(problem(split.front_line, "'date' is missing (expected e.g. date: 2025-03-14T09:00:00Z)".into())),
                },
            },
        };

        let updated_key = ["updated", "lastmod", "last_modified_at", "modified"]
            .into_iter()
            .find(|k| map.contains_key(*k));
        let updated = match updated_key {
            Some(key) => {
                let text = map[key].as_str().unwrap_or_default();
                Some(frontmatter::parse_date(text).ok_or_else(|| {
                    problem(
                        at(key),
                        format!(
                            "'{key}' is not a date: {} (expected e.g. 2025-03-14T09:00:00Z)",
                            map[key]
                        ),
                    )
                })?)
            }
            None => None,
        };

        let slug = match fm.string_any(&["slug"]).map_err(|e| problem(e.line, e.message))? {
            Some(s) => Slug::parse(s.trim()).map_err(|e| problem(at("slug"), format!("'slug' {e}")))?,
            None => default_slug(path).ok_or_else(|| {
                problem(1, format!("cannot derive a slug from the file name {stem:?}; set 'slug' in the front matter"))
            })?,
        };

        let summary = fm
            .string_any(&["summary", "description", "excerpt"])
            .map_err(|e| problem(e.line, e.message))?
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| default_summary(split.body));
        // A character reference in the body (`&#1;`) decodes to a control.
        let mut summary = summary;
        text::xml_clean_in_place(&mut summary);

        let (cat_names, cat_key) = fm.categories().map_err(|e| problem(e.line, e.message))?;
        let mut categories = Vec::with_capacity(cat_names.len());
        for name in cat_names {
            match resolve_category(&name, settings) {
                Some(slug) => {
                    if !categories.contains(&slug) {
                        categories.push(slug)
                    }
                }
                None => {
                    let known: Vec<&str> = settings
                        .categories
                        .iter()
                        .map(|c| c.slug.as_str())
                        .collect();
                    return Err(problem(
                        at(cat_key),
                        format!(
                            "unknown category {name:?} (configured: {})",
                            if known.is_empty() {
                                "none".into()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }

        let tags = fm.tags().map_err(|e| problem(e.line, e.message))?;
        let authors = fm.authors().map_err(|e| problem(e.line, e.message))?;
        let featured = fm.featured().map_err(|e| problem(e.line, e.message))?;
        let link = settings.permalink(&slug);
        // The sections themselves are read again on first use (see the
        // field); here they only tell which expected ones are missing.
        let specs = &settings.content.sections;
        let missing = if specs.iter().any(|s| s.expected) {
            super::sections::missing(&super::sections::extract(split.body, specs), specs)
        } else {
            Vec::new()
        };
        if !missing.is_empty() {
            // The body's first non-blank line.
            let body = split.body;
            let blank = &body[..body.len() - body.trim_start().len()];
            let body_line = if src.ends_with(body) {
                src[..src.len() - body.len()].matches('\n').count()
                    + blank.matches('\n').count()
                    + 1
            } else {
                1
            };
            warnings.push(problem(
                body_line,
                format!(
                    "warning: no {} section (expected by [content] sections; give it a heading such as \"## Root cause\")",
                    missing.join(", ")
                ),
            ));
        }
        Ok(Parsed::Study(Box::new(CaseStudy {
            slug,
            title,
            published,
            updated,
            summary,
            categories,
            tags,
            authors,
            featured,
            words: text::word_count(split.body),
            hash: hex::encode(Sha256::digest(bytes)),
            origin: Origin::File(path.to_owned()),
            link,
            warnings,
            // Read again on first use (see the field).
            sections: Mutex::new(None),
            html: Mutex::new(None),
        })))
    }
}

fn dropped_message(what: &str) -> String {
    format!("warning: dropped {what}: XML 1.0 forbids these control characters in feeds and mail headers")
}

/// Drops forbidden characters from every string (and key) in `value`;
/// describes what was dropped, if anything.
fn clean_value(value: &mut Value) -> Option<String> {
    let mut found: Vec<String> = Vec::new();
    fn walk(v: &mut Value, found: &mut Vec<String>) {
        match v {
            Value::String(s) => {
                if let Some(d) = text::describe_forbidden(s) {
                    found.push(d);
                    text::xml_clean_in_place(s);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|i| walk(i, found)),
            Value::Object(map) => {
                let dirty: Vec<String> = map
                    .keys()
                    .filter(|k| !k.chars().all(text::is_xml_char))
                    .cloned()
                    .collect();
                for key in dirty {
                    if let Some(inner) = map.remove(&key) {
                        found.extend(text::describe_forbidden(&key));
                        map.insert(text::xml_clean(&key).into_owned(), inner);
                    }
                }
                map.values_mut().for_each(|i| walk(i, found));
            }
            _ => {}
        }
    }
    walk(value, &mut found);
    if found.is_empty() {
        return None;
    }
    let mut parts: Vec<&str> = found.iter().flat_map(|d| d.split(", ")).collect();
    parts.sort_unstable();
    parts.dedup();
    Some(parts.join(", "))
}

/// Front-matter lookups that accept each generator's spelling of a key.
struct Fields<'a> {
    map: &'a Map<String, Value>,
    split: &'a Split<'a>,
}

impl Fields<'_> {
    fn err(&self, key: &str, expected: &str, got: &Value) -> LineError {
        LineError {
            line: frontmatter::key_line(self.split, key),
            message: format!("'{key}' must be {expected}, not {got}"),
        }
    }

    fn string_any(&self, keys: &[&str]) -> Result<Option<&str>, LineError> {
        for key in keys {
            match self.map.get(*key) {
                None | Some(Value::Null) => continue,
                Some(Value::String(s)) => return Ok(Some(s)),
                Some(other) => return Err(self.err(key, "text", other)),
            }
        }
        Ok(None)
    }

    fn bool_any(&self, keys: &[&str]) -> Result<Option<bool>, LineError> {
        for key in keys {
            match self.map.get(*key) {
                None | Some(Value::Null) => continue,
                Some(Value::Bool(b)) => return Ok(Some(*b)),
                Some(Value::String(s)) if s == "true" || s == "false" => {
                    return Ok(Some(s == "true"))
                }
                Some(other) => return Err(self.err(key, "true or false", other)),
            }
        }
        Ok(None)
    }

    /// A string or a list of strings.
    fn list(&self, key: &str, value: &Value) -> Result<Vec<String>, LineError> {
        match value {
            Value::Null => Ok(Vec::new()),
            Value::String(s) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()),
            Value::Array(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.trim().to_owned()),
                    other => Err(self.err(key, "a list of text", other)),
                })
                .collect(),
            other => Err(self.err(key, "a list of text", other)),
        }
    }

    fn taxonomy(&self, name: &str) -> Option<&Value> {
        self.map.get("taxonomies").and_then(|t| t.get(name))
    }

    /// The categories and the key they were found under (for messages).
    fn categories(&self) -> Result<(Vec<String>, &'static str), LineError> {
        for key in ["categories", "category"] {
            if let Some(v) = self.map.get(key) {
                return Ok((self.list(key, v)?, key));
            }
        }
        match self.taxonomy("categories") {
            Some(v) => Ok((self.list("categories", v)?, "categories")),
            None => Ok((Vec::new(), "categories")),
        }
    }

    fn tags(&self) -> Result<Vec<String>, LineError> {
        match self.map.get("tags").or_else(|| self.taxonomy("tags")) {
            Some(v) => self.list("tags", v),
            None => Ok(Vec::new()),
        }
    }

    fn authors(&self) -> Result<Vec<String>, LineError> {
        let mut out = Vec::new();
        for key in ["authors", "author"] {
            let Some(v) = self.map.get(key) else { continue };
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                other => vec![other],
            };
            for item in items {
                match item {
                    Value::String(s) if !s.trim().is_empty() => out.push(s.trim().to_owned()),
                    Value::Object(o) => match o.get("name") {
                        Some(Value::String(s)) => out.push(s.trim().to_owned()),
                        _ => return Err(self.err(key, "a name or a map with 'name'", item)),
                    },
                    Value::Null => {}
                    other => return Err(self.err(key, "a name or a list of names", other)),
                }
            }
        }
        Ok(out)
    }

    /// `featured` at the top level, or in Zola's `[extra]` / Hugo's `params`.
    fn featured(&self) -> Result<bool, LineError> {
        if let Some(b) = self.bool_any(&["featured"])? {
            return Ok(b);
        }
        for table in ["extra", "params"] {
            if let Some(Value::Bool(b)) = self.map.get(table).and_then(|t| t.get("featured")) {
                return Ok(*b);
            }
        }
        Ok(false)
    }
}

/// A category by slug, by name, or by the slug of its name ("Failure Analysis").
fn resolve_category(name: &str, settings: &Settings) -> Option<Slug> {
    let slugged = Slug::slugify(name)?;
    settings
        .categories
        .iter()
        .find(|c| c.slug == slugged || c.name.eq_ignore_ascii_case(name.trim()))
        .map(|c| c.slug.clone())
}

/// File stem as slug; `index.md` takes its folder's name (Hugo page bundles),
/// and a Jekyll date prefix (`2025-03-14-title`) is dropped.
fn default_slug(path: &Path) -> Option<Slug> {
    let stem = path.file_stem()?.to_str()?;
    let stem = if stem == "index" {
        path.parent()?.file_name()?.to_str()?
    } else {
        stem
    };
    let stem = if date_prefix(stem).is_some() {
        &stem[11..]
    } else {
        stem
    };
    Slug::parse(stem).ok().or_else(|| Slug::slugify(stem))
}

fn date_prefix(stem: &str) -> Option<DateTime<Utc>> {
    let prefix = stem.get(..10)?;
    if stem.len() > 10 && stem.as_bytes()[10] != b'-' {
        return None;
    }
    frontmatter::parse_date(prefix)
}

/// The first paragraph as plain text. Markdown is parsed block by block over
/// the whole input, so it looks at the first 2 KB first and reads the whole
/// body only when no paragraph starts there.
fn default_summary(body: &str) -> String {
    let head = prefix(body, 2048);
    let summary = markdown::first_paragraph(head, 300);
    if summary.is_empty() && head.len() < body.len() {
        markdown::first_paragraph(body, 300)
    } else {
        summary
    }
}

fn prefix(body: &str, max: usize) -> &str {
    if body.len() <= max {
        return body;
    }
    let mut end = max;
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    // Cut at a line end so no construct is split mid-line.
    match body[..end].rfind('\n') {
        Some(i) if i > 0 => &body[..i],
        _ => &body[..end],
    }
}
