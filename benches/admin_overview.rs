//! The console's overview page on a 1,000,000-subscriber SQLite database:
//! builds the database (subscribers in three states, each in an edition,
//! a third with a category, a last run of 1,000,000 digests in every end
//! state, bounce events and suppressions), starts `casewire run` on it,
//! signs in, and times `GET /admin/`: the first load (which counts
//! everything), then warm loads (counts from the cache, refreshed in the
//! background every 10 s). Prints the figures; asserts nothing.
//!
//! Run with `cargo bench --bench admin_overview` (`ADMIN_OVERVIEW_SUBSCRIBERS`
//! changes the size). The database takes about 1 GB in a temp folder,
//! removed at the end.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sqlx::{Connection, Executor};

const PASSWORD: &str = "benchmark operator password";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Fills the database: one statement per table, generated in SQL.
async fn populate(url: &str, n: u64) {
    let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
    conn.execute("PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF;")
        .await
        .unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    let day = 86_400_000i64;
    let statements = [
        format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {n})
             INSERT INTO subscribers (email, name, status, source, created_at, confirmed_at, unsubscribed_at)
             SELECT 'reader' || i || '@example.com', 'Reader ' || i,
                    CASE WHEN i % 50 = 0 THEN 'unsubscribed' WHEN i % 20 = 0 THEN 'pending' ELSE 'confirmed' END,
                    'import', {now} - i, {now} - i, NULL FROM n"
        ),
        "INSERT INTO subscriber_editions (subscriber_id, edition, cursor_event_id) SELECT id, CASE WHEN id % 4 = 0 THEN 'daily' ELSE 'weekly' END, 0 FROM subscribers".into(),
        "INSERT INTO subscriber_categories (subscriber_id, category) SELECT id, 'databases' FROM subscribers WHERE id % 3 = 0".into(),
        format!("INSERT INTO outbox_bodies (subject, html, text, created_at) VALUES ('Weekly', '<p>digest</p>', 'digest', {now})"),
        format!(
            "INSERT INTO edition_runs (edition, window_key, started_at, finished_at, high_water, enqueued)
             VALUES ('weekly', 'cron:2026-11-23T07:00:00Z', {a}, {b}, 0, {n}), ('daily', 'cron:2026-11-29T07:00:00Z', {a}, {b}, 0, 0)",
            a = now - day,
            b = now - day + 600_000
        ),
        format!(
            "INSERT INTO outbox (dedupe_key, kind, edition, subscriber_id, recipient, body_id, vars, state, attempts, next_attempt_at, created_at, updated_at, sent_at, last_error)
             SELECT 'digest:weekly:cron:2026-11-23T07:00:00Z:' || id, 'digest', 'weekly', id, email, 1, '{{\"v\":0}}',
                    CASE WHEN id % 1000 = 1 THEN 'dead' WHEN id % 1000 = 2 THEN 'suppressed' WHEN id % 1000 = 3 THEN 'expired' WHEN id % 1000 = 4 THEN 'queued' ELSE 'sent' END,
                    CASE WHEN id % 100 = 5 THEN 3 ELSE 1 END,
                    {t}, {t}, {t}, CASE WHEN id % 1000 > 4 THEN {t} END,
                    CASE WHEN id % 1000 = 1 THEN '550 5.7.1 refused' END
             FROM subscribers",
            t = now - day + 1000
        ),
        format!(
            "INSERT INTO bounce_events (event_key, email, kind, status, diagnostic, source, edition, window_key, created_at)
             SELECT 'bench:' || id, email, CASE WHEN id % 3 = 0 THEN 'complaint' WHEN id % 3 = 1 THEN 'hard' ELSE 'soft' END,
                    '5.1.1', 'no such user', 'dsn', 'weekly', 'cron:2026-11-23T07:00:00Z', {now} - id
             FROM subscribers WHERE id % 500 = 7"
        ),
        format!(
            "INSERT INTO suppressions (email, reason, created_at)
             SELECT email, 'hard bounce (dsn): 5.1.1 no such user', {now} FROM subscribers WHERE id % 500 = 8"
        ),
        "ANALYZE".into(),
    ];
    for sql in statements {
        let started = Instant::now();
        conn.execute(sql.as_str()).await.unwrap();
        eprintln!(
            "  {:.1} s: {}",
            started.elapsed().as_secs_f64(),
            sql.split_whitespace().take(6).collect::<Vec<_>>().join(" ")
        );
    }
    conn.close().await.unwrap();
}

fn main() {
    let n: u64 = std::env::var("ADMIN_OVERVIEW_SUBSCRIBERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let casewire = PathBuf::from(env!("CARGO_BIN_EXE_casewire"));
    let work = tempfile::tempdir().expect("temp dir");
    let db_path = work.path().join("casewire.db");
    let url = format!("sqlite://{}", db_path.display());
    let port = free_port();
    let config = work.path().join("casewire.toml");
    let shipped = std::fs::read_to_string(root.join("config/casewire.toml")).unwrap();
    // The shipped configuration with its own database, outbox and port.
    let text = shipped
        .replace("sqlite://data/casewire.db", &url)
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"))
        .replace(
            &format!("listen = \"127.0.0.1:{port}\""),
            &format!(
                "listen = \"127.0.0.1:{port}\"\nform_key_file = {:?}",
                work.path().join("form.key")
            ),
        )
        .replace(
            "\"data/outbox\"",
            &format!("{:?}", work.path().join("outbox")),
        )
        .replace(
            "\"public/feeds\"",
            &format!("{:?}", work.path().join("feeds")),
        );
    std::fs::write(&config, text).unwrap();
    let run = |args: &[&str], stdin: Option<&str>| {
        let mut child = Command::new(&casewire)
            .arg("--config")
            .arg(&config)
            .args(args)
            .current_dir(&root)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut input = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            input.write_all(s.as_bytes()).unwrap();
        }
        drop(input);
        assert!(child.wait().unwrap().success(), "casewire {args:?} failed");
    };
    run(&["migrate"], None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    eprintln!(
        "building a {n}-subscriber database in {}",
        work.path().display()
    );
    let started = Instant::now();
    rt.block_on(populate(&url, n));
    eprintln!(
        "built in {:.1} s ({} MB)",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&db_path)
            .map(|m| m.len() / 1_000_000)
            .unwrap_or(0)
    );
    run(
        &["admin", "add-user", "bench", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );

    let mut daemon = Command::new(&casewire)
        .args(["--config"])
        .arg(&config)
        .arg("run")
        .current_dir(&root)
        .stdout(Stdio::null())
        // OVERVIEW_DAEMON_LOG=1 shows the daemon's log (with RUST_LOG=casewire=debug, what the overview's counts cost).
        .stderr(if std::env::var_os("OVERVIEW_DAEMON_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut form = None;
        for _ in 0..600 {
            if let Ok(r) = client.get(format!("{base}/admin/login")).send().await {
                form = Some(r);
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let form = form.expect("the daemon answers within a minute");
        let login_cookie = form
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("casewire_login="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let html = form.text().await.unwrap();
        let marker = "name=\"csrf\" value=\"";
        let start = html.find(marker).unwrap() + marker.len();
        let csrf = &html[start..start + html[start..].find('"').unwrap()];
        let r = client
            .post(format!("{base}/admin/login"))
            .header("cookie", login_cookie)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!(
                "csrf={}&name=bench&password={}&next=%2Fadmin%2F",
                url::form_urlencoded::byte_serialize(csrf.as_bytes()).collect::<String>(),
                url::form_urlencoded::byte_serialize(PASSWORD.as_bytes()).collect::<String>()
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "login failed");
        let session = r
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find(|v| v.starts_with("casewire_admin="))
            .unwrap()
            .split(';')
            .next()
            .unwrap()
            .to_owned();
        let load = || async {
            let started = Instant::now();
            let r = client
                .get(format!("{base}/admin/"))
                .header("cookie", &session)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            let body = r.text().await.unwrap();
            assert!(body.contains("Overview"));
            started.elapsed()
        };
        // The daemon counts its finished runs once at start, in the
        // background (they never change); an operator's first visit comes
        // after that. OVERVIEW_FIRST_AFTER_MS=0 measures a visit that races it.
        let after: u64 = std::env::var("OVERVIEW_FIRST_AFTER_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        tokio::time::sleep(Duration::from_millis(after)).await;
        let cold = load().await;
        let mut warm = Vec::new();
        for _ in 0..50 {
            warm.push(load().await);
        }
        // Past the cache's freshness: served stale while it refreshes behind.
        tokio::time::sleep(Duration::from_secs(11)).await;
        let stale = load().await;
        warm.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!("overview on {n} subscribers and {n} digests of the last run (SQLite):");
        println!(
            "  first load, {after} ms after login (counts from the triggers' tallies, runs not yet cached): {:.1} ms",
            ms(cold)
        );
        println!(
            "  warm loads: median {:.1} ms, p95 {:.1} ms, max {:.1} ms (target < 100 ms)",
            ms(warm[warm.len() / 2]),
            ms(warm[warm.len() * 95 / 100]),
            ms(*warm.last().unwrap())
        );
        println!(
            "  load with stale counts (refresh in the background): {:.1} ms",
            ms(stale)
        );
    });
    let _ = daemon.kill();
    let _ = daemon.wait();
}
