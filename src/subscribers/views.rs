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
