//! Whose fault a failed delivery is, against a real SMTP server that
//! misbehaves on command (aiosmtpd, tests/support_smtp.py): relay faults
//! pause delivery and lose nothing, recipient faults suppress that address
//! alone, message faults kill the row without suppressing anyone. Every
//! test runs on SQLite and PostgreSQL and checks the database and the
//! delivered mail.

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use casewire::config::Settings;
use casewire::delivery::{DeliveryWorker, Mailer, Progress, WorkerOptions};
use casewire::domain::EmailAddress;
use casewire::store::outbox::{self, Kind, NewMessage};
use casewire::store::Db;
use chrono::Utc;
use support::smtp::SmtpServer;
use support::{prepare, spawn_app, AppOptions, Engine, TestSite};
use tokio_util::sync::CancellationToken;

/// These tests' site, named as the messages they queue name it ("Casewire"
/// at https://example.com/), without editions, delivering through `server`
/// with 4 connections and a 10 s timeout unless lines of the test say otherwise.
fn options(engine: Engine, server: &SmtpServer) -> AppOptions {
    AppOptions::new(engine)
        .editions("")
        .site("title = \"Casewire\"\nbase_url = \"https://example.com/\"")
        .mail("from = \"Casewire <digest@example.com>\"")
        .smtp(server)
        .mail("concurrency = 4\ntimeout_seconds = 10")
}

fn settings(site: &TestSite) -> Arc<Settings> {
    Arc::new(site.settings().clone())
}

/// `casewire status` on the real binary, for the site's config.
fn status(site: &TestSite) -> String {
    casewire(site, &["status"])
}

/// Runs the real binary on the site's config; returns stdout.
fn casewire(site: &TestSite, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(&site.config_path)
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn recipients(n: usize) -> Vec<String> {
    (1..=n).map(|i| format!("reader{i}@example.org")).collect()
}

/// Queues one message per recipient, as rows of `edition` when given.
async fn queue(db: &Db, to: &[String], edition: Option<&str>) {
    for (i, r) in to.iter().enumerate() {
        let key = format!("msg:{i}:{r}");
        let message = format!(
            "From: Casewire <digest@example.com>\r\nTo: <{r}>\r\nSubject: Test\r\nDate: Sat, 21 Nov 2026 20:00:00 +0000\r\nMessage-ID: <{i}@example.com>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello {r}, marker {key}\r\n"
        );
        let queued = outbox::enqueue(
            &db.pool,
            &NewMessage {
                dedupe_key: &key,
                kind: if edition.is_some() {
                    Kind::Digest
                } else {
                    Kind::Confirmation
                },
                edition,
                subscriber_id: None,
                recipient: &EmailAddress::parse(r).unwrap(),
                message: Some(&message),
                body_id: None,
                vars: &serde_json::json!({}),
                now: Utc::now(),
            },
        )
        .await
        .unwrap();
        assert!(queued);
    }
}

/// Runs a worker until nothing is due, or until the relay fails (its rows
/// stay queued); returns its counts and the relay's fault, if any.
async fn run_worker(db: &Db, s: &Arc<Settings>) -> (Arc<Progress>, Option<String>) {
    let progress = Arc::new(Progress::default());
    let mut options = WorkerOptions::new(s);
    options.stop_when_idle = true;
    options.retry_base = Duration::from_secs(3600);
    options.relay_patience = Some(Duration::ZERO);
    let relay = options.relay.clone();
    DeliveryWorker {
        db: db.clone(),
        settings: s.clone(),
        mailer: Mailer::from_settings(&s.mail).unwrap(),
        wake: Default::default(),
        options,
        progress: progress.clone(),
    }
    .try_run(CancellationToken::new())
    .await
    .unwrap();
    (progress, relay.fault().map(|f| f.message))
}

#[derive(Debug, Clone, PartialEq)]
struct Row {
    recipient: String,
    state: String,
    attempts: i64,
    last_error: Option<String>,
}

async fn rows(db: &Db) -> Vec<Row> {
    let rows: Vec<(String, String, i64, Option<String>)> =
        sqlx::query_as("SELECT recipient, state, attempts, last_error FROM outbox ORDER BY id")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    rows.into_iter()
        .map(|(recipient, state, attempts, last_error)| Row {
            recipient,
            state,
            attempts,
            last_error,
        })
        .collect()
}

async fn suppressions(db: &Db) -> Vec<(String, String)> {
    sqlx::query_as("SELECT email, reason FROM suppressions ORDER BY email")
        .fetch_all(&db.pool)
        .await
        .unwrap()
}

async fn relay_state(db: &Db) -> Option<(i64, Option<String>, i64)> {
    sqlx::query_as("SELECT paused, message, pauses FROM relay_state WHERE id = 1")
        .fetch_optional(&db.pool)
        .await
        .unwrap()
}

/// Each recipient got exactly one message, and it is the one queued for them.
fn assert_each_received_once(server: &SmtpServer, to: &[String]) {
    assert_eq!(server.received_count(), to.len(), "{:?}", server.received());
    for r in to {
        let got = server.received_by(r);
        assert_eq!(got.len(), 1, "{r}: {got:?}");
        assert!(got[0].contains(&format!("Hello {r},")), "{}", got[0]);
    }
}

/// The relay fails in some way; the worker pauses with `expect` in its
/// message. Nothing is suppressed, no attempt is counted, nothing counts as
/// sent; once the fault is switched off every message arrives exactly once.
async fn relay_fault_loses_nothing(
    engine: Engine,
    server_args: &[&str],
    url: Option<&dyn Fn(&SmtpServer) -> String>,
    extra: &str,
    expect: &str,
    accepted_before: usize,
) -> String {
    let server = SmtpServer::start(server_args);
    let mut options = options(engine, &server).mail(extra);
    if let Some(url) = url.map(|u| u(&server)) {
        options = options.smtp_url(&url);
    }
    let tdb = prepare(options);
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let to = recipients(6);
    queue(&db, &to, None).await;

    let (p, fault) = run_worker(&db, &s).await;
    let fault = fault.expect("the relay fault pauses delivery");
    assert!(fault.contains(expect), "{fault}");
    assert!(
        fault.starts_with(&format!("relay 127.0.0.1:{} ", server.port)),
        "{fault}"
    );
    assert_eq!(p.suppressed() + p.dead() + p.retried(), 0);
    assert_eq!(p.sent() as usize, accepted_before);
    assert_eq!(server.received_count(), accepted_before);
    assert!(p.deferred() >= 1);
    assert_eq!(suppressions(&db).await, vec![]);
    for r in rows(&db).await {
        if r.state == "sent" {
            assert_eq!(r.attempts, 1, "{r:?}");
        } else {
            assert_eq!(
                (r.state.as_str(), r.attempts, r.last_error.as_deref()),
                ("queued", 0, None),
                "{r:?}"
            );
        }
    }
    let (paused, message, pauses) = relay_state(&db).await.expect("the relay state is stored");
    assert_eq!((paused, pauses), (1, 1));
    assert_eq!(message.as_deref(), Some(fault.as_str()));
    let shown = status(&tdb);
    assert!(
        shown.contains(&format!("PAUSED, delivery waits for the relay: {fault}")),
        "{shown}"
    );

    server.heal(true);
    let (p, after) = run_worker(&db, &s).await;
    assert_eq!(after, None);
    assert_eq!(p.sent() as usize, to.len() - accepted_before);
    assert_each_received_once(&server, &to);
    assert!(rows(&db)
        .await
        .iter()
        .all(|r| r.state == "sent" && r.attempts == 1));
    assert_eq!(suppressions(&db).await, vec![]);
    let shown = status(&tdb);
    assert!(
        shown.contains("  ok; last fault: relay 127.0.0.1:"),
        "{shown}"
    );
    fault
}

async fn greeting_554_pauses_delivery_and_loses_nothing(engine: Engine) {
    relay_fault_loses_nothing(
        engine,
        &[
            "--greeting-reply",
            "554 5.7.1 Client host rejected: access denied",
        ],
        None,
        "",
        "refuses the connection since ",
        0,
    )
    .await;
}
on_both_engines!(
    greeting_554_pauses_delivery_and_loses_nothing,
    greeting_554_pauses_delivery_and_loses_nothing
);

async fn auth_535_pauses_delivery_and_loses_nothing(engine: Engine) {
    let url = |s: &SmtpServer| format!("smtp://casewire:wrong@127.0.0.1:{}", s.port);
    relay_fault_loses_nothing(
        engine,
        &["--auth", "casewire:right"],
        Some(&url),
        // The test relay offers AUTH without STARTTLS, on loopback.
        "allow_plaintext_auth = true",
        "refuses the login since ",
        0,
    )
    .await;
}
on_both_engines!(
    auth_535_pauses_delivery_and_loses_nothing,
    auth_535_pauses_delivery_and_loses_nothing
);

async fn mail_from_550_pauses_delivery_and_loses_nothing(engine: Engine) {
    let fault = relay_fault_loses_nothing(
        engine,
        &[
            "--mail-reply",
            "550 5.7.1 Sender address rejected: domain not verified",
        ],
        None,
        "",
        "refuses the sender since ",
        0,
    )
    .await;
    // The sentence an operator reads.
    assert!(
        fault.ends_with(": \"550 5.7.1 Sender address rejected: domain not verified\" — check mail.from's domain is allowed on the relay"),
        "{fault}"
    );
}
on_both_engines!(
    mail_from_550_pauses_delivery_and_loses_nothing,
    mail_from_550_pauses_delivery_and_loses_nothing
);

async fn mid_session_421_pauses_delivery_and_loses_nothing(engine: Engine) {
    // One connection, so "after two messages" is mid-session.
    relay_fault_loses_nothing(
        engine,
        &["--421-after", "2"],
        None,
        "concurrency = 1",
        "closes its connections since ",
        2,
    )
    .await;
}
on_both_engines!(
    mid_session_421_pauses_delivery_and_loses_nothing,
    mid_session_421_pauses_delivery_and_loses_nothing
);

async fn connection_dropped_after_data_pauses_delivery_and_loses_nothing(engine: Engine) {
    relay_fault_loses_nothing(
        engine,
        &["--drop-after-data"],
        None,
        "",
        "stopped answering since ",
        0,
    )
    .await;
}
on_both_engines!(
    connection_dropped_after_data_pauses_delivery_and_loses_nothing,
    connection_dropped_after_data_pauses_delivery_and_loses_nothing
);

async fn silent_relay_pauses_delivery_and_loses_nothing(engine: Engine) {
    relay_fault_loses_nothing(
        engine,
        &["--silent"],
        None,
        "timeout_seconds = 1",
        "stopped answering since ",
        0,
    )
    .await;
}
on_both_engines!(
    silent_relay_pauses_delivery_and_loses_nothing,
    silent_relay_pauses_delivery_and_loses_nothing
);

async fn rcpt_451_retries_that_row_with_backoff(engine: Engine) {
    let to = recipients(4);
    let reply = format!("{}:451 4.7.1 Greylisted, try again later", to[1]);
    let server = SmtpServer::start(&["--rcpt-reply", &reply]);
    let tdb = prepare(options(engine, &server).mail("max_attempts = 5"));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue(&db, &to, None).await;

    let (p, fault) = run_worker(&db, &s).await;
    assert_eq!(fault, None, "a recipient's 4xx is not the relay's fault");
    assert_eq!((p.sent(), p.retried(), p.suppressed()), (3, 1, 0));
    let r = rows(&db).await;
    assert_eq!((r[1].state.as_str(), r[1].attempts), ("queued", 1));
    assert!(
        r[1].last_error.as_deref().unwrap().contains("451 4.7.1"),
        "{r:?}"
    );
    let due: i64 = sqlx::query_scalar("SELECT next_attempt_at FROM outbox WHERE recipient = $1")
        .bind(&to[1])
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        due > Utc::now().timestamp_millis() + 60_000,
        "retried later, with backoff"
    );
    assert_eq!(suppressions(&db).await, vec![]);
    assert!(server.received_by(&to[1]).is_empty());

    server.heal(true);
    sqlx::query("UPDATE outbox SET next_attempt_at = 0 WHERE state = 'queued'")
        .execute(&db.pool)
        .await
        .unwrap();
    let (p, _) = run_worker(&db, &s).await;
    assert_eq!(p.sent(), 1);
    assert_each_received_once(&server, &to);
    assert_eq!(rows(&db).await[1].attempts, 2);
}
on_both_engines!(
    rcpt_451_retries_that_row_with_backoff,
    rcpt_451_retries_that_row_with_backoff
);

async fn rcpt_550_5_1_1_suppresses_that_address_alone(engine: Engine) {
    let to = recipients(6);
    let server = SmtpServer::start(&["--reject", &to[2]]);
    let tdb = prepare(options(engine, &server));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    queue(&db, &to, None).await;

    let (p, fault) = run_worker(&db, &s).await;
    assert_eq!(fault, None);
    assert_eq!((p.sent(), p.suppressed(), p.dead()), (5, 1, 0));
    let supp = suppressions(&db).await;
    assert_eq!(supp.len(), 1, "{supp:?}");
    assert_eq!(supp[0].0, to[2]);
    assert!(
        supp[0].1.contains("550 5.1.1") && supp[0].1.contains("User unknown"),
        "{supp:?}"
    );
    for (r, want) in rows(&db).await.iter().zip(&to) {
        let state = if *want == to[2] { "suppressed" } else { "sent" };
        assert_eq!((r.state.as_str(), r.attempts), (state, 1), "{r:?}");
    }
    assert!(server.received_by(&to[2]).is_empty());
    let mut others = to.clone();
    others.remove(2);
    assert_each_received_once(&server, &others);
}
on_both_engines!(
    rcpt_550_5_1_1_suppresses_that_address_alone,
    rcpt_550_5_1_1_suppresses_that_address_alone
);

/// Where the relay offers PIPELINING (RFC 2920) a message's MAIL, RCPT and
/// DATA go out together; where it does not, one at a time. Either way a
/// refused recipient is told apart from the rest (RCPT's own reply, not the
/// DATA reply that follows it in the pipeline) and suppressed alone.
async fn commands_are_pipelined_only_where_the_relay_offers_it(engine: Engine) {
    for offered in [true, false] {
        let to = recipients(4);
        let logs = tempfile::tempdir().unwrap();
        let log = logs.path().join("commands.log");
        let log_arg = log.to_str().unwrap().to_owned();
        let mut args = vec![
            "--reject",
            to[1].as_str(),
            "--command-log",
            log_arg.as_str(),
        ];
        if !offered {
            args.push("--no-pipelining");
        }
        let server = SmtpServer::start(&args);
        let tdb = prepare(options(engine, &server));
        let s = settings(&tdb);
        let db = Db::open(&s.database.url).await.unwrap();
        queue(&db, &to, None).await;

        let (p, fault) = run_worker(&db, &s).await;
        assert_eq!(fault, None, "offered: {offered}");
        assert_eq!(
            (p.sent(), p.suppressed(), p.dead()),
            (3, 1, 0),
            "offered: {offered}"
        );
        let supp = suppressions(&db).await;
        assert_eq!(supp.len(), 1, "{supp:?}");
        assert_eq!(supp[0].0, to[1]);
        assert!(supp[0].1.contains("550 5.1.1"), "{supp:?}");
        let mut others = to.clone();
        others.remove(1);
        assert_each_received_once(&server, &others);
        let want = if offered {
            "MAIL pipelined"
        } else {
            "MAIL waited"
        };
        let lines: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert!(
            lines.iter().all(|l| l == want),
            "offered: {offered}: {lines:?}"
        );
    }
}
on_both_engines!(
    commands_are_pipelined_only_where_the_relay_offers_it,
    commands_are_pipelined_only_where_the_relay_offers_it
);

async fn content_554_5_7_1_kills_the_row_without_suppressing(engine: Engine) {
    let server = SmtpServer::start(&["--data-reply", "554 5.7.1 Message content rejected"]);
    let tdb = prepare(options(engine, &server));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let to = recipients(3);
    queue(&db, &to, None).await;

    let (p, fault) = run_worker(&db, &s).await;
    assert_eq!(fault, None, "a refused message is not the relay's fault");
    assert_eq!(
        (p.sent(), p.dead(), p.suppressed(), p.retried()),
        (0, 3, 0, 0)
    );
    for r in rows(&db).await {
        assert_eq!((r.state.as_str(), r.attempts), ("dead", 1), "{r:?}");
        assert!(
            r.last_error
                .as_deref()
                .unwrap()
                .contains("554 5.7.1 Message content rejected"),
            "{r:?}"
        );
    }
    assert_eq!(suppressions(&db).await, vec![]);
    assert_eq!(server.received_count(), 0);
    // A later message to the same addresses is sent: nobody was suppressed.
    server.heal(true);
    sqlx::query("DELETE FROM outbox")
        .execute(&db.pool)
        .await
        .unwrap();
    queue(&db, &to, None).await;
    let (p, _) = run_worker(&db, &s).await;
    assert_eq!(p.sent(), 3);
    assert_each_received_once(&server, &to);
}
on_both_engines!(
    content_554_5_7_1_kills_the_row_without_suppressing,
    content_554_5_7_1_kills_the_row_without_suppressing
);

/// The daemon's view of a relay outage: `/healthz` says degraded (still 200)
/// with the relay's problem, `/metrics` shows the pause, and after two
/// minutes of outage every message arrives exactly once, with no attempt
/// consumed and nobody suppressed, by the breaker's next probe (at most
/// `PROBE_MAX` = 30 s after the relay recovers; the time observed is printed).
async fn relay_outage_of_two_minutes_loses_nothing(engine: Engine) {
    let server = SmtpServer::start(&[
        "--greeting-reply",
        "421 4.3.2 Service not available, closing",
    ]);
    let app = spawn_app(
        options(engine, &server)
            .no_admin_token()
            .mail("timeout_seconds = 5"),
    )
    .await;
    let to = recipients(20);
    queue(&app.app().db, &to, Some("weekly")).await;
    app.app().outbox_wake.notify_one();

    let client = reqwest::Client::new();
    let base = app.base.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let health = loop {
        let r = client.get(format!("{base}/healthz")).send().await.unwrap();
        assert_eq!(r.status(), 200, "a paused relay keeps /healthz at 200");
        let body: serde_json::Value = r.json().await.unwrap();
        if body["status"] == "degraded" {
            break body;
        }
        assert!(
            Instant::now() < deadline,
            "the relay fault never showed: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let problem = &health["problems"][0];
    assert_eq!(problem["component"], "relay", "{health}");
    let message = problem["message"].as_str().unwrap();
    assert!(
        message.starts_with(&format!(
            "relay 127.0.0.1:{} closes its connections since ",
            server.port
        )) && message.contains("421 4.3.2 Service not available"),
        "{message}"
    );
    let metrics = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("casewire_relay_paused 1"), "{metrics}");

    // Two minutes of outage: the breaker probes, nothing else moves.
    tokio::time::sleep(Duration::from_secs(120)).await;
    assert_eq!(server.received_count(), 0);
    for r in rows(&app.app().db).await {
        assert_eq!((r.state.as_str(), r.attempts), ("queued", 0), "{r:?}");
    }
    assert_eq!(suppressions(&app.app().db).await, vec![]);

    server.heal(true);
    let healed = Instant::now();
    assert!(
        server.wait_for(to.len(), Duration::from_secs(180)),
        "only {} of {} messages arrived after the relay recovered",
        server.received_count(),
        to.len()
    );
    println!(
        "relay outage ({engine:?}): every message arrived {:.1} s after the relay recovered (probe cap {} s)",
        healed.elapsed().as_secs_f64(),
        casewire::delivery::relay::PROBE_MAX.as_secs()
    );
    // Their results commit right after the server accepted them.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(&app.app().db).await.iter().any(|r| r.state != "sent") {
        assert!(Instant::now() < deadline, "{:?}", rows(&app.app().db).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_each_received_once(&server, &to);
    assert!(rows(&app.app().db).await.iter().all(|r| r.attempts == 1));
    assert_eq!(suppressions(&app.app().db).await, vec![]);
    let body: serde_json::Value = client
        .get(format!("{base}/healthz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["status"], "ok", "{body}");
    let (paused, _, pauses) = relay_state(&app.app().db).await.unwrap();
    assert_eq!((paused, pauses), (0, 1));
    app.stop().await;
}
on_both_engines!(
    relay_outage_of_two_minutes_loses_nothing,
    relay_outage_of_two_minutes_loses_nothing
);

/// smtp://user:pass@… on a relay that offers no STARTTLS sent AUTH PLAIN,
/// the password in clear. Now no AUTH command reaches the relay unless
/// `mail.allow_plaintext_auth = true`; the refusal is a relay fault (delivery
/// pauses, nobody is suppressed) and says why.
async fn plaintext_auth_without_tls_was_sent_in_clear(engine: Engine) {
    let mut tdb = prepare(AppOptions::new(engine));
    let auth_log = tdb.root.join("auth.log");
    let server = SmtpServer::start(&[
        "--auth",
        "casewire:right",
        "--auth-log",
        auth_log.to_str().unwrap(),
    ]);
    let url = format!("smtp://casewire:right@127.0.0.1:{}", server.port);
    tdb.rewrite(options(engine, &server).smtp_url(&url));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let to = recipients(3);
    queue(&db, &to, None).await;

    let (p, fault) = run_worker(&db, &s).await;
    let fault = fault.expect("the refusal pauses delivery");
    assert!(
        fault.starts_with(&format!(
            "relay 127.0.0.1:{} offers no TLS for the login since ",
            server.port
        )),
        "{fault}"
    );
    for words in [
        "offers no STARTTLS",
        "in clear",
        "mail.allow_plaintext_auth = true",
        "loopback",
    ] {
        assert!(fault.contains(words), "{words:?} in {fault}");
    }
    assert!(
        !fault.contains("right"),
        "the password is not shown: {fault}"
    );
    let attempts = std::fs::read_to_string(&auth_log).unwrap_or_default();
    assert_eq!(attempts, "", "no AUTH command reaches the relay");
    assert_eq!(server.received_count(), 0);
    assert_eq!(p.sent() + p.suppressed() + p.dead() + p.retried(), 0);
    assert_eq!(suppressions(&db).await, vec![]);
    for r in rows(&db).await {
        assert_eq!(
            (r.state.as_str(), r.attempts, r.last_error.as_deref()),
            ("queued", 0, None),
            "{r:?}"
        );
    }

    // An operator who accepts a clear login on this path says so.
    tdb.rewrite(
        options(engine, &server)
            .smtp_url(&url)
            .mail("allow_plaintext_auth = true"),
    );
    let s = settings(&tdb);
    let (p, after) = run_worker(&db, &s).await;
    assert_eq!(after, None);
    assert_eq!(p.sent() as usize, to.len());
    assert_each_received_once(&server, &to);
    let attempts = std::fs::read_to_string(&auth_log).unwrap();
    assert!(attempts.starts_with("AUTH "), "{attempts}");
}
on_both_engines!(
    plaintext_auth_without_tls_was_sent_in_clear,
    plaintext_auth_without_tls_was_sent_in_clear
);

async fn ten_refused_messages_in_a_row_pause_the_edition_until_resumed(engine: Engine) {
    let server = SmtpServer::start(&["--data-reply", "554 5.7.1 Message content rejected"]);
    // One connection: "in a row" is the order of the queue.
    let tdb = prepare(options(engine, &server).mail("concurrency = 1").editions(
        "[[editions]]\nslug = \"weekly\"\nname = \"Weekly\"\nschedule = \"0 8 * * MON\"\n",
    ));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let to = recipients(14);
    queue(&db, &to, Some("weekly")).await;

    let (p, fault) = run_worker(&db, &s).await;
    assert_eq!(fault, None);
    assert_eq!((p.dead(), p.sent(), p.suppressed()), (10, 0, 0));
    let r = rows(&db).await;
    for row in &r[..10] {
        assert_eq!((row.state.as_str(), row.attempts), ("dead", 1), "{row:?}");
        assert!(
            row.last_error.as_deref().unwrap().contains("554 5.7.1"),
            "{row:?}"
        );
    }
    for row in &r[10..] {
        assert_eq!(
            (row.state.as_str(), row.attempts, row.last_error.as_deref()),
            ("queued", 0, None),
            "{row:?}"
        );
    }
    assert_eq!(suppressions(&db).await, vec![]);
    let (reason,): (String,) =
        sqlx::query_as("SELECT reason FROM edition_pauses WHERE edition = 'weekly'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        reason.contains("10 messages in a row were refused after DATA")
            && reason.contains("554 5.7.1 Message content rejected")
            && reason.contains("casewire digest resume weekly"),
        "{reason}"
    );
    let shown = status(&tdb);
    assert!(shown.contains("weekly       PAUSED since "), "{shown}");

    // Paused: its rows stay queued even once the relay would take them;
    // other mail still goes out.
    server.heal(true);
    queue(&db, &["ada@example.org".to_owned()], None).await;
    let (p, _) = run_worker(&db, &s).await;
    assert_eq!(p.sent(), 1);
    assert_eq!(server.received_by("ada@example.org").len(), 1);
    assert_eq!(
        rows(&db)
            .await
            .iter()
            .filter(|r| r.state == "queued")
            .count(),
        4
    );

    let said = casewire(&tdb, &["digest", "resume", "weekly"]);
    assert!(said.contains("weekly resumed; 4 queued messages"), "{said}");
    let (p, _) = run_worker(&db, &s).await;
    assert_eq!(p.sent(), 4);
    assert_each_received_once(
        &server,
        &[&to[10..], &["ada@example.org".to_owned()]].concat(),
    );
    assert!(casewire(&tdb, &["digest", "resume", "weekly"]).contains("weekly is not paused"));
}
on_both_engines!(
    ten_refused_messages_in_a_row_pause_the_edition_until_resumed,
    ten_refused_messages_in_a_row_pause_the_edition_until_resumed
);

/// Stale digests do not go out late: a row older than its edition's
/// `expire_after` ends `expired` (no attempt, no suppression, no mail);
/// fresh rows and transactional mail are sent.
async fn digests_past_expire_after_end_expired_instead_of_arriving_late(engine: Engine) {
    let server = SmtpServer::start(&[]);
    let tdb = prepare(options(engine, &server).editions(
        "[[editions]]\nslug = \"daily\"\nname = \"Daily\"\nschedule = \"@daily\"\nexpire_after = \"1h\"\n",
    ));
    let s = settings(&tdb);
    let db = Db::open(&s.database.url).await.unwrap();
    let to = recipients(3);
    queue(&db, &to, Some("daily")).await;
    let confirm = vec!["ada@example.org".to_owned()];
    queue(&db, &confirm, None).await;
    let two_hours_ago = Utc::now().timestamp_millis() - 2 * 3600 * 1000;
    sqlx::query("UPDATE outbox SET created_at = $1 WHERE recipient <> $2")
        .bind(two_hours_ago)
        .bind(&to[2])
        .execute(&db.pool)
        .await
        .unwrap();

    let (p, _) = run_worker(&db, &s).await;
    assert_eq!((p.sent(), p.expired(), p.dead()), (2, 2, 0));
    let r = rows(&db).await;
    for row in &r[..2] {
        assert_eq!(
            (row.state.as_str(), row.attempts),
            ("expired", 0),
            "{row:?}"
        );
        assert!(
            row.last_error.as_deref().unwrap().contains("expire_after"),
            "{row:?}"
        );
    }
    assert_eq!(suppressions(&db).await, vec![]);
    assert_each_received_once(&server, &[&to[2..], &confirm[..]].concat());
    let shown = status(&tdb);
    assert!(shown.contains("expired     2"), "{shown}");
}
on_both_engines!(
    digests_past_expire_after_end_expired_instead_of_arriving_late,
    digests_past_expire_after_end_expired_instead_of_arriving_late
);
