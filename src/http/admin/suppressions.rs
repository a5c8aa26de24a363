//! Suppressions (the addresses nothing is sent to) with filters, keyset
//! pages by address, removal with a reason, adding one, and export; and the
//! bounce and complaint reports that caused most of them.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::Query;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use minijinja::Value;

use super::{notice, when, Console};
use crate::domain::EmailAddress;
use crate::store::admin as store;
use crate::subscribers::views;

const PAGE: i64 = 100;

/// The reason filters offered, each a text the stored reason contains.
const REASONS: [(&str, &str); 4] = [
    ("hard", "hard bounce"),
    ("soft", "soft bounces"),
    ("complaint", "complaint"),
    ("operator", "operator"),
];

pub async fn list(console: Console, Query(q): Query<HashMap<String, String>>) -> Response {
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
            "/admin/suppressions",
        );
    }
    let reason = text("reason");
    let reason_text = match reason.as_deref() {
        None => None,
        Some(r) => match REASONS.iter().find(|(k, _)| *k == r) {
            Some((_, t)) => Some(*t),
            None => {
                return console.message(
                    StatusCode::BAD_REQUEST,
                    "That filter did not work",
                    "reason: expected hard, soft, complaint or operator",
                    "/admin/suppressions",
                )
            }
        },
    };
    let after = text("after").unwrap_or_default();
    let (rows, more) = match store::suppression_page(
        &console.state.db,
        search.as_deref(),
        reason_text,
        &after,
        PAGE,
    )
    .await
    {
        Ok(r) => r,
        Err(e) => return console.internal(&e),
    };
    let next = more.then(|| {
        let mut p: Vec<(&str, String)> = Vec::new();
        if let Some(s) = &search {
            p.push(("q", s.clone()));
        }
        if let Some(r) = &reason {
            p.push(("reason", r.clone()));
        }
        p.push((
            "after",
            rows.last().map(|r| r.0.clone()).unwrap_or_default(),
        ));
        format!(
            "/admin/suppressions?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(p)
                .finish()
        )
    });
    let rows: Vec<_> = rows
        .iter()
        .map(|(email, reason, at)| serde_json::json!({"email": email, "reason": reason, "since": when(*at)}))
        .collect();
    console.render(
        "suppressions.html",
        minijinja::context! {
            nav => "suppressions",
            notice => notice(q.get("notice")),
            rows => Value::from_serialize(rows),
            q => search.unwrap_or_default(),
            reason => reason.unwrap_or_default(),
            reasons => REASONS.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
            next => next.map(|u| views::url(&u)),
            paged => !after.is_empty(),
        },
    )
}

fn address(console: &Console, text: &str) -> Result<EmailAddress, Response> {
    EmailAddress::parse(text).map_err(|e| {
        console.message(
            StatusCode::BAD_REQUEST,
            "Nothing was changed",
            &format!("email: {e}"),
            "/admin/suppressions",
        )
    })
}

/// A reason an operator typed: required, one line, at most 200 characters.
fn reason(console: &Console, text: Option<&str>) -> Result<String, Response> {
    let r = text.unwrap_or("").trim();
    if r.is_empty() || r.chars().count() > 200 || r.chars().any(char::is_control) {
        return Err(console.message(
            StatusCode::BAD_REQUEST,
            "Nothing was changed",
            "reason: say why, in one line of at most 200 characters (it goes to the audit log)",
            "/admin/suppressions",
        ));
    }
    Ok(r.to_owned())
}

pub async fn remove(console: Console, headers: HeaderMap, body: Bytes) -> Response {
    let fields = match console.form(&headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let email = match address(&console, fields.get("email").unwrap_or("")) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let why = match reason(&console, fields.get("reason")) {
        Ok(r) => r,
        Err(r) => return r,
    };
    match crate::store::bounces::unsuppress(&console.state.db, email.as_str()).await {
        Ok(true) => {
            console
                .audit("suppression.remove", email.as_str(), &why)
                .await;
            Redirect::to("/admin/suppressions?notice=removed").into_response()
        }
        Ok(false) => Redirect::to("/admin/suppressions?notice=not-suppressed").into_response(),
        Err(e) => console.internal(&e),
    }
}

pub async fn add(console: Console, headers: HeaderMap, body: Bytes) -> Response {
    let fields = match console.form(&headers, &body) {
        Ok(f) => f,
        Err(r) => return r,
    };
    let email = match address(&console, fields.get("email").unwrap_or("")) {
        Ok(e) => e,
        Err(r) => return r,
    };
    let why = match reason(&console, fields.get("reason")) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let stored = format!("added by operator {}: {why}", console.session.name);
    let done = async {
        let db = &console.state.db;
        let _turn = db.write_turn().await;
        let mut conn = db.pool.acquire().await?;
        crate::store::subscribers::suppress(&mut conn, email.as_str(), &stored, Utc::now()).await
    }
    .await;
    match done {
        Ok(()) => {
            console.audit("suppression.add", email.as_str(), &why).await;
            Redirect::to("/admin/suppressions?notice=suppressed").into_response()
        }
        Err(e) => console.internal(&e),
    }
}

pub async fn export(console: Console) -> Response {
    let mut out = csv::Writer::from_writer(Vec::new());
    let mut after = String::new();
    let mut n = 0usize;
    let _ = out.write_record(["email", "reason", "since"]);
    loop {
        let (rows, more) =
            match store::suppression_page(&console.state.db, None, None, &after, 1000).await {
                Ok(r) => r,
                Err(e) => return console.internal(&e),
            };
        for (email, reason, at) in &rows {
            let _ = out.write_record([
                crate::subscribers::import::escape_cell(email.clone()),
                crate::subscribers::import::escape_cell(reason.clone()),
                at.to_rfc3339(),
            ]);
        }
        n += rows.len();
        match rows.last() {
            Some(last) if more => after = last.0.clone(),
            _ => break,
        }
    }
    let body = out.into_inner().unwrap_or_default();
    console
        .audit("suppressions.export", "suppressions", &format!("{n} rows"))
        .await;
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"suppressions.csv\"",
            ),
        ],
        body,
    )
        .into_response()
}

pub async fn bounces(console: Console, Query(q): Query<HashMap<String, String>>) -> Response {
    let kind = match q.get("kind").map(String::as_str).filter(|k| !k.is_empty()) {
        None => None,
        Some(k) => match crate::bounces::Kind::parse(k) {
            Some(k) => Some(k),
            None => {
                return console.message(
                    StatusCode::BAD_REQUEST,
                    "That filter did not work",
                    "kind: expected hard, soft or complaint",
                    "/admin/bounces",
                )
            }
        },
    };
    let events = match crate::store::bounces::list(&console.state.db, None, kind, 200).await {
        Ok(e) => e,
        Err(e) => return console.internal(&e),
    };
    let rows: Vec<_> = events
        .iter()
        .map(|e| {
            serde_json::json!({
                "at": when(e.at), "email": e.email, "kind": e.kind, "status": e.status,
                "diagnostic": e.diagnostic, "source": e.source, "edition": e.edition,
            })
        })
        .collect();
    console.render(
        "bounces.html",
        minijinja::context! {
            nav => "suppressions",
            rows => Value::from_serialize(rows),
            kind => kind.map(|k| k.as_str()).unwrap_or(""),
        },
    )
}
