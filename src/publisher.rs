//! The publisher: the one task that owns the content pipeline. It turns
//! file changes, upstream entries, timers and reloads into a new catalog
//! snapshot, rebuilds only the feeds a change affects, writes them to
//! `feeds.out_dir`, records the publication ledger, and swaps the snapshot
//! that HTTP readers see, whole.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::content::{CaseStudy, Catalog, DirectoryStore};
use crate::feeds::cache::FeedCache;
use crate::feeds::{self, Scope};
use crate::health::Health;
use crate::store::ledger::Ledger;

/// What readers see: replaced whole, never modified.
#[derive(Debug)]
pub struct Snapshot {
    pub settings: Arc<Settings>,
    pub catalog: Arc<Catalog>,
    pub feeds: Arc<FeedCache>,
    pub built_at: DateTime<Utc>,
}

/// Requests to the publisher.
#[derive(Debug)]
pub enum Command {
    /// These files were created, modified or removed.
    FilesChanged(Vec<PathBuf>),
    /// Re-read the whole content folder.
    Rescan,
    /// The current entries of one upstream feed.
    Upstream {
        feed: url::Url,
        entries: Vec<CaseStudy>,
    },
    /// New settings (SIGHUP); everything is rebuilt.
    Reload(Arc<Settings>),
}

pub struct Publisher {
    settings: Arc<Settings>,
    files: Catalog,
    upstream: BTreeMap<url::Url, Vec<Arc<CaseStudy>>>,
    ledger: Ledger,
    rx: mpsc::Receiver<Command>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    /// Woken after newly published case studies were recorded (instant editions).
    published: Arc<Notify>,
    websub: Option<mpsc::UnboundedSender<Vec<url::Url>>>,
    last_now: DateTime<Utc>,
    /// Where a missing or unreadable content folder shows as degraded health.
    health: Arc<Health>,
}

impl Publisher {
    /// Loads the content, writes every feed and seeds or syncs the ledger, so
    /// the daemon serves complete feeds from its first request.
    pub async fn start(
        settings: Arc<Settings>,
        mut ledger: Ledger,
        rx: mpsc::Receiver<Command>,
        published: Arc<Notify>,
        websub: Option<mpsc::UnboundedSender<Vec<url::Url>>>,
        health: Arc<Health>,
    ) -> anyhow::Result<(Self, watch::Receiver<Arc<Snapshot>>)> {
        let now = Utc::now();
        // Without its folder the store cannot tell "no case studies" from
        // "not there": empty feeds would overwrite the good ones and the
        // ledger would be seeded empty. Refuse to start instead.
        if let Err(p) = DirectoryStore::new(&settings).check_root() {
            anyhow::bail!("{}: {}", p.path.display(), p.message);
        }
        let removed = feeds::output::remove_stale_temp_files(&settings.feeds.out_dir);
        if removed > 0 {
            tracing::info!(removed, dir = %settings.feeds.out_dir.display(), "removed temp files left by an interrupted feed write");
        }
        let s = settings.clone();
        let (files, all) = tokio::task::spawn_blocking(move || {
            let catalog = DirectoryStore::new(&s).scan(None);
            let all = feeds::build_all(&s, &catalog, now);
            (catalog, all)
        })
        .await?;
        for p in &files.problems {
            tracing::error!("{p}");
        }
        for w in files.warnings() {
            tracing::warn!("{w}");
        }
        metrics::gauge!("casewire_content_errors").set(files.problems.len() as f64);
        write_out(&settings, &all).await;
        let gone = feeds::output::remove_unlisted_archive_files(
            &settings.feeds.out_dir,
            all.iter().map(|f| f.path.as_str()),
        );
        if gone > 0 {
            tracing::info!(
                removed = gone,
                "removed archive documents that no longer exist"
            );
        }
        let (cache, _) = FeedCache::default().with(&all, now, None);
        let report = ledger.sync(&files, now).await?;
        if report.seeded > 0 {
            tracing::info!(
                seeded = report.seeded,
                "first start: recorded existing case studies without announcing them"
            );
        }
        if !report.announced.is_empty() {
            tracing::info!(slugs = ?report.announced, "newly published");
            published.notify_one();
        }
        metrics::counter!("casewire_feed_rebuilds_total").increment(1);
        tracing::info!(
            case_studies = files.len(),
            feeds = cache.len(),
            problems = files.problems.len(),
            "content loaded"
        );
        let snapshot = Arc::new(Snapshot {
            settings: settings.clone(),
            catalog: Arc::new(files.clone()),
            feeds: Arc::new(cache),
            built_at: now,
        });
        let (tx, snapshot_rx) = watch::channel(snapshot);
        Ok((
            Self {
                settings,
                files,
                upstream: BTreeMap::new(),
                ledger,
                rx,
                snapshot: tx,
                published,
                websub,
                last_now: now,
                health,
            },
            snapshot_rx,
        ))
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut rescan = tokio::time::interval(self.settings.content.rescan_interval);
        rescan.reset();
        loop {
            let current = self.snapshot.borrow().catalog.clone();
            // Sleep until the next scheduled case study is due, at most an hour at a time.
            let wake = current
                .next_scheduled(Utc::now())
                .map(|t| (t - Utc::now()).to_std().unwrap_or_default())
                .unwrap_or(std::time::Duration::from_secs(3600))
                .min(std::time::Duration::from_secs(3600));
            let mut commands = Vec::new();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                cmd = self.rx.recv() => match cmd {
                    Some(c) => commands.push(c),
                    None => return,
                },
                _ = tokio::time::sleep(wake + std::time::Duration::from_millis(5)) => {}
                _ = rescan.tick() => commands.push(Command::Rescan),
            }
            // Batch whatever else is already waiting.
            while let Ok(c) = self.rx.try_recv() {
                commands.push(c);
            }
            if let Err(e) = self.apply(commands).await {
                tracing::error!("publishing failed; the previous feeds stay in force: {e:#}");
            }
        }
    }

    async fn apply(&mut self, commands: Vec<Command>) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut changed_paths = Vec::new();
        let mut rescan = false;
        let mut reload = false;
        let mut fetched_sources = Vec::new();
        for c in commands {
            match c {
                Command::FilesChanged(p) => changed_paths.extend(p),
                Command::Rescan => rescan = true,
                Command::Upstream { feed, entries } => {
                    if !fetched_sources.contains(&feed) {
                        fetched_sources.push(feed.clone());
                    }
                    self.upstream
                        .insert(feed, entries.into_iter().map(Arc::new).collect());
                }
                Command::Reload(s) => {
                    // Entries of a source that is no longer configured go with it.
                    self.upstream
                        .retain(|feed, _| s.content.sources.iter().any(|src| &src.feed == feed));
                    self.settings = s;
                    reload = true;
                }
            }
        }
        let settings = self.settings.clone();
        let previous_files = self.files.clone();
        let files = if rescan || reload {
            let s = settings.clone();
            tokio::task::spawn_blocking(move || DirectoryStore::new(&s).scan(Some(&previous_files)))
                .await?
        } else if !changed_paths.is_empty() {
            let s = settings.clone();
            tokio::task::spawn_blocking(move || {
                DirectoryStore::new(&s).update(&previous_files, &changed_paths)
            })
            .await?
        } else {
            previous_files
        };
        let old_problems: Vec<String> = self
            .files
            .problems
            .iter()
            .map(ToString::to_string)
            .collect();
        for p in &files.problems {
            if !old_problems.contains(&p.to_string()) {
                tracing::error!("{p}");
            }
        }
        // Warnings of the files read again (a reused study is the same Arc).
        for s in files.all() {
            if !s.warnings.is_empty() && !self.files.all().iter().any(|o| Arc::ptr_eq(o, s)) {
                for w in &s.warnings {
                    tracing::warn!("{w}");
                }
            }
        }
        metrics::gauge!("casewire_content_errors").set(files.problems.len() as f64);
        match DirectoryStore::new(&settings).check_root() {
            Err(p) => {
                let message = format!(
                    "{}: {}; serving the last good feeds",
                    p.path.display(),
                    p.message
                );
                if self.health.report("content", &message) {
                    tracing::error!("{message}");
                }
            }
            Ok(()) => {
                if self.health.clear("content").is_some() {
                    tracing::info!("the content folder is back");
                }
            }
        }
        self.files = files;
        let catalog = Arc::new(self.compose());

        let now = Utc::now();
        let old = self.snapshot.borrow().clone();
        let scopes = if reload {
            Scope::all(&settings)
        } else {
            feeds::affected_scopes(&settings, &old.catalog, &catalog, self.last_now, now)
        };
        self.last_now = now;
        let (cache, changed) = if scopes.is_empty() {
            ((*old.feeds).clone(), Vec::new())
        } else {
            let (s, c) = (settings.clone(), catalog.clone());
            // A reload may change what every page says: render them all.
            let previous = (!reload).then(|| old.feeds.clone());
            let built = tokio::task::spawn_blocking(move || {
                feeds::build_since(&s, &c, &scopes, now, previous.as_deref())
            })
            .await?;
            write_out(&settings, &built.files).await;
            remove_out(&settings, &built.retired).await;
            let keep: Option<Vec<String>> =
                reload.then(|| built.files.iter().map(|f| f.path.clone()).collect());
            let (mut cache, changed) = old.feeds.with(&built.files, now, keep.as_deref());
            cache.retire(&built.retired);
            (cache, changed)
        };
        if !changed.is_empty() {
            metrics::counter!("casewire_feed_rebuilds_total").increment(1);
        }
        // A source's first fetch is its existing archive, not news.
        for feed in &fetched_sources {
            let entries = self
                .upstream
                .get(feed)
                .map(Vec::as_slice)
                .unwrap_or_default();
            let seeded = self.ledger.seed_source(feed, entries, now).await?;
            if seeded > 0 {
                tracing::info!(feed = %crate::config::redact(feed.as_str()), seeded, "first fetch of an upstream source: recorded its entries without announcing them");
            }
        }
        let report = self.ledger.sync(&catalog, now).await?;
        self.snapshot.send_replace(Arc::new(Snapshot {
            settings: settings.clone(),
            catalog,
            feeds: Arc::new(cache),
            built_at: now,
        }));
        if !report.announced.is_empty() {
            tracing::info!(slugs = ?report.announced, "newly published");
            self.published.notify_one();
        }
        if !changed.is_empty() {
            tracing::info!(feeds = changed.len(), elapsed = ?started.elapsed(), "feeds updated");
            if let Some(tx) = &self.websub {
                // Hubs announce current feeds; archive documents are fetched by following links.
                let _ = tx.send(
                    changed
                        .iter()
                        .filter(|p| !feeds::history::is_archive_path(p))
                        .map(|p| settings.feed_url(p))
                        .collect(),
                );
            }
        }
        Ok(())
    }

    /// Files first; an upstream entry whose slug a file already uses is dropped.
    fn compose(&self) -> Catalog {
        if self.upstream.is_empty() {
            return self.files.clone();
        }
        let mut studies: Vec<Arc<CaseStudy>> = self.files.all().to_vec();
        let mut seen: std::collections::HashSet<String> =
            studies.iter().map(|s| s.slug.to_string()).collect();
        for entries in self.upstream.values() {
            for e in entries {
                if seen.insert(e.slug.to_string()) {
                    studies.push(e.clone());
                }
            }
        }
        Catalog::new(studies, self.files.problems.clone(), self.files.drafts)
    }
}

/// Removes archive documents that no longer exist (their scope shrank).
async fn remove_out(settings: &Settings, paths: &[String]) {
    if paths.is_empty() {
        return;
    }
    let dir = settings.feeds.out_dir.clone();
    let paths = paths.to_vec();
    let _ = tokio::task::spawn_blocking(move || {
        for p in paths {
            match std::fs::remove_file(dir.join(&p)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %dir.join(&p).display(), "cannot remove a retired archive document: {e}"),
            }
        }
    })
    .await;
}

/// Writes feed files; a failure is logged and the daemon keeps serving from memory.
async fn write_out(settings: &Settings, files: &[feeds::FeedFile]) {
    let dir = settings.feeds.out_dir.clone();
    let files = files.to_vec();
    let result = tokio::task::spawn_blocking(move || feeds::output::write_all(&dir, &files)).await;
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::error!("{e}"),
        Err(e) => tracing::error!("writing feeds panicked: {e}"),
    }
}
