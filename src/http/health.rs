//! `GET /healthz` and `GET /metrics` (Prometheus text format).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use super::AppState;

pub async fn healthz(State(state): State<AppState>) -> impl IntoResponse {
    let snapshot = state.snapshot();
    let db_ok = state.db.ping().await;
    let problems = state.health.problems();
    // Degraded but still 200 when a component has a problem the daemon
    // works around by itself (a paused relay): a restart would not help.
    let ok = db_ok && problems.is_empty();
    let body = serde_json::json!({
        "status": if ok { "ok" } else { "degraded" },
        "database": db_ok,
        "problems": problems,
        "case_studies": snapshot.catalog.len(),
        "content_problems": snapshot.catalog.problems.len(),
        "feeds": snapshot.feeds.len(),
        "built_at": snapshot.built_at.to_rfc3339(),
    });
    let status = if db_ok {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}

pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}
