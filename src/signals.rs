//! The daemon's wake-up handles, made once in `app.rs` and handed to every
//! task that sends or waits for one, so that a sender and its receiver can
//! never hold two different handles.
//!
//! Every signal is a [`Notify`] used with `notify_one`: it keeps a permit for
//! a receiver that is busy when the signal arrives (a scheduler in the middle
//! of a tick, a worker in the middle of a claim), so the next wait returns at
//! once. `notify_waiters` would drop the signal in that case.

use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Newly published case studies were recorded in the ledger
    /// (publisher → scheduler, which runs instant editions).
    pub published: Arc<Notify>,
    /// Outbox rows were committed (HTTP handlers, scheduler, API → delivery
    /// worker, which claims them without waiting for its poll).
    pub outbox: Arc<Notify>,
}

impl Signals {
    /// Call after committing outbox rows.
    pub fn outbox_queued(&self) {
        self.outbox.notify_one();
    }

    /// Call after recording newly published case studies.
    pub fn published(&self) {
        self.published.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_signal_sent_while_the_receiver_is_busy_is_kept() {
        let s = Signals::default();
        // Nobody waits yet: the receiver is busy elsewhere.
        s.outbox_queued();
        tokio::time::timeout(Duration::from_secs(5), s.outbox.notified())
            .await
            .expect("the permit kept for the busy receiver");
    }
}
