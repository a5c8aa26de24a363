//! Shared by the subscriber pages and the admin API: reading form or JSON
//! bodies into fields, choosing HTML or JSON answers, and mapping errors to
//! responses (4xx with a message a person can act on; an opaque 500 with the
//! cause chain in the log).

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::Json;
use minijinja::Value;

use crate::config::Settings;
use crate::subscribers::{views, SubscriberError};

/// Fields of a form or JSON object, in order; a JSON array becomes repeated fields.
#[derive(Debug, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn all(&self, key: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Form,
    Json,
    /// No body and no content type (a bare POST, e.g. from curl or a JSON client).
    Empty,
}

fn content_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
}

/// Whether the client wants JSON: it sent JSON or asked for it.
pub fn wants_json(headers: &HeaderMap) -> bool {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    accept.contains("application/json")
        || content_type(headers).as_deref() == Some("application/json")
}

/// Parses a form (`application/x-www-form-urlencoded`) or JSON body. Any other
/// content type is a 415; a malformed body is a 400.
pub fn read_fields(headers: &HeaderMap, body: &Bytes) -> Result<(Fields, BodyKind), Problem> {
    match content_type(headers).as_deref() {
        Some("application/x-www-form-urlencoded") => {
            if std::str::from_utf8(body).is_err() {
                return Err(Problem::new(StatusCode::BAD_REQUEST, "the form data is not UTF-8 text"));
            }
            let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect();
            Ok((Fields(pairs), BodyKind::Form))
        }
        Some("application/json") => {
            let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| {
                Problem::new(StatusCode::BAD_REQUEST, format!("the body is not valid JSON: {e}"))
            })?;
            let serde_json::Value::Object(map) = value else {
                return Err(Problem::new(StatusCode::BAD_REQUEST, "the JSON body must be an object, e.g. {\"email\": \"ada@example.com\"}"));
            };
            let mut pairs = Vec::new();
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) => pairs.push((k, s)),
                    serde_json::Value::Null => {}
                    serde_json::Value::Array(items) => {
                        for item in items {
                            match item {
                                serde_json::Value::String(s) => pairs.push((k.clone(), s)),
                                _ => return Err(Problem::new(StatusCode::BAD_REQUEST, format!("{k}: expected a list of strings"))),
                            }
                        }
                    }
                    _ => return Err(Problem::new(StatusCode::BAD_REQUEST, format!("{k}: expected a string or a list of strings"))),
                }
            }
            Ok((Fields(pairs), BodyKind::Json))
        }
        None if body.is_empty() => Ok((Fields::default(), BodyKind::Empty)),
        other => Err(Problem::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {:?}: send application/x-www-form-urlencoded (an HTML form) or application/json",
                other.unwrap_or("none")
            ),
        )),
    }
}

/// A 4xx (or opaque 5xx) answer, rendered as HTML or JSON by [`Responder`].
#[derive(Debug)]
pub struct Problem {
    pub status: StatusCode,
    pub message: String,
    pub field: Option<&'static str>,
}

impl Problem {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            field: None,
        }
    }

    /// Maps a service error; unexpected ones are logged with their cause chain.
    pub fn from_service(e: SubscriberError) -> Self {
        match e {
            SubscriberError::Invalid { field, message } => Self {
                status: StatusCode::BAD_REQUEST,
                message: format!("{field}: {message}"),
                field: Some(field),
            },
            SubscriberError::UnknownToken => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            SubscriberError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, e.to_string()),
            SubscriberError::Exists(_) => Self::new(StatusCode::CONFLICT, e.to_string()),
            other => Self::internal(&other),
        }
    }

    pub fn internal(e: &dyn std::error::Error) -> Self {
        let mut chain = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            chain.push_str(": ");
            chain.push_str(&s.to_string());
            source = s.source();
        }
        tracing::error!(error = %chain, "request failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "something went wrong on our side; please try again later",
        )
    }
}

/// Answers in the form the client asked for.
pub struct Responder {
    pub settings: Arc<Settings>,
    pub json: bool,
}

/// Every page handler starts from the current settings and whether the
/// client asked for JSON.
impl axum::extract::FromRequestParts<super::AppState> for Responder {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &super::AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Responder {
            settings: state.snapshot().settings.clone(),
            json: wants_json(&parts.headers),
        })
    }
}

impl Responder {
    pub fn page(&self, status: StatusCode, name: &str, ctx: Value) -> Response {
        match views::render(&self.settings, name, ctx) {
            Ok(html) => (status, no_store(), Html(html)).into_response(),
            Err(e) => self.problem(Problem::internal(&e)),
        }
    }

    pub fn json(&self, status: StatusCode, value: serde_json::Value) -> Response {
        (status, no_store(), Json(value)).into_response()
    }

    /// A page with a heading, paragraphs and an optional link (or the same as JSON).
    pub fn message(
        &self,
        heading: &str,
        paragraphs: &[&str],
        link: Option<(&str, &str)>,
        json: serde_json::Value,
    ) -> Response {
        if self.json {
            return self.json(StatusCode::OK, json);
        }
        let link = link.map(|(href, text)| serde_json::json!({"href": href, "text": text}));
        self.page(
            StatusCode::OK,
            "pages/message.html",
            minijinja::context! {
                heading => heading,
                paragraphs => paragraphs,
                link => Value::from_serialize(link),
            },
        )
    }

    pub fn problem(&self, p: Problem) -> Response {
        if self.json {
            let mut body = serde_json::json!({ "error": p.message });
            if let Some(f) = p.field {
                body["field"] = f.into();
            }
            return self.json(p.status, body);
        }
        let heading = match p.status {
            StatusCode::NOT_FOUND => "This link is not valid",
            StatusCode::TOO_MANY_REQUESTS => "Too many requests",
            s if s.is_server_error() => "Something went wrong",
            _ => "That did not work",
        };
        let ctx = minijinja::context! {
            heading => heading,
            message => p.message,
            subscribe_url => views::url(&crate::subscribers::link(&self.settings, "subscribe")),
        };
        match views::render(&self.settings, "pages/error.html", ctx) {
            Ok(html) => (p.status, no_store(), Html(html)).into_response(),
            Err(e) => {
                tracing::error!(error = %e, "cannot render the error page");
                (p.status, p.message).into_response()
            }
        }
    }
}

/// Pages carrying tokens must not be cached by proxies or browsers.
fn no_store() -> [(header::HeaderName, &'static str); 2] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}
