//! Sign-up, confirmation, preferences and unsubscribe over real HTTP, on
//! SQLite and PostgreSQL: what a subscriber does, checked in the database
//! and in the queued messages.

mod support;

use support::{spawn_app, AppOptions, Engine, TestApp};

/// The app's link key, read from its file as the daemon does.
fn link_key(app: &TestApp) -> std::sync::Arc<casewire::subscribers::links::LinkKey> {
    casewire::subscribers::links::LinkKey::load_or_create(&app.settings.database.key_file).unwrap()
}

async fn subscribe_confirm_manage_unsubscribe(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    let form = app.get("/subscribe").await;
    assert_eq!(form.status, 200);
    for needle in [
        "name=\"email\"",
        "type=\"checkbox\" name=\"categories\" value=\"databases\"",
        "type=\"radio\" name=\"edition\" value=\"weekly\"",
        "name=\"viewport\"",
    ] {
        assert!(form.body.contains(needle), "{needle} missing from the form");
    }

    let reply = app
        .post_form(
            "/subscribe",
            &[
                ("email", "  Ada@Example.COM "),
                ("name", "Ada"),
                ("categories", "databases"),
                ("categories", "security"),
                ("edition", "daily"),
            ],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.body.contains("Check your inbox"));
    let email = "ada@example.com";
    assert_eq!(app.status(email).await.as_deref(), Some("pending"));
    assert_eq!(app.categories(email).await, ["databases", "security"]);
    assert_eq!(app.editions(email).await, [("daily".to_owned(), 0)]);

    // One confirmation message, addressed correctly, with a working link.
    let outbox = app.outbox().await;
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].kind, "confirmation");
    assert_eq!(outbox[0].recipient, email);
    assert!(outbox[0]
        .message
        .contains("Subject: Confirm your subscription to Casewire Test"));
    assert!(outbox[0].message.contains("To: Ada <ada@example.com>"));
    let path = app.confirmation_path(email).await;
    let token = path.trim_start_matches("/confirm/");

    // The link is signed, not stored: no token row; it carries its 7-day expiry.
    assert_eq!(app.count("tokens").await, 0);
    let claims = link_key(&app)
        .open(&casewire::domain::Token::parse(token).unwrap())
        .expect("signed with the app's key");
    let expires = claims.expires.expect("confirm links expire");
    let in_a_week = (chrono::Utc::now() + chrono::Duration::days(7)).timestamp();
    assert!(
        (in_a_week - 120..=in_a_week).contains(&expires),
        "{claims:?}"
    );

    // GET shows a button and changes nothing, however often it is fetched.
    for _ in 0..2 {
        let page = app.get(&path).await;
        assert_eq!(page.status, 200);
        assert!(page.body.contains("<form method=\"post\""));
        assert_eq!(app.status(email).await.as_deref(), Some("pending"));
    }

    // POST confirms; a second POST is fine.
    let confirmed = app.post_form(&path, &[]).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    assert!(confirmed.body.contains("You are subscribed"));
    assert_eq!(app.status(email).await.as_deref(), Some("confirmed"));
    let again = app.post_form(&path, &[]).await;
    assert_eq!(again.status, 200);
    assert_eq!(app.status(email).await.as_deref(), Some("confirmed"));

    // The confirmed page links to the preferences.
    let body = &confirmed.body;
    let start = body.find("../preferences/").expect("preferences link");
    let manage: String = body[start + "../preferences/".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    let prefs = app.get(&format!("/preferences/{manage}")).await;
    assert_eq!(prefs.status, 200);
    assert!(prefs.body.contains(
        "value=\"databases\" id=\"cat-databases\" aria-describedby=\"categories-hint\" checked"
    ));

    let saved = app
        .post_form(
            &format!("/preferences/{manage}"),
            &[
                ("categories", "performance"),
                ("edition", "weekly"),
                ("action", "save"),
            ],
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert!(saved.body.contains("preferences are saved"));
    assert_eq!(app.categories(email).await, ["performance"]);
    assert_eq!(app.editions(email).await.len(), 1);
    assert_eq!(app.editions(email).await[0].0, "weekly");

    // Unsubscribe GET shows a button and changes nothing.
    let page = app.get(&format!("/unsubscribe/{manage}")).await;
    assert_eq!(page.status, 200);
    assert_eq!(app.status(email).await.as_deref(), Some("confirmed"));

    // RFC 8058 one-click: 200, never a redirect, committed when answered.
    let one_click = app
        .post_raw(
            &format!("/unsubscribe/{manage}"),
            "application/x-www-form-urlencoded",
            b"List-Unsubscribe=One-Click".to_vec(),
        )
        .await;
    assert_eq!(one_click.status, 200, "{}", one_click.body);
    assert!(one_click.headers.get("location").is_none());
    assert!(one_click.headers.get("set-cookie").is_none());
    assert_eq!(app.status(email).await.as_deref(), Some("unsubscribed"));
    // And again: still fine.
    let again = app
        .post_raw(
            &format!("/unsubscribe/{manage}"),
            "application/x-www-form-urlencoded",
            b"List-Unsubscribe=One-Click".to_vec(),
        )
        .await;
    assert_eq!(again.status, 200);

    // An old confirmation link does not re-subscribe.
    let stale = app.post_form(&path, &[]).await;
    assert_eq!(stale.status, 404);
    assert_eq!(app.status(email).await.as_deref(), Some("unsubscribed"));
    app.stop().await;
}
on_both_engines!(
    subscribe_confirm_manage_unsubscribe_flow,
    subscribe_confirm_manage_unsubscribe
);

async fn confirmation_moves_cursor_to_newest_event(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    for (i, slug) in ["one", "two", "three"].iter().enumerate() {
        sqlx::query("INSERT INTO publications (slug, title, categories, published_at, first_seen_at, content_hash, updated_at, announced) VALUES ($1, $2, '', 0, 0, 'h', 0, 1)")
            .bind(*slug)
            .bind(*slug)
            .execute(&app.app().db.pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO publication_events (slug, categories, created_at) VALUES ($1, '', $2)",
        )
        .bind(*slug)
        .bind(i as i64)
        .execute(&app.app().db.pool)
        .await
        .unwrap();
    }
    let max: i64 = sqlx::query_scalar("SELECT MAX(id) FROM publication_events")
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap();
    app.subscribe("grace@example.com").await;
    // No edition chosen: the first configured one; no categories: all.
    assert_eq!(
        app.categories("grace@example.com").await,
        Vec::<String>::new()
    );
    let path = app.confirmation_path("grace@example.com").await;
    assert_eq!(app.post_form(&path, &[]).await.status, 200);
    assert_eq!(
        app.editions("grace@example.com").await,
        [("weekly".to_owned(), max)]
    );
    app.stop().await;
}
on_both_engines!(
    confirmation_sets_cursor_to_newest_event,
    confirmation_moves_cursor_to_newest_event
);

async fn known_and_new_addresses_look_the_same(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    let first = app.subscribe("linus@example.com").await;
    let second = app.subscribe("linus@example.com").await;
    let other = app.subscribe("new@example.com").await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.body, second.body,
        "a pending address answers like a new one"
    );
    assert_eq!(first.body, other.body);
    // At most one confirmation per address per hour.
    let to_linus = |rows: &[support::OutboxRow]| {
        rows.iter()
            .filter(|r| r.recipient == "linus@example.com")
            .count()
    };
    assert_eq!(to_linus(&app.outbox().await), 1);

    // Confirmed: same answer, no state change, no new mail within the hour.
    let path = app.confirmation_path("linus@example.com").await;
    app.post_form(&path, &[]).await;
    let confirmed_at: Option<i64> = sqlx::query_scalar(
        "SELECT confirmed_at FROM subscribers WHERE email = 'linus@example.com'",
    )
    .fetch_one(&app.app().db.pool)
    .await
    .unwrap();
    let third = app
        .post_form(
            "/subscribe",
            &[
                ("email", "linus@example.com"),
                ("name", "Someone Else"),
                ("categories", "security"),
            ],
        )
        .await;
    assert_eq!(third.body, first.body);
    assert_eq!(
        app.status("linus@example.com").await.as_deref(),
        Some("confirmed")
    );
    assert_eq!(
        app.categories("linus@example.com").await,
        Vec::<String>::new()
    );
    let after: Option<i64> = sqlx::query_scalar(
        "SELECT confirmed_at FROM subscribers WHERE email = 'linus@example.com'",
    )
    .fetch_one(&app.app().db.pool)
    .await
    .unwrap();
    assert_eq!(after, confirmed_at);
    assert_eq!(to_linus(&app.outbox().await), 1);

    // An hour later a confirmed address gets a note with a preferences link, not a confirmation.
    sqlx::query(
        "UPDATE subscribers SET last_confirmation_sent_at = last_confirmation_sent_at - 3600001",
    )
    .execute(&app.app().db.pool)
    .await
    .unwrap();
    let fourth = app.subscribe("linus@example.com").await;
    assert_eq!(fourth.body, first.body);
    let rows = app.outbox().await;
    assert_eq!(to_linus(&rows), 2);
    let note = rows.last().unwrap();
    assert!(note.message.contains("already subscribed"));
    assert!(note.message.contains(&format!("{}/preferences/", app.base)));

    // JSON sign-ups too answer identically.
    let a = app
        .post_json(
            "/subscribe",
            serde_json::json!({"email": "linus@example.com"}),
        )
        .await;
    let b = app.post_json("/subscribe", serde_json::json!({"email": "json-new@example.com", "categories": ["databases"], "edition": "daily"})).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b.body);
    assert_eq!(a.json()["status"], "check-your-inbox");
    assert_eq!(app.categories("json-new@example.com").await, ["databases"]);
    app.stop().await;
}
on_both_engines!(
    enumeration_and_confirmation_rate,
    known_and_new_addresses_look_the_same
);

async fn nothing_stored(app: &TestApp) {
    for table in [
        "subscribers",
        "subscriber_categories",
        "subscriber_editions",
        "tokens",
        "outbox",
    ] {
        assert_eq!(app.count(table).await, 0, "{table} must stay empty");
    }
}

async fn bad_form_input_is_rejected(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    let long_local = format!("{}@example.com", "a".repeat(250));
    let long_name = "n".repeat(101);
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        ("malformed address", vec![("email", "not-an-address")]),
        ("missing address", vec![("name", "Ada")]),
        ("overlong address", vec![("email", &long_local)]),
        (
            "CR/LF in address",
            vec![("email", "ada@example.com\r\nBcc: eve@example.com")],
        ),
        (
            "CR/LF in name",
            vec![
                ("email", "ada@example.com"),
                ("name", "Ada\r\nBcc: eve@example.com"),
            ],
        ),
        (
            "CR/LF in category",
            vec![
                ("email", "ada@example.com"),
                ("categories", "databases\r\n"),
            ],
        ),
        (
            "CR/LF in edition",
            vec![("email", "ada@example.com"), ("edition", "weekly\nX: y")],
        ),
        (
            "unknown category",
            vec![("email", "ada@example.com"), ("categories", "cooking")],
        ),
        (
            "unknown edition",
            vec![("email", "ada@example.com"), ("edition", "hourly")],
        ),
        (
            "SQL in address",
            vec![("email", "x'; DROP TABLE subscribers; --@example.com")],
        ),
        (
            "SQL in name",
            vec![
                ("email", "ada@example.com"),
                ("name", "'; DROP TABLE subscribers; --"),
            ],
        ),
        (
            "SQL in category",
            vec![("email", "ada@example.com"), ("categories", "' OR 1=1 --")],
        ),
        (
            "template in name",
            vec![("email", "ada@example.com"), ("name", "{{ 7*7 }}")],
        ),
        (
            "template in address",
            vec![("email", "{{7*7}}@example.com")],
        ),
        (
            "markup in name",
            vec![
                ("email", "ada@example.com"),
                ("name", "<script>alert(1)</script>"),
            ],
        ),
        (
            "overlong name",
            vec![("email", "ada@example.com"), ("name", &long_name)],
        ),
    ];
    for (what, fields) in cases {
        let reply = app.post_form("/subscribe", &fields).await;
        assert_eq!(reply.status, 400, "{what}: {}", reply.body);
        assert!(
            reply.body.contains("role=\"alert\""),
            "{what}: the form shows the error"
        );
        assert!(
            !reply.body.contains("<script>alert"),
            "{what}: input is escaped"
        );
    }
    nothing_stored(&app).await;
    app.stop().await;
}
on_both_engines!(
    bad_form_input_gets_400_and_stores_nothing,
    bad_form_input_is_rejected
);

async fn bad_requests_are_rejected(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    // Wrong content types.
    let r = app
        .post_raw(
            "/subscribe",
            "text/plain",
            b"email=ada@example.com".to_vec(),
        )
        .await;
    assert_eq!(r.status, 415, "{}", r.body);
    assert!(r.body.contains("x-www-form-urlencoded"), "{}", r.body);
    let r = app
        .post_raw(
            "/subscribe",
            "multipart/form-data; boundary=x",
            b"--x--".to_vec(),
        )
        .await;
    assert_eq!(r.status, 415);
    // Bodies that are not what they claim.
    let r = app
        .post_raw("/subscribe", "application/json", b"{\"email\": ".to_vec())
        .await;
    assert_eq!(r.status, 400);
    assert!(r.json()["error"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let r = app
        .post_json("/subscribe", serde_json::json!(["ada@example.com"]))
        .await;
    assert_eq!(r.status, 400);
    let r = app
        .post_json("/subscribe", serde_json::json!({"email": {"$ne": 1}}))
        .await;
    assert_eq!(r.status, 400);
    let r = app
        .post_json(
            "/subscribe",
            serde_json::json!({"email": "ada@example.com", "categories": ["databases", "nope"]}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["field"], "categories");
    let r = app
        .post_raw(
            "/subscribe",
            "application/x-www-form-urlencoded",
            vec![b'e', b'm', 0xff, 0xfe],
        )
        .await;
    assert_eq!(r.status, 400);
    // A 1 MB body is refused with 413, not a 5xx.
    let mut big = b"email=ada%40example.com&name=".to_vec();
    big.resize(1 << 20, b'a');
    let status = app
        .post_oversized("/subscribe", "application/x-www-form-urlencoded", big)
        .await;
    assert_eq!(status, 413);

    // Tokens: malformed, path tricks, unknown: a clear 404 page, GET and POST.
    let unknown = casewire::domain::Token::generate();
    let long = "A".repeat(44);
    for token in [
        "x",
        "%2e%2e",
        "..%2fadmin",
        "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        long.as_str(),
        "'%20OR%201=1--",
        "%7B%7B7*7%7D%7D",
        unknown.as_str(),
    ] {
        for route in ["confirm", "preferences", "unsubscribe"] {
            let path = format!("/{route}/{token}");
            let r = app.get(&path).await;
            assert_eq!(r.status, 404, "GET {path}: {}", r.body);
            // The client resolves `%2e%2e` segments itself (WHATWG URL rules), so
            // those requests never reach a token route; still a 404.
            if !token.contains("%2e") {
                assert!(r.body.contains("This link is not valid"), "GET {path}");
            }
            let r = app.post_form(&path, &[]).await;
            assert_eq!(r.status, 404, "POST {path}");
            let r = app.get_json(&path).await;
            assert_eq!(r.status, 404);
            if !token.contains("%2e") {
                assert!(r.json()["error"].is_string());
            }
        }
    }
    nothing_stored(&app).await;
    app.stop().await;
}
on_both_engines!(
    bad_requests_get_4xx_and_store_nothing,
    bad_requests_are_rejected
);

async fn expired_confirmation_link_is_404(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    app.subscribe("late@example.com").await;
    let path = app.confirmation_path("late@example.com").await;
    // The same link as the app would sign it, but past its expiry.
    let token = casewire::domain::Token::parse(path.trim_start_matches("/confirm/")).unwrap();
    let key = link_key(&app);
    let mut claims = key.open(&token).unwrap();
    claims.expires = Some(chrono::Utc::now().timestamp() - 1);
    let path = format!("/confirm/{}", key.sign(&claims));
    assert_eq!(app.get(&path).await.status, 404);
    assert_eq!(app.post_form(&path, &[]).await.status, 404);
    assert_eq!(
        app.status("late@example.com").await.as_deref(),
        Some("pending")
    );
    app.stop().await;
}
on_both_engines!(expired_confirmation_link, expired_confirmation_link_is_404);

async fn json_clients_get_json(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    let form = app.get_json("/subscribe").await.json();
    assert_eq!(form["categories"][0]["slug"], "databases");
    assert_eq!(form["editions"][1]["slug"], "daily");
    app.post_json(
        "/subscribe",
        serde_json::json!({"email": "api@example.com", "editions": ["weekly", "daily"]}),
    )
    .await;
    let path = app.confirmation_path("api@example.com").await;
    let shown = app.get_json(&path).await;
    assert_eq!(shown.status, 200);
    assert_eq!(shown.json()["status"], "valid");
    let r = app
        .client
        .post(app.url(&path))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = serde_json::from_str(&r.text().await.unwrap()).unwrap();
    assert_eq!(body["status"], "confirmed");
    let prefs = body["preferences_url"]
        .as_str()
        .unwrap()
        .strip_prefix(&app.base)
        .unwrap()
        .to_owned();
    let p = app.get_json(&prefs).await.json();
    assert_eq!(p["editions"], serde_json::json!(["daily", "weekly"]));
    let saved = app
        .post_json(
            &prefs,
            serde_json::json!({"categories": ["security"], "editions": ["daily"]}),
        )
        .await;
    assert_eq!(saved.status, 200);
    assert_eq!(saved.json()["categories"], serde_json::json!(["security"]));
    let unsub = app
        .post_json(&prefs, serde_json::json!({"action": "unsubscribe"}))
        .await;
    assert_eq!(unsub.json()["status"], "unsubscribed");
    assert_eq!(
        app.status("api@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    app.stop().await;
}
on_both_engines!(json_requests_get_json_answers, json_clients_get_json);

async fn sign_ups_are_rate_limited_per_ip(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    let mut limited = None;
    for i in 0..30 {
        let r = app.subscribe(&format!("user{i}@example.com")).await;
        if r.status == 429 {
            limited = Some(r);
            break;
        }
        assert_eq!(r.status, 200);
    }
    let r = limited.expect("the 21st quick sign-up from one address is refused");
    assert!(r.headers.get("retry-after").is_some());
    assert!(r.body.contains("Too many requests"));
    app.stop().await;
}
on_both_engines!(sign_up_rate_limit, sign_ups_are_rate_limited_per_ip);

async fn concurrent_requests_do_not_fail(engine: Engine) {
    let app = std::sync::Arc::new(spawn_app(AppOptions::new(engine).self_links()).await);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let app = app.clone();
        tasks.push(tokio::spawn(async move {
            // The same address twice at once, and distinct ones.
            let email = format!("race{}@example.com", i / 2);
            app.subscribe(&email).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(app.count("subscribers").await, 6);
    assert_eq!(app.count("outbox").await, 6, "one confirmation per address");
    // Double-clicked confirmation buttons.
    let path = app.confirmation_path("race0@example.com").await;
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let app = app.clone();
        let path = path.clone();
        tasks.push(tokio::spawn(async move {
            app.post_form(&path, &[]).await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(
        app.status("race0@example.com").await.as_deref(),
        Some("confirmed")
    );
}
on_both_engines!(
    concurrent_sign_ups_and_confirmations,
    concurrent_requests_do_not_fail
);

async fn confirmation_message_reads_well(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    app.post_form(
        "/subscribe",
        &[("email", "reader@example.com"), ("name", "Rea O'Der")],
    )
    .await;
    let msg = &app.outbox().await[0].message;
    for header in [
        "From: \"Casewire Test\" <digest@casewire.test>",
        "Auto-Submitted: auto-generated",
        "Message-ID: <",
        "Content-Type: multipart/alternative",
        "Content-Type: text/plain",
        "Content-Type: text/html",
    ] {
        assert!(msg.contains(header), "{header} missing:\n{msg}");
    }
    let link = support::link_in(msg, &format!("{}/confirm/", app.base));
    // Undo quoted-printable (soft breaks, `=3D`) to read the HTML part.
    let decoded = msg
        .replace("=\r\n", "")
        .replace("=\n", "")
        .replace("=3D", "=");
    assert!(
        decoded.contains(&format!("href=\"{link}\"")),
        "the HTML link is written plainly:\n{msg}"
    );
    assert!(!msg.contains("&#x2f;"));
    assert!(
        msg.contains("Hello Rea O'Der,") || msg.contains("Rea O&#x27;Der"),
        "{msg}"
    );
    app.stop().await;
}
on_both_engines!(
    confirmation_message_has_plain_links_and_headers,
    confirmation_message_reads_well
);

/// `casewire subscribers revoke-links` ("log out everywhere"): every link
/// mailed before stops working, and the next mail carries a working one.
async fn revoked_links_stop_working(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    let email = "ada@example.com";
    assert_eq!(app.subscribe(email).await.status, 200);
    let confirm = app.confirmation_path(email).await;
    let confirmed = app.post_form(&confirm, &[]).await;
    assert_eq!(confirmed.status, 200, "{}", confirmed.body);
    let key = link_key(&app);
    let id: i64 = sqlx::query_scalar("SELECT id FROM subscribers WHERE email = $1")
        .bind(email)
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap();
    let version: i64 = sqlx::query_scalar("SELECT link_version FROM subscribers WHERE id = $1")
        .bind(id)
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap();
    let old = key.manage(id, version as u32);
    assert_eq!(app.get(&format!("/preferences/{old}")).await.status, 200);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(&app.config_path)
        .args(["subscribers", "revoke-links", email])
        .env_remove("CASEWIRE_CONFIG")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("no longer works"), "{err}");

    for path in [
        format!("/preferences/{old}"),
        format!("/unsubscribe/{old}"),
        confirm.clone(),
    ] {
        let page = app.get(&path).await;
        assert_eq!(page.status, 404, "{path} still works: {}", page.body);
    }
    // A one-click unsubscribe with the old link changes nothing either.
    let post = app
        .post_form(
            &format!("/unsubscribe/{old}"),
            &[("List-Unsubscribe", "One-Click")],
        )
        .await;
    assert_eq!(post.status, 404);
    assert_eq!(app.status(email).await.as_deref(), Some("confirmed"));

    // Asking for a new link works: the mail carries the new version.
    assert_eq!(
        app.post_form("/preferences", &[("email", email)])
            .await
            .status,
        200
    );
    let mail = app
        .outbox()
        .await
        .into_iter()
        .find(|r| r.message.contains("Subject: Your link to manage"))
        .expect("a manage-link mail");
    let link = support::link_in(&mail.message, &format!("{}/preferences/", app.base));
    let page = app.get(link.strip_prefix(&app.base).unwrap()).await;
    assert_eq!(page.status, 200, "the new link works");

    // An unknown address is named as such.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(&app.config_path)
        .args(["subscribers", "revoke-links", "nobody@example.com"])
        .env_remove("CASEWIRE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    app.stop().await;
}
on_both_engines!(revoked_links_stop_working, revoked_links_stop_working);
