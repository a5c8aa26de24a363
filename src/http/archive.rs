//! The public archive: `GET /archive/{edition}/` (the issues, newest first,
//! 100 a page with `?page=N`), `/archive/{edition}/{date}/` (one issue, the
//! "view in browser" page of its digests) and `/archive/{edition}/atom.xml`
//! (the newest issues as Atom). Pages are read-only (DESIGN.md invariant 1),
//! carry no personal data, no script and no third-party resource, and are
//! served with a strong ETag and a public cache lifetime.

use std::collections::HashMap;
use std::sync::Arc;

use atom_syndication::{Content, Entry, Feed, Generator, Link, Person, Text};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{TimeZone, Utc};
use minijinja::{context, Value};
use sha2::{Digest, Sha256};

use super::respond::{Problem, Responder};
use super::AppState;
use crate::config::{Edition, Settings};
use crate::editions::archive::{atom_url, index_url, issue_url};
use crate::store::archive::{self as store, Issue};
use crate::subscribers::views::{self, url};

/// Issues per index page.
const PER_PAGE: i64 = 100;

/// How long shared caches and browsers may keep a page without asking again.
const ISSUE_MAX_AGE: &str = "public, max-age=3600";
const INDEX_MAX_AGE: &str = "public, max-age=300";

pub async fn index(
    State(state): State<AppState>,
    Path(edition): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let settings = state.snapshot().settings.clone();
    let Some(edition) = settings.edition(&edition) else {
        return not_found(&settings, None, "There is no edition of that name.");
    };
    let page = match query.get("page").map(|p| p.parse::<i64>()) {
        None => 1,
        Some(Ok(n)) if n >= 1 => n,
        Some(_) => {
            return not_found(
                &settings,
                Some(edition),
                "That page of the archive does not exist.",
            )
        }
    };
    let slug = edition.slug.as_str();
    let (issues, total) = match tokio::try_join!(
        store::list(&state.db, slug, (page - 1) * PER_PAGE, PER_PAGE),
        store::count(&state.db, slug)
    ) {
        Ok(found) => found,
        Err(e) => return failure(&settings, &e),
    };
    if page > 1 && issues.is_empty() {
        return not_found(
            &settings,
            Some(edition),
            "That page of the archive does not exist.",
        );
    }
    let index = index_url(&settings, slug);
    let page_url = |n: i64| {
        if n == 1 {
            index.to_string()
        } else {
            format!("{index}?page={n}")
        }
    };
    let older = (page * PER_PAGE < total).then(|| page_url(page + 1));
    let newer = (page > 1).then(|| page_url(page - 1));
    let listed: Vec<Value> = issues.iter().map(|i| issue_summary(&settings, i)).collect();
    let ctx = context! {
        edition => edition_context(edition),
        issues => listed,
        newer_url => url(newer.as_deref().unwrap_or_default()),
        older_url => url(older.as_deref().unwrap_or_default()),
        atom_url => url(atom_url(&settings, slug).as_str()),
        subscribe_url => url(&crate::subscribers::link(&settings, "subscribe")),
    };
    page_response(
        &settings,
        &headers,
        "pages/archive_index.html",
        ctx,
        INDEX_MAX_AGE,
    )
}

pub async fn issue(
    State(state): State<AppState>,
    Path((edition, key)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let settings = state.snapshot().settings.clone();
    let Some(edition) = settings.edition(&edition) else {
        return not_found(&settings, None, "There is no edition of that name.");
    };
    let slug = edition.slug.as_str();
    let missing = || {
        not_found(
            &settings,
            Some(edition),
            "There is no issue of this edition on that date.",
        )
    };
    if !is_issue_key(&key) {
        return missing();
    }
    let issue = match store::get(&state.db, slug, &key).await {
        Ok(Some(i)) => i,
        Ok(None) => return missing(),
        Err(e) => return failure(&settings, &e),
    };
    let (before, after) = match store::neighbours(&state.db, &issue).await {
        Ok(n) => n,
        Err(e) => return failure(&settings, &e),
    };
    let groups: serde_json::Value = match serde_json::from_str(&issue.content) {
        Ok(g) => g,
        Err(e) => return failure(&settings, &e),
    };
    let neighbour = |k: Option<String>| {
        url(&k
            .map(|k| issue_url(&settings, slug, &k).to_string())
            .unwrap_or_default())
    };
    let ctx = context! {
        edition => edition_context(edition),
        issue => context! {
            key => issue.key.clone(),
            date => issue.local_date.clone(),
            subject => issue.subject.clone(),
            count => issue.count,
            url => url(issue_url(&settings, slug, &issue.key).as_str()),
            groups => Value::from_serialize(&groups),
        },
        prev_url => neighbour(before),
        next_url => neighbour(after),
        index_url => url(index_url(&settings, slug).as_str()),
        atom_url => url(atom_url(&settings, slug).as_str()),
        subscribe_url => url(&crate::subscribers::link(&settings, "subscribe")),
    };
    page_response(
        &settings,
        &headers,
        "pages/archive_issue.html",
        ctx,
        ISSUE_MAX_AGE,
    )
}

pub async fn atom(
    State(state): State<AppState>,
    Path(edition): Path<String>,
    headers: HeaderMap,
) -> Response {
    let settings = state.snapshot().settings.clone();
    let Some(edition) = settings.edition(&edition) else {
        return not_found(&settings, None, "There is no edition of that name.");
    };
    let issues = match store::list(
        &state.db,
        edition.slug.as_str(),
        0,
        settings.feeds.items as i64,
    )
    .await
    {
        Ok(i) => i,
        Err(e) => return failure(&settings, &e),
    };
    let body = atom_feed(&settings, edition, &issues);
    cached(
        &headers,
        body.into_bytes(),
        "application/atom+xml; charset=utf-8",
        INDEX_MAX_AGE,
        StatusCode::OK,
    )
}

/// `/archive/{edition}` and `/archive/{edition}/{date}` lead to the page
/// with the trailing slash, so that each page has one address.
pub async fn add_slash(uri: Uri) -> Redirect {
    let path = format!("{}/", uri.path());
    Redirect::permanent(&match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    })
}

/// `2026-12-07` or `2026-12-07-2`.
fn is_issue_key(key: &str) -> bool {
    let b = key.as_bytes();
    let date = b.len() >= 10
        && b[..10].iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    if !date {
        return false;
    }
    // The first ten bytes are ASCII, so this is a character boundary.
    let suffix = &key[10..];
    suffix.is_empty()
        || (suffix.len() <= 6
            && suffix.starts_with('-')
            && suffix.len() > 1
            && suffix[1..].bytes().all(|c| c.is_ascii_digit()))
}

fn edition_context(edition: &Edition) -> Value {
    context! { slug => edition.slug.to_string(), name => edition.name.clone() }
}

fn issue_summary(settings: &Settings, issue: &Issue) -> Value {
    context! {
        key => issue.key.clone(),
        date => issue.local_date.clone(),
        subject => issue.subject.clone(),
        count => issue.count,
        url => url(issue_url(settings, &issue.edition, &issue.key).as_str()),
    }
}

/// The newest issues as an Atom feed: one entry per issue, its page as id
/// and link, its case studies as a list in the content.
fn atom_feed(settings: &Settings, edition: &Edition, issues: &[Issue]) -> String {
    let slug = edition.slug.as_str();
    let self_url = atom_url(settings, slug).to_string();
    let updated = issues
        .iter()
        .map(|i| i.run_at)
        .max()
        .unwrap_or_else(|| Utc.with_ymd_and_hms(2000, 1, 1, 0, 0, 0).unwrap());
    let entries = issues
        .iter()
        .map(|issue| {
            let page = issue_url(settings, slug, &issue.key).to_string();
            Entry {
                title: Text::plain(issue.subject.clone()),
                id: page.clone(),
                updated: issue.run_at.fixed_offset(),
                published: Some(issue.run_at.fixed_offset()),
                links: vec![Link {
                    href: page,
                    rel: "alternate".into(),
                    mime_type: Some("text/html".into()),
                    ..Default::default()
                }],
                content: Some(Content {
                    value: Some(issue_html(&issue.content)),
                    content_type: Some("html".into()),
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    let feed = Feed {
        title: Text::plain(format!("{}: {} archive", settings.site.title, edition.name)),
        id: self_url.clone(),
        updated: updated.fixed_offset(),
        authors: vec![Person {
            name: settings.site.author.clone(),
            uri: Some(settings.site.base_url.to_string()),
            ..Default::default()
        }],
        links: vec![
            Link {
                href: self_url,
                rel: "self".into(),
                mime_type: Some("application/atom+xml".into()),
                ..Default::default()
            },
            Link {
                href: index_url(settings, slug).to_string(),
                rel: "alternate".into(),
                mime_type: Some("text/html".into()),
                ..Default::default()
            },
        ],
        generator: Some(Generator {
            value: crate::feeds::GENERATOR.into(),
            uri: None,
            version: Some(env!("CARGO_PKG_VERSION").into()),
        }),
        lang: Some(settings.site.language.clone()),
        entries,
        ..Default::default()
    };
    let out = feed
        .write_to(Vec::new())
        .expect("writing to a Vec cannot fail");
    String::from_utf8(crate::content::text::xml_clean_bytes(out)).expect("the writer emits UTF-8")
}

/// An issue's case studies as an HTML list for feed readers.
fn issue_html(content: &str) -> String {
    let groups: serde_json::Value = serde_json::from_str(content).unwrap_or_default();
    let text = |v: &serde_json::Value, k: &str| escape(v[k].as_str().unwrap_or_default());
    let mut html = String::new();
    for group in groups.as_array().into_iter().flatten() {
        html.push_str(&format!("<h2>{}</h2>\n<ul>\n", text(group, "category")));
        for item in group["items"].as_array().into_iter().flatten() {
            html.push_str(&format!(
                "<li><a href=\"{}\">{}</a>: {}</li>\n",
                text(item, "link"),
                text(item, "title"),
                text(item, "summary")
            ));
        }
        html.push_str("</ul>\n");
    }
    html
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn page_response(
    settings: &Arc<Settings>,
    headers: &HeaderMap,
    template: &str,
    ctx: Value,
    cache_control: &'static str,
) -> Response {
    match views::render(settings, template, ctx) {
        Ok(html) => cached(
            headers,
            html.into_bytes(),
            "text/html; charset=utf-8",
            cache_control,
            StatusCode::OK,
        ),
        Err(e) => failure(settings, &e),
    }
}

/// `body` with a strong ETag of its bytes, or 304 when the client has it.
fn cached(
    headers: &HeaderMap,
    body: Vec<u8>,
    content_type: &'static str,
    cache_control: &'static str,
    status: StatusCode,
) -> Response {
    let etag = format!("\"{}\"", hex::encode(&Sha256::digest(&body)[..12]));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|inm| {
            inm.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
        });
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = (status, body).into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = response.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(&etag).expect("hex is a valid header"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(cache_control),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("strict-origin-when-cross-origin"),
    );
    response
}

/// The archive's 404 page, leading back to the edition's index (or the site).
fn not_found(settings: &Arc<Settings>, edition: Option<&Edition>, message: &str) -> Response {
    let (back_url, back_text) = match edition {
        Some(e) => (
            index_url(settings, e.slug.as_str()).to_string(),
            format!("All issues of the {}", e.name),
        ),
        None => (
            settings.site.base_url.to_string(),
            settings.site.title.clone(),
        ),
    };
    let ctx = context! { message => message, back_url => url(&back_url), back_text => back_text };
    match views::render(settings, "pages/not_found.html", ctx) {
        Ok(html) => (
            StatusCode::NOT_FOUND,
            [(header::CACHE_CONTROL, "no-cache")],
            axum::response::Html(html),
        )
            .into_response(),
        Err(e) => failure(settings, &e),
    }
}

fn failure(settings: &Arc<Settings>, e: &dyn std::error::Error) -> Response {
    Responder {
        settings: settings.clone(),
        json: false,
    }
    .problem(Problem::internal(e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_keys_are_dates_with_an_optional_run_number() {
        for ok in ["2026-12-07", "2026-12-07-2", "2026-12-07-13"] {
            assert!(is_issue_key(ok), "{ok}");
        }
        for bad in [
            "",
            "2026-12-7",
            "2026-12-0é",
            "2026-12-07é",
            "2026-12-07-",
            "2026-12-07x",
            "2026-12-07-a",
            "atom.xml",
            "../../etc",
            "2026-12-07-1234567",
        ] {
            assert!(!is_issue_key(bad), "{bad}");
        }
    }

    #[test]
    fn feed_content_escapes_what_it_quotes() {
        let html = issue_html(
            r#"[{"category":"A & B","items":[{"link":"https://x/?a=1&b=2","title":"<T>","summary":"\"s\""}]}]"#,
        );
        assert!(html.contains("<h2>A &amp; B</h2>"), "{html}");
        assert!(html.contains("href=\"https://x/?a=1&amp;b=2\""), "{html}");
        assert!(
            html.contains("&lt;T&gt;") && html.contains("&quot;s&quot;"),
            "{html}"
        );
    }
}
