//! End to end in headless Chromium (driven over WebDriver by fantoccini):
//! subscribe through the form, confirm from the queued message's link,
//! change preferences, unsubscribe; the database is checked after each step.
//! A missing chromedriver or Chromium fails the test: it never skips.

mod support;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use support::{spawn_app, AppOptions, Engine};

const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_chromedriver() -> Driver {
    let bin = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(&bin)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start {bin:?}: {e}. This test needs chromedriver and Chromium \
                 (Debian: apt-get install chromium chromium-driver; or set CHROMEDRIVER=/path/to/chromedriver)"
            )
        });
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if let Ok(r) = client.get(format!("{}/status", driver.url)).send().await {
            if r.status().is_success() {
                return driver;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver ({bin}) did not answer on port {port} within 10 s");
}

async fn browser(driver: &Driver, profile: &std::path::Path) -> Client {
    assert!(
        std::path::Path::new(CHROMIUM).exists(),
        "Chromium is required at {CHROMIUM} (Debian: apt-get install chromium)"
    );
    let caps = serde_json::json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", format!("--user-data-dir={}", profile.display()),
                "--window-size=400,900",
            ]
        }
    });
    let serde_json::Value::Object(caps) = caps else {
        unreachable!()
    };
    // chromedriver is local and speaks plain HTTP: no TLS stack needed.
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .unwrap_or_else(|e| panic!("cannot open a Chromium session through chromedriver: {e}"))
}

/// Waits (up to 30 s) until the page shows `needle`: a click that submits a
/// form returns before the next page has loaded.
async fn expect_text(client: &Client, needle: &str) {
    let mut last = String::new();
    for _ in 0..300 {
        if let Ok(body) = client.find(Locator::Css("body")).await {
            if let Ok(text) = body.text().await {
                if text.contains(needle) {
                    return;
                }
                last = text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never showed {needle:?}; it shows:\n{last}");
}

async fn click(client: &Client, css: &str) {
    client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no {css} on the page: {e}"))
        .click()
        .await
        .unwrap();
}

async fn subscribe_confirm_manage_unsubscribe_in_a_browser(engine: Engine) {
    let app = spawn_app(AppOptions::new(engine).self_links()).await;
    let driver = start_chromedriver().await;
    let profile = tempfile::tempdir().unwrap();
    let c = browser(&driver, profile.path()).await;
    let email = "browser@example.com";

    // 1. Subscribe through the form.
    c.goto(&app.url("/subscribe")).await.unwrap();
    c.find(Locator::Css("#email"))
        .await
        .unwrap()
        .send_keys(email)
        .await
        .unwrap();
    c.find(Locator::Css("#name"))
        .await
        .unwrap()
        .send_keys("Bea")
        .await
        .unwrap();
    click(&c, "#cat-databases").await;
    click(&c, "#cat-security").await;
    click(&c, "#ed-daily").await;
    click(&c, "button[type=submit]").await;
    expect_text(&c, "Check your inbox").await;
    assert_eq!(app.status(email).await.as_deref(), Some("pending"));
    assert_eq!(app.categories(email).await, ["databases", "security"]);
    assert_eq!(app.editions(email).await[0].0, "daily");

    // 2. Open the link from the queued message: a page with a button, still pending.
    let path = app.confirmation_path(email).await;
    c.goto(&app.url(&path)).await.unwrap();
    expect_text(&c, "Confirm your subscription").await;
    assert_eq!(app.status(email).await.as_deref(), Some("pending"));

    // 3. Press the button: confirmed.
    click(&c, "#confirm").await;
    expect_text(&c, "You are subscribed").await;
    assert_eq!(app.status(email).await.as_deref(), Some("confirmed"));

    // 4. Preferences: swap databases for performance, weekly instead of daily.
    click(&c, "#preferences-link").await;
    expect_text(&c, "Your subscription").await;
    assert!(c
        .find(Locator::Css("#cat-databases"))
        .await
        .unwrap()
        .is_selected()
        .await
        .unwrap());
    click(&c, "#cat-databases").await;
    click(&c, "#cat-performance").await;
    click(&c, "#ed-weekly").await;
    click(&c, "#save").await;
    expect_text(&c, "Your preferences are saved").await;
    assert_eq!(app.categories(email).await, ["performance", "security"]);
    let editions = app.editions(email).await;
    assert_eq!(editions.len(), 1);
    assert_eq!(editions[0].0, "weekly");

    // 5. Unsubscribe with the button.
    click(&c, "#unsubscribe").await;
    expect_text(&c, "You are unsubscribed").await;
    assert_eq!(app.status(email).await.as_deref(), Some("unsubscribed"));

    c.close().await.unwrap();
    drop(driver);
    app.stop().await;
}
on_both_engines!(
    browser_subscribe_confirm_preferences_unsubscribe,
    subscribe_confirm_manage_unsubscribe_in_a_browser
);
