//! Watching the content folder: debounced file-system events (recursive, and
//! correct for editors that write a temp file and rename it over the old one)
//! become `FilesChanged` requests to the publisher. The publisher's periodic
//! rescan is the safety net for file systems that drop events.

use std::path::PathBuf;
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecommendedWatcher, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult, Debouncer, RecommendedCache};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::publisher::Command;

pub struct ContentWatcher {
    tx: mpsc::Sender<Command>,
    events: mpsc::UnboundedReceiver<DebounceEventResult>,
    /// Kept alive for as long as the task runs; None when watching failed.
    debouncer: Option<Debouncer<RecommendedWatcher, RecommendedCache>>,
}

impl ContentWatcher {
    /// Starts watching now, so no change made after this returns is missed.
    /// A folder that cannot be watched is logged; periodic rescans still run.
    pub fn new(dir: PathBuf, debounce: Duration, tx: mpsc::Sender<Command>) -> Self {
        let (events_tx, events) = mpsc::unbounded_channel::<DebounceEventResult>();
        let debouncer = new_debouncer(debounce, None, move |r: DebounceEventResult| {
            let _ = events_tx.send(r);
        })
        .and_then(|mut d| d.watch(&dir, RecursiveMode::Recursive).map(|()| d))
        .map_err(|e| {
            tracing::error!(
                "cannot watch {}: {e}; relying on periodic rescans",
                dir.display()
            )
        })
        .ok();
        Self {
            tx,
            events,
            debouncer,
        }
    }

    pub async fn run(mut self, shutdown: CancellationToken) {
        if self.debouncer.is_none() {
            shutdown.cancelled().await;
            return;
        }
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = self.events.recv() => match r { Some(r) => r, None => break },
            };
            let command = match result {
                Ok(events) => {
                    let mut paths: Vec<PathBuf> = Vec::new();
                    let mut rescan = false;
                    for e in events {
                        if matches!(e.kind, EventKind::Access(_)) {
                            continue;
                        }
                        for p in &e.paths {
                            // A folder moved or removed: its files are not named one by one.
                            if p.is_dir() || (p.extension().is_none() && !p.exists()) {
                                rescan = true;
                            }
                            paths.push(p.clone());
                        }
                        if e.need_rescan() {
                            rescan = true;
                        }
                    }
                    paths.sort();
                    paths.dedup();
                    if rescan {
                        Some(Command::Rescan)
                    } else if paths.is_empty() {
                        None
                    } else {
                        Some(Command::FilesChanged(paths))
                    }
                }
                Err(errors) => {
                    for e in errors {
                        tracing::warn!("file watcher: {e}");
                    }
                    Some(Command::Rescan)
                }
            };
            if let Some(c) = command {
                if self.tx.send(c).await.is_err() {
                    break;
                }
            }
        }
        if let Some(d) = self.debouncer.take() {
            d.stop_nonblocking();
        }
    }
}
