//! Wake-ups and reloads against the whole running app: mail leaves when it
//! is queued, not at the worker's next poll (the poll is set to an hour, so
//! a missing signal fails the test), and a reload reaches every task.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use casewire::config::Settings;
use casewire::store::subscribers::Status;
use casewire::subscribers::SignUp;
use support::{prepare, spawn_app, AppOptions, Engine};

const WEEKLY: &str = r#"
[[editions]]
slug = "weekly"
name = "Weekly digest"
schedule = "0 8 * * MON"
"#;

const INSTANT: &str = r#"
[[editions]]
slug = "instant"
name = "As published"
schedule = "instant"
"#;

/// The app of these tests: one category, the weekly edition, and a
/// delivery poll of an hour, so only a wake-up delivers in time.
fn options(engine: Engine) -> AppOptions {
    AppOptions::new(engine)
        .self_links()
        .no_admin_token()
        .site("title = \"Casewire Signals\"")
        .mail("poll_seconds = 3600")
        .categories(&[("databases", "Databases")])
        .editions(WEEKLY)
}

fn eml_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                // Unfold quoted-printable soft line breaks, so text can be searched.
                .map(|e| {
                    std::fs::read_to_string(e.path())
                        .unwrap_or_default()
                        .replace("=\r\n", "")
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Waits for a message for `to` in `dir`; the deadline (a minute) is far below the
/// worker's hour-long poll, so only a wake-up can deliver it in time.
fn wait_for_mail(dir: &Path, to: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(m) = eml_files(dir).into_iter().find(|m| m.contains(to)) {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no mail for {to} in {} (the delivery worker was not woken)",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

async fn sign_up(port: u16, email: &str) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/subscribe"))
        .form(&[("email", email), ("name", "Reader")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

fn write_study(dir: &Path, slug: &str, title: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{slug}.tmp"));
    std::fs::write(
        &tmp,
        format!(
            "---\ntitle: \"{title}\"\ndate: 2026-01-05T10:00:00Z\ncategories: [databases]\n---\n\nThe replica fell behind and nobody noticed.\n"
        ),
    )
    .unwrap();
    std::fs::rename(&tmp, dir.join(format!("{slug}.md"))).unwrap();
}

async fn confirmed_subscriber(settings: &Settings, db: &casewire::store::Db, email: &str) {
    casewire::subscribers::add(
        settings,
        db,
        &SignUp {
            email: email.into(),
            name: "Reader".into(),
            categories: Vec::new(),
            editions: vec!["instant".into()],
        },
        Status::Confirmed,
        "test",
        chrono::Utc::now(),
    )
    .await
    .expect("add a confirmed subscriber");
}

async fn sign_up_confirmation_leaves_without_waiting_for_a_poll(engine: Engine) {
    let app = spawn_app(options(engine)).await;
    // Let the worker finish its first claim and go idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sign_up(app.port, "first@example.org").await;
    let outbox = app.outbox_dir.clone();
    let mail = tokio::task::spawn_blocking(move || wait_for_mail(&outbox, "first@example.org"))
        .await
        .unwrap();
    assert!(mail.contains("/confirm/"), "a confirmation: {mail}");
    app.stop().await;
}
on_both_engines!(
    sign_up_confirmation_leaves_without_waiting_for_a_poll,
    sign_up_confirmation_leaves_without_waiting_for_a_poll
);

async fn instant_publication_is_delivered_without_waiting_for_a_poll(engine: Engine) {
    let site = prepare(options(engine).editions(format!("{WEEKLY}{INSTANT}")));
    write_study(&site.content_dir, "old-news", "Old news");
    let app = site.start().await;
    confirmed_subscriber(&app.settings, &app.app().db, "reader@example.org").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_study(
        &app.content_dir,
        "replica-lag",
        "The replica that fell behind",
    );
    let outbox = app.outbox_dir.clone();
    let mail = tokio::task::spawn_blocking(move || wait_for_mail(&outbox, "reader@example.org"))
        .await
        .unwrap();
    assert!(mail.contains("replica"), "the new case study: {mail}");
    assert!(
        !mail.contains("Old news"),
        "nothing old is announced: {mail}"
    );
    app.stop().await;
}
on_both_engines!(
    instant_publication_is_delivered_without_waiting_for_a_poll,
    instant_publication_is_delivered_without_waiting_for_a_poll
);

/// SIGHUP's path: new `[mail]`, `[content] dir` and editions reach the
/// delivery worker, the watcher and the scheduler; `[http] listen` is named
/// as needing a restart.
async fn reload_reaches_mail_content_and_editions(engine: Engine) {
    let mut app = spawn_app(options(engine)).await;
    let port = app.port;
    let before_outbox = app.outbox_dir.clone();
    let after_content = app.root.join("content-2");
    let after_outbox = app.root.join("outbox-2");
    write_study(&after_content, "moved-store", "A study in the new folder");
    let moved = app
        .options()
        .content("dir = \"{root}/content-2\"")
        .mail("file_dir = \"{root}/outbox-2\"")
        .editions(format!("{WEEKLY}{INSTANT}"));
    app.site.rewrite(moved);
    let new = app.site.settings().clone();
    let restart = app.app_mut().reload(new.clone()).await.expect("reload");
    assert!(restart.is_empty(), "{restart:?}");

    // [mail]: the new worker writes into the new folder.
    sign_up(port, "second@example.org").await;
    let outbox = after_outbox.clone();
    tokio::task::spawn_blocking(move || wait_for_mail(&outbox, "second@example.org"))
        .await
        .unwrap();
    assert!(
        eml_files(&before_outbox).is_empty(),
        "nothing in the old folder"
    );

    // [content] dir: the new folder's study is served, and the watcher
    // follows the new folder.
    let feed = || async {
        reqwest::get(format!("http://127.0.0.1:{port}/feeds/atom.xml"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while !feed().await.contains("A study in the new folder") {
        assert!(
            Instant::now() < deadline,
            "the reloaded content dir is not served"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Editions: the instant edition added by the reload announces the next
    // publication in the new folder.
    confirmed_subscriber(&new, &app.app().db, "reader@example.org").await;
    write_study(&after_content, "after-reload", "Published after the reload");
    let outbox = after_outbox.clone();
    let mail = tokio::task::spawn_blocking(move || wait_for_mail(&outbox, "reader@example.org"))
        .await
        .unwrap();
    assert!(mail.contains("Published after the reload"), "{mail}");

    // A key only a restart applies is named.
    app.site
        .rewrite(app.options().http("listen = \"127.0.0.1:1\""));
    let listen_moved = app.site.settings().clone();
    let restart = app.app_mut().reload(listen_moved).await.expect("reload");
    assert_eq!(restart, vec!["[http] listen"]);
    app.stop().await;
}
on_both_engines!(
    reload_reaches_mail_content_and_editions,
    reload_reaches_mail_content_and_editions
);
