//! Starting the daemon in-process for a test: its own content folder,
//! database, feeds folder and a random loopback port.

use std::path::{Path, PathBuf};
use std::time::Duration;

use casewire::app::{start, RunningApp};
use casewire::config::Settings;

use super::{Engine, TestDb};

pub struct TestApp {
    pub app: Option<RunningApp>,
    pub db: TestDb,
    pub content: PathBuf,
    pub settings_text: String,
    pub client: reqwest::Client,
}

pub const CATEGORIES: &str = r#"
[[categories]]
slug = "databases"
name = "Databases"

[[categories]]
slug = "performance"
name = "Performance"

[[categories]]
slug = "security"
name = "Security"
"#;

/// The configuration of a test app; `extra` is appended (sections of its own).
pub fn config_text(db_url: &str, root: &Path, extra: &str) -> String {
    format!(
        r#"
[site]
title = "Test Notes"
description = "Case studies for tests"
base_url = "https://notes.example.com/"

[content]
dir = "{content}"
rescan_seconds = 3600

[feeds]
out_dir = "{feeds}"
items = 20
{feeds_extra}

[database]
url = "{db_url}"

[http]
listen = "127.0.0.1:0"
admin_token = "test-admin-token-0123456789"
form_key_file = "{form_key}"

[mail]
from = "Test Notes <digest@notes.example.com>"
transport = "file"
file_dir = "{outbox}"
{categories}
{extra}
"#,
        content = root.join("content").display(),
        feeds = root.join("feeds").display(),
        outbox = root.join("outbox").display(),
        form_key = root.join("form.key").display(),
        feeds_extra = "",
        categories = CATEGORIES,
    )
}

pub fn settings(text: &str) -> Settings {
    Settings::from_toml(Path::new("test.toml"), text, std::iter::empty())
        .expect("test config is valid")
}

/// A case study file body.
pub fn study(title: &str, slug: &str, date: &str, categories: &[&str]) -> String {
    format!(
        "---\ntitle: \"{title}\"\nslug: {slug}\ndate: {date}\ncategories: [{}]\nsummary: \"Summary of {title}\"\n---\n\n## Summary\n\nBody of {title}.\n",
        categories.join(", ")
    )
}

impl TestApp {
    /// A daemon on `engine` with the given files in its content folder.
    pub async fn spawn(engine: Engine, files: &[(&str, String)], extra: &str) -> TestApp {
        let db = TestDb::new(engine).await;
        let content = db.path().join("content");
        std::fs::create_dir_all(&content).unwrap();
        for (name, body) in files {
            let path = content.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        let settings_text = config_text(&db.url, &db.path(), extra);
        let app = start(settings(&settings_text)).await.expect("app starts");
        TestApp {
            app: Some(app),
            db,
            content,
            settings_text,
            client: reqwest::Client::builder().no_gzip().build().unwrap(),
        }
    }

    pub fn app(&self) -> &RunningApp {
        self.app.as_ref().expect("app is running")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app().addr)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
    }

    pub async fn restart(&mut self) {
        self.app.take().expect("running").stop().await;
        self.app = Some(
            start(settings(&self.settings_text))
                .await
                .expect("app restarts"),
        );
    }

    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
    }

    pub fn write(&self, name: &str, body: &str) {
        let path = self.content.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        // Like an editor: write a temp file, then rename it over the target.
        let tmp = path.with_extension("md.tmp~");
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    /// Polls `path` until its body satisfies `pred` (or panics after `secs`).
    pub async fn wait_for_feed(
        &self,
        path: &str,
        secs: u64,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
        loop {
            let body = self.get(path).await.text().await.unwrap();
            if pred(&body) {
                return body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{path} did not reach the expected state in {secs} s; last body:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn event_slugs(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT slug FROM publication_events ORDER BY id")
            .fetch_all(&self.app().db.pool)
            .await
            .unwrap()
    }
}
