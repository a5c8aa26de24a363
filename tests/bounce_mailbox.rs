//! The bounce mailbox against a real IMAP server (Dovecot): DSNs and
//! feedback reports are recorded and moved to the done folder, auto-replies
//! are moved without an event, and what is not understood (a person's reply,
//! a DSN whose VERP signature is forged) stays in the inbox. New mail is
//! picked up by IMAP IDLE, not by the hour-long poll. Both engines.

mod support;

use std::time::{Duration, Instant};

use casewire::store::subscribers::Status;
use futures::StreamExt as _;
use support::imap::ImapServer;
use support::{prepare, AppOptions, Engine};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/bounces")
            .join(name),
    )
    .unwrap()
}

async fn count(session: &mut async_imap::Session<tokio::net::TcpStream>, mailbox: &str) -> u32 {
    session
        .examine(mailbox)
        .await
        .map(|m| m.exists)
        .unwrap_or(0)
}

async fn suppressed(db: &casewire::store::Db, email: &str) -> Option<String> {
    sqlx::query_scalar("SELECT reason FROM suppressions WHERE email = $1")
        .bind(email)
        .fetch_optional(&db.pool)
        .await
        .unwrap()
}

async fn bounce_mailbox_records_moves_and_leaves_what_it_cannot_read(engine: Engine) {
    let imap = ImapServer::start();
    let site = prepare(
        AppOptions::new(engine)
            .self_links()
            .no_admin_token()
            .mail("bounce_domain = \"casewire.test\"")
            .toml(format!(
                "[bounces]\nimap_url = \"{}\"\ndone_folder = \"Processed\"\npoll_seconds = 3600",
                imap.url("bounces", "INBOX")
            )),
    );
    let settings = site.settings().clone();

    // Subscribers, and a sent message to the one whose DSN comes back signed.
    for email in ["gone@example.net", "reader@example.com", "full@example.org"] {
        casewire::subscribers::add(
            &settings,
            &casewire::store::Db::open(&site.db.url).await.unwrap(),
            &casewire::subscribers::SignUp {
                email: email.into(),
                name: String::new(),
                categories: Vec::new(),
                editions: Vec::new(),
            },
            Status::Confirmed,
            "test",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    let app = site.start().await;
    let client = reqwest::Client::new();
    // A confirmed subscriber's sign-up gets an "already subscribed" note: a real sent row.
    client
        .post(app.url("/subscribe"))
        .form(&[("email", "gone@example.net")])
        .send()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let row: i64 = loop {
        let r: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM outbox WHERE recipient = 'gone@example.net' AND state = 'sent'",
        )
        .fetch_optional(&app.app().db.pool)
        .await
        .unwrap();
        if let Some(r) = r {
            break r;
        }
        assert!(Instant::now() < deadline, "the note was not sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The file transport writes the envelope sender into the .eml: it is the VERP address.
    let key = casewire::bounces::verp::key(
        &casewire::keys::ServerKey::load_or_create(&settings.http.form_key_file).unwrap(),
    );
    let verp = casewire::bounces::verp::encode("bounces@casewire.test", &key, row);
    let signed_dsn =
        fixture("postfix-dsn.eml").replace("bounces+42-5f0c1a2b3c4d5e6f@casewire.example", &verp);
    let forged_dsn = fixture("postfix-dsn.eml")
        .replace(
            "bounces+42-5f0c1a2b3c4d5e6f@casewire.example",
            &format!("bounces+{row}-00000000deadbeef@casewire.test"),
        )
        .replace("gone@example.net", "full@example.org")
        .replace(
            "Message-Id: <20261123070112.B1A2C3",
            "Message-Id: <forged.1",
        );
    let mut mail = imap.session("bounces").await;
    for m in [
        signed_dsn.clone(),
        fixture("arf-abuse.eml"),
        fixture("out-of-office.eml"),
        fixture("human-reply.eml"),
        forged_dsn,
        signed_dsn.clone(),
    ] {
        mail.append("INBOX", None, None, m.replace('\n', "\r\n"))
            .await
            .unwrap();
    }

    // Four are processed (two DSNs, the report, the auto-reply); two stay.
    let deadline = Instant::now() + Duration::from_secs(90);
    while count(&mut mail, "Processed").await < 4 {
        assert!(Instant::now() < deadline, "the mailbox was not processed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(count(&mut mail, "INBOX").await, 2);
    let reason = suppressed(&app.app().db, "gone@example.net")
        .await
        .expect("the hard bounce suppressed");
    assert!(reason.contains("5.1.1"), "{reason}");
    assert!(
        suppressed(&app.app().db, "reader@example.com")
            .await
            .is_some(),
        "the complaint suppressed"
    );
    assert!(
        suppressed(&app.app().db, "full@example.org")
            .await
            .is_none(),
        "a forged DSN suppressed nobody"
    );
    let status: String =
        sqlx::query_scalar("SELECT status FROM subscribers WHERE email = 'reader@example.com'")
            .fetch_one(&app.app().db.pool)
            .await
            .unwrap();
    assert_eq!(status, "unsubscribed");
    let events: Vec<(String, String, Option<i64>)> =
        sqlx::query_as("SELECT email, kind, outbox_id FROM bounce_events ORDER BY id")
            .fetch_all(&app.app().db.pool)
            .await
            .unwrap();
    assert_eq!(
        events,
        vec![
            ("gone@example.net".into(), "hard".into(), Some(row)),
            ("reader@example.com".into(), "complaint".into(), None),
        ],
        "the DSN seen twice is one event"
    );
    // What stays is what was not understood.
    mail.select("INBOX").await.unwrap();
    let left: Vec<String> = mail
        .fetch("1:*", "BODY.PEEK[HEADER.FIELDS (SUBJECT)]")
        .await
        .unwrap()
        .filter_map(|f| async move {
            f.ok()
                .and_then(|f| f.header().map(|h| String::from_utf8_lossy(h).into_owned()))
        })
        .collect()
        .await;
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(
        left.iter().any(|s| s.contains("Re: Weekly digest")),
        "{left:?}"
    );

    // IDLE: a complaint arriving now is read long before the hour-long poll.
    mail.append(
        "INBOX",
        None,
        None,
        fixture("arf-abuse.eml")
            .replace("reader@example.com", "full@example.org")
            .replace("fbl-20261124-0001", "fbl-20261124-0002")
            .replace('\n', "\r\n"),
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    while suppressed(&app.app().db, "full@example.org")
        .await
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "new mail was not noticed by IDLE"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = mail.logout().await;
    app.stop().await;
}
on_both_engines!(
    bounce_mailbox_records_moves_and_leaves_what_it_cannot_read,
    bounce_mailbox_records_moves_and_leaves_what_it_cannot_read
);
