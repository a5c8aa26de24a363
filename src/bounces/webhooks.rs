//! ESP webhooks under `/webhooks/`, each authenticated the way its provider
//! documents: Amazon SES through SNS (the message signature, checked against
//! a signing certificate fetched only from SNS's own hosts), Postmark (basic
//! auth), SendGrid's signed event webhook (ECDSA P-256), Mailgun (HMAC-SHA256
//! over timestamp and token, each token accepted once, within 15 minutes).
//! An unauthenticated post gets 401 and a malformed one 400; neither changes
//! anything.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::Value;

use super::config::{host_allowed, BounceSettings};
use super::{event_key, Event, Kind};
use crate::domain::EmailAddress;
use crate::http::AppState;

/// Mailgun signatures older (or newer) than this are refused.
const MAILGUN_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Signing certificates are kept this long.
const CERT_TTL: Duration = Duration::from_secs(24 * 3600);

/// What the webhook routes keep between requests.
#[derive(Default)]
pub struct WebhookState {
    /// SNS signing certificates by URL. A std Mutex: never held across an await.
    certs: std::sync::Mutex<HashMap<String, (Instant, rsa::RsaPublicKey)>>,
    /// Mailgun tokens seen within the window (replay protection).
    mailgun_tokens: std::sync::Mutex<HashMap<String, Instant>>,
    /// Key of VERP envelope senders, to tie a report to its outbox row.
    pub verp_key: Option<Arc<[u8]>>,
}

impl WebhookState {
    pub fn new(verp_key: Option<Arc<[u8]>>) -> Self {
        Self {
            verp_key,
            ..Default::default()
        }
    }

    fn outbox_of(&self, address: &str) -> Option<i64> {
        self.verp_key
            .as_deref()
            .and_then(|k| super::verp::decode(address, k))
    }
}

/// A refusal: status and a message for the provider's delivery log.
struct Refused(StatusCode, String);

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, axum::Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

fn bad(msg: impl Into<String>) -> Refused {
    Refused(StatusCode::BAD_REQUEST, msg.into())
}

fn unauthorized(msg: impl Into<String>) -> Refused {
    Refused(StatusCode::UNAUTHORIZED, msg.into())
}

/// `POST /webhooks/{provider}`.
pub async fn receive(
    State(state): State<AppState>,
    Path(provider): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let settings = state.snapshot().settings.clone();
    let b = &settings.bounces;
    let hooks = state.webhooks.clone();
    let now = Utc::now();
    let events = match provider.as_str() {
        "ses" if b.ses.is_some() => ses(&hooks, b, &headers, &body, now).await,
        "postmark" if b.postmark.is_some() => postmark(b, &headers, &body, now),
        "sendgrid" if b.sendgrid.is_some() => sendgrid(b, &headers, &body, now),
        "mailgun" if b.mailgun.is_some() => mailgun(&hooks, b, &body, now),
        _ => {
            return Refused(
                StatusCode::NOT_FOUND,
                format!("no webhook {provider:?} is configured ([bounces.webhooks.{provider}])"),
            )
            .into_response()
        }
    };
    let events = match events {
        Ok(e) => e,
        Err(refused) => {
            tracing::warn!(
                provider,
                status = refused.0.as_u16(),
                "webhook refused: {}",
                refused.1
            );
            return refused.into_response();
        }
    };
    let mut recorded = 0;
    for event in events {
        match super::record_and_check(&state.db, &settings, &event).await {
            Ok(super::Applied::Duplicate) => {}
            Ok(_) => recorded += 1,
            Err(e) => {
                tracing::error!(provider, "recording a webhook event failed: {e}");
                // 5xx: the provider retries later.
                return StatusCode::SERVICE_UNAVAILABLE.into_response();
            }
        }
    }
    axum::Json(serde_json::json!({ "recorded": recorded })).into_response()
}

fn address(v: Option<&Value>) -> Option<EmailAddress> {
    let text = v?.as_str()?;
    // "Name <a@b>" or "a@b".
    let inner = text
        .rsplit_once('<')
        .map(|(_, r)| r.trim_end_matches('>'))
        .unwrap_or(text);
    EmailAddress::parse(inner.trim()).ok()
}

fn text(v: Option<&Value>) -> String {
    match v {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Amazon SES through SNS

/// The text SNS signs: the listed fields, each as `name\nvalue\n`, in order.
fn sns_string_to_sign(m: &serde_json::Map<String, Value>) -> Result<String, Refused> {
    let kind = m.get("Type").and_then(Value::as_str).unwrap_or("");
    let fields: &[&str] = match kind {
        "Notification" => &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ],
        "SubscriptionConfirmation" | "UnsubscribeConfirmation" => &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ],
        other => return Err(bad(format!("unknown SNS message type {other:?}"))),
    };
    let mut out = String::new();
    for f in fields {
        match m.get(*f).and_then(Value::as_str) {
            Some(v) => {
                out.push_str(f);
                out.push('\n');
                out.push_str(v);
                out.push('\n');
            }
            None if *f == "Subject" => {}
            None => return Err(bad(format!("SNS message without {f}"))),
        }
    }
    Ok(out)
}

/// Only https URLs on an allowed host (plain http only for a loopback host
/// that the configuration names, which is how tests serve a certificate).
fn sns_url_allowed(url: &str, hosts: &[String]) -> Result<url::Url, Refused> {
    let u = url::Url::parse(url)
        .map_err(|_| unauthorized("the signing certificate URL is not a URL"))?;
    let host = u.host_str().unwrap_or("");
    let loopback = host
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback());
    let scheme_ok = u.scheme() == "https" || (u.scheme() == "http" && loopback);
    if !scheme_ok || !host_allowed(host, hosts) {
        return Err(unauthorized(format!(
            "{url:?} is not on an allowed SNS host ([bounces.webhooks.ses] cert_hosts)"
        )));
    }
    Ok(u)
}

async fn sns_certificate(
    hooks: &WebhookState,
    url: &url::Url,
) -> Result<rsa::RsaPublicKey, Refused> {
    if let Some((at, key)) = hooks.certs.lock().expect("not poisoned").get(url.as_str()) {
        if at.elapsed() < CERT_TTL {
            return Ok(key.clone());
        }
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| Refused(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let fetched = async {
        let r = client.get(url.clone()).send().await?.error_for_status()?;
        r.bytes().await
    }
    .await
    .map_err(|e| {
        Refused(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("fetching the signing certificate: {e}"),
        )
    })?;
    if fetched.len() > 64 * 1024 {
        return Err(unauthorized("the signing certificate is too large"));
    }
    let key = public_key_of_certificate(&fetched).map_err(unauthorized)?;
    hooks
        .certs
        .lock()
        .expect("not poisoned")
        .insert(url.to_string(), (Instant::now(), key.clone()));
    Ok(key)
}

/// The RSA key of a PEM X.509 certificate.
pub fn public_key_of_certificate(pem: &[u8]) -> Result<rsa::RsaPublicKey, String> {
    use rsa::pkcs8::DecodePublicKey as _;
    use x509_cert::der::{DecodePem as _, Encode as _};
    let cert = x509_cert::Certificate::from_pem(pem)
        .map_err(|e| format!("the signing certificate is not a PEM X.509 certificate: {e}"))?;
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .map_err(|e| e.to_string())?;
    rsa::RsaPublicKey::from_public_key_der(&spki)
        .map_err(|e| format!("the signing certificate has no RSA key: {e}"))
}

fn sns_verify(
    key: &rsa::RsaPublicKey,
    version: &str,
    text: &str,
    sig: &[u8],
) -> Result<(), Refused> {
    use rsa::signature::Verifier as _;
    let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| unauthorized("bad signature"))?;
    let ok = match version {
        "1" => rsa::pkcs1v15::VerifyingKey::<sha1::Sha1>::new(key.clone())
            .verify(text.as_bytes(), &sig)
            .is_ok(),
        "2" => rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.clone())
            .verify(text.as_bytes(), &sig)
            .is_ok(),
        other => return Err(unauthorized(format!("unknown SignatureVersion {other:?}"))),
    };
    if ok {
        Ok(())
    } else {
        Err(unauthorized("the SNS signature does not verify"))
    }
}

async fn ses(
    hooks: &WebhookState,
    b: &BounceSettings,
    _headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<Event>, Refused> {
    let ses = b.ses.as_ref().expect("checked by the caller");
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let m = v.as_object().ok_or_else(|| bad("not a JSON object"))?;
    let text_to_sign = sns_string_to_sign(m)?;
    let cert_url = m
        .get("SigningCertURL")
        .or_else(|| m.get("SigningCertUrl"))
        .and_then(Value::as_str)
        .ok_or_else(|| unauthorized("no SigningCertURL"))?;
    let cert_url = sns_url_allowed(cert_url, &ses.cert_hosts)?;
    let sig = m
        .get("Signature")
        .and_then(Value::as_str)
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or_else(|| unauthorized("no Signature"))?;
    let version = m
        .get("SignatureVersion")
        .and_then(Value::as_str)
        .unwrap_or("1");
    let key = sns_certificate(hooks, &cert_url).await?;
    sns_verify(&key, version, &text_to_sign, &sig)?;
    let topic = m.get("TopicArn").and_then(Value::as_str).unwrap_or("");
    if let Some(want) = &ses.topic_arn {
        if topic != want {
            return Err(unauthorized(format!(
                "topic {topic:?} is not [bounces.webhooks.ses] topic_arn"
            )));
        }
    }
    match m.get("Type").and_then(Value::as_str) {
        Some("SubscriptionConfirmation") => {
            let url = m.get("SubscribeURL").and_then(Value::as_str).unwrap_or("");
            let url = sns_url_allowed(url, &ses.cert_hosts)?;
            let confirmed = reqwest::Client::new()
                .get(url)
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .and_then(|r| r.error_for_status());
            match confirmed {
                Ok(_) => tracing::info!(topic, "confirmed the SNS subscription"),
                Err(e) => {
                    return Err(Refused(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("confirming the SNS subscription: {e}"),
                    ))
                }
            }
            Ok(Vec::new())
        }
        Some("UnsubscribeConfirmation") => {
            tracing::warn!(topic, "the SNS topic unsubscribed this endpoint");
            Ok(Vec::new())
        }
        _ => {
            let message = m.get("Message").and_then(Value::as_str).unwrap_or("");
            let id = m.get("MessageId").and_then(Value::as_str).unwrap_or("");
            let inner: Value = serde_json::from_str(message)
                .map_err(|e| bad(format!("the SES notification is not JSON: {e}")))?;
            Ok(ses_events(hooks, &inner, id, now))
        }
    }
}

fn ses_events(hooks: &WebhookState, n: &Value, sns_id: &str, now: DateTime<Utc>) -> Vec<Event> {
    let kind = n
        .get("notificationType")
        .or_else(|| n.get("eventType"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let source_addr = n
        .pointer("/mail/source")
        .and_then(Value::as_str)
        .unwrap_or("");
    let outbox_id = hooks.outbox_of(source_addr);
    let mut out = Vec::new();
    match kind {
        "Bounce" => {
            let bounce_type = n
                .pointer("/bounce/bounceType")
                .and_then(Value::as_str)
                .unwrap_or("");
            let sub = n
                .pointer("/bounce/bounceSubType")
                .and_then(Value::as_str)
                .unwrap_or("");
            for r in n
                .pointer("/bounce/bouncedRecipients")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(address) = address(r.get("emailAddress")) else {
                    continue;
                };
                let status = r.get("status").and_then(Value::as_str).map(str::to_owned);
                let kind = match bounce_type {
                    "Permanent" => Kind::Hard,
                    // Transient and Undetermined: soft, counted against the limit.
                    _ => Kind::Soft,
                };
                let diagnostic = match r.get("diagnosticCode").and_then(Value::as_str) {
                    Some(d) => d.to_owned(),
                    None => format!("{bounce_type} {sub}").trim().to_owned(),
                };
                out.push(Event {
                    key: event_key("ses", &[sns_id, address.as_str()]),
                    address,
                    kind,
                    status,
                    diagnostic,
                    source: "ses",
                    outbox_id,
                    at: now,
                });
            }
        }
        "Complaint" => {
            for r in n
                .pointer("/complaint/complainedRecipients")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let Some(address) = address(r.get("emailAddress")) else {
                    continue;
                };
                out.push(Event {
                    key: event_key("ses", &[sns_id, address.as_str()]),
                    address,
                    kind: Kind::Complaint,
                    status: None,
                    diagnostic: text(n.pointer("/complaint/complaintFeedbackType")),
                    source: "ses",
                    outbox_id,
                    at: now,
                });
            }
        }
        // Delivery, Send, Open, ...: nothing to act on.
        _ => {}
    }
    out
}

// ---------------------------------------------------------------------------
// Postmark

fn postmark(
    b: &BounceSettings,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<Event>, Refused> {
    let p = b.postmark.as_ref().expect("checked by the caller");
    let given = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .ok_or_else(|| unauthorized("basic auth required ([bounces.webhooks.postmark])"))?;
    let want = format!("{}:{}", p.username, p.password);
    if !constant_time_eq(&given, want.as_bytes()) {
        return Err(unauthorized("wrong user or password"));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let record = v.get("RecordType").and_then(Value::as_str).unwrap_or("");
    let kind = match (record, v.get("Type").and_then(Value::as_str).unwrap_or("")) {
        ("SpamComplaint", _) | (_, "SpamComplaint") => Kind::Complaint,
        ("Bounce", "HardBounce" | "BadEmailAddress" | "Blocked") => Kind::Hard,
        ("Bounce", "SoftBounce" | "Transient" | "DnsError" | "MailboxFull" | "Undeliverable") => {
            Kind::Soft
        }
        // AutoResponder, Unsubscribe, ...: not a failure of the address.
        ("Bounce", _) => return Ok(Vec::new()),
        (other, _) if other.is_empty() => return Err(bad("no RecordType")),
        // Delivery, Open, Click, SubscriptionChange: not ours to act on.
        _ => return Ok(Vec::new()),
    };
    let address = address(v.get("Email")).ok_or_else(|| bad("no valid Email"))?;
    let id = text(v.get("ID"));
    let details = text(v.get("Details"));
    Ok(vec![Event {
        key: event_key("postmark", &[record, &id, address.as_str()]),
        status: super::dsn::status_code(&details),
        diagnostic: if details.is_empty() {
            text(v.get("Description"))
        } else {
            details
        },
        address,
        kind,
        source: "postmark",
        outbox_id: None,
        at: now,
    }])
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

// ---------------------------------------------------------------------------
// SendGrid

const SENDGRID_SIGNATURE: &str = "x-twilio-email-event-webhook-signature";
const SENDGRID_TIMESTAMP: &str = "x-twilio-email-event-webhook-timestamp";

fn sendgrid(
    b: &BounceSettings,
    headers: &HeaderMap,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<Event>, Refused> {
    use p256::ecdsa::signature::Verifier as _;
    let s = b.sendgrid.as_ref().expect("checked by the caller");
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let sig = header(SENDGRID_SIGNATURE)
        .and_then(|v| {
            base64::engine::general_purpose::STANDARD
                .decode(v.trim())
                .ok()
        })
        .ok_or_else(|| unauthorized("no event webhook signature"))?;
    let timestamp =
        header(SENDGRID_TIMESTAMP).ok_or_else(|| unauthorized("no event webhook timestamp"))?;
    let sig = p256::ecdsa::Signature::from_der(&sig)
        .map_err(|_| unauthorized("the signature is not DER ECDSA"))?;
    let mut signed = Vec::with_capacity(timestamp.len() + body.len());
    signed.extend_from_slice(timestamp.as_bytes());
    signed.extend_from_slice(body);
    s.public_key
        .verify(&signed, &sig)
        .map_err(|_| unauthorized("the event webhook signature does not verify"))?;
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let list = v
        .as_array()
        .ok_or_else(|| bad("expected a JSON array of events"))?;
    let mut out = Vec::new();
    for e in list {
        let event = e.get("event").and_then(Value::as_str).unwrap_or("");
        let status = e.get("status").and_then(Value::as_str).map(str::to_owned);
        let kind = match event {
            "spamreport" => Kind::Complaint,
            "bounce" if e.get("type").and_then(Value::as_str) == Some("blocked") => Kind::Soft,
            "bounce" => status
                .as_deref()
                .and_then(Kind::from_status)
                .unwrap_or(Kind::Hard),
            _ => continue,
        };
        let Some(address) = address(e.get("email")) else {
            continue;
        };
        let id = text(e.get("sg_event_id"));
        out.push(Event {
            key: event_key("sendgrid", &[&id, address.as_str(), event]),
            address,
            kind,
            status,
            diagnostic: text(e.get("reason")),
            source: "sendgrid",
            outbox_id: None,
            at: now,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------
// Mailgun

fn mailgun(
    hooks: &WebhookState,
    b: &BounceSettings,
    body: &[u8],
    now: DateTime<Utc>,
) -> Result<Vec<Event>, Refused> {
    use hmac::{Hmac, Mac};
    let m = b.mailgun.as_ref().expect("checked by the caller");
    let v: Value = serde_json::from_slice(body).map_err(|e| bad(format!("not JSON: {e}")))?;
    let sig = v
        .get("signature")
        .ok_or_else(|| unauthorized("no signature"))?;
    let timestamp = text(sig.get("timestamp"));
    let token = text(sig.get("token"));
    let given =
        hex::decode(text(sig.get("signature"))).map_err(|_| unauthorized("bad signature"))?;
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(m.signing_key.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(token.as_bytes());
    mac.verify_slice(&given)
        .map_err(|_| unauthorized("the signature does not verify"))?;
    let at: i64 = timestamp
        .parse()
        .map_err(|_| unauthorized("bad timestamp"))?;
    if (now.timestamp() - at).unsigned_abs() > MAILGUN_WINDOW.as_secs() {
        return Err(unauthorized(
            "the signature is too old (replay protection: 15 minutes)",
        ));
    }
    {
        let mut seen = hooks.mailgun_tokens.lock().expect("not poisoned");
        seen.retain(|_, t| t.elapsed() < MAILGUN_WINDOW * 2);
        if seen.insert(token.clone(), Instant::now()).is_some() {
            return Err(unauthorized("this token was used already (replay)"));
        }
    }
    let data = v.get("event-data").ok_or_else(|| bad("no event-data"))?;
    let event = data.get("event").and_then(Value::as_str).unwrap_or("");
    let kind = match (event, data.get("severity").and_then(Value::as_str)) {
        ("complained", _) => Kind::Complaint,
        ("failed", Some("permanent")) => Kind::Hard,
        ("failed", _) => Kind::Soft,
        _ => return Ok(Vec::new()),
    };
    let address = address(data.get("recipient")).ok_or_else(|| bad("no valid recipient"))?;
    let code = text(data.pointer("/delivery-status/code"));
    let message = text(data.pointer("/delivery-status/message"));
    let description = text(data.pointer("/delivery-status/description"));
    let diagnostic = format!("{code} {message} {description}").trim().to_owned();
    let status = data
        .pointer("/delivery-status/enhanced-code")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| super::dsn::status_code(&diagnostic));
    let id = text(data.get("id"));
    let sender = text(data.pointer("/envelope/sender"));
    Ok(vec![Event {
        key: event_key("mailgun", &[&id, address.as_str(), event]),
        address,
        kind,
        status,
        diagnostic,
        source: "mailgun",
        outbox_id: hooks.outbox_of(&sender),
        at: now,
    }])
}
