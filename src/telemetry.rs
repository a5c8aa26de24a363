//! Metrics: one process-wide Prometheus recorder, rendered by `GET /metrics`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Installs the recorder on first use; later calls return the same handle.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests embedding the app); then ours only renders.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// How often [`publish_tallies`] reads the counts.
const TALLY_EVERY: std::time::Duration = std::time::Duration::from_secs(15);

/// Publishes the database's own counts as gauges, `casewire_outbox_messages{state}`
/// and `casewire_subscribers{status}`, until shutdown. Reading them is a few
/// rows (see [`crate::store::tallies`]); on PostgreSQL it also folds the
/// deltas the triggers appended, so they never pile up between console visits.
pub async fn publish_tallies(db: crate::store::Db, shutdown: tokio_util::sync::CancellationToken) {
    use crate::store::tallies::{read, Tally};
    // Values once seen and now counted zero are set to 0, not left at their last count.
    let mut seen: std::collections::BTreeSet<(&str, String)> = Default::default();
    loop {
        for (tally, gauge, label) in [
            (Tally::Outbox, "casewire_outbox_messages", "state"),
            (Tally::Subscribers, "casewire_subscribers", "status"),
        ] {
            match read(&db, tally).await {
                Ok(counts) => {
                    for (g, key) in &seen {
                        if *g == gauge && !counts.iter().any(|(k, _)| k == key) {
                            metrics::gauge!(gauge, label => key.clone()).set(0.0);
                        }
                    }
                    for (key, n) in counts {
                        metrics::gauge!(gauge, label => key.clone()).set(n as f64);
                        seen.insert((gauge, key));
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the {gauge} counts"),
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(TALLY_EVERY) => {}
        }
    }
}
