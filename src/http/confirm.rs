//! `GET /confirm/{token}` shows a button and changes nothing (mail scanners
//! fetch every link); `POST /confirm/{token}` confirms, and again is fine.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;

use super::respond::{Problem, Responder};
use super::AppState;
use crate::store::subscribers::Purpose;
use crate::subscribers::{self, link, views};

pub async fn show(
    State(state): State<AppState>,
    Path(token): Path<String>,
    r: Responder,
) -> Response {
    match subscribers::by_token(
        &state.db,
        &state.links,
        &token,
        Purpose::Confirm,
        chrono::Utc::now(),
    )
    .await
    {
        Ok(_) if r.json => r.json(
            StatusCode::OK,
            serde_json::json!({ "status": "valid", "action": "POST to this URL to confirm" }),
        ),
        Ok(_) => r.page(
            StatusCode::OK,
            "pages/confirm.html",
            minijinja::context! { action => views::url(&token) },
        ),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

pub async fn submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    r: Responder,
) -> Response {
    let now = chrono::Utc::now();
    let result = subscribers::confirm(&state.db, &state.links, &token, now).await;
    if let Ok((s, _)) = &result {
        let snapshot = state.snapshot();
        match subscribers::welcome::queue_welcome(&r.settings, &state.db, &snapshot.catalog, s, now)
            .await
        {
            Ok(true) => state.signals.outbox_queued(),
            Ok(false) => {}
            // The subscription stands; only the welcome is lost.
            Err(e) => tracing::error!(
                "cannot queue the welcome message to subscriber {}: {e:#}",
                s.id
            ),
        }
    }
    match result {
        Ok((s, manage)) if r.json => r.json(
            StatusCode::OK,
            serde_json::json!({
                "status": "confirmed",
                "email": s.email,
                "preferences_url": link(&r.settings, &format!("preferences/{manage}")),
            }),
        ),
        Ok((s, manage)) => r.page(
            StatusCode::OK,
            "pages/confirmed.html",
            minijinja::context! {
                name => s.name,
                email => s.email,
                preferences_url => views::url(&format!("../preferences/{manage}")),
            },
        ),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}
