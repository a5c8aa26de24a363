//! Subscribers: search by address or name, filters by status, category and
//! edition, keyset pages (`?after=ID`, never OFFSET), one subscriber's page
//! (choices, status history, the messages queued for them), the actions on
//! them, and CSV import (with a summary of what happened to each line) and
//! export, through `subscribers::import`.
//!
//! The audit log names a subscriber by id (`subscriber:42`), not by
//! address, so erasing someone leaves no address behind in it.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Multipart, Path, Query};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::Value;

use super::{notice, when, Console};
use crate::store::admin::{self as store, SubscriberFilter};
use crate::store::subscribers::Status;
use crate::subscribers::{import, views, SubscriberError};

/// Subscribers per page.
const PAGE: i64 = 50;

fn target(id: i64) -> String {
    format!("subscriber:{id}")
}

/// A 4xx page for a service error, or the opaque 500.
fn service_error(console: &Console, e: SubscriberError, back: &str) -> Response {
    match e {
        SubscriberError::Invalid { field, message } => console.message(
            StatusCode::BAD_REQUEST,
            "That did not work",
            &format!("{field}: {message}"),
            back,
        ),
        SubscriberError::NotFound(what) => console.message(
            StatusCode::NOT_FOUND,
            "No such subscriber",
            &format!("There is no subscriber {what:?} (erased, or never there)."),
            "/admin/subscribers",
        ),
        other => console.internal(&other),
    }
}

pub async fn list(console: Console, Query(q): Query<HashMap<String, String>>) -> Response {
    let settings = &console.settings;
    let text = |k: &str| {
        q.get(k)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let search = text("q");
    if search
        .as_deref()
        .is_some_and(|s| s.chars().count() > 254 || s.chars().any(char::is_control))
    {
        return console.message(
            StatusCode::BAD_REQUEST,
            "That search did not work",
            "search: at most 254 characters, no control characters",
            "/admin/subscribers",
        );
    }
    let status = match text("status") {
        None => None,
        Some(s) => match Status::parse(&s) {
            Some(st) => Some(st),
            None => {
                return console.message(
                    StatusCode::BAD_REQUEST,
                    "That filter did not work",
                    "status: expected pending, confirmed or unsubscribed",
                    "/admin/subscribers",
                )
            }
        },
    };
    let category = text("category");
    if let Some(c) = &category {
        if settings.category(c).is_none() {
            return console.message(
                StatusCode::BAD_REQUEST,
                "That filter did not work",
                &format!(
                    "category: {:?} is not a configured category",
                    c.chars().take(60).collect::<String>()
                ),
                "/admin/subscribers",
            );
        }
    }
    let edition = text("edition");
    if let Some(e) = &edition {
        if settings.edition(e).is_none() {
            return console.message(
                StatusCode::BAD_REQUEST,
                "That filter did not work",
                &format!(
                    "edition: {:?} is not a configured edition",
                    e.chars().take(60).collect::<String>()
                ),
                "/admin/subscribers",
            );
        }
    }
    let after = match text("after").map(|a| a.parse::<i64>()) {
        None => 0,
        Some(Ok(n)) if n >= 0 => n,
        Some(_) => {
            return console.message(
                StatusCode::BAD_REQUEST,
                "That page does not exist",
                "after: expected a subscriber id",
                "/admin/subscribers",
            )
        }
    };
    let filter = SubscriberFilter {
        search: search.clone(),
        status,
        category: category.clone(),
        edition: edition.clone(),
    };
    let (page, more) = match store::subscriber_page(&console.state.db, &filter, after, PAGE).await {
        Ok(p) => p,
        Err(e) => return console.internal(&e),
    };
    // The link to the next page keeps the filters.
    let mut params: Vec<(&str, String)> = Vec::new();
    for (k, v) in [
        ("q", &search),
        ("status", &filter.status.map(|s| s.as_str().to_owned())),
        ("category", &category),
        ("edition", &edition),
    ] {
        if let Some(v) = v {
            params.push((k, v.clone()));
        }
    }
    let next = more.then(|| {
        let mut p = params.clone();
        p.push(("after", page.last().map(|s| s.id).unwrap_or(0).to_string()));
        format!(
            "/admin/subscribers?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(p)
                .finish()
        )
    });
    let first = (after > 0).then(|| {
        format!(
            "/admin/subscribers?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.clone())
                .finish()
        )
    });
    let rows: Vec<_> = page
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "email": s.email,
                "name": s.name,
                "status": s.status.as_str(),
                "categories": if s.categories.is_empty() { "all".to_owned() } else { s.categories.join(", ") },
                "editions": s.editions.join(", "),
                "created": s.created_at.format("%Y-%m-%d").to_string(),
            })
        })
        .collect();
    console.render(
        "subscribers.html",
        minijinja::context! {
            nav => "subscribers",
            notice => notice(q.get("notice")),
            rows => Value::from_serialize(rows),
            q => search.unwrap_or_default(),
            status => filter.status.map(|s| s.as_str()).unwrap_or(""),
            category => category.unwrap_or_default(),
            edition => edition.unwrap_or_default(),
            categories => Value::from_serialize(settings.categories.iter().map(|c| serde_json::json!({"slug": c.slug.as_str(), "name": c.name})).collect::<Vec<_>>()),
            editions => Value::from_serialize(settings.editions.iter().map(|e| serde_json::json!({"slug": e.slug.as_str(), "name": e.name})).collect::<Vec<_>>()),
            next => next.map(|u| views::url(&u)),
            first => first.map(|u| views::url(&u)),
            filtered => after > 0 || !params.is_empty(),
        },
    )
}

fn parse_id(console: &Console, id: &str) -> Result<i64, Response> {
    id.parse::<i64>().map_err(|_| {
        console.message(
            StatusCode::NOT_FOUND,
            "No such subscriber",
            "Subscriber pages are /admin/subscribers/ID.",
            "/admin/subscribers",
        )
    })
}

pub async fn show(
    console: Console,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let id = match parse_id(&console, &id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let db = &console.state.db;
    let found = async {
        let mut conn = db.pool.acquire().await?;
        crate::store::subscribers::find_by_id(&mut conn, id).await
    }
    .await;
    let s = match found {
        Ok(Some(s)) => s,
        Ok(None) => {
            return service_error(
                &console,
                SubscriberError::NotFound(id.to_string()),
                "/admin/subscribers",
            )
        }
        Err(e) => return console.internal(&e),
    };
    let settings = &console.settings;
    let details = async {
        let suppression = store::suppression_of(db, &s.email).await?;
        let messages = store::messages_of(db, s.id, 50).await?;
        let audit = store::audit_page(db, None, Some(&target(s.id)), None, 50).await?;
        let bounces = store::bounces_of(db, &s.email, 20).await?;
        Ok::<_, crate::store::StoreError>((suppression, messages, audit, bounces))
    }
    .await;
    let (suppression, messages, audit, bounces) = match details {
        Ok(d) => d,
        Err(e) => return console.internal(&e),
    };
    // What is recorded of their status over time, oldest first.
    let mut history: Vec<(chrono::DateTime<Utc>, String)> =
        vec![(s.created_at, format!("added (source: {})", s.source))];
    if let Some(t) = s.confirmed_at {
        history.push((t, "confirmed".into()));
    }
    if let Some(t) = s.unsubscribed_at {
        history.push((t, "unsubscribed".into()));
    }
    if let Some((reason, t)) = &suppression {
        history.push((*t, format!("suppressed: {reason}")));
    }
    for b in &bounces {
        history.push((
            b.at,
            format!(
                "{} bounce report ({}): {} {}",
                b.kind,
                b.source,
                b.status.as_deref().unwrap_or(""),
                b.diagnostic
            ),
        ));
    }
    for a in &audit {
        history.push((
            a.at,
            format!(
                "{} by {}{}",
                a.action,
                a.actor,
                if a.detail.is_empty() {
                    String::new()
                } else {
                    format!(": {}", a.detail)
                }
            ),
        ));
    }
    history.sort_by_key(|(t, _)| *t);
    let history: Vec<_> = history
        .into_iter()
        .map(|(t, what)| serde_json::json!({"at": when(t), "what": what}))
        .collect();
    let categories: Vec<_> = settings
        .categories
        .iter()
        .map(|c| {
            serde_json::json!({
                "slug": c.slug.as_str(),
                "name": c.name,
                "checked": s.categories.iter().any(|x| x == c.slug.as_str()),
            })
        })
        .collect();
    let editions: Vec<_> = settings
        .editions
        .iter()
        .map(|e| {
            serde_json::json!({
                "slug": e.slug.as_str(),
                "name": e.name,
                "checked": s.editions.iter().any(|x| x == e.slug.as_str()),
            })
        })
        .collect();
    let messages: Vec<_> = messages
        .iter()
        .map(|m| {
            serde_json::json!({
                "id": m.id,
                "kind": m.kind,
                "edition": m.edition,
                "state": m.state,
                "attempts": m.attempts,
                "queued": when(m.created_at),
                "sent": m.sent_at.map(when),
                "error": m.last_error,
            })
        })
        .collect();
    console.render(
        "subscriber.html",
        minijinja::context! {
            nav => "subscribers",
            notice => notice(q.get("notice")),
            s => minijinja::context! {
                id => s.id,
                email => s.email,
                name => s.name,
                status => s.status.as_str(),
                source => s.source,
                created => when(s.created_at),
                follows_all => s.categories.is_empty(),
            },
            suppressed => suppression.map(|(r, _)| r),
            categories => Value::from_serialize(categories),
            editions => Value::from_serialize(editions),
            history => Value::from_serialize(history),
            messages => Value::from_serialize(messages),
        },
    )
}

pub async fn choices(
    console: Console,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match parse_id(&console, &id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let fields = match console.form(&headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let back = format!("/admin/subscribers/{id}");
    let categories = fields.all("categories");
    let editions = fields.all("editions");
    if editions.is_empty() {
        return console.message(
            StatusCode::BAD_REQUEST,
            "Nothing was changed",
            "editions: choose at least one edition (to stop all mail, unsubscribe them instead)",
            &back,
        );
    }
    match crate::subscribers::set_choices(
        &console.settings,
        &console.state.db,
        id,
        &categories,
        &editions,
    )
    .await
    {
        Ok(s) => {
            let detail = format!(
                "categories: {}; editions: {}",
                if s.categories.is_empty() {
                    "all".to_owned()
                } else {
                    s.categories.join(", ")
                },
                s.editions.join(", ")
            );
            console
                .audit("subscriber.choices", &target(id), &detail)
                .await;
            Redirect::to(&format!("{back}?notice=saved")).into_response()
        }
        Err(e) => service_error(&console, e, &back),
    }
}

pub async fn unsubscribe(
    console: Console,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match parse_id(&console, &id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if let Err(r) = console.form(&headers, &body) {
        return r;
    }
    match crate::subscribers::unsubscribe_by_id(&console.state.db, id, Utc::now()).await {
        Ok(changed) => {
            if changed {
                console
                    .audit("subscriber.unsubscribe", &target(id), "")
                    .await;
            }
            let code = if changed {
                "unsubscribed"
            } else {
                "already-unsubscribed"
            };
            Redirect::to(&format!("/admin/subscribers/{id}?notice={code}")).into_response()
        }
        Err(e) => service_error(&console, e, &format!("/admin/subscribers/{id}")),
    }
}

pub async fn resend(
    console: Console,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match parse_id(&console, &id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if let Err(r) = console.form(&headers, &body) {
        return r;
    }
    match crate::subscribers::resend_confirmation(&console.state.db, id, Utc::now()).await {
        Ok(_) => {
            console.state.signals.outbox_queued();
            console
                .audit("subscriber.resend-confirmation", &target(id), "")
                .await;
            Redirect::to(&format!("/admin/subscribers/{id}?notice=resent")).into_response()
        }
        Err(e) => service_error(&console, e, &format!("/admin/subscribers/{id}")),
    }
}

pub async fn erase_confirm(console: Console, Path(id): Path<String>) -> Response {
    let id = match parse_id(&console, &id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    let s = match crate::subscribers::find(&console.state.db, &id.to_string()).await {
        Ok(s) => s,
        Err(e) => return service_error(&console, e, "/admin/subscribers"),
    };
    console.render(
        "message.html",
        minijinja::context! {
            heading => format!("Erase {}?", s.email),
            text => "This deletes the subscriber, their choices and every message queued for them, as `casewire subscribers remove` does. A suppression of the address stays. It cannot be undone.",
            back => views::url(&format!("/admin/subscribers/{id}")),
            confirm => minijinja::context! {
                action => views::url(&format!("/admin/subscribers/{id}/erase")),
                label => format!("Erase {}", s.email),
                id => "erase",
            },
        },
    )
}

pub async fn erase(
    console: Console,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let id = match parse_id(&console, &id) {
        Ok(i) => i,
        Err(r) => return r,
    };
    if let Err(r) = console.form(&headers, &body) {
        return r;
    }
    match crate::subscribers::erase(&console.state.db, &id.to_string()).await {
        Ok(_) => {
            console
                .audit("subscriber.erase", &target(id), "personal data erased")
                .await;
            Redirect::to("/admin/subscribers?notice=erased").into_response()
        }
        Err(e) => service_error(&console, e, &format!("/admin/subscribers/{id}")),
    }
}

pub async fn export(console: Console) -> Response {
    let mut out = Vec::new();
    match import::export(&console.state.db, &mut out).await {
        Ok(n) => {
            console
                .audit("subscribers.export", "subscribers", &format!("{n} rows"))
                .await;
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"subscribers.csv\"",
                    ),
                ],
                out,
            )
                .into_response()
        }
        Err(e) => service_error(&console, e, "/admin/subscribers"),
    }
}

pub async fn import_form(console: Console) -> Response {
    console.render(
        "import.html",
        minijinja::context! {
            nav => "subscribers",
            header => import::HEADER.join(","),
            report => Option::<Value>::None,
            error => Option::<String>::None,
        },
    )
}

/// `multipart/form-data` with the CSRF token and the file (`file`).
pub async fn import(console: Console, mut multipart: Multipart) -> Response {
    let mut csrf = String::new();
    let mut file: Option<(String, Bytes)> = None;
    loop {
        match multipart.next_field().await {
            Ok(Some(field)) => {
                let name = field.name().unwrap_or("").to_owned();
                let file_name = field.file_name().unwrap_or("").to_owned();
                let data = match field.bytes().await {
                    Ok(d) => d,
                    Err(e) => {
                        return import_error(
                            &console,
                            StatusCode::BAD_REQUEST,
                            &format!("the upload broke off: {e}"),
                        )
                    }
                };
                match name.as_str() {
                    super::CSRF_FIELD => csrf = String::from_utf8_lossy(&data).into_owned(),
                    "file" => file = Some((file_name, data)),
                    _ => {}
                }
            }
            Ok(None) => break,
            Err(e) => {
                return import_error(
                    &console,
                    e.status(),
                    &format!(
                        "the upload could not be read ({e}); files up to {} MiB are accepted",
                        super::IMPORT_LIMIT / (1024 * 1024)
                    ),
                )
            }
        }
    }
    if let Err(r) = console.check_csrf(&csrf) {
        return r;
    }
    let Some((file_name, data)) = file.filter(|(_, d)| !d.is_empty()) else {
        return import_error(
            &console,
            StatusCode::BAD_REQUEST,
            "choose a CSV file to import",
        );
    };
    let report = import::import(
        &console.settings,
        &console.state.db,
        data.as_ref(),
        "import",
        Utc::now(),
        |_| {},
    )
    .await;
    match report {
        Ok(report) => {
            console.state.signals.outbox_queued();
            let detail = format!(
                "{}: {} added, {} unchanged, {} rejected",
                file_name.chars().take(100).collect::<String>(),
                report.imported,
                report.unchanged,
                report.errors.len()
            );
            console
                .audit("subscribers.import", "subscribers", &detail)
                .await;
            console.render(
                "import.html",
                minijinja::context! {
                    nav => "subscribers",
                    header => import::HEADER.join(","),
                    file_name,
                    report => Value::from_serialize(serde_json::json!({
                        "added": report.imported,
                        "updated": 0,
                        "unchanged": report.unchanged,
                        "rejected": report.errors,
                    })),
                    error => Option::<String>::None,
                },
            )
        }
        Err(SubscriberError::Invalid { message, .. }) => import_error(
            &console,
            StatusCode::BAD_REQUEST,
            &format!("{file_name}: {message}"),
        ),
        Err(e) => console.internal(&e),
    }
}

fn import_error(console: &Console, status: StatusCode, error: &str) -> Response {
    console.render_status(
        status,
        "import.html",
        minijinja::context! {
            nav => "subscribers",
            header => import::HEADER.join(","),
            report => Option::<Value>::None,
            error,
        },
    )
}
