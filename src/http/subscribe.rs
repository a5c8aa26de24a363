//! `GET /subscribe` (the form) and `POST /subscribe` (form or JSON). Every
//! accepted sign-up answers the same bytes, whether the address is new,
//! pending or confirmed, so the form cannot be used to learn who subscribes.

use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::respond::{read_fields, wants_json, Problem, Responder};
use super::AppState;
use crate::subscribers::abuse::{self, StampVerdict};
use crate::subscribers::{sign_up, views, SignUp, SubscriberError};

/// Per-IP limit on sign-ups: a burst of 20, then one every 3 seconds.
pub struct SignUpLimiter(DefaultKeyedRateLimiter<IpAddr>);

impl Default for SignUpLimiter {
    fn default() -> Self {
        let quota = Quota::with_period(Duration::from_secs(3))
            .expect("non-zero period")
            .allow_burst(NonZeroU32::new(20).expect("non-zero burst"));
        Self(RateLimiter::keyed(quota))
    }
}

impl SignUpLimiter {
    /// A 429 answer with `Retry-After` when `ip` is over the limit.
    pub(super) fn refuse(&self, r: &Responder, ip: IpAddr) -> Option<Response> {
        let wait = self.check(ip).err()?;
        let secs = wait.as_secs().max(1);
        let mut resp = r.problem(Problem::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!("too many requests from your address; try again in {secs} seconds"),
        ));
        if let Ok(v) = secs.to_string().parse() {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        Some(resp)
    }

    /// Ok, or how long the caller should wait.
    fn check(&self, ip: IpAddr) -> Result<(), Duration> {
        if self.0.len() > 100_000 {
            self.0.retain_recent();
        }
        self.0
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }
}

/// The form, or for JSON clients the categories and editions to choose from.
pub async fn form(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let settings = state.snapshot().settings.clone();
    let r = Responder {
        settings: settings.clone(),
        json: wants_json(&headers),
    };
    let stamp = abuse::stamp(&state.form_key, chrono::Utc::now());
    if r.json {
        let categories: Vec<_> = settings
            .categories
            .iter()
            .map(|c| serde_json::json!({"slug": c.slug, "name": c.name, "description": c.description}))
            .collect();
        let editions: Vec<_> = settings
            .editions
            .iter()
            .map(|e| serde_json::json!({"slug": e.slug, "name": e.name, "timezone": e.timezone.name(), "local_time": e.local_time}))
            .collect();
        return r.json(
            StatusCode::OK,
            serde_json::json!({
                "fields": ["email", "name", "categories", "edition", "timezone", abuse::STAMP_FIELD],
                "categories": categories,
                "editions": editions,
                // Send it back unchanged, no sooner than `min_seconds` later.
                abuse::STAMP_FIELD: stamp,
                "min_seconds": settings.http.signup_min_delay.as_secs(),
            }),
        );
    }
    render_form(&r, StatusCode::OK, None, &SignUp::default(), &stamp)
}

fn render_form(
    r: &Responder,
    status: StatusCode,
    error: Option<&str>,
    req: &SignUp,
    stamp: &str,
) -> Response {
    let edition = req.editions.first().map(String::as_str);
    // A form sent back with a zone keeps it; a fresh one lets the browser say.
    let chosen = Some(req.timezone.as_str()).filter(|z| !z.trim().is_empty());
    let ctx = minijinja::context! {
        action => "subscribe",
        error => error,
        email => req.email,
        name => req.name,
        form_stamp => stamp,
        honeypot => abuse::HONEYPOT_FIELD,
        ..minijinja::context! {
            ..views::choices_context(&r.settings, &req.categories, edition),
            ..views::zone_context(&r.settings, chosen, edition, chosen.is_none())
        }
    };
    r.page(status, "pages/subscribe.html", ctx)
}

pub async fn submit(
    State(state): State<AppState>,
    Extension(limiter): Extension<Arc<SignUpLimiter>>,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let r = Responder {
        settings: state.snapshot().settings.clone(),
        json: wants_json(&headers),
    };
    if let Some(Extension(ConnectInfo(addr))) = peer {
        let ip = super::client_ip::client_ip(addr.ip(), &headers, &r.settings.http.trusted_proxies);
        if let Some(resp) = limiter.refuse(&r, ip) {
            return resp;
        }
    }
    let (fields, _) = match read_fields(&headers, &body) {
        Ok(f) => f,
        Err(p) => return r.problem(p),
    };
    let now = chrono::Utc::now();
    let min_delay = r.settings.http.signup_min_delay;
    let verdict = if min_delay.is_zero() {
        StampVerdict::Fine
    } else {
        abuse::check_stamp(
            &state.form_key,
            fields.get(abuse::STAMP_FIELD),
            now,
            min_delay,
        )
    };
    let trip = if abuse::honeypot_filled(fields.get(abuse::HONEYPOT_FIELD)) {
        Some("honeypot")
    } else if verdict == StampVerdict::Bot {
        Some("too-fast")
    } else {
        None
    };
    if let Some(reason) = trip {
        // Answered like a real sign-up, and nothing is stored or sent.
        metrics::counter!("casewire_signups_rejected_total", "reason" => reason).increment(1);
        tracing::debug!(reason, "sign-up dropped as automated");
        return accepted(&r);
    }
    // A re-rendered form keeps a good stamp, so fixing a typo is not "too fast".
    let stamp = match fields.get(abuse::STAMP_FIELD) {
        Some(s) if verdict == StampVerdict::Fine && !min_delay.is_zero() => s.to_owned(),
        _ => abuse::stamp(&state.form_key, now),
    };
    let mut editions = fields.all("edition");
    editions.extend(fields.all("editions"));
    let req = SignUp {
        email: fields.get("email").unwrap_or("").to_owned(),
        name: fields.get("name").unwrap_or("").to_owned(),
        categories: fields.all("categories"),
        editions,
        timezone: zone_field(&fields),
    };
    if verdict == StampVerdict::Stale {
        let text =
            "This form was open for more than a day. Please check your details and send it again.";
        if r.json {
            return r.problem(Problem::new(
                StatusCode::BAD_REQUEST,
                format!("{text} (GET /subscribe for a new {})", abuse::STAMP_FIELD),
            ));
        }
        return render_form(&r, StatusCode::BAD_REQUEST, Some(text), &req, &stamp);
    }
    match sign_up(&r.settings, &state.db, &req, now).await {
        Ok(()) => {
            // The confirmation is committed: deliver it now, not at the next poll.
            state.signals.outbox_queued();
            metrics::counter!("casewire_signups_total").increment(1);
            accepted(&r)
        }
        Err(SubscriberError::Invalid { field, message }) if !r.json => {
            let label = match field {
                "email" => "E-mail address",
                "name" => "Name",
                "categories" => "Categories",
                "edition" => "How often",
                "timezone" => "Time zone",
                other => other,
            };
            let text = format!("{label}: {message}");
            // Echo only what is safe to put back into the form.
            let safe = SignUp {
                email: req
                    .email
                    .chars()
                    .take(254)
                    .filter(|c| !c.is_control())
                    .collect(),
                name: req
                    .name
                    .chars()
                    .take(100)
                    .filter(|c| !c.is_control())
                    .collect(),
                categories: req.categories,
                editions: req.editions,
                // Only a valid zone is selected again; the rest is dropped.
                timezone: req.timezone,
            };
            render_form(&r, StatusCode::BAD_REQUEST, Some(&text), &safe, &stamp)
        }
        Err(e) => r.problem(Problem::from_service(e)),
    }
    .into_response()
}

/// The zone a form sends: what was typed into the search box when anything
/// was (it works without script), else the select's choice.
pub(super) fn zone_field(fields: &super::respond::Fields) -> String {
    fields
        .get("timezone_search")
        .filter(|s| !s.trim().is_empty())
        .or_else(|| fields.get("timezone"))
        .unwrap_or("")
        .to_owned()
}

/// The answer to every accepted sign-up, and to every one dropped as
/// automated: the same bytes, so the difference cannot be seen.
fn accepted(r: &Responder) -> Response {
    r.message(
        "Check your inbox",
        &[
            "If the address can receive mail, a message with a confirmation link is on its way.",
            "Open the link to start your subscription. Nothing else arrives until you do.",
        ],
        None,
        serde_json::json!({
            "status": "check-your-inbox",
            "message": "If the address can receive mail, a message with a confirmation link is on its way."
        }),
    )
}
