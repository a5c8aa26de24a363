//! The console's pages and actions over HTTP on both engines (the browser
//! test covers the acceptance steps; this one the rest): keyset pages and
//! filters, a subscriber's actions (resend, erase), sending an edition now
//! behind its confirmation, pause and resume, the content page's states,
//! the overview's counts, exports, and the audit log page.

mod support;

use std::time::Duration;

use support::console::{add_operator, login, Session, OPERATOR, PASSWORD};
use support::{spawn_app, AppOptions, Engine, TestApp};

fn study(title: &str, date: &str, category: &str) -> String {
    format!("---\ntitle: \"{title}\"\ndate: {date}\ncategories: [{category}]\n---\n\nSome words about {title}.\n")
}

/// The one setup of this file: two published case studies, one scheduled
/// in 2031, one draft, one broken file; 120 confirmed weekly subscribers
/// (every third follows security), one pending; an operator signed in; then
/// a newly published case study so the weekly edition has something new.
async fn setup(engine: Engine) -> (TestApp, Session) {
    let app = spawn_app(
        AppOptions::new(engine)
            .self_links()
            .file("a.md", study("Replica lag", "2026-01-05", "databases"))
            .file(
                "b.md",
                study("Expired certificate", "2026-01-12", "security"),
            )
            .file(
                "later.md",
                study("A future incident", "2031-01-01", "performance"),
            )
            .file(
                "draft.md",
                "---\ntitle: Unfinished\ndate: 2026-01-01\ndraft: true\n---\n\nNot yet.\n",
            )
            .file("broken.md", "---\ntitle: No date here\n---\n\nBody.\n"),
    )
    .await;
    add_operator(&app, OPERATOR, PASSWORD).await;
    let now = chrono::Utc::now();
    let emails: Vec<String> = (0..120).map(|i| format!("r{i:03}@example.com")).collect();
    let weekly = vec!["weekly".to_owned()];
    let security = vec!["security".to_owned()];
    let mut rows: Vec<_> = emails
        .iter()
        .enumerate()
        .map(|(i, e)| casewire::store::subscribers::NewSubscriber {
            email: e,
            name: "",
            status: casewire::store::subscribers::Status::Confirmed,
            source: "import",
            categories: if i % 3 == 0 { &security } else { &[] },
            editions: &weekly,
            timezone: None,
        })
        .collect();
    rows.push(casewire::store::subscribers::NewSubscriber {
        email: "waiting@example.com",
        name: "Wai",
        status: casewire::store::subscribers::Status::Pending,
        source: "form",
        categories: &[],
        editions: &weekly,
        timezone: None,
    });
    let mut tx = casewire::store::subscribers::begin_write(&app.app().db)
        .await
        .unwrap();
    casewire::store::subscribers::insert_many(&mut tx, &rows, now)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    std::fs::write(
        app.content_dir.join("c.md"),
        study("Table lock", "2026-02-02", "databases"),
    )
    .unwrap();
    for _ in 0..300 {
        if app.count("publication_events").await == 1 {
            let s = login(&app, OPERATOR, PASSWORD).await;
            return (app, s);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the new case study was never published");
}

/// The subscriber addresses listed on a page, in order.
fn listed(html: &str) -> Vec<String> {
    html.split("<a href=\"/admin/subscribers/")
        .skip(1)
        .filter_map(|part| {
            let (id, rest) = part.split_once("\">")?;
            id.parse::<i64>().ok()?;
            Some(rest.split('<').next()?.to_owned())
        })
        .collect()
}

fn next_link(html: &str) -> Option<String> {
    let start = html.find("id=\"next-page\"")?;
    let before = &html[..start];
    let href = before.rfind("href=\"")? + 6;
    Some(before[href..].split('"').next()?.replace("&amp;", "&"))
}

async fn pages_filters_and_subscriber_actions(engine: Engine) {
    let (app, s) = setup(engine).await;
    // Keyset pages: 50, 50, 21, each address once, in id order.
    let mut seen = Vec::new();
    let mut path = "/admin/subscribers".to_owned();
    let mut pages = 0;
    loop {
        let r = s.get(&app, &path).await;
        assert_eq!(r.status, 200, "{path}: {}", r.body);
        let rows = listed(&r.body);
        assert!(rows.len() <= 50);
        seen.extend(rows);
        pages += 1;
        match next_link(&r.body) {
            Some(next) => {
                assert!(next.contains("after="), "{next}");
                path = next;
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen.len(), 121);
    let unique: std::collections::HashSet<_> = seen.iter().collect();
    assert_eq!(unique.len(), 121);
    // Filters keep to their subscribers, and the next page keeps the filters.
    let r = s.get(&app, "/admin/subscribers?status=pending").await;
    assert_eq!(listed(&r.body), ["waiting@example.com"]);
    let r = s
        .get(&app, "/admin/subscribers?category=security&q=r00")
        .await;
    // r000..r009: every third follows security, the rest follow everything.
    assert_eq!(listed(&r.body).len(), 10);
    let r = s.get(&app, "/admin/subscribers?edition=daily").await;
    assert!(listed(&r.body).is_empty() && r.body.contains("No subscriber matches"));
    for bad in [
        "status=gone",
        "category=cooking",
        "edition=hourly",
        "after=x",
    ] {
        let r = s.get(&app, &format!("/admin/subscribers?{bad}")).await;
        assert_eq!(r.status, 400, "{bad}");
    }

    // Resend a confirmation: one more confirmation queued; a confirmed one refuses.
    let id = |email: &'static str| {
        let db = app.app().db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT id FROM subscribers WHERE email = $1")
                .bind(email)
                .fetch_one(&db)
                .await
                .unwrap()
        }
    };
    let waiting = id("waiting@example.com").await;
    let r = s
        .post(&app, &format!("/admin/subscribers/{waiting}/resend"), &[])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let confirmations: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'confirmation' AND recipient = 'waiting@example.com'")
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap();
    assert_eq!(confirmations, 1);
    let r001 = id("r001@example.com").await;
    let r = s
        .post(&app, &format!("/admin/subscribers/{r001}/resend"), &[])
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("not pending"), "{}", r.body);

    // Erase: a confirmation page first, then the row is gone; the audit log keeps the id only.
    let r = s
        .get(&app, &format!("/admin/subscribers/{r001}/erase"))
        .await;
    assert!(r.body.contains("Erase r001@example.com?"));
    assert_eq!(
        app.status("r001@example.com").await.as_deref(),
        Some("confirmed")
    );
    let r = s
        .post(&app, &format!("/admin/subscribers/{r001}/erase"), &[])
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(app.status("r001@example.com").await, None);
    let r = s.get(&app, &format!("/admin/subscribers/{r001}")).await;
    assert_eq!(r.status, 404);
    let audit = s.get(&app, "/admin/audit?action=subscriber.erase").await;
    assert!(audit.body.contains(&format!("subscriber:{r001}")));
    assert!(!audit.body.contains("r001@example.com"));

    // Export: the list as CSV, and the export is in the audit log.
    let r = s.get(&app, "/admin/subscribers/export.csv").await;
    assert_eq!(r.status, 200);
    assert!(r
        .body
        .starts_with("email,name,categories,editions,status,timezone\n"));
    assert_eq!(r.body.lines().count(), 1 + 120);
    app.stop().await;
}
on_both_engines!(
    admin_pages_filters_and_subscriber_actions,
    pages_filters_and_subscriber_actions
);

async fn editions_send_pause_resume_content_overview(engine: Engine) {
    let (app, s) = setup(engine).await;
    // The confirmation states the count: 80 follow everything (databases new).
    let r = s.get(&app, "/admin/editions/weekly/send").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("This queues 80 digests"), "{}", r.body);
    assert_eq!(
        app.count("outbox").await,
        0,
        "the confirmation page queues nothing"
    );
    // Without the confirmation step nothing is sent.
    let r = s.post(&app, "/admin/editions/weekly/send", &[]).await;
    assert_eq!(r.status, 400);
    assert_eq!(app.count("outbox").await, 0);

    // Pause first: the run's digests wait while the edition is paused.
    let r = s
        .post(
            &app,
            "/admin/editions/weekly/pause",
            &[("reason", "checking a typo")],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = s.get(&app, "/admin/editions/weekly").await;
    assert!(
        page.body
            .contains("paused by operator ada: checking a typo"),
        "{}",
        page.body
    );
    let r = s
        .post(
            &app,
            "/admin/editions/weekly/send",
            &[("confirm", "yes"), ("expected", "80")],
        )
        .await;
    assert_eq!(r.status, 303);
    let mut queued = 0;
    for _ in 0..300 {
        queued = sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE kind = 'digest'")
            .fetch_one(&app.app().db.pool)
            .await
            .unwrap();
        let finished: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM edition_runs WHERE edition = 'weekly' AND finished_at IS NOT NULL")
            .fetch_one(&app.app().db.pool)
            .await
            .unwrap();
        if finished == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(queued, 80);
    let sent: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE kind = 'digest' AND state = 'sent'")
            .fetch_one(&app.app().db.pool)
            .await
            .unwrap();
    assert_eq!(sent, 0, "a paused edition sends nothing");

    // Resume: the digests go out (file transport).
    let r = s.post(&app, "/admin/editions/weekly/resume", &[]).await;
    assert_eq!(r.status, 303);
    let mut sent = 0;
    for _ in 0..300 {
        sent = sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM outbox WHERE kind = 'digest' AND state = 'sent'",
        )
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap();
        if sent == 80 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(sent, 80);
    // The history shows the run with its counts; a second send has nothing to do.
    let page = s.get(&app, "/admin/editions/weekly").await;
    assert!(page.body.contains("manual:"), "{}", page.body);
    assert!(
        page.body.contains("<td class=\"num\">80</td>"),
        "{}",
        page.body
    );
    let r = s.get(&app, "/admin/editions/weekly/send").await;
    assert!(r.body.contains("Nothing to send"), "{}", r.body);

    // Content: published, scheduled, draft, broken with path:line, announced by weekly.
    let r = s.get(&app, "/admin/content").await;
    assert_eq!(r.status, 200);
    for needle in [
        "Replica lag",
        "scheduled for 2031-01-01",
        "draft",
        "broken.md:",
        "Table lock",
    ] {
        assert!(r.body.contains(needle), "content page lacks {needle:?}");
    }
    let table_lock = r
        .body
        .split("Table lock")
        .nth(1)
        .unwrap()
        .split("</tr>")
        .next()
        .unwrap();
    assert!(
        table_lock.contains("weekly"),
        "announced by weekly: {table_lock}"
    );

    // The overview: subscribers by status, the run's sent count, the broken file.
    let r = s.get(&app, "/admin/").await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("broken.md:"), "{}", r.body);
    assert!(
        r.body.contains("<td class=\"num\">120</td>") || r.body.contains(">120<"),
        "{}",
        r.body
    );
    let actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM admin_audit WHERE actor = $1 ORDER BY id")
            .bind(OPERATOR)
            .fetch_all(&app.app().db.pool)
            .await
            .unwrap();
    assert_eq!(
        actions,
        ["login", "edition.pause", "edition.send", "edition.resume"]
    );
    app.stop().await;
}
on_both_engines!(
    admin_editions_send_pause_resume_content_overview,
    editions_send_pause_resume_content_overview
);
