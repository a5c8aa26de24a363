//! The rates mailbox providers judge a sender by: bounces and complaints
//! against messages sent, over the last 7 and 30 days. A task keeps them in
//! `/metrics` and warns in the log when one passes its threshold
//! (`[bounces] complaint_rate_warn`, `bounce_rate_warn`); `casewire status`
//! computes the same figures.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use crate::config::Settings;
use crate::store::bounces::{rates_since, Rates};
use crate::store::Db;

/// The windows reported, as (label, days).
pub const WINDOWS: [(&str, i64); 2] = [("7d", 7), ("30d", 30)];

/// Warnings for `rates` over `label`, in words an operator can act on.
pub fn warnings(settings: &Settings, label: &str, rates: &Rates) -> Vec<String> {
    let b = &settings.bounces;
    let mut out = Vec::new();
    if rates.sent == 0 {
        return out;
    }
    if rates.complaint_rate() > b.complaint_rate_warn {
        out.push(format!(
            "complaint rate {:.3}% over {label} is above {:.3}% ([bounces] complaint_rate_warn): Gmail and Yahoo reject bulk senders above 0.3%; check that every reader opted in and that unsubscribing is easy",
            rates.complaint_rate() * 100.0,
            b.complaint_rate_warn * 100.0
        ));
    }
    if rates.bounce_rate() > b.bounce_rate_warn {
        out.push(format!(
            "bounce rate {:.2}% over {label} is above {:.2}% ([bounces] bounce_rate_warn): an old or imported list? confirm addresses before mailing them",
            rates.bounce_rate() * 100.0,
            b.bounce_rate_warn * 100.0
        ));
    }
    out
}

/// Keeps the rate gauges current.
pub struct RateWatch {
    pub db: Db,
    pub settings: Arc<Settings>,
}

impl RateWatch {
    pub async fn run(self, shutdown: CancellationToken) {
        let mut warned: Vec<String> = Vec::new();
        loop {
            let mut now_warned = Vec::new();
            for (label, days) in WINDOWS {
                match rates_since(&self.db, Utc::now() - chrono::Duration::days(days)).await {
                    Ok(r) => {
                        metrics::gauge!("casewire_bounce_rate", "window" => label)
                            .set(r.bounce_rate());
                        metrics::gauge!("casewire_complaint_rate", "window" => label)
                            .set(r.complaint_rate());
                        metrics::gauge!("casewire_sent_messages", "window" => label)
                            .set(r.sent as f64);
                        for w in warnings(&self.settings, label, &r) {
                            let kind = w.split(" rate").next().unwrap_or("").to_owned() + label;
                            if !warned.contains(&kind) {
                                tracing::warn!("{w}");
                            }
                            now_warned.push(kind);
                        }
                    }
                    Err(e) => tracing::warn!("computing bounce and complaint rates: {e}"),
                }
            }
            warned = now_warned;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(60)) => {}
            }
        }
    }
}
