//! What is wrong with the daemon right now, in words an operator can act on.
//! Each task reports the problems of its own component (the relay, the
//! content folder, ...) and clears them when they are over; `/healthz`,
//! `casewire status` and the log read them from here. One registry per
//! running app, so that apps started side by side (tests) do not share it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

/// One component's current problem.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Problem {
    /// The component, e.g. `"relay"`, `"content"`.
    pub component: String,
    /// What is happening and what to do about it.
    pub message: String,
    /// When this problem started (kept while the message changes).
    pub since: DateTime<Utc>,
}

/// The registry. Cheap to share behind an `Arc`.
#[derive(Debug, Default)]
pub struct Health {
    /// A std Mutex: held only to read or replace an entry, never across an await.
    problems: std::sync::Mutex<BTreeMap<String, Problem>>,
}

impl Health {
    /// Records (or updates) `component`'s problem; returns true when the
    /// component was healthy until now, so the caller can log the change once.
    pub fn report(&self, component: &str, message: impl Into<String>) -> bool {
        let message = message.into();
        let mut problems = self.problems.lock().expect("not poisoned");
        match problems.get_mut(component) {
            Some(p) => {
                p.message = message;
                false
            }
            None => {
                problems.insert(
                    component.to_owned(),
                    Problem {
                        component: component.to_owned(),
                        message,
                        since: Utc::now(),
                    },
                );
                true
            }
        }
    }

    /// Clears `component`'s problem; returns the problem it had, if any.
    pub fn clear(&self, component: &str) -> Option<Problem> {
        self.problems
            .lock()
            .expect("not poisoned")
            .remove(component)
    }

    /// Every current problem, by component name.
    pub fn problems(&self) -> Vec<Problem> {
        self.problems
            .lock()
            .expect("not poisoned")
            .values()
            .cloned()
            .collect()
    }

    pub fn is_healthy(&self) -> bool {
        self.problems.lock().expect("not poisoned").is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_problem_is_reported_once_and_cleared() {
        let h = Health::default();
        assert!(h.is_healthy());
        assert!(h.report("relay", "refuses the sender"));
        let since = h.problems()[0].since;
        assert!(!h.report("relay", "still refuses the sender"));
        assert_eq!(h.problems()[0].since, since);
        assert_eq!(h.problems()[0].message, "still refuses the sender");
        assert!(!h.is_healthy());
        assert!(h.clear("relay").is_some());
        assert!(h.clear("relay").is_none());
        assert!(h.is_healthy());
    }
}
