//! Template faults are caught before they reach a reader: `check` renders
//! every page and mail template with sample data under strict undefined, and
//! SIGHUP keeps the running template set when the new one has an error.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::{prepare, AppOptions, Engine, TestSite};

/// The default test site with its own templates folder (`templates/` in the
/// site, empty until the test writes to it).
fn site(engine: Engine) -> (TestSite, PathBuf) {
    let site = prepare(
        AppOptions::new(engine)
            .self_links()
            .no_admin_token()
            .templates("dir = \"{root}/templates\""),
    );
    let templates = site.root.join("templates");
    assert!(site.config_text.contains(&templates.display().to_string()));
    (site, templates)
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

const CONFIRM_TXT_WITH_TYPO: &str =
    "Hello,\n\nconfirm here: {{ confirm_url }}\n\nThanks, {{ site.titel_typo }}\n";

/// An undefined variable in email/confirm.txt passed `check`, then every
/// sign-up answered 500.
#[test]
fn check_missed_an_undefined_variable_in_the_confirmation_mail() {
    let (site, templates) = site(Engine::Sqlite);
    write(&templates, "email/confirm.txt", CONFIRM_TXT_WITH_TYPO);
    let config = &site.config_path;
    let out = Command::new(env!("CARGO_BIN_EXE_casewire"))
        .args(["--config", config.to_str().unwrap(), "check"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!("{}:5: ", templates.join("email/confirm.txt").display());
    let line = stdout
        .lines()
        .find(|l| l.starts_with(&expected))
        .unwrap_or_else(|| panic!("no line starting with {expected:?}:\n{stdout}"));
    assert!(line.contains("undefined"), "{line}");
}

fn signal(child: &Child, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

async fn wait_until(secs: u64, what: &str, mut f: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times `needle` occurs in the daemon's log so far.
fn logged(log: &Path, needle: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches(needle)
        .count()
}

/// SIGHUP applied a template with a syntax error (then GET /subscribe
/// answered 500) and one with an undefined variable (then every sign-up
/// answered 500). A faulty set is now refused whole, named in the log, and
/// the running one keeps serving; a good set still applies.
async fn reload_applied_broken_templates(engine: Engine) {
    let (site, templates) = site(engine);
    std::fs::create_dir_all(&templates).unwrap();
    let port = site.port;
    let config = &site.config_path;
    let log = site.root.join("daemon.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_casewire"))
        .args(["--config", config.to_str().unwrap(), "run"])
        .env_remove("CASEWIRE_CONFIG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let form = async |client: &reqwest::Client| {
        client
            .get(format!("{base}/subscribe"))
            .send()
            .await
            .ok()
            .map(|r| r.status().as_u16())
    };
    wait_until(60, "the daemon serves /subscribe", async || {
        form(&client).await == Some(200)
    })
    .await;
    let sign_up = async |email: &str| {
        let r = client
            .post(format!("{base}/subscribe"))
            .form(&[("email", email), ("name", "Ada")])
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    };

    // An undefined variable in the confirmation mail.
    write(&templates, "email/confirm.txt", CONFIRM_TXT_WITH_TYPO);
    signal(&child, "HUP");
    let refused = "the templates have errors, so nothing was reloaded";
    wait_until(60, "the reload is refused", async || {
        logged(&log, refused) == 1
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let named = format!("{}:5:", templates.join("email/confirm.txt").display());
    assert!(text.contains(&named), "the log names {named}:\n{text}");
    let (status, body) = sign_up("ada@example.com").await;
    assert!(
        status < 400,
        "sign-up after a refused reload: {status} {body}"
    );

    // Then also a syntax error in the sign-up form.
    write(
        &templates,
        "pages/subscribe.html",
        "{% if %}<form></form>\n",
    );
    signal(&child, "HUP");
    wait_until(60, "the second reload is refused", async || {
        logged(&log, refused) == 2
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    let named = format!("{}:1:", templates.join("pages/subscribe.html").display());
    assert!(text.contains(&named), "the log names {named}:\n{text}");
    assert_eq!(
        form(&client).await,
        Some(200),
        "GET /subscribe after a refused reload"
    );
    let (status, body) = sign_up("grace@example.com").await;
    assert!(
        status < 400,
        "sign-up after a refused reload: {status} {body}"
    );

    // A good set applies.
    std::fs::remove_file(templates.join("email/confirm.txt")).unwrap();
    write(
        &templates,
        "pages/subscribe.html",
        "{% extends \"pages/layout.html\" %}{% block content %}Custom sign-up form{% endblock %}\n",
    );
    signal(&child, "HUP");
    wait_until(60, "the good templates apply", async || {
        let r = client
            .get(format!("{base}/subscribe"))
            .send()
            .await
            .unwrap();
        r.text().await.unwrap().contains("Custom sign-up form")
    })
    .await;
    assert_eq!(logged(&log, refused), 2);

    signal(&child, "TERM");
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "SIGTERM did not stop the daemon"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
on_both_engines!(
    sighup_applied_broken_templates,
    reload_applied_broken_templates
);
