//! Manage-link recovery over real HTTP on SQLite and PostgreSQL: `/preferences`
//! without a token asks for an address, answers the same whether it is
//! known or not, mails a known one a fresh working preferences link, and at
//! most once an hour.

mod support;

use casewire::subscribers::recovery::send_manage_link;
use support::{link_in, spawn_app, AppOptions, Engine, Reply, TestApp};

fn visible(r: &Reply) -> (u16, Option<String>, String) {
    (
        r.status,
        r.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned()),
        r.body.clone(),
    )
}

async fn link_mails(app: &TestApp, to: &str) -> Vec<String> {
    app.outbox()
        .await
        .into_iter()
        .filter(|r| r.recipient == to && r.message.contains("Subject: Your link to manage"))
        .map(|r| r.message)
        .collect()
}

async fn lost_link_is_mailed_once_an_hour_without_telling_who_subscribes(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    let email = "ada@example.com";
    assert_eq!(app.subscribe(email).await.status, 200);
    let path = app.confirmation_path(email).await;
    assert_eq!(app.post_form(&path, &[]).await.status, 200);
    assert_eq!(app.status(email).await.as_deref(), Some("confirmed"));

    let form = app.get("/preferences").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("name=\"email\""), "{}", form.body);
    assert!(form.body.contains("Email me my link"), "{}", form.body);

    let known = app.post_form("/preferences", &[("email", email)]).await;
    let unknown = app
        .post_form("/preferences", &[("email", "nobody@example.com")])
        .await;
    assert_eq!(known.status, 200, "{}", known.body);
    assert_eq!(
        visible(&known),
        visible(&unknown),
        "the answer tells who subscribes"
    );
    assert!(app
        .outbox()
        .await
        .iter()
        .all(|r| r.recipient != "nobody@example.com"));

    let mails = link_mails(&app, email).await;
    assert_eq!(mails.len(), 1);
    let link = link_in(&mails[0], &format!("{}/preferences/", app.base));
    let page = app.get(link.strip_prefix(&app.base).unwrap()).await;
    assert_eq!(page.status, 200, "the mailed link opens the preferences");
    assert!(page.body.contains(email), "{}", page.body);

    // Asking again within the hour: same answer, no second mail.
    let again = app.post_form("/preferences", &[("email", email)]).await;
    assert_eq!(visible(&again), visible(&known));
    assert_eq!(link_mails(&app, email).await.len(), 1);

    // An hour later another one goes out, with a different link.
    let later = chrono::Utc::now() + chrono::Duration::minutes(61);
    assert!(send_manage_link(&app.app().db, email, later).await.unwrap());
    assert!(!send_manage_link(&app.app().db, email, later).await.unwrap());
    // Queued for an hour from now; the mail is composed when it is sent, so
    // bring its time forward and let the worker send it.
    sqlx::query("UPDATE outbox SET next_attempt_at = 0 WHERE state = 'queued'")
        .execute(&app.app().db.pool)
        .await
        .unwrap();
    let mails = link_mails(&app, email).await;
    assert_eq!(mails.len(), 2);
    // Links are signed, not stored: the same subscriber gets the same link.
    assert_eq!(
        link_in(&mails[1], &format!("{}/preferences/", app.base)),
        link
    );

    // A malformed address is named (that reveals nothing about subscribers).
    let bad = app
        .post_form("/preferences", &[("email", "not-an-address")])
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body.contains("E-mail address"), "{}", bad.body);
    app.stop().await;
}
on_both_engines!(
    manage_link_recovery,
    lost_link_is_mailed_once_an_hour_without_telling_who_subscribes
);
