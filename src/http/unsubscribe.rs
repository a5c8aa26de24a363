//! `GET /unsubscribe/{token}` shows a button; `POST /unsubscribe/{token}`
//! unsubscribes. The POST also serves RFC 8058 one-click requests (body
//! `List-Unsubscribe=One-Click`): no cookie, no form token, answer 200 and
//! never a redirect. The status change has committed when the answer leaves.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::respond::{Problem, Responder};
use super::AppState;
use crate::store::subscribers::{Purpose, Subscriber};
use crate::subscribers::{self, views};

pub async fn show(
    State(state): State<AppState>,
    Path(token): Path<String>,
    r: Responder,
) -> Response {
    match subscribers::by_token(&state.db, &state.links, &token, Purpose::Manage, chrono::Utc::now()).await {
        Ok(s) if r.json => r.json(
            StatusCode::OK,
            serde_json::json!({ "email": s.email, "status": s.status, "action": "POST to this URL to unsubscribe" }),
        ),
        Ok(s) => r.page(
            StatusCode::OK,
            "pages/unsubscribe.html",
            minijinja::context! {
                action => views::url(&token),
                email => s.email,
                preferences_url => views::url(&format!("../preferences/{token}")),
            },
        ),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

/// The body is not read: a one-click POST, a form button and a bare POST all unsubscribe.
pub async fn submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    r: Responder,
) -> Response {
    match subscribers::unsubscribe(&state.db, &state.links, &token, chrono::Utc::now()).await {
        Ok(s) => done(&r, &s),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

pub fn done(r: &Responder, s: &Subscriber) -> Response {
    let subscribe = subscribers::link(&r.settings, "subscribe");
    r.message(
        "You are unsubscribed",
        &[&format!(
            "{} will receive no more e-mail from {}.",
            s.email, r.settings.site.title
        )],
        Some((&subscribe, "Changed your mind? Subscribe again")),
        serde_json::json!({ "status": "unsubscribed", "email": s.email }),
    )
}
