//! Templates of the subscriber pages and transactional mail (minijinja, HTML
//! auto-escaped by file extension). A file under `[templates] dir` overrides
//! the built-in copy of the same name, so an operator can restyle pages
//! without rebuilding, and a fresh install works without a templates folder.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use minijinja::{Environment, Value};

use crate::config::Settings;

fn builtin(name: &str) -> Option<&'static str> {
    Some(match name {
        "pages/layout.html" => include_str!("../../templates/pages/layout.html"),
        "pages/_choices.html" => include_str!("../../templates/pages/_choices.html"),
        "pages/subscribe.html" => include_str!("../../templates/pages/subscribe.html"),
        "pages/message.html" => include_str!("../../templates/pages/message.html"),
        "pages/error.html" => include_str!("../../templates/pages/error.html"),
        "pages/confirm.html" => include_str!("../../templates/pages/confirm.html"),
        "pages/confirmed.html" => include_str!("../../templates/pages/confirmed.html"),
        "pages/preferences.html" => include_str!("../../templates/pages/preferences.html"),
        "pages/unsubscribe.html" => include_str!("../../templates/pages/unsubscribe.html"),
        "email/confirm.txt" => include_str!("../../templates/email/confirm.txt"),
        "email/confirm.html" => include_str!("../../templates/email/confirm.html"),
        "email/already.txt" => include_str!("../../templates/email/already.txt"),
        "email/already.html" => include_str!("../../templates/email/already.html"),
        _ => return None,
    })
}

fn build(dir: PathBuf) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
    env.set_loader(move |name: &str| {
        // Names come from this module, never from a request; still refuse to leave `dir`.
        if name.split('/').any(|part| part == ".." || part.is_empty()) {
            return Ok(None);
        }
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Ok(builtin(name).map(str::to_owned))
            }
            Err(e) => Err(minijinja::Error::new(
                minijinja::ErrorKind::InvalidOperation,
                format!("cannot read {}: {e}", path.display()),
            )),
        }
    });
    env
}

/// One environment per templates folder, built on first use; the loader
/// caches each template after its first load.
fn environment(dir: &Path) -> Arc<Environment<'static>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Environment<'static>>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry(dir.to_owned())
        .or_insert_with(|| Arc::new(build(dir.to_owned())))
        .clone()
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
