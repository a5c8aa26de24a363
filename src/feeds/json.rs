//! JSON Feed 1.1 (https://jsonfeed.org/version/1.1) through serde. Paged
//! with `next_url`: the current feed leads to the newest archive page, each
//! page to the next older one; every page names the current feed as its
//! `feed_url` (the feed's identity).

use std::borrow::Cow;

use serde::Serialize;

use crate::content::text::xml_clean as clean;

use super::{FeedView, Format};

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
    tags: Vec<String>,
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

pub fn write(view: &FeedView<'_>) -> Vec<u8> {
    let settings = view.settings;
    let base = settings.site.base_url.as_str();
    let feed = JsonFeed {
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
        items: view
            .items
            .iter()
            .map(|s| JsonItem {
                id: s.link.as_str(),
                url: s.link.as_str(),
                title: clean(&s.title),
                content_html: match clean(&s.html()) {
                    Cow::Borrowed(_) => s.html(),
                    Cow::Owned(o) => o.into(),
                },
                summary: clean(&s.summary),
                date_published: s.published.to_rfc3339(),
                date_modified: s.updated_or_published().to_rfc3339(),
                tags: s
                    .categories
                    .iter()
                    .map(|c| view.category_name(c))
                    .chain(s.tags.iter().cloned())
                    .map(|t| clean(&t).into_owned())
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
                        .sections
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
            })
            .collect(),
    };
    let mut out = serde_json::to_vec_pretty(&feed).expect("feed serializes");
    out.push(b'\n');
    out
}
