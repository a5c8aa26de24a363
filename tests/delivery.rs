//! Delivery through a real SMTP server (aiosmtpd, tests/support_smtp.py):
//! transactional and digest rows, retries, permanent failures, suppression
//! at send time, DKIM, the file transport, and kill -9 safety. Every test
//! runs on SQLite and PostgreSQL.

mod support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use casewire::config::Settings;
use casewire::delivery::{DeliveryWorker, Mailer, Progress, WorkerOptions};
use casewire::domain::EmailAddress;
use casewire::store::outbox::{self, Kind, NewMessage, State};
use casewire::store::Db;
use chrono::Utc;
use support::smtp::SmtpServer;
use support::{prepare, AppOptions, Engine, TestSite};
use tokio_util::sync::CancellationToken;

/// These tests' site, named as the messages they queue name it ("Casewire"
/// at https://example.com/), without editions, delivering with the file
/// transport unless [`smtp_options`] is used.
fn options(engine: Engine) -> AppOptions {
    AppOptions::new(engine)
        .editions("")
        .site("title = \"Casewire\"\nbase_url = \"https://example.com/\"")
        .mail("from = \"Casewire <digest@example.com>\"")
}

/// [`options`] delivering through `server` with 4 connections and a 10 s timeout.
fn smtp_options(engine: Engine, server: &SmtpServer) -> AppOptions {
    options(engine)
        .smtp(server)
        .mail("concurrency = 4\ntimeout_seconds = 10")
}

fn settings(site: &TestSite) -> Arc<Settings> {
    Arc::new(site.settings().clone())
}

fn raw_message(to: &str, marker: &str) -> String {
    format!(
        "From: Casewire <digest@example.com>\r\nTo: <{to}>\r\nSubject: Confirm your subscription\r\nDate: Sat, 21 Nov 2026 20:00:00 +0000\r\nMessage-ID: <{marker}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease confirm: {marker}\r\n"
    )
}

async fn queue_raw(db: &Db, key: &str, to: &str, subscriber_id: Option<i64>) {
    let message = raw_message(to, key);
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

/// Queues `n` raw messages, keys `confirm:{prefix}{i}` to `{prefix}{i}@example.org`.
async fn queue_numbered(db: &Db, prefix: &str, n: usize) {
    for i in 0..n {
        queue_raw(
            db,
            &format!("confirm:{prefix}{i}"),
            &format!("{prefix}{i}@example.org"),
            None,
        )
        .await;
    }
}

/// Runs a worker until nothing is due; retries wait `retry_base`.
async fn run_worker(db: &Db, settings: &Arc<Settings>, retry_base: Duration) -> Arc<Progress> {
    let progress = Arc::new(Progress::default());
    let mut options = WorkerOptions::new(settings);
    options.stop_when_idle = true;
    options.retry_base = retry_base;
    DeliveryWorker {
        db: db.clone(),
        settings: settings.clone(),
        mailer: Mailer::from_settings(&settings.mail).unwrap(),
        wake: Default::default(),
        options,
        progress: progress.clone(),
    }
    .try_run(CancellationToken::new())
    .await
    .unwrap();
    progress
}

/// Starts a worker in the background (retries far off) and returns once
/// the relay has received its first few messages.
async fn start_sending(
    db: &Db,
    settings: &Arc<Settings>,
    server: &SmtpServer,
) -> tokio::task::JoinHandle<Arc<Progress>> {
    start_sending_until(db, settings, server, 4).await
}

/// [`start_sending`], returning once the relay has received `n` messages.
async fn start_sending_until(
    db: &Db,
    settings: &Arc<Settings>,
    server: &SmtpServer,
    n: usize,
) -> tokio::task::JoinHandle<Arc<Progress>> {
    let worker = tokio::spawn({
        let (db, s) = (db.clone(), settings.clone());
        async move { run_worker(&db, &s, Duration::from_secs(3600)).await }
    });
    let started = std::time::Instant::now();
    while server.received_count() < n {
        assert!(started.elapsed() < Duration::from_secs(30), "nothing sent");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    worker
}

/// Moves every queued retry to now: an injected clock instead of sleeping.
async fn make_retries_due(db: &Db) {
    sqlx::query("UPDATE outbox SET next_attempt_at = 0 WHERE state = 'queued'")
        .execute(&db.pool)
        .await
        .unwrap();
}

#[derive(Debug)]
struct Row {
    state: String,
    attempts: i64,
    last_error: Option<String>,
    sent_at: Option<i64>,
}

async fn row(db: &Db, key: &str) -> Row {
    let (state, attempts, last_error, sent_at): (String, i64, Option<String>, Option<i64>) =
        sqlx::query_as(
            "SELECT state, attempts, last_error, sent_at FROM outbox WHERE dedupe_key = $1",
        )
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    Row {
        state,
        attempts,
        last_error,
        sent_at,
    }
}

async fn add_subscriber(db: &Db, email: &str, status: &str) -> i64 {
    sqlx::query_scalar("INSERT INTO subscribers (email, name, status, source, created_at) VALUES ($1, 'Ada', $2, 'cli', $3) RETURNING id")
        .bind(email)
        .bind(status)
        .bind(Utc::now().timestamp_millis())
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

// ---------------------------------------------------------------------------

async fn queued_raw_message_is_delivered_once(engine: Engine) {
    let server = SmtpServer::start(&[]);
    let tdb = prepare(smtp_options(engine, &server));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_raw(&db, "confirm:1", "ada@example.org", None).await;

    let progress = run_worker(&db, &s, Duration::from_secs(60)).await;
    assert_eq!(progress.sent(), 1);
    let got = server.received_by("ada@example.org");
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(got[0].contains("Please confirm: confirm:1"));
    assert!(got[0].starts_with("X-Envelope-From: digest@example.com"));
    let r = row(&db, "confirm:1").await;
    assert_eq!(r.state, "sent");
    assert_eq!(r.attempts, 1);
    assert!(r.sent_at.is_some());

    // A second run finds nothing to send.
    run_worker(&db, &s, Duration::from_secs(60)).await;
    assert_eq!(server.received_count(), 1);
}
on_both_engines!(
    queued_raw_message_is_delivered_once,
    queued_raw_message_is_delivered_once
);

async fn temporary_failure_is_retried_and_received_exactly_once(engine: Engine) {
    let server = SmtpServer::start(&["--tempfail", "grace@example.org:2"]);
    let tdb = prepare(smtp_options(engine, &server).mail("max_attempts = 5"));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_raw(&db, "confirm:g", "grace@example.org", None).await;

    for attempt in 1..=2 {
        let p = run_worker(&db, &s, Duration::from_secs(3600)).await;
        assert_eq!((p.sent(), p.retried()), (0, 1));
        let r = row(&db, "confirm:g").await;
        assert_eq!(r.state, "queued", "never marked sent before success");
        assert_eq!(r.attempts, attempt);
        assert!(r.sent_at.is_none());
        assert!(
            r.last_error.as_deref().unwrap_or("").contains("451"),
            "{r:?}"
        );
        assert_eq!(server.received_count(), 0);
        // The retry waits for its time.
        let p = run_worker(&db, &s, Duration::from_secs(3600)).await;
        assert_eq!(p.sent() + p.retried(), 0);
        make_retries_due(&db).await;
    }
    let p = run_worker(&db, &s, Duration::from_secs(3600)).await;
    assert_eq!(p.sent(), 1);
    assert_eq!(server.received_by("grace@example.org").len(), 1);
    let r = row(&db, "confirm:g").await;
    assert_eq!((r.state.as_str(), r.attempts), ("sent", 3));
}
on_both_engines!(
    temporary_failure_is_retried_and_received_exactly_once,
    temporary_failure_is_retried_and_received_exactly_once
);

async fn permanent_failure_suppresses_the_address(engine: Engine) {
    let server = SmtpServer::start(&["--reject", "gone@example.org"]);
    let tdb = prepare(smtp_options(engine, &server));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_raw(&db, "confirm:gone1", "gone@example.org", None).await;
    queue_raw(&db, "confirm:ok", "ok@example.org", None).await;

    let p = run_worker(&db, &s, Duration::from_millis(1)).await;
    assert_eq!((p.sent(), p.suppressed(), p.retried()), (1, 1, 0));
    let r = row(&db, "confirm:gone1").await;
    assert_eq!(r.state, "suppressed");
    assert!(r.last_error.as_deref().unwrap().contains("550"), "{r:?}");
    let reason: String = sqlx::query_scalar("SELECT reason FROM suppressions WHERE email = $1")
        .bind("gone@example.org")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        reason.contains("550") && reason.contains("User unknown"),
        "{reason}"
    );

    // A later message to the address is suppressed without a transaction.
    queue_raw(&db, "confirm:gone2", "gone@example.org", None).await;
    let p = run_worker(&db, &s, Duration::from_millis(1)).await;
    assert_eq!((p.sent(), p.suppressed()), (0, 1));
    let r = row(&db, "confirm:gone2").await;
    assert_eq!((r.state.as_str(), r.attempts), ("suppressed", 0));
    assert!(server.received_by("gone@example.org").is_empty());
    assert_eq!(server.received_by("ok@example.org").len(), 1);
}
on_both_engines!(
    permanent_failure_suppresses_the_address,
    permanent_failure_suppresses_the_address
);

/// A row no version writes (a hand edit: unknown kind, broken recipient) is
/// ended dead with the reason when claimed; the rows behind it still go out.
async fn unsendable_rows_end_dead_without_blocking_the_queue(engine: Engine) {
    let server = SmtpServer::start(&[]);
    let tdb = prepare(smtp_options(engine, &server));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_raw(&db, "hand:kind", "kind@example.org", None).await;
    queue_raw(&db, "hand:rcpt", "rcpt@example.org", None).await;
    queue_raw(&db, "fine", "fine@example.org", None).await;
    sqlx::query("UPDATE outbox SET kind = 'fax' WHERE dedupe_key = 'hand:kind'")
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE outbox SET recipient = 'not an address' WHERE dedupe_key = 'hand:rcpt'")
        .execute(&db.pool)
        .await
        .unwrap();

    let p = run_worker(&db, &s, Duration::from_millis(1)).await;
    assert_eq!(p.sent(), 1);
    let r = row(&db, "fine").await;
    assert_eq!(r.state, "sent");
    let r = row(&db, "hand:kind").await;
    assert_eq!(r.state, "dead");
    assert!(r.last_error.unwrap().contains("\"fax\""));
    let r = row(&db, "hand:rcpt").await;
    assert_eq!(r.state, "dead");
    assert!(r.last_error.unwrap().starts_with("recipient:"));
    assert_eq!(server.received_count(), 1);
    assert_eq!(server.received_by("fine@example.org").len(), 1);
}
on_both_engines!(
    unsendable_rows_end_dead_without_blocking_the_queue,
    unsendable_rows_end_dead_without_blocking_the_queue
);

async fn exhausted_attempts_make_the_row_dead(engine: Engine) {
    let server = SmtpServer::start(&["--tempfail", "slow@example.org:100"]);
    let tdb = prepare(smtp_options(engine, &server).mail("max_attempts = 3"));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_raw(&db, "confirm:slow", "slow@example.org", None).await;

    let mut dead = 0;
    for _ in 0..3 {
        let p = run_worker(&db, &s, Duration::from_secs(3600)).await;
        dead += p.dead();
        make_retries_due(&db).await;
    }
    assert_eq!(dead, 1);
    let r = row(&db, "confirm:slow").await;
    assert_eq!((r.state.as_str(), r.attempts), ("dead", 3));
    assert!(r.last_error.as_deref().unwrap().contains("451"));
    assert_eq!(server.received_count(), 0);

    // What `casewire status` shows.
    let depth = outbox::depth_by_state(&db).await.unwrap();
    assert_eq!(depth, vec![(State::Dead, 1)]);
    let failures = outbox::recent_failures(&db, 10).await.unwrap();
    assert_eq!(failures.len(), 1);
    assert_eq!(failures[0].recipient, "slow@example.org");
    assert!(failures[0].last_error.contains("451"));
    // Nothing more happens to a dead row.
    make_retries_due(&db).await;
    run_worker(&db, &s, Duration::from_secs(3600)).await;
    assert_eq!(row(&db, "confirm:slow").await.attempts, 3);
}
on_both_engines!(
    exhausted_attempts_make_the_row_dead,
    exhausted_attempts_make_the_row_dead
);

async fn queued_message_is_not_sent_after_unsubscribe(engine: Engine) {
    let server = SmtpServer::start(&[]);
    let tdb = prepare(smtp_options(engine, &server));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let left = add_subscriber(&db, "left@example.org", "confirmed").await;
    let stays = add_subscriber(&db, "stays@example.org", "confirmed").await;
    queue_raw(&db, "d:left", "left@example.org", Some(left)).await;
    queue_raw(&db, "d:stays", "stays@example.org", Some(stays)).await;
    queue_raw(&db, "d:deleted", "deleted@example.org", Some(999_999)).await;
    queue_raw(&db, "d:listed", "listed@example.org", None).await;
    // Commits after the rows were queued, before the worker runs.
    sqlx::query("UPDATE subscribers SET status = 'unsubscribed' WHERE id = $1")
        .bind(left)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query("INSERT INTO suppressions (email, reason, created_at) VALUES ('listed@example.org', 'complaint', 0)")
        .execute(&db.pool)
        .await
        .unwrap();

    let p = run_worker(&db, &s, Duration::from_secs(60)).await;
    assert_eq!((p.sent(), p.suppressed()), (1, 3));
    for key in ["d:left", "d:deleted", "d:listed"] {
        assert_eq!(row(&db, key).await.state, "suppressed", "{key}");
    }
    assert!(row(&db, "d:left")
        .await
        .last_error
        .unwrap()
        .contains("unsubscribed"));
    let got: Vec<String> = server.received().into_iter().map(|(r, _)| r).collect();
    assert_eq!(got, vec!["stays@example.org".to_owned()]);
}
on_both_engines!(
    queued_message_is_not_sent_after_unsubscribe,
    queued_message_is_not_sent_after_unsubscribe
);

/// A row asks its send-time check as soon as it starts, and then waits for
/// the rate limit and a session. An unsubscribe that commits while it waits
/// is still honoured: an answer older than a few milliseconds is asked
/// again before the transaction (invariant 7).
async fn unsubscribe_while_a_row_waits_to_send_is_honoured(engine: Engine) {
    let server = SmtpServer::start(&[]);
    // One message a second: every row starts (and asks) at once, and all
    // but the first wait for the limiter far longer than an answer lasts
    // (and long enough for the unsubscribe below to commit first).
    let tdb = prepare(smtp_options(engine, &server).mail("rate_per_second = 1"));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        let to = format!("waiting{n}@example.org");
        let id = add_subscriber(&db, &to, "confirmed").await;
        queue_raw(&db, &format!("d:waiting{n}"), &to, Some(id)).await;
        ids.push((to, id));
    }
    let worker = start_sending_until(&db, &s, &server, 1).await;
    // Everyone not yet sent to leaves now, while their rows wait.
    let first: Vec<String> = server.received().into_iter().map(|(r, _)| r).collect();
    for (to, id) in &ids {
        if !first.contains(to) {
            sqlx::query("UPDATE subscribers SET status = 'unsubscribed' WHERE id = $1")
                .bind(id)
                .execute(&db.pool)
                .await
                .unwrap();
        }
    }
    let p = tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker did not finish")
        .unwrap();
    assert_eq!((p.sent(), p.suppressed()), (1, 2));
    let got: Vec<String> = server.received().into_iter().map(|(r, _)| r).collect();
    assert_eq!(
        got, first,
        "a message went out after its recipient unsubscribed"
    );
}
on_both_engines!(
    unsubscribe_while_a_row_waits_to_send_is_honoured,
    unsubscribe_while_a_row_waits_to_send_is_honoured
);

/// Queues one digest row on a shared body; returns its dedupe key.
async fn queue_digest(db: &Db, body_id: i64, to: &str, n: usize) -> String {
    let key = format!("digest:weekly:w1:{n}");
    let vars = serde_json::json!({
        "name": "Ada Lovelace",
        "unsubscribe_url": format!("https://example.com/unsubscribe/tok{n}"),
        "preferences_url": format!("https://example.com/preferences/tok{n}"),
        "headers": {
            "List-Unsubscribe": format!("<https://example.com/unsubscribe/tok{n}>"),
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": "Casewire weekly <weekly.example.com>",
            "Feedback-ID": "weekly:casewire"
        }
    });
    outbox::enqueue(
        &db.pool,
        &NewMessage {
            dedupe_key: &key,
            kind: Kind::Digest,
            edition: Some("weekly"),
            subscriber_id: None,
            recipient: &EmailAddress::parse(to).unwrap(),
            message: None,
            body_id: Some(body_id),
            vars: &vars,
            now: Utc::now(),
        },
    )
    .await
    .unwrap();
    key
}

async fn insert_body(db: &Db) -> i64 {
    outbox::insert_body(
        &db.pool,
        "Casewire: Weekly",
        "<p>Three new case studies</p><a href=\"%%CASEWIRE_UNSUBSCRIBE_URL%%\">Unsubscribe</a> <a href=\"%%CASEWIRE_PREFERENCES_URL%%\">Preferences</a>",
        "Three new case studies\nUnsubscribe: %%CASEWIRE_UNSUBSCRIBE_URL%%\nPreferences: %%CASEWIRE_PREFERENCES_URL%%\n",
        Utc::now(),
    )
    .await
    .unwrap()
}

/// Unfolds header lines and returns the value of `name`.
fn header(message: &str, name: &str) -> Option<String> {
    let head = message.split("\r\n\r\n").next().unwrap();
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
    })
}

async fn digest_is_personalised_and_dkim_signed(engine: Engine) {
    let server = SmtpServer::start(&[]);
    let tdb = prepare(smtp_options(engine, &server).mail(
        "dkim = { selector = \"cw1\", domain = \"example.com\", key_file = \"{root}/dkim.pem\" }",
    ));
    let key_file = tdb.root.join("dkim.pem");
    let out = std::process::Command::new("openssl")
        .args(["genrsa", "-traditional", "-out"])
        .arg(&key_file)
        .arg("2048")
        .output()
        .expect("the openssl command is required to generate a test DKIM key");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let body = insert_body(&db).await;
    let k1 = queue_digest(&db, body, "ada@example.org", 1).await;
    let k2 = queue_digest(&db, body, "bob@example.org", 2).await;

    let p = run_worker(&db, &s, Duration::from_secs(60)).await;
    assert_eq!(p.sent(), 2);
    assert_eq!(row(&db, &k1).await.state, "sent");
    assert_eq!(row(&db, &k2).await.state, "sent");
    let ada = &server.received_by("ada@example.org")[0];
    let bob = &server.received_by("bob@example.org")[0];
    assert_eq!(header(ada, "Subject").unwrap(), "Casewire: Weekly");
    assert_eq!(
        header(ada, "To").unwrap(),
        "\"Ada Lovelace\" <ada@example.org>"
    );
    assert_eq!(
        header(ada, "List-Unsubscribe").unwrap(),
        "<https://example.com/unsubscribe/tok1>"
    );
    assert_eq!(
        header(ada, "List-Unsubscribe-Post").unwrap(),
        "List-Unsubscribe=One-Click"
    );
    assert!(header(ada, "List-Id").is_some() && header(ada, "Feedback-ID").is_some());
    assert!(ada.contains("https://example.com/unsubscribe/tok1"));
    assert!(ada.contains("https://example.com/preferences/tok1"));
    assert!(!ada.contains("%%CASEWIRE_"));
    assert!(bob.contains("https://example.com/unsubscribe/tok2"));
    assert!(!bob.contains("tok1"));

    let sig = header(ada, "DKIM-Signature").expect("a DKIM-Signature header");
    let tags: std::collections::HashMap<&str, &str> = sig
        .split(';')
        .filter_map(|t| t.trim().split_once('='))
        .collect();
    assert_eq!(tags["d"], "example.com");
    assert_eq!(tags["s"], "cw1");
    assert!(tags["a"].starts_with("rsa-sha256"));
    let signed: Vec<String> = tags["h"]
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "list-unsubscribe",
        "list-unsubscribe-post",
    ] {
        assert!(signed.iter().any(|s| s == h), "h= lacks {h}: {signed:?}");
    }
    assert!(!tags["b"].trim().is_empty());
}
on_both_engines!(
    digest_is_personalised_and_dkim_signed,
    digest_is_personalised_and_dkim_signed
);

async fn file_transport_writes_eml_files(engine: Engine) {
    let tdb = prepare(
        options(engine)
            .file_transport()
            .mail("file_dir = \"{root}/mail-out\""),
    );
    let dir = tdb.root.join("mail-out");
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_raw(&db, "confirm:f", "file@example.org", None).await;
    let body = insert_body(&db).await;
    queue_digest(&db, body, "digest@example.org", 7).await;

    let p = run_worker(&db, &s, Duration::from_secs(60)).await;
    assert_eq!(p.sent(), 2);
    let files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "eml"))
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert_eq!(files.len(), 2);
    assert!(files
        .iter()
        .any(|f| f.contains("Please confirm: confirm:f")));
    assert!(files
        .iter()
        .any(|f| f.contains("https://example.com/unsubscribe/tok7")));
}
on_both_engines!(
    file_transport_writes_eml_files,
    file_transport_writes_eml_files
);

async fn rate_limited_delivery_delivers_everything(engine: Engine) {
    let server = SmtpServer::start(&[]);
    let tdb = prepare(smtp_options(engine, &server).mail("rate_per_second = 40"));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    for i in 0..30 {
        queue_raw(&db, &format!("r:{i}"), &format!("r{i}@example.org"), None).await;
    }
    let p = run_worker(&db, &s, Duration::from_secs(60)).await;
    assert_eq!(p.sent(), 30);
    assert_eq!(server.received_count(), 30);
    for i in 0..30 {
        assert_eq!(server.received_by(&format!("r{i}@example.org")).len(), 1);
    }
}
on_both_engines!(
    rate_limited_delivery_delivers_everything,
    rate_limited_delivery_delivers_everything
);

// ---------------------------------------------------------------------------
// kill -9 safety (DESIGN.md invariant 6). The sender is examples/outbox_sender.rs,
// which `cargo test` builds next to this test binary.

fn spawn_sender(config: &Path) -> std::process::Child {
    // target/<profile>/deps/delivery-… → target/<profile>/examples/outbox_sender
    let exe = std::env::current_exe().unwrap();
    let sender = exe
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples/outbox_sender");
    assert!(
        sender.exists(),
        "{} is missing: a plain `cargo test` builds it from examples/outbox_sender.rs (with --test, add `cargo build --example outbox_sender`)",
        sender.display()
    );
    std::process::Command::new(sender)
        .arg(config)
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

async fn kill_9_loses_nothing_and_duplicates_at_most_in_flight(engine: Engine) {
    const N: usize = 5000;
    const CONCURRENCY: usize = 4;
    let server = SmtpServer::start(&[]);
    let tdb = prepare(smtp_options(engine, &server).mail(format!("concurrency = {CONCURRENCY}")));
    let config = tdb.config_path.clone();
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let mut tx = db.pool.begin().await.unwrap();
    let vars = serde_json::json!({});
    for i in 0..N {
        let to = format!("user{i}@example.org");
        let key = format!("k:{i}");
        let message = raw_message(&to, &key);
        outbox::enqueue(
            &mut *tx,
            &NewMessage {
                dedupe_key: &key,
                kind: Kind::Confirmation,
                edition: None,
                subscriber_id: None,
                recipient: &EmailAddress::parse(&to).unwrap(),
                message: Some(&message),
                body_id: None,
                vars: &vars,
                now: Utc::now(),
            },
        )
        .await
        .unwrap();
    }
    tx.commit().await.unwrap();

    let kills = [500, 2000, 3500];
    for at in kills {
        let mut child = spawn_sender(&config);
        let reached = server.wait_for(at, Duration::from_secs(120));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(reached, "only {} messages arrived", server.received_count());
    }
    let status = spawn_sender(&config).wait().unwrap();
    assert!(status.success());

    let received = server.received();
    let mut per: std::collections::HashMap<String, usize> = Default::default();
    for (r, _) in &received {
        *per.entry(r.clone()).or_default() += 1;
    }
    for i in 0..N {
        assert!(
            per.contains_key(&format!("user{i}@example.org")),
            "user{i} got nothing"
        );
    }
    let duplicates = received.len() - N;
    eprintln!(
        "{engine:?}: {} received, {duplicates} duplicates over {} kills",
        received.len(),
        kills.len()
    );
    assert!(
        duplicates <= CONCURRENCY * kills.len(),
        "{duplicates} duplicates, more than {CONCURRENCY} per kill"
    );
    let depth = outbox::depth_by_state(&db).await.unwrap();
    assert_eq!(depth, vec![(State::Sent, N as i64)]);
}
on_both_engines!(
    kill_9_loses_nothing_and_duplicates_at_most_in_flight,
    kill_9_loses_nothing_and_duplicates_at_most_in_flight
);

async fn drain_sends_one_edition_and_reports(engine: Engine) {
    let server = SmtpServer::start(&["--reject", "bounce@example.org"]);
    let tdb = prepare(smtp_options(engine, &server));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_raw(&db, "confirm:t", "t@example.org", None).await;
    let body = insert_body(&db).await;
    for (n, to) in ["a@example.org", "b@example.org", "bounce@example.org"]
        .iter()
        .enumerate()
    {
        queue_digest(&db, body, to, n).await;
    }
    let progress = Arc::new(Progress::default());
    let report = casewire::delivery::drain(
        db.clone(),
        s.clone(),
        Some("weekly".into()),
        None,
        progress.clone(),
        CancellationToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(
        (report.sent, report.suppressed, report.retried, report.dead),
        (2, 1, 0, 0)
    );
    assert_eq!(report.pending, 0);
    assert!(report.rate() > 0.0);
    assert_eq!(progress.sent(), 2);
    let counts = outbox::edition_counts(&db, "weekly").await.unwrap();
    assert_eq!(counts, vec![(State::Sent, 2), (State::Suppressed, 1)]);
    // Transactional mail was left for the daemon.
    assert_eq!(row(&db, "confirm:t").await.state, "queued");
    assert!(server.received_by("t@example.org").is_empty());
    assert_eq!(outbox::pending_count(&db, Some("")).await.unwrap(), 1);
}
on_both_engines!(
    drain_sends_one_edition_and_reports,
    drain_sends_one_edition_and_reports
);

async fn shutdown_finishes_in_flight_and_requeues_the_rest(engine: Engine) {
    let server = SmtpServer::start(&[]);
    let tdb = prepare(smtp_options(engine, &server).mail("rate_per_second = 5"));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    for i in 0..20 {
        queue_raw(&db, &format!("s:{i}"), &format!("s{i}@example.org"), None).await;
    }
    let shutdown = CancellationToken::new();
    let worker = DeliveryWorker {
        db: db.clone(),
        settings: s.clone(),
        mailer: Mailer::from_settings(&s.mail).unwrap(),
        wake: Default::default(),
        options: WorkerOptions::new(&s),
        progress: Default::default(),
    };
    let task = tokio::spawn(worker.run(shutdown.clone()));
    let srv = &server;
    tokio::task::block_in_place(|| assert!(srv.wait_for(2, Duration::from_secs(30))));
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(20), task)
        .await
        .expect("the worker stops promptly")
        .unwrap();
    let depth: std::collections::HashMap<State, i64> = outbox::depth_by_state(&db)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(depth.get(&State::Sending), None, "{depth:?}");
    let sent = depth.get(&State::Sent).copied().unwrap_or(0);
    assert_eq!(sent as usize, server.received_count(), "{depth:?}");
    assert_eq!(sent + depth.get(&State::Queued).copied().unwrap_or(0), 20);
    let unattempted: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE state = 'queued' AND attempts = 0")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(unattempted, 20 - sent, "returned rows count no attempt");
}
on_both_engines!(
    shutdown_finishes_in_flight_and_requeues_the_rest,
    shutdown_finishes_in_flight_and_requeues_the_rest
);

async fn enqueuers_wake_an_idle_worker(engine: Engine) {
    let server = SmtpServer::start(&[]);
    let tdb = prepare(smtp_options(engine, &server));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let wake = Arc::new(tokio::sync::Notify::new());
    let mut options = WorkerOptions::new(&s);
    options.poll_interval = Duration::from_secs(3600);
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(
        DeliveryWorker {
            db: db.clone(),
            settings: s.clone(),
            mailer: Mailer::from_settings(&s.mail).unwrap(),
            wake: wake.clone(),
            options,
            progress: Default::default(),
        }
        .run(shutdown.clone()),
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    queue_raw(&db, "confirm:w", "w@example.org", None).await;
    wake.notify_one();
    let srv = &server;
    let arrived = tokio::task::block_in_place(|| srv.wait_for(1, Duration::from_secs(10)));
    shutdown.cancel();
    task.await.unwrap();
    assert!(
        arrived,
        "the wake-up did not start the worker before its next poll"
    );
    assert_eq!(row(&db, "confirm:w").await.state, "sent");
}
on_both_engines!(enqueuers_wake_an_idle_worker, enqueuers_wake_an_idle_worker);

/// Claims every due row for `owner` at `now` with a lease until
/// `lease_until`, expired leases released first.
async fn claim_as(
    db: &Db,
    owner: &str,
    now: chrono::DateTime<Utc>,
    lease_until: chrono::DateTime<Utc>,
) -> Vec<i64> {
    claim_releasing(db, owner, now, lease_until, true).await
}

/// [`claim_as`], releasing expired leases only when `release_expired`.
async fn claim_releasing(
    db: &Db,
    owner: &str,
    now: chrono::DateTime<Utc>,
    lease_until: chrono::DateTime<Utc>,
    release_expired: bool,
) -> Vec<i64> {
    let mut conn = db.pool.acquire().await.unwrap();
    outbox::claim(
        &mut conn,
        db.backend,
        owner,
        10,
        now,
        lease_until,
        None,
        release_expired,
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.id)
    .collect()
}

/// A row whose lease ran out goes back to the queue when a claim asks for
/// that (a worker's claims ask once a second), and until then stays with
/// its old owner: a claim that does not ask leaves it alone.
async fn expired_leases_go_back_when_a_claim_asks(engine: Engine) {
    let tdb = prepare(options(engine));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_raw(&db, "confirm:expired", "expired@example.org", None).await;
    let t0 = Utc::now();
    let ids = claim_as(&db, "first", t0, t0 + chrono::Duration::seconds(1)).await;
    assert_eq!(ids.len(), 1);
    let later = t0 + chrono::Duration::seconds(2);
    let lease = later + chrono::Duration::seconds(60);

    let taken = claim_releasing(&db, "second", later, lease, false).await;
    assert_eq!(taken, Vec::<i64>::new());
    let r = row(&db, "confirm:expired").await;
    assert_eq!(r.state, "sending", "{r:?}");
    assert_eq!(
        outbox::depth_by_state(&db).await.unwrap(),
        vec![(State::Sending, 1)]
    );

    let taken = claim_releasing(&db, "second", later, lease, true).await;
    assert_eq!(taken, ids);
    let r = row(&db, "confirm:expired").await;
    assert_eq!((r.state.as_str(), r.attempts), ("sending", 0), "{r:?}");
    assert_eq!(
        outbox::depth_by_state(&db).await.unwrap(),
        vec![(State::Sending, 1)]
    );
}
on_both_engines!(
    expired_leases_go_back_when_a_claim_asks,
    expired_leases_go_back_when_a_claim_asks
);

async fn record_as(db: &Db, owner: &str, outcomes: &[outbox::Outcome]) {
    let mut conn = db.pool.acquire().await.unwrap();
    outbox::record_outcomes(&mut conn, owner, outcomes, Utc::now())
        .await
        .unwrap();
}

/// A worker whose lease ran out and was taken over by another cannot
/// overwrite the row: neither while the new owner sends it nor after it
/// was sent. The lease owner is the whole guard of the bulk result writes.
async fn results_under_a_lost_lease_change_nothing(engine: Engine) {
    use outbox::Outcome;
    let tdb = prepare(options(engine));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_raw(&db, "confirm:lease", "lease@example.org", None).await;
    let t0 = Utc::now();
    let ids = claim_as(&db, "first", t0, t0 + chrono::Duration::seconds(1)).await;
    assert_eq!(ids.len(), 1);
    let id = ids[0];
    // The first owner's lease has run out: the second owner's claim takes it.
    let later = t0 + chrono::Duration::seconds(2);
    let taken = claim_as(&db, "second", later, later + chrono::Duration::seconds(60)).await;
    assert_eq!(taken, vec![id]);

    record_as(&db, "first", &[Outcome::Sent { id }]).await;
    record_as(
        &db,
        "first",
        &[Outcome::Released { id }, Outcome::Sent { id }],
    )
    .await;
    let r = row(&db, "confirm:lease").await;
    assert_eq!((r.state.as_str(), r.attempts), ("sending", 0), "{r:?}");

    record_as(&db, "second", &[Outcome::Sent { id }]).await;
    let r = row(&db, "confirm:lease").await;
    assert_eq!((r.state.as_str(), r.attempts), ("sent", 1), "{r:?}");

    // Late results of the first owner leave the sent row alone.
    record_as(&db, "first", &[Outcome::Sent { id }]).await;
    record_as(
        &db,
        "first",
        &[Outcome::Retry {
            id,
            next_attempt_at: Utc::now(),
            error: "late".into(),
        }],
    )
    .await;
    record_as(&db, "first", &[Outcome::Deferred { id }]).await;
    let r = row(&db, "confirm:lease").await;
    assert_eq!((r.state.as_str(), r.attempts), ("sent", 1), "{r:?}");
    assert_eq!(r.last_error, None);
    let depth = outbox::depth_by_state(&db).await.unwrap();
    assert_eq!(depth, vec![(State::Sent, 1)]);
}
on_both_engines!(
    results_under_a_lost_lease_change_nothing,
    results_under_a_lost_lease_change_nothing
);

/// PostgreSQL: renewing leases skips a row another transaction holds locked
/// (the result writer recording it) instead of waiting for it; waiting
/// could deadlock against a result write that locks the same rows in
/// another order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_renewal_does_not_wait_for_rows_being_recorded() {
    let tdb = prepare(options(Engine::Postgres));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    for i in 0..3 {
        queue_raw(
            &db,
            &format!("confirm:renew{i}"),
            &format!("renew{i}@example.org"),
            None,
        )
        .await;
    }
    let t0 = Utc::now();
    let ids = claim_as(&db, "w", t0, t0 + chrono::Duration::seconds(30)).await;
    assert_eq!(ids.len(), 3);

    let mut locker = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE outbox SET updated_at = updated_at WHERE id = $1")
        .bind(ids[0])
        .execute(&mut *locker)
        .await
        .unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let until = t0 + chrono::Duration::seconds(90);
    let renewed = tokio::time::timeout(
        Duration::from_secs(5),
        outbox::renew_leases(&mut conn, "w", until),
    )
    .await
    .expect("renewing leases waited for a locked row")
    .unwrap();
    assert_eq!(renewed, 2);
    locker.rollback().await.unwrap();
    let leases: Vec<(i64, i64)> = sqlx::query_as("SELECT id, lease_until FROM outbox ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let renewed_ids: Vec<i64> = leases
        .iter()
        .filter(|(_, l)| *l == until.timestamp_millis())
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(renewed_ids, ids[1..].to_vec());
}

/// PostgreSQL: the server ends every session of the worker mid-run (as a
/// restart or a failover does). The statements on the dead sessions fail,
/// the worker takes fresh connections, and every row still ends sent; the
/// checks that failed count as one attempt, nothing more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery_survives_the_database_ending_its_sessions() {
    const N: usize = 300;
    let server = SmtpServer::start(&[]);
    let tdb = prepare(smtp_options(Engine::Postgres, &server).mail("max_attempts = 5"));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_numbered(&db, "cut", N).await;
    let worker = tokio::spawn({
        let (db, s) = (db.clone(), s.clone());
        async move { run_worker(&db, &s, Duration::from_millis(1)).await }
    });
    let started = std::time::Instant::now();
    while server.received_count() < 20 {
        assert!(started.elapsed() < Duration::from_secs(30), "nothing sent");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let cut: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(!cut.is_empty());
    tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker kept failing on dead sessions")
        .unwrap();
    // Checks that failed on a dead session are retried (due at once here).
    for _ in 0..5 {
        make_retries_due(&db).await;
        run_worker(&db, &s, Duration::from_millis(1)).await;
    }
    let depth = outbox::depth_by_state(&db).await.unwrap();
    assert_eq!(depth, vec![(State::Sent, N as i64)]);
    let most: i64 = sqlx::query_scalar("SELECT MAX(attempts) FROM outbox")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(most <= 2, "a row took {most} attempts");
    let mut seen = std::collections::HashSet::new();
    for i in 0..N {
        if !server
            .received_by(&format!("cut{i}@example.org"))
            .is_empty()
        {
            seen.insert(i);
        }
    }
    assert_eq!(seen.len(), N);
}

/// While results cannot be recorded (another session holds a lock on the
/// outbox), no more than `mail.concurrency` messages go past the step that
/// delivers them (the content's final `.` line), though twice as many rows
/// are being worked on; the transactions waiting at that step, their
/// content already with the relay, give up after `[mail] timeout_seconds`
/// without delivering anything, and that is nobody's fault but ours: no
/// attempt is counted, the relay is not paused, and every message arrives
/// exactly once after the lock is gone. PostgreSQL only: on SQLite the
/// send-time checks share the result writer's connection, so messages wait
/// at the check instead, before any transaction starts (the kill -9 test
/// covers the bound on both engines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrecorded_results_hold_messages_before_their_end() {
    const N: usize = 40;
    const CONCURRENCY: usize = 2;
    let dir = tempfile::tempdir().unwrap();
    let commands = dir.path().join("commands.log");
    let server = SmtpServer::start(&["--command-log", commands.to_str().unwrap()]);
    let tdb = prepare(
        options(Engine::Postgres)
            .smtp(&server)
            .mail(format!("concurrency = {CONCURRENCY}\ntimeout_seconds = 1")),
    );
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_numbered(&db, "held", N).await;
    let worker = start_sending(&db, &s, &server).await;
    // Readers pass an EXCLUSIVE lock; claims and result writes wait for it.
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE outbox IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    let at_lock = server.received_count();
    // Longer than the timeout, so that the waiting transactions give up.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let during = server.received_count() - at_lock;
    lock.commit().await.unwrap();
    assert!(
        during <= CONCURRENCY,
        "{during} messages were delivered while no result could be recorded"
    );
    let progress = tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker did not finish after the lock was released")
        .unwrap();

    let depth = outbox::depth_by_state(&db).await.unwrap();
    assert_eq!(depth, vec![(State::Sent, N as i64)]);
    let attempts: Vec<i64> = sqlx::query_scalar("SELECT DISTINCT attempts FROM outbox")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        attempts,
        vec![1],
        "a held transaction was counted as an attempt"
    );
    assert_eq!(progress.deferred(), 0, "the relay was blamed");
    assert_eq!(progress.retried(), 0);
    for i in 0..N {
        assert_eq!(
            server.received_by(&format!("held{i}@example.org")).len(),
            1,
            "held{i}"
        );
    }
    // Transactions were started and given up: more MAIL commands than messages.
    let mails = std::fs::read_to_string(&commands).unwrap().lines().count();
    assert!(
        mails > N,
        "{mails} MAIL commands for {N} messages: no transaction waited at the gate"
    );
}

/// SQLite: claims and result writes that fail midway (here: another
/// connection holds the write lock past the busy timeout) roll their
/// transaction back and are tried again. The worker's one connection is
/// left outside any transaction, so the retry can begin its own; every
/// message ends sent once, and the counters match the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_that_fail_midway_roll_back_and_retry() {
    const N: usize = 30;
    let server = SmtpServer::start(&[]);
    let tdb = prepare(
        options(Engine::Sqlite)
            .smtp(&server)
            .mail("concurrency = 2"),
    );
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue_numbered(&db, "locked", N).await;
    let worker = start_sending(&db, &s, &server).await;
    // Longer than the connections' 10 s busy timeout: the worker's writes
    // meanwhile fail with "database is locked".
    let mut lock = db.pool.acquire().await.unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut *lock)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(11)).await;
    sqlx::query("COMMIT").execute(&mut *lock).await.unwrap();
    drop(lock);
    let progress = tokio::time::timeout(Duration::from_secs(60), worker)
        .await
        .expect("the worker did not finish after the lock was released")
        .unwrap();

    assert_eq!(progress.sent(), N as u64);
    let counted: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM outbox GROUP BY state")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(counted, vec![("sent".to_owned(), N as i64)]);
    let depth = outbox::depth_by_state(&db).await.unwrap();
    assert_eq!(depth, vec![(State::Sent, N as i64)], "the counters drifted");
    for i in 0..N {
        assert_eq!(
            server.received_by(&format!("locked{i}@example.org")).len(),
            1,
            "locked{i}"
        );
    }
}
