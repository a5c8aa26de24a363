//! The operator console's security properties, over real HTTP on both
//! engines: every route refuses a request without a session (GET: to the
//! login page, POST: 403); a POST without or with a wrong CSRF token changes
//! nothing; a session cookie from before logout, or past its idle or
//! absolute expiry, is refused; login throttling engages; cookies carry
//! their flags; no console answer is cacheable; sessions and passwords are
//! stored only as hashes; and the `casewire admin` commands.

mod support;

use support::console::{add_operator, csrf_in, login, set_cookie, try_login, OPERATOR, PASSWORD};
use support::{spawn_app, AppOptions, Engine, TestApp};

/// The one setup of this file: a daemon with a low per-account login limit
/// (`[admin] login_attempts_per_account = 3`, no refill during the test;
/// `roomy`: 20),
/// an operator, and a confirmed subscriber. `https` switches the site's
/// base URL to https (cookies must then be `Secure`).
async fn setup(engine: Engine, https: bool, roomy: bool) -> TestApp {
    let per_account = if roomy { 20 } else { 3 };
    let options = AppOptions::new(engine).toml(format!(
        "[admin]\nlogin_attempts_per_account = {per_account}\nlogin_attempts_per_ip = 50\nlogin_refill_seconds = 3600\n"
    ));
    // The harness's base URL is https; self_links makes it the test server's http one.
    let app = spawn_app(if https { options } else { options.self_links() }).await;
    add_operator(&app, OPERATOR, PASSWORD).await;
    casewire::subscribers::add(
        &app.settings,
        &app.app().db,
        &casewire::subscribers::SignUp {
            email: "reader@example.com".into(),
            name: "Reader".into(),
            categories: vec!["databases".into()],
            editions: vec!["weekly".into()],
            ..Default::default()
        },
        casewire::store::subscribers::Status::Confirmed,
        "cli",
        chrono::Utc::now(),
    )
    .await
    .unwrap();
    app
}

async fn subscriber_id(app: &TestApp, email: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM subscribers WHERE email = $1")
        .bind(email)
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap()
}

/// Every GET page of the console, for a subscriber `id`.
fn get_routes(id: i64) -> Vec<String> {
    [
        "/admin/",
        "/admin/password",
        "/admin/subscribers",
        "/admin/subscribers?q=reader&status=confirmed",
        "/admin/subscribers/export.csv",
        "/admin/subscribers/import",
        "/admin/subscribers/{id}",
        "/admin/subscribers/{id}/erase",
        "/admin/suppressions",
        "/admin/suppressions/export.csv",
        "/admin/bounces",
        "/admin/editions",
        "/admin/editions/weekly",
        "/admin/editions/weekly/preview",
        "/admin/editions/weekly/preview.html",
        "/admin/editions/weekly/send",
        "/admin/content",
        "/admin/audit",
    ]
    .iter()
    .map(|p| p.replace("{id}", &id.to_string()))
    .collect()
}

/// Every POST action of the console.
fn post_routes(id: i64) -> Vec<String> {
    [
        "/admin/logout",
        "/admin/password",
        "/admin/subscribers/import",
        "/admin/subscribers/{id}/choices",
        "/admin/subscribers/{id}/unsubscribe",
        "/admin/subscribers/{id}/resend",
        "/admin/subscribers/{id}/erase",
        "/admin/suppressions/remove",
        "/admin/suppressions/add",
        "/admin/editions/weekly/dry-run",
        "/admin/editions/weekly/send",
        "/admin/editions/weekly/pause",
        "/admin/editions/weekly/resume",
    ]
    .iter()
    .map(|p| p.replace("{id}", &id.to_string()))
    .collect()
}

async fn every_route_refuses_without_a_session(engine: Engine) {
    let app = setup(engine, false, false).await;
    let id = subscriber_id(&app, "reader@example.com").await;
    for path in get_routes(id) {
        let r = app.get(&path).await;
        assert_eq!(r.status, 303, "GET {path} without a session: {}", r.body);
        let location = r.headers["location"].to_str().unwrap();
        assert!(
            location.starts_with("/admin/login?next="),
            "GET {path} redirects to {location}"
        );
        assert_eq!(r.headers["cache-control"], "no-store", "GET {path}");
    }
    // A forged or stale cookie is no session either.
    let forged = "casewire_admin=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    for path in get_routes(id) {
        let r = support::console::reply(
            app.client
                .get(app.url(&path))
                .header("cookie", forged)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(r.status, 303, "GET {path} with a forged cookie");
    }
    for path in post_routes(id) {
        let r = app
            .post_form(
                &path,
                &[("email", "reader@example.com"), ("confirm", "yes")],
            )
            .await;
        assert_eq!(r.status, 403, "POST {path} without a session: {}", r.body);
    }
    // Nothing changed.
    assert_eq!(
        app.status("reader@example.com").await.as_deref(),
        Some("confirmed")
    );
    assert_eq!(app.count("outbox").await, 0);
    assert_eq!(app.count("edition_pauses").await, 0);
    assert_eq!(app.count("admin_audit").await, 0);
    app.stop().await;
}
on_both_engines!(
    every_admin_route_refuses_without_a_session,
    every_route_refuses_without_a_session
);

async fn posts_without_the_right_csrf_token_change_nothing(engine: Engine) {
    let app = setup(engine, false, false).await;
    let id = subscriber_id(&app, "reader@example.com").await;
    let mine = login(&app, OPERATOR, PASSWORD).await;
    add_operator(&app, "bob", "another long password").await;
    let theirs = login(&app, "bob", "another long password").await;
    assert_ne!(mine.csrf, theirs.csrf, "CSRF tokens are per session");
    let unsubscribe = format!("/admin/subscribers/{id}/unsubscribe");
    let choices = format!("/admin/subscribers/{id}/choices");
    for (label, fields) in [
        ("no token", vec![]),
        ("an empty token", vec![("csrf", "")]),
        ("a garbled token", vec![("csrf", "not-a-token")]),
        (
            "another session's token",
            vec![("csrf", theirs.csrf.as_str())],
        ),
    ] {
        let r = mine.post_exact(&app, &unsubscribe, &fields).await;
        assert_eq!(r.status, 403, "unsubscribe with {label}: {}", r.body);
        let mut f = fields.clone();
        f.extend([("categories", "security"), ("editions", "daily")]);
        let r = mine.post_exact(&app, &choices, &f).await;
        assert_eq!(r.status, 403, "choices with {label}");
        let r = mine
            .post_exact(&app, "/admin/editions/weekly/pause", &fields)
            .await;
        assert_eq!(r.status, 403, "pause with {label}");
        let r = mine.post_exact(&app, "/admin/logout", &fields).await;
        assert_eq!(r.status, 403, "logout with {label}");
    }
    assert_eq!(
        app.status("reader@example.com").await.as_deref(),
        Some("confirmed")
    );
    assert_eq!(app.categories("reader@example.com").await, ["databases"]);
    assert_eq!(app.count("edition_pauses").await, 0);
    // Still signed in: the refused logout did not end the session.
    assert_eq!(mine.get(&app, "/admin/").await.status, 200);

    // The right token works, and the action is in the audit log.
    let r = mine
        .post(
            &app,
            &choices,
            &[("categories", "security"), ("editions", "daily")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(app.categories("reader@example.com").await, ["security"]);
    let r = mine.post(&app, &unsubscribe, &[]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(
        app.status("reader@example.com").await.as_deref(),
        Some("unsubscribed")
    );
    let actions: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT actor, action, target FROM admin_audit WHERE action LIKE 'subscriber.%' ORDER BY id",
    )
    .fetch_all(&app.app().db.pool)
    .await
    .unwrap();
    let target = format!("subscriber:{id}");
    assert_eq!(
        actions,
        [
            (OPERATOR.into(), "subscriber.choices".into(), target.clone()),
            (OPERATOR.into(), "subscriber.unsubscribe".into(), target),
        ]
    );
    app.stop().await;
}
on_both_engines!(
    admin_posts_without_the_right_csrf_token_change_nothing,
    posts_without_the_right_csrf_token_change_nothing
);

async fn sessions_end_at_logout_and_expiry(engine: Engine) {
    let app = setup(engine, false, false).await;
    let s = login(&app, OPERATOR, PASSWORD).await;
    // Only the hash of the cookie's token is stored.
    let token = s.cookie.trim_start_matches("casewire_admin=").to_owned();
    let hashes: Vec<String> = sqlx::query_scalar("SELECT token_hash FROM admin_sessions")
        .fetch_all(&app.app().db.pool)
        .await
        .unwrap();
    assert_eq!(hashes.len(), 1);
    assert!(
        !hashes[0].contains(&token) && hashes[0].len() == 64,
        "{hashes:?}"
    );
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM admin_users WHERE name = $1")
            .bind(OPERATOR)
            .fetch_one(&app.app().db.pool)
            .await
            .unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(PASSWORD));

    // Logout ends the session: the old cookie is refused afterwards.
    let r = s.post(&app, "/admin/logout", &[]).await;
    assert_eq!(r.status, 303);
    assert!(set_cookie(&r, "casewire_admin")
        .unwrap()
        .contains("Max-Age=0"));
    let r = s.get(&app, "/admin/").await;
    assert_eq!(r.status, 303, "the old cookie still works after logout");
    let r = s.post(&app, "/admin/editions/weekly/pause", &[]).await;
    assert_eq!(r.status, 403);
    assert_eq!(app.count("edition_pauses").await, 0);
    assert_eq!(app.count("admin_sessions").await, 0);

    // Idle expiry (30 minutes by default): an hour without use ends it.
    let idle = login(&app, OPERATOR, PASSWORD).await;
    let hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    sqlx::query("UPDATE admin_sessions SET last_seen_at = $1")
        .bind(hour_ago)
        .execute(&app.app().db.pool)
        .await
        .unwrap();
    assert_eq!(
        idle.get(&app, "/admin/").await.status,
        303,
        "an idle session still works"
    );
    assert_eq!(
        app.count("admin_sessions").await,
        0,
        "the expired session is deleted"
    );

    // Absolute expiry (12 hours): a session in use all along still ends.
    let long = login(&app, OPERATOR, PASSWORD).await;
    let day_ago = chrono::Utc::now().timestamp_millis() - 13 * 3_600_000;
    sqlx::query("UPDATE admin_sessions SET created_at = $1")
        .bind(day_ago)
        .execute(&app.app().db.pool)
        .await
        .unwrap();
    assert_eq!(
        long.get(&app, "/admin/").await.status,
        303,
        "a 13-hour-old session still works"
    );
    app.stop().await;
}
on_both_engines!(
    admin_sessions_end_at_logout_and_expiry,
    sessions_end_at_logout_and_expiry
);

async fn login_throttling_engages(engine: Engine) {
    let app = setup(engine, false, false).await;
    for i in 0..3 {
        let r = try_login(&app, OPERATOR, "wrong password, guess {i}").await;
        assert_eq!(r.status, 401, "attempt {i}: {}", r.body);
        assert!(r.body.contains("Wrong name or password"));
        assert!(set_cookie(&r, "casewire_admin").is_none());
    }
    // The account's allowance is used up: even the right password waits.
    let r = try_login(&app, OPERATOR, PASSWORD).await;
    assert_eq!(r.status, 429, "{}", r.body);
    assert!(r.headers.contains_key("retry-after"));
    assert!(set_cookie(&r, "casewire_admin").is_none());
    assert_eq!(app.count("admin_sessions").await, 0);
    // An unknown name answers as a wrong password does.
    let r = try_login(&app, "mallory", PASSWORD).await;
    assert_eq!(r.status, 401);
    // A login form posted without its cookie is refused before any check.
    let form = app.get("/admin/login").await;
    let r = app
        .post_form(
            "/admin/login",
            &[
                ("csrf", &csrf_in(&form.body)),
                ("name", "bob"),
                ("password", PASSWORD),
            ],
        )
        .await;
    assert_eq!(r.status, 403);
    let failed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM admin_audit WHERE action = 'login.failed'")
            .fetch_one(&app.app().db.pool)
            .await
            .unwrap();
    assert_eq!(failed, 4);
    app.stop().await;
}
on_both_engines!(admin_login_throttling_engages, login_throttling_engages);

async fn no_admin_page_is_cacheable(engine: Engine) {
    let app = setup(engine, false, false).await;
    let id = subscriber_id(&app, "reader@example.com").await;
    let login_page = app.get("/admin/login").await;
    let s = login(&app, OPERATOR, PASSWORD).await;
    let mut answers = vec![("/admin/login".to_owned(), login_page)];
    for path in get_routes(id) {
        answers.push((path.clone(), s.get(&app, &path).await));
    }
    for (path, r) in &answers {
        assert!(
            r.status == 200 || r.status == 400,
            "GET {path}: {} {}",
            r.status,
            r.body
        );
        assert_eq!(r.headers["cache-control"], "no-store", "GET {path}");
        let csp = r.headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'none'"), "GET {path}: {csp}");
        assert!(!csp.contains("script-src"), "no script may run: {csp}");
        if path.ends_with("preview.html") {
            assert!(
                csp.contains("sandbox"),
                "the preview frame is sandboxed: {csp}"
            );
        } else {
            assert!(csp.contains("frame-ancestors 'none'"), "GET {path}: {csp}");
            assert_eq!(r.headers["x-frame-options"], "DENY");
        }
        assert_eq!(r.headers["x-content-type-options"], "nosniff");
    }
    app.stop().await;
}
on_both_engines!(no_admin_page_is_cacheable, no_admin_page_is_cacheable);

async fn cookies_carry_their_flags(engine: Engine) {
    for https in [false, true] {
        let app = setup(engine, https, false).await;
        let form = app.get("/admin/login").await;
        let login_cookie = set_cookie(&form, "casewire_login").unwrap().to_owned();
        let r = try_login(&app, OPERATOR, PASSWORD).await;
        assert_eq!(r.status, 303);
        let session = set_cookie(&r, "casewire_admin").unwrap().to_owned();
        for c in [&login_cookie, &session] {
            for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
                assert!(c.contains(flag), "{c} lacks {flag}");
            }
            assert_eq!(c.contains("; Secure"), https, "{c} (https: {https})");
        }
        app.stop().await;
    }
}
on_both_engines!(admin_cookies_carry_their_flags, cookies_carry_their_flags);

/// Runs `casewire` with the test app's config; returns (status, stdout, stderr).
fn cli(app: &TestApp, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    use std::io::Write;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(&app.config_path)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn admin_commands_manage_accounts(engine: Engine) {
    let app = setup(engine, false, true).await;
    // add-user prints a one-time password, which must be replaced at first login.
    let (code, out, err) = cli(&app, &["admin", "add-user", "Grace"], None);
    assert_eq!(code, 0, "{err}");
    let one_time = out.trim().to_owned();
    assert!(one_time.len() >= 12 && !one_time.contains(' '), "{out:?}");
    let s = login(&app, "grace", &one_time).await;
    let r = s.get(&app, "/admin/subscribers").await;
    assert_eq!(r.status, 303);
    assert_eq!(r.headers["location"], "/admin/password");
    let r = s
        .post(
            &app,
            "/admin/password",
            &[
                ("current", &one_time),
                ("new", "graces own password"),
                ("again", "graces own password"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(s.get(&app, "/admin/subscribers").await.status, 200);

    // A taken name, a bad name, a short password from stdin.
    assert_eq!(cli(&app, &["admin", "add-user", "grace"], None).0, 1);
    let (code, _, err) = cli(&app, &["admin", "add-user", "no spaces"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not valid"), "{err}");
    let (code, _, err) = cli(
        &app,
        &["admin", "add-user", "eve", "--password-stdin"],
        Some("short\n"),
    );
    assert_eq!(code, 2);
    assert!(err.contains("too short"), "{err}");

    // reset-password from stdin ends the account's sessions.
    let (code, out, err) = cli(
        &app,
        &["admin", "reset-password", "grace", "--password-stdin"],
        Some("a brand new passphrase\n"),
    );
    assert_eq!(code, 0, "{err}");
    assert!(
        out.is_empty(),
        "a password read from stdin is not printed: {out}"
    );
    assert_eq!(
        s.get(&app, "/admin/").await.status,
        303,
        "the old session still works"
    );
    assert_eq!(
        try_login(&app, "grace", "graces own password").await.status,
        401
    );
    login(&app, "grace", "a brand new passphrase").await;

    // remove-user ends everything.
    let (code, _, err) = cli(&app, &["admin", "remove-user", "grace"], None);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        try_login(&app, "grace", "a brand new passphrase")
            .await
            .status,
        401
    );
    assert_eq!(cli(&app, &["admin", "remove-user", "grace"], None).0, 1);
    let (code, out, _) = cli(&app, &["admin", "list-users"], None);
    assert_eq!(code, 0);
    assert!(out.starts_with("ada\t") && !out.contains("grace"), "{out}");
    let cli_actions: Vec<String> =
        sqlx::query_scalar("SELECT action FROM admin_audit WHERE actor = 'cli' ORDER BY id")
            .fetch_all(&app.app().db.pool)
            .await
            .unwrap();
    assert_eq!(
        cli_actions,
        ["account.add", "account.reset-password", "account.remove"]
    );
    app.stop().await;
}
on_both_engines!(
    admin_commands_manage_accounts,
    admin_commands_manage_accounts
);
