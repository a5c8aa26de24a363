//! Atom 1.0 with the `atom_syndication` crate. Entry ids are the case study's
//! permalink, which derives from its slug and never from its title. Feeds
//! carry their RFC 5005 links: the current feed `prev-archive`; archive
//! documents `current`, `prev-archive`/`next-archive` and `<fh:archive/>`.

use atom_syndication::{
    Category, Content, Entry, Feed, FixedDateTime, Generator, Link, Person, Text,
};
use std::collections::BTreeMap;

use atom_syndication::extension::Extension;
use chrono::{DateTime, Utc};

use super::{FeedView, Format, GENERATOR};

/// The prefix and namespace of RFC 5005's feed history elements.
const FH: &str = "fh";
pub const FH_NAMESPACE: &str = "http://purl.org/syndication/history/1.0";

fn fixed(t: DateTime<Utc>) -> FixedDateTime {
    t.fixed_offset()
}

pub fn write(view: &FeedView<'_>) -> Vec<u8> {
    let settings = view.settings;
    let self_url = view.self_url(Format::Atom);
    let mut links = vec![
        Link {
            href: self_url.to_string(),
            rel: "self".into(),
            mime_type: Some(Format::Atom.mime().into()),
            ..Default::default()
        },
        Link {
            href: settings.site.base_url.to_string(),
            rel: "alternate".into(),
            mime_type: Some("text/html".into()),
            ..Default::default()
        },
    ];
    let history = &view.history;
    let archive = history.page.is_some();
    if archive {
        links.push(Link {
            href: view.current_url(Format::Atom).to_string(),
            rel: "current".into(),
            mime_type: Some(Format::Atom.mime().into()),
            ..Default::default()
        });
    }
    for (rel, target) in [
        ("prev-archive", &history.prev_archive),
        ("next-archive", &history.next_archive),
    ] {
        if let Some(href) = target {
            links.push(Link {
                href: href.to_string(),
                rel: rel.into(),
                mime_type: Some(Format::Atom.mime().into()),
                ..Default::default()
            });
        }
    }
    // Only the current feed is the one to subscribe to (and what a hub announces).
    if let Some(hub) = settings.feeds.websub_hub.as_ref().filter(|_| !archive) {
        links.push(Link {
            href: hub.to_string(),
            rel: "hub".into(),
            ..Default::default()
        });
    }
    let entries = view
        .items
        .iter()
        .map(|study| {
            let authors = study
                .authors
                .iter()
                .map(|name| Person {
                    name: name.clone(),
                    ..Default::default()
                })
                .collect();
            Entry {
                title: Text::plain(study.title.clone()),
                id: study.link.to_string(),
                updated: fixed(study.updated_or_published()),
                published: Some(fixed(study.published)),
                authors,
                links: vec![Link {
                    href: study.link.to_string(),
                    rel: "alternate".into(),
                    mime_type: Some("text/html".into()),
                    ..Default::default()
                }],
                categories: study
                    .categories
                    .iter()
                    .map(|c| Category {
                        term: c.to_string(),
                        label: Some(view.category_name(c)),
                        scheme: None,
                    })
                    .collect(),
                summary: Some(Text::plain(study.summary.clone())),
                content: Some(Content {
                    value: Some(study.html().to_string()),
                    content_type: Some("html".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let (namespaces, extensions) = if archive {
        let marker = Extension {
            name: format!("{FH}:archive"),
            ..Default::default()
        };
        (
            BTreeMap::from([(FH.to_owned(), FH_NAMESPACE.to_owned())]),
            BTreeMap::from([(
                FH.to_owned(),
                BTreeMap::from([("archive".to_owned(), vec![marker])]),
            )]),
        )
    } else {
        Default::default()
    };
    let feed = Feed {
        title: Text::plain(view.title.clone()),
        // Every document of a scope's history is one logical feed.
        id: view.current_url(Format::Atom).to_string(),
        namespaces,
        extensions,
        updated: fixed(view.updated),
        authors: vec![Person {
            name: settings.site.author.clone(),
            uri: Some(settings.site.base_url.to_string()),
            ..Default::default()
        }],
        links,
        generator: Some(Generator {
            value: GENERATOR.into(),
            uri: None,
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
        subtitle: Some(Text::plain(view.description.clone())),
        lang: Some(settings.site.language.clone()),
        entries,
        ..Default::default()
    };
    let out = feed
        .write_to(Vec::with_capacity(64 * 1024))
        .expect("writing to a Vec cannot fail");
    // Well-formed whatever reached the writer (the model is cleaned already).
    crate::content::text::xml_clean_bytes(out)
}
