//! Template loading (minijinja) for e-mail and pages. Undefined variables are
//! errors, so a typo fails `casewire check` rather than a send; `.html`
//! templates autoescape.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use std::error::Error as _;

use minijinja::{Environment, UndefinedBehavior};

use crate::config::Settings;
use crate::content::Problem;

/// The templates shipped inside the binary: a file of the same name under
/// `[templates] dir` overrides each, so operators restyle without rebuilding
/// and a fresh install works without a templates folder.
fn builtin(name: &str) -> Option<&'static str> {
    Some(match name {
        "pages/layout.html" => include_str!("../templates/pages/layout.html"),
        "pages/_choices.html" => include_str!("../templates/pages/_choices.html"),
        "pages/subscribe.html" => include_str!("../templates/pages/subscribe.html"),
        "pages/message.html" => include_str!("../templates/pages/message.html"),
        "pages/error.html" => include_str!("../templates/pages/error.html"),
        "pages/confirm.html" => include_str!("../templates/pages/confirm.html"),
        "pages/confirmed.html" => include_str!("../templates/pages/confirmed.html"),
        "pages/preferences.html" => include_str!("../templates/pages/preferences.html"),
        "pages/unsubscribe.html" => include_str!("../templates/pages/unsubscribe.html"),
        "email/confirm.txt" => include_str!("../templates/email/confirm.txt"),
        "email/confirm.html" => include_str!("../templates/email/confirm.html"),
        "email/already.txt" => include_str!("../templates/email/already.txt"),
        "email/already.html" => include_str!("../templates/email/already.html"),
        "email/digest.txt" => include_str!("../templates/email/digest.txt"),
        "email/digest.html" => include_str!("../templates/email/digest.html"),
        _ => return None,
    })
}

/// A fresh environment over `dir` (falling back to the built-in templates).
pub fn build(dir: PathBuf) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_loader(move |name: &str| {
        // Names come from our code, never from a request; still refuse to leave `dir`.
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

/// An environment that loads templates from the configured folder, fresh
/// (edition runs take one each, so an edited template is used at the next run).
pub fn environment(settings: &Settings) -> Environment<'static> {
    build(settings.templates.dir.clone())
}

fn cache() -> &'static Mutex<HashMap<PathBuf, Arc<Environment<'static>>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Environment<'static>>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// One environment per templates folder for the HTTP pages, built on first
/// use; each template is compiled once until [`reload`].
pub fn cached(dir: &Path) -> Arc<Environment<'static>> {
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(dir.to_owned())
        .or_insert_with(|| Arc::new(build(dir.to_owned())))
        .clone()
}

/// Forgets compiled templates (SIGHUP), so edited files take effect.
pub fn reload() {
    cache().lock().unwrap_or_else(|e| e.into_inner()).clear();
}

/// Problems with the configured templates, as `path:line: message`: syntax
/// errors in every template, and render errors (undefined variables, bad
/// filters) of the digest templates against a sample digest.
pub fn check(settings: &Settings) -> Vec<Problem> {
    let dir = &settings.templates.dir;
    let mut problems = Vec::new();
    let env = environment(settings);
    let files = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "html" || x == "txt")
        });
    for entry in files {
        let name = entry
            .path()
            .strip_prefix(dir)
            .unwrap_or(entry.path())
            .to_string_lossy()
            .replace('\\', "/");
        if let Err(e) = env.get_template(&name) {
            problems.push(template_problem(dir, &e));
        }
    }
    if problems.is_empty() {
        if let Err(e) = crate::editions::render::sample(settings) {
            match e.downcast_ref::<minijinja::Error>() {
                Some(err) => problems.push(template_problem(dir, err)),
                None => problems.push(Problem {
                    path: dir.join("email/digest.html"),
                    line: 0,
                    message: format!("{e:#}"),
                }),
            }
        }
    }
    for edition in &settings.editions {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        if let Err(e) = env.add_template_owned("subject", edition.subject.clone()) {
            problems.push(Problem {
                path: settings.source.clone(),
                line: 0,
                message: format!("[[editions]] {} subject: {e}", edition.slug),
            });
        }
    }
    problems
}

fn template_problem(dir: &Path, e: &minijinja::Error) -> Problem {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    Problem {
        path: e
            .name()
            .map(|n| dir.join(n))
            .unwrap_or_else(|| dir.to_owned()),
        line: e.line().unwrap_or(0),
        message,
    }
}
