//! Templates of the subscriber pages and transactional mail (minijinja, HTML
//! auto-escaped by file extension). A file under `[templates] dir` overrides
//! the built-in copy of the same name, so an operator can restyle pages
//! without rebuilding, and a fresh install works without a templates folder.

use std::path::Path;
use std::sync::Arc;

use minijinja::{Environment, Value};

use crate::config::Settings;

fn environment(dir: &Path) -> Arc<Environment<'static>> {
    crate::templates::cached(dir)
}

/// A URL for an `href` or `action`: HTML-escaped except for `/`, which
/// minijinja would write as `&#x2f;` — harmless to browsers, but entity-
/// encoded links in mail look like obfuscation to spam filters.
pub fn url(u: &str) -> Value {
    let mut out = String::with_capacity(u.len());
    for c in u.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c => out.push(c),
        }
    }
    Value::from_safe_string(out)
}

/// The values every template sees as `site`.
pub fn site(settings: &Settings) -> Value {
    minijinja::context! {
        title => settings.site.title,
        description => settings.site.description,
        base_url => url(settings.site.base_url.as_str()),
        language => settings.site.language,
    }
}

/// Renders `name` with `ctx` plus `site`.
pub fn render(settings: &Settings, name: &str, ctx: Value) -> Result<String, minijinja::Error> {
    let env = environment(&settings.templates.dir);
    let template = env.get_template(name)?;
    template.render(minijinja::context! { site => site(settings), ..ctx })
}

/// The categories and editions of the settings, marked as chosen, for forms.
pub fn choices_context(settings: &Settings, categories: &[String], edition: Option<&str>) -> Value {
    let cats: Vec<_> = settings
        .categories
        .iter()
        .map(|c| {
            serde_json::json!({
                "slug": c.slug.as_str(),
                "name": c.name,
                "description": c.description,
                "checked": categories.iter().any(|x| x == c.slug.as_str()),
            })
        })
        .collect();
    let default = settings.editions.first().map(|e| e.slug.as_str());
    let chosen = edition.or(default);
    let eds: Vec<_> = settings
        .editions
        .iter()
        .map(|e| {
            serde_json::json!({
                "slug": e.slug.as_str(),
                "name": e.name,
                "checked": Some(e.slug.as_str()) == chosen,
            })
        })
        .collect();
    minijinja::context! { categories => Value::from_serialize(cats), editions => Value::from_serialize(eds) }
}

/// The zone a form shows when the reader has chosen none: the zone of
/// `edition` when it sends at local time, else of the first edition that
/// does (what such a subscriber gets).
pub fn default_zone(settings: &Settings, edition: Option<&str>) -> Option<chrono_tz::Tz> {
    let local = |e: &&crate::config::Edition| e.local_time;
    edition
        .and_then(|slug| settings.edition(slug))
        .filter(local)
        .or_else(|| settings.editions.iter().find(local))
        .map(|e| e.timezone)
}

/// The time zone field of the sign-up and preferences forms: shown only when
/// an edition sends at local time. `chosen` is selected (else
/// [`default_zone`]); with `detect`, a few lines of script in the page select
/// the browser's zone instead, and without script the default stays.
pub fn zone_context(
    settings: &Settings,
    chosen: Option<&str>,
    edition: Option<&str>,
    detect: bool,
) -> Value {
    let local: Vec<&str> = settings
        .editions
        .iter()
        .filter(|e| e.local_time)
        .map(|e| e.name.as_str())
        .collect();
    if local.is_empty() {
        return minijinja::context! { zone_field => false };
    }
    zone_values(settings, chosen, edition, detect, &local)
}

/// The zone field's values, shown for `local` (names of editions); `check`
/// renders the field with them even when no edition sends at local time.
pub fn zone_values(
    settings: &Settings,
    chosen: Option<&str>,
    edition: Option<&str>,
    detect: bool,
    local: &[&str],
) -> Value {
    let chosen = chosen
        .and_then(|c| crate::domain::TimeZone::parse(c).ok())
        .map(|z| z.tz())
        .or_else(|| default_zone(settings, edition))
        .unwrap_or(chrono_tz::UTC);
    let now = chrono::Utc::now();
    let mut zones: Vec<chrono_tz::Tz> = crate::domain::listed_time_zones().collect();
    if !zones.contains(&chosen) {
        zones.insert(0, chosen);
    }
    let zones: Vec<_> = zones
        .into_iter()
        .map(|tz| {
            use chrono::Offset;
            let offset = now.with_timezone(&tz).offset().fix().local_minus_utc();
            let sign = if offset < 0 { '-' } else { '+' };
            let (h, m) = (offset.abs() / 3600, offset.abs() % 3600 / 60);
            // Names from the tz database hold only letters, digits and
            // `/_+-`: nothing to escape, and `/` stays readable.
            minijinja::context! {
                name => Value::from_safe_string(tz.name().to_owned()),
                label => Value::from_safe_string(format!("{} (UTC{sign}{h:02}:{m:02})", tz.name().replace('_', " "))),
                selected => tz == chosen,
            }
        })
        .collect();
    minijinja::context! {
        zone_field => true,
        zones => zones,
        zone_chosen => chosen.name(),
        zone_detect => detect,
        zone_editions => local.join(", "),
    }
}
