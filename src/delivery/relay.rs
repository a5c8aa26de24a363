//! Relay health: a circuit breaker shared by every delivery worker of the
//! process. A relay fault ([`super::policy::Fault::Relay`]) opens it: workers
//! stop sending, their rows go back to the queue untouched, and one message
//! at a time probes the relay, with a backoff doubling from one second to at
//! most [`PROBE_MAX`]. The first transaction the relay judges (sent, or a
//! fault of a recipient or message) closes it again. While it is closed the
//! only cost per message is one atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::policy;
use super::transport::DeliveryError;
use crate::health::Health;

/// The first probe comes this long after the relay failed.
pub const PROBE_MIN: Duration = Duration::from_secs(1);
/// Probes are never further apart than this.
pub const PROBE_MAX: Duration = Duration::from_secs(30);

/// The wait before the probe after one that failed `after`: doubled,
/// at least [`PROBE_MIN`], at most [`PROBE_MAX`].
pub fn next_probe_gap(after: Duration) -> Duration {
    (after * 2).clamp(PROBE_MIN, PROBE_MAX)
}

/// The breaker. Cheap to share behind an `Arc`.
pub struct Relay {
    /// `host:port` (or the .eml folder), for messages.
    target: String,
    /// True while paused: read by every message before it is sent.
    open: AtomicBool,
    /// A std Mutex: held only to read or change the state, never across an await.
    state: std::sync::Mutex<State>,
    /// Notified when the breaker changes or a probe ends.
    changed: Notify,
    health: Arc<Health>,
}

#[derive(Default)]
struct State {
    fault: Option<RelayFault>,
    /// A probe message is on its way.
    probing: bool,
    backoff: Duration,
    next_probe: Option<Instant>,
}

/// Why delivery is paused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayFault {
    /// When the relay first failed in this outage.
    pub since: DateTime<Utc>,
    /// The operator's sentence, e.g. `relay 127.0.0.1:25 refuses the
    /// sender since 10:42:03: "550 5.7.1 …" — check mail.from's domain …`.
    pub message: String,
}

/// A change of the breaker, for the log, metrics and the stored state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Paused(RelayFault),
    Resumed { paused_for: chrono::Duration },
}

/// What the claimer may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    /// The relay is healthy: claim as usual.
    Open,
    /// Paused, and it is time to probe: claim one message and send it.
    Probe,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("target", &self.target)
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl Relay {
    pub fn new(target: impl Into<String>, health: Arc<Health>) -> Self {
        Self {
            target: target.into(),
            open: AtomicBool::new(false),
            state: Default::default(),
            changed: Notify::new(),
            health,
        }
    }

    /// The health registry this breaker reports to (shared with the
    /// worker's other reports, e.g. paused editions).
    pub fn health(&self) -> &Arc<Health> {
        &self.health
    }

    /// True while delivery is paused. One atomic load.
    pub fn is_paused(&self) -> bool {
        self.open.load(Ordering::Acquire)
    }

    /// The current fault, if paused.
    pub fn fault(&self) -> Option<RelayFault> {
        self.state.lock().expect("not poisoned").fault.clone()
    }

    /// A send ended in a relay fault. `probe` tells whether it was the probe.
    /// Returns the change when this opened the breaker.
    pub fn failed(&self, error: &DeliveryError, probe: bool) -> Option<Change> {
        let mut st = self.state.lock().expect("not poisoned");
        let now = Instant::now();
        let change = if st.fault.is_none() {
            let since = Utc::now();
            let (what, rest) =
                policy::relay_advice(error.stage, error.reply.as_ref(), &error.detail);
            let message = format!(
                "relay {} {what} since {}: {rest}",
                self.target,
                since.format("%H:%M:%S")
            );
            let fault = RelayFault { since, message };
            st.fault = Some(fault.clone());
            st.backoff = PROBE_MIN;
            st.next_probe = Some(now + PROBE_MIN);
            self.open.store(true, Ordering::Release);
            self.health.report("relay", fault.message.clone());
            Some(Change::Paused(fault))
        } else {
            None
        };
        if probe {
            st.probing = false;
            st.backoff = next_probe_gap(st.backoff);
            st.next_probe = Some(now + st.backoff);
        }
        drop(st);
        self.changed.notify_waiters();
        change
    }

    /// A transaction reached the relay's judgement (sent, or refused for a
    /// reason of the recipient or message): the relay works. Returns the
    /// change when this closed the breaker.
    pub fn succeeded(&self) -> Option<Change> {
        if !self.is_paused() {
            return None;
        }
        let mut st = self.state.lock().expect("not poisoned");
        let fault = st.fault.take()?;
        *st = State::default();
        self.open.store(false, Ordering::Release);
        drop(st);
        self.health.clear("relay");
        self.changed.notify_waiters();
        Some(Change::Resumed {
            paused_for: Utc::now() - fault.since,
        })
    }

    /// The probe ended without a transaction (nothing was due, or the row
    /// was stopped by a send-time check): the next probe may start at once.
    pub fn probe_skipped(&self) {
        let mut st = self.state.lock().expect("not poisoned");
        st.probing = false;
        drop(st);
        self.changed.notify_waiters();
    }

    /// Waits until the claimer may claim: at once while healthy; while
    /// paused, until the next probe is due and no other probe is out.
    pub async fn gate(&self) -> Gate {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_paused() {
                return Gate::Open;
            }
            let until = {
                let mut st = self.state.lock().expect("not poisoned");
                if st.fault.is_none() {
                    return Gate::Open;
                }
                match st.next_probe {
                    _ if st.probing => None,
                    Some(at) if at > Instant::now() => Some(at),
                    _ => {
                        st.probing = true;
                        return Gate::Probe;
                    }
                }
            };
            match until {
                Some(at) => {
                    tokio::select! {
                        _ = &mut notified => {}
                        _ = tokio::time::sleep_until(at) => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::policy::{Reply, Stage};

    fn refused() -> DeliveryError {
        DeliveryError::new(
            Stage::MailFrom,
            Some(Reply::new(550, "5.7.1 Sender address rejected")),
            "",
        )
    }

    #[test]
    fn probes_back_off_from_one_second_to_at_most_thirty() {
        let mut gap = PROBE_MIN;
        let mut gaps = vec![gap.as_secs()];
        for _ in 0..6 {
            gap = next_probe_gap(gap);
            gaps.push(gap.as_secs());
        }
        assert_eq!(gaps, [1, 2, 4, 8, 16, 30, 30]);
    }

    #[tokio::test]
    async fn a_relay_fault_pauses_until_a_probe_succeeds() {
        let health = Arc::new(Health::default());
        let relay = Relay::new("127.0.0.1:25", health.clone());
        assert_eq!(relay.gate().await, Gate::Open);

        let Some(Change::Paused(fault)) = relay.failed(&refused(), false) else {
            panic!("the first fault pauses")
        };
        assert!(fault
            .message
            .starts_with("relay 127.0.0.1:25 refuses the sender since "));
        assert!(fault.message.ends_with(
            ": \"550 5.7.1 Sender address rejected\" — check mail.from's domain is allowed on the relay"
        ));
        assert_eq!(health.problems()[0].message, fault.message);
        assert!(relay.is_paused());
        // Other workers' failures while paused change nothing.
        assert_eq!(relay.failed(&refused(), false), None);

        // The first probe comes after PROBE_MIN; while it is out, no other.
        assert_eq!(relay.gate().await, Gate::Probe);
        let waiting = {
            let second = relay.gate();
            tokio::pin!(second);
            tokio::time::timeout(Duration::from_millis(50), &mut second)
                .await
                .is_err()
        };
        assert!(waiting, "a second probe waits for the first to end");
        relay.probe_skipped();
        assert_eq!(relay.gate().await, Gate::Probe);

        assert!(matches!(relay.succeeded(), Some(Change::Resumed { .. })));
        assert!(!relay.is_paused());
        assert!(health.is_healthy());
        assert_eq!(relay.gate().await, Gate::Open);
        assert_eq!(relay.succeeded(), None);
    }
}
