//! Signing in and out, and changing one's own password. The login form is
//! protected by a double-submit token (its own short-lived cookie and an
//! HMAC of it in the form), throttled per client address and per operator
//! name, and answers the same for an unknown name as for a wrong password.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;

use super::{
    client_ip, cookie, live_session, notice, render_page, set_cookie, Console, CSRF_FIELD,
    LOGIN_COOKIE, SESSION_COOKIE,
};
use crate::admin::{self, OperatorName};
use crate::http::respond::read_fields;
use crate::http::AppState;
use crate::store::admin::{self as store, NewAudit};

/// Where to go after signing in: a console path, never another site.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with("/admin/") && !n.starts_with("//") && !n.contains('\\') => {
            n.to_owned()
        }
        _ => "/admin/".to_owned(),
    }
}

fn random_value() -> String {
    crate::domain::Token::generate().as_str().to_owned()
}

pub async fn form(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let settings = state.snapshot().settings.clone();
    if let Ok(Some(_)) = live_session(&state, &settings, &headers).await {
        return Redirect::to(&safe_next(q.get("next").map(String::as_str))).into_response();
    }
    let value = random_value();
    let no_users = matches!(store::user_count(&state.db).await, Ok(0));
    let mut resp = render_page(
        StatusCode::OK,
        &settings,
        "login.html",
        None,
        minijinja::context! {
            login_csrf => admin::login_csrf_token(&state.form_key, &value),
            next => safe_next(q.get("next").map(String::as_str)),
            name => "",
            error => Option::<String>::None,
            no_users,
            notice => notice(q.get("notice")),
        },
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&settings, LOGIN_COOKIE, &value, Some(3600)),
    );
    resp
}

pub async fn submit(State(state): State<AppState>, request: axum::extract::Request) -> Response {
    let settings = state.snapshot().settings.clone();
    let (parts, body) = request.into_parts();
    let ip = client_ip(&parts, &settings);
    let body = match axum::body::to_bytes(body, 64 * 1024).await {
        Ok(b) => b,
        Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "the form is too large").into_response(),
    };
    let fields = match read_fields(&parts.headers, &body) {
        Ok((f, _)) => f,
        Err(p) => return (p.status, p.message).into_response(),
    };
    let name_text = fields.get("name").unwrap_or("").trim().to_owned();
    let next = safe_next(fields.get("next"));
    // The form must come from our own login page in this browser.
    let cookie_value = cookie(&parts.headers, LOGIN_COOKIE).unwrap_or("");
    if cookie_value.is_empty()
        || !admin::login_csrf_matches(
            &state.form_key,
            cookie_value,
            fields.get(CSRF_FIELD).unwrap_or(""),
        )
    {
        return again(
            &state,
            StatusCode::FORBIDDEN,
            &name_text,
            &next,
            "The login form has expired or was not sent from this browser; please try again.",
        )
        .await;
    }
    let account_key: String = name_text.to_ascii_lowercase().chars().take(64).collect();
    let ip_addr = ip.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0]));
    if let Err(secs) = state.admin.login_attempt(ip_addr, &account_key) {
        let _ = store::audit(
            &state.db,
            NewAudit {
                actor: &account_key,
                action: "login.throttled",
                target: &account_key,
                detail: "too many attempts",
                ip: &ip_addr.to_string(),
            },
            Utc::now(),
        )
        .await;
        let mut resp = again(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &name_text,
            &next,
            &format!("Too many sign-in attempts; try again in {secs} seconds."),
        )
        .await;
        if let Ok(v) = secs.to_string().parse() {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return resp;
    }
    let password = fields.get("password").unwrap_or("").to_owned();
    let name = OperatorName::parse(&name_text).ok();
    let user = match &name {
        Some(n) => match store::user_for_login(&state.db, n.as_str()).await {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "cannot read operator accounts");
                return (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "something went wrong on our side",
                )
                    .into_response();
            }
        },
        None => None,
    };
    let hash = user.as_ref().map(|(_, h)| h.clone());
    let ok =
        tokio::task::spawn_blocking(move || admin::verify_password(&password, hash.as_deref()))
            .await
            .unwrap_or(false);
    let now = Utc::now();
    let (Some((user_id, _)), true, Some(name)) = (user, ok, name) else {
        let _ = store::audit(
            &state.db,
            NewAudit {
                actor: &account_key,
                action: "login.failed",
                target: &account_key,
                detail: "wrong name or password",
                ip: &ip_addr.to_string(),
            },
            now,
        )
        .await;
        return again(
            &state,
            StatusCode::UNAUTHORIZED,
            &name_text,
            &next,
            "Wrong name or password.",
        )
        .await;
    };
    let token = admin::new_session_token();
    let ip_text = ip.map(|i| i.to_string()).unwrap_or_default();
    if let Err(e) = store::create_session(&state.db, &token.hash(), user_id, &ip_text, now).await {
        tracing::error!(error = %e, "cannot store a console session");
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            "something went wrong on our side",
        )
            .into_response();
    }
    let _ = store::audit(
        &state.db,
        NewAudit {
            actor: name.as_str(),
            action: "login",
            target: name.as_str(),
            detail: "",
            ip: &ip_text,
        },
        now,
    )
    .await;
    // Old sessions of everyone are pruned at each login.
    let idle = chrono::Duration::from_std(settings.admin.session_idle).unwrap_or_default();
    let max = chrono::Duration::from_std(settings.admin.session_max).unwrap_or_default();
    if let Err(e) = store::prune_sessions(&state.db, now - idle, now - max).await {
        tracing::warn!(error = %e, "cannot prune expired console sessions");
    }
    let mut resp = Redirect::to(&next).into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(
            &settings,
            SESSION_COOKIE,
            token.as_str(),
            Some(settings.admin.session_max.as_secs() as i64),
        ),
    );
    h.append(
        header::SET_COOKIE,
        set_cookie(&settings, LOGIN_COOKIE, "", Some(0)),
    );
    resp
}

/// The login form again, with a message, a fresh double-submit cookie and
/// the name kept.
async fn again(
    state: &AppState,
    status: StatusCode,
    name: &str,
    next: &str,
    error: &str,
) -> Response {
    let settings = state.snapshot().settings.clone();
    let value = random_value();
    let mut resp = render_page(
        status,
        &settings,
        "login.html",
        None,
        minijinja::context! {
            login_csrf => admin::login_csrf_token(&state.form_key, &value),
            next,
            name => name.chars().take(64).collect::<String>(),
            error,
            no_users => false,
            notice => Option::<String>::None,
        },
    );
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&settings, LOGIN_COOKIE, &value, Some(3600)),
    );
    resp
}

pub async fn logout(console: Console, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(resp) = console.form(&headers, &body) {
        return resp;
    }
    if let Err(e) = store::delete_session(&console.state.db, &console.token.hash()).await {
        return console.internal(&e);
    }
    console.audit("logout", &console.session.name, "").await;
    let mut resp = Redirect::to("/admin/login?notice=logged-out").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&console.settings, SESSION_COOKIE, "", Some(0)),
    );
    resp
}

pub async fn password_form(console: Console) -> Response {
    console.render(
        "password.html",
        minijinja::context! { error => Option::<String>::None, must_change => console.session.must_change },
    )
}

pub async fn password_submit(console: Console, headers: HeaderMap, body: Bytes) -> Response {
    let fields = match console.form(&headers, &body) {
        Ok(f) => f,
        Err(resp) => return resp,
    };
    let current = fields.get("current").unwrap_or("").to_owned();
    let new = fields.get("new").unwrap_or("").to_owned();
    let again_text = fields.get("again").unwrap_or("");
    let fail = |status: StatusCode, error: String| {
        console.render_status(
            status,
            "password.html",
            minijinja::context! { error, must_change => console.session.must_change },
        )
    };
    if new != again_text {
        return fail(
            StatusCode::BAD_REQUEST,
            "The two new passwords differ.".into(),
        );
    }
    if let Err(e) = admin::check_password(&new) {
        return fail(StatusCode::BAD_REQUEST, format!("{e}."));
    }
    let stored = match store::user_for_login(&console.state.db, &console.session.name).await {
        Ok(u) => u.map(|(_, h)| h),
        Err(e) => return console.internal(&e),
    };
    let ok =
        tokio::task::spawn_blocking(move || admin::verify_password(&current, stored.as_deref()))
            .await
            .unwrap_or(false);
    if !ok {
        return fail(
            StatusCode::UNAUTHORIZED,
            "The current password is wrong.".into(),
        );
    }
    let hash = match tokio::task::spawn_blocking(move || admin::hash_password(&new)).await {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => return fail(StatusCode::BAD_REQUEST, e.to_string()),
        Err(e) => return console.internal(&e),
    };
    let keep = console.token.hash();
    if let Err(e) = store::set_password(
        &console.state.db,
        &console.session.name,
        &hash,
        false,
        Some(&keep),
        Utc::now(),
    )
    .await
    {
        return console.internal(&e);
    }
    console
        .audit(
            "account.password",
            &console.session.name,
            "changed in the console; other sessions ended",
        )
        .await;
    Redirect::to("/admin/?notice=password").into_response()
}
