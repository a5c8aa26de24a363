//! JSON Feed 1.1 (https://jsonfeed.org/version/1.1) through serde. Paged
//! with `next_url`: the current feed leads to the newest archive page, each
//! page to the next older one; every page names the current feed as its
//! `feed_url` (the feed's identity).
//!
//! A case study's item is the same in every document that lists it, so it
//! is serialized once per build ([`item`]) and spliced into each document
//! ([`write`]): the bytes are those of serializing the whole feed at once.

use std::borrow::Cow;

use serde::Serialize;

use crate::config::Settings;
use crate::content::text::xml_clean as clean;
use crate::content::CaseStudy;

use super::{FeedView, Format, Spliced};

#[derive(Serialize)]
struct JsonFeed<'a> {
    version: &'static str,
    title: Cow<'a, str>,
    home_page_url: &'a str,
    feed_url: String,
    description: Cow<'a, str>,
    language: &'a str,
    authors: Vec<Author<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    hubs: Vec<Hub<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_url: Option<&'a str>,
    items: Vec<JsonItem<'a>>,
}

#[derive(Serialize)]
struct Author<'a> {
    name: Cow<'a, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    url: Option<&'a str>,
}

#[derive(Serialize)]
struct Hub<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    url: &'a str,
}

#[derive(Serialize)]
struct JsonItem<'a> {
    id: &'a str,
    url: &'a str,
    title: Cow<'a, str>,
    content_html: std::sync::Arc<str>,
    summary: Cow<'a, str>,
    date_published: String,
    date_modified: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tags: Vec<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authors: Vec<Author<'a>>,
    #[serde(rename = "_casewire")]
    extension: Extension<'a>,
}

/// Machine-readable extras (JSON Feed allows `_`-prefixed extensions).
#[derive(Serialize)]
struct Extension<'a> {
    slug: &'a str,
    categories: Vec<&'a str>,
    featured: bool,
    reading_minutes: usize,
    /// The recognised sections by key: `{ "heading": ..., "text": ... }`.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    sections: serde_json::Map<String, serde_json::Value>,
}

/// `study`'s item as it appears (pretty, and indented for its place in the
/// `items` array) in every JSON Feed document that lists it: nothing in it
/// depends on the document's scope or page (tag names come from the settings).
pub fn item(settings: &Settings, study: &CaseStudy) -> Vec<u8> {
    let json = serde_json::to_vec_pretty(&item_model(settings, study)).expect("item serializes");
    // Pretty JSON puts a newline only between tokens (a string holds `\n`
    // escaped), so indenting after each one nests the item a level deeper.
    let lines = json.iter().filter(|&&b| b == b'\n').count();
    let mut out = Vec::with_capacity(json.len() + (lines + 1) * ITEM_INDENT.len());
    for (i, line) in json.split(|&b| b == b'\n').enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(ITEM_INDENT);
        out.extend_from_slice(line);
    }
    out
}

/// How deep serde_json's pretty printer puts an element of the top-level
/// object's `items` array.
const ITEM_INDENT: &[u8] = b"    ";

fn item_model<'a>(settings: &'a Settings, s: &'a CaseStudy) -> JsonItem<'a> {
    JsonItem {
        id: s.link.as_str(),
        url: s.link.as_str(),
        title: clean(&s.title),
        content_html: {
            let html = s.html();
            match clean(&html) {
                Cow::Borrowed(_) => html.clone(),
                Cow::Owned(o) => o.into(),
            }
        },
        summary: clean(&s.summary),
        date_published: s.published.to_rfc3339(),
        date_modified: s.updated_or_published().to_rfc3339(),
        tags: s
            .categories
            .iter()
            .map(|c| super::category_name(settings, c))
            .chain(s.tags.iter().map(String::as_str))
            .map(clean)
            .collect(),
        authors: s
            .authors
            .iter()
            .map(|a| Author {
                name: clean(a),
                url: None,
            })
            .collect(),
        extension: Extension {
            slug: s.slug.as_str(),
            categories: s.categories.iter().map(|c| c.as_str()).collect(),
            featured: s.featured,
            reading_minutes: s.reading_minutes(),
            sections: s
                .sections(settings)
                .iter()
                .map(|sec| {
                    (
                        sec.key.clone(),
                        serde_json::json!({
                            "heading": clean(&sec.heading),
                            "text": clean(&sec.text),
                        }),
                    )
                })
                .collect(),
        },
    }
}

/// The document `view`, with `items` (each [`item`] of `view.items`, in
/// that order) spliced into its `items` array, the last member.
pub fn write<'e>(view: &FeedView<'_>, items: &[&'e [u8]]) -> Spliced<'e> {
    debug_assert_eq!(items.len(), view.items.len());
    let mut skeleton = serde_json::to_vec_pretty(&feed(view, Vec::new())).expect("feed serializes");
    skeleton.push(b'\n');
    // The last member, and markup: a string holding it would have its quotes escaped.
    const EMPTY: &[u8] = b"\"items\": []";
    let at = skeleton
        .windows(EMPTY.len())
        .rposition(|w| w == EMPTY)
        .expect("the feed's items come last");
    let len = skeleton.len();
    let mut out = Spliced::new(skeleton, 2 * items.len() + 3);
    if items.is_empty() {
        out.own(0..len);
        return out;
    }
    out.own(0..at);
    out.borrow(b"\"items\": [\n");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.borrow(b",\n");
        }
        out.borrow(item);
    }
    out.borrow(b"\n  ]");
    out.own(at + EMPTY.len()..len);
    out
}

/// The feed of `view` holding `items` (none for the skeleton).
fn feed<'a>(view: &'a FeedView<'_>, items: Vec<JsonItem<'a>>) -> JsonFeed<'a> {
    let settings = view.settings;
    let base = settings.site.base_url.as_str();
    JsonFeed {
        version: "https://jsonfeed.org/version/1.1",
        title: clean(&view.title),
        home_page_url: base,
        feed_url: view.current_url(Format::Json).to_string(),
        description: clean(&view.description),
        language: &settings.site.language,
        authors: vec![Author {
            name: clean(&settings.site.author),
            url: Some(base),
        }],
        next_url: view.history.next_url.as_ref().map(url::Url::as_str),
        hubs: settings
            .feeds
            .websub_hub
            .iter()
            .filter(|_| view.history.page.is_none())
            .map(|h| Hub {
                kind: "WebSub",
                url: h.as_str(),
            })
            .collect(),
        items,
    }
}

/// The whole document serialized at once, as before splicing: what
/// [`write`] must equal byte for byte.
#[cfg(test)]
pub(crate) fn write_whole(view: &FeedView<'_>) -> Vec<u8> {
    let items = view
        .items
        .iter()
        .map(|s| item_model(view.settings, s))
        .collect();
    let mut out = serde_json::to_vec_pretty(&feed(view, items)).expect("feed serializes");
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::fixture;

    #[test]
    fn spliced_items_give_the_bytes_of_the_whole_feed() {
        let settings = fixture::settings();
        let catalog = fixture::catalog(&settings);
        let views = fixture::views(&settings, &catalog);
        let (mut archives, mut currents, mut empty) = (0, 0, 0);
        for view in &views {
            let items: Vec<Vec<u8>> = view.items.iter().map(|s| item(&settings, s)).collect();
            let refs: Vec<&[u8]> = items.iter().map(Vec::as_slice).collect();
            let spliced = write(view, &refs).to_vec();
            let whole = write_whole(view);
            let what = view.path(Format::Json);
            assert_eq!(
                String::from_utf8(spliced.clone()).unwrap(),
                String::from_utf8(whole).unwrap(),
                "{what}"
            );
            let parsed: serde_json::Value = serde_json::from_slice(&spliced).expect("valid JSON");
            let listed = parsed["items"].as_array().expect("items").len();
            assert_eq!(listed, view.items.len(), "{what}");
            match (view.items.len(), view.history.page) {
                (0, _) => empty += 1,
                (1, _) => {}
                (_, Some(_)) => archives += 1,
                (_, None) => currents += 1,
            }
        }
        assert!(
            archives >= 3 && currents >= 3 && empty >= 1,
            "{archives} {currents} {empty}"
        );
    }
}
