//! Editions that pause themselves: when [`PAUSE_AFTER`] messages of one
//! edition in a row are refused after DATA (a message fault), the relay is
//! refusing the content itself, and sending the rest would only burn the
//! sender's reputation. The worker stores the pause (`store::edition_pauses`),
//! claims skip the edition's rows, and `casewire digest resume EDITION` lifts it.
//! Until the first message fault this costs one atomic load per message.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

/// Message faults in a row that pause an edition.
pub const PAUSE_AFTER: u32 = 10;

#[derive(Default)]
pub struct EditionPauses {
    /// True once any edition has a message fault counted or is paused.
    any: AtomicBool,
    /// A std Mutex: held only to count or look up, never across an await.
    state: std::sync::Mutex<State>,
}

#[derive(Default)]
struct State {
    in_a_row: HashMap<String, u32>,
    /// Paused editions, and whether the pause is stored yet.
    paused: HashMap<String, bool>,
    /// Pauses not stored yet: (edition, reason).
    to_store: Vec<(String, String)>,
}

impl EditionPauses {
    /// Whether `edition` paused itself in this process (its rows claimed
    /// before the pause was stored go back to the queue).
    pub fn is_paused(&self, edition: &str) -> bool {
        self.any.load(Ordering::Acquire)
            && self
                .state
                .lock()
                .expect("not poisoned")
                .paused
                .contains_key(edition)
    }

    /// A message of `edition` was judged otherwise than refused: the row is broken.
    pub fn judged(&self, edition: &str) {
        if self.any.load(Ordering::Acquire) {
            self.state
                .lock()
                .expect("not poisoned")
                .in_a_row
                .remove(edition);
        }
    }

    /// A message of `edition` was refused after DATA with `error`. Returns
    /// the reason when this pauses the edition.
    pub fn refused(&self, edition: &str, error: &str) -> Option<String> {
        self.any.store(true, Ordering::Release);
        let mut st = self.state.lock().expect("not poisoned");
        let n = st.in_a_row.entry(edition.to_owned()).or_default();
        *n += 1;
        if *n < PAUSE_AFTER || st.paused.contains_key(edition) {
            return None;
        }
        let reason = format!(
            "edition {edition} paused itself: {PAUSE_AFTER} messages in a row were refused after DATA, the last with \"{error}\" — the relay refuses this content; check it with `casewire digest preview {edition} --format eml`, then run `casewire digest resume {edition}`"
        );
        st.paused.insert(edition.to_owned(), false);
        st.to_store.push((edition.to_owned(), reason.clone()));
        Some(reason)
    }

    /// Pauses to store before the next claim.
    pub fn take_unstored(&self) -> Vec<(String, String)> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        std::mem::take(&mut self.state.lock().expect("not poisoned").to_store)
    }

    /// The pauses were stored: claims from now on skip their editions.
    pub fn stored(&self, pauses: &[(String, String)]) {
        let mut st = self.state.lock().expect("not poisoned");
        for (edition, _) in pauses {
            st.paused.insert(edition.clone(), true);
        }
    }

    /// Puts back pauses whose store failed.
    pub fn unstored(&self, pauses: Vec<(String, String)>) {
        self.state
            .lock()
            .expect("not poisoned")
            .to_store
            .extend(pauses);
    }

    /// A claim returned rows of `edition`: if its pause was stored before
    /// that claim, it was resumed since. Returns true then.
    pub fn resumed(&self, edition: &str) -> bool {
        if !self.any.load(Ordering::Acquire) {
            return false;
        }
        let mut st = self.state.lock().expect("not poisoned");
        if st.paused.get(edition) != Some(&true) {
            return false;
        }
        st.in_a_row.remove(edition);
        st.paused.remove(edition);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_refusals_in_a_row_pause_an_edition_once() {
        let p = EditionPauses::default();
        for _ in 0..PAUSE_AFTER - 1 {
            assert_eq!(p.refused("weekly", "554 5.7.1 rejected"), None);
        }
        p.judged("weekly");
        for _ in 0..PAUSE_AFTER - 1 {
            assert_eq!(p.refused("weekly", "554 5.7.1 rejected"), None);
        }
        assert!(!p.is_paused("weekly"));
        let reason = p.refused("weekly", "554 5.7.1 rejected").unwrap();
        assert!(reason.contains("casewire digest resume weekly"), "{reason}");
        assert!(p.is_paused("weekly") && !p.is_paused("daily"));
        assert_eq!(p.refused("weekly", "554 5.7.1 rejected"), None);
        let unstored = p.take_unstored();
        assert_eq!(unstored.len(), 1);
        assert!(p.take_unstored().is_empty());
        assert!(
            !p.resumed("weekly"),
            "rows claimed before the pause was stored"
        );
        p.stored(&unstored);
        assert!(p.resumed("weekly"));
        assert!(!p.is_paused("weekly"));
    }
}
