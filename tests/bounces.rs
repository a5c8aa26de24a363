//! Bounces and complaints that come back after sending: ESP webhooks over
//! real HTTP, each authenticated as its provider signs it (a real P-256 key
//! for SendGrid, HMAC for Mailgun, basic auth for Postmark, an RSA key and
//! an X.509 certificate made by openssl and served over loopback HTTP for
//! SNS), and the policy checked in the database on both engines.

mod support;

use std::sync::{Arc, Mutex};

use base64::Engine as _;
use casewire::store::subscribers::Status;
use support::{spawn_app, AppOptions, Engine, TestApp};

const POSTMARK_USER: &str = "postmark-hook";
const POSTMARK_PASS: &str = "a-long-postmark-password";
const MAILGUN_KEY: &str = "key-0123456789abcdef0123456789abcdef";

/// The app with `bounces` as its `[bounces]` section.
async fn spawn(engine: Engine, bounces: &str) -> TestApp {
    spawn_app(options(engine, bounces)).await
}

/// The options of [`spawn`], for tests that add to them.
fn options(engine: Engine, bounces: &str) -> AppOptions {
    AppOptions::new(engine)
        .self_links()
        .toml(format!("[bounces]\n{bounces}"))
}

async fn subscriber(app: &TestApp, email: &str) {
    casewire::subscribers::add(
        &app.settings,
        &app.app().db,
        &casewire::subscribers::SignUp {
            email: email.into(),
            name: "Reader".into(),
            categories: Vec::new(),
            editions: Vec::new(),
        },
        Status::Confirmed,
        "test",
        chrono::Utc::now(),
    )
    .await
    .expect("add a subscriber");
}

async fn suppressed(app: &TestApp, email: &str) -> bool {
    sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM suppressions WHERE email = $1")
        .bind(email)
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap()
        > 0
}

async fn events(app: &TestApp) -> Vec<(String, String, Option<String>, String)> {
    sqlx::query_as("SELECT email, kind, status, source FROM bounce_events ORDER BY id")
        .fetch_all(&app.app().db.pool)
        .await
        .unwrap()
}

async fn post(app: &TestApp, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut r = app.client.post(app.url(path)).body(body.to_vec());
    for (k, v) in headers {
        r = r.header(*k, v);
    }
    let r = r.send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

// ---------------------------------------------------------------------------

fn sendgrid_key() -> (p256::ecdsa::SigningKey, String) {
    use p256::pkcs8::EncodePublicKey as _;
    let key = p256::ecdsa::SigningKey::random(&mut rand::rngs::OsRng);
    let der = key.verifying_key().to_public_key_der().unwrap();
    (
        key,
        base64::engine::general_purpose::STANDARD.encode(der.as_bytes()),
    )
}

fn sendgrid_headers(key: &p256::ecdsa::SigningKey, body: &[u8]) -> Vec<(&'static str, String)> {
    use p256::ecdsa::signature::Signer as _;
    let ts = chrono::Utc::now().timestamp().to_string();
    let mut signed = ts.as_bytes().to_vec();
    signed.extend_from_slice(body);
    let sig: p256::ecdsa::Signature = key.sign(&signed);
    vec![
        (
            "X-Twilio-Email-Event-Webhook-Signature",
            base64::engine::general_purpose::STANDARD.encode(sig.to_der().as_bytes()),
        ),
        ("X-Twilio-Email-Event-Webhook-Timestamp", ts),
        ("Content-Type", "application/json".into()),
    ]
}

async fn sendgrid_bounces_need_a_valid_signature_and_count_once(engine: Engine) {
    let (key, public) = sendgrid_key();
    let app = spawn(
        engine,
        &format!("[bounces.webhooks.sendgrid]\npublic_key = \"{public}\""),
    )
    .await;
    subscriber(&app, "gone@example.net").await;
    subscriber(&app, "reporter@example.net").await;
    let body = serde_json::json!([
        {"email": "gone@example.net", "event": "bounce", "type": "bounce", "status": "5.1.1",
         "reason": "550 5.1.1 user unknown", "sg_event_id": "ev-1", "timestamp": 1764000000},
        {"email": "reporter@example.net", "event": "spamreport", "sg_event_id": "ev-2", "timestamp": 1764000001},
        {"email": "opened@example.net", "event": "open", "sg_event_id": "ev-3", "timestamp": 1764000002}
    ])
    .to_string();

    // Unsigned, and signed by another key: refused, nothing recorded.
    let (status, _) = post(&app, "/webhooks/sendgrid", &[], body.as_bytes()).await;
    assert_eq!(status, 401);
    let (other, _) = sendgrid_key();
    let (status, _) = post(
        &app,
        "/webhooks/sendgrid",
        &sendgrid_headers(&other, body.as_bytes()),
        body.as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    // Signed over other bytes.
    let mut headers = sendgrid_headers(&key, body.as_bytes());
    let (status, _) = post(&app, "/webhooks/sendgrid", &headers, b"[]").await;
    assert_eq!(status, 401);
    assert!(events(&app).await.is_empty());
    assert!(!suppressed(&app, "gone@example.net").await);

    let (status, reply) = post(&app, "/webhooks/sendgrid", &headers, body.as_bytes()).await;
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains("\"recorded\":2"), "{reply}");
    assert!(suppressed(&app, "gone@example.net").await);
    assert!(suppressed(&app, "reporter@example.net").await);
    assert_eq!(
        app.status("reporter@example.net").await.as_deref(),
        Some("unsubscribed")
    );
    assert_eq!(
        app.status("gone@example.net").await.as_deref(),
        Some("confirmed")
    );
    let e = events(&app).await;
    assert_eq!(e.len(), 2);
    assert_eq!(
        e[0],
        (
            "gone@example.net".into(),
            "hard".into(),
            Some("5.1.1".into()),
            "sendgrid".into()
        )
    );
    assert_eq!(e[1].1, "complaint");

    // The same batch again (SendGrid retries): nothing new.
    headers = sendgrid_headers(&key, body.as_bytes());
    let (status, reply) = post(&app, "/webhooks/sendgrid", &headers, body.as_bytes()).await;
    assert_eq!(status, 200);
    assert!(reply.contains("\"recorded\":0"), "{reply}");
    assert_eq!(events(&app).await.len(), 2);

    // Signed but not JSON: 400.
    let headers = sendgrid_headers(&key, b"not json");
    let (status, _) = post(&app, "/webhooks/sendgrid", &headers, b"not json").await;
    assert_eq!(status, 400);
    // A provider that is not configured: 404.
    let (status, _) = post(&app, "/webhooks/mailgun", &[], b"{}").await;
    assert_eq!(status, 404);
    app.stop().await;
}
on_both_engines!(
    sendgrid_bounces_need_a_valid_signature_and_count_once,
    sendgrid_bounces_need_a_valid_signature_and_count_once
);

// ---------------------------------------------------------------------------

fn mailgun_body(token: &str, timestamp: i64, event: serde_json::Value) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(MAILGUN_KEY.as_bytes()).unwrap();
    mac.update(timestamp.to_string().as_bytes());
    mac.update(token.as_bytes());
    let sig = hex::encode(mac.finalize().into_bytes());
    serde_json::json!({
        "signature": {"timestamp": timestamp.to_string(), "token": token, "signature": sig},
        "event-data": event,
    })
    .to_string()
    .into_bytes()
}

async fn mailgun_complaints_unsubscribe_and_replays_are_refused(engine: Engine) {
    let app = spawn(
        engine,
        &format!("[bounces.webhooks.mailgun]\nsigning_key = \"{MAILGUN_KEY}\""),
    )
    .await;
    subscriber(&app, "reader@example.org").await;
    let now = chrono::Utc::now().timestamp();
    let complaint =
        serde_json::json!({"event": "complained", "recipient": "reader@example.org", "id": "mg-1"});
    let json = [("Content-Type", "application/json".to_string())];

    // An old signature (replay of a captured post) and a forged one: 401.
    let (status, _) = post(
        &app,
        "/webhooks/mailgun",
        &json,
        &mailgun_body("t-old-0000000000", now - 3600, complaint.clone()),
    )
    .await;
    assert_eq!(status, 401);
    let mut forged: serde_json::Value =
        serde_json::from_slice(&mailgun_body("t-1", now, complaint.clone())).unwrap();
    forged["signature"]["signature"] = serde_json::json!("00".repeat(32));
    let (status, _) = post(
        &app,
        "/webhooks/mailgun",
        &json,
        forged.to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        app.status("reader@example.org").await.as_deref(),
        Some("confirmed")
    );

    let body = mailgun_body("t-fresh-token-1", now, complaint.clone());
    let (status, reply) = post(&app, "/webhooks/mailgun", &json, &body).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        app.status("reader@example.org").await.as_deref(),
        Some("unsubscribed")
    );
    assert!(suppressed(&app, "reader@example.org").await);
    // The same post again: its token was used.
    let (status, _) = post(&app, "/webhooks/mailgun", &json, &body).await;
    assert_eq!(status, 401);

    // A temporary failure is a soft bounce: recorded, not suppressed.
    subscriber(&app, "full@example.org").await;
    let soft = serde_json::json!({"event": "failed", "severity": "temporary", "recipient": "full@example.org",
        "id": "mg-2", "delivery-status": {"code": 452, "message": "4.2.2 mailbox full"}});
    let (status, _) = post(
        &app,
        "/webhooks/mailgun",
        &json,
        &mailgun_body("t-fresh-token-2", now, soft),
    )
    .await;
    assert_eq!(status, 200);
    assert!(!suppressed(&app, "full@example.org").await);
    let e = events(&app).await;
    assert_eq!(
        e.last().unwrap(),
        &(
            "full@example.org".into(),
            "soft".into(),
            Some("4.2.2".into()),
            "mailgun".into()
        )
    );
    app.stop().await;
}
on_both_engines!(
    mailgun_complaints_unsubscribe_and_replays_are_refused,
    mailgun_complaints_unsubscribe_and_replays_are_refused
);

// ---------------------------------------------------------------------------

async fn postmark_soft_bounces_suppress_after_the_limit(engine: Engine) {
    let app = spawn(
        engine,
        &format!("soft_limit = 3\nsoft_window_days = 30\n[bounces.webhooks.postmark]\nusername = \"{POSTMARK_USER}\"\npassword = \"{POSTMARK_PASS}\""),
    )
    .await;
    subscriber(&app, "full@example.com").await;
    let auth = |user: &str, pass: &str| {
        vec![
            (
                "Authorization",
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
                ),
            ),
            ("Content-Type", "application/json".to_string()),
        ]
    };
    let bounce = |id: u64| {
        serde_json::json!({"RecordType": "Bounce", "Type": "SoftBounce", "ID": id, "Email": "full@example.com",
            "Details": "smtp; 452 4.2.2 Mailbox full", "Description": "The server could not deliver"})
        .to_string()
    };
    let (status, _) = post(
        &app,
        "/webhooks/postmark",
        &auth(POSTMARK_USER, "wrong-password-here"),
        bounce(1).as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = post(&app, "/webhooks/postmark", &[], bounce(1).as_bytes()).await;
    assert_eq!(status, 401);
    for id in 1..=2 {
        let (status, reply) = post(
            &app,
            "/webhooks/postmark",
            &auth(POSTMARK_USER, POSTMARK_PASS),
            bounce(id).as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{reply}");
        assert!(
            !suppressed(&app, "full@example.com").await,
            "after {id} soft bounces"
        );
    }
    // The second one again changes nothing; the third distinct one suppresses.
    post(
        &app,
        "/webhooks/postmark",
        &auth(POSTMARK_USER, POSTMARK_PASS),
        bounce(2).as_bytes(),
    )
    .await;
    assert!(!suppressed(&app, "full@example.com").await);
    post(
        &app,
        "/webhooks/postmark",
        &auth(POSTMARK_USER, POSTMARK_PASS),
        bounce(3).as_bytes(),
    )
    .await;
    assert!(suppressed(&app, "full@example.com").await);
    assert_eq!(events(&app).await.len(), 3);
    let (status, _) = post(
        &app,
        "/webhooks/postmark",
        &auth(POSTMARK_USER, POSTMARK_PASS),
        b"{\"no\": ",
    )
    .await;
    assert_eq!(status, 400);
    app.stop().await;
}
on_both_engines!(
    postmark_soft_bounces_suppress_after_the_limit,
    postmark_soft_bounces_suppress_after_the_limit
);

// ---------------------------------------------------------------------------

/// A loopback HTTP server that serves the SNS signing certificate and
/// records SubscribeURL visits.
struct SnsHost {
    port: u16,
    visits: Arc<Mutex<Vec<String>>>,
    _task: tokio::task::JoinHandle<()>,
}

async fn sns_host(cert_pem: String) -> SnsHost {
    use axum::routing::get;
    let visits = Arc::new(Mutex::new(Vec::new()));
    let v = visits.clone();
    let router = axum::Router::new()
        .route("/cert.pem", get(move || async move { cert_pem }))
        .route(
            "/confirm",
            get(move |q: axum::extract::RawQuery| async move {
                v.lock().unwrap().push(q.0.unwrap_or_default());
                "<ConfirmSubscriptionResponse/>"
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    SnsHost {
        port,
        visits,
        _task: task,
    }
}

/// An RSA key and a self-signed certificate for it, made by openssl.
fn rsa_key_and_certificate(dir: &std::path::Path) -> (rsa::RsaPrivateKey, String) {
    use rsa::pkcs8::DecodePrivateKey as _;
    let key = dir.join("sns-key.pem");
    let cert = dir.join("sns-cert.pem");
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=sns.test",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl is needed to make the SNS test certificate (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let private =
        rsa::RsaPrivateKey::from_pkcs8_pem(&std::fs::read_to_string(key).unwrap()).unwrap();
    (private, std::fs::read_to_string(cert).unwrap())
}

fn sns_sign(key: &rsa::RsaPrivateKey, m: &mut serde_json::Map<String, serde_json::Value>) {
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let fields: &[&str] = if m["Type"] == "Notification" {
        &[
            "Message",
            "MessageId",
            "Subject",
            "Timestamp",
            "TopicArn",
            "Type",
        ]
    } else {
        &[
            "Message",
            "MessageId",
            "SubscribeURL",
            "Timestamp",
            "Token",
            "TopicArn",
            "Type",
        ]
    };
    let mut text = String::new();
    for f in fields {
        if let Some(v) = m.get(*f).and_then(|v| v.as_str()) {
            text.push_str(&format!("{f}\n{v}\n"));
        }
    }
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(key.clone());
    let sig = signer.sign(text.as_bytes()).to_bytes();
    m.insert("SignatureVersion".into(), "2".into());
    m.insert(
        "Signature".into(),
        base64::engine::general_purpose::STANDARD.encode(sig).into(),
    );
}

async fn ses_notifications_verify_against_the_signing_certificate(engine: Engine) {
    let dir = tempfile::tempdir().unwrap();
    let (key, cert) = rsa_key_and_certificate(dir.path());
    let host = sns_host(cert).await;
    let topic = "arn:aws:sns:eu-west-1:123456789012:casewire-bounces";
    let app = spawn(
        engine,
        &format!("[bounces.webhooks.ses]\ntopic_arn = \"{topic}\"\ncert_hosts = [\"127.0.0.1\"]"),
    )
    .await;
    subscriber(&app, "gone@example.net").await;
    let cert_url = format!("http://127.0.0.1:{}/cert.pem", host.port);
    let sns = |m: serde_json::Value| m.as_object().unwrap().clone();

    // The subscription confirmation is verified, then its SubscribeURL visited.
    let mut confirm = sns(serde_json::json!({
        "Type": "SubscriptionConfirmation", "MessageId": "c-1", "Token": "tok-123", "TopicArn": topic,
        "Message": "You have chosen to subscribe", "Timestamp": "2026-12-02T06:00:00.000Z",
        "SubscribeURL": format!("http://127.0.0.1:{}/confirm?Action=ConfirmSubscription&Token=tok-123", host.port),
        "SigningCertURL": cert_url,
    }));
    sns_sign(&key, &mut confirm);
    let hdr = [(
        "x-amz-sns-message-type",
        "SubscriptionConfirmation".to_string(),
    )];
    let (status, reply) = post(
        &app,
        "/webhooks/ses",
        &hdr,
        serde_json::Value::Object(confirm).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(host.visits.lock().unwrap().len(), 1);

    let ses = serde_json::json!({
        "notificationType": "Bounce",
        "bounce": {"bounceType": "Permanent", "bounceSubType": "General",
                   "bouncedRecipients": [{"emailAddress": "gone@example.net", "status": "5.1.1",
                                          "action": "failed", "diagnosticCode": "smtp; 550 5.1.1 user unknown"}]},
        "mail": {"messageId": "0102-abc", "source": "digest@casewire.test"}
    });
    let mut note = sns(serde_json::json!({
        "Type": "Notification", "MessageId": "n-1", "TopicArn": topic, "Message": ses.to_string(),
        "Timestamp": "2026-12-02T06:01:00.000Z", "SigningCertURL": cert_url,
    }));
    sns_sign(&key, &mut note);
    let hdr = [("x-amz-sns-message-type", "Notification".to_string())];

    // Tampered after signing: refused.
    let mut tampered = note.clone();
    tampered.insert(
        "Message".into(),
        ses.to_string().replace("gone@", "someone-else@").into(),
    );
    let (status, _) = post(
        &app,
        "/webhooks/ses",
        &hdr,
        serde_json::Value::Object(tampered).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    // A certificate on a host that is not SNS's: refused without fetching.
    let mut elsewhere = note.clone();
    elsewhere.insert(
        "SigningCertURL".into(),
        "https://sns.attacker.example/cert.pem".into(),
    );
    let (status, _) = post(
        &app,
        "/webhooks/ses",
        &hdr,
        serde_json::Value::Object(elsewhere).to_string().as_bytes(),
    )
    .await;
    assert_eq!(status, 401);
    assert!(!suppressed(&app, "gone@example.net").await);

    let body = serde_json::Value::Object(note).to_string();
    let (status, reply) = post(&app, "/webhooks/ses", &hdr, body.as_bytes()).await;
    assert_eq!(status, 200, "{reply}");
    assert!(suppressed(&app, "gone@example.net").await);
    let (status, _) = post(&app, "/webhooks/ses", &hdr, body.as_bytes()).await;
    assert_eq!(status, 200);
    assert_eq!(
        events(&app).await,
        vec![(
            "gone@example.net".into(),
            "hard".into(),
            Some("5.1.1".into()),
            "ses".into()
        )]
    );
    app.stop().await;
}
on_both_engines!(
    ses_notifications_verify_against_the_signing_certificate,
    ses_notifications_verify_against_the_signing_certificate
);

// ---------------------------------------------------------------------------

fn cli(app: &TestApp, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(app.db.path().join("casewire.toml"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn operators_list_bounces_manage_suppressions_and_see_the_rates(engine: Engine) {
    let app = spawn(engine, "complaint_rate_warn = 0.001").await;
    // One message sent: a sign-up's confirmation (file transport).
    app.subscribe("reader@example.org").await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM outbox WHERE state = 'sent'")
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the confirmation was not sent"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let event = casewire::bounces::Event {
        key: "test:complaint-1".into(),
        address: casewire::domain::EmailAddress::parse("reader@example.org").unwrap(),
        kind: casewire::bounces::Kind::Complaint,
        status: None,
        diagnostic: "feedback report: abuse".into(),
        source: "arf",
        outbox_id: None,
        at: chrono::Utc::now(),
    };
    let applied = casewire::bounces::record(&app.app().db, &app.settings.bounces, &event)
        .await
        .unwrap();
    assert_eq!(applied, casewire::bounces::Applied::Unsubscribed);

    let (code, out, err) = cli(&app, &["bounces", "list", "--since", "1d"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("complaint") && out.contains("reader@example.org"),
        "{out}"
    );
    let (code, out, _) = cli(&app, &["bounces", "list", "--kind", "hard"]);
    assert_eq!(code, 0);
    assert!(out.is_empty(), "{out}");
    let (code, _, err) = cli(&app, &["bounces", "list", "--kind", "bogus"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, _) = cli(&app, &["status"]);
    assert_eq!(code, 0);
    assert!(out.contains("Bounces and complaints"), "{out}");
    assert!(
        out.contains("1 sent, 0 bounces (0.00%), 1 complaints (100.000%)"),
        "{out}"
    );
    assert!(out.contains("WARNING: complaint rate"), "{out}");

    let (code, _, err) = cli(
        &app,
        &[
            "suppressions",
            "add",
            "Typo@Example.COM",
            "--reason",
            "asked by phone",
        ],
    );
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = cli(&app, &["suppressions", "list"]);
    assert!(out.contains("typo@example.com  asked by phone"), "{out}");
    assert!(out.contains("reader@example.org  complaint"), "{out}");
    let (code, _, _) = cli(&app, &["suppressions", "remove", "typo@example.com"]);
    assert_eq!(code, 0);
    let (code, _, _) = cli(&app, &["suppressions", "remove", "typo@example.com"]);
    assert_eq!(code, 1, "removing what is not there fails");
    assert!(!suppressed(&app, "typo@example.com").await);
    app.stop().await;
}
on_both_engines!(
    operators_list_bounces_manage_suppressions_and_see_the_rates,
    operators_list_bounces_manage_suppressions_and_see_the_rates
);

// ---------------------------------------------------------------------------

async fn an_edition_pauses_itself_when_a_run_draws_too_many_complaints(engine: Engine) {
    let app = spawn_app(
        options(
            engine,
            &format!("[bounces.webhooks.mailgun]\nsigning_key = \"{MAILGUN_KEY}\""),
        )
        .mail("bounce_domain = \"casewire.test\"")
        .editions(
            r#"
[[editions]]
slug = "weekly"
name = "Weekly digest"
schedule = "0 8 * * MON"
pause_above = { complaint_rate = 0.1, min_sent = 3 }
timezone = "Europe/Berlin"

[[editions]]
slug = "daily"
name = "Daily digest"
schedule = "0 7 * * *"
timezone = "UTC"
"#,
        ),
    )
    .await;
    for who in ["a@example.org", "b@example.org", "c@example.org"] {
        casewire::subscribers::add(
            &app.settings,
            &app.app().db,
            &casewire::subscribers::SignUp {
                email: who.into(),
                name: String::new(),
                categories: Vec::new(),
                editions: vec!["weekly".into()],
            },
            Status::Confirmed,
            "test",
            chrono::Utc::now(),
        )
        .await
        .unwrap();
    }
    // A new case study, then the weekly run, sent now through the file transport.
    let content = app.db.path().join("content");
    std::fs::write(
        content.join("pool-exhaustion.md"),
        "---\ntitle: The pool that ran dry\ndate: 2026-11-30T09:00:00Z\ncategories: [databases]\n---\n\nEvery request waited on a connection that a stuck batch job held.\n",
    )
    .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM publication_events")
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap()
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the case study was not published"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (code, _, err) = cli(&app, &["digest", "send", "weekly"]);
    assert_eq!(code, 0, "{err}");
    let rows: Vec<(i64, String)> = sqlx::query_as(
        "SELECT id, recipient FROM outbox WHERE kind = 'digest' AND state = 'sent' ORDER BY id",
    )
    .fetch_all(&app.app().db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 3, "{err}");

    // One reader of three complains, about the digest their VERP address names.
    let key = casewire::bounces::verp::key(
        &casewire::keys::ServerKey::load_or_create(&app.settings.http.form_key_file).unwrap(),
    );
    let verp = casewire::bounces::verp::encode("bounces@casewire.test", &key, rows[0].0);
    let now = chrono::Utc::now().timestamp();
    let complaint = serde_json::json!({"event": "complained", "recipient": rows[0].1, "id": "mg-pause",
        "envelope": {"sender": verp}});
    let (status, reply) = post(
        &app,
        "/webhooks/mailgun",
        &[("Content-Type", "application/json".to_string())],
        &mailgun_body("t-pause-token-1", now, complaint),
    )
    .await;
    assert_eq!(status, 200, "{reply}");
    let outbox_id: Option<i64> = sqlx::query_scalar("SELECT outbox_id FROM bounce_events")
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap();
    assert_eq!(
        outbox_id,
        Some(rows[0].0),
        "the VERP address named the digest row"
    );
    let reason: Option<String> =
        sqlx::query_scalar("SELECT reason FROM edition_pauses WHERE edition = 'weekly'")
            .fetch_optional(&app.app().db.pool)
            .await
            .unwrap();
    let reason = reason.expect("the edition paused itself");
    assert!(
        reason.contains("complaint rate") && reason.contains("1 of 3"),
        "{reason}"
    );
    let (_, out, _) = cli(&app, &["status"]);
    assert!(
        out.contains("33.333%") || out.contains("complaint rate 33.33"),
        "{out}"
    );
    let (code, _, err) = cli(&app, &["digest", "resume", "weekly"]);
    assert_eq!(code, 0, "{err}");
    app.stop().await;
}
on_both_engines!(
    an_edition_pauses_itself_when_a_run_draws_too_many_complaints,
    an_edition_pauses_itself_when_a_run_draws_too_many_complaints
);
