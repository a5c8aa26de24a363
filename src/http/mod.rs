//! The HTTP interface (axum): feeds, health and metrics, the public archive,
//! subscriber pages and the admin API, one file per resource. Handlers read the current snapshot;
//! none of them changes state on GET (DESIGN.md invariant 1).

pub mod admin;
mod api;
mod archive;
pub mod client_ip;
mod confirm;
mod feeds;
mod health;
mod preferences;
pub mod respond;
pub mod server;
mod subscribe;
mod unsubscribe;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::publisher::Snapshot;
use crate::store::Db;

/// Shared by every handler; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub db: Db,
    pub metrics: PrometheusHandle,
    /// Current problems of the daemon's components (`/healthz`).
    pub health: Arc<crate::health::Health>,
    /// Wake-up handles: handlers that queue mail wake the delivery worker.
    pub signals: crate::signals::Signals,
    /// Signs and checks the sign-up form's render time.
    pub form_key: Arc<crate::keys::ServerKey>,
    /// Certificate cache and replay protection of `/webhooks/`.
    pub webhooks: Arc<crate::bounces::webhooks::WebhookState>,
    /// Signs and checks the links in confirmation and manage URLs.
    pub links: Arc<crate::subscribers::links::LinkKey>,
    /// The operator console's throttles and caches.
    pub admin: Arc<admin::AdminState>,
}

impl AppState {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/feeds/{*path}", get(feeds::serve))
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(health::metrics))
        .route("/archive/{edition}", get(archive::add_slash))
        .route("/archive/{edition}/", get(archive::index))
        .route("/archive/{edition}/atom.xml", get(archive::atom))
        .route("/archive/{edition}/{date}", get(archive::add_slash))
        .route("/archive/{edition}/{date}/", get(archive::issue))
        .merge(subscriber_routes())
        .layer(middleware::from_fn(track))
        .layer(tower_http::limit::RequestBodyLimitLayer::new(64 * 1024))
        // The console sets its own body limits (CSV uploads are larger).
        .merge(admin::routes().layer(middleware::from_fn(track)))
        // ESPs post batches (SendGrid up to a thousand events at once).
        .merge(
            Router::new()
                .route(
                    "/webhooks/{provider}",
                    axum::routing::post(crate::bounces::webhooks::receive),
                )
                .layer(middleware::from_fn(track))
                .layer(tower_http::limit::RequestBodyLimitLayer::new(
                    2 * 1024 * 1024,
                )),
        )
        .with_state(state)
}

/// Subscriber pages (sign-up, confirm, preferences, unsubscribe) and the
/// subscriber admin API.
pub fn subscriber_routes() -> Router<AppState> {
    use axum::routing::post;
    let limiter = std::sync::Arc::new(subscribe::SignUpLimiter::default());
    Router::new()
        .route("/subscribe", get(subscribe::form).post(subscribe::submit))
        .route("/confirm/{token}", get(confirm::show).post(confirm::submit))
        .route(
            "/preferences",
            get(preferences::recover_form).post(preferences::recover_submit),
        )
        .route(
            "/preferences/{token}",
            get(preferences::show).post(preferences::submit),
        )
        .route(
            "/unsubscribe/{token}",
            get(unsubscribe::show).post(unsubscribe::submit),
        )
        .route("/api/v1/subscribers", get(api::list).post(api::create))
        .route("/api/v1/subscribers/export", get(api::export_csv))
        .route("/api/v1/subscribers/import", post(api::import_csv))
        .route(
            "/api/v1/subscribers/{key}",
            get(api::get_one).patch(api::update).delete(api::delete),
        )
        .layer(axum::Extension(limiter))
}

/// Counts requests by route and status, and logs slow ones.
async fn track(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("casewire_http_requests_total", "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("casewire_http_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The HTTP server task.
pub struct HttpServer {
    pub listener: tokio::net::TcpListener,
    pub state: AppState,
}

impl HttpServer {
    /// Serves until `shutdown`, then drains: see [`server::serve`].
    pub async fn run(self, shutdown: CancellationToken) {
        let limits = server::Limits::from_settings(&self.state.snapshot().settings.http);
        tracing::info!(
            max_connections = limits.max_connections,
            max_connections_per_ip = limits.max_connections_per_ip,
            "HTTP connection caps"
        );
        server::serve(self.listener, router(self.state), limits, shutdown).await;
    }
}
