//! Sign-up abuse checks over real HTTP on SQLite and PostgreSQL: a filled
//! honeypot, a form sent back too fast or without its signed stamp are
//! answered byte for byte like a real sign-up and store and send nothing;
//! the per-IP limit follows forwarded headers from trusted proxies only.

mod support;

use casewire::keys::ServerKey;
use casewire::subscribers::abuse;
use support::{spawn_app, AppOptions, Engine, Reply, TestApp};

/// A stamp the server would have put in a form `secs_ago` seconds ago.
fn stamp_from_past(app: &TestApp, secs_ago: i64) -> String {
    let key = ServerKey::load_or_create(&app.settings.http.form_key_file).unwrap();
    abuse::stamp(
        &key,
        chrono::Utc::now() - chrono::Duration::seconds(secs_ago),
    )
}

fn stamp_in_form(body: &str) -> String {
    let start = body
        .find("name=\"form_stamp\" value=\"")
        .unwrap_or_else(|| panic!("no form_stamp in the form:\n{body}"))
        + "name=\"form_stamp\" value=\"".len();
    body[start..].split('"').next().unwrap().to_owned()
}

/// Status, content type and body: everything but the Date header.
fn visible(r: &Reply) -> (u16, Option<String>, String) {
    (
        r.status,
        r.headers
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned()),
        r.body.clone(),
    )
}

async fn bots_get_the_same_answer_and_nothing_is_sent(engine: Engine) {
    let app = spawn_app(
        AppOptions::new(engine)
            .self_links()
            .http("signup_min_seconds = 3"),
    )
    .await;
    let form = app.get("/subscribe").await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("name=\"website\""), "honeypot missing");
    let fresh = stamp_in_form(&form.body);

    // A person: the stamp is older than the minimum fill time.
    let old = stamp_from_past(&app, 10);
    let real = app
        .post_form(
            "/subscribe",
            &[
                ("email", "person@example.com"),
                ("name", "Ada"),
                ("website", ""),
                ("form_stamp", &old),
            ],
        )
        .await;
    assert_eq!(real.status, 200, "{}", real.body);
    assert_eq!(
        app.status("person@example.com").await.as_deref(),
        Some("pending")
    );
    assert_eq!(app.outbox().await.len(), 1);

    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "honeypot",
            vec![
                ("email", "pot@example.com"),
                ("website", "http://spam.example"),
                ("form_stamp", &old),
            ],
        ),
        (
            "too fast",
            vec![("email", "fast@example.com"), ("form_stamp", &fresh)],
        ),
        ("no stamp", vec![("email", "nostamp@example.com")]),
        (
            "forged stamp",
            vec![
                ("email", "forged@example.com"),
                ("form_stamp", "1000.00112233445566778899aabbccddeeff"),
            ],
        ),
    ];
    for (what, fields) in cases {
        let reply = app.post_form("/subscribe", &fields).await;
        assert_eq!(
            visible(&reply),
            visible(&real),
            "{what}: the answer differs from a real sign-up's"
        );
        assert_eq!(
            app.status(fields[0].1).await,
            None,
            "{what}: a subscriber row was stored"
        );
    }
    // JSON clients too: the form's JSON carries a stamp to send back.
    let json_form = app.get_json("/subscribe").await.json();
    let json_fresh = json_form["form_stamp"].as_str().unwrap().to_owned();
    assert_eq!(json_form["min_seconds"], 3);
    let real_json = app
        .post_json(
            "/subscribe",
            serde_json::json!({"email": "json@example.com", "form_stamp": old}),
        )
        .await;
    assert_eq!(real_json.status, 200, "{}", real_json.body);
    for body in [
        serde_json::json!({"email": "json-fast@example.com", "form_stamp": json_fresh}),
        serde_json::json!({"email": "json-pot@example.com", "form_stamp": old, "website": "x"}),
        serde_json::json!({"email": "json-none@example.com"}),
    ] {
        let reply = app.post_json("/subscribe", body.clone()).await;
        assert_eq!(visible(&reply), visible(&real_json), "{body}");
    }
    // Only the two real sign-ups queued mail.
    let recipients: Vec<String> = app
        .outbox()
        .await
        .into_iter()
        .map(|r| r.recipient)
        .collect();
    assert_eq!(recipients, ["person@example.com", "json@example.com"]);
    assert_eq!(app.count("subscribers").await, 2);

    // A stamp older than a day asks for the form again instead of dropping it.
    let stale = stamp_from_past(&app, 25 * 3600);
    let reply = app
        .post_form(
            "/subscribe",
            &[("email", "slow@example.com"), ("form_stamp", &stale)],
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.body.contains("open for more than a day"),
        "{}",
        reply.body
    );
    assert!(
        reply.body.contains("slow@example.com"),
        "the address is kept in the form"
    );
    assert_ne!(stamp_in_form(&reply.body), stale, "a fresh stamp is issued");
    app.stop().await;
}
on_both_engines!(
    bots_get_real_answers_and_send_nothing,
    bots_get_the_same_answer_and_nothing_is_sent
);

async fn post_as(app: &TestApp, email: &str, header: Option<(&str, &str)>) -> u16 {
    let mut req = app
        .client
        .post(app.url("/subscribe"))
        .form(&[("email", email)]);
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// The limit allows a burst of 20 sign-ups per client address.
async fn per_ip_limit_follows_trusted_proxies_only(engine: Engine) {
    let app = spawn_app(
        AppOptions::new(engine)
            .self_links()
            .http("signup_min_seconds = 0\ntrusted_proxies = [\"127.0.0.0/8\"]"),
    )
    .await;
    // The client prepends a hop of its own choosing each time; the proxy
    // appends the real client, which is what counts.
    for i in 0..20 {
        let xff = format!("198.51.100.{i}, 203.0.113.5");
        let status = post_as(
            &app,
            &format!("a{i}@example.com"),
            Some(("x-forwarded-for", &xff)),
        )
        .await;
        assert_eq!(status, 200, "sign-up {i}");
    }
    assert_eq!(
        post_as(
            &app,
            "a20@example.com",
            Some(("x-forwarded-for", "198.51.100.99, 203.0.113.5"))
        )
        .await,
        429
    );
    // Another client behind the same proxy has its own budget (RFC 7239 form).
    assert_eq!(
        post_as(
            &app,
            "b@example.com",
            Some(("forwarded", "for=\"[2001:db8::7]:1234\";proto=https"))
        )
        .await,
        200
    );
    app.stop().await;

    // Without trusted proxies the headers are ignored: every request is the peer's.
    let app = spawn_app(
        AppOptions::new(engine)
            .self_links()
            .http("signup_min_seconds = 0"),
    )
    .await;
    for i in 0..20 {
        let xff = format!("203.0.113.{i}");
        assert_eq!(
            post_as(
                &app,
                &format!("c{i}@example.com"),
                Some(("x-forwarded-for", &xff))
            )
            .await,
            200
        );
    }
    assert_eq!(
        post_as(
            &app,
            "c20@example.com",
            Some(("x-forwarded-for", "203.0.113.200"))
        )
        .await,
        429
    );
    app.stop().await;
}
on_both_engines!(
    per_ip_limit_trusts_forwarded_headers_from_proxies_only,
    per_ip_limit_follows_trusted_proxies_only
);
