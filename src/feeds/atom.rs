//! Atom 1.0 with the `atom_syndication` crate. Entry ids are the case study's
//! permalink, which derives from its slug and never from its title. Feeds
//! carry their RFC 5005 links: the current feed `prev-archive`; archive
//! documents `current`, `prev-archive`/`next-archive` and `<fh:archive/>`.
//!
//! A case study's `<entry>` is the same in every document that lists it, so
//! it is written once per build ([`entry`]) and spliced into each document's
//! skeleton ([`write`]): the bytes are those of writing the whole feed at once.

use atom_syndication::{
    Category, Content, Entry, Feed, FixedDateTime, Generator, Link, Person, Text, WriteConfig,
};
use std::collections::BTreeMap;

use atom_syndication::extension::Extension;
use chrono::{DateTime, Utc};

use super::{FeedView, Format, Spliced, GENERATOR};
use crate::config::Settings;
use crate::content::text::xml_clean_bytes;
use crate::content::CaseStudy;

/// The prefix and namespace of RFC 5005's feed history elements.
const FH: &str = "fh";
pub const FH_NAMESPACE: &str = "http://purl.org/syndication/history/1.0";

/// What `Entry::write_with_config` opens a standalone entry with; inside a
/// feed the entry inherits the namespace and opens with a bare `<entry>`.
const STANDALONE_START: &[u8] = b"<entry xmlns=\"http://www.w3.org/2005/Atom\">";

fn fixed(t: DateTime<Utc>) -> FixedDateTime {
    t.fixed_offset()
}

/// `study`'s `<entry>…</entry>`, cleaned of the characters XML forbids, as
/// it appears in every Atom document that lists it: nothing in it depends
/// on the document's scope or place in the history (category labels come
/// from the settings).
pub fn entry(settings: &Settings, study: &CaseStudy) -> Vec<u8> {
    let model = entry_model(settings, study);
    let size = model
        .content
        .as_ref()
        .and_then(|c| c.value.as_ref())
        .map_or(0, String::len);
    let config = WriteConfig {
        write_document_declaration: false,
        indent_size: None,
    };
    let mut out = model
        .write_with_config(Vec::with_capacity(size + size / 4 + 2048), config)
        .expect("writing to a Vec cannot fail");
    assert!(
        out.starts_with(STANDALONE_START),
        "atom_syndication opens a standalone entry as {STANDALONE_START:?}"
    );
    out.drain(b"<entry".len()..STANDALONE_START.len() - 1);
    // Cleaning drops whole characters, so a cleaned fragment spliced into a
    // cleaned skeleton is the cleaned whole.
    xml_clean_bytes(out)
}

fn entry_model(settings: &Settings, study: &CaseStudy) -> Entry {
    let link = study.link.to_string();
    Entry {
        title: Text::plain(study.title.clone()),
        id: link.clone(),
        updated: fixed(study.updated_or_published()),
        published: Some(fixed(study.published)),
        authors: study
            .authors
            .iter()
            .map(|name| Person {
                name: name.clone(),
                ..Default::default()
            })
            .collect(),
        links: vec![Link {
            href: link,
            rel: "alternate".into(),
            mime_type: Some("text/html".into()),
            ..Default::default()
        }],
        categories: study
            .categories
            .iter()
            .map(|c| Category {
                term: c.to_string(),
                label: Some(super::category_name(settings, c).to_owned()),
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
}

/// The document `view`, with `entries` (each [`entry`] of `view.items`, in
/// that order) spliced in where the writer puts entries: after the feed's
/// own elements, before its extensions (`<fh:archive>`).
pub fn write<'e>(view: &FeedView<'_>, entries: &[&'e [u8]]) -> Spliced<'e> {
    debug_assert_eq!(entries.len(), view.items.len());
    let skeleton = xml_clean_bytes(
        feed(view, Vec::new())
            .write_to(Vec::with_capacity(4 * 1024))
            .expect("writing to a Vec cannot fail"),
    );
    let at = if view.history.page.is_some() {
        // Markup, so never inside text (which has its `<` escaped).
        let marker = format!("<{FH}:archive>");
        skeleton
            .windows(marker.len())
            .rposition(|w| w == marker.as_bytes())
            .expect("an archive document has its fh:archive marker")
    } else {
        assert!(
            skeleton.ends_with(b"</feed>"),
            "an Atom feed ends with </feed>"
        );
        skeleton.len() - b"</feed>".len()
    };
    let len = skeleton.len();
    let mut out = Spliced::new(skeleton, entries.len() + 2);
    out.own(0..at);
    for e in entries {
        out.borrow(e);
    }
    out.own(at..len);
    out
}

/// The feed of `view` holding `entries` (none for the skeleton).
fn feed(view: &FeedView<'_>, entries: Vec<Entry>) -> Feed {
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
    Feed {
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
    }
}

/// The whole document written at once, as before splicing: what [`write`]
/// must equal byte for byte.
#[cfg(test)]
pub(crate) fn write_whole(view: &FeedView<'_>) -> Vec<u8> {
    let entries = view
        .items
        .iter()
        .map(|s| entry_model(view.settings, s))
        .collect();
    let out = feed(view, entries)
        .write_to(Vec::new())
        .expect("writing to a Vec cannot fail");
    xml_clean_bytes(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::feeds::fixture;

    #[test]
    fn spliced_entries_give_the_bytes_of_the_whole_feed() {
        let settings = fixture::settings();
        let catalog = fixture::catalog(&settings);
        // What only the writer's cleaning removes reaches it.
        assert!(settings.site.title.contains('\u{1}'));
        assert!(catalog.all().iter().all(|s| s.title.contains('\u{1}')));
        let views = fixture::views(&settings, &catalog);
        let (mut archives, mut currents) = (0, 0);
        for view in &views {
            let entries: Vec<Vec<u8>> = view.items.iter().map(|s| entry(&settings, s)).collect();
            let refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
            let spliced = write(view, &refs).to_vec();
            let whole = write_whole(view);
            let what = view.path(Format::Atom);
            assert_eq!(
                String::from_utf8(spliced.clone()).unwrap(),
                String::from_utf8(whole).unwrap(),
                "{what}"
            );
            let text = String::from_utf8(spliced).unwrap();
            assert!(
                !text.contains(['\u{1}', '\u{7}', '\u{b}', '\u{1f}', '\u{fffe}']),
                "{what}"
            );
            let parsed = Feed::read_from(text.as_bytes()).expect("well-formed Atom");
            assert_eq!(parsed.entries.len(), view.items.len(), "{what}");
            if view.items.len() > 1 {
                if view.history.page.is_some() {
                    assert!(text.contains("<fh:archive></fh:archive></feed>"), "{what}");
                    archives += 1;
                } else {
                    currents += 1;
                }
            }
        }
        assert!(
            archives >= 3 && currents >= 3,
            "{archives} archive, {currents} current feeds"
        );
    }
}
