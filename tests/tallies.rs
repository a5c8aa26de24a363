//! The database's own counts (subscribers by status, outbox rows by state,
//! kept by triggers for the console and `/metrics`) against the tables they
//! count: after every kind of write the product makes, after concurrent
//! transactions that move rows between states in differing orders (shared
//! counters would deadlock those on PostgreSQL), and after the migration
//! that adds them runs on a database that already has rows, and after a
//! whole edition run whose batches count themselves on SQLite.

mod support;

use std::sync::Arc;
use std::time::Duration;

use casewire::delivery::{DeliveryWorker, Mailer, WorkerOptions};
use casewire::domain::EmailAddress;
use casewire::store::outbox::{self, Kind, NewMessage};
use casewire::store::subscribers::{self, NewSubscriber, Status};
use casewire::store::tallies::{self, Tally};
use casewire::store::{Backend, Db};
use chrono::Utc;
use support::smtp::SmtpServer;
use support::{prepare, AppOptions, Engine};
use tokio_util::sync::CancellationToken;

fn options(engine: Engine) -> AppOptions {
    AppOptions::new(engine)
        .editions("")
        .site("title = \"Casewire\"\nbase_url = \"https://example.com/\"")
        .mail("from = \"Casewire <digest@example.com>\"")
}

/// Each tally equals the GROUP BY over its table.
async fn assert_tallies(db: &Db, step: &str) {
    for (tally, sql) in [
        (
            Tally::Outbox,
            "SELECT state, COUNT(*) FROM outbox GROUP BY state ORDER BY state",
        ),
        (
            Tally::Subscribers,
            "SELECT status, COUNT(*) FROM subscribers GROUP BY status ORDER BY status",
        ),
    ] {
        let counted: Vec<(String, i64)> = sqlx::query_as(sql).fetch_all(&db.pool).await.unwrap();
        let kept = tallies::read(db, tally).await.unwrap();
        assert_eq!(kept, counted, "{tally:?} after {step}");
    }
    let sent: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let since_epoch = tallies::sent_since(db, chrono::DateTime::UNIX_EPOCH)
        .await
        .unwrap();
    assert_eq!(since_epoch, sent, "sent per hour after {step}");
    for window in RUNS {
        let prefix = format!("digest:weekly:{window}:");
        let rows: Vec<(String, String, i64)> =
            sqlx::query_as("SELECT dedupe_key, state, attempts FROM outbox WHERE kind = 'digest'")
                .fetch_all(&db.pool)
                .await
                .unwrap();
        let mut counted = casewire::store::admin::RunCounts::default();
        for (key, state, attempts) in rows {
            // This run's rows: the prefix, then the subscriber id (the other run's name extends this one's).
            match key.strip_prefix(&prefix) {
                Some(id) if !id.contains(':') => {}
                _ => continue,
            }
            counted.retried += i64::from(attempts > 1);
            *match state.as_str() {
                "queued" => &mut counted.queued,
                "sending" => &mut counted.sending,
                "sent" => &mut counted.sent,
                "suppressed" => &mut counted.suppressed,
                "dead" => &mut counted.dead,
                "expired" => &mut counted.expired,
                other => panic!("state {other}"),
            } += 1;
        }
        let kept = casewire::store::admin::run_counts(db, "weekly", window)
            .await
            .unwrap();
        assert_eq!(
            format!("{kept:?}"),
            format!("{counted:?}"),
            "run {window} after {step}"
        );
    }
}

/// Edition runs the tests queue digests of; the second's name extends the first's.
const RUNS: [&str; 2] = ["manual:1", "manual:1:b"];

/// A digest row of run `window` for subscriber `id` (never delivered: no body).
async fn queue_digest(db: &Db, window: &str, id: i64, to: &str) {
    let vars = serde_json::json!({});
    assert!(outbox::enqueue(
        &db.pool,
        &NewMessage {
            dedupe_key: &format!("digest:weekly:{window}:{id}"),
            kind: Kind::Digest,
            edition: Some("weekly"),
            subscriber_id: Some(id),
            recipient: &EmailAddress::parse(to).unwrap(),
            message: None,
            body_id: None,
            vars: &vars,
            now: Utc::now(),
        },
    )
    .await
    .unwrap());
}

async fn queue(db: &Db, key: &str, to: &str, subscriber_id: Option<i64>) {
    let message = format!(
        "From: Casewire <digest@example.com>\r\nTo: <{to}>\r\nSubject: Confirm\r\nDate: Sat, 21 Nov 2026 20:00:00 +0000\r\nMessage-ID: <{key}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease confirm: {key}\r\n"
    );
    let vars = serde_json::json!({});
    let queued = outbox::enqueue(
        &db.pool,
        &NewMessage {
            dedupe_key: key,
            kind: Kind::Confirmation,
            edition: None,
            subscriber_id,
            recipient: &EmailAddress::parse(to).unwrap(),
            message: Some(&message),
            body_id: None,
            vars: &vars,
            now: Utc::now(),
        },
    )
    .await
    .unwrap();
    assert!(queued);
}

async fn id_of(db: &Db, email: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM subscribers WHERE email = $1")
        .bind(email)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

async fn tallies_follow_every_write(engine: Engine) {
    let server = SmtpServer::start(&["--reject", "s3@example.org"]);
    let site = prepare(options(engine).smtp(&server).mail("concurrency = 4"));
    let settings = Arc::new(site.settings().clone());
    let db = Db::open(&settings.database.url).await.unwrap();
    assert_tallies(&db, "migrating an empty database").await;

    // A multi-row import in three statuses, then one more by itself, and
    // the same rows again (ON CONFLICT DO NOTHING counts nothing).
    let emails: Vec<String> = (0..30).map(|i| format!("s{i}@example.org")).collect();
    let (categories, editions) = (Vec::new(), Vec::new());
    let rows: Vec<NewSubscriber> = emails
        .iter()
        .enumerate()
        .map(|(i, email)| NewSubscriber {
            email,
            name: "",
            status: [Status::Pending, Status::Confirmed, Status::Unsubscribed][i % 3],
            source: "import",
            timezone: None,
            categories: &categories,
            editions: &editions,
        })
        .collect();
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        subscribers::insert_many(&mut conn, &rows, Utc::now())
            .await
            .unwrap(),
        30
    );
    assert_eq!(
        subscribers::insert_many(&mut conn, &rows, Utc::now())
            .await
            .unwrap(),
        0
    );
    subscribers::insert(
        &mut conn,
        &NewSubscriber {
            email: "late@example.org",
            ..rows[0].clone()
        },
        Utc::now(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_tallies(&db, "importing").await;

    // Status changes, including ones that change nothing.
    for i in [0, 3, 6] {
        let id = id_of(&db, &emails[i]).await;
        assert!(subscribers::confirm(&mut conn, id, Utc::now())
            .await
            .unwrap());
        assert!(!subscribers::confirm(&mut conn, id, Utc::now())
            .await
            .unwrap());
    }
    for i in [1, 4] {
        let id = id_of(&db, &emails[i]).await;
        assert!(subscribers::unsubscribe(&mut conn, id, Utc::now())
            .await
            .unwrap());
    }
    sqlx::query("UPDATE subscribers SET name = 'renamed' WHERE status = 'confirmed'")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_tallies(&db, "confirming, unsubscribing and renaming").await;

    // Mail to six subscribers: one address is refused (suppressed), the rest sent.
    for i in 0..6 {
        let id = id_of(&db, &emails[i]).await;
        queue(&db, &format!("m{i}"), &emails[i], Some(id)).await;
    }
    for i in 6..12 {
        let id = id_of(&db, &emails[i]).await;
        queue_digest(&db, RUNS[i % 2], id, &emails[i]).await;
    }
    assert_tallies(&db, "queueing").await;
    // Digests move by hand: one retried and ended, one back and forth.
    for sql in [
        "UPDATE outbox SET attempts = 3, state = 'dead' WHERE kind = 'digest' AND recipient = 's6@example.org'",
        "UPDATE outbox SET state = 'sending' WHERE dedupe_key LIKE 'digest:weekly:manual:1:b:%'",
        "UPDATE outbox SET state = 'expired', attempts = 2 WHERE kind = 'digest' AND recipient = 's9@example.org'",
        "UPDATE outbox SET attempts = 1 WHERE kind = 'digest' AND recipient = 's9@example.org'",
        "UPDATE outbox SET attempts = 2 WHERE kind = 'digest' AND recipient = 's11@example.org'",
    ] {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    assert_tallies(&db, "moving digests").await;
    // A crashed worker's lease (m0 is taken over and sent) and a row that
    // can never be sent (m5 ends dead when claimed): both change state in
    // the claim's transaction.
    for sql in [
        "UPDATE outbox SET state = 'sending', lease_owner = 'gone', lease_until = 1 WHERE dedupe_key = 'm0'",
        "UPDATE outbox SET kind = 'fax' WHERE dedupe_key = 'm5'",
    ] {
        sqlx::query(sql).execute(&db.pool).await.unwrap();
    }
    assert_tallies(&db, "a lost lease and a hand edit").await;
    let mut worker = WorkerOptions::new(&settings);
    worker.stop_when_idle = true;
    worker.retry_base = Duration::from_millis(1);
    DeliveryWorker {
        db: db.clone(),
        settings: settings.clone(),
        mailer: Mailer::from_settings(&settings.mail).unwrap(),
        wake: Default::default(),
        options: worker,
        progress: Default::default(),
    }
    .try_run(CancellationToken::new())
    .await
    .unwrap();
    // s0 is sent; s3 is refused; the unsubscribed are not mailed.
    let states: Vec<(String, String)> = sqlx::query_as(
        "SELECT dedupe_key, state FROM outbox WHERE kind <> 'digest' ORDER BY dedupe_key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        states[0],
        ("m0".to_owned(), "sent".to_owned()),
        "{states:?}"
    );
    assert_eq!(
        states[3],
        ("m3".to_owned(), "suppressed".to_owned()),
        "{states:?}"
    );
    assert_eq!(
        states[5],
        ("m5".to_owned(), "dead".to_owned()),
        "{states:?}"
    );
    assert_tallies(&db, "delivering").await;

    // Erasure deletes the subscriber and their mail.
    for i in [2, 3] {
        let id = id_of(&db, &emails[i]).await;
        assert!(subscribers::erase(&mut conn, id).await.unwrap());
    }
    assert_tallies(&db, "erasing").await;
    drop(conn);

    // A rolled-back transaction leaves the counts as they were.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE subscribers SET status = 'unsubscribed'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("DELETE FROM outbox")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    assert_tallies(&db, "a rollback").await;

    // Reading twice folds nothing twice.
    tallies::fold(&db).await.unwrap();
    assert_tallies(&db, "a second fold").await;
}
on_both_engines!(tallies_follow_every_write, tallies_follow_every_write);

/// Eight connections at once, each running transactions that move outbox
/// rows through the states in two statements, in orders that differ from
/// one transaction to the next. Nothing fails, and the counts are exact.
async fn concurrent_moves_neither_deadlock_nor_drift(engine: Engine) {
    let site = prepare(options(engine));
    let db = Db::open(&site.settings().database.url).await.unwrap();
    for i in 0..64 {
        queue(&db, &format!("c{i}"), &format!("c{i}@example.org"), None).await;
    }
    const STATES: [&str; 4] = ["queued", "sending", "sent", "dead"];
    let mut tasks = tokio::task::JoinSet::new();
    for t in 0..8_i64 {
        let db = db.clone();
        tasks.spawn(async move {
            for round in 0..25_usize {
                let _turn = db.write_turn().await;
                let mut tx = db.pool.begin().await.unwrap();
                // This task's rows (no two tasks share one), in two halves,
                // each to a state that differs by round: the counters of
                // two states are touched in both orders across tasks.
                for half in 0..2_i64 {
                    let state = STATES[(t as usize + round + half as usize * 3) % 4];
                    sqlx::query("UPDATE outbox SET state = $1, sent_at = $4 WHERE id % 8 = $2 AND (id / 8) % 2 = $3")
                        .bind(state)
                        .bind(t)
                        .bind(half)
                        .bind(Utc::now().timestamp_millis() - (round as i64) * 3_600_000)
                        .execute(&mut *tx)
                        .await
                        .unwrap();
                }
                tx.commit().await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    assert_tallies(&db, "concurrent moves").await;
    if db.backend == Backend::Postgres {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tally_deltas")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(left, 0, "a read folds every committed delta");
    }
}
on_both_engines!(
    concurrent_moves_neither_deadlock_nor_drift,
    concurrent_moves_neither_deadlock_nor_drift
);

/// The migration that adds the counters starts them from the rows already there.
async fn the_migration_counts_existing_rows(engine: Engine) {
    let site = prepare(options(engine));
    let url = site.settings().database.url.clone();
    let dir = match engine {
        Engine::Sqlite => "migrations/sqlite",
        Engine::Postgres => "migrations/postgres",
    };
    let all =
        sqlx::migrate::Migrator::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .await
            .unwrap();
    let mut before =
        sqlx::migrate::Migrator::new(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir))
            .await
            .unwrap();
    before.migrations = all
        .migrations
        .iter()
        .filter(|m| m.version < 60)
        .cloned()
        .collect::<Vec<_>>()
        .into();
    assert!(before.migrations.len() < all.migrations.len());
    let db = Db::connect(&url).await.unwrap();
    before.run(&db.pool).await.unwrap();
    for (i, status) in ["pending", "confirmed", "confirmed", "unsubscribed"]
        .iter()
        .enumerate()
    {
        sqlx::query("INSERT INTO subscribers (email, name, status, source, created_at) VALUES ($1, '', $2, 'cli', 0)")
            .bind(format!("old{i}@example.org"))
            .bind(status)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    for i in 0..3 {
        queue(
            &db,
            &format!("old{i}"),
            &format!("old{i}@example.org"),
            None,
        )
        .await;
    }
    let day = 86_400_000_i64;
    let now = Utc::now().timestamp_millis();
    for (key, sent_at) in [("old0", now), ("old1", now - 10 * day)] {
        sqlx::query("UPDATE outbox SET state = 'sent', sent_at = $1 WHERE dedupe_key = $2")
            .bind(sent_at)
            .bind(key)
            .execute(&db.pool)
            .await
            .unwrap();
    }
    db.migrate().await.unwrap();
    assert_tallies(&db, "migrating a database with rows").await;
    let week = Utc::now() - chrono::Duration::days(7);
    assert_eq!(tallies::sent_since(&db, week).await.unwrap(), 1);
    // A sent row moved back (a hand edit) leaves its hour.
    sqlx::query("UPDATE outbox SET sent_at = $1 WHERE dedupe_key = 'old1'")
        .bind(now)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(tallies::sent_since(&db, week).await.unwrap(), 2);
    assert_tallies(&db, "moving a sent row's time").await;
    assert_eq!(
        tallies::read(&db, Tally::Subscribers).await.unwrap(),
        [
            ("confirmed".to_owned(), 2),
            ("pending".to_owned(), 1),
            ("unsubscribed".to_owned(), 1)
        ]
    );
}
on_both_engines!(
    the_migration_counts_existing_rows,
    the_migration_counts_existing_rows
);

/// The send path counts its own batches on SQLite (migration 0070): a whole
/// edition run queued in multi-row statements, claimed and marked sent in
/// bulk, with a digest that took a second attempt, one refused, and hand
/// edits between the batches (which the triggers still count). PostgreSQL's
/// per-statement triggers count the same writes.
async fn a_digest_run_counts_its_batches(engine: Engine) {
    use casewire::content::{Catalog, DirectoryStore};
    use casewire::editions::run::run_edition;
    use casewire::store::ledger::Ledger;

    let server = SmtpServer::start(&[
        "--tempfail",
        "d2@example.org:1",
        "--reject",
        "d5@example.org",
    ]);
    let site = prepare(
        options(engine)
            .editions("[[editions]]\nslug = \"weekly\"\nname = \"Weekly\"\nschedule = \"@daily\"\n")
            .smtp(&server)
            .mail("concurrency = 2"),
    );
    let settings = Arc::new(site.settings().clone());
    let db = Db::open(&settings.database.url).await.unwrap();
    let mut ledger = Ledger::load(db.clone()).await.unwrap();
    ledger.sync(&Catalog::default(), Utc::now()).await.unwrap();

    let emails: Vec<String> = (0..40).map(|i| format!("d{i}@example.org")).collect();
    let (categories, editions) = (Vec::new(), vec!["weekly".to_owned()]);
    let rows: Vec<NewSubscriber> = emails
        .iter()
        .map(|email| NewSubscriber {
            email,
            name: "",
            status: Status::Confirmed,
            source: "import",
            timezone: None,
            categories: &categories,
            editions: &editions,
        })
        .collect();
    let mut conn = db.pool.acquire().await.unwrap();
    subscribers::insert_many(&mut conn, &rows, Utc::now())
        .await
        .unwrap();
    drop(conn);
    std::fs::write(
        site.content_dir.join("lost-writes.md"),
        support::study("Lost writes", "lost-writes", "2026-11-20", &["databases"]),
    )
    .unwrap();
    let catalog = DirectoryStore::new(&settings).scan(None);
    assert!(catalog.problems.is_empty(), "{:?}", catalog.problems);
    ledger.sync(&catalog, Utc::now()).await.unwrap();

    let edition = settings.edition("weekly").unwrap().clone();
    let report = run_edition(
        &db,
        &settings,
        &catalog,
        &edition,
        RUNS[0],
        Utc::now(),
        false,
    )
    .await
    .unwrap();
    assert_eq!(report.enqueued, 40, "{report:?}");
    assert_tallies(&db, "queueing a run").await;
    // The same run again queues nothing and counts nothing.
    run_edition(
        &db,
        &settings,
        &catalog,
        &edition,
        RUNS[0],
        Utc::now(),
        false,
    )
    .await
    .unwrap();
    assert_tallies(&db, "queueing the run again").await;
    // A hand edit between batches: one digest ends before it is claimed.
    sqlx::query("UPDATE outbox SET state = 'expired' WHERE recipient = 'd7@example.org'")
        .execute(&db.pool)
        .await
        .unwrap();

    let mut worker = WorkerOptions::new(&settings);
    worker.stop_when_idle = true;
    worker.retry_base = Duration::from_millis(1);
    worker.batch_size = 8;
    DeliveryWorker {
        db: db.clone(),
        settings: settings.clone(),
        mailer: Mailer::from_settings(&settings.mail).unwrap(),
        wake: Default::default(),
        options: worker,
        progress: Default::default(),
    }
    .try_run(CancellationToken::new())
    .await
    .unwrap();
    let counts = casewire::store::admin::run_counts(&db, "weekly", RUNS[0])
        .await
        .unwrap();
    assert_eq!(
        (
            counts.sent,
            counts.suppressed,
            counts.expired,
            counts.retried
        ),
        (38, 1, 1, 1),
        "{counts:?}"
    );
    assert_tallies(&db, "delivering a run").await;
    // Nothing is left set aside for a batch.
    if engine == Engine::Sqlite {
        let held: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM tally_batch")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(held, 0);
    }
    sqlx::query(
        "UPDATE outbox SET state = 'queued', attempts = 3 WHERE recipient = 'd8@example.org'",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_tallies(&db, "a hand edit after the run").await;
}
on_both_engines!(
    a_digest_run_counts_its_batches,
    a_digest_run_counts_its_batches
);

/// Queueing a run's digests skips keys already queued (a run that queued
/// part of its rows before) and keys given twice, within one multi-row
/// statement or across two, and counts only the rows it inserted: on
/// SQLite from what it asked for less what it found queued, on PostgreSQL
/// by its triggers.
async fn queueing_counts_only_the_rows_it_inserts(engine: Engine) {
    use casewire::store::editions::{enqueue_digests, DigestRow};

    let site = prepare(options(engine));
    let db = Db::open(&site.settings().database.url).await.unwrap();
    queue_digest(&db, RUNS[0], 1, "r1@example.org").await;
    queue_digest(&db, RUNS[0], 2, "r2@example.org").await;
    let body = outbox::insert_body(&db.pool, "Weekly", "<p>Weekly</p>", "Weekly", Utc::now())
        .await
        .unwrap();
    let row = |run: &str, id: i64| DigestRow {
        subscriber_id: id,
        recipient: EmailAddress::parse(&format!("r{id}@example.org")).unwrap(),
        dedupe_key: format!("digest:weekly:{run}:{id}"),
        body_id: body,
        vars: "{}".to_owned(),
    };
    // 1 and 2 are queued already; 3 comes again 300 rows later (another
    // statement on SQLite), 260 twice in a row; the second run's rows sit
    // between the first run's.
    let mut rows: Vec<DigestRow> = (1..=150).map(|id| row(RUNS[0], id)).collect();
    rows.extend((1..=5).map(|id| row(RUNS[1], id)));
    rows.extend((151..=300).map(|id| row(RUNS[0], id)));
    rows.extend([row(RUNS[0], 3), row(RUNS[0], 260), row(RUNS[0], 260)]);

    let mut tx = db.pool.begin().await.unwrap();
    let inserted = enqueue_digests(&mut tx, "weekly", &rows, Utc::now())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(inserted, 298 + 5);
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(queued, 2 + 298 + 5);
    assert_tallies(&db, "queueing over keys already queued").await;
    for (run, n) in [(RUNS[0], 300), (RUNS[1], 5)] {
        let counts = casewire::store::admin::run_counts(&db, "weekly", run)
            .await
            .unwrap();
        assert_eq!(counts.queued, n, "run {run}: {counts:?}");
    }
}
on_both_engines!(
    queueing_counts_only_the_rows_it_inserts,
    queueing_counts_only_the_rows_it_inserts
);
