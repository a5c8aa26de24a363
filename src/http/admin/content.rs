//! Content: every case study of the running catalog with its state
//! (published, scheduled, draft, or broken with `path:line: problem` as
//! `casewire check` prints it), its categories, which feeds carry it, and
//! which editions announced it.

use std::collections::{HashMap, HashSet};

use axum::response::Response;
use chrono::Utc;
use minijinja::Value;

use super::{when, Console};
use crate::content::model::{Origin, Parsed};
use crate::content::{CaseStudy, DirectoryStore};

pub async fn page(console: Console) -> Response {
    let settings = &console.settings;
    let snapshot = console.state.snapshot();
    let catalog = &snapshot.catalog;
    let now = Utc::now();

    // Which editions announced which slug: the run that covered an event is
    // the first finished run whose high-water mark reaches it.
    let (runs, events) = match crate::store::admin::announcement_facts(&console.state.db).await {
        Ok(f) => f,
        Err(e) => return console.internal(&e),
    };
    let mut by_edition: HashMap<&str, Vec<(i64, i64)>> = HashMap::new();
    for (edition, hw, enqueued) in &runs {
        by_edition
            .entry(edition.as_str())
            .or_default()
            .push((*hw, *enqueued));
    }
    let mut announced: HashMap<&str, Vec<String>> = HashMap::new();
    for (id, slug) in &events {
        for e in &settings.editions {
            let Some(list) = by_edition.get(e.slug.as_str()) else {
                continue;
            };
            let covered = list.iter().find(|(hw, _)| hw >= id);
            let carries = catalog.get(slug).is_none_or(|s| {
                e.categories.is_empty() || s.categories.iter().any(|c| e.categories.contains(c))
            });
            if matches!(covered, Some((_, n)) if *n > 0) && carries {
                announced
                    .entry(slug.as_str())
                    .or_default()
                    .push(e.slug.to_string());
            }
        }
    }

    // Feed presence: a feed holds the newest `feeds.items` published entries of its scope.
    let items = settings.feeds.items;
    let mut in_main: HashSet<&str> = HashSet::new();
    let mut per_category: HashMap<&str, usize> = HashMap::new();
    let mut feeds_of: HashMap<&str, Vec<String>> = HashMap::new();
    for s in catalog.published(now) {
        if in_main.len() < items {
            in_main.insert(s.slug.as_str());
        }
        for c in &s.categories {
            let n = per_category.entry(c.as_str()).or_default();
            if *n < items {
                feeds_of
                    .entry(s.slug.as_str())
                    .or_default()
                    .push(c.to_string());
            }
            *n += 1;
        }
    }

    let category_names = |s: &CaseStudy| -> Vec<String> {
        s.categories
            .iter()
            .map(|c| {
                settings
                    .category(c.as_str())
                    .map(|k| k.name.clone())
                    .unwrap_or_else(|| c.to_string())
            })
            .collect()
    };
    let mut rows = Vec::new();
    for s in catalog.all() {
        let slug = s.slug.as_str();
        let state = if s.is_published(now) {
            "published".to_owned()
        } else {
            format!("scheduled for {}", when(s.published))
        };
        let mut feeds = Vec::new();
        if in_main.contains(slug) {
            feeds.push("all".to_owned());
        }
        feeds.extend(feeds_of.get(slug).cloned().unwrap_or_default());
        rows.push(serde_json::json!({
            "title": s.title,
            "slug": slug,
            "link": s.link.as_str(),
            "state": state,
            "broken": false,
            "source": match &s.origin {
                Origin::File(p) => p.display().to_string(),
                Origin::Upstream { feed } => feed.to_string(),
            },
            "categories": category_names(s),
            "feeds": feeds,
            "announced": announced.get(slug).cloned().unwrap_or_default(),
            "warnings": s.warnings.iter().map(ToString::to_string).collect::<Vec<_>>(),
        }));
    }
    // Drafts are not in the catalog: they are the files that parsed to neither
    // a case study nor a problem. Only those few are read again.
    let settings_owned = settings.clone();
    let known: HashSet<std::path::PathBuf> = catalog
        .all()
        .iter()
        .filter_map(|s| s.path().map(ToOwned::to_owned))
        .chain(catalog.problems.iter().map(|p| p.path.clone()))
        .collect();
    let drafts = tokio::task::spawn_blocking(move || {
        let store = DirectoryStore::new(&settings_owned);
        let files = store.files().unwrap_or_default();
        files
            .into_iter()
            .filter(|f| !known.contains(f))
            .filter(|f| {
                std::fs::read(f).ok().is_some_and(|bytes| {
                    matches!(
                        crate::content::CaseStudy::from_file(f, &bytes, &settings_owned),
                        Ok(Parsed::Draft)
                    )
                })
            })
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    for path in &drafts {
        rows.push(serde_json::json!({
            "title": path.rsplit('/').next().unwrap_or(path),
            "slug": "", "link": "", "state": "draft", "broken": false, "source": path,
            "categories": [], "feeds": [], "announced": [], "warnings": [],
        }));
    }
    for p in &catalog.problems {
        rows.push(serde_json::json!({
            "title": p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            "slug": "", "link": "", "state": format!("broken: {p}"), "broken": true,
            "source": p.path.display().to_string(),
            "categories": [], "feeds": [], "announced": [], "warnings": [],
        }));
    }
    let published = catalog.published(now).count();
    console.render(
        "content.html",
        minijinja::context! {
            nav => "content",
            rows => Value::from_serialize(rows),
            published,
            scheduled => catalog.len() - published,
            drafts => drafts.len(),
            broken => catalog.problems.len(),
            built_at => when(snapshot.built_at),
        },
    )
}
