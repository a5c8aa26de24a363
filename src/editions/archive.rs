//! The public archive of edition runs: when a run starts, the case studies it
//! carries (those published since the edition's previous run, in the
//! edition's categories) are stored as an issue with a stable page key, so
//! every digest of the run can link to `/archive/{edition}/{key}/` ("view in
//! browser"). An issue holds only what all readers share: no name, address,
//! token or personal link.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};

use super::render;
use crate::config::{Edition, Settings};
use crate::content::{CaseStudy, Catalog};
use crate::store::archive::{self as store, Issue, NewIssue};
use crate::store::editions as runs;
use crate::store::Db;

/// `/archive/{edition}/`, absolute.
pub fn index_url(settings: &Settings, edition: &str) -> url::Url {
    settings
        .site
        .base_url
        .join(&format!("archive/{edition}/"))
        .expect("edition slugs are plain path segments")
}

/// `/archive/{edition}/{key}/`, absolute.
pub fn issue_url(settings: &Settings, edition: &str, key: &str) -> url::Url {
    settings
        .site
        .base_url
        .join(&format!("archive/{edition}/{key}/"))
        .expect("edition slugs and issue keys are plain path segments")
}

/// `/archive/{edition}/atom.xml`, absolute.
pub fn atom_url(settings: &Settings, edition: &str) -> url::Url {
    settings
        .site
        .base_url
        .join(&format!("archive/{edition}/atom.xml"))
        .expect("edition slugs are plain path segments")
}

/// When a run happened, from its window key (`cron:2026-12-07T07:00:00Z`,
/// `manual:…`); `now` for windows without a time (`events:42`).
pub fn window_time(window: &str, now: DateTime<Utc>) -> DateTime<Utc> {
    window
        .split_once(':')
        .and_then(|(_, t)| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
        .unwrap_or(now)
}

/// The issue of `window` (up to `high_water`): the one stored already when
/// the run is resumed, else a new one; None when the run carries no case
/// study of the edition (no empty pages).
pub async fn record(
    db: &Db,
    settings: &Settings,
    catalog: &Catalog,
    edition: &Edition,
    window: &str,
    high_water: i64,
    now: DateTime<Utc>,
) -> anyhow::Result<Option<Issue>> {
    let slug = edition.slug.as_str();
    if let Some(found) = store::by_window(db, slug, window).await? {
        return Ok(Some(found));
    }
    // The events above the edition's previous run; for its first run, those
    // its longest-standing subscriber is about to get.
    let lower = match store::previous_high_water(db, slug, window, high_water).await? {
        Some(h) => h,
        None => match runs::min_cursor(db, slug).await? {
            Some(c) => c,
            None => return Ok(None),
        },
    };
    let studies: Vec<Arc<CaseStudy>> = runs::events_between(db, lower, high_water)
        .await?
        .into_iter()
        .filter_map(|(_, s)| catalog.get(&s).cloned())
        .filter(|s| {
            edition.categories.is_empty()
                || s.categories.iter().any(|c| edition.categories.contains(c))
        })
        .collect();
    if studies.is_empty() {
        return Ok(None);
    }
    let content = render::issue_content(settings, edition, studies)
        .with_context(|| format!("preparing the {slug} archive issue"))?;
    let run_at = window_time(window, now);
    let local_date = run_at
        .with_timezone(&edition.timezone)
        .format("%Y-%m-%d")
        .to_string();
    let groups = serde_json::to_string(&content.groups).context("serializing the issue")?;
    let issue = store::record(
        db,
        &NewIssue {
            edition: slug,
            window,
            local_date: &local_date,
            run_at,
            high_water,
            subject: &content.subject,
            count: content.count as i64,
            content: &groups,
        },
        now,
    )
    .await?;
    tracing::info!(edition = slug, issue = %issue.key, case_studies = issue.count, "archive issue recorded");
    Ok(Some(issue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn window_time_reads_the_time_of_cron_and_manual_windows() {
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            window_time("cron:2026-12-07T07:00:00Z", now),
            Utc.with_ymd_and_hms(2026, 12, 7, 7, 0, 0).unwrap()
        );
        assert_eq!(
            window_time("manual:2026-12-07T07:00:01.250Z", now).timestamp_millis(),
            Utc.with_ymd_and_hms(2026, 12, 7, 7, 0, 1)
                .unwrap()
                .timestamp_millis()
                + 250
        );
        assert_eq!(window_time("events:42", now), now);
    }

    #[test]
    fn second_runs_of_a_date_get_a_numbered_key() {
        assert_eq!(store::issue_key("2026-12-07", 1), "2026-12-07");
        assert_eq!(store::issue_key("2026-12-07", 2), "2026-12-07-2");
    }
}
