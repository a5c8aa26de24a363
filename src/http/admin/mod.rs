//! The operator console at `/admin/`: server-rendered pages (minijinja,
//! templates under `templates/admin/`, built into the binary) that work
//! without JavaScript. One file per page; this file holds what they share:
//! the session check, CSRF tokens, the security headers every console answer
//! carries, rendering, and the audit log.
//!
//! Without a valid session every route answers a redirect to the login page
//! (GET, HEAD) or 403 (anything else). Every POST carries the session's CSRF
//! token. Every answer is `Cache-Control: no-store` with a strict
//! Content-Security-Policy: no scripts at all, styles only by hash.

mod audit;
mod content;
mod editions;
mod login;
pub(crate) mod overview;
mod subscribers;
mod suppressions;

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Request};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::Utc;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use minijinja::{Environment, Value};

use super::respond::{read_fields, Fields};
use super::AppState;
use crate::config::{AdminSettings, Settings};
use crate::domain::Token;
use crate::store::admin::{self as store, NewAudit, Session};

/// The session cookie. `Path=/admin` keeps it away from every other route.
pub const SESSION_COOKIE: &str = "casewire_admin";
/// The login form's double-submit cookie (there is no session yet).
pub const LOGIN_COOKIE: &str = "casewire_login";
/// The form field that carries the CSRF token.
pub const CSRF_FIELD: &str = "csrf";

/// How often a session's idle clock is written (at most once a minute, so
/// browsing does not write on every page).
const TOUCH_EVERY: chrono::Duration = chrono::Duration::seconds(60);

/// What the console keeps between requests: login throttles and the
/// overview's counts.
pub struct AdminState {
    login_ip: DefaultKeyedRateLimiter<IpAddr>,
    login_account: DefaultKeyedRateLimiter<String>,
    pub overview: overview::Cache,
}

impl AdminState {
    /// Throttles from `[admin]` (a reload does not change them).
    pub fn new(settings: &AdminSettings) -> Self {
        let quota = |burst: u32| {
            Quota::with_period(settings.login_refill)
                .expect("non-zero period")
                .allow_burst(NonZeroU32::new(burst.max(1)).expect("at least 1"))
        };
        Self {
            login_ip: RateLimiter::keyed(quota(settings.login_attempts_per_ip)),
            login_account: RateLimiter::keyed(quota(settings.login_attempts_per_account)),
            overview: overview::Cache::default(),
        }
    }

    /// Takes one login attempt from `ip`'s and `account`'s allowance; Err
    /// with the seconds to wait when either is used up.
    fn login_attempt(&self, ip: IpAddr, account: &str) -> Result<(), u64> {
        use governor::clock::{Clock, DefaultClock};
        if self.login_ip.len() > 100_000 {
            self.login_ip.retain_recent();
            self.login_account.retain_recent();
        }
        let now = DefaultClock::default().now();
        let wait = |n: governor::NotUntil<_>| n.wait_time_from(now).as_secs().max(1);
        self.login_ip.check_key(&ip).map_err(wait)?;
        self.login_account
            .check_key(&account.to_owned())
            .map_err(wait)?;
        Ok(())
    }
}

/// Every console route. Bodies are limited to 64 KiB except the CSV import
/// (16 MiB).
pub fn routes() -> Router<AppState> {
    let pages = Router::new()
        .route("/admin", get(|| async { Redirect::to("/admin/") }))
        .route("/admin/", get(overview::page))
        .route("/admin/login", get(login::form).post(login::submit))
        .route("/admin/logout", post(login::logout))
        .route(
            "/admin/password",
            get(login::password_form).post(login::password_submit),
        )
        .route("/admin/subscribers", get(subscribers::list))
        .route("/admin/subscribers/export.csv", get(subscribers::export))
        .route("/admin/subscribers/import", get(subscribers::import_form))
        .route("/admin/subscribers/{id}", get(subscribers::show))
        .route(
            "/admin/subscribers/{id}/choices",
            post(subscribers::choices),
        )
        .route(
            "/admin/subscribers/{id}/unsubscribe",
            post(subscribers::unsubscribe),
        )
        .route("/admin/subscribers/{id}/resend", post(subscribers::resend))
        .route(
            "/admin/subscribers/{id}/erase",
            get(subscribers::erase_confirm).post(subscribers::erase),
        )
        .route("/admin/suppressions", get(suppressions::list))
        .route("/admin/suppressions/export.csv", get(suppressions::export))
        .route("/admin/suppressions/remove", post(suppressions::remove))
        .route("/admin/suppressions/add", post(suppressions::add))
        .route("/admin/bounces", get(suppressions::bounces))
        .route("/admin/editions", get(editions::list))
        .route("/admin/editions/{slug}", get(editions::show))
        .route("/admin/editions/{slug}/preview", get(editions::preview))
        .route(
            "/admin/editions/{slug}/preview.html",
            get(editions::preview_frame),
        )
        .route("/admin/editions/{slug}/dry-run", post(editions::dry_run))
        .route(
            "/admin/editions/{slug}/send",
            get(editions::send_confirm).post(editions::send),
        )
        .route("/admin/editions/{slug}/pause", post(editions::pause))
        .route("/admin/editions/{slug}/resume", post(editions::resume))
        .route("/admin/content", get(content::page))
        .route("/admin/audit", get(audit::page))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024));
    let import = Router::new()
        .route("/admin/subscribers/import", post(subscribers::import))
        .layer(axum::extract::DefaultBodyLimit::max(IMPORT_LIMIT))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(IMPORT_LIMIT));
    pages
        .merge(import)
        .layer(middleware::from_fn(security_headers))
}

/// Largest CSV upload the console takes (use `casewire subscribers import`
/// for larger files).
pub const IMPORT_LIMIT: usize = 16 * 1024 * 1024;

/// The console's style sheet, inlined into every page and allowed by its hash.
const CSS: &str = include_str!("../../../templates/admin/admin.css");

/// The Content-Security-Policy of console pages: nothing runs, nothing
/// loads from elsewhere, forms post only here, frames only the preview.
fn page_csp() -> &'static str {
    static CSP: OnceLock<String> = OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(CSS));
        format!(
            "default-src 'none'; style-src 'sha256-{hash}'; img-src 'self' data:; form-action 'self'; frame-src 'self'; frame-ancestors 'none'; base-uri 'none'"
        )
    })
}

/// The headers of every console answer. A handler that set its own
/// Content-Security-Policy or X-Frame-Options (the preview frame) keeps it.
async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(page_csp()),
        );
    }
    if !h.contains_key(header::X_FRAME_OPTIONS) {
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// The console's templates, built into the binary (not overridable from
/// `[templates] dir`: their markup is part of the security policy).
fn environment() -> &'static Environment<'static> {
    static ENV: OnceLock<Environment<'static>> = OnceLock::new();
    ENV.get_or_init(|| {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        for (name, text) in [
            (
                "layout.html",
                include_str!("../../../templates/admin/layout.html"),
            ),
            (
                "login.html",
                include_str!("../../../templates/admin/login.html"),
            ),
            (
                "password.html",
                include_str!("../../../templates/admin/password.html"),
            ),
            (
                "message.html",
                include_str!("../../../templates/admin/message.html"),
            ),
            (
                "overview.html",
                include_str!("../../../templates/admin/overview.html"),
            ),
            (
                "subscribers.html",
                include_str!("../../../templates/admin/subscribers.html"),
            ),
            (
                "subscriber.html",
                include_str!("../../../templates/admin/subscriber.html"),
            ),
            (
                "import.html",
                include_str!("../../../templates/admin/import.html"),
            ),
            (
                "suppressions.html",
                include_str!("../../../templates/admin/suppressions.html"),
            ),
            (
                "bounces.html",
                include_str!("../../../templates/admin/bounces.html"),
            ),
            (
                "editions.html",
                include_str!("../../../templates/admin/editions.html"),
            ),
            (
                "edition.html",
                include_str!("../../../templates/admin/edition.html"),
            ),
            (
                "preview.html",
                include_str!("../../../templates/admin/preview.html"),
            ),
            (
                "content.html",
                include_str!("../../../templates/admin/content.html"),
            ),
            (
                "audit.html",
                include_str!("../../../templates/admin/audit.html"),
            ),
        ] {
            env.add_template(name, text)
                .unwrap_or_else(|e| panic!("built-in console template {name}: {e}"));
        }
        env
    })
}

/// Renders a console template with the values every page gets: the site,
/// the operator (if any), the CSRF token and the style sheet.
fn render_page(
    status: StatusCode,
    settings: &Settings,
    name: &str,
    console: Option<&Console>,
    ctx: Value,
) -> Response {
    let common = minijinja::context! {
        site => crate::subscribers::views::site(settings),
        css => Value::from_safe_string(CSS.to_owned()),
        operator => console.map(|c| c.session.name.clone()),
        csrf => console.map(|c| c.csrf.clone()).unwrap_or_default(),
        csrf_field => CSRF_FIELD,
    };
    let html = environment()
        .get_template(name)
        .and_then(|t| t.render(minijinja::context! { ..common, ..ctx }));
    match html {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            let mut chain = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                source = s.source();
            }
            tracing::error!(template = name, error = %chain, "cannot render a console page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong on our side; see the daemon's log",
            )
                .into_response()
        }
    }
}

/// The cookie values of `name` in the request (several Cookie headers and
/// several pairs per header are allowed).
fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// `Set-Cookie` for a console cookie: `HttpOnly; SameSite=Strict;
/// Path=/admin`, and `Secure` when the site is served over https.
fn set_cookie(settings: &Settings, name: &str, value: &str, max_age: Option<i64>) -> HeaderValue {
    let mut text = format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/admin");
    if settings.site.base_url.scheme() == "https" {
        text.push_str("; Secure");
    }
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    HeaderValue::from_str(&text).expect("cookie values are base64url")
}

/// The client's address (behind `[http] trusted_proxies`, the forwarded one).
fn client_ip(parts: &axum::http::request::Parts, settings: &Settings) -> Option<IpAddr> {
    let ConnectInfo(peer) = parts.extensions.get::<ConnectInfo<SocketAddr>>()?;
    Some(super::client_ip::client_ip(
        peer.ip(),
        &parts.headers,
        &settings.http.trusted_proxies,
    ))
}

/// A request from a signed-in operator. Extracting it checks the session
/// cookie (and expiry); without one the request is answered by [`Refusal`].
pub struct Console {
    pub state: AppState,
    pub settings: Arc<Settings>,
    pub session: Session,
    /// The cookie's token (never stored; its hash names the session row).
    token: Token,
    pub csrf: String,
    pub ip: String,
}

/// Why a request was not let in.
pub enum Refusal {
    /// GET or HEAD without a session: to the login page, then back.
    Login {
        next: String,
    },
    /// Anything else without a session.
    Forbidden,
    /// A one-time password is still to be replaced.
    ChangePassword,
    Internal,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Login { next } => {
                let target = format!(
                    "/admin/login?next={}",
                    url::form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
                );
                Redirect::to(&target).into_response()
            }
            Refusal::ChangePassword => Redirect::to("/admin/password").into_response(),
            Refusal::Forbidden => (
                StatusCode::FORBIDDEN,
                Html("<!doctype html><title>Forbidden</title><p>Sign in to the console at <a href=\"/admin/login\">/admin/login</a> first.</p>"),
            )
                .into_response(),
            Refusal::Internal => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "something went wrong on our side; see the daemon's log",
            )
                .into_response(),
        }
    }
}

/// The session a request's cookie names, if it is live at `now`. An expired
/// one is deleted.
async fn live_session(
    state: &AppState,
    settings: &Settings,
    headers: &HeaderMap,
) -> Result<Option<(Token, Session)>, crate::store::StoreError> {
    let Some(token) = cookie(headers, SESSION_COOKIE).and_then(|v| Token::parse(v).ok()) else {
        return Ok(None);
    };
    let hash = token.hash();
    let Some(session) = store::session(&state.db, &hash).await? else {
        return Ok(None);
    };
    let now = Utc::now();
    let idle = chrono::Duration::from_std(settings.admin.session_idle).unwrap_or_default();
    let max = chrono::Duration::from_std(settings.admin.session_max).unwrap_or_default();
    if now - session.last_seen_at > idle || now - session.created_at > max {
        store::delete_session(&state.db, &hash).await?;
        return Ok(None);
    }
    if now - session.last_seen_at > TOUCH_EVERY {
        store::touch_session(&state.db, &hash, now).await?;
    }
    Ok(Some((token, session)))
}

impl axum::extract::FromRequestParts<AppState> for Console {
    type Rejection = Refusal;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let settings = state.snapshot().settings.clone();
        let reading = matches!(parts.method, Method::GET | Method::HEAD);
        let found = live_session(state, &settings, &parts.headers)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "cannot check a console session");
                Refusal::Internal
            })?;
        let Some((token, session)) = found else {
            return Err(if reading {
                let next = parts
                    .uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_else(|| "/admin/".into());
                Refusal::Login { next }
            } else {
                Refusal::Forbidden
            });
        };
        if session.must_change && !matches!(parts.uri.path(), "/admin/password" | "/admin/logout") {
            return Err(if reading {
                Refusal::ChangePassword
            } else {
                Refusal::Forbidden
            });
        }
        let csrf = crate::admin::csrf_token(&state.form_key, &token);
        let ip = client_ip(parts, &settings)
            .map(|ip| ip.to_string())
            .unwrap_or_default();
        Ok(Console {
            state: state.clone(),
            settings,
            session,
            token,
            csrf,
            ip,
        })
    }
}

impl Console {
    pub fn render(&self, name: &str, ctx: Value) -> Response {
        render_page(StatusCode::OK, &self.settings, name, Some(self), ctx)
    }

    pub fn render_status(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        render_page(status, &self.settings, name, Some(self), ctx)
    }

    /// A page with a heading, a message and a link back.
    pub fn message(&self, status: StatusCode, heading: &str, text: &str, back: &str) -> Response {
        self.render_status(
            status,
            "message.html",
            minijinja::context! { heading, text, back => crate::subscribers::views::url(back) },
        )
    }

    /// An unexpected failure: logged with its cause chain, shown opaque.
    pub fn internal(&self, e: &dyn std::fmt::Display) -> Response {
        tracing::error!(error = %e, operator = %self.session.name, "console request failed");
        self.message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The action failed on our side; the daemon's log has the details. Nothing was changed unless the page says otherwise.",
            "/admin/",
        )
    }

    /// The form fields of a POST, after checking its CSRF token; a missing
    /// or wrong token is answered 403 and nothing is done.
    pub fn form(&self, headers: &HeaderMap, body: &Bytes) -> Result<Fields, Response> {
        let (fields, _) = read_fields(headers, body)
            .map_err(|p| self.message(p.status, "That did not work", &p.message, "/admin/"))?;
        self.check_csrf(fields.get(CSRF_FIELD).unwrap_or(""))?;
        Ok(fields)
    }

    /// 403 unless `given` is this session's CSRF token.
    pub fn check_csrf(&self, given: &str) -> Result<(), Response> {
        if crate::admin::csrf_matches(&self.state.form_key, &self.token, given) {
            Ok(())
        } else {
            Err(self.message(
                StatusCode::FORBIDDEN,
                "The form has expired",
                "The form's security token is missing or does not belong to your session, so nothing was changed. Go back, reload the page and try again.",
                "/admin/",
            ))
        }
    }

    /// Writes an action to the audit log. A failure to write is logged; the
    /// action itself has already happened.
    pub async fn audit(&self, action: &str, target: &str, detail: &str) {
        let entry = NewAudit {
            actor: &self.session.name,
            action,
            target,
            detail,
            ip: &self.ip,
        };
        if let Err(e) = store::audit(&self.state.db, entry, Utc::now()).await {
            tracing::error!(error = %e, action, target, "cannot write the audit log");
        }
    }
}

/// A notice shown after a redirect, chosen by code so no text from the URL
/// is ever shown.
fn notice(code: Option<&String>) -> Option<&'static str> {
    Some(match code?.as_str() {
        "saved" => "Saved.",
        "unsubscribed" => "The subscriber is unsubscribed; nothing more is sent to them.",
        "already-unsubscribed" => "The subscriber was unsubscribed already.",
        "resent" => "A new confirmation mail is queued.",
        "erased" => "The subscriber and their personal data are erased.",
        "removed" => "The suppression is lifted.",
        "suppressed" => "The address is suppressed; nothing more is sent to it.",
        "not-suppressed" => "That address was not suppressed.",
        "sending" => "The edition run has started; its digests are queued and delivered as it goes. The history below shows it.",
        "paused" => "The edition is paused: its queued digests wait until you resume it.",
        "resumed" => "The edition is resumed; its queued digests go out with the next delivery.",
        "not-paused" => "The edition was not paused.",
        "password" => "Your password is changed.",
        "logged-out" => "You are signed out.",
        _ => return None,
    })
}

/// Formats a UTC time for tables.
fn when(t: chrono::DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}
