//! `GET /feeds/...`: served from the in-memory cache with a strong ETag,
//! Last-Modified, 304 for conditional requests, gzip when accepted, and the
//! WebSub `Link` headers. Full RFC 5005 archive documents are cached as
//! immutable. HEAD is answered by axum from the same handler.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::AppState;

pub async fn serve(
    State(state): State<AppState>,
    Path(path): Path<String>,
    headers: HeaderMap,
) -> Response {
    let snapshot = state.snapshot();
    let Some(feed) = snapshot.feeds.get(&path) else {
        return (
            StatusCode::NOT_FOUND,
            "no such feed; try /feeds/rss.xml, /feeds/atom.xml or /feeds/feed.json\n",
        )
            .into_response();
    };
    let gzip = accepts_gzip(&headers);
    let etag = if gzip { &feed.etag_gzip } else { &feed.etag };
    let last_modified = httpdate::fmt_http_date(feed.last_modified.into());

    let not_modified = match headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
    {
        // If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2).
        Some(inm) => inm.split(',').map(str::trim).any(|t| {
            t == "*"
                || t.trim_start_matches("W/") == feed.etag
                || t.trim_start_matches("W/") == feed.etag_gzip
        }),
        None => headers
            .get(header::IF_MODIFIED_SINCE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v).ok())
            .is_some_and(|since| std::time::SystemTime::from(feed.last_modified) <= since),
    };

    let mut response = if not_modified {
        StatusCode::NOT_MODIFIED.into_response()
    } else if gzip {
        let mut r = Response::new(Body::from(feed.gzip()));
        r.headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
        r
    } else {
        Response::new(Body::from(feed.body.clone()))
    };
    let h = response.headers_mut();
    h.insert(
        header::ETAG,
        HeaderValue::from_str(etag).expect("hex etag is a valid header"),
    );
    h.insert(
        header::LAST_MODIFIED,
        HeaderValue::from_str(&last_modified).expect("http date is a valid header"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if feed.immutable {
            crate::feeds::history::FULL_PAGE_CACHE_CONTROL
        } else {
            "public, max-age=300"
        }),
    );
    h.insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    if !not_modified {
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(feed.format.content_type()),
        );
    }
    // Archive documents (they alone have a fingerprint) are not subscribed to.
    let archive = feed.fingerprint.is_some();
    if let Some(hub) = snapshot
        .settings
        .feeds
        .websub_hub
        .as_ref()
        .filter(|_| !archive)
    {
        let self_url = snapshot.settings.feed_url(&path);
        if let Ok(v) =
            HeaderValue::from_str(&format!("<{hub}>; rel=\"hub\", <{self_url}>; rel=\"self\""))
        {
            h.insert(header::LINK, v);
        }
    }
    response
}

/// Whether `Accept-Encoding` allows gzip (a `q=0` refuses it).
fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|part| {
            let mut it = part.split(';');
            let coding = it.next().unwrap_or("").trim();
            let q = it
                .find_map(|p| p.trim().strip_prefix("q="))
                .and_then(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            (coding.eq_ignore_ascii_case("gzip") || coding == "*") && q > 0.0
        })
}
