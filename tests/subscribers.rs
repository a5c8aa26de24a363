//! The subscriber store and service rules, on SQLite and PostgreSQL: token
//! scope and expiry, edition cursors, suppression, and that a sign-up and
//! its confirmation message commit together or not at all.

mod common;

use casewire::store::subscribers::{self as store, NewSubscriber, Purpose, Status};
use casewire::store::Db;
use chrono::{Duration, Utc};
use common::subs::spawn_app;
use common::{Engine, TestDb};

async fn open(engine: Engine) -> (TestDb, Db) {
    let t = TestDb::new(engine).await;
    let db = Db::open(&t.url).await.expect("open test database");
    (t, db)
}

async fn new_subscriber(db: &Db, email: &str, status: Status, editions: &[String]) -> i64 {
    let mut conn = db.pool.acquire().await.unwrap();
    store::insert(
        &mut conn,
        &NewSubscriber {
            email,
            name: "",
            status,
            source: "cli",
            categories: &[],
            editions,
        },
        Utc::now(),
    )
    .await
    .unwrap()
    .expect("inserted")
}

async fn tokens_are_scoped_and_confirm_tokens_expire(engine: Engine) {
    let (_t, db) = open(engine).await;
    let a = new_subscriber(&db, "a@example.com", Status::Pending, &[]).await;
    let b = new_subscriber(&db, "b@example.com", Status::Pending, &[]).await;
    let now = Utc::now();
    let mut conn = db.pool.acquire().await.unwrap();
    let confirm = store::issue_token(&mut conn, a, Purpose::Confirm, now)
        .await
        .unwrap();
    let manage = store::issue_token(&mut conn, b, Purpose::Manage, now)
        .await
        .unwrap();

    // Using a token twice works; each token opens only its subscriber and purpose.
    for _ in 0..2 {
        assert_eq!(
            store::token_subscriber(&mut conn, &confirm, Purpose::Confirm, now)
                .await
                .unwrap(),
            Some(a)
        );
        assert_eq!(
            store::token_subscriber(&mut conn, &manage, Purpose::Manage, now)
                .await
                .unwrap(),
            Some(b)
        );
    }
    assert_eq!(
        store::token_subscriber(&mut conn, &confirm, Purpose::Manage, now)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store::token_subscriber(&mut conn, &manage, Purpose::Confirm, now)
            .await
            .unwrap(),
        None
    );

    // Confirm tokens work for 7 days; manage tokens do not expire.
    let week = now + Duration::days(7);
    assert_eq!(
        store::token_subscriber(
            &mut conn,
            &confirm,
            Purpose::Confirm,
            week - Duration::seconds(1)
        )
        .await
        .unwrap(),
        Some(a)
    );
    assert_eq!(
        store::token_subscriber(&mut conn, &confirm, Purpose::Confirm, week)
            .await
            .unwrap(),
        None
    );
    let decade = now + Duration::days(3650);
    assert_eq!(
        store::token_subscriber(&mut conn, &manage, Purpose::Manage, decade)
            .await
            .unwrap(),
        Some(b)
    );

    // Only hashes are stored.
    let hashes: Vec<String> = sqlx::query_scalar("SELECT hash FROM tokens")
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    assert!(hashes.contains(&confirm.hash()) && hashes.contains(&manage.hash()));
    assert!(!hashes
        .iter()
        .any(|h| h == confirm.as_str() || h == manage.as_str()));
}
on_both_engines!(
    token_scope_and_expiry,
    tokens_are_scoped_and_confirm_tokens_expire
);

async fn add_event(db: &Db, slug: &str) -> i64 {
    sqlx::query("INSERT INTO publications (slug, title, categories, published_at, first_seen_at, content_hash, updated_at, announced) VALUES ($1, $1, '', 0, 0, 'h', 0, 1)")
        .bind(slug)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query_scalar("INSERT INTO publication_events (slug, categories, created_at) VALUES ($1, '', 0) RETURNING id")
        .bind(slug)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn cursors(db: &Db, id: i64) -> Vec<(String, i64)> {
    sqlx::query_as("SELECT edition, cursor_event_id FROM subscriber_editions WHERE subscriber_id = $1 ORDER BY edition")
        .bind(id)
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn edition_cursors_start_at_confirmation(engine: Engine) {
    let (_t, db) = open(engine).await;
    let weekly = vec!["weekly".to_owned()];
    let id = new_subscriber(&db, "c@example.com", Status::Pending, &weekly).await;
    assert_eq!(cursors(&db, id).await, [("weekly".into(), 0)]);
    let e1 = add_event(&db, "first").await;
    let mut conn = db.pool.acquire().await.unwrap();
    assert!(store::confirm(&mut conn, id, Utc::now()).await.unwrap());
    assert_eq!(cursors(&db, id).await, [("weekly".into(), e1)]);
    // Confirming again changes nothing, cursors included.
    let e2 = add_event(&db, "second").await;
    assert!(!store::confirm(&mut conn, id, Utc::now()).await.unwrap());
    assert_eq!(cursors(&db, id).await, [("weekly".into(), e1)]);
    // A kept edition keeps its cursor; an added one starts at the newest event.
    store::set_choices(
        &mut conn,
        id,
        &["databases".into()],
        &["weekly".into(), "daily".into()],
    )
    .await
    .unwrap();
    assert_eq!(
        cursors(&db, id).await,
        [("daily".into(), e2), ("weekly".into(), e1)]
    );
    store::set_choices(&mut conn, id, &[], &["daily".into()])
        .await
        .unwrap();
    assert_eq!(cursors(&db, id).await, [("daily".into(), e2)]);
    let s = store::find_by_id(&mut conn, id).await.unwrap().unwrap();
    assert!(s.categories.is_empty(), "no rows: every category");
    assert_eq!(s.status, Status::Confirmed);
}
on_both_engines!(edition_cursors, edition_cursors_start_at_confirmation);

async fn suppressed_addresses_get_no_mail(engine: Engine) {
    let app = spawn_app(engine).await;
    sqlx::query("INSERT INTO suppressions (email, reason, created_at) VALUES ('bounced@example.com', 'bounce', 0)")
        .execute(&app.app.db.pool)
        .await
        .unwrap();
    let suppressed = app.subscribe("bounced@example.com").await;
    let fresh = app.subscribe("fresh@example.com").await;
    assert_eq!(
        suppressed.body, fresh.body,
        "the answer does not reveal the suppression"
    );
    let rows = app.outbox().await;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].recipient, "fresh@example.com");
    app.stop().await;
}
on_both_engines!(
    suppressed_address_gets_no_confirmation,
    suppressed_addresses_get_no_mail
);

async fn sign_up_and_message_commit_together(engine: Engine) {
    let app = spawn_app(engine).await;
    // Break the outbox: the sign-up must roll back, and the client sees an opaque 500.
    sqlx::query("DROP TABLE outbox")
        .execute(&app.app.db.pool)
        .await
        .unwrap();
    let r = app.subscribe("atomic@example.com").await;
    assert_eq!(r.status, 500);
    assert!(r.body.contains("Something went wrong"));
    assert!(
        !r.body.to_lowercase().contains("outbox"),
        "no internals leak: {}",
        r.body
    );
    let j = app
        .post_json(
            "/subscribe",
            serde_json::json!({"email": "atomic@example.com"}),
        )
        .await;
    assert_eq!(j.status, 500);
    assert_eq!(
        j.json()["error"],
        "something went wrong on our side; please try again later"
    );
    assert_eq!(app.count("subscribers").await, 0);
    assert_eq!(app.count("tokens").await, 0);
    app.stop().await;
}
on_both_engines!(
    subscriber_and_confirmation_commit_in_one_transaction,
    sign_up_and_message_commit_together
);
