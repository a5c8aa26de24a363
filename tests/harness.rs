//! The test harness itself: each test's PostgreSQL database is dropped on
//! teardown, whether the test stops its app, just ends, or panics, and even
//! while a connection to it is still open.

mod support;

use support::{prepare, spawn_app, AppOptions, Engine, TestDb};

async fn exists(name: &str) -> bool {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&support::postgres_admin_url())
        .await
        .expect("PostgreSQL is required for this test");
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_one(&mut conn)
        .await
        .unwrap()
        == 1
}

/// TestDb never dropped its PostgreSQL database: a thousand piled up on the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_test_databases_were_never_dropped() {
    // Dropped with a connection still open (the backstop in Drop).
    let db = TestDb::new(Engine::Postgres).await;
    let name = db.pg_name().unwrap().to_owned();
    let store = casewire::store::Db::open(&db.url).await.unwrap();
    let held = store.pool.acquire().await.unwrap();
    assert!(exists(&name).await, "{name} was created");
    drop(db);
    assert!(!exists(&name).await, "{name} is still there after Drop");
    drop(held);

    // An app that is stopped drops its database after it stopped.
    let app = spawn_app(AppOptions::new(Engine::Postgres)).await;
    let name = app.db.pg_name().unwrap().to_owned();
    assert_eq!(app.get("/healthz").await.status, 200);
    app.stop().await;
    assert!(!exists(&name).await, "{name} is still there after stop");

    // A site that was only prepared, dropped outside any runtime.
    let name = std::thread::spawn(|| {
        let site = prepare(AppOptions::new(Engine::Postgres));
        site.db.pg_name().unwrap().to_owned()
    })
    .join()
    .unwrap();
    assert!(!exists(&name).await, "{name} is still there after the site");
}

/// A test that panics with its app running still leaves no database behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_test_leaves_no_database() {
    let (tx, rx) = std::sync::mpsc::channel();
    let failed = tokio::spawn(async move {
        let app = spawn_app(AppOptions::new(Engine::Postgres).self_links()).await;
        tx.send(app.db.pg_name().unwrap().to_owned()).unwrap();
        assert_eq!(app.subscribe("ada@example.com").await.status, 200);
        panic!("the test fails here");
    })
    .await;
    assert!(failed.is_err(), "the task panicked");
    let name = rx.recv().unwrap();
    assert!(
        !exists(&name).await,
        "{name} is still there after the panic"
    );
}
