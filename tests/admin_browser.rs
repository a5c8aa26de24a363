//! The operator console in headless Chromium (fantoccini over chromedriver),
//! on both engines: fail to sign in, sign in, find one subscriber among
//! 10,000, change their categories, preview a digest, dry-run an edition,
//! import a CSV with bad lines, lift a suppression, sign out; each step
//! checks what the page shows and the database. axe-core (npm) then checks
//! every console page for serious or critical accessibility violations. A
//! failing step leaves a screenshot in the cargo target's tmp folder.
//! A missing chromedriver, Chromium or axe-core fails the test: it never skips.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures::FutureExt;
use support::console::{add_operator, OPERATOR, PASSWORD};
use support::{spawn_app, AppOptions, Engine, TestApp};

const CHROMIUM: &str = "/usr/bin/chromium";
const NEEDLE: &str = "needle-4242@example.com";
const SUBSCRIBERS: usize = 10_000;

fn axe_path() -> String {
    std::env::var("CASEWIRE_AXE_JS")
        .unwrap_or_else(|_| "/var/tmp/casewire-npm/node_modules/axe-core/axe.min.js".into())
}

fn study(title: &str, date: &str, category: &str) -> String {
    format!("---\ntitle: \"{title}\"\ndate: {date}\ncategories: [{category}]\nsummary: \"What happened when {title}.\"\n---\n\n## Root cause\n\nA cause.\n\nMore words about {title}.\n")
}

/// The one setup of this file: a daemon with three published case studies
/// (seeded at start, so not announced), an operator, 9,999 confirmed weekly
/// subscribers following everything plus the needle following databases,
/// a suppression, and then one newly published databases case study, so a
/// weekly run has something new for everyone.
async fn setup(engine: Engine) -> TestApp {
    let mut options = AppOptions::new(engine).self_links();
    for (file, title, date, cat) in [
        (
            "one.md",
            "The replica that lagged",
            "2026-01-05",
            "databases",
        ),
        (
            "two.md",
            "The certificate that expired",
            "2026-01-12",
            "security",
        ),
        (
            "three.md",
            "The cache stampede",
            "2026-01-19",
            "performance",
        ),
    ] {
        options = options.file(file, study(title, date, cat));
    }
    let app = spawn_app(options).await;
    add_operator(&app, OPERATOR, PASSWORD).await;
    let now = chrono::Utc::now();
    let emails: Vec<String> = (0..SUBSCRIBERS - 1)
        .map(|i| format!("reader{i:05}@example.com"))
        .collect();
    let weekly = vec!["weekly".to_owned()];
    let databases = vec!["databases".to_owned()];
    let mut rows: Vec<casewire::store::subscribers::NewSubscriber<'_>> = emails
        .iter()
        .map(|e| casewire::store::subscribers::NewSubscriber {
            email: e,
            name: "",
            status: casewire::store::subscribers::Status::Confirmed,
            source: "import",
            categories: &[],
            editions: &weekly,
            timezone: None,
        })
        .collect();
    rows.push(casewire::store::subscribers::NewSubscriber {
        email: NEEDLE,
        name: "Nadia Needle",
        status: casewire::store::subscribers::Status::Confirmed,
        source: "form",
        categories: &databases,
        editions: &weekly,
        timezone: None,
    });
    let db = &app.app().db;
    let mut tx = casewire::store::subscribers::begin_write(db).await.unwrap();
    casewire::store::subscribers::insert_many(&mut tx, &rows, now)
        .await
        .unwrap();
    casewire::store::subscribers::suppress(
        &mut tx,
        "bounced@example.com",
        "hard bounce (smtp): 5.1.1 no such user",
        now,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    // Published after everyone subscribed: new for all of them.
    std::fs::write(
        app.content_dir.join("four.md"),
        study(
            "The migration that locked a table",
            "2026-02-02",
            "databases",
        ),
    )
    .unwrap();
    for _ in 0..300 {
        if app.count("publication_events").await == 1 {
            return app;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the new case study was never published");
}

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_chromedriver() -> Driver {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {bin:?}: {e}. This test needs chromedriver and Chromium \
                 (Debian: apt-get install chromium chromium-driver; or set CHROMEDRIVER=/path/to/chromedriver)"
            )
        });
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{}/status", driver.url)).send().await {
            if r.status().is_success() {
                return driver;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver ({bin}) did not answer on port {port} within 10 s");
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "Chromium is required at {CHROMIUM} (Debian: apt-get install chromium)"
    );
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", format!("--user-data-dir={}", profile.display()),
                "--window-size=1280,1000",
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
}

/// Waits (up to 30 s) until the page shows `needle`.
async fn expect_text(client: &Client, needle: &str) {
    let mut last = String::new();
    for _ in 0..300 {
        if let Ok(body) = client.find(Locator::Css("body")).await {
            if let Ok(text) = body.text().await {
                if text.contains(needle) {
                    return;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never showed {needle:?}; it shows:\n{last}");
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
        .click()
        .await
        .unwrap();
}

async fn fill(client: &Client, css: &str, text: &str) {
    let field = client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// axe-core's serious and critical violations on the current page, as
/// "rule: what (where)" lines.
async fn axe_violations(client: &Client, axe: &str) -> Vec<String> {
    client
        .execute(axe, vec![])
        .await
        .expect("axe-core loads into the page");
    let result = client
        .execute_async(
            "const done = arguments[arguments.length - 1];
             axe.run(document, { resultTypes: ['violations'] })
                .then(r => done(JSON.stringify(r.violations
                    .filter(v => v.impact === 'serious' || v.impact === 'critical')
                    .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' + v.nodes.map(n => n.target.join(' ')).join(', ')))))
                .catch(e => done(JSON.stringify(['axe failed: ' + e])));",
            vec![],
        )
        .await
        .expect("axe-core runs");
    let text = result.as_str().expect("a JSON string").to_owned();
    serde_json::from_str(&text).unwrap()
}

async fn console_steps(app: &TestApp, c: &Client, axe: &str, step: &mut &'static str) {
    let db = &app.app().db;

    *step = "fail to sign in";
    c.goto(&app.url("/admin/")).await.unwrap();
    expect_text(c, "Sign in").await;
    let login_violations = axe_violations(c, axe).await;
    assert!(
        login_violations.is_empty(),
        "login page: {login_violations:#?}"
    );
    fill(c, "#name", OPERATOR).await;
    fill(c, "#password", "not the password").await;
    click(c, "#sign-in").await;
    expect_text(c, "Wrong name or password").await;
    assert_eq!(app.count("admin_sessions").await, 0);

    *step = "sign in";
    fill(c, "#password", PASSWORD).await;
    click(c, "#sign-in").await;
    expect_text(c, "Overview").await;
    expect_text(c, &SUBSCRIBERS.to_string()).await;
    assert_eq!(app.count("admin_sessions").await, 1);

    *step = "search a subscriber among 10,000";
    click(c, "nav a[href='/admin/subscribers']").await;
    expect_text(c, "reader00000@example.com").await;
    fill(c, "#q", "needle").await;
    click(c, "#search").await;
    expect_text(c, NEEDLE).await;
    let rows = c
        .find_all(Locator::Css("#subscribers tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "one subscriber matches 'needle'");
    click(c, "#subscribers tbody a").await;
    expect_text(c, "Status history").await;
    expect_text(c, "Nadia Needle").await;

    *step = "change their categories";
    click(c, "#cat-databases").await;
    click(c, "#cat-security").await;
    click(c, "#save-choices").await;
    expect_text(c, "Saved.").await;
    assert_eq!(app.categories(NEEDLE).await, ["security"]);
    assert!(c
        .find(Locator::Css("#cat-security"))
        .await
        .unwrap()
        .is_selected()
        .await
        .unwrap());

    *step = "preview a digest";
    c.goto(&app.url("/admin/editions/weekly")).await.unwrap();
    expect_text(c, "Next fire times").await;
    assert_eq!(
        c.find_all(Locator::Css("#upcoming li"))
            .await
            .unwrap()
            .len(),
        5
    );
    fill(c, "#subscriber", NEEDLE).await;
    click(c, "#preview").await;
    expect_text(c, "Preview of Weekly digest").await;
    // Nothing new in security for them: the latest security case study instead.
    let text_part = c
        .find(Locator::Css("#text-part"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text_part.contains("The certificate that expired"),
        "{text_part}"
    );
    assert!(
        !text_part.contains("The migration that locked a table"),
        "{text_part}"
    );
    let frame = c.find(Locator::Css("iframe#html-part")).await.unwrap();
    assert_eq!(frame.attr("sandbox").await.unwrap().as_deref(), Some(""));
    frame.clone().enter_frame().await.unwrap();
    let html_part = c
        .find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        html_part.contains("The certificate that expired"),
        "{html_part}"
    );
    c.enter_parent_frame().await.unwrap();

    *step = "dry-run an edition";
    c.goto(&app.url("/admin/editions/weekly")).await.unwrap();
    click(c, "#dry-run").await;
    // Everyone but the needle (now following security only) gets the new case study.
    expect_text(
        c,
        &format!("would send {} digests, 1 distinct bodies", SUBSCRIBERS - 1),
    )
    .await;
    let digests: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'digest'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(digests, 0, "a dry run queues nothing");

    *step = "import a CSV with bad lines";
    let dir = tempfile::tempdir().unwrap();
    let csv = dir.path().join("new-readers.csv");
    std::fs::write(
        &csv,
        "email,name,categories,editions,status\n\
         new.one@example.com,New One,databases,weekly,confirmed\n\
         not an address,Bad,,,\n\
         new.two@example.com,New Two,,daily,\n\
         new.three@example.com,,no-such-category,,\n\
         reader00001@example.com,Already There,,,\n",
    )
    .unwrap();
    c.goto(&app.url("/admin/subscribers/import")).await.unwrap();
    c.find(Locator::Css("#file"))
        .await
        .unwrap()
        .send_keys(csv.to_str().unwrap())
        .await
        .unwrap();
    click(c, "#import").await;
    expect_text(c, "Result of new-readers.csv").await;
    let cell = |id: &'static str| async move {
        c.find(Locator::Css(id))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    assert_eq!(cell("#added").await, "2");
    assert_eq!(cell("#unchanged").await, "1");
    assert_eq!(cell("#rejected").await, "2");
    let rejected = cell("#rejected-lines").await;
    assert!(rejected.contains("3 email:"), "{rejected}");
    assert!(rejected.contains("5 categories:"), "{rejected}");
    assert_eq!(
        app.status("new.two@example.com").await.as_deref(),
        Some("confirmed")
    );
    assert_eq!(app.status("new.three@example.com").await, None);

    *step = "remove a suppression";
    click(c, "nav a[href='/admin/suppressions']").await;
    expect_text(c, "bounced@example.com").await;
    fill(c, "#why-1", "the reader fixed their mailbox").await;
    click(c, "#remove-1").await;
    expect_text(c, "The suppression is lifted.").await;
    expect_text(c, "No suppression matches").await;
    assert_eq!(app.count("suppressions").await, 0);
    let (detail,): (String,) = sqlx::query_as(
        "SELECT detail FROM admin_audit WHERE action = 'suppression.remove' AND target = 'bounced@example.com'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(detail, "the reader fixed their mailbox");

    *step = "accessibility of every page";
    // The check itself works: a page without a language and with an
    // unlabelled field has violations.
    c.goto("data:text/html,<!doctype html><title>x</title><input type=text>")
        .await
        .unwrap();
    let control = axe_violations(c, axe).await;
    assert!(
        control.iter().any(|v| v.starts_with("label "))
            && control.iter().any(|v| v.starts_with("html-has-lang ")),
        "axe-core did not report a known bad page: {control:?}"
    );
    let id: i64 = sqlx::query_scalar("SELECT id FROM subscribers WHERE email = $1")
        .bind(NEEDLE)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut failures = Vec::new();
    for path in [
        "/admin/".to_owned(),
        "/admin/subscribers".into(),
        "/admin/subscribers?q=reader0000&status=confirmed".into(),
        format!("/admin/subscribers/{id}"),
        format!("/admin/subscribers/{id}/erase"),
        "/admin/subscribers/import".into(),
        "/admin/suppressions".into(),
        "/admin/bounces".into(),
        "/admin/editions".into(),
        "/admin/editions/weekly".into(),
        format!("/admin/editions/weekly/preview?subscriber={NEEDLE}"),
        "/admin/editions/weekly/send".into(),
        "/admin/content".into(),
        "/admin/audit".into(),
        "/admin/password".into(),
    ] {
        c.goto(&app.url(&path)).await.unwrap();
        expect_text(c, "Sign out").await;
        for v in axe_violations(c, axe).await {
            failures.push(format!("{path}: {v}"));
        }
    }
    assert!(
        failures.is_empty(),
        "axe-core found:\n{}",
        failures.join("\n")
    );

    *step = "sign out";
    c.goto(&app.url("/admin/")).await.unwrap();
    click(c, "#logout").await;
    expect_text(c, "You are signed out.").await;
    assert_eq!(app.count("admin_sessions").await, 0);
    c.goto(&app.url("/admin/audit")).await.unwrap();
    expect_text(c, "Sign in").await;
    let actions: Vec<String> = sqlx::query_scalar("SELECT action FROM admin_audit ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    for a in [
        "login.failed",
        "login",
        "subscriber.choices",
        "edition.dry-run",
        "subscribers.import",
        "suppression.remove",
        "logout",
    ] {
        assert!(
            actions.iter().any(|x| x == a),
            "{a} is not in the audit log: {actions:?}"
        );
    }
}

async fn console_in_a_browser(engine: Engine) {
    let axe = std::fs::read_to_string(axe_path()).unwrap_or_else(|e| {
        panic!(
            "axe-core is required at {} ({e}): npm install --prefix /var/tmp/casewire-npm axe-core@4, or set CASEWIRE_AXE_JS",
            axe_path()
        )
    });
    let app = setup(engine).await;
    let driver = start_chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let mut step = "start";
    let outcome = std::panic::AssertUnwindSafe(console_steps(&app, &c, &axe, &mut step))
        .catch_unwind()
        .await;
    if let Err(panic) = outcome {
        let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "admin-browser-{engine:?}-{}.png",
            step.replace([' ', ','], "-")
        ));
        match c.screenshot().await {
            Ok(png) => {
                let _ = std::fs::write(&shot, png);
                eprintln!("step {step:?} failed; screenshot: {}", shot.display());
            }
            Err(e) => eprintln!("step {step:?} failed; no screenshot: {e}"),
        }
        let _ = c.close().await;
        std::panic::resume_unwind(panic);
    }
    c.close().await.unwrap();
    drop(driver);
    app.stop().await;
}
on_both_engines!(admin_console_in_a_browser, console_in_a_browser);
