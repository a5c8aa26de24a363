//! The welcome message after confirmation, over real HTTP on SQLite and
//! PostgreSQL: off by default; when on, one message per confirmation with
//! the latest `welcome_items` case studies of the subscriber's categories.

mod support;

use support::{spawn_app, AppOptions, Engine, TestApp};

fn study(slug: &str, date: &str, category: &str) -> String {
    format!(
        "---\ntitle: \"Study {slug}\"\ndate: {date}\ncategories: [{category}]\n---\n\n## Root cause\n\nThe cause of {slug}. More detail.\n"
    )
}

async fn welcomes(app: &TestApp, to: &str) -> Vec<String> {
    app.outbox()
        .await
        .into_iter()
        .filter(|r| r.recipient == to && r.message.contains("Subject: Welcome to"))
        .map(|r| {
            r.message
                .replace("=\r\n", "")
                .replace("=\n", "")
                .replace("=3D", "=")
        })
        .collect()
}

async fn confirm(app: &TestApp, email: &str, categories: &[&str]) -> String {
    let mut fields = vec![("email", email), ("edition", "weekly")];
    fields.extend(categories.iter().map(|c| ("categories", *c)));
    assert_eq!(app.post_form("/subscribe", &fields).await.status, 200);
    let path = app.confirmation_path(email).await;
    assert_eq!(app.post_form(&path, &[]).await.status, 200);
    path
}

async fn welcome_lists_the_latest_of_the_readers_categories(engine: Engine) {
    let mut options = AppOptions::new(engine)
        .self_links()
        .mail("welcome = true\nwelcome_items = 2");
    for (slug, date, cat) in [
        ("db-old", "2026-01-01T08:00:00Z", "databases"),
        ("db-mid", "2026-01-08T08:00:00Z", "databases"),
        ("db-new", "2026-01-15T08:00:00Z", "databases"),
        ("sec-newest", "2026-01-20T08:00:00Z", "security"),
        ("db-future", "2099-01-01T08:00:00Z", "databases"),
    ] {
        options = options.file(&format!("{slug}.md"), study(slug, date, cat));
    }
    let app = spawn_app(options).await;
    let email = "ada@example.com";
    let path = confirm(&app, email, &["databases"]).await;
    let mails = welcomes(&app, email).await;
    assert_eq!(mails.len(), 1, "one welcome");
    let m = &mails[0];
    let new = m.find("Study db-new").expect("the newest database study");
    let mid = m.find("Study db-mid").expect("the second newest");
    assert!(new < mid, "newest first");
    for absent in ["Study db-old", "Study sec-newest", "Study db-future"] {
        assert!(!m.contains(absent), "{absent} is not in the welcome:\n{m}");
    }
    assert!(m.contains("Root cause: The cause of db-new."), "{m}");
    assert!(m.contains(&format!("{}/preferences/", app.base)), "{m}");
    assert!(m.contains(&format!("{}/unsubscribe/", app.base)), "{m}");

    // Confirming again sends no second welcome.
    assert_eq!(app.post_form(&path, &[]).await.status, 200);
    assert_eq!(welcomes(&app, email).await.len(), 1);

    // Following every category: the newest two of all.
    confirm(&app, "grace@example.com", &[]).await;
    let m = &welcomes(&app, "grace@example.com").await[0];
    assert!(
        m.contains("Study sec-newest") && m.contains("Study db-new"),
        "{m}"
    );
    app.stop().await;

    // Off by default.
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    confirm(&app, email, &["databases"]).await;
    assert!(welcomes(&app, email).await.is_empty());
    app.stop().await;
}
on_both_engines!(
    welcome_after_confirmation,
    welcome_lists_the_latest_of_the_readers_categories
);
