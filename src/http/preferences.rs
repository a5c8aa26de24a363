//! `GET /preferences/{token}` shows the subscriber's categories and edition;
//! `POST /preferences/{token}` saves them, or unsubscribes with `action=unsubscribe`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;

use super::respond::{read_fields, wants_json, Problem, Responder};
use super::AppState;
use crate::store::subscribers::{Purpose, Subscriber};
use crate::subscribers::{self, views};

fn view(r: &Responder, s: &Subscriber, token: &str, saved: bool) -> Response {
    if r.json {
        return r.json(
            StatusCode::OK,
            serde_json::json!({
                "email": s.email,
                "status": s.status,
                "categories": s.categories,
                "editions": s.editions,
                "saved": saved,
            }),
        );
    }
    let ctx = minijinja::context! {
        action => views::url(token),
        unsubscribe_action => views::url(&format!("../unsubscribe/{token}")),
        email => s.email,
        status => s.status.as_str(),
        saved => saved,
        ..views::choices_context(&r.settings, &s.categories, s.editions.first().map(String::as_str))
    };
    r.page(StatusCode::OK, "pages/preferences.html", ctx)
}

pub async fn show(
    State(state): State<AppState>,
    Path(token): Path<String>,
    r: Responder,
) -> Response {
    match subscribers::by_token(
        &state.db,
        &state.links,
        &token,
        Purpose::Manage,
        chrono::Utc::now(),
    )
    .await
    {
        Ok(s) => view(&r, &s, &token, false),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

pub async fn submit(
    State(state): State<AppState>,
    Path(token): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = Responder {
        settings: state.snapshot().settings.clone(),
        json: wants_json(&headers),
    };
    let (fields, _) = match read_fields(&headers, &body) {
        Ok(f) => f,
        Err(p) => return r.problem(p),
    };
    let now = chrono::Utc::now();
    if fields.get("action") == Some("unsubscribe") {
        return match subscribers::unsubscribe(&state.db, &state.links, &token, now).await {
            Ok(s) => super::unsubscribe::done(&r, &s),
            Err(e) => r.problem(Problem::from_service(e)),
        };
    }
    let mut editions = fields.all("edition");
    editions.extend(fields.all("editions"));
    let categories = fields.all("categories");
    match subscribers::update_preferences(
        &r.settings,
        &state.db,
        &state.links,
        &token,
        &categories,
        &editions,
        now,
    )
    .await
    {
        Ok(s) => view(&r, &s, &token, true),
        Err(e) => r.problem(Problem::from_service(e)),
    }
}

/// `GET /preferences` without a token: the "email me my link" form.
pub async fn recover_form(r: Responder) -> Response {
    if r.json {
        return r.json(StatusCode::OK, serde_json::json!({ "fields": ["email"] }));
    }
    recover_page(&r, StatusCode::OK, None, "")
}

fn recover_page(r: &Responder, status: StatusCode, error: Option<&str>, email: &str) -> Response {
    let ctx = minijinja::context! { action => "preferences", error => error, email => email };
    r.page(status, "pages/manage_link.html", ctx)
}

/// `POST /preferences` with `email`: the same answer whether or not the
/// address subscribes; the mail itself goes out at most once an hour.
pub async fn recover_submit(
    State(state): State<AppState>,
    axum::Extension(limiter): axum::Extension<std::sync::Arc<super::subscribe::SignUpLimiter>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = Responder {
        settings: state.snapshot().settings.clone(),
        json: wants_json(&headers),
    };
    if let Some(axum::Extension(axum::extract::ConnectInfo(addr))) = peer {
        let ip = super::client_ip::client_ip(addr.ip(), &headers, &r.settings.http.trusted_proxies);
        if let Some(resp) = limiter.refuse(&r, ip) {
            return resp;
        }
    }
    let (fields, _) = match read_fields(&headers, &body) {
        Ok(f) => f,
        Err(p) => return r.problem(p),
    };
    let email = fields.get("email").unwrap_or("");
    match subscribers::recovery::send_manage_link(&state.db, email, chrono::Utc::now()).await {
        Ok(queued) => {
            if queued {
                state.signals.outbox_queued();
            }
            r.message(
                "Check your inbox",
                &[
                    "If this address is subscribed, a message with a link to your preferences is on its way.",
                    "At most one such message is sent per hour.",
                ],
                None,
                serde_json::json!({
                    "status": "check-your-inbox",
                    "message": "If this address is subscribed, a message with a link to your preferences is on its way."
                }),
            )
        }
        Err(subscribers::SubscriberError::Invalid { message, .. }) if !r.json => {
            let shown: String = email
                .chars()
                .take(254)
                .filter(|c| !c.is_control())
                .collect();
            recover_page(
                &r,
                StatusCode::BAD_REQUEST,
                Some(&format!("E-mail address: {message}")),
                &shown,
            )
        }
        Err(e) => r.problem(Problem::from_service(e)),
    }
}
