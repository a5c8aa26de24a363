//! Watching the content folder: debounced file-system events (recursive, and
//! correct for editors that write a temp file and rename it over the old one)
//! become `FilesChanged` requests to the publisher. The publisher's periodic
//! rescan is the safety net for file systems that drop events.

use std::path::PathBuf;
use std::time::Duration;

use notify_debouncer_full::notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{new_debouncer, DebounceEventResult};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::publisher::Command;

pub struct ContentWatcher {
    pub dir: PathBuf,
    pub debounce: Duration,
    pub tx: mpsc::Sender<Command>,
}

impl ContentWatcher {
    pub async fn run(self, shutdown: CancellationToken) {
        let (events_tx, mut events_rx) = mpsc::unbounded_channel::<DebounceEventResult>();
        let debouncer = new_debouncer(self.debounce, None, move |r: DebounceEventResult| {
            let _ = events_tx.send(r);
        });
        let mut debouncer = match debouncer {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(
                    "cannot watch {}: {e}; relying on periodic rescans",
                    self.dir.display()
                );
                shutdown.cancelled().await;
                return;
            }
        };
        if let Err(e) = debouncer.watch(&self.dir, RecursiveMode::Recursive) {
            tracing::error!(
                "cannot watch {}: {e}; relying on periodic rescans",
                self.dir.display()
            );
        }
        loop {
            let result = tokio::select! {
                _ = shutdown.cancelled() => break,
                r = events_rx.recv() => match r { Some(r) => r, None => break },
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
        debouncer.stop_nonblocking();
    }
}
