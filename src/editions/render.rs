//! Digest rendering: minijinja templates `email/digest.html` and
//! `email/digest.txt`, grouped by category, featured case studies first, CSS
//! inlined with css-inline so Gmail and Outlook keep the styles. A digest is
//! rendered once per distinct content set; per-recipient links are
//! placeholders that delivery fills in.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use minijinja::{context, Environment, UndefinedBehavior};
use serde::Serialize;

use crate::config::{Edition, Settings};
use crate::content::markdown::truncate_words;
use crate::content::CaseStudy;
use crate::delivery::compose::{PLACEHOLDER_PREFERENCES_URL, PLACEHOLDER_UNSUBSCRIBE_URL};
use crate::domain::Slug;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digest {
    pub subject: String,
    pub html: String,
    pub text: String,
}

#[derive(Debug, Serialize)]
struct Item {
    slug: String,
    title: String,
    summary: String,
    link: String,
    categories: Vec<String>,
    reading_minutes: usize,
    featured: bool,
    published: String,
    /// First sentence of the root cause section, or "" without one.
    root_cause: String,
    /// Recognised sections by key (`heading`, `text`, `first_line`).
    sections: std::collections::BTreeMap<String, SectionView>,
}

#[derive(Debug, Serialize)]
struct SectionView {
    heading: String,
    text: String,
    first_line: String,
}

/// Longest one-line teaser taken from a section.
const FIRST_LINE_CHARS: usize = 200;

#[derive(Debug, Serialize)]
struct Group {
    category: String,
    items: Vec<Item>,
}

/// What one digest holds: `studies` are every matching case study; the first
/// `edition.max_items` (featured first, then newest) are shown, the rest are
/// counted and linked.
pub struct DigestInput<'a> {
    pub settings: &'a Settings,
    pub edition: &'a Edition,
    pub studies: Vec<Arc<CaseStudy>>,
    /// The categories the reader follows (empty: all); decides grouping.
    pub follows: &'a [Slug],
    /// Shown in the greeting; empty for bodies shared by many recipients.
    pub name: &'a str,
    /// The run's public archive page ("view in browser"); None in previews
    /// and runs without an issue.
    pub archive_url: Option<&'a str>,
}

/// Orders a digest's case studies: featured first, then newest, then slug.
pub fn order(studies: &mut [Arc<CaseStudy>]) {
    studies.sort_by(|a, b| {
        b.featured
            .cmp(&a.featured)
            .then(b.published.cmp(&a.published))
            .then(a.slug.cmp(&b.slug))
    });
}

fn item(settings: &Settings, s: &Arc<CaseStudy>) -> Item {
    Item {
        slug: s.slug.to_string(),
        title: s.title.clone(),
        summary: s.summary.clone(),
        link: s.link.to_string(),
        categories: s
            .categories
            .iter()
            .map(|c| {
                settings
                    .category(c.as_str())
                    .map(|k| k.name.clone())
                    .unwrap_or_else(|| c.to_string())
            })
            .collect(),
        reading_minutes: s.reading_minutes(),
        featured: s.featured,
        published: s.published.format("%Y-%m-%d").to_string(),
        root_cause: s
            .section(settings, "root_cause")
            .map(|r| r.first_line(FIRST_LINE_CHARS))
            .unwrap_or_default(),
        sections: s
            .sections(settings)
            .iter()
            .map(|sec| {
                (
                    sec.key.clone(),
                    SectionView {
                        heading: sec.heading.clone(),
                        text: sec.text.clone(),
                        first_line: sec.first_line(FIRST_LINE_CHARS),
                    },
                )
            })
            .collect(),
    }
}

/// `studies` (already in [`order`]) grouped as a digest shows them: each
/// case study once, under the first of its categories the reader follows
/// (any, when `follows` is empty); the group of the first item leads, then
/// the configured order of categories.
fn groups(settings: &Settings, studies: &[Arc<CaseStudy>], follows: &[Slug]) -> Vec<Group> {
    let mut groups: Vec<(Option<usize>, Vec<Item>)> = Vec::new();
    for s in studies {
        let cat_index = s
            .categories
            .iter()
            .filter(|c| follows.is_empty() || follows.contains(c))
            .filter_map(|c| settings.categories.iter().position(|k| k.slug == *c))
            .min();
        match groups.iter_mut().find(|(k, _)| *k == cat_index) {
            Some((_, items)) => items.push(item(settings, s)),
            None => groups.push((cat_index, vec![item(settings, s)])),
        }
    }
    // Featured first: the group holding the first featured item leads, then config order.
    let lead = groups.first().map(|g| g.0);
    groups.sort_by_key(|(k, _)| (Some(*k) != lead, k.unwrap_or(usize::MAX)));
    groups
        .into_iter()
        .map(|(k, items)| Group {
            category: k
                .map(|i| settings.categories[i].name.clone())
                .unwrap_or_else(|| "More case studies".into()),
            items,
        })
        .collect()
}

/// What an archive issue shows: the subject the edition's readers got and
/// every case study of the run, grouped as in a digest that follows all
/// categories. Nothing in it is personal.
#[derive(Debug, Clone, Serialize)]
pub struct IssueContent {
    pub subject: String,
    pub count: usize,
    /// `[{ "category": ..., "items": [{ "title", "link", "summary", "root_cause", ... }] }]`
    pub groups: serde_json::Value,
}

pub fn issue_content(
    settings: &Settings,
    edition: &Edition,
    mut studies: Vec<Arc<CaseStudy>>,
) -> anyhow::Result<IssueContent> {
    order(&mut studies);
    let subject = render_subject(
        &edition.subject,
        subject_context(settings, edition, &studies),
    )?;
    let mut groups = serde_json::to_value(groups(settings, &studies, &[]))
        .context("serializing the archive issue")?;
    // The page shows each case study's teaser, not its whole text: the
    // sections stay out of the stored issue (the one-line root cause stays).
    for group in groups.as_array_mut().into_iter().flatten() {
        for item in group["items"].as_array_mut().into_iter().flatten() {
            if let Some(item) = item.as_object_mut() {
                item.remove("sections");
            }
        }
    }
    Ok(IssueContent {
        subject,
        count: studies.len(),
        groups,
    })
}

fn site_context(settings: &Settings) -> minijinja::Value {
    context! {
        title => settings.site.title.clone(),
        description => settings.site.description.clone(),
        base_url => settings.site.base_url.to_string(),
        language => settings.site.language.clone(),
    }
}

fn edition_context(edition: &Edition) -> minijinja::Value {
    context! { slug => edition.slug.to_string(), name => edition.name.clone() }
}

/// What the edition's subject template sees.
fn subject_context(
    settings: &Settings,
    edition: &Edition,
    studies: &[Arc<CaseStudy>],
) -> minijinja::Value {
    let subject_items: Vec<_> = studies
        .iter()
        .map(|s| context! { title => s.title.clone(), slug => s.slug.to_string() })
        .collect();
    context! {
        site => site_context(settings),
        edition => edition_context(edition),
        count => studies.len(),
        items => subject_items,
    }
}

pub fn render(env: &Environment<'_>, input: DigestInput<'_>) -> anyhow::Result<Digest> {
    let settings = input.settings;
    let mut studies = input.studies;
    order(&mut studies);
    let count = studies.len();
    let shown = count.min(input.edition.max_items);
    let groups = groups(settings, &studies[..shown], input.follows);
    let more: Vec<Item> = studies[shown..]
        .iter()
        .take(50)
        .map(|s| item(settings, s))
        .collect();
    let preheader = truncate_words(
        &studies
            .iter()
            .take(3)
            .map(|s| s.title.as_str())
            .collect::<Vec<_>>()
            .join(" · "),
        140,
    );

    let subject = render_subject(
        &input.edition.subject,
        subject_context(settings, input.edition, &studies),
    )?;
    let ctx = context! {
        site => site_context(settings),
        edition => edition_context(input.edition),
        subject => subject.clone(),
        preheader => preheader,
        name => input.name,
        count => count,
        groups => groups,
        more_count => count - shown,
        more => more,
        more_url => settings.site.base_url.to_string(),
        unsubscribe_url => PLACEHOLDER_UNSUBSCRIBE_URL,
        preferences_url => PLACEHOLDER_PREFERENCES_URL,
        archive_url => input.archive_url.unwrap_or_default(),
    };
    let html = env.get_template("email/digest.html")?.render(&ctx)?;
    let text = env.get_template("email/digest.txt")?.render(&ctx)?;
    let inliner = css_inline::CSSInliner::options()
        .load_remote_stylesheets(false)
        .build();
    let html = inliner.inline(&html).context("inlining the digest's CSS")?;
    Ok(Digest {
        subject,
        html,
        text: tidy_text(&text),
    })
}

/// Subject lines are one line of plain text.
fn render_subject(template: &str, ctx: minijinja::Value) -> anyhow::Result<String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    let subject = env
        .render_str(template, ctx)
        .context("rendering the edition's subject")?;
    // A header holds no control character, whatever the template or a title held.
    Ok(subject
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .filter(|c| !c.is_control() && crate::content::text::is_xml_char(*c))
        .collect())
}

/// Collapses the blank-line runs that template tags leave in plain text.
fn tidy_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.lines() {
        if line.trim().is_empty() {
            blank += 1;
            if blank > 1 {
                continue;
            }
        } else {
            blank = 0;
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out.trim_start_matches('\n').to_owned()
}

/// Renders a digest of made-up case studies: `casewire check` uses it to find
/// template errors before a real send does.
pub fn sample(settings: &Settings) -> anyhow::Result<Digest> {
    let edition = settings.editions.first().cloned().unwrap_or(Edition {
        slug: Slug::parse("sample").expect("valid slug"),
        name: "Sample".into(),
        schedule: crate::config::ScheduleSpec::Instant,
        timezone: chrono_tz::UTC,
        local_time: false,
        max_items: 1,
        categories: Vec::new(),
        subject: "{{ site.title }}".into(),
        pause_above: None,
        expire_after: std::time::Duration::from_secs(86_400),
    });
    let cats: Vec<Slug> = settings
        .categories
        .iter()
        .take(2)
        .map(|c| c.slug.clone())
        .collect();
    let now: DateTime<Utc> = Utc::now();
    let studies = (0..edition.max_items + 1)
        .map(|i| {
            let slug = Slug::parse(&format!("sample-{i}")).expect("valid slug");
            Arc::new(CaseStudy::with_html(
                slug.clone(),
                format!("Sample case study {i}"),
                now,
                None,
                "A sample summary.".into(),
                cats.clone(),
                vec!["Sample Author".into()],
                settings.permalink(&slug),
                crate::content::Origin::Upstream {
                    feed: settings.site.base_url.clone(),
                },
                "<p>Body</p>".into(),
            ))
        })
        .collect();
    let env = crate::templates::environment(settings);
    render(
        &env,
        DigestInput {
            settings,
            edition: &edition,
            studies,
            follows: &[],
            name: "Sample Reader",
            archive_url: Some("https://example.com/archive/sample/2026-01-05/"),
        },
    )
}
