//! The audit log: who did what, when, from where; newest first, keyset
//! pages (`?before=ID`), filtered by action or target.

use std::collections::HashMap;

use axum::extract::Query;
use axum::http::StatusCode;
use axum::response::Response;
use minijinja::Value;

use super::{when, Console};
use crate::subscribers::views;

const PAGE: i64 = 100;

pub async fn page(console: Console, Query(q): Query<HashMap<String, String>>) -> Response {
    let text = |k: &str| {
        q.get(k)
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    };
    let (action, target) = (text("action"), text("target"));
    if [&action, &target].iter().any(|v| {
        v.as_deref()
            .is_some_and(|s| s.chars().count() > 254 || s.chars().any(char::is_control))
    }) {
        return console.message(
            StatusCode::BAD_REQUEST,
            "That filter did not work",
            "action and target: at most 254 characters, no control characters",
            "/admin/audit",
        );
    }
    let before = match text("before").map(|b| b.parse::<i64>()) {
        None => None,
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => {
            return console.message(
                StatusCode::BAD_REQUEST,
                "That page does not exist",
                "before: expected an entry number",
                "/admin/audit",
            )
        }
    };
    let entries = match crate::store::admin::audit_page(
        &console.state.db,
        before,
        target.as_deref(),
        action.as_deref(),
        PAGE + 1,
    )
    .await
    {
        Ok(e) => e,
        Err(e) => return console.internal(&e),
    };
    let more = entries.len() as i64 > PAGE;
    let entries: Vec<_> = entries.into_iter().take(PAGE as usize).collect();
    let next = more.then(|| {
        let mut p: Vec<(&str, String)> = Vec::new();
        if let Some(a) = &action {
            p.push(("action", a.clone()));
        }
        if let Some(t) = &target {
            p.push(("target", t.clone()));
        }
        p.push((
            "before",
            entries.last().map(|e| e.id).unwrap_or(0).to_string(),
        ));
        format!(
            "/admin/audit?{}",
            url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(p)
                .finish()
        )
    });
    let rows: Vec<_> = entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "id": e.id, "at": when(e.at), "actor": e.actor, "action": e.action,
                "target": e.target, "detail": e.detail, "ip": e.ip,
            })
        })
        .collect();
    console.render(
        "audit.html",
        minijinja::context! {
            nav => "audit",
            rows => Value::from_serialize(rows),
            action => action.unwrap_or_default(),
            target => target.unwrap_or_default(),
            next => next.map(|u| views::url(&u)),
            paged => before.is_some(),
        },
    )
}
