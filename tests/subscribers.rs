//! The subscriber store and service rules, on SQLite and PostgreSQL: token
//! scope and expiry, edition cursors, suppression, and that a sign-up and
//! its confirmation message commit together or not at all.

mod support;

use casewire::domain::Token;
use casewire::store::subscribers::{self as store, NewSubscriber, Purpose, Status};
use casewire::store::Db;
use casewire::subscribers::links::{Claims, LinkKey};
use chrono::{Duration, Utc};
use support::{spawn_app, AppOptions, Engine, TestDb};

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

async fn resolve(
    conn: &mut sqlx::AnyConnection,
    key: &LinkKey,
    token: &Token,
    purpose: Purpose,
    at: chrono::DateTime<Utc>,
) -> Option<i64> {
    store::resolve_token(conn, key, token, purpose, at)
        .await
        .unwrap()
        .map(|r| r.subscriber_id)
}

async fn tokens_are_scoped_and_confirm_tokens_expire(engine: Engine) {
    let (_t, db) = open(engine).await;
    let a = new_subscriber(&db, "a@example.com", Status::Pending, &[]).await;
    let b = new_subscriber(&db, "b@example.com", Status::Confirmed, &[]).await;
    let now = Utc::now();
    let key = LinkKey::from_bytes(&[9; 32]);
    let mut conn = db.pool.acquire().await.unwrap();
    let confirm = key.sign(&Claims {
        subscriber_id: a,
        purpose: Purpose::Confirm,
        version: 0,
        expires: Some((now + store::CONFIRM_TOKEN_TTL).timestamp()),
    });
    let manage = key.manage(b, 0);

    // Using a token twice works; each token opens only its subscriber and purpose.
    for _ in 0..2 {
        assert_eq!(
            resolve(&mut conn, &key, &confirm, Purpose::Confirm, now).await,
            Some(a)
        );
        assert_eq!(
            resolve(&mut conn, &key, &manage, Purpose::Manage, now).await,
            Some(b)
        );
    }
    assert_eq!(
        resolve(&mut conn, &key, &confirm, Purpose::Manage, now).await,
        None
    );
    assert_eq!(
        resolve(&mut conn, &key, &manage, Purpose::Confirm, now).await,
        None
    );
    // Another server key opens nothing.
    let other = LinkKey::from_bytes(&[8; 32]);
    assert_eq!(
        resolve(&mut conn, &other, &manage, Purpose::Manage, now).await,
        None
    );

    // Confirm tokens work for 7 days; manage tokens do not expire.
    let week = now + Duration::days(7);
    let before = week - Duration::seconds(1);
    assert_eq!(
        resolve(&mut conn, &key, &confirm, Purpose::Confirm, before).await,
        Some(a)
    );
    assert_eq!(
        resolve(&mut conn, &key, &confirm, Purpose::Confirm, week).await,
        None
    );
    let decade = now + Duration::days(3650);
    assert_eq!(
        resolve(&mut conn, &key, &manage, Purpose::Manage, decade).await,
        Some(b)
    );

    // Unsubscribing kills every earlier link; the next ones carry the new version.
    assert!(store::unsubscribe(&mut conn, b, now).await.unwrap());
    assert_eq!(
        resolve(&mut conn, &key, &manage, Purpose::Manage, now).await,
        None
    );
    assert_eq!(
        resolve(&mut conn, &key, &key.manage(b, 1), Purpose::Manage, now).await,
        Some(b)
    );
    // Nothing was stored for any of these links.
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tokens")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}
on_both_engines!(
    token_scope_and_expiry,
    tokens_are_scoped_and_confirm_tokens_expire
);

/// Links sent before the upgrade were random tokens whose hash is a row:
/// each still opens its page, works for one change, and is then gone.
async fn legacy_token_rows_work_once_then_are_pruned(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    let id = casewire::subscribers::add(
        &app.settings,
        &app.app().db,
        &casewire::subscribers::SignUp {
            email: "legacy@example.com".into(),
            editions: vec!["weekly".into()],
            ..Default::default()
        },
        Status::Confirmed,
        "cli",
        Utc::now(),
    )
    .await
    .unwrap()
    .id;
    let old = Token::generate();
    sqlx::query("INSERT INTO tokens (hash, subscriber_id, purpose, created_at, expires_at) VALUES ($1, $2, 'manage', $3, NULL)")
        .bind(old.hash())
        .bind(id)
        .bind(Utc::now().timestamp_millis())
        .execute(&app.app().db.pool)
        .await
        .unwrap();
    let path = format!("/preferences/{}", old.as_str());
    assert_eq!(app.get(&path).await.status, 200);
    assert_eq!(app.get(&path).await.status, 200, "GET changes nothing");
    let saved = app
        .post_form(&path, &[("categories", "security"), ("edition", "weekly")])
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert_eq!(app.categories("legacy@example.com").await, vec!["security"]);
    assert_eq!(app.count("tokens").await, 0, "used up and pruned");
    assert_eq!(app.get(&path).await.status, 404);
    app.stop().await;
}
on_both_engines!(
    legacy_token_rows_work_once_then_are_pruned,
    legacy_token_rows_work_once_then_are_pruned
);

async fn sign_up_and_message_commit_together(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    // Break the outbox: the sign-up must roll back, and the client sees an opaque 500.
    sqlx::query("DROP TABLE outbox")
        .execute(&app.app().db.pool)
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
