//! Helpers for the operator console tests: an operator account, signing in
//! over HTTP as a browser would (login cookie + CSRF token from the form),
//! and requests that carry the session cookie.
#![allow(dead_code)]

use super::{Reply, TestApp};

pub const OPERATOR: &str = "ada";
pub const PASSWORD: &str = "correct horse battery staple";

/// Creates an operator (with a password they chose, so no forced change).
pub async fn add_operator(app: &TestApp, name: &str, password: &str) {
    let hash = casewire::admin::hash_password(password).unwrap();
    assert!(
        casewire::store::admin::add_user(&app.app().db, name, &hash, false, chrono::Utc::now())
            .await
            .unwrap(),
        "operator {name} exists already"
    );
}

/// The value of the first hidden `csrf` field of a page.
pub fn csrf_in(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no csrf field on the page:\n{html}"))
        + marker.len();
    let end = html[start..].find('"').unwrap() + start;
    html[start..end].to_owned()
}

/// `name=value` of the `Set-Cookie` header that sets `name`.
pub fn set_cookie<'a>(reply: &'a Reply, name: &str) -> Option<&'a str> {
    reply
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
}

/// A signed-in browser: its session cookie and its CSRF token.
#[derive(Debug, Clone)]
pub struct Session {
    /// `casewire_admin=...`
    pub cookie: String,
    pub csrf: String,
}

/// The answer to a login attempt, made as a browser would: GET the form
/// (double-submit cookie + token), POST it back.
pub async fn try_login(app: &TestApp, name: &str, password: &str) -> Reply {
    let form = app.get("/admin/login").await;
    assert_eq!(form.status, 200, "{}", form.body);
    let cookie = set_cookie(&form, "casewire_login")
        .expect("the login form sets its cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("csrf", csrf_in(&form.body).as_str()),
            ("next", "/admin/"),
            ("name", name),
            ("password", password),
        ])
        .finish();
    let r = app
        .client
        .post(app.url("/admin/login"))
        .header("cookie", cookie)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    reply(r).await
}

/// Signs in; panics unless it works.
pub async fn login(app: &TestApp, name: &str, password: &str) -> Session {
    let r = try_login(app, name, password).await;
    assert_eq!(r.status, 303, "login failed: {}", r.body);
    let cookie = set_cookie(&r, "casewire_admin")
        .expect("a session cookie")
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let mut s = Session {
        cookie,
        csrf: String::new(),
    };
    let mut page = s.get(app, "/admin/").await;
    if page.status == 303 && page.headers["location"] == "/admin/password" {
        // A one-time password: the console asks for a new one first.
        page = s.get(app, "/admin/password").await;
    }
    assert_eq!(page.status, 200, "{}", page.body);
    s.csrf = csrf_in(&page.body);
    s
}

pub async fn reply(r: reqwest::Response) -> Reply {
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap_or_default(),
    }
}

impl Session {
    pub async fn get(&self, app: &TestApp, path: &str) -> Reply {
        reply(
            app.client
                .get(app.url(path))
                .header("cookie", &self.cookie)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// A form POST with this session's CSRF token added.
    pub async fn post(&self, app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let mut all = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(pairs);
        self.post_exact(app, path, &all).await
    }

    /// A form POST with exactly these fields (no CSRF token added).
    pub async fn post_exact(&self, app: &TestApp, path: &str, pairs: &[(&str, &str)]) -> Reply {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish();
        reply(
            app.client
                .post(app.url(path))
                .header("cookie", &self.cookie)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }
}
