//! Helpers for subscriber tests: a running daemon on a free 127.0.0.1 port
//! with its own database, content folder and file transport; HTTP helpers;
//! and readers for outbox rows and subscriber state.
#![allow(dead_code)]

use std::path::Path;

use casewire::app::RunningApp;
use casewire::config::Settings;

use super::{Engine, TestDb};

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

pub struct TestApp {
    pub app: RunningApp,
    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub base: String,
    pub client: reqwest::Client,
    pub db: TestDb,
    pub settings: Settings,
}

/// The configuration used by subscriber tests; `base_url` points at the test server.
pub fn config_text(db: &TestDb, port: u16, admin_token: Option<&str>) -> String {
    config_text_with(db, port, admin_token, "signup_min_seconds = 0")
}

/// [`config_text`] with `http_extra` lines in `[http]` (by default the
/// sign-up form's minimum fill time is off, so tests can post at once).
pub fn config_text_with(
    db: &TestDb,
    port: u16,
    admin_token: Option<&str>,
    http_extra: &str,
) -> String {
    let dir = db.path();
    let content = dir.join("content");
    std::fs::create_dir_all(&content).unwrap();
    let admin = admin_token
        .map(|t| format!("admin_token = \"{t}\""))
        .unwrap_or_default();
    format!(
        r#"
[site]
title = "Casewire Test"
description = "Case studies for tests"
base_url = "http://127.0.0.1:{port}/"

[content]
dir = "{content}"

[feeds]
out_dir = "{feeds}"

[database]
url = "{url}"

[http]
listen = "127.0.0.1:{port}"
form_key_file = "{form_key}"
{admin}
{http_extra}

[mail]
from = "Casewire Test <digest@casewire.test>"
transport = "file"
file_dir = "{outbox}"

[templates]
dir = "{templates}"

[[categories]]
slug = "databases"
name = "Databases"
description = "Storage engines"

[[categories]]
slug = "security"
name = "Security"

[[categories]]
slug = "performance"
name = "Performance"

[[editions]]
slug = "weekly"
name = "Weekly digest"
schedule = "0 8 * * MON"
timezone = "Europe/Berlin"

[[editions]]
slug = "daily"
name = "Daily digest"
schedule = "0 7 * * *"
timezone = "UTC"
"#,
        content = content.display(),
        feeds = dir.join("feeds").display(),
        url = db.url,
        outbox = dir.join("outbox").display(),
        form_key = dir.join("form.key").display(),
        templates = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("templates")
            .display(),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub async fn spawn_app(engine: Engine) -> TestApp {
    spawn_app_with(engine, Some(ADMIN_TOKEN)).await
}

pub async fn spawn_app_with(engine: Engine, admin_token: Option<&str>) -> TestApp {
    spawn_app_http(engine, admin_token, "signup_min_seconds = 0").await
}

/// A test app with `http_extra` lines in its `[http]` section.
pub async fn spawn_app_http(
    engine: Engine,
    admin_token: Option<&str>,
    http_extra: &str,
) -> TestApp {
    spawn_app_edit(engine, admin_token, http_extra, |_, text| text).await
}

/// A test app whose configuration text `edit` may change (it gets the test's
/// folder too, e.g. to write content files before the start).
pub async fn spawn_app_edit(
    engine: Engine,
    admin_token: Option<&str>,
    http_extra: &str,
    edit: impl FnOnce(&Path, String) -> String,
) -> TestApp {
    let db = TestDb::new(engine).await;
    let port = free_port();
    let text = edit(
        &db.path(),
        config_text_with(&db, port, admin_token, http_extra),
    );
    let path = db.path().join("casewire.toml");
    std::fs::write(&path, &text).unwrap();
    let settings = Settings::from_toml(&path, &text, Vec::new()).expect("test settings");
    let app = casewire::app::start(settings.clone())
        .await
        .expect("app starts");
    assert_eq!(app.addr.port(), port);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        app,
        client,
        db,
        settings,
    }
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub kind: String,
    pub recipient: String,
    pub subscriber_id: Option<i64>,
    pub message: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn reply(r: reqwest::Response) -> Reply {
        Reply {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap_or_default(),
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        Self::reply(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    pub async fn get_json(&self, path: &str) -> Reply {
        Self::reply(
            self.client
                .get(self.url(path))
                .header("accept", "application/json")
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    pub async fn post_form(&self, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        self.post_raw(path, "application/x-www-form-urlencoded", body.into_bytes())
            .await
    }

    pub async fn post_json(&self, path: &str, body: serde_json::Value) -> Reply {
        self.post_raw(path, "application/json", body.to_string().into_bytes())
            .await
    }

    pub async fn post_raw(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        Self::reply(
            self.client
                .post(self.url(path))
                .header("content-type", content_type)
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Status of a POST whose body the server refuses before reading it. Over
    /// raw TCP: the server may answer 413 and close while the body is still
    /// being written, which an HTTP client reports as a broken pipe instead
    /// of the answer it already received.
    pub async fn post_oversized(&self, path: &str, content_type: &str, body: Vec<u8>) -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = self
            .url("")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let mut last = String::new();
        // A reset can also discard the answer on our side: try a few times.
        for _ in 0..5 {
            let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            stream.write_all(head.as_bytes()).await.unwrap();
            // The server may stop reading at any point; what it answered is what counts.
            let _ = stream.write_all(&body).await;
            let mut answer = Vec::new();
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                stream.read_to_end(&mut answer),
            )
            .await;
            last = String::from_utf8_lossy(&answer).into_owned();
            if let Some(code) = last.split_whitespace().nth(1).and_then(|c| c.parse().ok()) {
                return code;
            }
        }
        panic!("no HTTP answer to the oversized POST: {last:?}")
    }

    /// Signs `email` up through the form.
    pub async fn subscribe(&self, email: &str) -> Reply {
        self.post_form("/subscribe", &[("email", email), ("name", "Ada")])
            .await
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN)
    }

    pub async fn send(req: reqwest::RequestBuilder) -> Reply {
        Self::reply(req.send().await.unwrap()).await
    }

    /// Every outbox row in id order, once none is waiting to be sent, each
    /// with the message delivered for it (read from the file transport's
    /// folder: messages are composed at send time, rows hold no message).
    pub async fn outbox(&self) -> Vec<OutboxRow> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let rows = loop {
            let rows: Vec<(String, String, Option<i64>, String, i64, Option<String>)> =
                sqlx::query_as(
                    "SELECT kind, recipient, subscriber_id, state, next_attempt_at, message FROM outbox ORDER BY id",
                )
                .fetch_all(&self.app.db.pool)
                .await
                .unwrap();
            // Rows due later (queued with a future clock) are not waited for.
            let now = chrono::Utc::now().timestamp_millis();
            let waiting = rows
                .iter()
                .filter(|r| (r.3 == "queued" && r.4 <= now) || r.3 == "sending")
                .count();
            if waiting == 0 {
                break rows;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{waiting} outbox rows still not delivered: {rows:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        };
        let mut delivered = self.delivered();
        rows.into_iter()
            .map(|(kind, recipient, subscriber_id, state, _, queued)| {
                let at = (state != "queued")
                    .then(|| delivered.iter().position(|(to, _)| *to == recipient))
                    .flatten();
                let message = match at {
                    Some(i) => delivered.remove(i).1,
                    // Not sent yet: a row queued whole shows its message.
                    None => queued.unwrap_or_default(),
                };
                OutboxRow {
                    kind,
                    recipient,
                    subscriber_id,
                    message,
                }
            })
            .collect()
    }

    /// Messages the file transport wrote, oldest first, with their recipient.
    pub fn delivered(&self) -> Vec<(String, String)> {
        let mut files: Vec<(std::time::SystemTime, String, String)> =
            std::fs::read_dir(&self.settings.mail.file_dir)
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| e.path().extension().is_some_and(|x| x == "eml"))
                        .map(|e| {
                            let text = std::fs::read_to_string(e.path()).unwrap();
                            let when = e.metadata().unwrap().modified().unwrap();
                            (when, e.file_name().to_string_lossy().into_owned(), text)
                        })
                        .collect()
                })
                .unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .map(|(_, _, text)| (recipient_of(&text), text))
            .collect()
    }

    pub async fn count(&self, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table}"))
            .fetch_one(&self.app.db.pool)
            .await
            .unwrap()
    }

    /// The subscriber's status, or None when there is no row.
    pub async fn status(&self, email: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM subscribers WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.app.db.pool)
            .await
            .unwrap()
    }

    pub async fn categories(&self, email: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT c.category FROM subscriber_categories c JOIN subscribers s ON s.id = c.subscriber_id WHERE s.email = $1 ORDER BY c.category")
            .bind(email)
            .fetch_all(&self.app.db.pool)
            .await
            .unwrap()
    }

    pub async fn editions(&self, email: &str) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT e.edition, e.cursor_event_id FROM subscriber_editions e JOIN subscribers s ON s.id = e.subscriber_id WHERE s.email = $1 ORDER BY e.edition")
            .bind(email)
            .fetch_all(&self.app.db.pool)
            .await
            .unwrap()
    }

    /// The path (`/confirm/…`) of the confirmation link in the only queued message to `email`.
    pub async fn confirmation_path(&self, email: &str) -> String {
        let rows: Vec<OutboxRow> = self
            .outbox()
            .await
            .into_iter()
            .filter(|r| r.recipient == email && r.kind == "confirmation")
            .collect();
        assert_eq!(
            rows.len(),
            1,
            "expected one confirmation to {email}: {rows:?}"
        );
        link_in(&rows[0].message, &format!("{}/confirm/", self.base))
            .strip_prefix(&self.base)
            .unwrap()
            .to_owned()
    }

    pub async fn stop(self) {
        self.app.stop().await;
    }
}

/// The address in the To header of a message.
pub fn recipient_of(message: &str) -> String {
    let to = message
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .replace("\r\n ", " ")
        .lines()
        .find_map(|l| l.strip_prefix("To: ").map(str::to_owned))
        .unwrap_or_default();
    match (to.rfind('<'), to.rfind('>')) {
        (Some(a), Some(b)) if a < b => to[a + 1..b].to_owned(),
        _ => to.trim().to_owned(),
    }
}

/// The first link starting with `prefix` in an RFC 5322 message (7bit or
/// quoted-printable), up to the end of its token (44 characters, or 43 for
/// the earlier random tokens).
pub fn link_in(message: &str, prefix: &str) -> String {
    let unfolded = message.replace("=\r\n", "").replace("=\n", "");
    let start = unfolded
        .find(prefix)
        .unwrap_or_else(|| panic!("no link starting with {prefix} in:\n{message}"));
    let rest = &unfolded[start + prefix.len()..];
    let token: String = rest
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(
        token.len() == 44 || token.len() == 43,
        "token in {rest:.80}"
    );
    format!("{prefix}{token}")
}
