//! The subscriber's time zone on every path that carries it: the sign-up
//! form (select, typed city, JSON), the preferences page, the admin API
//! (create, PATCH, read), CSV import and export, `subscribers add
//! --timezone` and `casewire schedule`'s fire times per zone in use. Each
//! test runs on SQLite and PostgreSQL.

mod support;

use std::process::{Command, Output};

use reqwest::Method;
use support::{prepare, spawn_app, AppOptions, Engine, TestApp};

/// The test site with its `daily` edition sent at local time (07:00; New
/// York for those who chose no zone), following its own links. The whole
/// set-up of this file.
fn options(engine: Engine) -> AppOptions {
    let daily = "schedule = \"0 7 * * *\"\ntimezone = \"UTC\"\n";
    assert!(
        support::EDITIONS.contains(daily),
        "the test site has the daily edition"
    );
    let editions = support::EDITIONS.replace(
        daily,
        "schedule = \"0 7 * * *\"\ntimezone = \"America/New_York\"\nlocal_time = true\n",
    );
    AppOptions::new(engine).self_links().editions(editions)
}

async fn app(engine: Engine) -> TestApp {
    spawn_app(options(engine)).await
}

async fn zone_of(app: &TestApp, email: &str) -> Option<String> {
    sqlx::query_scalar("SELECT timezone FROM subscribers WHERE email = $1")
        .bind(email)
        .fetch_one(&app.app().db.pool)
        .await
        .unwrap()
}

/// The `<option>` the page marks `selected` in the time zone select.
fn selected_zone(page: &str) -> String {
    let start = page
        .find("<select id=\"timezone\"")
        .expect("a time zone select");
    let select = &page[start..start + page[start..].find("</select>").unwrap()];
    let selected: Vec<&str> = select
        .split("<option ")
        .filter(|o| o.contains(" selected>"))
        .collect();
    assert_eq!(selected.len(), 1, "one zone selected");
    let value = selected[0].strip_prefix("value=\"").unwrap();
    value[..value.find('"').unwrap()].to_owned()
}

async fn the_forms_carry_the_zone(engine: Engine) {
    let app = app(engine).await;
    let form = app.get("/subscribe").await;
    assert_eq!(form.status, 200);
    // Without script: the local-time edition's zone; the script may override it.
    assert_eq!(selected_zone(&form.body), "America/New_York");
    assert!(form.body.contains("data-detect=\"1\""));
    assert!(form
        .body
        .contains("Intl.DateTimeFormat().resolvedOptions().timeZone"));
    assert!(form.body.contains("<datalist id=\"timezone-names\">"));
    assert!(form.body.contains("<option value=\"Asia/Kolkata\">"));
    assert!(
        form.body.contains(">Asia/Kolkata (UTC+05:30)</option>"),
        "zones show their offset"
    );

    // A typed city wins over the select (it works without script).
    let r = app
        .post_form(
            "/subscribe",
            &[
                ("email", "typed@example.com"),
                ("edition", "daily"),
                ("timezone", "America/New_York"),
                ("timezone_search", "kolkata"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        zone_of(&app, "typed@example.com").await.as_deref(),
        Some("Asia/Kolkata")
    );
    let r = app
        .post_form(
            "/subscribe",
            &[
                ("email", "picked@example.com"),
                ("edition", "daily"),
                ("timezone", "Australia/Adelaide"),
                ("timezone_search", ""),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        zone_of(&app, "picked@example.com").await.as_deref(),
        Some("Australia/Adelaide")
    );
    let r = app
        .post_json(
            "/subscribe",
            serde_json::json!({"email": "json@example.com", "edition": "daily", "timezone": "Asia/Tokyo"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        zone_of(&app, "json@example.com").await.as_deref(),
        Some("Asia/Tokyo")
    );

    // A zone that does not exist: the form comes back with the error, nothing is stored.
    let r = app
        .post_form(
            "/subscribe",
            &[("email", "mars@example.com"), ("timezone", "Mars/Olympus")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("Time zone: "), "{}", r.body);
    assert!(r.body.contains("is not an IANA time zone"), "{}", r.body);
    assert_eq!(selected_zone(&r.body), "America/New_York");
    assert_eq!(app.status("mars@example.com").await, None);
    let r = app
        .post_json(
            "/subscribe",
            serde_json::json!({"email": "mars@example.com", "timezone": "+05:30"}),
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap_or(&r.body)
            .contains("timezone"),
        "{}",
        r.body
    );

    // Preferences: the stored zone is selected (no detection), and saving changes it.
    let confirm = app.confirmation_path("typed@example.com").await;
    let page = app.post_form(&confirm, &[]).await;
    assert_eq!(page.status, 200, "{}", page.body);
    let href = page
        .body
        .split("href=\"")
        .find(|s| s.contains("/preferences/"))
        .unwrap();
    // Relative to /confirm/{token}: "../preferences/{token}".
    let prefs = format!(
        "/{}",
        href[..href.find('"').unwrap()].trim_start_matches("../")
    );
    let page = app.get(&prefs).await;
    assert_eq!(selected_zone(&page.body), "Asia/Kolkata");
    assert!(!page.body.contains("data-detect"));
    let r = app
        .post_form(
            &prefs,
            &[
                ("edition", "daily"),
                ("timezone", "Europe/Berlin"),
                ("timezone_search", ""),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("Your preferences are saved"));
    assert_eq!(selected_zone(&r.body), "Europe/Berlin");
    assert_eq!(
        zone_of(&app, "typed@example.com").await.as_deref(),
        Some("Europe/Berlin")
    );
    // A client that does not send the field keeps the zone; "" goes back to the edition's.
    let r = app
        .post_json(&prefs, serde_json::json!({"edition": "daily"}))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["timezone"], "Europe/Berlin");
    let r = app
        .post_json(
            &prefs,
            serde_json::json!({"edition": "daily", "timezone": ""}),
        )
        .await;
    assert_eq!(r.json()["timezone"], serde_json::Value::Null);
    assert_eq!(zone_of(&app, "typed@example.com").await, None);
    let r = app
        .post_form(
            &prefs,
            &[("edition", "daily"), ("timezone", "Nowhere/Town")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert_eq!(zone_of(&app, "typed@example.com").await, None);
    app.stop().await;
}
on_both_engines!(
    local_time_zone_on_subscribe_and_preferences,
    the_forms_carry_the_zone
);

async fn the_admin_api_and_csv_carry_the_zone(engine: Engine) {
    let app = app(engine).await;
    let create = |body: serde_json::Value| {
        let app = &app;
        async move {
            TestApp::send(
                app.admin(Method::POST, "/api/v1/subscribers")
                    .await
                    .json(&body),
            )
            .await
        }
    };
    let patch = |key: &'static str, body: &'static str| {
        let app = &app;
        async move {
            TestApp::send(
                app.admin(Method::PATCH, &format!("/api/v1/subscribers/{key}"))
                    .await
                    .header("content-type", "application/json")
                    .body(body),
            )
            .await
        }
    };
    let r = create(serde_json::json!({"email": "ada@example.com", "timezone": "Australia/Adelaide", "editions": ["daily"]})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.json()["timezone"], "Australia/Adelaide");
    let r = create(serde_json::json!({"email": "bob@example.com"})).await;
    assert_eq!(r.json()["timezone"], serde_json::Value::Null);
    let r = create(serde_json::json!({"email": "eve@example.com", "timezone": "Europe/Atlantis"}))
        .await;
    assert_eq!(r.status, 400);
    assert!(
        r.body
            .contains("timezone: \\\"Europe/Atlantis\\\" is not an IANA time zone"),
        "{}",
        r.body
    );

    let r = patch("ada@example.com", r#"{"timezone": "Asia/Kolkata"}"#).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["timezone"], "Asia/Kolkata");
    let r = TestApp::send(
        app.admin(Method::GET, "/api/v1/subscribers/ada@example.com")
            .await,
    )
    .await;
    assert_eq!(r.json()["timezone"], "Asia/Kolkata");
    let r = patch("ada@example.com", r#"{"timezone": null}"#).await;
    assert_eq!(r.json()["timezone"], serde_json::Value::Null);
    for (body, says) in [
        (
            r#"{"timezone": "Mars/Olympus"}"#,
            "is not an IANA time zone",
        ),
        (r#"{"timezone": 5}"#, "expected a zone name"),
        (r#"{"name": "Ada"}"#, "only \\\"timezone\\\" can"),
        (r#"{}"#, "nothing to change"),
        ("not json", "JSON object"),
    ] {
        let r = patch("ada@example.com", body).await;
        assert_eq!(r.status, 400, "{body}: {}", r.body);
        assert!(r.body.contains(says), "{body}: {}", r.body);
    }
    assert_eq!(
        patch("nobody@example.com", r#"{"timezone": "UTC"}"#)
            .await
            .status,
        404
    );
    let r = TestApp::send(
        app.client
            .patch(app.url("/api/v1/subscribers/ada@example.com"))
            .body(r#"{"timezone": "UTC"}"#),
    )
    .await;
    assert_eq!(r.status, 401, "the token is required");

    // CSV: the timezone column goes in and comes out; a bad zone names its line.
    let csv = "email,name,editions,timezone\n\
               tokyo@example.com,Tokyo,daily,Asia/Tokyo\n\
               bad@example.com,Bad,daily,Moon/Base\n\
               plain@example.com,Plain,daily,\n";
    let r = TestApp::send(
        app.admin(Method::POST, "/api/v1/subscribers/import")
            .await
            .header("content-type", "text/csv")
            .body(csv),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let report = r.json();
    assert_eq!(report["imported"], 2, "{report}");
    assert_eq!(report["errors"][0]["line"], 3, "{report}");
    assert!(report["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("Moon/Base"));
    let export = TestApp::send(app.admin(Method::GET, "/api/v1/subscribers/export").await).await;
    let mut reader = csv::Reader::from_reader(export.body.as_bytes());
    assert_eq!(reader.headers().unwrap().iter().last(), Some("timezone"));
    let zones: Vec<(String, String)> = reader
        .records()
        .map(|r| r.unwrap())
        .map(|r| (r[0].to_owned(), r[5].to_owned()))
        .collect();
    assert_eq!(
        zones,
        [
            ("ada@example.com".to_owned(), String::new()),
            ("bob@example.com".to_owned(), String::new()),
            ("tokyo@example.com".to_owned(), "Asia/Tokyo".to_owned()),
            ("plain@example.com".to_owned(), String::new()),
        ]
    );
    app.stop().await;
}
on_both_engines!(
    local_time_zone_in_admin_api_and_csv,
    the_admin_api_and_csv_carry_the_zone
);

fn casewire(config: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_casewire"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("CASEWIRE_CONFIG")
        .output()
        .expect("run casewire")
}

async fn schedule_lists_each_zone_in_use(engine: Engine) {
    let site = prepare(options(engine));
    let config = site.config_path.clone();
    for (email, zone) in [
        ("a@example.com", Some("Asia/Kolkata")),
        ("b@example.com", Some("Asia/Kolkata")),
        ("c@example.com", Some("Europe/Berlin")),
        ("d@example.com", None),
    ] {
        let mut args = vec!["subscribers", "add", email, "--editions", "daily"];
        if let Some(z) = zone {
            args.extend(["--timezone", z]);
        }
        let out = casewire(&config, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = casewire(
        &config,
        &[
            "subscribers",
            "add",
            "x@example.com",
            "--timezone",
            "Mars/Olympus",
        ],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("timezone: \"Mars/Olympus\" is not an IANA time zone"));

    let out = casewire(&config, &["schedule"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let lines: Vec<&str> = text.lines().collect();
    let at = |needle: &str| {
        lines
            .iter()
            .position(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line {needle:?} in:\n{text}"))
    };
    assert!(text.contains("daily (Daily digest) — \"0 7 * * *\" in each subscriber's time zone (without one: America/New_York)"), "{text}");
    // The edition's own zone first (it holds d@, who chose none), then the others by name.
    let own = at("  America/New_York: 1 subscriber(s), with those who chose no zone");
    let kolkata = at("  Asia/Kolkata: 2 subscriber(s)");
    let berlin = at("  Europe/Berlin: 1 subscriber(s)");
    assert!(own < kolkata && kolkata < berlin, "{text}");
    for (start, zone_abbrev) in [
        (own, ["EST", "EDT"]),
        (kolkata, ["IST", "IST"]),
        (berlin, ["CET", "CEST"]),
    ] {
        let times = &lines[start + 1..start + 6];
        for t in times {
            assert!(t.starts_with("    "), "{text}");
            assert!(
                zone_abbrev
                    .iter()
                    .any(|z| t.contains(&format!(" 07:00 {z}  ("))),
                "07:00 local in each zone: {t}\n{text}"
            );
        }
    }
    // The weekly edition is not local: its own zone only.
    assert!(
        text.contains("weekly (Weekly digest) — \"0 8 * * MON\" in Europe/Berlin"),
        "{text}"
    );
}
on_both_engines!(
    local_time_schedule_shows_zones_in_use,
    schedule_lists_each_zone_in_use
);
