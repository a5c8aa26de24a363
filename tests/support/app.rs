//! A test site and the daemon on it, from one set of options. [`prepare`]
//! lays out a temp folder (config file, content, feeds, outbox) with its own
//! database, for tests that only need settings and folders or that run the
//! binary; [`spawn_app`] (that, then [`TestSite::start`]) runs the daemon
//! in-process on 127.0.0.1 and gives HTTP helpers and readers of the outbox
//! and the subscribers. Both write their configuration with [`config_text`],
//! the only TOML skeleton of the tests.
//!
//! ```ignore
//! let server = SmtpServer::start(&[]);
//! let app = spawn_app(
//!     AppOptions::new(engine)
//!         .smtp(&server)
//!         .self_links()
//!         .http("signup_min_seconds = 3")
//!         .file("pool.md", study("Pool", "pool", "2026-01-01T00:00:00Z", &["databases"])),
//! )
//! .await;
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use casewire::app::RunningApp;
use casewire::config::Settings;

use super::{Engine, TestDb, ADMIN_TOKEN, BASE_URL, CATEGORIES, EDITIONS};

/// What a test site looks like; every method returns the options changed,
/// so a test reads as one chain. Defaults: the file transport into the
/// site's `outbox/`, [`BASE_URL`] as `base_url`, the categories
/// [`CATEGORIES`] and editions [`EDITIONS`], [`ADMIN_TOKEN`], sign-ups
/// accepted at once (`signup_min_seconds = 0`), feeds of 50 items, an hourly
/// content rescan.
#[derive(Debug, Clone)]
pub struct AppOptions {
    engine: Engine,
    transport: Transport,
    files: Vec<(String, Vec<u8>)>,
    editions: String,
    categories: Vec<(String, String, String)>,
    lines: Vec<(&'static str, String)>,
    toml: String,
    admin_token: Option<String>,
    self_links: bool,
    create_content_dir: bool,
}

#[derive(Debug, Clone)]
enum Transport {
    File,
    Smtp(String),
}

/// The sections of the skeleton that take extra lines, in file order.
const SECTIONS: [&str; 7] = [
    "site",
    "content",
    "feeds",
    "database",
    "http",
    "mail",
    "templates",
];

impl AppOptions {
    /// The defaults above, on `engine`.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            transport: Transport::File,
            files: Vec::new(),
            editions: EDITIONS.to_owned(),
            categories: CATEGORIES
                .iter()
                .map(|(s, n, d)| (s.to_string(), n.to_string(), d.to_string()))
                .collect(),
            lines: Vec::new(),
            toml: String::new(),
            admin_token: Some(ADMIN_TOKEN.to_owned()),
            self_links: false,
            create_content_dir: true,
        }
    }

    /// [`AppOptions::new`] on SQLite, for tests that need no database engine choice.
    pub fn sqlite() -> Self {
        Self::new(Engine::Sqlite)
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Delivers through `server` (`transport = "smtp"`).
    pub fn smtp(self, server: &super::smtp::SmtpServer) -> Self {
        self.smtp_url(&server.url())
    }

    /// Delivers through the relay at `url`, which need not parse.
    pub fn smtp_url(mut self, url: &str) -> Self {
        self.transport = Transport::Smtp(url.to_owned());
        self
    }

    /// The file transport into the site's `outbox/` (the default).
    pub fn file_transport(mut self) -> Self {
        self.transport = Transport::File;
        self
    }

    /// A file in the content folder (`relative` to it), written before the start.
    pub fn file(mut self, relative: &str, text: impl Into<String>) -> Self {
        self.files
            .push((relative.to_owned(), text.into().into_bytes()));
        self
    }

    /// Raw bytes (e.g. invalid UTF-8) in the content folder.
    pub fn file_bytes(mut self, relative: &str, bytes: &[u8]) -> Self {
        self.files.push((relative.to_owned(), bytes.to_vec()));
        self
    }

    /// The `[[editions]]` tables, replacing the default ones ("" for none).
    pub fn editions(mut self, toml: impl Into<String>) -> Self {
        self.editions = toml.into();
        self
    }

    /// The categories as (slug, name), replacing the default ones.
    pub fn categories(mut self, categories: &[(&str, &str)]) -> Self {
        self.categories = categories
            .iter()
            .map(|(s, n)| (s.to_string(), n.to_string(), String::new()))
            .collect();
        self
    }

    /// `[http] admin_token` (the default is [`ADMIN_TOKEN`]).
    pub fn admin_token(mut self, token: &str) -> Self {
        self.admin_token = Some(token.to_owned());
        self
    }

    /// Without `[http] admin_token`: the admin API is off.
    pub fn no_admin_token(mut self) -> Self {
        self.admin_token = None;
        self
    }

    /// `base_url` is the test server itself (`http://127.0.0.1:PORT/`, on a
    /// port chosen before the start), so links in mail can be followed.
    /// Without it the server listens on a port of the system's choice.
    pub fn self_links(mut self) -> Self {
        self.self_links = true;
        self
    }

    /// Leaves the content folder out (it is created by default).
    pub fn no_content_dir(mut self) -> Self {
        self.create_content_dir = false;
        self
    }

    /// Lines for `[site]`; a line setting a key the harness sets too
    /// (title, description, base_url, author) replaces the harness's, and a
    /// later line replaces an earlier one for the same key. In
    /// these lines, as in [`AppOptions::toml`], `{root}` stands for the
    /// site's folder (`dir = "{root}/templates"`).
    pub fn site(self, lines: impl Into<String>) -> Self {
        self.lines("site", lines)
    }

    /// Lines for `[content]` (harness keys: dir, rescan_seconds).
    pub fn content(self, lines: impl Into<String>) -> Self {
        self.lines("content", lines)
    }

    /// Lines for `[feeds]` (harness keys: out_dir, items).
    pub fn feeds(self, lines: impl Into<String>) -> Self {
        self.lines("feeds", lines)
    }

    /// Lines for `[database]` (harness key: url).
    pub fn database(self, lines: impl Into<String>) -> Self {
        self.lines("database", lines)
    }

    /// Lines for `[http]` (harness keys: listen, form_key_file,
    /// admin_token, signup_min_seconds).
    pub fn http(self, lines: impl Into<String>) -> Self {
        self.lines("http", lines)
    }

    /// Lines for `[mail]` (harness keys: from, transport, file_dir or smtp_url).
    pub fn mail(self, lines: impl Into<String>) -> Self {
        self.lines("mail", lines)
    }

    /// Lines for `[templates]` (harness key: dir, the repository's templates).
    pub fn templates(self, lines: impl Into<String>) -> Self {
        self.lines("templates", lines)
    }

    fn lines(mut self, section: &'static str, lines: impl Into<String>) -> Self {
        self.lines.push((section, lines.into()));
        self
    }

    /// Whole sections of TOML (e.g. `[bounces]`), appended after everything else.
    pub fn toml(mut self, text: impl Into<String>) -> Self {
        self.toml.push('\n');
        self.toml.push_str(&text.into());
        self.toml.push('\n');
        self
    }
}

/// The folders and port of one test site.
#[derive(Debug, Clone)]
pub struct Layout {
    pub root: PathBuf,
    pub content_dir: PathBuf,
    pub out_dir: PathBuf,
    pub outbox_dir: PathBuf,
    /// The port `[http] listen` names (0: the system's choice).
    pub port: u16,
}

/// The configuration text of a site: the harness's keys for each section,
/// each one replaced by an option's line that sets the same key, followed by
/// the options' own lines; then categories, editions and extra sections.
pub fn config_text(options: &AppOptions, layout: &Layout, db_url: &str) -> String {
    let base_url = if options.self_links {
        format!("http://127.0.0.1:{}/", layout.port)
    } else {
        BASE_URL.to_owned()
    };
    let quote = |p: &Path| format!("{:?}", p.display().to_string());
    let mut mail = vec![(
        "from",
        "\"Casewire Test <digest@casewire.test>\"".to_owned(),
    )];
    match &options.transport {
        Transport::File => {
            mail.push(("transport", "\"file\"".into()));
            mail.push(("file_dir", quote(&layout.outbox_dir)));
        }
        Transport::Smtp(url) => {
            mail.push(("transport", "\"smtp\"".into()));
            mail.push(("smtp_url", format!("{url:?}")));
        }
    }
    let mut http = vec![
        ("listen", format!("\"127.0.0.1:{}\"", layout.port)),
        ("form_key_file", quote(&layout.root.join("form.key"))),
        ("signup_min_seconds", "0".into()),
    ];
    if let Some(token) = &options.admin_token {
        http.push(("admin_token", format!("{token:?}")));
    }
    let templates = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let defaults: [Vec<(&str, String)>; 7] = [
        vec![
            ("title", "\"Casewire Test\"".into()),
            ("description", "\"Case studies for tests\"".into()),
            ("base_url", format!("{base_url:?}")),
            ("author", "\"Test Editors\"".into()),
        ],
        vec![
            ("dir", quote(&layout.content_dir)),
            ("rescan_seconds", "3600".into()),
        ],
        vec![("out_dir", quote(&layout.out_dir)), ("items", "50".into())],
        vec![("url", format!("{db_url:?}"))],
        http,
        mail,
        vec![("dir", quote(&templates))],
    ];
    let mut text = String::new();
    for (section, keys) in SECTIONS.iter().zip(defaults) {
        let extra: Vec<&str> = options
            .lines
            .iter()
            .filter(|(s, _)| s == section)
            .flat_map(|(_, chunk)| chunk.lines())
            .collect();
        let set_from =
            |key: &str, from: usize| extra[from..].iter().any(|line| key_of(line) == Some(key));
        text.push_str(&format!("[{section}]\n"));
        for (key, value) in keys {
            if !set_from(key, 0) {
                text.push_str(&format!("{key} = {value}\n"));
            }
        }
        for (i, line) in extra.iter().enumerate() {
            // A later line for the same key wins (single-line values).
            if key_of(line).is_some_and(|key| set_from(key, i + 1)) {
                continue;
            }
            text.push_str(&in_site(line, &layout.root));
            text.push('\n');
        }
        text.push('\n');
    }
    for (slug, name, description) in &options.categories {
        text.push_str(&format!(
            "[[categories]]\nslug = {slug:?}\nname = {name:?}\n"
        ));
        if !description.is_empty() {
            text.push_str(&format!("description = {description:?}\n"));
        }
        text.push('\n');
    }
    text.push_str(&options.editions);
    text.push_str(&in_site(&options.toml, &layout.root));
    text
}

/// `text` with each `{root}` replaced by the site's folder, so options can
/// name files in a folder that does not exist yet.
fn in_site(text: &str, root: &Path) -> String {
    text.replace("{root}", &root.display().to_string())
}

/// The bare key a TOML line sets (`items = 2` → `items`), if it sets one.
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
    .then_some(key)
}

/// Validated settings from TOML text, without environment overrides.
pub fn settings_from(path: &Path, text: &str) -> Settings {
    Settings::from_toml(path, text, std::iter::empty())
        .unwrap_or_else(|e| panic!("test config does not load: {e}\n{text}"))
}

/// A test site laid out by [`prepare`]: its folders, its database and its
/// configuration file (`casewire.toml` in the root).
pub struct TestSite {
    pub db: TestDb,
    /// The site's temp folder (also the database's).
    pub root: PathBuf,
    pub config_path: PathBuf,
    /// What `config_path` holds.
    pub config_text: String,
    pub content_dir: PathBuf,
    pub out_dir: PathBuf,
    /// The file transport's folder.
    pub outbox_dir: PathBuf,
    /// `[http] listen`'s port; 0 unless the options asked for [`AppOptions::self_links`].
    pub port: u16,
    /// The options the configuration file was written from.
    pub options: AppOptions,
    /// `config_text` parsed, once asked for (a test may write a config
    /// that does not load on purpose).
    parsed: std::sync::OnceLock<Settings>,
}

/// Lays out a site for `options` without starting it: a fresh database,
/// the content folder with the options' files, and the configuration file.
/// Works in and outside a runtime.
pub fn prepare(options: AppOptions) -> TestSite {
    let db = TestDb::new_blocking(options.engine);
    let root = db.path();
    let layout = Layout {
        content_dir: root.join("content"),
        out_dir: root.join("feeds"),
        outbox_dir: root.join("outbox"),
        port: if options.self_links {
            super::free_port()
        } else {
            0
        },
        root,
    };
    if options.create_content_dir {
        std::fs::create_dir_all(&layout.content_dir).expect("content dir");
    }
    for (relative, bytes) in &options.files {
        super::write_file(&layout.content_dir, relative, bytes);
    }
    let config_path = layout.root.join("casewire.toml");
    let mut site = TestSite {
        db,
        root: layout.root,
        config_path,
        config_text: String::new(),
        content_dir: layout.content_dir,
        out_dir: layout.out_dir,
        outbox_dir: layout.outbox_dir,
        port: layout.port,
        options: options.clone(),
        parsed: std::sync::OnceLock::new(),
    };
    site.rewrite(options);
    site
}

impl TestSite {
    fn layout(&self) -> Layout {
        Layout {
            root: self.root.clone(),
            content_dir: self.content_dir.clone(),
            out_dir: self.out_dir.clone(),
            outbox_dir: self.outbox_dir.clone(),
            port: self.port,
        }
    }

    /// The site's validated settings, read from its configuration text
    /// (panics when it does not load).
    pub fn settings(&self) -> &Settings {
        self.parsed
            .get_or_init(|| settings_from(&self.config_path, &self.config_text))
    }

    /// The configuration `options` give this site's folders, database and
    /// port, without writing it.
    pub fn config_for(&self, options: &AppOptions) -> String {
        config_text(options, &self.layout(), &self.db.url)
    }

    /// Writes the configuration `options` give this site (same folders,
    /// database and port) over the configuration file; returns its text.
    /// Files in the options are not written again.
    pub fn rewrite(&mut self, options: AppOptions) -> String {
        self.config_text = self.config_for(&options);
        self.parsed = std::sync::OnceLock::new();
        std::fs::write(&self.config_path, &self.config_text).expect("write config");
        self.options = options;
        self.config_text.clone()
    }

    /// A copy of the options, to change and pass to [`TestSite::rewrite`].
    pub fn options(&self) -> AppOptions {
        self.options.clone()
    }

    /// Writes `text` to `content/<relative>`, creating folders.
    pub fn write(&self, relative: &str, text: &str) -> PathBuf {
        super::write_file(&self.content_dir, relative, text.as_bytes())
    }

    /// Writes raw bytes (e.g. invalid UTF-8) to `content/<relative>`.
    pub fn write_bytes(&self, relative: &str, bytes: &[u8]) -> PathBuf {
        super::write_file(&self.content_dir, relative, bytes)
    }

    /// Like an editor saves: a temp file renamed over `content/<relative>`.
    pub fn save(&self, relative: &str, text: &str) {
        let path = self.content_dir.join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let tmp = path.with_extension("md.tmp~");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &path).unwrap();
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.content_dir.join(relative)
    }

    /// Starts the daemon on this site. With [`AppOptions::self_links`], a
    /// port that a test starting beside this one took since it was chosen
    /// is replaced by another free one (the configuration is rewritten).
    pub async fn start(mut self) -> TestApp {
        let mut tries = 0;
        let (app, settings) = loop {
            let settings = self.settings().clone();
            match casewire::app::start(settings.clone()).await {
                Ok(app) => break (app, settings),
                Err(e) if self.port != 0 && tries < 5 && port_taken(&e) => {
                    tries += 1;
                    self.port = super::free_port();
                    self.rewrite(self.options());
                }
                Err(e) => panic!("app starts: {e:#}"),
            }
        };
        if self.port != 0 {
            assert_eq!(app.addr.port(), self.port);
        }
        TestApp {
            base: format!("http://{}", app.addr),
            app: Some(app),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .no_gzip()
                .build()
                .unwrap(),
            settings,
            site: self,
        }
    }
}

/// Whether starting failed because the listen port is in use.
fn port_taken(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// Starts the daemon in-process on a site laid out for `options`.
pub async fn spawn_app(options: AppOptions) -> TestApp {
    prepare(options).start().await
}

/// The running daemon of a test, with its site (reachable through `Deref`:
/// `app.db`, `app.content_dir`, `app.config_path`, …).
pub struct TestApp {
    /// None only while restarting.
    app: Option<RunningApp>,
    /// `http://127.0.0.1:PORT` (no trailing slash) of the running server.
    pub base: String,
    /// Follows no redirects and asks for no compression.
    pub client: reqwest::Client,
    /// The settings the daemon was started with.
    pub settings: Settings,
    pub site: TestSite,
}

impl std::ops::Deref for TestApp {
    type Target = TestSite;
    fn deref(&self) -> &TestSite {
        &self.site
    }
}

impl Drop for TestApp {
    /// A test that ends without [`TestApp::stop`] (a failed assertion)
    /// still stops the daemon's tasks before its database is dropped.
    fn drop(&mut self) {
        if let Some(app) = &self.app {
            app.shutdown.cancel();
        }
    }
}

/// An outbox row with the message delivered for it.
#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub kind: String,
    pub recipient: String,
    pub subscriber_id: Option<i64>,
    pub message: String,
}

/// An HTTP answer, read whole.
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
    pub fn app(&self) -> &RunningApp {
        self.app.as_ref().expect("app is running")
    }

    pub fn app_mut(&mut self) -> &mut RunningApp {
        self.app.as_mut().expect("app is running")
    }

    /// Stops the daemon and starts it again on the same configuration file.
    pub async fn restart(&mut self) {
        self.app.take().expect("running").stop().await;
        let settings = self.site.settings().clone();
        let app = casewire::app::start(settings.clone())
            .await
            .unwrap_or_else(|e| panic!("app restarts: {e:#}"));
        self.base = format!("http://{}", app.addr);
        self.settings = settings;
        self.app = Some(app);
    }

    /// Stops the daemon, writes the configuration of `options`, starts again.
    pub async fn restart_with(&mut self, options: AppOptions) {
        self.site.rewrite(options);
        self.restart().await;
    }

    /// Stops the daemon, then drops its PostgreSQL database.
    pub async fn stop(mut self) {
        if let Some(app) = self.app.take() {
            app.stop().await;
        }
        self.site.db.cleanup().await;
    }

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

    /// GET, the answer read whole.
    pub async fn get(&self, path: &str) -> Reply {
        Self::reply(self.fetch(path).await).await
    }

    /// GET, the response as it came (to read headers or bytes).
    pub async fn fetch(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request")
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
            let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
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

    /// A request to the admin API with the site's admin token (or
    /// [`ADMIN_TOKEN`] when it has none, to see the API refuse it).
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let token = self.options.admin_token.as_deref().unwrap_or(ADMIN_TOKEN);
        self.client
            .request(method, self.url(path))
            .bearer_auth(token)
    }

    pub async fn send(req: reqwest::RequestBuilder) -> Reply {
        Self::reply(req.send().await.unwrap()).await
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
            let body = self.fetch(path).await.text().await.unwrap();
            if pred(&body) {
                return body;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("{path} did not reach the expected state in {secs} s; last body:\n{body}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Slugs of the recorded publication events, oldest first.
    pub async fn event_slugs(&self) -> Vec<String> {
        sqlx::query_scalar("SELECT slug FROM publication_events ORDER BY id")
            .fetch_all(&self.app().db.pool)
            .await
            .unwrap()
    }

    /// Every outbox row in id order, once none is waiting to be sent, each
    /// with the message delivered for it (read from the file transport's
    /// folder: messages are composed at send time, rows hold no message).
    pub async fn outbox(&self) -> Vec<OutboxRow> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        let rows = loop {
            let rows: Vec<(String, String, Option<i64>, String, i64, Option<String>)> =
                sqlx::query_as(
                    "SELECT kind, recipient, subscriber_id, state, next_attempt_at, message FROM outbox ORDER BY id",
                )
                .fetch_all(&self.app().db.pool)
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
            tokio::time::sleep(Duration::from_millis(20)).await;
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
            .fetch_one(&self.app().db.pool)
            .await
            .unwrap()
    }

    /// The subscriber's status, or None when there is no row.
    pub async fn status(&self, email: &str) -> Option<String> {
        sqlx::query_scalar("SELECT status FROM subscribers WHERE email = $1")
            .bind(email)
            .fetch_optional(&self.app().db.pool)
            .await
            .unwrap()
    }

    pub async fn categories(&self, email: &str) -> Vec<String> {
        sqlx::query_scalar("SELECT c.category FROM subscriber_categories c JOIN subscribers s ON s.id = c.subscriber_id WHERE s.email = $1 ORDER BY c.category")
            .bind(email)
            .fetch_all(&self.app().db.pool)
            .await
            .unwrap()
    }

    pub async fn editions(&self, email: &str) -> Vec<(String, i64)> {
        sqlx::query_as("SELECT e.edition, e.cursor_event_id FROM subscriber_editions e JOIN subscribers s ON s.id = e.subscriber_id WHERE s.email = $1 ORDER BY e.edition")
            .bind(email)
            .fetch_all(&self.app().db.pool)
            .await
            .unwrap()
    }

    /// The path (`/confirm/…`) of the confirmation link in the only queued
    /// message to `email`; needs [`AppOptions::self_links`].
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
