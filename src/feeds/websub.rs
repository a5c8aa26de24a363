//! WebSub publishing: after feeds change, tell the hub which feed URLs
//! changed (`hub.mode=publish`), retrying with exponential backoff.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Receives lists of changed feed URLs and POSTs them to the hub.
pub struct WebSubNotifier {
    pub hub: url::Url,
    pub client: reqwest::Client,
    pub rx: mpsc::UnboundedReceiver<Vec<url::Url>>,
}

impl WebSubNotifier {
    pub async fn run(mut self, shutdown: CancellationToken) {
        loop {
            let urls = tokio::select! {
                _ = shutdown.cancelled() => return,
                msg = self.rx.recv() => match msg { Some(u) => u, None => return },
            };
            for url in urls {
                let send = || publish(&self.client, &self.hub, &url);
                let result = send
                    .retry(
                        ExponentialBuilder::default()
                            .with_min_delay(Duration::from_millis(500))
                            .with_max_delay(Duration::from_secs(60))
                            .with_max_times(5)
                            .with_jitter(),
                    )
                    .notify(|e, after| tracing::warn!(hub = %crate::config::redact(self.hub.as_str()), feed = %url, "WebSub publish failed, retrying in {after:?}: {e}"))
                    .await;
                match result {
                    Ok(()) => {
                        metrics::counter!("casewire_websub_notifications_total", "result" => "ok")
                            .increment(1);
                        tracing::info!(hub = %crate::config::redact(self.hub.as_str()), feed = %url, "notified WebSub hub");
                    }
                    Err(e) => {
                        metrics::counter!("casewire_websub_notifications_total", "result" => "failed").increment(1);
                        tracing::error!(hub = %crate::config::redact(self.hub.as_str()), feed = %url, "WebSub publish gave up: {e}");
                    }
                }
            }
        }
    }
}

async fn publish(client: &reqwest::Client, hub: &url::Url, feed: &url::Url) -> Result<(), String> {
    let response = client
        .post(hub.clone())
        .form(&[("hub.mode", "publish"), ("hub.url", feed.as_str())])
        .send()
        .await
        .map_err(|e| e.without_url().to_string())?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("hub answered {}", response.status()))
    }
}
