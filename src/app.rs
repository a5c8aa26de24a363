//! Wires the daemon: opens the database, starts the publisher, the content
//! watcher, upstream pollers, WebSub notifier and HTTP server as tracked
//! tasks, and owns shutdown (SIGTERM/SIGINT) and reload (SIGHUP): the wake-up
//! handles are made once here ([`Signals`]), and the tasks whose settings a
//! reload can change (delivery, content watcher, upstream pollers) are
//! replaced when their section changes.

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
use crate::signals::Signals;
use crate::store::ledger::Ledger;
use crate::store::Db;

/// How long shutdown waits for in-flight work.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(9);

/// A task that a reload can replace: its own cancellation token (a child of
/// the app's) and the tracker of what it spawned.
struct Slot {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Slot {
    fn new(parent: &CancellationToken) -> Self {
        Self {
            stop: parent.child_token(),
            tasks: TaskTracker::new(),
        }
    }

    /// Stops the slot's tasks and waits for them (in-flight SMTP
    /// transactions finish and their results commit) under the deadline.
    async fn stop(self, what: &str) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(SHUTDOWN_DEADLINE, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("{what} did not stop within the deadline");
        }
    }
}

/// What every reloadable task needs to be started again.
struct Parts {
    db: Db,
    publisher: mpsc::Sender<Command>,
    signals: Signals,
    health: Arc<crate::health::Health>,
    shutdown: CancellationToken,
}

impl Parts {
    /// The delivery worker for `[mail]`.
    fn worker(&self, settings: &Arc<Settings>) -> anyhow::Result<Slot> {
        let mailer = crate::delivery::Mailer::from_settings(&settings.mail)
            .context("setting up the mail transport")?;
        // The worker builds its own; this reports a bad key before it starts.
        crate::delivery::compose::Composer::new(settings).context("setting up the composer")?;
        let slot = Slot::new(&self.shutdown);
        let mut options = crate::delivery::WorkerOptions::new(settings);
        // One breaker for the process, reporting to the app's health registry;
        // a new relay (a reload) starts healthy until it fails.
        self.health.clear("relay");
        options.relay = Arc::new(crate::delivery::relay::Relay::new(
            mailer.target(),
            self.health.clone(),
        ));
        let worker = crate::delivery::DeliveryWorker {
            db: self.db.clone(),
            settings: settings.clone(),
            mailer: mailer.clone(),
            wake: self.signals.outbox.clone(),
            options,
            progress: Default::default(),
        };
        let stop = slot.stop.clone();
        slot.tasks.spawn(async move {
            worker.run(stop).await;
            mailer.shutdown().await;
        });
        // Rows may be due already (queued while the previous worker stopped).
        self.signals.outbox_queued();
        Ok(slot)
    }

    /// The watcher of `[content] dir`.
    fn watcher(&self, settings: &Settings) -> Slot {
        self.watch(ContentWatcher::new(
            settings.content.dir.clone(),
            WATCH_DEBOUNCE,
            self.publisher.clone(),
        ))
    }

    /// Runs a watcher that is already watching.
    fn watch(&self, watcher: ContentWatcher) -> Slot {
        let slot = Slot::new(&self.shutdown);
        slot.tasks.spawn(watcher.run(slot.stop.clone()));
        slot
    }

    /// One poller per `[content] sources` entry.
    fn pollers(&self, settings: &Arc<Settings>) -> Slot {
        let slot = Slot::new(&self.shutdown);
        let client = UpstreamPoller::client();
        for source in &settings.content.sources {
            slot.tasks.spawn(
                UpstreamPoller {
                    source: source.clone(),
                    settings: settings.clone(),
                    client: client.clone(),
                    tx: self.publisher.clone(),
                }
                .run(slot.stop.clone()),
            );
        }
        slot
    }
}

/// A started daemon. Dropping it does not stop it: call [`RunningApp::stop`].
pub struct RunningApp {
    pub addr: SocketAddr,
    pub db: Db,
    pub snapshot: watch::Receiver<Arc<Snapshot>>,
    pub publisher: mpsc::Sender<Command>,
    /// Every wake-up handle of the daemon's tasks.
    pub signals: Signals,
    /// Notified when newly published case studies were recorded.
    pub published: Arc<Notify>,
    /// Call `notify_one()` after committing outbox rows: the delivery worker
    /// starts on them at once instead of at its next poll.
    pub outbox_wake: Arc<Notify>,
    /// Current problems of the daemon's components (`/healthz`, `status`).
    pub health: Arc<crate::health::Health>,
    pub shutdown: CancellationToken,
    tracker: TaskTracker,
    parts: Parts,
    /// The settings the reloadable tasks below run with.
    running: Arc<Settings>,
    worker: Option<Slot>,
    watcher: Option<Slot>,
    pollers: Option<Slot>,
}

/// Long enough to gather one save's events (an editor's temp file and
/// rename), short enough that publishing stays well under 100 ms.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(20);

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
    // Checked before anything starts, so a bad [mail] section fails the start.
    crate::delivery::Mailer::from_settings(&settings.mail)
        .context("setting up the mail transport")?;
    // Pages and sign-up mail use a checked, fully loaded template set; a
    // faulty one is reported here and each template loads on first use.
    match crate::templates::prepare(&settings) {
        Ok(templates) => crate::templates::install(templates),
        Err(problems) => {
            for p in problems {
                tracing::error!("template error: {p}");
            }
        }
    }
    let form_key = Arc::new(
        crate::keys::ServerKey::load_or_create(&settings.http.form_key_file)
            .context("loading the server key ([http] form_key_file)")?,
    );
    let listener = tokio::net::TcpListener::bind(settings.http.listen)
        .await
        .with_context(|| format!("cannot listen on {} ([http] listen)", settings.http.listen))?;
    let addr = listener.local_addr()?;

    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    let health = Arc::new(crate::health::Health::default());
    let signals = Signals::default();
    let (tx, rx) = mpsc::channel(256);
    // Watching starts before the first scan, so a file changed while the
    // scan runs (or right after the daemon answers) is queued for the
    // publisher, never missed until the periodic rescan.
    let watching = ContentWatcher::new(settings.content.dir.clone(), WATCH_DEBOUNCE, tx.clone());
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
    let (publisher, snapshot) = Publisher::start(
        settings.clone(),
        ledger,
        rx,
        signals.published.clone(),
        websub,
        health.clone(),
    )
    .await?;
    tracker.spawn(publisher.run(shutdown.clone()));
    tracker.spawn(
        Scheduler {
            db: db.clone(),
            snapshot: snapshot.clone(),
            signals: signals.clone(),
        }
        .run(shutdown.clone()),
    );
    let state = AppState {
        snapshot: snapshot.clone(),
        db: db.clone(),
        metrics,
        health: health.clone(),
        signals: signals.clone(),
        form_key: form_key.clone(),
        webhooks: Arc::new(crate::bounces::webhooks::WebhookState::new(Some(
            crate::bounces::verp::key(&form_key),
        ))),
        links: crate::subscribers::links::LinkKey::load_or_create(&settings.database.key_file)
            .context("loading the link key")?,
        admin: Arc::new(crate::http::admin::AdminState::new(&settings.admin)),
    };
    tracker.spawn(crate::telemetry::publish_tallies(
        db.clone(),
        shutdown.clone(),
    ));
    tracker.spawn(
        crate::bounces::rates::RateWatch {
            db: db.clone(),
            settings: settings.clone(),
        }
        .run(shutdown.clone()),
    );
    if settings.bounces.imap_url.is_some() {
        tracker.spawn(
            crate::bounces::imap::BounceMailbox {
                db: db.clone(),
                settings: settings.clone(),
                health: health.clone(),
                verp_key: Some(crate::bounces::verp::key(&form_key)),
            }
            .run(shutdown.clone()),
        );
    }
    let parts = Parts {
        db: db.clone(),
        publisher: tx.clone(),
        signals: signals.clone(),
        health: health.clone(),
        shutdown: shutdown.clone(),
    };
    let worker = parts.worker(&settings)?;
    let watcher = parts.watch(watching);
    let pollers = parts.pollers(&settings);
    tracker.spawn(HttpServer { listener, state }.run(shutdown.clone()));
    tracing::info!(%addr, "casewire is serving");
    Ok(RunningApp {
        addr,
        db,
        snapshot,
        publisher: tx,
        published: signals.published.clone(),
        outbox_wake: signals.outbox.clone(),
        signals,
        health,
        shutdown,
        tracker,
        parts,
        running: settings,
        worker: Some(worker),
        watcher: Some(watcher),
        pollers: Some(pollers),
    })
}

/// Keys that only a restart applies, with the section that names them.
fn restart_keys(old: &Settings, new: &Settings) -> Vec<&'static str> {
    let mut keys = Vec::new();
    if old.http.listen != new.http.listen {
        keys.push("[http] listen");
    }
    let caps = |h: &crate::config::HttpSettings| {
        (
            h.header_timeout,
            h.idle_timeout,
            h.max_connections,
            h.max_connections_per_ip,
        )
    };
    if caps(&old.http) != caps(&new.http) {
        keys.push("[http] timeouts and connection caps");
    }
    if old.database.url != new.database.url {
        keys.push("[database] url");
    }
    if old.http.form_key_file != new.http.form_key_file {
        keys.push("[http] form_key_file");
    }
    if old.bounces.imap_url != new.bounces.imap_url {
        keys.push("[bounces] imap_url");
    }
    if old.feeds.websub_hub != new.feeds.websub_hub {
        keys.push("[feeds] websub_hub");
    }
    keys
}

impl RunningApp {
    /// Applies new settings to every task (SIGHUP): the publisher rebuilds
    /// the catalog and feeds, and the scheduler sees the new editions in the
    /// snapshot; the delivery worker is replaced when `[mail]` changed, the
    /// content watcher when `[content] dir` did, the upstream pollers when
    /// `[content] sources` did. A new `[mail]` that cannot be set up keeps
    /// the running worker. Returns the keys that need a restart.
    pub async fn reload(&mut self, new: Settings) -> anyhow::Result<Vec<&'static str>> {
        let new = Arc::new(new);
        let old = self.running.clone();
        let restart = restart_keys(&old, &new);
        // Debug output covers every field of a section; equal text, equal settings.
        let changed =
            |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
        let mail_changed = changed(&old.mail, &new.mail);
        if mail_changed {
            // Refuse a [mail] that cannot be set up before stopping anything.
            crate::delivery::Mailer::from_settings(&new.mail).context("[mail] was not applied")?;
        }
        // The whole template set compiles and renders sample data before
        // anything is swapped; a fault keeps the running set and settings.
        let templates = crate::templates::prepare(&new).map_err(|problems| {
            let list: Vec<String> = problems.iter().map(ToString::to_string).collect();
            anyhow::anyhow!(
                "the templates have errors, so nothing was reloaded (the running configuration and templates stay in force):\n{}",
                list.join("\n")
            )
        })?;
        crate::templates::install(templates);
        self.publisher
            .send(Command::Reload(new.clone()))
            .await
            .context("the publisher has stopped")?;
        if mail_changed {
            // The old worker finishes its in-flight transactions and releases
            // its claimed rows before the new one claims anything.
            if let Some(old_worker) = self.worker.take() {
                old_worker.stop("the previous delivery worker").await;
            }
            self.worker = Some(self.parts.worker(&new)?);
            tracing::info!("[mail] applied: delivery restarted with the new settings");
        }
        if old.content.dir != new.content.dir {
            if let Some(w) = self.watcher.take() {
                w.stop("the content watcher").await;
            }
            self.watcher = Some(self.parts.watcher(&new));
            tracing::info!(dir = %new.content.dir.display(), "[content] dir applied");
        }
        if changed(&old.content.sources, &new.content.sources) {
            if let Some(p) = self.pollers.take() {
                p.stop("the upstream pollers").await;
            }
            self.pollers = Some(self.parts.pollers(&new));
            tracing::info!(
                sources = new.content.sources.len(),
                "[content] sources applied"
            );
        }
        for key in &restart {
            tracing::warn!("{key} changed: it takes effect at the next restart");
        }
        self.running = new;
        Ok(restart)
    }

    /// Stops intake, lets in-flight work finish under the deadline, then returns.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for (slot, what) in [
            (self.worker.take(), "the delivery worker"),
            (self.watcher.take(), "the content watcher"),
            (self.pollers.take(), "the upstream pollers"),
        ] {
            if let Some(slot) = slot {
                slot.stop(what).await;
            }
        }
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
    // Before anything serves: a SIGHUP that arrives while the daemon starts
    // (a service manager's reload right after start) must reload, not kill it.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let mut app = start(settings).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match Settings::load(&config_path) {
                Ok(new) => {
                    tracing::info!(config = %config_path.display(), "reloading configuration, templates and content");
                    if let Err(e) = app.reload(new).await {
                        tracing::error!("reload incomplete: {e:#}");
                    }
                }
                Err(e) => tracing::error!("reload rejected, the running configuration stays in force: {e}"),
            },
        }
    }
    tracing::info!("shutting down");
    app.stop().await;
    Ok(())
}
