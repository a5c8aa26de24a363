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
        "pages/_zone.html" => include_str!("../templates/pages/_zone.html"),
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
        "pages/manage_link.html" => include_str!("../templates/pages/manage_link.html"),
        "email/manage_link.txt" => include_str!("../templates/email/manage_link.txt"),
        "email/manage_link.html" => include_str!("../templates/email/manage_link.html"),
        "email/welcome.txt" => include_str!("../templates/email/welcome.txt"),
        "email/welcome.html" => include_str!("../templates/email/welcome.html"),
        "pages/archive_index.html" => include_str!("../templates/pages/archive_index.html"),
        "pages/archive_issue.html" => include_str!("../templates/pages/archive_issue.html"),
        "pages/not_found.html" => include_str!("../templates/pages/not_found.html"),
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

/// The environment the HTTP pages and transactional mail of `dir` use: the
/// set last installed by [`install`], or one built on first use.
pub fn cached(dir: &Path) -> Arc<Environment<'static>> {
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(dir.to_owned())
        .or_insert_with(|| Arc::new(build(dir.to_owned())))
        .clone()
}

/// Every template the daemon renders itself (a folder may hold more partials).
const NAMES: [&str; 24] = [
    "pages/layout.html",
    "pages/_choices.html",
    "pages/_zone.html",
    "pages/subscribe.html",
    "pages/message.html",
    "pages/error.html",
    "pages/confirm.html",
    "pages/confirmed.html",
    "pages/preferences.html",
    "pages/unsubscribe.html",
    "email/confirm.txt",
    "email/confirm.html",
    "email/already.txt",
    "email/already.html",
    "email/digest.txt",
    "email/digest.html",
    "pages/manage_link.html",
    "email/manage_link.txt",
    "email/manage_link.html",
    "email/welcome.txt",
    "email/welcome.html",
    "pages/archive_index.html",
    "pages/archive_issue.html",
    "pages/not_found.html",
];

/// A template set that compiled and rendered its sample data: every template
/// is already loaded, so later edits on disk change nothing until the next
/// [`prepare`] and [`install`].
pub struct Prepared {
    dir: PathBuf,
    env: Environment<'static>,
}

/// Loads and render-checks the templates of `settings` into a new
/// environment, without touching the one in use.
pub fn prepare(settings: &Settings) -> Result<Prepared, Vec<Problem>> {
    let env = environment(settings);
    let problems = check_env(settings, &env);
    if problems.is_empty() {
        Ok(Prepared {
            dir: settings.templates.dir.clone(),
            env,
        })
    } else {
        Err(problems)
    }
}

/// Puts a prepared set in force for pages and transactional mail.
pub fn install(prepared: Prepared) {
    let mut cache = cache().lock().unwrap_or_else(|e| e.into_inner());
    cache.insert(prepared.dir, Arc::new(prepared.env));
}

/// Problems with the configured templates, as `path:line: message`: syntax
/// errors in every template, then render errors (undefined variables, bad
/// filters) of every page and mail template against sample data of the shape
/// its handler passes, under strict undefined.
pub fn check(settings: &Settings) -> Vec<Problem> {
    let mut problems = check_env(settings, &environment(settings));
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

fn check_env(settings: &Settings, env: &Environment<'static>) -> Vec<Problem> {
    let dir = &settings.templates.dir;
    let mut problems = Vec::new();
    let on_disk = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            e.path()
                .extension()
                .is_some_and(|x| x == "html" || x == "txt")
        })
        .map(|entry| {
            entry
                .path()
                .strip_prefix(dir)
                .unwrap_or(entry.path())
                .to_string_lossy()
                .replace('\\', "/")
        });
    let mut names: Vec<String> = NAMES.iter().map(|n| n.to_string()).collect();
    for name in on_disk {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    for name in &names {
        if let Err(e) = env.get_template(name) {
            problems.push(template_problem(dir, &e));
        }
    }
    if !problems.is_empty() {
        return problems;
    }
    for (name, ctx) in samples(settings) {
        let rendered = env.get_template(name).and_then(|t| {
            t.render(
                minijinja::context! { site => crate::subscribers::views::site(settings), ..ctx },
            )
        });
        if let Err(e) = rendered {
            problems.push(template_problem(dir, &e));
        }
    }
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
    problems
}

/// Values of the same names and shapes that the HTTP handlers and the
/// sign-up mail pass to each template (the digest has its own sample).
fn samples(settings: &Settings) -> Vec<(&'static str, minijinja::Value)> {
    use crate::subscribers::views::{choices_context, url, zone_values};
    use minijinja::{context, Value};
    let choices = || {
        let first = settings.categories.first().map(|c| c.slug.to_string());
        let zone = zone_values(settings, None, None, true, &["Sample edition"]);
        context! { ..choices_context(settings, &first.into_iter().collect::<Vec<_>>(), None), ..zone }
    };
    let link = url("https://example.com/sample-link/token");
    let mut out = vec![
        ("pages/layout.html", context! {}),
        ("pages/_choices.html", choices()),
        ("pages/_zone.html", choices()),
        (
            "pages/subscribe.html",
            context! {
                action => "subscribe", error => Value::from(()), email => "", name => "",
                form_stamp => "1700000000.00112233445566778899aabbccddeeff", honeypot => "website", ..choices()
            },
        ),
        (
            "pages/message.html",
            context! {
                heading => "Sample heading",
                paragraphs => vec!["A paragraph."],
                link => Value::from_serialize(serde_json::json!({"href": "subscribe", "text": "Subscribe"})),
            },
        ),
        (
            "pages/error.html",
            context! { heading => "That did not work", message => "A message.", subscribe_url => link.clone() },
        ),
        ("pages/confirm.html", context! { action => link.clone() }),
        (
            "pages/manage_link.html",
            context! { action => "preferences", error => Value::from(()), email => "" },
        ),
        (
            "pages/confirmed.html",
            context! { name => "Sample Reader", email => "reader@example.com", preferences_url => link.clone() },
        ),
        (
            "pages/unsubscribe.html",
            context! { action => link.clone(), email => "reader@example.com", preferences_url => link.clone() },
        ),
    ];
    let edition = context! { slug => "weekly", name => "Weekly digest" };
    let archive_item = context! {
        slug => "sample", title => "A sample case study", link => link.clone(), summary => "What happened.",
        categories => vec!["Databases"], reading_minutes => 4, featured => true,
        published => "2026-01-05", root_cause => "The pool was too small.",
    };
    let issue = context! {
        key => "2026-01-05", date => "2026-01-05", subject => "Weekly: 1 new case study",
        count => 1, url => link.clone(),
        groups => vec![context! { category => "Databases", items => vec![archive_item] }],
    };
    out.push((
        "pages/archive_issue.html",
        context! {
            edition => edition.clone(), issue => issue.clone(), prev_url => link.clone(), next_url => "",
            index_url => link.clone(), atom_url => link.clone(), subscribe_url => link.clone(),
        },
    ));
    out.push((
        "pages/archive_index.html",
        context! {
            edition => edition, issues => vec![issue], newer_url => "", older_url => link.clone(),
            atom_url => link.clone(), subscribe_url => link.clone(),
        },
    ));
    out.push((
        "pages/not_found.html",
        context! { message => "No issue of that date.", back_url => link.clone(), back_text => "All issues" },
    ));
    for (status, saved) in [
        ("confirmed", true),
        ("pending", false),
        ("unsubscribed", false),
    ] {
        out.push((
            "pages/preferences.html",
            context! {
                action => link.clone(), unsubscribe_action => link.clone(),
                email => "reader@example.com", status => status, saved => saved, ..choices()
            },
        ));
    }
    for name in ["email/welcome.txt", "email/welcome.html"] {
        let item = context! {
            title => "A sample case study", link => link.clone(), summary => "What happened.",
            published => "2026-01-05", root_cause => "The pool was too small.",
        };
        out.push((
            name,
            context! {
                name => "Sample Reader", email => "reader@example.com", items => vec![item],
                preferences_url => link.clone(), unsubscribe_url => link.clone(),
            },
        ));
    }
    for name in ["email/manage_link.txt", "email/manage_link.html"] {
        out.push((
            name,
            context! { name => "Sample Reader", email => "reader@example.com", preferences_url => link.clone() },
        ));
    }
    for name in ["email/confirm.txt", "email/confirm.html"] {
        out.push((
            name,
            context! { name => "Sample Reader", email => "reader@example.com", confirm_url => link.clone() },
        ));
    }
    for name in ["email/already.txt", "email/already.html"] {
        out.push((
            name,
            context! { name => "Sample Reader", email => "reader@example.com", preferences_url => link.clone() },
        ));
    }
    out
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
