//! RSS 2.0 with the `rss` crate: `content:encoded` for the full HTML,
//! `dc:creator` for authors (RSS's own `author` must be an e-mail address),
//! and `atom:link` for the self and hub links that validators expect.

use rss::extension::atom::{AtomExtension, Link};
use rss::extension::dublincore::DublinCoreExtension;
use rss::{Category, Channel, Guid, Item};

use super::{FeedView, Format, GENERATOR};

pub fn write(view: &FeedView<'_>) -> Vec<u8> {
    let settings = view.settings;
    let mut channel = Channel::default();
    channel.set_title(view.title.clone());
    channel.set_link(settings.site.base_url.to_string());
    channel.set_description(view.description.clone());
    channel.set_language(settings.site.language.clone());
    channel.set_generator(format!("{GENERATOR} {}", env!("CARGO_PKG_VERSION")));
    channel.set_docs("https://www.rssboard.org/rss-specification".to_owned());
    channel.set_last_build_date(view.updated.to_rfc2822());
    if let Some(first) = view.items.first() {
        channel.set_pub_date(first.published.to_rfc2822());
    }
    let mut links = vec![link(
        view.self_url(Format::Rss).as_str(),
        "self",
        Some(Format::Rss.mime()),
    )];
    if let Some(hub) = &settings.feeds.websub_hub {
        links.push(link(hub.as_str(), "hub", None));
    }
    channel.set_atom_ext(AtomExtension { links });

    let items = view
        .items
        .iter()
        .map(|study| {
            let mut item = Item::default();
            item.set_title(study.title.clone());
            item.set_link(study.link.to_string());
            item.set_guid(Guid {
                value: study.link.to_string(),
                permalink: true,
            });
            item.set_pub_date(study.published.to_rfc2822());
            item.set_description(study.summary.clone());
            item.set_content(study.html().to_string());
            item.set_categories(
                study
                    .categories
                    .iter()
                    .map(|c| Category {
                        name: super::category_name(settings, c).to_owned(),
                        domain: None,
                    })
                    .collect::<Vec<_>>(),
            );
            if !study.authors.is_empty() {
                item.set_dublin_core_ext(DublinCoreExtension {
                    creators: study.authors.clone(),
                    ..Default::default()
                });
            }
            item
        })
        .collect::<Vec<_>>();
    channel.set_items(items);
    let out = channel
        .write_to(Vec::with_capacity(64 * 1024))
        .expect("writing to a Vec cannot fail");
    // Well-formed whatever reached the writer (the model is cleaned already).
    crate::content::text::xml_clean_bytes(out)
}

fn link(href: &str, rel: &str, mime: Option<&str>) -> Link {
    Link {
        href: href.to_owned(),
        rel: rel.to_owned(),
        mime_type: mime.map(str::to_owned),
        ..Default::default()
    }
}
