//! Template loading (minijinja) for e-mail and pages. Undefined variables are
//! errors, so a typo fails `casewire check` rather than a send; `.html`
//! templates autoescape.

use std::path::Path;

use std::error::Error as _;

use minijinja::{Environment, UndefinedBehavior};

use crate::config::Settings;
use crate::content::Problem;

/// An environment that loads templates from the configured folder.
pub fn environment(settings: &Settings) -> Environment<'static> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_loader(minijinja::path_loader(&settings.templates.dir));
    env
}

/// Problems with the configured templates, as `path:line: message`: syntax
/// errors in every template, and render errors (undefined variables, bad
/// filters) of the digest templates against a sample digest.
pub fn check(settings: &Settings) -> Vec<Problem> {
    let dir = &settings.templates.dir;
    let mut problems = Vec::new();
    for required in ["email/digest.html", "email/digest.txt"] {
        if !dir.join(required).is_file() {
            problems.push(Problem {
                path: dir.join(required),
                line: 0,
                message: "the template is missing ([templates] dir)".into(),
            });
        }
    }
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
