//! The admin API under `/api/v1/subscribers`, behind
//! `Authorization: Bearer <[http] admin_token>` (compared in constant time).
//! Without a configured token the API does not exist (404).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::respond::{read_fields, Problem, Responder};
use super::AppState;
use crate::store::subscribers::{self as store, Status};
use crate::subscribers::{self, import, SignUp};

fn responder(state: &AppState) -> Responder {
    Responder {
        settings: state.snapshot().settings.clone(),
        json: true,
    }
}

/// Equal-length digests compared without an early exit, so the time taken
/// says nothing about how much of a guess was right.
fn same_secret(a: &str, b: &str) -> bool {
    let (x, y) = (Sha256::digest(a.as_bytes()), Sha256::digest(b.as_bytes()));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// The refusal to send, or None when the request carries the admin token.
fn refuse(r: &Responder, headers: &HeaderMap) -> Option<Response> {
    let Some(expected) = r.settings.http.admin_token.as_deref() else {
        return Some(r.problem(Problem::new(
            StatusCode::NOT_FOUND,
            "the admin API is disabled: set [http] admin_token (CASEWIRE_HTTP__ADMIN_TOKEN) to enable it",
        )));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(t) if same_secret(t, expected) => None,
        _ => {
            let mut resp = r.problem(Problem::new(
                StatusCode::UNAUTHORIZED,
                "missing or wrong token: send Authorization: Bearer <admin_token>",
            ));
            resp.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer realm=\"casewire\""),
            );
            Some(resp)
        }
    }
}

fn number(q: &HashMap<String, String>, key: &str, default: i64, max: i64) -> Result<i64, Problem> {
    match q.get(key) {
        None => Ok(default),
        Some(v) => match v.parse::<i64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(Problem::new(
                StatusCode::BAD_REQUEST,
                format!(
                    "{key}: {:?} is not a number from 1 to {max}",
                    v.chars().take(40).collect::<String>()
                ),
            )),
        },
    }
}

pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let r = responder(&state);
    if let Some(resp) = refuse(&r, &headers) {
        return resp;
    }
    let (page, per_page) = match (
        number(&q, "page", 1, 1_000_000),
        number(&q, "per_page", 50, 500),
    ) {
        (Ok(p), Ok(n)) => (p, n),
        (Err(e), _) | (_, Err(e)) => return r.problem(e),
    };
    let search = q.get("search").map(|s| s.trim()).filter(|s| !s.is_empty());
    if search.is_some_and(|s| s.chars().count() > 254 || s.chars().any(char::is_control)) {
        return r.problem(Problem::new(
            StatusCode::BAD_REQUEST,
            "search: at most 254 characters, no control characters",
        ));
    }
    let result = async {
        let mut conn = state.db.pool.acquire().await?;
        store::list(&mut conn, search, per_page, (page - 1) * per_page).await
    }
    .await;
    match result {
        Ok((items, total)) => r.json(
            StatusCode::OK,
            serde_json::json!({
                "items": items,
                "page": page,
                "per_page": per_page,
                "total": total,
                "pages": (total + per_page - 1) / per_page,
            }),
        ),
        Err(e) => r.problem(Problem::internal(&e)),
    }
}

pub async fn get_one(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    let r = responder(&state);
    if let Some(resp) = refuse(&r, &headers) {
        return resp;
    }
    match subscribers::find(&state.db, &key).await {
        Ok(s) => r.json(StatusCode::OK, serde_json::json!(s)),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

pub async fn create(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let r = responder(&state);
    if let Some(resp) = refuse(&r, &headers) {
        return resp;
    }
    let (fields, _) = match read_fields(&headers, &body) {
        Ok(f) => f,
        Err(p) => return r.problem(p),
    };
    let Some(status) = Status::parse(fields.get("status").unwrap_or("confirmed")) else {
        return r.problem(Problem::new(
            StatusCode::BAD_REQUEST,
            "status: expected confirmed, pending or unsubscribed",
        ));
    };
    let mut editions = fields.all("editions");
    editions.extend(fields.all("edition"));
    let req = SignUp {
        email: fields.get("email").unwrap_or("").to_owned(),
        name: fields.get("name").unwrap_or("").to_owned(),
        categories: fields.all("categories"),
        editions,
        timezone: fields.get("timezone").unwrap_or("").to_owned(),
    };
    match subscribers::add(
        &r.settings,
        &state.db,
        &req,
        status,
        "api",
        chrono::Utc::now(),
    )
    .await
    {
        Ok(s) => {
            // A pending subscriber's confirmation may be queued.
            state.signals.outbox_queued();
            r.json(StatusCode::CREATED, serde_json::json!(s))
        }
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

/// `PATCH /api/v1/subscribers/{key}` with a JSON object: `{"timezone":
/// "Asia/Kolkata"}` sets the subscriber's zone, `{"timezone": null}` (or
/// `""`) goes back to each edition's own zone. The answer is the subscriber.
pub async fn update(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    body: Bytes,
) -> Response {
    let r = responder(&state);
    if let Some(resp) = refuse(&r, &headers) {
        return resp;
    }
    let bad = |message: String| r.problem(Problem::new(StatusCode::BAD_REQUEST, message));
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice::<serde_json::Value>(&body)
    else {
        return bad(
            "send a JSON object with Content-Type: application/json, e.g. {\"timezone\": \"Asia/Kolkata\"}".into(),
        );
    };
    if let Some(other) = map.keys().find(|k| k.as_str() != "timezone") {
        let shown: String = other.chars().take(40).collect();
        return bad(format!(
            "{shown:?} cannot be changed here: only \"timezone\" can (categories and editions change on the subscriber's preferences page)"
        ));
    }
    let timezone = match map.get("timezone") {
        None => {
            return bad(
                "nothing to change: send {\"timezone\": \"Europe/Berlin\"} or {\"timezone\": null}"
                    .into(),
            )
        }
        Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.as_str()),
        Some(_) => {
            return bad("timezone: expected a zone name such as \"Asia/Kolkata\", or null".into())
        }
    };
    match subscribers::set_timezone(&state.db, &key, timezone).await {
        Ok(s) => r.json(StatusCode::OK, serde_json::json!(s)),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
) -> Response {
    let r = responder(&state);
    if let Some(resp) = refuse(&r, &headers) {
        return resp;
    }
    match subscribers::erase(&state.db, &key).await {
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

/// CSV in the body (at most the server's 64 KiB body limit; use
/// `casewire subscribers import` for large files).
pub async fn import_csv(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = responder(&state);
    if let Some(resp) = refuse(&r, &headers) {
        return resp;
    }
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if !(ct.starts_with("text/csv")
        || ct.starts_with("application/csv")
        || ct.starts_with("text/plain"))
    {
        return r.problem(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send the CSV with Content-Type: text/csv (header: email,name,categories,editions,status,timezone)",
        ));
    }
    match import::import(
        &r.settings,
        &state.db,
        body.as_ref(),
        "import",
        chrono::Utc::now(),
        |_| {},
    )
    .await
    {
        Ok(report) => {
            state.signals.outbox_queued();
            r.json(StatusCode::OK, serde_json::json!(report))
        }
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

pub async fn export_csv(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let r = responder(&state);
    if let Some(resp) = refuse(&r, &headers) {
        return resp;
    }
    let mut out = Vec::new();
    match import::export(&state.db, &mut out).await {
        Ok(_) => (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"subscribers.csv\"",
                ),
                (header::CACHE_CONTROL, "no-store"),
            ],
            out,
        )
            .into_response(),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}
