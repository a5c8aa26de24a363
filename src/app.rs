//! Wires the daemon: opens the database, starts the publisher, the content
//! watcher, upstream pollers, WebSub notifier and HTTP server as tracked
//! tasks, and owns shutdown (SIGTERM/SIGINT) and reload (SIGHUP).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Settings;
use crate::content::upstream::UpstreamPoller;
use crate::content::watcher::ContentWatcher;
use crate::editions::scheduler::Scheduler;
use crate::feeds::websub::WebSubNotifier;
use crate::http::{AppState, HttpServer};
use crate::publisher::{Command, Publisher, Snapshot};
use crate::store::ledger::Ledger;
use crate::store::Db;

/// How long shutdown waits for in-flight work.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(9);

/// A started daemon. Dropping it does not stop it: call [`RunningApp::stop`].
pub struct RunningApp {
    pub addr: SocketAddr,
    pub db: Db,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub publisher: mpsc::Sender<Command>,
    /// Notified when newly published case studies were recorded.
    pub published: Arc<Notify>,
    /// Call `notify_one()` after committing outbox rows: the delivery worker
    /// starts on them at once instead of at its next poll.
    pub outbox_wake: Arc<Notify>,
    /// Current problems of the daemon's components (`/healthz`, `status`).
    pub health: Arc<crate::health::Health>,
    pub shutdown: CancellationToken,
    tracker: TaskTracker,
}

/// Starts every task; returns once feeds are built and the listener is bound.
pub async fn start(settings: Settings) -> anyhow::Result<RunningApp> {
    let settings = Arc::new(settings);
    let metrics = crate::telemetry::metrics_handle();
    let db = Db::open(&settings.database.url)
        .await
        .context("opening the database")?;
    let ledger = Ledger::load(db.clone())
        .await
        .context("loading the publication ledger")?;
    let mailer = crate::delivery::Mailer::from_settings(&settings.mail)
        .context("setting up the mail transport")?;
    let listener = tokio::net::TcpListener::bind(settings.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([http] listen)", settings.http.listen))?;
    let addr = listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let health = Arc::new(crate::health::Health::default());
    let (tx, rx) = mpsc::channel(256);
    let published = Arc::new(Notify::new());
    let websub = settings.feeds.websub_hub.clone().map(|hub| {
        let (wtx, wrx) = mpsc::unbounded_channel();
        tracker.spawn(
            WebSubNotifier {
                hub,
                client: UpstreamPoller::client(),
                rx: wrx,
            }
            .run(shutdown.clone()),
        );
        wtx
    });
    let (publisher, snapshot) =
        Publisher::start(settings.clone(), ledger, rx, published.clone(), websub).await?;
    tracker.spawn(publisher.run(shutdown.clone()));
    tracker.spawn(
        ContentWatcher::new(
            settings.content.dir.clone(),
            Duration::from_millis(50),
            tx.clone(),
        )
        .run(shutdown.clone()),
    );
    let client = UpstreamPoller::client();
    for source in &settings.content.sources {
        tracker.spawn(
            UpstreamPoller {
                source: source.clone(),
                settings: settings.clone(),
                client: client.clone(),
                tx: tx.clone(),
            }
            .run(shutdown.clone()),
        );
    }
    let outbox_wake = Arc::new(Notify::new());
    tracker.spawn(
        Scheduler {
            db: db.clone(),
            snapshot: snapshot.clone(),
            published: published.clone(),
            outbox_wake: outbox_wake.clone(),
        }
        .run(shutdown.clone()),
    );
    let state = AppState {
        snapshot: snapshot.clone(),
        db: db.clone(),
        metrics,
        health: health.clone(),
    };
    tracker.spawn(HttpServer { listener, state }.run(shutdown.clone()));
    let outbox_wake = Arc::new(Notify::new());
    tracker.spawn(
        crate::delivery::DeliveryWorker {
            db: db.clone(),
            settings: settings.clone(),
            mailer,
            wake: outbox_wake.clone(),
            options: crate::delivery::WorkerOptions::new(&settings),
            progress: Default::default(),
        }
        .run(shutdown.clone()),
    );
    tracing::info!(%addr, "casewire is serving");
    Ok(RunningApp {
        addr,
        db,
        snapshot,
        publisher: tx,
        published,
        outbox_wake,
        health,
        shutdown,
        tracker,
    })
}

impl RunningApp {
    /// Stops intake, lets in-flight work finish under the deadline, then returns.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tracker.close();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown deadline passed; some tasks were still running");
        }
        self.db.pool.close().await;
    }
}

/// `casewire run`: start, then serve until SIGTERM or SIGINT; SIGHUP reloads.
pub async fn run(config_path: PathBuf, settings: Settings) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let app = start(settings).await?;
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match Settings::load(&config_path) {
                Ok(new) => {
                    tracing::info!(config = %config_path.display(), "reloading configuration, templates and content");
                    let current = app.snapshot.borrow().settings.clone();
                    if new.http.listen != current.http.listen || new.database.url != current.database.url {
                        tracing::warn!("[http] listen and [database] url take effect at the next restart");
                    }
                    crate::templates::reload();
                    let _ = app.publisher.send(Command::Reload(Arc::new(new))).await;
                }
                Err(e) => tracing::error!("reload rejected, the running configuration stays in force: {e}"),
            },
        }
    }
    tracing::info!("shutting down");
    app.stop().await;
    Ok(())
}
