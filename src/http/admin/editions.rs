//! Editions: the schedule with its next five fire times in the edition's
//! zone, the history of runs with what became of their digests, a preview
//! of the next digest for any subscriber (HTML in a sandboxed frame whose
//! own CSP blocks scripts, the text part beside it), a dry run, sending now
//! behind a confirmation that states the count, and pause and resume.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::Value;

use super::overview::{next_run, run_view};
use super::{notice, when, Console};
use crate::config::{Edition, ScheduleSpec};
use crate::editions::run::{run_edition, RunReport};
use crate::store::admin as store;
use crate::subscribers::views;

/// The Content-Security-Policy of the preview frame: the digest's inline
/// styles and images show, nothing runs (`sandbox` without `allow-scripts`),
/// no form posts, and only the console may frame it.
const FRAME_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src https: http: data:; sandbox; form-action 'none'; base-uri 'none'; frame-ancestors 'self'";

/// The edition named in the path, or a 404 page.
fn edition(console: &Console, slug: &str) -> Result<Edition, Response> {
    console.settings.edition(slug).cloned().ok_or_else(|| {
        console.message(
            StatusCode::NOT_FOUND,
            "No such edition",
            &format!(
                "There is no edition {:?} in {} (configured: {}).",
                slug.chars().take(60).collect::<String>(),
                console.settings.source.display(),
                console
                    .settings
                    .editions
                    .iter()
                    .map(|e| e.slug.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "/admin/editions",
        )
    })
}

fn schedule_text(e: &Edition) -> String {
    match &e.schedule {
        ScheduleSpec::Instant => "instant (on each publication)".into(),
        ScheduleSpec::Cron(c) => format!("{} in {}", c.as_str(), e.timezone),
    }
}

pub async fn list(console: Console) -> Response {
    let db = &console.state.db;
    let pauses = crate::store::edition_pauses::list(db)
        .await
        .unwrap_or_default();
    let now = Utc::now();
    let mut rows = Vec::new();
    for e in &console.settings.editions {
        let last = match store::runs(db, e.slug.as_str(), 1).await {
            Ok(r) => r.into_iter().next(),
            Err(err) => return console.internal(&err),
        };
        let subscribers = crate::store::editions::subscriber_count(db, e.slug.as_str())
            .await
            .unwrap_or(0);
        rows.push(serde_json::json!({
            "slug": e.slug.as_str(),
            "name": e.name,
            "schedule": schedule_text(e),
            "next": next_run(e, now),
            "last": last.map(|r| r.started_at.with_timezone(&e.timezone).format("%Y-%m-%d %H:%M %Z").to_string()),
            "subscribers": subscribers,
            "paused": pauses.iter().any(|(s, _, _)| s == e.slug.as_str()),
        }));
    }
    console.render(
        "editions.html",
        minijinja::context! { nav => "editions", rows => Value::from_serialize(rows) },
    )
}

pub async fn show(
    console: Console,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let e = match edition(&console, &slug) {
        Ok(e) => e,
        Err(r) => return r,
    };
    edition_page(&console, &e, notice(q.get("notice")), None).await
}

/// The edition's page, optionally with a dry run's result on top.
async fn edition_page(
    console: &Console,
    e: &Edition,
    notice: Option<&str>,
    dry_run: Option<&RunReport>,
) -> Response {
    let db = &console.state.db;
    let slug = e.slug.as_str();
    let now = Utc::now();
    let upcoming: Vec<String> = match &e.schedule {
        ScheduleSpec::Instant => Vec::new(),
        ScheduleSpec::Cron(c) => c
            .upcoming(now, e.timezone, 5)
            .into_iter()
            .map(|t| {
                format!(
                    "{} ({} UTC)",
                    t.with_timezone(&e.timezone).format("%a %Y-%m-%d %H:%M %Z"),
                    t.format("%Y-%m-%d %H:%M")
                )
            })
            .collect(),
    };
    let runs = match store::runs(db, slug, 20).await {
        Ok(r) => r,
        Err(err) => return console.internal(&err),
    };
    // Digest counts for the newest runs (the rest show what they queued).
    let mut history = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        if i < 5 {
            match store::run_counts(db, slug, &run.window).await {
                Ok(c) => history.push(run_view(run, &c, e.timezone)),
                Err(err) => return console.internal(&err),
            }
        } else {
            let mut v = run_view(run, &Default::default(), e.timezone);
            for k in ["queued", "sent", "retried", "suppressed", "dead", "expired"] {
                v[k] = serde_json::Value::Null;
            }
            history.push(v);
        }
    }
    let paused = crate::store::edition_pauses::list(db)
        .await
        .unwrap_or_default()
        .into_iter()
        .find(|(s, _, _)| s == slug)
        .map(|(_, reason, at)| serde_json::json!({"reason": reason, "since": when(crate::store::from_millis(at))}));
    let pending = crate::store::outbox::pending_count(db, Some(slug))
        .await
        .unwrap_or(0);
    console.render(
        "edition.html",
        minijinja::context! {
            nav => "editions",
            notice,
            e => minijinja::context! {
                slug, name => e.name, schedule => schedule_text(e),
                categories => if e.categories.is_empty() { "all".to_owned() } else { e.categories.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ") },
                max_items => e.max_items,
                expire_after => format!("{} h", e.expire_after.as_secs() / 3600),
                next => next_run(e, now),
            },
            upcoming,
            history => Value::from_serialize(history),
            paused => paused.map(Value::from_serialize),
            pending,
            dry_run => dry_run.map(|r| minijinja::context! {
                subscribers => r.subscribers, digests => r.enqueued, bodies => r.rendered, nothing_new => r.nothing_new,
            }),
        },
    )
}

/// The subscriber of a preview: an address from the query, or None.
fn preview_subscriber(q: &HashMap<String, String>) -> Option<String> {
    q.get("subscriber")
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

pub async fn preview(
    console: Console,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let e = match edition(&console, &slug) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let subscriber = preview_subscriber(&q);
    let snapshot = console.state.snapshot();
    let result = crate::editions::preview::preview(
        &console.settings,
        Some(&console.state.db),
        &snapshot.catalog,
        &e,
        subscriber.as_deref(),
        Utc::now(),
    )
    .await;
    let frame = format!(
        "/admin/editions/{}/preview.html{}",
        e.slug,
        subscriber
            .as_deref()
            .map(|s| format!(
                "?subscriber={}",
                url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>()
            ))
            .unwrap_or_default()
    );
    let (status, ctx) = match result {
        Ok(p) => (
            StatusCode::OK,
            minijinja::context! {
                subject => p.digest.subject,
                text => p.digest.text,
                to => p.to,
                note => p.note,
                frame => views::url(&frame),
                error => Option::<String>::None,
            },
        ),
        Err(err) => (
            StatusCode::BAD_REQUEST,
            minijinja::context! {
                error => format!("{err:#}"),
            },
        ),
    };
    console.render_status(
        status,
        "preview.html",
        minijinja::context! {
            nav => "editions",
            e => minijinja::context! { slug => e.slug.as_str(), name => e.name },
            subscriber => subscriber.unwrap_or_default(),
            ..ctx
        },
    )
}

/// The digest's HTML alone, for the preview's sandboxed frame.
pub async fn preview_frame(
    console: Console,
    Path(slug): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let e = match edition(&console, &slug) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let subscriber = preview_subscriber(&q);
    let snapshot = console.state.snapshot();
    let result = crate::editions::preview::preview(
        &console.settings,
        Some(&console.state.db),
        &snapshot.catalog,
        &e,
        subscriber.as_deref(),
        Utc::now(),
    )
    .await;
    let (status, html) = match result {
        Ok(p) => (StatusCode::OK, p.digest.html),
        Err(err) => (
            StatusCode::BAD_REQUEST,
            format!(
                "<!doctype html><title>No preview</title><p>{}</p>",
                minijinja::HtmlEscape(&format!("{err:#}"))
            ),
        ),
    };
    let mut resp = (status, Html(html)).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(FRAME_CSP),
    );
    h.insert(
        header::X_FRAME_OPTIONS,
        HeaderValue::from_static("SAMEORIGIN"),
    );
    resp
}

/// What a run of `e` now would queue, queueing nothing.
async fn dry(console: &Console, e: &Edition) -> anyhow::Result<RunReport> {
    let snapshot = console.state.snapshot();
    run_edition(
        &console.state.db,
        &console.settings,
        &snapshot.catalog,
        e,
        "dry-run",
        Utc::now(),
        true,
    )
    .await
}

pub async fn dry_run(
    console: Console,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let e = match edition(&console, &slug) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if let Err(r) = console.form(&headers, &body) {
        return r;
    }
    match dry(&console, &e).await {
        Ok(report) => {
            console
                .audit(
                    "edition.dry-run",
                    e.slug.as_str(),
                    &format!(
                        "would send {} digests, {} distinct bodies",
                        report.enqueued, report.rendered
                    ),
                )
                .await;
            edition_page(&console, &e, None, Some(&report)).await
        }
        Err(err) => console.internal(&format!("{err:#}")),
    }
}

pub async fn send_confirm(console: Console, Path(slug): Path<String>) -> Response {
    let e = match edition(&console, &slug) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let report = match dry(&console, &e).await {
        Ok(r) => r,
        Err(err) => return console.internal(&format!("{err:#}")),
    };
    let back = format!("/admin/editions/{}", e.slug);
    if report.enqueued == 0 {
        return console.message(
            StatusCode::OK,
            &format!("Nothing to send in {}", e.name),
            &format!(
                "No subscriber of {} has anything new: a run now would queue no digest ({} subscribers looked at).",
                e.slug, report.subscribers
            ),
            &back,
        );
    }
    console.render(
        "message.html",
        minijinja::context! {
            heading => format!("Send {} now?", e.name),
            text => format!(
                "This queues {} digests ({} distinct bodies) to {} subscribers at once, outside the schedule. The next scheduled run sends only what is new after this one.",
                report.enqueued, report.rendered, report.enqueued
            ),
            back => views::url(&back),
            confirm => minijinja::context! {
                action => views::url(&format!("/admin/editions/{}/send", e.slug)),
                label => format!("Send {} digests now", report.enqueued),
                id => "send",
                expected => report.enqueued,
            },
        },
    )
}

pub async fn send(
    console: Console,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let e = match edition(&console, &slug) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let fields = match console.form(&headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let back = format!("/admin/editions/{}", e.slug);
    if fields.get("confirm") != Some("yes") {
        return console.message(
            StatusCode::BAD_REQUEST,
            "Nothing was sent",
            "Sending now needs the confirmation step: use the Send now button on the edition's page.",
            &back,
        );
    }
    let now = Utc::now();
    let window = format!("manual:{}", now.format("%Y-%m-%dT%H:%M:%S%.3fZ"));
    let expected = fields.get("expected").unwrap_or("?").to_owned();
    console
        .audit(
            "edition.send",
            e.slug.as_str(),
            &format!("run {window} started (confirmed for {expected} digests)"),
        )
        .await;
    let (db, settings, signals) = (
        console.state.db.clone(),
        console.settings.clone(),
        console.state.signals.clone(),
    );
    let catalog = Arc::clone(&console.state.snapshot().catalog);
    // The run may take minutes on a large list; the page does not wait.
    tokio::spawn(async move {
        match run_edition(&db, &settings, &catalog, &e, &window, now, false).await {
            Ok(r) => {
                tracing::info!(edition = %e.slug, window, enqueued = r.enqueued, "edition sent from the console")
            }
            Err(err) => {
                tracing::error!(edition = %e.slug, window, error = %format!("{err:#}"), "edition run from the console failed")
            }
        }
        signals.outbox_queued();
    });
    Redirect::to(&format!("{back}?notice=sending")).into_response()
}

pub async fn pause(
    console: Console,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let e = match edition(&console, &slug) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let fields = match console.form(&headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let why = fields
        .get("reason")
        .unwrap_or("")
        .trim()
        .chars()
        .take(200)
        .collect::<String>();
    let reason = format!(
        "paused by operator {}{}; resume it on its console page or with `casewire digest resume {}`",
        console.session.name,
        if why.is_empty() { String::new() } else { format!(": {why}") },
        e.slug
    );
    let done = async {
        let db = &console.state.db;
        let _turn = db.write_turn().await;
        let mut conn = db.pool.acquire().await?;
        crate::store::edition_pauses::pause(&mut conn, e.slug.as_str(), &reason, Utc::now()).await
    }
    .await;
    match done {
        Ok(()) => {
            console.audit("edition.pause", e.slug.as_str(), &why).await;
            Redirect::to(&format!("/admin/editions/{}?notice=paused", e.slug)).into_response()
        }
        Err(err) => console.internal(&err),
    }
}

pub async fn resume(
    console: Console,
    Path(slug): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let e = match edition(&console, &slug) {
        Ok(e) => e,
        Err(r) => return r,
    };
    if let Err(r) = console.form(&headers, &body) {
        return r;
    }
    let resumed = {
        let _turn = console.state.db.write_turn().await;
        crate::store::edition_pauses::resume(&console.state.db, e.slug.as_str()).await
    };
    match resumed {
        Ok(Some(reason)) => {
            console.state.signals.outbox_queued();
            console
                .audit(
                    "edition.resume",
                    e.slug.as_str(),
                    &format!("was paused: {reason}"),
                )
                .await;
            Redirect::to(&format!("/admin/editions/{}?notice=resumed", e.slug)).into_response()
        }
        Ok(None) => {
            Redirect::to(&format!("/admin/editions/{}?notice=not-paused", e.slug)).into_response()
        }
        Err(err) => console.internal(&err),
    }
}
